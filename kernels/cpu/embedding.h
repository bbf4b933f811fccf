// Token embedding: forward gathers rows of the table, backward scatter-adds into them.
#pragma once

namespace opd::cpu {

// out[n, :] = table[tokens[n], :] for n < N. tokens must lie in [0, V) (checked by the caller).
template <typename T>
void embedding_forward(T* out, const int* tokens, const T* table, int N, int C);

// dtable[tokens[n], :] += dout[n, :]  (accumulates; deterministic order).
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int* tokens, int N, int V, int C);

// Vocabulary-parallel forms (tensor parallelism): this rank holds rows [v0, v0 + Vl) of the table.
// Forward writes zero rows for tokens outside the shard, so a sum over the TP ranks gives the full
// lookup; backward adds only the rows of tokens inside it.
template <typename T>
void embedding_forward_shard(T* out, const int* tokens, const T* table, int N, int C, int v0, int Vl);
template <typename T>
void embedding_backward_shard(T* dtable, const T* dout, const int* tokens, int N, int C, int v0, int Vl);

}  // namespace opd::cpu
