#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/swiglu.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

TEST(Swiglu, ForwardMatchesNaive) {
  for (size_t n : {size_t(13), size_t(7 * 1031)}) {
    const auto gate = random_vector<float>(n, 1, -8.0, 8.0);
    const auto up = random_vector<float>(n, 2, -2.0, 2.0);
    std::vector<double> expected(n);
    for (size_t i = 0; i < n; ++i) {
      const double g = gate[i];
      expected[i] = g / (1.0 + std::exp(-g)) * up[i];
    }
    std::vector<float> out(n);
    opd::cpu::swiglu_forward(out.data(), gate.data(), up.data(), n);
    expect_close(out, expected, 1e-6, 1e-6, "out");
  }
}

TEST(Swiglu, ExtremeGatesStayFinite) {
  const std::vector<float> gate = {-1000.0f, -90.0f, 0.0f, 90.0f, 1000.0f}, up(5, 2.0f), dout(5, 1.0f);
  std::vector<float> out(5), dgate(5), dup(5);
  opd::cpu::swiglu_forward(out.data(), gate.data(), up.data(), 5);
  opd::cpu::swiglu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), 5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(std::isfinite(out[i]) && std::isfinite(dgate[i]) && std::isfinite(dup[i])) << "gate " << gate[i];
  }
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[4], 2000.0f);
  EXPECT_EQ(dgate[4], 2.0f);
}

TEST(Swiglu, BackwardMatchesFiniteDifferences) {
  const size_t n = 29;
  auto gate = random_vector<double>(n, 3, -6.0, 6.0);
  auto up = random_vector<double>(n, 4, -2.0, 2.0);
  const auto R = random_vector<double>(n, 5);
  std::vector<double> out(n);
  auto loss = [&] {
    opd::cpu::swiglu_forward(out.data(), gate.data(), up.data(), n);
    double l = 0;
    for (size_t i = 0; i < n; ++i) l += out[i] * R[i];
    return l;
  };
  const auto num_dgate = numeric_gradient(loss, gate);
  const auto num_dup = numeric_gradient(loss, up);
  std::vector<double> dgate(n, 7.0), dup(n, 7.0);  // overwritten, not accumulated
  opd::cpu::swiglu_backward(dgate.data(), dup.data(), R.data(), gate.data(), up.data(), n);
  expect_close(dgate, num_dgate, 1e-8, 1e-6, "dgate");
  expect_close(dup, num_dup, 1e-8, 1e-6, "dup");
}

TEST(Swiglu, BackwardMayOverwriteItsInputs) {
  const size_t n = 17;
  const auto gate = random_vector<float>(n, 6), up = random_vector<float>(n, 7), dout = random_vector<float>(n, 8);
  std::vector<float> dgate(n), dup(n);
  opd::cpu::swiglu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n);
  auto g = gate, u = up;
  opd::cpu::swiglu_backward(g.data(), u.data(), dout.data(), g.data(), u.data(), n);
  EXPECT_EQ(g, dgate);
  EXPECT_EQ(u, dup);
}
