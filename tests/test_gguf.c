// test_gguf.c: GGUF support end to end. The GGUF files are made at build time by tools/st2gguf.py from the
// safetensors fixtures (argv[1] is the directory holding them).
//  - F32 GGUF == safetensors: identical logits through the same engine (rel L2 <= 1e-6) for llama (Q/K
//    permutation + rope_freqs), qwen2, qwen3, dsv32 and dsv32_fp8 (MLA k_b/v_b split, experts, indexer).
//  - Quantized GGUFs: every weight element within the bound its block's quantization step allows
//    (derived from the original values, see tools/st2gguf.py), and for the dense models logits within a
//    multiple of the measured weight error.
//  - Dot products and matmul of every type against float64 references on fresh random blocks (AVX2 and
//    scalar): exact up to float rounding given the quantized activations, and within the activation
//    rounding bound of the unquantized product.
//  - Malformed files: hand-made lies (counts, lengths, types, dims, offsets, overlaps, alignment,
//    duplicates, truncation) give the expected error; a seeded mutation run of 4000 mutants never crashes.
//  - Tokenizers from GGUF metadata (llama SentencePiece and gpt2 byte-level) encode and decode exactly as
//    the tokenizer.json they were converted from.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"
#include "fingerprint.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "session.h"
#include "synth_model.h"
#include "test_util.h"
#include "test_util_engine.h"
#include "test_util_synth.h"
#include "tokenizer.h"

