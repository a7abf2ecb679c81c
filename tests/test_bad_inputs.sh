#!/bin/sh
# test_bad_inputs.sh: the CLI's promise on bad input, through the real binary on real damaged files:
# a clear message on stderr, exit 1 (2 for usage), and nothing lost (the user's files are left as they were).
#   - model dirs: model.safetensors cut in the data section and in the header, config.json with an unknown
#     architecture, an empty directory, a tokenizer.json that is not JSON (generate and ask);
#   - the store: a file that is not SQLite, an SQLite database of another program (both left byte-identical);
#   - ask --doc on a damaged PDF: the message names the file once;
#   - the KV cache: blobs truncated, bit-flipped, emptied and deleted are dropped and recomputed (same answer,
#     the next ask is served from the cache again); a read-only cache directory (empty and populated) fails
#     with a message that says what to do, and --no-cache still answers;
#   - a full disk under the store: ingest fails with "disk full", the documents already stored stay; a full
#     disk under the KV cache: the answer stands and the failed cache write is reported;
#   - numeric option values that are not whole numbers in range are usage errors (exit 2), as are an unknown
#     --gpu-weights mode and --gpu-weights without --backend cuda (generate, ask, summarize); --backend cuda
#     without a GPU fails with a message (ask, summarize).
# The read-only and disk-full parts mount small file systems in a private mount namespace (unshare -m, as
# root) or use chmod (as another user); they are skipped, with a message, where neither is possible.
# Usage: test_bad_inputs.sh SPARSEDOC_BINARY
set -u
bin=$1
src=${SD_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}
mini=$src/data/models/sparsedoc-mini
pdf=$src/data/samples/harbor-notes.pdf
. "$(dirname "$0")/cli_env.sh" # $tmp, private store/cache/XDG dirs, fail/ok
export NO_COLOR=1
Q="What is the access code for the Brenlow vault?"
json() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# expect NAME RC PATTERN CMD...: run CMD, want exit RC and stderr matching PATTERN (grep -E) on one line
# of its own (no message split over lines), and no sanitizer report.
expect() {
    name=$1 want=$2 pat=$3
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" != "$want" ]; then
        fail "$name: exit $rc, want $want; stderr: $(cat "$tmp/err")"
    elif ! grep -Eq -e "$pat" "$tmp/err"; then
        fail "$name: stderr lacks /$pat/: $(cat "$tmp/err")"
    elif grep -q 'Sanitizer' "$tmp/err"; then
        fail "$name: sanitizer report: $(cat "$tmp/err")"
    else
        ok "$name: exit $rc, '$(head -c 300 "$tmp/err" | tr '\n' ' ')'"
    fi
}
# model NAME: a copy of the shipped model to damage
model() {
    mkdir -p "$tmp/$1"
    cp "$mini"/config.json "$mini"/tokenizer.json "$mini"/tokenizer_config.json "$mini"/model.safetensors "$tmp/$1/"
    echo "$tmp/$1"
}

# 1. Model directories
m=$(model cut_data)
size=$(wc -c <"$m/model.safetensors")
truncate -s $((size / 2)) "$m/model.safetensors"
expect "safetensors cut in the data section (generate)" 1 'model\.safetensors.*truncated' \
    "$bin" generate --model "$m" --prompt hi -n 2
expect "safetensors cut in the data section (ask)" 1 'model\.safetensors.*truncated' \
    "$bin" ask --db "$tmp/m.db" --model "$m" --doc "$pdf" "$Q"
m=$(model cut_header)
truncate -s 100 "$m/model.safetensors"
expect "safetensors cut in the header" 1 'model\.safetensors.*truncated' "$bin" generate --model "$m" --prompt hi -n 2
m=$(model unknown_arch)
python3 - "$m/config.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
j["architectures"] = ["FrobnicatorForCausalLM"]
j["model_type"] = "frobnicator"
json.dump(j, open(sys.argv[1], "w"), indent=1)
EOF
expect "unknown architecture" 1 'config\.json: unsupported architecture "FrobnicatorForCausalLM".*supported:' \
    "$bin" generate --model "$m" --prompt hi -n 2
