// library.c: the document library for the GTK app (see library.h). Reads go through data/store.h; the
// one thing store.h does not expose (a document's ingest root) is read with a single SELECT on the
// store's connection, and its SQLite errors become sd_status values here.
#include "library.h"

#include <errno.h>
#include <glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "paths.h"
#include "store.h"

struct sd_library {
    struct sd_store *store;
    int no_ocr;     // sd_library_set_ocr
    char *ocr_lang; // owned; NULL: eng
};

const char *sd_library_state_str(enum sd_library_state s)
{
    switch (s) {
    case SD_LIBRARY_OK:
        return "ingested";
    case SD_LIBRARY_WARNING:
        return "ingested with warnings";
    case SD_LIBRARY_CHANGED:
        return "changed on disk";
    case SD_LIBRARY_MISSING:
        return "file missing";
    }
    return "?";
}

enum sd_status sd_library_open(const char *db_path, struct sd_library **out, struct sd_err *err)
{
    *out = NULL;
    char *path = NULL;
    enum sd_status st = sd_paths_db(db_path, &path, err);
    if (st)
        return st;
    struct sd_library *lib = calloc(1, sizeof *lib);
    if (!lib) {
        free(path);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    }
    st = sd_store_open(path, &lib->store, err);
    free(path);
    if (st) {
        free(lib);
        return st;
    }
    *out = lib;
    return SD_OK;
}

void sd_library_close(struct sd_library *lib)
{
    if (!lib)
        return;
    sd_store_close(lib->store);
    free(lib->ocr_lang);
    free(lib);
}

enum sd_status sd_library_set_ocr(struct sd_library *lib, int no_ocr, const char *lang, struct sd_err *err)
{
    char *l = lang && *lang ? strdup(lang) : NULL;
    if (lang && *lang && !l)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    free(lib->ocr_lang);
    lib->ocr_lang = l;
    lib->no_ocr = no_ocr;
    return SD_OK;
}

struct sd_store *sd_library_store(struct sd_library *lib)
{
    return lib->store;
}

// ---- listing ----

struct doc_copy {
    int64_t id;
    char *path, *root, *kind, *title, *ocr_pages, *failed_pages;
    int64_t size, mtime_ns, n_pages, n_lines, n_chars, n_tokens, ingested_at;
};

