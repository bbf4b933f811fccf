// A teacher rank serving scoring requests: the scores that come back are the colocated teacher's,
// bit for bit, in every KL mode and with several requests in flight; a bad message ends the
// service with an error naming the rank that sent it.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"

#include "model/tiny_model.h"
#include "parallel/mpi_communicator.h"
#include "train/teacher_service.h"

namespace opd {
namespace {

SequenceBatch batch_for(int client, int which) {
  std::vector<Sequence> seqs;
  for (int i = 0; i < 3 + which; ++i) {
    Sequence s;
    for (int t = 0; t < 2 + i % 2; ++t) s.prompt.push_back(2 + (client + i + t) % 9);
    for (int t = 0; t < 2 + (i + which) % 4; ++t) s.completion.push_back(1 + (client * 5 + i * 3 + t) % 10);
    seqs.push_back(s);
  }
  return make_batch(seqs, 0);
}

TEST(TeacherService, RemoteScoresEqualColocatedInEveryMode) {
  auto w = MpiCommunicator::world();
  const int n = w->size(), r = w->rank(), teacher_rank = n - 1;
  auto teacher = testing::tiny_model(false, 5);
  if (r == teacher_rank) {
    const ServiceStats st = serve_teacher(*w, *teacher, n - 1, 60);
    EXPECT_EQ(st.requests, 3 * (n - 1));
    EXPECT_GT(st.busy_s, 0);
    w->barrier();  // the next test's messages must not reach this service
    return;
  }
  RemoteScoring remote(*w, {teacher_rank}, teacher->config().vocab, r, 60);
  ColocatedTeacher local(*teacher);
  KlSpec modes[3];
  modes[1].mode = KlSpec::kFull;
  modes[2].mode = KlSpec::kTopK;
  modes[2].k = 3;
  int tickets[3];
  for (int m = 0; m < 3; ++m) tickets[m] = remote.submit(batch_for(r, m), modes[m]);  // all three in flight
  for (int m = 2; m >= 0; --m) {  // collected out of order
    const TeacherScores got = remote.collect(tickets[m]);
    const TeacherScores want = local.score(batch_for(r, m), modes[m]);
    EXPECT_EQ(got.logp, want.logp) << "mode " << modes[m].str();
    EXPECT_EQ(got.full, want.full) << "mode " << modes[m].str();
    EXPECT_EQ(got.topk_ids, want.topk_ids) << "mode " << modes[m].str();
    EXPECT_EQ(got.topk_logp, want.topk_logp) << "mode " << modes[m].str();
  }
  const ScoringClient::Usage u = remote.take_usage();
  EXPECT_GT(u.busy, 0);
  EXPECT_GT(u.flops, 0);
  remote.shutdown();
  w->barrier();
}

TEST(TeacherService, BadMessagesEndTheServiceNamingTheSender) {
  auto w = MpiCommunicator::world();
  const int n = w->size(), r = w->rank(), teacher_rank = n - 1;
  auto teacher = testing::tiny_model(false, 5);
  SequenceBatch b = batch_for(0, 0);
  std::vector<std::vector<int32_t>> bad;
  bad.push_back(encode_request(0, b, KlSpec{}));
  bad.back()[kRequestHeaderInts + b.B + 4] = 99;  // a token id outside the vocabulary of 11
  bad.push_back(encode_request(0, b, KlSpec{}));
  bad.back()[1] = 42;  // protocol version
  bad.push_back(encode_request(0, b, KlSpec{}));
  bad.back().pop_back();  // one int short
  const char* expect[] = {"token id 99", "protocol version 42", "int32s for a 3 x"};
  for (size_t i = 0; i < bad.size(); ++i) {
    if (r == teacher_rank) {
      try {
        serve_teacher(*w, *teacher, 1, 60);
        ADD_FAILURE() << "accepted bad message " << i;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("scoring request from rank 0"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(expect[i]), std::string::npos) << e.what();
      }
    } else if (r == 0) {
      w->isend(bad[i].data(), bad[i].size() * sizeof(int32_t), teacher_rank, kTagScoreRequest)->wait();
    }
    w->barrier();
  }
}

}  // namespace
}  // namespace opd
