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

static void bench_attention() {
  const int64_t B = 1, N = 1024, nh = 8, dv = 64;
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
      }, 40);
      const double tb = time_ms([&] {
        tnl::lightning_backward(dq.data(), dkk.data(), dvv.data(), dO.data(), q.data(), k.data(),
                                v.data(), decay.data(), B, N, nh, dk, dv, block);
      }, 40);
      std::printf("attention B=%lld N=%lld nh=%lld dk=%lld dv=%lld block=%3lld  forward %7.3f ms  backward %7.3f ms\n",
                  (long long)B, (long long)N, (long long)nh, (long long)dk, (long long)dv,
                  (long long)block, tf, tb);
    }
  }
}

static void bench_decode() {
  const int64_t nh = 8, dk = 128, dv = 64;
  vector<double> decay(nh, 0.99);
  for (int64_t B : {1, 8, 32, 64}) {
    auto q = randv(B * nh * dk, 1), k = randv(B * nh * dk, 2), v = randv(B * nh * dv, 3);
    auto st = randv(B * nh * dk * dv, 5);
    for (auto& x : st) x *= 1e-3f;
    vector<float> o(B * nh * dv);
    const int reps = 2001;
    const double t = time_ms([&] {
      tnl::lightning_forward(o.data(), q.data(), k.data(), v.data(), decay.data(), st.data(), nullptr,
                             B, 1, nh, dk, dv, 64);
    }, reps);
    const double bytes = 2.0 * B * nh * dk * dv * 4;
    std::printf("decode step B=%2lld nh=8 dk=128 dv=64: %8.2f us  (state r+w %.1f GB/s)\n",
                (long long)B, t * 1e3, bytes / (t * 1e-3) / 1e9);
  }
}

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "all";
  std::printf("threads: %d\n", tnl::num_threads());
  if (what == "all" || what == "attention") bench_attention();
  if (what == "all" || what == "decode") bench_decode();
  return 0;
}
