// The vocabulary-parallel (tensor-parallel) row ops on the GPU against their CPU references,
// shard by shard: entropy_shard, logprobs_backward_shard, log_softmax_shard,
// reverse_kl_full_shard_{partial,grad}, topk_shard_candidates and
// reverse_kl_topk_shard_{partial,grad}, for fp32 and bf16 logits. Whole rows are split into R
// shards of consecutive ids, uneven ones included (V % R != 0, shards narrower than a 16-byte
// pack, and about half of Qwen3's 151936), each shard its own slab; the CPU op runs in double on
// the very values the GPU reads, with the same fp32 lse.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/logprobs.h"
#include "kernels/cpu/reverse_kl.h"

#ifdef OPD_WITH_CUDA
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/logprobs.cuh"
#include "kernels/cuda/reverse_kl.cuh"
#include "vocab_gpu_util.h"

using opd::testing::DeviceBuffer;

namespace {

class VocabShardGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

// Shard r of R holds global ids [V r / R, V (r + 1) / R): uneven when R does not divide V.
int shard_start(int V, int R, int r) { return static_cast<int>(static_cast<long long>(V) * r / R); }

// Columns [v0, v0 + Vl) of the [N, V] matrix a, as an [N, Vl] slab.
template <typename A>
std::vector<A> slab_of(const std::vector<A>& a, int N, int V, int v0, int Vl) {
  std::vector<A> s(static_cast<size_t>(N) * Vl);
  for (int n = 0; n < N; ++n)
    std::copy_n(a.begin() + static_cast<size_t>(n) * V + v0, Vl, s.begin() + static_cast<size_t>(n) * Vl);
  return s;
}

// ---- logprobs and reverse KL on a shard ---------------------------------------------------------

struct VocabCase {
  int N, V, R;
  size_t offset;  // nonzero: misaligned rows, the scalar path
};
// Shards narrower than a pack (V 17 over 3; V 7 over 7: one id each), uneven splits of 1000, a
// 4096 vocabulary in packed quarters and misaligned halves, Qwen3's vocabulary in halves (75968
// each, packed) and in halves of 75967 and 75968 ids (an odd width: the scalar path on a big row).
const VocabCase kVocabCases[] = {{5, 17, 3, 0},   {4, 7, 7, 0},      {7, 1000, 3, 0},   {6, 1000, 4, 1},
                                 {5, 4096, 4, 0}, {9, 4096, 2, 3},   {3, 151936, 2, 0}, {2, 151935, 2, 0}};

template <typename T>
std::vector<T> as(const std::vector<float>& v) {
  if constexpr (sizeof(T) == 2) return opd::testing::to_bf16(v); else return v;
}

// The full row's log-sum-exp in double, rounded to the fp32 the GPU ops take.
std::vector<float> full_lse(const std::vector<double>& x, int N, int V) {
  std::vector<float> lse(N);
  for (int n = 0; n < N; ++n) {
    const double* r = x.data() + static_cast<size_t>(n) * V;
    const double m = *std::max_element(r, r + V);
    double s = 0;
    for (int v = 0; v < V; ++v) s += std::exp(r[v] - m);
    lse[n] = static_cast<float>(m + std::log(s));
  }
  return lse;
}

// tol: the relative tolerance of outputs written in T (the statistics are fp32 either way).
template <typename T>
void vocab_ops_match_cpu(const VocabCase& k, uint32_t seed, double tol) {
  const int N = k.N, V = k.V;
  const size_t NV = static_cast<size_t>(N) * V;
  // Student logits and a teacher that mostly agrees; one id of row 0 ruled out by both (-inf),
  // which must add no term anywhere.
  auto xs = opd::testing::lm_logits(N, V, seed);
  const auto noise = opd::testing::random_vector<float>(NV, seed + 1, -1.0, 1.0);
  std::vector<float> xt(NV);
  for (size_t i = 0; i < NV; ++i) xt[i] = xs[i] + noise[i];
  if (V > 1) xs[V / 2] = -INFINITY, xt[V / 2] = -INFINITY;
  std::vector<float> ltf(NV);
  opd::cpu::log_softmax_forward(ltf.data(), xt.data(), N, V);
  const auto x = as<T>(xs), lt = as<T>(ltf);
  const auto xd = opd::testing::to_double(x);
  const auto lse = full_lse(xd, N, V);
  const auto lsed = opd::testing::to_double(lse);
  const auto targets = opd::testing::targets_with_skips(N, V, seed + 2);  // every 5th row -1
  const auto dlogp = opd::testing::random_vector<float>(N, seed + 3);
  const auto dlogpd = opd::testing::to_double(dlogp);
  auto scale = opd::testing::random_vector<float>(N, seed + 4, 0.1, 1.0);
  scale[N - 1] = 0.0f;
  const auto scaled = opd::testing::to_double(scale);
  const auto dx0 = as<T>(opd::testing::random_vector<float>(NV, seed + 5, -1e-3, 1e-3));

  // kl: the sum of the CPU partials over all shards, rounded to fp32 (the gradient's input).
  std::vector<double> kl_sum(N, 0.0);
  for (int r = 0; r < k.R; ++r) {
    const int v0 = shard_start(V, k.R, r), Vl = shard_start(V, k.R, r + 1) - v0;
    const auto xsd = slab_of(xd, N, V, v0, Vl), ltsd = opd::testing::to_double(slab_of(lt, N, V, v0, Vl));
    std::vector<double> part(N);
    opd::cpu::reverse_kl_full_shard_partial(part.data(), xsd.data(), lsed.data(), ltsd.data(), N, Vl);
    for (int n = 0; n < N; ++n) kl_sum[n] += part[n];
  }
  const std::vector<float> kl(kl_sum.begin(), kl_sum.end());
  const auto kld = opd::testing::to_double(kl);

  DeviceBuffer<float> d_lse(lse), d_dlogp(dlogp), d_scale(scale), d_kl(kl);
  DeviceBuffer<int> d_t(targets);
  for (int r = 0; r < k.R; ++r) {
    const int v0 = shard_start(V, k.R, r), Vl = shard_start(V, k.R, r + 1) - v0;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " shard " << r << " of " << k.R << " [" << v0
                                      << ", " << v0 + Vl << ") offset=" << k.offset << " bf16=" << (sizeof(T) == 2));
    const auto xs_t = slab_of(x, N, V, v0, Vl), lts_t = slab_of(lt, N, V, v0, Vl), dxs_t = slab_of(dx0, N, V, v0, Vl);
    const auto xsd = opd::testing::to_double(xs_t), ltsd = opd::testing::to_double(lts_t);
    const size_t NVl = static_cast<size_t>(N) * Vl;

    std::vector<double> ent(N), dx = opd::testing::to_double(dxs_t), ls(NVl), part(N), grad(NVl);
    opd::cpu::entropy_shard(ent.data(), xsd.data(), lsed.data(), N, Vl);
    opd::cpu::logprobs_backward_shard(dx.data(), dlogpd.data(), xsd.data(), lsed.data(), targets.data(), N, Vl, v0);
    opd::cpu::log_softmax_shard(ls.data(), xsd.data(), lsed.data(), N, Vl);
    opd::cpu::reverse_kl_full_shard_partial(part.data(), xsd.data(), lsed.data(), ltsd.data(), N, Vl);
    opd::cpu::reverse_kl_full_shard_grad(grad.data(), xsd.data(), lsed.data(), ltsd.data(), kld.data(),
                                         scaled.data(), N, Vl);

    DeviceBuffer<T> d_x(xs_t, k.offset), d_lt(lts_t, k.offset), d_dx(dxs_t, k.offset), d_ls(NVl, k.offset),
        d_ls_inplace(xs_t, k.offset), d_grad(NVl, k.offset), d_grad_inplace(xs_t, k.offset);
    DeviceBuffer<float> d_ent(N), d_part(N);
    opd::cuda::entropy_shard(d_ent.get(), d_x.get(), d_lse.get(), N, Vl);
    opd::cuda::logprobs_backward_shard(d_dx.get(), d_dlogp.get(), d_x.get(), d_lse.get(), d_t.get(), N, Vl, v0);
    opd::cuda::log_softmax_shard(d_ls.get(), d_x.get(), d_lse.get(), N, Vl);
    opd::cuda::log_softmax_shard(d_ls_inplace.get(), d_ls_inplace.get(), d_lse.get(), N, Vl);
    opd::cuda::reverse_kl_full_shard_partial(d_part.get(), d_x.get(), d_lse.get(), d_lt.get(), N, Vl);
    opd::cuda::reverse_kl_full_shard_grad(d_grad.get(), d_x.get(), d_lse.get(), d_lt.get(), d_kl.get(),
                                          d_scale.get(), N, Vl);
    opd::cuda::reverse_kl_full_shard_grad(d_grad_inplace.get(), d_grad_inplace.get(), d_lse.get(), d_lt.get(),
                                          d_kl.get(), d_scale.get(), N, Vl);
    CUDA_CHECK(cudaDeviceSynchronize());

    // Tolerances as the whole-row ops' tests (test_logprobs_gpu, test_reverse_kl_gpu).
    opd::testing::expect_near_all(d_ent.host(), ent, 2e-4, 1e-4, "entropy_shard");
    opd::testing::expect_near_all(d_dx.host(), dx, 2e-5, tol, "logprobs_backward_shard", Vl);
    opd::testing::expect_near_all(d_ls.host(), ls, 2e-4 + tol * 20, tol, "log_softmax_shard", Vl);
    opd::testing::expect_near_all(d_ls_inplace.host(), ls, 2e-4 + tol * 20, tol, "log_softmax_shard (in place)", Vl);
    opd::testing::expect_near_all(d_part.host(), part, 3e-4, 1e-4, "reverse_kl_full_shard_partial");
    opd::testing::expect_near_all(d_grad.host(), grad, 2e-5, 2 * tol, "reverse_kl_full_shard_grad", Vl);
    opd::testing::expect_near_all(d_grad_inplace.host(), grad, 2e-5, 2 * tol, "reverse_kl_full_shard_grad (in place)",
                                  Vl);
  }
}

