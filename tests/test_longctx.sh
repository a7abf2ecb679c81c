#!/bin/sh
# test_longctx.sh: the shipped sparsedoc-mini answers from a long document in one context, through the real CLI,
# store and KV cache. The document is two licence texts every Debian system has (/usr/share/common-licenses:
# GPL-3 + Apache-2.0; about 30,800 tokens with its fixed path, /tmp/sparsedoc-test-longctx-UID/notes.txt, in every
# line marker) with three planted facts at 15%, 50% and 85% of its lines; one context holds it all, so the DSA path
# selects 512 of ~30K keys per query row. Checks:
#   - strategy "whole scope in one context", more than 20,000 prompt tokens;
#   - at least 2 of the 3 planted values answered exactly (the model sometimes misspells a pseudo-word value:
#     MODEL.md), each exact answer cited at its planted line and grounded;
#   - the second and third questions restore the document from the KV prefix cache (prefilled < 100).
# Usage: test_longctx.sh SPARSEDOC_BINARY
set -u
bin=$1
lic=/usr/share/common-licenses
if [ ! -r "$lic/GPL-3" ] || [ ! -r "$lic/Apache-2.0" ]; then
    echo "skip: $lic/GPL-3 and Apache-2.0 are needed to build the long document (Debian base-files)"
    exit 77
fi
. "$(dirname "$0")/cli_env.sh" # $tmp, private store/cache/XDG dirs, fail/ok
# The document's path is in every line marker the model reads, so a random temp path would make each run a
# different prompt (and the model's answers vary with it); a fixed path keeps the run deterministic.
docdir=/tmp/sparsedoc-test-longctx-$(id -u)
doc=$docdir/notes.txt
mkdir -p "$docdir"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp" "$docdir"' EXIT
python3 - "$lic" "$doc" <<'PY'
import sys
lic, out = sys.argv[1], sys.argv[2]
lines = (open(lic + "/GPL-3").read() + open(lic + "/Apache-2.0").read()).split("\n")
n = len(lines)
facts = [(0.15, "The access code for the Orvant vault is QT-5817."),
         (0.50, "The capital of the province of Belmarra is Tosk."),
         (0.85, "The code name of project Quillon is Bluefinch.")]
for depth, fact in sorted(facts, reverse=True):
    lines.insert(int(n * depth), fact)
open(out, "w").write("\n".join(lines))
PY
right=0
i=0
for qa in "What is the access code for the Orvant vault?|QT-5817" "What is the capital of the province of Belmarra?|Tosk" \
    "What is the code name of project Quillon?|Bluefinch"; do
    i=$((i + 1))
    q=${qa%|*} want=${qa#*|}
    line=$(grep -n "$want\\.\$" "$doc" | cut -d: -f1)
    "$bin" ask --threads 2 --json --doc "$doc" "$q" >"$tmp/a$i.json" 2>"$tmp/a$i.err" || { fail "ask $i exited $?: $(cat "$tmp/a$i.err")"; continue; }
    r=$(python3 - "$tmp/a$i.json" "$want" "$line" "$i" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
want, line, i = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = j["tokens"]
value = j["answer"].split("[")[0].strip()
cites = [(c["line_start"], c.get("grounded")) for c in j["citations"]]
print("answer=%r prompt=%d reused=%d prefilled=%d ttft=%.2fs strategy=%r cites=%r" %
      (j["answer"], t["prompt"], t["reused"], t["prefilled"], j["timings"]["ttft_s"], j["strategy"], cites))
checks = [("one context", j["strategy"].startswith("whole scope in one context")), ("long", t["prompt"] > 20000)]
if i > 1:
    checks.append(("from the cache", t["prefilled"] < 100 and t["reused"] > 20000))
exact = value == want
if exact:
    checks.append(("cited at line %d, grounded" % line, (line, True) in cites))
bad = [name for name, good in checks if not good]
print("RESULT %d %s" % (exact, ",".join(bad) or "-"))
PY
)
    echo "  q$i: $(echo "$r" | head -1)"
    res=$(echo "$r" | sed -n 's/^RESULT //p')
    [ "${res%% *}" = 1 ] && right=$((right + 1))
    [ "${res#* }" = "-" ] && ok "question $i checks" || fail "question $i: ${res#* }"
done
[ "$right" -ge 2 ] && ok "$right of 3 planted values answered exactly from one context of more than 20,000 tokens" ||
    fail "only $right of 3 planted values answered exactly"
[ "$fails" = 0 ] && echo "all long-context checks passed" || echo "$fails check(s) failed"
[ "$fails" = 0 ]
