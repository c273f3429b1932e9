// AVX-512 BF16 kernels: A is rounded to bf16 while packing, products by vdpbf16ps (two k per
// instruction, fp32 accumulation): a 12×32 micro-kernel over bf16 pairs, and the small-M dot
// kernel for decode with bf16 weights.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2,bmi,bmi2")

#include "avx512.h"
#include "gemm_internal.h"

namespace tnl {
namespace gemm {
namespace {

using avx512::mask16;
using avx512::store_tile;
using avx512::transpose16;

constexpr int MR = 12, NV = 2, NR = 16 * NV;
constexpr __mmask16 kMaskMR = static_cast<__mmask16>((1u << MR) - 1);  // MR ≤ 16 lanes of a panel row

inline __mmask32 mask32(int64_t n) {
  return n >= 32 ? static_cast<__mmask32>(0xffffffffu)
                 : (n <= 0 ? 0 : static_cast<__mmask32>((1u << n) - 1));
}
inline __m512bh as_bh(__m512i x) { return reinterpret_cast<__m512bh&>(x); }

template <int MR_, int NV_>
void kern_t(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc, int mr, int nr,
            bool add) {
  __m512 acc[MR_][NV_];
#pragma GCC unroll 16
  for (int r = 0; r < MR_; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV_; v++) acc[r][v] = _mm512_setzero_ps();
  for (int r = 0; r < mr; r++) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
  for (int64_t p = 0; p < kp; p++) {
    __m512bh bv[NV_];
#pragma GCC unroll 4
    for (int v = 0; v < NV_; v++) bv[v] = as_bh(_mm512_load_si512(b + 16 * v));
#pragma GCC unroll 16
    for (int r = 0; r < MR_; r++) {
      const __m512bh av = as_bh(_mm512_set1_epi32(static_cast<int>(a[r])));
#pragma GCC unroll 4
      for (int v = 0; v < NV_; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
    }
    a += MR_;
    b += 16 * NV_;
  }
  store_tile<MR_, NV_>(acc, c, ldc, mr, nr, add);
}

void kern(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc, int mr, int nr,
          bool add) {
  kern_t<MR, NV>(kp, a, b, c, ldc, mr, nr, add);
}

// 16 fp32 → 16 bf16 bits (round to nearest even) zero-extended into 32-bit lanes.
inline __m512i bf16_lanes(__m512 x) {
  __m256bh h = _mm512_cvtneps_pbh(x);
  return _mm512_cvtepu16_epi32(reinterpret_cast<__m256i&>(h));
}

// A → bf16 pairs, MR-row micro-panels: d[p·MR + r] = (A[r,2p], A[r,2p+1]).
void pack_a(uint32_t* dst, const float* A, int64_t lda, bool transA, int64_t mc, int64_t kc) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t i = 0; i < mc; i += MR) {
    const int64_t mr = imin(MR, mc - i);
    uint32_t* d = dst + i * kp;
    if (transA) {
      const __mmask16 m = mask16(mr);
      const float* s = A + i;
      for (int64_t p = 0; p < kp; p++) {
        const __m512 lo = _mm512_maskz_loadu_ps(m, s + 2 * p * lda);
        const __m512 hi = 2 * p + 1 < kc ? _mm512_maskz_loadu_ps(m, s + (2 * p + 1) * lda)
                                         : _mm512_setzero_ps();
        const __m512i w = _mm512_or_si512(bf16_lanes(lo), _mm512_slli_epi32(bf16_lanes(hi), 16));
        _mm512_mask_storeu_epi32(d + p * MR, kMaskMR, w);
      }
      continue;
    }
    // Each row: 32 k → 16 pairs (vcvtne2ps2bf16), then a 16×16 transpose of 32-bit words.
    int64_t k = 0;
    for (; k < kc; k += 32) {
      const __mmask16 m0 = mask16(kc - k), m1 = mask16(kc - k - 16);
      __m512 r[16];
      for (int q = 0; q < 16; q++) {
        if (q < mr) {
          const float* s = A + (i + q) * lda + k;
          const __m512 x0 = _mm512_maskz_loadu_ps(m0, s), x1 = _mm512_maskz_loadu_ps(m1, s + 16);
          __m512bh w = _mm512_cvtne2ps_pbh(x1, x0);
          r[q] = reinterpret_cast<__m512&>(w);
        } else {
          r[q] = _mm512_setzero_ps();
        }
      }
      transpose16(r);  // 32-bit words: pairs of bf16
      const int64_t p0 = k / 2;
      for (int q = 0; q < 16 && p0 + q < kp; q++)
        _mm512_mask_storeu_ps(reinterpret_cast<float*>(d + (p0 + q) * MR), kMaskMR, r[q]);
    }
  }
}

// B (bf16) → pairs, NR-column micro-panels: d[p·NR + c] = (B[2p,c], B[2p+1,c]).
void pack_b(uint32_t* dst, const uint16_t* B, int64_t ldb, bool transB, int64_t nc, int64_t kc) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t j = 0; j < nc; j += NR) {
    const int64_t nr = imin(NR, nc - j);
    uint32_t* d = dst + j * kp;
    if (!transB) {
      // rows 2p, 2p+1 of B interleaved by 16-bit element.
      const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                              39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
      const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));
      const __mmask32 m = mask32(nr);
      const uint16_t* s = B + j;
      for (int64_t p = 0; p < kp; p++) {
        const __m512i r0 = _mm512_maskz_loadu_epi16(m, s + 2 * p * ldb);
        const __m512i r1 = 2 * p + 1 < kc ? _mm512_maskz_loadu_epi16(m, s + (2 * p + 1) * ldb)
                                          : _mm512_setzero_si512();
        _mm512_store_si512(d + p * NR, _mm512_permutex2var_epi16(r0, lo_idx, r1));
        _mm512_store_si512(d + p * NR + 16, _mm512_permutex2var_epi16(r0, hi_idx, r1));
      }
      continue;
    }
    // transB: a pair (B[c,2p], B[c,2p+1]) is one 32-bit word of stored row c: transpose words.
    for (int h = 0; h < NV; h++) {
      const int64_t c0 = h * 16;
      const int64_t rows = imin(16, nr - c0);
      for (int64_t p = 0; p < kp; p += 16) {
        // 16 pairs = 32 bf16 of each row; the odd tail element pairs with zero.
        const __mmask32 mk = mask32(kc - 2 * p);
        __m512 r[16];
        for (int q = 0; q < 16; q++) {
          if (q < rows) {
            __m512i x = _mm512_maskz_loadu_epi16(mk, B + (j + c0 + q) * ldb + 2 * p);
            r[q] = _mm512_castsi512_ps(x);
          } else {
            r[q] = _mm512_setzero_ps();
          }
        }
        transpose16(r);
        for (int q = 0; q < 16 && p + q < kp; q++)
          _mm512_store_ps(reinterpret_cast<float*>(d + (p + q) * NR + c0), r[q]);
      }
    }
  }
}