// ---- top-K candidates and the top-K reverse KL on a shard ---------------------------------------

// ids [N, K1] for the top-K reverse KL: distinct ids per row, some entries absent (-1), row 1 with
// every third entry absent and the last row all absent (an empty set S_n). The teacher's log-probs
// of them are any negative numbers (the op renormalises over S_n).
std::vector<int> topk_ids(int N, int V, int K1, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int> ids(static_cast<size_t>(N) * K1), order(V);
  for (int n = 0; n < N; ++n) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), gen);
    if (n == 0) {  // the last id, and row 0's -inf logit
      std::iter_swap(order.begin(), std::find(order.begin(), order.end(), V - 1));
      if (K1 > 1 && V / 2 != V - 1) std::iter_swap(order.begin() + 1, std::find(order.begin(), order.end(), V / 2));
    }
    int* id = ids.data() + static_cast<size_t>(n) * K1;
    for (int j = 0; j < K1; ++j) id[j] = order[j];
    if (n == 1)
      for (int j = 0; j < K1; j += 3) id[j] = -1;
    if (n == N - 1) std::fill(id, id + K1, -1);
  }
  return ids;
}

template <typename T>
void topk_ops_match_cpu(const VocabCase& k, uint32_t seed, double tol) {
  const int N = k.N, V = k.V;
  const size_t NV = static_cast<size_t>(N) * V;
  auto xs = opd::testing::lm_logits(N, V, seed);
  if (V > 1) xs[V / 2] = -INFINITY;  // row 0: a ruled-out token, ranked last, no mass
  if (N > 2)  // row 2 in whole numbers: ties, which rank lower id first (bf16 rounding makes more)
    for (int v = 0; v < V; ++v) xs[2 * static_cast<size_t>(V) + v] = std::floor(xs[2 * static_cast<size_t>(V) + v]);
  const auto x = as<T>(xs);
  const auto xd = opd::testing::to_double(x);
  std::vector<float> xf(NV);  // the values the GPU reads, for the fp32 CPU op
  for (size_t i = 0; i < NV; ++i) xf[i] = static_cast<float>(xd[i]);
  const auto lse = full_lse(xd, N, V);
  const auto lsed = opd::testing::to_double(lse);
  // Wide vocabularies take K1 past 64, so the kernels' per-lane loops (32 ids a lane step) turn twice.
  const int K1 = std::min(V > 64 ? 65 : 13, V);
  const auto ids = topk_ids(N, V, K1, seed + 1);
  const auto lt = opd::testing::random_vector<float>(static_cast<size_t>(N) * K1, seed + 2, -9.0, -0.05);
  const auto ltd = opd::testing::to_double(lt);
  auto scale = opd::testing::random_vector<float>(N, seed + 3, 0.1, 1.0);
  scale[N / 2] = 0.0f;
  const auto scaled = opd::testing::to_double(scale);

  // zs and a summed over all shards by the CPU op, combined, rounded to the fp32 the grad takes.
  std::vector<double> zsum(N, 0.0), asum(N, 0.0);
  for (int r = 0; r < k.R; ++r) {
    const int v0 = shard_start(V, k.R, r), Vl = shard_start(V, k.R, r + 1) - v0;
    const auto xsd = slab_of(xd, N, V, v0, Vl);
    std::vector<double> z(N), a(N);
    opd::cpu::reverse_kl_topk_shard_partial(z.data(), a.data(), xsd.data(), lsed.data(), ids.data(), ltd.data(), N,
                                            Vl, v0, K1);
    for (int n = 0; n < N; ++n) zsum[n] += z[n], asum[n] += a[n];
  }
  std::vector<double> kl_sum(N);
  opd::cpu::reverse_kl_topk_combine(kl_sum.data(), zsum.data(), asum.data(), N);
  const std::vector<float> zs(zsum.begin(), zsum.end()), kl(kl_sum.begin(), kl_sum.end());
  const auto zsd = opd::testing::to_double(zs), kld = opd::testing::to_double(kl);

  DeviceBuffer<float> d_lse(lse), d_lt(lt), d_scale(scale), d_zs(zs), d_kl(kl);
  DeviceBuffer<int> d_ids(ids);
  for (int r = 0; r < k.R; ++r) {
    const int v0 = shard_start(V, k.R, r), Vl = shard_start(V, k.R, r + 1) - v0;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " shard " << r << " of " << k.R << " [" << v0
                                      << ", " << v0 + Vl << ") offset=" << k.offset << " bf16=" << (sizeof(T) == 2));
    const auto xs_t = slab_of(x, N, V, v0, Vl);
    const auto xsd = opd::testing::to_double(xs_t);
    const auto xsf = slab_of(xf, N, V, v0, Vl);
    const size_t NVl = static_cast<size_t>(N) * Vl;
    DeviceBuffer<T> d_x(xs_t, k.offset), d_grad(NVl, k.offset), d_grad_inplace(xs_t, k.offset);

    // Candidates: K below the shard's width and, on narrow shards, at and above it (a pass over
    // the slab per pick: a K of Vl on a wide shard would take minutes). Exact: the ranking key
    // x - lse is one fp32 subtraction on both sides.
    std::vector<int> ks = {1, 4, 37};
    if (Vl <= 64) ks.insert(ks.end(), {Vl, Vl + 3});
    for (const int K : ks) {
      std::vector<int> want_ids(static_cast<size_t>(N) * K);
      std::vector<float> want_lp(static_cast<size_t>(N) * K);
      opd::cpu::topk_shard_candidates(want_ids.data(), want_lp.data(), xsf.data(), lse.data(), N, Vl, v0, K);
      DeviceBuffer<int> d_cid(static_cast<size_t>(N) * K);
      DeviceBuffer<float> d_clp(static_cast<size_t>(N) * K);
      opd::cuda::topk_shard_candidates(d_cid.get(), d_clp.get(), d_x.get(), d_lse.get(), N, Vl, v0, K);
      CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(d_cid.host(), want_ids) << "topk_shard_candidates ids, K=" << K;
      const auto got_lp = d_clp.host();
      for (size_t i = 0; i < got_lp.size(); ++i)
        ASSERT_TRUE(got_lp[i] == want_lp[i]) << "topk_shard_candidates logp, K=" << K << " at [" << i / K << ", "
                                             << i % K << "]: got " << got_lp[i] << ", expected " << want_lp[i];
    }

    std::vector<double> z(N), a(N), grad(NVl);
    opd::cpu::reverse_kl_topk_shard_partial(z.data(), a.data(), xsd.data(), lsed.data(), ids.data(), ltd.data(), N,
                                            Vl, v0, K1);
    opd::cpu::reverse_kl_topk_shard_grad(grad.data(), xsd.data(), lsed.data(), zsd.data(), ids.data(), ltd.data(),
                                         kld.data(), scaled.data(), N, Vl, v0, K1);
    DeviceBuffer<float> d_z(N), d_a(N);
    opd::cuda::reverse_kl_topk_shard_partial(d_z.get(), d_a.get(), d_x.get(), d_lse.get(), d_ids.get(), d_lt.get(), N,
                                             Vl, v0, K1);
    opd::cuda::reverse_kl_topk_shard_grad(d_grad.get(), d_x.get(), d_lse.get(), d_zs.get(), d_ids.get(), d_lt.get(),
                                          d_kl.get(), d_scale.get(), N, Vl, v0, K1);
    opd::cuda::reverse_kl_topk_shard_grad(d_grad_inplace.get(), d_grad_inplace.get(), d_lse.get(), d_zs.get(),
                                          d_ids.get(), d_lt.get(), d_kl.get(), d_scale.get(), N, Vl, v0, K1);
    CUDA_CHECK(cudaDeviceSynchronize());
    opd::testing::expect_near_all(d_z.host(), z, 1e-6, 1e-4, "reverse_kl_topk_shard_partial zs");
    opd::testing::expect_near_all(d_a.host(), a, 3e-4, 1e-4, "reverse_kl_topk_shard_partial a");
    opd::testing::expect_near_all(d_grad.host(), grad, 2e-5, 2 * tol, "reverse_kl_topk_shard_grad", Vl);
    opd::testing::expect_near_all(d_grad_inplace.host(), grad, 2e-5, 2 * tol, "reverse_kl_topk_shard_grad (in place)",
                                  Vl);
  }
}

}  // namespace

