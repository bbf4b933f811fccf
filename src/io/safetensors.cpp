#include "io/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/durable.h"
#include "core/error.h"
#include "kernels/cpu/convert.h"

namespace opd {

using json = nlohmann::json;

namespace {
// The reference implementation's cap: a larger header is a corrupt or hostile length field.
constexpr uint64_t kMaxHeader = uint64_t(100) << 20;

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

StDtype parse_dtype(const std::string& s, const std::string& where, const std::string& name) {
  if (s == "F32") return StDtype::kF32;
  if (s == "F16") return StDtype::kF16;
  if (s == "BF16") return StDtype::kBF16;
  throw Error(str(where, ": tensor '", name, "' has dtype '", s, "'; opd reads only BF16, F16 and F32"));
}

uint64_t as_u64(const json& v, const std::string& where, const std::string& name, const char* field) {
  OPD_REQUIRE(v.is_number_unsigned(), where, ": tensor '", name, "': ", field,
              " must hold non-negative integers, got ", v.dump());
  return v.get<uint64_t>();
}

// Parses the header JSON, rejecting a key that appears twice in the top-level object (nlohmann
// would keep the last silently, hiding a second definition of a tensor).
json parse_unique_keys(const std::string& text, const std::string& where) {
  std::set<std::string> seen;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    // Tensor entries need 3 levels; deeper nesting is rejected before the library recurses on it.
    OPD_REQUIRE(depth <= 8, where, ": header JSON nested deeper than 8 levels");
    if (event == json::parse_event_t::key && depth == 1) {
      const std::string k = parsed.get<std::string>();
      OPD_REQUIRE(seen.insert(k).second, where, ": header names '", k, "' twice");
    }
    return true;
  };
  try {
    return json::parse(text, cb);
  } catch (const json::exception& e) {
    throw Error(str(where, ": header is not valid JSON (", e.what(), ")"));
  }
}
}  // namespace

const char* st_dtype_name(StDtype d) {
  switch (d) {
    case StDtype::kF32: return "F32";
    case StDtype::kF16: return "F16";
    case StDtype::kBF16: return "BF16";
  }
  return "?";
}

size_t st_dtype_size(StDtype d) { return d == StDtype::kF32 ? 4 : 2; }

size_t StTensor::numel() const {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  return n;
}

