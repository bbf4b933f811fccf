// Device memory planned up front (issue: GPU path): every buffer a model needs on its GPU, by
// role, laid out in one arena before anything is allocated. The plan is reported at start-up, and
// a run that does not fit is refused with what it needs and the option that lowers it most,
// instead of failing in cudaMalloc half-way through a step.
#pragma once
#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/config.h"

namespace opd {

enum class MemoryKind { kWeights, kMaster, kGrads, kOptimizer, kActivations, kLogits, kKVCache, kWorkspace };
constexpr int kMemoryKinds = 8;
const char* memory_kind_name(MemoryKind kind);
std::string format_bytes(size_t bytes);  // "12.34 GiB", or "56.7 MiB" below a GiB

// What a model on a GPU is used for, and how big its batches are.
struct MemoryPlanOptions {
  bool train = false;      // fp32 master weights, fp32 gradients, AdamW state and saved activations
  bool recompute = false;  // keep only each layer's input; recompute the rest in backward, layer by layer
  int batch = 0, seq = 0;  // the forward's largest [batch, seq] (0: no forward beyond generation)
  int kv_batch = 0, kv_capacity = 0;  // the generation KV cache (0: none)
  int tp = 1;                         // tensor-parallel degree: this rank holds 1/tp of heads, ffn and vocab
  // The KV-cache paths extend by whole completions (shared-prefix scoring): their scratch holds a
  // forward's batch x seq rows, and the scored rows are assembled in one more logits buffer.
  bool extend = false;
};

struct MemoryBlock {
  std::string name;
  MemoryKind kind;
  size_t offset = 0, bytes = 0;
  bool in_arena = true;  // false: allocated by a library that owns it (cuBLASLt's workspace), counted only
};

class MemoryPlan {
 public:
  static constexpr size_t kAlign = 256;  // cudaMalloc's own alignment: every block suits every kernel

  // Appends a block of `bytes` (rounded up to kAlign); names must be unique.
  void add(const std::string& name, MemoryKind kind, size_t bytes, bool in_arena = true);
  const MemoryBlock& at(const std::string& name) const;  // error naming a block the plan lacks
  bool has(const std::string& name) const;
  size_t total() const { return total_; }  // everything the plan counts
  size_t arena_bytes() const { return arena_; }  // what the one allocation holds
  size_t bytes(MemoryKind kind) const;
  const std::vector<MemoryBlock>& blocks() const { return blocks_; }

  // One line per kind that holds anything, with GiB and share, then the total: what start-up prints.
  std::string report(const std::string& title) const;
  // Throws, before anything is allocated, when total() exceeds `available`: the error names `who`
  // (e.g. "rank 3 (student) on GPU 1"), both sizes, and the options that shrink the largest kinds.
  void check_fits(size_t available, const std::string& who) const;

 private:
  std::vector<MemoryBlock> blocks_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in blocks_
  size_t total_ = 0, arena_ = 0;
};

// Kernel scratch (attention backward and decode, rmsnorm backward) and cuBLASLt's workspace, which
// the GPU side sizes with the kernels' own functions.
struct WorkspaceSizes {
  size_t kernels = 0, cublaslt = 0;
};

// The blocks of a model on one GPU, named as the decoder (model/decoder_impl.h) and the CUDA backend look them up:
//   "weights.bf16", "weights.master", "grads", "adam.m", "adam.v", "adam.decay_mask";
//   the activations of layer l as "L<l>.<name>" (training without --recompute), or "L<l>.resid"
//   per layer and one "layer.<name>" set (with --recompute), or "stream.resid" and "layer.<name>"
//   (forward only), names: ln1 rstd1 q k v qr kr q_rstd k_rstd att lse mid ln2 rstd2 gate up h;
//   "final.resid", "final.ln", "final.rstd"; "logits" and "dlogits" (fp32), "dlogits.bf16";
//   backward scratch "grad.<name>": dresid dln dh dgate dup datt dq dqp dk dkp dv;
//   the KV cache "kv.L<l>.k", "kv.L<l>.v" and the KV-cache paths' scratch "dec.<name>" (one row per
//   sequence, or per token of a forward with `extend`; names as a layer's plus x, logits, tokens,
//   positions, pos, and with `extend` the per-position rows q_t k_t v_t att_t pos_t and
//   "scores.logits");
//   "workspace.kernels", and "workspace.cublaslt" (outside the arena).
MemoryPlan plan_model_memory(const ModelConfig& cfg, const MemoryPlanOptions& options, const WorkspaceSizes& workspace);

}  // namespace opd
