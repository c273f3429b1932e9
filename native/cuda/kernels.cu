// Elementwise and row kernels of the CUDA backend (compiled at first use by NVRTC, after common.cuh).
// Storage: f32, or bf16 as raw 16-bit words; every reduction accumulates in fp32 (sums of squares
// for clipping in fp64). Semantics: src/backends/backend.ts; definitions: src/backends/reference.
// (u16, u32, i64, bf2f, f2bf: common.cuh, put in front of this file by the loader)
#define TNL_INF __int_as_float(0x7f800000)

__device__ __forceinline__ float sigm(float x) { return 1.f / (1.f + __expf(-x)); }

// LRPE's sin and cos of θ·position, the angle first reduced to [−π, π]: double sincos takes a slow
// path for large arguments, which long contexts reach (the reduction's error is ~1e-12 rad at 1M).
__device__ __forceinline__ void lrpe_sincos(double theta, double p, double* sn, double* cs) {
  double a = theta * p;
  a -= 6.283185307179586 * rint(a * 0.15915494309189535);
  sincos(a, sn, cs);
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <typename T>
__device__ __forceinline__ T blockSum(T v) {
  __shared__ T red[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (l == 0) red[w] = v;
  __syncthreads();
  T r = l < nw ? red[l] : (T)0;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}
__device__ __forceinline__ float blockMax(float v) {
  __shared__ float red[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (l == 0) red[w] = v;
  __syncthreads();
  float r = l < nw ? red[l] : -TNL_INF;
  for (int o = 16; o > 0; o >>= 1) r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, o));
  return r;
}

// Blocks of (32, rows) threads: the sum over threadIdx.y of each column's values, valid in row 0.
template <typename T>
__device__ __forceinline__ T columnSum(T v) {
  __shared__ T red[8][33];
  red[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  T s = 0;
  if (threadIdx.y == 0)
    for (int y = 0; y < blockDim.y; y++) s += red[y][threadIdx.x];
  return s;
}

// Instructions of sm_90 without operands, as functions (no-ops before sm_90).
#if __CUDA_ARCH__ >= 900
#define SM90_OP(name, ptx) __device__ __forceinline__ void name() { asm volatile(ptx ::: "memory"); }
#else
#define SM90_OP(name, ptx) __device__ __forceinline__ void name() {}
#endif
// Programmatic dependent launch (decode graphs): a kernel launched early may run beside the one before
// it; it lets its own successor start (launch_dependents) and waits for its predecessor's writes
// (wait) before reading anything but the weights. No-ops when launched normally.
SM90_OP(pdl_trigger, "griddepcontrol.launch_dependents;")
SM90_OP(pdl_wait, "griddepcontrol.wait;")

// Thread-block clusters (sm_90+): a block's rank; the cluster barrier, split (arrive without ordering,
// then wait), met once so that every block has started and initialised its mbarriers before another
// writes into its shared memory; and data pushed into another block's shared memory with st.async,
// each 16-byte store counted on that block's mbarrier (its waiter sees the bytes once all have come).
__device__ __forceinline__ u32 cluster_rank() {
  u32 r = 0;
#if __CUDA_ARCH__ >= 900
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
#endif
  return r;
}
SM90_OP(cluster_arrive_relaxed, "barrier.cluster.arrive.relaxed.aligned;")
SM90_OP(cluster_wait, "barrier.cluster.wait.acquire.aligned;")
// An mbarrier whose one arrival is made here, expecting `bytes` of stores; made visible to the cluster.
__device__ __forceinline__ void mbar_init_expect(unsigned long long* bar, u32 bytes) {
#if __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(smem_addr(bar)) : "memory");
  asm volatile("{ .reg .b64 st; mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1; }" :: "r"(smem_addr(bar)), "r"(bytes) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}
// 16 bytes into block `rank`'s copy of dst, counted on its copy of bar
__device__ __forceinline__ void st_async4(float* dst, unsigned long long* bar, u32 rank, float4 v) {
#if __CUDA_ARCH__ >= 900
  asm volatile("{ .reg .u32 d, b; mapa.shared::cluster.u32 d, %0, %6; mapa.shared::cluster.u32 b, %5, %6;\n\t"
               "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [d], {%1, %2, %3, %4}, [b]; }"
               :: "r"(smem_addr(dst)), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "r"(smem_addr(bar)), "r"(rank) : "memory");
#endif
}

// Brings `bytes` at p into L2, each block its share (a hint: the weights of a later decode kernel
// stream in from memory while this one waits for its predecessor). sm_90: one bulk prefetch a block
// (measured 3% faster decode on the 385M, 6% on the 1B than a prefetch per 128-byte line).
__device__ __forceinline__ void prefetch_l2(const void* p, i64 bytes) {
  if (!p) return;
  const i64 nb = (i64)gridDim.x * gridDim.y * gridDim.z, b = ((i64)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
#if __CUDA_ARCH__ >= 900
  const i64 per = ((bytes + nb - 1) / nb + 15) & ~(i64)15, s = b * per;
  if (s >= bytes || threadIdx.x + threadIdx.y + threadIdx.z) return;
  const i64 n = min(per, (bytes - s) & ~(i64)15);
  if (n > 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"((const char*)p + s), "r"((u32)n) : "memory");
#else
  const i64 nt = blockDim.x * blockDim.y * blockDim.z, threads = nb * nt;
  const i64 t0 = b * nt + (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  for (i64 l = t0; l < (bytes + 127) / 128; l += threads) asm volatile("prefetch.global.L2 [%0];" :: "l"((const char*)p + l * 128));
#endif
}

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// ---- mixed-dtype access: activation tensors are f32 or bf16, told apart by bit n of `bf` ----------
__device__ __forceinline__ float LD(const void* p, i64 i, int bf) { return bf ? bf2f(((const u16*)p)[i]) : ((const float*)p)[i]; }
__device__ __forceinline__ void ST(void* p, i64 i, float v, int bf) { if (bf) ((u16*)p)[i] = f2bf(v); else ((float*)p)[i] = v; }
#define BF(n) ((bf >> (n)) & 1)
// Eight consecutive activations at i (a multiple of 8, the tensor 16-byte aligned): one 16-byte access
// for bf16, two for f32, instead of eight narrow ones
__device__ __forceinline__ void load8(const void* p, i64 i, int bf, float* v) {
  if (bf) {
    const uint4 q = *(const uint4*)((const u16*)p + i);
    const u32 w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; j++) { v[2 * j] = __uint_as_float(w[j] << 16); v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u); }
  } else {
    const float4 a = *(const float4*)((const float*)p + i), b = *(const float4*)((const float*)p + i + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  }
}
__device__ __forceinline__ void store8(void* p, i64 i, const float* v, int bf) {
  if (bf) *(uint4*)((u16*)p + i) = make_uint4(f2bf(v[0]) | (u32)f2bf(v[1]) << 16, f2bf(v[2]) | (u32)f2bf(v[3]) << 16,
                                              f2bf(v[4]) | (u32)f2bf(v[5]) << 16, f2bf(v[6]) | (u32)f2bf(v[7]) << 16);
  else { *(float4*)((float*)p + i) = make_float4(v[0], v[1], v[2], v[3]); *(float4*)((float*)p + i + 4) = make_float4(v[4], v[5], v[6], v[7]); }
}

// Whether every pointer is 16-byte aligned (null ones count as aligned).
__device__ __forceinline__ bool aligned16() { return true; }
template <typename... P>
__device__ __forceinline__ bool aligned16(const void* p, P... rest) { return (unsigned long long)p % 16 == 0 && aligned16(rest...); }
// Whether a row kernel can take 8 columns a thread: `cols` a multiple of 8, every tensor 16-byte aligned.
template <typename... P>
__device__ __forceinline__ bool vec8(int cols, P... ps) { return cols % 8 == 0 && aligned16(ps...); }

extern "C" {

// ---- conversions, copies -------------------------------------------------------------------------
// eight elements a thread (16-byte accesses) over the aligned bulk, then the tail one at a time
__global__ void cvt_f32_bf16(u16* dst, const float* src, i64 n) {
  const i64 n8 = aligned16(dst, src) ? n / 8 : 0;
  GRID_STRIDE(i, n8) { float v[8]; load8(src, 8 * i, 0, v); store8(dst, 8 * i, v, 1); }
  GRID_STRIDE(j, n - 8 * n8) dst[8 * n8 + j] = f2bf(src[8 * n8 + j]);
}
__global__ void cvt_bf16_f32(float* dst, const u16* src, i64 n) {
  const i64 n8 = aligned16(dst, src) ? n / 8 : 0;
  GRID_STRIDE(i, n8) { float v[8]; load8(src, 8 * i, 1, v); store8(dst, 8 * i, v, 0); }
  GRID_STRIDE(j, n - 8 * n8) dst[8 * n8 + j] = bf2f(src[8 * n8 + j]);
}
__global__ void gather_rows_b32(u32* out, const u32* src, const int* idx, int n, int cols) {
  GRID_STRIDE(i, (i64)n * cols) { const i64 r = i / cols, c = i % cols; out[i] = src[(i64)idx[r] * cols + c]; }
}
__global__ void gather_rows_b16(u16* out, const u16* src, const int* idx, int n, int cols) {
  GRID_STRIDE(i, (i64)n * cols) { const i64 r = i / cols, c = i % cols; out[i] = src[(i64)idx[r] * cols + c]; }
}

// ---- dense elementwise ---------------------------------------------------------------------------
__global__ void add_inplace(float* y, const float* x, i64 n) { GRID_STRIDE(i, n) y[i] += x[i]; }
__global__ void scale_inplace(float* x, float s, i64 n) { GRID_STRIDE(i, n) x[i] *= s; }
// 16-byte loads over the aligned bulk (4 floats, 8 bf16), then the tail one at a time
__global__ void sum_squares_f32(const float* x, i64 n, double* partial) {
  double s = 0;
  const i64 n4 = aligned16(x) ? n / 4 : 0;
  GRID_STRIDE(i, n4) { const float4 v = ((const float4*)x)[i]; s += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w; }
  GRID_STRIDE(j, n - 4 * n4) { const double v = x[4 * n4 + j]; s += v * v; }
  s = blockSum<double>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void sum_squares_bf16(const u16* x, i64 n, double* partial) {
  double s = 0;
  const i64 n8 = aligned16(x) ? n / 8 : 0;
  GRID_STRIDE(i, n8) {
    float v[8];
    load8(x, 8 * i, 1, v);
#pragma unroll
    for (int e = 0; e < 8; e++) s += (double)v[e] * v[e];
  }
  GRID_STRIDE(j, n - 8 * n8) { const double v = bf2f(x[8 * n8 + j]); s += v * v; }
  s = blockSum<double>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// ---- embedding -----------------------------------------------------------------------------------
__global__ void embedding_f32(float* out, const float* table, const int* ids, int T, int D, float scale) {
  GRID_STRIDE(i, (i64)T * D) { const i64 t = i / D, d = i % D; out[i] = scale * table[(i64)ids[t] * D + d]; }
}
__global__ void embedding_bf16(float* out, const u16* table, const int* ids, int T, int D, float scale) {
  GRID_STRIDE(i, (i64)T * D) { const i64 t = i / D, d = i % D; out[i] = scale * bf2f(table[(i64)ids[t] * D + d]); }
}
__global__ void embedding_bwd(float* dTable, const float* dOut, const int* ids, int T, int D, float scale, int pad) {
  GRID_STRIDE(i, (i64)T * D) {
    const i64 t = i / D, d = i % D;
    const int id = ids[t];
    if (id != pad) atomicAdd(&dTable[(i64)id * D + d], scale * dOut[i]);
  }
}

// ---- gated linear attention pieces (the q/k/v split and the output gate: templates below) ----------
// dθ[c] += Σ_t p_t·(sq·(−dq_c·sin + dq_{c+dh}·cos) + sk·(…)). Block (32, 8): 32 columns, 8 token lanes;
// grid (columns/32, token slices); one atomicAdd per column per block. bf bits: 0 dq, 1 dk, 2 qkvu
__global__ void gla_dtheta(float* dth, const void* dq, const void* dk, const void* x, const float* theta,
                           const int* pos, int T, int nh, int dh, int tokensPerSlice, int bf) {
  const int H = nh * dh, dkk = 2 * dh;
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int t0 = blockIdx.y * tokensPerSlice, t1 = min(T, t0 + tokensPerSlice);
  double acc = 0;
  if (c < H) {
    const int h = c / dh, cc = c % dh;
    for (int t = t0 + threadIdx.y; t < t1; t += blockDim.y) {
      const i64 row = (i64)t * 4 * H;
      const float xq = LD(x, row + c, BF(2)), xk = LD(x, row + H + c, BF(2));
      const float sq = xq * sigm(xq), sk = xk * sigm(xk);
      const double p = pos[t];
      double sn, cs;
      lrpe_sincos(theta[c], p, &sn, &cs);
      const i64 o = (i64)t * nh * dkk + (i64)h * dkk + cc;
      acc += p * (sq * (-LD(dq, o, BF(0)) * sn + LD(dq, o + dh, BF(0)) * cs) + sk * (-LD(dk, o, BF(1)) * sn + LD(dk, o + dh, BF(1)) * cs));
    }
  }
  const double s = columnSum<double>(acc);
  if (threadIdx.y == 0 && c < H) atomicAdd(&dth[c], (float)s);
}
}  // extern "C" (the decode step's templates below)

// ---- Lightning helpers -------------------------------------------------------------------------------
// One recurrent step (N = 1): S ← λ·S + kᵀv, o = q·S (= λ·q·S_in + (q·k)·v). Block (32, 8): 32 state
// columns × 8 row lanes; grid (⌈DV/32⌉, nh, B); q, k staged in shared memory (2·DK floats). state null:
// S_in = 0 and nothing written. With qkvu (gla_decode), q, k, v come straight from the fused projection
// [B, 4·nh·dh] (silu, LRPE, mask as gla_qkv) and DK = dh or 2·dh. bf bits: 0 o, 1 q, 2 k, 3 v (4 qkvu)
//
// A thread's state rows are threadIdx.y + 8·j of column c. The first NV of them (NV = 16, or 32 for
// DK > 128) are read into registers before the step: gla_decode reads them before it waits for the
// projection (in a decode graph the state was last written by the previous replay). Rows past 8·NV
// (DK > 256) are read as the step goes.
template <int NV>
__device__ __forceinline__ void decode_state_load(float (&sv)[NV], const float* S, int c, int DK, int DV) {
#pragma unroll
  for (int j = 0; j < NV; j++) { const int r = threadIdx.y + 8 * j; sv[j] = (S && c < DV && r < DK) ? S[(i64)r * DV + c] : 0.f; }
}
__device__ __forceinline__ float* decode_state(float* state, const int* slots, int b, int h, int nh, int DK, int DV) {
  return state ? state + ((i64)(slots ? slots[b] : b) * nh + h) * DK * DV : nullptr;
}
template <int NV>
__device__ __forceinline__ void decode_step(void* o, const float* qs, const float* ks, float vc, const float (&sv)[NV], float* S, int h, int b, int c,
                                            int nh, int DK, int DV, const float* loglam, int bf) {
  const float lam = expf(loglam[h]);
  float acc = 0.f;
  if (c < DV) {
#pragma unroll
    for (int j = 0; j < NV; j++) {
      const int r = threadIdx.y + 8 * j;
      if (r < DK) {
        const float s = ks[r] * vc + lam * sv[j];
        if (S) S[(i64)r * DV + c] = s;
        acc += qs[r] * s;
      }
    }
    for (int r = threadIdx.y + 8 * NV; r < DK; r += 8) {
      const float s = ks[r] * vc + lam * (S ? S[(i64)r * DV + c] : 0.f);
      if (S) S[(i64)r * DV + c] = s;
      acc += qs[r] * s;
    }
  }
  const float s = columnSum<float>(acc);
  if (threadIdx.y == 0 && c < DV) ST(o, ((i64)b * nh + h) * DV + c, s, BF(0));
}
template <int NV>
__device__ __forceinline__ void lightning_decode_body(void* o, const void* q, const void* k, const void* v, int nh, int DK, int DV,
                                                      const float* loglam, float* state, const int* slots, int bf) {
  extern __shared__ float qk[];
  const int h = blockIdx.y, b = blockIdx.z, c = blockIdx.x * 32 + threadIdx.x;
  const i64 qo = ((i64)b * nh + h) * DK;
  float* S = decode_state(state, slots, b, h, nh, DK, DV);
  float sv[NV];
  decode_state_load(sv, S, c, DK, DV);
  for (int r = threadIdx.y * 32 + threadIdx.x; r < DK; r += 256) { qk[r] = LD(q, qo + r, BF(1)); qk[DK + r] = LD(k, qo + r, BF(2)); }
  __syncthreads();
  const float vc = c < DV ? LD(v, ((i64)b * nh + h) * DV + c, BF(3)) : 0.f;
  decode_step(o, qk, qk + DK, vc, sv, S, h, b, c, nh, DK, DV, loglam, bf);
}
// bf bits: 0 o, 4 qkvu
template <int NV>
__device__ __forceinline__ void gla_decode_body(void* o, const void* x, int nh, int dh, const float* theta, const int* pos, const int* vmask,
                                                const float* loglam, float* state, const int* slots, const void* pf, i64 pfBytes, int bf) {
  extern __shared__ float qk[];
  pdl_trigger();
  prefetch_l2(pf, pfBytes);
  const int h = blockIdx.y, b = blockIdx.z, c = blockIdx.x * 32 + threadIdx.x;
  const int H = nh * dh, DK = theta ? 2 * dh : dh;
  float* S = decode_state(state, slots, b, h, nh, DK, dh);
  float sv[NV];
  // a few sequences: the state into registers before the wait; many (a grid of many waves): only into
  // L2 (measured: registers 1.56 → 2.01 ms a step at batch 64)
  const bool early = gridDim.z <= 8;
  // the host's inputs (copied in before the graph's first kernel) before the wait too, and LRPE's
  // rotation of this thread's column (heads up to 256 wide: one column a thread)
  const int c0 = threadIdx.y * 32 + threadIdx.x;
  double sn0 = 0.0, cs0 = 1.0;
  if (theta && c0 < dh) lrpe_sincos(theta[h * dh + c0], pos[b], &sn0, &cs0);
  const bool vOn = !vmask || vmask[b] != 0;
  if (early) decode_state_load(sv, S, c, DK, dh);
  else if (S && c < dh)
    for (int r = threadIdx.y; r < DK; r += 8) asm volatile("prefetch.global.L2 [%0];" :: "l"(S + (i64)r * dh + c));
  pdl_wait();
  if (!early) decode_state_load(sv, S, c, DK, dh);
  const i64 row = (i64)b * 4 * H;
  for (int cc = threadIdx.y * 32 + threadIdx.x; cc < dh; cc += 256) {
    const float xq = LD(x, row + h * dh + cc, BF(4)), xk = LD(x, row + H + h * dh + cc, BF(4));
    const float sq = xq * sigm(xq), sk = xk * sigm(xk);
    if (theta) {
      double sn = sn0, cs = cs0;
      if (cc != c0) lrpe_sincos(theta[h * dh + cc], pos[b], &sn, &cs);
      qk[cc] = (float)(sq * cs); qk[dh + cc] = (float)(sq * sn);
      qk[DK + cc] = (float)(sk * cs); qk[DK + dh + cc] = (float)(sk * sn);
    } else { qk[cc] = sq; qk[DK + cc] = sk; }
  }
  __syncthreads();
  const float vc = (c < dh && vOn) ? LD(x, row + 2 * H + h * dh + c, BF(4)) : 0.f;
  decode_step(o, qk, qk + DK, vc, sv, S, h, b, c, nh, DK, dh, loglam, bf);
}
extern "C" {
__global__ void lightning_decode(void* o, const void* q, const void* k, const void* v, int nh, int DK, int DV,
                                 const float* loglam, float* state, const int* slots, int bf) {
  if (DK <= 128) lightning_decode_body<16>(o, q, k, v, nh, DK, DV, loglam, state, slots, bf);
  else lightning_decode_body<32>(o, q, k, v, nh, DK, DV, loglam, state, slots, bf);
}
__global__ void gla_decode(void* o, const void* x, int nh, int dh, const float* theta, const int* pos, const int* vmask,
                           const float* loglam, float* state, const int* slots, const void* pf, i64 pfBytes, int bf) {
  if ((theta ? 2 * dh : dh) <= 128) gla_decode_body<16>(o, x, nh, dh, theta, pos, vmask, loglam, state, slots, pf, pfBytes, bf);
  else gla_decode_body<32>(o, x, nh, dh, theta, pos, vmask, loglam, state, slots, pf, pfBytes, bf);
}
// A head of key width P·128 as P heads of 128 (tensor-core kernels): the value rows repeated per part,
// and the parts' outputs summed. dst[t, h·P + j, :] = src[t, h, :]; o[t, h, :] = Σ_j a[t, h·P + j, :].
// bf bits: 0 dst / o, 1 src / a
__global__ void rep_heads(void* dst, const void* src, i64 rows, int nh, int D, int P, int bf) {
  const i64 W = (i64)nh * P * D;
  GRID_STRIDE(i, rows * W) {
    const i64 t = i / W;
    const int r = (int)(i % W), vh = r / D, c = r % D;
    ST(dst, i, LD(src, t * nh * D + (i64)(vh / P) * D + c, BF(1)), BF(0));
  }
}
__global__ void sum_heads(void* o, const void* a, i64 rows, int nh, int D, int P, int bf) {
  const i64 W = (i64)nh * D;
  GRID_STRIDE(i, rows * W) {
    const i64 t = i / W;
    const int r = (int)(i % W), h = r / D, c = r % D;
    const i64 base = t * W * P + (i64)h * P * D + c;
    float s = 0.f;
    for (int j = 0; j < P; j++) s += LD(a, base + (i64)j * D, BF(1));
    ST(o, i, s, BF(0));
  }
}

// ---- GEMV: C[m, n] (+)= Σ_k A'[m, k]·W[n, k] for a few rows (M ≤ 8: decode), W bf16 [N, K] ------------
// A' is A, or SRMS(A) per row (mode 1: the norm before a projection), or A[:, :K] ⊙ A[:, K:] (mode 2:
// SGLU's gate, A [M, 2K]), staged in shared memory as float (M·K·4 bytes). A warp computes 4 output
// columns over a 1/S share of K (S = ksplit ∈ {1, 2, 4, 8} warps per column group, so that small N
// still spreads over every SM), reading W with 16-byte loads, 4 k-steps × 4 columns in flight; the
// first of them are issued before A is staged. MM: M rounded up to 1, 2, 4 or 8 (one kernel each).
// K a multiple of 8, W 16-byte aligned. bf bits: 0 C, 1 A
#define GEMV_U 4
}  // extern "C" (templates below)
// ---- elementwise kernels over W consecutive columns a thread (W = 8: 16-byte accesses, chosen by each
// kernel's entry point with vec8) ---------------------------------------------------------------------
template <int W> __device__ __forceinline__ void LDV(const void* p, i64 i, int bf, float* v) { if (W == 8) load8(p, i, bf, v); else v[0] = LD(p, i, bf); }
template <int W> __device__ __forceinline__ void STV(void* p, i64 i, const float* v, int bf) { if (W == 8) store8(p, i, v, bf); else ST(p, i, v[0], bf); }

// ---- SimpleRMSNorm and GLA's output gate: one block per row, W columns a thread at a time --------------
// y = x·rstd, rstd = 1/√(mean x² + eps). bf bits: 0 y, 1 x
template <int W>
__device__ __forceinline__ void srmsnorm_fwd_body(void* y, float* rstd, const void* x, int D, float eps, int bf) {
  const i64 r = (i64)blockIdx.x * D;
  float ss = 0, v[W];
  for (int d = threadIdx.x * W; d < D; d += blockDim.x * W) {
    LDV<W>(x, r + d, BF(1), v);
#pragma unroll
    for (int e = 0; e < W; e++) ss += v[e] * v[e];
  }
  ss = blockSum<float>(ss);
  const float rs = rsqrtf(ss / D + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
  for (int d = threadIdx.x * W; d < D; d += blockDim.x * W) {
    LDV<W>(x, r + d, BF(1), v);
#pragma unroll
    for (int e = 0; e < W; e++) v[e] *= rs;
    STV<W>(y, r + d, v, BF(0));
  }
}
// dx (+)= rstd·(dy − y·mean(dy·y)). bf bits: 0 dx, 1 dy, 2 y
template <int W>
__device__ __forceinline__ void srmsnorm_bwd_body(void* dx, const void* dy, const void* y, const float* rstd, int D, int acc, int bf) {
  const i64 r = (i64)blockIdx.x * D;
  float dot = 0, g[W], v[W], o[W];
  for (int d = threadIdx.x * W; d < D; d += blockDim.x * W) {
    LDV<W>(dy, r + d, BF(1), g); LDV<W>(y, r + d, BF(2), v);
#pragma unroll
    for (int e = 0; e < W; e++) dot += g[e] * v[e];
  }
  dot = blockSum<float>(dot) / D;
  const float rs = rstd[blockIdx.x];
  for (int d = threadIdx.x * W; d < D; d += blockDim.x * W) {
    LDV<W>(dy, r + d, BF(1), g); LDV<W>(y, r + d, BF(2), v);
    if (acc) LDV<W>(dx, r + d, BF(0), o);
#pragma unroll
    for (int e = 0; e < W; e++) o[e] = (acc ? o[e] : 0.f) + rs * (g[e] - v[e] * dot);
    STV<W>(dx, r + d, o, BF(0));
  }
}
// a = srms(o)⊙u, u = columns [3H, 4H) of qkvu. bf bits: 0 a, 1 o, 2 qkvu
template <int W>
__device__ __forceinline__ void norm_gate_fwd_body(void* a, float* rstd, const void* o, const void* x, int H, float eps, int bf) {
  pdl_trigger();
  pdl_wait();
  const i64 t = blockIdx.x;
  float ss = 0, v[W], u[W];
  for (int c = threadIdx.x * W; c < H; c += blockDim.x * W) {
    LDV<W>(o, t * H + c, BF(1), v);
#pragma unroll
    for (int e = 0; e < W; e++) ss += v[e] * v[e];
  }
  ss = blockSum<float>(ss);
  const float rs = rsqrtf(ss / H + eps);
  if (threadIdx.x == 0) rstd[t] = rs;
  for (int c = threadIdx.x * W; c < H; c += blockDim.x * W) {
    LDV<W>(o, t * H + c, BF(1), v); LDV<W>(x, t * 4 * H + 3 * H + c, BF(2), u);
#pragma unroll
    for (int e = 0; e < W; e++) v[e] *= rs * u[e];
    STV<W>(a, t * H + c, v, BF(0));
  }
}
// dO (overwritten) and du (columns [3H, 4H) of dqkvu). bf bits: 0 dO, 1 dqkvu, 2 dA, 3 o, 4 qkvu
template <int W>
__device__ __forceinline__ void norm_gate_bwd_body(void* dO, void* g, const void* dA, const void* o, const float* rstd, const void* x, int H, int bf) {
  const i64 t = blockIdx.x;
  const float rs = rstd[t];
  float dot = 0, y[W], u[W], da[W], r[W];
  for (int c = threadIdx.x * W; c < H; c += blockDim.x * W) {
    LDV<W>(o, t * H + c, BF(3), y); LDV<W>(x, t * 4 * H + 3 * H + c, BF(4), u); LDV<W>(dA, t * H + c, BF(2), da);
#pragma unroll
    for (int e = 0; e < W; e++) { y[e] *= rs; r[e] = da[e] * y[e]; dot += da[e] * u[e] * y[e]; }
    STV<W>(g, t * 4 * H + 3 * H + c, r, BF(1));
  }
  dot = blockSum<float>(dot) / H;
  for (int c = threadIdx.x * W; c < H; c += blockDim.x * W) {
    LDV<W>(o, t * H + c, BF(3), y); LDV<W>(x, t * 4 * H + 3 * H + c, BF(4), u); LDV<W>(dA, t * H + c, BF(2), da);
#pragma unroll
    for (int e = 0; e < W; e++) r[e] = rs * (da[e] * u[e] - y[e] * rs * dot);
    STV<W>(dO, t * H + c, r, BF(0));
  }
}

// ---- softmax cross-entropy: one block per row, W columns a thread at a time; the running maximum and
// sum of exponentials in one pass (rescaled when the maximum grows), the gradient in a second. dl may
// alias logits. bf bits: 0 logits, 1 dl
template <int W>
__device__ __forceinline__ void cross_entropy_body(const void* logits, const int* targets, void* dl, float* rowLoss, int V, float gradScale, int bf) {
  const i64 t = blockIdx.x, base = t * V;
  const int y = targets[t];
  float v[W];
  if (y == -100) {
    if (threadIdx.x == 0) rowLoss[t] = 0.f;
#pragma unroll
    for (int e = 0; e < W; e++) v[e] = 0.f;
    if (dl) for (int c = threadIdx.x * W; c < V; c += blockDim.x * W) STV<W>(dl, base + c, v, BF(1));
    return;
  }
  float mx = -TNL_INF, se = 0.f;
  for (int c = threadIdx.x * W; c < V; c += blockDim.x * W) {
    LDV<W>(logits, base + c, BF(0), v);
#pragma unroll
    for (int e = 0; e < W; e++) {
      if (v[e] > mx) { se = se * expf(mx - v[e]) + 1.f; mx = v[e]; }
      else se += expf(v[e] - mx);
    }
  }
  const float M = blockMax(mx);
  const float S = blockSum<float>(mx == -TNL_INF ? 0.f : se * expf(mx - M));
  const float lse = M + logf(S);
  const float ly = LD(logits, base + y, BF(0));
  __syncthreads();  // every thread has read L[y] before dl (maybe = logits) is written
  if (threadIdx.x == 0) rowLoss[t] = lse - ly;
  if (dl)
    for (int c = threadIdx.x * W; c < V; c += blockDim.x * W) {
      LDV<W>(logits, base + c, BF(0), v);
#pragma unroll
      for (int e = 0; e < W; e++) v[e] = (expf(v[e] - lse) - (c + e == y ? 1.f : 0.f)) * gradScale;
      STV<W>(dl, base + c, v, BF(1));
    }
}

// qkvu [T, 4H]; q, k [T, nh·dk] (dk = 2·dh with θ); v [T, H]. Angles in double: θ·p reaches 1e4+.
// The W columns of a thread lie in one head (dh % W == 0). bf bits: 0 q, 1 k, 2 v, 3 qkvu
template <int W>
__device__ __forceinline__ void gla_qkv_body(void* q, void* k, void* v, const void* x, int T, int nh, int dh, const float* theta, const int* pos, const int* vmask, int bf) {
  const int H = nh * dh, dk = theta ? 2 * dh : dh, HW = H / W;
  GRID_STRIDE(i, (i64)T * HW) {
    const i64 t = i / HW;
    const int c = (int)(i % HW) * W, h = c / dh, cc = c % dh;
    const i64 row = t * 4 * H, o = t * nh * dk + (i64)h * dk + cc;
    float a[W], b[W], u[W];
    LDV<W>(x, row + c, BF(3), a); LDV<W>(x, row + H + c, BF(3), b); LDV<W>(x, row + 2 * H + c, BF(3), u);
#pragma unroll
    for (int e = 0; e < W; e++) { a[e] *= sigm(a[e]); b[e] *= sigm(b[e]); }
    if (theta) {
      float as[W], bs[W];
#pragma unroll
      for (int e = 0; e < W; e++) {
        double sn, cs;
        lrpe_sincos(theta[c + e], pos[t], &sn, &cs);
        as[e] = (float)(a[e] * sn); a[e] = (float)(a[e] * cs); bs[e] = (float)(b[e] * sn); b[e] = (float)(b[e] * cs);
      }
      STV<W>(q, o + dh, as, BF(0)); STV<W>(k, o + dh, bs, BF(1));
    }
    STV<W>(q, o, a, BF(0)); STV<W>(k, o, b, BF(1));
    if (vmask && vmask[t] == 0)
#pragma unroll
      for (int e = 0; e < W; e++) u[e] = 0.f;
    STV<W>(v, t * H + c, u, BF(2));
  }
}
// bf bits: 0 dqkvu, 1 dq, 2 dk, 3 dv, 4 qkvu
template <int W>
__device__ __forceinline__ void gla_qkv_bwd_body(void* g, const void* dq, const void* dk, const void* dv, const void* x,
                                                 int T, int nh, int dh, const float* theta, const int* pos, const int* vmask, int bf) {
  const int H = nh * dh, dkk = theta ? 2 * dh : dh, HW = H / W;
  GRID_STRIDE(i, (i64)T * HW) {
    const i64 t = i / HW;
    const int c = (int)(i % HW) * W, h = c / dh, cc = c % dh;
    const i64 row = t * 4 * H, o = t * nh * dkk + (i64)h * dkk + cc;
    float xq[W], xk[W], gq[W], gk[W], gv[W];
    LDV<W>(x, row + c, BF(4), xq); LDV<W>(x, row + H + c, BF(4), xk);
    LDV<W>(dq, o, BF(1), gq); LDV<W>(dk, o, BF(2), gk); LDV<W>(dv, t * H + c, BF(3), gv);
    if (theta) {
      float gqs[W], gks[W];
      LDV<W>(dq, o + dh, BF(1), gqs); LDV<W>(dk, o + dh, BF(2), gks);
#pragma unroll
      for (int e = 0; e < W; e++) {
        double sn, cs;
        lrpe_sincos(theta[c + e], pos[t], &sn, &cs);
        gq[e] = (float)(gq[e] * cs + gqs[e] * sn); gk[e] = (float)(gk[e] * cs + gks[e] * sn);
      }
    }
#pragma unroll
    for (int e = 0; e < W; e++) {
      const float s1 = sigm(xq[e]), s2 = sigm(xk[e]);
      gq[e] *= s1 * (1.f + xq[e] * (1.f - s1)); gk[e] *= s2 * (1.f + xk[e] * (1.f - s2));
      if (vmask && vmask[t] == 0) gv[e] = 0.f;
    }
    STV<W>(g, row + c, gq, BF(0)); STV<W>(g, row + H + c, gk, BF(0)); STV<W>(g, row + 2 * H + c, gv, BF(0));
  }
}
// SGLU's gate m = h1 ⊙ h2 (h = [h1 | h2], [T, 2G]) and its backward. bf bits: 0 m, 1 h / 0 dh, 1 dm, 2 h
template <int W>
__device__ __forceinline__ void sglu_fwd_body(void* m, const void* h, int T, int G, int bf) {
  const int GW = G / W;
  GRID_STRIDE(i, (i64)T * GW) {
    const i64 t = i / GW, c = (i % GW) * W;
    float a[W], b[W];
    LDV<W>(h, t * 2 * G + c, BF(1), a); LDV<W>(h, t * 2 * G + G + c, BF(1), b);
#pragma unroll
    for (int e = 0; e < W; e++) a[e] *= b[e];
    STV<W>(m, t * G + c, a, BF(0));
  }
}
template <int W>
__device__ __forceinline__ void sglu_bwd_body(void* dh, const void* dm, const void* h, int T, int G, int bf) {
  const int GW = G / W;
  GRID_STRIDE(i, (i64)T * GW) {
    const i64 t = i / GW, c = (i % GW) * W;
    float a[W], b[W], d[W], da[W];
    LDV<W>(h, t * 2 * G + c, BF(2), a); LDV<W>(h, t * 2 * G + G + c, BF(2), b); LDV<W>(dm, t * G + c, BF(1), d);
#pragma unroll
    for (int e = 0; e < W; e++) { da[e] = d[e] * b[e]; b[e] = d[e] * a[e]; }
    STV<W>(dh, t * 2 * G + c, da, BF(0)); STV<W>(dh, t * 2 * G + G + c, b, BF(0));
  }
}

// The W rows (4 output columns) and K positions one warp of a GEMV covers: warps come in groups of S
// sharing a column group, warp j of a group taking K positions j·32 + lane + i·32·S (8 values each).
// The block's 32/S columns start at row0 (blockIdx.x·32/S unless the caller maps blocks otherwise).
struct GemvTile {
  const uint4* w[4];
  int n0, step, k8, K8;
  __device__ GemvTile(const u16* W, int N, int K, int S, int row0) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    n0 = row0 + (warp / S) * 4;
#pragma unroll
    for (int r = 0; r < 4; r++) w[r] = (const uint4*)(W + (i64)min(n0 + r, N - 1) * K);
    step = 32 * S; k8 = (warp % S) * 32 + lane; K8 = K / 8;
  }
  // GEMV_U k-steps from `from`, 16 bytes of each row each (zeros past the end)
  __device__ __forceinline__ void load(uint4 (&p)[GEMV_U][4], int from) const {
#pragma unroll
    for (int u = 0; u < GEMV_U; u++)
#pragma unroll
      for (int r = 0; r < 4; r++) p[u][r] = from + u * step < K8 ? __ldg(w[r] + from + u * step) : make_uint4(0, 0, 0, 0);
  }
};
// s[m][r] += W_r · x over one 16-byte chunk of each of the 4 W rows (8 bf16) and 8 floats of A's row m.
template <int MM>
__device__ __forceinline__ void gemv_fma(float (&s)[MM][4], const uint4 (&p)[4], int m, const float* x) {
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const u32 a = p[r].x, b = p[r].y, c = p[r].z, d = p[r].w;
    s[m][r] += __uint_as_float(a << 16) * x[0] + __uint_as_float(a & 0xffff0000u) * x[1]
             + __uint_as_float(b << 16) * x[2] + __uint_as_float(b & 0xffff0000u) * x[3]
             + __uint_as_float(c << 16) * x[4] + __uint_as_float(c & 0xffff0000u) * x[5]
             + __uint_as_float(d << 16) * x[6] + __uint_as_float(d & 0xffff0000u) * x[7];
  }
}
// The end of both GEMVs: warp sums, the K split's partial sums through shared memory, the store (and,
// with `sink`, row 0's values as stored, at the block's column index: sink[(warp / S)·4 + r]).
template <int MM>
__device__ __forceinline__ void gemv_finish(float (&s)[MM][4], float (&part)[8][MM][4], int S, int n0, void* C, int M, int N, int acc, int bf,
                                            const float (*cprev)[4] = nullptr, float* sink = nullptr) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < MM; m++)
#pragma unroll
    for (int r = 0; r < 4; r++) {
      float v = s[m][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      s[m][r] = v;
    }
  if (S > 1) {
    if (lane == 0)
#pragma unroll
      for (int m = 0; m < MM; m++)
#pragma unroll
        for (int r = 0; r < 4; r++) part[warp][m][r] = s[m][r];
    __syncthreads();
    if (warp % S != 0) return;
    for (int j = 1; j < S; j++)
#pragma unroll
      for (int m = 0; m < MM; m++)
#pragma unroll
        for (int r = 0; r < 4; r++) s[m][r] += part[warp + j][m][r];
  }
  if (lane == 0)
#pragma unroll
    for (int m = 0; m < MM; m++)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const int n = n0 + r;
        if (m < M && n < N) {
          const i64 idx = (i64)m * N + n;
          const float v = acc ? (cprev ? cprev[m][r] : LD(C, idx, BF(0))) + s[m][r] : s[m][r];
          ST(C, idx, v, BF(0));
          if (sink && m == 0) sink[(warp / S) * 4 + r] = BF(0) ? bf2f(f2bf(v)) : v;
        }
      }
}
template <int MM>
__device__ __forceinline__ void gemv_body(void* C, const void* A, const u16* W, int M, int N, int K, int acc, int mode, float eps, int S, int bf) {
  extern __shared__ float xs[];
  __shared__ float part[8][MM][4];
  pdl_trigger();
  GemvTile t(W, N, K, S, blockIdx.x * (32 / S));
  const int K8 = t.K8, step = t.step, n0 = t.n0;
  int k8 = t.k8;
  uint4 p[GEMV_U][4];
  t.load(p, k8);
  pdl_wait();  // A is the previous kernel's output
  // A' into shared memory while those loads are in flight
  const int lda = mode == 2 ? 2 * K : K, MK = M * K;
  for (int i0 = threadIdx.x; i0 < MK; i0 += 8 * blockDim.x) {
    float v[8];  // 8 (16 with the gate) loads in flight per thread, then the stores
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const int i = i0 + j * blockDim.x, m = i / K, k = i - m * K;
      v[j] = i >= MK ? 0.f : mode == 2 ? LD(A, (i64)m * lda + k, BF(1)) * LD(A, (i64)m * lda + K + k, BF(1)) : LD(A, (i64)m * lda + k, BF(1));
    }
#pragma unroll
    for (int j = 0; j < 8; j++) if (i0 + j * blockDim.x < MK) xs[i0 + j * blockDim.x] = v[j];
  }
  __syncthreads();
  if (mode == 1) {
    for (int m = 0; m < M; m++) {
      float ss = 0.f;
      for (int k = threadIdx.x; k < K; k += blockDim.x) ss += xs[m * K + k] * xs[m * K + k];
      ss = blockSum<float>(ss);
      const float rs = rsqrtf(ss / K + eps);
      for (int k = threadIdx.x; k < K; k += blockDim.x) xs[m * K + k] *= rs;
    }
    __syncthreads();
  }
  float s[MM][4];
#pragma unroll
  for (int m = 0; m < MM; m++)
#pragma unroll
    for (int r = 0; r < 4; r++) s[m][r] = 0.f;
  for (;;) {
#pragma unroll
    for (int u = 0; u < GEMV_U; u++) {
      const int kk = k8 + u * step;
      if (kk < K8) {
#pragma unroll
        for (int m = 0; m < MM; m++) {
          if (m < M) {
            const float4 x0 = *(const float4*)(xs + m * K + kk * 8), x1 = *(const float4*)(xs + m * K + kk * 8 + 4);
            const float x[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            gemv_fma<MM>(s, p[u], m, x);
          }
        }
      }
    }
    k8 += GEMV_U * step;
    if (k8 >= K8) break;
    t.load(p, k8);
  }
  gemv_finish<MM>(s, part, S, n0, C, M, N, acc, bf);
}
// The same product for M ≤ 2 rows with A' formed in registers (no shared-memory staging on the critical
// path). The row norms are linear scales applied to the sums at the end; with a K split each warp sums
// the squares of the A values it reads beside the products and the S warps of a group add them through
// shared memory (instead of every warp reading the whole row first). C's old values (accumulate) are
// read right after the wait, beside A. __launch_bounds__(256, 2): 128 registers, two blocks an SM (the
// 176-block projections in one wave). Mode 3 adds GLA's output gate, A' = SRMS(A) ⊙ U[:, 3K:4K) (U = qkvu
// [M, 4K]). A (and U) 16-byte aligned. bf bits: 0 C, 1 A, 2 U
template <int MM, bool SINK = false>
__device__ __forceinline__ void gemv_reg_body(void* C, const void* A, const u16* W, const void* U, int M, int N, int K, int acc, int mode, float eps, int S,
                                              const void* pf, i64 pfBytes, int bf, int row0, float* sink = nullptr) {
  __shared__ float part[8][MM][4];
  __shared__ float ssPart[8][MM];
  pdl_trigger();
  GemvTile t(W, N, K, S, row0);
  const int K8 = t.K8, step = t.step, n0 = t.n0;
  int k8 = t.k8;
  uint4 p[GEMV_U][4];
  t.load(p, k8);
  prefetch_l2(pf, pfBytes);
  pdl_wait();
  const int lda = mode == 2 ? 2 * K : K, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool norm = mode == 1 || mode == 3;
  // without a K split a warp reads the whole row anyway: its norm first, four loads in flight (the
  // product's loads then hit L1; measured faster than summing the squares beside the products there)
  const bool normFirst = norm && S == 1;
  float rs[MM];
#pragma unroll
  for (int m = 0; m < MM; m++) {
    rs[m] = 1.f;
    if (normFirst && m < M) {
      float sq = 0.f;
      for (int k0 = lane * 8; k0 < K; k0 += 4 * 256) {
        float v[4][8];
#pragma unroll
        for (int j = 0; j < 4; j++) {
          if (k0 + j * 256 < K) load8(A, (i64)m * lda + k0 + j * 256, BF(1), v[j]);
          else
#pragma unroll
            for (int i = 0; i < 8; i++) v[j][i] = 0.f;
        }
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
          for (int i = 0; i < 8; i++) sq += v[j][i] * v[j][i];
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
      rs[m] = rsqrtf(sq / K + eps);
    }
  }
  const bool sumSq = norm && !normFirst;
  float cprev[MM][4];
  if (acc && lane == 0 && warp % S == 0)
#pragma unroll
    for (int m = 0; m < MM; m++)
#pragma unroll
      for (int r = 0; r < 4; r++) cprev[m][r] = m < M && n0 + r < N ? LD(C, (i64)m * N + n0 + r, BF(0)) : 0.f;
  float s[MM][4], ss[MM];
#pragma unroll
  for (int m = 0; m < MM; m++) {
    ss[m] = 0.f;
#pragma unroll
    for (int r = 0; r < 4; r++) s[m][r] = 0.f;
  }
  for (;;) {
    float x[GEMV_U][MM][8];
#pragma unroll
    for (int u = 0; u < GEMV_U; u++)
#pragma unroll
      for (int m = 0; m < MM; m++) {
        const int kk = k8 + u * step;
        if (kk < K8 && m < M) {
          const i64 at = (i64)m * lda + kk * 8;
          load8(A, at, BF(1), x[u][m]);
          if (mode == 2 || mode == 3) {
            float g[8];
            load8(mode == 2 ? A : U, mode == 2 ? at + K : (i64)m * 4 * K + 3 * K + kk * 8, mode == 2 ? BF(1) : BF(2), g);
#pragma unroll
            for (int j = 0; j < 8; j++) { if (sumSq) ss[m] += x[u][m][j] * x[u][m][j]; x[u][m][j] *= g[j]; }
          } else if (sumSq)
#pragma unroll
            for (int j = 0; j < 8; j++) ss[m] += x[u][m][j] * x[u][m][j];
        } else {
#pragma unroll
          for (int j = 0; j < 8; j++) x[u][m][j] = 0.f;
        }
      }
#pragma unroll
    for (int u = 0; u < GEMV_U; u++)
#pragma unroll
      for (int m = 0; m < MM; m++) gemv_fma<MM>(s, p[u], m, x[u][m]);
    k8 += GEMV_U * step;
    if (k8 >= K8) break;
    t.load(p, k8);
  }
  if (sumSq) {
    // Σ A² over the row: the warp's lanes, then (K split) the S warps of its group
#pragma unroll
    for (int m = 0; m < MM; m++)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) ss[m] += __shfl_xor_sync(0xffffffffu, ss[m], o);
    if (S > 1) {
      if (lane == 0)
#pragma unroll
        for (int m = 0; m < MM; m++) ssPart[warp][m] = ss[m];
      __syncthreads();
      const int w0 = warp - warp % S;
#pragma unroll
      for (int m = 0; m < MM; m++) {
        ss[m] = 0.f;
        for (int j = 0; j < S; j++) ss[m] += ssPart[w0 + j][m];
      }
    }
#pragma unroll
    for (int m = 0; m < MM; m++) rs[m] = rsqrtf(ss[m] / K + eps);
  }
  if (norm)
#pragma unroll
    for (int m = 0; m < MM; m++)
#pragma unroll
      for (int r = 0; r < 4; r++) s[m][r] *= rs[m];
  gemv_finish<MM>(s, part, S, n0, C, M, N, acc, bf, cprev, SINK ? sink : nullptr);
}
// Batch-1 decode: the qkvu projection (x normalised) and GLA's recurrent step in one kernel, for heads
// of dh = 128. A cluster of CS blocks a head (CS = 16: 256 threads, two blocks an SM; CS = 8: 512
// threads, one an SM; the host takes 8 where every head's cluster fits on the GPU at once, else 16):
// block c computes 512/CS of the head's 512 projection rows (q, k, v, u: CS/4 blocks each) as
// gemv_reg does, writes them to qkvu (the out projection reads u) and pushes its q, k or v values into
// every block of the cluster. Once its copy of q, k, v is complete, each block updates DK/CS rows of
// the head's state (4 columns a thread) and sums q·S over them; each column's partial sum goes to the
// block that owns it (128/CS columns a block), which adds the CS partials once they have come and
// writes o. Data moves by st.async on mbarriers: the cluster barrier, which orders all memory, cost
// ≈ 0.65 µs each time. This replaces the qkvu GEMV and gla_decode: one kernel boundary less a layer.
// The state rows are read before the wait (in a decode graph the previous replay wrote them).
// bf bits: 0 qkvu, 1 x, 2 o
template <int CS>
__device__ __forceinline__ void gla_project_step_body(void* qkvu, void* o, const void* x, const u16* W, int nh, int D, float eps,
                                                      const float* theta, const int* pos, const int* vmask, const float* loglam,
                                                      float* state, const int* slots, const void* pf, i64 pfBytes, int bf) {
  constexpr int dh = 128, NT = 4096 / CS, RL = NT / 32, ROWS = 512 / CS, OWN = dh / CS;
  __shared__ __align__(16) float mine[ROWS];      // this block's projection values (as stored)
  __shared__ __align__(16) float qkv[3 * dh];     // the head's q, k, v before silu / LRPE, from the whole cluster
  __shared__ __align__(16) float red[RL][dh];     // q·S of each row lane
  __shared__ __align__(16) float opart[CS][OWN];  // the partial sums of the columns this block owns
  __shared__ __align__(8) unsigned long long bars[2];  // qkv complete, opart complete
  if (threadIdx.x == 0) { mbar_init_expect(&bars[0], 3 * dh * 4); mbar_init_expect(&bars[1], CS * OWN * 4); }
  cluster_arrive_relaxed();  // (waited on before the first store into another block)
  const u32 c = cluster_rank();
  const int h = blockIdx.x / CS, H = nh * dh, DK = theta ? 2 * dh : dh, RP = DK / CS, seg = c / (CS / 4), part = c % (CS / 4);
  const int ty = threadIdx.x >> 5, tx = threadIdx.x & 31;
  float* S = decode_state(state, slots, 0, h, nh, DK, dh);
  // host inputs before the wait (see gla_decode), and LRPE's factor for each of this thread's rows
  const bool vOn = !vmask || vmask[0] != 0;
  float4 sv[2];  // state rows c·RP + ty + RL·j (RP / RL = DK / 128 of them), columns 4·tx …
  double rot[2] = {1.0, 1.0};  // cos for rows < dh, sin past them
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int r = c * RP + ty + RL * j;
    sv[j] = RL * j < RP ? *(const float4*)(S + (i64)r * dh + 4 * tx) : make_float4(0, 0, 0, 0);
    if (theta && RL * j < RP) {
      double sn, cs;
      lrpe_sincos(theta[h * dh + r % dh], pos[0], &sn, &cs);
      rot[j] = r < dh ? cs : sn;
    }
  }
  gemv_reg_body<1, true>(qkvu, x, W, nullptr, 1, 4 * H, D, 0, 1, eps, 1, pf, pfBytes, bf & 3, seg * H + h * dh + part * ROWS, mine);
  __syncthreads();
  cluster_wait();
  if (seg < 3)
    for (int i = threadIdx.x; i < CS * ROWS / 4; i += NT) {
      const int to = i / (ROWS / 4), j = 4 * (i % (ROWS / 4));
      st_async4(&qkv[seg * dh + part * ROWS + j], &bars[0], to, *(const float4*)&mine[j]);
    }
  const float lam = expf(loglam[h]);
  mbar_wait(smem_addr(&bars[0]), 0);
  const float4 v4 = vOn ? *(const float4*)(qkv + 2 * dh + 4 * tx) : make_float4(0, 0, 0, 0);
  float4 acc = make_float4(0, 0, 0, 0);
#pragma unroll
  for (int j = 0; j < 2; j++) {
    if (RL * j >= RP) break;
    const int r = c * RP + ty + RL * j, i = r % dh;
    const float xq = qkv[i], xk = qkv[dh + i];
    const float sq = xq * sigm(xq), sk = xk * sigm(xk);
    float qr = sq, kr = sk;
    if (theta) { qr = (float)(sq * rot[j]); kr = (float)(sk * rot[j]); }
    float4 s = sv[j];
    s.x = kr * v4.x + lam * s.x; s.y = kr * v4.y + lam * s.y; s.z = kr * v4.z + lam * s.z; s.w = kr * v4.w + lam * s.w;
    *(float4*)(S + (i64)r * dh + 4 * tx) = s;
    acc.x += qr * s.x; acc.y += qr * s.y; acc.z += qr * s.z; acc.w += qr * s.w;
  }
  *(float4*)&red[ty][4 * tx] = acc;
  __syncthreads();
  if (threadIdx.x < dh / 4) {
    float4 p = make_float4(0, 0, 0, 0);
#pragma unroll
    for (int y = 0; y < RL; y++) { const float4 t = *(const float4*)&red[y][4 * threadIdx.x]; p.x += t.x; p.y += t.y; p.z += t.z; p.w += t.w; }
    st_async4(&opart[c][(4 * threadIdx.x) % OWN], &bars[1], 4 * threadIdx.x / OWN, p);
  }
  mbar_wait(smem_addr(&bars[1]), 0);
  if (threadIdx.x < OWN) {
    float p = 0.f;
#pragma unroll
    for (int b = 0; b < CS; b++) p += opart[b][threadIdx.x];
    ST(o, (i64)h * dh + c * OWN + threadIdx.x, p, BF(2));
  }
}
extern "C" {
#define GEMV_ARGS void* C, const void* A, const u16* W, int M, int N, int K, int acc, int mode, float eps, int S, int bf
#define GEMV_PASS C, A, W, M, N, K, acc, mode, eps, S, bf
__global__ void __launch_bounds__(256) gemv_bf16_m1(GEMV_ARGS) { gemv_body<1>(GEMV_PASS); }
__global__ void __launch_bounds__(256) gemv_bf16_m2(GEMV_ARGS) { gemv_body<2>(GEMV_PASS); }
__global__ void __launch_bounds__(256) gemv_bf16_m4(GEMV_ARGS) { gemv_body<4>(GEMV_PASS); }
__global__ void __launch_bounds__(256) gemv_bf16_m8(GEMV_ARGS) { gemv_body<8>(GEMV_PASS); }
#define GEMV_REG_ARGS void* C, const void* A, const u16* W, const void* U, int M, int N, int K, int acc, int mode, float eps, int S, const void* pf, i64 pfBytes, int bf
#define GEMV_REG_PASS C, A, W, U, M, N, K, acc, mode, eps, S, pf, pfBytes, bf, blockIdx.x * (8 / S) * 4
__global__ void __launch_bounds__(256, 2) gemv_reg_m1(GEMV_REG_ARGS) { gemv_reg_body<1>(GEMV_REG_PASS); }
__global__ void __launch_bounds__(256, 2) gemv_reg_m2(GEMV_REG_ARGS) { gemv_reg_body<2>(GEMV_REG_PASS); }

#define GLA_PROJECT_STEP_ARGS void* qkvu, void* o, const void* x, const u16* W, int nh, int D, float eps, const float* theta, const int* pos, const int* vmask, const float* loglam, float* state, const int* slots, const void* pf, i64 pfBytes, int bf
#define GLA_PROJECT_STEP_PASS qkvu, o, x, W, nh, D, eps, theta, pos, vmask, loglam, state, slots, pf, pfBytes, bf
__global__ void __launch_bounds__(256, 2) gla_project_step16(GLA_PROJECT_STEP_ARGS) { gla_project_step_body<16>(GLA_PROJECT_STEP_PASS); }
__global__ void __launch_bounds__(512, 1) gla_project_step8(GLA_PROJECT_STEP_ARGS) { gla_project_step_body<8>(GLA_PROJECT_STEP_PASS); }

// ---- token selection inside the decode step (sampleTokens; src/backends/token-pick.ts holds the same
// hash and rule on the host) ----------------------------------------------------------------------------
// Each row b of logits [B, ld] picks its next token among its first V columns: the first largest at
// temperature 0, else the largest of x / T + G with Gumbel noise G = −log(−log u) (the Gumbel-max
// rule: a draw from softmax(x / T) in one pass), u hashed from (the row's seed, pos[b], column).
// T and the seed are per row when temps / seeds are given, else T and seed ^ b·0x9e3779b9. Two launches: blocks reduce
// slices of the row to a Pick each (sample_tokens), then sample_finish combines a row's Picks, writes the pick into ids[b], advances pos[b], stores the pick
// and its log-probability at temperature 1 in ring slot steps[b] % slots (page-locked host memory:
// [slots·B] ids, then [slots·B] log-probabilities) and counts the step. ids and pos are the next
// step's inputs, read first by its embedding, which is launched without early start (PDL): it begins
// after sample_finish has finished, and every kernel after it later still (some read pos before their wait).
struct Pick { float s; int i; float m, z; };  // best score and its column; log Σ exp as (max, Σ exp(x − max))
__device__ __forceinline__ u32 lowbias32(u32 x) {
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
  return x;
}
__device__ __forceinline__ Pick pick_none() { return {-TNL_INF, 0x7fffffff, -TNL_INF, 0.f}; }
__device__ __forceinline__ u32 pick_key(u32 rowSeed, int pos) { return lowbias32(lowbias32(rowSeed) ^ (u32)pos); }
__device__ __forceinline__ u32 row_seed(const int* seeds, u32 seed, int b) { return seeds ? (u32)seeds[b] : seed ^ ((u32)b * 0x9e3779b9u); }
__device__ __forceinline__ void pick_merge(Pick& p, const Pick& q) {
  // the larger score, the lower column on a tie (the host's first largest)
  if (q.s > p.s || (q.s == p.s && q.i < p.i)) { p.s = q.s; p.i = q.i; }
  if (q.m == -TNL_INF) return;
  if (p.m == -TNL_INF) { p.m = q.m; p.z = q.z; return; }
  const float M = fmaxf(p.m, q.m);
  p.z = p.z * expf(p.m - M) + q.z * expf(q.m - M);
  p.m = M;
}
// logit v of column i
__device__ __forceinline__ void pick_add(Pick& p, float v, int i, float T, u32 key) {
  float sc = v;
  if (T > 0.f) {
    const float u = ((lowbias32(key ^ ((u32)i * 0x85ebca6bu)) >> 8) + 0.5f) * (1.f / 16777216.f);
    sc = __fdiv_rn(v, T) - logf(-logf(u));
  }
  pick_merge(p, {sc, i, v, 1.f});
}
__device__ __forceinline__ Pick pick_warp(Pick p) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    pick_merge(p, {__shfl_xor_sync(0xffffffffu, p.s, o), __shfl_xor_sync(0xffffffffu, p.i, o), __shfl_xor_sync(0xffffffffu, p.m, o), __shfl_xor_sync(0xffffffffu, p.z, o)});
  return p;
}
// the block's Pick (blockDim.x = 256), in thread 0
__device__ __forceinline__ Pick pick_block(Pick p) {
  __shared__ Pick red[8];
  p = pick_warp(p);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = p;
  __syncthreads();
  if (threadIdx.x == 0) for (int w = 1; w < 8; w++) pick_merge(p, red[w]);
  return p;
}
// Grid (NB, B): block j reduces a slice of row b's columns into part[b·NB + j].
__global__ void __launch_bounds__(256) sample_tokens(const float* logits, int V, int ld, float T, u32 seed, const float* temps, const int* seeds,
                                                     const int* pos, Pick* part) {
  pdl_trigger();
  pdl_wait();
  const int b = blockIdx.y, NB = gridDim.x, per = (V + NB - 1) / NB, lo = blockIdx.x * per, hi = min(V, lo + per);
  const float* x = logits + (i64)b * ld;
  const u32 key = pick_key(row_seed(seeds, seed, b), pos[b]);
  if (temps) T = temps[b];
  Pick p = pick_none();
  for (int i = lo + threadIdx.x; i < hi; i += 256) pick_add(p, x[i], i, T, key);
  p = pick_block(p);
  if (threadIdx.x == 0) part[(i64)b * NB + blockIdx.x] = p;
}
// Grid B: row b's NB Picks → the pick, its log-probability, the ring, ids[b], pos[b], steps[b].
__global__ void __launch_bounds__(256) sample_finish(const float* logits, int ld, int NB, const Pick* part, int* ids, int* pos, int* ring, int slots, int* steps) {
  pdl_trigger();
  pdl_wait();
  const int b = blockIdx.x, B = gridDim.x;
  Pick q = pick_none();
  for (int k = threadIdx.x; k < NB; k += 256) pick_merge(q, part[(i64)b * NB + k]);
  q = pick_block(q);
  if (threadIdx.x == 0) {
    const int step = steps[b], slot = (step % slots) * B + b;
    ids[b] = q.i;
    pos[b] += 1;
    ring[slot] = q.i;
    ring[slots * B + slot] = __float_as_int(logits[(i64)b * ld + q.i] - q.m - logf(q.z));
    steps[b] = step + 1;
  }
}

// One entry each: 8 columns a thread when the column count allows it and every tensor is 16-byte
// aligned (vec8), else 1 (a uniform branch; both forms compiled in).
__global__ void srmsnorm_fwd(void* y, float* rstd, const void* x, int rows, int D, float eps, int bf) {
  if (vec8(D, y, x)) srmsnorm_fwd_body<8>(y, rstd, x, D, eps, bf); else srmsnorm_fwd_body<1>(y, rstd, x, D, eps, bf);
}
__global__ void srmsnorm_bwd(void* dx, const void* dy, const void* y, const float* rstd, int rows, int D, int acc, int bf) {
  if (vec8(D, dx, dy, y)) srmsnorm_bwd_body<8>(dx, dy, y, rstd, D, acc, bf); else srmsnorm_bwd_body<1>(dx, dy, y, rstd, D, acc, bf);
}
__global__ void norm_gate_fwd(void* a, float* rstd, const void* o, const void* x, int T, int H, float eps, int bf) {
  if (vec8(H, a, o, x)) norm_gate_fwd_body<8>(a, rstd, o, x, H, eps, bf); else norm_gate_fwd_body<1>(a, rstd, o, x, H, eps, bf);
}
__global__ void norm_gate_bwd(void* dO, void* g, const void* dA, const void* o, const float* rstd, const void* x, int T, int H, int bf) {
  if (vec8(H, dO, g, dA, o, x)) norm_gate_bwd_body<8>(dO, g, dA, o, rstd, x, H, bf); else norm_gate_bwd_body<1>(dO, g, dA, o, rstd, x, H, bf);
}
__global__ void gla_qkv(void* q, void* k, void* v, const void* x, int T, int nh, int dh, const float* theta, const int* pos, const int* vmask, int bf) {
  if (vec8(dh, q, k, v, x)) gla_qkv_body<8>(q, k, v, x, T, nh, dh, theta, pos, vmask, bf); else gla_qkv_body<1>(q, k, v, x, T, nh, dh, theta, pos, vmask, bf);
}
__global__ void gla_qkv_bwd(void* g, const void* dq, const void* dk, const void* dv, const void* x, int T, int nh, int dh, const float* theta, const int* pos, const int* vmask, int bf) {
  if (vec8(dh, g, dq, dk, dv, x)) gla_qkv_bwd_body<8>(g, dq, dk, dv, x, T, nh, dh, theta, pos, vmask, bf);
  else gla_qkv_bwd_body<1>(g, dq, dk, dv, x, T, nh, dh, theta, pos, vmask, bf);
}
__global__ void sglu_fwd(void* m, const void* h, int T, int G, int bf) {
  if (vec8(G, m, h)) sglu_fwd_body<8>(m, h, T, G, bf); else sglu_fwd_body<1>(m, h, T, G, bf);
}
__global__ void sglu_bwd(void* dh, const void* dm, const void* h, int T, int G, int bf) {
  if (vec8(G, dh, dm, h)) sglu_bwd_body<8>(dh, dm, h, T, G, bf); else sglu_bwd_body<1>(dh, dm, h, T, G, bf);
}
__global__ void cross_entropy(const void* logits, const int* targets, void* dl, float* rowLoss, int T, int V, float gradScale, int bf) {
  if (vec8(V, logits, dl)) cross_entropy_body<8>(logits, targets, dl, rowLoss, V, gradScale, bf); else cross_entropy_body<1>(logits, targets, dl, rowLoss, V, gradScale, bf);
}

// ---- AdamW --------------------------------------------------------------------------------------------
__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) {
  g *= gs;
  m = b1 * m + (1.f - b1) * g;
  v = b2 * v + (1.f - b2) * g * g;
  p = p * (1.f - lr * wd) - lr * (m / bc1) / (sqrtf(v / bc2) + eps);
}
// four elements a thread (16-byte accesses) over the aligned bulk, then the tail one at a time
__global__ void adamw(float* p, const float* g, float* m, float* v, i64 n, float lr, float b1, float b2, float eps,
                      float wd, float bc1, float bc2, float gs) {
  const i64 n4 = aligned16(p, g, m, v) ? n / 4 : 0;
  GRID_STRIDE(i, n4) {
    float4 P = ((float4*)p)[i], M = ((float4*)m)[i], Vv = ((float4*)v)[i];
    const float4 Gg = ((const float4*)g)[i];
    adamw_one(P.x, Gg.x, M.x, Vv.x, lr, b1, b2, eps, wd, bc1, bc2, gs); adamw_one(P.y, Gg.y, M.y, Vv.y, lr, b1, b2, eps, wd, bc1, bc2, gs);
    adamw_one(P.z, Gg.z, M.z, Vv.z, lr, b1, b2, eps, wd, bc1, bc2, gs); adamw_one(P.w, Gg.w, M.w, Vv.w, lr, b1, b2, eps, wd, bc1, bc2, gs);
    ((float4*)p)[i] = P; ((float4*)m)[i] = M; ((float4*)v)[i] = Vv;
  }
  GRID_STRIDE(j, n - 4 * n4) { const i64 i = 4 * n4 + j; adamw_one(p[i], g[i], m[i], v[i], lr, b1, b2, eps, wd, bc1, bc2, gs); }
}

// ---- random inputs for checks and benchmarks (counter-based: element i depends only on seed, i) ----
__device__ __forceinline__ u32 hash32(u32 x) {
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
  return x;
}
__device__ __forceinline__ float normalAt(i64 i, u32 seed) {
  const u32 a = hash32((u32)i * 2u + seed * 0x9e3779b9u + (u32)(i >> 31));
  const u32 b = hash32(a ^ 0x85ebca6bu ^ (u32)i);
  const float u1 = ((a >> 8) + 1) * (1.f / 16777217.f), u2 = (b >> 8) * (1.f / 16777216.f);
  return sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
}
__global__ void fill_normal_f32(float* p, i64 n, u32 seed, float scale) { GRID_STRIDE(i, n) p[i] = scale * normalAt(i, seed); }
__global__ void fill_normal_bf16(u16* p, i64 n, u32 seed, float scale) { GRID_STRIDE(i, n) p[i] = f2bf(scale * normalAt(i, seed)); }

}  // extern "C"
