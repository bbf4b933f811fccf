#include "core/jsonl.h"

#include "core/error.h"

namespace opd {

void read_jsonl(const std::string& path, const std::function<void(const json&, int)>& fn) {
  std::ifstream in(path);
  OPD_REQUIRE(in.good(), path, ": cannot open the file");
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json object;
    try {
      object = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(str(path, ":", lineno, ": not valid JSON (", e.what(), ")"));
    }
    OPD_REQUIRE(object.is_object(), path, ":", lineno, ": expected a JSON object, got ", object.type_name());
    try {
      fn(object, lineno);
    } catch (const json::exception& e) {
      throw Error(str(path, ":", lineno, ": ", e.what()));
    } catch (const Error& e) {
      throw Error(str(path, ":", lineno, ": ", e.what()));
    }
  }
}

JsonlWriter::JsonlWriter(const std::string& path, bool append)
    : path_(path), out_(path, append ? std::ios::app : std::ios::trunc) {
  OPD_REQUIRE(out_.good(), path, ": cannot open for writing");
}

void JsonlWriter::write(const json& object) {
  out_ << object.dump() << '\n';
  out_.flush();
  OPD_REQUIRE(out_.good(), path_, ": write failed (disk full?)");
}

}  // namespace opd
