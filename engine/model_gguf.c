// model_gguf.c: loads a model from a GGUF file (see model_gguf.h). The metadata is mapped to the HF
// config.json fields and run through sd_config_parse, so GGUF and safetensors models share one
// validation and the same derived RoPE tables. Tensors are checked against the config (GGUF lists
// dimensions innermost first, so ne is the reverse of the HF shape). The weight matrices (attention
// projections, MLP and expert matrices, embeddings, output) stay in their stored type (F16, BF16, Q8_0,
// Q4_0, Q4_K, Q5_K, Q6_K) in place in the mapping, as struct sd_wmat views that the CPU forward
// multiplies with quant.h's dot products; vectors, MLA's kv_b and the MoE router are made f32. With
// gguf_dequant every tensor is dequantized to f32 instead. The llama q/k rows are un-permuted (whole
// rows, so a row-permuted copy in the stored type): llama.cpp's converter interleaves each head's two
// rotary halves for its "normal" RoPE, while this engine applies HF's half-split RoPE. Llama-3 RoPE
// scaling arrives as a rope_freqs tensor of per-frequency divisors and is applied to the derived table.
#include "model_gguf.h"

#include <dirent.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "quant.h"

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int has_magic(const char *path)
{
    FILE *f = fopen(path, "rb");
    char m[4] = {0};
    int ok = f && fread(m, 1, 4, f) == 4 && !memcmp(m, "GGUF", 4);
    if (f)
        fclose(f);
    return ok;
}

int sd_model_gguf_resolve(const char *path, char *out, size_t out_len, struct sd_err *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return 0; // the safetensors loader reports the missing path
    if (S_ISREG(sb.st_mode)) {
        if (!ends_with(path, ".gguf") && !has_magic(path))
            return 0;
        if ((size_t)snprintf(out, out_len, "%s", path) >= out_len) {
            sd_err_set(err, SD_ERR_ARG, "model path too long: %s", path);
            return -1;
        }
        return 1;
    }
    if (!S_ISDIR(sb.st_mode))
        return 0;
    char cj[4096];
    snprintf(cj, sizeof cj, "%s/config.json", path);
    if (stat(cj, &sb) == 0)
        return 0; // an HF directory: safetensors win
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int n = 0;
    char first[256] = "", second[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".gguf"))
            continue;
        if (n == 0)
            snprintf(first, sizeof first, "%s", e->d_name);
        else if (n == 1)
            snprintf(second, sizeof second, "%s", e->d_name);
        n++;
    }
    closedir(d);
    if (n == 0)
        return 0;
    if (n > 1) {
        sd_err_set(err, SD_ERR_ARG, "%s holds %d GGUF files (%s, %s, ...); pass one of them as the model path", path, n,
                   first, second);
        return -1;
    }
    if ((size_t)snprintf(out, out_len, "%s/%s", path, first) >= out_len) {
        sd_err_set(err, SD_ERR_ARG, "model path too long: %s/%s", path, first);
        return -1;
    }
    return 1;
}

// ------------------------------------------------------------------------------------------------ config

struct cfgb {
    const struct sd_gguf *g;
    const char *arch; // metadata prefix
    struct json_object *o;
    struct sd_err *err;
};

static const char *key(const struct cfgb *b, const char *suffix, char *buf, size_t n)
{
    snprintf(buf, n, "%s.%s", b->arch, suffix);
    return buf;
}

// Copy integer metadata <arch>.<suffix> into JSON field `field`; absent: def (required when req).
static enum sd_status put_int(struct cfgb *b, const char *suffix, const char *field, int req, int64_t def)
{
    char k[160];
    int64_t v;
    enum sd_status st = sd_gguf_get_int(b->g, key(b, suffix, k, sizeof k), INT32_MIN, INT64_MAX / 2, &v, b->err);
    if (st == SD_ERR_MISSING && !req) {
        if (def == INT64_MIN)
            return SD_OK;
        v = def;
    } else if (st) {
        return st;
    }
    json_object_object_add(b->o, field, json_object_new_int64(v));
    return SD_OK;
}

static enum sd_status put_dbl(struct cfgb *b, const char *suffix, const char *field, int req, double def)
{
    char k[160];
    double v;
    enum sd_status st = sd_gguf_get_f64(b->g, key(b, suffix, k, sizeof k), &v, b->err);
    if (st == SD_ERR_MISSING && !req)
        v = def;
    else if (st)
        return st;
    json_object_object_add(b->o, field, json_object_new_double(v));
    return SD_OK;
}

