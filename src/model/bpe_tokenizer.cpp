#include "model/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace opd {

using json = nlohmann::json;

namespace {

// GPT-2's pre-tokenizer, used by a ByteLevel pre-tokenizer with use_regex.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length of the valid UTF-8 sequence at s[i], or the length of its longest valid prefix negated
// (at least 1 byte) when it is invalid: the "maximal subpart" that one U+FFFD replaces.
int utf8_sequence(const std::string& s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  int n;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  uint32_t v = c & (0xFF >> (n + 1));
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return -k;
    const uint8_t d = b(i + k);
    if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return -k;
    v = (v << 6) | (d & 0x3F);
  }
  *cp = v;
  return n;
}

std::string where_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    const int n = utf8_sequence(s, i, &cp);
    if (n < 0) return str("invalid UTF-8 at byte ", i);
    i += n;
  }
  return "";
}

// Parses JSON nested at most kMaxDepth deep: the library's dump and comparisons recurse, so a
// hostile file must not get to choose the recursion depth.
constexpr int kMaxDepth = 64;
json parse_json(const std::string& text, const std::string& where) {
  json::parser_callback_t cb = [&](int depth, json::parse_event_t, json&) {
    OPD_REQUIRE(depth <= kMaxDepth, where, ": JSON nested deeper than ", kMaxDepth, " levels");
    return true;
  };
  try {
    return json::parse(text, cb);
  } catch (const json::exception& e) {
    throw Error(str(where, ": not valid JSON (", e.what(), ")"));
  }
}

// obj[key] when obj is an object holding a string there, else "".
std::string text_field(const json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool is_null_or_empty_string(const json& j) { return j.is_null() || (j.is_string() && j.get<std::string>().empty()); }

const json& field(const json& obj, const char* name, const std::string& where) {
  OPD_REQUIRE(obj.is_object() && obj.contains(name), where, ": missing field '", name, "'");
  return obj[name];
}

bool flag(const json& obj, const char* name, bool dflt, const std::string& where) {
  if (!obj.contains(name) || obj[name].is_null()) return dflt;
  OPD_REQUIRE(obj[name].is_boolean(), where, ": field '", name, "' is not a boolean");
  return obj[name].get<bool>();
}

}  // namespace

struct BpeTokenizer::Impl {
  std::vector<pcre2_code*> splits;  // applied in order; each match and each gap becomes a piece
  pcre2_match_data* match = nullptr;
  pcre2_match_context* limits = nullptr;
  Impl() {
    // A pathological pattern from a bad file fails with an error instead of backtracking for hours.
    limits = pcre2_match_context_create(nullptr);
    OPD_REQUIRE(limits, "tokenizer: out of memory creating a PCRE2 match context");
    pcre2_set_match_limit(limits, 10000000);
    pcre2_set_depth_limit(limits, 100000);
  }
  ~Impl() {
    for (auto* c : splits) pcre2_code_free(c);
    if (match) pcre2_match_data_free(match);
    pcre2_match_context_free(limits);
  }
  void add(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
    if (!re) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(str(where, ": pre_tokenizer regex does not compile at offset ", off, " (",
                      reinterpret_cast<const char*>(msg), "): ", pattern));
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // a speed-up only: matching falls back without it
    splits.push_back(re);
    if (!match) match = pcre2_match_data_create(4, nullptr);
  }
  // Splits `s` (valid UTF-8) into matches and the gaps between them ("Isolated" behaviour).
  void split(pcre2_code* re, const std::string& s, std::vector<std::string>& out) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t at = 0, gap = 0;
    while (at < s.size()) {
      const int rc = pcre2_match(re, subject, s.size(), at, PCRE2_NO_UTF_CHECK, match, limits);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        throw Error(str("tokenizer: the pre_tokenizer regex failed on a text of ", s.size(), " bytes (",
                        reinterpret_cast<const char*>(msg), ")"));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
      if (ov[1] == ov[0]) {  // an empty match splits nothing; step over one character
        uint32_t cp;
        at = ov[0] + std::max(1, utf8_sequence(s, ov[0], &cp));
        continue;
      }
      if (ov[0] > gap) out.push_back(s.substr(gap, ov[0] - gap));
      out.push_back(s.substr(ov[0], ov[1] - ov[0]));
      at = gap = ov[1];
    }
    if (gap < s.size()) out.push_back(s.substr(gap));
  }
};

BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer::BpeTokenizer(const std::string& json_text, const std::string& where)
    : json_text_(json_text), where_(where), impl_(std::make_unique<Impl>()) {
  const json j = parse_json(json_text, where);
  OPD_REQUIRE(j.is_object(), where, ": tokenizer.json is not a JSON object");

  // GPT-2's table: printable bytes stand for themselves, the rest for code points from 256 up.
  for (int b = 0, extra = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + extra++);
    append_utf8(byte_to_char_[b], cp);
    char_to_byte_[cp] = static_cast<uint8_t>(b);
  }

  const json& model = field(j, "model", where);
  const std::string mw = where + ": model";
  OPD_REQUIRE(model.is_object() && text_field(model, "type") == "BPE", mw,
              ".type must be \"BPE\" (opd reads byte-level BPE tokenizers only)");
  OPD_REQUIRE(is_null_or_empty_string(model.value("continuing_subword_prefix", json())), mw,
              ".continuing_subword_prefix is not supported");
  OPD_REQUIRE(is_null_or_empty_string(model.value("end_of_word_suffix", json())), mw,
              ".end_of_word_suffix is not supported");
  OPD_REQUIRE(!flag(model, "byte_fallback", false, mw), mw, ".byte_fallback is not supported");
  const json dropout = model.value("dropout", json());
  OPD_REQUIRE(dropout.is_null() || (dropout.is_number() && dropout.get<double>() == 0.0), mw,
              ".dropout must be null (BPE dropout makes encoding random)");
  ignore_merges_ = flag(model, "ignore_merges", false, mw);
  const json& vocab = field(model, "vocab", mw);
  OPD_REQUIRE(vocab.is_object() && !vocab.empty(), mw, ".vocab must be a non-empty object");
  int max_id = -1;
  for (const auto& [tok, id] : vocab.items()) {
    OPD_REQUIRE(id.is_number_unsigned() && id.get<uint64_t>() < (uint64_t(1) << 30), mw, ".vocab['", tok,
                "'] is not a token id");
    vocab_[tok] = id.get<int>();
    max_id = std::max(max_id, id.get<int>());
  }

  const json& added = j.value("added_tokens", json::array());
  OPD_REQUIRE(added.is_array(), where, ": added_tokens is not an array");
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string aw = str(where, ": added_tokens[", i, "]");
    const json& a = added[i];
    OPD_REQUIRE(a.is_object() && a.contains("id") && a["id"].is_number_unsigned() &&
                    a["id"].get<uint64_t>() < (uint64_t(1) << 30) && a.contains("content") && a["content"].is_string(),
                aw, " needs an integer 'id' and a string 'content'");
    Added t{a["content"].get<std::string>(), a["id"].get<int>(), flag(a, "normalized", false, aw)};
    OPD_REQUIRE(!t.content.empty(), aw, " has empty content");
    for (const char* f : {"single_word", "lstrip", "rstrip"})
      OPD_REQUIRE(!flag(a, f, false, aw), aw, " ('", t.content, "'): '", f, "' is not supported");
    max_id = std::max(max_id, t.id);
    added_.push_back(t);
  }
  vocab_size_ = max_id + 1;
  id_to_token_.assign(vocab_size_, "");
  id_is_added_.assign(vocab_size_, 0);
  for (const auto& [tok, id] : vocab_) id_to_token_[id] = tok;
  for (const Added& a : added_) {
    id_to_token_[a.id] = a.content;
    id_is_added_[a.id] = 1;
  }
  // Longest first: where two added tokens start at one position the longer wins, as in HF.
  std::stable_sort(added_.begin(), added_.end(),
                   [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });

  const json unk = model.value("unk_token", json());
  if (!unk.is_null()) {
    OPD_REQUIRE(unk.is_string() && vocab_.count(unk.get<std::string>()), mw, ".unk_token is not in the vocabulary");
    unk_id_ = vocab_.at(unk.get<std::string>());
  }

  const json& merges = field(model, "merges", mw);
  OPD_REQUIRE(merges.is_array(), mw, ".merges is not an array");
  json merge_pairs = json::array();
  for (size_t r = 0; r < merges.size(); ++r) {
    std::string a, b;
    const json& m = merges[r];
    if (m.is_string()) {  // the older "left right" form
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      OPD_REQUIRE(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, mw, ".merges[", r, "] = '", s,
                  "' is not two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      OPD_REQUIRE(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), mw, ".merges[", r,
                  "] is neither \"left right\" nor [left, right]");
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    }
    auto ia = vocab_.find(a), ib = vocab_.find(b), ic = vocab_.find(a + b);
    OPD_REQUIRE(ia != vocab_.end() && ib != vocab_.end() && ic != vocab_.end(), mw, ".merges[", r, "] ('", a, "' + '", b,
                "'): a part or the merged token is not in the vocabulary");
    merge_pairs.push_back({a, b});
    // Later duplicates overwrite earlier ones, as when HF collects them into its map.
    merges_[(uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second)] = {static_cast<int>(r), ic->second};
  }

  const json norm = j.value("normalizer", json());
  std::vector<json> norms;
  if (!norm.is_null()) {
    OPD_REQUIRE(norm.is_object(), where, ": normalizer is not an object");
    if (text_field(norm, "type") == "Sequence")
      for (const json& n : field(norm, "normalizers", where + ": normalizer")) norms.push_back(n);
    else
      norms.push_back(norm);
  }
  for (const json& n : norms) {
    const std::string t = text_field(n, "type");
    OPD_REQUIRE(t == "NFC", where, ": normalizer '", n.dump(), "' is not supported (only NFC)");
    nfc_ = true;
  }

  const json& pre = field(j, "pre_tokenizer", where);
  std::vector<json> steps;
  OPD_REQUIRE(pre.is_object(), where, ": pre_tokenizer must be an object (ByteLevel, or a Sequence ending in one)");
  if (text_field(pre, "type") == "Sequence") {
    const json& list = field(pre, "pretokenizers", where + ": pre_tokenizer");
    OPD_REQUIRE(list.is_array(), where, ": pre_tokenizer.pretokenizers is not an array");
    for (const json& p : list) steps.push_back(p);
  } else {
    steps.push_back(pre);
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    const json& s = steps[i];
    const std::string sw = str(where, ": pre_tokenizer step ", i);
    const std::string t = text_field(s, "type");
    if (t == "Split") {
      const json& pat = field(s, "pattern", sw);
      OPD_REQUIRE(pat.is_object() && (pat.contains("Regex") || pat.contains("String")), sw,
                  ": pattern must be {\"Regex\": ...} or {\"String\": ...}");
      OPD_REQUIRE(text_field(s, "behavior") == "Isolated", sw, ": behavior '", (s.contains("behavior") ? s["behavior"].dump() : "null"),
                  "' is not supported (only Isolated)");
      OPD_REQUIRE(!flag(s, "invert", false, sw), sw, ": invert is not supported");
      if (pat.contains("Regex")) {
        OPD_REQUIRE(pat["Regex"].is_string(), sw, ": Regex is not a string");
        impl_->add(pat["Regex"].get<std::string>(), sw);
      } else {
        OPD_REQUIRE(pat["String"].is_string() && !pat["String"].get<std::string>().empty(), sw,
                    ": String is not a non-empty string");
        impl_->add("\\Q" + pat["String"].get<std::string>() + "\\E", sw);
      }
    } else if (t == "ByteLevel") {
      OPD_REQUIRE(i + 1 == steps.size(), sw, ": ByteLevel must be the last pre-tokenizer");
      OPD_REQUIRE(!flag(s, "add_prefix_space", false, sw), sw, ": add_prefix_space is not supported");
      if (flag(s, "use_regex", true, sw)) impl_->add(kGpt2Pattern, sw);
    } else {
      throw Error(str(sw, ": pre-tokenizer type '", t, "' is not supported (Split, ByteLevel)"));
    }
  }
  OPD_REQUIRE(!steps.empty() && text_field(steps.back(), "type") == "ByteLevel", where,
              ": the pre_tokenizer does not end in ByteLevel; opd reads byte-level BPE tokenizers only");

  const json dec = j.value("decoder", json());
  OPD_REQUIRE(dec.is_object() && text_field(dec, "type") == "ByteLevel", where,
              ": decoder must be ByteLevel, got ", dec.dump());

  // What decides encoding and decoding, in one canonical form: files that differ only in what
  // opd ignores (post-processor, padding, the merges' spelling) are the same tokenizer.
  json added_ids = json::array();
  for (const Added& a : added_) added_ids.push_back({a.id, a.content, a.normalized});
  std::sort(added_ids.begin(), added_ids.end());
  identity_ = json{{"vocab", vocab}, {"merges", merge_pairs}, {"ignore_merges", ignore_merges_}, {"unk", unk_id_},
                   {"added", added_ids}, {"nfc", nfc_}, {"pre_tokenizer", pre}}
                  .dump();
}

