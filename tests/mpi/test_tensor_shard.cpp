// Collective parallel-HDF5 writes of tensor shards (docs/ARCHITECTURE.md §6) on 2-4 ranks: one file that
// the serial reader, h5py and any other split read back, with the crc32 a serial write gives.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/python.h"
#include "core/crc32.h"
#include "io/model_file.h"
#include "parallel/mpi_communicator.h"

namespace opd {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

// A fresh directory made by rank 0 and named to every rank (they share the machine's /tmp).
std::string shared_temp_dir(Communicator& w) {
  char buf[512] = {0};
  if (w.rank() == 0) {
    const std::string pattern = (fs::temp_directory_path() / "opd_shard_XXXXXX").string();
    std::strncpy(buf, pattern.c_str(), sizeof(buf) - 1);
    if (mkdtemp(buf) == nullptr) buf[0] = '\0';
  }
  w.broadcast(buf, sizeof(buf), 0);
  return buf;
}

// Rank 0 alone runs `check`; a failure in it must not keep rank 0 from the barrier the others wait at.
void on_rank0_then_barrier(Communicator& w, const std::function<void()>& check) {
  if (w.rank() == 0) {
    try {
      check();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "rank 0: " << e.what();
    }
  }
  w.barrier();
}

int64_t count_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The block [offset, offset + extent) along `dim` of a row-major tensor, by walking every index of
// the full tensor (independent of copy_shard_out, which the reads use).
std::vector<float> block_of(const std::vector<float>& full, const std::vector<int64_t>& shape, int dim, int64_t offset,
                            int64_t extent) {
  if (dim < 0) return full;
  std::vector<float> out;
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t i = 0; i < count_of(shape); ++i) {
    if (index[dim] >= offset && index[dim] < offset + extent) out.push_back(full[i]);
    for (int k = static_cast<int>(shape.size()) - 1; k >= 0 && ++index[k] == shape[k]; --k) index[k] = 0;
  }
  return out;
}

// One rank's block of a tensor under any split, read independently of the writers' split: the
// whole tensor read and verified as read_tensor does, then the block copied out. (opd itself reads
// a TP model's blocks collectively, read_tensor_blocks; this checks the file at other splits.)
void read_tensor_shard(hid_t group, const std::string& name, float* local, const TensorShard& shard,
                       const std::string& where) {
  shard.validate(where + "/" + name);
  std::vector<float> full(static_cast<size_t>(shard.full_size()));
  read_tensor(group, name, full.data(), shard.full_shape, where);
  copy_shard_out(full.data(), shard, local);
}

struct Case {
  std::string name;
  std::vector<int64_t> shape;
  int split_dim;
};

// Row split (7 rows: uneven over 2-4 ranks), column split, a middle dimension, a row split that
// leaves ranks empty at 3-4 ranks, and a replicated norm weight.
const std::vector<Case> kCases = {
    {"rows", {7, 5}, 0}, {"cols", {4, 9}, 1}, {"cube", {3, 5, 2}, 1}, {"thin", {2, 3}, 0}, {"norm", {6}, -1}};

std::vector<float> values(const Case& c, size_t i) {
  return testing::random_vector<float>(count_of(c.shape), 100 + static_cast<uint32_t>(i));
}

// Every rank writes its shard of every case into `path`, collectively.
void write_sharded(const std::string& path, MpiCommunicator& w) {
  h5::File f = h5::File::create_parallel(path, w.handle());
  {
    h5::Handle g = h5::create_group(f.id(), "model");
    for (size_t i = 0; i < kCases.size(); ++i) {
      const Case& c = kCases[i];
      const TensorShard s = TensorShard::block(c.shape, c.split_dim, w.rank(), w.size());
      const std::vector<float> local = block_of(values(c, i), c.shape, c.split_dim, s.offset, s.extent);
      EXPECT_EQ(static_cast<int64_t>(local.size()), s.local_size());
      write_tensor_shard(g.id(), c.name, local.data(), s, w.handle());
    }
  }
  f.close();
}

