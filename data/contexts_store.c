// contexts_store.c: persisted contexts (see contexts_store.h). The tables are created by migration 4 in
// store.c. A set's rows are written in one BEGIN IMMEDIATE transaction after the documents' state is
// re-read under the write lock (a document changed while its contexts were built is not saved). Row
// layout: tokens = n_tokens little-endian int32; spans = n_spans records of SPAN_REC bytes, little-endian:
// span_id i64, doc_id i64, part i32, page_no i32, line_start i32, line_end i32, tok_offset u32, n_tokens
// u32; checksum = XXH3-64 of (ord, n_tokens, n_spans as u32 LE, tokens, spans), seeded with the XXH3-64
// of the set's key, so a row moved to another set fails too.
#include "contexts_store.h"

#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "hex.h"
#include "ingest.h"

#define SPAN_REC 40
#define MAX_CONTEXTS_PER_SET (1 << 20) // bounds n_contexts read back from a row before allocating
#define STR_(x) #x
#define STR(x) STR_(x)

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_LE 1
#else
#define HOST_LE 0
#endif

// The identity of a set: scope key and the other key columns, plus the checksum seed derived from them.
struct set_key {
    char scope[65]; // hex SHA-256 of the canonical scope text
    const char *tokenizer;
    int64_t max_tokens;
    int format;
    uint64_t seed;
    int64_t n_docs;
};

static enum sd_status sql_err(struct sd_store *s, struct sd_err *err, const char *what)
{
    sqlite3 *db = sd_store_db(s);
    int code = sqlite3_errcode(db);
    enum sd_status st = code == SQLITE_NOMEM                                ? SD_ERR_NOMEM
                        : (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) ? SD_ERR_FORMAT
                                                                            : SD_ERR_IO;
    const char *hint = code == SQLITE_BUSY || code == SQLITE_LOCKED
                           ? " (another sparsedoc process holds the database; try again when it finishes)"
                       : st == SD_ERR_FORMAT ? " (the database file is damaged; move it aside and re-ingest)"
                       : code == SQLITE_FULL ? " (disk full)"
                                             : "";
    return sd_err_set(err, st, "stored contexts: %s: %s%s", what, sqlite3_errmsg(db), hint);
}

