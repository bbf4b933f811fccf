// Benchmarks of the attention backward: the CPU op's speed on small shapes, and on CUDA the
// kernel validated against the CPU op, then timed alone and together with the forward on shapes
// whose batch x heads fill an H100. FLOPs follow FlashAttention-2's convention: a causal forward
// is 4 * B * H * T^2 * D / 2, a backward 2.5 times that.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "bench/op_bench.h"
#include "core/error.h"
#include "kernels/cpu/attention.h"

#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#endif

namespace opd::bench {
namespace {

struct AttnShape {
  int B, Tn, H, Hkv, D;
};

std::string describe(const AttnShape& s) {
  return str("B", s.B, " H", s.H, " Hkv", s.Hkv, " T", s.Tn, " D", s.D, " causal");
}

double forward_flops(const AttnShape& s) { return 4.0 * s.B * s.H * double(s.Tn) * s.Tn * s.D / 2; }
double backward_flops(const AttnShape& s) { return 2.5 * forward_flops(s); }

std::vector<float> uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::vector<OpResult> cpu_ops(OpContext& ctx) {
  const std::vector<AttnShape> shapes =
      ctx.quick ? std::vector<AttnShape>{{1, 64, 4, 1, 64}}
                : std::vector<AttnShape>{{1, 256, 8, 2, 64}, {1, 512, 8, 2, 128}};
  std::vector<OpResult> results;
  for (const AttnShape& s : shapes) {
    const size_t nq = size_t(s.B) * s.Tn * s.H * s.D, nk = size_t(s.B) * s.Tn * s.Hkv * s.D;
    const auto q = uniform(nq, 1, -1, 1), k = uniform(nk, 2, -1, 1), v = uniform(nk, 3, -1, 1),
               dout = uniform(nq, 4, -1, 1);
    std::vector<float> out(nq), lse(size_t(s.B) * s.H * s.Tn), dq(nq), dk(nk), dv(nk);
    cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.Tn, s.H, s.Hkv, s.D);
    OpResult r;
    r.op = "attention_backward";
    r.shape = describe(s);
    r.dtype = "f32";
    r.max_err = -1;  // the CPU op is the reference
    r.flops = backward_flops(s);
    r.ms = ctx.time_ms([&] {
      cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                              lse.data(), s.B, s.Tn, s.H, s.Hkv, s.D);
    });
    results.push_back(r);
  }
  return results;
}

#ifdef OPD_WITH_CUDA

using cuda::bf16;

uint16_t to_bf16(float x) {  // round to nearest even; inputs are finite
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// A device allocation freed on scope exit.
class DeviceMem {
 public:
  explicit DeviceMem(size_t bytes) { CUDA_CHECK(cudaMalloc(&p_, bytes ? bytes : 1)); }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  ~DeviceMem() { cudaFree(p_); }
  bf16* bf() { return static_cast<bf16*>(p_); }
  float* f32() { return static_cast<float*>(p_); }
  void* get() { return p_; }

 private:
  void* p_ = nullptr;
};

// The tensors of one attention problem on the device.
struct DeviceAttention {
  AttnShape s;
  size_t nq, nk;
  DeviceMem q, k, v, out, dout, dq, dk, dv, lse, ws;
  explicit DeviceAttention(const AttnShape& sh)
      : s(sh),
        nq(size_t(sh.B) * sh.Tn * sh.H * sh.D),
        nk(size_t(sh.B) * sh.Tn * sh.Hkv * sh.D),
        q(2 * nq), k(2 * nk), v(2 * nk), out(2 * nq), dout(2 * nq), dq(2 * nq), dk(2 * nk), dv(2 * nk),
        lse(sizeof(float) * sh.B * sh.H * sh.Tn),
        ws(cuda::attention_backward_workspace_bytes(sh.B, sh.Tn, sh.H, sh.Hkv, sh.D)) {}

  void forward() { cuda::attention_forward(out.bf(), lse.f32(), q.bf(), k.bf(), v.bf(), s.B, s.Tn, s.H, s.Hkv, s.D); }
  void backward() {
    cuda::attention_backward(dq.bf(), dk.bf(), dv.bf(), dout.bf(), q.bf(), k.bf(), v.bf(), out.bf(), lse.f32(),
                             ws.get(), s.B, s.Tn, s.H, s.Hkv, s.D);
  }
};

// Fills n bf16 elements with uniform values in [lo, hi): a random block of the host, repeated
// (the timing does not depend on the values, only on their being finite and of the usual size).
void fill_device(bf16* dst, size_t n, uint32_t seed, float lo, float hi) {
  const size_t block = std::min<size_t>(n, size_t(1) << 20);
  const auto host = uniform(block, seed, lo, hi);
  std::vector<uint16_t> bits(block);
  for (size_t i = 0; i < block; ++i) bits[i] = to_bf16(host[i]);
  for (size_t at = 0; at < n; at += block) {
    const size_t len = std::min(block, n - at);
    CUDA_CHECK(cudaMemcpy(dst + at, bits.data(), 2 * len, cudaMemcpyHostToDevice));
  }
}

std::vector<float> download_bf16(bf16* src, size_t n) {
  std::vector<uint16_t> bits(n);
  CUDA_CHECK(cudaMemcpy(bits.data(), src, 2 * n, cudaMemcpyDeviceToHost));
  std::vector<float> r(n);
  for (size_t i = 0; i < n; ++i) r[i] = from_bf16(bits[i]);
  return r;
}

// Worst |got - want| over the largest |want|: bf16 gradients are held to a fraction of their scale.
double error_to_max(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0, max_want = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - want[i]);
    if (!(e <= worst)) worst = e;  // a NaN becomes the worst error
    max_want = std::max(max_want, double(std::fabs(want[i])));
  }
  return worst / (max_want > 0 ? max_want : 1.0);
}

