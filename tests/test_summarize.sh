#!/bin/sh
# test_summarize.sh: `sparsedoc summarize` end to end with the shipped sparsedoc-mini model on a corpus
# PDF (6 pages, split into several contexts by --ctx 2048 and combined two at a time by --fan-in 2, so
# the summary has several levels) and a small code tree: every document gets a summary, index.md lists
# them, part ranges are real pages and lines, --json lines parse, a second run skips everything, a run
# killed with SIGKILL (or stopped by SIGTERM) resumes, a corrupt PDF is reported (exit 1) while the
# other documents are still summarized, and `ask` on a summarized document restores its prefill from
# the KV cache. Usage errors exit 2.
set -u
BIN="$SD_BUILD/app/sparsedoc"
PDF="$SD_CORPUS/pdf/DeepSeek_V3_2.pdf"
if [ ! -f "$PDF" ]; then
    echo "SKIP: corpus PDF $PDF is absent (set -Dcorpus=PATH)"
    exit 77
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export SPARSEDOC_DB="$T/db.sqlite" SPARSEDOC_CACHE_DIR="$T/kv" XDG_CONFIG_HOME="$T/config" \
    XDG_DATA_HOME="$T/data" XDG_CACHE_HOME="$T/cache" NO_COLOR=1
unset SPARSEDOC_MODEL SPARSEDOC_CONFIG
fail() { echo "FAIL: $*"; exit 1; }

# A small real code tree.
mkdir -p "$T/code/engine" "$T/code/app"
cp "$SD_SOURCE/engine/sampler.h" "$SD_SOURCE/engine/sd_status.h" "$T/code/engine/"
cp "$SD_SOURCE/app/commands.h" "$T/code/app/"
S="--ctx 2048 --max-words 12 --threads 2 --fan-in 2"

# Usage errors.
"$BIN" summarize >/dev/null 2>&1; [ $? -eq 2 ] || fail "no PATH must exit 2"
"$BIN" summarize --style poem "$PDF" >/dev/null 2>&1; [ $? -eq 2 ] || fail "--style poem must exit 2"
"$BIN" summarize --max-words 0 "$PDF" >/dev/null 2>&1; [ $? -eq 2 ] || fail "--max-words 0 must exit 2"

# 1. First run: everything summarized, JSON Lines.
"$BIN" summarize $S --json --out "$T/out" "$PDF" "$T/code" >"$T/run1.jsonl" 2>"$T/run1.err"
rc=$?
[ $rc -eq 0 ] || { cat "$T/run1.err"; fail "first run exit $rc"; }
python3 - "$T" "$PDF" <<'EOF' || fail "first run output"
import json, os, sys
t, pdf = sys.argv[1], os.path.realpath(sys.argv[2])
lines = [json.loads(l) for l in open(t + "/run1.jsonl")]
docs = {l["document"]: l for l in lines}
code = {os.path.realpath(os.path.join(t, "code", p)) for p in ["engine/sampler.h", "engine/sd_status.h", "app/commands.h"]}
assert set(docs) == code | {pdf}, sorted(docs)
assert all(l["status"] == "done" for l in lines), [l["status"] for l in lines]
index = open(t + "/out/index.md").read()
for d, l in docs.items():
    assert os.path.isfile(l["file"]) and os.path.dirname(l["file"]) == os.path.realpath(t + "/out"), l["file"]
    assert os.path.basename(l["file"]) in index, "index.md does not list " + l["file"]
    md = open(l["file"]).read()
    assert d in md and "## Summary" in md
    assert l["model"] == "sparsedoc-mini" and l["style"] == "brief" and l["max_words"] == 12
    assert len(l["model_fingerprint"]) == 64 and len(l["sha256"]) == 64
    assert isinstance(l["summary"], str) and len(l["summary"].split()) <= 13
    c = l["cache"]
    assert c["tokens_prompt"] > 0 and c["tokens_prompt"] == c["tokens_reused"] + c["tokens_prefilled"], c
    assert c["tokens_generated"] >= 0 and l["timings"]["total_s"] > 0 and c["contexts_as_ask"] is True
    level0 = [p for p in l["parts"] if p["level"] == 0]
    assert len(level0) == l["contexts"] >= 1
p = docs[pdf]
assert p["pages"] == 6, p["pages"]
assert p["contexts"] >= 3 and p["depth"] >= 2, (p["contexts"], p["depth"])
# Levels: --fan-in 2 combines pairs of consecutive parts; each combined range spans its children.
levels = {}
for part in p["parts"]:
    levels.setdefault(part["level"], []).append(part)
