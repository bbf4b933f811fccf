// Rotary position embedding, Hugging Face "rotate_half" convention: dimension i pairs with i + D/2,
// inv_freq[i] = theta^(-2i/D). Positions come per row, so a KV-cache decode step passes its offset.
#pragma once

namespace opd::cpu {

// x: [N, H, D] rotated in place (D even); pos: [N] absolute position of each row.
template <typename T>
void rope_forward(T* x, const int* pos, int N, int H, int D, float theta);

// The inverse rotation applied in place to the gradient: dx = R(pos)^T dout.
template <typename T>
void rope_backward(T* dx, const int* pos, int N, int H, int D, float theta);

}  // namespace opd::cpu
