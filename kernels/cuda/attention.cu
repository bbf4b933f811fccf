// Causal grouped-query flash attention on the GPU: the training forward (tensor-core tiles with an
// online softmax), the KV-cache prefill write and the flash-decoding step. The backward lives in
// attention_backward.cu. The CPU op (kernels/cpu/attention.cpp) is the reference.
//
// Forward design: one block of 4 warps per (64-row query tile, head, sequence). Each warp owns 16
// query rows and keeps them, its running max/sum and its [16 x D] output in registers. K and V
// tiles of 64 keys go through shared memory, double-buffered with cp.async so the next tile loads
// while this one is multiplied. S = Q K^T and O += P V both use mma.sync m16n8k16 (bf16 in, fp32
// accumulate); P goes from S's accumulator registers straight into the A operand of the second
// product (their fragment layouts line up), so probabilities never touch shared memory. The head
// dim only sets the k-steps of Q K^T and the n-tiles of P V (D / 16 and D / 8), so the small heads
// of the miniature models (16, 32) run the same tiles as 64 and 128.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/mma_sm80.cuh"

namespace opd::cuda {
namespace {

using namespace sm80;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__host__ __device__ constexpr int cdiv(int a, int b) { return (a + b - 1) / b; }
bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// ---- forward ------------------------------------------------------------------------------------

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBr = kWarps * 16;  // query rows per block
constexpr int kBc = 64;           // keys per K/V tile
static_assert(kBr == kBc, "the causal tile schedule assumes square tiles");

// Shared rows are padded by 8 bf16 (16 bytes): a row is then an odd number of 16-byte units long
// (9 or 17 at D = 64 or 128, 3 or 5 at D = 16 or 32), so the 8 row addresses of one ldmatrix phase
// hit 8 different bank quads of the 128-byte bank window.
template <int D>
struct FwdSmem {
  static constexpr int kStride = D + 8;
  static constexpr int kTile = kBc * kStride;  // elements in one K or V tile (kBr == kBc)
  static constexpr size_t kBytes = sizeof(bf16) * size_t(kTile) * 5;  // Q, K[2], V[2]
};

// Rows [row0, row0 + 64) of a [.., T, heads, D] tensor at head `head` into a [64][D + 8] tile;
// rows at or past T are zero-filled so that they contribute nothing (0 * 0, never 0 * NaN).
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src_bt0, int row0, int Tn, int heads, int head) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < kBc * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const int row = row0 + r;
    const bool in = row < Tn;
    const bf16* src = src_bt0 + ((size_t)(in ? row : 0) * heads + head) * D + c * 8;
    cp_async16(dst + r * FwdSmem<D>::kStride + c * 8, src, in ? 16 : 0);
  }
}

// Left free at D = 16, ptxas squeezes the kernel to 80 registers and spills; asking for 4 blocks
// per SM (a cap of 128 registers) avoids that. 0 is no minimum, which the other head dims keep.
template <int D>
constexpr int fwd_min_blocks() {
  return D == 16 ? 4 : 0;
}