// ---- small M, transB: C[m, n] = Σ_k A16[m,k]·B[n,k], 32 k per vdpbf16ps ------------------------
// Rows of B one (or two adjacent) at a time, so the weights stream in memory order; U partial sums.
template <int MM, int G, int U>
inline void dot_rows(int64_t n, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
                     int64_t ldb, float* C, int64_t ldc, bool add) {
  __m512 acc[MM][G][U];
  for (int m = 0; m < MM; m++)
    for (int g = 0; g < G; g++)
      for (int u = 0; u < U; u++) acc[m][g][u] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 * U <= K; k += 32 * U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; u++) {
      __m512bh av[MM];
      for (int m = 0; m < MM; m++) av[m] = as_bh(_mm512_loadu_si512(A + m * lda + k + 32 * u));
      // with several rows of A the FMAs fill the out-of-order window: prefetch 2 rows ahead
      if (MM >= 4) _mm_prefetch(reinterpret_cast<const char*>(B + (n + 2) * ldb + k + 32 * u), _MM_HINT_T0);
      for (int g = 0; g < G; g++) {
        const __m512bh bv = as_bh(_mm512_loadu_si512(B + (n + g) * ldb + k + 32 * u));
        for (int m = 0; m < MM; m++) acc[m][g][u] = _mm512_dpbf16_ps(acc[m][g][u], av[m], bv);
      }
    }
  }
  for (; k < K; k += 32) {  // A is zero padded; B is masked (what lies past a row may be anything)
    const __mmask32 mk = mask32(K - k);
    __m512bh av[MM];
    for (int m = 0; m < MM; m++) av[m] = as_bh(_mm512_loadu_si512(A + m * lda + k));
    for (int g = 0; g < G; g++) {
      const __m512bh bv = as_bh(_mm512_maskz_loadu_epi16(mk, B + (n + g) * ldb + k));
      for (int m = 0; m < MM; m++) acc[m][g][0] = _mm512_dpbf16_ps(acc[m][g][0], av[m], bv);
    }
  }
  for (int m = 0; m < MM; m++)
    for (int g = 0; g < G; g++) {
      __m512 t = acc[m][g][0];
      for (int u = 1; u < U; u++) t = _mm512_add_ps(t, acc[m][g][u]);
      const float s = _mm512_reduce_add_ps(t);
      float* c = C + m * ldc + n + g;
      *c = add ? *c + s : s;
    }
}

