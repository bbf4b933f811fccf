#include "model/transformer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"

#ifdef OPD_WITH_CUDA
#include "model/gpu_transformer.h"
#include "parallel/device_group.h"
#endif

namespace opd {

namespace ops = opd::cpu;

namespace {
void resize(std::vector<float>& v, size_t n) {
  if (v.size() != n) v.assign(n, 0.0f);
}
void zero(std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); }
}  // namespace

Transformer::Transformer(const ModelConfig& config, std::shared_ptr<const Tokenizer> tokenizer, Communicator* tp)
    : cfg_(config), tok_(std::move(tokenizer)) {
  cfg_.validate("model");
  const int P = tp ? tp->size() : 1, r = tp ? tp->rank() : 0;
  for (auto [what, n] : {std::pair<const char*, int>{"n_heads", cfg_.n_heads}, {"n_kv_heads", cfg_.n_kv_heads},
                         {"ffn_dim", cfg_.ffn_dim}, {"vocab", cfg_.vocab}})
    OPD_REQUIRE(n % P == 0, "model: tensor parallelism over ", P, " ranks does not divide ", what, " = ", n);
  ld_.H = cfg_.n_heads / P;
  ld_.HK = cfg_.n_kv_heads / P;
  ld_.F = cfg_.ffn_dim / P;
  ld_.V = cfg_.vocab / P;
  ld_.QD = ld_.H * cfg_.head_dim;
  ld_.KD = ld_.HK * cfg_.head_dim;
  vocab_.tp = tp;
  vocab_.vocab = cfg_.vocab;
  vocab_.begin = ld_.V * r;
  vocab_.size = ld_.V;
  specs_ = param_specs(cfg_, P, r);
  off_ = model_offsets(cfg_, specs_);
  OPD_REQUIRE(tok_, "model: no tokenizer");
  // Imported models may have more embedding rows than tokens (padded for the hardware), never fewer.
  OPD_REQUIRE(tok_->vocab_size() <= cfg_.vocab, "model: the tokenizer has ", tok_->vocab_size(),
              " tokens but the config says vocab = ", cfg_.vocab);
  params_.assign(total_size(specs_), 0.0f);
  grads_.assign(params_.size(), 0.0f);
}

Transformer::Transformer(const Transformer& o) : Transformer(o.cfg_, o.tok_, o.vocab_.tp) {
  params_ = o.params_;
  grads_ = o.grads_;
}

void Transformer::use_gpu(const MemoryPlanOptions& plan, const std::string& who) {
#ifdef OPD_WITH_CUDA
  MemoryPlanOptions planned = plan;
  planned.tp = vocab_.split() ? vocab_.tp->size() : 1;  // the model's own degree, whatever the caller planned
  if (vocab_.split()) {
    // A group of its own: NCCL work follows the model's stream, and another model's would not.
    device_tp_ = device_group(*vocab_.tp, vocab_.tp->name() + " (nccl)", &tp_transport_);
  }
  gpu_ = std::make_shared<GpuTransformer>(*this, planned, who, device_tp_.get());
  vocab_.device = true;
  vocab_.stream = gpu_->stream();
  vocab_.device_tp = device_tp_.get();
#else
  (void)plan;
  throw Error(str(who, ": --device cuda: this opd was built without CUDA (configure with -DOPD_CUDA=ON)"));
#endif
}

void Transformer::sync_to_host() {
#ifdef OPD_WITH_CUDA
  if (gpu_ && gpu_->master()) gpu_->download(*this);
#endif
}

void Transformer::all_reduce_grads(Communicator& dp) {
#ifdef OPD_WITH_CUDA
  if (gpu_) {
    if (dp.device_buffers()) {
      gpu_->sync();  // the communicator runs on its own stream
      dp.all_reduce(gpu_->grads(), gpu_->num_params(), ReduceOp::kSum);
      return;
    }
    gpu_->copy_grads(grads_.data(), /*to_host=*/true);
    dp.all_reduce(grads_.data(), grads_.size(), ReduceOp::kSum);
    gpu_->copy_grads(grads_.data(), /*to_host=*/false);
    return;
  }
#endif
  OPD_REQUIRE(!dp.device_buffers(), "model: a CPU model's gradients cannot go over ", dp.name(), " (device buffers)");
  dp.all_reduce(grads_.data(), grads_.size(), ReduceOp::kSum);
}

