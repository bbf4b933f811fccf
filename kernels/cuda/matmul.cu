// The GPU matmul op: no handwritten kernel by design (docs/ARCHITECTURE.md §3: "GPU: cuBLAS / cuBLASLt
// bf16, fp32 accumulate"). The three GEMMs of a linear layer (forward, dinp, dweight) go through
// cuBLASLt with bf16 inputs and fp32 accumulation, one cached plan (heuristic algorithm) per shape,
// layout and alignment. Checked against kernels/cpu/matmul.cpp by tests/gpu/test_matmul_gpu.cpp
// (passed on an H200, 683-777 TFLOP/s at a 0.6B model's shapes in `opd bench ops`).
#include <cublasLt.h>

#include <cstdint>
#include <memory>
#include <utility>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/matmul.cuh"

namespace opd::cuda {

struct Matmul::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;  // d describes C as well (C is D)
  cublasLtMatmulAlgo_t algo{};

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  // Destructors do not throw: a failure here (a context already torn down) is ignored.
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

namespace {

// The preference's lifetime, so that a failed heuristic query releases it too.
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  Preference() { CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p)); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  ~Preference() { cublasLtMatmulPreferenceDestroy(p); }
};

cublasLtHandle_t lt(void* h) { return static_cast<cublasLtHandle_t>(h); }

// The largest power of two up to 16 that divides the address: what the heuristic must assume.
long long alignment(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  long long r = 16;
  while (r > 1 && a % r != 0) r /= 2;
  return r;
}

void check_shape(const char* op, int N, int K, int M) {
  OPD_REQUIRE(N >= 0 && K >= 0 && M >= 0, "cuda::Matmul::", op, ": negative shape N=", N, " K=", K, " M=", M);
}

}  // namespace

Matmul::Matmul(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  cublasLtHandle_t h = nullptr;
  CUBLAS_CHECK(cublasLtCreate(&h));
  handle_ = h;
  if (workspace_bytes_ > 0) CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

Matmul::~Matmul() {
  // Destructors do not throw: failures here (a context already torn down) are ignored.
  plans_.clear();
  cudaFree(workspace_);
  cublasLtDestroy(lt(handle_));
}

const Matmul::Plan& Matmul::plan(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  const auto [m, n, k, trans_a, trans_b, lda, ldb, ldd, d_is_float, accumulate, align_a, align_b, align_d] = key;
  (void)accumulate;  // part of the key only: beta = 0 and beta = 1 may prefer different algorithms

  // Cached only once complete: a shape that fails here fails again next time, never half-built.
  auto p = std::make_unique<Plan>();
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;  // see matmul.cuh on why no other
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  // Layouts describe the stored matrices (column-major), before any transpose.
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, trans_a ? k : m, trans_a ? m : k, lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, trans_b ? n : k, trans_b ? k : n, ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->d, d_is_float ? CUDA_R_32F : CUDA_R_16BF, m, n, ldd));

  Preference preference;
  const cublasLtMatmulPreference_t pref = preference.p;
  const uint64_t ws = workspace_bytes_;
  const uint32_t al_a = uint32_t(align_a), al_b = uint32_t(align_b), al_d = uint32_t(align_d);
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                    sizeof al_a));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                    sizeof al_b));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d,
                                                    sizeof al_d));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d,
                                                    sizeof al_d));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t rc =
      cublasLtMatmulAlgoGetHeuristic(lt(handle_), p->op, p->a, p->b, p->d, p->d, pref, 1, &result, &found);
  if (rc != CUBLAS_STATUS_SUCCESS || found == 0)
    fail_call("cublasLtMatmulAlgoGetHeuristic",
              str(rc != CUBLAS_STATUS_SUCCESS ? cublasGetStatusString(rc) : "no algorithm", " for m=", m, " n=", n,
                  " k=", k, trans_a ? " A^T" : " A", trans_b ? " B^T" : " B", d_is_float ? " -> fp32" : " -> bf16",
                  ", alignments ", align_a, "/", align_b, "/", align_d, " bytes"),
              __FILE__, __LINE__);
  p->algo = result.algo;
  return *(plans_[key] = std::move(p));
}

void Matmul::gemm(bool trans_a, bool trans_b, int m, int n, int k, const bf16* a, int lda, const bf16* b, int ldb,
                  void* d, bool d_is_float, int ldd, bool accumulate, cudaStream_t stream) {
  const Key key = {m,   n,   k, trans_a, trans_b, lda, ldb, ldd, d_is_float, accumulate, alignment(a), alignment(b),
                   alignment(d)};
  const Plan& p = plan(key);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(lt(handle_), p.op, &alpha, a, p.a, b, p.b, &beta, d, p.d, d, p.d, &p.algo, workspace_,
                              workspace_bytes_, stream));
}

// A row-major [r, c] array is the column-major matrix of its transpose (c x r, ld c), so each
// product is computed for the transposes, with every operand read where it lies:
//   forward  out^T [M x N]      = (weight^T)^T . inp^T   A: weight, stored K x M, op T ("TN")
//   dinp     dinp^T [K x N]    += weight^T . dout^T      A: weight, stored K x M; B: dout, stored M x N
//   dweight  dweight^T [K x M] += inp^T . dout           A: inp, stored K x N; B: dout, stored M x N, op T
template <typename TOut>
void Matmul::forward(TOut* out, const bf16* inp, const bf16* weight, int N, int K, int M, bool accumulate,
                     cudaStream_t stream) {
  check_shape("forward", N, K, M);
  if (N == 0 || M == 0) return;
  if (K == 0) {  // cuBLASLt rejects an empty inner dimension; the product is all zeros
    if (!accumulate) CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(TOut) * size_t(N) * M, stream));
    return;
  }
  gemm(true, false, M, N, K, weight, K, inp, K, out, sizeof(TOut) == sizeof(float), M, accumulate, stream);
}

template <typename TIn>
void Matmul::backward(TIn* dinp, float* dweight, const bf16* dout, const bf16* inp, const bf16* weight, int N, int K,
                      int M, cudaStream_t stream) {
  check_shape("backward", N, K, M);
  if (N == 0 || K == 0 || M == 0) return;
  if (dinp) gemm(false, false, K, N, M, weight, K, dout, M, dinp, sizeof(TIn) == sizeof(float), K, true, stream);
  gemm(false, true, K, M, N, inp, K, dout, M, dweight, true, K, true, stream);
}

template void Matmul::forward<bf16>(bf16*, const bf16*, const bf16*, int, int, int, bool, cudaStream_t);
template void Matmul::forward<float>(float*, const bf16*, const bf16*, int, int, int, bool, cudaStream_t);
template void Matmul::backward<bf16>(bf16*, float*, const bf16*, const bf16*, const bf16*, int, int, int,
                                     cudaStream_t);
template void Matmul::backward<float>(float*, float*, const bf16*, const bf16*, const bf16*, int, int, int,
                                      cudaStream_t);

}  // namespace opd::cuda