StHeader parse_safetensors_header(const uint8_t* bytes, size_t n, uint64_t file_size, const std::string& where) {
  OPD_REQUIRE(file_size >= 8 && n >= 8, where, ": ", file_size, " bytes is too short for a safetensors file (needs an 8-byte header length)");
  const uint64_t len = read_le64(bytes);
  OPD_REQUIRE(len <= kMaxHeader, where, ": header length ", len, " exceeds the limit of ", kMaxHeader,
              " bytes (corrupt length field?)");
  OPD_REQUIRE(len <= file_size - 8, where, ": header length ", len, " runs past the end of the file (",
              file_size, " bytes)");
  OPD_REQUIRE(n >= 8 + len, where, ": header truncated (", n - 8, " of ", len, " bytes)");
  OPD_REQUIRE(len >= 2 && bytes[8] == '{', where, ": header does not start with '{'");
  const std::string text(reinterpret_cast<const char*>(bytes) + 8, len);
  const json h = parse_unique_keys(text, where);
  OPD_REQUIRE(h.is_object(), where, ": header is not a JSON object");

  StHeader out;
  out.data_start = 8 + len;
  const uint64_t data_size = file_size - out.data_start;
  for (const auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      OPD_REQUIRE(v.is_object(), where, ": __metadata__ is not an object");
      for (const auto& [k, s] : v.items()) {
        OPD_REQUIRE(s.is_string(), where, ": __metadata__ value of '", k, "' is not a string");
        out.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    OPD_REQUIRE(v.is_object(), where, ": tensor '", name, "' is not described by an object");
    for (const char* f : {"dtype", "shape", "data_offsets"})
      OPD_REQUIRE(v.contains(f), where, ": tensor '", name, "' has no '", f, "'");
    OPD_REQUIRE(v.size() == 3, where, ": tensor '", name, "' has fields other than dtype, shape and data_offsets");
    StTensor t;
    t.name = name;
    OPD_REQUIRE(v["dtype"].is_string(), where, ": tensor '", name, "': dtype is not a string");
    t.dtype = parse_dtype(v["dtype"].get<std::string>(), where, name);
    const json& shape = v["shape"];
    OPD_REQUIRE(shape.is_array() && shape.size() <= 8, where, ": tensor '", name,
                "': shape must be an array of at most 8 dimensions, got ", shape.dump());
    uint64_t numel = 1;
    for (const json& d : shape) {
      const uint64_t dim = as_u64(d, where, name, "shape");
      // Each product stays below the file size, so it cannot overflow.
      OPD_REQUIRE(dim == 0 || numel <= data_size / dim, where, ": tensor '", name, "': shape ", shape.dump(),
                  " holds more elements than the file has bytes");
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = v["data_offsets"];
    OPD_REQUIRE(off.is_array() && off.size() == 2, where, ": tensor '", name,
                "': data_offsets must be [begin, end], got ", off.dump());
    t.begin = as_u64(off[0], where, name, "data_offsets");
    t.end = as_u64(off[1], where, name, "data_offsets");
    OPD_REQUIRE(t.begin <= t.end, where, ": tensor '", name, "': data_offsets [", t.begin, ", ", t.end,
                "] end before they begin");
    OPD_REQUIRE(t.end <= data_size, where, ": tensor '", name, "': data_offsets [", t.begin, ", ", t.end,
                "] run past the data section of ", data_size, " bytes (file truncated?)");
    const uint64_t bytes_needed = numel * st_dtype_size(t.dtype);
    OPD_REQUIRE(t.end - t.begin == bytes_needed, where, ": tensor '", name, "': shape ", shape.dump(), " of ",
                st_dtype_name(t.dtype), " needs ", bytes_needed, " bytes but data_offsets [", t.begin, ", ", t.end,
                "] hold ", t.end - t.begin);
    out.tensors.push_back(std::move(t));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const StTensor& a, const StTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The data section is tiled exactly: no tensor overlaps another, no bytes are unaccounted for.
  uint64_t at = 0;
  for (const StTensor& t : out.tensors) {
    OPD_REQUIRE(t.begin >= at, where, ": tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end,
                "] overlap the previous tensor's bytes (which end at ", at, ")");
    OPD_REQUIRE(t.begin == at, where, ": tensor '", t.name, "' begins at ", t.begin, " leaving bytes [", at, ", ",
                t.begin, ") of the data section unaccounted for");
    at = t.end;
  }
  OPD_REQUIRE(at == data_size, where, ": the tensors end at byte ", at, " of a data section of ", data_size,
              " bytes (trailing bytes)");
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  OPD_REQUIRE(!ec, path, ": cannot read (", ec.message(), ")");
  std::ifstream in(path, std::ios::binary);
  OPD_REQUIRE(in, path, ": cannot open");
  uint8_t head[8] = {0};
  in.read(reinterpret_cast<char*>(head), std::min<uint64_t>(8, size));
  std::vector<uint8_t> bytes(head, head + 8);
  if (size >= 8) {
    const uint64_t len = read_le64(head);
    if (len <= kMaxHeader && len <= size - 8) {  // else the parser reports it
      bytes.resize(8 + len);
      in.read(reinterpret_cast<char*>(bytes.data()) + 8, static_cast<std::streamsize>(len));
      OPD_REQUIRE(in, path, ": read error in the header");
    }
  }
  header_ = parse_safetensors_header(bytes.data(), size >= 8 ? bytes.size() : size_t(size), size, path);
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

const StTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

void SafetensorsFile::read(const StTensor& t, float* out) const {
  std::ifstream in(path_, std::ios::binary);
  OPD_REQUIRE(in, path_, ": cannot open");
  in.seekg(static_cast<std::streamoff>(header_.data_start + t.begin));
  const size_t n = t.numel();
  if (t.dtype == StDtype::kF32) {
    in.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n * 4));
    OPD_REQUIRE(in, path_, ": tensor '", t.name, "': read error (file changed or truncated?)");
    return;
  }
  // Half-precision data is read in chunks so a large tensor needs no second full-size buffer.
  std::vector<uint16_t> buf(std::min<size_t>(n, size_t(1) << 20));
  for (size_t i = 0; i < n; i += buf.size()) {
    const size_t m = std::min(buf.size(), n - i);
    in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(m * 2));
    OPD_REQUIRE(in, path_, ": tensor '", t.name, "': read error (file changed or truncated?)");
    if (t.dtype == StDtype::kBF16)
      cpu::convert(out + i, buf.data(), m);
    else
      for (size_t j = 0; j < m; ++j) out[i + j] = f16_to_float(buf[j]);
  }
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(index)) {
    const std::string iw = index.string();
    json j;
    {
      std::ifstream in(iw);
      OPD_REQUIRE(in, iw, ": cannot open");
      try {
        j = json::parse(in);
      } catch (const json::exception& e) {
        throw Error(str(iw, ": not valid JSON (", e.what(), ")"));
      }
    }
    OPD_REQUIRE(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), iw,
                ": no 'weight_map' object");
    std::map<std::string, size_t> file_of;
    std::map<std::string, std::string> expect;  // tensor -> shard file name
    for (const auto& [name, f] : j["weight_map"].items()) {
      OPD_REQUIRE(f.is_string(), iw, ": weight_map entry '", name, "' is not a file name");
      const std::string file = f.get<std::string>();
      OPD_REQUIRE(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..", iw,
                  ": weight_map entry '", name, "' names '", file, "', not a file beside the index");
      if (!file_of.count(file)) {
        file_of[file] = files_.size();
        files_.push_back(std::make_unique<SafetensorsFile>((fs::path(dir) / file).string()));
      }
      expect[name] = file;
    }
    OPD_REQUIRE(!files_.empty(), iw, ": weight_map is empty");
    for (const auto& [name, file] : expect) {
      const SafetensorsFile& sf = *files_[file_of[file]];
      OPD_REQUIRE(sf.find(name), iw, ": tensor '", name, "' is mapped to ", file, ", which does not hold it");
      where_[name] = file_of[file];
    }
    for (size_t i = 0; i < files_.size(); ++i)
      for (const StTensor& t : files_[i]->header().tensors) {
        auto it = where_.find(t.name);
        OPD_REQUIRE(it != where_.end() && it->second == i, files_[i]->path(), ": tensor '", t.name,
                    "' is not mapped to this shard by ", iw);
      }
  } else {
    OPD_REQUIRE(fs::exists(single), dir, ": neither model.safetensors nor model.safetensors.index.json found");
    files_.push_back(std::make_unique<SafetensorsFile>(single.string()));
    for (const StTensor& t : files_[0]->header().tensors) where_[t.name] = 0;
  }
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : where_) out.push_back(name);
  return out;
}

