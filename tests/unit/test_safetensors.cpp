// The safetensors reader and writer: round trips, exact half-precision conversions, sharded
// checkpoints, and corrupt files rejected with errors naming the file and tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/cpu/convert.h"

namespace opd {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("opd_st_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

using testing::expect_error;

// A file from a header (any JSON text) and a data section of `data_bytes` bytes.
std::string write_raw(const std::string& name, const std::string& header, size_t data_bytes,
                      int64_t length_field = -1) {
  const std::string path = temp_path(name);
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = length_field < 0 ? header.size() : uint64_t(length_field);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(len >> (8 * i)));
  out << header << std::string(data_bytes, '\0');
  return path;
}

TEST(Safetensors, RoundTripF32AndBf16) {
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f}, b = {0.5f, 7.0f};
  const std::string path = temp_path("rt.safetensors");
  write_safetensors(path, {{"a", {2, 3}, a.data()}, {"b.weight", {2}, b.data()}}, StDtype::kF32, {{"format", "pt"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  SafetensorsFile f(path);
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  EXPECT_EQ(f.header().data_start % 8, 0u);
  ASSERT_NE(f.find("a"), nullptr);
  EXPECT_EQ(f.find("a")->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> got(6);
  f.read(*f.find("a"), got.data());
  EXPECT_EQ(got, a);

  write_safetensors(path, {{"a", {6}, a.data()}}, StDtype::kBF16, {});
  SafetensorsFile g(path);
  EXPECT_EQ(g.find("a")->dtype, StDtype::kBF16);
  g.read(*g.find("a"), got.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(got[i], cpu::float_from_bf16(cpu::bf16_from_float(a[i])));
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[1], -2.5f);
}

TEST(Safetensors, HalfPrecisionConversionsAreExact) {
  EXPECT_EQ(f16_to_float(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_float(0xC100), -2.5f);
  EXPECT_EQ(f16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_float(0x03FF), 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(0x8000), -0.0f);
  EXPECT_TRUE(std::signbit(f16_to_float(0x8000)));
  EXPECT_EQ(f16_to_float(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_float(0x7E00)));
  // Every f16 value converts exactly: compare against ldexp arithmetic.
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const uint32_t e = h >> 10, m = h & 0x3FF;
    const float want = e ? std::ldexp(1.0f + m / 1024.0f, int(e) - 15) : std::ldexp(float(m), -24);
    ASSERT_EQ(f16_to_float(uint16_t(h)), want) << h;
  }
}

TEST(Safetensors, TruncatedFile) {
  std::vector<float> a(100, 1.0f);
  const std::string path = temp_path("trunc.safetensors");
  write_safetensors(path, {{"w", {10, 10}, a.data()}}, StDtype::kF32, {});
  fs::resize_file(path, fs::file_size(path) - 4);
  expect_error([&] { SafetensorsFile f(path); }, {path, "'w'", "run past the data section"});
  fs::resize_file(path, 5);
  expect_error([&] { SafetensorsFile f(path); }, {path, "too short"});
}

TEST(Safetensors, BadHeaderLength) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_error([&] { SafetensorsFile f(write_raw("len1.safetensors", h, 8, 1 << 20)); },
               {"len1.safetensors", "runs past the end of the file"});
  expect_error([&] { SafetensorsFile f(write_raw("len2.safetensors", h, 8, int64_t(1) << 40)); },
               {"len2.safetensors", "exceeds the limit"});
  expect_error([&] { SafetensorsFile f(write_raw("len3.safetensors", h, 8, 20)); },
               {"len3.safetensors", "not valid JSON"});
  expect_error([&] { SafetensorsFile f(write_raw("json.safetensors", "{\"w\": [1, 2", 0)); },
               {"json.safetensors", "not valid JSON"});
}

TEST(Safetensors, OffsetsOutOfRangeOverlapsAndGaps) {
  auto hdr = [](std::string a, std::string b) {
    return R"({"a":{"dtype":"F32","shape":[2],"data_offsets":)" + a + R"(},"b":{"dtype":"F32","shape":[2],"data_offsets":)" +
           b + "}}";
  };
  expect_error([&] { SafetensorsFile f(write_raw("oob.safetensors", hdr("[0,8]", "[8,16]"), 12)); },
               {"oob.safetensors", "'b'", "run past the data section"});
  expect_error([&] { SafetensorsFile f(write_raw("ovl.safetensors", hdr("[0,8]", "[4,12]"), 12)); },
               {"ovl.safetensors", "overlap"});
  expect_error([&] { SafetensorsFile f(write_raw("gap.safetensors", hdr("[0,8]", "[12,20]"), 20)); },
               {"gap.safetensors", "unaccounted"});
  expect_error([&] { SafetensorsFile f(write_raw("tail.safetensors", hdr("[0,8]", "[8,16]"), 20)); },
               {"tail.safetensors", "trailing bytes"});
  expect_error([&] { SafetensorsFile f(write_raw("size.safetensors", hdr("[0,8]", "[8,20]"), 20)); },
               {"size.safetensors", "'b'", "needs 8 bytes"});
  expect_error([&] { SafetensorsFile f(write_raw("rev.safetensors", hdr("[8,0]", "[8,16]"), 16)); },
               {"rev.safetensors", "'a'", "end before they begin"});
  expect_error([&] { SafetensorsFile f(write_raw("neg.safetensors", hdr("[-8,0]", "[0,8]"), 8)); },
               {"neg.safetensors", "'a'", "non-negative integers"});
}

TEST(Safetensors, WrongDtypeShapeAndFields) {
  expect_error([&] {
    SafetensorsFile f(write_raw("i64.safetensors", R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8));
  }, {"i64.safetensors", "'ids'", "dtype 'I64'", "BF16, F16 and F32"});
  expect_error([&] {
    SafetensorsFile f(write_raw("shape.safetensors", R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4));
  }, {"shape.safetensors", "'w'", "shape"});
  expect_error([&] {
    SafetensorsFile f(write_raw("huge.safetensors",
                                R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4));
  }, {"huge.safetensors", "'w'", "more elements than the file has bytes"});
  expect_error([&] {
    SafetensorsFile f(write_raw("nooff.safetensors", R"({"w":{"dtype":"F32","shape":[1]}})", 4));
  }, {"nooff.safetensors", "'w'", "data_offsets"});
  expect_error([&] {
    SafetensorsFile f(write_raw("dup.safetensors",
                                R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                4));
  }, {"dup.safetensors", "'w' twice"});
  expect_error([&] { SafetensorsFile f(write_raw("arr.safetensors", "[1,2,3]", 0)); }, {"arr.safetensors", "'{'"});
}

TEST(Safetensors, ShardedCheckpointFromTransformers) {
  const std::string dir = std::string(OPD_SOURCE_DIR) + "/tests/fixtures/hf/qwen3_tied_sharded";
  SafetensorsCheckpoint ck(dir);
  EXPECT_GT(ck.shards(), 1u);
  EXPECT_TRUE(ck.has("model.embed_tokens.weight"));
  EXPECT_TRUE(ck.has("model.layers.1.mlp.down_proj.weight"));
  expect_error([&] { ck.tensor("lm_head.weight"); }, {dir, "no tensor 'lm_head.weight'"});
}

TEST(Safetensors, ShardIndexMustAgreeWithShards) {
  const fs::path src = fs::path(OPD_SOURCE_DIR) / "tests/fixtures/hf/qwen3_tied_sharded";
  const fs::path dir = temp_path("sharded");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(src))
    if (e.path().extension() == ".safetensors" || e.path().extension() == ".json")
      fs::copy_file(e.path(), dir / e.path().filename());
  json index = json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  std::string first_shard = index["weight_map"]["model.embed_tokens.weight"];
  index["weight_map"]["model.norm.weight"] = first_shard == "model-00001-of-00006.safetensors"
                                                 ? "model-00002-of-00006.safetensors"
                                                 : "model-00001-of-00006.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  expect_error([&] { SafetensorsCheckpoint ck(dir.string()); }, {"model.norm.weight", "does not hold it"});
  index["weight_map"]["model.norm.weight"] = "../escape.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  expect_error([&] { SafetensorsCheckpoint ck(dir.string()); }, {"not a file beside the index"});
  expect_error([&] { SafetensorsCheckpoint ck(temp_path("empty_dir_that_is_absent")); },
               {"neither model.safetensors nor model.safetensors.index.json"});
}

}  // namespace
}  // namespace opd