std::string Transformer::gpu_memory_report(const std::string& title) const {
#ifdef OPD_WITH_CUDA
  if (gpu_ && vocab_.split())
    return gpu_->plan().report(title) +
           str("  tensor parallel over ", vocab_.tp->size(), " ranks: activations summed ",
               device_tp_ ? "over NCCL" : "through host memory (" + tp_transport_ + ")", "\n");
  if (gpu_) return gpu_->plan().report(title);
#endif
  (void)title;
  return "";
}

float* Transformer::dlogits_buffer(size_t n) {
#ifdef OPD_WITH_CUDA
  if (gpu_) return gpu_->dlogits(n);
#endif
  dlogits_.resize(n);
  return dlogits_.data();
}

const float* Transformer::prefill_last(KVCache& cache, const int* tokens, int B, int T, const int* len) {
#ifdef OPD_WITH_CUDA
  if (gpu_) return gpu_->prefill_last(tokens, B, T, len);
#endif
  const float* logits = prefill(cache, tokens, B, T);
  const size_t V = ld_.V;
  last_rows_.resize(size_t(B) * V);
  for (int b = 0; b < B; ++b) {
    OPD_REQUIRE(len[b] >= 1 && len[b] <= T, "model: prompt ", b, " of length ", len[b], " in a batch of ", T);
    std::copy_n(logits + (size_t(b) * T + len[b] - 1) * V, V, last_rows_.data() + size_t(b) * V);
  }
  return last_rows_.data();
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

void Transformer::zero_grad() {
#ifdef OPD_WITH_CUDA
  if (gpu_) return gpu_->zero_grad();
#endif
  zero(grads_);
}

void Transformer::tp_sum(float* x, size_t n) {
  if (vocab_.split()) vocab_.tp->all_reduce(x, n, ReduceOp::kSum);
}

void Transformer::embed(float* out, const int* tokens, int N) {
  const float* table = params_.data() + off_.embed;
  if (!vocab_.split()) return ops::embedding_forward(out, tokens, table, N, cfg_.d_model);
  ops::embedding_forward_shard(out, tokens, table, N, cfg_.d_model, vocab_.begin, vocab_.size);
  tp_sum(out, size_t(N) * cfg_.d_model);
}

void Transformer::row_parallel_add(float* out, const float* residual, const float* inp, const float* w, int N, int K,
                                   int M) {
  const size_t n = size_t(N) * M;
  // The residual joins once, on TP rank 0; the others contribute their partial products only.
  if (!vocab_.split() || vocab_.tp->rank() == 0) {
    if (out != residual) std::copy_n(residual, n, out);
  } else {
    std::fill_n(out, n, 0.0f);
  }
  ops::matmul_forward(out, inp, w, N, K, M, /*accumulate=*/true);
  tp_sum(out, n);
}

void Transformer::reduce_partial_grads() {
  if (!vocab_.split()) return;
#ifdef OPD_WITH_CUDA
  if (gpu_) return gpu_->reduce_partial_grads();
#endif
  for (const ParamSpec& s : specs_)
    if (s.partial_grad) tp_sum(grads_.data() + s.offset, s.size);
}

void Transformer::check_tokens(const int* tokens, size_t n) const {
  for (size_t i = 0; i < n; ++i)
    OPD_REQUIRE(tokens[i] >= 0 && tokens[i] < cfg_.vocab, "model: token id ", tokens[i], " at index ", i,
                " is outside the vocabulary [0, ", cfg_.vocab, ")");
}

void Transformer::ensure_batch(int B, int T) {
  OPD_REQUIRE(B > 0 && T > 0, "model: empty batch (B = ", B, ", T = ", T, ")");
  OPD_REQUIRE(T <= cfg_.max_seq, "model: sequence length ", T, " exceeds max_seq = ", cfg_.max_seq);
  B_ = B;
  T_ = T;
  const size_t N = static_cast<size_t>(B) * T, C = cfg_.d_model, F = ld_.F, V = ld_.V;
  const size_t QD = ld_.QD, KD = ld_.KD, H = ld_.H, HK = ld_.HK;
  acts_.resize(cfg_.n_layers);
  for (auto& a : acts_) {
    resize(a.resid, N * C);
    resize(a.ln1, N * C);
    resize(a.rstd1, N);
    resize(a.q, N * QD);
    resize(a.k, N * KD);
    resize(a.v, N * KD);
    resize(a.qr, N * QD);
    resize(a.kr, N * KD);
    resize(a.q_rstd, N * H);
    resize(a.k_rstd, N * HK);
    resize(a.att, N * QD);
    resize(a.lse, N * H);
    resize(a.mid, N * C);
    resize(a.ln2, N * C);
    resize(a.rstd2, N);
    resize(a.gate, N * F);
    resize(a.up, N * F);
    resize(a.h, N * F);
  }
  resize(final_resid_, N * C);
  resize(lnf_, N * C);
  resize(rstdf_, N);
  resize(logits_, N * V);
  pos_.resize(N);
  for (size_t i = 0; i < N; ++i) pos_[i] = static_cast<int>(i % T);
}

const float* Transformer::forward(const int* tokens, int B, int T) {
#ifdef OPD_WITH_CUDA
  if (gpu_) return gpu_->forward(tokens, B, T);
#endif
  ensure_batch(B, T);
  const int N = B * T, C = cfg_.d_model, F = ld_.F, V = ld_.V, H = ld_.H, HK = ld_.HK,
            D = cfg_.head_dim, QD = ld_.QD, KD = ld_.KD;
  const float eps = static_cast<float>(cfg_.rms_eps), theta = static_cast<float>(cfg_.rope_theta);
  check_tokens(tokens, N);
  tokens_.assign(tokens, tokens + N);
  const float* W = params_.data();

  embed(acts_[0].resid.data(), tokens, N);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    LayerActivations& a = acts_[l];
    const LayerOffsets& o = off_.layers[l];
    ops::rmsnorm_forward(a.ln1.data(), a.rstd1.data(), a.resid.data(), W + o.input_norm, N, C, eps);
    ops::matmul_forward(a.q.data(), a.ln1.data(), W + o.q, N, C, QD);
    ops::matmul_forward(a.k.data(), a.ln1.data(), W + o.k, N, C, KD);
    ops::matmul_forward(a.v.data(), a.ln1.data(), W + o.v, N, C, KD);
    if (cfg_.qk_norm) {
      ops::rmsnorm_forward(a.qr.data(), a.q_rstd.data(), a.q.data(), W + o.q_norm, N * H, D, eps);
      ops::rmsnorm_forward(a.kr.data(), a.k_rstd.data(), a.k.data(), W + o.k_norm, N * HK, D, eps);
    } else {
      a.qr = a.q;
      a.kr = a.k;
    }
    ops::rope_forward(a.qr.data(), pos_.data(), N, H, D, theta, cfg_.rope_scaling);
    ops::rope_forward(a.kr.data(), pos_.data(), N, HK, D, theta, cfg_.rope_scaling);
    ops::attention_forward(a.att.data(), a.lse.data(), a.qr.data(), a.kr.data(), a.v.data(), B, T, H, HK, D);
    row_parallel_add(a.mid.data(), a.resid.data(), a.att.data(), W + o.o, N, QD, C);
    ops::rmsnorm_forward(a.ln2.data(), a.rstd2.data(), a.mid.data(), W + o.post_norm, N, C, eps);
    ops::matmul_forward(a.gate.data(), a.ln2.data(), W + o.gate, N, C, F);
    ops::matmul_forward(a.up.data(), a.ln2.data(), W + o.up, N, C, F);
    ops::swiglu_forward(a.h.data(), a.gate.data(), a.up.data(), static_cast<size_t>(N) * F);
    std::vector<float>& next = l + 1 < cfg_.n_layers ? acts_[l + 1].resid : final_resid_;
    row_parallel_add(next.data(), a.mid.data(), a.h.data(), W + o.down, N, F, C);
  }
  ops::rmsnorm_forward(lnf_.data(), rstdf_.data(), final_resid_.data(), W + off_.final_norm, N, C, eps);
  ops::matmul_forward(logits_.data(), lnf_.data(), W + off_.lm_head, N, C, V);
  return logits_.data();
}

