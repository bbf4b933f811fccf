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
#include "model/lora.h"
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

// The LM head's block (docs/ARCHITECTURE.md §2, the streamed head): how many rows of logits a
// model writes at once. kHeadRowsAuto: as many as kHeadBlockBytes of fp32 logits of this rank's
// vocabulary shard hold (at least one; 883 at Qwen3's 151936, millions at the shipped 18 ids);
// kHeadRowsAll (0): every row of a forward, [N, V], the unfused path. A forward of more rows than
// the block computes its hidden states and then the head a block at a time (model/logit_blocks.h).
constexpr int kHeadRowsAuto = -1, kHeadRowsAll = 0;
constexpr size_t kHeadBlockBytes = size_t(512) << 20;
// The block for a requested one (kHeadRowsAuto, kHeadRowsAll or a row count) and a vocabulary shard.
int resolve_head_rows(int requested, int vocab_shard);

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
  // The gradients of what is trained, laid out by trainable_specs(): every parameter's, or under
  // LoRA the adapters' only (the base weights get none).
  std::vector<float>& grads() { return grads_; }
  float* param(const ParamSpec& s) { return params_.data() + s.offset; }

  // LoRA (model/lora.h; docs/ARCHITECTURE.md §2): from here on the weights are the frozen base and
  // low-rank adapters on the targeted projections are trained instead, A drawn from `seed`, B zero
  // (the model is its base exactly until the first update). `base` names the file the weights came
  // from, with its tensors' checksum (io/adapter_file.h), for checkpoints, merging and export. On
  // the CPU only, before use_gpu; a tensor-parallel model takes its shards of the adapters.
  struct LoraBase {
    std::string path;        // the base model file
    uint32_t checksum = 0;   // of its tensors (model_file_checksum)
  };
  void enable_lora(const LoraConfig& lora, uint64_t seed, LoraBase base);
  bool has_lora() const { return lora_.enabled(); }
  const LoraConfig& lora() const { return lora_; }
  const LoraBase& lora_base() const { return lora_base_; }
  const std::vector<ParamSpec>& lora_specs() const { return lora_specs_; }
  std::vector<float>& lora_params() { return lora_params_; }
  const std::vector<float>& lora_params() const { return lora_params_; }
  // What the optimizer trains and checkpoints hold: the adapters under LoRA, else every parameter.
  const std::vector<ParamSpec>& trainable_specs() const { return has_lora() ? lora_specs_ : specs_; }
  std::vector<float>& trainable_params() { return has_lora() ? lora_params_ : params_; }
  const std::vector<float>& trainable_params() const { return has_lora() ? lora_params_ : params_; }
  // A plain model of the same weights with the adapters merged in, W + (alpha / R) B A (under TP,
  // this rank's shards of it). On the GPU path, sync_to_host() first.
  std::unique_ptr<Transformer> merged() const;

  // Gaussian initialisation with std 0.02 (0.02/sqrt(2 n_layers) for residual outputs), norms at 1.
  void init_random(uint64_t seed);
  void zero_grad();

  // Training forward over right-padded token ids [B, T] (every id in the vocabulary, T <= max_seq).
  // Returns logits [B*T, V], valid until the next forward (device memory on the GPU path).
  const float* forward(const int* tokens, int B, int T) { return decoder_->forward(tokens, B, T); }
  // Backward of the last forward given dL/dlogits [B*T, V]; accumulates into the gradients.
  void backward(const float* dlogits) { decoder_->backward(dlogits); }

  // The streamed LM head (docs/ARCHITECTURE.md §2). head_rows(): the block, the most rows of
  // logits written at once (0: all); streams_head(n): whether a forward of n rows exceeds it. Set
  // it before use_gpu, which plans for it.
  void set_head_rows(int requested);
  int head_rows() const { return head_rows_; }
  bool streams_head(size_t n) const { return head_rows_ > 0 && n > size_t(head_rows_); }
  // forward() without the logits: the hidden rows stay for head_logits.
  void forward_hidden(const int* tokens, int B, int T) { decoder_->forward_hidden(tokens, B, T); }
  // Logits [n, V] of rows [r0, r0 + n) of the last forward_hidden (n <= the block), valid until the
  // next call; with `extended`, of the last extend_hidden.
  const float* head_logits(int r0, int n, bool extended = false) { return decoder_->head_rows(r0, n, extended); }
  // Backward of those rows given their dL/dlogits [n, V]: each row once, then backward_hidden().
  void head_backward(const float* dlogits, int r0, int n) { decoder_->head_backward_rows(dlogits, r0, n); }
  void backward_hidden() { decoder_->backward_hidden(); }
  // A model that is never trained (a teacher): no gradient array, and on the CPU one set of
  // activations for all layers. Before use_gpu.
  void set_forward_only();
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
  void prefill_hidden(KVCache& cache, const int* tokens, int B, int T, int first = 0) {
    decoder_->forward_hidden(tokens, B, T, &cache, first);
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
  void extend_hidden(KVCache& cache, const int* tokens, int T, const int* start) {
    decoder_->extend_hidden(cache, tokens, T, start);
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
  // copy, refreshed from the master weights by sync_to_host() (under LoRA: the adapters, the base
  // being frozen). Under TP each rank puts its shards
  // on its GPU (the plan's tp is the model's) and the TP group gets an NCCL twin when every rank
  // has a GPU of its own (parallel/device_group.h; collective over the group), else activations
  // are summed through host memory. `who` names the rank in a plan that does not fit.
  void use_gpu(const MemoryPlanOptions& plan, const std::string& who);
  bool on_gpu() const { return decoder_->device(); }
  void* stream() const { return decoder_->stream(); }  // the GPU decoder's cudaStream_t, null on the CPU
  void sync_to_host() { decoder_->download_params(trainable_params()); }
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
  LoraConfig lora_;
  LoraBase lora_base_;
  std::vector<ParamSpec> lora_specs_;
  std::vector<float> lora_params_;
  int head_rows_ = 0;
  bool forward_only_ = false;
  std::unique_ptr<Communicator> device_tp_;  // the TP group over NCCL (GPU path); outlives decoder_
  std::unique_ptr<Decoder> decoder_;
};

}  // namespace opd
