// The N-API face of the native CPU kernels: every function of gemm.h, kernels.h, attention.h and
// threadpool.h, taking typed arrays zero-copy (their data pointer already includes byteOffset, so
// subarray views work). Every call checks the arrays' types and that they hold at least the
// elements the dimensions imply, so a wrong call from JS throws instead of touching stray memory.
// Calls run synchronously on the calling thread (the kernels fan out over the pool themselves).
//
// Also here, for benchmarks only: a runtime dlopen of OpenBLAS (never a build dependency) and a
// measurement of the pool's dispatch overhead.
#include <dlfcn.h>
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>

#include "attention.h"
#include "gemm.h"
#include "kernels.h"
#include "threadpool.h"

namespace {

using Napi::CallbackInfo;
using Napi::Env;
using Napi::Value;

[[noreturn]] void fail(Env env, const std::string& what) { throw Napi::TypeError::New(env, what); }

// ---- argument helpers ----------------------------------------------------------------------
int64_t I(const CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) fail(info.Env(), std::string("argument ") + name + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= -9.0e15 && d <= 9.0e15) || d != std::floor(d))
    fail(info.Env(), std::string("argument ") + name + " must be an integer");
  return static_cast<int64_t>(d);
}
int64_t Dim(const CallbackInfo& info, size_t i, const char* name) {
  int64_t v = I(info, i, name);
  if (v < 0) fail(info.Env(), std::string("dimension ") + name + " must be ≥ 0");
  return v;
}
double D(const CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) fail(info.Env(), std::string("argument ") + name + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}
bool B(const CallbackInfo& info, size_t i) { return info[i].ToBoolean().Value(); }
bool Nullish(const CallbackInfo& info, size_t i) {
  return info.Length() <= i || info[i].IsNull() || info[i].IsUndefined();
}

template <typename T> napi_typedarray_type kind();
template <> napi_typedarray_type kind<float>() { return napi_float32_array; }
template <> napi_typedarray_type kind<double>() { return napi_float64_array; }
template <> napi_typedarray_type kind<uint16_t>() { return napi_uint16_array; }
template <> napi_typedarray_type kind<int32_t>() { return napi_int32_array; }
template <typename T> const char* kind_name();
template <> const char* kind_name<float>() { return "Float32Array"; }
template <> const char* kind_name<double>() { return "Float64Array"; }
template <> const char* kind_name<uint16_t>() { return "Uint16Array"; }
template <> const char* kind_name<int32_t>() { return "Int32Array"; }

struct View {
  void* data;
  int64_t length;
};

// A typed array of element type T holding at least `need` elements; nullable arrays give null.
template <typename T>
T* Arr(const CallbackInfo& info, size_t i, int64_t need, const char* name, bool nullable = false,
       int64_t* length = nullptr) {
  if (nullable && Nullish(info, i)) {
    if (length) *length = 0;
    return nullptr;
  }
  if (!info[i].IsTypedArray()) fail(info.Env(), std::string(name) + " must be a " + kind_name<T>());
  auto ta = info[i].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != kind<T>())
    fail(info.Env(), std::string(name) + " must be a " + kind_name<T>());
  auto arr = info[i].As<Napi::TypedArrayOf<T>>();
  const int64_t len = static_cast<int64_t>(arr.ElementLength());
  if (len < need)
    fail(info.Env(), std::string(name) + " has " + std::to_string(len) + " elements, needs " +
                         std::to_string(need));
  if (length) *length = len;
  return arr.Data();  // includes byteOffset
}

// Elements a row-major rows×cols block with row stride ld spans.
int64_t span(int64_t rows, int64_t cols, int64_t ld) {
  return rows <= 0 || cols <= 0 ? 0 : (rows - 1) * ld + cols;
}

