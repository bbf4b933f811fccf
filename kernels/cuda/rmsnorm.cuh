// RMSNorm on the GPU, same contract as kernels/cpu/rmsnorm.h, for float and bf16 storage: x, w,
// out, dout and dx are of type T (float or __nv_bfloat16), while rstd, dw and every sum are fp32.
// All pointers are device pointers; work is queued on `stream`. Includable from plain C++.
#pragma once
#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

// x, out: [N, C]; w: [C]; rstd: [N], saved for backward. out may not alias x.
template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps, cudaStream_t stream = 0);

// dx += d/dx (summed in fp32, rounded once to T), dw += d/dw (fp32; dw null: a frozen weight, not
// summed). dw is summed in a fixed order:
// bit-identical from run to run. dx may not alias dout or x.
// The per-block partial sums of dw go to `workspace` when it is given (at least
// rmsnorm_backward_workspace_bytes(N, C) bytes, 4-byte aligned, not used by other work queued
// meanwhile on other streams); when it is null they go to memory allocated and freed on `stream`.
template <typename T>
void rmsnorm_backward(T* dx, float* dw, const T* dout, const T* x, const T* w, const float* rstd, int N, int C,
                      cudaStream_t stream = 0, float* workspace = nullptr);

// The bytes rmsnorm_backward needs for its workspace at this shape (the same for float and bf16).
size_t rmsnorm_backward_workspace_bytes(int N, int C);

}  // namespace opd::cuda
