// The vocabulary-parallel ops against their unsharded references: each test splits whole rows into
// R shards of consecutive ids (uneven widths), runs the per-shard ops on the slabs, does the
// tensor-parallel communication by hand (sum, max, scan, concatenation), and compares with the op
// on the whole rows.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/logprobs.h"
#include "kernels/cpu/reverse_kl.h"
#include "kernels/cpu/sample.h"

using opd::testing::expect_close;
using opd::testing::expect_error;
using opd::testing::random_vector;

namespace {

// [0, V) cut into R runs of consecutive ids, widths differing by at most one.
struct Split {
  int V, R;
  int v0(int r) const { return static_cast<int>(static_cast<long>(V) * r / R); }
  int Vl(int r) const { return v0(r + 1) - v0(r); }
};

// Shard r's [N, Vl] slab of whole rows x [N, V].
template <typename T>
std::vector<T> slab(const std::vector<T>& x, int N, const Split& s, int r) {
  std::vector<T> out(static_cast<size_t>(N) * s.Vl(r));
  for (int n = 0; n < N; ++n)
    std::copy_n(x.begin() + static_cast<size_t>(n) * s.V + s.v0(r), s.Vl(r),
                out.begin() + static_cast<size_t>(n) * s.Vl(r));
  return out;
}

// The all-gather of slabs back into whole rows.
template <typename T>
void put_slab(std::vector<T>& x, const std::vector<T>& part, int N, const Split& s, int r) {
  for (int n = 0; n < N; ++n)
    std::copy_n(part.begin() + static_cast<size_t>(n) * s.Vl(r), s.Vl(r),
                x.begin() + static_cast<size_t>(n) * s.V + s.v0(r));
}

// What the tensor-parallel layer computes first: per-shard statistics, gathered [R, N], combined.
template <typename T>
void full_row_lse(std::vector<T>& logp, std::vector<T>& lse, const std::vector<T>& x, const std::vector<int>& t, int N,
                  const Split& s) {
  std::vector<T> mx(static_cast<size_t>(s.R) * N), se(mx.size()), tl(mx.size());
  for (int r = 0; r < s.R; ++r) {
    const auto xs = slab(x, N, s, r);
    opd::cpu::logprobs_shard_stats(mx.data() + static_cast<size_t>(r) * N, se.data() + static_cast<size_t>(r) * N,
                                   tl.data() + static_cast<size_t>(r) * N, xs.data(), t.data(), N, s.Vl(r), s.v0(r));
  }
  logp.assign(N, 0);
  lse.assign(N, 0);
  opd::cpu::combine_shard_stats(logp.data(), lse.data(), mx.data(), se.data(), tl.data(), t.data(), s.R, N);
}

// Random rows; every third row holds whole numbers, so that it has ties.
template <typename T>
std::vector<T> random_rows(int N, int V, uint32_t seed, double scale) {
  auto x = random_vector<T>(static_cast<size_t>(N) * V, seed, -scale, scale);
  for (int n = 0; n < N; n += 3)
    for (int v = 0; v < V; ++v) x[static_cast<size_t>(n) * V + v] = std::round(x[static_cast<size_t>(n) * V + v]);
  return x;
}

// Targets in [0, V) with a few -1 (positions without a target), the first and last id included.
std::vector<int> random_targets(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int> t(N);
  for (int n = 0; n < N; ++n) t[n] = n % 5 == 2 ? -1 : static_cast<int>(gen() % V);
  t[0] = 0;
  t[N - 1] = V - 1;
  return t;
}

template <typename T>
double tol() {
  return sizeof(T) == 4 ? 2e-6 : 1e-12;
}

// ---- log-probs, entropy, log-softmax, backward, cross-entropy ---------------------------------

template <typename T>
void check_logprob_family(int N, int V, int R, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " R=" << R << " sizeof(T)=" << sizeof(T));
  const Split s{V, R};
  const auto x = random_rows<T>(N, V, seed, 4.0);
  const auto t = random_targets(N, V, seed + 1);
  const double eps = tol<T>();

  std::vector<T> logp, lse;
  full_row_lse(logp, lse, x, t, N, s);
  std::vector<T> want_logp(N), want_ent(N);
  opd::cpu::logprobs_forward(want_logp.data(), want_ent.data(), x.data(), t.data(), N, V);
  expect_close(logp, want_logp, 4 * eps, eps, "logp");

