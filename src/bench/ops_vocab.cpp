// opd bench ops --op vocab: the vocabulary-row ops (log-probs, cross-entropy, reverse KL, sampling).
// CPU mode times the reference ops at small shapes. CUDA mode checks every kernel against the CPU
// op at a small shape, then times it at a training-sized batch of Qwen3's vocabulary, fp32 and bf16
// logits. These ops are bandwidth-bound: `bytes` is what has to move at the least (each row read
// once, outputs written once), so the harness's GB/s over its measured copy bandwidth is the
// fraction of the ceiling; a note says when the kernel reads a row twice (the gradient ops).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bench/device_array.h"
#include "bench/op_bench.h"
#include "core/error.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/logprobs.h"
#include "kernels/cpu/reverse_kl.h"
#include "kernels/cpu/sample.h"

#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/logprobs.cuh"
#include "kernels/cuda/reverse_kl.cuh"
#include "kernels/cuda/sample.cuh"
#endif

namespace opd::bench {
namespace {

// Logits like a language model's: a normal bulk and a few strong candidates per row.
std::vector<float> vocab_logits(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> bulk(0.0f, 3.0f);
  std::vector<float> x(size_t(N) * V);
  for (auto& e : x) e = bulk(gen);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < 4; ++j) x[size_t(n) * V + gen() % V] += 12.0f;
  return x;
}

std::vector<int> vocab_targets(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int> t(N);
  for (int n = 0; n < N; ++n) t[n] = n % 9 == 4 ? -1 : int(gen() % V);
  return t;
}

std::string shape_name(int N, int V) { return str("N", N, " V", V); }

std::vector<OpResult> cpu_ops(OpContext& ctx) {
  const int N = ctx.quick ? 8 : 64, V = ctx.quick ? 1000 : 32000;
  const size_t NV = size_t(N) * V;
  const auto x = vocab_logits(N, V, 1), xt = vocab_logits(N, V, 2);
  const auto t = vocab_targets(N, V, 3);
  std::vector<float> lt(NV), dx(NV), out(N), out2(N), scale(N, 1.0f / N);
  cpu::log_softmax_forward(lt.data(), xt.data(), N, V);
  std::vector<OpResult> rows;
  auto add = [&](const char* op, double bytes, const std::function<void()>& fn) {
    OpResult r;
    r.op = op;
    r.shape = shape_name(N, V);
    r.dtype = "f32";
    r.max_err = -1;  // the reference itself
    r.ms = ctx.time_ms(fn);
    r.bytes = bytes;
    rows.push_back(r);
  };
  const double row = 4.0 * NV;
  add("logprobs_forward", row, [&] { cpu::logprobs_forward(out.data(), out2.data(), x.data(), t.data(), N, V); });
  add("cross_entropy_fwd_bwd", 2 * row,
      [&] { cpu::cross_entropy_forward_backward(out.data(), dx.data(), x.data(), t.data(), 1.0f / N, N, V); });
  add("reverse_kl_full_fwd_bwd", 3 * row,
      [&] { cpu::reverse_kl_full(out.data(), dx.data(), x.data(), lt.data(), scale.data(), N, V); });
  std::vector<uint32_t> seq(N), pos(N);
  for (int n = 0; n < N; ++n) seq[n] = n, pos[n] = 7;
  std::vector<int> tok(N);
  cpu::SampleParams p;
  p.top_p = 0.95f;
  add("sample_top_p", row, [&] { cpu::sample_tokens(tok.data(), x.data(), seq.data(), pos.data(), N, V, p); });
  return rows;
}

#ifdef OPD_WITH_CUDA

using cuda::bf16;


// What the GPU reads, back in float: the CPU reference sees the same (bf16-rounded) values.
template <typename T>
std::vector<float> to_f32(const std::vector<T>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = static_cast<float>(v[i]);
  return r;
}

template <typename T>
const char* dtype_name() {
  return std::is_same_v<T, float> ? "f32" : "bf16";
}

// One dtype's rows: each op validated at (Ns, Vs) against the CPU op, then timed at (N, V).
template <typename T>
void cuda_rows(OpContext& ctx, std::vector<OpResult>& rows) {
  const bool bf = !std::is_same_v<T, float>;
  const int Ns = 37, Vs = 32003;  // odd: the scalar path; the timed shape takes the packed one
  const int N = ctx.quick ? 64 : 8192, V = ctx.quick ? 4096 : 151936;
  const size_t NVs = size_t(Ns) * Vs, NV = size_t(N) * V;
  const double sz = sizeof(T);
  // Absolute tolerances: statistics (fp32 in both dtypes) and gradients (values <= 1, written in
  // the logits' type); a row that checks both holds the larger.
  const double tol_stat = 5e-4, tol_grad = bf ? 1e-2 : 5e-5, tol_both = std::max(tol_stat, tol_grad);

  // Small validation shape: host inputs (as the GPU reads them) and the CPU results.
  const auto xs = to_f32(convert<T>(vocab_logits(Ns, Vs, 11)));
  std::vector<float> lts(NVs);
  cpu::log_softmax_forward(lts.data(), to_f32(convert<T>(vocab_logits(Ns, Vs, 12))).data(), Ns, Vs);
  const auto lts_t = convert<T>(lts);
  const auto lts_f = to_f32(lts_t);
  const auto ts = vocab_targets(Ns, Vs, 13);
  const std::vector<float> scales(Ns, 0.5f);
  DeviceArray<T> vx(NVs), vlt(NVs), vdx(NVs);
  DeviceArray<int> vt(Ns);
  DeviceArray<float> vout(Ns), vout2(Ns), vscale(Ns);
  vx.upload(convert<T>(xs));
  vlt.upload(lts_t);
  vt.upload(ts);
  vscale.upload(scales);

  // Timed shape: a few host rows repeated through the buffers.
  const int tile_rows = std::min(N, 16);
  DeviceArray<T> x(NV), lt(NV), dx(NV);
  x.fill_tiled(convert<T>(vocab_logits(tile_rows, V, 21)));
  {
    std::vector<float> l(size_t(tile_rows) * V);
    cpu::log_softmax_forward(l.data(), vocab_logits(tile_rows, V, 22).data(), tile_rows, V);
    lt.fill_tiled(convert<T>(l));
  }
  DeviceArray<int> t(N);
  t.upload(vocab_targets(N, V, 23));
  DeviceArray<float> out(N), out2(N), scale(N);
  scale.upload(std::vector<float>(N, 1.0f / N));

  // A validated, timed row: its worst error against the CPU op and the tolerance it had to meet.
  auto shaped_row = [&](const char* op, const std::string& shape, double err, double tol, double bytes,
                        const char* note, const std::function<void()>& fn) {
    OpResult r;
    r.op = op;
    r.shape = shape;
    r.dtype = dtype_name<T>();
    r.max_err = err;
    r.tol = tol;
    r.ok = err <= tol;
    r.bytes = bytes;
    r.note = note;
    r.ms = ctx.time_ms(fn);
    rows.push_back(r);
  };
  auto row = [&](const char* op, double err, double tol, double bytes, const char* note,
                 const std::function<void()>& fn) { shaped_row(op, shape_name(N, V), err, tol, bytes, note, fn); };
  const double rowb = sz * NV;

  {  // logprobs_forward with entropy
    std::vector<float> lp(Ns), ent(Ns);
    cpu::logprobs_forward(lp.data(), ent.data(), xs.data(), ts.data(), Ns, Vs);
    cuda::logprobs_forward(vout.p, vout2.p, vx.p, vt.p, Ns, Vs);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double err = std::max(max_abs_error(vout.download(), lp), max_abs_error(vout2.download(), ent));
    row("logprobs_forward+entropy", err, tol_stat, rowb + 16.0 * N, "one read of each row",
        [&] { cuda::logprobs_forward(out.p, out2.p, x.p, t.p, N, V); });
    row("logprobs_forward", err, tol_stat, rowb + 12.0 * N, "one read of each row",
        [&] { cuda::logprobs_forward(out.p, static_cast<float*>(nullptr), x.p, t.p, N, V); });
  }
  {  // logprobs_backward: dx += dlogp (onehot - p)
    std::vector<float> dxs(NVs, 0.0f), dlogp(Ns, 0.25f);
    cpu::logprobs_backward(dxs.data(), dlogp.data(), xs.data(), ts.data(), Ns, Vs);
    CUDA_CHECK(cudaMemset(vdx.p, 0, sizeof(T) * NVs));
    vout.upload(dlogp);
    cuda::logprobs_backward(vdx.p, vout.p, vx.p, vt.p, Ns, Vs);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double err = max_abs_error(to_f32(vdx.download()), dxs);
    CUDA_CHECK(cudaMemset(dx.p, 0, sizeof(T) * NV));
    row("logprobs_backward", err, tol_grad, 3 * rowb, "reads the logits twice (statistics, then gradient)",
        [&] { cuda::logprobs_backward(dx.p, out.p, x.p, t.p, N, V); });
  }
  {  // cross-entropy, loss only and with the gradient in place
    std::vector<float> loss(Ns), dxs(NVs);
    cpu::cross_entropy_forward_backward(loss.data(), dxs.data(), xs.data(), ts.data(), 0.5f, Ns, Vs);
    CUDA_CHECK(cudaMemcpy(vdx.p, vx.p, sizeof(T) * NVs, cudaMemcpyDeviceToDevice));
    cuda::cross_entropy_forward_backward(vout.p, vdx.p, vdx.p, vt.p, 0.5f, Ns, Vs);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double err_loss = max_abs_error(vout.download(), loss);
    const double err = std::max(err_loss, max_abs_error(to_f32(vdx.download()), dxs));
    row("cross_entropy_forward", err_loss, tol_stat, rowb + 12.0 * N, "one read of each row",
        [&] { cuda::cross_entropy_forward_backward(out.p, static_cast<T*>(nullptr), x.p, t.p, 1.0f, N, V); });
    // The in-place calls overwrite their input with gradients: start from logits, stay finite.
    CUDA_CHECK(cudaMemcpy(dx.p, x.p, sizeof(T) * NV, cudaMemcpyDeviceToDevice));
    row("cross_entropy_fwd_bwd", err, tol_both, 2 * rowb + 12.0 * N, "in place; reads the logits twice",
        [&] { cuda::cross_entropy_forward_backward(out.p, dx.p, dx.p, t.p, 1.0f, N, V); });
  }
  {  // reverse KL over the full vocabulary
    // The reference in double: the KL of two unrelated rows is a sum of ~V terms of size ~10 that a
    // float CPU sum gets wrong by ~1e-3 itself; the check is relative above 1, absolute below.
    std::vector<double> kld(Ns), dxd(NVs);
    const std::vector<double> xsd(xs.begin(), xs.end()), ltd(lts_f.begin(), lts_f.end()),
        scd(scales.begin(), scales.end());
    cpu::reverse_kl_full(kld.data(), dxd.data(), xsd.data(), ltd.data(), scd.data(), Ns, Vs);
    const std::vector<float> kl(kld.begin(), kld.end()), dxs(dxd.begin(), dxd.end());
    cuda::reverse_kl_full(vout.p, vdx.p, vx.p, vlt.p, vscale.p, Ns, Vs);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double err_kl = max_rel_error(vout.download(), kl, 1.0);
    const double err = std::max(err_kl, max_abs_error(to_f32(vdx.download()), dxs));
    row("reverse_kl_full_forward", err_kl, 1e-4, 2 * rowb + 4.0 * N, "one read of student and teacher rows",
        [&] { cuda::reverse_kl_full(out.p, static_cast<T*>(nullptr), x.p, lt.p, scale.p, N, V); });
    rows.back().err_kind = "rel";
    CUDA_CHECK(cudaMemcpy(dx.p, x.p, sizeof(T) * NV, cudaMemcpyDeviceToDevice));
    row("reverse_kl_full_fwd_bwd", err, tol_both, 3 * rowb + 8.0 * N, "dlogits in place; reads both rows twice",
        [&] { cuda::reverse_kl_full(out.p, dx.p, dx.p, lt.p, scale.p, N, V); });
  }
  {  // reverse KL over the teacher's top-K plus the sampled token
    const int K1 = 21;
    std::mt19937 gen(5);
    std::vector<int> ids(size_t(Ns) * K1);
    for (int n = 0; n < Ns; ++n) {
      std::vector<int> used;
      for (int j = 0; j < K1; ++j) {
        int id;
        do id = int(gen() % Vs); while (std::find(used.begin(), used.end(), id) != used.end());
        used.push_back(id);
        ids[size_t(n) * K1 + j] = id;
      }
    }
    std::vector<float> ltk(size_t(Ns) * K1);
    for (auto& e : ltk) e = -float(gen() % 1000) / 100.0f;
    std::vector<float> kl(Ns), dxs(NVs);
    cpu::reverse_kl_topk(kl.data(), dxs.data(), xs.data(), ids.data(), ltk.data(), scales.data(), Ns, Vs, K1);
    DeviceArray<int> vids(ids.size());
    DeviceArray<float> vltk(ltk.size());
    vids.upload(ids);
    vltk.upload(ltk);
    cuda::reverse_kl_topk(vout.p, vdx.p, vx.p, vids.p, vltk.p, vscale.p, Ns, Vs, K1);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double err = std::max(max_abs_error(vout.download(), kl), max_abs_error(to_f32(vdx.download()), dxs));
    // Timed ids: the validation rows' ids (all < Vs <= V) repeated.
    DeviceArray<int> tids(size_t(N) * K1);
    tids.fill_tiled(ids);
    DeviceArray<float> tltk(size_t(N) * K1);
    tltk.fill_tiled(ltk);
    row("reverse_kl_topk_fwd_bwd", err, tol_both, rowb + 12.0 * N * K1, "K1 21; writes the zeroed dlogits row",
        [&] { cuda::reverse_kl_topk(out.p, dx.p, x.p, tids.p, tltk.p, scale.p, N, V, K1); });
  }
  {  // the teacher's top-K log-probs plus the sampled token (what it returns for --kl topk)
    const int K = 20, K1 = K + 1;
    std::vector<int> ids(size_t(Ns) * K1);
    std::vector<float> lp(ids.size());
    cpu::topk_logprobs(ids.data(), lp.data(), xs.data(), ts.data(), true, Ns, Vs, K);
    DeviceArray<int> vids(ids.size()), tids(size_t(N) * K1);
    DeviceArray<float> vlp(ids.size()), tlp(size_t(N) * K1);
    cuda::topk_logprobs(vids.p, vlp.p, vx.p, vt.p, true, Ns, Vs, K);
    CUDA_CHECK(cudaDeviceSynchronize());
    // A wrong id is a failure whatever its log-prob: it counts as an error of 1e9.
    const double err = vids.download() == ids ? max_abs_error(vlp.download(), lp) : 1e9;
    row("topk_logprobs", err, tol_stat, rowb + 8.0 * N * K1, "K 20: 1 + K passes over each row",
        [&] { cuda::topk_logprobs(tids.p, tlp.p, x.p, t.p, true, N, V, K); });
  }
  {  // full log-softmax rows (what a teacher returns for --kl full)
    std::vector<float> ls(NVs);
    cpu::log_softmax_forward(ls.data(), xs.data(), Ns, Vs);
    cuda::log_softmax_forward(vdx.p, vx.p, Ns, Vs);
    CUDA_CHECK(cudaDeviceSynchronize());
    // Relative: log-probs reach -50 here, where one bf16 rounding alone is 0.125.
    const double err = max_rel_error(to_f32(vdx.download()), ls, 1.0);
    row("log_softmax_forward", err, bf ? 4e-3 : 1e-5, 2 * rowb, "reads the logits twice",
        [&] { cuda::log_softmax_forward(dx.p, x.p, N, V); });
    rows.back().err_kind = "rel";
  }
  {  // vocabulary-parallel statistics of one shard (an eighth of the row)
    const int Vl = V / 8;
    DeviceArray<T> shard(size_t(N) * Vl);
    shard.fill_tiled(convert<T>(vocab_logits(tile_rows, Vl, 24)));
    DeviceArray<float> m(N), s(N), tl(N), lp(N);
    // Validation: 4 shards of the small rows combined = the whole row's logp.
    std::vector<float> want(Ns);
    cpu::logprobs_forward(want.data(), static_cast<float*>(nullptr), xs.data(), ts.data(), Ns, Vs);
    const int R = 4;
    DeviceArray<float> pm(size_t(R) * Ns), ps(size_t(R) * Ns), pt(size_t(R) * Ns);
    for (int r = 0; r < R; ++r) {
      const int v0 = int(long(Vs) * r / R), v1 = int(long(Vs) * (r + 1) / R);
      std::vector<float> slab(size_t(Ns) * (v1 - v0));
      for (int n = 0; n < Ns; ++n)
        std::copy(xs.begin() + size_t(n) * Vs + v0, xs.begin() + size_t(n) * Vs + v1,
                  slab.begin() + size_t(n) * (v1 - v0));
      DeviceArray<T> vs(slab.size());
      vs.upload(convert<T>(slab));
      cuda::logprobs_shard_stats(pm.p + size_t(r) * Ns, ps.p + size_t(r) * Ns, pt.p + size_t(r) * Ns, vs.p, vt.p, Ns,
                                 v1 - v0, v0);
      CUDA_CHECK(cudaDeviceSynchronize());
    }
    cuda::combine_shard_stats(vout.p, nullptr, pm.p, ps.p, pt.p, vt.p, R, Ns);
    CUDA_CHECK(cudaDeviceSynchronize());
    shaped_row("logprobs_shard_stats", str("N", N, " Vlocal", Vl), max_abs_error(vout.download(), want), tol_stat,
               sz * N * Vl + 16.0 * N, "one vocab shard of 8; validated: 4 shards combined vs the whole row",
               [&] { cuda::logprobs_shard_stats(m.p, s.p, tl.p, shard.p, t.p, N, Vl, 0); });
  }
  {  // vocabulary-parallel top-K ops on one shard: the teacher's candidates, the student's top-K
     // reverse KL sums and gradient. Validated on the small rows' columns [v0, v0 + Vls) as a shard
     // (global ids), against the CPU ops; timed on an eighth of the row.
    const int K = 20, K1 = K + 1, Vls = Vs / 2, v0 = Vs / 3, Vl = V / 8;
    std::vector<float> slab(size_t(Ns) * Vls), lse(Ns);
    for (int n = 0; n < Ns; ++n) {
      const float* x_n = xs.data() + size_t(n) * Vs;
      std::copy(x_n + v0, x_n + v0 + Vls, slab.begin() + size_t(n) * Vls);
      const double m = *std::max_element(x_n, x_n + Vs);
      double se = 0;
      for (int v = 0; v < Vs; ++v) se += std::exp(x_n[v] - m);
      lse[n] = float(m + std::log(se));
    }
    std::mt19937 gen(6);
    std::vector<int> ids(size_t(Ns) * K1);
    for (int n = 0; n < Ns; ++n)
      for (int j = 0; j < K1; ++j) {
        int id;
        do id = int(gen() % Vs); while (std::find(ids.begin() + size_t(n) * K1, ids.begin() + size_t(n) * K1 + j, id) !=
                                       ids.begin() + size_t(n) * K1 + j);
        ids[size_t(n) * K1 + j] = id;
      }
    std::vector<float> ltk(ids.size());
    for (auto& e : ltk) e = -float(gen() % 1000) / 100.0f;
    std::vector<int> cid(size_t(Ns) * K);
    std::vector<float> clp(cid.size()), zs(Ns), a(Ns), kl(Ns), dxs(slab.size());
    cpu::topk_shard_candidates(cid.data(), clp.data(), slab.data(), lse.data(), Ns, Vls, v0, K);
    cpu::reverse_kl_topk_shard_partial(zs.data(), a.data(), slab.data(), lse.data(), ids.data(), ltk.data(), Ns, Vls,
                                       v0, K1);
    cpu::reverse_kl_topk_combine(kl.data(), zs.data(), a.data(), Ns);  // as if the shard held all of the sums
    cpu::reverse_kl_topk_shard_grad(dxs.data(), slab.data(), lse.data(), zs.data(), ids.data(), ltk.data(), kl.data(),
                                    scales.data(), Ns, Vls, v0, K1);
    DeviceArray<T> vslab(slab.size()), vgrad(slab.size());
    DeviceArray<int> vids(ids.size()), vcid(cid.size());
    DeviceArray<float> vlse(Ns), vltk(ltk.size()), vclp(clp.size()), vzs(Ns), va(Ns), vkl(Ns);
    vslab.upload(convert<T>(slab));
    vlse.upload(lse);
    vids.upload(ids);
    vltk.upload(ltk);
    cuda::topk_shard_candidates(vcid.p, vclp.p, vslab.p, vlse.p, Ns, Vls, v0, K);
    cuda::reverse_kl_topk_shard_partial(vzs.p, va.p, vslab.p, vlse.p, vids.p, vltk.p, Ns, Vls, v0, K1);
    CUDA_CHECK(cudaDeviceSynchronize());
    // A wrong id is a failure whatever its log-prob: it counts as an error of 1e9.
    const double err_cand = vcid.download() == cid ? max_abs_error(vclp.download(), clp) : 1e9;
    const double err_sums = std::max(max_abs_error(vzs.download(), zs), max_abs_error(va.download(), a));
    vzs.upload(zs);  // the grad's inputs exactly as the CPU's
    vkl.upload(kl);
    cuda::reverse_kl_topk_shard_grad(vgrad.p, vslab.p, vlse.p, vzs.p, vids.p, vltk.p, vkl.p, vscale.p, Ns, Vls, v0, K1);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double err_grad = max_abs_error(to_f32(vgrad.download()), dxs);

    // Timed: a shard [N, Vl] holding ids [0, Vl), the validation ids (about half in it) repeated.
    const int tile = std::min(N, 16);
    const auto tile_x = vocab_logits(tile, Vl, 25);
    std::vector<float> tile_lse(tile);
    for (int n = 0; n < tile; ++n) {
      const float* x_n = tile_x.data() + size_t(n) * Vl;
      const double m = *std::max_element(x_n, x_n + Vl);
      double se = 0;
      for (int v = 0; v < Vl; ++v) se += std::exp(x_n[v] - m);
      tile_lse[n] = float(m + std::log(se));
    }
    DeviceArray<T> shard(size_t(N) * Vl), grad(size_t(N) * Vl);
    shard.fill_tiled(convert<T>(tile_x));
    DeviceArray<float> tlse(N), tltk(size_t(N) * K1), tzs(N), ta(N), tclp(size_t(N) * K);
    DeviceArray<int> tids(size_t(N) * K1), tcid(size_t(N) * K);
    tlse.fill_tiled(tile_lse);
    tids.fill_tiled(ids);
    tltk.fill_tiled(ltk);
    auto shard_row = [&](const char* op, double err, double tol, double bytes, const char* note,
                         const std::function<void()>& fn) {
      shaped_row(op, str("N", N, " Vlocal", Vl), err, tol, bytes, note, fn);
    };
    shard_row("topk_shard_candidates", err_cand, tol_stat, sz * N * Vl + 8.0 * N * K, "K 20: K passes over the slab",
              [&] { cuda::topk_shard_candidates(tcid.p, tclp.p, shard.p, tlse.p, N, Vl, 0, K); });
    shard_row("reverse_kl_topk_shard_partial", err_sums, tol_stat, 12.0 * N * K1 + 12.0 * N,
              "K1 21; reads the gathered logits only",
              [&] { cuda::reverse_kl_topk_shard_partial(tzs.p, ta.p, shard.p, tlse.p, tids.p, tltk.p, N, Vl, 0, K1); });
    DeviceArray<float> tkl(N);  // the grad's other inputs: every row with mass (zs = 0 would skip it)
    tzs.fill_tiled(std::vector<float>{0.5f});
    tkl.fill_tiled(std::vector<float>{0.1f});
    shard_row("reverse_kl_topk_shard_grad", err_grad, tol_both, sz * N * Vl + 12.0 * N * K1 + 16.0 * N,
              "K1 21; writes the zeroed dlogits slab",
              [&] {
                cuda::reverse_kl_topk_shard_grad(grad.p, shard.p, tlse.p, tzs.p, tids.p, tltk.p, tkl.p, scale.p, N,
                                                 Vl, 0, K1);
              });
  }
}

// Sampling: exact token equality with the CPU op is the check (max_err = rows that differ).
void sample_rows(OpContext& ctx, std::vector<OpResult>& rows) {
  const int Ns = 64, Vs = 32003;
  const int N = ctx.quick ? 8 : 256, V = ctx.quick ? 4096 : 151936;
  const auto xs = vocab_logits(Ns, Vs, 31);
  std::vector<uint32_t> seq(std::max(N, Ns)), pos(seq.size());
  for (size_t n = 0; n < seq.size(); ++n) seq[n] = uint32_t(n % 13), pos[n] = uint32_t(n * 7);
  DeviceArray<float> vx(xs.size()), x(size_t(N) * V);
  vx.upload(xs);
  x.fill_tiled(vocab_logits(std::min(N, 16), V, 32));
  DeviceArray<uint32_t> dseq(seq.size()), dpos(pos.size());
  dseq.upload(seq);
  dpos.upload(pos);
  DeviceArray<int> tok(std::max(N, Ns));
  struct Set {
    const char* name;
    float temperature, top_p;
    int top_k;
  };
  for (const Set& s : {Set{"sample_greedy", 0.0f, 1.0f, 0}, Set{"sample_temperature", 1.0f, 1.0f, 0},
                       Set{"sample_top_p", 0.7f, 0.95f, 0}, Set{"sample_top_k_top_p", 1.0f, 0.9f, 50}}) {
    cpu::SampleParams p;
    p.temperature = s.temperature, p.top_p = s.top_p, p.top_k = s.top_k, p.seed = 1234, p.step = 5;
    std::vector<int> want(Ns);
    cpu::sample_tokens(want.data(), xs.data(), seq.data(), pos.data(), Ns, Vs, p);
    cuda::sample_tokens(tok.p, vx.p, dseq.p, dpos.p, Ns, Vs, p);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto got = tok.download();
    int differ = 0;
    for (int n = 0; n < Ns; ++n) differ += got[n] != want[n];
    OpResult r;
    r.op = s.name;
    r.shape = shape_name(N, V);
    r.dtype = "f32";
    r.max_err = differ;
    r.tol = 0;
    r.err_kind = "rows";
    r.ok = differ == 0;
    r.bytes = 4.0 * N * V;
    r.note = s.temperature == 0.0f || s.top_p >= 1.0f ? "exact token vs CPU" : "exact token vs CPU; bisection passes";
    r.ms = ctx.time_ms([&] { cuda::sample_tokens(tok.p, x.p, dseq.p, dpos.p, N, V, p); });
    rows.push_back(r);
  }
}

std::vector<OpResult> cuda_ops(OpContext& ctx) {
  std::vector<OpResult> rows;
  cuda_rows<float>(ctx, rows);
  cuda_rows<bf16>(ctx, rows);
  sample_rows(ctx, rows);
  return rows;
}

#endif

}  // namespace

std::vector<OpResult> vocab_ops(OpContext& ctx) {
#ifdef OPD_WITH_CUDA
  if (ctx.cuda) return cuda_ops(ctx);
#else
  OPD_REQUIRE(!ctx.cuda, "bench ops --op vocab: --device cuda needs a build with CUDA (OPD_CUDA=ON)");
#endif
  return cpu_ops(ctx);
}

}  // namespace opd::bench
