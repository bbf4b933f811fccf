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
  std::vector<int64_t> shape;   // this rank's shape, row-major (the logical shape without TP)
  size_t offset = 0;            // in floats, into the flat buffer
  size_t size = 0;              // product of shape
  bool decay = true;            // weight decay applies (matrices), not to norms
  // Tensor parallelism (Megatron): the tensor's full shape, the dimension split over the TP ranks
  // (0: rows of column-parallel q/k/v/gate/up and vocab-parallel embedding / LM head; 1: columns
  // of row-parallel o/down; -1: replicated norms) and where this rank's block starts along it.
  std::vector<int64_t> full_shape;
  int split_dim = -1;
  int64_t split_offset = 0;
  // Replicated, but each TP rank's gradient covers its own heads only (q_norm, k_norm): the
  // gradients are summed over the TP group before the update.
  bool partial_grad = false;
};

// The tensors of a Qwen3-family model in a fixed order; a tied LM head has no entry of its own.
// With tp_size > 1: rank tp_rank's shards (the caller has checked that tp divides the shapes).
std::vector<ParamSpec> param_specs(const ModelConfig& cfg, int tp_size = 1, int tp_rank = 0);
size_t total_size(const std::vector<ParamSpec>& specs);

// Between a full tensor and one rank's block of it (the spec's split).
void copy_shard_out(float* local, const float* full, const ParamSpec& spec);
void copy_shard_in(float* full, const float* local, const ParamSpec& spec);

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
