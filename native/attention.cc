// Lightning Attention on the CPU: causal linear attention with a per-head exponential decay λ,
//   o_t = λ^{t+1}·q_t·S_in + Σ_{j≤t} λ^{t−j} (q_t·k_j) v_j,
//   S_out = λ^N·S_in + Σ_j λ^{N−1−j} k_jᵀ v_j            (S is dk×dv, one per sequence and head)
// (spec tnl-math.md §3–§5; the reference backend's recurrence is the oracle).
//
// Forward, block form. Walk the sequence in blocks of m ≤ `block` tokens at positions s..s+m−1;
// with Q, K, V the block's rows and S the state carried in (zero at the start):
//   P = (Q Kᵀ) ⊙ M,  M[τ,τ'] = λ^{τ−τ'} for τ' ≤ τ (diagonal included), 0 above
//   O = diag(λ^{τ+1}) · Q S  +  P V                     (inter-block + intra-block)
//   S ← λ^m S + Σ_τ' λ^{m−1−τ'} k_τ'ᵀ v_τ'               (= (Kᵀ)·(diag(λ^{m−1−τ'}) V))
// The decay powers λ^d, d = 0..block, are tabulated once per head (in double, stored as float;
// powers below 1e-30 are flushed to 0 so no denormals reach the products). Every product is a
// small row-major GEMM C = diag(α)·A·B + β·C done by an in-cache register-tiled kernel (AVX-512
// when the CPU has it, else plain loops); Kᵀ is formed by a 16×16 in-register transpose. Causal
// structure is exploited: for a tile of P rows only the columns up to the tile's last row are
// computed, and P V reads only that prefix. N = 1 (decode) takes a fused path that streams the
// state once: S_i ← λ S_i + k_i v, o += q_i S_i for every state row i.
//
// Backward from a zero state (dO given). Differentiating o_t gives
//   dq_t = Σ_{j≤t} λ^{t−j} (dO_t·v_j) k_j
//   dk_j = Σ_{t≥j} λ^{t−j} (dO_t·v_j) q_t = R_j v_j,   dv_j = Σ_{t≥j} λ^{t−j} (q_t·k_j) dO_t = R_jᵀ k_j,
//   with R_j = Σ_{t≥j} λ^{t−j} q_tᵀ dO_t.
// dq has the forward's shape: the forward scan with (q, k, v) → (dO, v, k), whose state is
// Σ λ^{t−j} v_jᵀ k_j. dk and dv come from one reverse scan (time read backwards through negated
// strides, so the forward's block algebra applies unchanged) that carries R (dk×dv): per block,
//   dv = diag(λ^{τ+1}) K R + mask(K Qᵀ) dO,   dk = diag(λ^{τ+1}) V Rᵀ + mask(V dOᵀ) Q,
//   R ← λ^m R + Qᵀ diag(λ^{m−1−τ'}) dO        (τ counted from the block's last token).
// Nothing N×N is formed: a scan keeps one block of P and one state. The two scans of every
// (sequence, head) are independent tasks for the thread pool.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "threadpool.h"

#include "avx512.h"
#include "isa.h"

