// The CUDA backend of the decoder (model/decoder_impl.h; docs/ARCHITECTURE.md §2, precision): bf16
// weights and activations, fp32 master weights, gradients, AdamW state and every statistic (norms,
// softmax, logits), the ops of kernels/cuda on one stream. Every buffer is a block of one arena laid
// out by plan_model_memory before anything runs; a buffer the plan lacks, or one larger than
// planned, is an error naming it. Under tensor parallelism the sums of activations run through a
// DeviceAllReduce (NCCL when every rank has its own GPU, else host memory). Only in a build with
// CUDA (OPD_WITH_CUDA).
#pragma once
#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/decoder.h"
#include "model/memory_plan.h"
#include "model/params.h"
#include "parallel/device_group.h"

namespace opd {
namespace cuda {
class Matmul;
}

// The kernels' scratch and cuBLASLt's workspace a model planned with `options` needs.
WorkspaceSizes gpu_workspace(const ModelConfig& cfg, const MemoryPlanOptions& options);

// Refuses, naming `who` and the option, a model the GPU kernels cannot run split over tp ranks
// (head size, rows not in 16-byte packs).
void check_gpu_shape(const ModelConfig& cfg, int tp, const std::string& who);

class CudaBackend {
 public:
  using act = __nv_bfloat16;
  static constexpr bool kDevice = true;

  // Plans the memory for `options` on the current CUDA device, refuses a plan that does not fit
  // (naming `who` and what to lower), allocates it and uploads `host_params` (this rank's shards,
  // in the flat layout of `specs`). tp: the model's TP group (null without TP); device_tp: the same
  // group over NCCL (nullable; why_not_nccl says why it is null, for the memory report).
  CudaBackend(const ModelConfig& cfg, const std::vector<ParamSpec>& specs, const std::vector<float>& host_params,
              const MemoryPlanOptions& options, const std::string& who, Communicator* tp, Communicator* device_tp,
              const std::string& why_not_nccl = "");
  ~CudaBackend();
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  // ---- memory ----
  template <typename T>
  T* buffer(const std::string& name, size_t n);
  const int* ints(const std::string& name, const int* host, size_t n);  // uploaded to the planned block
  const act* weights() const { return w_; }
  float* grads();
  act* cache_k(KVCache& c, int layer);
  act* cache_v(KVCache& c, int layer);
  void reset_cache(KVCache& c, int B, int capacity, size_t kv_dim) const;
  size_t max_forward_tokens() const { return size_t(opt_.batch) * opt_.seq; }
  void check_forward(int B, int T) const;

  // ---- data movement ----
  template <typename T>
  void copy(T* dst, const T* src, size_t n) const;
  template <typename T>
  void zero(T* x, size_t n) const;
  void copy_rows(act* dst, size_t dst_pitch, const act* src, size_t src_pitch, size_t width, size_t rows) const;
  template <typename T>
  void tp_sum(T* x, size_t n);
  // Waits for this model's collectives under TP over NCCL: another model's (a colocated teacher's, on
  // its own stream and communicator) must not run alongside, where ranks could order the two
  // differently and wait for each other.
  void finish();
  int tp_rank() const { return tp_ ? tp_->rank() : 0; }
  void all_reduce_grads(Communicator& dp, size_t n);
  TrainingMemory training_memory();
  void download_params(std::vector<float>& host);
  void* stream() const { return stream_; }
  std::string memory_report(const std::string& title) const;

  // ---- ops ----
  void rmsnorm_forward(act* out, float* rstd, const act* x, const act* w, int N, int C, float eps);
  void rmsnorm_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, const float* rstd, int N,
                        int C);
  void matmul_forward(act* out, const act* x, const act* w, int N, int K, int M, bool accumulate);
  void matmul_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, int N, int K, int M);
  void logits_forward(float* logits, const act* x, const act* w, int N, int K, int M);
  void logits_backward(act* dx, float* dw, const float* dlogits, const act* x, const act* w, int N, int K, int M);
  void rope_forward(act* x, const int* pos, int N, int H, int D);
  void rope_backward(act* dx, const int* pos, int N, int H, int D);
  void attention_forward(act* out, float* lse, const act* q, const act* k, const act* v, int B, int T, int H,
                         int HK, int D);
  void attention_backward(act* dq, act* dk, act* dv, const act* dout, const act* q, const act* k, const act* v,
                          const act* out, const float* lse, int B, int T, int H, int HK, int D);
  void kv_cache_write(act* kc, act* vc, const act* k, const act* v, int B, int T, int S, int HK, int D);
  void attention_decode(act* out, const act* q, const act* k, const act* v, act* kc, act* vc, const int* pos, int B,
                        int S, int H, int HK, int D);
  void swiglu_forward(act* out, const act* gate, const act* up, size_t n);
  void swiglu_backward(act* dgate, act* dup, const act* dout, const act* gate, const act* up, size_t n);
  void embedding_forward(act* out, const int* tokens, const act* table, int N, int C, int v0, int Vl, bool shard);
  void embedding_backward(float* dtable, const act* dout, const int* tokens, int N, int C, int v0, int Vl,
                          bool shard);

 private:
  void* block_bytes(const std::string& name, size_t bytes) const;
  void* workspace(size_t bytes) const;
  void upload_params(const std::vector<float>& host);
  void sync() const;

  ModelConfig cfg_;
  MemoryPlanOptions opt_;
  MemoryPlan plan_;
  std::vector<ParamSpec> specs_;
  size_t n_params_ = 0;
  Communicator* tp_ = nullptr;
  std::string tp_transport_;  // how TP sums travel, for the memory report
  std::unique_ptr<DeviceAllReduce> tp_reduce_;
  char* arena_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::Matmul> mm_;
  act* w_ = nullptr;
  std::vector<act*> kv_k_, kv_v_;  // each layer's cache [kv_batch, kv_capacity, Hkv, D]
};

class Transformer;
// The decoder of `host` on the current CUDA device, planned for `options` (model/decoder_impl.h).
std::unique_ptr<Decoder> make_cuda_decoder(const Transformer& host, const MemoryPlanOptions& options,
                                           const std::string& who, Communicator* device_tp,
                                           const std::string& why_not_nccl);

}  // namespace opd
#endif  // OPD_WITH_CUDA
