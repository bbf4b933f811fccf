// Philox draws on the GPU: the same header (src/core/rng.h) as the CPU, so the same numbers.
#pragma once
#include <cstdint>

namespace opd::cuda {

// out[i] = philox_draw(seed, stream, first + i / 4).v[i % 4] for i < n; out is a device pointer.
void philox_fill(uint32_t* out, uint64_t seed, uint32_t stream, uint64_t first, size_t n);

}  // namespace opd::cuda
