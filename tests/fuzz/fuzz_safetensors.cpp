// Fuzz target: the safetensors header parser on arbitrary bytes taken as a whole file. A rejected
// file must be an opd::Error; an accepted one must describe only bytes inside the input, which
// is checked by converting every tensor from them (AddressSanitizer flags any byte outside).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/cpu/convert.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const opd::StHeader h = opd::parse_safetensors_header(data, size, size, "fuzz.safetensors");
    float sink = 0;
    for (const opd::StTensor& t : h.tensors) {
      const uint8_t* p = data + h.data_start + t.begin;
      const size_t n = t.numel();
      for (size_t i = 0; i < n; ++i) {
        if (t.dtype == opd::StDtype::kF32) {
          float f;
          std::memcpy(&f, p + 4 * i, 4);
          sink += f;
        } else {
          uint16_t v;
          std::memcpy(&v, p + 2 * i, 2);
          sink += t.dtype == opd::StDtype::kBF16 ? opd::cpu::float_from_bf16(v) : opd::f16_to_float(v);
        }
      }
    }
    volatile float keep = sink;
    (void)keep;
  } catch (const opd::Error&) {
    // the expected outcome for a malformed file
  }
  return 0;
}
