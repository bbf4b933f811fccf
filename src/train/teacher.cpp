#include "train/teacher.h"

#include <algorithm>

#include "core/error.h"
#include "model/memory_plan.h"
#include "model/vocab_parallel.h"

namespace opd {

std::string KlSpec::str() const {
  switch (mode) {
    case kFull: return "full";
    case kTopK: return "topk:" + std::to_string(k);
    default: return "sampled";
  }
}

KlSpec parse_kl(const std::string& text, int vocab) {
  KlSpec s;
  if (text == "sampled") return s;
  if (text == "full") {
    s.mode = KlSpec::kFull;
    return s;
  }
  if (text.rfind("topk:", 0) == 0) {
    s.mode = KlSpec::kTopK;
    try {
      size_t used = 0;
      s.k = std::stoi(text.substr(5), &used);
      OPD_REQUIRE(used == text.size() - 5, "");
    } catch (...) {
      throw Error(str("option --kl = '", text, "': K must be an integer, as in topk:8"));
    }
    OPD_REQUIRE(s.k >= 1 && s.k <= vocab, "option --kl = '", text, "': K must be in [1, vocab = ", vocab, "]");
    return s;
  }
  throw Error(str("option --kl = '", text, "' is not one of sampled, full, topk:K"));
}

std::string full_rows_report(const KlSpec& kl, double tokens, int vocab, int micro_batches_per_step,
                             bool teacher_ranks) {
  const double row = double(vocab) * sizeof(float), per_micro = tokens * row;
  constexpr double kReportAbove = double(size_t(16) << 20);  // below, a rounding error of a step's memory
  if (kl.mode != KlSpec::kFull || per_micro < kReportAbove) return "";
  const double topk = tokens * (64 + 1) * (sizeof(int) + sizeof(float));
  std::string r = str("--kl full: the teacher's log-softmax rows take ", format_bytes(size_t(per_micro)),
                      " per micro-batch (", tokens, " positions x ", vocab, " fp32) on each student rank");
  if (teacher_ranks)
    r += str(", and ", format_bytes(size_t(per_micro * micro_batches_per_step)),
             " per step between the teacher and student ranks");
  r += str("; topk:64 would take ", format_bytes(size_t(topk)), " per micro-batch");
  constexpr double kRecommendAbove = double(size_t(1) << 30);
  if (per_micro > kRecommendAbove)
    r += str(". Past ", format_bytes(size_t(kRecommendAbove)), " per micro-batch, --kl topk:K (e.g. topk:64) is "
             "recommended: the reverse KL over the teacher's top K plus the sampled token, renormalised, from [N, K+1] rows");
  return r;
}

namespace {

// Scores of n rows of logits (any rows, in the model's memory) whose targets are `targets`, into
// the outputs' first n rows: log-probs [n], and for kFull log-softmax rows [n, V], for kTopK ids
// and log-probs [n, K+1].
void score_rows(const VocabShard& vs, const float* logits, const int* targets, int n, const KlSpec& kl, float* logp,
                float* full, int* ids, float* topk_logp) {
  vocab_parallel::logprobs(vs, logp, nullptr, nullptr, logits, targets, n);
  if (kl.mode == KlSpec::kFull) vocab_parallel::log_softmax(vs, full, logits, n);
  if (kl.mode == KlSpec::kTopK)
    vocab_parallel::topk_logprobs(vs, ids, topk_logp, logits, targets, /*skip_without_extra=*/true, n, kl.k);
}

// Empty scores for N rows: log-probs 0, full rows 0, top-K slots -1 with log-prob 0.
TeacherScores empty_scores(int N, const KlSpec& kl, int V) {
  TeacherScores s;
  s.logp.assign(N, 0.0f);
  if (kl.mode == KlSpec::kFull) s.full.assign(size_t(N) * V, 0.0f);
  if (kl.mode == KlSpec::kTopK) {
    s.topk_ids.assign(size_t(N) * (kl.k + 1), -1);
    s.topk_logp.assign(size_t(N) * (kl.k + 1), 0.0f);
  }
  return s;
}

}  // namespace

TeacherScores score_blocks(LogitBlocks& logits, const SequenceBatch& batch, const KlSpec& kl) {
  const VocabShard& vs = logits.vocab();
  const int N = batch.B * batch.T;
  OPD_REQUIRE(logits.rows() == N, "teacher scores: logits of ", logits.rows(), " rows for a batch of ", N);
  TeacherScores s;
  s.logp.resize(N);
  if (kl.mode == KlSpec::kFull) s.full.resize(size_t(N) * vs.size);  // under TP: this rank's columns
  if (kl.mode == KlSpec::kTopK) {
    s.topk_ids.resize(size_t(N) * (kl.k + 1));
    s.topk_logp.resize(size_t(N) * (kl.k + 1));
  }
  const size_t K1 = size_t(kl.k) + 1;
  for (int i = 0; i < logits.count(); ++i) {
    const LogitBlocks::Block blk = logits.block(i);
    const size_t r0 = blk.r0;
    score_rows(vs, blk.logits, batch.targets.data() + r0, blk.n, kl, s.logp.data() + r0,
               s.full.empty() ? nullptr : s.full.data() + r0 * vs.size,
               s.topk_ids.empty() ? nullptr : s.topk_ids.data() + r0 * K1,
               s.topk_logp.empty() ? nullptr : s.topk_logp.data() + r0 * K1);
  }
  return s;
}

TeacherScores ColocatedTeacher::score(const SequenceBatch& batch, const KlSpec& kl) {
  forward(batch);
  return scores(batch, kl);
}

void ColocatedTeacher::forward(const SequenceBatch& batch) {
  last_ = forward_logits(model_, batch.tokens.data(), batch.B, batch.T, /*train=*/false);
}

TeacherScores ColocatedTeacher::scores(const SequenceBatch& batch, const KlSpec& kl) {
  OPD_REQUIRE(last_, "teacher scores: no forward to score");
  return score_blocks(*last_, batch, kl);
}

namespace {

// The rows of a batch grouped by identical prompts (the prompt: the tokens before a row's first
// target), in order of their first row; rows without a target belong to no group.
struct PromptGroup {
  int first = 0, prompt = 0, longest = 0;  // first row, prompt length, the longest row's length
  std::vector<int> rows;
};

std::vector<PromptGroup> prompt_groups(const SequenceBatch& b) {
  const int B = b.B, T = b.T;
  std::vector<int> prompt_len(B, 0);
  for (int r = 0; r < B; ++r)
    for (int t = 0; t < T; ++t)
      if (b.targets[size_t(r) * T + t] >= 0) {
        prompt_len[r] = t + 1;
        break;
      }
  const int* tok = b.tokens.data();
  std::vector<char> done(B, 0);
  std::vector<PromptGroup> groups;
  for (int r0 = 0; r0 < B; ++r0) {
    if (done[r0] || prompt_len[r0] == 0) continue;
    PromptGroup g;
    g.first = r0;
    g.prompt = prompt_len[r0];
    for (int r = r0; r < B; ++r)
      if (!done[r] && prompt_len[r] == g.prompt &&
          std::equal(tok + size_t(r0) * T, tok + size_t(r0) * T + g.prompt, tok + size_t(r) * T)) {
        g.rows.push_back(r);
        done[r] = 1;
        g.longest = std::max(g.longest, b.lengths[r]);
      }
    groups.push_back(std::move(g));
  }
  return groups;
}

}  // namespace

TeacherScores ColocatedTeacher::score_shared_prefix(const SequenceBatch& b, const KlSpec& kl, double* flops) {
  if (model_.streams_head(size_t(b.B) * b.T)) return shared_prefix_streamed(b, kl, flops);
  const int B = b.B, T = b.T, V = model_.vocab_shard().size;  // this rank's share of a row under TP
  OPD_REQUIRE(static_cast<int>(b.lengths.size()) == B, "shared-prefix scoring: the batch has no row lengths");
  // Rows with nothing to score keep zero logits: no score reads them. (The decoder's memory: the
  // GPU's, on the GPU path.)
  float* logits = model_.scratch_rows(size_t(B) * T * V);
  const int* tok = b.tokens.data();
  double fl = 0;
  for (const PromptGroup& pg : prompt_groups(b)) {
    const int r0 = pg.first, P = pg.prompt, longest = pg.longest;
    const std::vector<int>& group = pg.rows;
    const int G = static_cast<int>(group.size());
    // The prompt once, into the cache's first sequence: its last position predicts every row's
    // first completion token.
    KVCache cache;
    model_.reset_cache(cache, G, longest);
    const float* pl = model_.prefill(cache, tok + size_t(r0) * T, 1, P);
    fl += model_.forward_flops(P, P / 2.0);
    for (int r : group) model_.copy_rows(logits + (size_t(r) * T + P - 1) * V, pl + size_t(P - 1) * V, V);
    const int E = longest - P - 1;  // completion tokens that predict a later one
    if (E <= 0) continue;
    model_.fork_cache(cache, P);
    std::vector<int> tokens(size_t(G) * E), start(G, P);
    for (int g = 0; g < G; ++g) std::copy_n(tok + size_t(group[g]) * T + P, E, tokens.data() + size_t(g) * E);
    const float* el = model_.extend(cache, tokens.data(), E, start.data());
    fl += model_.forward_flops(double(G) * E, P + E / 2.0);
    for (int g = 0; g < G; ++g)
      for (int e = 0; e < E; ++e) {
        const size_t row = size_t(group[g]) * T + P + e;
        if (b.targets[row] >= 0) model_.copy_rows(logits + row * V, el + (size_t(g) * E + e) * V, V);
      }
  }
  if (flops) *flops = fl;
  return from_logits(logits, b, kl);
}

TeacherScores ColocatedTeacher::from_logits(const float* logits, const SequenceBatch& batch, const KlSpec& kl) {
  RowsInMemory rows(model_.vocab_shard(), batch.B * batch.T, logits, nullptr);
  return score_blocks(rows, batch, kl);
}

// score_shared_prefix with the head streamed: each group's prompt row and its completions' rows are
// scored where the prefill and the extend leave their hidden states, a head block at a time, and
// the scores placed at their batch rows; no [B*T, V] rows are assembled.
TeacherScores ColocatedTeacher::shared_prefix_streamed(const SequenceBatch& b, const KlSpec& kl, double* flops) {
  const VocabShard& vs = model_.vocab_shard();
  const int B = b.B, T = b.T, V = vs.size;
  const size_t K1 = size_t(kl.k) + 1;
  OPD_REQUIRE(static_cast<int>(b.lengths.size()) == B, "shared-prefix scoring: the batch has no row lengths");
  TeacherScores s = empty_scores(B * T, kl, V);
  // Scores of n rows into temporaries, then each to its batch row (rows without a target stay empty).
  TeacherScores part = empty_scores(std::max(1, model_.head_rows()), kl, V);
  const auto place = [&](const float* logits, const std::vector<int>& at, int n) {
    std::vector<int> targets(n);
    for (int j = 0; j < n; ++j) targets[j] = b.targets[at[j]];
    score_rows(vs, logits, targets.data(), n, kl, part.logp.data(), part.full.data(), part.topk_ids.data(),
               part.topk_logp.data());
    for (int j = 0; j < n; ++j) {
      if (targets[j] < 0) continue;
      const size_t r = at[j];
      s.logp[r] = part.logp[j];
      if (kl.mode == KlSpec::kFull) std::copy_n(part.full.data() + size_t(j) * V, V, s.full.data() + r * V);
      if (kl.mode == KlSpec::kTopK) {
        std::copy_n(part.topk_ids.data() + j * K1, K1, s.topk_ids.data() + r * K1);
        std::copy_n(part.topk_logp.data() + j * K1, K1, s.topk_logp.data() + r * K1);
      }
    }
  };
  const int* tok = b.tokens.data();
  double fl = 0;
  for (const PromptGroup& pg : prompt_groups(b)) {
    const int r0 = pg.first, P = pg.prompt, longest = pg.longest;
    const std::vector<int>& group = pg.rows;
    const int G = static_cast<int>(group.size());
    KVCache cache;
    model_.reset_cache(cache, G, longest);
    model_.prefill_hidden(cache, tok + size_t(r0) * T, 1, P);
    fl += model_.forward_flops(P, P / 2.0);
    const float* last = model_.head_logits(P - 1, 1);  // predicts every row's first completion token
    for (int r : group) place(last, {r * T + P - 1}, 1);
    const int E = longest - P - 1;  // completion tokens that predict a later one
    if (E <= 0) continue;
    model_.fork_cache(cache, P);
    std::vector<int> tokens(size_t(G) * E), start(G, P);
    for (int g = 0; g < G; ++g) std::copy_n(tok + size_t(group[g]) * T + P, E, tokens.data() + size_t(g) * E);
    model_.extend_hidden(cache, tokens.data(), E, start.data());
    fl += model_.forward_flops(double(G) * E, P + E / 2.0);
    StreamedHead rows(model_, G * E, /*train=*/false, /*extended=*/true);
    for (int i = 0; i < rows.count(); ++i) {
      const LogitBlocks::Block blk = rows.block(i);
      std::vector<int> at(blk.n);
      for (int j = 0; j < blk.n; ++j) {
        const int row = blk.r0 + j;
        at[j] = group[row / E] * T + P + row % E;
      }
      place(blk.logits, at, blk.n);
    }
  }
  if (flops) *flops = fl;
  return s;
}

TeacherScores merge_scores(TeacherScores a, const TeacherScores& b, const std::vector<char>& use_b, int T, int V,
                           const KlSpec& kl) {
  const size_t K1 = kl.mode == KlSpec::kTopK ? size_t(kl.k) + 1 : 0;
  for (size_t s = 0; s < use_b.size(); ++s) {
    if (!use_b[s]) continue;
    const size_t r0 = s * T, r1 = r0 + T;
    std::copy(b.logp.begin() + r0, b.logp.begin() + r1, a.logp.begin() + r0);
    if (kl.mode == KlSpec::kFull) std::copy(b.full.begin() + r0 * V, b.full.begin() + r1 * V, a.full.begin() + r0 * V);
    if (kl.mode == KlSpec::kTopK) {
      std::copy(b.topk_ids.begin() + r0 * K1, b.topk_ids.begin() + r1 * K1, a.topk_ids.begin() + r0 * K1);
      std::copy(b.topk_logp.begin() + r0 * K1, b.topk_logp.begin() + r1 * K1, a.topk_logp.begin() + r0 * K1);
    }
  }
  return a;
}

void check_same_tokenizer(const Transformer& student, const std::string& student_path, const Transformer& teacher,
                          const std::string& teacher_path) {
  check_same_tokenizer(student.tokenizer(), student_path, teacher.tokenizer(), teacher_path);
}

void check_same_tokenizer(const Tokenizer& a, const std::string& student_path, const Tokenizer& b,
                          const std::string& teacher_path) {
  if (a.same_as(b)) return;
  auto describe = [](const Tokenizer& t) {
    std::string s = t.type() + " tokenizer of " + std::to_string(t.vocab_size()) + " tokens [";
    for (int i = 0; i < std::min(t.vocab_size(), 24); ++i) s += (i ? " " : "") + t.piece(i);
    return s + (t.vocab_size() > 24 ? " ...]" : "]") + " eos " + std::to_string(t.eos_id());
  };
  throw Error(str("teacher and student must share one tokenizer: student ", student_path, " has ", describe(a),
                  ", teacher ", teacher_path, " has ", describe(b)));
}

}  // namespace opd
