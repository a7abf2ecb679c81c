// session.c: the CPU forward pass. Llama/Qwen2/Qwen3 (GQA, RoPE half-split, Qwen3 q/k norms) and
// DeepSeek-V3/V3.2 (MLA in the absorbed form over a 576-style latent cache, the lightning indexer with
// causal top-k, attention only over the selected tokens, MoE with sigmoid/bias/group-limited routing).
// Weight matrices are multiplied as the model holds them (sd_matmul_w: f32, or a GGUF type with the
// activations quantized, or the weights dequantized in panels for large batches, in a session scratch). All buffers are
// allocated in sd_session_new; eval allocates nothing. With a backend in the params (engine/backend.h) each chunk's
// forward runs there; the host caches here are then the exchange copy for KV export/import and debug fill (synced
// through the backend's kv_download/kv_upload). Opt-in indexer recall statistics (sd_session_recall_*) measure DSA
// selection quality on the CPU path.
#include "session.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "dsa.h"
#include "dtype.h"
#include "ops_cpu.h"
#include "sampler.h"

// Heads of one query that share each gathered cache row in the sparse MLA attention (sd_mla_attn_heads):
// enough to read a row once for many heads, few enough that their outputs stay in the first cache levels.
#define MLA_HEAD_GROUP 16
// Heads per group when a dense session attends over all cached keys (its scratch grows with n_ctx).
#define MLA_DENSE_GROUP 4

struct sd_session {
    const struct sd_model *m;
    struct sd_session_params p;
    int pos;
    int topk;
    int use_indexer; // model has an indexer
    int n_threads;
    // caches
    float *kc, *vc; // GQA [L][n_ctx][n_kv*hd]
    float *lat;     // MLA [L][n_ctx][kvr+dr] (NULL with kv_fp8)
    uint8_t *lat8;  // kv_fp8: MLA rows [L][n_ctx][lat8_row] (sd_mla_kv_fp8_quant)
    size_t lat8_row;
    float *latd;    // kv_fp8: one layer's rows [0, pos0 + T) dequantized, for attention over all rows
    float *tgat;    // kv_fp8: per thread [n_threads][topk][kvr+dr], one task's selected rows dequantized
    float *ikc;     // indexer keys f32 [L][n_ctx][di]
    uint8_t *ik8;   // indexer keys e4m3 [L][n_ctx][di]
    float *iks;     // indexer key scales [L][n_ctx]
    // activations [T][...]
    float *h, *x, *y;
    float *q, *k, *v, *att;            // GQA
    float *cq, *kva, *qlat, *olat, *o; // MLA
    float *iq, *ik, *iw;               // indexer
    uint8_t *iq8;
    float *iqs;
    int32_t *idx;  // [T][topk]
    int *n_valid;  // [T]
    float *scores; // [score_rows][n_ctx]
    int score_rows;
    float *g, *u;       // MLP [T][I]
    float *router, *rw; // [T][E], [T][k]
    int32_t *rsel;      // [T][k]
    int32_t *erows;     // [T] token rows for one expert
    float *ew;          // [T]
    float *ex, *ey;     // [T][H]
    int I_max;
    float *tscratch; // per thread [n_threads][scr_len]
    size_t scr_len;
    int32_t *tscratch_i; // per thread [n_threads][n_ctx]
    void *be_ctx;        // backend state (p.backend != NULL)
    void *qact;          // sd_matmul_w scratch (quantized activations or f32 panels)
    size_t qact_bytes;
    float *xq; // fp8_act: a product's input rows after the FP8 round trip [T][widest input]
    float *lg; // sd_session_eval_sample on the host: the last token's logits [vocab]
    int32_t *pen_ids; // sd_session_eval_sample on a backend: the penalized ids [vocab]
    // indexer recall statistics (NULL rec: off)
    struct sd_recall_stat *rec; // [L]
    double *rec_head;           // [T][n_heads][2] per-head recall and oracle recall of the chunk
    int32_t *rec_i;             // per thread [n_threads][n_ctx + topk]: oracle top-k scratch
    int rec_from;
    sd_recall_row_fn rec_fn;
    void *rec_user;
};

static void *xcalloc(size_t n, size_t sz, int *fail)
{
    if (n == 0)
        n = 1;
    void *p = calloc(n, sz);
    if (!p)
        *fail = 1;
    return p;
}

void sd_session_free(struct sd_session *s)
{
    if (!s)
        return;
    if (s->p.backend && s->be_ctx)
        s->p.backend->free(s->be_ctx);
    void *ptrs[] = {
        s->kc,  s->vc,  s->lat,      s->ikc,        s->ik8,  s->iks,      s->h,      s->x,    s->y,    s->q,     s->k,
        s->v,   s->att, s->cq,       s->kva,        s->qlat, s->olat,     s->o,      s->iq,   s->ik,   s->iw,    s->iq8,
        s->iqs, s->idx, s->n_valid,  s->scores,     s->g,    s->u,        s->router, s->rw,   s->rsel, s->erows, s->ew,
        s->ex,  s->ey,  s->tscratch, s->tscratch_i, s->rec,  s->rec_head, s->rec_i,  s->lat8, s->latd, s->tgat};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        free(ptrs[i]);
    free(s->qact);
    free(s->xq);
    free(s->lg);
    free(s->pen_ids);
    free(s);
}

const struct sd_model *sd_session_model(const struct sd_session *s)
{
    return s->m;
}

int sd_session_pos(const struct sd_session *s)
{
    return s->pos;
}

int sd_session_n_ctx(const struct sd_session *s)
{
    return s->p.n_ctx;
}

size_t sd_session_kv_bytes_per_token(const struct sd_session *s)
{
    const struct sd_config *c = &s->m->cfg;
    size_t per = 0;
    if (sd_config_is_deepseek(c)) {
        per = s->p.kv_fp8 ? sd_mla_kv_fp8_row_bytes(c->kv_lora_rank, c->qk_rope_head_dim)
                          : (size_t)(c->kv_lora_rank + c->qk_rope_head_dim) * sizeof(float);
        if (s->use_indexer)
            per += s->p.indexer_fp8 ? (size_t)c->index_head_dim + sizeof(float)
                                    : (size_t)c->index_head_dim * sizeof(float);
    } else {
        per = 2 * (size_t)c->n_heads_kv * c->head_dim * sizeof(float);
    }
    return per * (size_t)c->n_layers;
}

size_t sd_session_backend_weight_bytes(const struct sd_session *s)
{
    return s->p.backend && s->be_ctx && s->p.backend->weight_bytes ? s->p.backend->weight_bytes(s->be_ctx) : 0;
}

struct sd_backend_counters sd_session_backend_counters(const struct sd_session *s)
{
    struct sd_backend_counters c = {0};
    if (s->p.backend && s->be_ctx && s->p.backend->counters)
        s->p.backend->counters(s->be_ctx, &c);
    return c;
}

enum sd_status sd_session_truncate(struct sd_session *s, int pos, struct sd_err *err)
{
    if (pos < 0 || pos > s->pos)
        return sd_err_set(err, SD_ERR_ARG, "cannot truncate to %d: session holds %d tokens", pos, s->pos);
    s->pos = pos;
    return SD_OK;
}

static const struct {
    const char *name;
    int bf16, fp8;
} gpu_weight_modes[] = {{"f32", 0, 0}, {"bf16", 1, 0}, {"fp8", 1, 1}, {"fp8-f32", 0, 1}};

int sd_gpu_weights_parse(const char *name, int *bf16, int *fp8)
{
    for (size_t i = 0; name && i < sizeof gpu_weight_modes / sizeof gpu_weight_modes[0]; i++)
        if (!strcmp(name, gpu_weight_modes[i].name)) {
            *bf16 = gpu_weight_modes[i].bf16;
            *fp8 = gpu_weight_modes[i].fp8;
            return 0;
        }
    return -1;
}

