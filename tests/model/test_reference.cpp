// The model against an independent implementation: Hugging Face transformers' Qwen3, run in
// float64 on the same float32 weights by tools/make-fixtures. Logits within 1e-4 (absolute),
// every parameter gradient of L = sum(logits * R) within 1e-3 (relative).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "io/h5.h"
#include "io/model_file.h"

namespace opd {
namespace {

struct Errors {
  double logits_abs = 0, grad_rel = 0;
};

Errors check_fixture(const std::string& name) {
  const std::string path = std::string(OPD_SOURCE_DIR) + "/tests/fixtures/" + name;
  h5::File f = h5::File::open_read(path);
  auto model = read_model_group(f);
  const auto& c = model->config();
  const auto shape = h5::dataset_shape(f.id(), "fixture/tokens", path);
  const int B = static_cast<int>(shape[0]), T = static_cast<int>(shape[1]), V = c.vocab;
  const auto tokens = h5::read_i32(f.id(), "fixture/tokens", path);
  const auto ref_logits = h5::read_f64(f.id(), "fixture/logits", path);
  const auto R = h5::read_f64(f.id(), "fixture/R", path);

  Errors e;
  const float* logits = model->forward(tokens.data(), B, T);
  for (size_t i = 0; i < size_t(B) * T * V; ++i) e.logits_abs = std::max(e.logits_abs, std::fabs(logits[i] - ref_logits[i]));

  std::vector<float> dlogits(R.begin(), R.end());
  model->zero_grad();
  model->backward(dlogits.data());
  for (const ParamSpec& s : model->specs()) {
    const auto ref = h5::read_f64(f.id(), "fixture/grads/" + s.name, path);
    EXPECT_EQ(ref.size(), s.size) << s.name;
    double scale = 0;
    for (double g : ref) scale = std::max(scale, std::fabs(g));
    double worst = 0;
    for (size_t i = 0; i < s.size; ++i) {
      const double got = model->grads()[s.offset + i];
      // Relative to the element, floored at 1% of the tensor's largest gradient so that
      // elements that are zero up to rounding do not dominate.
      worst = std::max(worst, std::fabs(got - ref[i]) / std::max(std::fabs(ref[i]), 1e-2 * scale));
    }
    EXPECT_LE(worst, 1e-3) << s.name;
    e.grad_rel = std::max(e.grad_rel, worst);
  }
  return e;
}

TEST(Reference, MatchesTransformersUntied) {
  Errors e = check_fixture("qwen3_tiny.h5");
  std::printf("untied: max |logits - ref| = %.3g, max relative gradient error = %.3g\n", e.logits_abs, e.grad_rel);
  EXPECT_LE(e.logits_abs, 1e-4);
}

TEST(Reference, MatchesTransformersTied) {
  Errors e = check_fixture("qwen3_tiny_tied.h5");
  std::printf("tied: max |logits - ref| = %.3g, max relative gradient error = %.3g\n", e.logits_abs, e.grad_rel);
  EXPECT_LE(e.logits_abs, 1e-4);
}

}  // namespace
}  // namespace opd
