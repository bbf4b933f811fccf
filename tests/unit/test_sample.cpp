// sample_tokens: frequencies against softmax, greedy, top-k, top-p, and keying by (seed, step, seq, pos).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/sample.h"

using opd::cpu::SampleParams;
using opd::cpu::sample_tokens;

namespace {

// M rows holding the same logits, sequence ids 0..M-1, all at position 0.
struct Repeated {
  int M, V;
  std::vector<float> x;
  std::vector<uint32_t> seq, pos;
  Repeated(const std::vector<float>& row, int M_) : M(M_), V(static_cast<int>(row.size())) {
    x.resize(static_cast<size_t>(M) * V);
    for (int n = 0; n < M; ++n) std::copy(row.begin(), row.end(), x.begin() + static_cast<size_t>(n) * V);
    seq.resize(M);
    std::iota(seq.begin(), seq.end(), 0u);
    pos.assign(M, 0);
  }
  std::vector<int> counts(const SampleParams& p) const {
    std::vector<int> tok(M), c(V, 0);
    sample_tokens(tok.data(), x.data(), seq.data(), pos.data(), M, V, p);
    for (int t : tok) {
      EXPECT_GE(t, 0);
      EXPECT_LT(t, V);
      if (t >= 0 && t < V) ++c[t];
    }
    return c;
  }
};

std::vector<double> softmax(const std::vector<float>& x, double temperature) {
  std::vector<double> p(x.size());
  double z = 0;
  for (size_t v = 0; v < x.size(); ++v) z += p[v] = std::exp(x[v] / temperature);
  for (auto& q : p) q /= z;
  return p;
}

// Pearson chi-square of counts against probabilities; a token with probability 0 must never appear.
double chi_square(const std::vector<int>& counts, const std::vector<double>& prob, int M) {
  double chi2 = 0;
  for (size_t v = 0; v < prob.size(); ++v) {
    if (prob[v] == 0) {
      EXPECT_EQ(counts[v], 0) << "token " << v << " is outside the support";
      continue;
    }
    const double e = M * prob[v];
    chi2 += (counts[v] - e) * (counts[v] - e) / e;
  }
  return chi2;
}

const std::vector<float> kRow = {0.3f, -1.2f, 1.7f, 0.0f, 0.9f, -0.4f, 1.1f};  // V = 7, distinct

// Thresholds are the 99.99% quantiles of chi-square with V-1 (or support-1) degrees of freedom.
TEST(Sample, FrequenciesMatchSoftmax) {
  Repeated r(kRow, 60000);
  SampleParams p;
  p.seed = 7;
  EXPECT_LT(chi_square(r.counts(p), softmax(kRow, 1.0), r.M), 27.9);
}

TEST(Sample, TemperatureSharpens) {
  Repeated r(kRow, 60000);
  SampleParams p;
  p.seed = 8;
  p.temperature = 0.5f;
  EXPECT_LT(chi_square(r.counts(p), softmax(kRow, 0.5), r.M), 27.9);
  p.temperature = 2.0f;
  EXPECT_LT(chi_square(r.counts(p), softmax(kRow, 2.0), r.M), 27.9);
}

TEST(Sample, GreedyIsArgmaxLowestIdOnTies) {
  const int N = 3, V = 6;
  const std::vector<float> x = {0, 5, 1, 5, 2, 0,   // tie between 1 and 3
                                -1, -2, -3, -4, -0.5f, -9,
                                7, 7, 7, 7, 7, 7};
  std::vector<uint32_t> seq = {0, 1, 2}, pos = {0, 0, 0};
  std::vector<int> tok(N);
  SampleParams p;
  p.temperature = 0;
  sample_tokens(tok.data(), x.data(), seq.data(), pos.data(), N, V, p);
  EXPECT_EQ(tok, (std::vector<int>{1, 4, 0}));
  // top_k = 1 at any temperature is the same argmax, ties included.
  p.temperature = 1.3f;
  p.top_k = 1;
  std::vector<int> tk(N);
  sample_tokens(tk.data(), x.data(), seq.data(), pos.data(), N, V, p);
  EXPECT_EQ(tk, tok);
}

TEST(Sample, TopKOneEqualsGreedyOnRandomRows) {
  const int N = 37, V = 211;
  auto x = opd::testing::random_vector<float>(static_cast<size_t>(N) * V, 50, -3, 3);
  std::vector<uint32_t> seq(N), pos(N, 9);
  std::iota(seq.begin(), seq.end(), 100u);
  std::vector<int> greedy(N), topk(N);
  SampleParams p;
  p.temperature = 0;
  sample_tokens(greedy.data(), x.data(), seq.data(), pos.data(), N, V, p);
  p.temperature = 1;
  p.top_k = 1;
  sample_tokens(topk.data(), x.data(), seq.data(), pos.data(), N, V, p);
  EXPECT_EQ(topk, greedy);
}

TEST(Sample, TopKRestrictsAndRenormalises) {
  Repeated r(kRow, 40000);
  SampleParams p;
  p.seed = 9;
  p.top_k = 3;  // ids 2, 6, 4
  auto want = softmax(kRow, 1.0);
  double z = want[2] + want[6] + want[4];
  for (int v = 0; v < 7; ++v) want[v] = (v == 2 || v == 6 || v == 4) ? want[v] / z : 0;
  EXPECT_LT(chi_square(r.counts(p), want, r.M), 18.5);
}

TEST(Sample, TopPRestrictsToNucleus) {
  Repeated r(kRow, 40000);
  const auto full = softmax(kRow, 1.0);
  // Sorted: 2 (.384), 6 (.211), 4 (.172), 0 (.095), ...; top_p = 0.6 needs the first three.
  ASSERT_LT(full[2] + full[6], 0.6);
  ASSERT_GE(full[2] + full[6] + full[4], 0.6);
  SampleParams p;
  p.seed = 10;
  p.top_p = 0.6f;
  auto want = full;
  double z = full[2] + full[6] + full[4];
  for (int v = 0; v < 7; ++v) want[v] = (v == 2 || v == 6 || v == 4) ? full[v] / z : 0;
  EXPECT_LT(chi_square(r.counts(p), want, r.M), 18.5);
  // A tiny top_p still keeps the most likely token.
  p.top_p = 1e-6f;
  auto c = r.counts(p);
  EXPECT_EQ(c[2], r.M);
}

// top-p applies to the distribution that top-k left, renormalised.
TEST(Sample, TopKThenTopP) {
  Repeated r(kRow, 40000);
  const auto full = softmax(kRow, 1.0);
  SampleParams p;
  p.seed = 11;
  p.top_k = 3;
  p.top_p = 0.8f;  // of the top-3 mass: .384/.767 = .50, +.211 -> .78, + .172 -> 1: all three
  auto c = r.counts(p);
  EXPECT_GT(c[4], 0);
  p.top_p = 0.7f;  // .78 >= .7: ids 2 and 6 only
  c = r.counts(p);
  EXPECT_EQ(c[2] + c[6], r.M);
  EXPECT_NEAR(static_cast<double>(c[2]) / r.M, full[2] / (full[2] + full[6]), 0.02);
}

TEST(Sample, DrawDependsOnlyOnSeedStepSeqPos) {
  const int N = 50, V = 397;  // enough work to run the rows in parallel
  auto x = opd::testing::random_vector<float>(static_cast<size_t>(N) * V, 51, -1, 1);
  std::vector<uint32_t> seq(N), pos(N);
  for (int n = 0; n < N; ++n) {
    seq[n] = static_cast<uint32_t>(n / 5);
    pos[n] = static_cast<uint32_t>(10 + n % 5);
  }
  SampleParams p;
  p.seed = 0xdeadbeefcafeull;
  p.step = 3;
  p.top_p = 0.95f;
  std::vector<int> tok(N);
  sample_tokens(tok.data(), x.data(), seq.data(), pos.data(), N, V, p);

  // Reversed batch, and a single row on its own: same tokens for the same keys.
  std::vector<float> xr(x.size());
  std::vector<uint32_t> sr(N), pr(N);
  for (int n = 0; n < N; ++n) {
    const int m = N - 1 - n;
    std::copy(x.begin() + m * V, x.begin() + (m + 1) * V, xr.begin() + n * V);
    sr[n] = seq[m];
    pr[n] = pos[m];
  }
  std::vector<int> tr(N);
  sample_tokens(tr.data(), xr.data(), sr.data(), pr.data(), N, V, p);
  for (int n = 0; n < N; ++n) EXPECT_EQ(tr[n], tok[N - 1 - n]) << "row " << n;
  for (int n : {0, 17, 49}) {
    int one = -1;
    sample_tokens(&one, x.data() + n * V, &seq[n], &pos[n], 1, V, p);
    EXPECT_EQ(one, tok[n]) << "row " << n;
  }
  // Same on one thread.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<int> t1(N);
  sample_tokens(t1.data(), x.data(), seq.data(), pos.data(), N, V, p);
  omp_set_num_threads(threads);
  EXPECT_EQ(t1, tok);
  // Another step draws differently.
  p.step = 4;
  std::vector<int> t4(N);
  sample_tokens(t4.data(), x.data(), seq.data(), pos.data(), N, V, p);
  EXPECT_NE(t4, tok);
}

TEST(Sample, RejectsBadParams) {
  std::vector<float> x(4, 0);
  uint32_t s = 0, q = 0;
  int tok;
  auto expect_error_naming = [&](SampleParams p, const std::string& field) {
    try {
      sample_tokens(&tok, x.data(), &s, &q, 1, 4, p);
      ADD_FAILURE() << "no error for bad " << field;
    } catch (const opd::Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  SampleParams p;
  p.temperature = -0.5f;
  expect_error_naming(p, "temperature");
  p = SampleParams{};
  p.top_p = 0;
  expect_error_naming(p, "top_p");
  p.top_p = 1.5f;
  expect_error_naming(p, "top_p");
  p = SampleParams{};
  p.top_k = -1;
  expect_error_naming(p, "top_k");
}

}  // namespace
