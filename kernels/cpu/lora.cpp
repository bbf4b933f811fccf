#include "kernels/cpu/lora.h"

#include <cblas.h>

#include "core/error.h"

namespace opd::cpu {

namespace {

// Row-major C[m, n] = alpha * op(A) op(B) + beta * C.
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const double* a, int lda,
          const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void check_shape(const char* op, int N, int K, int R, int M) {
  OPD_REQUIRE(N >= 0 && K >= 0 && R >= 1 && M >= 0, op, ": shape N=", N, " K=", K, " R=", R, " M=", M,
              " (the rank R must be at least 1)");
}

}  // namespace

// u = inp A^T, then out += scale * u B^T: two thin GEMMs, never the [M, K] product B A.
template <typename T>
void lora_forward(T* out, T* u, const T* inp, const T* A, const T* B, int N, int K, int R, int M, float scale) {
  check_shape("lora_forward", N, K, R, M);
  if (N == 0 || M == 0 || K == 0) return;  // an empty inner dimension adds nothing
  gemm(CblasNoTrans, CblasTrans, N, R, K, 1.0f, inp, K, A, K, T(0), u, R);
  gemm(CblasNoTrans, CblasTrans, N, M, R, scale, u, R, B, R, T(1), out, M);
}

// With u = inp A^T and du = scale * dout B:
//   dB += scale * dout^T u,   dA += du^T inp,   dinp += du A.
template <typename T>
void lora_backward(T* dinp, T* dA, T* dB, T* u, T* du, const T* dout, const T* inp, const T* A, const T* B, int N,
                   int K, int R, int M, float scale) {
  check_shape("lora_backward", N, K, R, M);
  if (N == 0 || M == 0 || K == 0) return;
  gemm(CblasNoTrans, CblasTrans, N, R, K, 1.0f, inp, K, A, K, T(0), u, R);
  gemm(CblasTrans, CblasNoTrans, M, R, N, scale, dout, M, u, R, T(1), dB, R);
  gemm(CblasNoTrans, CblasNoTrans, N, R, M, scale, dout, M, B, R, T(0), du, R);
  gemm(CblasTrans, CblasNoTrans, R, K, N, 1.0f, du, R, inp, K, T(1), dA, K);
  if (dinp) gemm(CblasNoTrans, CblasNoTrans, N, K, R, 1.0f, du, R, A, K, T(1), dinp, K);
}

template <typename T>
void lora_merge(T* W, const T* A, const T* B, int K, int R, int M, float scale) {
  check_shape("lora_merge", 1, K, R, M);
  if (M == 0 || K == 0) return;
  gemm(CblasNoTrans, CblasNoTrans, M, K, R, scale, B, R, A, K, T(1), W, K);
}

template void lora_forward<float>(float*, float*, const float*, const float*, const float*, int, int, int, int, float);
template void lora_forward<double>(double*, double*, const double*, const double*, const double*, int, int, int, int,
                                   float);
template void lora_backward<float>(float*, float*, float*, float*, float*, const float*, const float*, const float*,
                                   const float*, int, int, int, int, float);
template void lora_backward<double>(double*, double*, double*, double*, double*, const double*, const double*,
                                    const double*, const double*, int, int, int, int, float);
template void lora_merge<float>(float*, const float*, const float*, int, int, int, float);
template void lora_merge<double>(double*, const double*, const double*, int, int, int, float);

}  // namespace opd::cpu
