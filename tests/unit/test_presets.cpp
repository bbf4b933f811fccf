// Qwen3 shapes for benchmarks: parameter counts as published (embeddings tied up to 4B), and an
// unknown name listing the known ones.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "model/presets.h"

TEST(Presets, Qwen3ParameterCounts) {
  EXPECT_NEAR(opd::qwen3_preset("qwen3-0.6b", 2048).num_parameters() / 1e9, 0.596, 0.001);
  EXPECT_NEAR(opd::qwen3_preset("qwen3-1.7b", 2048).num_parameters() / 1e9, 1.721, 0.001);
  EXPECT_NEAR(opd::qwen3_preset("qwen3-4b", 2048).num_parameters() / 1e9, 4.022, 0.001);
  EXPECT_NEAR(opd::qwen3_preset("qwen3-8b", 2048).num_parameters() / 1e9, 8.191, 0.001);
  EXPECT_EQ(opd::qwen3_preset("qwen3-8b", 2048).max_seq, 2048);
}

TEST(Presets, UnknownNamesListTheKnownOnes) {
  try {
    opd::qwen3_preset("qwen3-70b", 2048, "--student-preset");
    ADD_FAILURE();
  } catch (const opd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("option --student-preset = 'qwen3-70b': not a known shape (qwen3-0.6b"),
              std::string::npos)
        << e.what();
  }
}
