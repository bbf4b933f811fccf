#include "train/run_eval.h"

#include <chrono>
#include <cmath>

#include "train/prompt_stream.h"

namespace opd {

namespace {

// The result of a whole set from each DP rank's result on its shard.
EvalResult sum_shards(Communicator& dp, const EvalResult& mine) {
  double v[6] = {double(mine.n), double(mine.correct), double(mine.completion_tokens), double(mine.kl_positions),
                 mine.kl_sum, mine.flops};
  dp.all_reduce(v, 6, ReduceOp::kSum);
  EvalResult shards;
  shards.n = int(v[0]);
  shards.correct = int(v[1]);
  shards.completion_tokens = int64_t(v[2]);
  shards.kl_positions = int64_t(v[3]);
  shards.kl_sum = v[4];
  shards.flops = v[5];
  EvalResult all;  // no KL without a teacher
  all.kl = std::isnan(mine.kl) ? std::nan("") : 0.0;
  merge_eval(all, shards);
  return all;
}

// One set's line entry, and the summary's initial and final values (the primary set's also at the top).
void report(int step, const std::string& name, bool primary, const EvalResult& e, json& line, json& summary) {
  json r = {{"accuracy", e.accuracy}, {"length", e.mean_length}};
  const bool has_kl = !std::isnan(e.kl);
  if (has_kl) r["kl"] = e.kl;
  line["eval"][name] = r;
  if (step == 0) summary["eval_initial"][name] = r;
  summary["eval_final"][name] = r;
  if (!primary) return;
  line["eval_accuracy"] = e.accuracy;
  if (has_kl) line["eval_kl"] = e.kl;
  if (step == 0) summary["eval_accuracy_initial"] = e.accuracy;
  summary["eval_accuracy_final"] = e.accuracy;
  if (has_kl) {
    if (step == 0) summary["eval_kl_initial"] = e.kl;
    summary["eval_kl_final"] = e.kl;
  }
}

}  // namespace

RunEvaluation::RunEvaluation(const TrainConfig& config, const std::vector<NamedExamples>& sets, Transformer& student,
                             ScoringClient* teacher, Communicator* dp)
    : c_(config), sets_(sets), student_(student), teacher_(teacher), dp_(dp), options_(config.eval) {
  options_.seed = config.seed;
  if (config.gpu) options_.score_batch = config.micro_batch;  // what the GPU plan holds
}

bool RunEvaluation::run(int step, json& line, RunState& state) {
  if (sets_.empty()) return false;
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < sets_.size(); ++i) {
    const EvalResult e = evaluate_set(sets_[i].examples);
    state.flops.eval += e.flops;
    report(step, sets_[i].name, i == 0, e, line, state.summary);
  }
  line["time"]["eval"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return reached_target(step, line, state);
}

EvalResult RunEvaluation::evaluate_set(const std::vector<Example>& examples) {
  // Sharded over DP: each rank evaluates a contiguous slice, the sums are added up.
  const auto [first, last] = contiguous_share(static_cast<int>(examples.size()), dp_ ? dp_->size() : 1,
                                              dp_ ? dp_->rank() : 0);
  const std::vector<Example> slice(examples.begin() + first, examples.begin() + last);
  const EvalResult mine = evaluate(student_, teacher_, slice, options_);
  return dp_ ? sum_shards(*dp_, mine) : mine;
}

bool RunEvaluation::reached_target(int step, const json& line, RunState& state) const {
  json& summary = state.summary;
  const bool first_time = c_.target_accuracy > 0 && line["eval_accuracy"].get<double>() >= c_.target_accuracy &&
                          !summary.contains("target_reached_step");
  if (!first_time) return false;
  summary["target_reached_step"] = step;
  summary["samples_to_target"] = state.samples;
  summary["flops_to_target"] = state.flops.total();
  summary["flops_to_target_without_teacher_gen"] = state.flops.total() - state.flops.teacher_gen;
  return true;
}

}  // namespace opd
