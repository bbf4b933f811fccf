#include "bench/step_presets.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/jsonl.h"
#include "model/generate.h"
#include "model/memory_plan.h"
#include "model/presets.h"
#include "train/optimizer.h"
#include "train/teacher.h"
#include "train/update.h"

namespace opd::bench {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) * 1024.0;  // Linux reports KiB
}

// A random model of the preset's shape on the CPU, with its head block set.
std::unique_ptr<Transformer> random_model(const ModelConfig& cfg, uint64_t seed, int head_rows, bool train,
                                          const std::string& who) {
  std::vector<std::string> pieces;
  pieces.reserve(cfg.vocab);
  for (int i = 0; i < cfg.vocab; ++i) pieces.push_back("<" + std::to_string(i) + ">");
  // No EOS: every sequence samples the full --new-tokens, so each step does the same work.
  auto model = std::make_unique<Transformer>(cfg, std::make_shared<CharTokenizer>(pieces, -1, -1));
  model->set_head_rows(head_rows);
  if (!train) model->set_forward_only();
  const auto t = Clock::now();
  model->init_random(seed);
  std::cerr << "[bench step] " << who << ": " << cfg.num_parameters() / 1e9 << "B parameters, random init "
            << since(t) << " s\n";
  return model;
}

// What a model holds of logits at once for a forward of n rows: [min(n, block), V] fp32, and as
// much again for their gradient where it trains.
size_t logits_bytes(const Transformer& m, size_t n, bool train) {
  const size_t rows = m.streams_head(n) ? size_t(m.head_rows()) : n;
  return rows * m.vocab_shard().size * sizeof(float) * (train ? 2 : 1);
}

struct Phases {
  double rollout = 0, score = 0, update = 0, step = 0;
};

}  // namespace

int run_bench_step_presets(const PresetStepOptions& o) {
  OPD_REQUIRE(o.batch >= 1 && o.micro_batch >= 1 && o.prompt >= 1 && o.new_tokens >= 1 && o.steps >= 1,
              "opd bench step: --prompts-per-step, --micro-batch, --prompt, --new-tokens and --steps must be at "
              "least 1");
  const int B = o.batch, MB = o.micro_batch, P = o.prompt, G = o.new_tokens, T = P + G;
  const ModelConfig sc = qwen3_preset(o.student, T, "--student-preset");
  const ModelConfig tc = qwen3_preset(o.teacher, T, "--teacher-preset");
  OPD_REQUIRE(sc.vocab == tc.vocab, "opd bench step: student and teacher vocabularies differ");
  const KlSpec kl = parse_kl(o.kl, sc.vocab);
  auto student = random_model(sc, 1, o.head_rows, /*train=*/true, "student " + o.student);
  auto teacher = random_model(tc, 2, o.head_rows, /*train=*/false, "teacher " + o.teacher);
  OptimizerOptions oo;
  oo.lr = 1e-5;
  AdamW opt(*student, oo);
  DistillOptions distill;
  distill.kl = kl;
  ColocatedTeacher scorer(*teacher);

  std::vector<std::vector<int>> prompts(B);
  std::vector<uint32_t> ids(B);
  for (int b = 0; b < B; ++b) {
    ids[b] = uint32_t(b);
    for (int t = 0; t < P; ++t) prompts[b].push_back(int((uint64_t(b * T + t) * 2654435761u) % sc.vocab));
  }
  GenerateOptions gen;
  gen.max_new_tokens = G;
  gen.sampling.temperature = 1.0f;
  gen.sampling.seed = 7;

  const size_t NM = size_t(MB) * T;
  std::printf("bench step --device cpu: student %s, teacher %s, %d sequences of %d prompt + %d sampled tokens in "
              "micro-batches of %d (%zu positions), --kl %s, --head-chunk %s\n",
              o.student.c_str(), o.teacher.c_str(), B, P, G, MB, NM, kl.str().c_str(),
              o.head_rows < 0 ? "auto" : std::to_string(o.head_rows).c_str());
  std::printf("logits held at once per micro-batch: student %s (logits + gradient, %s), teacher %s (%s)\n",
              format_bytes(logits_bytes(*student, NM, true)).c_str(),
              student->streams_head(NM) ? str("blocks of ", student->head_rows(), " rows").c_str() : "[N, V]",
              format_bytes(logits_bytes(*teacher, NM, false)).c_str(),
              teacher->streams_head(NM) ? str("blocks of ", teacher->head_rows(), " rows").c_str() : "[N, V]");
  std::printf("%5s %9s %9s %9s %9s %12s\n", "step", "rollout", "score", "update", "step", "peak RSS");
  std::vector<Phases> times;
  for (int step = 1; step <= o.steps; ++step) {
    Phases ph;
    const auto t_step = Clock::now();
    gen.sampling.step = uint32_t(step);
    auto t0 = Clock::now();
    const std::vector<Generation> gens = generate(*student, prompts, ids, gen);
    ph.rollout = since(t0);
    std::vector<Sequence> seqs;
    double trained = 0;
    for (int b = 0; b < B; ++b) {
      seqs.push_back({prompts[b], gens[b].tokens, b, gens[b].eos});
      trained += double(gens[b].tokens.size());
    }
    student->zero_grad();
    for (int b0 = 0; b0 < B; b0 += MB) {
      const std::vector<Sequence> micro(seqs.begin() + b0, seqs.begin() + std::min(B, b0 + MB));
      const SequenceBatch batch = make_batch(micro, 0);
      t0 = Clock::now();
      const TeacherScores scores = scorer.score(batch, kl);
      ph.score += since(t0);
      t0 = Clock::now();
      update_micro_batch(*student, batch, Method::kDistill, distill, &scores, {});
      ph.update += since(t0);
    }
    t0 = Clock::now();
    opt.step(step, 1.0 / trained);
    ph.update += since(t0);
    ph.step = since(t_step);
    times.push_back(ph);
    std::printf("%5d %9.2f %9.2f %9.2f %9.2f %12s\n", step, ph.rollout, ph.score, ph.update, ph.step,
                format_bytes(size_t(peak_rss_bytes())).c_str());
    std::fflush(stdout);
  }
  Phases m;
  const size_t first = times.size() > 1 ? 1 : 0;  // the first step warms caches and pages up
  for (size_t i = first; i < times.size(); ++i) {
    const double w = 1.0 / double(times.size() - first);
    m.rollout += w * times[i].rollout;
    m.score += w * times[i].score;
    m.update += w * times[i].update;
    m.step += w * times[i].step;
  }
  std::printf("%5s %9.2f %9.2f %9.2f %9.2f %12s\n", "mean", m.rollout, m.score, m.update, m.step,
              format_bytes(size_t(peak_rss_bytes())).c_str());
  std::printf("times in seconds, mean over steps %s; peak RSS: getrusage's maximum resident set so far\n",
              first ? "2.." : "1");
  const json j = {{"bench", "step"},         {"device", "cpu"},          {"student", o.student},
                  {"teacher", o.teacher},    {"batch", B},               {"micro_batch", MB},
                  {"prompt", P},             {"new_tokens", G},          {"kl", kl.str()},
                  {"head_rows_student", student->streams_head(NM) ? student->head_rows() : int(NM)},
                  {"head_rows_teacher", teacher->streams_head(NM) ? teacher->head_rows() : int(NM)},
                  {"rollout_s", m.rollout},  {"score_s", m.score},       {"update_s", m.update},
                  {"step_s", m.step},        {"peak_rss_bytes", peak_rss_bytes()}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace opd::bench
