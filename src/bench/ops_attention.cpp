// opd bench ops --op attention: the causal attention forward and the decode step, each checked
// against the CPU op on a small shape, then timed at shapes that fill the GPU, next to cuDNN's
// fused SDPA on the same shapes where that reference is built.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/cudnn_sdpa.h"
#include "bench/op_bench.h"
#include "core/error.h"
#include "kernels/cpu/attention.h"

#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#endif

namespace opd::bench {
namespace {

struct Shape {
  int B, T, H, Hkv, D;
};

std::string shape_name(const Shape& s) {
  return str("B", s.B, " H", s.H, "/", s.Hkv, " T", s.T, " D", s.D, " causal");
}

// Multiply-adds of Q K^T and P V over the causal half, two FLOPs each.
double causal_flops(const Shape& s) { return 2.0 * 2.0 * s.B * s.H * double(s.T) * s.T * s.D / 2; }

// Values in [-1, 1) from a 64-bit LCG: fast enough for the 10^8 elements of the large shapes.
std::vector<float> lcg_values(size_t n, uint64_t seed, float scale) {
  std::vector<float> v(n);
  uint64_t x = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (auto& e : v) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    e = scale * (float(x >> 40) / float(1ull << 23) - 1.0f);
  }
  return v;
}

std::vector<OpResult> cpu_ops(OpContext& ctx) {
  std::vector<OpResult> rows;
  const std::vector<Shape> shapes =
      ctx.quick ? std::vector<Shape>{{1, 128, 4, 2, 64}} : std::vector<Shape>{{1, 512, 8, 2, 64}, {1, 1024, 8, 2, 128}};
  for (const Shape& s : shapes) {
    const size_t nq = size_t(s.B) * s.T * s.H * s.D, nkv = size_t(s.B) * s.T * s.Hkv * s.D;
    const auto q = lcg_values(nq, 1, 2), k = lcg_values(nkv, 2, 2), v = lcg_values(nkv, 3, 1);
    std::vector<float> out(nq), lse(size_t(s.B) * s.H * s.T);
    OpResult r;
    r.op = "attention_forward";
    r.shape = shape_name(s);
    r.dtype = "f32";
    r.max_err = -1;  // this is the reference itself
    r.ms = ctx.time_ms([&] {
      cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H, s.Hkv, s.D);
    });
    r.flops = causal_flops(s);
    rows.push_back(r);
  }
  // Decode: one query per sequence against a full cache.
  const int B = ctx.quick ? 2 : 4, S = ctx.quick ? 256 : 2048, H = 8, Hkv = 2, D = 128;
  const size_t ncache = size_t(B) * S * Hkv * D;
  auto kc = lcg_values(ncache, 4, 2), vc = lcg_values(ncache, 5, 1);
  const auto q = lcg_values(size_t(B) * H * D, 6, 2), kn = lcg_values(size_t(B) * Hkv * D, 7, 2),
             vn = lcg_values(size_t(B) * Hkv * D, 8, 1);
  std::vector<float> out(size_t(B) * H * D);
  const std::vector<int> pos(B, S - 1);
  OpResult r;
  r.op = "attention_decode";
  r.shape = str("B", B, " H", H, "/", Hkv, " S", S, " D", D);
  r.dtype = "f32";
  r.max_err = -1;
  r.ms = ctx.time_ms([&] {
    cpu::attention_decode(out.data(), q.data(), kn.data(), vn.data(), kc.data(), vc.data(), pos.data(), B, S, H, Hkv,
                          D);
  });
  r.bytes = 2.0 * sizeof(float) * ncache;
  rows.push_back(r);
  return rows;
}

#ifdef OPD_WITH_CUDA
using bf16 = __nv_bfloat16;

// A device array of bf16 with the host copy of its values (rounded to bf16) kept for the CPU op.
class Bf16Tensor {
 public:
  Bf16Tensor(size_t n, uint64_t seed, float scale, bool keep_host) : n_(n) {
    const auto x = lcg_values(n, seed, scale);
    std::vector<bf16> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = __float2bfloat16_rn(x[i]);
    if (keep_host) {
      ref.resize(n);
      for (size_t i = 0; i < n; ++i) ref[i] = __bfloat162float(h[i]);
    }
    CUDA_CHECK(cudaMalloc(&p_, sizeof(bf16) * std::max<size_t>(n, 1)));
    CUDA_CHECK(cudaMemcpy(p_, h.data(), sizeof(bf16) * n, cudaMemcpyHostToDevice));
  }
  explicit Bf16Tensor(size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, sizeof(bf16) * std::max<size_t>(n, 1))); }
  Bf16Tensor(const Bf16Tensor&) = delete;
  Bf16Tensor& operator=(const Bf16Tensor&) = delete;
  ~Bf16Tensor() { cudaFree(p_); }
  bf16* get() { return p_; }
  std::vector<float> host() const {
    std::vector<bf16> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, sizeof(bf16) * n_, cudaMemcpyDeviceToHost));
    std::vector<float> f(n_);
    for (size_t i = 0; i < n_; ++i) f[i] = __bfloat162float(h[i]);
    return f;
  }
  std::vector<float> ref;

 private:
  bf16* p_ = nullptr;
  size_t n_;
};

