// bench_gguf.c: a GGUF model's CPU forward with its weight matrices kept as stored (quantized matmuls,
// the default) vs dequantized to f32 at load (sd_model_load_params.gguf_dequant), both loaded in one
// process: weight bytes (owned = malloc'd, mapped = read in place from the file), prefill and decode
// tokens/s (best of --reps, the two loads alternating), and how far the quantized forward's prefill
// logits are from the f32 one's (rel L2, top-1 agreement). A program, not a test.
// --sweep: instead, every weight matrix of the model once through sd_matmul_w (one expert per MoE tensor)
// for batches of T rows, on the integer path and on the dequantized-panel path (ops_cpu.h), to place
// SD_MATMUL_W_PANEL_T.
//   bench_gguf MODEL.gguf [--threads N] [--prefill P] [--decode D] [--reps R] [--sweep]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "ops_cpu.h"
#include "quant.h"
#include "sd_clock.h"
#include "session.h"

struct run {
    double prefill_tps, decode_tps;
};

// Prefill P tokens, then decode D one at a time. logits: [P][vocab] of the prefill when non-NULL.
static int measure(const struct sd_model *m, const int32_t *ids, int P, int D, int threads, float *logits,
                   struct run *r)
{
    struct sd_session_params sp = {.n_ctx = P + D, .n_threads = threads, .max_batch = P};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    float *last = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    int rc = -1;
    if (!last || sd_session_new(m, &sp, &s, &err) != SD_OK)
        goto out;
    double t0 = sd_now_s();
    if (sd_session_eval(s, ids, P, logits ? logits : last, logits != NULL, &err) != SD_OK)
        goto out;
    double t1 = sd_now_s();
    for (int i = 0; i < D; i++)
        if (sd_session_eval(s, ids + P + i, 1, last, 0, &err) != SD_OK)
            goto out;
    double t2 = sd_now_s();
    r->prefill_tps = P / (t1 - t0);
    r->decode_tps = D > 0 ? D / (t2 - t1) : 0;
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "bench_gguf: %s\n", err.msg[0] ? err.msg : "out of memory");
    sd_session_free(s);
    free(last);
    return rc;
}

// The model's weight matrices, one per tensor (experts: expert 0). Returns how many (<= cap).
static int model_mats(const struct sd_model *m, const struct sd_wmat **out, int cap)
{
    int n = 0;
    if (n < cap)
        out[n++] = &m->lm_head;
    for (int il = 0; il < m->cfg.n_layers; il++) {
        const struct sd_layer_weights *L = &m->layers[il];
        const struct sd_wmat *v[] = {&L->wq,      &L->wk,     &L->wv,       &L->wo,      &L->wq_a,      &L->wq_b,
                                     &L->wq_full, &L->wkv_a,  &L->idx_wq_b, &L->idx_wk,  &L->idx_wproj, &L->w_gate,
                                     &L->w_up,    &L->w_down, &L->router,   &L->sh_gate, &L->sh_up,     &L->sh_down};
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
            if (v[i]->data && n < cap)
                out[n++] = v[i];
        if (L->is_moe && L->exp_gate && n + 3 <= cap) {
            out[n++] = &L->exp_gate[0];
            out[n++] = &L->exp_up[0];
            out[n++] = &L->exp_down[0];
        }
    }
    return n;
}

// Microseconds for every matrix once at batch T (best of reps), with the panel threshold at panel_min.
static double sweep_once(const struct sd_wmat **mats, int nm, const float *x, float *y, void *scr, size_t sb,
                         int T, int panel_min, int reps)
{
    sd_matmul_w_set_panel_min(panel_min);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = sd_now_s();
        for (int i = 0; i < nm; i++)
            sd_matmul_w(y, x, mats[i], NULL, T, scr, sb);
        double dt = sd_now_s() - t0;
        best = dt < best ? dt : best;
    }
    sd_matmul_w_set_panel_min(0);
    return best * 1e6;
}

