#include "core/error.h"

namespace opd {

void fail_call(const char* call, const std::string& detail, const char* file, int line) {
  throw Error(str(call, " failed: ", detail, " (", file, ":", line, ")"));
}

}  // namespace opd
