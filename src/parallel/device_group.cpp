#ifdef OPD_WITH_CUDA
#include "parallel/device_group.h"

#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/convert.h"
#include "kernels/cuda/cuda_check.cuh"

#ifdef OPD_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace opd {

bool ranks_have_own_gpus(Communicator& group, std::string* why) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  std::vector<char> all(size_t(group.size()) * sizeof(prop.uuid));
  group.all_gather(&prop.uuid, sizeof(prop.uuid), all.data());
  for (int a = 0; a < group.size(); ++a)
    for (int b = a + 1; b < group.size(); ++b)
      if (std::memcmp(&all[a * sizeof(prop.uuid)], &all[b * sizeof(prop.uuid)], sizeof(prop.uuid)) == 0) {
        if (why) *why = str("ranks ", a, " and ", b, " of ", group.name(), " share a GPU");
        return false;
      }
  return true;
}

std::unique_ptr<Communicator> device_group(Communicator& group, const std::string& name, std::string* why) {
#ifdef OPD_WITH_NCCL
  if (!ranks_have_own_gpus(group, why)) return nullptr;  // collective: every rank decides alike
  auto nccl = std::make_unique<NcclCommunicator>(group, name);
  // NCCL connects the ranks and allocates its buffers at the first collective: one now, so that a
  // model's memory plan, checked next, sees what is left.
  float* one = nullptr;
  CUDA_CHECK(cudaMalloc(&one, sizeof(float)));
  CUDA_CHECK(cudaMemset(one, 0, sizeof(float)));
  nccl->all_reduce(one, 1, ReduceOp::kSum);
  CUDA_CHECK(cudaFree(one));
  return nccl;
#else
  (void)group;
  (void)name;
  if (why) *why = "this opd was built without NCCL";
  return nullptr;
#endif
}

DeviceAllReduce::DeviceAllReduce(Communicator& host, Communicator* device, cudaStream_t stream)
    : host_(host), device_(device), stream_(stream) {
  OPD_REQUIRE(!host.device_buffers(), "device all-reduce: ", host.name(), " must be a host-memory communicator");
  if (!device_) return;
  OPD_REQUIRE(device_->size() == host_.size() && device_->rank() == host_.rank(), "device all-reduce: ",
              device_->name(), " (rank ", device_->rank(), " of ", device_->size(), ") does not match ", host_.name(),
              " (rank ", host_.rank(), " of ", host_.size(), ")");
#ifdef OPD_WITH_NCCL
  auto* nccl = dynamic_cast<NcclCommunicator*>(device_);
  OPD_REQUIRE(nccl, "device all-reduce: ", device_->name(), " is not an NCCL communicator");
  // The sums join the model's stream: its kernels produce and consume them, so the host need not wait.
  nccl->set_stream(stream_);
  nccl->set_stream_ordered(true);
#else
  throw Error(str("device all-reduce: ", device_->name(), " given to an opd built without NCCL"));
#endif
}

DeviceAllReduce::~DeviceAllReduce() {
  if (!pinned_) return;
  cudaStreamSynchronize(stream_);  // the last copy back may still read it; nothing thrown from here
  cudaFreeHost(pinned_);
}

void* DeviceAllReduce::pinned(size_t bytes) {
  if (bytes > pinned_bytes_) {
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // the last copy back may still read the old buffer
    if (pinned_) CUDA_CHECK(cudaFreeHost(pinned_));
    pinned_ = nullptr;
    CUDA_CHECK(cudaMallocHost(&pinned_, bytes));
    pinned_bytes_ = bytes;
  }
  return pinned_;
}

void DeviceAllReduce::sum(__nv_bfloat16* data, size_t n) {
  if (n == 0 || host_.size() == 1) return;
#ifdef OPD_WITH_NCCL
  if (device_) return static_cast<NcclCommunicator*>(device_)->all_reduce(data, n, ReduceOp::kSum);
#endif
  auto* staged = static_cast<uint16_t*>(pinned(n * sizeof(uint16_t)));
  CUDA_CHECK(cudaMemcpyAsync(staged, data, n * sizeof(uint16_t), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<float> wide(n);
  cpu::convert(wide.data(), staged, n);
  host_.all_reduce(wide.data(), n, ReduceOp::kSum);
  cpu::convert(staged, wide.data(), n);
  // Later calls refill the staging buffer only after waiting on the stream, so this copy is done by then.
  CUDA_CHECK(cudaMemcpyAsync(data, staged, n * sizeof(uint16_t), cudaMemcpyHostToDevice, stream_));
}

void DeviceAllReduce::sum(float* data, size_t n) {
  if (n == 0 || host_.size() == 1) return;
  if (device_) return device_->all_reduce(data, n, ReduceOp::kSum);
  auto* staged = static_cast<float*>(pinned(n * sizeof(float)));
  CUDA_CHECK(cudaMemcpyAsync(staged, data, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  host_.all_reduce(staged, n, ReduceOp::kSum);
  CUDA_CHECK(cudaMemcpyAsync(data, staged, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
}

}  // namespace opd
#endif  // OPD_WITH_CUDA
