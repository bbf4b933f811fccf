#include "core/durable.h"

#include <cstdlib>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace opd {

namespace {
void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  OPD_REQUIRE(fd >= 0, path, ": cannot open to sync (", std::strerror(errno), ")");
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  OPD_REQUIRE(rc == 0, path, ": fsync failed (", std::strerror(err), ")");
}
}  // namespace

void publish_file(const std::string& tmp, const std::string& path) {
  fsync_path(tmp, O_RDONLY);
  OPD_REQUIRE(std::rename(tmp.c_str(), path.c_str()) == 0, path, ": cannot rename ", tmp, " into place (",
              std::strerror(errno), ")");
  std::string dir = std::filesystem::path(path).parent_path().string();
  fsync_path(dir.empty() ? "." : dir, O_RDONLY | O_DIRECTORY);
}

void crash_drill(const char* name, int64_t step) {
  const char* at = std::getenv(name);
  if (at && step >= 0 && std::atoll(at) == step) std::_Exit(97);
}

}  // namespace opd