namespace tnl {
namespace {

inline bool use_avx512() { return isa::avx512(); }
inline bool use_avx2() { return isa::avx2(); }

inline int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

// C[r, c] = α_r · Σ_{p<K} A[r·lda + p] · B[p·ldb + c] + β · C[r, c]   (r < M, c < Nc)
// α null means 1; β = 0 means C is not read. Strides may be negative.
// causal = kCausalK: A[r, p] is zero for p > r, so a tile of rows r0..r0+R−1 reads p < r0+R only.
// causal = kCausalCols: columns c < r0+R of a row tile are computed (those past them may be left
// as they were or computed too): enough for a causal P whose upper part is masked afterwards.
enum { kFull = 0, kCausalK = 1, kCausalCols = 2 };

// Row-major transpose: dst[c·ldd + r] = src[r·lds + c] for r < rows, c < cols.
void transpose_generic(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst,
                       int64_t ldd) {
  for (int64_t r = 0; r < rows; r++) {
    const float* s = src + r * lds;
    for (int64_t c = 0; c < cols; c++) dst[c * ldd + r] = s[c];
  }
}

// VW: floats per vector register of the target (4 for SSE, 8 for AVX2); full tiles are 4 rows ×
// 2 registers, kept in registers through GCC's vector extensions.
template <int VW>
inline __attribute__((always_inline)) void gemm_body(int64_t M, int64_t Nc, int64_t K, const float* A,
                                                     int64_t lda, const float* B, int64_t ldb, float* C,
                                                     int64_t ldc, const float* alpha, float beta, int causal) {
  constexpr int R = 4, W = 2 * VW;
  for (int64_t r0 = 0; r0 < M; r0 += R) {
    const int64_t nr = std::min<int64_t>(R, M - r0);
    const int64_t Keff = causal == kCausalK ? std::min(K, r0 + nr) : K;
    const int64_t Neff = causal == kCausalCols ? std::min(Nc, r0 + nr) : Nc;
    // a causal P may get a few columns more than needed (the mask overwrites them): whole tiles
    const int64_t NeffV = causal == kCausalCols ? std::min(Nc, round_up(Neff, W)) : Neff;
    int64_t c0 = 0;
    if (nr == R) {
      typedef float vf __attribute__((vector_size(VW * 4)));
      for (; c0 + W <= NeffV; c0 += W) {
        vf acc[R][2];
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vf{};
        for (int64_t p = 0; p < Keff; p++) {
          vf b0, b1;
          std::memcpy(&b0, B + p * ldb + c0, sizeof b0);
          std::memcpy(&b1, B + p * ldb + c0 + VW, sizeof b1);
          for (int r = 0; r < R; r++) {
            const float a = A[(r0 + r) * lda + p];
            acc[r][0] += a * b0;
            acc[r][1] += a * b1;
          }
        }
        for (int r = 0; r < R; r++) {
          const float al = alpha ? alpha[r0 + r] : 1.f;
          float* c = C + (r0 + r) * ldc + c0;
          float out[W];
          std::memcpy(out, &acc[r][0], sizeof(vf));
          std::memcpy(out + VW, &acc[r][1], sizeof(vf));
          if (beta != 0.f)
            for (int j = 0; j < W; j++) c[j] = al * out[j] + beta * c[j];
          else
            for (int j = 0; j < W; j++) c[j] = al * out[j];
        }
      }
    }
    // what is left (columns past the last full tile, or a partial row group), a row at a time
    for (int64_t r = r0; r < r0 + nr; r++) {
      const int64_t cs = nr == R ? c0 : 0;
      if (cs >= Neff) continue;
      constexpr int64_t CH = 256;
      float acc[CH];
      const float al = alpha ? alpha[r] : 1.f;
      float* c = C + r * ldc;
      for (int64_t a0 = cs; a0 < Neff; a0 += CH) {
        const int64_t nc = std::min(CH, Neff - a0);
        for (int64_t j = 0; j < nc; j++) acc[j] = 0.f;
        for (int64_t p = 0; p < Keff; p++) {
          const float a = A[r * lda + p];
          const float* b = B + p * ldb + a0;
          for (int64_t j = 0; j < nc; j++) acc[j] += a * b[j];
        }
        if (beta != 0.f)
          for (int64_t j = 0; j < nc; j++) c[a0 + j] = al * acc[j] + beta * c[a0 + j];
        else
          for (int64_t j = 0; j < nc; j++) c[a0 + j] = al * acc[j];
      }
    }
  }
}

void gemm_generic(int64_t M, int64_t Nc, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float* C, int64_t ldc, const float* alpha, float beta, int causal) {
  gemm_body<4>(M, Nc, K, A, lda, B, ldb, C, ldc, alpha, beta, causal);
}

// Decode step for one (sequence, head): S ← λS + kᵀv, o = q S.
inline __attribute__((always_inline)) void decode_body(float* o, const float* q, const float* k,
                                                       const float* v, float* S, int64_t dk, int64_t dv,
                                                       float lam) {
  for (int64_t j = 0; j < dv; j++) o[j] = 0.f;
  for (int64_t i = 0; i < dk; i++) {
    float* s = S + i * dv;
    const float ki = k[i], qi = q[i];
    for (int64_t j = 0; j < dv; j++) {
      const float x = lam * s[j] + ki * v[j];
      s[j] = x;
      o[j] += qi * x;
    }
  }
}

void decode_generic(float* o, const float* q, const float* k, const float* v, float* S,
                    int64_t dk, int64_t dv, float lam) {
  decode_body(o, q, k, v, S, dk, dv, lam);
}

#if TNL_X86
// The same loops vectorised by the compiler for AVX2 + FMA (CPUs without AVX-512).
#define TNL_AVX2 __attribute__((target("avx2,fma")))
TNL_AVX2 void gemm_avx2(int64_t M, int64_t Nc, int64_t K, const float* A, int64_t lda, const float* B,
                        int64_t ldb, float* C, int64_t ldc, const float* alpha, float beta, int causal) {
  gemm_body<8>(M, Nc, K, A, lda, B, ldb, C, ldc, alpha, beta, causal);
}
TNL_AVX2 void decode_avx2(float* o, const float* q, const float* k, const float* v, float* S,
                          int64_t dk, int64_t dv, float lam) {
  decode_body(o, q, k, v, S, dk, dv, lam);
}
#endif

#if TNL_X86
// ---- AVX-512 ------------------------------------------------------------------------------------
using avx512::mask16;
using avx512::transpose16;

// One R×(16·CV) tile; the last vector is masked by `last`.
template <int R, int CV>
TNL_AVX512 void tile512(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                        float* C, int64_t ldc, const float* alpha, float beta, __mmask16 last) {
  __m512 acc[R][CV];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int j = 0; j < CV; j++) acc[r][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < K; p++) {
    const float* b = B + p * ldb;
    __m512 bv[CV];
#pragma GCC unroll 4
    for (int j = 0; j < CV; j++)
      bv[j] = j == CV - 1 ? _mm512_maskz_loadu_ps(last, b + 16 * j) : _mm512_loadu_ps(b + 16 * j);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m512 a = _mm512_set1_ps(A[r * lda + p]);
#pragma GCC unroll 4
      for (int j = 0; j < CV; j++) acc[r][j] = _mm512_fmadd_ps(a, bv[j], acc[r][j]);
    }
  }
  const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    float* c = C + r * ldc;
    const __m512 va = _mm512_set1_ps(alpha ? alpha[r] : 1.f);
#pragma GCC unroll 4
    for (int j = 0; j < CV; j++) {
      const __mmask16 mk = j == CV - 1 ? last : static_cast<__mmask16>(0xffff);
      __m512 x = _mm512_mul_ps(acc[r][j], va);
      if (beta != 0.f) x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, c + 16 * j), x);
      _mm512_mask_storeu_ps(c + 16 * j, mk, x);
    }
  }
}

using TileFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t,
                        const float*, float, __mmask16);
constexpr int kMR = 6;  // rows per tile: 6×4 accumulators + 4 B vectors + 1 broadcast ≤ 32 zmm
#define TNL_T(R) tile512<R, 1>, tile512<R, 2>, tile512<R, 3>, tile512<R, 4>
const TileFn kTiles[kMR][4] = {{TNL_T(1)}, {TNL_T(2)}, {TNL_T(3)}, {TNL_T(4)}, {TNL_T(5)}, {TNL_T(6)}};
#undef TNL_T

TNL_AVX512 void gemm_avx512(int64_t M, int64_t Nc, int64_t K, const float* A, int64_t lda,
                            const float* B, int64_t ldb, float* C, int64_t ldc, const float* alpha,
                            float beta, int causal) {
  for (int64_t c0 = 0; c0 < Nc; c0 += 64) {
    const int64_t ncol = std::min<int64_t>(64, Nc - c0);
    for (int64_t r0 = 0; r0 < M; r0 += kMR) {
      const int64_t R = std::min<int64_t>(kMR, M - r0);
      int64_t nc = ncol, Keff = K;
      if (causal == kCausalCols) {
        if (c0 >= r0 + R) continue;
        nc = std::min(ncol, r0 + R - c0);
      } else if (causal == kCausalK) {
        Keff = std::min(K, r0 + R);
      }
      const int64_t cv = (nc + 15) / 16;
      kTiles[R - 1][cv - 1](Keff, A + r0 * lda, lda, B + c0, ldb, C + r0 * ldc + c0, ldc,
                            alpha ? alpha + r0 : nullptr, beta, mask16(nc - 16 * (cv - 1)));
    }
  }
}


