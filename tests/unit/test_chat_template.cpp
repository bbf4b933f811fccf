// Chat templates: the exact text around a prompt, and its special tokens as single ids.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "model/bpe_tokenizer.h"
#include "cli/train_inputs.h"
#include "model/chat_template.h"

namespace opd {
namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ChatTemplate, Text) {
  EXPECT_EQ(apply_chat_template(ChatTemplate::kNone, "2+2="), "2+2=");
  EXPECT_EQ(apply_chat_template(ChatTemplate::kQwen3, "2+2="),
            "<|im_start|>user\n2+2=<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(apply_chat_template(ChatTemplate::kLlama3, "  2+2=\n"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n2+2=<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(parse_chat_template("qwen3"), ChatTemplate::kQwen3);
  EXPECT_EQ(parse_chat_template("llama3"), ChatTemplate::kLlama3);
  EXPECT_EQ(parse_chat_template("none"), ChatTemplate::kNone);
  EXPECT_THROW(parse_chat_template("chatml"), Error);
  std::vector<Example> ex = {{"a", "1", "", 0}, {"b", "2", "", 1}};
  cli::apply_chat_template(ChatTemplate::kQwen3, ex);
  EXPECT_EQ(ex[1].prompt, apply_chat_template(ChatTemplate::kQwen3, "b"));
  EXPECT_EQ(ex[1].answer, "2");
}

TEST(ChatTemplate, SpecialTokensAreSingleIds) {
  const std::string dir = std::string(OPD_SOURCE_DIR) + "/tests/fixtures/hf/";
  BpeTokenizer qwen(read(dir + "tokenizer_qwen2/tokenizer.json"), "qwen");
  BpeTokenizer llama(read(dir + "tokenizer_llama3/tokenizer.json"), "llama");
  check_chat_template(ChatTemplate::kQwen3, qwen, "q.h5");
  check_chat_template(ChatTemplate::kLlama3, llama, "l.h5");
  check_chat_template(ChatTemplate::kNone, CharTokenizer({"a"}, -1, -1), "c.h5");
  const auto ids = qwen.encode(apply_chat_template(ChatTemplate::kQwen3, "hi"));
  EXPECT_EQ(ids.front(), qwen.token_id("<|im_start|>"));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), qwen.token_id("<|im_end|>")), 1);
  try {
    check_chat_template(ChatTemplate::kLlama3, qwen, "q.h5");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q.h5: --template llama3 needs the special token <|begin_of_text|>"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace opd
