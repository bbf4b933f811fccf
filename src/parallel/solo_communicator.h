// The communicator of a job of one process that no MPI launcher started: every collective is the
// identity, and there is no peer to send to. A plain `opd distill ...` runs on it without
// MPI_Init, whose singleton mode under Open MPI forks a daemon (orted) that a GPU node, a login
// node or a container may not have.
#pragma once
#include "parallel/communicator.h"

namespace opd {

class SoloCommunicator : public Communicator {
 public:
  explicit SoloCommunicator(std::string name) : name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }

  void all_reduce(float*, size_t, ReduceOp) override {}
  void all_reduce(double*, size_t, ReduceOp) override {}
  void all_reduce(int64_t*, size_t, ReduceOp) override {}
  void all_gather(const void* in, size_t bytes, void* out) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override {}
  std::unique_ptr<Request> isend(const void* data, size_t bytes, int dest, int tag) override;
  std::unique_ptr<Request> irecv(void* data, size_t bytes, int source, int tag) override;
  bool probe(int, int, Incoming&) override { return false; }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  std::string name_;
};

// Whether an MPI launcher (mpirun, mpiexec, srun with a PMI/PMIx plugin) started this process:
// only then do the MPI subcommands call MPI_Init.
bool launched_by_mpi();

// MPI_COMM_WORLD's communicator once MPI is initialised, else a SoloCommunicator named "world".
std::unique_ptr<Communicator> world_communicator();

}  // namespace opd
