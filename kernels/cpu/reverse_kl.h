// Reverse KL between student and teacher, the cost of on-policy distillation (ARCHITECTURE §1.1).
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

}  // namespace opd::cpu