static const char *gdir;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static double rndu(void) // [0, 1)
{
    return (double)(rnd64() >> 11) / 9007199254740992.0;
}
static float rndn(void)
{
    double u = rndu() + 1e-12, v = rndu();
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

static char *gpath(const char *name)
{
    static char p[8][1100];
    static int k;
    char *s = p[k++ % 8];
    snprintf(s, 1100, "%s/%s", gdir, name);
    return s;
}

// ------------------------------------------------------------------------------------------------ weights

// Per-element bound of the quantization error of x[0..n) (one block) stored as type t by st2gguf.py.
static void block_bounds(enum sd_qtype t, const float *x, int n, double *bound)
{
    const double up = 1 + 1.0 / 1024; // f16 rounding up of a scale
    if (t == SD_Q_F32) {
        for (int i = 0; i < n; i++)
            bound[i] = 0;
    } else if (t == SD_Q_F16) {
        for (int i = 0; i < n; i++)
            bound[i] = fabs(x[i]) / 2048 + 3e-8; // half an ulp of an 11-bit significand (+ subnormals)
    } else if (t == SD_Q_BF16) {
        for (int i = 0; i < n; i++)
            bound[i] = fabs(x[i]) / 256; // half an ulp of an 8-bit significand
    } else if (t == SD_Q_Q8_0 || t == SD_Q_Q4_0) {
        double amax = 0;
        for (int i = 0; i < n; i++)
            amax = fmax(amax, fabs(x[i]));
        double d = amax / (t == SD_Q_Q8_0 ? 127 : 7) * up;
        for (int i = 0; i < n; i++)
            bound[i] = d / 2;
    } else if (t == SD_Q_Q4_K || t == SD_Q_Q5_K) {
        double levels = t == SD_Q_Q4_K ? 15 : 31, scale[8], m[8], ms = 0, mm = 0;
        for (int j = 0; j < 8; j++) {
            double lo = 0, hi = -INFINITY;
            for (int i = 0; i < 32; i++) {
                lo = fmin(lo, x[32 * j + i]);
                hi = fmax(hi, x[32 * j + i]);
            }
            scale[j] = (hi - lo) / levels;
            m[j] = -lo;
            ms = fmax(ms, scale[j]);
            mm = fmax(mm, m[j]);
        }
        double D = ms / 63 * up, DM = mm / 63 * up;
        for (int i = 0; i < 256; i++)
            bound[i] = fmax((scale[i / 32] + D) / 2, DM / 2);
    } else if (t == SD_Q_Q6_K) {
        double scale[16], ms = 0;
        for (int g = 0; g < 16; g++) {
            double a = 0;
            for (int i = 0; i < 16; i++)
                a = fmax(a, fabs(x[16 * g + i]));
            scale[g] = a / 31;
            ms = fmax(ms, scale[g]);
        }
        double D = ms / 127 * up;
        for (int i = 0; i < 256; i++)
            bound[i] = (scale[i / 16] + D) / 2;
    }
}

struct wstats {
    double err2, ref2;
    long n_checked, n_bad;
    int types_seen[SD_Q_TYPE_LIMIT];
};

// Compare one weight (rows x cols, HF order) of the GGUF model against the safetensors one.
static void check_weight(const struct sd_model *mg, const char *gname, const float *wg, const float *ws, int64_t n,
                         int64_t cols, struct wstats *ws_out)
{
    const struct sd_gguf_tensor *t = sd_gguf_find_tensor(mg->gguf, gname);
    CHECK_MSG(t != NULL, "%s missing", gname);
    if (!t || !wg || !ws)
        return;
    int B = sd_qtype_block(t->type);
    CHECK_MSG(cols % B == 0, "%s: cols %lld not a multiple of %d", gname, (long long)cols, B);
    ws_out->types_seen[t->type] = 1;
    double bound[256];
    long bad = 0;
    for (int64_t b = 0; b < n; b += B) {
        block_bounds(t->type, ws + b, B, bound);
        for (int i = 0; i < B; i++) {
            double e = fabs((double)wg[b + i] - ws[b + i]);
            ws_out->err2 += e * e;
            ws_out->ref2 += (double)ws[b + i] * ws[b + i];
            if (e > bound[i] * 1.0001 + 1e-9) {
                if (bad++ < 3)
                    fprintf(stderr, "%s (%s) element %lld: %.9g vs %.9g, error %.3g > bound %.3g\n", gname,
                            sd_qtype_name(t->type), (long long)(b + i), wg[b + i], ws[b + i], e, bound[i]);
            }
        }
    }
    ws_out->n_checked += n;
    ws_out->n_bad += bad;
}

static void check_weights(const struct sd_model *mg, const struct sd_model *ms, struct wstats *w)
{
    const struct sd_config *c = &ms->cfg;
    int64_t H = c->hidden_size, V = c->vocab_size;
    char n[128];
    check_weight(mg, "token_embd.weight", sd_wmat_f32(&mg->embed), sd_wmat_f32(&ms->embed), V * H, H, w);
    if (!c->tie_word_embeddings)
        check_weight(mg, "output.weight", sd_wmat_f32(&mg->lm_head), sd_wmat_f32(&ms->lm_head), V * H, H, w);
    for (int il = 0; il < c->n_layers; il++) {
        const struct sd_layer_weights *G = &mg->layers[il], *S = &ms->layers[il];
#define W(suffix, field, rows, cols)                                                                                   \
    do {                                                                                                               \
        snprintf(n, sizeof n, "blk.%d." suffix, il);                                                                   \
        check_weight(mg, n, sd_wmat_f32(&G->field), sd_wmat_f32(&S->field), (int64_t)(rows) * (cols), cols, w);        \
    } while (0)
        if (sd_config_is_deepseek(c)) {
            int64_t nh = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
            W("attn_q_a.weight", wq_a, c->q_lora_rank, H);
            W("attn_q_b.weight", wq_b, nh * (dn + dr), c->q_lora_rank);
            W("attn_kv_a_mqa.weight", wkv_a, c->kv_lora_rank + dr, H);
            W("attn_output.weight", wo, H, nh * dv);
            if (c->arch == SD_ARCH_DEEPSEEK_V32) {
                W("indexer.attn_q_b.weight", idx_wq_b, (int64_t)c->index_n_heads * c->index_head_dim, c->q_lora_rank);
                W("indexer.attn_k.weight", idx_wk, c->index_head_dim, H);
                W("indexer.proj.weight", idx_wproj, c->index_n_heads, H);
            }
            if (G->is_moe) {
                int64_t E = c->n_routed_experts, Ie = c->moe_intermediate_size;
                W("ffn_gate_inp.weight", router, E, H);
                for (int64_t e = 0; e < E; e++) {
                    W("ffn_gate_exps.weight", exp_gate[e], Ie, H);
                    W("ffn_up_exps.weight", exp_up[e], Ie, H);
                    W("ffn_down_exps.weight", exp_down[e], H, Ie);
                }
                W("ffn_gate_shexp.weight", sh_gate, c->n_shared_experts * Ie, H);
                W("ffn_down_shexp.weight", sh_down, H, c->n_shared_experts * Ie);
                continue;
            }
        } else {
            int64_t nh = c->n_heads, nkv = c->n_heads_kv, hd = c->head_dim;
            W("attn_q.weight", wq, nh * hd, H);
            W("attn_k.weight", wk, nkv * hd, H);
            W("attn_v.weight", wv, nkv * hd, H);
            W("attn_output.weight", wo, H, nh * hd);
        }
        W("ffn_gate.weight", w_gate, c->intermediate_size, H);
        W("ffn_up.weight", w_up, c->intermediate_size, H);
        W("ffn_down.weight", w_down, H, c->intermediate_size);
#undef W
    }
}

// Load fixture `fix` as safetensors and as GGUF `file` dequantized to f32 at load (what the file holds;
// the quantized forward is checked against this one in test_gguf_quant); compare weights and logits.
// logit_factor > 0: quantized dense model, logits rel L2 must be <= factor * weight rel error (+ 1e-6).
// logit_factor == 0: lossless, rel L2 <= 1e-6. < 0: logits only checked finite (near-tie DSA/MoE fixtures).
// Returns the measured amplification (logits rel L2 / weight rel error) of a lossy file, else 0.
static double check_model(const char *dir, const int32_t *ids, int n, const char *gguf, double logit_factor,
                          const int *must_see)
{
    double amp = 0;
    const char *file = strrchr(gguf, '/') ? strrchr(gguf, '/') + 1 : gguf;
    struct sd_model *ms = NULL, *mg = NULL;
    struct sd_err err = {0};
    struct sd_model_load_params lp = {.gguf_dequant = 1};
    if (sd_model_load(dir, &ms, &err) != SD_OK || sd_model_load_ex(gguf, &lp, &mg, &err) != SD_OK) {
        CHECK_MSG(0, "%s: %s", file, err.msg);
        goto out;
    }
    CHECK_MSG(mg->gguf != NULL && mg->tensors == NULL, "%s: not loaded through the GGUF path", file);
    {
        const struct sd_config *a = &mg->cfg, *b = &ms->cfg;
        int same = a->arch == b->arch && a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
                   a->intermediate_size == b->intermediate_size && a->n_layers == b->n_layers &&
                   a->n_heads == b->n_heads && a->n_heads_kv == b->n_heads_kv &&
                   (sd_config_is_deepseek(b) || a->head_dim == b->head_dim) && // MLA ignores head_dim
                   a->rms_norm_eps == b->rms_norm_eps && a->tie_word_embeddings == b->tie_word_embeddings &&
                   a->q_lora_rank == b->q_lora_rank && a->kv_lora_rank == b->kv_lora_rank &&
                   a->qk_nope_head_dim == b->qk_nope_head_dim && a->v_head_dim == b->v_head_dim &&
                   a->n_routed_experts == b->n_routed_experts && a->n_group == b->n_group &&
                   a->index_topk == b->index_topk && a->attn_scale == b->attn_scale &&
                   a->rope_main.dim == b->rope_main.dim && a->rope_main.attn_factor == b->rope_main.attn_factor;
        for (int i = 0; same && i < a->rope_main.dim / 2; i++)
            same = fabsf(a->rope_main.inv_freq[i] - b->rope_main.inv_freq[i]) <= 1e-6f * b->rope_main.inv_freq[i];
        CHECK_MSG(same, "%s: the config mapped from GGUF metadata differs from config.json's", file);
    }
    struct wstats w = {0};
    check_weights(mg, ms, &w);
    double werr = sqrt(w.err2 / (w.ref2 > 0 ? w.ref2 : 1));
    CHECK_MSG(w.n_bad == 0, "%s: %ld of %ld weights outside their quantization bound", file, w.n_bad, w.n_checked);
    for (int i = 0; must_see && must_see[i] >= 0; i++)
        CHECK_MSG(w.types_seen[must_see[i]], "%s: no tensor of type %s was checked", file,
                  sd_qtype_name((enum sd_qtype)must_see[i]));
    int V = ms->cfg.vocab_size;
    struct sd_session_params sp = {.max_batch = 256};
    float *a = sd_test_logits(ms, ids, n, &sp), *b = sd_test_logits(mg, ids, n, &sp);
    CHECK(a && b);
    if (a && b) {
        double e = sd_test_rel_l2(b, a, (size_t)n * V);
        int finite = 1;
        for (size_t i = 0; i < (size_t)n * V; i++)
            finite &= isfinite(b[i]) != 0;
        CHECK_MSG(finite, "%s: non-finite logits", file);
        if (logit_factor == 0) {
            printf("%-22s weights exact (%ld)  logits rel_l2 %.3g (bound 1e-6)\n", file, w.n_checked, e);
            CHECK_MSG(e <= 1e-6 && werr == 0, "%s: rel L2 %.3g, weight error %.3g", file, e, werr);
        } else if (logit_factor > 0) {
            double bound = logit_factor * werr + 1e-6;
            printf("%-22s weights rel err %.3g (%ld in bounds)  logits rel_l2 %.3g (bound %.3g)\n", file, werr,
                   w.n_checked, e, bound);
            CHECK_MSG(e <= bound, "%s: logits rel L2 %.3g > %.3g", file, e, bound);
            amp = werr > 0 ? e / werr : 0;
        } else {
            printf("%-22s weights rel err %.3g (%ld in bounds)  logits rel_l2 %.3g (near-tie routing; finite only)\n",
                   file, werr, w.n_checked, e);
        }
    }
    free(a);
    free(b);
out:
    sd_model_free(ms);
    sd_model_free(mg);
    return amp;
}

static double check_fixture(const char *fix, const char *file, double logit_factor, const int *must_see)
{
    double amp = 0;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", sd_test_fixtures(), fix);
    int n = 0;
    int32_t *ids = sd_test_load_ids(dir, &n);
    CHECK_MSG(ids && n > 0, "%s: ids.txt missing", dir);
    if (ids)
        amp = check_model(dir, ids, n, gpath(file), logit_factor, must_see);
    free(ids);
    return amp;
}

// Lossy types are held to CALIB x the amplification (logits rel L2 / weight rel error) that the same model
// shows for BF16, whose rounding is unstructured noise with no block layout: quantization noise of the same
// relative size should be amplified alike, while a wrong layout or scale gives errors of order 1.
#define CALIB 1.5

struct synth_run {
    int32_t ids[48];
    double amp; // bf16's amplification (logits rel L2 / weight rel error), measured first
};

static void check_synth(const char *model_dir, const char *gguf, int i, void *ctx)
{
    static const int b16[] = {SD_Q_BF16, -1}, k4[] = {SD_Q_Q4_K, -1}, k5[] = {SD_Q_Q5_K, -1}, k6[] = {SD_Q_Q6_K, -1};
    static const int *const must[] = {NULL, b16, k4, k5, k6};
    struct synth_run *r = ctx;
    // bf16 (no block layout) calibrates how much this model amplifies weight noise
    double a = check_model(model_dir, r->ids, 48, gguf, i == 0 ? 0 : i == 1 ? 20 : CALIB * r->amp, must[i]);
    if (i == 1)
        r->amp = a;
}

// K-quants on a continuous model: a synthetic DeepSeek-V3.2 of width 256 (so most weights take the K
// type) with dense MLPs only and index_topk above the sequence length (no routing or top-k choices to flip),
// converted at test time with tools/st2gguf.py by the python3 given on the command line.
static void test_synth_kquants(const char *python)
{
    struct sd_synth_shape sh = {.vocab = 256,
                                .hidden = 256,
                                .layers = 2,
                                .first_dense = 2,
                                .heads = 4,
                                .q_lora = 64,
                                .kv_lora = 64,
                                .nope = 32,
                                .rope = 16,
                                .v = 32,
                                .experts = 8,
                                .experts_per_tok = 2,
                                .n_group = 1,
                                .topk_group = 1,
                                .moe_inter = 64,
                                .shared = 1,
                                .inter = 256,
                                .index_heads = 4,
                                .index_dim = 64,
                                .index_topk = 64,
                                .max_pos = 4096};
    struct synth_run r = {.amp = 0};
    for (int i = 0; i < 48; i++)
        r.ids[i] = (int32_t)(rnd64() % 256);
    static const char *const types[] = {"f32", "bf16", "q4_k", "q5_k", "q6_k"};
    sd_test_synth_gguf(python, &sh, 7, types, 5, check_synth, &r);
}

// ------------------------------------------------------------------------------------------------ dots

static void rand_f16_scale(uint8_t *p, double lo, double hi)
{
    uint16_t h = sd_f32_to_f16((float)(lo + (hi - lo) * rndu()));
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

// Random but valid weights of type t, n elements.
static void rand_weights(enum sd_qtype t, uint8_t *w, int64_t n)
{
    size_t bytes = sd_qtype_row_bytes(t, n), bb = sd_qtype_block_bytes(t);
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd64();
    for (size_t off = 0; off < bytes; off += bb) {
        uint8_t *b = w + off;
        switch (t) {
        case SD_Q_F32: {
            float v = rndn();
            memcpy(b, &v, 4);
            break;
        }
        case SD_Q_F16: {
            uint16_t h = sd_f32_to_f16(rndn());
            memcpy(b, &h, 2);
            break;
        }
        case SD_Q_BF16: {
            uint16_t h = sd_f32_to_bf16(rndn());
            memcpy(b, &h, 2);
            break;
        }
        case SD_Q_Q8_0:
        case SD_Q_Q4_0:
            rand_f16_scale(b, 1e-3, 2e-2);
            break;
        case SD_Q_Q4_K:
        case SD_Q_Q5_K:
            rand_f16_scale(b, 1e-3, 2e-2);
            rand_f16_scale(b + 2, 1e-3, 2e-2);
            break;
        case SD_Q_Q6_K:
            rand_f16_scale(b + 208, 1e-3, 2e-2);
            break;
        default:
            break;
        }
    }
}

// Activation row as the kernel sees it (dequantized 8-bit blocks), into xh.
static void act_dequant(enum sd_qtype t, const void *xq, int64_t n, double *xh)
{
    if (t == SD_Q_Q8_0 || t == SD_Q_Q4_0) {
        const struct sd_q8_block *b = xq;
        for (int64_t i = 0; i < n; i++)
            xh[i] = (double)b[i / 32].d * b[i / 32].qs[i % 32];
    } else {
        const struct sd_q8k_block *b = xq;
        for (int64_t i = 0; i < n; i++)
            xh[i] = (double)b[i / 256].d * b[i / 256].qs[i % 256];
        for (int64_t k = 0; k < n / 256; k++)
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++)
                    s += b[k].qs[16 * g + j];
                CHECK_MSG(s == b[k].bsums[g], "Q8_K bsums[%d] = %d, sum of quants %d", g, b[k].bsums[g], s);
            }
    }
}

