#!/usr/bin/env python3
"""PyTorch reference logits of a shipped sparsedoc-mini directory (FP8 safetensors read by fp8io.py
into the training model, float32, CPU or GPU), to compare with the engine before and after training:

    python3 tools/train/ref_logits.py --model data/models/sparsedoc-mini --text FILE \\
        --ids-out /tmp/ids.txt --out /tmp/ref.f32 [--n 1016] [--rows 300] [--mode sparse]
    build/app/sparsedoc logits --model data/models/sparsedoc-mini --ids /tmp/ids.txt --out /tmp/eng.f32
    python3 tools/train/compare_logits.py /tmp/eng.f32 /tmp/ref.f32 $(wc -w < /tmp/ids.txt) 8192

With --text, ids are made by a greedy longest-match over the byte-level vocabulary of the model's
tokenizer.json (valid, realistic ids; not the exact BPE merge order, which this check does not need),
prefixed with <|bos|><|system|>...<|document|>. --ids FILE uses given ids instead. Needs only torch.
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fp8io  # noqa: E402
from model import MiniDSA  # noqa: E402


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def greedy_ids(tokjson, text, n):
    vocab = json.load(open(tokjson))["model"]["vocab"]
    bc = byte_chars()
    s = "".join(bc[b] for b in text.encode("utf-8"))
    maxlen = max(len(k) for k in vocab)
    head = [0, 2] + greedy_str(vocab, "".join(bc[b] for b in
                                              b"Answer from the document. Quote the value and cite its marker.\n"),
                               maxlen) + [3]
    return (head + greedy_str(vocab, s, maxlen))[:n]


def greedy_str(vocab, s, maxlen):
    out, i = [], 0
    while i < len(s):
        for L in range(min(maxlen, len(s) - i), 0, -1):
            t = vocab.get(s[i:i + L])
            if t is not None:
                out.append(t)
                i += L
                break
        else:
            raise ValueError("no token for %r" % s[i])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", default="")
    ap.add_argument("--text", default="")
    ap.add_argument("--ids-out", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1016)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--mode", default="sparse", choices=["sparse", "dense"])
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    if "rope_parameters" not in cfg:
        rp = dict(cfg["rope_scaling"])
        rp["rope_type"] = rp.pop("type", rp.pop("rope_type", "yarn"))
        rp["rope_theta"] = cfg["rope_theta"]
        cfg["rope_parameters"] = rp
    if a.ids:
        ids = [int(x) for x in open(a.ids).read().split()]
    else:
        ids = greedy_ids(os.path.join(a.model, "tokenizer.json"), open(a.text, encoding="utf-8").read(), a.n)
        if a.ids_out:
            open(a.ids_out, "w").write(" ".join(map(str, ids)) + "\n")
    model = MiniDSA(cfg).float().eval()
    info = fp8io.load_model_dir(model, a.model)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(dev)
    with torch.no_grad():
        lg = model(torch.tensor([ids], device=dev), mode=a.mode).float()[0]
    rows = min(a.rows, len(ids))
    lg[len(ids) - rows:].contiguous().cpu().numpy().astype("<f4").tofile(a.out)
    print("loaded %s (%d tensors, %d fp8 weights); %d ids, rope %s; wrote rows %d..%d (%s)" % (
        info["file"], info["tensors"], info["fp8_weights"], len(ids), model.rope_src, len(ids) - rows, len(ids),
        a.mode))


if __name__ == "__main__":
    main()
