// bench_cache.c: time to first token with the persistent KV prefix cache, on the CPU, with a generated
// DeepSeek-V3.2-shaped model (tools/synth_model.h). Cold: full prefill of context + question. Warm:
// restore the context's blocks from the cache (data/kvcache.c) + prefill of the question only. Both in
// one run, printed as a ratio, with restore time, store time and blob bytes per token; the warm logits
// are checked bit-identical to the cold ones.
// --kv-fp8: the sessions keep the MLA latent cache in FP8 rows (kv_fp8), and so do the blobs.
//   bench_cache [--ctx 65536] [--question 32] [--threads 0] [--dir DIR] [--keep] [--kv-fp8]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fingerprint.h"
#include "kvcache.h"
#include "model.h"
#include "ops_cpu.h"
#include "sd_clock.h"
#include "session.h"
#include "synth_model.h"

static int fail(const char *what, const struct sd_err *err)
{
    fprintf(stderr, "bench_cache: %s: %s\n", what, err->msg);
    return 1;
}

int main(int argc, char **argv)
{
    int ctx = 65536, q = 32, threads = 0, keep = 0, batch = 256, kv_fp8 = 0;
    const char *dir_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--question") && i + 1 < argc)
            q = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir_arg = argv[++i];
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else if (!strcmp(argv[i], "--kv-fp8"))
            kv_fp8 = 1;
        else {
            fprintf(stderr,
                    "usage: bench_cache [--ctx N] [--question N] [--threads N] [--dir DIR] [--keep] [--kv-fp8]\n");
            return 2;
        }
    }
    if (ctx < SD_KV_BLOCK || ctx % batch || q < 1) {
        fprintf(stderr, "bench_cache: --ctx must be a positive multiple of %d, --question >= 1\n", batch);
        return 2;
    }
    char dir[512];
    if (dir_arg) {
        snprintf(dir, sizeof dir, "%s", dir_arg);
        mkdir(dir, 0700);
    } else {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/sd_bench_cache_XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    char mdir[600], cdir[600], probe[700];
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    snprintf(cdir, sizeof cdir, "%s/kv", dir);
    int n = ctx + q;
    struct sd_synth_shape sh = {.vocab = 4096,
                                .hidden = 256,
                                .layers = 2,
                                .first_dense = 1,
                                .heads = 4,
                                .q_lora = 128,
                                .kv_lora = 128,
                                .nope = 32,
                                .rope = 32,
                                .v = 32,
                                .experts = 8,
                                .experts_per_tok = 2,
                                .n_group = 4,
                                .topk_group = 2,
                                .moe_inter = 128,
                                .shared = 1,
                                .inter = 512,
                                .index_heads = 4,
                                .index_dim = 64,
                                .index_topk = 2048,
                                .max_pos = 131072};
    while (sh.max_pos < n)
        sh.max_pos *= 2;
    struct stat sb;
    snprintf(probe, sizeof probe, "%s/model.safetensors", mdir);
    if (stat(probe, &sb) != 0) {
        mkdir(mdir, 0700);
        if (sd_synth_write_deepseek(mdir, &sh, 1234))
            return 1;
    }
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (sd_model_load(mdir, &m, &err) != SD_OK)
        return fail("load", &err);
    sd_cpu_set_threads(threads);
    struct sd_session_params sp = {.n_ctx = n, .n_threads = threads, .max_batch = batch, .kv_fp8 = kv_fp8};
    double t0 = sd_now_s();
    uint8_t fp[SD_FINGERPRINT_BYTES];
    if (sd_model_fingerprint(m, NULL, &sp, NULL, fp, &err) != SD_OK)
        return fail("fingerprint", &err);
    double t_fp = sd_now_s() - t0;
    t0 = sd_now_s();
    if (sd_model_fingerprint(m, NULL, &sp, NULL, fp, &err) != SD_OK)
        return fail("fingerprint", &err);
    double t_fp2 = sd_now_s() - t0;
    printf("model: synthetic DeepSeek-V3.2, hidden %d, %d layers (%d dense + %d MoE, %d experts top-%d), %d heads, "
           "kv_lora %d + rope %d, indexer %dx%d, index_topk %d, vocab %d; %d threads; latent cache %s\n",
           sh.hidden, sh.layers, sh.first_dense, sh.layers - sh.first_dense, sh.experts, sh.experts_per_tok, sh.heads,
           sh.kv_lora, sh.rope, sh.index_heads, sh.index_dim, sh.index_topk, sh.vocab, sd_cpu_threads(),
           kv_fp8 ? "kv_fp8 (FP8 rows)" : "f32");
    printf("prompt: %d context tokens (%d blocks of %d) + %d question tokens; prefill chunk %d; cache in %s\n", ctx,
           ctx / SD_KV_BLOCK, SD_KV_BLOCK, q, batch, cdir);
    printf("fingerprint: %.2f ms first, %.2f ms memoized\n\n", t_fp * 1e3, t_fp2 * 1e3);
    fflush(stdout);

    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)sh.vocab);
    }
    int V = m->cfg.vocab_size;
    float *lc = malloc(sizeof(float) * (size_t)V), *lw = malloc(sizeof(float) * (size_t)V);

    // cold: full prefill of context + question, then store the context's blocks
    struct sd_kvcache *c = NULL;
    struct sd_kvcache_opts o = {.budget_bytes = 64ull << 30};
    if (sd_kvcache_open(cdir, &o, &c, &err) != SD_OK)
        return fail("open cache", &err);
    int cleared = 0;
    if (sd_kvcache_clear(c, &cleared, &err) != SD_OK)
        return fail("clear", &err);
    struct sd_session *s = NULL;
    if (sd_session_new(m, &sp, &s, &err) != SD_OK)
        return fail("session", &err);
    struct sd_kvcache_restore_info ri;
    t0 = sd_now_s();
    if (sd_kvcache_restore(c, fp, ids, n, s, &ri, &err) != SD_OK) // a miss: what a first run pays
        return fail("restore (cold)", &err);
    if (ri.blocks_restored != 0 || sd_session_eval(s, ids, n, lc, 0, &err) != SD_OK)
        return fail("cold prefill", &err);
    double t_cold = sd_now_s() - t0;
    t0 = sd_now_s();
    int stored = 0;
    if (sd_kvcache_store(c, fp, ids, n, s, &stored, &err) != SD_OK)
        return fail("store", &err);
    double t_store = sd_now_s() - t0;
    sd_session_free(s);
    struct sd_kvcache_stats st;
    if (sd_kvcache_stats(c, &st, &err) != SD_OK)
        return fail("stats", &err);
    sd_kvcache_close(c);

    // warm: a new process would open the cache (GC included), restore, prefill the question
    t0 = sd_now_s();
    if (sd_kvcache_open(cdir, &o, &c, &err) != SD_OK)
        return fail("open cache", &err);
    double t_open = sd_now_s() - t0;
    if (sd_session_new(m, &sp, &s, &err) != SD_OK)
        return fail("session", &err);
    t0 = sd_now_s();
    if (sd_kvcache_restore(c, fp, ids, n, s, &ri, &err) != SD_OK)
        return fail("restore", &err);
    double t_restore = sd_now_s() - t0;
    if (ri.tokens_restored != ri.blocks_restored * SD_KV_BLOCK || sd_session_pos(s) != ri.tokens_restored ||
        ri.tokens_restored != ctx) {
        fprintf(stderr, "bench_cache: restored %d blocks = %d tokens, session at %d, context %d: not a full hit\n",
                ri.blocks_restored, ri.tokens_restored, sd_session_pos(s), ctx);
        return 1;
    }
    double t1 = sd_now_s();
    if (sd_session_eval(s, ids + ri.tokens_restored, n - ri.tokens_restored, lw, 0, &err) != SD_OK)
        return fail("warm prefill", &err);
    double t_suffix = sd_now_s() - t1, t_warm = sd_now_s() - t0;
    int same = !memcmp(lc, lw, sizeof(float) * (size_t)V);
    sd_session_free(s);
    sd_kvcache_close(c);

    printf("%-34s %12s\n", "", "value");
    printf("%-34s %10.3f s\n", "TTFT cold (full prefill)", t_cold);
    printf("%-34s %10.3f s\n", "TTFT warm (restore + question)", t_warm);
    printf("%-34s %10.1f x\n", "speed-up cold / warm", t_cold / t_warm);
    printf("%-34s %10.3f s  (%d blocks, %d tokens reused)\n", "  restore", t_restore, ri.blocks_restored,
           ri.tokens_restored);
    printf("%-34s %10.3f s  (%d tokens)\n", "  question prefill", t_suffix, n - ri.tokens_restored);
    printf("%-34s %10.3f s\n", "cache open (with GC)", t_open);
    printf("%-34s %10.3f s  (%d blocks, %.1f MB/s)\n", "store after cold prefill", t_store, stored,
           (double)st.bytes / 1e6 / t_store);
    printf("%-34s %10.1f B/token (%.2f MB total, %lld files)\n", "blob bytes", (double)st.bytes / ctx,
           (double)st.bytes / 1e6, (long long)st.entries);
    printf("%-34s %10s\n", "warm logits == cold logits", same ? "bit-identical" : "DIFFERENT");
    free(ids);
    free(lc);
    free(lw);
    sd_model_free(m);
    if (!keep && !dir_arg) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_cache: could not remove %s\n", dir);
    }
    return same ? 0 : 1;
}
