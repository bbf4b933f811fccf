#include "model/params.h"

#include <unordered_map>

#include "core/error.h"

namespace opd {

std::vector<ParamSpec> param_specs(const ModelConfig& c) {
  std::vector<ParamSpec> specs;
  size_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    specs.push_back({std::move(name), std::move(shape), offset, n, decay});
    offset += n;
  };
  const int64_t C = c.d_model, V = c.vocab, F = c.ffn_dim, D = c.head_dim;
  add("model.embed_tokens.weight", {V, C}, true);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {C}, false);
    add(p + "self_attn.q_proj.weight", {c.q_dim(), C}, true);
    add(p + "self_attn.k_proj.weight", {c.kv_dim(), C}, true);
    add(p + "self_attn.v_proj.weight", {c.kv_dim(), C}, true);
    add(p + "self_attn.o_proj.weight", {C, c.q_dim()}, true);
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {D}, false);
      add(p + "self_attn.k_norm.weight", {D}, false);
    }
    add(p + "post_attention_layernorm.weight", {C}, false);
    add(p + "mlp.gate_proj.weight", {F, C}, true);
    add(p + "mlp.up_proj.weight", {F, C}, true);
    add(p + "mlp.down_proj.weight", {C, F}, true);
  }
  add("model.norm.weight", {C}, false);
  if (!c.tie_embeddings) add("lm_head.weight", {V, C}, true);
  return specs;
}

size_t total_size(const std::vector<ParamSpec>& specs) {
  return specs.empty() ? 0 : specs.back().offset + specs.back().size;
}

ModelOffsets model_offsets(const ModelConfig& c, const std::vector<ParamSpec>& specs) {
  std::unordered_map<std::string, size_t> at;
  for (const auto& s : specs) at[s.name] = s.offset;
  auto get = [&](const std::string& name) {
    auto it = at.find(name);
    OPD_REQUIRE(it != at.end(), "model: no parameter named ", name);
    return it->second;
  };
  ModelOffsets m;
  m.embed = get("model.embed_tokens.weight");
  m.final_norm = get("model.norm.weight");
  m.lm_head = c.tie_embeddings ? m.embed : get("lm_head.weight");
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerOffsets o{};
    o.input_norm = get(p + "input_layernorm.weight");
    o.q = get(p + "self_attn.q_proj.weight");
    o.k = get(p + "self_attn.k_proj.weight");
    o.v = get(p + "self_attn.v_proj.weight");
    o.o = get(p + "self_attn.o_proj.weight");
    o.q_norm = c.qk_norm ? get(p + "self_attn.q_norm.weight") : 0;
    o.k_norm = c.qk_norm ? get(p + "self_attn.k_norm.weight") : 0;
    o.post_norm = get(p + "post_attention_layernorm.weight");
    o.gate = get(p + "mlp.gate_proj.weight");
    o.up = get(p + "mlp.up_proj.weight");
    o.down = get(p + "mlp.down_proj.weight");
    m.layers.push_back(o);
  }
  return m;
}

}  // namespace opd