const char *sd_gpu_weights_name(int bf16, int fp8)
{
    for (size_t i = 0; i < sizeof gpu_weight_modes / sizeof gpu_weight_modes[0]; i++)
        if (gpu_weight_modes[i].bf16 == (bf16 != 0) && gpu_weight_modes[i].fp8 == (fp8 != 0))
            return gpu_weight_modes[i].name;
    return "f32";
}

enum sd_status sd_session_new(const struct sd_model *m, const struct sd_session_params *pin, struct sd_session **out,
                              struct sd_err *err)
{
    *out = NULL;
    const struct sd_config *c = &m->cfg;
    struct sd_session *s = calloc(1, sizeof *s);
    if (!s)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    s->m = m;
    s->p = pin ? *pin : (struct sd_session_params){0};
    if (s->p.n_ctx <= 0)
        s->p.n_ctx = c->max_position_embeddings < 8192 ? (int)c->max_position_embeddings : 8192;
    if ((int64_t)s->p.n_ctx > c->max_position_embeddings) {
        sd_session_free(s);
        return sd_err_set(err, SD_ERR_RANGE, "context of %d tokens exceeds the model's max_position_embeddings %lld",
                          pin->n_ctx, (long long)c->max_position_embeddings);
    }
    if ((s->p.gpu_weights_bf16 || s->p.gpu_weights_fp8) && !s->p.backend) {
        int fp8 = s->p.gpu_weights_fp8 != 0;
        sd_session_free(s);
        return sd_err_set(err, SD_ERR_ARG,
                          "%s weights (gpu_weights_%s) need a GPU backend; the CPU forward pass keeps f32 weights",
                          fp8 ? "FP8" : "bf16", fp8 ? "fp8" : "bf16");
    }
    if (s->p.max_batch <= 0)
        s->p.max_batch = 256;
    if (s->p.max_batch > s->p.n_ctx)
        s->p.max_batch = s->p.n_ctx;
    sd_cpu_set_threads(s->p.n_threads);
    s->n_threads = sd_cpu_threads();
    s->use_indexer = c->arch == SD_ARCH_DEEPSEEK_V32;
    s->topk = s->p.index_topk > 0 ? s->p.index_topk : c->index_topk;
    if (!sd_config_is_deepseek(c))
        s->p.kv_fp8 = 0; // GQA caches stay f32 (session.h)

    int fail = 0;
    size_t L = (size_t)c->n_layers, N = (size_t)s->p.n_ctx, T = (size_t)s->p.max_batch, H = (size_t)c->hidden_size;
    s->h = xcalloc(T * H, sizeof(float), &fail);
    s->x = xcalloc(T * H, sizeof(float), &fail);
    s->y = xcalloc(T * H, sizeof(float), &fail);
    int I = c->intermediate_size;
    if (sd_config_is_deepseek(c)) {
        size_t nh = (size_t)c->n_heads, dn = (size_t)c->qk_nope_head_dim, dr = (size_t)c->qk_rope_head_dim;
        size_t dv = (size_t)c->v_head_dim, kvr = (size_t)c->kv_lora_rank;
        if (s->p.kv_fp8) {
            // Attention over all rows (dense sessions, models without an indexer, and sparse sessions while every
            // key is selected, i.e. up to top-k rows) reads one layer dequantized; selected rows are gathered per task.
            size_t rows = s->use_indexer && s->p.dsa_mode == SD_DSA_SPARSE && (size_t)s->topk < N ? (size_t)s->topk : N;
            s->lat8_row = sd_mla_kv_fp8_row_bytes((int)kvr, (int)dr);
            s->lat8 = xcalloc(L * N * s->lat8_row, 1, &fail);
            s->latd = xcalloc(rows * (kvr + dr), sizeof(float), &fail);
            if (s->use_indexer && s->p.dsa_mode == SD_DSA_SPARSE && (size_t)s->topk < N)
                s->tgat = xcalloc((size_t)s->n_threads * (size_t)s->topk * (kvr + dr), sizeof(float), &fail);
        } else {
            s->lat = xcalloc(L * N * (kvr + dr), sizeof(float), &fail);
        }
        s->cq = xcalloc(T * (size_t)(c->q_lora_rank > 0 ? c->q_lora_rank : 1), sizeof(float), &fail);
        s->q = xcalloc(T * nh * (dn + dr), sizeof(float), &fail);
        s->kva = xcalloc(T * (kvr + dr), sizeof(float), &fail);
        s->qlat = xcalloc(T * nh * kvr, sizeof(float), &fail);
        s->olat = xcalloc(T * nh * kvr, sizeof(float), &fail);
        s->o = xcalloc(T * nh * dv, sizeof(float), &fail);
        if (s->use_indexer) {
            size_t ni = (size_t)c->index_n_heads, di = (size_t)c->index_head_dim;
            if (s->p.indexer_fp8 && (di & (di - 1))) {
                sd_session_free(s);
                return sd_err_set(err, SD_ERR_UNSUPPORTED, "FP8 indexer needs a power-of-two index_head_dim (got %zu)",
                                  di);
            }
            s->ikc = xcalloc(L * N * di, sizeof(float), &fail);
            if (s->p.indexer_fp8) {
                s->ik8 = xcalloc(L * N * di, 1, &fail);
                s->iks = xcalloc(L * N, sizeof(float), &fail);
                s->iq8 = xcalloc(T * ni * di, 1, &fail);
                s->iqs = xcalloc(T * ni, sizeof(float), &fail);
            }
            s->iq = xcalloc(T * ni * di, sizeof(float), &fail);
            s->ik = xcalloc(T * di, sizeof(float), &fail);
            s->iw = xcalloc(T * ni, sizeof(float), &fail);
            s->idx = xcalloc(T * (size_t)s->topk, sizeof(int32_t), &fail);
            // Score rows per pass: bounded to ~16M floats so [queries x keys] is never whole at long contexts.
            size_t rows = ((size_t)16 << 20) / N;
            if (rows < 1)
                rows = 1;
            if (rows > T)
                rows = T;
            s->score_rows = (int)rows;
            s->scores = xcalloc(rows * N, sizeof(float), &fail);
        }
        s->n_valid = xcalloc(T, sizeof(int), &fail);
        if (c->n_routed_experts > 0) {
            int ie = c->moe_intermediate_size, is = c->n_shared_experts * c->moe_intermediate_size;
            if (ie > I)
                I = ie;
            if (is > I)
                I = is;
            size_t E = (size_t)c->n_routed_experts, K = (size_t)c->n_experts_per_tok;
            s->router = xcalloc(T * E, sizeof(float), &fail);
            s->rw = xcalloc(T * K, sizeof(float), &fail);
            s->rsel = xcalloc(T * K, sizeof(int32_t), &fail);
            s->erows = xcalloc(T, sizeof(int32_t), &fail);
            s->ew = xcalloc(T, sizeof(float), &fail);
            s->ex = xcalloc(T * H, sizeof(float), &fail);
            s->ey = xcalloc(T * H, sizeof(float), &fail);
        }
        // sd_mla_attn_heads: one head over any key list (2 (N + 1) floats); a full group over the top-k; for
        // dense sessions also MLA_DENSE_GROUP heads over all N keys.
        size_t nk = N > (size_t)s->topk ? N : (size_t)s->topk,
               gs = c->n_heads < MLA_HEAD_GROUP ? c->n_heads : MLA_HEAD_GROUP;
        size_t gd = c->n_heads < MLA_DENSE_GROUP ? c->n_heads : MLA_DENSE_GROUP;
        s->scr_len = sd_mla_attn_heads_scratch(1, (int)nk);
        if (sd_mla_attn_heads_scratch((int)gs, s->topk) > s->scr_len)
            s->scr_len = sd_mla_attn_heads_scratch((int)gs, s->topk);
        if (s->p.dsa_mode == SD_DSA_DENSE && sd_mla_attn_heads_scratch((int)gd, (int)N) > s->scr_len)
            s->scr_len = sd_mla_attn_heads_scratch((int)gd, (int)N);
    } else {
        size_t kvd = (size_t)c->n_heads_kv * c->head_dim, qd = (size_t)c->n_heads * c->head_dim;
        s->kc = xcalloc(L * N * kvd, sizeof(float), &fail);
        s->vc = xcalloc(L * N * kvd, sizeof(float), &fail);
        s->q = xcalloc(T * qd, sizeof(float), &fail);
        s->k = xcalloc(T * kvd, sizeof(float), &fail);
        s->v = xcalloc(T * kvd, sizeof(float), &fail);
        s->att = xcalloc(T * qd, sizeof(float), &fail);
        s->scr_len = N;
    }
    s->I_max = I;
    s->g = xcalloc(T * (size_t)I, sizeof(float), &fail);
    s->u = xcalloc(T * (size_t)I, sizeof(float), &fail);
    s->tscratch = xcalloc((size_t)s->n_threads * s->scr_len, sizeof(float), &fail);
    s->tscratch_i = xcalloc((size_t)s->n_threads * N, sizeof(int32_t), &fail);
    size_t qb = sd_model_act_scratch_bytes(m, (int)T);
    if (qb)
        s->qact = xcalloc(qb, 1, &fail);
    s->qact_bytes = s->qact ? qb : 0;
    if (s->p.backend && s->p.backend->forward_sample)
        s->pen_ids = xcalloc((size_t)c->vocab_size, sizeof(int32_t), &fail);
    else
        s->lg = xcalloc((size_t)c->vocab_size, sizeof(float), &fail);
    if (s->p.fp8_act && !s->p.backend) {
        size_t kmax = H > (size_t)I ? H : (size_t)I;
        if (sd_config_is_deepseek(c)) {
            size_t ql = (size_t)(c->q_lora_rank > 0 ? c->q_lora_rank : 0), ov = (size_t)c->n_heads * c->v_head_dim;
            kmax = kmax > ql ? kmax : ql;
            kmax = kmax > ov ? kmax : ov;
        } else {
            size_t qd = (size_t)c->n_heads * c->head_dim;
            kmax = kmax > qd ? kmax : qd;
        }
        s->xq = xcalloc(T * kmax, sizeof(float), &fail);
    }
    if (fail) {
        size_t kv = sd_session_kv_bytes_per_token(s) * N;
        sd_session_free(s);
        return sd_err_set(err, SD_ERR_NOMEM,
                          "not enough memory for a %zu-token session (KV cache alone needs %.1f MiB); use a smaller "
                          "context",
                          N, (double)kv / (1 << 20));
    }
    if (s->p.backend) {
        enum sd_status st = s->p.backend->init(m, &s->p, s->topk, &s->be_ctx, err);
        if (st != SD_OK) {
            sd_session_free(s);
            return st;
        }
    }
    *out = s;
    return SD_OK;
}

