#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "io/model_file.h"
#include "train/gpu_plan.h"
#include "train/rollout.h"
#include "train/scoring.h"
#include "train/sft_data.h"
#include "train/teacher.h"

namespace opd {

const char* method_name(Method m) {
  switch (m) {
    case Method::kSft: return "sft";
    case Method::kRl: return "rl";
    default: return "distill";
  }
}

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The examples of one step: a fresh Philox-keyed shuffle of the data set every epoch, so every
// method run with the same seed sees the same prompts at the same step.
class PromptStream {
 public:
  PromptStream(const std::vector<Example>& data, uint64_t seed) : data_(data), seed_(seed) {}
  std::vector<Example> next(int n) {
    std::vector<Example> out;
    while (static_cast<int>(out.size()) < n) {
      const uint64_t epoch = cursor_ / data_.size();
      if (epoch != shuffled_epoch_) shuffle(epoch);
      out.push_back(data_[order_[cursor_ % data_.size()]]);
      ++cursor_;
    }
    return out;
  }
  uint64_t cursor() const { return cursor_; }
  void seek(uint64_t cursor) { cursor_ = cursor; }

 private:
  void shuffle(uint64_t epoch) {
    order_.resize(data_.size());
    std::iota(order_.begin(), order_.end(), 0);
    std::vector<uint32_t> key(data_.size());
    for (size_t i = 0; i < key.size(); ++i) key[i] = philox_draw(seed_, 0x5eed0000u + uint32_t(epoch), i).v[0];
    std::stable_sort(order_.begin(), order_.end(), [&](size_t a, size_t b) { return key[a] < key[b]; });
    shuffled_epoch_ = epoch;
  }
  const std::vector<Example>& data_;
  uint64_t seed_;
  uint64_t cursor_ = 0;
  uint64_t shuffled_epoch_ = ~uint64_t(0);
  std::vector<size_t> order_;
};

// Set by SIGUSR1 / SIGTERM; the loop checkpoints and stops at the next step boundary.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

struct Flops {
  double sample = 0, score = 0, train = 0, teacher_gen = 0, eval = 0;
  double total() const { return sample + score + train + teacher_gen; }
  json to_json() const {
    return {{"sample", sample}, {"score", score}, {"train", train}, {"teacher_gen", teacher_gen}, {"eval", eval},
            {"total", total()}};
  }
  static Flops from_json(const json& j) {
    return {j.at("sample").get<double>(), j.at("score").get<double>(), j.at("train").get<double>(),
            j.at("teacher_gen").get<double>(), j.at("eval").get<double>()};
  }
};

double real_tokens(const std::vector<Sequence>& seqs) {
  double n = 0;
  for (const auto& s : seqs) n += s.prompt.size() + s.completion.size();
  return n;
}

// The contiguous share [begin, end) of n items that part `index` of `parts` takes.
std::pair<int, int> shard(int n, int parts, int index) {
  const int base = n / parts, extra = n % parts;
  const int begin = index * base + std::min(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

// Fault-injection drills: environment variable `name` holds a step; with OPD_FAULT_RANK set, only
// that world rank takes part.
bool fault_at(const char* name, int step, int world_rank) {
  const char* at = std::getenv(name);
  if (!at || std::atoi(at) != step) return false;
  const char* rank = std::getenv("OPD_FAULT_RANK");
  return !rank || std::atoi(rank) == world_rank;
}

// The mean of the last `window` evaluations of the target's metric (a window of 1: this one); -1
// until there are that many. The window lives in the summary, so a resumed run keeps it.
double target_window_mean(json& summary, const json& value, int window) {
  if (window <= 1) return value.get<double>();
  json& recent = summary["target_window"];
  recent.push_back(value);
  if (recent.size() > size_t(window)) recent.erase(recent.begin());
  if (recent.size() < size_t(window)) return -1;
  double sum = 0;
  for (const json& v : recent) sum += v.get<double>();
  return sum / window;
}

json tokens_json(const std::vector<float>& v) {
  json a = json::array();
  for (float x : v) a.push_back(std::round(x * 1e4) / 1e4);
  return a;
}

}  // namespace

json train(const TrainConfig& c, Transformer& student, Transformer* teacher, const std::vector<Example>& train_set,
           const std::vector<NamedExamples>& eval_sets, RunDir* run, Transformer* anchor, const TrainContext& ctx) {
  OPD_REQUIRE(!train_set.empty(), "training data: no examples");
  ScoringClient* remote = ctx.remote_teacher;
  OPD_REQUIRE(c.method != Method::kDistill || teacher || remote, "distill needs a teacher (--teacher)");
  OPD_REQUIRE(!remote || (c.method == Method::kDistill && !anchor),
              "dedicated teacher ranks serve distill without --anchor-teacher only (use --teacher-ranks 0)");
  OPD_REQUIRE(ctx.writer == (run != nullptr), "train: the writer rank, and only it, needs the run directory");
  const bool writer = ctx.writer;
  const std::string run_path = run ? run->path() : ctx.run_path;
  Communicator* dp = ctx.dp && ctx.dp->size() > 1 ? ctx.dp : nullptr;
  Communicator* tp = student.tp();
  const int dp_size = dp ? dp->size() : 1, dp_rank = dp ? dp->rank() : 0;
  OPD_REQUIRE(c.prompts_per_step >= dp_size, "--prompts-per-step = ", c.prompts_per_step,
              " leaves a data-parallel rank without prompts (dp = ", dp_size, ")");
  auto sum_dp = [&](double* v, size_t n) {
    if (dp) dp->all_reduce(v, n, ReduceOp::kSum);
  };
  OPD_REQUIRE(!c.sft_from_teacher || teacher, "sft --from-teacher needs a teacher (--teacher)");
  const VocabShard& vocab = student.vocab_shard();
  const int V = vocab.size;  // under tensor parallelism, this rank's share of each logits row
  const int pad = std::max(student.tokenizer().pad_id(), 0);
  const bool rollouts = c.method != Method::kSft;
  const std::string name = method_name(c.method);

  AdamW opt(student, [&] {
    OptimizerOptions o = c.opt;
    o.total_steps = c.steps;
    return o;
  }());
  PromptStream prompts(train_set, c.seed);
  ColocatedScoring colocated(teacher ? *teacher : student, c.shared_prefix);
  ScoringClient* scorer = remote ? remote : teacher ? &colocated : nullptr;
  std::unique_ptr<ColocatedTeacher> anchor_scorer = anchor ? std::make_unique<ColocatedTeacher>(*anchor) : nullptr;
  Progress progress(name, c.steps, c.log_jsonl);
  Flops flops;
  int64_t samples = 0, tokens = 0;

  json summary = {{"command", name}, {"label", c.label.empty() ? name : c.label}, {"run_dir", run_path},
                  {"steps_planned", c.steps}, {"prompts_per_step", c.prompts_per_step},
                  {"samples_per_prompt", c.samples_per_prompt}};
  if (c.target_accuracy > 0) summary["target_accuracy"] = c.target_accuracy;
  const auto run_start = Clock::now();

  auto run_eval = [&](int step, json& line) {
    if (eval_sets.empty()) return false;
    const auto t = Clock::now();
    EvalOptions eo = c.eval;
    eo.seed = c.seed;
    if (c.gpu) eo.score_batch = c.micro_batch;  // what the GPU plan holds
    for (size_t i = 0; i < eval_sets.size(); ++i) {
      const NamedExamples& set = eval_sets[i];
      // Sharded over DP: each rank evaluates a contiguous slice, the sums are added up.
      const auto [e0, e1] = shard(static_cast<int>(set.examples.size()), dp_size, dp_rank);
      const std::vector<Example> slice(set.examples.begin() + e0, set.examples.begin() + e1);
      EvalResult e = evaluate(student, scorer, slice, eo);
      if (dp) all_reduce_eval(e, *dp);
      flops.eval += e.flops;
      json r = {{"accuracy", e.accuracy}, {"length", e.mean_length}};
      if (!std::isnan(e.kl)) r["kl"] = e.kl;
      if (c.eval_samples.samples > 0) {  // accuracy of samples, as reasoning benchmarks score it
        EvalResult es = evaluate(student, static_cast<ScoringClient*>(nullptr), slice, c.eval_samples);
        if (dp) all_reduce_eval(es, *dp);
        flops.eval += es.flops;
        r.update(sampled_report(es, c.eval_samples));
      }
      line["eval"][set.name] = r;
      if (step == 0) summary["eval_initial"][set.name] = r;
      summary["eval_final"][set.name] = r;
      if (i > 0) continue;
      line["eval_accuracy"] = e.accuracy;
      if (!std::isnan(e.kl)) line["eval_kl"] = e.kl;
      if (step == 0) summary["eval_accuracy_initial"] = e.accuracy;
      summary["eval_accuracy_final"] = e.accuracy;
      if (r.contains("accuracy_sampled")) {
        line["eval_accuracy_sampled"] = r["accuracy_sampled"];
        if (step == 0) summary["eval_accuracy_sampled_initial"] = r["accuracy_sampled"];
        summary["eval_accuracy_sampled_final"] = r["accuracy_sampled"];
      }
      if (!std::isnan(e.kl)) {
        if (step == 0) summary["eval_kl_initial"] = e.kl;
        summary["eval_kl_final"] = e.kl;
      }
    }
    line["time"]["eval"] = since(t);
    const char* target_metric = c.target_sampled ? "eval_accuracy_sampled" : "eval_accuracy";
    if (c.target_accuracy > 0 && !summary.contains("target_reached_step") &&
        target_window_mean(summary, line[target_metric], c.target_window) >= c.target_accuracy) {
      summary["target_reached_step"] = step;
      summary["samples_to_target"] = samples;
      summary["flops_to_target"] = flops.total();
      summary["flops_to_target_without_teacher_gen"] = flops.total() - flops.teacher_gen;
      return true;
    }
    return false;
  };

  int first_step = 1;
  if (!c.resume.empty()) {
    std::vector<std::string> skipped;
    std::string from = c.resume;
    std::optional<Checkpoint> ck;
    if (c.resume == "auto") {
      ck = newest_valid_checkpoint(run_path, skipped, &from, tp);
      for (const auto& why : skipped)
        if (writer) std::fprintf(stderr, "[%s] skipping a checkpoint: %s\n", name.c_str(), why.c_str());
    } else {
      ck = load_checkpoint(c.resume, tp);
    }
    if (ck) {
      // Files hold whole tensors; under TP each rank has read its shards, whatever tp wrote the file.
      OPD_REQUIRE(ck->model->params().size() == student.params().size() &&
                      ck->model->tokenizer().same_as(student.tokenizer()),
                  from, ": the checkpoint's model does not match the student's shape or tokenizer");
      student.params() = ck->model->params();
      opt.restore(std::move(ck->adam_m), std::move(ck->adam_v), ck->adam_updates);
      prompts.seek(ck->state.data_cursor);
      samples = ck->state.samples;
      tokens = ck->state.tokens;
      const json counters = json::parse(ck->state.counters);
      flops = Flops::from_json(counters.at("flops"));
      summary = counters.at("summary");
      first_step = static_cast<int>(ck->state.step) + 1;
      if (run) run->keep_metrics_through(ck->state.step);
      if (writer) std::fprintf(stderr, "[%s] resuming from %s (step %lld)\n", name.c_str(), from.c_str(),
                   static_cast<long long>(ck->state.step));
    } else {
      OPD_REQUIRE(c.resume == "auto", c.resume, ": no checkpoint to resume from");
      if (writer)
        std::fprintf(stderr, "[%s] --resume auto: no checkpoint in %s yet, starting fresh\n", name.c_str(),
                     run_path.c_str());
      if (run) run->keep_metrics_through(-1);
    }
  }
  if (c.gpu) {
    // One GPU per rank, memory planned up front (train/gpu_plan.h).
    const int seq = planned_sequence(student.tokenizer(), student.config().max_seq, c, train_set, eval_sets);
    const auto plan = [&](bool train, bool samples) { return gpu_plan(c, seq, train, samples); };
    const std::string who = str("rank ", ctx.world_rank);
    student.use_gpu(plan(true, true), who + " (student)");
    if (writer) std::fputs(student.gpu_memory_report(str("[", name, "] student device memory:")).c_str(), stderr);
    for (Transformer* t : {teacher, anchor})
      if (t && t != &student && !t->on_gpu()) {
        t->use_gpu(plan(false, c.sft_from_teacher), who + " (colocated teacher)");
        if (writer) std::fputs(t->gpu_memory_report(str("[", name, "] teacher device memory:")).c_str(), stderr);
      }
  }
  if (first_step == 1) {  // Step 0: where the student starts.
    json line = {{"step", 0}, {"samples", 0}, {"tokens", 0}};
    run_eval(0, line);
    line["flops"] = flops.to_json();
    if (run) run->log_metrics(line);
    if (writer && line.contains("eval"))
      std::fprintf(stderr, "[%s] step 0: eval %s\n", name.c_str(), line["eval"].dump().c_str());
  }

  auto close_summary = [&](int steps_done) {
    summary["steps"] = steps_done;
    summary["samples"] = samples;
    summary["tokens"] = tokens;
    summary["flops"] = flops.to_json();
    summary["seconds"] = since(run_start);
  };
  auto checkpoint = [&](int at_step) {
    student.sync_to_host();
    if (dp)
      OPD_REQUIRE(same_on_all_ranks(*dp, student.params().data(), student.params().size() * sizeof(float)),
                  "data parallel: the student's parameters differ between DP replicas at step ", at_step);
    // Every DP replica holds the same state: the writer's saves it, under TP each rank of its TP
    // group writing its shards into the one file.
    if (!run && !(tp && dp_rank == 0)) return;
    char file[64];
    std::snprintf(file, sizeof(file), "checkpoints/step_%06d.h5", at_step);
    TrainState st{at_step, samples, tokens, prompts.cursor(),
                  json{{"flops", flops.to_json()}, {"summary", summary}}.dump()};
    const auto t0 = Clock::now();
    save_checkpoint(run_path + "/" + file, student, opt.m(), opt.v(), opt.updates(), st, c.config_ini);
    if (!run) return;
    prune_checkpoints(run->path(), c.keep_last);
    std::fprintf(stderr, "[%s] wrote %s in %.3f s\n", name.c_str(), file, since(t0));
  };
  g_stop_signal = 0;
  std::signal(SIGUSR1, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);

  int step = first_step;
  for (; step <= c.steps; ++step) {
    const auto step_start = Clock::now();
    json line = {{"step", step}};
    const std::vector<Example> examples = prompts.next(c.prompts_per_step);
    // This DP rank's share of the step's prompts; sequence groups stay step-wide prompt indices.
    const auto [p0, p1] = shard(static_cast<int>(examples.size()), dp_size, dp_rank);
    const std::vector<Example> mine(examples.begin() + p0, examples.begin() + p1);
    GenerateOptions gen = c.gen;
    gen.sampling.step = static_cast<uint32_t>(step);

    // 1. The sequences of this step: the student's own samples, or SFT targets.
    std::vector<Sequence> seqs;
    std::vector<float> rewards;
    std::vector<std::vector<float>> decode_logp;
    std::vector<std::string> texts;
    std::vector<int> tickets;  // scoring requests sent while sampling (dedicated teacher ranks)
    Flops step_flops;
    if (scorer) scorer->take_usage();

    // 2-4. Score, advantage, gradient: micro-batch by micro-batch, one optimizer step. Every token
    // weighs 1 here; the update scales the summed gradient by 1 / (trained tokens of the whole
    // step, all DP ranks), a count known only once every rank has sampled, so that a micro-batch
    // can be trained as soon as its scores are back.
    std::vector<float> seq_adv;
    student.zero_grad();
    TokenSums sums;
    double anchor_time = 0, rollout_time = 0, train_time = 0;
    std::vector<std::vector<float>> teacher_logp_logged;
    size_t trained_micro = 0;  // micro-batches trained so far, in order
    // A colocated teacher on its own GPU model gets micro-batch i+1 before the student trains on
    // i: its forward runs on the teacher's stream meanwhile (train/scoring.h). Not under TP: two
    // groups' collectives in flight at once on one GPU may be scheduled in different orders on
    // different ranks and wait for each other.
    const bool prefetch_scores = !remote && teacher && teacher != &student && teacher->on_gpu() && !teacher->tp() &&
                                 !c.shared_prefix;
    std::map<size_t, int> local_tickets;  // micro-batch -> ticket of the colocated scorer
    const auto local_ticket = [&](const std::vector<Sequence>& all, size_t micro_index) {
      auto it = local_tickets.find(micro_index);
      if (it != local_tickets.end()) return it->second;
      const size_t first = micro_index * size_t(c.micro_batch), last = std::min(all.size(), first + c.micro_batch);
      const std::vector<Sequence> micro(all.begin() + first, all.begin() + last);
      return local_tickets[micro_index] = scorer->submit(make_batch(micro, pad, c.all_tokens), c.distill.kl);
    };
    auto train_micro = [&](const std::vector<Sequence>& all) {
      const auto t0 = Clock::now();
      const size_t micro_index = trained_micro++;
      const size_t first = micro_index * size_t(c.micro_batch), last = std::min(all.size(), first + c.micro_batch);
      std::vector<Sequence> micro(all.begin() + first, all.begin() + last);
      const SequenceBatch b = make_batch(micro, pad, c.all_tokens);
      std::vector<float> micro_adv;
      if (!seq_adv.empty()) micro_adv.assign(seq_adv.begin() + first, seq_adv.begin() + last);
      float* dlogits = student.dlogits_buffer(size_t(b.B) * b.T * V);  // device memory on the GPU path
      TokenSums s;
      if (c.method == Method::kDistill) {
        TeacherScores scores =
            remote ? remote->collect(tickets.at(micro_index)) : scorer->collect(local_ticket(all, micro_index));
        if (prefetch_scores && last < all.size()) local_ticket(all, micro_index + 1);
        std::vector<char> anchored(micro.size(), 0);
        for (size_t i = 0; i < micro.size(); ++i) anchored[i] = examples[micro[i].group].source == 1;
        if (std::find(anchored.begin(), anchored.end(), 1) != anchored.end()) {
          OPD_REQUIRE(anchor_scorer, "training data has anchor prompts but no anchor teacher was given");
          const auto ts = Clock::now();
          scores =
              merge_scores(std::move(scores), anchor_scorer->score(b, c.distill.kl), anchored, b.T, V, c.distill.kl);
          step_flops.score += anchor->forward_flops(real_tokens(micro), b.T / 2.0);  // it scores the whole micro-batch
          anchor_time += since(ts);
        }
        for (size_t i = first; i < last && static_cast<int>(i) < c.samples_to_log; ++i) {
          std::vector<float> row;
          const size_t bi = i - first;
          for (int tt = 0; tt < b.T; ++tt)
            if (b.targets[bi * b.T + tt] >= 0) row.push_back(scores.logp[bi * b.T + tt]);
          teacher_logp_logged.push_back(row);
        }
        const float* logits = student.forward(b.tokens.data(), b.B, b.T);
        s = distill_objective(dlogits, logits, b, vocab, scores, c.distill, micro_adv, 1.0f);
      } else if (c.method == Method::kRl) {
        const float* logits = student.forward(b.tokens.data(), b.B, b.T);
        s = policy_gradient_objective(dlogits, logits, b, vocab, micro_adv, 1.0f);
      } else {
        const float* logits = student.forward(b.tokens.data(), b.B, b.T);
        s = sft_objective(dlogits, logits, b, vocab, 1.0f);
      }
      student.backward(dlogits);
      step_flops.train += 3 * student.forward_flops(real_tokens(micro), b.T / 2.0);
      sums += s;
      train_time += since(t0);
    };
    // Group-relative advantages need every reward of the step before the first micro-batch.
    const bool needs_all_rewards =
        c.method == Method::kRl || (c.method == Method::kDistill && c.distill.reward_coef != 0);

    if (rollouts || c.sft_from_teacher) {
      Transformer& sampler = rollouts ? student : *teacher;
      Rollout r;
      if (remote) {
        // Micro-batch by micro-batch: each goes to a teacher replica as soon as it is sampled, the
        // teacher scores it while the next one is sampled, and a micro-batch whose scores are
        // back is trained on before sampling goes on.
        const int n = static_cast<int>(mine.size()) * c.samples_per_prompt;
        for (int first = 0; first < n; first += c.micro_batch) {
          const auto t0 = Clock::now();
          Rollout part = sample_rollouts(sampler, mine, c.samples_per_prompt, gen, c.gen_batch, first,
                                         std::min(n, first + c.micro_batch), p0);
          tickets.push_back(remote->submit(make_batch(part.seqs, pad), c.distill.kl));
          append_rollout(r, std::move(part));
          rollout_time += since(t0);
          while (!needs_all_rewards && trained_micro < tickets.size() && remote->ready(tickets[trained_micro]))
            train_micro(r.seqs);
        }
      } else {
        const auto t0 = Clock::now();
        r = sample_rollouts(sampler, mine, c.samples_per_prompt, gen, c.gen_batch, 0, -1, p0);
        rollout_time += since(t0);
      }
      (rollouts ? step_flops.sample : step_flops.teacher_gen) += r.flops;
      double roll_sums[4] = {double(r.truncated), double(r.completion_tokens), double(r.seqs.size()),
                             std::accumulate(r.rewards.begin(), r.rewards.end(), 0.0)};
      sum_dp(roll_sums, 4);
      line["truncated"] = int64_t(roll_sums[0]);
      line["completion_length"] = roll_sums[1] / std::max(1.0, roll_sums[2]);
      seqs = std::move(r.seqs);
      rewards = std::move(r.rewards);
      decode_logp = std::move(r.logp);
      texts = std::move(r.completions);
      line["reward"] = roll_sums[3] / std::max(1.0, roll_sums[2]);
    } else {
      for (size_t i = p0; i < size_t(p1); ++i) {
        const Example& e = examples[i];
        OPD_REQUIRE(!e.completion.empty(), "sft: example with prompt '", e.prompt,
                    "' has no completion (use --from-teacher to sample one)");
        seqs.push_back(sft_sequence(student.tokenizer(), e, static_cast<int>(i)));  // with its loss mask
        texts.push_back(e.completion);
      }
    }
    line["time"]["rollout"] = rollout_time;

    if (needs_all_rewards) {
      std::vector<int> groups;
      for (const auto& sq : seqs) groups.push_back(sq.group);
      seq_adv = group_advantages(rewards, groups, c.method == Method::kRl && c.grpo_std);
    }
    double step_counts[3] = {0, real_tokens(seqs), double(seqs.size())};  // trained tokens, tokens, sequences
    for (const auto& sq : seqs)
      step_counts[0] += (c.all_tokens ? sq.prompt.size() - 1 : 0) + trained_completion_tokens(sq);
    sum_dp(step_counts, 3);
    const double trained = step_counts[0];
    OPD_REQUIRE(trained > 0, "step ", step, ": no tokens to train on");
    while (trained_micro * size_t(c.micro_batch) < seqs.size()) train_micro(seqs);
    const auto tail_start = Clock::now();
    // Fault-injection drills for tests: a NaN loss, or SIGKILL in the middle of a step.
    if (fault_at("OPD_FAULT_NAN_AT_STEP", step, ctx.world_rank)) sums.loss = std::nan("");
    if (fault_at("OPD_FAULT_KILL_AT_STEP", step, ctx.world_rank)) std::raise(SIGKILL);
    if (fault_at("OPD_FAULT_THROW_AT_STEP", step, ctx.world_rank))
      throw Error(str("step ", step, ": fault-injection drill OPD_FAULT_THROW_AT_STEP"));
    const ScoringClient::Usage usage = scorer ? scorer->take_usage() : ScoringClient::Usage{};
    step_flops.score += usage.flops;
    // Data parallel: gradients, metric sums and FLOPs added over the DP group; every rank then
    // holds the gradient one process would have computed on the whole step.
    const auto comm_start = Clock::now();
    student.reduce_partial_grads();
    if (dp) student.all_reduce_grads(ctx.dp_device ? *ctx.dp_device : *dp);
    double reduced[13] = {sums.loss, sums.kl, sums.kl_exact, sums.logp_student, sums.logp_teacher, sums.entropy,
                          double(sums.tokens), step_flops.sample, step_flops.score, step_flops.train,
                          step_flops.teacher_gen, usage.busy + anchor_time, usage.wait + anchor_time};
    sum_dp(reduced, 13);
    const double comm_time = since(comm_start);  // the data-parallel exchange (includes waiting for the slowest rank)
    sums = TokenSums{reduced[0] / trained, reduced[1], reduced[2], reduced[3], reduced[4], reduced[5], int64_t(reduced[6])};
    flops.sample += reduced[7];
    flops.score += reduced[8];
    flops.train += reduced[9];
    flops.teacher_gen += reduced[10];
    const double teacher_busy = reduced[11] / dp_size, teacher_wait = reduced[12] / dp_size;
    OPD_REQUIRE(std::isfinite(sums.loss), "step ", step, ": the loss is ", sums.loss,
                " (NaN or Inf); stopping before the update so the last saved model stays good");
    const double grad_norm = opt.step(step, 1.0 / trained);
    const double update_time = train_time + since(tail_start) - usage.wait - anchor_time;

    samples += static_cast<int64_t>(step_counts[2]);
    tokens += static_cast<int64_t>(step_counts[1]);
    const double n = std::max<int64_t>(1, sums.tokens);
    line["samples"] = samples;
    line["tokens"] = tokens;
    line["loss"] = sums.loss;
    line["logp_student"] = sums.logp_student / n;
    if (c.method != Method::kSft) line["entropy"] = sums.entropy / n;
    if (c.method == Method::kDistill) {
      line["kl"] = sums.kl / n;
      line["logp_teacher"] = sums.logp_teacher / n;
      if (c.distill.kl.mode != KlSpec::kSampled) line["kl_exact"] = sums.kl_exact / n;
    }
    line["grad_norm"] = grad_norm;
    line["lr"] = opt.lr_at(step);
    line["time"]["score"] = teacher_busy;
    line["time"]["wait_teacher"] = teacher_wait;
    line["time"]["update"] = update_time;
    if (dp) line["time"]["comm"] = comm_time;
    if (teacher_busy > 0) line["overlap"] = 1.0 - teacher_wait / teacher_busy;
    line["tokens_per_s"] = step_counts[1] / since(step_start);

    // Samples: the first few sequences, with per-token log-probs.
    const bool log_now = step == 1 || (c.eval_every > 0 && step % c.eval_every == 0) || step == c.steps;
    if (run && log_now && c.samples_to_log > 0) {  // the writer's sequences are the step's first
      json rows = json::array();
      for (int i = 0; i < std::min<int>(c.samples_to_log, static_cast<int>(seqs.size())); ++i) {
        json r = {{"prompt", examples[seqs[i].group].prompt}, {"completion", texts[i]}};
        if (!rewards.empty()) r["reward"] = rewards[i];
        if (!decode_logp.empty()) r["logp_student"] = tokens_json(decode_logp[i]);
        if (i < static_cast<int>(teacher_logp_logged.size())) r["logp_teacher"] = tokens_json(teacher_logp_logged[i]);
        rows.push_back(r);
      }
      run->write_samples(step, rows);
    }

    const bool eval_now = (c.eval_every > 0 && step % c.eval_every == 0) || step == c.steps;
    const bool reached = eval_now && run_eval(step, line);
    line["time"]["step"] = since(step_start);
    line["flops"] = flops.to_json();
    if (run) run->log_metrics(line);

    char buf[256];
    std::string fields;
    std::snprintf(buf, sizeof(buf), "loss %.4f", sums.loss);
    fields += buf;
    if (line.contains("kl")) fields += str(" | kl ", std::round(line["kl"].get<double>() * 1e4) / 1e4);
    if (line.contains("reward")) fields += str(" | reward ", std::round(line["reward"].get<double>() * 1e3) / 1e3);
    if (line.contains("eval"))
      for (const auto& [set_name, r] : line["eval"].items()) fields += str(" | ", set_name, " acc ", r["accuracy"].get<double>());
    std::snprintf(buf, sizeof(buf), " | %.0f tok/s", line["tokens_per_s"].get<double>());
    fields += buf;
    if (writer) progress.report(step, fields, line, line.contains("eval"));

    // Fault-injection drill for tests: deliver SIGTERM to ourselves at the end of a chosen step.
    if (fault_at("OPD_FAULT_SIGNAL_AT_STEP", step, ctx.world_rank)) std::raise(SIGTERM);
    // A signal may reach some student ranks only: all stop when one does (over TP, then DP).
    int stop_signal = g_stop_signal;
    if (tp) stop_signal = int(all_reduce_value<int64_t>(*tp, stop_signal, ReduceOp::kMax));
    if (dp) stop_signal = int(all_reduce_value<int64_t>(*dp, stop_signal, ReduceOp::kMax));
    if ((c.save_every > 0 && step % c.save_every == 0) || stop_signal) checkpoint(step);
    if (stop_signal) {
      if (writer)
        std::fprintf(stderr, "[%s] signal %d: checkpointed step %d; exiting with code %d so the job can be requeued\n",
                     name.c_str(), stop_signal, step, kExitCheckpointed);
      summary["preempted"] = true;
      close_summary(step);
      if (run) run->write_summary(summary);
      return summary;
    }
    if (reached && c.stop_at_target) {
      ++step;
      break;
    }
  }
  // Every DP replica applied the same updates to the same parameters: a mismatch is a bug that
  // the writer's checkpoint would hide.
  student.sync_to_host();
  if (dp)
    OPD_REQUIRE(same_on_all_ranks(*dp, student.params().data(), student.params().size() * sizeof(float)),
                "data parallel: the student's parameters differ between DP replicas after step ", step - 1);
  if (run || (tp && dp_rank == 0)) save_model(run_path + "/final.h5", student);
  close_summary(step - 1);
  summary["final_model"] = run_path + "/final.h5";
  if (run) run->write_summary(summary);
  return summary;
}

}  // namespace opd
