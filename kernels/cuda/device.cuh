// Whether a usable CUDA device is present; header-only and includable from plain C++.
#pragma once
#include <cuda_runtime.h>

namespace opd::cuda {

// False on any CUDA error (e.g. no driver: cudaErrorInsufficientDriver) or when no device exists,
// so GPU tests and code paths can skip cleanly on CPU-only machines.
inline bool device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear it, so the next CUDA_CHECK_LAUNCH does not report it as its own
    return false;
  }
  return count > 0;
}

}  // namespace opd::cuda