  // Entropy: the sum over shards of entropy_shard, on every row with a target.
  std::vector<T> ent_sum(N, 0);
  std::vector<T> lsm(static_cast<size_t>(N) * V);
  for (int r = 0; r < R; ++r) {
    const auto xs = slab(x, N, s, r);
    std::vector<T> dot(N), part(xs.size());
    opd::cpu::entropy_shard(dot.data(), xs.data(), lse.data(), N, s.Vl(r));
    for (int n = 0; n < N; ++n) ent_sum[n] += t[n] < 0 ? T(0) : dot[n];
    opd::cpu::log_softmax_shard(part.data(), xs.data(), lse.data(), N, s.Vl(r));
    put_slab(lsm, part, N, s, r);
  }
  expect_close(ent_sum, want_ent, 4 * eps, eps, "entropy_shard");
  std::vector<T> want_lsm(lsm.size());
  opd::cpu::log_softmax_forward(want_lsm.data(), x.data(), N, V);
  expect_close(lsm, want_lsm, 4 * eps, eps, "log_softmax");

  // Backward accumulates into what dlogits held.
  const auto dlogp = random_vector<T>(N, seed + 2, -2, 2);
  const auto d0 = random_vector<T>(x.size(), seed + 3, -1, 1);
  auto want_d = d0;
  opd::cpu::logprobs_backward(want_d.data(), dlogp.data(), x.data(), t.data(), N, V);
  std::vector<T> got_d(x.size());
  for (int r = 0; r < R; ++r) {
    const auto xs = slab(x, N, s, r);
    auto ds = slab(d0, N, s, r);
    opd::cpu::logprobs_backward_shard(ds.data(), dlogp.data(), xs.data(), lse.data(), t.data(), N, s.Vl(r), s.v0(r));
    put_slab(got_d, ds, N, s, r);
  }
  expect_close(got_d, want_d, 4 * eps, eps, "dlogits");
  for (int n = 0; n < N; ++n) {  // rows without a target untouched, bit for bit
    if (t[n] >= 0) continue;
    for (int v = 0; v < V; ++v)
      ASSERT_EQ(got_d[static_cast<size_t>(n) * V + v], d0[static_cast<size_t>(n) * V + v]) << n << " " << v;
  }

  // Cross-entropy: loss = -logp, dlogits = scale (softmax - onehot) = the backward with dlogp = -scale.
  const T scale = T(0.37);
  std::vector<T> ce(N), want_ce_d(x.size());
  opd::cpu::cross_entropy_forward_backward(ce.data(), want_ce_d.data(), x.data(), t.data(), scale, N, V);
  std::vector<T> neg_logp(N), ce_d(x.size()), minus_scale(N, -scale);
  for (int n = 0; n < N; ++n) neg_logp[n] = -logp[n];
  for (int r = 0; r < R; ++r) {
    const auto xs = slab(x, N, s, r);
    std::vector<T> ds(xs.size(), 0);
    opd::cpu::logprobs_backward_shard(ds.data(), minus_scale.data(), xs.data(), lse.data(), t.data(), N, s.Vl(r),
                                      s.v0(r));
    put_slab(ce_d, ds, N, s, r);
  }
  expect_close(neg_logp, ce, 4 * eps, eps, "cross-entropy loss");
  expect_close(ce_d, want_ce_d, 4 * eps, eps, "cross-entropy dlogits");
}

TEST(VocabShardLogprobs, EntropyLogSoftmaxBackwardCrossEntropyMatchWholeRows) {
  for (int R : {1, 2, 3}) {
    check_logprob_family<double>(23, 37, R, 10 + R);
    check_logprob_family<float>(23, 37, R, 20 + R);
  }
  check_logprob_family<double>(7, 1001, 3, 30);
  check_logprob_family<float>(7, 1001, 3, 31);
}