static void test_dots(void)
{
    const enum sd_qtype types[] = {SD_Q_F32,  SD_Q_F16,  SD_Q_BF16, SD_Q_Q8_0,
                                   SD_Q_Q4_0, SD_Q_Q4_K, SD_Q_Q5_K, SD_Q_Q6_K};
    printf("dot products: %s path available\n", sd_quant_impl());
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        enum sd_qtype t = types[ti];
        int B = sd_qtype_block(t);
        double worst_exact = 0, worst_bound = 0;
        for (int trial = 0; trial < 40; trial++) {
            int64_t n = B == 1 ? 1 + (int64_t)(rnd64() % 1100) : B * (1 + (int64_t)(rnd64() % 8));
            uint8_t *w = malloc(sd_qtype_row_bytes(t, n));
            float *wf = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)n);
            double *xh = malloc(sizeof(double) * (size_t)n);
            size_t ab = sd_quant_act_bytes(t, n);
            void *xq = ab ? malloc(ab) : NULL;
            rand_weights(t, w, n);
            CHECK(sd_dequantize(t, w, wf, n) == SD_OK);
            double scale = trial % 3 == 0 ? 1e-3 : trial % 3 == 1 ? 1.0 : 50.0;
            for (int64_t i = 0; i < n; i++)
                x[i] = (float)(rndn() * scale);
            if (trial == 5) // a zero activation block and a zero row stay exact
                memset(x, 0, sizeof(float) * (size_t)(B < n ? B : n));
            if (xq)
                sd_quant_act(t, x, n, xq);
            for (int simd = 1; simd >= 0; simd--) {
                sd_quant_force_scalar(!simd);
                float got = sd_quant_dot(t, w, xq, x, n);
                double exact = 0, mag = 0, ref = 0, actb = 0;
                if (xq)
                    act_dequant(t, xq, n, xh);
                for (int64_t i = 0; i < n; i++) {
                    double xi = xq ? xh[i] : x[i];
                    exact += (double)wf[i] * xi;
                    mag += fabs((double)wf[i] * xi);
                    ref += (double)wf[i] * x[i];
                }
                if (xq) { // |x - x^| <= d/2 per element, d = the block's activation scale
                    for (int64_t i = 0; i < n; i++) {
                        int bl = (t == SD_Q_Q8_0 || t == SD_Q_Q4_0) ? 32 : 256;
                        double d = bl == 32 ? ((const struct sd_q8_block *)xq)[i / 32].d
                                            : ((const struct sd_q8k_block *)xq)[i / 256].d;
                        (void)bl;
                        actb += fabs(wf[i]) * d / 2;
                    }
                }
                double tol = 2e-6 * mag + 1e-30;
                double e1 = fabs(got - exact), e2 = fabs(got - ref);
                worst_exact = fmax(worst_exact, e1 / (mag + 1e-30));
                worst_bound = fmax(worst_bound, actb > 0 ? e2 / (actb + tol) : 0);
                CHECK_MSG(e1 <= tol, "%s n=%lld %s: dot %.9g vs exact %.9g (|err| %.3g > %.3g)", sd_qtype_name(t),
                          (long long)n, simd ? sd_quant_impl() : "scalar", got, exact, e1, tol);
                CHECK_MSG(e2 <= actb + tol,
                          "%s n=%lld: dot %.9g vs f64 reference %.9g beyond the activation rounding "
                          "bound %.3g",
                          sd_qtype_name(t), (long long)n, got, ref, actb);
            }
            sd_quant_force_scalar(0);
            // matmul: 3 rows x 2 tokens equals the row dots
            if (trial < 4) {
                int64_t rows = 3, nt = 2;
                size_t rb = sd_qtype_row_bytes(t, n);
                uint8_t *W = malloc(rb * (size_t)rows);
                float *X = malloc(sizeof(float) * (size_t)(n * nt)), Y[6];
                for (int64_t r = 0; r < rows; r++)
                    rand_weights(t, W + r * rb, n);
                for (int64_t i = 0; i < n * nt; i++)
                    X[i] = rndn();
                struct sd_err err = {0};
                CHECK(sd_quant_matmul(t, W, rows, n, X, nt, Y, &err) == SD_OK);
                for (int64_t k = 0; k < nt; k++) {
                    void *q = ab ? malloc(ab) : NULL;
                    if (q)
                        sd_quant_act(t, X + k * n, n, q);
                    for (int64_t r = 0; r < rows; r++) {
                        float d = sd_quant_dot(t, W + r * rb, q, X + k * n, n);
                        CHECK_MSG(Y[k * rows + r] == d, "%s matmul[%lld][%lld] %.9g != dot %.9g", sd_qtype_name(t),
                                  (long long)k, (long long)r, Y[k * rows + r], d);
                    }
                    free(q);
                }
                free(W);
                free(X);
            }
            free(w);
            free(wf);
            free(x);
            free(xh);
            free(xq);
        }
        printf("  %-5s 40 random rows x {%s, scalar}: max |dot - exact| / sum|w x^| = %.2g; max error / activation "
               "bound = %.2g\n",
               sd_qtype_name(t), sd_quant_impl(), worst_exact, worst_bound);
    }
    struct sd_err err = {0};
    float y;
    CHECK(sd_quant_matmul(SD_Q_Q4_K, "", 1, 100, &y, 1, &y, &err) == SD_ERR_UNSUPPORTED && strstr(err.msg, "Q4_K"));
}

