// opd bench ops --op pointwise: the bandwidth-bound ops of the model (embedding, rmsnorm, rope,
// swiglu, residual add, fp32 <-> bf16 conversion, AdamW and its gradient norm) and its three GEMM shapes through cuBLASLt.
// CUDA: each op is first checked against its CPU op at a small shape, then timed at Qwen3-0.6B-
// like sizes (16k tokens, d 1024, ffn 3072, vocab 151936). CPU: the CPU ops timed at small
// shapes, unvalidated (they are the reference).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "bench/device_array.h"
#include "bench/op_bench.h"
#include "core/error.h"
#include "kernels/cpu/adamw.h"
#include "kernels/cpu/convert.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/residual.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"

#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/matmul.cuh"
#include "kernels/cuda/residual.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/swiglu.cuh"
#endif

namespace opd::bench {

namespace {

// The model's sizes at full scale (Qwen3-0.6B-like), and small ones for --quick.
struct Sizes {
  int tokens, d, ffn, vocab, heads, head_dim;
  size_t params;
};
[[maybe_unused]] Sizes full_sizes() { return {16384, 1024, 3072, 151936, 16, 128, size_t(600) << 20}; }
Sizes quick_sizes() { return {256, 128, 384, 4096, 4, 64, size_t(1) << 20}; }
Sizes cpu_sizes() { return {1024, 512, 1536, 8192, 8, 64, size_t(16) << 20}; }

constexpr float kTheta = 1000000.0f, kEps = 1e-6f;

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::vector<int> random_ints(size_t n, int hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(0, hi - 1);
  std::vector<int> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::string shape_str(const char* a, long long x, const char* b = nullptr, long long y = 0, const char* c = nullptr,
                      long long z = 0) {
  std::string s = str(a, x);
  if (b) s += str(" ", b, y);
  if (c) s += str(" ", c, z);
  return s;
}

OpResult row(const std::string& op, const std::string& shape, const std::string& dtype, double ms, double bytes,
             double flops = 0) {
  OpResult r;
  r.op = op, r.shape = shape, r.dtype = dtype, r.ms = ms, r.bytes = bytes, r.flops = flops;
  r.max_err = -1;
  return r;
}

// ---- CPU: the reference ops, timed --------------------------------------------------------------
void cpu_rows(OpContext& ctx, std::vector<OpResult>& rows) {
  const Sizes s = ctx.quick ? quick_sizes() : cpu_sizes();
  const size_t NC = size_t(s.tokens) * s.d, NF = size_t(s.tokens) * s.ffn;
  const auto tokens = random_ints(s.tokens, s.vocab, 1);
  auto table = random_floats(size_t(s.vocab) * s.d, 2), x = random_floats(NC, 3), y = random_floats(NC, 4);
  std::vector<float> out(NC), rstd(s.tokens), w(s.d, 1.0f), dw(s.d), dx(NC);
  const std::string nc = shape_str("N", s.tokens, "C", s.d);

  rows.push_back(row("embedding_forward", nc + str(" V", s.vocab), "f32",
                     ctx.time_ms([&] { cpu::embedding_forward(out.data(), tokens.data(), table.data(), s.tokens, s.d); }),
                     8.0 * NC));
  rows.push_back(row("embedding_backward", nc + str(" V", s.vocab), "f32", ctx.time_ms([&] {
                       cpu::embedding_backward(table.data(), x.data(), tokens.data(), s.tokens, s.vocab, s.d);
                     }),
                     12.0 * NC));
  rows.push_back(row("rmsnorm_forward", nc, "f32", ctx.time_ms([&] {
                       cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), s.tokens, s.d, kEps);
                     }),
                     8.0 * NC));
  rows.push_back(row("rmsnorm_backward", nc, "f32", ctx.time_ms([&] {
                       cpu::rmsnorm_backward(dx.data(), dw.data(), y.data(), x.data(), w.data(), rstd.data(), s.tokens,
                                             s.d);
                     }),
                     16.0 * NC));
  const auto pos = random_ints(s.tokens, 2048, 5);
  const size_t NHD = size_t(s.tokens) * s.heads * s.head_dim;
  std::vector<float> q = random_floats(NHD, 6);
  rows.push_back(row("rope_forward", shape_str("N", s.tokens, "H", s.heads, "D", s.head_dim), "f32",
                     ctx.time_ms([&] { cpu::rope_forward(q.data(), pos.data(), s.tokens, s.heads, s.head_dim, kTheta); }),
                     8.0 * NHD));
  auto gate = random_floats(NF, 7), up = random_floats(NF, 8);
  std::vector<float> act(NF), dgate(NF), dup(NF);
  const std::string nf = shape_str("N", s.tokens, "F", s.ffn);
  rows.push_back(row("swiglu_forward", nf, "f32",
                     ctx.time_ms([&] { cpu::swiglu_forward(act.data(), gate.data(), up.data(), NF); }), 12.0 * NF));
  rows.push_back(row("swiglu_backward", nf, "f32", ctx.time_ms([&] {
                       cpu::swiglu_backward(dgate.data(), dup.data(), act.data(), gate.data(), up.data(), NF);
                     }),
                     20.0 * NF));
  rows.push_back(row("residual_forward", nc, "f32",
                     ctx.time_ms([&] { cpu::residual_forward(out.data(), x.data(), y.data(), NC); }), 12.0 * NC));
  const size_t P = s.params;
  auto params = random_floats(P, 9), grads = random_floats(P, 10, -0.01f, 0.01f);
  std::vector<float> m(P), v(P);
  int t = 0;
  rows.push_back(row("grad_sumsq", shape_str("n", (long long)P), "f32",
                     ctx.time_ms([&] { (void)cpu::grad_sumsq(grads.data(), P); }), 4.0 * P));
  rows.push_back(row("adamw_update", shape_str("n", (long long)P), "f32", ctx.time_ms([&] {
                       cpu::adamw_update(params.data(), grads.data(), m.data(), v.data(), nullptr, P, 1e-4f, 0.9f,
                                         0.95f, 1e-8f, 0.1f, ++t, 1.0f);
                     }),
                     28.0 * P));
  // The model's GEMMs: the MLP's up (d -> ffn) and down (ffn -> d) projections.
  for (auto [K, M] : {std::pair{s.d, s.ffn}, std::pair{s.ffn, s.d}}) {
    const auto a = random_floats(size_t(s.tokens) * K, 11), b = random_floats(size_t(M) * K, 12);
    std::vector<float> c(size_t(s.tokens) * M);
    rows.push_back(row("matmul_forward", shape_str("N", s.tokens, "K", K, "M", M), "f32",
                       ctx.time_ms([&] { cpu::matmul_forward(c.data(), a.data(), b.data(), s.tokens, K, M); }), 0,
                       2.0 * s.tokens * K * M));
  }
}

#ifdef OPD_WITH_CUDA
using bf16 = __nv_bfloat16;

std::vector<float> widen(const std::vector<bf16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(v[i]);
  return r;
}
std::vector<float> widen(const std::vector<float>& v) { return v; }
std::vector<float> bf16_round(const std::vector<float>& v) { return widen(convert<bf16>(v)); }

// Random values in [-1, 1) (times scale) over a whole device buffer: one host block uploaded, then
// doubled by device copies, so even the LM head's 2.5G-element buffers fill in a moment. Random
// bits rather than a constant: tensor cores run faster on data that barely toggles.
template <typename T>
void fill(DeviceArray<T>& d, uint32_t seed, float scale = 1.0f) {
  const size_t block = std::min<size_t>(d.n, size_t(1) << 22);
  if (block == 0) return;
  auto h = random_floats(block, seed, -scale, scale);
  CUDA_CHECK(cudaMemcpy(d.p, convert<T>(h).data(), sizeof(T) * block, cudaMemcpyHostToDevice));
  for (size_t done = block; done < d.n;) {
    const size_t chunk = std::min(done, d.n - done);
    CUDA_CHECK(cudaMemcpy(d.p + done, d.p, sizeof(T) * chunk, cudaMemcpyDeviceToDevice));
    done += chunk;
  }
}

void check(OpResult& r, double err, double tol, const char* kind = "abs") {
  r.max_err = err, r.tol = tol, r.err_kind = kind;
  r.ok = err <= tol;  // NaN fails
}

// ---- validation at small shapes ------------------------------------------------------------------
// Each returns the worst error of the GPU op (bf16 storage, as the model runs it; rmsnorm also in
// float) against the CPU op on the same rounded inputs.
constexpr int vN = 257, vC = 320, vF = 960, vV = 1000, vH = 4, vD = 128;

double validate_embedding(bool backward) {
  const auto tokens = random_ints(vN, vV, 21);
  const auto table = bf16_round(random_floats(size_t(vV) * vC, 22));
  const auto dout = bf16_round(random_floats(size_t(vN) * vC, 23));
  DeviceArray<int> d_tok(vN);
  d_tok.upload(tokens);
  if (!backward) {
    std::vector<float> want(size_t(vN) * vC);
    cpu::embedding_forward(want.data(), tokens.data(), table.data(), vN, vC);
    DeviceArray<bf16> d_table(table.size()), d_out(want.size());
    d_table.upload(convert<bf16>(table));
    cuda::embedding_forward(d_out.p, d_tok.p, d_table.p, vN, vC);
    return max_abs_error(widen(d_out.download()), want);
  }
  std::vector<float> want(size_t(vV) * vC, 0.0f);
  cpu::embedding_backward(want.data(), dout.data(), tokens.data(), vN, vV, vC);
  DeviceArray<bf16> d_dout(dout.size());
  DeviceArray<float> d_dtable(want.size());
  d_dout.upload(convert<bf16>(dout));
  CUDA_CHECK(cudaMemset(d_dtable.p, 0, sizeof(float) * want.size()));
  cuda::embedding_backward(d_dtable.p, d_dout.p, d_tok.p, vN, vV, vC);
  return max_abs_error(d_dtable.download(), want);
}

// float: absolute errors; bf16 (activations and weights; rstd and dw stay fp32): relative ones.
template <typename T>
std::pair<double, double> validate_rmsnorm() {  // forward, backward (dx)
  constexpr bool kBf16 = std::is_same_v<T, bf16>;
  auto in = [&](std::vector<float> v) { return kBf16 ? bf16_round(v) : v; };
  const auto x = in(random_floats(size_t(vN) * vC, 31)), w = in(random_floats(vC, 32, 0.5f, 1.5f)),
             dout = in(random_floats(size_t(vN) * vC, 33));
  std::vector<float> out(x.size()), rstd(vN), dx(x.size(), 0.0f), dw(vC, 0.0f);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), vN, vC, kEps);
  cpu::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), vN, vC);
  DeviceArray<T> d_x(x.size()), d_w(vC), d_dout(x.size()), d_out(x.size()), d_dx(x.size());
  DeviceArray<float> d_rstd(vN), d_dw(vC);
  d_x.upload(convert<T>(x)), d_w.upload(convert<T>(w)), d_dout.upload(convert<T>(dout));
  CUDA_CHECK(cudaMemset(d_dx.p, 0, sizeof(T) * x.size()));
  CUDA_CHECK(cudaMemset(d_dw.p, 0, sizeof(float) * vC));
  cuda::rmsnorm_forward(d_out.p, d_rstd.p, d_x.p, d_w.p, vN, vC, kEps);
  cuda::rmsnorm_backward(d_dx.p, d_dw.p, d_dout.p, d_x.p, d_w.p, d_rstd.p, vN, vC);
  if constexpr (kBf16)
    return {max_rel_error(widen(d_out.download()), out, 1e-1), max_rel_error(widen(d_dx.download()), dx, 1e-1)};
  else
    return {max_abs_error(d_out.download(), out), max_abs_error(d_dx.download(), dx)};
}

