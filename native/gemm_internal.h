// Internal to the GEMM: the per-ISA kernel tables that gemm.cc's driver dispatches to.
// Each ISA lives in its own translation unit compiled for that target (#pragma GCC target), so
// the rest of the addon stays at the x86-64 baseline and runs on any CPU.
//
// Packed layouts (BLIS-style; MR rows of op(A) or NR columns of op(B) per micro-panel):
//   fp32 A micro-panel: kc × MR floats, a[k·MR + r]       (rows past the edge are zero)
//   fp32 B micro-panel: kc × NR floats, b[k·NR + c]       (columns past the edge are zero)
//   bf16 A micro-panel: kp × MR uint32, a[p·MR + r] = bf16 pair (A[r,2p], A[r,2p+1]), kp = ⌈kc/2⌉
//   bf16 B micro-panel: kp × NR uint32, b[p·NR + c] = bf16 pair (B[2p,c], B[2p+1,c])
// Pack functions take a pointer to the logical element (row 0, k 0) of the block of op(X) and
// the stored matrix's leading dimension; `trans` says how op(X) is stored.
#pragma once
#include <cstdint>

namespace tnl {
namespace gemm {

struct Isa {
  const char* name;
  int MR, NR;  // fp32 micro-tile
  // C[mr×nr] (+)= A-panel · B-panel over kc; the kernel computes a full MR×NR tile.
  void (*kern_f32)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr,
                   int nr, bool add);
  void (*pack_a_f32)(float* dst, const float* A, int64_t lda, bool transA, int64_t mc, int64_t kc);
  void (*pack_b_f32)(float* dst, const float* B, int64_t ldb, bool transB, int64_t nc, int64_t kc);
  // bf16 weights widened to fp32 while packing (the fallback when vdpbf16ps is absent).
  void (*pack_b_bf16_as_f32)(float* dst, const uint16_t* B, int64_t ldb, bool transB, int64_t nc,
                             int64_t kc);
  // Small M (decode): C[M, n0:n1] (+)= A[M,K] · op(B)[K, n0:n1], A contiguous (lda = K), M ≤ 8.
  // Streams each used row (transB) or column block of B once.
  void (*small_f32)(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A, const float* B,
                    int64_t ldb, bool transB, float* C, int64_t ldc, bool add);
  // The same with bf16 B widened to fp32 (A as given).
  void (*small_bf16_f32)(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A,
                         const uint16_t* B, int64_t ldb, bool transB, float* C, int64_t ldc,
                         bool add);
  // Medium M (batched decode, 16 < M ≤ 64), transB only: C[M, n0:n1] (+)= A · Wᵀ with the weights
  // W [N, K] streamed once, unpacked, as the broadcast operand; At is A transposed [K, Mp]
  // (Mp = M rounded up to 16, zero padded). Null where the ISA has none (the packed path is used).
  void (*medium_tb_f32)(int64_t M, int64_t Mp, int64_t n0, int64_t n1, int64_t K, const float* At,
                        const float* W, int64_t ldw, float* C, int64_t ldc, bool add);
};

// vdpbf16ps kernels (AVX-512 BF16): A is rounded to bf16 while packing.
struct IsaBF16 {
  const char* name;
  int MR, NR;
  void (*kern)(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc, int mr,
               int nr, bool add);
  void (*pack_a)(uint32_t* dst, const float* A, int64_t lda, bool transA, int64_t mc, int64_t kc);
  void (*pack_b)(uint32_t* dst, const uint16_t* B, int64_t ldb, bool transB, int64_t nc,
                 int64_t kc);
  // Small M, transB only: A16 holds A rounded to bf16, rows of lda16 ≥ K elements (even, zero
  // padded).
  void (*small_tb)(int64_t M, int64_t n0, int64_t n1, int64_t K, const uint16_t* A16,
                   int64_t lda16, const uint16_t* B, int64_t ldb, float* C, int64_t ldc, bool add);
  // fp32 → bf16 (round to nearest even) of n values.
  void (*to_bf16)(uint16_t* dst, const float* src, int64_t n);
};

extern const Isa isa_generic;
#if defined(__x86_64__)
extern const Isa isa_avx2;
extern const Isa isa_avx512;
extern const IsaBF16 isa_avx512bf16;
#endif

}  // namespace gemm
}  // namespace tnl

