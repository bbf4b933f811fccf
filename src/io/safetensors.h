// Hugging Face safetensors files: an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw data. The reader validates the whole header
// against the file's size before it reads a byte of tensor data; every error names the file and,
// where one is at fault, the tensor. Checkpoints split over shards are read through their
// model.safetensors.index.json.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace opd {

enum class StDtype { kF32, kF16, kBF16 };
const char* st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
  size_t numel() const;
};

struct StHeader {
  uint64_t data_start = 0;  // file offset of the data section (8 + header length)
  std::vector<StTensor> tensors;  // in data order
  std::map<std::string, std::string> metadata;
};

// Validates a header: `bytes` holds at least the first min(n, 8 + header length) bytes of a file
// of `file_size` bytes. Throws opd::Error naming `where` (and the tensor) on any inconsistency:
// header length past the end of the file, malformed JSON, an unsupported dtype, a shape whose size
// disagrees with its byte range, ranges outside the data section, overlapping or leaving gaps.
StHeader parse_safetensors_header(const uint8_t* bytes, size_t n, uint64_t file_size, const std::string& where);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // reads and validates the header only
  const std::string& path() const { return path_; }
  const StHeader& header() const { return header_; }
  const StTensor* find(const std::string& name) const;
  // Reads one tensor, converting to float32; `out` holds numel() floats.
  void read(const StTensor& t, float* out) const;

 private:
  std::string path_;
  StHeader header_;
  std::map<std::string, size_t> index_;
};

// A checkpoint directory: model.safetensors, or the shards listed by model.safetensors.index.json
// (each shard's header validated, and the index checked against what the shards hold).
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& dir);
  std::vector<std::string> names() const;  // every tensor, sorted
  const StTensor& tensor(const std::string& name) const;  // error naming the directory when absent
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  void read(const std::string& name, float* out) const;
  size_t shards() const { return files_.size(); }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> file
};

struct StWriteTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // numel floats, converted to the file's dtype on writing
};

// Writes `path` atomically (into path.tmp, then publish_file), every tensor in `dtype` (kF32 or
// kBF16, rounded to nearest even), with `metadata` in the header's __metadata__.
void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors, StDtype dtype,
                       const std::map<std::string, std::string>& metadata);

// Exact, subnormals included. (bf16 <-> float: kernels/cpu/convert.h.)
float f16_to_float(uint16_t h);

}  // namespace opd