void BpeTokenizer::set_special_tokens(std::vector<int> eos_ids, int pad_id) { set_special(std::move(eos_ids), pad_id, where_); }

std::string BpeTokenizer::normalize(const std::string& s) const {
  if (!nfc_ || s.empty()) return s;
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&err);
  OPD_REQUIRE(U_SUCCESS(err), "tokenizer: ICU NFC normalizer unavailable (", u_errorName(err), ")");
  int32_t n16 = 0;
  err = U_ZERO_ERROR;
  u_strFromUTF8(nullptr, 0, &n16, s.data(), static_cast<int32_t>(s.size()), &err);
  std::u16string in(n16, u'\0'), out;
  err = U_ZERO_ERROR;
  u_strFromUTF8(reinterpret_cast<UChar*>(in.data()), n16, nullptr, s.data(), static_cast<int32_t>(s.size()), &err);
  OPD_REQUIRE(U_SUCCESS(err), "tokenizer: UTF-8 to UTF-16 failed (", u_errorName(err), ")");
  out.resize(in.size() * 3 + 16);
  err = U_ZERO_ERROR;
  const int32_t m = unorm2_normalize(nfc, reinterpret_cast<const UChar*>(in.data()), n16,
                                     reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &err);
  OPD_REQUIRE(U_SUCCESS(err), "tokenizer: NFC normalization failed (", u_errorName(err), ")");
  int32_t n8 = 0;
  err = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &n8, reinterpret_cast<const UChar*>(out.data()), m, &err);
  std::string r(n8, '\0');
  err = U_ZERO_ERROR;
  u_strToUTF8(r.data(), n8, nullptr, reinterpret_cast<const UChar*>(out.data()), m, &err);
  OPD_REQUIRE(U_SUCCESS(err), "tokenizer: UTF-16 to UTF-8 failed (", u_errorName(err), ")");
  return r;
}