double validate_rope(bool backward) {
  const auto pos = random_ints(vN, 4096, 41);
  auto x = bf16_round(random_floats(size_t(vN) * vH * vD, 42));
  DeviceArray<int> d_pos(vN);
  DeviceArray<bf16> d_x(x.size());
  d_pos.upload(pos);
  d_x.upload(convert<bf16>(x));
  if (backward) {
    cpu::rope_backward(x.data(), pos.data(), vN, vH, vD, kTheta);
    cuda::rope_backward(d_x.p, d_pos.p, vN, vH, vD, kTheta);
  } else {
    cpu::rope_forward(x.data(), pos.data(), vN, vH, vD, kTheta);
    cuda::rope_forward(d_x.p, d_pos.p, vN, vH, vD, kTheta);
  }
  return max_abs_error(widen(d_x.download()), x);
}

double validate_swiglu(bool backward) {
  const size_t n = size_t(vN) * vF;
  const auto gate = bf16_round(random_floats(n, 51, -8, 8)), up = bf16_round(random_floats(n, 52, -2, 2)),
             dout = bf16_round(random_floats(n, 53));
  DeviceArray<bf16> d_gate(n), d_up(n), d_dout(n), d_a(n), d_b(n);
  d_gate.upload(convert<bf16>(gate)), d_up.upload(convert<bf16>(up)), d_dout.upload(convert<bf16>(dout));
  std::vector<float> a(n), b(n);
  if (!backward) {
    cpu::swiglu_forward(a.data(), gate.data(), up.data(), n);
    cuda::swiglu_forward(d_a.p, d_gate.p, d_up.p, n);
    return max_rel_error(widen(d_a.download()), a, 1e-1);
  }
  cpu::swiglu_backward(a.data(), b.data(), dout.data(), gate.data(), up.data(), n);
  cuda::swiglu_backward(d_a.p, d_b.p, d_dout.p, d_gate.p, d_up.p, n);
  return std::max(max_rel_error(widen(d_a.download()), a, 1e-1), max_rel_error(widen(d_b.download()), b, 1e-1));
}

