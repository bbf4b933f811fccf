// AdamW on the GPU, same contract as kernels/cpu/adamw.h: fp32 master parameters and fp32 m, v;
// gradients in fp32 or bf16; optionally a bf16 copy of the updated parameters for the next
// forward, written in the same pass. Device pointers; work queued on `stream`. Includable from
// plain C++.
#pragma once
#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

// *sumsq += sum of g[i]^2 over [0, n), formed in double. sumsq is a device double, so the norms
// of several buffers can be summed (in call order) without leaving the GPU. Deterministic: fixed
// chunks of 2^16 elements, each reduced in a fixed tree, then the chunks in a fixed tree, so the
// same inputs give the same bits on every run (not the CPU op's bits: its order differs).
// G: float or __nv_bfloat16.
template <typename G>
void grad_sumsq_add(double* sumsq, const G* g, size_t n, cudaStream_t stream = 0);

// The CPU op's signature: the sum of squares of g[0..n), returned to the host (waits for stream).
template <typename G>
double grad_sumsq(const G* g, size_t n, cudaStream_t stream = 0);

// One update at step t (1-based), as the CPU op: g = grads * grad_scale (the clipping factor),
// m, v in fp32, decoupled weight decay where decay_mask (nullable, device bytes) is nonzero.
// params_bf16 (nullable): receives bf16(params) after the update.
template <typename G>
void adamw_update(float* params, const G* grads, float* m, float* v, const unsigned char* decay_mask, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale,
                  __nv_bfloat16* params_bf16 = nullptr, cudaStream_t stream = 0);

}  // namespace opd::cuda
