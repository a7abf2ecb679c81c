// test_cuda_ops.c: every CUDA op of kernels/ against the CPU reference in engine/ on small awkward
// shapes (fresh random inputs each run, seed printed; SD_TEST_SEED=N repeats a run). For each case the
// CUDA output is computed first into NaN-poisoned buffers, then the reference; inf/nan positions must
// match, errors are relative by dtype, and a second launch must be bit-identical.
// SD_CUDA_TEST_SMALL=1 keeps the cases small (for compute-sanitizer); SD_CUDA_TEST_ONLY=mla_attn,topk (groups:
// indexer, topk, mla_decode, mla_attn, fp8w, fp8gemm, kvfp8, sample) runs only those groups. Exit 77 without a CUDA
// device. fp8w: FP8 block-scaled weights (gemv_fp8.cu): every e4m3 code, NaN codes included, dequantized to f32 must
// equal sd_e4m3_to_f32(q) * scale bit for bit (and bf16 its nearest-even rounding) on both the 16-wide and the
// per-element path; the GEMV of 1-4 tokens against float64 on those weights, with beta = 0 and 1, on row
// counts that take each warps-per-row variant.
// fp8gemm: activation quantization in 1x128 blocks (both scale orders) and its f32 round trip bit for bit against
// engine/dtype.c; the FP8 x FP8 GEMM (cuBLASLt block-scaled) against float64 on the same quantized operands, after a
// probe of which scale orders cuBLASLt reads as the library writes them.
// kvfp8: the FP8 latent cache rows (kv_fp8.cu): the store bit for bit against engine/dsa.c, the bf16 expansion, and
// the fp32 attention over FP8 rows bit for bit against the same attention over their dequantized f32 values.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsa.h"
#include "dtype.h"
#include "sampler.h"
#include "sd_cuda.h"
#include "test_util.h"

#define CU(expr)                                                                                                       \
    do {                                                                                                               \
        enum sd_status st_ = (expr);                                                                                   \
        if (st_ != SD_OK) {                                                                                            \
            fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #expr, sd_status_str(st_),              \
                    sd_cuda_last_error());                                                                             \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
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
static void *dupload(const void *h, size_t n)
{
    void *p = dalloc(n);
    CU(sd_cuda_memcpy_h2d(p, h, n));
    return p;
}

static int small_mode;
static double worst_gemv_rel[2];
static int dequant_cases, dequant_exact;
static double worst_idx_simple, worst_idx_mma, worst_mla_rel[3], worst_mla_lse[3], worst_attn_rel;
static int attn_cases;
static int topk_cases, topk_exact, topk_split_cases;

// ---------------------------------------------------------------- indexer
struct ix_case {
    int n_q, n_heads, n_k;
    int mask; // 0: all valid (n_valid NULL), 1: causal prefill rows, 2: random per row
};

// Paged cache [pages][64 x 128 e4m3 | 64 x f32]; padding tokens filled with e4m3 NaN (0x7f) bytes.
static uint8_t *make_paged(const uint8_t *k8, const float *ks, int n_k, size_t *bytes)
{
    int pages = (n_k + SD_CUDA_IDX_PAGE - 1) / SD_CUDA_IDX_PAGE;
    *bytes = (size_t)pages * SD_CUDA_IDX_PAGE_BYTES;
    uint8_t *c = xmalloc(*bytes);
    memset(c, 0x7f, *bytes);
    for (int u = 0; u < n_k; u++) {
        uint8_t *page = c + (size_t)(u / SD_CUDA_IDX_PAGE) * SD_CUDA_IDX_PAGE_BYTES;
        memcpy(page + (size_t)(u % SD_CUDA_IDX_PAGE) * SD_CUDA_IDX_DIM, k8 + (size_t)u * SD_CUDA_IDX_DIM,
               SD_CUDA_IDX_DIM);
        memcpy(page + SD_CUDA_IDX_PAGE * SD_CUDA_IDX_DIM + (size_t)(u % SD_CUDA_IDX_PAGE) * 4, &ks[u], 4);
    }
    return c;
}

static void test_indexer_case(struct ix_case c)
{
    const int D = SD_CUDA_IDX_DIM, H = c.n_heads;
    size_t nqh = (size_t)c.n_q * H;
    uint8_t *q8 = xmalloc(nqh * D), *k8 = xmalloc((size_t)c.n_k * D);
    float *qs = xmalloc(nqh * 4), *w = xmalloc(nqh * 4), *ks = xmalloc((size_t)c.n_k * 4);
    float row[128];
    for (size_t r = 0; r < nqh; r++) {
        for (int d = 0; d < D; d++)
            row[d] = sd_test_nrand() * (float)(0.5 + sd_test_urand());
        sd_dsa_quant_fp8_row(row, D, q8 + r * D, &qs[r]);
        w[r] = sd_test_nrand() / sqrtf((float)H) / sqrtf((float)D);
    }
    for (int u = 0; u < c.n_k; u++) {
        for (int d = 0; d < D; d++)
            row[d] = sd_test_nrand() * (float)(0.5 + sd_test_urand());
        sd_dsa_quant_fp8_row(row, D, k8 + (size_t)u * D, &ks[u]);
    }
    int *nv = NULL;
    if (c.mask) {
        nv = xmalloc((size_t)c.n_q * sizeof(int));
        for (int i = 0; i < c.n_q; i++)
            nv[i] = c.mask == 1 ? c.n_k - c.n_q + 1 + i : (int)(sd_test_urand() * (c.n_k + 1));
        for (int i = 0; i < c.n_q; i++)
            nv[i] = nv[i] < 0 ? 0 : nv[i];
    }
    size_t cache_bytes;
    uint8_t *cache = make_paged(k8, ks, c.n_k, &cache_bytes);
    size_t ld = (size_t)c.n_k + 3;
    size_t sbytes = (size_t)c.n_q * ld * sizeof(float);
    uint8_t *d_q8 = dupload(q8, nqh * D), *d_cache = dupload(cache, cache_bytes);
    float *d_qs = dupload(qs, nqh * 4), *d_w = dupload(w, nqh * 4);
    int *d_nv = nv ? dupload(nv, (size_t)c.n_q * sizeof(int)) : NULL;
    float *d_s = dalloc(sbytes);
    float *got[3] = {NULL, NULL, NULL}, *again = xmalloc(sbytes);
    for (int variant = 1; variant <= 2; variant++) {
        if (variant == 2 && H != 64)
            continue;
        struct sd_cuda_indexer_params p = {d_q8, d_qs,  d_w, d_cache, NULL,    d_nv, d_s,
                                           ld,   c.n_q, H,   c.n_k,   variant, NULL};
        got[variant] = xmalloc(sbytes);
        for (int rep = 0; rep < 2; rep++) {
            CU(sd_cuda_memset(d_s, 0xff, sbytes));
            CU(sd_cuda_indexer_fp8(&p));
            CU(sd_cuda_sync());
            CU(sd_cuda_memcpy_d2h(rep ? again : got[variant], d_s, sbytes));
        }
        CHECK_MSG(memcmp(again, got[variant], sbytes) == 0, "indexer variant %d not deterministic (n_q %d n_k %d)",
                  variant, c.n_q, c.n_k);
        // The flat layout (the forward pass's cache: rows back to back, scales apart) gives the same bits.
        uint8_t *d_k8 = dupload(k8, (size_t)c.n_k * D);
        float *d_ks = dupload(ks, (size_t)c.n_k * 4);
        struct sd_cuda_indexer_params pf = p;
        pf.kcache = d_k8, pf.k_scale = d_ks;
        CU(sd_cuda_memset(d_s, 0xff, sbytes));
        CU(sd_cuda_indexer_fp8(&pf));
        CU(sd_cuda_sync());
        CU(sd_cuda_memcpy_d2h(again, d_s, sbytes));
        CHECK_MSG(memcmp(again, got[variant], sbytes) == 0, "indexer variant %d: flat cache layout differs from paged",
                  variant);
        sd_cuda_free(d_k8);
        sd_cuda_free(d_ks);
    }
    // Reference after the kernels.
    float *ref = xmalloc(sbytes);
    sd_dsa_index_scores_fp8(q8, qs, w, c.n_q, H, D, k8, ks, c.n_k, nv, ref, ld, 4);
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = sd_e4m3_to_f32((uint8_t)v);
    for (int variant = 1; variant <= 2; variant++) {
        if (!got[variant])
            continue;
        double worst = 0;
        int bad = 0;
        for (int i = 0; i < c.n_q; i++) {
            for (int u = 0; u < c.n_k; u++) {
                float g = got[variant][(size_t)i * ld + u], r = ref[(size_t)i * ld + u];
                if (isinf(r) || isnan(r) || isinf(g) || isnan(g)) {
                    if (!((isnan(r) && isnan(g)) || (isinf(r) && g == r))) {
                        if (bad++ < 5)
                            fprintf(stderr, "indexer v%d [%d][%d]: got %g want %g\n", variant, i, u, g, r);
                    }
                    continue;
                }
                // Magnitude of the signed sum: ks * sum_j |w q_s| relu(dot), in double.
                double mag = 0;
                for (int j = 0; j < H; j++) {
                    const uint8_t *a = q8 + ((size_t)i * H + j) * D, *b = k8 + (size_t)u * D;
                    double d = 0;
                    for (int x = 0; x < D; x++)
                        d += (double)lut[a[x]] * lut[b[x]];
                    if (d > 0)
                        mag += fabs((double)w[(size_t)i * H + j] * qs[(size_t)i * H + j]) * d;
                }
                mag *= ks[u];
                double e = fabs((double)g - r) / (mag + 1e-30);
                if (e > worst)
                    worst = e;
                if (e > 1e-5 && bad++ < 5)
                    fprintf(stderr, "indexer v%d [%d][%d]: got %.9g want %.9g (rel %.3g of magnitude %.3g)\n", variant,
                            i, u, g, r, e, mag);
            }
        }
        CHECK_MSG(bad == 0, "indexer variant %d: %d bad elements (n_q %d heads %d n_k %d mask %d)", variant, bad, c.n_q,
                  H, c.n_k, c.mask);
        if (variant == 1) { // exact dots + the CPU's head-sum order: every score bit-identical
            int diff = 0;
            for (int i = 0; i < c.n_q; i++)
                diff += memcmp(got[1] + (size_t)i * ld, ref + (size_t)i * ld, (size_t)c.n_k * sizeof(float)) != 0;
            CHECK_MSG(diff == 0, "indexer SIMPLE: %d of %d score rows not bit-identical to the CPU (n_k %d)", diff,
                      c.n_q, c.n_k);
        }
        double *wv = variant == 1 ? &worst_idx_simple : &worst_idx_mma;
        if (worst > *wv)
            *wv = worst;
    }
    free(q8), free(k8), free(qs), free(w), free(ks), free(nv), free(cache), free(ref), free(again);
    free(got[1]), free(got[2]);
    sd_cuda_free(d_q8), sd_cuda_free(d_cache), sd_cuda_free(d_qs), sd_cuda_free(d_w), sd_cuda_free(d_nv);
    sd_cuda_free(d_s);
}

// ---------------------------------------------------------------- top-k
static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}
static int cmp_f_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