class F32Buffer {
 public:
  explicit F32Buffer(size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, sizeof(float) * std::max<size_t>(n, 1))); }
  F32Buffer(const F32Buffer&) = delete;
  F32Buffer& operator=(const F32Buffer&) = delete;
  ~F32Buffer() { cudaFree(p_); }
  float* get() { return p_; }
  std::vector<float> host() const {
    std::vector<float> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, sizeof(float) * n_, cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  float* p_ = nullptr;
  size_t n_;
};

constexpr double kOutTol = 2e-2;  // bf16 outputs of O(1) values
constexpr double kLseTol = 1e-3;

// Times cuDNN's SDPA on the same tensors into r.ref_ms; a graph cuDNN cannot build goes into the note.
void time_cudnn(OpContext& ctx, OpResult& r, bf16* out, const bf16* q, const bf16* k, const bf16* v, const Shape& s) {
  const std::string missing = cudnn_sdpa_missing();
  if (!missing.empty()) {
    r.note = "cuDNN SDPA: " + missing;
    return;
  }
  try {
    auto run = cudnn_sdpa_forward(out, q, k, v, s.B, s.T, s.H, s.Hkv, s.D);
    r.ref_ms = ctx.time_ms(run);
    r.ref_name = "cudnn_sdpa";
  } catch (const Error& e) {
    r.note = str("cuDNN SDPA failed: ", e.what());
  }
}

// Forward at a shape small enough for the CPU op: the kernel's worst error on out (and lse, in
// the note), and cuDNN's worst error on out against the same reference, so the reference is known
// to compute the same thing.
OpResult forward_checked(OpContext& ctx, const Shape& s) {
  const size_t nq = size_t(s.B) * s.T * s.H * s.D, nkv = size_t(s.B) * s.T * s.Hkv * s.D;
  Bf16Tensor q(nq, 11, 2, true), k(nkv, 12, 2, true), v(nkv, 13, 1, true), out(nq);
  F32Buffer lse(size_t(s.B) * s.H * s.T);
  std::vector<float> want(nq), want_lse(size_t(s.B) * s.H * s.T);
  cpu::attention_forward(want.data(), want_lse.data(), q.ref.data(), k.ref.data(), v.ref.data(), s.B, s.T, s.H,
                         s.Hkv, s.D);
  cuda::attention_forward(out.get(), lse.get(), q.get(), k.get(), v.get(), s.B, s.T, s.H, s.Hkv, s.D);
  CUDA_CHECK(cudaDeviceSynchronize());
  OpResult r;
  r.op = "attention_forward";
  r.shape = shape_name(s);
  r.dtype = "bf16";
  r.tol = kOutTol;
  const double lse_err = max_abs_error(lse.host(), want_lse);
  r.max_err = max_abs_error(out.host(), want);
  r.ok = r.max_err <= kOutTol && lse_err <= kLseTol;
  r.note = str("lse err ", lse_err, " (tol ", kLseTol, ")");
  r.ms = ctx.time_ms([&] {
    cuda::attention_forward(out.get(), lse.get(), q.get(), k.get(), v.get(), s.B, s.T, s.H, s.Hkv, s.D);
  });
  r.flops = causal_flops(s);
  if (cudnn_sdpa_missing().empty()) {
    try {
      Bf16Tensor ref_out(nq);
      auto run = cudnn_sdpa_forward(ref_out.get(), q.get(), k.get(), v.get(), s.B, s.T, s.H, s.Hkv, s.D);
      run();
      CUDA_CHECK(cudaDeviceSynchronize());
      r.note += str("; cudnn_sdpa err ", max_abs_error(ref_out.host(), want));
    } catch (const Error& e) {
      r.note += str("; cuDNN SDPA failed: ", e.what());
    }
  }
  return r;
}

