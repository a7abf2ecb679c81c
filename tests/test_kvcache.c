// test_kvcache.c: the persistent KV prefix cache (data/kvcache.c) against real SQLite, real files in a
// mkdtemp directory and the real tiny DeepSeek-V3.2 fixture (copied with max_position_embeddings 512 so
// 5 blocks fit): hit/miss semantics with bit-identical logits, edited sequences, foreign fingerprints,
// corrupt/truncated/misplaced blobs, LRU eviction under a budget, kill -9 of a writer, two writers.
// Writers are this program re-executed with --writer (fresh processes: no fork after OpenMP).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fingerprint.h"
#include "kvcache.h"
#include "model.h"
#include "session.h"
#include "test_util.h"

#define N_CTX 320
#define N_IDS 300 // 4 full blocks + 44 tokens
#define WRITER_TOKENS 257

static const struct sd_session_params sp = {.n_ctx = N_CTX, .max_batch = 16};
static char base[256];

static void gen_ids(uint64_t seed, int n, int vocab, int32_t *out)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 12345;
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (int32_t)((x >> 33) % (uint64_t)vocab);
    }
}

static char *pathf(const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 1;
    char *p = malloc(n);
    snprintf(p, n, fmt, a, b ? b : "");
    return p;
}

static int copy_file(const char *from, const char *to, const char *find, const char *repl)
{
    size_t len = 0;
    char *buf = sd_test_read_file(from, &len);
    if (!buf)
        return -1;
    FILE *f = fopen(to, "wb");
    if (!f) {
        free(buf);
        return -1;
    }
    char *hit = find ? strstr(buf, find) : NULL;
    if (hit) {
        fwrite(buf, 1, (size_t)(hit - buf), f);
        fputs(repl, f);
        fputs(hit + strlen(find), f);
    } else {
        fwrite(buf, 1, len, f);
    }
    free(buf);
    return fclose(f);
}

// Copy the fixture model directory (config.json optionally patched).
static int copy_model(const char *src, const char *dst, const char *find, const char *repl)
{
    mkdir(dst, 0700);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *a = pathf("%s/%s", src, files[i]), *b = pathf("%s/%s", dst, files[i]);
        int rc = copy_file(a, b, i == 0 ? find : NULL, repl);
        free(a);
        free(b);
        if (rc)
            return -1;
    }
    return 0;
}

static struct sd_model *load(const char *dir)
{
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (sd_model_load(dir, &m, &err) != SD_OK) {
        fprintf(stderr, "load %s: %s\n", dir, err.msg);
        return NULL;
    }
    return m;
}

static struct sd_session *new_session(const struct sd_model *m, const struct sd_session_params *p)
{
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    if (sd_session_new(m, p, &s, &err) != SD_OK)
        fprintf(stderr, "session: %s\n", err.msg);
    return s;
}

static struct sd_kvcache *open_cache(const char *name, uint64_t budget)
{
    struct sd_kvcache *c = NULL;
    struct sd_err err = {0};
    char *dir = pathf("%s/%s", base, name);
    struct sd_kvcache_opts o = {.budget_bytes = budget};
    if (sd_kvcache_open(dir, &o, &c, &err) != SD_OK)
        fprintf(stderr, "open cache %s: %s\n", dir, err.msg);
    free(dir);
    return c;
}

static int lookup(struct sd_kvcache *c, const uint8_t *fp, const int32_t *ids, int n)
{
    int k = -1;
    struct sd_err err = {0};
    if (sd_kvcache_lookup(c, fp, ids, n, &k, &err) != SD_OK)
        fprintf(stderr, "lookup: %s\n", err.msg);
    return k;
}

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static char *block_path(struct sd_kvcache *c, const uint8_t *fp, const int32_t *ids, int block)
{
    uint8_t h[8 * SD_KVCACHE_HASH_BYTES];
    sd_kvcache_chain(fp, ids, block + 1, h);
    return sd_kvcache_blob_path(c, h + (size_t)block * SD_KVCACHE_HASH_BYTES);
}

