// The student <-> teacher messages: a round trip keeps every field; bad sizes, ids, versions and
// mismatched replies are errors that name the sender.
#include <gtest/gtest.h>

#include "core/error.h"
#include "train/teacher_protocol.h"

namespace {

using namespace opd;

SequenceBatch two_rows() { return make_batch({Sequence{{2, 3}, {4, 5, 1}, 0, true}, Sequence{{2}, {6}, 1, false}}, 0); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TeacherProtocol, RequestRoundTrip) {
  const SequenceBatch b = two_rows();
  KlSpec kl;
  kl.mode = KlSpec::kTopK;
  kl.k = 2;
  const auto m = encode_request(7, b, kl);
  const ScoreRequest q = decode_request(m.data(), m.size() * 4, 11, 32, "rank 3");
  EXPECT_EQ(q.kind, RequestKind::kScore);
  EXPECT_EQ(q.ticket, 7);
  EXPECT_EQ(q.batch.tokens, b.tokens);
  EXPECT_EQ(q.batch.targets, b.targets);
  EXPECT_EQ(q.batch.lengths, (std::vector<int>{5, 2}));
  EXPECT_EQ(q.batch.trained_rows, b.trained_rows);
  EXPECT_EQ(q.kl.mode, KlSpec::kTopK);
  EXPECT_EQ(q.kl.k, 2);
  EXPECT_FALSE(q.shared_prefix);
  const auto sp = encode_request(8, b, kl, /*shared_prefix=*/true);
  EXPECT_TRUE(decode_request(sp.data(), sp.size() * 4, 11, 32, "rank 3").shared_prefix);
  const auto s = encode_shutdown();
  EXPECT_EQ(decode_request(s.data(), s.size() * 4, 11, 32, "rank 3").kind, RequestKind::kShutdown);
}

TEST(TeacherProtocol, BadRequestsNameTheSenderAndTheField) {
  const SequenceBatch b = two_rows();
  auto m = encode_request(1, b, KlSpec{});
  auto bad = [&](std::vector<int32_t> v, int vocab = 11, int max_seq = 32) {
    return error_of([&] { decode_request(v.data(), v.size() * 4, vocab, max_seq, "rank 5"); });
  };
  EXPECT_NE(bad(m, 6).find("scoring request from rank 5: target id 6 at 5 is outside [-1, 6)"), std::string::npos)
      << bad(m, 6);
  EXPECT_NE(bad(m, 11, 4).find("batch 2 x 5 (T must be in [1, max_seq = 4])"), std::string::npos);
  auto v = m;
  v[0] = 1234;
  EXPECT_NE(bad(v).find("bad magic"), std::string::npos);
  v = m;
  v[6] = 9;
  EXPECT_NE(bad(v).find("unknown KL mode 9"), std::string::npos);
  v = m;
  v[8] = 6;
  EXPECT_NE(bad(v).find("unknown flags 6"), std::string::npos);
  v = m;
  v[kRequestHeaderInts] = 6;  // a length beyond T
  EXPECT_NE(bad(v).find("row 0 has length 6 outside [1, T = 5]"), std::string::npos) << bad(v);
  v = m;
  v.push_back(0);
  EXPECT_NE(bad(v).find("32 int32s for a 2 x 5 batch that needs 31"), std::string::npos) << bad(v);
  EXPECT_NE(error_of([&] { decode_request(m.data(), 10, 11, 32, "rank 5"); }).find("10 bytes is not a request"),
            std::string::npos);
}

TEST(TeacherProtocol, ReplyRoundTripAndMismatch) {
  const SequenceBatch b = two_rows();
  KlSpec kl;
  kl.mode = KlSpec::kFull;
  const auto m = encode_request(4, b, kl);
  const ScoreRequest q = decode_request(m.data(), m.size() * 4, 7, 32, "rank 1");
  TeacherScores s;
  for (int i = 0; i < 10; ++i) s.logp.push_back(-0.5f * i);
  for (int i = 0; i < 70; ++i) s.full.push_back(-0.1f * i);
  const auto r = encode_reply(q, 7, s, 0.25, 1e6);
  double busy = 0, flops = 0;
  const TeacherScores got = decode_reply(r.data(), r.size(), 4, 2, 5, kl, 7, "teacher rank 2", busy, flops);
  EXPECT_EQ(got.logp, s.logp);
  EXPECT_EQ(got.full, s.full);
  EXPECT_EQ(busy, 0.25);
  EXPECT_EQ(flops, 1e6);
  const std::string e =
      error_of([&] { decode_reply(r.data(), r.size(), 5, 2, 5, kl, 7, "teacher rank 2", busy, flops); });
  EXPECT_NE(e.find("scoring reply from teacher rank 2: answers ticket 4"), std::string::npos) << e;
  EXPECT_NE(error_of([&] {
              decode_reply(r.data(), r.size() - 4, 4, 2, 5, kl, 7, "teacher rank 2", busy, flops);
            }).find("bytes, expected"),
            std::string::npos);
}

}  // namespace
