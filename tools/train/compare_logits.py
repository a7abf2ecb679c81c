#!/usr/bin/env python3
"""Compare the engine's logits (sparsedoc logits, all rows) with the PyTorch reference rows saved by
train.py (ref_logits.f32 = rows [n-300, n) of the reference prompt). Pure Python (struct).
    python3 tools/train/compare_logits.py ENGINE.f32 REF.f32 N_IDS VOCAB"""
import math
import struct
import sys

eng_path, ref_path, n, V = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
eng = open(eng_path, "rb").read()
ref = open(ref_path, "rb").read()
keep = len(ref) // (4 * V)
worst = (0.0, -1)
num = den = 0.0
argmax_same = 0
for r in range(keep):
    row = n - keep + r
    e = struct.unpack_from("<%df" % V, eng, row * V * 4)
    f = struct.unpack_from("<%df" % V, ref, r * V * 4)
    d2 = sum((a - b) ** 2 for a, b in zip(e, f))
    n2 = sum(b * b for b in f)
    num += d2
    den += n2
    rel = math.sqrt(d2 / n2)
    if rel > worst[0]:
        worst = (rel, row)
    argmax_same += max(range(V), key=e.__getitem__) == max(range(V), key=f.__getitem__)
print("rows %d..%d: overall rel L2 %.3e, worst row rel %.3e (row %d), argmax agree %d/%d" % (
    n - keep, n, math.sqrt(num / den), worst[0], worst[1], argmax_same, keep))