// ---------------------------------------------------------------- writer child

// argv: --writer MODEL_DIR CACHE_DIR SEED0 COUNT. Stores COUNT sequences; prints "stored SEED" after each.
static int writer_main(char **argv)
{
    struct sd_model *m = load(argv[2]);
    if (!m)
        return 3;
    uint8_t fp[32];
    struct sd_err err = {0};
    if (sd_model_fingerprint(m, NULL, &sp, "tmpl", fp, &err) != SD_OK)
        return 4;
    struct sd_kvcache *c = NULL;
    struct sd_kvcache_opts o = {.budget_bytes = 1ull << 30};
    if (sd_kvcache_open(argv[3], &o, &c, &err) != SD_OK) {
        fprintf(stderr, "writer: %s\n", err.msg);
        return 5;
    }
    uint64_t seed0 = strtoull(argv[4], NULL, 10);
    int count = atoi(argv[5]);
    int32_t ids[WRITER_TOKENS];
    for (int j = 0; j < count; j++) {
        gen_ids(seed0 + (uint64_t)j, WRITER_TOKENS, m->cfg.vocab_size, ids);
        struct sd_session *s = new_session(m, &sp);
        if (!s || sd_session_eval(s, ids, WRITER_TOKENS, NULL, 0, &err) != SD_OK)
            return 6;
        int n = 0;
        if (sd_kvcache_store(c, fp, ids, WRITER_TOKENS, s, &n, &err) != SD_OK) {
            fprintf(stderr, "writer store: %s\n", err.msg);
            return 7;
        }
        sd_session_free(s);
        printf("stored %llu\n", (unsigned long long)(seed0 + (uint64_t)j));
        fflush(stdout);
    }
    sd_kvcache_close(c);
    sd_model_free(m);
    return 0;
}