void Transformer::backward(const float* dlogits) {
#ifdef OPD_WITH_CUDA
  if (gpu_) return gpu_->backward(dlogits);
#endif
  OPD_REQUIRE(B_ > 0, "model: backward called before forward");
  const int B = B_, T = T_, N = B * T, C = cfg_.d_model, F = ld_.F, V = ld_.V, H = ld_.H, HK = ld_.HK,
            D = cfg_.head_dim, QD = ld_.QD, KD = ld_.KD;
  const float theta = static_cast<float>(cfg_.rope_theta);
  const float* W = params_.data();
  float* G = grads_.data();
  resize(dresid_, size_t(N) * C);
  resize(dln_, size_t(N) * C);
  resize(dq_, size_t(N) * QD);
  resize(dk_, size_t(N) * KD);
  resize(dv_, size_t(N) * KD);
  resize(datt_, size_t(N) * QD);
  resize(dqp_, size_t(N) * QD);
  resize(dkp_, size_t(N) * KD);
  resize(dgate_, size_t(N) * F);
  resize(dup_, size_t(N) * F);
  resize(dh_, size_t(N) * F);

  zero(dln_);
  zero(dresid_);
  ops::matmul_backward(dln_.data(), G + off_.lm_head, dlogits, lnf_.data(), W + off_.lm_head, N, C, V);
  tp_sum(dln_.data(), dln_.size());  // the vocab-parallel head: each rank's share of dL/dln
  ops::rmsnorm_backward(dresid_.data(), G + off_.final_norm, dln_.data(), final_resid_.data(), W + off_.final_norm,
                        rstdf_.data(), N, C);
  for (int l = cfg_.n_layers - 1; l >= 0; --l) {
    LayerActivations& a = acts_[l];
    const LayerOffsets& o = off_.layers[l];
    // MLP branch: out = mid + down(swiglu(gate(ln2), up(ln2)))
    zero(dh_);
    ops::matmul_backward(dh_.data(), G + o.down, dresid_.data(), a.h.data(), W + o.down, N, F, C);
    ops::swiglu_backward(dgate_.data(), dup_.data(), dh_.data(), a.gate.data(), a.up.data(), size_t(N) * F);
    zero(dln_);
    ops::matmul_backward(dln_.data(), G + o.gate, dgate_.data(), a.ln2.data(), W + o.gate, N, C, F);
    ops::matmul_backward(dln_.data(), G + o.up, dup_.data(), a.ln2.data(), W + o.up, N, C, F);
    tp_sum(dln_.data(), dln_.size());  // column-parallel gate/up: sum the ranks' shares
    ops::rmsnorm_backward(dresid_.data(), G + o.post_norm, dln_.data(), a.mid.data(), W + o.post_norm,
                          a.rstd2.data(), N, C);
    // Attention branch: mid = resid + o(attn(rope(qknorm(q)), rope(qknorm(k)), v))
    zero(datt_);
    ops::matmul_backward(datt_.data(), G + o.o, dresid_.data(), a.att.data(), W + o.o, N, QD, C);
    ops::attention_backward(dq_.data(), dk_.data(), dv_.data(), datt_.data(), a.qr.data(), a.kr.data(), a.v.data(),
                            a.att.data(), a.lse.data(), B, T, H, HK, D);
    ops::rope_backward(dq_.data(), pos_.data(), N, H, D, theta, cfg_.rope_scaling);
    ops::rope_backward(dk_.data(), pos_.data(), N, HK, D, theta, cfg_.rope_scaling);
    const float* dq_proj = dq_.data();
    const float* dk_proj = dk_.data();
    if (cfg_.qk_norm) {
      zero(dqp_);
      zero(dkp_);
      ops::rmsnorm_backward(dqp_.data(), G + o.q_norm, dq_.data(), a.q.data(), W + o.q_norm, a.q_rstd.data(), N * H, D);
      ops::rmsnorm_backward(dkp_.data(), G + o.k_norm, dk_.data(), a.k.data(), W + o.k_norm, a.k_rstd.data(), N * HK,
                            D);
      dq_proj = dqp_.data();
      dk_proj = dkp_.data();
    }
    zero(dln_);
    ops::matmul_backward(dln_.data(), G + o.q, dq_proj, a.ln1.data(), W + o.q, N, C, QD);
    ops::matmul_backward(dln_.data(), G + o.k, dk_proj, a.ln1.data(), W + o.k, N, C, KD);
    ops::matmul_backward(dln_.data(), G + o.v, dv_.data(), a.ln1.data(), W + o.v, N, C, KD);
    tp_sum(dln_.data(), dln_.size());  // column-parallel q/k/v
    ops::rmsnorm_backward(dresid_.data(), G + o.input_norm, dln_.data(), a.resid.data(), W + o.input_norm,
                          a.rstd1.data(), N, C);
  }
  if (vocab_.split())
    ops::embedding_backward_shard(G + off_.embed, dresid_.data(), tokens_.data(), N, C, vocab_.begin, vocab_.size);
  else
    ops::embedding_backward(G + off_.embed, dresid_.data(), tokens_.data(), N, V, C);
}

