// Check for NCCL calls: a failure throws opd::Error naming the call, file and line, with NCCL's
// result string and the text of its last error (ncclGetLastError), which says what was wrong
// ("invalid argument" alone does not). Only for builds with NCCL (OPD_WITH_NCCL).
#pragma once
#include <nccl.h>

#include <string>

#include "core/error.h"

namespace opd {

inline std::string nccl_error_detail(ncclResult_t rc) {
  std::string detail = ncclGetErrorString(rc);
  // NCCL keeps one last-error text per process and never clears it (the argument is unused), so
  // it is reported only next to a failed call, where it is this call's own in all but a race.
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') detail += str("; NCCL's last error: ", last);
  return detail;
}

}  // namespace opd

#define NCCL_CHECK(call)                                                                     \
  do {                                                                                       \
    ncclResult_t opd_nccl_rc_ = (call);                                                      \
    if (opd_nccl_rc_ != ncclSuccess)                                                         \
      ::opd::fail_call(#call, ::opd::nccl_error_detail(opd_nccl_rc_), __FILE__, __LINE__);   \
  } while (0)
