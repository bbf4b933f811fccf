#include "model/params.h"

#include <unordered_map>

#include "core/error.h"

namespace opd {

std::vector<ParamSpec> param_specs(const ModelConfig& c, int tp_size, int tp_rank) {
  OPD_REQUIRE(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "param_specs: tp rank ", tp_rank, " of ", tp_size);
  std::vector<ParamSpec> specs;
  size_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> full, bool decay, int split_dim, bool partial_grad = false) {
    ParamSpec s;
    s.name = std::move(name);
    OPD_REQUIRE(split_dim < 0 || full[split_dim] % tp_size == 0, "model: tp = ", tp_size,
                " does not divide dimension ", split_dim, " (", full[split_dim], ") of ", s.name);
    s.shard = TensorShard::block(full, split_dim, tp_rank, tp_size);
    s.shape = s.shard.local_shape();
    s.partial_grad = partial_grad && tp_size > 1;
    s.decay = decay;
    s.offset = offset;
    s.size = 1;
    for (auto d : s.shape) s.size *= static_cast<size_t>(d);
    offset += s.size;
    specs.push_back(std::move(s));
  };
  const int64_t C = c.d_model, V = c.vocab, F = c.ffn_dim, D = c.head_dim;
  add("model.embed_tokens.weight", {V, C}, true, 0);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {C}, false, -1);
    add(p + "self_attn.q_proj.weight", {c.q_dim(), C}, true, 0);
    add(p + "self_attn.k_proj.weight", {c.kv_dim(), C}, true, 0);
    add(p + "self_attn.v_proj.weight", {c.kv_dim(), C}, true, 0);
    add(p + "self_attn.o_proj.weight", {C, c.q_dim()}, true, 1);
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {D}, false, -1, true);
      add(p + "self_attn.k_norm.weight", {D}, false, -1, true);
    }
    add(p + "post_attention_layernorm.weight", {C}, false, -1);
    add(p + "mlp.gate_proj.weight", {F, C}, true, 0);
    add(p + "mlp.up_proj.weight", {F, C}, true, 0);
    add(p + "mlp.down_proj.weight", {C, F}, true, 1);
  }
  add("model.norm.weight", {C}, false, -1);
  if (!c.tie_embeddings) add("lm_head.weight", {V, C}, true, 0);
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
