#include "tasks/dataset.h"

#include "core/error.h"
#include "core/jsonl.h"

namespace opd {

namespace {

// The field's string value; "" when it is optional and absent. read_jsonl prefixes path:line.
std::string string_field(const json& line, const char* key, bool required) {
  if (!line.contains(key)) {
    OPD_REQUIRE(!required, "missing field \"", key, "\"");
    return {};
  }
  const json& v = line.at(key);
  OPD_REQUIRE(v.is_string(), "field \"", key, "\" must be a string, got ", v.type_name());
  std::string s = v.get<std::string>();
  OPD_REQUIRE(!required || !s.empty(), "field \"", key, "\" is empty");
  return s;
}

std::vector<Example> load(const std::string& path, bool need_answer, bool need_completion) {
  std::vector<Example> examples;
  read_jsonl(path, [&](const json& line, int lineno) {
    Example e;
    e.origin = str(path, ":", lineno);
    e.prompt = string_field(line, "prompt", true);
    e.answer = string_field(line, "answer", need_answer);
    e.completion = string_field(line, "completion", need_completion);
    examples.push_back(std::move(e));
  });
  OPD_REQUIRE(!examples.empty(), path, ": no examples (the file has no non-blank line)");
  return examples;
}

}  // namespace

std::vector<Example> load_prompts(const std::string& path) { return load(path, true, false); }

std::vector<Example> load_sft(const std::string& path) { return load(path, false, true); }

void write_examples(const std::string& path, const std::vector<Example>& examples) {
  JsonlWriter out(path);
  for (const Example& e : examples) out.write({{"prompt", e.prompt}, {"answer", e.answer}, {"completion", e.completion}});
}

}  // namespace opd
