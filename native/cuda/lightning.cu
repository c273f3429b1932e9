// Lightning Attention on the GPU (compiled at first use by NVRTC; no headers).
//
//   o_t = λ^{t+1}·q_t·S_in + Σ_{j≤t} λ^{t−j} (q_t·k_j) v_j,   S_out = λ^N S_in + Σ_j λ^{N−1−j} k_jᵀ v_j
//
// q, k: [B, N, nh·DK]; v, o: [B, N, nh·DV]; state [slots, nh, DK, DV] f32 (optional; read at the start,
// written at the end). `reverse` runs time backwards (token τ is N−1−τ): the backward pass is three
// such calls with the roles of q, k, v, dO exchanged (see src/backends/cuda/index.ts).
//
// lightning_f32 / lightning_bf16in: chunks of C tokens, one block per (dv tile, head, sequence), the
// state tile [DK, DVT] in shared memory, fp32 arithmetic; any DK, DV (the exact path, and decode).
// lightning_tc_k{DK}_v{DVT}_*: tensor cores (mma.sync m16n8k16 bf16, fp32 accumulation), chunk 64,
// DK ∈ {64, 128}, DV a multiple of 64 (DVT = 128 or 64 columns per block); the fp32 state lives in
// registers, a bf16 copy in shared memory feeds q·S; optionally sequence-parallel (see below).
// lightning_ws_k128_v128_*: Hopper (sm_90a), DK = DVT = 128, the same jobs on wgmma with warp-specialised
// warpgroups (the last section).
// (u16, u32, i64, bf2f, f2bf, ldf, stf: common.cuh, put in front of this file by the loader)

