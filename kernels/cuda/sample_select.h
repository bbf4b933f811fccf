// The decision logic of the GPU sampler (kernels/cuda/sample.cu), apart from the block reductions
// that feed it, so that the same code also runs on the host: tests/unit/test_sample_select.cpp
// holds it to cpu::sample_tokens with sequential sums. Plain C++ and CUDA (OPD_HD).
//
// cpu::sample_tokens sorts a row by (probability descending, id ascending) and walks prefixes. Here
// each element gets a 64-bit key that orders like that sort, and every cut point (the k-th token,
// the end of the nucleus, the drawn token) is the smallest key whose prefix count or mass passes a
// threshold, found by bisection on the key: no sort, only "count and mass of the keys <= K".
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/rng.h"

namespace opd::sample_select {

struct CountMass {
  unsigned count;
  double mass;
};

// cpu::sample_tokens' probability exp((x - mx) / temperature): float subtract and divide rounded
// as IEEE ops (spelled out on the device, where the build uses fast math), exp in double rounded
// once to float (correctly rounded; the CPU's expf is within 0.502 ulp of it).
OPD_HD float prob_of(float x, float mx, float temperature) {
#if defined(__CUDA_ARCH__)
  return static_cast<float>(exp(static_cast<double>(__fdiv_rn(__fsub_rn(x, mx), temperature))));
#else
  return static_cast<float>(std::exp(static_cast<double>((x - mx) / temperature)));
#endif
}

// Position in the CPU's sorted order: probability descending (a float >= 0 orders like its bits),
// then id ascending.
OPD_HD uint64_t order_key(float prob, int v) {
#if defined(__CUDA_ARCH__)
  const uint32_t bits = __float_as_uint(prob);
#else
  uint32_t bits;
  std::memcpy(&bits, &prob, sizeof bits);
#endif
  return (static_cast<uint64_t>(0xFFFFFFFFu - bits) << 32) | static_cast<uint32_t>(v);
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
// The smallest K in [lo, hi] with pass(upto(K)); pass(upto(hi)) must hold. Counts and masses only
// change at elements' keys, so the answer is an element's key.
template <typename Upto, typename Pass>
OPD_HD uint64_t bisect(const Upto& upto, uint64_t lo, uint64_t hi, const Pass& pass) {
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (pass(upto(mid)))
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
// The token for one row with temperature > 0. top: the row's argmax (lowest id on ties), whose
// probability is exactly 1; u: the row's uniform draw. by_id(K) gives the count and mass of the
// ids <= K, by_order(K) those of the order keys <= K (each the same value every time it is asked).
template <typename ById, typename ByOrder>
OPD_HD int select_token(int top, int V, double u, float top_p, int top_k, const ById& by_id,
                        const ByOrder& by_order) {
  const int k = top_k > 0 && top_k < V ? top_k : V;
  if (k == V && top_p >= 1.0f) {
    // The CPU's unsorted inverse CDF: the first id whose cumulative mass exceeds u * total.
    const double target = u * by_id(static_cast<uint64_t>(V - 1)).mass;
    return static_cast<int>(bisect(by_id, 0, static_cast<uint64_t>(V - 1),
                                   [&](const CountMass& c) { return c.mass > target; }));
  }
  const uint64_t first = order_key(1.0f, top), last = order_key(0.0f, V - 1);
  const uint64_t kth =
      k == V ? last : bisect(by_order, first, last, [&](const CountMass& c) { return c.count >= unsigned(k); });
  // The smallest prefix of the top k holding top_p of their mass (top_p <= 1, so kth qualifies),
  // then the inverse CDF over it.
  const double need = static_cast<double>(top_p) * by_order(kth).mass;
  const uint64_t end = bisect(by_order, first, kth, [&](const CountMass& c) { return c.mass >= need; });
  const double target = u * by_order(end).mass;
  const uint64_t pick = bisect(by_order, first, end, [&](const CountMass& c) { return c.mass > target; });
  return static_cast<int>(pick & 0xFFFFFFFFu);
}

}  // namespace opd::sample_select
