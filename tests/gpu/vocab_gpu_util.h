// Helpers for the vocabulary-row GPU tests: language-model-like logits, random targets and a
// worst-element comparison that names the row (device buffers and bf16 rounding: device_buffer.h).
#pragma once
#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gpu/device_buffer.h"
#include "kernels/cuda/cuda_check.cuh"

namespace opd::testing {

// Logits that look like a language model's: a normal bulk, a few strong candidates, and (every
// 7th row) one dominant token; `spread` scales them all.
inline std::vector<float> lm_logits(int N, int V, uint32_t seed, float spread = 3.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> bulk(0.0f, spread);
  std::vector<float> x(static_cast<size_t>(N) * V);
  for (auto& e : x) e = bulk(gen);
  for (int n = 0; n < N; ++n) {
    float* r = x.data() + static_cast<size_t>(n) * V;
    for (int j = 0; j < 5 && j < V; ++j) r[gen() % V] += 4.0f * spread;
    if (n % 7 == 3) r[gen() % V] += 12.0f * spread;
  }
  return x;
}

// Random targets in [0, V) with every 5th row skipped (-1), and the first and last ids used.
inline std::vector<int> targets_with_skips(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int> t(N);
  for (int n = 0; n < N; ++n) t[n] = n % 5 == 2 ? -1 : static_cast<int>(gen() % V);
  if (N > 0) t[0] = V - 1;
  if (N > 1) t[1] = 0;
  return t;
}

// Every element within atol + rtol * |expected|; on failure prints the worst one (index, row of
// width `width`, values) and the count.
template <typename A>
void expect_near_all(const std::vector<A>& got, const std::vector<double>& want, double atol, double rtol,
                     const char* what, int width = 1) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t worst = 0, misses = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(static_cast<float>(got[i])), e = want[i];
    const double excess = std::fabs(g - e) - (atol + rtol * std::fabs(e));
    const bool bad = !(excess <= 0) && !(std::isinf(e) && g == e);
    if (bad) ++misses;
    if (bad && (worst_excess < 0 || !(excess <= worst_excess))) worst_excess = std::isnan(excess) ? 1e300 : excess,
                                                                 worst = i;
  }
  EXPECT_EQ(misses, 0u) << what << ": " << misses << " of " << got.size()
                        << " elements out of tolerance; worst at [" << worst << "] (row " << worst / width
                        << ", col " << worst % width << "): got " << static_cast<float>(got[worst]) << ", expected "
                        << want[worst];
}

}  // namespace opd::testing
#endif
