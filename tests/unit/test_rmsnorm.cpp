#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/rmsnorm.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

namespace {

constexpr float kEps = 1e-6f;

struct ThreadCount {
  int saved = omp_get_max_threads();
  ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

TEST(RmsNorm, ForwardMatchesNaive) {
  for (auto [N, C] : {std::pair{7, 13}, std::pair{1, 1}, std::pair{64, 1024}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " C=" << C);
    const auto x = random_vector<float>(size_t(N) * C, 1, -2.0, 2.0);
    const auto w = random_vector<float>(C, 2, 0.5, 1.5);
    std::vector<double> expected(x.size()), expected_rstd(N);
    for (int n = 0; n < N; ++n) {
      double ss = 0;
      for (int c = 0; c < C; ++c) ss += double(x[size_t(n) * C + c]) * x[size_t(n) * C + c];
      expected_rstd[n] = 1.0 / std::sqrt(ss / C + kEps);
      for (int c = 0; c < C; ++c) expected[size_t(n) * C + c] = w[c] * x[size_t(n) * C + c] * expected_rstd[n];
    }
    std::vector<float> out(x.size()), rstd(N);
    opd::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, kEps);
    expect_close(out, expected, 1e-6, 1e-5, "out");
    expect_close(rstd, expected_rstd, 0.0, 1e-5, "rstd");
  }
}

TEST(RmsNorm, EpsilonMattersForTinyRows) {
  const int C = 5;
  const std::vector<float> x(C, 0.0f), w(C, 1.0f);
  std::vector<float> out(C), rstd(1);
  opd::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), 1, C, 1e-2f);
  EXPECT_NEAR(rstd[0], 10.0f, 1e-5f);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

// Loss sum(out * R); the backward of that is rmsnorm_backward with dout = R.
TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  for (auto [N, C] : {std::pair{7, 13}, std::pair{3, 64}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " C=" << C);
    auto x = random_vector<double>(size_t(N) * C, 3, -2.0, 2.0);
    auto w = random_vector<double>(C, 4, 0.5, 1.5);
    const auto R = random_vector<double>(size_t(N) * C, 5);
    std::vector<double> out(x.size()), rstd(N);
    auto loss = [&] {
      opd::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, kEps);
      double l = 0;
      for (size_t i = 0; i < out.size(); ++i) l += out[i] * R[i];
      return l;
    };
    const auto num_dx = numeric_gradient(loss, x);
    const auto num_dw = numeric_gradient(loss, w);
    loss();
    // Start from nonzero gradients: the op must add to them.
    const auto dx0 = random_vector<double>(x.size(), 6), dw0 = random_vector<double>(C, 7);
    auto dx = dx0, dw = dw0;
    opd::cpu::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
    for (size_t i = 0; i < dx.size(); ++i) dx[i] -= dx0[i];
    for (int c = 0; c < C; ++c) dw[c] -= dw0[c];
    expect_close(dx, num_dx, 1e-8, 1e-6, "dx");
    expect_close(dw, num_dw, 1e-8, 1e-6, "dw");
  }
}

TEST(RmsNorm, BackwardIsIndependentOfThreadCount) {
  ThreadCount restore;
  const int N = 257, C = 300;
  const auto x = random_vector<float>(size_t(N) * C, 8);
  const auto w = random_vector<float>(C, 9);
  const auto dout = random_vector<float>(size_t(N) * C, 10);
  std::vector<float> out(x.size()), rstd(N);
  opd::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, kEps);
  std::vector<float> first_dx, first_dw;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> dx(x.size(), 0.0f), dw(C, 0.0f);
    opd::cpu::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
    if (first_dx.empty()) first_dx = dx, first_dw = dw;
    EXPECT_EQ(dx, first_dx) << threads << " threads";
    EXPECT_EQ(dw, first_dw) << threads << " threads";
  }
}
