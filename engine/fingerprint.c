// fingerprint.c: the model fingerprint of fingerprint.h. One canonical, length-prefixed stream of
// fields (format version, blob version, weight identity per file, config, effective KV/DSA settings,
// tokenizer.json bytes, chat template) is fed to two XXH3-128 states with different seeds; their
// outputs concatenated are the 32-byte fingerprint. Sampled weight digests are memoized per file.
#include "fingerprint.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "gguf.h"
#include "safetensors.h"

#define FP_MAX_HEADER (100u * 1024 * 1024) // same bound the safetensors reader uses
#define FP_SEED_B 0x9e3779b97f4a7c15ull

struct fp_stream {
    XXH3_state_t a, b;
};

static void fp_put(struct fp_stream *h, const void *data, size_t len)
{
    XXH3_128bits_update(&h->a, data, len);
    XXH3_128bits_update(&h->b, data, len);
}

// A field: tag, 8-byte length, bytes (so no two different field lists give the same stream).
static void fp_field(struct fp_stream *h, const char *tag, const void *data, size_t len)
{
    uint64_t n = len;
    fp_put(h, tag, strlen(tag) + 1);
    fp_put(h, &n, sizeof n);
    if (len)
        fp_put(h, data, len);
}

static void fp_str(struct fp_stream *h, const char *tag, const char *s)
{
    fp_field(h, tag, s ? s : "", s ? strlen(s) : 0);
}

static void fp_i64(struct fp_stream *h, const char *tag, int64_t v)
{
    fp_field(h, tag, &v, sizeof v);
}

static void fp_f64(struct fp_stream *h, const char *tag, double v)
{
    char buf[64];
    int k = snprintf(buf, sizeof buf, "%a", v); // %a: exact, no rounding
    fp_field(h, tag, buf, k > 0 ? (size_t)k : 0);
}

// ---------------------------------------------------------------- sampled digest memo

struct fp_memo {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
    XXH128_hash_t digest;
};

static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fp_memo *memo;
static size_t n_memo, cap_memo;

static int64_t st_mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int memo_get(const char *path, const struct stat *st, XXH128_hash_t *out)
{
    int found = 0;
    pthread_mutex_lock(&memo_lock);
    for (size_t i = 0; i < n_memo && !found; i++) {
        struct fp_memo *e = &memo[i];
        if (e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size && e->mtime_ns == st_mtime_ns(st) &&
            !strcmp(e->path, path)) {
            *out = e->digest;
            found = 1;
        }
    }
    pthread_mutex_unlock(&memo_lock);
    return found;
}

static void memo_put(const char *path, const struct stat *st, XXH128_hash_t d)
{
    pthread_mutex_lock(&memo_lock);
    if (n_memo == cap_memo && n_memo < 4096) { // bounded: a few models' worth of shards
        size_t nc = cap_memo ? cap_memo * 2 : 16;
        struct fp_memo *nm = realloc(memo, nc * sizeof *nm);
        if (nm) {
            memo = nm;
            cap_memo = nc;
        }
    }
    if (n_memo < cap_memo) {
        char *p = strdup(path);
        if (p) {
            memo[n_memo++] = (struct fp_memo){.path = p,
                                              .dev = st->st_dev,
                                              .ino = st->st_ino,
                                              .size = st->st_size,
                                              .mtime_ns = st_mtime_ns(st),
                                              .digest = d};
        }
    }
    pthread_mutex_unlock(&memo_lock);
}

// ---------------------------------------------------------------- per-file weight identity

static enum sd_status read_at(int fd, void *buf, size_t len, off_t off, const char *path, struct sd_err *err)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t k = pread(fd, p, len, off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return sd_err_set(err, SD_ERR_IO, "%s: read failed at offset %lld while fingerprinting: %s", path,
                              (long long)off, k < 0 ? strerror(errno) : "unexpected end of file");
        p += k;
        len -= (size_t)k;
        off += k;
    }
    return SD_OK;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

