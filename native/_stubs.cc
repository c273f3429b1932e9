// TEMPORARY: weak stand-ins for kernels.h / attention.h so the addon links while those files are
// being written. The real definitions (native/kernels.cc, native/attention.cc) override these.
// Delete this file once both have landed.
#include <cstdio>
#include <cstdlib>

#include "attention.h"
#include "kernels.h"

#define TNL_STUB(name)                                                                  \
  do {                                                                                  \
    std::fprintf(stderr, "tnl: native %s is not implemented yet in this build\n", name); \
    std::abort();                                                                       \
  } while (0)
#define W __attribute__((weak))

namespace tnl {
W void embedding_f32(float*, const float*, const int32_t*, int64_t, int64_t, float) { TNL_STUB("embedding_f32"); }
W void embedding_bf16(float*, const uint16_t*, const int32_t*, int64_t, int64_t, float) { TNL_STUB("embedding_bf16"); }
W void embedding_backward(float*, const float*, const int32_t*, int64_t, int64_t, float, int32_t) { TNL_STUB("embedding_backward"); }
W void srmsnorm(float*, float*, const float*, int64_t, int64_t, float) { TNL_STUB("srmsnorm"); }
W void srmsnorm_backward(float*, const float*, const float*, const float*, int64_t, int64_t, bool) { TNL_STUB("srmsnorm_backward"); }
W void gla_qkv(float*, float*, float*, const float*, int64_t, int64_t, int64_t, const float*, const int32_t*, const int32_t*) { TNL_STUB("gla_qkv"); }
W void gla_qkv_backward(float*, float*, const float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, const float*, const int32_t*, const int32_t*) { TNL_STUB("gla_qkv_backward"); }
W void norm_gate(float*, float*, const float*, const float*, int64_t, int64_t, float) { TNL_STUB("norm_gate"); }
W void norm_gate_backward(float*, float*, const float*, const float*, const float*, const float*, int64_t, int64_t) { TNL_STUB("norm_gate_backward"); }
W void sglu_gate(float*, const float*, int64_t, int64_t) { TNL_STUB("sglu_gate"); }
W void sglu_gate_backward(float*, const float*, const float*, int64_t, int64_t) { TNL_STUB("sglu_gate_backward"); }
W double cross_entropy(float*, const float*, const int32_t*, int64_t, int64_t, float, int64_t*) { TNL_STUB("cross_entropy"); }
W void adamw(float*, const float*, float*, float*, int64_t, float, float, float, float, float, int64_t, float) { TNL_STUB("adamw"); }
W double sum_squares_f32(const float*, int64_t) { TNL_STUB("sum_squares_f32"); }
W double sum_squares_bf16(const uint16_t*, int64_t) { TNL_STUB("sum_squares_bf16"); }
W void add_inplace(float*, const float*, int64_t) { TNL_STUB("add_inplace"); }
W void scale_inplace(float*, int64_t, float) { TNL_STUB("scale_inplace"); }
W void lightning_forward(float*, const float*, const float*, const float*, const double*, float*, const int32_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) { TNL_STUB("lightning_forward"); }
W void lightning_backward(float*, float*, float*, const float*, const float*, const float*, const float*, const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) { TNL_STUB("lightning_backward"); }
}  // namespace tnl