static int sweep(const struct sd_model *m, const struct sd_model *f, int reps)
{
    static const int Ts[] = {1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32, 48, 64, 128, 256, 512};
    enum { NT = sizeof Ts / sizeof Ts[0], CAP = 1024 };
    const struct sd_wmat *mats[CAP], *fmats[CAP];
    int nm = model_mats(m, mats, CAP), kmax = 0, nmax = 0;
    if (model_mats(f, fmats, CAP) != nm) {
        fprintf(stderr, "bench_gguf: the two loads differ in their matrices\n");
        return 1;
    }
    size_t scr = 0;
    for (int i = 0; i < nm; i++) {
        kmax = mats[i]->cols > kmax ? mats[i]->cols : kmax;
        nmax = mats[i]->rows > nmax ? mats[i]->rows : nmax;
        size_t b = sd_matmul_w_scratch(mats[i]->type, Ts[NT - 1], mats[i]->cols);
        scr = b > scr ? b : scr;
    }
    float *x = malloc(sizeof(float) * (size_t)Ts[NT - 1] * kmax), *y = malloc(sizeof(float) * (size_t)Ts[NT - 1] * nmax);
    void *s = malloc(scr + 1);
    if (!x || !y || !s) {
        fprintf(stderr, "bench_gguf: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)Ts[NT - 1] * kmax; i++)
        x[i] = (float)((i * 2654435761u) % 2001u) / 1000.0f - 1.0f;
    printf("%d matrices, best of %d; microseconds for all of them once (per row of the batch); f32: the "
           "dequantized load (sgemm)\n",
           nm, reps);
    printf("%5s %22s %22s %22s %8s %8s\n", "T", "integer", "panel", "f32", "int/pan", "f32/pan");
    for (int i = 0; i < NT; i++) {
        int T = Ts[i];
        sweep_once(mats, nm, x, y, s, scr, T, 1 << 30, 1); // warm
        double a = sweep_once(mats, nm, x, y, s, scr, T, 1 << 30, reps);
        double b = T >= 2 ? sweep_once(mats, nm, x, y, s, scr, T, 2, reps) : 0;
        double c = sweep_once(fmats, nm, x, y, s, scr, T, 2, reps);
        printf("%5d %12.1f (%7.1f) %12.1f (%7.1f) %12.1f (%7.1f) %8.2f %8.2f\n", T, a, a / T, b, b / T, c, c / T,
               b > 0 ? a / b : 0, b > 0 ? c / b : 0);
    }
    free(x);
    free(y);
    free(s);
    return 0;
}

static void describe(const char *what, const struct sd_model *m)
{
    size_t total = m->weight_bytes_owned + m->weight_bytes_mapped;
    printf("%-22s weights %8.2f MiB (owned %8.2f MiB, mapped %8.2f MiB), %d matrices kept as stored\n", what,
           (double)total / (1 << 20), (double)m->weight_bytes_owned / (1 << 20),
           (double)m->weight_bytes_mapped / (1 << 20), m->n_quant_mats);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int threads = 0, P = 128, D = 32, reps = 3, do_sweep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prefill") && i + 1 < argc)
            P = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc)
            D = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sweep"))
            do_sweep = 1;
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            path = NULL, i = argc;
    }
    if (!path || P < 1 || D < 0 || reps < 1) {
        fprintf(stderr, "usage: bench_gguf MODEL.gguf [--threads N] [--prefill P] [--decode D] [--reps R] [--sweep]\n");
        return 2;
    }
    struct sd_model *q = NULL, *f = NULL;
    struct sd_err err = {0};
    struct sd_model_load_params dq = {.gguf_dequant = 1};
    double t0 = sd_now_s();
    if (sd_model_load(path, &q, &err) != SD_OK) {
        fprintf(stderr, "bench_gguf: %s\n", err.msg);
        return 1;
    }
    double t1 = sd_now_s();
    if (sd_model_load_ex(path, &dq, &f, &err) != SD_OK) {
        fprintf(stderr, "bench_gguf: %s\n", err.msg);
        sd_model_free(q);
        return 1;
    }
    double t2 = sd_now_s();
    if (!q->gguf) {
        fprintf(stderr, "bench_gguf: %s is not a GGUF model\n", path);
        sd_model_free(q);
        sd_model_free(f);
        return 2;
    }
    sd_cpu_set_threads(threads);
    const struct sd_config *c = &q->cfg;
    int V = c->vocab_size;
    printf("model %s: %s, hidden %d, %d layers, vocab %d; %d threads, dot products %s; prefill %d tokens, "
           "decode %d, best of %d\n",
           path, c->arch_name, c->hidden_size, c->n_layers, V, sd_cpu_threads(), sd_quant_impl(), P, D, reps);
    if (do_sweep) {
        int rc = sweep(q, f, reps);
        sd_model_free(q);
        sd_model_free(f);
        return rc;
    }
    describe("as stored (default)", q);
    describe("dequantized to f32", f);
    printf("load: as stored %.3f s, dequantized %.3f s\n", t1 - t0, t2 - t1);
    printf("matmul scratch of a %d-token session: as stored %.2f MiB, dequantized %.2f MiB\n", P,
           (double)sd_model_act_scratch_bytes(q, P) / (1 << 20), (double)sd_model_act_scratch_bytes(f, P) / (1 << 20));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(P + D));
    float *lq = malloc(sizeof(float) * (size_t)P * V), *lf = malloc(sizeof(float) * (size_t)P * V);
    if (!ids || !lq || !lf) {
        fprintf(stderr, "bench_gguf: out of memory\n");
        return 1;
    }
    for (int i = 0; i < P + D; i++)
        ids[i] = (int32_t)((i * 2654435761u + 12345u) % (unsigned)V);
    struct run bq = {0}, bf = {0};
    for (int r = 0; r < reps; r++) {
        struct run a, b;
        if (measure(q, ids, P, D, threads, r == 0 ? lq : NULL, &a) ||
            measure(f, ids, P, D, threads, r == 0 ? lf : NULL, &b))
            return 1;
        if (a.prefill_tps > bq.prefill_tps)
            bq.prefill_tps = a.prefill_tps;
        if (a.decode_tps > bq.decode_tps)
            bq.decode_tps = a.decode_tps;
        if (b.prefill_tps > bf.prefill_tps)
            bf.prefill_tps = b.prefill_tps;
        if (b.decode_tps > bf.decode_tps)
            bf.decode_tps = b.decode_tps;
    }
    double e2 = 0, r2 = 0;
    int top1 = 0;
    for (int t = 0; t < P; t++) {
        const float *a = lq + (size_t)t * V, *b = lf + (size_t)t * V;
        int ia = 0, ib = 0;
        for (int j = 0; j < V; j++) {
            e2 += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
            r2 += (double)b[j] * b[j];
            ia = a[j] > a[ia] ? j : ia;
            ib = b[j] > b[ib] ? j : ib;
        }
        top1 += ia == ib;
    }
    size_t wq = q->weight_bytes_owned + q->weight_bytes_mapped, wf = f->weight_bytes_owned + f->weight_bytes_mapped;
    printf("\n%-22s %14s %14s %12s\n", "", "prefill", "decode", "weights");
    printf("%-22s %10.1f t/s %10.1f t/s %8.2f MiB\n", "as stored", bq.prefill_tps, bq.decode_tps,
           (double)wq / (1 << 20));
    printf("%-22s %10.1f t/s %10.1f t/s %8.2f MiB\n", "dequantized f32", bf.prefill_tps, bf.decode_tps,
           (double)wf / (1 << 20));
    printf("%-22s %13.2fx %13.2fx %11.3fx\n", "as stored / f32", bq.prefill_tps / bf.prefill_tps,
           bq.decode_tps / bf.decode_tps, (double)wq / (double)wf);
    printf("prefill logits, as stored vs f32: rel L2 %.4g, top-1 agreement %d/%d\n", sqrt(e2 / (r2 > 0 ? r2 : 1)), top1,
           P);
    free(ids);
    free(lq);
    free(lf);
    sd_model_free(q);
    sd_model_free(f);
    return 0;
}
