#include "train/teacher_service.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>

#include "core/error.h"
#include "model/bpe_tokenizer.h"
#include "model/shards.h"

namespace opd {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Polling, not a blocking MPI wait: an idle teacher must not spin a core the students sample on.
void nap() { std::this_thread::sleep_for(std::chrono::microseconds(200)); }

}  // namespace

namespace {

// Between a TP teacher replica's leader and its other ranks: the request bytes to score, or an
// empty message when the service ends.
constexpr int kTagReplicaWork = 7103;

// Scores one request with this rank's part of the teacher; under TP every rank of the replica takes
// part (collectives inside) and the full log-softmax rows are gathered for the reply.
TeacherScores score_request(ColocatedTeacher& scorer, Transformer& teacher, const ScoreRequest& q, double& flops) {
  flops = 0;
  TeacherScores s = q.shared_prefix ? scorer.score_shared_prefix(q.batch, q.kl, &flops) : scorer.score(q.batch, q.kl);
  if (!q.shared_prefix) flops = scoring_flops(teacher, q.batch);
  if (teacher.tp() && !s.full.empty())
    s.full = gather_columns(*teacher.tp(), s.full.data(), q.batch.B * q.batch.T, teacher.vocab_shard().size);
  return s;
}

// Fault-injection drill for tests: a teacher rank dies by SIGKILL on its N-th request
// (OPD_FAULT_TEACHER_KILL_AT_REQUEST; with OPD_FAULT_RANK, only that world rank).
int64_t kill_at_request(int world_rank) {
  const char* at = std::getenv("OPD_FAULT_TEACHER_KILL_AT_REQUEST");
  const char* rank = std::getenv("OPD_FAULT_RANK");
  return at && (!rank || std::atoi(rank) == world_rank) ? std::atoll(at) : -1;
}

// A teacher replica's rank other than its leader: scores what the leader forwards until told to stop.
ServiceStats follow_leader(Communicator& replica, Transformer& teacher, int world_rank) {
  const int64_t kill_at = kill_at_request(world_rank);
  ColocatedTeacher scorer(teacher);
  const int V = teacher.config().vocab, max_seq = teacher.config().max_seq;
  ServiceStats stats;
  for (;;) {
    Incoming in;
    if (!replica.probe(0, kTagReplicaWork, in)) {
      nap();  // the leader enforces --teacher-timeout; a dead leader aborts the job
      continue;
    }
    std::vector<char> buf(in.bytes);
    replica.irecv(buf.data(), buf.size(), 0, kTagReplicaWork)->wait();
    if (buf.empty()) return stats;
    const ScoreRequest q = decode_request(buf.data(), buf.size(), V, max_seq, "the replica's leader");
    if (++stats.requests == kill_at) std::raise(SIGKILL);
    const auto t0 = Clock::now();
    double flops = 0;
    score_request(scorer, teacher, q, flops);
    stats.busy_s += since(t0);
  }
}

}  // namespace

