// A persistent pool of worker threads (one per core by default, the calling thread included).
#pragma once
#include <cstdint>
#include <functional>

namespace tnl {
// Splits [0, n) into contiguous ranges of at least `grain` items and runs fn(begin, end) on the
// pool; returns when all are done. Called from inside a pool task it runs fn(0, n) inline.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);
int num_threads();
void set_num_threads(int n);  // 0 = one per available core (TNL_THREADS overrides)
}  // namespace tnl
