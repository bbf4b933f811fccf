// The GPU sampler's decision logic (kernels/cuda/sample_select.h, shared by the kernel) run on the
// host with sequential sums: the same token as cpu::sample_tokens on every row, ties included.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/sample.h"
#include "kernels/cuda/sample_select.h"

namespace {

using opd::sample_select::CountMass;

// What one block of the sample kernel computes for a row, with plain loops in place of its
// reductions.
int host_sample(const float* x, int V, const opd::cpu::SampleParams& p, uint32_t seq, uint32_t pos) {
  int top = 0;
  for (int v = 1; v < V; ++v)
    if (x[v] > x[top]) top = v;
  if (p.temperature == 0.0f) return top;
  const uint64_t counter = (static_cast<uint64_t>(seq) << 32) | pos;
  const double u = opd::uniform01(opd::philox_draw(p.seed, p.step, counter).v[0]);
  const float mx = x[top];
  auto upto = [&](bool sorted, uint64_t K) {
    CountMass c{0u, 0.0};
    for (int v = 0; v < V; ++v) {
      const float pr = opd::sample_select::prob_of(x[v], mx, p.temperature);
      if ((sorted ? opd::sample_select::order_key(pr, v) : static_cast<uint64_t>(v)) <= K) c.count += 1, c.mass += pr;
    }
    return c;
  };
  return opd::sample_select::select_token(
      top, V, u, p.top_p, p.top_k, [&](uint64_t K) { return upto(false, K); },
      [&](uint64_t K) { return upto(true, K); });
}

}  // namespace

TEST(SampleSelect, SameTokenAsCpuOp) {
  std::mt19937 gen(7);
  std::normal_distribution<float> logit(0.0f, 2.0f);
  const float temperatures[] = {1.0f, 0.7f, 1.3f};
  const float top_ps[] = {1.0f, 0.9f, 0.5f, 0.05f};
  const int top_ks[] = {0, 1, 5, 50};
  int rows = 0;
  for (int V : {1, 2, 17, 300})
    for (float t : temperatures)
      for (float top_p : top_ps)
        for (int top_k : top_ks) {
          opd::cpu::SampleParams p;
          p.temperature = t, p.top_p = top_p, p.top_k = top_k, p.seed = gen(), p.step = gen();
          const int N = 40;
          std::vector<float> x(static_cast<size_t>(N) * V);
          for (auto& e : x) e = logit(gen);
          for (int n = 0; n < N; n += 3)  // whole numbers: many ties
            for (int v = 0; v < V; ++v) {
              float& e = x[static_cast<size_t>(n) * V + v];
              e = std::round(e);
            }
          std::vector<uint32_t> seq(N), pos(N);
          for (int n = 0; n < N; ++n) seq[n] = gen() % 9, pos[n] = gen() % 1000;
          std::vector<int> want(N);
          opd::cpu::sample_tokens(want.data(), x.data(), seq.data(), pos.data(), N, V, p);
          for (int n = 0; n < N; ++n, ++rows)
            ASSERT_EQ(host_sample(x.data() + static_cast<size_t>(n) * V, V, p, seq[n], pos[n]), want[n])
                << "V=" << V << " T=" << t << " top_p=" << top_p << " top_k=" << top_k << " row " << n;
        }
  EXPECT_EQ(rows, 4 * 3 * 4 * 4 * 40);
}
