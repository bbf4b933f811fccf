#include "kernels/cpu/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace opd::cpu {

double grad_sumsq(const float* g, size_t n) {
  // Fixed chunks, each summed alone, then the partials in chunk order: the result is the same
  // bits whatever the thread count.
  const size_t chunk = size_t(1) << 16;
  const long nchunks = static_cast<long>((n + chunk - 1) / chunk);
  std::vector<double> partial(nchunks);
#pragma omp parallel for schedule(static) if (nchunks > 1)
  for (long c = 0; c < nchunks; ++c) {
    const size_t lo = static_cast<size_t>(c) * chunk;
    const size_t hi = std::min(n, lo + chunk);
    // Eight fixed lanes let the loop vectorise without making the order depend on anything.
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = lo;
    for (; i + 8 <= hi; i += 8)
      for (int j = 0; j < 8; ++j) lane[j] += static_cast<double>(g[i + j]) * g[i + j];
    for (; i < hi; ++i) lane[0] += static_cast<double>(g[i]) * g[i];
    partial[c] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
  double total = 0;
  for (long c = 0; c < nchunks; ++c) total += partial[c];
  return total;
}

void adamw_update(float* params, const float* grads, float* m, float* v, const unsigned char* decay_mask, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale) {
  OPD_REQUIRE(t >= 1, "adamw_update: step t is 1-based, got ", t);
  OPD_REQUIRE(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f,
              "adamw_update: betas must be in [0, 1), got beta1=", beta1, " beta2=", beta2);
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), t));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), t));
  const long nn = static_cast<long>(n);
  // Below this many elements a parallel region costs more than the work it splits.
#pragma omp parallel for schedule(static) if (n >= (size_t(1) << 14))
  for (long i = 0; i < nn; ++i) {
    const float g = grads[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / bc1, vhat = vi / bc2;
    const float wd = !decay_mask || decay_mask[i] ? weight_decay : 0.0f;
    params[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * params[i]);
  }
}

}  // namespace opd::cpu
