#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/attention.h"

#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"

using opd::testing::random_vector;
using bf16 = __nv_bfloat16;

namespace {

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, sizeof(T) * std::max<size_t>(n, 1))); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    CUDA_CHECK(cudaMemcpy(p_, host.data(), sizeof(T) * n_, cudaMemcpyHostToDevice));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(p_); }
  T* get() { return p_; }
  std::vector<T> host() const {
    std::vector<T> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, sizeof(T) * n_, cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// Random values already rounded to bf16: the GPU gets the bf16s, the CPU op the same numbers in float.
struct Bf16Data {
  std::vector<bf16> dev;
  std::vector<float> ref;
};
Bf16Data random_bf16(size_t n, uint32_t seed, double lo, double hi) {
  Bf16Data d;
  const auto x = random_vector<float>(n, seed, lo, hi);
  d.dev.resize(n);
  d.ref.resize(n);
  for (size_t i = 0; i < n; ++i) {
    d.dev[i] = __float2bfloat16_rn(x[i]);
    d.ref[i] = __bfloat162float(d.dev[i]);
  }
  return d;
}

std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(v[i]);
  return r;
}

// Every element within atol + rtol * |want|; on failure names the worst element (as a multi-index
// over `dims`, outermost first), both values and how many missed, so one run shows what is wrong.
void expect_near_all(const std::vector<float>& got, const std::vector<float>& want, double atol, double rtol,
                     const std::string& what, const std::vector<int>& dims) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t misses = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double excess = std::isnan(err) ? INFINITY : err - (atol + rtol * std::fabs(want[i]));
    if (excess > 0) ++misses;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  if (misses == 0) return;
  std::string index;
  size_t rest = worst;
  for (int d = int(dims.size()) - 1; d >= 0; --d) {
    index = std::to_string(rest % dims[d]) + (index.empty() ? "" : ",") + index;
    rest /= dims[d];
  }
  ADD_FAILURE() << what << ": " << misses << " of " << got.size() << " elements out of tolerance (atol " << atol
                << ", rtol " << rtol << "); worst at [" << index << "] (flat " << worst << "): got " << got[worst]
                << ", expected " << want[worst];
}

class AttentionGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

struct FwdCase {
  int B, T, H, Hkv, D;
};

}  // namespace

// The CPU op in float on the same bf16-rounded inputs is the reference: what remains is the
// kernel's bf16 rounding of P and of the output. Scores have a spread of ~1.3 so that the softmax
// is neither flat nor one-hot. Sequence lengths below, at, and between multiples of the 64-row tile.
// The small head dims (16, 32: the miniature models) at group sizes 1 and 4 as well.
TEST_F(AttentionGpu, ForwardMatchesCpu) {
  const FwdCase cases[] = {
      {2, 1, 4, 4, 64},    {2, 17, 8, 2, 128},  {1, 64, 8, 1, 64},  {2, 100, 8, 8, 128}, {1, 257, 8, 1, 128},
      {2, 257, 4, 1, 64},  {1, 1000, 4, 1, 128}, {1, 1000, 8, 2, 64}, {3, 129, 4, 4, 128}, {2, 64, 8, 8, 64},
      {2, 1, 4, 4, 16},    {2, 17, 8, 2, 16},   {1, 64, 4, 4, 16},  {3, 129, 8, 2, 16},  {1, 300, 4, 1, 16},
      {2, 1, 8, 2, 32},    {2, 17, 4, 4, 32},   {2, 100, 8, 2, 32}, {1, 128, 4, 1, 32},  {1, 257, 8, 8, 32}};
  uint32_t seed = 100;
  for (const FwdCase& c : cases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " T=" << c.T << " H=" << c.H << " Hkv=" << c.Hkv
                                    << " D=" << c.D);
    const size_t nq = size_t(c.B) * c.T * c.H * c.D, nkv = size_t(c.B) * c.T * c.Hkv * c.D;
    const auto q = random_bf16(nq, seed++, -2, 2), k = random_bf16(nkv, seed++, -2, 2),
               v = random_bf16(nkv, seed++, -1, 1);
    std::vector<float> out(nq), lse(size_t(c.B) * c.H * c.T);
    opd::cpu::attention_forward(out.data(), lse.data(), q.ref.data(), k.ref.data(), v.ref.data(), c.B, c.T, c.H,
                                c.Hkv, c.D);

    DeviceBuffer<bf16> dq(q.dev), dk(k.dev), dv(v.dev), dout(nq);
    DeviceBuffer<float> dlse(lse.size());
    opd::cuda::attention_forward(dout.get(), dlse.get(), dq.get(), dk.get(), dv.get(), c.B, c.T, c.H, c.Hkv, c.D);
    CUDA_CHECK(cudaDeviceSynchronize());
    expect_near_all(to_float(dout.host()), out, 2e-2, 0, "out [B,T,H,D]", {c.B, c.T, c.H, c.D});
    expect_near_all(dlse.host(), lse, 1e-3, 1e-4, "lse [B,H,T]", {c.B, c.H, c.T});
  }
}

