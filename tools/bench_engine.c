// bench_engine.c: CPU engine benchmark (a program, not a test). Builds a DeepSeek-V3.2-shaped model
// of realistic width with random weights, then at several context depths L times prefill and decode
// with DSA (index_topk 2048) and with dense attention on the same weights in the same run, printing
// tokens/s and the DSA/dense ratio. Also matmul GFLOP/s: OpenBLAS sgemm vs our own loops, and the CPU
// DSA kernels: fp32 and FP8 indexer scores with the AVX2 kernels vs the scalar ones, and top-k per row.
//   bench_engine [--dir DIR] [--threads N] [--ctx 1024,8192,32768] [--prefill P] [--decode D]
// Depths beyond the first are reached by sd_session_debug_fill (random cache content): timings then
// measure the per-token cost of prefill/decode at depth L, which is what grows with L.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "dsa.h"
#include "model.h"
#include "ops_cpu.h"
#include "sd_clock.h"
#include "session.h"
#include "synth_model.h"

struct result {
    double prefill_tps, decode_tps;
};

static int measure(const struct sd_model *m, int L, int P, int D, enum sd_dsa_mode mode, int threads, struct result *r)
{
    struct sd_session_params sp = {.n_ctx = L + D, .n_threads = threads, .max_batch = P, .dsa_mode = mode};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    if (sd_session_new(m, &sp, &s, &err) != SD_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return -1;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(P + D));
    for (int i = 0; i < P + D; i++)
        ids[i] = (int32_t)((i * 2654435761u) % (unsigned)m->cfg.vocab_size);
    float *logits = malloc(sizeof(float) * m->cfg.vocab_size);
    if (L > P && sd_session_debug_fill(s, L - P, 42, &err) != SD_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return -1;
    }
    double t0 = sd_now_s();
    if (sd_session_eval(s, ids, P, logits, 0, &err) != SD_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return -1;
    }
    double t1 = sd_now_s();
    for (int i = 0; i < D; i++)
        if (sd_session_eval(s, ids + P + i, 1, logits, 0, &err) != SD_OK) {
            fprintf(stderr, "bench: %s\n", err.msg);
            return -1;
        }
    double t2 = sd_now_s();
    r->prefill_tps = P / (t1 - t0);
    r->decode_tps = D / (t2 - t1);
    free(ids);
    free(logits);
    sd_session_free(s);
    return 0;
}

static void bench_matmul(int threads)
{
    int shapes[][3] = {{256, 1024, 1024}, {256, 4096, 1024}, {256, 1024, 2816}, {1, 8192, 1024}};
    printf("\nmatmul y[T,N] = x[T,K] w[N,K]^T, fp32, %d threads\n", threads);
    printf("%6s %6s %6s  %12s %12s %8s\n", "T", "N", "K", "sgemm GF/s", "ours GF/s", "ours/blas");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int T = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        float *x = malloc(sizeof(float) * (size_t)T * K), *w = malloc(sizeof(float) * (size_t)N * K);
        float *y = malloc(sizeof(float) * (size_t)T * N);
        for (size_t j = 0; j < (size_t)T * K; j++)
            x[j] = (float)((j * 7919) % 1000) / 1000.0f - 0.5f;
        for (size_t j = 0; j < (size_t)N * K; j++)
            w[j] = (float)((j * 104729) % 1000) / 1000.0f - 0.5f;
        double flop = 2.0 * T * N * K, tb = 1e9, to = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            double a = sd_now_s();
            sd_matmul_ld(y, N, x, K, w, K, T, N, K, 0.0f);
            double b = sd_now_s();
            sd_matmul_noblas(y, N, x, K, w, K, T, N, K, 0.0f);
            double c = sd_now_s();
            if (b - a < tb)
                tb = b - a;
            if (c - b < to)
                to = c - b;
        }
        printf("%6d %6d %6d  %12.1f %12.1f %8.2f\n", T, N, K, flop / tb * 1e-9, flop / to * 1e-9, tb / to);
        free(x);
        free(w);
        free(y);
    }
    if (!sd_cpu_have_blas())
        printf("(built without BLAS: both columns are our loops)\n");
}

