// The MPI implementation of the communicator (CPU buffers). Every MPI call goes through MPI_CHECK.
#pragma once
#include <mpi.h>

#include "parallel/communicator.h"

namespace opd {

// The MPI communicator behind `c` (collective HDF5 I/O speaks MPI); an error naming `where` when
// `c` is not one.
MPI_Comm mpi_handle(const Communicator& c, const std::string& where);

class MpiCommunicator : public Communicator {
 public:
  // Wraps MPI_COMM_WORLD (not owned).
  static std::unique_ptr<MpiCommunicator> world();
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  MPI_Comm handle() const { return comm_; }

  void all_reduce(float* data, size_t n, ReduceOp op) override;
  void all_reduce(double* data, size_t n, ReduceOp op) override;
  void all_reduce(int64_t* data, size_t n, ReduceOp op) override;
  void all_gather(const void* in, size_t bytes, void* out) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;
  std::unique_ptr<Request> isend(const void* data, size_t bytes, int dest, int tag) override;
  std::unique_ptr<Request> irecv(void* data, size_t bytes, int source, int tag) override;
  bool probe(int source, int tag, Incoming& found) override;
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  MpiCommunicator(MPI_Comm comm, bool owned, std::string name);
  void all_reduce_typed(void* data, size_t n, MPI_Datatype type, ReduceOp op);
  MPI_Comm comm_;
  bool owned_;
  std::string name_;
  int rank_ = 0, size_ = 1;
};

// The host name of this process (MPI_Get_processor_name; gethostname without MPI), for the layout table.
std::string processor_name();
// This rank's index among the ranks on its node, and their number (MPI's shared-memory split, so
// it holds under mpirun and srun alike). Collective over MPI_COMM_WORLD; {0, 1} without MPI.
struct NodeShare {
  int rank = 0, size = 1;
};
NodeShare node_share();

}  // namespace opd
