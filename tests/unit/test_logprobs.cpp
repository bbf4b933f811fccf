// logprobs_forward / logprobs_backward against a naive log-softmax and central finite differences.
#include <cmath>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/logprobs.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

namespace {

// Straight from the definition, in double, no max subtracted.
void naive_logprobs(std::vector<double>& logp, std::vector<double>& ent, const std::vector<float>& x,
                    const std::vector<int>& t, int N, int V) {
  logp.assign(N, 0);
  ent.assign(N, 0);
  for (int n = 0; n < N; ++n) {
    if (t[n] < 0) continue;
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(x[n * V + v]));
    logp[n] = std::log(std::exp(static_cast<double>(x[n * V + t[n]])) / z);
    for (int v = 0; v < V; ++v) {
      const double p = std::exp(static_cast<double>(x[n * V + v])) / z;
      ent[n] -= p * std::log(p);
    }
  }
}

std::vector<int> random_targets(int N, int V, uint32_t seed, bool with_skips) {
  std::mt19937 gen(seed);
  std::vector<int> t(N);
  for (int n = 0; n < N; ++n) t[n] = static_cast<int>(gen() % V);
  if (with_skips) t[N / 2] = -1;
  return t;
}

void check_forward(int N, int V) {
  auto x = random_vector<float>(static_cast<size_t>(N) * V, 1, -4, 4);
  auto t = random_targets(N, V, 2, true);
  std::vector<float> logp(N, 99), ent(N, 99);
  opd::cpu::logprobs_forward(logp.data(), ent.data(), x.data(), t.data(), N, V);
  std::vector<double> rl, re;
  naive_logprobs(rl, re, x, t, N, V);
  expect_close(logp, rl, 1e-5, 1e-5, "logp");
  expect_close(ent, re, 1e-5, 1e-5, "entropy");
  std::vector<float> logp2(N);
  opd::cpu::logprobs_forward(logp2.data(), static_cast<float*>(nullptr), x.data(), t.data(), N, V);
  EXPECT_EQ(logp2, logp);
}

TEST(Logprobs, ForwardSmall) { check_forward(7, 13); }
TEST(Logprobs, ForwardRealistic) { check_forward(64, 4099); }

TEST(Logprobs, ForwardStableForLargeLogits) {
  const int N = 3, V = 11;
  auto x = random_vector<float>(N * V, 3, -1, 1);
  auto shifted = x;
  for (auto& v : shifted) v += 1000.0f;  // exp would overflow without the max taken out
  std::vector<int> t = {0, 5, 10};
  std::vector<float> a(N), b(N), ea(N), eb(N);
  opd::cpu::logprobs_forward(a.data(), ea.data(), x.data(), t.data(), N, V);
  opd::cpu::logprobs_forward(b.data(), eb.data(), shifted.data(), t.data(), N, V);
  expect_close(b, a, 1e-4, 0, "shifted logp");
  expect_close(eb, ea, 1e-4, 0, "shifted entropy");
}

// A masked token (logit -inf) has no mass: the entropy is that of the other tokens, not NaN.
TEST(Logprobs, EntropyIgnoresMaskedTokens) {
  const std::vector<float> x = {0.5f, -INFINITY, -1.0f, 2.0f}, kept = {0.5f, -1.0f, 2.0f};
  const std::vector<int> t = {0};
  float lp = 0, ent = 0, lp_kept = 0, ent_kept = 0;
  opd::cpu::logprobs_forward(&lp, &ent, x.data(), t.data(), 1, 4);
  opd::cpu::logprobs_forward(&lp_kept, &ent_kept, kept.data(), t.data(), 1, 3);
  EXPECT_TRUE(std::isfinite(ent));
  EXPECT_NEAR(ent, ent_kept, 1e-6);
  EXPECT_NEAR(lp, lp_kept, 1e-6);
}

TEST(Logprobs, RejectsTargetOutOfRange) {
  std::vector<float> x(2 * 5, 0), logp(2);
  std::vector<int> t = {1, 5};
  EXPECT_THROW(opd::cpu::logprobs_forward(logp.data(), static_cast<float*>(nullptr), x.data(), t.data(), 2, 5),
               opd::Error);
}

