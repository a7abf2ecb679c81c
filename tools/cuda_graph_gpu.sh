#!/bin/sh
# cuda_graph_gpu.sh: one device call for CUDA graphs of decode steps (off with session param gpu_no_graph) and the tensor-core
# DSA kernels of the bf16 modes (the FP8 indexer's scores and prefill MLA attention; gpu_attn_exact turns them off):
# build engine + kernels + CLI (-Ddata=false), test_cuda_forward (graph vs direct launches bit for bit, tensor-core
# vs exact kernels, every earlier check), the op test's indexer and MLA groups (paged and flat key caches),
# compute-sanitizer memcheck of both new paths, then the weight-mode table at DeepSeek-V3.2 width
# (bench_cuda_forward --v32 --bf16: graphs on/off, tensor-core/exact DSA kernels) and the sparsedoc-mini benchmark
# (decode with and without graphs).
# Usage (repository root, GPU machine, carry .deps): rm -rf build-gpu; sh tools/cuda_graph_gpu.sh
# SD_V32_CTX (default 32768): contexts of the V3.2 table; SD_SKIP_MINI=1 leaves out the sparsedoc-mini benchmark.
set -u
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
export PATH=/usr/local/cuda/bin:$PATH SD_FIXTURES=$PWD/tests/fixtures SD_SOURCE=$PWD
B=build-gpu
O=${OUT:-/tmp}
( [ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false ) > $O/build.log 2>&1
ninja -C $B tests/test_cuda_forward tests/test_cuda_ops app/sparsedoc kernels/bench_cuda_forward >> $O/build.log 2>&1 ||
    { tail -30 $O/build.log; exit 1; }
echo "== build ok"
timeout 150 $B/tests/test_cuda_forward > $O/fwd.log 2>&1; echo "test_cuda_forward rc=$?"
grep -E "CHECK|graph vs|tensor-core|passed|failed" $O/fwd.log | tail -14
SD_CUDA_TEST_ONLY=indexer,mla_attn,mla_decode timeout 90 $B/tests/test_cuda_ops > $O/ops.log 2>&1
echo "test_cuda_ops indexer+mla rc=$?: $(grep -E 'indexer fp8|CHECK' $O/ops.log | tail -3) $(tail -1 $O/ops.log)"
for only in tc graph; do
  SD_CUDA_FWD_ONLY=$only timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $B/tests/test_cuda_forward \
    > $O/memcheck_$only.log 2>&1
  echo "memcheck test_cuda_forward ($only): rc=$? $(grep 'ERROR SUMMARY' $O/memcheck_$only.log)"
done
timeout 260 $B/kernels/bench_cuda_forward --v32 --bf16 ${SD_V32_CTX:-32768} > $O/v32.log 2>&1; echo "v32 rc=$?"
grep "^|" $O/v32.log
[ "${SD_SKIP_MINI:-0}" = 1 ] && exit 0
timeout 100 $B/kernels/bench_cuda_forward data/models/sparsedoc-mini 4096 65536 > $O/mini.log 2>&1; echo "mini rc=$?"
tail -5 $O/mini.log