const StTensor& SafetensorsCheckpoint::tensor(const std::string& name) const {
  auto it = where_.find(name);
  OPD_REQUIRE(it != where_.end(), dir_, ": the checkpoint has no tensor '", name, "'");
  return *files_[it->second]->find(name);
}

void SafetensorsCheckpoint::read(const std::string& name, float* out) const {
  const StTensor& t = tensor(name);
  files_[where_.at(name)]->read(t, out);
}

void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors, StDtype dtype,
                       const std::map<std::string, std::string>& metadata) {
  OPD_REQUIRE(dtype == StDtype::kF32 || dtype == StDtype::kBF16, path, ": opd writes F32 or BF16 safetensors");
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t at = 0;
  std::set<std::string> names;
  for (const StWriteTensor& t : tensors) {
    OPD_REQUIRE(names.insert(t.name).second && t.name != "__metadata__", path, ": tensor '", t.name,
                "' written twice");
    uint64_t n = 1;
    for (auto d : t.shape) n *= static_cast<uint64_t>(d);
    const uint64_t bytes = n * st_dtype_size(dtype);
    h[t.name] = {{"dtype", st_dtype_name(dtype)}, {"shape", t.shape}, {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  std::string text = h.dump();
  text.append((8 - (text.size() % 8)) % 8, ' ');  // the data section starts 8-byte aligned

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    OPD_REQUIRE(out, tmp, ": cannot create");
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<uint16_t> buf;
    for (const StWriteTensor& t : tensors) {
      size_t n = 1;
      for (auto d : t.shape) n *= static_cast<size_t>(d);
      if (dtype == StDtype::kF32) {
        out.write(reinterpret_cast<const char*>(t.data), static_cast<std::streamsize>(n * 4));
      } else {
        buf.resize(n);
        cpu::convert(buf.data(), t.data, n);
        out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n * 2));
      }
    }
    out.flush();
    OPD_REQUIRE(out, tmp, ": write failed (disk full?)");
  }
  publish_file(tmp, path);
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf or NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while (!(mant & 0x400));
    bits = sign | (uint32_t(112 - e) << 23) | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace opd
