// Timings of the native attention and row kernels on the benchmark model's shapes.
// Build and run: native/test/run.sh --bench [attention|decode|kernels]
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../attention.h"
#include "../gemm.h"
#include "../kernels.h"
#include "../threadpool.h"

using std::vector;
using Clock = std::chrono::steady_clock;

static vector<float> randv(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Minimum of `reps` timings (ms) of fn, after one warm-up.
// BENCH_CPU=1: the calling thread's CPU time instead of wall time (for single-thread tuning on a
// shared machine, where time slices taken by other processes inflate wall time).
static double now_ms() {
  static const bool cpu = std::getenv("BENCH_CPU") != nullptr;
  if (cpu) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
  }
  return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
}
template <typename F>
static double time_ms(F&& fn, int reps) {
  fn();
  vector<double> t;
  for (int i = 0; i < reps; i++) {
    const double t0 = now_ms();
    fn();
    t.push_back(now_ms() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[0];  // the minimum: the machine is shared, noise only adds
}

// The anchor: the layer's forward GEMMs on the benchmark model (T = 1024, D = H = 512, G = 1408):
// qkvu 512→2048, out 512→512, l1|l2 512→2816, l3 1408→512 (y = x Wᵀ), ≈ 7 GFLOP.
static double layer_gemm_ms() {
  const int64_t T = 1024;
  const int64_t shapes[4][2] = {{2048, 512}, {512, 512}, {2816, 512}, {512, 1408}};  // out, in
  vector<vector<float>> xs, ws, ys;
  for (auto& s : shapes) {
    xs.push_back(randv(T * s[1], 21));
    ws.push_back(randv(s[0] * s[1], 22));
    ys.push_back(vector<float>(T * s[0]));
  }
  return time_ms([&] {
    for (int i = 0; i < 4; i++)
      tnl::sgemm(false, true, T, shapes[i][0], shapes[i][1], xs[i].data(), shapes[i][1], ws[i].data(),
                 shapes[i][1], ys[i].data(), shapes[i][0], false);
  }, 10);
}

static void bench_attention() {
  const int64_t B = 1, N = 1024, nh = 8, dv = 64;
  const double gemm = layer_gemm_ms();
  std::printf("layer forward GEMMs (1024 tokens, 7.0 GFLOP): %.2f ms = %.0f GFLOP/s (%s)\n", gemm,
              1024.0 * 512 * (2048 + 512 + 2816 + 1408) * 2 / (gemm * 1e-3) / 1e9, tnl::gemm_isa());
  vector<double> decay(nh);
  for (int h = 0; h < nh; h++) decay[h] = std::exp(-std::pow(2.0, -(8.0 * (h + 1)) / nh));
  for (int64_t dk : {128, 64}) {
    auto q = randv(B * N * nh * dk, 1), k = randv(B * N * nh * dk, 2), v = randv(B * N * nh * dv, 3);
    auto dO = randv(B * N * nh * dv, 4);
    vector<float> o(B * N * nh * dv), dq(q.size()), dkk(k.size()), dvv(v.size());
    for (int64_t block : {16, 32, 48, 64, 96, 128, 256}) {
      const double tf = time_ms([&] {
        tnl::lightning_forward(o.data(), q.data(), k.data(), v.data(), decay.data(), nullptr, nullptr,
                               B, N, nh, dk, dv, block);
      }, 60);
      const double tb = time_ms([&] {
        tnl::lightning_backward(dq.data(), dkk.data(), dvv.data(), dO.data(), q.data(), k.data(),
                                v.data(), decay.data(), B, N, nh, dk, dv, block);
      }, 60);
      std::printf("attention B=%lld N=%lld nh=%lld dk=%lld dv=%lld block=%3lld  forward %7.3f ms  backward %7.3f ms  (fwd+bwd = %.1f%% of 3x the layer's forward GEMMs)\n",
                  (long long)B, (long long)N, (long long)nh, (long long)dk, (long long)dv,
                  (long long)block, tf, tb, 100 * (tf + tb) / (3 * gemm));
    }
  }
}

// One decode step (N = 1) of one layer: S ← λS + kᵀv, o = qS for B sequences × 8 heads. "hot":
// the same state every call (it stays in cache); "cold": 24 layers' states in turn, as in a real
// decode step, so the states stream from memory.
static void bench_decode() {
  const int64_t nh = 8, dk = 128, dv = 64, L = 24;
  vector<double> decay(nh, 0.99);
  for (int64_t B : {1, 8, 32, 64}) {
    auto q = randv(B * nh * dk, 1), k = randv(B * nh * dk, 2), v = randv(B * nh * dv, 3);
    vector<vector<float>> st(L);
    for (auto& s : st) {
      s = randv(B * nh * dk * dv, 5);
      for (auto& x : s) x *= 1e-3f;
    }
    vector<float> o(B * nh * dv);
    const double hot = time_ms([&] {
      tnl::lightning_forward(o.data(), q.data(), k.data(), v.data(), decay.data(), st[0].data(), nullptr,
                             B, 1, nh, dk, dv, 64);
    }, 2001);
    const double cold = time_ms([&] {
      for (int64_t l = 0; l < L; l++)
        tnl::lightning_forward(o.data(), q.data(), k.data(), v.data(), decay.data(), st[l].data(), nullptr,
                               B, 1, nh, dk, dv, 64);
    }, 51) / L;
    const double bytes = 2.0 * B * nh * dk * dv * 4;
    std::printf("decode step B=%2lld nh=8 dk=128 dv=64: hot %8.2f us (%5.1f GB/s)  cold %8.2f us (%5.1f GB/s, state r+w)\n",
                (long long)B, hot * 1e3, bytes / (hot * 1e-3) / 1e9, cold * 1e3, bytes / (cold * 1e-3) / 1e9);
  }
}

// The row kernels at the benchmark model's sizes (T = 1024 tokens, D = H = 512, 8 heads of 64,
// G = 1408, V = 64000), with the bytes each moves at least and the rate that implies.
static void bench_kernels() {
  const int64_t T = 1024, D = 512, H = 512, heads = 8, dh = 64, G = 1408, V = 64000;
  auto x = randv(T * D, 1), y = randv(T * D, 2), dy = randv(T * D, 3), rs = randv(T, 4);
  auto qkvu = randv(T * 4 * H, 5), dq = randv(T * 2 * H, 6), dk = randv(T * 2 * H, 7), dv = randv(T * H, 8);
  vector<float> q(T * 2 * H), k(T * 2 * H), v(T * H), g(T * 4 * H), theta(H), dth(H);
  for (int64_t i = 0; i < H; i++) theta[i] = std::pow(10000.0, -2.0 * i / H);
  vector<int32_t> pos(T), ids(T), tg(T);
  for (int64_t t = 0; t < T; t++) { pos[t] = (int32_t)t; ids[t] = (int32_t)((t * 7919) % V); tg[t] = (int32_t)((t * 104729) % V); }
  auto h = randv(T * 2 * G, 9), dm = randv(T * G, 10);
  vector<float> m(T * G), dh2(T * 2 * G);
  auto logits = randv(T * V, 11);
  vector<float> dl(T * V);
  auto table = randv(V * D, 12);
  const int64_t NP = 16 << 20;
  auto P = randv(NP, 13), Gr = randv(NP, 14), M1 = randv(NP, 15), V1 = randv(NP, 16);
  for (auto& z : V1) z = std::fabs(z);
  struct Row { const char* name; double ms; double bytes; };
  vector<Row> rows;
  auto run = [&](const char* name, double bytes, auto&& fn) { rows.push_back({name, time_ms(fn, 20), bytes}); };
  run("embedding_f32 T=1024 D=512", 8.0 * T * D, [&] { tnl::embedding_f32(y.data(), table.data(), ids.data(), T, D, 22.6f); });
  run("srmsnorm 1024x512", 8.0 * T * D, [&] { tnl::srmsnorm(y.data(), rs.data(), x.data(), T, D, 1e-6f); });
  run("srmsnorm_backward 1024x512", 12.0 * T * D, [&] { tnl::srmsnorm_backward(x.data(), dy.data(), y.data(), rs.data(), T, D, true); });
  run("gla_qkv (no LRPE)", 4.0 * T * (3 * H + 3 * H), [&] { tnl::gla_qkv(q.data(), k.data(), v.data(), qkvu.data(), T, heads, dh, nullptr, nullptr, nullptr); });
  run("gla_qkv (LRPE)", 4.0 * T * (3 * H + 5 * H), [&] { tnl::gla_qkv(q.data(), k.data(), v.data(), qkvu.data(), T, heads, dh, theta.data(), pos.data(), nullptr); });
  run("gla_qkv_backward (no LRPE)", 4.0 * T * (2 * H + 3 * H + 3 * H + 3 * H), [&] { tnl::gla_qkv_backward(g.data(), nullptr, dq.data(), dk.data(), dv.data(), qkvu.data(), T, heads, dh, nullptr, nullptr, nullptr); });
  run("gla_qkv_backward (LRPE, dθ)", 4.0 * T * (2 * H + 5 * H + 3 * H + 3 * H), [&] { tnl::gla_qkv_backward(g.data(), dth.data(), dq.data(), dk.data(), dv.data(), qkvu.data(), T, heads, dh, theta.data(), pos.data(), nullptr); });
  run("norm_gate 1024x512", 4.0 * T * 3 * H, [&] { tnl::norm_gate(y.data(), rs.data(), x.data(), qkvu.data(), T, H, 1e-6f); });
  run("norm_gate_backward 1024x512", 4.0 * T * 5 * H, [&] { tnl::norm_gate_backward(y.data(), g.data(), dy.data(), x.data(), rs.data(), qkvu.data(), T, H); });
  run("sglu_gate 1024x1408", 4.0 * T * 3 * G, [&] { tnl::sglu_gate(m.data(), h.data(), T, G); });
  run("sglu_gate_backward 1024x1408", 4.0 * T * 5 * G, [&] { tnl::sglu_gate_backward(dh2.data(), dm.data(), h.data(), T, G); });
  int64_t cnt;
  run("cross_entropy 1024x64000 (+grad)", 8.0 * T * V, [&] { tnl::cross_entropy(dl.data(), logits.data(), tg.data(), T, V, 1.f, &cnt); });
  run("cross_entropy 1024x64000 (loss only)", 4.0 * T * V, [&] { tnl::cross_entropy(nullptr, logits.data(), tg.data(), T, V, 1.f, &cnt); });
  run("adamw 16M params", 28.0 * NP, [&] { tnl::adamw(P.data(), Gr.data(), M1.data(), V1.data(), NP, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 10, 1.f); });
  run("sum_squares_f32 16M", 4.0 * NP, [&] { tnl::sum_squares_f32(P.data(), NP); });
  run("add_inplace 16M", 12.0 * NP, [&] { tnl::add_inplace(P.data(), Gr.data(), NP); });
  for (auto& r : rows) std::printf("%-40s %9.3f ms  %6.1f GB/s\n", r.name, r.ms, r.bytes / (r.ms * 1e-3) / 1e9);
}

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "all";
  std::printf("threads: %d\n", tnl::num_threads());
  if (what == "all" || what == "attention") bench_attention();
  if (what == "all" || what == "decode") bench_decode();
  if (what == "all" || what == "kernels") bench_kernels();
  return 0;
}
