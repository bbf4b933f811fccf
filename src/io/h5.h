// A thin RAII layer over the HDF5 C API: handles that close themselves, and typed reads and
// writes of attributes and datasets whose errors name the file and object at fault.
#pragma once
#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"

namespace opd::h5 {

class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle();
  hid_t id() const { return id_; }
  hid_t release();  // the id, no longer closed by this handle

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// An open file; `path` is kept for error messages.
class File {
 public:
  static File create(const std::string& path);     // truncates
  static File open_read(const std::string& path);  // error naming the path when missing or not HDF5
  static File open_rw(const std::string& path);    // an existing file, to add to
  // Collective over `comm`: every rank opens the same file through MPI-IO (parallel HDF5); every
  // later create, attribute write, flush and close on it is collective too. Such a file closes only
  // once every group and dataset in it is closed (HDF5's H5F_CLOSE_SEMI): close() fails otherwise.
  static File create_parallel(const std::string& path, MPI_Comm comm);
  hid_t id() const { return h_.id(); }
  const std::string& path() const { return path_; }
  void flush();
  void close();  // an error naming the file when HDF5 cannot close it

 private:
  Handle h_;
  std::string path_;
};

Handle create_group(hid_t loc, const std::string& name);
Handle open_group(const File& f, const std::string& name);  // error naming file and group when missing
bool exists(hid_t loc, const std::string& name);
std::vector<std::string> children(hid_t group);              // names of links in a group

void write_attr(hid_t obj, const std::string& name, int64_t value);
void write_attr(hid_t obj, const std::string& name, double value);
void write_attr(hid_t obj, const std::string& name, const std::string& value);
// Now in UTC, ISO 8601 ("2026-12-07T23:40:00Z"): the value of a file's "created_utc" attribute.
std::string utc_now();
// `where` names the object in errors, e.g. "model.h5:/model/config".
int64_t read_attr_int(hid_t obj, const std::string& name, const std::string& where);
double read_attr_double(hid_t obj, const std::string& name, const std::string& where);
std::string read_attr_string(hid_t obj, const std::string& name, const std::string& where);
bool has_attr(hid_t obj, const std::string& name);

// A failed HDF5 call deep in a read names the call, not the file: rethrows `e` with `path` in
// front unless its message already names it.
[[noreturn]] void rethrow_naming(const std::string& path, const Error& e);

// Datasets of little-endian float32 / int32 / float64, full shape, C order.
void write_f32(hid_t loc, const std::string& name, const float* data, const std::vector<int64_t>& shape);
void write_i32(hid_t loc, const std::string& name, const std::vector<int32_t>& values);  // 1-D
void write_strings(hid_t loc, const std::string& name, const std::vector<std::string>& values);
// Collective over the ranks of a parallel file: every rank creates the same full-shape float32
// dataset, then writes its block in one collective transfer: `count` elements from `start` (C
// order, dense in `local`); a rank with nothing to write passes a count holding a zero.
void write_f32_collective(hid_t loc, const std::string& name, const std::vector<int64_t>& shape, const float* local,
                          const std::vector<int64_t>& start, const std::vector<int64_t>& count);
// Whether the file holding `obj` was opened through MPI-IO (File::create_parallel).
bool is_parallel(hid_t obj);
std::vector<int64_t> dataset_shape(hid_t loc, const std::string& name, const std::string& where);
void read_f32(hid_t loc, const std::string& name, float* data, size_t n, const std::string& where);
// The block [start, start + count) of a float32 dataset (any driver; an independent read).
void read_f32_block(hid_t loc, const std::string& name, float* data, const std::vector<int64_t>& start,
                    const std::vector<int64_t>& count, const std::string& where);
std::vector<double> read_f64(hid_t loc, const std::string& name, const std::string& where);
std::vector<int32_t> read_i32(hid_t loc, const std::string& name, const std::string& where);
std::vector<std::string> read_strings(hid_t loc, const std::string& name, const std::string& where);

}  // namespace opd::h5