// kind 0: random normal; 1: few distinct values (ties) with some -inf and NaN.
static void test_topk_case(int n_rows, int n_cols, int k, int kind, int with_nv)
{
    size_t ld = (size_t)n_cols + 1, ldi = (size_t)k;
    float *s = xmalloc((size_t)n_rows * ld * 4);
    for (size_t x = 0; x < (size_t)n_rows * ld; x++) {
        if (kind == 0) {
            s[x] = sd_test_nrand();
        } else {
            double r = sd_test_urand();
            s[x] = r < 0.05 ? -INFINITY : r < 0.08 ? NAN : (float)floor(sd_test_urand() * 6);
        }
    }
    int *nv = NULL;
    if (with_nv) {
        nv = xmalloc((size_t)n_rows * sizeof(int));
        for (int r = 0; r < n_rows; r++) {
            double u = sd_test_urand();
            nv[r] = u < 0.15 ? n_cols : u < 0.25 ? (int)(sd_test_urand() * k) : (int)(sd_test_urand() * (n_cols + 1));
        }
        for (int r = 0; r < n_rows; r++)
            nv[r] = nv[r] > n_cols ? n_cols : nv[r];
        nv[0] = n_cols;
        if (n_rows > 1)
            nv[1] = 0;
    }
    float *d_s = dupload(s, (size_t)n_rows * ld * 4);
    int *d_nv = nv ? dupload(nv, (size_t)n_rows * sizeof(int)) : NULL;
    size_t ib = (size_t)n_rows * ldi * 4;
    int32_t *d_i = dalloc(ib), *got = xmalloc(ib), *again = xmalloc(ib);
    struct sd_cuda_topk_params p = {d_s, ld, d_nv, n_rows, n_cols, k, d_i, ldi, NULL, NULL, 0};
    for (int rep = 0; rep < 2; rep++) {
        CU(sd_cuda_memset(d_i, 0x7f, ib));
        CU(sd_cuda_topk(&p));
        CU(sd_cuda_sync());
        CU(sd_cuda_memcpy_d2h(rep ? again : got, d_i, ib));
    }
    CHECK_MSG(memcmp(got, again, ib) == 0, "topk not deterministic");
    // The split path (few rows over slices in parallel blocks, with scratch): the same output, twice (the scratch is
    // poisoned first: the call must not depend on what an earlier one left there).
    if (n_rows <= SD_CUDA_TOPK_SPLIT_ROWS && n_cols >= SD_CUDA_TOPK_SPLIT_COLS) {
        size_t sb = sd_cuda_topk_scratch_bytes(n_rows, n_cols);
        void *d_scr = dalloc(sb);
        struct sd_cuda_topk_params ps = p;
        ps.scratch = d_scr, ps.scratch_bytes = sb;
        for (int rep = 0; rep < 2; rep++) {
            CU(sd_cuda_memset(d_scr, 0x5a, sb));
            CU(sd_cuda_memset(d_i, 0x7f, ib));
            CU(sd_cuda_topk(&ps));
            CU(sd_cuda_sync());
            CU(sd_cuda_memcpy_d2h(again, d_i, ib));
            CHECK_MSG(memcmp(got, again, ib) == 0,
                      "topk split path differs from one block per row (rows %d cols %d k %d)", n_rows, n_cols, k);
        }
        topk_split_cases++;
        sd_cuda_free(d_scr);
    }
    int32_t *ref = xmalloc((size_t)k * 4), *scratch = xmalloc((size_t)n_cols * 4 + 4);
    float *tmp = xmalloc((size_t)n_cols * 4 + 4);
    for (int r = 0; r < n_rows; r++) {
        int n = nv ? nv[r] : n_cols;
        const float *row = s + (size_t)r * ld;
        int n_ref = sd_dsa_topk(row, n, k, ref, scratch);
        const int32_t *g = got + (size_t)r * ldi;
        topk_cases++;
        int exact = memcmp(g, ref, (size_t)k * 4) == 0;
        topk_exact += exact;
        CHECK_MSG(exact, "topk row %d (n_cols %d n_valid %d k %d kind %d) differs from sd_dsa_topk", r, n_cols, n, k,
                  kind);
        // Properties: n_ref valid entries ascending, distinct, in range; then -1; all >= the k-th score.
        int ok = 1;
        for (int x = 0; x < k; x++) {
            if (x < n_ref)
                ok &= g[x] >= 0 && g[x] < n && (x == 0 || g[x] > g[x - 1]);
            else
                ok &= g[x] == -1;
        }
        if (ok && n_ref == k && n > k) {
            for (int x = 0; x < n; x++)
                tmp[x] = isnan(row[x]) ? -INFINITY : row[x];
            qsort(tmp, (size_t)n, 4, cmp_f_desc);
            float kth = tmp[k - 1];
            for (int x = 0; x < k; x++) {
                float v = isnan(row[g[x]]) ? -INFINITY : row[g[x]];
                ok &= v >= kth;
            }
        }
        CHECK_MSG(ok, "topk row %d (n_cols %d n_valid %d k %d kind %d): invalid selection", r, n_cols, n, k, kind);
    }
    (void)cmp_i32;
    free(s), free(nv), free(got), free(again), free(ref), free(scratch), free(tmp);
    sd_cuda_free(d_s), sd_cuda_free(d_nv), sd_cuda_free(d_i);
}

// Fused chunked indexer + top-k (SIMPLE variant: bit-exact scores, so the sets must match exactly).
static void test_indexer_topk(int n_q, int n_k, int k, int chunk)
{
    const int D = 128, H = 64;
    size_t nqh = (size_t)n_q * H;
    uint8_t *q8 = xmalloc(nqh * D), *k8 = xmalloc((size_t)n_k * D);
    float *qs = xmalloc(nqh * 4), *w = xmalloc(nqh * 4), *ks = xmalloc((size_t)n_k * 4), row[128];
    for (size_t r = 0; r < nqh; r++) {
        for (int d = 0; d < D; d++)
            row[d] = sd_test_nrand();
        sd_dsa_quant_fp8_row(row, D, q8 + r * D, &qs[r]);
        w[r] = sd_test_nrand() / 8.0f / sqrtf(128.0f);
    }
    for (int u = 0; u < n_k; u++) {
        for (int d = 0; d < D; d++)
            row[d] = sd_test_nrand();
        sd_dsa_quant_fp8_row(row, D, k8 + (size_t)u * D, &ks[u]);
    }
    int *nv = xmalloc((size_t)n_q * sizeof(int));
    for (int i = 0; i < n_q; i++)
        nv[i] = n_k - n_q + 1 + i;
    size_t cb;
    uint8_t *cache = make_paged(k8, ks, n_k, &cb);
    uint8_t *d_q8 = dupload(q8, nqh * D), *d_cache = dupload(cache, cb);
    float *d_qs = dupload(qs, nqh * 4), *d_w = dupload(w, nqh * 4), *d_scr = dalloc((size_t)chunk * n_k * 4);
    int *d_nv = dupload(nv, (size_t)n_q * sizeof(int));
    int32_t *d_idx = dalloc((size_t)n_q * k * 4), *got = xmalloc((size_t)n_q * k * 4);
    float *ref_s = xmalloc((size_t)n_q * n_k * 4);
    int32_t *ref = xmalloc((size_t)k * 4), *scratch = xmalloc((size_t)n_k * 4);
    for (int variant = 1; variant <= 2; variant++) {
        struct sd_cuda_indexer_topk_params p;
        memset(&p, 0, sizeof p);
        p.ix =
            (struct sd_cuda_indexer_params){d_q8, d_qs, d_w, d_cache, NULL, d_nv, NULL, 0, n_q, H, n_k, variant, NULL};
        p.scratch = d_scr;
        p.chunk = chunk;
        p.k = k;
        p.idx = d_idx;
        CU(sd_cuda_memset(d_idx, 0x7f, (size_t)n_q * k * 4));
        CU(sd_cuda_indexer_topk(&p));
        CU(sd_cuda_sync());
        CU(sd_cuda_memcpy_d2h(got, d_idx, (size_t)n_q * k * 4));
        if (variant == 1)
            sd_dsa_index_scores_fp8(q8, qs, w, n_q, H, D, k8, ks, n_k, nv, ref_s, (size_t)n_k, 4);
        long same = 0, total = 0;
        for (int i = 0; i < n_q; i++) {
            int n_ref = sd_dsa_topk(ref_s + (size_t)i * n_k, nv[i], k, ref, scratch);
            const int32_t *g = got + (size_t)i * k;
            // set overlap (both ascending)
            int a = 0, b = 0;
            while (a < n_ref && b < k && g[b] >= 0) {
                if (ref[a] == g[b])
                    same++, a++, b++;
                else if (ref[a] < g[b])
                    a++;
                else
                    b++;
            }
            total += n_ref;
        }
        double frac = total ? (double)same / total : 1.0;
        printf("  indexer+topk fused, variant %d, n_q %d n_k %d chunk %d: set overlap %.6f\n", variant, n_q, n_k, chunk,
               frac);
        if (variant == 1)
            CHECK_MSG(same == total, "fused indexer+topk (simple) set differs: overlap %.6f", frac);
        else
            CHECK_MSG(frac > 0.995, "fused indexer+topk (mma) overlap %.6f too low", frac);
    }
    free(q8), free(k8), free(qs), free(w), free(ks), free(nv), free(cache), free(got), free(ref_s), free(ref);
    free(scratch);
    sd_cuda_free(d_q8), sd_cuda_free(d_cache), sd_cuda_free(d_qs), sd_cuda_free(d_w), sd_cuda_free(d_scr);
    sd_cuda_free(d_nv), sd_cuda_free(d_idx);
}

