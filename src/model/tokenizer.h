// The character-level tokenizer stored inside every model file: token id i is the string
// pieces[i]; a piece is one UTF-8 character or a special token such as "<eos>".
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

namespace opd {

class Tokenizer {
 public:
  Tokenizer() = default;
  // `eos_id` / `pad_id` are -1 when absent. Throws on duplicate or empty pieces.
  Tokenizer(std::vector<std::string> pieces, int eos_id, int pad_id);

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  const std::vector<std::string>& pieces() const { return pieces_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }

  // Each UTF-8 character of `text` must be a piece; an unknown one is an error naming it and `where`.
  std::vector<int> encode(const std::string& text, const std::string& where = "input") const;
  // Ids outside the vocabulary are an error; special tokens decode to their names.
  std::string decode(const std::vector<int>& ids) const;

  bool operator==(const Tokenizer& o) const { return pieces_ == o.pieces_ && eos_id_ == o.eos_id_ && pad_id_ == o.pad_id_; }

 private:
  std::vector<std::string> pieces_;
  std::unordered_map<std::string, int> index_;
  int eos_id_ = -1;
  int pad_id_ = -1;
};

}  // namespace opd