assert sorted(levels) == list(range(p["depth"] + 1)) and len(levels[p["depth"]]) == 1
for lv in range(1, p["depth"] + 1):
    below, here = levels[lv - 1], levels[lv]
    assert len(here) == (len(below) + 1) // 2, (lv, len(below), len(here))
    for k, part in enumerate(here):
        kids = below[2 * k:2 * k + 2]
        assert part["pages"] == [kids[0]["pages"][0], kids[-1]["pages"][1]], (part, kids)
covered = set()
for part in p["parts"]:
    a, b = part["pages"]
    assert 1 <= a <= b <= 6, part
    assert part["range"] == (f"page {a}" if a == b else f"pages {a}-{b}")
    if part["level"] == 0:
        covered |= set(range(a, b + 1))
assert covered == set(range(1, 7)), covered
top = p["parts"][-1]
assert top["level"] == p["depth"] and top["pages"] == [1, 6] and top["summary"] == p["summary"]
md = open(p["file"]).read()
assert "## Parts" in md and "Level 0: page" in md, md
for d in code:
    l = docs[d]
    n = sum(1 for _ in open(d))
    assert l["lines"] == n, (d, l["lines"], n)
    for part in l["parts"]:
        a, b = part["lines"]
        assert 1 <= a <= b <= n, (d, part)
man = json.load(open(t + "/out/.sparsedoc-summaries.json"))
assert set(man["documents"]) == set(docs)
print("first run ok:", len(docs), "documents; pdf contexts", p["contexts"], "depth", p["depth"])
EOF
grep -q "sparsedoc-mini is a tiny fact-lookup test model" "$T/out/index.md" || fail "index.md lacks the model note"

