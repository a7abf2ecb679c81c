// config.c: parses and validates HF config.json into struct sd_config (json-c), accepting both
// `rope_scaling` (released DeepSeek/Llama checkpoints) and `rope_parameters` (transformers 5), and
// derives the RoPE tables (default, llama3, YaRN, linear) and the MLA softmax scale as HF does.
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct json_object *get(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    if (!o || !json_object_object_get_ex(o, k, &v) || json_object_get_type(v) == json_type_null)
        return NULL;
    return v;
}

static int is_num(struct json_object *v)
{
    return v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double));
}

// Integer field: required (def < 0 flags required via `req`) or default.
static enum sd_status get_int(struct json_object *o, const char *k, int req, int64_t def, int64_t lo, int64_t hi,
                              int64_t *out, const char *label, struct sd_err *err)
{
    struct json_object *v = get(o, k);
    if (!v) {
        if (req)
            return sd_err_set(err, SD_ERR_MISSING, "%s: required field \"%s\" is missing", label, k);
        *out = def;
        return SD_OK;
    }
    if (!is_num(v))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: field \"%s\" must be a number", label, k);
    double d = json_object_get_double(v);
    if (d != floor(d) || d < (double)lo || d > (double)hi)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: field \"%s\" = %g is outside [%lld, %lld]", label, k, d,
                          (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return SD_OK;
}

static double get_dbl(struct json_object *o, const char *k, double def)
{
    struct json_object *v = get(o, k);
    return is_num(v) ? json_object_get_double(v) : def;
}

static int get_bool(struct json_object *o, const char *k, int def)
{
    struct json_object *v = get(o, k);
    if (!v)
        return def;
    if (json_object_is_type(v, json_type_boolean))
        return json_object_get_boolean(v);
    if (is_num(v))
        return json_object_get_int(v) != 0;
    return def;
}

static double yarn_mscale(double scale, double m)
{
    return scale <= 1.0 ? 1.0 : 0.1 * m * log(scale) + 1.0;
}

// Fill r (dim rotary dims) from the rope config, mirroring transformers' rope init functions
// (computed in double, stored as float as torch does in float32).
static void rope_table(const struct sd_rope_cfg *c, int dim, struct sd_rope *r, int with_magnitude)
{
    r->dim = dim;
    r->attn_factor = 1.0f;
    int half = dim / 2;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)dim;
        r->inv_freq[i] = (float)(1.0 / pow(c->theta, (double)expo));
    }
    if (c->type == SD_ROPE_LINEAR) {
        for (int i = 0; i < half; i++)
            r->inv_freq[i] = (float)(r->inv_freq[i] / c->factor);
    } else if (c->type == SD_ROPE_LLAMA3) {
        double old = (double)c->original_max_pos;
        double low_wl = old / c->low_freq_factor, high_wl = old / c->high_freq_factor;
        for (int i = 0; i < half; i++) {
            double f = r->inv_freq[i];
            double wl = 2.0 * M_PI / f;
            double v = wl > low_wl ? f / c->factor : f;
            if (!(wl < high_wl) && !(wl > low_wl)) {
                double smooth = (old / wl - c->low_freq_factor) / (c->high_freq_factor - c->low_freq_factor);
                v = (1.0 - smooth) * v / c->factor + smooth * v;
            }
            r->inv_freq[i] = (float)v;
        }
    } else if (c->type == SD_ROPE_YARN) {
        double base = c->theta, L0 = (double)c->original_max_pos;
        double lowd = (dim * log(L0 / (c->beta_fast * 2.0 * M_PI))) / (2.0 * log(base));
        double highd = (dim * log(L0 / (c->beta_slow * 2.0 * M_PI))) / (2.0 * log(base));
        double low = floor(lowd), high = ceil(highd);
        if (low < 0)
            low = 0;
        if (high > dim - 1)
            high = dim - 1;
        if (low == high)
            high += 0.001;
        for (int i = 0; i < half; i++) {
            float pos_freq = powf((float)base, (float)(2 * i) / (float)dim);
            float extra = 1.0f / pos_freq;
            float inter = 1.0f / ((float)c->factor * pos_freq);
            float ramp = ((float)i - (float)low) / (float)(high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float ef = 1.0f - ramp; // extrapolation factor
            r->inv_freq[i] = inter * (1.0f - ef) + extra * ef;
        }
        if (with_magnitude) {
            double af = c->attention_factor;
            if (af < 0) {
                if (c->mscale > 0 && c->mscale_all_dim > 0)
                    af = yarn_mscale(c->factor, c->mscale) / yarn_mscale(c->factor, c->mscale_all_dim);
                else
                    af = yarn_mscale(c->factor, 1.0);
            }
            r->attn_factor = (float)af;
        }
    }
}

