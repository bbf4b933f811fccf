// Model files (ARCHITECTURE §5, the /model group): config attributes, the tokenizer, and one
// float32 dataset per tensor under its Hugging Face name, each with a crc32 attribute checked on load.
// Checkpoints hold the same /model group, so the reader and writer of that group live here.
#pragma once
#include <memory>
#include <string>

#include "io/h5.h"
#include "model/transformer.h"

namespace opd {

inline constexpr int64_t kModelFormatVersion = 1;

// Writes `path` atomically: into `path.tmp`, flushed and closed, then renamed over `path`.
void save_model(const std::string& path, const Transformer& model);
std::unique_ptr<Transformer> load_model(const std::string& path);

// One float32 tensor with its crc32 attribute; reading checks shape and checksum, naming `where`.
void write_tensor(hid_t group, const std::string& name, const float* data, const std::vector<int64_t>& shape);
void read_tensor(hid_t group, const std::string& name, float* data, const std::vector<int64_t>& shape,
                 const std::string& where);

// The /model group alone, for files that hold more (checkpoints, fixtures).
void write_model_group(h5::File& file, const Transformer& model);
std::unique_ptr<Transformer> read_model_group(const h5::File& file);

}  // namespace opd