double validate_residual() {
  const size_t n = size_t(vN) * vC;
  const auto x = bf16_round(random_floats(n, 61, -4, 4)), y = bf16_round(random_floats(n, 62));
  std::vector<float> want(n);
  cpu::residual_forward(want.data(), x.data(), y.data(), n);
  DeviceArray<bf16> d_x(n), d_y(n);
  d_x.upload(convert<bf16>(x)), d_y.upload(convert<bf16>(y));
  cuda::residual_forward(d_x.p, d_x.p, d_y.p, n);
  return max_rel_error(widen(d_x.download()), want, 1e-1);
}

// The number of elements whose bits differ from the CPU reference's (an odd size: a tail).
size_t validate_convert(bool narrowing) {
  const size_t n = size_t(vN) * vC + 3;
  const auto x = random_floats(n, 65, -1e3f, 1e3f);
  std::vector<uint16_t> half(n);
  cpu::convert(half.data(), x.data(), n);
  std::vector<float> wide(n);
  cpu::convert(wide.data(), half.data(), n);
  DeviceArray<float> d_f(n);
  DeviceArray<bf16> d_h(n);
  size_t differ = 0;
  if (narrowing) {
    d_f.upload(x);
    cuda::convert(d_h.p, d_f.p, n);
    const auto got = d_h.download();
    for (size_t i = 0; i < n; ++i) differ += std::memcmp(&got[i], &half[i], 2) != 0;
  } else {
    CUDA_CHECK(cudaMemcpy(d_h.p, half.data(), 2 * n, cudaMemcpyHostToDevice));
    cuda::convert(d_f.p, d_h.p, n);
    const auto got = d_f.download();
    for (size_t i = 0; i < n; ++i) differ += std::memcmp(&got[i], &wide[i], 4) != 0;
  }
  return differ;
}

