// bench_cuda_forward.c: prefill and decode tokens/s of the CPU and CUDA backends on one model (default
// data/models/sparsedoc-mini) at several context depths, with CUDA/CPU ratios, in one run. Deep
// positions are reached with sd_session_debug_fill (pseudo-random cache rows, never used for answers),
// then a 256-token chunk is prefilled and 32 tokens decoded there; the CUDA backend also runs a real
// prefill from position 0 of the whole context, and a dense-attention decode (DSA vs dense).
// Usage: bench_cuda_forward [MODEL_DIR] [CTX ...]   (default contexts 4096 16384 65536)
//        bench_cuda_forward --layer [CTX ...]        one DeepSeek-V3.2 layer at real width (synthetic
//        random weights written to $TMPDIR), CUDA decode and 16-token prefill, DSA vs dense attention,
//        default contexts 8192 32768 65536 131072.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "sd_cuda.h"
#include "session.h"
#include "synth_model.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void rand_ids(int32_t *ids, int n, int vocab, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((seed >> 33) % (uint64_t)(vocab - 3)) + 3;
    }
}

struct res {
    double prefill_tps, decode_tps;
};

#define PREFILL 256
#define DECODE 32

// Prefill PREFILL tokens and decode DECODE tokens at depth ctx - PREFILL - DECODE - 1.
static int at_depth(const struct sd_model *m, int ctx, const struct sd_backend *be, enum sd_dsa_mode mode,
                    struct res *r)
{
    struct sd_session_params sp = {.n_ctx = ctx, .max_batch = PREFILL, .dsa_mode = mode, .backend = be};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    int V = m->cfg.vocab_size, depth = ctx - PREFILL - DECODE - 1;
    int32_t ids[PREFILL];
    float *lg = malloc(sizeof(float) * (size_t)V);
    rand_ids(ids, PREFILL, V, 42);
    // warm-up: the timed chunk's shapes once (cuBLAS kernel choice, lazy module loading), then forget it
    int ok = lg && sd_session_new(m, &sp, &s, &err) == SD_OK && sd_session_debug_fill(s, depth, 7, &err) == SD_OK &&
             sd_session_eval(s, ids, PREFILL, lg, 0, &err) == SD_OK &&
             sd_session_eval(s, ids, 1, lg, 0, &err) == SD_OK && sd_session_truncate(s, depth, &err) == SD_OK;
    double t0 = now_s();
    ok = ok && sd_session_eval(s, ids, PREFILL, lg, 0, &err) == SD_OK;
    double t1 = now_s();
    for (int i = 0; ok && i < DECODE; i++) {
        int32_t next = ids[i];
        ok = sd_session_eval(s, &next, 1, lg, 0, &err) == SD_OK;
    }
    double t2 = now_s();
    if (!ok)
        fprintf(stderr, "bench (%s, ctx %d): %s\n", be ? "cuda" : "cpu", ctx, err.msg);
    r->prefill_tps = PREFILL / (t1 - t0);
    r->decode_tps = DECODE / (t2 - t1);
    sd_session_free(s);
    free(lg);
    return ok ? 0 : -1;
}

// Real prefill of ctx tokens from position 0 (chunks of 256); tokens/s.
static double full_prefill(const struct sd_model *m, int ctx, const struct sd_backend *be)
{
    struct sd_session_params sp = {.n_ctx = ctx, .max_batch = PREFILL, .backend = be};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)ctx);
    float *lg = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    rand_ids(ids, ctx, m->cfg.vocab_size, 1234);
    double t0 = 0, t1 = 0;
    int ok = ids && lg && sd_session_new(m, &sp, &s, &err) == SD_OK &&
             sd_session_eval(s, ids, 1, lg, 0, &err) == SD_OK && sd_session_truncate(s, 0, &err) == SD_OK;
    t0 = now_s();
    ok = ok && sd_session_eval(s, ids, ctx, lg, 0, &err) == SD_OK;
    t1 = now_s();
    if (!ok)
        fprintf(stderr, "full prefill (%s, %d): %s\n", be ? "cuda" : "cpu", ctx, err.msg);
    sd_session_free(s);
    free(ids);
    free(lg);
    return ok ? ctx / (t1 - t0) : 0.0;
}