TNL_AVX512 void transpose_avx512(int64_t rows, int64_t cols, const float* src, int64_t lds,
                                 float* dst, int64_t ldd) {
  __m512 r[16];
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t nr = std::min<int64_t>(16, rows - r0);
    const __mmask16 rmask = mask16(nr);
    for (int64_t c0 = 0; c0 < cols; c0 += 16) {
      const int64_t nc = std::min<int64_t>(16, cols - c0);
      const __mmask16 cmask = mask16(nc);
      for (int i = 0; i < 16; i++)
        r[i] = i < nr ? _mm512_maskz_loadu_ps(cmask, src + (r0 + i) * lds + c0) : _mm512_setzero_ps();
      transpose16(r);
      for (int i = 0; i < nc; i++) _mm512_mask_storeu_ps(dst + (c0 + i) * ldd + r0, rmask, r[i]);
    }
  }
}

template <int CV>
TNL_AVX512 void decode_chunk(float* o, const float* q, const float* k, const float* v, float* S,
                             int64_t dk, int64_t dv, float lam, __mmask16 last) {
  __m512 vv[CV], acc[CV];
  const __m512 vl = _mm512_set1_ps(lam);
#pragma GCC unroll 4
  for (int j = 0; j < CV; j++) {
    const __mmask16 mk = j == CV - 1 ? last : static_cast<__mmask16>(0xffff);
    vv[j] = _mm512_maskz_loadu_ps(mk, v + 16 * j);
    acc[j] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < dk; i++) {
    float* s = S + i * dv;
    const __m512 ki = _mm512_set1_ps(k[i]), qi = _mm512_set1_ps(q[i]);
#pragma GCC unroll 4
    for (int j = 0; j < CV; j++) {
      const __mmask16 mk = j == CV - 1 ? last : static_cast<__mmask16>(0xffff);
      __m512 x = _mm512_maskz_loadu_ps(mk, s + 16 * j);
      x = _mm512_fmadd_ps(ki, vv[j], _mm512_mul_ps(vl, x));
      _mm512_mask_storeu_ps(s + 16 * j, mk, x);
      acc[j] = _mm512_fmadd_ps(qi, x, acc[j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < CV; j++)
    _mm512_mask_storeu_ps(o + 16 * j, j == CV - 1 ? last : static_cast<__mmask16>(0xffff), acc[j]);
}

TNL_AVX512 void decode_avx512(float* o, const float* q, const float* k, const float* v, float* S,
                              int64_t dk, int64_t dv, float lam) {
  for (int64_t c0 = 0; c0 < dv; c0 += 64) {
    const int64_t nc = std::min<int64_t>(64, dv - c0);
    const int64_t cv = (nc + 15) / 16;
    const __mmask16 last = mask16(nc - 16 * (cv - 1));
    switch (cv) {
      case 1: decode_chunk<1>(o + c0, q, k, v + c0, S + c0, dk, dv, lam, last); break;
      case 2: decode_chunk<2>(o + c0, q, k, v + c0, S + c0, dk, dv, lam, last); break;
      case 3: decode_chunk<3>(o + c0, q, k, v + c0, S + c0, dk, dv, lam, last); break;
      default: decode_chunk<4>(o + c0, q, k, v + c0, S + c0, dk, dv, lam, last); break;
    }
  }
}
#endif  // TNL_X86

struct Ops {
  void (*gemm)(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*,
               int64_t, const float*, float, int);
  void (*transpose)(int64_t, int64_t, const float*, int64_t, float*, int64_t);
  void (*decode)(float*, const float*, const float*, const float*, float*, int64_t, int64_t, float);
};

const Ops& ops() {
  static const Ops o = [] {
#if TNL_X86
    if (use_avx512()) return Ops{gemm_avx512, transpose_avx512, decode_avx512};
    if (use_avx2()) return Ops{gemm_avx2, transpose_generic, decode_avx2};
#endif
    return Ops{gemm_generic, transpose_generic, decode_generic};
  }();
  return o;
}

// ---------------------------------------------------------------------------------------------
// Per-thread scratch, grown on demand (never shrunk), so steady-state calls do not allocate.
struct Scratch {
  std::vector<float> kt, p, vd, s, pw, qc, vc, st;
  float* grow(std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
  }
};
thread_local Scratch t_scratch;

// λ^d for d = 0..n (double recurrence, rounded to float, tiny powers flushed to 0).
void decay_powers(float* pw, double lam, int64_t n) {
  double x = 1.0;
  for (int64_t d = 0; d <= n; d++) {
    pw[d] = x < 1e-30 ? 0.f : static_cast<float>(x);
    x *= lam;
  }
}

// One (sequence, head) over N tokens; strides in elements, possibly negative (reverse scans).
struct Head {
  float* o; int64_t ldo;
  const float* q; int64_t ldq;
  const float* k; int64_t ldk;
  const float* v; int64_t ldv;
  int64_t N, dk, dv;
};

// S: dk×dv row-major (ld dv). s_in: S holds the incoming state (else zero); s_out: S must hold the
// final state on return. pw: λ^d for d = 0..min(block, N).
void head_blocks(const Ops& op, const Head& h, const float* pw, int64_t block, float* S, bool s_in,
                 bool s_out, Scratch& sc) {
  const int64_t bm = std::min(block, h.N);
  const int64_t ldp = round_up(bm, 16);
  float* Kt = sc.grow(sc.kt, h.dk * ldp);
  float* P = sc.grow(sc.p, bm * ldp);
  float* Vd = sc.grow(sc.vd, bm * h.dv);
  float* Qc = sc.grow(sc.qc, bm * h.dk);
  float* Vc = sc.grow(sc.vc, bm * h.dv);
  bool have = s_in;
  for (int64_t s0 = 0; s0 < h.N; s0 += bm) {
    const int64_t m = std::min(bm, h.N - s0);
    const bool last = s0 + m >= h.N;
    const float* kb = h.k + s0 * h.ldk;
    // the block's q and v rows, contiguous (the inputs' rows are nh·d apart: cache-set aliasing)
    for (int64_t u = 0; u < m; u++) {
      std::memcpy(Qc + u * h.dk, h.q + (s0 + u) * h.ldq, sizeof(float) * h.dk);
      std::memcpy(Vc + u * h.dv, h.v + (s0 + u) * h.ldv, sizeof(float) * h.dv);
    }
    const float* qb = Qc;
    const float* vb = Vc;
    const int64_t ldqb = h.dk, ldvb = h.dv;
    float* ob = h.o + s0 * h.ldo;
    op.transpose(m, h.dk, kb, h.ldk, Kt, ldp);
    // P = (Q Kᵀ) ⊙ M
    op.gemm(m, m, h.dk, qb, ldqb, Kt, ldp, P, ldp, nullptr, 0.f, kCausalCols);
    for (int64_t t = 0; t < m; t++) {
      float* pr = P + t * ldp;
      const float* w = pw + t;  // pr[t'] *= λ^{t−t'} = w[−t']
      for (int64_t u = 0; u <= t; u++) pr[u] *= w[-u];
      for (int64_t u = t + 1; u < m; u++) pr[u] = 0.f;
    }
    // O = diag(λ^{τ+1}) Q S + P V
    float beta = 0.f;
    if (have) {
      op.gemm(m, h.dv, h.dk, qb, ldqb, S, h.dv, ob, h.ldo, pw + 1, 0.f, kFull);
      beta = 1.f;
    }
    op.gemm(m, h.dv, m, P, ldp, vb, ldvb, ob, h.ldo, nullptr, beta, kCausalK);
    // S ← λ^m S + Kᵀ diag(λ^{m−1−τ'}) V
    if (!last || s_out) {
      for (int64_t u = 0; u < m; u++) {
        const float w = pw[m - 1 - u];
        const float* src = vb + u * ldvb;
        float* dst = Vd + u * h.dv;
        for (int64_t j = 0; j < h.dv; j++) dst[j] = w * src[j];
      }
      op.gemm(h.dk, h.dv, m, Kt, ldp, Vd, h.dv, S, h.dv, nullptr, have ? pw[m] : 0.f, kFull);
      have = true;
    }
  }
  if (s_out && !have) std::memset(S, 0, sizeof(float) * h.dk * h.dv);  // N = 0
}

// dk and dv of one (sequence, head) in one reverse scan sharing the state R_j = Σ_{t≥j} λ^{t−j} q_tᵀ dO_t
// (dk×dv). Pointers address the last token and the strides are negated, so block row τ is time
// N−1−τ and the forward's block algebra applies as is:
//   dv = diag(λ^{τ+1}) K R + mask(K Qᵀ) dO,   dk = diag(λ^{τ+1}) V Rᵀ + mask(V dOᵀ) Q,
//   R ← λ^m R + Qᵀ diag(λ^{m−1−τ'}) dO.
struct HeadKV {
  float* dk; float* dv;
  const float* q; const float* k; int64_t ldq;     // q, k, dk rows
  const float* v; const float* dO; int64_t ldv;    // v, dO, dv rows
  int64_t N, dk_, dv_;
};
void head_backward_kv(const Ops& op, const HeadKV& h, const float* pw, int64_t block, Scratch& sc) {
  const int64_t bm = std::min(block, h.N);
  const int64_t ldp = round_up(bm, 16);
  const int64_t DK = h.dk_, DV = h.dv_;
  float* Qt = sc.grow(sc.kt, std::max(DK, DV) * ldp * 2);
  float* Gt = Qt + DK * ldp;  // dOᵀ
  float* P = sc.grow(sc.p, bm * ldp);
  float* Gd = sc.grow(sc.vd, bm * DV);  // λ-scaled dO rows
  float* Kc = sc.grow(sc.qc, bm * DK);
  float* Vc = sc.grow(sc.vc, bm * DV);
  float* R = sc.grow(sc.s, DK * DV);
  float* Rt = sc.grow(sc.st, DK * DV);
  auto mask = [&](int64_t m) {
    for (int64_t t = 0; t < m; t++) {
      float* pr = P + t * ldp;
      const float* w = pw + t;
      for (int64_t u = 0; u <= t; u++) pr[u] *= w[-u];
      for (int64_t u = t + 1; u < m; u++) pr[u] = 0.f;
    }
  };
  bool have = false;
  for (int64_t s0 = 0; s0 < h.N; s0 += bm) {
    const int64_t m = std::min(bm, h.N - s0);
    const bool last = s0 + m >= h.N;
    const float* qb = h.q + s0 * h.ldq;
    const float* gb = h.dO + s0 * h.ldv;
    float* dkb = h.dk + s0 * h.ldq;
    float* dvb = h.dv + s0 * h.ldv;
    for (int64_t u = 0; u < m; u++) {
      std::memcpy(Kc + u * DK, h.k + (s0 + u) * h.ldq, sizeof(float) * DK);
      std::memcpy(Vc + u * DV, h.v + (s0 + u) * h.ldv, sizeof(float) * DV);
    }
    op.transpose(m, DK, qb, h.ldq, Qt, ldp);
    op.transpose(m, DV, gb, h.ldv, Gt, ldp);
    // dv
    op.gemm(m, m, DK, Kc, DK, Qt, ldp, P, ldp, nullptr, 0.f, kCausalCols);
    mask(m);
    float beta = 0.f;
    if (have) {
      op.gemm(m, DV, DK, Kc, DK, R, DV, dvb, h.ldv, pw + 1, 0.f, kFull);
      beta = 1.f;
    }
    op.gemm(m, DV, m, P, ldp, gb, h.ldv, dvb, h.ldv, nullptr, beta, kCausalK);
    // dk
    op.gemm(m, m, DV, Vc, DV, Gt, ldp, P, ldp, nullptr, 0.f, kCausalCols);
    mask(m);
    if (have) {
      op.transpose(DK, DV, R, DV, Rt, DK);
      op.gemm(m, DK, DV, Vc, DV, Rt, DK, dkb, h.ldq, pw + 1, 0.f, kFull);
    }
    op.gemm(m, DK, m, P, ldp, qb, h.ldq, dkb, h.ldq, nullptr, beta, kCausalK);
    // R
    if (!last) {
      for (int64_t u = 0; u < m; u++) {
        const float w = pw[m - 1 - u];
        const float* src = gb + u * h.ldv;
        float* dst = Gd + u * DV;
        for (int64_t j = 0; j < DV; j++) dst[j] = w * src[j];
      }
      op.gemm(DK, DV, m, Qt, ldp, Gd, DV, R, DV, nullptr, have ? pw[m] : 0.f, kFull);
      have = true;
    }
  }
}

// o = (q·k) v: the decode step from a zero state.
void decode_nostate(float* o, const float* q, const float* k, const float* v, int64_t dk,
                    int64_t dv) {
  double d = 0;
  for (int64_t i = 0; i < dk; i++) d += static_cast<double>(q[i]) * k[i];
  const float f = static_cast<float>(d);
  for (int64_t j = 0; j < dv; j++) o[j] = f * v[j];
}

struct FwdArgs {
  float* o; const float* q; const float* k; const float* v; const double* decay; float* state;
  const int32_t* slots; int64_t B, N, nh, dk, dv, block;
};

void forward_range(const FwdArgs& a, int64_t i0, int64_t i1) {
  const Ops& op = ops();
  Scratch& sc = t_scratch;
  const int64_t ldq = a.nh * a.dk, ldv = a.nh * a.dv, sz = a.dk * a.dv;
  for (int64_t i = i0; i < i1; i++) {
    const int64_t b = i / a.nh, h = i % a.nh;
    const int64_t qo = b * a.N * ldq + h * a.dk, vo = b * a.N * ldv + h * a.dv;
    float* S = nullptr;
    if (a.state) S = a.state + ((a.slots ? static_cast<int64_t>(a.slots[b]) : b) * a.nh + h) * sz;
    if (a.N == 1) {
      if (S)
        op.decode(a.o + vo, a.q + qo, a.k + qo, a.v + vo, S, a.dk, a.dv, static_cast<float>(a.decay[h]));
      else
        decode_nostate(a.o + vo, a.q + qo, a.k + qo, a.v + vo, a.dk, a.dv);
      continue;
    }
    const int64_t bm = std::min(a.block, a.N);
    float* pw = sc.grow(sc.pw, bm + 1);
    decay_powers(pw, a.decay[h], bm);
    if (!S) S = sc.grow(sc.s, sz);
    const Head hd{a.o + vo, ldv, a.q + qo, ldq, a.k + qo, ldq, a.v + vo, ldv, a.N, a.dk, a.dv};
    head_blocks(op, hd, pw, a.block, S, a.state != nullptr, a.state != nullptr, sc);
  }
}

struct BwdArgs {
  float* dq; float* dk; float* dv; const float* dO; const float* q; const float* k; const float* v;
  const double* decay; int64_t B, N, nh, dk_, dv_, block;
};

void backward_range(const BwdArgs& a, int64_t i0, int64_t i1) {
  const Ops& op = ops();
  Scratch& sc = t_scratch;
  const int64_t ldq = a.nh * a.dk_, ldv = a.nh * a.dv_;
  const int64_t bm = std::min(a.block, a.N);
  for (int64_t i = i0; i < i1; i++) {
    // task 2·bh: dq (forward scan); 2·bh+1: dk and dv (one reverse scan)
    const int64_t part = i % 2, bh = i / 2, b = bh / a.nh, h = bh % a.nh;
    const int64_t qo = b * a.N * ldq + h * a.dk_, vo = b * a.N * ldv + h * a.dv_;
    float* pw = sc.grow(sc.pw, bm + 1);
    decay_powers(pw, a.decay[h], bm);
    if (part == 0) {  // dq: the forward's scan with (q, k, v) → (dO, v, k)
      float* S = sc.grow(sc.st, a.dk_ * a.dv_);
      const Head hd{a.dq + qo, ldq, a.dO + vo, ldv, a.v + vo, ldv, a.k + qo, ldq, a.N, a.dv_, a.dk_};
      head_blocks(op, hd, pw, a.block, S, false, false, sc);
    } else {
      const int64_t L = a.N - 1;  // start at the last token, negated strides
      const HeadKV hk{a.dk + qo + L * ldq, a.dv + vo + L * ldv, a.q + qo + L * ldq, a.k + qo + L * ldq, -ldq,
                      a.v + vo + L * ldv, a.dO + vo + L * ldv, -ldv, a.N, a.dk_, a.dv_};
      head_backward_kv(op, hk, pw, a.block, sc);
    }
  }
}

}  // namespace

void lightning_forward(float* o, const float* q, const float* k, const float* v,
                       const double* decay, float* state, const int32_t* slots,
                       int64_t B, int64_t N, int64_t nh, int64_t dk, int64_t dv, int64_t block) {
  if (B <= 0 || N <= 0 || nh <= 0) return;
  if (block < 1) block = 1;
  const FwdArgs a{o, q, k, v, decay, state, slots, B, N, nh, dk, dv, block};
  const FwdArgs* pa = &a;
  const int64_t tasks = B * nh;
  // Work per task ≈ N·dk·dv multiply-adds (state traffic for decode); keep ≥ ~32k per chunk.
  const int64_t per = std::max<int64_t>(1, N * dk * dv);
  const int64_t grain = std::max<int64_t>(1, 32768 / per);
  if (tasks < 2 * grain)
    forward_range(a, 0, tasks);
  else
    parallel_for(tasks, [pa](int64_t i0, int64_t i1) { forward_range(*pa, i0, i1); }, grain);
}

void lightning_backward(float* dq, float* dk, float* dv, const float* dO,
                        const float* q, const float* k, const float* v, const double* decay,
                        int64_t B, int64_t N, int64_t nh, int64_t dk_, int64_t dv_, int64_t block) {
  if (B <= 0 || N <= 0 || nh <= 0) return;
  if (block < 1) block = 1;
  const BwdArgs a{dq, dk, dv, dO, q, k, v, decay, B, N, nh, dk_, dv_, block};
  const BwdArgs* pa = &a;
  const int64_t tasks = 2 * B * nh;
  const int64_t per = std::max<int64_t>(1, N * dk_ * dv_);
  const int64_t grain = std::max<int64_t>(1, 32768 / per);
  if (tasks < 2 * grain)
    backward_range(a, 0, tasks);
  else
    parallel_for(tasks, [pa](int64_t i0, int64_t i1) { backward_range(*pa, i0, i1); }, grain);
}

}  // namespace tnl
