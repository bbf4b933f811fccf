// Dedicated teacher ranks (docs/ARCHITECTURE.md §4): a teacher replica serves scoring requests until
// every client has said it is done; students reach the replicas through RemoteScoring, which
// sends each micro-batch non-blocking to the least-loaded replica and takes the scores back when
// the trainer needs them.
#pragma once
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "train/scoring.h"
#include "train/teacher_protocol.h"

namespace opd {

struct ServiceStats {
  int64_t requests = 0;
  double busy_s = 0;
};

// Runs on a teacher rank: answers score requests from any rank of `world` until `clients`
// shutdown messages have arrived. A bad message or `timeout_s` without any message is an error.
// A teacher sharded over several ranks (teacher.tp(), --teacher-tp): its rank 0 receives and
// answers, and hands each request to the replica's other ranks, which score their shards with it.
ServiceStats serve_teacher(Communicator& world, Transformer& teacher, int clients, double timeout_s);

// Collective over `world`: rank `root` (a teacher) gives its tokenizer (`mine`; other ranks may
// pass null), every rank returns it, so students can check they share it without loading the teacher.
std::shared_ptr<const Tokenizer> share_teacher_tokenizer(Communicator& world, int root, const Tokenizer* mine);

class RemoteScoring : public ScoringClient {
 public:
  // `replicas`: the world rank that receives each replica's requests. `first_choice` spreads the
  // clients over the replicas when all are equally loaded (e.g. the DP rank). `shared_prefix`:
  // the replicas score each prompt group against one prefill of the prompt.
  RemoteScoring(Communicator& world, std::vector<int> replicas, int vocab, int first_choice, double timeout_s,
                bool shared_prefix = false);
  int submit(const SequenceBatch& batch, const KlSpec& kl) override;
  TeacherScores collect(int ticket) override;
  bool ready(int ticket) override;
  // Tells every replica this client is done (after the last collect).
  void shutdown();

 private:
  struct Pending {
    int replica = 0, B = 0, T = 0;
    KlSpec kl;
    std::vector<int32_t> request;
    std::vector<char> reply;
    std::unique_ptr<Request> send, recv;
  };
  void progress();
  Communicator& world_;
  std::vector<int> replicas_;
  std::vector<int> in_flight_;  // per replica
  int vocab_, first_choice_;
  double timeout_s_;
  bool shared_prefix_;
  std::map<int, Pending> pending_;
  int next_ = 0;
  bool shut_ = false;
};

}  // namespace opd
