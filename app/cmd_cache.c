// cmd_cache.c: `sparsedoc cache stats|gc|clear`, the CLI over the persistent KV prefix cache
// (data/kvcache.h). The directory is --cache-dir, else $SPARSEDOC_CACHE_DIR, else
// $XDG_CACHE_HOME/sparsedoc/kv. Exit codes: 0 ok, 1 the cache could not be read or changed, 2 usage.
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "commands.h"
#include "kvcache.h"

static const char *cache_help =
    "usage: sparsedoc cache stats [--json] [--cache-dir DIR]\n"
    "       sparsedoc cache gc [--json] [--cache-dir DIR] [--max-age SECONDS]\n"
    "       sparsedoc cache clear [--json] [--cache-dir DIR]\n\n"
    "The persistent KV prefix cache: the engine state of 64-token blocks of contexts already read, so a\n"
    "question about the same documents skips their prefill.\n\n"
    "  stats        entries, bytes, budget, block hit rate, oldest and newest use (the default)\n"
    "  gc           remove temp files of interrupted writes, blob files without an entry and entries\n"
    "               without a file (also done at every start, for files older than an hour)\n"
    "  clear        remove every entry and blob\n\n"
    "  --cache-dir DIR  cache directory (default $SPARSEDOC_CACHE_DIR, else $XDG_CACHE_HOME/sparsedoc/kv)\n"
    "  --max-age S      gc: only remove stray files older than S seconds (default 3600; 0: all)\n"
    "  --json           machine-readable output on stdout\n";

static void fmt_time(int64_t ms, char *buf, size_t n)
{
    if (ms <= 0) {
        snprintf(buf, n, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

static int cmd_stats(struct sd_kvcache *c, int json)
{
    struct sd_kvcache_stats s;
    struct sd_err err = {0};
    if (sd_kvcache_stats(c, &s, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc cache stats: %s\n", err.msg);
        return SD_EXIT_FAIL;
    }
    if (json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "dir", json_object_new_string(sd_kvcache_path(c)));
        json_object_object_add(o, "entries", json_object_new_int64(s.entries));
        json_object_object_add(o, "chains", json_object_new_int64(s.chains));
        json_object_object_add(o, "fingerprints", json_object_new_int64(s.fingerprints));
        json_object_object_add(o, "bytes", json_object_new_int64((int64_t)s.bytes));
        json_object_object_add(o, "budget_bytes", json_object_new_int64((int64_t)s.budget));
        json_object_object_add(o, "lookups", json_object_new_int64(s.lookups));
        json_object_object_add(o, "blocks_wanted", json_object_new_int64(s.blocks_wanted));
        json_object_object_add(o, "blocks_hit", json_object_new_int64(s.blocks_hit));
        json_object_object_add(o, "blocks_dropped", json_object_new_int64(s.blocks_dropped));
        json_object_object_add(o, "hit_rate", json_object_new_double(s.hit_rate));
        json_object_object_add(o, "oldest_use_ms", json_object_new_int64(s.oldest_ms));
        json_object_object_add(o, "newest_use_ms", json_object_new_int64(s.newest_ms));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
        json_object_put(o);
        return SD_EXIT_OK;
    }
    char old[64], new[64];
    fmt_time(s.oldest_ms, old, sizeof old);
    fmt_time(s.newest_ms, new, sizeof new);
    printf("cache:     %s\n", sd_kvcache_path(c));
    printf("entries:   %lld blocks of 64 tokens in %lld chains, %lld model fingerprints\n", (long long)s.entries,
           (long long)s.chains, (long long)s.fingerprints);
    printf("bytes:     %.1f MB of a %.1f MB budget\n", (double)s.bytes / 1e6, (double)s.budget / 1e6);
    printf("hit rate:  %.1f%% of blocks (%lld of %lld over %lld restores; %lld corrupt blocks dropped)\n",
           100.0 * s.hit_rate, (long long)s.blocks_hit, (long long)s.blocks_wanted, (long long)s.lookups,
           (long long)s.blocks_dropped);
    printf("oldest:    %s (least recent use)\nnewest:    %s\n", old, new);
    return SD_EXIT_OK;
}

int sd_cmd_cache(int argc, char **argv)
{
    const char *dir = NULL, *sub = NULL;
    int json = 0, max_age = 3600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s", cache_help);
            return SD_EXIT_OK;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--cache-dir") || !strcmp(a, "--max-age")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sparsedoc cache: %s needs a value\n", a);
                return SD_EXIT_USAGE;
            }
            if (!strcmp(a, "--cache-dir")) {
                dir = argv[++i];
            } else {
                long v;
                if (sd_cli_long("cache", a, argv[++i], 0, 100000000, &v)) // seconds
                    return SD_EXIT_USAGE;
                max_age = (int)v;
            }
        } else if (a[0] == '-' || sub) {
            fprintf(stderr, "sparsedoc cache: unexpected argument '%s' (see 'sparsedoc cache --help')\n", a);
            return SD_EXIT_USAGE;
        } else {
            sub = a;
        }
    }
    if (!sub)
        sub = "stats"; // the read-only one
    if (strcmp(sub, "stats") && strcmp(sub, "gc") && strcmp(sub, "clear")) {
        fprintf(stderr, "sparsedoc cache: unknown subcommand; use stats, gc or clear (see 'sparsedoc cache --help')\n");
        return SD_EXIT_USAGE;
    }
    struct sd_err err = {0};
    struct sd_kvcache *c = NULL;
    struct sd_kvcache_opts o = {.no_gc = 1}; // gc runs only when asked here
    if (sd_kvcache_open(dir, &o, &c, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc cache %s: %s\n", sub, err.msg);
        return SD_EXIT_FAIL;
    }
    int rc = SD_EXIT_OK;
    if (!strcmp(sub, "stats")) {
        rc = cmd_stats(c, json);
    } else if (!strcmp(sub, "gc")) {
        struct sd_kvcache_gc_report r;
        if (sd_kvcache_gc(c, max_age, &r, &err) != SD_OK) {
            fprintf(stderr, "sparsedoc cache gc: %s\n", err.msg);
            rc = SD_EXIT_FAIL;
        } else if (json) {
            printf("{\"tmp_removed\": %d, \"orphans_removed\": %d, \"rows_removed\": %d}\n", r.tmp_removed,
                   r.orphans_removed, r.rows_removed);
        } else {
            printf("gc: removed %d temp files, %d blob files without an entry, %d entries without a valid file\n",
                   r.tmp_removed, r.orphans_removed, r.rows_removed);
        }
    } else {
        int n = 0;
        if (sd_kvcache_clear(c, &n, &err) != SD_OK) {
            fprintf(stderr, "sparsedoc cache clear: %s\n", err.msg);
            rc = SD_EXIT_FAIL;
        } else if (json) {
            printf("{\"entries_removed\": %d}\n", n);
        } else {
            printf("clear: removed %d entries from %s\n", n, sd_kvcache_path(c));
        }
    }
    sd_kvcache_close(c);
    return rc;
}
