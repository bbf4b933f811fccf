// RMSNorm over the last dimension: y = w * x / sqrt(mean(x^2) + eps); statistics in the op's type.
#pragma once

namespace opd::cpu {

// x, out: [N, C]; w: [C]; rstd: [N], saved for backward. out may not alias x.
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int N, int C, float eps);

// dx += d/dx, dw += d/dw (both accumulate, so a residual stream's gradient can be summed in place);
// dw null: the weight is frozen (LoRA), only dx is computed.
template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int N, int C);

}  // namespace opd::cpu
