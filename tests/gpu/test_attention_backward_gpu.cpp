#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/attention.h"

#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"

using opd::testing::random_vector;

namespace {

// bf16 as its bit pattern, rounded to nearest even (the inputs are finite).
uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = to_bf16(v[i]);
  return r;
}
std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = from_bf16(v[i]);
  return r;
}
// Round a float vector through bf16, so that the CPU sees exactly what the GPU is given.
std::vector<float> bf16_rounded(std::vector<float> v) {
  for (auto& x : v) x = from_bf16(to_bf16(x));
  return v;
}

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, sizeof(T) * (n ? n : 1))); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    CUDA_CHECK(cudaMemcpy(p_, host.data(), sizeof(T) * n_, cudaMemcpyHostToDevice));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(p_); }
  T* get() { return p_; }
  std::vector<T> host() {
    std::vector<T> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, sizeof(T) * n_, cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

opd::cuda::bf16* bf(DeviceBuffer<uint16_t>& b) { return reinterpret_cast<opd::cuda::bf16*>(b.get()); }

struct Shape {
  int B, Tn, H, Hkv, D;
};

// One problem: bf16-rounded inputs, the forward's out (rounded to bf16) and lse from the CPU op in
// float, and the CPU backward in double on exactly those values as the reference.
struct Problem {
  Shape s;
  std::vector<float> q, k, v, dout, out, lse;
  std::vector<double> dq, dk, dv;

  Problem(Shape shape, uint32_t seed) : s(shape) {
    const size_t nq = size_t(s.B) * s.Tn * s.H * s.D, nk = size_t(s.B) * s.Tn * s.Hkv * s.D;
    // q wider than k: scores of standard deviation ~1, so some rows are peaked, not all flat.
    q = bf16_rounded(random_vector<float>(nq, seed, -3.0, 3.0));
    k = bf16_rounded(random_vector<float>(nk, seed + 1));
    v = bf16_rounded(random_vector<float>(nk, seed + 2));
    dout = bf16_rounded(random_vector<float>(nq, seed + 3));
    out.resize(nq);
    lse.resize(size_t(s.B) * s.H * s.Tn);
    opd::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.Tn, s.H, s.Hkv, s.D);
    out = bf16_rounded(out);

    auto d = [](const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); };
    const auto qd = d(q), kd = d(k), vd = d(v), dod = d(dout), od = d(out), ld = d(lse);
    dq.resize(nq), dk.resize(nk), dv.resize(nk);
    opd::cpu::attention_backward(dq.data(), dk.data(), dv.data(), dod.data(), qd.data(), kd.data(), vd.data(),
                                 od.data(), ld.data(), s.B, s.Tn, s.H, s.Hkv, s.D);
  }
};

struct Gradients {
  std::vector<uint16_t> dq, dk, dv;
};

Gradients run_gpu(const Problem& p, int runs = 1, std::vector<Gradients>* every = nullptr) {
  const Shape& s = p.s;
  DeviceBuffer<uint16_t> q(to_bf16(p.q)), k(to_bf16(p.k)), v(to_bf16(p.v)), dout(to_bf16(p.dout)),
      out(to_bf16(p.out));
  DeviceBuffer<float> lse(p.lse);
  DeviceBuffer<uint16_t> dq(p.q.size()), dk(p.k.size()), dv(p.k.size());
  const size_t ws_bytes = opd::cuda::attention_backward_workspace_bytes(s.B, s.Tn, s.H, s.Hkv, s.D);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  Gradients g;
  for (int r = 0; r < runs; ++r) {
    // Poison the outputs: every element must be written by the kernels.
    CUDA_CHECK(cudaMemset(dq.get(), 0xff, sizeof(uint16_t) * p.q.size()));
    CUDA_CHECK(cudaMemset(dk.get(), 0xff, sizeof(uint16_t) * p.k.size()));
    CUDA_CHECK(cudaMemset(dv.get(), 0xff, sizeof(uint16_t) * p.k.size()));
    opd::cuda::attention_backward(bf(dq), bf(dk), bf(dv), bf(dout), bf(q), bf(k), bf(v), bf(out), lse.get(),
                                  ws.get(), s.B, s.Tn, s.H, s.Hkv, s.D);
    CUDA_CHECK(cudaDeviceSynchronize());
    g = {dq.host(), dk.host(), dv.host()};
    if (every) every->push_back(g);
  }
  return g;
}