// Backward against finite differences of sum(logp * R), and it accumulates into dlogits.
void check_backward_fd(int N, int V) {
  auto x = random_vector<double>(static_cast<size_t>(N) * V, 4, -3, 3);
  auto R = random_vector<double>(N, 5);
  auto t = random_targets(N, V, 6, true);
  auto loss = [&] {
    std::vector<double> logp(N);
    opd::cpu::logprobs_forward(logp.data(), static_cast<double*>(nullptr), x.data(), t.data(), N, V);
    double s = 0;
    for (int n = 0; n < N; ++n) s += logp[n] * R[n];
    return s;
  };
  auto fd = numeric_gradient(loss, x);
  const auto init = random_vector<double>(x.size(), 7);
  auto d = init;
  opd::cpu::logprobs_backward(d.data(), R.data(), x.data(), t.data(), N, V);
  for (size_t i = 0; i < d.size(); ++i) d[i] -= init[i];
  expect_close(d, fd, 1e-8, 1e-6, "dlogits");
  // The skipped row keeps exactly what it had.
  for (int v = 0; v < V; ++v) EXPECT_EQ(d[(N / 2) * V + v], 0.0);
}

TEST(Logprobs, BackwardMatchesFiniteDifferencesSmall) { check_backward_fd(7, 13); }
TEST(Logprobs, BackwardMatchesFiniteDifferencesWider) { check_backward_fd(5, 257); }

TEST(Logprobs, BackwardFloatMatchesNaive) {
  const int N = 33, V = 1031;
  auto x = random_vector<float>(static_cast<size_t>(N) * V, 8, -4, 4);
  auto g = random_vector<float>(N, 9);
  auto t = random_targets(N, V, 10, true);
  std::vector<float> d(x.size(), 0.5f);
  opd::cpu::logprobs_backward(d.data(), g.data(), x.data(), t.data(), N, V);
  std::vector<double> want(x.size(), 0.5);
  for (int n = 0; n < N; ++n) {
    if (t[n] < 0) continue;
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(x[n * V + v]));
    for (int v = 0; v < V; ++v)
      want[n * V + v] += g[n] * ((v == t[n]) - std::exp(static_cast<double>(x[n * V + v])) / z);
  }
  expect_close(d, want, 1e-6, 1e-5, "dlogits");
}

}  // namespace

namespace {

TEST(LogSoftmax, RowsMatchGatheredLogprobsExactly) {
  const int N = 6, V = 17;
  auto logits = opd::testing::random_vector<float>(size_t(N) * V, 41, -5.0, 5.0);
  std::vector<float> rows(size_t(N) * V);
  opd::cpu::log_softmax_forward(rows.data(), logits.data(), N, V);
  for (int v = 0; v < V; ++v) {
    std::vector<int> targets(N, v);
    std::vector<float> logp(N);
    opd::cpu::logprobs_forward(logp.data(), static_cast<float*>(nullptr), logits.data(), targets.data(), N, V);
    for (int n = 0; n < N; ++n) EXPECT_EQ(rows[size_t(n) * V + v], logp[n]);  // bit for bit: one formula
  }
  for (int n = 0; n < N; ++n) {
    double total = 0;
    for (int v = 0; v < V; ++v) total += std::exp(double(rows[size_t(n) * V + v]));
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
}

TEST(TopkLogprobs, TopKPlusSampledToken) {
  const int V = 6, K = 2;
  // Row 0: sampled token inside the top 2; row 1: outside; row 2: no sampled token (skipped).
  std::vector<float> logits = {0, 5, 1, 4, 2, 3,  0, 5, 1, 4, 2, 3,  1, 1, 1, 1, 1, 1};
  std::vector<int> extra = {3, 0, -1}, ids(3 * (K + 1));
  std::vector<float> logp(3 * (K + 1));
  opd::cpu::topk_logprobs(ids.data(), logp.data(), logits.data(), extra.data(), true, 3, V, K);
  std::vector<float> rows(3 * V);
  opd::cpu::log_softmax_forward(rows.data(), logits.data(), 3, V);
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + 3), (std::vector<int>{1, 3, -1}));
  EXPECT_EQ(std::vector<int>(ids.begin() + 3, ids.begin() + 6), (std::vector<int>{1, 3, 0}));
  EXPECT_EQ(std::vector<int>(ids.begin() + 6, ids.end()), (std::vector<int>{-1, -1, -1}));
  EXPECT_EQ(logp[0], rows[1]);
  EXPECT_EQ(logp[1], rows[3]);
  EXPECT_EQ(logp[5], rows[V + 0]);
  // Ties go to the lower id.
  std::vector<int> no_extra = {-1};
  opd::cpu::topk_logprobs(ids.data(), logp.data(), logits.data() + 2 * V, no_extra.data(), false, 1, V, 3);
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + 4), (std::vector<int>{0, 1, 2, -1}));
}

}  // namespace
