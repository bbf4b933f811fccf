#ifdef OPD_WITH_CUDA
#include "model/gpu_transformer.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/matmul.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace opd {

namespace ops = opd::cuda;

struct GpuTransformer::Layer {
  bf16 *resid, *ln1, *q, *k, *v, *qr, *kr, *att, *mid, *ln2, *gate, *up, *h;
  float *rstd1, *q_rstd, *k_rstd, *lse, *rstd2;
};

template <typename T>
T* GpuTransformer::block(const std::string& name) const {
  const MemoryBlock& b = plan_.at(name);
  OPD_REQUIRE(b.in_arena, "GPU model: block '", name, "' is not in the arena");
  return reinterpret_cast<T*>(arena_ + b.offset);
}
template float* GpuTransformer::block<float>(const std::string&) const;
template int* GpuTransformer::block<int>(const std::string&) const;
template unsigned char* GpuTransformer::block<unsigned char>(const std::string&) const;
template GpuTransformer::bf16* GpuTransformer::block<GpuTransformer::bf16>(const std::string&) const;

namespace {

// The kernel scratch every op of this model may ask for, at the planned sizes (one stream, so one
// buffer serves them all in turn).
size_t kernel_workspace(const ModelConfig& c, const MemoryPlanOptions& o) {
  const int H = c.n_heads / o.tp, HK = c.n_kv_heads / o.tp, D = c.head_dim;
  size_t ws = 0;
  const int N = o.batch * o.seq;
  if (N > 0) {
    ws = std::max(ws, ops::rmsnorm_backward_workspace_bytes(N, c.d_model));
    ws = std::max(ws, ops::rmsnorm_backward_workspace_bytes(N * H, D));
    if (o.train) ws = std::max(ws, ops::attention_backward_workspace_bytes(o.batch, o.seq, H, HK, D));
  }
  if (o.kv_batch > 0) ws = std::max(ws, ops::attention_decode_workspace_bytes(o.kv_batch, o.kv_capacity, H, D));
  return ws;
}

// Dimensions the kernels need: the attention kernels' head sizes, and rows of whole 16-byte packs
// of bf16 for cuBLASLt and the vectorised pointwise kernels.
}  // namespace

void check_gpu_shape(const ModelConfig& c, int tp, const std::string& who) {
  OPD_REQUIRE(c.head_dim == 16 || c.head_dim == 32 || c.head_dim == 64 || c.head_dim == 128, who,
              ": --device cuda: head_dim = ", c.head_dim,
              "; the CUDA attention kernels take 16, 32, 64 or 128 (run this model with --device cpu)");
  OPD_REQUIRE(c.d_model % 8 == 0, who, ": --device cuda: d_model = ", c.d_model,
              " is not a multiple of 8 (the GPU kernels read rows in 16-byte packs of bf16)");
  OPD_REQUIRE((c.ffn_dim / tp) % 8 == 0, who, ": --device cuda: ffn_dim = ", c.ffn_dim, " over tp = ", tp, " is ",
              c.ffn_dim / tp, " per rank, not a multiple of 8 (the GPU kernels read rows in 16-byte packs of bf16)",
              tp > 1 ? "; choose another --tp" : "");
}

WorkspaceSizes gpu_workspace(const ModelConfig& cfg, const MemoryPlanOptions& options) {
  return {kernel_workspace(cfg, options), ops::Matmul::kDefaultWorkspace};
}