// ---------------------------------------------------------------- float64 MLA attention reference
// One query head qh (D floats) over the cache rows keys[0..nk) (rows of D floats; the values are the first d_v
// of each row), all in double: returns the log-sum-exp of the scaled logits (-inf when nk == 0) and, when out
// is not NULL, the softmax-weighted values (zeros when nk == 0). sc: nk doubles of scratch.
static double mla_ref64(const float *qh, const float *kv, int D, const int32_t *keys, int nk, double scale, int d_v,
                        double *out, double *sc)
{
    double mx = -INFINITY, sum = 0;
    for (int t = 0; t < nk; t++) {
        double s = 0;
        for (int d = 0; d < D; d++)
            s += (double)qh[d] * kv[(size_t)keys[t] * D + d];
        sc[t] = s * scale;
        if (sc[t] > mx)
            mx = sc[t];
    }
    if (out)
        memset(out, 0, (size_t)d_v * sizeof(double));
    for (int t = 0; t < nk; t++) {
        double w = exp(sc[t] - mx);
        sum += w;
        for (int d = 0; out && d < d_v; d++)
            out[d] += w * kv[(size_t)keys[t] * D + d];
    }
    for (int d = 0; out && nk && d < d_v; d++)
        out[d] /= sum;
    return nk ? mx + log(sum) : -INFINITY;
}

// ---------------------------------------------------------------- sparse MLA decode
// [rows][n_idx] token slots. kind 0: distinct valid slots (while t < n_tokens, then -1); 1: with -1,
// out-of-range and duplicate slots; 2: all invalid. Caller frees.
static int32_t *make_idx(int rows, int n_idx, int n_tokens, int kind)
{
    int32_t *idx = xmalloc((size_t)rows * n_idx * 4 + 4);
    for (size_t r = 0; r < (size_t)rows; r++)
        for (int t = 0; t < n_idx; t++) {
            int32_t u = t < n_tokens ? (int32_t)((t * 7919L + r * 131) % n_tokens) : -1;
            if (kind == 1) {
                double z = sd_test_urand();
                u = z < 0.1    ? -1
                    : z < 0.15 ? n_tokens + (int32_t)(sd_test_urand() * 100)
                    : z < 0.2  ? (int32_t)(sd_test_urand() * n_tokens)
                               : u;
            }
            if (kind == 2)
                u = -1;
            idx[r * n_idx + t] = u;
        }
    return idx;
}