// Splits out the added tokens whose `normalized` flag is `normalized`: leftmost match first, the
// longest where several start at one position. Pieces of ordinary text carry id -1.
void BpeTokenizer::split_added(const std::string& text, bool normalized,
                               std::vector<std::pair<std::string, int>>& out) const {
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const Added* hit = nullptr;
    for (const Added& a : added_)
      if (a.normalized == normalized && text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > start) out.emplace_back(text.substr(start, i - start), -1);
    out.emplace_back(hit->content, hit->id);
    i += hit->content.size();
    start = i;
  }
  if (start < text.size()) out.emplace_back(text.substr(start), -1);
}

std::vector<int> BpeTokenizer::encode(const std::string& text, const std::string& where) const {
  const std::string bad = where_utf8(text);
  OPD_REQUIRE(bad.empty(), where, ": ", bad, " (the tokenizer reads UTF-8 text)");
  std::vector<std::pair<std::string, int>> raw, pieces;
  split_added(text, false, raw);
  for (auto& [s, id] : raw) {
    if (id >= 0) {
      pieces.emplace_back(std::move(s), id);
    } else {
      split_added(normalize(s), true, pieces);
    }
  }
  std::vector<int> ids;
  for (const auto& [s, id] : pieces) {
    if (id >= 0)
      ids.push_back(id);
    else
      encode_segment(s, ids);
  }
  return ids;
}

