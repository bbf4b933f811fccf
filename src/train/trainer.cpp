#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "core/error.h"
#include "train/gpu_plan.h"
#include "train/interruptions.h"
#include "train/micro_batches.h"
#include "train/prompt_stream.h"
#include "train/rollout.h"
#include "train/run_checkpoints.h"
#include "train/run_eval.h"
#include "train/scoring.h"
#include "train/sft_data.h"
#include "train/step_log.h"
#include "train/step_sums.h"

namespace opd {

const char* method_name(Method m) {
  switch (m) {
    case Method::kSft: return "sft";
    case Method::kRl: return "rl";
    default: return "distill";
  }
}

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The prompts of one step: all of them (sequence groups index them) and this DP rank's share.
struct StepPrompts {
  std::vector<Example> all;
  std::vector<Example> mine;  // all[first, first + mine.size())
  int first = 0;
};

// The prompt index of each sequence.
std::vector<int> groups(const std::vector<Sequence>& seqs) {
  std::vector<int> g;
  for (const auto& s : seqs) g.push_back(s.group);
  return g;
}

// Where a step's time went, for its metrics line (seconds).
struct StepTimes {
  Clock::time_point start = Clock::now();
  double rollout = 0, update = 0, comm = 0;
};

// A training run: set up once (resume, devices, optimizer), then the steps of docs/ARCHITECTURE.md §5
// one after another, each followed by its evaluation, log and checkpoint.
class Trainer {
 public:
  Trainer(const TrainConfig& c, Transformer& student, Transformer* teacher, const std::vector<Example>& train_set,
          const std::vector<NamedExamples>& eval_sets, RunDir* run, Transformer* anchor, const TrainContext& ctx);
  json run();

 private:
  void check_inputs(const std::vector<Example>& train_set) const;
  void place_on_gpu(const std::vector<Example>& train_set, const std::vector<NamedExamples>& eval_sets);

  json train_step(int step);
  StepPrompts next_prompts();
  Rollout rollout(int step, const StepPrompts& prompts, MicroBatches& micro, StepSums& sums);
  Rollout sample_while_scoring(const StepPrompts& prompts, const GenerateOptions& gen, MicroBatches& micro);
  Rollout sft_targets(const StepPrompts& prompts) const;
  double update(int step, StepSums& sums, StepTimes& times);
  json step_metrics(int step, const StepSums& sums, double grad_norm, const StepTimes& times) const;
  void write_samples(int step, const StepPrompts& prompts, const Rollout& r, const MicroBatches& micro) const;

  void evaluate_start();
  void log(int step, json& line, Clock::time_point step_start);
  json stop(int signal);
  json finish();
  static bool due(int step, int every) { return every > 0 && step % every == 0; }
  bool eval_due(int step) const { return due(step, c_.eval_every) || step == c_.steps; }

  const TrainConfig& c_;
  Transformer& student_;
  Transformer* teacher_;
  Transformer* anchor_;  // scores the anchor prompts (distill --anchor-teacher; may be null)
  RunDir* run_;  // the writer's run directory; null on the other ranks
  TrainContext ctx_;
  const std::string name_, run_path_;
  Communicator* dp_;  // null without data parallelism
  Communicator* tp_;  // null without tensor parallelism
  // The student samples (distill, rl); group-relative advantages need every reward of a step first.
  const bool rollouts_, needs_all_rewards_;
  const Clock::time_point run_start_ = Clock::now();

