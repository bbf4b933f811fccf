// The one Python the tests run (for h5py, numpy, matplotlib): $OPD_PYTHON, which CMake sets on
// every test to the interpreter it found at configure time, else /usr/bin/python3 (what
// tools/install-deps provisions) for a test binary started by hand. Never the first python3 on
// PATH, which may be one without those modules.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

namespace opd::testing {

inline std::string python() {
  const char* p = std::getenv("OPD_PYTHON");
  return p && *p ? p : "/usr/bin/python3";
}

// Empty when python() has every one of `modules` (space-separated), else a message naming the
// missing ones and how to get them: a test checks this first, so that a missing module is reported
// as one, not as a failed check of what the module would have read.
inline std::string python_lacks(const std::string& modules) {
  const std::string cmd = python() +
                          " -c 'import importlib.util, sys; print(\" \".join(m for m in sys.argv[1:] "
                          "if importlib.util.find_spec(m) is None))' " +
                          modules + " 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "could not start " + python();
  char buf[512];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  const std::string fix = ": run tools/install-deps, or configure with -DOPD_PYTHON=<a python3 that has them>";
  if (status != 0) return "the tests' Python " + python() + " does not run (" + out + ")" + fix;
  if (!out.empty()) return "the tests' Python " + python() + " lacks the module(s) " + out + fix;
  return "";
}

}  // namespace opd::testing
