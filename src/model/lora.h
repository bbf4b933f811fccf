// LoRA adapters (docs/ARCHITECTURE.md §2, LoRA students): the base weights of a student stay frozen
// and each targeted projection W becomes W + (alpha / R) B A, A [R, in] and B [out, R] trained
// instead. A starts random and B at zero, so step 0 is the base model exactly. The adapters live in
// a flat buffer of their own (model/params.h's ParamSpec, in the same TP terms), so gradients and
// optimizer state exist for them only.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace opd {

// The projections an adapter can sit on, in a layer's order.
enum LoraTarget : int { kLoraQ, kLoraK, kLoraV, kLoraO, kLoraGate, kLoraUp, kLoraDown };
constexpr int kLoraTargetCount = 7;
// "q", "k", "v", "o", "gate", "up", "down": the names --lora-targets takes.
const char* lora_target_name(int target);
// The module within a layer, as Hugging Face names it: "self_attn.q_proj", ..., "mlp.down_proj".
const char* lora_module(int target);
// o and down are row-parallel under tensor parallelism (their input columns are split); the
// others column-parallel (their output rows are split).
bool lora_row_parallel(int target);

struct LoraConfig {
  int rank = 0;        // R; 0: no adapters (full fine-tuning)
  double alpha = 32;   // the adapter's term is scaled by alpha / R
  unsigned targets = (1u << kLoraTargetCount) - 1;  // bit t: target t has an adapter
  bool enabled() const { return rank > 0; }
  bool adapts(int target) const { return (targets >> target) & 1u; }
  float scale() const { return static_cast<float>(alpha / rank); }
  std::string targets_text() const;  // "q,k,v,o,gate,up,down"
  bool operator==(const LoraConfig& o) const {
    return rank == o.rank && alpha == o.alpha && targets == o.targets;
  }
  bool operator!=(const LoraConfig& o) const { return !(*this == o); }
};

// "q,k,v" -> the target bits; an unknown or repeated name, or none, is an error naming `option`.
unsigned parse_lora_targets(const std::string& text, const std::string& option);
// A rank below 1, an alpha that is not positive, or no target is an error naming `where`.
void check_lora(const LoraConfig& lora, const ModelConfig& cfg, const std::string& where);

// The adapters' tensors in one flat buffer, layer by layer, target by target, A then B:
//   "model.layers.<l>.<module>.lora_A.weight" [R, in], "model.layers.<l>.<module>.lora_B.weight" [out, R]
// (PEFT's names without its "base_model.model." prefix). Under tensor parallelism each pair is split
// like the projection it adapts (docs/ARCHITECTURE.md §4): on a column-parallel projection B by
// output rows, A replicated with a partial gradient (summed over TP); on a row-parallel one A by
// input columns, B replicated with a partial gradient.
std::vector<ParamSpec> lora_specs(const ModelConfig& cfg, const LoraConfig& lora, int tp_size = 1, int tp_rank = 0);

// One projection's adapter: offsets of A and B in the adapters' buffer (none: kNone).
struct LoraPair {
  static constexpr size_t kNone = size_t(-1);
  size_t a = kNone, b = kNone;
  bool active() const { return a != kNone; }
};
using LoraLayer = std::array<LoraPair, kLoraTargetCount>;
// Every layer's adapters, resolved once so the forward pass does no name look-ups.
std::vector<LoraLayer> lora_offsets(const ModelConfig& cfg, const LoraConfig& lora, const std::vector<ParamSpec>& specs);

// PEFT's initialisation: A uniform in +-1/sqrt(in) (kaiming_uniform with a = sqrt(5)), each tensor
// drawn whole from Philox keyed by (seed, tensor) and cut to this rank's shard, so the adapters
// are the same at any TP degree; B zero.
void init_lora(const std::vector<ParamSpec>& specs, float* params, uint64_t seed);

// The base weight an adapter tensor adapts: "model.layers.3.self_attn.q_proj.lora_A.weight" ->
// "model.layers.3.self_attn.q_proj.weight".
std::string lora_base_tensor(const std::string& adapter_name);

// W += (alpha / R) B A for every adapter, into the model's flat buffer (laid out by base_specs); under
// TP this rank's shards of both.
void merge_lora(const LoraConfig& lora, const std::vector<ParamSpec>& specs, const float* adapters,
                const std::vector<ParamSpec>& base_specs, float* base);

}  // namespace opd
