#include "core/jsonl.h"

#include "core/error.h"

#include <filesystem>

namespace opd {

namespace {

constexpr size_t kMaxLineBytes = size_t(16) << 20;

// std::getline would grow one line without bound when a large binary file is given as data.
bool next_line(std::istream& in, std::string& line, const std::string& path, int lineno) {
  line.clear();
  std::streambuf* buf = in.rdbuf();
  for (int c = buf->sbumpc(); c != std::char_traits<char>::eof(); c = buf->sbumpc()) {
    if (c == '\n') return true;
    OPD_REQUIRE(line.size() < kMaxLineBytes, path, ":", lineno, ": line longer than ", kMaxLineBytes >> 20,
                " MiB (is this a JSON Lines file?)");
    line.push_back(static_cast<char>(c));
  }
  return !line.empty();
}

// The parser's message quotes what it last read, which can be a whole megabyte-long line or
// bytes that are not text: kept short and printable.
std::string printable(const std::string& s, size_t max = 200) {
  std::string out;
  for (size_t i = 0; i < s.size() && out.size() < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (out.size() >= max) out += "...";
  return out;
}

}  // namespace

void read_jsonl(const std::string& path, const std::function<void(const json&, int)>& fn) {
  std::error_code ec;
  OPD_REQUIRE(!std::filesystem::is_directory(path, ec), path, ": is a directory, not a JSON Lines file");
  std::ifstream in(path, std::ios::binary);
  OPD_REQUIRE(in.good(), path, ": cannot open the file");
  std::string line;
  int lineno = 0;
  while (next_line(in, line, path, lineno + 1)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json object;
    try {
      object = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(str(path, ":", lineno, ": not valid JSON (", printable(e.what()), ")"));
    }
    OPD_REQUIRE(object.is_object(), path, ":", lineno, ": expected a JSON object, got ", object.type_name());
    try {
      fn(object, lineno);
    } catch (const json::exception& e) {
      throw Error(str(path, ":", lineno, ": ", printable(e.what())));
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
