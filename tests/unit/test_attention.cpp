#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/attention.h"

using opd::testing::expect_close;
using opd::testing::random_vector;

namespace {

struct Shape {
  int B, T, H, Hkv, D;
  size_t q() const { return size_t(B) * T * H * D; }
  size_t kv() const { return size_t(B) * T * Hkv * D; }
  size_t lse() const { return size_t(B) * H * T; }
};

// Straight from the definition: the full masked [T x T] score matrix per (b, h), in double.
template <typename T>
void naive_forward(std::vector<double>& out, std::vector<double>& lse, const std::vector<T>& q,
                   const std::vector<T>& k, const std::vector<T>& v, const Shape& s) {
  out.assign(s.q(), 0.0);
  lse.assign(s.lse(), 0.0);
  const double scale = 1.0 / std::sqrt(double(s.D));
  std::vector<double> S(size_t(s.T) * s.T);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h) {
      const int g = h / (s.H / s.Hkv);
      for (int t = 0; t < s.T; ++t)
        for (int j = 0; j < s.T; ++j) {
          double acc = 0;
          for (int d = 0; d < s.D; ++d)
            acc += double(q[((size_t(b) * s.T + t) * s.H + h) * s.D + d]) *
                   double(k[((size_t(b) * s.T + j) * s.Hkv + g) * s.D + d]);
          S[size_t(t) * s.T + j] = j <= t ? acc * scale : -std::numeric_limits<double>::infinity();
        }
      for (int t = 0; t < s.T; ++t) {
        double m = -std::numeric_limits<double>::infinity(), sum = 0;
        for (int j = 0; j < s.T; ++j) m = std::max(m, S[size_t(t) * s.T + j]);
        for (int j = 0; j < s.T; ++j) sum += std::exp(S[size_t(t) * s.T + j] - m);
        lse[(size_t(b) * s.H + h) * s.T + t] = m + std::log(sum);
        for (int j = 0; j < s.T; ++j) {
          const double p = std::exp(S[size_t(t) * s.T + j] - m) / sum;
          for (int d = 0; d < s.D; ++d)
            out[((size_t(b) * s.T + t) * s.H + h) * s.D + d] += p * double(v[((size_t(b) * s.T + j) * s.Hkv + g) * s.D + d]);
        }
      }
    }
}

template <typename T>
void forward(std::vector<T>& out, std::vector<T>& lse, const std::vector<T>& q, const std::vector<T>& k,
             const std::vector<T>& v, const Shape& s) {
  out.assign(s.q(), T(0));
  lse.assign(s.lse(), T(0));
  opd::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H, s.Hkv, s.D);
}

// Restores the OpenMP thread count when a test ends, however it ends.
struct ThreadCount {
  int saved = omp_get_max_threads();
  ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

TEST(Attention, ForwardMatchesNaive) {
  const Shape shapes[] = {{1, 7, 3, 3, 6}, {2, 7, 4, 2, 6}, {3, 13, 6, 1, 5}, {4, 64, 8, 2, 32}};
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message() << "B=" << s.B << " T=" << s.T << " H=" << s.H << " Hkv=" << s.Hkv << " D=" << s.D);
    // A wide range makes some rows sharply peaked, so the max subtraction matters.
    const auto q = random_vector<float>(s.q(), seed++, -3, 3), k = random_vector<float>(s.kv(), seed++, -3, 3),
               v = random_vector<float>(s.kv(), seed++);
    std::vector<float> out, lse;
    std::vector<double> ref_out, ref_lse;
    forward(out, lse, q, k, v, s);
    naive_forward(ref_out, ref_lse, q, k, v, s);
    expect_close(out, ref_out, 1e-5, 1e-5, "out");
    expect_close(lse, ref_lse, 1e-5, 1e-5, "lse");
  }
}

