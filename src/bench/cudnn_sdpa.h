// cuDNN's fused scaled-dot-product attention (cudnn_frontend graph API): the reference the
// attention forward kernel is timed against. Optional: built only when CMake finds both the
// cudnn_frontend headers and libcudnn (OPD_WITH_CUDNN_SDPA).
#pragma once
#include <functional>
#include <string>

namespace opd::bench {

// Empty when the reference is built; otherwise why not, e.g. "not built (cudnn_frontend.h not found ...)".
std::string cudnn_sdpa_missing();

// Builds cuDNN's causal SDPA forward (bf16 in/out, fp32 softmax, scale 1/sqrt(D), grouped-query
// heads, the per-row softmax statistics written as our kernel writes lse) for device tensors in
// our layouts: q, out [B, T, H, D]; k, v [B, T, Hkv, D]. Returns a call that enqueues one forward
// on the default stream; the returned call owns the cuDNN handle, plan and workspace. Throws
// opd::Error naming the cuDNN step that failed when cuDNN cannot build or run this graph (or the
// reference is not built).
std::function<void()> cudnn_sdpa_forward(void* out, const void* q, const void* k, const void* v, int B, int T, int H,
                                         int Hkv, int D);

}  // namespace opd::bench
