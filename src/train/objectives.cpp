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

// The importance-sampled policy-gradient term -(sum_t w_t A_t ratio_t), added into dlogits.
double add_policy_gradient(float* dlogits, const float* logits, const SequenceBatch& batch, const VocabShard& vs,
                           const std::vector<float>& lse, const std::vector<float>& logp,
                           const std::vector<float>& logp_old, const std::vector<float>& adv,
                           const std::vector<float>& w) {
  const int N = batch.B * batch.T;
  std::vector<float> loss(N), dlogp(N);
  cpu::policy_gradient_loss(loss.data(), dlogp.data(), logp.data(), logp_old.data(), adv.data(), w.data(), N);
  vocab_parallel::logprobs_backward(vs, dlogits, dlogp.data(), logits, lse.data(), batch.targets.data(), N);
  double total = 0;
  for (float l : loss) total += l;
  return total;
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

}  // namespace

TokenSums distill_objective(float* dlogits, const float* logits, const SequenceBatch& batch, const VocabShard& vs,
                            const TeacherScores& teacher, const DistillOptions& o,
                            const std::vector<float>& seq_reward_adv, float weight) {
  const int N = batch.B * batch.T;
  std::vector<float> logp(N), entropy(N), k(N), lse(N);
  vocab_parallel::logprobs(vs, logp.data(), entropy.data(), lse.data(), logits, batch.targets.data(), N);
  const std::vector<float>& logp_old = logp;  // the sampling policy's log-probs: see the header
  cpu::reverse_kl_sampled(k.data(), logp_old.data(), teacher.logp.data(), N);

  TokenSums s;
  fill_student_sums(s, batch, logp, entropy);
  for (int n = 0; n < N; ++n)
    if (batch.targets[n] >= 0) {
      s.kl += k[n];
      s.logp_teacher += teacher.logp[n];
    }

  const std::vector<float> w = row_weights(batch, weight);
  std::vector<float> adv = broadcast_rows(batch, seq_reward_adv, static_cast<float>(o.reward_coef));
  vocab_parallel::zero_rows(vs, dlogits, N);
  if (o.kl.mode == KlSpec::kSampled) {
    // A_t = -kl_coef * sum_{j >= t} gamma^(j - t) k_j, summed backwards within each completion.
    for (int b = 0; b < batch.B; ++b) {
      double run = 0;
      for (int t = batch.T - 1; t >= 0; --t) {
        const size_t n = size_t(b) * batch.T + t;
        if (batch.targets[n] < 0) continue;
        run = k[n] + o.kl_discount * run;
        adv[n] += static_cast<float>(-o.kl_coef * run);
      }
    }
    s.loss = add_policy_gradient(dlogits, logits, batch, vs, lse, logp, logp_old, adv, w);
    return s;
  }

  // Exact variants: the loss is kl_coef * mean_t KL_t, its logit gradient from the fused op.
  std::vector<float> scale(N), kl_rows(N);
  for (int n = 0; n < N; ++n) scale[n] = static_cast<float>(o.kl_coef) * w[n];
  if (o.kl.mode == KlSpec::kFull) {
    vocab_parallel::reverse_kl_full(vs, kl_rows.data(), dlogits, logits, teacher.full.data(), scale.data(), N);
  } else {
    vocab_parallel::reverse_kl_topk(vs, kl_rows.data(), dlogits, logits, teacher.topk_ids.data(),
                                    teacher.topk_logp.data(), scale.data(), N, o.kl.k + 1);
  }
  for (int n = 0; n < N; ++n)
    if (batch.targets[n] >= 0) {
      s.kl_exact += kl_rows[n];
      s.loss += scale[n] * kl_rows[n];
    }
  if (o.reward_coef != 0.0 && !seq_reward_adv.empty())
    s.loss += add_policy_gradient(dlogits, logits, batch, vs, lse, logp, logp_old, adv, w);
  return s;
}

TokenSums policy_gradient_objective(float* dlogits, const float* logits, const SequenceBatch& batch,
                                    const VocabShard& vs, const std::vector<float>& seq_adv, float weight) {
  const int N = batch.B * batch.T;
  std::vector<float> logp(N), entropy(N), lse(N);
  vocab_parallel::logprobs(vs, logp.data(), entropy.data(), lse.data(), logits, batch.targets.data(), N);
  TokenSums s;
  fill_student_sums(s, batch, logp, entropy);
  vocab_parallel::zero_rows(vs, dlogits, N);
  s.loss = add_policy_gradient(dlogits, logits, batch, vs, lse, logp, logp, broadcast_rows(batch, seq_adv, 1.0f),
                               row_weights(batch, weight));
  return s;
}

TokenSums sft_objective(float* dlogits, const float* logits, const SequenceBatch& batch, const VocabShard& vs,
                        float weight) {
  const int N = batch.B * batch.T;
  std::vector<float> losses(N);
  vocab_parallel::cross_entropy(vs, losses.data(), dlogits, logits, batch.targets.data(), weight, N);
  TokenSums s;
  for (int n = 0; n < N; ++n)
    if (batch.targets[n] >= 0) {
      s.loss += weight * losses[n];
      s.logp_student -= losses[n];
      ++s.tokens;
    }
  return s;
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
