#include "train/optimizer.h"

#include <cmath>

#include "core/error.h"
#include "kernels/cpu/adamw.h"

#ifdef OPD_WITH_CUDA
#include "train/gpu_optimizer.h"
#endif

namespace opd {

AdamW::AdamW(Transformer& model, const OptimizerOptions& options)
    : model_(model), o_(options), m_(model.params().size(), 0.0f), v_(model.params().size(), 0.0f),
      decay_mask_(model.params().size(), 0) {
  check_schedule(o_);
  for (const ParamSpec& s : model.specs())
    std::fill(decay_mask_.begin() + s.offset, decay_mask_.begin() + s.offset + s.size, s.decay ? 1 : 0);
}

void AdamW::restore(std::vector<float> m, std::vector<float> v, int updates) {
  OPD_REQUIRE(m.size() == m_.size() && v.size() == v_.size(), "optimizer state of ", m.size(),
              " parameters does not fit a model of ", m_.size());
  m_ = std::move(m);
  v_ = std::move(v);
  t_ = updates;
#ifdef OPD_WITH_CUDA
  if (gpu_) gpu_->restore(m_, v_, t_);
#endif
}

void AdamW::fetch_from_gpu(const char* moment, std::vector<float>& host) const {
#ifdef OPD_WITH_CUDA
  if (gpu_) gpu_->download(moment, host);
#else
  (void)moment;
  (void)host;
#endif
}

const std::vector<float>& AdamW::m() const {
  fetch_from_gpu("adam.m", m_);
  return m_;
}

const std::vector<float>& AdamW::v() const {
  fetch_from_gpu("adam.v", v_);
  return v_;
}

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

double AdamW::lr_at(int step) const { return scheduled_lr(o_, step); }

double AdamW::step(int step, double grad_scale) {
#ifdef OPD_WITH_CUDA
  if (model_.on_gpu()) {
    if (!gpu_) {
      gpu_ = std::make_shared<GpuAdamW>(*model_.gpu(), o_);
      gpu_->restore(m_, v_, t_);
    }
    const double norm = gpu_->step(step, grad_scale);
    t_ = gpu_->updates();
    return norm;
  }
#endif
  std::vector<float>& g = model_.grads();
  double sumsq = 0;
  if (Communicator* tp = model_.tp()) {
    // The global norm: split tensors' squares summed over the TP group, replicated ones counted once.
    double parts[2] = {0, 0};  // split, replicated
    for (const ParamSpec& s : model_.specs()) parts[s.shard.replicated()] += cpu::grad_sumsq(g.data() + s.offset, s.size);
    sumsq = all_reduce_value(*tp, parts[0], ReduceOp::kSum) + parts[1];
  } else {
    sumsq = cpu::grad_sumsq(g.data(), g.size());
  }
  const double norm = std::sqrt(sumsq) * grad_scale;
  OPD_REQUIRE(std::isfinite(norm), "step ", step, ": the gradient norm is ", norm,
              " (NaN or Inf); stopping before the update so the last saved model stays good");
  const double scale = grad_scale * ((o_.grad_clip > 0 && norm > o_.grad_clip) ? o_.grad_clip / norm : 1.0);
  ++t_;
  cpu::adamw_update(model_.params().data(), g.data(), m_.data(), v_.data(), decay_mask_.data(), g.size(),
                    static_cast<float>(lr_at(step)), static_cast<float>(o_.beta1), static_cast<float>(o_.beta2),
                    static_cast<float>(o_.eps), static_cast<float>(o_.weight_decay), t_, static_cast<float>(scale));
  return norm;
}

}  // namespace opd
