// A parallel-for for the decode step's many short parallel sections (dozens per token, each
// tens of microseconds). Through ATen's OpenMP pool every section woke a parked thread with a
// futex and put it back to sleep after: on the 2-core VM, 17% of an int8 decode step's samples
// were in the kernel's wake-up and context-switch paths (perf), and OMP_WAIT_POLICY=active (which
// spins forever, so it is no default) made int8 single-sequence decode 1.75x faster.
// Here helper threads spin between sections for a bounded time (kSpinMicroseconds) and only then
// park, so a decode loop never sleeps between its sections and an idle process burns at most
// that long after its last one.
#pragma once

#include <cstdint>
#include <functional>

namespace gainrag::cpu {

// Calls fn(begin, end) over contiguous ranges covering [0, n), one range per participating
// thread (the caller and up to at::get_num_threads() - 1 helpers), and returns when all are
// done. fn must not throw. Runs fn(0, n) on the caller when n is 1, when ATen is set to one
// thread, inside an ATen/OpenMP parallel region, or when another thread is using the helpers.
void SpinParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace gainrag::cpu
