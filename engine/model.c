// model.c: loads a model directory (config.json + safetensors), validates every tensor against the
// config (presence, dtype, shape), and exposes f32 weights (in place for aligned F32, converted once for
// BF16/F16/FP8 with 128x128 block scales) as pointers and, for the matrices, F32 struct sd_wmat views.
// Supports per-expert and fused MoE expert layouts. Also the model-level entry points (sd_model_load*).
#include "model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "gguf.h"
#include "model_gguf.h"
#include "safetensors.h"

static enum sd_status own(struct sd_model *m, void *p, struct sd_err *err)
{
    if (m->n_owned == m->cap_owned) {
        size_t nc = m->cap_owned ? m->cap_owned * 2 : 64;
        void **n = realloc(m->owned, nc * sizeof *n);
        if (!n) {
            free(p);
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", m->dir);
        }
        m->owned = n;
        m->cap_owned = nc;
    }
    m->owned[m->n_owned++] = p;
    return SD_OK;
}

static const char *shape_str(const int64_t *s, int n, char *buf, size_t len)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
    return buf;
}

// Fetch tensor `name` with expected shape (n_dims dims in shape[]) as f32.
// optional: absent -> *out = NULL, SD_OK. fp8_src (may be NULL): for an F8_E4M3 tensor, the tensor and its
// checked block scale; NULLs otherwise.
static enum sd_status load_t_src(struct sd_model *m, const char *name, int n_dims, const int64_t *shape, int optional,
                                 const float **out, const struct sd_tensor_info *fp8_src[2], struct sd_err *err)
{
    *out = NULL;
    if (fp8_src)
        fp8_src[0] = fp8_src[1] = NULL;
    const struct sd_tensor_info *t = sd_tensor_set_find(m->tensors, name);
    if (!t) {
        if (optional)
            return SD_OK;
        return sd_err_set(err, SD_ERR_MISSING, "%s: tensor \"%s\" is missing (required by %s)", m->dir, name,
                          m->cfg.arch_name);
    }
    int same = t->n_dims == n_dims;
    for (int i = 0; same && i < n_dims; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char a[96], b[96];
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor \"%s\" has shape %s, config.json implies %s", t->file, name,
                          shape_str(t->shape, t->n_dims, a, sizeof a), shape_str(shape, n_dims, b, sizeof b));
    }
    size_t n = (size_t)t->n_elems;
    if (t->dtype == SD_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        m->weight_bytes_mapped += n * sizeof(float);
        return SD_OK;
    }
    float *buf = malloc(n ? n * sizeof(float) : sizeof(float));
    if (!buf)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory converting tensor \"%s\" (%zu elements)", name, n);
    enum sd_status st;
    if (t->dtype == SD_DTYPE_F8_E4M3) {
        char sname[512];
        snprintf(sname, sizeof sname, "%s_scale_inv", name);
        const struct sd_tensor_info *s = sd_tensor_set_find(m->tensors, sname);
        if (!s) {
            free(buf);
            return sd_err_set(err, SD_ERR_MISSING, "%s: FP8 tensor \"%s\" has no block scale \"%s\"", t->file, name,
                              sname);
        }
        if (n_dims != 2) {
            free(buf);
            return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: FP8 tensor \"%s\" must be 2-D", t->file, name);
        }
        st = sd_dequant_fp8_block(t, s, m->cfg.fp8_block ? m->cfg.fp8_block : 128, buf, err);
        if (st == SD_OK && fp8_src)
            fp8_src[0] = t, fp8_src[1] = s;
    } else if (t->dtype == SD_DTYPE_F32 || t->dtype == SD_DTYPE_BF16 || t->dtype == SD_DTYPE_F16) {
        st = sd_convert_to_f32(t->dtype, t->data, buf, n);
        if (st != SD_OK)
            sd_err_set(err, st, "%s: cannot convert tensor \"%s\"", t->file, name);
    } else {
        st = sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: tensor \"%s\" has dtype %s; weights must be F32, BF16, F16 or "
                        "F8_E4M3", t->file, name, sd_dtype_name(t->dtype));
    }
    if (st != SD_OK) {
        free(buf);
        return st;
    }
    m->weight_bytes_f32 += n * sizeof(float);
    m->weight_bytes_owned += n * sizeof(float);
    if ((st = own(m, buf, err)) != SD_OK)
        return st;
    *out = buf;
    return SD_OK;
}

static enum sd_status load_t(struct sd_model *m, const char *name, int n_dims, const int64_t *shape, int optional,
                             const float **out, struct sd_err *err)
{
    return load_t_src(m, name, n_dims, shape, optional, out, NULL, err);
}

