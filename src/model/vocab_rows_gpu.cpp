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
#ifdef OPD_WITH_NCCL
#endif
#endif

namespace opd::vocab_rows_gpu {

#ifdef OPD_WITH_CUDA
namespace {

// Device copies of a call's host arrays, allocated in stream order and freed when the call ends.
// The whole-row ops refuse a split vocabulary (vocab_parallel runs the per-shard ones there).
class Staging {
 public:
  enum Rows { kWhole, kShard };
  Staging(const VocabShard& vs, const char* op, Rows rows = kWhole) : stream_(static_cast<cudaStream_t>(vs.stream)) {
    OPD_REQUIRE(rows == kShard || !vs.split(), "vocab_rows_gpu::", op, ": a whole-row op on a split vocabulary (",
                vs.size, " of ", vs.vocab, " ids on this rank); vocab_parallel runs the per-shard ops there");
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
  CUDA_CHECK(cudaMemsetAsync(rows, 0, size_t(N) * vs.size * sizeof(float), static_cast<cudaStream_t>(vs.stream)));
}

void logprobs(const VocabShard& vs, float* logp, float* entropy, const float* logits, const int* targets, int N) {
  Staging s(vs, "logprobs");
  cuda::logprobs_forward(s.out(logp, N), s.out(entropy, N), logits, s.in(targets, N), N, vs.vocab, s.stream());
  s.finish();
}

void logprobs_backward(const VocabShard& vs, float* dlogits, const float* dlogp, const float* logits,
                       const int* targets, int N) {
  Staging s(vs, "logprobs_backward");
  cuda::logprobs_backward(dlogits, s.in(dlogp, N), logits, s.in(targets, N), N, vs.vocab, s.stream());
  s.finish();
}

void cross_entropy(const VocabShard& vs, float* losses, float* dlogits, const float* logits, const int* targets,
                   float scale, int N) {
  Staging s(vs, "cross_entropy");
  cuda::cross_entropy_forward_backward(s.out(losses, N), dlogits, logits, s.in(targets, N), scale, N, vs.vocab,
                                       s.stream());
  s.finish();
}

void log_softmax(const VocabShard& vs, float* out, const float* logits, int N) {
  Staging s(vs, "log_softmax");
  cuda::log_softmax_forward(s.out(out, size_t(N) * vs.vocab), logits, N, vs.vocab, s.stream());
  s.finish();
}

void topk_logprobs(const VocabShard& vs, int* ids, float* logp, const float* logits, const int* extra,
                   bool skip_without_extra, int N, int K) {
  Staging s(vs, "topk_logprobs");
  const size_t n = size_t(N) * (K + 1);
  cuda::topk_logprobs(s.out(ids, n), s.out(logp, n), logits, s.in(extra, N), skip_without_extra, N, vs.vocab, K,
                      s.stream());
  s.finish();
}

void reverse_kl_full(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const float* logp_teacher,
                     const float* scale, int N) {
  Staging s(vs, "reverse_kl_full");
  cuda::reverse_kl_full(s.out(kl, N), dlogits, logits, s.in(logp_teacher, size_t(N) * vs.vocab), s.in(scale, N), N,
                        vs.vocab, s.stream());
  s.finish();
}

void reverse_kl_topk(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const int* ids,
                     const float* logp_teacher, const float* scale, int N, int K1) {
  Staging s(vs, "reverse_kl_topk");
  const size_t n = size_t(N) * K1;
  cuda::reverse_kl_topk(s.out(kl, N), dlogits, logits, s.in(ids, n), s.in(logp_teacher, n), s.in(scale, N), N,
                        vs.vocab, K1, s.stream());
  s.finish();
}

namespace {

// Waits until a collective over `c` has its result in place. NCCL in stream-ordered mode returns
// once the collective is enqueued on its own stream; every other communicator returns with it done.
void wait_for(Communicator& c) {
  c.synchronize();
}

// Every TP rank's slab [N, Vl] of device rows, side by side as whole rows [N, vs.vocab] in device
// memory from `s`. Rank r holds ids [r Vl, (r + 1) Vl) (the model splits the vocabulary evenly, in
// rank order), so its slab lands in columns [r Vl, (r + 1) Vl). Collective over the TP group.
const float* gather_rows(const VocabShard& vs, Staging& s, const float* slab, int N) {
  Communicator& tp = *vs.tp;
  const int R = tp.size(), Vl = vs.size;
  OPD_REQUIRE(int64_t(Vl) * R == vs.vocab && int64_t(vs.begin) == int64_t(Vl) * tp.rank(),
              "vocab_rows_gpu::sample: rank ", tp.rank(), " of ", tp.name(), " holds ids [", vs.begin, ", ",
              int64_t(vs.begin) + Vl, ") of ", vs.vocab, "; gathering rows needs even slabs in rank order");
  const size_t slab_elems = size_t(N) * Vl, bytes = slab_elems * sizeof(float);
  float* all = s.alloc<float>(size_t(R) * slab_elems);  // [R, N, Vl], rank r's slab in block r
  if (vs.device_tp) {
    Communicator& dtp = *vs.device_tp;
    OPD_REQUIRE(dtp.device_buffers() && dtp.size() == R && dtp.rank() == tp.rank(), "vocab_rows_gpu::sample: ",
                dtp.name(), " (rank ", dtp.rank(), " of ", dtp.size(), ", device buffers: ", dtp.device_buffers(),
                ") is not the device twin of ", tp.name(), " (rank ", tp.rank(), " of ", R, ")");
    // The slab and the allocation of `all` are ready before the communicator's stream reads them.
    CUDA_CHECK(cudaStreamSynchronize(s.stream()));
    dtp.all_gather(slab, bytes, all);
    wait_for(dtp);
  } else {
    std::vector<float> mine(slab_elems), every(size_t(R) * slab_elems);
    CUDA_CHECK(cudaMemcpyAsync(mine.data(), slab, bytes, cudaMemcpyDeviceToHost, s.stream()));
    CUDA_CHECK(cudaStreamSynchronize(s.stream()));
    tp.all_gather(mine.data(), bytes, every.data());
    CUDA_CHECK(cudaMemcpyAsync(all, every.data(), R * bytes, cudaMemcpyHostToDevice, s.stream()));
    CUDA_CHECK(cudaStreamSynchronize(s.stream()));  // before `every` goes
  }
  float* whole = s.alloc<float>(size_t(N) * vs.vocab);
  for (int r = 0; r < R; ++r)
    CUDA_CHECK(cudaMemcpy2DAsync(whole + size_t(r) * Vl, size_t(vs.vocab) * sizeof(float), all + size_t(r) * slab_elems,
                                 size_t(Vl) * sizeof(float), size_t(Vl) * sizeof(float), size_t(N),
                                 cudaMemcpyDeviceToDevice, s.stream()));
  return whole;
}

}  // namespace

void sample(const VocabShard& vs, int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N,
            const cpu::SampleParams& p) {
  Staging s(vs, "sample", Staging::kShard);
  if (N == 0) return;
  const float* rows = vs.split() ? gather_rows(vs, s, logits, N) : logits;
  cuda::sample_tokens(s.out(tokens, N), rows, s.in(seq, N), s.in(pos, N), N, vs.vocab, p, s.stream());
  s.finish();
}

// ---- per shard ----

void logprobs_shard_stats(const VocabShard& vs, float* mx, float* sumexp, float* target_logit, const float* logits,
                          const int* targets, int N) {
  Staging s(vs, "logprobs_shard_stats", Staging::kShard);
  cuda::logprobs_shard_stats(s.out(mx, N), s.out(sumexp, N), s.out(target_logit, N), logits, s.in(targets, N), N,
                             vs.size, vs.begin, s.stream());
  s.finish();
}

void entropy_shard(const VocabShard& vs, float* out, const float* logits, const float* lse, int N) {
  Staging s(vs, "entropy_shard", Staging::kShard);
  cuda::entropy_shard(s.out(out, N), logits, s.in(lse, N), N, vs.size, s.stream());
  s.finish();
}

void logprobs_backward_shard(const VocabShard& vs, float* dlogits, const float* dlogp, const float* logits,
                             const float* lse, const int* targets, int N) {
  Staging s(vs, "logprobs_backward_shard", Staging::kShard);
  cuda::logprobs_backward_shard(dlogits, s.in(dlogp, N), logits, s.in(lse, N), s.in(targets, N), N, vs.size, vs.begin,
                                s.stream());
  s.finish();
}

void log_softmax_shard(const VocabShard& vs, float* out, const float* logits, const float* lse, int N) {
  Staging s(vs, "log_softmax_shard", Staging::kShard);
  cuda::log_softmax_shard(s.out(out, size_t(N) * vs.size), logits, s.in(lse, N), N, vs.size, s.stream());
  s.finish();
}

void topk_shard_candidates(const VocabShard& vs, int* ids, float* logp, const float* logits, const float* lse, int N,
                           int K) {
  Staging s(vs, "topk_shard_candidates", Staging::kShard);
  const size_t n = size_t(N) * K;
  cuda::topk_shard_candidates(s.out(ids, n), s.out(logp, n), logits, s.in(lse, N), N, vs.size, vs.begin, K,
                              s.stream());
  s.finish();
}

void reverse_kl_full_shard_partial(const VocabShard& vs, float* partial, const float* logits, const float* lse,
                                   const float* teacher_rows, int N) {
  Staging s(vs, "reverse_kl_full_shard_partial", Staging::kShard);
  cuda::reverse_kl_full_shard_partial(s.out(partial, N), logits, s.in(lse, N), teacher_rows, N, vs.size, s.stream());
  s.finish();
}

void reverse_kl_full_shard_grad(const VocabShard& vs, float* dlogits, const float* logits, const float* lse,
                                const float* teacher_rows, const float* kl, const float* scale, int N) {
  Staging s(vs, "reverse_kl_full_shard_grad", Staging::kShard);
  cuda::reverse_kl_full_shard_grad(dlogits, logits, s.in(lse, N), teacher_rows, s.in(kl, N), s.in(scale, N), N,
                                   vs.size, s.stream());
  s.finish();
}

void reverse_kl_topk_shard_partial(const VocabShard& vs, float* zs, float* a, const float* logits, const float* lse,
                                   const int* ids, const float* logp_teacher, int N, int K1) {
  Staging s(vs, "reverse_kl_topk_shard_partial", Staging::kShard);
  const size_t n = size_t(N) * K1;
  cuda::reverse_kl_topk_shard_partial(s.out(zs, N), s.out(a, N), logits, s.in(lse, N), s.in(ids, n),
                                      s.in(logp_teacher, n), N, vs.size, vs.begin, K1, s.stream());
  s.finish();
}

void reverse_kl_topk_shard_grad(const VocabShard& vs, float* dlogits, const float* logits, const float* lse,
                                const float* zs, const int* ids, const float* logp_teacher, const float* kl,
                                const float* scale, int N, int K1) {
  Staging s(vs, "reverse_kl_topk_shard_grad", Staging::kShard);
  const size_t n = size_t(N) * K1;
  cuda::reverse_kl_topk_shard_grad(dlogits, logits, s.in(lse, N), s.in(zs, N), s.in(ids, n), s.in(logp_teacher, n),
                                   s.in(kl, N), s.in(scale, N), N, vs.size, vs.begin, K1, s.stream());
  s.finish();
}

TeacherRows::TeacherRows(const VocabShard& vs, const float* host, size_t n) : stream_(vs.stream), rows_(host) {
  if (!vs.device || !host) return;
  const auto stream = static_cast<cudaStream_t>(stream_);
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&device_), std::max<size_t>(n, 1) * sizeof(float), stream));
  CUDA_CHECK(cudaMemcpyAsync(device_, host, n * sizeof(float), cudaMemcpyHostToDevice, stream));
  rows_ = device_;
}