GpuTransformer::GpuTransformer(const Transformer& host, const MemoryPlanOptions& options, const std::string& who,
                               Communicator* device_tp)
    : cfg_(host.config()), opt_(options), off_(model_offsets(host.config(), host.specs())), specs_(host.specs()),
      tp_(host.tp()) {
  const int degree = tp_ ? tp_->size() : 1;
  OPD_REQUIRE(opt_.tp == degree, "GPU model: planned for tp = ", opt_.tp, " but the model is split over ", degree,
              " ranks");
  OPD_REQUIRE(tp_ || !device_tp, "GPU model: a device TP group for a whole model");
  check_gpu_shape(cfg_, degree, who);
  OPD_REQUIRE(opt_.seq <= cfg_.max_seq && opt_.kv_capacity <= cfg_.max_seq, "GPU model: planned sequences of ",
              std::max(opt_.seq, opt_.kv_capacity), " exceed max_seq = ", cfg_.max_seq);
  n_params_ = host.params().size();
  H_ = cfg_.n_heads / degree;
  HK_ = cfg_.n_kv_heads / degree;
  F_ = cfg_.ffn_dim / degree;
  V_ = host.vocab_shard().size;
  v0_ = host.vocab_shard().begin;
  QD_ = H_ * cfg_.head_dim;
  KD_ = HK_ * cfg_.head_dim;
  plan_ = plan_model_memory(cfg_, opt_, gpu_workspace(cfg_, opt_));
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  plan_.check_fits(free_bytes, who);
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  if (tp_) tp_reduce_ = std::make_unique<DeviceAllReduce>(*tp_, device_tp, stream_);
  // Another process on this GPU (a rank sharing it) may have taken memory since the check.
  if (cudaMalloc(&arena_, std::max<size_t>(plan_.arena_bytes(), 1)) != cudaSuccess) {
    cudaGetLastError();
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    cudaStreamDestroy(stream_);
    throw Error(str(who, ": allocating the planned ", format_bytes(plan_.arena_bytes()), " of device memory failed (",
                    format_bytes(free_bytes), " free now; ranks sharing this GPU take from the same memory)"));
  }
  mm_ = std::make_unique<ops::Matmul>(ops::Matmul::kDefaultWorkspace);
  w_ = block<bf16>("weights.bf16");
  if (opt_.batch * opt_.seq > 0)
    for (int l = 0; l < cfg_.n_layers; ++l) layers_.push_back(std::make_unique<Layer>(make_layer(l)));
  if (opt_.kv_batch > 0)
    for (int l = 0; l < cfg_.n_layers; ++l) {
      kv_k_.push_back(block<bf16>(str("kv.L", l, ".k")));
      kv_v_.push_back(block<bf16>(str("kv.L", l, ".v")));
    }

  const size_t P = n_params_;
  if (opt_.train) {
    master_ = block<float>("weights.master");
    grads_ = block<float>("grads");
    CUDA_CHECK(cudaMemcpyAsync(master_, host.params().data(), P * sizeof(float), cudaMemcpyHostToDevice, stream_));
    ops::convert(w_, master_, P, stream_);
    CUDA_CHECK(cudaMemsetAsync(grads_, 0, P * sizeof(float), stream_));
    CUDA_CHECK(cudaMemsetAsync(block<float>("adam.m"), 0, P * sizeof(float), stream_));
    CUDA_CHECK(cudaMemsetAsync(block<float>("adam.v"), 0, P * sizeof(float), stream_));
    std::vector<unsigned char> mask(P, 0);
    for (const ParamSpec& s : specs_) std::fill_n(mask.begin() + s.offset, s.size, s.decay ? 1 : 0);
    CUDA_CHECK(cudaMemcpyAsync(block<unsigned char>("adam.decay_mask"), mask.data(), P, cudaMemcpyHostToDevice,
                               stream_));
  } else {
    // No fp32 copy is planned: the weights pass through a bounded staging buffer on their way to bf16.
    const size_t chunk = std::min<size_t>(P, size_t(1) << 24);
    float* staging = nullptr;
    CUDA_CHECK(cudaMallocAsync(&staging, chunk * sizeof(float), stream_));
    for (size_t i = 0; i < P; i += chunk) {
      const size_t n = std::min(chunk, P - i);
      CUDA_CHECK(cudaMemcpyAsync(staging, host.params().data() + i, n * sizeof(float), cudaMemcpyHostToDevice,
                                 stream_));
      ops::convert(w_ + i, staging, n, stream_);
    }
    CUDA_CHECK(cudaFreeAsync(staging, stream_));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

GpuTransformer::~GpuTransformer() {
  // Errors are not thrown from here: the arena and stream go whatever state the device is in.
  mm_.reset();
  tp_reduce_.reset();
  if (stream_) cudaStreamSynchronize(stream_);
  cudaFree(arena_);
  if (stream_) cudaStreamDestroy(stream_);
}

GpuTransformer::Layer GpuTransformer::make_layer(int l) const {
  // Training keeps every layer's activations (or only its input, with recompute); a forward-only
  // model keeps one residual stream and one layer's scratch.
  const bool own = opt_.train && !opt_.recompute;
  const std::string set = own ? str("L", l, ".") : "layer.";
  const auto b = [&](const char* name) { return block<bf16>(set + name); };
  const auto f = [&](const char* name) { return block<float>(set + name); };
  Layer a;
  a.resid = opt_.train ? block<bf16>(str("L", l, ".resid")) : block<bf16>("stream.resid");
  a.ln1 = b("ln1"), a.q = b("q"), a.k = b("k"), a.v = b("v"), a.qr = b("qr"), a.kr = b("kr"), a.att = b("att");
  a.mid = b("mid"), a.ln2 = b("ln2"), a.gate = b("gate"), a.up = b("up"), a.h = b("h");
  a.rstd1 = f("rstd1"), a.q_rstd = f("q_rstd"), a.k_rstd = f("k_rstd"), a.lse = f("lse"), a.rstd2 = f("rstd2");
  return a;
}

float* GpuTransformer::workspace(size_t bytes) const {
  if (bytes == 0) return nullptr;
  const MemoryBlock& b = plan_.at("workspace.kernels");
  OPD_REQUIRE(bytes <= b.bytes, "GPU model: a kernel needs ", bytes, " bytes of scratch; ", b.bytes, " were planned");
  return reinterpret_cast<float*>(arena_ + b.offset);
}

void GpuTransformer::check_tokens(const int* tokens, size_t n) const {
  for (size_t i = 0; i < n; ++i)
    OPD_REQUIRE(tokens[i] >= 0 && tokens[i] < cfg_.vocab, "GPU model: token id ", tokens[i], " at index ", i,
                " is outside the vocabulary [0, ", cfg_.vocab, ")");
}

void GpuTransformer::upload_tokens(int* dst, const int* tokens, size_t n) {
  CUDA_CHECK(cudaMemcpyAsync(dst, tokens, n * sizeof(int), cudaMemcpyHostToDevice, stream_));
}

void GpuTransformer::finish_collectives() {
  if (tp_reduce_ && tp_reduce_->over_nccl()) sync();
}

void GpuTransformer::tp_sum(bf16* x, size_t n) {
  if (tp_reduce_) tp_reduce_->sum(x, n);
}

void GpuTransformer::embed(bf16* out, const int* tokens, int N) {
  if (!split()) return ops::embedding_forward(out, tokens, w_ + off_.embed, N, cfg_.d_model, stream_);
  ops::embedding_forward_shard(out, tokens, w_ + off_.embed, N, cfg_.d_model, v0_, V_, stream_);
  tp_sum(out, size_t(N) * cfg_.d_model);  // one rank holds each row, the others add zeros: exact
}

void GpuTransformer::row_parallel(bf16* out, const bf16* residual, const bf16* inp, const bf16* w, int N, int K,
                                  int M) {
  const bool with_residual = !split() || tp_->rank() == 0;
  if (with_residual && out != residual)
    CUDA_CHECK(cudaMemcpyAsync(out, residual, size_t(N) * M * sizeof(bf16), cudaMemcpyDeviceToDevice, stream_));
  mm_->forward(out, inp, w, N, K, M, /*accumulate=*/with_residual, stream_);
  tp_sum(out, size_t(N) * M);
}

void GpuTransformer::reduce_partial_grads() {
  if (!split()) return;
  OPD_REQUIRE(grads_, "GPU model: reduce_partial_grads on a model planned without training");
  for (const ParamSpec& p : specs_)
    if (p.partial_grad) tp_reduce_->sum(grads_ + p.offset, p.size);
}

void GpuTransformer::zero_grad() {
  OPD_REQUIRE(grads_, "GPU model: zero_grad on a model planned without training");
  CUDA_CHECK(cudaMemsetAsync(grads_, 0, n_params_ * sizeof(float), stream_));
}

void GpuTransformer::layer_forward(int l, const Layer& a, bf16* next, int B, int T, int fill_cache) {
  const int N = B * T, C = cfg_.d_model, F = F_, H = H_, HK = HK_, D = cfg_.head_dim;
  const float eps = static_cast<float>(cfg_.rms_eps), theta = static_cast<float>(cfg_.rope_theta);
  const LayerOffsets& o = off_.layers[l];
  const int* pos = block<int>("positions");
  cudaStream_t s = stream_;
  ops::rmsnorm_forward(a.ln1, a.rstd1, a.resid, w_ + o.input_norm, N, C, eps, s);
  mm_->forward(a.q, a.ln1, w_ + o.q, N, C, QD_, false, s);
  mm_->forward(a.k, a.ln1, w_ + o.k, N, C, KD_, false, s);
  mm_->forward(a.v, a.ln1, w_ + o.v, N, C, KD_, false, s);
  if (cfg_.qk_norm) {
    ops::rmsnorm_forward(a.qr, a.q_rstd, a.q, w_ + o.q_norm, N * H, D, eps, s);
    ops::rmsnorm_forward(a.kr, a.k_rstd, a.k, w_ + o.k_norm, N * HK, D, eps, s);
  } else {
    CUDA_CHECK(cudaMemcpyAsync(a.qr, a.q, size_t(N) * QD_ * sizeof(bf16), cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(a.kr, a.k, size_t(N) * KD_ * sizeof(bf16), cudaMemcpyDeviceToDevice, s));
  }
  ops::rope_forward(a.qr, pos, N, H, D, theta, cfg_.rope_scaling, s);
  ops::rope_forward(a.kr, pos, N, HK, D, theta, cfg_.rope_scaling, s);
  if (fill_cache >= 0) {
    const size_t first = size_t(fill_cache) * opt_.kv_capacity * KD_;  // the cache is [kv_batch, S, Hkv, D]
    ops::kv_cache_write(kv_k_[l] + first, kv_v_[l] + first, a.kr, a.v, B, T, opt_.kv_capacity, HK, D, s);
  }
  ops::attention_forward(a.att, a.lse, a.qr, a.kr, a.v, B, T, H, HK, D, s);
  // mid = resid + o(att): the residual add rides on the GEMM (beta = 1).
  row_parallel(a.mid, a.resid, a.att, w_ + o.o, N, QD_, C);
  ops::rmsnorm_forward(a.ln2, a.rstd2, a.mid, w_ + o.post_norm, N, C, eps, s);
  mm_->forward(a.gate, a.ln2, w_ + o.gate, N, C, F, false, s);
  mm_->forward(a.up, a.ln2, w_ + o.up, N, C, F, false, s);
  ops::swiglu_forward(a.h, a.gate, a.up, size_t(N) * F, s);
  if (!next) return;  // recomputing for backward: the layer's output is already kept
  row_parallel(next, a.mid, a.h, w_ + o.down, N, F, C);
}

float* GpuTransformer::forward(const int* tokens, int B, int T, int fill_cache) {
  const size_t N = size_t(B) * T;
  OPD_REQUIRE(B > 0 && T > 0, "GPU model: empty batch (B = ", B, ", T = ", T, ")");
  OPD_REQUIRE(N <= size_t(opt_.batch) * opt_.seq && T <= cfg_.max_seq, "GPU model: a forward of ",
              B, " x ", T, " tokens exceeds the planned ", opt_.batch, " x ", opt_.seq);
  OPD_REQUIRE(fill_cache < 0 || (fill_cache + B <= opt_.kv_batch && T <= opt_.kv_capacity), "GPU model: prefill of ",
              B, " x ", T, " tokens from sequence ", fill_cache, " does not fit the planned cache of ", opt_.kv_batch,
              " x ", opt_.kv_capacity);
  check_tokens(tokens, N);
  B_ = B;
  T_ = T;
  const int C = cfg_.d_model, V = V_;
  const float eps = static_cast<float>(cfg_.rms_eps);
  int* tok = block<int>("tokens");
  upload_tokens(tok, tokens, N);
  std::vector<int> pos(N);
  for (size_t i = 0; i < N; ++i) pos[i] = static_cast<int>(i % T);
  upload_tokens(block<int>("positions"), pos.data(), N);

  bf16* final_resid = block<bf16>("final.resid");
  embed(layer(0).resid, tok, int(N));
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const Layer& a = layer(l);
    bf16* next = l + 1 == cfg_.n_layers ? final_resid : opt_.train ? layer(l + 1).resid : a.resid;
    layer_forward(l, a, next, B, T, fill_cache);
  }
  bf16* lnf = block<bf16>("final.ln");
  ops::rmsnorm_forward(lnf, block<float>("final.rstd"), final_resid, w_ + off_.final_norm, int(N), C, eps, stream_);
  float* logits = block<float>("logits");
  mm_->forward(logits, lnf, w_ + off_.lm_head, int(N), C, V, false, stream_);
  finish_collectives();
  return logits;
}

void GpuTransformer::layer_backward(int l, const Layer& a, int B, int T) {
  const int N = B * T, C = cfg_.d_model, F = F_, H = H_, HK = HK_, D = cfg_.head_dim;
  const float theta = static_cast<float>(cfg_.rope_theta);
  const LayerOffsets& o = off_.layers[l];
  const int* pos = block<int>("positions");
  cudaStream_t s = stream_;
  float* G = grads_;
  bf16 *dresid = block<bf16>("grad.dresid"), *dln = block<bf16>("grad.dln"), *dh = block<bf16>("grad.dh"),
       *dgate = block<bf16>("grad.dgate"), *dup = block<bf16>("grad.dup"), *datt = block<bf16>("grad.datt"),
       *dq = block<bf16>("grad.dq"), *dk = block<bf16>("grad.dk"), *dv = block<bf16>("grad.dv"),
       *dqp = block<bf16>("grad.dqp"), *dkp = block<bf16>("grad.dkp");
  const auto zero = [&](bf16* p, size_t n) { CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(bf16), s)); };
  float* rms_ws = workspace(std::max(ops::rmsnorm_backward_workspace_bytes(N, C),
                                     ops::rmsnorm_backward_workspace_bytes(N * H, D)));

  // MLP branch: out = mid + down(swiglu(gate(ln2), up(ln2)))
  zero(dh, size_t(N) * F);
  mm_->backward(dh, G + o.down, dresid, a.h, w_ + o.down, N, F, C, s);
  ops::swiglu_backward(dgate, dup, dh, a.gate, a.up, size_t(N) * F, s);
  zero(dln, size_t(N) * C);
  mm_->backward(dln, G + o.gate, dgate, a.ln2, w_ + o.gate, N, C, F, s);
  mm_->backward(dln, G + o.up, dup, a.ln2, w_ + o.up, N, C, F, s);
  tp_sum(dln, size_t(N) * C);  // column-parallel gate/up: sum the ranks' shares
  ops::rmsnorm_backward(dresid, G + o.post_norm, dln, a.mid, w_ + o.post_norm, a.rstd2, N, C, s, rms_ws);
  // Attention branch: mid = resid + o(attn(rope(qknorm(q)), rope(qknorm(k)), v))
  zero(datt, size_t(N) * QD_);
  mm_->backward(datt, G + o.o, dresid, a.att, w_ + o.o, N, QD_, C, s);
  ops::attention_backward(dq, dk, dv, datt, a.qr, a.kr, a.v, a.att, a.lse,
                          workspace(ops::attention_backward_workspace_bytes(B, T, H, HK, D)), B, T, H, HK, D, s);
  ops::rope_backward(dq, pos, N, H, D, theta, cfg_.rope_scaling, s);
  ops::rope_backward(dk, pos, N, HK, D, theta, cfg_.rope_scaling, s);
  const bf16 *dq_proj = dq, *dk_proj = dk;
  if (cfg_.qk_norm) {
    zero(dqp, size_t(N) * QD_);
    zero(dkp, size_t(N) * KD_);
    ops::rmsnorm_backward(dqp, G + o.q_norm, dq, a.q, w_ + o.q_norm, a.q_rstd, N * H, D, s, rms_ws);
    ops::rmsnorm_backward(dkp, G + o.k_norm, dk, a.k, w_ + o.k_norm, a.k_rstd, N * HK, D, s, rms_ws);
    dq_proj = dqp;
    dk_proj = dkp;
  }
  zero(dln, size_t(N) * C);
  mm_->backward(dln, G + o.q, dq_proj, a.ln1, w_ + o.q, N, C, QD_, s);
  mm_->backward(dln, G + o.k, dk_proj, a.ln1, w_ + o.k, N, C, KD_, s);
  mm_->backward(dln, G + o.v, dv, a.ln1, w_ + o.v, N, C, KD_, s);
  tp_sum(dln, size_t(N) * C);  // column-parallel q/k/v
  ops::rmsnorm_backward(dresid, G + o.input_norm, dln, a.resid, w_ + o.input_norm, a.rstd1, N, C, s, rms_ws);
}

