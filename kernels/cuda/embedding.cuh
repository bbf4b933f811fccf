// Token embedding on the GPU, same contract as kernels/cpu/embedding.h. Device pointers; work is
// queued on `stream`. Includable from plain C++.
#pragma once
#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

// out[n, :] = table[tokens[n], :] for n < N. T: float or __nv_bfloat16 (the forward reads the
// bf16 copy of the weights). tokens must lie in [0, V) (checked by the caller, on the host).
template <typename T>
void embedding_forward(T* out, const int* tokens, const T* table, int N, int C, cudaStream_t stream = 0);

// dtable[tokens[n], :] += dout[n, :] into the fp32 gradient, T: float or __nv_bfloat16.
// Deterministic and atomic-free: the positions are sorted by token (a stable radix sort, so
// ascending within a token), and one thread per column of each distinct token adds that token's
// rows in ascending n — the CPU op's order, so with float dout the result is the CPU's bit for
// bit. tokens outside [0, V) contribute nothing (the caller validates them; this only keeps
// memory safe). Scratch is allocated stream-ordered (cudaMallocAsync) and freed after use.
template <typename T>
void embedding_backward(float* dtable, const T* dout, const int* tokens, int N, int V, int C,
                        cudaStream_t stream = 0);

// Vocabulary-parallel forms (tensor parallelism), as the CPU ops of the same names: this rank holds
// rows [v0, v0 + Vl) of the table. The forward writes zero rows for tokens outside the shard (so a
// sum over the TP ranks gives the full lookup); the backward adds only the rows of tokens inside
// it, by embedding_backward's deterministic, atomic-free scheme (the same order as the CPU op, so
// with float dout the CPU's result bit for bit). Any token id is allowed: outside the shard, it
// adds nothing.
template <typename T>
void embedding_forward_shard(T* out, const int* tokens, const T* table, int N, int C, int v0, int Vl,
                             cudaStream_t stream = 0);
template <typename T>
void embedding_backward_shard(float* dtable, const T* dout, const int* tokens, int N, int C, int v0, int Vl,
                              cudaStream_t stream = 0);

}  // namespace opd::cuda
