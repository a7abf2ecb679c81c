#!/bin/sh
# blend_eval_gpu.sh: one device call that blends a continued training run into the shipped sparsedoc-mini
# (blend.py, for each alpha in ALPHAS) and measures each blend, and any extra model dirs in MODELS, on the
# held-out set in OUR engine on the GPU (eval_mini --backend cuda, DSA and dense). $OUT receives the blends'
# model.safetensors (b<alpha>.safetensors) and logs.tar.gz (eval tables).
# Usage (repository root, GPU machine, carry .deps and the dir holding RUN and EVAL):
#   RUN=.train/evalE/runE EVAL=.train/evalE/mini_eval.jsonl ALPHAS="0.3 0.5" MODELS=".train/evalE/b0.85" \
#     sh tools/train/blend_eval_gpu.sh
# MODES (default sparse,dense) and BUCKETS choose the eval_mini runs; EVAL64 (a second held-out file, e.g. the
# 80-question 64K sample of tests/fixtures/mini_eval/manifest_64k.json) is run first, DSA only, for every model.
set -u
OUT=${OUT:-$PWD/blend-out}
W=${W:-/tmp/blendeval}
. tools/train/gpu_start.sh
A=${A:-data/models/sparsedoc-mini}
list=""
for a in ${ALPHAS:-0.5}; do
  python3 tools/train/blend.py --a "$A" --b "$RUN" --alpha "$a" --out "$W/b$a" > "$W/blend_$a.txt" 2>&1 &&
    cp "$RUN/config.json" "$W/b$a/" && list="$list $W/b$a"
done
wait $BP; tail -2 "$W/build.log"
for m in $list ${MODELS:-}; do
  t=$(basename "$m")
  if [ -n "${EVAL64:-}" ]; then
    timeout $((${LIMIT:-540} - $(el))) $B/tools/eval_mini --model "$m" --eval "$EVAL64" --modes sparse --buckets 65536 \
      --backend cuda --threads 8 --out "$W/eval64_$t.json" > "$W/eval64_$t.txt" 2>&1
    echo "== $t 64K sample rc=$? at $(el) s"; grep "^| [0-9]" "$W/eval64_$t.txt"
  fi
  for b in ${BUCKETS:-4096 16384 32768 65536}; do
    left=$((${LIMIT:-540} - $(el)))
    [ $left -gt 20 ] || { echo "skip $t $b (no time)"; continue; }
    timeout $left $B/tools/eval_mini --model "$m" --eval "$EVAL" --modes "${MODES:-sparse,dense}" --buckets $b --backend cuda \
      --threads 8 --out "$W/eval_${t}_$b.json" > "$W/eval_${t}_$b.txt" 2>&1
    echo "== $t $b rc=$? at $(el) s"; grep "^| [0-9]" "$W/eval_${t}_$b.txt"
  done
done
echo "done at $(el) s"
for m in $list; do cp "$m/model.safetensors" "$OUT/$(basename "$m").safetensors"; done
(cd $W && tar czf "$OUT/logs.tar.gz" --exclude='*.safetensors' .)