TEST(AttentionGpuShapes, UnsupportedHeadDimIsRefusedByName) {
  // Refused before any CUDA call, so this runs with or without a device.
  try {
    opd::cuda::attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 8, 4, 4, 96);
    FAIL() << "D=96 was accepted";
  } catch (const opd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("D=96"), std::string::npos) << e.what();
  }
  // Below the smallest kernel, and between the small ones.
  EXPECT_THROW(opd::cuda::attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 8, 4, 4, 8), opd::Error);
  EXPECT_THROW(opd::cuda::attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 8, 4, 4, 24), opd::Error);
  EXPECT_THROW(opd::cuda::attention_decode(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1,
                                           16, 4, 4, 8),
               opd::Error);
  EXPECT_THROW(opd::cuda::attention_decode(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1,
                                           16, 4, 4, 80),
               opd::Error);
  EXPECT_THROW(opd::cuda::attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 8, 6, 4, 64),
               opd::Error);
}

TEST_F(AttentionGpu, KvCacheWriteIsExact) {
  const int B = 3, Tn = 37, S = 50, Hkv = 2;
  uint32_t seed = 1;
  for (int D : {16, 32, 64}) {
    SCOPED_TRACE(testing::Message() << "D=" << D);
    const size_t ncache = size_t(B) * S * Hkv * D, nkv = size_t(B) * Tn * Hkv * D;
    const auto kc = random_bf16(ncache, seed++, -1, 1), vc = random_bf16(ncache, seed++, -1, 1);
    const auto k = random_bf16(nkv, seed++, -1, 1), v = random_bf16(nkv, seed++, -1, 1);
    auto kc_ref = kc.ref, vc_ref = vc.ref;
    opd::cpu::kv_cache_write(kc_ref.data(), vc_ref.data(), k.ref.data(), v.ref.data(), B, Tn, S, Hkv, D);
    DeviceBuffer<bf16> dkc(kc.dev), dvc(vc.dev), dk(k.dev), dv(v.dev);
    opd::cuda::kv_cache_write(dkc.get(), dvc.get(), dk.get(), dv.get(), B, Tn, S, Hkv, D);
    CUDA_CHECK(cudaDeviceSynchronize());
    expect_near_all(to_float(dkc.host()), kc_ref, 0, 0, "k_cache [B,S,Hkv,D]", {B, S, Hkv, D});
    expect_near_all(to_float(dvc.host()), vc_ref, 0, 0, "v_cache [B,S,Hkv,D]", {B, S, Hkv, D});
  }
}

struct DecodeCase {
  int S, H, Hkv, D;
  std::vector<int> pos;  // one per sequence
};