static struct sd_backend_host_kv host_kv(const struct sd_session *s)
{
    return (struct sd_backend_host_kv){.kc = s->kc,
                                       .vc = s->vc,
                                       .lat = s->lat,
                                       .lat8 = s->lat8,
                                       .ikc = s->ikc,
                                       .ik8 = s->ik8,
                                       .iks = s->iks,
                                       .n_ctx = s->p.n_ctx};
}

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// y[T][w->rows] = x W^T (+ bias): the weight in whatever form the model keeps it. With fp8_act, a matrix released
// as FP8 multiplies the FP8 round trip of x (DeepSeek's W8A8 numerics; the weights are its f32 values already).
static void mm(struct sd_session *s, float *y, const float *x, const struct sd_wmat *w, const float *bias, int T)
{
    if (s->xq && w->fp8) {
        const int K = w->cols;
#pragma omp parallel for schedule(static) if (T > 1)
        for (int t = 0; t < T; t++)
            sd_fp8_act_roundtrip(x + (size_t)t * K, s->xq + (size_t)t * K, K);
        x = s->xq;
    }
    sd_matmul_w(y, x, w, bias, T, s->qact, s->qact_bytes);
}

// ---------------------------------------------------------------- GQA (Llama/Qwen)

static void attn_gqa(struct sd_session *s, int il, int T, int pos0)
{
    const struct sd_config *c = &s->m->cfg;
    const struct sd_layer_weights *L = &s->m->layers[il];
    int nh = c->n_heads, nkv = c->n_heads_kv, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd;
    mm(s, s->q, s->x, &L->wq, L->bq, T);
    mm(s, s->k, s->x, &L->wk, L->bk, T);
    mm(s, s->v, s->x, &L->wv, L->bv, T);
    if (L->q_norm) {
        sd_rmsnorm(s->q, s->q, L->q_norm, T * nh, hd, (size_t)hd, c->rms_norm_eps);
        sd_rmsnorm(s->k, s->k, L->k_norm, T * nkv, hd, (size_t)hd, c->rms_norm_eps);
    }
    size_t N = (size_t)s->p.n_ctx;
    float *kc = s->kc + (size_t)il * N * kvd, *vc = s->vc + (size_t)il * N * kvd;
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < nh; h++)
            sd_rope_apply(&c->rope_main, s->q + (size_t)t * qd + (size_t)h * hd, pos0 + t, 0);
        for (int h = 0; h < nkv; h++)
            sd_rope_apply(&c->rope_main, s->k + (size_t)t * kvd + (size_t)h * hd, pos0 + t, 0);
        memcpy(kc + (size_t)(pos0 + t) * kvd, s->k + (size_t)t * kvd, (size_t)kvd * sizeof(float));
        memcpy(vc + (size_t)(pos0 + t) * kvd, s->v + (size_t)t * kvd, (size_t)kvd * sizeof(float));
    }
    int group = nh / nkv;
    float scale = c->attn_scale;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)                                                              \
    num_threads(s->n_threads) if ((size_t)T * nh * (size_t)(pos0 + T) * hd * 2 >= SD_PAR_MIN_WORK)
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < nh; h++) {
            float *sc = s->tscratch + (size_t)thread_id() * s->scr_len;
            int kvh = h / group;
            sd_attn_row(s->q + (size_t)t * qd + (size_t)h * hd, kc + (size_t)kvh * hd, vc + (size_t)kvh * hd,
                        (size_t)kvd, pos0 + t + 1, hd, scale, s->att + (size_t)t * qd + (size_t)h * hd, sc);
        }
    }
    mm(s, s->y, s->att, &L->wo, NULL, T);
}

// ---------------------------------------------------------------- MLA + DSA (DeepSeek)