// Large float logits of a confident row: lse - sum p x cancels most of the entropy's digits,
// the sum of entropy_shard keeps them.
TEST(VocabShardLogprobs, EntropyShardKeepsPrecisionOfLargeLogits) {
  const int N = 8, V = 512, R = 2;
  const Split s{V, R};
  std::mt19937 gen(3);
  std::normal_distribution<double> d(100.0, 10.0);
  std::vector<float> x(static_cast<size_t>(N) * V);
  for (auto& e : x) e = static_cast<float>(d(gen));
  std::vector<double> xd(x.begin(), x.end()), want(N), unused(N);
  const std::vector<int> t(N, 0);
  opd::cpu::logprobs_forward(unused.data(), want.data(), xd.data(), t.data(), N, V);
  std::vector<float> logp, lse, h(N, 0);
  full_row_lse(logp, lse, x, t, N, s);
  for (int r = 0; r < R; ++r) {
    const auto xs = slab(x, N, s, r);
    std::vector<float> part(N);
    opd::cpu::entropy_shard(part.data(), xs.data(), lse.data(), N, s.Vl(r));
    for (int n = 0; n < N; ++n) h[n] += part[n];
  }
  expect_close(h, want, 3e-5, 1e-4, "entropy");
}

TEST(VocabShardLogprobs, MassOnlyInOtherShardsAddsNothing) {
  // A shard of -inf logits: no mass, no entropy share, no NaN.
  const float ninf = -std::numeric_limits<float>::infinity();
  const std::vector<float> x = {ninf, ninf, ninf};
  const std::vector<float> lse = {2.5f};
  float dot = 1;
  opd::cpu::entropy_shard(&dot, x.data(), lse.data(), 1, 3);
  EXPECT_EQ(dot, 0.0f);
}

// ---- top-K -----------------------------------------------------------------------------------

template <typename T>
void sharded_topk(std::vector<int>& ids, std::vector<T>& logp, const std::vector<T>& x, const std::vector<T>& lse,
                  const std::vector<int>& extra, const std::vector<T>& extra_logp, bool skip, int N, const Split& s,
                  int K) {
  std::vector<int> cid(static_cast<size_t>(s.R) * N * K);
  std::vector<T> clp(cid.size());
  for (int r = 0; r < s.R; ++r) {
    const auto xs = slab(x, N, s, r);
    opd::cpu::topk_shard_candidates(cid.data() + static_cast<size_t>(r) * N * K,
                                    clp.data() + static_cast<size_t>(r) * N * K, xs.data(), lse.data(), N, s.Vl(r),
                                    s.v0(r), K);
  }
  ids.assign(static_cast<size_t>(N) * (K + 1), 99);
  logp.assign(ids.size(), T(99));
  opd::cpu::topk_merge_shards(ids.data(), logp.data(), cid.data(), clp.data(), extra.data(), extra_logp.data(), skip,
                              s.R, N, K);
}

template <typename T>
void check_topk(int N, int V, int R, int K, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " R=" << R << " K=" << K
                                    << " sizeof(T)=" << sizeof(T));
  const Split s{V, R};
  const auto x = random_rows<T>(N, V, seed, 4.0);
  const auto extra = random_targets(N, V, seed + 1);
  for (bool skip : {true, false}) {
    std::vector<int> want_ids(static_cast<size_t>(N) * (K + 1));
    std::vector<T> want_lp(want_ids.size());
    opd::cpu::topk_logprobs(want_ids.data(), want_lp.data(), x.data(), extra.data(), skip, N, V, K);

    // The pipeline as the layer runs it: lse and the extra token's log-prob from the shard stats.
    std::vector<T> extra_lp, lse;
    full_row_lse(extra_lp, lse, x, extra, N, s);
    std::vector<int> ids;
    std::vector<T> lp;
    sharded_topk(ids, lp, x, lse, extra, extra_lp, skip, N, s, K);
    EXPECT_EQ(ids, want_ids);
    expect_close(lp, want_lp, 4 * tol<T>(), tol<T>(), "top-K logp");

    // Given the very log-probs topk_logprobs computes (its own log-softmax rows, lse 0), the merge
    // reproduces it bit for bit: slots, order, -1 / 0 conventions.
    std::vector<T> rows(x.size());
    opd::cpu::log_softmax_forward(rows.data(), x.data(), N, V);
    const std::vector<T> zero(N, T(0));
    std::vector<T> exact_extra(N, T(0));
    for (int n = 0; n < N; ++n)
      if (extra[n] >= 0) exact_extra[n] = rows[static_cast<size_t>(n) * V + extra[n]];
    sharded_topk(ids, lp, rows, zero, extra, exact_extra, skip, N, s, K);
    EXPECT_EQ(ids, want_ids);
    EXPECT_EQ(lp, want_lp);
  }
}

