// The precision boundary on the GPU: fp32 <-> bf16 arrays, bit for bit the conversions of
// kernels/cpu/convert.h (round to nearest even, denormals kept, NaN kept and made quiet). All
// pointers are device pointers, of any alignment; work is queued on `stream`. Includable from
// plain C++.
#pragma once
#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

// out[i] = in[i] rounded to bf16. out may not overlap in.
void convert(__nv_bfloat16* out, const float* in, size_t n, cudaStream_t stream = 0);

// out[i] = in[i] widened to float (exact). out may not overlap in.
void convert(float* out, const __nv_bfloat16* in, size_t n, cudaStream_t stream = 0);

}  // namespace opd::cuda
