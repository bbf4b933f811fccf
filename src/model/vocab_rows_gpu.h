// vocab_parallel's functions when the logits rows live on the GPU (VocabShard::device): the same
// contracts with logits and dlogits as device pointers and every [N]-sized array (log-probs,
// targets, KL, scales, sampled ids) on the host, so only [N]-sized data crosses the bus. The
// exceptions are a teacher's full log-softmax rows (--kl full), which travel as host [N, V] arrays
// as they do between ranks. A whole vocabulary only (no tensor parallelism on the GPU path yet).
#pragma once
#include <cstdint>

#include "kernels/cpu/sample.h"
#include "model/transformer.h"  // VocabShard

namespace opd::vocab_rows_gpu {

void zero_rows(const VocabShard& vs, float* rows, int N);
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
void sample(const VocabShard& vs, int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N,
            const cpu::SampleParams& p);

}  // namespace opd::vocab_rows_gpu
