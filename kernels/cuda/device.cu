#include "kernels/cuda/device.cuh"

#include <cuda_runtime.h>

namespace opd::cuda {

bool device_available() {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    // Clear the error so the next CUDA_CHECK_LAUNCH does not report it as its own.
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

}  // namespace opd::cuda
