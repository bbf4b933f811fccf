// What stops a run from outside the algorithm: the signal a preempted job gets (SIGUSR1 /
// SIGTERM: checkpoint at the next step boundary and exit kExitCheckpointed), and the fault drills
// the tests inject through the environment (OPD_FAULT_*; with OPD_FAULT_RANK, only that world rank).
#pragma once
#include "parallel/communicator.h"

namespace opd {

// Catches SIGUSR1 and SIGTERM from construction on.
class StopSignals {
 public:
  StopSignals();
  // The signal a student rank caught, 0 when none: a signal may reach some ranks only, and all
  // stop when one does (the max over TP, then over DP). Collective over both groups.
  int vote(Communicator* tp, Communicator* dp) const;
};

// The drills in the middle of a step, once its gradient is in: a NaN loss
// (OPD_FAULT_NAN_AT_STEP), SIGKILL (OPD_FAULT_KILL_AT_STEP), an exception (OPD_FAULT_THROW_AT_STEP).
void drill_mid_step(int step, int world_rank, double& loss);
// The drill at the end of a step: SIGTERM to this process (OPD_FAULT_SIGNAL_AT_STEP).
void drill_end_of_step(int step, int world_rank);

}  // namespace opd
