// bench_ingest.c: ingest throughput. Ingests PDFs (pages/s) and a code tree (MB/s) into a fresh
// temporary store and prints the numbers with the command that reproduces them.
//   bench_ingest PDF_PATH CODE_DIR
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingest.h"
#include "sd_clock.h"
#include "store.h"

static int run(const char *dir, const char *name, char *path, struct sd_ingest_stats *st, double *secs)
{
    char db[600];
    snprintf(db, sizeof db, "%s/%s.db", dir, name);
    struct sd_store *s = NULL;
    struct sd_err err;
    if (sd_store_open(db, &s, &err)) {
        fprintf(stderr, "bench_ingest: %s\n", err.msg);
        return 1;
    }
    struct sd_ingest_opts o = {0};
    double t0 = sd_now_s();
    enum sd_status r = sd_ingest(s, &path, 1, &o, st, &err);
    *secs = sd_now_s() - t0;
    sd_store_close(s);
    if (r) {
        fprintf(stderr, "bench_ingest: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: bench_ingest PDF_FILE_OR_DIR CODE_DIR\n");
        return 2;
    }
    char dir[] = "/tmp/sdbench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    struct sd_ingest_stats st;
    double secs;
    int rc = 0;
    if (!run(dir, "pdf", argv[1], &st, &secs))
        printf("PDF:  %lld pages, %.1f MB in %.2f s = %.0f pages/s (%zu files, %zu failed)\n", (long long)st.pages,
               st.bytes / 1e6, secs, st.pages / secs, st.files, st.failed);
    else
        rc = 1;
    if (!run(dir, "code", argv[2], &st, &secs))
        printf("code: %zu files, %.2f MB in %.2f s = %.2f MB/s (%lld spans)\n", st.added, st.bytes / 1e6, secs,
               st.bytes / 1e6 / secs, (long long)st.spans);
    else
        rc = 1;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_ingest: could not remove %s\n", dir);
    return rc;
}
