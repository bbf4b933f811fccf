// Making a finished file durable: contents to disk before the rename that publishes it, and the
// directory entry after it, so a crash or power loss leaves either the old file or the new one.
#pragma once
#include <string>

namespace opd {

// fsync(tmp), rename(tmp, path), fsync(directory of path); errors name the path.
void publish_file(const std::string& tmp, const std::string& path);

}  // namespace opd
