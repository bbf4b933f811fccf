#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/packed.cuh"
#include "kernels/cuda/rmsnorm.cuh"

namespace opd::cuda {

namespace {

using packed::aligned16;
using packed::kPack;

constexpr int kThreads = 256;
// Blocks of the backward kernel; fixed rather than derived from the device's SM count so that the
// order in which dw is summed depends on the shape alone.
constexpr int kMaxBackwardBlocks = 1024;
constexpr int kReduceRows = 8;

// W consecutive elements of T widened to float: whole 16-byte packs (W a multiple of kPack<T>)
// when rows are aligned, else one element. Element i of a row is chunk i / W, lane i % W.
template <int W, typename T>
__device__ __forceinline__ void load(float (&v)[W], const T* p, int chunk) {
  if constexpr (W == 1) {
    v[0] = packed::to_float(p[chunk]);
  } else {
    constexpr int P = kPack<T>;
    static_assert(W % P == 0, "a chunk is whole packs");
#pragma unroll
    for (int j = 0; j < W / P; ++j)
      packed::load_pack(*reinterpret_cast<float(*)[P]>(v + j * P), p, size_t(chunk) * (W / P) + j);
  }
}

template <int W, typename T>
__device__ __forceinline__ void store(T* p, int chunk, const float (&v)[W]) {
  if constexpr (W == 1) {
    p[chunk] = packed::from_float<T>(v[0]);
  } else {
    constexpr int P = kPack<T>;
    static_assert(W % P == 0, "a chunk is whole packs");
#pragma unroll
    for (int j = 0; j < W / P; ++j)
      packed::store_pack(p, size_t(chunk) * (W / P) + j, *reinterpret_cast<const float(*)[P]>(v + j * P));
  }
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
// that short rows do not leave most of a block idle. W: elements per chunk (see load).
template <typename T, int kTeam, int W>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_forward_kernel(T* __restrict__ out, float* __restrict__ rstd, const T* __restrict__ x,
                           const T* __restrict__ w, int N, int C, float eps) {
  __shared__ float red[kThreads / 32];
  const int t = threadIdx.x % kTeam;
  const int row = blockIdx.x * (kThreads / kTeam) + threadIdx.x / kTeam;
  if (row >= N) return;  // only whole spare warps of the last block, which share no barrier
  const T* xr = x + (size_t)row * C;
  T* yr = out + (size_t)row * C;
  const int chunks = C / W;

  float ss = 0.0f;
  for (int i = t; i < chunks; i += kTeam) {
    float a[W];
    load<W>(a, xr, i);
#pragma unroll
    for (int k = 0; k < W; ++k) ss += a[k] * a[k];
  }
  ss = team_sum<kTeam>(ss, red);
  const float r = rsqrtf(ss / C + eps);

  for (int i = t; i < chunks; i += kTeam) {
    float a[W], g[W], y[W];
    load<W>(a, xr, i);
    load<W>(g, w, i);
#pragma unroll
    for (int k = 0; k < W; ++k) y[k] = g[k] * (a[k] * r);
    store<W>(yr, i, y);
  }
  if (t == 0) rstd[row] = r;
}

// dx for each row, as in the CPU op, plus this block's share of dw: every team accumulates its
// rows into its own fp32 slice of shared memory (each thread only ever touches its own entries),
// and the block adds its teams in a fixed order into dw_part[blockIdx.x]. No atomics anywhere.
template <typename T, int kTeam, int W>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_kernel(T* __restrict__ dx, float* __restrict__ dw_part, const T* __restrict__ dout,
                            const T* __restrict__ x, const T* __restrict__ w, const float* __restrict__ rstd, int N,
                            int C) {
  constexpr int kTeams = kThreads / kTeam;
  extern __shared__ __align__(16) float dw_s[];  // [kTeams, C]
  __shared__ float red[kThreads / 32];
  const int t = threadIdx.x % kTeam, team = threadIdx.x / kTeam;
  float* my_dw = dw_s + (size_t)team * C;  // 16-byte aligned: C is a multiple of W when W > 1
  const int chunks = C / W;
  for (int i = t; i < chunks; i += kTeam) {
    const float zero[W] = {};
    store<W>(my_dw, i, zero);
  }

  for (int row = blockIdx.x * kTeams + team; row < N; row += gridDim.x * kTeams) {
    const size_t off = (size_t)row * C;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int i = t; i < chunks; i += kTeam) {
      float g[W], dy[W], a[W];
      load<W>(g, w, i);
      load<W>(dy, dout + off, i);
      load<W>(a, x + off, i);
#pragma unroll
      for (int k = 0; k < W; ++k) dot += g[k] * dy[k] * a[k];
    }
    dot = team_sum<kTeam>(dot, red);
    const float coef = dot * r * r / C;
    // The row was just read by this team, so this second pass comes from cache.
    for (int i = t; i < chunks; i += kTeam) {
      float g[W], dy[W], a[W], d[W], s[W];
      load<W>(g, w, i);
      load<W>(dy, dout + off, i);
      load<W>(a, x + off, i);
      load<W>(d, dx + off, i);
      load<W>(s, my_dw, i);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        d[k] += r * (g[k] * dy[k] - a[k] * coef);
        s[k] += dy[k] * a[k] * r;
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

// Narrow rows get a warp each; the cut-off keeps the backward's [8, C] shared buffer at 32 KiB.
// It depends on C alone, so the team size, the backward's grid and its workspace do too.
bool narrow(int C) { return C <= 1024; }

int cdiv(int a, int b) { return (a + b - 1) / b; }

template <int kTeam>
int backward_blocks(int N) {
  return std::min(cdiv(N, kThreads / kTeam), kMaxBackwardBlocks);
}

int backward_blocks(int N, int C) { return narrow(C) ? backward_blocks<32>(N) : backward_blocks<kThreads>(N); }

template <typename T, int kTeam, int W>
void launch_forward(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps, cudaStream_t stream) {
  const int blocks = cdiv(N, kThreads / kTeam);
  rmsnorm_forward_kernel<T, kTeam, W><<<blocks, kThreads, 0, stream>>>(out, rstd, x, w, N, C, eps);
  CUDA_CHECK_LAUNCH();
}

template <typename T, int kTeam, int W>
void launch_backward(T* dx, float* dw, const T* dout, const T* x, const T* w, const float* rstd, int N, int C,
                     cudaStream_t stream, float* workspace) {
  constexpr int kTeams = kThreads / kTeam;
  const int blocks = backward_blocks<kTeam>(N);
  const size_t smem = sizeof(float) * kTeams * C;
  auto kernel = rmsnorm_backward_kernel<T, kTeam, W>;
  if (smem > 48 * 1024) {
    int device = 0, limit = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    OPD_REQUIRE(smem <= (size_t)limit, "cuda::rmsnorm_backward: C=", C, " needs ", smem,
                " bytes of shared memory per block; this device allows ", limit);
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  }
  float* dw_part = workspace;
  if (!workspace) CUDA_CHECK(cudaMallocAsync(&dw_part, sizeof(float) * blocks * C, stream));
  kernel<<<blocks, kThreads, smem, stream>>>(dx, dw_part, dout, x, w, rstd, N, C);
  CUDA_CHECK_LAUNCH();
  if (dw) {  // null: a frozen weight (LoRA); the partial sums are left unread
    rmsnorm_dw_reduce_kernel<<<cdiv(C, 32), dim3(32, kReduceRows), 0, stream>>>(dw, dw_part, blocks, C);
    CUDA_CHECK_LAUNCH();
  }
  if (!workspace) CUDA_CHECK(cudaFreeAsync(dw_part, stream));
}

}  // namespace

size_t rmsnorm_backward_workspace_bytes(int N, int C) {
  OPD_REQUIRE(N >= 0 && C >= 0, "cuda::rmsnorm_backward_workspace_bytes: negative shape N=", N, " C=", C);
  if (N == 0 || C == 0) return 0;
  return sizeof(float) * size_t(backward_blocks(N, C)) * size_t(C);
}

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps, cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && C >= 0, "cuda::rmsnorm_forward: negative shape N=", N, " C=", C);
  if (N == 0 || C == 0) return;
  constexpr int P = kPack<T>;
  const bool vec = C % P == 0 && aligned16(out) && aligned16(x) && aligned16(w);
  if (narrow(C) && vec)
    launch_forward<T, 32, P>(out, rstd, x, w, N, C, eps, stream);
  else if (narrow(C))
    launch_forward<T, 32, 1>(out, rstd, x, w, N, C, eps, stream);
  else if (vec)
    launch_forward<T, kThreads, P>(out, rstd, x, w, N, C, eps, stream);
  else
    launch_forward<T, kThreads, 1>(out, rstd, x, w, N, C, eps, stream);
}

template <typename T>
void rmsnorm_backward(T* dx, float* dw, const T* dout, const T* x, const T* w, const float* rstd, int N, int C,
                      cudaStream_t stream, float* workspace) {
  OPD_REQUIRE(N >= 0 && C >= 0, "cuda::rmsnorm_backward: negative shape N=", N, " C=", C);
  OPD_REQUIRE(reinterpret_cast<uintptr_t>(workspace) % alignof(float) == 0,
              "cuda::rmsnorm_backward: workspace is not 4-byte aligned");
  if (N == 0 || C == 0) return;
  constexpr int P = kPack<T>;
  const bool vec = C % P == 0 && aligned16(dx) && aligned16(dout) && aligned16(x) && aligned16(w);
  if (narrow(C) && vec)
    launch_backward<T, 32, P>(dx, dw, dout, x, w, rstd, N, C, stream, workspace);
  else if (narrow(C))
    launch_backward<T, 32, 1>(dx, dw, dout, x, w, rstd, N, C, stream, workspace);
  else if (vec)
    launch_backward<T, kThreads, P>(dx, dw, dout, x, w, rstd, N, C, stream, workspace);
  else
    launch_backward<T, kThreads, 1>(dx, dw, dout, x, w, rstd, N, C, stream, workspace);
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, float, cudaStream_t);
template void rmsnorm_forward<__nv_bfloat16>(__nv_bfloat16*, float*, const __nv_bfloat16*, const __nv_bfloat16*, int,
                                             int, float, cudaStream_t);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*, int, int,
                                      cudaStream_t, float*);
template void rmsnorm_backward<__nv_bfloat16>(__nv_bfloat16*, float*, const __nv_bfloat16*, const __nv_bfloat16*,
                                              const __nv_bfloat16*, const float*, int, int, cudaStream_t, float*);

}  // namespace opd::cuda
