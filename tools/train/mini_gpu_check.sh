#!/bin/sh
# mini_gpu_check.sh: one device call that checks the shipped sparsedoc-mini (data/models/sparsedoc-mini) and the
# CUDA backend of the final tree: build engine + kernels + eval_mini + CLI, run test_cuda_forward and test_cuda_ops,
# compare our engine's logits (CPU and CUDA) with PyTorch's (tools/train/ref_logits.py, dense and sparse), run the
# held-out eval in dense mode on the GPU (the DSA column comes from longctx_gpu.sh; indexer recall is measured on
# the CPU with eval_mini --recall, MODEL.md).
# Logs go to $OUT; the summary is printed last.
# Usage (repository root, GPU machine, carry .deps and .train/gpu): sh tools/train/mini_gpu_check.sh
# (DENSE_BUCKETS= : no dense eval, and then .train/gpu need not be carried).
set -u
OUT=${OUT:-$PWD/mini-check}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1 SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
B=build-gpu
M=data/models/sparsedoc-mini
EV=.train/gpu/mini_eval.jsonl
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > "$OUT/build.log" 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops app/sparsedoc tools/eval_mini >> "$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; exit 1; }
echo "== build ok at $(el) s"
timeout 120 $B/tests/test_cuda_forward > "$OUT/test_cuda_forward.log" 2>&1
echo "test_cuda_forward rc=$?"; grep -ciE "fail" "$OUT/test_cuda_forward.log"
grep -E "CHECK|fp8 weights|fp8 \+ bf16|fp8-weights|sparsedoc-mini|passed" "$OUT/test_cuda_forward.log" | tail -14
SD_CUDA_TEST_SMALL=1 timeout 90 $B/tests/test_cuda_ops > "$OUT/test_cuda_ops.log" 2>&1
echo "test_cuda_ops rc=$?"
# Engine vs PyTorch on the shipped weights, 4096 ids of real text, last 300 rows.
S=$B/app/sparsedoc
for mode in dense sparse; do
  python3 tools/train/ref_logits.py --model $M --text docs/PERFORMANCE.md --n 4096 --rows 300 --mode $mode \
    --ids-out "$OUT/ids.txt" --out "$OUT/ref_$mode.f32" > "$OUT/ref_$mode.log" 2>&1
  for be in cpu cuda; do
    $S logits --model $M --ids "$OUT/ids.txt" --out "$OUT/eng.f32" --attention $mode --backend $be --threads 16 \
      > /dev/null 2>> "$OUT/logits.err"
    echo "engine $be vs PyTorch, $mode: $(python3 tools/train/compare_logits.py "$OUT/eng.f32" "$OUT/ref_$mode.f32" \
      $(wc -w < "$OUT/ids.txt") 8192 2>&1 | tail -1)"
  done
done
rm -f "$OUT"/*.f32
echo "== logits at $(el) s"
for b in ${DENSE_BUCKETS-4096 16384 32768 65536}; do # DENSE_BUCKETS= skips the dense eval
  timeout 150 $B/tools/eval_mini --model $M --eval $EV --modes dense --buckets $b --backend cuda --threads 8 \
    --out "$OUT/dense_$b.json" > "$OUT/dense_$b.txt" 2>&1
  echo "dense $b rc=$? at $(el) s: $(grep '^| [0-9]' "$OUT/dense_$b.txt")"
done
(cd "$OUT" && tar czf logs.tar.gz --exclude=logs.tar.gz *.txt *.log *.json 2>/dev/null; rm -f *.txt *.log *.json)
echo "done at $(el) s"
