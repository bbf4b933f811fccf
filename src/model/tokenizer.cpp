#include "model/tokenizer.h"

#include <algorithm>

#include "core/error.h"

namespace opd {

bool Tokenizer::is_eos(int id) const { return std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end(); }

bool Tokenizer::same_as(const Tokenizer& o) const {
  return type() == o.type() && eos_ids_ == o.eos_ids_ && pad_id_ == o.pad_id_ && identity() == o.identity();
}

void Tokenizer::set_special(std::vector<int> eos_ids, int pad_id, const std::string& where) {
  for (int id : eos_ids)
    OPD_REQUIRE(id >= 0 && id < vocab_size(), where, ": eos id ", id, " outside the vocabulary of ", vocab_size());
  OPD_REQUIRE(pad_id >= -1 && pad_id < vocab_size(), where, ": pad_id ", pad_id, " outside the vocabulary");
  eos_ids_ = std::move(eos_ids);
  pad_id_ = pad_id;
}

CharTokenizer::CharTokenizer(std::vector<std::string> pieces, int eos_id, int pad_id) : pieces_(std::move(pieces)) {
  OPD_REQUIRE(!pieces_.empty(), "tokenizer: empty vocabulary");
  for (size_t i = 0; i < pieces_.size(); ++i) {
    OPD_REQUIRE(!pieces_[i].empty(), "tokenizer: piece ", i, " is empty");
    OPD_REQUIRE(index_.emplace(pieces_[i], static_cast<int>(i)).second, "tokenizer: piece '", pieces_[i],
                "' appears twice (ids ", index_[pieces_[i]], " and ", i, ")");
  }
  for (const auto& p : pieces_) identity_ += std::to_string(p.size()) + ":" + p;
  OPD_REQUIRE(eos_id >= -1 && eos_id < vocab_size(), "tokenizer: eos_id ", eos_id, " outside the vocabulary");
  set_special(eos_id >= 0 ? std::vector<int>{eos_id} : std::vector<int>{}, pad_id, "tokenizer");
}

static size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;  // invalid lead byte: taken alone, and then rejected as an unknown piece
}

std::vector<int> CharTokenizer::encode(const std::string& text, const std::string& where) const {
  std::vector<int> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t len = std::min(utf8_length(static_cast<unsigned char>(text[i])), text.size() - i);
    std::string ch = text.substr(i, len);
    auto it = index_.find(ch);
    OPD_REQUIRE(it != index_.end(), where, ": character '", ch, "' at byte ", i,
                " is not in the model's vocabulary of ", vocab_size(), " pieces");
    ids.push_back(it->second);
    i += len;
  }
  return ids;
}

std::string CharTokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  for (int id : ids) {
    OPD_REQUIRE(id >= 0 && id < vocab_size(), "tokenizer: token id ", id, " outside the vocabulary of ",
                vocab_size());
    out += pieces_[id];
  }
  return out;
}

std::string CharTokenizer::piece(int id) const {
  return id >= 0 && id < vocab_size() ? pieces_[id] : "<id " + std::to_string(id) + ">";
}

int CharTokenizer::token_id(const std::string& text) const {
  auto it = index_.find(text);
  return it == index_.end() ? -1 : it->second;
}

}  // namespace opd