void GpuTransformer::backward(const float* dlogits) {
  OPD_REQUIRE(opt_.train, "GPU model: backward on a model planned without training");
  OPD_REQUIRE(B_ > 0, "GPU model: backward called before forward");
  const int B = B_, T = T_, N = B * T, C = cfg_.d_model, V = V_;
  cudaStream_t s = stream_;
  // cuBLASLt multiplies bf16 by bf16: the fp32 logit gradient is rounded once, here.
  bf16* dlogits16 = block<bf16>("dlogits.bf16");
  ops::convert(dlogits16, dlogits, size_t(N) * V, s);
  bf16 *dresid = block<bf16>("grad.dresid"), *dln = block<bf16>("grad.dln");
  CUDA_CHECK(cudaMemsetAsync(dln, 0, size_t(N) * C * sizeof(bf16), s));
  CUDA_CHECK(cudaMemsetAsync(dresid, 0, size_t(N) * C * sizeof(bf16), s));
  mm_->backward(dln, grads_ + off_.lm_head, dlogits16, block<bf16>("final.ln"), w_ + off_.lm_head, N, C, V, s);
  tp_sum(dln, size_t(N) * C);  // the vocab-parallel head: each rank's share of dL/dln
  ops::rmsnorm_backward(dresid, grads_ + off_.final_norm, dln, block<bf16>("final.resid"), w_ + off_.final_norm,
                        block<float>("final.rstd"), N, C, s, workspace(ops::rmsnorm_backward_workspace_bytes(N, C)));
  for (int l = cfg_.n_layers - 1; l >= 0; --l) {
    const Layer& a = layer(l);
    if (opt_.recompute) layer_forward(l, a, nullptr, B, T, -1);
    layer_backward(l, a, B, T);
  }
  if (split())
    ops::embedding_backward_shard(grads_ + off_.embed, dresid, block<int>("tokens"), N, C, v0_, V_, s);
  else
    ops::embedding_backward(grads_ + off_.embed, dresid, block<int>("tokens"), N, V, C, s);
  finish_collectives();
}

