// Log-softmax rows on the GPU, same contract as kernels/cpu/logprobs.h, for fp32 or bf16 logits
// (T = float or bf16). Statistics (logp, entropy, the shard partials) are fp32; gradients and full
// log-softmax rows are written in the logits' type. All pointers are device pointers; work is
// queued on `stream`. Includable from plain C++.
//
// Differences from the CPU op: a target >= V marks a skipped row here (the CPU op throws; checking
// would cost a device-to-host copy per call); exp and log are the fast-math intrinsics, so results
// agree with the CPU op to float tolerance, not bit for bit.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

using bf16 = __nv_bfloat16;

// logits: [N, V]; targets: [N], < 0 (or >= V) skips a row (logp = 0, entropy = 0).
// One read of each row: an online max and sum-exp (and sum p log p when entropy is non-null).
template <typename T>
void logprobs_forward(float* logp, float* entropy, const T* logits, const int* targets, int N, int V,
                      cudaStream_t stream = 0);

// dlogits[n, v] += dlogp[n] * (1[v == targets[n]] - softmax(logits[n])[v]); skipped rows untouched.
template <typename T>
void logprobs_backward(T* dlogits, const float* dlogp, const T* logits, const int* targets, int N, int V,
                       cudaStream_t stream = 0);

// out[n, v] = log_softmax(logits[n])[v]; out may be logits itself.
template <typename T>
void log_softmax_forward(T* out, const T* logits, int N, int V, cudaStream_t stream = 0);

// The K most likely tokens of each row plus the extra (sampled) one, as cpu::topk_logprobs: ids
// and logp [N, K + 1], most likely first, ties to the lower id; slot K holds the extra token when it
// is not among the top K, else -1 (logp 0); extra[n] < 0 (or >= V) is none, and with
// skip_without_extra such a row is all -1. One statistics pass, then K selection passes over the
// row (each the block's best element after the previous pick): meant for K of a few dozen.
template <typename T>
void topk_logprobs(int* ids, float* logp, const T* logits, const int* extra, bool skip_without_extra, int N, int V,
                   int K, cudaStream_t stream = 0);

// Vocabulary-parallel form (tensor parallelism splits the vocabulary into shards). logits: this
// rank's [N, Vlocal] slab, holding global ids [v0, v0 + Vlocal). Per row: mx = the shard's max,
// sumexp = sum exp(x - mx) over the shard, target_logit = the target's logit when the target lies in
// the shard, else 0. Gather the three [N] arrays of all R shards (an all-gather of 3 N floats per
// rank) and combine_shard_stats gives the same logp as logprobs_forward on the whole row.
template <typename T>
void logprobs_shard_stats(float* mx, float* sumexp, float* target_logit, const T* logits, const int* targets, int N,
                          int Vlocal, int v0, cudaStream_t stream = 0);

// mx, sumexp, target_logit: [R, N], shard r's partials in row r. lse (nullable): [N] the full
// row's log-sum-exp; logp: [N], 0 where targets[n] < 0. Same arithmetic as cpu::combine_shard_stats.
void combine_shard_stats(float* logp, float* lse, const float* mx, const float* sumexp, const float* target_logit,
                         const int* targets, int R, int N, cudaStream_t stream = 0);

// The rest of the vocabulary-parallel toolkit, as the CPU ops of the same names: per-shard
// arithmetic given lse[n] (fp32), the FULL row's log-sum-exp (combine_shard_stats), so that
// log p = x - lse on every shard. logits: this shard's [N, Vl] slab of global ids [v0, v0 + Vl).
// One block per row, one read of the slab; no atomics (the reductions are fixed trees).

// out[n] = -sum_shard p (x - lse[n]) (fp32): the shard's share of the row's entropy.
template <typename T>
void entropy_shard(float* out, const T* logits, const float* lse, int N, int Vl, cudaStream_t stream = 0);

// dlogits[n, v] += dlogp[n] * (1[v0 + v == targets[n]] - p); rows with targets[n] < 0 untouched;
// a target in another shard adds no one-hot here.
template <typename T>
void logprobs_backward_shard(T* dlogits, const float* dlogp, const T* logits, const float* lse, const int* targets,
                             int N, int Vl, int v0, cudaStream_t stream = 0);

// out = x - lse[n]; out may be logits itself.
template <typename T>
void log_softmax_shard(T* out, const T* logits, const float* lse, int N, int Vl, cudaStream_t stream = 0);

// The shard's part of topk_logprobs: its min(K, Vl) most likely tokens per row, ids global,
// logp = x - lse[n] (fp32), ordered by that logp descending, ties lower id first; slots past Vl:
// id -1, logp -inf. ids, logp: [N, K]. The same picks and log-probs as the CPU op bit for bit (the
// ranking key is one IEEE subtraction). One selection pass over the slab per pick: meant for K of
// a few dozen, as topk_logprobs.
template <typename T>
void topk_shard_candidates(int* ids, float* logp, const T* logits, const float* lse, int N, int Vl, int v0, int K,
                           cudaStream_t stream = 0);

}  // namespace opd::cuda
