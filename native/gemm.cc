// GEMM driver: BLIS-style blocking (jc → pc → ic → jr → ir) over packed panels, the micro-kernel
// and packing routines taken from the best ISA table for this CPU (chosen once), the work split
// across the thread pool. M ≤ 8 (decode) takes a separate streaming path: each weight row is read
// once, the columns split across threads, so it runs at memory bandwidth.
#include "gemm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "gemm_internal.h"
#include "threadpool.h"

namespace tnl {
namespace gemm {
namespace {

// ---- generic ISA (plain C++; the compiler vectorizes it for the baseline) ----------------------
constexpr int G_MR = 4, G_NR = 16;

void kern_generic(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
                  bool add) {
  float acc[G_MR][G_NR] = {};
  for (int64_t k = 0; k < kc; k++) {
    const float* bk = b + k * G_NR;
    const float* ak = a + k * G_MR;
    for (int r = 0; r < G_MR; r++)
      for (int j = 0; j < G_NR; j++) acc[r][j] += ak[r] * bk[j];
  }
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) c[r * ldc + j] = add ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}
void pack_a_generic(float* d, const float* A, int64_t lda, bool t, int64_t mc, int64_t kc) {
  pack_a_f32_scalar<G_MR>(d, A, lda, t, mc, kc);
}
void pack_b_generic(float* d, const float* B, int64_t ldb, bool t, int64_t nc, int64_t kc) {
  pack_b_scalar<G_NR>(d, B, ldb, t, nc, kc);
}
void pack_b16_generic(float* d, const uint16_t* B, int64_t ldb, bool t, int64_t nc, int64_t kc) {
  pack_b_scalar<G_NR>(d, B, ldb, t, nc, kc);
}
void small_generic(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A, const float* B,
                   int64_t ldb, bool t, float* C, int64_t ldc, bool add) {
  small_scalar(M, n0, n1, K, A, B, ldb, t, C, ldc, add);
}
void small16_generic(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A,
                     const uint16_t* B, int64_t ldb, bool t, float* C, int64_t ldc, bool add) {
  small_scalar(M, n0, n1, K, A, B, ldb, t, C, ldc, add);
}

}  // namespace

const Isa isa_generic = {"generic", G_MR, G_NR, kern_generic, pack_a_generic, pack_b_generic,
                         pack_b16_generic, small_generic, small16_generic, nullptr};

namespace {

// ---- dispatch ------------------------------------------------------------------------------
struct Selected {
  const Isa* isa;
  const IsaBF16* bf;  // null when vdpbf16ps is unavailable (or TNL_GEMM_NO_BF16 is set)
  char name[32];
};

const Selected& selected() {
  static const Selected s = [] {
    Selected r{&isa_generic, nullptr, {}};
    const char* force = std::getenv("TNL_ISA");  // "generic" | "avx2": force a slower path (tests)
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("fma");
    bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    bool hasbf = has512 && __builtin_cpu_supports("avx512bf16");
    if (force && std::strcmp(force, "generic") == 0) has512 = has2 = hasbf = false;
    if (force && std::strcmp(force, "avx2") == 0) has512 = hasbf = false;
    if (std::getenv("TNL_GEMM_NO_BF16")) hasbf = false;
    if (has512) r.isa = &isa_avx512;
    else if (has2) r.isa = &isa_avx2;
    if (hasbf) r.bf = &isa_avx512bf16;
#else
    (void)force;
#endif
    std::snprintf(r.name, sizeof r.name, "%s%s", r.isa->name, r.bf ? "+bf16" : "");
    return r;
  }();
  return s;
}

// ---- blocking parameters -------------------------------------------------------------------
int64_t env_int(const char* name, int64_t dflt) {
  const char* s = std::getenv(name);
  if (!s || !*s) return dflt;
  long v = std::strtol(s, nullptr, 10);
  return v > 0 ? v : dflt;
}
struct Blocking {
  int64_t kc, mc, nc;
};
const Blocking& blocking() {
  static const Blocking b = {env_int("TNL_GEMM_KC", 512), env_int("TNL_GEMM_MC", 192),
                             env_int("TNL_GEMM_NC", 4096)};
  return b;
}

// ---- workspaces: grow-only, 64-byte aligned; one shared (packed B), one per thread (packed A)
struct Buffer {
  void* p = nullptr;
  size_t size = 0;
  ~Buffer() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > size) {
      std::free(p);
      size = (bytes + 4095) & ~size_t(4095);
      p = std::aligned_alloc(64, size);
      if (!p) {
        size = 0;
        throw std::bad_alloc();
      }
    }
    return p;
  }
};
thread_local Buffer t_bufA, t_bufB, t_bufS;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Below this many flops the work is not worth waking the pool.
constexpr double kParallelFlops = 3e6;