float* GpuTransformer::prefill_last(const int* tokens, int B, int T, const int* len) {
  OPD_REQUIRE(B >= 1 && B <= opt_.kv_batch, "GPU model: prefill of ", B, " sequences; the KV cache holds ",
              opt_.kv_batch);
  const int chunk = std::min(B, opt_.batch * opt_.seq / T);
  OPD_REQUIRE(chunk >= 1, "GPU model: a prompt of ", T, " tokens is longer than the planned forward of ", opt_.batch,
              " x ", opt_.seq, " tokens");
  const int V = V_;
  float* rows = block<float>("dec.logits");
  for (int b0 = 0; b0 < B; b0 += chunk) {
    const int n = std::min(chunk, B - b0);
    const float* logits = forward(tokens + size_t(b0) * T, n, T, b0);
    for (int b = 0; b < n; ++b) {
      const int last = len[b0 + b] - 1;
      OPD_REQUIRE(last >= 0 && last < T, "GPU model: prompt ", b0 + b, " has length ", last + 1, " of at most ", T);
      CUDA_CHECK(cudaMemcpyAsync(rows + size_t(b0 + b) * V, logits + (size_t(b) * T + last) * V, V * sizeof(float),
                                 cudaMemcpyDeviceToDevice, stream_));
    }
  }
  return rows;
}

