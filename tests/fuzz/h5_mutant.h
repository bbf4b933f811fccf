// Structured mutations of model and checkpoint files, for the HDF5 loaders' validation.
//
// Raw bytes make poor HDF5 fuzz input: almost every mutation breaks the superblock or a B-tree, so
// the fuzzer spends its time inside libhdf5's own parsing (which is not ours to fix, and which
// crashes on some garbage: see the report of issue 12). Instead every input is a recipe: the
// fuzzer's bytes pick a small valid model, then which attribute, dataset, shape, type, value or
// checksum to change, drop or replace. With no bytes left every choice is "keep", so a short input
// is a valid file and the fuzzer grows from there.
#pragma once
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/crc32.h"
#include "io/h5.h"
#include "io/h5_check.h"
#include "model/params.h"

namespace opd::fuzz {

class H5Mutant {
 public:
  explicit H5Mutant(FuzzedDataProvider& fdp) : fdp_(fdp) {}

  // Writes a model file (checkpoint = false) or a checkpoint to `path`.
  void write(const std::string& path, bool checkpoint) {
    ModelConfig c;  // the shape the tensors are written for (the stored config may say otherwise)
    c.n_layers = pick(2) + 1;
    c.n_kv_heads = pick(2) + 1;
    c.n_heads = c.n_kv_heads * (pick(2) + 1);
    c.head_dim = 2 * (pick(2) + 1);
    c.d_model = pick(4) + 1;
    c.ffn_dim = pick(4) + 1;
    c.vocab = pick(6) + 1;
    c.max_seq = pick(8) + 1;
    c.qk_norm = pick(2) == 0;
    c.tie_embeddings = pick(2) == 1;

    h5::File f = h5::File::create(path);
    string_attr(f.id(), "format", checkpoint ? "opd-checkpoint" : "opd-model");
    int_attr(f.id(), "format_version", 1);
    if (checkpoint) {
      int_attr(f.id(), "step", 4);
      int_attr(f.id(), "tokens_seen", 1000);
      string_attr(f.id(), "config", "steps = 4\n");
    }
    if (keep()) {
      h5::Handle g = h5::create_group(f.id(), "model");
      if (keep()) {
        h5::Handle cg = h5::create_group(g.id(), "config");
        const std::pair<const char*, int> ints[] = {{"vocab", c.vocab},     {"d_model", c.d_model},
                                                    {"n_layers", c.n_layers}, {"n_heads", c.n_heads},
                                                    {"n_kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim},
                                                    {"ffn_dim", c.ffn_dim},   {"max_seq", c.max_seq}};
        for (const auto& [k, v] : ints) int_attr(cg.id(), k, v);
        double_attr(cg.id(), "rope_theta", 10000.0);
        double_attr(cg.id(), "rms_eps", 1e-6);
        int_attr(cg.id(), "qk_norm", c.qk_norm);
        int_attr(cg.id(), "tie_embeddings", c.tie_embeddings);
      }
      if (keep()) {
        h5::Handle tg = h5::create_group(g.id(), "tokenizer");
        string_attr(tg.id(), "type", "char");
        int_attr(tg.id(), "eos_id", c.vocab > 1 ? 1 : -1);
        int_attr(tg.id(), "pad_id", c.vocab > 1 ? 0 : -1);
        pieces(tg.id(), c.vocab);
      }
      tensors(g.id(), c);
    }
    if (checkpoint) {
      if (keep()) {
        h5::Handle opt = h5::create_group(f.id(), "optimizer");
        int_attr(opt.id(), "updates", 4);
        if (keep()) {
          h5::Handle m = h5::create_group(opt.id(), "m");
          tensors(m.id(), c);
        }
        if (keep()) {
          h5::Handle v = h5::create_group(opt.id(), "v");
          tensors(v.id(), c);
        }
      }
      if (keep()) {
        h5::Handle st = h5::create_group(f.id(), "state");
        int_attr(st.id(), "samples", 64);
        int_attr(st.id(), "data_cursor", 64);
        string_attr(st.id(), "counters", "{}");
      }
    }
    f.flush();
  }

 private:
  // 0 (keep) when the input is used up; otherwise one of `n` choices, 0 most often.
  int choice(int n) {
    const int byte = fdp_.ConsumeIntegral<uint8_t>();
    return byte < 200 ? 0 : 1 + byte % (n - 1);
  }
  bool keep() { return choice(2) == 0; }
  int pick(int n) { return fdp_.ConsumeIntegralInRange<int>(0, n - 1); }

  int64_t any_int() {
    switch (pick(4)) {
      case 0: return fdp_.ConsumeIntegralInRange<int64_t>(-3, 12);
      case 1: return fdp_.ConsumeIntegral<int32_t>();
      case 2: return std::numeric_limits<int64_t>::min() + pick(3);
      default: return fdp_.ConsumeIntegral<int64_t>();
    }
  }
  double any_double() {
    const double specials[] = {std::nan(""), INFINITY, -INFINITY, 0.0, -1.0, 1e300, 1.0, 5e-324};
    return pick(2) ? specials[pick(8)] : fdp_.ConsumeFloatingPoint<double>();
  }
  std::string any_string() { return fdp_.ConsumeRandomLengthString(24); }

  // An attribute written as an array instead of a scalar (what h5py writes for a numpy array).
  void array_attr(hid_t obj, const char* name, hid_t type, const void* values, hsize_t n) {
    h5::Handle space(H5_CHECK(H5Screate_simple(1, &n, nullptr)), H5Sclose);
    h5::Handle a(H5_CHECK(H5Acreate2(obj, name, type, space.id(), H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
    H5_CHECK(H5Awrite(a.id(), type, values));
  }
  // A fixed-length string attribute (h5py's np.bytes_), not the variable-length ones opd writes.
  void fixed_string_attr(hid_t obj, const char* name, const std::string& s) {
    h5::Handle t(H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
    H5_CHECK(H5Tset_size(t.id(), s.empty() ? 1 : s.size()));
    h5::Handle space(H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
    h5::Handle a(H5_CHECK(H5Acreate2(obj, name, t.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
    std::string buf = s.empty() ? std::string(1, '\0') : s;
    H5_CHECK(H5Awrite(a.id(), t.id(), buf.data()));
  }

  void int_attr(hid_t obj, const char* name, int64_t good) {
    switch (choice(6)) {
      case 0: h5::write_attr(obj, name, good); break;
      case 1: h5::write_attr(obj, name, any_int()); break;
      case 2: break;  // absent
      case 3: h5::write_attr(obj, name, any_double()); break;
      case 4: h5::write_attr(obj, name, any_string()); break;
      default: {
        const int64_t v[3] = {good, any_int(), any_int()};
        array_attr(obj, name, H5T_STD_I64LE, v, 1 + pick(3));
      }
    }
  }
  void double_attr(hid_t obj, const char* name, double good) {
    switch (choice(5)) {
      case 0: h5::write_attr(obj, name, good); break;
      case 1: h5::write_attr(obj, name, any_double()); break;
      case 2: break;
      case 3: h5::write_attr(obj, name, any_string()); break;
      default: {
        const double v[3] = {good, any_double(), any_double()};
        array_attr(obj, name, H5T_IEEE_F64LE, v, 1 + pick(3));
      }
    }
  }
  void string_attr(hid_t obj, const char* name, const std::string& good) {
    switch (choice(6)) {
      case 0: h5::write_attr(obj, name, good); break;
      case 1: h5::write_attr(obj, name, any_string()); break;
      case 2: break;
      case 3: h5::write_attr(obj, name, any_int()); break;
      case 4: fixed_string_attr(obj, name, pick(2) ? good : any_string()); break;
      default: {
        const std::string s = any_string();
        const char* v[3] = {good.c_str(), s.c_str(), good.c_str()};
        h5::Handle t(H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
        H5_CHECK(H5Tset_size(t.id(), H5T_VARIABLE));
        array_attr(obj, name, t.id(), v, 1 + pick(3));
      }
    }
  }

  void pieces(hid_t tg, int vocab) {
    std::vector<std::string> good;
    for (int i = 0; i < vocab; ++i) good.push_back(std::string(1, static_cast<char>('a' + i)));
    switch (choice(5)) {
      case 0: h5::write_strings(tg, "pieces", good); break;
      case 1: {
        std::vector<std::string> any(pick(8));
        for (auto& s : any) s = any_string();
        h5::write_strings(tg, "pieces", any);
        break;
      }
      case 2: break;
      case 3: {
        const float x[2] = {1, 2};
        h5::write_f32(tg, "pieces", x, {2});
        break;
      }
      default: {  // fixed-length strings
        h5::Handle t(H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
        H5_CHECK(H5Tset_size(t.id(), 1));
        const hsize_t n = good.size();
        h5::Handle space(H5_CHECK(H5Screate_simple(1, &n, nullptr)), H5Sclose);
        h5::Handle d(H5_CHECK(H5Dcreate2(tg, "pieces", t.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                     H5Dclose);
        std::string flat;
        for (const auto& s : good) flat += s;
        H5_CHECK(H5Dwrite(d.id(), t.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, flat.data()));
      }
    }
  }

  void tensors(hid_t g, const ModelConfig& c) {
    for (const ParamSpec& s : param_specs(c)) tensor(g, s.name, s.shape);
    if (!keep()) {
      const float x = 1;
      h5::write_f32(g, any_string().empty() ? "extra" : "model.extra.weight", &x, {1});
    }
  }

  void tensor(hid_t g, const std::string& name, std::vector<int64_t> shape) {
    const int what = choice(6);
    if (what == 1) return;  // missing tensor
    if (what == 2) {        // another shape
      shape.resize(pick(4));
      for (auto& d : shape) d = pick(7);
    }
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    std::vector<float> data(n);
    for (size_t i = 0; i < n; ++i) data[i] = 0.01f * static_cast<float>(i % 7) - 0.02f;
    if (what == 3 && n > 0) {  // a non-finite value, with a matching checksum
      const float bad[] = {std::nanf(""), INFINITY, -INFINITY};
      data[pick(static_cast<int>(std::min<size_t>(n, 1 << 20)))] = bad[pick(3)];
    }
    if (what == 4) {  // integers or doubles where float32 belongs
      std::vector<hsize_t> dims(shape.begin(), shape.end());
      h5::Handle space(H5_CHECK(dims.empty() ? H5Screate(H5S_SCALAR)
                                             : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
                       H5Sclose);
      const hid_t type = pick(2) ? H5T_STD_I32LE : H5T_IEEE_F64LE;
      h5::Handle d(H5_CHECK(H5Dcreate2(g, name.c_str(), type, space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                   H5Dclose);
      H5_CHECK(H5Dwrite(d.id(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()));
      int_attr(d.id(), "crc32", crc32(data.data(), n * sizeof(float)));
      return;
    }
    h5::write_f32(g, name, data.data(), shape);
    h5::Handle d(H5_CHECK(H5Dopen2(g, name.c_str(), H5P_DEFAULT)), H5Dclose);
    int_attr(d.id(), "crc32", crc32(data.data(), n * sizeof(float)));
  }

  FuzzedDataProvider& fdp_;
};

}  // namespace opd::fuzz
