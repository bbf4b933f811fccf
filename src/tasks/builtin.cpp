#include "tasks/builtin.h"

#include <sstream>

#include "core/error.h"
#include "tasks/arith.h"

namespace opd {

namespace {
std::vector<std::string> split_commas(const std::string& text, const std::string& what) {
  std::vector<std::string> parts;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    OPD_REQUIRE(!item.empty(), what, " '", text, "' has an empty entry");
    parts.push_back(item);
  }
  OPD_REQUIRE(!parts.empty(), what, " is empty");
  return parts;
}
}  // namespace

std::vector<NamedExamples> builtin_task_sets(const std::string& specs, int n, uint64_t seed) {
  OPD_REQUIRE(n > 0, "task sets need a positive number of problems, got ", n);
  std::vector<NamedExamples> sets;
  for (const std::string& spec : split_commas(specs, "task list")) {
    const size_t colon = spec.find(':');
    const std::string task = spec.substr(0, colon);
    OPD_REQUIRE(task == "arith", "task '", spec, "': unknown task '", task, "' (known: arith)");
    ArithConfig c;
    if (colon != std::string::npos) c.skill = spec.substr(colon + 1);
    // slip-probe: general problems whose prompt carries the chain up to an injected wrong digit.
    const bool probe = c.skill == "slip-probe";
    OPD_REQUIRE(c.skill == "general" || c.skill == "domain" || probe, "task '", spec, "': unknown skill '", c.skill,
                "' (known: general, domain, slip-probe)");
    NamedExamples set{"arith:" + c.skill, {}};
    if (probe) c.skill = "general";
    for (int i = 0; i < n; ++i) {
      const ArithProblem p = probe ? make_slip_probe(c, seed, static_cast<uint64_t>(i))
                                   : make_problem(c, seed, static_cast<uint64_t>(i));
      set.examples.push_back({p.prompt, p.answer, p.completion});
    }
    sets.push_back(std::move(set));
  }
  return sets;
}

std::vector<NamedExamples> eval_sets(const std::string& file, const std::string& tasks, int n, uint64_t seed) {
  std::vector<NamedExamples> sets;
  if (!file.empty()) {
    sets.push_back({file, load_prompts(file)});
    if (n > 0 && n < static_cast<int>(sets.back().examples.size())) sets.back().examples.resize(n);
  }
  if (!tasks.empty())
    for (auto& set : builtin_task_sets(tasks, n > 0 ? n : 200, seed)) sets.push_back(std::move(set));
  return sets;
}

namespace {
std::vector<Example> load_files(const std::string& paths, std::vector<Example> (*load)(const std::string&)) {
  std::vector<Example> all;
  for (const std::string& path : split_commas(paths, "file list")) {
    auto part = load(path);
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}
}  // namespace

std::vector<Example> load_prompt_files(const std::string& paths) { return load_files(paths, load_prompts); }
std::vector<Example> load_sft_files(const std::string& paths) { return load_files(paths, load_sft); }

}  // namespace opd