// ---- the packed driver, for fp32 or bf16 packed elements -----------------------------------
// Elem: float (fp32 panels, kc elements per k) or uint32_t (bf16 pairs, ⌈kc/2⌉ per panel row).
template <typename Elem, typename PackA, typename PackB, typename Kern>
void packed(int64_t M, int64_t N, int64_t K, int MR, int NR, PackA pack_a, PackB pack_b, Kern kern,
            float* C, int64_t ldc, bool accumulate) {
  constexpr bool pairs = sizeof(Elem) == 4 && !std::is_same<Elem, float>::value;
  const Blocking& bl = blocking();
  const int64_t KC = pairs ? round_up(bl.kc, 2) : bl.kc;
  const int64_t MC = std::max<int64_t>(MR, bl.mc / MR * MR);
  const int64_t NC = std::max<int64_t>(NR, bl.nc / NR * NR);
  const double flops = 2.0 * M * N * K;
  const int T = flops < kParallelFlops ? 1 : num_threads();

  // Work items: blocks of MC rows (each packs its rows of A once) × column ranges of the B block.
  // Enough of them that a thread slowed by another process hands its share to the others (the
  // pool hands out ranges of items dynamically); columns are split only when M is short.
  const int64_t mblocks = ceil_div(M, MC);
  const int64_t mc_even = round_up(ceil_div(M, mblocks), MR);  // balanced block height
  const int64_t want = T > 1 ? 3 * T : 1;
  const int64_t kcp_max = pairs ? KC / 2 : KC;
  const int64_t nkb = ceil_div(K, KC);  // k blocks
  // All of op(B)[K × nc] is packed up front, so that each row block of C stays in cache across
  // the k blocks (one pass over C); nc is capped to keep that buffer ≤ 8 M elements.
  const int64_t nc_cap = std::max<int64_t>(NR, (int64_t(8) << 20) / (nkb * kcp_max) / NR * NR);
  const int64_t NCe = std::min(NC, nc_cap);
  Elem* bufB = static_cast<Elem*>(
      t_bufB.get(sizeof(Elem) * nkb * kcp_max * round_up(std::min(N, NCe), NR) + 64));

  for (int64_t jc = 0; jc < N; jc += NCe) {
    const int64_t nc = std::min(NCe, N - jc);
    const int64_t npanels = ceil_div(nc, NR);
    const int64_t kblock_elems = npanels * NR * kcp_max;  // one k block of packed B
    auto packB = [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1;) {  // item i = (k block, panel)
        const int64_t kb = i / npanels, j0 = i % npanels;
        const int64_t j1 = std::min(npanels, j0 + (i1 - i));
        const int64_t pc = kb * KC, kc = std::min(KC, K - pc);
        const int64_t kcp = pairs ? (kc + 1) / 2 : kc;
        const int64_t c0 = j0 * NR, c1 = std::min(nc, j1 * NR);
        pack_b(bufB + kb * kblock_elems + j0 * NR * kcp, jc + c0, c1 - c0, pc, kc);
        i += j1 - j0;
      }
    };
    if (T > 1) parallel_for(nkb * npanels, packB, 4);
    else packB(0, nkb * npanels);

    const int64_t nsplit = mblocks >= want ? 1 : std::min(npanels, ceil_div(want, mblocks));
    auto task = [&](int64_t t0, int64_t t1) {
      Elem* bufA = static_cast<Elem*>(t_bufA.get(sizeof(Elem) * kcp_max * mc_even + 64));
      for (int64_t t = t0; t < t1; t++) {
        const int64_t mb = t / nsplit, ni = t % nsplit;
        const int64_t ic = mb * mc_even;
        if (ic >= M) continue;
        const int64_t mc = std::min(mc_even, M - ic);
        const int64_t np0 = npanels * ni / nsplit, np1 = npanels * (ni + 1) / nsplit;
        if (np0 >= np1) continue;
        for (int64_t kb = 0; kb < nkb; kb++) {
          const int64_t pc = kb * KC, kc = std::min(KC, K - pc);
          const int64_t kcp = pairs ? (kc + 1) / 2 : kc;
          const bool add = accumulate || kb > 0;
          pack_a(bufA, ic, mc, pc, kc);
          for (int64_t jp = np0; jp < np1; jp++) {
            const int64_t j = jp * NR;
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - j));
            const Elem* bp = bufB + kb * kblock_elems + jp * NR * kcp;
            float* cj = C + ic * ldc + jc + j;
            for (int64_t i = 0; i < mc; i += MR) {
              const int mr = static_cast<int>(std::min<int64_t>(MR, mc - i));
              kern(kcp, bufA + i * kcp, bp, cj + i * ldc, ldc, mr, nr, add);
            }
          }
        }
      }
    };
    const int64_t ntasks = ceil_div(M, mc_even) * nsplit;
    if (T > 1) parallel_for(ntasks, task, 1);
    else task(0, ntasks);
  }
}

