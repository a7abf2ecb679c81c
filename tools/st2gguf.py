#!/usr/bin/env python3
"""st2gguf.py: write an HF model directory (config.json + model.safetensors [+ tokenizer.json]) as one GGUF v3
file, the way llama.cpp's converter names and lays it out, in F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K.

Python 3 standard library only (struct, json, array). Meant for the tiny test models in tests/fixtures; a
real conversion of a large model would take hours in pure Python.

    python3 tools/st2gguf.py MODEL_DIR OUT.gguf [--type q8_0] [--tokenizer tokenizer.json]
    python3 tools/st2gguf.py --vocab-only tokenizer.json OUT.gguf

Format references (read, not copied): ggml docs/gguf.md (file layout, metadata types, alignment),
gguf-py constants (key and tensor names), the k-quants description in ggml PR #1684 (block layouts).
The quantizers below are our own, written for the error bounds tests/test_gguf.c checks:
  Q8_0  blocks of 32: f16 d >= max|x|/127 (rounded up), q = round(x/d)             |err| <= d/2
  Q4_0  blocks of 32: f16 d >= max|x|/7, q = round(x/d) + 8 in 1..15               |err| <= d/2
  Q4_K  256 = 8 x 32: per sub-block range r = max - min(0, min), offset m = -min(0, min); f16 d >= max(r/15)/63,
        dmin >= max(m)/63; 6-bit sc = ceil(r/15/d), mq = round(m/dmin); q = clamp(round((x + dmin mq)/(d sc)), 0, 15)
        |err| <= max(d sc/2, dmin/2)
  Q5_K  as Q4_K with 31 levels (a fifth bit per quant)
  Q6_K  256 = 16 x 16: f16 d >= max(amax/31)/127, int8 sc = ceil(amax/31/d), q = round(x/(d sc)) in -31..31
        |err| <= d sc/2
1-D tensors (norms, biases) stay F32, as llama.cpp keeps them; a tensor whose rows are not a multiple of the
block falls back to Q8_0 (K-quants) or F16.
"""
import argparse
import array
import json
import math
import os
import struct
import sys

GGML = {'f32': 0, 'f16': 1, 'bf16': 30, 'q4_0': 2, 'q8_0': 8, 'q4_k': 12, 'q5_k': 13, 'q6_k': 14}
BLOCK = {'f32': 1, 'f16': 1, 'bf16': 1, 'q4_0': 32, 'q8_0': 32, 'q4_k': 256, 'q5_k': 256, 'q6_k': 256}
ALIGN = 32

# ------------------------------------------------------------------------------------------ safetensors


def e4m3_table():
    t = []
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        e, m = (b >> 3) & 15, b & 7
        if e == 15 and m == 7:
            t.append(float('nan'))
        elif e == 0:
            t.append(s * m / 8.0 * 2.0 ** -6)
        else:
            t.append(s * (1 + m / 8.0) * 2.0 ** (e - 7))
    return t