TEST_F(VocabShardGpu, Fp32MatchCpu) {
  uint32_t seed = 40;
  for (const VocabCase& k : kVocabCases) vocab_ops_match_cpu<float>(k, seed += 9, 1e-4);
}

// bf16 logits and teacher rows: the statistics are fp32, so only the bf16 outputs (gradients,
// log-softmax rows) carry bf16 rounding (2^-9 relative).
TEST_F(VocabShardGpu, Bf16MatchCpu) {
  uint32_t seed = 400;
  for (const VocabCase& k : kVocabCases) vocab_ops_match_cpu<opd::cuda::bf16>(k, seed += 9, 8e-3);
}

// The shards' entropy shares and KL partials add up to the whole-row ops' results.
TEST_F(VocabShardGpu, SharesSumToWholeRow) {
  const int N = 6, V = 50257, R = 4;
  auto xs = opd::testing::lm_logits(N, V, 77);
  const auto noise = opd::testing::random_vector<float>(size_t(N) * V, 78, -1.0, 1.0);
  std::vector<float> xt(xs.size()), lt(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) xt[i] = xs[i] + noise[i];
  opd::cpu::log_softmax_forward(lt.data(), xt.data(), N, V);
  const auto xd = opd::testing::to_double(xs), ltd = opd::testing::to_double(lt);
  std::vector<int> targets(N, 0);
  std::vector<double> logp(N), ent(N), kl(N);
  opd::cpu::logprobs_forward(logp.data(), ent.data(), xd.data(), targets.data(), N, V);
  const std::vector<double> no_scale(N, 0.0);
  opd::cpu::reverse_kl_full(kl.data(), static_cast<double*>(nullptr), xd.data(), ltd.data(), no_scale.data(), N, V);
  DeviceBuffer<float> d_lse(full_lse(xd, N, V)), d_ent(N), d_part(N);
  std::vector<double> ent_sum(N, 0.0), kl_sum(N, 0.0);
  for (int r = 0; r < R; ++r) {
    const int v0 = shard_start(V, R, r), Vl = shard_start(V, R, r + 1) - v0;
    DeviceBuffer<float> d_x(slab_of(xs, N, V, v0, Vl)), d_lt(slab_of(lt, N, V, v0, Vl));
    opd::cuda::entropy_shard(d_ent.get(), d_x.get(), d_lse.get(), N, Vl);
    opd::cuda::reverse_kl_full_shard_partial(d_part.get(), d_x.get(), d_lse.get(), d_lt.get(), N, Vl);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto e = d_ent.host(), p = d_part.host();
    for (int n = 0; n < N; ++n) ent_sum[n] += e[n], kl_sum[n] += p[n];
  }
  opd::testing::expect_near_all(ent_sum, ent, 5e-4, 1e-4, "sum of the entropy shares");
  opd::testing::expect_near_all(kl_sum, kl, 5e-4, 1e-4, "sum of the KL partials");
}

