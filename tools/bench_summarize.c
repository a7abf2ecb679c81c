// bench_summarize.c: batch summarization throughput (a program, not a test). Ingests PATH... into a
// fresh store, then summarizes every document twice through app/summarize into a temp directory:
// pass 1 with an empty KV prefix cache (cold), pass 2 forced again with the same cache (warm: the
// document prefixes are restored, not prefilled). Prints documents/minute, tokens/s (prefilled +
// generated tokens per second of summarizing) and the cache reuse rate (prompt tokens restored).
//   bench_summarize [--model DIR] [--ctx N] [--max-words N] [--style S] [--threads N] PATH...
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qa.h"
#include "summarize.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: bench_summarize [--model DIR] [--ctx N] [--max-words N] [--style S] [--threads N] PATH...\n");
    return 2;
}

static void report(const char *name, const struct sd_summ_batch_stats *st)
{
    int64_t work = st->tokens_prefilled + st->tokens_generated;
    double s = st->seconds > 0 ? st->seconds : 1e-9;
    printf("%-5s %zu docs (%zu failed) in %.2f s: %.2f documents/minute, %.1f tok/s (%lld prefilled + %lld "
           "generated), %.1f prompt tok/s, cache reuse %.1f%% (%lld of %lld prompt tokens from the KV cache or the "
           "live session)\n",
           name, st->done, st->failed, st->seconds, 60.0 * (double)st->done / s, (double)work / s,
           (long long)st->tokens_prefilled, (long long)st->tokens_generated, (double)st->tokens_prompt / s,
           st->tokens_prompt ? 100.0 * (double)st->tokens_reused / (double)st->tokens_prompt : 0.0,
           (long long)st->tokens_reused, (long long)st->tokens_prompt);
}

int main(int argc, char **argv)
{
    struct sd_qa_opts qo = {0};
    struct sd_summ_batch_opts bo = {0};
    char **paths = calloc((size_t)argc, sizeof *paths);
    size_t n = 0;
    if (!paths)
        return 1;
    bo.summ.max_words = 60;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v)
            qo.model_dir = argv[++i];
        else if (!strcmp(a, "--ctx") && v)
            qo.n_ctx = atoi(argv[++i]);
        else if (!strcmp(a, "--max-words") && v)
            bo.summ.max_words = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v)
            qo.n_threads = atoi(argv[++i]);
        else if (!strcmp(a, "--style") && v) {
            if (sd_summ_style_parse(argv[++i], &bo.summ.style))
                return usage();
        } else if (a[0] == '-')
            return usage();
        else
            paths[n++] = argv[i];
    }
    if (!n)
        return usage();
    char tmpl[] = "/tmp/bench_summarize.XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) {
        perror("mkdtemp");
        return 1;
    }
    char db[4200], kv[4200], out[4200];
    snprintf(db, sizeof db, "%s/db.sqlite", dir);
    snprintf(kv, sizeof kv, "%s/kv", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    qo.db_path = db;
    qo.cache_dir = kv;
    bo.out_dir = out;
    struct sd_err err;
    struct sd_qa *qa = NULL;
    struct sd_summarizer *sm = NULL;
    int rc = 1;
    if (sd_qa_open(&qo, &qa, &err) || sd_summarizer_open(qa, &qo, &sm, &err)) {
        fprintf(stderr, "bench_summarize: %s\n", err.msg);
        goto out;
    }
    struct sd_ingest_stats ist;
    if (sd_qa_ingest(qa, paths, n, NULL, NULL, &ist, &err)) {
        fprintf(stderr, "bench_summarize: %s\n", err.msg);
        goto out;
    }
    printf("model %s, n_ctx %d, style %s, max words %d, %zu files ingested (%lld tokens)\n", sd_qa_model_name(qa),
           sd_qa_n_ctx(qa), sd_summ_style_name(bo.summ.style), bo.summ.max_words, ist.files, (long long)ist.tokens);
    struct sd_summ_batch_stats cold, warm;
    if (sd_summarize_batch(sm, paths, n, &bo, NULL, &cold, &err)) {
        fprintf(stderr, "bench_summarize: %s\n", err.msg);
        goto out;
    }
    report("cold", &cold);
    bo.force = 1;
    if (sd_summarize_batch(sm, paths, n, &bo, NULL, &warm, &err)) {
        fprintf(stderr, "bench_summarize: %s\n", err.msg);
        goto out;
    }
    report("warm", &warm);
    rc = cold.failed || warm.failed;
out:
    sd_summarizer_close(sm);
    sd_qa_close(qa);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_summarize: could not remove %s\n", dir);
    free(paths);
    return rc;
}
