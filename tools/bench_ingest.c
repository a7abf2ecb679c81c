// bench_ingest.c: ingest throughput. Ingests PDFs (pages/s) and a code tree (MB/s) into a fresh
// temporary store and prints the numbers with the command that reproduces them. The PDFs are ingested
// twice, OCR off and on (when this build has Tesseract), so the cost of OCR is a ratio of the same run.
//   bench_ingest PDF_PATH CODE_DIR
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingest.h"
#include "ocr.h"
#include "sd_clock.h"
#include "store.h"

static int run(const char *dir, const char *name, char *path, int no_ocr, struct sd_ingest_stats *st, double *secs)
{
    char db[600];
    snprintf(db, sizeof db, "%s/%s.db", dir, name);
    struct sd_store *s = NULL;
    struct sd_err err;
    if (sd_store_open(db, &s, &err)) {
        fprintf(stderr, "bench_ingest: %s\n", err.msg);
        return 1;
    }
    struct sd_ingest_opts o = {.no_ocr = no_ocr};
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
    double secs_off = 0;
    if (!run(dir, "pdf", argv[1], 1, &st, &secs_off))
        printf("PDF, OCR off:  %lld pages, %.1f MB in %.2f s = %.0f pages/s (%zu files, %zu failed, %lld need OCR)\n",
               (long long)st.pages, st.bytes / 1e6, secs_off, st.pages / secs_off, st.files, st.failed,
               (long long)st.ocr_pages);
    else
        rc = 1;
    if (!sd_ocr_built())
        printf("PDF, OCR on:   this build has no Tesseract\n");
    else if (!run(dir, "pdf_ocr", argv[1], 0, &st, &secs))
        printf("PDF, OCR on:   %lld pages in %.2f s = %.2fx the time without OCR; %lld pages read by OCR (%.2f s "
               "each more), %lld without text even by OCR\n",
               (long long)st.pages, secs, secs / secs_off, (long long)st.ocr_read_pages,
               st.ocr_read_pages + st.no_text_pages ? (secs - secs_off) / (double)(st.ocr_read_pages + st.no_text_pages)
                                                    : 0.0,
               (long long)st.no_text_pages);
    else
        rc = 1;
    if (!run(dir, "code", argv[2], 1, &st, &secs))
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