static int has_int(const struct cfgb *b, const char *suffix)
{
    char k[160];
    return sd_gguf_find_kv(b->g, key(b, suffix, k, sizeof k)) != NULL;
}

static enum sd_status build_config(const struct sd_gguf *g, const char *path, struct sd_config *cfg, struct sd_err *err)
{
    const char *as;
    size_t al;
    enum sd_status st = sd_gguf_get_str(g, "general.architecture", &as, &al, err);
    if (st)
        return st;
    char arch[64];
    snprintf(arch, sizeof arch, "%.*s", (int)(al < 63 ? al : 63), as);
    struct cfgb b = {g, arch, json_object_new_object(), err};
    if (!b.o)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    int ds = !strcmp(arch, "deepseek2");
    const char *hf = NULL;
    if (!strcmp(arch, "llama"))
        hf = "LlamaForCausalLM";
    else if (!strcmp(arch, "qwen2"))
        hf = "Qwen2ForCausalLM";
    else if (!strcmp(arch, "qwen3"))
        hf = "Qwen3ForCausalLM";
    else if (ds)
        hf = has_int(&b, "attention.indexer.head_count") ? "DeepseekV32ForCausalLM" : "DeepseekV3ForCausalLM";
    if (!hf) {
        st = sd_err_set(err, SD_ERR_UNSUPPORTED,
                        "%s: GGUF architecture \"%s\" is not supported (supported: llama, "
                        "qwen2, qwen3, deepseek2 with or without the DSA indexer)",
                        path, arch);
        goto out;
    }
    {
        int64_t splits;
        if (sd_gguf_get_int(g, "split.count", 0, 1 << 20, &splits, NULL) == SD_OK && splits > 1) {
            st = sd_err_set(err, SD_ERR_UNSUPPORTED,
                            "%s: split GGUF models (%lld parts) are not supported; merge "
                            "them with llama-gguf-split --merge",
                            path, (long long)splits);
            goto out;
        }
    }
    struct json_object *archs = json_object_new_array();
    json_object_array_add(archs, json_object_new_string(hf));
    json_object_object_add(b.o, "architectures", archs);
    const struct sd_gguf_tensor *emb = sd_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) {
        st = sd_err_set(err, SD_ERR_MISSING, "%s: tensor \"token_embd.weight\" is missing or not 2-D", path);
        goto out;
    }
    json_object_object_add(b.o, "vocab_size", json_object_new_int64(emb->ne[1]));
    if ((st = put_int(&b, "embedding_length", "hidden_size", 1, 0)) ||
        (st = put_int(&b, "feed_forward_length", "intermediate_size", 1, 0)) ||
        (st = put_int(&b, "block_count", "num_hidden_layers", 1, 0)) ||
        (st = put_int(&b, "attention.head_count", "num_attention_heads", 1, 0)) ||
        (st = put_int(&b, "attention.head_count_kv", "num_key_value_heads", 0, INT64_MIN)) ||
        (st = put_int(&b, "context_length", "max_position_embeddings", 0, INT64_MIN)) ||
        (st = put_dbl(&b, "attention.layer_norm_rms_epsilon", "rms_norm_eps", 0, 1e-6)) ||
        (st = put_dbl(&b, "rope.freq_base", "rope_theta", 0, 10000.0)))
        goto out;
    if (!ds && (st = put_int(&b, "attention.key_length", "head_dim", 0, INT64_MIN)))
        goto out;
    json_object_object_add(b.o, "tie_word_embeddings",
                           json_object_new_boolean(sd_gguf_find_tensor(g, "output.weight") == NULL));
    json_object_object_add(b.o, "attention_bias",
                           json_object_new_boolean(sd_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL));
    {
        int64_t v;
        if (sd_gguf_get_int(g, "tokenizer.ggml.bos_token_id", 0, 1 << 24, &v, NULL) == SD_OK)
            json_object_object_add(b.o, "bos_token_id", json_object_new_int64(v));
        if (sd_gguf_get_int(g, "tokenizer.ggml.eos_token_id", 0, 1 << 24, &v, NULL) == SD_OK)
            json_object_object_add(b.o, "eos_token_id", json_object_new_int64(v));
    }
    // RoPE scaling
    {
        char k[160];
        const char *rt;
        size_t rl;
        if (sd_gguf_get_str(g, key(&b, "rope.scaling.type", k, sizeof k), &rt, &rl, NULL) == SD_OK &&
            !(rl == 4 && !memcmp(rt, "none", 4))) {
            struct json_object *rp = json_object_new_object();
            json_object_object_add(b.o, "rope_scaling", rp);
            double f = 1.0, v;
            sd_gguf_get_f64(g, key(&b, "rope.scaling.factor", k, sizeof k), &f, NULL);
            json_object_object_add(rp, "factor", json_object_new_double(f));
            if (rl == 6 && !memcmp(rt, "linear", 6)) {
                json_object_object_add(rp, "rope_type", json_object_new_string("linear"));
            } else if (rl == 4 && !memcmp(rt, "yarn", 4)) {
                json_object_object_add(rp, "rope_type", json_object_new_string("yarn"));
                int64_t orig;
                if (sd_gguf_get_int(g, key(&b, "rope.scaling.original_context_length", k, sizeof k), 1, INT64_MAX / 2,
                                    &orig, NULL) == SD_OK)
                    json_object_object_add(rp, "original_max_position_embeddings", json_object_new_int64(orig));
                if (sd_gguf_get_f64(g, key(&b, "rope.scaling.yarn_beta_fast", k, sizeof k), &v, NULL) == SD_OK)
                    json_object_object_add(rp, "beta_fast", json_object_new_double(v));
                if (sd_gguf_get_f64(g, key(&b, "rope.scaling.yarn_beta_slow", k, sizeof k), &v, NULL) == SD_OK)
                    json_object_object_add(rp, "beta_slow", json_object_new_double(v));
                // DeepSeek: yarn_log_multiplier = 0.1 * mscale_all_dim; released checkpoints use mscale ==
                // mscale_all_dim, which GGUF does not store separately.
                if (sd_gguf_get_f64(g, key(&b, "rope.scaling.yarn_log_multiplier", k, sizeof k), &v, NULL) == SD_OK &&
                    v > 0) {
                    json_object_object_add(rp, "mscale", json_object_new_double(v / 0.1));
                    json_object_object_add(rp, "mscale_all_dim", json_object_new_double(v / 0.1));
                }
            } else {
                st = sd_err_set(err, SD_ERR_UNSUPPORTED,
                                "%s: rope scaling type \"%.*s\" is not supported (linear, "
                                "yarn; llama3 comes as a rope_freqs tensor)",
                                path, (int)rl, rt);
                goto out;
            }
        }
    }
    if (ds) {
        char k[160];
        int64_t qk, v, dr;
        if ((st = put_int(&b, "attention.q_lora_rank", "q_lora_rank", 0, 0)) ||
            (st = put_int(&b, "attention.kv_lora_rank", "kv_lora_rank", 1, 0)) ||
            (st = put_int(&b, "rope.dimension_count", "qk_rope_head_dim", 1, 0)) ||
            (st = put_int(&b, "expert_count", "n_routed_experts", 0, 0)) ||
            (st = put_int(&b, "expert_shared_count", "n_shared_experts", 0, 0)) ||
            (st = put_int(&b, "expert_used_count", "num_experts_per_tok", 0, 0)) ||
            (st = put_int(&b, "expert_group_count", "n_group", 0, 1)) ||
            (st = put_int(&b, "expert_group_used_count", "topk_group", 0, 1)) ||
            (st = put_int(&b, "expert_feed_forward_length", "moe_intermediate_size", 0, 0)) ||
            (st = put_int(&b, "leading_dense_block_count", "first_k_dense_replace", 0, 0)) ||
            (st = put_dbl(&b, "expert_weights_scale", "routed_scaling_factor", 0, 1.0)))
            goto out;
        int norm = 0;
        sd_gguf_get_bool(g, key(&b, "expert_weights_norm", k, sizeof k), &norm, NULL);
        json_object_object_add(b.o, "norm_topk_prob", json_object_new_boolean(norm));
        int64_t gate = 1; // llama.cpp: 1 softmax, 2 sigmoid; older DeepSeek-V2 files lack the key (softmax)
        sd_gguf_get_int(g, key(&b, "expert_gating_func", k, sizeof k), 0, 16, &gate, NULL);
        json_object_object_add(b.o, "scoring_func", json_object_new_string(gate == 2 ? "sigmoid" : "softmax"));
        // Newer converters split kv_b into k_b/v_b and then store the MLA dims under *_mla.
        int mla = has_int(&b, "attention.key_length_mla");
        if ((st = sd_gguf_get_int(g, key(&b, mla ? "attention.key_length_mla" : "attention.key_length", k, sizeof k), 1,
                                  1 << 16, &qk, err)) ||
            (st =
                 sd_gguf_get_int(g, key(&b, mla ? "attention.value_length_mla" : "attention.value_length", k, sizeof k),
                                 1, 1 << 16, &v, err)) ||
            (st = sd_gguf_get_int(g, key(&b, "rope.dimension_count", k, sizeof k), 1, 1 << 16, &dr, err)))
            goto out;
        if (qk <= dr) {
            st = sd_err_set(err, SD_ERR_FORMAT,
                            "%s: %s.attention.key_length%s %lld is not larger than the rope "
                            "dimension %lld",
                            path, arch, mla ? "_mla" : "", (long long)qk, (long long)dr);
            goto out;
        }
        json_object_object_add(b.o, "qk_nope_head_dim", json_object_new_int64(qk - dr));
        json_object_object_add(b.o, "v_head_dim", json_object_new_int64(v));
        if (!strcmp(hf, "DeepseekV32ForCausalLM") &&
            ((st = put_int(&b, "attention.indexer.head_count", "index_n_heads", 1, 0)) ||
             (st = put_int(&b, "attention.indexer.key_length", "index_head_dim", 1, 0)) ||
             (st = put_int(&b, "attention.indexer.top_k", "index_topk", 1, 0))))
            goto out;
    }
    st = sd_config_parse(json_object_to_json_string_ext(b.o, JSON_C_TO_STRING_PLAIN), path, cfg, err);