ServiceStats serve_teacher(Communicator& world, Transformer& teacher, int clients, double timeout_s) {
  Communicator* replica = teacher.tp();
  if (replica && replica->rank() != 0) return follow_leader(*replica, teacher, world.rank());
  auto forward_to_replica = [&](const std::vector<char>& bytes) {
    if (!replica) return;
    std::vector<std::unique_ptr<Request>> sends;
    for (int r = 1; r < replica->size(); ++r) sends.push_back(replica->isend(bytes.data(), bytes.size(), r, kTagReplicaWork));
    for (auto& s : sends) s->wait();
  };
  ColocatedTeacher scorer(teacher);
  const int V = teacher.config().vocab, max_seq = teacher.config().max_seq;
  const int64_t kill_at = kill_at_request(world.rank());
  ServiceStats stats;
  struct Outgoing {
    std::vector<char> data;
    std::unique_ptr<Request> send;
  };
  std::deque<Outgoing> out;
  int done = 0;
  auto last = Clock::now();
  while (done < clients) {
    while (!out.empty() && out.front().send->test()) out.pop_front();
    Incoming in;
    if (!world.probe(-1, kTagScoreRequest, in)) {
      OPD_REQUIRE(since(last) < timeout_s, "teacher rank ", world.rank(), ": no request for ", timeout_s, " s while ",
                  clients - done, " of ", clients, " student clients have not finished (--teacher-timeout)");
      nap();
      continue;
    }
    std::vector<char> buf(in.bytes);
    world.irecv(buf.data(), buf.size(), in.source, kTagScoreRequest)->wait();
    last = Clock::now();
    const ScoreRequest q = decode_request(buf.data(), buf.size(), V, max_seq, str("rank ", in.source));
    if (q.kind == RequestKind::kShutdown) {
      ++done;
      continue;
    }
    ++stats.requests;
    if (stats.requests == kill_at) std::raise(SIGKILL);
    const auto t0 = Clock::now();
    forward_to_replica(buf);  // validated: the replica's other ranks decode the same bytes
    double flops = 0;
    const TeacherScores s = score_request(scorer, teacher, q, flops);
    const double busy = since(t0);
    stats.busy_s += busy;
    Outgoing o;
    o.data = encode_reply(q, V, s, busy, flops);
    o.send = world.isend(o.data.data(), o.data.size(), in.source, kTagScoreReply);
    out.push_back(std::move(o));
    last = Clock::now();
  }
  forward_to_replica({});
  for (auto& o : out) o.send->wait();
  return stats;
}

std::shared_ptr<const Tokenizer> share_teacher_tokenizer(Communicator& world, int root, const Tokenizer* mine) {
  const bool giver = world.rank() == root;
  OPD_REQUIRE(!giver || mine, "share_teacher_tokenizer: rank ", root, " must give its tokenizer");
  // int32 [kind (0 char, 1 bpe), pad, n_eos, eos ids..., n_strings, length of each...] then the
  // strings' bytes: a char tokenizer's pieces, or a BPE tokenizer's tokenizer.json.
  std::vector<int32_t> head;
  std::string bytes;
  if (giver) {
    std::vector<std::string> strings;
    if (auto* c = dynamic_cast<const CharTokenizer*>(mine)) {
      strings = c->pieces();
    } else if (auto* b = dynamic_cast<const BpeTokenizer*>(mine)) {
      strings = {b->json_text()};
    } else {
      throw Error(str("share_teacher_tokenizer: a ", mine->type(), " tokenizer cannot be sent"));
    }
    head = {mine->type() == "char" ? 0 : 1, mine->pad_id(), int32_t(mine->eos_ids().size())};
    head.insert(head.end(), mine->eos_ids().begin(), mine->eos_ids().end());
    head.push_back(int32_t(strings.size()));
    for (const auto& p : strings) {
      head.push_back(static_cast<int32_t>(p.size()));
      bytes += p;
    }
  }
  int64_t sizes[2] = {int64_t(head.size()), int64_t(bytes.size())};
  world.broadcast(sizes, sizeof(sizes), root);
  head.resize(sizes[0]);
  bytes.resize(sizes[1]);
  world.broadcast(head.data(), head.size() * sizeof(int32_t), root);
  world.broadcast(bytes.data(), bytes.size(), root);
  const std::string where = str("teacher tokenizer from rank ", root);
  OPD_REQUIRE(head.size() >= 4 && (head[0] == 0 || head[0] == 1) && head[2] >= 0 && size_t(head[2]) + 4 <= head.size(),
              where, ": malformed (", head.size(), " header ints)");
  const std::vector<int> eos(head.begin() + 3, head.begin() + 3 + head[2]);
  const size_t n_at = 3 + size_t(head[2]);
  OPD_REQUIRE(head[n_at] >= 0 && head.size() == n_at + 1 + size_t(head[n_at]), where, ": malformed string count");
  std::vector<std::string> strings;
  size_t at = 0;
  for (int i = 0; i < head[n_at]; ++i) {
    const int32_t len = head[n_at + 1 + i];
    OPD_REQUIRE(len >= 0 && at + len <= bytes.size(), where, ": string ", i, " overruns the bytes");
    strings.push_back(bytes.substr(at, len));
    at += len;
  }
  if (head[0] == 0) {
    OPD_REQUIRE(eos.size() <= 1, where, ": a char tokenizer with ", eos.size(), " EOS ids");
    return std::make_shared<CharTokenizer>(std::move(strings), eos.empty() ? -1 : eos[0], head[1]);
  }
  OPD_REQUIRE(strings.size() == 1, where, ": a BPE tokenizer needs one tokenizer.json, got ", strings.size());
  auto bpe = std::make_shared<BpeTokenizer>(strings[0], where);
  bpe->set_special_tokens(eos, head[1]);
  return bpe;
}

