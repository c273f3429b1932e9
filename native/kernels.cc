// Fused elementwise and row kernels of the model (contracts: kernels.h; semantics: the methods of
// the same name in src/backends/backend.ts, defined plainly in src/backends/reference/index.ts).
//
// - Row kernels run in parallel over rows (parallel_for) once a call has enough work; small calls
//   (a decode step) stay on the calling thread and allocate nothing.
// - Reductions that feed a normalisation or a loss accumulate in double. Results that sum over
//   rows (dθ, sum of squares, the loss) are reduced in a fixed order, so they do not depend on the
//   thread count.
// - exp on floats: a degree-7 polynomial after Cody–Waite reduction, scaled by vscalefps (≤ 2 ulp,
//   correct underflow and overflow). LRPE's cos/sin take the angle θ·p in double (exact: θ is a
//   float, p an int32) and reduce it in double, so large positions lose nothing.
// - AVX-512 code sits behind __attribute__((target)) and a CPUID check; elsewhere the portable
//   loops (branch-free, vectorised by the compiler) run, built for AVX2+FMA where the CPU has it.
//   TNL_ISA=avx2 or TNL_ISA=generic forces the lower paths.
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "threadpool.h"

#include "isa.h"

namespace tnl {
namespace {

using isa::avx2;
using isa::avx512;

// Runs fn(begin, end) over [0, n) items of `cost` elements each: inline when the whole call is
// small, else on the pool with chunks of at least kMinWork elements.
constexpr int64_t kMinWork = 32768;
template <typename F>
void par(int64_t n, int64_t cost, F&& fn) {
  if (n <= 0) return;
  const int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, cost));
  if (n < 2 * grain) {
    fn(int64_t{0}, n);
    return;
  }
  parallel_for(n, fn, grain);
}

inline float bf16_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

thread_local std::vector<float> t_buf;
float* scratch(int64_t n) {
  if (static_cast<int64_t>(t_buf.size()) < n) t_buf.resize(static_cast<size_t>(n));
  return t_buf.data();
}

// ---- portable building blocks -----------------------------------------------------------------
double dot_generic(const float* a, const float* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += static_cast<double>(a[i]) * b[i];
    s1 += static_cast<double>(a[i + 1]) * b[i + 1];
    s2 += static_cast<double>(a[i + 2]) * b[i + 2];
    s3 += static_cast<double>(a[i + 3]) * b[i + 3];
  }
  for (; i < n; i++) s0 += static_cast<double>(a[i]) * b[i];
  return (s0 + s1) + (s2 + s3);
}
// Σ a·b·c
double dot3_generic(const float* a, const float* b, const float* c, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += static_cast<double>(a[i]) * b[i] * c[i];
  return s;
}
// (p_y − 1)·scale with p_y = e_y/se, as (e_y − se)/se: when y holds the row's maximum, e_y = 1
// exactly and se − e_y is the sum of the other terms, so nothing cancels.
inline float target_grad(double ey, double se, float scale) {
  return static_cast<float>((ey - se) / se * static_cast<double>(scale));
}