m=$(model cut_config)
head -c 200 "$mini/config.json" >"$m/config.json"
expect "config.json cut short" 1 'config\.json: invalid JSON \(.*truncated\)' "$bin" generate --model "$m" --prompt hi -n 2
expect "unknown backend (ask)" 2 'backend must be cpu or cuda' "$bin" ask --db "$tmp/b.db" --backend tpu --doc "$pdf" "$Q"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    expect "cuda backend without a GPU (ask)" 1 'backend (cuda: no CUDA device|.cuda. is not available in this build)' \
        "$bin" ask --db "$tmp/b.db" --backend cuda --doc "$pdf" "$Q"
    expect "cuda backend without a GPU (summarize)" 1 \
        'backend (cuda: no CUDA device|.cuda. is not available in this build)' \
        "$bin" summarize --db "$tmp/b.db" --out "$tmp/sum" --backend cuda --gpu-weights fp8 "$pdf"
    [ ! -e "$tmp/sum/index.md" ] || fail "summarize --backend cuda without a GPU wrote $tmp/sum/index.md"
fi
expect "unknown --gpu-weights" 2 'gpu-weights must be f32, bf16, fp8 or fp8-f32' \
    "$bin" generate --model "$mini" --gpu-weights fp4 --backend cuda --prompt hi -n 2
expect "--gpu-weights fp8 on the CPU" 2 'gpu-weights applies to --backend cuda only' \
    "$bin" generate --model "$mini" --gpu-weights fp8 --prompt hi -n 2
expect "--gpu-weights fp8 on the CPU (ask)" 2 'gpu-weights applies to --backend cuda only' \
    "$bin" ask --db "$tmp/b.db" --gpu-weights fp8 --doc "$pdf" "$Q"
expect "unknown --gpu-weights (ask)" 2 'gpu-weights must be f32, bf16, fp8 or fp8-f32' \
    "$bin" ask --db "$tmp/b.db" --backend cuda --gpu-weights fp4 --doc "$pdf" "$Q"
expect "unknown backend (summarize)" 2 'backend must be cpu or cuda' \
    "$bin" summarize --db "$tmp/b.db" --out "$tmp/sum" --backend tpu "$pdf"
expect "--gpu-weights on the CPU (summarize)" 2 'gpu-weights applies to --backend cuda only' \
    "$bin" summarize --db "$tmp/b.db" --out "$tmp/sum" --gpu-weights bf16 "$pdf"
mkdir -p "$tmp/empty_model"
expect "empty model dir (generate)" 1 'empty_model/config\.json: .*check the path' "$bin" generate --model "$tmp/empty_model" --prompt hi
expect "empty model dir (ask)" 1 'empty_model.*config\.json' \
    "$bin" ask --db "$tmp/m.db" --model "$tmp/empty_model" --doc "$pdf" "$Q"
m=$(model bad_tokenizer)
printf '{"model": {"type": "BPE", "vocab": {"a": 0,,}}' >"$m/tokenizer.json"
expect "tokenizer.json not JSON (generate)" 1 'tokenizer\.json: not valid JSON \(.+\)$' \
    "$bin" generate --model "$m" --prompt hi -n 2
expect "tokenizer.json not JSON (ask)" 1 'tokenizer\.json: not valid JSON' \
    "$bin" ask --db "$tmp/m.db" --model "$m" --doc "$pdf" "$Q"
[ "$(wc -l <"$tmp/err")" -le 2 ] || fail "tokenizer message is split over lines: $(cat "$tmp/err")"

