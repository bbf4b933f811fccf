// Imported Hugging Face models through the command line: import, distill with a chat template
// (student and teacher sharing the BPE tokenizer), sample, eval and export.
#include <gtest/gtest.h>

#include <filesystem>

#include "run.h"

namespace opd {
namespace {

using testing::read_file;
using testing::run_opd;
using testing::temp_dir;

const std::string kHf = std::string(OPD_SOURCE_DIR) + "/tests/fixtures/hf/";

TEST(HfModels, ImportDistillWithTemplateExport) {
  const std::string d = temp_dir("hf_models");
  auto r = run_opd("import --hf " + kHf + "qwen3_untied --out " + d + "/student.h5");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("qwen3 model"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("eos 2 (<|im_end|>) 0 (<|endoftext|>)"), std::string::npos) << r.output;
  r = run_opd("import --hf " + kHf + "qwen3_tied_sharded --out " + d + "/teacher.h5");
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_opd("import --hf " + kHf + "llama --out " + d + "/llama.h5");
  ASSERT_EQ(r.code, 0) << r.output;

  r = run_opd("data arith --n 8 --seed 3 --out " + d + "/prompts.jsonl");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string common = " --prompts " + d + "/prompts.jsonl --eval " + d + "/prompts.jsonl --steps 2 " +
                             "--prompts-per-step 4 --samples-per-prompt 1 --max-new-tokens 8 --eval-max-new-tokens 8 " +
                             "--eval-every 0 --threads 1";
  r = run_opd("distill --student " + d + "/student.h5 --teacher " + d + "/teacher.h5 --template qwen3 --kl full" +
              common + " --out " + d + "/run");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string samples = read_file(d + "/run/metrics.jsonl");
  EXPECT_NE(samples.find("\"step\":2"), std::string::npos) << samples;

  // Teacher and student must share the tokenizer; a template needs its special tokens.
  r = run_opd("distill --student " + d + "/student.h5 --teacher " + d + "/llama.h5" + common + " --out " + d + "/bad");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("must share one tokenizer"), std::string::npos) << r.output;
  r = run_opd("eval --model " + d + "/student.h5 --eval " + d + "/prompts.jsonl --template llama3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("needs the special token <|begin_of_text|>"), std::string::npos) << r.output;
  r = run_opd("eval --model " + std::string(OPD_SOURCE_DIR) + "/models/teacher.h5 --eval " + d +
              "/prompts.jsonl --template qwen3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("char tokenizer does not have"), std::string::npos) << r.output;

  r = run_opd("eval --model " + d + "/llama.h5 --eval " + d + "/prompts.jsonl --template llama3 --max-new-tokens 4");
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_opd("sample --model " + d + "/run/final.h5 --teacher " + d + "/teacher.h5 --template qwen3 --prompts " + d +
              "/prompts.jsonl --max-new-tokens 4 --out " + d + "/s.jsonl");
  ASSERT_EQ(r.code, 0) << r.output;

  r = run_opd("export --model " + d + "/run/final.h5 --hf " + d + "/exported --dtype bf16");
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                        "generation_config.json"})
    EXPECT_TRUE(std::filesystem::exists(d + "/exported/" + f)) << f;
  r = run_opd("import --hf " + d + "/exported --out " + d + "/again.h5");
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_opd("import --hf " + d + "/nonexistent --out " + d + "/x.h5");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("nonexistent: not a directory"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace opd
