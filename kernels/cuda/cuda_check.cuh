// Checks for CUDA runtime and cuBLAS calls: a failure throws opd::Error naming call, file, line.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    cudaError_t opd_cuda_rc_ = (call);                                                     \
    if (opd_cuda_rc_ != cudaSuccess)                                                       \
      ::opd::fail_call(#call, cudaGetErrorString(opd_cuda_rc_), __FILE__, __LINE__);       \
  } while (0)

// cuBLASLt calls return cublasStatus_t too and go through the same check.
#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    cublasStatus_t opd_cublas_rc_ = (call);                                                \
    if (opd_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::opd::fail_call(#call, cublasGetStatusString(opd_cublas_rc_), __FILE__, __LINE__);  \
  } while (0)

// A kernel launch reports a bad configuration only through cudaGetLastError.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
