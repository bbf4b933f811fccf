#include "train/run_eval.h"

#include <chrono>
#include <cmath>
#include <string>

#include "train/prompt_stream.h"

namespace opd {

namespace {

// The mean of the last `window` evaluations of the target's metric (a window of 1: this one); -1
// until there are that many. The window lives in the summary, so a resumed run keeps it.
double target_window_mean(json& summary, const json& value, int window) {
  if (window <= 1) return value.get<double>();
  json& recent = summary["target_window"];
  recent.push_back(value);
  if (recent.size() > size_t(window)) recent.erase(recent.begin());
  if (recent.size() < size_t(window)) return -1;
  double sum = 0;
  for (const json& v : recent) sum += v.get<double>();
  return sum / window;
}

// One set's line entry, and the summary's initial and final values (the primary set's also at the top).
// `sampled`: the set's sampled evaluation, as reasoning benchmarks score it (null without one).
void report(int step, const std::string& name, bool primary, const EvalResult& e, const json* sampled, json& line,
            json& summary) {
  json r = {{"accuracy", e.accuracy}, {"length", e.mean_length}};
  const bool has_kl = !std::isnan(e.kl);
  if (has_kl) r["kl"] = e.kl;
  if (sampled) r.update(*sampled);
  line["eval"][name] = r;
  if (step == 0) summary["eval_initial"][name] = r;
  summary["eval_final"][name] = r;
  if (!primary) return;
  line["eval_accuracy"] = e.accuracy;
  if (has_kl) line["eval_kl"] = e.kl;
  if (step == 0) summary["eval_accuracy_initial"] = e.accuracy;
  summary["eval_accuracy_final"] = e.accuracy;
  if (sampled) {
    line["eval_accuracy_sampled"] = r["accuracy_sampled"];
    if (step == 0) summary["eval_accuracy_sampled_initial"] = r["accuracy_sampled"];
    summary["eval_accuracy_sampled_final"] = r["accuracy_sampled"];
  }
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
  sampled_options_ = config.eval_samples;  // its seed is the run's (cli/train_inputs.cpp)
}

bool RunEvaluation::run(int step, json& line, RunState& state) {
  if (sets_.empty()) return false;
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < sets_.size(); ++i) {
    const EvalResult e = evaluate_set(sets_[i].examples, teacher_, options_);
    state.flops.eval += e.flops;
    json sampled;
    if (c_.eval_samples.samples > 0) {
      const EvalResult es = evaluate_set(sets_[i].examples, nullptr, sampled_options_);
      state.flops.eval += es.flops;
      sampled = sampled_report(es, sampled_options_);
    }
    report(step, sets_[i].name, i == 0, e, sampled.is_null() ? nullptr : &sampled, line, state.summary);
  }
  line["time"]["eval"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return reached_target(step, line, state);
}

EvalResult RunEvaluation::evaluate_set(const std::vector<Example>& examples, ScoringClient* teacher,
                                       const EvalOptions& options) {
  // Sharded over DP: each rank evaluates a contiguous slice, the sums are added up.
  const auto [first, last] = contiguous_share(static_cast<int>(examples.size()), dp_ ? dp_->size() : 1,
                                              dp_ ? dp_->rank() : 0);
  const std::vector<Example> slice(examples.begin() + first, examples.begin() + last);
  EvalResult e = evaluate(student_, teacher, slice, options);
  if (dp_) all_reduce_eval(e, *dp_);
  return e;
}

bool RunEvaluation::reached_target(int step, const json& line, RunState& state) const {
  json& summary = state.summary;
  if (c_.target_accuracy <= 0 || summary.contains("target_reached_step")) return false;
  const char* metric = c_.target_sampled ? "eval_accuracy_sampled" : "eval_accuracy";
  if (target_window_mean(summary, line[metric], c_.target_window) < c_.target_accuracy) return false;
  summary["target_reached_step"] = step;
  summary["samples_to_target"] = state.samples;
  summary["flops_to_target"] = state.flops.total();
  summary["flops_to_target_without_teacher_gen"] = state.flops.total() - state.flops.teacher_gen;
  return true;
}

}  // namespace opd
