// opd distill / sft / rl: one trainer, three sources of advantage (docs/ARCHITECTURE.md §1).
#include <cmath>
#include <iostream>
#include <optional>
#include <sstream>

#include "cli/commands.h"
#include "cli/runtime.h"
#include "cli/train_inputs.h"
#include "io/adapter_file.h"
#include "io/model_file.h"
#include "model/chat_template.h"
#include "model/memory_plan.h"
#include "parallel/gpu_binding.h"
#include "parallel/groups.h"
#ifdef OPD_WITH_CUDA
#include "parallel/device_group.h"
#endif
#include "parallel/mpi_communicator.h"
#include "parallel/solo_communicator.h"
#include "tasks/arith.h"
#include "tasks/builtin.h"
#include "train/teacher.h"
#include "train/gpu_plan.h"
#include "train/rollout.h"
#include "train/teacher_service.h"
#include "train/trainer.h"

namespace opd::cli {

namespace {

// make_layout, checked against the models' shapes where given (tp must divide what it splits).
Layout layout_for(const LayoutOptions& o, int world, const ModelConfig* student, const ModelConfig* teacher = nullptr) {
  const auto sizes = [](const ModelConfig* m) {
    return m ? std::optional<SplitSizes>(SplitSizes{m->n_heads, m->n_kv_heads, m->ffn_dim, m->vocab}) : std::nullopt;
  };
  const std::optional<SplitSizes> s = sizes(student), t = sizes(teacher);
  return make_layout(o, world, s ? &*s : nullptr, t ? &*t : nullptr);
}

// "d_model=64,n_layers=2,..." -> a config for a model trained from scratch on the arith vocabulary.
ModelConfig parse_shape(const std::string& text) {
  ModelConfig c;
  c.max_seq = 64;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t eq = item.find('=');
    OPD_REQUIRE(eq != std::string::npos, "option --init: '", item, "' is not key=value");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    double v = 0;
    try {
      v = std::stod(value);
    } catch (...) {
      throw Error(str("option --init: ", key, " = '", value, "' is not a number"));
    }
    if (key == "d_model") c.d_model = int(v);
    else if (key == "n_layers") c.n_layers = int(v);
    else if (key == "n_heads") c.n_heads = int(v);
    else if (key == "n_kv_heads") c.n_kv_heads = int(v);
    else if (key == "head_dim") c.head_dim = int(v);
    else if (key == "ffn_dim") c.ffn_dim = int(v);
    else if (key == "max_seq") c.max_seq = int(v);
    else if (key == "rope_theta") c.rope_theta = v;
    else if (key == "tie_embeddings") c.tie_embeddings = v != 0;
    else if (key == "qk_norm") c.qk_norm = v != 0;
    else throw Error(str("option --init: unknown key '", key, "' (known: d_model, n_layers, n_heads, n_kv_heads, "
                         "head_dim, ffn_dim, max_seq, rope_theta, tie_embeddings, qk_norm)"));
  }
  c.vocab = static_cast<int>(arith_vocabulary().size());
  c.validate("option --init");
  return c;
}

std::unique_ptr<Transformer> new_arith_model(const ModelConfig& c, uint64_t seed, Communicator* tp = nullptr) {
  auto m = std::make_unique<Transformer>(c, std::make_shared<CharTokenizer>(arith_vocabulary(), 1, 0),
                                         tp && tp->size() > 1 ? tp : nullptr);
  m->init_random(seed);
  return m;
}

void add_common(po::options_description& d, Method method) {
  po::options_description model("Models");
  model.add_options()("student", po::value<std::string>(), "the student's starting model file (HDF5)");
  model.add_options()("init", po::value<std::string>(),
                      method == Method::kSft
                          ? "instead of --student: a model or checkpoint FILE to start from its weights only, or a "
                            "new model's shape \"d_model=64,n_layers=2,n_heads=4,n_kv_heads=2,head_dim=16,"
                            "ffn_dim=192,max_seq=64\" (arith vocabulary) trained from scratch"
                          : "instead of --student: a model or checkpoint FILE to start from its weights only (no "
                            "optimizer state, step or data position; --resume continues a run)");
  if (method != Method::kRl) model.add_options()("teacher", po::value<std::string>(), "the teacher's model file");
  if (method == Method::kDistill)
    model.add_options()("anchor-teacher", po::value<std::string>(),
                        "a second teacher that scores the --anchor-prompts (e.g. a frozen copy of the student, "
                        "to keep a skill while another is distilled)")(
        "anchor-prompts", po::value<std::string>(), "prompts scored by --anchor-teacher, mixed into --prompts");

  po::options_description data("Data");
  data.add_options()("prompts", po::value<std::string>(),
                     "training prompts, JSONL {prompt, answer}; several files: a,b (mixed)")(
      "eval", po::value<std::string>(), "evaluation prompts, JSONL {prompt, answer}")(
      "eval-task", po::value<std::string>(),
      "also evaluate generated built-in task sets, e.g. arith:general,arith:domain (reported per set)")(
      "eval-n", po::value<int>()->default_value(0)->notifier(in_range("eval-n", 0, 1 << 24)),
      "evaluate on the first N eval examples (0: all; --eval-task sets: 200)")(
      "eval-seed", po::value<uint64_t>()->default_value(1000), "seed of the --eval-task problems")(
      "template", po::value<std::string>()->default_value("none"),
      "chat template around every prompt, for student and teacher alike: qwen3, llama3 or none")(
      "skip-long-prompts", po::bool_switch(),
      "leave out (and count) examples too long for the student's max_seq instead of refusing the data");
  if (method == Method::kSft)
    data.add_options()("data", po::value<std::string>(), "SFT data, JSONL {prompt, completion}; several: a,b (mixed)")(
        "from-teacher", po::bool_switch(), "train on completions the teacher samples for --prompts")(
        "all-tokens", po::bool_switch(), "train on every token, prompt included (pretraining)");

  po::options_description roll("Steps and rollouts");
  roll.add_options()("steps", po::value<int>()->default_value(50)->notifier(in_range("steps", 1, 10000000)),
                     "training steps")(
      "prompts-per-step", po::value<int>()->default_value(32)->notifier(in_range("prompts-per-step", 1, 1 << 20)),
      "prompts (sft: examples) per step")(
      "samples-per-prompt", po::value<int>()->default_value(4)->notifier(in_range("samples-per-prompt", 1, 1024)),
      "completions sampled per prompt")(
      "max-new-tokens", po::value<int>()->default_value(48)->notifier(in_range("max-new-tokens", 1, 1 << 20)),
      "longest completion; longer ones are truncated and counted")(
      "temperature", po::value<float>()->default_value(1.0f)->notifier(in_range("temperature", 0.0f, 100.0f)),
      "sampling temperature (0: greedy)")(
      "top-p", po::value<float>()->default_value(1.0f)->notifier(in_range("top-p", 1e-6f, 1.0f)), "nucleus sampling")(
      "top-k", po::value<int>()->default_value(0)->notifier(in_range("top-k", 0, 1 << 24)), "top-k sampling (0: off)")(
      "micro-batch", po::value<int>()->default_value(64)->notifier(in_range("micro-batch", 1, 1 << 20)),
      "sequences per forward/backward")(
      "gen-batch", po::value<int>()->default_value(256)->notifier(in_range("gen-batch", 1, 1 << 20)),
      "sequences generated together");

  po::options_description algo("Objective");
  if (method == Method::kDistill)
    algo.add_options()("kl", po::value<std::string>()->default_value("sampled"),
                       "sampled (per-token estimate, importance-sampled), full, or topk:K")(
        "kl-coef", po::value<double>()->default_value(1.0)->notifier(in_range("kl-coef", 0.0, 1e6)),
        "advantage = -kl_coef * reverse KL")(
        "kl-discount", po::value<double>()->default_value(0.0)->notifier(in_range("kl-discount", 0.0, 1.0)),
        "gamma: sum later tokens' KL into each token's advantage")(
        "reward-coef", po::value<double>()->default_value(0.0)->notifier(in_range("reward-coef", -1e6, 1e6)),
        "mix in the verifier's reward: A += coef * (R - mean_group R)")(
        "shared-prefix", po::bool_switch(),
        "the teacher prefills a prompt once and scores its samples against that KV cache (fewer teacher FLOPs "
        "with --samples-per-prompt > 1; scores equal to float rounding)");
  if (method == Method::kRl)
    algo.add_options()("grpo-std", po::bool_switch(), "divide advantages by the group's reward std");

  po::options_description optim("Optimizer (AdamW)");
  optim.add_options()("lr", po::value<double>()->default_value(5e-4)->notifier(in_range("lr", 0.0, 10.0)),
                      "peak learning rate")(
      "lr-schedule", po::value<std::string>()->default_value("constant"),
      "constant, cosine, or wsd (constant, then a linear decay over the last --lr-decay-steps)")(
      "lr-decay-steps", po::value<int>()->default_value(0)->notifier(in_range("lr-decay-steps", 0, 10000000)),
      "wsd: steps of the final linear decay (a cool-down)")(
      "warmup-steps", po::value<int>()->default_value(0)->notifier(in_range("warmup-steps", 0, 10000000)),
      "linear warm-up")(
      "min-lr-ratio", po::value<double>()->default_value(0.1)->notifier(in_range("min-lr-ratio", 0.0, 1.0)),
      "cosine and wsd floor, as a fraction of --lr")(
      "weight-decay", po::value<double>()->default_value(0.0)->notifier(in_range("weight-decay", 0.0, 10.0)),
      "decoupled weight decay (matrices only)")(
      "grad-clip", po::value<double>()->default_value(1.0)->notifier(in_range("grad-clip", 0.0, 1e9)),
      "global gradient-norm clip (0: off)")(
      "beta1", po::value<double>()->default_value(0.9)->notifier(in_range("beta1", 0.0, 0.999999)), "AdamW beta1")(
      "beta2", po::value<double>()->default_value(0.99)->notifier(in_range("beta2", 0.0, 0.999999)), "AdamW beta2");

  po::options_description lora("LoRA (low-rank adapters)");
  lora.add_options()("lora-rank", po::value<int>()->default_value(0)->notifier(in_range("lora-rank", 0, 1 << 16)),
                     "train rank-R adapters W + (alpha/R) B A on the targeted projections instead of every weight "
                     "(0: full fine-tuning); the base weights stay frozen, final.h5 holds the adapters and names "
                     "the base (opd merge, opd export --hf)")(
      "lora-alpha", po::value<double>()->default_value(32.0)->notifier(in_range("lora-alpha", 1e-6, 1e6)),
      "the adapters' scale is alpha / rank")(
      "lora-targets", po::value<std::string>()->default_value("q,k,v,o,gate,up,down"),
      "projections that get adapters, of q,k,v,o,gate,up,down");

  po::options_description ev("Evaluation");
  ev.add_options()("eval-every", po::value<int>()->default_value(10)->notifier(in_range("eval-every", 0, 10000000)),
                   "evaluate every N steps (and before and after)")(
      "eval-max-new-tokens", po::value<int>()->default_value(48)->notifier(in_range("eval-max-new-tokens", 1, 1 << 20)),
      "longest eval completion")(
      "eval-samples", po::value<int>()->default_value(0)->notifier(in_range("eval-samples", 0, 1 << 16)),
      "also score N samples per eval problem at --eval-temperature (their mean accuracy, as reasoning benchmarks "
      "score; beside the greedy one, with erase-mark rates for arith chains); 0: greedy only")(
      "eval-temperature", po::value<float>()->default_value(1.0f)->notifier(in_range("eval-temperature", 1e-6f, 100.0f)),
      "temperature of the --eval-samples")(
      "target-accuracy", po::value<double>()->default_value(0.0)->notifier(in_range("target-accuracy", 0.0, 1.0)),
      "report the first step whose eval accuracy reaches this")(
      "target-metric", po::value<std::string>()->default_value("greedy"),
      "which accuracy --target-accuracy applies to: greedy, or sampled (needs --eval-samples)")(
      "target-window", po::value<int>()->default_value(1)->notifier(in_range("target-window", 1, 1000)),
      "the target is reached when the mean of the latest N evaluations reaches it (one lucky evaluation "
      "does not count); the step reported is the last of them")(
      "stop-at-target", po::bool_switch(), "stop once --target-accuracy is reached");

  po::options_description runo("Run");
  runo.add_options()("out", po::value<std::string>(), "run directory (required; --run-dir is the same)")(
      "run-dir", po::value<std::string>(), "run directory, another name of --out")(
      "overwrite", po::bool_switch(), "reuse a run directory that already holds a run")(
      "label", po::value<std::string>()->default_value(""), "name of the run in plots and tables")(
      "seed", po::value<uint64_t>()->default_value(1), "seed of prompts order, sampling and initialisation")(
      "save-every", po::value<int>()->default_value(0)->notifier(in_range("save-every", 0, 10000000)),
      "write a checkpoint every N steps (0: only on SIGUSR1 / SIGTERM)")(
      "keep-last", po::value<int>()->default_value(3)->notifier(in_range("keep-last", 1, 1000000)),
      "checkpoints kept in RUN/checkpoints")(
      "resume", po::value<std::string>()->default_value(""),
      "auto: continue from the newest valid checkpoint in --out (fresh if none); or a checkpoint file")(
      "samples-to-log", po::value<int>()->default_value(4)->notifier(in_range("samples-to-log", 0, 1 << 20)),
      "rollouts written to samples/ at each evaluation")(
      "dry-run", po::bool_switch(), "print the resolved configuration and exit")(
      "log-format", po::value<std::string>()->default_value("text"), "progress on stderr: text or jsonl");
  add_runtime_options(runo);
  po::options_description par("Ranks (mpirun / srun)");
  add_device_option(par);
  par.add_options()("recompute", po::bool_switch(),
                    "--device cuda: keep only each layer's input for backward and recompute the rest (less memory)");
  add_head_chunk_option(par);
  add_layout_options(par);
  if (method == Method::kDistill)
    par.add_options()("teacher-timeout",
                      po::value<double>()->default_value(600.0)->notifier(in_range("teacher-timeout", 1.0, 1e7)),
                      "seconds a student waits for scores, and a teacher for a request, before failing the job");
  d.add(model).add(data).add(roll).add(algo).add(optim).add(lora).add(ev).add(runo).add(par);
}

int run_training(Method method, const Args& args) {
  const std::string name = method_name(method);
  const char* summaries[] = {
      "On-policy distillation: the student samples, the teacher scores every token, the student is trained on "
      "the per-token reverse KL.",
      "Supervised fine-tuning on given completions, or on completions the teacher samples (--from-teacher).",
      "GRPO-style reinforcement learning with the task's verifier as reward; no teacher."};
  const Command cmd{name, summaries[static_cast<int>(method)],
                    method == Method::kDistill
                        ? "opd distill --student S.h5 --teacher T.h5 --prompts train.jsonl --eval eval.jsonl --out RUN"
                    : method == Method::kSft ? "opd sft (--student S.h5 | --init SHAPE) --data sft.jsonl --out RUN"
                                             : "opd rl --student S.h5 --prompts train.jsonl --eval eval.jsonl --out RUN"};
  po::options_description opts;
  add_common(opts, method);
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  OPD_REQUIRE(vm.count("out") || vm.count("run-dir"), "opd ", name, ": the option --out (or --run-dir) is required");
  OPD_REQUIRE(!vm.count("out") || !vm.count("run-dir") || vm["out"].as<std::string>() == vm["run-dir"].as<std::string>(),
              "options --out and --run-dir name different run directories");
  const std::string run_dir = vm.count("out") ? vm["out"].as<std::string>() : vm["run-dir"].as<std::string>();
  auto world = world_communicator();
  const LayoutOptions layout_opts = layout_options(vm);
  if (vm["dry-run"].as<bool>()) {
    // The models' shapes decide which tp fits; the host of every rank completes the table.
    std::optional<ModelConfig> s, t;
    if (vm.count("student")) s = read_model_config(vm["student"].as<std::string>());
    if (vm.count("teacher")) t = read_model_config(vm["teacher"].as<std::string>());
    const LoraConfig lora = lora_config(vm);  // what the run would refuse, the dry run refuses too
    if (lora.enabled() && s) check_lora(lora, *s, "--lora-rank");
    const Layout layout = layout_for(layout_opts, world->size(), s ? &*s : nullptr, t ? &*t : nullptr);
    std::string source;
    const std::vector<RankSite> sites = gather_rank_sites(*world, device_option(vm), &source);
    if (world->rank() == 0) {
      std::cout << "# opd " << name << " resolved configuration\n" << resolved_ini(vm) << layout.table(sites)
                << "# node-local ranks from " << source << "\n";
      std::vector<int> blind;
      for (int r = 0; r < world->size(); ++r)
        if (sites[r].device == "cuda:none") blind.push_back(r);
      if (!blind.empty())
        std::cout << "# --device cuda: " << blind.size() << " of " << world->size()
                  << " ranks see no CUDA device; the run would stop there (first: rank " << blind[0] << " on host "
                  << sites[blind[0]].host << ")\n";
      if (device_option(vm) == DeviceKind::kCuda && s)
        std::cout << gpu_plan_report(vm, method, *s, *read_model_tokenizer(vm["student"].as<std::string>()),
                                     t ? &*t : nullptr, layout.teacher_ranks == 0, layout.tp, layout.teacher_tp);
    }
    return 0;
  }
  apply_runtime_options(vm);
  const bool gpu = device_option(vm) == DeviceKind::kCuda;
  // Bound first, so a rank that sees no GPU says so before anything else is said.
  const int gpu_index = gpu ? bind_gpu(this_node_rank(), world->rank(), processor_name()) : -1;
  const Layout layout0 = make_layout(layout_opts, world->size());
  OPD_REQUIRE(layout0.teacher_ranks == 0 || method == Method::kDistill, "--teacher-ranks ", layout0.teacher_ranks,
              ": dedicated teacher ranks serve opd distill only");
  RankGroups groups = make_groups(std::move(world), layout0);
  const double teacher_timeout = method == Method::kDistill ? vm["teacher-timeout"].as<double>() : 0.0;
  if (!groups.student()) {
    // A teacher replica: load the teacher, serve every DP leader until each says it is done.
    OPD_REQUIRE(vm.count("teacher"), "opd distill: --teacher is required");
    const std::string teacher_path = vm["teacher"].as<std::string>();
    const ModelConfig shape = read_model_config(teacher_path);
    layout_for(layout_opts, groups.layout.world, nullptr, &shape);
    auto teacher = load_model(teacher_path, groups.replica.get());  // this rank's shards under --teacher-tp
    const TrainConfig tc = train_config(vm, method);
    teacher->set_head_rows(tc.head_rows);
    teacher->set_forward_only();
    if (gpu) {
      // Forward only, for a micro-batch of the longest sequence the students will send.
      const RunData data = load_run_data(vm, method);
      const TrainConfig& c = tc;
      const int seq = planned_sequence(teacher->tokenizer(), teacher->config().max_seq, c, data.train, data.eval);
      teacher->use_gpu(gpu_plan(c, seq, false, false), str("rank ", groups.world->rank(), " (teacher) on GPU ", gpu_index));
    }
    share_teacher_tokenizer(*groups.world, groups.layout.teacher_rank(0), &teacher->tokenizer());
    const ServiceStats st = serve_teacher(*groups.world, *teacher, groups.layout.dp, teacher_timeout);
    std::cerr << "[" << name << "] teacher rank " << groups.world->rank() << ": served " << st.requests
              << " scoring requests, busy " << std::round(st.busy_s * 100) / 100 << " s\n";
    return 0;
  }
  const bool writer = groups.writer();

  TrainConfig c = train_config(vm, method);
  c.gpu = gpu;
  OPD_REQUIRE(gpu || !c.recompute, "--recompute applies to --device cuda only (the CPU path keeps every activation)");

  // Models.
  std::unique_ptr<Transformer> student, teacher, anchor;
  std::string student_path = vm.count("student") ? vm["student"].as<std::string>() : "";
  const std::string init = vm.count("init") ? vm["init"].as<std::string>() : "";
  OPD_REQUIRE(init.empty() || student_path.empty(), "give either --student or --init, not both");
  // --init FILE: weights only, which is what loading a model or a checkpoint as the student does.
  if (!init.empty() && (method != Method::kSft || init.find('=') == std::string::npos)) student_path = init;
  if (method == Method::kSft && student_path.empty() && !init.empty()) {
    const ModelConfig shape = parse_shape(init);
    layout_for(layout_opts, groups.layout.world, &shape);
    student = new_arith_model(shape, c.seed, groups.tp.get());
    student_path = "(new model: " + vm["init"].as<std::string>() + ")";
  } else {
    OPD_REQUIRE(!student_path.empty(), "opd ", name, ": --student is required",
                method == Method::kSft ? " (or --init to start from scratch)" : "");
  }
  const bool colocated_teacher = vm.count("teacher") && groups.layout.teacher_ranks == 0;
  const std::string teacher_path = colocated_teacher ? vm["teacher"].as<std::string>() : "";
  {
    // The shapes decide which tp fits (errors name the option) before anything large is read;
    // then each rank reads only its shards, the colocated teacher sharded like the student.
    const ModelConfig s = student ? student->config() : read_model_config(student_path);
    std::optional<ModelConfig> t;
    if (colocated_teacher) t = read_model_config(teacher_path);
    layout_for(layout_opts, groups.layout.world, &s, t ? &*t : nullptr);
  }
  const bool from_scratch = student != nullptr;
  if (!student) student = load_model(student_path, groups.tp.get());
  const LoraConfig lora = lora_config(vm);
  if (lora.enabled()) {
    // The loaded weights become the frozen base, named by path and checksum in every checkpoint.
    OPD_REQUIRE(!from_scratch, "--lora-rank: a model trained from scratch (--init SHAPE) has no base weights to "
                "adapt; train it fully first");
    check_lora(lora, student->config(), "--lora-rank");
    student->enable_lora(lora, c.seed, lora_base_of(student_path));
  }
  student->set_head_rows(c.head_rows);
  if (colocated_teacher) {
    teacher = load_model(teacher_path, groups.tp.get());
    check_same_tokenizer(*student, student_path, *teacher, teacher_path);
    teacher->set_head_rows(c.head_rows);
    teacher->set_forward_only();  // scores and samples only: no gradients, one set of activations
  }
  std::unique_ptr<RemoteScoring> remote;
  std::unique_ptr<TensorParallelScoring> remote_tp;
  if (groups.layout.teacher_ranks > 0) {
    OPD_REQUIRE(vm.count("teacher"), "opd distill: --teacher is required");
    check_same_tokenizer(student->tokenizer(), student_path,
                         *share_teacher_tokenizer(*groups.world, groups.layout.teacher_rank(0), nullptr),
                         vm["teacher"].as<std::string>() + " (on the teacher ranks)");
    std::vector<int> replicas;
    for (int r = 0; r < groups.layout.teacher_replicas; ++r) replicas.push_back(groups.layout.teacher_rank(r));
    if (groups.dp_leader())  // under TP, the DP replica's rank 0 speaks for its TP group
      remote = std::make_unique<RemoteScoring>(*groups.world, replicas, student->config().vocab, groups.place.dp_rank,
                                               teacher_timeout,
                                               method == Method::kDistill && vm["shared-prefix"].as<bool>());
    if (groups.layout.tp > 1)
      remote_tp = std::make_unique<TensorParallelScoring>(remote.get(), *groups.tp, student->vocab_shard());
  }

  // Objective and data.
  if (method == Method::kDistill) {
    OPD_REQUIRE(teacher || groups.layout.teacher_ranks > 0, "opd distill: --teacher is required");
    c.distill.kl = parse_kl(vm["kl"].as<std::string>(), student->config().vocab);
    OPD_REQUIRE(groups.layout.teacher_ranks == 0 || !vm.count("anchor-teacher"),
                "--anchor-teacher needs --teacher-ranks 0 (colocated)");
    if (vm.count("anchor-teacher")) {
      const ModelConfig shape = read_model_config(vm["anchor-teacher"].as<std::string>());
      layout_for(layout_opts, groups.layout.world, nullptr, &shape);  // shardable like the teacher
      anchor = load_model(vm["anchor-teacher"].as<std::string>(), groups.tp.get());
      check_same_tokenizer(*student, student_path, *anchor, vm["anchor-teacher"].as<std::string>());
      anchor->set_head_rows(c.head_rows);
      anchor->set_forward_only();
    }
  }
  OPD_REQUIRE(!c.sft_from_teacher || teacher, "opd sft --from-teacher: --teacher is required");
  RunData data = load_run_data(vm, method);
  std::vector<Example>& train_set = data.train;
  std::vector<NamedExamples>& eval_sets = data.eval;
  // The template wraps the prompt text, so every model that reads a prompt reads the same ids.
  check_chat_template(data.tmpl, student->tokenizer(), student_path);
  check_vocabulary(*student, train_set);
  for (const auto& set : eval_sets) check_vocabulary(*student, set.examples);
  // Every example fits the context, or (--skip-long-prompts) is left out and counted.
  const bool skip_long = vm["skip-long-prompts"].as<bool>();
  const bool sft_completions = method == Method::kSft && !c.sft_from_teacher;
  const std::string hint = " (--skip-long-prompts leaves such examples out and counts them)";
  c.skipped_long_prompts = drop_long_examples(*student, train_set, sft_completions, skip_long, hint);
  int skipped_eval = 0;
  for (auto& set : eval_sets) skipped_eval += drop_long_examples(*student, set.examples, false, skip_long, hint);
  OPD_REQUIRE(!train_set.empty(), "opd ", name, ": --skip-long-prompts left no training example (max_seq = ",
              student->config().max_seq, ")");
  if (writer && (c.skipped_long_prompts > 0 || skipped_eval > 0))
    std::cerr << "[" << name << "] --skip-long-prompts: left out " << c.skipped_long_prompts << " training and "
              << skipped_eval << " eval examples longer than the student's max_seq = " << student->config().max_seq
              << "\n";
  const int seq = longest_sequence(student->tokenizer(), student->config().max_seq, train_set, c.gen.max_new_tokens,
                                   sft_completions);
  if (writer && method == Method::kDistill) {
    const std::string cost = full_rows_report(
        c.distill.kl, double(c.micro_batch) * seq, student->config().vocab,
        (c.prompts_per_step * c.samples_per_prompt + c.micro_batch - 1) / c.micro_batch, groups.layout.teacher_ranks > 0);
    if (!cost.empty()) std::cerr << "[" << name << "] " << cost << "\n";
  }
  if (writer && student->streams_head(size_t(c.micro_batch) * seq))
    std::cerr << "[" << name << "] LM head streamed in blocks of " << student->head_rows() << " rows ("
              << format_bytes(size_t(student->head_rows()) * student->vocab_shard().size * sizeof(float))
              << " of logits) instead of a micro-batch's [N, V] (--head-chunk)\n";

  std::unique_ptr<RunDir> run;
  if (writer) run = std::make_unique<RunDir>(run_dir, c.config_ini, vm["overwrite"].as<bool>(),
                                             !c.resume.empty());
  TrainContext ctx;
  ctx.dp = groups.dp.get();
#ifdef OPD_WITH_CUDA
  // Gradients are summed where they are: over NCCL between the DP ranks' GPUs, unless ranks share
  // a GPU (which NCCL refuses), and then through host memory.
  std::unique_ptr<Communicator> dp_nccl;
  std::string dp_host_why;
  if (gpu && groups.dp && groups.dp->size() > 1) {
    dp_nccl = device_group(*groups.dp, "dp (nccl)", &dp_host_why);
    if (!dp_nccl && writer)
      std::fprintf(stderr, "[%s] data-parallel gradients go through host memory: %s\n", name.c_str(),
                   dp_host_why.c_str());
  }
  ctx.dp_device = dp_nccl.get();
#endif
  ctx.tp = groups.tp.get();
  ctx.remote_teacher = remote_tp ? static_cast<ScoringClient*>(remote_tp.get()) : remote.get();
  ctx.writer = writer;
  ctx.run_path = run_dir;
  ctx.world_rank = groups.world->rank();
  if (writer) {
    std::cerr << "[" << name << "] student " << student_path << " (" << student->config().num_parameters()
              << " parameters";
    if (lora.enabled())
      std::cerr << "; LoRA rank " << lora.rank << ", alpha " << lora.alpha << " on " << lora.targets_text() << ": "
                << total_size(lora_specs(student->config(), lora)) << " trained";
    std::cerr << ")";
    if (teacher)
      std::cerr << ", teacher " << vm["teacher"].as<std::string>() << " (" << teacher->config().num_parameters()
                << " parameters)";
    if (groups.layout.teacher_ranks > 0)
      std::cerr << ", teacher " << vm["teacher"].as<std::string>() << " on " << groups.layout.teacher_ranks
                << " dedicated ranks";
    if (groups.layout.teacher_tp > 1) std::cerr << " (each replica tensor-parallel over " << groups.layout.teacher_tp << ")";
    if (groups.layout.tp > 1) std::cerr << ", tensor parallel over " << groups.layout.tp << " ranks";
    if (groups.layout.dp > 1) std::cerr << ", data parallel over " << groups.layout.dp << " ranks";
    size_t n_eval = 0;
    for (const auto& set : eval_sets) n_eval += set.examples.size();
    std::cerr << "; " << train_set.size() << " training examples, " << n_eval << " eval; run directory "
              << run->path() << "\n";
  }
  const json summary = train(c, *student, teacher.get(), train_set, eval_sets, run.get(), anchor.get(), ctx);
  if (remote) remote->shutdown();
  if (!writer) return summary.value("preempted", false) ? kExitCheckpointed : 0;
  std::cerr << "[" << name << "] done: " << summary["steps"] << " steps";
  if (summary.contains("eval_initial"))
    for (const auto& [set_name, r] : summary["eval_initial"].items())
      std::cerr << ", " << set_name << " accuracy " << r["accuracy"] << " -> "
                << summary["eval_final"][set_name]["accuracy"];
  if (summary.value("preempted", false)) {
    std::cerr << "; stopped by a signal after a checkpoint (exit " << kExitCheckpointed << ": requeue and --resume auto)\n";
    return kExitCheckpointed;
  }
  std::cerr << "; model " << summary["final_model"].get<std::string>() << "\n";
  return 0;
}

}  // namespace

int distill(const Args& args) { return run_training(Method::kDistill, args); }
int sft(const Args& args) { return run_training(Method::kSft, args); }
int rl(const Args& args) { return run_training(Method::kRl, args); }

}  // namespace opd::cli
