// Linear layers on the GPU through cuBLASLt, same contract as kernels/cpu/matmul.h
// (out[N, M] = inp[N, K] @ weight[M, K]^T, Hugging Face weight layout): bf16 inputs, fp32
// accumulation (CUBLAS_COMPUTE_32F), bf16 or fp32 outputs. Device pointers; includable from plain
// C++.
//
// Epilogues: the model's linear layers have no bias and its activation (SwiGLU) is not one of
// cuBLASLt's, so the only pass a GEMM can absorb is the residual add, done with beta = 1
// (accumulate=true; C and D are the same buffer) rather than an epilogue. BIAS / BGRADB / GELU
// epilogues would save nothing here and are not used.
#pragma once
#include <cstddef>
#include <array>
#include <map>
#include <memory>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda {

using bf16 = __nv_bfloat16;

// One cuBLASLt handle, one workspace and the algorithms chosen for each shape seen. A Matmul's
// workspace is reused by every call, so use one Matmul per stream (calls on two streams at once
// through one Matmul would race on it). Not thread-safe.
class Matmul {
 public:
  static constexpr size_t kDefaultWorkspace = size_t(32) << 20;  // what cuBLAS advises for Hopper

  explicit Matmul(size_t workspace_bytes = kDefaultWorkspace);
  ~Matmul();
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;

  // accumulate=false: out = alpha inp @ weight^T; accumulate=true: out += alpha inp @ weight^T
  // (residual add; alpha scales a LoRA adapter's term). TOut: bf16 or float.
  template <typename TOut>
  void forward(TOut* out, const bf16* inp, const bf16* weight, int N, int K, int M, bool accumulate = false,
               cudaStream_t stream = 0, float alpha = 1.0f);

  // dinp += alpha dout @ weight (skipped when dinp is null; TIn: bf16 or float); dweight += alpha
  // dout^T @ inp into the fp32 gradient (skipped when dweight is null: a frozen weight).
  template <typename TIn>
  void backward(TIn* dinp, float* dweight, const bf16* dout, const bf16* inp, const bf16* weight, int N, int K, int M,
                cudaStream_t stream = 0, float alpha = 1.0f);

  // Algorithms cached so far (one per distinct GEMM shape, layout, type and pointer alignment).
  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan;
  // m, n, k, transa, transb, lda, ldb, ldd, output is fp32, accumulate, alignment of A, B, D
  using Key = std::array<long long, 13>;

  // Column-major D[m, n] = op(A) op(B) (+ D): the one place cuBLASLt is called.
  void gemm(bool trans_a, bool trans_b, int m, int n, int k, const bf16* a, int lda, const bf16* b, int ldb,
            void* d, bool d_is_float, int ldd, bool accumulate, cudaStream_t stream, float alpha);
  const Plan& plan(const Key& key);

  void* handle_ = nullptr;  // cublasLtHandle_t, kept opaque so this header needs no cublasLt.h
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;  // Plan is complete in matmul.cu, where ~Matmul is
};

}  // namespace opd::cuda