static pid_t spawn_writer(const char *self, const char *model, const char *cache, uint64_t seed, int count, int *out_fd)
{
    int pfd[2] = {-1, -1};
    if (out_fd && pipe(pfd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        if (out_fd) {
            dup2(pfd[1], 1);
            close(pfd[0]);
            close(pfd[1]);
        } else if (!freopen("/dev/null", "w", stdout)) {
            _exit(126);
        }
        char s[32], n[32];
        snprintf(s, sizeof s, "%llu", (unsigned long long)seed);
        snprintf(n, sizeof n, "%d", count);
        execl(self, self, "--writer", model, cache, s, n, (char *)NULL);
        _exit(127);
    }
    if (out_fd) {
        close(pfd[1]);
        *out_fd = pfd[0];
    }
    return pid;
}

// Read one line from fd (blocking); returns its seed or -1 at EOF.
static long long read_seed(int fd)
{
    char line[64];
    size_t n = 0;
    while (n + 1 < sizeof line) {
        char ch;
        ssize_t k = read(fd, &ch, 1);
        if (k <= 0)
            return -1;
        if (ch == '\n')
            break;
        line[n++] = ch;
    }
    line[n] = 0;
    return strncmp(line, "stored ", 7) ? -1 : atoll(line + 7);
}

static int count_files(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

// Every seed's chain restores fully with no dropped block.
static void verify_seeds(struct sd_kvcache *c, const struct sd_model *m, const uint8_t *fp, const long long *seeds,
                         int n, const char *what)
{
    int32_t ids[WRITER_TOKENS];
    for (int j = 0; j < n; j++) {
        gen_ids((uint64_t)seeds[j], WRITER_TOKENS, m->cfg.vocab_size, ids);
        int k = lookup(c, fp, ids, WRITER_TOKENS);
        struct sd_session *s = new_session(m, &sp);
        struct sd_kvcache_restore_info ri;
        struct sd_err err = {0};
        CHECK_MSG(sd_kvcache_restore(c, fp, ids, WRITER_TOKENS, s, &ri, &err) == SD_OK, "%s", err.msg);
        CHECK_MSG(k == 4 && ri.blocks_restored == 4 && ri.blocks_dropped == 0 && ri.tokens_restored == 256,
                  "%s: seed %lld: lookup %d, restored %d, dropped %d", what, seeds[j], k, ri.blocks_restored,
                  ri.blocks_dropped);
        sd_session_free(s);
    }
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "--writer"))
        return writer_main(argv);
    const char *tmpdir = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/sd_kvcache_XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    char fix[1024], fix_llama[1024];
    snprintf(fix, sizeof fix, "%s/dsv32", sd_test_fixtures());
    snprintf(fix_llama, sizeof fix_llama, "%s/llama", sd_test_fixtures());
    char *mdir = pathf("%s/%s", base, "model"), *mcopy = pathf("%s/%s", base, "model_copy");
    CHECK(copy_model(fix, mdir, "\"max_position_embeddings\": 128", "\"max_position_embeddings\": 512") == 0);
    CHECK(copy_model(fix, mcopy, NULL, NULL) == 0);

    // ---- multi-process tests first, before this process starts OpenMP threads
    char *kdir = pathf("%s/%s", base, "cache_kill"), *cdir = pathf("%s/%s", base, "cache_two");
    long long seeds[256];
    int n_seeds = 0;
    const int kill_delay_ms[3] = {3, 11, 29};
    for (int round = 0; round < 3; round++) {
        int fd = -1;
        pid_t pid = spawn_writer(argv[0], mdir, kdir, 1000 + 100 * (uint64_t)round, 50, &fd);
        CHECK(pid > 0);
        long long sd;
        for (int got = 0; got < 2 && (sd = read_seed(fd)) >= 0; got++)
            seeds[n_seeds++] = sd;
        struct timespec ts = {0, kill_delay_ms[round] * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        while ((sd = read_seed(fd)) >= 0 && n_seeds < 256) // lines written before the kill
            seeds[n_seeds++] = sd;
        close(fd);
        int wst = 0;
        waitpid(pid, &wst, 0);
        CHECK_MSG(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL, "writer was not killed (status %d)", wst);
    }
    pid_t w1 = spawn_writer(argv[0], mdir, cdir, 5000, 8, NULL), w2 = spawn_writer(argv[0], mdir, cdir, 5004, 8, NULL);
    int st1 = -1, st2 = -1;
    waitpid(w1, &st1, 0);
    waitpid(w2, &st2, 0);
    CHECK_MSG(WIFEXITED(st1) && WEXITSTATUS(st1) == 0 && WIFEXITED(st2) && WEXITSTATUS(st2) == 0,
              "concurrent writers failed: %d %d", st1, st2);

    struct sd_model *m = load(mdir);
    CHECK(m != NULL);
    if (!m)
        return sd_test_finish("test_kvcache");
    int V = m->cfg.vocab_size;
    struct sd_err err = {0};
    uint8_t fp[32], fp8[32], fp_llama[32], fp_orig[32], fp_copy[32], fp_tmpl[32];
    struct sd_session_params sp8 = sp;
    sp8.indexer_fp8 = 1;
    CHECK(sd_model_fingerprint(m, NULL, &sp, "tmpl", fp, &err) == SD_OK);
    CHECK(sd_model_fingerprint(m, NULL, &sp8, "tmpl", fp8, &err) == SD_OK);
    CHECK(sd_model_fingerprint(m, NULL, &sp, "other template", fp_tmpl, &err) == SD_OK);
    {
        // GPU modes: bf16 weights give other KV, and so do the tensor-core DSA kernels they use unless
        // gpu_attn_exact; launching decode steps without graphs computes the same values
        struct sd_session_params sb = sp, se = sp, sg = sp;
        sb.gpu_weights_bf16 = se.gpu_weights_bf16 = 1;
        se.gpu_attn_exact = 1;
        sg.gpu_no_graph = 1;
        uint8_t fb[32], fe[32], fg[32];
        CHECK(sd_model_fingerprint(m, NULL, &sb, "tmpl", fb, &err) == SD_OK);
        CHECK(sd_model_fingerprint(m, NULL, &se, "tmpl", fe, &err) == SD_OK);
        CHECK(sd_model_fingerprint(m, NULL, &sg, "tmpl", fg, &err) == SD_OK);
        CHECK_MSG(memcmp(fb, fp, 32) && memcmp(fe, fp, 32) && memcmp(fb, fe, 32),
                  "bf16, bf16 with exact DSA kernels and f32 must have three fingerprints");
        CHECK_MSG(!memcmp(fg, fp, 32), "gpu_no_graph must not change the fingerprint");
    }
    {
        // the tokenizer's bytes count; a missing explicit tokenizer is an error, not a silent "none"
        uint8_t ta[32], tb[32];
        char tok1[1200], tok2[1200];
        snprintf(tok1, sizeof tok1, "%s/tokenizer/tiny_bytelevel.json", sd_test_fixtures());
        snprintf(tok2, sizeof tok2, "%s/tokenizer/stories_metaspace.json", sd_test_fixtures());
        CHECK(sd_model_fingerprint(m, tok1, &sp, "tmpl", ta, &err) == SD_OK);
        CHECK(sd_model_fingerprint(m, tok2, &sp, "tmpl", tb, &err) == SD_OK);
        CHECK(memcmp(ta, tb, 32) != 0 && memcmp(ta, fp, 32) != 0);
        CHECK(sd_model_fingerprint(m, "/nonexistent/tokenizer.json", &sp, "tmpl", ta, &err) == SD_ERR_IO);
    }

    // ---- fingerprint: a copied model keeps it; config, KV layout, template and another model change it
    {
        struct sd_model *mo = load(fix), *mc = load(mcopy), *ml = load(fix_llama);
        CHECK(mo && mc && ml);
        if (mo && mc && ml) {
            CHECK(sd_model_fingerprint(mo, NULL, &sp, "tmpl", fp_orig, &err) == SD_OK);
            CHECK(sd_model_fingerprint(mc, NULL, &sp, "tmpl", fp_copy, &err) == SD_OK);
            CHECK(sd_model_fingerprint(ml, NULL, &sp, "tmpl", fp_llama, &err) == SD_OK);
            CHECK_MSG(!memcmp(fp_orig, fp_copy, 32), "a copied model must keep its fingerprint");
            CHECK(memcmp(fp_orig, fp, 32) != 0); // max_position_embeddings differs
            CHECK(memcmp(fp, fp8, 32) != 0);
            CHECK(memcmp(fp, fp_tmpl, 32) != 0);
            CHECK(memcmp(fp, fp_llama, 32) != 0);
            uint8_t again[32];
            CHECK(sd_model_fingerprint(m, NULL, &sp, "tmpl", again, &err) == SD_OK && !memcmp(again, fp, 32));
        }
        sd_model_free(mo);
        sd_model_free(mc);
        sd_model_free(ml);
    }

    // ---- kill -9 during writes: consistent index, GC cleans temp and orphan files, all entries restore
    {
        char *tmpf = pathf("%s/tmp/%s", kdir, "deadbeef.123.0.0.tmp");
        char *orphan =
            pathf("%s/blobs/ab/%s", kdir, "ab00000000000000000000000000000000000000000000000000000000000000.kv");
        char *sub = pathf("%s/blobs/%s", kdir, "ab");
        mkdir(sub, 0700);
        FILE *f = fopen(tmpf, "wb");
        if (f) {
            fputs("partial", f);
            fclose(f);
        }
        f = fopen(orphan, "wb");
        if (f) {
            fputs("orphan", f);
            fclose(f);
        }
        struct sd_kvcache *c = open_cache("cache_kill", 1ull << 30);
        CHECK(c != NULL);
        if (c) {
            CHECK_MSG(sd_kvcache_integrity_check(c, &err) == SD_OK, "%s", err.msg);
            struct sd_kvcache_gc_report rep;
            CHECK(sd_kvcache_gc(c, 0, &rep, &err) == SD_OK);
            char *tdir = pathf("%s/%s", kdir, "tmp");
            CHECK_MSG(count_files(tdir) == 0, "temp files left after GC: %d", count_files(tdir));
            free(tdir);
            CHECK(rep.tmp_removed >= 1 && rep.orphans_removed >= 1 && !file_exists(orphan));
            CHECK(n_seeds >= 6);
            verify_seeds(c, m, fp, seeds, n_seeds, "after kill -9");
            struct sd_kvcache_stats s;
            CHECK(sd_kvcache_stats(c, &s, &err) == SD_OK);
            CHECK(s.blocks_dropped == 0 && s.entries >= 4 * n_seeds);
            // whatever else survived (a store committed just before the kill) restores without drops too
            for (int r = 0; r < 3; r++) {
                long long extra[4];
                int ne = 0;
                for (long long sd = 1000 + 100 * r; sd < 1000 + 100 * r + 50 && ne < 4; sd++) {
                    int32_t ids[WRITER_TOKENS];
                    gen_ids((uint64_t)sd, WRITER_TOKENS, V, ids);
                    int known = 0;
                    for (int j = 0; j < n_seeds; j++)
                        known |= seeds[j] == sd;
                    if (!known && lookup(c, fp, ids, WRITER_TOKENS) == 4)
                        extra[ne++] = sd;
                }
                verify_seeds(c, m, fp, extra, ne, "committed before kill");
            }
            CHECK(sd_kvcache_stats(c, &s, &err) == SD_OK && s.blocks_dropped == 0);
            printf("kill -9: %d stores reported over 3 kills; %lld entries; GC removed %d temp, %d orphan files\n",
                   n_seeds, (long long)s.entries, rep.tmp_removed, rep.orphans_removed);
            sd_kvcache_close(c);
        }
        free(tmpf);
        free(orphan);
        free(sub);
    }

    // ---- two processes storing at once
    {
        struct sd_kvcache *c = open_cache("cache_two", 1ull << 30);
        CHECK(c != NULL);
        if (c) {
            CHECK(sd_kvcache_integrity_check(c, &err) == SD_OK);
            long long two[12];
            for (int j = 0; j < 12; j++)
                two[j] = 5000 + j;
            verify_seeds(c, m, fp, two, 12, "two writers");
            struct sd_kvcache_stats s;
            CHECK(sd_kvcache_stats(c, &s, &err) == SD_OK && s.entries == 48);
            printf("two writers (8 sequences each, 4 shared): both exit 0, %lld entries, all restore\n",
                   (long long)s.entries);
            sd_kvcache_close(c);
        }
    }

    // ---- same context twice hits; logits after restore + suffix are bit-identical to a full prefill
    int32_t ids[N_IDS], ids2[N_IDS];
    gen_ids(42, N_IDS, V, ids);
    const int P = 256, S = N_IDS - P;
    float *la = malloc(sizeof(float) * (size_t)S * V), *lb = malloc(sizeof(float) * (size_t)S * V);
    struct sd_kvcache *c = open_cache("cache", 1ull << 30);
    CHECK(c != NULL);
    if (!c)
        return sd_test_finish("test_kvcache");
    struct sd_kvcache_restore_info ri;
    {
        struct sd_session *s1 = new_session(m, &sp), *s0 = new_session(m, &sp), *s2 = new_session(m, &sp);
        CHECK(sd_session_eval(s1, ids, P, NULL, 0, &err) == SD_OK);
        CHECK(sd_session_eval(s1, ids + P, S, la, 1, &err) == SD_OK);
        CHECK(lookup(c, fp, ids, N_IDS) == 0);
        CHECK(sd_kvcache_restore(c, fp, ids, N_IDS, s0, &ri, &err) == SD_OK);
        CHECK(ri.blocks_restored == 0 && ri.tokens_restored == 0 && sd_session_pos(s0) == 0);
        int n = -1;
        CHECK_MSG(sd_kvcache_store(c, fp, ids, N_IDS, s1, &n, &err) == SD_OK, "%s", err.msg);
        CHECK_MSG(n == 4, "stored %d blocks, want 4", n);
        CHECK(sd_kvcache_store(c, fp, ids, N_IDS, s1, &n, &err) == SD_OK && n == 0); // already cached
        CHECK(lookup(c, fp, ids, N_IDS) == 4);
        CHECK_MSG(sd_kvcache_restore(c, fp, ids, N_IDS, s2, &ri, &err) == SD_OK, "%s", err.msg);
        CHECK_MSG(ri.blocks_found == 4 && ri.blocks_restored == 4 && ri.tokens_restored == 4 * SD_KV_BLOCK &&
                      ri.blocks_dropped == 0 && sd_session_pos(s2) == P,
                  "restore: found %d restored %d tokens %d pos %d", ri.blocks_found, ri.blocks_restored,
                  ri.tokens_restored, sd_session_pos(s2));
        CHECK(sd_session_eval(s2, ids + P, S, lb, 1, &err) == SD_OK);
        int same = !memcmp(la, lb, sizeof(float) * (size_t)S * V);
        CHECK_MSG(same, "logits after restore + suffix differ from a full prefill");
        printf("hit: %d blocks (%d tokens) restored, logits of the %d-token suffix bit-identical: %s\n",
               ri.blocks_restored, ri.tokens_restored, S, same ? "yes" : "NO");
        // exactly 4 blocks of ids: at most 3 restored (one token must be left to prefill)
        struct sd_session *s3 = new_session(m, &sp);
        CHECK(sd_kvcache_restore(c, fp, ids, P, s3, &ri, &err) == SD_OK && ri.blocks_restored == 3);
        sd_session_free(s3);
        sd_session_free(s0);
        sd_session_free(s1);
        sd_session_free(s2);
    }

    // ---- edited in its second block: hits block 0, misses from block 1 on; result matches a full prefill
    {
        memcpy(ids2, ids, sizeof ids);
        ids2[SD_KV_BLOCK + 5] = (ids2[SD_KV_BLOCK + 5] + 1) % V;
        CHECK(lookup(c, fp, ids2, N_IDS) == 1);
        struct sd_session *full = new_session(m, &sp), *s = new_session(m, &sp);
        CHECK(sd_session_eval(full, ids2, P, NULL, 0, &err) == SD_OK);
        CHECK(sd_session_eval(full, ids2 + P, S, la, 1, &err) == SD_OK);
        CHECK(sd_kvcache_restore(c, fp, ids2, N_IDS, s, &ri, &err) == SD_OK);
        CHECK_MSG(ri.blocks_restored == 1 && ri.tokens_restored == SD_KV_BLOCK && sd_session_pos(s) == SD_KV_BLOCK,
                  "edited: restored %d", ri.blocks_restored);
        CHECK(sd_session_eval(s, ids2 + SD_KV_BLOCK, P - SD_KV_BLOCK, NULL, 0, &err) == SD_OK);
        CHECK(sd_session_eval(s, ids2 + P, S, lb, 1, &err) == SD_OK);
        CHECK_MSG(!memcmp(la, lb, sizeof(float) * (size_t)S * V), "edited: logits differ from a full prefill");
        int n = -1;
        CHECK(sd_kvcache_store(c, fp, ids2, N_IDS, s, &n, &err) == SD_OK && n == 3);
        CHECK(lookup(c, fp, ids2, N_IDS) == 4 && lookup(c, fp, ids, N_IDS) == 4);
        printf("edited in block 1: 1 block hit, 3 recomputed and stored; logits bit-identical\n");
        sd_session_free(full);
        sd_session_free(s);
    }

    // ---- another fingerprint never hits
    {
        CHECK(lookup(c, fp8, ids, N_IDS) == 0);
        CHECK(lookup(c, fp_llama, ids, N_IDS) == 0);
        CHECK(lookup(c, fp_orig, ids, N_IDS) == 0);
        CHECK(lookup(c, fp_tmpl, ids, N_IDS) == 0);
        struct sd_session *s = new_session(m, &sp8);
        CHECK(s && sd_kvcache_restore(c, fp8, ids, N_IDS, s, &ri, &err) == SD_OK && ri.blocks_restored == 0);
        sd_session_free(s);
    }

    // ---- corrupt, truncated and misplaced blobs are dropped and the restore stops before them
    {
        char *p2 = block_path(c, fp, ids, 2), *p3 = block_path(c, fp, ids, 3);
        struct stat sb;
        CHECK(stat(p2, &sb) == 0);
        int fd = open(p2, O_RDWR);
        unsigned char byte = 0;
        CHECK(fd >= 0 && pread(fd, &byte, 1, sb.st_size / 2) == 1);
        byte ^= 0x10;
        CHECK(pwrite(fd, &byte, 1, sb.st_size / 2) == 1);
        close(fd);
        struct sd_session *s = new_session(m, &sp);
        CHECK(sd_kvcache_restore(c, fp, ids, N_IDS, s, &ri, &err) == SD_OK);
        CHECK_MSG(ri.blocks_found == 4 && ri.blocks_restored == 2 && ri.blocks_dropped == 1 &&
                      ri.tokens_restored == 128 && sd_session_pos(s) == 128,
                  "corrupt: found %d restored %d dropped %d", ri.blocks_found, ri.blocks_restored, ri.blocks_dropped);
        CHECK(!file_exists(p2) && !file_exists(p3)); // the block and its descendant are gone
        CHECK(lookup(c, fp, ids, N_IDS) == 2);
        // recompute the dropped blocks: same logits as the full prefill of ids
        struct sd_session *full = new_session(m, &sp);
        CHECK(sd_session_eval(full, ids, P, NULL, 0, &err) == SD_OK);
        CHECK(sd_session_eval(full, ids + P, S, la, 1, &err) == SD_OK);
        CHECK(sd_session_eval(s, ids + 128, P - 128, NULL, 0, &err) == SD_OK);
        CHECK(sd_session_eval(s, ids + P, S, lb, 1, &err) == SD_OK);
        CHECK(!memcmp(la, lb, sizeof(float) * (size_t)S * V));
        int n = -1;
        CHECK(sd_kvcache_store(c, fp, ids, N_IDS, s, &n, &err) == SD_OK && n == 2);
        CHECK(lookup(c, fp, ids, N_IDS) == 4);
        sd_session_free(s);
        sd_session_free(full);

        // truncated blob of block 1
        char *p1 = block_path(c, fp, ids, 1);
        CHECK(stat(p1, &sb) == 0 && truncate(p1, sb.st_size - 100) == 0);
        s = new_session(m, &sp);
        CHECK(sd_kvcache_restore(c, fp, ids, N_IDS, s, &ri, &err) == SD_OK);
        CHECK_MSG(ri.blocks_restored == 1 && ri.blocks_dropped == 1 && sd_session_pos(s) == 64,
                  "truncated: restored %d dropped %d", ri.blocks_restored, ri.blocks_dropped);
        CHECK(lookup(c, fp, ids, N_IDS) == 1 && lookup(c, fp, ids2, N_IDS) == 4); // other chain untouched
        CHECK(sd_session_eval(s, ids + 64, P - 64, NULL, 0, &err) == SD_OK);
        CHECK(sd_kvcache_store(c, fp, ids, N_IDS, s, &n, &err) == SD_OK && n == 3);
        sd_session_free(s);

        // a valid blob in the wrong place (block 0's state under block 1's key, same size): dropped
        char *p0 = block_path(c, fp, ids, 0);
        CHECK(copy_file(p0, p1, NULL, NULL) == 0);
        s = new_session(m, &sp);
        CHECK(sd_kvcache_restore(c, fp, ids, N_IDS, s, &ri, &err) == SD_OK);
        CHECK_MSG(ri.blocks_restored == 1 && ri.blocks_dropped == 1, "misplaced: restored %d dropped %d",
                  ri.blocks_restored, ri.blocks_dropped);
        sd_session_free(s);
        struct sd_kvcache_stats st;
        CHECK(sd_kvcache_stats(c, &st, &err) == SD_OK && st.blocks_dropped == 3);
        printf("corrupt/truncated/misplaced blobs: dropped, restore stopped before them, recomputed\n");
        free(p0);
        free(p1);
        free(p2);
        free(p3);
    }
    sd_kvcache_close(c);

    // ---- LRU eviction under a byte budget keeps the most recently used chains and never the pinned one
    {
        struct stat sb;
        char *p0 = NULL;
        c = open_cache("cache", 1ull << 30);
        p0 = c ? block_path(c, fp, ids, 0) : NULL;
        CHECK(p0 && stat(p0, &sb) == 0);
        uint64_t bb = (uint64_t)sb.st_size;
        sd_kvcache_close(c);
        free(p0);
        c = open_cache("cache_lru", 4 * bb);
        CHECK(c != NULL);
        int32_t a[129], b[129], d[129];
        gen_ids(7, 129, V, a);
        gen_ids(8, 129, V, b);
        gen_ids(9, 129, V, d);
        int32_t *seqs[3] = {a, b, d};
        struct timespec ms5 = {0, 5000000};
        for (int i = 0; i < 3 && c; i++) {
            if (i == 2) { // use A again before C arrives
                struct sd_session *s = new_session(m, &sp);
                CHECK(sd_kvcache_restore(c, fp, a, 129, s, &ri, &err) == SD_OK && ri.blocks_restored == 2);
                sd_session_free(s);
                nanosleep(&ms5, NULL);
            }
            struct sd_session *s = new_session(m, &sp);
            CHECK(sd_session_eval(s, seqs[i], 129, NULL, 0, &err) == SD_OK);
            int n = -1;
            CHECK(sd_kvcache_store(c, fp, seqs[i], 129, s, &n, &err) == SD_OK && n == 2);
            sd_session_free(s);
            nanosleep(&ms5, NULL);
        }
        if (c) {
            CHECK_MSG(lookup(c, fp, a, 129) == 2 && lookup(c, fp, b, 129) == 0 && lookup(c, fp, d, 129) == 2,
                      "LRU: A %d B %d C %d", lookup(c, fp, a, 129), lookup(c, fp, b, 129), lookup(c, fp, d, 129));
            // tail first: with room for 3 blocks, A (older than C) loses its tail only
            int ne = 0;
            CHECK(sd_kvcache_evict(c, 3 * bb, &ne, &err) == SD_OK && ne == 1);
            CHECK(lookup(c, fp, a, 129) == 1 && lookup(c, fp, d, 129) == 2);
            // C is the chain in use (stored last): a tiny budget evicts everything else, never C
            CHECK(sd_kvcache_evict(c, 1, &ne, &err) == SD_OK);
            CHECK(lookup(c, fp, a, 129) == 0 && lookup(c, fp, d, 129) == 2);
            sd_kvcache_unpin(c);
            CHECK(sd_kvcache_evict(c, 1, &ne, &err) == SD_OK && lookup(c, fp, d, 129) == 0);
            printf("LRU budget of 4 blocks: least recently used chain evicted, tails first, pinned chain kept\n");
            int cleared = -1;
            CHECK(sd_kvcache_clear(c, &cleared, &err) == SD_OK && cleared == 0);
            sd_kvcache_close(c);
        }
    }

    free(la);
    free(lb);
    sd_model_free(m);
    if (!sd_test_failures) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", base);
    } else {
        fprintf(stderr, "test files left in %s\n", base);
    }
    free(mdir);
    free(mcopy);
    free(kdir);
    free(cdir);
    return sd_test_finish("test_kvcache");
}
