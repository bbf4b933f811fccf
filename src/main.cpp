// opd: subcommand dispatch only.
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>

#include "cli/commands.h"
#include "core/error.h"
#include "parallel/mpi_check.h"
#include "parallel/solo_communicator.h"

namespace {

struct Subcommand {
  int (*run)(const opd::cli::Args&);
  const char* summary;
  // Whether it can run as an MPI job: it starts MPI when an MPI launcher started it. The others,
  // and these without a launcher, are one process and never start MPI: under Open MPI a singleton
  // MPI_Init forks a daemon (orted), which a GPU node, a login node or a container may lack.
  bool mpi = true;
};

const std::map<std::string, Subcommand>& subcommands() {
  static const std::map<std::string, Subcommand> table = {
      {"distill", {opd::cli::distill, "on-policy distillation: student samples, teacher scores every token"}},
      {"sft", {opd::cli::sft, "supervised fine-tuning on given or teacher-sampled completions"}},
      {"rl", {opd::cli::rl, "GRPO reinforcement learning with the task's verifier"}},
      {"eval", {opd::cli::eval, "accuracy of a model on a task (and reverse KL to a teacher)"}},
      {"sample", {opd::cli::sample, "completions with per-token student (and teacher) log-probs"}},
      {"inspect", {opd::cli::inspect, "a model, adapter or checkpoint file's contents, every checksum verified", false}},
      {"score", {opd::cli::score, "log-probabilities of every token of given sequences under a model"}},
      {"bench", {opd::cli::bench, "kernel, model and step throughput (bench ops, bench model, bench step)", false}},
      {"data", {opd::cli::data, "generate a built-in task's problems as JSONL (data arith)", false}},
      {"import", {opd::cli::import_model, "a Hugging Face Qwen3/Llama checkpoint directory -> an opd model file", false}},
      {"export", {opd::cli::export_model, "an opd model file -> a Hugging Face checkpoint directory (LoRA: + PEFT adapter)", false}},
      {"merge", {opd::cli::merge_model, "a LoRA run's adapters merged into their base -> a plain model file", false}},
  };
  return table;
}

void print_usage(std::ostream& os) {
  os << "usage: opd <subcommand> [options]   (opd <subcommand> --help for its options)\n\nsubcommands:\n";
  for (const auto& [name, sc] : subcommands()) os << "  " << name << std::string(10 - name.size(), ' ') << sc.summary << "\n";
  os << "\nopd --version prints the version.\n";
}

}  // namespace

int main(int argc, char** argv) {
  const auto found = argc < 2 ? subcommands().end() : subcommands().find(argv[1]);
  // `opd bench step` trains in the job's rank layout, so it starts MPI where other benchmarks do not;
  // on one GPU (--device cuda) it is one process again.
  bool one_gpu = false;
  for (int i = 3; i < argc; ++i)
    one_gpu |= !std::strcmp(argv[i], "--device=cuda") || (!std::strcmp(argv[i], "--device") && i + 1 < argc &&
                                                          !std::strcmp(argv[i + 1], "cuda"));
  const bool use_mpi =
      found != subcommands().end() && opd::launched_by_mpi() &&
      (found->second.mpi || (found->first == "bench" && argc > 2 && !std::strcmp(argv[2], "step") && !one_gpu));
  // MPI's default handler aborts the job on a failing call, before any of ours could run.
  if (use_mpi) MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  int code = 0;
  try {
    if (use_mpi) {
      MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
      MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world));
    }
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
      print_usage(argc < 2 ? std::cerr : std::cout);
      code = argc < 2 ? 2 : 0;
    } else if (!std::strcmp(argv[1], "--version")) {
      std::cout << "opd " << OPD_VERSION << "\n";
    } else {
      if (found == subcommands().end()) throw opd::Error(opd::str("unknown subcommand '", argv[1], "' (opd --help lists them)"));
      code = found->second.run(opd::cli::Args(argv + 2, argv + argc));
    }
  } catch (const std::exception& e) {
    // One write: stderr is unbuffered, and the launcher's own messages must not land mid-line.
    const std::string line = opd::str("opd: error", world > 1 ? opd::str(" on rank ", rank) : "", ": ", e.what(), "\n");
    std::fwrite(line.data(), 1, line.size(), stderr);
    // One failing rank brings the whole job down: no peer is left waiting on it.
    if (world > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    code = 1;
  }
  if (use_mpi) MPI_Finalize();
  return code;
}
