// bench_dsa_cuda.c: benchmark of the CUDA DSA kernels (kernels/sd_cuda.h) on realistic sizes. Each
// kernel is validated once at the timed size against the CPU reference (engine/dsa.c; sampled rows
// where the full reference is too slow), then timed with CUDA events after warm-up: median of repeats,
// inputs rotated over several copies when they would fit in L2. Prints µs, TFLOP/s and GB/s from
// counted FLOPs and bytes, and a summary table last; also the FP8 weight GEMV (gemv_fp8.cu) on DeepSeek-V3.2 matrix
// shapes against the memcpy ceiling. Usage: bench_dsa_cuda [--quick]
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsa.h"
#include "dtype.h"
#include "sd_cuda.h"

#define CU(expr)                                                                                                       \
    do {                                                                                                               \
        enum sd_status st_ = (expr);                                                                                   \
        if (st_ != SD_OK) {                                                                                            \
            fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #expr, sd_status_str(st_),              \
                    sd_cuda_last_error());                                                                             \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static uint64_t rng = 88172645463325252ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float nrand(void)
{
    double u = urand() + 1e-12, v = urand();
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}
static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}
static void *dalloc(size_t n)
{
    void *p;
    CU(sd_cuda_malloc(&p, n));
    return p;
}
static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

struct row {
    char name[96];
    double us, tflops, gbs, extra;
    const char *extra_name;
    int valid;
};
static struct row table[64];
static int n_table;
static struct sd_cuda_timer *timer;
static int quick;

// Median of `reps` timed calls of fn(ctx, rep) after `warm` untimed ones, in microseconds.
typedef void (*bench_fn)(void *ctx, int rep);
static double time_median(bench_fn fn, void *ctx, int warm, int reps)
{
    for (int i = 0; i < warm; i++)
        fn(ctx, i);
    CU(sd_cuda_sync());
    float *t = xmalloc((size_t)reps * sizeof(float));
    for (int i = 0; i < reps; i++) {
        CU(sd_cuda_timer_start(timer));
        fn(ctx, i);
        CU(sd_cuda_timer_stop(timer, &t[i]));
    }
    qsort(t, (size_t)reps, sizeof(float), cmp_f);
    double med = t[reps / 2] * 1000.0;
    free(t);
    return med;
}

