// SwiGLU on the GPU against the CPU op (in double), in float and bf16.
#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"
#include "kernels/cpu/swiglu.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/swiglu.cuh"

using namespace opd::testing;

namespace {

class SwigluGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

// float keeps __expf's few-ulp error; bf16 adds one rounding of the output (2^-8 relative).
template <typename T>
constexpr double kAtol = sizeof(T) == 4 ? 1e-5 : 1e-3;
template <typename T>
constexpr double kRtol = sizeof(T) == 4 ? 1e-5 : 8e-3;

// Sizes: under one pack, not a multiple of a pack (a tail), several grid strides; offset 1
// makes every pointer misaligned, so the scalar kernels run.
struct Case {
  size_t n, offset;
};
const Case kCases[] = {{1, 0}, {13, 0}, {4099, 0}, {300007, 0}, {4099, 1}};

template <typename T>
void swiglu_matches_cpu() {
  uint32_t seed = 1;
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "n=" << k.n << " offset=" << k.offset);
    const auto gate = Storage<T>::to(random_vector<float>(k.n, seed++, -8.0, 8.0));
    const auto up = Storage<T>::to(random_vector<float>(k.n, seed++, -2.0, 2.0));
    const auto dout = Storage<T>::to(random_vector<float>(k.n, seed++));
    const auto g = to_double(Storage<T>::back(gate)), u = to_double(Storage<T>::back(up)),
               d = to_double(Storage<T>::back(dout));
    std::vector<double> out(k.n), dgate(k.n), dup(k.n);
    opd::cpu::swiglu_forward(out.data(), g.data(), u.data(), k.n);
    opd::cpu::swiglu_backward(dgate.data(), dup.data(), d.data(), g.data(), u.data(), k.n);

    DeviceBuffer<T> d_gate(gate, k.offset), d_up(up, k.offset), d_dout(dout, k.offset),
        d_out(std::vector<T>(k.n), k.offset), d_dgate(std::vector<T>(k.n), k.offset),
        d_dup(std::vector<T>(k.n), k.offset);
    opd::cuda::swiglu_forward(d_out.get(), d_gate.get(), d_up.get(), k.n);
    opd::cuda::swiglu_backward(d_dgate.get(), d_dup.get(), d_dout.get(), d_gate.get(), d_up.get(), k.n);
    expect_near_all(Storage<T>::back(d_out.host()), out, kAtol<T>, kRtol<T>, "out");
    expect_near_all(Storage<T>::back(d_dgate.host()), dgate, kAtol<T>, kRtol<T>, "dgate");
    expect_near_all(Storage<T>::back(d_dup.host()), dup, kAtol<T>, kRtol<T>, "dup");

    // In place, as the model may call it: out over gate, then dgate over gate and dup over up.
    opd::cuda::swiglu_forward(d_gate.get(), d_gate.get(), d_up.get(), k.n);
    expect_near_all(Storage<T>::back(d_gate.host()), out, kAtol<T>, kRtol<T>, "out in place");
    DeviceBuffer<T> g2(gate, k.offset), u2(up, k.offset);
    opd::cuda::swiglu_backward(g2.get(), u2.get(), d_dout.get(), g2.get(), u2.get(), k.n);
    expect_near_all(Storage<T>::back(g2.host()), dgate, kAtol<T>, kRtol<T>, "dgate in place");
    expect_near_all(Storage<T>::back(u2.host()), dup, kAtol<T>, kRtol<T>, "dup in place");
  }
}

}  // namespace

TEST_F(SwigluGpu, FloatMatchesCpu) { swiglu_matches_cpu<float>(); }
TEST_F(SwigluGpu, Bf16MatchesCpu) { swiglu_matches_cpu<bf16>(); }

#else

TEST(SwigluGpu, FloatMatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