struct doc_list {
    struct doc_copy *v;
    size_t n, cap;
    int oom;
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int collect(void *user, const struct sd_doc *d)
{
    struct doc_list *l = user;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct doc_copy *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = 1;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    struct doc_copy *c = &l->v[l->n++];
    memset(c, 0, sizeof *c);
    c->id = d->id;
    c->path = dup_or_null(d->path);
    c->kind = dup_or_null(d->kind);
    c->title = dup_or_null(d->title);
    c->ocr_pages = dup_or_null(d->ocr_pages);
    c->failed_pages = dup_or_null(d->failed_pages);
    c->size = d->size;
    c->mtime_ns = d->mtime_ns;
    c->n_pages = d->n_pages;
    c->n_lines = d->n_lines;
    c->n_chars = d->n_chars;
    c->n_tokens = d->n_tokens;
    c->ingested_at = d->ingested_at;
    return 0;
}

static int cmp_docs(const void *a, const void *b)
{
    const struct doc_copy *x = a, *y = b;
    if (!x->root != !y->root)
        return x->root ? 1 : -1;
    int c = x->root ? strcmp(x->root, y->root) : 0;
    return c ? c : strcmp(x->path ? x->path : "", y->path ? y->path : "");
}

static enum sd_status read_roots(struct sd_library *lib, struct doc_list *l, struct sd_err *err)
{
    sqlite3 *db = sd_store_db(lib->store);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT root FROM documents WHERE id = ?1", -1, &q, NULL) != SQLITE_OK)
        return sd_err_set(err, SD_ERR_IO, "cannot read the library: %s", sqlite3_errmsg(db));
    enum sd_status st = SD_OK;
    for (size_t i = 0; i < l->n && !st; i++) {
        sqlite3_bind_int64(q, 1, l->v[i].id);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_TEXT) {
            if (!(l->v[i].root = strdup((const char *)sqlite3_column_text(q, 0))))
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            st = sd_err_set(err, SD_ERR_IO, "cannot read the library: %s", sqlite3_errmsg(db));
        }
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    return st;
}

enum sd_status sd_library_docs(struct sd_library *lib, sd_library_doc_fn fn, void *user, struct sd_err *err)
{
    struct doc_list l = {0};
    enum sd_status st = sd_store_docs_foreach(lib->store, collect, &l, err);
    if (!st && l.oom)
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory listing documents");
    if (!st)
        st = read_roots(lib, &l, err);
    if (st)
        goto out;
    if (l.n > 1) // l.v is NULL for an empty store, and qsort's base must not be
        qsort(l.v, l.n, sizeof *l.v, cmp_docs);
    for (size_t i = 0; i < l.n; i++) {
        struct doc_copy *c = &l.v[i];
        struct sd_library_doc d = {.id = c->id,
                                   .path = c->path,
                                   .root = c->root,
                                   .kind = c->kind,
                                   .title = c->title,
                                   .size = c->size,
                                   .n_pages = c->n_pages,
                                   .n_lines = c->n_lines,
                                   .n_chars = c->n_chars,
                                   .n_tokens = c->n_tokens,
                                   .ingested_at = c->ingested_at};
        char msg[512] = "";
        struct stat sb;
        if (stat(c->path, &sb) != 0) {
            d.state = SD_LIBRARY_MISSING;
            snprintf(msg, sizeof msg, "%s: %s", c->path, strerror(errno));
        } else if (sb.st_size != c->size ||
                   (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec != c->mtime_ns) {
            d.state = SD_LIBRARY_CHANGED;
            snprintf(msg, sizeof msg, "modified since it was ingested: re-scan to update");
        } else if ((c->failed_pages && *c->failed_pages) || (c->ocr_pages && *c->ocr_pages)) {
            d.state = SD_LIBRARY_WARNING;
            int k = 0;
            if (c->failed_pages && *c->failed_pages)
                k = snprintf(msg, sizeof msg, "failed pages: %s", c->failed_pages);
            if (c->ocr_pages && *c->ocr_pages && k >= 0 && (size_t)k < sizeof msg)
                snprintf(msg + k, sizeof msg - (size_t)k, "%spages without text (need OCR): %s", k ? "; " : "",
                         c->ocr_pages);
        }
        d.state_msg = msg[0] ? msg : NULL;
        if (fn(user, &d))
            break;
    }
out:
    for (size_t i = 0; i < l.n; i++) {
        free(l.v[i].path);
        free(l.v[i].root);
        free(l.v[i].kind);
        free(l.v[i].title);
        free(l.v[i].ocr_pages);
        free(l.v[i].failed_pages);
    }
    free(l.v);
    return st;
}

// ---- changes ----

enum sd_status sd_library_remove(struct sd_library *lib, int64_t doc_id, struct sd_err *err)
{
    return sd_store_doc_remove(lib->store, doc_id, err);
}

enum sd_status sd_library_remove_root(struct sd_library *lib, const char *root, size_t *n_removed, struct sd_err *err)
{
    if (n_removed)
        *n_removed = 0;
    sqlite3 *db = sd_store_db(lib->store);
    sqlite3_stmt *q = NULL;
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    enum sd_status st = SD_OK;
    if (sqlite3_prepare_v2(db, "SELECT id FROM documents WHERE root = ?1", -1, &q, NULL) != SQLITE_OK)
        return sd_err_set(err, SD_ERR_IO, "cannot read the library: %s", sqlite3_errmsg(db));
    sqlite3_bind_text(q, 1, root, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *v = realloc(ids, cap * sizeof *v);
            if (!v) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                goto out;
            }
            ids = v;
        }
        ids[n++] = sqlite3_column_int64(q, 0);
    }
    if (rc != SQLITE_DONE) {
        st = sd_err_set(err, SD_ERR_IO, "cannot read the library: %s", sqlite3_errmsg(db));
        goto out;
    }
    if (n == 0) {
        st = sd_err_set(err, SD_ERR_MISSING, "no documents from folder %s", root);
        goto out;
    }
    if ((st = sd_store_begin(lib->store, err)))
        goto out;
    for (size_t i = 0; i < n && !st; i++)
        st = sd_store_doc_remove(lib->store, ids[i], err);
    if (st)
        sd_store_rollback(lib->store);
    else if (!(st = sd_store_commit(lib->store, err)) && n_removed)
        *n_removed = n;
out:
    sqlite3_finalize(q);
    free(ids);
    return st;
}

