// Fused log-softmax + negative log-likelihood + gradient (SFT).
#pragma once

namespace opd::cpu {

// losses[n] = -log_softmax(logits[n])[targets[n]] (0 where targets[n] < 0).
// When dlogits is non-null it is overwritten with scale * (softmax - onehot) (0 on skipped rows),
// i.e. the gradient of scale * sum_n losses[n].
template <typename T>
void cross_entropy_forward_backward(T* losses, T* dlogits, const T* logits, const int* targets, T scale, int N,
                                    int V);

}  // namespace opd::cpu
