// test_gguf_quant.c: the CPU forward pass on GGUF weights kept in their stored type (sd_wmat views into
// the mapping, sd_matmul_w) against the same file dequantized to f32 at load (gguf_dequant), for Q8_0,
// Q4_0, Q4_K, Q5_K and Q6_K. argv[1]: the build's GGUF fixtures (tools/st2gguf.py), argv[2]: python3.
//  - Every weight matrix of the model, through sd_matmul_w on fresh random activations, against the
//    dequantized f32 matrix in double: each output within the activation rounding bound
//    sum_i |w_i| d_b(i) / 2 (d_b the 8-bit step of x's block: Q8_0 blocks of 32, Q8_K blocks of 256).
//    This checks each view's data, type, shape, the llama q/k row permutation and the expert slicing.
//  - sd_quant_dot_n (a weight row against up to 4 activation rows, the integer path's kernel) ==
//    sd_quant_dot bit for bit, AVX2 and scalar; the embedding gather returns the dequantized rows bit for
//    bit; 2 threads == 1 thread, and for llama (every matmul quantized) token-by-token == prefill in
//    batches below the panel threshold, bit for bit.
//  - Logits of fresh random token ids, prefill in batches below the panel threshold (integer path): rel
//    L2 within ACT_AMP x the activation quantizer's relative rms error (measured here for each block
//    size), top-1 agreement; in one batch (panel path): within 1e-5 of the f32 load.
//  - The AVX2 dequantizer == the scalar one bit for bit; the panel path (batches >= the threshold) against
//    the dequantized matrix times the unquantized activations in double, within 2e-6 of sum |w x|, for
//    every supported block type, with row counts spanning several panels; below the threshold each output
//    is sd_quant_dot (+ bias) bit for bit; repeated products are identical.
//  - Memory: owned (malloc'd) weight bytes and all weight bytes against the f32 load.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dtype.h"
#include "model.h"
#include "ops_cpu.h"
#include "quant.h"
#include "session.h"
#include "synth_model.h"
#include "test_util.h"
#include "test_util_engine.h"
#include "test_util_synth.h"

static const char *gdir;
static uint64_t rng_state;

