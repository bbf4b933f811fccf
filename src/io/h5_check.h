#pragma once
#include <hdf5.h>

#include "core/error.h"

// HDF5 returns a negative value (herr_t or hid_t) on failure.
#define H5_CHECK(call)                                                                  \
  ([&]() {                                                                              \
    auto opd_h5_rc_ = (call);                                                           \
    if (opd_h5_rc_ < 0) ::opd::fail_call(#call, "HDF5 error", __FILE__, __LINE__);       \
    return opd_h5_rc_;                                                                  \
  }())
