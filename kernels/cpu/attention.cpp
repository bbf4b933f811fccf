// Causal grouped-query attention on the CPU: training forward/backward and the KV-cache decode.
#include "kernels/cpu/attention.h"

#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/fast_exp.h"

namespace opd::cpu {
namespace {

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr double kParallelWork = 1 << 16;

// Multiply-adds of one causal pass over all rows: every query row t sees t + 1 keys.
double causal_work(int B, int Tn, int H, int D) { return double(B) * H * D * Tn * (Tn + 1) / 2; }

void check_shape(int B, int Tn, int H, int Hkv, int D, const char* op) {
  OPD_REQUIRE(B >= 0 && Tn >= 0, op, ": batch and sequence length must be non-negative, got B=", B, " T=", Tn);
  OPD_REQUIRE(H > 0 && Hkv > 0 && D > 0, op, ": heads and head_dim must be positive, got H=", H, " Hkv=", Hkv,
              " D=", D);
  OPD_REQUIRE(H % Hkv == 0, op, ": n_heads (", H, ") must be a multiple of n_kv_heads (", Hkv, ")");
}

template <typename T>
inline T dot(const T* a, const T* b, int D) {
  T acc = 0;
  // The simd reduction's order is fixed at compile time, so results stay bit-reproducible.
#pragma omp simd reduction(+ : acc)
  for (int d = 0; d < D; ++d) acc += a[d] * b[d];
  return acc;
}

// s[j] = scale * (x . y_j) for rows y_j that are `stride` elements apart, j in [0, n). Rows go four
// at a time: four independent accumulator chains hide the FMA latency a single dot product is
// bound by. The grouping depends only on j, so a row's scores never depend on how long it is.
template <typename T>
void scaled_dots(T* s, const T* x, const T* y, size_t stride, int n, int D, T scale) {
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const T *y0 = y + j * stride, *y1 = y0 + stride, *y2 = y1 + stride, *y3 = y2 + stride;
    T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int d = 0; d < D; ++d) {
      a0 += x[d] * y0[d];
      a1 += x[d] * y1[d];
      a2 += x[d] * y2[d];
      a3 += x[d] * y3[d];
    }
    s[j] = a0 * scale, s[j + 1] = a1 * scale, s[j + 2] = a2 * scale, s[j + 3] = a3 * scale;
  }
  for (; j < n; ++j) s[j] = dot(x, y + j * stride, D) * scale;
}

// One query row against keys/values 0..n-1 (rows `stride` elements apart); returns the row's
// log-sum-exp. Forward and decode both go through here so that a decode step repeats the training
// forward's arithmetic exactly. p is scratch of length n.
template <typename T>
T attend_row(T* out, const T* q, const T* k, const T* v, size_t stride, int n, int D, T scale, T* p) {
  scaled_dots(p, q, k, stride, n, D, scale);
  T m = -std::numeric_limits<T>::infinity();
  for (int j = 0; j < n; ++j) m = p[j] > m ? p[j] : m;
  // Exponentials in their own loop so it vectorizes; the sum stays in order (deterministic).
  for (int j = 0; j < n; ++j) p[j] = exp_fast(p[j] - m);
  T sum = 0;
  for (int j = 0; j < n; ++j) sum += p[j];
  for (int d = 0; d < D; ++d) out[d] = 0;
  // Four value rows per pass: out is loaded and stored once per four rows instead of every row.
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const T *v0 = v + j * stride, *v1 = v0 + stride, *v2 = v1 + stride, *v3 = v2 + stride;
    const T p0 = p[j], p1 = p[j + 1], p2 = p[j + 2], p3 = p[j + 3];
#pragma omp simd
    for (int d = 0; d < D; ++d) out[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d];
  }
  for (; j < n; ++j) {
    const T pj = p[j];
    const T* vj = v + j * stride;
#pragma omp simd
    for (int d = 0; d < D; ++d) out[d] += pj * vj[d];
  }
  const T inv = T(1) / sum;
  for (int d = 0; d < D; ++d) out[d] *= inv;
  return m + std::log(sum);
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, int B, int Tn, int H, int Hkv, int D) {
  check_shape(B, Tn, H, Hkv, D, "attention_forward");
  const int group = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  const size_t qstride = size_t(H) * D, kstride = size_t(Hkv) * D;
#pragma omp parallel if (causal_work(B, Tn, H, D) > kParallelWork)
  {
    std::vector<T> p(Tn);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < H; ++h) {
        const size_t kv0 = size_t(b) * Tn * kstride + size_t(h / group) * D;
        for (int t = 0; t < Tn; ++t) {
          const size_t row = (size_t(b) * Tn + t) * qstride + size_t(h) * D;
          lse[(size_t(b) * H + h) * Tn + t] =
              attend_row(out + row, q + row, k + kv0, v + kv0, kstride, t + 1, D, scale, p.data());
        }
      }
    }
  }
}

// Each (b, kv head) is one task owning its dk/dv slices and the dq rows of its query heads, so
// every sum is accumulated by one thread in a fixed order: bit-identical for any thread count.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, int B, int Tn, int H, int Hkv, int D) {
  check_shape(B, Tn, H, Hkv, D, "attention_backward");
  const int group = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  const size_t qstride = size_t(H) * D, kstride = size_t(Hkv) * D;
