#!/bin/sh
# cuda_kvfp8_gpu.sh: one device call for kv_fp8 (DeepSeek's FP8 MLA latent cache: kernels/kv_fp8.cu, and mla_attn.cu
# dequantizing FP8 rows as it loads them): build engine + kernels (-Ddata=false); the op test's kvfp8 group (the
# store bit for bit against engine/dsa.c, the bf16 expansion, attention over FP8 rows bit for bit against the same
# attention over their f32 values) and its memcheck and racecheck (small cases); test_cuda_forward's kv_fp8 check
# (CUDA vs CPU logits on sparsedoc-mini, KV blobs) and its memcheck; the op test's mla_attn group and the whole
# test_cuda_forward (regressions); the DeepSeek-V3.2-width table (bench_cuda_forward --v32 --kv); and, with EVAL set,
# sparsedoc-mini's held-out eval in DSA mode with kv_fp8 (eval_mini --backend cuda --kv-fp8) per bucket, plus EVAL64.
# Usage (repository root, GPU machine, carry .deps and .train/gpu):
#   EVAL=.train/gpu/mini_eval.jsonl EVAL64=.train/gpu/mini_eval_64k.jsonl sh tools/cuda_kvfp8_gpu.sh
# SD_V32_CTX (default "32768 131072"): the table's contexts; SD_SKIP_BENCH=1 stops after the tests; LIMIT (540 s)
# bounds the eval; BASELINE=1 repeats the eval without kv_fp8.
set -u
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
export PATH=/usr/local/cuda/bin:$PATH SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
B=build-gpu
O=/tmp/kvfp8_logs # logs; all of them end up in $OUT/logs.tar.gz
mkdir -p $O
trap '[ -n "${OUT:-}" ] && tar czf "$OUT/logs.tar.gz" -C $O .' EXIT
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > $O/build.log 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops kernels/bench_cuda_forward tools/eval_mini \
    >> $O/build.log 2>&1 || { tail -30 $O/build.log; exit 1; }
echo "== build ok at $(el) s"
SD_CUDA_TEST_ONLY=kvfp8 timeout 120 $B/tests/test_cuda_ops > $O/ops_kvfp8.log 2>&1
echo "test_cuda_ops kvfp8 rc=$?"; grep -E "kv_fp8|CHECK|passed|failed" $O/ops_kvfp8.log | tail -12
for tool in memcheck racecheck; do
    SD_CUDA_TEST_ONLY=kvfp8 SD_CUDA_TEST_SMALL=1 timeout 150 compute-sanitizer --tool $tool --error-exitcode 3 \
        $B/tests/test_cuda_ops > $O/${tool}_ops.log 2>&1
    echo "$tool kvfp8 rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $O/${tool}_ops.log)"
done
SD_CUDA_FWD_ONLY=kvfp8 timeout 120 $B/tests/test_cuda_forward > $O/fwd_kvfp8.log 2>&1
echo "test_cuda_forward kvfp8 rc=$?"; grep -E "kv_fp8|CHECK|passed|failed" $O/fwd_kvfp8.log | tail -6
SD_CUDA_FWD_ONLY=kvfp8 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $B/tests/test_cuda_forward \
    > $O/memcheck_fwd.log 2>&1
echo "memcheck kvfp8 forward rc=$? $(grep 'ERROR SUMMARY' $O/memcheck_fwd.log)"
SD_CUDA_TEST_ONLY=mla_attn timeout 120 $B/tests/test_cuda_ops > $O/ops_mla.log 2>&1
echo "test_cuda_ops mla_attn rc=$?: $(grep -E 'mla attn f32 vs' $O/ops_mla.log) $(tail -1 $O/ops_mla.log)"
timeout 180 $B/tests/test_cuda_forward > $O/fwd.log 2>&1
echo "test_cuda_forward rc=$? at $(el) s: $(tail -1 $O/fwd.log)"; grep -E "CHECK|fp8_act|kv_fp8" $O/fwd.log | head -8
if [ "${SD_SKIP_BENCH:-0}" != 1 ]; then
    timeout 240 $B/kernels/bench_cuda_forward --v32 --kv ${SD_V32_CTX:-32768 131072} > $O/v32.log 2>&1
    echo "v32 --kv rc=$? at $(el) s"; grep "^|" $O/v32.log
fi
[ -n "${EVAL:-}" ] || exit 0
M=data/models/sparsedoc-mini
for kv in --kv-fp8 ${BASELINE:+none}; do # BASELINE=1: the same runs without kv_fp8 after them
    f=$kv; [ "$kv" = none ] && f=
    if [ -n "${EVAL64:-}" ]; then
        timeout $((${LIMIT:-540} - $(el))) $B/tools/eval_mini --model $M --eval "$EVAL64" --modes sparse \
            --buckets 65536 --backend cuda --threads 8 $f > $O/eval64$kv.txt 2>&1
        echo "== 64K sample $kv rc=$? at $(el) s"; grep "^| [0-9]" $O/eval64$kv.txt
    fi
    for b in ${BUCKETS:-4096 16384 32768 65536}; do
        left=$((${LIMIT:-540} - $(el)))
        [ $left -gt 20 ] || { echo "skip $b (no time)"; continue; }
        timeout $left $B/tools/eval_mini --model $M --eval "$EVAL" --modes sparse --buckets $b --backend cuda \
            --threads 8 $f > $O/eval_$b$kv.txt 2>&1
        echo "== $b $kv rc=$? at $(el) s"; grep "^| [0-9]" $O/eval_$b$kv.txt
    done
done
