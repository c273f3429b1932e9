// Runtime ISA selection shared by the kernel files (the GEMM files have their own table in
// gemm_internal.h). TNL_ISA=avx2 or TNL_ISA=generic forces the lower paths (tests use them).
#pragma once
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_ps); not our code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#define TNL_X86 1
#define TNL_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,bmi,bmi2")))
#endif

namespace tnl {
namespace isa {

inline bool detect_avx512() {
#if TNL_X86
  const char* e = std::getenv("TNL_ISA");
  if (e && (std::strcmp(e, "generic") == 0 || std::strcmp(e, "avx2") == 0)) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}
inline bool detect_avx2() {
#if TNL_X86
  const char* e = std::getenv("TNL_ISA");
  if (e && std::strcmp(e, "generic") == 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}
/** Decided once per process. */
inline bool avx512() {
  static const bool v = detect_avx512();
  return v;
}
inline bool avx2() {
  static const bool v = detect_avx2();
  return v;
}

}  // namespace isa
}  // namespace tnl
