#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/rmsnorm.cuh"

namespace opd::cuda {

namespace {

constexpr int kThreads = 256;
// Blocks of the backward kernel; fixed rather than derived from the device's SM count so that the
// order in which dw is summed depends on the shape alone.
constexpr int kMaxBackwardBlocks = 1024;
constexpr int kReduceRows = 8;

// W consecutive floats: a float4 when rows are 16-byte aligned, else one float.
template <int W>
struct Pack {
  float v[W];
};

template <int W>
__device__ __forceinline__ Pack<W> load(const float* p, int i) {
  Pack<W> r;
  if constexpr (W == 4) {
    const float4 t = reinterpret_cast<const float4*>(p)[i];
    r.v[0] = t.x, r.v[1] = t.y, r.v[2] = t.z, r.v[3] = t.w;
  } else {
    r.v[0] = p[i];
  }
  return r;
}

template <int W>
__device__ __forceinline__ void store(float* p, int i, const Pack<W>& r) {
  if constexpr (W == 4)
    reinterpret_cast<float4*>(p)[i] = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  else
    p[i] = r.v[0];
}

// The xor butterfly adds the same pairs on every lane, so all lanes end with the same bits.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over a team of kTeam threads (one warp, or the whole block); every member gets the result.
template <int kTeam>
__device__ __forceinline__ float team_sum(float v, float* red) {
  v = warp_sum(v);
  if constexpr (kTeam == 32) {
    return v;
  } else {
    static_assert(kTeam == kThreads, "a team is one warp or the whole block");
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = warp_sum(lane < kThreads / 32 ? red[lane] : 0.0f);
    __syncthreads();  // red is written again by the next call
    return v;
  }
}

// One team per row: a warp for narrow rows (qk-norm's head_dim), the block for wide ones, so
// that short rows do not leave most of a block idle.
template <int kTeam, int W>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_forward_kernel(float* __restrict__ out, float* __restrict__ rstd, const float* __restrict__ x,
                           const float* __restrict__ w, int N, int C, float eps) {
  __shared__ float red[kThreads / 32];
  const int t = threadIdx.x % kTeam;
  const int row = blockIdx.x * (kThreads / kTeam) + threadIdx.x / kTeam;
  if (row >= N) return;  // only whole spare warps of the last block, which share no barrier
  const float* xr = x + (size_t)row * C;
  float* yr = out + (size_t)row * C;
  const int chunks = C / W;

  float ss = 0.0f;
  for (int i = t; i < chunks; i += kTeam) {
    const Pack<W> a = load<W>(xr, i);
    for (int k = 0; k < W; ++k) ss += a.v[k] * a.v[k];
  }
  ss = team_sum<kTeam>(ss, red);
  const float r = rsqrtf(ss / C + eps);

  for (int i = t; i < chunks; i += kTeam) {
    const Pack<W> a = load<W>(xr, i), g = load<W>(w, i);
    Pack<W> y;
    for (int k = 0; k < W; ++k) y.v[k] = g.v[k] * (a.v[k] * r);
    store<W>(yr, i, y);
  }
  if (t == 0) rstd[row] = r;
}

// dx for each row, as in the CPU op, plus this block's share of dw: every team accumulates its
// rows into its own slice of shared memory (each thread only ever touches its own entries), and
// the block adds its teams in a fixed order into dw_part[blockIdx.x]. No atomics anywhere.
template <int kTeam, int W>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_kernel(float* __restrict__ dx, float* __restrict__ dw_part, const float* __restrict__ dout,
                            const float* __restrict__ x, const float* __restrict__ w,
                            const float* __restrict__ rstd, int N, int C) {
  constexpr int kTeams = kThreads / kTeam;
  extern __shared__ __align__(16) float dw_s[];  // [kTeams, C]
  __shared__ float red[kThreads / 32];
  const int t = threadIdx.x % kTeam, team = threadIdx.x / kTeam;
  float* my_dw = dw_s + (size_t)team * C;
  const int chunks = C / W;
  for (int i = t; i < chunks; i += kTeam) store<W>(my_dw, i, Pack<W>{});

  for (int row = blockIdx.x * kTeams + team; row < N; row += gridDim.x * kTeams) {
    const size_t off = (size_t)row * C;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int i = t; i < chunks; i += kTeam) {
      const Pack<W> g = load<W>(w, i), dy = load<W>(dout + off, i), a = load<W>(x + off, i);
      for (int k = 0; k < W; ++k) dot += g.v[k] * dy.v[k] * a.v[k];
    }
    dot = team_sum<kTeam>(dot, red);
    const float coef = dot * r * r / C;
    // The row was just read by this team, so this second pass comes from cache.
    for (int i = t; i < chunks; i += kTeam) {
      const Pack<W> g = load<W>(w, i), dy = load<W>(dout + off, i), a = load<W>(x + off, i);
      Pack<W> d = load<W>(dx + off, i), s = load<W>(my_dw, i);
      for (int k = 0; k < W; ++k) {
        d.v[k] += r * (g.v[k] * dy.v[k] - a.v[k] * coef);
        s.v[k] += dy.v[k] * a.v[k] * r;
      }
      store<W>(dx + off, i, d);
      store<W>(my_dw, i, s);
    }
  }