out:
    json_object_put(b.o);
    return st;
}

// ------------------------------------------------------------------------------------------------ tensors

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

// Undo llama.cpp's llama q/k permutation: within each head of hd rows, GGUF row 2j + s holds HF row
// s * hd/2 + j (s = 0, 1: the two rotary halves). Rows are moved whole (rb bytes: f32 values or whole
// quantization blocks, which never straddle rows), so this is right for every type.
static enum sd_status unpermute(void *w, int64_t rows, size_t rb, int n_head, struct sd_err *err)
{
    int64_t hd = rows / n_head;
    if (n_head <= 0 || rows % n_head || hd % 2)
        return sd_err_set(err, SD_ERR_FORMAT, "cannot un-permute %lld rows into %d heads", (long long)rows, n_head);
    uint8_t *tmp = malloc((size_t)hd * rb);
    if (!tmp)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    for (int h = 0; h < n_head; h++) {
        uint8_t *head = (uint8_t *)w + (size_t)(h * hd) * rb;
        for (int64_t j = 0; j < hd / 2; j++)
            for (int s = 0; s < 2; s++)
                memcpy(tmp + (size_t)(s * hd / 2 + j) * rb, head + (size_t)(2 * j + s) * rb, rb);
        memcpy(head, tmp, (size_t)hd * rb);
    }
    free(tmp);
    return SD_OK;
}