// Branch-free scalar math that the compiler vectorises (no libm calls in the loops): the same
// algorithms as the AVX-512 code. The bodies are always_inline so that each instantiation below
// (the baseline, AVX2+FMA) is vectorised for its own target.
// GCC does not if-convert floating-point selects under its default -ftrapping-math, which would
// leave these loops scalar; nothing here relies on floating-point traps.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#define TNL_INLINE inline __attribute__((always_inline))
TNL_INLINE float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// e^x, ≤ 2 ulp, down into the subnormals: x = n·ln2 + r (n by the 1.5·2²³ rounding trick), e^r by
// its degree-7 Taylor polynomial, 2^n as two exact power-of-two factors (both normal).
TNL_INLINE float exp_poly(float x) {
  x = x < -104.f ? -104.f : x;
  x = x > 88.7f ? 88.7f : x;
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.f / 5040;
  p = p * r + 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t na = ni < -126 ? -126 : ni;
  return p * bits_to_f32(static_cast<uint32_t>(na + 127) << 23) *
         bits_to_f32(static_cast<uint32_t>(ni - na + 127) << 23);
}
// σ(x) from z = e^{−|x|} ≤ 1: 1/(1+z) for x ≥ 0, z/(1+z) below (no overflow, full accuracy in
// the negative tail).
TNL_INLINE float sigmoid_poly(float x) {
  const float z = exp_poly(x < 0.f ? x : -x);
  return (x >= 0.f ? 1.f : z) / (1.f + z);
}
TNL_INLINE void silu_body(const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * sigmoid_poly(x[i]);
}
// s = silu(x), d = silu'(x) = σ(x)(1 + x(1 − σ(x)))
TNL_INLINE void silu_grad_body(const float* __restrict x, float* __restrict s, float* __restrict d,
                               int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float sg = sigmoid_poly(x[i]);
    s[i] = x[i] * sg;
    d[i] = sg * (1.f + x[i] * (1.f - sg));
  }
}
// cs[i] = cos(θ[i]·p), sn[i] = sin(θ[i]·p): the angle a = θ·p is exact in double; a = k·π/2 + r
// with π/2 split in four 21-bit constants (each k·Pᵢ exact for |k| < 2³², so no FMA is needed),
// then Cephes' single-precision polynomials on r, and the quadrant's swap and signs.
TNL_INLINE void sincos_body(const float* __restrict theta, double p, float* __restrict cs,
                            float* __restrict sn, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double a = static_cast<double>(theta[i]) * p;
    const double kd = (a * 0.63661977236758134308 + 6755399441055744.0) - 6755399441055744.0;
    const double rd = (((a - kd * 1.570796012878418) - kd * 3.139164164167596e-07) -
                       kd * 6.22337468017542e-14) - kd * -2.5082791584901525e-20;
    const float r = static_cast<float>(rd), z = r * r;
    const float sr = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
    const float cr = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z -
                     0.5f * z + 1.f;
    const int32_t q = static_cast<int32_t>(kd) & 3;
    const float sv = (q & 1) ? cr : sr, cv = (q & 1) ? sr : cr;
    sn[i] = (q & 2) ? -sv : sv;
    cs[i] = (q == 1 || q == 2) ? -cv : cv;
  }
}
// Softmax cross-entropy of one row: returns lse − x[y]; d (nullable, may alias x) gets
// (softmax − onehot)·scale. x − max by TwoSum (exactly), e^x by exp_poly, the sum in double.
TNL_INLINE double ce_row_body(const float* x, float* d, int64_t V, int32_t y, float scale) {
  constexpr int L = 16;
  constexpr int64_t CH = 256;
  float ml[L];
  for (int j = 0; j < L; j++) ml[j] = -INFINITY;
  int64_t i = 0;
  for (; i + L <= V; i += L)
    for (int j = 0; j < L; j++) ml[j] = x[i + j] > ml[j] ? x[i + j] : ml[j];
  float mx = -INFINITY;
  for (int j = 0; j < L; j++) mx = ml[j] > mx ? ml[j] : mx;
  for (; i < V; i++) mx = x[i] > mx ? x[i] : mx;
  const float xy = x[y], nm = -mx;
  double se = 0;
  float e[CH];
  for (int64_t c0 = 0; c0 < V; c0 += CH) {
    const int64_t nc = std::min<int64_t>(CH, V - c0);
    const float* xc = x + c0;
    for (int64_t j = 0; j < nc; j++) {
      const float xv = xc[j], sv = xv + nm, ap = sv - nm, bp = sv - ap;
      const float dl = (xv - ap) + (nm - bp);  // x − mx = sv + dl exactly (TwoSum)
      const float es = exp_poly(sv);
      e[j] = es + es * dl;
    }
    float sl[L] = {};
    int64_t j = 0;
    for (; j + L <= nc; j += L)
      for (int l = 0; l < L; l++) sl[l] += e[j + l];
    double part = 0;
    for (; j < nc; j++) part += e[j];
    for (int l = 0; l < L; l++) part += sl[l];
    se += part;
    if (d) std::memcpy(d + c0, e, sizeof(float) * nc);
  }
  const double lse = mx + std::log(se);
  if (d) {
    const double ey = d[y];
    const float f = static_cast<float>(scale / se);
    for (int64_t k = 0; k < V; k++) d[k] *= f;
    d[y] = target_grad(ey, se, scale);
  }
  return lse - xy;
}

void silu_generic(const float* x, float* y, int64_t n) { silu_body(x, y, n); }
void silu_grad_generic(const float* x, float* s, float* d, int64_t n) { silu_grad_body(x, s, d, n); }
void sincos_generic(const float* theta, double p, float* cs, float* sn, int64_t n) {
  sincos_body(theta, p, cs, sn, n);
}
double ce_row_generic(const float* x, float* d, int64_t V, int32_t y, float scale) {
  return ce_row_body(x, d, V, y, scale);
}
#if TNL_X86
#define TNL_AVX2 __attribute__((target("avx2,fma")))
TNL_AVX2 void silu_avx2(const float* x, float* y, int64_t n) { silu_body(x, y, n); }
TNL_AVX2 void silu_grad_avx2(const float* x, float* s, float* d, int64_t n) { silu_grad_body(x, s, d, n); }
TNL_AVX2 void sincos_avx2(const float* theta, double p, float* cs, float* sn, int64_t n) {
  sincos_body(theta, p, cs, sn, n);
}
TNL_AVX2 double ce_row_avx2(const float* x, float* d, int64_t V, int32_t y, float scale) {
  return ce_row_body(x, d, V, y, scale);
}
#endif
#pragma GCC pop_options