TEST(Attention, ForwardHandlesLargeScoresWithoutOverflow) {
  const Shape s{1, 5, 2, 1, 4};
  const auto q = random_vector<float>(s.q(), 11, 20, 30), k = random_vector<float>(s.kv(), 12, 20, 30),
             v = random_vector<float>(s.kv(), 13);
  std::vector<float> out, lse;
  std::vector<double> ref_out, ref_lse;
  forward(out, lse, q, k, v, s);
  naive_forward(ref_out, ref_lse, q, k, v, s);
  expect_close(out, ref_out, 1e-5, 1e-5, "out");
  expect_close(lse, ref_lse, 1e-4, 1e-5, "lse");
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  const Shape shapes[] = {{2, 5, 4, 2, 3}, {1, 7, 3, 1, 6}, {2, 4, 2, 2, 5}};
  uint32_t seed = 100;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message() << "B=" << s.B << " T=" << s.T << " H=" << s.H << " Hkv=" << s.Hkv << " D=" << s.D);
    auto q = random_vector<double>(s.q(), seed++, -2, 2), k = random_vector<double>(s.kv(), seed++, -2, 2),
         v = random_vector<double>(s.kv(), seed++);
    const auto R = random_vector<double>(s.q(), seed++);
    std::vector<double> out, lse;
    const auto loss = [&] {
      forward(out, lse, q, k, v, s);
      double l = 0;
      for (size_t i = 0; i < out.size(); ++i) l += out[i] * R[i];
      return l;
    };
    const auto gq = opd::testing::numeric_gradient(loss, q), gk = opd::testing::numeric_gradient(loss, k),
               gv = opd::testing::numeric_gradient(loss, v);
    forward(out, lse, q, k, v, s);
    // NaN-filled outputs prove backward overwrites every element.
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> dq(s.q(), nan), dk(s.kv(), nan), dv(s.kv(), nan);
    opd::cpu::attention_backward(dq.data(), dk.data(), dv.data(), R.data(), q.data(), k.data(), v.data(), out.data(),
                                 lse.data(), s.B, s.T, s.H, s.Hkv, s.D);
    expect_close(dq, gq, 1e-7, 1e-6, "dq");
    expect_close(dk, gk, 1e-7, 1e-6, "dk");
    expect_close(dv, gv, 1e-7, 1e-6, "dv");
  }
}

// The float path (production) against the double one checked above, at a realistic size.
TEST(Attention, BackwardFloatMatchesDouble) {
  const Shape s{3, 50, 4, 2, 24};
  const auto qd = random_vector<double>(s.q(), 7), kd = random_vector<double>(s.kv(), 8),
             vd = random_vector<double>(s.kv(), 9), Rd = random_vector<double>(s.q(), 10);
  const std::vector<float> qf(qd.begin(), qd.end()), kf(kd.begin(), kd.end()), vf(vd.begin(), vd.end()),
      Rf(Rd.begin(), Rd.end());
  std::vector<double> outd, lsed, dqd(s.q()), dkd(s.kv()), dvd(s.kv());
  std::vector<float> outf, lsef, dqf(s.q()), dkf(s.kv()), dvf(s.kv());
  forward(outd, lsed, qd, kd, vd, s);
  forward(outf, lsef, qf, kf, vf, s);
  opd::cpu::attention_backward(dqd.data(), dkd.data(), dvd.data(), Rd.data(), qd.data(), kd.data(), vd.data(),
                               outd.data(), lsed.data(), s.B, s.T, s.H, s.Hkv, s.D);
  opd::cpu::attention_backward(dqf.data(), dkf.data(), dvf.data(), Rf.data(), qf.data(), kf.data(), vf.data(),
                               outf.data(), lsef.data(), s.B, s.T, s.H, s.Hkv, s.D);
  expect_close(dqf, dqd, 1e-5, 1e-4, "dq");
  expect_close(dkf, dkd, 1e-5, 1e-4, "dk");
  expect_close(dvf, dvd, 1e-5, 1e-4, "dv");
}