static uint64_t rnd64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static float rndn(void)
{
    double u = ((double)(rnd64() >> 11) + 1.0) / 9007199254740993.0, v = (double)(rnd64() >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

// Relative rms error of the activation quantizer paired with weight type t, on Gaussian rows.
static double act_rel_rms(enum sd_qtype t)
{
    enum { N = 4096 };
    static float x[N];
    static uint8_t buf[N / 256 * sizeof(struct sd_q8k_block) + N / 32 * sizeof(struct sd_q8_block)];
    for (int i = 0; i < N; i++)
        x[i] = rndn();
    sd_quant_act(t, x, N, buf);
    double e2 = 0, r2 = 0;
    for (int i = 0; i < N; i++) {
        double xq;
        if (t == SD_Q_Q8_0 || t == SD_Q_Q4_0) {
            const struct sd_q8_block *b = (const struct sd_q8_block *)buf;
            xq = (double)b[i / 32].d * b[i / 32].qs[i % 32];
        } else {
            const struct sd_q8k_block *b = (const struct sd_q8k_block *)buf;
            xq = (double)b[i / 256].d * b[i / 256].qs[i % 256];
        }
        e2 += (xq - x[i]) * (xq - x[i]);
        r2 += (double)x[i] * x[i];
    }
    return sqrt(e2 / r2);
}

// ------------------------------------------------------------------------------------------------ dot_n

// Random valid blocks: random bytes with small f16 scales (scale bytes of Q4_K/Q5_K at 0-3, Q6_K at 208).
static void rand_row(enum sd_qtype t, uint8_t *w, size_t bytes)
{
    size_t bb = sd_qtype_block_bytes(t);
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd64();
    for (size_t o = 0; o < bytes; o += bb) {
        size_t at[2] = {0, t == SD_Q_Q4_K || t == SD_Q_Q5_K ? 2 : 0};
        if (t == SD_Q_Q6_K)
            at[0] = at[1] = 208;
        for (int k = 0; k < 2; k++) { // f16 in [2^-10, 2^-6): exponent 5..8, random mantissa
            uint16_t h = (uint16_t)((5 + rnd64() % 4) << 10 | (rnd64() & 0x3ff));
            w[o + at[k]] = (uint8_t)h;
            w[o + at[k] + 1] = (uint8_t)(h >> 8);
        }
    }
}

static void test_dot_n(void)
{
    const enum sd_qtype types[] = {SD_Q_Q8_0, SD_Q_Q4_0, SD_Q_Q4_K, SD_Q_Q5_K, SD_Q_Q6_K, SD_Q_F16};
    int bad = 0, cases = 0;
    for (int scalar = 0; scalar < 2; scalar++) {
        sd_quant_force_scalar(scalar);
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            enum sd_qtype t = types[ti];
            int64_t K = 512 * (1 + (int64_t)(rnd64() % 3));
            size_t rb = sd_qtype_row_bytes(t, K), ab = sd_quant_act_bytes(t, K);
            uint8_t *w = malloc(rb), *xq = malloc(ab * 7 + 1);
            float *x = malloc(sizeof(float) * (size_t)K * 7), out[7], one;
            rand_row(t, w, rb);
            for (int64_t i = 0; i < K * 7; i++)
                x[i] = rndn();
            for (int j = 0; j < 7 && ab; j++)
                sd_quant_act(t, x + (size_t)j * K, K, xq + (size_t)j * ab);
            for (int n = 1; n <= 7; n++) {
                sd_quant_dot_n(t, w, xq, x, K, n, out);
                for (int j = 0; j < n; j++) {
                    one = sd_quant_dot(t, w, xq + (size_t)j * ab, x + (size_t)j * K, K);
                    cases++;
                    if (memcmp(&one, &out[j], sizeof one) && bad++ < 3)
                        fprintf(stderr, "%s %s n=%d row %d: dot_n %.9g vs dot %.9g\n", sd_qtype_name(t),
                                scalar ? "scalar" : sd_quant_impl(), n, j, out[j], one);
                }
            }
            free(w);
            free(xq);
            free(x);
        }
    }
    sd_quant_force_scalar(0);
    printf("sd_quant_dot_n == sd_quant_dot: %d of %d cases differ\n", bad, cases);
    CHECK(bad == 0 && cases > 0);
}

// ------------------------------------------------------------------------------------------------ dequant

// The AVX2 dequantizer == the scalar reference, bit for bit, on random blocks (F16: every finite bit
// pattern class incl. subnormals and -0; BF16: any bits; odd lengths for the per-element types).
static void test_dequant(void)
{
    const enum sd_qtype types[] = {SD_Q_Q8_0, SD_Q_Q4_0, SD_Q_Q4_K, SD_Q_Q5_K, SD_Q_Q6_K, SD_Q_F16, SD_Q_BF16};
    int bad = 0, cases = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        enum sd_qtype t = types[ti];
        int blk = sd_qtype_block(t);
        int64_t n = blk > 1 ? (int64_t)blk * (8 + (int64_t)(rnd64() % 9)) : 1000 + (int64_t)(rnd64() % 24);
        size_t rb = sd_qtype_row_bytes(t, n);
        uint8_t *w = malloc(rb);
        float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
        for (int rep = 0; rep < 20; rep++) {
            rand_row(t, w, rb);
            if (t == SD_Q_F16)
                for (int64_t i = 0; i < n; i++) { // random bits, exponent 31 (inf/NaN) excluded
                    uint16_t h = (uint16_t)rnd64();
                    if ((h >> 10 & 31) == 31)
                        h &= (uint16_t)~(1u << 14);
                    w[2 * i] = (uint8_t)h;
                    w[2 * i + 1] = (uint8_t)(h >> 8);
                }
            else if (t == SD_Q_BF16)
                for (size_t i = 0; i < rb; i++)
                    w[i] = (uint8_t)rnd64();
            sd_quant_force_scalar(1);
            CHECK(sd_dequantize(t, w, a, n) == SD_OK);
            sd_quant_force_scalar(0);
            CHECK(sd_dequantize(t, w, b, n) == SD_OK);
            cases++;
            if (memcmp(a, b, sizeof(float) * (size_t)n)) {
                int64_t i = 0;
                while (!memcmp(a + i, b + i, sizeof(float)))
                    i++;
                if (bad++ < 3)
                    fprintf(stderr, "%s dequantize %s vs scalar: element %lld %.9g vs %.9g\n", sd_qtype_name(t),
                            sd_quant_impl(), (long long)i, b[i], a[i]);
            }
        }
        free(w);
        free(a);
        free(b);
    }
    printf("dequantize %s == scalar: %d of %d rows differ\n", sd_quant_impl(), bad, cases);
    CHECK(bad == 0 && cases > 0);
}

