#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/packed.cuh"

namespace opd::cuda {

namespace {

using namespace packed;

constexpr int kThreads = 256;

// One block per row; copies in 16-byte packs when the rows allow it. kShard: the table holds rows
// [v0, v0 + Vl) only, and a token outside them gives a zero row.
template <typename T, bool kVec, bool kShard>
__global__ void __launch_bounds__(kThreads)
    embedding_forward_kernel(T* __restrict__ out, const int* __restrict__ tokens, const T* __restrict__ table,
                             int C, int v0, int Vl) {
  const int n = blockIdx.x;
  const int token = tokens[n];
  T* dst = out + size_t(n) * C;
  // token >= v0 first, so that token - v0 cannot overflow. Uniform per block.
  if (kShard && !(token >= v0 && token - v0 < Vl)) {
    if constexpr (kVec) {
      const int packs = C / kPack<T>;
      for (int i = threadIdx.x; i < packs; i += kThreads) reinterpret_cast<int4*>(dst)[i] = make_int4(0, 0, 0, 0);
    } else {
      for (int c = threadIdx.x; c < C; c += kThreads) dst[c] = from_float<T>(0.0f);
    }
    return;
  }
  const T* src = table + size_t(token - v0) * C;
  if constexpr (kVec) {
    const int packs = C / kPack<T>;
    for (int i = threadIdx.x; i < packs; i += kThreads)
      reinterpret_cast<int4*>(dst)[i] = reinterpret_cast<const int4*>(src)[i];
  } else {
    for (int c = threadIdx.x; c < C; c += kThreads) dst[c] = src[c];
  }
}

// positions[n] = n: the values the sort carries along with the token ids.
__global__ void iota_kernel(int* __restrict__ v, int N) {
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i < N) v[i] = i;
}

// Block (s, y) looks at sorted slot s. Only the first slot of each run of equal tokens does work:
// its threads (one per column of slice y) add the run's rows in ascending position and write the
// sum once. Every element of dtable is written by exactly one thread. dtable holds the rows of
// tokens [v0, v0 + Vl) (the whole table: v0 = 0, Vl = V); other tokens add nothing.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(float* __restrict__ dtable, const T* __restrict__ dout,
                              const int* __restrict__ sorted_tokens, const int* __restrict__ sorted_pos, int N,
                              int C, int v0, int Vl) {
  const int s = blockIdx.x;
  const int token = sorted_tokens[s];
  if (s > 0 && sorted_tokens[s - 1] == token) return;  // not the head of its run (uniform per block)
  if (!(token >= v0 && token - v0 < Vl)) return;        // token >= v0 first: no overflow
  // The run's end, 32 slots per step: each warp compares 32 sorted ids at once (a frequent token
  // such as padding can repeat thousands of times). Ids are sorted, so the first mismatch ends it.
  int end = s + 1;
  const int lane = threadIdx.x % 32;
  for (;;) {
    const int j = end + lane;
    const unsigned same = __ballot_sync(0xffffffffu, j < N && sorted_tokens[j] == token);
    if (same != 0xffffffffu) {
      end += __ffs(~same) - 1;
      break;
    }
    end += 32;
  }
  const int c = blockIdx.y * kThreads + threadIdx.x;
  if (c >= C) return;
  float* dst = dtable + size_t(token - v0) * C + c;
  float acc = *dst;
  // Known bounds let the compiler keep several rows' loads in flight; the adds stay in order.
#pragma unroll 8
  for (int j = s; j < end; ++j) acc += to_float(dout[size_t(sorted_pos[j]) * C + c]);
  *dst = acc;
}

template <typename T, bool kShard>
void launch_forward(T* out, const int* tokens, const T* table, int N, int C, int v0, int Vl, cudaStream_t stream) {
  if (C % kPack<T> == 0 && aligned16(out) && aligned16(table))
    embedding_forward_kernel<T, true, kShard><<<N, kThreads, 0, stream>>>(out, tokens, table, C, v0, Vl);
  else
    embedding_forward_kernel<T, false, kShard><<<N, kThreads, 0, stream>>>(out, tokens, table, C, v0, Vl);
  CUDA_CHECK_LAUNCH();
}

