#!/usr/bin/env python3
"""Train sparsedoc-mini (DeepseekV32ForCausalLM, ~10M params) on the GPU machine, export it.

    PYTHONUNBUFFERED=1 python3 tools/train/train.py --out $OUT --budget 400 [--smoke]
        [--corpus .train/corpus.jsonl.gz] [--tokenizer .train/tokenizer.json] [--resume DIR]

Stages (DeepSeek DSA recipe, DSA.md 6, shrunk to minutes; time-boxed, seeded, logged):
  1 dense pre-training, LM + planted-fact retrieval rows, sequence length 1K -> 4K -> 8K
  2 indexer warm-up: main model frozen, indexer trained by KL to the head-summed main attention
  3 sparse training: top-k attention from the indexer; main model by LM loss, indexer by KL on the
    selected set with detached inputs
Then: FP8 block export (tools/make_fixtures.py helpers), HF load check, reference logits for the
engine comparison. Everything that must come back is written under --out (<= 8 files).
"""
import argparse
import collections
import gzip
import io
import json
import math
import multiprocessing as mp
import os
import random
import sys
import tarfile
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import docgen  # noqa: E402
import fp8io  # noqa: E402
from model import MiniDSA, MoE, indexer_kl  # noqa: E402

T0 = time.time()
LOG = []


def log(*a):
    s = "[%7.1fs] " % (time.time() - T0) + " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


CFG = dict(
    vocab_size=8192, hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
    num_hidden_layers=4, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
    q_lora_rank=128, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
    n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
    routed_scaling_factor=1.0, norm_topk_prob=True, index_n_heads=4, index_head_dim=64, index_topk=512,
    max_position_embeddings=65536, rms_norm_eps=1e-6, tie_word_embeddings=False,
    bos_token_id=0, eos_token_id=1,
    rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0,
                     "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                     "mscale": 1.0, "mscale_all_dim": 1.0},
)

# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts, vocab):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=docgen.SPECIALS, min_frequency=2,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=tr)
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", 0)])
    for i, s in enumerate(docgen.SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


TOKCFG = {"bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|pad|>", "unk_token": None,
          "add_bos_token": True, "add_eos_token": False, "model_max_length": 65536,
          "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
          "additional_special_tokens": ["<|system|>", "<|document|>", "<|question|>", "<|answer|>"]}

# ----------------------------------------------------------------------------- data

G = {}  # worker globals (inherited by fork)


def build_pool(tok, corpus):
    prose_docs, code_files, text_files = [], [], []
    for r in corpus:
        if r["kind"] == "prose":
            prose_docs.append((r["name"], r["text"]))
        else:
            code_files.append((r["name"], r["text"]))
    # prose -> sentences (page style) and lines (line style, as text files)
    sent_docs = [docgen.split_sentences(t) for _, t in prose_docs]
    flat = [" " + s for d in sent_docs for s in d]
    enc = tok.encode_batch(flat, add_special_tokens=False)
    it = iter(enc)
    prose = [[next(it).ids for _ in d] for d in sent_docs]
    prose = [d for d in prose if len(d) >= 3]

    def lines_of(files, prefix):
        out, keys = [], []
        for i, (name, t) in enumerate(files):
            ls = docgen.text_lines(t)
            if len(ls) < 5:
                continue
            if prefix:
                stem = os.path.basename(name).split(".")[0][:24] or "doc"
                path = "%s/%s_%d.txt" % (prefix, stem, i)
            else:
                path = name
            out.append((path, ls))
        flat = [" " + l for _, ls in out for (_, l) in ls]
        e = tok.encode_batch(flat, add_special_tokens=False)
        it = iter(e)
        return [(p, [(n, next(it).ids) for (n, _) in ls]) for p, ls in out]

    code = lines_of(code_files, "")
    text = lines_of(prose_docs, "docs")
    return prose, code, text


def worker_init(seed):
    pass


def enc_cached(s):
    c = G["cache"]
    v = c.get(s)
    if v is None:
        v = G["tok"].encode(s, add_special_tokens=False).ids
        if len(c) < 200000:
            c[s] = v
    return v


def lm_tokens(rng, n):
    out = []
    while len(out) < n:
        out.append(0)
        if rng.random() < 0.6:
            d = rng.choice(G["prose"])
            i = rng.randrange(len(d))
            for s in d[i:]:
                out.extend(s)
                if len(out) >= n:
                    break
        else:
            path, ls = rng.choice(G["code"] if rng.random() < 0.6 else G["text"])
            i = rng.randrange(len(ls))
            for _, l in ls[i:]:
                out.extend(l)
                out.extend(G["nl"])
                if len(out) >= n:
                    break
    return out[:n]


def make_row(rng, L):
    """ids [L] int32, weight [L] uint8 (1 = answer token to predict)."""
    if rng.random() < G["lm_frac"]:
        return np.array(lm_tokens(rng, L), dtype=np.int32), np.zeros(L, dtype=np.uint8)
    for attempt in range(5):
        style = "page" if rng.random() < 0.5 else "line"
        codefile = style == "line" and rng.random() < 0.5
        pool = docgen.Pool(G["prose"], G["code"] if codefile else G["text"])
        n_needles = rng.randint(1, 8)
        n_q = rng.randint(1, min(3, n_needles))
        lo = G.get("doc_frac_long", 0.35) if L >= G.get("long_from", 1 << 30) else 0.35
        budget = int((L - 60 * n_q - 40) * rng.uniform(lo, 1.0)) - 500
        budget = max(budget, 64)
        depths = None
        if L >= G.get("long_from", 1 << 30) and rng.random() < G.get("early_frac", 0.0):
            depths = [rng.random() * 0.5 for _ in range(n_needles)]  # facts far from the questions
        d = docgen.build_doc(rng, pool, style, budget, lambda s: enc_cached(s) if isinstance(s, str) else s,
                             len, n_needles, n_q, quote_p=0.4, depths=depths, code_comments=codefile)
        ids = [0]
        for p in d["pieces"]:
            ids.extend(p)
        w = [0] * len(ids)
        for q, a in d["qas"]:
            qi = enc_cached(q)
            ai = G["tok"].encode(a, add_special_tokens=False).ids + [1]
            ids.extend(qi)
            w.extend([0] * len(qi))
            ids.extend(ai)
            w.extend([1] * len(ai))
        if len(ids) > L:
            continue
        rest = L - len(ids)
        if rest:
            ids.extend(lm_tokens(rng, rest))
            w.extend([0] * rest)
        return np.array(ids, dtype=np.int32), np.array(w, dtype=np.uint8)
    return np.array(lm_tokens(rng, L), dtype=np.int32), np.zeros(L, dtype=np.uint8)


def make_batch(args):
    seed, L, B = args
    rng = random.Random(seed)
    rows = [make_row(rng, L) for _ in range(B)]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


class Feeder:
    def __init__(self, procs, seed):
        self.pool = mp.get_context("fork").Pool(procs)
        self.q = collections.deque()
        self.seed = seed * 1000003
        self.n = 0

    def _submit(self, L, B):
        self.n += 1
        self.q.append(((L, B), self.pool.apply_async(make_batch, ((self.seed + self.n, L, B),))))

    def get(self, L, B, ahead=24):
        """Next prefetched batch of shape (L, B); the queue refills with the shapes asked for, so a
        mix of shapes (long-context stages) keeps its batches instead of dropping them."""
        while len(self.q) < ahead:
            self._submit(L, B)
        for i, ((l, b), r) in enumerate(self.q):
            if (l, b) == (L, B):
                del self.q[i]
                self._submit(L, B)
                return r.get()
        for _ in range(4):  # a shape not seen yet: one to use now, three kept ahead
            self._submit(L, B)
        (l, b), r = self.q[len(self.q) - 4]
        del self.q[len(self.q) - 4]
        return r.get()


def parse_mix(spec):
    """'8192x8:1,16384x4:2' -> [(L, B, weight)]; weight defaults to 1."""
    out = []
    for part in spec.split(","):
        shape, _, w = part.partition(":")
        L, B = shape.lower().split("x")
        out.append((int(L), int(B), float(w or 1)))
    return out


class MixCycle:
    """Seeded shape sequence for a stage: each shape in proportion to its weight, shuffled in rounds."""

    def __init__(self, mix, seed):
        self.rng = random.Random(seed)
        self.round = []
        for L, B, w in mix:
            self.round += [(L, B)] * max(1, int(round(w)))
        self.shapes = [(L, B) for L, B, _ in mix]
        self.buf = []

    def next(self):
        if not self.buf:
            self.buf = self.round[:]
            self.rng.shuffle(self.buf)
        return self.buf.pop()


# ----------------------------------------------------------------------------- training


def lm_loss(model, ids, w, mode):
    x = ids[:, :-1]
    y = ids[:, 1:]
    wt = w[:, 1:].float()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x, mode=mode, collect=(mode == "sparse" and model.training_indexer))
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view(y.shape)
    lm = ce.mean()
    na = wt.sum()
    ans = (ce * wt).sum() / na.clamp(min=1)
    return lm, ans, int(na)


