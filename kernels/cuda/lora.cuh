// The LoRA op on the GPU, same contract as kernels/cpu/lora.h: out[N, M] += scale * (inp A^T) B^T,
// A [R, K] and B [M, R] (Hugging Face layout), through cuBLASLt (kernels/cuda/matmul.cuh): bf16
// operands, fp32 accumulation, the adapters' gradients fp32. The rank-R intermediate u = inp A^T
// and du = scale * dout B are bf16 scratch [N, R] (the second GEMM reads them as bf16 operands).
// Device pointers; work queued on `stream` through `mm` (one Matmul per stream). Includable from
// plain C++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/matmul.cuh"

namespace opd::cuda {

// out += scale * (inp A^T) B^T; u: scratch [N, R] (overwritten with inp A^T).
void lora_forward(Matmul& mm, bf16* out, bf16* u, const bf16* inp, const bf16* A, const bf16* B, int N, int K, int R,
                  int M, float scale, cudaStream_t stream = 0);

// dinp += scale * (dout B) A (skipped when dinp is null), dA += scale * (dout B)^T inp,
// dB += scale * dout^T (inp A^T); u, du: scratch [N, R] (overwritten; u is recomputed from inp).
void lora_backward(Matmul& mm, bf16* dinp, float* dA, float* dB, bf16* u, bf16* du, const bf16* dout,
                   const bf16* inp, const bf16* A, const bf16* B, int N, int K, int R, int M, float scale,
                   cudaStream_t stream = 0);

}  // namespace opd::cuda
