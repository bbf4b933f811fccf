#include "train/objectives.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "kernels/cpu/reverse_kl.h"
#include "model/vocab_parallel.h"

namespace opd {

TokenSums& TokenSums::operator+=(const TokenSums& o) {
  loss += o.loss;
  kl += o.kl;
  kl_exact += o.kl_exact;
  logp_student += o.logp_student;
  logp_teacher += o.logp_teacher;
  entropy += o.entropy;
  tokens += o.tokens;
  return *this;
}

namespace {

// Per-row weights: `weight` on trained rows, 0 elsewhere.
std::vector<float> row_weights(const SequenceBatch& batch, float weight) {
  std::vector<float> w(batch.targets.size(), 0.0f);
  for (size_t n = 0; n < w.size(); ++n)
    if (batch.targets[n] >= 0) w[n] = weight;
  return w;
}

// Per-row advantage from a per-sequence one.
std::vector<float> broadcast_rows(const SequenceBatch& batch, const std::vector<float>& per_seq, float coef) {
  std::vector<float> a(batch.targets.size(), 0.0f);
  if (per_seq.empty() || coef == 0.0f) return a;
  for (int b = 0; b < batch.B; ++b)
    for (int t = 0; t < batch.T; ++t)
      if (batch.targets[size_t(b) * batch.T + t] >= 0) a[size_t(b) * batch.T + t] = coef * per_seq[b];
  return a;
}

// A_t += -kl_coef * sum_{j >= t} gamma^(j - t) k_j, summed backwards within each completion, over
// the rows [r0, r1): the whole batch, or a block when gamma is 0 (then a row needs only its own k).
void add_kl_advantage(std::vector<float>& adv, const std::vector<float>& k, const SequenceBatch& batch,
                      const DistillOptions& o, int r0, int r1) {
  for (int b = 0; b < batch.B; ++b) {
    double run = 0;
    for (int t = batch.T - 1; t >= 0; --t) {
      const int n = b * batch.T + t;
      if (n < r0 || n >= r1 || batch.targets[n] < 0) continue;
      run = k[n] + o.kl_discount * run;
      adv[n] += static_cast<float>(-o.kl_coef * run);
    }
  }
}

// The importance-sampled policy-gradient term -(w_t A_t ratio_t) of a block's rows into loss[r0..]
// and added into its dlogits.
void add_policy_gradient(const VocabShard& vs, const LogitBlocks::Block& blk, const SequenceBatch& batch,
                         std::vector<float>& loss, const std::vector<float>& lse, const std::vector<float>& logp,
                         const std::vector<float>& logp_old, const std::vector<float>& adv,
                         const std::vector<float>& w) {
  const int r0 = blk.r0, n = blk.n;
  std::vector<float> dlogp(n);
  cpu::policy_gradient_loss(loss.data() + r0, dlogp.data(), logp.data() + r0, logp_old.data() + r0, adv.data() + r0,
                            w.data() + r0, n);
  vocab_parallel::logprobs_backward(vs, blk.dlogits, dlogp.data(), blk.logits, lse.data() + r0,
                                    batch.targets.data() + r0, n);
}

// The student's per-row log-probs of the targets, entropies and log-sum-exps of a block.
void block_logprobs(const VocabShard& vs, const LogitBlocks::Block& blk, const SequenceBatch& batch,
                    std::vector<float>& logp, float* entropy, float* lse) {
  const int r0 = blk.r0;
  vocab_parallel::logprobs(vs, logp.data() + r0, entropy ? entropy + r0 : nullptr, lse ? lse + r0 : nullptr,
                           blk.logits, batch.targets.data() + r0, blk.n);
}

void check_rows(const LogitBlocks& logits, const SequenceBatch& batch, const char* who) {
  OPD_REQUIRE(logits.rows() == batch.B * batch.T, who, ": logits of ", logits.rows(), " rows for a batch of ", batch.B,
              " x ", batch.T);
}

void fill_student_sums(TokenSums& s, const SequenceBatch& batch, const std::vector<float>& logp,
                       const std::vector<float>& entropy) {
  for (size_t n = 0; n < batch.targets.size(); ++n) {
    if (batch.targets[n] < 0) continue;
    s.logp_student += logp[n];
    s.entropy += entropy[n];
    ++s.tokens;
  }
}

double sum_of(const std::vector<float>& v) {
  double total = 0;
  for (float x : v) total += x;
  return total;
}

}  // namespace

TokenSums distill_objective(LogitBlocks& logits, const SequenceBatch& batch, const TeacherScores& teacher,
                            const DistillOptions& o, const std::vector<float>& seq_reward_adv, float weight) {
  check_rows(logits, batch, "distill objective");
  const VocabShard& vs = logits.vocab();
  const int N = batch.B * batch.T;
  std::vector<float> logp(N), entropy(N), k(N), lse(N), pg_loss(N, 0.0f), kl_rows(N, 0.0f), scale(N);
  const std::vector<float>& logp_old = logp;  // the sampling policy's log-probs: see the header
  const std::vector<float> w = row_weights(batch, weight);
  std::vector<float> adv = broadcast_rows(batch, seq_reward_adv, static_cast<float>(o.reward_coef));
  for (int n = 0; n < N; ++n) scale[n] = static_cast<float>(o.kl_coef) * w[n];
  const bool sampled = o.kl.mode == KlSpec::kSampled;
  const bool with_reward = o.reward_coef != 0.0 && !seq_reward_adv.empty();
  // A discounted advantage reads later rows, which may lie in later blocks: their log-probs first.
  const bool advantage_first = sampled && o.kl_discount != 0.0 && logits.count() > 1;
  if (advantage_first) {
    for (int i = 0; i < logits.count(); ++i) block_logprobs(vs, logits.block(i), batch, logp, nullptr, nullptr);
    cpu::reverse_kl_sampled(k.data(), logp_old.data(), teacher.logp.data(), N);
    add_kl_advantage(adv, k, batch, o, 0, N);
  }
  for (int i = 0; i < logits.count(); ++i) {
    const LogitBlocks::Block blk = logits.block(i);
    const int r0 = blk.r0, n = blk.n;
    block_logprobs(vs, blk, batch, logp, entropy.data(), lse.data());
    cpu::reverse_kl_sampled(k.data() + r0, logp_old.data() + r0, teacher.logp.data() + r0, n);
    vocab_parallel::zero_rows(vs, blk.dlogits, n);
    if (sampled) {
      if (!advantage_first) add_kl_advantage(adv, k, batch, o, r0, r0 + n);
      add_policy_gradient(vs, blk, batch, pg_loss, lse, logp, logp_old, adv, w);
    } else {
      // Exact variants: the loss is kl_coef * mean_t KL_t, its logit gradient from the fused op.
      if (o.kl.mode == KlSpec::kFull) {
        vocab_parallel::reverse_kl_full(vs, kl_rows.data() + r0, blk.dlogits, blk.logits,
                                        teacher.full.data() + size_t(r0) * vs.size, scale.data() + r0, n);
      } else {
        const size_t K1 = size_t(o.kl.k) + 1;
        vocab_parallel::reverse_kl_topk(vs, kl_rows.data() + r0, blk.dlogits, blk.logits,
                                        teacher.topk_ids.data() + r0 * K1, teacher.topk_logp.data() + r0 * K1,
                                        scale.data() + r0, n, int(K1));
      }
      if (with_reward) add_policy_gradient(vs, blk, batch, pg_loss, lse, logp, logp_old, adv, w);
    }
    logits.backward(blk);
  }

  TokenSums s;
  fill_student_sums(s, batch, logp, entropy);
  for (int n = 0; n < N; ++n)
    if (batch.targets[n] >= 0) {
      s.kl += k[n];
      s.logp_teacher += teacher.logp[n];
    }
  if (sampled) {
    s.loss = sum_of(pg_loss);
    return s;
  }
  for (int n = 0; n < N; ++n)
    if (batch.targets[n] >= 0) {
      s.kl_exact += kl_rows[n];
      s.loss += scale[n] * kl_rows[n];
    }
  if (with_reward) s.loss += sum_of(pg_loss);
  return s;
}

TokenSums policy_gradient_objective(LogitBlocks& logits, const SequenceBatch& batch, const std::vector<float>& seq_adv,
                                    float weight) {
  check_rows(logits, batch, "policy-gradient objective");
  const VocabShard& vs = logits.vocab();
  const int N = batch.B * batch.T;
  std::vector<float> logp(N), entropy(N), lse(N), loss(N, 0.0f);
  const std::vector<float> adv = broadcast_rows(batch, seq_adv, 1.0f), w = row_weights(batch, weight);
  for (int i = 0; i < logits.count(); ++i) {
    const LogitBlocks::Block blk = logits.block(i);
    block_logprobs(vs, blk, batch, logp, entropy.data(), lse.data());
    vocab_parallel::zero_rows(vs, blk.dlogits, blk.n);
    add_policy_gradient(vs, blk, batch, loss, lse, logp, logp, adv, w);
    logits.backward(blk);
  }
  TokenSums s;
  fill_student_sums(s, batch, logp, entropy);
  s.loss = sum_of(loss);
  return s;
}

TokenSums sft_objective(LogitBlocks& logits, const SequenceBatch& batch, float weight) {
  check_rows(logits, batch, "sft objective");
  const VocabShard& vs = logits.vocab();
  const int N = batch.B * batch.T;
  std::vector<float> losses(N);
  for (int i = 0; i < logits.count(); ++i) {
    const LogitBlocks::Block blk = logits.block(i);
    vocab_parallel::cross_entropy(vs, losses.data() + blk.r0, blk.dlogits, blk.logits, batch.targets.data() + blk.r0,
                                  weight, blk.n);
    logits.backward(blk);
  }
  TokenSums s;
  for (int n = 0; n < N; ++n)
    if (batch.targets[n] >= 0) {
      s.loss += weight * losses[n];
      s.logp_student -= losses[n];
      ++s.tokens;
    }
  return s;
}

TokenSums distill_objective(float* dlogits, const float* logits, const SequenceBatch& batch, const VocabShard& vs,
                            const TeacherScores& teacher, const DistillOptions& o,
                            const std::vector<float>& seq_reward_adv, float weight) {
  RowsInMemory rows(vs, batch.B * batch.T, logits, dlogits);
  return distill_objective(rows, batch, teacher, o, seq_reward_adv, weight);
}

TokenSums policy_gradient_objective(float* dlogits, const float* logits, const SequenceBatch& batch,
                                    const VocabShard& vs, const std::vector<float>& seq_adv, float weight) {
  RowsInMemory rows(vs, batch.B * batch.T, logits, dlogits);
  return policy_gradient_objective(rows, batch, seq_adv, weight);
}

TokenSums sft_objective(float* dlogits, const float* logits, const SequenceBatch& batch, const VocabShard& vs,
                        float weight) {
  RowsInMemory rows(vs, batch.B * batch.T, logits, dlogits);
  return sft_objective(rows, batch, weight);
}

std::vector<float> group_advantages(const std::vector<float>& rewards, const std::vector<int>& groups,
                                    bool divide_std) {
  OPD_REQUIRE(rewards.size() == groups.size(), "group_advantages: ", rewards.size(), " rewards for ", groups.size(),
              " group ids");
  std::map<int, std::pair<double, int>> sum;
  for (size_t i = 0; i < rewards.size(); ++i) {
    sum[groups[i]].first += rewards[i];
    sum[groups[i]].second += 1;
  }
  std::map<int, double> sq;
  for (size_t i = 0; i < rewards.size(); ++i) {
    const double mean = sum[groups[i]].first / sum[groups[i]].second;
    sq[groups[i]] += (rewards[i] - mean) * (rewards[i] - mean);
  }
  std::vector<float> adv(rewards.size());
  for (size_t i = 0; i < rewards.size(); ++i) {
    const auto& [total, count] = sum[groups[i]];
    const double mean = total / count;
    double a = rewards[i] - mean;
    if (divide_std) a /= std::sqrt(sq[groups[i]] / count) + 1e-4;
    adv[i] = static_cast<float>(a);
  }
  return adv;
}

}  // namespace opd
