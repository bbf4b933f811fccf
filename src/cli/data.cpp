// opd data: writes a built-in task's problems as JSONL (prompt, answer, ground-truth completion).
#include <cstdint>
#include <iostream>

#include "cli/commands.h"
#include "core/options.h"
#include "tasks/arith.h"
#include "tasks/dataset.h"

namespace opd::cli {

namespace {

const char* const kTasks = "arith";

int data_arith(const Args& args) {
  const Command cmd{"data arith",
                    "Writes arithmetic problems with their answers and ground-truth chains of thought.\nProblem i is a "
                    "function of (--seed, i) alone: disjoint --offset ranges give disjoint splits.",
                    "opd data arith --n N --seed S [--skill general|domain] [--terms K] [--digits D] [--slip-rate P] "
                    "[--offset I] --out FILE.jsonl"};
  po::options_description opts("Task arith");
  opts.add_options()("n", po::value<int>()->required()->notifier(in_range("n", 1, 100000000)), "problems to write")(
      "seed", po::value<int64_t>()->required()->notifier(in_range<int64_t>("seed", 0, INT64_MAX)), "generator seed")(
      "skill", po::value<std::string>()->default_value("general")->notifier([](const std::string& s) {
        OPD_REQUIRE(s == "general" || s == "domain", "option --skill must be general or domain, got '", s, "'");
      }),
      "general: chains of + and -; domain: chains of *")(
      "terms", po::value<int>()->default_value(3)->notifier(in_range("terms", 2, 6)), "operands per problem")(
      "digits", po::value<int>()->default_value(3)->notifier(in_range("digits", 1, 5)), "most digits of an operand")(
      "slip-rate", po::value<double>()->default_value(0.0)->notifier(in_range("slip-rate", 0.0, 0.999)),
      "general: chance that a computed number is first written with a wrong digit, erased with '*' and written "
      "again; the wrong digit is marked \"no_loss\" (SFT does not train on it)")(
      "offset", po::value<int64_t>()->default_value(0)->notifier(in_range<int64_t>("offset", 0, INT64_MAX / 2)),
      "index of the first problem")("out", po::value<std::string>()->required()->notifier(non_empty("out")),
                                    "JSONL output");
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;

  ArithConfig config;
  config.skill = vm["skill"].as<std::string>();
  config.terms = vm["terms"].as<int>();
  config.digits = vm["digits"].as<int>();
  config.slip_rate = vm["slip-rate"].as<double>();
  validate(config);
  const int n = vm["n"].as<int>();
  const uint64_t seed = vm["seed"].as<int64_t>(), offset = vm["offset"].as<int64_t>();
  std::vector<Example> examples;
  examples.reserve(n);
  for (int i = 0; i < n; ++i) {
    ArithProblem p = make_problem(config, seed, offset + i);
    Example e{std::move(p.prompt), std::move(p.answer), std::move(p.completion)};
    e.no_loss = std::move(p.no_loss);
    examples.push_back(std::move(e));
  }
  const std::string out = vm["out"].as<std::string>();
  write_examples(out, examples);
  std::cerr << "data: wrote " << n << " arith problems (skill " << config.skill << ", terms " << config.terms
            << ", digits " << config.digits << (config.slip_rate > 0 ? str(", slip rate ", config.slip_rate) : "")
            << ", seed " << seed << ", indices " << offset << ".." << offset + n - 1
            << ") to " << out << "\n";
  return 0;
}

}  // namespace

int data(const Args& args) {
  const std::string usage = str("usage: opd data <task> [options]   (opd data <task> --help for its options)\ntasks: ",
                                kTasks, "\n");
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << usage;
    return 0;
  }
  OPD_REQUIRE(!args.empty(), "opd data: name a task (known tasks: ", kTasks, ")");
  if (args[0] == "arith") return data_arith(Args(args.begin() + 1, args.end()));
  throw Error(str("opd data: unknown task '", args[0], "' (known tasks: ", kTasks, ")"));
}

}  // namespace opd::cli