TEST(VocabShardTopk, MergeEqualsTopkLogprobs) {
  for (int R : {1, 2, 3})
    for (int K : {1, 5, 13, 37}) {  // 13, 37: more than a shard holds
      check_topk<double>(31, 37, R, K, 40 + R * K);
      check_topk<float>(31, 37, R, K, 50 + R * K);
    }
}

TEST(VocabShardTopk, CandidatesPadBeyondTheShard) {
  const std::vector<float> x = {1, 3, 3};  // one row, ids [10, 13)
  const std::vector<float> lse = {4};
  std::vector<int> ids(5);
  std::vector<float> lp(5);
  opd::cpu::topk_shard_candidates(ids.data(), lp.data(), x.data(), lse.data(), 1, 3, 10, 5);
  EXPECT_EQ(ids, (std::vector<int>{11, 12, 10, -1, -1}));
  EXPECT_EQ(lp[0], -1.0f);
  EXPECT_EQ(lp[2], -3.0f);
  EXPECT_EQ(lp[3], -std::numeric_limits<float>::infinity());
}

TEST(VocabShardTopk, MergeRejectsTooFewCandidates) {
  const std::vector<int> cid = {3, -1, -1, -1};  // R = 2, N = 1, K = 2: one real candidate
  const std::vector<float> clp = {-1, -INFINITY, -INFINITY, -INFINITY};
  const std::vector<int> extra = {3};
  const std::vector<float> elp = {-1};
  std::vector<int> ids(3);
  std::vector<float> lp(3);
  expect_error(
      [&] {
        opd::cpu::topk_merge_shards(ids.data(), lp.data(), cid.data(), clp.data(), extra.data(), elp.data(), true, 2, 1,
                                    2);
      },
      {"topk_merge_shards", "row 0", "K = 2"});
}

// ---- reverse KL --------------------------------------------------------------------------------

template <typename T>
std::vector<T> log_softmax_rows(const std::vector<T>& z, int N, int V) {
  std::vector<T> out(z.size());
  opd::cpu::log_softmax_forward(out.data(), z.data(), N, V);
  return out;
}

template <typename T>
void check_reverse_kl_full(int N, int V, int R, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " R=" << R << " sizeof(T)=" << sizeof(T));
  const Split s{V, R};
  const auto x = random_rows<T>(N, V, seed, 3.0);
  const auto lt = log_softmax_rows(random_vector<T>(x.size(), seed + 1, -3, 3), N, V);
  auto scale = random_vector<T>(N, seed + 2, 0, 1);
  scale[1] = 0;
  std::vector<T> want_kl(N), want_d(x.size());
  opd::cpu::reverse_kl_full(want_kl.data(), want_d.data(), x.data(), lt.data(), scale.data(), N, V);

  const std::vector<int> no_targets(N, -1);
  std::vector<T> unused, lse;
  full_row_lse(unused, lse, x, no_targets, N, s);
  std::vector<T> kl(N, 0), d(x.size(), T(99));
  for (int r = 0; r < R; ++r) {
    const auto xs = slab(x, N, s, r), lts = slab(lt, N, s, r);
    std::vector<T> part(N);
    opd::cpu::reverse_kl_full_shard_partial(part.data(), xs.data(), lse.data(), lts.data(), N, s.Vl(r));
    for (int n = 0; n < N; ++n) kl[n] += part[n];
  }
  expect_close(kl, want_kl, 4 * tol<T>(), 4 * tol<T>(), "kl");
  for (int r = 0; r < R; ++r) {
    const auto xs = slab(x, N, s, r), lts = slab(lt, N, s, r);
    std::vector<T> ds(xs.size(), T(99));
    opd::cpu::reverse_kl_full_shard_grad(ds.data(), xs.data(), lse.data(), lts.data(), kl.data(), scale.data(), N,
                                         s.Vl(r));
    put_slab(d, ds, N, s, r);
  }
  expect_close(d, want_d, 4 * tol<T>(), 4 * tol<T>(), "dlogits");
}

