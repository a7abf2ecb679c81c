#!/bin/sh
# cuda_fp8w_gpu.sh: one device call for the FP8 device weights (gpu_weights_fp8; kernels/gemv_fp8.cu): build
# engine + kernels + CLI (-Ddata=false), test_cuda_ops (its fp8w group first, then all), test_cuda_forward (the
# FP8 weight modes against the CPU), compute-sanitizer memcheck and racecheck of the fp8w group and memcheck of
# CLI runs that take both FP8 paths (GEMV for <= 4 tokens, dequantize-then-GEMM for longer chunks), then the
# weight-mode table at DeepSeek-V3.2 width (bench_cuda_forward --v32 --bf16) and the sparsedoc-mini benchmark.
# Usage (repository root, GPU machine, carry .deps): rm -rf build-gpu; sh tools/cuda_fp8w_gpu.sh
set -u
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
export PATH=/usr/local/cuda/bin:$PATH SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
B=build-gpu
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > /tmp/build.log 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops app/sparsedoc kernels/bench_cuda_forward >> /tmp/build.log 2>&1 ||
    { tail -30 /tmp/build.log; exit 1; }
echo "== build ok"
SD_CUDA_TEST_ONLY=fp8w timeout 60 $B/tests/test_cuda_ops 2>&1 | tail -4
timeout 90 $B/tests/test_cuda_ops > /tmp/ops.log 2>&1; echo "test_cuda_ops (all) rc=$?: $(tail -1 /tmp/ops.log)"
timeout 120 $B/tests/test_cuda_forward > /tmp/fwd.log 2>&1; echo "test_cuda_forward rc=$?"
grep -E "CHECK|fp8 weights|fp8 \+ bf16|fp8-weights|passed" /tmp/fwd.log | tail -9
for tool in memcheck racecheck; do
  SD_CUDA_TEST_SMALL=1 SD_CUDA_TEST_ONLY=fp8w timeout 120 compute-sanitizer --tool $tool --error-exitcode 3 \
    $B/tests/test_cuda_ops > /tmp/san.log 2>&1
  echo "$tool fp8w: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/san.log)"
done
F=tests/fixtures/dsv32_fp8
for w in fp8 fp8-f32; do
  for batch in 3 64; do
    compute-sanitizer --tool memcheck --error-exitcode 3 $B/app/sparsedoc logits --model $F --ids $F/ids.txt \
      --out /tmp/l.f32 --backend cuda --gpu-weights $w --batch $batch > /tmp/memcheck.log 2>&1
    echo "memcheck logits --gpu-weights $w --batch $batch: rc=$? $(grep 'ERROR SUMMARY' /tmp/memcheck.log)"
  done
done
timeout 200 $B/kernels/bench_cuda_forward --v32 --bf16 32768 131072 2>&1 | tail -10
timeout 100 $B/kernels/bench_cuda_forward data/models/sparsedoc-mini 4096 65536 2>&1 | tail -5
