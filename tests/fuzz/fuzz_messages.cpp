// libFuzzer target: the teacher service's messages (train/teacher_protocol), as a teacher reads a
// request and a student reads a reply. The first input byte picks which, and for a reply the KL
// mode and shape of the request it must answer; the rest is the message as it came off the wire.
// A request that decodes must encode back to the same ints.
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "fuzz_common.h"
#include "train/teacher_protocol.h"

namespace {

constexpr int kVocab = 18, kMaxSeq = 64;

void fuzz_request(const uint8_t* data, size_t size) {
  opd::ScoreRequest r;
  try {
    r = opd::decode_request(data, size, kVocab, kMaxSeq, "rank 1");
  } catch (const opd::Error&) {
    return;
  }
  if (r.kind == opd::RequestKind::kShutdown) return;
  for (int t : r.batch.tokens) FUZZ_ASSERT(t >= 0 && t < kVocab, "decoded tokens lie in the vocabulary");
  FUZZ_ASSERT(r.batch.T <= kMaxSeq, "decoded rows fit the model");
  const std::vector<int32_t> again = opd::encode_request(r.ticket, r.batch, r.kl, r.shared_prefix);
  FUZZ_ASSERT(again.size() * sizeof(int32_t) == size && std::memcmp(again.data(), data, size) == 0,
              "a request that decodes encodes back to the same bytes");
}

void fuzz_reply(uint8_t shape, const uint8_t* data, size_t size) {
  opd::KlSpec kl;
  kl.mode = static_cast<opd::KlSpec::Mode>(shape % 3);
  kl.k = kl.mode == opd::KlSpec::kTopK ? 1 + (shape >> 2) % 4 : 0;
  const int B = 1 + (shape >> 4) % 2, T = 1 + (shape >> 5) % 3;
  double busy = 0, flops = 0;
  try {
    const opd::TeacherScores s = opd::decode_reply(data, size, /*ticket=*/3, B, T, kl, kVocab, "rank 2", busy, flops);
    FUZZ_ASSERT(s.logp.size() == size_t(B) * T, "a decoded reply has one log-prob per row");
  } catch (const opd::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  if (data[0] & 1)
    fuzz_reply(data[1], data + 2, size - 2);
  else
    fuzz_request(data + 1, size - 1);
  return 0;
}
