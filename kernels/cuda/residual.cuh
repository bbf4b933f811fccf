// Residual add on the GPU, same contract as kernels/cpu/residual.h, for float and bf16 storage
// (the sum is formed in fp32 and rounded once). Device pointers; work queued on `stream`.
// Includable from plain C++.
#pragma once
#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

// out = x + y elementwise; out may alias x or y. T: float or __nv_bfloat16.
template <typename T>
void residual_forward(T* out, const T* x, const T* y, size_t n, cudaStream_t stream = 0);

}  // namespace opd::cuda
