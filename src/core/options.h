// Command-line and INI configuration for every subcommand, on Boost.Program_options: grouped
// --help, `--config FILE.ini` with command-line values overriding it, unknown options and keys
// rejected by name, every value range-checked as it is stored.
#pragma once
#include <boost/program_options.hpp>
#include <functional>
#include <string>

#include "core/error.h"

namespace opd {

namespace po = boost::program_options;

struct Command {
  std::string name;     // e.g. "score"
  std::string summary;  // one line for `opd --help`
  std::string usage;    // e.g. "opd score --model M.h5 --input in.jsonl --output out.jsonl"
};

// Parses args (without the program and subcommand names) against `groups`; adds --help and
// --config. Returns false when --help was asked for (and printed). Errors become opd::Error
// naming the option or the INI file and key.
bool parse_options(const Command& cmd, const std::vector<std::string>& args, po::options_description& groups,
                   po::variables_map& vm);

// The resolved configuration as INI text (every option with a value), for run directories and --dry-run.
std::string resolved_ini(const po::variables_map& vm);

// Notifiers that reject out-of-range values, naming the option.
template <typename T>
std::function<void(const T&)> in_range(const std::string& key, T lo, T hi) {
  return [key, lo, hi](const T& v) {
    OPD_REQUIRE(v >= lo && v <= hi, "option --", key, " = ", v, " is out of range [", lo, ", ", hi, "]");
  };
}
std::function<void(const std::string&)> non_empty(const std::string& key);

}  // namespace opd