template <int D>
__global__ void __launch_bounds__(kThreads, fwd_min_blocks<D>())
    attention_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
                             const bf16* __restrict__ k, const bf16* __restrict__ v, int Tn, int H, int Hkv,
                             float scale_log2) {
  constexpr int S = FwdSmem<D>::kStride;
  constexpr int kDk = D / 16;  // k-steps of Q K^T
  constexpr int kDn = D / 8;   // n-tiles of the output
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + FwdSmem<D>::kTile;      // two buffers
  bf16* sV = sK + 2 * FwdSmem<D>::kTile;  // two buffers

  // Diagonal tiles do the most work: launch them first so the tail of the grid is short ones.
  const int qtile = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int hkv = h / (H / Hkv);
  const int q0 = qtile * kBr;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;

  const bf16* qb = q + (size_t)b * Tn * H * D;
  const bf16* kb = k + (size_t)b * Tn * Hkv * D;
  const bf16* vb = v + (size_t)b * Tn * Hkv * D;

  // Causal, and kBr == kBc: query tile i needs key tiles 0..i, and only tile i is cut by the mask.
  const int n_tiles = qtile + 1;

  load_tile<D>(sQ, qb, q0, Tn, H, h);
  load_tile<D>(sK, kb, 0, Tn, Hkv, hkv);
  load_tile<D>(sV, vb, 0, Tn, Hkv, hkv);
  cp_async_commit();

  uint32_t qf[kDk][4];
  float o[kDn][4];
#pragma unroll
  for (int i = 0; i < kDn; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  // Rows g and g + 8 of this warp's 16: running max (log2 domain, scaled) and this thread's part
  // of the running sum (the 4 threads of a row are added up at the end).
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.0f, 0.0f};

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1;
    // Prefetch tile j + 1 into the other buffer; its last readers finished at the end of j - 1.
    if (j + 1 < n_tiles) {
      load_tile<D>(sK + (buf ^ 1) * FwdSmem<D>::kTile, kb, (j + 1) * kBc, Tn, Hkv, hkv);
      load_tile<D>(sV + (buf ^ 1) * FwdSmem<D>::kTile, vb, (j + 1) * kBc, Tn, Hkv, hkv);
    }
    cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning "tile j"
    cp_async_wait<1>();
    __syncthreads();

    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kDk; ++kk) {
        const int row = warp * 16 + (lane % 8) + ((lane >> 3) & 1) * 8;
        const int col = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(qf[kk], sQ + row * S + col);
      }
    }

    const bf16* sKj = sK + buf * FwdSmem<D>::kTile;
    const bf16* sVj = sV + buf * FwdSmem<D>::kTile;

    // s[n] covers keys 8n..8n+7 of the tile.
    float s[kBc / 8][4];
#pragma unroll
    for (int n = 0; n < kBc / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kDk; ++kk) {
#pragma unroll
      for (int np = 0; np < kBc / 16; ++np) {
        uint32_t kf[4];
        const int key = np * 16 + (lane % 8) + (lane >> 4) * 8;
        const int col = kk * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(kf, sKj + key * S + col);
        mma_bf16(s[2 * np], qf[kk], kf[0], kf[1]);
        mma_bf16(s[2 * np + 1], qf[kk], kf[2], kf[3]);
      }
    }

    const bool diagonal = j == qtile;
#pragma unroll
    for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * scale_log2;
        if (diagonal) {
          const int key = j * kBc + n * 8 + 2 * t + (e & 1);
          const int row = q0 + warp * 16 + g + (e >> 1) * 8;
          if (key > row || key >= Tn) x = -INFINITY;
        }
        s[n][e] = x;
      }
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = m_run[r];
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // A row that has seen only masked keys keeps max -inf; subtracting 0 then keeps exp2 at 0
      // instead of NaN. (Every real row sees key 0 in tile 0, so this guards padding rows only.)
      const float base = mx == -INFINITY ? 0.0f : mx;
      const float alpha = exp2f(m_run[r] - base);
      m_run[r] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
        s[n][2 * r] = exp2f(s[n][2 * r] - base);
        s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - base);
        sum += s[n][2 * r] + s[n][2 * r + 1];
      }
      l_run[r] = l_run[r] * alpha + sum;
