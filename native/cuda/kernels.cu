// Elementwise and row kernels of the CUDA backend (compiled at first use by NVRTC; no headers).
// Storage: f32, or bf16 as raw 16-bit words; every reduction accumulates in fp32 (sums of squares
// for clipping in fp64). Semantics: src/backends/backend.ts; definitions: src/backends/reference.
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
#define TNL_INF __int_as_float(0x7f800000)

__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 f2bf(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)(((u >> 16) | 0x40u) & 0xffffu);
  return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float ldf(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float ldf(const u16* p, i64 i) { return bf2f(p[i]); }
__device__ __forceinline__ float sigm(float x) { return 1.f / (1.f + __expf(-x)); }

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

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

extern "C" {

// ---- conversions, copies -------------------------------------------------------------------------
__global__ void cvt_f32_bf16(u16* dst, const float* src, i64 n) { GRID_STRIDE(i, n) dst[i] = f2bf(src[i]); }
__global__ void cvt_bf16_f32(float* dst, const u16* src, i64 n) { GRID_STRIDE(i, n) dst[i] = bf2f(src[i]); }
__global__ void gather_rows_b32(u32* out, const u32* src, const int* idx, int n, int cols) {
  GRID_STRIDE(i, (i64)n * cols) { const i64 r = i / cols, c = i % cols; out[i] = src[(i64)idx[r] * cols + c]; }
}
__global__ void gather_rows_b16(u16* out, const u16* src, const int* idx, int n, int cols) {
  GRID_STRIDE(i, (i64)n * cols) { const i64 r = i / cols, c = i % cols; out[i] = src[(i64)idx[r] * cols + c]; }
}

// ---- dense elementwise ---------------------------------------------------------------------------
__global__ void add_inplace(float* y, const float* x, i64 n) { GRID_STRIDE(i, n) y[i] += x[i]; }
__global__ void scale_inplace(float* x, float s, i64 n) { GRID_STRIDE(i, n) x[i] *= s; }
__global__ void sum_squares_f32(const float* x, i64 n, double* partial) {
  double s = 0;
  GRID_STRIDE(i, n) { const double v = x[i]; s += v * v; }
  s = blockSum<double>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void sum_squares_bf16(const u16* x, i64 n, double* partial) {
  double s = 0;
  GRID_STRIDE(i, n) { const double v = bf2f(x[i]); s += v * v; }
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

// ---- SimpleRMSNorm: one block per row --------------------------------------------------------------
__global__ void srmsnorm_fwd(float* y, float* rstd, const float* x, int rows, int D, float eps) {
  const i64 r = blockIdx.x;
  const float* xr = x + r * D;
  float ss = 0;
  for (int d = threadIdx.x; d < D; d += blockDim.x) { const float v = xr[d]; ss += v * v; }
  ss = blockSum<float>(ss);
  const float rs = rsqrtf(ss / D + eps);
  if (threadIdx.x == 0) rstd[r] = rs;
  for (int d = threadIdx.x; d < D; d += blockDim.x) y[r * D + d] = xr[d] * rs;
}
__global__ void srmsnorm_bwd(float* dx, const float* dy, const float* y, const float* rstd, int rows, int D, int acc) {
  const i64 r = blockIdx.x;
  float dot = 0;
  for (int d = threadIdx.x; d < D; d += blockDim.x) dot += dy[r * D + d] * y[r * D + d];
  dot = blockSum<float>(dot) / D;
  const float rs = rstd[r];
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float g = rs * (dy[r * D + d] - y[r * D + d] * dot);
    dx[r * D + d] = acc ? dx[r * D + d] + g : g;
  }
}

// ---- gated linear attention pieces -----------------------------------------------------------------
// qkvu [T, 4H]; q, k [T, nh·dk] (dk = 2·dh with θ); v [T, H]. Angles in double: θ·p reaches 1e4+.
__global__ void gla_qkv(float* q, float* k, float* v, const float* x, int T, int nh, int dh,
                        const float* theta, const int* pos, const int* vmask) {
  const int H = nh * dh, dk = theta ? 2 * dh : dh;
  GRID_STRIDE(i, (i64)T * H) {
    const i64 t = i / H;
    const int c = (int)(i % H), h = c / dh, cc = c % dh;
    const float* row = x + t * 4 * H;
    const float xq = row[c], xk = row[H + c];
    const float sq = xq * sigm(xq), sk = xk * sigm(xk);
    const i64 o = t * nh * dk + (i64)h * dk + cc;
    if (theta) {
      double sn, cs;
      sincos((double)theta[c] * (double)pos[t], &sn, &cs);
      q[o] = (float)(sq * cs); q[o + dh] = (float)(sq * sn);
      k[o] = (float)(sk * cs); k[o + dh] = (float)(sk * sn);
    } else { q[o] = sq; k[o] = sk; }
    v[t * H + c] = (!vmask || vmask[t] != 0) ? row[2 * H + c] : 0.f;
  }
}
__global__ void gla_qkv_bwd(float* g, const float* dq, const float* dk, const float* dv, const float* x,
                            int T, int nh, int dh, const float* theta, const int* pos, const int* vmask) {
  const int H = nh * dh, dkk = theta ? 2 * dh : dh;
  GRID_STRIDE(i, (i64)T * H) {
    const i64 t = i / H;
    const int c = (int)(i % H), h = c / dh, cc = c % dh;
    const float* row = x + t * 4 * H;
    float* grow = g + t * 4 * H;
    const float xq = row[c], xk = row[H + c];
    const i64 o = t * nh * dkk + (i64)h * dkk + cc;
    float gq, gk;
    if (theta) {
      double sn, cs;
      sincos((double)theta[c] * (double)pos[t], &sn, &cs);
      gq = (float)(dq[o] * cs + dq[o + dh] * sn);
      gk = (float)(dk[o] * cs + dk[o + dh] * sn);
    } else { gq = dq[o]; gk = dk[o]; }
    const float s1 = sigm(xq), s2 = sigm(xk);
    grow[c] = gq * s1 * (1.f + xq * (1.f - s1));
    grow[H + c] = gk * s2 * (1.f + xk * (1.f - s2));
    grow[2 * H + c] = (!vmask || vmask[t] != 0) ? dv[t * H + c] : 0.f;
  }
}
// dθ[c] += Σ_t p_t·(sq·(−dq_c·sin + dq_{c+dh}·cos) + sk·(…)). Block (32, 8): 32 columns, 8 token lanes;
// grid (columns/32, token slices); one atomicAdd per column per block.
__global__ void gla_dtheta(float* dth, const float* dq, const float* dk, const float* x, const float* theta,
                           const int* pos, int T, int nh, int dh, int tokensPerSlice) {
  const int H = nh * dh, dkk = 2 * dh;
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int t0 = blockIdx.y * tokensPerSlice, t1 = min(T, t0 + tokensPerSlice);
  double acc = 0;
  if (c < H) {
    const int h = c / dh, cc = c % dh;
    for (int t = t0 + threadIdx.y; t < t1; t += blockDim.y) {
      const float* row = x + (i64)t * 4 * H;
      const float xq = row[c], xk = row[H + c];
      const float sq = xq * sigm(xq), sk = xk * sigm(xk);
      const double p = pos[t];
      double sn, cs;
      sincos((double)theta[c] * p, &sn, &cs);
      const i64 o = (i64)t * nh * dkk + (i64)h * dkk + cc;
      acc += p * (sq * (-dq[o] * sn + dq[o + dh] * cs) + sk * (-dk[o] * sn + dk[o + dh] * cs));
    }
  }
  __shared__ double red[8][33];
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < H) {
    double s = 0;
    for (int y = 0; y < blockDim.y; y++) s += red[y][threadIdx.x];
    atomicAdd(&dth[c], (float)s);
  }
}
// a = srms(o)⊙u, u = columns [3H, 4H) of qkvu; one block per token.
__global__ void norm_gate_fwd(float* a, float* rstd, const float* o, const float* x, int T, int H, float eps) {
  const i64 t = blockIdx.x;
  float ss = 0;
  for (int c = threadIdx.x; c < H; c += blockDim.x) { const float v = o[t * H + c]; ss += v * v; }
  ss = blockSum<float>(ss);
  const float rs = rsqrtf(ss / H + eps);
  if (threadIdx.x == 0) rstd[t] = rs;
  for (int c = threadIdx.x; c < H; c += blockDim.x) a[t * H + c] = o[t * H + c] * rs * x[t * 4 * H + 3 * H + c];
}
__global__ void norm_gate_bwd(float* dO, float* g, const float* dA, const float* o, const float* rstd, const float* x, int T, int H) {
  const i64 t = blockIdx.x;
  const float rs = rstd[t];
  float dot = 0;
  for (int c = threadIdx.x; c < H; c += blockDim.x) {
    const float y = o[t * H + c] * rs, u = x[t * 4 * H + 3 * H + c], da = dA[t * H + c];
    g[t * 4 * H + 3 * H + c] = da * y;
    dot += da * u * y;
  }
  dot = blockSum<float>(dot) / H;
  for (int c = threadIdx.x; c < H; c += blockDim.x) {
    const float y = o[t * H + c] * rs, u = x[t * 4 * H + 3 * H + c];
    dO[t * H + c] = rs * (dA[t * H + c] * u - y * dot);
  }
}

// ---- SGLU -------------------------------------------------------------------------------------------
__global__ void sglu_fwd(float* m, const float* h, int T, int G) {
  GRID_STRIDE(i, (i64)T * G) { const i64 t = i / G, c = i % G; m[i] = h[t * 2 * G + c] * h[t * 2 * G + G + c]; }
}
__global__ void sglu_bwd(float* dh, const float* dm, const float* h, int T, int G) {
  GRID_STRIDE(i, (i64)T * G) {
    const i64 t = i / G, c = i % G;
    const float a = h[t * 2 * G + c], b = h[t * 2 * G + G + c];
    dh[t * 2 * G + c] = dm[i] * b;
    dh[t * 2 * G + G + c] = dm[i] * a;
  }
}

// ---- softmax cross-entropy: one block per row. dl may alias logits. ---------------------------------
__global__ void cross_entropy(const float* logits, const int* targets, float* dl, float* rowLoss, int T, int V, float gradScale) {
  const i64 t = blockIdx.x;
  const float* L = logits + t * V;
  const int y = targets[t];
  if (y == -100) {
    if (threadIdx.x == 0) rowLoss[t] = 0.f;
    if (dl) for (int i = threadIdx.x; i < V; i += blockDim.x) dl[t * V + i] = 0.f;
    return;
  }
  float mx = -TNL_INF;
  for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, L[i]);
  mx = blockMax(mx);
  float se = 0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) se += expf(L[i] - mx);
  se = blockSum<float>(se);
  const float lse = mx + logf(se);
  const float ly = L[y];
  __syncthreads();  // every thread has read L[y] before dl (maybe = logits) is written
  if (threadIdx.x == 0) rowLoss[t] = lse - ly;
  if (dl) for (int i = threadIdx.x; i < V; i += blockDim.x) dl[t * V + i] = (expf(L[i] - lse) - (i == y ? 1.f : 0.f)) * gradScale;
}

// ---- AdamW --------------------------------------------------------------------------------------------
__global__ void adamw(float* p, const float* g, float* m, float* v, i64 n, float lr, float b1, float b2, float eps,
                      float wd, float bc1, float bc2, float gs) {
  GRID_STRIDE(i, n) {
    const float gi = g[i] * gs;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi; v[i] = vi;
    const float pi = p[i] * (1.f - lr * wd);
    p[i] = pi - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
  }
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