TEST(VocabShardReverseKl, FullMatchesWholeRows) {
  for (int R : {1, 2, 3}) {
    check_reverse_kl_full<double>(17, 37, R, 60 + R);
    check_reverse_kl_full<float>(17, 37, R, 70 + R);
  }
}

// ids [N, K1]: K1 distinct ids per row in random order, some entries -1, row 2 all -1 (empty S).
std::vector<int> random_sets(int N, int V, int K1, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int> ids(static_cast<size_t>(N) * K1), perm(V);
  for (int n = 0; n < N; ++n) {
    for (int v = 0; v < V; ++v) perm[v] = v;
    std::shuffle(perm.begin(), perm.end(), gen);
    for (int j = 0; j < K1; ++j) ids[static_cast<size_t>(n) * K1 + j] = (n + j) % 4 == 3 || n == 2 ? -1 : perm[j];
  }
  return ids;
}

template <typename T>
void check_reverse_kl_topk(int N, int V, int R, int K1, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " R=" << R << " K1=" << K1
                                    << " sizeof(T)=" << sizeof(T));
  const Split s{V, R};
  const auto x = random_rows<T>(N, V, seed, 3.0);
  const auto ids = random_sets(N, V, K1, seed + 1);
  const auto lt = random_vector<T>(static_cast<size_t>(N) * K1, seed + 2, -6, -0.1);  // teacher log-probs of ids
  auto scale = random_vector<T>(N, seed + 3, 0, 1);
  scale[1] = 0;
  std::vector<T> want_kl(N), want_d(x.size());
  opd::cpu::reverse_kl_topk(want_kl.data(), want_d.data(), x.data(), ids.data(), lt.data(), scale.data(), N, V, K1);

  const std::vector<int> no_targets(N, -1);
  std::vector<T> unused, lse;
  full_row_lse(unused, lse, x, no_targets, N, s);
  std::vector<T> zs(N, 0), a(N, 0), kl(N), d(x.size(), T(99));
  for (int r = 0; r < R; ++r) {
    const auto xs = slab(x, N, s, r);
    std::vector<T> zr(N), ar(N);
    opd::cpu::reverse_kl_topk_shard_partial(zr.data(), ar.data(), xs.data(), lse.data(), ids.data(), lt.data(), N,
                                            s.Vl(r), s.v0(r), K1);
    for (int n = 0; n < N; ++n) zs[n] += zr[n], a[n] += ar[n];
  }
  opd::cpu::reverse_kl_topk_combine(kl.data(), zs.data(), a.data(), N);
  // a / zs and log zs are each of the size of the log-probs; kl, their difference, can be far smaller.
  expect_close(kl, want_kl, 40 * tol<T>(), 4 * tol<T>(), "kl");
  EXPECT_EQ(kl[2], T(0));
  for (int r = 0; r < R; ++r) {
    const auto xs = slab(x, N, s, r);
    std::vector<T> ds(xs.size(), T(99));
    opd::cpu::reverse_kl_topk_shard_grad(ds.data(), xs.data(), lse.data(), zs.data(), ids.data(), lt.data(), kl.data(),
                                         scale.data(), N, s.Vl(r), s.v0(r), K1);
    put_slab(d, ds, N, s, r);
  }
  expect_close(d, want_d, 4 * tol<T>(), 4 * tol<T>(), "dlogits");
}

TEST(VocabShardReverseKl, TopKMatchesWholeRows) {
  for (int R : {1, 2, 3})
    for (int K1 : {1, 6, 37}) {
      check_reverse_kl_topk<double>(19, 37, R, K1, 80 + R * K1);
      check_reverse_kl_topk<float>(19, 37, R, K1, 90 + R * K1);
    }
}

TEST(VocabShardReverseKl, TopKRejectsDuplicateInShard) {
  const std::vector<float> x = {0, 1, 2}, lse = {3}, lt = {-1, -2};
  const std::vector<int> ids = {11, 11};
  float z, acc;
  expect_error(
      [&] {
        opd::cpu::reverse_kl_topk_shard_partial(&z, &acc, x.data(), lse.data(), ids.data(), lt.data(), 1, 3, 10, 2);
      },
      {"reverse_kl_topk_shard_partial", "token 11", "row 0"});
}

