#!/bin/sh
# cuda_forward_gpu.sh: one device call for the CUDA forward pass (kernels/forward.cu): build engine + kernels +
# CLI (-Ddata=false; json-c/PCRE2/OpenBLAS from .deps when the machine lacks them), run test_cuda_forward and
# test_cuda_ops, compare the CLI on CPU and CUDA, memcheck one CUDA CLI run, benchmark CPU vs CUDA
# (tools/bench_cuda_forward.c) and one DeepSeek-V3.2 layer DSA vs dense (--layer), and print the tables last. Logs go to $OUT (or ./cuda-logs).
# Usage (repository root, NVIDIA GPU machine): sh tools/cuda_forward_gpu.sh [CTX ...]
set -u
OUT=${OUT:-cuda-logs}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader > "$OUT/gpu.txt" 2>&1
echo "cpus: $(nproc)" >> "$OUT/gpu.txt"
B=build-gpu
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > "$OUT/build.log" 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops app/sparsedoc kernels/bench_cuda_forward >> "$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; exit 1; }
grep -i "openblas\|json-c" "$OUT/build.log" | head -3
echo "== build ok"
export SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
timeout 300 $B/tests/test_cuda_forward > "$OUT/test_cuda_forward.log" 2>&1; echo "test_cuda_forward rc=$?" >> "$OUT/test_cuda_forward.log"
cat "$OUT/test_cuda_forward.log"
SD_CUDA_TEST_SMALL=${SD_CUDA_TEST_SMALL:-1} timeout 200 $B/tests/test_cuda_ops > "$OUT/test_cuda_ops.log" 2>&1
echo "test_cuda_ops rc=$?" >> "$OUT/test_cuda_ops.log"
grep -v '^  ' "$OUT/test_cuda_ops.log" | tail -4
S=$B/app/sparsedoc
st=tests/fixtures/stories260K
$S generate --model $st --prompt "" -n 200 --temp 0 --backend cpu > "$OUT/gen_cpu.txt" 2>&1
$S generate --model $st --prompt "" -n 200 --temp 0 --backend cuda --stats > "$OUT/gen_cuda.txt" 2>"$OUT/gen_cuda.err"
echo "cli generate stories260K rc=$? cpu==cuda: $(cmp -s "$OUT/gen_cpu.txt" "$OUT/gen_cuda.txt" && echo yes || echo NO)"
mini=data/models/sparsedoc-mini
$S generate --model $mini --prompt "The store keeps" -n 64 --temp 0 --backend cpu > "$OUT/mini_cpu.txt" 2>&1
$S generate --model $mini --prompt "The store keeps" -n 64 --temp 0 --backend cuda --stats > "$OUT/mini_cuda.txt" 2>"$OUT/mini_cuda.err"
echo "cli generate sparsedoc-mini rc=$? cpu==cuda: $(cmp -s "$OUT/mini_cpu.txt" "$OUT/mini_cuda.txt" && echo yes || echo NO)"
head -c 300 "$OUT/mini_cuda.txt"; echo
d=tests/fixtures/dsv32
$S logits --model $d --ids $d/ids.txt --out /tmp/l_cpu.f32 --backend cpu
$S logits --model $d --ids $d/ids.txt --out /tmp/l_cuda.f32 --backend cuda
python3 -c "
import numpy as np
a=np.fromfile('/tmp/l_cpu.f32',np.float32);b=np.fromfile('/tmp/l_cuda.f32',np.float32);r=np.fromfile('$d/logits.f32',np.float32)
print('cli logits dsv32: cuda vs cpu rel_l2 %.3g, cuda vs HF %.3g' % (np.linalg.norm(a-b)/np.linalg.norm(a), np.linalg.norm(b-r)/np.linalg.norm(r)))"
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
timeout 120 "$SAN" --tool memcheck --error-exitcode 3 $S logits --model $d --ids $d/ids.txt --out /tmp/l_san.f32 \
    --backend cuda > "$OUT/memcheck.log" 2>&1; echo "memcheck (cli logits dsv32 cuda) rc=$?"; tail -2 "$OUT/memcheck.log"

if [ $# -eq 0 ]; then set -- 4096 16384 65536; fi
timeout 300 $B/kernels/bench_cuda_forward $mini "$@" > "$OUT/bench.log" 2>"$OUT/bench.err"; echo "bench rc=$?"
TMPDIR=${TMPDIR:-/tmp} timeout 150 $B/kernels/bench_cuda_forward --layer > "$OUT/bench_layer.log" 2>"$OUT/bench_layer.err"
echo "layer bench rc=$?"; tail -3 "$OUT/bench_layer.err"
cat "$OUT/gpu.txt"
grep -E "rel_l2|greedy|FAIL|CHECK" "$OUT/test_cuda_forward.log" | tail -30
cat "$OUT/bench.log"
cat "$OUT/bench_layer.log"
