#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/logprobs.h"
#include "kernels/cpu/reverse_kl.h"

#ifdef OPD_WITH_CUDA
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/reverse_kl.cuh"
#include "vocab_gpu_util.h"

using opd::testing::DeviceBuffer;
using opd::testing::expect_near_all;
using opd::testing::to_double;

namespace {

struct Case {
  int N, V;
  size_t offset;
};

const Case kCases[] = {{3, 1, 0},   {5, 17, 0},    {7, 1000, 0},   {4, 1000, 1}, {33, 4096, 0},
                       {5, 4096, 3}, {3, 50257, 0}, {3, 151936, 0}, {2, 151936, 2}};

class ReverseKlGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

template <typename T>
std::vector<T> as(const std::vector<float>& v) {
  if constexpr (sizeof(T) == 2) return opd::testing::to_bf16(v); else return v;
}

// Student logits and a teacher that mostly agrees (its logits are the student's plus noise), as
// in distillation; one element of row 0 is ruled out by both (-inf), which must add nothing.
template <typename T>
void check_full(const Case& k, uint32_t seed, double tol_grad) {
  const int N = k.N, V = k.V;
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " offset=" << k.offset << " bf16="
                                    << (sizeof(T) == 2));
  const size_t NV = static_cast<size_t>(N) * V;
  auto xs = opd::testing::lm_logits(N, V, seed);
  const auto noise = opd::testing::random_vector<float>(NV, seed + 1, -1.0, 1.0);
  std::vector<float> xt(NV);
  for (size_t i = 0; i < NV; ++i) xt[i] = xs[i] + noise[i];
  if (V > 1) xs[V / 2] = -INFINITY, xt[V / 2] = -INFINITY;
  std::vector<float> ltf(NV);
  opd::cpu::log_softmax_forward(ltf.data(), xt.data(), N, V);
  const auto x = as<T>(xs), lt = as<T>(ltf);
  const auto xd = to_double(x), ltd = to_double(lt);
  auto scale = opd::testing::random_vector<float>(N, seed + 2, 0.1, 1.0);
  scale[N - 1] = 0.0f;
  const auto scaled = to_double(scale);
  std::vector<double> kl(N), dx(NV);
  opd::cpu::reverse_kl_full(kl.data(), dx.data(), xd.data(), ltd.data(), scaled.data(), N, V);

  DeviceBuffer<T> d_x(x, k.offset), d_lt(lt, k.offset), d_inplace(x, k.offset), d_dx(NV, k.offset);
  DeviceBuffer<float> d_scale(scale), d_kl(N), d_kl2(N), d_kl3(N);
  opd::cuda::reverse_kl_full(d_kl.get(), d_dx.get(), d_x.get(), d_lt.get(), d_scale.get(), N, V);
  opd::cuda::reverse_kl_full(d_kl2.get(), d_inplace.get(), d_inplace.get(), d_lt.get(), d_scale.get(), N, V);
  opd::cuda::reverse_kl_full(d_kl3.get(), static_cast<T*>(nullptr), d_x.get(), d_lt.get(), d_scale.get(), N, V);
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_near_all(d_kl.host(), kl, 3e-4, 1e-4, "kl");
  expect_near_all(d_kl2.host(), kl, 3e-4, 1e-4, "kl (in place)");
  expect_near_all(d_kl3.host(), kl, 3e-4, 1e-4, "kl (no gradient)");
  expect_near_all(d_dx.host(), dx, 2e-5, tol_grad, "dlogits", V);
  expect_near_all(d_inplace.host(), dx, 2e-5, tol_grad, "dlogits (in place)", V);
}