// ------------------------------------------------------------------------------------------------
// The exact chunked kernel (fp32 arithmetic).
template <typename T, typename TO>
__device__ void lightning_chunk(TO* o, const T* q, const T* k, const T* v, int B, int N, int nh, int DK, int DV,
                                const float* loglam, float* state, const int* slots, int reverse, int C, int DVT) {
  extern __shared__ float sm[];
  const int c0 = blockIdx.x * DVT, h = blockIdx.y, b = blockIdx.z;
  const int w = min(DVT, DV - c0);
  const int ldq = DK + 1, ldv = DVT + 1, lda = C + 1;
  float* Qs = sm;
  float* Ks = Qs + C * ldq;
  float* Vs = Ks + C * ldq;
  float* S = Vs + C * ldv;
  float* A = S + DK * DVT;
  float* pw = A + C * lda;
  const float ll = loglam[h];
  for (int i = threadIdx.x; i <= C; i += blockDim.x) pw[i] = expf(ll * (float)i);
  const int slot = slots ? slots[b] : b;
  float* st = state ? state + ((i64)slot * nh + h) * DK * DV : nullptr;
  for (int idx = threadIdx.x; idx < DK * w; idx += blockDim.x) {
    const int kk = idx / w, c = idx % w;
    S[kk * DVT + c] = st ? st[(i64)kk * DV + c0 + c] : 0.f;
  }
  const i64 qrow = (i64)nh * DK, vrow = (i64)nh * DV;
  for (int s0 = 0; s0 < N; s0 += C) {
    const int m = min(C, N - s0);
    __syncthreads();
    for (int idx = threadIdx.x; idx < m * DK; idx += blockDim.x) {
      const int i = idx / DK, kk = idx % DK;
      const int tok = reverse ? N - 1 - (s0 + i) : s0 + i;
      const i64 g = ((i64)b * N + tok) * qrow + (i64)h * DK + kk;
      Qs[i * ldq + kk] = ldf(q, g);
      Ks[i * ldq + kk] = ldf(k, g);
    }
    for (int idx = threadIdx.x; idx < m * w; idx += blockDim.x) {
      const int i = idx / w, c = idx % w;
      const int tok = reverse ? N - 1 - (s0 + i) : s0 + i;
      Vs[i * ldv + c] = ldf(v, ((i64)b * N + tok) * vrow + (i64)h * DV + c0 + c);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < m * m; idx += blockDim.x) {
      const int i = idx / m, j = idx % m;
      float a = 0.f;
      if (j <= i) {
        for (int kk = 0; kk < DK; kk++) a += Qs[i * ldq + kk] * Ks[j * ldq + kk];
        a *= pw[i - j];
      }
      A[i * lda + j] = a;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < m * w; idx += blockDim.x) {
      const int i = idx / w, c = idx % w;
      float inter = 0.f, intra = 0.f;
      for (int kk = 0; kk < DK; kk++) inter += Qs[i * ldq + kk] * S[kk * DVT + c];
      for (int j = 0; j <= i; j++) intra += A[i * lda + j] * Vs[j * ldv + c];
      const int tok = reverse ? N - 1 - (s0 + i) : s0 + i;
      stf(o, ((i64)b * N + tok) * vrow + (i64)h * DV + c0 + c, pw[i + 1] * inter + intra);
    }
    __syncthreads();
    const float lm = pw[m];
    for (int idx = threadIdx.x; idx < DK * w; idx += blockDim.x) {
      const int kk = idx / w, c = idx % w;
      float u = 0.f;
      for (int j = 0; j < m; j++) u += pw[m - 1 - j] * Ks[j * ldq + kk] * Vs[j * ldv + c];
      S[kk * DVT + c] = lm * S[kk * DVT + c] + u;
    }
  }
  if (st) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < DK * w; idx += blockDim.x) {
      const int kk = idx / w, c = idx % w;
      st[(i64)kk * DV + c0 + c] = S[kk * DVT + c];
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Tensor-core kernel (mma.sync m16n8k16 bf16, fp32 accumulation; chunk 64; 256 threads = 8 warps,
// one block per SM). A block owns one (sequence, head, DVT-column tile) with DVT = 128 where DV allows
// (q and k are then read once), DK ∈ {64, 128}. Per chunk, one barrier:
//   top:    wait for the chunk's cp.async group, __syncthreads, issue the loads of chunk + 2 (3 stages)
//   output: warp (rt, ch) = (w & 3, w >> 2) owns rows 16·rt, columns ch·DVT/2; Q fragments stay in
//           registers; O = λ^{i+1}·Q·S + Σ_j (Q·Kᵀ ⊙ λ^{i−j})·V, the 16×16 score blocks going from the
//           accumulator straight into A fragments (no shared-memory round trip, causal blocks only)
//   state:  warp w owns 16 rows of the fp32 state (all DVT columns for DK = 128) in registers:
//           S = λ^m·S + (K ⊙ λ^{m−1−j})ᵀ·V, the decay applied to the K fragments in registers; its bf16
//           copy goes to the other of two shared buffers (read by the next chunk's Q·S).
// Shared memory rows are XOR-swizzled in 16-byte units (conflict-free ldmatrix and cp.async).
//
// Sequence-parallel form (G > 1 blocks per (sequence, head, tile), all resident): the sequence is cut
// into segments of L tokens (the last of each round LG: Jobs), handed out in rounds of G. Per round,
// block g (1) runs the state update alone over its segment from zero (ΔS_g; not the last block),
// (2) publishes ΔS_g, meets the round's other blocks at a counter in global memory, and forms its
// incoming state S_in = λ^L(…(λ^L·S_round + ΔS_0)…) + ΔS_{g−1},
// (3) runs the full chunk loop over its segment from S_in (reading k, v a second time). Block G−1 leaves
// its final state as the next round's S_round. The loads run ahead across the phases.
#define LT_C 64

// A block's job list, a chunk a job. G = 1: the chunks of the sequence. G > 1 (block g of G): per round
// r of R, its NS state-only chunks, then its NF full ones, over its segment. Segments are L tokens but
// the round's last, LG: that block runs no state-only pass (nobody reads its ΔS), so a longer segment
// lets it end the round with the others, whose rounds include those passes.
// The state-only pass covers only the segment's last T = ln(2³⁰)/(−ln λ) tokens (whole chunks): an
// earlier token enters ΔS with weight λ^{L−1−t} < 2⁻³⁰ of a kept one's, below fp32 resolution. With TNL's
// slopes that skips most of the pass for the strongly decaying heads (slope 2^−0.25: T = 25 tokens) and
// none of it for the slowest (2^−8 at layer 0: T ≈ 5,300; the last layers barely decay at all). The
// last block's extra length LG − L shrinks in proportion.
struct Jobs {
  int G, g, N, L, LG, NS, NF, RL, R, NJ, SK;  // SK: chunks at a segment's start the state-only pass skips
  __device__ Jobs(int N_, int G_, int g_, int L_, int LG_, float ll) : G(G_), g(g_), N(N_), L(L_), LG(LG_) {
    SK = 0;
    if (G == 1) { NS = 0; NF = 0; RL = 0; R = 1; NJ = (N + LT_C - 1) / LT_C; return; }
    int ns = L / LT_C;
    if (ll < 0.f) {
      const float T = 20.8f / -ll;  // ln 2³⁰ ≈ 20.79
      if (T < (float)L) ns = max(1, (int)ceilf(T / LT_C));
    }
    NS = g == G - 1 ? 0 : ns;
    SK = L / LT_C - ns;
    LG = L + (LG - L) / LT_C * ns / (L / LT_C) * LT_C;  // the last block's extra length, as the passes it balances
    NF = segLen() / LT_C;
    RL = (G - 1) * L + LG;
    R = (N + RL - 1) / RL;
    NJ = R * (NS + NF);
  }
  __device__ int segLen() const { return g == G - 1 ? LG : L; }
  __device__ int segStart(int r) const { return r * RL + g * L; }
  __device__ void at(int J, int& s0, int& m, int& full, int& r, int& c) const {
    if (G == 1) { r = 0; c = J; full = 1; s0 = LT_C * J; }
    else { r = J / (NS + NF); const int x = J - r * (NS + NF); full = x >= NS; c = full ? x - NS : x; s0 = segStart(r) + LT_C * (full ? c : SK + c); }
    m = min(LT_C, N - s0);
  }
};

// byte offset of element (row, col) in a [rows][W] bf16 array with 16-byte units XOR-swizzled by row
__device__ __forceinline__ u32 swz(int row, int col, int W) {
  return (u32)((row * W + ((((col >> 3) ^ row) & 7) | ((col >> 3) & ~7)) * 8 + (col & 7)) * 2);
}
__device__ __forceinline__ void ldsm4(u32 r[4], u32 a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ldsm4t(u32 r[4], u32 a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void mma16816(float c[4], const u32 a[4], u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// two floats to bf16x2 (round to nearest even), lo in the low half
__device__ __forceinline__ u32 pack2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ u32 scale2(u32 x, float flo, float fhi) {
  return pack2(__uint_as_float(x << 16) * flo, __uint_as_float(x & 0xffff0000u) * fhi);
}
__device__ __forceinline__ void cp16(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp16h(u32 dst, const void* src, int bytes, unsigned long long pol) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" :: "r"(dst), "l"(src), "r"(bytes), "l"(pol));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_wait1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
__device__ __forceinline__ float4 ldcg4(const float* p) {
  float4 r;
  asm volatile("ld.global.cg.v4.f32 {%0,%1,%2,%3}, [%4];\n" : "=f"(r.x), "=f"(r.y), "=f"(r.z), "=f"(r.w) : "l"(p));
  return r;
}
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned r;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(r) : "l"(p) : "memory");
  return r;
}
__device__ __forceinline__ void st2(float* p, float a, float b) { *(float2*)p = make_float2(a, b); }
__device__ __forceinline__ void st2(u16* p, float a, float b) { *(u32*)p = pack2(a, b); }

template <int DK, int DVT, typename TO>
__device__ __forceinline__ void lightning_tc(TO* o, const u16* q, const u16* k, const u16* v, int B, int N, int nh, int DV,
                                             const float* loglam, float* state, const int* slots, int reverse,
                                             int G, int L, int LG, float* ws, unsigned* cnt, int hint) {
  constexpr int STAGE = LT_C * (2 * DK + DVT) * 2;  // bytes: Q, K [64][DK], V [64][DVT]
  constexpr int SBB = DK * DVT * 2;                 // bytes of one bf16 state copy [DK][DVT]
  constexpr int RT = DK / 16;                       // row tiles of the state (8 or 4)
  constexpr int NTS = RT == 8 ? DVT / 8 : DVT / 16; // state n-tiles per warp
  constexpr int NTO = DVT / 16;                     // output n-tiles per warp
  constexpr int KS = DK / 16;
  constexpr int SE = DK * DVT;                      // state elements
  extern __shared__ __align__(128) unsigned char smraw[];
  const u32 sbase = smem_addr(smraw);
  const u32 sb0 = sbase + 3 * STAGE;
  float* pwz = (float*)(smraw + 3 * STAGE + 2 * SBB);  // pwz[64 + d] = λ^d (d ≥ 0), 0 (d < 0)

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g8 = lane >> 2, t4 = lane & 3;
  const int ct = blockIdx.x / G, g = blockIdx.x % G, h = blockIdx.y, b = blockIdx.z;
  const int c0 = ct * DVT, ntiles = DV / DVT;
  const int unit = (b * nh + h) * ntiles + ct;
  const float ll = loglam[h];
  for (int i = tid; i <= 128; i += 256) pwz[i] = i >= 64 ? expf(ll * (float)(i - 64)) : 0.f;
  const int slot = slots ? slots[b] : b;
  float* st = state ? state + ((i64)slot * nh + h) * DK * DV + c0 : nullptr;
  const i64 qrow = (i64)nh * DK, vrow = (i64)nh * DV;
  unsigned long long pol = 0;
  if (hint) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));

  // state ownership: rows 16·srt + (g8, g8 + 8), columns scb + 8·nt + 2·t4 (+1)
  const int srt = RT == 8 ? w : (w & 3);
  const int scb = RT == 8 ? 0 : (w >> 2) * (DVT / 2);
  float s[NTS][4];
  auto load_strided = [&]() {
#pragma unroll
    for (int nt = 0; nt < NTS; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int kk = 16 * srt + g8 + (e >= 2 ? 8 : 0), c = scb + 8 * nt + 2 * t4 + (e & 1);
        s[nt][e] = st ? st[(i64)kk * DV + c] : 0.f;
      }
  };
  auto store_strided = [&]() {
#pragma unroll
    for (int nt = 0; nt < NTS; nt++)
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int kk = 16 * srt + g8 + 8 * hf, c = scb + 8 * nt + 2 * t4;
        *(float2*)(st + (i64)kk * DV + c) = make_float2(s[nt][2 * hf], s[nt][2 * hf + 1]);
      }
  };
  // fragment-native order for the workspace (coalesced 16-byte accesses)
  auto frag_idx = [&](int nt) { return ((w * NTS + nt) * 32 + lane) * 4; };
  auto write_sb = [&](int buf) {
    const u32 base = sb0 + buf * SBB;
#pragma unroll
    for (int nt = 0; nt < NTS; nt++) {
      const int kk = 16 * srt + g8, c = scb + 8 * nt + 2 * t4;
      asm volatile("st.shared.u32 [%0], %1;\n" :: "r"(base + swz(kk, c, DVT)), "r"(pack2(s[nt][0], s[nt][1])));
      asm volatile("st.shared.u32 [%0], %1;\n" :: "r"(base + swz(kk + 8, c, DVT)), "r"(pack2(s[nt][2], s[nt][3])));
    }
  };

  const Jobs jobs(N, G, g, L, LG, ll);
  const int R = jobs.R, NJ = jobs.NJ;
  auto issue = [&](int J) {
    if (J < NJ) {
      int s0, m, full, r, c;
      jobs.at(J, s0, m, full, r, c);
      if (m > 0) {
        const u32 stg = sbase + (J % 3) * STAGE;
        const bool hnt = hint && (full || G == 1);
#pragma unroll
        for (int it = 0; it < LT_C * DK / 8 / 256; it++) {
          const int idx = tid + it * 256, i = idx / (DK / 8), cc = (idx % (DK / 8)) * 8;
          const int pos = s0 + i, ok = i < m;
          const int tok = ok ? (reverse ? N - 1 - pos : pos) : 0;
          const i64 gq = ((i64)b * N + tok) * qrow + (i64)h * DK + cc;
          const u32 off = swz(i, cc, DK);
          if (hnt) {
            if (full) cp16h(stg + off, q + gq, ok ? 16 : 0, pol);
            cp16h(stg + LT_C * DK * 2 + off, k + gq, ok ? 16 : 0, pol);
          } else {
            if (full) cp16(stg + off, q + gq, ok ? 16 : 0);
            cp16(stg + LT_C * DK * 2 + off, k + gq, ok ? 16 : 0);
          }
        }
#pragma unroll
        for (int it = 0; it < LT_C * DVT / 8 / 256; it++) {
          const int idx = tid + it * 256, i = idx / (DVT / 8), cc = (idx % (DVT / 8)) * 8;
          const int pos = s0 + i, ok = i < m;
          const int tok = ok ? (reverse ? N - 1 - pos : pos) : 0;
          const u16* src = v + ((i64)b * N + tok) * vrow + (i64)h * DV + c0 + cc;
          const u32 dst = stg + 2 * LT_C * DK * 2 + swz(i, cc, DVT);
          if (hnt) cp16h(dst, src, ok ? 16 : 0, pol); else cp16(dst, src, ok ? 16 : 0);
        }
      }
    }
    cp_commit();
  };

  float* wsd = ws ? ws + (i64)unit * 2 * G * SE : nullptr;                               // ΔS [2][G][SE]
  float* wsr = ws ? ws + (i64)B * nh * ntiles * 2 * G * SE + (i64)unit * 2 * SE : nullptr;  // S_round [2][SE]

  issue(0);
  issue(1);
  int sbuf = 0;
  if (G == 1) { load_strided(); write_sb(0); }
  else {
#pragma unroll
    for (int nt = 0; nt < NTS; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
  }

  const int rt = w & 3, ocb = (w >> 2) * (DVT / 2);
  for (int J = 0; J < NJ; J++) {
    int s0, m, full, r, c;
    jobs.at(J, s0, m, full, r, c);
    if (G > 1 && full && c == 0) {
      // ---- exchange: publish ΔS_g, meet the round, form S_in ----
      float* d = wsd + (i64)((r & 1) * G + g) * SE;
#pragma unroll
      for (int nt = 0; nt < NTS; nt++) *(float4*)(d + frag_idx(nt)) = make_float4(s[nt][0], s[nt][1], s[nt][2], s[nt][3]);
      __threadfence();
      __syncthreads();
      if (tid == 0) {
        atomicAdd(cnt + 2 * unit, 1u);
        const unsigned want = (unsigned)(G * (r + 1));
        while (ld_acquire(cnt + 2 * unit) < want) asm volatile("nanosleep.u32 64;\n");
        __threadfence();
      }
      __syncthreads();
      if (r == 0) load_strided();
      else {
        const float* sr = wsr + (i64)(r & 1) * SE;
#pragma unroll
        for (int nt = 0; nt < NTS; nt++) { const float4 x = ldcg4(sr + frag_idx(nt)); s[nt][0] = x.x; s[nt][1] = x.y; s[nt][2] = x.z; s[nt][3] = x.w; }
      }
      if (r == 0 && st) {  // the initial state has been read: the block that writes the final state may go on
        __syncthreads();
        if (tid == 0) atomicAdd(cnt + 2 * unit + 1, 1u);
      }
      const float fL = expf(ll * (float)L);
      for (int gp = 0; gp < g; gp++) {
        const float* dp = wsd + (i64)((r & 1) * G + gp) * SE;
#pragma unroll
        for (int nt = 0; nt < NTS; nt++) {
          const float4 x = ldcg4(dp + frag_idx(nt));
          s[nt][0] = s[nt][0] * fL + x.x; s[nt][1] = s[nt][1] * fL + x.y; s[nt][2] = s[nt][2] * fL + x.z; s[nt][3] = s[nt][3] * fL + x.w;
        }
      }
      write_sb(sbuf);
    }

    cp_wait1();
    __syncthreads();
    issue(J + 2);

    if (m > 0) {
      const u32 stg = sbase + (J % 3) * STAGE;
      const u32 QS = stg, KSa = stg + LT_C * DK * 2, VSa = stg + 2 * LT_C * DK * 2;
      if (full) {
        // ---- outputs ----
        u32 qa[KS][4];
#pragma unroll
        for (int ks = 0; ks < KS; ks++) ldsm4(qa[ks], QS + swz(16 * rt + (lane & 15), 16 * ks + (lane >> 4) * 8, DK));
        float oc[NTO][4];
#pragma unroll
        for (int nt = 0; nt < NTO; nt++) oc[nt][0] = oc[nt][1] = oc[nt][2] = oc[nt][3] = 0.f;
        const u32 SB = sb0 + sbuf * SBB;
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
#pragma unroll
          for (int np = 0; np < NTO / 2; np++) {
            u32 bb[4];
            ldsm4t(bb, SB + swz(16 * ks + (lane & 7) + ((lane >> 3) & 1) * 8, ocb + 16 * np + (lane >> 4) * 8, DVT));
            mma16816(oc[2 * np], qa[ks], bb[0], bb[1]);
            mma16816(oc[2 * np + 1], qa[ks], bb[2], bb[3]);
          }
        {
          const float f0 = pwz[64 + 16 * rt + g8 + 1], f1 = pwz[64 + 16 * rt + g8 + 9];
#pragma unroll
          for (int nt = 0; nt < NTO; nt++) { oc[nt][0] *= f0; oc[nt][1] *= f0; oc[nt][2] *= f1; oc[nt][3] *= f1; }
        }
        for (int jt = 0; jt <= rt; jt++) {
          float sc[2][4];
#pragma unroll
          for (int e = 0; e < 4; e++) sc[0][e] = sc[1][e] = 0.f;
#pragma unroll
          for (int ks = 0; ks < KS; ks++) {
            u32 bk[4];
            ldsm4(bk, KSa + swz(16 * jt + (lane & 7) + (lane >> 4) * 8, 16 * ks + ((lane >> 3) & 1) * 8, DK));
            mma16816(sc[0], qa[ks], bk[0], bk[1]);
            mma16816(sc[1], qa[ks], bk[2], bk[3]);
          }
          const float* pz = pwz + 64 + 16 * (rt - jt) + g8 - 2 * t4;
          u32 pa[4];
          pa[0] = pack2(sc[0][0] * pz[0], sc[0][1] * pz[-1]);
          pa[1] = pack2(sc[0][2] * pz[8], sc[0][3] * pz[7]);
          pa[2] = pack2(sc[1][0] * pz[-8], sc[1][1] * pz[-9]);
          pa[3] = pack2(sc[1][2] * pz[0], sc[1][3] * pz[-1]);
#pragma unroll
          for (int np = 0; np < NTO / 2; np++) {
            u32 bv[4];
            ldsm4t(bv, VSa + swz(16 * jt + (lane & 7) + ((lane >> 3) & 1) * 8, ocb + 16 * np + (lane >> 4) * 8, DVT));
            mma16816(oc[2 * np], pa, bv[0], bv[1]);
            mma16816(oc[2 * np + 1], pa, bv[2], bv[3]);
          }
        }
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
          const int i = 16 * rt + g8 + 8 * hf;
          if (i < m) {
            const int pos = s0 + i, tok = reverse ? N - 1 - pos : pos;
            TO* orow = o + ((i64)b * N + tok) * vrow + (i64)h * DV + c0 + ocb + 2 * t4;
#pragma unroll
            for (int nt = 0; nt < NTO; nt++) st2(orow + 8 * nt, oc[nt][2 * hf], oc[nt][2 * hf + 1]);
          }
        }
      }
      // ---- state: S = λ^m·S + (K ⊙ λ^{m−1−j})ᵀ·V ----
      {
        const float lm = pwz[64 + m];
#pragma unroll
        for (int nt = 0; nt < NTS; nt++) { s[nt][0] *= lm; s[nt][1] *= lm; s[nt][2] *= lm; s[nt][3] *= lm; }
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
          u32 ka[4];
          ldsm4t(ka, KSa + swz(16 * ks + (lane & 7) + ((lane >> 4) & 1) * 8, 16 * srt + ((lane >> 3) & 1) * 8, DK));
          const float* pz = pwz + 64 + m - 1 - 16 * ks - 2 * t4;
          const float fa = pz[0], fb = pz[-1], fc = pz[-8], fd = pz[-9];
          ka[0] = scale2(ka[0], fa, fb); ka[1] = scale2(ka[1], fa, fb);
          ka[2] = scale2(ka[2], fc, fd); ka[3] = scale2(ka[3], fc, fd);
#pragma unroll
          for (int np = 0; np < NTS / 2; np++) {
            u32 bv[4];
            ldsm4t(bv, VSa + swz(16 * ks + (lane & 7) + ((lane >> 3) & 1) * 8, scb + 16 * np + (lane >> 4) * 8, DVT));
            mma16816(s[2 * np], ka, bv[0], bv[1]);
            mma16816(s[2 * np + 1], ka, bv[2], bv[3]);
          }
        }
        if (full) { write_sb(sbuf ^ 1); sbuf ^= 1; }
      }
    }

    if (G > 1 && full && c == jobs.NF - 1) {
      // ---- end of a round ----
      if (g == G - 1 && r + 1 < R) {
        float* sr = wsr + (i64)((r + 1) & 1) * SE;
#pragma unroll
        for (int nt = 0; nt < NTS; nt++) *(float4*)(sr + frag_idx(nt)) = make_float4(s[nt][0], s[nt][1], s[nt][2], s[nt][3]);
      }
      const int a0 = jobs.segStart(r);
      if (st && a0 <= N - 1 && N - 1 < a0 + jobs.segLen()) {
        if (tid == 0) { while (ld_acquire(cnt + 2 * unit + 1) < (unsigned)G) asm volatile("nanosleep.u32 64;\n"); }
        __syncthreads();
        store_strided();
      }
#pragma unroll
      for (int nt = 0; nt < NTS; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    }
  }
  if (G == 1 && st) store_strided();
}

// ------------------------------------------------------------------------------------------------
// Hopper (sm_90a) helpers: wgmma (warpgroup matrix multiply, operands read from shared memory by the
// tensor cores instead of through registers by every warp). Shared tiles are [rows][64] bf16 blocks with
// the 128-byte swizzle (16-byte unit ^= row & 7), 1024-byte aligned: q, k as two 64-column blocks
// (K-major operands), v and the bf16 state as two 64-column blocks read MN-major (transposed B).
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && (defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(TNL_SM90A))
#define LT_HAVE_WGMMA 1
#endif

#ifdef LT_HAVE_WGMMA
__device__ __forceinline__ unsigned long long wg_desc(u32 addr, u32 lbo, u32 sbo) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)((lbo >> 4) & 0x3FFF) << 16) |
         ((unsigned long long)((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}
// the warp must be converged at warpgroup instructions (after divergent stores and loops, say)
__device__ __forceinline__ void wg_fence() { __syncwarp(); asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
template <int TB>
__device__ __forceinline__ void wg_ss_n64(float* d, unsigned long long da, unsigned long long db, int acc) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, %35;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
               : "l"(da), "l"(db), "r"(acc), "n"(TB));
}
template <int TB>
__device__ __forceinline__ void wg_rs_n128(float* d, const u32* a, unsigned long long db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1), "n"(TB));
}
template <int TB>
__device__ __forceinline__ void wg_ss_n128(float* d, unsigned long long da, unsigned long long db, int acc) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, %67;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
               : "l"(da), "l"(db), "r"(acc), "n"(TB));
}
#endif