// The CPU forward (float) on the bf16 inputs gives out (rounded to bf16) and lse; the CPU backward
// on the same values is the reference for the GPU's dq, dk, dv.
OpResult validate(OpContext& ctx, const AttnShape& s) {
  DeviceAttention a(s);
  auto upload = [](DeviceMem& dst, const std::vector<float>& host) {
    std::vector<uint16_t> bits(host.size());
    for (size_t i = 0; i < host.size(); ++i) bits[i] = to_bf16(host[i]);
    CUDA_CHECK(cudaMemcpy(dst.get(), bits.data(), 2 * bits.size(), cudaMemcpyHostToDevice));
  };
  auto rounded = [](std::vector<float> v) {
    for (auto& x : v) x = from_bf16(to_bf16(x));
    return v;
  };
  const auto q = rounded(uniform(a.nq, 11, -3, 3)), k = rounded(uniform(a.nk, 12, -1, 1)),
             v = rounded(uniform(a.nk, 13, -1, 1)), dout = rounded(uniform(a.nq, 14, -1, 1));
  std::vector<float> out(a.nq), lse(size_t(s.B) * s.H * s.Tn), dq(a.nq), dk(a.nk), dv(a.nk);
  cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.Tn, s.H, s.Hkv, s.D);
  out = rounded(out);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                          lse.data(), s.B, s.Tn, s.H, s.Hkv, s.D);
  upload(a.q, q), upload(a.k, k), upload(a.v, v), upload(a.dout, dout), upload(a.out, out);
  CUDA_CHECK(cudaMemcpy(a.lse.get(), lse.data(), sizeof(float) * lse.size(), cudaMemcpyHostToDevice));
  a.backward();
  CUDA_CHECK(cudaDeviceSynchronize());

  OpResult r;
  r.op = "attention_backward";
  r.shape = describe(s);
  r.dtype = "bf16";
  r.err_kind = "max/|grad|";
  r.tol = 2e-2;
  r.max_err = std::max({error_to_max(download_bf16(a.dq.bf(), a.nq), dq),
                        error_to_max(download_bf16(a.dk.bf(), a.nk), dk),
                        error_to_max(download_bf16(a.dv.bf(), a.nk), dv)});
  r.ok = r.max_err <= r.tol;
  r.flops = backward_flops(s);
  r.ms = ctx.time_ms([&] { a.backward(); });
  r.note = "worst of dq, dk, dv";
  return r;
}

// Backward alone (on the forward's own out and lse), then forward + backward.
std::vector<OpResult> time_shape(OpContext& ctx, const AttnShape& s, const std::string& validated_at) {
  DeviceAttention a(s);
  fill_device(a.q.bf(), a.nq, 21, -3, 3);
  fill_device(a.k.bf(), a.nk, 22, -1, 1);
  fill_device(a.v.bf(), a.nk, 23, -1, 1);
  fill_device(a.dout.bf(), a.nq, 24, -1, 1);
  a.forward();
  CUDA_CHECK(cudaDeviceSynchronize());

  OpResult bwd;
  bwd.op = "attention_backward";
  bwd.shape = describe(s);
  bwd.dtype = "bf16";
  bwd.max_err = -1;
  bwd.flops = backward_flops(s);
  bwd.ms = ctx.time_ms([&] { a.backward(); });
  bwd.note = "validated at " + validated_at;

  OpResult both = bwd;
  both.op = "attention_fwd_bwd";
  both.flops = forward_flops(s) + backward_flops(s);
  both.ms = ctx.time_ms([&] {
    a.forward();
    a.backward();
  });
  return {bwd, both};
}

std::vector<OpResult> cuda_ops(OpContext& ctx) {
  std::vector<OpResult> results;
  const int dims[] = {128, 64};
  for (int D : dims) {
    const AttnShape check = ctx.quick ? AttnShape{1, 100, 4, 1, D} : AttnShape{2, 300, 8, 2, D};
    results.push_back(validate(ctx, check));
    const std::vector<AttnShape> shapes =
        ctx.quick ? std::vector<AttnShape>{{1, 256, 8, 2, D}}
                  : std::vector<AttnShape>{{16, 1024, 32, 32, D}, {16, 2048, 32, 32, D}, {16, 2048, 32, 8, D},
                                           {4, 4096, 32, 32, D},  {2, 8192, 32, 32, D}};
    for (const AttnShape& s : shapes)
      for (OpResult& r : time_shape(ctx, s, describe(check))) results.push_back(r);
  }
  return results;
}

#endif

}  // namespace

std::vector<OpResult> attention_backward_ops(OpContext& ctx) {
  if (!ctx.cuda) return cpu_ops(ctx);
#ifdef OPD_WITH_CUDA
  return cuda_ops(ctx);
#else
  throw Error("attention_backward: --device cuda needs a build with CUDA (OPD_CUDA=ON)");
#endif
}

}  // namespace opd::bench
