// Rotary position embedding on the GPU, same contract as kernels/cpu/rope.h (Hugging Face
// "rotate_half" pairing, Llama 3.1 scaling, positions per row), for float and bf16 storage. The
// angles are formed exactly as the CPU op forms them (its inv_freq table, built on the host;
// angle = pos * inv_freq rounded to float; cos and sin in double), so only the final rotation's
// rounding differs from the CPU.
// All pointers are device pointers; work is queued on `stream`. Includable from plain C++.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cpu/rope.h"  // RopeScaling, rope_inv_freq

namespace opd::cuda {

// Largest head dimension the kernels take (the inverse frequencies travel as a kernel argument).
constexpr int kRopeMaxHeadDim = 512;

// x: [N, H, D] rotated in place (D even, D <= kRopeMaxHeadDim); pos: [N] device ints, each >= 0
// (the caller checks positions on the host, where it builds them).
template <typename T>
void rope_forward(T* x, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling = {},
                  cudaStream_t stream = 0);

// The inverse rotation applied in place to the gradient: dx = R(pos)^T dout.
template <typename T>
void rope_backward(T* dx, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling = {},
                   cudaStream_t stream = 0);

}  // namespace opd::cuda
