# gpu_start.sh: sourced by the one-call GPU scripts of tools/train (longctx_gpu.sh, blend_eval_gpu.sh) after they
# set W: creates $OUT and $W, puts CUDA on PATH, sets up .deps (tools/cuda_deps.sh), starts the clock (el prints
# the seconds since) and builds eval_mini with the CUDA backend in the background (log $W/build.log, pid $BP,
# build dir $B).
mkdir -p "$OUT" "$W"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
[ -f .deps/setup.sh ] && . ./.deps/setup.sh
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
B=build-gpu
( ( ([ -d $B ] || meson setup $B -Ddata=false -Dcuda=enabled -Dwerror=false) && nice ninja -C $B tools/eval_mini) \
    > "$W/build.log" 2>&1
  echo "build rc=$?" >> "$W/build.log" ) &
BP=$!
