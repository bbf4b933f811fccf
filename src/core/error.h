// The one error type of opd, and the macros that check every library call through it.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace opd {

// Every failure opd reports is an Error whose message names what is at fault: a file, a field,
// an option, a rank or a library call with its source location.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

[[noreturn]] void fail_call(const char* call, const std::string& detail, const char* file, int line);

}  // namespace opd

// A precondition on an input: `OPD_REQUIRE(n > 0, "--steps must be positive, got ", n)`.
#define OPD_REQUIRE(cond, ...) \
  do {                          \
    if (!(cond)) throw ::opd::Error(::opd::str(__VA_ARGS__)); \
  } while (0)

// MPI and HDF5 checks live next to their users (parallel/mpi_check.h, io/h5_check.h) so that
// this header needs neither library; CUDA ones are in kernels/cuda/cuda_check.cuh.
