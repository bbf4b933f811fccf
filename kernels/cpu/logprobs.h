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

}  // namespace opd::cpu