# 2. The store
printf 'meeting notes, not a database\n' >"$tmp/notes.db"
cp "$tmp/notes.db" "$tmp/notes.orig"
expect "store that is not SQLite (ask)" 1 'notes\.db: .*not a database' "$bin" ask --db "$tmp/notes.db" --doc "$pdf" "$Q"
expect "store that is not SQLite (ingest)" 1 'notes\.db: .*not a database' "$bin" ingest --db "$tmp/notes.db" "$pdf"
cmp -s "$tmp/notes.db" "$tmp/notes.orig" && ok "non-SQLite store file left unchanged" || fail "non-SQLite store file was changed"
[ ! -e "$tmp/notes.db-wal" ] || fail "a WAL file was created beside the non-SQLite store"
python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE recipes (name TEXT)'); \
c.execute(\"INSERT INTO recipes VALUES ('bread')\"); c.commit(); c.close()" "$tmp/other.db"
cp "$tmp/other.db" "$tmp/other.orig"
expect "SQLite database of another program (ask)" 1 'other\.db: .*another program' \
    "$bin" ask --db "$tmp/other.db" --doc "$pdf" "$Q"
cmp -s "$tmp/other.db" "$tmp/other.orig" && ok "foreign SQLite database left unchanged" ||
    fail "foreign SQLite database was changed (sparsedoc tables or WAL mode added)"

# 3. A damaged PDF through ask: one clear line naming the file once
head -c 3000 "$pdf" >"$tmp/damaged.pdf"
expect "damaged PDF (ask --doc)" 1 'damaged\.pdf' "$bin" ask --db "$tmp/p.db" --doc "$tmp/damaged.pdf" "$Q"
grep -q "damaged.pdf.*$tmp/damaged.pdf" "$tmp/err" && fail "the PDF path is printed twice: $(cat "$tmp/err")" ||
    ok "the damaged PDF is named once"

# 4. KV cache blobs: truncated, bit-flipped, emptied, deleted -> dropped or missed, recomputed, same answer
"$bin" ask --threads 2 --json --doc "$pdf" "$Q" >"$tmp/c0.json" 2>"$tmp/c0.err" || fail "cold ask exited $? ($(cat "$tmp/c0.err"))"
ans=$(json "$tmp/c0.json" "j['answer']" 2>/dev/null)
case "$ans" in *KX-4821*) ok "cold ask: $ans" ;; *) fail "cold ask answer '$ans'" ;; esac
# blob_of N: the blob file of block N (its path is the hex of its chain hash; the index knows the block)
blob_of() {
    python3 -c "import sqlite3,sys; r=sqlite3.connect(sys.argv[1]).execute('SELECT hex(hash) FROM kv_block WHERE block=?',(int(sys.argv[2]),)).fetchone(); \
h=r[0].lower() if r else ''; print(sys.argv[3]+'/blobs/'+h[:2]+'/'+h+'.kv' if h else '')" "$tmp/kv/index.db" "$1" "$tmp/kv"
}
damage() { # damage HOW FILE
    case $1 in
    truncate) truncate -s $(($(wc -c <"$2") / 2)) "$2" ;;
    bitflip) python3 -c "import sys; p=sys.argv[1]; d=bytearray(open(p,'rb').read()); d[len(d)*2//3]^=0x10; open(p,'wb').write(d)" "$2" ;;
    empty) : >"$2" ;;
    delete) rm -f "$2" ;;
    esac
}
n=1
for how in truncate bitflip empty delete; do
    b=$(blob_of 2)
    if [ -z "$b" ] || [ ! -f "$b" ]; then
        fail "no blob for block 2 in $tmp/kv (index: $(ls "$tmp/kv" 2>&1))"
        break
    fi
    damage $how "$b"
    "$bin" ask --threads 2 --json --doc "$pdf" "$Q" >"$tmp/c$n.json" 2>"$tmp/c$n.err"
    rc=$?
    r=$(json "$tmp/c$n.json" "(j['answer'] == '''$ans''', j['tokens']['reused'] == 2 * 64, j['cache']['blocks_stored'] > 0)" 2>/dev/null)
    [ $rc = 0 ] && [ "$r" = "(True, True, True)" ] && ok "blob $how: restored up to the damaged block, recomputed, same answer" ||
        fail "blob $how: rc $rc, (same answer, reused 128, stored) = $r; $(cat "$tmp/c$n.err")"
    "$bin" ask --threads 2 --json --doc "$pdf" "$Q" >"$tmp/d$n.json" 2>/dev/null
    r=$(json "$tmp/d$n.json" "(j['tokens']['reused'] > 2 * 64, j['cache']['blocks_dropped'])" 2>/dev/null)
    [ "$r" = "(True, 0)" ] && ok "blob $how: the recomputed block is served again" || fail "after $how: $r"
    n=$((n + 1))