TEST(Attention, DeterministicAcrossThreadCounts) {
  ThreadCount restore;
  const Shape s{5, 33, 6, 2, 16};
  const auto q = random_vector<float>(s.q(), 21), k = random_vector<float>(s.kv(), 22),
             v = random_vector<float>(s.kv(), 23), R = random_vector<float>(s.q(), 24);
  std::vector<float> out[2], lse[2], dq[2], dk[2], dv[2];
  const int threads[2] = {1, 3};
  for (int r = 0; r < 2; ++r) {
    omp_set_num_threads(threads[r]);
    forward(out[r], lse[r], q, k, v, s);
    dq[r].assign(s.q(), 0.f);
    dk[r].assign(s.kv(), 0.f);
    dv[r].assign(s.kv(), 0.f);
    opd::cpu::attention_backward(dq[r].data(), dk[r].data(), dv[r].data(), R.data(), q.data(), k.data(), v.data(),
                                 out[r].data(), lse[r].data(), s.B, s.T, s.H, s.Hkv, s.D);
  }
  const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  EXPECT_TRUE(same(out[0], out[1]));
  EXPECT_TRUE(same(lse[0], lse[1]));
  EXPECT_TRUE(same(dq[0], dq[1]));
  EXPECT_TRUE(same(dk[0], dk[1]));
  EXPECT_TRUE(same(dv[0], dv[1]));
}

// Changing anything at positions >= t0 leaves every earlier output untouched.
TEST(Attention, IsCausal) {
  const Shape s{2, 9, 4, 2, 6};
  const int t0 = 5;
  auto q = random_vector<float>(s.q(), 31), k = random_vector<float>(s.kv(), 32), v = random_vector<float>(s.kv(), 33);
  std::vector<float> out0, lse0, out1, lse1;
  forward(out0, lse0, q, k, v, s);
  for (int b = 0; b < s.B; ++b)
    for (int t = t0; t < s.T; ++t) {
      for (int i = 0; i < s.H * s.D; ++i) q[(size_t(b) * s.T + t) * s.H * s.D + i] += 0.5f;
      for (int i = 0; i < s.Hkv * s.D; ++i) {
        k[(size_t(b) * s.T + t) * s.Hkv * s.D + i] += 0.7f;
        v[(size_t(b) * s.T + t) * s.Hkv * s.D + i] -= 0.9f;
      }
    }
  forward(out1, lse1, q, k, v, s);
  int changed_later = 0;
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h)
      for (int t = 0; t < s.T; ++t) {
        const size_t l = (size_t(b) * s.H + h) * s.T + t;
        for (int d = 0; d < s.D; ++d) {
          const size_t i = ((size_t(b) * s.T + t) * s.H + h) * s.D + d;
          if (t < t0) {
            EXPECT_EQ(out0[i], out1[i]) << "b=" << b << " h=" << h << " t=" << t << " d=" << d;
          } else {
            changed_later += out0[i] != out1[i];
          }
        }
        if (t < t0) {
          EXPECT_EQ(lse0[l], lse1[l]) << "b=" << b << " h=" << h << " t=" << t;
        }
      }
  EXPECT_GT(changed_later, 0) << "the perturbation should reach the later rows";
}