std::pair<double, double> validate_adamw() {  // relative error of the sum of squares, abs of the params
  const size_t n = 100003;
  auto params = random_floats(n, 71);
  const auto grads = random_floats(n, 72, -0.1f, 0.1f);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  DeviceArray<float> d_p(n), d_g(n), d_m(n), d_v(n);
  d_p.upload(params), d_g.upload(grads), d_m.upload(m), d_v.upload(v);
  const double want = cpu::grad_sumsq(grads.data(), n), got = cuda::grad_sumsq(d_g.p, n);
  cpu::adamw_update(params.data(), grads.data(), m.data(), v.data(), nullptr, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1,
                    1.0f);
  cuda::adamw_update(d_p.p, d_g.p, d_m.p, d_v.p, nullptr, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 1.0f);
  return {std::fabs(got - want) / want, max_abs_error(d_p.download(), params)};
}

// Forward (bf16 out) and backward (bf16 dinp, fp32 dweight) of one GEMM shape at a small size.
double validate_matmul(cuda::Matmul& mm, bool backward, int N, int K, int M) {
  const auto a = bf16_round(random_floats(size_t(N) * K, 81)), w = bf16_round(random_floats(size_t(M) * K, 82)),
             dout = bf16_round(random_floats(size_t(N) * M, 83));
  DeviceArray<bf16> d_a(a.size()), d_w(w.size()), d_dout(dout.size()), d_out(size_t(N) * M), d_dinp(a.size());
  DeviceArray<float> d_dw(w.size());
  d_a.upload(convert<bf16>(a)), d_w.upload(convert<bf16>(w)), d_dout.upload(convert<bf16>(dout));
  if (!backward) {
    std::vector<float> want(size_t(N) * M);
    cpu::matmul_forward(want.data(), a.data(), w.data(), N, K, M);
    mm.forward(d_out.p, d_a.p, d_w.p, N, K, M);
    return max_rel_error(widen(d_out.download()), want, 1.0);
  }
  std::vector<float> dinp(a.size(), 0.0f), dw(w.size(), 0.0f);
  cpu::matmul_backward(dinp.data(), dw.data(), dout.data(), a.data(), w.data(), N, K, M);
  CUDA_CHECK(cudaMemset(d_dinp.p, 0, sizeof(bf16) * a.size()));
  CUDA_CHECK(cudaMemset(d_dw.p, 0, sizeof(float) * w.size()));
  mm.backward(d_dinp.p, d_dw.p, d_dout.p, d_a.p, d_w.p, N, K, M);
  return std::max(max_rel_error(widen(d_dinp.download()), dinp, 1.0), max_rel_error(d_dw.download(), dw, 1.0));
}