// One layer at DeepSeek-V3.2 width: decode ms/token and 16-token prefill ms at depth ctx, CUDA, DSA vs dense.
#define LAYER_CHUNK 16
static int layer_at(const struct sd_model *m, int ctx, enum sd_dsa_mode mode, double *decode_ms, double *prefill_ms)
{
    struct sd_session_params sp = {
        .n_ctx = ctx, .max_batch = LAYER_CHUNK, .dsa_mode = mode, .backend = sd_cuda_backend()};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    int32_t ids[LAYER_CHUNK];
    float *lg = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    rand_ids(ids, LAYER_CHUNK, m->cfg.vocab_size, 5);
    int depth = ctx - LAYER_CHUNK - 8;
    int ok = lg && sd_session_new(m, &sp, &s, &err) == SD_OK && sd_session_debug_fill(s, depth, 3, &err) == SD_OK &&
             sd_session_eval(s, ids, LAYER_CHUNK, lg, 0, &err) == SD_OK && sd_session_truncate(s, depth, &err) == SD_OK;
    double t0 = now_s();
    ok = ok && sd_session_eval(s, ids, LAYER_CHUNK, lg, 0, &err) == SD_OK;
    double t1 = now_s();
    for (int i = 0; ok && i < 4; i++)
        ok = sd_session_eval(s, &ids[i], 1, lg, 0, &err) == SD_OK;
    double t2 = now_s();
    if (!ok)
        fprintf(stderr, "layer bench (ctx %d): %s\n", ctx, err.msg);
    *prefill_ms = (t1 - t0) * 1e3;
    *decode_ms = (t2 - t1) * 1e3 / 4;
    sd_session_free(s);
    free(lg);
    return ok ? 0 : -1;
}

