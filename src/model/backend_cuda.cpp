#ifdef OPD_WITH_CUDA
#include "model/backend_cuda.h"

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
#include "model/decoder_impl.h"
#include "model/transformer.h"

namespace opd {

namespace ops = opd::cuda;
using bf16 = __nv_bfloat16;

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

CudaBackend::CudaBackend(const ModelConfig& cfg, const std::vector<ParamSpec>& specs,
                         const std::vector<float>& host_params, const MemoryPlanOptions& options,
                         const std::string& who, Communicator* tp, Communicator* device_tp,
                         const std::string& why_not_nccl)
    : cfg_(cfg), opt_(options), specs_(specs), n_params_(host_params.size()), tp_(tp) {
  const int degree = tp_ ? tp_->size() : 1;
  OPD_REQUIRE(opt_.tp == degree, "GPU model: planned for tp = ", opt_.tp, " but the model is split over ", degree,
              " ranks");
  OPD_REQUIRE(tp_ || !device_tp, "GPU model: a device TP group for a whole model");
  check_gpu_shape(cfg_, degree, who);
  OPD_REQUIRE(opt_.seq <= cfg_.max_seq && opt_.kv_capacity <= cfg_.max_seq, "GPU model: planned sequences of ",
              std::max(opt_.seq, opt_.kv_capacity), " exceed max_seq = ", cfg_.max_seq);
  plan_ = plan_model_memory(cfg_, opt_, gpu_workspace(cfg_, opt_));
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  plan_.check_fits(free_bytes, who);
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  if (tp_) {
    tp_reduce_ = std::make_unique<DeviceAllReduce>(*tp_, device_tp, stream_);
    tp_transport_ = device_tp ? "over NCCL" : "through host memory (" + why_not_nccl + ")";
  }
  // Another process on this GPU (a rank sharing it) may have taken memory since the check.
  if (cudaMalloc(&arena_, std::max<size_t>(plan_.arena_bytes(), 1)) != cudaSuccess) {
    cudaGetLastError();
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    cudaStreamDestroy(stream_);
    throw Error(str(who, ": allocating the planned ", format_bytes(plan_.arena_bytes()), " of device memory failed (",
                    format_bytes(free_bytes), " free now; ranks sharing this GPU take from the same memory)"));
  }
  mm_ = std::make_unique<ops::Matmul>(ops::Matmul::kDefaultWorkspace);
  w_ = buffer<act>("weights.bf16", n_params_);
  if (opt_.kv_batch > 0)
    for (int l = 0; l < cfg_.n_layers; ++l) {
      kv_k_.push_back(static_cast<act*>(block_bytes(str("kv.L", l, ".k"), 0)));
      kv_v_.push_back(static_cast<act*>(block_bytes(str("kv.L", l, ".v"), 0)));
    }
  upload_params(host_params);
}

CudaBackend::~CudaBackend() {
  // Errors are not thrown from here: the arena and stream go whatever state the device is in.
  mm_.reset();
  tp_reduce_.reset();
  if (stream_) cudaStreamSynchronize(stream_);
  cudaFree(arena_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::upload_params(const std::vector<float>& host) {
  const size_t P = n_params_;
  if (opt_.train) {
    float* master = buffer<float>("weights.master", P);
    CUDA_CHECK(cudaMemcpyAsync(master, host.data(), P * sizeof(float), cudaMemcpyHostToDevice, stream_));
    ops::convert(w_, master, P, stream_);
    zero(buffer<float>("grads", P), P);
    zero(buffer<float>("adam.m", P), P);
    zero(buffer<float>("adam.v", P), P);
    std::vector<unsigned char> mask(P, 0);
    for (const ParamSpec& s : specs_) std::fill_n(mask.begin() + s.offset, s.size, s.decay ? 1 : 0);
    CUDA_CHECK(cudaMemcpyAsync(buffer<unsigned char>("adam.decay_mask", P), mask.data(), P, cudaMemcpyHostToDevice,
                               stream_));
  } else {
    // No fp32 copy is planned: the weights pass through a bounded staging buffer on their way to bf16.
    const size_t chunk = std::min<size_t>(P, size_t(1) << 24);
    float* staging = nullptr;
    CUDA_CHECK(cudaMallocAsync(&staging, chunk * sizeof(float), stream_));
    for (size_t i = 0; i < P; i += chunk) {
      const size_t n = std::min(chunk, P - i);
      CUDA_CHECK(cudaMemcpyAsync(staging, host.data() + i, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
      ops::convert(w_ + i, staging, n, stream_);
    }
    CUDA_CHECK(cudaFreeAsync(staging, stream_));
  }
  sync();
}

// ---- memory --------------------------------------------------------------------------------------

void* CudaBackend::block_bytes(const std::string& name, size_t bytes) const {
  const MemoryBlock& b = plan_.at(name);
  OPD_REQUIRE(b.in_arena, "GPU model: block '", name, "' is not in the arena");
  OPD_REQUIRE(bytes <= b.bytes, "GPU model: '", name, "' needs ", bytes, " bytes; the memory plan holds ", b.bytes,
              " (a batch larger than planned)");
  return arena_ + b.offset;
}

template <typename T>
T* CudaBackend::buffer(const std::string& name, size_t n) {
  return static_cast<T*>(block_bytes(name, n * sizeof(T)));
}
template float* CudaBackend::buffer<float>(const std::string&, size_t);
template bf16* CudaBackend::buffer<bf16>(const std::string&, size_t);
template int* CudaBackend::buffer<int>(const std::string&, size_t);
template unsigned char* CudaBackend::buffer<unsigned char>(const std::string&, size_t);

const int* CudaBackend::ints(const std::string& name, const int* host, size_t n) {
  int* dst = buffer<int>(name, n);
  CUDA_CHECK(cudaMemcpyAsync(dst, host, n * sizeof(int), cudaMemcpyHostToDevice, stream_));
  return dst;
}

float* CudaBackend::grads() {
  OPD_REQUIRE(opt_.train, "GPU model: gradients of a model planned without training");
  return buffer<float>("grads", n_params_);
}

void* CudaBackend::workspace(size_t bytes) const {
  return bytes == 0 ? nullptr : block_bytes("workspace.kernels", bytes);
}

CudaBackend::act* CudaBackend::cache_k(KVCache&, int layer) {
  OPD_REQUIRE(!kv_k_.empty(), "GPU model: a KV cache was not planned (--gen-batch)");
  return kv_k_[layer];
}
CudaBackend::act* CudaBackend::cache_v(KVCache&, int layer) {
  OPD_REQUIRE(!kv_v_.empty(), "GPU model: a KV cache was not planned (--gen-batch)");
  return kv_v_[layer];
}

void CudaBackend::reset_cache(KVCache& c, int B, int capacity, size_t) const {
  // The model's one planned cache: this batch takes its first B sequences.
  OPD_REQUIRE(B <= opt_.kv_batch, "model: a KV cache of ", B, " sequences; the GPU plan holds ", opt_.kv_batch,
              " (--gen-batch)");
  OPD_REQUIRE(capacity <= opt_.kv_capacity, "model: a KV cache of ", capacity, " positions; the GPU plan holds ",
              opt_.kv_capacity);
  c.batch = B;
  c.capacity = capacity;
  c.stride = opt_.kv_capacity;
  c.k.clear();
  c.v.clear();
}

void CudaBackend::check_forward(int B, int T) const {
  OPD_REQUIRE(size_t(B) * T <= max_forward_tokens(), "GPU model: a forward of ", B, " x ", T,
              " tokens exceeds the planned ", opt_.batch, " x ", opt_.seq);
}

// ---- data movement -------------------------------------------------------------------------------

template <typename T>
void CudaBackend::copy(T* dst, const T* src, size_t n) const {
  if (dst != src) CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, stream_));
}
template void CudaBackend::copy<float>(float*, const float*, size_t) const;
template void CudaBackend::copy<bf16>(bf16*, const bf16*, size_t) const;

template <typename T>
void CudaBackend::zero(T* x, size_t n) const {
  CUDA_CHECK(cudaMemsetAsync(x, 0, n * sizeof(T), stream_));
}
template void CudaBackend::zero<float>(float*, size_t) const;
template void CudaBackend::zero<bf16>(bf16*, size_t) const;

void CudaBackend::copy_rows(act* dst, size_t dst_pitch, const act* src, size_t src_pitch, size_t width,
                            size_t rows) const {
  CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch * sizeof(act), src, src_pitch * sizeof(act), width * sizeof(act), rows,
                               cudaMemcpyDeviceToDevice, stream_));
}

template <typename T>
void CudaBackend::tp_sum(T* x, size_t n) {
  if (tp_reduce_) tp_reduce_->sum(x, n);
}
template void CudaBackend::tp_sum<float>(float*, size_t);
template void CudaBackend::tp_sum<bf16>(bf16*, size_t);

void CudaBackend::sync() const { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void CudaBackend::finish() {
  if (tp_reduce_ && tp_reduce_->over_nccl()) sync();
}

void CudaBackend::all_reduce_grads(Communicator& dp, size_t n) {
  float* g = grads();
  if (dp.device_buffers()) {
    sync();  // the communicator runs on its own stream
    dp.all_reduce(g, n, ReduceOp::kSum);
    return;
  }
  std::vector<float> host(n);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), g, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  sync();
  dp.all_reduce(host.data(), n, ReduceOp::kSum);
  CUDA_CHECK(cudaMemcpyAsync(g, host.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream_));
  sync();
}

TrainingMemory CudaBackend::training_memory() {
  OPD_REQUIRE(opt_.train, "GPU model: training state of a model planned without training");
  TrainingMemory m;
  m.params = buffer<float>("weights.master", n_params_);
  m.grads = grads();
  m.adam_m = buffer<float>("adam.m", n_params_);
  m.adam_v = buffer<float>("adam.v", n_params_);
  m.decay_mask = buffer<unsigned char>("adam.decay_mask", n_params_);
  m.weights_bf16 = w_;
  m.stream = stream_;
  m.size = n_params_;
  m.device = true;
  return m;
}

void CudaBackend::download_params(std::vector<float>& host) {
  if (!opt_.train) return;  // a forward-only model keeps no fp32 weights: the host copy is the original
  OPD_REQUIRE(host.size() == n_params_, "GPU model: downloading ", n_params_, " parameters into a model of ",
              host.size());
  CUDA_CHECK(cudaMemcpyAsync(host.data(), buffer<float>("weights.master", n_params_), n_params_ * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
  sync();
}

std::string CudaBackend::memory_report(const std::string& title) const {
  std::string r = plan_.report(title);
  if (tp_) r += str("  tensor parallel over ", tp_->size(), " ranks: activations summed ", tp_transport_, "\n");
  return r;
}

// ---- ops -----------------------------------------------------------------------------------------

void CudaBackend::rmsnorm_forward(act* out, float* rstd, const act* x, const act* w, int N, int C, float eps) {
  ops::rmsnorm_forward(out, rstd, x, w, N, C, eps, stream_);
}
void CudaBackend::rmsnorm_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, const float* rstd,
                                   int N, int C) {
  ops::rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C, stream_,
                        static_cast<float*>(workspace(ops::rmsnorm_backward_workspace_bytes(N, C))));
}
void CudaBackend::matmul_forward(act* out, const act* x, const act* w, int N, int K, int M, bool accumulate) {
  mm_->forward(out, x, w, N, K, M, accumulate, stream_);
}
void CudaBackend::matmul_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, int N, int K,
                                  int M) {
  mm_->backward(dx, dw, dout, x, w, N, K, M, stream_);
}
void CudaBackend::logits_forward(float* logits, const act* x, const act* w, int N, int K, int M) {
  mm_->forward(logits, x, w, N, K, M, false, stream_);
}
void CudaBackend::logits_backward(act* dx, float* dw, const float* dlogits, const act* x, const act* w, int N, int K,
                                  int M) {
  // cuBLASLt multiplies bf16 by bf16: the fp32 logit gradient is rounded once, here.
  act* d16 = buffer<act>("dlogits.bf16", size_t(N) * M);
  ops::convert(d16, dlogits, size_t(N) * M, stream_);
  mm_->backward(dx, dw, d16, x, w, N, K, M, stream_);
}
void CudaBackend::rope_forward(act* x, const int* pos, int N, int H, int D) {
  ops::rope_forward(x, pos, N, H, D, static_cast<float>(cfg_.rope_theta), cfg_.rope_scaling, stream_);
}
void CudaBackend::rope_backward(act* dx, const int* pos, int N, int H, int D) {
  ops::rope_backward(dx, pos, N, H, D, static_cast<float>(cfg_.rope_theta), cfg_.rope_scaling, stream_);
}
void CudaBackend::attention_forward(act* out, float* lse, const act* q, const act* k, const act* v, int B, int T,
                                    int H, int HK, int D) {
  ops::attention_forward(out, lse, q, k, v, B, T, H, HK, D, stream_);
}
void CudaBackend::attention_backward(act* dq, act* dk, act* dv, const act* dout, const act* q, const act* k,
                                     const act* v, const act* out, const float* lse, int B, int T, int H, int HK,
                                     int D) {
  ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse,
                          workspace(ops::attention_backward_workspace_bytes(B, T, H, HK, D)), B, T, H, HK, D, stream_);
}
void CudaBackend::kv_cache_write(act* kc, act* vc, const act* k, const act* v, int B, int T, int S, int HK, int D) {
  ops::kv_cache_write(kc, vc, k, v, B, T, S, HK, D, stream_);
}
void CudaBackend::attention_decode(act* out, const act* q, const act* k, const act* v, act* kc, act* vc,
                                   const int* pos, int B, int S, int H, int HK, int D) {
  ops::attention_decode(out, q, k, v, kc, vc, pos, workspace(ops::attention_decode_workspace_bytes(B, S, H, D)), B, S,
                        H, HK, D, stream_);
}
void CudaBackend::swiglu_forward(act* out, const act* gate, const act* up, size_t n) {
  ops::swiglu_forward(out, gate, up, n, stream_);
}
void CudaBackend::swiglu_backward(act* dgate, act* dup, const act* dout, const act* gate, const act* up, size_t n) {
  ops::swiglu_backward(dgate, dup, dout, gate, up, n, stream_);
}
void CudaBackend::embedding_forward(act* out, const int* tokens, const act* table, int N, int C, int v0, int Vl,
                                    bool shard) {
  if (shard)
    ops::embedding_forward_shard(out, tokens, table, N, C, v0, Vl, stream_);
  else
    ops::embedding_forward(out, tokens, table, N, C, stream_);
}
void CudaBackend::embedding_backward(float* dtable, const act* dout, const int* tokens, int N, int C, int v0, int Vl,
                                     bool shard) {
  if (shard)
    ops::embedding_backward_shard(dtable, dout, tokens, N, C, v0, Vl, stream_);
  else
    ops::embedding_backward(dtable, dout, tokens, N, Vl, C, stream_);
}

template class DecoderImpl<CudaBackend>;

std::unique_ptr<Decoder> make_cuda_decoder(const Transformer& host, const MemoryPlanOptions& options,
                                           const std::string& who, Communicator* device_tp,
                                           const std::string& why_not_nccl) {
  auto backend = std::make_unique<CudaBackend>(host.config(), host.specs(), host.params(), options, who, host.tp(),
                                               device_tp, why_not_nccl);
  return std::make_unique<DecoderImpl<CudaBackend>>(host.decoder_shape(options.train, options.recompute),
                                                    std::move(backend));
}

}  // namespace opd
#endif  // OPD_WITH_CUDA
