// Causal grouped-query attention, scale 1/sqrt(D). Query head h reads kv head h / (H / Hkv).
// Training form keeps only the per-row log-sum-exp (no [T x T] buffer survives the call);
// backward recomputes the probabilities from it. Sequences are right-padded: causality means a
// row never sees the padding after it.
#pragma once

namespace opd::cpu {

// q, out: [B, T, H, D]; k, v: [B, T, Hkv, D]; lse: [B, H, T].
template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, int B, int Tn, int H, int Hkv, int D);

// dq, dk, dv are overwritten. out and lse are the forward's.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, int B, int Tn, int H, int Hkv, int D);

// KV cache: k_cache, v_cache are [B, S, Hkv, D] (S = cache capacity). Writes rows [0, Tn) of
// sequence b from k, v: [B, Tn, Hkv, D] (prefill).
template <typename T>
void kv_cache_write(T* k_cache, T* v_cache, const T* k, const T* v, int B, int Tn, int S, int Hkv, int D);

// One decode step: for each sequence b, stores k_new[b], v_new[b] ([B, Hkv, D]) at cache row
// pos[b], then attends q[b] ([B, H, D]) over cache rows [0, pos[b]]. out: [B, H, D].
template <typename T>
void attention_decode(T* out, const T* q, const T* k_new, const T* v_new, T* k_cache, T* v_cache, const int* pos,
                      int B, int S, int H, int Hkv, int D);

}  // namespace opd::cpu
