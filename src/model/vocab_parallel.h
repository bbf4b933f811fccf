// Everything that reads rows of logits, in one place, so tensor parallelism is one code path:
// with a whole vocabulary each function is the CPU op itself; with a split one (each TP rank
// holding the slab [N, size] of ids [begin, begin + size)) it runs the op's per-shard form and
// combines rows over the TP group with all-reduces and all-gathers of [N]-sized statistics
// (max, sum-exp, partial sums, top-K candidates). Full logits rows are never gathered. Every TP
// rank gets the same per-row results (log-probs, KL, sampled tokens). With rows on the GPU
// (VocabShard::device) each function is the CUDA op (model/vocab_rows_gpu.h): logits and dlogits
// are device pointers, every other array stays on the host.
#pragma once
#include <cstdint>

#include "kernels/cpu/sample.h"
#include "model/transformer.h"  // VocabShard

namespace opd::vocab_parallel {

// Zeroes rows [N, vs.size] (a gradient about to be accumulated into), wherever they live.
void zero_rows(const VocabShard& vs, float* rows, int N);
// logp[n] = log_softmax(row n)[targets[n]] (0 where targets[n] < 0); entropy (nullable) per row
// (0 on skipped rows); lse (nullable) the row's log-sum-exp, which the backward forms below need
// when the vocabulary is split (with a whole one they recompute it and take null).
void logprobs(const VocabShard& vs, float* logp, float* entropy, float* lse, const float* logits, const int* targets,
              int N);
// dlogits += dlogp * (onehot(target) - softmax) on rows with a target.
void logprobs_backward(const VocabShard& vs, float* dlogits, const float* dlogp, const float* logits,
                       const float* lse, const int* targets, int N);
// Cross-entropy and its gradient scaled by `scale` (dlogits overwritten, 0 on skipped rows).
void cross_entropy(const VocabShard& vs, float* losses, float* dlogits, const float* logits, const int* targets,
                   float scale, int N);
// This shard's columns of the log-softmax rows (what a teacher returns for --kl full).
void log_softmax(const VocabShard& vs, float* out, const float* logits, int N);
// topk_logprobs (kernels/cpu/logprobs.h) over whole rows: ids [N, K+1] and their log-probs.
void topk_logprobs(const VocabShard& vs, int* ids, float* logp, const float* logits, const int* extra,
                   bool skip_without_extra, int N, int K);
// reverse_kl_full with the teacher's log-probs for this shard's columns ([N, size]); dlogits nullable.
void reverse_kl_full(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const float* logp_teacher,
                     const float* scale, int N);
// reverse_kl_topk over the ids [N, K1] (any shard's); dlogits nullable.
void reverse_kl_topk(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const int* ids,
                     const float* logp_teacher, const float* scale, int N, int K1);
// sample_tokens: the same token for a row as one process drawing from the whole row.
void sample(const VocabShard& vs, int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N,
            const cpu::SampleParams& p);

}  // namespace opd::vocab_parallel
