#include "model/tokenizer.h"

#include "core/error.h"

namespace opd {

Tokenizer::Tokenizer(std::vector<std::string> pieces, int eos_id, int pad_id)
    : pieces_(std::move(pieces)), eos_id_(eos_id), pad_id_(pad_id) {
  OPD_REQUIRE(!pieces_.empty(), "tokenizer: empty vocabulary");
  for (size_t i = 0; i < pieces_.size(); ++i) {
    OPD_REQUIRE(!pieces_[i].empty(), "tokenizer: piece ", i, " is empty");
    OPD_REQUIRE(index_.emplace(pieces_[i], static_cast<int>(i)).second, "tokenizer: piece '", pieces_[i],
                "' appears twice (ids ", index_[pieces_[i]], " and ", i, ")");
  }
  OPD_REQUIRE(eos_id_ >= -1 && eos_id_ < vocab_size(), "tokenizer: eos_id ", eos_id_, " outside the vocabulary");
  OPD_REQUIRE(pad_id_ >= -1 && pad_id_ < vocab_size(), "tokenizer: pad_id ", pad_id_, " outside the vocabulary");
}

static size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;  // invalid lead byte: taken alone, and then rejected as an unknown piece
}

std::vector<int> Tokenizer::encode(const std::string& text, const std::string& where) const {
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

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  for (int id : ids) {
    OPD_REQUIRE(id >= 0 && id < vocab_size(), "tokenizer: token id ", id, " outside the vocabulary of ",
                vocab_size());
    out += pieces_[id];
  }
  return out;
}

}  // namespace opd