#pragma omp parallel if (causal_work(B, Tn, H, D) > kParallelWork)
  {
    std::vector<T> p(Tn), ds(Tn);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b) {
      for (int g = 0; g < Hkv; ++g) {
        const size_t kv0 = size_t(b) * Tn * kstride + size_t(g) * D;
        for (int j = 0; j < Tn; ++j) {
          for (int d = 0; d < D; ++d) dk[kv0 + j * kstride + d] = 0;
          for (int d = 0; d < D; ++d) dv[kv0 + j * kstride + d] = 0;
        }
        for (int h = g * group; h < (g + 1) * group; ++h) {
          for (int t = 0; t < Tn; ++t) {
            const size_t row = (size_t(b) * Tn + t) * qstride + size_t(h) * D;
            const T* qt = q + row;
            const T* go = dout + row;
            T* dqt = dq + row;
            const T l = lse[(size_t(b) * H + h) * Tn + t];
            const T Dt = dot(go, out + row, D);
            scaled_dots(p.data(), qt, k + kv0, kstride, t + 1, D, scale);
            scaled_dots(ds.data(), go, v + kv0, kstride, t + 1, D, T(1));
            for (int j = 0; j <= t; ++j) {
              p[j] = exp_fast(p[j] - l);
              ds[j] = p[j] * (ds[j] - Dt);
            }
            for (int d = 0; d < D; ++d) dqt[d] = 0;
            for (int j = 0; j <= t; ++j) {
              const size_t kj = kv0 + j * kstride;
              const T pj = p[j], dsj = ds[j], sds = scale * dsj;
              const T* kr = k + kj;
              T* dkj = dk + kj;
              T* dvj = dv + kj;
#pragma omp simd
              for (int d = 0; d < D; ++d) {
                dqt[d] += dsj * kr[d];
                dkj[d] += sds * qt[d];
                dvj[d] += pj * go[d];
              }
            }
            for (int d = 0; d < D; ++d) dqt[d] *= scale;
          }
        }
      }
    }
  }
}

template <typename T>
void kv_cache_write(T* k_cache, T* v_cache, const T* k, const T* v, int B, int Tn, int S, int Hkv, int D) {
  OPD_REQUIRE(B >= 0 && Hkv > 0 && D > 0, "kv_cache_write: bad shape B=", B, " Hkv=", Hkv, " D=", D);
  OPD_REQUIRE(Tn >= 0 && Tn <= S, "kv_cache_write: ", Tn, " rows do not fit a cache of capacity ", S);
  const size_t row = size_t(Hkv) * D, n = size_t(Tn) * row;
#pragma omp parallel for schedule(static) if (double(B) * n > kParallelWork)
  for (int b = 0; b < B; ++b) {
    const size_t src = size_t(b) * n, dst = size_t(b) * S * row;
    for (size_t i = 0; i < n; ++i) k_cache[dst + i] = k[src + i];
    for (size_t i = 0; i < n; ++i) v_cache[dst + i] = v[src + i];
  }
}

template <typename T>
void attention_decode(T* out, const T* q, const T* k_new, const T* v_new, T* k_cache, T* v_cache, const int* pos,
                      int B, int S, int H, int Hkv, int D) {
  check_shape(B, S, H, Hkv, D, "attention_decode");
  int max_pos = 0;
  for (int b = 0; b < B; ++b) {
    OPD_REQUIRE(pos[b] >= 0 && pos[b] < S, "attention_decode: position ", pos[b], " of sequence ", b,
                " is outside the cache of capacity ", S);
    if (pos[b] > max_pos) max_pos = pos[b];
  }
  const int group = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  const size_t kstride = size_t(Hkv) * D;
  for (int b = 0; b < B; ++b) {
    const size_t dst = (size_t(b) * S + pos[b]) * kstride;
    for (size_t i = 0; i < kstride; ++i) k_cache[dst + i] = k_new[size_t(b) * kstride + i];
    for (size_t i = 0; i < kstride; ++i) v_cache[dst + i] = v_new[size_t(b) * kstride + i];
  }
#pragma omp parallel if (double(B) * H * D * (max_pos + 1) > kParallelWork)
  {
    std::vector<T> p(size_t(max_pos) + 1);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < H; ++h) {
        const size_t kv0 = size_t(b) * S * kstride + size_t(h / group) * D;
        const size_t row = (size_t(b) * H + h) * D;
        attend_row(out + row, q + row, k_cache + kv0, v_cache + kv0, kstride, pos[b] + 1, D, scale, p.data());
      }
    }
  }
}

#define OPD_INSTANTIATE(T)                                                                                    \
  template void attention_forward<T>(T*, T*, const T*, const T*, const T*, int, int, int, int, int);         \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const T*, \
                                      int, int, int, int, int);                                               \
  template void kv_cache_write<T>(T*, T*, const T*, const T*, int, int, int, int, int);                       \
  template void attention_decode<T>(T*, const T*, const T*, const T*, T*, T*, const int*, int, int, int, int, int);
OPD_INSTANTIATE(float)
OPD_INSTANTIATE(double)
#undef OPD_INSTANTIATE

}  // namespace opd::cpu
