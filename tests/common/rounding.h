// Tolerances for results that another layout (tensor or data parallel) or another BLAS kernel path
// computes from the same inputs in another order, derived from fp32 arithmetic; and the bound on
// one AdamW update from the same state when the gradients differ within such a tolerance.
//
// u = 2^-24 is fp32's unit roundoff. The same n terms summed in two different orders differ by at
// most 2 γ(n) Σ|terms|, γ(n) = n u / (1 - n u) (Higham, Accuracy and Stability of Numerical
// Algorithms, 2nd ed., §3.1 and §4.2): the bound holds for every order, so for every GEMM kernel
// (blocking, FMA or not, vector width) and every split of a sum over ranks. A result at the end of
// a chain of such sums differs, to first order, by at most the sum of their bounds, each scaled
// by how much the rest of the chain amplifies it. The tests compare a tensor against its largest
// magnitude (`scale`), with the chain's depth counted along its longest path; their random models
// have no large cancellations (Σ|terms| stays of the order of the result), so depth x 2 γ(n_max)
// of the scale bounds the difference. Set OPD_SHOW_ROUNDING=1 to print, for every comparison,
// the measured difference against its tolerance.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cpu/adamw.h"

namespace opd::testing {

constexpr double kUnitRoundoff = 0x1p-24;

inline double gamma_n(int n) { return n * kUnitRoundoff / (1 - n * kUnitRoundoff); }

// Two summation orders of n terms: at most this fraction of Σ|terms| apart.
inline double reorder_bound(int n) { return 2 * gamma_n(n); }

// A chain of `depth` sums of at most n_max terms each.
inline double chain_tolerance(int depth, int n_max) { return depth * reorder_bound(n_max); }

inline void show_rounding(const std::string& what, double worst, double allowed) {
  if (std::getenv("OPD_SHOW_ROUNDING"))
    std::printf("[ rounding ] %-48s difference %.3g, tolerance %.3g (%.0fx margin)\n", what.c_str(), worst, allowed,
                worst > 0 ? allowed / worst : INFINITY);
}

// Every |a[i] - b[i]| within rel x the largest |b[i]|.
template <typename T>
void expect_close_to_scale(const std::vector<T>& a, const std::vector<T>& b, double rel, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  show_rounding(what, worst / scale, rel);
  EXPECT_LE(worst, rel * scale) << what << ": worst difference " << worst << " of scale " << scale;
}

// |a - b| within rel x scale, scale = |b| (b: the one-process value) unless given.
inline void expect_near_rel(double a, double b, double rel, const std::string& what, double scale = -1) {
  if (scale < 0) scale = std::abs(b);
  show_rounding(what, std::abs(a - b) / std::max(scale, 1e-300), rel);
  EXPECT_LE(std::abs(a - b), rel * scale) << what << ": " << a << " vs " << b << " (scale " << scale << ")";
}

// What one AdamW update starts from and applies (the optimizer's arguments to cpu::adamw_update).
struct AdamWState {
  std::vector<float> params, m, v;     // before the update
  std::vector<float> grads;            // as the optimizer gets them, before its scale
  std::vector<unsigned char> decay;    // 1 where weight decay applies
  float lr, beta1, beta2, eps, weight_decay;
  int t;                               // the update's 1-based count
  float scale;                         // what the optimizer multiplies the gradients by (clipping)
};

struct AdamWBounds {
  std::vector<double> params, m, v;
  size_t free = 0;  // parameters whose gradient is within eta of 0 at t = 1: any step in [-lr, lr]
};

// How far the state after one AdamW update (cpu::adamw_update, the optimizer's own kernel) can
// be from s's when the other side starts from the same params, m and v but its scaled gradient
// differs by at most eta[i]. The update is elementwise and smooth in the gradient, so the
// bound is its spread over g +- eta, taken at 9 points of that interval and doubled (for the
// curvature between them), plus 4 ulps for the rounding of the update itself. On the first update
// (m = v = 0) the step is lr g / (|g| + eps), about lr sign(g): a gradient within eta of 0 may
// step anywhere in [-lr, lr], so those parameters are only bounded by that.
// m moves by (1 - beta1) dg; v by (1 - beta2) |g'^2 - g^2| <= (1 - beta2) eta (2|g| + eta); each
// side rounds its float sums (beta m + (1 - beta) g: 2 roundings of terms, 1 of the sum) on top.
inline AdamWBounds adamw_bounds(const AdamWState& s, const std::vector<double>& eta) {
  AdamWBounds b;
  const size_t n = s.params.size();
  b.params.assign(n, 0.0);
  b.m.resize(n);
  b.v.resize(n);
  // The parameters after the update from gradient g + eta k / 4 (the kernel over all of them).
  const auto updated = [&](int k) {
    std::vector<float> p = s.params, m = s.m, v = s.v, g(n);
    for (size_t i = 0; i < n; ++i) g[i] = static_cast<float>(double(s.grads[i]) * s.scale + eta[i] * k / 4);
    cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), s.decay.data(), n, s.lr, s.beta1, s.beta2, s.eps,
                      s.weight_decay, s.t, 1.0f);
    return p;
  };
  const std::vector<float> p0 = updated(0);
  for (int k = -4; k <= 4; ++k) {
    if (k == 0) continue;
    const std::vector<float> pk = updated(k);
    for (size_t i = 0; i < n; ++i) b.params[i] = std::max(b.params[i], std::abs(double(pk[i]) - double(p0[i])));
  }
  for (size_t i = 0; i < n; ++i) {
    const double g = double(s.grads[i]) * s.scale;
    const double ulp = std::max(std::abs(double(p0[i])), double(s.lr)) * kUnitRoundoff * 2;
    b.params[i] = 2 * b.params[i] + 4 * ulp;
    b.free += s.t == 1 && std::abs(g) < eta[i];
    // Plus the rounding of both sides' float arithmetic: 2 u of each term and of the sum, per side.
    const double m_terms = s.beta1 * std::abs(s.m[i]) + (1 - s.beta1) * std::abs(g);
    const double v_terms = s.beta2 * s.v[i] + (1 - s.beta2) * g * g;
    b.m[i] = (1 - s.beta1) * eta[i] + 8 * m_terms * kUnitRoundoff;
    b.v[i] = (1 - s.beta2) * eta[i] * (2 * std::abs(g) + eta[i]) + 8 * v_terms * kUnitRoundoff;
  }
  return b;
}