float* GpuTransformer::dlogits(size_t n) {
  const MemoryBlock& b = plan_.at("dlogits");
  OPD_REQUIRE(n * sizeof(float) <= b.bytes, "GPU model: ", n, " logit gradients exceed the planned ",
              b.bytes / sizeof(float));
  return block<float>("dlogits");
}

float* GpuTransformer::decode(const int* tokens, const int* pos, int B) {
  const int S = opt_.kv_capacity, C = cfg_.d_model, F = F_, H = H_, HK = HK_, D = cfg_.head_dim, V = V_;
  OPD_REQUIRE(opt_.kv_batch > 0 && S > 0, "GPU model: decode on a model planned without a KV cache");
  OPD_REQUIRE(B >= 1 && B <= opt_.kv_batch, "GPU model: decode of ", B, " sequences; the KV cache holds ",
              opt_.kv_batch);
  check_tokens(tokens, size_t(B));
  for (int b = 0; b < B; ++b)
    OPD_REQUIRE(pos[b] >= 0 && pos[b] < S, "GPU model: decoding sequence ", b, " at position ", pos[b],
                " overflows the KV cache of ", S, " positions");
  const float eps = static_cast<float>(cfg_.rms_eps), theta = static_cast<float>(cfg_.rope_theta);
  cudaStream_t s = stream_;
  int* tok = block<int>("dec.tokens");
  int* dpos = block<int>("dec.pos");
  upload_tokens(tok, tokens, B);
  upload_tokens(dpos, pos, B);
  bf16 *x = block<bf16>("dec.x"), *ln = block<bf16>("dec.ln1"), *q = block<bf16>("dec.q"), *k = block<bf16>("dec.k"),
       *v = block<bf16>("dec.v"), *qr = block<bf16>("dec.qr"), *kr = block<bf16>("dec.kr"),
       *att = block<bf16>("dec.att"), *gate = block<bf16>("dec.gate"), *up = block<bf16>("dec.up"),
       *h = block<bf16>("dec.h");
  float *rstd = block<float>("dec.rstd1"), *q_rstd = block<float>("dec.q_rstd"), *k_rstd = block<float>("dec.k_rstd");
  void* ws = workspace(ops::attention_decode_workspace_bytes(B, S, H, D));

  embed(x, tok, B);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const LayerOffsets& o = off_.layers[l];
    ops::rmsnorm_forward(ln, rstd, x, w_ + o.input_norm, B, C, eps, s);
    mm_->forward(q, ln, w_ + o.q, B, C, QD_, false, s);
    mm_->forward(k, ln, w_ + o.k, B, C, KD_, false, s);
    mm_->forward(v, ln, w_ + o.v, B, C, KD_, false, s);
    if (cfg_.qk_norm) {
      ops::rmsnorm_forward(qr, q_rstd, q, w_ + o.q_norm, B * H, D, eps, s);
      ops::rmsnorm_forward(kr, k_rstd, k, w_ + o.k_norm, B * HK, D, eps, s);
    } else {
      CUDA_CHECK(cudaMemcpyAsync(qr, q, size_t(B) * QD_ * sizeof(bf16), cudaMemcpyDeviceToDevice, s));
      CUDA_CHECK(cudaMemcpyAsync(kr, k, size_t(B) * KD_ * sizeof(bf16), cudaMemcpyDeviceToDevice, s));
    }
    ops::rope_forward(qr, dpos, B, H, D, theta, cfg_.rope_scaling, s);
    ops::rope_forward(kr, dpos, B, HK, D, theta, cfg_.rope_scaling, s);
    ops::attention_decode(att, qr, kr, v, kv_k_[l], kv_v_[l], dpos, ws, B, S, H, HK, D, s);
    row_parallel(x, x, att, w_ + o.o, B, QD_, C);
    ops::rmsnorm_forward(ln, rstd, x, w_ + o.post_norm, B, C, eps, s);
    mm_->forward(gate, ln, w_ + o.gate, B, C, F, false, s);
    mm_->forward(up, ln, w_ + o.up, B, C, F, false, s);
    ops::swiglu_forward(h, gate, up, size_t(B) * F, s);
    row_parallel(x, x, h, w_ + o.down, B, F, C);
  }
  ops::rmsnorm_forward(ln, rstd, x, w_ + off_.final_norm, B, C, eps, s);
  float* logits = block<float>("dec.logits");
  mm_->forward(logits, ln, w_ + off_.lm_head, B, C, V, false, s);
  finish_collectives();
  return logits;
}

void GpuTransformer::sync() const { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void GpuTransformer::copy_grads(float* host, bool to_host) {
  OPD_REQUIRE(grads_, "GPU model: no gradients in a plan without training");
  const size_t bytes = n_params_ * sizeof(float);
  if (to_host)
    CUDA_CHECK(cudaMemcpyAsync(host, grads_, bytes, cudaMemcpyDeviceToHost, stream_));
  else
    CUDA_CHECK(cudaMemcpyAsync(grads_, host, bytes, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuTransformer::download(Transformer& host) const {
  OPD_REQUIRE(master_, "GPU model: only a training model keeps fp32 weights to download");
  OPD_REQUIRE(host.params().size() == n_params_, "GPU model: downloading ", n_params_, " parameters into a model of ",
              host.params().size());
  CUDA_CHECK(cudaMemcpyAsync(host.params().data(), master_, n_params_ * sizeof(float), cudaMemcpyDeviceToHost,
                             stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace opd
#endif  // OPD_WITH_CUDA