static const char *shape_str(const int64_t *s, int n, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
    return buf;
}

// Tensor `name` checked against HF shape hf[nd] and the supported types; *out NULL if absent and optional.
static enum sd_status gfind(struct sd_model *m, const char *name, int nd, const int64_t *hf, int optional,
                            const struct sd_gguf_tensor **out, struct sd_err *err)
{
    *out = NULL;
    const struct sd_gguf_tensor *t = sd_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (optional)
            return SD_OK;
        return sd_err_set(err, SD_ERR_MISSING, "%s: tensor \"%s\" is missing (required by %s)", m->dir, name,
                          m->cfg.arch_name);
    }
    int same = t->n_dims == nd;
    for (int i = 0; same && i < nd; i++)
        same = t->ne[nd - 1 - i] == hf[i];
    if (!same) {
        char a[96], b[96];
        int64_t rev[SD_GGUF_MAX_DIMS];
        for (int i = 0; i < t->n_dims; i++)
            rev[i] = t->ne[t->n_dims - 1 - i];
        return sd_err_set(err, SD_ERR_FORMAT,
                          "%s: tensor \"%s\" has shape %s (outermost first), the metadata implies "
                          "%s",
                          m->dir, name, shape_str(rev, t->n_dims, a, sizeof a), shape_str(hf, nd, b, sizeof b));
    }
    if (!sd_qtype_supported(t->type))
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "%s: tensor \"%s\" has type %s; supported: F32, F16, BF16, Q8_0, "
                          "Q4_0, Q4_K, Q5_K, Q6_K (requantize the model with llama-quantize)",
                          m->dir, name, sd_qtype_name(t->type));
    *out = t;
    return SD_OK;
}