static void add_row(const char *name, double us, double flops, double bytes, int valid, const char *extra_name,
                    double extra)
{
    struct row *r = &table[n_table++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->us = us;
    r->tflops = flops / (us * 1e-6) / 1e12;
    r->gbs = bytes / (us * 1e-6) / 1e9;
    r->valid = valid;
    r->extra_name = extra_name;
    r->extra = extra;
    printf("%-44s %10.1f us %8.2f TFLOP/s %8.1f GB/s %s%s%s\n", name, us, r->tflops, r->gbs,
           valid ? "validated" : "VALIDATION FAILED", extra_name ? "  " : "", extra_name ? extra_name : "");
}

// ---- memcpy ceiling
struct cp_ctx {
    void *a, *b;
    size_t n;
};
static void cp_fn(void *c, int rep)
{
    (void)rep;
    struct cp_ctx *x = c;
    CU(sd_cuda_memcpy_d2d(x->b, x->a, x->n, NULL));
}

// ---- indexer
#define NROT 8
struct ix_ctx {
    struct sd_cuda_indexer_params p;
    const uint8_t *caches[NROT];
    int n_rot;
};
static void ix_fn(void *c, int rep)
{
    struct ix_ctx *x = c;
    struct sd_cuda_indexer_params p = x->p;
    p.kcache = x->caches[rep % x->n_rot];
    CU(sd_cuda_indexer_fp8(&p));
}

struct ix_data {
    int n_q, n_k;
    uint8_t *q8, *k8, *cache;
    float *qs, *w, *ks;
    size_t cache_bytes;
    uint8_t *d_q8;
    float *d_qs, *d_w;
};

static void ix_make(struct ix_data *d, int n_q, int n_k)
{
    const int H = 64, D = 128;
    d->n_q = n_q;
    d->n_k = n_k;
    size_t nqh = (size_t)n_q * H;
    d->q8 = xmalloc(nqh * D);
    d->qs = xmalloc(nqh * 4);
    d->w = xmalloc(nqh * 4);
    d->k8 = xmalloc((size_t)n_k * D);
    d->ks = xmalloc((size_t)n_k * 4);
    float row[128];
    for (size_t r = 0; r < nqh; r++) {
        for (int x = 0; x < D; x++)
            row[x] = nrand();
        sd_dsa_quant_fp8_row(row, D, d->q8 + r * D, &d->qs[r]);
        d->w[r] = nrand() / 8.0f / sqrtf(128.0f);
    }
    for (int u = 0; u < n_k; u++) {
        for (int x = 0; x < D; x++)
            row[x] = nrand();
        sd_dsa_quant_fp8_row(row, D, d->k8 + (size_t)u * D, &d->ks[u]);
    }
    int pages = (n_k + 63) / 64;
    d->cache_bytes = (size_t)pages * SD_CUDA_IDX_PAGE_BYTES;
    d->cache = xmalloc(d->cache_bytes);
    memset(d->cache, 0, d->cache_bytes);
    for (int u = 0; u < n_k; u++) {
        uint8_t *pg = d->cache + (size_t)(u / 64) * SD_CUDA_IDX_PAGE_BYTES;
        memcpy(pg + (size_t)(u % 64) * 128, d->k8 + (size_t)u * 128, 128);
        memcpy(pg + 64 * 128 + (size_t)(u % 64) * 4, &d->ks[u], 4);
    }
    d->d_q8 = dalloc(nqh * D);
    d->d_qs = dalloc(nqh * 4);
    d->d_w = dalloc(nqh * 4);
    CU(sd_cuda_memcpy_h2d(d->d_q8, d->q8, nqh * D));
    CU(sd_cuda_memcpy_h2d(d->d_qs, d->qs, nqh * 4));
    CU(sd_cuda_memcpy_h2d(d->d_w, d->w, nqh * 4));
}

// Validate rows `rows` of the device scores against the CPU reference (max error / row max |score|).
static double ix_check(struct ix_data *d, const float *d_scores, const int *rows, int n_rows)
{
    const int H = 64, D = 128;
    float *got = xmalloc((size_t)d->n_k * 4), *ref = xmalloc((size_t)n_rows * d->n_k * 4);
    float *w = xmalloc((size_t)n_rows * H * 4), *qs = xmalloc((size_t)n_rows * H * 4);
    uint8_t *q8 = xmalloc((size_t)n_rows * H * D);
    for (int r = 0; r < n_rows; r++) {
        memcpy(q8 + (size_t)r * H * D, d->q8 + (size_t)rows[r] * H * D, (size_t)H * D);
        memcpy(w + (size_t)r * H, d->w + (size_t)rows[r] * H, (size_t)H * 4);
        memcpy(qs + (size_t)r * H, d->qs + (size_t)rows[r] * H, (size_t)H * 4);
    }
    sd_dsa_index_scores_fp8(q8, qs, w, n_rows, H, D, d->k8, d->ks, d->n_k, NULL, ref, (size_t)d->n_k, 16);
    double worst = 0;
    for (int r = 0; r < n_rows; r++) {
        CU(sd_cuda_memcpy_d2h(got, d_scores + (size_t)rows[r] * d->n_k, (size_t)d->n_k * 4));
        double mx = 0;
        for (int u = 0; u < d->n_k; u++)
            mx = fmax(mx, fabs(ref[(size_t)r * d->n_k + u]));
        for (int u = 0; u < d->n_k; u++) {
            double e = fabs((double)got[u] - ref[(size_t)r * d->n_k + u]) / (mx + 1e-30);
            if (!(e <= worst))
                worst = isnan(e) ? INFINITY : e;
        }
    }
    free(got), free(ref), free(w), free(qs), free(q8);
    return worst;
}

static void bench_indexer(double copy_gbs)
{
    // (a) decode: one query, 128K keys; caches rotated (17 MB each, 8 copies > L2).
    struct ix_data d;
    int n_k = 131072;
    ix_make(&d, 1, n_k);
    struct ix_ctx c;
    memset(&c, 0, sizeof c);
    c.n_rot = NROT;
    for (int i = 0; i < NROT; i++) {
        uint8_t *p = dalloc(d.cache_bytes);
        CU(sd_cuda_memcpy_h2d(p, d.cache, d.cache_bytes));
        c.caches[i] = p;
    }
    float *d_s = dalloc((size_t)n_k * 4);
    double flops = 2.0 * 64 * 128 * n_k, bytes = (double)n_k * 132 + 64 * 132 + (double)n_k * 4;
    for (int v = 1; v <= 2; v++) {
        c.p = (struct sd_cuda_indexer_params){d.d_q8,      d.d_qs, d.d_w, c.caches[0], NULL, NULL, d_s,
                                              (size_t)n_k, 1,      64,    n_k,         v,    NULL};
        CU(sd_cuda_memset(d_s, 0xff, (size_t)n_k * 4));
        ix_fn(&c, 0);
        CU(sd_cuda_sync());
        int rows[1] = {0};
        double err = ix_check(&d, d_s, rows, 1);
        double us = time_median(ix_fn, &c, 5, 50);
        char name[64];
        snprintf(name, sizeof name, "indexer decode 1x128K %s", v == 1 ? "simple" : "mma");
        add_row(name, us, flops, bytes, err < 1e-5, "of memcpy BW:", (bytes / (us * 1e-6) / 1e9) / copy_gbs);
    }
    sd_cuda_free(d_s);
    for (int i = 0; i < NROT; i++)
        sd_cuda_free((void *)c.caches[i]);

    // prefill: 2048 queries x 64K keys, full rows (no mask), score matrix 512 MB.
    struct ix_data e;
    int n_q = 2048;
    n_k = quick ? 16384 : 65536;
    ix_make(&e, n_q, n_k);
    uint8_t *d_cache = dalloc(e.cache_bytes);
    CU(sd_cuda_memcpy_h2d(d_cache, e.cache, e.cache_bytes));
    d_s = dalloc((size_t)n_q * n_k * 4);
    flops = 2.0 * n_q * 64 * 128 * (double)n_k;
    bytes = (double)n_k * 132 + (double)n_q * 64 * 132 + (double)n_q * n_k * 4;
    for (int v = 1; v <= 2; v++) {
        memset(&c, 0, sizeof c);
        c.n_rot = 1;
        c.caches[0] = d_cache;
        c.p = (struct sd_cuda_indexer_params){e.d_q8,      e.d_qs, e.d_w, d_cache, NULL, NULL, d_s,
                                              (size_t)n_k, n_q,    64,    n_k,     v,    NULL};
        CU(sd_cuda_memset(d_s, 0xff, (size_t)n_q * n_k * 4));
        ix_fn(&c, 0);
        CU(sd_cuda_sync());
        int rows[6] = {0, 1, 2, 3, 1029, 2047};
        double err = ix_check(&e, d_s, rows, 6);
        double us = time_median(ix_fn, &c, 2, v == 1 ? 5 : 15);
        char name[64];
        snprintf(name, sizeof name, "indexer prefill %dx%dK %s", n_q, n_k / 1024, v == 1 ? "simple" : "mma");
        add_row(name, us, flops, bytes, err < 1e-5, NULL, 0);
    }
    sd_cuda_free(d_s);
    // Fused chunked indexer + top-k, causal prefill rows (the last 2048 positions of a 64K context).
    {
        int chunk = 256, k = 2048;
        float *scr = dalloc((size_t)chunk * n_k * 4);
        int32_t *d_idx = dalloc((size_t)n_q * k * 4);
        int *nv = xmalloc((size_t)n_q * 4), *d_nv = dalloc((size_t)n_q * 4);
        for (int i = 0; i < n_q; i++)
            nv[i] = n_k - n_q + 1 + i;
        CU(sd_cuda_memcpy_h2d(d_nv, nv, (size_t)n_q * 4));
        struct sd_cuda_indexer_topk_params tp;
        memset(&tp, 0, sizeof tp);
        tp.ix = (struct sd_cuda_indexer_params){
            e.d_q8, e.d_qs, e.d_w, d_cache, NULL, d_nv, NULL, 0, n_q, 64, n_k, SD_CUDA_INDEXER_MMA, NULL};
        tp.scratch = scr;
        tp.chunk = chunk;
        tp.k = k;
        tp.idx = d_idx;
        for (int i = 0; i < 2; i++)
            CU(sd_cuda_indexer_topk(&tp));
        CU(sd_cuda_sync());
        float *t = xmalloc(5 * 4);
        for (int i = 0; i < 5; i++) {
            CU(sd_cuda_timer_start(timer));
            CU(sd_cuda_indexer_topk(&tp));
            CU(sd_cuda_timer_stop(timer, &t[i]));
        }
        qsort(t, 5, 4, cmp_f);
        double us = t[2] * 1000.0;
        // validity: row 0 and last row, set overlap with the CPU top-k of CPU scores
        int32_t *got = xmalloc((size_t)k * 4), *ref = xmalloc((size_t)k * 4), *scratch = xmalloc((size_t)n_k * 4);
        float *rs = xmalloc((size_t)n_k * 4);
        long same = 0, total = 0;
        int rows[2] = {0, n_q - 1};
        for (int r = 0; r < 2; r++) {
            int i = rows[r];
            sd_dsa_index_scores_fp8(e.q8 + (size_t)i * 64 * 128, e.qs + (size_t)i * 64, e.w + (size_t)i * 64, 1, 64,
                                    128, e.k8, e.ks, n_k, &nv[i], rs, (size_t)n_k, 1);
            int n_ref = sd_dsa_topk(rs, nv[i], k, ref, scratch);
            CU(sd_cuda_memcpy_d2h(got, d_idx + (size_t)i * k, (size_t)k * 4));
            int a = 0, b = 0;
            while (a < n_ref && b < k && got[b] >= 0) {
                if (ref[a] == got[b])
                    same++, a++, b++;
                else if (ref[a] < got[b])
                    a++;
                else
                    b++;
            }
            total += n_ref;
        }
        double causal_flops = 0;
        for (int i = 0; i < n_q; i++)
            causal_flops += 2.0 * 64 * 128 * nv[i];
        char name[64];
        snprintf(name, sizeof name, "indexer+topk causal %dx%dK chunk %d", n_q, n_k / 1024, chunk);
        add_row(name, us, causal_flops, (double)n_k * 132 * (n_q / chunk), (double)same / total > 0.995,
                "topk set overlap:", (double)same / total);
        free(t), free(got), free(ref), free(scratch), free(rs), free(nv);
        sd_cuda_free(scr), sd_cuda_free(d_idx), sd_cuda_free(d_nv);
    }
    sd_cuda_free(d_cache);
}

// ---- top-k
struct tk_ctx {
    struct sd_cuda_topk_params p;
    const float *rot[NROT];
    int n_rot;
};
static void tk_fn(void *c, int rep)
{
    struct tk_ctx *x = c;
    struct sd_cuda_topk_params p = x->p;
    p.scores = x->rot[rep % x->n_rot];
    CU(sd_cuda_topk(&p));
}

static void bench_topk(void)
{
    const int ncols[2] = {32768, 131072};
    const int nrows[2] = {1, 64};
    const int k = 2048;
    for (int a = 0; a < 2; a++) {
        for (int b = 0; b < 2; b++) {
            int n = ncols[a], R = nrows[b];
            size_t cnt = (size_t)R * n;
            float *s = xmalloc(cnt * 4);
            for (size_t x = 0; x < cnt; x++)
                s[x] = nrand();
            struct tk_ctx c;
            memset(&c, 0, sizeof c);
            c.n_rot = NROT;
            for (int i = 0; i < NROT; i++) {
                float *p = dalloc(cnt * 4);
                CU(sd_cuda_memcpy_h2d(p, s, cnt * 4));
                c.rot[i] = p;
            }
            int32_t *d_i = dalloc((size_t)R * k * 4);
            // split: the rows over slices in parallel blocks (the path decode steps take: few rows, scratch given)
            size_t sb = sd_cuda_topk_scratch_bytes(R, n);
            void *d_scr = dalloc(sb);
            for (int split = 0; split <= (R <= SD_CUDA_TOPK_SPLIT_ROWS && n >= SD_CUDA_TOPK_SPLIT_COLS); split++) {
                c.p = (struct sd_cuda_topk_params){
                    c.rot[0], (size_t)n, NULL, R, n, k, d_i, (size_t)k, NULL, split ? d_scr : NULL, split ? sb : 0};
                tk_fn(&c, 0);
                CU(sd_cuda_sync());
                int32_t *got = xmalloc((size_t)R * k * 4), *ref = xmalloc((size_t)k * 4), *scr = xmalloc((size_t)n * 4);
                CU(sd_cuda_memcpy_d2h(got, d_i, (size_t)R * k * 4));
                int ok = 1;
                for (int r = 0; r < R; r++) {
                    sd_dsa_topk(s + (size_t)r * n, n, k, ref, scr);
                    ok &= memcmp(ref, got + (size_t)r * k, (size_t)k * 4) == 0;
                }
                double us = time_median(tk_fn, &c, 5, 50);
                char name[64];
                snprintf(name, sizeof name, "topk k=2048 %d rows x %dK%s", R, n / 1024, split ? " split" : "");
                add_row(name, us, 0, (double)cnt * 4 + (double)R * k * 4, ok, "us/row:", us / R);
                free(got), free(ref), free(scr);
            }
            free(s);
            sd_cuda_free(d_scr);
            sd_cuda_free(d_i);
            for (int i = 0; i < NROT; i++)
                sd_cuda_free((void *)c.rot[i]);
        }
    }
}

// ---- sparse MLA decode
struct mla_ctx {
    struct sd_cuda_mla_decode_params p;
};
static void mla_fn(void *c, int rep)
{
    (void)rep;
    struct mla_ctx *x = c;
    CU(sd_cuda_mla_decode(&x->p));
}

struct mattn_ctx {
    struct sd_cuda_mla_attn_params p;
};
static void mattn_fn(void *c, int rep)
{
    (void)rep;
    struct mattn_ctx *x = c;
    CU(sd_cuda_mla_attn(&x->p));
}

static void bench_mla(void)
{
    const int B = quick ? 32 : 128, SQ = 2, H = 128, TOPK = 2048, CTX = 32768, D = 576;
    const float tau = 0.1352338f;
    size_t n_tokens = (size_t)B * CTX;
    // The cache: a 64 MB random block tiled over B*CTX rows (4.8 GB at B=128).
    size_t blk_rows = 65536 / 1; // 65536 rows x 1152 B = 72 MB
    uint16_t *blk = xmalloc(blk_rows * D * 2);
    for (size_t x = 0; x < blk_rows * D; x++)
        blk[x] = sd_f32_to_bf16(nrand());
    uint16_t *d_kv = dalloc(n_tokens * D * 2);
    for (size_t r0 = 0; r0 < n_tokens; r0 += blk_rows) {
        size_t rows = n_tokens - r0 < blk_rows ? n_tokens - r0 : blk_rows;
        CU(sd_cuda_memcpy_h2d(d_kv + r0 * D, blk, rows * D * 2));
    }
    size_t nq = (size_t)B * SQ * H * D;
    float *q = xmalloc(nq * 4);
    for (size_t x = 0; x < nq; x++) // bf16-representable: the MMA variant rounds q to bf16
        q[x] = sd_bf16_to_f32(sd_f32_to_bf16(nrand()));
    size_t ni = (size_t)B * SQ * TOPK;
    int32_t *idx = xmalloc(ni * 4);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < SQ; s++) {
            int32_t off = (int32_t)(urand() * CTX);
            for (int t = 0; t < TOPK; t++) // distinct slots spread over this sequence's context
                idx[((size_t)b * SQ + s) * TOPK + t] = b * CTX + (off + t * 15) % CTX;
        }
    float *d_q = dalloc(nq * 4), *d_o = dalloc((size_t)B * SQ * H * 512 * 4), *d_l = dalloc((size_t)B * SQ * H * 4);
    int32_t *d_idx = dalloc(ni * 4);
    CU(sd_cuda_memcpy_h2d(d_q, q, nq * 4));
    CU(sd_cuda_memcpy_h2d(d_idx, idx, ni * 4));
    float *kvf = xmalloc(blk_rows * D * 4);
    for (size_t x = 0; x < blk_rows * D; x++)
        kvf[x] = sd_bf16_to_f32(blk[x]);
    float *ql = xmalloc((size_t)H * 512 * 4), *qp = xmalloc((size_t)H * 64 * 4), *ref = xmalloc((size_t)H * 512 * 4);
    float *got = xmalloc((size_t)H * 512 * 4), *scr = xmalloc(2 * TOPK * 4);
    int32_t *ix = xmalloc(TOPK * 4);
    for (int v = 2; v >= 1; v--) {
        struct mla_ctx c = {{d_q, d_kv, d_idx, d_o, d_l, B, SQ, H, TOPK, (int)n_tokens, tau, NULL, v}};
        CU(sd_cuda_memset(d_o, 0xff, (size_t)B * SQ * H * 512 * 4));
        mla_fn(&c, 0);
        CU(sd_cuda_sync());
        // validate 3 (b, s) rows against the CPU reference
        double num = 0, den = 0;
        int check_rows[3] = {0, SQ * B / 2 + 1, SQ * B - 1};
        for (int cr = 0; cr < 3; cr++) {
            size_t r = (size_t)check_rows[cr];
            for (int h = 0; h < H; h++) {
                memcpy(ql + (size_t)h * 512, q + (r * H + h) * D, 512 * 4);
                memcpy(qp + (size_t)h * 64, q + (r * H + h) * D + 512, 64 * 4);
            }
            for (int t = 0; t < TOPK; t++)
                ix[t] = (int32_t)(idx[r * TOPK + t] % blk_rows); // the tiled block's row
            sd_mla_sparse_attn_absorbed(ql, qp, H, 512, 64, kvf, D, ix, TOPK, tau, ref, scr);
            CU(sd_cuda_memcpy_d2h(got, d_o + r * H * 512, (size_t)H * 512 * 4));
            for (size_t x = 0; x < (size_t)H * 512; x++) {
                double e = (double)got[x] - ref[x];
                num += isfinite(got[x]) ? e * e : INFINITY;
                den += (double)ref[x] * ref[x];
            }
        }
        double rel = sqrt(num / den);
        double us = time_median(mla_fn, &c, 3, v == 1 ? 5 : 20);
        double flops = (double)B * SQ * H * TOPK * (576 + 512) * 2.0;
        double bytes = (double)B * SQ * TOPK * 1152 + nq * 4 + (double)B * SQ * H * 512 * 4;
        char name[64];
        snprintf(name, sizeof name, "mla decode b%d sq%d h%d topk%d bf16 kv %s", B, SQ, H, TOPK,
                 v == 1 ? "simple" : "mma");
        add_row(name, us, flops, bytes, rel < (v == 1 ? 1e-5 : 4e-3),
                "vs FlashMLA 410 TFLOP/s:", flops / (us * 1e-6) / 1e12 / 410.0);
        printf("  (mla %s validation rel err %.3g)\n", v == 1 ? "simple" : "mma", rel);
    }
    // The forward pass's fp32 kernel (sd_cuda_mla_attn, fp32 latent cache): the same anchor shape, then one
    // decode query over top-k 2048 and dense over 32K / 128K keys (split over blocks).
    float *d_kvf = dalloc(blk_rows * D * 4);
    CU(sd_cuda_memcpy_h2d(d_kvf, kvf, blk_rows * D * 4));
    for (size_t x = 0; x < ni; x++)
        idx[x] %= (int32_t)blk_rows;
    CU(sd_cuda_memcpy_h2d(d_idx, idx, ni * 4));
    size_t scr_n = sd_cuda_mla_attn_scratch_floats(H, 512);
    float *d_scr = dalloc(scr_n * 4);
    struct {
        int n_q, dense_pos0;
        const char *what;
    } shapes[] = {{B * SQ, -1, "anchor shape"},
                  {1, -1, "1 query"},
                  {1, 32767, "1 query dense 32K"},
                  {1, 131071, "1 query dense 128K"}};
    for (int sh = 0; sh < 4; sh++) {
        int n_q = shapes[sh].n_q, dense = shapes[sh].dense_pos0 >= 0;
        if (dense && (size_t)shapes[sh].dense_pos0 >= blk_rows) {
            // dense over more rows than the random block: a cache of that many rows
            size_t rows = (size_t)shapes[sh].dense_pos0 + 1;
            sd_cuda_free(d_kvf);
            d_kvf = dalloc(rows * D * 4);
            for (size_t r0 = 0; r0 < rows; r0 += blk_rows)
                CU(sd_cuda_memcpy_h2d(d_kvf + r0 * D, kvf, (rows - r0 < blk_rows ? rows - r0 : blk_rows) * D * 4));
        }
        int n_keys = dense ? shapes[sh].dense_pos0 + 1 : TOPK;
        struct mattn_ctx c = {{d_q, d_kvf, dense ? NULL : d_idx, d_o, d_scr, scr_n, n_q, H, 512, 64, dense ? 0 : TOPK,
                               dense ? n_keys : (int)blk_rows, dense ? shapes[sh].dense_pos0 : 0, NULL, tau, 0, NULL, NULL}};
        CU(sd_cuda_memset(d_o, 0xff, (size_t)n_q * H * 512 * 4));
        mattn_fn(&c, 0);
        CU(sd_cuda_sync());
        // Validation against float64 on 4 heads of the first and last query (sums over up to 128K keys).
        double num = 0, den = 0;
        int check_rows[2] = {0, n_q - 1}, check_heads[4] = {0, 1, H / 2, H - 1};
        double *sc = xmalloc((size_t)n_keys * sizeof(double)), acc[512];
        for (int cr = 0; cr < (n_q > 1 ? 2 : 1); cr++) {
            size_t r = (size_t)check_rows[cr];
            CU(sd_cuda_memcpy_d2h(got, d_o + r * H * 512, (size_t)H * 512 * 4));
            for (int ch = 0; ch < 4; ch++) {
                int h = check_heads[ch];
                const float *qh = q + (r * H + h) * D;
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t < n_keys; t++) {
                    const float *kr = kvf + (size_t)(dense ? t % (int)blk_rows : idx[r * TOPK + t]) * D;
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += (double)qh[e] * kr[e];
                    sc[t] = d * tau;
                    mx = sc[t] > mx ? sc[t] : mx;
                }
                memset(acc, 0, sizeof acc);
                for (int t = 0; t < n_keys; t++) {
                    const float *kr = kvf + (size_t)(dense ? t % (int)blk_rows : idx[r * TOPK + t]) * D;
                    double w = exp(sc[t] - mx);
                    sum += w;
                    for (int e = 0; e < 512; e++)
                        acc[e] += w * kr[e];
                }
                for (int e = 0; e < 512; e++) {
                    double ref_e = acc[e] / sum, g = got[(size_t)h * 512 + e], err = g - ref_e;
                    num += isfinite(g) ? err * err : INFINITY;
                    den += ref_e * ref_e;
                }
            }
        }
        free(sc);
        double rel = sqrt(num / den);
        double us = time_median(mattn_fn, &c, 3, 10);
        double flops = (double)n_q * H * n_keys * (576 + 512) * 2.0;
        double bytes = (double)n_q * n_keys * D * 4 + (double)n_q * H * D * 4 + (double)n_q * H * 512 * 4;
        char name[96];
        snprintf(name, sizeof name, "mla attn fp32 (forward) %s: q %d h%d keys %d f32 kv", shapes[sh].what, n_q, H,
                 n_keys);
        add_row(name, us, flops, bytes, rel < 1e-5, "vs FlashMLA 410 TFLOP/s:", flops / (us * 1e-6) / 1e12 / 410.0);
        printf("  (mla attn fp32 %s validation vs float64, 4 heads: rel err %.3g)\n", shapes[sh].what, rel);
    }
    sd_cuda_free(d_kvf), sd_cuda_free(d_scr);
    free(blk), free(q), free(idx), free(kvf), free(ql), free(qp), free(ref), free(got), free(scr), free(ix);
    sd_cuda_free(d_kv), sd_cuda_free(d_q), sd_cuda_free(d_o), sd_cuda_free(d_l), sd_cuda_free(d_idx);
}