static enum sd_status prepare(struct sd_store *s, const char *sql, sqlite3_stmt **st, struct sd_err *err)
{
    if (sqlite3_prepare_v2(sd_store_db(s), sql, -1, st, NULL) != SQLITE_OK)
        return sql_err(s, err, "prepare");
    return SD_OK;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

enum sd_status sd_contexts_tokenizer_key(const char *tokenizer_json_path, char key[SD_CONTEXTS_TOKENIZER_KEY_MAX],
                                         struct sd_err *err)
{
    char hex[65];
    enum sd_status r = sd_file_sha256(tokenizer_json_path, hex, err);
    if (r)
        return r;
    snprintf(key, SD_CONTEXTS_TOKENIZER_KEY_MAX, "sha256:%s", hex);
    return SD_OK;
}

// ---- the scope key ----

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Sorted, duplicate-free copy of ids (*n updated). NULL only when out of memory.
static int64_t *ids_normalize(const int64_t *ids, size_t *n)
{
    int64_t *c = malloc((*n ? *n : 1) * sizeof *c);
    if (!c)
        return NULL;
    if (*n)
        memcpy(c, ids, *n * sizeof *c);
    qsort(c, *n, sizeof *c, cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < *n; i++)
        if (!k || c[k - 1] != c[i])
            c[k++] = c[i];
    *n = k;
    return c;
}

// Canonical scope text "id:sha256:ingested_at;" per document in id order, hashed with SHA-256. With
// n_ids = 0 every document of the store is taken, and *all_ids receives their ids (malloc'd, may be NULL
// when there is none). A missing document is SD_ERR_MISSING.
static enum sd_status scope_key(struct sd_store *s, const int64_t *ids, size_t n_ids, struct set_key *k,
                                int64_t **all_ids, size_t *n_all, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = SD_OK;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(md);
        return sd_err_set(err, SD_ERR_NOMEM, "cannot set up SHA-256");
    }
    size_t cap = 0;
    if (all_ids) {
        *all_ids = NULL;
        *n_all = 0;
    }
    k->n_docs = 0;
    if ((r = prepare(s,
                     n_ids ? "SELECT id, sha256, ingested_at FROM documents WHERE id = ?"
                           : "SELECT id, sha256, ingested_at FROM documents ORDER BY id",
                     &st, err)))
        goto out;
    for (size_t i = 0; i < (n_ids ? n_ids : 1); i++) {
        if (n_ids) {
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, ids[i]);
        }
        int rc, found = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            found = 1;
            char item[160];
            const char *sha = (const char *)sqlite3_column_text(st, 1);
            int n = snprintf(item, sizeof item, "%lld:%.64s:%lld;", (long long)sqlite3_column_int64(st, 0),
                             sha ? sha : "", (long long)sqlite3_column_int64(st, 2));
            EVP_DigestUpdate(md, item, (size_t)n);
            k->n_docs++;
            if (all_ids && !n_ids) {
                if (*n_all == cap) {
                    cap = cap ? cap * 2 : 64;
                    int64_t *nb = realloc(*all_ids, cap * sizeof *nb);
                    if (!nb) {
                        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                        goto out;
                    }
                    *all_ids = nb;
                }
                (*all_ids)[(*n_all)++] = sqlite3_column_int64(st, 0);
            }
        }
        if (rc != SQLITE_DONE) {
            r = sql_err(s, err, "read documents");
            goto out;
        }
        if (n_ids && !found) {
            r = sd_err_set(err, SD_ERR_MISSING, "no document with id %lld in the store (see 'sparsedoc docs list')",
                           (long long)ids[i]);
            goto out;
        }
    }
    uint8_t dg[32];
    unsigned int dn = 0;
    EVP_DigestFinal_ex(md, dg, &dn);
    sd_hex_encode(dg, sizeof dg, k->scope);
    char seed[SD_CONTEXTS_TOKENIZER_KEY_MAX + 160];
    int n = snprintf(seed, sizeof seed, "%s|%s|%lld|%d|%d", k->scope, k->tokenizer, (long long)k->max_tokens, k->format,
                     SD_CONTEXTS_STORE_VERSION);
    k->seed = XXH3_64bits(seed, (size_t)n);
out:
    if (r && all_ids) {
        free(*all_ids);
        *all_ids = NULL;
        *n_all = 0;
    }
    sqlite3_finalize(st);
    EVP_MD_CTX_free(md);
    return r;
}

static void bind_key(sqlite3_stmt *st, const struct set_key *k)
{
    sqlite3_bind_text(st, 1, k->scope, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->tokenizer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, k->max_tokens);
    sqlite3_bind_int(st, 4, k->format);
    sqlite3_bind_int(st, 5, SD_CONTEXTS_STORE_VERSION);
}

#define KEY_WHERE "scope_key = ?1 AND tokenizer = ?2 AND max_tokens = ?3 AND format = ?4 AND version = ?5"

static uint64_t row_checksum(uint64_t seed, uint32_t ord, uint32_t n_tokens, uint32_t n_spans, const void *tokens,
                             size_t tokens_bytes, const void *spans, size_t spans_bytes)
{
    XXH3_state_t h;
    XXH3_INITSTATE(&h);
    XXH3_64bits_reset_withSeed(&h, seed);
    uint8_t head[12];
    put_u32(head, ord);
    put_u32(head + 4, n_tokens);
    put_u32(head + 8, n_spans);
    XXH3_64bits_update(&h, head, sizeof head);
    XXH3_64bits_update(&h, tokens, tokens_bytes);
    XXH3_64bits_update(&h, spans, spans_bytes);
    return XXH3_64bits_digest(&h);
}

// ---- load ----

