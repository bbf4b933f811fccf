#ifdef OPD_WITH_CUDA
#include "train/gpu_optimizer.h"

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

double GpuAdamW::step(int step, double grad_scale) {
  const size_t n = model_.num_params();
  const double norm = std::sqrt(cuda::grad_sumsq(model_.grads(), n, model_.stream())) * grad_scale;
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
