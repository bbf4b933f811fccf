// Causal grouped-query flash attention backward (FlashAttention-2 style, recomputing the
// probabilities from the forward's log-sum-exp). Three kernels, none with float atomics, so the
// gradients are bit-identical from run to run:
//   1. row_dot:  Di = dot(dout_i, out_i) per query row (into the workspace);
//   2. dkdv:     one block per (batch, kv head, key tile); loops over the query heads of its
//                group and the query tiles at or after the key tile, keeping dK and dV in fp32
//                registers and writing them once;
//   3. dq:       one block per (batch, query head, query tile); loops over the key tiles up to
//                the diagonal, recomputing P and dS, keeping dQ in fp32 registers.
// In both main kernels each warp owns 16 rows of the block's tile (the M side of
// mma.sync.m16n8k16 bf16 -> fp32); operand tiles sit in shared memory with rows padded by 16 bytes
// so that ldmatrix reads them without bank conflicts, and the streamed tiles are double-buffered
// with cp.async. The warp count and streamed tile sizes are per head dim (DkdvShape, DqShape).
// Grids are one-dimensional with the tile index slowest, heaviest tiles (most causal work) first,
// so that the light tiles fill the tail of the launch.
#include <cstdint>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/mma_sm80.cuh"

namespace opd::cuda {

namespace {

using namespace sm80;

constexpr float kLog2e = 1.4426950408889634f;

// ---- fragment loads from a row-major shared tile with row stride LD elements -----------------

// A operand (16 x 16) = tile rows m0..m0+15, columns k0..k0+15.
template <int LD>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* tile, int m0, int k0, int lane) {
  ldmatrix_x4(a, tile + (m0 + (lane % 16)) * LD + k0 + (lane / 16) * 8);
}

// B operands for two adjacent n-blocks where B = X^T, X stored [n][k]: b[0], b[1] for columns
// n0..n0+7, b[2], b[3] for n0+8..n0+15; k-block k0..k0+15.
template <int LD>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const bf16* x, int n0, int k0, int lane) {
  const int mat = lane / 8, r = lane % 8;
  ldmatrix_x4(b, x + (n0 + (mat / 2) * 8 + r) * LD + k0 + (mat % 2) * 8);
}

// The same fragments where B itself is stored [k][n] (transposed on the way in).
template <int LD>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16* y, int k0, int n0, int lane) {
  const int mat = lane / 8, r = lane % 8;
  ldmatrix_x4_trans(b, y + (k0 + (mat % 2) * 8 + r) * LD + n0 + (mat / 2) * 8);
}

// Rows [r0, r0 + R) of head `head` of a [B, T, Hn, D] tensor into a padded shared tile; rows at or
// past Tn are zero-filled, so that masked products stay finite (0, never 0 * garbage).
template <int NT, int R, int D, int LD>
__device__ __forceinline__ void load_rows_async(bf16* tile, const bf16* x, int b, int r0, int Tn, int Hn, int head) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < R * kChunks; c += NT) {
    const int row = c / kChunks, col = (c % kChunks) * 8;
    const int t = r0 + row;
    const bool in = t < Tn;
    const bf16* src = in ? x + ((size_t(b) * Tn + t) * Hn + head) * D + col : x;
    cp_async16(tile + row * LD + col, src, in ? 16 : 0);
  }
}

// ---- 1. Di = dot(dout, out) per row ---------------------------------------------------------

// One warp per (b, t, h) row; the xor butterfly fixes the order of the sum.
__global__ void row_dot_kernel(float* di, const bf16* dout, const bf16* out, int B, int Tn, int H, int D) {
  const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= (long long)B * Tn * H) return;
  const bf16* go = dout + row * D;
  const bf16* o = out + row * D;
  float acc = 0.f;
  for (int d = 2 * lane; d < D; d += 64) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(go + d));
    const float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(o + d));
    acc = fmaf(a.x, c.x, acc);
    acc = fmaf(a.y, c.y, acc);
  }
  for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
  if (lane == 0) {
    const int h = int(row % H);
    const long long bt = row / H;
    const int t = int(bt % Tn), b = int(bt / Tn);
    di[(size_t(b) * H + h) * Tn + t] = acc;
  }
}