// Tensor `name` with HF shape hf[nd] as f32. perm_heads > 0: un-permute rows into that many heads.
static enum sd_status gload(struct sd_model *m, const char *name, int nd, const int64_t *hf, int optional,
                            int perm_heads, const float **out, struct sd_err *err)
{
    *out = NULL;
    const struct sd_gguf_tensor *t;
    enum sd_status st = gfind(m, name, nd, hf, optional, &t, err);
    if (st || !t)
        return st;
    if (t->type == SD_Q_F32 && !perm_heads && (uintptr_t)t->data % sizeof(float) == 0) {
        *out = t->data;
        m->weight_bytes_mapped += (size_t)t->n_elems * sizeof(float);
        return SD_OK;
    }
    size_t n = (size_t)t->n_elems;
    float *buf = malloc(n * sizeof(float));
    if (!buf)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory dequantizing tensor \"%s\" (%zu elements)", name, n);
    st = sd_dequantize(t->type, t->data, buf, t->n_elems);
    if (st) {
        free(buf);
        return sd_err_set(err, st, "%s: cannot dequantize tensor \"%s\" (%s)", m->dir, name, sd_qtype_name(t->type));
    }
    if (perm_heads > 0 && (st = unpermute(buf, hf[0], (size_t)(nd > 1 ? hf[1] : 1) * sizeof(float), perm_heads, err))) {
        free(buf);
        return st;
    }
    m->weight_bytes_f32 += n * sizeof(float);
    m->weight_bytes_owned += n * sizeof(float);
    if ((st = own(m, buf, err)))
        return st;
    *out = buf;
    return SD_OK;
}

// Weight matrix `name` (HF shape hf[nd], nd 2 or 3: rows of hf[nd-1] elements) in its stored type: *data
// points into the mapping (perm_heads > 0: a row-permuted copy) and *type is the ggml type. F32, and
// every type when the model is loaded with gguf_dequant, go through gload (f32). *data NULL if absent.
static enum sd_status gload_q(struct sd_model *m, const char *name, int nd, const int64_t *hf, int optional,
                              int perm_heads, const void **data, enum sd_qtype *type, struct sd_err *err)
{
    *data = NULL;
    *type = SD_Q_F32;
    const struct sd_gguf_tensor *t;
    enum sd_status st = gfind(m, name, nd, hf, optional, &t, err);
    if (st || !t)
        return st;
    if (m->gguf_dequant || t->type == SD_Q_F32) {
        const float *f;
        st = gload(m, name, nd, hf, optional, perm_heads, &f, err);
        *data = f;
        return st;
    }
    size_t rb = sd_qtype_row_bytes(t->type, hf[nd - 1]), bytes = (size_t)(t->n_elems / hf[nd - 1]) * rb;
    if (rb == 0) // gguf.c already rejects rows that are not whole blocks
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor \"%s\" rows are not whole %s blocks", m->dir, name,
                          sd_qtype_name(t->type));
    if (perm_heads > 0) {
        void *buf = malloc(bytes);
        if (!buf)
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory copying tensor \"%s\" (%zu bytes)", name, bytes);
        memcpy(buf, t->data, bytes);
        if ((st = unpermute(buf, hf[0], rb, perm_heads, err))) {
            free(buf);
            return st;
        }
        m->weight_bytes_owned += bytes;
        if ((st = own(m, buf, err)))
            return st;
        *data = buf;
    } else {
        *data = t->data;
        m->weight_bytes_mapped += bytes;
    }
    *type = t->type;
    m->n_quant_mats++;
    return SD_OK;
}

// A 2-D weight matrix [rows, cols] as a view in its stored type.
static enum sd_status gload_w(struct sd_model *m, const char *name, int64_t rows, int64_t cols, int optional,
                              int perm_heads, struct sd_wmat *out, struct sd_err *err)
{
    int64_t hf[2] = {rows, cols};
    *out = (struct sd_wmat){.type = SD_Q_F32, .rows = (int)rows, .cols = (int)cols};
    return gload_q(m, name, 2, hf, optional, perm_heads, &out->data, &out->type, err);
}