// One head of LRPE: out[c] = s[c]·cos[c], out[dh + c] = s[c]·sin[c].
void lrpe_fwd_generic(float* out, const float* s, const float* cs, const float* sn, int64_t dh) {
  for (int64_t c = 0; c < dh; c++) {
    out[c] = s[c] * cs[c];
    out[dh + c] = s[c] * sn[c];
  }
}
// One head of the LRPE + silu backward for q and k: g = (d_cos·cos + d_sin·sin)·silu'; and
// acc[c] += p·(s_q·(dq_sin·cos − dq_cos·sin) + s_k·(dk_sin·cos − dk_cos·sin)) when acc is given
// (d/dθ of s·cos(θp) is −s·p·sin(θp), of s·sin(θp) it is s·p·cos(θp)).
struct LrpeBwd {
  float* gq; float* gk;
  const float* dq; const float* dk;                          // [cos half | sin half] of one head
  const float* sq; const float* dsq; const float* sk; const float* dsk;
  const float* cs; const float* sn;
  double* acc; double p; int64_t dh;
};
void lrpe_bwd_generic(const LrpeBwd& a) {
  for (int64_t c = 0; c < a.dh; c++) {
    const float qc = a.dq[c], qs = a.dq[a.dh + c], kc = a.dk[c], ks = a.dk[a.dh + c];
    a.gq[c] = (qc * a.cs[c] + qs * a.sn[c]) * a.dsq[c];
    a.gk[c] = (kc * a.cs[c] + ks * a.sn[c]) * a.dsk[c];
    if (a.acc) {
      const double e = static_cast<double>(a.sq[c]) * (static_cast<double>(qs) * a.cs[c] - static_cast<double>(qc) * a.sn[c]) +
                       static_cast<double>(a.sk[c]) * (static_cast<double>(ks) * a.cs[c] - static_cast<double>(kc) * a.sn[c]);
      a.acc[c] += a.p * e;
    }
  }
}
// AdamW in double, like the reference: g·scale, the moments and the update are each rounded to
// float once. (The kernel is bound by memory traffic, 28 bytes an element, not by this arithmetic.)
struct AdamC {
  double b1, omb1, b2, omb2, eps, decay, lr, inv_bc1, inv_bc2, gs;
};
void adamw_generic(float* p, const float* g, float* m, float* v, int64_t n, const AdamC& c) {
  for (int64_t i = 0; i < n; i++) {
    const double gi = static_cast<double>(g[i]) * c.gs;
    const float mi = static_cast<float>(c.b1 * m[i] + c.omb1 * gi);
    const float vi = static_cast<float>(c.b2 * v[i] + c.omb2 * gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = static_cast<float>(p[i] * c.decay - c.lr * (mi * c.inv_bc1) / (std::sqrt(vi * c.inv_bc2) + c.eps));
  }
}
double sumsq_bf16_generic(const uint16_t* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    const double f = bf16_to_f32(x[i]);
    s += f * f;
  }
  return s;
}

#if TNL_X86
// ---- AVX-512 building blocks ------------------------------------------------------------------
TNL_AVX512 inline __mmask16 tail16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}
TNL_AVX512 inline __mmask8 tail8(int64_t n) {
  return n >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << n) - 1u);
}

// e^x, ≤ 2 ulp: x = n·ln2 + r, |r| ≤ ln2/2, e^r by its degree-7 Taylor polynomial, times 2^n.
TNL_AVX512 inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.f), _mm512_min_ps(_mm512_set1_ps(89.f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}
TNL_AVX512 inline __m512 sigmoid512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  const __m512 z = exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
  const __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  return _mm512_div_ps(_mm512_mask_blend_ps(pos, z, one), _mm512_add_ps(one, z));
}

TNL_AVX512 inline double hsum_pd(__m512d v) { return _mm512_reduce_add_pd(v); }

TNL_AVX512 double dot_avx512(const float* a, const float* b, int64_t n) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  __m512d s2 = _mm512_setzero_pd(), s3 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 x0 = _mm512_loadu_ps(a + i), y0 = _mm512_loadu_ps(b + i);
    const __m512 x1 = _mm512_loadu_ps(a + i + 16), y1 = _mm512_loadu_ps(b + i + 16);
    s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x0)), _mm512_cvtps_pd(_mm512_castps512_ps256(y0)), s0);
    s1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x0, 1)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(y0, 1)), s1);
    s2 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x1)), _mm512_cvtps_pd(_mm512_castps512_ps256(y1)), s2);
    s3 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x1, 1)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(y1, 1)), s3);
  }
  for (; i < n; i += 8) {
    const __mmask8 m = tail8(n - i);
    const __m512d x = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, a + i));
    const __m512d y = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, b + i));
    s0 = _mm512_fmadd_pd(x, y, s0);
  }
  return hsum_pd(_mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3)));
}
TNL_AVX512 double dot3_avx512(const float* a, const float* b, const float* c, int64_t n) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    // a·b in float is exact in double only if done in double: widen first
    const __m512 x = _mm512_maskz_loadu_ps(m, a + i), y = _mm512_maskz_loadu_ps(m, b + i);
    const __m512 z = _mm512_maskz_loadu_ps(m, c + i);
    const __m512d xl = _mm512_cvtps_pd(_mm512_castps512_ps256(x)), xh = _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1));
    const __m512d yl = _mm512_cvtps_pd(_mm512_castps512_ps256(y)), yh = _mm512_cvtps_pd(_mm512_extractf32x8_ps(y, 1));
    const __m512d zl = _mm512_cvtps_pd(_mm512_castps512_ps256(z)), zh = _mm512_cvtps_pd(_mm512_extractf32x8_ps(z, 1));
    s0 = _mm512_fmadd_pd(_mm512_mul_pd(xl, yl), zl, s0);
    s1 = _mm512_fmadd_pd(_mm512_mul_pd(xh, yh), zh, s1);
  }
  return hsum_pd(_mm512_add_pd(s0, s1));
}
TNL_AVX512 double sumsq_bf16_avx512(const uint16_t* x, int64_t n) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m256i b = _mm256_maskz_loadu_epi16(m, x + i);
    const __m512 f = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(f)), hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1));
    s0 = _mm512_fmadd_pd(lo, lo, s0);
    s1 = _mm512_fmadd_pd(hi, hi, s1);
  }
  return hsum_pd(_mm512_add_pd(s0, s1));
}
TNL_AVX512 void silu_avx512(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, sigmoid512(v)));
  }
}
TNL_AVX512 void silu_grad_avx512(const float* x, float* s, float* d, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 sg = sigmoid512(v);
    _mm512_mask_storeu_ps(s + i, m, _mm512_mul_ps(v, sg));
    _mm512_mask_storeu_ps(d + i, m, _mm512_mul_ps(sg, _mm512_fmadd_ps(v, _mm512_sub_ps(one, sg), one)));
  }
}

