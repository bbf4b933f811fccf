// Reverse KL between student and teacher, the cost of on-policy distillation (docs/ARCHITECTURE.md §1).
#pragma once

namespace opd::cpu {

// Sampled-token estimator. Per token: k = logp_old - logp_teacher (the reverse-KL sample).
template <typename T>
void reverse_kl_sampled(T* k, const T* logp_old, const T* logp_teacher, int N);

// Importance-sampled policy-gradient loss on sampled tokens, weight w_n (mask / N_tok):
// loss[n] = -adv[n] * exp(logp[n] - logp_old[n]) * w[n];  dlogp[n] = d loss[n] / d logp[n] = loss[n].
template <typename T>
void policy_gradient_loss(T* loss, T* dlogp, const T* logp, const T* logp_old, const T* adv, const T* w, int N);

// Exact per-position reverse KL over the full vocabulary:
// kl[n] = sum_v p_s(v) (log p_s(v) - logp_teacher[n, v]),  p_s = softmax(logits[n]);
// dlogits (nullable) is overwritten with scale[n] * p_s(v) ((log p_s(v) - logp_teacher[n, v]) - kl[n]).
// logp_teacher: [N, V], the teacher's log-softmax rows. Rows with scale 0 still get kl.
template <typename T>
void reverse_kl_full(T* kl, T* dlogits, const T* logits, const T* logp_teacher, const T* scale, int N, int V);

// Top-K approximation: the sum runs over the set S_n of ids[n, 0..K1) (the teacher's top-K plus
// the sampled token; entries < 0 are absent, duplicates are not allowed), with both distributions
// renormalised over S_n:  q_s = softmax(logits[n])|S / sum_S,  q_t likewise from logp_teacher[n, j]
// (the teacher's log-probs of ids[n, j]). kl[n] = sum_S q_s (log q_s - log q_t);
// dlogits (nullable) overwritten: scale[n] * q_s(v) ((log q_s(v) - log q_t(v)) - kl[n]) on S, 0 elsewhere.
template <typename T>
void reverse_kl_topk(T* kl, T* dlogits, const T* logits, const int* ids, const T* logp_teacher, const T* scale,
                     int N, int V, int K1);

// Vocabulary-parallel forms (tensor parallelism: each rank holds logits [N, Vl] for global ids
// [v0, v0 + Vl)). lse[n] is the FULL row's log-sum-exp (combine_shard_stats), so every shard has
// log p = x - lse; the caller sums the partials over shards between the calls.

// reverse_kl_full's sum restricted to the shard: partial[n] = sum_shard p (log p - lt), lt the
// teacher's [N, Vl] slab of the same ids. kl = the sum of the partials over shards.
template <typename T>
void reverse_kl_full_shard_partial(T* partial, const T* logits, const T* lse, const T* logp_teacher, int N, int Vl);

// reverse_kl_full's dlogits on the shard (overwritten): scale[n] p ((log p - lt) - kl[n]); the
// gradient needs the full-row kl, hence a second pass after the sum.
template <typename T>
void reverse_kl_full_shard_grad(T* dlogits, const T* logits, const T* lse, const T* logp_teacher, const T* kl,
                                const T* scale, int N, int Vl);

// reverse_kl_topk's sums over the part of S_n = ids[n, 0..K1) (entries < 0 absent) that lies in the
// shard. With Z = sum_S p: KL = a/Z - log Z where a = sum_S p (log p - log q_t), so the row needs
// only two sums over shards: zs[n] = sum p_j, a[n] = sum p_j (log p_j - log q_t(j)). log q_t is
// normalised over all of S_n: every rank holds all K1 teacher log-probs logp_teacher[n, j].
template <typename T>
void reverse_kl_topk_shard_partial(T* zs, T* a, const T* logits, const T* lse, const int* ids, const T* logp_teacher,
                                   int N, int Vl, int v0, int K1);

// After the sums over shards: kl = a/zs - log zs, 0 where zs = 0 (S_n empty, as reverse_kl_topk).
// Note: zs is also 0 when every p on S underflows (log p below about -745 in double, -103 in
// float); such a row gets kl 0 and no gradient where reverse_kl_topk, which renormalises over S
// alone, would not.
template <typename T>
void reverse_kl_topk_combine(T* kl, const T* zs, const T* a, int N);

// reverse_kl_topk's dlogits on the shard (overwritten): scale[n] q_s ((log q_s - log q_t) - kl[n])
// on S_n within the shard, q_s = p / zs[n] (zs summed over shards), 0 elsewhere.
template <typename T>
void reverse_kl_topk_shard_grad(T* dlogits, const T* logits, const T* lse, const T* zs, const int* ids,
                                const T* logp_teacher, const T* kl, const T* scale, int N, int Vl, int v0, int K1);

}  // namespace opd::cpu
