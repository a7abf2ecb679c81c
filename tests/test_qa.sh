#!/bin/sh
# test_qa.sh: question answering end to end through the real binary, the shipped sparsedoc-mini model,
# a real store and a real KV cache directory in a temp dir (no model configured: the shipped one is found).
#   - the sample PDF (data/samples/harbor-notes.pdf): the planted value and a valid citation of its page
#     (physical page 2, printed 113); the second ask on the same scope is served from the cache
#     (tokens prefilled < 100, reused > 0, reused == restored) with the same answer;
#   - a corrupted blob file is dropped and recomputed, and the answer is unchanged;
#   - --indexer-fp8 answers the same from KV cache entries of its own;
#   - --json carries the documented fields; the human output has citations, strategy and cache lines;
#   - empty scope and a missing model fail with a clear message and exit 1; bad usage exits 2;
#   - ask --repo on a small code tree (tests/fixtures/qa_repo) cites a path:line that exists;
#   - chat: two questions on one live session, --list, --resume.
# Usage: test_qa.sh SPARSEDOC_BINARY
set -u
bin=$1
src=${SD_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}
pdf=$src/data/samples/harbor-notes.pdf
repo=$src/tests/fixtures/qa_repo
. "$(dirname "$0")/cli_env.sh" # $tmp, private store/cache/XDG dirs, fail/ok
Q="What is the access code for the Brenlow vault?"
# json FILE EXPR: evaluate a Python expression on the parsed object j
json() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# 1. cold ask, JSON
"$bin" ask --threads 2 --json --doc "$pdf" "$Q" >"$tmp/a1.json" 2>"$tmp/a1.err" || fail "ask exited $? ($(cat "$tmp/a1.err"))"
fields=$(json "$tmp/a1.json" "all(k in j for k in ('answer','citations','strategy','timings','tokens','cache')) and \
all(k in j['tokens'] for k in ('prompt','reused','restored','prefilled','generated')) and \
all(k in j['timings'] for k in ('restore_s','prefill_s','ttft_s','generate_s','total_s'))")
[ "$fields" = True ] && ok "--json has answer, citations, strategy, timings, token counts" || fail "--json fields missing: $(cat "$tmp/a1.json")"
ans1=$(json "$tmp/a1.json" "j['answer']")
case "$ans1" in *KX-4821*) ok "answer value: $ans1" ;; *) fail "answer '$ans1' lacks KX-4821" ;; esac
cite=$(json "$tmp/a1.json" "[(c['page'], c.get('page_label')) for c in j['citations'] if c['valid']]")
[ "$cite" = "[(2, '113')]" ] && ok "citation: physical page 2, printed 113" || fail "citations $cite (want [(2, '113')])"
cold=$(json "$tmp/a1.json" "(j['tokens']['prefilled'] == j['tokens']['prompt'], j['cache']['blocks_stored'] > 0)")
[ "$cold" = "(True, True)" ] && ok "cold: whole prompt prefilled, blocks stored" || fail "cold ask: $cold"
echo "  cold: $(json "$tmp/a1.json" "'%d tokens, prefill %.2f s, ttft %.2f s' % (j['tokens']['prompt'], j['timings']['prefill_s'], j['timings']['ttft_s'])")"

# 2. warm ask: served from the cache
"$bin" ask --threads 2 --json --doc "$pdf" "$Q" >"$tmp/a2.json" 2>"$tmp/a2.err" || fail "second ask exited $?"
warm=$(json "$tmp/a2.json" "(j['tokens']['prefilled'] < 100, j['tokens']['reused'] > 0, j['tokens']['reused'] == j['tokens']['restored'], j['answer'] == '''$ans1''')")
[ "$warm" = "(True, True, True, True)" ] && ok "warm: $(json "$tmp/a2.json" "'reused %d, prefilled %d, ttft %.3f s' % (j['tokens']['reused'], j['tokens']['prefilled'], j['timings']['ttft_s'])"), same answer" \
    || fail "warm ask (prefilled<100, reused>0, reused==restored, same answer) = $warm: $(cat "$tmp/a2.json")"

# 2b. the read-only subcommand is the default: 'docs' lists, 'cache' shows the statistics
"$bin" docs >"$tmp/d.txt" 2>&1 && grep -q "harbor-notes.pdf" "$tmp/d.txt" && ok "'docs' alone lists the documents" ||
    fail "'docs' alone: $(cat "$tmp/d.txt")"
"$bin" cache --json >"$tmp/c.json" 2>&1 && [ "$(json "$tmp/c.json" "j['entries'] > 0")" = True ] &&
    ok "'cache' alone shows the statistics" || fail "'cache' alone: $(cat "$tmp/c.json")"

