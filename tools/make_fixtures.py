#!/usr/bin/env python3
"""Build tiny random reference fixtures with HF transformers (the independent reference).

Runs on the GPU machine (PyTorch + transformers >= 5 with DeepseekV32ForCausalLM):

    PYTHONUNBUFFERED=1 python3 tools/make_fixtures.py --out OUTDIR

Writes one folder per fixture (llama, qwen2, qwen3, dsv32, dsv32_fp8) with:
  config.json        as written by transformers (dsv32_fp8: rewritten to the released spelling)
  model.safetensors  weights (DeepSeek fixtures: released-checkpoint layout, one tensor per expert)
  ids.txt            whitespace-separated token ids
  logits.f32         float32 LE, [n_ids][vocab], one full fp32 forward pass (eager attention, no TF32)
  hidden.f32         float32 LE, [n_layers+1][n_ids][hidden], HF output_hidden_states
  topk.i32           (DeepSeek only) int32 LE, [n_layers][n_ids][index_topk], HF's selected key
                     indices per query row, ascending, -1 padded for rows with < index_topk keys
  meta.json          seed, versions, checks, notes
See tests/fixtures/README.md.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file, load_file

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TIE_REL = 1e-3  # required relative gap at every top-k boundary (DSA and MoE routing)


def setup_numerics():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    except Exception:
        pass


# ----------------------------------------------------------------------------- helpers

def write_raw(path, t):
    t = t.detach().contiguous().cpu().clone()
    try:
        t.numpy().tofile(path)  # x86-64: little-endian
    except Exception:
        nbytes = t.numel() * t.element_size()
        with open(path, "wb") as f:
            f.write(bytes(t.untyped_storage())[:nbytes])


def make_config(cls, rope, **kw):
    """rope: dict in transformers-5 `rope_parameters` form (with rope_theta and rope_type)."""
    try:
        return cls(rope_parameters=dict(rope), **kw)
    except TypeError as e:
        print("  config: rope_parameters rejected (%s); falling back to rope_scaling" % e)
        r = dict(rope)
        theta = r.pop("rope_theta")
        if r.get("rope_type", "default") == "default":
            return cls(rope_theta=theta, **kw)
        return cls(rope_theta=theta, rope_scaling=r, **kw)


def build_model(config):
    for attr in ("_experts_implementation",):
        try:
            setattr(config, attr, "eager")
        except Exception:
            pass
    try:
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    except TypeError:
        config._attn_implementation = "eager"
        model = transformers.AutoModelForCausalLM.from_config(config)
    model = model.float().eval()
    return model


def reinit(model, gen):
    """Every linear/embedding weight ~ N(0, 1/fan_in) (fan_in = last dim), norm weights 1 + 0.1 N,
    biases 0.1 N. Draws on CPU in named_parameters order, so it is deterministic."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                v = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1])
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=gen)
            else:  # 1-D weight: RMSNorm / LayerNorm gain
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
            p.copy_(v.to(p.dtype))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def layer_out(o):
    return o[0] if isinstance(o, (tuple, list)) else o


class Capture:
    """Forward hooks: every decoder layer's output; for DeepSeek layers the attention input x
    (= input_layernorm output), the indexer's output (HF's selection), the MoE input."""

    def __init__(self, model, deepseek):
        self.h = []
        self.layers = model.model.layers
        self.deepseek = deepseek
        self.reset()
        for i, layer in enumerate(self.layers):
            self.h.append(layer.register_forward_hook(self._mk_out(i)))
            if deepseek:
                self.h.append(layer.self_attn.register_forward_pre_hook(self._mk_pre("attn_x", i), with_kwargs=True))
                self.h.append(layer.self_attn.indexer.register_forward_hook(self._mk_idx(i)))
                if hasattr(layer.mlp, "gate"):
                    self.h.append(layer.mlp.register_forward_pre_hook(self._mk_pre("moe_x", i), with_kwargs=True))

    def reset(self):
        self.out, self.attn_x, self.moe_x, self.idx_out = {}, {}, {}, {}

    def _mk_out(self, i):
        def f(mod, args, out):
            self.out[i] = layer_out(out).detach()
        return f

    def _mk_pre(self, kind, i):
        def f(mod, args, kwargs):
            x = kwargs.get("hidden_states", args[0] if args else None)
            getattr(self, kind)[i] = x.detach()
        return f

    def _mk_idx(self, i):
        def f(mod, args, out):
            self.idx_out[i] = (out[0] if isinstance(out, (tuple, list)) else out).detach()
        return f

    def remove(self):
        for h in self.h:
            h.remove()


