// The decoder behind a Transformer (docs/ARCHITECTURE.md §2): the layer sequence written once, in
// model/decoder_impl.h, against a backend that offers the ops by the same names, the CPU one
// (model/backend_cpu.h, fp32, the reference) and the CUDA one (model/backend_cuda.h, bf16
// activations, fp32 statistics and gradients). The Transformer holds one through this interface and
// never sees which.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/lora.h"
#include "model/params.h"
#include "parallel/communicator.h"

namespace opd {

// A batch's KV cache: keys (after RoPE) and values per layer, [batch, stride, Hkv, D]. On the CPU
// the arrays live here; on the GPU they are the model's one planned cache and k, v stay empty.
struct KVCache {
  int batch = 0, capacity = 0;
  int stride = 0;  // positions held per sequence (>= capacity: a GPU cache is planned once)
  std::vector<std::vector<float>> k, v;
};

// Where the trained parameters (every weight, or under LoRA the adapters only), their gradients and
// optimizer state live, for the optimizer: host memory, or device memory queued on `stream` (then
// `weights_bf16` is the copy the forward reads, refreshed by every update). adam_m / adam_v are
// null where the optimizer keeps its own host state.
struct TrainingMemory {
  float* params = nullptr;  // fp32: the master weights
  float* grads = nullptr;
  float* adam_m = nullptr;
  float* adam_v = nullptr;
  const unsigned char* decay_mask = nullptr;
  void* weights_bf16 = nullptr;
  void* stream = nullptr;  // cudaStream_t
  size_t size = 0;
  bool device = false;
};

// What a decoder is built from: the model's shape, this rank's share of it under tensor
// parallelism, and what its activations are kept for.
struct DecoderShape {
  ModelConfig cfg;
  std::vector<ParamSpec> specs;
  ModelOffsets off;
  int H = 0, HK = 0, F = 0, QD = 0, KD = 0;  // this rank's heads, kv heads, ffn width, q and kv widths
  int v0 = 0, V = 0;                          // this rank's vocabulary rows [v0, v0 + V)
  bool train = true;                          // keep what backward needs
  bool recompute = false;                     // keep only each layer's input; recompute in backward
  // LoRA (model/lora.h): the base weights frozen, the adapters in a buffer of their own laid out by
  // lora_specs, this rank's shards; rank 0 without adapters.
  LoraConfig lora;
  std::vector<ParamSpec> lora_specs;
  std::vector<LoraLayer> lora_off;
  // What the optimizer trains, laid out as the gradient buffer is: the adapters under LoRA, else
  // every parameter.
  const std::vector<ParamSpec>& trainable_specs() const { return lora.enabled() ? lora_specs : specs; }
  // The LM head's block: the most rows whose logits it writes at once (0: every row of a forward).
  // Paths that would write more (prefill_last) stream the head (docs/ARCHITECTURE.md §2).
  int head_rows = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;

  // Training forward over right-padded host token ids [B, T]; logits [B*T, V] (this rank's
  // vocabulary shard) in the decoder's memory, valid until the next forward. With fill >= 0 the
  // layers' keys and values also go to rows [0, T) of cache sequences [fill, fill + B).
  virtual const float* forward(const int* tokens, int B, int T, KVCache* cache = nullptr, int fill = 0) = 0;
  // Backward of the last forward from dL/dlogits [B*T, V] (decoder memory); accumulates the
  // gradients of what is trained (DecoderShape::trainable_specs; a frozen weight gets none).
  virtual void backward(const float* dlogits) = 0;

  // The streamed LM head (docs/ARCHITECTURE.md §2): forward() that stops at the final norm, whose
  // hidden rows [B*T, C] stay for head_rows(); with a cache it prefills as forward() does.
  virtual void forward_hidden(const int* tokens, int B, int T, KVCache* cache = nullptr, int fill = 0) = 0;
  // Logits [n, V] (this rank's vocabulary shard) of rows [r0, r0 + n) of the last forward_hidden's
  // rows, or with `extended` of the last extend_hidden's, in the decoder's memory until the next
  // call; n at most the head's block (DecoderShape::head_rows) where one is set.
  virtual const float* head_rows(int r0, int n, bool extended = false) = 0;
  // Backward of rows [r0, r0 + n) of the last forward_hidden from their dL/dlogits [n, V]: those
  // rows' dL/dhidden (summed over the TP group) and the head's weight gradient. Each row once.
  virtual void head_backward_rows(const float* dlogits, int r0, int n) = 0;
  // The rest of backward once head_backward_rows has covered every row; accumulates gradients.
  virtual void backward_hidden() = 0;
  virtual void set_head_rows(int rows) = 0;

  virtual void reset_cache(KVCache& cache, int B, int capacity) const = 0;
  // Tokens [B, T] after what the cache holds, at positions start[b] + t (host arrays); appends their
  // keys and values and returns logits [B*T, V].
  virtual const float* extend(KVCache& cache, const int* tokens, int T, const int* start) = 0;
  // The same without the head: the rows' hidden states stay for head_rows(..., extended = true).
  virtual void extend_hidden(KVCache& cache, const int* tokens, int T, const int* start) = 0;
  // Prefills right-padded prompts [B, T] and returns the logits of each prompt's last token
  // (row len[b] - 1), [B, V]. Where a prefill's rows exceed the head's block, the head runs on the
  // last rows alone.
  virtual const float* prefill_last(KVCache& cache, const int* tokens, int B, int T, const int* len) = 0;
  // Copies positions [0, len) of cache sequence 0 into every other sequence of the cache.
  virtual void fork_cache(KVCache& cache, int len) = 0;

  // Buffers of n floats in the decoder's memory: dL/dlogits, and rows a caller assembles (zeroed).
  virtual float* dlogits(size_t n) = 0;
  virtual float* scratch_rows(size_t n) = 0;
  // dst = src, n floats, both in the decoder's memory.
  virtual void copy_floats(float* dst, const float* src, size_t n) = 0;

  virtual void zero_grad() = 0;
  // Under TP, the gradients of replicated tensors each rank computed for its own heads only,
  // summed over the group.
  virtual void reduce_partial_grads() = 0;
  // Sums the gradients over a data-parallel group (in place on the device over NCCL, else through
  // host memory).
  virtual void all_reduce_grads(Communicator& dp) = 0;
  virtual TrainingMemory training_memory() = 0;
  // The fp32 master copy of what is trained into the host's array of it (the parameters, or under
  // LoRA the adapters; nothing on the CPU, where the host arrays are the parameters).
  virtual void download_params(std::vector<float>& host) = 0;

  virtual bool device() const = 0;
  virtual void* stream() const = 0;  // cudaStream_t of a GPU decoder, null on the CPU
  virtual std::string memory_report(const std::string& title) const = 0;
};

}  // namespace opd