// ------------------------------------------------------------------------------------------------ panel path

// sd_matmul_w on batches at and above the panel threshold: dequantized f32 panels through sgemm, against
// the dequantized matrix times the unquantized activations in double. Rows are not a multiple of the
// panel and span more than one panel. Below the threshold every output must still be sd_quant_dot + bias
// bit for bit (the integer path, unchanged). The same products again, with a scratch that holds one
// panel only and with one thread, are identical.
static void test_panel(void)
{
    const enum sd_qtype types[] = {SD_Q_Q8_0, SD_Q_Q4_0, SD_Q_Q4_K, SD_Q_Q5_K, SD_Q_Q6_K, SD_Q_F16, SD_Q_BF16};
    int P = sd_matmul_w_panel_min();
    const int Ts[] = {P, P + 1, 65, 300};
    double worst = 0;
    int bad_int = 0, nondet = 0;
    sd_cpu_set_threads(2);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        enum sd_qtype t = types[ti];
        int blk = sd_qtype_block(t) > 1 ? sd_qtype_block(t) : 32;
        int K = blk == 256 ? 256 * (2 + (int)(rnd64() % 2)) : 32 * (7 + (int)(rnd64() % 10)); // 224..512
        // odd: no panel size (a multiple of 16) divides it; above 2 of the largest panels
        int pr = sd_matmul_w_panel_rows(K), R = (2 * pr + 1 + (int)(rnd64() % (uint64_t)(pr - 1))) | 1;
        CHECK(pr % 16 == 0 && R % 16 != 0 && R > 2 * pr);
        size_t rb = sd_qtype_row_bytes(t, K);
        uint8_t *w = malloc(rb * (size_t)R);
        if (t == SD_Q_F16 || t == SD_Q_BF16) {
            for (size_t i = 0; i < (size_t)R * K; i++) {
                uint16_t h = t == SD_Q_F16 ? sd_f32_to_f16(0.05f * rndn()) : sd_f32_to_bf16(0.05f * rndn());
                w[2 * i] = (uint8_t)h;
                w[2 * i + 1] = (uint8_t)(h >> 8);
            }
        } else {
            rand_row(t, w, rb * (size_t)R);
        }
        struct sd_wmat m = {.data = w, .type = t, .rows = R, .cols = K};
        float *wf = malloc(sizeof(float) * (size_t)R * K), *bias = malloc(sizeof(float) * R);
        for (int r = 0; r < R; r++) {
            sd_wmat_row(&m, r, wf + (size_t)r * K);
            bias[r] = rndn();
        }
        int Tmax = 300;
        float *x = malloc(sizeof(float) * (size_t)Tmax * K), *y = malloc(sizeof(float) * (size_t)Tmax * R),
              *y2 = malloc(sizeof(float) * (size_t)Tmax * R);
        sd_cpu_set_threads(1);
        size_t sb1 = sd_matmul_w_scratch(t, Tmax, K); // one panel
        sd_cpu_set_threads(2);
        size_t sb = sd_matmul_w_scratch(t, Tmax, K);
        void *scr = malloc(sb);
        CHECK(sb > sb1);
        for (size_t ci = 0; ci < sizeof Ts / sizeof Ts[0]; ci++) {
            int T = Ts[ci], Rc = ci == 3 ? 203 : R; // 203 rows: 2 panels, x cut into row chunks too
            struct sd_wmat mv = m;
            mv.rows = Rc;
            const float *bb = ci == 1 ? bias : NULL;
            for (size_t i = 0; i < (size_t)T * K; i++)
                x[i] = rndn() * (i % 7 == 0 ? 3.0f : 1.0f);
            sd_matmul_w(y, x, &mv, bb, T, scr, sb);
            sd_matmul_w(y2, x, &mv, bb, T, scr, sb);
            nondet += memcmp(y, y2, sizeof(float) * (size_t)T * Rc) != 0;
            sd_matmul_w(y2, x, &mv, bb, T, scr, sb1); // 2 threads, scratch for one panel: one thread
            nondet += memcmp(y, y2, sizeof(float) * (size_t)T * Rc) != 0;
            sd_cpu_set_threads(1);
            sd_matmul_w(y2, x, &mv, bb, T, scr, sb);
            sd_cpu_set_threads(2);
            nondet += memcmp(y, y2, sizeof(float) * (size_t)T * Rc) != 0;
            long bad = 0;
            double cw = 0;
            for (int tt = 0; tt < T; tt++)
                for (int r = 0; r < Rc; r++) {
                    const float *wr = wf + (size_t)r * K, *xt = x + (size_t)tt * K;
                    double ref = bb ? bb[r] : 0, absum = fabs(ref);
                    for (int k = 0; k < K; k++) {
                        ref += (double)wr[k] * xt[k];
                        absum += fabs((double)wr[k] * xt[k]);
                    }
                    double e = fabs(y[(size_t)tt * Rc + r] - ref) / (absum + 1e-30);
                    cw = fmax(cw, e);
                    if (!(e <= 2e-6) && bad++ < 2)
                        fprintf(stderr, "panel %s T=%d K=%d R=%d row %d tok %d: %.9g vs %.9g (rel %.3g)\n",
                                sd_qtype_name(t), T, K, Rc, r, tt, y[(size_t)tt * Rc + r], ref, e);
                }
            CHECK_MSG(bad == 0, "panel path %s T=%d: %ld outputs beyond 2e-6 of sum |w x|", sd_qtype_name(t), T, bad);
            printf("panel %-4s K=%3d R=%4d (panels of <= %4d) T=%3d%s: worst |error| / sum|w x| %.3g\n",
                   sd_qtype_name(t), K, Rc, pr, T, bb ? " +bias" : "", cw);
            worst = fmax(worst, cw);
        }
        // one below the threshold: the integer path, each output sd_quant_dot + bias bit for bit
        int T = P - 1;
        size_t ab = sd_quant_act_bytes(t, K);
        uint8_t *xq = malloc(ab ? ab : 1);
        sd_matmul_w(y, x, &m, bias, T, scr, sb);
        for (int tt = 0; tt < T; tt++) {
            if (ab)
                sd_quant_act(t, x + (size_t)tt * K, K, xq);
            for (int r = 0; r < R; r++) {
                float one = sd_quant_dot(t, w + (size_t)r * rb, xq, x + (size_t)tt * K, K) + bias[r];
                if (memcmp(&one, &y[(size_t)tt * R + r], sizeof one) && bad_int++ < 3)
                    fprintf(stderr, "integer path %s T=%d row %d tok %d: %.9g vs sd_quant_dot %.9g\n",
                            sd_qtype_name(t), T, r, tt, y[(size_t)tt * R + r], one);
            }
        }
        free(xq);
        free(w);
        free(wf);
        free(bias);
        free(x);
        free(y);
        free(y2);
        free(scr);
    }
    sd_cpu_set_threads(1);
    printf("panel path (T >= %d): worst |error| / sum|w x| %.3g; below it: %d outputs differ from sd_quant_dot; "
           "%d products differ on repeating them (again, with scratch for one panel, with 1 thread)\n",
           P, worst, bad_int, nondet);
    CHECK(bad_int == 0);
    CHECK(nondet == 0);
}

