#include "model/vocab_rows_gpu.h"

#include "core/error.h"

#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/logprobs.cuh"
#include "kernels/cuda/reverse_kl.cuh"
#include "kernels/cuda/sample.cuh"
#endif

namespace opd::vocab_rows_gpu {

#ifdef OPD_WITH_CUDA
namespace {

// Device copies of a call's host arrays, allocated in stream order and freed when the call ends.
class Staging {
 public:
  explicit Staging(const VocabShard& vs) : stream_(static_cast<cudaStream_t>(vs.stream)) {
    OPD_REQUIRE(!vs.split(), "GPU logits rows: a split vocabulary (tensor parallelism) is not on the GPU path yet");
  }
  ~Staging() {
    for (void* p : owned_) cudaFreeAsync(p, stream_);
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  cudaStream_t stream() const { return stream_; }

  template <typename T>
  T* alloc(size_t n) {
    void* p = nullptr;
    CUDA_CHECK(cudaMallocAsync(&p, std::max<size_t>(n, 1) * sizeof(T), stream_));
    owned_.push_back(p);
    return static_cast<T*>(p);
  }
  // A device copy of host[0, n) (null for a null host pointer).
  template <typename T>
  T* in(const T* host, size_t n) {
    if (!host) return nullptr;
    T* d = alloc<T>(n);
    CUDA_CHECK(cudaMemcpyAsync(d, host, n * sizeof(T), cudaMemcpyHostToDevice, stream_));
    return d;
  }
  // A device buffer whose contents go to host[0, n) at out() (null for a null host pointer).
  template <typename T>
  T* out(T* host, size_t n) {
    if (!host) return nullptr;
    T* d = alloc<T>(n);
    outs_.push_back({host, d, n * sizeof(T)});
    return d;
  }
  // Copies every out() buffer back and waits for the stream: the host arrays are ready after.
  void finish() {
    for (const Out& o : outs_) CUDA_CHECK(cudaMemcpyAsync(o.host, o.dev, o.bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  struct Out {
    void* host;
    const void* dev;
    size_t bytes;
  };
  cudaStream_t stream_;
  std::vector<void*> owned_;
  std::vector<Out> outs_;
};

}  // namespace

void zero_rows(const VocabShard& vs, float* rows, int N) {
  CUDA_CHECK(cudaMemsetAsync(rows, 0, size_t(N) * vs.vocab * sizeof(float), static_cast<cudaStream_t>(vs.stream)));
}

void logprobs(const VocabShard& vs, float* logp, float* entropy, const float* logits, const int* targets, int N) {
  Staging s(vs);
  cuda::logprobs_forward(s.out(logp, N), s.out(entropy, N), logits, s.in(targets, N), N, vs.vocab, s.stream());
  s.finish();
}

void logprobs_backward(const VocabShard& vs, float* dlogits, const float* dlogp, const float* logits,
                       const int* targets, int N) {
  Staging s(vs);
  cuda::logprobs_backward(dlogits, s.in(dlogp, N), logits, s.in(targets, N), N, vs.vocab, s.stream());
  s.finish();
}

void cross_entropy(const VocabShard& vs, float* losses, float* dlogits, const float* logits, const int* targets,
                   float scale, int N) {
  Staging s(vs);
  cuda::cross_entropy_forward_backward(s.out(losses, N), dlogits, logits, s.in(targets, N), scale, N, vs.vocab,
                                       s.stream());
  s.finish();
}

void log_softmax(const VocabShard& vs, float* out, const float* logits, int N) {
  Staging s(vs);
  cuda::log_softmax_forward(s.out(out, size_t(N) * vs.vocab), logits, N, vs.vocab, s.stream());
  s.finish();
}

void topk_logprobs(const VocabShard& vs, int* ids, float* logp, const float* logits, const int* extra,
                   bool skip_without_extra, int N, int K) {
  Staging s(vs);
  const size_t n = size_t(N) * (K + 1);
  cuda::topk_logprobs(s.out(ids, n), s.out(logp, n), logits, s.in(extra, N), skip_without_extra, N, vs.vocab, K,
                      s.stream());
  s.finish();
}

void reverse_kl_full(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const float* logp_teacher,
                     const float* scale, int N) {
  Staging s(vs);
  cuda::reverse_kl_full(s.out(kl, N), dlogits, logits, s.in(logp_teacher, size_t(N) * vs.vocab), s.in(scale, N), N,
                        vs.vocab, s.stream());
  s.finish();
}

void reverse_kl_topk(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const int* ids,
                     const float* logp_teacher, const float* scale, int N, int K1) {
  Staging s(vs);
  const size_t n = size_t(N) * K1;
  cuda::reverse_kl_topk(s.out(kl, N), dlogits, logits, s.in(ids, n), s.in(logp_teacher, n), s.in(scale, N), N,
                        vs.vocab, K1, s.stream());
  s.finish();
}

void sample(const VocabShard& vs, int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N,
            const cpu::SampleParams& p) {
  Staging s(vs);
  cuda::sample_tokens(s.out(tokens, N), logits, s.in(seq, N), s.in(pos, N), N, vs.vocab, p, s.stream());
  s.finish();
}

#else
namespace {
[[noreturn]] void no_cuda() { throw Error("GPU logits rows: this opd was built without CUDA (-DOPD_CUDA=ON)"); }
}  // namespace
void zero_rows(const VocabShard&, float*, int) { no_cuda(); }
void logprobs(const VocabShard&, float*, float*, const float*, const int*, int) { no_cuda(); }
void logprobs_backward(const VocabShard&, float*, const float*, const float*, const int*, int) { no_cuda(); }
void cross_entropy(const VocabShard&, float*, float*, const float*, const int*, float, int) { no_cuda(); }
void log_softmax(const VocabShard&, float*, const float*, int) { no_cuda(); }
void topk_logprobs(const VocabShard&, int*, float*, const float*, const int*, bool, int, int) { no_cuda(); }
void reverse_kl_full(const VocabShard&, float*, float*, const float*, const float*, const float*, int) { no_cuda(); }
void reverse_kl_topk(const VocabShard&, float*, float*, const float*, const int*, const float*, const float*, int,
                     int) {
  no_cuda();
}
void sample(const VocabShard&, int*, const float*, const uint32_t*, const uint32_t*, int, const cpu::SampleParams&) {
  no_cuda();
}
#endif

}  // namespace opd::vocab_rows_gpu
