// opd eval and opd sample: a model's accuracy on a task, and its completions with per-token
// log-probabilities under it and, given one, under a teacher.
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/runtime.h"
#include "cli/train_inputs.h"
#include "core/jsonl.h"
#include "io/model_file.h"
#include "model/chat_template.h"
#include "model/memory_plan.h"
#include "parallel/gpu_binding.h"
#include "parallel/mpi_communicator.h"
#include "tasks/builtin.h"
#include "train/eval.h"
#include "train/rollout.h"
#include "train/score.h"
#include "train/teacher.h"

namespace opd::cli {

namespace {
struct Loaded {
  std::unique_ptr<Transformer> model, teacher;
  ChatTemplate tmpl = ChatTemplate::kNone;
};

Loaded load_models(const po::variables_map& vm) {
  Loaded l;
  l.model = load_model(vm["model"].as<std::string>());
  l.model->set_forward_only();
  if (vm.count("teacher")) {
    l.teacher = load_model(vm["teacher"].as<std::string>());
    l.teacher->set_forward_only();
    check_same_tokenizer(*l.model, vm["model"].as<std::string>(), *l.teacher, vm["teacher"].as<std::string>());
  }
  l.tmpl = parse_chat_template(vm["template"].as<std::string>());
  check_chat_template(l.tmpl, l.model->tokenizer(), vm["model"].as<std::string>());
  return l;
}

// --device cuda: the model (sampling --batch sequences of at most `seq` tokens) and the teacher
// (scoring --micro-batch of them per forward) on this process's GPU, memory planned for that.
void place(Loaded& l, const po::variables_map& vm, int seq) {
  if (parse_device(vm["device"].as<std::string>()) == DeviceKind::kCpu) return;
  const int gpu = bind_gpu(this_node_rank(), 0, processor_name());
  MemoryPlanOptions plan;
  plan.batch = vm["micro-batch"].as<int>();
  plan.seq = seq;
  plan.kv_batch = vm["batch"].as<int>();
  plan.kv_capacity = seq;
  l.model->use_gpu(plan, str("the model on GPU ", gpu));
  if (!l.teacher) return;
  plan.kv_batch = plan.kv_capacity = 0;
  l.teacher->use_gpu(plan, str("the teacher on GPU ", gpu));
}

void add_model_options(po::options_description& d) {
  d.add_options()("model", po::value<std::string>()->required(), "model file (HDF5)")(
      "teacher", po::value<std::string>(), "a teacher model file, for log-probs / reverse KL under it")(
      "max-new-tokens", po::value<int>()->default_value(48)->notifier(in_range("max-new-tokens", 1, 1 << 20)),
      "longest completion")(
      "temperature", po::value<float>()->default_value(0.0f)->notifier(in_range("temperature", 0.0f, 100.0f)),
      "sampling temperature (0: greedy)")(
      "seed", po::value<uint64_t>()->default_value(1), "sampling seed")(
      "batch", po::value<int>()->default_value(256)->notifier(in_range("batch", 1, 1 << 20)),
      "sequences generated together")(
      "template", po::value<std::string>()->default_value("none"),
      "chat template around every prompt, for model and teacher alike: qwen3, llama3 or none")(
      "micro-batch", po::value<int>()->default_value(16)->notifier(in_range("micro-batch", 1, 1 << 20)),
      "sequences per forward when scoring (the teacher's log-probs and KL); with --device cuda what its memory is "
      "planned for");
  add_runtime_options(d);
  add_device_option(d);
}
}  // namespace

int eval(const Args& args) {
  const Command cmd{"eval",
                    "Accuracy (pass@1, greedy by default) of a model on prompts with answers; with --teacher also the "
                    "mean exact per-token reverse KL to it on the model's own completions.",
                    "opd eval --model M.h5 --eval eval.jsonl [--teacher T.h5]"};
  po::options_description opts("Evaluation");
  opts.add_options()("eval", po::value<std::string>(), "JSONL {prompt, answer}")(
      "task", po::value<std::string>(), "generated built-in sets instead, e.g. arith:general,arith:domain")(
      "n", po::value<int>()->default_value(0)->notifier(in_range("n", 0, 1 << 24)),
      "first N examples (0: all; --task: 200 problems)")(
      "task-seed", po::value<uint64_t>()->default_value(1000), "seed of the --task problems")(
      "samples", po::value<int>()->default_value(0)->notifier(in_range("samples", 0, 1 << 16)),
      "also the mean accuracy of N samples per problem at --sample-temperature, as reasoning benchmarks score "
      "(with erase-mark rates for arith chains); 0: only the --temperature pass")(
      "sample-temperature", po::value<float>()->default_value(1.0f)->notifier(in_range("sample-temperature", 1e-6f, 100.0f)),
      "temperature of the --samples")(
      "json", po::bool_switch(), "print the result as one JSON object");
  add_model_options(opts);
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  apply_runtime_options(vm);
  OPD_REQUIRE(vm.count("eval") != vm.count("task"), "opd eval: give --eval FILE or --task LIST (one of them)");
  Loaded l = load_models(vm);
  std::vector<NamedExamples> sets =
      eval_sets(vm.count("eval") ? vm["eval"].as<std::string>() : "", vm.count("task") ? vm["task"].as<std::string>() : "",
                vm["n"].as<int>(), vm["task-seed"].as<uint64_t>());
  for (auto& set : sets) {
    apply_chat_template(l.tmpl, set.examples);
    check_vocabulary(*l.model, set.examples);
    drop_long_examples(*l.model, set.examples, false, /*skip=*/false);  // refused at load, naming file:line
  }
  EvalOptions o;
  o.max_new_tokens = vm["max-new-tokens"].as<int>();
  o.temperature = vm["temperature"].as<float>();
  o.seed = vm["seed"].as<uint64_t>();
  o.batch = vm["batch"].as<int>();
  o.score_batch = vm["micro-batch"].as<int>();
  int seq = 1;
  for (const auto& set : sets) seq = std::max(seq, longest_sequence(l.model->tokenizer(), l.model->config().max_seq, set.examples, o.max_new_tokens, false));
  place(l, vm, seq);
  EvalOptions sampled = o;
  sampled.samples = vm["samples"].as<int>();
  sampled.temperature = vm["sample-temperature"].as<float>();
  json all = json::object();
  for (const auto& set : sets) {
    const EvalResult r = evaluate(*l.model, l.teacher.get(), set.examples, o);
    json j = {{"model", vm["model"].as<std::string>()}, {"set", set.name}, {"n", r.n}, {"accuracy", r.accuracy},
              {"temperature", o.temperature}, {"mean_completion_length", r.mean_length}};
    if (l.teacher) j["reverse_kl"] = r.kl;
    if (sampled.samples > 0) j.update(sampled_report(evaluate(*l.model, static_cast<Transformer*>(nullptr), set.examples, sampled), sampled));
    if (vm["json"].as<bool>()) {
      all[set.name] = j;
      continue;
    }
    std::printf("%s on %s: accuracy %.4f on %d examples (mean completion %.1f tokens)",
                vm["model"].as<std::string>().c_str(), set.name.c_str(), r.accuracy, r.n, r.mean_length);
    if (l.teacher) std::printf(", reverse KL to teacher %.4f nats/token", r.kl);
    if (j.contains("accuracy_sampled"))
      std::printf("; %d samples per problem at temperature %g: accuracy %.4f", sampled.samples, sampled.temperature,
                  j["accuracy_sampled"].get<double>());
    if (j.contains("erasures"))
      std::printf(" (per computed number: erasures %.4f, spurious %.4f, first written wrong %.4f; recovered %.4f "
                  "of those)",
                  j["erasures"].get<double>(), j["spurious_erasures"].get<double>(), j["first_wrong"].get<double>(),
                  j["recovered"].get<double>());
    std::printf("\n");
  }
  // One set: its object; several: one object per set name.
  if (vm["json"].as<bool>()) std::cout << (sets.size() == 1 ? all.begin().value() : all).dump() << "\n";
  return 0;
}

int sample(const Args& args) {
  const Command cmd{"sample",
                    "Completions for prompts, with per-token log-probs under the model and, with --teacher, under the "
                    "teacher; the verifier's verdict where the prompt has an answer.",
                    "opd sample --model M.h5 --prompts p.jsonl --out samples.jsonl [--teacher T.h5]"};
  po::options_description opts("Sampling");
  opts.add_options()("prompts", po::value<std::string>()->required(), "JSONL {prompt, answer}")(
      "out", po::value<std::string>()->required(), "JSONL output")(
      "samples-per-prompt", po::value<int>()->default_value(1)->notifier(in_range("samples-per-prompt", 1, 1 << 16)),
      "completions per prompt");
  add_model_options(opts);
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  apply_runtime_options(vm);
  Loaded l = load_models(vm);
  const auto examples = load_prompts(vm["prompts"].as<std::string>());
  std::vector<Example> prompts = examples;  // the JSONL output keeps the prompt as given
  apply_chat_template(l.tmpl, prompts);
  check_vocabulary(*l.model, prompts);
  drop_long_examples(*l.model, prompts, false, /*skip=*/false);
  place(l, vm,
        longest_sequence(l.model->tokenizer(), l.model->config().max_seq, prompts, vm["max-new-tokens"].as<int>(), false));
  GenerateOptions g;
  g.max_new_tokens = vm["max-new-tokens"].as<int>();
  g.sampling.temperature = vm["temperature"].as<float>();
  g.sampling.seed = vm["seed"].as<uint64_t>();
  const Rollout r = sample_rollouts(*l.model, prompts, vm["samples-per-prompt"].as<int>(), g, vm["batch"].as<int>());
  std::vector<std::vector<float>> teacher_logp;
  if (l.teacher) {
    std::vector<std::vector<int>> seqs;
    for (const auto& s : r.seqs) {
      std::vector<int> t = s.prompt;
      t.insert(t.end(), s.completion.begin(), s.completion.end());
      seqs.push_back(t);
    }
    for (auto& lp : score_sequences(*l.teacher, seqs, vm["micro-batch"].as<int>())) teacher_logp.push_back(lp);
  }
  JsonlWriter out(vm["out"].as<std::string>());
  double correct = 0;
  for (size_t i = 0; i < r.seqs.size(); ++i) {
    const auto& s = r.seqs[i];
    json line = {{"prompt", examples[s.group].prompt}, {"answer", examples[s.group].answer},
                 {"completion", r.completions[i]}, {"tokens", s.completion},
                 {"logp_student", r.logp[i]}, {"eos", s.eos}, {"correct", r.rewards[i] > 0},
                 {"flops", sampling_flops(*l.model, s)}};
    if (l.teacher) {
      const auto& t = teacher_logp[i];
      line["logp_teacher"] = std::vector<float>(t.end() - s.completion.size(), t.end());
    }
    correct += r.rewards[i];
    out.write(line);
  }
  std::fprintf(stderr, "sample: wrote %zu completions to %s (%.1f%% correct, %d truncated)\n", r.seqs.size(),
               out.path().c_str(), 100.0 * correct / std::max<size_t>(1, r.seqs.size()), r.truncated);
  return 0;
}

}  // namespace opd::cli