// ------------------------------------------------------------------------------------------------ matrices

struct mstats {
    int n_mats, n_quant, n_bad;
    double worst; // largest |error| / bound seen
    int seen[SD_Q_TYPE_LIMIT];
};

// One matrix: q (as loaded) against f (the f32 load of the same tensor) on T random activation rows.
// count: this view is the first of its GGUF tensor (experts: expert 0 of the 3-D tensor).
static void check_mat(const char *name, const struct sd_wmat *q, const struct sd_wmat *f, int count, struct mstats *st)
{
    if (!q->data && !f->data)
        return;
    CHECK_MSG(q->data && f->data && f->type == SD_Q_F32, "%s: present in one load only", name);
    CHECK_MSG(q->rows == f->rows && q->cols == f->cols, "%s: %dx%d vs %dx%d", name, q->rows, q->cols, f->rows, f->cols);
    if (!q->data || !f->data || f->type != SD_Q_F32 || q->rows != f->rows || q->cols != f->cols)
        return;
    enum { T = 3 };
    int R = q->rows, K = q->cols;
    float *x = malloc(sizeof(float) * (size_t)T * K), *y = malloc(sizeof(float) * (size_t)T * R);
    size_t sb = sd_matmul_w_scratch(q->type, T, K);
    void *scr = malloc(sb + 1);
    int B = q->type == SD_Q_Q8_0 || q->type == SD_Q_Q4_0 ? 32 : 256, quant = q->type != SD_Q_F32;
    int act = quant && q->type != SD_Q_F16 && q->type != SD_Q_BF16; // 8-bit activations
    for (int i = 0; i < T * K; i++)
        x[i] = rndn() * (i % 7 == 0 ? 3.0f : 1.0f);
    sd_matmul_w(y, x, q, NULL, T, scr, sb);
    const float *W = f->data;
    long bad = 0;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * K;
        for (int r = 0; r < R; r++) {
            const float *w = W + (size_t)r * K;
            double ref = 0, absum = 0, bound = 0;
            for (int b0 = 0; b0 < K; b0 += act ? B : K) {
                int n = act ? B : K;
                double amax = 0, wabs = 0;
                for (int i = b0; i < b0 + n; i++) {
                    ref += (double)w[i] * xt[i];
                    absum += fabs((double)w[i] * xt[i]);
                    amax = fmax(amax, fabs(xt[i]));
                    wabs += fabs(w[i]);
                }
                if (act)
                    bound += wabs * (amax / 127 * (1 + 1e-6)) / 2;
            }
            bound += 2e-6 * absum + 1e-30; // float accumulation
            double e = fabs(y[(size_t)t * R + r] - ref);
            st->worst = fmax(st->worst, e / bound);
            if (!(e <= bound) && bad++ < 2)
                fprintf(stderr, "%s (%s) row %d tok %d: %.9g vs %.9g, error %.3g > bound %.3g\n", name,
                        sd_qtype_name(q->type), r, t, y[(size_t)t * R + r], ref, e, bound);
        }
    }
    st->n_bad += bad != 0;
    st->n_mats++;
    st->n_quant += quant && count;
    st->seen[q->type] = 1;
    free(x);
    free(y);
    free(scr);
}