void BpeTokenizer::encode_segment(const std::string& text, std::vector<int>& ids) const {
  std::vector<std::string> words{text}, next;
  for (pcre2_code* re : impl_->splits) {
    next.clear();
    for (const std::string& w : words) impl_->split(re, w, next);
    words.swap(next);
  }
  for (const std::string& w : words) {
    std::string mapped;
    for (unsigned char c : w) mapped += byte_to_char_[c];
    bpe(mapped, ids);
  }
}

void BpeTokenizer::bpe(const std::string& word, std::vector<int>& ids) const {
  if (ignore_merges_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  std::vector<int> sym;
  for (size_t i = 0; i < word.size();) {
    uint32_t cp;
    const int n = utf8_sequence(word, i, &cp);  // `word` is mapped bytes: always valid
    auto it = vocab_.find(word.substr(i, n));
    if (it != vocab_.end())
      sym.push_back(it->second);
    else if (unk_id_ >= 0)
      sym.push_back(unk_id_);
    // else: HF drops a character it cannot represent; so do we
    i += n;
  }
  // Merge the lowest-ranked adjacent pair (the leftmost among equals) until none is left.
  while (sym.size() > 1) {
    int best = std::numeric_limits<int>::max(), at = -1, merged = -1;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = merges_.find((uint64_t(uint32_t(sym[i])) << 32) | uint32_t(sym[i + 1]));
      if (it != merges_.end() && it->second.first < best) {
        best = it->second.first;
        at = static_cast<int>(i);
        merged = it->second.second;
      }
    }
    if (at < 0) break;
    sym[at] = merged;
    sym.erase(sym.begin() + at + 1);
  }
  ids.insert(ids.end(), sym.begin(), sym.end());
}

std::string BpeTokenizer::decode(const std::vector<int>& ids) const {
  std::string bytes;
  for (int id : ids) {
    OPD_REQUIRE(id >= 0, where_, ": token id ", id, " is negative");
    if (id >= vocab_size_ || id_to_token_[id].empty()) continue;
    const std::string& t = id_to_token_[id];
    // The ByteLevel decoder maps every character back to its byte; one outside the table (an
    // added token's text) stays as it is.
    for (size_t i = 0; i < t.size();) {
      uint32_t cp;
      const int n = utf8_sequence(t, i, &cp);
      if (n < 0) {
        bytes += t[i++];
        continue;
      }
      auto it = char_to_byte_.find(cp);
      if (it != char_to_byte_.end())
        bytes += static_cast<char>(it->second);
      else
        bytes.append(t, i, n);
      i += n;
    }
  }
  // Bytes that are not valid UTF-8 become U+FFFD, one per maximal invalid subsequence.
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    uint32_t cp;
    const int n = utf8_sequence(bytes, i, &cp);
    if (n > 0) {
      out.append(bytes, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += -n;
    }
  }
  return out;
}

std::string BpeTokenizer::piece(int id) const {
  if (id < 0 || id >= vocab_size_ || id_to_token_[id].empty()) return "<id " + std::to_string(id) + ">";
  return id_is_added_[id] ? id_to_token_[id] : decode({id});
}

int BpeTokenizer::token_id(const std::string& text) const {
  for (const Added& a : added_)
    if (a.content == text) return a.id;
  auto it = vocab_.find(text);
  return it == vocab_.end() ? -1 : it->second;
}

}  // namespace opd
