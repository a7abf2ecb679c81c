// synth_model.c: synthetic DeepSeek-V3.2 checkpoint writer for benchmarks (see synth_model.h).
// Weights ~ N(0, 1/fan_in) (uniform with that variance), norms 1, written as one F32 safetensors file.
#include "synth_model.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/stat.h>

struct tdesc {
    char name[160];
    int nd;
    int64_t shape[3];
    int kind; // 0 random 1/sqrt(fan_in), 1 ones, 2 zeros, 3 small bias
};

struct tlist {
    struct tdesc *v;
    int n, cap;
};

static void add(struct tlist *l, int kind, int nd, int64_t a, int64_t b, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(struct tlist *l, int kind, int nd, int64_t a, int64_t b, const char *fmt, ...)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = realloc(l->v, sizeof *l->v * (size_t)l->cap);
    }
    struct tdesc *t = &l->v[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->nd = nd;
    t->shape[0] = a;
    t->shape[1] = b;
    t->kind = kind;
}

static int64_t nelem(const struct tdesc *t)
{
    return t->nd == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
}

int sd_synth_write_deepseek(const char *dir, const struct sd_synth_shape *s, uint64_t seed)
{
    mkdir(dir, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "synth: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f,
            "{\"architectures\":[\"DeepseekV32ForCausalLM\"],\"model_type\":\"deepseek_v32\",\"vocab_size\":%d,"
            "\"hidden_size\":%d,\"intermediate_size\":%d,\"moe_intermediate_size\":%d,\"num_hidden_layers\":%d,"
            "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"q_lora_rank\":%d,\"kv_lora_rank\":%d,"
            "\"qk_nope_head_dim\":%d,\"qk_rope_head_dim\":%d,\"v_head_dim\":%d,\"n_routed_experts\":%d,"
            "\"n_shared_experts\":%d,\"num_experts_per_tok\":%d,\"n_group\":%d,\"topk_group\":%d,"
            "\"first_k_dense_replace\":%d,\"routed_scaling_factor\":2.5,\"norm_topk_prob\":true,"
            "\"index_n_heads\":%d,\"index_head_dim\":%d,\"index_topk\":%d,\"rms_norm_eps\":1e-6,"
            "\"max_position_embeddings\":%d,\"rope_scaling\":{\"type\":\"yarn\",\"factor\":40,"
            "\"original_max_position_embeddings\":4096,\"beta_fast\":32,\"beta_slow\":1,\"mscale\":1.0,"
            "\"mscale_all_dim\":1.0},\"rope_theta\":10000,\"bos_token_id\":0,\"eos_token_id\":1,"
            "\"tie_word_embeddings\":false}\n",
            s->vocab, s->hidden, s->inter, s->moe_inter, s->layers, s->heads, s->heads, s->q_lora, s->kv_lora, s->nope,
            s->rope, s->v, s->experts, s->shared, s->experts_per_tok, s->n_group, s->topk_group, s->first_dense,
            s->index_heads, s->index_dim, s->index_topk, s->max_pos);
    fclose(f);

    struct tlist l = {0};
    int H = s->hidden;
    add(&l, 0, 2, s->vocab, H, "model.embed_tokens.weight");
    add(&l, 1, 1, H, 0, "model.norm.weight");
    add(&l, 0, 2, s->vocab, H, "lm_head.weight");
    for (int i = 0; i < s->layers; i++) {
        add(&l, 1, 1, H, 0, "model.layers.%d.input_layernorm.weight", i);
        add(&l, 1, 1, H, 0, "model.layers.%d.post_attention_layernorm.weight", i);
        add(&l, 0, 2, s->q_lora, H, "model.layers.%d.self_attn.q_a_proj.weight", i);
        add(&l, 1, 1, s->q_lora, 0, "model.layers.%d.self_attn.q_a_layernorm.weight", i);
        add(&l, 0, 2, (int64_t)s->heads * (s->nope + s->rope), s->q_lora, "model.layers.%d.self_attn.q_b_proj.weight", i);
        add(&l, 0, 2, s->kv_lora + s->rope, H, "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", i);
        add(&l, 1, 1, s->kv_lora, 0, "model.layers.%d.self_attn.kv_a_layernorm.weight", i);
        add(&l, 0, 2, (int64_t)s->heads * (s->nope + s->v), s->kv_lora, "model.layers.%d.self_attn.kv_b_proj.weight", i);
        add(&l, 0, 2, H, (int64_t)s->heads * s->v, "model.layers.%d.self_attn.o_proj.weight", i);
        add(&l, 0, 2, (int64_t)s->index_heads * s->index_dim, s->q_lora, "model.layers.%d.self_attn.indexer.wq_b.weight",
            i);
        add(&l, 0, 2, s->index_dim, H, "model.layers.%d.self_attn.indexer.wk.weight", i);
        add(&l, 1, 1, s->index_dim, 0, "model.layers.%d.self_attn.indexer.k_norm.weight", i);
        add(&l, 2, 1, s->index_dim, 0, "model.layers.%d.self_attn.indexer.k_norm.bias", i);
        add(&l, 0, 2, s->index_heads, H, "model.layers.%d.self_attn.indexer.weights_proj.weight", i);
        if (i < s->first_dense) {
            add(&l, 0, 2, s->inter, H, "model.layers.%d.mlp.gate_proj.weight", i);
            add(&l, 0, 2, s->inter, H, "model.layers.%d.mlp.up_proj.weight", i);
            add(&l, 0, 2, H, s->inter, "model.layers.%d.mlp.down_proj.weight", i);
        } else {
            add(&l, 0, 2, s->experts, H, "model.layers.%d.mlp.gate.weight", i);
            add(&l, 3, 1, s->experts, 0, "model.layers.%d.mlp.gate.e_score_correction_bias", i);
            for (int e = 0; e < s->experts; e++) {
                add(&l, 0, 2, s->moe_inter, H, "model.layers.%d.mlp.experts.%d.gate_proj.weight", i, e);
                add(&l, 0, 2, s->moe_inter, H, "model.layers.%d.mlp.experts.%d.up_proj.weight", i, e);
                add(&l, 0, 2, H, s->moe_inter, "model.layers.%d.mlp.experts.%d.down_proj.weight", i, e);
            }
            int si = s->shared * s->moe_inter;
            add(&l, 0, 2, si, H, "model.layers.%d.mlp.shared_experts.gate_proj.weight", i);
            add(&l, 0, 2, si, H, "model.layers.%d.mlp.shared_experts.up_proj.weight", i);
            add(&l, 0, 2, H, si, "model.layers.%d.mlp.shared_experts.down_proj.weight", i);
        }
    }
    // header
    size_t cap = (size_t)l.n * 256 + 64, hl = 0;
    char *hdr = malloc(cap);
    hl += (size_t)snprintf(hdr + hl, cap - hl, "{");
    int64_t off = 0;
    for (int i = 0; i < l.n; i++) {
        struct tdesc *t = &l.v[i];
        int64_t nb = nelem(t) * 4;
        if (t->nd == 1)
            hl += (size_t)snprintf(hdr + hl, cap - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%lld,%lld]}",
                                   i ? "," : "", t->name, (long long)t->shape[0], (long long)off, (long long)(off + nb));
        else
            hl += (size_t)snprintf(hdr + hl, cap - hl,
                                   "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%lld,%lld]}",
                                   i ? "," : "", t->name, (long long)t->shape[0], (long long)t->shape[1],
                                   (long long)off, (long long)(off + nb));
        off += nb;
    }
    hl += (size_t)snprintf(hdr + hl, cap - hl, "}");
    while (hl % 8)
        hdr[hl++] = ' ';
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "synth: cannot write %s: %s\n", path, strerror(errno));
        free(hdr);
        free(l.v);
        return -1;
    }
    uint64_t hl64 = hl;
    fwrite(&hl64, 8, 1, f);
    fwrite(hdr, 1, hl, f);
    uint64_t st = seed | 1;
    float *buf = malloc(sizeof(float) * 65536);
    int rc = 0;
    for (int i = 0; i < l.n && !rc; i++) {
        struct tdesc *t = &l.v[i];
        int64_t n = nelem(t), fan_in = t->nd == 2 ? t->shape[1] : 1;
        float amp = t->kind == 0 ? sqrtf(3.0f / (float)fan_in) : 0.0f;
        for (int64_t done = 0; done < n;) {
            int64_t m = n - done < 65536 ? n - done : 65536;
            for (int64_t j = 0; j < m; j++) {
                st ^= st << 13;
                st ^= st >> 7;
                st ^= st << 17;
                float u = (float)(st >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
                buf[j] = t->kind == 0 ? u * amp : t->kind == 1 ? 1.0f : t->kind == 3 ? 0.05f * (u + 1.0f) : 0.0f;
            }
            if (fwrite(buf, sizeof(float), (size_t)m, f) != (size_t)m) {
                fprintf(stderr, "synth: write failed: %s\n", strerror(errno));
                rc = -1;
                break;
            }
            done += m;
        }
    }
    if (fclose(f) != 0)
        rc = -1;
    free(buf);
    free(hdr);
    free(l.v);
    return rc;
}
