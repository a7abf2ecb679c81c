#!/bin/sh
# topk_check_gpu.sh: the split top-k's correctness checks (test_cuda_ops topk group: split vs one-block bit for bit,
# then memcheck and racecheck of that group on small shapes) and test_cuda_forward, built in build-gpu once another
# script's build there has finished (it waits for "build rc=" in $W/build.log, as tools/train/gpu_start.sh writes).
# Meant to run beside a long GPU job (tools/train/longctx_gpu.sh) in the same device call; light on the GPU.
# Usage (repository root, GPU machine, carry .deps): W=/tmp/longctx sh tools/topk_check_gpu.sh > checks.txt &
set -u
W=${W:-/tmp/longctx}
export PATH=/usr/local/cuda/bin:$PATH SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
for i in $(seq 1 300); do grep -q "build rc=" "$W/build.log" 2>/dev/null && break; sleep 2; done
nice ninja -C build-gpu tests/test_cuda_ops tests/test_cuda_forward > /tmp/topk_build.log 2>&1 ||
    { tail -20 /tmp/topk_build.log; exit 1; }
SD_CUDA_TEST_ONLY=topk timeout 120 build-gpu/tests/test_cuda_ops > /tmp/topk_ops.log 2>&1
echo "test_cuda_ops topk rc=$?: $(tail -1 /tmp/topk_ops.log)"
grep -i "split" /tmp/topk_ops.log | head -8
for tool in memcheck racecheck; do
    SD_CUDA_TEST_ONLY=topk SD_CUDA_TEST_SMALL=1 timeout 200 compute-sanitizer --tool $tool --error-exitcode 3 \
        build-gpu/tests/test_cuda_ops > /tmp/topk_$tool.log 2>&1
    echo "$tool topk rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/topk_$tool.log)"
done
timeout 200 build-gpu/tests/test_cuda_forward > /tmp/fwd.log 2>&1
echo "test_cuda_forward rc=$?: $(tail -1 /tmp/fwd.log)"
