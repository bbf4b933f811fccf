// opd bench step: a few distillation steps on the shipped models in the rank layout the job was
// started with (mpirun / srun decide the ranks, --teacher-ranks/--teacher-tp/--tp/--dp how they
// split), then one table of phase times per step, their means after the first step, and the
// overlap efficiency with dedicated teacher ranks.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "bench/step_gpu.h"
#include "bench/step_presets.h"
#include "cli/commands.h"
#include "cli/runtime.h"
#include "core/jsonl.h"
#include "parallel/gpu_binding.h"
#include "parallel/layout.h"
#include "parallel/mpi_communicator.h"
#include "parallel/solo_communicator.h"
#include "tasks/arith.h"
#include "tasks/dataset.h"

namespace opd::cli {

namespace {

double time_of(const json& line, const char* phase) {
  return line.contains("time") && line["time"].contains(phase) ? line["time"][phase].get<double>() : 0.0;
}

void print_table(const std::string& metrics_path) {
  std::vector<json> steps;
  read_jsonl(metrics_path, [&](const json& j, int) {
    if (j.value("step", 0) > 0) steps.push_back(j);
  });
  OPD_REQUIRE(!steps.empty(), metrics_path, ": no training steps were logged");
  static const char* kPhases[] = {"rollout", "score", "wait_teacher", "update", "comm", "step"};
  std::printf("%5s %9s %9s %9s %9s %9s %9s %10s %8s\n", "step", "rollout", "score", "wait", "update", "comm", "step",
              "tokens/s", "overlap");
  double sum[6] = {}, tokens_per_s = 0, overlap = 0;
  int counted = 0;
  for (const json& j : steps) {
    double t[6];
    for (int p = 0; p < 6; ++p) t[p] = time_of(j, kPhases[p]);
    const double tps = j.value("tokens_per_s", 0.0), ov = j.value("overlap", 0.0);
    std::printf("%5d %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %10.0f %8.2f\n", j["step"].get<int>(), t[0], t[1], t[2],
                t[3], t[4], t[5], tps, ov);
    if (j["step"].get<int>() == 1 && steps.size() > 1) continue;  // the first step warms caches and pages up
    for (int p = 0; p < 6; ++p) sum[p] += t[p];
    tokens_per_s += tps;
    overlap += ov;
    ++counted;
  }
  std::printf("%5s", "mean");
  for (double s : sum) std::printf(" %9.3f", s / counted);
  std::printf(" %10.0f %8.2f\n", tokens_per_s / counted, overlap / counted);
  std::printf("times in seconds; score = teacher busy, wait = students blocked on the teacher; overlap = 1 - wait / "
              "score (dedicated teacher ranks only); mean over steps %s\n",
              steps.size() > 1 ? "2.." : "1");
}

}  // namespace

int bench_step(const Args& args) {
  const Command cmd{"bench step",
                    "Times distillation steps on the shipped models in this job's rank layout: rollout, teacher "
                    "scoring, waiting for the teacher, update and data-parallel exchange per step, tokens/s and the "
                    "overlap efficiency.",
                    "mpirun -n 3 opd bench step --teacher-ranks 1 [--steps 6] [--tp 2] [--dp 2]\n"
                    "       opd bench step --device cuda [--student-preset qwen3-0.6b --teacher-preset qwen3-1.7b]\n"
                    "       opd bench step --device cpu --student-preset qwen3-0.6b --teacher-preset qwen3-1.7b "
                    "[--prompts-per-step 4 --micro-batch 4 --prompt 128 --new-tokens 64 --head-chunk auto]"};
  po::options_description opts("Benchmark");
  opts.add_options()("student", po::value<std::string>()->default_value("models/student-base.h5"), "student model")(
      "teacher", po::value<std::string>()->default_value("models/teacher.h5"), "teacher model")(
      "steps", po::value<int>()->default_value(6)->notifier(in_range("steps", 1, 100000)), "distillation steps")(
      "prompts-per-step", po::value<int>()->default_value(0)->notifier(in_range("prompts-per-step", 0, 1 << 20)),
      "prompts per step, one sample each (0: 128 on cpu, 64 with --device cuda)")(
      "micro-batch", po::value<int>()->default_value(0)->notifier(in_range("micro-batch", 0, 1 << 20)),
      "sequences per micro-batch, the unit sent to a teacher rank and of each forward / backward (0: 32 on cpu, 4 "
      "with --device cuda, whose KV cache holds the whole step)")(
      "kl", po::value<std::string>()->default_value("full"), "sampled | full | topk:K (--device cuda: full)")(
      "out", po::value<std::string>()->default_value("build/bench-step"),
      "scratch directory for the prompts and the run (shared by every rank)");
  add_layout_options(opts);
  add_runtime_options(opts);
  add_head_chunk_option(opts);
  po::options_description gpu(
      "Qwen3-shaped models with random weights: one GPU (--device cuda), or on the CPU with a --student-preset or "
      "--teacher-preset given (then the defaults are 4 sequences of 128 + 64 tokens, one micro-batch, 2 steps)");
  const bench::GpuStepOptions d;
  gpu.add_options()("device", po::value<std::string>()->default_value("cpu"),
                    "cpu: the shipped models in this job's rank layout; cuda: one GPU, the shapes below")(
      "student-preset", po::value<std::string>()->default_value(d.student), "qwen3-0.6b | qwen3-1.7b | qwen3-4b | qwen3-8b")(
      "teacher-preset", po::value<std::string>()->default_value(d.teacher), "the teacher's shape")(

      "prompt", po::value<int>()->default_value(d.prompt)->notifier(in_range("prompt", 1, 1 << 20)), "prompt tokens")(
      "new-tokens", po::value<int>()->default_value(d.new_tokens)->notifier(in_range("new-tokens", 1, 1 << 20)),
      "sampled tokens per sequence")(
      "warmup", po::value<int>()->default_value(d.warmup)->notifier(in_range("warmup", 0, 1000)), "untimed steps first")(
      "recompute", po::bool_switch(), "keep only each layer's input for backward")(
      "peak-tflops", po::value<double>()->default_value(d.peak_tflops)->notifier(in_range("peak-tflops", 1.0, 1e6)),
      "the GPU's dense bf16 peak, the MFU's denominator (989: H100 / H200 SXM)");
  opts.add(gpu);
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  const bool cuda = parse_device(vm["device"].as<std::string>()) == DeviceKind::kCuda;
  const bool cpu_presets = !cuda && (!vm["student-preset"].defaulted() || !vm["teacher-preset"].defaulted());
  if (cpu_presets) {
    for (const char* key : {"student", "teacher", "teacher-ranks", "teacher-tp", "tp", "dp", "warmup", "recompute",
                            "peak-tflops"})
      OPD_REQUIRE(vm[key].defaulted(), "opd bench step --device cpu --student-preset: --", key,
                  " does not apply (one process, Qwen3 shapes with random weights)");
    apply_runtime_options(vm);
    bench::PresetStepOptions o;
    o.student = vm["student-preset"].as<std::string>();
    o.teacher = vm["teacher-preset"].as<std::string>();
    const auto given = [&](const char* key, int fallback) {
      return vm[key].defaulted() || vm[key].as<int>() == 0 ? fallback : vm[key].as<int>();
    };
    o.batch = given("prompts-per-step", o.batch);
    o.micro_batch = given("micro-batch", o.batch);
    o.prompt = given("prompt", o.prompt);
    o.new_tokens = given("new-tokens", o.new_tokens);
    o.steps = given("steps", o.steps);
    o.kl = vm["kl"].as<std::string>();
    o.head_rows = head_chunk_option(vm);
    return bench::run_bench_step_presets(o);
  }
  for (const char* key : {"prompt", "new-tokens", "warmup", "recompute", "peak-tflops"})
    OPD_REQUIRE(cuda || vm[key].defaulted(), "opd bench step: --", key,
                " applies to --device cuda, or to the CPU with a --student-preset");
  OPD_REQUIRE(!cuda || vm["head-chunk"].defaulted(),
              "opd bench step --device cuda: --head-chunk applies to the CPU runs (the GPU bench times the whole "
              "[N, V] rows)");
  for (const char* key : {"student", "teacher", "teacher-ranks", "teacher-tp", "tp", "dp"})
    OPD_REQUIRE(!cuda || vm[key].defaulted(), "opd bench step --device cuda: --", key,
                " applies to the CPU run only (one GPU, Qwen3 shapes: see --student-preset)");
  OPD_REQUIRE(!cuda || vm["kl"].as<std::string>() == "full", "opd bench step --device cuda: times --kl full only");
  if (cuda) {
    bench::GpuStepOptions o;
    o.student = vm["student-preset"].as<std::string>();
    o.teacher = vm["teacher-preset"].as<std::string>();
    const auto given = [&](const char* key, int fallback) { return vm[key].as<int>() ? vm[key].as<int>() : fallback; };
    o.batch = given("prompts-per-step", d.batch);
    o.micro_batch = given("micro-batch", d.micro_batch);
    o.prompt = vm["prompt"].as<int>();
    o.new_tokens = vm["new-tokens"].as<int>();
    o.steps = vm["steps"].as<int>();
    o.warmup = vm["warmup"].as<int>();
    o.recompute = vm["recompute"].as<bool>();
    o.peak_tflops = vm["peak-tflops"].as<double>();
    return bench::run_bench_step_gpu(o);
  }
  const int prompts_per_step = vm["prompts-per-step"].as<int>() ? vm["prompts-per-step"].as<int>() : 128;
  const int micro_batch = vm["micro-batch"].as<int>() ? vm["micro-batch"].as<int>() : 32;
  auto world = world_communicator();
  const std::string out = vm["out"].as<std::string>();
  const std::string prompts = out + "/prompts.jsonl";
  if (world->rank() == 0) {
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    OPD_REQUIRE(!ec, "option --out = '", out, "': cannot create the directory (", ec.message(), ")");
    ArithConfig config;  // the make-run task: general skill, 3 terms of up to 3 digits
    std::vector<Example> examples;
    for (int i = 0; i < 4096; ++i) {
      ArithProblem p = make_problem(config, 101, i);
      examples.push_back({std::move(p.prompt), std::move(p.answer), std::move(p.completion)});
    }
    write_examples(prompts, examples);
  }
  world->barrier();
  Args run = {"--student", vm["student"].as<std::string>(), "--teacher", vm["teacher"].as<std::string>(),
              "--prompts", prompts, "--kl", vm["kl"].as<std::string>(), "--steps",
              std::to_string(vm["steps"].as<int>()), "--prompts-per-step",
              std::to_string(prompts_per_step), "--samples-per-prompt", "1", "--micro-batch",
              std::to_string(micro_batch), "--lr", "2e-3", "--eval-every", "0", "--samples-to-log",
              "0", "--overwrite", "--out", out + "/run", "--threads", std::to_string(vm["threads"].as<int>()),
              "--head-chunk", vm["head-chunk"].as<std::string>()};
  for (const char* k : {"teacher-ranks", "teacher-tp", "tp", "dp"}) {
    run.push_back(std::string("--") + k);
    run.push_back(std::to_string(vm[k].as<int>()));
  }
  const int code = distill(run);
  if (world->rank() != 0 || code != 0) return code;
  std::printf("bench step: %d ranks (--teacher-ranks %d --teacher-tp %d --tp %d --dp %d), %s / %s, --kl %s, %d "
              "prompts per step\n",
              world->size(), vm["teacher-ranks"].as<int>(), vm["teacher-tp"].as<int>(), vm["tp"].as<int>(),
              vm["dp"].as<int>(), vm["student"].as<std::string>().c_str(), vm["teacher"].as<std::string>().c_str(),
              vm["kl"].as<std::string>().c_str(), prompts_per_step);
  print_table(out + "/run/metrics.jsonl");
  return 0;
}

}  // namespace opd::cli