// ------------------------------------------------------------------------------------------------ malformed

struct gb {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct gb *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put32(struct gb *b, uint32_t v)
{
    put(b, &v, 4);
}
static void put64(struct gb *b, uint64_t v)
{
    put(b, &v, 8);
}
static void putstr(struct gb *b, const char *s)
{
    put64(b, strlen(s));
    put(b, s, strlen(s));
}

// A small valid file, or one with a single lie (see `lie`).
enum lie {
    L_NONE,
    L_MAGIC,
    L_VERSION,
    L_NTENS,
    L_NKV,
    L_KEYLEN,
    L_VTYPE,
    L_ARRN,
    L_NESTED,
    L_STRLEN,
    L_BOOL,
    L_ALIGN,
    L_ALIGNTYPE,
    L_DUPKEY,
    L_NDIMS,
    L_DIM0,
    L_TTYPE,
    L_BLOCK,
    L_MISALIGN,
    L_PASTEND,
    L_OVERLAP,
    L_DUPNAME,
    L_NAMENUL,
    L_TRUNC,
    L_COUNT
};

static struct gb build(enum lie lie)
{
    struct gb b = {0};
    put(&b, lie == L_MAGIC ? "GGML" : "GGUF", 4);
    put32(&b, lie == L_VERSION ? 99 : 3);
    put64(&b, lie == L_NTENS ? ((uint64_t)1 << 40) : 2);
    put64(&b, lie == L_NKV ? UINT64_MAX : 4);
    // kv 0: general.alignment u32 32
    if (lie == L_KEYLEN) {
        put64(&b, (uint64_t)1 << 62);
        put(&b, "general.alignment", 17);
    } else {
        putstr(&b, "general.alignment");
    }
    put32(&b, lie == L_ALIGNTYPE ? SD_GGUF_U64 : lie == L_VTYPE ? 200 : SD_GGUF_U32);
    if (lie == L_ALIGNTYPE)
        put64(&b, 32);
    else
        put32(&b, lie == L_ALIGN ? 48 : 32);
    // kv 1: general.architecture
    putstr(&b, lie == L_DUPKEY ? "general.alignment" : "general.architecture");
    put32(&b, SD_GGUF_STRING);
    if (lie == L_STRLEN) {
        put64(&b, UINT64_MAX - 3);
        put(&b, "llama", 5);
    } else {
        putstr(&b, "llama");
    }
    // kv 2: a string array
    putstr(&b, "tokenizer.ggml.tokens");
    put32(&b, SD_GGUF_ARRAY);
    put32(&b, lie == L_NESTED ? SD_GGUF_ARRAY : SD_GGUF_STRING);
    put64(&b, lie == L_ARRN ? ((uint64_t)1 << 60) : 3);
    putstr(&b, "a");
    putstr(&b, "b");
    putstr(&b, "\xe2\x96\x81");
    // kv 3: a bool
    putstr(&b, "tokenizer.ggml.add_bos_token");
    put32(&b, SD_GGUF_BOOL);
    uint8_t bv = lie == L_BOOL ? 7 : 1;
    put(&b, &bv, 1);
    // tensor 0: Q8_0 [64, 2] at 0 (4 blocks, 136 bytes)
    putstr(&b, "t0");
    put32(&b, lie == L_NDIMS ? 5 : 2);
    put64(&b, lie == L_BLOCK ? 48 : 64);
    put64(&b, 2);
    if (lie == L_NDIMS) {
        put64(&b, 1);
        put64(&b, 1);
        put64(&b, 1);
    }
    put32(&b, lie == L_TTYPE ? 99 : SD_Q_Q8_0);
    put64(&b, 0);
    // tensor 1: F32 [4] at 160
    if (lie == L_NAMENUL) {
        put64(&b, 3);
        put(&b, "t\0x", 3);
    } else {
        putstr(&b, lie == L_DUPNAME ? "t0" : "t1");
    }
    put32(&b, 1);
    put64(&b, lie == L_DIM0 ? 0 : 4);
    put32(&b, SD_Q_F32);
    put64(&b, lie == L_MISALIGN ? 161 : lie == L_PASTEND ? 4096 : lie == L_OVERLAP ? 128 : 160);
    while (b.n % 32)
        put(&b, "", 1);
    size_t data = b.n;
    uint8_t z[176] = {0};
    put(&b, z, sizeof z);
    (void)data;
    if (lie == L_TRUNC)
        b.n -= 9;
    return b;
}

static void test_malformed(void)
{
    static const char *const want[L_COUNT] = {
        [L_MAGIC] = "not a GGUF file",
        [L_VERSION] = "version 99",
        [L_NTENS] = "more than a",
        [L_NKV] = "more than a",
        [L_KEYLEN] = "claims",
        [L_VTYPE] = "unknown value type 200",
        [L_ARRN] = "claims",
        [L_NESTED] = "nested arrays",
        [L_STRLEN] = "claims",
        [L_BOOL] = "bool with value 7",
        [L_ALIGN] = "power of two",
        [L_ALIGNTYPE] = "must be a u32",
        [L_DUPKEY] = "appears twice",
        [L_NDIMS] = "5 dimensions",
        [L_DIM0] = "dimension 0 is 0",
        [L_TTYPE] = "unknown ggml type 99",
        [L_BLOCK] = "not a multiple of its block size 32",
        [L_MISALIGN] = "not a multiple of the alignment",
        [L_PASTEND] = "past the end",
        [L_OVERLAP] = "overlap",
        [L_DUPNAME] = "\"t0\" appears twice",
        [L_NAMENUL] = "NUL",
        [L_TRUNC] = "truncated",
    };
    struct gb ok = build(L_NONE);
    struct sd_gguf *g = NULL;
    struct sd_err err = {0};
    CHECK_MSG(sd_gguf_parse(ok.p, ok.n, "valid.gguf", &g, &err) == SD_OK, "valid file rejected: %s", err.msg);
    if (g) {
        const struct sd_gguf_kv *kv = sd_gguf_find_kv(g, "tokenizer.ggml.tokens");
        size_t l = 0;
        CHECK(kv && kv->arr_n == 3 && !memcmp(sd_gguf_arr_str(kv, 2, &l), "\xe2\x96\x81", 3) && l == 3);
        const struct sd_gguf_tensor *t = sd_gguf_find_tensor(g, "t1");
        CHECK(t && t->offset == 160 && t->n_bytes == 16 && t->type == SD_Q_F32 && sd_gguf_tensor_count(g) == 2);
        CHECK(sd_gguf_find_tensor(g, "t0")->n_bytes == 136 && sd_gguf_alignment(g) == 32);
        int64_t v;
        int bo;
        CHECK(sd_gguf_get_int(g, "general.alignment", 0, 100, &v, &err) == SD_OK && v == 32);
        CHECK(sd_gguf_get_int(g, "general.architecture", 0, 100, &v, &err) == SD_ERR_FORMAT &&
              strstr(err.msg, "must be an integer"));
        CHECK(sd_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bo, &err) == SD_OK && bo == 1);
        CHECK(sd_gguf_get_int(g, "nope", 0, 1, &v, &err) == SD_ERR_MISSING && strstr(err.msg, "\"nope\""));
        sd_gguf_free(g);
    }
    for (int lie = 1; lie < L_COUNT; lie++) {
        struct gb b = build((enum lie)lie);
        g = NULL;
        sd_err_clear(&err);
        enum sd_status st = sd_gguf_parse(b.p, b.n, "bad.gguf", &g, &err);
        CHECK_MSG(st != SD_OK && g == NULL, "lie %d accepted", lie);
        CHECK_MSG(strstr(err.msg, "bad.gguf") && strstr(err.msg, want[lie]), "lie %d: message \"%s\" lacks \"%s\"", lie,
                  err.msg, want[lie]);
        if (lie == L_NTENS || lie == L_OVERLAP)
            printf("  e.g. %s\n", err.msg);
        free(b.p);
    }
    // Every truncation of the valid image fails cleanly.
    int trunc_ok = 1;
    for (size_t len = 0; len < ok.n; len++) {
        uint8_t *cp = malloc(len ? len : 1);
        memcpy(cp, ok.p, len);
        g = NULL;
        if (sd_gguf_parse(cp, len, "t.gguf", &g, &err) == SD_OK) {
            trunc_ok = 0;
            sd_gguf_free(g);
        }
        free(cp);
    }
    CHECK_MSG(trunc_ok, "a truncated file was accepted");
    printf("malformed: %d hand-made lies and %zu truncations rejected with clear errors\n", L_COUNT - 1, ok.n);
    free(ok.p);
}

