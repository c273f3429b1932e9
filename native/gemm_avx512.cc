// AVX-512 (F/BW/VL/DQ + FMA) fp32 kernels: a 12×32 micro-kernel (24 zmm accumulators), packing,
// and the small-M streaming kernels. The whole file is compiled for that target; gemm.cc selects
// this table only when the CPU has it.
#include <immintrin.h>
#include <algorithm>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2,bmi,bmi2,f16c")

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
// Small-M: software prefetch of the weight row this many rows ahead (0 = off).
static const int kKernPf = [] { const char* e = std::getenv("TNL_KPF"); return e ? std::atoi(e) : 0; }();


template <int MR_, int NV_>
void kern_t(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
            bool add) {
  __m512 acc[MR_][NV_];
#pragma GCC unroll 16
  for (int r = 0; r < MR_; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV_; v++) acc[r][v] = _mm512_setzero_ps();
  for (int r = 0; r < mr; r++) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
  const int pfd = kKernPf;
  for (int64_t k = 0; k < kc; k++) {
    __m512 bv[NV_];
    if (pfd) {
      _mm_prefetch(reinterpret_cast<const char*>(b + 16 * NV_ * pfd), _MM_HINT_T0);
      if (NV_ > 1) _mm_prefetch(reinterpret_cast<const char*>(b + 16 * NV_ * pfd + 16), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(a + MR_ * pfd), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV_; v++) bv[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < MR_; r++) {
      const __m512 av = _mm512_set1_ps(a[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV_; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
    a += MR_;
    b += 16 * NV_;
  }
  store_tile<MR_, NV_>(acc, c, ldc, mr, nr, add);
}

void kern(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
          bool add) {
  kern_t<MR, NV>(kc, a, b, c, ldc, mr, nr, add);
}


// ---- packing -------------------------------------------------------------------------------
void pack_a(float* dst, const float* A, int64_t lda, bool transA, int64_t mc, int64_t kc) {
  if (transA) {
    for (int64_t i = 0; i < mc; i += MR) {
      const int64_t mr = imin(MR, mc - i);
      const __mmask16 m = mask16(mr);
      float* d = dst + i * kc;
      const float* s = A + i;
      for (int64_t k = 0; k < kc; k++)
        _mm512_mask_storeu_ps(d + k * MR, kMaskMR, _mm512_maskz_loadu_ps(m, s + k * lda));
    }
    return;
  }
  // Rows → k-major panel: 16×16 transposes (rows past mr are zero), 12 lanes stored per k.
  for (int64_t i = 0; i < mc; i += MR) {
    const int64_t mr = imin(MR, mc - i);
    float* d = dst + i * kc;
    const float* s = A + i * lda;
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
      __m512 r[16];
      for (int q = 0; q < 16; q++) r[q] = q < mr ? _mm512_loadu_ps(s + q * lda + k) : _mm512_setzero_ps();
      transpose16(r);
      for (int q = 0; q < 16; q++) _mm512_mask_storeu_ps(d + (k + q) * MR, kMaskMR, r[q]);
    }
    if (k < kc) {
      const __mmask16 mk = mask16(kc - k);
      __m512 r[16];
      for (int q = 0; q < 16; q++) r[q] = q < mr ? _mm512_maskz_loadu_ps(mk, s + q * lda + k) : _mm512_setzero_ps();
      transpose16(r);
      for (int q = 0; k + q < kc; q++) _mm512_mask_storeu_ps(d + (k + q) * MR, kMaskMR, r[q]);
    }
  }
}

template <typename T>
inline __m512 load16(const T* p, __mmask16 m) {
  if constexpr (sizeof(T) == 2) {
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_maskz_loadu_ps(m, p);
  }
}
template <typename T>
inline __m512 load16(const T* p) {
  if constexpr (sizeof(T) == 2) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_loadu_ps(p);
  }
}

template <typename T>
void pack_b_t(float* dst, const T* B, int64_t ldb, bool transB, int64_t nc, int64_t kc) {
  for (int64_t j = 0; j < nc; j += NR) {
    const int64_t nr = imin(NR, nc - j);
    float* d = dst + j * kc;
    if (!transB) {
      const T* s = B + j;
      if (nr == NR) {
        for (int64_t k = 0; k < kc; k++) {
          const T* sk = s + k * ldb;
          _mm512_store_ps(d + k * NR, load16(sk));
          _mm512_store_ps(d + k * NR + 16, load16(sk + 16));
        }
      } else {
        const __mmask16 m0 = mask16(nr), m1 = mask16(nr - 16);
        for (int64_t k = 0; k < kc; k++) {
          const T* sk = s + k * ldb;
          _mm512_store_ps(d + k * NR, load16(sk, m0));
          _mm512_store_ps(d + k * NR + 16, load16(sk + 16, m1));
        }
      }
      continue;
    }
    // transB: columns j..j+NR of op(B) are rows of the stored B; transpose 16×16 blocks.
    for (int h = 0; h < NV; h++) {
      const int64_t c0 = h * 16;
      const int64_t rows = imin(16, nr - c0);  // may be ≤ 0
      int64_t k = 0;
      for (; k + 16 <= kc; k += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; i++)
          r[i] = i < rows ? load16(B + (j + c0 + i) * ldb + k) : _mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; i < 16; i++) _mm512_store_ps(d + (k + i) * NR + c0, r[i]);
      }
      if (k < kc) {
        const __mmask16 mk = mask16(kc - k);
        __m512 r[16];
        for (int i = 0; i < 16; i++)
          r[i] = i < rows ? load16(B + (j + c0 + i) * ldb + k, mk) : _mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; k + i < kc; i++) _mm512_store_ps(d + (k + i) * NR + c0, r[i]);
      }
    }
  }
}

