// Counter-based RNG: Philox4x32-10 (Salmon et al., SC'11). Header-only and usable from CUDA, so
// a draw keyed by (seed, stream, counter) is the same number on the CPU and on a GPU.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define OPD_HD __host__ __device__ __forceinline__
#else
#define OPD_HD inline
#endif

namespace opd {

struct Philox4 {
  uint32_t v[4];
};

OPD_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// counter: 4 words, key: 2 words.
OPD_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, ctr.v[0], hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, ctr.v[2], hi1, lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

// Four 32-bit draws for (seed, stream, counter). The seed is the key; stream and the 64-bit
// counter fill the counter words, so distinct (stream, counter) pairs never share a draw.
OPD_HD Philox4 philox_draw(uint64_t seed, uint32_t stream, uint64_t counter) {
  Philox4 c{{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), stream, 0u}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform float in [0, 1) from the top 24 bits: exactly representable, never 1.
OPD_HD float uniform01(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

}  // namespace opd
