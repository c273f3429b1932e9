// Put in front of every kernel source by the loader (src/backends/cuda/modules.ts) before NVRTC
// compiles it: NVRTC gets no include paths, so the definitions the sources share live here once.
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

// bfloat16 as raw 16-bit words: widening is exact; narrowing rounds to nearest even, NaN kept quiet.
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

// Shared-memory addresses and mbarrier waits (the decode cluster kernels and Lightning's warp-specialised
// kernel). try_wait.parity returns once the phase of that parity has completed.
__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 g; cvta.to.shared.u64 g, %1; cvt.u32.u64 %0, g; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
#if __CUDA_ARCH__ >= 900
  u32 done = 0;
  while (!done)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(bar), "r"(parity) : "memory");
#endif
}
