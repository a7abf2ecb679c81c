// bench_tokenizer.c: encode throughput of engine/tokenizer.c on a large text (not a test).
// Usage: bench_tokenizer TOKENIZER_JSON [TEXT_FILE_OR_DIR ...] [--reps N]
// With no text given it concatenates $SD_CORPUS/longctx/paul_graham_essays/*.txt (SD_CORPUS defaults
// to ../shared/corpus). Prints load time, MB/s and tokens/s for encode, and MB/s for decode.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sd_clock.h"
#include "tokenizer.h"

static int append_file(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        char *p = realloc(*buf, *len + n + 1);
        if (!p) {
            fclose(f);
            return -1;
        }
        *buf = p;
        memcpy(*buf + *len, tmp, n);
        *len += n;
        (*buf)[*len] = '\0';
    }
    fclose(f);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int append_dir(const char *dir, char **buf, size_t *len)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".txt"))
            continue;
        char **p = realloc(names, sizeof *p * (n + 1));
        if (!p)
            break;
        names = p;
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    int rc = n ? 0 : -1;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (names[i] && append_file(path, buf, len) != 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

static int append_path(const char *path, char **buf, size_t *len)
{
    DIR *d = opendir(path);
    if (d) {
        closedir(d);
        return append_dir(path, buf, len);
    }
    return append_file(path, buf, len);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TOKENIZER_JSON [TEXT_FILE_OR_DIR ...] [--reps N]\n", argv[0]);
        return 2;
    }
    int reps = 5;
    char *text = NULL;
    size_t len = 0;
    int have_text = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            continue;
        }
        if (append_path(argv[i], &text, &len) != 0) {
            fprintf(stderr, "cannot read %s\n", argv[i]);
            return 1;
        }
        have_text = 1;
    }
    if (!have_text) {
        const char *c = getenv("SD_CORPUS");
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/longctx/paul_graham_essays", c && *c ? c : "../shared/corpus");
        if (append_dir(dir, &text, &len) != 0) {
            fprintf(stderr, "cannot read essays in %s; pass a text file or set SD_CORPUS\n", dir);
            return 1;
        }
    }
    if (reps < 1)
        reps = 1;

    struct sd_err err = {0};
    struct sd_tokenizer *tok = NULL;
    double t0 = sd_now_s();
    if (sd_tokenizer_load(argv[1], &tok, &err) != SD_OK) {
        fprintf(stderr, "load failed: %s\n", err.msg);
        free(text);
        return 1;
    }
    double t_load = sd_now_s() - t0;

    int32_t *ids = NULL;
    size_t n_ids = 0;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        free(ids);
        ids = NULL;
        double a = sd_now_s();
        if (sd_tokenizer_encode(tok, text, len, 0, &ids, &n_ids, &err) != SD_OK) {
            fprintf(stderr, "encode failed: %s\n", err.msg);
            sd_tokenizer_free(tok);
            free(text);
            return 1;
        }
        double dt = sd_now_s() - a;
        if (dt < best)
            best = dt;
    }
    char *back = NULL;
    double a = sd_now_s();
    if (sd_tokenizer_decode(tok, ids, n_ids, 0, &back, &err) != SD_OK) {
        fprintf(stderr, "decode failed: %s\n", err.msg);
        return 1;
    }
    double t_dec = sd_now_s() - a;
    int same = strlen(back) == len && memcmp(back, text, len) == 0;

    printf("tokenizer     %s\n", argv[1]);
    printf("load          %.3f s\n", t_load);
    printf("text          %zu bytes -> %zu tokens (%.2f bytes/token)\n", len, n_ids, (double)len / (double)n_ids);
    printf("encode        %.2f MB/s  %.0f tokens/s  (best of %d: %.4f s, single thread)\n", (double)len / best / 1e6,
           (double)n_ids / best, reps, best);
    printf("decode        %.2f MB/s\n", (double)len / t_dec / 1e6);
    printf("round trip    %s\n", same ? "exact" : "DIFFERS (normalizer changed the text?)");
    free(back);
    free(ids);
    free(text);
    sd_tokenizer_free(tok);
    return 0;
}
