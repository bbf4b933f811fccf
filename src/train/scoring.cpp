#include "train/scoring.h"

#include <chrono>

#include "core/error.h"
#include "model/shards.h"

#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.cuh"
#include "model/backend_cuda.h"
#endif

namespace opd {

double scoring_flops(const Transformer& teacher, const SequenceBatch& batch) {
  double tokens = 0;
  for (int len : batch.lengths) tokens += len;
  return teacher.forward_flops(tokens, batch.T / 2.0);
}

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

#ifdef OPD_WITH_CUDA
// The teacher's busy time, as stream time: from queueing its forward to the forward's end, and
// from the student asking for the scores to their end (a stream gap, while the host stages a
// transfer, counts as busy).
struct ColocatedScoring::ForwardSpan {
  cudaEvent_t marks[4] = {};  // forward begin, forward end, scores begin, scores end
  ForwardSpan() {
    for (cudaEvent_t& e : marks) CUDA_CHECK(cudaEventCreate(&e));
  }
  ~ForwardSpan() {
    for (cudaEvent_t e : marks) cudaEventDestroy(e);
  }
  ForwardSpan(const ForwardSpan&) = delete;
  ForwardSpan& operator=(const ForwardSpan&) = delete;
  void mark(int i, cudaStream_t stream) { CUDA_CHECK(cudaEventRecord(marks[i], stream)); }
  double busy_seconds() const {  // once the last mark has passed
    CUDA_CHECK(cudaEventSynchronize(marks[3]));
    float forward = 0, scores = 0;
    CUDA_CHECK(cudaEventElapsedTime(&forward, marks[0], marks[1]));
    CUDA_CHECK(cudaEventElapsedTime(&scores, marks[2], marks[3]));
    return (forward + scores) / 1e3;
  }
};
#else
struct ColocatedScoring::ForwardSpan {};
#endif

int ColocatedScoring::submit(const SequenceBatch& batch, const KlSpec& kl) {
  finish_pending();
  const auto t0 = std::chrono::steady_clock::now();
  double flops = 0;
  if (model_.on_gpu() && !shared_prefix_) {
#ifdef OPD_WITH_CUDA
    auto span = std::make_shared<ForwardSpan>();
    span->mark(0, static_cast<cudaStream_t>(model_.stream()));
    const float* logits = teacher_.forward(batch);
    span->mark(1, static_cast<cudaStream_t>(model_.stream()));
    pending_ = Pending{next_, batch, kl, logits, std::move(span)};
#endif
    flops = scoring_flops(model_, batch);
    usage_.wait += seconds_since(t0);  // the host's part; the forward's own time is counted once done
  } else {
    done_[next_] = shared_prefix_ ? teacher_.score_shared_prefix(batch, kl, &flops) : teacher_.score(batch, kl);
    if (!shared_prefix_) flops = scoring_flops(model_, batch);
    const double s = seconds_since(t0);
    usage_.busy += s;
    usage_.wait += s;
  }
  usage_.flops += flops;
  return next_++;
}

void ColocatedScoring::finish_pending() {
  if (!pending_) return;
  const auto t0 = std::chrono::steady_clock::now();
  double busy = 0;
#ifdef OPD_WITH_CUDA
  // The student waits here for the rest of the forward and for the scores; the teacher was busy
  // for the whole forward (while the student trained, too) and for the scores.
  pending_->span->mark(2, static_cast<cudaStream_t>(model_.stream()));
  done_[pending_->ticket] = teacher_.from_logits(pending_->logits, pending_->batch, pending_->kl);
  pending_->span->mark(3, static_cast<cudaStream_t>(model_.stream()));
  busy = pending_->span->busy_seconds();
#endif
  pending_.reset();
  usage_.busy += busy;
  usage_.wait += seconds_since(t0);
}

TeacherScores ColocatedScoring::collect(int ticket) {
  if (pending_ && pending_->ticket == ticket) finish_pending();
  auto it = done_.find(ticket);
  OPD_REQUIRE(it != done_.end(), "scoring: ticket ", ticket, " was never submitted or is already collected");
  TeacherScores s = std::move(it->second);
  done_.erase(it);
  return s;
}

int TensorParallelScoring::submit(const SequenceBatch& batch, const KlSpec& kl) {
  // Every TP rank sampled the same sequences; the leader alone sends them.
  const int ticket = leader_ ? leader_->submit(batch, kl) : next_;
  ++next_;
  return ticket;
}

bool TensorParallelScoring::ready(int ticket) {
  int flag = leader_ ? int(leader_->ready(ticket)) : 0;
  tp_.broadcast(&flag, sizeof(flag), 0);
  return flag != 0;
}

TeacherScores TensorParallelScoring::collect(int ticket) {
  TeacherScores s;
  if (leader_) {
    s = leader_->collect(ticket);
    const Usage u = leader_->take_usage();
    usage_.busy += u.busy;
    usage_.wait += u.wait;
    usage_.flops += u.flops;
  }
  int64_t sizes[4] = {int64_t(s.logp.size()), int64_t(s.full.size()), int64_t(s.topk_ids.size()),
                      int64_t(s.topk_logp.size())};
  tp_.broadcast(sizes, sizeof(sizes), 0);
  s.logp.resize(sizes[0]);
  s.full.resize(sizes[1]);
  s.topk_ids.resize(sizes[2]);
  s.topk_logp.resize(sizes[3]);
  tp_.broadcast(s.logp.data(), s.logp.size() * sizeof(float), 0);
  tp_.broadcast(s.full.data(), s.full.size() * sizeof(float), 0);
  tp_.broadcast(s.topk_ids.data(), s.topk_ids.size() * sizeof(int), 0);
  tp_.broadcast(s.topk_logp.data(), s.topk_logp.size() * sizeof(float), 0);
  if (!s.full.empty()) {
    const int N = static_cast<int>(s.logp.size());
    s.full = slice_columns(s.full.data(), N, vocab_.vocab, vocab_.begin, vocab_.size);
  }
  return s;
}

}  // namespace opd