// cos and sin of θ_i·p for 16 values at a time. The angle x = θ·p is exact in double (θ is a
// float, p an int32); x = k·π/2 + r, |r| ≤ π/4, by a two-constant FMA reduction in double
// (error ≈ 1e-16, whatever the position); then r is rounded to float and sin r, cos r come from
// Cephes' single-precision minimax polynomials (≈ 1 ulp); k mod 4 picks the swap and the signs.
TNL_AVX512 inline void reduce_pi2(__m512d x, __m256* r, __m256i* k) {
  const __m512d kd = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(0.63661977236758134308)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512d rd = _mm512_fnmadd_pd(kd, _mm512_set1_pd(1.5707963267948966), x);
  rd = _mm512_fnmadd_pd(kd, _mm512_set1_pd(6.123233995736766e-17), rd);
  *r = _mm512_cvtpd_ps(rd);
  *k = _mm512_cvtpd_epi32(kd);
}
TNL_AVX512 void sincos_avx512(const float* theta, double p, float* cs, float* sn, int64_t n) {
  const __m512d vp = _mm512_set1_pd(p);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 th = _mm512_maskz_loadu_ps(m, theta + i);
    __m256 rlo, rhi;
    __m256i klo, khi;
    reduce_pi2(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(th)), vp), &rlo, &klo);
    reduce_pi2(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(th, 1)), vp), &rhi, &khi);
    const __m512 r = _mm512_insertf32x8(_mm512_castps256_ps512(rlo), rhi, 1);
    const __m512i k = _mm512_inserti32x8(_mm512_castsi256_si512(klo), khi, 1);
    const __m512 z = _mm512_mul_ps(r, r);
    __m512 ps = _mm512_fmadd_ps(_mm512_set1_ps(-1.9515295891e-4f), z, _mm512_set1_ps(8.3321608736e-3f));
    ps = _mm512_fmadd_ps(ps, z, _mm512_set1_ps(-1.6666654611e-1f));
    const __m512 sr = _mm512_fmadd_ps(_mm512_mul_ps(ps, z), r, r);
    __m512 pc = _mm512_fmadd_ps(_mm512_set1_ps(2.443315711809948e-5f), z, _mm512_set1_ps(-1.388731625493765e-3f));
    pc = _mm512_fmadd_ps(pc, z, _mm512_set1_ps(4.166664568298827e-2f));
    const __m512 cr = _mm512_fmadd_ps(_mm512_mul_ps(pc, z), z, _mm512_fnmadd_ps(_mm512_set1_ps(0.5f), z, _mm512_set1_ps(1.f)));
    // quadrant q = k mod 4: sin x = (sr, cr, −sr, −cr)[q], cos x = (cr, −sr, −cr, sr)[q]
    const __mmask16 odd = _mm512_test_epi32_mask(k, _mm512_set1_epi32(1));
    const __m512i ssign = _mm512_slli_epi32(_mm512_and_si512(k, _mm512_set1_epi32(2)), 30);
    const __m512i csign = _mm512_slli_epi32(_mm512_and_si512(_mm512_add_epi32(k, _mm512_set1_epi32(1)), _mm512_set1_epi32(2)), 30);
    const __m512 sv = _mm512_mask_blend_ps(odd, sr, cr), cv = _mm512_mask_blend_ps(odd, cr, sr);
    _mm512_mask_storeu_ps(sn + i, m, _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(sv), ssign)));
    _mm512_mask_storeu_ps(cs + i, m, _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(cv), csign)));
  }
}

