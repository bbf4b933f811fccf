// Chat templates: the text a chat model expects around a user's message, so that an imported
// instruct model is prompted as it was trained. Applied to the prompt text before encoding, so
// student and teacher (which share one tokenizer) see the same token ids; the special tokens in
// the template are split out by the tokenizer as single ids.
#pragma once
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace opd {

enum class ChatTemplate { kNone, kQwen3, kLlama3 };

// "none", "qwen3" or "llama3"; an error names the option.
ChatTemplate parse_chat_template(const std::string& name);
const char* chat_template_name(ChatTemplate t);

// One user turn and the opening of the assistant's:
//   qwen3:  <|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n
//   llama3: <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{prompt, trimmed}<|eot_id|>
//           <|start_header_id|>assistant<|end_header_id|>\n\n
// (Qwen3's default, thinking mode; Llama 3's template without a system message.)
std::string apply_chat_template(ChatTemplate t, const std::string& prompt);

// Every special token the template uses must be a single token of `tok`; the error names the
// template, the token and `where` (the model file).
void check_chat_template(ChatTemplate t, const Tokenizer& tok, const std::string& where);

}  // namespace opd
