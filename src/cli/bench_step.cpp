// opd bench step: a few distillation steps on the shipped models in the rank layout the job was
// started with (mpirun / srun decide the ranks, --teacher-ranks/--teacher-tp/--tp/--dp how they
// split), then one table of phase times per step, their means after the first step, and the
// overlap efficiency with dedicated teacher ranks.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/runtime.h"
#include "core/jsonl.h"
#include "parallel/layout.h"
#include "parallel/mpi_communicator.h"
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
                    "mpirun -n 3 opd bench step --teacher-ranks 1 [--steps 6] [--tp 2] [--dp 2]"};
  po::options_description opts("Benchmark");
  opts.add_options()("student", po::value<std::string>()->default_value("models/student-base.h5"), "student model")(
      "teacher", po::value<std::string>()->default_value("models/teacher.h5"), "teacher model")(
      "steps", po::value<int>()->default_value(6)->notifier(in_range("steps", 1, 100000)), "distillation steps")(
      "prompts-per-step", po::value<int>()->default_value(128)->notifier(in_range("prompts-per-step", 1, 1 << 20)),
      "prompts per step (one sample each)")(
      "micro-batch", po::value<int>()->default_value(32)->notifier(in_range("micro-batch", 1, 1 << 20)),
      "sequences per micro-batch (the unit sent to a teacher rank)")(
      "kl", po::value<std::string>()->default_value("full"), "sampled | full | topk:K")(
      "out", po::value<std::string>()->default_value("build/bench-step"),
      "scratch directory for the prompts and the run (shared by every rank)");
  add_layout_options(opts);
  add_runtime_options(opts);
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  auto world = MpiCommunicator::world();
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
              std::to_string(vm["prompts-per-step"].as<int>()), "--samples-per-prompt", "1", "--micro-batch",
              std::to_string(vm["micro-batch"].as<int>()), "--lr", "2e-3", "--eval-every", "0", "--samples-to-log",
              "0", "--overwrite", "--out", out + "/run", "--threads", std::to_string(vm["threads"].as<int>())};
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
              vm["kl"].as<std::string>().c_str(), vm["prompts-per-step"].as<int>());
  print_table(out + "/run/metrics.jsonl");
  return 0;
}

}  // namespace opd::cli
