// opd bench ops: every kernel checked against its CPU op, then timed next to the ceilings of the
// same machine measured in the same run (a GEMM and a copy), so each figure reads as a fraction
// of what the hardware gave this run rather than of a datasheet.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <vector>

#include "bench/op_bench.h"
#include "core/error.h"
#include "core/options.h"
#include "kernels/cpu/matmul.h"

#ifdef OPD_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "bench/cuda_ceilings.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"
#endif

namespace opd::bench {

double max_abs_error(const std::vector<float>& got, const std::vector<float>& want) {
  OPD_REQUIRE(got.size() == want.size(), str("max_abs_error: sizes differ (", got.size(), " vs ", want.size(), ")"));
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - double(want[i]));
    if (!(e <= worst)) worst = e;  // a NaN makes the error NaN, which fails every tolerance
  }
  return worst;
}

double max_rel_error(const std::vector<float>& got, const std::vector<float>& want, double floor) {
  OPD_REQUIRE(got.size() == want.size(), str("max_rel_error: sizes differ (", got.size(), " vs ", want.size(), ")"));
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - double(want[i])) / std::max(floor, std::fabs(double(want[i])));
    if (!(e <= worst)) worst = e;
  }
  return worst;
}

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// ---- CPU: wall clock, ceilings from sgemm and memcpy --------------------------------------------
void setup_cpu(OpContext& ctx) {
  ctx.time_ms = [&ctx](const std::function<void()>& fn) {
    fn();
    std::vector<double> t;
    for (int r = 0; r < ctx.repeats; ++r) {
      const auto t0 = Clock::now();
      fn();
      t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    return median(t);
  };
  const int n = ctx.quick ? 512 : 1024;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  const double gemm_ms = ctx.time_ms([&] { cpu::matmul_forward(c.data(), a.data(), b.data(), n, n, n); });
  ctx.gemm_tflops = 2.0 * n * n * n / (gemm_ms * 1e-3) / 1e12;
  const size_t bytes = size_t(ctx.quick ? 64 : 256) << 20;
  std::vector<char> src(bytes, 1), dst(bytes);
  const double copy_ms = ctx.time_ms([&] { std::memcpy(dst.data(), src.data(), bytes); });
  ctx.copy_gbps = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
}


void print_header(const OpContext& ctx) {
  std::printf("device: %s; ceilings measured now: GEMM %.3f TFLOP/s (%s), copy %.1f GB/s (read + write)\n",
              ctx.cuda ? "cuda" : "cpu", ctx.gemm_tflops,
              ctx.cuda ? (ctx.quick ? "cuBLAS bf16 1024^3" : "cuBLAS bf16 8192^3") : "sgemm", ctx.copy_gbps);
  std::printf("%-26s %-34s %-5s %-22s %10s %16s %8s %24s\n", "op", "shape", "dtype", "check vs cpu", "ms",
              "rate", "of ceil", "reference");
}

void print_row(const OpContext& ctx, const OpResult& r) {
  char check[64], rate[32] = "-", frac[16] = "-", ref[64] = "-";
  if (r.max_err < 0)
    std::snprintf(check, sizeof check, "-");
  else
    std::snprintf(check, sizeof check, "%s %s %.1e<=%.0e", r.ok ? "ok" : "FAIL", r.err_kind.c_str(), r.max_err, r.tol);
  if (r.ms > 0 && r.flops > 0) {
    const double tf = r.flops / (r.ms * 1e-3) / 1e12;
    if (tf >= 1)
      std::snprintf(rate, sizeof rate, "%.1f TFLOP/s", tf);
    else
      std::snprintf(rate, sizeof rate, "%.1f GFLOP/s", tf * 1e3);
    std::snprintf(frac, sizeof frac, "%.0f%%", 100 * tf / ctx.gemm_tflops);
  } else if (r.ms > 0 && r.bytes > 0) {
    const double gb = r.bytes / (r.ms * 1e-3) / 1e9;
    std::snprintf(rate, sizeof rate, "%.0f GB/s", gb);
    std::snprintf(frac, sizeof frac, "%.0f%%", 100 * gb / ctx.copy_gbps);
  }
  if (!r.ref_name.empty() && r.ref_ms > 0)
    std::snprintf(ref, sizeof ref, "%s %.3f ms (%.2fx)", r.ref_name.c_str(), r.ref_ms, r.ref_ms / r.ms);
  else if (!r.ref_name.empty())
    std::snprintf(ref, sizeof ref, "%s", r.ref_name.c_str());
  std::printf("%-26s %-34s %-5s %-22s %10.4f %16s %8s %24s\n", r.op.c_str(), r.shape.c_str(), r.dtype.c_str(), check,
              r.ms, rate, frac, ref);
  if (!r.note.empty()) std::printf("%-26s   note: %s\n", "", r.note.c_str());
  std::fflush(stdout);
}

const std::vector<OpBench>& families() {
  static const std::vector<OpBench> all = {{"attention", attention_ops},
                                           {"attention-backward", attention_backward_ops},
                                           {"vocab", vocab_ops},
                                           {"pointwise", pointwise_ops}};
  return all;
}

}  // namespace

std::vector<std::string> op_families() {
  std::vector<std::string> names;
  for (const auto& f : families()) names.push_back(f.name);
  return names;
}

int run_bench_ops(const BenchOpsOptions& o) {
  OpContext ctx;
  ctx.cuda = o.cuda;
  ctx.quick = o.quick;
  ctx.repeats = o.quick ? std::min(3, o.repeats) : o.repeats;
  const std::string& only = o.only;
#ifdef OPD_WITH_CUDA
  std::unique_ptr<CudaTimer> timer;
  if (ctx.cuda) {
    OPD_REQUIRE(cuda::device_available(), "--device cuda: no usable CUDA device (no driver or no GPU)");
    timer = std::make_unique<CudaTimer>();
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("gpu: %s, %d SMs, %.0f MiB, L2 %.0f MiB\n", prop.name, prop.multiProcessorCount,
                prop.totalGlobalMem / 1048576.0, prop.l2CacheSize / 1048576.0);
    setup_cuda(ctx, *timer);
  }
#else
  OPD_REQUIRE(!ctx.cuda, "--device cuda: this opd was built without CUDA (configure with -DOPD_CUDA=ON)");
#endif
  if (!ctx.cuda) setup_cpu(ctx);

  print_header(ctx);
  int failed = 0, rows = 0;
  for (const auto& f : families()) {
    if (!only.empty() && f.name != only) continue;
    for (const OpResult& r : f.run(ctx)) {
      print_row(ctx, r);
      ++rows;
      failed += r.ok ? 0 : 1;
    }
  }
  std::printf("%d rows, %d checks failed\n", rows, failed);
  return failed ? 1 : 0;
}

}  // namespace opd::bench
