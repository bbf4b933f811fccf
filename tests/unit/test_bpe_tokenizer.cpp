// The byte-level BPE tokenizer against Hugging Face `tokenizers`: encodings of a test corpus
// (ASCII, accents composed and decomposed, CJK, emoji, digits, whitespace runs, special tokens)
// recorded by tools/make-fixtures must match id for id; decoding must give HF's text back.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/check.h"
#include "core/error.h"
#include "model/bpe_tokenizer.h"

namespace opd {
namespace {

using json = nlohmann::json;

const std::string kHf = std::string(OPD_SOURCE_DIR) + "/tests/fixtures/hf/";

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

using testing::expect_error;

class HfEncodings : public ::testing::TestWithParam<std::string> {};

TEST_P(HfEncodings, EqualHuggingFace) {
  const std::string name = GetParam();
  const std::string path = kHf + name + "/tokenizer.json";
  BpeTokenizer tok(read(path), path);
  const json all = json::parse(read(kHf + "encodings.json"));
  ASSERT_TRUE(all.contains(name));
  int texts = 0, ids = 0;
  for (const json& row : all[name]) {
    const std::string text = row["text"];
    const std::vector<int> want = row["ids"];
    const std::vector<int> got = tok.encode(text);
    EXPECT_EQ(got, want) << "text: " << text;
    EXPECT_EQ(tok.decode(got), row["decoded"].get<std::string>()) << "text: " << text;
    ++texts;
    ids += static_cast<int>(got.size());
  }
  EXPECT_GE(texts, 20);
  EXPECT_GE(ids, 500);
}

INSTANTIATE_TEST_SUITE_P(Bpe, HfEncodings, ::testing::Values("tokenizer_qwen2", "tokenizer_llama3"));

TEST(BpeTokenizer, RoundTripsAndSpecialTokens) {
  const std::string path = kHf + "tokenizer_qwen2/tokenizer.json";
  BpeTokenizer tok(read(path), path);
  EXPECT_EQ(tok.type(), "bpe");
  EXPECT_EQ(tok.vocab_size(), 420);
  const int im_end = tok.token_id("<|im_end|>");
  ASSERT_GE(im_end, 0);
  for (std::string text : {"plain ascii text", "Grüße, 你好 🙂 12345\n\n  x", "<|im_start|>a<|im_end|>"})
    EXPECT_EQ(tok.decode(tok.encode(text)), text);
  // A special token inside text is one id; a partial one is ordinary text.
  const auto ids = tok.encode("a<|im_end|>b");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), im_end), 1);
  const auto partial = tok.encode("<|im_end");
  EXPECT_EQ(std::count(partial.begin(), partial.end(), im_end), 0);
  // Decomposed accents are composed first (NFC), so decoding gives the composed text.
  EXPECT_EQ(tok.decode(tok.encode("e\xCC\x81")), "\xC3\xA9");
  // Ids that name no token are skipped as by HF; negative ones are errors.
  EXPECT_EQ(tok.decode({100000}), "");
  expect_error([&] { tok.decode({-1}); }, {"negative"});
  expect_error([&] { tok.encode("bad \xFF byte", "prompt 3"); }, {"prompt 3", "invalid UTF-8 at byte 4"});
  tok.set_special_tokens({im_end}, tok.token_id("<|endoftext|>"));
  EXPECT_EQ(tok.eos_id(), im_end);
  EXPECT_TRUE(tok.is_eos(im_end));
  BpeTokenizer other(read(path), "other");
  other.set_special_tokens({im_end}, tok.token_id("<|endoftext|>"));
  EXPECT_TRUE(tok.same_as(other));
  // The same tokenizer as saved by transformers (it adds an empty post-processor) and with the
  // merges in the older "left right" spelling: the same ids, and the same tokenizer.
  json legacy = json::parse(read(kHf + "qwen3_untied/tokenizer.json"));
  for (json& m : legacy["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  BpeTokenizer resaved(legacy.dump(), "legacy");
  resaved.set_special_tokens({im_end}, tok.token_id("<|endoftext|>"));
  EXPECT_TRUE(tok.same_as(resaved));
  const std::string sample = "Grüße, 你好 🙂 12345 don't";
  EXPECT_EQ(resaved.encode(sample), tok.encode(sample));
  other.set_special_tokens({im_end}, -1);
  EXPECT_FALSE(tok.same_as(other));  // a different pad token
  const std::string llama = kHf + "tokenizer_llama3/tokenizer.json";
  BpeTokenizer l(read(llama), llama);
  EXPECT_FALSE(tok.same_as(l));
  CharTokenizer c({"a", "b"}, 0, -1);
  EXPECT_FALSE(tok.same_as(c));
}

TEST(BpeTokenizer, MalformedTokenizerJson) {
  const std::string good = read(kHf + "tokenizer_qwen2/tokenizer.json");
  expect_error([&] { BpeTokenizer t("{\"model\": ", "bad.json"); }, {"bad.json", "not valid JSON"});
  expect_error([&] { BpeTokenizer t("[]", "arr.json"); }, {"arr.json", "not a JSON object"});
  auto mutate = [&](const std::function<void(json&)>& f) {
    json j = json::parse(good);
    f(j);
    return j.dump();
  };
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j.erase("model"); }), "t.json"); },
               {"t.json", "missing field 'model'"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["model"]["type"] = "WordPiece"; }), "t.json"); },
               {"t.json", "BPE"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["model"]["merges"][0] = json::array({"zz9", "q"}); }), "t.json"); },
               {"t.json", "merges[0]", "not in the vocabulary"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["model"]["vocab"]["x"] = -3; }), "t.json"); },
               {"t.json", "vocab['x']"});
  expect_error([&] {
    BpeTokenizer t(mutate([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; }), "t.json");
  }, {"t.json", "regex does not compile"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }), "t.json"); },
               {"t.json", "normalizer", "not supported"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["added_tokens"][0]["lstrip"] = true; }), "t.json"); },
               {"t.json", "added_tokens[0]", "lstrip"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["added_tokens"][1].erase("id"); }), "t.json"); },
               {"t.json", "added_tokens[1]"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["model"]["byte_fallback"] = true; }), "t.json"); },
               {"t.json", "byte_fallback"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }), "t.json"); },
               {"t.json", "Whitespace", "not supported"});
  expect_error([&] { BpeTokenizer t(mutate([](json& j) { j["decoder"] = nullptr; }), "t.json"); },
               {"t.json", "decoder must be ByteLevel"});
}

}  // namespace
}  // namespace opd
