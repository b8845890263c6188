#!/usr/bin/env bash
# Memory-safety check of the engine without Node: builds native/ and test/native with
# AddressSanitizer + UndefinedBehaviorSanitizer (-DGAINRAG_SANITIZE=ON) in its own build
# directory and runs gainrag_native_test on the fixtures. No addon is built there: an ASan
# runtime cannot be loaded into an uninstrumented node. LibTorch itself is not instrumented,
# so only gainrag's own code is checked (LibTorch's allocations are still tracked: ASan
# intercepts malloc). Called by .ci/run; about 10 minutes from scratch on 2 cores, seconds
# when nothing changed (ccache).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${GAINRAG_ASAN_DIR:-build-asan}
jobs=${GAINRAG_BUILD_JOBS:-$(nproc)}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# -O1: sanitizer builds at -O0 make the parity checks slow; -O1 keeps stack traces usable.
# GAINRAG_FAISS=OFF: the native tests do not use FAISS (an uninstrumented static library), and
# this build then shows on every CI run that the engine compiles and links without it.
cmake -S . -B "$dir" "${generator[@]}" -DGAINRAG_SANITIZE=ON -DGAINRAG_FAISS=OFF -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" >/dev/null
cmake --build "$dir" --target gainrag_native_test -j "$jobs"
# halt_on_error: the first report fails the run. detect_leaks stays on (no suppressions needed).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:strict_string_checks=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
"$dir/Release/gainrag_native_test" test/fixtures