// gguf_head > 0: a GGUF file whose header (metadata + tensor infos) is its first gguf_head bytes;
// 0: a safetensors file (8-byte length + JSON header).
static enum sd_status fp_weight_file(struct fp_stream *h, const char *path, uint64_t gguf_head, struct sd_err *err)
{
    enum sd_status st = SD_OK;
    uint8_t *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sd_err_set(err, SD_ERR_IO, "%s: cannot open for fingerprinting: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = sd_err_set(err, SD_ERR_IO, "%s: stat failed: %s", path, strerror(errno));
        goto out;
    }
    uint8_t lenb[8];
    if (gguf_head > 0) {
        if (gguf_head < 8 || gguf_head > (uint64_t)sb.st_size || gguf_head - 8 > FP_MAX_HEADER) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: GGUF header of %llu bytes is invalid for a %lld-byte file", path,
                            (unsigned long long)gguf_head, (long long)sb.st_size);
            goto out;
        }
        memset(lenb, 0, sizeof lenb);
    } else if (sb.st_size < 8 || (st = read_at(fd, lenb, 8, 0, path, err)) != SD_OK) {
        if (st == SD_OK)
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: too small to be a safetensors file", path);
        goto out;
    }
    uint64_t hlen = gguf_head > 0 ? gguf_head - 8 : 0; // the hashed head is always 8 + hlen bytes
    for (int i = 7; i >= 0 && gguf_head == 0; i--)
        hlen = (hlen << 8) | lenb[i];
    if (hlen > FP_MAX_HEADER || hlen > (uint64_t)sb.st_size - 8) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: header length %llu is invalid for a %lld-byte file", path,
                        (unsigned long long)hlen, (long long)sb.st_size);
        goto out;
    }
    size_t bufsz = hlen + 8 > SD_FP_WINDOW ? (size_t)hlen + 8 : SD_FP_WINDOW;
    if (!(buf = malloc(bufsz))) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory reading a %llu-byte header", path,
                        (unsigned long long)hlen);
        goto out;
    }
    if ((st = read_at(fd, buf, (size_t)hlen + 8, 0, path, err)) != SD_OK)
        goto out;
    fp_str(h, "file", base_name(path));
    fp_i64(h, "size", (int64_t)sb.st_size);
    fp_field(h, "header", buf, (size_t)hlen + 8);

    XXH128_hash_t dg;
    if (!memo_get(path, &sb, &dg)) {
        XXH3_state_t ds;
        XXH3_128bits_reset(&ds);
        off_t d0 = (off_t)(8 + hlen), dlen = sb.st_size - d0;
        if (dlen <= (off_t)SD_FP_WINDOWS * SD_FP_WINDOW) {
            for (off_t o = 0; o < dlen; o += SD_FP_WINDOW) {
                size_t k = dlen - o < SD_FP_WINDOW ? (size_t)(dlen - o) : SD_FP_WINDOW;
                if ((st = read_at(fd, buf, k, d0 + o, path, err)) != SD_OK)
                    goto out;
                XXH3_128bits_update(&ds, buf, k);
            }
        } else {
            for (int w = 0; w < SD_FP_WINDOWS; w++) {
                off_t o = d0 + (off_t)((double)(dlen - SD_FP_WINDOW) * w / (SD_FP_WINDOWS - 1));
                if ((st = read_at(fd, buf, SD_FP_WINDOW, o, path, err)) != SD_OK)
                    goto out;
                XXH3_128bits_update(&ds, &o, sizeof o);
                XXH3_128bits_update(&ds, buf, SD_FP_WINDOW);
            }
        }
        dg = XXH3_128bits_digest(&ds);
        memo_put(path, &sb, dg);
    }
    fp_field(h, "sampled", &dg, sizeof dg);
out:
    free(buf);
    close(fd);
    return st;
}

static int cmp_base(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int c = strcmp(base_name(x), base_name(y));
    return c ? c : strcmp(x, y);
}

