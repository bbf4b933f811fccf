#include <cmath>

#include "core/rng.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/sample.cuh"
#include "kernels/cuda/sample_select.h"

namespace opd::cuda {

namespace {

constexpr int kThreads = 256;

struct Best {
  float x;
  int v;
};

// The larger value, the lower id on ties: the CPU's strict-greater scan from id 0.
__device__ __forceinline__ Best better(Best a, Best b) { return b.x > a.x || (b.x == a.x && b.v < a.v) ? b : a; }

__device__ Best block_argmax(const float* x, int V, Best* red) {
  Best b{x[0], 0};
  for (int v = threadIdx.x; v < V; v += blockDim.x) b = better(b, Best{x[v], v});
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, b.x, o), __shfl_xor_sync(0xffffffffu, b.v, o)};
    b = better(b, other);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) red[warp] = b;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) b = better(b, red[w]);
    red[0] = b;
  }
  __syncthreads();
  b = red[0];
  __syncthreads();
  return b;
}

using sample_select::CountMass;
using sample_select::order_key;
using sample_select::prob_of;

// Count and probability mass of the elements whose key is <= K; kSorted picks the key: the sorted
// order's, or the id itself. Every thread gets the same result: a fixed tree over fixed per-thread
// shares, so asking twice gives the same bits.
template <bool kSorted>
__device__ CountMass mass_upto(const float* x, int V, float mx, float temperature, uint64_t K, CountMass* red) {
  CountMass c{0u, 0.0};
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float p = prob_of(x[v], mx, temperature);
    const uint64_t key = kSorted ? order_key(p, v) : static_cast<uint64_t>(v);
    if (key <= K) {
      c.count += 1;
      c.mass += p;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    c.count += __shfl_xor_sync(0xffffffffu, c.count, o);
    c.mass += __shfl_xor_sync(0xffffffffu, c.mass, o);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) red[warp] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) c.count += red[w].count, c.mass += red[w].mass;
    red[0] = c;
  }
  __syncthreads();
  c = red[0];
  __syncthreads();
  return c;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(int* __restrict__ tokens, const float* __restrict__ logits, const uint32_t* __restrict__ seq,
                  const uint32_t* __restrict__ pos, int V, float temperature, float top_p, int top_k, uint64_t seed,
                  uint32_t step) {
  __shared__ Best best_red[kThreads / 32];
  __shared__ CountMass red[kThreads / 32];
  const int row = blockIdx.x;
  const float* x = logits + static_cast<size_t>(row) * V;
  const Best top = block_argmax(x, V, best_red);
  if (temperature == 0.0f) {
    if (threadIdx.x == 0) tokens[row] = top.v;
    return;
  }
  const uint64_t counter = (static_cast<uint64_t>(seq[row]) << 32) | pos[row];
  const double u = uniform01(philox_draw(seed, step, counter).v[0]);
  const float mx = top.x;
  const int token = sample_select::select_token(
      top.v, V, u, top_p, top_k,
      [&](uint64_t K) { return mass_upto<false>(x, V, mx, temperature, K, red); },
      [&](uint64_t K) { return mass_upto<true>(x, V, mx, temperature, K, red); });
  if (threadIdx.x == 0) tokens[row] = token;
}

}  // namespace

void sample_tokens(int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N, int V,
                   const cpu::SampleParams& p, cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && V > 0, "cuda::sample_tokens: need N >= 0 and V > 0, got N=", N, " V=", V);
  OPD_REQUIRE(p.temperature >= 0.0f && std::isfinite(p.temperature),
              "cuda::sample_tokens: temperature must be finite and >= 0, got ", p.temperature);
  OPD_REQUIRE(p.top_p > 0.0f && p.top_p <= 1.0f, "cuda::sample_tokens: top_p must be in (0, 1], got ", p.top_p);
  OPD_REQUIRE(p.top_k >= 0, "cuda::sample_tokens: top_k must be >= 0, got ", p.top_k);
  if (N == 0) return;
  sample_kernel<<<N, kThreads, 0, stream>>>(tokens, logits, seq, pos, V, p.temperature, p.top_p, p.top_k, p.seed,
                                            p.step);
  CUDA_CHECK_LAUNCH();
}

}  // namespace opd::cuda