TNL_AVX512 void lrpe_fwd_avx512(float* out, const float* s, const float* cs, const float* sn, int64_t dh) {
  for (int64_t c = 0; c < dh; c += 16) {
    const __mmask16 m = tail16(dh - c);
    const __m512 x = _mm512_maskz_loadu_ps(m, s + c);
    _mm512_mask_storeu_ps(out + c, m, _mm512_mul_ps(x, _mm512_maskz_loadu_ps(m, cs + c)));
    _mm512_mask_storeu_ps(out + dh + c, m, _mm512_mul_ps(x, _mm512_maskz_loadu_ps(m, sn + c)));
  }
}
TNL_AVX512 void lrpe_bwd_avx512(const LrpeBwd& a) {
  const __m512d vp = _mm512_set1_pd(a.p);
  const int64_t dh = a.dh;
  for (int64_t c = 0; c < dh; c += 16) {
    const __mmask16 m = tail16(dh - c);
    const __m512 cs = _mm512_maskz_loadu_ps(m, a.cs + c), sn = _mm512_maskz_loadu_ps(m, a.sn + c);
    const __m512 qc = _mm512_maskz_loadu_ps(m, a.dq + c), qs = _mm512_maskz_loadu_ps(m, a.dq + dh + c);
    const __m512 kc = _mm512_maskz_loadu_ps(m, a.dk + c), ks = _mm512_maskz_loadu_ps(m, a.dk + dh + c);
    _mm512_mask_storeu_ps(a.gq + c, m, _mm512_mul_ps(_mm512_fmadd_ps(qc, cs, _mm512_mul_ps(qs, sn)), _mm512_maskz_loadu_ps(m, a.dsq + c)));
    _mm512_mask_storeu_ps(a.gk + c, m, _mm512_mul_ps(_mm512_fmadd_ps(kc, cs, _mm512_mul_ps(ks, sn)), _mm512_maskz_loadu_ps(m, a.dsk + c)));
    if (a.acc) {
      const __m512 eq = _mm512_fmsub_ps(qs, cs, _mm512_mul_ps(qc, sn));
      const __m512 ek = _mm512_fmsub_ps(ks, cs, _mm512_mul_ps(kc, sn));
      const __m512 e = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a.sq + c), eq, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a.sk + c), ek));
      const __mmask8 mlo = static_cast<__mmask8>(m), mhi = static_cast<__mmask8>(m >> 8);
      double* acc = a.acc + c;
      _mm512_mask_storeu_pd(acc, mlo, _mm512_fmadd_pd(vp, _mm512_cvtps_pd(_mm512_castps512_ps256(e)), _mm512_maskz_loadu_pd(mlo, acc)));
      _mm512_mask_storeu_pd(acc + 8, mhi, _mm512_fmadd_pd(vp, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)), _mm512_maskz_loadu_pd(mhi, acc + 8)));
    }
  }
}

TNL_AVX512 double ce_row_avx512(const float* x, float* d, int64_t V, int32_t y, float scale) {
  __m512 vmx = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 16 <= V; i += 16) vmx = _mm512_max_ps(vmx, _mm512_loadu_ps(x + i));
  if (i < V) vmx = _mm512_mask_max_ps(vmx, tail16(V - i), vmx, _mm512_maskz_loadu_ps(tail16(V - i), x + i));
  const float mx = _mm512_reduce_max_ps(vmx);
  const float xy = x[y];
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  const __m512 nvm = _mm512_set1_ps(-mx);
  for (i = 0; i < V; i += 16) {
    const __mmask16 m = tail16(V - i);
    // x − mx rounds when mx is far from x (|x − mx| > |x|): TwoSum gives the rounding error δ
    // exactly, and e^{s+δ} = e^s (1 + δ) to first order (|δ| ≤ 2⁻²⁴|s|).
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 sv = _mm512_add_ps(xv, nvm);
    const __m512 ap = _mm512_sub_ps(sv, nvm), bp = _mm512_sub_ps(sv, ap);
    const __m512 dl = _mm512_add_ps(_mm512_sub_ps(xv, ap), _mm512_sub_ps(nvm, bp));
    const __m512 es = exp512(sv);
    const __m512 e = _mm512_maskz_mov_ps(m, _mm512_fmadd_ps(es, dl, es));
    if (d) _mm512_mask_storeu_ps(d + i, m, e);
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
  }
  const double se = hsum_pd(_mm512_add_pd(s0, s1));
  const double lse = mx + std::log(se);
  if (d) {
    const double ey = d[y];
    const __m512 f = _mm512_set1_ps(static_cast<float>(scale / se));
    for (i = 0; i < V; i += 16) {
      const __mmask16 m = tail16(V - i);
      _mm512_mask_storeu_ps(d + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, d + i), f));
    }
    d[y] = target_grad(ey, se, scale);
  }
  return lse - xy;
}

TNL_AVX512 void adamw_avx512(float* p, const float* g, float* m, float* v, int64_t n, const AdamC& c) {
  const __m512d b1 = _mm512_set1_pd(c.b1), omb1 = _mm512_set1_pd(c.omb1), b2 = _mm512_set1_pd(c.b2);
  const __m512d omb2 = _mm512_set1_pd(c.omb2), eps = _mm512_set1_pd(c.eps), dec = _mm512_set1_pd(c.decay);
  const __m512d lr = _mm512_set1_pd(c.lr), ib1 = _mm512_set1_pd(c.inv_bc1), ib2 = _mm512_set1_pd(c.inv_bc2);
  const __m512d gs = _mm512_set1_pd(c.gs);
  for (int64_t i = 0; i < n; i += 8) {
    const __mmask8 k = tail8(n - i);
    const __m512d gi = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, g + i)), gs);
    const __m256 mf = _mm512_cvtpd_ps(_mm512_fmadd_pd(b1, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, m + i)), _mm512_mul_pd(omb1, gi)));
    const __m256 vf = _mm512_cvtpd_ps(_mm512_fmadd_pd(b2, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, v + i)),
                                                      _mm512_mul_pd(_mm512_mul_pd(omb2, gi), gi)));
    _mm256_mask_storeu_ps(m + i, k, mf);
    _mm256_mask_storeu_ps(v + i, k, vf);
    const __m512d den = _mm512_add_pd(_mm512_sqrt_pd(_mm512_mul_pd(_mm512_cvtps_pd(vf), ib2)), eps);
    const __m512d upd = _mm512_div_pd(_mm512_mul_pd(lr, _mm512_mul_pd(_mm512_cvtps_pd(mf), ib1)), den);
    const __m512d pn = _mm512_fmsub_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, p + i)), dec, upd);
    _mm256_mask_storeu_ps(p + i, k, _mm512_cvtpd_ps(pn));
  }
}
#endif  // TNL_X86