// Indexer: writes this chunk's keys to the cache (always), then, when selection is needed, fills
// s->idx rows with each query's top-k token indices. Returns 1 if sparse selection is in effect.
static int indexer(struct sd_session *s, int il, int T, int pos0)
{
    const struct sd_config *c = &s->m->cfg;
    const struct sd_layer_weights *L = &s->m->layers[il];
    int ni = c->index_n_heads, di = c->index_head_dim, dr = c->qk_rope_head_dim;
    size_t N = (size_t)s->p.n_ctx;
    float *ikc = s->ikc + (size_t)il * N * di;
    mm(s, s->ik, s->x, &L->idx_wk, NULL, T);
    sd_layernorm(s->ik, s->ik, L->idx_k_norm_w, L->idx_k_norm_b, T, di, (size_t)di, 1e-6f);
    for (int t = 0; t < T; t++) {
        float *kr = s->ik + (size_t)t * di;
        sd_rope_apply(&c->rope_indexer, kr, pos0 + t, 0); // half-split (NeoX) on the first dr dims
        memcpy(ikc + (size_t)(pos0 + t) * di, kr, (size_t)di * sizeof(float));
        if (s->p.indexer_fp8)
            sd_dsa_quant_fp8_row(kr, di, s->ik8 + ((size_t)il * N + pos0 + t) * di, s->iks + (size_t)il * N + pos0 + t);
    }
    (void)dr;
    int end = pos0 + T;
    if (s->p.dsa_mode == SD_DSA_DENSE || end <= s->topk)
        return 0; // every query attends to all its valid tokens: exactly dense (DSA.md 3.3)

    mm(s, s->iq, s->cq, &L->idx_wq_b, NULL, T);
    mm(s, s->iw, s->x, &L->idx_wproj, NULL, T);
    float wscale = 1.0f / sqrtf((float)ni) / sqrtf((float)di);
    for (int t = 0; t < T; t++) {
        for (int j = 0; j < ni; j++) {
            float *qh = s->iq + ((size_t)t * ni + j) * di;
            sd_rope_apply(&c->rope_indexer, qh, pos0 + t, 0);
            if (s->p.indexer_fp8)
                sd_dsa_quant_fp8_row(qh, di, s->iq8 + ((size_t)t * ni + j) * di, s->iqs + (size_t)t * ni + j);
        }
        for (int j = 0; j < ni; j++)
            s->iw[(size_t)t * ni + j] *= wscale;
        s->n_valid[t] = pos0 + t + 1;
    }
    for (int t0 = 0; t0 < T; t0 += s->score_rows) {
        int nq = T - t0 < s->score_rows ? T - t0 : s->score_rows;
        if (s->p.indexer_fp8) {
            if (sd_dsa_index_scores_fp8(s->iq8 + (size_t)t0 * ni * di, s->iqs + (size_t)t0 * ni,
                                        s->iw + (size_t)t0 * ni, nq, ni, di, s->ik8 + (size_t)il * N * di,
                                        s->iks + (size_t)il * N, end, s->n_valid + t0, s->scores, N, s->n_threads))
                return -1;
        } else
            sd_dsa_index_scores_f32(s->iq + (size_t)t0 * ni * di, s->iw + (size_t)t0 * ni, nq, ni, di, ikc, end,
                                    s->n_valid + t0, s->scores, N, s->n_threads);
            // Each thread takes a contiguous run of rows (neighbouring queries select alike), carrying the
            // threshold hint of sd_dsa_topk_hinted from row to row; the selection does not depend on it.
#pragma omp parallel num_threads(s->n_threads) if (nq > 1 && (size_t)nq * end >= SD_PAR_MIN_WORK)
        {
            struct sd_dsa_topk_hint hint = {0};
            int32_t *scr = s->tscratch_i + (size_t)thread_id() * N;
#pragma omp for schedule(static)
            for (int r = 0; r < nq; r++)
                sd_dsa_topk_hinted(s->scores + (size_t)r * N, s->n_valid[t0 + r], s->topk,
                                   s->idx + (size_t)(t0 + r) * s->topk, scr, &hint);
        }
    }
    return 1;
}

// Indexer recall of this chunk's rows at positions >= rec_from (session.h): dense probabilities of
// each head over keys 0..pos (the dense path's softmax, sd_mla_attn_probs_absorbed), mass on the
// selected set and on the k most probable keys (sd_dsa_topk of the probabilities), mean over heads.
// Runs after the layer's attention, reusing its per-thread scratch.
static void recall_measure(struct sd_session *s, int il, int T, int pos0, int sparse)
{
    const struct sd_config *c = &s->m->cfg;
    int nh = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, kvr = c->kv_lora_rank;
    int dq = dn + dr, dl = kvr + dr, topk = s->topk;
    size_t N = (size_t)s->p.n_ctx;
    const float *lat = s->lat + (size_t)il * N * dl;
    int t_first = s->rec_from > pos0 ? s->rec_from - pos0 : 0;
    if (t_first >= T)
        return;
    // Rows longer than top-k only exist with selection in effect (indexer() returns 0 only when
    // end <= top-k in sparse mode, and recall_start refuses dense mode).
    size_t work = (size_t)(T - t_first) * nh * (size_t)(pos0 + T) * (size_t)dl * 2;
    (void)work; // unused without OpenMP
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(s->n_threads) if (work >= SD_PAR_MIN_WORK)
    for (int t = t_first; t < T; t++) {
        for (int h = 0; h < nh; h++) {
            int n = pos0 + t + 1;
            if (n <= topk || !sparse)
                continue;
            int tid = thread_id();
            float *pr = s->tscratch + (size_t)tid * s->scr_len;
            int32_t *list = s->tscratch_i + (size_t)tid * N;
            for (int u = 0; u < n; u++)
                list[u] = u;
            const float *ql = s->qlat + ((size_t)t * nh + h) * kvr;
            const float *qp = s->q + (size_t)t * nh * dq + (size_t)h * dq + dn;
            sd_mla_attn_probs_absorbed(ql, qp, kvr, dr, lat, (size_t)dl, list, n, c->attn_scale, pr);
            const int32_t *sel = s->idx + (size_t)t * topk;
            double r = 0.0, best = 0.0;
            for (int i = 0; i < topk; i++)
                if (sel[i] >= 0)
                    r += pr[sel[i]];
            int32_t *oi = s->rec_i + (size_t)tid * (N + (size_t)topk);
            int nb = sd_dsa_topk(pr, n, topk, oi + N, oi);
            for (int i = 0; i < nb; i++)
                best += pr[oi[N + i]];
            s->rec_head[((size_t)t * nh + h) * 2] = r;
            s->rec_head[((size_t)t * nh + h) * 2 + 1] = best;
        }
    }
    struct sd_recall_stat *st = &s->rec[il];
    for (int t = t_first; t < T; t++) {
        int pos = pos0 + t;
        if (pos + 1 <= topk || !sparse) {
            st->rows_full++;
            continue;
        }
        double r = 0.0, best = 0.0;
        for (int h = 0; h < nh; h++) {
            r += s->rec_head[((size_t)t * nh + h) * 2];
            best += s->rec_head[((size_t)t * nh + h) * 2 + 1];
        }
        r /= nh;
        best /= nh;
        st->rows++;
        st->sum += r;
        st->best_sum += best;
        if (r < st->min)
            st->min = r;
        if (s->rec_fn) {
            struct sd_recall_row row = {.layer = il,
                                        .pos = pos,
                                        .recall = r,
                                        .best = best,
                                        .n_heads = nh,
                                        .d_lat = kvr,
                                        .d_rope = dr,
                                        .q_lat = s->qlat + (size_t)t * nh * kvr,
                                        .q_pe = s->q + (size_t)t * nh * dq + dn,
                                        .q_pe_stride = dq,
                                        .latent = lat,
                                        .ld_latent = (size_t)dl,
                                        .scale = c->attn_scale,
                                        .sel = s->idx + (size_t)t * topk,
                                        .n_sel = topk};
            s->rec_fn(&row, s->rec_user);
        }
    }
}