// Seeded mutations of real GGUF images; any parse that succeeds must expose only in-bounds, disjoint
// tensors, and the tokenizer built from it must not crash.
static void test_mutations(void)
{
    const char *files[] = {"stories260K-f32.gguf", "qwen2-tok-f32.gguf"};
    int n_ok = 0, n_err = 0, n_tok = 0;
    for (int fi = 0; fi < 2; fi++) {
        size_t len = 0;
        uint8_t *orig = (uint8_t *)sd_test_read_file(gpath(files[fi]), &len);
        CHECK_MSG(orig, "%s missing", files[fi]);
        if (!orig)
            continue;
        struct sd_gguf *g0 = NULL;
        struct sd_err err;
        CHECK(sd_gguf_parse(orig, len, "orig", &g0, &err) == SD_OK);
        size_t hdr = g0 ? sd_gguf_data_offset(g0) : len;
        sd_gguf_free(g0);
        rng_state = 0x5eed0000ull + (uint64_t)fi;
        for (int k = 0; k < 2000; k++) {
            size_t n = len;
            uint8_t *m = malloc(n);
            memcpy(m, orig, n);
            int edits = 1 + (int)(rnd64() % 4);
            for (int e = 0; e < edits; e++) {
                size_t at = (size_t)(rnd64() % hdr);
                switch (rnd64() % 4) {
                case 0:
                    m[at] ^= (uint8_t)(1u << (rnd64() % 8));
                    break;
                case 1:
                    m[at] = (uint8_t)rnd64();
                    break;
                case 2: { // a large or boundary 64-bit value over a length/count/offset
                    uint64_t vals[] = {0, 1, UINT32_MAX, UINT64_MAX, (uint64_t)1 << 63, (uint64_t)len, hdr};
                    uint64_t v = vals[rnd64() % 7];
                    if (at + 8 <= hdr)
                        memcpy(m + at, &v, 8);
                    break;
                }
                default:
                    n = hdr / 2 + (size_t)(rnd64() % (len - hdr / 2));
                    break; // truncate
                }
            }
            uint8_t *cp = malloc(n); // exact size, so a stray read is a heap overflow under ASan
            memcpy(cp, m, n);
            free(m);
            struct sd_gguf *g = NULL;
            sd_err_clear(&err);
            if (sd_gguf_parse(cp, n, "mutant", &g, &err) == SD_OK) {
                n_ok++;
                for (size_t i = 0; i < sd_gguf_tensor_count(g); i++) {
                    const struct sd_gguf_tensor *t = sd_gguf_tensor_at(g, i);
                    const uint8_t *d = t->data;
                    if (d < cp || d + t->n_bytes > cp + n || sd_gguf_find_tensor(g, t->name) != t) {
                        CHECK_MSG(0, "mutant %d: tensor %s outside the buffer", k, t->name);
                        break;
                    }
                }
                struct sd_tokenizer *tok = NULL;
                if (sd_tokenizer_from_gguf(g, &tok, &err) == SD_OK) {
                    n_tok++;
                    int32_t *ids = NULL;
                    size_t nid = 0;
                    if (sd_tokenizer_encode(tok, "Hello world 123", 15, 1, &ids, &nid, &err) == SD_OK)
                        free(ids);
                    sd_tokenizer_free(tok);
                } else {
                    CHECK_MSG(err.msg[0] && tok == NULL, "tokenizer failure without a message");
                }
                sd_gguf_free(g);
            } else {
                n_err++;
                CHECK_MSG(g == NULL && err.msg[0] && strstr(err.msg, "mutant"), "mutant %d: bad failure: %s", k,
                          err.msg);
            }
            free(cp);
        }
        free(orig);
    }
    printf("mutations: 4000 mutants, %d rejected with a message, %d parsed (%d gave a tokenizer), no crash\n", n_err,
           n_ok, n_tok);
    CHECK(n_err > 1000 && n_ok > 0);
}

