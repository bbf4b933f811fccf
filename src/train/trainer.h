// The training loop shared by distill, sft and rl (docs/ARCHITECTURE.md §1): one step is
// rollout -> (teacher scoring) -> advantage -> update; only where the advantage or target
// comes from differs between the methods.
#pragma once
#include <string>
#include <vector>

#include "core/jsonl.h"
#include "parallel/communicator.h"
#include "model/generate.h"
#include "tasks/builtin.h"
#include "tasks/dataset.h"
#include "train/eval.h"
#include "train/objectives.h"
#include "train/optimizer.h"
#include "train/run_dir.h"

namespace opd {

enum class Method { kDistill, kSft, kRl };
const char* method_name(Method m);

struct TrainConfig {
  Method method = Method::kDistill;
  std::string label;
  int steps = 100;
  int prompts_per_step = 32;
  int samples_per_prompt = 4;
  int micro_batch = 64;    // sequences per forward/backward
  int gen_batch = 256;     // sequences generated together
  GenerateOptions gen;     // max_new_tokens and sampling (temperature, top-p, top-k, seed)
  DistillOptions distill;
  bool grpo_std = false;          // rl: divide advantages by the group's std
  bool sft_from_teacher = false;  // sft: completions sampled by the teacher (off-policy distillation)
  bool all_tokens = false;        // sft: train on every token (pretraining), not completions only
  OptimizerOptions opt;
  EvalOptions eval;
  // samples > 0: each evaluation also scores that many samples per problem at its temperature
  EvalOptions eval_samples = [] {
    EvalOptions o;
    o.samples = 0;
    o.temperature = 1.0f;
    return o;
  }();
  int eval_every = 10;            // 0: only before and after
  double target_accuracy = 0;     // > 0: report the first step that reaches it
  bool target_sampled = false;    // the target applies to the sampled accuracy (else the greedy one)
  int target_window = 1;          // reached when the mean of this many latest evaluations reaches it
  bool stop_at_target = false;
  int samples_to_log = 4;
  int save_every = 0;             // checkpoint every N steps (0: only on SIGUSR1 / SIGTERM)
  int keep_last = 3;              // checkpoints kept in the run directory
  std::string resume;             // "", "auto" (newest valid checkpoint of the run) or a checkpoint file
  std::string config_ini;         // the resolved configuration, stored in checkpoints
  bool log_jsonl = false;         // progress on stderr as JSON lines instead of text
  bool shared_prefix = false;     // distill: the teacher prefills each prompt once per group
  bool gpu = false;               // --device cuda: student and colocated teachers on this rank's GPU
  bool recompute = false;         // GPU path: keep only each layer's input for backward
  int head_rows = -1;             // the LM head's block in rows (kHeadRowsAuto -1, or 0: unfused; model/transformer.h)
  int skipped_long_prompts = 0;   // training examples left out for not fitting max_seq (--skip-long-prompts)
  uint64_t seed = 1;
};

// Exit code of a run stopped by SIGUSR1 or SIGTERM after writing a checkpoint: "requeue me".
inline constexpr int kExitCheckpointed = 75;

class ScoringClient;

// Where this rank sits when the run spans several (docs/ARCHITECTURE.md §4); the default is one process.
struct TrainContext {
  Communicator* dp = nullptr;               // the student's data-parallel group; null: no DP
  Communicator* dp_device = nullptr;        // the same group over device buffers (NCCL, --device cuda); null: dp
  Communicator* tp = nullptr;               // the student's tensor-parallel group (the model's own); null: no TP
  ScoringClient* remote_teacher = nullptr;  // dedicated teacher ranks (distill); null: colocated
  bool writer = true;                       // writes metrics, samples, checkpoints, the summary
  std::string run_path;                     // the run directory, for ranks without a RunDir
  int world_rank = 0;                       // for OPD_FAULT_RANK drills
};

// Runs the configured method; returns the summary it also writes to summary.json. Every eval set
// is evaluated at each evaluation and reported under "eval" by name; the first is the primary one
// ("eval_accuracy", "eval_kl", the target).
// distill: examples with source 1 are scored by `anchor` instead of `teacher` (may be null).
// On SIGUSR1 / SIGTERM it checkpoints at the next step boundary and returns a summary with
// "preempted": true.
// Data parallel (ctx.dp of size > 1): each DP rank samples and trains on its contiguous share of
// the step's prompts (randomness keyed by the step-wide sequence index), gradients are summed over
// the group with weights 1 / (trained tokens of the whole step), and every rank applies the same
// AdamW step: the same update as one process on the union batch, up to floating-point order.
// `run` is null on ranks that are not the writer.
json train(const TrainConfig& config, Transformer& student, Transformer* teacher, const std::vector<Example>& train_set,
           const std::vector<NamedExamples>& eval_sets, RunDir* run, Transformer* anchor = nullptr,
           const TrainContext& ctx = {});

}  // namespace opd