// The distinct files of the model's tensor set, sorted by base name (shard order is stable).
static enum sd_status fp_weights(struct fp_stream *h, const struct sd_model *m, struct sd_err *err)
{
    if (m->gguf) { // one GGUF file: its header, size and sampled data, like a safetensors shard
        fp_i64(h, "n_files", 1);
        // Quantized matrices used as stored (8-bit activations) give other KV than an f32 load of the same file.
        fp_i64(h, "gguf_dequant", m->gguf_dequant != 0);
        return fp_weight_file(h, sd_gguf_path(m->gguf), sd_gguf_data_offset(m->gguf), err);
    }
    size_t n = m->tensors ? sd_tensor_set_count(m->tensors) : 0, nf = 0;
    if (n == 0)
        return sd_err_set(err, SD_ERR_ARG, "cannot fingerprint a model without tensors");
    const char **files = calloc(n, sizeof *files);
    if (!files)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory listing %zu tensors", n);
    for (size_t i = 0; i < n; i++) {
        const char *f = sd_tensor_set_at(m->tensors, i)->file;
        size_t j = 0;
        while (j < nf && files[j] != f && strcmp(files[j], f))
            j++;
        if (j == nf)
            files[nf++] = f;
    }
    qsort(files, nf, sizeof *files, cmp_base);
    enum sd_status st = SD_OK;
    fp_i64(h, "n_files", (int64_t)nf);
    for (size_t i = 0; i < nf && st == SD_OK; i++)
        st = fp_weight_file(h, files[i], 0, err);
    free(files);
    return st;
}

// ---------------------------------------------------------------- config, session, tokenizer

static void fp_config(struct fp_stream *h, const struct sd_config *c)
{
    fp_i64(h, "arch", c->arch);
    fp_i64(h, "vocab", c->vocab_size);
    fp_i64(h, "hidden", c->hidden_size);
    fp_i64(h, "inter", c->intermediate_size);
    fp_i64(h, "layers", c->n_layers);
    fp_i64(h, "heads", c->n_heads);
    fp_i64(h, "heads_kv", c->n_heads_kv);
    fp_i64(h, "head_dim", c->head_dim);
    fp_f64(h, "rms_eps", c->rms_norm_eps);
    fp_i64(h, "max_pos", c->max_position_embeddings);
    fp_i64(h, "tie", c->tie_word_embeddings);
    fp_i64(h, "attn_bias", c->attention_bias);
    fp_i64(h, "rope.type", c->rope.type);
    fp_f64(h, "rope.theta", c->rope.theta);
    fp_f64(h, "rope.factor", c->rope.factor);
    fp_i64(h, "rope.orig", c->rope.original_max_pos);
    fp_f64(h, "rope.lff", c->rope.low_freq_factor);
    fp_f64(h, "rope.hff", c->rope.high_freq_factor);
    fp_f64(h, "rope.beta_fast", c->rope.beta_fast);
    fp_f64(h, "rope.beta_slow", c->rope.beta_slow);
    fp_f64(h, "rope.mscale", c->rope.mscale);
    fp_f64(h, "rope.mscale_all", c->rope.mscale_all_dim);
    fp_f64(h, "rope.attn_factor", c->rope.attention_factor);
    fp_i64(h, "q_lora", c->q_lora_rank);
    fp_i64(h, "kv_lora", c->kv_lora_rank);
    fp_i64(h, "nope", c->qk_nope_head_dim);
    fp_i64(h, "rope_dim", c->qk_rope_head_dim);
    fp_i64(h, "v_dim", c->v_head_dim);
    fp_i64(h, "experts", c->n_routed_experts);
    fp_i64(h, "shared", c->n_shared_experts);
    fp_i64(h, "per_tok", c->n_experts_per_tok);
    fp_i64(h, "n_group", c->n_group);
    fp_i64(h, "topk_group", c->topk_group);
    fp_i64(h, "moe_inter", c->moe_intermediate_size);
    fp_i64(h, "first_dense", c->first_k_dense_replace);
    fp_i64(h, "moe_freq", c->moe_layer_freq);
    fp_f64(h, "routed_scale", c->routed_scaling_factor);
    fp_i64(h, "norm_topk", c->norm_topk_prob);
    fp_i64(h, "sigmoid", c->scoring_sigmoid);
    fp_i64(h, "idx_heads", c->index_n_heads);
    fp_i64(h, "idx_dim", c->index_head_dim);
    fp_i64(h, "fp8_block", c->fp8_block);
    fp_f64(h, "attn_scale", c->attn_scale);
}

