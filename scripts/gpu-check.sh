#!/bin/bash
# GPU machine check (see ../shared/device/README.md): build this tree with plain CMake against
# the machine's pip torch (CUDA backend on), run the foundation tests there, then compare every
# CUDA path with the CPU path (bench/gpu-check.ts). Needs .device/ (prepare.sh), a pruned
# node_modules in .device/nm, fixtures in .device/shared, and dist/ (compiled TypeScript).
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
source .device/on-device.sh
export PATH=$PATH:/usr/local/cuda/bin
[ -e node_modules ] || ln -s .device/nm/node_modules node_modules
start=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
grep -E "gainrag:|CUDA" "$OUT/configure.log" | head -8
cmake --build build-gpu -j16 -- -k 0 > "$OUT/build.log" 2>&1
rc=$?
echo "build rc=$rc in $(( $(date +%s) - start ))s"
[ $rc -ne 0 ] && { grep -E "error|FAILED" -A3 "$OUT/build.log" | head -60; exit 1; }
export GAINRAG_ADDON=$PWD/build-gpu/Release/gainrag.node GAINRAG_SHARED=$PWD/.device/shared
node dist/lib/cli/main.js info --json | tee "$OUT/info.json"
timeout 90 node scripts/run-tests.js foundation > "$OUT/foundation.log" 2>&1; echo "foundation tests rc=$?"
grep -E "^# (pass|fail)" "$OUT/foundation.log"
timeout 200 node dist/bench/gpu-check.js .device/shared/fixtures 2>&1 | tee "$OUT/gpu-check.jsonl" | cut -c1-600
echo "total $(( $(date +%s) - start ))s"