def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in hdr.items():
        if name == '__metadata__':
            continue
        a, b = info['data_offsets']
        raw = data[a:b]
        dt = info['dtype']
        if dt == 'F32':
            v = array.array('f', raw)
        elif dt == 'F16':
            v = array.array('f', [x[0] for x in struct.iter_unpack('<e', raw)])
        elif dt == 'BF16':
            v = array.array('f', array.array('I', [x << 16 for x in array.array('H', raw)]).tobytes())
        elif dt == 'F8_E4M3':
            t = e4m3_table()
            v = array.array('f', [t[x] for x in raw])
        else:
            raise SystemExit(f'{path}: tensor {name} has dtype {dt}, not a float weight')
        out[name] = (list(info['shape']), v)
    # FP8 block scales: weight = fp8 * scale_inv per 128x128 block
    for name in [k for k in out if k + '_scale_inv' in out]:
        shape, w = out[name]
        sshape, s = out.pop(name + '_scale_inv')
        rows, cols = shape
        bs = 128
        nb = sshape[1]
        w = array.array('f', [w[r * cols + c] * s[(r // bs) * nb + c // bs] for r in range(rows) for c in range(cols)])
        out[name] = (shape, w)
    return out


# ------------------------------------------------------------------------------------------ numbers


def f16(x):
    return struct.unpack('<e', struct.pack('<e', x))[0]


def f16_up(x):
    """Smallest f16 value >= x (x >= 0)."""
    v = f16(x)
    if v < x:
        bits = struct.unpack('<H', struct.pack('<e', v))[0] + 1
        v = struct.unpack('<e', struct.pack('<H', bits))[0]
    return v


def rnd(x):
    return int(math.floor(x + 0.5))


def clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def q8_0(x):
    out = bytearray()
    for b in range(0, len(x), 32):
        blk = x[b:b + 32]
        amax = max(abs(v) for v in blk)
        d = f16_up(amax / 127) if amax > 0 else 0.0
        out += struct.pack('<e', d)
        out += struct.pack('32b', *[clamp(rnd(v / d), -127, 127) if d else 0 for v in blk])
    return bytes(out)


def q4_0(x):
    out = bytearray()
    for b in range(0, len(x), 32):
        blk = x[b:b + 32]
        amax = max(abs(v) for v in blk)
        d = f16_up(amax / 7) if amax > 0 else 0.0
        q = [clamp(rnd(v / d) + 8, 1, 15) if d else 8 for v in blk]
        out += struct.pack('<e', d)
        out += bytes(q[i] | (q[i + 16] << 4) for i in range(16))
    return bytes(out)


def kq_scales(x, levels):
    """Q4_K/Q5_K sub-block parameters of one 256 block: d, dmin, sc[8], mq[8], q[256]."""
    subs = [x[32 * j:32 * j + 32] for j in range(8)]
    mins = [min(0.0, min(s)) for s in subs]
    scale = [(max(s) - mn) / levels for s, mn in zip(subs, mins)]
    m = [-mn for mn in mins]
    d = f16_up(max(scale) / 63) if max(scale) > 0 else 0.0
    dmin = f16_up(max(m) / 63) if max(m) > 0 else 0.0
    sc = [min(63, math.ceil(s / d)) if d else 0 for s in scale]
    mq = [min(63, rnd(v / dmin)) if dmin else 0 for v in m]
    q = []
    for j in range(8):
        s, o = d * sc[j], dmin * mq[j]
        q += [clamp(rnd((v + o) / s), 0, levels) if s else 0 for v in subs[j]]
    return d, dmin, sc, mq, q


def pack_scales(sc, mq):
    s = [0] * 12
    for j in range(4):
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6)
        s[j + 4] = mq[j] | ((mq[j + 4] >> 4) << 6)
        s[j + 8] = (sc[j + 4] & 15) | ((mq[j + 4] & 15) << 4)
    return bytes(s)


def q4_k(x):
    out = bytearray()
    for b in range(0, len(x), 256):
        d, dmin, sc, mq, q = kq_scales(x[b:b + 256], 15)
        out += struct.pack('<ee', d, dmin) + pack_scales(sc, mq)
        out += bytes(q[64 * c + l] | (q[64 * c + 32 + l] << 4) for c in range(4) for l in range(32))
    return bytes(out)


def q5_k(x):
    out = bytearray()
    for b in range(0, len(x), 256):
        d, dmin, sc, mq, q = kq_scales(x[b:b + 256], 31)
        qh = [0] * 32
        for c in range(4):
            for l in range(32):
                qh[l] |= ((q[64 * c + l] >> 4) << (2 * c)) | ((q[64 * c + 32 + l] >> 4) << (2 * c + 1))
        out += struct.pack('<ee', d, dmin) + pack_scales(sc, mq) + bytes(qh)
        out += bytes((q[64 * c + l] & 15) | ((q[64 * c + 32 + l] & 15) << 4) for c in range(4) for l in range(32))
    return bytes(out)


def q6_k(x):
    out = bytearray()
    for b in range(0, len(x), 256):
        blk = x[b:b + 256]
        scale = [max(abs(v) for v in blk[16 * g:16 * g + 16]) / 31 for g in range(16)]
        d = f16_up(max(scale) / 127) if max(scale) > 0 else 0.0
        sc = [min(127, math.ceil(s / d)) if d else 0 for s in scale]
        u = []
        for g in range(16):
            s = d * sc[g]
            u += [clamp(rnd(v / s), -32, 31) + 32 if s else 32 for v in blk[16 * g:16 * g + 16]]
        ql, qh = [0] * 128, [0] * 64
        for h in range(2):
            U = u[128 * h:128 * h + 128]
            for l in range(32):
                ql[64 * h + l] = (U[l] & 15) | ((U[l + 64] & 15) << 4)
                ql[64 * h + 32 + l] = (U[l + 32] & 15) | ((U[l + 96] & 15) << 4)
                qh[32 * h + l] = (U[l] >> 4) | ((U[l + 32] >> 4) << 2) | ((U[l + 64] >> 4) << 4) | ((U[l + 96] >> 4) << 6)
        out += bytes(ql) + bytes(qh) + struct.pack('16b', *sc) + struct.pack('<e', d)
    return bytes(out)


QUANT = {'q8_0': q8_0, 'q4_0': q4_0, 'q4_k': q4_k, 'q5_k': q5_k, 'q6_k': q6_k}


def encode(values, shape, want):
    """Bytes and ggml type name of a tensor (HF shape, outermost first) stored as `want`."""
    typ = want
    if len(shape) == 1:
        typ = 'f32'
    elif shape[-1] % BLOCK[typ]:
        typ = 'q8_0' if typ in ('q4_k', 'q5_k', 'q6_k') and shape[-1] % 32 == 0 else 'f16'
    if typ == 'f32':
        return array.array('f', values).tobytes(), typ
    if typ == 'f16':
        return struct.pack(f'<{len(values)}e', *values), typ
    if typ == 'bf16':  # the top half of the f32 bits, rounded to nearest even
        bits = array.array('I', array.array('f', values).tobytes())
        return array.array('H', [((b + 0x7fff + ((b >> 16) & 1)) >> 16) & 0xffff for b in bits]).tobytes(), typ
    return QUANT[typ](list(values)), typ


# ------------------------------------------------------------------------------------------ GGUF writer

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)


def gstr(s):
    b = s.encode('utf-8') if isinstance(s, str) else s
    return struct.pack('<Q', len(b)) + b


def gval(t, v):
    fmt = {T_U8: '<B', T_I8: '<b', T_U16: '<H', T_I16: '<h', T_U32: '<I', T_I32: '<i', T_F32: '<f', T_BOOL: '<?',
           T_U64: '<Q', T_I64: '<q', T_F64: '<d'}
    if t == T_STR:
        return gstr(v)
    return struct.pack(fmt[t], v)


def write_gguf(path, kvs, tensors):
    """kvs: list of (key, type, value) with type (T_ARR, elem_type) for arrays; tensors: (name, ne, ggml type, bytes)."""
    out = bytearray(b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kvs)))
    for k, t, v in kvs:
        out += gstr(k)
        if isinstance(t, tuple):
            out += struct.pack('<IIQ', T_ARR, t[1], len(v))
            for x in v:
                out += gval(t[1], x)
        else:
            out += struct.pack('<I', t) + gval(t, v)
    off = 0
    offs = []
    for name, ne, typ, data in tensors:
        offs.append(off)
        off += len(data)
        off += (-off) % ALIGN
    for (name, ne, typ, data), o in zip(tensors, offs):
        out += gstr(name) + struct.pack('<I', len(ne)) + struct.pack(f'<{len(ne)}Q', *ne)
        out += struct.pack('<IQ', GGML[typ], o)
    out += b'\0' * ((-len(out)) % ALIGN)
    base = len(out)
    for (name, ne, typ, data), o in zip(tensors, offs):
        out += b'\0' * (base + o - len(out))
        out += data
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(out)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ tokenizer

LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
             "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
QWEN2_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
            "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def pre_name(pt):
    if pt is None:
        return None
    if pt.get('type') == 'ByteLevel' and pt.get('use_regex', True):
        return 'gpt-2'
    if pt.get('type') == 'Sequence':
        regs = [p.get('pattern', {}).get('Regex') for p in pt['pretokenizers'] if p.get('type') == 'Split']
        if regs == [LLAMA3_RE]:
            return 'llama-bpe'
        if regs == [QWEN2_RE]:
            return 'qwen2'
        if len(regs) == 3 and regs[0] == '\\p{N}{1,3}':
            return 'deepseek-v3'
    raise SystemExit(f'pre-tokenizer {json.dumps(pt)[:200]} has no GGUF name known to this tool')


def tokenizer_kvs(path, cfg):
    tj = json.load(open(path, encoding='utf-8'))
    tc = {}
    tcp = os.path.join(os.path.dirname(path), 'tokenizer_config.json')
    if os.path.exists(tcp):
        tc = json.load(open(tcp, encoding='utf-8'))
    model = tj['model']
    vocab = dict(model['vocab'])
    added = {a['id']: a for a in tj.get('added_tokens', [])}
    for i, a in added.items():
        vocab.setdefault(a['content'], i)
    n = max(max(vocab.values()), cfg.get('vocab_size', 0) - 1) + 1
    toks = [f'[PAD{i}]' for i in range(n)]
    for t, i in vocab.items():
        toks[i] = t
    types = [1] * n
    spm = bool(model.get('byte_fallback'))
    merges = [m if isinstance(m, str) else ' '.join(m) for m in model.get('merges', [])]
    for i in range(n):
        if i in added:
            types[i] = 3 if added[i].get('special') else 4
        elif spm and len(toks[i]) == 6 and toks[i].startswith('<0x') and toks[i].endswith('>'):
            types[i] = 6
        elif toks[i] == f'[PAD{i}]':
            types[i] = 5
    if spm and model.get('unk_token') in vocab:
        types[vocab[model['unk_token']]] = 2
    kvs = [('tokenizer.ggml.model', T_STR, 'llama' if spm else 'gpt2'), ('tokenizer.ggml.tokens', (T_ARR, T_STR), toks),
           ('tokenizer.ggml.token_type', (T_ARR, T_I32), types)]
    if spm:
        rank = {}
        for r, m in enumerate(merges):
            a, b = m.split(' ')
            rank.setdefault(a + b, r)
        # SentencePiece scores: a piece made by an earlier merge scores higher; pieces no merge makes score 0
        kvs.append(('tokenizer.ggml.scores', (T_ARR, T_F32), [-float(rank[t]) if t in rank else 0.0 for t in toks]))
        norm = tj.get('normalizer') or {}
        pre = tj.get('pre_tokenizer') or {}
        prefix = 'Prepend' in json.dumps(norm) or (pre.get('type') == 'Metaspace' and pre.get('prepend_scheme') != 'never')
        kvs.append(('tokenizer.ggml.add_space_prefix', T_BOOL, prefix))
        if model.get('unk_token') in vocab:
            kvs.append(('tokenizer.ggml.unknown_token_id', T_U32, vocab[model['unk_token']]))
    else:
        kvs.append(('tokenizer.ggml.pre', T_STR, pre_name(tj.get('pre_tokenizer'))))
        kvs.append(('tokenizer.ggml.merges', (T_ARR, T_STR), merges))
    # BOS/EOS: tokenizer_config.json names, else the template's first special / config.json ids
    def tok_name(v):
        return v.get('content') if isinstance(v, dict) else v
    bos, eos = tok_name(tc.get('bos_token')), tok_name(tc.get('eos_token'))
    pp = tj.get('post_processor') or {}
    prefix_ids = []
    if pp.get('type') == 'TemplateProcessing':
        for it in pp.get('single', []):
            if 'Sequence' in it:
                break
            prefix_ids += pp['special_tokens'][it['SpecialToken']['id']]['ids']
    bos_id = vocab.get(bos) if bos else (prefix_ids[0] if prefix_ids else None)
    eos_id = vocab.get(eos) if eos else cfg.get('eos_token_id')
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    if bos_id is not None:
        kvs.append(('tokenizer.ggml.bos_token_id', T_U32, bos_id))
    if eos_id is not None:
        kvs.append(('tokenizer.ggml.eos_token_id', T_U32, eos_id))
    add_bos = bool(prefix_ids) if pp.get('type') == 'TemplateProcessing' else bool(tc.get('add_bos_token', bos_id is not None))
    kvs.append(('tokenizer.ggml.add_bos_token', T_BOOL, add_bos))
    kvs.append(('tokenizer.ggml.add_eos_token', T_BOOL, bool(tc.get('add_eos_token', False))))
    return kvs


