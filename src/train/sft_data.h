// SFT sequences from examples: the prompt, the completion and an EOS, with the completion's
// no-loss spans (Example::no_loss) turned into a per-token loss mask.
#pragma once
#include <vector>

#include "model/tokenizer.h"
#include "tasks/dataset.h"
#include "train/batch.h"

namespace opd {

// The completion's tokens and, per token, 1 where it lies in a no-loss span. The completion is
// encoded span by span, so a span's tokens are exactly the tokens of its text (for the character
// tokenizer this equals encoding the whole completion; a BPE merge never crosses a span's edge).
std::vector<int> encode_completion(const Tokenizer& tok, const Example& e, std::vector<char>& no_loss);

// prompt tokens, completion tokens + EOS (trained on; the model learns to stop), loss mask.
// `group` is the example's index within the step.
Sequence sft_sequence(const Tokenizer& tok, const Example& e, int group);

}  // namespace opd
