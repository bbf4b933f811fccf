#include "train/interruptions.h"

#include <csignal>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace opd {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// Whether drill `name` fires at `step` on this rank: the variable holds the step.
bool fault_at(const char* name, int step, int world_rank) {
  const char* at = std::getenv(name);
  if (!at || std::atoi(at) != step) return false;
  const char* rank = std::getenv("OPD_FAULT_RANK");
  return !rank || std::atoi(rank) == world_rank;
}

}  // namespace

StopSignals::StopSignals() {
  g_stop_signal = 0;
  std::signal(SIGUSR1, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

int StopSignals::vote(Communicator* tp, Communicator* dp) const {
  int signal = g_stop_signal;
  if (tp) signal = int(all_reduce_value<int64_t>(*tp, signal, ReduceOp::kMax));
  if (dp) signal = int(all_reduce_value<int64_t>(*dp, signal, ReduceOp::kMax));
  return signal;
}

void drill_mid_step(int step, int world_rank, double& loss) {
  if (fault_at("OPD_FAULT_NAN_AT_STEP", step, world_rank)) loss = std::nan("");
  if (fault_at("OPD_FAULT_KILL_AT_STEP", step, world_rank)) std::raise(SIGKILL);
  if (fault_at("OPD_FAULT_THROW_AT_STEP", step, world_rank))
    throw Error(str("step ", step, ": fault-injection drill OPD_FAULT_THROW_AT_STEP"));
}

void drill_end_of_step(int step, int world_rank) {
  if (fault_at("OPD_FAULT_SIGNAL_AT_STEP", step, world_rank)) std::raise(SIGTERM);
}

}  // namespace opd
