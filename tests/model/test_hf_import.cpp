// Hugging Face checkpoints written by transformers' save_pretrained (tools/make-fixtures):
// imported logits within 1e-4 of transformers' (run in float64 on the stored bf16/f16/f32
// weights), EOS tokens from generation_config.json, export then re-import giving identical
// tensors and tokenizer, and the model file keeping the BPE tokenizer; Llama 3.1's RoPE scaling.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "core/error.h"
#include "io/h5.h"
#include "io/hf_model.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "kernels/cpu/convert.h"
#include "model/bpe_tokenizer.h"
#include "model/generate.h"
#include "train/rollout.h"
#include "train/teacher.h"
#include "tiny_model.h"

namespace opd {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kHf = std::string(OPD_SOURCE_DIR) + "/tests/fixtures/hf/";

std::string temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("opd_hf_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

using testing::expect_error;

struct Case {
  std::string dir;
  bool tied, qk_norm;
  int vocab, tokenizer_vocab;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.dir; }

class HfImport : public ::testing::TestWithParam<Case> {};

TEST_P(HfImport, LogitsMatchTransformers) {
  const Case& c = GetParam();
  const std::string dir = kHf + c.dir;
  auto model = import_hf(dir);
  EXPECT_EQ(model->config().tie_embeddings, c.tied);
  EXPECT_EQ(model->config().qk_norm, c.qk_norm);
  EXPECT_EQ(model->config().vocab, c.vocab);
  EXPECT_EQ(model->tokenizer().vocab_size(), c.tokenizer_vocab);
  EXPECT_EQ(model->tokenizer().type(), "bpe");

  const json ref = json::parse(std::ifstream(dir + "/reference.json"));
  const std::vector<std::vector<int>> rows = ref["tokens"];
  EXPECT_EQ(model->tokenizer().eos_ids(), ref["eos_ids"].get<std::vector<int>>());
  const int B = static_cast<int>(rows.size()), T = static_cast<int>(rows[0].size()), V = c.vocab;
  std::vector<int> tokens;
  for (const auto& r : rows) tokens.insert(tokens.end(), r.begin(), r.end());
  SafetensorsFile lf(dir + "/reference_logits.safetensors");
  ASSERT_EQ(lf.find("logits")->shape, (std::vector<int64_t>{B, T, V}));
  std::vector<float> want(size_t(B) * T * V);
  lf.read(*lf.find("logits"), want.data());

  const float* got = model->forward(tokens.data(), B, T);
  double worst = 0, spread = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, double(std::fabs(got[i] - want[i])));
    spread = std::max(spread, double(std::fabs(want[i])));
  }
  EXPECT_LE(worst, 1e-4) << c.dir;
  std::printf("%s: max |logit - transformers'| = %.2e (logits up to %.1f)\n", c.dir.c_str(), worst, spread);
  EXPECT_GE(spread, 1.0) << "reference logits too flat to tell a wrong model from a right one";
}

TEST_P(HfImport, ExportThenImportIsIdentical) {
  const Case& c = GetParam();
  auto model = import_hf(kHf + c.dir);
  // Through the model file too: the BPE tokenizer and its extra files survive HDF5.
  const std::string h5 = temp_path(c.dir + ".h5");
  save_model(h5, *model);
  auto loaded = load_model(h5);
  EXPECT_EQ(loaded->params(), model->params());
  EXPECT_TRUE(loaded->tokenizer().same_as(model->tokenizer()));
  EXPECT_TRUE(loaded->config().rope_scaling == model->config().rope_scaling);

  const std::string out = temp_path(c.dir + "_export");
  export_hf(*loaded, out, StDtype::kF32);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  auto again = import_hf(out);
  EXPECT_EQ(again->params(), model->params());
  EXPECT_TRUE(again->tokenizer().same_as(model->tokenizer()));
  EXPECT_EQ(again->config().tie_embeddings, c.tied);
  EXPECT_EQ(again->config().qk_norm, c.qk_norm);
  EXPECT_EQ(again->config().rope_theta, model->config().rope_theta);
  EXPECT_EQ(again->config().rms_eps, model->config().rms_eps);
  EXPECT_TRUE(again->config().rope_scaling == model->config().rope_scaling);
  EXPECT_EQ(again->config().rope_scaling.enabled(), c.dir == "llama31");
  // A tied export stores no separate head.
  SafetensorsFile st(out + "/model.safetensors");
  EXPECT_EQ(st.find("lm_head.weight") == nullptr, c.tied);

  // bf16 export: each value rounded to nearest even, exact for the bf16 checkpoint.
  export_hf(*loaded, out, StDtype::kBF16);
  auto b = import_hf(out);
  for (size_t i = 0; i < model->params().size(); ++i)
    ASSERT_EQ(b->params()[i], cpu::float_from_bf16(cpu::bf16_from_float(model->params()[i]))) << i;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfImport,
                         ::testing::Values(Case{"qwen3_untied", false, true, 420, 420},
                                           Case{"qwen3_tied_sharded", true, true, 420, 420},
                                           Case{"llama", false, false, 405, 400},
                                           Case{"llama31", false, false, 400, 400}),
                         [](const auto& info) { return info.param.dir; });

