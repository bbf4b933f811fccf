#include "train/step_sums.h"

#include <numeric>
#include <type_traits>

namespace opd {

Flops& Flops::operator+=(const Flops& o) {
  sample += o.sample;
  score += o.score;
  train += o.train;
  teacher_gen += o.teacher_gen;
  eval += o.eval;
  return *this;
}

json Flops::to_json() const {
  return {{"sample", sample}, {"score", score}, {"train", train}, {"teacher_gen", teacher_gen}, {"eval", eval},
          {"total", total()}};
}

Flops Flops::from_json(const json& j) {
  return {j.at("sample").get<double>(), j.at("score").get<double>(), j.at("train").get<double>(),
          j.at("teacher_gen").get<double>(), j.at("eval").get<double>()};
}

double real_tokens(const std::vector<Sequence>& seqs) {
  double n = 0;
  for (const auto& s : seqs) n += s.prompt.size() + s.completion.size();
  return n;
}

void StepSums::add_rollout(const Rollout& r) {
  truncated += r.truncated;
  completion_tokens += r.completion_tokens;
  reward += std::accumulate(r.rewards.begin(), r.rewards.end(), 0.0);
}

void StepSums::add_sequences(const std::vector<Sequence>& seqs, bool all_tokens) {
  sequences += seqs.size();
  seq_tokens += real_tokens(seqs);
  for (const auto& s : seqs)
    trained_tokens += (all_tokens ? s.prompt.size() - 1 : 0) + trained_completion_tokens(s);
}

namespace {

// Calls f on every field of the sums, always in the same order (the layout of the reduction).
template <typename F>
void for_each_field(StepSums& s, F&& f) {
  for (double* x : {&s.tokens.loss, &s.tokens.kl, &s.tokens.kl_exact, &s.tokens.logp_student, &s.tokens.logp_teacher,
                    &s.tokens.entropy})
    f(*x);
  f(s.tokens.tokens);
  for (double* x : {&s.flops.sample, &s.flops.score, &s.flops.train, &s.flops.teacher_gen, &s.flops.eval,
                    &s.truncated, &s.completion_tokens, &s.reward, &s.sequences, &s.seq_tokens, &s.trained_tokens,
                    &s.teacher_busy, &s.teacher_wait})
    f(*x);
}

}  // namespace

void StepSums::reduce(Communicator* dp) {
  if (!dp) return;
  std::vector<double> packed;
  for_each_field(*this, [&](auto& x) { packed.push_back(static_cast<double>(x)); });
  dp->all_reduce(packed.data(), packed.size(), ReduceOp::kSum);
  size_t i = 0;
  for_each_field(*this, [&](auto& x) { x = static_cast<std::decay_t<decltype(x)>>(packed[i++]); });
}

}  // namespace opd