// ---- gemm ------------------------------------------------------------------------------------
template <typename BT>
void gemm_common(const CallbackInfo& info) {
  // (transA, transB, M, N, K, A, lda, B, ldb, C, ldc, accumulate)
  const bool ta = B(info, 0), tb = B(info, 1);
  const int64_t M = Dim(info, 2, "M"), N = Dim(info, 3, "N"), K = Dim(info, 4, "K");
  const int64_t lda = Dim(info, 6, "lda"), ldb = Dim(info, 8, "ldb"), ldc = Dim(info, 10, "ldc");
  if (lda < (ta ? M : K) || ldb < (tb ? K : N) || ldc < N)
    fail(info.Env(), "gemm: a leading dimension is smaller than the row it strides");
  const float* A = Arr<float>(info, 5, ta ? span(K, M, lda) : span(M, K, lda), "A");
  const BT* Bp = Arr<BT>(info, 7, tb ? span(N, K, ldb) : span(K, N, ldb), "B");
  float* C = Arr<float>(info, 9, span(M, N, ldc), "C");
  const bool acc = B(info, 11);
  if constexpr (sizeof(BT) == 4)
    tnl::sgemm(ta, tb, M, N, K, A, lda, Bp, ldb, C, ldc, acc);
  else
    tnl::gemm_bf16(ta, tb, M, N, K, A, lda, Bp, ldb, C, ldc, acc);
}
Value Sgemm(const CallbackInfo& info) {
  gemm_common<float>(info);
  return info.Env().Undefined();
}
Value GemmBf16(const CallbackInfo& info) {
  gemm_common<uint16_t>(info);
  return info.Env().Undefined();
}
Value GemmIsa(const CallbackInfo& info) { return Napi::String::New(info.Env(), tnl::gemm_isa()); }

// ---- thread pool -----------------------------------------------------------------------------
Value NumThreads(const CallbackInfo& info) {
  return Napi::Number::New(info.Env(), tnl::num_threads());
}
Value SetNumThreads(const CallbackInfo& info) {
  int64_t n = I(info, 0, "n");
  if (n < 0 || n > 256) fail(info.Env(), "setNumThreads: n must be in [0, 256]");
  tnl::set_num_threads(static_cast<int>(n));
  return Napi::Number::New(info.Env(), tnl::num_threads());
}
// benchDispatch(iters, workNs = 0) → [mean ns per parallel_for call, fraction of chunks run by
// workers]. Each of num_threads chunks busy-waits workNs, so with a perfect pool a call takes
// workNs plus the dispatch overhead (and 2·workNs if the caller ends up doing both chunks).
Value BenchDispatch(const CallbackInfo& info) {
  const int64_t iters = std::max<int64_t>(1, I(info, 0, "iters"));
  const double work_ns = info.Length() > 1 && info[1].IsNumber() ? D(info, 1, "workNs") : 0.0;
  const int64_t n = std::max(2, tnl::num_threads());
  const auto main_id = std::this_thread::get_id();
  std::atomic<int64_t> by_workers{0};
  auto body = [&](int64_t b, int64_t e) {
    if (std::this_thread::get_id() != main_id) by_workers.fetch_add(e - b, std::memory_order_relaxed);
    if (work_ns > 0) {
      auto t0 = std::chrono::steady_clock::now();
      while (std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() < work_ns) {
      }
    }
  };
  for (int i = 0; i < 100; i++) tnl::parallel_for(n, body, 1);
  by_workers.store(0);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; i++) tnl::parallel_for(n, body, 1);
  auto t1 = std::chrono::steady_clock::now();
  auto r = Napi::Array::New(info.Env(), 2);
  r.Set(0u, Napi::Number::New(info.Env(), std::chrono::duration<double, std::nano>(t1 - t0).count() / iters));
  r.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(by_workers.load()) / (static_cast<double>(iters) * n)));
  return r;
}

// ---- kernels.h -------------------------------------------------------------------------------
void check_ids(const CallbackInfo& info, const int32_t* ids, int64_t T, int64_t V, const char* op) {
  for (int64_t t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= V)
      fail(info.Env(), std::string(op) + ": token id " + std::to_string(ids[t]) +
                           " outside the vocabulary [0, " + std::to_string(V) + ")");
}

