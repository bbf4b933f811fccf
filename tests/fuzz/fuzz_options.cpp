// libFuzzer target: INI configuration files and command-line values (core/options), parsed
// against options of every value type and range check the subcommands use.
// Input: the INI file's text, a NUL byte, then one command-line argument per line.
// Whatever parses must come back unchanged through resolved_ini, the text a run directory keeps as
// config.ini and a user passes back with --config.
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/options.h"
#include "fuzz_common.h"

namespace {

using namespace opd;

void describe(po::options_description& d) {
  d.add_options()("steps", po::value<int>()->default_value(50)->notifier(in_range("steps", 1, 10000000)), "")(
      "top-k", po::value<int>()->default_value(0)->notifier(in_range("top-k", 0, 1 << 24)), "")(
      "temperature", po::value<float>()->default_value(1.0f)->notifier(in_range("temperature", 0.0f, 100.0f)), "")(
      "top-p", po::value<float>()->default_value(1.0f)->notifier(in_range("top-p", 1e-6f, 1.0f)), "")(
      "lr", po::value<double>()->default_value(5e-4)->notifier(in_range("lr", 0.0, 10.0)), "")(
      "reward-coef", po::value<double>()->default_value(0.0)->notifier(in_range("reward-coef", -1e6, 1e6)), "")(
      "seed", po::value<uint64_t>()->default_value(1), "")(
      "kl", po::value<std::string>()->default_value("sampled"), "")(
      "label", po::value<std::string>()->default_value(""), "")(
      "student", po::value<std::string>()->notifier(non_empty("student")), "")(
      "out", po::value<std::string>()->required(), "")(
      "stop-at-target", po::bool_switch(), "")(
      "overwrite", po::bool_switch(), "");
}

// INI has no quoting: a value with a comment sign, a line break or surrounding blanks cannot be
// written back as it was (parse_options rejects line breaks; the others stay a user's choice).
bool ini_representable(const po::variables_map& vm) {
  for (const auto& [key, value] : vm)
    if (auto p = boost::any_cast<std::string>(&value.value())) {
      if (p->find_first_of("#\n\r") != std::string::npos) return false;
      if (!p->empty() && (std::isspace(static_cast<unsigned char>(p->front())) ||
                          std::isspace(static_cast<unsigned char>(p->back()))))
        return false;
    }
  return true;
}

// The same options with the same values (defaulted or not: config.ini spells defaults out too).
template <typename T>
bool same_as(const boost::any& a, const boost::any& b) {
  const T* x = boost::any_cast<T>(&a);
  const T* y = boost::any_cast<T>(&b);
  if (!x || !y) return false;
  if constexpr (std::is_floating_point_v<T>) return std::memcmp(x, y, sizeof(T)) == 0;  // bit for bit
  else return *x == *y;
}

bool same_values(const po::variables_map& a, const po::variables_map& b) {
  for (const auto& [key, value] : a) {
    if (key == "help" || key == "config" || value.empty()) continue;
    if (!b.count(key)) return false;
    const boost::any &x = value.value(), &y = b[key].value();
    if (!(same_as<std::string>(x, y) || same_as<int>(x, y) || same_as<float>(x, y) || same_as<double>(x, y) ||
          same_as<uint64_t>(x, y) || same_as<bool>(x, y))) {
      std::fprintf(stderr, "fuzz: option %s changed\n", key.c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::cout.setstate(std::ios::badbit);  // --help output is not interesting here
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string ini = input.substr(0, nul);
  std::vector<std::string> args;
  if (nul != std::string::npos) {
    std::istringstream in(input.substr(nul + 1));
    for (std::string arg; std::getline(in, arg);) args.push_back(arg);
  }
  const std::string path = opd::fuzz::scratch_path(".ini");
  opd::fuzz::write_bytes(path, data, ini.size());
  args.push_back("--config=" + path);

  const Command cmd{"fuzz", "", ""};
  po::options_description opts;
  describe(opts);
  po::variables_map vm;
  try {
    if (!parse_options(cmd, args, opts, vm)) return 0;
  } catch (const opd::Error&) {
    return 0;
  }
  if (!ini_representable(vm)) return 0;
  const std::string resolved = resolved_ini(vm);
  opd::fuzz::write_bytes(path, reinterpret_cast<const uint8_t*>(resolved.data()), resolved.size());
  po::options_description again;
  describe(again);
  po::variables_map vm2;
  try {
    parse_options(cmd, {"--config=" + path}, again, vm2);
  } catch (const opd::Error& e) {
    std::fprintf(stderr, "%s\nresolved:\n%s\n", e.what(), resolved.c_str());
    FUZZ_ASSERT(false, "the resolved configuration parses again");
  }
  if (!same_values(vm, vm2)) std::fprintf(stderr, "resolved:\n%s\n", resolved.c_str());
  FUZZ_ASSERT(same_values(vm, vm2), "the resolved configuration reads back with the same values");
  return 0;
}
