// The CUDA side of the benchmarks' harness: calls timed between events with the L2 cache flushed
// before each, and the ceilings of this GPU measured in the same run (a cuBLAS bf16 GEMM and a
// device-to-device copy) that every figure is read against. Only in a build with CUDA.
#pragma once
#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include <functional>

#include "bench/op_bench.h"

namespace opd::bench {

struct CudaTimer {
  void* flush = nullptr;
  size_t flush_bytes = 0;
  cudaEvent_t start{}, stop{};
  CudaTimer();
  ~CudaTimer();
  CudaTimer(const CudaTimer&) = delete;
  CudaTimer& operator=(const CudaTimer&) = delete;
  // Median milliseconds of fn over `repeats` calls after one warm-up.
  double time_ms(const std::function<void()>& fn, int repeats);
};

// Points ctx.time_ms at `timer` and measures ctx.gemm_tflops and ctx.copy_gbps.
void setup_cuda(OpContext& ctx, CudaTimer& timer);

}  // namespace opd::bench
#endif  // OPD_WITH_CUDA