#pragma unroll
      for (int i = 0; i < kDn; ++i) {
        o[i][2 * r] *= alpha;
        o[i][2 * r + 1] *= alpha;
      }
    }

    // O += P V. The A fragment of keys 16kk..16kk+15 is made of S's n-tiles 2kk and 2kk + 1.
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t pf[4];
      pf[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
      pf[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
      pf[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pf[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vf[4];
        const int key = kk * 16 + (lane % 8) + ((lane >> 3) & 1) * 8;
        const int col = dp * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(vf, sVj + key * S + col);
        mma_bf16(o[2 * dp], pf, vf[0], vf[1]);
        mma_bf16(o[2 * dp + 1], pf, vf[2], vf[3]);
      }
    }
    __syncthreads();  // buffer `buf` is refilled by the prefetch of iteration j + 1
  }
  cp_async_wait<0>();  // only empty groups can be left; drain them before the block exits

  // Normalise, stage this warp's 16 rows in its own rows of sQ (read only by this warp, and only
  // in iteration 0), then store them as 16-byte row chunks.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int row_local = warp * 16 + g + r * 8;
#pragma unroll
    for (int i = 0; i < kDn; ++i) {
      *reinterpret_cast<uint32_t*>(sQ + row_local * S + i * 8 + 2 * t) =
          pack_bf16(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
    }
    const int row = q0 + row_local;
    if (t == 0 && row < Tn) {
      const float m = m_run[r] == -INFINITY ? 0.0f : m_run[r];
      lse[((size_t)b * H + h) * Tn + row] = (m + log2f(l)) * kLn2;
    }
  }
  __syncwarp();
  constexpr int kChunks = D / 8;
  for (int i = lane; i < 16 * kChunks; i += 32) {
    const int rr = i / kChunks, c = i % kChunks;
    const int row = q0 + warp * 16 + rr;
    if (row < Tn) {
      const uint4 val = *reinterpret_cast<const uint4*>(sQ + (warp * 16 + rr) * S + c * 8);
      *reinterpret_cast<uint4*>(out + (((size_t)b * Tn + row) * H + h) * D + c * 8) = val;
    }
  }
}

template <int D>
void launch_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int Tn, int H,
                    int Hkv, cudaStream_t stream) {
  auto kernel = attention_forward_kernel<D>;
  constexpr size_t smem = FwdSmem<D>::kBytes;
  if (smem > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const dim3 grid(cdiv(Tn, kBr), H, B);
  const float scale_log2 = kLog2e / std::sqrt(float(D));
  kernel<<<grid, kThreads, smem, stream>>>(out, lse, q, k, v, Tn, H, Hkv, scale_log2);
  CUDA_CHECK_LAUNCH();
}

void check_heads(const char* op, int B, int H, int Hkv, int D) {
  OPD_REQUIRE(B >= 0 && H > 0 && Hkv > 0, op, ": bad shape B=", B, " H=", H, " Hkv=", Hkv);
  OPD_REQUIRE(H % Hkv == 0, op, ": n_heads (", H, ") must be a multiple of n_kv_heads (", Hkv, ")");
  OPD_REQUIRE(D == 16 || D == 32 || D == 64 || D == 128, op, ": head_dim D=", D,
              " is not supported (the kernels are built for 16, 32, 64 and 128)");
  OPD_REQUIRE(H <= 65535 && B <= 65535, op, ": H=", H, " and B=", B, " must each be at most 65535 (grid limit)");
}

// ---- decode (flash-decoding) --------------------------------------------------------------------
//
// Grid (chunk, kv head x head group, sequence): every block reads kDecChunk cache rows of one kv
// head once and scores them against up to kDecHeads query heads of its group, leaving in the
// workspace the chunk's max (log2 domain), sum of exp2 and unnormalised output per head. A second
// kernel merges the chunks of each (sequence, head). Chunks past pos[b] exit at once.

constexpr int kDecChunk = 256;
constexpr int kDecSub = 64;    // cache rows staged in shared memory at a time
constexpr int kDecHeads = 8;   // query heads per block
constexpr int kDecThreads = 128;

int decode_chunks(int S) { return cdiv(S, kDecChunk); }

// Workspace: o [B, H, NC, D], then m and l [B, H, NC] (NC = chunks of a full cache).
struct DecodeWs {
  float *o, *m, *l;
  DecodeWs(void* ws, int B, int S, int H, int D) {
    const size_t n = (size_t)B * H * decode_chunks(S);
    o = static_cast<float*>(ws);
    m = o + n * D;
    l = m + n;
  }
};

__global__ void kv_store_kernel(bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                const bf16* __restrict__ k_new, const bf16* __restrict__ v_new,
                                const int* __restrict__ pos, int B, int S, int row) {
  const size_t n = (size_t)B * row;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int b = int(i / row);
    const int p = pos[b];
    if (p < 0 || p >= S) continue;  // reported as NaN output by the reduce kernel
    const size_t dst = ((size_t)b * S + p) * row + i % row;
    k_cache[dst] = k_new[i];
    v_cache[dst] = v_new[i];
  }
}

