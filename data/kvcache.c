// kvcache.c: the persistent KV prefix cache of kvcache.h: SHA-256 block chain (libcrypto), SQLite
// index (schema, migrations, statistics), blob files (temp write, fsync, rename, directory fsync),
// restore/store through the engine's sd_session_export/import, LRU eviction of chain tails, GC.
// SQLite and errno failures become enum sd_status here; nothing leaves this file as a SQLite code.
#include "kvcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "hex.h"
#include "session.h"
#include "sqlite_wal.h"

#define KV_MAX_BLOB (1ull << 30)     // bound on one block's blob read from disk
#define KV_DEFAULT_CAP (20ull << 30) // default budget cap: 20 GiB
#define KV_DEFAULT_MIN (64ull << 20) // default budget floor: 64 MiB
#define KV_GC_AGE_S 3600
#define KV_BUSY_MS 15000
#define KV_IDS_BYTES (SD_KV_BLOCK * 4)

struct sd_kvcache {
    char *dir;
    sqlite3 *db;
    uint64_t budget;
    uint8_t *pin; // pinned chain hashes [n_pin][32]
    int n_pin;
    unsigned tmp_counter;
};

// ---------------------------------------------------------------- small helpers

static char *xfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ids_le(const int32_t *ids, uint8_t out[KV_IDS_BYTES])
{
    for (int i = 0; i < SD_KV_BLOCK; i++) {
        uint32_t v = (uint32_t)ids[i];
        out[4 * i] = (uint8_t)v;
        out[4 * i + 1] = (uint8_t)(v >> 8);
        out[4 * i + 2] = (uint8_t)(v >> 16);
        out[4 * i + 3] = (uint8_t)(v >> 24);
    }
}

static int mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = (mkdir(p, 0700) != 0 && errno != EEXIST) ? -1 : 0;
    free(p);
    return rc;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static enum sd_status db_err(struct sd_kvcache *c, struct sd_err *err, const char *what)
{
    int code = sqlite3_extended_errcode(c->db);
    if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED)
        return sd_err_set(err, SD_ERR_IO,
                          "KV cache %s/index.db: %s: busy (another process held the lock for more "
                          "than %d ms); try again",
                          c->dir, what, KV_BUSY_MS);
    if ((code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB)
        return sd_err_set(err, SD_ERR_FORMAT,
                          "KV cache %s/index.db: %s: %s; run 'sparsedoc cache clear' or delete "
                          "the directory",
                          c->dir, what, sqlite3_errmsg(c->db));
    if ((code & 0xff) == SQLITE_READONLY || (code & 0xff) == SQLITE_CANTOPEN || (code & 0xff) == SQLITE_PERM)
        return sd_err_set(err, SD_ERR_IO,
                          "KV cache %s/index.db: %s: %s; the cache directory must be writable: pass --cache-dir "
                          "or set SPARSEDOC_CACHE_DIR to a writable place, or run without the cache (--no-cache)",
                          c->dir, what, sqlite3_errmsg(c->db));
    return sd_err_set(err, SD_ERR_IO, "KV cache %s/index.db: %s: %s", c->dir, what, sqlite3_errmsg(c->db));
}

static enum sd_status exec(struct sd_kvcache *c, const char *sql, struct sd_err *err)
{
    if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_err(c, err, sql);
    return SD_OK;
}

