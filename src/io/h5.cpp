#include "io/h5.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "io/h5_check.h"

namespace opd::h5 {

namespace {
// HDF5 prints its own error stack to stderr by default; opd reports errors itself, once.
void silence_hdf5() {
  static bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

Handle dataset(hid_t loc, const std::string& name, const std::string& where) {
  OPD_REQUIRE(exists(loc, name), where, ": missing dataset '", name, "'");
  hid_t d = H5Dopen2(loc, name.c_str(), H5P_DEFAULT);
  OPD_REQUIRE(d >= 0, where, ": cannot open dataset '", name, "'");
  return Handle(d, H5Dclose);
}

// Every attribute opd reads is one value: an array (as h5py writes for a numpy array) would be
// read past the end of the single value it is read into.
Handle attribute(hid_t obj, const std::string& name, const std::string& where) {
  OPD_REQUIRE(has_attr(obj, name), where, ": missing attribute '", name, "'");
  Handle a(H5_CHECK(H5Aopen(obj, name.c_str(), H5P_DEFAULT)), H5Aclose);
  Handle space(H5_CHECK(H5Aget_space(a.id())), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.id());
  OPD_REQUIRE(n == 1, where, ": attribute '", name, "' must be a single value, it holds ", n);
  return a;
}

Handle string_type(bool variable) {
  hid_t t = H5_CHECK(H5Tcopy(H5T_C_S1));
  H5_CHECK(H5Tset_size(t, variable ? H5T_VARIABLE : 1));
  H5_CHECK(H5Tset_cset(t, H5T_CSET_UTF8));
  return Handle(t, H5Tclose);
}

void write_attr_raw(hid_t obj, const std::string& name, hid_t type, const void* value) {
  if (has_attr(obj, name)) H5_CHECK(H5Adelete(obj, name.c_str()));
  Handle space(H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  Handle attr(H5_CHECK(H5Acreate2(obj, name.c_str(), type, space.id(), H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
  H5_CHECK(H5Awrite(attr.id(), type, value));
}

Handle simple_space(const std::vector<int64_t>& shape) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  if (dims.empty()) return Handle(H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  return Handle(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)), H5Sclose);
}

size_t element_count(hid_t d) {
  Handle space(H5_CHECK(H5Dget_space(d)), H5Sclose);
  hssize_t n = H5Sget_simple_extent_npoints(space.id());
  return n < 0 ? 0 : static_cast<size_t>(n);
}

void require_class(hid_t d, H5T_class_t cls, size_t size, const std::string& where, const std::string& name,
                   const char* expected) {
  Handle t(H5_CHECK(H5Dget_type(d)), H5Tclose);
  OPD_REQUIRE(H5Tget_class(t.id()) == cls && H5Tget_size(t.id()) == size, where, ": dataset '", name,
              "' must hold ", expected);
}
}  // namespace

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0 && close_) close_(id_);
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
  }
  return *this;
}

hid_t Handle::release() {
  const hid_t id = id_;
  id_ = -1;
  return id;
}

Handle::~Handle() {
  if (id_ >= 0 && close_) close_(id_);
}

File File::create(const std::string& path) {
  silence_hdf5();
  File f;
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  OPD_REQUIRE(id >= 0, path, ": cannot create HDF5 file (is the directory there and writable?)");
  f.h_ = Handle(id, H5Fclose);
  f.path_ = path;
  return f;
}

File File::open_read(const std::string& path) {
  silence_hdf5();
  std::FILE* probe = std::fopen(path.c_str(), "rb");
  OPD_REQUIRE(probe != nullptr, path, ": no such file or not readable");
  std::fclose(probe);
  OPD_REQUIRE(H5Fis_hdf5(path.c_str()) > 0, path, ": not an HDF5 file");
  File f;
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) {
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(path, ec);
    throw Error(str(path, ": cannot open HDF5 file: truncated or corrupt (", ec ? 0 : bytes, " bytes)"));
  }
  f.h_ = Handle(id, H5Fclose);
  f.path_ = path;
  return f;
}

