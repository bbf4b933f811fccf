// AdamW update and the gradient sum of squares.
#include <omp.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/adamw.h"

using opd::testing::expect_close;
using opd::testing::random_vector;

namespace {

// t = 1 from zero moments: m_hat = g, v_hat = g^2, so the step is lr * (g / (|g| + eps) + wd * p).
TEST(AdamW, OneStepByHand) {
  std::vector<float> p = {1.0f, -2.0f}, g = {0.5f, -0.25f}, m(2, 0), v(2, 0);
  opd::cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), nullptr, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1,
                         1.0f);
  EXPECT_NEAR(p[0], 1.0 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.01 * 1.0), 1e-6);  // 0.899
  EXPECT_NEAR(p[1], -2.0 - 0.1 * (-0.25 / (0.25 + 1e-8) + 0.01 * -2.0), 1e-6);  // -1.898
  EXPECT_NEAR(m[0], 0.05, 1e-7);
  // 1 - 0.999f is 1e-3 only to float precision.
  EXPECT_NEAR(v[0], 0.00025, 0.00025 * 1e-4);
  EXPECT_NEAR(m[1], -0.025, 1e-7);
  EXPECT_NEAR(v[1], 0.0000625, 0.0000625 * 1e-4);
}

// Several steps against a double-precision loop, exercising the bias correction at t > 1.
TEST(AdamW, MatchesNaiveOverSteps) {
  const size_t n = 1031;
  const float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.7f;
  auto p = random_vector<float>(n, 60);
  std::vector<float> m(n, 0), v(n, 0);
  std::vector<double> pd(p.begin(), p.end()), md(n, 0), vd(n, 0);
  std::vector<unsigned char> mask(n);
  for (size_t i = 0; i < n; ++i) mask[i] = i % 3 != 0;
  for (int t = 1; t <= 5; ++t) {
    auto g = random_vector<float>(n, 61 + t);
    opd::cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), mask.data(), n, lr, b1, b2, eps, wd, t, gs);
    for (size_t i = 0; i < n; ++i) {
      const double gi = static_cast<double>(g[i]) * gs;
      md[i] = b1 * md[i] + (1 - b1) * gi;
      vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
      const double mh = md[i] / (1 - std::pow(static_cast<double>(b1), t));
      const double vh = vd[i] / (1 - std::pow(static_cast<double>(b2), t));
      pd[i] -= lr * (mh / (std::sqrt(vh) + eps) + (mask[i] ? wd : 0.0) * pd[i]);
    }
  }
  expect_close(p, pd, 1e-6, 1e-5, "params");
  expect_close(m, md, 1e-7, 1e-5, "m");
  expect_close(v, vd, 1e-9, 1e-5, "v");
}

// grad_scale multiplies the gradient before anything else: the same as pre-scaled gradients.
TEST(AdamW, GradScaleIsAppliedFirst) {
  const size_t n = 257;
  const float s = 0.125f;  // a power of two, so pre-scaling is exact
  auto p1 = random_vector<float>(n, 70), g = random_vector<float>(n, 71);
  auto p2 = p1;
  std::vector<float> gs(n), m1(n, 0), v1(n, 0), m2(n, 0), v2(n, 0);
  for (size_t i = 0; i < n; ++i) gs[i] = g[i] * s;
  opd::cpu::adamw_update(p1.data(), g.data(), m1.data(), v1.data(), nullptr, n, 1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f, 1,
                         s);
  opd::cpu::adamw_update(p2.data(), gs.data(), m2.data(), v2.data(), nullptr, n, 1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f, 1,
                         1.0f);
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(m1, m2);
  EXPECT_EQ(v1, v2);
  for (size_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(m1[i], 0.1f * g[i] * s);
}

// With zero gradients only weight decay moves a parameter, and only where the mask says so.
TEST(AdamW, DecayMaskRespected) {
  const size_t n = 10;
  std::vector<float> p(n, 2.0f), g(n, 0.0f), m(n, 0), v(n, 0);
  std::vector<unsigned char> mask = {1, 0, 1, 1, 0, 0, 1, 0, 1, 0};
  opd::cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), mask.data(), n, 0.5f, 0.9f, 0.999f, 1e-8f, 0.1f, 1,
                         1.0f);
  for (size_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(p[i], mask[i] ? 2.0f * (1 - 0.5f * 0.1f) : 2.0f) << i;
  std::vector<float> q(n, 2.0f);
  opd::cpu::adamw_update(q.data(), g.data(), m.data(), v.data(), nullptr, n, 0.5f, 0.9f, 0.999f, 1e-8f, 0.1f, 2,
                         1.0f);
  for (float x : q) EXPECT_FLOAT_EQ(x, 2.0f * (1 - 0.5f * 0.1f));
}

