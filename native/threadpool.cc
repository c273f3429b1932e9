// A persistent thread pool: nthreads−1 workers plus the calling thread. A job is published by
// bumping a generation counter; workers spin on it for a short while (decode dispatches thousands
// of jobs per second, and a futex wake costs tens of µs), then sleep on a condition variable.
// Chunks are claimed from an atomic counter, so a late worker's share is taken by whoever is free.
#include "threadpool.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#else
static inline void cpu_relax() {}
#endif

namespace tnl {
namespace {

using Fn = std::function<void(int64_t, int64_t)>;

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned h = std::thread::hardware_concurrency();
  return h ? static_cast<int>(h) : 1;
}

int env_threads() {
  const char* s = std::getenv("TNL_THREADS");
  if (!s || !*s) return 0;
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (end == s || v < 1) return 0;
  return static_cast<int>(std::min<long>(v, 256));
}

// How long an idle worker spins before it sleeps (µs); TNL_SPIN_US overrides.
int64_t spin_us() {
  const char* s = std::getenv("TNL_SPIN_US");
  if (s && *s) {
    long v = std::strtol(s, nullptr, 10);
    if (v >= 0) return v;
  }
  return 200;
}

thread_local bool t_in_task = false;

class Pool {
 public:
  explicit Pool(int n) : nthreads_(std::max(1, std::min(n, 1024))), spin_us_(spin_us()) {
    for (int i = 1; i < nthreads_; i++) workers_.emplace_back([this] { worker_loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true);
      job_.store(static_cast<uint64_t>(++gen_) << 32);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return nthreads_; }

  // Runs fn over `chunks` ranges of [0, n); the caller holds run_mu_.
  void run(int64_t n, int64_t chunks, const Fn& fn) {
    fn_ = &fn;
    n_ = n;
    done_.store(0, std::memory_order_relaxed);
    uint32_t g = ++gen_;
    // The job word: generation (32 bits) | chunk count (16) | next chunk to claim (16). Everything a
    // worker decides comes from this one word, so a worker that wakes late never touches a newer
    // job's fields: a claim of chunk c < count keeps the job (and fn_, n_) alive until it is done.
    job_.store((static_cast<uint64_t>(g) << 32) | (static_cast<uint64_t>(chunks) << 16),
               std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_.notify_all();
    }
    t_in_task = true;
    work(g);
    t_in_task = false;
    while (done_.load(std::memory_order_acquire) < chunks) cpu_relax();
  }

  std::mutex run_mu_;

 private:
  void work(uint32_t g) {
    uint64_t cur = job_.load(std::memory_order_acquire);
    for (;;) {
      if (static_cast<uint32_t>(cur >> 32) != g) return;
      uint64_t count = (cur >> 16) & 0xffff, idx = cur & 0xffff;
      if (idx >= count) return;
      if (!job_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
        continue;
      int64_t c = static_cast<int64_t>(idx), k = static_cast<int64_t>(count);
      int64_t b = n_ * c / k, e = n_ * (c + 1) / k;
      (*fn_)(b, e);
      done_.fetch_add(1, std::memory_order_release);
      cur = job_.load(std::memory_order_acquire);
    }
  }

  void worker_loop() {
    t_in_task = true;
    // Generation 0 is the pool's start: never read the live word here, or a pool destroyed before
    // this thread first runs would leave it waiting for a generation that already came.
    uint32_t seen = 0;
    for (;;) {
      uint32_t g = static_cast<uint32_t>(job_.load(std::memory_order_acquire) >> 32);
      if (g == seen) {  // spin for a while, then sleep
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0;; i++) {
          cpu_relax();
          g = static_cast<uint32_t>(job_.load(std::memory_order_acquire) >> 32);
          if (g != seen) break;
          if ((i & 63) == 63 &&
              std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(spin_us_))
            break;
        }
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        while ((g = static_cast<uint32_t>(job_.load(std::memory_order_seq_cst) >> 32)) == seen &&
               !stop_.load())
          cv_.wait(lk);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = g;
      if (stop_.load()) return;
      work(g);
    }
  }

  const int nthreads_;
  const int64_t spin_us_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> job_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  uint32_t gen_ = 0;  // written by the caller only
  const Fn* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> done_{0};
};

std::mutex g_mu;          // guards g_pool creation/replacement
Pool* g_pool = nullptr;   // leaked at exit on purpose (workers may outlive static destructors)
int g_requested = 0;

Pool* pool() {
  Pool* p = __atomic_load_n(&g_pool, __ATOMIC_ACQUIRE);
  if (p) return p;
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_pool) {
    int n = g_requested > 0 ? g_requested : (env_threads() > 0 ? env_threads() : available_cores());
    __atomic_store_n(&g_pool, new Pool(n), __ATOMIC_RELEASE);
  }
  return g_pool;
}

}  // namespace

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (t_in_task || n < 2 * grain) {
    fn(0, n);
    return;
  }
  Pool* p = pool();
  // Up to 4 ranges per thread, handed out dynamically: a thread that another process slows down
  // (this machine is shared) leaves its remaining ranges to the others.
  int64_t chunks = std::min<int64_t>(int64_t(p->size()) * 4, n / grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  // Another thread (a second JS thread, say) is using the pool: run inline rather than wait.
  std::unique_lock<std::mutex> lk(p->run_mu_, std::try_to_lock);
  if (!lk.owns_lock()) {
    bool saved = t_in_task;
    t_in_task = true;
    fn(0, n);
    t_in_task = saved;
    return;
  }
  p->run(n, chunks, fn);
}

int num_threads() { return pool()->size(); }

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lk(g_mu);
  int want = n > 0 ? n : (env_threads() > 0 ? env_threads() : available_cores());
  g_requested = n > 0 ? n : 0;
  if (g_pool && g_pool->size() == want) return;
  // Not to be called while another thread is inside parallel_for.
  Pool* old = g_pool;
  if (old) {
    old->run_mu_.lock();  // wait for a running job
    __atomic_store_n(&g_pool, static_cast<Pool*>(nullptr), __ATOMIC_RELEASE);
    old->run_mu_.unlock();
  }
  delete old;
  __atomic_store_n(&g_pool, new Pool(want), __ATOMIC_RELEASE);
}

}  // namespace tnl