void pack_b(float* d, const float* B, int64_t ldb, bool t, int64_t nc, int64_t kc) {
  pack_b_t(d, B, ldb, t, nc, kc);
}
void pack_b16(float* d, const uint16_t* B, int64_t ldb, bool t, int64_t nc, int64_t kc) {
  pack_b_t(d, B, ldb, t, nc, kc);
}

// ---- small M -------------------------------------------------------------------------------
// transB: C[m, n] = Σ_k A[m,k]·B[n,k]. B is read row after row (G = 1 or 2 adjacent rows at a
// time), so the weights stream through memory in order, which the hardware prefetchers follow
// far better than many short interleaved rows; U partial sums per output give the FMAs room.
template <int MM, int G, int U, typename T>
inline void dot_rows(int64_t n, int64_t K, const float* A, const T* B, int64_t ldb, float* C,
                     int64_t ldc, bool add) {
  __m512 acc[MM][G][U];
  for (int m = 0; m < MM; m++)
    for (int g = 0; g < G; g++)
      for (int u = 0; u < U; u++) acc[m][g][u] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 * U <= K; k += 16 * U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; u++) {
      __m512 av[MM];
      for (int m = 0; m < MM; m++) av[m] = _mm512_loadu_ps(A + m * K + k + 16 * u);
      // with several rows of A the FMAs fill the out-of-order window: prefetch 2 rows ahead
      if (MM >= 4) _mm_prefetch(reinterpret_cast<const char*>(B + (n + 2) * ldb + k + 16 * u), _MM_HINT_T0);
      for (int g = 0; g < G; g++) {
        const __m512 bv = load16(B + (n + g) * ldb + k + 16 * u);
        for (int m = 0; m < MM; m++) acc[m][g][u] = _mm512_fmadd_ps(av[m], bv, acc[m][g][u]);
      }
    }
  }
  for (; k < K; k += 16) {
    const __mmask16 mk = mask16(K - k);
    __m512 av[MM];
    for (int m = 0; m < MM; m++) av[m] = _mm512_maskz_loadu_ps(mk, A + m * K + k);
    for (int g = 0; g < G; g++) {
      const __m512 bv = load16(B + (n + g) * ldb + k, mk);
      for (int m = 0; m < MM; m++) acc[m][g][0] = _mm512_fmadd_ps(av[m], bv, acc[m][g][0]);
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

template <int MM, typename T>
void small_tb(int64_t n0, int64_t n1, int64_t K, const float* A, const T* B, int64_t ldb, float* C,
              int64_t ldc, bool add) {
  constexpr int G = 1;
  constexpr int U = MM == 1 ? 4 : MM <= 3 ? 2 : 1;
  int64_t n = n0;
  for (; n + G <= n1; n += G) dot_rows<MM, G, U>(n, K, A, B, ldb, C, ldc, add);
  for (; n < n1; n++) dot_rows<MM, 1, U>(n, K, A, B, ldb, C, ldc, add);
}

// not transB: C[m, n0:n1] = Σ_k A[m,k]·B[k, n0:n1]; 16·V columns at a time.
template <int MM, typename T>
void small_nb(int64_t n0, int64_t n1, int64_t K, const float* A, const T* B, int64_t ldb, float* C,
              int64_t ldc, bool add) {
  constexpr int V = MM <= 4 ? 4 : 2;
  for (int64_t n = n0; n < n1; n += 16 * V) {
    __mmask16 mk[V];
    for (int v = 0; v < V; v++) mk[v] = mask16(n1 - n - 16 * v);
    __m512 acc[MM][V];
    for (int m = 0; m < MM; m++)
      for (int v = 0; v < V; v++) acc[m][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
      __m512 bv[V];
      for (int v = 0; v < V; v++) bv[v] = load16(B + k * ldb + n + 16 * v, mk[v]);
      for (int m = 0; m < MM; m++) {
        const __m512 a = _mm512_set1_ps(A[m * K + k]);
        for (int v = 0; v < V; v++) acc[m][v] = _mm512_fmadd_ps(a, bv[v], acc[m][v]);
      }
    }
    for (int m = 0; m < MM; m++)
      for (int v = 0; v < V; v++) {
        float* c = C + m * ldc + n + 16 * v;
        __m512 x = acc[m][v];
        if (add) x = _mm512_add_ps(_mm512_maskz_loadu_ps(mk[v], c), x);
        _mm512_mask_storeu_ps(c, mk[v], x);
      }
  }
}

template <typename T>
void small_t(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A, const T* B, int64_t ldb,
             bool transB, float* C, int64_t ldc, bool add) {
#define TNL_SMALL_CASE(MM)                                    \
  case MM:                                                    \
    if (transB) small_tb<MM>(n0, n1, K, A, B, ldb, C, ldc, add); \
    else small_nb<MM>(n0, n1, K, A, B, ldb, C, ldc, add);        \
    return;
  switch (M) {
    TNL_SMALL_CASE(1)
    TNL_SMALL_CASE(2)
    TNL_SMALL_CASE(3)
    TNL_SMALL_CASE(4)
    TNL_SMALL_CASE(5)
    TNL_SMALL_CASE(6)
    TNL_SMALL_CASE(7)
    TNL_SMALL_CASE(8)
    default:
      small_scalar(M, n0, n1, K, A, B, ldb, transB, C, ldc, add);
  }
#undef TNL_SMALL_CASE
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

// ---- medium M (batched decode) ------------------------------------------------------------
// Cᵀ[n, m] = Σ_k W[n,k]·At[k,m]: RB weight rows at a time, each element broadcast against NV
// vectors of At (L1/L2-resident), RB·NV accumulators. The weights are read once, in row order,
// with no packing pass: for M ≤ 64 packing them would cost more memory traffic than the products.
template <int NV, int RB>
inline void medium_rows(int rows, int64_t n, int64_t K, const float* At, int64_t Mp, const float* W,
                        int64_t ldw, float* C, int64_t ldc, int64_t M, bool add) {
  __m512 acc[RB][NV];
  for (int r = 0; r < RB; r++)
    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
  const float* w[RB];
  for (int r = 0; r < RB; r++) w[r] = W + (n + (r < rows ? r : 0)) * ldw;
  for (int64_t k = 0; k < K; k++) {
    __m512 a[NV];
    for (int v = 0; v < NV; v++) a[v] = _mm512_loadu_ps(At + k * Mp + 16 * v);
    if ((k & 15) == 0)
      for (int r = 0; r < RB; r++) _mm_prefetch(reinterpret_cast<const char*>(w[r] + k + 64), _MM_HINT_T0);
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++) {
      const __m512 b = _mm512_set1_ps(w[r][k]);
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(b, a[v], acc[r][v]);
    }
  }
  alignas(64) float tmp[16];
  for (int r = 0; r < rows; r++)
    for (int v = 0; v < NV; v++) {
      _mm512_store_ps(tmp, acc[r][v]);
      const int64_t m1 = std::min<int64_t>(16, M - 16 * v);
      for (int64_t i = 0; i < m1; i++) {
        float* c = C + (16 * v + i) * ldc + n + r;
        *c = add ? *c + tmp[i] : tmp[i];
      }
    }
}

template <int NV>
void medium_nv(int64_t M, int64_t Mp, int64_t n0, int64_t n1, int64_t K, const float* At,
               const float* W, int64_t ldw, float* C, int64_t ldc, bool add) {
  constexpr int RB = 24 / NV;
  int64_t n = n0;
  for (; n + RB <= n1; n += RB) medium_rows<NV, RB>(RB, n, K, At, Mp, W, ldw, C, ldc, M, add);
  if (n < n1) medium_rows<NV, RB>(static_cast<int>(n1 - n), n, K, At, Mp, W, ldw, C, ldc, M, add);
}

void medium_tb_f32(int64_t M, int64_t Mp, int64_t n0, int64_t n1, int64_t K, const float* At,
                   const float* W, int64_t ldw, float* C, int64_t ldc, bool add) {
  switch (Mp / 16) {
    case 2: return medium_nv<2>(M, Mp, n0, n1, K, At, W, ldw, C, ldc, add);
    case 3: return medium_nv<3>(M, Mp, n0, n1, K, At, W, ldw, C, ldc, add);
    default: return medium_nv<4>(M, Mp, n0, n1, K, At, W, ldw, C, ldc, add);
  }
}

const Isa isa_avx512 = {"avx512", MR, NR, kern, pack_a, pack_b, pack_b16, small_f32, small_bf16, medium_tb_f32};

}  // namespace gemm
}  // namespace tnl

#pragma GCC pop_options