template <int D>
__global__ void __launch_bounds__(kDecThreads)
    decode_partial_kernel(DecodeWs ws, const bf16* __restrict__ q, const bf16* __restrict__ k_cache,
                          const bf16* __restrict__ v_cache, const int* __restrict__ pos, int S, int H, int Hkv,
                          float scale_log2) {
  constexpr int SD = D + 8;  // padded row: 16-byte reads of 8 consecutive rows hit distinct banks
  constexpr int kPairs = D / 2;
  constexpr int kCells = kDecHeads * kPairs;  // (head, column pair) cells of the output
  // Cells per thread. At D = 16 there are fewer cells than threads: each thread gets one slot, and
  // those past the last cell (head index cell / kPairs >= kDecHeads >= nh) skip it like any head
  // past nh.
  constexpr int kAcc = kCells >= kDecThreads ? kCells / kDecThreads : 1;
  static_assert(kCells % kDecThreads == 0 || kDecThreads % kCells == 0, "cells must split evenly over threads");
  __shared__ float q_s[kDecHeads][D];
  __shared__ float p_s[kDecHeads][kDecChunk];
  __shared__ __align__(16) bf16 kv_s[kDecSub * SD];

  const int chunk = blockIdx.x, b = blockIdx.z;
  const int group = H / Hkv;
  const int head_groups = cdiv(group, kDecHeads);
  const int kvh = blockIdx.y / head_groups, hg = blockIdx.y % head_groups;
  const int h0 = kvh * group + hg * kDecHeads;
  const int nh = min(kDecHeads, group - hg * kDecHeads);
  const int p = pos[b];
  if (p < 0 || p >= S) return;
  const int c0 = chunk * kDecChunk;
  const int c1 = min(c0 + kDecChunk, p + 1);
  if (c0 >= c1) return;  // the whole block leaves together, before any barrier
  const int n_rows = c1 - c0;
  const int NC = gridDim.x;

  for (int i = threadIdx.x; i < nh * D; i += kDecThreads)
    q_s[i / D][i % D] = __bfloat162float(q[((size_t)b * H + h0 + i / D) * D + i % D]) * scale_log2;

  const size_t row_stride = (size_t)Hkv * D;
  const bf16* kb = k_cache + (size_t)b * S * row_stride + (size_t)kvh * D;
  const bf16* vb = v_cache + (size_t)b * S * row_stride + (size_t)kvh * D;
  constexpr int kChunks = D / 8;

  // Scores of this chunk's rows, scaled into the log2 domain.
  for (int s0 = 0; s0 < n_rows; s0 += kDecSub) {
    const int rows = min(kDecSub, n_rows - s0);
    __syncthreads();  // q_s written / kv_s free
    for (int i = threadIdx.x; i < rows * kChunks; i += kDecThreads) {
      const int r = i / kChunks, c = i % kChunks;
      *reinterpret_cast<uint4*>(kv_s + r * SD + c * 8) =
          *reinterpret_cast<const uint4*>(kb + (size_t)(c0 + s0 + r) * row_stride + c * 8);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nh * kDecSub; i += kDecThreads) {
      const int hh = i / kDecSub, r = i % kDecSub;
      if (r >= rows) continue;
      float acc = 0.0f;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const uint4 raw = *reinterpret_cast<const uint4*>(kv_s + r * SD + c * 8);
        const __nv_bfloat162* kv2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 kf = __bfloat1622float2(kv2[e]);
          acc += q_s[hh][c * 8 + 2 * e] * kf.x + q_s[hh][c * 8 + 2 * e + 1] * kf.y;
        }
      }
      p_s[hh][s0 + r] = acc;
    }
  }
  __syncthreads();

  // Max and sum of exp2 per head: one warp per head.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int hh = warp; hh < nh; hh += kDecThreads / 32) {
    float mx = -INFINITY;
    for (int r = lane; r < n_rows; r += 32) mx = fmaxf(mx, p_s[hh][r]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
    for (int r = lane; r < n_rows; r += 32) {
      const float e = exp2f(p_s[hh][r] - mx);
      p_s[hh][r] = e;
      sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) {
      const size_t cell = ((size_t)b * H + h0 + hh) * NC + chunk;
      ws.m[cell] = mx;
      ws.l[cell] = sum;
    }
  }

  // Unnormalised output: thread owns cells (head, column pair) tid, tid + 128, ...
  float2 acc[kAcc];