// ------------------------------------------------------------------------------------------------ loader errors

static void test_loader_paths(void)
{
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    char tmpl[] = "/tmp/sd_gguf_XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    if (!dir)
        return;
    char a[1200], b[1200], abs1[4096], abs2[4096];
    CHECK(realpath(gpath("qwen2-f32.gguf"), abs1) && realpath(gpath("llama-f32.gguf"), abs2));
    snprintf(a, sizeof a, "%s/model.gguf", dir);
    CHECK(symlink(abs1, a) == 0);
    CHECK_MSG(sd_model_load(dir, &m, &err) == SD_OK && m && m->gguf, "dir with one GGUF: %s", err.msg);
    sd_model_free(m);
    m = NULL;
    struct sd_tokenizer *tok = NULL;
    CHECK_MSG(sd_tokenizer_load_model(dir, &tok, &err) == SD_ERR_MISSING && strstr(err.msg, "tokenizer.ggml.model"),
              "tokenizer of a GGUF without a vocabulary: %s", err.msg);
    snprintf(b, sizeof b, "%s/other.gguf", dir);
    CHECK(symlink(abs2, b) == 0);
    CHECK_MSG(sd_model_load(dir, &m, &err) != SD_OK && m == NULL && strstr(err.msg, "2 GGUF files"),
              "dir with two GGUFs: %s", err.msg);
    unlink(a);
    unlink(b);
    rmdir(dir);
    // Fingerprints: GGUF models have one, stable across loads, different per quantization.
    {
        uint8_t f1[SD_FINGERPRINT_BYTES], f2[SD_FINGERPRINT_BYTES], f3[SD_FINGERPRINT_BYTES];
        struct sd_model *x = NULL, *y = NULL, *z = NULL;
        int ok = sd_model_load(gpath("llama-f32.gguf"), &x, &err) == SD_OK &&
                 sd_model_load(gpath("llama-f32.gguf"), &y, &err) == SD_OK &&
                 sd_model_load(gpath("llama-q8_0.gguf"), &z, &err) == SD_OK &&
                 sd_model_fingerprint(x, NULL, NULL, "t", f1, &err) == SD_OK &&
                 sd_model_fingerprint(y, NULL, NULL, "t", f2, &err) == SD_OK &&
                 sd_model_fingerprint(z, NULL, NULL, "t", f3, &err) == SD_OK;
        CHECK_MSG(ok, "GGUF fingerprint: %s", err.msg);
        CHECK(ok && !memcmp(f1, f2, sizeof f1) && memcmp(f1, f3, sizeof f1));
        // The same Q8_0 file loaded as f32 (dequantized at load) computes other KV: another fingerprint.
        struct sd_model *zd = NULL;
        uint8_t f4[SD_FINGERPRINT_BYTES];
        ok = sd_model_load_ex(gpath("llama-q8_0.gguf"), &(struct sd_model_load_params){.gguf_dequant = 1}, &zd,
                              &err) == SD_OK &&
             sd_model_fingerprint(zd, NULL, NULL, "t", f4, &err) == SD_OK;
        CHECK_MSG(ok, "GGUF fingerprint, dequantized load: %s", err.msg);
        CHECK(ok && memcmp(f3, f4, sizeof f3) != 0);
        sd_model_free(x);
        sd_model_free(y);
        sd_model_free(z);
        sd_model_free(zd);
    }
    // A file that is a valid GGUF but not a model.
    struct gb g = build(L_NONE);
    snprintf(a, sizeof a, "%s/notamodel.gguf", gdir);
    FILE *f = fopen(a, "wb");
    fwrite(g.p, 1, g.n, f);
    fclose(f);
    free(g.p);
    CHECK(sd_model_load(a, &m, &err) != SD_OK && m == NULL);
    printf("not a model: %s\n", err.msg);
    CHECK(strstr(err.msg, "notamodel.gguf") && strstr(err.msg, "token_embd.weight"));
    unlink(a);
}

