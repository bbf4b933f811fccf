// The Qwen3-family decoder on the CPU: forward, hand-written backward, and the KV-cache steps
// that generation is built from. It calls ops; it never loops over floats itself.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "model/tokenizer.h"
#include "parallel/communicator.h"

namespace opd {

class GpuTransformer;
struct MemoryPlanOptions;

// Per-layer tensors kept by the training forward for backward.
struct LayerActivations {
  std::vector<float> resid;        // [N, C] layer input
  std::vector<float> ln1, rstd1;   // [N, C], [N]
  std::vector<float> q, k, v;      // projections [N, H*D], [N, Hkv*D], [N, Hkv*D]
  std::vector<float> qr, kr;       // after QK-norm and RoPE: attention's inputs
  std::vector<float> q_rstd, k_rstd;  // [N*H], [N*Hkv]
  std::vector<float> att, lse;     // [N, H*D], [B, H, T]
  std::vector<float> mid;          // [N, C] after the attention residual
  std::vector<float> ln2, rstd2;
  std::vector<float> gate, up, h;  // [N, F]
};

// A batch's KV cache: per layer, keys (after RoPE) and values of shape [B, S, Hkv, D].
struct KVCache {
  int batch = 0, capacity = 0;
  std::vector<std::vector<float>> k, v;
};

// This rank's part of the vocabulary under tensor parallelism: ids [begin, begin + size) of
// `vocab`; `tp` is null (or of size 1) when the rows are whole. Everything that reads logits rows
// goes through model/vocab_parallel.h with it.
struct VocabShard {
  Communicator* tp = nullptr;
  int vocab = 0, begin = 0, size = 0;
  // The rows are on the GPU (Transformer::use_gpu): logits pointers are device pointers, read on
  // this cudaStream_t (kept opaque so this header needs no CUDA).
  bool device = false;
  void* stream = nullptr;
  // With device rows under a split: the TP group over device buffers (NCCL), for the few
  // collectives whose payload is rows rather than [N] statistics; null when the ranks share a GPU
  // or NCCL is absent, and those go through host memory over `tp`.
  Communicator* device_tp = nullptr;
  VocabShard() = default;
  VocabShard(int whole) : vocab(whole), size(whole) {}  // NOLINT: a whole vocabulary converts implicitly
  bool split() const { return tp && tp->size() > 1; }
};

class Transformer {
 public:
  // tp (optional): Megatron tensor parallelism over that group. Each rank then holds its shard of
  // every tensor (see ParamSpec): q/k/v/gate/up split by output rows (heads split across ranks),
  // o/down by input columns (their outputs summed over the group), embedding and LM head by
  // vocabulary rows; logits are this rank's [N, vocab / tp] slab, never gathered.
  Transformer(const ModelConfig& config, std::shared_ptr<const Tokenizer> tokenizer, Communicator* tp = nullptr);
  // A copy holds the same shape, tokenizer and host parameters, and starts on the CPU.
  Transformer(const Transformer& other);
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const Tokenizer& tokenizer() const { return *tok_; }
  std::shared_ptr<const Tokenizer> shared_tokenizer() const { return tok_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  Communicator* tp() const { return vocab_.split() ? vocab_.tp : nullptr; }
  const VocabShard& vocab_shard() const { return vocab_; }
  std::vector<float>& params() { return params_; }
  const std::vector<float>& params() const { return params_; }
  std::vector<float>& grads() { return grads_; }
  float* param(const ParamSpec& s) { return params_.data() + s.offset; }

  // Gaussian initialisation with std 0.02 (0.02/sqrt(2 n_layers) for residual outputs), norms at 1.
  void init_random(uint64_t seed);
  void zero_grad();

  // Training forward over right-padded token ids [B, T] (every id in the vocabulary, T <= max_seq).
  // Returns logits [B*T, V], valid until the next forward.
  const float* forward(const int* tokens, int B, int T);
  // Backward of the last forward given dL/dlogits [B*T, V]; accumulates into grads().
  void backward(const float* dlogits);
  // Under TP, the gradients of replicated tensors that each rank computed for its own heads only
  // (ParamSpec::partial_grad) summed over the group; call once per step, before the update.
  void reduce_partial_grads();

  // Generation steps. prefill runs the training forward over right-padded prompts [B, T] and fills
  // the cache; decode appends one token per sequence at position pos[b] and returns logits [B, V].
  void reset_cache(KVCache& cache, int B, int capacity) const;
  const float* prefill(KVCache& cache, const int* tokens, int B, int T);
  const float* decode(KVCache& cache, const int* tokens, const int* pos);
  // Several tokens per sequence after what the cache holds: tokens [B, T] at positions start[b] +
  // t (cache rows below start[b] filled); appends their keys and values and returns logits
  // [B*T, V]. Scoring completions against a prompt prefilled once (shared-prefix scoring).
  const float* extend(KVCache& cache, const int* tokens, int T, const int* start);

  // FLOPs of one forward over n tokens, each attending to `ctx` earlier tokens on average.
  double forward_flops(double n_tokens, double ctx) const;

  // prefill for sampling: only each prompt's last-token logits, rows [B, V] (row len[b] - 1 of
  // right-padded prompt b), valid until the next call.
  const float* prefill_last(KVCache& cache, const int* tokens, int B, int T, const int* len);
  // A buffer of n floats for dL/dlogits, where the losses write (each overwrites or zeroes all of
  // it) and backward reads; device memory on the GPU path.
  float* dlogits_buffer(size_t n);

  // The GPU path (ARCHITECTURE §2; a build with CUDA): from here on forward, backward, prefill and
  // decode run on the current CUDA device as a GpuTransformer planned for `plan` (bf16 weights and
  // activations; fp32 master weights, gradients and statistics), logits rows are device memory
  // (vocab_shard().device) and every other array stays on the host. params() remains the host
  // copy, refreshed from the master weights by sync_to_host(). Under TP each rank puts its shards
  // on its GPU (the plan's tp is the model's) and the TP group gets an NCCL twin when every rank
  // has a GPU of its own (parallel/device_group.h; collective over the group), else activations
  // are summed through host memory. `who` names the rank in a plan that does not fit.
  void use_gpu(const MemoryPlanOptions& plan, const std::string& who);
  bool on_gpu() const { return gpu_ != nullptr; }
  GpuTransformer* gpu() const { return gpu_.get(); }
  void sync_to_host();
  // Sums the gradients over a data-parallel group: in place on the device over a communicator of
  // device buffers (NCCL), else over host memory (on the GPU path the gradients go through it).
  void all_reduce_grads(Communicator& dp);
  // The GPU plan's report (model/memory_plan.h), empty on the CPU.
  std::string gpu_memory_report(const std::string& title) const;

 private:
  void ensure_batch(int B, int T);
  void check_tokens(const int* tokens, size_t n) const;
  void tp_sum(float* x, size_t n);  // all-reduce over the TP group (nothing without TP)
  void embed(float* out, const int* tokens, int N);
  // out = (residual) + inp @ w^T, where w is row-parallel: the partial products are summed over TP.
  void row_parallel_add(float* out, const float* residual, const float* inp, const float* w, int N, int K, int M);

  // This rank's sizes: heads, kv heads, ffn and vocabulary divided by the TP degree.
  struct LocalDims {
    int H = 0, HK = 0, F = 0, V = 0, QD = 0, KD = 0;
  };

  ModelConfig cfg_;
  LocalDims ld_;
  VocabShard vocab_;
  std::shared_ptr<const Tokenizer> tok_;
  std::vector<ParamSpec> specs_;
  ModelOffsets off_;
  std::vector<float> params_, grads_;

  // Activations of the last training forward.
  int B_ = 0, T_ = 0;
  std::vector<int> tokens_, pos_;
  std::vector<LayerActivations> acts_;
  std::vector<float> final_resid_, lnf_, rstdf_, logits_;
  // Backward scratch.
  std::vector<float> dresid_, dln_, dq_, dk_, dv_, datt_, dqp_, dkp_, dgate_, dup_, dh_;
  std::unique_ptr<Communicator> device_tp_;  // the TP group over NCCL (GPU path); outlives gpu_
  std::string tp_transport_;                 // why not NCCL, when device_tp_ is null
  std::shared_ptr<GpuTransformer> gpu_;      // shared_ptr: complete only where CUDA is built
  std::vector<float> dlogits_, last_rows_;
  // Decode scratch (one row per sequence).
  std::vector<float> dec_x_, dec_ln_, dec_rstd_, dec_q_, dec_k_, dec_v_, dec_qn_, dec_kn_, dec_q_rstd_, dec_k_rstd_,
      dec_att_, dec_gate_, dec_up_, dec_h_, dec_logits_;
};

}  // namespace opd
