// Token embedding: forward gathers rows of the table, backward scatter-adds into them.
#pragma once

namespace opd::cpu {

// out[n, :] = table[tokens[n], :] for n < N. tokens must lie in [0, V) (checked by the caller).
template <typename T>
void embedding_forward(T* out, const int* tokens, const T* table, int N, int C);

// dtable[tokens[n], :] += dout[n, :]  (accumulates; deterministic order).
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int* tokens, int N, int V, int C);

}  // namespace opd::cpu
