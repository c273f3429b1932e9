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
// lightning_tc_*: tensor cores (mma.sync m16n8k16 bf16, fp32 accumulation), chunk 64, DK ∈ {64, 128},
// DV a multiple of 64; the fp32 state lives in registers, a bf16 copy in shared memory feeds q·S.
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 f2bf(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)(((u >> 16) | 0x40u) & 0xffffu);
  return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float ldf(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float ldf(const u16* p, i64 i) { return bf2f(p[i]); }
__device__ __forceinline__ void stf(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void stf(u16* p, i64 i, float v) { p[i] = f2bf(v); }

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
// Tensor-core kernel. 256 threads = 8 warps; chunk 64; the block owns a DVT = 64 column tile of one
// (sequence, head). Shared memory (bf16, rows padded by 8 to spread banks):
//   QS[64][DK+8], KS[64][DK+8]  q, k rows of the chunk            (A·Bᵀ operands of Q·Kᵀ)
//   KT[DK][72]                  kᵀ scaled by λ^{m−1−j}            (A operand of the state update)
//   VT[64][72]                  vᵀ tile                           (B operand of A·V and of the update)
//   ST[64][DK+8]                bf16 copy of the state, transposed (B operand of Q·S)
//   AS[64][72]                  masked, decayed scores
#define TC_C 64
#define TC_DVT 64
#define PADL 72

__device__ __forceinline__ void mma16816(float c[4], const u32 a[4], const u32 b[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// A fragment (16×16, row-major tile at r0, k0 of a [rows][ld] bf16 array).
__device__ __forceinline__ void ldA(u32 a[4], const u16* s, int ld, int r0, int k0, int lane) {
  const int g = lane >> 2, t = lane & 3;
  a[0] = *(const u32*)(s + (r0 + g) * ld + k0 + 2 * t);
  a[1] = *(const u32*)(s + (r0 + g + 8) * ld + k0 + 2 * t);
  a[2] = *(const u32*)(s + (r0 + g) * ld + k0 + 8 + 2 * t);
  a[3] = *(const u32*)(s + (r0 + g + 8) * ld + k0 + 8 + 2 * t);
}
// B fragment (16×8, k × n) from an array stored n-major: s[n][k].
__device__ __forceinline__ void ldB(u32 b[2], const u16* s, int ld, int n0, int k0, int lane) {
  const int g = lane >> 2, t = lane & 3;
  b[0] = *(const u32*)(s + (n0 + g) * ld + k0 + 2 * t);
  b[1] = *(const u32*)(s + (n0 + g) * ld + k0 + 8 + 2 * t);
}
// Element e (0‥7) of eight bf16 held in a uint4, for a run-time e (selects, no local memory).
__device__ __forceinline__ u16 pick(const uint4& v, int e) {
  const u32 w = (e & 4) ? ((e & 2) ? v.w : v.z) : ((e & 2) ? v.y : v.x);
  return (e & 1) ? (u16)(w >> 16) : (u16)(w & 0xffffu);
}
__device__ __forceinline__ void st2(float* p, float a, float b) { *(float2*)p = make_float2(a, b); }
__device__ __forceinline__ void st2(u16* p, float a, float b) { *(u32*)p = (u32)f2bf(a) | ((u32)f2bf(b) << 16); }

template <int DK, typename TO>
__device__ void lightning_tc(TO* o, const u16* q, const u16* k, const u16* v, int B, int N, int nh, int DV,
                             const float* loglam, float* state, const int* slots, int reverse) {
  constexpr int LDQ = DK + 8;
  extern __shared__ __align__(16) unsigned char smraw[];
  u16* QS = (u16*)smraw;
  u16* KS = QS + TC_C * LDQ;
  u16* KT = KS + TC_C * LDQ;
  u16* VT = KT + DK * PADL;
  u16* ST = VT + TC_DVT * PADL;
  u16* AS = ST + TC_DVT * LDQ;
  float* pw = (float*)(AS + TC_C * PADL);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int c0 = blockIdx.x * TC_DVT, h = blockIdx.y, b = blockIdx.z;
  const float ll = loglam[h];
  for (int i = tid; i <= TC_C; i += blockDim.x) pw[i] = expf(ll * (float)i);
  const int slot = slots ? slots[b] : b;
  float* st = state ? state + ((i64)slot * nh + h) * DK * DV : nullptr;

  // The state: warp w owns rows kk ∈ [16·wr, 16·wr+16) (DK/16 row tiles over 8 warps: DK = 128 → one
  // tile each; DK = 64 → 4 tiles, warps 0‥3 take columns 0‥31, 4‥7 columns 32‥63).
  constexpr int SROWT = DK / 16;                 // row tiles of the state
  constexpr int SNT = (SROWT >= 8) ? 8 : 4;      // n-tiles (of 8 columns) per warp
  const int srt = (SROWT >= 8) ? warp : (warp & 3);
  const int sc0 = (SROWT >= 8) ? 0 : (warp >> 2) * 32;
  float s[SNT][4];
#pragma unroll
  for (int nt = 0; nt < SNT; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int kk = 16 * srt + g + (e >= 2 ? 8 : 0), c = sc0 + 8 * nt + 2 * t4 + (e & 1);
      s[nt][e] = st ? st[(i64)kk * DV + c0 + c] : 0.f;
    }
  __syncthreads();
#pragma unroll
  for (int nt = 0; nt < SNT; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int kk = 16 * srt + g + (e >= 2 ? 8 : 0), c = sc0 + 8 * nt + 2 * t4 + (e & 1);
      ST[c * LDQ + kk] = f2bf(s[nt][e]);
    }

  const i64 qrow = (i64)nh * DK, vrow = (i64)nh * DV;
  // The next chunk's q, k, v are fetched into registers while this chunk computes (all loads of a
  // chunk issued together, 16 bytes each), then stored to shared memory at the top of the loop.
  constexpr int QV = DK / 8;                    // 16-byte vectors per q/k row
  constexpr int QIT = TC_C * QV / 256;          // per thread
  constexpr int VIT = TC_C * (TC_DVT / 8) / 256;
  uint4 pq[QIT], pk[QIT], pv[VIT];
  auto fetch = [&](int s0) {
    const int m = min(TC_C, N - s0);
#pragma unroll
    for (int it = 0; it < QIT; it++) {
      const int idx = tid + it * 256, i = idx / QV, kk = (idx % QV) * 8;
      pq[it] = pk[it] = make_uint4(0, 0, 0, 0);
      if (s0 < N && i < m) {
        const int tok = reverse ? N - 1 - (s0 + i) : s0 + i;
        const i64 gq = ((i64)b * N + tok) * qrow + (i64)h * DK + kk;
        pq[it] = *(const uint4*)(q + gq);
        pk[it] = *(const uint4*)(k + gq);
      }
    }
#pragma unroll
    for (int it = 0; it < VIT; it++) {
      const int idx = tid + it * 256, i = idx / (TC_DVT / 8), c = (idx % (TC_DVT / 8)) * 8;
      pv[it] = make_uint4(0, 0, 0, 0);
      if (s0 < N && i < m) {
        const int tok = reverse ? N - 1 - (s0 + i) : s0 + i;
        pv[it] = *(const uint4*)(v + ((i64)b * N + tok) * vrow + (i64)h * DV + c0 + c);
      }
    }
  };
  fetch(0);
  for (int s0 = 0; s0 < N; s0 += TC_C) {
    const int m = min(TC_C, N - s0);
    // ---- store q, k rows, kᵀ (decayed by λ^{m−1−j}) and vᵀ; zeros past the end ----
#pragma unroll
    for (int it = 0; it < QIT; it++) {
      const int idx = tid + it * 256, i = idx / QV, kk = (idx % QV) * 8;
      *(uint4*)(QS + i * LDQ + kk) = pq[it];
      *(uint4*)(KS + i * LDQ + kk) = pk[it];
      const float f = i < m ? pw[m - 1 - i] : 0.f;
#pragma unroll
      for (int e = 0; e < 8; e++) {  // rotated by lane: the 16 lanes of one token hit 8 banks, not 1
        const int ee = (e + lane) & 7;
        KT[(kk + ee) * PADL + i] = f2bf(bf2f(pick(pk[it], ee)) * f);
      }
    }
#pragma unroll
    for (int it = 0; it < VIT; it++) {
      const int idx = tid + it * 256, i = idx / (TC_DVT / 8), c = (idx % (TC_DVT / 8)) * 8;
#pragma unroll
      for (int e = 0; e < 8; e++) { const int ee = (e + lane) & 7; VT[(c + ee) * PADL + i] = pick(pv[it], ee); }
    }
    __syncthreads();
    fetch(s0 + TC_C);

    // ---- scores: AS = (Q·Kᵀ) ⊙ λ^{i−j} (j ≤ i); warp: rows 16·(w&3), columns 32·(w>>2) ----
    {
      const int rt = warp & 3, ch = warp >> 2;
      float acc[4][4];
#pragma unroll
      for (int nt = 0; nt < 4; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
      if (32 * ch <= 16 * rt + 15) {  // tiles wholly above the diagonal stay zero
#pragma unroll
        for (int k0 = 0; k0 < DK; k0 += 16) {
          u32 a[4];
          ldA(a, QS, LDQ, 16 * rt, k0, lane);
#pragma unroll
          for (int nt = 0; nt < 4; nt++) { u32 bb[2]; ldB(bb, KS, LDQ, 32 * ch + 8 * nt, k0, lane); mma16816(acc[nt], a, bb); }
        }
      }
#pragma unroll
      for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
          const int i = 16 * rt + g + 8 * hf, j = 32 * ch + 8 * nt + 2 * t4;
          const float a0 = j <= i ? acc[nt][2 * hf] * pw[i - j] : 0.f;
          const float a1 = j + 1 <= i ? acc[nt][2 * hf + 1] * pw[i - j - 1] : 0.f;
          *(u32*)(AS + i * PADL + j) = (u32)f2bf(a0) | ((u32)f2bf(a1) << 16);
        }
    }
    __syncthreads();

    // ---- outputs: O = λ^{i+1}·(Q·S) + AS·V; warp: rows 16·(w&3), columns 32·(w>>2) ----
    {
      const int rt = warp & 3, ch = warp >> 2;
      float acc[4][4];
#pragma unroll
      for (int nt = 0; nt < 4; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
      for (int k0 = 0; k0 < DK; k0 += 16) {
        u32 a[4];
        ldA(a, QS, LDQ, 16 * rt, k0, lane);
#pragma unroll
        for (int nt = 0; nt < 4; nt++) { u32 bb[2]; ldB(bb, ST, LDQ, 32 * ch + 8 * nt, k0, lane); mma16816(acc[nt], a, bb); }
      }
      const float f0 = pw[16 * rt + g + 1], f1 = pw[16 * rt + g + 9];
#pragma unroll
      for (int nt = 0; nt < 4; nt++) { acc[nt][0] *= f0; acc[nt][1] *= f0; acc[nt][2] *= f1; acc[nt][3] *= f1; }
#pragma unroll
      for (int k0 = 0; k0 < TC_C; k0 += 16) {
        if (k0 > 16 * rt + 15) break;  // AS is zero there
        u32 a[4];
        ldA(a, AS, PADL, 16 * rt, k0, lane);
#pragma unroll
        for (int nt = 0; nt < 4; nt++) { u32 bb[2]; ldB(bb, VT, PADL, 32 * ch + 8 * nt, k0, lane); mma16816(acc[nt], a, bb); }
      }
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int i = 16 * rt + g + 8 * hf;
        if (i < m) {
          const int tok = reverse ? N - 1 - (s0 + i) : s0 + i;
          TO* orow = o + ((i64)b * N + tok) * vrow + (i64)h * DV + c0 + 32 * ch + 2 * t4;
#pragma unroll
          for (int nt = 0; nt < 4; nt++) st2(orow + 8 * nt, acc[nt][2 * hf], acc[nt][2 * hf + 1]);
        }
      }
    }
    __syncthreads();

    // ---- state: S = λ^m·S + KTᵀ·V (KT already carries λ^{m−1−j}); then the bf16 copy ----
    {
      const float lm = pw[m];
#pragma unroll
      for (int nt = 0; nt < SNT; nt++) { s[nt][0] *= lm; s[nt][1] *= lm; s[nt][2] *= lm; s[nt][3] *= lm; }
#pragma unroll
      for (int k0 = 0; k0 < TC_C; k0 += 16) {
        u32 a[4];
        ldA(a, KT, PADL, 16 * srt, k0, lane);
#pragma unroll
        for (int nt = 0; nt < SNT; nt++) { u32 bb[2]; ldB(bb, VT, PADL, sc0 + 8 * nt, k0, lane); mma16816(s[nt], a, bb); }
      }
#pragma unroll
      for (int nt = 0; nt < SNT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int kk = 16 * srt + g + (e >= 2 ? 8 : 0), c = sc0 + 8 * nt + 2 * t4 + (e & 1);
          ST[c * LDQ + kk] = f2bf(s[nt][e]);
        }
    }
    __syncthreads();
  }
  if (st) {
#pragma unroll
    for (int nt = 0; nt < SNT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int kk = 16 * srt + g + (e >= 2 ? 8 : 0), c = sc0 + 8 * nt + 2 * t4 + (e & 1);
        st[(i64)kk * DV + c0 + c] = s[nt][e];
      }
  }
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
#define TC_ARGS const u16* q, const u16* k, const u16* v, int B, int N, int nh, int DV, const float* loglam, float* state, const int* slots, int reverse
#define TC_PASS q, k, v, B, N, nh, DV, loglam, state, slots, reverse
__global__ void __launch_bounds__(256, 2) lightning_tc128_f32(float* o, TC_ARGS) { lightning_tc<128, float>(o, TC_PASS); }
__global__ void __launch_bounds__(256, 2) lightning_tc128_bf16(u16* o, TC_ARGS) { lightning_tc<128, u16>(o, TC_PASS); }
__global__ void __launch_bounds__(256, 2) lightning_tc64_f32(float* o, TC_ARGS) { lightning_tc<64, float>(o, TC_PASS); }
__global__ void __launch_bounds__(256, 2) lightning_tc64_bf16(u16* o, TC_ARGS) { lightning_tc<64, u16>(o, TC_PASS); }
}