static int attn_mla(struct sd_session *s, int il, int T, int pos0)
{
    const struct sd_config *c = &s->m->cfg;
    const struct sd_layer_weights *L = &s->m->layers[il];
    int nh = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    int dv = c->v_head_dim, kvr = c->kv_lora_rank, dq = dn + dr, dl = kvr + dr;
    size_t N = (size_t)s->p.n_ctx;
    if (c->q_lora_rank > 0) {
        mm(s, s->cq, s->x, &L->wq_a, NULL, T);
        sd_rmsnorm(s->cq, s->cq, L->q_a_norm, T, c->q_lora_rank, (size_t)c->q_lora_rank, c->rms_norm_eps);
        mm(s, s->q, s->cq, &L->wq_b, NULL, T);
    } else {
        mm(s, s->q, s->x, &L->wq_full, NULL, T);
    }
    mm(s, s->kva, s->x, &L->wkv_a, NULL, T);
    sd_rmsnorm(s->kva, s->kva, L->kv_a_norm, T, kvr, (size_t)dl, c->rms_norm_eps);
    const float *lat = s->lat8 ? s->latd : s->lat + (size_t)il * N * dl;
    const uint8_t *lat8 = s->lat8 ? s->lat8 + (size_t)il * N * s->lat8_row : NULL;
    for (int t = 0; t < T; t++) {
        float *row = s->kva + (size_t)t * dl;
        sd_rope_apply(&c->rope_main, row + kvr, pos0 + t, 1); // interleaved pairs (MLA)
        if (lat8)
            sd_mla_kv_fp8_quant(row, kvr, dr, s->lat8 + ((size_t)il * N + pos0 + t) * s->lat8_row);
        else
            memcpy(s->lat + ((size_t)il * N + pos0 + t) * dl, row, (size_t)dl * sizeof(float));
        for (int h = 0; h < nh; h++)
            sd_rope_apply(&c->rope_main, s->q + (size_t)t * nh * dq + (size_t)h * dq + dn, pos0 + t, 1);
    }
    // Absorb W_UK into the query: q_lat[t][h] = W_UK_h^T q_nope[t][h]
    for (int h = 0; h < nh; h++)
        sd_matmul_nn(s->qlat + (size_t)h * kvr, nh * kvr, s->q + (size_t)h * dq, nh * dq,
                     L->wkv_b + (size_t)h * (dn + dv) * kvr, kvr, T, kvr, dn);
    int sparse = s->use_indexer ? indexer(s, il, T, pos0) : 0;
    if (sparse < 0)
        return -1;
    float scale = c->attn_scale;
    int topk = s->topk;
    if (lat8 && !sparse) { // kv_fp8, attention over all rows so far: dequantize them once for every task
        int n_rows = pos0 + T;
#pragma omp parallel for schedule(static) num_threads(s->n_threads) if ((size_t)n_rows * dl >= SD_PAR_MIN_WORK)
        for (int u = 0; u < n_rows; u++)
            sd_mla_kv_fp8_dequant(lat8 + (size_t)u * s->lat8_row, kvr, dr, s->latd + (size_t)u * dl);
    }
    // One (token, group of heads) per task: up to MLA_HEAD_GROUP heads share each gathered cache row
    // (sd_mla_attn_heads). Groups shrink until there are two tasks per thread (decode, T = 1, still spreads
    // its heads over the threads) and until the group's scratch fits (dense rows over many keys). Each
    // head's result is the same whatever the grouping and the thread count (bit-identical runs).
    int G = nh < MLA_HEAD_GROUP ? nh : MLA_HEAD_GROUP, n_max = sparse ? topk : pos0 + T;
    while (G > 1 && ((size_t)T * (size_t)((nh + G - 1) / G) < 2 * (size_t)s->n_threads ||
                     sd_mla_attn_heads_scratch(G, n_max) > s->scr_len))
        G = (G + 1) / 2;
    const int ng = (nh + G - 1) / G;
    size_t work = (size_t)T * nh * (size_t)(sparse ? topk : pos0 + T) * (size_t)dl * 2;
    (void)work; // unused without OpenMP
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(s->n_threads) if (work >= SD_PAR_MIN_WORK)
    for (int t = 0; t < T; t++) {
        for (int g = 0; g < ng; g++) {
            int tid = thread_id(), h0 = g * G, nhg = nh - h0 < G ? nh - h0 : G;
            float *sc = s->tscratch + (size_t)tid * s->scr_len;
            const float *ql = s->qlat + ((size_t)t * nh + h0) * kvr;
            const float *qp = s->q + (size_t)t * nh * dq + (size_t)h0 * dq + dn;
            float *ol = s->olat + ((size_t)t * nh + h0) * kvr;
            const int32_t *ids = s->idx + (size_t)t * topk;
            const float *kv = lat;
            int n = topk;
            if (sparse && lat8) { // kv_fp8: this task's selected rows, dequantized in selection order
                int32_t *list = s->tscratch_i + (size_t)tid * N;
                float *g = s->tgat + (size_t)tid * (size_t)topk * dl;
                for (int j = 0; j < topk; j++) {
                    list[j] = ids[j] < 0 ? -1 : j;
                    if (ids[j] >= 0)
                        sd_mla_kv_fp8_dequant(lat8 + (size_t)ids[j] * s->lat8_row, kvr, dr, g + (size_t)j * dl);
                }
                ids = list;
                kv = g;
            }
            if (!sparse) {
                int32_t *list = s->tscratch_i + (size_t)tid * N;
                n = pos0 + t + 1;
                for (int u = 0; u < n; u++)
                    list[u] = u;
                ids = list;
            }
            sd_mla_attn_heads(ql, qp, (size_t)dq, nhg, kvr, dr, kv, (size_t)dl, ids, n, scale, ol, sc);
        }
    }
    if (s->rec)
        recall_measure(s, il, T, pos0, sparse);
    // o_h = W_UV_h o_lat_h
    for (int h = 0; h < nh; h++)
        sd_matmul_ld(s->o + (size_t)h * dv, nh * dv, s->olat + (size_t)h * kvr, nh * kvr,
                     L->wkv_b + ((size_t)h * (dn + dv) + dn) * kvr, kvr, T, dv, kvr, 0.0f);
    mm(s, s->y, s->o, &L->wo, NULL, T);
    return 0;
}

// ---------------------------------------------------------------- FFN

static void mlp(struct sd_session *s, const float *x, int T, const struct sd_wmat *wg, const struct sd_wmat *wu,
                const struct sd_wmat *wd, float *y)
{
    mm(s, s->g, x, wg, NULL, T);
    mm(s, s->u, x, wu, NULL, T);
    sd_silu_mul(s->g, s->u, (size_t)T * wg->rows);
    mm(s, y, s->g, wd, NULL, T);
}

// Index of the best of n values by (value desc, index asc), skipping taken[] entries.
static int argbest(const float *v, int n, const unsigned char *taken)
{
    int b = -1;
    for (int i = 0; i < n; i++) {
        if (taken && taken[i])
            continue;
        if (b < 0 || v[i] > v[b])
            b = i;
    }
    return b;
}

