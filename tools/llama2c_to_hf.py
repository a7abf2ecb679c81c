#!/usr/bin/env python3
# llama2c_to_hf.py: convert a Karpathy llama2.c checkpoint (v0 "legacy" format) and its tokenizer
# (tok*.bin) into a Hugging Face Llama directory: config.json, model.safetensors (F32),
# tokenizer.json (SentencePiece-style BPE with byte fallback), tokenizer_config.json, plus
# expected_ids.json: llama2.c's own encoding of a few texts (computed here with its algorithm)
# that the C tokenizer tests compare against. Pure Python 3 standard library.
import argparse
import array
import json
import os
import struct
import sys

SPACE = "\u2581"  # SentencePiece's "▁"


def read_checkpoint(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 28:
        sys.exit(f"{path}: too short for a llama2.c header")
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", data, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    if min(dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len) <= 0 or dim % n_heads or n_heads % n_kv:
        sys.exit(f"{path}: implausible header {dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len}")
    head = dim // n_heads
    floats = array.array("f")
    floats.frombytes(data[28:28 + ((len(data) - 28) // 4) * 4])
    if sys.byteorder != "little":
        floats.byteswap()
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(floats):
            sys.exit(f"{path}: truncated (wanted {n} floats at {pos}, file has {len(floats)})")
        out = floats[pos:pos + n]
        pos += n
        return out

    L = n_layers
    w = {}
    w["tok"] = take(vocab * dim)
    w["rms_att"] = take(L * dim)
    w["wq"] = take(L * dim * n_heads * head)
    w["wk"] = take(L * dim * n_kv * head)
    w["wv"] = take(L * dim * n_kv * head)
    w["wo"] = take(L * n_heads * head * dim)
    w["rms_ffn"] = take(L * dim)
    w["w1"] = take(L * dim * hidden)
    w["w2"] = take(L * hidden * dim)
    w["w3"] = take(L * dim * hidden)
    w["rms_final"] = take(dim)
    take(seq_len * head // 2)  # freq_cis_real (unused: RoPE is recomputed)
    take(seq_len * head // 2)  # freq_cis_imag
    w["cls"] = None if shared else take(vocab * dim)
    if pos != len(floats):
        sys.exit(f"{path}: {len(floats) - pos} trailing floats; not a v0 llama2.c checkpoint?")
    cfg = dict(dim=dim, hidden=hidden, n_layers=L, n_heads=n_heads, n_kv=n_kv, vocab=vocab, seq_len=seq_len,
               shared=shared, head=head)
    return cfg, w


def rope_interleaved_to_half(rows, n_heads, head, cols):
    # llama2.c rotates pairs (2j, 2j+1) of each head; HF Llama rotates (j, j + head/2) with the same
    # frequency index j. Row j of the HF head is llama2.c row 2j, row j + head/2 is row 2j + 1.
    out = array.array("f", bytes(4 * len(rows)))
    half = head // 2
    for h in range(n_heads):
        base = h * head
        for j in range(half):
            for i in (0, 1):
                src = (base + 2 * j + i) * cols
                dst = (base + i * half + j) * cols
                out[dst:dst + cols] = rows[src:src + cols]
    return out


def write_safetensors(path, tensors):
    # tensors: list of (name, shape, array('f'))
    header = {"__metadata__": {"format": "pt", "source": "llama2c_to_hf.py"}}
    off = 0
    for name, shape, data in tensors:
        n = 1
        for s in shape:
            n *= s
        if n != len(data):
            sys.exit(f"internal error: {name} shape {shape} vs {len(data)} floats")
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + 4 * n]}
        off += 4 * n
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for _, _, data in tensors:
            d = array.array("f", data)
            if sys.byteorder != "little":
                d.byteswap()
            f.write(d.tobytes())


def convert_model(cfg, w, out_dir):
    dim, hid, L, nh, nkv, V, hs = (cfg[k] for k in ("dim", "hidden", "n_layers", "n_heads", "n_kv", "vocab", "head"))
    t = [("model.embed_tokens.weight", (V, dim), w["tok"])]
    for l in range(L):
        def sl(key, n):
            return w[key][l * n:(l + 1) * n]
        p = f"model.layers.{l}."
        t.append((p + "input_layernorm.weight", (dim,), sl("rms_att", dim)))
        t.append((p + "self_attn.q_proj.weight", (nh * hs, dim),
                  rope_interleaved_to_half(sl("wq", nh * hs * dim), nh, hs, dim)))
        t.append((p + "self_attn.k_proj.weight", (nkv * hs, dim),
                  rope_interleaved_to_half(sl("wk", nkv * hs * dim), nkv, hs, dim)))
        t.append((p + "self_attn.v_proj.weight", (nkv * hs, dim), sl("wv", nkv * hs * dim)))
        t.append((p + "self_attn.o_proj.weight", (dim, nh * hs), sl("wo", nh * hs * dim)))
        t.append((p + "post_attention_layernorm.weight", (dim,), sl("rms_ffn", dim)))
        t.append((p + "mlp.gate_proj.weight", (hid, dim), sl("w1", hid * dim)))
        t.append((p + "mlp.down_proj.weight", (dim, hid), sl("w2", hid * dim)))
        t.append((p + "mlp.up_proj.weight", (hid, dim), sl("w3", hid * dim)))
    t.append(("model.norm.weight", (dim,), w["rms_final"]))
    if not cfg["shared"]:
        t.append(("lm_head.weight", (V, dim), w["cls"]))
    write_safetensors(os.path.join(out_dir, "model.safetensors"), t)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": dim,
        "intermediate_size": hid,
        "num_hidden_layers": L,
        "num_attention_heads": nh,
        "num_key_value_heads": nkv,
        "head_dim": hs,
        "vocab_size": V,
        "max_position_embeddings": cfg["seq_len"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": cfg["shared"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "attention_bias": False,
        "mlp_bias": False,
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def read_llama2c_tokenizer(path, n_vocab):
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    pos = 4
    pieces, scores = [], []
    for i in range(n_vocab):
        if pos + 8 > len(data):
            sys.exit(f"{path}: truncated at token {i}")
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        if n < 0 or n > max_len or pos + n > len(data):
            sys.exit(f"{path}: bad length {n} for token {i}")
        raw = data[pos:pos + n]
        pos += n
        pieces.append(raw)
        scores.append(score)
    if pos != len(data):
        sys.exit(f"{path}: {len(data) - pos} trailing bytes (vocab size mismatch?)")
    return pieces, scores


def llama2c_encode(text, raw_pieces, scores, bos=True):
    # llama2.c run.c encode(), restated: optional BOS; a dummy-prefix " " token when text is
    # non-empty; one token per UTF-8 character (bytes + 3 when the character is not a piece);
    # then repeatedly merge the adjacent pair whose concatenation is a piece with the highest
    # score (leftmost on ties) until no pair merges.
    lookup = {p: i for i, p in enumerate(raw_pieces)}
    ids = [1] if bos else []
    if not text:
        return ids
    toks = [lookup[b" "]]
    b = text.encode("utf-8")
    i = 0
    while i < len(b):
        c = b[i]
        n = 1 if c < 0x80 else 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4
        ch = b[i:i + n]
        if ch in lookup:
            toks.append(lookup[ch])
        else:
            toks.extend(x + 3 for x in ch)
        i += n
    while True:
        best, best_id, best_i = -1e10, -1, -1
        for k in range(len(toks) - 1):
            j = lookup.get(raw_pieces[toks[k]] + raw_pieces[toks[k + 1]])
            if j is not None and scores[j] > best:
                best, best_id, best_i = scores[j], j, k
        if best_i < 0:
            break
        toks[best_i:best_i + 2] = [best_id]
    return ids + toks


def convert_tokenizer(tok_path, n_vocab, out_dir, texts):
    raw, scores = read_llama2c_tokenizer(tok_path, n_vocab)
    pieces = []
    for i, r in enumerate(raw):
        if i == 1:
            pieces.append("<s>")  # llama2.c's export writes BOS/EOS as "\n<s>\n" / "\n</s>\n"
        elif i == 2:
            pieces.append("</s>")
        else:
            pieces.append(r.decode("utf-8").replace(" ", SPACE))
    if len(set(pieces)) != len(pieces):
        sys.exit(f"{tok_path}: duplicate pieces after restoring '{SPACE}'")
    vocab = {p: i for i, p in enumerate(pieces)}
    special = {0, 1, 2}
    is_byte = [p.startswith("<0x") and p.endswith(">") and len(p) == 6 for p in pieces]
    # SentencePiece BPE merges: (a, b) whenever a, b and a+b are all pieces; ranked by the score of
    # a+b (higher first), then by the id of a+b, then by the split position.
    merges = []
    for i, p in enumerate(pieces):
        if i in special or is_byte[i] or len(p) < 2:
            continue
        for k in range(1, len(p)):
            a, b = p[:k], p[k:]
            ia, ib = vocab.get(a), vocab.get(b)
            if ia is None or ib is None or ia in special or ib in special or is_byte[ia] or is_byte[ib]:
                continue
            merges.append((-scores[i], i, k, a, b))
    merges.sort()
    added = [{"id": i, "content": pieces[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in sorted(special)]
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for _, _, _, a, b in merges]},
    }
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    tc = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
          "add_bos_token": True, "add_eos_token": False, "legacy": True, "clean_up_tokenization_spaces": False,
          "model_max_length": 512}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
        f.write("\n")
    expected = [{"text": t, "ids_with_bos": llama2c_encode(t, raw, scores)} for t in texts]
    with open(os.path.join(out_dir, "expected_ids.json"), "w", encoding="utf-8") as f:
        json.dump({"note": "llama2.c run.c encode(text, bos=1, eos=0) computed by tools/llama2c_to_hf.py",
                   "cases": expected}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return len(merges)


# ---- optional self-check: forward passes in both RoPE conventions (float64, slow, tiny models only)

def _rows(flat, n_rows, n_cols):
    return [list(flat[r * n_cols:(r + 1) * n_cols]) for r in range(n_rows)]


def _matvec(rows, x):
    return [sum(map(float.__mul__, r, x)) for r in rows]


def _rmsnorm(x, w):
    ss = sum(v * v for v in x) / len(x) + 1e-5
    s = 1.0 / ss ** 0.5
    return [v * s * g for v, g in zip(x, w)]


def _forward_steps(cfg, layers, emb, norm_w, cls, n_steps, interleaved):
    import math
    dim, nh, nkv, hs = cfg["dim"], cfg["n_heads"], cfg["n_kv"], cfg["head"]
    kv_mul = nh // nkv
    kcache = [[] for _ in layers]
    vcache = [[] for _ in layers]
    token, out_tokens, all_logits = 1, [], []

    def rope(vec, n_heads_v, pos):
        for h in range(n_heads_v):
            b = h * hs
            for j in range(hs // 2):
                f = pos / (10000.0 ** (2 * j / hs))
                c, s_ = math.cos(f), math.sin(f)
                i0, i1 = (b + 2 * j, b + 2 * j + 1) if interleaved else (b + j, b + j + hs // 2)
                v0, v1 = vec[i0], vec[i1]
                vec[i0], vec[i1] = v0 * c - v1 * s_, v0 * s_ + v1 * c

    for pos in range(n_steps):
        x = list(emb[token])
        for li, L in enumerate(layers):
            xb = _rmsnorm(x, L["att_norm"])
            q, k, v = _matvec(L["q"], xb), _matvec(L["k"], xb), _matvec(L["v"], xb)
            rope(q, nh, pos)
            rope(k, nkv, pos)
            kcache[li].append(k)
            vcache[li].append(v)
            att_out = [0.0] * dim
            for h in range(nh):
                qh = q[h * hs:(h + 1) * hs]
                kh = (h // kv_mul) * hs
                sc = [sum(map(float.__mul__, qh, kk[kh:kh + hs])) / math.sqrt(hs) for kk in kcache[li]]
                m = max(sc)
                e = [math.exp(a - m) for a in sc]
                z = sum(e)
                for t, wgt in enumerate(e):
                    vv = vcache[li][t]
                    for d in range(hs):
                        att_out[h * hs + d] += wgt / z * vv[kh + d]
            o = _matvec(L["o"], att_out)
            x = [a + b for a, b in zip(x, o)]
            xb = _rmsnorm(x, L["ffn_norm"])
            g, u = _matvec(L["gate"], xb), _matvec(L["up"], xb)
            hb = [a / (1.0 + math.exp(-a)) * b for a, b in zip(g, u)]
            d_ = _matvec(L["down"], hb)
            x = [a + b for a, b in zip(x, d_)]
        x = _rmsnorm(x, norm_w)
        logits = _matvec(cls, x)
        all_logits.append(logits)
        token = max(range(len(logits)), key=lambda i: (logits[i], -i))
        out_tokens.append(token)
    return out_tokens, all_logits


def _load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    hdr = json.loads(data[8:8 + n])
    out = {}
    for name, meta in hdr.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        arr = array.array("f")
        arr.frombytes(data[8 + n + a:8 + n + b])
        if sys.byteorder != "little":
            arr.byteswap()
        out[name] = (meta["shape"], arr)
    return out


def verify(cfg, w, out_dir, n_steps, raw_pieces, expect_text):
    dim, hid, L, nh, nkv, V, hs = (cfg[k] for k in ("dim", "hidden", "n_layers", "n_heads", "n_kv", "vocab", "head"))
    # llama2.c layout and interleaved RoPE, straight from the checkpoint
    ref_layers = []
    for l in range(L):
        def sl(key, n):
            return w[key][l * n:(l + 1) * n]
        ref_layers.append(dict(att_norm=list(sl("rms_att", dim)), ffn_norm=list(sl("rms_ffn", dim)),
                               q=_rows(sl("wq", nh * hs * dim), nh * hs, dim), k=_rows(sl("wk", nkv * hs * dim), nkv * hs, dim),
                               v=_rows(sl("wv", nkv * hs * dim), nkv * hs, dim), o=_rows(sl("wo", nh * hs * dim), dim, nh * hs),
                               gate=_rows(sl("w1", hid * dim), hid, dim), down=_rows(sl("w2", hid * dim), dim, hid),
                               up=_rows(sl("w3", hid * dim), hid, dim)))
    emb = _rows(w["tok"], V, dim)
    cls = emb if cfg["shared"] else _rows(w["cls"], V, dim)
    ref_tokens, ref_logits = _forward_steps(cfg, ref_layers, emb, list(w["rms_final"]), cls, n_steps, True)
    # HF layout and half-split RoPE, from the written safetensors
    st = _load_safetensors(os.path.join(out_dir, "model.safetensors"))

    def m(name):
        shape, arr = st[name]
        return _rows(arr, shape[0], shape[1]) if len(shape) == 2 else list(arr)
    hf_layers = []
    for l in range(L):
        p = f"model.layers.{l}."
        hf_layers.append(dict(att_norm=m(p + "input_layernorm.weight"), ffn_norm=m(p + "post_attention_layernorm.weight"),
                              q=m(p + "self_attn.q_proj.weight"), k=m(p + "self_attn.k_proj.weight"),
                              v=m(p + "self_attn.v_proj.weight"), o=m(p + "self_attn.o_proj.weight"),
                              gate=m(p + "mlp.gate_proj.weight"), up=m(p + "mlp.up_proj.weight"),
                              down=m(p + "mlp.down_proj.weight")))
    hemb = m("model.embed_tokens.weight")
    hcls = hemb if "lm_head.weight" not in st else m("lm_head.weight")
    hf_tokens, hf_logits = _forward_steps(cfg, hf_layers, hemb, m("model.norm.weight"), hcls, n_steps, False)
    diff = max(abs(a - b) for la, lb in zip(ref_logits, hf_logits) for a, b in zip(la, lb))
    text = b""
    prev = 1
    for t in ref_tokens:
        piece = raw_pieces[t]
        if prev == 1 and piece.startswith(b" "):
            piece = piece[1:]
        if piece.startswith(b"<0x") and len(piece) == 6:
            piece = bytes([int(piece[3:5], 16)])
        text += piece
        prev = t
    text = text.decode("utf-8", "replace")
    ok = diff < 1e-6 and ref_tokens == hf_tokens and (expect_text is None or expect_text.startswith(text))
    print(f"verify: {n_steps} greedy steps from BOS; max |logit diff| llama2.c-vs-HF layout {diff:.2e}; "
          f"tokens {'equal' if ref_tokens == hf_tokens else 'DIFFER'}; text {text!r}; "
          f"{'prefix of expected text' if expect_text is not None and expect_text.startswith(text) else ''}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("checkpoint", help="llama2.c model .bin (v0 format)")
    ap.add_argument("tokenizer", help="llama2.c tokenizer .bin (tok*.bin)")
    ap.add_argument("out_dir")
    ap.add_argument("--text", action="append", default=[], help="extra text to store llama2.c's ids for")
    ap.add_argument("--text-file", action="append", default=[], help="file whose content is added as a text")
    ap.add_argument("--verify", type=int, default=0, metavar="N",
                    help="check N greedy steps: llama2.c layout vs converted HF layout (float64, slow)")
    ap.add_argument("--expect", help="text the greedy output must start with (for --verify)")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    cfg, w = read_checkpoint(args.checkpoint)
    convert_model(cfg, w, args.out_dir)
    texts = ["Once upon a time", "", "Hello world", "Lily's mom said, \"Don't worry!\"\n\n  Two  spaces",
             "caf\u00e9 \u4f60\u597d \U0001f642 \u00bd", " leading space"] + args.text
    for p in args.text_file:
        with open(p, encoding="utf-8") as f:
            texts.append(f.read())
    n_merges = convert_tokenizer(args.tokenizer, cfg["vocab"], args.out_dir, texts)
    print(f"{args.out_dir}: dim {cfg['dim']} hidden {cfg['hidden']} layers {cfg['n_layers']} heads {cfg['n_heads']}"
          f"/{cfg['n_kv']} vocab {cfg['vocab']} seq {cfg['seq_len']} tied {cfg['shared']}; {n_merges} merges")
    if args.verify > 0:
        raw, _ = read_llama2c_tokenizer(args.tokenizer, cfg["vocab"])
        expect = None
        if args.expect:
            with open(args.expect, encoding="utf-8") as f:
                expect = f.read()
        if not verify(cfg, w, args.out_dir, args.verify, raw, expect):
            sys.exit("verify FAILED")


if __name__ == "__main__":
    main()