// Worst error relative to the gradient's largest magnitude, and the relative RMS error (which a
// small systematic error, such as a key dropped from every row, moves even when the worst does
// not). On failure names the worst element as (b, t, head, d).
void expect_gradient_close(const std::vector<uint16_t>& got_bits, const std::vector<double>& want, int Tn, int heads,
                           int D, const char* what) {
  const auto got = from_bf16(got_bits);
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_want = 0, sq_err = 0, sq_want = 0, worst = -1;
  size_t wi = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_want = std::fmax(max_want, std::fabs(want[i]));
    const double e = std::fabs(double(got[i]) - want[i]);
    sq_err += e * e, sq_want += want[i] * want[i];
    if (!(e <= worst)) worst = e, wi = i;  // also catches NaN
  }
  constexpr double kMaxTol = 2e-2, kRmsTol = 1e-2;
  const double scale = max_want > 0 ? max_want : 1.0;
  const double rms = sq_want > 0 ? std::sqrt(sq_err / sq_want) : std::sqrt(sq_err);
  const int d = int(wi % D), h = int(wi / D % heads), t = int(wi / D / heads % Tn), b = int(wi / D / heads / Tn);
  EXPECT_TRUE(worst <= kMaxTol * scale && rms <= kRmsTol)
      << what << ": worst |err| " << worst << " (" << worst / scale << " of max |grad| " << max_want << ", tol "
      << kMaxTol << ") at [b=" << b << " t=" << t << " head=" << h << " d=" << d << "]: got " << got[wi]
      << ", expected " << want[wi] << "; relative rms error " << rms << " (tol " << kRmsTol << ")";
}

class AttentionBackwardGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

}  // namespace

// Every head dim (16 and 32 are the miniature models'), GQA ratios 1, 4 and 8, and sequence
// lengths below, at and past the 64- and 128-row tiles (the dQ kernel's query tile is 128 rows at
// D = 128): 1, 17, 100, 129, 257 and 700 leave partial tiles; 64 and 128 are exactly one tile.
TEST_F(AttentionBackwardGpu, MatchesCpu) {
  const int heads[][2] = {{4, 4}, {8, 2}, {8, 1}};
  uint32_t seed = 1;
  for (int D : {16, 32, 64, 128}) {
    for (auto [H, Hkv] : heads) {
      for (int Tn : {1, 17, 64, 100, 128, 129, 257, 700}) {
        const Shape s{2, Tn, H, Hkv, D};
        SCOPED_TRACE(testing::Message() << "B=" << s.B << " T=" << Tn << " H=" << H << " Hkv=" << Hkv << " D=" << D);
        const Problem p(s, seed);
        seed += 10;
        const Gradients g = run_gpu(p);
        expect_gradient_close(g.dq, p.dq, Tn, H, D, "dq");
        expect_gradient_close(g.dk, p.dk, Tn, Hkv, D, "dk");
        expect_gradient_close(g.dv, p.dv, Tn, Hkv, D, "dv");
      }
    }
  }
}

TEST_F(AttentionBackwardGpu, RepeatedRunsAreBitIdentical) {
  for (const Shape s : {Shape{2, 257, 8, 2, 128}, Shape{3, 700, 8, 1, 64}, Shape{2, 257, 8, 2, 16},
                        Shape{3, 300, 4, 4, 32}}) {
    SCOPED_TRACE(testing::Message() << "T=" << s.Tn << " H=" << s.H << " Hkv=" << s.Hkv << " D=" << s.D);
    const Problem p(s, 77);
    std::vector<Gradients> runs;
    run_gpu(p, 3, &runs);
    for (size_t r = 1; r < runs.size(); ++r) {
      EXPECT_EQ(runs[r].dq, runs[0].dq) << "dq differs in run " << r;
      EXPECT_EQ(runs[r].dk, runs[0].dk) << "dk differs in run " << r;
      EXPECT_EQ(runs[r].dv, runs[0].dv) << "dv differs in run " << r;
    }
  }
}

// The border check comes before any device work, so it runs without a GPU too.
TEST(AttentionBackwardGpuBorder, RejectsUnsupportedHeadDim) {
  for (int D : {8, 24, 96})
    EXPECT_THROW(opd::cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                               nullptr, nullptr, nullptr, 1, 8, 4, 4, D),
                 opd::Error)
        << "D=" << D;
  EXPECT_THROW(opd::cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                             nullptr, nullptr, 1, 8, 6, 4, 64),
               opd::Error);
}

#else

TEST(AttentionBackwardGpu, MatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
