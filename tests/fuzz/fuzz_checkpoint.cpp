// libFuzzer target: the checkpoint loader's validation (io/checkpoint), on structured mutations of
// a valid checkpoint (see h5_mutant.h for why not raw bytes). A checkpoint also loads as a model.
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "fuzz_common.h"
#include "h5_mutant.h"
#include "io/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  const std::string path = opd::fuzz::scratch_path(".h5");
  opd::fuzz::H5Mutant(fdp).write(path, /*checkpoint=*/true);
  try {
    opd::Checkpoint c = opd::load_checkpoint(path);
    FUZZ_ASSERT(c.adam_m.size() == c.model->params().size() && c.adam_v.size() == c.adam_m.size(),
                "a loaded checkpoint's optimizer state matches its model");
    for (float x : c.adam_v) FUZZ_ASSERT(std::isfinite(x), "a loaded checkpoint's moments are finite");
  } catch (const opd::Error&) {
  }
  try {
    opd::load_model(path);
  } catch (const opd::Error&) {
  }
  return 0;
}
