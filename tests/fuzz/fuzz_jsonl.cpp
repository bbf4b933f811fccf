// libFuzzer target: JSON Lines data sets (core/jsonl, tasks/dataset) as prompt and as SFT files.
// The input is the file's bytes. Whatever loads must survive write_examples and load again
// unchanged (the data commands write what the trainers read).
#include <cstdint>

#include "core/error.h"
#include "fuzz_common.h"
#include "tasks/dataset.h"

namespace {

bool same(const std::vector<opd::Example>& a, const std::vector<opd::Example>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].prompt != b[i].prompt || a[i].answer != b[i].answer || a[i].completion != b[i].completion) return false;
  return true;
}

void load_and_round_trip(const std::string& path, std::vector<opd::Example> (*load)(const std::string&)) {
  std::vector<opd::Example> examples;
  try {
    examples = load(path);
  } catch (const opd::Error&) {
    return;  // rejected with a message: the expected outcome for most inputs
  }
  FUZZ_ASSERT(!examples.empty(), "a data set that loads has examples");
  const std::string copy = opd::fuzz::scratch_path(".copy.jsonl");
  opd::write_examples(copy, examples);
  FUZZ_ASSERT(same(load(copy), examples), "write_examples then load gives the same examples");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = opd::fuzz::scratch_path(".jsonl");
  opd::fuzz::write_bytes(path, data, size);
  load_and_round_trip(path, opd::load_prompts);
  load_and_round_trip(path, opd::load_sft);
  return 0;
}
