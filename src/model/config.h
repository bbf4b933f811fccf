// The shape of a Qwen3-family decoder (docs/ARCHITECTURE.md §2).
#pragma once
#include <cstdint>
#include <string>

#include "kernels/cpu/rope.h"  // RopeScaling

namespace opd {

struct ModelConfig {
  int vocab = 0;
  int d_model = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_dim = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;  // Llama 3.1 "llama3" scaling; none (plain RoPE) by default
  double rms_eps = 1e-6;
  bool qk_norm = true;
  bool tie_embeddings = false;
  int max_seq = 0;

  // Throws opd::Error naming the field (prefixed by `where`, e.g. a file name) that is out of range.
  void validate(const std::string& where) const;
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  // Parameters in the model, counting a tied LM head once.
  int64_t num_parameters() const;
};

}  // namespace opd
