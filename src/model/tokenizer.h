// Tokenizers: the interface every model's tokenizer implements, and the character-level one stored
// inside the built-in models (token id i is the string pieces[i]; a piece is one UTF-8 character
// or a special token such as "<eos>"). The byte-level BPE of imported models is in bpe_tokenizer.h.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace opd {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string type() const = 0;  // "char" or "bpe", as stored in model files
  // Ids are in [0, vocab_size()); a model's embedding may have more rows than that.
  virtual int vocab_size() const = 0;
  // An unencodable input is an error naming `where`. Never adds BOS/EOS: templates do.
  virtual std::vector<int> encode(const std::string& text, const std::string& where = "input") const = 0;
  // Ids outside the vocabulary are an error; special tokens decode to their text.
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  // The text of one token, for messages; "<id N>" where it has none.
  virtual std::string piece(int id) const = 0;
  // Equal exactly when the two tokenizers map every text to the same ids.
  virtual const std::string& identity() const = 0;

  // The EOS token appended to completions (-1: none) and every token that ends generation.
  int eos_id() const { return eos_ids_.empty() ? -1 : eos_ids_.front(); }
  const std::vector<int>& eos_ids() const { return eos_ids_; }
  bool is_eos(int id) const;
  int pad_id() const { return pad_id_; }
  // Looks up a special or ordinary token by its text; -1 when absent.
  virtual int token_id(const std::string& text) const = 0;

  bool same_as(const Tokenizer& o) const;

 protected:
  // Checks the ids against vocab_size(); called by subclasses once their vocabulary is built.
  void set_special(std::vector<int> eos_ids, int pad_id, const std::string& where);

 private:
  std::vector<int> eos_ids_;
  int pad_id_ = -1;
};

class CharTokenizer : public Tokenizer {
 public:
  // `eos_id` / `pad_id` are -1 when absent. Throws on duplicate or empty pieces.
  CharTokenizer(std::vector<std::string> pieces, int eos_id, int pad_id);

  std::string type() const override { return "char"; }
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  const std::vector<std::string>& pieces() const { return pieces_; }
  // Each UTF-8 character of `text` must be a piece; an unknown one is an error naming it and `where`.
  std::vector<int> encode(const std::string& text, const std::string& where = "input") const override;
  std::string decode(const std::vector<int>& ids) const override;
  std::string piece(int id) const override;
  const std::string& identity() const override { return identity_; }
  int token_id(const std::string& text) const override;

 private:
  std::vector<std::string> pieces_;
  std::unordered_map<std::string, int> index_;
  std::string identity_;  // the pieces, length-prefixed
};

}  // namespace opd