TeacherRows::~TeacherRows() {
  if (device_) cudaFreeAsync(device_, static_cast<cudaStream_t>(stream_));
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
void logprobs_shard_stats(const VocabShard&, float*, float*, float*, const float*, const int*, int) { no_cuda(); }
void entropy_shard(const VocabShard&, float*, const float*, const float*, int) { no_cuda(); }
void logprobs_backward_shard(const VocabShard&, float*, const float*, const float*, const float*, const int*, int) {
  no_cuda();
}
void log_softmax_shard(const VocabShard&, float*, const float*, const float*, int) { no_cuda(); }
void topk_shard_candidates(const VocabShard&, int*, float*, const float*, const float*, int, int) { no_cuda(); }
void reverse_kl_full_shard_partial(const VocabShard&, float*, const float*, const float*, const float*, int) {
  no_cuda();
}
void reverse_kl_full_shard_grad(const VocabShard&, float*, const float*, const float*, const float*, const float*,
                                const float*, int) {
  no_cuda();
}
void reverse_kl_topk_shard_partial(const VocabShard&, float*, float*, const float*, const float*, const int*,
                                   const float*, int, int) {
  no_cuda();
}
void reverse_kl_topk_shard_grad(const VocabShard&, float*, const float*, const float*, const float*, const int*,
                                const float*, const float*, const float*, int, int) {
  no_cuda();
}
TeacherRows::TeacherRows(const VocabShard& vs, const float* host, size_t) : rows_(host) {
  if (vs.device) no_cuda();
}
TeacherRows::~TeacherRows() { (void)stream_, (void)device_; }  // never device memory here
#endif

}  // namespace opd::vocab_rows_gpu