TEST_F(VocabShardGpu, TopKFp32MatchCpu) {
  uint32_t seed = 70;
  for (const VocabCase& k : kVocabCases) topk_ops_match_cpu<float>(k, seed += 9, 1e-4);
}

TEST_F(VocabShardGpu, TopKBf16MatchCpu) {
  uint32_t seed = 700;
  for (const VocabCase& k : kVocabCases) topk_ops_match_cpu<opd::cuda::bf16>(k, seed += 9, 8e-3);
}

// A NaN logit (a diverging model) leaves the row NaN: each pick is a real id with its log-prob, or
// -1 with NaN once nothing ranks after the NaN; never a made-up id with a log-prob of 0.
TEST_F(VocabShardGpu, TopKOfANanRowStaysNan) {
  const int N = 2, Vl = 40, v0 = 40, K = 6;
  std::vector<float> x = opd::testing::lm_logits(N, Vl, 5);
  x[7] = NAN;  // row 0
  const std::vector<float> lse = {NAN, 3.0f};  // a NaN anywhere in the whole row makes its lse NaN
  DeviceBuffer<float> d_x(x), d_lse(lse), d_lp(static_cast<size_t>(N) * K);
  DeviceBuffer<int> d_ids(static_cast<size_t>(N) * K);
  opd::cuda::topk_shard_candidates(d_ids.get(), d_lp.get(), d_x.get(), d_lse.get(), N, Vl, v0, K);
  const auto ids = d_ids.host();
  const auto lp = d_lp.host();
  for (int j = 0; j < K; ++j) {
    EXPECT_TRUE(ids[j] == -1 || (ids[j] >= v0 && ids[j] < v0 + Vl)) << "pick " << j << ": id " << ids[j];
    EXPECT_TRUE(std::isnan(lp[j])) << "pick " << j << ": log-prob " << lp[j];
    EXPECT_TRUE(ids[K + j] >= v0 && ids[K + j] < v0 + Vl && std::isfinite(lp[K + j])) << "row 1 pick " << j;
  }
}

