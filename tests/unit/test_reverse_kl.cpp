// Reverse KL: sampled estimator, IS policy-gradient loss, full-vocabulary and top-K exact variants.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/logprobs.h"
#include "kernels/cpu/reverse_kl.h"
#include "kernels/cpu/sample.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

namespace {

template <typename T>
std::vector<T> log_softmax_rows(const std::vector<T>& x, int N, int V) {
  std::vector<T> out(x.size());
  for (int n = 0; n < N; ++n) {
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(x[n * V + v]));
    for (int v = 0; v < V; ++v) out[n * V + v] = static_cast<T>(x[n * V + v] - std::log(z));
  }
  return out;
}

TEST(ReverseKl, SampledIsDifference) {
  const std::vector<float> old = {-0.5f, -2.0f, -0.1f}, teacher = {-1.5f, -0.25f, -0.1f};
  std::vector<float> k(3);
  opd::cpu::reverse_kl_sampled(k.data(), old.data(), teacher.data(), 3);
  EXPECT_EQ(k, (std::vector<float>{1.0f, -1.75f, 0.0f}));
}

// A student scored by itself through the same op gets a sampled KL of exactly 0.
TEST(ReverseKl, SampledIsExactlyZeroForIdenticalTeacher) {
  const int N = 9, V = 101;
  auto x = random_vector<float>(N * V, 21, -6, 6);
  std::vector<int> t(N);
  for (int n = 0; n < N; ++n) t[n] = (n * 37) % V;
  std::vector<float> a(N), b(N), k(N);
  opd::cpu::logprobs_forward(a.data(), static_cast<float*>(nullptr), x.data(), t.data(), N, V);
  opd::cpu::logprobs_forward(b.data(), static_cast<float*>(nullptr), x.data(), t.data(), N, V);
  opd::cpu::reverse_kl_sampled(k.data(), a.data(), b.data(), N);
  for (float v : k) EXPECT_EQ(v, 0.0f);
}

TEST(ReverseKl, PolicyGradientLossMatchesNaiveAndFiniteDifferences) {
  const int N = 13;
  auto logp = random_vector<double>(N, 22, -3, 0), old = random_vector<double>(N, 23, -3, 0);
  auto adv = random_vector<double>(N, 24, -2, 2), w = random_vector<double>(N, 25, 0, 0.2);
  std::vector<double> loss(N), d(N);
  opd::cpu::policy_gradient_loss(loss.data(), d.data(), logp.data(), old.data(), adv.data(), w.data(), N);
  std::vector<double> want(N);
  for (int n = 0; n < N; ++n) want[n] = -adv[n] * std::exp(logp[n] - old[n]) * w[n];
  expect_close(loss, want, 1e-15, 1e-14, "loss");
  auto total = [&] {
    std::vector<double> l(N), g(N);
    opd::cpu::policy_gradient_loss(l.data(), g.data(), logp.data(), old.data(), adv.data(), w.data(), N);
    return std::accumulate(l.begin(), l.end(), 0.0);
  };
  expect_close(d, numeric_gradient(total, logp), 1e-9, 1e-6, "dlogp");
}

// On-policy (logp == logp_old) the loss is -adv * w: the ratio is exactly 1.
TEST(ReverseKl, PolicyGradientOnPolicyRatioIsOne) {
  const std::vector<float> logp = {-1.25f, -7.5f}, adv = {2.0f, -0.5f}, w = {0.25f, 0.25f};
  std::vector<float> loss(2), d(2);
  opd::cpu::policy_gradient_loss(loss.data(), d.data(), logp.data(), logp.data(), adv.data(), w.data(), 2);
  EXPECT_EQ(loss, (std::vector<float>{-0.5f, 0.125f}));
  EXPECT_EQ(d, loss);
}