template <typename TT>
Value EmbeddingT(const CallbackInfo& info) {
  // (out, table, ids, T, D, scale)
  const int64_t T = Dim(info, 3, "T"), Dd = Dim(info, 4, "D");
  float* out = Arr<float>(info, 0, T * Dd, "out");
  int64_t tlen = 0;
  const TT* table = Arr<TT>(info, 1, 0, "table", false, &tlen);
  const int32_t* ids = Arr<int32_t>(info, 2, T, "ids");
  if (Dd > 0) check_ids(info, ids, T, tlen / Dd, "embedding");
  const float scale = static_cast<float>(D(info, 5, "scale"));
  if constexpr (sizeof(TT) == 4) tnl::embedding_f32(out, table, ids, T, Dd, scale);
  else tnl::embedding_bf16(out, table, ids, T, Dd, scale);
  return info.Env().Undefined();
}
Value EmbeddingBackward(const CallbackInfo& info) {
  // (dtable, dout, ids, T, D, scale, paddingIdx)
  const int64_t T = Dim(info, 3, "T"), Dd = Dim(info, 4, "D");
  int64_t tlen = 0;
  float* dtable = Arr<float>(info, 0, 0, "dtable", false, &tlen);
  const float* dout = Arr<float>(info, 1, T * Dd, "dout");
  const int32_t* ids = Arr<int32_t>(info, 2, T, "ids");
  const int64_t pad = I(info, 6, "paddingIdx");
  if (Dd > 0) {
    const int64_t V = tlen / Dd;
    for (int64_t t = 0; t < T; t++)
      if (ids[t] != pad && (ids[t] < 0 || ids[t] >= V))
        fail(info.Env(), "embeddingBackward: token id " + std::to_string(ids[t]) +
                             " outside the vocabulary [0, " + std::to_string(V) + ")");
  }
  tnl::embedding_backward(dtable, dout, ids, T, Dd, static_cast<float>(D(info, 5, "scale")),
                          static_cast<int32_t>(pad));
  return info.Env().Undefined();
}
Value Srmsnorm(const CallbackInfo& info) {
  // (y, rstd, x, rows, D, eps)
  const int64_t R = Dim(info, 3, "rows"), Dd = Dim(info, 4, "D");
  tnl::srmsnorm(Arr<float>(info, 0, R * Dd, "y"), Arr<float>(info, 1, R, "rstd"),
                Arr<float>(info, 2, R * Dd, "x"), R, Dd, static_cast<float>(D(info, 5, "eps")));
  return info.Env().Undefined();
}
Value SrmsnormBackward(const CallbackInfo& info) {
  // (dx, dy, y, rstd, rows, D, accumulate)
  const int64_t R = Dim(info, 4, "rows"), Dd = Dim(info, 5, "D");
  tnl::srmsnorm_backward(Arr<float>(info, 0, R * Dd, "dx"), Arr<float>(info, 1, R * Dd, "dy"),
                         Arr<float>(info, 2, R * Dd, "y"), Arr<float>(info, 3, R, "rstd"), R, Dd,
                         B(info, 6));
  return info.Env().Undefined();
}
Value GlaQkv(const CallbackInfo& info) {
  // (q, k, v, qkvu, T, heads, dh, theta|null, positions|null, vmask|null)
  const int64_t T = Dim(info, 4, "T"), nh = Dim(info, 5, "heads"), dh = Dim(info, 6, "dh");
  const int64_t H = nh * dh;
  const float* theta = Arr<float>(info, 7, H, "theta", true);
  const int64_t dk = theta ? 2 * dh : dh;
  const int32_t* pos = Arr<int32_t>(info, 8, T, "positions", true);
  if (theta && !pos) fail(info.Env(), "glaQKV: theta needs positions");
  tnl::gla_qkv(Arr<float>(info, 0, T * nh * dk, "q"), Arr<float>(info, 1, T * nh * dk, "k"),
               Arr<float>(info, 2, T * H, "v"), Arr<float>(info, 3, T * 4 * H, "qkvu"), T, nh, dh,
               theta, pos, Arr<int32_t>(info, 9, T, "vmask", true));
  return info.Env().Undefined();
}
Value GlaQkvBackward(const CallbackInfo& info) {
  // (dqkvu, dtheta|null, dq, dk, dv, qkvu, T, heads, dh, theta|null, positions|null, vmask|null)
  const int64_t T = Dim(info, 6, "T"), nh = Dim(info, 7, "heads"), dh = Dim(info, 8, "dh");
  const int64_t H = nh * dh;
  const float* theta = Arr<float>(info, 9, H, "theta", true);
  const int64_t dk = theta ? 2 * dh : dh;
  const int32_t* pos = Arr<int32_t>(info, 10, T, "positions", true);
  if (theta && !pos) fail(info.Env(), "glaQKVBackward: theta needs positions");
  float* dtheta = Arr<float>(info, 1, H, "dtheta", true);
  tnl::gla_qkv_backward(Arr<float>(info, 0, T * 4 * H, "dqkvu"), dtheta,
                        Arr<float>(info, 2, T * nh * dk, "dq"), Arr<float>(info, 3, T * nh * dk, "dk"),
                        Arr<float>(info, 4, T * H, "dv"), Arr<float>(info, 5, T * 4 * H, "qkvu"), T,
                        nh, dh, theta, pos, Arr<int32_t>(info, 11, T, "vmask", true));
  return info.Env().Undefined();
}
Value NormGate(const CallbackInfo& info) {
  // (a, rstd, o, qkvu, T, H, eps)
  const int64_t T = Dim(info, 4, "T"), H = Dim(info, 5, "H");
  tnl::norm_gate(Arr<float>(info, 0, T * H, "a"), Arr<float>(info, 1, T, "rstd"),
                 Arr<float>(info, 2, T * H, "o"), Arr<float>(info, 3, T * 4 * H, "qkvu"), T, H,
                 static_cast<float>(D(info, 6, "eps")));
  return info.Env().Undefined();
}
Value NormGateBackward(const CallbackInfo& info) {
  // (dO, dqkvu, dA, o, rstd, qkvu, T, H)
  const int64_t T = Dim(info, 6, "T"), H = Dim(info, 7, "H");
  tnl::norm_gate_backward(Arr<float>(info, 0, T * H, "dO"), Arr<float>(info, 1, T * 4 * H, "dqkvu"),
                          Arr<float>(info, 2, T * H, "dA"), Arr<float>(info, 3, T * H, "o"),
                          Arr<float>(info, 4, T, "rstd"), Arr<float>(info, 5, T * 4 * H, "qkvu"), T, H);
  return info.Env().Undefined();
}
Value SgluGate(const CallbackInfo& info) {
  // (m, h, T, G)
  const int64_t T = Dim(info, 2, "T"), G = Dim(info, 3, "G");
  tnl::sglu_gate(Arr<float>(info, 0, T * G, "m"), Arr<float>(info, 1, T * 2 * G, "h"), T, G);
  return info.Env().Undefined();
}
Value SgluGateBackward(const CallbackInfo& info) {
  // (dh, dm, h, T, G)
  const int64_t T = Dim(info, 3, "T"), G = Dim(info, 4, "G");
  tnl::sglu_gate_backward(Arr<float>(info, 0, T * 2 * G, "dh"), Arr<float>(info, 1, T * G, "dm"),
                          Arr<float>(info, 2, T * 2 * G, "h"), T, G);
  return info.Env().Undefined();
}
Value CrossEntropy(const CallbackInfo& info) {
  // (dlogits|null, logits, targets, T, V, gradScale) → [loss, count]
  const int64_t T = Dim(info, 3, "T"), V = Dim(info, 4, "V");
  float* dl = Arr<float>(info, 0, T * V, "dlogits", true);
  const float* logits = Arr<float>(info, 1, T * V, "logits");
  const int32_t* tg = Arr<int32_t>(info, 2, T, "targets");
  for (int64_t t = 0; t < T; t++)
    if (tg[t] != -100 && (tg[t] < 0 || tg[t] >= V))
      fail(info.Env(), "crossEntropy: target " + std::to_string(tg[t]) + " outside [0, " +
                           std::to_string(V) + ")");
  int64_t count = 0;
  const double loss =
      tnl::cross_entropy(dl, logits, tg, T, V, static_cast<float>(D(info, 5, "gradScale")), &count);
  auto r = Napi::Array::New(info.Env(), 2);
  r.Set(0u, Napi::Number::New(info.Env(), loss));
  r.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(count)));
  return r;
}
Value Adamw(const CallbackInfo& info) {
  // (p, g, m, v, n, lr, beta1, beta2, eps, weightDecay, step, gradScale)
  const int64_t n = Dim(info, 4, "n");
  tnl::adamw(Arr<float>(info, 0, n, "param"), Arr<float>(info, 1, n, "grad"),
             Arr<float>(info, 2, n, "m"), Arr<float>(info, 3, n, "v"), n,
             static_cast<float>(D(info, 5, "lr")), static_cast<float>(D(info, 6, "beta1")),
             static_cast<float>(D(info, 7, "beta2")), static_cast<float>(D(info, 8, "eps")),
             static_cast<float>(D(info, 9, "weightDecay")), I(info, 10, "step"),
             static_cast<float>(D(info, 11, "gradScale")));
  return info.Env().Undefined();
}
Value SumSquaresF32(const CallbackInfo& info) {
  const int64_t n = Dim(info, 1, "n");
  return Napi::Number::New(info.Env(), tnl::sum_squares_f32(Arr<float>(info, 0, n, "x"), n));
}
Value SumSquaresBf16(const CallbackInfo& info) {
  const int64_t n = Dim(info, 1, "n");
  return Napi::Number::New(info.Env(), tnl::sum_squares_bf16(Arr<uint16_t>(info, 0, n, "x"), n));
}
Value AddInplace(const CallbackInfo& info) {
  const int64_t n = Dim(info, 2, "n");
  tnl::add_inplace(Arr<float>(info, 0, n, "y"), Arr<float>(info, 1, n, "x"), n);
  return info.Env().Undefined();
}
Value ScaleInplace(const CallbackInfo& info) {
  const int64_t n = Dim(info, 1, "n");
  tnl::scale_inplace(Arr<float>(info, 0, n, "x"), n, static_cast<float>(D(info, 2, "s")));
  return info.Env().Undefined();
}

