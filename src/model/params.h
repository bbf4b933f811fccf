// The model's parameters live in one flat buffer (one all-reduce, one optimizer call, one
// checkpoint loop); each tensor is a named view into it, named as in Hugging Face.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace opd {

struct ParamSpec {
  std::string name;             // Hugging Face name, e.g. "model.layers.0.mlp.up_proj.weight"
  std::vector<int64_t> shape;   // logical shape, row-major
  size_t offset = 0;            // in floats, into the flat buffer
  size_t size = 0;              // product of shape
  bool decay = true;            // weight decay applies (matrices), not to norms
};

// The tensors of a Qwen3-family model in a fixed order; a tied LM head has no entry of its own.
std::vector<ParamSpec> param_specs(const ModelConfig& cfg);
size_t total_size(const std::vector<ParamSpec>& specs);

// Offsets of one layer's tensors, resolved once so the forward pass does no name look-ups.
struct LayerOffsets {
  size_t input_norm, q, k, v, o, q_norm, k_norm, post_norm, gate, up, down;
};
struct ModelOffsets {
  size_t embed, final_norm, lm_head;  // lm_head == embed when tied
  std::vector<LayerOffsets> layers;
};
ModelOffsets model_offsets(const ModelConfig& cfg, const std::vector<ParamSpec>& specs);

}  // namespace opd