TEST(TensorShard, CollectiveWriteReadsBackSeriallyWithTheSerialChecksum) {
  auto w = MpiCommunicator::world();
  const std::string dir = shared_temp_dir(*w);
  ASSERT_FALSE(dir.empty());
  write_sharded(dir + "/sharded.h5", *w);
  on_rank0_then_barrier(*w, [&] {
    {
      h5::File serial = h5::File::create(dir + "/serial.h5");
      h5::Handle g = h5::create_group(serial.id(), "model");
      for (size_t i = 0; i < kCases.size(); ++i) write_tensor(g.id(), kCases[i].name, values(kCases[i], i).data(), kCases[i].shape);
    }
    h5::File sharded = h5::File::open_read(dir + "/sharded.h5"), serial = h5::File::open_read(dir + "/serial.h5");
    h5::Handle gs = h5::open_group(sharded, "model"), gr = h5::open_group(serial, "model");
    for (size_t i = 0; i < kCases.size(); ++i) {
      const Case& c = kCases[i];
      const std::vector<float> full = values(c, i);
      std::vector<float> got(full.size(), -9.0f);
      read_tensor(gs.id(), c.name, got.data(), c.shape, sharded.path() + ":/model");
      EXPECT_EQ(got, full) << c.name;
      h5::Handle ds(H5Dopen2(gs.id(), c.name.c_str(), H5P_DEFAULT), H5Dclose);
      h5::Handle dr(H5Dopen2(gr.id(), c.name.c_str(), H5P_DEFAULT), H5Dclose);
      const int64_t crc = h5::read_attr_int(ds.id(), "crc32", c.name);
      EXPECT_EQ(crc, h5::read_attr_int(dr.id(), "crc32", c.name)) << c.name;
      EXPECT_EQ(crc, static_cast<int64_t>(crc32(full.data(), full.size() * sizeof(float)))) << c.name;
    }
  });
  if (w->rank() == 0) fs::remove_all(dir);
}

TEST(TensorShard, EveryRankReadsItsShardUnderAnotherSplit) {
  auto w = MpiCommunicator::world();
  const std::string dir = shared_temp_dir(*w);
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/sharded.h5";
  write_sharded(path, *w);
  h5::File f = h5::File::open_read(path);
  h5::Handle g = h5::open_group(f, "model");
  // One more part than there are writers, along another dimension, and whole.
  const int parts = w->size() + 1;
  for (size_t i = 0; i < kCases.size(); ++i) {
    const Case& c = kCases[i];
    const std::vector<float> full = values(c, i);
    const int other = c.shape.size() == 1 ? 0 : (c.split_dim == 0 ? 1 : 0);
    for (int dim : {other, -1}) {
      const TensorShard s = TensorShard::block(c.shape, dim, w->rank(), parts);
      std::vector<float> got(s.local_size(), -9.0f);
      read_tensor_shard(g.id(), c.name, got.data(), s, path + ":/model");
      EXPECT_EQ(got, block_of(full, c.shape, dim, s.offset, s.extent)) << c.name << " split along " << dim;
    }
  }
  f.close();
  w->barrier();
  if (w->rank() == 0) fs::remove_all(dir);
}

// h5py (Debian's python3-h5py) reads what the ranks wrote, crc32 included.
TEST(TensorShard, ReadableByH5py) {
  ASSERT_EQ(testing::python_lacks("h5py"), "");  // the same answer on every rank
  auto w = MpiCommunicator::world();
  const std::string dir = shared_temp_dir(*w);
  ASSERT_FALSE(dir.empty());
  write_sharded(dir + "/sharded.h5", *w);
  on_rank0_then_barrier(*w, [&] {
    const std::string py = dir + "/check.py";
    std::FILE* s = std::fopen(py.c_str(), "w");
    ASSERT_NE(s, nullptr);
    std::fputs(
        "import h5py, zlib, sys\n"
        "g = h5py.File(sys.argv[1], 'r')['model']\n"
        "for name, shape in [('cols', (4, 9)), ('cube', (3, 5, 2)), ('norm', (6,))]:\n"
        "    d = g[name]\n"
        "    assert d.shape == shape and d.dtype == '<f4', name\n"
        "    assert zlib.crc32(d[()].tobytes()) == int(d.attrs['crc32']), name\n",
        s);
    std::fclose(s);
    const int rc = std::system((testing::python() + " " + py + " " + dir + "/sharded.h5").c_str());
    EXPECT_EQ(rc, 0) << "h5py could not read the collectively written file";
  });
  if (w->rank() == 0) fs::remove_all(dir);
}