static void fp_session(struct fp_stream *h, const struct sd_config *c, const struct sd_session_params *p)
{
    struct sd_session_params d = {0};
    if (!p)
        p = &d;
    int dsa = c->arch == SD_ARCH_DEEPSEEK_V32;
    // Only what changes KV content: not n_ctx, threads or the prefill chunk.
    fp_i64(h, "dsa_mode", dsa ? p->dsa_mode : 0);
    fp_i64(h, "index_topk", dsa ? (p->index_topk > 0 ? p->index_topk : c->index_topk) : 0);
    fp_i64(h, "indexer_fp8", dsa ? (p->indexer_fp8 != 0) : 0);
    if (p->gpu_weights_bf16) // bf16 weights on the GPU give other KV; absent (f32) keeps older fingerprints
        fp_i64(h, "gpu_weights_bf16", 1);
    if (p->gpu_weights_bf16 && !p->gpu_attn_exact && dsa) // tensor-core indexer and attention: other KV
        fp_i64(h, "gpu_attn_tc", 1);
    if (p->fp8_act && c->fp8_block > 0) // quantized GEMM inputs: other KV (only a model with FP8 matrices has any)
        fp_i64(h, "fp8_act", 1);
    if (p->kv_fp8 && sd_config_is_deepseek(c)) // FP8 latent rows: other KV, in another layout
        fp_i64(h, "kv_fp8", 1);
    // gpu_weights_fp8 is left out: its weights are the same values as without it (the f32 dequantization the
    // CPU uses, or their bf16 rounding with gpu_weights_bf16), only the summation order differs.
}

static enum sd_status fp_tokenizer(struct fp_stream *h, const struct sd_model *m, const char *path, struct sd_err *err)
{
    char def[4096];
    int explicit_path = path != NULL;
    if (!path) {
        int k = m->dir ? snprintf(def, sizeof def, "%s/tokenizer.json", m->dir) : -1;
        path = (k > 0 && (size_t)k < sizeof def) ? def : NULL;
    }
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) {
        if (explicit_path)
            return sd_err_set(err, SD_ERR_IO, "%s: cannot open the tokenizer for fingerprinting: %s", path,
                              strerror(errno));
        fp_str(h, "tokenizer", "none");
        return SD_OK;
    }
    XXH3_state_t ts;
    XXH3_128bits_reset(&ts);
    char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0)
        XXH3_128bits_update(&ts, buf, k);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return sd_err_set(err, SD_ERR_IO, "%s: read error while fingerprinting the tokenizer", path);
    XXH128_hash_t d = XXH3_128bits_digest(&ts);
    fp_field(h, "tokenizer", &d, sizeof d);
    return SD_OK;
}

enum sd_status sd_model_fingerprint(const struct sd_model *m, const char *tokenizer_json_path,
                                    const struct sd_session_params *p, const char *chat_template,
                                    uint8_t out[SD_FINGERPRINT_BYTES], struct sd_err *err)
{
    if (!m || !out)
        return sd_err_set(err, SD_ERR_ARG, "sd_model_fingerprint: model and output are required");
    struct fp_stream h;
    memset(&h, 0, sizeof h);
    XXH3_128bits_reset_withSeed(&h.a, 0);
    XXH3_128bits_reset_withSeed(&h.b, FP_SEED_B);
    fp_str(&h, "sparsedoc-fingerprint", "v");
    fp_i64(&h, "fp_version", SD_FINGERPRINT_VERSION);
    fp_i64(&h, "blob_version", SD_KV_BLOB_VERSION);
    fp_i64(&h, "block", SD_KV_BLOCK);
    enum sd_status st = fp_weights(&h, m, err);
    if (st != SD_OK)
        return st;
    fp_config(&h, &m->cfg);
    fp_session(&h, &m->cfg, p);
    if ((st = fp_tokenizer(&h, m, tokenizer_json_path, err)) != SD_OK)
        return st;
    fp_str(&h, "chat_template", chat_template);
    XXH128_canonical_t ca, cb;
    XXH128_canonicalFromHash(&ca, XXH3_128bits_digest(&h.a));
    XXH128_canonicalFromHash(&cb, XXH3_128bits_digest(&h.b));
    memcpy(out, ca.digest, 16);
    memcpy(out + 16, cb.digest, 16);
    return SD_OK;
}

void sd_fingerprint_hex(const uint8_t fp[SD_FINGERPRINT_BYTES], char hex[2 * SD_FINGERPRINT_BYTES + 1])
{
    static const char dig[] = "0123456789abcdef";
    for (int i = 0; i < SD_FINGERPRINT_BYTES; i++) {
        hex[2 * i] = dig[fp[i] >> 4];
        hex[2 * i + 1] = dig[fp[i] & 15];
    }
    hex[2 * SD_FINGERPRINT_BYTES] = 0;
}