// byte offset of (row, col) in [rows][64]-blocks with the 128-byte swizzle; `rows` rows per block
__device__ __forceinline__ u32 blk(int row, int col, int rows) {
  return (u32)((col >> 6) * rows * 128 + row * 128 + ((((col >> 3) & 7) ^ (row & 7)) << 4) + (col & 7) * 2);
}

// ------------------------------------------------------------------------------------------------
// Warp-specialised Hopper kernel (sm_90a), DK = DVT = 128: the blocks, jobs, stages and exchange of
// lightning_tc, with the state chain and the outputs in different warpgroups (384 threads) that meet at
// mbarriers instead of a block-wide barrier a chunk, so that one chunk's output products run beside the
// next chunk's state update. (Its predecessor, two warpgroups each forming the scores and a half of
// everything else between block-wide barriers, took 1.56–1.72 ms at b=4 n=32K against 1.48: NOTES.md.)
//   warpgroup 0 (loads and outputs): loads q, k, v; P = (Q·Kᵀ) ⊙ λ^{i−j} (m64n64), O = λ^{i+1}·Q·S + P·V
//     (m64n128 each, S the bf16 copy of the state before the chunk, P from registers); stores o.
//   warpgroups 1, 2 (state rows 0‥63, 64‥127): write their half of the bf16 copy of S, then
//     S = λ^m·S + (K ⊙ λ^{m−1−j})ᵀ·V (m64n128, the accumulator is the state); alone they run the
//     state-only passes and the exchange of the sequence-parallel form. (One warpgroup holding all 128
//     rows needs 128 accumulator registers a thread and spills; so do state warpgroups that also load.)
// mbarriers: full[s] (warpgroup 0's loads of stage s landed), empty[s] (the state warpgroups done with
// stage s), sready[b] / sfree[b] (bf16 state copy b written / read).
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory"); }
__device__ __forceinline__ void mbar_arrive(u32 bar) { asm volatile("{ .reg .b64 st; mbarrier.arrive.shared::cta.b64 st, [%0]; }" :: "r"(bar) : "memory"); }
// an arrival on bar once every cp.async this thread has issued so far has landed
__device__ __forceinline__ void cp_arrive(u32 bar) { asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(bar) : "memory"); }
__device__ __forceinline__ void bar_state() { asm volatile("bar.sync 1, 256;" ::: "memory"); }  // warpgroups 1 and 2