static enum sd_status prep(struct sd_kvcache *c, const char *sql, sqlite3_stmt **st, struct sd_err *err)
{
    if (sqlite3_prepare_v2(c->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return db_err(c, err, "prepare");
    }
    return SD_OK;
}

static int64_t query_i64(struct sd_kvcache *c, const char *sql, int64_t dflt)
{
    sqlite3_stmt *st = NULL;
    int64_t v = dflt;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
        sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

// ---------------------------------------------------------------- hashing and paths

void sd_kvcache_chain(const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids, int n_blocks, uint8_t *hashes)
{
    uint8_t buf[SD_KVCACHE_HASH_BYTES + KV_IDS_BYTES];
    const uint8_t *prev = fp;
    for (int i = 0; i < n_blocks; i++) {
        memcpy(buf, prev, SD_KVCACHE_HASH_BYTES);
        ids_le(ids + (size_t)i * SD_KV_BLOCK, buf + SD_KVCACHE_HASH_BYTES);
        unsigned int len = 0;
        EVP_Digest(buf, sizeof buf, hashes + (size_t)i * SD_KVCACHE_HASH_BYTES, &len, EVP_sha256(), NULL);
        prev = hashes + (size_t)i * SD_KVCACHE_HASH_BYTES;
    }
}

char *sd_kvcache_blob_path(const struct sd_kvcache *c, const uint8_t hash[SD_KVCACHE_HASH_BYTES])
{
    char hex[2 * SD_KVCACHE_HASH_BYTES + 1];
    sd_hex_encode(hash, SD_KVCACHE_HASH_BYTES, hex);
    return xfmt("%s/blobs/%.2s/%s.kv", c->dir, hex, hex);
}

static uint8_t *chain_of(const uint8_t *fp, const int32_t *ids, int nb)
{
    uint8_t *h = malloc((size_t)(nb > 0 ? nb : 1) * SD_KVCACHE_HASH_BYTES);
    if (h)
        sd_kvcache_chain(fp, ids, nb, h);
    return h;
}

// ---------------------------------------------------------------- open, schema, close

enum sd_status sd_kvcache_dir(const char *explicit_dir, char **out, struct sd_err *err)
{
    const char *e;
    *out = NULL;
    if (explicit_dir && *explicit_dir)
        *out = strdup(explicit_dir);
    else if ((e = getenv("SPARSEDOC_CACHE_DIR")) && *e)
        *out = strdup(e);
    else if ((e = getenv("XDG_CACHE_HOME")) && *e == '/')
        *out = xfmt("%s/sparsedoc/kv", e);
    else if ((e = getenv("HOME")) && *e)
        *out = xfmt("%s/.cache/sparsedoc/kv", e);
    else
        return sd_err_set(err, SD_ERR_ARG,
                          "no KV cache directory: set SPARSEDOC_CACHE_DIR, XDG_CACHE_HOME or HOME, "
                          "or pass --cache-dir");
    return *out ? SD_OK : sd_err_set(err, SD_ERR_NOMEM, "out of memory");
}

static const char *schema_v1 =
    "CREATE TABLE kv_block ("
    "  hash BLOB PRIMARY KEY NOT NULL,"                          // chain hash h_i (32 bytes)
    "  parent BLOB REFERENCES kv_block(hash) ON DELETE CASCADE," // h_{i-1}; NULL for block 0
    "  fingerprint BLOB NOT NULL,"
    "  block INTEGER NOT NULL," // block index i (tokens [64 i, 64 i + 64))
    "  ids BLOB NOT NULL,"      // the block's 64 token ids, little-endian int32
    "  bytes INTEGER NOT NULL," // blob file size
    "  created_ms INTEGER NOT NULL,"
    "  last_used_ms INTEGER NOT NULL,"
    "  hits INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE INDEX kv_block_parent ON kv_block(parent);"
    "CREATE INDEX kv_block_lru ON kv_block(last_used_ms);"
    "CREATE TABLE kv_counter (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO kv_counter VALUES ('lookups', 0), ('blocks_wanted', 0), ('blocks_hit', 0), ('blocks_dropped', 0);";

static enum sd_status migrate(struct sd_kvcache *c, struct sd_err *err)
{
    enum sd_status st = exec(c, "BEGIN IMMEDIATE", err);
    if (st != SD_OK)
        return st;
    int64_t v = query_i64(c, "PRAGMA user_version", -1);
    if (v < 0 || v > SD_KVCACHE_SCHEMA_VERSION) {
        exec(c, "ROLLBACK", NULL);
        if (v < 0)
            return db_err(c, err, "reading the schema version");
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "KV cache %s has schema version %lld, this build knows %d: use a "
                          "newer sparsedoc or another --cache-dir",
                          c->dir, (long long)v, SD_KVCACHE_SCHEMA_VERSION);
    }
    if (v < 1 && (st = exec(c, schema_v1, err)) != SD_OK)
        goto fail;
    // future migrations: if (v < 2) ...
    if (v < SD_KVCACHE_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SD_KVCACHE_SCHEMA_VERSION);
        if ((st = exec(c, sql, err)) != SD_OK)
            goto fail;
    }
    return exec(c, "COMMIT", err);
fail:
    exec(c, "ROLLBACK", NULL);
    return st;
}

// Switch to WAL (sqlite_wal.h retries while another process opens the same new file).
static enum sd_status set_wal(struct sd_kvcache *c, struct sd_err *err)
{
    int wal = 0;
    if (sd_sqlite_set_wal(c->db, KV_BUSY_MS, &wal) != SQLITE_OK)
        return db_err(c, err, "PRAGMA journal_mode=WAL");
    if (!wal)
        return sd_err_set(err, SD_ERR_IO,
                          "KV cache %s/index.db: cannot switch to WAL mode (is it on a network filesystem?)", c->dir);
    return SD_OK;
}

static uint64_t default_budget(const char *dir)
{
    const char *e = getenv("SPARSEDOC_CACHE_BUDGET");
    if (e && *e) {
        char *end;
        unsigned long long v = strtoull(e, &end, 10);
        if (end != e && v > 0)
            return v;
    }
    struct statvfs vf;
    uint64_t b = KV_DEFAULT_CAP;
    if (statvfs(dir, &vf) == 0)
        b = (uint64_t)vf.f_bavail * vf.f_frsize / 10;
    if (b > KV_DEFAULT_CAP)
        b = KV_DEFAULT_CAP;
    if (b < KV_DEFAULT_MIN)
        b = KV_DEFAULT_MIN;
    return b;
}