void Transformer::reset_cache(KVCache& cache, int B, int capacity) const {
  OPD_REQUIRE(capacity <= cfg_.max_seq, "model: KV cache of ", capacity, " positions exceeds max_seq = ",
              cfg_.max_seq);
  cache.batch = B;
  cache.capacity = capacity;
#ifdef OPD_WITH_CUDA
  if (gpu_) {  // the GPU model's one planned cache: this batch takes its first B sequences
    OPD_REQUIRE(B <= gpu_->kv_batch(), "model: a KV cache of ", B, " sequences; the GPU plan holds ",
                gpu_->kv_batch(), " (--gen-batch)");
    OPD_REQUIRE(capacity <= gpu_->kv_capacity(), "model: a KV cache of ", capacity,
                " positions; the GPU plan holds ", gpu_->kv_capacity());
    cache.k.clear();
    cache.v.clear();
    return;
  }
#endif
  const size_t n = size_t(B) * capacity * ld_.KD;
  cache.k.assign(cfg_.n_layers, std::vector<float>(n, 0.0f));
  cache.v.assign(cfg_.n_layers, std::vector<float>(n, 0.0f));
}

const float* Transformer::prefill(KVCache& cache, const int* tokens, int B, int T) {
#ifdef OPD_WITH_CUDA
  if (gpu_) return gpu_->prefill(tokens, B, T, 0);
#endif
  OPD_REQUIRE(cache.batch == B && T <= cache.capacity, "model: prefill of ", B, " x ", T,
              " tokens does not fit a cache of ", cache.batch, " x ", cache.capacity);
  const float* logits = forward(tokens, B, T);
  for (int l = 0; l < cfg_.n_layers; ++l)
    ops::kv_cache_write(cache.k[l].data(), cache.v[l].data(), acts_[l].kr.data(), acts_[l].v.data(), B, T,
                        cache.capacity, ld_.HK, cfg_.head_dim);
  return logits;
}

