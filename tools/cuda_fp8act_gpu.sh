#!/bin/sh
# cuda_fp8act_gpu.sh: one device call for fp8_act (DeepSeek's W8A8 numerics; FP8 x FP8 GEMMs through cuBLASLt's
# block-scaled modes, kernels/gemm_fp8.cu): build engine + kernels (-Ddata=false), the op test's fp8gemm group (which
# scale orders cuBLASLt reads as the library writes them, activation quantization bit for bit, GEMMs against
# float64), test_cuda_forward's fp8_act check, compute-sanitizer memcheck of both, the whole test_cuda_forward, then
# the weight-mode table at DeepSeek-V3.2 width (bench_cuda_forward --v32 --bf16, rows "fp8 + fp8 act") and the
# top-k rows of bench_dsa_cuda. If the library's scale orders do not match but exactly one other does, the rest of
# the run uses that one (SD_CUDA_FP8_SCALE_ORDER) and says so.
# Usage (repository root, GPU machine, carry .deps): rm -rf build-gpu; sh tools/cuda_fp8act_gpu.sh
# SD_V32_CTX (default 32768): the table's contexts; SD_SKIP_BENCH=1 stops after the tests.
set -u
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
export PATH=/usr/local/cuda/bin:$PATH SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
B=build-gpu
O=${OUT:-/tmp}
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > $O/build.log 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops kernels/bench_cuda_forward kernels/bench_dsa_cuda \
    >> $O/build.log 2>&1 || { tail -30 $O/build.log; exit 1; }
echo "== build ok at $(el) s"
SD_CUDA_TEST_ONLY=fp8gemm timeout 120 $B/tests/test_cuda_ops > $O/ops_fp8gemm.log 2>&1
echo "test_cuda_ops fp8gemm rc=$?"; grep -E "gemm fp8|fp8 gemm|fp8 act|CHECK|passed|failed" $O/ops_fp8gemm.log | tail -24
M=$(grep -c "MATCH" $O/ops_fp8gemm.log)
if [ "$M" = 1 ] && grep -q "combinations match" $O/ops_fp8gemm.log; then
    A=$(grep MATCH $O/ops_fp8gemm.log | sed 's/.*act \([0-9]\) w \([0-9]\).*/\1,\2/')
    export SD_CUDA_FP8_SCALE_ORDER=$A
    echo "== using SD_CUDA_FP8_SCALE_ORDER=$A for the rest of the run"
    SD_CUDA_TEST_ONLY=fp8gemm timeout 120 $B/tests/test_cuda_ops > $O/ops_fp8gemm2.log 2>&1
    echo "test_cuda_ops fp8gemm (order $A) rc=$?: $(tail -1 $O/ops_fp8gemm2.log)"
fi
SD_CUDA_FWD_ONLY=fp8act timeout 120 $B/tests/test_cuda_forward > $O/fwd_fp8act.log 2>&1
echo "test_cuda_forward fp8act rc=$?"; grep -E "fp8_act|CHECK|passed|failed" $O/fwd_fp8act.log | tail -6
SD_CUDA_TEST_ONLY=fp8gemm SD_CUDA_TEST_SMALL=1 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 \
    $B/tests/test_cuda_ops > $O/memcheck_ops.log 2>&1
echo "memcheck fp8gemm rc=$? $(grep 'ERROR SUMMARY' $O/memcheck_ops.log)"
SD_CUDA_FWD_ONLY=fp8act timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $B/tests/test_cuda_forward \
    > $O/memcheck_fwd.log 2>&1
echo "memcheck fp8act forward rc=$? $(grep 'ERROR SUMMARY' $O/memcheck_fwd.log)"
timeout 150 $B/tests/test_cuda_forward > $O/fwd.log 2>&1
echo "test_cuda_forward rc=$? at $(el) s: $(tail -1 $O/fwd.log)"; grep -E "CHECK" $O/fwd.log | head -5
[ "${SD_SKIP_BENCH:-0}" = 1 ] && exit 0 # tests only
timeout 200 $B/kernels/bench_cuda_forward --v32 --bf16 ${SD_V32_CTX:-32768} > $O/v32.log 2>&1; echo "v32 rc=$? at $(el) s"
grep "^|" $O/v32.log
timeout 120 $B/kernels/bench_dsa_cuda --quick > $O/dsa.log 2>&1; echo "bench_dsa_cuda rc=$? at $(el) s"
grep -iE "^\| *topk|top-k" $O/dsa.log | head -12