int sd_config_is_deepseek(const struct sd_config *cfg)
{
    return cfg->arch == SD_ARCH_DEEPSEEK_V3 || cfg->arch == SD_ARCH_DEEPSEEK_V32;
}

int sd_config_layer_is_moe(const struct sd_config *cfg, int il)
{
    if (!sd_config_is_deepseek(cfg) || cfg->n_routed_experts <= 0)
        return 0;
    return il >= cfg->first_k_dense_replace && (il % (cfg->moe_layer_freq > 0 ? cfg->moe_layer_freq : 1)) == 0;
}

#define GI(key, req, def, lo, hi, dst)                                                                                 \
    do {                                                                                                               \
        int64_t v_;                                                                                                    \
        if ((st = get_int(root, key, req, def, lo, hi, &v_, label, err)) != SD_OK)                                    \
            goto out;                                                                                                  \
        dst = (int)v_;                                                                                                 \
    } while (0)

enum sd_status sd_config_parse(const char *json, const char *label, struct sd_config *cfg, struct sd_err *err)
{
    enum sd_status st = SD_OK;
    memset(cfg, 0, sizeof *cfg);
    struct json_tokener *tk = json_tokener_new();
    if (!tk)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory parsing %s", label);
    struct json_object *root = json_tokener_parse_ex(tk, json, (int)strlen(json));
    enum json_tokener_error jerr = json_tokener_get_error(tk);
    json_tokener_free(tk);
    if (!root || jerr != json_tokener_success) {
        if (root)
            json_object_put(root);
        return sd_err_set(err, SD_ERR_FORMAT, "%s: invalid JSON (%s)", label,
                          jerr == json_tokener_continue || jerr == json_tokener_success // incomplete input
                              ? "unexpected end of the file; it is truncated"
                              : json_tokener_error_desc(jerr));
    }
    if (!json_object_is_type(root, json_type_object)) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: top level must be a JSON object", label);
        goto out;
    }

    // Architecture
    const char *archs = NULL;
    struct json_object *a = get(root, "architectures");
    if (a && json_object_is_type(a, json_type_array) && json_object_array_length(a) > 0)
        archs = json_object_get_string(json_object_array_get_idx(a, 0));
    const char *mt = get(root, "model_type") ? json_object_get_string(get(root, "model_type")) : "";
    if (!archs)
        archs = mt;
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", archs ? archs : "");
    if (!strcmp(archs, "LlamaForCausalLM") || !strcmp(mt, "llama") || !strcmp(archs, "MistralForCausalLM"))
        cfg->arch = SD_ARCH_LLAMA;
    else if (!strcmp(archs, "Qwen2ForCausalLM") || !strcmp(mt, "qwen2"))
        cfg->arch = SD_ARCH_QWEN2;
    else if (!strcmp(archs, "Qwen3ForCausalLM") || !strcmp(mt, "qwen3"))
        cfg->arch = SD_ARCH_QWEN3;
    else if (!strcmp(archs, "DeepseekV32ForCausalLM") || !strcmp(mt, "deepseek_v32"))
        cfg->arch = SD_ARCH_DEEPSEEK_V32;
    else if (!strcmp(archs, "DeepseekV3ForCausalLM") || !strcmp(mt, "deepseek_v3"))
        cfg->arch = SD_ARCH_DEEPSEEK_V3;
    else {
        st = sd_err_set(err, SD_ERR_UNSUPPORTED,
                        "%s: unsupported architecture \"%s\" (model_type \"%s\"); supported: DeepseekV32ForCausalLM, "
                        "DeepseekV3ForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM",
                        label, archs, mt);
        goto out;
    }
    int ds = sd_config_is_deepseek(cfg);

    GI("vocab_size", 1, 0, 1, 1 << 24, cfg->vocab_size);
    GI("hidden_size", 1, 0, 1, 1 << 16, cfg->hidden_size);
    GI("intermediate_size", 1, 0, 1, 1 << 20, cfg->intermediate_size);
    GI("num_hidden_layers", 1, 0, 1, 1024, cfg->n_layers);
    GI("num_attention_heads", 1, 0, 1, 4096, cfg->n_heads);
    GI("num_key_value_heads", 0, cfg->n_heads, 1, 4096, cfg->n_heads_kv);
    GI("head_dim", 0, cfg->hidden_size / cfg->n_heads, 1, 4096, cfg->head_dim);
    {
        int64_t mp;
        if ((st = get_int(root, "max_position_embeddings", 0, 4096, 1, (int64_t)1 << 32, &mp, label, err)) != SD_OK)
            goto out;
        cfg->max_position_embeddings = mp;
    }
    cfg->rms_norm_eps = (float)get_dbl(root, "rms_norm_eps", 1e-6);
    cfg->tie_word_embeddings = get_bool(root, "tie_word_embeddings", cfg->arch == SD_ARCH_LLAMA ? 0 : 0);
    cfg->attention_bias = cfg->arch == SD_ARCH_QWEN2 ? 1 : get_bool(root, "attention_bias", 0);
    GI("bos_token_id", 0, -1, -1, 1 << 24, cfg->bos_token_id);
    GI("eos_token_id", 0, -1, -1, 1 << 24, cfg->eos_token_id);
    if (cfg->n_heads % cfg->n_heads_kv != 0) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                        label, cfg->n_heads, cfg->n_heads_kv);
        goto out;
    }

    // RoPE: rope_parameters (transformers 5) or rope_scaling (released checkpoints) + rope_theta.
    struct json_object *rp = get(root, "rope_parameters");
    if (!rp)
        rp = get(root, "rope_scaling");
    struct sd_rope_cfg *rc = &cfg->rope;
    rc->theta = get_dbl(root, "rope_theta", get_dbl(rp, "rope_theta", 10000.0));
    rc->type = SD_ROPE_DEFAULT;
    rc->attention_factor = -1;
    if (rp) {
        const char *rt = get(rp, "rope_type") ? json_object_get_string(get(rp, "rope_type"))
                         : get(rp, "type")    ? json_object_get_string(get(rp, "type"))
                                              : "default";
        rc->factor = get_dbl(rp, "factor", 1.0);
        rc->original_max_pos = (int64_t)get_dbl(rp, "original_max_position_embeddings", 0);
        if (!strcmp(rt, "default")) {
            rc->type = SD_ROPE_DEFAULT;
        } else if (!strcmp(rt, "linear")) {
            rc->type = SD_ROPE_LINEAR;
        } else if (!strcmp(rt, "llama3")) {
            rc->type = SD_ROPE_LLAMA3;
            rc->low_freq_factor = get_dbl(rp, "low_freq_factor", 1.0);
            rc->high_freq_factor = get_dbl(rp, "high_freq_factor", 4.0);
            if (rc->original_max_pos <= 0 || rc->high_freq_factor == rc->low_freq_factor) {
                st = sd_err_set(err, SD_ERR_FORMAT, "%s: llama3 rope scaling needs original_max_position_embeddings "
                                "and distinct low/high_freq_factor", label);
                goto out;
            }
        } else if (!strcmp(rt, "yarn")) {
            rc->type = SD_ROPE_YARN;
            if (rc->original_max_pos <= 0)
                rc->original_max_pos = cfg->max_position_embeddings;
            if (!get(rp, "factor"))
                rc->factor = (double)cfg->max_position_embeddings / (double)rc->original_max_pos;
            rc->beta_fast = get_dbl(rp, "beta_fast", 0) != 0 ? get_dbl(rp, "beta_fast", 32) : 32;
            rc->beta_slow = get_dbl(rp, "beta_slow", 0) != 0 ? get_dbl(rp, "beta_slow", 1) : 1;
            rc->mscale = get_dbl(rp, "mscale", 0);
            rc->mscale_all_dim = get_dbl(rp, "mscale_all_dim", 0);
            rc->attention_factor = get_dbl(rp, "attention_factor", -1);
        } else {
            st = sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: unsupported rope type \"%s\" (supported: default, linear, "
                            "llama3, yarn)", label, rt);
            goto out;
        }
    }

    if (ds) {
        GI("q_lora_rank", 0, 0, 0, 1 << 16, cfg->q_lora_rank);
        GI("kv_lora_rank", 1, 0, 1, 1 << 16, cfg->kv_lora_rank);
        GI("qk_nope_head_dim", 1, 0, 0, 4096, cfg->qk_nope_head_dim);
        GI("qk_rope_head_dim", 1, 0, 2, 512, cfg->qk_rope_head_dim);
        GI("v_head_dim", 1, 0, 1, 4096, cfg->v_head_dim);
        GI("n_routed_experts", 0, 0, 0, 1 << 16, cfg->n_routed_experts);
        GI("n_shared_experts", 0, 0, 0, 64, cfg->n_shared_experts);
        GI("num_experts_per_tok", 0, 0, 0, 1 << 16, cfg->n_experts_per_tok);
        GI("n_group", 0, 1, 1, 1 << 16, cfg->n_group);
        GI("topk_group", 0, 1, 1, 1 << 16, cfg->topk_group);
        GI("moe_intermediate_size", 0, 0, 0, 1 << 20, cfg->moe_intermediate_size);
        GI("first_k_dense_replace", 0, 0, 0, 1024, cfg->first_k_dense_replace);
        GI("moe_layer_freq", 0, 1, 1, 1024, cfg->moe_layer_freq);
        cfg->routed_scaling_factor = (float)get_dbl(root, "routed_scaling_factor", 1.0);
        cfg->norm_topk_prob = get_bool(root, "norm_topk_prob", 0);
        const char *sf = get(root, "scoring_func") ? json_object_get_string(get(root, "scoring_func")) : "sigmoid";
        cfg->scoring_sigmoid = strcmp(sf, "softmax") != 0;
        if (cfg->arch == SD_ARCH_DEEPSEEK_V32) {
            GI("index_n_heads", 1, 0, 1, 1024, cfg->index_n_heads);
            GI("index_head_dim", 1, 0, 2, 512, cfg->index_head_dim);
            GI("index_topk", 1, 0, 1, 1 << 24, cfg->index_topk);
            if (cfg->index_head_dim < cfg->qk_rope_head_dim) {
                st = sd_err_set(err, SD_ERR_FORMAT, "%s: index_head_dim %d < qk_rope_head_dim %d", label,
                                cfg->index_head_dim, cfg->qk_rope_head_dim);
                goto out;
            }
        }
        if (cfg->n_routed_experts > 0) {
            if (cfg->n_experts_per_tok <= 0 || cfg->n_experts_per_tok > cfg->n_routed_experts ||
                cfg->n_routed_experts % cfg->n_group != 0 || cfg->topk_group > cfg->n_group ||
                cfg->moe_intermediate_size <= 0 || cfg->n_routed_experts > 1024) {
                st = sd_err_set(err, SD_ERR_FORMAT, "%s: inconsistent MoE settings (n_routed_experts %d, "
                                "num_experts_per_tok %d, n_group %d, topk_group %d, moe_intermediate_size %d)",
                                label, cfg->n_routed_experts, cfg->n_experts_per_tok, cfg->n_group, cfg->topk_group,
                                cfg->moe_intermediate_size);
                goto out;
            }
        }
        if (cfg->qk_rope_head_dim > 512 || cfg->qk_rope_head_dim % 2) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: qk_rope_head_dim must be even and <= 512", label);
            goto out;
        }
        rope_table(rc, cfg->qk_rope_head_dim, &cfg->rope_main, 1);
        rope_table(rc, cfg->qk_rope_head_dim, &cfg->rope_indexer, 1);
        double scale = 1.0 / sqrt((double)(cfg->qk_nope_head_dim + cfg->qk_rope_head_dim));
        if (rc->type != SD_ROPE_DEFAULT && rc->mscale_all_dim > 0) {
            double m = yarn_mscale(rc->factor, rc->mscale_all_dim);
            scale *= m * m;
        }
        cfg->attn_scale = (float)scale;
    } else {
        if (cfg->head_dim > 512 || cfg->head_dim % 2) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: head_dim must be even and <= 512", label);
            goto out;
        }
        rope_table(rc, cfg->head_dim, &cfg->rope_main, 1);
        cfg->attn_scale = (float)(1.0 / sqrt((double)cfg->head_dim));
    }

    // Quantization
    struct json_object *q = get(root, "quantization_config");
    if (q) {
        const char *m = get(q, "quant_method") ? json_object_get_string(get(q, "quant_method")) : "";
        if (strcmp(m, "fp8") != 0) {
            st = sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: unsupported quantization method \"%s\" (only fp8 block)",
                            label, m);
            goto out;
        }
        cfg->fp8_block = 128;
        struct json_object *bs = get(q, "weight_block_size");
        if (bs && json_object_is_type(bs, json_type_array) && json_object_array_length(bs) == 2) {
            int b0 = json_object_get_int(json_object_array_get_idx(bs, 0));
            int b1 = json_object_get_int(json_object_array_get_idx(bs, 1));
            if (b0 != b1 || b0 <= 0 || b0 > 4096) {
                st = sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: weight_block_size [%d,%d] unsupported (square only)",
                                label, b0, b1);
                goto out;
            }
            cfg->fp8_block = b0;
        }
    }
out:
    json_object_put(root);
    return st;
}

enum sd_status sd_config_load(const char *path, struct sd_config *cfg, struct sd_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return sd_err_set(err, SD_ERR_IO, "cannot open %s: %s%s", path, strerror(e),
                          e == ENOENT || e == ENOTDIR ? "; a model directory holds config.json and the weights: "
                                                        "check the path given as the model"
                                                      : "");
    }
    char *buf = NULL;
    size_t cap = 0, len = 0;
    enum sd_status st = SD_OK;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            if (cap > ((size_t)16 << 20)) {
                st = sd_err_set(err, SD_ERR_FORMAT, "%s: larger than 16 MiB, not a config.json", path);
                goto out;
            }
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory reading %s", path);
                goto out;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        st = sd_err_set(err, SD_ERR_IO, "error reading %s", path);
        goto out;
    }
    buf[len] = 0;
    st = sd_config_parse(buf, path, cfg, err);
out:
    free(buf);
    fclose(f);
    return st;
}
