// The model's parameters live in one flat buffer (one all-reduce, one optimizer call, one
// checkpoint loop); each tensor is a named view into it, named as in Hugging Face.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "parallel/tensor_shard.h"

namespace opd {

struct ParamSpec {
  std::string name;             // Hugging Face name, e.g. "model.layers.0.mlp.up_proj.weight"
  std::vector<int64_t> shape;   // this rank's shape, row-major (the logical shape without TP)
  size_t offset = 0;            // in floats, into the flat buffer
  size_t size = 0;              // product of shape
  bool decay = true;            // weight decay applies (matrices), not to norms
  // Tensor parallelism (Megatron): this rank's block of the full tensor, split along dimension 0
  // for column-parallel q/k/v/gate/up and the vocab-parallel embedding / LM head, along 1 for
  // row-parallel o/down, replicated (-1) for norms. Without TP the block is the whole tensor.
  TensorShard shard;
  // Replicated, but each TP rank's gradient covers its own heads only (q_norm, k_norm): the
  // gradients are summed over the TP group before the update.
  bool partial_grad = false;
};

// The tensors of a Qwen3-family model in a fixed order; a tied LM head has no entry of its own.
// With tp_size > 1: rank tp_rank's shards (the caller has checked that tp divides the shapes).
std::vector<ParamSpec> param_specs(const ModelConfig& cfg, int tp_size = 1, int tp_rank = 0);
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