void check_full_forward(int N, int V) {
  auto x = random_vector<float>(static_cast<size_t>(N) * V, 26, -4, 4);
  auto lt = log_softmax_rows(random_vector<float>(static_cast<size_t>(N) * V, 27, -4, 4), N, V);
  auto scale = random_vector<float>(N, 28, 0, 1);
  scale[0] = 0;
  std::vector<float> kl(N), d(x.size(), 99);
  opd::cpu::reverse_kl_full(kl.data(), d.data(), x.data(), lt.data(), scale.data(), N, V);
  std::vector<double> wkl(N, 0), wd(x.size());
  const auto ls = log_softmax_rows(std::vector<double>(x.begin(), x.end()), N, V);
  for (int n = 0; n < N; ++n) {
    for (int v = 0; v < V; ++v) wkl[n] += std::exp(ls[n * V + v]) * (ls[n * V + v] - lt[n * V + v]);
    for (int v = 0; v < V; ++v)
      wd[n * V + v] = scale[n] * std::exp(ls[n * V + v]) * ((ls[n * V + v] - lt[n * V + v]) - wkl[n]);
  }
  EXPECT_GT(wkl[0], 0.01);
  expect_close(kl, wkl, 1e-5, 1e-5, "kl");
  expect_close(d, wd, 1e-7, 1e-4, "dlogits");
  std::vector<float> kl2(N);
  opd::cpu::reverse_kl_full(kl2.data(), static_cast<float*>(nullptr), x.data(), lt.data(), scale.data(), N, V);
  EXPECT_EQ(kl2, kl);
}

TEST(ReverseKl, FullMatchesNaiveSmall) { check_full_forward(7, 13); }
TEST(ReverseKl, FullMatchesNaiveRealistic) { check_full_forward(32, 3001); }

TEST(ReverseKl, FullGradientMatchesFiniteDifferences) {
  const int N = 7, V = 13;
  auto x = random_vector<double>(N * V, 29, -3, 3);
  const auto lt = log_softmax_rows(random_vector<double>(N * V, 30, -3, 3), N, V);
  auto scale = random_vector<double>(N, 31, 0.1, 1);
  scale[2] = 0;
  auto loss = [&] {
    std::vector<double> kl(N);
    opd::cpu::reverse_kl_full(kl.data(), static_cast<double*>(nullptr), x.data(), lt.data(), scale.data(), N, V);
    double s = 0;
    for (int n = 0; n < N; ++n) s += scale[n] * kl[n];
    return s;
  };
  auto fd = numeric_gradient(loss, x);
  std::vector<double> kl(N), d(x.size());
  opd::cpu::reverse_kl_full(kl.data(), d.data(), x.data(), lt.data(), scale.data(), N, V);
  expect_close(d, fd, 1e-9, 1e-6, "dlogits");
}

TEST(ReverseKl, FullIsZeroForIdenticalTeacher) {
  const int N = 5, V = 257;
  auto x = random_vector<float>(N * V, 32, -8, 8);
  const auto lt = log_softmax_rows(x, N, V);
  std::vector<float> scale(N, 1.0f), kl(N), d(x.size(), 99);
  opd::cpu::reverse_kl_full(kl.data(), d.data(), x.data(), lt.data(), scale.data(), N, V);
  for (float v : kl) EXPECT_NEAR(v, 0.0f, 1e-6);
  for (float v : d) EXPECT_NEAR(v, 0.0f, 1e-7);
}

// With every token in S the renormalisation is a no-op and top-K is the full KL.
TEST(ReverseKl, TopKWithWholeVocabularyEqualsFull) {
  const int N = 6, V = 17;
  auto x = random_vector<double>(N * V, 33, -3, 3);
  const auto lt = log_softmax_rows(random_vector<double>(N * V, 34, -3, 3), N, V);
  auto scale = random_vector<double>(N, 35, 0, 1);
  std::vector<int> ids(N * V);
  std::vector<double> ltk(N * V);
  std::mt19937 gen(36);
  for (int n = 0; n < N; ++n) {
    std::iota(ids.begin() + n * V, ids.begin() + (n + 1) * V, 0);
    std::shuffle(ids.begin() + n * V, ids.begin() + (n + 1) * V, gen);
    for (int j = 0; j < V; ++j) ltk[n * V + j] = lt[n * V + ids[n * V + j]];
  }
  std::vector<double> kf(N), df(N * V), kk(N), dk(N * V, 99);
  opd::cpu::reverse_kl_full(kf.data(), df.data(), x.data(), lt.data(), scale.data(), N, V);
  opd::cpu::reverse_kl_topk(kk.data(), dk.data(), x.data(), ids.data(), ltk.data(), scale.data(), N, V, V);
  expect_close(kk, kf, 1e-14, 1e-12, "kl");
  expect_close(dk, df, 1e-14, 1e-12, "dlogits");
}

