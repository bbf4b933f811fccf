// Test helpers for the CUDA kernels: a device copy of a host vector, and bf16 <-> float on the
// host. Only for builds with CUDA (include under #ifdef OPD_WITH_CUDA).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda/cuda_check.cuh"

namespace opd::testing {

using bf16 = __nv_bfloat16;

// A device copy of a host vector, starting `offset` elements into its allocation so that a test
// can hand the kernels pointers that are not 16-byte aligned.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host, size_t offset = 0) : n_(host.size()), offset_(offset) {
    CUDA_CHECK(cudaMalloc(&base_, sizeof(T) * (n_ + offset_ + 1)));
    if (n_) CUDA_CHECK(cudaMemcpy(get(), host.data(), sizeof(T) * n_, cudaMemcpyHostToDevice));
  }
  explicit DeviceBuffer(size_t n, size_t offset = 0) : DeviceBuffer(std::vector<T>(n), offset) {}  // zeroed
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(base_); }
  T* get() { return base_ + offset_; }
  std::vector<T> host() {
    std::vector<T> h(n_);
    CUDA_CHECK(cudaDeviceSynchronize());
    if (n_) CUDA_CHECK(cudaMemcpy(h.data(), get(), sizeof(T) * n_, cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* base_ = nullptr;
  size_t n_, offset_;
};

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __float2bfloat16_rn(v[i]);
  return r;
}

inline std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(v[i]);
  return r;
}

// v rounded to bf16 and back: the values a bf16 kernel actually reads.
inline std::vector<float> bf16_rounded(const std::vector<float>& v) { return to_float(to_bf16(v)); }

template <typename A>
std::vector<double> to_double(const std::vector<A>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Conversions between float test data and a kernel's storage type T (float or bf16).
template <typename T>
struct Storage;
template <>
struct Storage<float> {
  static std::vector<float> to(const std::vector<float>& v) { return v; }
  static std::vector<float> back(const std::vector<float>& v) { return v; }
};
template <>
struct Storage<bf16> {
  static std::vector<bf16> to(const std::vector<float>& v) { return to_bf16(v); }
  static std::vector<float> back(const std::vector<bf16>& v) { return to_float(v); }
};

// Every element within atol (vectors of float or double) + rtol * max(|want|, scale[i]); on a miss, reports the
// count and the worst element (index, got, want), the one a kernel's indexing bug shows first. `scale` (optional)
// holds the magnitude of an intermediate the result may have been rounded at, when it can exceed the result.
template <typename A, typename B>
void expect_near_all(const std::vector<A>& got, const std::vector<B>& want, double atol, double rtol,
                     const char* what, const std::vector<double>* scale = nullptr) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t misses = 0, worst = 0;
  double worst_excess = 0;
  bool worst_is_nan = false;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    const double mag = scale ? std::max(std::fabs(w), (*scale)[i]) : std::fabs(w);
    const double excess = std::fabs(g - w) - (atol + rtol * mag);
    if (excess <= 0) continue;
    const bool nan = std::isnan(excess);  // a NaN is the worst miss there is
    if (misses++ == 0 || (nan && !worst_is_nan) || (!worst_is_nan && excess > worst_excess))
      worst = i, worst_excess = excess, worst_is_nan = nan;
  }
  EXPECT_EQ(misses, 0u) << what << ": " << misses << " of " << got.size() << " out of tolerance (atol " << atol
                        << ", rtol " << rtol << "); worst [" << worst << "]: got " << double(got[worst])
                        << ", want " << double(want[worst]);
}

// Bit-identical vectors; on a miss, how many differ, the first, and the largest difference.
template <typename T>
void expect_bitwise_equal(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  size_t differ = 0, first = 0, worst = 0;
  double worst_diff = -1;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) == 0) continue;
    if (differ++ == 0) first = i;
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (!(d <= worst_diff)) worst_diff = d, worst = i;
  }
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << a.size() << " differ; first [" << first
                        << "]: " << double(a[first]) << " vs " << double(b[first]) << "; largest [" << worst
                        << "]: " << double(a[worst]) << " vs " << double(b[worst]);
}

}  // namespace opd::testing