// Indexer scores of a 256-query prefill chunk against L keys (causal: query i sees L - 256 + i + 1), AVX2
// kernel vs scalar kernel in the same run, then top-k of every row.
static void bench_dsa_kernels(int threads, int heads, int dim, int topk)
{
    int Ls[] = {4096, 16384, 65536}, nq = 256;
    printf("\nDSA kernels, %d threads: indexer %d heads x %d, %d queries (causal) x L keys; top-%d per row\n", threads,
           heads, dim, nq, topk);
    printf("%8s  %14s %14s %14s %8s  %14s %14s %8s  %16s\n", "L", "scores SIMD", "scores avx2", "scores scalar",
           "ratio", "fp8 avx2", "fp8 scalar", "ratio", "top-k us/row");
    for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++) {
        int L = Ls[li];
        float *q = malloc(sizeof(float) * (size_t)nq * heads * dim), *k = malloc(sizeof(float) * (size_t)L * dim);
        float *w = malloc(sizeof(float) * (size_t)nq * heads), *sc = malloc(sizeof(float) * (size_t)nq * L);
        int *nv = malloc(sizeof(int) * nq);
        int32_t *idx = malloc(sizeof(int32_t) * (size_t)topk), *scr = malloc(sizeof(int32_t) * (size_t)L);
        if (!q || !k || !w || !sc || !nv || !idx || !scr) {
            fprintf(stderr, "bench: out of memory\n");
            return;
        }
        uint32_t r = 12345;
        for (size_t j = 0; j < (size_t)nq * heads * dim; j++)
            q[j] = (float)((r = r * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        for (size_t j = 0; j < (size_t)L * dim; j++)
            k[j] = (float)((r = r * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        for (size_t j = 0; j < (size_t)nq * heads; j++)
            w[j] = (float)((r = r * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        double pairs = 0;
        for (int i = 0; i < nq; i++) {
            nv[i] = L - nq + i + 1;
            pairs += nv[i];
        }
        // The same rows quantized for the FP8 scores (DeepSeek's numerics)
        uint8_t *q8 = malloc((size_t)nq * heads * dim), *k8 = malloc((size_t)L * dim);
        float *qs = malloc(sizeof(float) * (size_t)nq * heads), *ks = malloc(sizeof(float) * (size_t)L);
        if (!q8 || !k8 || !qs || !ks) {
            fprintf(stderr, "bench: out of memory\n");
            return;
        }
        for (int j = 0; j < nq * heads; j++)
            sd_dsa_quant_fp8_row(q + (size_t)j * dim, dim, q8 + (size_t)j * dim, &qs[j]);
        for (int u = 0; u < L; u++)
            sd_dsa_quant_fp8_row(k + (size_t)u * dim, dim, k8 + (size_t)u * dim, &ks[u]);
        double best[5] = {1e9, 1e9, 1e9, 1e9, 1e9}; // SIMD (avx512 or avx2), scalar, fp8 x2, avx2 forced
        for (int rep = 0; rep < 3; rep++) {
            sd_dsa_force_avx2(1);
            double a0 = sd_now_s();
            sd_dsa_index_scores_f32(q, w, nq, heads, dim, k, L, nv, sc, (size_t)L, threads);
            double b0 = sd_now_s() - a0;
            sd_dsa_force_avx2(0);
            best[4] = b0 < best[4] ? b0 : best[4];
            for (int sc_only = 0; sc_only < 2; sc_only++) {
                sd_dsa_force_scalar(sc_only);
                double a = sd_now_s();
                sd_dsa_index_scores_f32(q, w, nq, heads, dim, k, L, nv, sc, (size_t)L, threads);
                double b = sd_now_s();
                if (sd_dsa_index_scores_fp8(q8, qs, w, nq, heads, dim, k8, ks, L, nv, sc, (size_t)L, threads))
                    fprintf(stderr, "bench: fp8 scores failed (out of memory)\n");
                double c = sd_now_s();
                best[sc_only] = b - a < best[sc_only] ? b - a : best[sc_only];
                best[2 + sc_only] = c - b < best[2 + sc_only] ? c - b : best[2 + sc_only];
            }
        }
        free(q8);
        free(k8);
        free(qs);
        free(ks);
        sd_dsa_force_scalar(0);
        sd_dsa_index_scores_f32(q, w, nq, heads, dim, k, L, nv, sc, (size_t)L, threads); // top-k of the fp32 scores
        sd_dsa_force_scalar(0);
        double a = sd_now_s();
        for (int i = 0; i < nq; i++)
            sd_dsa_topk(sc + (size_t)i * L, nv[i], topk, idx, scr);
        double tk = (sd_now_s() - a) / nq;
        double flop = 2.0 * pairs * heads * dim;
        printf("%8d  %9.1f GF/s %9.1f GF/s %9.1f GF/s %7.2fx  %9.1f GF/s %9.1f GF/s %7.2fx  %16.1f\n", L,
               flop / best[0] * 1e-9, flop / best[4] * 1e-9, flop / best[1] * 1e-9, best[1] / best[0],
               flop / best[2] * 1e-9, flop / best[3] * 1e-9, best[3] / best[2], tk * 1e6);
        free(q);
        free(k);
        free(w);
        free(sc);
        free(nv);
        free(idx);
        free(scr);
    }
    printf("(scores kernel on this CPU: %s)\n", sd_dsa_scores_impl());
}

int main(int argc, char **argv)
{
    const char *dir = "/tmp/sparsedoc-bench-model";
    int threads = 0, P = 64, D = 8;
    char ctxs[256] = "1024,8192,32768";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            snprintf(ctxs, sizeof ctxs, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--prefill") && i + 1 < argc)
            P = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc)
            D = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_engine [--dir DIR] [--threads N] [--ctx L1,L2,...] [--prefill P] "
                            "[--decode D]\n");
            return 2;
        }
    }
    struct sd_synth_shape sh = {.vocab = 8192,
                                .hidden = 1024,
                                .layers = 4,
                                .first_dense = 1,
                                .heads = 16,
                                .q_lora = 512,
                                .kv_lora = 512,
                                .nope = 128,
                                .rope = 64,
                                .v = 128,
                                .experts = 8,
                                .experts_per_tok = 2,
                                .n_group = 4,
                                .topk_group = 2,
                                .moe_inter = 512,
                                .shared = 1,
                                .inter = 2816,
                                .index_heads = 16,
                                .index_dim = 128,
                                .index_topk = 2048,
                                .max_pos = 163840};
    char cfgp[4096];
    snprintf(cfgp, sizeof cfgp, "%s/model.safetensors", dir);
    struct stat st;
    if (stat(cfgp, &st) != 0) {
        printf("writing synthetic model to %s ...\n", dir);
        if (sd_synth_write_deepseek(dir, &sh, 1234))
            return 1;
    }
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (sd_model_load(dir, &m, &err) != SD_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    sd_cpu_set_threads(threads);
    printf("model: DeepSeek-V3.2 shape, hidden %d, %d layers (%d dense + %d MoE, %d experts top-%d), %d heads, "
           "kv_lora %d, indexer %dx%d, index_topk %d; %.0f MB of f32 weights on disk; %d threads\n",
           sh.hidden, sh.layers, sh.first_dense, sh.layers - sh.first_dense, sh.experts, sh.experts_per_tok, sh.heads,
           sh.kv_lora, sh.index_heads, sh.index_dim, sh.index_topk,
           (double)(stat(cfgp, &st) == 0 ? st.st_size : 0) / 1e6, sd_cpu_threads());
    printf("prefill: %d tokens appended at depth L; decode: %d tokens at depth L\n\n", P, D);
    printf("%8s  %14s %14s %7s  %14s %14s %7s\n", "L", "prefill DSA", "prefill dense", "ratio", "decode DSA",
           "decode dense", "ratio");
    char *save = NULL;
    for (char *tok = strtok_r(ctxs, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int L = atoi(tok);
        struct result a, b;
        if (measure(m, L, P, D, SD_DSA_SPARSE, threads, &a) || measure(m, L, P, D, SD_DSA_DENSE, threads, &b))
            return 1;
        printf("%8d  %10.1f t/s %10.1f t/s %6.2fx  %10.2f t/s %10.2f t/s %6.2fx\n", L, a.prefill_tps, b.prefill_tps,
               a.prefill_tps / b.prefill_tps, a.decode_tps, b.decode_tps, a.decode_tps / b.decode_tps);
        fflush(stdout);
    }
    bench_matmul(sd_cpu_threads());
    bench_dsa_kernels(sd_cpu_threads(), sh.index_heads, sh.index_dim, sh.index_topk);
    bench_dsa_kernels(sd_cpu_threads(), 4, 64, 512); // sparsedoc-mini's indexer
    sd_model_free(m);
    return 0;
}