template <typename TO>
__device__ __forceinline__ void lightning_ws(TO* o, const u16* q, const u16* k, const u16* v, int B, int N, int nh, int DV,
                                             const float* loglam, float* state, const int* slots, int reverse,
                                             int G, int L, int LG, float* ws, unsigned* cnt) {
#ifdef LT_HAVE_WGMMA
  constexpr int STAGE = 49152;                       // Q [2][64][64], K [2][64][64], V [2][64][64] bf16
  constexpr int SBB = 32768;                         // bf16 state [2][128][64]
  constexpr int SE = 128 * 128;
  extern __shared__ __align__(1024) unsigned char smws[];
  const u32 sraw = smem_addr(smws);
  const u32 sbase = (sraw + 1023u) & ~1023u;
  unsigned char* sgen = smws + (sbase - sraw);
  const u32 sb0 = sbase + 3 * STAGE;
  float* pwz = (float*)(sgen + 3 * STAGE + 2 * SBB);  // pwz[64 + d] = λ^d (d ≥ 0), 0 (d < 0)
  const u32 bars = sbase + 3 * STAGE + 2 * SBB + 520;
  auto full_bar = [&](int s) { return bars + 8 * s; };
  auto empty_bar = [&](int s) { return bars + 24 + 8 * s; };
  auto sready_bar = [&](int b) { return bars + 48 + 8 * b; };
  auto sfree_bar = [&](int b) { return bars + 64 + 8 * b; };

  const int tid = threadIdx.x, t = tid & 127, lane = tid & 31, wq = (tid >> 5) & 3, g8 = lane >> 2, t4 = lane & 3;
  const int wg = __shfl_sync(0xffffffffu, tid >> 7, 0);  // warp-uniform to the compiler: no wgmma serialisation
  const int ct = blockIdx.x / G, g = blockIdx.x % G, h = blockIdx.y, b = blockIdx.z;
  const int c0 = ct * 128, ntiles = DV / 128;
  const int unit = (b * nh + h) * ntiles + ct;
  const float ll = loglam[h];
  for (int i = tid; i <= 128; i += 384) pwz[i] = i >= 64 ? expf(ll * (float)(i - 64)) : 0.f;
  if (tid == 0) {
    for (int i = 0; i < 3; i++) { mbar_init(full_bar(i), 128); mbar_init(empty_bar(i), 8); }
    for (int i = 0; i < 2; i++) { mbar_init(sready_bar(i), 256); mbar_init(sfree_bar(i), 128); }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const i64 qrow = (i64)nh * 128, vrow = (i64)nh * DV;
  const Jobs jobs(N, G, g, L, LG, ll);
  const int R = jobs.R, NJ = jobs.NJ;
  auto release = [&](int J) { __syncwarp(); if (lane == 0) mbar_arrive(empty_bar(J % 3)); };

  if (wg == 0) {
    // ---- loads and outputs ----
    // job J's q (full jobs), k and v into its stage once the state warpgroups are done with the stage's
    // previous job, then an arrival on full[stage] for when they have landed
    auto issue = [&](int J) {
      if (J >= NJ) return;
      int s0, m, full, r, c;
      jobs.at(J, s0, m, full, r, c);
      const u32 stg = sbase + (J % 3) * STAGE;
      if (J >= 3) mbar_wait(empty_bar(J % 3), ((J / 3) - 1) & 1);
      if (m > 0) {
#pragma unroll
        for (int it = 0; it < 8; it++) {
          const int idx = t + it * 128, i = idx >> 4, cc = (idx & 15) * 8;
          const int pos = s0 + i, ok = i < m;
          const int tok = ok ? (reverse ? N - 1 - pos : pos) : 0;
          const i64 gq = ((i64)b * N + tok) * qrow + (i64)h * 128 + cc;
          const u32 off = blk(i, cc, 64);
          if (full) cp16(stg + off, q + gq, ok ? 16 : 0);
          cp16(stg + 16384 + off, k + gq, ok ? 16 : 0);
          cp16(stg + 32768 + off, v + ((i64)b * N + tok) * vrow + (i64)h * DV + c0 + cc, ok ? 16 : 0);
        }
      }
      cp_arrive(full_bar(J % 3));
    };
    // a state-only job's k, v rows into L2 two jobs before their loads are issued: those chunks are short,
    // so with two jobs in flight the loads' latency shows (a 128-byte line a thread and tensor)
    auto warm = [&](int J) {
      if (J >= NJ) return;
      int s0, m, full, r, c;
      jobs.at(J, s0, m, full, r, c);
      const int i = t >> 1;
      if (full || i >= m) return;
      const i64 row = (i64)b * N + (reverse ? N - 1 - (s0 + i) : s0 + i);
      const int half = (t & 1) * 64;
      asm volatile("prefetch.global.L2 [%0];" :: "l"(k + row * qrow + (i64)h * 128 + half));
      asm volatile("prefetch.global.L2 [%0];" :: "l"(v + row * vrow + (i64)h * DV + c0 + half));
    };
    issue(0);
    issue(1);
    int F = 0;  // full jobs so far: the bf16 state copy F & 1
    for (int J = 0; J < NJ; J++) {
      int s0, m, full, r, c;
      jobs.at(J, s0, m, full, r, c);
      issue(J + 2);  // into the stage of job J − 1, which this warpgroup is done with
      warm(J + 4);
      mbar_wait(full_bar(J % 3), (J / 3) & 1);
      if (!full) continue;
      const u32 stg = sbase + (J % 3) * STAGE;
      const u32 QS = stg, KSa = stg + 16384, VSa = stg + 32768, SB = sb0 + (F & 1) * SBB;
      if (m <= 0) {  // past the end (the last round's tail): the state copy is still handed over
        mbar_wait(sready_bar(F & 1), (F >> 1) & 1);
        mbar_arrive(sfree_bar(F & 1));
        F++;
        continue;
      }
      float sc[32], oc[64];
      u32 pa[4][4];
      fence_async_smem();
      wg_fence();
#pragma unroll
      for (int ks = 0; ks < 8; ks++) {
        const u32 ko = (ks >> 2) * 8192 + (ks & 3) * 32;
        wg_ss_n64<0>(sc, wg_desc(QS + ko, 16, 1024), wg_desc(KSa + ko, 16, 1024), ks);
      }
      wg_commit();
      mbar_wait(sready_bar(F & 1), (F >> 1) & 1);
      wg_fence();
#pragma unroll
      for (int ks = 0; ks < 8; ks++) {
        const u32 ko = (ks >> 2) * 8192 + (ks & 3) * 32;
        wg_ss_n128<1>(oc, wg_desc(QS + ko, 16, 1024), wg_desc(SB + ks * 2048, 16384, 1024), ks);
      }
      wg_commit();
      wg_wait1();
      {
        const float* pz = pwz + 64 + 16 * wq + g8 - 2 * t4;  // λ^{i−j} at i = 16·wq + g8, j = 2·t4
#pragma unroll
        for (int kj = 0; kj < 4; kj++)
#pragma unroll
          for (int hh = 0; hh < 2; hh++) {   // n-tile 2·kj + hh: j = 16·kj + 8·hh + 2·t4
            const float* p = pz - 16 * kj - 8 * hh;
            const float* x = sc + 4 * (2 * kj + hh);
            pa[kj][2 * hh] = pack2(x[0] * p[0], x[1] * p[-1]);
            pa[kj][2 * hh + 1] = pack2(x[2] * p[8], x[3] * p[7]);
          }
      }
      wg_wait0();
      mbar_arrive(sfree_bar(F & 1));
      F++;
      {
        const float f0 = pwz[64 + 16 * wq + g8 + 1], f1 = pwz[64 + 16 * wq + g8 + 9];
#pragma unroll
        for (int nt = 0; nt < 16; nt++) { oc[4 * nt] *= f0; oc[4 * nt + 1] *= f0; oc[4 * nt + 2] *= f1; oc[4 * nt + 3] *= f1; }
      }
      wg_fence();
#pragma unroll
      for (int kj = 0; kj < 4; kj++) wg_rs_n128<1>(oc, pa[kj], wg_desc(VSa + kj * 2048, 8192, 1024));
      wg_commit();
      wg_wait0();
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int i = 16 * wq + g8 + 8 * hf;
        if (i < m) {
          const int pos = s0 + i, tok = reverse ? N - 1 - pos : pos;
          TO* orow = o + ((i64)b * N + tok) * vrow + (i64)h * DV + c0 + 2 * t4;
#pragma unroll
          for (int nt = 0; nt < 16; nt++) st2(orow + 8 * nt, oc[4 * nt + 2 * hf], oc[4 * nt + 2 * hf + 1]);
        }
      }
    }
    return;
  }

  // ---- state (warpgroups 1, 2): rows 64·hh + 16·wq + (g8, g8 + 8), columns 8·nt + 2·t4 (+1): s[4·nt + 2·hf + e] ----
  const int hh = wg - 1, ts = tid - 128;
  const int slot = slots ? slots[b] : b;
  float* st = state ? state + ((i64)slot * nh + h) * 128 * DV + c0 : nullptr;
  float s[64];
  auto zero = [&]() {
#pragma unroll
    for (int i = 0; i < 64; i++) s[i] = 0.f;
  };
  // this thread's two rows of the state (two base pointers and constant offsets: nothing to keep live)
  auto st_row = [&](int hf) { return st + (i64)(64 * hh + 16 * wq + g8 + 8 * hf) * DV + 2 * t4; };
  auto load_strided = [&]() {
    if (!st) { zero(); return; }
    const float *r0 = st_row(0), *r1 = st_row(1);
#pragma unroll
    for (int nt = 0; nt < 16; nt++) {
      const float2 a = *(const float2*)(r0 + 8 * nt), c = *(const float2*)(r1 + 8 * nt);
      s[4 * nt] = a.x; s[4 * nt + 1] = a.y; s[4 * nt + 2] = c.x; s[4 * nt + 3] = c.y;
    }
  };
  auto store_strided = [&]() {
    float *r0 = st_row(0), *r1 = st_row(1);
#pragma unroll
    for (int nt = 0; nt < 16; nt++) {
      *(float2*)(r0 + 8 * nt) = make_float2(s[4 * nt], s[4 * nt + 1]);
      *(float2*)(r1 + 8 * nt) = make_float2(s[4 * nt + 2], s[4 * nt + 3]);
    }
  };
  // the workspace in fragment order (coalesced 16-byte accesses)
  auto frag_idx = [&](int nt) { return (((hh * 4 + wq) * 16 + nt) * 32 + lane) * 4; };
  auto put = [&](float* d) {
#pragma unroll
    for (int nt = 0; nt < 16; nt++) *(float4*)(d + frag_idx(nt)) = make_float4(s[4 * nt], s[4 * nt + 1], s[4 * nt + 2], s[4 * nt + 3]);
  };
  // s = f·s + d, a few loads in flight at a time (all sixteen at once need 64 more registers, which the
  // allocator then takes from the chunk loop): the empty asm makes each group's sums due before the next loads
  auto axpy = [&](const float* d, float f) {
#pragma unroll
    for (int nt = 0; nt < 16; nt++) {
      const float4 x = ldcg4(d + frag_idx(nt));
      float* y = s + 4 * nt;
      y[0] = y[0] * f + x.x; y[1] = y[1] * f + x.y; y[2] = y[2] * f + x.z; y[3] = y[3] * f + x.w;
      if ((nt & 3) == 3) asm volatile("" : "+f"(s[4 * nt - 12]), "+f"(s[4 * nt - 11]), "+f"(s[4 * nt - 10]), "+f"(s[4 * nt - 9]), "+f"(s[4 * nt - 8]), "+f"(s[4 * nt - 7]), "+f"(s[4 * nt - 6]), "+f"(s[4 * nt - 5]),
                                          "+f"(s[4 * nt - 4]), "+f"(s[4 * nt - 3]), "+f"(s[4 * nt - 2]), "+f"(s[4 * nt - 1]), "+f"(y[0]), "+f"(y[1]), "+f"(y[2]), "+f"(y[3]));
    }
  };
  // Shared addresses spelled out so that no per-fragment offsets stay live across the loop (the state
  // warpgroups have few registers to spare). The bf16 state, blk(row, 8·nt + 2·t4, 128): row & 7 = g8
  // for both rows a thread owns, so the 16-byte unit is (nt & 7) ^ g8, an XOR on bits 4‥6 of a base whose
  // bits 4‥6 are g8.
  const u32 sbrow = (u32)((64 * hh + 16 * wq + g8) * 128 + 4 * t4 + (g8 << 4));
  // Kᵀ fragments, blk(16·kj + r, 64·hh + 16·wq + 8·x, 64) with r = (lane & 7) + 8·(lane >> 4 & 1), x = lane >> 3 & 1:
  // (16·kj + r) & 7 = lane & 7, so the offset is one value plus 2048·kj
  const u32 kaoff = (u32)(hh * 8192 + ((lane & 7) + ((lane >> 4) & 1) * 8) * 128 + ((((2 * wq + ((lane >> 3) & 1)) & 7) ^ (lane & 7)) << 4));
  auto write_sb = [&](int buf) {
    const u32 base = sb0 + buf * SBB + sbrow;
#pragma unroll
    for (int nt = 0; nt < 16; nt++) {
      const u32 a = (base ^ (u32)((nt & 7) << 4)) + (nt >> 3) * 16384;
      asm volatile("st.shared.u32 [%0], %1;\n" :: "r"(a), "r"(pack2(s[4 * nt], s[4 * nt + 1])));
      asm volatile("st.shared.u32 [%0], %1;\n" :: "r"(a + 1024), "r"(pack2(s[4 * nt + 2], s[4 * nt + 3])));
    }
    fence_async_smem();
  };
  float* wsd = ws ? ws + (i64)unit * 2 * G * SE : nullptr;                               // ΔS [2][G][SE]
  float* wsr = ws ? ws + (i64)B * nh * ntiles * 2 * G * SE + (i64)unit * 2 * SE : nullptr;  // S_round [2][SE]

  if (G == 1) load_strided(); else zero();
  int F = 0;
  for (int J = 0; J < NJ; J++) {
    int s0, m, full, r, c;
    jobs.at(J, s0, m, full, r, c);
    if (G > 1 && full && c == 0) {
      // ---- exchange: publish ΔS_g, meet the round, form S_in ----
      put(wsd + (i64)((r & 1) * G + g) * SE);
      __threadfence();
      bar_state();
      if (ts == 0) {
        atomicAdd(cnt + 2 * unit, 1u);
        const unsigned want = (unsigned)(G * (r + 1));
        while (ld_acquire(cnt + 2 * unit) < want) asm volatile("nanosleep.u32 64;\n");
        __threadfence();
      }
      bar_state();
      if (r == 0) load_strided(); else { zero(); axpy(wsr + (i64)(r & 1) * SE, 0.f); }
      if (r == 0 && st) {  // the initial state has been read: the block that writes the final state may go on
        bar_state();
        if (ts == 0) atomicAdd(cnt + 2 * unit + 1, 1u);
      }
      const float fL = expf(ll * (float)L);
      for (int gp = 0; gp < g; gp++) axpy(wsd + (i64)((r & 1) * G + gp) * SE, fL);
    }
    mbar_wait(full_bar(J % 3), (J / 3) & 1);
    if (full) {
      if (F >= 2) mbar_wait(sfree_bar(F & 1), ((F >> 1) - 1) & 1);
      write_sb(F & 1);
      mbar_arrive(sready_bar(F & 1));
      F++;
    }
    if (m > 0) {
      // ---- S = λ^m·S + (K ⊙ λ^{m−1−j})ᵀ·V ----
      const u32 KSa = sbase + (J % 3) * STAGE + 16384, VSa = KSa + 16384;
      fence_async_smem();
      u32 ka[4][4];  // decayed Kᵀ fragments: state rows 64·hh + 16·wq, tokens 16·kj
#pragma unroll
      for (int kj = 0; kj < 4; kj++) {
        ldsm4t(ka[kj], KSa + kaoff + 2048 * kj);
        const float* pz = pwz + 64 + m - 1 - 16 * kj - 2 * t4;
        const float fa = pz[0], fb = pz[-1], fc = pz[-8], fd = pz[-9];
        ka[kj][0] = scale2(ka[kj][0], fa, fb); ka[kj][1] = scale2(ka[kj][1], fa, fb);
        ka[kj][2] = scale2(ka[kj][2], fc, fd); ka[kj][3] = scale2(ka[kj][3], fc, fd);
      }
      const float lm = pwz[64 + m];
#pragma unroll
      for (int i = 0; i < 64; i++) s[i] *= lm;
      wg_fence();
#pragma unroll
      for (int kj = 0; kj < 4; kj++) wg_rs_n128<1>(s, ka[kj], wg_desc(VSa + kj * 2048, 8192, 1024));
      wg_commit();
      wg_wait0();
    }
    release(J);

    if (G > 1 && full && c == jobs.NF - 1) {
      // ---- end of a round ----
      if (g == G - 1 && r + 1 < R) put(wsr + (i64)((r + 1) & 1) * SE);
      const int a0 = jobs.segStart(r);
      if (st && a0 <= N - 1 && N - 1 < a0 + jobs.segLen()) {
        if (ts == 0) { while (ld_acquire(cnt + 2 * unit + 1) < (unsigned)G) asm volatile("nanosleep.u32 64;\n"); }
        bar_state();
        store_strided();
      }
      zero();
    }
  }
  if (G == 1 && st) store_strided();
#else
  asm volatile("trap;");
#endif
}