// Decode and check one row into c. Returns SD_OK, SD_ERR_NOMEM, or SD_ERR_CHECKSUM with the reason in err.
static enum sd_status load_row(sqlite3_stmt *st, const struct set_key *k, uint32_t want_ord, struct sd_context *c,
                               struct sd_err *err)
{
    int64_t ord = sqlite3_column_int64(st, 0), n_tok = sqlite3_column_int64(st, 1), n_sp = sqlite3_column_int64(st, 2);
    const void *tb = sqlite3_column_blob(st, 3);
    size_t tb_n = (size_t)sqlite3_column_bytes(st, 3);
    const void *sb = sqlite3_column_blob(st, 4);
    size_t sb_n = (size_t)sqlite3_column_bytes(st, 4);
    uint64_t sum = (uint64_t)sqlite3_column_int64(st, 5);
    if (ord != want_ord)
        return sd_err_set(err, SD_ERR_CHECKSUM, "context %u is missing", want_ord);
    if (n_tok < 0 || n_tok > k->max_tokens || n_sp < 0 || n_sp > n_tok + 1 || tb_n != (size_t)n_tok * 4 ||
        sb_n != (size_t)n_sp * SPAN_REC || (n_tok && !tb) || (n_sp && !sb))
        return sd_err_set(err, SD_ERR_CHECKSUM,
                          "context %u: sizes do not match (%lld tokens in %zu bytes, %lld "
                          "spans in %zu bytes)",
                          want_ord, (long long)n_tok, tb_n, (long long)n_sp, sb_n);
    if (row_checksum(k->seed, want_ord, (uint32_t)n_tok, (uint32_t)n_sp, tb, tb_n, sb, sb_n) != sum)
        return sd_err_set(err, SD_ERR_CHECKSUM, "context %u: checksum mismatch", want_ord);
    c->n_tokens = (size_t)n_tok;
    c->n_spans = (size_t)n_sp;
    c->tokens = malloc(tb_n ? tb_n : 1);
    c->spans = malloc(n_sp ? (size_t)n_sp * sizeof *c->spans : 1);
    if (!c->tokens || !c->spans)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading contexts");
#if HOST_LE
    if (tb_n)
        memcpy(c->tokens, tb, tb_n);
#else
    for (size_t i = 0; i < c->n_tokens; i++)
        c->tokens[i] = (int32_t)get_u32((const uint8_t *)tb + 4 * i);
#endif
    for (size_t i = 0; i < c->n_tokens; i++)
        if (c->tokens[i] < 0)
            return sd_err_set(err, SD_ERR_CHECKSUM, "context %u: negative token id", want_ord);
    const uint8_t *p = sb;
    for (size_t i = 0; i < c->n_spans; i++, p += SPAN_REC) {
        struct sd_ctx_span *e = &c->spans[i];
        e->span_id = (int64_t)get_u64(p);
        e->doc_id = (int64_t)get_u64(p + 8);
        e->part = (int32_t)get_u32(p + 16);
        e->page_no = (int32_t)get_u32(p + 20);
        e->line_start = (int32_t)get_u32(p + 24);
        e->line_end = (int32_t)get_u32(p + 28);
        e->tok_offset = get_u32(p + 32);
        e->n_tokens = get_u32(p + 36);
        if ((uint64_t)e->tok_offset + e->n_tokens > c->n_tokens || (i && e->tok_offset < c->spans[i - 1].tok_offset))
            return sd_err_set(err, SD_ERR_CHECKSUM, "context %u: span %zu lies outside its tokens", want_ord, i);
    }
    return SD_OK;
}

