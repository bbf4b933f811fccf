// libFuzzer target: the character tokenizer stored in model files (model/tokenizer), built from
// untrusted pieces and ids, then used on untrusted text and ids.
// Input, in fields separated by NUL bytes: the pieces (one per line), eos_id, pad_id, a text to
// encode, and token ids to decode (decimal, comma-separated).
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "fuzz_common.h"
#include "model/tokenizer.h"

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(item);
  return out;
}

int to_int(const std::string& s) {
  try {
    return std::stoi(s);
  } catch (...) {
    return -1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> fields = split(std::string(reinterpret_cast<const char*>(data), size), '\0');
  fields.resize(5);
  std::unique_ptr<opd::CharTokenizer> made;
  try {
    made = std::make_unique<opd::CharTokenizer>(split(fields[0], '\n'), to_int(fields[1]), to_int(fields[2]));
  } catch (const opd::Error&) {
    return 0;
  }
  const opd::CharTokenizer& tok = *made;
  try {
    const std::vector<int> ids = tok.encode(fields[3], "fuzz input");
    for (int id : ids) FUZZ_ASSERT(id >= 0 && id < tok.vocab_size(), "encode gives ids inside the vocabulary");
    FUZZ_ASSERT(tok.decode(ids) == fields[3], "decode(encode(text)) == text");
  } catch (const opd::Error&) {
  }
  try {
    std::vector<int> ids;
    for (const std::string& s : split(fields[4], ',')) ids.push_back(to_int(s));
    tok.decode(ids);
  } catch (const opd::Error&) {
  }
  return 0;
}