extern "C" {
#define CHUNK_ARGS int B, int N, int nh, int DK, int DV, const float* loglam, float* state, const int* slots, int reverse, int C, int DVT
#define CHUNK_PASS B, N, nh, DK, DV, loglam, state, slots, reverse, C, DVT
__global__ void __launch_bounds__(256) lightning_f32(float* o, const float* q, const float* k, const float* v, CHUNK_ARGS) {
  lightning_chunk<float, float>(o, q, k, v, CHUNK_PASS);
}
__global__ void __launch_bounds__(256) lightning_bf16in(float* o, const u16* q, const u16* k, const u16* v, CHUNK_ARGS) {
  lightning_chunk<u16, float>(o, q, k, v, CHUNK_PASS);
}
__global__ void __launch_bounds__(256) lightning_f32_bf16out(u16* o, const float* q, const float* k, const float* v, CHUNK_ARGS) {
  lightning_chunk<float, u16>(o, q, k, v, CHUNK_PASS);
}
__global__ void __launch_bounds__(256) lightning_bf16in_bf16out(u16* o, const u16* q, const u16* k, const u16* v, CHUNK_ARGS) {
  lightning_chunk<u16, u16>(o, q, k, v, CHUNK_PASS);
}
#define TC_ARGS const u16* q, const u16* k, const u16* v, int B, int N, int nh, int DV, const float* loglam, float* state, const int* slots, int reverse, int G, int L, int LG, float* ws, unsigned* cnt, int hint
#define TC_PASS q, k, v, B, N, nh, DV, loglam, state, slots, reverse, G, L, LG, ws, cnt, hint
#define TC_KERNEL(DK, DVT, T, TN) \
  __global__ void __launch_bounds__(256, 1) lightning_tc_k##DK##_v##DVT##_##TN(T* o, TC_ARGS) { lightning_tc<DK, DVT, T>(o, TC_PASS); }
TC_KERNEL(128, 128, u16, bf16)
TC_KERNEL(128, 128, float, f32)
TC_KERNEL(128, 64, u16, bf16)
TC_KERNEL(128, 64, float, f32)
TC_KERNEL(64, 128, u16, bf16)
TC_KERNEL(64, 128, float, f32)
TC_KERNEL(64, 64, u16, bf16)
TC_KERNEL(64, 64, float, f32)
#define WS_PASS q, k, v, B, N, nh, DV, loglam, state, slots, reverse, G, L, LG, ws, cnt
__global__ void __launch_bounds__(384, 1) lightning_ws_k128_v128_bf16(u16* o, TC_ARGS) { lightning_ws<u16>(o, WS_PASS); }
__global__ void __launch_bounds__(384, 1) lightning_ws_k128_v128_f32(float* o, TC_ARGS) { lightning_ws<float>(o, WS_PASS); }
}