// ---- dispatch ---------------------------------------------------------------------------------
struct Ops {
  double (*dot)(const float*, const float*, int64_t);
  double (*dot3)(const float*, const float*, const float*, int64_t);
  void (*silu)(const float*, float*, int64_t);
  void (*silu_grad)(const float*, float*, float*, int64_t);
  void (*sincos)(const float*, double, float*, float*, int64_t);
  double (*ce_row)(const float*, float*, int64_t, int32_t, float);
  void (*adamw)(float*, const float*, float*, float*, int64_t, const AdamC&);
  double (*sumsq_bf16)(const uint16_t*, int64_t);
  void (*lrpe_fwd)(float*, const float*, const float*, const float*, int64_t);
  void (*lrpe_bwd)(const LrpeBwd&);
};
const Ops& ops() {
  static const Ops o = [] {
#if TNL_X86
    if (avx512())
      return Ops{dot_avx512, dot3_avx512, silu_avx512, silu_grad_avx512, sincos_avx512,
                 ce_row_avx512, adamw_avx512, sumsq_bf16_avx512, lrpe_fwd_avx512, lrpe_bwd_avx512};
    if (avx2())
      return Ops{dot_generic, dot3_generic, silu_avx2, silu_grad_avx2, sincos_avx2,
                 ce_row_avx2, adamw_generic, sumsq_bf16_generic, lrpe_fwd_generic, lrpe_bwd_generic};
#endif
    return Ops{dot_generic, dot3_generic, silu_generic, silu_grad_generic, sincos_generic,
               ce_row_generic, adamw_generic, sumsq_bf16_generic, lrpe_fwd_generic, lrpe_bwd_generic};
  }();
  return o;
}

// Σ over [0, n) of f(begin, end) in fixed chunks, summed in chunk order (thread-count independent).
template <typename F>
double chunked_sum(int64_t n, F&& f) {
  constexpr int64_t CH = 1 << 16;
  const int64_t nc = (n + CH - 1) / CH;
  if (nc <= 1) return n > 0 ? f(int64_t{0}, n) : 0.0;
  std::vector<double> part(static_cast<size_t>(nc));
  double* pp = part.data();
  par(nc, CH, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) pp[c] = f(c * CH, std::min(n, (c + 1) * CH));
  });
  double s = 0;
  for (double x : part) s += x;
  return s;
}

}  // namespace

// ---- embedding ----------------------------------------------------------------------------------
void embedding_f32(float* out, const float* table, const int32_t* ids, int64_t T, int64_t D, float scale) {
  par(T, D, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const float* src = table + static_cast<int64_t>(ids[t]) * D;
      float* dst = out + t * D;
      for (int64_t d = 0; d < D; d++) dst[d] = scale * src[d];
    }
  });
}

void embedding_bf16(float* out, const uint16_t* table, const int32_t* ids, int64_t T, int64_t D, float scale) {
  par(T, D, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const uint16_t* src = table + static_cast<int64_t>(ids[t]) * D;
      float* dst = out + t * D;
      for (int64_t d = 0; d < D; d++) {
        const uint32_t u = static_cast<uint32_t>(src[d]) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        dst[d] = scale * f;
      }
    }
  });
}

// Deterministic scatter-add: the pool splits the D columns, each column sums its tokens in order.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t T, int64_t D,
                        float scale, int32_t padding_idx) {
  constexpr int64_t CB = 64;  // columns per item (a cache line of 16 floats × 4)
  const int64_t nb = (D + CB - 1) / CB;
  par(nb, CB * T, [&](int64_t b0, int64_t b1) {
    const int64_t c0 = b0 * CB, c1 = std::min(D, b1 * CB);
    for (int64_t t = 0; t < T; t++) {
      if (ids[t] == padding_idx) continue;
      float* dst = dtable + static_cast<int64_t>(ids[t]) * D;
      const float* src = dout + t * D;
      for (int64_t c = c0; c < c1; c++) dst[c] += scale * src[c];
    }
  });
}

// ---- SimpleRMSNorm ------------------------------------------------------------------------------
void srmsnorm(float* y, float* rstd, const float* x, int64_t rows, int64_t D, float eps) {
  const Ops& op = ops();
  par(rows, D, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * D;
      const double ss = op.dot(xr, xr, D);
      const double rs = 1.0 / std::sqrt(ss / static_cast<double>(D) + static_cast<double>(eps));
      rstd[r] = static_cast<float>(rs);
      const float f = static_cast<float>(rs);
      float* yr = y + r * D;
      for (int64_t d = 0; d < D; d++) yr[d] = xr[d] * f;
    }
  });
}

