#include "core/options.h"

#include <fstream>
#include <iostream>
#include <sstream>

namespace opd {

std::function<void(const std::string&)> non_empty(const std::string& key) {
  return [key](const std::string& v) { OPD_REQUIRE(!v.empty(), "option --", key, " must not be empty"); };
}

bool parse_options(const Command& cmd, const std::vector<std::string>& args, po::options_description& groups,
                   po::variables_map& vm) {
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
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream in(path);
      OPD_REQUIRE(in.good(), "--config ", path, ": cannot open the file");
      try {
        // Values stored first win, so the command line keeps precedence over the file.
        po::store(po::parse_config_file(in, groups, /*allow_unregistered=*/false), vm);
      } catch (const po::error& e) {
        throw Error(str("--config ", path, ": ", e.what()));
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw Error(str("opd ", cmd.name, ": ", e.what(), " (see opd ", cmd.name, " --help)"));
  }
  return true;
}

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
    else if (auto p = boost::any_cast<double>(&v)) os << *p;
    else if (auto p = boost::any_cast<float>(&v)) os << *p;
    else if (auto p = boost::any_cast<bool>(&v)) os << (*p ? "true" : "false");
    else os << "?";
    os << "\n";
  }
  return os.str();
}

}  // namespace opd
