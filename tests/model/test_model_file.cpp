#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/h5.h"
#include "io/model_file.h"
#include "common/python.h"
#include "tiny_model.h"

namespace opd {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("opd_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelFile, RoundTripIsBitExact) {
  for (bool tied : {false, true}) {
    auto m = testing::tiny_model(tied);
    const std::string path = temp_path(tied ? "tied.h5" : "untied.h5");
    save_model(path, *m);
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    auto r = load_model(path);
    EXPECT_EQ(r->config().vocab, m->config().vocab);
    EXPECT_EQ(r->config().tie_embeddings, tied);
    EXPECT_EQ(r->config().rope_theta, m->config().rope_theta);
    EXPECT_TRUE(r->tokenizer().same_as(m->tokenizer()));
    ASSERT_EQ(r->params().size(), m->params().size());
    EXPECT_EQ(0, std::memcmp(r->params().data(), m->params().data(), m->params().size() * sizeof(float)));
  }
}

TEST(ModelFile, CorruptTensorIsDetected) {
  auto m = testing::tiny_model();
  const std::string path = temp_path("corrupt.h5");
  save_model(path, *m);
  {
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "model/model.layers.1.mlp.up_proj.weight", H5P_DEFAULT);
    std::vector<float> w(m->config().ffn_dim * m->config().d_model);
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.data());
    w[17] += 1e-3f;
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.data());
    H5Dclose(d);
    H5Fclose(f);
  }
  expect_error([&] { load_model(path); }, "model.layers.1.mlp.up_proj.weight: checksum mismatch");
}

TEST(ModelFile, ClearErrors) {
  expect_error([] { load_model("/nonexistent/model.h5"); }, "/nonexistent/model.h5: no such file");
  const std::string text = temp_path("not_hdf5.h5");
  std::FILE* f = std::fopen(text.c_str(), "w");
  std::fputs("hello", f);
  std::fclose(f);
  expect_error([&] { load_model(text); }, "not an HDF5 file");

  auto m = testing::tiny_model();
  const std::string path = temp_path("missing_tensor.h5");
  save_model(path, *m);
  {
    hid_t fh = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(fh, "model/model.norm.weight", H5P_DEFAULT);
    H5Fclose(fh);
  }
  expect_error([&] { load_model(path); }, "missing dataset 'model.norm.weight'");
}

// The files are plain HDF5: h5py (Debian's python3-h5py, installed by tools/install-deps) reads them.
TEST(ModelFile, ReadableByH5py) {
  ASSERT_EQ(testing::python_lacks("h5py"), "");
  auto m = testing::tiny_model();
  const std::string path = temp_path("h5py.h5");
  save_model(path, *m);
  const std::string script =
      "import h5py, zlib, sys\n"
      "f = h5py.File(sys.argv[1], 'r')\n"
      "assert f.attrs['format'] == 'opd-model'\n"
      "g = f['model']\n"
      "assert int(g['config'].attrs['vocab']) == 11\n"
      "w = g['model.embed_tokens.weight']\n"
      "assert w.shape == (11, 24)\n"
      "assert zlib.crc32(w[()].astype('<f4').tobytes()) == int(w.attrs['crc32'])\n"
      "assert [p.decode() if isinstance(p, bytes) else p for p in g['tokenizer/pieces'][()]][:2] == ['<pad>', '<eos>']\n"
      "print('ok')\n";
  const std::string py = temp_path("check.py");
  std::FILE* s = std::fopen(py.c_str(), "w");
  std::fputs(script.c_str(), s);
  std::fclose(s);
  const int rc = std::system((testing::python() + " " + py + " " + path + " > /dev/null").c_str());
  EXPECT_EQ(rc, 0) << "h5py could not read " << path;
}

}  // namespace
}  // namespace opd