#define T1(name, a, opt, dst)                                                                                          \
    do {                                                                                                               \
        int64_t s_[1] = {(a)};                                                                                         \
        if ((st = load_t(m, name, 1, s_, opt, &(dst), err)) != SD_OK)                                                  \
            return st;                                                                                                 \
    } while (0)
#define T2(name, a, b, opt, dst)                                                                                       \
    do {                                                                                                               \
        int64_t s_[2] = {(a), (b)};                                                                                    \
        if ((st = load_t(m, name, 2, s_, opt, &(dst), err)) != SD_OK)                                                  \
            return st;                                                                                                 \
    } while (0)

static struct sd_wmat f32_view(const float *p, int64_t rows, int64_t cols)
{
    return (struct sd_wmat){.data = p, .type = SD_Q_F32, .rows = (int)rows, .cols = (int)cols};
}

// A 2-D matrix [rows, cols] as an F32 view (absent and optional: data NULL).
static enum sd_status load_w(struct sd_model *m, const char *name, int64_t rows, int64_t cols, int optional,
                             struct sd_wmat *out, struct sd_err *err)
{
    int64_t s[2] = {rows, cols};
    const float *p;
    const struct sd_tensor_info *src[2];
    enum sd_status st = load_t_src(m, name, 2, s, optional, &p, src, err);
    *out = f32_view(p, rows, cols);
    if (st != SD_OK || !src[0])
        return st;
    // A released FP8 block-scaled matrix also keeps its source for GPU backends (struct sd_wmat.fp8); load_t_src
    // has checked the tensor, its scale and their shapes.
    const struct sd_tensor_info *t = src[0], *sc = src[1];
    size_t ns = (size_t)sc->n_elems;
    float *scale = malloc(ns ? ns * sizeof(float) : sizeof(float));
    if (!scale)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory keeping the FP8 scales of \"%s\"", name);
    if ((st = sd_convert_to_f32(sc->dtype, sc->data, scale, ns)) != SD_OK) {
        free(scale);
        return sd_err_set(err, st, "%s: cannot convert scale tensor \"%s\"", sc->file, sc->name);
    }
    if ((st = own(m, scale, err)) != SD_OK)
        return st;
    out->fp8 = t->data;
    out->fp8_scale = scale;
    out->fp8_block = m->cfg.fp8_block ? m->cfg.fp8_block : 128;
    return SD_OK;
}

#define W2(name, a, b, opt, dst)                                                                                       \
    do {                                                                                                               \
        if ((st = load_w(m, name, a, b, opt, &(dst), err)) != SD_OK)                                                   \
            return st;                                                                                                 \
    } while (0)

static enum sd_status load_mlp(struct sd_model *m, const char *pre, int inter, struct sd_wmat *g, struct sd_wmat *u,
                               struct sd_wmat *d, struct sd_err *err)
{
    enum sd_status st;
    char n[256];
    int H = m->cfg.hidden_size;
    snprintf(n, sizeof n, "%s.gate_proj.weight", pre);
    W2(n, inter, H, 0, *g);
    snprintf(n, sizeof n, "%s.up_proj.weight", pre);
    W2(n, inter, H, 0, *u);
    snprintf(n, sizeof n, "%s.down_proj.weight", pre);
    W2(n, H, inter, 0, *d);
    return SD_OK;
}

static enum sd_status load_experts(struct sd_model *m, int il, struct sd_layer_weights *L, struct sd_err *err)
{
    const struct sd_config *c = &m->cfg;
    enum sd_status st;
    char n[256];
    int E = c->n_routed_experts, I = c->moe_intermediate_size, H = c->hidden_size;
    L->exp_gate = calloc((size_t)E, sizeof *L->exp_gate);
    L->exp_up = calloc((size_t)E, sizeof *L->exp_up);
    L->exp_down = calloc((size_t)E, sizeof *L->exp_down);
    if (!L->exp_gate || !L->exp_up || !L->exp_down)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    // Fused layout (transformers 5): experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I].
    snprintf(n, sizeof n, "model.layers.%d.mlp.experts.gate_up_proj", il);
    if (sd_tensor_set_find(m->tensors, n)) {
        const float *gu, *dn;
        int64_t s3[3] = {E, 2 * I, H};
        if ((st = load_t(m, n, 3, s3, 0, &gu, err)) != SD_OK)
            return st;
        snprintf(n, sizeof n, "model.layers.%d.mlp.experts.down_proj", il);
        int64_t d3[3] = {E, H, I};
        if ((st = load_t(m, n, 3, d3, 0, &dn, err)) != SD_OK)
            return st;
        for (int e = 0; e < E; e++) {
            L->exp_gate[e] = f32_view(gu + (size_t)e * 2 * I * H, I, H);
            L->exp_up[e] = f32_view(gu + (size_t)e * 2 * I * H + (size_t)I * H, I, H);
            L->exp_down[e] = f32_view(dn + (size_t)e * H * I, H, I);
        }
        return SD_OK;
    }
    for (int e = 0; e < E; e++) {
        char pre[128];
        snprintf(pre, sizeof pre, "model.layers.%d.mlp.experts.%d", il, e);
        if ((st = load_mlp(m, pre, I, &L->exp_gate[e], &L->exp_up[e], &L->exp_down[e], err)) != SD_OK)
            return st;
    }
    return SD_OK;
}