// ------------------------------------------------------------------------------------------------ tokenizer

static void test_tokenizer(const char *json, const char *gguf)
{
    static const char *const texts[] = {
        "Once upon a time, there was a little girl named Lily.",
        "",
        " leading space and  two  spaces\tand tab\nnew line\n\n",
        "Numbers 1234567 and 3.14159, punctuation!?;: \"quotes\" (parens) [brackets]",
        "Unicode: caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 "
        "\xce\xb1\xce\xb2\xce\xb3",
        "it's I'm we'll they've don't",
        "special <s> inside and </s> and <|end|> and <tool> text",
        "tail spaces   ",
    };
    struct sd_tokenizer *tj = NULL, *tg = NULL;
    struct sd_err err = {0};
    struct sd_gguf *g = NULL;
    if (sd_tokenizer_load(json, &tj, &err) != SD_OK || sd_gguf_open(gguf, &g, &err) != SD_OK ||
        sd_tokenizer_from_gguf(g, &tg, &err) != SD_OK) {
        CHECK_MSG(0, "%s", err.msg);
        goto out;
    }
    // st2gguf takes a missing EOS from config.json, so only a tokenizer.json EOS must carry over.
    CHECK(sd_tokenizer_bos(tj) == sd_tokenizer_bos(tg));
    CHECK(sd_tokenizer_eos(tj) < 0 || sd_tokenizer_eos(tj) == sd_tokenizer_eos(tg));
    int total = 0;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        for (int sp = 0; sp < 2; sp++) {
            int32_t *a = NULL, *b = NULL;
            size_t na = 0, nb = 0;
            CHECK(sd_tokenizer_encode(tj, texts[i], strlen(texts[i]), sp, &a, &na, &err) == SD_OK);
            CHECK(sd_tokenizer_encode(tg, texts[i], strlen(texts[i]), sp, &b, &nb, &err) == SD_OK);
            int same = na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
            CHECK_MSG(same, "%s: text %zu (add_special %d) encodes to %zu ids from tokenizer.json, %zu from GGUF", gguf,
                      i, sp, na, nb);
            if (!same)
                for (size_t k = 0; k < (na > nb ? na : nb) && k < 40; k++)
                    fprintf(stderr, "  %zu: %d %d\n", k, k < na ? a[k] : -1, k < nb ? b[k] : -1);
            char *da = NULL, *db = NULL;
            CHECK(sd_tokenizer_decode(tj, a, na, 1, &da, &err) == SD_OK);
            CHECK(sd_tokenizer_decode(tg, a, na, 1, &db, &err) == SD_OK);
            CHECK_MSG(da && db && !strcmp(da, db), "decode differs: \"%s\" vs \"%s\"", da, db);
            total += (int)na;
            free(a);
            free(b);
            free(da);
            free(db);
        }
    printf("tokenizer %-22s == %s on %zu texts (%d ids)\n", strrchr(gguf, '/') + 1, strrchr(json, '/') + 1,
           sizeof texts / sizeof texts[0] * 2, total);
out:
    sd_tokenizer_free(tj);
    sd_tokenizer_free(tg);
    sd_gguf_free(g);
}

