#!/bin/sh
# cuda_v32_gpu.sh: one device call for the CUDA backend's FP8 indexer and the DeepSeek-V3.2-width benchmark:
# build engine + kernels only (-Ddata=false; json-c/PCRE2/OpenBLAS from .deps, see tools/cuda_deps.sh), run
# test_cuda_forward and test_cuda_ops (small mode), then bench_cuda_forward --v32 at the given contexts
# (default 32768 131072) with what is left of SD_CALL_SECONDS (default 285) after the build and tests.
# Logs go to $OUT (or ./cuda-logs); the tables are printed last.
# Usage (repository root, NVIDIA GPU machine, .deps carried): sh tools/cuda_v32_gpu.sh [CTX ...]
#        sh tools/cuda_v32_gpu.sh --bf16-only [CTX ...]   (default CTX 32768) build, test_cuda_forward (it checks
#        the bf16-weight mode too), then only bench_cuda_forward --v32 --bf16: DSA + FP8 indexer with f32 vs bf16
#        weights at CTX (test_cuda_ops and the other attention modes are skipped; the bench part takes ~20-30 s).
set -u
start=$(date +%s)
bf16_only=0
if [ "${1:-}" = "--bf16-only" ]; then
    bf16_only=1
    shift
    if [ $# -eq 0 ]; then set -- 32768; fi
fi
OUT=${OUT:-cuda-logs}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used,memory.total --format=csv,noheader \
    > "$OUT/gpu.txt" 2>&1
echo "cpus: $(nproc)" >> "$OUT/gpu.txt"
B=build-gpu
t0=$(date +%s)
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > "$OUT/build.log" 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops kernels/bench_cuda_forward >> "$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; exit 1; }
echo "== build ok ($(($(date +%s) - t0)) s)"
export SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
t0=$(date +%s)
timeout 90 $B/tests/test_cuda_forward > "$OUT/test_cuda_forward.log" 2>&1
echo "test_cuda_forward rc=$? ($(($(date +%s) - t0)) s)" | tee -a "$OUT/test_cuda_forward.log"
if [ $bf16_only -eq 0 ]; then
    t0=$(date +%s)
    SD_CUDA_TEST_SMALL=1 timeout 60 $B/tests/test_cuda_ops > "$OUT/test_cuda_ops.log" 2>&1
    echo "test_cuda_ops rc=$? ($(($(date +%s) - t0)) s)" | tee -a "$OUT/test_cuda_ops.log"
    grep -E "FAIL|CHECK|not bit|differs" "$OUT/test_cuda_ops.log" | head -10
    grep -v '^  ' "$OUT/test_cuda_ops.log" | tail -5
fi
if [ $# -eq 0 ]; then set -- 32768 131072; fi
t0=$(date +%s)
left=$((${SD_CALL_SECONDS:-285} - (t0 - start))) # the benchmark gets what is left of the call
mode=""
[ $bf16_only -eq 1 ] && mode=--bf16
timeout $left $B/kernels/bench_cuda_forward --v32 $mode "$@" > "$OUT/bench_v32.log" 2> "$OUT/bench_v32.err"
echo "bench --v32 rc=$? ($(($(date +%s) - t0)) s)"
tail -5 "$OUT/bench_v32.err"
cat "$OUT/gpu.txt"
grep -E "rel_l2|greedy|FAIL|CHECK|fp8|bf16" "$OUT/test_cuda_forward.log" | tail -40
cat "$OUT/bench_v32.log"