done

# privileged helpers: in_ns CMD runs CMD in a private mount namespace (root), else nothing
can_mount=no
if [ "$(id -u)" = 0 ] && unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs '$tmp/home'" 2>/dev/null; then
    can_mount=yes
fi

# 5. A read-only KV cache directory: empty and populated; --no-cache still answers
mkdir -p "$tmp/ro_empty" "$tmp/ro_full"
cp -a "$tmp/kv/." "$tmp/ro_full/"
cat >"$tmp/ro.sh" <<EOF
set -u
for d in ro_empty ro_full; do
    SPARSEDOC_CACHE_DIR="$tmp/\$d" "$bin" ask --threads 2 --doc "$pdf" "$Q" >"$tmp/\$d.out" 2>"$tmp/\$d.err"
    echo \$? >"$tmp/\$d.rc"
done
SPARSEDOC_CACHE_DIR="$tmp/ro_full" "$bin" ask --threads 2 --no-cache --doc "$pdf" "$Q" >"$tmp/ro_nc.out" 2>"$tmp/ro_nc.err"
echo \$? >"$tmp/ro_nc.rc"
EOF
ro_ran=no
if [ "$(id -u)" != 0 ]; then
    chmod -R a-w "$tmp/ro_empty" "$tmp/ro_full" && sh "$tmp/ro.sh" && ro_ran=yes
    chmod -R u+w "$tmp/ro_empty" "$tmp/ro_full"
elif [ $can_mount = yes ]; then
    unshare -m sh -c "mount --bind '$tmp/ro_empty' '$tmp/ro_empty' && mount -o remount,bind,ro '$tmp/ro_empty' &&
        mount --bind '$tmp/ro_full' '$tmp/ro_full' && mount -o remount,bind,ro '$tmp/ro_full' && sh '$tmp/ro.sh'" && ro_ran=yes
fi
if [ $ro_ran = yes ]; then
    for d in ro_empty ro_full; do
        rc=$(cat "$tmp/$d.rc")
        [ "$rc" = 1 ] && grep -q "writable.*--no-cache" "$tmp/$d.err" && ok "read-only cache ($d): exit 1, '$(cat "$tmp/$d.err")'" ||
            fail "read-only cache ($d): rc $rc, '$(cat "$tmp/$d.err")'"
    done
    [ "$(cat "$tmp/ro_nc.rc")" = 0 ] && grep -q KX-4821 "$tmp/ro_nc.out" && ok "read-only cache with --no-cache answers" ||
        fail "--no-cache with a read-only cache: rc $(cat "$tmp/ro_nc.rc"), $(cat "$tmp/ro_nc.err")"
    diff -r "$tmp/kv/blobs" "$tmp/ro_full/blobs" >/dev/null && ok "read-only cache contents unchanged" ||
        fail "read-only cache contents changed"
else
    echo "skip: read-only cache directory (needs root with mount namespaces, or a non-root user)"
fi

# 6. A full disk under the store: a 320 KiB tmpfs holds the store with one small document; a large text file
# does not fit. Ingest fails with a clear message, and the first document is still there.
if [ $can_mount = yes ]; then
    mkdir -p "$tmp/full"
    python3 -c "
