// Fused log-softmax + negative log-likelihood + gradient (SFT) on the GPU, same contract as
// kernels/cpu/cross_entropy.h, for fp32 or bf16 logits (T = float or bf16): losses are fp32,
// dlogits is written in the logits' type and may be the logits buffer itself (in place).
// All pointers are device pointers; work is queued on `stream`. Includable from plain C++.
// A target >= V skips its row here (the CPU op throws).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

using bf16 = __nv_bfloat16;

// losses[n] = -log_softmax(logits[n])[targets[n]] (0 where targets[n] < 0). dlogits (nullable) is
// overwritten with scale * (softmax - onehot), 0 on skipped rows.
template <typename T>
void cross_entropy_forward_backward(float* losses, T* dlogits, const T* logits, const int* targets, float scale, int N,
                                    int V, cudaStream_t stream = 0);

}  // namespace opd::cuda