static enum sd_status load_layer(struct sd_model *m, int il, struct sd_err *err)
{
    const struct sd_config *c = &m->cfg;
    struct sd_layer_weights *L = &m->layers[il];
    enum sd_status st;
    char n[256];
    int H = c->hidden_size;
#define NM(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, il), n)
    T1(NM("input_layernorm.weight"), H, 0, L->attn_norm);
    T1(NM("post_attention_layernorm.weight"), H, 0, L->ffn_norm);
    if (sd_config_is_deepseek(c)) {
        int nh = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
        int kvr = c->kv_lora_rank;
        if (c->q_lora_rank > 0) {
            W2(NM("self_attn.q_a_proj.weight"), c->q_lora_rank, H, 0, L->wq_a);
            T1(NM("self_attn.q_a_layernorm.weight"), c->q_lora_rank, 0, L->q_a_norm);
            W2(NM("self_attn.q_b_proj.weight"), (int64_t)nh * (dn + dr), c->q_lora_rank, 0, L->wq_b);
        } else {
            W2(NM("self_attn.q_proj.weight"), (int64_t)nh * (dn + dr), H, 0, L->wq_full);
        }
        W2(NM("self_attn.kv_a_proj_with_mqa.weight"), kvr + dr, H, 0, L->wkv_a);
        T1(NM("self_attn.kv_a_layernorm.weight"), kvr, 0, L->kv_a_norm);
        T2(NM("self_attn.kv_b_proj.weight"), (int64_t)nh * (dn + dv), kvr, 0, L->wkv_b);
        W2(NM("self_attn.o_proj.weight"), H, (int64_t)nh * dv, 0, L->wo);
        if (c->arch == SD_ARCH_DEEPSEEK_V32) {
            if (c->q_lora_rank <= 0)
                return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: DeepseekV32 indexer needs q_lora_rank > 0", m->dir);
            int ni = c->index_n_heads, di = c->index_head_dim;
            W2(NM("self_attn.indexer.wq_b.weight"), (int64_t)ni * di, c->q_lora_rank, 0, L->idx_wq_b);
            W2(NM("self_attn.indexer.wk.weight"), di, H, 0, L->idx_wk);
            T1(NM("self_attn.indexer.k_norm.weight"), di, 0, L->idx_k_norm_w);
            T1(NM("self_attn.indexer.k_norm.bias"), di, 0, L->idx_k_norm_b);
            W2(NM("self_attn.indexer.weights_proj.weight"), ni, H, 0, L->idx_wproj);
        }
        L->is_moe = sd_config_layer_is_moe(c, il);
        if (L->is_moe) {
            W2(NM("mlp.gate.weight"), c->n_routed_experts, H, 0, L->router);
            T1(NM("mlp.gate.e_score_correction_bias"), c->n_routed_experts, 1, L->router_bias);
            if ((st = load_experts(m, il, L, err)) != SD_OK)
                return st;
            if (c->n_shared_experts > 0) {
                char pre[128];
                snprintf(pre, sizeof pre, "model.layers.%d.mlp.shared_experts", il);
                if ((st = load_mlp(m, pre, c->n_shared_experts * c->moe_intermediate_size, &L->sh_gate, &L->sh_up,
                                   &L->sh_down, err)) != SD_OK)
                    return st;
            }
            return SD_OK;
        }
    } else {
        int nh = c->n_heads, nkv = c->n_heads_kv, hd = c->head_dim;
        W2(NM("self_attn.q_proj.weight"), (int64_t)nh * hd, H, 0, L->wq);
        W2(NM("self_attn.k_proj.weight"), (int64_t)nkv * hd, H, 0, L->wk);
        W2(NM("self_attn.v_proj.weight"), (int64_t)nkv * hd, H, 0, L->wv);
        W2(NM("self_attn.o_proj.weight"), H, (int64_t)nh * hd, 0, L->wo);
        int opt = !c->attention_bias;
        T1(NM("self_attn.q_proj.bias"), (int64_t)nh * hd, opt, L->bq);
        T1(NM("self_attn.k_proj.bias"), (int64_t)nkv * hd, opt, L->bk);
        T1(NM("self_attn.v_proj.bias"), (int64_t)nkv * hd, opt, L->bv);
        if (c->arch == SD_ARCH_QWEN3) {
            T1(NM("self_attn.q_norm.weight"), hd, 0, L->q_norm);
            T1(NM("self_attn.k_norm.weight"), hd, 0, L->k_norm);
        }
    }
    char pre[128];
    snprintf(pre, sizeof pre, "model.layers.%d.mlp", il);
    return load_mlp(m, pre, c->intermediate_size, &L->w_gate, &L->w_up, &L->w_down, err);
#undef NM
}