// ---- attention.h -----------------------------------------------------------------------------
Value LightningForward(const CallbackInfo& info) {
  // (o, q, k, v, decay, state|null, slots|null, B, N, nh, dk, dv, block)
  const int64_t Bn = Dim(info, 7, "B"), N = Dim(info, 8, "N"), nh = Dim(info, 9, "nh");
  const int64_t dk = Dim(info, 10, "dk"), dv = Dim(info, 11, "dv"), block = I(info, 12, "block");
  if (block < 1) fail(info.Env(), "lightningForward: block size must be ≥ 1");
  const int64_t tq = Bn * N * nh * dk, tv = Bn * N * nh * dv;
  int64_t slen = 0;
  float* state = Arr<float>(info, 5, 0, "state", true, &slen);
  const int32_t* slots = Arr<int32_t>(info, 6, Bn, "slots", true);
  if (state) {
    const int64_t per = nh * dk * dv;
    const int64_t S = per ? slen / per : 0;
    if (slots) {
      for (int64_t b = 0; b < Bn; b++)
        if (slots[b] < 0 || slots[b] >= S)
          fail(info.Env(), "lightningForward: slot " + std::to_string(slots[b]) +
                               " outside the state pool [0, " + std::to_string(S) + ")");
    } else if (S < Bn) {
      fail(info.Env(), "lightningForward: state holds " + std::to_string(S) + " rows, needs " +
                           std::to_string(Bn));
    }
  }
  tnl::lightning_forward(Arr<float>(info, 0, tv, "o"), Arr<float>(info, 1, tq, "q"),
                         Arr<float>(info, 2, tq, "k"), Arr<float>(info, 3, tv, "v"),
                         Arr<double>(info, 4, nh, "decay"), state, slots, Bn, N, nh, dk, dv, block);
  return info.Env().Undefined();
}
Value LightningBackward(const CallbackInfo& info) {
  // (dq, dk, dv, dO, q, k, v, decay, B, N, nh, dk, dv, block)
  const int64_t Bn = Dim(info, 8, "B"), N = Dim(info, 9, "N"), nh = Dim(info, 10, "nh");
  const int64_t dk = Dim(info, 11, "dk"), dv = Dim(info, 12, "dv"), block = I(info, 13, "block");
  if (block < 1) fail(info.Env(), "lightningBackward: block size must be ≥ 1");
  const int64_t tq = Bn * N * nh * dk, tv = Bn * N * nh * dv;
  tnl::lightning_backward(Arr<float>(info, 0, tq, "dq"), Arr<float>(info, 1, tq, "dk"),
                          Arr<float>(info, 2, tv, "dv"), Arr<float>(info, 3, tv, "dO"),
                          Arr<float>(info, 4, tq, "q"), Arr<float>(info, 5, tq, "k"),
                          Arr<float>(info, 6, tv, "v"), Arr<double>(info, 7, nh, "decay"), Bn, N, nh,
                          dk, dv, block);
  return info.Env().Undefined();
}