// Real vocabularies: the corpus tokenizer.json files as vocab-only GGUFs (llama3 "llama-bpe", qwen3 "qwen2",
// deepseek-v3) encode llama.cpp's and our extra test strings exactly as the tokenizer.json does.
static void test_vocab_corpus(void)
{
    const char *c = sd_test_corpus();
    if (!c) {
        printf("corpus vocabularies: SKIPPED (shared corpus absent)\n");
        return;
    }
    static const struct {
        const char *model, *inp;
    } sets[] = {
        {"llama3", "vocab/llama.cpp/ggml-vocab-llama-bpe.gguf.inp"},
        {"llama3", "vocab/expected/llama3.extra.inp"},
        {"qwen3", "vocab/llama.cpp/ggml-vocab-qwen2.gguf.inp"},
        {"qwen3", "vocab/expected/qwen3.extra.inp"},
        {"deepseek-v3", "vocab/expected/deepseek-v3.llamacpp-tests.inp"},
        {"deepseek-v3", "vocab/expected/deepseek-v3.extra.inp"},
    };
    static const char SEP[] = "\n__ggml_vocab_test__\n";
    struct sd_tokenizer *tj = NULL, *tg = NULL;
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        char pj[1200], pg[1200], pi[1200], name[64];
        struct sd_err err = {0};
        if (i == 0 || strcmp(sets[i].model, sets[i - 1].model)) { // load each vocabulary once
            sd_tokenizer_free(tj);
            sd_tokenizer_free(tg);
            tj = tg = NULL;
            snprintf(pj, sizeof pj, "%s/vocab/hf/%s/tokenizer.json", c, sets[i].model);
            snprintf(name, sizeof name, "vocab-%s.gguf", sets[i].model);
            snprintf(pg, sizeof pg, "%s", gpath(name));
            struct sd_gguf *g = NULL;
            if (sd_tokenizer_load(pj, &tj, &err) || sd_gguf_open(pg, &g, &err) || sd_tokenizer_from_gguf(g, &tg, &err))
                CHECK_MSG(0, "%s: %s", sets[i].model, err.msg);
            sd_gguf_free(g);
        }
        snprintf(pi, sizeof pi, "%s/%s", c, sets[i].inp);
        char *inp = sd_test_read_file(pi, NULL);
        CHECK_MSG(inp, "%s missing", pi);
        if (inp && tj && tg) {
            int cases = 0, same = 0;
            for (char *p = inp, *sep; (sep = strstr(p, SEP)); p = sep + sizeof SEP - 1, cases++) {
                int32_t *a = NULL, *b = NULL;
                size_t na = 0, nb = 0;
                int ok = sd_tokenizer_encode(tj, p, (size_t)(sep - p), 0, &a, &na, &err) == SD_OK &&
                         sd_tokenizer_encode(tg, p, (size_t)(sep - p), 0, &b, &nb, &err) == SD_OK && na == nb &&
                         (na == 0 || !memcmp(a, b, na * sizeof *a));
                same += ok;
                if (!ok)
                    fprintf(stderr, "%s case %d: GGUF vocabulary encodes differently (%zu vs %zu ids)\n", pi, cases, nb,
                            na);
                free(a);
                free(b);
            }
            CHECK_MSG(cases > 0 && same == cases, "%s: %d/%d cases equal", pi, same, cases);
            printf("corpus vocabulary %-12s %-36s %d/%d cases equal to tokenizer.json\n", sets[i].model,
                   strrchr(sets[i].inp, '/') + 1, same, cases);
        }
        free(inp);
    }
    sd_tokenizer_free(tj);
    sd_tokenizer_free(tg);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_gguf GGUF_DIR [PYTHON3]\n");
        return 2;
    }
    gdir = argv[1];
    struct stat sb;
    if (stat(gpath("llama-f32.gguf"), &sb) != 0) {
        printf("SKIP: %s not found (the GGUF fixtures are built by tools/st2gguf.py; python3 missing?)\n",
               gpath("llama-f32.gguf"));
        return 77;
    }
    static const int q8[] = {SD_Q_Q8_0, -1}, q4[] = {SD_Q_Q4_0, -1}, f16[] = {SD_Q_F16, -1}, bf16[] = {SD_Q_BF16, -1},
                     k4[] = {SD_Q_Q4_K, SD_Q_Q8_0, -1}, k5[] = {SD_Q_Q5_K, -1}, k6[] = {SD_Q_Q6_K, -1};
    check_fixture("llama", "llama-f32.gguf", 0, NULL);
    check_fixture("qwen2", "qwen2-f32.gguf", 0, NULL);
    check_fixture("qwen3", "qwen3-f32.gguf", 0, NULL);
    check_fixture("dsv32", "dsv32-f32.gguf", 0, NULL);
    check_fixture("dsv32_fp8", "dsv32_fp8-f32.gguf", 0, NULL);
    double amp = check_fixture("llama", "llama-bf16.gguf", 20, bf16); // calibration (see CALIB)
    check_fixture("llama", "llama-f16.gguf", CALIB * amp, f16);
    check_fixture("llama", "llama-q8_0.gguf", CALIB * amp, q8);
    check_fixture("llama", "llama-q4_0.gguf", CALIB * amp, q4);
    check_fixture("qwen3", "qwen3-q8_0.gguf", CALIB * amp, q8); // same sizes and init as llama
    check_fixture("dsv32_fp8", "dsv32_fp8-q4_k.gguf", -1, k4);
    check_fixture("dsv32_fp8", "dsv32_fp8-q5_k.gguf", -1, k5);
    check_fixture("dsv32_fp8", "dsv32_fp8-q6_k.gguf", -1, k6);
    test_synth_kquants(argc > 2 ? argv[2] : NULL);
    test_dots();
    test_malformed();
    test_mutations();
    test_loader_paths();
    char p[1100];
    snprintf(p, sizeof p, "%s/stories260K/tokenizer.json", sd_test_fixtures());
    test_tokenizer(p, gpath("stories260K-f32.gguf"));
    snprintf(p, sizeof p, "%s/tokenizer/tiny_bytelevel.json", sd_test_fixtures());
    test_tokenizer(p, gpath("qwen2-tok-f32.gguf"));
    test_vocab_corpus();
    return sd_test_finish("test_gguf");
}
