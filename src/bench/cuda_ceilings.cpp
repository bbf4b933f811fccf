#ifdef OPD_WITH_CUDA
#include "bench/cuda_ceilings.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/cuda_check.cuh"

namespace opd::bench {

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
}  // namespace

CudaTimer::CudaTimer() {
  int dev = 0, l2 = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  flush_bytes = std::max<size_t>(size_t(l2) * 4, 64 << 20);
  CUDA_CHECK(cudaMalloc(&flush, flush_bytes));
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
}

CudaTimer::~CudaTimer() {
  cudaFree(flush);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

double CudaTimer::time_ms(const std::function<void()>& fn, int repeats) {
  fn();
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    CUDA_CHECK(cudaMemsetAsync(flush, r & 0xff, flush_bytes));
    CUDA_CHECK(cudaEventRecord(start));
    fn();
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK_LAUNCH();
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    t.push_back(ms);
  }
  return median(t);
}

void setup_cuda(OpContext& ctx, CudaTimer& timer) {
  ctx.time_ms = [&ctx, &timer](const std::function<void()>& fn) { return timer.time_ms(fn, ctx.repeats); };
  // The GEMM ceiling: cuBLAS bf16 with fp32 accumulation on a square product
  // big enough to fill the GPU.
  const int n = ctx.quick ? 1024 : 8192;
  __nv_bfloat16 *a = nullptr, *b = nullptr, *c = nullptr;
  CUDA_CHECK(cudaMalloc(&a, sizeof(__nv_bfloat16) * n * n));
  CUDA_CHECK(cudaMalloc(&b, sizeof(__nv_bfloat16) * n * n));
  CUDA_CHECK(cudaMalloc(&c, sizeof(__nv_bfloat16) * n * n));
  // Random-looking bits rather than zeros: tensor cores draw less power on
  // zeros and run faster.
  std::vector<__nv_bfloat16> h(size_t(n) * n);
  for (size_t i = 0; i < h.size(); ++i) h[i] = __float2bfloat16(float((i * 2654435761u) % 1000) / 1000.0f - 0.5f);
  CUDA_CHECK(cudaMemcpy(a, h.data(), sizeof(__nv_bfloat16) * h.size(), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(b, h.data(), sizeof(__nv_bfloat16) * h.size(), cudaMemcpyHostToDevice));
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  const float alpha = 1, beta = 0;
  const double gemm_ms = ctx.time_ms([&] {
    CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n,
                              &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
  ctx.gemm_tflops = 2.0 * n * n * n / (gemm_ms * 1e-3) / 1e12;
  CUBLAS_CHECK(cublasDestroy(handle));
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  CUDA_CHECK(cudaFree(c));
  // The bandwidth ceiling: a device-to-device copy, bytes read plus bytes
  // written.
  const size_t bytes = size_t(ctx.quick ? 64 : 2048) << 20;
  void *src = nullptr, *dst = nullptr;
  CUDA_CHECK(cudaMalloc(&src, bytes));
  CUDA_CHECK(cudaMalloc(&dst, bytes));
  const double copy_ms = ctx.time_ms([&] { CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
  ctx.copy_gbps = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));
}

}  // namespace opd::bench
#endif  // OPD_WITH_CUDA
