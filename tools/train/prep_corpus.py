#!/usr/bin/env python3
"""Collect the sparsedoc-mini training text on this machine (pure Python, no deps).

Sources (training only; the Paul Graham essays are held out for evaluation):
  prose: English man pages (troff stripped), /usr/share/doc README/*.txt/copyright, LEval inputs
  code : C headers under /usr/include (kept line by line, for path:line markers)

    python3 tools/train/prep_corpus.py --out .train/corpus.jsonl.gz --max-mb 48

Writes gzip'd JSON lines {"kind": "prose"|"code", "name": str, "text": str}. Deterministic
(sorted walks, seeded shuffle of nothing: order is the sorted file order).
"""
import argparse
import glob
import gzip
import json
import os
import re

ESC = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\s[-+]?\d|\\\*(\[[^\]]*\]|\(..|.)|\\\((..)|\\\[[^\]]*\]|\\[&|^~0 :%ce]")


def strip_troff(src):
    out = []
    for line in src.splitlines():
        if line.startswith(".\\\"") or line.startswith("'\\\"") or line.startswith(".\\}"):
            continue
        if line.startswith(".") or line.startswith("'"):
            m = re.match(r"[.'](SH|SS|B|I|BR|IR|RB|RI|BI|IB|TP|IP|Nm|Nd|Sh|Ss|Fn|Fa|Ar|Op|Fl|Pa|Xr|Dv|Ev|Cm|It|Em|Sy|Li)\b\s*(.*)", line)
            if not m:
                continue
            line = m.group(2).replace('"', "")
            if m.group(1) in ("SH", "Sh", "SS", "Ss"):
                out.append("")
        line = ESC.sub(lambda mm: "-" if mm.group(0) == "\\-" else "", line)
        line = line.replace("\\-", "-").replace("\\e", "\\").replace("\\", "")
        out.append(line.rstrip())
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-mb", type=float, default=48.0)
    a = ap.parse_args()
    budget = {"man": 0.30, "doc": 0.10, "leval": 0.30, "code": 0.30}
    cap = {k: v * a.max_mb * 1e6 for k, v in budget.items()}
    used = {k: 0 for k in budget}
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    n = 0
    with gzip.open(a.out, "wt", encoding="utf-8") as f:
        def emit(kind, group, name, text):
            nonlocal n
            if len(text) < 400 or used[group] >= cap[group]:
                return
            used[group] += len(text)
            f.write(json.dumps({"kind": kind, "name": name, "text": text}) + "\n")
            n += 1
        for p in sorted(glob.glob("/usr/share/man/man[1-8]/*.gz")):
            try:
                src = gzip.open(p, "rt", encoding="utf-8", errors="replace").read()
            except Exception:
                continue
            if src.startswith(".so "):
                continue
            emit("prose", "man", p, strip_troff(src))
        for root, dirs, files in sorted(os.walk("/usr/share/doc")):
            dirs.sort()
            for fn in sorted(files):
                if fn.endswith(".txt") or fn.startswith("README") and not fn.endswith(".gz") or fn == "copyright":
                    p = os.path.join(root, fn)
                    try:
                        emit("prose", "doc", p, open(p, encoding="utf-8", errors="replace").read())
                    except Exception:
                        pass
        for p in sorted(glob.glob("/work/shared/corpus/longctx/leval/*.jsonl")):
            for line in open(p, encoding="utf-8"):
                try:
                    r = json.loads(line)
                except Exception:
                    continue
                emit("prose", "leval", os.path.basename(p), r.get("input", ""))
        for root, dirs, files in sorted(os.walk("/usr/include")):
            dirs.sort()
            for fn in sorted(files):
                if fn.endswith(".h"):
                    p = os.path.join(root, fn)
                    try:
                        emit("code", "code", p[len("/usr/include/"):], open(p, encoding="utf-8", errors="replace").read())
                    except Exception:
                        pass
    print("docs %d, MB by source %s" % (n, {k: round(v / 1e6, 1) for k, v in used.items()}))


if __name__ == "__main__":
    main()
