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

// "no_loss": [[begin, end], ...]; absent: no spans.
std::vector<TextSpan> no_loss_field(const json& line, const std::string& completion) {
  if (!line.contains("no_loss")) return {};
  const json& v = line.at("no_loss");
  OPD_REQUIRE(v.is_array(), "field \"no_loss\" must be an array of [begin, end] pairs, got ", v.type_name());
  OPD_REQUIRE(!completion.empty() || v.empty(), "field \"no_loss\" marks spans of an empty completion");
  std::vector<TextSpan> spans;
  for (size_t i = 0; i < v.size(); ++i) {
    const json& pair = v[i];
    OPD_REQUIRE(pair.is_array() && pair.size() == 2 && pair[0].is_number_integer() && pair[1].is_number_integer(),
                "field \"no_loss\": entry ", i, " must be a pair of integers [begin, end], got ", pair.dump());
    const int64_t b = pair[0].get<int64_t>(), e = pair[1].get<int64_t>();
    OPD_REQUIRE(b >= 0 && e <= static_cast<int64_t>(completion.size()),
                "field \"no_loss\": span ", i, " [", b, ", ", e, ") lies outside the completion's ",
                completion.size(), " bytes");
    spans.push_back({static_cast<int>(b), static_cast<int>(e)});
  }
  try {
    validate_no_loss(spans, completion);
  } catch (const Error& e) {
    throw Error(str("field \"no_loss\": ", e.what()));
  }
  return spans;
}

std::vector<Example> load(const std::string& path, bool need_answer, bool need_completion) {
  std::vector<Example> examples;
  read_jsonl(path, [&](const json& line, int lineno) {
    Example e;
    e.origin = str(path, ":", lineno);
    e.prompt = string_field(line, "prompt", true);
    e.answer = string_field(line, "answer", need_answer);
    e.completion = string_field(line, "completion", need_completion);
    e.no_loss = no_loss_field(line, e.completion);
    examples.push_back(std::move(e));
  });
  OPD_REQUIRE(!examples.empty(), path, ": no examples (the file has no non-blank line)");
  return examples;
}

}  // namespace

std::vector<Example> load_prompts(const std::string& path) { return load(path, true, false); }

std::vector<Example> load_sft(const std::string& path) { return load(path, false, true); }

void validate_no_loss(const std::vector<TextSpan>& spans, const std::string& completion) {
  // A byte 10xxxxxx continues a UTF-8 character: a span may not start or end before one.
  auto splits_character = [&](int at) {
    return at < static_cast<int>(completion.size()) && (static_cast<unsigned char>(completion[at]) & 0xC0) == 0x80;
  };
  for (size_t i = 0; i < spans.size(); ++i) {
    const TextSpan& s = spans[i];
    OPD_REQUIRE(s.begin >= 0 && s.end <= static_cast<int>(completion.size()), "span ", i, " [", s.begin, ", ", s.end,
                ") lies outside the completion's ", completion.size(), " bytes");
    OPD_REQUIRE(s.begin < s.end, "span ", i, " [", s.begin, ", ", s.end, ") is empty (begin must be < end)");
    OPD_REQUIRE(i == 0 || spans[i - 1].end <= s.begin, "span ", i, " [", s.begin, ", ", s.end,
                ") overlaps or precedes span ", i - 1, " (spans must be in increasing order, disjoint)");
    OPD_REQUIRE(!splits_character(s.begin) && !splits_character(s.end), "span ", i, " [", s.begin, ", ", s.end,
                ") splits a UTF-8 character (offsets are bytes)");
  }
}

void write_examples(const std::string& path, const std::vector<Example>& examples) {
  JsonlWriter out(path);
  for (const Example& e : examples) {
    json line = {{"prompt", e.prompt}, {"answer", e.answer}, {"completion", e.completion}};
    if (!e.no_loss.empty()) {
      line["no_loss"] = json::array();
      for (const TextSpan& s : e.no_loss) line["no_loss"].push_back({s.begin, s.end});
    }
    out.write(line);
  }
}

}  // namespace opd