// Load the set stored under k. SD_OK with *out (possibly holding no context), SD_ERR_MISSING when no set
// is stored, SD_ERR_CHECKSUM when one is but fails its checks (err says why), other errors as they come.
static enum sd_status load_set(struct sd_store *s, const struct set_key *k, struct sd_contexts **out,
                               struct sd_err *err)
{
    *out = NULL;
    sqlite3_stmt *st = NULL;
    enum sd_status r =
        prepare(s, "SELECT id, n_contexts, total_tokens, n_docs FROM context_sets WHERE " KEY_WHERE, &st, err);
    if (r)
        return r;
    bind_key(st, k);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        return SD_ERR_MISSING;
    }
    if (rc != SQLITE_ROW) {
        r = sql_err(s, err, "read a context set");
        sqlite3_finalize(st);
        return r;
    }
    int64_t set_id = sqlite3_column_int64(st, 0), n_ctx = sqlite3_column_int64(st, 1),
            total = sqlite3_column_int64(st, 2), n_docs = sqlite3_column_int64(st, 3);
    sqlite3_finalize(st);
    st = NULL;
    if (n_ctx < 0 || n_ctx > MAX_CONTEXTS_PER_SET || total < 0 || n_docs != k->n_docs)
        return sd_err_set(err, SD_ERR_CHECKSUM, "context set %lld: implausible header", (long long)set_id);
    struct sd_contexts *c = calloc(1, sizeof *c);
    if (!c || !(c->items = calloc(n_ctx ? (size_t)n_ctx : 1, sizeof *c->items))) {
        free(c);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading contexts");
    }
    if ((r = prepare(s,
                     "SELECT ord, n_tokens, n_spans, tokens, spans, checksum FROM contexts WHERE set_id = ? "
                     "ORDER BY ord",
                     &st, err)))
        goto fail;
    sqlite3_bind_int64(st, 1, set_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (c->n == (size_t)n_ctx) {
            r = sd_err_set(err, SD_ERR_CHECKSUM, "context set %lld has more contexts than its header says",
                           (long long)set_id);
            goto fail;
        }
        struct sd_context *x = &c->items[c->n++];
        if ((r = load_row(st, k, (uint32_t)(c->n - 1), x, err)))
            goto fail;
        c->total_tokens += x->n_tokens;
    }
    if (rc != SQLITE_DONE) {
        r = sql_err(s, err, "read contexts");
        goto fail;
    }
    if (c->n != (size_t)n_ctx || c->total_tokens != (size_t)total) {
        r = sd_err_set(err, SD_ERR_CHECKSUM, "context set %lld: %zu of %lld contexts, %zu of %lld tokens",
                       (long long)set_id, c->n, (long long)n_ctx, c->total_tokens, (long long)total);
        goto fail;
    }
    sqlite3_finalize(st);
    *out = c;
    return SD_OK;
fail:
    sqlite3_finalize(st);
    sd_contexts_free(c);
    return r;
}

// ---- save ----

static enum sd_status delete_set(struct sd_store *s, const struct set_key *k, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s, "DELETE FROM context_sets WHERE " KEY_WHERE, &st, err);
    if (r)
        return r;
    bind_key(st, k);
    if (sqlite3_step(st) != SQLITE_DONE)
        r = sql_err(s, err, "delete a context set");
    sqlite3_finalize(st);
    return r;
}

// Delete the oldest sets beyond SD_CONTEXTS_KEEP_SETS / SD_CONTEXTS_KEEP_TOKENS (the newest is kept).
static enum sd_status evict(struct sd_store *s, struct sd_err *err)
{
    return sd_store_exec(s,
                         "DELETE FROM context_sets WHERE id IN (SELECT id FROM (SELECT id, "
                         "row_number() OVER w AS rn, sum(total_tokens) OVER w AS cum FROM context_sets "
                         "WINDOW w AS (ORDER BY created_ms DESC, id DESC)) WHERE rn > 1 AND (rn > " STR(
                             SD_CONTEXTS_KEEP_SETS) " OR cum > " STR(SD_CONTEXTS_KEEP_TOKENS) "))",
                         err);
}

