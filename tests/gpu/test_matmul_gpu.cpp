// The cuBLASLt GEMMs against the CPU op (in double on the same bf16-rounded inputs): forward with
// bf16 and fp32 outputs, with and without accumulation, and backward into bf16 or fp32 dinp and
// the fp32 dweight.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/matmul.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/matmul.cuh"

using namespace opd::testing;

namespace {

class MatmulGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

struct Case {
  int N, K, M;
  size_t offset;  // elements: 1 leaves every pointer 2- or 4-byte aligned only
};
// Odd sizes everywhere (no dimension a multiple of 8), the model's widths, the LM head's long M,
// and misaligned operands.
const Case kCases[] = {{7, 13, 5, 0}, {64, 128, 96, 0}, {300, 1024, 257, 0}, {129, 96, 3000, 0}, {33, 64, 48, 1}};

// fp32 accumulation over k products of values up to 1 in size: a few k * 2^-24 at worst, far less
// in practice; bf16 outputs add one rounding (2^-8 relative). The absolute term covers sums that
// cancel to near zero.
double atol_for(int k) { return 2e-6 * k; }
template <typename T>
constexpr double kRtol = sizeof(T) == 4 ? 1e-5 : 8e-3;

template <typename TOut>
void forward_matches_cpu() {
  opd::cuda::Matmul mm;
  uint32_t seed = 40;
  for (const Case& k : kCases) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "N=" << k.N << " K=" << k.K << " M=" << k.M << " offset=" << k.offset
                                        << " accumulate=" << accumulate);
      const auto inp = to_bf16(random_vector<float>(size_t(k.N) * k.K, seed++));
      const auto weight = to_bf16(random_vector<float>(size_t(k.M) * k.K, seed++));
      const auto out0 = Storage<TOut>::to(random_vector<float>(size_t(k.N) * k.M, seed++));
      auto want = to_double(Storage<TOut>::back(out0));
      const auto inp_d = to_double(to_float(inp)), weight_d = to_double(to_float(weight));
      opd::cpu::matmul_forward(want.data(), inp_d.data(), weight_d.data(), k.N, k.K, k.M, accumulate);

      // cuBLASLt may round the product to the output type before it adds the old values (seen on an
      // H200: bf16 results 7 ulps off where product and old value cancel), so a bf16 result is held
      // to the product's magnitude as well as its own.
      std::vector<double> product(want.size());
      opd::cpu::matmul_forward(product.data(), inp_d.data(), weight_d.data(), k.N, k.K, k.M, false);
      for (double& x : product) x = std::fabs(x);

      DeviceBuffer<bf16> d_inp(inp, k.offset), d_weight(weight, k.offset);
      DeviceBuffer<TOut> d_out(out0, k.offset);
      mm.forward(d_out.get(), d_inp.get(), d_weight.get(), k.N, k.K, k.M, accumulate);
      expect_near_all(Storage<TOut>::back(d_out.host()), want, atol_for(k.K), kRtol<TOut>, "out", &product);
    }
  }
}

template <typename TIn>
void backward_matches_cpu() {
  opd::cuda::Matmul mm;
  uint32_t seed = 80;
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << k.N << " K=" << k.K << " M=" << k.M << " offset=" << k.offset);
    const auto inp = to_bf16(random_vector<float>(size_t(k.N) * k.K, seed++));
    const auto weight = to_bf16(random_vector<float>(size_t(k.M) * k.K, seed++));
    const auto dout = to_bf16(random_vector<float>(size_t(k.N) * k.M, seed++));
    const auto dinp0 = Storage<TIn>::to(random_vector<float>(size_t(k.N) * k.K, seed++));
    const auto dweight0 = random_vector<float>(size_t(k.M) * k.K, seed++);
    auto want_dinp = to_double(Storage<TIn>::back(dinp0)), want_dweight = to_double(dweight0);
    const auto inp_d = to_double(to_float(inp)), weight_d = to_double(to_float(weight)),
               dout_d = to_double(to_float(dout));
    opd::cpu::matmul_backward(want_dinp.data(), want_dweight.data(), dout_d.data(), inp_d.data(), weight_d.data(),
                              k.N, k.K, k.M);

    std::vector<double> product(want_dinp.size()), unused(want_dweight.size());  // see forward_matches_cpu
    opd::cpu::matmul_backward(product.data(), unused.data(), dout_d.data(), inp_d.data(), weight_d.data(), k.N, k.K,
                              k.M);
    for (double& x : product) x = std::fabs(x);

    DeviceBuffer<bf16> d_inp(inp, k.offset), d_weight(weight, k.offset), d_dout(dout, k.offset);
    DeviceBuffer<TIn> d_dinp(dinp0, k.offset);
    DeviceBuffer<float> d_dweight(dweight0, k.offset);
    mm.backward(d_dinp.get(), d_dweight.get(), d_dout.get(), d_inp.get(), d_weight.get(), k.N, k.K, k.M);
    expect_near_all(Storage<TIn>::back(d_dinp.host()), want_dinp, atol_for(k.M), kRtol<TIn>, "dinp", &product);
    expect_near_all(d_dweight.host(), want_dweight, atol_for(k.N), 1e-5, "dweight");

    // Without dinp (the embedding's input has no gradient): dweight accumulates a second time.
    mm.backward<TIn>(nullptr, d_dweight.get(), d_dout.get(), d_inp.get(), d_weight.get(), k.N, k.K, k.M);
    std::vector<double> twice(want_dweight.size());
    for (size_t i = 0; i < twice.size(); ++i) twice[i] = 2 * want_dweight[i] - dweight0[i];
    expect_near_all(d_dweight.host(), twice, 2 * atol_for(k.N), 1e-5, "dweight, second accumulation");
  }
}

}  // namespace

TEST_F(MatmulGpu, ForwardBf16OutMatchesCpu) { forward_matches_cpu<bf16>(); }
TEST_F(MatmulGpu, ForwardFp32OutMatchesCpu) { forward_matches_cpu<float>(); }
TEST_F(MatmulGpu, BackwardBf16DinpMatchesCpu) { backward_matches_cpu<bf16>(); }
TEST_F(MatmulGpu, BackwardFp32DinpMatchesCpu) { backward_matches_cpu<float>(); }

// A shape seen again reuses its plan; an empty inner dimension zeroes the output, as on the CPU.
TEST_F(MatmulGpu, CachesPlansAndHandlesEmptyK) {
  opd::cuda::Matmul mm;
  const auto a = to_bf16(random_vector<float>(64 * 32, 1)), w = to_bf16(random_vector<float>(48 * 32, 2));
  DeviceBuffer<bf16> d_a(a), d_w(w);
  DeviceBuffer<float> d_out(std::vector<float>(64 * 48, 3.0f));
  for (int r = 0; r < 3; ++r) mm.forward(d_out.get(), d_a.get(), d_w.get(), 64, 32, 48);
  EXPECT_EQ(mm.cached_plans(), 1u);
  mm.forward(d_out.get(), d_a.get(), d_w.get(), 64, 0, 48);
  for (float x : d_out.host()) ASSERT_EQ(x, 0.0f);
  EXPECT_THROW(mm.forward(d_out.get(), d_a.get(), d_w.get(), -1, 32, 48), opd::Error);
}

#else

TEST(MatmulGpu, ForwardBf16OutMatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
