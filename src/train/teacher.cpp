#include "train/teacher.h"

#include <algorithm>

#include "core/error.h"
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

TeacherScores ColocatedTeacher::score(const SequenceBatch& batch, const KlSpec& kl) {
  return from_logits(forward(batch), batch, kl);
}

const float* ColocatedTeacher::forward(const SequenceBatch& batch) {
  return model_.forward(batch.tokens.data(), batch.B, batch.T);
}

TeacherScores ColocatedTeacher::score_shared_prefix(const SequenceBatch& b, const KlSpec& kl, double* flops) {
  const int B = b.B, T = b.T, V = model_.vocab_shard().size;  // this rank's share of a row under TP
  OPD_REQUIRE(static_cast<int>(b.lengths.size()) == B, "shared-prefix scoring: the batch has no row lengths");
  // Rows with nothing to score keep zero logits: no score reads them. (The decoder's memory: the
  // GPU's, on the GPU path.)
  float* logits = model_.scratch_rows(size_t(B) * T * V);
  std::vector<int> prompt_len(B, 0);
  for (int r = 0; r < B; ++r)
    for (int t = 0; t < T; ++t)
      if (b.targets[size_t(r) * T + t] >= 0) {
        prompt_len[r] = t + 1;
        break;
      }
  const int* tok = b.tokens.data();
  std::vector<char> done(B, 0);
  double fl = 0;
  for (int r0 = 0; r0 < B; ++r0) {
    if (done[r0] || prompt_len[r0] == 0) continue;
    const int P = prompt_len[r0];
    std::vector<int> group;
    int longest = 0;
    for (int r = r0; r < B; ++r)
      if (!done[r] && prompt_len[r] == P &&
          std::equal(tok + size_t(r0) * T, tok + size_t(r0) * T + P, tok + size_t(r) * T)) {
        group.push_back(r);
        done[r] = 1;
        longest = std::max(longest, b.lengths[r]);
      }
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
  const VocabShard& vs = model_.vocab_shard();
  const int N = batch.B * batch.T;
  TeacherScores s;
  s.logp.resize(N);
  vocab_parallel::logprobs(vs, s.logp.data(), nullptr, nullptr, logits, batch.targets.data(), N);
  if (kl.mode == KlSpec::kFull) {
    s.full.resize(size_t(N) * vs.size);  // under TP: this rank's columns
    vocab_parallel::log_softmax(vs, s.full.data(), logits, N);
  } else if (kl.mode == KlSpec::kTopK) {
    s.topk_ids.resize(size_t(N) * (kl.k + 1));
    s.topk_logp.resize(size_t(N) * (kl.k + 1));
    vocab_parallel::topk_logprobs(vs, s.topk_ids.data(), s.topk_logp.data(), logits, batch.targets.data(),
                                  /*skip_without_extra=*/true, N, kl.k);
  }
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
