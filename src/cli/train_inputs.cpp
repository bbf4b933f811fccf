#include "cli/train_inputs.h"

#include <cmath>
#include "cli/runtime.h"

#include "model/memory_plan.h"
#include "train/gpu_plan.h"

#ifdef OPD_WITH_CUDA
#include "model/backend_cuda.h"
#endif

namespace opd::cli {

void apply_chat_template(ChatTemplate t, std::vector<Example>& examples) {
  for (Example& e : examples) e.prompt = opd::apply_chat_template(t, e.prompt);
}

TrainConfig train_config(const po::variables_map& vm, Method method) {
  TrainConfig c;
  c.method = method;
  c.label = vm["label"].as<std::string>();
  c.steps = vm["steps"].as<int>();
  c.prompts_per_step = vm["prompts-per-step"].as<int>();
  c.samples_per_prompt = vm["samples-per-prompt"].as<int>();
  c.micro_batch = vm["micro-batch"].as<int>();
  c.recompute = vm["recompute"].as<bool>();
  c.head_rows = head_chunk_option(vm);
  c.gen_batch = vm["gen-batch"].as<int>();
  c.seed = vm["seed"].as<uint64_t>();
  c.gen.max_new_tokens = vm["max-new-tokens"].as<int>();
  c.gen.sampling.temperature = vm["temperature"].as<float>();
  c.gen.sampling.top_p = vm["top-p"].as<float>();
  c.gen.sampling.top_k = vm["top-k"].as<int>();
  c.gen.sampling.seed = c.seed;
  c.opt.lr = vm["lr"].as<double>();
  c.opt.schedule = vm["lr-schedule"].as<std::string>();
  c.opt.warmup_steps = vm["warmup-steps"].as<int>();
  c.opt.min_lr_ratio = vm["min-lr-ratio"].as<double>();
  c.opt.decay_steps = vm["lr-decay-steps"].as<int>();
  c.opt.weight_decay = vm["weight-decay"].as<double>();
  c.opt.grad_clip = vm["grad-clip"].as<double>();
  c.opt.beta1 = vm["beta1"].as<double>();
  c.opt.beta2 = vm["beta2"].as<double>();
  c.eval.max_new_tokens = vm["eval-max-new-tokens"].as<int>();
  c.eval.batch = c.gen_batch;
  c.eval_every = vm["eval-every"].as<int>();
  c.eval_samples.samples = vm["eval-samples"].as<int>();
  c.eval_samples.temperature = vm["eval-temperature"].as<float>();
  c.eval_samples.max_new_tokens = c.eval.max_new_tokens;
  c.eval_samples.batch = c.gen_batch;
  c.eval_samples.seed = c.seed;
  c.target_accuracy = vm["target-accuracy"].as<double>();
  const std::string metric = vm["target-metric"].as<std::string>();
  OPD_REQUIRE(metric == "greedy" || metric == "sampled", "option --target-metric = '", metric,
              "' is not one of greedy, sampled");
  OPD_REQUIRE(metric == "greedy" || c.eval_samples.samples > 0, "option --target-metric sampled needs --eval-samples N");
  c.target_sampled = metric == "sampled";
  c.target_window = vm["target-window"].as<int>();
  c.stop_at_target = vm["stop-at-target"].as<bool>();
  c.save_every = vm["save-every"].as<int>();
  c.keep_last = vm["keep-last"].as<int>();
  const std::string log_format = vm["log-format"].as<std::string>();
  OPD_REQUIRE(log_format == "text" || log_format == "jsonl", "option --log-format = '", log_format,
              "' is not one of text, jsonl");
  c.log_jsonl = log_format == "jsonl";
  c.resume = vm["resume"].as<std::string>();
  c.config_ini = "# opd " + std::string(method_name(method)) + "\n" + resolved_ini(vm);
  c.samples_to_log = vm["samples-to-log"].as<int>();

  if (method == Method::kDistill) {
    c.distill.kl_coef = vm["kl-coef"].as<double>();
    c.distill.kl_discount = vm["kl-discount"].as<double>();
    c.distill.reward_coef = vm["reward-coef"].as<double>();
    c.shared_prefix = vm["shared-prefix"].as<bool>();
  }
  if (method == Method::kRl) c.grpo_std = vm["grpo-std"].as<bool>();
  if (method == Method::kSft) {
    c.sft_from_teacher = vm["from-teacher"].as<bool>();
    c.all_tokens = vm["all-tokens"].as<bool>();
  }
  return c;
}

LoraConfig lora_config(const po::variables_map& vm) {
  LoraConfig l;
  l.rank = vm["lora-rank"].as<int>();
  l.alpha = vm["lora-alpha"].as<double>();
  l.targets = parse_lora_targets(vm["lora-targets"].as<std::string>(), "--lora-targets");
  return l;
}

RunData load_run_data(const po::variables_map& vm, Method method) {
  RunData d;
  const std::string name = method_name(method);
  if (method == Method::kSft && !vm["from-teacher"].as<bool>()) {
    OPD_REQUIRE(vm.count("data"), "opd sft: --data is required (or --from-teacher with --prompts)");
    d.train = load_sft_files(vm["data"].as<std::string>());
  } else {
    OPD_REQUIRE(vm.count("prompts"), "opd ", name, ": --prompts is required");
    d.train = load_prompt_files(vm["prompts"].as<std::string>());
  }
  if (method == Method::kDistill) {
    OPD_REQUIRE(vm.count("anchor-teacher") == vm.count("anchor-prompts"),
                "opd distill: --anchor-teacher and --anchor-prompts go together");
    if (vm.count("anchor-prompts"))
      for (Example e : load_prompt_files(vm["anchor-prompts"].as<std::string>())) {
        e.source = 1;
        d.train.push_back(std::move(e));
      }
  }
  auto text = [&](const char* key) { return vm.count(key) ? vm[key].as<std::string>() : std::string(); };
  d.eval = eval_sets(text("eval"), text("eval-task"), vm["eval-n"].as<int>(), vm["eval-seed"].as<uint64_t>());
  d.tmpl = parse_chat_template(vm["template"].as<std::string>());
  apply_chat_template(d.tmpl, d.train);
  for (auto& set : d.eval) apply_chat_template(d.tmpl, set.examples);
  return d;
}

std::string gpu_plan_report(const po::variables_map& vm, Method method, const ModelConfig& student,
                            const Tokenizer& tok, const ModelConfig* teacher, bool colocated, int tp, int teacher_tp) {
  const TrainConfig c = train_config(vm, method);
  // Without the data (a layout-only dry run), the longest sequence is max_seq.
  const bool has_data = vm.count(method == Method::kSft && !c.sft_from_teacher ? "data" : "prompts") > 0;
  int seq = student.max_seq;
  if (has_data) {
    const RunData data = load_run_data(vm, method);
    seq = planned_sequence(tok, student.max_seq, c, data.train, data.eval);
  }
  const auto plan = [&](const ModelConfig& m, MemoryPlanOptions o, int degree) {
    o.tp = degree;
    o.head_rows = resolve_head_rows(c.head_rows, m.vocab / degree);  // as the model plans it (use_gpu)
#ifdef OPD_WITH_CUDA
    return plan_model_memory(m, o, gpu_workspace(m, o));
#else
    return plan_model_memory(m, o, {});
#endif
  };
#ifdef OPD_WITH_CUDA
  // What the run would refuse, the dry run refuses too.
  check_gpu_shape(student, tp, "the student");
  if (teacher) check_gpu_shape(*teacher, colocated ? tp : teacher_tp, "the teacher");
#endif
  MemoryPlanOptions student_options = gpu_plan(c, seq, true, true);
  student_options.lora = lora_config(vm);
  if (student_options.lora.enabled()) check_lora(student_options.lora, student, "--lora-rank");
  const MemoryPlan s = plan(student, student_options, tp);
  std::string out = str("# --device cuda: memory planned per GPU for micro-batches of ", c.micro_batch, " x ", seq,
                        has_data ? " tokens (the longest prompt + sampled tokens)" : " tokens (max_seq: no data given)",
                        " and a KV cache of ", c.gen_batch, " sequences\n");
#ifndef OPD_WITH_CUDA
  out += "# (this opd was built without CUDA: the kernels' scratch is not counted)\n";
#endif
  if (student_options.lora.enabled()) {
    const LoraConfig& l = student_options.lora;
    const size_t adapters = total_size(lora_specs(student, l));
    out += str("# LoRA rank ", l.rank, " on ", l.targets_text(), ": ", adapters, " adapter parameters (",
               std::round(1e4 * double(adapters) / double(student.num_parameters())) / 100,
               "% of the model) hold the fp32 master copy, gradients and optimizer state; the base stays bf16\n");
  }
  const size_t N = size_t(c.micro_batch) * seq, V = student.vocab / tp;
  const int rows = resolve_head_rows(c.head_rows, int(V));
  if (rows > 0 && N > size_t(rows))
    out += str("# LM head streamed: logits and their gradient in blocks of ", rows, " rows (", format_bytes(rows * V * 4),
               " each) instead of the micro-batch's ", N, " x ", V, " (", format_bytes(N * V * 4),
               "); --head-chunk 0 plans the whole\n");
  if (method == Method::kDistill) {
    KlSpec kl = parse_kl(vm["kl"].as<std::string>(), student.vocab);
    const std::string cost = full_rows_report(kl, double(N), student.vocab,
                                              (c.prompts_per_step * c.samples_per_prompt + c.micro_batch - 1) /
                                                  c.micro_batch, !colocated);
    if (!cost.empty()) out += "# " + cost + "\n";
  }
  out += s.report("# student:");
  out += str("# student: gradients + optimizer state ",
             format_bytes(s.bytes(MemoryKind::kGrads) + s.bytes(MemoryKind::kOptimizer)), ", + master weights ",
             format_bytes(s.bytes(MemoryKind::kGrads) + s.bytes(MemoryKind::kOptimizer) + s.bytes(MemoryKind::kMaster)),
             "\n");
  if (teacher) {
    const MemoryPlan t =
        plan(*teacher, gpu_plan(c, seq, false, colocated && c.sft_from_teacher), colocated ? tp : teacher_tp);
    out += t.report(colocated ? "# colocated teacher (on the student's GPU):" : "# teacher rank:");
    if (colocated)
      out += "# student + colocated teacher: " + format_bytes(s.total() + t.total()) + "\n";
  }
  return out;
}

}  // namespace opd::cli
