#ifdef OPD_WITH_CUDA
#include "train/gpu_optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/cuda_check.cuh"

namespace opd {

GpuAdamW::GpuAdamW(GpuTransformer& model, const OptimizerOptions& options) : model_(model), o_(options) {
  check_schedule(o_);
  OPD_REQUIRE(model.master() && model.grads(), "GPU optimizer: the model was planned without training state");
}

void GpuAdamW::restore(const std::vector<float>& m, const std::vector<float>& v, int updates) {
  const size_t n = model_.num_params();
  OPD_REQUIRE(m.size() == n && v.size() == n, "GPU optimizer: state of ", m.size(), " parameters for a model of ", n);
  CUDA_CHECK(cudaMemcpyAsync(model_.block<float>("adam.m"), m.data(), n * sizeof(float), cudaMemcpyHostToDevice,
                             model_.stream()));
  CUDA_CHECK(cudaMemcpyAsync(model_.block<float>("adam.v"), v.data(), n * sizeof(float), cudaMemcpyHostToDevice,
                             model_.stream()));
  CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
  t_ = updates;
}

void GpuAdamW::download(const char* moment, std::vector<float>& out) const {
  const size_t n = model_.num_params();
  out.resize(n);
  CUDA_CHECK(cudaMemcpyAsync(out.data(), model_.block<float>(moment), n * sizeof(float), cudaMemcpyDeviceToHost,
                             model_.stream()));
  CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
}

double GpuAdamW::grad_sumsq() const {
  const size_t n = model_.num_params();
  Communicator* tp = model_.tp();
  if (!tp) return cuda::grad_sumsq(model_.grads(), n, model_.stream());
  // The global norm: split tensors' squares summed over the TP group, replicated ones counted once.
  // Neighbouring tensors of the same kind are one range, one reduction.
  double* parts = nullptr;  // device: split, replicated
  CUDA_CHECK(cudaMallocAsync(&parts, 2 * sizeof(double), model_.stream()));
  CUDA_CHECK(cudaMemsetAsync(parts, 0, 2 * sizeof(double), model_.stream()));
  std::vector<ParamSpec> specs = model_.specs();
  std::sort(specs.begin(), specs.end(), [](const ParamSpec& a, const ParamSpec& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < specs.size();) {
    const bool replicated = specs[i].shard.replicated();
    const size_t begin = specs[i].offset;
    size_t end = begin + specs[i].size;
    for (++i; i < specs.size() && specs[i].shard.replicated() == replicated && specs[i].offset == end; ++i)
      end += specs[i].size;
    cuda::grad_sumsq_add(parts + replicated, model_.grads() + begin, end - begin, model_.stream());
  }
  double host[2];
  CUDA_CHECK(cudaMemcpyAsync(host, parts, sizeof(host), cudaMemcpyDeviceToHost, model_.stream()));
  CUDA_CHECK(cudaFreeAsync(parts, model_.stream()));
  CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
  return all_reduce_value(*tp, host[0], ReduceOp::kSum) + host[1];
}

double GpuAdamW::step(int step, double grad_scale) {
  const size_t n = model_.num_params();
  const double norm = std::sqrt(grad_sumsq()) * grad_scale;
  OPD_REQUIRE(std::isfinite(norm), "step ", step, ": the gradient norm is ", norm,
              " (NaN or Inf); stopping before the update so the last saved model stays good");
  const double scale = grad_scale * ((o_.grad_clip > 0 && norm > o_.grad_clip) ? o_.grad_clip / norm : 1.0);
  ++t_;
  cuda::adamw_update(model_.master(), static_cast<const float*>(model_.grads()), model_.block<float>("adam.m"),
                     model_.block<float>("adam.v"), model_.block<unsigned char>("adam.decay_mask"), n,
                     static_cast<float>(scheduled_lr(o_, step)), static_cast<float>(o_.beta1),
                     static_cast<float>(o_.beta2), static_cast<float>(o_.eps), static_cast<float>(o_.weight_decay), t_,
                     static_cast<float>(scale), model_.weights(), model_.stream());
  return norm;
}

}  // namespace opd
#endif  // OPD_WITH_CUDA
