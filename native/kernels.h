// Fused elementwise / row kernels of the model. Semantics are exactly those of the methods of the
// same name in src/backends/backend.ts (see the reference backend for the plain definition).
#pragma once
#include <cstdint>

namespace tnl {
void embedding_f32(float* out, const float* table, const int32_t* ids, int64_t T, int64_t D, float scale);
void embedding_bf16(float* out, const uint16_t* table, const int32_t* ids, int64_t T, int64_t D, float scale);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t T, int64_t D,
                        float scale, int32_t padding_idx);
void srmsnorm(float* y, float* rstd, const float* x, int64_t rows, int64_t D, float eps);
void srmsnorm_backward(float* dx, const float* dy, const float* y, const float* rstd, int64_t rows,
                       int64_t D, bool accumulate);
// qkvu [T, 4H], H = heads·dh; q, k [T, heads·dk] with dk = 2dh when theta (heads·dh values) else dh.
void gla_qkv(float* q, float* k, float* v, const float* qkvu, int64_t T, int64_t heads, int64_t dh,
             const float* theta, const int32_t* positions, const int32_t* vmask);
// Writes columns [0, 3H) of dqkvu; dtheta (nullable) is accumulated into.
void gla_qkv_backward(float* dqkvu, float* dtheta, const float* dq, const float* dk, const float* dv,
                      const float* qkvu, int64_t T, int64_t heads, int64_t dh, const float* theta,
                      const int32_t* positions, const int32_t* vmask);
void norm_gate(float* a, float* rstd, const float* o, const float* qkvu, int64_t T, int64_t H, float eps);
void norm_gate_backward(float* dO, float* dqkvu, const float* dA, const float* o, const float* rstd,
                        const float* qkvu, int64_t T, int64_t H);
void sglu_gate(float* m, const float* h, int64_t T, int64_t G);
void sglu_gate_backward(float* dh, const float* dm, const float* h, int64_t T, int64_t G);
// Returns the summed loss over rows whose target is not -100 and sets *count; dlogits may alias logits.
double cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t T, int64_t V,
                     float grad_scale, int64_t* count);
void adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
           float eps, float weight_decay, int64_t step, float grad_scale);
double sum_squares_f32(const float* x, int64_t n);
double sum_squares_bf16(const uint16_t* x, int64_t n);
void add_inplace(float* y, const float* x, int64_t n);
void scale_inplace(float* x, int64_t n, float s);
}  // namespace tnl
