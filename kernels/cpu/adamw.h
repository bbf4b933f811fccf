// AdamW over one flat parameter buffer, with decoupled weight decay and global-norm clipping.
#pragma once
#include <cstddef>

namespace opd::cpu {

// Sum of squares of g[0..n), accumulated in double.
double grad_sumsq(const float* g, size_t n);

// One update at step t (1-based). Gradients are multiplied by grad_scale first (the clipping
// factor min(1, max_norm / norm), computed by the caller from grad_sumsq over all shards).
// decay_mask (nullable): 1 where weight decay applies, 0 where it does not (norm weights).
void adamw_update(float* params, const float* grads, float* m, float* v, const unsigned char* decay_mask, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale);

}  // namespace opd::cpu
