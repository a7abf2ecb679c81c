#!/bin/sh
# test_stories_generate.sh: end-to-end check of loader, tokenizer, forward pass, greedy sampler
# and decoder through the CLI: stories260K (tests/fixtures, converted from llama2.c) with an empty
# prompt (BOS only) at temperature 0 must print exactly llama2.c's greedy output from the corpus.
# Usage: test_stories_generate.sh SPARSEDOC_BINARY
set -u
bin=$1
exp="${SD_CORPUS:-../shared/corpus}/models/stories260K/expected-greedy-t0.txt"
if [ ! -f "$exp" ]; then
    echo "SKIP: $exp not found (the shared corpus is absent; set SD_CORPUS)"
    exit 77
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bin" generate --model "$SD_FIXTURES/stories260K" --prompt "" -n 256 --temp 0 >"$out" || {
    echo "FAIL: sparsedoc generate exited with $?"
    exit 1
}
if cmp -s "$out" "$exp"; then
    echo "stories260K greedy output matches llama2.c ($(wc -c <"$exp") bytes)"
    exit 0
fi
echo "FAIL: output differs from llama2.c greedy output:"
diff "$out" "$exp" | head -20
exit 1