OpResult forward_timed(OpContext& ctx, const Shape& s) {
  const size_t nq = size_t(s.B) * s.T * s.H * s.D, nkv = size_t(s.B) * s.T * s.Hkv * s.D;
  Bf16Tensor q(nq, 21, 2, false), k(nkv, 22, 2, false), v(nkv, 23, 1, false), out(nq);
  F32Buffer lse(size_t(s.B) * s.H * s.T);
  OpResult r;
  r.op = "attention_forward";
  r.shape = shape_name(s);
  r.dtype = "bf16";
  r.max_err = -1;  // the CPU op is too slow here; the kernel was checked on the small shapes above
  r.ms = ctx.time_ms([&] {
    cuda::attention_forward(out.get(), lse.get(), q.get(), k.get(), v.get(), s.B, s.T, s.H, s.Hkv, s.D);
  });
  r.flops = causal_flops(s);
  time_cudnn(ctx, r, out.get(), q.get(), k.get(), v.get(), s);
  return r;
}

// Decode against full caches (every sequence at its last row), checked against the CPU op when
// `check`; bytes are the K and V cache rows read.
OpResult decode(OpContext& ctx, int B, int S, int H, int Hkv, int D, bool check) {
  const size_t ncache = size_t(B) * S * Hkv * D, nnew = size_t(B) * Hkv * D, nq = size_t(B) * H * D;
  Bf16Tensor kc(ncache, 31, 2, check), vc(ncache, 32, 1, check), kn(nnew, 33, 2, check), vn(nnew, 34, 1, check),
      q(nq, 35, 2, check), out(nq);
  std::vector<int> pos(B);
  for (int b = 0; b < B; ++b) pos[b] = check ? (S - 1) - (b * 997) % S : S - 1;  // varied lengths when checked
  int* dpos = nullptr;
  CUDA_CHECK(cudaMalloc(&dpos, sizeof(int) * B));
  CUDA_CHECK(cudaMemcpy(dpos, pos.data(), sizeof(int) * B, cudaMemcpyHostToDevice));
  void* ws = nullptr;
  CUDA_CHECK(cudaMalloc(&ws, cuda::attention_decode_workspace_bytes(B, S, H, D)));
  OpResult r;
  r.op = "attention_decode";
  r.shape = str("B", B, " H", H, "/", Hkv, " S", S, " D", D, check ? " (varied pos)" : "");
  r.dtype = "bf16";
  r.max_err = -1;
  auto call = [&] {
    cuda::attention_decode(out.get(), q.get(), kn.get(), vn.get(), kc.get(), vc.get(), dpos, ws, B, S, H, Hkv, D);
  };
  if (check) {
    std::vector<float> want(nq);
    cpu::attention_decode(want.data(), q.ref.data(), kn.ref.data(), vn.ref.data(), kc.ref.data(), vc.ref.data(),
                          pos.data(), B, S, H, Hkv, D);
    call();
    CUDA_CHECK(cudaDeviceSynchronize());
    r.max_err = max_abs_error(out.host(), want);
    r.tol = kOutTol;
    r.ok = r.max_err <= kOutTol;
  }
  r.ms = ctx.time_ms(call);
  double rows = 0;
  for (int p : pos) rows += p + 1;
  r.bytes = 2.0 * sizeof(bf16) * rows * Hkv * D;
  CUDA_CHECK(cudaFree(ws));
  CUDA_CHECK(cudaFree(dpos));
  return r;
}

std::vector<OpResult> cuda_ops(OpContext& ctx) {
  std::vector<OpResult> rows;
  rows.push_back(forward_checked(ctx, {2, 300, 8, 2, 128}));
  rows.push_back(forward_checked(ctx, {2, 300, 8, 8, 64}));
  if (!ctx.quick) {
    // batch x heads = 512 or 128 (query tiles x heads x batch >= 4k blocks): enough to fill any GPU.
    const Shape timed[] = {{16, 1024, 32, 8, 128}, {16, 2048, 32, 8, 128}, {8, 4096, 32, 8, 128},
                           {4, 8192, 32, 8, 128},  {16, 2048, 32, 8, 64},  {4, 8192, 32, 8, 64}};
    for (const Shape& s : timed) rows.push_back(forward_timed(ctx, s));
  }
  rows.push_back(decode(ctx, 4, 1500, 16, 2, 128, true));
  if (!ctx.quick) rows.push_back(decode(ctx, 32, 4096, 32, 8, 128, false));
  return rows;
}
#endif

}  // namespace

std::vector<OpResult> attention_ops(OpContext& ctx) {
#ifdef OPD_WITH_CUDA
  if (ctx.cuda) return cuda_ops(ctx);
#endif
  OPD_REQUIRE(!ctx.cuda, "attention_ops: this opd was built without CUDA");
  return cpu_ops(ctx);
}

}  // namespace opd::bench
