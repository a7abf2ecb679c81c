#!/usr/bin/env python3
"""Deterministic held-out eval set for sparsedoc-mini (pure Python, runs anywhere).

Source text: the Paul Graham essays (never used in training). Seeds, bucket sizes and the fact
templates are fixed in tests/fixtures/mini_eval/manifest.json; the training run used other seeds
and other text (man pages, /usr/share/doc, LEval, /usr/include).

    python3 tools/train/make_eval.py --manifest tests/fixtures/mini_eval/manifest.json --out /tmp/mini_eval.jsonl

Each line: {"id", "bucket", "style", "target_tokens", "doc" (the prompt up to the first question),
"questions": [{"q": "<|question|>...\\n<|answer|>", "value", "marker", "depth"}]}.
Every question of a document shares the document prefix, so one prefill serves all of them (the
engine truncates back to the document end between questions).
"""
import argparse
import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import docgen  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--corpus", default="")
    a = ap.parse_args()
    man = json.load(open(a.manifest))
    src = a.corpus or man["source_dir"]
    if not os.path.isabs(src):
        src = os.path.join(os.path.dirname(os.path.abspath(a.manifest)), src)
    files = sorted(f for f in os.listdir(src) if f.endswith(".txt"))
    texts = [open(os.path.join(src, f), encoding="utf-8", errors="replace").read() for f in files]
    prose = [[" " + s for s in docgen.split_sentences(t)] for t in texts]
    lines = [("essays/" + f, [(n, " " + l) for n, l in docgen.text_lines(t)]) for f, t in zip(files, texts)]
    pool = docgen.Pool(prose, lines)
    cpts = man["chars_per_token"]  # per style, calibrated with eval_mini --dry (our tokenizer)
    h = hashlib.sha256()
    n = 0
    with open(a.out, "w") as f:
        for b in man["buckets"]:
            for di in range(b["docs"]):
                seed = man["seed"] + 1000 * b["tokens"] // 1024 + di
                rng = random.Random(seed)
                style = "page" if di % 2 == 0 else "line"
                nq = b["questions_per_doc"]
                depths = [(i + rng.uniform(0.15, 0.85)) / nq for i in range(nq)]
                nd = man.get("distractors", 2)
                depths += [rng.random() for _ in range(nd)]
                budget = b["tokens"] * man["fill"] - man["reserve"]
                cpt = cpts[style]
                d = docgen.build_doc(rng, pool, style, budget, lambda s: s, lambda p: len(p) / cpt, nq + nd, 0,
                                     quote_p=0.0, depths=depths)
                doc = "".join(d["pieces"])
                qs = []
                for fact, dep in zip(d["facts"][:nq], depths):
                    qs.append({"q": "<|question|>" + fact["question"] + "\n<|answer|>", "value": fact["value"],
                               "marker": fact["marker"], "depth": round(dep, 3), "template": fact["template"]})
                rec = {"id": "%dk-%d" % (b["tokens"] // 1024, di), "bucket": b["tokens"], "style": style,
                       "seed": seed, "target_tokens": b["tokens"], "doc": doc, "questions": qs}
                line = json.dumps(rec) + "\n"
                h.update(line.encode())
                f.write(line)
                n += 1
    print("%d documents -> %s (sha256 %s)" % (n, a.out, h.hexdigest()))


if __name__ == "__main__":
    main()
