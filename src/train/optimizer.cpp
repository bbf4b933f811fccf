#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/adamw.h"
#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/cuda_check.cuh"
#endif

namespace opd {

void check_schedule(const OptimizerOptions& o) {
  OPD_REQUIRE(o.schedule == "constant" || o.schedule == "cosine" || o.schedule == "wsd", "option --lr-schedule = '",
              o.schedule, "' is not one of constant, cosine, wsd");
  OPD_REQUIRE(o.schedule != "wsd" || (o.decay_steps >= 1 && o.decay_steps <= o.total_steps),
              "option --lr-decay-steps = ", o.decay_steps, " must be in [1, --steps = ", o.total_steps,
              "] with --lr-schedule wsd");
}

double scheduled_lr(const OptimizerOptions& o, int step) {
  if (o.warmup_steps > 0 && step <= o.warmup_steps) return o.lr * step / o.warmup_steps;
  if (o.schedule == "constant") return o.lr;
  const double floor = o.lr * o.min_lr_ratio;
  if (o.schedule == "wsd") {
    const int decay_start = o.total_steps - o.decay_steps;
    if (step <= decay_start) return o.lr;
    const double progress = std::min(1.0, double(step - decay_start) / o.decay_steps);
    return o.lr + (floor - o.lr) * progress;
  }
  const double span = std::max(1, o.total_steps - o.warmup_steps);
  const double progress = std::min(1.0, (step - o.warmup_steps) / span);
  return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

namespace {

// ---- The update's arithmetic and copies, on the memory that holds the state ----------------------

// sums[r] += the squares of the gradient over [begin, end), r = 1 for replicated ranges.
void add_grad_sumsq(const TrainingMemory& mem, size_t begin, size_t end, int r, double* sums) {
  if (!mem.device) {
    sums[r] += cpu::grad_sumsq(mem.grads + begin, end - begin);
    return;
  }
#ifdef OPD_WITH_CUDA
  cuda::grad_sumsq_add(sums + r, mem.grads + begin, end - begin, static_cast<cudaStream_t>(mem.stream));
#endif
}

// A device array of two doubles to accumulate into (device memory), or the host's.
struct Sums {
  explicit Sums(const TrainingMemory& mem) : mem_(mem) {
#ifdef OPD_WITH_CUDA
    if (mem_.device) {
      CUDA_CHECK(cudaMallocAsync(&device_, 2 * sizeof(double), stream()));
      CUDA_CHECK(cudaMemsetAsync(device_, 0, 2 * sizeof(double), stream()));
    }
#endif
  }
  double* target() { return device_ ? device_ : host_; }
  // The two sums on the host (waits for the device).
  const double* read() {
#ifdef OPD_WITH_CUDA
    if (device_) {
      CUDA_CHECK(cudaMemcpyAsync(host_, device_, sizeof(host_), cudaMemcpyDeviceToHost, stream()));
      CUDA_CHECK(cudaFreeAsync(device_, stream()));
      CUDA_CHECK(cudaStreamSynchronize(stream()));
      device_ = nullptr;
    }
#endif
    return host_;
  }
#ifdef OPD_WITH_CUDA
  cudaStream_t stream() const { return static_cast<cudaStream_t>(mem_.stream); }
#endif

 private:
  const TrainingMemory& mem_;
  double host_[2] = {0, 0};
  double* device_ = nullptr;
};

void apply_adamw(const TrainingMemory& mem, float lr, const OptimizerOptions& o, int t, float scale) {
  const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2), eps = static_cast<float>(o.eps),
              wd = static_cast<float>(o.weight_decay);
  if (!mem.device)
    return cpu::adamw_update(mem.params, mem.grads, mem.adam_m, mem.adam_v, mem.decay_mask, mem.size, lr, b1, b2, eps,
                             wd, t, scale);
#ifdef OPD_WITH_CUDA
  cuda::adamw_update(mem.params, static_cast<const float*>(mem.grads), mem.adam_m, mem.adam_v, mem.decay_mask,
                     mem.size, lr, b1, b2, eps, wd, t, scale, static_cast<__nv_bfloat16*>(mem.weights_bf16),
                     static_cast<cudaStream_t>(mem.stream));
#endif
}

// n floats between the host and the model's device memory.
void copy_moment(const TrainingMemory& mem, float* device, float* host, bool to_device) {
#ifdef OPD_WITH_CUDA
  const auto kind = to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  const auto stream = static_cast<cudaStream_t>(mem.stream);
  CUDA_CHECK(to_device ? cudaMemcpyAsync(device, host, mem.size * sizeof(float), kind, stream)
                       : cudaMemcpyAsync(host, device, mem.size * sizeof(float), kind, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
#else
  (void)mem, (void)device, (void)host, (void)to_device;
#endif
}

}  // namespace

// The state is sized to what the model trains (Transformer::trainable_specs): every parameter, or
// under LoRA the adapters only.
AdamW::AdamW(Transformer& model, const OptimizerOptions& options)
    : model_(model), o_(options), m_(model.trainable_params().size(), 0.0f), v_(model.trainable_params().size(), 0.0f),
      decay_mask_(model.trainable_params().size(), 0) {
  check_schedule(o_);
  for (const ParamSpec& s : model.trainable_specs())
    std::fill(decay_mask_.begin() + s.offset, decay_mask_.begin() + s.offset + s.size, s.decay ? 1 : 0);
  if (!model.tp()) {
    ranges_.push_back({0, model.trainable_params().size(), true});
    return;
  }
  // Under TP, neighbouring tensors of the same kind are one range, one reduction.
  std::vector<ParamSpec> specs = model.trainable_specs();
  std::sort(specs.begin(), specs.end(), [](const ParamSpec& a, const ParamSpec& b) { return a.offset < b.offset; });
  for (const ParamSpec& s : specs) {
    if (!ranges_.empty() && ranges_.back().replicated == s.shard.replicated() && ranges_.back().end == s.offset)
      ranges_.back().end += s.size;
    else
      ranges_.push_back({s.offset, s.offset + s.size, s.shard.replicated()});
  }
}

TrainingMemory AdamW::memory() const {
  TrainingMemory mem = model_.training_memory();
  if (!mem.device) {
    mem.adam_m = m_.data();
    mem.adam_v = v_.data();
    mem.decay_mask = decay_mask_.data();
  } else if (!on_device_) {  // the model moved to its GPU: the moments follow
    copy_moment(mem, mem.adam_m, m_.data(), /*to_device=*/true);
    copy_moment(mem, mem.adam_v, v_.data(), /*to_device=*/true);
    on_device_ = true;
  }
  return mem;
}

void AdamW::restore(std::vector<float> m, std::vector<float> v, int updates) {
  OPD_REQUIRE(m.size() == m_.size() && v.size() == v_.size(), "optimizer state of ", m.size(),
              " parameters does not fit a model of ", m_.size());
  m_ = std::move(m);
  v_ = std::move(v);
  t_ = updates;
  on_device_ = false;  // the next call moves them to the model's device, if it is on one
}

const std::vector<float>& AdamW::m() const {
  const TrainingMemory mem = memory();
  if (mem.device) copy_moment(mem, mem.adam_m, m_.data(), /*to_device=*/false);
  return m_;
}

const std::vector<float>& AdamW::v() const {
  const TrainingMemory mem = memory();
  if (mem.device) copy_moment(mem, mem.adam_v, v_.data(), /*to_device=*/false);
  return v_;
}

double AdamW::lr_at(int step) const { return scheduled_lr(o_, step); }

double AdamW::grad_norm(const TrainingMemory& mem) const {
  Sums sums(mem);
  for (const NormRange& r : ranges_) add_grad_sumsq(mem, r.begin, r.end, r.replicated, sums.target());
  const double* s = sums.read();
  // Split tensors' squares summed over the TP group, replicated ones counted once.
  const double split = model_.tp() ? all_reduce_value(*model_.tp(), s[0], ReduceOp::kSum) : s[0];
  return std::sqrt(split + s[1]);
}

double AdamW::step(int step, double grad_scale) {
  const TrainingMemory mem = memory();
  const double norm = grad_norm(mem) * grad_scale;
  OPD_REQUIRE(std::isfinite(norm), "step ", step, ": the gradient norm is ", norm,
              " (NaN or Inf); stopping before the update so the last saved model stays good");
  const double scale = grad_scale * ((o_.grad_clip > 0 && norm > o_.grad_clip) ? o_.grad_clip / norm : 1.0);
  ++t_;
  apply_adamw(mem, static_cast<float>(lr_at(step)), o_, t_, static_cast<float>(scale));
  return norm;
}

}  // namespace opd