File File::open_rw(const std::string& path) {
  silence_hdf5();
  File f;
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  OPD_REQUIRE(id >= 0, path, ": cannot open the HDF5 file for writing");
  f.h_ = Handle(id, H5Fclose);
  f.path_ = path;
  return f;
}

File File::create_parallel(const std::string& path, MPI_Comm comm) {
  silence_hdf5();
  Handle fapl(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  H5_CHECK(H5Pset_fapl_mpio(fapl.id(), comm, MPI_INFO_NULL));
  File f;
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id());
  OPD_REQUIRE(id >= 0, path, ": cannot create HDF5 file with MPI-IO (is the directory there, writable and shared by "
              "every rank?)");
  f.h_ = Handle(id, H5Fclose);
  f.path_ = path;
  return f;
}

void File::flush() { H5_CHECK(H5Fflush(h_.id(), H5F_SCOPE_GLOBAL)); }

void File::close() {
  const hid_t id = h_.release();
  OPD_REQUIRE(id < 0 || H5Fclose(id) >= 0, path_,
              ": cannot close the HDF5 file (for a parallel file: is a group or dataset in it still open?)");
}

Handle create_group(hid_t loc, const std::string& name) {
  return Handle(H5_CHECK(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
}

Handle open_group(const File& f, const std::string& name) {
  OPD_REQUIRE(exists(f.id(), name), f.path(), ": missing group '", name, "'");
  return Handle(H5_CHECK(H5Gopen2(f.id(), name.c_str(), H5P_DEFAULT)), H5Gclose);
}

bool exists(hid_t loc, const std::string& name) {
  // Check each component so a missing parent is "absent", not an error.
  size_t start = name[0] == '/' ? 1 : 0;
  while (true) {
    size_t slash = name.find('/', start);
    std::string prefix = name.substr(0, slash);
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

std::vector<std::string> children(hid_t group) {
  std::vector<std::string> names;
  H5_CHECK(H5Literate(
      group, H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
        static_cast<std::vector<std::string>*>(out)->emplace_back(name);
        return 0;
      },
      &names));
  return names;
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

void rethrow_naming(const std::string& path, const Error& e) {
  const std::string what = e.what();
  if (what.find(path) != std::string::npos) throw e;
  throw Error(str(path, ": ", what, " (is the file corrupt?)"));
}

void write_attr(hid_t obj, const std::string& name, int64_t value) {
  write_attr_raw(obj, name, H5T_STD_I64LE, &value);
}
void write_attr(hid_t obj, const std::string& name, double value) {
  write_attr_raw(obj, name, H5T_IEEE_F64LE, &value);
}
std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

void write_attr(hid_t obj, const std::string& name, const std::string& value) {
  Handle t = string_type(true);
  const char* p = value.c_str();
  write_attr_raw(obj, name, t.id(), &p);
}

int64_t read_attr_int(hid_t obj, const std::string& name, const std::string& where) {
  Handle a = attribute(obj, name, where);
  Handle t(H5_CHECK(H5Aget_type(a.id())), H5Tclose);
  OPD_REQUIRE(H5Tget_class(t.id()) == H5T_INTEGER, where, ": attribute '", name, "' must be an integer");
  int64_t v = 0;
  H5_CHECK(H5Aread(a.id(), H5T_NATIVE_INT64, &v));
  return v;
}

double read_attr_double(hid_t obj, const std::string& name, const std::string& where) {
  Handle a = attribute(obj, name, where);
  Handle t(H5_CHECK(H5Aget_type(a.id())), H5Tclose);
  const H5T_class_t cls = H5Tget_class(t.id());
  OPD_REQUIRE(cls == H5T_FLOAT || cls == H5T_INTEGER, where, ": attribute '", name, "' must be a number");
  double v = 0;
  H5_CHECK(H5Aread(a.id(), H5T_NATIVE_DOUBLE, &v));
  return v;
}

std::string read_attr_string(hid_t obj, const std::string& name, const std::string& where) {
  Handle a = attribute(obj, name, where);
  Handle t(H5_CHECK(H5Aget_type(a.id())), H5Tclose);
  OPD_REQUIRE(H5Tget_class(t.id()) == H5T_STRING, where, ": attribute '", name, "' must be a string");
  if (H5Tis_variable_str(t.id()) > 0) {
    Handle mt = string_type(true);
    char* p = nullptr;
    H5_CHECK(H5Aread(a.id(), mt.id(), &p));
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  size_t size = H5Tget_size(t.id());
  std::string s(size, '\0');
  H5_CHECK(H5Aread(a.id(), t.id(), s.data()));
  return s.substr(0, s.find('\0'));
}

void write_f32(hid_t loc, const std::string& name, const float* data, const std::vector<int64_t>& shape) {
  Handle space = simple_space(shape);
  Handle d(H5_CHECK(H5Dcreate2(loc, name.c_str(), H5T_IEEE_F32LE, space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
           H5Dclose);
  H5_CHECK(H5Dwrite(d.id(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

void write_f32_collective(hid_t loc, const std::string& name, const std::vector<int64_t>& shape, const float* local,
                          const std::vector<int64_t>& start, const std::vector<int64_t>& count) {
  OPD_REQUIRE(start.size() == shape.size() && count.size() == shape.size(), "dataset '", name, "': a block of ",
              count.size(), " dimensions in a tensor of ", shape.size());
  const bool none = std::find(count.begin(), count.end(), 0) != count.end();
  OPD_REQUIRE(none || local != nullptr, "dataset '", name, "': no data for a block of this rank");
  Handle file_space = simple_space(shape);
  // Every element is written by some rank: filling the dataset first would write it twice.
  Handle dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  H5_CHECK(H5Pset_fill_time(dcpl.id(), H5D_FILL_TIME_NEVER));
  Handle d(H5_CHECK(H5Dcreate2(loc, name.c_str(), H5T_IEEE_F32LE, file_space.id(), H5P_DEFAULT, dcpl.id(),
                               H5P_DEFAULT)),
           H5Dclose);
  Handle mem_space;
  if (none) {
    H5_CHECK(H5Sselect_none(file_space.id()));
    mem_space = Handle(H5_CHECK(H5Scopy(file_space.id())), H5Sclose);
  } else {
    std::vector<hsize_t> at(start.begin(), start.end()), n(count.begin(), count.end());
    H5_CHECK(H5Sselect_hyperslab(file_space.id(), H5S_SELECT_SET, at.data(), nullptr, n.data(), nullptr));
    mem_space = simple_space(count);
  }
  Handle dxpl(H5_CHECK(H5Pcreate(H5P_DATASET_XFER)), H5Pclose);
  if (is_parallel(loc)) H5_CHECK(H5Pset_dxpl_mpio(dxpl.id(), H5FD_MPIO_COLLECTIVE));
  // HDF5 refuses a null buffer even when this rank selects nothing.
  const float nothing = 0;
  H5_CHECK(H5Dwrite(d.id(), H5T_NATIVE_FLOAT, mem_space.id(), file_space.id(), dxpl.id(),
                    none ? &nothing : local));
}

bool is_parallel(hid_t obj) {
  Handle file(H5_CHECK(H5Iget_file_id(obj)), H5Fclose);
  Handle fapl(H5_CHECK(H5Fget_access_plist(file.id())), H5Pclose);
  return H5_CHECK(H5Pget_driver(fapl.id())) == H5FD_MPIO;
}

void write_i32(hid_t loc, const std::string& name, const std::vector<int32_t>& values) {
  Handle space = simple_space({static_cast<int64_t>(values.size())});
  Handle d(H5_CHECK(H5Dcreate2(loc, name.c_str(), H5T_STD_I32LE, space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
           H5Dclose);
  if (!values.empty()) H5_CHECK(H5Dwrite(d.id(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()));
}

void write_strings(hid_t loc, const std::string& name, const std::vector<std::string>& values) {
  Handle t = string_type(true);
  Handle space = simple_space({static_cast<int64_t>(values.size())});
  Handle d(H5_CHECK(H5Dcreate2(loc, name.c_str(), t.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
           H5Dclose);
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  H5_CHECK(H5Dwrite(d.id(), t.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()));
}

std::vector<int64_t> dataset_shape(hid_t loc, const std::string& name, const std::string& where) {
  Handle d = dataset(loc, name, where);
  Handle space(H5_CHECK(H5Dget_space(d.id())), H5Sclose);
  int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.id()));
  std::vector<hsize_t> dims(rank);
  H5_CHECK(H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr));
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void read_f32(hid_t loc, const std::string& name, float* data, size_t n, const std::string& where) {
  Handle d = dataset(loc, name, where);
  require_class(d.id(), H5T_FLOAT, 4, where, name, "float32");
  OPD_REQUIRE(element_count(d.id()) == n, where, ": dataset '", name, "' has ", element_count(d.id()),
              " elements, expected ", n);
  H5_CHECK(H5Dread(d.id(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

void read_f32_block(hid_t loc, const std::string& name, float* data, const std::vector<int64_t>& start,
                    const std::vector<int64_t>& count, const std::string& where) {
  Handle d = dataset(loc, name, where);
  require_class(d.id(), H5T_FLOAT, 4, where, name, "float32");
  Handle file_space(H5_CHECK(H5Dget_space(d.id())), H5Sclose);
  std::vector<hsize_t> at(start.begin(), start.end()), n(count.begin(), count.end());
  H5_CHECK(H5Sselect_hyperslab(file_space.id(), H5S_SELECT_SET, at.data(), nullptr, n.data(), nullptr));
  Handle mem_space = simple_space(count);
  H5_CHECK(H5Dread(d.id(), H5T_NATIVE_FLOAT, mem_space.id(), file_space.id(), H5P_DEFAULT, data));
}

std::vector<double> read_f64(hid_t loc, const std::string& name, const std::string& where) {
  Handle d = dataset(loc, name, where);
  Handle t(H5_CHECK(H5Dget_type(d.id())), H5Tclose);
  OPD_REQUIRE(H5Tget_class(t.id()) == H5T_FLOAT, where, ": dataset '", name, "' must hold floats");
  std::vector<double> v(element_count(d.id()));
  H5_CHECK(H5Dread(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()));
  return v;
}

std::vector<int32_t> read_i32(hid_t loc, const std::string& name, const std::string& where) {
  Handle d = dataset(loc, name, where);
  Handle t(H5_CHECK(H5Dget_type(d.id())), H5Tclose);
  OPD_REQUIRE(H5Tget_class(t.id()) == H5T_INTEGER, where, ": dataset '", name, "' must hold integers");
  std::vector<int32_t> v(element_count(d.id()));
  H5_CHECK(H5Dread(d.id(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()));
  return v;
}

std::vector<std::string> read_strings(hid_t loc, const std::string& name, const std::string& where) {
  Handle d = dataset(loc, name, where);
  Handle t(H5_CHECK(H5Dget_type(d.id())), H5Tclose);
  OPD_REQUIRE(H5Tget_class(t.id()) == H5T_STRING && H5Tis_variable_str(t.id()) > 0, where, ": dataset '", name,
              "' must hold variable-length strings");
  const size_t n = element_count(d.id());
  Handle mt = string_type(true);
  std::vector<char*> ptrs(n, nullptr);
  H5_CHECK(H5Dread(d.id(), mt.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()));
  std::vector<std::string> out;
  for (char* p : ptrs) {
    out.emplace_back(p ? p : "");
    H5free_memory(p);
  }
  return out;
}

}  // namespace opd::h5
