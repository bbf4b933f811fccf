// Making a finished file durable: contents to disk before the rename that publishes it, and the
// directory entry after it, so a crash or power loss leaves either the old file or the new one.
#pragma once
#include <cstdint>
#include <string>

namespace opd {

// fsync(tmp), rename(tmp, path), fsync(directory of path); errors name the path.
void publish_file(const std::string& tmp, const std::string& path);

// Crash drills for tests, at the points of a checkpoint save where a crash must leave the previous
// checkpoint intact: the process dies at once (exit 97) when environment variable `name` holds
// `step`. OPD_FAULT_MID_SAVE: with the tensors half written; OPD_FAULT_BEFORE_RENAME: with the file
// complete but not yet renamed into place.
void crash_drill(const char* name, int64_t step);

}  // namespace opd