// Columns of the small-M path per parallel chunk: enough weight bytes to be worth a thread.
int64_t small_grain(int64_t K, int64_t elem_bytes) {
  const int64_t bytes_per_col = std::max<int64_t>(1, K * elem_bytes);
  return std::max<int64_t>(1, (256 * 1024) / (bytes_per_col * 16));
}

// A (op(A) is M×K) into a contiguous M×K buffer for the small-M kernels.
const float* contiguous_a(bool transA, int64_t M, int64_t K, const float* A, int64_t lda) {
  if (!transA && lda == K) return A;
  float* d = static_cast<float*>(t_bufS.get(sizeof(float) * M * K + 64));
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < K; k++) d[m * K + k] = transA ? A[k * lda + m] : A[m * lda + k];
  return d;
}

bool trivial(int64_t M, int64_t N, int64_t K, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return true;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; m++) std::memset(C + m * ldc, 0, sizeof(float) * N);
    return true;
  }
  return false;
}

constexpr int64_t kSmallM = 8;
constexpr int64_t kMediumM = 64;

}  // namespace
}  // namespace gemm

using namespace gemm;

void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
           const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (trivial(M, N, K, C, ldc, accumulate)) return;
  const Isa& isa = *selected().isa;
  if (M <= kSmallM) {
    const float* a = contiguous_a(transA, M, K, A, lda);
    const int64_t blocks = ceil_div(N, 16);
    auto f = [&](int64_t b0, int64_t b1) {
      isa.small_f32(M, b0 * 16, std::min(N, b1 * 16), K, a, B, ldb, transB, C, ldc, accumulate);
    };
    parallel_for(blocks, f, small_grain(K, 4));
    return;
  }
  if (M > 16 && M <= kMediumM && transB && isa.medium_tb_f32) {  // (one vector of At per k would be bound by the broadcasts)
    // At = op(A)ᵀ [K, Mp], zero padded to whole vectors
    const int64_t Mp = round_up(M, 16);
    float* at = static_cast<float*>(t_bufS.get(sizeof(float) * K * Mp + 64));
    for (int64_t k = 0; k < K; k++) {
      float* row = at + k * Mp;
      for (int64_t m = 0; m < M; m++) row[m] = transA ? A[k * lda + m] : A[m * lda + k];
      for (int64_t m = M; m < Mp; m++) row[m] = 0.f;
    }
    const int64_t blocks = ceil_div(N, 24);
    auto f = [&](int64_t b0, int64_t b1) {
      isa.medium_tb_f32(M, Mp, b0 * 24, std::min(N, b1 * 24), K, at, B, ldb, C, ldc, accumulate);
    };
    parallel_for(blocks, f, small_grain(K, 4));
    return;
  }
  auto pack_a = [&](float* dst, int64_t m0, int64_t mc, int64_t k0, int64_t kc) {
    const float* a = transA ? A + k0 * lda + m0 : A + m0 * lda + k0;
    isa.pack_a_f32(dst, a, lda, transA, mc, kc);
  };
  auto pack_b = [&](float* dst, int64_t n0, int64_t nc, int64_t k0, int64_t kc) {
    const float* b = transB ? B + n0 * ldb + k0 : B + k0 * ldb + n0;
    isa.pack_b_f32(dst, b, ldb, transB, nc, kc);
  };
  packed<float>(M, N, K, isa.MR, isa.NR, pack_a, pack_b, isa.kern_f32, C, ldc, accumulate);
}

