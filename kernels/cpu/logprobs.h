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

}  // namespace opd::cpu
