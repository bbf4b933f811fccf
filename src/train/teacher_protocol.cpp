#include "train/teacher_protocol.h"

#include <cstring>

#include "core/error.h"

namespace opd {

namespace {

int32_t mode_code(const KlSpec& kl) { return static_cast<int32_t>(kl.mode); }

size_t topk_width(const KlSpec& kl) { return kl.mode == KlSpec::kTopK ? size_t(kl.k) + 1 : 0; }

}  // namespace

std::vector<int32_t> encode_request(int ticket, const SequenceBatch& b, const KlSpec& kl, bool shared_prefix) {
  OPD_REQUIRE(static_cast<int>(b.lengths.size()) == b.B && b.tokens.size() == size_t(b.B) * b.T &&
                  b.targets.size() == b.tokens.size(),
              "scoring request: a batch of ", b.B, " x ", b.T, " with ", b.lengths.size(), " lengths, ",
              b.tokens.size(), " tokens and ", b.targets.size(), " targets");
  std::vector<int32_t> m = {static_cast<int32_t>(kTeacherMagic), kTeacherProtocolVersion,
                            static_cast<int32_t>(RequestKind::kScore), ticket, b.B, b.T, mode_code(kl), kl.k,
                            shared_prefix ? kFlagSharedPrefix : 0};
  m.insert(m.end(), b.lengths.begin(), b.lengths.end());
  m.insert(m.end(), b.tokens.begin(), b.tokens.end());
  m.insert(m.end(), b.targets.begin(), b.targets.end());
  return m;
}

std::vector<int32_t> encode_shutdown() {
  return {static_cast<int32_t>(kTeacherMagic), kTeacherProtocolVersion, static_cast<int32_t>(RequestKind::kShutdown),
          0, 0, 0, 0, 0, 0};
}

ScoreRequest decode_request(const void* data, size_t bytes, int vocab, int max_seq, const std::string& from) {
  const std::string where = "scoring request from " + from;
  OPD_REQUIRE(bytes % sizeof(int32_t) == 0 && bytes >= kRequestHeaderInts * sizeof(int32_t), where, ": ", bytes,
              " bytes is not a request (header: ", kRequestHeaderInts * sizeof(int32_t), " bytes, then int32s)");
  const size_t n = bytes / sizeof(int32_t);
  std::vector<int32_t> m(n);
  std::memcpy(m.data(), data, bytes);
  OPD_REQUIRE(static_cast<uint32_t>(m[0]) == kTeacherMagic, where, ": bad magic 0x", std::hex, m[0]);
  OPD_REQUIRE(m[1] == kTeacherProtocolVersion, where, ": protocol version ", m[1], ", this teacher speaks ",
              kTeacherProtocolVersion);
  ScoreRequest r;
  OPD_REQUIRE(m[2] == int32_t(RequestKind::kScore) || m[2] == int32_t(RequestKind::kShutdown), where,
              ": unknown kind ", m[2]);
  r.kind = static_cast<RequestKind>(m[2]);
  r.ticket = m[3];
  if (r.kind == RequestKind::kShutdown) {
    OPD_REQUIRE(n == kRequestHeaderInts, where, ": a shutdown message of ", bytes, " bytes");
    return r;
  }
  const int B = m[4], T = m[5];
  OPD_REQUIRE(B > 0 && T > 0 && T <= max_seq, where, ": batch ", B, " x ", T, " (T must be in [1, max_seq = ", max_seq,
              "])");
  OPD_REQUIRE(m[6] >= KlSpec::kSampled && m[6] <= KlSpec::kTopK, where, ": unknown KL mode ", m[6]);
  r.kl.mode = static_cast<KlSpec::Mode>(m[6]);
  r.kl.k = m[7];
  OPD_REQUIRE(r.kl.mode != KlSpec::kTopK || (r.kl.k >= 1 && r.kl.k <= vocab), where, ": top-K with K = ", r.kl.k,
              " outside [1, vocab = ", vocab, "]");
  OPD_REQUIRE((m[8] & ~kFlagSharedPrefix) == 0, where, ": unknown flags ", m[8]);
  r.shared_prefix = (m[8] & kFlagSharedPrefix) != 0;
  const size_t N = size_t(B) * T, want = kRequestHeaderInts + size_t(B) + 2 * N;
  OPD_REQUIRE(n == want, where, ": ", n, " int32s for a ", B, " x ", T, " batch that needs ", want);
  SequenceBatch& b = r.batch;
  b.B = B;
  b.T = T;
  const int32_t* p = m.data() + kRequestHeaderInts;
  b.lengths.assign(p, p + B);
  b.tokens.assign(p + B, p + B + N);
  b.targets.assign(p + B + N, p + B + 2 * N);
  for (int i = 0; i < B; ++i)
    OPD_REQUIRE(b.lengths[i] >= 1 && b.lengths[i] <= T, where, ": row ", i, " has length ", b.lengths[i],
                " outside [1, T = ", T, "]");
  for (size_t i = 0; i < N; ++i) {
    OPD_REQUIRE(b.tokens[i] >= 0 && b.tokens[i] < vocab, where, ": token id ", b.tokens[i], " at ", i,
                " is outside the vocabulary [0, ", vocab, ")");
    OPD_REQUIRE(b.targets[i] >= -1 && b.targets[i] < vocab, where, ": target id ", b.targets[i], " at ", i,
                " is outside [-1, ", vocab, ")");
    b.trained_rows += b.targets[i] >= 0;
  }
  return r;
}

size_t reply_bytes(int B, int T, const KlSpec& kl, int vocab) {
  const size_t N = size_t(B) * T;
  size_t floats = N;
  if (kl.mode == KlSpec::kFull) floats += N * vocab;
  return sizeof(ReplyHeader) + floats * sizeof(float) + N * topk_width(kl) * (sizeof(int32_t) + sizeof(float));
}

std::vector<char> encode_reply(const ScoreRequest& q, int vocab, const TeacherScores& s, double busy_s, double flops) {
  const SequenceBatch& b = q.batch;
  const size_t N = size_t(b.B) * b.T, K1 = topk_width(q.kl);
  std::vector<char> out(reply_bytes(b.B, b.T, q.kl, vocab));
  ReplyHeader h{kTeacherMagic, kTeacherProtocolVersion, q.ticket, b.B, b.T, mode_code(q.kl), q.kl.k, vocab, busy_s,
                flops};
  char* p = out.data();
  auto put = [&p](const void* src, size_t n) {
    std::memcpy(p, src, n);
    p += n;
  };
  put(&h, sizeof(h));
  OPD_REQUIRE(s.logp.size() == N, "scoring reply: ", s.logp.size(), " log-probs for ", N, " positions");
  put(s.logp.data(), N * sizeof(float));
  if (q.kl.mode == KlSpec::kFull) put(s.full.data(), N * vocab * sizeof(float));
  if (K1) {
    put(s.topk_ids.data(), N * K1 * sizeof(int32_t));
    put(s.topk_logp.data(), N * K1 * sizeof(float));
  }
  return out;
}

TeacherScores decode_reply(const void* data, size_t bytes, int ticket, int B, int T, const KlSpec& kl, int vocab,
                           const std::string& from, double& busy_s, double& flops) {
  const std::string where = "scoring reply from " + from;
  OPD_REQUIRE(bytes == reply_bytes(B, T, kl, vocab), where, ": ", bytes, " bytes, expected ",
              reply_bytes(B, T, kl, vocab), " for ticket ", ticket, " (", B, " x ", T, ", kl ", kl.str(), ")");
  ReplyHeader h;
  const char* p = static_cast<const char*>(data);
  std::memcpy(&h, p, sizeof(h));
  p += sizeof(h);
  OPD_REQUIRE(h.magic == kTeacherMagic && h.version == kTeacherProtocolVersion, where, ": bad magic or version ",
              h.version);
  OPD_REQUIRE(h.ticket == ticket && h.B == B && h.T == T && h.kl_mode == mode_code(kl) && h.k == kl.k &&
                  h.vocab == vocab,
              where, ": answers ticket ", h.ticket, " (", h.B, " x ", h.T, ", vocab ", h.vocab, ") but ticket ", ticket,
              " (", B, " x ", T, ", vocab ", vocab, ") was expected");
  busy_s = h.busy_s;
  flops = h.flops;
  const size_t N = size_t(B) * T, K1 = topk_width(kl);
  TeacherScores s;
  auto get = [&p](auto& v, size_t n) {
    v.resize(n);
    std::memcpy(v.data(), p, n * sizeof(v[0]));
    p += n * sizeof(v[0]);
  };
  get(s.logp, N);
  if (kl.mode == KlSpec::kFull) get(s.full, N * vocab);
  if (K1) {
    get(s.topk_ids, N * K1);
    get(s.topk_logp, N * K1);
    for (int id : s.topk_ids)
      OPD_REQUIRE(id >= -1 && id < vocab, where, ": top-K id ", id, " outside [-1, ", vocab, ")");
  }
  return s;
}

}  // namespace opd