// ---- scalar packing helpers, compiled into each ISA's translation unit (internal linkage, so no
// copy built for one target can be picked by the linker for another) ----------------------------
#include <cstring>

namespace tnl {
namespace gemm {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// A (fp32) into MR-row micro-panels.
template <int MR>
inline void pack_a_f32_scalar(float* dst, const float* A, int64_t lda, bool transA, int64_t mc,
                              int64_t kc) {
  for (int64_t i = 0; i < mc; i += MR) {
    const int64_t mr = imin(MR, mc - i);
    float* d = dst + i * kc;
    if (transA) {
      const float* s = A + i;
      for (int64_t k = 0; k < kc; k++) {
        const float* sk = s + k * lda;
        float* dk = d + k * MR;
        int64_t r = 0;
        for (; r < mr; r++) dk[r] = sk[r];
        for (; r < MR; r++) dk[r] = 0.f;
      }
    } else {
      for (int64_t r = 0; r < mr; r++) {
        const float* sr = A + (i + r) * lda;
        for (int64_t k = 0; k < kc; k++) d[k * MR + r] = sr[k];
      }
      for (int64_t r = mr; r < MR; r++)
        for (int64_t k = 0; k < kc; k++) d[k * MR + r] = 0.f;
    }
  }
}

// B into NR-column micro-panels; T is float or uint16_t (bf16 bits, widened).
template <int NR, typename T>
inline float widen(T x) {
  if constexpr (sizeof(T) == 2) return bf16_to_f32(x); else return x;
}
template <int NR, typename T>
inline void pack_b_scalar(float* dst, const T* B, int64_t ldb, bool transB, int64_t nc,
                          int64_t kc) {
  for (int64_t j = 0; j < nc; j += NR) {
    const int64_t nr = imin(NR, nc - j);
    float* d = dst + j * kc;
    if (!transB) {
      const T* s = B + j;
      for (int64_t k = 0; k < kc; k++) {
        const T* sk = s + k * ldb;
        float* dk = d + k * NR;
        int64_t c = 0;
        for (; c < nr; c++) dk[c] = widen<NR>(sk[c]);
        for (; c < NR; c++) dk[c] = 0.f;
      }
    } else {
      for (int64_t c = 0; c < nr; c++) {
        const T* sc = B + (j + c) * ldb;
        for (int64_t k = 0; k < kc; k++) d[k * NR + c] = widen<NR>(sc[k]);
      }
      for (int64_t c = nr; c < NR; c++)
        for (int64_t k = 0; k < kc; k++) d[k * NR + c] = 0.f;
    }
  }
}

// Plain small-M product over columns [n0, n1), accumulating in fp32.
template <typename T>
inline void small_scalar(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A, const T* B,
                         int64_t ldb, bool transB, float* C, int64_t ldc, bool add) {
  if (transB) {
    for (int64_t n = n0; n < n1; n++) {
      const T* b = B + n * ldb;
      for (int64_t m = 0; m < M; m++) {
        const float* a = A + m * K;
        float s = 0.f;
        for (int64_t k = 0; k < K; k++) s += a[k] * widen<1>(b[k]);
        C[m * ldc + n] = add ? C[m * ldc + n] + s : s;
      }
    }
  } else {
    for (int64_t m = 0; m < M; m++) {
      float* c = C + m * ldc;
      if (!add)
        for (int64_t n = n0; n < n1; n++) c[n] = 0.f;
      for (int64_t k = 0; k < K; k++) {
        const float a = A[m * K + k];
        const T* b = B + k * ldb;
        for (int64_t n = n0; n < n1; n++) c[n] += a * widen<1>(b[n]);
      }
    }
  }
}

}  // namespace
}  // namespace gemm
}  // namespace tnl