  PromptStream prompts_;
  ColocatedScoring colocated_;
  ScoringClient* scorer_;  // the teacher's scores: dedicated ranks, colocated, or none
  MicroBatchScoring scoring_;
  RunState state_;
  RunCheckpoints checkpoints_;
  RunEvaluation evaluation_;
  Progress progress_;
  std::optional<AdamW> opt_;  // made once the student is on its device
};

Trainer::Trainer(const TrainConfig& c, Transformer& student, Transformer* teacher,
                 const std::vector<Example>& train_set, const std::vector<NamedExamples>& eval_sets, RunDir* run,
                 Transformer* anchor, const TrainContext& ctx)
    : c_(c), student_(student), teacher_(teacher), anchor_(anchor), run_(run), ctx_(ctx),
      name_(method_name(c.method)), run_path_(run ? run->path() : ctx.run_path),
      dp_(ctx.dp && ctx.dp->size() > 1 ? ctx.dp : nullptr), tp_(student.tp()),
      rollouts_(c.method != Method::kSft),
      needs_all_rewards_(c.method == Method::kRl || (c.method == Method::kDistill && c.distill.reward_coef != 0)),
      prompts_(train_set, c.seed), colocated_(teacher ? *teacher : student, c.shared_prefix),
      scorer_(ctx.remote_teacher ? ctx.remote_teacher : teacher ? &colocated_ : nullptr),
      checkpoints_(c, run, run_path_, tp_, dp_, name_),
      evaluation_(c, eval_sets, student, scorer_, dp_), progress_(name_, c.steps, c.log_jsonl) {
  check_inputs(train_set);
  state_.summary = {{"command", name_}, {"label", c.label.empty() ? name_ : c.label}, {"run_dir", run_path_},
                    {"steps_planned", c.steps}, {"prompts_per_step", c.prompts_per_step},
                    {"samples_per_prompt", c.samples_per_prompt}};
  if (c.target_accuracy > 0) state_.summary["target_accuracy"] = c.target_accuracy;
  if (c.skipped_long_prompts > 0) state_.summary["skipped_long_prompts"] = c.skipped_long_prompts;

  // The parameters go to the device as they are on the host, so they are restored first; the
  // optimizer is made for the model where it now lives, then given its restored moments.
  checkpoints_.resume(student, state_, prompts_);
  if (c.gpu) place_on_gpu(train_set, eval_sets);
  OptimizerOptions opt = c.opt;
  opt.total_steps = c.steps;
  opt_.emplace(student, opt);
  checkpoints_.restore_optimizer(*opt_);

  // Not under TP: two groups' collectives in flight at once on one GPU may be scheduled in
  // different orders on different ranks and wait for each other.
  const bool prefetch = !ctx.remote_teacher && teacher && teacher != &student && teacher->on_gpu() && !teacher->tp() &&
                        !c.shared_prefix;
  scoring_ = {scorer_, anchor_, prefetch};
}

void Trainer::check_inputs(const std::vector<Example>& train_set) const {
  OPD_REQUIRE(!train_set.empty(), "training data: no examples");
  ScoringClient* remote = ctx_.remote_teacher;
  OPD_REQUIRE(c_.method != Method::kDistill || teacher_ || remote, "distill needs a teacher (--teacher)");
  OPD_REQUIRE(!remote || (c_.method == Method::kDistill && !anchor_),
              "dedicated teacher ranks serve distill without --anchor-teacher only (use --teacher-ranks 0)");
  OPD_REQUIRE(ctx_.writer == (run_ != nullptr), "train: the writer rank, and only it, needs the run directory");
  const int dp_size = dp_ ? dp_->size() : 1;
  OPD_REQUIRE(c_.prompts_per_step >= dp_size, "--prompts-per-step = ", c_.prompts_per_step,
              " leaves a data-parallel rank without prompts (dp = ", dp_size, ")");
  OPD_REQUIRE(!c_.sft_from_teacher || teacher_, "sft --from-teacher needs a teacher (--teacher)");
  check_schedule(c_.opt);
}

// One GPU per rank, memory planned up front (train/gpu_plan.h): the student, and the teachers
// that run on this rank.
void Trainer::place_on_gpu(const std::vector<Example>& train_set, const std::vector<NamedExamples>& eval_sets) {
  const int seq = planned_sequence(student_.tokenizer(), student_.config().max_seq, c_, train_set, eval_sets);
  const auto plan = [&](bool train, bool samples) { return gpu_plan(c_, seq, train, samples); };
  const std::string who = str("rank ", ctx_.world_rank);
  student_.use_gpu(plan(true, true), who + " (student)");
  if (run_) std::fputs(student_.gpu_memory_report(str("[", name_, "] student device memory:")).c_str(), stderr);
  for (Transformer* t : {teacher_, anchor_})
    if (t && t != &student_ && !t->on_gpu()) {
      t->use_gpu(plan(false, c_.sft_from_teacher), who + " (colocated teacher)");
      if (run_) std::fputs(t->gpu_memory_report(str("[", name_, "] teacher device memory:")).c_str(), stderr);
    }
}

// The run: where the student starts, then step after step, each evaluated, logged and
// checkpointed when due; a stop signal checkpoints and ends the run at the next step boundary.
json Trainer::run() {
  if (state_.step == 0) evaluate_start();
  const StopSignals stop_signals;
  for (int step = state_.step + 1; step <= c_.steps; ++step) {
    const auto start = Clock::now();
    json line = train_step(step);
    const bool reached = eval_due(step) && evaluation_.run(step, line, state_);
    log(step, line, start);
    // Checkpoint when due, and when a stop signal reached any student rank: then the run ends.
    drill_end_of_step(step, ctx_.world_rank);
    const int signal = stop_signals.vote(tp_, dp_);
    if (due(step, c_.save_every) || signal) checkpoints_.save(student_, *opt_, state_, prompts_.cursor());
    if (signal) return stop(signal);
    if (reached && c_.stop_at_target) break;
  }
  return finish();
}

// One step (docs/ARCHITECTURE.md §5) on this rank's share of its prompts: rollout -> score -> advantage
// -> update. Returns the step's metrics.
json Trainer::train_step(int step) {
  StepTimes times;
  const StepPrompts prompts = next_prompts();
  student_.zero_grad();
  StepSums sums;
  MicroBatches micro(c_, student_, scoring_, prompts.all, sums);

  // 1. Rollout (with dedicated teacher ranks, 2-4 run meanwhile on the micro-batches scored already).
  const Rollout r = rollout(step, prompts, micro, sums);
  times.rollout = since(times.start) - micro.train_seconds();
  // 3. Advantage: group-relative rewards need every reward of the step before the first micro-batch.
  if (needs_all_rewards_)
    micro.set_advantages(group_advantages(r.rewards, groups(r.seqs), c_.method == Method::kRl && c_.grpo_std));
  // 2-4. Score, advantage and gradient of every micro-batch not trained on yet.
  micro.train_rest(r.seqs);
  const auto tail_start = Clock::now();
  drill_mid_step(step, ctx_.world_rank, sums.tokens.loss);
  const double teacher_wait = micro.add_teacher_usage();
  // 4. Update.
  const double grad_norm = update(step, sums, times);
  times.update = micro.train_seconds() + since(tail_start) - teacher_wait;

  state_.add_step(step, sums);
  write_samples(step, prompts, r, micro);
  return step_metrics(step, sums, grad_norm, times);
}

// This DP rank's share of the step's prompts; sequence groups stay step-wide prompt indices.
StepPrompts Trainer::next_prompts() {
  StepPrompts p;
  p.all = prompts_.next(c_.prompts_per_step);
  const auto [first, last] =
      contiguous_share(static_cast<int>(p.all.size()), dp_ ? dp_->size() : 1, dp_ ? dp_->rank() : 0);
  p.mine.assign(p.all.begin() + first, p.all.begin() + last);
  p.first = first;
  return p;
}

// 1. The sequences this rank trains on: the student's own samples (distill, rl), the teacher's
// (sft --from-teacher) or the given completions (sft).
Rollout Trainer::rollout(int step, const StepPrompts& prompts, MicroBatches& micro, StepSums& sums) {
  Rollout r;
  if (rollouts_ || c_.sft_from_teacher) {
    GenerateOptions gen = c_.gen;
    gen.sampling.step = static_cast<uint32_t>(step);
    if (ctx_.remote_teacher)
      r = sample_while_scoring(prompts, gen, micro);
    else
      r = sample_rollouts(rollouts_ ? student_ : *teacher_, prompts.mine, c_.samples_per_prompt, gen, c_.gen_batch,
                          0, -1, prompts.first);
    (rollouts_ ? sums.flops.sample : sums.flops.teacher_gen) += r.flops;
    sums.add_rollout(r);
  } else {
    r = sft_targets(prompts);
  }
  sums.add_sequences(r.seqs, c_.all_tokens);
  return r;
}

// Dedicated teacher ranks (distill): each micro-batch goes to a teacher replica as soon as it is
// sampled, the teacher scores it while the next one is sampled, and a micro-batch whose scores
// are back is trained on before sampling goes on.
Rollout Trainer::sample_while_scoring(const StepPrompts& prompts, const GenerateOptions& gen, MicroBatches& micro) {
  Rollout r;
  const int n = static_cast<int>(prompts.mine.size()) * c_.samples_per_prompt;
  for (int first = 0; first < n; first += c_.micro_batch) {
    append_rollout(r, sample_rollouts(student_, prompts.mine, c_.samples_per_prompt, gen, c_.gen_batch, first,
                                      std::min(n, first + c_.micro_batch), prompts.first));
    micro.submit(r.seqs);
    if (!needs_all_rewards_) micro.train_ready(r.seqs);
  }
  return r;
}

// SFT on given completions: each prompt with its completion and an EOS, and the completion's
// no-loss spans as a loss mask (train/sft_data.h).
Rollout Trainer::sft_targets(const StepPrompts& prompts) const {
  Rollout r;
  for (size_t i = 0; i < prompts.mine.size(); ++i) {
    const Example& e = prompts.mine[i];
    OPD_REQUIRE(!e.completion.empty(), "sft: example with prompt '", e.prompt,
                "' has no completion (use --from-teacher to sample one)");
    r.seqs.push_back(sft_sequence(student_.tokenizer(), e, prompts.first + static_cast<int>(i)));
    r.completions.push_back(e.completion);
  }
  return r;
}

// 4. Update: gradients and the step's sums added up over the DP group (every rank then holds the
// gradient one process would have computed on the whole step), then one AdamW step in which every
// trained token of the step weighs the same. Returns the gradient norm.
double Trainer::update(int step, StepSums& sums, StepTimes& times) {
  const auto comm_start = Clock::now();
  student_.reduce_partial_grads();
  if (dp_) student_.all_reduce_grads(ctx_.dp_device ? *ctx_.dp_device : *dp_);
  sums.reduce(dp_);
  times.comm = since(comm_start);  // includes waiting for the slowest rank
  OPD_REQUIRE(sums.trained_tokens > 0, "step ", step, ": no tokens to train on");
  OPD_REQUIRE(std::isfinite(sums.loss()), "step ", step, ": the loss is ", sums.loss(),
              " (NaN or Inf); stopping before the update so the last saved model stays good");
  return opt_->step(step, 1.0 / sums.trained_tokens);
}

json Trainer::step_metrics(int step, const StepSums& sums, double grad_norm, const StepTimes& times) const {
  json line = {{"step", step}, {"samples", state_.samples}, {"tokens", state_.tokens}};
  add_step_metrics(line, sums, c_, rollouts_ || c_.sft_from_teacher);
  line["grad_norm"] = grad_norm;
  line["lr"] = opt_->lr_at(step);
  const int dp_size = dp_ ? dp_->size() : 1;
  const double teacher_busy = sums.teacher_busy / dp_size, teacher_wait = sums.teacher_wait / dp_size;
  line["time"]["rollout"] = times.rollout;
  line["time"]["score"] = teacher_busy;
  line["time"]["wait_teacher"] = teacher_wait;
  line["time"]["update"] = times.update;
  if (dp_) line["time"]["comm"] = times.comm;
  if (teacher_busy > 0) line["overlap"] = 1.0 - teacher_wait / teacher_busy;
  line["tokens_per_s"] = sums.seq_tokens / since(times.start);
  return line;
}

// The first few sequences, with per-token log-probs, at the steps that evaluate (and the first);
// the writer's sequences are the step's first.
void Trainer::write_samples(int step, const StepPrompts& prompts, const Rollout& r, const MicroBatches& micro) const {
  if (run_ && (step == 1 || eval_due(step)) && c_.samples_to_log > 0)
    run_->write_samples(step, sample_rows(prompts.all, r, micro.teacher_logp(), c_.samples_to_log));
}

// Step 0: where the student starts.
void Trainer::evaluate_start() {
  json line = {{"step", 0}, {"samples", 0}, {"tokens", 0}};
  evaluation_.run(0, line, state_);
  line["flops"] = state_.flops.to_json();
  if (!run_) return;
  run_->log_metrics(line);
  if (line.contains("eval")) std::fprintf(stderr, "[%s] step 0: eval %s\n", name_.c_str(), line["eval"].dump().c_str());
}

// The step's line into metrics.jsonl, and its progress line on stderr.
void Trainer::log(int step, json& line, Clock::time_point start) {
  line["time"]["step"] = since(start);
  line["flops"] = state_.flops.to_json();
  if (!run_) return;
  run_->log_metrics(line);
  progress_.report(step, progress_fields(line), line, line.contains("eval"));
}

// A stop signal: the run was checkpointed after its last step and ends, to be requeued.
json Trainer::stop(int signal) {
  if (run_)
    std::fprintf(stderr, "[%s] signal %d: checkpointed step %d; exiting with code %d so the job can be requeued\n",
                 name_.c_str(), signal, state_.step, kExitCheckpointed);
  state_.summary["preempted"] = true;
  state_.close_summary(since(run_start_));
  if (run_) run_->write_summary(state_.summary);
  return state_.summary;
}

json Trainer::finish() {
  const std::string final_model = checkpoints_.save_final(student_, state_.step);
  state_.close_summary(since(run_start_));
  state_.summary["final_model"] = final_model;
  if (run_) run_->write_summary(state_.summary);
  return state_.summary;
}

}  // namespace

json train(const TrainConfig& c, Transformer& student, Transformer* teacher, const std::vector<Example>& train_set,
           const std::vector<NamedExamples>& eval_sets, RunDir* run, Transformer* anchor, const TrainContext& ctx) {
  return Trainer(c, student, teacher, train_set, eval_sets, run, anchor, ctx).run();
}

}  // namespace opd