TEST_F(VocabShardGpu, RejectsBadShapes) {
  float* none = nullptr;
  EXPECT_THROW(opd::cuda::entropy_shard(none, none, none, 1, 0), opd::Error);
  EXPECT_THROW(opd::cuda::log_softmax_shard(none, none, none, -1, 4), opd::Error);
  EXPECT_THROW(
      opd::cuda::logprobs_backward_shard(none, none, none, none, static_cast<const int*>(nullptr), 1, 4, -1),
      opd::Error);
  EXPECT_THROW(opd::cuda::reverse_kl_full_shard_partial(none, none, none, none, 1, 0), opd::Error);
  EXPECT_THROW(opd::cuda::reverse_kl_full_shard_grad(none, none, none, none, none, none, -2, 4), opd::Error);
  const int* no_ids = nullptr;
  int* no_out = nullptr;
  EXPECT_THROW(opd::cuda::topk_shard_candidates(no_out, none, none, none, 1, 4, 0, 0), opd::Error);
  EXPECT_THROW(opd::cuda::topk_shard_candidates(no_out, none, none, none, 1, 0, 0, 2), opd::Error);
  EXPECT_THROW(opd::cuda::reverse_kl_topk_shard_partial(none, none, none, none, no_ids, none, 1, 4, -1, 3),
               opd::Error);
  EXPECT_THROW(opd::cuda::reverse_kl_topk_shard_partial(none, none, none, none, no_ids, none, 1, 4, 0, 0),
               opd::Error);
  EXPECT_THROW(opd::cuda::reverse_kl_topk_shard_grad(none, none, none, none, no_ids, none, none, none, 1, 4, 0, 8193),
               opd::Error);
}

#else

TEST(VocabShardGpu, Fp32MatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
