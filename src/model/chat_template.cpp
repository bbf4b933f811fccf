#include "model/chat_template.h"

#include "core/error.h"

namespace opd {

namespace {
std::vector<std::string> special_tokens(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kQwen3: return {"<|im_start|>", "<|im_end|>"};
    case ChatTemplate::kLlama3: return {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    case ChatTemplate::kNone: break;
  }
  return {};
}

// Llama 3's template trims the message (Jinja's `trim`: leading and trailing whitespace).
std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}
}  // namespace

ChatTemplate parse_chat_template(const std::string& name) {
  if (name == "none") return ChatTemplate::kNone;
  if (name == "qwen3") return ChatTemplate::kQwen3;
  if (name == "llama3") return ChatTemplate::kLlama3;
  throw Error(str("option --template = '", name, "' must be qwen3, llama3 or none"));
}

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kQwen3: return "qwen3";
    case ChatTemplate::kLlama3: return "llama3";
    case ChatTemplate::kNone: break;
  }
  return "none";
}

std::string apply_chat_template(ChatTemplate t, const std::string& prompt) {
  switch (t) {
    case ChatTemplate::kQwen3:
      return "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n";
    case ChatTemplate::kLlama3:
      return "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + trim(prompt) +
             "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatTemplate::kNone: break;
  }
  return prompt;
}

void check_chat_template(ChatTemplate t, const Tokenizer& tok, const std::string& where) {
  for (const std::string& s : special_tokens(t)) {
    const int id = tok.token_id(s);
    OPD_REQUIRE(id >= 0 && tok.encode(s, where) == std::vector<int>{id}, where, ": --template ", chat_template_name(t),
                " needs the special token ", s, ", which the model's ", tok.type(), " tokenizer does not have");
  }
}

}  // namespace opd
