// Whether a usable CUDA device is present; includable from plain C++.
#pragma once

namespace opd::cuda {

// False on any CUDA error (e.g. no driver: cudaErrorInsufficientDriver) or when no device exists,
// so GPU tests and code paths can skip cleanly on CPU-only machines.
bool device_available();

}  // namespace opd::cuda
