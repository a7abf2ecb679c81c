#!/usr/bin/env python3
"""Linear weight interpolation of two sparsedoc-mini checkpoints of the same architecture, written
back in the shipped FP8 block format (CPU, needs only torch; any version).

    python3 tools/train/blend.py --a OLD_DIR --b NEW_DIR --alpha 0.5 --out DIR

Every tensor of the result is (1 - alpha) * A + alpha * B on the dequantized float32 values, then
stored like the inputs: FP8 e4m3 with a per-128x128-block `weight_scale_inv` (amax / 448, partial
edge blocks; round to nearest, ties to even, as torch's float8 cast) for the tensors that are FP8
in A, BF16 / F32 for the others. The other files of A (config, tokenizer) are copied. Used to keep the
short-context quality of the shipped model while adding the long-context training of a continued run
(MODEL.md, Recipe).
"""
import argparse
import json
import os
import shutil
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fp8io  # noqa: E402


def header(path):
    raw = open(path, "rb").read(8)
    (n,) = struct.unpack("<Q", raw)
    with open(path, "rb") as f:
        f.seek(8)
        return json.loads(f.read(n).decode("utf-8"))


def e4m3_encode(x):
    """float32 tensor (already scaled into [-448, 448]) -> uint8 e4m3fn bytes, nearest, ties to even."""
    lut = fp8io.e4m3_table()
    pos = lut[:127]  # bytes 0x00..0x7e: +0 .. +448, ascending
    a = x.abs().clamp(max=448.0).reshape(-1)
    hi = torch.searchsorted(pos, a).clamp(max=126)
    lo = (hi - 1).clamp(min=0)
    dlo = (a - pos[lo]).abs()
    dhi = (pos[hi] - a).abs()
    pick = torch.where(dlo < dhi, lo, torch.where(dhi < dlo, hi, torch.where(lo % 2 == 0, lo, hi)))
    b = pick.to(torch.int64)
    neg = (x.reshape(-1) < 0) & (b > 0)
    b = torch.where(neg, b | 0x80, b)
    return b.to(torch.uint8).reshape(x.shape)


def quant_block(w, blk=128):
    o, i = w.shape
    so, si = (o + blk - 1) // blk, (i + blk - 1) // blk
    pad = torch.zeros(so * blk, si * blk, dtype=torch.float32)
    pad[:o, :i] = w
    b = pad.view(so, blk, si, blk)
    amax = b.abs().amax(dim=3).amax(dim=1)
    scale = torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))
    q = e4m3_encode(b / scale[:, None, :, None]).view(so * blk, si * blk)[:o, :i].contiguous()
    return q, scale.float().contiguous()


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, safetensors dtype, shape, bytes) in file order."""
    hdr = {"__metadata__": metadata} if metadata else {}
    off = 0
    for name, dt, shape, data in tensors:
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(hdr, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, data in tensors:
            f.write(data)


def tobytes(t):
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().tobytes()
    return t.contiguous().numpy().tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="model dir (weight 1 - alpha); its config/tokenizer are copied")
    ap.add_argument("--b", required=True, help="model dir (weight alpha)")
    ap.add_argument("--alpha", type=float, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    fa, fb = (os.path.join(d, "model.safetensors") for d in (a.a, a.b))
    ha = header(fa)
    meta = ha.pop("__metadata__", {})
    sa, _ = fp8io.read_safetensors(fa)
    sb, _ = fp8io.read_safetensors(fb)
    if sorted(sa) != sorted(sb):
        raise SystemExit("blend: the two files hold different tensors")
    da, db = fp8io.dequantize(sa), fp8io.dequantize(sb)
    order = sorted(ha, key=lambda k: ha[k]["data_offsets"][0])
    out = []
    for k in order:
        if k.endswith("_scale_inv"):
            continue
        w = (1.0 - a.alpha) * da[k] + a.alpha * db[k]
        dt = ha[k]["dtype"]
        if dt == "F8_E4M3":
            q, s = quant_block(w)
            out.append((k, "F8_E4M3", q.shape, q.numpy().tobytes()))
            out.append((k + "_scale_inv", "F32", s.shape, tobytes(s)))
        elif dt == "BF16":
            out.append((k, "BF16", w.shape, tobytes(w.to(torch.bfloat16))))
        elif dt == "F32":
            out.append((k, "F32", w.shape, tobytes(w.float())))
        else:
            raise SystemExit("blend: %s has dtype %s" % (k, dt))
    # keep A's tensor order (weights followed by their scales as in A)
    rank = {k: i for i, k in enumerate(order)}
    out.sort(key=lambda t: rank[t[0]])
    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "model.safetensors"), out, meta)
    for fn in os.listdir(a.a):
        if fn != "model.safetensors" and not fn.endswith(".md"):
            shutil.copy(os.path.join(a.a, fn), os.path.join(a.out, fn))
    print("blend alpha %.3f: %d tensors -> %s (%d bytes)" % (a.alpha, len(out), a.out,
                                                          os.path.getsize(os.path.join(a.out, "model.safetensors"))))


if __name__ == "__main__":
    main()