enum sd_status sd_kvcache_open(const char *dir, const struct sd_kvcache_opts *opts, struct sd_kvcache **out,
                               struct sd_err *err)
{
    enum sd_status st;
    *out = NULL;
    struct sd_kvcache *c = calloc(1, sizeof *c);
    if (!c)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    if ((st = sd_kvcache_dir(dir, &c->dir, err)) != SD_OK)
        goto fail;
    char *blobs = xfmt("%s/blobs", c->dir), *tmp = xfmt("%s/tmp", c->dir), *db = xfmt("%s/index.db", c->dir);
    // An existing but read-only directory (or file system) is refused here, before SQLite opens the
    // index read-only and fails later with a vaguer message.
    int bad = !blobs || !tmp || !db || mkdir_p(c->dir) || mkdir_p(blobs) || mkdir_p(tmp) ||
              access(c->dir, W_OK) || access(blobs, W_OK) || access(tmp, W_OK);
    int saved = errno;
    free(blobs);
    free(tmp);
    if (bad) {
        free(db);
        st = sd_err_set(err, SD_ERR_IO,
                        "cannot create or write the KV cache directory %s: %s; pass --cache-dir or set "
                        "SPARSEDOC_CACHE_DIR to a writable place, or run without the cache (--no-cache)",
                        c->dir, strerror(saved));
        goto fail;
    }
    int rc = sqlite3_open_v2(db, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    free(db);
    if (rc != SQLITE_OK) {
        st = c->db ? db_err(c, err, "open") : sd_err_set(err, SD_ERR_NOMEM, "out of memory opening SQLite");
        goto fail;
    }
    sqlite3_busy_timeout(c->db, KV_BUSY_MS);
    sqlite3_extended_result_codes(c->db, 1);
    if ((st = set_wal(c, err)) != SD_OK ||
        (st = exec(c, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", err)) != SD_OK)
        goto fail;
    if ((st = migrate(c, err)) != SD_OK)
        goto fail;
    c->budget = opts && opts->budget_bytes ? opts->budget_bytes : default_budget(c->dir);
    if (!(opts && opts->no_gc)) {
        int age = opts && opts->gc_age_s > 0 ? opts->gc_age_s : KV_GC_AGE_S;
        if ((st = sd_kvcache_gc(c, age, NULL, err)) != SD_OK)
            goto fail;
    }
    *out = c;
    return SD_OK;
fail:
    sd_kvcache_close(c);
    return st;
}

void sd_kvcache_close(struct sd_kvcache *c)
{
    if (!c)
        return;
    sqlite3_close(c->db);
    free(c->pin);
    free(c->dir);
    free(c);
}

const char *sd_kvcache_path(const struct sd_kvcache *c)
{
    return c->dir;
}

uint64_t sd_kvcache_budget(const struct sd_kvcache *c)
{
    return c->budget;
}

// ---------------------------------------------------------------- pinning

void sd_kvcache_unpin(struct sd_kvcache *c)
{
    free(c->pin);
    c->pin = NULL;
    c->n_pin = 0;
}

void sd_kvcache_pin(struct sd_kvcache *c, const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids, int n_ids)
{
    sd_kvcache_unpin(c);
    int nb = n_ids > 0 ? n_ids / SD_KV_BLOCK : 0;
    if (nb > 0 && (c->pin = chain_of(fp, ids, nb)))
        c->n_pin = nb;
}

static int is_pinned(const struct sd_kvcache *c, const void *hash)
{
    for (int i = 0; i < c->n_pin; i++)
        if (!memcmp(c->pin + (size_t)i * SD_KVCACHE_HASH_BYTES, hash, SD_KVCACHE_HASH_BYTES))
            return 1;
    return 0;
}

// ---------------------------------------------------------------- lookup

// Blocks 0..nb-1 present with matching ids, walking from block 0; returns the count (< 0: SQLite error).
static int walk_chain(struct sd_kvcache *c, const uint8_t *hashes, const int32_t *ids, int nb, int64_t *bytes)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(c->db, "SELECT ids, bytes FROM kv_block WHERE hash = ?1", -1, &q, NULL) != SQLITE_OK)
        return -1;
    int i = 0, rc = SQLITE_OK;
    for (; i < nb; i++) {
        sqlite3_bind_blob(q, 1, hashes + (size_t)i * SD_KVCACHE_HASH_BYTES, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
        rc = sqlite3_step(q);
        if (rc != SQLITE_ROW)
            break;
        uint8_t want[KV_IDS_BYTES];
        ids_le(ids + (size_t)i * SD_KV_BLOCK, want);
        const void *got = sqlite3_column_blob(q, 0);
        int match = got && sqlite3_column_bytes(q, 0) == KV_IDS_BYTES && !memcmp(got, want, KV_IDS_BYTES);
        if (bytes)
            bytes[i] = sqlite3_column_int64(q, 1);
        sqlite3_reset(q);
        if (!match)
            break; // a different block under the same key: a miss, never an error
    }
    sqlite3_finalize(q);
    return (rc == SQLITE_ROW || rc == SQLITE_DONE || rc == SQLITE_OK) ? i : -1;
}

enum sd_status sd_kvcache_lookup(struct sd_kvcache *c, const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids,
                                 int n_ids, int *n_blocks_hit, struct sd_err *err)
{
    *n_blocks_hit = 0;
    int nb = n_ids > 0 ? n_ids / SD_KV_BLOCK : 0;
    if (nb == 0)
        return SD_OK;
    uint8_t *h = chain_of(fp, ids, nb);
    if (!h)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory hashing %d blocks", nb);
    int k = walk_chain(c, h, ids, nb, NULL);
    free(h);
    if (k < 0)
        return db_err(c, err, "lookup");
    *n_blocks_hit = k;
    return SD_OK;
}

// ---------------------------------------------------------------- dropping entries

// Delete the row of hash and all its descendants (ON DELETE CASCADE), then their files.
static enum sd_status drop_subtree(struct sd_kvcache *c, const uint8_t *hash, int *n_rows, struct sd_err *err)
{
    sqlite3_stmt *q = NULL, *d = NULL;
    uint8_t *list = NULL;
    size_t n = 0, cap = 0;
    enum sd_status st = exec(c, "BEGIN IMMEDIATE", err);
    if (st != SD_OK)
        return st;
    if ((st = prep(c,
                   "WITH RECURSIVE sub(h) AS (SELECT ?1 UNION ALL "
                   "SELECT k.hash FROM kv_block k JOIN sub ON k.parent = sub.h) "
                   "SELECT h FROM sub WHERE h IN (SELECT hash FROM kv_block) OR h = ?1",
                   &q, err)) != SD_OK)
        goto fail;
    sqlite3_bind_blob(q, 1, hash, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(q, 0) != SD_KVCACHE_HASH_BYTES)
            continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            uint8_t *nl = realloc(list, nc * SD_KVCACHE_HASH_BYTES);
            if (!nl) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                goto fail;
            }
            list = nl;
            cap = nc;
        }
        memcpy(list + n++ * SD_KVCACHE_HASH_BYTES, sqlite3_column_blob(q, 0), SD_KVCACHE_HASH_BYTES);
    }
    if (rc != SQLITE_DONE) {
        st = db_err(c, err, "listing descendants");
        goto fail;
    }
    if ((st = prep(c, "DELETE FROM kv_block WHERE hash = ?1", &d, err)) != SD_OK)
        goto fail;
    sqlite3_bind_blob(d, 1, hash, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
    if (sqlite3_step(d) != SQLITE_DONE) {
        st = db_err(c, err, "deleting an entry");
        goto fail;
    }
    sqlite3_finalize(q);
    sqlite3_finalize(d);
    q = d = NULL;
    if ((st = exec(c, "COMMIT", err)) != SD_OK)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        char *p = sd_kvcache_blob_path(c, list + i * SD_KVCACHE_HASH_BYTES);
        if (p)
            unlink(p);
        free(p);
    }
    if (n_rows)
        *n_rows += (int)n;
    free(list);
    return SD_OK;
fail:
    sqlite3_finalize(q);
    sqlite3_finalize(d);
    exec(c, "ROLLBACK", NULL);
    free(list);
    return st;
}

