// Causal grouped-query flash attention on the GPU: bf16 inputs and outputs, fp32 accumulation,
// same layouts and contract as kernels/cpu/attention.h. Head dims 16, 32, 64 and 128 (the forward,
// backward and decode refuse others; kv_cache_write takes any). All pointers are device pointers;
// work is queued on `stream`. Includable from plain C++.
#pragma once
#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

using bf16 = __nv_bfloat16;

// q, out: [B, T, H, D]; k, v: [B, T, Hkv, D]; lse: [B, H, T] (natural log, fp32), kept for backward.
void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int Tn, int H,
                       int Hkv, int D, cudaStream_t stream = 0);

// Bytes of scratch attention_backward needs for this shape (the per-row dot(dout, out), and any
// fp32 accumulators).
size_t attention_backward_workspace_bytes(int B, int Tn, int H, int Hkv, int D);

// dq, dk, dv are overwritten. Recomputes the probabilities from lse; deterministic: the same
// inputs give bit-identical gradients (no float atomics).
void attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                        const bf16* out, const float* lse, void* workspace, int B, int Tn, int H, int Hkv, int D,
                        cudaStream_t stream = 0);

// Prefill: writes rows [0, Tn) of each sequence's cache from k, v: [B, Tn, Hkv, D]; caches [B, S, Hkv, D].
void kv_cache_write(bf16* k_cache, bf16* v_cache, const bf16* k, const bf16* v, int B, int Tn, int S, int Hkv, int D,
                    cudaStream_t stream = 0);

// Bytes of scratch attention_decode needs (partial outputs and softmax statistics of the splits).
size_t attention_decode_workspace_bytes(int B, int S, int H, int D);

// One decode step: stores k_new[b], v_new[b] ([B, Hkv, D]) at cache row pos[b] (pos: device
// int[B]), then attends q[b] ([B, H, D]) over rows [0, pos[b]]. Long caches are split across
// blocks and the partial softmaxes reduced. out: [B, H, D].
void attention_decode(bf16* out, const bf16* q, const bf16* k_new, const bf16* v_new, bf16* k_cache, bf16* v_cache,
                      const int* pos, void* workspace, int B, int S, int H, int Hkv, int D, cudaStream_t stream = 0);

}  // namespace opd::cuda