#define G1(nm, a, opt, dst)                                                                                            \
    do {                                                                                                               \
        int64_t s_[1] = {(a)};                                                                                         \
        if ((st = gload(m, nm, 1, s_, opt, 0, &(dst), err)))                                                           \
            return st;                                                                                                 \
    } while (0)
#define G2P(nm, a, b, opt, perm, dst)                                                                                  \
    do {                                                                                                               \
        int64_t s_[2] = {(a), (b)};                                                                                    \
        if ((st = gload(m, nm, 2, s_, opt, perm, &(dst), err)))                                                        \
            return st;                                                                                                 \
    } while (0)
#define G2(nm, a, b, opt, dst) G2P(nm, a, b, opt, 0, dst)
#define W2P(nm, a, b, opt, perm, dst)                                                                                  \
    do {                                                                                                               \
        if ((st = gload_w(m, nm, a, b, opt, perm, &(dst), err)))                                                       \
            return st;                                                                                                 \
    } while (0)
#define W2(nm, a, b, opt, dst) W2P(nm, a, b, opt, 0, dst)

// kv_b [nh*(dn+dv), kvr] from the split form: k_b [nh, kvr, dn] (transposed per head) and v_b [nh, dv, kvr].
static enum sd_status load_kv_b(struct sd_model *m, int il, struct sd_layer_weights *L, struct sd_err *err)
{
    const struct sd_config *c = &m->cfg;
    enum sd_status st;
    char n[128];
    int64_t nh = c->n_heads, dn = c->qk_nope_head_dim, dv = c->v_head_dim, kvr = c->kv_lora_rank;
    snprintf(n, sizeof n, "blk.%d.attn_kv_b.weight", il);
    if (sd_gguf_find_tensor(m->gguf, n)) {
        G2(n, nh * (dn + dv), kvr, 0, L->wkv_b);
        return SD_OK;
    }
    const float *kb, *vb;
    int64_t sk[3] = {nh, kvr, dn}, sv[3] = {nh, dv, kvr};
    snprintf(n, sizeof n, "blk.%d.attn_k_b.weight", il);
    if ((st = gload(m, n, 3, sk, 0, 0, &kb, err)))
        return st;
    snprintf(n, sizeof n, "blk.%d.attn_v_b.weight", il);
    if ((st = gload(m, n, 3, sv, 0, 0, &vb, err)))
        return st;
    float *w = malloc((size_t)(nh * (dn + dv) * kvr) * sizeof *w);
    if (!w)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    for (int64_t h = 0; h < nh; h++) {
        float *head = w + (size_t)(h * (dn + dv) * kvr);
        for (int64_t i = 0; i < dn; i++)
            for (int64_t r = 0; r < kvr; r++)
                head[i * kvr + r] = kb[(h * kvr + r) * dn + i];
        memcpy(head + dn * kvr, vb + (size_t)(h * dv * kvr), (size_t)(dv * kvr) * sizeof *w);
    }
    m->weight_bytes_f32 += (size_t)(nh * (dn + dv) * kvr) * sizeof *w;
    m->weight_bytes_owned += (size_t)(nh * (dn + dv) * kvr) * sizeof *w;
    if ((st = own(m, w, err)))
        return st;
    L->wkv_b = w;
    return SD_OK;
}

