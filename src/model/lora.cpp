#include "model/lora.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/cpu/lora.h"
#include "parallel/tensor_shard.h"

namespace opd {

namespace {
const char* kNames[kLoraTargetCount] = {"q", "k", "v", "o", "gate", "up", "down"};
const char* kModules[kLoraTargetCount] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                          "mlp.down_proj"};

// [out, in] of target t's projection, whole.
std::pair<int64_t, int64_t> projection_shape(const ModelConfig& c, int t) {
  switch (t) {
    case kLoraQ: return {c.q_dim(), c.d_model};
    case kLoraK:
    case kLoraV: return {c.kv_dim(), c.d_model};
    case kLoraO: return {c.d_model, c.q_dim()};
    case kLoraGate:
    case kLoraUp: return {c.ffn_dim, c.d_model};
    default: return {c.d_model, c.ffn_dim};
  }
}
}  // namespace

const char* lora_target_name(int target) { return kNames[target]; }
const char* lora_module(int target) { return kModules[target]; }
bool lora_row_parallel(int target) { return target == kLoraO || target == kLoraDown; }

std::string LoraConfig::targets_text() const {
  std::string s;
  for (int t = 0; t < kLoraTargetCount; ++t)
    if (adapts(t)) s += (s.empty() ? "" : ",") + std::string(kNames[t]);
  return s;
}

unsigned parse_lora_targets(const std::string& text, const std::string& option) {
  unsigned bits = 0;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    int found = -1;
    for (int t = 0; t < kLoraTargetCount; ++t)
      if (item == kNames[t]) found = t;
    OPD_REQUIRE(found >= 0, "option ", option, ": '", item, "' is not a projection (q, k, v, o, gate, up, down)");
    OPD_REQUIRE(!((bits >> found) & 1u), "option ", option, ": '", item, "' is named twice");
    bits |= 1u << found;
  }
  OPD_REQUIRE(bits != 0, "option ", option, ": no projection named (e.g. q,k,v,o,gate,up,down)");
  return bits;
}

void check_lora(const LoraConfig& l, const ModelConfig& cfg, const std::string& where) {
  OPD_REQUIRE(l.rank >= 1, where, ": LoRA rank ", l.rank, " (at least 1)");
  OPD_REQUIRE(std::isfinite(l.alpha) && l.alpha > 0, where, ": LoRA alpha ", l.alpha, " (must be positive)");
  OPD_REQUIRE(l.targets != 0 && l.targets < (1u << kLoraTargetCount), where, ": no LoRA target projection");
  const int smallest = std::min({cfg.d_model, cfg.kv_dim(), cfg.ffn_dim});
  OPD_REQUIRE(l.rank <= smallest, where, ": LoRA rank ", l.rank, " exceeds the narrowest projection (",
              smallest, "): a low-rank adapter must be narrower than the layer it adapts");
}

std::vector<ParamSpec> lora_specs(const ModelConfig& c, const LoraConfig& lora, int tp_size, int tp_rank) {
  OPD_REQUIRE(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "lora_specs: tp rank ", tp_rank, " of ", tp_size);
  std::vector<ParamSpec> specs;
  if (!lora.enabled()) return specs;
  size_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> full, int split_dim) {
    ParamSpec s;
    s.name = std::move(name);
    OPD_REQUIRE(split_dim < 0 || full[split_dim] % tp_size == 0, "LoRA: tp = ", tp_size, " does not divide dimension ",
                split_dim, " (", full[split_dim], ") of ", s.name);
    s.shard = TensorShard::block(full, split_dim, tp_rank, tp_size);
    s.shape = s.shard.local_shape();
    // The replicated half of a pair sees only this rank's share of the projection: its gradient
    // is partial, summed over TP before the update.
    s.partial_grad = split_dim < 0 && tp_size > 1;
    s.decay = true;
    s.offset = offset;
    s.size = size_t(s.shard.local_size());
    offset += s.size;
    specs.push_back(std::move(s));
  };
  const int64_t R = lora.rank;
  for (int l = 0; l < c.n_layers; ++l)
    for (int t = 0; t < kLoraTargetCount; ++t) {
      if (!lora.adapts(t)) continue;
      const auto [out, in] = projection_shape(c, t);
      const std::string p = str("model.layers.", l, ".", kModules[t], ".");
      const bool row = lora_row_parallel(t);
      add(p + "lora_A.weight", {R, in}, row ? 1 : -1);
      add(p + "lora_B.weight", {out, R}, row ? -1 : 0);
    }
  return specs;
}

