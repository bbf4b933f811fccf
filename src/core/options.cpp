#include "core/options.h"

#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

namespace opd {

std::function<void(const std::string&)> non_empty(const std::string& key) {
  return [key](const std::string& v) { OPD_REQUIRE(!v.empty(), "option --", key, " must not be empty"); };
}

namespace {

// Boost.Program_options fills its error messages by replacing %name% placeholders with the
// offending text, again and again until none is left: a value or option name that itself contains
// "%name%" makes that loop forever. Such text is refused before Boost sees it.
bool has_placeholder(const std::string& s) {
  for (size_t open = s.find('%'); open != std::string::npos; open = s.find('%', open + 1)) {
    size_t i = open + 1;
    while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
    if (i > open + 1 && i < s.size() && s[i] == '%') return true;
  }
  return false;
}

std::string read_config_file(const std::string& path) {
  std::error_code ec;
  OPD_REQUIRE(std::filesystem::is_regular_file(path, ec), "--config ", path, ": no such file (or not a regular file)");
  std::ifstream in(path, std::ios::binary);
  OPD_REQUIRE(in.good(), "--config ", path, ": cannot open the file");
  std::stringstream text;
  text << in.rdbuf();
  std::istringstream lines(text.str());
  int lineno = 0;
  for (std::string line; std::getline(lines, line);) {
    ++lineno;
    OPD_REQUIRE(!has_placeholder(line), "--config ", path, ":", lineno, ": text of the form %name% is not accepted");
  }
  return text.str();
}

}  // namespace

bool parse_options(const Command& cmd, const std::vector<std::string>& args, po::options_description& groups,
                   po::variables_map& vm) {
  for (const std::string& a : args)
    OPD_REQUIRE(!has_placeholder(a), "opd ", cmd.name, ": argument '", a, "': text of the form %name% is not accepted");
  po::options_description general("General");
  general.add_options()("help,h", "show this help and exit")(
      "config", po::value<std::string>(), "read options from an INI file (command-line values override it)");
  po::options_description all;
  all.add(general).add(groups);
  try {
    po::store(po::command_line_parser(args).options(all).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << cmd.usage << "\n\n" << cmd.summary << "\n\n" << all << "\n";
      return false;
    }
    std::string config_path;
    std::set<std::string> from_file;  // options whose value comes from the INI file
    if (vm.count("config")) {
      config_path = vm["config"].as<std::string>();
      std::istringstream in(read_config_file(config_path));
      try {
        const po::parsed_options parsed = po::parse_config_file(in, groups, /*allow_unregistered=*/false);
        for (const po::option& o : parsed.options)
          if (!vm.count(o.string_key) || vm[o.string_key].defaulted()) from_file.insert(o.string_key);
        // Values stored first win, so the command line keeps precedence over the file.
        po::store(parsed, vm);
      } catch (const po::error& e) {
        throw Error(str("--config ", config_path, ": ", e.what()));
      }
    }
    try {
      po::notify(vm);
    } catch (const Error& e) {
      // A range check names the option; say too when its value came from the INI file.
      const std::string what = e.what();
      for (const std::string& key : from_file)
        if (what.find("--" + key + " ") != std::string::npos) throw Error(str("--config ", config_path, ": ", what));
      throw;
    }
  } catch (const po::error& e) {
    throw Error(str("opd ", cmd.name, ": ", e.what(), " (see opd ", cmd.name, " --help)"));
  }
  return true;
}

namespace {
// The shortest text that reads back as the same number: config.ini must reproduce the run
// (the stream default of 6 digits turned --lr 0.000123456789 into 0.000123457).
template <typename T>
std::string exact(T value) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, r.ptr);
}
}  // namespace

std::string resolved_ini(const po::variables_map& vm) {
  std::ostringstream os;
  for (const auto& [key, value] : vm) {
    if (key == "help" || key == "config" || value.empty()) continue;
    const boost::any& v = value.value();
    os << key << " = ";
    if (auto p = boost::any_cast<std::string>(&v)) os << *p;
    else if (auto p = boost::any_cast<int>(&v)) os << *p;
    else if (auto p = boost::any_cast<int64_t>(&v)) os << *p;
    else if (auto p = boost::any_cast<uint64_t>(&v)) os << *p;
    else if (auto p = boost::any_cast<double>(&v)) os << exact(*p);
    else if (auto p = boost::any_cast<float>(&v)) os << exact(*p);
    else if (auto p = boost::any_cast<bool>(&v)) os << (*p ? "true" : "false");
    else os << "?";
    os << "\n";
  }
  return os.str();
}

}  // namespace opd
