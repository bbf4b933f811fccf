// Log-softmax gathered at chosen tokens: what the teacher returns when it scores, and what the
// student records while it samples. One op for both so the numbers agree bit for bit.
#pragma once

namespace opd::cpu {

// logits: [N, V]; targets: [N], a target < 0 marks a row to skip (logp = 0, entropy = 0).
// logp[n] = log_softmax(logits[n])[targets[n]]; entropy (nullable): -sum_v p log p per row.
template <typename T>
void logprobs_forward(T* logp, T* entropy, const T* logits, const int* targets, int N, int V);

// dlogits[n, v] += dlogp[n] * (1[v == targets[n]] - softmax(logits[n])[v]); skipped rows untouched.
template <typename T>
void logprobs_backward(T* dlogits, const T* dlogp, const T* logits, const int* targets, int N, int V);

// Full log-softmax rows: out[n, v] = log_softmax(logits[n])[v] (what a teacher returns for --kl full).
template <typename T>
void log_softmax_forward(T* out, const T* logits, int N, int V);

// The K most likely tokens of each row plus one extra token (the sampled one; extra[n] < 0 for
// none): ids[n, 0..K] and their log-probs logp[n, 0..K], most likely first (ties: lower id first);
// slot K holds the extra token when it is not among the top K, else -1 (logp 0). Rows with
// extra[n] < 0 and skip_without_extra set are all -1 (not a completion position). K <= V.
template <typename T>
void topk_logprobs(int* ids, T* logp, const T* logits, const int* extra, bool skip_without_extra, int N, int V, int K);

// Vocabulary-parallel form: tensor parallelism splits each row into shards of consecutive ids.
// logits: this shard's [N, Vlocal] slab, holding global ids [v0, v0 + Vlocal). Per row: mx = the
// shard's max, sumexp = sum exp(x - mx) over the shard, target_logit = the target's logit when
// targets[n] lies in the shard, else 0. Every row gets its statistics, skipped ones included.
template <typename T>
void logprobs_shard_stats(T* mx, T* sumexp, T* target_logit, const T* logits, const int* targets, int N, int Vlocal,
                          int v0);

// Combines the partials of R shards, each array [R, N] (shard r in row r, what an all-gather of the
// three [N] arrays gives): M = max_r mx, S = sum_r sumexp_r exp(mx_r - M); lse (nullable) = M + log S;
// logp = (sum_r target_logit_r - M) - log S, 0 where targets[n] < 0. Equals logprobs_forward on the
// whole rows up to rounding.
template <typename T>
void combine_shard_stats(T* logp, T* lse, const T* mx, const T* sumexp, const T* target_logit, const int* targets,
                         int R, int N);

// The rest of the vocabulary-parallel toolkit: per-shard arithmetic given lse[n], the FULL row's
// log-sum-exp (from combine_shard_stats), so that log p = x - lse on every shard. The caller sums,
// maxes or gathers across shards between the calls. logits: this shard's [N, Vl] slab of global
// ids [v0, v0 + Vl).

// The same share without the cancellation: out[n] = -sum_shard p (x - lse[n]), entropy = the sum of
// the shares. lse - sum p x loses the digits of lse: in float (V 4096, logits 100 + N(0, 10^2)) it
// was off by 1.1e-3, most of a confident row's entropy of 1.5e-3, where this form was off by 9e-6
// and logprobs_forward by 4e-6 (measured against double).
template <typename T>
void entropy_shard(T* out, const T* logits, const T* lse, int N, int Vl);

// logprobs_backward on a shard: dlogits[n, v] += dlogp[n] * (1[v0 + v == targets[n]] - p);
// rows with targets[n] < 0 untouched. The target may lie in another shard.
template <typename T>
void logprobs_backward_shard(T* dlogits, const T* dlogp, const T* logits, const T* lse, const int* targets, int N,
                             int Vl, int v0);

// log_softmax_forward on a shard: out = x - lse[n] (a teacher's --kl full rows stay sharded).
template <typename T>
void log_softmax_shard(T* out, const T* logits, const T* lse, int N, int Vl);

// The shard's part of topk_logprobs: its min(K, Vl) most likely tokens per row, ids global,
// logp = x - lse[n], ordered by that logp descending, ties lower id first (the order
// topk_merge_shards merges by, so that the merge never misses a token it would rank in).
// Slots past Vl: id -1, logp -inf. ids, logp: [N, K].
template <typename T>
void topk_shard_candidates(int* ids, T* logp, const T* logits, const T* lse, int N, int Vl, int v0, int K);

// Merges the R shards' candidates (cand_ids, cand_logp: [R, N, K], shard r in block r, what an
// all-gather gives) into exactly topk_logprobs' output ([N, K + 1], same slots, same -1 / 0
// conventions, same tie order) given the same log-probs. extra_logp[n]: the log-prob of extra[n]
// (from combine_shard_stats), read only where extra[n] >= 0. K <= V, so the shards hold at
// least K candidates per row together.
template <typename T>
void topk_merge_shards(int* ids, T* logp, const int* cand_ids, const T* cand_logp, const int* extra,
                       const T* extra_logp, bool skip_without_extra, int R, int N, int K);

}  // namespace opd::cpu
