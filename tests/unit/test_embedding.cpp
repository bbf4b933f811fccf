#include <gtest/gtest.h>
#include <omp.h>

#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/embedding.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

namespace {

// Tokens with repeats, so the backward scatter has to add several rows into one.
std::vector<int> random_tokens(int N, int V, uint32_t seed) {
  std::vector<int> t(N);
  const auto u = random_vector<double>(N, seed, 0.0, 1.0);
  for (int n = 0; n < N; ++n) t[n] = std::min(V - 1, int(u[n] * V));
  t[N - 1] = t[0];
  return t;
}

struct ThreadCount {
  int saved = omp_get_max_threads();
  ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

TEST(Embedding, ForwardMatchesNaive) {
  for (auto [N, V, C] : {std::tuple{7, 5, 13}, std::tuple{100, 311, 256}}) {
    const auto tokens = random_tokens(N, V, 1);
    const auto table = random_vector<float>(size_t(V) * C, 2);
    std::vector<float> out(size_t(N) * C, -1.0f), expected(out.size());
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c) expected[size_t(n) * C + c] = table[size_t(tokens[n]) * C + c];
    opd::cpu::embedding_forward(out.data(), tokens.data(), table.data(), N, C);
    EXPECT_EQ(out, expected);
  }
}

TEST(Embedding, BackwardMatchesNaiveAndAccumulates) {
  for (auto [N, V, C] : {std::tuple{7, 5, 13}, std::tuple{100, 311, 256}}) {
    const auto tokens = random_tokens(N, V, 3);
    const auto dout = random_vector<float>(size_t(N) * C, 4);
    auto dtable = random_vector<float>(size_t(V) * C, 5);
    auto expected = dtable;
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c) expected[size_t(tokens[n]) * C + c] += dout[size_t(n) * C + c];
    opd::cpu::embedding_backward(dtable.data(), dout.data(), tokens.data(), N, V, C);
    EXPECT_EQ(dtable, expected);  // same summation order as the loop above: bit-identical
  }
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  const int N = 9, V = 6, C = 7;
  const auto tokens = random_tokens(N, V, 6);
  auto table = random_vector<double>(size_t(V) * C, 7);
  const auto R = random_vector<double>(size_t(N) * C, 8);
  std::vector<double> out(size_t(N) * C);
  auto loss = [&] {
    opd::cpu::embedding_forward(out.data(), tokens.data(), table.data(), N, C);
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += out[i] * R[i];
    return l;
  };
  const auto expected = numeric_gradient(loss, table);
  std::vector<double> dtable(table.size(), 0.0);
  opd::cpu::embedding_backward(dtable.data(), R.data(), tokens.data(), N, V, C);
  expect_close(dtable, expected, 1e-8, 1e-6, "dtable");
}

TEST(Embedding, BackwardIsIndependentOfThreadCount) {
  ThreadCount restore;
  const int N = 300, V = 17, C = 200;  // few tokens, many repeats
  const auto tokens = random_tokens(N, V, 9);
  const auto dout = random_vector<float>(size_t(N) * C, 10);
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> dtable(size_t(V) * C, 0.0f);
    opd::cpu::embedding_backward(dtable.data(), dout.data(), tokens.data(), N, V, C);
    if (first.empty()) first = dtable;
    EXPECT_EQ(dtable, first) << threads << " threads";
  }
}

TEST(Embedding, BackwardRejectsTokenOutsideVocabulary) {
  const int N = 3, V = 4, C = 2;
  std::vector<float> dtable(size_t(V) * C), dout(size_t(N) * C);
  for (int bad : {-1, V}) {
    const std::vector<int> tokens = {0, bad, 1};
    EXPECT_THROW(opd::cpu::embedding_backward(dtable.data(), dout.data(), tokens.data(), N, V, C), opd::Error);
  }
}
