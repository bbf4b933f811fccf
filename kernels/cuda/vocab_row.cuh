// Device helpers shared by the kernels that walk vocabulary rows (logprobs, cross_entropy,
// reverse_kl): packed loads of fp32 or bf16 rows, an online max / sum-exp, and block reductions.
// CUDA code only (included by .cu files, not by plain C++).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace opd::cuda::vocab {

constexpr int kThreads = 256;  // one block per row
// 16-byte packs in flight per thread (64 bytes), so loads overlap the exp work; split between the
// two rows when a pass reads two (the reverse KL), which keeps the registers (and occupancy) the same.
constexpr int kUnroll = 4;
template <bool HasB>
constexpr int kPacks = HasB ? kUnroll / 2 : kUnroll;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Elements of T in one 16-byte load.
template <typename T>
constexpr int kVecWidth = 16 / sizeof(T);

// Pack i of a row: W consecutive elements, one 16-byte load when W > 1 (the caller checked
// alignment), else one element.
template <typename T, int W>
__device__ __forceinline__ void load_pack(const T* row, int i, float (&x)[W]) {
  if constexpr (W == 1) {
    x[0] = to_float(row[i]);
  } else {
    static_assert(W * sizeof(T) == 16, "a pack is one 16-byte load");
    const uint4 raw = reinterpret_cast<const uint4*>(row)[i];
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int k = 0; k < W; ++k) x[k] = to_float(e[k]);
  }
}

template <typename T, int W>
__device__ __forceinline__ void store_pack(T* row, int i, const float (&x)[W]) {
  if constexpr (W == 1) {
    row[i] = from_float<T>(x[0]);
  } else {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int k = 0; k < W; ++k) e[k] = from_float<T>(x[k]);
    reinterpret_cast<uint4*>(row)[i] = raw;
  }
}

// Calls f(v, a[v], b[v]) for this thread's share of a row (b[v] reads as 0 when HasB is false).
// kPacks<HasB> packs per row are loaded before any is used. With W > 1, V % W == 0 (the caller's
// check).
template <typename T, typename TB, int W, bool HasB, typename F>
__device__ __forceinline__ void visit_row(const T* a, const TB* b, int V, F&& f) {
  constexpr int U = kPacks<HasB>;
  const int chunks = V / W;
  const int step = blockDim.x;
  for (int base = threadIdx.x; base < chunks; base += U * step) {
    float xa[U][W], xb[U][W];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * step;
      if (i < chunks) {
        load_pack<T, W>(a, i, xa[u]);
        if constexpr (HasB) load_pack<TB, W>(b, i, xb[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * step;
      if (i < chunks) {
#pragma unroll
        for (int k = 0; k < W; ++k) f(i * W + k, xa[u][k], HasB ? xb[u][k] : 0.0f);
      }
    }
  }
}

// out[v] = f(v, a[v], b[v]) over this thread's share of a row. out may alias a: each element is
// read and written by the same thread, the read first.
template <typename T, typename TB, typename TO, int W, bool HasB, typename F>
__device__ __forceinline__ void map_row(TO* out, const T* a, const TB* b, int V, F&& f) {
  constexpr int U = kPacks<HasB>;
  const int chunks = V / W;
  const int step = blockDim.x;
  for (int base = threadIdx.x; base < chunks; base += U * step) {
    float xa[U][W], xb[U][W];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * step;
      if (i < chunks) {
        load_pack<T, W>(a, i, xa[u]);
        if constexpr (HasB) load_pack<TB, W>(b, i, xb[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * step;
      if (i < chunks) {
        float y[W];
#pragma unroll
        for (int k = 0; k < W; ++k) y[k] = f(i * W + k, xa[u][k], HasB ? xb[u][k] : 0.0f);
        store_pack<TO, W>(out, i, y);
      }
    }
  }
}

// Online softmax statistics of the elements seen so far: m their max, s = sum exp(x - m) and
// (when tracked) t = sum exp(x - m) * ((x - m) - c), c a per-element offset (0 for the entropy,
// the teacher's log-prob for the reverse KL). Rescaling to a new max m' multiplies every term by
// r = exp(m - m'), and (x - m) becomes (x - m') = (x - m) + (m - m'): t' = r (t + (m - m') s).
// Plain data (no initialisers) so that it can live in shared memory.
struct RowStats {
  float m, s, t;
};
__device__ __forceinline__ RowStats stats_empty() { return RowStats{-INFINITY, 0.0f, 0.0f}; }

template <bool kT>
__device__ __forceinline__ void stats_add(RowStats& a, float x, float c) {
  if (x > a.m) {
    // a.m == -inf only before the first finite element, when s and t are still 0.
    const float r = a.m == -INFINITY ? 0.0f : __expf(a.m - x);
    // Old terms whose weight underflows to 0 drop out, an infinite one (c = -inf) included.
    if constexpr (kT) a.t = (r > 0.0f ? r * (a.t + (a.m - x) * a.s) : 0.0f) - c;
    a.s = a.s * r + 1.0f;
    a.m = x;
  } else if (x != -INFINITY) {
    const float e = __expf(x - a.m);
    a.s += e;
    // A term with no mass adds nothing, even where c is -inf (a token the teacher rules out).
    if constexpr (kT)
      if (e > 0.0f) a.t += e * ((x - a.m) - c);
  }
}

template <bool kT>
__device__ __forceinline__ RowStats stats_merge(const RowStats& a, const RowStats& b) {
  RowStats r{fmaxf(a.m, b.m), 0.0f, 0.0f};
  if (r.m == -INFINITY) return r;
  if (a.m != -INFINITY) {
    const float ea = __expf(a.m - r.m);
    r.s += ea * a.s;
    if constexpr (kT)
      if (ea > 0.0f) r.t += ea * (a.t + (a.m - r.m) * a.s);
  }
  if (b.m != -INFINITY) {
    const float eb = __expf(b.m - r.m);
    r.s += eb * b.s;
    if constexpr (kT)
      if (eb > 0.0f) r.t += eb * (b.t + (b.m - r.m) * b.s);
  }
  return r;
}

// Every thread gets the block's statistics. The tree is fixed, so the result depends on the data
// alone. red: kThreads / 32 entries of shared memory.
template <bool kT>
__device__ __forceinline__ RowStats block_stats(RowStats v, RowStats* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    RowStats other;
    other.m = __shfl_xor_sync(0xffffffffu, v.m, o);
    other.s = __shfl_xor_sync(0xffffffffu, v.s, o);
    other.t = __shfl_xor_sync(0xffffffffu, v.t, o);
    v = stats_merge<kT>(v, other);
  }
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? red[lane] : stats_empty();
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      RowStats other;
      other.m = __shfl_xor_sync(0xffffffffu, v.m, o);
      other.s = __shfl_xor_sync(0xffffffffu, v.s, o);
      other.t = __shfl_xor_sync(0xffffffffu, v.t, o);
      v = stats_merge<kT>(v, other);
    }
    if (lane == 0) red[0] = v;
  }
  __syncthreads();
  v = red[0];
  __syncthreads();  // red is written again by the next reduction
  return v;
}

// Every thread gets the block's sum of v, by the same fixed tree as block_stats, so the result
// depends on the data alone (no atomics). red: kThreads / 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? red[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) red[0] = v;
  }
  __syncthreads();
  v = red[0];
  __syncthreads();  // red is written again by the next reduction
  return v;
}

// Whether a row of T can be read in 16-byte packs: every row start aligned.
inline bool packable(const void* p, int V, size_t elem) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0 && (static_cast<size_t>(V) * elem) % 16 == 0;
}

}  // namespace opd::cuda::vocab
