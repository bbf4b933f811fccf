// What every fuzz target shares: a scratch file per process for parsers that read paths, and the
// rule that opd::Error is the one accepted way to reject an input (anything else is a finding).
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace opd::fuzz {

// A path under $TMPDIR (or /tmp) unique to this process; `suffix` e.g. ".jsonl".
inline std::string scratch_path(const std::string& suffix) {
  return (std::filesystem::temp_directory_path() / ("opd_fuzz_" + std::to_string(::getpid()) + suffix)).string();
}

inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out.good()) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// A property the parser promised and broke: a finding, reported like a crash.
#define FUZZ_ASSERT(cond, what)                                                   \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "fuzz: property violated: %s (%s)\n", what, #cond);    \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

}  // namespace opd::fuzz