// ---- FP8 weight GEMV (gemv_fp8.cu, the forward pass's decode with gpu_weights_fp8) on DeepSeek-V3.2's matrix
// shapes: GB/s of weights + scales against the memcpy ceiling. Enough copies of each matrix rotate that the
// weights come from HBM, not L2; a few rows are checked against double on the CPU.
#define GV_MAXROT 64
struct gv_ctx {
    struct sd_cuda_gemv_fp8_params p;
    const uint8_t *q[GV_MAXROT];
    const float *sc[GV_MAXROT];
    int n_rot;
};
static void gv_fn(void *c, int rep)
{
    struct gv_ctx *x = c;
    struct sd_cuda_gemv_fp8_params p = x->p;
    p.w.q = x->q[rep % x->n_rot];
    p.w.scale = x->sc[rep % x->n_rot];
    CU(sd_cuda_gemv_fp8(&p));
}
static void bench_gemv_fp8(double copy_gbs)
{
    static const struct {
        const char *name;
        int N, K;
    } shapes[] = {{"mlp gate/up 18432x7168", 18432, 7168}, {"mlp down 7168x18432", 7168, 18432},
                  {"o_proj 7168x16384", 7168, 16384},      {"q_b 24576x1536", 24576, 1536},
                  {"q_a 1536x7168", 1536, 7168},           {"kv_a 576x7168", 576, 7168}};
    const int B = 128;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int N = shapes[si].N, K = shapes[si].K, sr = (N + B - 1) / B, sc = (K + B - 1) / B;
        const size_t nw = (size_t)N * K, ns = (size_t)sr * sc;
        uint8_t *q = xmalloc(nw);
        float *scale = xmalloc(ns * sizeof(float)), *x = xmalloc(4 * (size_t)K * sizeof(float));
        float *y = xmalloc(4 * (size_t)N * sizeof(float));
        for (size_t i = 0; i < nw; i++) {
            uint8_t v = (uint8_t)(urand() * 256.0);
            q[i] = (v & 0x7f) == 0x7f ? (uint8_t)(v ^ 1) : v;
        }
        for (size_t i = 0; i < ns; i++)
            scale[i] = (float)(0.5 + urand()) / 256.0f;
        for (size_t i = 0; i < 4 * (size_t)K; i++)
            x[i] = nrand();
        struct gv_ctx g = {0};
        g.n_rot = (int)((size_t)(256u << 20) / nw) + 1; // >= 256 MB in rotation: 4x the L2
        if (g.n_rot > GV_MAXROT)
            g.n_rot = GV_MAXROT;
        if (quick && g.n_rot > 4)
            g.n_rot = 4;
        for (int r = 0; r < g.n_rot; r++) {
            uint8_t *dq = dalloc(nw);
            float *ds = dalloc(ns * sizeof(float));
            CU(sd_cuda_memcpy_h2d(dq, q, nw));
            CU(sd_cuda_memcpy_h2d(ds, scale, ns * sizeof(float)));
            g.q[r] = dq, g.sc[r] = ds;
        }
        float *dx = dalloc(4 * (size_t)K * sizeof(float)), *dy = dalloc(4 * (size_t)N * sizeof(float));
        CU(sd_cuda_memcpy_h2d(dx, x, 4 * (size_t)K * sizeof(float)));
        for (int T = 1; T <= 4; T += 3) {
            for (int variant = 0; variant < 2; variant++) {
                g.p = (struct sd_cuda_gemv_fp8_params){.w = {g.q[0], g.sc[0], N, K, B},
                                                       .x = dx,
                                                       .ldx = K,
                                                       .y = dy,
                                                       .ldy = N,
                                                       .n_tok = T,
                                                       .variant = variant};
                CU(sd_cuda_gemv_fp8(&g.p));
                CU(sd_cuda_sync());
                CU(sd_cuda_memcpy_d2h(y, dy, (size_t)T * N * sizeof(float)));
                double worst = 0.0; // 16 rows per token against double, relative to the sum of |terms|
                for (int t = 0; t < T; t++)
                    for (int k8 = 0; k8 < 16; k8++) {
                        int r = (int)(urand() * N);
                        double acc = 0.0, mag = 0.0;
                        for (int k = 0; k < K; k++) {
                            double w = (double)(sd_e4m3_to_f32(q[(size_t)r * K + k]) * scale[(r / B) * sc + k / B]);
                            acc += w * x[(size_t)t * K + k];
                            mag += fabs(w * x[(size_t)t * K + k]);
                        }
                        double e = fabs(y[(size_t)t * N + r] - acc) / (mag > 0 ? mag : 1.0);
                        worst = e > worst ? e : worst;
                    }
                double us_g = time_median(gv_fn, &g, 3, quick ? 5 : 20);
                double bytes = (double)nw + (double)ns * 4.0;
                char label[96];
                snprintf(label, sizeof label, "gemv fp8 v%d %s, %d token%s", variant, shapes[si].name, T,
                         T > 1 ? "s" : "");
                add_row(label, us_g, 2.0 * nw * T, bytes, worst <= 1e-6,
                        "of memcpy BW:", bytes / (us_g * 1e-6) / 1e9 / copy_gbs);
            }
        }
        for (int r = 0; r < g.n_rot; r++)
            sd_cuda_free((void *)g.q[r]), sd_cuda_free((void *)g.sc[r]);
        sd_cuda_free(dx), sd_cuda_free(dy);
        free(q), free(scale), free(x), free(y);
    }
}

