// The collectives and messages every parallel part of opd goes through (docs/ARCHITECTURE.md §4). Device
// agnostic: buffers are plain pointers, so an NCCL implementation (GPU buffers, ids bootstrapped
// over MPI) can stand behind the same interface; the MPI one serves the CPU path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace opd {

enum class ReduceOp { kSum, kMax };

// A non-blocking send or receive in flight. Wait for (or test) it before its buffer goes; one
// destroyed while in flight (an error unwinding, the job about to abort) is cancelled.
class Request {
 public:
  virtual ~Request() = default;
  virtual bool test() = 0;  // true once complete
  virtual void wait() = 0;
};

// An incoming message seen by probe(): who sent it and how many bytes it holds.
struct Incoming {
  int source = -1;
  size_t bytes = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Which group this is ("world", "dp", "tp", "teacher replica"), for error messages.
  virtual const std::string& name() const = 0;
  // Whether the buffers are device memory (NCCL) rather than host memory (MPI).
  virtual bool device_buffers() const { return false; }

  // Waits until the collectives issued so far have their results in place: a no-op where they
  // return done; NCCL in stream-ordered mode returns once they are queued on its stream.
  virtual void synchronize() {}
  virtual void all_reduce(float* data, size_t n, ReduceOp op) = 0;
  virtual void all_reduce(double* data, size_t n, ReduceOp op) = 0;
  virtual void all_reduce(int64_t* data, size_t n, ReduceOp op) = 0;
  // Each rank contributes `bytes` bytes; out receives size() * bytes, in rank order.
  virtual void all_gather(const void* in, size_t bytes, void* out) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // Point to point. `tag` separates message kinds; buffers must outlive the request.
  virtual std::unique_ptr<Request> isend(const void* data, size_t bytes, int dest, int tag) = 0;
  virtual std::unique_ptr<Request> irecv(void* data, size_t bytes, int source, int tag) = 0;
  // Whether a message with `tag` waits (from `source`, or any rank when source < 0); non-blocking.
  virtual bool probe(int source, int tag, Incoming& found) = 0;

  // The ranks with the same `color` form a new communicator, ordered by `key`; a rank that gives
  // a negative color joins none and gets null. Collective over this communicator.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;
};

// Convenience on top of the interface.
template <typename T>
T all_reduce_value(Communicator& comm, T value, ReduceOp op) {
  comm.all_reduce(&value, 1, op);
  return value;
}

}  // namespace opd

namespace opd {

// Whether every rank holds the same bytes (a CRC-32 compared across ranks); collective.
bool same_on_all_ranks(Communicator& comm, const void* data, size_t bytes);

}  // namespace opd
