// JSON Lines input and output: one JSON object per line. Every parse error names file and line.
#pragma once
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace opd {

using json = nlohmann::json;

// Calls fn(object, line_number) for every non-blank line of `path`; a line that is not a JSON
// object is an error naming path:line. Exceptions from fn are rethrown with path:line prefixed.
void read_jsonl(const std::string& path, const std::function<void(const json&, int)>& fn);

// Appends objects one per line; flushes each line so a crash loses at most the line being written.
class JsonlWriter {
 public:
  explicit JsonlWriter(const std::string& path, bool append = false);
  void write(const json& object);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace opd