static int layer_bench(int argc, char **argv)
{
    int ctxs[8] = {8192, 32768, 65536, 131072}, n_ctx = 4;
    if (argc > 2) {
        n_ctx = 0;
        for (int i = 2; i < argc && n_ctx < 8; i++)
            ctxs[n_ctx++] = atoi(argv[i]);
    }
    const char *tmp = getenv("TMPDIR");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sd_v32_layer", tmp ? tmp : "/tmp");
    // DeepSeek-V3.2 attention + indexer widths; a dense SwiGLU MLP of 2048 (the same in both modes).
    struct sd_synth_shape sh = {.vocab = 1024,
                                .hidden = 7168,
                                .layers = 1,
                                .first_dense = 1,
                                .heads = 128,
                                .q_lora = 1536,
                                .kv_lora = 512,
                                .nope = 128,
                                .rope = 64,
                                .v = 128,
                                .experts = 0,
                                .experts_per_tok = 0,
                                .n_group = 1,
                                .topk_group = 1,
                                .moe_inter = 0,
                                .shared = 0,
                                .inter = 2048,
                                .index_heads = 64,
                                .index_dim = 128,
                                .index_topk = 2048,
                                .max_pos = 163840};
    double t0 = now_s();
    if (sd_synth_write_deepseek(dir, &sh, 99))
        return 1;
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (sd_model_load(dir, &m, &err) != SD_OK) {
        fprintf(stderr, "bench_cuda_forward: %s\n", err.msg);
        return 1;
    }
    printf("one DeepSeek-V3.2 layer (hidden 7168, 128 heads, MLA 512+64, indexer 64x128, top-k 2048, MLP 2048), "
           "synthetic weights (written+loaded in %.1f s), CUDA fp32\n",
           now_s() - t0);
    printf(
        "| ctx | DSA decode ms/token | dense decode ms/token | dense/DSA | DSA prefill %d tok ms | dense prefill ms | "
        "dense/DSA |\n|---|---|---|---|---|---|---|\n",
        LAYER_CHUNK);
    for (int i = 0; i < n_ctx; i++) {
        double sd = 0, sp = 0, dd = 0, dp = 0;
        int rc = layer_at(m, ctxs[i], SD_DSA_SPARSE, &sd, &sp);
        rc |= layer_at(m, ctxs[i], SD_DSA_DENSE, &dd, &dp);
        printf("| %6d | %8.3f | %8.3f | %5.1fx | %8.2f | %8.2f | %5.1fx |%s\n", ctxs[i], sd, dd, dd / sd, sp, dp,
               dp / sp, rc ? " ERROR" : "");
        fflush(stdout);
    }
    sd_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--layer"))
        return sd_cuda_device_count() > 0 ? layer_bench(argc, argv) : 77;
    const char *dir = argc > 1 ? argv[1] : "data/models/sparsedoc-mini";
    int ctxs[8] = {4096, 16384, 65536}, n_ctx = 3;
    if (argc > 2) {
        n_ctx = 0;
        for (int i = 2; i < argc && n_ctx < 8; i++)
            ctxs[n_ctx++] = atoi(argv[i]);
    }
    if (sd_cuda_device_count() <= 0) {
        fprintf(stderr, "bench_cuda_forward: no CUDA device\n");
        return 77;
    }
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (sd_model_load(dir, &m, &err) != SD_OK) {
        fprintf(stderr, "bench_cuda_forward: %s\n", err.msg);
        return 1;
    }
    char name[256] = "";
    int n_sm = 0;
    size_t l2 = 0;
    sd_cuda_device_info(name, sizeof name, &n_sm, &l2);
    const struct sd_backend *cuda = sd_cuda_backend();
    printf("model %s (%s, %d layers, hidden %d), GPU %s, prefill chunk %d, decode %d tokens\n", dir, m->cfg.arch_name,
           m->cfg.n_layers, m->cfg.hidden_size, name, PREFILL, DECODE);
    char lines[16][256];
    int nl = 0;
    for (int i = 0; i < n_ctx; i++) {
        struct res c = {0}, g = {0}, gd = {0};
        int rc = at_depth(m, ctxs[i], NULL, SD_DSA_SPARSE, &c);
        rc |= at_depth(m, ctxs[i], cuda, SD_DSA_SPARSE, &g);
        rc |= at_depth(m, ctxs[i], cuda, SD_DSA_DENSE, &gd);
        double fp = full_prefill(m, ctxs[i], cuda);
        double fc = ctxs[i] <= 4096 ? full_prefill(m, ctxs[i], NULL) : 0.0;
        snprintf(lines[nl++], sizeof lines[0],
                 "| %6d | %9.1f | %10.1f | %6.1fx | %8.1f | %9.1f | %6.1fx | %13.1f | %10.1f | %s |", ctxs[i],
                 c.prefill_tps, g.prefill_tps, g.prefill_tps / c.prefill_tps, c.decode_tps, g.decode_tps,
                 g.decode_tps / c.decode_tps, gd.decode_tps, fp,
                 fc > 0 ? "cpu full prefill below" : (rc ? "ERROR" : "ok"));
        if (fc > 0)
            snprintf(lines[nl++], sizeof lines[0],
                     "|        | CPU real prefill of %d tokens from 0: %.1f tok/s (CUDA %.1fx) |", ctxs[i], fc,
                     fp / fc);
        fprintf(stderr, "ctx %d done\n", ctxs[i]);
    }
    printf("| ctx | CPU prefill tok/s | CUDA prefill tok/s | ratio | CPU decode tok/s | CUDA decode tok/s | ratio | "
           "CUDA dense-attn decode tok/s | CUDA real prefill from 0 tok/s | note |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < nl; i++)
        printf("%s\n", lines[i]);
    sd_model_free(m);
    return 0;
}
