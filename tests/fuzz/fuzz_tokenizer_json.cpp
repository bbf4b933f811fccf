// Fuzz target: the tokenizer.json parser on arbitrary bytes. A rejected file must be an
// opd::Error; an accepted one must encode and decode text (the input itself, and a fixed sample
// with special-token look-alikes) without crashing.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "model/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    opd::BpeTokenizer tok(text, "fuzz/tokenizer.json");
    const std::string sample = "Hello, wörld! 你好 🙂 123  \n\t<|im_end|><|endoftext|>'s";
    const std::vector<int> ids = tok.encode(sample, "sample");
    (void)tok.decode(ids);
    for (int id = 0; id < tok.vocab_size() && id < 64; ++id) (void)tok.piece(id);
    (void)tok.decode(tok.encode(text.substr(0, 256), "input"));
  } catch (const opd::Error&) {
    // the expected outcome for a malformed file, or input text that is not UTF-8
  }
  return 0;
}
