// The Qwen3-family decoder on one GPU (ARCHITECTURE §2, precision): bf16 weights and activations,
// fp32 master weights, gradients, AdamW state and every statistic (norms, softmax, logits). The
// same layer sequence as the CPU Transformer, forward and backward side by side, built from the
// CUDA ops; every buffer comes from one arena laid out by plan_model_memory before anything runs.
// Only in a build with CUDA (OPD_WITH_CUDA). Under tensor parallelism (the host model's TP group)
// each rank holds its shards, as the CPU model does (Megatron: q/k/v/gate/up column-parallel, o and
// down row-parallel with their outputs summed over the group, embedding and LM head split by
// vocabulary rows), and the sums of activations run through a DeviceAllReduce (NCCL when every
// rank has its own GPU).
#pragma once
#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "model/memory_plan.h"
#include "model/transformer.h"
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

class GpuTransformer {
 public:
  using bf16 = __nv_bfloat16;

  // Plans the memory for `options` (train: master weights, gradients, AdamW state, saved
  // activations; batch x seq: the largest forward; kv_batch x kv_capacity: the generation cache),
  // refuses a plan that does not fit the device's free memory (naming `who` and what to lower),
  // then allocates it and uploads `host`'s parameters. The current CUDA device is used. Under TP
  // (host.tp()), options.tp must be its size; device_tp (nullable) is the same group over NCCL.
  GpuTransformer(const Transformer& host, const MemoryPlanOptions& options, const std::string& who = "this rank",
                 Communicator* device_tp = nullptr);
  ~GpuTransformer();
  GpuTransformer(const GpuTransformer&) = delete;
  GpuTransformer& operator=(const GpuTransformer&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const MemoryPlan& plan() const { return plan_; }
  cudaStream_t stream() const { return stream_; }
  void sync() const;  // waits for the work queued on stream()

  // Training forward over right-padded host token ids [B, T] (B*T within the plan). Returns
  // device fp32 logits [B*T, V] (V: this rank's vocabulary shard under TP), valid until the next
  // forward. With fill_cache >= 0 (prefill) the
  // layers' keys and values also go to rows [0, T) of the cache's sequences [fill_cache,
  // fill_cache + B): a batch of kv_batch sequences can be prefilled a micro-batch at a time.
  float* forward(const int* tokens, int B, int T, int fill_cache = -1);
  // Backward of the last forward from device fp32 dL/dlogits [B*T, V] (the logits buffer itself
  // when a fused loss kernel wrote the gradient in place); accumulates into the fp32 gradients.
  void backward(const float* dlogits);
  void zero_grad();
  // Under TP: the gradients of tensors each rank computed for its own heads only
  // (ParamSpec::partial_grad) summed over the group, as Transformer::reduce_partial_grads.
  void reduce_partial_grads();
  // The host model's parameter layout (this rank's shards) and TP group (null without TP).
  const std::vector<ParamSpec>& specs() const { return specs_; }
  Communicator* tp() const { return tp_; }
  size_t num_params() const { return n_params_; }
  int kv_batch() const { return opt_.kv_batch; }
  int kv_capacity() const { return opt_.kv_capacity; }
  // The flat parameter buffers, in the host model's layout (training plans only, but weights()):
  // what the GPU optimizer (train/gpu_optimizer.h) updates.
  bf16* weights() { return w_; }
  float* master() { return master_; }
  float* grads() { return grads_; }
  // A planned block by name (e.g. "adam.m"), typed; an error if the plan lacks it.
  template <typename T>
  T* block(const std::string& name) const;

  // Generation: prefill fills the cache of sequences [first, first + B) (see forward); decode
  // appends one token to each of the first B (<= kv_batch) sequences (host tokens [B] at host
  // positions pos[b]) and returns device fp32 logits [B, V].
  float* prefill(const int* tokens, int B, int T, int first = 0) { return forward(tokens, B, T, first); }
  float* decode(const int* tokens, const int* pos, int B);
  // Prefills right-padded prompts [B, T] (B <= kv_batch) as many sequences at a time as the plan's
  // forward holds, and returns device fp32 logits [B, V] of each prompt's last token (row
  // len[b] - 1): what sampling starts from.
  float* prefill_last(const int* tokens, int B, int T, const int* len);
  // The fp32 dL/dlogits buffer of a training plan (n floats): where the losses write.
  float* dlogits(size_t n);

  // The fp32 master weights back into `host` (same shape), for checkpoints and the CPU side.
  void download(Transformer& host) const;
  // The fp32 gradients to or from a host array of num_params() floats (waits for the copy).
  void copy_grads(float* host, bool to_host);

 private:
  struct Layer;  // device pointers to one layer's activations
  const Layer& layer(int l) const { return *layers_[l]; }
  Layer make_layer(int l) const;
  void check_tokens(const int* tokens, size_t n) const;
  void upload_tokens(int* dst, const int* tokens, size_t n);
  // One layer's forward from a.resid; writes `next` = the layer's output unless null (recompute).
  void layer_forward(int l, const Layer& a, bf16* next, int B, int T, int fill_cache);
  void layer_backward(int l, const Layer& a, int B, int T);
  float* workspace(size_t bytes) const;
  bool split() const { return tp_ != nullptr; }
  // Under TP over NCCL, waits for this model's collectives: another model's (a colocated teacher's,
  // on its own stream and communicator) must not run alongside them, where ranks could schedule
  // the two in different orders and wait for each other.
  void finish_collectives();
  // out = (residual) + inp @ w^T for a row-parallel w [M, K]: the residual joins on TP rank 0 only
  // and the partial products are summed over the group. out may be residual.
  void row_parallel(bf16* out, const bf16* residual, const bf16* inp, const bf16* w, int N, int K, int M);
  void tp_sum(bf16* x, size_t n);  // nothing without TP
  void embed(bf16* out, const int* tokens, int N);

  ModelConfig cfg_;
  MemoryPlanOptions opt_;
  MemoryPlan plan_;
  ModelOffsets off_;
  std::vector<ParamSpec> specs_;
  size_t n_params_ = 0;
  // This rank's sizes: heads, kv heads, ffn and vocabulary over the TP degree.
  int H_ = 0, HK_ = 0, F_ = 0, V_ = 0, QD_ = 0, KD_ = 0, v0_ = 0;
  Communicator* tp_ = nullptr;
  std::unique_ptr<DeviceAllReduce> tp_reduce_;
  char* arena_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::Matmul> mm_;
  bf16* w_ = nullptr;       // bf16 weights, the host's flat layout
  float* master_ = nullptr;  // fp32 master weights (training)
  float* grads_ = nullptr;
  std::vector<std::unique_ptr<Layer>> layers_;  // resolved once: the plan's names are not looked up per step
  std::vector<bf16*> kv_k_, kv_v_;              // each layer's KV cache [kv_batch, kv_capacity, Hkv, D]
  int B_ = 0, T_ = 0;       // the last forward's shape
};

}  // namespace opd
#endif  // OPD_WITH_CUDA