// ---- 2. dK, dV ------------------------------------------------------------------------------

// WARPS warps of 16 keys each (a key tile of 16 * WARPS rows); BR query rows per streamed tile.
// BR is bounded by the registers: the 16 x D dK and dV accumulators plus the two 16 x BR score
// tiles (255 registers, no spills, at D = 128; 168 at D = 64). Measured on an H200: 4 warps beat 8
// (two or three blocks per SM instead of one), and BR = 64 beats 32 at D = 128. D = 16 and 32 take
// the same shape (not measured).
template <int D>
struct DkdvShape {
  static constexpr int kWarps = 4, kQueryRows = 64;
};

template <int D, int WARPS, int BR>
constexpr size_t dkdv_smem_bytes() {
  constexpr int LD = D + 8;
  return sizeof(bf16) * (2 * 16 * WARPS * LD + 2 * 2 * BR * LD) + sizeof(float) * 2 * 2 * BR;
}

template <int D, int WARPS, int BR>
__global__ void __launch_bounds__(32 * WARPS) dkdv_kernel(bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                                                          const bf16* k, const bf16* v, const float* lse,
                                                          const float* di, int B, int Tn, int H, int Hkv,
                                                          float scale) {
  constexpr int NT = 32 * WARPS;  // threads
  constexpr int KT = 16 * WARPS;  // keys of the block's tile
  constexpr int LD = D + 8;
  constexpr int NQ = BR / 8;   // n-tiles of the score tile (queries)
  constexpr int ND = D / 8;    // n-tiles of the accumulators (head dim)
  constexpr int KD = D / 16;   // k-blocks over the head dim
  static_assert(KT % BR == 0, "a query tile must start on a key-tile boundary");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* vs = ks + KT * LD;
  bf16* qs = vs + KT * LD;           // [2][BR][LD]
  bf16* dos = qs + 2 * BR * LD;      // [2][BR][LD]
  float* lses = reinterpret_cast<float*>(dos + 2 * BR * LD);  // [2][BR], times log2(e)
  float* dis = lses + 2 * BR;                                 // [2][BR]

  // Key tile slowest: tile 0 (the most query tiles to visit) is launched first.
  const int key_tile = int(blockIdx.x / unsigned(Hkv * B));
  const int kvh = int(blockIdx.x % unsigned(Hkv * B)) % Hkv, b = int(blockIdx.x % unsigned(Hkv * B)) / Hkv;
  const int k0 = key_tile * KT;
  const int group = H / Hkv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tq = lane % 4;
  const float scale_log2 = scale * kLog2e;

  // Work items: (query head of the group, query tile at or after this key tile), heads outer.
  const int first_qt = k0 / BR;
  const int n_qt = (Tn + BR - 1) / BR - first_qt;
  const int total = group * n_qt;

  auto load_item = [&](int it, int buf) {
    const int h = kvh * group + it / n_qt;
    const int q0 = (first_qt + it % n_qt) * BR;
    load_rows_async<NT, BR, D, LD>(qs + buf * BR * LD, q, b, q0, Tn, H, h);
    load_rows_async<NT, BR, D, LD>(dos + buf * BR * LD, dout, b, q0, Tn, H, h);
    for (int i = threadIdx.x; i < BR; i += NT) {
      const int t = q0 + i;
      const size_t idx = (size_t(b) * H + h) * Tn + t;
      lses[buf * BR + i] = t < Tn ? lse[idx] * kLog2e : 0.f;
      dis[buf * BR + i] = t < Tn ? di[idx] : 0.f;
    }
  };

  load_rows_async<NT, KT, D, LD>(ks, k, b, k0, Tn, Hkv, kvh);
  load_rows_async<NT, KT, D, LD>(vs, v, b, k0, Tn, Hkv, kvh);
  load_item(0, 0);
  cp_async_commit();

  float dk_acc[ND][4], dv_acc[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[j][e] = 0.f, dv_acc[j][e] = 0.f;

  const int m0 = warp * 16;            // this warp's key rows within the tile
  const int key_lo = k0 + m0 + g;      // key of accumulator rows g; rows g+8 are key_lo + 8

  for (int it = 0; it < total; ++it) {
    const int buf = it % 2;
    if (it + 1 < total) {
      load_item(it + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    const int q0 = (first_qt + it % n_qt) * BR;
    // Every query of the tile precedes every key of this warp: nothing to add.
    if (q0 + BR - 1 >= k0 + m0) {
      const bf16* qt = qs + buf * BR * LD;
      const bf16* dot = dos + buf * BR * LD;
      const float* ls = lses + buf * BR;
      const float* ds = dis + buf * BR;

      // S^T = K_w Q^T and dP^T = V_w dO^T: 16 keys x BR queries each.
      float s[NQ][4], dp[NQ][4];
#pragma unroll
      for (int j = 0; j < NQ; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = 0.f, dp[j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        uint32_t ka[4], va[4];
        load_a<LD>(ka, ks, m0, kk * 16, lane);
        load_a<LD>(va, vs, m0, kk * 16, lane);
#pragma unroll
        for (int nb = 0; nb < NQ / 2; ++nb) {
          uint32_t qb[4], ob[4];
          load_b_nk<LD>(qb, qt, nb * 16, kk * 16, lane);
          load_b_nk<LD>(ob, dot, nb * 16, kk * 16, lane);
          mma_bf16(s[2 * nb], ka, qb[0], qb[1]);
          mma_bf16(s[2 * nb + 1], ka, qb[2], qb[3]);
          mma_bf16(dp[2 * nb], va, ob[0], ob[1]);
          mma_bf16(dp[2 * nb + 1], va, ob[2], ob[3]);
        }
      }

      // P^T = exp(scale * S^T - lse), zero where the query precedes the key or is padding;
      // dS^T = P^T * (dP^T - Di). Both are packed to bf16 at once, as the A operands of the next
      // products (the accumulator fragment of n-tiles 2kk, 2kk+1 is the A fragment of k-block kk),
      // which halves the registers they hold.
      uint32_t pa[BR / 16][4], dsa[BR / 16][4];
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
        float p[4], d[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = j * 8 + 2 * tq + (e % 2);
          const int query = q0 + col;
          const int key = key_lo + (e / 2) * 8;
          const bool live = query < Tn && query >= key;
          p[e] = live ? exp2f(s[j][e] * scale_log2 - ls[col]) : 0.f;
          d[e] = p[e] * (dp[j][e] - ds[col]);
        }
        pa[j / 2][(j % 2) * 2] = pack_bf16(p[0], p[1]);
        pa[j / 2][(j % 2) * 2 + 1] = pack_bf16(p[2], p[3]);
        dsa[j / 2][(j % 2) * 2] = pack_bf16(d[0], d[1]);
        dsa[j / 2][(j % 2) * 2 + 1] = pack_bf16(d[2], d[3]);
      }

      // dV += P^T dO and dK += dS^T Q.
#pragma unroll
      for (int kk = 0; kk < BR / 16; ++kk) {
#pragma unroll
        for (int nb = 0; nb < ND / 2; ++nb) {
          uint32_t ob[4], qb[4];
          load_b_kn<LD>(ob, dot, kk * 16, nb * 16, lane);
          load_b_kn<LD>(qb, qt, kk * 16, nb * 16, lane);
          mma_bf16(dv_acc[2 * nb], pa[kk], ob[0], ob[1]);
          mma_bf16(dv_acc[2 * nb + 1], pa[kk], ob[2], ob[3]);
          mma_bf16(dk_acc[2 * nb], dsa[kk], qb[0], qb[1]);
          mma_bf16(dk_acc[2 * nb + 1], dsa[kk], qb[2], qb[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this buffer
  }

  // dK carries the softmax scale of S = scale * Q K^T.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int key = key_lo + half * 8;
    if (key >= Tn) continue;
    const size_t row = ((size_t(b) * Tn + key) * Hkv + kvh) * D;
#pragma unroll
    for (int j = 0; j < ND; ++j) {
      const int d = j * 8 + 2 * tq;
      *reinterpret_cast<__nv_bfloat162*>(dk + row + d) =
          __floats2bfloat162_rn(dk_acc[j][2 * half] * scale, dk_acc[j][2 * half + 1] * scale);
      *reinterpret_cast<__nv_bfloat162*>(dv + row + d) =
          __floats2bfloat162_rn(dv_acc[j][2 * half], dv_acc[j][2 * half + 1]);
    }
  }
}

// ---- 3. dQ ----------------------------------------------------------------------------------

// WARPS warps of 16 queries each; BC keys per streamed tile. At D = 128 the Q and dO fragments
// and the dQ accumulator already take 128 registers, which bounds BC (244 registers at 64).
// Measured on an H200: at D = 64, 4 warps (three blocks per SM) beat 8; at D = 128, 8 warps and
// 4 are even (one or two blocks per SM) and 8 halve the K/V tile loads per query.
template <int D>
struct DqShape;
template <>
struct DqShape<64> {
  static constexpr int kWarps = 4, kKeyRows = 64;
};
template <>
struct DqShape<128> {
  static constexpr int kWarps = 8, kKeyRows = 64;
};
// The small heads of the miniature models: registers bound nothing here, so they take the D = 64
// shape (not measured).
template <>
struct DqShape<32> {
  static constexpr int kWarps = 4, kKeyRows = 64;
};
template <>
struct DqShape<16> {
  static constexpr int kWarps = 4, kKeyRows = 64;
};

template <int D, int WARPS, int BC>
constexpr size_t dq_smem_bytes() {
  constexpr int LD = D + 8;
  return sizeof(bf16) * (2 * 16 * WARPS * LD + 2 * 2 * BC * LD);
}

template <int D, int WARPS, int BC>
__global__ void __launch_bounds__(32 * WARPS) dq_kernel(bf16* dq, const bf16* dout, const bf16* q, const bf16* k,
                                                        const bf16* v, const float* lse, const float* di, int B,
                                                        int Tn, int H, int Hkv, float scale) {
  constexpr int NT = 32 * WARPS;  // threads
  constexpr int QT = 16 * WARPS;  // queries of the block's tile
  constexpr int LD = D + 8;
  constexpr int NK = BC / 8;  // n-tiles of the score tile (keys)
  constexpr int ND = D / 8;
  constexpr int KD = D / 16;  // k-blocks over the head dim

  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* dos = qs + QT * LD;
  bf16* ks = dos + QT * LD;     // [2][BC][LD]
  bf16* vs = ks + 2 * BC * LD;  // [2][BC][LD]

  // Query tile slowest, the last ones (the most keys to visit) first.
  const int n_q_tiles = (Tn + QT - 1) / QT;
  const int q_tile = n_q_tiles - 1 - int(blockIdx.x / unsigned(H * B));
  const int h = int(blockIdx.x % unsigned(H * B)) % H, b = int(blockIdx.x % unsigned(H * B)) / H;
  const int q0 = q_tile * QT;
  const int kvh = h / (H / Hkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tq = lane % 4;
  const float scale_log2 = scale * kLog2e;
  const int m0 = warp * 16;
  const int query_lo = q0 + m0 + g;  // query of rows g; rows g+8 are query_lo + 8

  const int last_row = min(q0 + QT, Tn);  // one past the last query (and key) this block needs
  const int n_kt = (last_row + BC - 1) / BC;

  load_rows_async<NT, QT, D, LD>(qs, q, b, q0, Tn, H, h);
  load_rows_async<NT, QT, D, LD>(dos, dout, b, q0, Tn, H, h);
  load_rows_async<NT, BC, D, LD>(ks, k, b, 0, Tn, Hkv, kvh);
  load_rows_async<NT, BC, D, LD>(vs, v, b, 0, Tn, Hkv, kvh);
  cp_async_commit();

  float row_lse[2], row_di[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int t = query_lo + half * 8;
    const size_t idx = (size_t(b) * H + h) * Tn + t;
    row_lse[half] = t < Tn ? lse[idx] * kLog2e : 0.f;
    row_di[half] = t < Tn ? di[idx] : 0.f;
  }

  float dq_acc[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq_acc[j][e] = 0.f;
  uint32_t qa[KD][4], oa[KD][4];

  for (int it = 0; it < n_kt; ++it) {
    const int buf = it % 2;
    if (it + 1 < n_kt) {
      load_rows_async<NT, BC, D, LD>(ks + (buf ^ 1) * BC * LD, k, b, (it + 1) * BC, Tn, Hkv, kvh);
      load_rows_async<NT, BC, D, LD>(vs + (buf ^ 1) * BC * LD, v, b, (it + 1) * BC, Tn, Hkv, kvh);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        load_a<LD>(qa[kk], qs, m0, kk * 16, lane);
        load_a<LD>(oa[kk], dos, m0, kk * 16, lane);
      }
    }

    const int kb = it * BC;
    // Every key of the tile follows every query of this warp: nothing to add.
    if (kb <= q0 + m0 + 15) {
      const bf16* kt = ks + buf * BC * LD;
      const bf16* vt = vs + buf * BC * LD;

      // S = Q_w K^T and dP = dO_w V^T: 16 queries x BC keys each.
      float s[NK][4], dp[NK][4];
#pragma unroll
      for (int j = 0; j < NK; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = 0.f, dp[j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
#pragma unroll
        for (int nb = 0; nb < NK / 2; ++nb) {
          uint32_t kb4[4], vb4[4];
          load_b_nk<LD>(kb4, kt, nb * 16, kk * 16, lane);
          load_b_nk<LD>(vb4, vt, nb * 16, kk * 16, lane);
          mma_bf16(s[2 * nb], qa[kk], kb4[0], kb4[1]);
          mma_bf16(s[2 * nb + 1], qa[kk], kb4[2], kb4[3]);
          mma_bf16(dp[2 * nb], oa[kk], vb4[0], vb4[1]);
          mma_bf16(dp[2 * nb + 1], oa[kk], vb4[2], vb4[3]);
        }
      }

      // dS = P * (dP - Di), P = exp(scale * S - lse) on keys at or before the query, else 0.
#pragma unroll
      for (int j = 0; j < NK; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = kb + j * 8 + 2 * tq + (e % 2);
          const int half = e / 2;
          const int query = query_lo + half * 8;
          const bool live = query < Tn && key <= query;
          const float p = live ? exp2f(s[j][e] * scale_log2 - row_lse[half]) : 0.f;
          dp[j][e] = p * (dp[j][e] - row_di[half]);
        }
      }

      // dQ += dS K.
#pragma unroll
      for (int kk = 0; kk < BC / 16; ++kk) {
        uint32_t dsa[4];
        dsa[0] = pack_bf16(dp[2 * kk][0], dp[2 * kk][1]);
        dsa[1] = pack_bf16(dp[2 * kk][2], dp[2 * kk][3]);
        dsa[2] = pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
        dsa[3] = pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
#pragma unroll
        for (int nb = 0; nb < ND / 2; ++nb) {
          uint32_t kb4[4];
          load_b_kn<LD>(kb4, kt, kk * 16, nb * 16, lane);
          mma_bf16(dq_acc[2 * nb], dsa, kb4[0], kb4[1]);
          mma_bf16(dq_acc[2 * nb + 1], dsa, kb4[2], kb4[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this buffer
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int t = query_lo + half * 8;
    if (t >= Tn) continue;
    const size_t row = ((size_t(b) * Tn + t) * H + h) * D;
#pragma unroll
    for (int j = 0; j < ND; ++j) {
      const int d = j * 8 + 2 * tq;
      *reinterpret_cast<__nv_bfloat162*>(dq + row + d) =
          __floats2bfloat162_rn(dq_acc[j][2 * half] * scale, dq_acc[j][2 * half + 1] * scale);
    }
  }
}

size_t di_bytes(int B, int Tn, int H) { return sizeof(float) * size_t(B) * H * Tn; }

template <int D>
void launch_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                     const bf16* out, const float* lse, float* di, int B, int Tn, int H, int Hkv,
                     cudaStream_t stream) {
  const float scale = 1.0f / sqrtf(float(D));
  const long long rows = (long long)B * Tn * H;
  constexpr int kRowsPerBlock = 8;  // warps of the row_dot block
  row_dot_kernel<<<unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), 32 * kRowsPerBlock, 0, stream>>>(
      di, dout, out, B, Tn, H, D);
  CUDA_CHECK_LAUNCH();

  using KV = DkdvShape<D>;
  constexpr int kKeyTile = 16 * KV::kWarps;
  const unsigned kv_blocks = unsigned((Tn + kKeyTile - 1) / kKeyTile) * unsigned(Hkv) * unsigned(B);
  auto* kvk = dkdv_kernel<D, KV::kWarps, KV::kQueryRows>;
  constexpr size_t kv_smem = dkdv_smem_bytes<D, KV::kWarps, KV::kQueryRows>();
  CUDA_CHECK(cudaFuncSetAttribute(kvk, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kv_smem)));
  kvk<<<kv_blocks, 32 * KV::kWarps, kv_smem, stream>>>(dk, dv, dout, q, k, v, lse, di, B, Tn, H, Hkv, scale);
  CUDA_CHECK_LAUNCH();

  using QS = DqShape<D>;
  constexpr int kQueryTile = 16 * QS::kWarps;
  const unsigned q_blocks = unsigned((Tn + kQueryTile - 1) / kQueryTile) * unsigned(H) * unsigned(B);
  auto* qk = dq_kernel<D, QS::kWarps, QS::kKeyRows>;
  constexpr size_t q_smem = dq_smem_bytes<D, QS::kWarps, QS::kKeyRows>();
  CUDA_CHECK(cudaFuncSetAttribute(qk, cudaFuncAttributeMaxDynamicSharedMemorySize, int(q_smem)));
  qk<<<q_blocks, 32 * QS::kWarps, q_smem, stream>>>(dq, dout, q, k, v, lse, di, B, Tn, H, Hkv, scale);
  CUDA_CHECK_LAUNCH();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

size_t attention_backward_workspace_bytes(int B, int Tn, int H, int /*Hkv*/, int /*D*/) {
  OPD_REQUIRE(B >= 0 && Tn >= 0 && H > 0, "attention_backward_workspace_bytes: bad shape B=", B, " T=", Tn, " H=", H);
  return di_bytes(B, Tn, H);
}

void attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                        const bf16* out, const float* lse, void* workspace, int B, int Tn, int H, int Hkv, int D,
                        cudaStream_t stream) {
  OPD_REQUIRE(B >= 0 && Tn >= 0, "attention_backward: batch and sequence length must be non-negative, got B=", B,
              " T=", Tn);
  OPD_REQUIRE(H > 0 && Hkv > 0 && H % Hkv == 0, "attention_backward: n_heads (", H,
              ") must be a positive multiple of n_kv_heads (", Hkv, ")");
  OPD_REQUIRE(D == 16 || D == 32 || D == 64 || D == 128, "attention_backward: head_dim ", D,
              " is not supported (16, 32, 64 or 128)");
  OPD_REQUIRE((long long)B * H * ((Tn + 63) / 64) <= 2147483647LL, "attention_backward: B=", B, " H=", H, " T=", Tn,
              " need more blocks than a one-dimensional grid holds (2^31 - 1)");
  if (B == 0 || Tn == 0) return;
  OPD_REQUIRE(workspace != nullptr, "attention_backward: workspace is null (need ",
              attention_backward_workspace_bytes(B, Tn, H, Hkv, D), " bytes)");
  for (const void* p : {static_cast<const void*>(dq), static_cast<const void*>(dk), static_cast<const void*>(dv),
                        static_cast<const void*>(dout), static_cast<const void*>(q), static_cast<const void*>(k),
                        static_cast<const void*>(v), static_cast<const void*>(out)})
    OPD_REQUIRE(aligned16(p), "attention_backward: every bf16 tensor must be 16-byte aligned (rows are read as "
                              "16-byte vectors)");
  OPD_REQUIRE(aligned16(workspace), "attention_backward: workspace must be 16-byte aligned");
  float* di = static_cast<float*>(workspace);
  switch (D) {  // every other D was refused above
    case 16: launch_backward<16>(dq, dk, dv, dout, q, k, v, out, lse, di, B, Tn, H, Hkv, stream); break;
    case 32: launch_backward<32>(dq, dk, dv, dout, q, k, v, out, lse, di, B, Tn, H, Hkv, stream); break;
    case 64: launch_backward<64>(dq, dk, dv, dout, q, k, v, out, lse, di, B, Tn, H, Hkv, stream); break;
    default: launch_backward<128>(dq, dk, dv, dout, q, k, v, out, lse, di, B, Tn, H, Hkv, stream); break;
  }
}

}  // namespace opd::cuda