// ---- sampling ----------------------------------------------------------------------------------

// The tensor-parallel sampler as the layer runs it, shard by shard, with the communication by hand.
std::vector<int> sharded_sample(const std::vector<float>& x, const std::vector<uint32_t>& seq,
                                const std::vector<uint32_t>& pos, int N, const Split& s,
                                const opd::cpu::SampleParams& p) {
  const int R = s.R, V = s.V;
  std::vector<std::vector<float>> xs(R);
  for (int r = 0; r < R; ++r) xs[r] = slab(x, N, s, r);
  std::vector<int> tokens(N, -1);
  if (p.temperature == 0.0f) {  // argmax over shards, the lowest shard (so the lowest id) on ties
    std::vector<float> best(N, -INFINITY);
    for (int r = 0; r < R; ++r) {
      std::vector<int> id(N);
      std::vector<float> val(N);
      opd::cpu::sample_shard_argmax(id.data(), val.data(), xs[r].data(), N, s.Vl(r), s.v0(r));
      for (int n = 0; n < N; ++n)
        if (tokens[n] < 0 || val[n] > best[n]) tokens[n] = id[n], best[n] = val[n];
    }
    return tokens;
  }
  std::vector<float> mx(N, -INFINITY), u(N);
  for (int r = 0; r < R; ++r) {
    std::vector<float> m(N);
    opd::cpu::sample_shard_max(m.data(), xs[r].data(), N, s.Vl(r));
    for (int n = 0; n < N; ++n) mx[n] = std::max(mx[n], m[n]);
  }
  std::vector<std::vector<double>> mass(R, std::vector<double>(N));
  std::vector<double> total(N, 0);
  for (int r = 0; r < R; ++r) {
    opd::cpu::sample_shard_mass(mass[r].data(), xs[r].data(), mx.data(), N, s.Vl(r), p.temperature);
    for (int n = 0; n < N; ++n) total[n] += mass[r][n];
  }
  opd::cpu::sample_uniforms(u.data(), seq.data(), pos.data(), N, p);
  const bool plain = (p.top_k == 0 || p.top_k >= V) && p.top_p >= 1.0f;
  if (plain) {
    std::vector<double> before(N, 0), target(N);
    for (int n = 0; n < N; ++n) target[n] = u[n] * total[n];
    std::vector<int> last(N, -1);
    for (int r = 0; r < R; ++r) {
      std::vector<int> tok(N), l(N);
      opd::cpu::sample_shard_pick(tok.data(), l.data(), xs[r].data(), mx.data(), before.data(), target.data(), N,
                                  s.Vl(r), s.v0(r), p.temperature);
      for (int n = 0; n < N; ++n) {
        if (tokens[n] < 0 && tok[n] >= 0) tokens[n] = tok[n];
        last[n] = std::max(last[n], l[n]);
        before[n] += mass[r][n];
      }
    }
    for (int n = 0; n < N; ++n)
      if (tokens[n] < 0) tokens[n] = last[n];
    return tokens;
  }
  // Gather each shard's needed candidates; the last shard's go first, since any order must do.
  const int M = V;
  std::vector<float> prob(static_cast<size_t>(N) * M, -1.0f);
  std::vector<int> ids(prob.size(), -7), count(N, 0);
  for (int r = R - 1; r >= 0; --r) {
    std::vector<float> pr(static_cast<size_t>(N) * s.Vl(r));
    std::vector<int> id(pr.size()), c(N);
    opd::cpu::sample_shard_candidates(pr.data(), id.data(), c.data(), xs[r].data(), mx.data(), total.data(), N, s.Vl(r),
                                      s.v0(r), p);
    for (int n = 0; n < N; ++n) {
      EXPECT_GE(c[n], 1);
      EXPECT_LE(c[n], s.Vl(r));
      for (int j = 0; j < c[n]; ++j, ++count[n]) {
        prob[static_cast<size_t>(n) * M + count[n]] = pr[static_cast<size_t>(n) * s.Vl(r) + j];
        ids[static_cast<size_t>(n) * M + count[n]] = id[static_cast<size_t>(n) * s.Vl(r) + j];
      }
    }
  }
  opd::cpu::sample_from_candidates(tokens.data(), prob.data(), ids.data(), count.data(), M, total.data(), u.data(), N,
                                   V, p);
  return tokens;
}

