// AVX2 + FMA kernels: a 6×16 micro-kernel (12 ymm accumulators) and the small-M kernels; packing
// by the scalar routines. bf16 B is widened to fp32 while packing.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,f16c")

#include "gemm_internal.h"

namespace tnl {
namespace gemm {
namespace {

constexpr int MR = 6, NR = 16;

void kern(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
          bool add) {
  __m256 acc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
    }
    a += MR;
    b += NR;
  }
  if (nr == NR) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      if (r >= mr) break;
      float* cr = c + r * ldc;
      __m256 x0 = acc[r][0], x1 = acc[r][1];
      if (add) {
        x0 = _mm256_add_ps(_mm256_loadu_ps(cr), x0);
        x1 = _mm256_add_ps(_mm256_loadu_ps(cr + 8), x1);
      }
      _mm256_storeu_ps(cr, x0);
      _mm256_storeu_ps(cr + 8, x1);
    }
    return;
  }
  alignas(32) float tile[MR][NR];
  for (int r = 0; r < MR; r++) {
    _mm256_store_ps(tile[r], acc[r][0]);
    _mm256_store_ps(tile[r] + 8, acc[r][1]);
  }
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) c[r * ldc + j] = add ? c[r * ldc + j] + tile[r][j] : tile[r][j];
}

void pack_a(float* d, const float* A, int64_t lda, bool t, int64_t mc, int64_t kc) {
  pack_a_f32_scalar<MR>(d, A, lda, t, mc, kc);
}
void pack_b(float* d, const float* B, int64_t ldb, bool t, int64_t nc, int64_t kc) {
  pack_b_scalar<NR>(d, B, ldb, t, nc, kc);
}
void pack_b16(float* d, const uint16_t* B, int64_t ldb, bool t, int64_t nc, int64_t kc) {
  pack_b_scalar<NR>(d, B, ldb, t, nc, kc);
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// transB, MM rows of A against G rows of B at a time (8 k per step; the k tail scalar).
template <int MM, int G, typename T>
inline void dot_block(int64_t n, int64_t K, const float* A, const T* B, int64_t ldb, float* C,
                      int64_t ldc, bool add) {
  __m256 acc[MM][G];
  for (int m = 0; m < MM; m++)
    for (int g = 0; g < G; g++) acc[m][g] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8)
    for (int g = 0; g < G; g++) {
      const __m256 bv = load8(B + (n + g) * ldb + k);
      for (int m = 0; m < MM; m++) acc[m][g] = _mm256_fmadd_ps(load8(A + m * K + k), bv, acc[m][g]);
    }
  for (int m = 0; m < MM; m++)
    for (int g = 0; g < G; g++) {
      float s = hsum(acc[m][g]);
      for (int64_t kk = k; kk < K; kk++) s += A[m * K + kk] * widen<1>(B[(n + g) * ldb + kk]);
      float* c = C + m * ldc + n + g;
      *c = add ? *c + s : s;
    }
}

template <int MM, typename T>
void small_tb(int64_t n0, int64_t n1, int64_t K, const float* A, const T* B, int64_t ldb, float* C,
              int64_t ldc, bool add) {
  constexpr int G = 1;  // one row at a time: the weights stream in memory order
  int64_t n = n0;
  for (; n + G <= n1; n += G) dot_block<MM, G>(n, K, A, B, ldb, C, ldc, add);
  for (; n < n1; n++) dot_block<MM, 1>(n, K, A, B, ldb, C, ldc, add);
}

template <typename T>
void small_t(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A, const T* B, int64_t ldb,
             bool transB, float* C, int64_t ldc, bool add) {
  if (!transB) {
    small_scalar(M, n0, n1, K, A, B, ldb, transB, C, ldc, add);  // vectorizes over n
    return;
  }
  for (int64_t m = 0; m < M;) {
    const int64_t left = M - m;
    const float* a = A + m * K;
    float* c = C + m * ldc;
    if (left >= 4) { small_tb<4>(n0, n1, K, a, B, ldb, c, ldc, add); m += 4; }
    else if (left >= 2) { small_tb<2>(n0, n1, K, a, B, ldb, c, ldc, add); m += 2; }
    else { small_tb<1>(n0, n1, K, a, B, ldb, c, ldc, add); m += 1; }
  }
}

void small_f32(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A, const float* B,
               int64_t ldb, bool t, float* C, int64_t ldc, bool add) {
  small_t(M, n0, n1, K, A, B, ldb, t, C, ldc, add);
}
void small_bf16(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A, const uint16_t* B,
                int64_t ldb, bool t, float* C, int64_t ldc, bool add) {
  small_t(M, n0, n1, K, A, B, ldb, t, C, ldc, add);
}

}  // namespace

const Isa isa_avx2 = {"avx2", MR, NR, kern, pack_a, pack_b, pack_b16, small_f32, small_bf16, nullptr};

}  // namespace gemm
}  // namespace tnl

#pragma GCC pop_options