  __syncthreads();
  for (int c = threadIdx.x; c < C; c += kThreads) {
    float s = 0.0f;
    for (int j = 0; j < kTeams; ++j) s += dw_s[(size_t)j * C + c];
    dw_part[(size_t)blockIdx.x * C + c] = s;
  }
}

// dw[c] += sum over blocks of dw_part[b, c]: kReduceRows threads per column take every
// kReduceRows-th block, then one adds their sums, always in the same order.
__global__ void __launch_bounds__(32 * kReduceRows)
    rmsnorm_dw_reduce_kernel(float* __restrict__ dw, const float* __restrict__ dw_part, int blocks, int C) {
  __shared__ float part[kReduceRows][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.0f;
  if (c < C)
    for (int b = threadIdx.y; b < blocks; b += kReduceRows) s += dw_part[(size_t)b * C + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float total = 0.0f;
    for (int j = 0; j < kReduceRows; ++j) total += part[j][threadIdx.x];
    dw[c] += total;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Narrow rows get a warp each; the cut-off keeps the backward's [8, C] shared buffer at 32 KiB.
bool narrow(int C) { return C <= 1024; }

int cdiv(int a, int b) { return (a + b - 1) / b; }

template <int kTeam, int W>
void launch_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) {
  const int blocks = cdiv(N, kThreads / kTeam);
  rmsnorm_forward_kernel<kTeam, W><<<blocks, kThreads>>>(out, rstd, x, w, N, C, eps);
  CUDA_CHECK_LAUNCH();
}

template <int kTeam, int W>
void launch_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                     int N, int C) {
  constexpr int kTeams = kThreads / kTeam;
  const int blocks = std::min(cdiv(N, kTeams), kMaxBackwardBlocks);
  const size_t smem = sizeof(float) * kTeams * C;
  auto kernel = rmsnorm_backward_kernel<kTeam, W>;
  if (smem > 48 * 1024) {
    int device = 0, limit = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    OPD_REQUIRE(smem <= (size_t)limit, "cuda::rmsnorm_backward: C=", C, " needs ", smem,
                " bytes of shared memory per block; this device allows ", limit);
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  }
  float* dw_part = nullptr;
  CUDA_CHECK(cudaMallocAsync(&dw_part, sizeof(float) * blocks * C, 0));
  kernel<<<blocks, kThreads, smem>>>(dx, dw_part, dout, x, w, rstd, N, C);
  CUDA_CHECK_LAUNCH();
  rmsnorm_dw_reduce_kernel<<<cdiv(C, 32), dim3(32, kReduceRows)>>>(dw, dw_part, blocks, C);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaFreeAsync(dw_part, 0));
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) {
  OPD_REQUIRE(N >= 0 && C >= 0, "cuda::rmsnorm_forward: negative shape N=", N, " C=", C);
  if (N == 0 || C == 0) return;
  const bool vec = C % 4 == 0 && aligned16(out) && aligned16(x) && aligned16(w);
  if (narrow(C) && vec)
    launch_forward<32, 4>(out, rstd, x, w, N, C, eps);
  else if (narrow(C))
    launch_forward<32, 1>(out, rstd, x, w, N, C, eps);
  else if (vec)
    launch_forward<kThreads, 4>(out, rstd, x, w, N, C, eps);
  else
    launch_forward<kThreads, 1>(out, rstd, x, w, N, C, eps);
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int N, int C) {
  OPD_REQUIRE(N >= 0 && C >= 0, "cuda::rmsnorm_backward: negative shape N=", N, " C=", C);
  if (N == 0 || C == 0) return;
  const bool vec = C % 4 == 0 && aligned16(dx) && aligned16(dout) && aligned16(x) && aligned16(w);
  if (narrow(C) && vec)
    launch_backward<32, 4>(dx, dw, dout, x, w, rstd, N, C);
  else if (narrow(C))
    launch_backward<32, 1>(dx, dw, dout, x, w, rstd, N, C);
  else if (vec)
    launch_backward<kThreads, 4>(dx, dw, dout, x, w, rstd, N, C);
  else
    launch_backward<kThreads, 1>(dx, dw, dout, x, w, rstd, N, C);
}

}  // namespace opd::cuda
