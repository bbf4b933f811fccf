// Where the methods differ: the per-token advantage or target, and the gradient it puts on the
// student's logits (docs/ARCHITECTURE.md §1). Each function takes the student's logits for one
// micro-batch, writes dL/dlogits, and returns sums for the step's metrics.
#pragma once
#include <cstdint>
#include <vector>

#include "train/batch.h"
#include "train/teacher.h"

namespace opd {

struct TokenSums {
  double loss = 0;          // the objective (already weighted)
  double kl = 0;            // sum over trained tokens of logp_student - logp_teacher (sampled estimate)
  double kl_exact = 0;      // sum of the exact per-position KL (full / top-K modes)
  double logp_student = 0;  // sum of the student's log-probs of the sampled tokens
  double logp_teacher = 0;
  double entropy = 0;       // sum of the student's per-position entropy
  int64_t tokens = 0;
  TokenSums& operator+=(const TokenSums& o);
};

struct DistillOptions {
  KlSpec kl;
  double kl_coef = 1.0;
  double kl_discount = 0.0;  // gamma: A_t = -kl_coef * sum_{j >= t} gamma^(j-t) k_j within a completion
  double reward_coef = 0.0;  // A_t += reward_coef * (R - mean_group(R))
};

// weight: 1 / (trained tokens in the whole step), so micro-batches add up to a per-token mean.
// seq_reward_adv: per sequence R - mean_group(R) (used when reward_coef != 0; may be empty).
// logp_old is the log-prob under the policy that sampled; with one update per batch it is the log-prob
// of this very forward, so the importance ratio is exactly 1 and the gradient -A_t grad logp(x_t).
// vocab: the student's vocabulary, or under tensor parallelism its shard (logits and dlogits are
// then this rank's [N, shard] slabs; the sums are the whole rows', the same on every TP rank).
TokenSums distill_objective(float* dlogits, const float* logits, const SequenceBatch& batch, const VocabShard& vocab,
                            const TeacherScores& teacher, const DistillOptions& options,
                            const std::vector<float>& seq_reward_adv, float weight);

// GRPO: every token of sequence b gets advantage seq_adv[b]; the same importance-sampled update.
TokenSums policy_gradient_objective(float* dlogits, const float* logits, const SequenceBatch& batch,
                                    const VocabShard& vocab,
                                    const std::vector<float>& seq_adv, float weight);

// Supervised fine-tuning: cross-entropy of each target token.
TokenSums sft_objective(float* dlogits, const float* logits, const SequenceBatch& batch, const VocabShard& vocab,
                        float weight);

// Group-relative advantages R - mean_group(R), divided by the group's std (plus eps) when asked.
std::vector<float> group_advantages(const std::vector<float>& rewards, const std::vector<int>& groups, bool divide_std);

}  // namespace opd