TEST(AdamW, RejectsStepZero) {
  float p = 0, g = 0, m = 0, v = 0;
  EXPECT_THROW(opd::cpu::adamw_update(&p, &g, &m, &v, nullptr, 1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0, 1.0f),
               opd::Error);
}

TEST(AdamW, GradSumsqMatchesNaive) {
  for (size_t n : {size_t(0), size_t(1), size_t(13), size_t(65536 * 2 + 77)}) {
    auto g = random_vector<float>(n, 80, -3, 3);
    double want = 0;
    for (float x : g) want += static_cast<double>(x) * x;
    EXPECT_NEAR(opd::cpu::grad_sumsq(g.data(), n), want, 1e-12 * (1 + want)) << "n = " << n;
  }
}

TEST(AdamW, GradSumsqSameBitsForAnyThreadCount) {
  const size_t n = 65536 * 5 + 123;
  auto g = random_vector<float>(n, 81, -1e3, 1e3);
  for (size_t i = 0; i < n; i += 97) g[i] *= 1e-6f;  // mixed magnitudes, so the order would show
  const int threads = omp_get_max_threads();
  std::vector<double> got;
  for (int t : {1, 2, 3, 7}) {
    omp_set_num_threads(t);
    got.push_back(opd::cpu::grad_sumsq(g.data(), n));
  }
  omp_set_num_threads(threads);
  for (size_t k = 1; k < got.size(); ++k) EXPECT_EQ(got[k], got[0]);
}

}  // namespace

#include "train/optimizer.h"

namespace {

// wsd: warm-up, the peak, then a linear decay to lr * min_lr_ratio over the last decay_steps.
TEST(LrSchedule, WarmupStableDecay) {
  opd::OptimizerOptions o;
  o.lr = 1.0;
  o.schedule = "wsd";
  o.warmup_steps = 10;
  o.total_steps = 100;
  o.decay_steps = 20;
  o.min_lr_ratio = 0.0;
  EXPECT_DOUBLE_EQ(opd::scheduled_lr(o, 5), 0.5);
  EXPECT_DOUBLE_EQ(opd::scheduled_lr(o, 50), 1.0);
  EXPECT_DOUBLE_EQ(opd::scheduled_lr(o, 80), 1.0);
  EXPECT_DOUBLE_EQ(opd::scheduled_lr(o, 90), 0.5);
  EXPECT_DOUBLE_EQ(opd::scheduled_lr(o, 100), 0.0);
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(opd::scheduled_lr(o, 100), 0.1);
  // A cool-down from a resumed constant run: the same lr as the constant run up to its start.
  opd::OptimizerOptions constant = o;
  constant.schedule = "constant";
  for (int s = 1; s <= 80; ++s) EXPECT_DOUBLE_EQ(opd::scheduled_lr(o, s), opd::scheduled_lr(constant, s));
  EXPECT_NO_THROW(opd::check_schedule(o));
  o.decay_steps = 0;
  EXPECT_THROW(opd::check_schedule(o), opd::Error);
  o.decay_steps = 101;
  EXPECT_THROW(opd::check_schedule(o), opd::Error);
  o.schedule = "linear";
  EXPECT_THROW(opd::check_schedule(o), opd::Error);
}

}  // namespace