RemoteScoring::RemoteScoring(Communicator& world, std::vector<int> replicas, int vocab, int first_choice,
                             double timeout_s, bool shared_prefix)
    : world_(world),
      replicas_(std::move(replicas)),
      in_flight_(replicas_.size(), 0),
      vocab_(vocab),
      first_choice_(first_choice),
      timeout_s_(timeout_s),
      shared_prefix_(shared_prefix) {
  OPD_REQUIRE(!replicas_.empty(), "remote scoring: no teacher replica");
}

void RemoteScoring::progress() {
  for (auto& [ticket, p] : pending_) {
    p.send->test();
    p.recv->test();
  }
}

int RemoteScoring::submit(const SequenceBatch& batch, const KlSpec& kl) {
  OPD_REQUIRE(!shut_, "remote scoring: submit after shutdown");
  const int n = static_cast<int>(replicas_.size());
  int pick = first_choice_ % n;
  for (int i = 0; i < n; ++i) {
    const int r = (first_choice_ + i) % n;
    if (in_flight_[r] < in_flight_[pick]) pick = r;
  }
  const int ticket = next_++;
  Pending& p = pending_[ticket];
  p.replica = pick;
  p.B = batch.B;
  p.T = batch.T;
  p.kl = kl;
  p.request = encode_request(ticket, batch, kl, shared_prefix_);
  p.reply.resize(reply_bytes(batch.B, batch.T, kl, vocab_));
  // The receive is posted first: replies from one replica arrive in the order of the requests.
  p.recv = world_.irecv(p.reply.data(), p.reply.size(), replicas_[pick], kTagScoreReply);
  p.send = world_.isend(p.request.data(), p.request.size() * sizeof(int32_t), replicas_[pick], kTagScoreRequest);
  ++in_flight_[pick];
  progress();
  return ticket;
}

bool RemoteScoring::ready(int ticket) {
  auto it = pending_.find(ticket);
  OPD_REQUIRE(it != pending_.end(), "remote scoring: ticket ", ticket, " was never submitted or is already collected");
  progress();
  return it->second.recv->test();
}

TeacherScores RemoteScoring::collect(int ticket) {
  auto it = pending_.find(ticket);
  OPD_REQUIRE(it != pending_.end(), "remote scoring: ticket ", ticket, " was never submitted or is already collected");
  Pending& p = it->second;
  const auto t0 = Clock::now();
  while (!p.recv->test()) {
    progress();
    OPD_REQUIRE(since(t0) < timeout_s_, "rank ", world_.rank(), ": no scores from teacher rank ", replicas_[p.replica],
                " for ", timeout_s_, " s (ticket ", ticket, "; --teacher-timeout)");
    nap();
  }
  p.send->wait();
  usage_.wait += since(t0);
  double busy = 0, flops = 0;
  TeacherScores s = decode_reply(p.reply.data(), p.reply.size(), ticket, p.B, p.T, p.kl, vocab_,
                                 str("teacher rank ", replicas_[p.replica]), busy, flops);
  usage_.busy += busy;
  usage_.flops += flops;
  --in_flight_[p.replica];
  pending_.erase(it);
  return s;
}

void RemoteScoring::shutdown() {
  if (shut_) return;
  OPD_REQUIRE(pending_.empty(), "remote scoring: shutdown with ", pending_.size(), " micro-batches not collected");
  const std::vector<int32_t> msg = encode_shutdown();
  std::vector<std::unique_ptr<Request>> sends;
  for (int r : replicas_) sends.push_back(world_.isend(msg.data(), msg.size() * sizeof(int32_t), r, kTagScoreRequest));
  for (auto& s : sends) s->wait();
  shut_ = true;
}

}  // namespace opd
