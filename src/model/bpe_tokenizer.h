// The byte-level BPE tokenizer of Hugging Face `tokenizers` as used by the Qwen2/Qwen3 and
// Llama-3 families, read from a tokenizer.json: added (special) tokens split out first, an
// optional NFC normalizer, the pre-tokenizer's regex splits (PCRE2 with Unicode properties),
// bytes mapped to printable characters (GPT-2's byte-to-unicode table), then merges by rank.
// Whatever that file asks for and this class does not implement is an error naming the field,
// never a silent difference from Hugging Face's encoding.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/tokenizer.h"

namespace opd {

class BpeTokenizer : public Tokenizer {
 public:
  // Parses tokenizer.json text; `where` (a path) prefixes every error.
  BpeTokenizer(const std::string& json_text, const std::string& where);
  ~BpeTokenizer() override;
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // EOS ids (the first is appended to completions) and the pad id (-1: none).
  void set_special_tokens(std::vector<int> eos_ids, int pad_id);

  std::string type() const override { return "bpe"; }
  int vocab_size() const override { return vocab_size_; }
  // Equals Hugging Face's `encode(text, add_special_tokens=False)`; invalid UTF-8 is an error.
  std::vector<int> encode(const std::string& text, const std::string& where = "input") const override;
  // Like Hugging Face's decode without skipping special tokens: ids that name no token (gaps, or
  // padding rows of the embedding) are skipped as there; a negative id is an error.
  std::string decode(const std::vector<int>& ids) const override;
  std::string piece(int id) const override;
  const std::string& identity() const override { return identity_; }
  int token_id(const std::string& text) const override;

  const std::string& json_text() const { return json_text_; }
  // Other Hugging Face files kept for export (e.g. "tokenizer_config.json" -> its text); they do
  // not change encoding, so identity() ignores them.
  std::map<std::string, std::string> hf_files;

 private:
  struct Added {
    std::string content;
    int id;
    bool normalized;
  };
  struct Impl;  // the compiled regexes (PCRE2)

  std::string normalize(const std::string& s) const;
  void split_added(const std::string& text, bool normalized, std::vector<std::pair<std::string, int>>& out) const;
  void encode_segment(const std::string& text, std::vector<int>& ids) const;
  void bpe(const std::string& word, std::vector<int>& ids) const;

  std::string json_text_, identity_, where_;
  int vocab_size_ = 0;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  int unk_id_ = -1;
  std::unordered_map<std::string, int> vocab_;
  std::vector<std::string> id_to_token_;     // "" where an id names no token
  std::vector<char> id_is_added_;
  std::vector<Added> added_;
  std::unordered_map<uint64_t, std::pair<int, int>> merges_;  // (left id, right id) -> (rank, merged id)
  std::string byte_to_char_[256];
  std::unordered_map<uint32_t, uint8_t> char_to_byte_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace opd
