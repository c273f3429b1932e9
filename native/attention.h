// Lightning Attention: causal linear attention with per-head exponential decay, computed block by
// block (masked products inside a block, a dk×dv state carried between blocks). Semantics are
// exactly those of Backend.lightningForward / lightningBackward in src/backends/backend.ts.
// Layouts: q, k [B, N, nh, dk]; v, o [B, N, nh, dv]; state [S, nh, dk, dv] (row slots[b] for
// sequence b, or row b when slots is null); decay[h] = λ_h.
#pragma once
#include <cstdint>

namespace tnl {
void lightning_forward(float* o, const float* q, const float* k, const float* v,
                       const double* decay, float* state /* nullable: zero in, not written */,
                       const int32_t* slots /* nullable */,
                       int64_t B, int64_t N, int64_t nh, int64_t dk, int64_t dv, int64_t block);
// From a zero initial state; dq, dk, dv are overwritten.
void lightning_backward(float* dq, float* dk, float* dv, const float* dO,
                        const float* q, const float* k, const float* v, const double* decay,
                        int64_t B, int64_t N, int64_t nh, int64_t dk_, int64_t dv_, int64_t block);
}  // namespace tnl
