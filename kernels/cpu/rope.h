// Rotary position embedding, Hugging Face "rotate_half" convention: dimension i pairs with i + D/2,
// inv_freq[i] = theta^(-2i/D), optionally rescaled per dimension as Llama 3.1 does ("llama3"
// rope_type). Positions come per row, so a KV-cache decode step passes its offset.
#pragma once

#include <vector>

namespace opd {

// Llama 3.1's RoPE scaling: wavelengths above original_max_position_embeddings / low_freq_factor
// are stretched by `factor`, those below original_max_position_embeddings / high_freq_factor are
// kept, those between are interpolated. factor == 0 means no scaling (plain RoPE).
struct RopeScaling {
  double factor = 0;
  double low_freq_factor = 0;
  double high_freq_factor = 0;
  int original_max_position_embeddings = 0;
  bool enabled() const { return factor != 0; }
  bool operator==(const RopeScaling& o) const {
    return factor == o.factor && low_freq_factor == o.low_freq_factor && high_freq_factor == o.high_freq_factor &&
           original_max_position_embeddings == o.original_max_position_embeddings;
  }
};

namespace cpu {

// The D/2 inverse frequencies in T's arithmetic, step by step as transformers forms them in float32
// (_compute_default_rope_parameters, then _compute_llama3_parameters when scaling is enabled).
// Shared by the CPU op and the CUDA op's host side, so both rotate by the same angles.
template <typename T>
std::vector<T> rope_inv_freq(int D, float theta, const RopeScaling& scaling = {});

// x: [N, H, D] rotated in place (D even); pos: [N] absolute position of each row.
template <typename T>
void rope_forward(T* x, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling = {});

// The inverse rotation applied in place to the gradient: dx = R(pos)^T dout.
template <typename T>
void rope_backward(T* dx, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling = {});

}  // namespace cpu
}  // namespace opd