#pragma unroll
  for (int a = 0; a < kAcc; ++a) acc[a] = make_float2(0.0f, 0.0f);
  for (int s0 = 0; s0 < n_rows; s0 += kDecSub) {
    const int rows = min(kDecSub, n_rows - s0);
    __syncthreads();  // p_s final / kv_s free
    for (int i = threadIdx.x; i < rows * kChunks; i += kDecThreads) {
      const int r = i / kChunks, c = i % kChunks;
      *reinterpret_cast<uint4*>(kv_s + r * SD + c * 8) =
          *reinterpret_cast<const uint4*>(vb + (size_t)(c0 + s0 + r) * row_stride + c * 8);
    }
    __syncthreads();
#pragma unroll
    for (int a = 0; a < kAcc; ++a) {
      const int cell = threadIdx.x + a * kDecThreads;
      const int hh = cell / kPairs, cp = cell % kPairs;
      if (hh >= nh) continue;
      for (int r = 0; r < rows; ++r) {
        const float pr = p_s[hh][s0 + r];
        const float2 vf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kv_s + r * SD + 2 * cp));
        acc[a].x += pr * vf.x;
        acc[a].y += pr * vf.y;
      }
    }
  }
#pragma unroll
  for (int a = 0; a < kAcc; ++a) {
    const int cell = threadIdx.x + a * kDecThreads;
    const int hh = cell / kPairs, cp = cell % kPairs;
    if (hh >= nh) continue;
    const size_t at = (((size_t)b * H + h0 + hh) * NC + chunk) * D + 2 * cp;
    *reinterpret_cast<float2*>(ws.o + at) = acc[a];
  }
}

// out[b, h] = sum_c 2^(m_c - M) o_c / sum_c 2^(m_c - M) l_c over the chunks that hold rows.
__global__ void decode_reduce_kernel(bf16* __restrict__ out, DecodeWs ws, const int* __restrict__ pos, int S, int H,
                                     int D, int NC) {
  const int h = blockIdx.x, b = blockIdx.y;
  const int p = pos[b];
  const size_t cell0 = ((size_t)b * H + h) * NC;
  bf16* ob = out + ((size_t)b * H + h) * D;
  if (p < 0 || p >= S) {  // a position outside the cache: make it impossible to miss
    for (int d = threadIdx.x; d < D; d += blockDim.x) ob[d] = __float2bfloat16(NAN);
    return;
  }
  const int n = (p + 1 + kDecChunk - 1) / kDecChunk;
  float M = -INFINITY;
  for (int c = 0; c < n; ++c) M = fmaxf(M, ws.m[cell0 + c]);
  float L = 0.0f;
  for (int c = 0; c < n; ++c) L += exp2f(ws.m[cell0 + c] - M) * ws.l[cell0 + c];
  const float inv = 1.0f / L;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int c = 0; c < n; ++c) acc += exp2f(ws.m[cell0 + c] - M) * ws.o[(cell0 + c) * D + d];
    ob[d] = __float2bfloat16(acc * inv);
  }
}

template <int D>
void launch_decode(bf16* out, const bf16* q, const bf16* k_cache, const bf16* v_cache, const int* pos,
                   void* workspace, int B, int S, int H, int Hkv, cudaStream_t stream) {
  const int group = H / Hkv;
  const int NC = decode_chunks(S);
  const DecodeWs ws(workspace, B, S, H, D);
  const dim3 grid(NC, Hkv * cdiv(group, kDecHeads), B);
  const float scale_log2 = kLog2e / std::sqrt(float(D));
  decode_partial_kernel<D><<<grid, kDecThreads, 0, stream>>>(ws, q, k_cache, v_cache, pos, S, H, Hkv, scale_log2);
  CUDA_CHECK_LAUNCH();
  decode_reduce_kernel<<<dim3(H, B), 128, 0, stream>>>(out, ws, pos, S, H, D, NC);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int Tn, int H,
                       int Hkv, int D, cudaStream_t stream) {
  check_heads("cuda::attention_forward", B, H, Hkv, D);
  OPD_REQUIRE(Tn >= 0, "cuda::attention_forward: negative sequence length T=", Tn);
  if (B == 0 || Tn == 0) return;
  OPD_REQUIRE(aligned16(q) && aligned16(k) && aligned16(v) && aligned16(out),
              "cuda::attention_forward: q, k, v and out must be 16-byte aligned (cp.async and vector stores)");
  switch (D) {  // check_heads has refused every other D
    case 16: launch_forward<16>(out, lse, q, k, v, B, Tn, H, Hkv, stream); break;
    case 32: launch_forward<32>(out, lse, q, k, v, B, Tn, H, Hkv, stream); break;
    case 64: launch_forward<64>(out, lse, q, k, v, B, Tn, H, Hkv, stream); break;
    default: launch_forward<128>(out, lse, q, k, v, B, Tn, H, Hkv, stream); break;
  }
}