// Caches full of random rows (those past pos must be ignored), positions from the first row to
// beyond several 256-row chunks, different per sequence; group sizes 1, 4, 8 and 16 (the last takes
// two head groups per kv head). At D = 16 a block has fewer output cells than threads: group sizes
// 4 and 8 leave different numbers of them idle.
TEST_F(AttentionGpu, DecodeMatchesCpu) {
  const DecodeCase cases[] = {{64, 4, 4, 64, {0, 1, 63}},
                              {3072, 8, 2, 128, {2999, 255, 256, 1000}},
                              {3000, 8, 1, 64, {2999, 0, 511}},
                              {600, 16, 1, 128, {599, 300}},
                              {1024, 8, 8, 128, {1023}},
                              {300, 4, 4, 16, {0, 17, 299}},
                              {1000, 8, 2, 16, {999, 255, 256}},
                              {600, 16, 1, 16, {599, 64}},
                              {80, 8, 1, 16, {79}},
                              {300, 4, 4, 32, {299, 1, 100}},
                              {1500, 8, 2, 32, {1499, 511, 0}},
                              {513, 16, 2, 32, {512, 256}}};
  uint32_t seed = 500;
  for (const DecodeCase& c : cases) {
    const int B = int(c.pos.size());
    SCOPED_TRACE(testing::Message() << "B=" << B << " S=" << c.S << " H=" << c.H << " Hkv=" << c.Hkv
                                    << " D=" << c.D);
    const size_t ncache = size_t(B) * c.S * c.Hkv * c.D, nnew = size_t(B) * c.Hkv * c.D,
                 nq = size_t(B) * c.H * c.D;
    const auto kc = random_bf16(ncache, seed++, -2, 2), vc = random_bf16(ncache, seed++, -1, 1);
    const auto kn = random_bf16(nnew, seed++, -2, 2), vn = random_bf16(nnew, seed++, -1, 1);
    const auto q = random_bf16(nq, seed++, -2, 2);
    auto kc_ref = kc.ref, vc_ref = vc.ref;
    std::vector<float> out(nq);
    opd::cpu::attention_decode(out.data(), q.ref.data(), kn.ref.data(), vn.ref.data(), kc_ref.data(),
                               vc_ref.data(), c.pos.data(), B, c.S, c.H, c.Hkv, c.D);

    DeviceBuffer<bf16> dq(q.dev), dkn(kn.dev), dvn(vn.dev), dkc(kc.dev), dvc(vc.dev), dout(nq);
    DeviceBuffer<int> dpos(c.pos);
    DeviceBuffer<unsigned char> ws(opd::cuda::attention_decode_workspace_bytes(B, c.S, c.H, c.D));
    opd::cuda::attention_decode(dout.get(), dq.get(), dkn.get(), dvn.get(), dkc.get(), dvc.get(), dpos.get(),
                                ws.get(), B, c.S, c.H, c.Hkv, c.D);
    CUDA_CHECK(cudaDeviceSynchronize());
    expect_near_all(to_float(dkc.host()), kc_ref, 0, 0, "k_cache [B,S,Hkv,D]", {B, c.S, c.Hkv, c.D});
    expect_near_all(to_float(dvc.host()), vc_ref, 0, 0, "v_cache [B,S,Hkv,D]", {B, c.S, c.Hkv, c.D});
    const auto got = to_float(dout.host());
    expect_near_all(got, out, 2e-2, 0, "out [B,H,D]", {B, c.H, c.D});
    // At long positions the output is small: a key dropped or counted twice moves it by less than
    // the absolute tolerance, but not by less than 1% of each sequence's output (relative RMS).
    const size_t per_seq = size_t(c.H) * c.D;
    for (int b = 0; b < B; ++b) {
      double se = 0, sw = 0;
      for (size_t i = b * per_seq; i < (b + 1) * per_seq; ++i)
        se += double(got[i] - out[i]) * (got[i] - out[i]), sw += double(out[i]) * out[i];
      EXPECT_LT(std::sqrt(se / std::max(sw, 1e-30)), 1e-2) << "sequence " << b << " at position " << c.pos[b];
    }
  }
}

#else

TEST(AttentionGpu, ForwardMatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
