// A low-rank adapter on a linear layer (LoRA; docs/ARCHITECTURE.md §2, adapters): the adapted layer
// is out = inp W^T + scale * (inp A^T) B^T, with A [R, K] and B [M, R] in Hugging Face layout
// (PEFT's lora_A / lora_B) and scale = alpha / R. These ops add the adapter's term to a base
// linear's output and its gradients to the base linear's input gradient; the base product is the
// matmul op's. BLAS (OpenBLAS sgemm/dgemm) does the work.
#pragma once

namespace opd::cpu {

// out[N, M] += scale * (inp[N, K] A^T) B^T. u: scratch [N, R] (overwritten with inp A^T).
template <typename T>
void lora_forward(T* out, T* u, const T* inp, const T* A, const T* B, int N, int K, int R, int M, float scale);

// From dout = dL/dout [N, M]: dinp += scale * (dout B) A (skipped when dinp is null),
// dA += scale * (dout B)^T inp, dB += scale * dout^T (inp A^T). u, du: scratch [N, R] (overwritten;
// u is recomputed from inp, so the forward keeps nothing).
template <typename T>
void lora_backward(T* dinp, T* dA, T* dB, T* u, T* du, const T* dout, const T* inp, const T* A, const T* B, int N,
                   int K, int R, int M, float scale);

// W[M, K] += scale * B A: the adapter merged into its base weight (opd merge, PEFT's merge). On the
// host only: merging is a file operation, never part of a step.
template <typename T>
void lora_merge(T* W, const T* A, const T* B, int K, int R, int M, float scale);

}  // namespace opd::cpu
