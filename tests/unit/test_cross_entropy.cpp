// Fused cross-entropy against a naive loop and central finite differences.
#include <cmath>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/cross_entropy.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

namespace {

std::vector<int> targets_with_skip(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int> t(N);
  for (int n = 0; n < N; ++n) t[n] = static_cast<int>(gen() % V);
  t[N - 2] = -1;
  return t;
}

void check_against_naive(int N, int V) {
  auto x = random_vector<float>(static_cast<size_t>(N) * V, 11, -5, 5);
  auto t = targets_with_skip(N, V, 12);
  const float scale = 0.37f;
  std::vector<float> loss(N, 99), d(x.size(), 99);  // both must be overwritten
  opd::cpu::cross_entropy_forward_backward(loss.data(), d.data(), x.data(), t.data(), scale, N, V);
  std::vector<double> wl(N, 0), wd(x.size(), 0);
  for (int n = 0; n < N; ++n) {
    if (t[n] < 0) continue;
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(x[n * V + v]));
    wl[n] = std::log(z) - x[n * V + t[n]];
    for (int v = 0; v < V; ++v) wd[n * V + v] = scale * (std::exp(static_cast<double>(x[n * V + v])) / z - (v == t[n]));
  }
  expect_close(loss, wl, 1e-5, 1e-5, "losses");
  expect_close(d, wd, 1e-7, 1e-5, "dlogits");
  std::vector<float> loss2(N);
  opd::cpu::cross_entropy_forward_backward(loss2.data(), static_cast<float*>(nullptr), x.data(), t.data(), scale, N, V);
  EXPECT_EQ(loss2, loss);
}

TEST(CrossEntropy, MatchesNaiveSmall) { check_against_naive(7, 13); }
TEST(CrossEntropy, MatchesNaiveRealistic) { check_against_naive(48, 5003); }

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const int N = 7, V = 13;
  auto x = random_vector<double>(N * V, 13, -3, 3);
  auto t = targets_with_skip(N, V, 14);
  const double scale = 1.0 / 6;
  auto loss = [&] {
    std::vector<double> l(N);
    opd::cpu::cross_entropy_forward_backward(l.data(), static_cast<double*>(nullptr), x.data(), t.data(), scale, N,
                                             V);
    double s = 0;
    for (double v : l) s += scale * v;
    return s;
  };
  auto fd = numeric_gradient(loss, x);
  std::vector<double> l(N), d(x.size());
  opd::cpu::cross_entropy_forward_backward(l.data(), d.data(), x.data(), t.data(), scale, N, V);
  expect_close(d, fd, 1e-8, 1e-6, "dlogits");
}

TEST(CrossEntropy, StableForLargeLogits) {
  const int N = 2, V = 9;
  std::vector<float> x(N * V, 3000.0f);
  x[4] = 3002.0f;
  std::vector<int> t = {4, 0};
  std::vector<float> l(N), d(N * V);
  opd::cpu::cross_entropy_forward_backward(l.data(), d.data(), x.data(), t.data(), 1.0f, N, V);
  const double z0 = 8 + std::exp(2.0);
  EXPECT_NEAR(l[0], std::log(z0) - 2, 1e-5);
  EXPECT_NEAR(l[1], std::log(9.0), 1e-5);
  for (float v : d) EXPECT_TRUE(std::isfinite(v));
}

TEST(CrossEntropy, RejectsTargetOutOfRange) {
  std::vector<float> x(5, 0), l(1);
  std::vector<int> t = {7};
  EXPECT_THROW(opd::cpu::cross_entropy_forward_backward(l.data(), static_cast<float*>(nullptr), x.data(), t.data(),
                                                        1.0f, 1, 5),
               opd::Error);
}

}  // namespace