// ---- OpenBLAS, loaded at run time for benchmarks ---------------------------------------------
using cblas_sgemm_t = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                               int, float, float*, int);
cblas_sgemm_t g_cblas_sgemm = nullptr;
void (*g_ob_set_threads)(int) = nullptr;
char* (*g_ob_corename)() = nullptr;

// openblasLoad(path?) → core name, or throws with dlerror().
Value OpenblasLoad(const CallbackInfo& info) {
  if (!g_cblas_sgemm) {
    std::string path = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value()
                                                                : "libopenblas.so.0";
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) fail(info.Env(), std::string("cannot load ") + path + ": " + dlerror());
    auto f = reinterpret_cast<cblas_sgemm_t>(dlsym(h, "cblas_sgemm"));
    if (!f) fail(info.Env(), path + " has no cblas_sgemm");
    g_cblas_sgemm = f;
    g_ob_set_threads = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"));
    g_ob_corename = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_corename"));
  }
  return Napi::String::New(info.Env(), g_ob_corename ? g_ob_corename() : "unknown");
}
Value OpenblasSetThreads(const CallbackInfo& info) {
  if (g_ob_set_threads) g_ob_set_threads(static_cast<int>(I(info, 0, "n")));
  return info.Env().Undefined();
}
Value OpenblasSgemm(const CallbackInfo& info) {
  if (!g_cblas_sgemm) fail(info.Env(), "OpenBLAS is not loaded (call openblasLoad first)");
  const bool ta = B(info, 0), tb = B(info, 1);
  const int64_t M = Dim(info, 2, "M"), N = Dim(info, 3, "N"), K = Dim(info, 4, "K");
  const int64_t lda = Dim(info, 6, "lda"), ldb = Dim(info, 8, "ldb"), ldc = Dim(info, 10, "ldc");
  const float* A = Arr<float>(info, 5, ta ? span(K, M, lda) : span(M, K, lda), "A");
  const float* Bp = Arr<float>(info, 7, tb ? span(N, K, ldb) : span(K, N, ldb), "B");
  float* C = Arr<float>(info, 9, span(M, N, ldc), "C");
  g_cblas_sgemm(101 /*RowMajor*/, ta ? 112 : 111, tb ? 112 : 111, static_cast<int>(M),
                static_cast<int>(N), static_cast<int>(K), 1.0f, A, static_cast<int>(lda), Bp,
                static_cast<int>(ldb), B(info, 11) ? 1.0f : 0.0f, C, static_cast<int>(ldc));
  return info.Env().Undefined();
}

