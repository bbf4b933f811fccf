#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace opd::cpu {

// Below this many elements, waking the OpenMP threads costs more than the loop itself.
constexpr size_t kParallelMin = 1 << 14;

// The angles follow Hugging Face's float32 arithmetic step by step (inv_freq = 1 / theta^(2i/D),
// angle = pos * inv_freq, each rounded to T): at positions in the thousands a more exact angle
// would differ from theirs by ~1e-4 and the logits would no longer match transformers'. Only pow,
// cos and sin go through double, which rounds them correctly, as near to PyTorch's as possible.
template <typename T>
std::vector<T> rope_inv_freq(int D, float theta, const RopeScaling& s) {
  OPD_REQUIRE(D > 0 && D % 2 == 0, "rope: head dimension must be even and positive, got ", D);
  std::vector<T> f(D / 2);
  for (int i = 0; i < D / 2; ++i) {
    const T e = T(2 * i) / T(D);
    f[i] = T(1) / T(std::pow(double(T(theta)), double(e)));
  }
  if (!s.enabled()) return f;
  OPD_REQUIRE(s.factor >= 1 && s.low_freq_factor > 0 && s.low_freq_factor < s.high_freq_factor &&
                  s.original_max_position_embeddings > 0,
              "rope: llama3 scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and "
              "original_max_position_embeddings > 0, got factor ", s.factor, ", low_freq_factor ", s.low_freq_factor,
              ", high_freq_factor ", s.high_freq_factor, ", original_max_position_embeddings ",
              s.original_max_position_embeddings);
  // Python scalars meet float32 tensors: each is rounded to T first, and `scalar / tensor` is
  // PyTorch's reciprocal(tensor) * scalar, not a true division.
  const double old_len = s.original_max_position_embeddings;
  const T low_wavelen = T(old_len / s.low_freq_factor), high_wavelen = T(old_len / s.high_freq_factor);
  const T factor = T(s.factor), low = T(s.low_freq_factor), span = T(s.high_freq_factor - s.low_freq_factor);
  const T two_pi = T(2 * 3.14159265358979323846);
  for (T& inv : f) {
    const T wavelen = (T(1) / inv) * two_pi;
    const T scaled = wavelen > low_wavelen ? inv / factor : inv;
    if (wavelen < high_wavelen || wavelen > low_wavelen) {
      inv = scaled;
    } else {
      const T smooth = ((T(1) / wavelen) * T(old_len) - low) / span;
      inv = (T(1) - smooth) * scaled / factor + smooth * scaled;
    }
  }
  return f;
}

namespace {

// cos and sin of every angle at position p, in the HF order of rounding.
template <typename T>
void angles(T* cs, T* sn, int p, const std::vector<T>& freq, T sign) {
  for (size_t i = 0; i < freq.size(); ++i) {
    const T angle = T(p) * freq[i];
    cs[i] = T(std::cos(double(angle)));
    sn[i] = sign * T(std::sin(double(angle)));
  }
}

// sign = +1 rotates by +angle (forward), -1 by -angle (backward: the transpose of a rotation).
template <typename T>
void rotate(T* x, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling, T sign) {
  OPD_REQUIRE(D > 0 && D % 2 == 0, "rope: head dimension must be even and positive, got ", D);
  const int half = D / 2;
  const std::vector<T> freq = rope_inv_freq<T>(D, theta, scaling);
  int max_pos = 0;
  for (int n = 0; n < N; ++n) {
    OPD_REQUIRE(pos[n] >= 0, "rope: negative position ", pos[n], " at row ", n);
    max_pos = pos[n] > max_pos ? pos[n] : max_pos;
  }
  // A training batch repeats each position B times: one table of cos/sin per position saves
  // (B - 1) / B of the trigonometry. Decode steps (few rows, scattered positions) skip the table.
  const bool table = N > max_pos + 1;
  std::vector<T> cs_table, sn_table;
  if (table) {
    cs_table.resize(size_t(max_pos + 1) * half);
    sn_table.resize(size_t(max_pos + 1) * half);
    for (int p = 0; p <= max_pos; ++p) angles(&cs_table[size_t(p) * half], &sn_table[size_t(p) * half], p, freq, sign);
  }
#pragma omp parallel if ((size_t)N * H * D >= kParallelMin)
  {
    std::vector<T> cs_row(half), sn_row(half);
#pragma omp for
    for (int n = 0; n < N; ++n) {
      const T* cs = cs_row.data();
      const T* sn = sn_row.data();
      if (table) {
        cs = &cs_table[size_t(pos[n]) * half];
        sn = &sn_table[size_t(pos[n]) * half];
      } else {
        angles(cs_row.data(), sn_row.data(), pos[n], freq, sign);
      }
      for (int h = 0; h < H; ++h) {
        T* v = x + ((size_t)n * H + h) * D;
        for (int i = 0; i < half; ++i) {
          const T x1 = v[i], x2 = v[i + half];
          v[i] = x1 * cs[i] - x2 * sn[i];
          v[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(T* x, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling) {
  rotate(x, pos, N, H, D, theta, scaling, T(1));
}

template <typename T>
void rope_backward(T* dx, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling) {
  rotate(dx, pos, N, H, D, theta, scaling, T(-1));
}

template std::vector<float> rope_inv_freq<float>(int, float, const RopeScaling&);
template std::vector<double> rope_inv_freq<double>(int, float, const RopeScaling&);
template void rope_forward<float>(float*, const int*, int, int, int, float, const RopeScaling&);
template void rope_forward<double>(double*, const int*, int, int, int, float, const RopeScaling&);
template void rope_backward<float>(float*, const int*, int, int, int, float, const RopeScaling&);
template void rope_backward<double>(double*, const int*, int, int, int, float, const RopeScaling&);

}  // namespace opd::cpu
