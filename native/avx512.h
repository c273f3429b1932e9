// AVX-512 helpers shared by the kernel files (GEMM, attention): tail masks, the 16×16 in-register
// transpose and the store of an accumulator tile. Each carries the AVX-512 target itself, so it
// inlines into the files compiled for AVX-512 (and its superset with BF16) alike.
#pragma once
#include <cstdint>

#include "isa.h"

#if TNL_X86
namespace tnl {
namespace avx512 {

/** The first n lanes of 16 (none for n ≤ 0, all for n ≥ 16). */
TNL_AVX512 __attribute__((always_inline)) inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : (n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1));
}

/** 16×16 transpose of zmm rows (r[i] holds row i) into columns. */
TNL_AVX512 __attribute__((always_inline)) inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; i++) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

/** Writes an MR_×(16·NV_) accumulator tile to C (mr rows, nr columns), adding when `add` (full tiles: all-ones masks). */
template <int MR_, int NV_>
TNL_AVX512 __attribute__((always_inline)) inline void store_tile(__m512 (&acc)[MR_][NV_], float* c, int64_t ldc, int mr, int nr, bool add) {
  __mmask16 m[NV_];
  for (int v = 0; v < NV_; v++) m[v] = mask16(nr - 16 * v);
#pragma GCC unroll 16
  for (int r = 0; r < MR_; r++) {
    if (r >= mr) break;
    float* cr = c + r * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV_; v++) {
      __m512 x = acc[r][v];
      if (add) x = _mm512_add_ps(_mm512_maskz_loadu_ps(m[v], cr + 16 * v), x);
      _mm512_mask_storeu_ps(cr + 16 * v, m[v], x);
    }
  }
}

}  // namespace avx512
}  // namespace tnl
#endif
