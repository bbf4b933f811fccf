#include "parallel/mpi_communicator.h"

#include <unistd.h>

#include <climits>

#include "parallel/mpi_check.h"

namespace opd {

MPI_Comm mpi_handle(const Communicator& c, const std::string& where) {
  const auto* mpi = dynamic_cast<const MpiCommunicator*>(&c);
  OPD_REQUIRE(mpi, where, ": collective HDF5 I/O needs an MPI communicator for the tensor-parallel group (", c.name(),
              " is not one)");
  return mpi->handle();
}

namespace {

// MPI counts are ints: larger transfers are an error here rather than a silent truncation.
int count_of(size_t n, const char* what) {
  OPD_REQUIRE(n <= static_cast<size_t>(INT_MAX), "MPI ", what, ": ", n, " elements exceed the int count limit");
  return static_cast<int>(n);
}

class MpiRequest : public Request {
 public:
  MpiRequest() = default;
  // Only an error unwinding the stack destroys a request in flight, and main aborts the job next:
  // waiting here could hang on a dead peer, so the request is cancelled instead.
  ~MpiRequest() override {
    if (req_ == MPI_REQUEST_NULL) return;
    MPI_Cancel(&req_);
    MPI_Request_free(&req_);
  }
  bool test() override {
    if (req_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    MPI_CHECK(MPI_Test(&req_, &done, MPI_STATUS_IGNORE));
    return done != 0;
  }
  void wait() override {
    if (req_ != MPI_REQUEST_NULL) MPI_CHECK(MPI_Wait(&req_, MPI_STATUS_IGNORE));
  }
  MPI_Request* handle() { return &req_; }

 private:
  MPI_Request req_ = MPI_REQUEST_NULL;
};

}  // namespace

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(MPI_COMM_WORLD, false, "world"));
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, bool owned, std::string name)
    : comm_(comm), owned_(owned), name_(std::move(name)) {
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && !finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::all_reduce_typed(void* data, size_t n, MPI_Datatype type, ReduceOp op) {
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, count_of(n, "all_reduce"), type, op == ReduceOp::kSum ? MPI_SUM : MPI_MAX,
                          comm_));
}
void MpiCommunicator::all_reduce(float* data, size_t n, ReduceOp op) { all_reduce_typed(data, n, MPI_FLOAT, op); }
void MpiCommunicator::all_reduce(double* data, size_t n, ReduceOp op) { all_reduce_typed(data, n, MPI_DOUBLE, op); }
void MpiCommunicator::all_reduce(int64_t* data, size_t n, ReduceOp op) { all_reduce_typed(data, n, MPI_INT64_T, op); }

void MpiCommunicator::all_gather(const void* in, size_t bytes, void* out) {
  MPI_CHECK(MPI_Allgather(in, count_of(bytes, "all_gather"), MPI_BYTE, out, count_of(bytes, "all_gather"), MPI_BYTE,
                          comm_));
}

void MpiCommunicator::broadcast(void* data, size_t bytes, int root) {
  OPD_REQUIRE(root >= 0 && root < size_, "broadcast on ", name_, ": root ", root, " is outside [0, ", size_, ")");
  MPI_CHECK(MPI_Bcast(data, count_of(bytes, "broadcast"), MPI_BYTE, root, comm_));
}

void MpiCommunicator::barrier() { MPI_CHECK(MPI_Barrier(comm_)); }

std::unique_ptr<Request> MpiCommunicator::isend(const void* data, size_t bytes, int dest, int tag) {
  OPD_REQUIRE(dest >= 0 && dest < size_, "isend on ", name_, ": destination ", dest, " is outside [0, ", size_, ")");
  auto r = std::make_unique<MpiRequest>();
  MPI_CHECK(MPI_Isend(data, count_of(bytes, "isend"), MPI_BYTE, dest, tag, comm_, r->handle()));
  return r;
}

std::unique_ptr<Request> MpiCommunicator::irecv(void* data, size_t bytes, int source, int tag) {
  OPD_REQUIRE(source >= 0 && source < size_, "irecv on ", name_, ": source ", source, " is outside [0, ", size_, ")");
  auto r = std::make_unique<MpiRequest>();
  MPI_CHECK(MPI_Irecv(data, count_of(bytes, "irecv"), MPI_BYTE, source, tag, comm_, r->handle()));
  return r;
}

bool MpiCommunicator::probe(int source, int tag, Incoming& found) {
  int flag = 0;
  MPI_Status st;
  MPI_CHECK(MPI_Iprobe(source < 0 ? MPI_ANY_SOURCE : source, tag, comm_, &flag, &st));
  if (!flag) return false;
  int count = 0;
  MPI_CHECK(MPI_Get_count(&st, MPI_BYTE, &count));
  found.source = st.MPI_SOURCE;
  found.bytes = static_cast<size_t>(count);
  return true;
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &sub));
  if (sub == MPI_COMM_NULL) return nullptr;
  return std::unique_ptr<Communicator>(new MpiCommunicator(sub, true, name));
}

std::string processor_name() {
  int initialised = 0;
  MPI_CHECK(MPI_Initialized(&initialised));
  if (!initialised) {  // a job of one process (parallel/solo_communicator.h)
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    return host;
  }
  char buf[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_CHECK(MPI_Get_processor_name(buf, &len));
  return std::string(buf, len);
}

NodeShare node_share() {
  int initialised = 0;
  MPI_CHECK(MPI_Initialized(&initialised));
  if (!initialised) return {};  // a job of one process: alone on its node
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  NodeShare nr;
  MPI_CHECK(MPI_Comm_rank(node, &nr.rank));
  MPI_CHECK(MPI_Comm_size(node, &nr.size));
  MPI_CHECK(MPI_Comm_free(&node));
  return nr;
}

}  // namespace opd