// idx_kind 0: distinct valid slots; 1: with -1, out-of-range and duplicate slots; 2: all invalid.
static void test_mla_case(int batch, int s_q, int n_heads, int topk, int n_tokens, int idx_kind)
{
    const int DL = 512, DR = 64, D = 576;
    const float tau = 0.1352338f;
    size_t nq = (size_t)batch * s_q * n_heads * D;
    float *q = xmalloc(nq * 4);
    for (size_t x = 0; x < nq; x++) // bf16-representable, so the MMA variant's q rounding is exact
        q[x] = sd_bf16_to_f32(sd_f32_to_bf16(sd_test_nrand()));
    uint16_t *kv = xmalloc((size_t)n_tokens * D * 2);
    float *kvf = xmalloc((size_t)n_tokens * D * 4);
    for (size_t x = 0; x < (size_t)n_tokens * D; x++) {
        kv[x] = sd_f32_to_bf16(sd_test_nrand());
        kvf[x] = sd_bf16_to_f32(kv[x]);
    }
    size_t ni = (size_t)batch * s_q * topk;
    int32_t *idx = make_idx(batch * s_q, topk, n_tokens, idx_kind);
    float *d_q = dupload(q, nq * 4);
    uint16_t *d_kv = dupload(kv, (size_t)n_tokens * D * 2);
    int32_t *d_idx = dupload(idx, ni * 4);
    size_t no = (size_t)batch * s_q * n_heads * DL, nl = (size_t)batch * s_q * n_heads;
    float *d_o = dalloc(no * 4), *d_l = dalloc(nl * 4);
    float *o[3], *l[3], *o2 = xmalloc(no * 4), *l2 = xmalloc(nl * 4);
    for (int v = 1; v <= 2; v++) {
        o[v] = xmalloc(no * 4);
        l[v] = xmalloc(nl * 4);
        struct sd_cuda_mla_decode_params p = {d_q,     d_kv, d_idx,    d_o, d_l,  batch, s_q,
                                              n_heads, topk, n_tokens, tau, NULL, v};
        for (int rep = 0; rep < 2; rep++) {
            CU(sd_cuda_memset(d_o, 0xff, no * 4));
            CU(sd_cuda_memset(d_l, 0xff, nl * 4));
            CU(sd_cuda_mla_decode(&p));
            CU(sd_cuda_sync());
            CU(sd_cuda_memcpy_d2h(rep ? o2 : o[v], d_o, no * 4));
            CU(sd_cuda_memcpy_d2h(rep ? l2 : l[v], d_l, nl * 4));
        }
        CHECK_MSG(memcmp(o[v], o2, no * 4) == 0 && memcmp(l[v], l2, nl * 4) == 0,
                  "mla decode variant %d not deterministic", v);
    }
    // Reference (after the kernels): per (b, sq), invalid slots mapped to -1 for the CPU.
    float *ql = xmalloc((size_t)n_heads * DL * 4), *qp = xmalloc((size_t)n_heads * DR * 4);
    float *ref = xmalloc(no * 4), *lref = xmalloc(nl * 4), *scr = xmalloc((size_t)topk * 8 + 4);
    double *sc = xmalloc((size_t)topk * sizeof(double) + 8);
    int32_t *ix = xmalloc((size_t)topk * 4 + 4), *keys = xmalloc((size_t)topk * 4 + 4);
    for (size_t r = 0; r < (size_t)batch * s_q; r++) {
        for (int h = 0; h < n_heads; h++) {
            memcpy(ql + (size_t)h * DL, q + (r * n_heads + h) * D, DL * 4);
            memcpy(qp + (size_t)h * DR, q + (r * n_heads + h) * D + DL, DR * 4);
        }
        for (int t = 0; t < topk; t++) {
            int32_t u = idx[r * topk + t];
            ix[t] = (u >= 0 && u < n_tokens) ? u : -1;
        }
        sd_mla_sparse_attn_absorbed(ql, qp, n_heads, DL, DR, kvf, D, ix, topk, tau, ref + r * n_heads * DL, scr);
        int nk = 0; // the valid slots (duplicates kept), for the lse in double
        for (int t = 0; t < topk; t++)
            if (ix[t] >= 0)
                keys[nk++] = ix[t];
        for (int h = 0; h < n_heads; h++)
            lref[r * n_heads + h] = (float)mla_ref64(q + (r * n_heads + h) * D, kvf, D, keys, nk, tau, 0, NULL, sc);
    }
    for (int v = 1; v <= 2; v++) {
        double num = 0, den = 0, worst_lse = 0;
        int bad_nonfinite = 0, bad_lse = 0;
        for (size_t x = 0; x < no; x++) {
            if (!isfinite(o[v][x])) {
                bad_nonfinite++;
                continue;
            }
            num += ((double)o[v][x] - ref[x]) * ((double)o[v][x] - ref[x]);
            den += (double)ref[x] * ref[x];
        }
        for (size_t x = 0; x < nl; x++) {
            if (isinf(lref[x]))
                bad_lse += !(isinf(l[v][x]) && l[v][x] < 0);
            else if (!(fabs(l[v][x] - lref[x]) <= worst_lse))
                worst_lse = isnan(l[v][x]) ? INFINITY : fabs(l[v][x] - lref[x]);
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        double tol = v == 1 ? 1e-5 : 4e-3; // MMA: P rounded to bf16 before PV (FlashMLA numerics)
        printf("  mla decode %s b %d s_q %d h %d topk %d n_tokens %d kind %d: rel err %.3g, lse abs err %.3g\n",
               v == 1 ? "simple" : "mma", batch, s_q, n_heads, topk, n_tokens, idx_kind, rel, worst_lse);
        CHECK_MSG(bad_nonfinite == 0, "mla decode v%d: %d non-finite outputs", v, bad_nonfinite);
        CHECK_MSG(bad_lse == 0, "mla decode v%d: %d lse should be -inf", v, bad_lse);
        CHECK_MSG(rel < tol, "mla decode v%d rel err %.3g > %.1g (b %d h %d topk %d kind %d)", v, rel, tol, batch,
                  n_heads, topk, idx_kind);
        CHECK_MSG(worst_lse < 1e-4, "mla decode v%d lse err %.3g", v, worst_lse);
        if (rel > worst_mla_rel[v])
            worst_mla_rel[v] = rel;
        if (worst_lse > worst_mla_lse[v])
            worst_mla_lse[v] = worst_lse;
        free(o[v]), free(l[v]);
    }
    free(q), free(kv), free(kvf), free(idx), free(o2), free(l2), free(ql), free(qp), free(ref), free(lref);
    free(scr), free(ix), free(keys), free(sc);
    sd_cuda_free(d_q), sd_cuda_free(d_kv), sd_cuda_free(d_idx), sd_cuda_free(d_o), sd_cuda_free(d_l);
}

// ---------------------------------------------------------------- fp32 absorbed MLA attention (forward pass)
// Against a float64 reference. idx_kind 0: distinct valid slots; 1: with -1, out-of-range and duplicate
// slots; 2: all invalid; -1: dense causal (idx NULL, query i sees tokens 0 .. pos0 + i). n_split 0 = auto.
static void test_mla_attn_case(int n_q, int n_heads, int d_lat, int d_rope, int n_tokens, int n_idx, int pos0,
                               int idx_kind, int n_split)
{
    const int D = d_lat + d_rope;
    const float scale = 1.0f / sqrtf((float)D);
    size_t nq = (size_t)n_q * n_heads * D, nkv = (size_t)n_tokens * D, no = (size_t)n_q * n_heads * d_lat;
    float *q = xmalloc(nq * 4), *kv = xmalloc(nkv * 4);
    for (size_t x = 0; x < nq; x++)
        q[x] = sd_test_nrand();
    for (size_t x = 0; x < nkv; x++)
        kv[x] = sd_test_nrand();
    int32_t *idx = NULL;
    if (idx_kind >= 0)
        idx = make_idx(n_q, n_idx, n_tokens, idx_kind);
    float *d_q = dupload(q, nq * 4), *d_kv = dupload(kv, nkv * 4), *d_o = dalloc(no * 4);
    int32_t *d_idx = idx ? dupload(idx, (size_t)n_q * n_idx * 4 + 4) : NULL;
    size_t scr_n = sd_cuda_mla_attn_scratch_floats(n_heads, d_lat);
    if (n_split > 0 && (size_t)n_split * n_q * n_heads * (d_lat + 1) > scr_n)
        scr_n = (size_t)n_split * n_q * n_heads * (d_lat + 1);
    float *d_scr = dalloc(scr_n * 4);
    float *o = xmalloc(no * 4), *o2 = xmalloc(no * 4);
    struct sd_cuda_mla_attn_params p = {d_q,    d_kv,  d_idx,    d_o,  d_scr, scr_n, n_q,     n_heads, d_lat,
                                        d_rope, n_idx, n_tokens, pos0, NULL,  scale, n_split, NULL,    NULL};
    for (int rep = 0; rep < 2; rep++) {
        CU(sd_cuda_memset(d_o, 0xff, no * 4));
        CU(sd_cuda_memset(d_scr, 0xff, scr_n * 4));
        CU(sd_cuda_mla_attn(&p));
        CU(sd_cuda_sync());
        CU(sd_cuda_memcpy_d2h(rep ? o2 : o, d_o, no * 4));
    }
    CHECK_MSG(memcmp(o, o2, no * 4) == 0, "mla attn not deterministic (h %d d %d+%d)", n_heads, d_lat, d_rope);
    if (!idx) { // the position read from device memory (d_pos0, as the forward pass passes it): the same bits, and
                // with a larger planning bound (another split of the keys) the same values up to summation order
        int *d_pos = dupload(&pos0, sizeof pos0);
        struct sd_cuda_mla_attn_params pd = p;
        pd.d_pos0 = d_pos;
        for (int bound = 0; bound < 2; bound++) {
            pd.pos0 = pos0 + (bound ? 2048 : 0);
            CU(sd_cuda_memset(d_o, 0xff, no * 4));
            CU(sd_cuda_mla_attn(&pd));
            CU(sd_cuda_sync());
            CU(sd_cuda_memcpy_d2h(o2, d_o, no * 4));
            if (!bound) {
                CHECK_MSG(memcmp(o, o2, no * 4) == 0, "mla attn with d_pos0 differs (h %d pos0 %d)", n_heads, pos0);
            } else {
                double dn = 0, dd = 0;
                for (size_t e = 0; e < no; e++) {
                    dn += ((double)o2[e] - o[e]) * ((double)o2[e] - o[e]);
                    dd += (double)o[e] * o[e];
                }
                CHECK_MSG(sqrt(dn) <= 1e-5 * sqrt(dd) + 1e-30,
                          "mla attn d_pos0 with a larger bound: rel %.3g (pos0 %d)", sqrt(dn / (dd + 1e-300)), pos0);
            }
        }
        sd_cuda_free(d_pos);
    }
    // float64 reference
    int n_max = idx ? n_idx : pos0 + n_q;
    double *sc = xmalloc((size_t)(n_max > 0 ? n_max : 1) * sizeof(double)), *acc = xmalloc((size_t)d_lat * 8);
    int32_t *keys = xmalloc((size_t)(n_max > 0 ? n_max : 1) * 4);
    double num = 0, den = 0;
    int bad = 0, nonzero_empty = 0;
    for (int i = 0; i < n_q; i++) {
        int nk = 0;
        if (idx) {
            for (int t = 0; t < n_idx; t++) {
                int32_t u = idx[(size_t)i * n_idx + t];
                if (u >= 0 && u < n_tokens)
                    keys[nk++] = u;
            }
        } else {
            for (int u = 0; u <= pos0 + i && u < n_tokens; u++)
                keys[nk++] = u;
        }
        for (int h = 0; h < n_heads; h++) {
            const float *oh = o + ((size_t)i * n_heads + h) * d_lat;
            mla_ref64(q + ((size_t)i * n_heads + h) * D, kv, D, keys, nk, scale, d_lat, acc, sc);
            for (int d = 0; d < d_lat; d++) {
                double ref = acc[d];
                if (!isfinite(oh[d])) {
                    bad++;
                    continue;
                }
                if (!nk && oh[d] != 0.0f)
                    nonzero_empty++;
                num += (oh[d] - ref) * (oh[d] - ref);
                den += ref * ref;
            }
        }
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("  mla attn f32 q %d h %d d %d+%d tokens %d idx %d pos0 %d kind %d split %d: rel err %.3g\n", n_q, n_heads,
           d_lat, d_rope, n_tokens, n_idx, pos0, idx_kind, n_split, rel);
    CHECK_MSG(bad == 0, "mla attn: %d non-finite outputs", bad);
    CHECK_MSG(nonzero_empty == 0, "mla attn: %d outputs of rows without keys are not 0", nonzero_empty);
    CHECK_MSG(rel < 1e-5, "mla attn rel err %.3g > 1e-5 (h %d d %d+%d kind %d split %d)", rel, n_heads, d_lat, d_rope,
              idx_kind, n_split);
    if (rel > worst_attn_rel)
        worst_attn_rel = rel;
    attn_cases++;
    free(q), free(kv), free(idx), free(o), free(o2), free(sc), free(acc), free(keys);
    sd_cuda_free(d_q), sd_cuda_free(d_kv), sd_cuda_free(d_o), sd_cuda_free(d_idx), sd_cuda_free(d_scr);
}

// ---------------------------------------------------------------- FP8 latent cache rows (kv_fp8.cu)
// Rows of mixed magnitudes (1e-6: the scale clamp; 1 .. 300) quantized on the host (engine/dsa.c, itself checked
// against its definition in test_dsa): the device's store (at a device position, from rows ld floats apart) must
// write the same bytes and leave the rows before it alone; its bf16 expansion must equal the host's dequantized
// values rounded to bf16; the fp32 attention over the kv_fp8 rows must equal, bit for bit, the attention over the
// host's dequantized f32 rows (the f32 kernel is checked against float64 in mla_attn).
static int kv8_cases, kv8_exact;

static void test_kv8_case(int n_q, int n_heads, int d_lat, int d_rope, int n_tokens, int n_idx, int pos0, int idx_kind,
                          int n_split)
{
    const int D = d_lat + d_rope, P = 3, ld = D + 4;
    const size_t rb = sd_mla_kv_fp8_row_bytes(d_lat, d_rope);
    CHECK(sd_cuda_kv_fp8_row_bytes(d_lat, d_rope) == rb);
    float *rows = xmalloc((size_t)n_tokens * ld * 4), *kvd = xmalloc((size_t)n_tokens * D * 4);
    uint8_t *kv8 = xmalloc((size_t)(n_tokens + P) * rb), *back = xmalloc((size_t)(n_tokens + P) * rb);
    memset(kv8, 0xab, (size_t)P * rb);
    for (int u = 0; u < n_tokens; u++) {
        float mag = u % 17 == 3 ? 1e-6f : (float)(1 + (u % 5) * 75);
        for (int d = 0; d < ld; d++)
            rows[(size_t)u * ld + d] = d < D ? sd_test_nrand() * mag : NAN; // the gap between rows is never read
        sd_mla_kv_fp8_quant(rows + (size_t)u * ld, d_lat, d_rope, kv8 + (size_t)(u + P) * rb);
        sd_mla_kv_fp8_dequant(kv8 + (size_t)(u + P) * rb, d_lat, d_rope, kvd + (size_t)u * D);
    }
    float *d_rows = dupload(rows, (size_t)n_tokens * ld * 4);
    uint8_t *d_cache = dalloc((size_t)(n_tokens + P) * rb);
    int *d_pos = dupload(&P, sizeof P);
    CU(sd_cuda_memset(d_cache, 0xab, (size_t)(n_tokens + P) * rb));
    CU(sd_cuda_kv_fp8_store(d_cache, d_rows, (size_t)ld, n_tokens, d_lat, d_rope, d_pos, NULL));
    CU(sd_cuda_sync());
    CU(sd_cuda_memcpy_d2h(back, d_cache, (size_t)(n_tokens + P) * rb));
    int store_ok = memcmp(back, kv8, (size_t)(n_tokens + P) * rb) == 0;
    if (!store_ok) { // where: before the rows, codes, scales, k_pe; the first differing byte
        size_t nd[4] = {0}, first = (size_t)-1;
        for (size_t i = 0; i < (size_t)(n_tokens + P) * rb; i++) {
            if (back[i] == kv8[i])
                continue;
            size_t off = i % rb;
            nd[i < (size_t)P * rb ? 0 : off < (size_t)d_lat ? 1 : off < rb - 2 * (size_t)d_rope ? 2 : 3]++;
            if (first == (size_t)-1)
                first = i;
        }
        size_t u = first / rb - P, off = first % rb;
        printf("  kv_fp8 store %d+%d: differing bytes: before the rows %zu, codes %zu, scales %zu, k_pe %zu; first: "
               "row %zu byte %zu, cpu 0x%02x cuda 0x%02x (source value %.9g)\n",
               d_lat, d_rope, nd[0], nd[1], nd[2], nd[3], u, off, kv8[first], back[first],
               off < (size_t)d_lat              ? rows[u * ld + off]
               : off >= rb - 2 * (size_t)d_rope ? rows[u * ld + d_lat + (off - (rb - 2 * (size_t)d_rope)) / 2]
                                                : 0.0);
    }
    CHECK_MSG(store_ok, "kv_fp8 store %d+%d, %d rows: bytes differ from sd_mla_kv_fp8_quant", d_lat, d_rope, n_tokens);
    // bf16 expansion
    uint16_t *b16 = xmalloc((size_t)n_tokens * D * 2);
    uint16_t *d_b16 = dalloc((size_t)n_tokens * D * 2);
    CU(sd_cuda_kv_fp8_to_bf16(d_b16, d_cache + (size_t)P * rb, (size_t)n_tokens, d_lat, d_rope, NULL));
    CU(sd_cuda_sync());
    CU(sd_cuda_memcpy_d2h(b16, d_b16, (size_t)n_tokens * D * 2));
    int b16_bad = 0;
    for (size_t x = 0; x < (size_t)n_tokens * D; x++)
        b16_bad += b16[x] != sd_f32_to_bf16(kvd[x]) || sd_bf16_to_f32(b16[x]) != kvd[x];
    CHECK_MSG(b16_bad == 0, "kv_fp8 to bf16 %d+%d: %d values differ (or are not exact)", d_lat, d_rope, b16_bad);
    // attention: kv_fp8 rows against the dequantized f32 rows
    const float scale = 1.0f / sqrtf((float)D);
    size_t nq = (size_t)n_q * n_heads * D, no = (size_t)n_q * n_heads * d_lat;
    float *q = xmalloc(nq * 4), *o = xmalloc(no * 4), *o8 = xmalloc(no * 4);
    for (size_t x = 0; x < nq; x++)
        q[x] = sd_test_nrand();
    int32_t *idx = idx_kind >= 0 ? make_idx(n_q, n_idx, n_tokens, idx_kind) : NULL;
    float *d_q = dupload(q, nq * 4), *d_kvd = dupload(kvd, (size_t)n_tokens * D * 4), *d_o = dalloc(no * 4);
    int32_t *d_idx = idx ? dupload(idx, (size_t)n_q * n_idx * 4 + 4) : NULL;
    size_t scr_n = sd_cuda_mla_attn_scratch_floats(n_heads, d_lat);
    if (n_split > 0 && (size_t)n_split * n_q * n_heads * (d_lat + 1) > scr_n)
        scr_n = (size_t)n_split * n_q * n_heads * (d_lat + 1);
    float *d_scr = dalloc(scr_n * 4);
    struct sd_cuda_mla_attn_params p = {0};
    p.q = d_q, p.kv = d_kvd, p.idx = d_idx, p.out = d_o, p.scratch = d_scr, p.scratch_floats = scr_n;
    p.n_q = n_q, p.n_heads = n_heads, p.d_lat = d_lat, p.d_rope = d_rope, p.n_idx = idx ? n_idx : 0;
    p.n_tokens = n_tokens, p.pos0 = pos0, p.scale = scale, p.n_split = n_split;
    for (int k = 0; k < 2; k++) {
        if (k)
            p.kv = NULL, p.kv8 = d_cache + (size_t)P * rb;
        CU(sd_cuda_memset(d_o, 0xff, no * 4));
        CU(sd_cuda_mla_attn(&p));
        CU(sd_cuda_sync());
        CU(sd_cuda_memcpy_d2h(k ? o8 : o, d_o, no * 4));
    }
    int finite = 0, nonzero = 0;
    for (size_t x = 0; x < no; x++)
        finite += isfinite(o8[x]), nonzero += o8[x] != 0.0f;
    int same = memcmp(o, o8, no * 4) == 0;
    printf("  kv_fp8 %d+%d (%zu B/row), %d rows: store %s, bf16 %s; attention q %d h %d idx %d kind %d split %d over "
           "FP8 rows vs their f32 values: %s\n",
           d_lat, d_rope, rb, n_tokens, store_ok ? "exact" : "DIFFERS", b16_bad ? "DIFFERS" : "exact", n_q, n_heads,
           n_idx, idx_kind, n_split, same ? "bit-identical" : "DIFFERENT");
    CHECK_MSG(same, "kv_fp8 attention differs from the f32 attention over the same values (%d+%d kind %d)", d_lat,
              d_rope, idx_kind);
    CHECK_MSG(finite == (int)no && (idx_kind == 2 || nonzero > (int)no / 2),
              "kv_fp8 attention: %d finite, %d nonzero of %zu", finite, nonzero, no);
    kv8_cases++;
    kv8_exact += same && store_ok && !b16_bad;
    free(rows), free(kvd), free(kv8), free(back), free(b16), free(q), free(o), free(o8), free(idx);
    sd_cuda_free(d_rows), sd_cuda_free(d_cache), sd_cuda_free(d_pos), sd_cuda_free(d_b16), sd_cuda_free(d_q);
    sd_cuda_free(d_kvd), sd_cuda_free(d_o), sd_cuda_free(d_idx), sd_cuda_free(d_scr);
}

static void test_kv8s(void)
{
    test_kv8_case(3, 4, 64, 32, 5000, 512, 0, 1, 0);                        // sparsedoc-mini, sparse
    test_kv8_case(5, 4, 64, 32, 2100, 0, 2000, -1, 0);                      // dense causal, split
    test_kv8_case(2, 7, 200, 16, 700, 65, 0, 0, 1);                         // partial last tile
    test_kv8_case(3, 20, 300, 12, 900, 100, 0, 1, 2);                       // 3 tiles, forced split
    test_kv8_case(2, 5, 64, 32, 100, 40, 0, 2, 0);                          // all invalid: zeros
    test_kv8_case(2, 128, 512, 64, 3000, small_mode ? 200 : 2048, 0, 1, 0); // V3.2 decode shape, 656 B rows
    if (!small_mode)
        test_kv8_case(36, 128, 512, 64, 6000, 256, 0, 1, 0); // prefill-like
    printf("kv_fp8: %d cases, %d exact (store, bf16, attention)\n", kv8_cases, kv8_exact);
}

// ---------------------------------------------------------------- sampling (sample.cu)
// The device sampler against engine/sampler.c on the same logits and the same random stream (two samplers of one
// seed: the CPU one samples, the other gives the device its penalty ids and uniform draws): fresh logits per draw
// (normal, a few peaks, some exact ties), vocabularies of 1,000, 8,192 (sparsedoc-mini) and 129,280 (V3.2), greedy
// with and without the repetition penalty, temperature with top-p, top-k, both, and neither (id order). The tokens
// must be equal; the CPU's expf and sequential double sums against the device's expf and scans could move a draw
// that lands within ~1e-7 of a boundary, so one difference per configuration is allowed (and printed). Then NaN
// (-1), nothing finite (-1) and a single finite logit.
static int smp_draws, smp_diff;

static void fill_logits(float *l, int n, uint64_t k)
{
    for (int i = 0; i < n; i++)
        l[i] = sd_test_nrand() * 2.0f;
    for (int j = 0; j < 4; j++)
        l[(k * 7919 + (uint64_t)j * 104729) % (uint64_t)n] = 9.0f + (float)j * 0.25f; // peaks
    for (int j = 0; j < 8; j++)                                                       // exact ties with other tokens
        l[(k * 31 + (uint64_t)j * 613) % (uint64_t)n] = l[(k * 17 + (uint64_t)j * 211) % (uint64_t)n];
}

static void test_sample_case(int n, float temp, int top_k, float top_p, float pen, int draws)
{
    struct sd_sampler_params sp = {temp, top_k, top_p, pen, 64, 4242 + (uint64_t)n};
    struct sd_sampler *cpu = NULL, *twin = NULL;
    struct sd_cuda_sampler *dev = NULL;
    struct sd_err err = {0};
    CHECK(sd_sampler_new(&sp, n, &cpu, &err) == SD_OK && sd_sampler_new(&sp, n, &twin, &err) == SD_OK);
    CU(sd_cuda_sampler_new(n, &dev));
    float *l = xmalloc((size_t)n * 4), *lc = xmalloc((size_t)n * 4), *d_l = dalloc((size_t)n * 4);
    int32_t hist[96], *pen_ids = xmalloc((size_t)n * 4);
    int diff = 0;
    for (int k = 0; k < draws; k++) {
        fill_logits(l, n, (uint64_t)k);
        for (int j = 0; j < 96; j++)
            hist[j] = (int32_t)(((uint64_t)k * 131 + (uint64_t)j * 977) % (uint64_t)n);
        memcpy(lc, l, (size_t)n * 4);
        int32_t want = sd_sampler_sample(cpu, lc, hist, 96), got = -2;
        CU(sd_cuda_memcpy_h2d(d_l, l, (size_t)n * 4));
        struct sd_cuda_sample_params p = {0};
        p.logits = d_l, p.n_vocab = n, p.temperature = temp, p.top_k = top_k, p.top_p = top_p;
        p.repetition_penalty = pen, p.penalty_ids = pen_ids;
        p.n_penalty = (int)sd_sampler_penalty_ids(twin, hist, 96, pen_ids);
        p.u = temp > 0.0f ? sd_sampler_draw(twin) : 0.0;
        CU(sd_cuda_sample(dev, &p, &got));
        if (got != want) {
            if (diff < 3)
                printf("  sample n %d t %g k %d p %g pen %g draw %d: cpu %d, cuda %d\n", n, temp, top_k, top_p, pen, k,
                       want, got);
            diff++;
        }
    }
    printf("  sample n %d temperature %g top_k %d top_p %g penalty %g: %d of %d draws equal\n", n, temp, top_k, top_p,
           pen, draws - diff, draws);
    CHECK_MSG(diff <= 1, "device sampling differs from the CPU in %d of %d draws (n %d t %g k %d p %g)", diff, draws, n,
              temp, top_k, top_p);
    smp_draws += draws, smp_diff += diff;
    // NaN, nothing finite, one finite logit
    int32_t got = 0;
    struct sd_cuda_sample_params p = {0};
    p.logits = d_l, p.n_vocab = n, p.temperature = temp, p.top_k = top_k, p.top_p = top_p, p.repetition_penalty = 1;
    p.u = 0.5;
    for (int i = 0; i < n; i++)
        l[i] = -INFINITY;
    CU(sd_cuda_memcpy_h2d(d_l, l, (size_t)n * 4));
    CU(sd_cuda_sample(dev, &p, &got));
    CHECK_MSG(got == -1, "nothing finite: token %d, want -1", got);
    l[n / 3] = -5.0f;
    CU(sd_cuda_memcpy_h2d(d_l, l, (size_t)n * 4));
    CU(sd_cuda_sample(dev, &p, &got));
    CHECK_MSG(got == n / 3, "one finite logit at %d: token %d", n / 3, got);
    fill_logits(l, n, 99);
    l[n - 2] = NAN;
    CU(sd_cuda_memcpy_h2d(d_l, l, (size_t)n * 4));
    CU(sd_cuda_sample(dev, &p, &got));
    CHECK_MSG(got == -1, "a NaN logit: token %d, want -1", got);
    sd_sampler_free(cpu), sd_sampler_free(twin), sd_cuda_sampler_free(dev);
    free(l), free(lc), free(pen_ids);
    sd_cuda_free(d_l);
}

static void test_samples(void)
{
    static const int ns[] = {1000, 8192, 129280};
    for (int i = 0; i < 3; i++) {
        int n = ns[i], d = small_mode ? 20 : n > 10000 ? 150 : 300;
        test_sample_case(n, 0.0f, 0, 1.0f, 1.0f, d);  // greedy
        test_sample_case(n, 0.0f, 0, 1.0f, 1.3f, d);  // greedy, penalty
        test_sample_case(n, 0.8f, 0, 0.95f, 1.0f, d); // `sparsedoc generate`'s defaults
        test_sample_case(n, 1.0f, 40, 1.0f, 1.0f, d); // top-k
        test_sample_case(n, 1.0f, 0, 1.0f, 1.0f, d);  // neither: id order
        test_sample_case(n, 0.7f, 50, 0.9f, 1.1f, d); // all of them
        test_sample_case(n, 1.5f, 0, 0.5f, 1.0f, d);  // a flat distribution, a narrow nucleus
    }
    printf("sample: %d draws, %d differ from the CPU sampler\n", smp_draws, smp_diff);
}

// ---------------------------------------------------------------- FP8 block-scaled weights

// A random FP8 matrix: codes cycle through all 256 (NaN codes 0x7f / 0xff where nan_codes, else skipped) in a
// shuffled order; scales random over 2^-20 .. 2^2 (subnormal products included).
static void make_fp8_mat(int N, int K, int B, int nan_codes, uint8_t **q, float **sc)
{
    size_t n = (size_t)N * K, ns = (size_t)((N + B - 1) / B) * ((K + B - 1) / B);
    *q = xmalloc(n);
    *sc = xmalloc(ns * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)(sd_test_urand() * 256.0);
        if (!nan_codes && (v & 0x7f) == 0x7f)
            v ^= 1;
        (*q)[i] = v;
    }
    for (size_t i = 0; i < ns; i++)
        (*sc)[i] = ldexpf((float)(0.5 + sd_test_urand()), (int)(sd_test_urand() * 22.0) - 20);
}

// Dequantize on the device (f32 and bf16) and compare with the CPU's value bit for bit (NaN positions equal).
static void test_dequant_case(int N, int K, int B)
{
    uint8_t *q;
    float *sc;
    make_fp8_mat(N, K, B, 1, &q, &sc);
    size_t n = (size_t)N * K, ns = (size_t)((N + B - 1) / B) * ((K + B - 1) / B), bad = 0, bad16 = 0;
    float *out = xmalloc(n * sizeof(float));
    uint16_t *out16 = xmalloc(n * sizeof(uint16_t));
    void *d_q = dupload(q, n), *d_sc = dupload(sc, ns * sizeof(float)), *d_o = dalloc(n * sizeof(float));
    void *d_o16 = dalloc(n * sizeof(uint16_t));
    CU(sd_cuda_memset(d_o, 0xff, n * sizeof(float)));
    struct sd_cuda_fp8_mat m = {d_q, d_sc, N, K, B};
    CU(sd_cuda_dequant_fp8(&m, d_o, 0, NULL));
    CU(sd_cuda_dequant_fp8(&m, d_o16, 1, NULL));
    CU(sd_cuda_sync());
    CU(sd_cuda_memcpy_d2h(out, d_o, n * sizeof(float)));
    CU(sd_cuda_memcpy_d2h(out16, d_o16, n * sizeof(uint16_t)));
    int sc_cols = (K + B - 1) / B;
    for (size_t i = 0; i < n; i++) {
        size_t r = i / K, c = i % K;
        float want = sd_e4m3_to_f32(q[i]) * sc[(r / B) * sc_cols + c / B];
        int same = isnan(want) ? isnan(out[i]) : memcmp(&want, &out[i], sizeof want) == 0;
        if (!same && bad++ < 3)
            fprintf(stderr, "dequant %dx%d B%d: element %zu (code 0x%02x) %.9g, want %.9g\n", N, K, B, i, q[i],
                    (double)out[i], (double)want);
        uint16_t want16 = sd_f32_to_bf16(want);
        same = isnan(want) ? isnan(sd_bf16_to_f32(out16[i])) : out16[i] == want16;
        bad16 += !same;
    }
    CHECK_MSG(bad == 0 && bad16 == 0, "dequant fp8 %dx%d block %d: %zu f32 and %zu bf16 values differ from the CPU's",
              N, K, B, bad, bad16);
    dequant_cases++;
    dequant_exact += bad == 0 && bad16 == 0;
    free(q), free(sc), free(out), free(out16);
    sd_cuda_free(d_q), sd_cuda_free(d_sc), sd_cuda_free(d_o), sd_cuda_free(d_o16);
}

// GEMV of T tokens (ld = K + pad) against float64 on the dequantized weights; beta 1 adds to y. Both variants
// (sd_cuda_gemv_fp8_params.variant).
static void test_gemv_case_v(int N, int K, int B, int T, int pad, float beta, int variant)
{
    uint8_t *q;
    float *sc;
    make_fp8_mat(N, K, B, 0, &q, &sc);
    int ldx = K + pad, ldy = N + pad, sc_cols = (K + B - 1) / B;
    size_t n = (size_t)N * K, ns = (size_t)((N + B - 1) / B) * sc_cols;
    float *x = xmalloc(sizeof(float) * (size_t)T * ldx), *y0 = xmalloc(sizeof(float) * (size_t)T * ldy);
    float *y = xmalloc(sizeof(float) * (size_t)T * ldy), *y2 = xmalloc(sizeof(float) * (size_t)T * ldy);
    for (size_t i = 0; i < (size_t)T * ldx; i++)
        x[i] = sd_test_nrand();
    for (size_t i = 0; i < (size_t)T * ldy; i++)
        y0[i] = sd_test_nrand();
    void *d_q = dupload(q, n), *d_sc = dupload(sc, ns * sizeof(float));
    void *d_x = dupload(x, sizeof(float) * (size_t)T * ldx), *d_y = dupload(y0, sizeof(float) * (size_t)T * ldy);
    struct sd_cuda_gemv_fp8_params p = {.w = {d_q, d_sc, N, K, B},
                                        .x = d_x,
                                        .ldx = ldx,
                                        .y = d_y,
                                        .ldy = ldy,
                                        .n_tok = T,
                                        .beta = beta,
                                        .variant = variant};
    CU(sd_cuda_gemv_fp8(&p));
    CU(sd_cuda_sync());
    CU(sd_cuda_memcpy_d2h(y, d_y, sizeof(float) * (size_t)T * ldy));
    CU(sd_cuda_memcpy_h2d(d_y, y0, sizeof(float) * (size_t)T * ldy));
    CU(sd_cuda_gemv_fp8(&p));
    CU(sd_cuda_sync());
    CU(sd_cuda_memcpy_d2h(y2, d_y, sizeof(float) * (size_t)T * ldy));
    double err = 0.0, norm = 0.0;
    int pad_ok = 1;
    for (int t = 0; t < T; t++) {
        for (int r = 0; r < N; r++) {
            double acc = beta != 0.0f ? (double)beta * y0[(size_t)t * ldy + r] : 0.0, mag = fabs(acc);
            for (int k = 0; k < K; k++) {
                double w = (double)(sd_e4m3_to_f32(q[(size_t)r * K + k]) * sc[(r / B) * sc_cols + k / B]);
                acc += w * x[(size_t)t * ldx + k];
                mag += fabs(w * x[(size_t)t * ldx + k]);
            }
            double d = fabs((double)y[(size_t)t * ldy + r] - acc);
            err = fmax(err, d / (mag > 0 ? mag : 1.0)); // error relative to the sum of |terms|
            norm = fmax(norm, mag);
        }
        for (int r = N; r < ldy; r++) // padding columns of y stay untouched
            pad_ok &= memcmp(&y[(size_t)t * ldy + r], &y0[(size_t)t * ldy + r], sizeof(float)) == 0;
    }
    worst_gemv_rel[variant] = fmax(worst_gemv_rel[variant], err);
    CHECK_MSG(err <= 1e-6, "gemv fp8 v%d N %d K %d B %d T %d beta %g: error %.3g of the magnitude sum", variant, N, K,
              B, T, (double)beta, err);
    CHECK_MSG(pad_ok, "gemv fp8 N %d K %d: wrote past its rows", N, K);
    CHECK_MSG(!memcmp(y, y2, sizeof(float) * (size_t)T * ldy), "gemv fp8 N %d K %d T %d: two runs differ", N, K, T);
    free(q), free(sc), free(x), free(y0), free(y), free(y2);
    sd_cuda_free(d_q), sd_cuda_free(d_sc), sd_cuda_free(d_x), sd_cuda_free(d_y);
}

static void test_gemv_case(int N, int K, int B, int T, int pad, float beta)
{
    for (int v = 0; v < 2; v++)
        test_gemv_case_v(N, K, B, T, pad, beta, v);
}

static void test_fp8ws(void)
{
    test_dequant_case(1, 16, 128);    // one 16-wide chunk
    test_dequant_case(7, 33, 128);    // K % 16 != 0: per element
    test_dequant_case(130, 272, 128); // partial blocks both ways
    test_dequant_case(65, 96, 32);    // another block size
    test_dequant_case(3, 40, 20);     // block % 16 != 0: per element
    if (!small_mode)
        test_dequant_case(300, 4096, 128);
    const int Ns[] = {1, 7, 65, 1100, 2049, 4100}; // warps per row 8, 8, 8, 4, 2, 1
    for (size_t i = 0; i < sizeof Ns / sizeof Ns[0]; i++) {
        if (small_mode && Ns[i] > 1100)
            continue;
        test_gemv_case(Ns[i], 256, 128, 1 + (int)(i % 4), 0, 0.0f);
        test_gemv_case(Ns[i], 130, 128, 4, 3, 1.0f); // K % 16 != 0 and padded rows: per-element path
    }
    test_gemv_case(65, 2048, 128, 3, 4, 1.0f);
    test_gemv_case(33, 1536, 64, 2, 0, 0.0f);
    if (!small_mode) {
        test_gemv_case(1536, 7168, 128, 1, 0, 0.0f); // V3.2's q_a projection, decode
        test_gemv_case(4096, 7168, 128, 4, 0, 0.0f);
    }
    printf("fp8 weights: dequant %d/%d cases bit-exact; gemv worst error of the magnitude sum %.3g (variant 0), "
           "%.3g (variant 1)\n",
           dequant_exact, dequant_cases, worst_gemv_rel[0], worst_gemv_rel[1]);
}

// ---------------------------------------------------------------- FP8 x FP8 GEMM (gemm_fp8.cu)

static double worst_gemm8_rel;
static int gemm8_cases, gemm8_unsupported, act8_cases, act8_exact;

// Rows of random values whose magnitudes differ by row (10^-7 .. 10^3, the smallest under the 1e-4 clamp).
static void fill_act_rows(float *x, int rows, int ld)
{
    for (int r = 0; r < rows; r++) {
        double mag = pow(10.0, -7.0 + 10.0 * sd_test_urand());
        for (int c = 0; c < ld; c++)
            x[(size_t)r * ld + c] = (float)(sd_test_nrand() * mag);
    }
}

// The device's activation quantization (both scale orders) and round trip (out of place, padded rows, and in
// place) against engine/dtype.c, bit for bit.
static void test_act8_case(int rows, int cols, int pad)
{
    int ld = cols + pad, nb = (cols + 127) / 128;
    size_t nx = (size_t)rows * ld;
    float *x = xmalloc(nx * sizeof(float)), *rt = xmalloc(nx * sizeof(float)), *want_rt = xmalloc(nx * sizeof(float));
    uint8_t *q = xmalloc((size_t)rows * cols), *want_q = xmalloc((size_t)cols);
    float *sc = xmalloc((size_t)rows * nb * sizeof(float)), *want_s = xmalloc((size_t)nb * sizeof(float));
    fill_act_rows(x, rows, ld);
    void *d_x = dupload(x, nx * sizeof(float)), *d_q = dalloc((size_t)rows * cols);
    void *d_s = dalloc((size_t)rows * nb * sizeof(float)), *d_o = dupload(x, nx * sizeof(float));
    size_t bad = 0;
    for (int layout = SD_CUDA_ACT_SCALE_ROWS; layout <= SD_CUDA_ACT_SCALE_COLS; layout++) {
        CU(sd_cuda_act_quant_fp8(d_x, ld, rows, cols, d_q, d_s, layout, NULL));
        CU(sd_cuda_sync());
        CU(sd_cuda_memcpy_d2h(q, d_q, (size_t)rows * cols));
        CU(sd_cuda_memcpy_d2h(sc, d_s, (size_t)rows * nb * sizeof(float)));
        for (int r = 0; r < rows; r++) {
            sd_fp8_act_quant(x + (size_t)r * ld, cols, want_q, want_s);
            bad += memcmp(q + (size_t)r * cols, want_q, (size_t)cols) != 0;
            for (int b = 0; b < nb; b++)
                bad += sc[layout == SD_CUDA_ACT_SCALE_ROWS ? (size_t)r * nb + b : (size_t)b * rows + r] != want_s[b];
        }
    }
    // Round trip into a copy of x (padding columns must keep x's values), then in place on the device's x.
    CU(sd_cuda_act_roundtrip_fp8(d_x, ld, d_o, ld, rows, cols, NULL));
    CU(sd_cuda_act_roundtrip_fp8(d_x, ld, d_x, ld, rows, cols, NULL));
    CU(sd_cuda_sync());
    memcpy(want_rt, x, nx * sizeof(float));
    for (int r = 0; r < rows; r++)
        sd_fp8_act_roundtrip(x + (size_t)r * ld, want_rt + (size_t)r * ld, cols);
    CU(sd_cuda_memcpy_d2h(rt, d_o, nx * sizeof(float)));
    bad += memcmp(rt, want_rt, nx * sizeof(float)) != 0;
    CU(sd_cuda_memcpy_d2h(rt, d_x, nx * sizeof(float)));
    bad += memcmp(rt, want_rt, nx * sizeof(float)) != 0;
    CHECK_MSG(bad == 0, "fp8 act quant %d x %d (ld %d): %zu mismatches against engine/dtype.c", rows, cols, ld, bad);
    act8_cases++;
    act8_exact += bad == 0;
    free(x), free(rt), free(want_rt), free(q), free(want_q), free(sc), free(want_s);
    sd_cuda_free(d_x), sd_cuda_free(d_q), sd_cuda_free(d_s), sd_cuda_free(d_o);
}

// y = xq W^T + beta y against float64 from the CPU-quantized input (sd_fp8_act_quant) and the dequantized weights
// (random codes, no NaN; block scales random over 2^-20 .. 2^2, so a scale applied to the wrong block is far off);
// error relative to the sum of |terms|, rows sampled on large shapes. layout_a / layout_w: the scale orders handed to
// cuBLASLt (0: the library's). Returns the error (-1: cuBLASLt had no algorithm).
static double gemm8_err(struct sd_cuda_gemm_fp8 *g, int N, int K, int T, int padx, int pady, float beta, int layout_a,
                        int layout_w)
{
    uint8_t *q;
    float *sc;
    make_fp8_mat(N, K, 128, 0, &q, &sc);
    int ldx = K + padx, ldy = N + pady, sc_cols = (K + 127) / 128;
    size_t ns = (size_t)((N + 127) / 128) * sc_cols;
    float *x = xmalloc(sizeof(float) * (size_t)T * ldx), *y0 = xmalloc(sizeof(float) * (size_t)T * ldy);
    float *y = xmalloc(sizeof(float) * (size_t)T * ldy), *xd = xmalloc(sizeof(float) * (size_t)T * K);
    fill_act_rows(x, T, ldx);
    for (size_t i = 0; i < (size_t)T * ldy; i++)
        y0[i] = sd_test_nrand();
    for (int t = 0; t < T; t++)
        sd_fp8_act_roundtrip(x + (size_t)t * ldx, xd + (size_t)t * K, K); // exactly the e4m3 values times scales
    void *d_q = dupload(q, (size_t)N * K), *d_sc = dupload(sc, ns * sizeof(float));
    void *d_x = dupload(x, sizeof(float) * (size_t)T * ldx), *d_y = dupload(y0, sizeof(float) * (size_t)T * ldy);
    struct sd_cuda_gemm_fp8_params p = {.w = {d_q, d_sc, N, K, 128},
                                        .x = d_x,
                                        .ldx = ldx,
                                        .y = d_y,
                                        .ldy = ldy,
                                        .n_tok = T,
                                        .beta = beta,
                                        .act_layout = layout_a,
                                        .w_layout = layout_w};
    enum sd_status st = sd_cuda_gemm_fp8(g, &p);
    double err = -1.0;
    if (st == SD_OK) {
        CU(sd_cuda_sync());
        CU(sd_cuda_memcpy_d2h(y, d_y, sizeof(float) * (size_t)T * ldy));
        int step = (size_t)N * K * T > ((size_t)1 << 28) ? 7 : 1;
        int pad_ok = 1;
        err = 0.0;
        for (int t = 0; t < T; t++) {
            for (int r = 0; r < N; r += step) {
                double acc = beta != 0.0f ? (double)beta * y0[(size_t)t * ldy + r] : 0.0, mag = fabs(acc);
                for (int k = 0; k < K; k++) {
                    double w = (double)sd_e4m3_to_f32(q[(size_t)r * K + k]) * sc[(r / 128) * sc_cols + k / 128];
                    double v = w * xd[(size_t)t * K + k];
                    acc += v;
                    mag += fabs(v);
                }
                err = fmax(err, fabs((double)y[(size_t)t * ldy + r] - acc) / (mag > 0 ? mag : 1.0));
            }
            for (int r = N; r < ldy; r++)
                pad_ok &= memcmp(&y[(size_t)t * ldy + r], &y0[(size_t)t * ldy + r], sizeof(float)) == 0;
        }
        CHECK_MSG(pad_ok, "gemm fp8 N %d K %d T %d: wrote past its rows", N, K, T);
    } else {
        CHECK_MSG(st == SD_ERR_UNSUPPORTED, "gemm fp8 N %d K %d T %d: %s (%s)", N, K, T, sd_status_str(st),
                  sd_cuda_last_error());
    }
    free(q), free(sc), free(x), free(y0), free(y), free(xd);
    sd_cuda_free(d_q), sd_cuda_free(d_sc), sd_cuda_free(d_x), sd_cuda_free(d_y);
    return err;
}

// FP8 tensor cores accumulate each 128-wide K step in reduced precision before the fp32 promotion with the scales
// (DeepGEMM's reason for promoting per 128): bound 2e-3 of the magnitude sum; a misplaced scale is off by O(1).
static void test_gemm8_case(struct sd_cuda_gemm_fp8 *g, int N, int K, int T, int padx, int pady, float beta,
                            int must_run)
{
    double e = gemm8_err(g, N, K, T, padx, pady, beta, 0, 0);
    gemm8_cases++;
    if (e < 0) {
        gemm8_unsupported++;
        printf("gemm fp8 N %d K %d T %d: no cuBLASLt algorithm (the forward pass falls back)\n", N, K, T);
        CHECK_MSG(!must_run, "gemm fp8 N %d K %d T %d: DeepSeek-V3.2 shape without a cuBLASLt algorithm", N, K, T);
        return;
    }
    worst_gemm8_rel = fmax(worst_gemm8_rel, e);
    CHECK_MSG(e <= 2e-3, "gemm fp8 N %d K %d T %d beta %g: error %.3g of the magnitude sum", N, K, T, (double)beta, e);
}

// Which scale orders cuBLASLt reads as this library writes them: every combination on a shape where they all
// differ (row blocks 5: T4 pads, column blocks 3: NATIVE4 pads); exactly the library's must match. (First run: only
// K = 2048 / 7168 shapes matched with NATIVE, whose column blocks are a multiple of 4, which found NATIVE4.)
static void probe_gemm8_orders(struct sd_cuda_gemm_fp8 *g, int N, int K, int T)
{
    int n_match = 0;
    for (int a = SD_CUDA_ACT_SCALE_ROWS; a <= SD_CUDA_ACT_SCALE_COLS; a++)
        for (int w = SD_CUDA_W_SCALE_NATIVE; w <= SD_CUDA_W_SCALE_NATIVE4; w++) {
            double e = gemm8_err(g, N, K, T, 0, 0, 0.0f, a, w);
            int match = e >= 0 && e <= 2e-3;
            n_match += match;
            printf("gemm fp8 scale orders act %d w %d, N %d K %d T %d: error %.3g%s\n", a, w, N, K, T, e,
                   match ? "  MATCH" : "");
        }
    double e0 = gemm8_err(g, N, K, T, 0, 0, 0.0f, 0, 0);
    CHECK_MSG(n_match == 1 && e0 >= 0 && e0 <= 2e-3,
              "gemm fp8 scale orders: %d combinations match, the library's default gives %.3g", n_match, e0);
}

static void test_fp8gemms(void)
{
    test_act8_case(1, 128, 0);
    test_act8_case(7, 200, 3); // partial last block, padded rows
    test_act8_case(65, 7168, 0);
    if (!small_mode)
        test_act8_case(300, 2048, 5);
    struct sd_cuda_gemm_fp8 *g = NULL;
    CU(sd_cuda_gemm_fp8_new(&g));
    probe_gemm8_orders(g, 600, 384, 33);
    test_gemm8_case(g, 256, 256, 5, 0, 0, 0.0f, 1);
    test_gemm8_case(g, 576, 7168, 70, 0, 0, 0.0f, 1);  // V3.2 wkv_a, a prefill chunk
    test_gemm8_case(g, 1536, 7168, 17, 3, 4, 1.0f, 1); // wq_a, padded input and output rows, accumulate
    test_gemm8_case(g, 200, 160, 9, 0, 0, 0.0f, 0);    // partial blocks both ways (the tiny fixtures' shapes)
    if (!small_mode) {
        test_gemm8_case(g, 7168, 2048, 130, 0, 0, 1.0f, 1); // an expert's down projection
        test_gemm8_case(g, 2048, 7168, 256, 0, 0, 0.0f, 1); // gate / up
    }
    long calls = 0;
    int out = 0;
    sd_cuda_gemm_fp8_stats(g, &calls, &out);
    sd_cuda_gemm_fp8_free(g);
    printf("fp8 gemm: act quant %d/%d cases bit-exact; %d GEMM cases (%d without an algorithm), worst error %.3g of "
           "the magnitude sum; %ld calls, output %s\n",
           act8_exact, act8_cases, gemm8_cases, gemm8_unsupported, worst_gemm8_rel, calls,
           out == 1   ? "f32"
           : out == 2 ? "bf16 + add"
                      : "none");
}

// SD_CUDA_TEST_ONLY=GROUP[,GROUP...] runs only those groups (indexer, topk, mla_attn, mla_decode, fp8w, fp8gemm): a
// sanitizer run of one kernel family fits a device call that all of them do not.
static int run_group(const char *g)
{
    const char *only = getenv("SD_CUDA_TEST_ONLY");
    if (!only || !*only)
        return 1;
    size_t n = strlen(g);
    for (const char *p = only; (p = strstr(p, g)); p += n)
        if ((p == only || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
            return 1;
    return 0;
}

static void test_indexers(void);
static void test_topks(void);
static void test_mla_attns(void);
static void test_mla_decodes(void);
static void test_fp8ws(void);

int main(void)
{
    int n_dev = sd_cuda_device_count();
    if (n_dev <= 0) {
        printf("SKIP: no CUDA device (cudaGetDeviceCount found none); run on a machine with an NVIDIA GPU\n");
        return 77;
    }
    sd_test_seed(); // prints the seed (SD_TEST_SEED repeats a run)
    small_mode = getenv("SD_CUDA_TEST_SMALL") != NULL;
    char name[256];
    int n_sm;
    size_t l2;
    CU(sd_cuda_device_info(name, sizeof name, &n_sm, &l2));
    printf("test_cuda_ops: device %s, %d SMs, L2 %zu KB%s\n", name, n_sm, l2 >> 10, small_mode ? ", small mode" : "");

    if (run_group("indexer"))
        test_indexers();
    if (run_group("topk"))
        test_topks();
    if (run_group("mla_decode"))
        test_mla_decodes();
    if (run_group("mla_attn"))
        test_mla_attns();
    if (run_group("fp8w"))
        test_fp8ws();
    if (run_group("fp8gemm"))
        test_fp8gemms();
    if (run_group("kvfp8"))
        test_kv8s();
    if (run_group("sample"))
        test_samples();
    return sd_test_finish("cuda_ops");
}

static void test_indexers(void)
{
    // Awkward key counts, query counts around the 4-query block, masks.
    const int nks[] = {1, 7, 63, 65, 2047, 2049, 5000};
    const int nqs[] = {1, 3, 4, 5, 9};
    for (size_t a = 0; a < sizeof nks / sizeof nks[0]; a++) {
        for (size_t b = 0; b < sizeof nqs / sizeof nqs[0]; b++) {
            if (small_mode && (nks[a] > 2049 || nqs[b] > 5))
                continue;
            test_indexer_case((struct ix_case){nqs[b], 64, nks[a], (int)((a + b) % 3)});
        }
    }
    test_indexer_case((struct ix_case){3, 32, 300, 1}); // GLM-5 head count: SIMPLE only
    test_indexer_case((struct ix_case){2, 64, 7, 2});
    if (!small_mode)
        test_indexer_case((struct ix_case){6, 64, 20000, 1});
    printf("indexer fp8: max error relative to the magnitude sum: simple %.3g, mma %.3g\n", worst_idx_simple,
           worst_idx_mma);
}

static void test_topks(void)
{
    const int ncols[] = {1, 7, 63, 65, 2047, 2048, 2049, 5000, 40000};
    for (size_t a = 0; a < sizeof ncols / sizeof ncols[0]; a++) {
        if (small_mode && ncols[a] > 5000)
            continue;
        test_topk_case(5, ncols[a], 2048, 0, 1);
        test_topk_case(3, ncols[a], 2048, 1, 1);
        test_topk_case(2, ncols[a], 7, (int)(a & 1), 0);
    }
    if (!small_mode) {
        test_topk_case(2, 163840, 2048, 0, 0);
        test_topk_case(2, 163840, 2048, 1, 0);
    }
    // long rows, few of them (the split path too): ties and NaN (kind 1), slices only partly valid, k of mini
    test_topk_case(2, SD_CUDA_TOPK_SPLIT_COLS, 2048, 1, 1);
    test_topk_case(1, SD_CUDA_TOPK_SPLIT_COLS + 4500, 2048, 0, 0);
    test_topk_case(SD_CUDA_TOPK_SPLIT_ROWS, SD_CUDA_TOPK_SPLIT_COLS + 1000, 512, 1, 1);
    test_topk_case(3, SD_CUDA_TOPK_SPLIT_COLS + 17, 512, 0, 1);
    printf("topk: %d/%d rows identical to sd_dsa_topk; split path identical in %d cases\n", topk_exact, topk_cases,
           topk_split_cases);
    CHECK_MSG(small_mode || topk_split_cases >= 4, "only %d split-path cases ran", topk_split_cases);
    test_indexer_topk(small_mode ? 5 : 37, small_mode ? 2100 : 6000, 2048, small_mode ? 2 : 8);
    test_indexer_topk(5, 300, 64, 3);
}

static void test_mla_decodes(void)
{
    // Sparse MLA decode (bf16 cache kernels).
    test_mla_case(1, 1, 32, 7, 50, 0);
    test_mla_case(2, 2, 32, 65, 1000, 1);
    test_mla_case(1, 2, 64, 2048, 700, 0); // fewer tokens than topk: -1 padding
    test_mla_case(1, 1, 32, 40, 100, 2);   // all invalid: zeros, lse -inf
    if (!small_mode) {
        test_mla_case(2, 2, 128, 2048, 5000, 1);
        test_mla_case(3, 1, 128, 2049, 4000, 0);
    }
    printf("mla decode vs fp32 reference on bf16-rounded q and cache: simple rel err %.3g (lse abs %.3g), "
           "mma rel err %.3g (lse abs %.3g)\n",
           worst_mla_rel[1], worst_mla_lse[1], worst_mla_rel[2], worst_mla_lse[2]);
}

static void test_mla_attns(void)
{
    // fp32 absorbed MLA attention of the forward pass: sparsedoc-mini's and V3.2's dims, awkward ones.
    test_mla_attn_case(3, 4, 64, 32, 5000, 512, 0, 1, 0);
    test_mla_attn_case(5, 4, 64, 32, 2100, 0, 2000, -1, 0); // dense causal, decode-like: split
    test_mla_attn_case(7, 4, 64, 32, 300, 0, 0, -1, 3);     // dense from 0, forced split: empty splits
    test_mla_attn_case(2, 7, 33, 6, 700, 65, 0, 0, 1);      // D % 4 != 0: plain loads, one buffer; partial group
    test_mla_attn_case(2, 7, 33, 6, 700, 65, 0, 1, 0);
    test_mla_attn_case(2, 64, 512, 128, 1500, small_mode ? 70 : 300, 0, 1, 0); // two tile buffers do not fit: one
    test_mla_attn_case(3, 20, 300, 12, 900, 100, 0, 1, 2);                     // two dims per thread, 16-head groups
    test_mla_attn_case(2, 5, 64, 32, 100, 40, 0, 2, 0);                        // all invalid: zeros
    test_mla_attn_case(1, 4, 64, 32, 100, 0, 0, 0, 0);                         // empty key list
    // V3.2 decode shape (split), then one split; fewer keys in small mode (the sanitizers' runs).
    test_mla_attn_case(2, 128, 512, 64, 3000, small_mode ? 200 : 2048, 0, 1, 0);
    test_mla_attn_case(3, 128, 512, 64, 3000, small_mode ? 97 : 2049, 0, 0, 1);
    if (!small_mode) {
        test_mla_attn_case(36, 128, 512, 64, 6000, 256, 0, 1, 0);  // prefill-like: 144 blocks, no split
        test_mla_attn_case(3, 128, 512, 64, 5000, 0, 4000, -1, 0); // dense, V3.2 width
    }
    printf("mla attn f32 vs float64: %d cases, worst rel err %.3g\n", attn_cases, worst_attn_rel);
}