// ---------------------------------------------------------------- restore

// Read a blob file of exactly `expect` bytes. Returns 1 ok, 0 missing/wrong size/unreadable.
static int read_blob(const char *path, int64_t expect, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (expect <= 0 || (uint64_t)expect > KV_MAX_BLOB)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat sb;
    uint8_t *b = NULL;
    int ok = 0;
    if (fstat(fd, &sb) != 0 || sb.st_size != expect || !(b = malloc((size_t)expect)))
        goto out;
    size_t got = 0;
    while (got < (size_t)expect) {
        ssize_t k = read(fd, b + got, (size_t)expect - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            goto out;
        got += (size_t)k;
    }
    ok = 1;
out:
    close(fd);
    if (!ok) {
        free(b);
        return 0;
    }
    *buf = b;
    *len = (size_t)expect;
    return 1;
}

static void record_use(struct sd_kvcache *c, const uint8_t *hashes, int n_hit, int wanted, int dropped)
{
    // Best effort: statistics never fail a restore that succeeded.
    if (exec(c, "BEGIN IMMEDIATE", NULL) != SD_OK)
        return;
    sqlite3_stmt *u = NULL, *k = NULL;
    int ok = sqlite3_prepare_v2(c->db, "UPDATE kv_block SET hits = hits + 1, last_used_ms = ?2 WHERE hash = ?1", -1, &u,
                                NULL) == SQLITE_OK &&
             sqlite3_prepare_v2(c->db, "UPDATE kv_counter SET value = value + ?2 WHERE name = ?1", -1, &k, NULL) ==
                 SQLITE_OK;
    int64_t t = now_ms();
    for (int i = 0; ok && i < n_hit; i++) {
        sqlite3_bind_blob(u, 1, hashes + (size_t)i * SD_KVCACHE_HASH_BYTES, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(u, 2, t);
        ok = sqlite3_step(u) == SQLITE_DONE;
        sqlite3_reset(u);
    }
    const char *names[4] = {"lookups", "blocks_wanted", "blocks_hit", "blocks_dropped"};
    int64_t vals[4] = {1, wanted, n_hit, dropped};
    for (int i = 0; ok && i < 4; i++) {
        sqlite3_bind_text(k, 1, names[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(k, 2, vals[i]);
        ok = sqlite3_step(k) == SQLITE_DONE;
        sqlite3_reset(k);
    }
    sqlite3_finalize(u);
    sqlite3_finalize(k);
    exec(c, ok ? "COMMIT" : "ROLLBACK", NULL);
}

enum sd_status sd_kvcache_restore(struct sd_kvcache *c, const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids,
                                  int n_ids, struct sd_session *s, struct sd_kvcache_restore_info *info,
                                  struct sd_err *err)
{
    memset(info, 0, sizeof *info);
    if (sd_session_pos(s) != 0)
        return sd_err_set(err, SD_ERR_ARG, "KV cache restore needs an empty session (it holds %d tokens)",
                          sd_session_pos(s));
    int nb_all = n_ids > 0 ? n_ids / SD_KV_BLOCK : 0;
    int nb = n_ids > 0 ? (n_ids - 1) / SD_KV_BLOCK : 0;
    if (nb > sd_session_n_ctx(s) / SD_KV_BLOCK)
        nb = sd_session_n_ctx(s) / SD_KV_BLOCK;
    sd_kvcache_pin(c, fp, ids, n_ids);
    if (nb_all == 0)
        return SD_OK;
    uint8_t *h = chain_of(fp, ids, nb_all);
    int64_t *bytes = calloc((size_t)nb_all, sizeof *bytes);
    enum sd_status st = SD_OK;
    if (!h || !bytes) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory hashing %d blocks", nb_all);
        goto out;
    }
    int found = nb > 0 ? walk_chain(c, h, ids, nb, bytes) : 0;
    if (found < 0) {
        st = db_err(c, err, "lookup");
        goto out;
    }
    info->blocks_found = found;
    for (int i = 0; i < found; i++) {
        const uint8_t *hi = h + (size_t)i * SD_KVCACHE_HASH_BYTES;
        char *path = sd_kvcache_blob_path(c, hi);
        uint8_t *blob = NULL;
        size_t len = 0;
        int fb = -1, n = -1, corrupt = 1;
        struct sd_err ierr = {0};
        if (path && read_blob(path, bytes[i], &blob, &len) && sd_kv_blob_info(blob, len, &fb, &n, &ierr) == SD_OK &&
            fb == i && n == 1) {
            enum sd_status is = sd_session_import(s, blob, len, &ierr);
            corrupt = is == SD_ERR_CHECKSUM || is == SD_ERR_FORMAT || is == SD_ERR_UNSUPPORTED;
            if (is == SD_OK) {
                info->blocks_restored++;
                info->tokens_restored = info->blocks_restored * SD_KV_BLOCK;
            } else if (!corrupt) {
                // not the blob's fault (e.g. session too small): stop, keep the entry
                free(blob);
                free(path);
                break;
            }
        }
        free(blob);
        free(path);
        if (info->blocks_restored == i + 1)
            continue;
        if (corrupt) {
            int dropped = 0;
            info->blocks_dropped = 1;
            if ((st = drop_subtree(c, hi, &dropped, err)) != SD_OK)
                goto out;
        }
        break;
    }
    record_use(c, h, info->blocks_restored, nb, info->blocks_dropped);
    if (sd_session_pos(s) != info->tokens_restored)
        st = sd_err_set(err, SD_ERR_FORMAT, "KV cache restore inconsistency: session at %d tokens, %d restored",
                        sd_session_pos(s), info->tokens_restored);
out:
    free(h);
    free(bytes);
    return st;
}

// ---------------------------------------------------------------- store

static enum sd_status write_file(const char *path, const void *data, size_t len, struct sd_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return sd_err_set(err, SD_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    const uint8_t *p = data;
    size_t left = len;
    while (left) {
        ssize_t k = write(fd, p, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? errno : ENOSPC;
            close(fd);
            unlink(path);
            return sd_err_set(err, SD_ERR_IO, "%s: write failed: %s (is the cache disk full?)", path, strerror(e));
        }
        p += k;
        left -= (size_t)k;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(path);
        return sd_err_set(err, SD_ERR_IO, "%s: fsync failed: %s", path, strerror(e));
    }
    return SD_OK;
}

static enum sd_status store_once(struct sd_kvcache *c, const uint8_t *fp, const int32_t *ids, int n_ids,
                                 const struct sd_session *s, int *n_stored, int *parent_gone, struct sd_err *err)
{
    if (n_stored)
        *n_stored = 0;
    int pos = sd_session_pos(s);
    int nb = (n_ids < pos ? n_ids : pos) / SD_KV_BLOCK;
    sd_kvcache_pin(c, fp, ids, nb * SD_KV_BLOCK);
    if (nb <= 0)
        return SD_OK;
    enum sd_status st = SD_OK;
    uint8_t *h = chain_of(fp, ids, nb);
    int64_t *bytes = calloc((size_t)nb, sizeof *bytes);
    char **tmp = calloc((size_t)nb, sizeof *tmp), **fin = calloc((size_t)nb, sizeof *fin);
    sqlite3_stmt *ins = NULL;
    int k = 0, in_txn = 0;
    if (!h || !bytes || !tmp || !fin) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((k = walk_chain(c, h, ids, nb, NULL)) < 0) {
        st = db_err(c, err, "lookup");
        k = 0;
        goto out;
    }
    // Rows exist for blocks [0, k) (a parent always exists before its child). Write [k, nb).
    for (int i = k; i < nb; i++) {
        void *blob = NULL;
        size_t len = 0;
        char hex[2 * SD_KVCACHE_HASH_BYTES + 1];
        sd_hex_encode(h + (size_t)i * SD_KVCACHE_HASH_BYTES, SD_KVCACHE_HASH_BYTES, hex);
        if ((st = sd_session_export(s, i, 1, &blob, &len, err)) != SD_OK)
            goto out;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        tmp[i] = xfmt("%s/tmp/%.16s.%ld.%u.%lx.tmp", c->dir, hex, (long)getpid(), c->tmp_counter++,
                      (unsigned long)ts.tv_nsec);
        fin[i] = sd_kvcache_blob_path(c, h + (size_t)i * SD_KVCACHE_HASH_BYTES);
        if (!tmp[i] || !fin[i]) {
            free(blob);
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        st = write_file(tmp[i], blob, len, err);
        free(blob);
        if (st != SD_OK) {
            free(tmp[i]);
            tmp[i] = NULL;
            goto out;
        }
        bytes[i] = (int64_t)len;
    }
    // Rename into place (atomic; a concurrent writer of the same key wrote the same prefix's state), then
    // make the renames durable before any row points at them.
    for (int i = k; i < nb; i++) {
        char *sub = strdup(fin[i]);
        if (!sub) {
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        *strrchr(sub, '/') = 0;
        int made = mkdir(sub, 0700) == 0;
        if ((!made && errno != EEXIST) || rename(tmp[i], fin[i]) != 0) {
            st = sd_err_set(err, SD_ERR_IO, "%s: cannot move the blob into place: %s", fin[i], strerror(errno));
            free(sub);
            goto out;
        }
        free(tmp[i]);
        tmp[i] = NULL;
        int synced = fsync_dir(sub) == 0;
        if (made) {
            *strrchr(sub, '/') = 0;
            synced = synced && fsync_dir(sub) == 0;
        }
        free(sub);
        if (!synced) {
            st = sd_err_set(err, SD_ERR_IO, "%s: fsync of its directory failed: %s", fin[i], strerror(errno));
            goto out;
        }
    }
    if ((st = exec(c, "BEGIN IMMEDIATE", err)) != SD_OK)
        goto out;
    in_txn = 1;
    if ((st = prep(c,
                   "INSERT OR IGNORE INTO kv_block (hash, parent, fingerprint, block, ids, bytes, created_ms, "
                   "last_used_ms, hits) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 0)",
                   &ins, err)) != SD_OK)
        goto out;
    int64_t t = now_ms();
    int added = 0;
    for (int i = k; i < nb; i++) {
        uint8_t idb[KV_IDS_BYTES];
        ids_le(ids + (size_t)i * SD_KV_BLOCK, idb);
        sqlite3_bind_blob(ins, 1, h + (size_t)i * SD_KVCACHE_HASH_BYTES, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
        if (i == 0)
            sqlite3_bind_null(ins, 2);
        else
            sqlite3_bind_blob(ins, 2, h + (size_t)(i - 1) * SD_KVCACHE_HASH_BYTES, SD_KVCACHE_HASH_BYTES,
                              SQLITE_STATIC);
        sqlite3_bind_blob(ins, 3, fp, SD_KVCACHE_FP_BYTES, SQLITE_STATIC);
        sqlite3_bind_int(ins, 4, i);
        sqlite3_bind_blob(ins, 5, idb, KV_IDS_BYTES, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 6, bytes[i]);
        sqlite3_bind_int64(ins, 7, t);
        if (sqlite3_step(ins) != SQLITE_DONE) {
            // The parent was evicted by another process since the lookup: nothing is stored (the files
            // just written stay for the retry or for GC).
            *parent_gone = sqlite3_extended_errcode(c->db) == SQLITE_CONSTRAINT_FOREIGNKEY;
            st = db_err(c, err, "inserting entries");
            goto out;
        }
        added += sqlite3_changes(c->db);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    ins = NULL;
    if ((st = exec(c, "COMMIT", err)) != SD_OK)
        goto out;
    in_txn = 0;
    if (n_stored)
        *n_stored = added;
    st = sd_kvcache_evict(c, 0, NULL, err);
out:
    sqlite3_finalize(ins);
    if (in_txn)
        exec(c, "ROLLBACK", NULL);
    for (int i = 0; tmp && i < nb; i++) {
        if (tmp[i])
            unlink(tmp[i]);
        free(tmp[i]);
    }
    for (int i = 0; fin && i < nb; i++)
        free(fin[i]);
    free(tmp);
    free(fin);
    free(h);
    free(bytes);
    return st;
}

enum sd_status sd_kvcache_store(struct sd_kvcache *c, const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids,
                                int n_ids, const struct sd_session *s, int *n_stored, struct sd_err *err)
{
    int parent_gone = 0;
    enum sd_status st = store_once(c, fp, ids, n_ids, s, n_stored, &parent_gone, err);
    if (st != SD_OK && parent_gone) { // once more: the lookup now sees the shorter prefix
        parent_gone = 0;
        st = store_once(c, fp, ids, n_ids, s, n_stored, &parent_gone, err);
    }
    return st;
}

// ---------------------------------------------------------------- eviction

struct evict_cand {
    uint8_t hash[SD_KVCACHE_HASH_BYTES];
    uint8_t parent[SD_KVCACHE_HASH_BYTES];
    int has_parent;
    int64_t last_used, block, bytes;
};

// Eviction order: least recently used first; at equal use time, the deepest block (chain tail) first.
static int cand_before(const struct evict_cand *a, const struct evict_cand *b)
{
    return a->last_used != b->last_used ? a->last_used < b->last_used : a->block > b->block;
}

static void cand_read(sqlite3_stmt *q, struct evict_cand *e)
{
    memcpy(e->hash, sqlite3_column_blob(q, 0), SD_KVCACHE_HASH_BYTES);
    e->has_parent = sqlite3_column_bytes(q, 1) == SD_KVCACHE_HASH_BYTES;
    if (e->has_parent)
        memcpy(e->parent, sqlite3_column_blob(q, 1), SD_KVCACHE_HASH_BYTES);
    e->last_used = sqlite3_column_int64(q, 2);
    e->block = sqlite3_column_int64(q, 3);
    e->bytes = sqlite3_column_int64(q, 4);
}

#define EVICT_BATCH 256

enum sd_status sd_kvcache_evict(struct sd_kvcache *c, uint64_t budget, int *n_evicted, struct sd_err *err)
{
    if (n_evicted)
        *n_evicted = 0;
    if (!budget)
        budget = c->budget;
    int64_t total = query_i64(c, "SELECT COALESCE(SUM(bytes), 0) FROM kv_block", -1);
    if (total < 0)
        return db_err(c, err, "summing entry sizes");
    if ((uint64_t)total <= budget)
        return SD_OK;
    enum sd_status st = exec(c, "BEGIN IMMEDIATE", err);
    if (st != SD_OK)
        return st;
    sqlite3_stmt *q = NULL, *d = NULL, *row = NULL, *kid = NULL;
    uint8_t *gone = NULL;
    size_t n_gone = 0, cap = 0;
    struct evict_cand *batch = malloc(2 * EVICT_BATCH * sizeof *batch), *exposed;
    if (!batch) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    exposed = batch + EVICT_BATCH; // no arithmetic on a NULL pointer
    total = query_i64(c, "SELECT COALESCE(SUM(bytes), 0) FROM kv_block", 0); // inside the lock
    if ((st = prep(c,
                   "SELECT hash, parent, last_used_ms, block, bytes FROM kv_block b WHERE NOT EXISTS "
                   "(SELECT 1 FROM kv_block k WHERE k.parent = b.hash) "
                   "ORDER BY last_used_ms ASC, block DESC LIMIT 256",
                   &q, err)) != SD_OK ||
        (st = prep(c, "DELETE FROM kv_block WHERE hash = ?1", &d, err)) != SD_OK ||
        (st = prep(c, "SELECT hash, parent, last_used_ms, block, bytes FROM kv_block WHERE hash = ?1", &row, err)) !=
            SD_OK ||
        (st = prep(c, "SELECT 1 FROM kv_block WHERE parent = ?1 LIMIT 1", &kid, err)) != SD_OK)
        goto fail;
    for (int progress = 1; (uint64_t)total > budget && progress;) {
        // A batch of current leaves (read fully before any delete), merged with the parents that become
        // leaves as their tails go, so the global LRU order holds across chains.
        int nb = 0, ne = 0, bi = 0;
        while (nb < EVICT_BATCH && sqlite3_step(q) == SQLITE_ROW) {
            if (sqlite3_column_bytes(q, 0) != SD_KVCACHE_HASH_BYTES || is_pinned(c, sqlite3_column_blob(q, 0)))
                continue;
            cand_read(q, &batch[nb++]);
        }
        sqlite3_reset(q);
        progress = 0;
        while ((uint64_t)total > budget && (bi < nb || ne > 0)) {
            int ei = -1;
            for (int j = 0; j < ne; j++)
                if (ei < 0 || cand_before(&exposed[j], &exposed[ei]))
                    ei = j;
            struct evict_cand cur;
            if (ei >= 0 && (bi >= nb || cand_before(&exposed[ei], &batch[bi]))) {
                cur = exposed[ei];
                exposed[ei] = exposed[--ne];
                // still a leaf (a parent may have other children) and not in use?
                sqlite3_bind_blob(kid, 1, cur.hash, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
                int has_kid = sqlite3_step(kid) == SQLITE_ROW;
                sqlite3_reset(kid);
                if (has_kid || is_pinned(c, cur.hash))
                    continue;
            } else if (bi < nb) {
                cur = batch[bi++];
            } else {
                break;
            }
            if (n_gone == cap) {
                size_t ncap = cap ? 2 * cap : 256;
                uint8_t *ng = realloc(gone, ncap * SD_KVCACHE_HASH_BYTES);
                if (!ng) {
                    st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                    goto fail;
                }
                gone = ng;
                cap = ncap;
            }
            memcpy(gone + n_gone * SD_KVCACHE_HASH_BYTES, cur.hash, SD_KVCACHE_HASH_BYTES);
            sqlite3_bind_blob(d, 1, cur.hash, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
            if (sqlite3_step(d) != SQLITE_DONE) {
                st = db_err(c, err, "evicting an entry");
                goto fail;
            }
            sqlite3_reset(d);
            n_gone++;
            total -= cur.bytes;
            progress = 1;
            if (cur.has_parent && ne < EVICT_BATCH) {
                sqlite3_bind_blob(row, 1, cur.parent, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
                if (sqlite3_step(row) == SQLITE_ROW && sqlite3_column_bytes(row, 0) == SD_KVCACHE_HASH_BYTES)
                    cand_read(row, &exposed[ne++]);
                sqlite3_reset(row);
            } else if (cur.has_parent) {
                break; // frontier full: re-query
            }
        }
    }
    sqlite3_finalize(q);
    sqlite3_finalize(d);
    sqlite3_finalize(row);
    sqlite3_finalize(kid);
    q = d = row = kid = NULL;
    if ((st = exec(c, "COMMIT", err)) != SD_OK)
        goto fail;
    for (size_t i = 0; i < n_gone; i++) {
        char *p = sd_kvcache_blob_path(c, gone + i * SD_KVCACHE_HASH_BYTES);
        if (p)
            unlink(p);
        free(p);
    }
    if (n_evicted)
        *n_evicted = (int)n_gone;
    free(gone);
    free(batch);
    return SD_OK;
fail:
    sqlite3_finalize(q);
    sqlite3_finalize(d);
    sqlite3_finalize(row);
    sqlite3_finalize(kid);
    exec(c, "ROLLBACK", NULL);
    free(gone);
    free(batch);
    return st;
}

// ---------------------------------------------------------------- GC, clear

static int older_than(const struct stat *sb, int max_age_s)
{
    return max_age_s <= 0 || sb->st_mtime <= time(NULL) - max_age_s;
}

enum sd_status sd_kvcache_gc(struct sd_kvcache *c, int max_age_s, struct sd_kvcache_gc_report *report,
                             struct sd_err *err)
{
    struct sd_kvcache_gc_report r = {0};
    enum sd_status st = SD_OK;
    sqlite3_stmt *q = NULL;
    struct stat sb;
    // 1. temp files left by crashed or killed writers
    char *tdir = xfmt("%s/tmp", c->dir);
    DIR *d = tdir ? opendir(tdir) : NULL;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".tmp"))
            continue;
        char *p = xfmt("%s/%s", tdir, e->d_name);
        if (p && lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && older_than(&sb, max_age_s) && unlink(p) == 0)
            r.tmp_removed++;
        free(p);
    }
    if (d)
        closedir(d);
    free(tdir);
    // 2. blob files without a row (written, then the process died before its commit)
    if ((st = prep(c, "SELECT 1 FROM kv_block WHERE hash = ?1", &q, err)) != SD_OK)
        return st;
    char *bdir = xfmt("%s/blobs", c->dir);
    DIR *bd = bdir ? opendir(bdir) : NULL;
    for (struct dirent *e; bd && (e = readdir(bd));) {
        if (strlen(e->d_name) != 2 || e->d_name[0] == '.')
            continue;
        char *sub = xfmt("%s/%s", bdir, e->d_name);
        DIR *sd = sub ? opendir(sub) : NULL;
        for (struct dirent *f; sd && (f = readdir(sd));) {
            uint8_t hash[SD_KVCACHE_HASH_BYTES];
            if (strlen(f->d_name) != 2 * SD_KVCACHE_HASH_BYTES + 3 || strcmp(f->d_name + 64, ".kv") ||
                sd_hex_decode(f->d_name, hash, SD_KVCACHE_HASH_BYTES))
                continue;
            sqlite3_bind_blob(q, 1, hash, SD_KVCACHE_HASH_BYTES, SQLITE_STATIC);
            int rc = sqlite3_step(q);
            sqlite3_reset(q);
            if (rc == SQLITE_ROW)
                continue;
            if (rc != SQLITE_DONE) {
                st = db_err(c, err, "GC");
                closedir(sd);
                free(sub);
                goto out;
            }
            char *p = xfmt("%s/%s", sub, f->d_name);
            if (p && lstat(p, &sb) == 0 && older_than(&sb, max_age_s) && unlink(p) == 0)
                r.orphans_removed++;
            free(p);
        }
        if (sd)
            closedir(sd);
        free(sub);
    }
    sqlite3_finalize(q);
    q = NULL;
    // 3. rows whose file is missing or of the wrong size (they and their descendants are unusable)
    for (int again = 1; again;) {
        again = 0;
        if ((st = prep(c, "SELECT hash, bytes FROM kv_block", &q, err)) != SD_OK)
            goto out;
        uint8_t bad[SD_KVCACHE_HASH_BYTES];
        int rc;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            if (sqlite3_column_bytes(q, 0) != SD_KVCACHE_HASH_BYTES)
                continue;
            char *p = sd_kvcache_blob_path(c, sqlite3_column_blob(q, 0));
            int ok = p && stat(p, &sb) == 0 && sb.st_size == sqlite3_column_int64(q, 1);
            free(p);
            if (!ok) {
                memcpy(bad, sqlite3_column_blob(q, 0), SD_KVCACHE_HASH_BYTES);
                again = 1;
                break;
            }
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            st = db_err(c, err, "GC scan");
            goto out;
        }
        sqlite3_finalize(q);
        q = NULL;
        if (again && (st = drop_subtree(c, bad, &r.rows_removed, err)) != SD_OK)
            goto out;
    }
out:
    sqlite3_finalize(q);
    if (bd)
        closedir(bd);
    free(bdir);
    if (report)
        *report = r;
    return st;
}

enum sd_status sd_kvcache_clear(struct sd_kvcache *c, int *n_removed, struct sd_err *err)
{
    if (n_removed)
        *n_removed = 0;
    sqlite3_stmt *q = NULL;
    uint8_t *all = NULL;
    size_t n = 0, cap = 0;
    enum sd_status st = exec(c, "BEGIN IMMEDIATE", err);
    if (st != SD_OK)
        return st;
    if ((st = prep(c, "SELECT hash FROM kv_block", &q, err)) != SD_OK)
        goto fail;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(q, 0) != SD_KVCACHE_HASH_BYTES)
            continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 256;
            uint8_t *na = realloc(all, nc * SD_KVCACHE_HASH_BYTES);
            if (!na) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                goto fail;
            }
            all = na;
            cap = nc;
        }
        memcpy(all + n++ * SD_KVCACHE_HASH_BYTES, sqlite3_column_blob(q, 0), SD_KVCACHE_HASH_BYTES);
    }
    sqlite3_finalize(q);
    q = NULL;
    if (rc != SQLITE_DONE) {
        st = db_err(c, err, "listing entries");
        goto fail;
    }
    if ((st = exec(c, "DELETE FROM kv_block; UPDATE kv_counter SET value = 0;", err)) != SD_OK ||
        (st = exec(c, "COMMIT", err)) != SD_OK)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        char *p = sd_kvcache_blob_path(c, all + i * SD_KVCACHE_HASH_BYTES);
        if (p)
            unlink(p);
        free(p);
    }
    free(all);
    if (n_removed)
        *n_removed = (int)n;
    return SD_OK;
fail:
    sqlite3_finalize(q);
    exec(c, "ROLLBACK", NULL);
    free(all);
    return st;
}

// ---------------------------------------------------------------- stats, integrity

enum sd_status sd_kvcache_stats(struct sd_kvcache *c, struct sd_kvcache_stats *s, struct sd_err *err)
{
    memset(s, 0, sizeof *s);
    sqlite3_stmt *q = NULL;
    enum sd_status st = prep(c,
                             "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(MIN(last_used_ms), 0), "
                             "COALESCE(MAX(last_used_ms), 0), COUNT(DISTINCT fingerprint), "
                             "COALESCE(SUM(parent IS NULL), 0) FROM kv_block",
                             &q, err);
    if (st != SD_OK)
        return st;
    if (sqlite3_step(q) != SQLITE_ROW) {
        st = db_err(c, err, "stats");
        sqlite3_finalize(q);
        return st;
    }
    s->entries = sqlite3_column_int64(q, 0);
    s->bytes = (uint64_t)sqlite3_column_int64(q, 1);
    s->oldest_ms = sqlite3_column_int64(q, 2);
    s->newest_ms = sqlite3_column_int64(q, 3);
    s->fingerprints = sqlite3_column_int64(q, 4);
    s->chains = sqlite3_column_int64(q, 5);
    sqlite3_finalize(q);
    s->lookups = query_i64(c, "SELECT value FROM kv_counter WHERE name = 'lookups'", 0);
    s->blocks_wanted = query_i64(c, "SELECT value FROM kv_counter WHERE name = 'blocks_wanted'", 0);
    s->blocks_hit = query_i64(c, "SELECT value FROM kv_counter WHERE name = 'blocks_hit'", 0);
    s->blocks_dropped = query_i64(c, "SELECT value FROM kv_counter WHERE name = 'blocks_dropped'", 0);
    s->hit_rate = s->blocks_wanted > 0 ? (double)s->blocks_hit / (double)s->blocks_wanted : 0.0;
    s->budget = c->budget;
    return SD_OK;
}

enum sd_status sd_kvcache_integrity_check(struct sd_kvcache *c, struct sd_err *err)
{
    sqlite3_stmt *q = NULL;
    enum sd_status st = prep(c, "PRAGMA integrity_check", &q, err);
    if (st != SD_OK)
        return st;
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW)
        st = db_err(c, err, "integrity_check");
    else if (strcmp((const char *)sqlite3_column_text(q, 0), "ok"))
        st = sd_err_set(err, SD_ERR_FORMAT, "KV cache %s/index.db fails integrity_check: %s", c->dir,
                        (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    if (st == SD_OK && query_i64(c, "SELECT COUNT(*) FROM pragma_foreign_key_check('kv_block')", 0) != 0)
        st = sd_err_set(err, SD_ERR_FORMAT, "KV cache %s/index.db has entries whose parent is missing", c->dir);
    return st;
}