static enum sd_status load_layer(struct sd_model *m, int il, struct sd_err *err)
{
    const struct sd_config *c = &m->cfg;
    struct sd_layer_weights *L = &m->layers[il];
    enum sd_status st;
    char n[128];
    int64_t H = c->hidden_size;
#define NM(fmt) (snprintf(n, sizeof n, "blk.%d." fmt, il), n)
    G1(NM("attn_norm.weight"), H, 0, L->attn_norm);
    G1(NM("ffn_norm.weight"), H, 0, L->ffn_norm);
    if (sd_config_is_deepseek(c)) {
        int64_t nh = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
        int64_t kvr = c->kv_lora_rank, ql = c->q_lora_rank;
        if (ql > 0) {
            W2(NM("attn_q_a.weight"), ql, H, 0, L->wq_a);
            G1(NM("attn_q_a_norm.weight"), ql, 0, L->q_a_norm);
            W2(NM("attn_q_b.weight"), nh * (dn + dr), ql, 0, L->wq_b);
        } else {
            W2(NM("attn_q.weight"), nh * (dn + dr), H, 0, L->wq_full);
        }
        W2(NM("attn_kv_a_mqa.weight"), kvr + dr, H, 0, L->wkv_a);
        G1(NM("attn_kv_a_norm.weight"), kvr, 0, L->kv_a_norm);
        if ((st = load_kv_b(m, il, L, err)))
            return st;
        W2(NM("attn_output.weight"), H, nh * dv, 0, L->wo);
        if (c->arch == SD_ARCH_DEEPSEEK_V32) {
            if (ql <= 0)
                return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: the DSA indexer needs q_lora_rank > 0", m->dir);
            int64_t ni = c->index_n_heads, di = c->index_head_dim;
            W2(NM("indexer.attn_q_b.weight"), ni * di, ql, 0, L->idx_wq_b);
            W2(NM("indexer.attn_k.weight"), di, H, 0, L->idx_wk);
            G1(NM("indexer.k_norm.weight"), di, 0, L->idx_k_norm_w);
            G1(NM("indexer.k_norm.bias"), di, 0, L->idx_k_norm_b);
            W2(NM("indexer.proj.weight"), ni, H, 0, L->idx_wproj);
        }
        L->is_moe = sd_config_layer_is_moe(c, il);
        if (L->is_moe) {
            int64_t E = c->n_routed_experts, Ie = c->moe_intermediate_size;
            const float *router; // f32 whatever the stored type: routing decisions stay exact
            G2(NM("ffn_gate_inp.weight"), E, H, 0, router);
            L->router = (struct sd_wmat){.data = router, .type = SD_Q_F32, .rows = (int)E, .cols = (int)H};
            G1(NM("exp_probs_b.bias"), E, 1, L->router_bias);
            L->exp_gate = calloc((size_t)E, sizeof *L->exp_gate);
            L->exp_up = calloc((size_t)E, sizeof *L->exp_up);
            L->exp_down = calloc((size_t)E, sizeof *L->exp_down);
            if (!L->exp_gate || !L->exp_up || !L->exp_down)
                return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            const void *g3, *u3, *d3;
            enum sd_qtype tg, tu, td;
            int64_t sg[3] = {E, Ie, H}, sd[3] = {E, H, Ie};
            if ((st = gload_q(m, NM("ffn_gate_exps.weight"), 3, sg, 0, 0, &g3, &tg, err)) ||
                (st = gload_q(m, NM("ffn_up_exps.weight"), 3, sg, 0, 0, &u3, &tu, err)) ||
                (st = gload_q(m, NM("ffn_down_exps.weight"), 3, sd, 0, 0, &d3, &td, err)))
                return st;
            size_t bg = sd_qtype_row_bytes(tg, H) * (size_t)Ie, bu = sd_qtype_row_bytes(tu, H) * (size_t)Ie;
            size_t bd = sd_qtype_row_bytes(td, Ie) * (size_t)H;
            for (int64_t e = 0; e < E; e++) { // one expert = Ie (or H) whole rows of the 3-D tensor
                L->exp_gate[e] = (struct sd_wmat){
                    .data = (const uint8_t *)g3 + (size_t)e * bg, .type = tg, .rows = (int)Ie, .cols = (int)H};
                L->exp_up[e] = (struct sd_wmat){
                    .data = (const uint8_t *)u3 + (size_t)e * bu, .type = tu, .rows = (int)Ie, .cols = (int)H};
                L->exp_down[e] = (struct sd_wmat){
                    .data = (const uint8_t *)d3 + (size_t)e * bd, .type = td, .rows = (int)H, .cols = (int)Ie};
            }
            if (c->n_shared_experts > 0) {
                int64_t Is = (int64_t)c->n_shared_experts * Ie;
                W2(NM("ffn_gate_shexp.weight"), Is, H, 0, L->sh_gate);
                W2(NM("ffn_up_shexp.weight"), Is, H, 0, L->sh_up);
                W2(NM("ffn_down_shexp.weight"), H, Is, 0, L->sh_down);
            }
            return SD_OK;
        }
    } else {
        int64_t nh = c->n_heads, nkv = c->n_heads_kv, hd = c->head_dim;
        int perm = c->arch == SD_ARCH_LLAMA;
        W2P(NM("attn_q.weight"), nh * hd, H, 0, perm ? (int)nh : 0, L->wq);
        W2P(NM("attn_k.weight"), nkv * hd, H, 0, perm ? (int)nkv : 0, L->wk);
        W2(NM("attn_v.weight"), nkv * hd, H, 0, L->wv);
        W2(NM("attn_output.weight"), H, nh * hd, 0, L->wo);
        int opt = !c->attention_bias;
        int64_t sq[1] = {nh * hd}, sk[1] = {nkv * hd};
        if ((st = gload(m, NM("attn_q.bias"), 1, sq, opt, perm ? (int)nh : 0, &L->bq, err)) ||
            (st = gload(m, NM("attn_k.bias"), 1, sk, opt, perm ? (int)nkv : 0, &L->bk, err)))
            return st;
        G1(NM("attn_v.bias"), nkv * hd, opt, L->bv);
        if (c->arch == SD_ARCH_QWEN3) {
            G1(NM("attn_q_norm.weight"), hd, 0, L->q_norm);
            G1(NM("attn_k_norm.weight"), hd, 0, L->k_norm);
        }
    }
    int64_t I = c->intermediate_size;
    W2(NM("ffn_gate.weight"), I, H, 0, L->w_gate);
    W2(NM("ffn_up.weight"), I, H, 0, L->w_up);
    W2(NM("ffn_down.weight"), H, I, 0, L->w_down);
    return SD_OK;
#undef NM
}