struct SampleCase {
  float temperature, top_p;
  int top_k;
};

TEST(VocabShardSample, SameTokenAsSampleTokens) {
  const SampleCase cases[] = {{0.7f, 1.0f, 0},  {1.0f, 1.0f, 0},  {1.0f, 1.0f, 5}, {1.0f, 0.9f, 0},
                              {1.0f, 0.8f, 5},  {0.0f, 1.0f, 0},  {1.3f, 0.5f, 0}, {0.7f, 0.9f, 50},
                              {1.0f, 1.0f, 50}, {0.7f, 0.05f, 0}, {1.0f, 1.0f, 1}};
  std::mt19937 gen(5);
  std::normal_distribution<float> logit(0.0f, 2.0f);
  const int N = 300;
  long compared = 0, differing_from_greedy = 0;
  for (int V : {37, 5})
    for (int R : {1, 2, 3})
      for (const auto& c : cases)
        for (int trial = 0; trial < 2; ++trial) {
          opd::cpu::SampleParams p;
          p.temperature = c.temperature, p.top_p = c.top_p, p.top_k = c.top_k, p.seed = gen(), p.step = gen();
          std::vector<float> x(static_cast<size_t>(N) * V);
          for (auto& e : x) e = logit(gen);
          for (int n = 0; n < N; n += 3)  // whole numbers: ties across shards
            for (int v = 0; v < V; ++v)
              x[static_cast<size_t>(n) * V + v] = std::round(x[static_cast<size_t>(n) * V + v]);
          std::vector<uint32_t> seq(N), pos(N);
          for (int n = 0; n < N; ++n) seq[n] = gen() % 50, pos[n] = gen() % 4000;
          std::vector<int> want(N), greedy(N);
          opd::cpu::sample_tokens(want.data(), x.data(), seq.data(), pos.data(), N, V, p);
          auto g = p;
          g.temperature = 0;
          opd::cpu::sample_tokens(greedy.data(), x.data(), seq.data(), pos.data(), N, V, g);
          const auto got = sharded_sample(x, seq, pos, N, Split{V, R}, p);
          for (int n = 0; n < N; ++n, ++compared) {
            ASSERT_EQ(got[n], want[n]) << "V=" << V << " R=" << R << " T=" << p.temperature << " top_p=" << p.top_p
                                       << " top_k=" << p.top_k << " row " << n;
            differing_from_greedy += want[n] != greedy[n];
          }
        }
  EXPECT_EQ(compared, 2L * 3 * 11 * 2 * N);
  EXPECT_GT(differing_from_greedy, compared / 10);  // the draws really are random
}