import random, sys
random.seed(7)
w = ['harbor', 'vault', 'ledger', 'tide', 'crane', 'manifest', 'berth', 'pilot', 'ballast', 'keel']
with open(sys.argv[1], 'w') as f:
    for i in range(13000):  # about 2 MB: under the 4 MiB text cap, far over the free space
        f.write(' '.join(random.choice(w) + str(random.randrange(10**6)) for _ in range(12)) + '\n')" "$tmp/big.txt"
    printf 'The lighthouse keeper is Oren Valdt.\n' >"$tmp/small.txt"
    unshare -m sh -c "mount -t tmpfs -o size=320k tmpfs '$tmp/full' &&
        SPARSEDOC_DB='$tmp/full/store.db' '$bin' ingest '$tmp/small.txt' >'$tmp/f1.out' 2>'$tmp/f1.err'; echo \$? >'$tmp/f1.rc';
        SPARSEDOC_DB='$tmp/full/store.db' '$bin' ingest '$tmp/big.txt' >'$tmp/f2.out' 2>'$tmp/f2.err'; echo \$? >'$tmp/f2.rc';
        SPARSEDOC_DB='$tmp/full/store.db' '$bin' docs list --json >'$tmp/f3.json' 2>'$tmp/f3.err'; echo \$? >'$tmp/f3.rc';
        SPARSEDOC_DB='$tmp/full/store.db' '$bin' search Valdt >'$tmp/f4.out' 2>'$tmp/f4.err'; echo \$? >'$tmp/f4.rc'"
    [ "$(cat "$tmp/f1.rc")" = 0 ] && ok "small document ingested on the small file system" ||
        fail "small ingest: rc $(cat "$tmp/f1.rc"), $(cat "$tmp/f1.err")"
    rc=$(cat "$tmp/f2.rc")
    [ "$rc" = 1 ] && grep -Eqi "disk full|no space" "$tmp/f2.err" && ok "disk full: exit 1, '$(tr '\n' ' ' <"$tmp/f2.err")'" ||
        fail "disk full: rc $rc, '$(cat "$tmp/f2.err")'"
    r=$(json "$tmp/f3.json" "sorted(d['path'].rsplit('/', 1)[-1] for d in (j['documents'] if isinstance(j, dict) else j))" 2>/dev/null)
    [ "$(cat "$tmp/f3.rc")" = 0 ] && [ "$r" = "['small.txt']" ] && ok "after disk full: the store still lists small.txt only" ||
        fail "after disk full: docs list rc $(cat "$tmp/f3.rc"), $r, $(cat "$tmp/f3.err")"
    [ "$(cat "$tmp/f4.rc")" = 0 ] && grep -q "small.txt" "$tmp/f4.out" && ok "after disk full: search still finds small.txt" ||
        fail "after disk full: search rc $(cat "$tmp/f4.rc"), $(cat "$tmp/f4.out") $(cat "$tmp/f4.err")"
    # A full disk under the KV cache: the answer stands (exit 0), the failed write is reported (a warning
    # on stderr, cache.write_error in --json), and no temporary file is left behind.
    mkdir -p "$tmp/kvfull"
    unshare -m sh -c "mount -t tmpfs -o size=200k tmpfs '$tmp/kvfull' &&
        SPARSEDOC_CACHE_DIR='$tmp/kvfull' '$bin' ask --threads 2 --doc '$pdf' '$Q' >'$tmp/k1.out' 2>'$tmp/k1.err'; echo \$? >'$tmp/k1.rc';
        SPARSEDOC_CACHE_DIR='$tmp/kvfull' '$bin' ask --threads 2 --json --doc '$pdf' '$Q' >'$tmp/k2.json' 2>'$tmp/k2.err'; echo \$? >'$tmp/k2.rc';
        find '$tmp/kvfull' -name '*.tmp' >'$tmp/k3.out'"
    [ "$(cat "$tmp/k1.rc")" = 0 ] && grep -q KX-4821 "$tmp/k1.out" && grep -q "warning: .*not stored.*No space left" "$tmp/k1.err" &&
        ok "cache disk full: answered, warned: '$(cat "$tmp/k1.err")'" ||
        fail "cache disk full: rc $(cat "$tmp/k1.rc"), out '$(cat "$tmp/k1.out")', err '$(cat "$tmp/k1.err")'"
    r=$(json "$tmp/k2.json" "(j['answer'] == '''$ans''', 'No space left' in (j['cache']['write_error'] or ''))" 2>/dev/null)
    [ "$(cat "$tmp/k2.rc")" = 0 ] && [ "$r" = "(True, True)" ] && ok "cache disk full: --json has cache.write_error" ||
        fail "cache disk full --json: rc $(cat "$tmp/k2.rc"), $r"
    [ ! -s "$tmp/k3.out" ] && ok "cache disk full: no temporary files left" || fail "temporary files left: $(cat "$tmp/k3.out")"