static void moe(struct sd_session *s, int il, int T)
{
    const struct sd_config *c = &s->m->cfg;
    const struct sd_layer_weights *L = &s->m->layers[il];
    int H = c->hidden_size, E = c->n_routed_experts, K = c->n_experts_per_tok;
    int G = c->n_group, per = E / G;
    mm(s, s->router, s->x, &L->router, NULL, T);
    for (int t = 0; t < T; t++) {
        float *r = s->router + (size_t)t * E;
        float sc[1024], choice[1024], gs[1024];
        unsigned char taken[1024];
        if (c->scoring_sigmoid) {
            for (int e = 0; e < E; e++)
                sc[e] = 1.0f / (1.0f + expf(-r[e]));
        } else {
            memcpy(sc, r, (size_t)E * sizeof(float));
            sd_softmax(sc, E);
        }
        for (int e = 0; e < E; e++)
            choice[e] = sc[e] + (L->router_bias ? L->router_bias[e] : 0.0f);
        if (G > 1) {
            // group score: sum of the two best choice scores of the group (one if the group has one expert)
            for (int g = 0; g < G; g++) {
                memset(taken, 0, (size_t)per);
                int a = argbest(choice + g * per, per, taken);
                float v = choice[g * per + a];
                if (per > 1) {
                    taken[a] = 1;
                    v += choice[g * per + argbest(choice + g * per, per, taken)];
                }
                gs[g] = v;
            }
            unsigned char keep[1024];
            memset(taken, 0, (size_t)G);
            memset(keep, 0, (size_t)G);
            for (int i = 0; i < c->topk_group; i++) {
                int g = argbest(gs, G, taken);
                taken[g] = 1;
                keep[g] = 1;
            }
            for (int e = 0; e < E; e++)
                if (!keep[e / per])
                    choice[e] = 0.0f; // transformers masks with 0.0 (not -inf): kept for exact parity
        }
        memset(taken, 0, (size_t)E);
        float sum = 0.0f;
        for (int i = 0; i < K; i++) {
            int e = argbest(choice, E, taken);
            taken[e] = 1;
            s->rsel[(size_t)t * K + i] = e;
            s->rw[(size_t)t * K + i] = sc[e];
            sum += sc[e];
        }
        for (int i = 0; i < K; i++) {
            float w = s->rw[(size_t)t * K + i];
            if (c->norm_topk_prob && K > 1)
                w /= (sum + 1e-20f);
            s->rw[(size_t)t * K + i] = w * c->routed_scaling_factor;
        }
    }
    // Shared experts first (into y), then each routed expert over the tokens routed to it.
    float *y = s->y;
    if (L->sh_gate.data)
        mlp(s, s->x, T, &L->sh_gate, &L->sh_up, &L->sh_down, y);
    else
        memset(y, 0, (size_t)T * H * sizeof(float));
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < K; i++)
                if (s->rsel[(size_t)t * K + i] == e) {
                    s->erows[n] = t;
                    s->ew[n] = s->rw[(size_t)t * K + i];
                    memcpy(s->ex + (size_t)n * H, s->x + (size_t)t * H, (size_t)H * sizeof(float));
                    n++;
                }
        if (!n)
            continue;
        mlp(s, s->ex, n, &L->exp_gate[e], &L->exp_up[e], &L->exp_down[e], s->ey);
        for (int j = 0; j < n; j++) {
            float *dst = y + (size_t)s->erows[j] * H;
            const float *src = s->ey + (size_t)j * H;
            float w = s->ew[j];
            for (int d = 0; d < H; d++)
                dst[d] += w * src[d];
        }
    }
}

// ---------------------------------------------------------------- indexer recall statistics

enum sd_status sd_session_recall_start(struct sd_session *s, int from_pos, sd_recall_row_fn fn, void *user,
                                       struct sd_err *err)
{
    const struct sd_config *c = &s->m->cfg;
    if (!s->use_indexer)
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "indexer recall needs a DSA model (this one has no indexer)");
    if (s->p.dsa_mode != SD_DSA_SPARSE)
        return sd_err_set(err, SD_ERR_ARG, "indexer recall is measured in sparse mode; this session runs dense");
    if (s->p.backend)
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "indexer recall is measured by the CPU forward pass only");
    if (s->p.kv_fp8)
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "indexer recall reads the f32 latent cache; this session keeps it "
                          "in FP8 (kv_fp8)");
    if (from_pos < 0)
        return sd_err_set(err, SD_ERR_ARG, "recall start position %d is negative", from_pos);
    if (!s->rec) {
        s->rec = calloc((size_t)c->n_layers, sizeof *s->rec);
        s->rec_head = calloc((size_t)s->p.max_batch * c->n_heads * 2, sizeof *s->rec_head);
        s->rec_i = calloc((size_t)s->n_threads * ((size_t)s->p.n_ctx + s->topk), sizeof *s->rec_i);
        if (!s->rec || !s->rec_head || !s->rec_i) {
            sd_session_recall_stop(s);
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory for recall statistics");
        }
    }
    for (int il = 0; il < c->n_layers; il++)
        s->rec[il] = (struct sd_recall_stat){.min = 1.0};
    s->rec_from = from_pos;
    s->rec_fn = fn;
    s->rec_user = user;
    return SD_OK;
}

void sd_session_recall_stop(struct sd_session *s)
{
    free(s->rec);
    free(s->rec_head);
    free(s->rec_i);
    s->rec = NULL;
    s->rec_head = NULL;
    s->rec_i = NULL;
    s->rec_fn = NULL;
    s->rec_user = NULL;
}

int sd_session_recall_get(const struct sd_session *s, struct sd_recall_stat *out, int n)
{
    if (!s->rec || n <= 0)
        return 0;
    if (n > s->m->cfg.n_layers)
        n = s->m->cfg.n_layers;
    memcpy(out, s->rec, (size_t)n * sizeof *out);
    return n;
}

// ---------------------------------------------------------------- KV export / import

struct kv_blob_header {
    char magic[4]; // "SDKV"
    uint32_t version;
    uint32_t arch;
    uint32_t n_layers;
    uint32_t block; // tokens per block
    uint32_t first_block;
    uint32_t n_blocks;
    uint32_t main_floats; // floats per token per layer in the main cache
    uint32_t idx_floats;  // floats per token per layer of indexer keys (f32)
    uint32_t flags;       // KV_IDX_FP8: also e4m3 keys (idx_floats bytes) + scale per token; KV_MAIN_FP8: the main
                          // cache rows are sd_mla_kv_fp8 rows (kv_fp8) instead of main_floats floats
    uint64_t payload_bytes;
    uint64_t checksum; // XXH3-64 of the payload
};

#define KV_IDX_FP8 1u
#define KV_MAIN_FP8 2u

static void kv_layout(const struct sd_session *s, uint32_t *main_floats, uint32_t *idx_floats, uint32_t *fp8)
{
    const struct sd_config *c = &s->m->cfg;
    if (sd_config_is_deepseek(c))
        *main_floats = (uint32_t)(c->kv_lora_rank + c->qk_rope_head_dim);
    else
        *main_floats = (uint32_t)(2 * c->n_heads_kv * c->head_dim);
    *idx_floats = s->use_indexer ? (uint32_t)c->index_head_dim : 0;
    *fp8 = (s->use_indexer && s->p.indexer_fp8 ? KV_IDX_FP8 : 0) | (s->lat8 ? KV_MAIN_FP8 : 0);
}

// Bytes per token and layer of the main cache rows.
static size_t kv_main_row_bytes(const struct sd_session *s, uint32_t mf)
{
    return s->lat8 ? s->lat8_row : (size_t)mf * 4;
}

static size_t kv_payload_bytes(const struct sd_session *s, uint32_t n_layers, size_t ntok, uint32_t mf, uint32_t idf,
                               uint32_t fp8)
{
    size_t per = kv_main_row_bytes(s, mf) + (size_t)idf * 4 + (fp8 & KV_IDX_FP8 ? (size_t)idf + 4 : 0);
    return (size_t)n_layers * ntok * per;
}

