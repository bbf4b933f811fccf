// SwiGLU on the GPU, same contract as kernels/cpu/swiglu.h, for float and bf16 storage (the math
// is fp32 either way). All pointers are device pointers; work is queued on `stream`.
// Includable from plain C++.
#pragma once
#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

// out = silu(gate) * up elementwise; out may alias gate or up. T: float or __nv_bfloat16.
template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, size_t n, cudaStream_t stream = 0);

// dgate, dup are overwritten; dgate may alias gate and dup may alias up.
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n, cudaStream_t stream = 0);

}  // namespace opd::cuda