enum sd_status sd_library_ingest(struct sd_library *lib, char *const *paths, size_t n_paths, const char *password,
                                 sd_count_tokens_fn count_tokens, void *tok_user, sd_ingest_event_fn on_event,
                                 void *user, volatile int *cancel, struct sd_ingest_stats *stats, struct sd_err *err)
{
    struct sd_ingest_opts o = {.password = password,
                               .count_tokens = count_tokens,
                               .tok_user = tok_user,
                               .on_event = on_event,
                               .user = user,
                               .cancel = cancel,
                               .no_ocr = lib->no_ocr,
                               .ocr_lang = lib->ocr_lang};
    return sd_ingest(lib->store, paths, n_paths, &o, stats, err);
}

// ---- source text ----

struct text_acc {
    int page_no, line_start, line_end;
    char *buf;
    size_t len, cap;
    int oom;
};

static int take_span(void *user, const struct sd_span_row *r)
{
    struct text_acc *a = user;
    int hit = a->page_no > 0 ? r->page_no == a->page_no : r->line_end >= a->line_start && r->line_start <= a->line_end;
    if (!hit)
        return 0;
    size_t need = a->len + r->len + 2;
    if (need > a->cap) {
        size_t cap = need * 2;
        char *b = realloc(a->buf, cap);
        if (!b) {
            a->oom = 1;
            return 1;
        }
        a->buf = b;
        a->cap = cap;
    }
    if (a->len)
        a->buf[a->len++] = '\n';
    memcpy(a->buf + a->len, r->text, r->len);
    a->len += r->len;
    a->buf[a->len] = 0;
    return 0;
}

enum sd_status sd_library_source_text(struct sd_library *lib, int64_t doc_id, int page_no, int line_start, int line_end,
                                      char **text, struct sd_err *err)
{
    *text = NULL;
    struct text_acc a = {.page_no = page_no, .line_start = line_start, .line_end = line_end ? line_end : line_start};
    enum sd_status st = sd_store_spans_foreach(lib->store, doc_id, take_span, &a, err);
    if (!st && a.oom)
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    if (!st && !a.buf && !(a.buf = strdup("")))
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    if (st) {
        free(a.buf);
        return st;
    }
    *text = a.buf;
    return SD_OK;
}

// ---- KV cache ----

enum sd_status sd_library_cache_stats(const char *dir, uint64_t budget, struct sd_kvcache_stats *st, char **path,
                                      struct sd_err *err)
{
    struct sd_kvcache *c = NULL;
    struct sd_kvcache_opts o = {.budget_bytes = budget, .no_gc = 1};
    if (path)
        *path = NULL;
    enum sd_status r = sd_kvcache_open(dir, &o, &c, err);
    if (!r)
        r = sd_kvcache_stats(c, st, err);
    if (!r && path && !(*path = strdup(sd_kvcache_path(c))))
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    sd_kvcache_close(c);
    return r;
}

