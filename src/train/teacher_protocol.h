// The messages between student DP leaders and teacher replicas (docs/ARCHITECTURE.md §4). Versioned, and
// checked on arrival: sizes, token ids within the vocabulary, the reply matching its request. A
// bad message is an opd::Error naming the rank it came from.
//
// request: int32 [magic, version, kind, ticket, B, T, kl_mode, k, flags] + lengths[B] + tokens[B*T] +
//          targets[B*T] (the token each row's position predicts; -1: not scored)
// reply:   ReplyHeader + float logp[B*T] + (kl full: float rows[B*T*V] | topk: int32 ids[B*T*(K+1)]
//          + float logp[B*T*(K+1)])
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/batch.h"
#include "train/teacher.h"

namespace opd {

inline constexpr uint32_t kTeacherMagic = 0x5444504f;  // "OPDT"
inline constexpr int32_t kTeacherProtocolVersion = 1;
inline constexpr int kTagScoreRequest = 7101;
inline constexpr int kTagScoreReply = 7102;
inline constexpr int kRequestHeaderInts = 9;
inline constexpr int32_t kFlagSharedPrefix = 1;  // score each prompt group against one prefill

enum class RequestKind : int32_t { kScore = 1, kShutdown = 2 };

struct ScoreRequest {
  RequestKind kind = RequestKind::kScore;
  int ticket = 0;
  SequenceBatch batch;  // tokens, targets, lengths, B, T
  KlSpec kl;
  bool shared_prefix = false;
};

struct ReplyHeader {
  uint32_t magic;
  int32_t version, ticket, B, T, kl_mode, k, vocab;
  double busy_s;  // seconds the teacher spent on this request
  double flops;   // its forward FLOPs
};

std::vector<int32_t> encode_request(int ticket, const SequenceBatch& batch, const KlSpec& kl,
                                    bool shared_prefix = false);
std::vector<int32_t> encode_shutdown();
// `from` names the sender in errors, e.g. "rank 2".
ScoreRequest decode_request(const void* data, size_t bytes, int vocab, int max_seq, const std::string& from);

size_t reply_bytes(int B, int T, const KlSpec& kl, int vocab);
std::vector<char> encode_reply(const ScoreRequest& request, int vocab, const TeacherScores& scores, double busy_s,
                               double flops);
// Checks the reply against the request it answers; fills busy_s and flops.
TeacherScores decode_reply(const void* data, size_t bytes, int ticket, int B, int T, const KlSpec& kl, int vocab,
                           const std::string& from, double& busy_s, double& flops);

}  // namespace opd
