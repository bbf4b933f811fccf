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

// Where a model's parameters, gradients and optimizer state live, for the optimizer: host
// memory, or device memory queued on `stream` (then `weights_bf16` is the copy the forward reads,
// refreshed by every update). adam_m / adam_v are null where the optimizer keeps its own host state.
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
};

class Decoder {
 public:
  virtual ~Decoder() = default;

  // Training forward over right-padded host token ids [B, T]; logits [B*T, V] (this rank's
  // vocabulary shard) in the decoder's memory, valid until the next forward. With fill >= 0 the
  // layers' keys and values also go to rows [0, T) of cache sequences [fill, fill + B).
  virtual const float* forward(const int* tokens, int B, int T, KVCache* cache = nullptr, int fill = 0) = 0;
  // Backward of the last forward from dL/dlogits [B*T, V] (decoder memory); accumulates gradients.
  virtual void backward(const float* dlogits) = 0;

  virtual void reset_cache(KVCache& cache, int B, int capacity) const = 0;
  // Tokens [B, T] after what the cache holds, at positions start[b] + t (host arrays); appends their
  // keys and values and returns logits [B*T, V].
  virtual const float* extend(KVCache& cache, const int* tokens, int T, const int* start) = 0;
  // Prefills right-padded prompts [B, T] and returns the logits of each prompt's last token
  // (row len[b] - 1), [B, V].
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
  // The fp32 master weights into the host's parameter array (nothing on the CPU, where they are it).
  virtual void download_params(std::vector<float>& host) = 0;

  virtual bool device() const = 0;
  virtual void* stream() const = 0;  // cudaStream_t of a GPU decoder, null on the CPU
  virtual std::string memory_report(const std::string& title) const = 0;
};

}  // namespace opd
