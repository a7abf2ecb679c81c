#!/bin/sh
# cuda_check_gpu.sh: one device call that checks and measures the whole CUDA backend within a time budget:
# build engine + kernels (-Ddata=false; json-c/PCRE2/OpenBLAS from .deps, see tools/cuda_deps.sh), then, in
# order of priority and each step cut to what is left of SD_CALL_SECONDS (default 570):
#   test_cuda_ops (every op vs the CPU / float64 references), test_cuda_forward (logits vs HF fixtures and
#   the CPU, greedy decodes, bf16 and FP8 weight modes), bench_cuda_forward --v32 --bf16 (the weight modes at
#   DeepSeek-V3.2 width), the sparsedoc-mini CPU-vs-CUDA forward, compute-sanitizer memcheck, synccheck and
#   racecheck, then bench_dsa_cuda (kernels; TFLOP/s vs the published anchors), PyTorch SDPA + torch.topk
#   baselines (same GPU, same call) and bench_cuda_forward --v32 (DSA vs dense).
# Logs go to $OUT (or ./cuda-logs); a summary is printed last.
# Usage (repository root, NVIDIA GPU machine, .deps carried): sh tools/cuda_check_gpu.sh
set -u
start=$(date +%s)
BUDGET=${SD_CALL_SECONDS:-570}
OUT=${OUT:-cuda-logs}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
export SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
B=build-gpu
SUM=$OUT/summary.txt
: > "$SUM"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
echo "cpus: $(nproc)" >> "$OUT/gpu.txt"
left() { echo $((BUDGET - ($(date +%s) - start))); }
# step NAME MAX_SECONDS CMD...: runs CMD with stdout+stderr to $OUT/NAME.log under min(MAX, time left - 5).
step() {
    name=$1 max=$2
    shift 2
    l=$(($(left) - 5))
    [ $l -lt $max ] && max=$l
    if [ $max -lt 10 ]; then
        echo "$name: skipped (no time left)" | tee -a "$SUM"
        return
    fi
    t0=$(date +%s)
    timeout "$max" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: rc=$rc ($(($(date +%s) - t0)) s, limit $max s)" | tee -a "$SUM"
}
t0=$(date +%s)
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > "$OUT/build.log" 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops kernels/bench_cuda_forward kernels/bench_dsa_cuda \
    >> "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: ok ($(($(date +%s) - t0)) s)" | tee -a "$SUM"
step test_cuda_ops 90 $B/tests/test_cuda_ops
step test_cuda_forward 180 $B/tests/test_cuda_forward
step bench_v32_bf16 150 $B/kernels/bench_cuda_forward --v32 --bf16 ${SD_V32_WEIGHT_CTX:-32768}
step bench_mini 90 $B/kernels/bench_cuda_forward data/models/sparsedoc-mini 4096 16384 65536
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck synccheck; do
    step $tool 150 env SD_CUDA_TEST_SMALL=1 "$SAN" --tool $tool --error-exitcode 3 $B/tests/test_cuda_ops
done
# racecheck is slow: the forward pass's attention kernel first, then every group with what time is left.
step racecheck_mla_attn 150 env SD_CUDA_TEST_SMALL=1 SD_CUDA_TEST_ONLY=mla_attn "$SAN" --tool racecheck \
    --error-exitcode 3 $B/tests/test_cuda_ops
step bench_dsa_cuda 100 $B/kernels/bench_dsa_cuda
step torch_baselines 90 python3 tools/cuda_torch_baselines.py
step bench_v32 150 $B/kernels/bench_cuda_forward --v32 32768 131072
step racecheck 150 env SD_CUDA_TEST_SMALL=1 "$SAN" --tool racecheck --error-exitcode 3 $B/tests/test_cuda_ops
echo "== $(cat "$OUT/gpu.txt" | tr '\n' ' ')"
echo "== test_cuda_ops"
grep -E "FAIL|CHECK|passed|failed|worst|vs float64|mla attn" "$OUT/test_cuda_ops.log" | grep -v '^  mla attn' | tail -8
echo "== test_cuda_forward"
grep -E "FAIL|CHECK|passed|failed|bf16|fp8" "$OUT/test_cuda_forward.log" | tail -24
for tool in memcheck synccheck racecheck_mla_attn racecheck; do
    echo "== $tool"
    tail -2 "$OUT/$tool.log" 2>/dev/null
done
echo "== bench_dsa_cuda"
sed -n '/^| kernel/,$p' "$OUT/bench_dsa_cuda.log"
grep -E "validation" "$OUT/bench_dsa_cuda.log"
echo "== torch baselines"
cat "$OUT/torch_baselines.log"
echo "== bench_v32"
grep -v '^#' "$OUT/bench_v32.log" | tail -14
echo "== bench_v32_bf16"
tail -10 "$OUT/bench_v32_bf16.log"
echo "== bench_mini"
tail -12 "$OUT/bench_mini.log"
echo "== summary"
cat "$SUM"