// A copy of a fixture with config.json edited by `edit`.
std::string edited_copy(const std::string& name, const std::string& fixture, const std::function<void(json&)>& edit) {
  const fs::path dir = temp_path(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(kHf + fixture)) fs::copy_file(e.path(), dir / e.path().filename());
  json cfg = json::parse(std::ifstream(dir / "config.json"));
  edit(cfg);
  std::ofstream(dir / "config.json") << cfg.dump();
  return dir.string();
}

TEST(HfImport, UnsupportedConfigsAreErrorsNamingTheField) {
  // RoPE scalings other than Llama 3.1's, in either spelling, and an incomplete llama3 one.
  expect_error([] { import_hf(edited_copy("c1", "llama", [](json& c) {
                 c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
               })); },
               {"config.json", "rope_scaling.rope_type 'linear'", "not supported"});
  expect_error([] { import_hf(edited_copy("c1b", "llama31", [](json& c) {
                 c["rope_parameters"]["rope_type"] = "yarn";
               })); },
               {"config.json", "rope_parameters.rope_type 'yarn'", "not supported"});
  expect_error([] { import_hf(edited_copy("c1c", "llama31", [](json& c) {
                 c["rope_parameters"]["rope_type"] = "dynamic";
               })); },
               {"config.json", "'dynamic'", "not supported"});
  expect_error([] { import_hf(edited_copy("c1d", "llama31", [](json& c) {
                 c["rope_parameters"].erase("low_freq_factor");
               })); },
               {"config.json", "low_freq_factor"});
  expect_error([] { import_hf(edited_copy("c1e", "llama31", [](json& c) {
                 c["rope_parameters"]["low_freq_factor"] = 4.0;
               })); },
               {"config.json", "low_freq_factor"});
  expect_error([] { import_hf(edited_copy("c2", "qwen3_untied", [](json& c) { c["model_type"] = "qwen2"; })); },
               {"config.json", "model_type 'qwen2'"});
  expect_error([] { import_hf(edited_copy("c3", "qwen3_untied", [](json& c) { c["attention_bias"] = true; })); },
               {"config.json", "attention_bias"});
  expect_error([] { import_hf(edited_copy("c4", "llama", [](json& c) { c["hidden_act"] = "gelu"; })); },
               {"config.json", "hidden_act 'gelu'"});
  expect_error([] { import_hf(edited_copy("c5", "llama", [](json& c) { c.erase("intermediate_size"); })); },
               {"config.json", "missing field 'intermediate_size'"});
  // A Llama checkpoint read as Qwen3 lacks the QK-norm weights.
  expect_error([] { import_hf(edited_copy("c6", "llama", [](json& c) { c["model_type"] = "qwen3"; })); },
               {"self_attn.q_norm.weight"});
  // An untied checkpoint read as tied has a head that differs from the embedding.
  expect_error([] { import_hf(edited_copy("c7", "qwen3_untied", [](json& c) { c["tie_word_embeddings"] = true; })); },
               {"lm_head.weight differs"});
  expect_error([] { import_hf(edited_copy("c8", "qwen3_untied", [](json& c) { c["hidden_size"] = 64; })); },
               {"model.embed_tokens.weight", "shape"});
}

