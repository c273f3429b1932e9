// A serial stand-in for native/threadpool.cc, used by run.sh only when that file is absent.
#include "threadpool.h"
namespace tnl {
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t) {
  if (n > 0) fn(0, n);
}
int num_threads() { return 1; }
void set_num_threads(int) {}
}  // namespace tnl