# 3. a corrupted blob: dropped, recomputed, same answer; the next ask hits fully again
blob=$(find "$tmp/kv/blobs" -type f -name '*.kv' | sort | sed -n 3p)
if [ -n "$blob" ]; then
    size=$(wc -c <"$blob")
    printf 'CORRUPTCORRUPTCORRUPT' | dd of="$blob" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
    "$bin" ask --threads 2 --json --doc "$pdf" "$Q" >"$tmp/a3.json" 2>"$tmp/a3.err" || fail "ask after corruption exited $?"
    c=$(json "$tmp/a3.json" "(j['cache']['blocks_dropped'] >= 1, j['tokens']['prefilled'] > 64, j['answer'] == '''$ans1''', j['cache']['blocks_stored'] > 0)")
    [ "$c" = "(True, True, True, True)" ] && ok "corrupt blob dropped and recomputed, same answer" || fail "after corruption: $c $(cat "$tmp/a3.json")"
    "$bin" ask --threads 2 --json --doc "$pdf" "$Q" >"$tmp/a4.json" 2>/dev/null
    c=$(json "$tmp/a4.json" "(j['cache']['blocks_dropped'], j['tokens']['prefilled'] < 100)")
    [ "$c" = "(0, True)" ] && ok "recomputed blocks were stored again" || fail "after recompute: $c"
else
    fail "no blob files under $tmp/kv/blobs"
fi

# 3b. --indexer-fp8 (DeepSeek's FP8 indexer numerics): the same answer, but its KV state is its own (another
# fingerprint): not served from the fp32 entries, then served from its own
"$bin" ask --threads 2 --json --indexer-fp8 --doc "$pdf" "$Q" >"$tmp/f1.json" 2>"$tmp/f1.err" || fail "ask --indexer-fp8 exited $?"
"$bin" ask --threads 2 --json --indexer-fp8 --doc "$pdf" "$Q" >"$tmp/f2.json" 2>"$tmp/f2.err" || fail "second ask --indexer-fp8 exited $?"
f=$(json "$tmp/f1.json" "('KX-4821' in j['answer'], j['tokens']['reused'] == 0, j['tokens']['prefilled'] == j['tokens']['prompt'])")
f2=$(json "$tmp/f2.json" "(j['tokens']['prefilled'] < 100, j['tokens']['reused'] > 0)")
[ "$f $f2" = "(True, True, True) (True, True)" ] && ok "--indexer-fp8: same answer, own KV cache entries" ||
    fail "--indexer-fp8 (answer, cold, cold) (warm, reused) = $f $f2: $(cat "$tmp/f1.json")"

# 4. human output
"$bin" ask --threads 2 --doc "$pdf" "$Q" >"$tmp/h.txt" 2>&1 || fail "human ask exited $?"
grep -q '^KX-4821' "$tmp/h.txt" && grep -q '\[p. 113\].*page 2' "$tmp/h.txt" && grep -q '^strategy: whole scope in one context' "$tmp/h.txt" &&
    grep -q '^cache: reused [0-9,]* of [0-9,]* tokens, restored in' "$tmp/h.txt" && ok "human output: answer, citation, strategy, cache line" ||
    { fail "human output:"; cat "$tmp/h.txt"; }

# 5. errors
"$bin" ask --db "$tmp/empty.db" "$Q" >/dev/null 2>"$tmp/e1"; rc=$?
[ $rc = 1 ] && grep -q "empty scope" "$tmp/e1" && ok "empty scope: exit 1, '$(cat "$tmp/e1")'" || fail "empty scope: rc $rc, '$(cat "$tmp/e1")'"
"$bin" ask --model "$tmp/no-such-model" --doc "$pdf" "$Q" >/dev/null 2>"$tmp/e2"; rc=$?
[ $rc = 1 ] && grep -q "not found" "$tmp/e2" && ok "missing model: exit 1, '$(cat "$tmp/e2")'" || fail "missing model: rc $rc, '$(cat "$tmp/e2")'"
SPARSEDOC_MODEL="$tmp/gone" "$bin" ask --doc "$pdf" "$Q" >/dev/null 2>"$tmp/e3"; rc=$?
[ $rc = 1 ] && grep -q 'SPARSEDOC_MODEL' "$tmp/e3" && ok "SPARSEDOC_MODEL missing: exit 1" || fail "SPARSEDOC_MODEL missing: rc $rc, '$(cat "$tmp/e3")'"
"$bin" ask --doc "$pdf" >/dev/null 2>&1; rc=$?
[ $rc = 2 ] && ok "no question: exit 2" || fail "no question: rc $rc"
"$bin" ask --ctx 999999 --doc "$pdf" "$Q" >/dev/null 2>"$tmp/e4"; rc=$?
[ $rc = 1 ] && grep -q "longer than model" "$tmp/e4" && ok "context too long: exit 1" || fail "--ctx 999999: rc $rc, '$(cat "$tmp/e4")'"