static enum sd_status save_set(struct sd_store *s, const struct set_key *k, const int64_t *doc_ids, size_t n_docs,
                               const struct sd_contexts *c, struct sd_err *err)
{
    sqlite3 *db = sd_store_db(s);
    sqlite3_stmt *st = NULL;
    uint8_t *tbuf = NULL, *sbuf = NULL;
    size_t tcap = 0, scap = 0;
    enum sd_status r = prepare(s,
                               "INSERT INTO context_sets (scope_key, tokenizer, max_tokens, format, version, n_docs, "
                               "n_contexts, total_tokens, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                               &st, err);
    if (r)
        return r;
    bind_key(st, k);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sqlite3_bind_int64(st, 6, (int64_t)n_docs);
    sqlite3_bind_int64(st, 7, (int64_t)c->n);
    sqlite3_bind_int64(st, 8, (int64_t)c->total_tokens);
    sqlite3_bind_int64(st, 9, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (sqlite3_step(st) != SQLITE_DONE) {
        r = sql_err(s, err, "save a context set");
        goto out;
    }
    int64_t set_id = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(st);
    if ((r = prepare(s, "INSERT INTO context_set_docs (set_id, doc_id) VALUES (?, ?)", &st, err)))
        goto out;
    for (size_t i = 0; i < n_docs; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, set_id);
        sqlite3_bind_int64(st, 2, doc_ids[i]);
        if (sqlite3_step(st) != SQLITE_DONE) {
            r = sql_err(s, err, "save a context set's documents");
            goto out;
        }
    }
    sqlite3_finalize(st);
    if ((r = prepare(s,
                     "INSERT INTO contexts (set_id, ord, n_tokens, n_spans, tokens, spans, checksum) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     &st, err)))
        goto out;
    for (size_t i = 0; i < c->n; i++) {
        const struct sd_context *x = &c->items[i];
        if (x->n_tokens > UINT32_MAX || x->n_spans > UINT32_MAX) {
            r = sd_err_set(err, SD_ERR_RANGE, "context %zu is too large to store", i);
            goto out;
        }
        size_t tb_n = x->n_tokens * 4, sb_n = x->n_spans * SPAN_REC;
        const void *tb = x->tokens;
#if !HOST_LE
        if (tb_n > tcap) {
            uint8_t *nb = realloc(tbuf, tb_n);
            if (!nb) {
                r = sd_err_set(err, SD_ERR_NOMEM, "out of memory saving contexts");
                goto out;
            }
            tbuf = nb;
            tcap = tb_n;
        }
        for (size_t t = 0; t < x->n_tokens; t++)
            put_u32(tbuf + 4 * t, (uint32_t)x->tokens[t]);
        tb = tbuf;
#endif
        if (sb_n > scap) {
            uint8_t *nb = realloc(sbuf, sb_n);
            if (!nb) {
                r = sd_err_set(err, SD_ERR_NOMEM, "out of memory saving contexts");
                goto out;
            }
            sbuf = nb;
            scap = sb_n;
        }
        for (size_t k2 = 0; k2 < x->n_spans; k2++) {
            const struct sd_ctx_span *e = &x->spans[k2];
            uint8_t *p = sbuf + k2 * SPAN_REC;
            put_u64(p, (uint64_t)e->span_id);
            put_u64(p + 8, (uint64_t)e->doc_id);
            put_u32(p + 16, (uint32_t)e->part);
            put_u32(p + 20, (uint32_t)e->page_no);
            put_u32(p + 24, (uint32_t)e->line_start);
            put_u32(p + 28, (uint32_t)e->line_end);
            put_u32(p + 32, e->tok_offset);
            put_u32(p + 36, e->n_tokens);
        }
        uint64_t sum =
            row_checksum(k->seed, (uint32_t)i, (uint32_t)x->n_tokens, (uint32_t)x->n_spans, tb, tb_n, sbuf, sb_n);
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, set_id);
        sqlite3_bind_int64(st, 2, (int64_t)i);
        sqlite3_bind_int64(st, 3, (int64_t)x->n_tokens);
        sqlite3_bind_int64(st, 4, (int64_t)x->n_spans);
        sqlite3_bind_blob64(st, 5, tb_n ? tb : "", tb_n, SQLITE_STATIC);
        sqlite3_bind_blob64(st, 6, sb_n ? (const void *)sbuf : "", sb_n, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (int64_t)sum);
        if (sqlite3_step(st) != SQLITE_DONE) {
            r = sql_err(s, err, "save a context");
            goto out;
        }
    }
out:
    (void)tcap;
    sqlite3_finalize(st);
    free(tbuf);
    free(sbuf);
    return r;
}

// ---- load or build ----

enum sd_status sd_contexts_load_or_build(struct sd_store *s, const int64_t *doc_ids, size_t n_docs,
                                         const struct sd_contexts_opts *opts, const char *tokenizer_key,
                                         struct sd_contexts **out, struct sd_contexts_load_info *info,
                                         struct sd_err *err)
{
    struct sd_contexts_load_info info0;
    if (!info)
        info = &info0;
    memset(info, 0, sizeof *info);
    *out = NULL;
    if (!opts || !opts->tokenize)
        return sd_err_set(err, SD_ERR_ARG, "contexts need a tokenizer");
    if (!tokenizer_key || !*tokenizer_key || strlen(tokenizer_key) >= SD_CONTEXTS_TOKENIZER_KEY_MAX)
        return sd_err_set(err, SD_ERR_ARG, "stored contexts need a tokenizer key of 1 to %d bytes",
                          SD_CONTEXTS_TOKENIZER_KEY_MAX - 1);
    if (n_docs && !doc_ids)
        return sd_err_set(err, SD_ERR_ARG, "%zu document ids given as NULL", n_docs);
    if (!sqlite3_get_autocommit(sd_store_db(s)))
        return sd_err_set(err, SD_ERR_ARG, "stored contexts: called inside a transaction (finish it first)");
    size_t n_max = opts->max_tokens ? opts->max_tokens : SD_CONTEXT_DEFAULT_TOKENS;
    struct set_key k = {.tokenizer = tokenizer_key, .max_tokens = (int64_t)n_max, .format = (int)opts->format};
    struct set_key k2 = k;
    size_t n_ids = n_docs, n_all = 0;
    int64_t *ids = ids_normalize(doc_ids, &n_ids), *all = NULL;
    struct sd_contexts *c = NULL;
    enum sd_status r = SD_OK;
    struct sd_err lerr;
    if (!ids)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    // Key, load and (on a miss) build under one read transaction: one snapshot of the documents.
    if ((r = sd_store_exec(s, "BEGIN", err)))
        goto out;
    if ((r = scope_key(s, ids, n_ids, &k, n_ids ? NULL : &all, &n_all, err)))
        goto out;
    enum sd_status lr = load_set(s, &k, &c, &lerr);
    if (lr == SD_OK) {
        info->hit = 1;
        r = sd_store_commit(s, err);
        goto out;
    }
    if (lr == SD_ERR_CHECKSUM) {
        info->dropped = 1;
        snprintf(info->dropped_why, sizeof info->dropped_why, "%.255s", lerr.msg);
    } else if (lr != SD_ERR_MISSING) {
        r = lr;
        if (err)
            *err = lerr;
        goto out;
    }
    if ((r = sd_contexts_build(s, doc_ids, n_docs, opts, &c, err)))
        goto out;
    if ((r = sd_store_commit(s, err)))
        goto out;
    // Save under the write lock, if the documents are still those the contexts were built from.
    if (!info->dropped && !k.n_docs)
        goto out; // an empty scope: nothing worth keeping
    if ((r = sd_store_begin(s, err)))
        goto out;
    if ((r = delete_set(s, &k, err))) // a corrupt one, or one another process saved meanwhile
        goto out;
    int64_t *all2 = NULL;
    size_t n_all2 = 0;
    enum sd_status kr = scope_key(s, ids, n_ids, &k2, n_ids ? NULL : &all2, &n_all2, &lerr);
    free(all2);
    if (kr && kr != SD_ERR_MISSING) { // SD_ERR_MISSING: a document was removed meanwhile, so not saved
        r = kr;
        if (err)
            *err = lerr;
        goto out;
    }
    if (!kr && k.n_docs && !strcmp(k.scope, k2.scope)) {
        if ((r = save_set(s, &k, n_ids ? ids : all, n_ids ? n_ids : n_all, c, err)) || (r = evict(s, err)))
            goto out;
        info->saved = 1;
    }
    r = sd_store_commit(s, err);
out:
    if (r) {
        info->saved = 0;
        sd_store_rollback(s);
        sd_contexts_free(c);
        c = NULL;
    }
    free(ids);
    free(all);
    *out = c;
    return r;
}

// ---- statistics ----

enum sd_status sd_contexts_store_stats(struct sd_store *s, struct sd_contexts_store_stats *out, struct sd_err *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s,
                               "SELECT (SELECT count(*) FROM context_sets), count(*), coalesce(sum(n_tokens), 0), "
                               "coalesce(sum(length(tokens) + length(spans)), 0) FROM contexts",
                               &st, err);
    if (r)
        return r;
    if (sqlite3_step(st) == SQLITE_ROW) {
        out->n_sets = sqlite3_column_int64(st, 0);
        out->n_contexts = sqlite3_column_int64(st, 1);
        out->n_tokens = sqlite3_column_int64(st, 2);
        out->n_bytes = sqlite3_column_int64(st, 3);
    } else
        r = sql_err(s, err, "count stored contexts");
    sqlite3_finalize(st);
    return r;
}

enum sd_status sd_contexts_store_clear(struct sd_store *s, struct sd_err *err)
{
    return sd_store_exec(s, "DELETE FROM context_sets", err);
}
