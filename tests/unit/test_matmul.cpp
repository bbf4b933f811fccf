#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/matmul.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

extern "C" int openblas_get_num_threads();

namespace {

// out[n, m] = sum_k inp[n, k] * weight[m, k], in double.
std::vector<double> naive_matmul(const std::vector<float>& inp, const std::vector<float>& weight, int N, int K,
                                 int M) {
  std::vector<double> out(size_t(N) * M, 0.0);
  for (int n = 0; n < N; ++n)
    for (int m = 0; m < M; ++m) {
      double acc = 0;
      for (int k = 0; k < K; ++k) acc += double(inp[size_t(n) * K + k]) * weight[size_t(m) * K + k];
      out[size_t(n) * M + m] = acc;
    }
  return out;
}

const std::tuple<int, int, int> kShapes[] = {{7, 13, 5}, {1, 3, 1}, {64, 256, 384}};

}  // namespace

TEST(Matmul, ForwardMatchesNaive) {
  for (auto [N, K, M] : kShapes) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K << " M=" << M);
    const auto inp = random_vector<float>(size_t(N) * K, 1);
    const auto weight = random_vector<float>(size_t(M) * K, 2);
    std::vector<float> out(size_t(N) * M, 123.0f);  // garbage that must be overwritten
    opd::cpu::matmul_forward(out.data(), inp.data(), weight.data(), N, K, M);
    expect_close(out, naive_matmul(inp, weight, N, K, M), 1e-5, 1e-5, "out");
  }
}

TEST(Matmul, ForwardAccumulateAddsToOut) {
  for (auto [N, K, M] : kShapes) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K << " M=" << M);
    const auto inp = random_vector<float>(size_t(N) * K, 3);
    const auto weight = random_vector<float>(size_t(M) * K, 4);
    const auto out0 = random_vector<float>(size_t(N) * M, 5);
    auto expected = naive_matmul(inp, weight, N, K, M);
    for (size_t i = 0; i < expected.size(); ++i) expected[i] += out0[i];
    auto out = out0;
    opd::cpu::matmul_forward(out.data(), inp.data(), weight.data(), N, K, M, /*accumulate=*/true);
    expect_close(out, expected, 1e-5, 1e-5, "out");
  }
}

TEST(Matmul, BackwardMatchesFiniteDifferences) {
  for (auto [N, K, M] : {std::tuple{7, 13, 5}, std::tuple{3, 4, 11}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K << " M=" << M);
    auto inp = random_vector<double>(size_t(N) * K, 6);
    auto weight = random_vector<double>(size_t(M) * K, 7);
    const auto R = random_vector<double>(size_t(N) * M, 8);
    std::vector<double> out(size_t(N) * M);
    auto loss = [&] {
      opd::cpu::matmul_forward(out.data(), inp.data(), weight.data(), N, K, M);
      double l = 0;
      for (size_t i = 0; i < out.size(); ++i) l += out[i] * R[i];
      return l;
    };
    const auto num_dinp = numeric_gradient(loss, inp);
    const auto num_dweight = numeric_gradient(loss, weight);
    // Both gradients accumulate: start from nonzero values and subtract them again.
    const auto dinp0 = random_vector<double>(inp.size(), 9), dweight0 = random_vector<double>(weight.size(), 10);
    auto dinp = dinp0, dweight = dweight0;
    opd::cpu::matmul_backward(dinp.data(), dweight.data(), R.data(), inp.data(), weight.data(), N, K, M);
    for (size_t i = 0; i < dinp.size(); ++i) dinp[i] -= dinp0[i];
    for (size_t i = 0; i < dweight.size(); ++i) dweight[i] -= dweight0[i];
    expect_close(dinp, num_dinp, 1e-8, 1e-6, "dinp");
    expect_close(dweight, num_dweight, 1e-8, 1e-6, "dweight");
  }
}

TEST(Matmul, BackwardWithoutInputGradient) {
  const int N = 5, K = 6, M = 7;
  const auto inp = random_vector<float>(size_t(N) * K, 11);
  const auto weight = random_vector<float>(size_t(M) * K, 12);
  const auto dout = random_vector<float>(size_t(N) * M, 13);
  std::vector<float> dweight(weight.size(), 0.0f), dinp(inp.size(), 0.0f), dweight_too(weight.size(), 0.0f);
  opd::cpu::matmul_backward<float>(nullptr, dweight.data(), dout.data(), inp.data(), weight.data(), N, K, M);
  opd::cpu::matmul_backward(dinp.data(), dweight_too.data(), dout.data(), inp.data(), weight.data(), N, K, M);
  EXPECT_EQ(dweight, dweight_too);
  std::vector<double> expected(weight.size(), 0.0);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k)
      for (int n = 0; n < N; ++n) expected[size_t(m) * K + k] += double(dout[size_t(n) * M + m]) * inp[size_t(n) * K + k];
  expect_close(dweight, expected, 1e-5, 1e-5, "dweight");
}

TEST(Matmul, EmptyInnerDimensionGivesZeros) {
  std::vector<float> out(6, 5.0f);
  opd::cpu::matmul_forward<float>(out.data(), nullptr, nullptr, 2, 0, 3);
  EXPECT_EQ(out, std::vector<float>(6, 0.0f));
}

TEST(Matmul, SetBlasThreads) {
  const int saved = openblas_get_num_threads();
  opd::cpu::set_blas_threads(1);
  const int N = 33, K = 65, M = 17;
  const auto inp = random_vector<float>(size_t(N) * K, 14);
  const auto weight = random_vector<float>(size_t(M) * K, 15);
  std::vector<float> out(size_t(N) * M);
  opd::cpu::matmul_forward(out.data(), inp.data(), weight.data(), N, K, M);
  expect_close(out, naive_matmul(inp, weight, N, K, M), 1e-5, 1e-5, "out");
  opd::cpu::set_blas_threads(saved);
  EXPECT_THROW(opd::cpu::set_blas_threads(0), opd::Error);
}