// A top-K problem: K1 = 5 of V = 13 per row, one entry absent (-1) in some rows.
struct TopK {
  int N = 7, V = 13, K1 = 5;
  std::vector<int> ids;
  std::vector<double> lt;
  TopK() {
    std::mt19937 gen(37);
    ids.resize(N * K1);
    for (int n = 0; n < N; ++n) {
      std::vector<int> perm(V);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), gen);
      for (int j = 0; j < K1; ++j) ids[n * K1 + j] = perm[j];
      if (n % 3 == 1) ids[n * K1 + (n % K1)] = -1;
    }
    lt = random_vector<double>(N * K1, 38, -6, -0.5);
  }
};

TEST(ReverseKl, TopKMatchesNaive) {
  TopK p;
  const int N = p.N, V = p.V, K1 = p.K1;
  auto x = random_vector<float>(N * V, 39, -3, 3);
  std::vector<float> ltf(p.lt.begin(), p.lt.end()), scale(N, 0.5f), kl(N), d(N * V, 99);
  opd::cpu::reverse_kl_topk(kl.data(), d.data(), x.data(), p.ids.data(), ltf.data(), scale.data(), N, V, K1);
  std::vector<double> wkl(N, 0), wd(N * V, 0);
  for (int n = 0; n < N; ++n) {
    double zs = 0, zt = 0;
    for (int j = 0; j < K1; ++j) {
      const int id = p.ids[n * K1 + j];
      if (id < 0) continue;
      zs += std::exp(static_cast<double>(x[n * V + id]));
      zt += std::exp(static_cast<double>(ltf[n * K1 + j]));
    }
    std::vector<double> qs(K1), lr(K1);
    for (int j = 0; j < K1; ++j) {
      const int id = p.ids[n * K1 + j];
      if (id < 0) continue;
      qs[j] = std::exp(static_cast<double>(x[n * V + id])) / zs;
      lr[j] = std::log(qs[j]) - std::log(std::exp(static_cast<double>(ltf[n * K1 + j])) / zt);
      wkl[n] += qs[j] * lr[j];
    }
    for (int j = 0; j < K1; ++j) {
      const int id = p.ids[n * K1 + j];
      if (id >= 0) wd[n * V + id] = scale[n] * qs[j] * (lr[j] - wkl[n]);
    }
  }
  expect_close(kl, wkl, 1e-6, 1e-5, "kl");
  expect_close(d, wd, 1e-7, 1e-5, "dlogits");
}

TEST(ReverseKl, TopKGradientMatchesFiniteDifferences) {
  TopK p;
  const int N = p.N, V = p.V, K1 = p.K1;
  auto x = random_vector<double>(N * V, 40, -3, 3);
  auto scale = random_vector<double>(N, 41, 0.1, 1);
  auto loss = [&] {
    std::vector<double> kl(N);
    opd::cpu::reverse_kl_topk(kl.data(), static_cast<double*>(nullptr), x.data(), p.ids.data(), p.lt.data(),
                              scale.data(), N, V, K1);
    double s = 0;
    for (int n = 0; n < N; ++n) s += scale[n] * kl[n];
    return s;
  };
  auto fd = numeric_gradient(loss, x);
  std::vector<double> kl(N), d(N * V);
  opd::cpu::reverse_kl_topk(kl.data(), d.data(), x.data(), p.ids.data(), p.lt.data(), scale.data(), N, V, K1);
  expect_close(d, fd, 1e-9, 1e-6, "dlogits");
}

