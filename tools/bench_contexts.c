// bench_contexts.c: time to get a document's contexts cold (tokenize + pack + save, sd_contexts_load_or_build
// on an empty context store) vs warm (loaded from the store), and a plain sd_contexts_build for reference.
// Ingests the PDF into a fresh temporary store first (not timed here: see bench_ingest), checks that the
// loaded contexts are identical to the built ones, and prints the numbers with the command.
//   bench_contexts [PDF] [TOKENIZER_JSON] [--max-tokens N] [--format headers|passages] [--runs N]
// Defaults: ../shared/corpus/pdf/large/source2e.pdf (1,221 pages), data/models/sparsedoc-mini/tokenizer.json,
// 65536 tokens, passages (sparsedoc-mini's format), 5 warm runs (the median is printed).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "contexts.h"
#include "contexts_store.h"
#include "ingest.h"
#include "sd_clock.h"
#include "store.h"
#include "tokenizer.h"

static int same(const struct sd_contexts *a, const struct sd_contexts *b)
{
    if (a->n != b->n || a->total_tokens != b->total_tokens)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const struct sd_context *x = &a->items[i], *y = &b->items[i];
        if (x->n_tokens != y->n_tokens || x->n_spans != y->n_spans ||
            memcmp(x->tokens, y->tokens, x->n_tokens * sizeof *x->tokens) ||
            memcmp(x->spans, y->spans, x->n_spans * sizeof *x->spans))
            return 0;
    }
    return 1;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *pdf = "../shared/corpus/pdf/large/source2e.pdf", *tj = "data/models/sparsedoc-mini/tokenizer.json";
    size_t max_tokens = SD_CONTEXT_DEFAULT_TOKENS;
    enum sd_ctx_format fmt = SD_CTX_FORMAT_PASSAGES;
    int runs = 5, pos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--max-tokens") && i + 1 < argc)
            max_tokens = (size_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            i++;
            fmt = !strcmp(argv[i], "headers") ? SD_CTX_FORMAT_HEADERS : SD_CTX_FORMAT_PASSAGES;
        } else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: bench_contexts [PDF] [TOKENIZER_JSON] [--max-tokens N] "
                            "[--format headers|passages] [--runs N]\n");
            return 2;
        } else if (pos == 0 && ++pos)
            pdf = argv[i];
        else
            tj = argv[i];
    }
    if (runs < 1 || runs > 100)
        runs = 5;
    struct sd_err err;
    struct sd_tokenizer *tok = NULL;
    if (access(pdf, R_OK)) {
        fprintf(stderr, "bench_contexts: cannot read %s (pass a PDF path)\n", pdf);
        return 1;
    }
    if (sd_tokenizer_load(tj, &tok, &err)) {
        fprintf(stderr, "bench_contexts: %s\n", err.msg);
        return 1;
    }
    char tkey[SD_CONTEXTS_TOKENIZER_KEY_MAX];
    double t0 = sd_now_s();
    if (sd_contexts_tokenizer_key(tj, tkey, &err)) {
        fprintf(stderr, "bench_contexts: %s\n", err.msg);
        return 1;
    }
    double t_key = sd_now_s() - t0;
    const char *t = getenv("TMPDIR");
    char dir[512], db[600];
    snprintf(dir, sizeof dir, "%s/bench_contexts-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(db, sizeof db, "%s/store.db", dir);
    struct sd_store *s = NULL;
    int rc = 1;
    struct sd_contexts *built = NULL, *cold = NULL, *warm = NULL;
    if (sd_store_open(db, &s, &err)) {
        fprintf(stderr, "bench_contexts: %s\n", err.msg);
        goto out;
    }
    struct sd_ingest_stats ist;
    struct sd_ingest_opts io = {0};
    char *paths[1] = {(char *)pdf};
    t0 = sd_now_s();
    if (sd_ingest(s, paths, 1, &io, &ist, &err) || ist.failed) {
        fprintf(stderr, "bench_contexts: ingest of %s failed: %s\n", pdf, ist.failed ? "see above" : err.msg);
        goto out;
    }
    double t_ingest = sd_now_s() - t0;
    struct sd_contexts_opts co = {
        .max_tokens = max_tokens, .format = fmt, .tokenize = sd_tokenizer_encode_cb, .tok_user = tok};
    t0 = sd_now_s();
    if (sd_contexts_build(s, NULL, 0, &co, &built, &err)) {
        fprintf(stderr, "bench_contexts: %s\n", err.msg);
        goto out;
    }
    double t_build = sd_now_s() - t0;
    struct sd_contexts_load_info info;
    t0 = sd_now_s();
    if (sd_contexts_load_or_build(s, NULL, 0, &co, tkey, &cold, &info, &err) || info.hit || !info.saved) {
        fprintf(stderr, "bench_contexts: cold load_or_build: %s (hit %d saved %d)\n", err.msg, info.hit, info.saved);
        goto out;
    }
    double t_cold = sd_now_s() - t0;
    double warm_s[100];
    for (int i = 0; i < runs; i++) {
        sd_contexts_free(warm);
        warm = NULL;
        t0 = sd_now_s();
        if (sd_contexts_load_or_build(s, NULL, 0, &co, tkey, &warm, &info, &err) || !info.hit) {
            fprintf(stderr, "bench_contexts: warm load_or_build: %s (hit %d)\n", err.msg, info.hit);
            goto out;
        }
        warm_s[i] = sd_now_s() - t0;
    }
    qsort(warm_s, (size_t)runs, sizeof *warm_s, cmp_d);
    if (!same(built, cold) || !same(built, warm)) {
        fprintf(stderr, "bench_contexts: loaded contexts differ from the built ones\n");
        goto out;
    }
    struct sd_contexts_store_stats ss;
    sd_contexts_store_stats(s, &ss, &err);
    printf("document: %s (%lld pages, %lld spans), ingest %.2f s\n", pdf, (long long)ist.pages, (long long)ist.spans,
           t_ingest);
    printf("tokenizer: %s (key %.20s..., SHA-256 of the file: %.1f ms)\n", tj, tkey, t_key * 1e3);
    printf("contexts: %zu of at most %zu tokens (%s), %zu tokens; stored: %lld bytes\n", built->n, max_tokens,
           fmt == SD_CTX_FORMAT_PASSAGES ? "passages" : "headers", built->total_tokens, (long long)ss.n_bytes);
    printf("build only:           %8.3f s\n", t_build);
    printf("cold (build + save):  %8.3f s\n", t_cold);
    printf("warm (load, median of %d): %8.4f s  (min %.4f, max %.4f) -> %.0fx faster than cold\n", runs,
           warm_s[runs / 2], warm_s[0], warm_s[runs - 1], t_cold / warm_s[runs / 2]);
    printf("loaded == built: yes (tokens and spans)\n");
    printf("command: build/tools/bench_contexts %s %s --max-tokens %zu --format %s --runs %d\n", pdf, tj, max_tokens,
           fmt == SD_CTX_FORMAT_PASSAGES ? "passages" : "headers", runs);
    rc = 0;
out:
    sd_contexts_free(built);
    sd_contexts_free(cold);
    sd_contexts_free(warm);
    sd_store_close(s);
    sd_tokenizer_free(tok);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_contexts: could not remove %s\n", dir);
    return rc;
}
