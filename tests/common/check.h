// Helpers shared by the tests: seeded random data, numerical gradients, expected errors.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"

namespace opd::testing {

// f must throw opd::Error whose message holds every one of `needles`.
inline void expect_error(const std::function<void()>& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

template <typename T>
std::vector<T> random_vector(size_t n, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

// Central finite differences of a scalar function of x (double precision), one coordinate at a
// time: grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h. x is restored afterwards.
inline std::vector<double> numeric_gradient(const std::function<double()>& f, std::vector<double>& x,
                                            double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double fp = f();
    x[i] = saved - h;
    const double fm = f();
    x[i] = saved;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// Every element within atol + rtol * |expected|; reports the first few misses with their index.
template <typename A, typename B>
void expect_close(const std::vector<A>& actual, const std::vector<B>& expected, double atol, double rtol,
                  const char* what = "") {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int misses = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    if (!(std::fabs(a - e) <= atol + rtol * std::fabs(e))) {
      if (++misses <= 5) ADD_FAILURE() << what << "[" << i << "]: got " << a << ", expected " << e;
    }
  }
  EXPECT_EQ(misses, 0) << what << ": " << misses << " of " << actual.size() << " elements out of tolerance";
}

}  // namespace opd::testing