// ids: the teacher's top-K plus the sampled token, with absent (-1) entries and one row all absent.
template <typename T>
void check_topk(int N, int V, int K1, uint32_t seed, double tol_grad) {
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " K1=" << K1 << " bf16=" << (sizeof(T) == 2));
  const size_t NV = static_cast<size_t>(N) * V;
  const auto x = as<T>(opd::testing::lm_logits(N, V, seed));
  const auto xd = to_double(x);
  std::mt19937 gen(seed);
  std::vector<int> ids(static_cast<size_t>(N) * K1, -1);
  for (int n = 0; n < N; ++n) {
    std::vector<int> perm(V);
    for (int v = 0; v < V; ++v) perm[v] = v;
    std::shuffle(perm.begin(), perm.end(), gen);
    if (n == 1) continue;  // all absent
    for (int j = 0; j < K1 && j < V; ++j) ids[static_cast<size_t>(n) * K1 + j] = j % 4 == 3 ? -1 : perm[j];
  }
  const auto lt = opd::testing::random_vector<float>(static_cast<size_t>(N) * K1, seed + 1, -12.0, -0.1);
  const auto scale = opd::testing::random_vector<float>(N, seed + 2, 0.1, 1.0);
  const auto ltd = to_double(lt), scaled = to_double(scale);
  std::vector<double> kl(N), dx(NV);
  opd::cpu::reverse_kl_topk(kl.data(), dx.data(), xd.data(), ids.data(), ltd.data(), scaled.data(), N, V, K1);

  DeviceBuffer<T> d_x(x), d_dx(std::vector<T>(NV, T(1.0f))), d_inplace(x);
  DeviceBuffer<int> d_ids(ids);
  DeviceBuffer<float> d_lt(lt), d_scale(scale), d_kl(N), d_kl2(N), d_kl3(N);
  opd::cuda::reverse_kl_topk(d_kl.get(), d_dx.get(), d_x.get(), d_ids.get(), d_lt.get(), d_scale.get(), N, V, K1);
  opd::cuda::reverse_kl_topk(d_kl2.get(), d_inplace.get(), d_inplace.get(), d_ids.get(), d_lt.get(), d_scale.get(), N,
                             V, K1);
  opd::cuda::reverse_kl_topk(d_kl3.get(), static_cast<T*>(nullptr), d_x.get(), d_ids.get(), d_lt.get(), d_scale.get(),
                             N, V, K1);
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_near_all(d_kl.host(), kl, 1e-5, 1e-4, "kl");
  expect_near_all(d_kl2.host(), kl, 1e-5, 1e-4, "kl (in place)");
  expect_near_all(d_kl3.host(), kl, 1e-5, 1e-4, "kl (no gradient)");
  expect_near_all(d_dx.host(), dx, 2e-5, tol_grad, "dlogits", V);
  expect_near_all(d_inplace.host(), dx, 2e-5, tol_grad, "dlogits (in place)", V);
}

}  // namespace

TEST_F(ReverseKlGpu, FullFp32MatchesCpu) {
  uint32_t seed = 30;
  for (const Case& k : kCases) check_full<float>(k, seed += 3, 2e-4);
}

TEST_F(ReverseKlGpu, FullBf16MatchesCpu) {
  uint32_t seed = 300;
  for (const Case& k : kCases) check_full<opd::cuda::bf16>(k, seed += 3, 1e-2);
}

TEST_F(ReverseKlGpu, TopkMatchesCpu) {
  check_topk<float>(5, 17, 5, 1, 1e-4);
  check_topk<float>(7, 1000, 21, 2, 1e-4);
  check_topk<float>(3, 151936, 65, 3, 1e-4);
  check_topk<opd::cuda::bf16>(7, 1001, 21, 4, 1e-2);
  check_topk<opd::cuda::bf16>(3, 151936, 33, 5, 1e-2);
}

TEST_F(ReverseKlGpu, SampledAndPolicyGradientMatchCpu) {
  const int N = 1001;
  const auto a = opd::testing::random_vector<float>(N, 1, -5, 0), b = opd::testing::random_vector<float>(N, 2, -5, 0);
  const auto adv = opd::testing::random_vector<float>(N, 3, -2, 2), w = opd::testing::random_vector<float>(N, 4, 0, 1);
  const auto c = opd::testing::random_vector<float>(N, 5, -5, 0);
  std::vector<double> k(N), loss(N), dlogp(N);
  const auto ad = to_double(a), bd = to_double(b), cd = to_double(c), advd = to_double(adv), wd = to_double(w);
  opd::cpu::reverse_kl_sampled(k.data(), ad.data(), bd.data(), N);
  opd::cpu::policy_gradient_loss(loss.data(), dlogp.data(), cd.data(), ad.data(), advd.data(), wd.data(), N);
  DeviceBuffer<float> d_a(a), d_b(b), d_c(c), d_adv(adv), d_w(w), d_k(N), d_loss(N), d_dlogp(N);
  opd::cuda::reverse_kl_sampled(d_k.get(), d_a.get(), d_b.get(), N);
  opd::cuda::policy_gradient_loss(d_loss.get(), d_dlogp.get(), d_c.get(), d_a.get(), d_adv.get(), d_w.get(), N);
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_near_all(d_k.host(), k, 1e-6, 1e-6, "k");
  expect_near_all(d_loss.host(), loss, 1e-6, 1e-5, "loss");
  expect_near_all(d_dlogp.host(), dlogp, 1e-6, 1e-5, "dlogp");
}

#else

TEST(ReverseKlGpu, FullFp32MatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
