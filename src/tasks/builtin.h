// Built-in task sets named on the command line, e.g. "arith:general,arith:domain": problems
// generated on the fly, so evaluating several skills at once needs no data files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tasks/dataset.h"

namespace opd {

struct NamedExamples {
  std::string name;  // "arith:general", or a file's path
  std::vector<Example> examples;
};

// Parses a comma-separated list of task specs ("arith" means "arith:general") and generates n
// problems of each from `seed`; an unknown task or skill is an error naming it. "arith:slip-probe"
// is arith:general's problems with a slip injected into the start of the chain that the prompt
// carries (make_slip_probe): a model's accuracy there is its rate of recovery from a slip.
std::vector<NamedExamples> builtin_task_sets(const std::string& specs, int n, uint64_t seed);

// The evaluation sets of a command: the JSONL file `file` first (its first n examples; n 0 = all),
// then the generated `tasks` (n problems each, 200 when n is 0). Either may be empty.
std::vector<NamedExamples> eval_sets(const std::string& file, const std::string& tasks, int n, uint64_t seed);

// Read a comma-separated list of JSONL files into one set, in order (prompt sets; SFT sets).
std::vector<Example> load_prompt_files(const std::string& paths);
std::vector<Example> load_sft_files(const std::string& paths);

}  // namespace opd
