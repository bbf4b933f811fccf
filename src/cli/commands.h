// One function per subcommand; main.cpp only dispatches. Each takes the arguments after the
// subcommand's name and returns the process exit code; errors are thrown as opd::Error.
#pragma once
#include <string>
#include <vector>

namespace opd::cli {

using Args = std::vector<std::string>;

int score(const Args& args);
int bench(const Args& args);
int bench_step(const Args& args);  // opd bench step: the one benchmark that runs under MPI
int data(const Args& args);
int distill(const Args& args);
int sft(const Args& args);
int rl(const Args& args);
int eval(const Args& args);
int sample(const Args& args);
int inspect(const Args& args);
int import_model(const Args& args);  // "import" and "export" are C++ keywords
int export_model(const Args& args);
int merge_model(const Args& args);  // LoRA adapters into their base

}  // namespace opd::cli
