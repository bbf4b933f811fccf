// Next-token sampling on the GPU: temperature, top-k and top-p with the Philox draw of
// src/core/rng.h, the same contract and the same token as cpu::sample_tokens (kernels/cpu/sample.h)
// for the same logits, seq, pos and SampleParams. logits: [N, V] fp32; all pointers are device
// pointers; work is queued on `stream`. Includable from plain C++.
//
// How the token is kept equal to the CPU's: greedy is an exact argmax (lowest id on ties). Each
// probability is exp((x - max) / temperature) with the subtraction and division rounded as IEEE
// float ops (not the fast-math ones) and the exp taken in double and rounded to float, the
// correctly rounded value; the CPU's expf is within 0.502 ulp of it, so an element's probability
// can differ in its last bit (rarely: only near a rounding tie). Sorting is by (probability descending, id
// ascending), the CPU's order, realised without a sort: the cut points (k-th element, nucleus end,
// drawn element) are found by bisection on that 64-bit order key (kernels/cuda/sample_select.h,
// host-tested in tests/unit/test_sample_select.cpp), each step a fixed-order block sum of counts
// and double masses. The CPU sums the same terms sequentially in double. So a token
// can differ only (a) when the draw or the top-p cut falls within V * 1e-16 of a boundary between
// two tokens' mass intervals (summation order), or (b) where an expf last-bit difference swaps two
// near-equal probabilities in the sorted order, or moves a boundary by one float ulp of one token,
// and the draw lands right there. Estimated at one row in 10^6 or rarer for a 150k vocabulary with
// a wide nucleus; tests/gpu/test_sample_gpu.cpp asserts equality on about 10^4 rows. Probabilities
// below 2^-126 of the top one are flushed to 0 here (fast-math build); they cannot move a double sum
// that already holds the top token's 1.0.
// NaN or +inf logits are not supported.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cpu/sample.h"

namespace opd::cuda {

// tokens[n] receives the id sampled from row n, keyed by (p.seed, p.step, seq[n], pos[n]).
void sample_tokens(int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N, int V,
                   const cpu::SampleParams& p, cudaStream_t stream = 0);

}  // namespace opd::cuda
