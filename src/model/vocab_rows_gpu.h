// vocab_parallel's functions when the logits rows live on the GPU (VocabShard::device): the same
// contracts with logits and dlogits as device pointers and every [N]-sized array (log-probs,
// targets, KL, scales, sampled ids) on the host, so only [N]-sized data crosses the bus. The
// exceptions are a teacher's full log-softmax rows (--kl full), which travel as host [N, V] arrays
// as they do between ranks.
//
// Two kinds of functions. The whole-row ones (a whole vocabulary, !vs.split()) are each the
// whole-row CUDA op. The per-shard ones are the CUDA twins of the CPU shard ops
// (kernels/cpu/logprobs.h, reverse_kl.h) on this rank's slab [N, vs.size] of ids
// [vs.begin, vs.begin + vs.size): vocab_parallel runs its one split algorithm and calls these in
// place of the CPU ops, combining their [N]-sized results over vs.tp on the host. sample() is the
// exception to "never gather rows": under a split it gathers the slabs into whole rows (see
// vocab_parallel.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/sample.h"
#include "model/transformer.h"  // VocabShard

namespace opd::vocab_rows_gpu {

// Zeroes rows [N, vs.size] of device memory.
void zero_rows(const VocabShard& vs, float* rows, int N);

// ---- whole rows (!vs.split()) ----
void logprobs(const VocabShard& vs, float* logp, float* entropy, const float* logits, const int* targets, int N);
void logprobs_backward(const VocabShard& vs, float* dlogits, const float* dlogp, const float* logits,
                       const int* targets, int N);
void cross_entropy(const VocabShard& vs, float* losses, float* dlogits, const float* logits, const int* targets,
                   float scale, int N);
void log_softmax(const VocabShard& vs, float* out, const float* logits, int N);
void topk_logprobs(const VocabShard& vs, int* ids, float* logp, const float* logits, const int* extra,
                   bool skip_without_extra, int N, int K);
void reverse_kl_full(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const float* logp_teacher,
                     const float* scale, int N);
void reverse_kl_topk(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const int* ids,
                     const float* logp_teacher, const float* scale, int N, int K1);
// Whole rows, or under a split the slabs of all TP ranks gathered into whole rows [N, vs.vocab]
// first (over vs.device_tp when set, else through host memory over vs.tp; collective over the
// TP group), then the whole-row CUDA sampler: the token cpu::sample_tokens draws from the row.
void sample(const VocabShard& vs, int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N,
            const cpu::SampleParams& p);

// ---- per shard: the CPU shard ops' contracts (their names), arrays on the host unless noted ----
void logprobs_shard_stats(const VocabShard& vs, float* mx, float* sumexp, float* target_logit, const float* logits,
                          const int* targets, int N);
void entropy_shard(const VocabShard& vs, float* out, const float* logits, const float* lse, int N);
void logprobs_backward_shard(const VocabShard& vs, float* dlogits, const float* dlogp, const float* logits,
                             const float* lse, const int* targets, int N);
// out: host [N, vs.size].
void log_softmax_shard(const VocabShard& vs, float* out, const float* logits, const float* lse, int N);
// ids, logp: host [N, K].
void topk_shard_candidates(const VocabShard& vs, int* ids, float* logp, const float* logits, const float* lse, int N,
                           int K);
// teacher_rows: the teacher's [N, vs.size] slab in DEVICE memory (a TeacherRows), read by both
// calls, so that it crosses the bus once.
void reverse_kl_full_shard_partial(const VocabShard& vs, float* partial, const float* logits, const float* lse,
                                   const float* teacher_rows, int N);
void reverse_kl_full_shard_grad(const VocabShard& vs, float* dlogits, const float* logits, const float* lse,
                                const float* teacher_rows, const float* kl, const float* scale, int N);
// ids, logp_teacher: host [N, K1].
void reverse_kl_topk_shard_partial(const VocabShard& vs, float* zs, float* a, const float* logits, const float* lse,
                                   const int* ids, const float* logp_teacher, int N, int K1);
void reverse_kl_topk_shard_grad(const VocabShard& vs, float* dlogits, const float* logits, const float* lse,
                                const float* zs, const int* ids, const float* logp_teacher, const float* kl,
                                const float* scale, int N, int K1);

// Host rows [n] (a teacher's log-softmax slab) where the logits live: a device copy when
// vs.device (freed, in stream order, with this object), else the host pointer itself.
class TeacherRows {
 public:
  TeacherRows(const VocabShard& vs, const float* host, size_t n);
  ~TeacherRows();
  TeacherRows(const TeacherRows&) = delete;
  TeacherRows& operator=(const TeacherRows&) = delete;
  const float* get() const { return rows_; }

 private:
  void* stream_ = nullptr;
  float* device_ = nullptr;
  const float* rows_ = nullptr;
};

}  // namespace opd::vocab_rows_gpu
