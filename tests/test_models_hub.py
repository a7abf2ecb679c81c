#!/usr/bin/env python3
"""test_models_hub.py: `sparsedoc models` end to end against a local fake hub (tests/hub_server.py) on
127.0.0.1 serving tests/fixtures/llama: full pull (byte-identical files, include filtering, pagination,
Bearer token), a second pull that fetches nothing, an interrupted pull resumed with a Range request, a
dropped connection retried within one pull, transient 503/429 retried, a corrupted file rejected and
deleted, a stale .part restarted, 401/403/404 reported, disk full (ENOSPC through /dev/full), and
list / info (also on the DeepSeek-V3.2 fixture) / use / rm.
usage: test_models_hub.py PATH/TO/sparsedoc"""
import hashlib
import configparser
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import HubServer  # noqa: E402

EXE = os.path.abspath(sys.argv[1])
FIX = os.environ.get("SD_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
LLAMA = os.path.join(FIX, "llama")
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)
    return cond


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def q4_0_cpu_bytes(model_dir):
    """What the CPU engine holds for tools/st2gguf.py's Q4_0 file of a llama model: 2-D tensors used as
    stored (Q4_0, 18 bytes per 32 elements; F16 when a row is not a multiple of 32), 1-D tensors as F32."""
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    total = 0
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        sh = v["shape"]
        e = 1
        for d in sh:
            e *= d
        total += 4 * e if len(sh) == 1 else (e // 32 * 18 if sh[-1] % 32 == 0 else 2 * e)
    return total


def st_params(path):
    """Sum of elements and bytes of a safetensors file, read independently of the C code."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    elems = nbytes = 0
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        e = 1
        for d in v["shape"]:
            e *= d
        if not k.endswith("_scale_inv"):
            elems += e
        nbytes += v["data_offsets"][1] - v["data_offsets"][0]
    return elems, nbytes


class Env:
    def __init__(self, tmp, url):
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items()
                    if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") and
                    k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "SPARSEDOC_MODELS_DIR", "SPARSEDOC_MODEL")}
        self.env.update(HOME=tmp, XDG_DATA_HOME=os.path.join(tmp, "data"), XDG_CONFIG_HOME=os.path.join(tmp, "cfg"),
                        HF_ENDPOINT=url, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        self.models = os.path.join(tmp, "data", "sparsedoc", "models")
        self.dest = os.path.join(self.models, "test--llama")

    def run(self, *args, token=None, js=True):
        env = dict(self.env)
        if token:
            env["HF_TOKEN"] = token
        cmd = [EXE, "models"] + list(args) + (["--json"] if js else [])
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        out = None
        if js and p.stdout.strip():
            try:
                out = json.loads(p.stdout)
            except ValueError:
                pass
        return p.returncode, out, p.stderr


def file_state(out, name):
    for f in (out or {}).get("files", []):
        if f["path"] == name:
            return f
    return {}


def main():
    if not os.path.isfile(os.path.join(LLAMA, "model.safetensors")):
        print("SKIP: fixture %s missing" % LLAMA)
        return 77
    model_sz = os.path.getsize(os.path.join(LLAMA, "model.safetensors"))
    tmp = tempfile.mkdtemp(prefix="sd-hub-")
    extra = {"onnx/notes.txt": b"a file in a subfolder\n"}
    try:
        with HubServer(LLAMA, "test/llama", extra=extra, page_size=2) as srv:
            st = srv.state
            e = Env(tmp, srv.url)

            # --- full pull, with a token the server requires ---
            st.token = "secret-token"
            rc, out, err = e.run("pull", "test/llama")
            check(rc == 1 and "HF_TOKEN" in err and "401" in err, "no token: exit 1, 401 names HF_TOKEN (%r)" % err.strip()[:200])
            rc, out, err = e.run("pull", "test/llama", token="wrong")
            check(rc == 1 and "403" in err and "access denied" in err, "wrong token: exit 1, 403 access denied (%r)" % err.strip()[:200])
            st.log.clear()
            rc, out, err = e.run("pull", "test/llama", token="secret-token")
            check(rc == 0 and out and out["ok"], "full pull exit 0 (%r)" % err.strip()[:300])
            for name in ("config.json", "model.safetensors"):
                p = os.path.join(e.dest, name)
                check(os.path.isfile(p) and sha(p) == sha(os.path.join(LLAMA, name)), "pulled %s is byte-identical" % name)
                check(file_state(out, name).get("verified") is True, "%s verified against the listing" % name)
            check(sorted(f["path"] for f in out["files"]) == ["config.json", "model.safetensors"],
                  "default includes select config.json and model.safetensors only")
            check(not os.path.exists(os.path.join(e.dest, "logits.f32")), "files outside the include set not fetched")
            check(not [f for f in os.listdir(e.dest) if f.endswith(".part")], "no .part files left")
            check(out["commit"] == st.commit, "commit of the revision reported")
            trees = [r for r in st.requests("api") if "/tree/" in r["path"]]
            check(len(trees) == 4, "tree listing followed Link pagination (%d pages of 2 for 7 files)" % len(trees))
            res = st.requests("resolve")
            check(res and all(r["auth"] == "Bearer secret-token" for r in res), "HF_TOKEN sent as Bearer auth")
            check(out["bytes_downloaded"] == model_sz + os.path.getsize(os.path.join(LLAMA, "config.json")),
                  "bytes_downloaded = sum of file sizes")
            st.token = None

            # --- second pull: nothing fetched ---
            st.log.clear()
            rc, out, err = e.run("pull", "test/llama")
            check(rc == 0 and all(f["state"] == "cached" for f in out["files"]) and out["bytes_downloaded"] == 0,
                  "second pull: every file cached, 0 bytes downloaded")
            check(not st.requests("resolve"), "second pull made no file request")

            # --- --include with a glob and a file in a subfolder ---
            rc, out, err = e.run("pull", "test/llama", "--include", "onnx/*", "--include", "*.f32")
            check(rc == 0 and sorted(f["path"] for f in out["files"]) == ["hidden.f32", "logits.f32", "onnx/notes.txt"],
                  "--include replaces the default set (%r)" % err.strip()[:200])
            p = os.path.join(e.dest, "onnx", "notes.txt")
            check(os.path.isfile(p) and open(p, "rb").read() == extra["onnx/notes.txt"], "file in a subfolder pulled")
            check(sha(os.path.join(e.dest, "logits.f32")) == sha(os.path.join(LLAMA, "logits.f32")), "logits.f32 identical")
            rc, out, err = e.run("pull", "test/llama", "--include", "*.nothing")
            check(rc == 1 and "matches" in err, "an include set matching nothing: exit 1 (%r)" % err.strip()[:120])

            # --- interrupted pull, then resumed ---
            d2 = os.path.join(tmp, "resume")
            cut = 200000
            st.drop = {"model.safetensors": cut}
            st.log.clear()
            rc, out, err = e.run("pull", "test/llama", "--dir", d2, "--retries", "0")
            part = os.path.join(d2, "model.safetensors.part")
            check(rc == 1, "pull cut mid-file with --retries 0: exit 1 (%r)" % err.strip()[:200])
            psz = os.path.getsize(part) if os.path.exists(part) else -1
            check(psz == cut, ".part keeps the %d bytes received (has %d)" % (cut, psz))
            check(not os.path.exists(os.path.join(d2, "model.safetensors")), "no final file after the cut")
            st.log.clear()
            rc, out, err = e.run("pull", "test/llama", "--dir", d2)
            check(rc == 0, "resumed pull exit 0 (%r)" % err.strip()[:200])
            lfs = [r for r in st.requests("lfs") if r.get("file") == "model.safetensors"]
            check(len(lfs) == 1 and lfs[0]["range"] == "bytes=%d-" % cut and lfs[0]["status"] == 206,
                  "server saw one Range request from byte %d (%r)" % (cut, [(r["range"], r["status"]) for r in lfs]))
            check(lfs and lfs[0]["sent"] == model_sz - cut, "only the rest was sent (%d bytes)" % (model_sz - cut))
            check(file_state(out, "model.safetensors").get("resumed_from") == cut, "summary reports resumed_from")
            check(sha(os.path.join(d2, "model.safetensors")) == sha(os.path.join(LLAMA, "model.safetensors")),
                  "resumed file is byte-identical")
            check(not os.path.exists(part), ".part renamed away")

            # --- Ctrl-C during a slow transfer: cancelled, .part kept, then resumed ---
            d7 = os.path.join(tmp, "cancel")
            part7 = os.path.join(d7, "model.safetensors.part")
            st.slow = {"model.safetensors": 0.2}
            env = dict(e.env)
            p = subprocess.Popen([EXE, "models", "pull", "test/llama", "--dir", d7], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            for _ in range(600):  # wait (up to 30 s) until some bytes are in the .part file
                if os.path.exists(part7) and os.path.getsize(part7) > 0:
                    break
                time.sleep(0.05)
            p.send_signal(signal.SIGINT)
            _, perr = p.communicate(timeout=60)
            kept = os.path.getsize(part7) if os.path.exists(part7) else -1
            check(p.returncode == 1 and "cancelled" in perr, "SIGINT: exit 1, cancelled (%r)" % perr.strip()[:200])
            check(0 < kept < model_sz, ".part kept after the cancel (%d bytes)" % kept)
            st.slow = {}
            st.log.clear()
            rc, out, err = e.run("pull", "test/llama", "--dir", d7)
            lfs = [r for r in st.requests("lfs") if r.get("file") == "model.safetensors"]
            check(rc == 0 and lfs and lfs[0]["range"] == "bytes=%d-" % kept and
                  sha(os.path.join(d7, "model.safetensors")) == sha(os.path.join(LLAMA, "model.safetensors")),
                  "pull after the cancel resumed from byte %d and is byte-identical" % kept)

            # --- dropped connection retried inside one pull; transient 503 and 429 ---
            d3 = os.path.join(tmp, "retry")
            st.drop = {"model.safetensors": 100000}
            st.status = {"config.json": [503, 1], "api": [429, 1]}
            st.log.clear()
            rc, out, err = e.run("pull", "test/llama", "--dir", d3)
            check(rc == 0, "pull with a cut connection, a 503 and a 429: exit 0 (%r)" % err.strip()[:200])
            lfs = [r for r in st.requests("lfs") if r.get("file") == "model.safetensors"]
            check([r["range"] for r in lfs] == [None, "bytes=100000-"], "retry resumed with Range bytes=100000- (%r)"
                  % [r["range"] for r in lfs])
            check(file_state(out, "model.safetensors").get("retries") == 1 and file_state(out, "config.json").get("retries") == 1,
                  "one retry each for the cut and the 503")
            check(sha(os.path.join(d3, "model.safetensors")) == sha(os.path.join(LLAMA, "model.safetensors")),
                  "retried file is byte-identical")

            # --- corrupted file rejected ---
            d4 = os.path.join(tmp, "corrupt")
            st.corrupt = {"model.safetensors"}
            rc, out, err = e.run("pull", "test/llama", "--dir", d4)
            check(rc == 1 and "checksum mismatch" in err and "deleted" in err,
                  "corrupted file: exit 1, checksum mismatch message (%r)" % err.strip()[:300])
            check(not os.path.exists(os.path.join(d4, "model.safetensors")) and
                  not os.path.exists(os.path.join(d4, "model.safetensors.part")), "corrupted file not left in place")
            check(os.path.isfile(os.path.join(d4, "config.json")), "the good file of the same pull is in place")
            st.corrupt = set()

            # --- a stale .part (another version of the file) is detected and restarted once ---
            d5 = os.path.join(tmp, "stale")
            os.makedirs(d5)
            with open(os.path.join(d5, "model.safetensors.part"), "wb") as f:
                f.write(b"\x55" * 4096)
            rc, out, err = e.run("pull", "test/llama", "--dir", d5)
            check(rc == 0 and sha(os.path.join(d5, "model.safetensors")) == sha(os.path.join(LLAMA, "model.safetensors")),
                  "stale .part: mismatch detected, downloaded afresh (%r)" % err.strip()[:200])

            # --- 404s ---
            rc, out, err = e.run("pull", "nobody/nothing")
            check(rc == 1 and "not found" in err and "404" in err, "unknown repo: exit 1, 404 not found (%r)" % err.strip()[:200])
            rc, out, err = e.run("pull", "test/llama@v9")
            check(rc == 1 and "not found" in err, "unknown revision: exit 1, not found (%r)" % err.strip()[:200])
            st.missing = {"config.json"}
            rc, out, err = e.run("pull", "test/llama", "--dir", os.path.join(tmp, "missing"))
            check(rc == 1 and "config.json" in err and "not found" in err, "listed file answering 404: exit 1 (%r)" % err.strip()[:200])
            st.missing = set()
            for bad in ("no-slash", "a/b/c", "a/b@", "../x", "a/b@x y", "own er/x"):
                rc, out, err = e.run("pull", bad)
                check(rc == 2 and "sparsedoc models pull:" in err, "malformed reference %r: exit 2" % bad)

            # --- disk full: the .part file is /dev/full (writes fail with ENOSPC) ---
            if os.path.exists("/dev/full"):
                d6 = os.path.join(tmp, "full")
                os.makedirs(d6)
                os.symlink("/dev/full", os.path.join(d6, "model.safetensors.part"))
                rc, out, err = e.run("pull", "test/llama", "--dir", d6, "--include", "model.safetensors")
                check(rc == 1 and "disk full" in err, "ENOSPC: exit 1, disk full message (%r)" % err.strip()[:300])
                check(not os.path.exists(os.path.join(d6, "model.safetensors")), "nothing put in place on ENOSPC")

            # --- list / info / use / rm ---
            cfg_dir = os.path.join(tmp, "cfg", "sparsedoc")
            os.makedirs(cfg_dir, exist_ok=True)
            cfg = os.path.join(cfg_dir, "config.ini")  # GKeyFile, app/settings.h
            with open(cfg, "w") as f:
                f.write("[ui]\ncolor_scheme=dark\n")

            def read_cfg():
                cp = configparser.ConfigParser(interpolation=None)
                cp.read(cfg)
                return {"model": cp.get("model", "dir", fallback=""), "theme": cp.get("ui", "color_scheme", fallback="")}
            rc, out, err = e.run("list")
            m = [x for x in (out or {}).get("models", []) if x["name"] == "test--llama"]
            check(rc == 0 and len(m) == 1 and m[0]["architecture"] == "LlamaForCausalLM" and m[0]["repo"] == "test/llama",
                  "list shows test--llama with its architecture and repo")
            check(m and m[0]["bytes"] >= model_sz and not m[0]["default"], "list: size counted, not the default yet")
            rc, out, err = e.run("use", "test/llama")
            real = os.path.realpath(e.dest)
            c = read_cfg()
            check(rc == 0 and c.get("model") == real and c.get("theme") == "dark", "use writes model, keeps other keys")
            check(not [f for f in os.listdir(cfg_dir) if ".tmp" in f], "use left no temp file")
            rc, out, err = e.run("list")
            check(out and out["default"] == real and [x for x in out["models"] if x["name"] == "test--llama"][0]["default"],
                  "list marks the default")
            rc, out, err = e.run("use", os.path.join(tmp, "nothing-here"))
            check(rc == 1, "use of a missing path: exit 1")

            params, nbytes = st_params(os.path.join(LLAMA, "model.safetensors"))
            lc = json.load(open(os.path.join(LLAMA, "config.json")))
            rc, out, err = e.run("info", "test--llama")
            check(rc == 0 and out and out["parameters"] == params, "info: parameters = %d (got %r)" % (params, out and out.get("parameters")))
            L, nkv, hd = lc["num_hidden_layers"], lc["num_key_value_heads"], lc["head_dim"]
            if out:
                cpu, gpu = out["memory"]["cpu"], out["memory"]["gpu"]
                check(out["architecture"] == "LlamaForCausalLM" and out["max_context"] == lc["max_position_embeddings"]
                      and out["dsa"] is None and "F32" in out["dtypes"], "info: architecture, max context, dtypes, no DSA")
                check(cpu["weights_bytes"] == 4 * params and gpu["weights_bytes"] == 4 * params,
                      "info: weight bytes CPU f32 / GPU (CUDA backend) f32")
                check(cpu["kv_bytes_64k"] == 2 * L * nkv * hd * 4 * 65536 and gpu["kv_bytes_128k"] == 2 * L * nkv * hd * 4 * 131072,
                      "info: KV bytes at 64K and 128K (f32 on both backends)")
            # A GGUF file (made at build time by tools/st2gguf.py from the same llama fixture, Q4_0): the same
            # configuration and parameter count as the safetensors model, its ggml types listed.
            gg = os.path.join(os.environ.get("SD_BUILD", ""), "tests", "llama-q4_0.gguf")
            if os.path.isfile(gg):
                rc, gout, err = e.run("info", gg)
                check(rc == 0 and gout and gout["format"] == "gguf" and gout["parameters"] == params
                      and gout["architecture"] == "LlamaForCausalLM" and gout["max_context"] == lc["max_position_embeddings"]
                      and "Q4_0" in gout["dtypes"] and gout["memory"]["cpu"]["weights_bytes"] == q4_0_cpu_bytes(LLAMA)
                      and gout["memory"]["gpu"]["weights_bytes"] == 4 * params
                      and gout["memory"]["cpu"]["kv_bytes_64k"] == 2 * L * nkv * hd * 4 * 65536,
                      "info on a GGUF file: format, parameters, architecture, types, memory (%r)" % (err.strip()[:200],))
            else:
                print("note: %s not built; GGUF info not checked" % gg)
            dsv = os.path.join(FIX, "dsv32")
            if os.path.isfile(os.path.join(dsv, "model.safetensors")):
                rc, out, err = e.run("info", dsv)
                dc = json.load(open(os.path.join(dsv, "config.json")))
                dp, _ = st_params(os.path.join(dsv, "model.safetensors"))
                L = dc["num_hidden_layers"]
                lat = dc["kv_lora_rank"] + dc["qk_rope_head_dim"]
                di = dc["index_head_dim"]
                ok = rc == 0 and out and out["dsa"] == {"index_topk": dc["index_topk"], "index_n_heads": dc["index_n_heads"],
                                                       "index_head_dim": di}
                check(ok, "info on DeepSeek-V3.2 by path: DSA settings (%r)" % (out and out.get("dsa")))
                if out:
                    check(out["parameters"] == dp, "info dsv32: parameters = %d" % dp)
                    check(out["memory"]["cpu"]["kv_bytes_64k"] == L * (lat * 4 + di * 4) * 65536 and
                          out["memory"]["gpu"]["kv_bytes_64k"] == L * (lat * 4 + di * 4) * 65536,
                          "info dsv32: latent + indexer cache bytes (f32 on both backends)")
            rc, out, err = e.run("info", "no-such-model")
            check(rc == 1 and "no model" in err, "info of an unknown name: exit 1")
            rc, _, _ = e.run("info", "test--llama", js=False)
            check(rc == 0, "info text output exit 0")

            rc, out, err = e.run("rm", "../data")
            check(rc == 1 and os.path.isdir(e.models), "rm refuses a name outside the models dir")
            rc, out, err = e.run("rm", "test--llama")
            c = read_cfg()
            check(rc == 0 and not os.path.exists(e.dest) and out["default_cleared"], "rm removes the model directory")
            check(not c["model"] and c.get("theme") == "dark", "rm of the default clears model, keeps other keys")
            rc, out, err = e.run("rm", "test--llama")
            check(rc == 1, "rm of a missing model: exit 1")
            rc, _, _ = e.run("--help", js=False)
            check(rc == 0, "models --help exit 0")
            rc, _, _ = e.run("frobnicate", js=False)
            check(rc == 2, "unknown subcommand: exit 2")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d checks failed" % len(FAILS))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
