// The malformed-input corpus (tests/bad-inputs/CASES) through the opd executable: every case ends
// with an exit code in [1, 127] (an error, not a crash or a signal) and a short message that names
// the file or option at fault and what is wrong with it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "common/python.h"
#include "run.h"

namespace opd {
namespace {

struct Case {
  int line = 0;
  std::string file, args, expected, what;
};

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(' '), b = s.find_last_not_of(' ');
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::string substitute(std::string s, const std::string& key, const std::string& value) {
  for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + value.size()))
    s.replace(at, key.size(), value);
  return s;
}

std::vector<Case> read_cases(const std::string& path) {
  std::vector<Case> cases;
  std::ifstream in(path);
  int lineno = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    if (trim(line).empty() || trim(line)[0] == '#') continue;
    std::vector<std::string> fields;
    for (size_t start = 0;;) {
      const size_t bar = line.find(" | ", start);
      fields.push_back(trim(line.substr(start, bar == std::string::npos ? std::string::npos : bar - start)));
      if (bar == std::string::npos) break;
      start = bar + 3;
    }
    EXPECT_EQ(fields.size(), 4u) << path << ":" << lineno << ": expected 4 fields separated by \" | \"";
    if (fields.size() == 4) cases.push_back({lineno, fields[0], fields[1], fields[2], fields[3]});
  }
  return cases;
}

TEST(BadInputs, EveryCaseFailsCleanlyNamingTheFileAndTheFault) {
  const std::string in = std::string(OPD_SOURCE_DIR) + "/tests/bad-inputs";
  const std::string gen = testing::temp_dir("bad_inputs_gen"), scratch = testing::temp_dir("bad_inputs_tmp");
  ASSERT_EQ(testing::python_lacks("h5py numpy"), "");
  ASSERT_EQ(std::system((testing::python() + " " + in + "/make-h5-cases " + gen).c_str()), 0);
  const std::vector<Case> cases = read_cases(in + "/CASES");
  ASSERT_GE(cases.size(), 30u);
  // Each opd run spends most of its half second starting MPI, not computing: sixteen at a time.
  std::vector<std::string> commands;
  std::vector<std::string> files;
  for (const Case& c : cases) {
    const std::string tmp = scratch + "/" + std::to_string(c.line);
    std::filesystem::create_directories(tmp);
    const std::string file = substitute(substitute(c.file, "{in}", in), "{gen}", gen);
    std::string args = substitute(substitute(substitute(c.args, "{file}", file), "{in}", in), "{gen}", gen);
    commands.push_back(substitute(args, "{tmp}", tmp));
    files.push_back(file);
  }
  std::vector<testing::Result> results(cases.size());
  for (size_t first = 0; first < cases.size(); first += 16) {
    std::vector<std::future<testing::Result>> running;
    for (size_t i = first; i < std::min(cases.size(), first + 16); ++i)
      running.push_back(std::async(std::launch::async, testing::run_opd, commands[i], "OMP_NUM_THREADS=1"));
    for (size_t i = first; i < std::min(cases.size(), first + 16); ++i) results[i] = running[i - first].get();
  }

  int controls = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const testing::Result& r = results[i];
    SCOPED_TRACE("CASES:" + std::to_string(c.line) + " (" + c.what + "): opd " + commands[i] + "\n" + r.output);
    if (c.expected == "CONTROL") {
      ++controls;
      EXPECT_EQ(r.code, 0);
      continue;
    }
    EXPECT_GE(r.code, 1);
    EXPECT_LT(r.code, 128);
    EXPECT_NE(r.output.find("opd: error"), std::string::npos);
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << "expected: " << c.expected;
    if (c.file != "-")
      EXPECT_NE(r.output.find(std::filesystem::path(files[i]).filename().string()), std::string::npos)
          << "the message does not name the file";
    EXPECT_LT(r.output.size(), 2000u) << "a message, not a flood";
  }
  EXPECT_EQ(controls, 3);
}

}  // namespace
}  // namespace opd