TEST(ReverseKl, TopKEmptyRowIsZero) {
  const int V = 4, K1 = 2;
  std::vector<float> x = {1, 2, 3, 4}, lt = {-1, -2}, scale = {1}, kl(1, 99), d(V, 99);
  std::vector<int> ids = {-1, -1};
  opd::cpu::reverse_kl_topk(kl.data(), d.data(), x.data(), ids.data(), lt.data(), scale.data(), 1, V, K1);
  EXPECT_EQ(kl[0], 0.0f);
  for (float v : d) EXPECT_EQ(v, 0.0f);
}

TEST(ReverseKl, TopKRejectsBadIds) {
  std::vector<float> x(2 * 6, 0), lt(2 * 3, -1), scale(2, 1), kl(2);
  std::vector<int> dup = {0, 1, 2, 3, 4, 3}, big = {0, 1, 2, 3, 6, 5};
  EXPECT_THROW(opd::cpu::reverse_kl_topk(kl.data(), static_cast<float*>(nullptr), x.data(), dup.data(), lt.data(),
                                         scale.data(), 2, 6, 3),
               opd::Error);
  EXPECT_THROW(opd::cpu::reverse_kl_topk(kl.data(), static_cast<float*>(nullptr), x.data(), big.data(), lt.data(),
                                         scale.data(), 2, 6, 3),
               opd::Error);
}

// E_{x ~ p_s}[log p_s(x) - log p_t(x)] is the exact KL: draw tokens with sample_tokens, average the
// sampled estimator, compare with reverse_kl_full within 4 standard errors.
TEST(ReverseKl, SampledEstimatorIsUnbiased) {
  const int V = 5, M = 40000;
  const std::vector<float> student = {1.0f, 0.2f, -0.5f, 2.0f, -1.0f}, teacher = {0.0f, 1.5f, -0.2f, 1.0f, 0.5f};
  std::vector<float> xs(static_cast<size_t>(M) * V), xt(static_cast<size_t>(M) * V);
  std::vector<uint32_t> seq(M), pos(M, 3);
  for (int n = 0; n < M; ++n) {
    std::copy(student.begin(), student.end(), xs.begin() + static_cast<size_t>(n) * V);
    std::copy(teacher.begin(), teacher.end(), xt.begin() + static_cast<size_t>(n) * V);
    seq[n] = static_cast<uint32_t>(n);
  }
  opd::cpu::SampleParams sp;
  sp.seed = 1234;
  sp.step = 5;
  std::vector<int> tok(M);
  opd::cpu::sample_tokens(tok.data(), xs.data(), seq.data(), pos.data(), M, V, sp);
  std::vector<float> ls(M), lt(M), k(M);
  opd::cpu::logprobs_forward(ls.data(), static_cast<float*>(nullptr), xs.data(), tok.data(), M, V);
  opd::cpu::logprobs_forward(lt.data(), static_cast<float*>(nullptr), xt.data(), tok.data(), M, V);
  opd::cpu::reverse_kl_sampled(k.data(), ls.data(), lt.data(), M);
  double mean = 0, sq = 0;
  for (float v : k) mean += v;
  mean /= M;
  for (float v : k) sq += (v - mean) * (v - mean);
  const double se = std::sqrt(sq / (M - 1) / M);

  std::vector<double> xd(student.begin(), student.end());
  const auto ltd = log_softmax_rows(std::vector<double>(teacher.begin(), teacher.end()), 1, V);
  double exact = 0, one = 1;
  opd::cpu::reverse_kl_full(&exact, static_cast<double*>(nullptr), xd.data(), ltd.data(), &one, 1, V);
  EXPECT_GT(exact, 0.1);
  EXPECT_NEAR(mean, exact, 4 * se) << "standard error " << se;
}

}  // namespace
