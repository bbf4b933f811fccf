// opd score: per-token log-probabilities of given sequences under a model (the teacher's job).
#include <chrono>
#include <iostream>

#include "cli/commands.h"
#include "cli/runtime.h"
#include "core/jsonl.h"
#include "io/model_file.h"
#include "model/memory_plan.h"
#include "parallel/gpu_binding.h"
#include "parallel/mpi_communicator.h"
#include "train/score.h"

namespace opd::cli {

int score(const Args& args) {
  const Command cmd{"score",
                    "Writes, for every token after the first of each input sequence, its log-probability under the "
                    "model.\nInput lines hold \"tokens\" (a list of ids) or \"text\" (encoded with the model's "
                    "tokenizer).",
                    "opd score --model M.h5 --input in.jsonl --output out.jsonl"};
  po::options_description opts("Scoring");
  opts.add_options()("model", po::value<std::string>()->required()->notifier(non_empty("model")),
                     "model file (HDF5)")(
      "input", po::value<std::string>()->required()->notifier(non_empty("input")), "JSONL input")(
      "output", po::value<std::string>()->required()->notifier(non_empty("output")), "JSONL output")(
      "batch", po::value<int>()->default_value(32)->notifier(in_range("batch", 1, 1 << 16)),
      "sequences per forward pass");
  add_runtime_options(opts);
  add_device_option(opts);
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  apply_runtime_options(vm);

  auto model = load_model(vm["model"].as<std::string>());
  model->set_forward_only();
  const std::string input = vm["input"].as<std::string>();
  const int max_seq = model->config().max_seq;
  std::vector<std::vector<int>> sequences;
  read_jsonl(input, [&](const json& line, int) {
    std::vector<int> ids;
    if (line.contains("tokens")) {
      // Checked before any conversion: JSON's 1.5 or 4294967297 would otherwise become a valid id.
      const json& tokens = line.at("tokens");
      OPD_REQUIRE(tokens.is_array(), "field \"tokens\" must be an array of token ids, got ", tokens.type_name());
      const int vocab = model->config().vocab;
      for (const json& t : tokens) {
        OPD_REQUIRE(t.is_number_integer(), "field \"tokens\" holds ", t.dump(), ", which is not a token id");
        const bool inside = t.is_number_unsigned() ? t.get<uint64_t>() < static_cast<uint64_t>(vocab)
                                                   : t.get<int64_t>() >= 0 && t.get<int64_t>() < vocab;
        OPD_REQUIRE(inside, "token id ", t.dump(), " is outside the model's vocabulary of ", vocab);
        ids.push_back(static_cast<int>(t.get<int64_t>()));
      }
    } else if (line.contains("text")) {
      ids = model->tokenizer().encode(line.at("text").get<std::string>(), "\"text\"");
    } else {
      throw Error("expected a \"tokens\" or a \"text\" field");
    }
    OPD_REQUIRE(ids.size() >= 2, "a sequence needs at least 2 tokens to score, got ", ids.size());
    OPD_REQUIRE(static_cast<int>(ids.size()) <= max_seq, "sequence of ", ids.size(),
                " tokens is longer than the model's max_seq = ", max_seq);
    sequences.push_back(std::move(ids));
  });

  const int batch = vm["batch"].as<int>();
  if (parse_device(vm["device"].as<std::string>()) == DeviceKind::kCuda) {
    const int gpu = bind_gpu(this_node_rank(), 0, processor_name());
    MemoryPlanOptions plan;  // forward only: --batch sequences of the longest input
    plan.batch = batch;
    for (const auto& s : sequences) plan.seq = std::max(plan.seq, static_cast<int>(s.size()));
    model->use_gpu(plan, str("the model on GPU ", gpu));
  }
  JsonlWriter out(vm["output"].as<std::string>());
  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  size_t tokens = 0;
  for (size_t first = 0; first < sequences.size(); first += batch) {
    std::vector<std::vector<int>> chunk(sequences.begin() + first,
                                        sequences.begin() + std::min(sequences.size(), first + batch));
    auto logps = score_sequences(*model, chunk, batch);
    for (size_t i = 0; i < chunk.size(); ++i) {
      double sum = 0;
      for (float x : logps[i]) sum += x;
      tokens += logps[i].size();
      out.write({{"index", first + i}, {"tokens", chunk[i]}, {"logprobs", logps[i]}, {"sum_logprob", sum}});
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_report > std::chrono::seconds(2)) {
      const double s = std::chrono::duration<double>(now - start).count();
      const size_t done = std::min(sequences.size(), first + batch);
      std::cerr << "score: " << done << "/" << sequences.size() << " sequences, " << tokens / s << " tokens/s, ETA "
                << (sequences.size() - done) * s / done << " s\n";
      last_report = now;
    }
  }
  std::cerr << "score: wrote " << sequences.size() << " sequences (" << tokens << " scored tokens) to " << out.path()
            << "\n";
  return 0;
}

}  // namespace opd::cli