# 2. Second run: every document skipped, files untouched.
sum1=$(cat "$T"/out/*.md | cksum)
"$BIN" summarize $S --json --out "$T/out" "$PDF" "$T/code" >"$T/run2.jsonl" 2>"$T/run2.err" || fail "second run"
python3 -c '
import json, sys
l = [json.loads(x) for x in open(sys.argv[1])]
assert len(l) == 4 and all(x["status"] == "skipped" for x in l), [x["status"] for x in l]
' "$T/run2.jsonl" || fail "second run did not skip every document"
[ "$(cat "$T"/out/*.md | cksum)" = "$sum1" ] || fail "second run rewrote summaries"
# Another style is another summary: not skipped.
"$BIN" summarize $S --json --style bullets --out "$T/out" "$T/code/app/commands.h" >"$T/run2b.jsonl" 2>&1 ||
    fail "bullets run"
grep -q '"status":"done"' "$T/run2b.jsonl" || fail "--style bullets reused the brief summary"

# 3. A run killed with SIGKILL after its first document resumes: done ones skipped, the rest done.
# Own cache directory, so the kill lands while the PDF is still being prefilled.
export SPARSEDOC_CACHE_DIR="$T/kv2"
"$BIN" summarize $S --json --out "$T/out2" "$PDF" "$T/code" >"$T/run3.jsonl" 2>"$T/run3.err" &
pid=$!
i=0
until grep -q '"status":"done"' "$T/run3.jsonl" 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 1200 ] || { kill -9 $pid; fail "killed run produced nothing in 120 s"; }
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
python3 - "$T" <<'EOF' || fail "manifest after SIGKILL"
import json, sys
m = json.load(open(sys.argv[1] + "/out2/.sparsedoc-summaries.json"))
n = len(m["documents"])
assert 1 <= n < 4, f"{n} documents in the manifest after the kill (the kill came too late to test resumption)"
EOF
"$BIN" summarize $S --json --out "$T/out2" "$PDF" "$T/code" >"$T/run4.jsonl" 2>"$T/run4.err" ||
    { cat "$T/run4.err"; fail "resumed run"; }
python3 - "$T" <<'EOF' || fail "resumed run output"
import json, os, sys
t = sys.argv[1]
l = [json.loads(x) for x in open(t + "/run4.jsonl")]
st = [x["status"] for x in l]
assert len(l) == 4 and "skipped" in st and "done" in st and "failed" not in st, st
m = json.load(open(t + "/out2/.sparsedoc-summaries.json"))
assert len(m["documents"]) == 4
assert all(os.path.isfile(x["file"]) for x in l)
left = [f for f in os.listdir(t + "/out2") if ".tmp." in f]
print("resumed:", st, "temp files left by the kill:", left)
EOF

# 3b. SIGTERM (as Ctrl-C) stops the run cleanly: exit 1, "interrupted", and the next run completes it.
export SPARSEDOC_CACHE_DIR="$T/kv3"
"$BIN" summarize $S --out "$T/out2b" "$PDF" "$T/code" >"$T/run3b.out" 2>"$T/run3b.err" &
pid=$!
i=0
until [ -s "$T/run3b.out" ]; do
    i=$((i + 1))
    [ $i -lt 1200 ] || { kill -9 $pid; fail "interrupted run produced nothing in 120 s"; }
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
[ $rc -eq 1 ] || fail "a run stopped by SIGTERM must exit 1, got $rc"
grep -q "interrupted" "$T/run3b.err" || { cat "$T/run3b.err"; fail "no 'interrupted' message"; }
"$BIN" summarize $S --json --out "$T/out2b" "$PDF" "$T/code" >"$T/run3c.jsonl" 2>"$T/run3c.err" ||
    fail "run after SIGTERM"
python3 -c '
import json, sys
st = [json.loads(x)["status"] for x in open(sys.argv[1])]
assert len(st) == 4 and "skipped" in st and "done" in st and "failed" not in st, st
' "$T/run3c.jsonl" || fail "run after SIGTERM did not resume"

# 4. A corrupt PDF fails, the other document is still summarized, exit 1.
head -c 4000 "$PDF" >"$T/corrupt.pdf"
"$BIN" summarize $S --out "$T/out3" "$T/corrupt.pdf" "$T/code/engine/sampler.h" >"$T/run5.out" 2>"$T/run5.err"
rc=$?
[ $rc -eq 1 ] || { cat "$T/run5.err"; fail "a corrupt PDF must exit 1, got $rc"; }
grep -q "corrupt.pdf" "$T/run5.err" || fail "the corrupt PDF is not reported on stderr"
grep -q "sampler.h" "$T/run5.out" || fail "sampler.h was not summarized beside the corrupt PDF"
grep -q "corrupt.pdf" "$T/out3/index.md" || fail "index.md does not list the failure"
ls "$T"/out3/sampler.h-*.md >/dev/null 2>&1 || fail "no summary file for sampler.h"
# 5. Summarizing fills the KV prefix cache that `ask` uses: the same document prefix (template + context)
# is restored, not prefilled again. Default --ctx, so the whole PDF is one context as `ask` packs it.
export SPARSEDOC_CACHE_DIR="$T/kv4"
"$BIN" summarize --max-words 12 --threads 2 --out "$T/out4" "$PDF" >/dev/null 2>"$T/run6.err" ||
    { cat "$T/run6.err"; fail "summarize before ask"; }
"$BIN" ask --threads 2 --json --max-tokens 4 --doc "$PDF" "What does the lightning indexer select?" \
    >"$T/ask.json" 2>"$T/ask.err" || { cat "$T/ask.err"; fail "ask after summarize"; }
python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))["tokens"]
assert t["restored"] >= 0.9 * t["prompt"] and t["prefilled"] < 128, t
print("ask after summarize: restored", t["restored"], "of", t["prompt"], "prompt tokens; prefilled", t["prefilled"])
' "$T/ask.json" || fail "ask did not reuse the prefill of summarize"
# 6. An engine flag that changes the KV state (another fingerprint) reaches the engine and keeps its cache apart:
# `ask FLAG` restores what `summarize FLAG` prefilled while a plain `ask` does not. --fp8-act (DeepSeek's FP8 GEMM
# numerics; sparsedoc-mini's matrices are FP8) and --kv-fp8 (the FP8 MLA latent cache; sparsedoc-mini is MLA).
H="$T/code/app/commands.h"
check_apart() { # FLAG NAME N
    export SPARSEDOC_CACHE_DIR="$T/kv_$2"
    "$BIN" summarize "$1" --json --max-words 12 --threads 2 --out "$T/out_$2" "$H" >"$T/run_$2.jsonl" \
        2>"$T/run_$2.err" || { cat "$T/run_$2.err"; fail "summarize $1"; }
    grep -q '"status":"done"' "$T/run_$2.jsonl" || fail "summarize $1 did not summarize"
    "$BIN" ask "$1" --threads 2 --json --max-tokens 4 --doc "$H" "What does it declare?" >"$T/ask_$2.json" \
        2>"$T/ask_$2.err" || { cat "$T/ask_$2.err"; fail "ask $1"; }
    "$BIN" ask --threads 2 --json --max-tokens 4 --doc "$H" "What does it declare?" >"$T/ask_plain_$2.json" \
        2>"$T/ask_plain_$2.err" || { cat "$T/ask_plain_$2.err"; fail "ask without $1"; }
    python3 -c '
import json, sys
a = json.load(open(sys.argv[1]))["tokens"]
b = json.load(open(sys.argv[2]))["tokens"]
assert a["restored"] >= 0.9 * a["prompt"], a
assert b["restored"] < 0.5 * b["prompt"], b
print(sys.argv[3] + ": ask " + sys.argv[4] + " restored", a["restored"], "of", a["prompt"], "; plain ask restored",
      b["restored"])
' "$T/ask_$2.json" "$T/ask_plain_$2.json" "$2" "$1" || fail "$2 KV state not cached apart"
}
check_apart --fp8-act fp8_act
check_apart --kv-fp8 kv_fp8
echo "ok"