// Sorts the positions by token, then one block per sorted slot and column slice (see the kernel).
template <typename T>
void backward_sorted(const char* op, float* dtable, const T* dout, const int* tokens, int N, int C, int v0, int Vl,
                     cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  OPD_REQUIRE(C <= 65535 * kThreads, "cuda::", op, ": C=", C, " is too wide");

  // Scratch: sorted tokens, positions before and after the sort, then CUB's own temporary space.
  size_t cub_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, cub_bytes, tokens, static_cast<int*>(nullptr),
                                             static_cast<const int*>(nullptr), static_cast<int*>(nullptr), N, 0,
                                             int(sizeof(int) * 8), stream));
  const size_t int_bytes = (sizeof(int) * 3 * size_t(N) + 255) / 256 * 256;  // CUB's space 256-byte aligned
  char* scratch = nullptr;
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&scratch), int_bytes + cub_bytes, stream));
  int* sorted_tokens = reinterpret_cast<int*>(scratch);
  int* pos = sorted_tokens + N;
  int* sorted_pos = pos + N;
  void* cub_temp = scratch + int_bytes;

  iota_kernel<<<(N + kThreads - 1) / kThreads, kThreads, 0, stream>>>(pos, N);
  CUDA_CHECK_LAUNCH();
  // LSD radix sort over all 32 bits: stable, so equal tokens keep ascending positions, and
  // negative ids sort before 0 instead of aliasing valid ones.
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_temp, cub_bytes, tokens, sorted_tokens, pos, sorted_pos, N, 0,
                                             int(sizeof(int) * 8), stream));
  const dim3 grid(N, (C + kThreads - 1) / kThreads);
  embedding_backward_kernel<T><<<grid, kThreads, 0, stream>>>(dtable, dout, sorted_tokens, sorted_pos, N, C, v0, Vl);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaFreeAsync(scratch, stream));
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const int* tokens, const T* table, int N, int C, cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && C >= 0, "cuda::embedding_forward: negative shape N=", N, " C=", C);
  if (N == 0 || C == 0) return;
  launch_forward<T, false>(out, tokens, table, N, C, 0, 0, stream);
}

template <typename T>
void embedding_backward(float* dtable, const T* dout, const int* tokens, int N, int V, int C, cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && V >= 0 && C >= 0, "cuda::embedding_backward: negative shape N=", N, " V=", V, " C=", C);
  backward_sorted("embedding_backward", dtable, dout, tokens, N, C, 0, V, stream);
}

template <typename T>
void embedding_forward_shard(T* out, const int* tokens, const T* table, int N, int C, int v0, int Vl,
                             cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && C >= 0, "cuda::embedding_forward_shard: negative shape N=", N, " C=", C);
  OPD_REQUIRE(v0 >= 0 && Vl > 0, "cuda::embedding_forward_shard: shard [", v0, ", ", v0 + int64_t(Vl),
              ") is empty or negative");
  if (N == 0 || C == 0) return;
  launch_forward<T, true>(out, tokens, table, N, C, v0, Vl, stream);
}

template <typename T>
void embedding_backward_shard(float* dtable, const T* dout, const int* tokens, int N, int C, int v0, int Vl,
                              cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && C >= 0, "cuda::embedding_backward_shard: negative shape N=", N, " C=", C);
  OPD_REQUIRE(v0 >= 0 && Vl > 0, "cuda::embedding_backward_shard: shard [", v0, ", ", v0 + int64_t(Vl),
              ") is empty or negative");
  backward_sorted("embedding_backward_shard", dtable, dout, tokens, N, C, v0, Vl, stream);
}

template void embedding_forward<float>(float*, const int*, const float*, int, int, cudaStream_t);
template void embedding_forward<__nv_bfloat16>(__nv_bfloat16*, const int*, const __nv_bfloat16*, int, int,
                                               cudaStream_t);
template void embedding_backward<float>(float*, const float*, const int*, int, int, int, cudaStream_t);
template void embedding_backward<__nv_bfloat16>(float*, const __nv_bfloat16*, const int*, int, int, int,
                                                cudaStream_t);
template void embedding_forward_shard<float>(float*, const int*, const float*, int, int, int, int, cudaStream_t);
template void embedding_forward_shard<__nv_bfloat16>(__nv_bfloat16*, const int*, const __nv_bfloat16*, int, int, int,
                                                     int, cudaStream_t);
template void embedding_backward_shard<float>(float*, const float*, const int*, int, int, int, int, cudaStream_t);
template void embedding_backward_shard<__nv_bfloat16>(float*, const __nv_bfloat16*, const int*, int, int, int, int,
                                                      cudaStream_t);

}  // namespace opd::cuda