void sd_model_free(struct sd_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (int i = 0; i < m->cfg.n_layers; i++) {
            free(m->layers[i].exp_gate);
            free(m->layers[i].exp_up);
            free(m->layers[i].exp_down);
        }
        free(m->layers);
    }
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    sd_tensor_set_free(m->tensors);
    sd_gguf_free(m->gguf);
    free(m->dir);
    free(m);
}

static size_t act_bytes(const struct sd_wmat *w, int T, size_t cur)
{
    size_t b = w->data ? sd_matmul_w_scratch(w->type, T, w->cols) : 0;
    return b > cur ? b : cur;
}

size_t sd_model_act_scratch_bytes(const struct sd_model *m, int T)
{
    size_t b = act_bytes(&m->lm_head, T, 0);
    for (int il = 0; il < m->cfg.n_layers && m->layers; il++) {
        const struct sd_layer_weights *L = &m->layers[il];
        const struct sd_wmat *v[] = {&L->wq,      &L->wk,     &L->wv,       &L->wo,      &L->wq_a,      &L->wq_b,
                                     &L->wq_full, &L->wkv_a,  &L->idx_wq_b, &L->idx_wk,  &L->idx_wproj, &L->w_gate,
                                     &L->w_up,    &L->w_down, &L->router,   &L->sh_gate, &L->sh_up,     &L->sh_down};
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
            b = act_bytes(v[i], T, b);
        if (L->is_moe && L->exp_gate) // experts of a layer share their tensors' type and shape
            b = act_bytes(&L->exp_down[0], T, act_bytes(&L->exp_up[0], T, act_bytes(&L->exp_gate[0], T, b)));
    }
    return b;
}

enum sd_status sd_model_load(const char *dir, struct sd_model **out, struct sd_err *err)
{
    return sd_model_load_ex(dir, NULL, out, err);
}

enum sd_status sd_model_load_ex(const char *dir, const struct sd_model_load_params *p, struct sd_model **out,
                                struct sd_err *err)
{
    *out = NULL;
    {
        char gpath[4096];
        int is_gguf = sd_model_gguf_resolve(dir, gpath, sizeof gpath, err);
        if (is_gguf < 0)
            return err ? err->status : SD_ERR_ARG;
        if (is_gguf)
            return sd_model_load_gguf(gpath, p && p->gguf_dequant, out, err);
    }
    struct sd_model *m = calloc(1, sizeof *m);
    if (!m)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    enum sd_status st;
    m->dir = strdup(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((st = sd_config_load(path, &m->cfg, err)) != SD_OK)
        goto fail;
    if ((st = sd_tensor_set_open_dir(dir, &m->tensors, err)) != SD_OK)
        goto fail;
    const struct sd_config *c = &m->cfg;
    int H = c->hidden_size;
    {
        if ((st = load_w(m, "model.embed_tokens.weight", c->vocab_size, H, 0, &m->embed, err)) != SD_OK)
            goto fail;
        int64_t s1[1] = {H};
        if ((st = load_t(m, "model.norm.weight", 1, s1, 0, &m->norm, err)) != SD_OK)
            goto fail;
        if (c->tie_word_embeddings) {
            m->lm_head = m->embed;
        } else {
            if ((st = load_w(m, "lm_head.weight", c->vocab_size, H, 0, &m->lm_head, err)) != SD_OK)
                goto fail;
        }
    }
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int il = 0; il < c->n_layers; il++)
        if ((st = load_layer(m, il, err)) != SD_OK)
            goto fail;
    *out = m;
    return SD_OK;
fail:
    sd_model_free(m);
    return st;
}