TEST(VocabShardSample, TopPCandidatesAreCutShort) {
  // Rows with one dominant token over a long tail (a confident language model): the nucleus is
  // that token, the shard holding it sends one candidate, and the others, which know that the
  // argmax lies elsewhere, one each. (A shard holding little of a flat row's mass cannot rule its
  // tokens out and sends them all.)
  const int N = 50, V = 300;
  const Split s{V, 3};
  auto x = random_vector<float>(static_cast<size_t>(N) * V, 7, -8, 0);
  std::mt19937 gen(8);
  for (int n = 0; n < N; ++n) x[static_cast<size_t>(n) * V + gen() % V] = 6.0f;
  std::vector<float> mx(N, -INFINITY);
  for (int r = 0; r < 3; ++r) {
    const auto xs = slab(x, N, s, r);
    std::vector<float> m(N);
    opd::cpu::sample_shard_max(m.data(), xs.data(), N, s.Vl(r));
    for (int n = 0; n < N; ++n) mx[n] = std::max(mx[n], m[n]);
  }
  std::vector<double> total(N, 0);
  for (int r = 0; r < 3; ++r) {
    const auto xs = slab(x, N, s, r);
    std::vector<double> m(N);
    opd::cpu::sample_shard_mass(m.data(), xs.data(), mx.data(), N, s.Vl(r), 1.0f);
    for (int n = 0; n < N; ++n) total[n] += m[n];
  }
  opd::cpu::SampleParams p;
  p.top_p = 0.5f;  // need = top_p * total < 1: the dominant token alone holds it
  long sent = 0;
  for (int r = 0; r < 3; ++r) {
    const auto xs = slab(x, N, s, r);
    std::vector<float> pr(xs.size());
    std::vector<int> id(xs.size()), c(N);
    opd::cpu::sample_shard_candidates(pr.data(), id.data(), c.data(), xs.data(), mx.data(), total.data(), N, s.Vl(r),
                                      s.v0(r), p);
    for (int n = 0; n < N; ++n) {
      sent += c[n];
      for (int j = 1; j < s.Vl(r); ++j)
        ASSERT_GE(pr[static_cast<size_t>(n) * s.Vl(r) + j - 1], pr[static_cast<size_t>(n) * s.Vl(r) + j]);
    }
  }
  EXPECT_EQ(sent, 3L * N);
  std::vector<uint32_t> seq(N), pos(N, 3);
  for (int n = 0; n < N; ++n) seq[n] = static_cast<uint32_t>(n);
  for (float top_p : {0.5f, 0.9f, 0.99f}) {
    p.top_p = top_p;
    std::vector<int> want(N);
    opd::cpu::sample_tokens(want.data(), x.data(), seq.data(), pos.data(), N, V, p);
    EXPECT_EQ(sharded_sample(x, seq, pos, N, s, p), want) << "top_p=" << top_p;
  }
}

TEST(VocabShardSample, RejectsInconsistentInputs) {
  opd::cpu::SampleParams p;
  p.top_k = 3;
  const std::vector<float> prob = {1.0f, 0.5f};
  const std::vector<int> ids = {4, 2}, count = {2};
  const std::vector<double> mass = {1.5};
  const std::vector<float> u = {0.5f};
  int tok;
  expect_error(
      [&] {
        opd::cpu::sample_from_candidates(&tok, prob.data(), ids.data(), count.data(), 2, mass.data(), u.data(), 1, 10,
                                         p);
      },
      {"sample_from_candidates", "top_k = 3"});
  // Candidates holding less than top_p of the mass: a shard cut them short.
  p.top_k = 0;
  p.top_p = 0.9f;
  const std::vector<double> big = {100.0};
  expect_error(
      [&] {
        opd::cpu::sample_from_candidates(&tok, prob.data(), ids.data(), count.data(), 2, big.data(), u.data(), 1, 10,
                                         p);
      },
      {"sample_from_candidates", "row 0"});
  // Plain sampling has its own path.
  p.top_p = 1.0f;
  expect_error(
      [&] {
        opd::cpu::sample_from_candidates(&tok, prob.data(), ids.data(), count.data(), 2, mass.data(), u.data(), 1, 10,
                                         p);
      },
      {"sample_shard_pick"});
  const std::vector<float> x = {0.0f, 1.0f};
  double m;
  expect_error([&] { opd::cpu::sample_shard_mass(&m, x.data(), x.data() + 1, 1, 2, 0.0f); }, {"temperature"});
}

}  // namespace

// The threshold cut of top-p candidates: ties at the threshold are all in, the mass is the prefix's.
TEST(VocabShardSample, CandidateMassAboveAThreshold) {
  const int N = 1, Vl = 5;
  const std::vector<float> prob = {0.5f, 0.3f, 0.3f, 0.1f, 0.9f};  // the last is past count: ignored
  const std::vector<int> count = {4};
  std::vector<double> prefix(Vl);
  opd::cpu::candidate_prefix_mass(prefix.data(), prob.data(), count.data(), N, Vl);
  struct Case {
    double threshold;
    int above;
    double mass;
  } cases[] = {{0.0, 4, 1.2}, {0.3, 3, 1.1}, {0.31, 1, 0.5}, {0.6, 0, 0.0}};
  for (const auto& c : cases) {
    double mass = -1;
    int above = -1;
    opd::cpu::candidate_mass_above(&mass, &above, prob.data(), prefix.data(), count.data(), &c.threshold, N, Vl);
    EXPECT_EQ(above, c.above) << c.threshold;
    EXPECT_NEAR(mass, c.mass, 1e-6) << c.threshold;
  }
}