void kv_cache_write(bf16* k_cache, bf16* v_cache, const bf16* k, const bf16* v, int B, int Tn, int S, int Hkv, int D,
                    cudaStream_t stream) {
  OPD_REQUIRE(B >= 0 && Hkv > 0 && D > 0, "cuda::kv_cache_write: bad shape B=", B, " Hkv=", Hkv, " D=", D);
  OPD_REQUIRE(Tn >= 0 && Tn <= S, "cuda::kv_cache_write: ", Tn, " rows do not fit a cache of capacity ", S);
  if (B == 0 || Tn == 0) return;
  // Each sequence's rows are contiguous in both layouts: one strided 2-D copy per tensor.
  const size_t width = sizeof(bf16) * Tn * Hkv * D;
  const size_t dpitch = sizeof(bf16) * S * Hkv * D;
  CUDA_CHECK(cudaMemcpy2DAsync(k_cache, dpitch, k, width, width, B, cudaMemcpyDeviceToDevice, stream));
  CUDA_CHECK(cudaMemcpy2DAsync(v_cache, dpitch, v, width, width, B, cudaMemcpyDeviceToDevice, stream));
}

size_t attention_decode_workspace_bytes(int B, int S, int H, int D) {
  OPD_REQUIRE(B >= 0 && S > 0 && H > 0 && D > 0, "cuda::attention_decode_workspace_bytes: bad shape B=", B,
              " S=", S, " H=", H, " D=", D);
  return sizeof(float) * (size_t)B * H * decode_chunks(S) * (D + 2);
}

void attention_decode(bf16* out, const bf16* q, const bf16* k_new, const bf16* v_new, bf16* k_cache, bf16* v_cache,
                      const int* pos, void* workspace, int B, int S, int H, int Hkv, int D, cudaStream_t stream) {
  check_heads("cuda::attention_decode", B, H, Hkv, D);
  OPD_REQUIRE(S > 0, "cuda::attention_decode: cache capacity S=", S, " must be positive");
  if (B == 0) return;
  OPD_REQUIRE(aligned16(k_cache) && aligned16(v_cache) && aligned16(workspace),
              "cuda::attention_decode: k_cache, v_cache and workspace must be 16-byte aligned");
  // pos lives on the device, so a position outside [0, S) cannot be refused here without a sync:
  // the kernels skip such a sequence and write NaN as its output.
  const int row = Hkv * D;
  const int blocks = std::min(cdiv(B * row, 256), 4096);
  kv_store_kernel<<<blocks, 256, 0, stream>>>(k_cache, v_cache, k_new, v_new, pos, B, S, row);
  CUDA_CHECK_LAUNCH();
  switch (D) {  // check_heads has refused every other D
    case 16: launch_decode<16>(out, q, k_cache, v_cache, pos, workspace, B, S, H, Hkv, stream); break;
    case 32: launch_decode<32>(out, q, k_cache, v_cache, pos, workspace, B, S, H, Hkv, stream); break;
    case 64: launch_decode<64>(out, q, k_cache, v_cache, pos, workspace, B, S, H, Hkv, stream); break;
    default: launch_decode<128>(out, q, k_cache, v_cache, pos, workspace, B, S, H, Hkv, stream); break;
  }
}

}  // namespace opd::cuda