void srmsnorm_backward(float* dx, const float* dy, const float* y, const float* rstd, int64_t rows,
                       int64_t D, bool accumulate) {
  const Ops& op = ops();
  par(rows, D, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* dyr = dy + r * D;
      const float* yr = y + r * D;
      const float dot = static_cast<float>(op.dot(dyr, yr, D) / static_cast<double>(D));
      const float rs = rstd[r];
      float* dxr = dx + r * D;
      if (accumulate)
        for (int64_t d = 0; d < D; d++) dxr[d] += rs * (dyr[d] - yr[d] * dot);
      else
        for (int64_t d = 0; d < D; d++) dxr[d] = rs * (dyr[d] - yr[d] * dot);
    }
  });
}

// ---- gated linear attention pieces ----------------------------------------------------------
void gla_qkv(float* q, float* k, float* v, const float* qkvu, int64_t T, int64_t heads, int64_t dh,
             const float* theta, const int32_t* positions, const int32_t* vmask) {
  const Ops& op = ops();
  const int64_t H = heads * dh, dk = theta ? 2 * dh : dh, C4 = 4 * H;
  par(T, 4 * H, [&](int64_t t0, int64_t t1) {
    float* buf = theta ? scratch(4 * H) : nullptr;  // silu(q̃), silu(k̃), cos, sin
    for (int64_t t = t0; t < t1; t++) {
      const float* row = qkvu + t * C4;
      float* qo = q + t * heads * dk;
      float* ko = k + t * heads * dk;
      if (!theta) {
        op.silu(row, qo, H);
        op.silu(row + H, ko, H);
      } else {
        float *sq = buf, *sk = buf + H, *cs = buf + 2 * H, *sn = buf + 3 * H;
        op.silu(row, sq, H);
        op.silu(row + H, sk, H);
        op.sincos(theta, static_cast<double>(positions[t]), cs, sn, H);
        for (int64_t h = 0; h < heads; h++) {
          const int64_t i0 = h * dh;
          op.lrpe_fwd(qo + h * dk, sq + i0, cs + i0, sn + i0, dh);
          op.lrpe_fwd(ko + h * dk, sk + i0, cs + i0, sn + i0, dh);
        }
      }
      float* vo = v + t * H;
      if (vmask && vmask[t] == 0)
        std::memset(vo, 0, sizeof(float) * H);
      else
        std::memcpy(vo, row + 2 * H, sizeof(float) * H);
    }
  });
}

void gla_qkv_backward(float* dqkvu, float* dtheta, const float* dq, const float* dk, const float* dv,
                      const float* qkvu, int64_t T, int64_t heads, int64_t dh, const float* theta,
                      const int32_t* positions, const int32_t* vmask) {
  const Ops& op = ops();
  const int64_t H = heads * dh, dkk = theta ? 2 * dh : dh, C4 = 4 * H;
  // dθ: per chunk of rows a double partial, reduced in chunk order afterwards.
  constexpr int64_t CR = 32;
  const int64_t nchunks = (T + CR - 1) / CR;
  std::vector<double> part;
  if (theta && dtheta) part.assign(static_cast<size_t>(nchunks * H), 0.0);
  double* pp = part.data();
  par(nchunks, CR * 6 * H, [&](int64_t c0, int64_t c1) {
    float* buf = scratch(6 * H);  // silu, silu' of q̃ and k̃; cos, sin
    float *sq = buf, *gq = buf + H, *sk = buf + 2 * H, *gk = buf + 3 * H, *cs = buf + 4 * H, *sn = buf + 5 * H;
    for (int64_t ch = c0; ch < c1; ch++) {
      double* acc = pp ? pp + ch * H : nullptr;
      for (int64_t t = ch * CR; t < std::min(T, (ch + 1) * CR); t++) {
        const float* row = qkvu + t * C4;
        float* grow = dqkvu + t * C4;
        const float* dqr = dq + t * heads * dkk;
        const float* dkr = dk + t * heads * dkk;
        op.silu_grad(row, sq, gq, H);
        op.silu_grad(row + H, sk, gk, H);
        if (!theta) {
          for (int64_t i = 0; i < H; i++) {
            grow[i] = dqr[i] * gq[i];
            grow[H + i] = dkr[i] * gk[i];
          }
        } else {
          const double p = static_cast<double>(positions[t]);
          op.sincos(theta, p, cs, sn, H);
          for (int64_t h = 0; h < heads; h++) {
            const int64_t i0 = h * dh;
            op.lrpe_bwd(LrpeBwd{grow + i0, grow + H + i0, dqr + h * dkk, dkr + h * dkk, sq + i0, gq + i0,
                                sk + i0, gk + i0, cs + i0, sn + i0, acc ? acc + i0 : nullptr, p, dh});
          }
        }
        if (vmask && vmask[t] == 0)
          std::memset(grow + 2 * H, 0, sizeof(float) * H);
        else
          std::memcpy(grow + 2 * H, dv + t * H, sizeof(float) * H);
      }
    }
  });
  if (pp) {
    for (int64_t i = 0; i < H; i++) {
      double s = 0;
      for (int64_t ch = 0; ch < nchunks; ch++) s += pp[ch * H + i];
      dtheta[i] = static_cast<float>(static_cast<double>(dtheta[i]) + s);
    }
  }
}

