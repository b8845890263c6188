// One OpenMP thread for the calling thread while a scope lives. omp_set_num_threads sets the
// calling thread's own team size, so other calls (other worker threads) keep theirs. The runtime
// is libgomp, the one LibTorch loads. The entry point is looked up at run time so that a build
// without OpenMP (CMakeLists.txt warns) still compiles; with no runtime in the process the
// scope does nothing.
#pragma once

#include <ATen/Parallel.h>
#include <dlfcn.h>

namespace gainrag {

class OneOmpThreadScope {
 public:
  explicit OneOmpThreadScope(bool on = true) : on_(on && Set()) {
    if (!on_) return;
    before_ = at::get_num_threads();  // after LibTorch's per-thread lazy init, which would override
    Set()(1);
  }
  ~OneOmpThreadScope() {
    if (on_) Set()(before_);
  }
  OneOmpThreadScope(const OneOmpThreadScope&) = delete;
  OneOmpThreadScope& operator=(const OneOmpThreadScope&) = delete;

 private:
  using SetFn = void (*)(int);
  static SetFn Set() {
    static SetFn f = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    return f;
  }
  bool on_;
  int before_ = 1;
};

}  // namespace gainrag
