#include "train/teacher.h"

#include "core/error.h"
#include "kernels/cpu/logprobs.h"

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
  const int N = batch.B * batch.T, V = model_.config().vocab;
  const float* logits = model_.forward(batch.tokens.data(), batch.B, batch.T);
  TeacherScores s;
  s.logp.resize(N);
  cpu::logprobs_forward(s.logp.data(), static_cast<float*>(nullptr), logits, batch.targets.data(), N, V);
  if (kl.mode == KlSpec::kFull) {
    s.full.resize(size_t(N) * V);
    cpu::log_softmax_forward(s.full.data(), logits, N, V);
  } else if (kl.mode == KlSpec::kTopK) {
    s.topk_ids.resize(size_t(N) * (kl.k + 1));
    s.topk_logp.resize(size_t(N) * (kl.k + 1));
    cpu::topk_logprobs(s.topk_ids.data(), s.topk_logp.data(), logits, batch.targets.data(), /*skip_without_extra=*/true,
                       N, V, kl.k);
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
  const Tokenizer &a = student.tokenizer(), &b = teacher.tokenizer();
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
