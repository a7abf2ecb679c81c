"""Read a shipped sparsedoc-mini model (released DeepSeek-V3.2 FP8 safetensors) back into the
PyTorch training model (tools/train/model.py), so training can continue from the shipped weights.

The safetensors file is parsed here (8-byte header length, JSON header, raw little-endian data), so
this works with any PyTorch (also one without float8 dtypes or the safetensors package, e.g. a CPU
check on the development machine). Storage kinds (MODEL.md): FP8 e4m3 + `weight_scale_inv` (F32,
one scale per 128x128 block, partial edge blocks) for the 2-D linears, BF16 and F32 for the rest.
Dequantized weight = fp8 value * scale of its block; that is exactly what the engine computes.
"""
import json
import struct

import torch

_DT = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2),
       "I64": (torch.int64, 8), "I32": (torch.int32, 4)}


def e4m3_table():
    """float32 [256]: value of each e4m3fn byte (bias 7, subnormals, 0x7f/0xff NaN, no inf)."""
    t = torch.empty(256, dtype=torch.float32)
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        e = (b >> 3) & 0xF
        m = b & 0x7
        if e == 0xF and m == 0x7:
            v = float("nan")
        elif e == 0:
            v = s * (m / 8.0) * 2.0 ** -6
        else:
            v = s * (1.0 + m / 8.0) * 2.0 ** (e - 7)
        t[b] = v
    return t


def read_safetensors(path):
    """{name: float32 tensor (FP8 bytes decoded to their e4m3 values, not yet scaled)}, metadata."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    hdr = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = hdr.pop("__metadata__", {})
    base = 8 + n
    lut = None
    out = {}
    for name, info in hdr.items():
        a, b = info["data_offsets"]
        buf = bytearray(raw[base + a:base + b])
        shape = info["shape"]
        dt = info["dtype"]
        if dt == "F8_E4M3":
            if lut is None:
                lut = e4m3_table()
            u = torch.frombuffer(buf, dtype=torch.uint8).long() if len(buf) else torch.zeros(0, dtype=torch.long)
            t = lut[u]
        elif dt in _DT:
            tdt, _ = _DT[dt]
            t = torch.frombuffer(buf, dtype=tdt).float() if len(buf) else torch.zeros(0)
        else:
            raise ValueError("%s: unsupported dtype %s in %s" % (name, dt, path))
        out[name] = t.reshape(shape).clone()
    return out, meta


def dequantize(sd, blk=128):
    """Apply `X_scale_inv` block scales to their weights `X`; returns {name: float32} without scales."""
    out = {}
    for k, v in sd.items():
        if k.endswith("_scale_inv"):
            continue
        s = sd.get(k + "_scale_inv")
        if s is not None:
            o, i = v.shape
            if s.shape != ((o + blk - 1) // blk, (i + blk - 1) // blk):
                raise ValueError("%s: scale shape %s does not fit weight %s" % (k, tuple(s.shape), (o, i)))
            full = s.repeat_interleave(blk, 0).repeat_interleave(blk, 1)[:o, :i]
            v = v * full
        out[k] = v
    return out


def released_to_model(model, sd):
    """Copy a released-layout state dict (one gate/up/down per expert) into the training model's
    fused-expert layout. Returns (missing model keys, unused file keys)."""
    own = model.state_dict()
    new = {}
    used = set()
    for k in own:
        if k.endswith(".mlp.experts.gate_up_proj"):
            pre = k[: -len("gate_up_proj")]
            E = own[k].shape[0]
            names = [("%s%d.gate_proj.weight" % (pre, e), "%s%d.up_proj.weight" % (pre, e)) for e in range(E)]
            if all(g in sd and u in sd for g, u in names):
                new[k] = torch.stack([torch.cat([sd[g], sd[u]], 0) for g, u in names])
                used.update(x for p in names for x in p)
        elif k.endswith(".mlp.experts.down_proj"):
            pre = k[: -len("down_proj")]
            E = own[k].shape[0]
            names = ["%s%d.down_proj.weight" % (pre, e) for e in range(E)]
            if all(n in sd for n in names):
                new[k] = torch.stack([sd[n] for n in names])
                used.update(names)
        elif k in sd:
            new[k] = sd[k]
            used.add(k)
    missing = [k for k in own if k not in new]
    unused = [k for k in sd if k not in used]
    with torch.no_grad():
        for k, v in new.items():
            if tuple(own[k].shape) != tuple(v.shape):
                raise ValueError("%s: shape %s in file, %s in model" % (k, tuple(v.shape), tuple(own[k].shape)))
            own[k].copy_(v.to(own[k].dtype))
    return missing, unused


def load_model_dir(model, path):
    """Load DIR/model.safetensors (or a .safetensors file) into `model`; raises on missing weights."""
    f = path if path.endswith(".safetensors") else path.rstrip("/") + "/model.safetensors"
    sd, _ = read_safetensors(f)
    n_fp8 = sum(1 for k in sd if k.endswith("_scale_inv"))
    missing, unused = released_to_model(model, dequantize(sd))
    if missing or unused:
        raise ValueError("%s: missing in file %s; not used %s" % (f, missing[:8], unused[:8]))
    return {"file": f, "tensors": len(sd), "fp8_weights": n_fp8}