Napi::Object Init(Env env, Napi::Object exports) {
  auto fn = [&](const char* name, Value (*f)(const CallbackInfo&)) {
    exports.Set(name, Napi::Function::New(env, f, name));
  };
  fn("sgemm", Sgemm);
  fn("gemmBf16", GemmBf16);
  fn("gemmIsa", GemmIsa);
  fn("numThreads", NumThreads);
  fn("setNumThreads", SetNumThreads);
  fn("benchDispatch", BenchDispatch);
  fn("embeddingF32", EmbeddingT<float>);
  fn("embeddingBf16", EmbeddingT<uint16_t>);
  fn("embeddingBackward", EmbeddingBackward);
  fn("srmsnorm", Srmsnorm);
  fn("srmsnormBackward", SrmsnormBackward);
  fn("glaQkv", GlaQkv);
  fn("glaQkvBackward", GlaQkvBackward);
  fn("normGate", NormGate);
  fn("normGateBackward", NormGateBackward);
  fn("sgluGate", SgluGate);
  fn("sgluGateBackward", SgluGateBackward);
  fn("crossEntropy", CrossEntropy);
  fn("adamw", Adamw);
  fn("sumSquaresF32", SumSquaresF32);
  fn("sumSquaresBf16", SumSquaresBf16);
  fn("addInplace", AddInplace);
  fn("scaleInplace", ScaleInplace);
  fn("lightningForward", LightningForward);
  fn("lightningBackward", LightningBackward);
  fn("openblasLoad", OpenblasLoad);
  fn("openblasSetThreads", OpenblasSetThreads);
  fn("openblasSgemm", OpenblasSgemm);
  return exports;
}

}  // namespace

NODE_API_MODULE(tnl_cpu, Init)