enum sd_status sd_library_cache_clear(const char *dir, int *n_removed, struct sd_err *err)
{
    struct sd_kvcache *c = NULL;
    struct sd_kvcache_opts o = {.no_gc = 1};
    enum sd_status r = sd_kvcache_open(dir, &o, &c, err);
    if (!r)
        r = sd_kvcache_clear(c, n_removed, err);
    sd_kvcache_close(c);
    return r;
}

// ---- OCR word boxes ----

struct pword {
    char w[64]; // normalized: ASCII letters lower-cased, digits, bytes >= 0x80; the rest dropped
    float box[4];
};

static void norm_word(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80)
            out[k++] = (char)c;
        else if (c >= 'A' && c <= 'Z')
            out[k++] = (char)(c - 'A' + 'a');
    }
    out[k] = 0;
}

long sd_library_match_words(const void *blob, size_t len, const char *text, double **rects)
{
    *rects = NULL;
    const unsigned char *b = blob;
    size_t n = 0, cap = 0;
    struct pword *pw = NULL;
    for (size_t at = 0; b && at + 18 <= len;) {
        uint16_t wl;
        memcpy(&wl, b + at + 16, 2);
        if (at + 18 + wl > len)
            break;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            struct pword *q = realloc(pw, cap * sizeof *pw);
            if (!q) {
                free(pw);
                return -1;
            }
            pw = q;
        }
        memcpy(pw[n].box, b + at, 16);
        norm_word((const char *)b + at + 18, wl, pw[n].w, sizeof pw[n].w);
        if (pw[n].w[0])
            n++;
        at += 18 + wl;
    }
    size_t n_out = 0, out_cap = 0;
    double *out = NULL;
    char **lines = g_strsplit(text ? text : "", "\n", -1);
    for (char **l = lines; *l && n; l++) {
        char **tw = g_strsplit_set(*l, " \t", -1);
        char(*lw)[64] = calloc(g_strv_length(tw) + 1, 64);
        size_t m = 0;
        for (char **t = tw; lw && *t; t++) {
            norm_word(*t, strlen(*t), lw[m], 64);
            if (lw[m][0])
                m++;
        }
        size_t best = 0, best_at = 0;
        for (size_t i = 0; lw && i < n; i++)
            for (size_t j = 0; j < m; j++) {
                size_t k = 0;
                while (i + k < n && j + k < m && !strcmp(pw[i + k].w, lw[j + k]))
                    k++;
                if (k > best) {
                    best = k;
                    best_at = i;
                }
            }
        if (best >= 2 || (best == 1 && m == 1)) {
            if (n_out + best > out_cap) {
                out_cap = (n_out + best) * 2;
                double *q = realloc(out, out_cap * 4 * sizeof *out);
                if (!q) {
                    free(out);
                    out = NULL;
                    n_out = 0;
                    free(lw);
                    g_strfreev(tw);
                    break;
                }
                out = q;
            }
            for (size_t k = 0; k < best; k++)
                for (int c = 0; c < 4; c++)
                    out[4 * (n_out + k) + c] = pw[best_at + k].box[c];
            n_out += best;
        }
        free(lw);
        g_strfreev(tw);
    }
    g_strfreev(lines);
    free(pw);
    *rects = out;
    return (long)n_out;
}

enum sd_status sd_library_ocr_boxes(struct sd_library *lib, int64_t doc_id, int page_no, const char *text,
                                    double **rects, size_t *n_rects, struct sd_err *err)
{
    *rects = NULL;
    *n_rects = 0;
    void *blob = NULL;
    size_t len = 0;
    enum sd_status r = sd_store_page_words_get(lib->store, doc_id, page_no, &blob, &len, err);
    if (r || !blob)
        return r;
    long n = sd_library_match_words(blob, len, text, rects);
    free(blob);
    if (n < 0)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    *n_rects = (size_t)n;
    return SD_OK;
}
