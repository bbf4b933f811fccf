// cuDNN fused SDPA forward through the cudnn_frontend graph API, on our [B, T, heads, D] layouts
// expressed as strides of cuDNN's [B, heads, T, D] view.
//
// cuDNN is loaded at run time (the frontend's dynamic-loading mode), not linked: opd then starts on
// machines without cuDNN, takes whichever cuDNN 9 the GPU machine has (PyTorch's wheel, say), and
// a missing or unsuitable one becomes an opd::Error in the bench's note instead of a loader error.
#include "bench/cudnn_sdpa.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "core/error.h"

#ifdef OPD_WITH_CUDNN_SDPA
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING 1
#include <cuda_runtime.h>
#include <cudnn.h>
#include <dlfcn.h>

#include <cudnn_frontend.h>
#include <mutex>

#include "kernels/cuda/cuda_check.cuh"

// A cuDNN backend call (through the frontend's loader) and a frontend step: a failure throws
// opd::Error naming call, file, line.
#define CUDNN_CHECK(call)                                                                                   \
  do {                                                                                                      \
    cudnnStatus_t opd_cudnn_rc_ = (call);                                                                   \
    if (opd_cudnn_rc_ != CUDNN_STATUS_SUCCESS)                                                              \
      ::opd::fail_call(#call, cudnn_frontend::detail::get_error_string(opd_cudnn_rc_), __FILE__, __LINE__); \
  } while (0)
#define CUDNN_FE_CHECK(call)                                                                \
  do {                                                                                      \
    auto opd_fe_rc_ = (call);                                                               \
    if (!opd_fe_rc_.is_good())                                                              \
      ::opd::fail_call(#call, "cudnn_frontend: " + opd_fe_rc_.get_message(), __FILE__, __LINE__); \
  } while (0)
#endif

namespace opd::bench {

std::string cudnn_sdpa_missing() {
#if defined(OPD_WITH_CUDNN_SDPA)
  return "";
#elif !defined(OPD_WITH_CUDA)
  return "not built (opd was built without CUDA)";
#else
  std::string why;
#ifdef OPD_CUDNN_SDPA_NO_HEADERS
  why += "cudnn_frontend.h not found at configure time: tools/install-deps installs the nvidia-cudnn-frontend wheel";
#endif
#ifdef OPD_CUDNN_SDPA_NO_CUDNN_H
  why += std::string(why.empty() ? "" : "; ") + "cudnn.h not found at configure time";
#endif
  return "not built (" + why + ")";
#endif
}

#ifdef OPD_WITH_CUDNN_SDPA
}  // namespace opd::bench

// The library handle the frontend's dynamic-loading mode resolves every cuDNN call through.
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}

namespace opd::bench {
namespace {

namespace fe = cudnn_frontend;

// Opens cuDNN 9 once; later calls repeat the first outcome.
void load_cudnn() {
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    std::string tried;
#ifdef OPD_CUDNN_LIBRARY_HINT
    const char* names[] = {"libcudnn.so.9", "libcudnn.so", OPD_CUDNN_LIBRARY_HINT};
#else
    const char* names[] = {"libcudnn.so.9", "libcudnn.so"};
#endif
    for (const char* name : names) {
      if (void* h = dlopen(name, RTLD_NOW | RTLD_GLOBAL)) {
        cudnn_frontend::cudnn_dlhandle = h;
        return;
      }
      const char* why = dlerror();
      tried += str(tried.empty() ? "" : "; ", name, ": ", why ? why : "not found");
    }
    failure = "cannot load cuDNN (" + tried + "); put a cuDNN 9 library on LD_LIBRARY_PATH";
  });
  OPD_REQUIRE(failure.empty(), "cuDNN SDPA: ", failure);
}

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats };

struct SdpaState {
  cudnnHandle_t handle = nullptr;
  fe::graph::Graph graph;
  void* workspace = nullptr;
  float* stats = nullptr;
  std::unordered_map<int64_t, void*> pointers;
  ~SdpaState() {
    cudaFree(workspace);
    cudaFree(stats);
    if (handle) cudnn_frontend::detail::destroy_handle(handle);
  }
};

}  // namespace

std::function<void()> cudnn_sdpa_forward(void* out, const void* q, const void* k, const void* v, int B, int T, int H,
                                         int Hkv, int D) {
  OPD_REQUIRE(B > 0 && T > 0 && H > 0 && Hkv > 0 && D > 0 && H % Hkv == 0, "cudnn_sdpa_forward: bad shape B=", B,
              " T=", T, " H=", H, " Hkv=", Hkv, " D=", D);
  load_cudnn();
  auto st = std::make_shared<SdpaState>();
  CUDNN_CHECK(cudnn_frontend::detail::create_handle(&st->handle));
  auto& g = st->graph;
  g.set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  const int64_t b = B, t = T, h = H, hk = Hkv, d = D;
  // cuDNN's dims are [B, heads, T, D]; ours keep heads inside each token's row.
  auto tensor = [&](const char* name, int64_t uid, int64_t heads) {
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_name(name)
                        .set_uid(uid)
                        .set_dim({b, heads, t, d})
                        .set_stride({t * heads * d, d, heads * d, 1}));
  };
  auto Q = tensor("Q", kQ, h), K = tensor("K", kK, hk), V = tensor("V", kV, hk);
  auto options = fe::graph::SDPA_attributes()
                     .set_name("sdpa")
                     .set_generate_stats(true)
                     .set_causal_mask(true)
                     .set_attn_scale(1.0f / std::sqrt(float(D)));
  auto [O, Stats] = g.sdpa(Q, K, V, options);
  O->set_output(true).set_uid(kO).set_dim({b, h, t, d}).set_stride({t * h * d, d, h * d, 1});
  Stats->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim({b, h, t, 1}).set_stride(
      {h * t, t, 1, 1});

  CUDNN_FE_CHECK(g.validate());
  CUDNN_FE_CHECK(g.build_operation_graph(st->handle));
  CUDNN_FE_CHECK(g.create_execution_plans({fe::HeurMode_t::A}));
  CUDNN_FE_CHECK(g.check_support(st->handle));
  CUDNN_FE_CHECK(g.build_plans(st->handle));
  int64_t ws_bytes = 0;
  CUDNN_FE_CHECK(g.get_workspace_size(ws_bytes));
  if (ws_bytes > 0) CUDA_CHECK(cudaMalloc(&st->workspace, size_t(ws_bytes)));
  CUDA_CHECK(cudaMalloc(&st->stats, sizeof(float) * size_t(B) * H * T));
  st->pointers = {{kQ, const_cast<void*>(q)}, {kK, const_cast<void*>(k)}, {kV, const_cast<void*>(v)},
                  {kO, out}, {kStats, st->stats}};
  return [st] { CUDNN_FE_CHECK(st->graph.execute(st->handle, st->pointers, st->workspace)); };
}

#else

std::function<void()> cudnn_sdpa_forward(void*, const void*, const void*, const void*, int, int, int, int, int) {
  throw Error("cuDNN SDPA: " + cudnn_sdpa_missing());
}

#endif

}  // namespace opd::bench