void norm_gate(float* a, float* rstd, const float* o, const float* qkvu, int64_t T, int64_t H, float eps) {
  const Ops& op = ops();
  par(T, 2 * H, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const float* orow = o + t * H;
      const float* u = qkvu + t * 4 * H + 3 * H;
      const double rs = 1.0 / std::sqrt(op.dot(orow, orow, H) / static_cast<double>(H) + static_cast<double>(eps));
      rstd[t] = static_cast<float>(rs);
      const float f = static_cast<float>(rs);
      float* ar = a + t * H;
      for (int64_t c = 0; c < H; c++) ar[c] = orow[c] * f * u[c];
    }
  });
}

void norm_gate_backward(float* dO, float* dqkvu, const float* dA, const float* o, const float* rstd,
                        const float* qkvu, int64_t T, int64_t H) {
  const Ops& op = ops();
  par(T, 3 * H, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const float* orow = o + t * H;
      const float* da = dA + t * H;
      const float* u = qkvu + t * 4 * H + 3 * H;
      float* du = dqkvu + t * 4 * H + 3 * H;
      const float rs = rstd[t];
      // y = o·rs; du = dA ⊙ y; dO = rs (dA ⊙ u − y · mean(dA ⊙ u ⊙ y))
      const float dot = static_cast<float>(op.dot3(da, u, orow, H) * rs / static_cast<double>(H));
      float* dor = dO + t * H;
      for (int64_t c = 0; c < H; c++) {
        const float y = orow[c] * rs;
        du[c] = da[c] * y;
        dor[c] = rs * (da[c] * u[c] - y * dot);
      }
    }
  });
}

// ---- SGLU -----------------------------------------------------------------------------------
void sglu_gate(float* m, const float* h, int64_t T, int64_t G) {
  par(T, 3 * G, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const float* a = h + t * 2 * G;
      const float* b = a + G;
      float* mr = m + t * G;
      for (int64_t c = 0; c < G; c++) mr[c] = a[c] * b[c];
    }
  });
}

void sglu_gate_backward(float* dh, const float* dm, const float* h, int64_t T, int64_t G) {
  par(T, 5 * G, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const float* a = h + t * 2 * G;
      const float* b = a + G;
      const float* g = dm + t * G;
      float* da = dh + t * 2 * G;
      float* db = da + G;
      for (int64_t c = 0; c < G; c++) {
        da[c] = g[c] * b[c];
        db[c] = g[c] * a[c];
      }
    }
  });
}

// ---- loss -----------------------------------------------------------------------------------
double cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t T, int64_t V,
                     float grad_scale, int64_t* count) {
  const Ops& op = ops();
  std::vector<double> row_loss(static_cast<size_t>(std::max<int64_t>(T, 1)), 0.0);
  double* rl = row_loss.data();
  par(T, 3 * V, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int32_t y = targets[t];
      float* d = dlogits ? dlogits + t * V : nullptr;
      if (y == -100) {
        if (d) std::memset(d, 0, sizeof(float) * V);
        continue;
      }
      if (y < 0 || y >= V) {  // invalid target (the caller validates); never read out of bounds
        rl[t] = NAN;
        if (d) std::memset(d, 0, sizeof(float) * V);
        continue;
      }
      rl[t] = op.ce_row(logits + t * V, d, V, y, grad_scale);
    }
  });
  double loss = 0;
  int64_t n = 0;
  for (int64_t t = 0; t < T; t++)
    if (targets[t] != -100) {
      loss += rl[t];
      n++;
    }
  if (count) *count = n;
  return loss;
}

// ---- optimiser ------------------------------------------------------------------------------
void adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
           float eps, float weight_decay, int64_t step, float grad_scale) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const AdamC c{beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps,
                1.0 - static_cast<double>(lr) * weight_decay, lr, 1.0 / bc1, 1.0 / bc2, grad_scale};
  const Ops& op = ops();
  constexpr int64_t CH = 4096;
  par((n + CH - 1) / CH, CH, [&](int64_t c0, int64_t c1) {
    const int64_t i0 = c0 * CH, i1 = std::min(n, c1 * CH);
    op.adamw(p + i0, g + i0, m + i0, v + i0, i1 - i0, c);
  });
}

double sum_squares_f32(const float* x, int64_t n) {
  const Ops& op = ops();
  return chunked_sum(n, [&](int64_t i0, int64_t i1) { return op.dot(x + i0, x + i0, i1 - i0); });
}

double sum_squares_bf16(const uint16_t* x, int64_t n) {
  const Ops& op = ops();
  return chunked_sum(n, [&](int64_t i0, int64_t i1) { return op.sumsq_bf16(x + i0, i1 - i0); });
}

void add_inplace(float* y, const float* x, int64_t n) {
  constexpr int64_t CH = 4096;
  par((n + CH - 1) / CH, CH, [&](int64_t c0, int64_t c1) {
    const int64_t i1 = std::min(n, c1 * CH);
    for (int64_t i = c0 * CH; i < i1; i++) y[i] += x[i];
  });
}

void scale_inplace(float* x, int64_t n, float s) {
  constexpr int64_t CH = 4096;
  par((n + CH - 1) / CH, CH, [&](int64_t c0, int64_t c1) {
    const int64_t i1 = std::min(n, c1 * CH);
    for (int64_t i = c0 * CH; i < i1; i++) x[i] *= s;
  });
}

}  // namespace tnl
