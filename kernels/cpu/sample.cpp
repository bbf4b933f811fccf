#include "kernels/cpu/sample.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace opd::cpu {

namespace {

// Below this many elements a parallel region costs more than the work it splits.
constexpr size_t kParallelMin = size_t(1) << 14;

int argmax(const float* x, int V) {
  int best = 0;
  for (int v = 1; v < V; ++v)
    if (x[v] > x[best]) best = v;  // strict: the lowest id wins a tie
  return best;
}

// One row: unnormalised probabilities, optional top-k / top-p cut, then the inverse CDF at u.
// Cumulative sums are in double so that u near 1 still lands inside the support.
int sample_row(const float* x, int V, float u, const SampleParams& p, std::vector<float>& prob, std::vector<int>& idx) {
  const float mx = x[argmax(x, V)];
  for (int v = 0; v < V; ++v) prob[v] = std::exp((x[v] - mx) / p.temperature);

  const int k = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  if (k == V && p.top_p >= 1.0f) {
    double total = 0;
    for (int v = 0; v < V; ++v) total += prob[v];
    const double target = u * total;
    double cum = 0;
    int last = 0;
    for (int v = 0; v < V; ++v) {
      if (prob[v] <= 0) continue;
      cum += prob[v];
      last = v;
      if (cum > target) return v;
    }
    return last;
  }

  // Ties broken by id so that the order, and so the draw, is fully determined.
  for (int v = 0; v < V; ++v) idx[v] = v;
  auto before = [&](int a, int b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); };
  if (k < V)
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
  else
    std::sort(idx.begin(), idx.end(), before);
  double mass_k = 0;
  for (int i = 0; i < k; ++i) mass_k += prob[idx[i]];
  // Smallest prefix of the (top-k renormalised) distribution holding top_p of its mass, never empty.
  const double need = static_cast<double>(p.top_p) * mass_k;
  int m = 0;
  double mass = 0;
  while (m < k) {
    mass += prob[idx[m++]];
    if (mass >= need) break;
  }
  const double target = u * mass;
  double cum = 0;
  for (int i = 0; i < m; ++i) {
    cum += prob[idx[i]];
    if (cum > target) return idx[i];
  }
  return idx[m - 1];
}

}  // namespace

void sample_tokens(int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N, int V,
                   const SampleParams& p) {
  OPD_REQUIRE(N >= 0 && V > 0, "sample_tokens: need N >= 0 and V > 0, got N=", N, " V=", V);
  OPD_REQUIRE(p.temperature >= 0.0f && std::isfinite(p.temperature),
              "sample_tokens: temperature must be finite and >= 0, got ", p.temperature);
  OPD_REQUIRE(p.top_p > 0.0f && p.top_p <= 1.0f, "sample_tokens: top_p must be in (0, 1], got ", p.top_p);
  OPD_REQUIRE(p.top_k >= 0, "sample_tokens: top_k must be >= 0, got ", p.top_k);
  if (p.temperature == 0.0f) {
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * V >= kParallelMin)
    for (int n = 0; n < N; ++n) tokens[n] = argmax(logits + static_cast<size_t>(n) * V, V);
    return;
  }
#pragma omp parallel if (static_cast<size_t>(N) * V >= kParallelMin)
  {
    std::vector<float> prob(V);
    std::vector<int> idx(V);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      // The draw is keyed by the row's own (sequence, position), never by n, so a token does not
      // depend on which other rows share the batch.
      const uint64_t counter = (static_cast<uint64_t>(seq[n]) << 32) | pos[n];
      const float u = uniform01(philox_draw(p.seed, p.step, counter).v[0]);
      tokens[n] = sample_row(logits + static_cast<size_t>(n) * V, V, u, p, prob, idx);
    }
  }
}

}  // namespace opd::cpu
