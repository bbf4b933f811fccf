#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>

#include "core/error.h"

// Not every cblas.h declares it; a matching redeclaration is harmless where one does.
extern "C" void openblas_set_num_threads(int);

namespace opd::cpu {

namespace {

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const double* a, int lda, const double* b,
          int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

void check_shape(const char* op, int N, int K, int M) {
  OPD_REQUIRE(N >= 0 && K >= 0 && M >= 0, op, ": negative shape N=", N, " K=", K, " M=", M);
}

}  // namespace

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, int N, int K, int M, bool accumulate) {
  check_shape("matmul_forward", N, K, M);
  if (N == 0 || M == 0) return;
  // BLAS rejects a leading dimension of 0, so an empty inner dimension is handled here.
  if (K == 0) {
    if (!accumulate) std::fill(out, out + (size_t)N * M, T(0));
    return;
  }
  gemm(CblasNoTrans, CblasTrans, N, M, K, inp, K, weight, K, accumulate ? T(1) : T(0), out, M);
}

template <typename T>
void matmul_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight, int N, int K, int M) {
  check_shape("matmul_backward", N, K, M);
  if (N == 0 || K == 0 || M == 0) return;
  if (dinp) gemm(CblasNoTrans, CblasNoTrans, N, K, M, dout, M, weight, K, T(1), dinp, K);
  if (dweight) gemm(CblasTrans, CblasNoTrans, M, K, N, dout, M, inp, K, T(1), dweight, K);
}

void set_blas_threads(int n) {
  OPD_REQUIRE(n >= 1, "set_blas_threads: thread count must be at least 1, got ", n);
  openblas_set_num_threads(n);
}

template void matmul_forward<float>(float*, const float*, const float*, int, int, int, bool);
template void matmul_forward<double>(double*, const double*, const double*, int, int, int, bool);
template void matmul_backward<float>(float*, float*, const float*, const float*, const float*, int, int, int);
template void matmul_backward<double>(double*, double*, const double*, const double*, const double*, int, int,
                                      int);

}  // namespace opd::cpu
