#!/bin/bash
# THE one device call for issue #10: on the GPU machine, builds this tree with gainrag's own CUDA
# kernels on (plain CMake against the machine's pip torch), checks the kernels against the CPU
# fp32 path, times SelectTile against at::topk, then measures gainrag's kernels and torch
# matmul+topk (bench/gpu/torch_topk.py: the method of reference_baselines.py) at N = 1M and 8M x
# 768 fp16, Q = 4096, k = 100 and 1000, in this same call. Writes $OUT/kernels.jsonl (every
# record), $OUT/kernels.md (summary) and build logs. ~5-6 min; every step has its own timeout so
# a hang still leaves the earlier results.
#
# From the project root here (the tool that runs device commands copies the tree):
#   run  command: bash bench/gpu/kernels.sh     timeout_s: 560
#        carry:   ["node_modules/node-addon-api", "node_modules/node-api-headers"]
# (CMake's configure step needs the Node-API headers even though only the engine is built.)
# Then copy $OUT/kernels.md and kernels.jsonl to bench/results/gpu-kernels-<gpu>.{md,jsonl}.
set -u
OUT=${OUT:-/tmp/gpu-kernels}
mkdir -p "$OUT"
R=$OUT/kernels.jsonl
: > "$R"
start=$(date +%s)
since() { echo "$(( $(date +%s) - start ))s"; }
export PATH=$PATH:/usr/local/cuda/bin
TORCH_PREFIX=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export CMAKE_PREFIX_PATH="$TORCH_PREFIX" LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)

# 1. build (engine + the bench program only; sm_90 only, to keep the build short)
gen=(); command -v ninja > /dev/null && gen=(-G Ninja)
timeout 150 cmake -S . -B build-gpu-kernels "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGAINRAG_CUDA=ON -DGAINRAG_CUDA_KERNELS=ON \
  -DGAINRAG_NATIVE_TESTS=OFF -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/configure.log" 2>&1 ||
  { echo "configure failed after $(since)"; tail -30 "$OUT/configure.log"; exit 1; }
echo "configured in $(since)"
timeout 300 cmake --build build-gpu-kernels -j16 --target gainrag_kernel_bench > "$OUT/build.log" 2>&1
rc=$?
build="rc=$rc in $(since) (configure + build of gainrag_native and gainrag_kernel_bench, sm_90)"
echo "build $build"
printf '{"section":"meta","date":"%s","gpu":"%s x%s","build":"%s"}\n' "$(date -u +%F)" "$gpu" "$ngpu" "$build" >> "$R"
if [ $rc -ne 0 ]; then grep -E "error|FAILED" -A3 "$OUT/build.log" | head -60; exit 1; fi
BENCH="build-gpu-kernels/Release/gainrag_kernel_bench"

# 2. correctness against the CPU fp32 path (resident, streamed, sharded, every dtype, ties)
timeout 120 "$BENCH" check 2>&1 | tee -a "$R"; echo "check rc=${PIPESTATUS[0]} at $(since)"
# 3. the selection kernel alone vs at::topk on the same tile
timeout 60 "$BENCH" select 2>&1 | tee -a "$R"; echo "select rc=${PIPESTATUS[0]} at $(since)"
# 4. speed, torch first (its process frees the GPU when it exits), then gainrag
timeout 150 python3 bench/gpu/torch_topk.py "$OUT/torch.jsonl" 1000000,8000000 100,1000 > /dev/null 2> "$OUT/torch.log"
echo "torch rc=$? at $(since)"; cat "$OUT/torch.jsonl" >> "$R" 2>/dev/null
for n in 1000000 8000000; do
  for k in 100 1000; do
    timeout 60 "$BENCH" speed $n $k 2>&1 | tee -a "$R"
  done
done
echo "speed done at $(since)"
python3 bench/gpu/summarize.py "$R" > "$OUT/kernels.md"
cat "$OUT/kernels.md"