// Llama 3.1's RoPE scaling: read from transformers 5's rope_parameters and from the older
// rope_theta + rope_scaling alike, written back in both, kept by the model file (whose values are
// validated), and large enough in the fixture to move the logits.
TEST(HfImport, Llama3RopeScaling) {
  auto model = import_hf(kHf + "llama31");
  const RopeScaling want{8.0, 1.0, 4.0, 64};
  EXPECT_TRUE(model->config().rope_scaling == want);
  EXPECT_EQ(model->config().rope_theta, 10000.0);

  auto legacy = import_hf(edited_copy("legacy", "llama31", [](json& c) {
    c["rope_theta"] = c["rope_parameters"]["rope_theta"];
    c["rope_scaling"] = c["rope_parameters"];
    c["rope_scaling"].erase("rope_theta");
    c["rope_scaling"]["type"] = c["rope_scaling"]["rope_type"];
    c["rope_scaling"].erase("rope_type");
    c.erase("rope_parameters");
  }));
  EXPECT_TRUE(legacy->config().rope_scaling == want);
  EXPECT_EQ(legacy->config().rope_theta, 10000.0);
  expect_error([] { import_hf(edited_copy("disagree", "llama31", [](json& c) {
                 c["rope_scaling"] = c["rope_parameters"];
                 c["rope_scaling"]["factor"] = 4.0;
               })); },
               {"config.json", "different RoPE scalings"});

  const std::string out = temp_path("llama31_cfg_export");
  export_hf(*model, out, StDtype::kF32);
  const json cfg = json::parse(std::ifstream(out + "/config.json"));
  const json params = {{"rope_type", "llama3"},     {"rope_theta", 10000.0},       {"factor", 8.0},
                       {"low_freq_factor", 1.0},    {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 64}};
  EXPECT_EQ(cfg["rope_parameters"], params);
  json scaling = params;
  scaling.erase("rope_theta");
  EXPECT_EQ(cfg["rope_scaling"], scaling);

  // The scaling matters at the fixture's positions: without it the logits move well past 1e-4.
  const json ref = json::parse(std::ifstream(kHf + "llama31/reference.json"));
  std::vector<int> tokens = ref["tokens"][0];
  const int T = static_cast<int>(tokens.size());
  const float* s = model->forward(tokens.data(), 1, T);
  const std::vector<float> scaled(s, s + T * 400);
  auto plain = import_hf(edited_copy("plain", "llama31", [](json& c) {
    c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  }));
  const float* p = plain->forward(tokens.data(), 1, T);
  double diff = 0;
  for (int i = 0; i < T * 400; ++i) diff = std::max(diff, double(std::fabs(p[i] - scaled[i])));
  EXPECT_GT(diff, 1e-2);

  // The model file: attributes written and read back (ExportThenImportIsIdentical), and checked.
  const std::string h5 = temp_path("llama31_bad.h5");
  for (auto [attr, value] : {std::pair{"rope_factor", 0.5}, std::pair{"rope_low_freq_factor", 4.0}}) {
    save_model(h5, *model);
    {
      hid_t f = H5Fopen(h5.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
      hid_t g = H5Gopen2(f, "model/config", H5P_DEFAULT);
      h5::write_attr(g, attr, value);
      H5Gclose(g);
      H5Fclose(f);
    }
    expect_error([&] { load_model(h5); }, {"llama31_bad.h5", "rope_scaling"});
  }
  save_model(h5, *model);
  {
    hid_t f = H5Fopen(h5.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "model/config", H5P_DEFAULT);
    h5::write_attr(g, "rope_type", std::string("yarn"));
    H5Gclose(g);
    H5Fclose(f);
  }
  expect_error([&] { load_model(h5); }, {"llama31_bad.h5", "rope_type", "yarn"});
}

TEST(HfImport, AnyOfTheModelsEosTokensStopsGeneration) {
  auto model = import_hf(kHf + "qwen3_untied");
  const auto& bpe = dynamic_cast<const BpeTokenizer&>(model->tokenizer());
  const std::vector<int> prompt = bpe.encode("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n");
  GenerateOptions g;
  g.max_new_tokens = 6;
  g.sampling.temperature = 0;  // greedy
  const Generation free_run = generate(*model, {prompt}, {0}, g)[0];
  ASSERT_EQ(free_run.tokens.size(), 6u);
  // The same weights with a tokenizer whose second EOS id is the third greedy token.
  const int stop = free_run.tokens[2];
  ASSERT_FALSE(bpe.is_eos(stop)) << "pick another prompt: the free run already stops";
  auto tok = std::make_shared<BpeTokenizer>(bpe.json_text(), "test");
  tok->set_special_tokens({bpe.eos_id(), stop}, bpe.pad_id());
  Transformer stopping(model->config(), tok);
  stopping.params() = model->params();
  const Generation g2 = generate(stopping, {prompt}, {0}, g)[0];
  EXPECT_TRUE(g2.eos);
  EXPECT_EQ(g2.tokens, std::vector<int>(free_run.tokens.begin(), free_run.tokens.begin() + 3));
  EXPECT_EQ(decode_completion(stopping, g2.tokens), tok->decode({g2.tokens[0], g2.tokens[1]}));
}

TEST(HfImport, TeacherAndStudentMustShareTheTokenizer) {
  auto qwen = import_hf(kHf + "qwen3_untied");
  auto qwen_tied = import_hf(kHf + "qwen3_tied_sharded");
  auto llama = import_hf(kHf + "llama");
  auto chars = testing::tiny_model(false);
  check_same_tokenizer(*qwen, "a", *qwen_tied, "b");
  expect_error([&] { check_same_tokenizer(*qwen, "student.h5", *llama, "teacher.h5"); },
               {"student.h5", "teacher.h5", "bpe tokenizer"});
  expect_error([&] { check_same_tokenizer(*qwen, "student.h5", *chars, "teacher.h5"); }, {"char tokenizer"});
}

}  // namespace
}  // namespace opd