enum sd_status sd_session_export(const struct sd_session *s, int first_block, int n_blocks, void **blob, size_t *len,
                                 struct sd_err *err)
{
    const struct sd_config *c = &s->m->cfg;
    *blob = NULL;
    *len = 0;
    if (first_block < 0 || n_blocks <= 0 || (int64_t)(first_block + n_blocks) * SD_KV_BLOCK > s->pos)
        return sd_err_set(err, SD_ERR_ARG, "cannot export blocks [%d, %d): session holds %d tokens", first_block,
                          first_block + n_blocks, s->pos);
    uint32_t mf, idf, fp8;
    kv_layout(s, &mf, &idf, &fp8);
    size_t t0 = (size_t)first_block * SD_KV_BLOCK, nt = (size_t)n_blocks * SD_KV_BLOCK, N = (size_t)s->p.n_ctx;
    size_t pb = kv_payload_bytes(s, (uint32_t)c->n_layers, nt, mf, idf, fp8), mb = kv_main_row_bytes(s, mf);
    if (s->p.backend) {
        struct sd_backend_host_kv kv = host_kv(s);
        enum sd_status st = s->p.backend->kv_download(s->be_ctx, &kv, (int)t0, (int)nt, err);
        if (st != SD_OK)
            return st;
    }
    uint8_t *b = malloc(sizeof(struct kv_blob_header) + pb);
    if (!b)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory exporting %zu bytes of KV state", pb);
    struct kv_blob_header hd = {.magic = {'S', 'D', 'K', 'V'},
                                .version = SD_KV_BLOB_VERSION,
                                .arch = (uint32_t)c->arch,
                                .n_layers = (uint32_t)c->n_layers,
                                .block = SD_KV_BLOCK,
                                .first_block = (uint32_t)first_block,
                                .n_blocks = (uint32_t)n_blocks,
                                .main_floats = mf,
                                .idx_floats = idf,
                                .flags = fp8,
                                .payload_bytes = pb};
    uint8_t *p = b + sizeof hd;
    for (int il = 0; il < c->n_layers; il++) {
        if (sd_config_is_deepseek(c)) {
            const void *src = s->lat8 ? (const void *)(s->lat8 + ((size_t)il * N + t0) * mb)
                                      : (const void *)(s->lat + ((size_t)il * N + t0) * mf);
            memcpy(p, src, nt * mb);
            p += nt * mb;
        } else {
            size_t kvd = mf / 2;
            memcpy(p, s->kc + ((size_t)il * N + t0) * kvd, nt * kvd * 4);
            p += nt * kvd * 4;
            memcpy(p, s->vc + ((size_t)il * N + t0) * kvd, nt * kvd * 4);
            p += nt * kvd * 4;
        }
        if (idf) {
            memcpy(p, s->ikc + ((size_t)il * N + t0) * idf, nt * idf * 4);
            p += nt * idf * 4;
        }
        if (fp8 & KV_IDX_FP8) {
            memcpy(p, s->ik8 + ((size_t)il * N + t0) * idf, nt * idf);
            p += nt * idf;
            memcpy(p, s->iks + (size_t)il * N + t0, nt * 4);
            p += nt * 4;
        }
    }
    hd.checksum = XXH3_64bits(b + sizeof hd, pb);
    memcpy(b, &hd, sizeof hd);
    *blob = b;
    *len = sizeof hd + pb;
    return SD_OK;
}

static enum sd_status blob_header(const void *blob, size_t len, struct kv_blob_header *hd, struct sd_err *err)
{
    if (!blob || len < sizeof *hd)
        return sd_err_set(err, SD_ERR_FORMAT, "KV blob truncated: %zu bytes, header needs %zu", len, sizeof *hd);
    memcpy(hd, blob, sizeof *hd);
    if (memcmp(hd->magic, "SDKV", 4) != 0)
        return sd_err_set(err, SD_ERR_FORMAT, "not a sparsedoc KV blob (bad magic)");
    if (hd->version != SD_KV_BLOB_VERSION)
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "KV blob version %u, this build reads %u", hd->version,
                          SD_KV_BLOB_VERSION);
    if (hd->block != SD_KV_BLOCK || hd->n_blocks == 0 || hd->n_blocks > (1u << 20) || hd->first_block > (1u << 20))
        return sd_err_set(err, SD_ERR_FORMAT, "KV blob header has an invalid block range");
    if (hd->payload_bytes != len - sizeof *hd)
        return sd_err_set(err, SD_ERR_FORMAT, "KV blob truncated or padded: payload %llu bytes, file has %zu",
                          (unsigned long long)hd->payload_bytes, len - sizeof *hd);
    return SD_OK;
}

enum sd_status sd_kv_blob_info(const void *blob, size_t len, int *first_block, int *n_blocks, struct sd_err *err)
{
    struct kv_blob_header hd;
    *first_block = *n_blocks = -1;
    enum sd_status st = blob_header(blob, len, &hd, err);
    if (st != SD_OK)
        return st;
    *first_block = (int)hd.first_block;
    *n_blocks = (int)hd.n_blocks;
    return SD_OK;
}

enum sd_status sd_session_import(struct sd_session *s, const void *blob, size_t len, struct sd_err *err)
{
    const struct sd_config *c = &s->m->cfg;
    struct kv_blob_header hd;
    enum sd_status st = blob_header(blob, len, &hd, err);
    if (st != SD_OK)
        return st;
    uint32_t mf, idf, fp8;
    kv_layout(s, &mf, &idf, &fp8);
    if (hd.arch != (uint32_t)c->arch || hd.n_layers != (uint32_t)c->n_layers || hd.main_floats != mf ||
        hd.idx_floats != idf || hd.flags != fp8)
        return sd_err_set(err, SD_ERR_FORMAT, "KV blob was made for another model or KV layout");
    size_t t0 = (size_t)hd.first_block * SD_KV_BLOCK, nt = (size_t)hd.n_blocks * SD_KV_BLOCK, N = (size_t)s->p.n_ctx;
    if (t0 != (size_t)s->pos)
        return sd_err_set(err, SD_ERR_ARG, "KV blob starts at token %zu but the session is at %d", t0, s->pos);
    if (t0 + nt > N)
        return sd_err_set(err, SD_ERR_RANGE, "KV blob ends at token %zu, beyond the session context %zu", t0 + nt, N);
    size_t mb = kv_main_row_bytes(s, mf);
    if (hd.payload_bytes != kv_payload_bytes(s, hd.n_layers, nt, mf, idf, fp8))
        return sd_err_set(err, SD_ERR_FORMAT, "KV blob payload size does not match its header");
    const uint8_t *p = (const uint8_t *)blob + sizeof hd;
    if (XXH3_64bits(p, hd.payload_bytes) != hd.checksum)
        return sd_err_set(err, SD_ERR_CHECKSUM, "KV blob checksum mismatch: the cached state is corrupt");
    for (int il = 0; il < c->n_layers; il++) {
        if (sd_config_is_deepseek(c)) {
            void *dst = s->lat8 ? (void *)(s->lat8 + ((size_t)il * N + t0) * mb)
                                : (void *)(s->lat + ((size_t)il * N + t0) * mf);
            memcpy(dst, p, nt * mb);
            p += nt * mb;
        } else {
            size_t kvd = mf / 2;
            memcpy(s->kc + ((size_t)il * N + t0) * kvd, p, nt * kvd * 4);
            p += nt * kvd * 4;
            memcpy(s->vc + ((size_t)il * N + t0) * kvd, p, nt * kvd * 4);
            p += nt * kvd * 4;
        }
        if (idf) {
            memcpy(s->ikc + ((size_t)il * N + t0) * idf, p, nt * idf * 4);
            p += nt * idf * 4;
        }
        if (fp8 & KV_IDX_FP8) {
            memcpy(s->ik8 + ((size_t)il * N + t0) * idf, p, nt * idf);
            p += nt * idf;
            memcpy(s->iks + (size_t)il * N + t0, p, nt * 4);
            p += nt * 4;
        }
    }
    if (s->p.backend) {
        struct sd_backend_host_kv kv = host_kv(s);
        enum sd_status st = s->p.backend->kv_upload(s->be_ctx, &kv, (int)t0, (int)nt, err);
        if (st != SD_OK)
            return st; // position unchanged: the rows past it are not part of the sequence
    }
    s->pos += (int)nt;
    return SD_OK;
}

// ---------------------------------------------------------------- benchmark support

static float fill_rand(uint64_t *st)
{
    // sum of 4 uniforms, centred: cheap approximately-normal values with unit-ish variance
    float acc = 0.0f;
    for (int i = 0; i < 4; i++) {
        *st ^= *st << 13;
        *st ^= *st >> 7;
        *st ^= *st << 17;
        acc += (float)(*st >> 40) / (float)(1u << 24);
    }
    return (acc - 2.0f) * 1.7320508f;
}

