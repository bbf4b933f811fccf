#include "cli/runtime.h"

#include <omp.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "core/error.h"

#include "kernels/cpu/matmul.h"

namespace opd::cli {

void add_runtime_options(po::options_description& desc) {
  desc.add_options()("threads", po::value<int>()->default_value(0)->notifier(in_range("threads", 0, 1024)),
                     "CPU threads for OpenMP and BLAS (0: OMP_NUM_THREADS, else all cores)");
}

int apply_runtime_options(const po::variables_map& vm) {
  int threads = vm["threads"].as<int>();
  if (threads == 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    threads = env ? std::atoi(env) : 0;
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  omp_set_num_threads(threads);
  cpu::set_blas_threads(threads);
  return threads;
}

void add_head_chunk_option(po::options_description& desc) {
  desc.add_options()("head-chunk", po::value<std::string>()->default_value("auto"),
                     "rows (tokens) whose logits the LM head writes at once: auto (as many as 512 MiB of fp32 "
                     "logits hold: 883 at a vocabulary of 151936, every row at a small one), N, or 0 for the whole "
                     "micro-batch's [N, V] (the unfused path)");
}

int head_chunk_option(const po::variables_map& vm) {
  const std::string text = vm["head-chunk"].as<std::string>();
  if (text == "auto") return -1;
  size_t used = 0;
  long rows = -1;
  try {
    rows = std::stol(text, &used);
  } catch (...) {
    used = 0;
  }
  OPD_REQUIRE(used == text.size() && rows >= 0 && rows <= (1L << 30), "option --head-chunk = '", text,
              "': expected auto, 0 or a number of rows");
  return int(rows);
}

}  // namespace opd::cli
