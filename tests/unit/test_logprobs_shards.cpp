// The vocabulary-parallel log-probs (shard statistics + combine) against logprobs_forward on whole rows.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/logprobs.h"

using opd::testing::expect_close;
using opd::testing::random_vector;

namespace {

// Splits [0, V) into R shards of (nearly) equal size, computes each shard's statistics from its own
// slab, stacks them [R, N] as an all-gather would, and combines.
void check_shards(int N, int V, int R, double scale, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " R=" << R << " scale=" << scale);
  const auto x = random_vector<double>(static_cast<size_t>(N) * V, seed, -scale, scale);
  std::mt19937 gen(seed + 1);
  std::vector<int> t(N);
  for (int n = 0; n < N; ++n) t[n] = static_cast<int>(gen() % V);
  t[0] = -1;
  if (N > 2) t[N - 1] = V - 1, t[1] = 0;

  std::vector<double> want(N), ent(N);
  opd::cpu::logprobs_forward(want.data(), ent.data(), x.data(), t.data(), N, V);

  std::vector<double> mx(static_cast<size_t>(R) * N), se(mx.size()), tl(mx.size());
  for (int r = 0; r < R; ++r) {
    const int v0 = static_cast<int>(static_cast<long>(V) * r / R);
    const int v1 = static_cast<int>(static_cast<long>(V) * (r + 1) / R);
    const int Vl = v1 - v0;
    std::vector<double> slab(static_cast<size_t>(N) * Vl);
    for (int n = 0; n < N; ++n)
      std::copy_n(x.begin() + static_cast<size_t>(n) * V + v0, Vl, slab.begin() + static_cast<size_t>(n) * Vl);
    opd::cpu::logprobs_shard_stats(mx.data() + static_cast<size_t>(r) * N, se.data() + static_cast<size_t>(r) * N,
                                   tl.data() + static_cast<size_t>(r) * N, slab.data(), t.data(), N, Vl, v0);
  }
  std::vector<double> got(N), lse(N);
  opd::cpu::combine_shard_stats(got.data(), lse.data(), mx.data(), se.data(), tl.data(), t.data(), R, N);
  expect_close(got, want, 1e-12, 1e-12, "logp");
  for (int n = 1; n < N; ++n)  // lse = x[t] - logp on every row that has a target
    EXPECT_NEAR(lse[n], x[static_cast<size_t>(n) * V + t[n]] - want[n], 1e-12 * (1 + std::fabs(lse[n]))) << n;
  EXPECT_EQ(got[0], 0.0);
}

}  // namespace

TEST(LogprobsShards, CombineEqualsWholeRow) {
  check_shards(5, 1, 1, 1.0, 1);
  check_shards(7, 17, 1, 3.0, 2);
  check_shards(7, 17, 4, 3.0, 3);
  check_shards(3, 1000, 8, 30.0, 4);
  check_shards(9, 1001, 3, 1.0, 5);
}

TEST(LogprobsShards, ShardWithoutTargetGivesZeroLogit) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};  // two rows of a 3-wide shard holding ids [10, 13)
  const std::vector<int> t = {11, 2};
  std::vector<float> mx(2), se(2), tl(2);
  opd::cpu::logprobs_shard_stats(mx.data(), se.data(), tl.data(), x.data(), t.data(), 2, 3, 10);
  EXPECT_EQ(tl[0], 2.0f);
  EXPECT_EQ(tl[1], 0.0f);
  EXPECT_EQ(mx[0], 3.0f);
  EXPECT_NEAR(se[1], std::exp(-2.0) + std::exp(-1.0) + 1.0, 1e-6);
}
