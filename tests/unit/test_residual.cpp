#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"
#include "kernels/cpu/residual.h"

using opd::testing::random_vector;

// Sizes below and above the OpenMP threshold; every element is one float add, so exact.
TEST(Residual, ForwardIsTheElementwiseSum) {
  for (size_t n : {size_t(0), size_t(13), size_t(70001)}) {
    const auto x = random_vector<float>(n, 1), y = random_vector<float>(n, 2);
    std::vector<float> out(n, -7.0f);
    opd::cpu::residual_forward(out.data(), x.data(), y.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], x[i] + y[i]) << "n=" << n << " i=" << i;
  }
}

TEST(Residual, OutputMayAliasAnInput) {
  const size_t n = 40000;
  const auto x = random_vector<float>(n, 3), y = random_vector<float>(n, 4);
  auto in_place_x = x, in_place_y = y;
  opd::cpu::residual_forward(in_place_x.data(), in_place_x.data(), y.data(), n);
  opd::cpu::residual_forward(in_place_y.data(), x.data(), in_place_y.data(), n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(in_place_x[i], x[i] + y[i]) << i;
    ASSERT_EQ(in_place_y[i], x[i] + y[i]) << i;
  }
}
