#!/usr/bin/env bash
# Builds and runs the native kernel tests (attention.cc, kernels.cc) with g++ directly, against the
# real thread pool when native/threadpool.cc exists (else the serial stub in this folder); then runs
# them again on the lower code paths (TNL_ISA=avx2, TNL_ISA=generic). Usage: native/test/run.sh [--bench]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
native="$(dirname "$here")"
out="$here/build"
mkdir -p "$out"
CXX="${CXX:-g++}"
FLAGS=(-O2 -std=c++17 -Wall -Wextra -pthread -I"$native")
pool="$native/threadpool.cc"
[ -f "$pool" ] || pool="$here/stub_threadpool.cc"
"$CXX" "${FLAGS[@]}" -o "$out/test_kernels" "$here/test_kernels.cc" "$native/attention.cc" "$native/kernels.cc" "$pool"
if [ "${1:-}" = "--bench" ]; then
  # the GEMM (bench anchor) when its sources exist
  gemm=()
  for f in gemm.cc gemm_avx2.cc gemm_avx512.cc gemm_avx512bf16.cc; do [ -f "$native/$f" ] && gemm+=("$native/$f"); done
  "$CXX" -O3 -std=c++17 -pthread -I"$native" -o "$out/bench" "$here/bench.cc" "$native/attention.cc" "$native/kernels.cc" "$pool" "${gemm[@]}" -ldl
  shift
  exec "$out/bench" "$@"
fi
echo "== default ISA"
"$out/test_kernels"
echo "== TNL_ISA=avx2"
TNL_ISA=avx2 "$out/test_kernels"
echo "== TNL_ISA=generic"
TNL_ISA=generic "$out/test_kernels"