def update_bias(model, u=1e-3):
    with torch.no_grad():
        for m in model.moe_layers():
            if m.last_load is not None:
                load = m.last_load
                m.gate.e_score_correction_bias += u * torch.sign(load.mean() - load)


def lr_at(frac, peak, warm=0.03, floor=0.1):
    if frac < warm:
        return peak * frac / warm
    p = (frac - warm) / max(1e-9, 1 - warm)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def run_stage1(model, feeder, seconds, hist, peak=2e-3, mix=None, warm=0.03, min_steps=0, seed=0):
    params = [p for n, p in model.named_parameters() if ".indexer." not in n]
    decay = [p for p in params if p.dim() >= 2]
    nodecay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=peak, betas=(0.9, 0.95), fused=True)
    sched = [(0.25, 1024, 64), (0.60, 4096, 16), (1.01, 8192, 8)]
    cyc = MixCycle(mix, seed + 1) if mix else None
    t0 = time.time()
    step = 0
    toks = 0
    while True:
        frac = (time.time() - t0) / seconds
        if frac >= 1 and step >= min_steps:
            break
        frac = min(frac, 0.999)
        if cyc:
            L, B = cyc.next()
        else:
            L, B = next((l, b) for f, l, b in sched if frac < f)
        ids, w = feeder.get(L + 1, B)
        ids = torch.from_numpy(ids).cuda(non_blocking=True).long()
        w = torch.from_numpy(w).cuda(non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(frac, peak, warm=warm)
        lm, ans, na = lm_loss(model, ids, w, "dense")
        loss = lm + ans
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        update_bias(model)
        step += 1
        toks += ids.numel()
        if step % 25 == 0 or step == 1:
            hist.append({"stage": 1, "step": step, "t": round(time.time() - t0, 1), "L": L, "lm": round(lm.item(), 4),
                         "ans": round(ans.item(), 4), "tokens": toks})
            log("s1 step %d L %d lm %.4f ans %.4f tok %.2fM (%.0f tok/s)" % (
                step, L, lm.item(), ans.item(), toks / 1e6, toks / (time.time() - t0)))
    return step, toks


def run_stage2(model, feeder, seconds, hist, L=4096, B=8, lr=1e-3, mix=None, min_steps=0, seed=0):
    for p in model.parameters():
        p.requires_grad_(False)
    idx_params = []
    for l in model.model.layers:
        for p in l.self_attn.indexer.parameters():
            p.requires_grad_(True)
            idx_params.append(p)
    opt = torch.optim.AdamW(idx_params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    cyc = MixCycle(mix or [(L, B, 1)], seed + 2)
    t0 = time.time()
    step = toks = 0
    while time.time() - t0 < seconds or step < min_steps:
        L, B = cyc.next()
        ids, w = feeder.get(L + 1, B)
        ids = torch.from_numpy(ids).cuda().long()[:, :-1]
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(ids, mode="dense", collect=True)
        cos, sin = model.rope(ids.shape[1], ids.device)
        opt.zero_grad(set_to_none=True)
        kls = []
        for l in model.model.layers:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                kl = indexer_kl(l.self_attn, cos, sin)  # backward done inside, chunk by chunk
            kls.append(round(kl, 4))
        opt.step()
        step += 1
        toks += ids.numel()
        if step % 10 == 0 or step == 1:
            hist.append({"stage": 2, "step": step, "t": round(time.time() - t0, 1), "L": L, "kl": kls})
            log("s2 step %d L %d kl %s" % (step, L, kls))
    for p in model.parameters():
        p.requires_grad_(True)
    return step, toks


def run_stage3(model, feeder, seconds, hist, L=8192, B=4, lr=3e-4, lr_idx=5e-4, mix=None, min_steps=0, seed=0):
    main = [p for n, p in model.named_parameters() if ".indexer." not in n]
    idx = [p for n, p in model.named_parameters() if ".indexer." in n]
    opt = torch.optim.AdamW([{"params": main, "lr": lr}, {"params": idx, "lr": lr_idx}],
                            betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    model.training_indexer = True
    cyc = MixCycle(mix or [(L, B, 1)], seed + 3)
    t0 = time.time()
    step = toks = 0
    while time.time() - t0 < seconds or step < min_steps:
        frac = min(1.0, (time.time() - t0) / seconds)
        L, B = cyc.next()
        ids, w = feeder.get(L + 1, B)
        ids = torch.from_numpy(ids).cuda().long()
        w = torch.from_numpy(w).cuda()
        opt.param_groups[0]["lr"] = lr * (1 - 0.8 * frac)
        opt.zero_grad(set_to_none=True)
        lm, ans, na = lm_loss(model, ids, w, "sparse")
        (lm + ans).backward()
        cos, sin = model.rope(L, ids.device)
        kls = []
        for l in model.model.layers:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                kl = indexer_kl(l.self_attn, cos, sin)  # backward done inside, chunk by chunk
            kls.append(round(kl, 4))
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        opt.step()
        update_bias(model)
        step += 1
        toks += ids.numel()
        if step % 10 == 0 or step == 1:
            hist.append({"stage": 3, "step": step, "t": round(time.time() - t0, 1), "L": L, "lm": round(lm.item(), 4),
                         "ans": round(ans.item(), 4), "kl": kls})
            log("s3 step %d L %d lm %.4f ans %.4f kl %s" % (step, L, lm.item(), ans.item(), kls))
    model.training_indexer = False
    return step, toks


# ----------------------------------------------------------------------------- export / checks


def fresh_eval(model, a, report, tag):
    """Answer/LM loss on fresh generated retrieval rows (no LM-only rows) at --eval-lens, both modes."""
    was = model.training
    model.eval()
    frac = G["lm_frac"]
    G["lm_frac"] = 0.0
    with torch.no_grad():
        for L in [int(x) for x in a.eval_lens.split(",")]:
            ids, w = make_batch((a.seed + 7, L + 1, max(1, 32768 // L)))
            ids = torch.from_numpy(ids).cuda().long()
            w = torch.from_numpy(w).cuda()
            for mode in ("dense", "sparse"):
                lm, ans, na = lm_loss(model, ids, w, mode)
                key = "%s_%s" % (tag, mode) if L == 8192 else "%s_%s_%d" % (tag, mode, L)
                report[key] = {"lm": lm.item(), "ans": ans.item(), "n_ans": na}
                log("%s %s L %d: lm %.4f ans %.4f (%d answer tokens)" % (tag, mode, L, lm.item(), ans.item(), na))
    G["lm_frac"] = frac
    model.train(was)


def save_ckpt(model, out, meta):
    sd = {k: v.detach().to(torch.bfloat16 if v.is_floating_point() and "e_score" not in k else v.dtype).cpu()
          for k, v in model.state_dict().items()}
    keys = sorted(sd)
    half = len(keys) // 2
    shards = [dict((k, sd[k]) for k in keys[:half]), dict((k, sd[k]) for k in keys[half:])]
    # balance by bytes
    tot = sum(v.numel() * v.element_size() for v in sd.values())
    a, b, acc = {}, {}, 0
    for k in keys:
        n = sd[k].numel() * sd[k].element_size()
        (a if acc < tot / 2 else b)[k] = sd[k]
        acc += n
    for i, s in enumerate((a, b)):
        torch.save({"state": s, "meta": meta}, os.path.join(out, "ckpt%d.pt" % i))
    log("checkpoint saved (%.1f MB bf16, 2 shards)" % (tot / 1e6))


def load_ckpt(model, d):
    sd = {}
    meta = None
    for i in range(2):
        c = torch.load(os.path.join(d, "ckpt%d.pt" % i), map_location="cpu")
        sd.update(c["state"])
        meta = c["meta"]
    own = model.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v.to(own[k].dtype))
    return meta


def hf_config(cfg):
    import transformers
    c = transformers.DeepseekV32Config(**cfg)
    c.architectures = ["DeepseekV32ForCausalLM"]
    return c


def export(model, tok, out, report, ref_ids, ref_prompt):
    import transformers
    from safetensors.torch import save_file
    import make_fixtures as mf
    cfg = model.c
    hcfg = hf_config(cfg)
    sd = mf.released_state_dict(model, hcfg)
    tensors, deq, kinds = {}, {}, {}
    for k, v in sd.items():
        kind = mf.fp8_storage_kind(k, v)
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "fp8":
            q, s, wd = mf.quant_fp8_block(v)
            tensors[k] = q
            tensors[k + "_scale_inv"] = s
            deq[k] = wd
        elif kind == "bf16":
            tensors[k] = v.to(torch.bfloat16).contiguous()
            deq[k] = tensors[k].float()
        else:
            tensors[k] = v
            deq[k] = v
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    report["export"] = {"storage_kinds": kinds, "bytes": os.path.getsize(os.path.join(out, "model.safetensors"))}
    log("export: %s, %.2f MB" % (kinds, report["export"]["bytes"] / 1e6))
    # fp32 model with exactly the file's values
    ref = MiniDSA(cfg).cuda().float().eval()
    missing = mf.load_released_into(ref, deq)
    report["export"]["load_missing"] = missing
    ids = torch.tensor([ref_ids], device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        lg_sparse = ref(ids, mode="sparse").float()[0]
        lg_dense = ref(ids, mode="dense").float()[0]
    n = len(ref_ids)
    keep = 300
    lg_sparse[n - keep:].contiguous().cpu().numpy().astype("<f4").tofile(os.path.join(out, "ref_logits.f32"))
    report["ref"] = {"n_ids": n, "rows_saved": [n - keep, n], "vocab": cfg["vocab_size"],
                     "sparse_vs_dense_rel_l2": float((lg_sparse - lg_dense).norm() / lg_dense.norm())}
    # HF: load the fp32 dequantized weights into transformers' model, compare logits (eager, fp32)
    try:
        hf = transformers.AutoModelForCausalLM.from_config(hcfg, attn_implementation="eager").float()
        miss = mf.load_released_into(hf, deq)
        hf = hf.cuda().eval()
        with torch.no_grad():
            lh = hf(input_ids=ids, use_cache=False).logits.float()[0]
        d = (lh - lg_sparse)
        report["hf_check"] = {"missing": miss, "max_abs": float(d.abs().max()),
                              "rel_l2": float(d.norm() / lh.norm()),
                              "rows_rel_gt_1e-3": int(((d.norm(dim=-1) / lh.norm(dim=-1)) > 1e-3).sum())}
        # HF save_pretrained round trip (bf16-free: fp32)
        tmp = os.path.join("/tmp", "hf_rt")
        hf.save_pretrained(tmp)
        hf2 = transformers.AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="eager",
                                                                dtype=torch.float32).cuda().eval()
        with torch.no_grad():
            l2 = hf2(input_ids=ids, use_cache=False).logits.float()[0]
        report["hf_check"]["save_pretrained_roundtrip_max_abs"] = float((l2 - lh).abs().max())
        log("hf check:", report["hf_check"])
    except Exception as e:
        import traceback
        report["hf_check"] = {"error": repr(e)[:800], "tb": traceback.format_exc()[-1500:]}
        log("hf check failed:", repr(e)[:300])
    # config.json in the released spelling (as tests/fixtures/dsv32_fp8)
    c = hcfg.to_dict()
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp["rope_theta"]
    rs = {"type": rp["rope_type"]}
    for k2 in ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
        rs[k2] = rp[k2]
    c["rope_scaling"] = rs
    c["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                "weight_block_size": [128, 128]}
    c["topk_method"] = "noaux_tc"
    c["scoring_func"] = "sigmoid"
    c["dtype"] = "bfloat16"
    for k2 in list(c):
        if k2.startswith("_") or k2 in ("transformers_version", "torch_dtype", "id2label", "label2id",
                                        "chunk_size_feed_forward", "output_attentions", "output_hidden_states",
                                        "return_dict", "problem_type", "is_encoder_decoder"):
            c.pop(k2)
    c["transformers_version"] = transformers.__version__
    files = {"config.json": json.dumps(c, indent=2, sort_keys=True, default=str) + "\n",
             "tokenizer.json": tok.to_str(pretty=True),
             "tokenizer_config.json": json.dumps(TOKCFG, indent=2) + "\n",
             "ref_ids.txt": " ".join(map(str, ref_ids)) + "\n",
             "ref_prompt.txt": ref_prompt}
    return files


def write_bundle(out, files, report):
    files = dict(files)
    files["report.json"] = json.dumps(report, indent=1, default=str) + "\n"
    files["train_log.txt"] = "\n".join(LOG) + "\n"
    with tarfile.open(os.path.join(out, "bundle.tar"), "w") as tf:
        for name, s in files.items():
            b = s.encode("utf-8")
            ti = tarfile.TarInfo(name)
            ti.size = len(b)
            tf.addfile(ti, io.BytesIO(b))


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=400, help="seconds for the whole script")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--corpus", default=".train/corpus.jsonl.gz")
    ap.add_argument("--tokenizer", default=".train/tokenizer.json")
    ap.add_argument("--resume", default="")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--split", default="0.70,0.10,0.20", help="fractions of training time for stages 1,2,3")
    ap.add_argument("--procs", type=int, default=12)
    ap.add_argument("--init", default="", help="start from a shipped model dir (FP8 safetensors, fp8io.py)")
    ap.add_argument("--mix1", default="", help="stage 1 shapes 'LxB:weight,...' (default: 1K->4K->8K schedule)")
    ap.add_argument("--mix2", default="", help="stage 2 shapes (default 4096x8)")
    ap.add_argument("--mix3", default="", help="stage 3 shapes (default 8192x4)")
    ap.add_argument("--long-from", type=int, default=1 << 30,
                    help="rows of at least this length use --long-doc-frac and --early-frac (default: none)")
    ap.add_argument("--long-doc-frac", type=float, default=0.35,
                    help="long rows: the document fills uniform(this, 1.0) of the row (default 0.35, as short rows)")
    ap.add_argument("--early-frac", type=float, default=0.0,
                    help="long rows: share of documents whose facts all sit in the first half (default 0)")
    ap.add_argument("--peak1", type=float, default=2e-3)
    ap.add_argument("--warm1", type=float, default=0.03)
    ap.add_argument("--lr3", type=float, default=3e-4)
    ap.add_argument("--max-docs", type=int, default=0, help="use only the first N corpus documents (smoke)")
    ap.add_argument("--eval-lens", default="8192", help="fresh-row answer-loss check lengths after training")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    report = {"cfg": CFG, "seed": a.seed, "torch": torch.__version__, "args": vars(a)}
    files = {}
    try:
        import transformers
        report["transformers"] = transformers.__version__
        log("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name(0))
        corpus = [json.loads(l) for l in gzip.open(a.corpus, "rt", encoding="utf-8")]
        if a.max_docs:
            rs = random.Random(a.seed)
            rs.shuffle(corpus)
            corpus = corpus[:a.max_docs]
        log("corpus docs", len(corpus), "chars", sum(len(r["text"]) for r in corpus))
        from tokenizers import Tokenizer
        if os.path.exists(a.tokenizer):
            tok = Tokenizer.from_file(a.tokenizer)
            log("tokenizer loaded", a.tokenizer)
        else:
            rng = random.Random(a.seed)
            sample = [r["text"] for r in corpus]
            rng.shuffle(sample)
            sample = sample[: max(200, len(sample) // 3)]
            tok = train_tokenizer(sample + docgen.SPECIALS, CFG["vocab_size"])
            log("tokenizer trained on %d docs, vocab %d" % (len(sample), tok.get_vocab_size()))
        assert tok.get_vocab_size() <= CFG["vocab_size"]
        prose, code, text = build_pool(tok, corpus)
        G.update(tok=tok, prose=prose, code=code, text=text, cache={}, lm_frac=0.25,
                 nl=tok.encode("\n", add_special_tokens=False).ids, long_from=a.long_from,
                 doc_frac_long=a.long_doc_frac, early_frac=a.early_frac)
        ntok = sum(len(s) for d in prose for s in d) + sum(len(l) for _, ls in code + text for _, l in ls)
        log("pool: %d prose docs, %d code files, %d text files, %.1fM tokens" % (len(prose), len(code), len(text), ntok / 1e6))
        # chars/token on held-out-like prose (for the eval generator's length estimate)
        pg = "/work/shared/corpus/longctx/paul_graham_essays"
        cpt = {}
        try:
            s = "".join(open(os.path.join(pg, f)).read() for f in sorted(os.listdir(pg))[:20])
            cpt["pg_text"] = len(s) / len(tok.encode(s, add_special_tokens=False).ids)
        except Exception:
            pass
        s = "".join(r["text"] for r in corpus[:50])
        cpt["train_sample"] = len(s) / len(tok.encode(s, add_special_tokens=False).ids)
        report["chars_per_token"] = cpt
        log("chars/token", cpt)
        # reference prompt for the engine comparison: a real doc prompt, 1024 tokens
        rng = random.Random(a.seed + 99)
        d = docgen.build_doc(rng, docgen.Pool(prose, text), "page", 900,
                             lambda s: tok.encode(s, add_special_tokens=False).ids if isinstance(s, str) else s,
                             len, 3, 1)
        rid = [0] + [t for p in d["pieces"] for t in p]
        rid = rid[:1000] + tok.encode(d["qas"][0][0], add_special_tokens=False).ids
        rid = rid[:1024]
        ref_prompt = tok.decode(rid, skip_special_tokens=False)
        # model
        model = MiniDSA(CFG).cuda()
        model.training_indexer = False
        model.init_weights(a.seed)
        log("rope:", model.rope_src, "att_scale", model.att_scale, "softmax scale", model.model.layers[0].self_attn.scale)
        nparam = sum(p.numel() for p in model.parameters())
        report["n_params"] = nparam
        log("params %.2fM" % (nparam / 1e6))
        if a.resume:
            report["resumed_from"] = load_ckpt(model, a.resume)
            log("resumed", report["resumed_from"])
        if a.init:
            report["init_from"] = fp8io.load_model_dir(model, a.init)
            log("initialized from", report["init_from"])
            if not a.smoke:
                fresh_eval(model, a, report, "before")
        feeder = Feeder(a.procs, a.seed)
        hist = []
        report["hist"] = hist
        used = time.time() - T0
        avail = a.budget - used - (45 if not a.smoke else 40)
        f1, f2, f3 = [float(x) for x in a.split.split(",")]
        if a.smoke:
            avail = max(avail, 30)
        report["stage_seconds"] = [avail * f1, avail * f2, avail * f3]
        log("training seconds per stage", [round(x) for x in report["stage_seconds"]])
        st = {}
        mix1, mix2, mix3 = (parse_mix(m) if m else None for m in (a.mix1, a.mix2, a.mix3))
        ms = lambda m: len(MixCycle(m, 0).round) if (a.smoke and m) else int(a.smoke)  # smoke: every shape
        if f1 > 0:
            st["s1"] = run_stage1(model, feeder, avail * f1, hist, peak=a.peak1, mix=mix1, warm=a.warm1,
                                  min_steps=ms(mix1), seed=a.seed)
            torch.cuda.synchronize()
            log("stage 1 done: steps %d tokens %.1fM, max mem %.1f GB" % (st["s1"][0], st["s1"][1] / 1e6,
                                                                         torch.cuda.max_memory_allocated() / 1e9))
        if f2 > 0:
            st["s2"] = run_stage2(model, feeder, avail * f2, hist, mix=mix2, min_steps=ms(mix2), seed=a.seed)
            log("stage 2 done: steps %d, max mem %.1f GB" % (st["s2"][0], torch.cuda.max_memory_allocated() / 1e9))
        if f3 > 0:
            st["s3"] = run_stage3(model, feeder, avail * f3, hist, lr=a.lr3, mix=mix3, min_steps=ms(mix3), seed=a.seed)
            log("stage 3 done: steps %d tokens %.1fM, max mem %.1f GB" % (st["s3"][0], st["s3"][1] / 1e6,
                                                                         torch.cuda.max_memory_allocated() / 1e9))
        report["stages"] = st
        feeder.pool.terminate()
        save_ckpt(model, a.out, {"stages": st, "seed": a.seed})
        # quick in-training-model eval on fresh generated rows (answer loss dense vs sparse at 8K)
        model.eval()
        G["lm_frac"] = 0.0
        rng = random.Random(a.seed + 7)
        fresh_eval(model, a, report, "final")
        files = export(model, tok, a.out, report, rid, ref_prompt)
    except Exception as e:
        import traceback
        tb = traceback.format_exc()
        log("FAILED:", tb)
        report["error"] = tb
    finally:
        if "tokenizer.json" not in files:
            try:
                files["tokenizer.json"] = tok.to_str(pretty=True)
            except Exception:
                pass
        write_bundle(a.out, files, report)
        with open(os.path.join(a.out, "log.txt"), "w") as f:
            f.write("\n".join(LOG) + "\n")
        log("total %.1fs" % (time.time() - T0))
    return 1 if "error" in report else 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    os._exit(rc)  # do not wait on the data workers' pool at interpreter exit