static void check_mats(const struct sd_model *q, const struct sd_model *f, struct mstats *st)
{
    check_mat("token_embd", &q->embed, &f->embed, 1, st);
    check_mat("output", &q->lm_head, &f->lm_head, q->lm_head.data != q->embed.data, st);
    // the gather: dequantized rows, bit for bit
    int H = q->cfg.hidden_size, same = 1;
    float *a = malloc(sizeof(float) * H), *b = malloc(sizeof(float) * H);
    for (int k = 0; k < 8; k++) {
        int r = (int)(rnd64() % (uint64_t)q->cfg.vocab_size);
        sd_wmat_row(&q->embed, r, a);
        sd_wmat_row(&f->embed, r, b);
        same &= !memcmp(a, b, sizeof(float) * H);
    }
    CHECK_MSG(same, "embedding rows gathered from the quantized view differ from the dequantized ones");
    free(a);
    free(b);
    char n[96];
    for (int il = 0; il < q->cfg.n_layers; il++) {
        const struct sd_layer_weights *Q = &q->layers[il], *F = &f->layers[il];
#define MC(field, count)                                                                                               \
    do {                                                                                                               \
        snprintf(n, sizeof n, "blk.%d.%s", il, #field);                                                                \
        check_mat(n, &Q->field, &F->field, count, st);                                                                 \
    } while (0)
#define M(field) MC(field, 1)
        M(wq);
        M(wk);
        M(wv);
        M(wo);
        M(wq_a);
        M(wq_b);
        M(wq_full);
        M(wkv_a);
        M(idx_wq_b);
        M(idx_wk);
        M(idx_wproj);
        M(w_gate);
        M(w_up);
        M(w_down);
        M(router);
        M(sh_gate);
        M(sh_up);
        M(sh_down);
        CHECK(Q->is_moe == F->is_moe);
        if (Q->is_moe && F->is_moe)
            for (int e = 0; e < q->cfg.n_routed_experts; e++) {
                MC(exp_gate[e], e == 0);
                MC(exp_up[e], e == 0);
                MC(exp_down[e], e == 0);
            }
#undef M
#undef MC
    }
}

// ------------------------------------------------------------------------------------------------ logits

// Logits of a continuous model are within this multiple of the activation quantizer's relative rms error.
// The noise each 8-bit activation adds is of that relative size at every matmul input; the fixtures here
// amplify relative weight noise about 4x into the logits (test_gguf's BF16 calibration: 0.00696 / 0.00166
// for llama) and activation noise likewise (measured here: 3.4-5.5x over many seeds; K-quants' blocks of
// 256 see heavier tails than the Gaussian rows eps is measured on); 10 leaves a 1.8x margin. A wrong block
// layout, scale or row gives errors of order 1.
#define ACT_AMP 10.0

// mode: 1 continuous model (logits bounded), 0 near-tie routing/top-k (matrices, memory, finiteness only)
static void check_file(const char *path, enum sd_qtype want, int mode, double mem_ratio, int exact_batch)
{
    const char *file = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    struct sd_model *q = NULL, *f = NULL;
    struct sd_err err = {0};
    struct sd_model_load_params dq = {.gguf_dequant = 1};
    if (sd_model_load(path, &q, &err) != SD_OK || sd_model_load_ex(path, &dq, &f, &err) != SD_OK) {
        CHECK_MSG(0, "%s: %s", file, err.msg);
        sd_model_free(q);
        return;
    }
    CHECK_MSG(q->n_quant_mats > 0 && f->n_quant_mats == 0 && !q->gguf_dequant && f->gguf_dequant,
              "%s: %d quantized matrices (dequantized load: %d)", file, q->n_quant_mats, f->n_quant_mats);
    struct mstats ms = {0};
    check_mats(q, f, &ms);
    CHECK_MSG(ms.n_bad == 0, "%s: %d of %d matrices outside the activation rounding bound", file, ms.n_bad, ms.n_mats);
    CHECK_MSG(ms.seen[want], "%s: no %s matrix was checked", file, sd_qtype_name(want));
    CHECK_MSG(ms.n_quant == q->n_quant_mats, "%s: %d quantized tensors checked, the loader reports %d", file,
              ms.n_quant, q->n_quant_mats);
    size_t bq = q->weight_bytes_owned + q->weight_bytes_mapped, bf = f->weight_bytes_owned + f->weight_bytes_mapped;
    double ratio = (double)bq / (double)bf;
    printf("%-20s %3d matrices (%d kept as stored) within bound (worst %.2f of it); weights %zu B (owned %zu) vs "
           "f32 %zu B (owned %zu): %.3f\n",
           file, ms.n_mats, ms.n_quant, ms.worst, bq, q->weight_bytes_owned, bf, f->weight_bytes_owned, ratio);
    CHECK_MSG(ratio <= mem_ratio, "%s: quantized weights take %.3f of the f32 load (bound %.3f)", file, ratio,
              mem_ratio);
    CHECK_MSG(q->weight_bytes_owned * 5 <= f->weight_bytes_owned, "%s: owned %zu B vs f32 load %zu B", file,
              q->weight_bytes_owned, f->weight_bytes_owned);

    // Prefill in one batch of 64 (the panel path: exactly dequantized weights through sgemm, like the f32
    // load) and in batches below the panel threshold (the integer path, 8-bit activations).
    int n = 64, V = q->cfg.vocab_size, Ti = sd_matmul_w_panel_min() - 1;
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(rnd64() % (uint64_t)V);
    struct sd_session_params p2 = {.n_threads = 2, .max_batch = 256}, p1 = {.n_threads = 1, .max_batch = 256};
    struct sd_session_params pi = {.n_threads = 2, .max_batch = Ti}, pt = {.n_threads = 2, .max_batch = 1};
    float *a = sd_test_logits(q, ids, n, &p2), *a1 = sd_test_logits(q, ids, n, &p1);
    float *b = sd_test_logits(f, ids, n, &p2);
    float *ai = sd_test_logits(q, ids, n, &pi), *ab = exact_batch ? sd_test_logits(q, ids, n, &pt) : NULL;
    CHECK(a && a1 && b && ai && (ab || !exact_batch));
    if (a && a1 && b && ai) {
        CHECK_MSG(!memcmp(a, a1, sizeof(float) * (size_t)n * V), "%s: 2 threads differ from 1", file);
        if (ab)
            CHECK_MSG(!memcmp(ai, ab, sizeof(float) * (size_t)n * V),
                      "%s: token by token differs from prefill in batches of %d", file, Ti);
        int finite = 1, top1 = 0;
        for (size_t i = 0; i < (size_t)n * V; i++)
            finite &= isfinite(a[i]) && isfinite(ai[i]);
        CHECK_MSG(finite, "%s: non-finite logits", file);
        for (int t = 0; t < n; t++)
            top1 += sd_test_argmax(ai + (size_t)t * V, V) == sd_test_argmax(b + (size_t)t * V, V);
        double e = sd_test_rel_l2(ai, b, (size_t)n * V), eps = act_rel_rms(want), bound = ACT_AMP * eps;
        double ep = sd_test_rel_l2(a, b, (size_t)n * V);
        if (mode) {
            printf("%-20s logits (batches of %d) rel_l2 %.4g (bound %.4g = %g x activation rms error %.4g, %.2f of "
                   "it)  top1 %d/%d; one batch (panels) rel_l2 %.3g\n",
                   file, Ti, e, bound, ACT_AMP, eps, e / eps, top1, n, ep);
            CHECK_MSG(e <= bound, "%s: logits rel L2 %.4g > %.4g", file, e, bound);
            // random-weight fixtures have close runners-up: measured 35-39 of 40 agree
            CHECK_MSG(top1 * 5 >= n * 4, "%s: top-1 agrees at %d of %d positions", file, top1, n);
            // the same f32 weights as the dequantized load through the same sgemm: f32 rounding only
            CHECK_MSG(ep <= 1e-5, "%s: one-batch (panel) logits rel L2 %.3g from the f32 load", file, ep);
        } else {
            printf("%-20s logits (batches of %d) rel_l2 %.4g  top1 %d/%d; one batch rel_l2 %.3g (near-tie MoE "
                   "routing / DSA top-k: finite only)\n",
                   file, Ti, e, top1, n, ep);
        }
    }
    free(ai);
    free(a);
    free(a1);
    free(ab);
    free(b);
    free(ids);
    sd_model_free(q);
    sd_model_free(f);
}

static const enum sd_qtype synth_qt[] = {SD_Q_Q8_0, SD_Q_Q4_0, SD_Q_Q4_K, SD_Q_Q5_K, SD_Q_Q6_K};
// stored bytes per weight / 4, plus f32 norms, kv_b and the 2-D k_b/v_b made f32
static const double synth_mem[] = {0.32, 0.20, 0.20, 0.23, 0.26};

static void check_synth(const char *model_dir, const char *gguf, int i, void *ctx)
{
    (void)model_dir, (void)ctx;
    check_file(gguf, synth_qt[i], 1, synth_mem[i], 0);
}

// A synthetic DeepSeek-V3.2 of width 256 with dense MLPs and index_topk above the sequence (no routing or
// top-k choices to flip), converted to each type by tools/st2gguf.py.
static void test_synth(const char *python)
{
    struct sd_synth_shape sh = {.vocab = 256,
                                .hidden = 256,
                                .layers = 2,
                                .first_dense = 2,
                                .heads = 4,
                                .q_lora = 256,
                                .kv_lora = 64,
                                .nope = 32,
                                .rope = 32,
                                .v = 64,
                                .experts = 8,
                                .experts_per_tok = 2,
                                .n_group = 1,
                                .topk_group = 1,
                                .moe_inter = 64,
                                .shared = 1,
                                .inter = 512,
                                .index_heads = 4,
                                .index_dim = 64,
                                .index_topk = 64,
                                .max_pos = 4096};
    static const char *const types[] = {"q8_0", "q4_0", "q4_k", "q5_k", "q6_k"};
    sd_test_synth_gguf(python, &sh, rnd64(), types, 5, check_synth, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_gguf_quant GGUF_DIR [PYTHON3]\n");
        return 2;
    }
    gdir = argv[1];
    char p[1100];
    struct stat sb;
    snprintf(p, sizeof p, "%s/llama-q8_0.gguf", gdir);
    if (stat(p, &sb) != 0) {
        printf("SKIP: %s not found (the GGUF fixtures are built by tools/st2gguf.py; python3 missing?)\n", p);
        return 77;
    }
    rng_state = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 20 ^ 0x2545f4914f6cdd1dull;
    printf("seed %llu, dot products: %s\n", (unsigned long long)rng_state, sd_quant_impl());
    // llama: q/k rows permuted at load (a row-permuted copy in the stored type)
    check_file(p, SD_Q_Q8_0, 1, 0.40, 1);
    snprintf(p, sizeof p, "%s/llama-q4_0.gguf", gdir);
    check_file(p, SD_Q_Q4_0, 1, 0.30, 1);
    // MLA with split k_b/v_b, MoE experts sliced from 3-D tensors, the indexer (near-tie fixture)
    snprintf(p, sizeof p, "%s/dsv32_fp8-q4_k.gguf", gdir);
    check_file(p, SD_Q_Q4_K, 0, 0.30, 0);
    snprintf(p, sizeof p, "%s/dsv32_fp8-q6_k.gguf", gdir);
    check_file(p, SD_Q_Q6_K, 0, 0.35, 0);
    test_synth(argc > 2 ? argv[2] : NULL);
    test_dot_n();
    test_dequant();
    test_panel();
    return sd_test_finish("test_gguf_quant");
}
