# cli_env.sh: sourced by the CLI test scripts (test_qa.sh, test_bad_inputs.sh, test_longctx.sh). Gives each run a
# private temp dir $tmp (removed on exit, read-only parts included) holding the store, the KV cache and the XDG
# directories, so no user file is read or written and no configured model is picked up; and the fail/ok
# reporting the scripts share ($fails counts failures).
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
export SPARSEDOC_DB="$tmp/store.db" SPARSEDOC_CACHE_DIR="$tmp/kv" XDG_CONFIG_HOME="$tmp/config" \
    XDG_DATA_HOME="$tmp/data" XDG_CACHE_HOME="$tmp/cache" HOME="$tmp/home"
unset SPARSEDOC_MODEL SPARSEDOC_CACHE_BUDGET
mkdir -p "$tmp/home"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
