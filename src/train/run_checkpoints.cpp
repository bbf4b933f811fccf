#include "train/run_checkpoints.h"

#include <chrono>
#include <cstdio>
#include <optional>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/model_file.h"

namespace opd {

void RunState::add_step(int done, const StepSums& sums) {
  step = done;
  samples += static_cast<int64_t>(sums.sequences);
  tokens += static_cast<int64_t>(sums.seq_tokens);
  flops += sums.flops;
}

void RunState::close_summary(double seconds) {
  summary["steps"] = step;
  summary["samples"] = samples;
  summary["tokens"] = tokens;
  summary["flops"] = flops.to_json();
  summary["seconds"] = seconds;
}

RunCheckpoints::RunCheckpoints(const TrainConfig& config, RunDir* run, std::string run_path, Communicator* tp,
                               Communicator* dp, std::string name)
    : c_(config), run_(run), run_path_(std::move(run_path)), tp_(tp), dp_(dp), name_(std::move(name)) {}

void RunCheckpoints::resume(Transformer& student, RunState& state, PromptStream& prompts) {
  if (c_.resume.empty()) return;
  std::string from = c_.resume;
  std::optional<Checkpoint> ck = load(from);
  if (!ck) {
    OPD_REQUIRE(c_.resume == "auto", c_.resume, ": no checkpoint to resume from");
    if (!run_) return;
    std::fprintf(stderr, "[%s] --resume auto: no checkpoint in %s yet, starting fresh\n", name_.c_str(),
                 run_path_.c_str());
    run_->keep_metrics_through(-1);
    return;
  }
  restore_trained(*ck, student, from);  // the model, or a LoRA run's adapters (io/checkpoint.h)
  adam_m_ = std::move(ck->adam_m);
  adam_v_ = std::move(ck->adam_v);
  adam_updates_ = ck->adam_updates;
  restore_moments_ = true;
  prompts.seek(ck->state.data_cursor);
  state.step = static_cast<int>(ck->state.step);
  state.samples = ck->state.samples;
  state.tokens = ck->state.tokens;
  const json counters = json::parse(ck->state.counters);
  state.flops = Flops::from_json(counters.at("flops"));
  state.summary = counters.at("summary");
  if (!run_) return;
  run_->keep_metrics_through(ck->state.step);
  std::fprintf(stderr, "[%s] resuming from %s (step %lld)\n", name_.c_str(), from.c_str(),
               static_cast<long long>(ck->state.step));
}

std::optional<Checkpoint> RunCheckpoints::load(std::string& from) const {
  if (c_.resume != "auto") return load_checkpoint(c_.resume, tp_);
  std::vector<std::string> skipped;
  std::optional<Checkpoint> ck = newest_valid_checkpoint(run_path_, skipped, &from, tp_);
  for (const auto& why : skipped)
    if (run_) std::fprintf(stderr, "[%s] skipping a checkpoint: %s\n", name_.c_str(), why.c_str());
  return ck;
}

void RunCheckpoints::restore_optimizer(AdamW& opt) {
  if (!restore_moments_) return;
  opt.restore(std::move(adam_m_), std::move(adam_v_), adam_updates_);
  restore_moments_ = false;
}

void RunCheckpoints::sync_replicas(Transformer& student, const std::string& when) {
  student.sync_to_host();
  if (dp_)
    OPD_REQUIRE(same_on_all_ranks(*dp_, student.trainable_params().data(),
                                  student.trainable_params().size() * sizeof(float)),
                "data parallel: the student's parameters differ between DP replicas ", when);
}

void RunCheckpoints::save(Transformer& student, const AdamW& opt, const RunState& state, uint64_t data_cursor) {
  sync_replicas(student, str("at step ", state.step));
  // Every DP replica holds the same state: the writer's saves it, under TP each rank of its TP
  // group writing its shards into the one file.
  if (!holds_file()) return;
  char file[64];
  std::snprintf(file, sizeof(file), "checkpoints/step_%06d.h5", state.step);
  const TrainState st{state.step, state.samples, state.tokens, data_cursor,
                      json{{"flops", state.flops.to_json()}, {"summary", state.summary}}.dump()};
  const auto t0 = std::chrono::steady_clock::now();
  save_checkpoint(run_path_ + "/" + file, student, opt.m(), opt.v(), opt.updates(), st, c_.config_ini);
  if (!run_) return;
  prune_checkpoints(run_->path(), c_.keep_last);
  std::fprintf(stderr, "[%s] wrote %s in %.3f s\n", name_.c_str(), file,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

std::string RunCheckpoints::save_final(Transformer& student, int step) {
  // Every DP replica applied the same updates to the same parameters: a mismatch is a bug that
  // the writer's checkpoint would hide.
  sync_replicas(student, str("after step ", step));
  const std::string path = run_path_ + "/final.h5";
  if (holds_file()) save_model(path, student);
  return path;
}

}  // namespace opd
