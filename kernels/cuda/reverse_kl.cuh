// Reverse KL between student and teacher on the GPU, same contract as kernels/cpu/reverse_kl.h.
// Logits and the teacher's full log-softmax rows are fp32 or bf16 (T = float or bf16, both the
// same type); kl, scale and the top-K teacher log-probs are fp32; dlogits is written in the logits'
// type and may be the logits buffer itself (in place). All pointers are device pointers; work is
// queued on `stream`. Includable from plain C++.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

using bf16 = __nv_bfloat16;

// k[n] = logp_old[n] - logp_teacher[n].
void reverse_kl_sampled(float* k, const float* logp_old, const float* logp_teacher, int N, cudaStream_t stream = 0);

// loss[n] = dlogp[n] = -adv[n] * exp(logp[n] - logp_old[n]) * w[n].
void policy_gradient_loss(float* loss, float* dlogp, const float* logp, const float* logp_old, const float* adv,
                          const float* w, int N, cudaStream_t stream = 0);

// kl[n] = sum_v p_s(v) (log p_s(v) - logp_teacher[n, v]) in one read of both rows (an online max,
// sum-exp and sum of exp * (x - logp_teacher)); with dlogits non-null a second pass writes
// scale[n] * p_s(v) ((log p_s(v) - logp_teacher[n, v]) - kl[n]).
template <typename T>
void reverse_kl_full(float* kl, T* dlogits, const T* logits, const T* logp_teacher, const float* scale, int N, int V,
                     cudaStream_t stream = 0);

// Top-K form over the ids[n, 0..K1) of each row (entries < 0 absent; here also entries >= V, which
// the CPU op rejects; duplicates are not allowed and not checked). logp_teacher: [N, K1] fp32.
// Only the gathered logits are read; dlogits (nullable) gets zeros off S. K1 <= 8192.
template <typename T>
void reverse_kl_topk(float* kl, T* dlogits, const T* logits, const int* ids, const float* logp_teacher,
                     const float* scale, int N, int V, int K1, cudaStream_t stream = 0);

// Vocabulary-parallel forms of reverse_kl_full, as the CPU ops of the same names: logits and
// logp_teacher are this shard's [N, Vl] slabs (type T) of the same global ids; lse[n] (fp32) is the
// FULL row's log-sum-exp (combine_shard_stats), so log p = x - lse. The caller sums the partials
// over shards between the two calls. One block per row; no atomics (the sum is a fixed tree).

// partial[n] = sum_shard p (log p - lt): kl = the sum of the partials over shards.
template <typename T>
void reverse_kl_full_shard_partial(float* partial, const T* logits, const float* lse, const T* logp_teacher, int N,
                                   int Vl, cudaStream_t stream = 0);

// dlogits (overwritten, may be logits itself) = scale[n] p ((log p - lt) - kl[n]), kl the full row's.
template <typename T>
void reverse_kl_full_shard_grad(T* dlogits, const T* logits, const float* lse, const T* logp_teacher, const float* kl,
                                const float* scale, int N, int Vl, cudaStream_t stream = 0);

// Vocabulary-parallel forms of reverse_kl_topk, as the CPU ops of the same names: logits is this
// shard's [N, Vl] slab (type T) of global ids [v0, v0 + Vl); ids [N, K1] (entries < 0 absent) and
// the teacher's log-probs logp_teacher [N, K1] (fp32) are the whole rows' on every rank, so that
// log q_t is normalised over all of S_n. Duplicates in ids are not allowed and, unlike the CPU
// ops, not checked (two threads would write one gradient element: the result is not
// deterministic). The caller sums zs and a over shards and combines (reverse_kl_topk_combine)
// between the calls. Like every kernel of this file (a fast-math build), a probability whose log
// is below about -87 counts as 0: where the teacher gives such a token log-prob -inf, the CPU's KL
// is +inf and this one's finite.

// zs[n] = sum p_j, a[n] = sum p_j (log p_j - log q_t(j)) over S_n's entries in the shard (fp32).
// One warp per row.
template <typename T>
void reverse_kl_topk_shard_partial(float* zs, float* a, const T* logits, const float* lse, const int* ids,
                                   const float* logp_teacher, int N, int Vl, int v0, int K1, cudaStream_t stream = 0);

// dlogits (overwritten, may be logits itself) = scale[n] q_s ((log q_s - log q_t) - kl[n]) on
// S_n's entries in the shard, q_s = p / zs[n], 0 elsewhere and on rows with zs[n] = 0. K1 <= 8192.
template <typename T>
void reverse_kl_topk_shard_grad(T* dlogits, const T* logits, const float* lse, const float* zs, const int* ids,
                                const float* logp_teacher, const float* kl, const float* scale, int N, int Vl, int v0,
                                int K1, cudaStream_t stream = 0);

}  // namespace opd::cuda