template <int MM>
void small_tb_t(int64_t n0, int64_t n1, int64_t K, const uint16_t* A, int64_t lda,
                const uint16_t* B, int64_t ldb, float* C, int64_t ldc, bool add) {
  constexpr int G = 1;
  constexpr int U = MM == 1 ? 4 : MM <= 3 ? 2 : 1;
  int64_t n = n0;
  for (; n + G <= n1; n += G) dot_rows<MM, G, U>(n, K, A, lda, B, ldb, C, ldc, add);
  for (; n < n1; n++) dot_rows<MM, 1, U>(n, K, A, lda, B, ldb, C, ldc, add);
}

void small_tb(int64_t M, int64_t n0, int64_t n1, int64_t K, const uint16_t* A, int64_t lda,
              const uint16_t* B, int64_t ldb, float* C, int64_t ldc, bool add) {
  switch (M) {
    case 1: return small_tb_t<1>(n0, n1, K, A, lda, B, ldb, C, ldc, add);
    case 2: return small_tb_t<2>(n0, n1, K, A, lda, B, ldb, C, ldc, add);
    case 3: return small_tb_t<3>(n0, n1, K, A, lda, B, ldb, C, ldc, add);
    case 4: return small_tb_t<4>(n0, n1, K, A, lda, B, ldb, C, ldc, add);
    case 5: return small_tb_t<5>(n0, n1, K, A, lda, B, ldb, C, ldc, add);
    case 6: return small_tb_t<6>(n0, n1, K, A, lda, B, ldb, C, ldc, add);
    case 7: return small_tb_t<7>(n0, n1, K, A, lda, B, ldb, C, ldc, add);
    default:
      for (int64_t m = 0; m < M; m += 8) {
        const int64_t mm = imin(8, M - m);
        if (mm == 8) small_tb_t<8>(n0, n1, K, A + m * lda, lda, B, ldb, C + m * ldc, ldc, add);
        else small_tb(mm, n0, n1, K, A + m * lda, lda, B, ldb, C + m * ldc, ldc, add);
      }
  }
}

void to_bf16(uint16_t* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<__m256i&>(h));
  }
  if (i < n) {
    const __mmask16 m = mask16(n - i);
    __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
    _mm256_mask_storeu_epi16(dst + i, m, reinterpret_cast<__m256i&>(h));
  }
}

}  // namespace

const IsaBF16 isa_avx512bf16 = {"avx512bf16", MR, NR, kern, pack_a, pack_b, small_tb, to_bf16};

}  // namespace gemm
}  // namespace tnl

#pragma GCC pop_options
