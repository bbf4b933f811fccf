// A Qwen3-family model: its shape, tokenizer and parameters (this rank's shards under tensor
// parallelism), and the decoder that runs it (model/decoder.h: the one layer sequence, on the CPU
// or, after use_gpu, on a GPU). Forward, hand-written backward, and the KV-cache steps that
// generation and shared-prefix scoring are built from.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/decoder.h"
#include "model/params.h"
#include "model/tokenizer.h"
#include "parallel/communicator.h"

namespace opd {

struct DecoderShape;
struct MemoryPlanOptions;

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
  ~Transformer();

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
  void zero_grad() { decoder_->zero_grad(); }

  // Training forward over right-padded token ids [B, T] (every id in the vocabulary, T <= max_seq).
  // Returns logits [B*T, V], valid until the next forward (device memory on the GPU path).
  const float* forward(const int* tokens, int B, int T) { return decoder_->forward(tokens, B, T); }
  // Backward of the last forward given dL/dlogits [B*T, V]; accumulates into the gradients.
  void backward(const float* dlogits) { decoder_->backward(dlogits); }
  // Under TP, the gradients of replicated tensors that each rank computed for its own heads only
  // (ParamSpec::partial_grad) summed over the group; call once per step, before the update.
  void reduce_partial_grads() { decoder_->reduce_partial_grads(); }

  // Generation steps. prefill runs the training forward over right-padded prompts [B, T] and fills
  // the cache's sequences [first, first + B); decode appends one token per sequence at position
  // pos[b] and returns logits [B, V].
  void reset_cache(KVCache& cache, int B, int capacity) const { decoder_->reset_cache(cache, B, capacity); }
  const float* prefill(KVCache& cache, const int* tokens, int B, int T, int first = 0) {
    return decoder_->forward(tokens, B, T, &cache, first);
  }
  const float* decode(KVCache& cache, const int* tokens, const int* pos) {
    return decoder_->extend(cache, tokens, 1, pos);
  }
  // Several tokens per sequence after what the cache holds: tokens [B, T] at positions start[b] +
  // t (cache rows below start[b] filled); appends their keys and values and returns logits
  // [B*T, V]. Scoring completions against a prompt prefilled once (shared-prefix scoring).
  const float* extend(KVCache& cache, const int* tokens, int T, const int* start) {
    return decoder_->extend(cache, tokens, T, start);
  }
  // Copies positions [0, len) of the cache's first sequence into its other sequences (a prompt
  // prefilled once, shared by the completions that extend it).
  void fork_cache(KVCache& cache, int len) { decoder_->fork_cache(cache, len); }
  // prefill for sampling: only each prompt's last-token logits, rows [B, V] (row len[b] - 1 of
  // right-padded prompt b), valid until the next call.
  const float* prefill_last(KVCache& cache, const int* tokens, int B, int T, const int* len) {
    return decoder_->prefill_last(cache, tokens, B, T, len);
  }

  // FLOPs of one forward over n tokens, each attending to `ctx` earlier tokens on average.
  double forward_flops(double n_tokens, double ctx) const;

  // Buffers in the decoder's memory (device memory on the GPU path): n floats for dL/dlogits, where
  // the losses write (each overwrites or zeroes all of it) and backward reads; and n floats of rows
  // a caller assembles from the logits of several calls (zeroed), with copy_rows to move them.
  float* dlogits_buffer(size_t n) { return decoder_->dlogits(n); }
  float* scratch_rows(size_t n) { return decoder_->scratch_rows(n); }
  void copy_rows(float* dst, const float* src, size_t n) { decoder_->copy_floats(dst, src, n); }

  // The GPU path (docs/ARCHITECTURE.md §2; a build with CUDA): from here on the decoder runs on the
  // current CUDA device with the CUDA backend planned for `plan` (bf16 weights and activations;
  // fp32 master weights, gradients and statistics), logits rows are device memory
  // (vocab_shard().device) and every other array stays on the host. params() remains the host
  // copy, refreshed from the master weights by sync_to_host(). Under TP each rank puts its shards
  // on its GPU (the plan's tp is the model's) and the TP group gets an NCCL twin when every rank
  // has a GPU of its own (parallel/device_group.h; collective over the group), else activations
  // are summed through host memory. `who` names the rank in a plan that does not fit.
  void use_gpu(const MemoryPlanOptions& plan, const std::string& who);
  bool on_gpu() const { return decoder_->device(); }
  void* stream() const { return decoder_->stream(); }  // the GPU decoder's cudaStream_t, null on the CPU
  void sync_to_host() { decoder_->download_params(params_); }
  // Sums the gradients over a data-parallel group: in place on the device over a communicator of
  // device buffers (NCCL), else over host memory.
  void all_reduce_grads(Communicator& dp) { decoder_->all_reduce_grads(dp); }
  // Where parameters, gradients and optimizer state live, for the optimizer.
  TrainingMemory training_memory() { return decoder_->training_memory(); }
  // The GPU plan's report (model/memory_plan.h), empty on the CPU.
  std::string gpu_memory_report(const std::string& title) const { return decoder_->memory_report(title); }
  // What a decoder of this model is built from.
  DecoderShape decoder_shape(bool train, bool recompute) const;

 private:
  ModelConfig cfg_;
  VocabShard vocab_;
  std::shared_ptr<const Tokenizer> tok_;
  std::vector<ParamSpec> specs_;
  std::vector<float> params_, grads_;
  std::unique_ptr<Communicator> device_tp_;  // the TP group over NCCL (GPU path); outlives decoder_
  std::unique_ptr<Decoder> decoder_;
};

}  // namespace opd
