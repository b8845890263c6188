#!/bin/bash
# Compile check of gainrag's CUDA kernels on a machine without a GPU (issue #10), plus the CPU
# replay test of their selection logic. Steps:
#   1. native/cuda/test/select_host_test.cpp: the kernels' algorithm replayed on the CPU with the
#      same select_core.h functions, compared with a full sort (always; needs only g++).
#   2. native/cuda/test/emulated_search_test.cpp: kernel_search.cpp (tiles, streaming, shards,
#      rescoring, cache, errors) on a fake CUDA runtime with host kernels, vs brute force.
#   3. every native/cuda/*.cu through nvcc for sm_80 and sm_90 (when nvcc is found). Where the
#      toolkit has no cuBLAS headers, gemm_cublas.cu is checked against bench/gpu/stub/.
#   4. kernel_search.cpp, dense_index_cuda.cpp, dense_index.cpp and bench/gpu/kernel_bench.cpp
#      with the kernel path switched on (GAINRAG_WITH_CUDA_KERNELS), syntax only, against the LibTorch headers found
#      (Debian's /usr/include, or TORCH_INCLUDE=dir1:dir2) and the CUDA runtime headers.
# Usage: scripts/cuda-compile-check.sh [--host-only | --compile-only] (steps 1-2 | steps 3-4).
# Exit status 0 only if every step ran ok; a step whose tool is missing prints "skip".
set -u
cd "$(dirname "$0")/.." || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
step() { echo "$1"; }

CXX=${CXX:-g++}
mode=${1:-all}
if [ "$mode" = "--compile-only" ]; then :; elif $CXX -std=c++17 -O2 -Wall -Wextra -Wno-unused-parameter -Inative native/cuda/test/select_host_test.cpp -o "$tmp/select_host_test" &&
   "$tmp/select_host_test"; then
  step "ok   host replay of the selection kernels"
else
  step "FAIL host replay of the selection kernels"; fail=1
fi

# 2. the orchestration (kernel_search.cpp) end to end on a fake CUDA runtime with host kernels
torch_inc=(); torch_lib=()
if [ -n "${TORCH_INCLUDE:-}" ]; then
  IFS=: read -ra dirs <<< "$TORCH_INCLUDE"; for d in "${dirs[@]}"; do torch_inc+=(-I"$d"); done
fi
[ -n "${TORCH_LIB:-}" ] && torch_lib=(-L"$TORCH_LIB" "-Wl,-rpath,$TORCH_LIB")
have_torch=0
{ [ ${#torch_inc[@]} -gt 0 ] || [ -f /usr/include/ATen/ATen.h ]; } && have_torch=1
if [ "$mode" = "--compile-only" ]; then :; elif [ $have_torch = 1 ]; then
  if $CXX -std=c++17 -O2 -Wall -Wno-unused-parameter -DGAINRAG_WITH_CUDA_KERNELS=1 -Inative/cuda/test/fake_cuda -Inative \
       "${torch_inc[@]}" native/cuda/test/emulated_search_test.cpp native/cuda/kernel_search.cpp native/core/error.cpp \
       "${torch_lib[@]}" -ltorch_cpu -lc10 -o "$tmp/emulated_search_test" && "$tmp/emulated_search_test"; then
    step "ok   GPU search orchestration on an emulated CUDA runtime"
  else
    step "FAIL GPU search orchestration on an emulated CUDA runtime"; fail=1
  fi
else
  step "skip LibTorch headers not found (set TORCH_INCLUDE, TORCH_LIB)"
fi
[ "$mode" = "--host-only" ] && exit $fail

NVCC=${NVCC:-$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)}
if [ -z "$NVCC" ]; then
  step "skip nvcc not found"
else
  cuda_inc=$(dirname "$(dirname "$NVCC")")/include
  [ -f "$cuda_inc/cuda_runtime.h" ] || cuda_inc=/usr/local/cuda/include
  stub=()
  [ -f "$cuda_inc/cublas_v2.h" ] || stub=(-Ibench/gpu/stub)
  for cu in native/cuda/*.cu; do
    if "$NVCC" -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -Xcompiler -Wall \
         -Inative "${stub[@]}" -c "$cu" -o "$tmp/$(basename "$cu").o"; then
      label=""; [ ${#stub[@]} -gt 0 ] && grep -q cublas_v2 "$cu" && label=" (against the cuBLAS stub)"
      step "ok   nvcc sm_80+sm_90 $cu$label"
    else
      step "FAIL nvcc sm_80+sm_90 $cu"; fail=1
    fi
  done
  if [ $have_torch = 1 ]; then
    for src in native/cuda/kernel_search.cpp native/index/dense_index_cuda.cpp native/index/dense_index.cpp bench/gpu/kernel_bench.cpp; do
      if $CXX -std=c++17 -fsyntax-only -Wall -Wno-unused-parameter -DGAINRAG_WITH_CUDA=1 -DGAINRAG_WITH_CUDA_KERNELS=1 \
           -Inative "${torch_inc[@]}" -I"$cuda_inc" "$src"; then
        step "ok   host compile with the kernel path on: $src"
      else
        step "FAIL host compile with the kernel path on: $src"; fail=1
      fi
    done
  else
    step "skip LibTorch headers not found (set TORCH_INCLUDE)"
  fi
fi
exit $fail