# 6. a scope larger than one context (--ctx 768 packs the sample into 3): FTS5 picks, or map-reduce
"$bin" ask --threads 2 --json --ctx 768 --doc "$pdf" "$Q" >"$tmp/s.json" 2>/dev/null || fail "ask --ctx 768 exited $?"
s=$(json "$tmp/s.json" "(j['strategy'].startswith('FTS5 chose context 2 of 3'), 'KX-4821' in j['answer'], [c['page'] for c in j['citations'] if c['valid']])")
[ "$s" = "(True, True, [2])" ] && ok "FTS5 selection: $(json "$tmp/s.json" "j['strategy']")" || fail "FTS5 selection: $s $(cat "$tmp/s.json")"
"$bin" ask --threads 2 --json --ctx 768 --strategy map-reduce --doc "$pdf" "$Q" >"$tmp/m.json" 2>/dev/null || fail "map-reduce exited $?"
s=$(json "$tmp/m.json" "(j['strategy'].startswith('map-reduce over 3 contexts'), j['n_contexts_used'], 'KX-4821' in j['answer'])")
[ "$s" = "(True, 3, True)" ] && ok "map-reduce: $(json "$tmp/m.json" "j['strategy']")" || fail "map-reduce: $s $(cat "$tmp/m.json")"

# 7. code tree
"$bin" ask --threads 2 --json --repo "$repo" "What is the default port for the Quillon service?" >"$tmp/r.json" 2>"$tmp/r.err" || fail "ask --repo exited $? ($(cat "$tmp/r.err"))"
case "$(json "$tmp/r.json" "j['answer']")" in *7341*) ok "repo answer: $(json "$tmp/r.json" "j['answer']")" ;; *) fail "repo answer lacks 7341: $(cat "$tmp/r.json")" ;; esac
lines=$(json "$tmp/r.json" "' '.join('%s:%d' % (c['path'], c['line_start']) for c in j['citations'] if c['valid'])")
good=0
for pl in $lines; do
    p=${pl%:*} l=${pl##*:}
    [ -f "$p" ] && [ "$l" -ge 1 ] && [ "$l" -le "$(wc -l <"$p")" ] && good=1
done
[ $good = 1 ] && ok "repo citation exists: $lines" || fail "no valid existing path:line cited: $(cat "$tmp/r.json")"

# 8. chat: two turns on the live session, --list, --resume
printf '%s\n%s\n' "$Q" "What is the code name of project Tembrolin?" |
    "$bin" chat --threads 2 --json --doc "$pdf" >"$tmp/c.jsonl" 2>"$tmp/c.err" || fail "chat exited $? ($(cat "$tmp/c.err"))"
n=$(wc -l <"$tmp/c.jsonl")
t2=$(sed -n 2p "$tmp/c.jsonl" >"$tmp/c2.json" && json "$tmp/c2.json" "(j['tokens']['prefilled'] < 100, j['tokens']['reused'] > j['tokens']['restored'], 'Saffron' in j['answer'])")
[ "$n" = 2 ] && [ "$t2" = "(True, True, True)" ] && ok "chat: 2 answers, second turn kept the live session" || fail "chat: $n lines, turn 2 $t2: $(cat "$tmp/c.jsonl")"
conv=$(json "$tmp/c2.json" "j.get('conversation_id', 0)")
"$bin" chat --list >"$tmp/l.txt" 2>&1 && grep -q "^ *$conv  *2 " "$tmp/l.txt" && ok "chat --list shows conversation $conv with 2 turns" || { fail "chat --list:"; cat "$tmp/l.txt"; }
echo "Who is the chief engineer of Dravik Works?" | "$bin" chat --threads 2 --json --resume "$conv" >"$tmp/c3.json" 2>/dev/null || fail "chat --resume exited $?"
[ "$(json "$tmp/c3.json" "j.get('conversation_id')")" = "$conv" ] && "$bin" chat --list 2>/dev/null | grep -q "^ *$conv  *3 " &&
    ok "chat --resume $conv appended turn 3" || fail "chat --resume: $(cat "$tmp/c3.json")"

[ $fails = 0 ] && { echo "all question-answering checks passed"; exit 0; }
echo "$fails check(s) failed"
exit 1
