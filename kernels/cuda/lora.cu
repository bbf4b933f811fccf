// The LoRA op: four thin GEMMs through cuBLASLt, no kernel of its own (like matmul.cu: the work is
// GEMMs, and cuBLASLt's scaling alpha carries the adapter's alpha / R). Checked against
// kernels/cpu/lora.cpp by tests/gpu/test_lora_gpu.cpp.
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/lora.cuh"

#include "core/error.h"

namespace opd::cuda {

namespace {
void check_shape(const char* op, int N, int K, int R, int M) {
  OPD_REQUIRE(N >= 0 && K >= 0 && R >= 1 && M >= 0, "cuda::", op, ": shape N=", N, " K=", K, " R=", R, " M=", M,
              " (the rank R must be at least 1)");
}
}  // namespace

void lora_forward(Matmul& mm, bf16* out, bf16* u, const bf16* inp, const bf16* A, const bf16* B, int N, int K, int R,
                  int M, float scale, cudaStream_t stream) {
  check_shape("lora_forward", N, K, R, M);
  if (N == 0 || M == 0 || K == 0) return;
  mm.forward(u, inp, A, N, K, R, /*accumulate=*/false, stream);
  mm.forward(out, u, B, N, R, M, /*accumulate=*/true, stream, scale);
}

// Matmul::backward(dinp, dweight, dout, inp, weight) is dinp += a dout weight, dweight += a dout^T inp:
//   with (dout, inp, weight) = (dout, u, B): du = scale dout B and dB += scale dout^T u;
//   with (du, inp, A):                       dinp += du A      and dA += du^T inp.
void lora_backward(Matmul& mm, bf16* dinp, float* dA, float* dB, bf16* u, bf16* du, const bf16* dout,
                   const bf16* inp, const bf16* A, const bf16* B, int N, int K, int R, int M, float scale,
                   cudaStream_t stream) {
  check_shape("lora_backward", N, K, R, M);
  if (N == 0 || M == 0 || K == 0) return;
  mm.forward(u, inp, A, N, K, R, /*accumulate=*/false, stream);
  CUDA_CHECK(cudaMemsetAsync(du, 0, sizeof(bf16) * size_t(N) * R, stream));
  mm.backward(du, dB, dout, u, B, N, R, M, stream, scale);
  mm.backward(dinp, dA, du, inp, A, N, K, R, stream);
}

}  // namespace opd::cuda
