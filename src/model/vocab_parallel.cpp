#include "model/vocab_parallel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/logprobs.h"
#include "kernels/cpu/reverse_kl.h"
#include "model/vocab_rows_gpu.h"

namespace opd::vocab_parallel {

namespace {

// Every rank's [N] array, shard r in block r.
template <typename T>
std::vector<T> gather(Communicator& tp, const T* mine, size_t n) {
  std::vector<T> all(n * tp.size());
  tp.all_gather(mine, n * sizeof(T), all.data());
  return all;
}

// The per-shard ops where the rows live: the CPU ops, or with rows on the GPU their CUDA twins
// (model/vocab_rows_gpu.h, which stage the [N]-sized host arrays). The split algorithm below calls
// these for everything that reads or writes rows, so it is one algorithm for both.
namespace shard_op {

void stats(const VocabShard& vs, float* mx, float* se, float* tl, const float* logits, const int* targets, int N) {
  if (vs.device) return vocab_rows_gpu::logprobs_shard_stats(vs, mx, se, tl, logits, targets, N);
  cpu::logprobs_shard_stats(mx, se, tl, logits, targets, N, vs.size, vs.begin);
}

void entropy(const VocabShard& vs, float* out, const float* logits, const float* lse, int N) {
  if (vs.device) return vocab_rows_gpu::entropy_shard(vs, out, logits, lse, N);
  cpu::entropy_shard(out, logits, lse, N, vs.size);
}

void logprobs_backward(const VocabShard& vs, float* dlogits, const float* dlogp, const float* logits,
                       const float* lse, const int* targets, int N) {
  if (vs.device) return vocab_rows_gpu::logprobs_backward_shard(vs, dlogits, dlogp, logits, lse, targets, N);
  cpu::logprobs_backward_shard(dlogits, dlogp, logits, lse, targets, N, vs.size, vs.begin);
}

void log_softmax(const VocabShard& vs, float* out, const float* logits, const float* lse, int N) {
  if (vs.device) return vocab_rows_gpu::log_softmax_shard(vs, out, logits, lse, N);
  cpu::log_softmax_shard(out, logits, lse, N, vs.size);
}

void topk_candidates(const VocabShard& vs, int* ids, float* logp, const float* logits, const float* lse, int N,
                     int K) {
  if (vs.device) return vocab_rows_gpu::topk_shard_candidates(vs, ids, logp, logits, lse, N, K);
  cpu::topk_shard_candidates(ids, logp, logits, lse, N, vs.size, vs.begin, K);
}

// teacher_rows: where the rows live (vocab_rows_gpu::TeacherRows).
void kl_full_partial(const VocabShard& vs, float* partial, const float* logits, const float* lse,
                     const float* teacher_rows, int N) {
  if (vs.device) return vocab_rows_gpu::reverse_kl_full_shard_partial(vs, partial, logits, lse, teacher_rows, N);
  cpu::reverse_kl_full_shard_partial(partial, logits, lse, teacher_rows, N, vs.size);
}

void kl_full_grad(const VocabShard& vs, float* dlogits, const float* logits, const float* lse,
                  const float* teacher_rows, const float* kl, const float* scale, int N) {
  if (vs.device)
    return vocab_rows_gpu::reverse_kl_full_shard_grad(vs, dlogits, logits, lse, teacher_rows, kl, scale, N);
  cpu::reverse_kl_full_shard_grad(dlogits, logits, lse, teacher_rows, kl, scale, N, vs.size);
}

void kl_topk_partial(const VocabShard& vs, float* zs, float* a, const float* logits, const float* lse, const int* ids,
                     const float* logp_teacher, int N, int K1) {
  if (vs.device)
    return vocab_rows_gpu::reverse_kl_topk_shard_partial(vs, zs, a, logits, lse, ids, logp_teacher, N, K1);
  cpu::reverse_kl_topk_shard_partial(zs, a, logits, lse, ids, logp_teacher, N, vs.size, vs.begin, K1);
}

void kl_topk_grad(const VocabShard& vs, float* dlogits, const float* logits, const float* lse, const float* zs,
                  const int* ids, const float* logp_teacher, const float* kl, const float* scale, int N, int K1) {
  if (vs.device)
    return vocab_rows_gpu::reverse_kl_topk_shard_grad(vs, dlogits, logits, lse, zs, ids, logp_teacher, kl, scale, N,
                                                      K1);
  cpu::reverse_kl_topk_shard_grad(dlogits, logits, lse, zs, ids, logp_teacher, kl, scale, N, vs.size, vs.begin, K1);
}

}  // namespace shard_op

// Per row of a split vocabulary: log-sum-exp (and the target's log-prob when targets is given).
void row_lse(const VocabShard& vs, float* lse, float* logp, const float* logits, const int* targets, int N) {
  std::vector<int> none;
  if (!targets) {
    none.assign(N, -1);
    targets = none.data();
  }
  std::vector<float> mx(N), se(N), tl(N), lp(N);
  shard_op::stats(vs, mx.data(), se.data(), tl.data(), logits, targets, N);
  Communicator& tp = *vs.tp;
  const auto amx = gather(tp, mx.data(), N), ase = gather(tp, se.data(), N), atl = gather(tp, tl.data(), N);
  cpu::combine_shard_stats(logp ? logp : lp.data(), lse, amx.data(), ase.data(), atl.data(), targets, tp.size(), N);
}

// Top-p alone: bisects per row for a probability threshold t such that the tokens with prob >= t,
// over all shards, still hold top_p of the mass (with a margin for the order of the additions), and
// cuts each shard's candidates to those. Every token of the nucleus has prob >= t, so the merge
// finds the same nucleus from O(nucleus) candidates instead of, on a flat row, whole shards.
void cut_to_nucleus(Communicator& tp, std::vector<int>& count, const std::vector<float>& prob,
                    const std::vector<double>& total, int N, int Vl, float top_p) {
  std::vector<double> prefix(size_t(N) * Vl), need(N), lo(N, 0.0), hi(N, 1.0), mid(N), mass(N);
  std::vector<int> above(N);
  cpu::candidate_prefix_mass(prefix.data(), prob.data(), count.data(), N, Vl);
  for (int n = 0; n < N; ++n) need[n] = double(top_p) * total[n] * (1.0 + 1e-9);
  for (int round = 0; round < 48; ++round) {  // probabilities lie in (0, 1]: 48 halvings reach 4e-15
    for (int n = 0; n < N; ++n) mid[n] = 0.5 * (lo[n] + hi[n]);
    cpu::candidate_mass_above(mass.data(), above.data(), prob.data(), prefix.data(), count.data(), mid.data(), N, Vl);
    tp.all_reduce(mass.data(), N, ReduceOp::kSum);
    for (int n = 0; n < N; ++n) (mass[n] >= need[n] ? lo[n] : hi[n]) = mid[n];
  }
  cpu::candidate_mass_above(mass.data(), above.data(), prob.data(), prefix.data(), count.data(), lo.data(), N, Vl);
  for (int n = 0; n < N; ++n)
    if (need[n] <= total[n]) count[n] = above[n];  // else (top_p within 1e-9 of 1) keep every candidate
}

}  // namespace

void zero_rows(const VocabShard& vs, float* rows, int N) {
  if (vs.device) return vocab_rows_gpu::zero_rows(vs, rows, N);
  std::fill(rows, rows + size_t(N) * vs.size, 0.0f);
}

void logprobs(const VocabShard& vs, float* logp, float* entropy, float* lse, const float* logits, const int* targets,
              int N) {
  if (!vs.split()) {
    if (vs.device) return vocab_rows_gpu::logprobs(vs, logp, entropy, logits, targets, N);
    cpu::logprobs_forward(logp, entropy, logits, targets, N, vs.vocab);
    return;
  }
  std::vector<float> own_lse;
  if (!lse) {
    own_lse.resize(N);
    lse = own_lse.data();
  }
  row_lse(vs, lse, logp, logits, targets, N);
  if (!entropy) return;
  // -sum p log p, each shard its share (not lse - sum p x, which loses lse's digits in float).
  shard_op::entropy(vs, entropy, logits, lse, N);
  vs.tp->all_reduce(entropy, N, ReduceOp::kSum);
  for (int n = 0; n < N; ++n)
    if (targets[n] < 0) entropy[n] = 0.0f;
}

void logprobs_backward(const VocabShard& vs, float* dlogits, const float* dlogp, const float* logits,
                       const float* lse, const int* targets, int N) {
  if (!vs.split() && vs.device) return vocab_rows_gpu::logprobs_backward(vs, dlogits, dlogp, logits, targets, N);
  if (!vs.split()) return cpu::logprobs_backward(dlogits, dlogp, logits, targets, N, vs.vocab);
  OPD_REQUIRE(lse, "vocab_parallel::logprobs_backward: a split vocabulary needs the rows' log-sum-exp");
  shard_op::logprobs_backward(vs, dlogits, dlogp, logits, lse, targets, N);
}

void cross_entropy(const VocabShard& vs, float* losses, float* dlogits, const float* logits, const int* targets,
                   float scale, int N) {
  if (!vs.split() && vs.device) return vocab_rows_gpu::cross_entropy(vs, losses, dlogits, logits, targets, scale, N);
  if (!vs.split()) return cpu::cross_entropy_forward_backward(losses, dlogits, logits, targets, scale, N, vs.vocab);
  std::vector<float> logp(N), lse(N), dlogp(N);
  logprobs(vs, logp.data(), nullptr, lse.data(), logits, targets, N);
  for (int n = 0; n < N; ++n) {
    losses[n] = targets[n] < 0 ? 0.0f : -logp[n];
    dlogp[n] = -scale;
  }
  if (!dlogits) return;
  zero_rows(vs, dlogits, N);
  shard_op::logprobs_backward(vs, dlogits, dlogp.data(), logits, lse.data(), targets, N);
}

void log_softmax(const VocabShard& vs, float* out, const float* logits, int N) {
  if (!vs.split() && vs.device) return vocab_rows_gpu::log_softmax(vs, out, logits, N);
  if (!vs.split()) return cpu::log_softmax_forward(out, logits, N, vs.vocab);
  std::vector<float> lse(N);
  row_lse(vs, lse.data(), nullptr, logits, nullptr, N);
  shard_op::log_softmax(vs, out, logits, lse.data(), N);
}

void topk_logprobs(const VocabShard& vs, int* ids, float* logp, const float* logits, const int* extra,
                   bool skip_without_extra, int N, int K) {
  if (!vs.split() && vs.device)
    return vocab_rows_gpu::topk_logprobs(vs, ids, logp, logits, extra, skip_without_extra, N, K);
  if (!vs.split()) return cpu::topk_logprobs(ids, logp, logits, extra, skip_without_extra, N, vs.vocab, K);
  OPD_REQUIRE(K >= 1 && K <= vs.vocab, "topk_logprobs: K = ", K, " outside [1, vocab = ", vs.vocab, "]");
  std::vector<float> lse(N), extra_logp(N);
  logprobs(vs, extra_logp.data(), nullptr, lse.data(), logits, extra, N);
  std::vector<int> cand_ids(size_t(N) * K);
  std::vector<float> cand_logp(size_t(N) * K);
  shard_op::topk_candidates(vs, cand_ids.data(), cand_logp.data(), logits, lse.data(), N, K);
  const auto all_ids = gather(*vs.tp, cand_ids.data(), cand_ids.size());
  const auto all_logp = gather(*vs.tp, cand_logp.data(), cand_logp.size());
  cpu::topk_merge_shards(ids, logp, all_ids.data(), all_logp.data(), extra, extra_logp.data(), skip_without_extra,
                         vs.tp->size(), N, K);
}

void reverse_kl_full(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const float* logp_teacher,
                     const float* scale, int N) {
  if (!vs.split() && vs.device)
    return vocab_rows_gpu::reverse_kl_full(vs, kl, dlogits, logits, logp_teacher, scale, N);
  if (!vs.split()) return cpu::reverse_kl_full(kl, dlogits, logits, logp_teacher, scale, N, vs.vocab);
  std::vector<float> lse(N);
  row_lse(vs, lse.data(), nullptr, logits, nullptr, N);
  const vocab_rows_gpu::TeacherRows teacher(vs, logp_teacher, size_t(N) * vs.size);  // read twice, sent once
  shard_op::kl_full_partial(vs, kl, logits, lse.data(), teacher.get(), N);
  vs.tp->all_reduce(kl, N, ReduceOp::kSum);
  if (dlogits) shard_op::kl_full_grad(vs, dlogits, logits, lse.data(), teacher.get(), kl, scale, N);
}

void reverse_kl_topk(const VocabShard& vs, float* kl, float* dlogits, const float* logits, const int* ids,
                     const float* logp_teacher, const float* scale, int N, int K1) {
  if (!vs.split() && vs.device)
    return vocab_rows_gpu::reverse_kl_topk(vs, kl, dlogits, logits, ids, logp_teacher, scale, N, K1);
  if (!vs.split()) return cpu::reverse_kl_topk(kl, dlogits, logits, ids, logp_teacher, scale, N, vs.vocab, K1);
  std::vector<float> lse(N), za(2 * size_t(N));
  row_lse(vs, lse.data(), nullptr, logits, nullptr, N);
  float* zs = za.data();
  float* a = za.data() + N;
  shard_op::kl_topk_partial(vs, zs, a, logits, lse.data(), ids, logp_teacher, N, K1);
  vs.tp->all_reduce(za.data(), za.size(), ReduceOp::kSum);
  cpu::reverse_kl_topk_combine(kl, zs, a, N);
  if (dlogits)
    shard_op::kl_topk_grad(vs, dlogits, logits, lse.data(), zs, ids, logp_teacher, kl, scale, N, K1);
}

void sample(const VocabShard& vs, int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N,
            const cpu::SampleParams& p) {
  // Rows on the GPU, whole or split: the one place rows are gathered (see vocab_parallel.h).
  if (vs.device) return vocab_rows_gpu::sample(vs, tokens, logits, seq, pos, N, p);
  if (!vs.split()) return cpu::sample_tokens(tokens, logits, seq, pos, N, vs.vocab, p);
  Communicator& tp = *vs.tp;
  const int R = tp.size();
  if (p.temperature == 0.0f) {  // greedy: the largest logit, the lowest id on ties (shards are in id order)
    std::vector<int> id(N);
    std::vector<float> value(N);
    cpu::sample_shard_argmax(id.data(), value.data(), logits, N, vs.size, vs.begin);
    const auto ids = gather(tp, id.data(), N);
    const auto values = gather(tp, value.data(), N);
    for (int n = 0; n < N; ++n) {
      int best = 0;
      for (int r = 1; r < R; ++r)
        if (values[size_t(r) * N + n] > values[size_t(best) * N + n]) best = r;
      tokens[n] = ids[size_t(best) * N + n];
    }
    return;
  }
  std::vector<float> mx(N), u(N);
  cpu::sample_shard_max(mx.data(), logits, N, vs.size);
  tp.all_reduce(mx.data(), N, ReduceOp::kMax);
  std::vector<double> mass(N);
  cpu::sample_shard_mass(mass.data(), logits, mx.data(), N, vs.size, p.temperature);
  const auto masses = gather(tp, mass.data(), N);
  std::vector<double> total(N, 0.0), before(N, 0.0);
  for (int n = 0; n < N; ++n)
    for (int r = 0; r < R; ++r) {
      if (r < tp.rank()) before[n] += masses[size_t(r) * N + n];
      total[n] += masses[size_t(r) * N + n];
    }
  cpu::sample_uniforms(u.data(), seq, pos, N, p);

  if ((p.top_k <= 0 || p.top_k >= vs.vocab) && p.top_p >= 1.0f) {
    // Inverse CDF over the whole row: the shard whose stretch of the cumulative sum holds u * total.
    std::vector<double> target(N);
    for (int n = 0; n < N; ++n) target[n] = u[n] * total[n];
    std::vector<int> tok(2 * size_t(N));
    cpu::sample_shard_pick(tok.data(), tok.data() + N, logits, mx.data(), before.data(), target.data(), N, vs.size,
                           vs.begin, p.temperature);
    const auto all = gather(tp, tok.data(), tok.size());  // [R][token N | last N]
    for (int n = 0; n < N; ++n) {
      int chosen = -1, last = -1;
      for (int r = 0; r < R && chosen < 0; ++r) chosen = all[size_t(r) * 2 * N + n];
      for (int r = 0; r < R; ++r) last = std::max(last, all[size_t(r) * 2 * N + N + n]);
      tokens[n] = chosen >= 0 ? chosen : last;
    }
    return;
  }

  // Truncated: each shard's candidates that can be in the global top-k / nucleus, merged.
  std::vector<float> prob(size_t(N) * vs.size);
  std::vector<int> ids(size_t(N) * vs.size), count(N);
  cpu::sample_shard_candidates(prob.data(), ids.data(), count.data(), logits, mx.data(), total.data(), N, vs.size,
                               vs.begin, p);
  if (p.top_k <= 0 || p.top_k >= vs.vocab) cut_to_nucleus(tp, count, prob, total, N, vs.size, p.top_p);
  const int M = all_reduce_value(tp, int64_t(*std::max_element(count.begin(), count.end())), ReduceOp::kMax);
  std::vector<float> packed_prob(size_t(N) * M, 0.0f);
  std::vector<int> packed_ids(size_t(N) * M, -1);
  for (int n = 0; n < N; ++n) {
    std::copy_n(prob.data() + size_t(n) * vs.size, count[n], packed_prob.data() + size_t(n) * M);
    std::copy_n(ids.data() + size_t(n) * vs.size, count[n], packed_ids.data() + size_t(n) * M);
  }
  const auto all_prob = gather(tp, packed_prob.data(), packed_prob.size());
  const auto all_ids = gather(tp, packed_ids.data(), packed_ids.size());
  const auto all_count = gather(tp, count.data(), N);
  const int MR = M * R;
  std::vector<float> merged_prob(size_t(N) * MR);
  std::vector<int> merged_ids(size_t(N) * MR), merged_count(N, 0);
  for (int n = 0; n < N; ++n)
    for (int r = 0; r < R; ++r) {
      const int c = all_count[size_t(r) * N + n];
      const size_t from = (size_t(r) * N + n) * M, to = size_t(n) * MR + merged_count[n];
      std::copy_n(all_prob.data() + from, c, merged_prob.data() + to);
      std::copy_n(all_ids.data() + from, c, merged_ids.data() + to);
      merged_count[n] += c;
    }
  cpu::sample_from_candidates(tokens, merged_prob.data(), merged_ids.data(), merged_count.data(), MR, total.data(),
                              u.data(), N, vs.vocab, p);
}

}  // namespace opd::vocab_parallel