// ---- timing at the model's sizes -----------------------------------------------------------------
void cuda_rows(OpContext& ctx, std::vector<OpResult>& rows) {
  const Sizes s = ctx.quick ? quick_sizes() : full_sizes();
  const size_t NC = size_t(s.tokens) * s.d, NF = size_t(s.tokens) * s.ffn;
  const std::string nc = shape_str("N", s.tokens, "C", s.d);
  // bf16 results are held to a few of bf16's half-ulps (2^-9 relative); fp32 ones to float error.
  const double bf16_tol = 1e-2;

  {  // embedding
    const auto tokens = random_ints(s.tokens, s.vocab, 1);
    const size_t distinct = std::set<int>(tokens.begin(), tokens.end()).size();
    DeviceArray<int> d_tok(s.tokens);
    d_tok.upload(tokens);
    DeviceArray<bf16> d_table(size_t(s.vocab) * s.d), d_out(NC);
    DeviceArray<float> d_dtable(size_t(s.vocab) * s.d);
    fill(d_table, 2), fill(d_out, 3);
    CUDA_CHECK(cudaMemset(d_dtable.p, 0, sizeof(float) * d_dtable.n));
    const std::string shape = nc + str(" V", s.vocab);
    OpResult f = row("embedding_forward", shape, "bf16", ctx.time_ms([&] {
                       cuda::embedding_forward(d_out.p, d_tok.p, d_table.p, s.tokens, s.d);
                     }),
                     4.0 * NC + 4.0 * s.tokens);
    check(f, validate_embedding(false), 0.0);
    rows.push_back(f);
    OpResult b = row("embedding_backward", shape, "bf16>f32", ctx.time_ms([&] {
                       cuda::embedding_backward(d_dtable.p, d_out.p, d_tok.p, s.tokens, s.vocab, s.d);
                     }),
                     2.0 * NC + 8.0 * distinct * s.d + 4.0 * s.tokens);
    check(b, validate_embedding(true), 0.0);
    b.note = "deterministic: stable radix sort of token ids, one thread per column of each distinct token";
    rows.push_back(b);
  }
  {  // rmsnorm in float
    DeviceArray<float> d_x(NC), d_w(s.d), d_out(NC), d_rstd(s.tokens), d_dx(NC), d_dw(s.d);
    fill(d_x, 4), fill(d_w, 5), fill(d_out, 6);
    CUDA_CHECK(cudaMemset(d_dx.p, 0, sizeof(float) * NC));
    CUDA_CHECK(cudaMemset(d_dw.p, 0, sizeof(float) * s.d));
    const auto [ef, eb] = validate_rmsnorm<float>();
    OpResult f = row("rmsnorm_forward", nc, "f32", ctx.time_ms([&] {
                       cuda::rmsnorm_forward(d_out.p, d_rstd.p, d_x.p, d_w.p, s.tokens, s.d, kEps);
                     }),
                     8.0 * NC);
    check(f, ef, 1e-5);
    rows.push_back(f);
    // dout is d_out: any values will do for timing.
    OpResult b = row("rmsnorm_backward", nc, "f32", ctx.time_ms([&] {
                       cuda::rmsnorm_backward(d_dx.p, d_dw.p, d_out.p, d_x.p, d_w.p, d_rstd.p, s.tokens, s.d);
                     }),
                     16.0 * NC);
    check(b, eb, 1e-4);
    rows.push_back(b);
  }
  {  // rmsnorm as the GPU model runs it: bf16 activations and weights, fp32 rstd and dw
    DeviceArray<bf16> d_x(NC), d_w(s.d), d_out(NC), d_dx(NC);
    DeviceArray<float> d_rstd(s.tokens), d_dw(s.d);
    DeviceArray<float> d_ws(std::max<size_t>(cuda::rmsnorm_backward_workspace_bytes(s.tokens, s.d) / sizeof(float), 1));
    fill(d_x, 4), fill(d_w, 5), fill(d_out, 6);
    CUDA_CHECK(cudaMemset(d_dx.p, 0, sizeof(bf16) * NC));
    CUDA_CHECK(cudaMemset(d_dw.p, 0, sizeof(float) * s.d));
    const auto [ef, eb] = validate_rmsnorm<bf16>();
    OpResult f = row("rmsnorm_forward", nc, "bf16", ctx.time_ms([&] {
                       cuda::rmsnorm_forward(d_out.p, d_rstd.p, d_x.p, d_w.p, s.tokens, s.d, kEps);
                     }),
                     4.0 * NC);
    check(f, ef, bf16_tol, "rel");
    rows.push_back(f);
    OpResult b = row("rmsnorm_backward", nc, "bf16>f32", ctx.time_ms([&] {
                       cuda::rmsnorm_backward(d_dx.p, d_dw.p, d_out.p, d_x.p, d_w.p, d_rstd.p, s.tokens, s.d, 0,
                                              d_ws.p);
                     }),
                     8.0 * NC);
    check(b, eb, bf16_tol, "rel");
    b.note = "dx (bf16, +=) and dw (fp32, +=); dw partial sums in a workspace planned by the caller";
    rows.push_back(b);
  }
  {  // rope on the queries
    const size_t NHD = size_t(s.tokens) * s.heads * s.head_dim;
    std::vector<int> pos(s.tokens);
    for (int n = 0; n < s.tokens; ++n) pos[n] = n % 2048;  // sequences of 2k
    DeviceArray<int> d_pos(s.tokens);
    d_pos.upload(pos);
    DeviceArray<bf16> d_q(NHD);
    fill(d_q, 7);
    const std::string shape = shape_str("N", s.tokens, "H", s.heads, "D", s.head_dim);
    OpResult f = row("rope_forward", shape, "bf16", ctx.time_ms([&] {
                       cuda::rope_forward(d_q.p, d_pos.p, s.tokens, s.heads, s.head_dim, kTheta);
                     }),
                     4.0 * NHD);
    check(f, validate_rope(false), bf16_tol);
    rows.push_back(f);
    OpResult b = row("rope_backward", shape, "bf16", ctx.time_ms([&] {
                       cuda::rope_backward(d_q.p, d_pos.p, s.tokens, s.heads, s.head_dim, kTheta);
                     }),
                     4.0 * NHD);
    check(b, validate_rope(true), bf16_tol);
    rows.push_back(b);
  }
  {  // swiglu
    DeviceArray<bf16> d_gate(NF), d_up(NF), d_out(NF), d_dgate(NF), d_dup(NF);
    fill(d_gate, 8, 4.0f), fill(d_up, 9), fill(d_out, 10);
    const std::string shape = shape_str("N", s.tokens, "F", s.ffn);
    OpResult f = row("swiglu_forward", shape, "bf16",
                     ctx.time_ms([&] { cuda::swiglu_forward(d_out.p, d_gate.p, d_up.p, NF); }), 6.0 * NF);
    check(f, validate_swiglu(false), bf16_tol, "rel");
    rows.push_back(f);
    OpResult b = row("swiglu_backward", shape, "bf16", ctx.time_ms([&] {
                       cuda::swiglu_backward(d_dgate.p, d_dup.p, d_out.p, d_gate.p, d_up.p, NF);
                     }),
                     10.0 * NF);
    check(b, validate_swiglu(true), bf16_tol, "rel");
    rows.push_back(b);
  }
  {  // residual add, in place as the model does it
    DeviceArray<bf16> d_x(NC), d_y(NC);
    fill(d_x, 11), fill(d_y, 12, 1e-3f);
    OpResult r = row("residual_forward", nc, "bf16",
                     ctx.time_ms([&] { cuda::residual_forward(d_x.p, d_x.p, d_y.p, NC); }), 6.0 * NC);
    check(r, validate_residual(), bf16_tol, "rel");
    rows.push_back(r);
  }
  {  // the precision boundary: fp32 <-> bf16, as for the master weights' bf16 copy
    DeviceArray<float> d_f(NC);
    DeviceArray<bf16> d_h(NC);
    fill(d_f, 20);
    OpResult n = row("convert", nc, "f32>bf16", ctx.time_ms([&] { cuda::convert(d_h.p, d_f.p, NC); }), 6.0 * NC);
    check(n, double(validate_convert(true)), 0.0, "bits");
    n.note = "max_err: elements whose bits differ from the CPU reference";
    rows.push_back(n);
    OpResult w = row("convert", nc, "bf16>f32", ctx.time_ms([&] { cuda::convert(d_f.p, d_h.p, NC); }), 6.0 * NC);
    check(w, double(validate_convert(false)), 0.0, "bits");
    w.note = n.note;
    rows.push_back(w);
  }
  {  // AdamW over the whole model, fp32 grads, writing the bf16 copy for the forward
    const size_t P = s.params;
    DeviceArray<float> d_p(P), d_g(P), d_m(P), d_v(P);
    DeviceArray<bf16> d_pb(P);
    fill(d_p, 13), fill(d_g, 14, 1e-2f);
    CUDA_CHECK(cudaMemset(d_m.p, 0, sizeof(float) * P));
    CUDA_CHECK(cudaMemset(d_v.p, 0, sizeof(float) * P));
    const auto [e_sumsq, e_params] = validate_adamw();
    const std::string shape = shape_str("n", (long long)P);
    DeviceArray<double> d_sum(1);
    CUDA_CHECK(cudaMemset(d_sum.p, 0, sizeof(double)));
    OpResult g = row("grad_sumsq", shape, "f32", ctx.time_ms([&] { cuda::grad_sumsq_add(d_sum.p, d_g.p, P); }),
                     4.0 * P);
    check(g, e_sumsq, 1e-12, "rel");
    g.note = "deterministic: fixed 2^16-element chunks, fixed reduction trees";
    rows.push_back(g);
    int t = 0;
    OpResult a = row("adamw_update", shape, "f32>bf16", ctx.time_ms([&] {
                       cuda::adamw_update(d_p.p, d_g.p, d_m.p, d_v.p, nullptr, P, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f,
                                          ++t, 1.0f, d_pb.p);
                     }),
                     30.0 * P);  // read p, g, m, v; write p, m, v and the bf16 copy
    check(a, e_params, 1e-6);
    rows.push_back(a);
  }
  {  // the model's three GEMM shapes: MLP up (d -> ffn), down (ffn -> d), LM head (d -> vocab)
    cuda::Matmul mm;
    struct Gemm {
      const char* what;
      int K, M;
    };
    const Gemm gemms[] = {{"mlp up", s.d, s.ffn}, {"mlp down", s.ffn, s.d}, {"lm head", s.d, s.vocab}};
    for (const Gemm& gm : gemms) {
      const int N = s.tokens, K = gm.K, M = gm.M;
      // Validation at a shape with the same K and a smaller N and M, all odd-free sizes of the model.
      const int vn = 192, vm = std::min(M, 1536);
      const double ef = validate_matmul(mm, false, vn, K, vm), eb = validate_matmul(mm, true, vn, K, vm);
      DeviceArray<bf16> d_a(size_t(N) * K), d_w(size_t(M) * K), d_out(size_t(N) * M), d_dinp(size_t(N) * K);
      DeviceArray<float> d_dw(size_t(M) * K);
      fill(d_a, 15), fill(d_w, 16), fill(d_out, 17), fill(d_dinp, 18), fill(d_dw, 19);
      const std::string shape = str(shape_str("N", N, "K", K, "M", M), " (", gm.what, ")");
      const double flops = 2.0 * N * K * M;
      OpResult f = row("matmul_forward", shape, "bf16",
                       ctx.time_ms([&] { mm.forward(d_out.p, d_a.p, d_w.p, N, K, M); }), 0, flops);
      check(f, ef, bf16_tol, "rel");
      rows.push_back(f);
      // dout is d_out: any values will do for timing.
      OpResult b = row("matmul_backward", shape, "bf16>f32",
                       ctx.time_ms([&] { mm.backward(d_dinp.p, d_dw.p, d_out.p, d_a.p, d_w.p, N, K, M); }), 0,
                       2 * flops);
      check(b, eb, bf16_tol, "rel");
      b.note = "dinp (bf16, +=) and dweight (fp32, +=)";
      rows.push_back(b);
    }
  }
}
#endif

}  // namespace

std::vector<OpResult> pointwise_ops(OpContext& ctx) {
  std::vector<OpResult> rows;
  if (!ctx.cuda) {
    cpu_rows(ctx, rows);
    return rows;
  }
#ifdef OPD_WITH_CUDA
  cuda_rows(ctx, rows);
#else
  OPD_REQUIRE(false, "bench pointwise: this opd was built without CUDA");
#endif
  return rows;
}

}  // namespace opd::bench
