// Device memory for the op benchmarks: an array freed on scope exit, with host copies in and out,
// and the float <-> kernel-type conversions the checks use. Only for builds with CUDA.
#pragma once
#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "kernels/cuda/cuda_check.cuh"

namespace opd::bench {

template <typename T>
struct DeviceArray {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceArray(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&p, sizeof(T) * std::max<size_t>(n, 1))); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(p); }
  // The first h.size() elements.
  void upload(const std::vector<T>& h) {
    OPD_REQUIRE(h.size() <= n, "bench: upload of ", h.size(), " elements into ", n);
    CUDA_CHECK(cudaMemcpy(p, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(h.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost));
    return h;
  }
  // Fills all n elements by repeating `tile` (a few rows generated on the host): timing needs
  // realistic values, not distinct ones, and 10^9 host-generated values would take minutes.
  void fill_tiled(const std::vector<T>& tile) {
    const size_t m = std::min(tile.size(), n);
    CUDA_CHECK(cudaMemcpy(p, tile.data(), sizeof(T) * m, cudaMemcpyHostToDevice));
    for (size_t done = m; done < n;) {
      const size_t c = std::min(done, n - done);
      CUDA_CHECK(cudaMemcpy(p + done, p, sizeof(T) * c, cudaMemcpyDeviceToDevice));
      done += c;
    }
  }
};

// Host data in a kernel's storage type (float or bf16, rounded to nearest even).
template <typename T>
std::vector<T> convert(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    std::vector<T> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = __float2bfloat16_rn(v[i]);
    return r;
  }
}

}  // namespace opd::bench
#endif
