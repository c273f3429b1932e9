// Matrix products. Row-major; lda/ldb/ldc are row strides in elements, so a column block of a
// wider matrix (one attention head) is addressed by pointer offset + leading dimension.
#pragma once
#include <cstdint>

namespace tnl {
// C[M,N] (+)= op(A)[M,K] · op(B)[K,N]; op(A) = Aᵀ when transA (A stored [K,M]), same for B.
// Multi-threaded through parallel_for (inline when already inside a pool task).
void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K,
           const float* A, int64_t lda, const float* B, int64_t ldb,
           float* C, int64_t ldc, bool accumulate);
// The same with B in bfloat16 bits (weights); fp32 accumulation. With AVX-512 BF16 the A operand
// is rounded to bf16 and the products use vdpbf16ps; otherwise B is widened to fp32.
void gemm_bf16(bool transA, bool transB, int64_t M, int64_t N, int64_t K,
               const float* A, int64_t lda, const uint16_t* B, int64_t ldb,
               float* C, int64_t ldc, bool accumulate);
// Which code path runs: "avx512", "avx2", "generic" (+ "+bf16" when vdpbf16ps is used).
const char* gemm_isa();
}  // namespace tnl
