#include "model/transformer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "model/backend_cpu.h"
#include "model/memory_plan.h"

#ifdef OPD_WITH_CUDA
#include "model/backend_cuda.h"
#include "parallel/device_group.h"
#endif

namespace opd {

Transformer::Transformer(const ModelConfig& config, std::shared_ptr<const Tokenizer> tokenizer, Communicator* tp)
    : cfg_(config), tok_(std::move(tokenizer)) {
  cfg_.validate("model");
  const int P = tp ? tp->size() : 1, r = tp ? tp->rank() : 0;
  for (auto [what, n] : {std::pair<const char*, int>{"n_heads", cfg_.n_heads}, {"n_kv_heads", cfg_.n_kv_heads},
                         {"ffn_dim", cfg_.ffn_dim}, {"vocab", cfg_.vocab}})
    OPD_REQUIRE(n % P == 0, "model: tensor parallelism over ", P, " ranks does not divide ", what, " = ", n);
  vocab_.tp = tp;
  vocab_.vocab = cfg_.vocab;
  vocab_.size = cfg_.vocab / P;
  vocab_.begin = vocab_.size * r;
  specs_ = param_specs(cfg_, P, r);
  OPD_REQUIRE(tok_, "model: no tokenizer");
  // Imported models may have more embedding rows than tokens (padded for the hardware), never fewer.
  OPD_REQUIRE(tok_->vocab_size() <= cfg_.vocab, "model: the tokenizer has ", tok_->vocab_size(),
              " tokens but the config says vocab = ", cfg_.vocab);
  params_.assign(total_size(specs_), 0.0f);
  grads_.assign(params_.size(), 0.0f);
  head_rows_ = resolve_head_rows(kHeadRowsAuto, vocab_.size);
  decoder_ = make_cpu_decoder(decoder_shape(/*train=*/true, /*recompute=*/false), params_, lora_params_, grads_, tp,
                              cfg_);
}

Transformer::Transformer(const Transformer& o) : Transformer(o.cfg_, o.tok_, o.vocab_.tp) {
  params_ = o.params_;
  if (o.has_lora()) {
    enable_lora(o.lora_, 0, o.lora_base_);
    lora_params_ = o.lora_params_;
  }
  if (o.grads_.size() == grads_.size()) grads_ = o.grads_;  // a model on the GPU keeps no host gradients
  set_head_rows(o.head_rows_);
}

int resolve_head_rows(int requested, int vocab_shard) {
  OPD_REQUIRE(requested >= kHeadRowsAuto, "--head-chunk: ", requested, " rows");
  OPD_REQUIRE(vocab_shard >= 1, "resolve_head_rows: a vocabulary shard of ", vocab_shard, " ids");
  if (requested != kHeadRowsAuto) return requested;
  const size_t rows = kHeadBlockBytes / (sizeof(float) * size_t(vocab_shard));
  return int(std::clamp<size_t>(rows, 1, size_t(1) << 30));
}

void Transformer::set_head_rows(int requested) {
  head_rows_ = resolve_head_rows(requested, vocab_.size);
  decoder_->set_head_rows(head_rows_);
}

void Transformer::zero_grad() {
  OPD_REQUIRE(!forward_only_, "model: gradients of a forward-only model (a teacher)");
  decoder_->zero_grad();
}

void Transformer::set_forward_only() {
  OPD_REQUIRE(!on_gpu(), "model: set_forward_only after use_gpu (the GPU plan says whether it trains)");
  forward_only_ = true;
  std::vector<float>().swap(grads_);
  decoder_ = make_cpu_decoder(decoder_shape(/*train=*/false, /*recompute=*/false), params_, lora_params_, grads_,
                              vocab_.tp, cfg_);
}

void Transformer::enable_lora(const LoraConfig& lora, uint64_t seed, LoraBase base) {
  OPD_REQUIRE(!on_gpu(), "model: LoRA adapters are added on the CPU, before the model moves to its GPU");
  OPD_REQUIRE(!has_lora(), "model: the model has LoRA adapters already");
  check_lora(lora, cfg_, "model");
  const int P = vocab_.split() ? vocab_.tp->size() : 1, r = vocab_.split() ? vocab_.tp->rank() : 0;
  lora_ = lora;
  lora_base_ = std::move(base);
  lora_specs_ = opd::lora_specs(cfg_, lora_, P, r);
  lora_params_.assign(total_size(lora_specs_), 0.0f);
  init_lora(lora_specs_, lora_params_.data(), seed);
  // The gradients and, through them, the optimizer's state are the adapters' only.
  grads_.assign(lora_params_.size(), 0.0f);
  decoder_ = make_cpu_decoder(decoder_shape(/*train=*/true, /*recompute=*/false), params_, lora_params_, grads_,
                              vocab_.tp, cfg_);
}

std::unique_ptr<Transformer> Transformer::merged() const {
  auto m = std::make_unique<Transformer>(cfg_, tok_, vocab_.split() ? vocab_.tp : nullptr);
  m->params_ = params_;
  if (has_lora()) merge_lora(lora_, lora_specs_, lora_params_.data(), specs_, m->params_.data());
  return m;
}

Transformer::~Transformer() = default;

DecoderShape Transformer::decoder_shape(bool train, bool recompute) const {
  const int P = vocab_.split() ? vocab_.tp->size() : 1;
  DecoderShape s;
  s.cfg = cfg_;
  s.specs = specs_;
  s.off = model_offsets(cfg_, specs_);
  s.H = cfg_.n_heads / P;
  s.HK = cfg_.n_kv_heads / P;
  s.F = cfg_.ffn_dim / P;
  s.QD = s.H * cfg_.head_dim;
  s.KD = s.HK * cfg_.head_dim;
  s.v0 = vocab_.begin;
  s.V = vocab_.size;
  s.train = train;
  s.recompute = recompute;
  s.lora = lora_;
  s.lora_specs = lora_specs_;
  s.lora_off = lora_offsets(cfg_, lora_, lora_specs_);
  s.head_rows = head_rows_;
  return s;
}

void Transformer::use_gpu(const MemoryPlanOptions& plan, const std::string& who) {
#ifdef OPD_WITH_CUDA
  MemoryPlanOptions planned = plan;
  planned.tp = vocab_.split() ? vocab_.tp->size() : 1;  // the model's own degree, whatever the caller planned
  planned.lora = lora_;                                 // and its own adapters
  planned.head_rows = head_rows_;                        // and its own head block
  OPD_REQUIRE(!forward_only_ || !planned.train, who, ": a forward-only model planned for training");
  std::string why_not_nccl;
  // A group of its own: NCCL work follows the model's stream, and another model's would not.
  if (vocab_.split()) device_tp_ = device_group(*vocab_.tp, vocab_.tp->name() + " (nccl)", &why_not_nccl);
  decoder_ = make_cuda_decoder(*this, planned, who, device_tp_.get(), why_not_nccl);
  std::vector<float>().swap(grads_);  // the gradients live on the device now
  vocab_.device = true;
  vocab_.stream = decoder_->stream();
  vocab_.device_tp = device_tp_.get();
#else
  (void)plan;
  throw Error(str(who, ": --device cuda: this opd was built without CUDA (configure with -DOPD_CUDA=ON)"));
#endif
}

void Transformer::init_random(uint64_t seed) {
  const float resid_std = 0.02f / std::sqrt(2.0f * cfg_.n_layers);
  for (size_t si = 0; si < specs_.size(); ++si) {
    const ParamSpec& s = specs_[si];
    float* w = param(s);
    if (s.shape.size() == 1) {  // norm weights start as the identity
      std::fill(w, w + s.size, 1.0f);
      continue;
    }
    const bool resid_out = s.name.find("o_proj") != std::string::npos || s.name.find("down_proj") != std::string::npos;
    const float std = resid_out ? resid_std : 0.02f;
    // The whole tensor is drawn and this rank keeps its block: the same model at any TP degree.
    const size_t full = size_t(s.shard.full_size());
    std::vector<float> whole(full);
    // Each pair is keyed by its index alone, so the threads' split does not change a value.
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < full; i += 2) {  // Box-Muller, two normals per Philox draw
      Philox4 r = philox_draw(seed, static_cast<uint32_t>(si), i / 2);
      const float u1 = 1.0f - uniform01(r.v[0]), u2 = uniform01(r.v[1]);
      const float rad = std::sqrt(-2.0f * std::log(u1)), ang = 6.2831853f * u2;
      whole[i] = std * rad * std::cos(ang);
      if (i + 1 < full) whole[i + 1] = std * rad * std::sin(ang);
    }
    copy_shard_out(whole.data(), s.shard, w);
  }
}

double Transformer::forward_flops(double n_tokens, double ctx) const {
  const double C = cfg_.d_model, F = cfg_.ffn_dim, V = cfg_.vocab, QD = cfg_.q_dim(), KD = cfg_.kv_dim();
  const double matmul_params = cfg_.n_layers * (C * QD + 2 * C * KD + QD * C + 3 * C * F) + V * C;
  return n_tokens * (2 * matmul_params + 4.0 * cfg_.n_layers * ctx * QD);
}

}  // namespace opd