std::vector<LoraLayer> lora_offsets(const ModelConfig& c, const LoraConfig& lora, const std::vector<ParamSpec>& specs) {
  std::vector<LoraLayer> layers(c.n_layers);
  if (!lora.enabled()) return layers;
  std::unordered_map<std::string, size_t> at;
  for (const ParamSpec& s : specs) at[s.name] = s.offset;
  auto get = [&](const std::string& name) {
    auto it = at.find(name);
    OPD_REQUIRE(it != at.end(), "LoRA: no adapter tensor named ", name);
    return it->second;
  };
  for (int l = 0; l < c.n_layers; ++l)
    for (int t = 0; t < kLoraTargetCount; ++t)
      if (lora.adapts(t)) {
        const std::string p = str("model.layers.", l, ".", kModules[t], ".");
        layers[l][t] = {get(p + "lora_A.weight"), get(p + "lora_B.weight")};
      }
  return layers;
}

void init_lora(const std::vector<ParamSpec>& specs, float* params, uint64_t seed) {
  for (size_t si = 0; si < specs.size(); ++si) {
    const ParamSpec& s = specs[si];
    float* w = params + s.offset;
    if (s.name.find(".lora_B.") != std::string::npos) {
      std::fill(w, w + s.size, 0.0f);
      continue;
    }
    const size_t full = size_t(s.shard.full_size());
    const float bound = 1.0f / std::sqrt(static_cast<float>(s.shard.full_shape[1]));
    std::vector<float> whole(full);
    // Each element keyed by its index alone: the same values whatever the threads' split.
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < full; ++i) {
      const Philox4 r = philox_draw(seed, 0x10a00000u + static_cast<uint32_t>(si), i);
      whole[i] = bound * (2.0f * uniform01(r.v[0]) - 1.0f);
    }
    copy_shard_out(whole.data(), s.shard, w);
  }
}

std::string lora_base_tensor(const std::string& adapter_name) {
  for (const char* part : {".lora_A.weight", ".lora_B.weight"}) {
    const size_t at = adapter_name.rfind(part);
    if (at != std::string::npos && at + std::string(part).size() == adapter_name.size())
      return adapter_name.substr(0, at) + ".weight";
  }
  throw Error(str("LoRA: '", adapter_name, "' is not an adapter tensor's name (...lora_A.weight or ...lora_B.weight)"));
}

void merge_lora(const LoraConfig& lora, const std::vector<ParamSpec>& specs, const float* adapters,
                const std::vector<ParamSpec>& base_specs, float* base) {
  std::unordered_map<std::string, const ParamSpec*> by_name;
  for (const ParamSpec& s : base_specs) by_name[s.name] = &s;
  // Shard by shard under TP: a column-parallel W_r (rows split) takes B_r A, a row-parallel W_r
  // (columns split) takes B A_r, each exactly its block of the merged weight.
  for (size_t i = 0; i + 1 < specs.size(); i += 2) {
    const ParamSpec &A = specs[i], &B = specs[i + 1];
    const std::string target = lora_base_tensor(A.name);
    OPD_REQUIRE(target == lora_base_tensor(B.name), "merge_lora: ", A.name, " and ", B.name, " are not one pair");
    const auto it = by_name.find(target);
    OPD_REQUIRE(it != by_name.end(), "merge_lora: the base model has no tensor ", target);
    const ParamSpec& W = *it->second;
    OPD_REQUIRE(W.shape == std::vector<int64_t>({B.shape[0], A.shape[1]}), "merge_lora: ", A.name, " does not fit ",
                target);
    cpu::lora_merge(base + W.offset, adapters + A.offset, adapters + B.offset, int(A.shape[1]), int(A.shape[0]),
                    int(B.shape[0]), lora.scale());
  }
}

}  // namespace opd
