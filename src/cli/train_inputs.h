// What a training command (distill, sft, rl) reads from its options before any model is loaded:
// the training configuration and the data, so that every rank (and --dry-run) reads them alike.
#pragma once
#include <string>
#include <vector>

#include "core/options.h"
#include "model/config.h"
#include "model/tokenizer.h"
#include "model/chat_template.h"
#include "tasks/builtin.h"
#include "tasks/dataset.h"
#include "train/trainer.h"

namespace opd::cli {

// Every TrainConfig field that comes from an option (the KL mode, which needs the student's
// vocabulary, is left to the caller). Errors name the option.
TrainConfig train_config(const po::variables_map& vm, Method method);

// Wraps every example's prompt in the chat template.
void apply_chat_template(ChatTemplate t, std::vector<Example>& examples);

// The training examples (--prompts, or --data for SFT, plus --anchor-prompts marked as source 1)
// and the evaluation sets, with the chat template (--template) applied to every prompt.
struct RunData {
  std::vector<Example> train;
  std::vector<NamedExamples> eval;
  ChatTemplate tmpl = ChatTemplate::kNone;
};
RunData load_run_data(const po::variables_map& vm, Method method);

// --dry-run --device cuda: each model's device memory as the run would plan it (from the models'
// shapes, the student's tokenizer and the data, without loading a weight), for one GPU per rank.
// `teacher` is null without a teacher; `colocated`: it shares the student's GPU. tp, teacher_tp:
// the degrees each model is split over (a colocated teacher is split like the student).
std::string gpu_plan_report(const po::variables_map& vm, Method method, const ModelConfig& student,
                            const Tokenizer& tok, const ModelConfig* teacher, bool colocated, int tp, int teacher_tp);

}  // namespace opd::cli
