#include "parallel/solo_communicator.h"

#include <mpi.h>

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "parallel/mpi_check.h"
#include "parallel/mpi_communicator.h"

namespace opd {

void SoloCommunicator::all_gather(const void* in, size_t bytes, void* out) {
  if (in != out) std::memmove(out, in, bytes);
}

void SoloCommunicator::broadcast(void*, size_t, int root) {
  OPD_REQUIRE(root == 0, name_, ": broadcast from rank ", root, " in a group of one process");
}

std::unique_ptr<Request> SoloCommunicator::isend(const void*, size_t, int dest, int) {
  throw Error(str(name_, ": a job of one process has no rank ", dest, " to send to"));
}

std::unique_ptr<Request> SoloCommunicator::irecv(void*, size_t, int source, int) {
  throw Error(str(name_, ": a job of one process has no rank ", source, " to receive from"));
}

std::unique_ptr<Communicator> SoloCommunicator::split(int color, int, const std::string& name) {
  if (color < 0) return nullptr;
  return std::make_unique<SoloCommunicator>(name);
}

bool launched_by_mpi() {
  // Open MPI's mpirun; PMIx (srun --mpi=pmix, Open MPI 5, PRRTE); PMI-1/2 (MPICH and Intel MPI's
  // Hydra, srun --mpi=pmi2, MVAPICH).
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MV2_COMM_WORLD_RANK"}) {
    const char* v = std::getenv(var);
    if (v && *v) return true;
  }
  return false;
}

std::unique_ptr<Communicator> world_communicator() {
  int initialised = 0;
  MPI_CHECK(MPI_Initialized(&initialised));
  if (initialised) return MpiCommunicator::world();
  return std::make_unique<SoloCommunicator>("world");
}

}  // namespace opd
