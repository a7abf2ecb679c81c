#!/bin/sh
# longctx_gpu.sh: one device call that continues sparsedoc-mini's long-context training and measures the
# result in OUR engine on the GPU. Builds eval_mini with the CUDA backend in the background, trains
# (tools/train/train.py --init INIT), blends the run with the shipped v1 weights (blend.py) and runs
# eval_mini --backend cuda on the held-out set for each model, as long as time remains. Work happens in
# $W; $OUT receives run.safetensors, one bALPHA.safetensors per blend (ALPHAS, default "0.7 0.85"; FP8, config and
# tokenizer as the shipped model's) and logs.tar.gz. BUCKETS (default "4096 16384 32768 65536") orders the evaluation,
# MODES (default sparse,dense) the run's modes; EVAL64 (e.g. the 80-question 64K sample) is evaluated first, DSA only.
# Usage (repository root, GPU machine, carry .deps and .train/gpu):
#   INIT=.train/gpu/run2 BUDGET=380 sh tools/train/longctx_gpu.sh
# LONG_FROM=32768 LONG_DOC_FRAC=0.85 EARLY_FRAC=0.3: rows of 32K+ tokens get documents that fill 85-100% of
# the row and, for 30% of them, facts only in the first half (long question-to-fact distances; not yet used).
# .train/gpu holds corpus.jsonl.gz, tokenizer.json, mini_eval.jsonl (tools/train/make_eval.py) and INIT.
set -u
OUT=${OUT:-$PWD/longctx-out}
W=${W:-/tmp/longctx}
G=.train/gpu
. tools/train/gpu_start.sh
# Defaults: run B of MODEL.md (v2); run C overrides them through the environment.
python3 tools/train/train.py --out "$W/run" --budget "${BUDGET:-380}" --seed "${SEED:-2345}" --split "${SPLIT:-0.55,0.05,0.40}" \
  --peak1 "${PEAK1:-3e-4}" --warm1 0.05 --lr3 "${LR3:-1.5e-4}" --eval-lens 4096,16384,32768,65536 --init "${INIT:-$G/run2}" \
  --corpus $G/corpus.jsonl.gz --tokenizer $G/tokenizer.json --procs 12 \
  --mix1 "${MIX1:-4096x16:2,8192x8:1,16384x4:1,32768x2:2,65536x1:2}" --mix2 "${MIX2:-32768x2:1,65536x1:1}" \
  --mix3 "${MIX3:-4096x16:1,16384x4:1,32768x2:2,65536x1:1}" --long-from "${LONG_FROM:-1073741824}" \
  --long-doc-frac "${LONG_DOC_FRAC:-0.35}" --early-frac "${EARLY_FRAC:-0}" > "$W/train_stdout.txt" 2>&1
echo "train rc=$? at $(el) s"; tail -12 "$W/train_stdout.txt"
wait $BP; tail -2 "$W/build.log"
R=$W/run
[ -f $R/bundle.tar ] && tar -C $R -xf $R/bundle.tar
for a in ${ALPHAS-0.7 0.85}; do
  python3 tools/train/blend.py --a data/models/sparsedoc-mini --b $R --alpha $a --out "$W/b$a" > /dev/null 2>&1 &&
    cp $R/config.json "$W/b$a/" 2>/dev/null
done
E=$B/tools/eval_mini
ev() { # model tag bucket modes [docs]
  left=$((${LIMIT:-560} - $(el)))
  [ $left -gt 20 ] || { echo "skip $2 $3 (no time)"; return; }
  timeout $left $E --model "$1" --eval $G/mini_eval.jsonl --modes "$4" --buckets "$3" ${5:+--docs $5} --backend cuda \
    --threads 8 --out "$W/eval_$2_$3.json" > "$W/eval_$2_$3.txt" 2>&1
  echo "== $2 $3 rc=$? at $(el) s"; grep "^| [0-9]" "$W/eval_$2_$3.txt"
}
if [ -n "${EVAL64:-}" ]; then # a second held-out file (the 80-question 64K sample), DSA only, run first
  left=$((${LIMIT:-560} - $(el)))
  timeout $left $E --model $R --eval "$EVAL64" --modes sparse --buckets 65536 --backend cuda --threads 8 \
    --out "$W/eval64_run.json" > "$W/eval64_run.txt" 2>&1
  echo "== run 64K sample rc=$? at $(el) s"; grep "^| [0-9]" "$W/eval64_run.txt"
fi
for b in ${BUCKETS:-4096 16384 32768 65536}; do
  ev $R run $b "${MODES:-sparse,dense}"
  for a in ${ALPHAS-0.7 0.85}; do ev "$W/b$a" "b$a" $b sparse; done
done
echo "done at $(el) s"
for m in run $(for a in ${ALPHAS-0.7 0.85}; do echo b$a; done); do
  d=$W/$m; [ $m = run ] && d=$R
  [ -f $d/model.safetensors ] && cp $d/model.safetensors "$OUT/$m.safetensors"
done
(cd $W && tar czf "$OUT/logs.tar.gz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.f32' .)
