// Everything that reads rows of logits, in one place, so tensor parallelism is one code path:
// with a whole vocabulary each function is the CPU op itself; with a split one (each TP rank
// holding the slab [N, size] of ids [begin, begin + size)) it runs the op's per-shard form and
// combines rows over the TP group with all-reduces and all-gathers of [N]-sized statistics
// (max, sum-exp, partial sums, top-K candidates). Every TP rank gets the same per-row results
// (log-probs, KL, sampled tokens).
//
// With rows on the GPU (VocabShard::device) logits and dlogits are device pointers and every other
// array stays on the host. Whole rows go to the whole-row CUDA ops (model/vocab_rows_gpu.h). A split
// runs the same split algorithm as on the CPU, each per-shard op replaced by its CUDA twin (the
// [N]-sized arrays staged to and from the device); the [N] collectives stay on the host, over tp.
//
// Rows are never gathered, with one exception: sample() with split rows on the GPU. The CPU's split
// sampler is a dozen per-shard ops and a data-dependent merge (top-p bisection over shards), each
// step a collective; twinning all of it for the GPU would be most of the sampler again. Sampling
// reads decode rows only ([B, V], one row per sequence, not [B*T, V]), so there it gathers the
// slabs into whole rows (over VocabShard::device_tp when set, i.e. NCCL between GPUs, else through
// host memory over tp) and runs the whole-row CUDA sampler, which draws cpu::sample_tokens' token.
// Each rank then holds B * V floats for the step: 2.4 MB for B = 4 at Qwen3's 151936.
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