// Every |a[i] - b[i]| within bound[i]; reports the first misses with their index.
inline void expect_within(const std::vector<float>& a, const std::vector<float>& b, const std::vector<double>& bound,
                          const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  ASSERT_EQ(a.size(), bound.size()) << what;
  int misses = 0;
  double worst = 0;  // the largest difference as a fraction of its bound
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i]));
    worst = std::max(worst, bound[i] > 0 ? d / bound[i] : (d > 0 ? INFINITY : 0));
    if (!(d <= bound[i]) && misses++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: " << a[i] << " vs " << b[i] << ", difference " << d << " > bound "
                    << bound[i];
  }
  show_rounding(what + " (fraction of each bound)", worst, 1.0);
  EXPECT_EQ(misses, 0) << what << ": " << misses << " of " << a.size() << " outside their bound";
}

// One side of an update: parameters and moments after it, and the gradient and clipping factor
// it applied, all in the whole model's layout.
struct AdamWResult {
  std::vector<float> params, m, v, grads;
  float scale = 1;
};

// The clipping factor AdamW::step applies for a gradient of this norm (grad_scale 1).
inline float clip_scale(double norm, double grad_clip) {
  return static_cast<float>(grad_clip > 0 && norm > grad_clip ? grad_clip / norm : 1.0);
}

// The update `other` made (another layout, gathered) against the one-process update `one`, both
// from the state `before` (before.grads, before.scale: one's): each parameter and moment within
// adamw_bounds of the gap between the two scaled gradients (plus 2 ulps of the scaling). The
// moments' bound is their exact first-order change plus rounding: they use most of it.
inline void expect_same_update(const AdamWState& before, const AdamWResult& one, const AdamWResult& other,
                               const std::string& what) {
  const size_t n = before.params.size();
  ASSERT_EQ(other.grads.size(), n) << what;
  std::vector<double> eta(n);
  for (size_t i = 0; i < n; ++i) {
    const double g = double(before.grads[i]) * before.scale;
    eta[i] = std::abs(double(other.grads[i]) * other.scale - g) + 2 * kUnitRoundoff * std::abs(g);
  }
  const AdamWBounds b = adamw_bounds(before, eta);
  expect_within(other.params, one.params, b.params, what + ": parameters");
  expect_within(other.m, one.m, b.m, what + ": first moments");
  expect_within(other.v, one.v, b.v, what + ": second moments");
  if (std::getenv("OPD_SHOW_ROUNDING"))
    std::printf("[ rounding ] %s: %zu of %zu parameters had a gradient within rounding of 0 (free sign)\n",
                what.c_str(), b.free, n);
}

}  // namespace opd::testing
