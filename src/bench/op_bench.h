// The harness behind `opd bench ops`: every op benchmark validates its kernel against the CPU op
// on random inputs, then times it, and reports against ceilings measured in the same run.
// One file per family of ops (ops_attention.cpp, ops_vocab.cpp, ops_pointwise.cpp) registers a
// function of this shape; bench_ops.cpp runs them and prints the table.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace opd::bench {

// One row of the table: an op at one shape.
struct OpResult {
  std::string op;      // "attention_forward", "reverse_kl_full", ...
  std::string shape;   // "B16 H32 T2048 D128 causal"
  std::string dtype;   // "bf16", "f32"
  double max_err = 0;  // worst error against the CPU op (abs or rel, as err_kind says); -1 = not validated
  double tol = 0;      // the tolerance it was held to
  std::string err_kind = "abs";
  bool ok = true;      // max_err <= tol (validation passed)
  double ms = 0;       // median time of one call, L2 flushed before each
  double flops = 0;    // useful FLOPs per call (0 if the op is bandwidth-bound)
  double bytes = 0;    // bytes that must move per call (0 if compute-bound)
  // A reference implementation timed on the same shape (cuDNN SDPA, cuBLAS...), empty if none.
  std::string ref_name;
  double ref_ms = 0;
  std::string note;    // anything else worth a column
};

// Ceilings measured once per run, and the timing helper every benchmark uses.
struct OpContext {
  bool cuda = false;          // --device cuda
  bool quick = false;         // --quick: small shapes, few repeats (what `make test` runs)
  int repeats = 20;           // timed repeats (median reported)
  double gemm_tflops = 0;     // cuBLAS bf16 GEMM 8192^3 (cuda) / sgemm 1024^3 in TFLOP/s (cpu)
  double copy_gbps = 0;       // device-to-device copy, bytes read + written (cuda) / memcpy (cpu)
  // Median milliseconds of fn over `repeats` calls after one warm-up. On CUDA each call is
  // bracketed by events and preceded by an L2 flush (a write over a buffer larger than L2), so
  // no call reads what the previous one left in cache. fn must only enqueue work (cuda) or run
  // it (cpu).
  std::function<double(const std::function<void()>& fn)> time_ms;
};

using OpBenchFn = std::vector<OpResult> (*)(OpContext& ctx);

struct OpBench {
  std::string name;  // what --op selects: "attention", "vocab", "pointwise", ...
  OpBenchFn run;
};

// The registered families; each ops_*.cpp defines its function, bench_ops.cpp lists them.
std::vector<OpResult> attention_ops(OpContext& ctx);
std::vector<OpResult> attention_backward_ops(OpContext& ctx);
std::vector<OpResult> vocab_ops(OpContext& ctx);
std::vector<OpResult> pointwise_ops(OpContext& ctx);

// What `opd bench ops` runs (cli/bench.cpp parses the options).
struct BenchOpsOptions {
  bool cuda = false;
  std::string only;  // one family by name, or "" for all
  bool quick = false;
  int repeats = 20;
};
// The names of the families, for the option's help and its check.
std::vector<std::string> op_families();
// Runs the families, prints the table; exit code 1 if a check failed.
int run_bench_ops(const BenchOpsOptions& options);

// Worst absolute and relative error of got against want: the helpers each benchmark validates with.
double max_abs_error(const std::vector<float>& got, const std::vector<float>& want);
double max_rel_error(const std::vector<float>& got, const std::vector<float>& want, double floor = 1e-3);

}  // namespace opd::bench
