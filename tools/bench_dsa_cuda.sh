#!/bin/sh
# bench_dsa_cuda.sh: one device call for the CUDA backend: build (engine core + kernels/ only), run the
# op test, rerun it under compute-sanitizer (memcheck, racecheck, synccheck) on small shapes, run the benchmark, time
# torch.topk on the same shapes and PyTorch SDPA dense attention (tools/cuda_torch_baselines.py), and print
# the tables last. Logs go to $OUT (or ./cuda-logs).
# Usage (repository root, on a machine with an NVIDIA GPU): sh tools/bench_dsa_cuda.sh [--quick]
set -u
OUT=${OUT:-cuda-logs}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
( [ -d build-gpu ] || meson setup build-gpu -Ddata=false -Dcuda=enabled ) > "$OUT/build.log" 2>&1
ninja -C build-gpu kernels/bench_dsa_cuda tests/test_cuda_ops >> "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build ok"
timeout 240 build-gpu/tests/test_cuda_ops > "$OUT/test.log" 2>&1; echo "test_cuda_ops rc=$?" >> "$OUT/test.log"
grep -v '^  ' "$OUT/test.log" | tail -30
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
SD_CUDA_TEST_SMALL=1 timeout 240 "$SAN" --tool memcheck --error-exitcode 3 build-gpu/tests/test_cuda_ops \
    > "$OUT/sanitizer.log" 2>&1; echo "memcheck rc=$?" >> "$OUT/sanitizer.log"
tail -4 "$OUT/sanitizer.log"
for tool in racecheck synccheck; do
    SD_CUDA_TEST_SMALL=1 timeout 150 "$SAN" --tool $tool --error-exitcode 3 build-gpu/tests/test_cuda_ops \
        > "$OUT/$tool.log" 2>&1; echo "$tool rc=$?" >> "$OUT/$tool.log"
    tail -2 "$OUT/$tool.log"
done
timeout 300 build-gpu/kernels/bench_dsa_cuda "$@" > "$OUT/bench.log" 2>&1; echo "bench rc=$?" >> "$OUT/bench.log"
PYTHONUNBUFFERED=1 timeout 240 python3 tools/cuda_torch_baselines.py > "$OUT/torch.log" 2>&1
cat "$OUT/bench.log" | sed -n '/^| kernel/,$p'
cat "$OUT/torch.log"