void gemm_bf16(bool transA, bool transB, int64_t M, int64_t N, int64_t K, const float* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float* C, int64_t ldc,
               bool accumulate) {
  if (trivial(M, N, K, C, ldc, accumulate)) return;
  const Selected& sel = selected();
  const Isa& isa = *sel.isa;
  if (M <= kSmallM) {
    const int64_t blocks = ceil_div(N, 16);
    if (sel.bf && transB) {
      // A rounded to bf16, rows padded with zeros to a multiple of 32 elements.
      const int64_t ld16 = round_up(K, 32);
      uint16_t* a16 = static_cast<uint16_t*>(t_bufS.get(sizeof(uint16_t) * M * ld16 + 64));
      float* row = static_cast<float*>(t_bufA.get(sizeof(float) * K + 64));
      for (int64_t m = 0; m < M; m++) {
        const float* src = A + m * lda;
        if (transA) {
          for (int64_t k = 0; k < K; k++) row[k] = A[k * lda + m];
          src = row;
        }
        sel.bf->to_bf16(a16 + m * ld16, src, K);
        std::memset(a16 + m * ld16 + K, 0, sizeof(uint16_t) * (ld16 - K));
      }
      auto f = [&](int64_t b0, int64_t b1) {
        sel.bf->small_tb(M, b0 * 16, std::min(N, b1 * 16), K, a16, ld16, B, ldb, C, ldc, accumulate);
      };
      parallel_for(blocks, f, small_grain(K, 2));
      return;
    }
    const float* a = contiguous_a(transA, M, K, A, lda);
    if (sel.bf) {  // round A to bf16 as the packed path does, so both paths agree
      float* d = static_cast<float*>(t_bufS.get(sizeof(float) * M * K + 64));
      for (int64_t i = 0; i < M * K; i++) d[i] = bf16_to_f32(f32_to_bf16(a[i]));
      a = d;
    }
    auto f = [&](int64_t b0, int64_t b1) {
      isa.small_bf16_f32(M, b0 * 16, std::min(N, b1 * 16), K, a, B, ldb, transB, C, ldc, accumulate);
    };
    parallel_for(blocks, f, small_grain(K, 2));
    return;
  }
  if (sel.bf) {
    const IsaBF16& bf = *sel.bf;
    auto pack_a = [&](uint32_t* dst, int64_t m0, int64_t mc, int64_t k0, int64_t kc) {
      const float* a = transA ? A + k0 * lda + m0 : A + m0 * lda + k0;
      bf.pack_a(dst, a, lda, transA, mc, kc);
    };
    auto pack_b = [&](uint32_t* dst, int64_t n0, int64_t nc, int64_t k0, int64_t kc) {
      const uint16_t* b = transB ? B + n0 * ldb + k0 : B + k0 * ldb + n0;
      bf.pack_b(dst, b, ldb, transB, nc, kc);
    };
    packed<uint32_t>(M, N, K, bf.MR, bf.NR, pack_a, pack_b, bf.kern, C, ldc, accumulate);
    return;
  }
  auto pack_a = [&](float* dst, int64_t m0, int64_t mc, int64_t k0, int64_t kc) {
    const float* a = transA ? A + k0 * lda + m0 : A + m0 * lda + k0;
    isa.pack_a_f32(dst, a, lda, transA, mc, kc);
  };
  auto pack_b = [&](float* dst, int64_t n0, int64_t nc, int64_t k0, int64_t kc) {
    const uint16_t* b = transB ? B + n0 * ldb + k0 : B + k0 * ldb + n0;
    isa.pack_b_bf16_as_f32(dst, b, ldb, transB, nc, kc);
  };
  packed<float>(M, N, K, isa.MR, isa.NR, pack_a, pack_b, isa.kern_f32, C, ldc, accumulate);
}

const char* gemm_isa() { return selected().name; }

}  // namespace tnl