int main(int argc, char **argv)
{
    quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    if (sd_cuda_device_count() <= 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    char name[256];
    int n_sm;
    size_t l2;
    CU(sd_cuda_device_info(name, sizeof name, &n_sm, &l2));
    printf("bench_dsa_cuda: %s, %d SMs, L2 %zu MB%s\n", name, n_sm, l2 >> 20, quick ? " (quick)" : "");
    CU(sd_cuda_timer_new(&timer));
    // Ceiling: device-to-device copy of 2 GB (bytes read + written).
    struct cp_ctx cp;
    cp.n = (size_t)2 << 30;
    cp.a = dalloc(cp.n);
    cp.b = dalloc(cp.n);
    CU(sd_cuda_memset(cp.a, 1, cp.n));
    double us = time_median(cp_fn, &cp, 3, 10);
    double copy_gbs = 2.0 * cp.n / (us * 1e-6) / 1e9;
    add_row("cudaMemcpy d2d 2 GiB (read+write)", us, 0, 2.0 * cp.n, 1, NULL, 0);
    sd_cuda_free(cp.a);
    sd_cuda_free(cp.b);

    bench_indexer(copy_gbs);
    bench_topk();
    bench_mla();
    bench_gemv_fp8(copy_gbs);

    printf("\n| kernel | us | TFLOP/s | GB/s | valid | note |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_table; i++) {
        struct row *r = &table[i];
        printf("| %s | %.1f | %.2f | %.1f | %s |", r->name, r->us, r->tflops, r->gbs, r->valid ? "yes" : "NO");
        if (r->extra_name)
            printf(" %s %.3f |\n", r->extra_name, r->extra);
        else
            printf(" |\n");
    }
    sd_cuda_timer_free(timer);
    return 0;
}