// Llama-3 style scaling: rope_freqs.weight [rope_dim/2] divides each inverse frequency.
static enum sd_status apply_rope_freqs(struct sd_model *m, struct sd_err *err)
{
    const struct sd_gguf_tensor *t = sd_gguf_find_tensor(m->gguf, "rope_freqs.weight");
    if (!t)
        return SD_OK;
    int half = m->cfg.rope_main.dim / 2;
    if (t->n_dims != 1 || t->ne[0] != half || t->type != SD_Q_F32)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: rope_freqs.weight must be F32 [%d] (is %s with %lld elements)",
                          m->dir, half, sd_qtype_name(t->type), (long long)t->n_elems);
    float f[512];
    sd_dequantize(SD_Q_F32, t->data, f, half);
    for (int i = 0; i < half; i++) {
        if (!(f[i] > 0))
            return sd_err_set(err, SD_ERR_FORMAT, "%s: rope_freqs.weight[%d] = %g is not positive", m->dir, i, f[i]);
        m->cfg.rope_main.inv_freq[i] /= f[i];
        if (sd_config_is_deepseek(&m->cfg))
            m->cfg.rope_indexer.inv_freq[i] /= f[i];
    }
    return SD_OK;
}

enum sd_status sd_model_gguf_config(const char *file, struct sd_config *cfg, struct sd_err *err)
{
    struct sd_gguf *g = NULL;
    enum sd_status st = sd_gguf_open(file, &g, err);
    if (st == SD_OK)
        st = build_config(g, file, cfg, err);
    sd_gguf_free(g);
    return st;
}

enum sd_status sd_model_load_gguf(const char *file, int dequant, struct sd_model **out, struct sd_err *err)
{
    *out = NULL;
    struct sd_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(file))) {
        free(m);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    }
    m->gguf_dequant = dequant != 0;
    enum sd_status st;
    if ((st = sd_gguf_open(file, &m->gguf, err)) || (st = build_config(m->gguf, file, &m->cfg, err)) ||
        (st = apply_rope_freqs(m, err)))
        goto fail;
    const struct sd_config *c = &m->cfg;
    int64_t V = c->vocab_size, H = c->hidden_size;
    {
        int64_t s1[1] = {H};
        if ((st = gload_w(m, "token_embd.weight", V, H, 0, 0, &m->embed, err)) ||
            (st = gload(m, "output_norm.weight", 1, s1, 0, 0, &m->norm, err)))
            goto fail;
        if (c->tie_word_embeddings)
            m->lm_head = m->embed;
        else if ((st = gload_w(m, "output.weight", V, H, 0, 0, &m->lm_head, err)))
            goto fail;
    }
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int il = 0; il < c->n_layers; il++)
        if ((st = load_layer(m, il, err)))
            goto fail;
    *out = m;
    return SD_OK;
fail:
    sd_model_free(m);
    return st;
}