TEST(TensorShard, AFlippedValueGivesTheChecksumErrorOnEveryRank) {
  auto w = MpiCommunicator::world();
  const std::string dir = shared_temp_dir(*w);
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/sharded.h5";
  write_sharded(path, *w);
  on_rank0_then_barrier(*w, [&] {  // plain HDF5: element (3, 2) of "cols" gets one bit flipped
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t d = H5Dopen2(f, "model/cols", H5P_DEFAULT);
    std::vector<float> v(4 * 9);
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    uint32_t bits;
    std::memcpy(&bits, &v[3 * 9 + 2], 4);
    bits ^= 1u << 7;
    std::memcpy(&v[3 * 9 + 2], &bits, 4);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    H5Dclose(d);
    H5Fclose(f);
  });
  h5::File f = h5::File::open_read(path);
  h5::Handle g = h5::open_group(f, "model");
  const TensorShard s = TensorShard::block({4, 9}, 0, w->rank(), w->size());
  std::vector<float> got(s.local_size());
  expect_error([&] { read_tensor_shard(g.id(), "cols", got.data(), s, path + ":/model"); },
               {path + ":/model/cols: checksum mismatch", "the file is corrupt"});
  if (w->rank() == 0) {
    std::vector<float> all(4 * 9);
    expect_error([&] { read_tensor(g.id(), "cols", all.data(), {4, 9}, path + ":/model"); },
                 {path + ":/model/cols: checksum mismatch"});
  }
  // The other tensors are intact.
  std::vector<float> rows(7 * 5);
  read_tensor_shard(g.id(), "rows", rows.data(), TensorShard::block({7, 5}, -1, 0, 1), path + ":/model");
  EXPECT_EQ(rows, values(kCases[0], 0));
  f.close();
  w->barrier();
  if (w->rank() == 0) fs::remove_all(dir);
}

// Every rank reaches the same verdict from the gathered shards, so a bad call is an error on all
// ranks instead of a hang in a collective that some never enter.
TEST(TensorShard, BadShardsAreTheSameErrorOnEveryRank) {
  auto w = MpiCommunicator::world();
  const std::string dir = shared_temp_dir(*w);
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/bad.h5";
  const int n = w->size();
  std::vector<float> local(3, 1.0f);
  {
    h5::File f = h5::File::create_parallel(path, w->handle());
    TensorShard overlap;  // every rank claims row 0
    overlap.full_shape = {n, 3};
    overlap.split_dim = 0;
    overlap.extent = 1;
    expect_error([&] { write_tensor_shard(f.id(), "overlap", local.data(), overlap, w->handle()); },
                 {path + ":/overlap", "rank 1's shard starts at 0 of dimension 0, expected 1"});
    TensorShard s = TensorShard::block({n, 3}, 0, w->rank(), n);
    s.full_shape[1] = w->rank() == n - 1 ? 4 : 3;  // the last rank disagrees on the shape
    expect_error([&] { write_tensor_shard(f.id(), "shape", local.data(), s, w->handle()); },
                 {str("rank ", n - 1, "'s shard has a full shape or split dimension other than rank 0's")});
    s = TensorShard::block({n + 1, 3}, 0, w->rank(), n);  // tiles n rows of n + 1
    s.full_shape[0] = n + 1;
    s.extent = 1;
    s.offset = w->rank();
    expect_error([&] { write_tensor_shard(f.id(), "short", local.data(), s, w->handle()); },
                 {str("the shards cover ", n, " of the ", n + 1, " along dimension 0")});
    s = TensorShard::block({n, 3}, 0, w->rank(), n);
    expect_error([&] { write_tensor_shard(f.id(), "null", w->rank() == 0 ? nullptr : local.data(), s, w->handle()); },
                 {"rank 0 passed no data for its shard"});
    // After the errors the file still takes a good collective write.
    write_tensor_shard(f.id(), "good", local.data(), s, w->handle());
    f.close();
  }
  {
    // A file each rank opened on its own (serial driver) cannot take a collective write.
    h5::File own = h5::File::create(str(dir, "/own_", w->rank(), ".h5"));
    const TensorShard s = TensorShard::block({n, 3}, 0, w->rank(), n);
    expect_error([&] { write_tensor_shard(own.id(), "t", local.data(), s, w->handle()); },
                 {"not open through MPI-IO on every rank", "create_parallel"});
  }
  expect_error([&] { h5::File::create_parallel(dir + "/no/such/dir.h5", w->handle()); },
               {dir + "/no/such/dir.h5: cannot create HDF5 file with MPI-IO"});
  on_rank0_then_barrier(*w, [&] {
    h5::File f = h5::File::open_read(path);
    std::vector<float> all(n * 3);
    read_tensor(f.id(), "good", all.data(), {n, 3}, path);
    EXPECT_EQ(all, std::vector<float>(n * 3, 1.0f));
    EXPECT_FALSE(h5::exists(f.id(), "overlap"));  // nothing was created for the bad calls
    std::vector<float> got(4);
    expect_error([&] { read_tensor_shard(f.id(), "good", got.data(), TensorShard::block({n, 4}, 1, 0, 1), path); },
                 {path, "dataset 'good' has the wrong shape"});
    TensorShard outside = TensorShard::block({n, 3}, 1, 0, 1);
    outside.offset = 2;
    expect_error([&] { read_tensor_shard(f.id(), "good", got.data(), outside, path); },
                 {path + "/good: the block [2, 5) is outside dimension 1 of length 3"});
  });
  if (w->rank() == 0) fs::remove_all(dir);
}

}  // namespace
}  // namespace opd