// Prefill, then decode one token at a time with a different position per sequence (sequences of
// different lengths in one batch); every step must reproduce the training forward's row.
TEST(Attention, DecodeMatchesForward) {
  const Shape s{3, 11, 6, 2, 10};
  const int S = s.T + 4, prefill = 4;
  const int start[3] = {1, 3, 4};  // sequence 0 re-decodes rows the prefill already holds: same values
  const auto q = random_vector<float>(s.q(), 41, -2, 2), k = random_vector<float>(s.kv(), 42, -2, 2),
             v = random_vector<float>(s.kv(), 43);
  std::vector<float> out, lse;
  forward(out, lse, q, k, v, s);

  const size_t kvrow = size_t(s.Hkv) * s.D, qrow = size_t(s.H) * s.D;
  // NaN outside the written rows: reading past pos[b] would poison the output.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> kc(size_t(s.B) * S * kvrow, nan), vc(size_t(s.B) * S * kvrow, nan);
  std::vector<float> kp(size_t(s.B) * prefill * kvrow), vp(kp.size());
  for (int b = 0; b < s.B; ++b)
    for (size_t i = 0; i < prefill * kvrow; ++i) {
      kp[b * prefill * kvrow + i] = k[b * s.T * kvrow + i];
      vp[b * prefill * kvrow + i] = v[b * s.T * kvrow + i];
    }
  opd::cpu::kv_cache_write(kc.data(), vc.data(), kp.data(), vp.data(), s.B, prefill, S, s.Hkv, s.D);

  std::vector<float> qn(s.B * qrow), kn(s.B * kvrow), vn(s.B * kvrow), dec(s.B * qrow), ref(s.B * qrow);
  for (int step = 0; step < s.T; ++step) {
    int pos[3];
    for (int b = 0; b < s.B; ++b) {
      pos[b] = std::min(start[b] + step, s.T - 1);  // finished sequences repeat their last row
      std::copy_n(&q[(size_t(b) * s.T + pos[b]) * qrow], qrow, &qn[b * qrow]);
      std::copy_n(&k[(size_t(b) * s.T + pos[b]) * kvrow], kvrow, &kn[b * kvrow]);
      std::copy_n(&v[(size_t(b) * s.T + pos[b]) * kvrow], kvrow, &vn[b * kvrow]);
      std::copy_n(&out[(size_t(b) * s.T + pos[b]) * qrow], qrow, &ref[b * qrow]);
    }
    opd::cpu::attention_decode(dec.data(), qn.data(), kn.data(), vn.data(), kc.data(), vc.data(), pos, s.B, S, s.H,
                               s.Hkv, s.D);
    SCOPED_TRACE(testing::Message() << "step " << step << " pos " << pos[0] << "," << pos[1] << "," << pos[2]);
    expect_close(dec, ref, 1e-6, 0, "decode");
  }
  // The cache now holds exactly k, v for rows [0, T) and nothing past them.
  for (int b = 0; b < s.B; ++b)
    for (int r = 0; r < S; ++r)
      for (size_t i = 0; i < kvrow; ++i) {
        const float kc_i = kc[(size_t(b) * S + r) * kvrow + i];
        if (r < s.T) {
          ASSERT_EQ(kc_i, k[(size_t(b) * s.T + r) * kvrow + i]) << "b=" << b << " row=" << r;
        } else {
          ASSERT_TRUE(std::isnan(kc_i)) << "b=" << b << " row=" << r;
        }
      }
}

TEST(Attention, KvCacheWriteCopiesPrefixRows) {
  const int B = 2, Tn = 3, S = 5, Hkv = 2, D = 3;
  const auto k = random_vector<float>(B * Tn * Hkv * D, 51), v = random_vector<float>(B * Tn * Hkv * D, 52);
  std::vector<float> kc(B * S * Hkv * D, -7.f), vc(B * S * Hkv * D, -7.f);
  opd::cpu::kv_cache_write(kc.data(), vc.data(), k.data(), v.data(), B, Tn, S, Hkv, D);
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < S; ++r)
      for (int i = 0; i < Hkv * D; ++i) {
        const size_t c = (size_t(b) * S + r) * Hkv * D + i, x = (size_t(b) * Tn + r) * Hkv * D + i;
        EXPECT_EQ(kc[c], r < Tn ? k[x] : -7.f) << "b=" << b << " r=" << r << " i=" << i;
        EXPECT_EQ(vc[c], r < Tn ? v[x] : -7.f) << "b=" << b << " r=" << r << " i=" << i;
      }
}

TEST(Attention, RejectsBadShapes) {
  std::vector<float> buf(1024), cache(1024);
  EXPECT_THROW(opd::cpu::attention_forward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), 1, 4, 3, 2, 4),
               opd::Error);
  EXPECT_THROW(opd::cpu::kv_cache_write(cache.data(), cache.data(), buf.data(), buf.data(), 1, 9, 8, 1, 4),
               opd::Error);
  const int pos[1] = {8};
  EXPECT_THROW(opd::cpu::attention_decode(buf.data(), buf.data(), buf.data(), buf.data(), cache.data(), cache.data(),
                                          pos, 1, 8, 2, 1, 4),
               opd::Error);
}