enum sd_status sd_session_debug_fill(struct sd_session *s, int n, uint64_t seed, struct sd_err *err)
{
    const struct sd_config *c = &s->m->cfg;
    if (n < 0 || s->pos + n > s->p.n_ctx)
        return sd_err_set(err, SD_ERR_RANGE, "debug fill of %d tokens does not fit (%d of %d used)", n, s->pos,
                          s->p.n_ctx);
    uint64_t st = seed | 1;
    size_t N = (size_t)s->p.n_ctx;
    for (int il = 0; il < c->n_layers; il++) {
        for (int t = s->pos; t < s->pos + n; t++) {
            if (sd_config_is_deepseek(c)) {
                size_t dl = (size_t)c->kv_lora_rank + c->qk_rope_head_dim;
                float *row = s->lat8 ? s->latd : s->lat + ((size_t)il * N + t) * dl; // latd: one row of scratch
                for (size_t i = 0; i < dl; i++)
                    row[i] = fill_rand(&st);
                if (s->lat8)
                    sd_mla_kv_fp8_quant(row, c->kv_lora_rank, c->qk_rope_head_dim,
                                        s->lat8 + ((size_t)il * N + t) * s->lat8_row);
                if (s->use_indexer) {
                    size_t di = (size_t)c->index_head_dim;
                    float *k = s->ikc + ((size_t)il * N + t) * di;
                    for (size_t i = 0; i < di; i++)
                        k[i] = fill_rand(&st);
                    if (s->p.indexer_fp8)
                        sd_dsa_quant_fp8_row(k, (int)di, s->ik8 + ((size_t)il * N + t) * di,
                                             s->iks + (size_t)il * N + t);
                }
            } else {
                size_t kvd = (size_t)c->n_heads_kv * c->head_dim;
                for (size_t i = 0; i < kvd; i++) {
                    s->kc[((size_t)il * N + t) * kvd + i] = fill_rand(&st);
                    s->vc[((size_t)il * N + t) * kvd + i] = fill_rand(&st);
                }
            }
        }
    }
    if (s->p.backend && n > 0) {
        struct sd_backend_host_kv kv = host_kv(s);
        enum sd_status st = s->p.backend->kv_upload(s->be_ctx, &kv, s->pos, n, err);
        if (st != SD_OK)
            return st;
    }
    s->pos += n;
    return SD_OK;
}

// ---------------------------------------------------------------- driver

// Returns 0, or -1 when scratch memory ran out (the session state is then unusable: truncate it).
static int forward_chunk(struct sd_session *s, const int32_t *ids, int T, float *logits, int all_logits)
{
    const struct sd_model *m = s->m;
    const struct sd_config *c = &m->cfg;
    int H = c->hidden_size, pos0 = s->pos;
    for (int t = 0; t < T; t++)
        sd_wmat_row(&m->embed, ids[t], s->h + (size_t)t * H);
    for (int il = 0; il < c->n_layers; il++) {
        const struct sd_layer_weights *L = &m->layers[il];
        sd_rmsnorm(s->x, s->h, L->attn_norm, T, H, (size_t)H, c->rms_norm_eps);
        if (sd_config_is_deepseek(c)) {
            if (attn_mla(s, il, T, pos0))
                return -1;
        } else
            attn_gqa(s, il, T, pos0);
        for (size_t i = 0; i < (size_t)T * H; i++)
            s->h[i] += s->y[i];
        sd_rmsnorm(s->x, s->h, L->ffn_norm, T, H, (size_t)H, c->rms_norm_eps);
        if (L->is_moe)
            moe(s, il, T);
        else
            mlp(s, s->x, T, &L->w_gate, &L->w_up, &L->w_down, s->y);
        for (size_t i = 0; i < (size_t)T * H; i++)
            s->h[i] += s->y[i];
    }
    s->pos += T;
    if (!logits)
        return 0;
    int first = all_logits ? 0 : T - 1;
    int n = T - first;
    sd_rmsnorm(s->x, s->h + (size_t)first * H, m->norm, n, H, (size_t)H, c->rms_norm_eps);
    mm(s, logits, s->x, &m->lm_head, NULL, n);
    return 0;
}

enum sd_status sd_session_eval_sample(struct sd_session *s, const int32_t *ids, int n, struct sd_sampler *smp,
                                      const int32_t *history, size_t n_history, int32_t *token, struct sd_err *err)
{
    // *token is written last: it may be where ids point (the previous token fed back)
    const struct sd_config *c = &s->m->cfg;
    if (!smp || sd_sampler_n_vocab(smp) != c->vocab_size) {
        *token = -1;
        return sd_err_set(err, SD_ERR_ARG, "sampler for %d tokens, the model has %d", smp ? sd_sampler_n_vocab(smp) : 0,
                          c->vocab_size);
    }
    if (!s->pen_ids) { // host: the logits through the session's buffer
        enum sd_status st = sd_session_eval(s, ids, n, s->lg, 0, err);
        *token = st == SD_OK ? sd_sampler_sample(smp, s->lg, history, n_history) : -1;
        return st;
    }
    // device: every chunk but the last as usual, the last one samples where its logits are
    int last = n > s->p.max_batch ? n - (n - 1) % s->p.max_batch - 1 : 0;
    if (last > 0) {
        enum sd_status st = sd_session_eval(s, ids, last, NULL, 0, err);
        if (st != SD_OK) {
            *token = -1;
            return st;
        }
    }
    int T = n - last, bad = n <= 0 || s->pos + T > s->p.n_ctx;
    for (int i = 0; !bad && i < T; i++)
        bad = ids[last + i] < 0 || ids[last + i] >= c->vocab_size;
    if (bad) { // sd_session_eval's checks say what is wrong
        enum sd_status st = sd_session_eval(s, ids + last, T, NULL, 0, err);
        *token = -1;
        return st;
    }
    const struct sd_sampler_params *sp = sd_sampler_get_params(smp);
    struct sd_backend_sample req = {.temperature = sp->temperature,
                                    .top_k = sp->top_k,
                                    .top_p = sp->top_p,
                                    .repetition_penalty = sp->repetition_penalty,
                                    .penalty_ids = s->pen_ids,
                                    .n_penalty = (int)sd_sampler_penalty_ids(smp, history, n_history, s->pen_ids),
                                    .u = 0.0};
    if (sp->temperature > 0.0f)
        req.u = sd_sampler_draw(smp);
    int32_t t = -1;
    enum sd_status st = s->p.backend->forward_sample(s->be_ctx, ids + last, T, s->pos, &req, &t, err);
    *token = t;
    if (st != SD_OK)
        return st;
    s->pos += T;
    return SD_OK;
}

enum sd_status sd_session_eval(struct sd_session *s, const int32_t *ids, int n, float *logits, int all_logits,
                               struct sd_err *err)
{
    const struct sd_config *c = &s->m->cfg;
    if (n <= 0)
        return sd_err_set(err, SD_ERR_ARG, "no tokens to evaluate");
    if (s->pos + n > s->p.n_ctx)
        return sd_err_set(err, SD_ERR_RANGE,
                          "context full: %d tokens cached + %d new > session context %d (model supports %lld); start "
                          "a longer session (--ctx) or shorten the input",
                          s->pos, n, s->p.n_ctx, (long long)c->max_position_embeddings);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return sd_err_set(err, SD_ERR_ARG, "token id %d at position %d is outside the vocabulary [0, %d)", ids[i],
                              i, c->vocab_size);
    for (int done = 0; done < n;) {
        int T = n - done < s->p.max_batch ? n - done : s->p.max_batch;
        int last = done + T == n;
        float *lo = NULL;
        if (logits && all_logits)
            lo = logits + (size_t)done * c->vocab_size;
        else if (logits && last)
            lo = logits;
        int pos_before = s->pos;
        if (s->p.backend) {
            enum sd_status st = s->p.backend->forward(s->be_ctx, ids + done, T, pos_before, lo, all_logits, err);
            if (st != SD_OK)
                return st; // the chunk's partial KV rows are dropped with it (position unchanged)
            s->pos += T;
            done += T;
            continue;
        }
        if (forward_chunk(s, ids + done, T, lo, all_logits)) {
            s->pos = pos_before; // the chunk's partial KV rows are dropped with it
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory in the FP8 indexer at position %d", pos_before);
        }
        done += T;
    }
    return SD_OK;
}