# ------------------------------------------------------------------------------------------ model


def permute(w, rows, cols, n_head):
    """llama.cpp's q/k row order for llama: within each head, the two rotary halves are interleaved."""
    hd = rows // n_head
    out = array.array('f', bytes(4 * rows * cols))
    for h in range(n_head):
        for s in range(2):
            for j in range(hd // 2):
                src = (h * hd + s * (hd // 2) + j) * cols
                dst = (h * hd + 2 * j + s) * cols
                out[dst:dst + cols] = w[src:src + cols]
    return out


def llama3_factors(rp, dim, theta):
    factor, lo, hi, old = rp['factor'], rp.get('low_freq_factor', 1.0), rp.get('high_freq_factor', 4.0), rp['original_max_position_embeddings']
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / (theta ** (i / dim))
        wl = 2 * math.pi / freq
        if wl < old / hi:
            out.append(1.0)
        elif wl > old / lo:
            out.append(factor)
        else:
            smooth = (old / wl - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


def convert(model_dir, out_path, want, tok_path):
    cfg = json.load(open(os.path.join(model_dir, 'config.json')))
    st = read_safetensors(os.path.join(model_dir, 'model.safetensors'))
    hf_arch = (cfg.get('architectures') or [''])[0]
    arch = {'LlamaForCausalLM': 'llama', 'Qwen2ForCausalLM': 'qwen2', 'Qwen3ForCausalLM': 'qwen3',
            'DeepseekV3ForCausalLM': 'deepseek2', 'DeepseekV32ForCausalLM': 'deepseek2'}.get(hf_arch)
    if not arch:
        raise SystemExit(f'{model_dir}: architecture {hf_arch!r} is not supported')
    ds = arch == 'deepseek2'
    A = arch + '.'
    H, nh = cfg['hidden_size'], cfg['num_attention_heads']
    nkv = cfg.get('num_key_value_heads', nh)
    hd = cfg.get('head_dim') or H // nh
    rp = cfg.get('rope_parameters') or cfg.get('rope_scaling') or {}
    theta = cfg.get('rope_theta', rp.get('rope_theta', 10000.0))
    rtype = rp.get('rope_type', rp.get('type', 'default'))
    kvs = [('general.architecture', T_STR, arch), ('general.name', T_STR, os.path.basename(os.path.abspath(model_dir))),
           ('general.alignment', T_U32, ALIGN),
           (A + 'vocab_size', T_U32, cfg['vocab_size']),
           (A + 'context_length', T_U32, cfg.get('max_position_embeddings', 4096)),
           (A + 'embedding_length', T_U32, H), (A + 'feed_forward_length', T_U32, cfg['intermediate_size']),
           (A + 'block_count', T_U32, cfg['num_hidden_layers']), (A + 'attention.head_count', T_U32, nh),
           (A + 'attention.head_count_kv', T_U32, nkv),
           (A + 'attention.layer_norm_rms_epsilon', T_F32, cfg.get('rms_norm_eps', 1e-6)),
           (A + 'rope.freq_base', T_F32, theta)]
    if not ds:
        kvs += [(A + 'rope.dimension_count', T_U32, hd), (A + 'attention.key_length', T_U32, hd),
                (A + 'attention.value_length', T_U32, hd)]
    if rtype == 'linear':
        kvs += [(A + 'rope.scaling.type', T_STR, 'linear'), (A + 'rope.scaling.factor', T_F32, rp['factor'])]
    elif rtype == 'yarn':
        kvs += [(A + 'rope.scaling.type', T_STR, 'yarn'), (A + 'rope.scaling.factor', T_F32, rp['factor']),
                (A + 'rope.scaling.original_context_length', T_U32, rp['original_max_position_embeddings']),
                (A + 'rope.scaling.yarn_beta_fast', T_F32, rp.get('beta_fast', 32.0)),
                (A + 'rope.scaling.yarn_beta_slow', T_F32, rp.get('beta_slow', 1.0))]
        if rp.get('mscale_all_dim'):
            if rp.get('mscale', rp['mscale_all_dim']) != rp['mscale_all_dim']:
                raise SystemExit('GGUF stores one YaRN multiplier: mscale must equal mscale_all_dim')
            kvs.append((A + 'rope.scaling.yarn_log_multiplier', T_F32, 0.1 * rp['mscale_all_dim']))
    elif rtype not in ('default', 'llama3'):
        raise SystemExit(f'rope type {rtype} is not supported')
    if ds:
        dn, dr, dv, kvr = cfg['qk_nope_head_dim'], cfg['qk_rope_head_dim'], cfg['v_head_dim'], cfg['kv_lora_rank']
        kvs += [(A + 'attention.q_lora_rank', T_U32, cfg.get('q_lora_rank') or 0),
                (A + 'attention.kv_lora_rank', T_U32, kvr),
                (A + 'attention.key_length', T_U32, kvr + dr), (A + 'attention.value_length', T_U32, kvr),
                (A + 'attention.key_length_mla', T_U32, dn + dr), (A + 'attention.value_length_mla', T_U32, dv),
                (A + 'rope.dimension_count', T_U32, dr),
                (A + 'leading_dense_block_count', T_U32, cfg.get('first_k_dense_replace', 0)),
                (A + 'expert_feed_forward_length', T_U32, cfg.get('moe_intermediate_size', 0)),
                (A + 'expert_count', T_U32, cfg.get('n_routed_experts', 0)),
                (A + 'expert_shared_count', T_U32, cfg.get('n_shared_experts', 0)),
                (A + 'expert_used_count', T_U32, cfg.get('num_experts_per_tok', 0)),
                (A + 'expert_group_count', T_U32, cfg.get('n_group', 1)),
                (A + 'expert_group_used_count', T_U32, cfg.get('topk_group', 1)),
                (A + 'expert_weights_scale', T_F32, cfg.get('routed_scaling_factor', 1.0)),
                (A + 'expert_weights_norm', T_BOOL, bool(cfg.get('norm_topk_prob', False))),
                (A + 'expert_gating_func', T_U32, 1 if cfg.get('scoring_func') == 'softmax' else 2)]
        if cfg.get('moe_layer_freq', 1) != 1:
            raise SystemExit('GGUF has no moe_layer_freq; only 1 is supported')
        if hf_arch == 'DeepseekV32ForCausalLM':
            kvs += [(A + 'attention.indexer.head_count', T_U32, cfg['index_n_heads']),
                    (A + 'attention.indexer.key_length', T_U32, cfg['index_head_dim']),
                    (A + 'attention.indexer.top_k', T_U32, cfg['index_topk'])]
    if tok_path:
        kvs += tokenizer_kvs(tok_path, cfg)
    else:
        for k in ('bos_token_id', 'eos_token_id'):
            if isinstance(cfg.get(k), int):
                kvs.append(('tokenizer.ggml.' + k, T_U32, cfg[k]))

    tensors = []

    def add(name, shape, values):
        data, typ = encode(values, shape, want)
        tensors.append((name, list(reversed(shape)), typ, data))

    def take(name):
        if name not in st:
            raise SystemExit(f'{model_dir}: tensor {name} missing')
        return st.pop(name)

    if rtype == 'llama3':
        add('rope_freqs.weight', [hd // 2], llama3_factors(rp, hd, theta))
    s, v = take('model.embed_tokens.weight')
    add('token_embd.weight', s, v)
    s, v = take('model.norm.weight')
    add('output_norm.weight', s, v)
    if 'lm_head.weight' in st:
        s, v = take('lm_head.weight')
        add('output.weight', s, v)
    simple = {'input_layernorm.weight': 'attn_norm.weight', 'post_attention_layernorm.weight': 'ffn_norm.weight',
              'self_attn.v_proj.weight': 'attn_v.weight', 'self_attn.v_proj.bias': 'attn_v.bias',
              'self_attn.o_proj.weight': 'attn_output.weight', 'self_attn.q_norm.weight': 'attn_q_norm.weight',
              'self_attn.k_norm.weight': 'attn_k_norm.weight', 'mlp.gate_proj.weight': 'ffn_gate.weight',
              'mlp.up_proj.weight': 'ffn_up.weight', 'mlp.down_proj.weight': 'ffn_down.weight',
              'self_attn.q_a_proj.weight': 'attn_q_a.weight', 'self_attn.q_a_layernorm.weight': 'attn_q_a_norm.weight',
              'self_attn.q_b_proj.weight': 'attn_q_b.weight',
              'self_attn.kv_a_proj_with_mqa.weight': 'attn_kv_a_mqa.weight',
              'self_attn.kv_a_layernorm.weight': 'attn_kv_a_norm.weight',
              'self_attn.indexer.wq_b.weight': 'indexer.attn_q_b.weight',
              'self_attn.indexer.wk.weight': 'indexer.attn_k.weight',
              'self_attn.indexer.k_norm.weight': 'indexer.k_norm.weight',
              'self_attn.indexer.k_norm.bias': 'indexer.k_norm.bias',
              'self_attn.indexer.weights_proj.weight': 'indexer.proj.weight',
              'mlp.gate.weight': 'ffn_gate_inp.weight', 'mlp.gate.e_score_correction_bias': 'exp_probs_b.bias',
              'mlp.shared_experts.gate_proj.weight': 'ffn_gate_shexp.weight',
              'mlp.shared_experts.up_proj.weight': 'ffn_up_shexp.weight',
              'mlp.shared_experts.down_proj.weight': 'ffn_down_shexp.weight'}
    for il in range(cfg['num_hidden_layers']):
        p = f'model.layers.{il}.'
        for qk, heads in (('q', nh), ('k', nkv)):
            for kind in ('weight', 'bias'):
                n = f'{p}self_attn.{qk}_proj.{kind}'
                if n in st and not ds:
                    s, v = take(n)
                    if arch == 'llama':
                        v = permute(v, s[0], s[1] if len(s) > 1 else 1, heads)
                    add(f'blk.{il}.attn_{qk}.{kind}', s, v)
        if ds and p + 'self_attn.q_proj.weight' in st:
            s, v = take(p + 'self_attn.q_proj.weight')
            add(f'blk.{il}.attn_q.weight', s, v)
        if ds:  # kv_b -> k_b [nh, kvr, dn] (per head transposed) and v_b [nh, dv, kvr]
            s, v = take(p + 'self_attn.kv_b_proj.weight')
            kb, vb = [], []
            for h in range(nh):
                base = h * (dn + dv)
                kb += [v[(base + i) * kvr + r] for r in range(kvr) for i in range(dn)]
                vb += v[(base + dn) * kvr:(base + dn + dv) * kvr]
            add(f'blk.{il}.attn_k_b.weight', [nh, kvr, dn], kb)
            add(f'blk.{il}.attn_v_b.weight', [nh, dv, kvr], vb)
        for hfn, gn in simple.items():
            if p + hfn in st:
                s, v = take(p + hfn)
                add(f'blk.{il}.{gn}', s, v)
        E = cfg.get('n_routed_experts') or 0
        if ds and p + 'mlp.experts.0.gate_proj.weight' in st:
            for hfn, gn in (('gate_proj', 'ffn_gate_exps'), ('up_proj', 'ffn_up_exps'), ('down_proj', 'ffn_down_exps')):
                parts = [take(f'{p}mlp.experts.{e}.{hfn}.weight') for e in range(E)]
                vals = array.array('f')
                for _, v in parts:
                    vals += v
                add(f'blk.{il}.{gn}.weight', [E] + parts[0][0], vals)
    if st:
        raise SystemExit(f'{model_dir}: tensors not converted: {sorted(st)[:8]}')
    write_gguf(out_path, kvs, tensors)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('model_dir')
    ap.add_argument('out')
    ap.add_argument('--type', default='f32', choices=sorted(GGML))
    ap.add_argument('--tokenizer', help='tokenizer.json to embed (default: MODEL_DIR/tokenizer.json if present)')
    ap.add_argument('--vocab-only', action='store_true',
                    help='MODEL_DIR is a tokenizer.json: write only its vocabulary (like llama.cpp ggml-vocab-*.gguf)')
    a = ap.parse_args()
    if a.vocab_only:
        kvs = [('general.architecture', T_STR, 'llama'), ('general.name', T_STR, 'vocab'),
               ('general.alignment', T_U32, ALIGN)] + tokenizer_kvs(a.model_dir, {})
        write_gguf(a.out, kvs, [])
        return 0
    tok = a.tokenizer or (os.path.join(a.model_dir, 'tokenizer.json')
                          if os.path.exists(os.path.join(a.model_dir, 'tokenizer.json')) else None)
    convert(a.model_dir, a.out, a.type, tok)


if __name__ == '__main__':
    sys.exit(main())
