#!/bin/sh
# cuda_sample_gpu.sh: one device call for sampling on the device (kernels/sample.cu, the backend's forward_sample):
# build engine + kernels (-Ddata=false); the op test's sample group (draw by draw against engine/sampler.c) and its
# memcheck and racecheck (small); test_cuda_forward's sampling check and then the whole of it (regressions); the
# DeepSeek-V3.2-width decode table with host and device sampling (bench_cuda_forward --v32 --sample).
# Usage (repository root, GPU machine, carry .deps): sh tools/cuda_sample_gpu.sh
# SD_V32_CTX (default "32768 131072"): the table's contexts; SD_SKIP_BENCH=1 stops after the tests.
set -u
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
export PATH=/usr/local/cuda/bin:$PATH SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
B=build-gpu
O=/tmp/sample_logs # logs; all of them end up in $OUT/logs.tar.gz
mkdir -p $O
trap '[ -n "${OUT:-}" ] && tar czf "$OUT/logs.tar.gz" -C $O .' EXIT
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > $O/build.log 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops kernels/bench_cuda_forward >> $O/build.log 2>&1 ||
    { tail -30 $O/build.log; exit 1; }
echo "== build ok at $(el) s"
SD_CUDA_TEST_ONLY=sample timeout 150 $B/tests/test_cuda_ops > $O/ops_sample.log 2>&1
echo "test_cuda_ops sample rc=$?"; grep -E "sample|CHECK|passed|failed" $O/ops_sample.log | tail -26
for tool in memcheck racecheck; do
    SD_CUDA_TEST_ONLY=sample SD_CUDA_TEST_SMALL=1 timeout 150 compute-sanitizer --tool $tool --error-exitcode 3 \
        $B/tests/test_cuda_ops > $O/${tool}_ops.log 2>&1
    echo "$tool sample rc=$? at $(el) s: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $O/${tool}_ops.log)"
done
SD_CUDA_FWD_ONLY=sample timeout 120 $B/tests/test_cuda_forward > $O/fwd_sample.log 2>&1
echo "test_cuda_forward sample rc=$?"; grep -E "sampl|CHECK|passed|failed" $O/fwd_sample.log | tail -8
timeout 200 $B/tests/test_cuda_forward > $O/fwd.log 2>&1
echo "test_cuda_forward rc=$? at $(el) s: $(tail -1 $O/fwd.log)"; grep -E "CHECK" $O/fwd.log | head -8
[ "${SD_SKIP_BENCH:-0}" = 1 ] && exit 0
timeout 200 $B/kernels/bench_cuda_forward --v32 --sample ${SD_V32_CTX:-32768 131072} > $O/v32.log 2>&1
echo "v32 --sample rc=$? at $(el) s"; grep "^|" $O/v32.log
