// libFuzzer target: the model file loader's validation (io/model_file), on structured mutations of
// a valid file (see h5_mutant.h for why not raw bytes).
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "fuzz_common.h"
#include "h5_mutant.h"
#include "io/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  const std::string path = opd::fuzz::scratch_path(".h5");
  opd::fuzz::H5Mutant(fdp).write(path, /*checkpoint=*/false);
  try {
    auto model = opd::load_model(path);
    const opd::ModelConfig& c = model->config();
    FUZZ_ASSERT(model->tokenizer().vocab_size() == c.vocab, "a loaded model's tokenizer matches its config");
    for (float x : model->params()) FUZZ_ASSERT(std::isfinite(x), "a loaded model's weights are finite");
  } catch (const opd::Error&) {
  }
  return 0;
}
