#!/usr/bin/env bash
# Builds bench/gpu/index_check.cpp with the engine's index sources against the Python torch
# (CUDA) and runs it. Usage (repository root, CUDA machine): bash bench/gpu/run.sh
set -euo pipefail
TORCH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ABI=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
OUTDIR=${OUT:-/tmp}/gpu-build
mkdir -p "$OUTDIR"
FLAGS="-O2 -std=c++17 -DGAINRAG_WITH_CUDA=1 -D_GLIBCXX_USE_CXX11_ABI=$ABI -Inative -I$TORCH/include -I$TORCH/include/torch/csrc/api/include"
SRCS="native/index/dense_index.cpp native/index/index_files.cpp native/index/topk_cpu.cpp native/core/error.cpp native/core/json.cpp native/core/tensor_util.cpp native/io/mapped_file.cpp native/io/safetensors.cpp bench/gpu/index_check.cpp"
echo "$SRCS" | tr ' ' '\n' | xargs -P 16 -I{} sh -c 'g++ '"$FLAGS"' -c {} -o '"$OUTDIR"'/$(echo {} | tr / _).o'
g++ -o "$OUTDIR/index_check" "$OUTDIR"/*.o -L"$TORCH/lib" -Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed \
  -ltorch -ltorch_cpu -lc10 -Wl,-rpath,"$TORCH/lib"
"$OUTDIR/index_check"
rm -rf "$OUTDIR"
