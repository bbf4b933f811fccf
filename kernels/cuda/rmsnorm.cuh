// RMSNorm on the GPU, float, same contract as kernels/cpu/rmsnorm.h; all pointers are device
// pointers and the work is queued on the default stream. Includable from plain C++.
#pragma once

namespace opd::cuda {

// x, out: [N, C]; w: [C]; rstd: [N], saved for backward. out may not alias x.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps);

// dx += d/dx, dw += d/dw. dw is summed in a fixed order: bit-identical from run to run.
// dx may not alias dout or x.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int N, int C);

}  // namespace opd::cuda
