#!/bin/sh
# eval_gpu.sh: one device call that measures sparsedoc-mini (or MODEL) on held-out sets in OUR engine on the GPU
# (eval_mini --backend cuda): for each "FILE:BUCKET,BUCKET" in SETS, every mode of MODES (default sparse,dense), raw
# greedy answers and, with CONSTRAIN=1, also as `ask` decodes (--constrain-markers); EXTRA (e.g. --kv-fp8) goes to
# every run. Stops starting runs LIMIT seconds (default 540) after the start. Tables and per-question JSONL in
# $OUT/logs.tar.gz.
# Usage (repository root, GPU machine, carry .deps and the directory of the eval files):
#   SETS=".train/gpu/mini_eval_large.jsonl:4096,16384,32768 .train/gpu/mini_eval_64k.jsonl:65536" \
#     sh tools/train/eval_gpu.sh
set -u
OUT=${OUT:-$PWD/eval-out}
W=${W:-/tmp/evalgpu}
. tools/train/gpu_start.sh
M=${MODEL:-data/models/sparsedoc-mini}
wait $BP; tail -1 "$W/build.log"
trap '(cd $W && tar czf "$OUT/logs.tar.gz" --exclude="*.safetensors" .)' EXIT
for c in "" ${CONSTRAIN:+--constrain-markers}; do
  for set in $SETS; do
    f=${set%%:*}
    for b in $(echo "${set#*:}" | tr , ' '); do
      left=$((${LIMIT:-540} - $(el)))
      [ $left -gt 20 ] || { echo "skip $f $b $c (no time)"; continue; }
      t=$(basename "$f" .jsonl)_$b${c:+_c}
      timeout $left $B/tools/eval_mini --model "$M" --eval "$f" --modes "${MODES:-sparse,dense}" --buckets $b \
        --backend cuda --threads 8 $c ${EXTRA:-} --out "$W/$t.jsonl" > "$W/$t.txt" 2>&1
      echo "== $t rc=$? at $(el) s"; grep "^| [0-9]" "$W/$t.txt"
    done
  done
done
echo "done at $(el) s"
