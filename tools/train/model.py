"""sparsedoc-mini training model: DeepSeek-V3.2 (MLA + lightning indexer + MoE) in plain PyTorch.

Parameter names and shapes equal transformers' DeepseekV32ForCausalLM state dict (fused experts
`mlp.experts.gate_up_proj` [E, 2I, H] and `mlp.experts.down_proj` [E, H, I]), so a state dict loads
into HF unchanged and tools/make_fixtures.released_state_dict gives the released layout.

Attention modes:
  dense : causal SDPA over all keys (pre-training)
  sparse: the indexer's top-k keys per query (DSA), built as a boolean mask from the indexer scores
The math follows docs DSA.md sections 2-4 / HF 5.17: interleaved RoPE in MLA, half-split RoPE on the
first qk_rope_head_dim dims of the indexer q/k, LayerNorm k_norm, signed head weights * H^-1/2,
ReLU(q.k) * D^-1/2, softmax scale (nope+rope)^-1/2 * mscale^2 (YaRN).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """F.scaled_dot_product_attention, or the same math where it is missing (torch < 2.0, CPU checks)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if is_causal:
        Tq, Tk = s.shape[-2], s.shape[-1]
        attn_mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v.float()).to(q.dtype)


def chunk_rows(B, T, elems=1 << 27):
    """Query rows per chunk so that one [B, rows, T] float32 tensor stays near `elems` elements."""
    return int(max(128, min(T, elems // max(1, B * T))))


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dt)


def yarn_get_mscale(scale, mscale):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(cfg):
    """(inv_freq [r/2] float32, attention_scaling): from transformers' rope init when available."""
    try:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        from transformers import DeepseekV32Config
        c = DeepseekV32Config(**cfg)
        rt = c.rope_parameters.get("rope_type", "default")
        if rt == "default":
            base = c.rope_parameters["rope_theta"]
            d = c.qk_rope_head_dim
            inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
            return inv, 1.0, "default(own)"
        inv, att = ROPE_INIT_FUNCTIONS[rt](c, "cpu")
        return inv.float(), float(att), "hf:" + rt
    except Exception as e:  # fall back to our own YaRN formula (DSA.md 2.3)
        rp = cfg["rope_parameters"]
        d = cfg["qk_rope_head_dim"]
        theta, s, L0 = rp["rope_theta"], rp["factor"], rp["original_max_position_embeddings"]
        bf, bs = rp.get("beta_fast", 32), rp.get("beta_slow", 1)
        i = torch.arange(d // 2, dtype=torch.float64)
        w = theta ** (-2.0 * i / d)
        D = lambda r: d * math.log(L0 / (2 * math.pi * r)) / (2 * math.log(theta))
        low, high = max(math.floor(D(bf)), 0), min(math.ceil(D(bs)), d - 1)
        if low == high:
            high += 0.001
        g = ((i - low) / (high - low)).clamp(0, 1)
        return (w / s * g + w * (1 - g)).float(), 1.0, "own-yarn (%s)" % e


def rope_interleaved(x, cos, sin):
    """x [..., T, r]; pairs (2i, 2i+1); cos/sin [T, r/2]. Output in half-split order (as HF)."""
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def rope_half(x, cos, sin):
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Indexer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.hd, self.r = c["index_n_heads"], c["index_head_dim"], c["qk_rope_head_dim"]
        self.wq_b = nn.Linear(c["q_lora_rank"], self.nh * self.hd, bias=False)
        self.wk = nn.Linear(c["hidden_size"], self.hd, bias=False)
        self.k_norm = nn.LayerNorm(self.hd, eps=1e-6)
        self.weights_proj = nn.Linear(c["hidden_size"], self.nh, bias=False)

    def qkw(self, x, cq, cos, sin):
        """Roped indexer queries [B, T, nh, hd], keys [B, T, hd], head weights [B, T, nh] (float32)."""
        B, T, _ = x.shape
        q = self.wq_b(cq).view(B, T, self.nh, self.hd)
        k = self.k_norm(self.wk(x))
        c2, s2 = cos[:, None, :], sin[:, None, :]
        q = torch.cat([rope_half(q[..., :self.r], c2, s2), q[..., self.r:]], dim=-1)
        k = torch.cat([rope_half(k[..., :self.r], cos, sin), k[..., self.r:]], dim=-1)
        w = self.weights_proj(x).float() * self.nh ** -0.5
        return q, k, w

    def scores_from(self, q, k, w):
        """I [B, R, Tk] (float32) for query rows q [B, R, nh, hd] against keys k [B, Tk, hd]."""
        I = None
        kt = k.transpose(1, 2)
        for j in range(self.nh):
            s = torch.relu(torch.matmul(q[:, :, j, :], kt).float() * self.hd ** -0.5)
            t = w[:, :, j:j + 1] * s
            I = t if I is None else I + t
        return I

    def scores(self, x, cq, cos, sin):
        """I [B, T, T] (float32), no causal mask applied."""
        q, k, w = self.qkw(x, cq, cos, sin)
        return self.scores_from(q, k, w)


class MLA(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H = c["hidden_size"]
        self.nh = c["num_attention_heads"]
        self.dn, self.dr, self.dv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.kvr = c["kv_lora_rank"]
        self.q_a_proj = nn.Linear(H, c["q_lora_rank"], bias=False)
        self.q_a_layernorm = RMSNorm(c["q_lora_rank"], c["rms_norm_eps"])
        self.q_b_proj = nn.Linear(c["q_lora_rank"], self.nh * (self.dn + self.dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(H, self.kvr + self.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(self.kvr, c["rms_norm_eps"])
        self.kv_b_proj = nn.Linear(self.kvr, self.nh * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(self.nh * self.dv, H, bias=False)
        self.indexer = Indexer(c)
        rp = c["rope_parameters"]
        self.scale = (self.dn + self.dr) ** -0.5
        if rp.get("rope_type", "default") != "default" and rp.get("mscale_all_dim"):
            m = yarn_get_mscale(rp["factor"], rp["mscale_all_dim"])
            self.scale *= m * m
        self.stash = None

    def qkv(self, x, cos, sin):
        B, T, _ = x.shape
        cq = self.q_a_layernorm(self.q_a_proj(x))
        q = self.q_b_proj(cq).view(B, T, self.nh, self.dn + self.dr).transpose(1, 2)
        kv = self.kv_a_proj_with_mqa(x)
        ckv, kpe = kv[..., :self.kvr], kv[..., self.kvr:]
        ckv = self.kv_a_layernorm(ckv)
        kvb = self.kv_b_proj(ckv).view(B, T, self.nh, self.dn + self.dv).transpose(1, 2)
        knope, v = kvb[..., :self.dn], kvb[..., self.dn:]
        qpe = rope_interleaved(q[..., self.dn:], cos, sin)
        kpe = rope_interleaved(kpe[:, None], cos, sin).expand(B, self.nh, T, self.dr)
        q = torch.cat([q[..., :self.dn], qpe], -1)
        k = torch.cat([knope, kpe], -1)
        return cq, q, k, v

    def forward(self, x, cos, sin, mode, topk, collect):
        B, T, _ = x.shape
        cq, q, k, v = self.qkv(x, cos, sin)
        dqk = self.dn + self.dr
        vp = F.pad(v, (0, dqk - self.dv)) if dqk > self.dv else v
        if torch.is_autocast_enabled():
            q, k, vp = q.to(torch.bfloat16), k.to(torch.bfloat16), vp.to(torch.bfloat16)
        sel = None
        if mode == "sparse" and T > topk:
            # DSA: each query row attends to the indexer's top-k causal keys. Rows are processed in
            # chunks so no [B, T, T] tensor exists (long sequences); keys beyond the chunk's last row
            # are never visible to it, so each chunk only sees keys [0, r1).
            R = chunk_rows(B, T)
            with torch.no_grad():
                iq, ik, iw = self.indexer.qkw(x.detach(), cq.detach(), cos, sin)
            outs, sel = [], []
            for r0 in range(0, T, R):
                r1 = min(T, r0 + R)
                causal = torch.ones(r1 - r0, r1, dtype=torch.bool, device=x.device).tril(r0)
                with torch.no_grad():
                    I = self.indexer.scores_from(iq[:, r0:r1], ik[:, :r1], iw[:, r0:r1])
                    I = I.masked_fill(~causal, float("-inf"))
                    idx = I.topk(min(topk, r1), dim=-1).indices
                    del I
                    allowed = torch.zeros(B, r1 - r0, r1, dtype=torch.bool, device=x.device).scatter_(-1, idx, True)
                    allowed &= causal
                outs.append(sdpa(q[:, :, r0:r1], k[:, :, :r1], vp[:, :, :r1], attn_mask=allowed[:, None],
                                 scale=self.scale))
                sel.append(idx.to(torch.int32))
            o = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        else:
            o = sdpa(q, k, vp, is_causal=True, scale=self.scale)
        o = o[..., :self.dv].transpose(1, 2).reshape(B, T, self.nh * self.dv)
        if collect:
            # selection kept as top-k indices per row chunk (int32), not as a [B, T, T] mask
            self.stash = (x.detach(), cq.detach(), q.detach(), k.detach(), sel)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, H, I):
        super().__init__()
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    def __init__(self, E, H):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(E, H))
        self.register_buffer("e_score_correction_bias", torch.zeros(E))


class Experts(nn.Module):
    def __init__(self, E, H, I):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.zeros(E, 2 * I, H))
        self.down_proj = nn.Parameter(torch.zeros(E, H, I))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, E = c["hidden_size"], c["n_routed_experts"]
        self.E, self.K = E, c["num_experts_per_tok"]
        self.G, self.TG = c["n_group"], c["topk_group"]
        self.rsf, self.norm = c["routed_scaling_factor"], c["norm_topk_prob"]
        self.I = c["moe_intermediate_size"]
        self.gate = Gate(E, H)
        self.experts = Experts(E, H, self.I)
        self.shared_experts = MLP(H, self.I * c["n_shared_experts"])
        self.last_load = None

    def route(self, xf):
        logits = F.linear(xf.float(), self.gate.weight.float())
        s = torch.sigmoid(logits)
        sc = s + self.gate.e_score_correction_bias.float()
        if self.G > 1:
            gs = sc.view(-1, self.G, self.E // self.G).topk(2, dim=-1)[0].sum(-1)
            gi = gs.topk(self.TG, dim=-1)[1]
            gm = torch.zeros_like(gs).scatter_(1, gi, 1.0)
            em = gm.unsqueeze(-1).expand(-1, self.G, self.E // self.G).reshape(-1, self.E)
            sc = sc.masked_fill(em == 0, 0.0)
        ti = sc.topk(self.K, dim=-1)[1]
        tw = s.gather(1, ti)
        if self.norm:
            tw = tw / (tw.sum(-1, keepdim=True) + 1e-20)
        return ti, tw * self.rsf

    def forward(self, x):
        B, T, H = x.shape
        xf = x.reshape(-1, H)
        ti, tw = self.route(xf)
        with torch.no_grad():
            self.last_load = torch.bincount(ti.flatten(), minlength=self.E).float()
        out = torch.zeros(xf.shape, dtype=torch.float32, device=x.device)
        for e in range(self.E):
            tok, slot = (ti == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            xe = xf[tok]
            gu = xe @ self.experts.gate_up_proj[e].to(xe.dtype).t()
            g, u = gu[:, :self.I], gu[:, self.I:]
            y = (F.silu(g) * u) @ self.experts.down_proj[e].to(xe.dtype).t()
            out.index_add_(0, tok, (y.float() * tw[tok, slot, None]))
        out = out.to(x.dtype) + self.shared_experts(xf).to(x.dtype)
        return out.view(B, T, H)


class Layer(nn.Module):
    def __init__(self, c, i):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = MLA(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c["hidden_size"], c["intermediate_size"]) if i < c["first_k_dense_replace"] else MoE(c)

    def forward(self, h, cos, sin, mode, topk, collect):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mode, topk, collect)
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c, i) for i in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class MiniDSA(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        inv, att, src = rope_inv_freq(c)
        self.rope_src = src
        self.att_scale = att
        self.register_buffer("inv_freq", inv, persistent=False)

    def init_weights(self, seed):
        g = torch.Generator().manual_seed(seed)
        L = self.c["num_hidden_layers"]
        with torch.no_grad():
            for n, p in self.named_parameters():
                if p.dim() == 1:
                    p.copy_(torch.zeros_like(p) if n.endswith("bias") else torch.ones_like(p))
                    continue
                std = 0.02
                if n.endswith("o_proj.weight") or n.endswith("down_proj.weight") or n.endswith("experts.down_proj"):
                    std = 0.02 / math.sqrt(2 * L)
                p.copy_(torch.randn(p.shape, generator=g) * std)

    def rope(self, T, device):
        pos = torch.arange(T, device=device, dtype=torch.float32)
        ang = pos[:, None] * self.inv_freq.to(device)[None, :]
        return torch.cos(ang) * self.att_scale, torch.sin(ang) * self.att_scale

    def forward(self, ids, mode="dense", topk=None, collect=False, return_hidden=False):
        topk = topk or self.c["index_topk"]
        h = self.model.embed_tokens(ids)
        cos, sin = self.rope(ids.shape[1], ids.device)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mode, topk, collect)
        h = self.model.norm(h)
        if return_hidden:
            return h
        return self.lm_head(h)

    def moe_layers(self):
        return [l.mlp for l in self.model.layers if isinstance(l.mlp, MoE)]


def _allowed_rows(B, r0, r1, sel_chunk, device):
    """[B, r1-r0, r1] bool: causal rows r0..r1 (keys < r1), restricted to the selection if given."""
    causal = torch.ones(r1 - r0, r1, dtype=torch.bool, device=device).tril(r0)
    if sel_chunk is None:
        return causal[None].expand(B, -1, -1)
    m = torch.zeros(B, r1 - r0, r1, dtype=torch.bool, device=device).scatter_(-1, sel_chunk.long(), True)
    return m & causal


def main_attn_probs(attn, q, k, m, r0, r1):
    """Head-summed, L1-normalized main attention rows r0..r1 over keys < r1 [B, R, r1] (float32)."""
    with torch.no_grad():
        s = torch.matmul(q[:, :, r0:r1].float(), k[:, :, :r1].float().transpose(-1, -2)) * attn.scale
        s = s.masked_fill(~m[:, None], float("-inf"))
        p = torch.softmax(s, dim=-1).sum(1)
        return p / p.sum(-1, keepdim=True)


def indexer_kl(attn, cos, sin, backward=True):
    """KL(p_main || softmax(I)) over each row's allowed set (causal, or the DSA selection), from the
    layer's stash; mean over rows. Indexer inputs are detached (DSA sparse-training rule). Computed
    in row chunks; with backward=True the indexer gradients are accumulated chunk by chunk (the
    indexer's q/k/w are cut into leaves, then pushed through the projections once)."""
    x, cq, q, k, sel = attn.stash
    attn.stash = None
    B, T, _ = x.shape
    iq, ik, iw = attn.indexer.qkw(x, cq, cos, sin)
    lq, lk, lw = (t.detach().requires_grad_(backward) for t in (iq, ik, iw))
    R = chunk_rows(B, T) if sel is None else None
    bounds = []
    if sel is None:
        bounds = [(r0, min(T, r0 + R), None) for r0 in range(0, T, R)]
    else:
        r0 = 0
        for c in sel:
            bounds.append((r0, r0 + c.shape[1], c))
            r0 += c.shape[1]
    total = 0.0
    for r0, r1, sc in bounds:
        m = _allowed_rows(B, r0, r1, sc, x.device)
        p = main_attn_probs(attn, q, k, m, r0, r1)
        with torch.enable_grad() if backward else torch.no_grad():
            I = attn.indexer.scores_from(lq[:, r0:r1], lk[:, :r1], lw[:, r0:r1])
            I = I.masked_fill(~m, float("-inf"))
            logq = torch.log_softmax(I, dim=-1).masked_fill(~m, 0.0)
            kl = (torch.xlogy(p, p) - p * logq).sum() / (B * T)
        if backward:
            kl.backward()
        total += float(kl.detach())
    if backward:
        torch.autograd.backward([iq, ik, iw], [lq.grad, lk.grad, lw.grad])
    return total
