// Linear layer without bias in Hugging Face weight layout: out[N, M] = inp[N, K] @ weight[M, K]^T.
// BLAS (OpenBLAS sgemm/dgemm) does the work.
#pragma once

namespace opd::cpu {

// accumulate=false: out = inp @ weight^T;  accumulate=true: out += inp @ weight^T (residual adds).
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, int N, int K, int M, bool accumulate = false);

// dinp += dout @ weight (skipped when dinp is null); dweight += dout^T @ inp (skipped when dweight is
// null: a frozen weight, as under LoRA).
template <typename T>
void matmul_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight, int N, int K, int M);

// Threads used by BLAS; set once at start-up so MPI ranks on one node do not oversubscribe.
void set_blas_threads(int n);

}  // namespace opd::cpu
