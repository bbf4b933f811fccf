#pragma once
#include <mpi.h>

#include "core/error.h"

namespace opd {
inline std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, len);
}
}  // namespace opd

#define MPI_CHECK(call)                                                              \
  do {                                                                               \
    int opd_mpi_rc_ = (call);                                                        \
    if (opd_mpi_rc_ != MPI_SUCCESS)                                                  \
      ::opd::fail_call(#call, ::opd::mpi_error_string(opd_mpi_rc_), __FILE__, __LINE__); \
  } while (0)