const float* Transformer::decode(KVCache& cache, const int* tokens, const int* pos) {
#ifdef OPD_WITH_CUDA
  if (gpu_) return gpu_->decode(tokens, pos, cache.batch);
#endif
  return extend(cache, tokens, 1, pos);  // one new token per sequence, at pos[b]
}

const float* Transformer::extend(KVCache& cache, const int* tokens, int T, const int* start) {
  OPD_REQUIRE(!gpu_, "model: extending a KV cache (shared-prefix scoring) is not on the GPU path yet");
  const int B = cache.batch, S = cache.capacity, C = cfg_.d_model, F = ld_.F, V = ld_.V, H = ld_.H,
            HK = ld_.HK, D = cfg_.head_dim, QD = ld_.QD, KD = ld_.KD;
  const float eps = static_cast<float>(cfg_.rms_eps), theta = static_cast<float>(cfg_.rope_theta);
  OPD_REQUIRE(T > 0, "model: extend by ", T, " tokens");
  const int N = B * T;
  check_tokens(tokens, size_t(N));
  std::vector<int> pos(N);
  for (int b = 0; b < B; ++b) {
    OPD_REQUIRE(start[b] >= 0 && start[b] + T <= S, "model: extending sequence ", b, " from position ", start[b],
                " by ", T, " tokens overflows the KV cache of ", S, " positions");
    for (int t = 0; t < T; ++t) pos[size_t(b) * T + t] = start[b] + t;
  }
  // The decode scratch, with one row per new token.
  resize(dec_x_, size_t(N) * C);
  resize(dec_ln_, size_t(N) * C);
  resize(dec_rstd_, N);
  resize(dec_q_, size_t(N) * QD);
  resize(dec_k_, size_t(N) * KD);
  resize(dec_v_, size_t(N) * KD);
  resize(dec_qn_, size_t(N) * QD);
  resize(dec_kn_, size_t(N) * KD);
  resize(dec_q_rstd_, size_t(N) * H);
  resize(dec_k_rstd_, size_t(N) * HK);
  resize(dec_att_, size_t(N) * QD);
  resize(dec_gate_, size_t(N) * F);
  resize(dec_up_, size_t(N) * F);
  resize(dec_h_, size_t(N) * F);
  resize(dec_logits_, size_t(N) * V);
  std::vector<float> q_t, k_t, v_t, out_t;
  if (T > 1) {
    q_t.resize(size_t(B) * QD);
    k_t.resize(size_t(B) * KD);
    v_t.resize(size_t(B) * KD);
    out_t.resize(size_t(B) * QD);
  }
  std::vector<int> pos_t(B);
  const float* W = params_.data();

  embed(dec_x_.data(), tokens, N);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const LayerOffsets& o = off_.layers[l];
    ops::rmsnorm_forward(dec_ln_.data(), dec_rstd_.data(), dec_x_.data(), W + o.input_norm, N, C, eps);
    ops::matmul_forward(dec_q_.data(), dec_ln_.data(), W + o.q, N, C, QD);
    ops::matmul_forward(dec_k_.data(), dec_ln_.data(), W + o.k, N, C, KD);
    ops::matmul_forward(dec_v_.data(), dec_ln_.data(), W + o.v, N, C, KD);
    if (cfg_.qk_norm) {
      ops::rmsnorm_forward(dec_qn_.data(), dec_q_rstd_.data(), dec_q_.data(), W + o.q_norm, N * H, D, eps);
      ops::rmsnorm_forward(dec_kn_.data(), dec_k_rstd_.data(), dec_k_.data(), W + o.k_norm, N * HK, D, eps);
    } else {
      dec_qn_ = dec_q_;
      dec_kn_ = dec_k_;
    }
    ops::rope_forward(dec_qn_.data(), pos.data(), N, H, D, theta, cfg_.rope_scaling);
    ops::rope_forward(dec_kn_.data(), pos.data(), N, HK, D, theta, cfg_.rope_scaling);
    // Causal over the new tokens: token t of every sequence is one decode-attention step that
    // sees the cache up to its own position (one token each, as in decode: the rows as they are).
    if (T == 1) {
      ops::attention_decode(dec_att_.data(), dec_qn_.data(), dec_kn_.data(), dec_v_.data(), cache.k[l].data(),
                            cache.v[l].data(), pos.data(), B, S, H, HK, D);
    } else {
      for (int t = 0; t < T; ++t) {
        for (int b = 0; b < B; ++b) {
          const size_t row = size_t(b) * T + t;
          std::copy_n(dec_qn_.data() + row * QD, QD, q_t.data() + size_t(b) * QD);
          std::copy_n(dec_kn_.data() + row * KD, KD, k_t.data() + size_t(b) * KD);
          std::copy_n(dec_v_.data() + row * KD, KD, v_t.data() + size_t(b) * KD);
          pos_t[b] = start[b] + t;
        }
        ops::attention_decode(out_t.data(), q_t.data(), k_t.data(), v_t.data(), cache.k[l].data(), cache.v[l].data(),
                              pos_t.data(), B, S, H, HK, D);
        for (int b = 0; b < B; ++b)
          std::copy_n(out_t.data() + size_t(b) * QD, QD, dec_att_.data() + (size_t(b) * T + t) * QD);
      }
    }
    row_parallel_add(dec_x_.data(), dec_x_.data(), dec_att_.data(), W + o.o, N, QD, C);
    ops::rmsnorm_forward(dec_ln_.data(), dec_rstd_.data(), dec_x_.data(), W + o.post_norm, N, C, eps);
    ops::matmul_forward(dec_gate_.data(), dec_ln_.data(), W + o.gate, N, C, F);
    ops::matmul_forward(dec_up_.data(), dec_ln_.data(), W + o.up, N, C, F);
    ops::swiglu_forward(dec_h_.data(), dec_gate_.data(), dec_up_.data(), size_t(N) * F);
    row_parallel_add(dec_x_.data(), dec_x_.data(), dec_h_.data(), W + o.down, N, F, C);
  }
  ops::rmsnorm_forward(dec_ln_.data(), dec_rstd_.data(), dec_x_.data(), W + off_.final_norm, N, C, eps);
  ops::matmul_forward(dec_logits_.data(), dec_ln_.data(), W + off_.lm_head, N, C, V);
  return dec_logits_.data();
}

double Transformer::forward_flops(double n_tokens, double ctx) const {
  const double C = cfg_.d_model, F = cfg_.ffn_dim, V = cfg_.vocab, QD = cfg_.q_dim(), KD = cfg_.kv_dim();
  const double matmul_params = cfg_.n_layers * (C * QD + 2 * C * KD + QD * C + 3 * C * F) + V * C;
  return n_tokens * (2 * matmul_params + 4.0 * cfg_.n_layers * ctx * QD);
}

}  // namespace opd