else
    echo "skip: disk full (needs root to mount a small tmpfs in a private mount namespace)"
fi

# 6b. A file named on the command line that cannot be ingested is a failure (exit 1), not a silent skip;
# inside a tree the same files are skipped (tests/test_data_tree.c).
head -c 3000 /dev/zero | tr '\0' 'a' >"$tmp/over.txt"
expect "ingest of a named file over --max-file-size" 1 "larger than the 1000-byte cap" \
    "$bin" ingest --db "$tmp/cap.db" --max-file-size 1000 "$tmp/over.txt"
printf 'ab\000cd' >"$tmp/nul.txt"
expect "ingest of a named binary file" 1 "binary file" "$bin" ingest --db "$tmp/cap.db" "$tmp/nul.txt"
n=$("$bin" docs list --db "$tmp/cap.db" --json 2>/dev/null | python3 -c "import json,sys; print(len(json.load(sys.stdin)))" 2>&1)
[ "$n" = 0 ] && ok "neither file was stored" || fail "documents after refused files: $n"

# 7. Numeric option values are parsed whole: "5x", "10M", "abc" and "" are usage errors (exit 2), never
# read as 5, 10 bytes, 0 or the default.
expect "search --limit 5x" 2 "--limit must be an integer" "$bin" search --db "$tmp/u.db" harbor --limit 5x
expect "ingest --max-file-size 10M" 2 "--max-file-size must be an integer" \
    "$bin" ingest --db "$tmp/u.db" --max-file-size 10M "$tmp/small.txt"
expect "ingest --ocr maybe" 2 "--ocr takes auto or off" "$bin" ingest --db "$tmp/u.db" --ocr maybe "$pdf"
expect "ingest --ocr-lang with a shell character" 2 "--ocr-lang takes Tesseract language codes" \
    "$bin" ingest --db "$tmp/u.db" --ocr-lang 'eng;rm' "$pdf"
expect "ingest --page-timeout abc" 2 "--page-timeout must be a number" \
    "$bin" ingest --db "$tmp/u.db" --page-timeout abc "$pdf"
expect "ingest --file-timeout -5" 2 "--file-timeout must be a number" \
    "$bin" ingest --db "$tmp/u.db" --file-timeout -5 "$pdf"
expect "contexts 1x" 2 "document ID must be an integer" \
    "$bin" contexts --db "$tmp/u.db" --tokenizer "$mini/tokenizer.json" 1x
expect "contexts --max-tokens 4096k" 2 "--max-tokens must be an integer" \
    "$bin" contexts --db "$tmp/u.db" --tokenizer "$mini/tokenizer.json" --max-tokens 4096k
expect "cache --max-age ''" 2 "--max-age must be an integer" "$bin" cache gc --max-age ''
expect "models pull --parallel ''" 2 "--parallel must be an integer" "$bin" models pull a/b --parallel ''
expect "ask --threads 4x" 2 "--threads must be an integer" "$bin" ask --threads 4x "$Q"
[ ! -e "$tmp/u.db" ] || [ "$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM documents').fetchone()[0])" "$tmp/u.db")" = 0 ] &&
    ok "no usage error ingested anything" || fail "a usage error still ingested documents"

[ $fails = 0 ] && echo "all bad-input checks passed" || echo "$fails check(s) failed"
[ $fails = 0 ]