def forward(model, ids):
    x = torch.tensor([ids], dtype=torch.long, device=DEV)
    with torch.no_grad():
        return model(input_ids=x, output_hidden_states=True, use_cache=False)


# ----------------------------------------------------------------------------- DeepSeek checks

def yarn_inv_freq(d, rp):
    """YaRN corrected frequencies, DSA.md 2.3 (float64, our own formula)."""
    theta = rp["rope_theta"]
    s = rp["factor"]
    L0 = rp["original_max_position_embeddings"]
    bf, bs = rp.get("beta_fast", 32), rp.get("beta_slow", 1)
    i = torch.arange(d // 2, dtype=torch.float64)
    w = theta ** (-2.0 * i / d)

    def D(r):
        return d * math.log(L0 / (2 * math.pi * r)) / (2 * math.log(theta))

    low = max(math.floor(D(bf)), 0)
    high = min(math.ceil(D(bs)), d - 1)
    if low == high:
        high += 0.001
    g = ((i - low) / (high - low)).clamp(0, 1)
    return w / s * g + w * (1 - g)


def rope(x, cos, sin, pairing):
    """x [T, ..., r]; cos/sin [T, r/2] broadcast over the middle dims."""
    r = x.shape[-1]
    shp = (x.shape[0],) + (1,) * (x.dim() - 2) + (r // 2,)
    c, s = cos.view(shp), sin.view(shp)
    if pairing == "half":
        a, b = x[..., : r // 2], x[..., r // 2:]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = b * c + a * s
    return out


def rms(x, w, eps):
    return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def norm_eps(m):
    for a in ("variance_epsilon", "eps"):
        if hasattr(m, a):
            return float(getattr(m, a))
    return 1e-6


def indexer_scores(attn, x, cfg, pairing):
    """Lightning-indexer scores I[t,u] (DSA.md 3.2 without FP8/Hadamard), float64, causal -inf."""
    d = lambda t: t.detach().double()
    x = d(x[0])
    T = x.shape[0]
    idx = attn.indexer
    H, D, r = cfg.index_n_heads, cfg.index_head_dim, cfg.qk_rope_head_dim
    cq = rms(x @ d(attn.q_a_proj.weight).T, d(attn.q_a_layernorm.weight), norm_eps(attn.q_a_layernorm))
    q = (cq @ d(idx.wq_b.weight).T).view(T, H, D)
    k = F.layer_norm(x @ d(idx.wk.weight).T, (D,), d(idx.k_norm.weight), d(idx.k_norm.bias), idx.k_norm.eps)
    rp = cfg.rope_parameters
    inv = yarn_inv_freq(r, rp).to(x.device)
    ang = torch.arange(T, dtype=torch.float64, device=x.device)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    q = torch.cat([rope(q[..., :r], cos, sin, pairing), q[..., r:]], dim=-1)
    k = torch.cat([rope(k[..., :r], cos, sin, pairing), k[..., r:]], dim=-1)
    w = (x @ d(idx.weights_proj.weight).T) * H ** -0.5  # [T, H], signed
    s = torch.relu(torch.einsum("thd,ud->thu", q, k)) * D ** -0.5
    I = torch.einsum("th,thu->tu", w, s)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1)
    return I.masked_fill(mask, float("-inf"))


def hf_selection(out, T, K):
    """HF indexer output -> list of sorted python lists (selected valid keys per row)."""
    o = out
    rows = []
    if o.dtype in (torch.int32, torch.int64):
        o = o.reshape(-1, o.shape[-1])[-T:] if o.dim() > 2 else o
        o = o.view(T, -1).long().cpu()
        for t in range(T):
            rows.append(sorted(set(int(u) for u in o[t].tolist() if 0 <= u <= t)))
    else:  # additive or boolean mask [.., T, T]
        m = o.reshape(-1, o.shape[-2], o.shape[-1])[0].cpu()
        keep = (m == 0) if m.dtype != torch.bool else m
        for t in range(T):
            rows.append([u for u in range(t + 1) if bool(keep[t, u])])
    return rows


def row_topk(I_row, t, K):
    v = I_row[: t + 1]
    order = torch.argsort(v, descending=True)
    sel = sorted(order[:K].tolist())
    vs = v[order]
    scale = float(vs.abs().max()) or 1.0
    gap = float(vs[K - 1] - vs[K]) / scale if t + 1 > K else float("inf")
    return sel, gap


def routing_check(mlp, x, cfg):
    """noaux_tc routing in float64 (DSA.md 4): per-token relative gaps at the group and expert
    boundaries, and whether the correction bias changed the selected set."""
    xd = x[0].detach().double()
    logits = xd @ mlp.gate.weight.detach().double().T
    s = torch.sigmoid(logits)
    b = mlp.gate.e_score_correction_bias.detach().double()
    E, G, TG, K = cfg.n_routed_experts, cfg.n_group, cfg.topk_group, cfg.num_experts_per_tok

    def select(sc):
        gs = sc.view(-1, G, E // G).topk(min(2, E // G), dim=-1)[0].sum(-1)
        gsort = gs.sort(dim=-1, descending=True)[0]
        ggap = (gsort[:, TG - 1] - gsort[:, TG]) if TG < G else torch.full_like(gsort[:, 0], float("inf"))
        gidx = gs.topk(TG, dim=-1)[1]
        gmask = torch.zeros_like(gs, dtype=torch.bool).scatter(1, gidx, True)
        emask = gmask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
        m = sc.masked_fill(~emask, float("-inf"))
        msort = m.sort(dim=-1, descending=True)[0]
        egap = msort[:, K - 1] - msort[:, K]
        sel = m.topk(K, dim=-1)[1].sort(dim=-1)[0]
        return sel, ggap, egap

    sel_b, ggap, egap = select(s + b)
    sel_nb, _, _ = select(s)
    scale = (s + b).abs().max(dim=-1)[0]
    gap = torch.minimum(ggap, egap) / scale
    changed = (sel_b != sel_nb).any(dim=-1)
    return gap.cpu(), changed.cpu(), float((s + b).min())


def analyze_ds(model, cap, cfg, T, pairing="half", rows=None):
    """Per-row DSA + routing tie analysis of the last forward (rows: which query rows to check)."""
    rows = range(T) if rows is None else rows
    K = cfg.index_topk
    L = cfg.num_hidden_layers
    res = {"row_ok": [True] * T, "dsa_min_gap": float("inf"), "route_min_gap": float("inf"),
           "mismatch_rows": 0, "sel": [], "bias_changed_tokens": 0, "min_biased_score": float("inf")}
    for i in range(L):
        attn = model.model.layers[i].self_attn
        I = indexer_scores(attn, cap.attn_x[i], cfg, pairing).cpu()
        hf = hf_selection(cap.idx_out[i], T, K)
        sel_layer = hf
        for t in rows:
            mine, gap = row_topk(I[t], t, K)
            if mine != hf[t]:
                res["mismatch_rows"] += 1
            if t + 1 > K:
                res["dsa_min_gap"] = min(res["dsa_min_gap"], gap)
                if gap <= TIE_REL:
                    res["row_ok"][t] = False
        res["sel"].append(sel_layer)
        mlp = model.model.layers[i].mlp
        if i in cap.moe_x:
            gap, changed, smin = routing_check(mlp, cap.moe_x[i], cfg)
            res["route_min_gap"] = min(res["route_min_gap"], float(gap.min()))
            res["bias_changed_tokens"] += int(changed.sum())
            res["min_biased_score"] = min(res["min_biased_score"], smin)
            for t in rows:
                if float(gap[t]) <= TIE_REL:
                    res["row_ok"][t] = False
    return res


def set_index_topk(model, k):
    model.config.index_topk = k
    for layer in model.model.layers:
        if hasattr(layer.self_attn.indexer, "index_topk"):
            layer.self_attn.indexer.index_topk = k


def pick_ids_ds(model, cap, cfg, n, gen, vocab, pairing):
    """Rejection-sample token ids left to right: position t is kept only if query row t has a
    clear top-k boundary in every layer (DSA) and every MoE layer (routing). Causality makes
    row t depend on ids[0..t] only, so earlier rows stay valid."""
    ids, rejected = [], 0
    for t in range(n):
        for attempt in range(400):
            cand = int(torch.randint(vocab, (1,), generator=gen))
            cap.reset()
            forward(model, ids + [cand])
            r = analyze_ds(model, cap, cfg, t + 1, pairing, rows=[t])
            if r["row_ok"][t]:
                ids.append(cand)
                break
            rejected += 1
        else:
            raise RuntimeError("no tie-free token found at position %d" % t)
    return ids, rejected


# ----------------------------------------------------------------------------- DeepSeek weights

EXPERT_KEY = ".mlp.experts."


def released_state_dict(model, cfg):
    """HF state dict -> released DeepSeek layout (one gate/up/down tensor per expert)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().float().cpu().contiguous()
        if k.endswith(".mlp.experts.gate_up_proj"):
            pre = k[: -len("gate_up_proj")]
            E, twoI, Hd = v.shape
            I = twoI // 2
            assert I == cfg.moe_intermediate_size and Hd == cfg.hidden_size, ("unexpected expert layout", v.shape)
            for e in range(E):
                out["%s%d.gate_proj.weight" % (pre, e)] = v[e, :I].clone()
                out["%s%d.up_proj.weight" % (pre, e)] = v[e, I:].clone()
        elif k.endswith(".mlp.experts.down_proj"):
            pre = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                out["%s%d.down_proj.weight" % (pre, e)] = v[e].clone()
        elif "rotary_emb" in k:
            continue
        else:
            out[k] = v
    if getattr(cfg, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)
    return out


def load_released_into(model, sd):
    """Inverse of released_state_dict for fp32 tensors (used to push dequantized weights back)."""
    own = model.state_dict()
    new = {}
    for k in own:
        if k.endswith(".mlp.experts.gate_up_proj"):
            pre = k[: -len("gate_up_proj")]
            E = own[k].shape[0]
            new[k] = torch.stack([torch.cat([sd["%s%d.gate_proj.weight" % (pre, e)],
                                             sd["%s%d.up_proj.weight" % (pre, e)]], 0) for e in range(E)])
        elif k.endswith(".mlp.experts.down_proj"):
            pre = k[: -len("down_proj")]
            E = own[k].shape[0]
            new[k] = torch.stack([sd["%s%d.down_proj.weight" % (pre, e)] for e in range(E)])
        elif k in sd:
            new[k] = sd[k]
        elif k == "lm_head.weight" and "model.embed_tokens.weight" in sd:
            new[k] = sd["model.embed_tokens.weight"]
    missing = [k for k in own if k not in new and "rotary_emb" not in k]
    with torch.no_grad():
        for k, v in new.items():
            own[k].copy_(v.to(own[k].dtype))
    return missing


def quant_fp8_block(w, blk=128):
    """Per 128x128 block e4m3 with scale = amax/448; returns (fp8, scale_inv f32, dequantized f32)."""
    o, i = w.shape
    so, si = (o + blk - 1) // blk, (i + blk - 1) // blk
    pad = torch.zeros(so * blk, si * blk, dtype=torch.float32)
    pad[:o, :i] = w
    b = pad.view(so, blk, si, blk)
    amax = b.abs().amax(dim=(1, 3))
    scale = torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))
    q = (b / scale[:, None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
    deq = (q.float() * scale[:, None, :, None]).view(so * blk, si * blk)[:o, :i].contiguous()
    q = q.view(so * blk, si * blk)[:o, :i].contiguous()
    return q, scale.float().contiguous(), deq


def fp8_storage_kind(name, t):
    if t.dim() != 2:
        # 1-D: RMSNorm gains -> bf16 as released; k_norm (LayerNorm) and routing bias stay f32
        if name.endswith("e_score_correction_bias") or ".indexer.k_norm." in name:
            return "f32"
        return "bf16"
    if name in ("model.embed_tokens.weight", "lm_head.weight") or name.endswith(".mlp.gate.weight") \
            or name.endswith(".indexer.weights_proj.weight"):
        return "bf16"
    return "fp8"


# ----------------------------------------------------------------------------- fixtures

def llama_like(kind, seed):
    common = dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    if kind == "llama":
        rp = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        return make_config(transformers.LlamaConfig, rp, tie_word_embeddings=True, **common)
    rp = {"rope_type": "default", "rope_theta": 10000.0}
    if kind == "qwen2":
        return make_config(transformers.Qwen2Config, rp, tie_word_embeddings=False, **common)
    if kind == "qwen3":
        common.update(num_attention_heads=8, num_key_value_heads=4, head_dim=16)
        return make_config(transformers.Qwen3Config, rp, tie_word_embeddings=True, **common)
    raise ValueError(kind)


def ds_config(hidden, q_lora):
    rp = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
          "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}
    return make_config(
        transformers.DeepseekV32Config, rp,
        vocab_size=256, hidden_size=hidden, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=q_lora, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, norm_topk_prob=True, index_n_heads=8, index_head_dim=32, index_topk=16,
        max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1)


def hidden_flag(cap, hs, model):
    last = cap.out[len(cap.out) - 1]
    if torch.allclose(hs[-1], last, rtol=0, atol=0):
        return "raw_last_layer_output"
    normed = model.model.norm(last)
    if torch.allclose(hs[-1], normed, rtol=1e-6, atol=1e-6):
        return "final_norm_applied"
    return "unknown(max diff raw %.3g, normed %.3g)" % (float((hs[-1] - last).abs().max()),
                                                         float((hs[-1] - normed).abs().max()))


def save_common(d, ids, out, meta):
    with open(os.path.join(d, "ids.txt"), "w") as f:
        f.write(" ".join(str(i) for i in ids) + "\n")
    logits = out.logits[0].float()
    write_raw(os.path.join(d, "logits.f32"), logits)
    hs = torch.stack([h[0].float() for h in out.hidden_states])
    write_raw(os.path.join(d, "hidden.f32"), hs)
    meta.update({"n_ids": len(ids), "vocab": int(logits.shape[-1]), "n_layers_hidden": int(hs.shape[0]),
                 "hidden_shape": list(hs.shape), "logits_shape": list(logits.shape),
                 "max_abs_logit": float(logits.abs().max())})
    return logits


def base_meta(name, seed, arch):
    return {"fixture": name, "architecture": arch, "seed": seed,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu",
            "dtype": "float32", "attn_implementation": "eager", "tf32": False,
            "init": "linear/embedding/expert weights N(0, 1/fan_in) with fan_in = last dim; "
                    "norm gains 1+0.1N; biases 0.1N",
            "files": {}}


def finish(d, meta):
    for f in sorted(os.listdir(d)):
        if f != "meta.json":
            meta["files"][f] = os.path.getsize(os.path.join(d, f))
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True, default=str)
        f.write("\n")


def make_llama_like(outdir, name, seed, n_ids=48):
    gen = torch.Generator().manual_seed(seed)
    cfg = llama_like(name, seed)
    model = build_model(cfg)
    reinit(model, gen)
    model.to(DEV)
    ids = torch.randint(cfg.vocab_size, (n_ids,), generator=gen).tolist()
    cap = Capture(model, deepseek=False)
    out = forward(model, ids)
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    tmp = tempfile.mkdtemp()
    model.save_pretrained(tmp)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tmp, f), os.path.join(d, f))
    extra = [f for f in os.listdir(tmp) if f not in ("config.json", "model.safetensors")]
    shutil.rmtree(tmp)
    meta = base_meta(name, seed, type(model).__name__)
    logits = save_common(d, ids, out, meta)
    meta["hidden_last"] = hidden_flag(cap, out.hidden_states, model)
    meta["save_pretrained_other_files_dropped"] = extra
    meta["tie_word_embeddings"] = bool(cfg.tie_word_embeddings)
    meta["safetensors_keys"] = sorted(load_file(os.path.join(d, "model.safetensors")).keys())
    # round trip: reload the written folder and compare
    m2 = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).to(DEV).eval()
    meta["roundtrip_max_abs_diff"] = float((forward(m2, ids).logits[0].float() - logits).abs().max())
    cap.remove()
    finish(d, meta)
    return {"fixture": name, "n_params": n_params(model), "n_ids": n_ids,
            "max_abs_logit": meta["max_abs_logit"], "dense_rel": None}


def make_ds(outdir, name, seed, fp8, n_ids=96):
    hidden, q_lora = (256, 160) if fp8 else (64, 48)
    meta = None
    gen = torch.Generator().manual_seed(seed)
    cfg = ds_config(hidden, q_lora)
    model = build_model(cfg)
    reinit(model, gen)
    with torch.no_grad():
        for layer in model.model.layers:
            if hasattr(layer.mlp, "gate"):
                # non-negative, so s+b > 0 and HF's 0.0 group fill equals the reference's -inf fill
                b = 0.25 * torch.rand(layer.mlp.gate.e_score_correction_bias.shape, generator=gen)
                layer.mlp.gate.e_score_correction_bias.copy_(b)
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    sd = released_state_dict(model, cfg)
    notes = []
    if fp8:
        tensors, deq, kinds = {}, {}, {}
        for k, v in sd.items():
            kind = fp8_storage_kind(k, v)
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "fp8":
                q, s, w = quant_fp8_block(v)
                tensors[k] = q
                tensors[k + "_scale_inv"] = s
                deq[k] = w
            elif kind == "bf16":
                tensors[k] = v.to(torch.bfloat16).contiguous()
                deq[k] = tensors[k].float()
            else:
                tensors[k] = v
                deq[k] = v
        missing = load_released_into(model, deq)
        if missing:
            raise RuntimeError("load_released_into missing %s" % missing)
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        notes.append("reference logits come from the fp32 model whose weights are exactly the values this "
                     "file encodes: fp8 * scale_inv (per 128x128 block) for FP8 tensors, bf16 -> f32 for BF16 tensors")
        notes.append("storage: FP8 e4m3 + weight_scale_inv for 2-D linears (attention, indexer wq_b/wk, dense MLP, "
                     "experts, shared experts); BF16 for embed_tokens, lm_head, mlp.gate.weight, "
                     "indexer.weights_proj, RMSNorm gains; F32 for e_score_correction_bias and indexer.k_norm")
        meta_kinds = kinds
    else:
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        meta_kinds = {"f32": len(sd)}
    model.to(DEV)

    cap = Capture(model, deepseek=True)
    # which indexer RoPE pairing reproduces HF's selection? (probe on throwaway random ids)
    probe = torch.randint(cfg.vocab_size, (n_ids,), generator=torch.Generator().manual_seed(seed + 7)).tolist()
    cap.reset()
    forward(model, probe)
    mm = {p: analyze_ds(model, cap, cfg, n_ids, p)["mismatch_rows"] for p in ("half", "interleaved")}
    pairing = min(mm, key=mm.get)
    print("  %s: probe mismatch rows (recompute vs HF) by indexer rope pairing: %s -> using %s" % (name, mm, pairing))
    t0 = time.time()
    ids, rejected = pick_ids_ds(model, cap, cfg, n_ids, gen, cfg.vocab_size, pairing)
    print("  %s: ids picked in %.1fs, %d candidate tokens rejected for near-ties" % (name, time.time() - t0, rejected))
    cap.reset()
    out = forward(model, ids)
    res_h = analyze_ds(model, cap, cfg, n_ids, "half")
    res_il = analyze_ds(model, cap, cfg, n_ids, "interleaved")
    res = res_h if pairing == "half" else res_il
    K, L = cfg.index_topk, cfg.num_hidden_layers
    topk = torch.full((L, n_ids, K), -1, dtype=torch.int32)
    for i in range(L):
        for t in range(n_ids):
            s = res["sel"][i][t]
            topk[i, t, : len(s)] = torch.tensor(s, dtype=torch.int32)
    write_raw(os.path.join(d, "topk.i32"), topk)

    meta = base_meta(name, seed, type(model).__name__)
    logits = save_common(d, ids, out, meta)
    meta["hidden_last"] = hidden_flag(cap, out.hidden_states, model)
    meta["storage_kinds"] = meta_kinds
    meta["notes"] = notes
    meta["dsa"] = {
        "index_topk": K,
        "rows_with_more_than_topk_keys_per_layer": n_ids - K,
        "tie_threshold_rel": TIE_REL,
        "tie_scale": "per row max |I| over valid keys; gap = I_(k) - I_(k+1)",
        "min_rel_gap_all_layers": res["dsa_min_gap"],
        "all_rows_ok": all(res["row_ok"]),
        "rejected_candidate_tokens": rejected,
        "recompute_vs_hf_mismatch_rows_halfsplit_rope": res_h["mismatch_rows"],
        "probe_mismatch_rows_by_pairing": mm,
        "indexer_rope_pairing_matching_hf": pairing,
        "recompute_vs_hf_mismatch_rows_interleaved_rope": res_il["mismatch_rows"],
        "topk_i32": "[n_layers][n_ids][index_topk] int32 LE, HF's selected keys (<= query pos), ascending, -1 padded",
    }
    meta["routing"] = {
        "min_rel_gap": res["route_min_gap"],
        "tokens_x_moe_layers_where_bias_changed_selection": res["bias_changed_tokens"],
        "min_biased_score": res["min_biased_score"],
        "e_score_correction_bias": "0.25*U[0,1) (non-negative; see README)",
    }
    # dense run: same weights, index_topk >= n_ids
    set_index_topk(model, 4 * n_ids)
    cap.reset()
    dense = forward(model, ids).logits[0].float()
    sel_counts = [int(cap.idx_out[i].shape[-1]) if cap.idx_out[i].dtype in (torch.int32, torch.int64) else -1
                  for i in range(L)]
    set_index_topk(model, K)
    rel = float((logits - dense).norm() / dense.norm())
    meta["dense_vs_sparse_rel_l2"] = rel
    meta["dense_run_indexer_k"] = sel_counts
    # sanity: the re-run with the original k reproduces the stored logits
    cap.reset()
    again = forward(model, ids).logits[0].float()
    meta["rerun_max_abs_diff"] = float((again - logits).abs().max())
    cap.remove()

    # round trips
    if fp8:
        # our own decode of the written file -> fresh HF model -> logits
        t = load_file(os.path.join(d, "model.safetensors"))
        dec = {}
        for k, v in t.items():
            if k.endswith("_scale_inv"):
                continue
            if v.dtype == torch.float8_e4m3fn:
                s = t[k + "_scale_inv"]
                o, i = v.shape
                dec[k] = v.float() * s.repeat_interleave(128, 0)[:o].repeat_interleave(128, 1)[:, :i]
            else:
                dec[k] = v.float()
        m2 = build_model(cfg)
        missing = load_released_into(m2, dec)
        m2.to(DEV)
        meta["roundtrip_decode_missing"] = missing
        meta["roundtrip_max_abs_diff"] = float((forward(m2, ids).logits[0].float() - logits).abs().max())
        del m2
    # config.json
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(d)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors", "ids.txt", "logits.f32", "hidden.f32", "topk.i32", "meta.json"):
            os.remove(os.path.join(d, f))
    if not fp8:
        try:
            m2, info = transformers.AutoModelForCausalLM.from_pretrained(
                d, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
            m2 = m2.to(DEV).eval()
            meta["roundtrip_loading_info"] = {k: sorted(v) if isinstance(v, (set, list)) else str(v)
                                              for k, v in info.items()}
            meta["roundtrip_max_abs_diff"] = float((forward(m2, ids).logits[0].float() - logits).abs().max())
        except Exception as e:
            meta["roundtrip_error"] = repr(e)[:500]
    else:
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        rp = c.pop("rope_parameters")
        rs = {"type": rp.get("rope_type", "yarn")}
        for k2 in ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            rs[k2] = rp[k2]
        c["rope_theta"] = rp["rope_theta"]
        c["rope_scaling"] = rs
        c["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                    "weight_block_size": [128, 128]}
        c.setdefault("topk_method", "noaux_tc")
        c.setdefault("scoring_func", "sigmoid")
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
            f.write("\n")
        meta["notes"].append("config.json rewritten to the released-checkpoint spelling: rope_theta + rope_scaling "
                             "{type: yarn, ...} instead of rope_parameters; quantization_config added; "
                             "topk_method/scoring_func added as in the released config")
        # HF's own FP8 loader on the rewritten folder (informational only)
        try:
            qc = transformers.FineGrainedFP8Config(weight_block_size=(128, 128), dequantize=True)
            m3 = transformers.AutoModelForCausalLM.from_pretrained(
                d, attn_implementation="eager", dtype=torch.float32, quantization_config=qc).to(DEV).eval()
            meta["hf_fp8_dequantize_load_max_abs_diff"] = float((forward(m3, ids).logits[0].float() - logits).abs().max())
            del m3
        except Exception as e:
            meta["hf_fp8_dequantize_load_error"] = repr(e)[:300]
    meta["config_fields"] = {k: getattr(cfg, k, None) for k in (
        "index_topk", "index_n_heads", "index_head_dim", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "head_dim", "first_k_dense_replace", "mlp_layer_types", "n_group",
        "topk_group", "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "routed_scaling_factor",
        "norm_topk_prob", "moe_intermediate_size", "intermediate_size")}
    meta["safetensors_keys_layer1"] = sorted(k for k in load_file(os.path.join(d, "model.safetensors")).keys()
                                             if k.startswith("model.layers.1.") and ".experts." not in k) + \
        sorted(k for k in load_file(os.path.join(d, "model.safetensors")).keys()
               if k.startswith("model.layers.1.mlp.experts.0."))
    finish(d, meta)
    return {"fixture": name, "n_params": n_params(model), "n_ids": n_ids,
            "max_abs_logit": meta["max_abs_logit"], "dense_rel": rel, "meta": meta}


def check_fp8(d):
    """Diagnostic: load an FP8 fixture with HF's own FP8 loader (dequantize=True) and compare every
    weight with our decode (fp8 * block scale)."""
    t = load_file(os.path.join(d, "model.safetensors"))
    qc = transformers.FineGrainedFP8Config(weight_block_size=(128, 128), dequantize=True)
    m, info = transformers.AutoModelForCausalLM.from_pretrained(
        d, attn_implementation="eager", dtype=torch.float32, quantization_config=qc, output_loading_info=True)
    print("loading info:", {k: (sorted(v)[:8] if isinstance(v, (set, list)) else v) for k, v in info.items()})
    hf = released_state_dict(m, m.config)
    for k, v in sorted(t.items()):
        if k.endswith("_scale_inv"):
            continue
        mine = v.float()
        if v.dtype == torch.float8_e4m3fn:
            s = t[k + "_scale_inv"]
            o, i = v.shape
            mine = v.float() * s.repeat_interleave(128, 0)[:o].repeat_interleave(128, 1)[:, :i]
        if k not in hf:
            print("  %-60s missing in HF model" % k)
            continue
        h = hf[k]
        if h.shape != mine.shape:
            print("  %-60s shape HF %s vs file %s" % (k, tuple(h.shape), tuple(mine.shape)))
            continue
        diff = float((h - mine).abs().max())
        if diff > 0:
            ratio = float((h.norm() / mine.norm())) if mine.norm() > 0 else float("nan")
            print("  %-60s %s max diff %.3g  |HF|/|file| %.4f  HF dtype %s" % (k, str(v.dtype), diff, ratio, h.dtype))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=False)
    ap.add_argument("--only", default="")
    ap.add_argument("--check-fp8", default="", help="diagnostic: compare HF's FP8 loader with our decode")
    a = ap.parse_args()
    setup_numerics()
    if a.check_fp8:
        check_fp8(a.check_fp8)
        return
    print("transformers", transformers.__version__, "torch", torch.__version__, "device", DEV)
    os.makedirs(a.out, exist_ok=True)
    plan = [("llama", 1001, None), ("qwen2", 1002, None), ("qwen3", 1003, None),
            ("dsv32", 2001, False), ("dsv32_fp8", 2002, True)]
    rows, failed = [], []
    for name, seed, fp8 in plan:
        if a.only and name not in a.only.split(","):
            continue
        t0 = time.time()
        print("== %s (seed %d)" % (name, seed))
        try:
            if fp8 is None:
                r = make_llama_like(a.out, name, seed)
            else:
                r = make_ds(a.out, name, seed, fp8)
                m = r.pop("meta")
                print("  dsa:", json.dumps(m["dsa"]))
                print("  routing:", json.dumps(m["routing"]))
                print("  hidden_last:", m["hidden_last"], " roundtrip:", m.get("roundtrip_max_abs_diff"),
                      m.get("roundtrip_error", ""), m.get("hf_fp8_dequantize_load_max_abs_diff", ""),
                      m.get("hf_fp8_dequantize_load_error", ""))
                print("  dense_run_indexer_k:", m["dense_run_indexer_k"], "rerun diff", m["rerun_max_abs_diff"])
            rows.append(r)
            print("  done in %.1fs" % (time.time() - t0))
        except Exception:
            traceback.print_exc()
            failed.append(name)
    print()
    print("%-10s %10s %6s %12s %22s %10s" % ("fixture", "n_params", "n_ids", "max|logit|", "dense-vs-sparse relL2", "bytes"))
    for r in rows:
        d = os.path.join(a.out, r["fixture"])
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print("%-10s %10d %6d %12.4f %22s %10d" % (r["fixture"], r["n_params"], r["n_ids"], r["max_abs_logit"],
                                                   "-" if r["dense_rel"] is None else "%.4g" % r["dense_rel"], size))
    if failed:
        print("FAILED:", failed)
        sys.exit(1)


if __name__ == "__main__":
    main()
