// test_data_common.h: helpers shared by the data/ tests: a fresh temporary directory and database,
// writing small files, counting rows. Header-only (static functions) to keep tests self-contained.
#ifndef SD_TEST_DATA_COMMON_H
#define SD_TEST_DATA_COMMON_H

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest.h"
#include "store.h"
#include "test_util.h"

static char sd_tmp_dir[512];

static __attribute__((unused)) const char *tmp_dir(void)
{
    if (!sd_tmp_dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(sd_tmp_dir, sizeof sd_tmp_dir, "%s/sdtest-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(sd_tmp_dir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return sd_tmp_dir;
}

static __attribute__((unused)) void tmp_cleanup(void)
{
    if (sd_tmp_dir[0] && !getenv("SD_KEEP_TMP")) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", sd_tmp_dir, sd_tmp_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", sd_tmp_dir);
    }
}

static __attribute__((unused)) void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static __attribute__((unused)) struct sd_store *open_db(const char *name)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", tmp_dir(), name);
    struct sd_store *s = NULL;
    struct sd_err err;
    if (sd_store_open(path, &s, &err)) {
        fprintf(stderr, "open %s: %s\n", path, err.msg);
        exit(1);
    }
    return s;
}

static __attribute__((unused)) int64_t query_int(struct sd_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(sd_store_db(s), sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static __attribute__((unused)) enum sd_status ingest1(struct sd_store *s, const char *path, const struct sd_ingest_opts *o,
                              struct sd_ingest_stats *st)
{
    char *paths[1] = {(char *)path};
    struct sd_err err;
    enum sd_status r = sd_ingest(s, paths, 1, o, st, &err);
    if (r)
        fprintf(stderr, "ingest %s: %s\n", path, err.msg);
    return r;
}

#endif
