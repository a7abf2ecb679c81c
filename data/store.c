// store.c: the SQLite document store (see store.h). Schema migrations are an ordered list of SQL
// scripts applied under BEGIN IMMEDIATE, so two processes opening a new database at once agree.
// The FTS5 index is an external-content table over spans, kept in step by triggers.
#include "store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlite_wal.h"

#define BUSY_TIMEOUT_MS 60000

struct sd_store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st_span_add;
    sqlite3_stmt *st_page_add;
    sqlite3_stmt *st_section_add;
};

// Migration i (0-based) brings the schema from user_version i to i + 1.
static const char *const migrations[] = {
    // 1: documents, pages, sections, spans, FTS5
    "CREATE TABLE documents ("
    "  id INTEGER PRIMARY KEY,"
    "  path TEXT NOT NULL UNIQUE,"
    "  root TEXT,"
    "  kind TEXT NOT NULL,"
    "  lang TEXT,"
    "  title TEXT,"
    "  author TEXT,"
    "  size INTEGER NOT NULL,"
    "  mtime_ns INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  n_pages INTEGER NOT NULL DEFAULT 0,"
    "  n_lines INTEGER NOT NULL DEFAULT 0,"
    "  n_spans INTEGER NOT NULL DEFAULT 0,"
    "  n_chars INTEGER NOT NULL DEFAULT 0,"
    "  n_tokens INTEGER NOT NULL DEFAULT -1,"
    "  ocr_pages TEXT,"
    "  failed_pages TEXT,"
    "  ingested_at INTEGER NOT NULL);"
    "CREATE INDEX documents_root ON documents(root);"
    "CREATE TABLE pages ("
    "  doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  page_no INTEGER NOT NULL,"
    "  label TEXT,"
    "  state TEXT NOT NULL,"
    "  n_chars INTEGER NOT NULL,"
    "  PRIMARY KEY (doc_id, page_no)) WITHOUT ROWID;"
    "CREATE TABLE sections ("
    "  doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  ord INTEGER NOT NULL,"
    "  level INTEGER NOT NULL,"
    "  page_no INTEGER NOT NULL,"
    "  title TEXT NOT NULL,"
    "  PRIMARY KEY (doc_id, ord)) WITHOUT ROWID;"
    "CREATE TABLE spans ("
    "  id INTEGER PRIMARY KEY,"
    "  doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  ord INTEGER NOT NULL,"
    "  page_no INTEGER NOT NULL DEFAULT 0,"
    "  page_label TEXT,"
    "  line_start INTEGER NOT NULL DEFAULT 0,"
    "  line_end INTEGER NOT NULL DEFAULT 0,"
    "  section TEXT,"
    "  n_tokens INTEGER NOT NULL DEFAULT -1,"
    "  text TEXT NOT NULL,"
    "  UNIQUE (doc_id, ord));"
    "CREATE VIRTUAL TABLE spans_fts USING fts5(text, content='spans', content_rowid='id',"
    "  tokenize='unicode61 remove_diacritics 2');"
    "CREATE TRIGGER spans_ai AFTER INSERT ON spans BEGIN"
    "  INSERT INTO spans_fts(rowid, text) VALUES (new.id, new.text); END;"
    "CREATE TRIGGER spans_ad AFTER DELETE ON spans BEGIN"
    "  INSERT INTO spans_fts(spans_fts, rowid, text) VALUES ('delete', old.id, old.text); END;"
    "CREATE TRIGGER spans_au AFTER UPDATE ON spans BEGIN"
    "  INSERT INTO spans_fts(spans_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    "  INSERT INTO spans_fts(rowid, text) VALUES (new.id, new.text); END;",

    // 2: contexts (packed token sequences with span offsets) and ingest runs
    "CREATE TABLE contexts ("
    "  id INTEGER PRIMARY KEY,"
    "  scope_key TEXT NOT NULL,"
    "  ord INTEGER NOT NULL,"
    "  tokenizer TEXT NOT NULL,"
    "  max_tokens INTEGER NOT NULL,"
    "  n_tokens INTEGER NOT NULL,"
    "  tokens BLOB NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE (scope_key, ord));"
    "CREATE TABLE context_spans ("
    "  context_id INTEGER NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL,"
    "  span_id INTEGER NOT NULL,"
    "  doc_id INTEGER NOT NULL,"
    "  part INTEGER NOT NULL,"
    "  tok_offset INTEGER NOT NULL,"
    "  n_tokens INTEGER NOT NULL,"
    "  PRIMARY KEY (context_id, idx)) WITHOUT ROWID;"
    "CREATE INDEX context_spans_doc ON context_spans(doc_id);"
    "CREATE TRIGGER documents_ad AFTER DELETE ON documents BEGIN"
    "  DELETE FROM contexts WHERE id IN (SELECT context_id FROM context_spans WHERE doc_id = old.id); END;"
    "CREATE TABLE ingest_runs ("
    "  id INTEGER PRIMARY KEY,"
    "  paths TEXT NOT NULL,"
    "  started_at INTEGER NOT NULL,"
    "  finished_at INTEGER,"
    "  summary TEXT);",

    // 3: conversations (sparsedoc chat, the UI): scope as a JSON array of document ids, turns in order
    "CREATE TABLE conversations ("
    "  id INTEGER PRIMARY KEY,"
    "  title TEXT NOT NULL,"
    "  scope TEXT NOT NULL,"
    "  model TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE TABLE conversation_turns ("
    "  conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
    "  ord INTEGER NOT NULL,"
    "  question TEXT NOT NULL,"
    "  answer TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (conversation_id, ord)) WITHOUT ROWID;",

    // 4: persisted contexts (data/contexts_store.c), replacing the never-written tables of migration 2.
    // A set is keyed by its scope (sorted document ids with their content sha256), tokenizer identity,
    // max_tokens, format and packing version; deleting (or replacing) a document deletes its
    // context_set_docs rows, whose trigger deletes the set, whose contexts go by cascade.
    "DROP TRIGGER IF EXISTS documents_ad;"
    "DROP TABLE IF EXISTS context_spans;"
    "DROP TABLE IF EXISTS contexts;"
    "CREATE TABLE context_sets ("
    "  id INTEGER PRIMARY KEY,"
    "  scope_key TEXT NOT NULL,"
    "  tokenizer TEXT NOT NULL,"
    "  max_tokens INTEGER NOT NULL,"
    "  format INTEGER NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  n_docs INTEGER NOT NULL,"
    "  n_contexts INTEGER NOT NULL,"
    "  total_tokens INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  UNIQUE (scope_key, tokenizer, max_tokens, format, version));"
    "CREATE TABLE context_set_docs ("
    "  set_id INTEGER NOT NULL REFERENCES context_sets(id) ON DELETE CASCADE,"
    "  doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (set_id, doc_id)) WITHOUT ROWID;"
    "CREATE INDEX context_set_docs_doc ON context_set_docs(doc_id);"
    "CREATE TRIGGER context_set_docs_ad AFTER DELETE ON context_set_docs BEGIN"
    "  DELETE FROM context_sets WHERE id = old.set_id; END;"
    "CREATE TABLE contexts ("
    "  set_id INTEGER NOT NULL REFERENCES context_sets(id) ON DELETE CASCADE,"
    "  ord INTEGER NOT NULL,"
    "  n_tokens INTEGER NOT NULL,"
    "  n_spans INTEGER NOT NULL,"
    "  tokens BLOB NOT NULL,"      // n_tokens little-endian int32
    "  spans BLOB NOT NULL,"       // n_spans records, see contexts_store.c
    "  checksum INTEGER NOT NULL," // XXH3-64 of the row, seeded with the set's key
    "  PRIMARY KEY (set_id, ord)) WITHOUT ROWID;",
    // 5: word boxes of pages read by OCR (the desktop app highlights cited passages on scanned pages)
    "CREATE TABLE page_words ("
    "  doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  page_no INTEGER NOT NULL,"
    "  words BLOB NOT NULL," // see sd_store_page_words_set in store.h
    "  PRIMARY KEY (doc_id, page_no)) WITHOUT ROWID;",
};

static enum sd_status db_err(struct sd_store *s, struct sd_err *err, const char *what)
{
    int code = sqlite3_errcode(s->db);
    enum sd_status st = SD_ERR_IO;
    const char *hint = "";
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        hint = " (another sparsedoc process holds the database; try again when it finishes)";
    else if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) {
        st = SD_ERR_FORMAT;
        hint = " (the database file is damaged or not a sparsedoc database; move it aside and re-ingest)";
    } else if (code == SQLITE_FULL)
        hint = " (disk full)";
    else if (code == SQLITE_NOMEM)
        st = SD_ERR_NOMEM;
    else if (code == SQLITE_READONLY || code == SQLITE_CANTOPEN || code == SQLITE_PERM)
        hint = " (check the path and its permissions, or pass --db)";
    return sd_err_set(err, st, "%s: %s: %s%s", s->path, what, sqlite3_errmsg(s->db), hint);
}

enum sd_status sd_store_exec(struct sd_store *s, const char *sql, struct sd_err *err)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_err(s, err, "execute");
    return SD_OK;
}

static int pragma_int(struct sd_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int sd_store_user_version(struct sd_store *s)
{
    return pragma_int(s, "PRAGMA user_version");
}

enum sd_status sd_store_begin(struct sd_store *s, struct sd_err *err)
{
    return sd_store_exec(s, "BEGIN IMMEDIATE", err);
}

enum sd_status sd_store_commit(struct sd_store *s, struct sd_err *err)
{
    return sd_store_exec(s, "COMMIT", err);
}

void sd_store_rollback(struct sd_store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static enum sd_status migrate(struct sd_store *s, struct sd_err *err)
{
    int n = (int)(sizeof migrations / sizeof migrations[0]);
    int v = sd_store_user_version(s);
    if (v > n)
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "%s: database schema version %d is newer than this sparsedoc supports (%d); "
                          "upgrade sparsedoc or use another --db",
                          s->path, v, n);
    if (v == n)
        return SD_OK;
    enum sd_status st = sd_store_begin(s, err);
    if (st)
        return st;
    v = sd_store_user_version(s); // re-read under the write lock: another process may have migrated
    for (; v < n; v++) {
        if ((st = sd_store_exec(s, migrations[v], err)))
            goto fail;
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
        if ((st = sd_store_exec(s, sql, err)))
            goto fail;
    }
    return sd_store_commit(s, err);
fail:
    sd_store_rollback(s);
    return st;
}

static enum sd_status prepare(struct sd_store *s, const char *sql, sqlite3_stmt **st, struct sd_err *err)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
        return db_err(s, err, "prepare");
    return SD_OK;
}

// Before anything writes to the file (journal mode, schema): refuse a database this sparsedoc cannot
// use. A newer schema is left to a newer sparsedoc; an SQLite file with tables but no schema version
// belongs to another program and must not get our tables added to it.
static enum sd_status check_ours(struct sd_store *s, struct sd_err *err)
{
    int n = (int)(sizeof migrations / sizeof migrations[0]);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)",
                           -1, &q, NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW) {
        enum sd_status st = db_err(s, err, "open");
        sqlite3_finalize(q);
        return st;
    }
    int v = sqlite3_column_int(q, 0);
    int64_t n_objects = sqlite3_column_int64(q, 1);
    sqlite3_finalize(q);
    if (v > n)
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "%s: database schema version %d is newer than this sparsedoc supports (%d); "
                          "upgrade sparsedoc or use another --db",
                          s->path, v, n);
    if (v == 0 && n_objects > 0)
        return sd_err_set(err, SD_ERR_FORMAT,
                          "%s: an SQLite database of another program (it has tables but no sparsedoc schema); "
                          "it was left untouched: pass --db with a new or sparsedoc file",
                          s->path);
    return SD_OK;
}

enum sd_status sd_store_open(const char *path, struct sd_store **out, struct sd_err *err)
{
    *out = NULL;
    if (!path || !*path)
        return sd_err_set(err, SD_ERR_ARG, "no database path given");
    struct sd_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory opening %s", path);
    }
    enum sd_status st = SD_OK;
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        st = s->db ? db_err(s, err, "open") : sd_err_set(err, SD_ERR_NOMEM, "%s: cannot open", path);
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 0);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    if ((st = check_ours(s, err)))
        goto fail;
    // WAL first, retried while another process opens the same new file (sqlite_wal.h). A filesystem that
    // keeps another journal mode is accepted, as before.
    int wal = 0;
    if (sd_sqlite_set_wal(s->db, BUSY_TIMEOUT_MS, &wal) != SQLITE_OK) {
        st = db_err(s, err, "execute");
        goto fail;
    }
    if ((st = sd_store_exec(s, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;",
                            err)))
        goto fail;
    if (pragma_int(s, "PRAGMA foreign_keys") != 1) {
        st = sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: SQLite lacks foreign key support", path);
        goto fail;
    }
    if ((st = migrate(s, err)))
        goto fail;
    if ((st = prepare(s,
                      "INSERT INTO spans (doc_id, ord, page_no, page_label, line_start, line_end, section, "
                      "n_tokens, text) VALUES (?,?,?,?,?,?,?,?,?)",
                      &s->st_span_add, err)) ||
        (st = prepare(s, "INSERT OR REPLACE INTO pages (doc_id, page_no, label, state, n_chars) VALUES (?,?,?,?,?)",
                      &s->st_page_add, err)) ||
        (st = prepare(s,
                      "INSERT OR REPLACE INTO sections (doc_id, ord, level, page_no, title) VALUES (?,?,?,?,?)",
                      &s->st_section_add, err)))
        goto fail;
    *out = s;
    return SD_OK;
fail:
    sd_store_close(s);
    return st;
}

void sd_store_close(struct sd_store *s)
{
    if (!s)
        return;
    sqlite3_finalize(s->st_span_add);
    sqlite3_finalize(s->st_page_add);
    sqlite3_finalize(s->st_section_add);
    if (s->db)
        sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

struct sqlite3 *sd_store_db(struct sd_store *s)
{
    return s->db;
}

enum sd_status sd_store_integrity_check(struct sd_store *s, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s, "PRAGMA integrity_check", &st, err);
    if (r)
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        r = db_err(s, err, "integrity_check");
    else if (strcmp((const char *)sqlite3_column_text(st, 0), "ok"))
        r = sd_err_set(err, SD_ERR_FORMAT, "%s: integrity check failed: %s", s->path,
                       (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (r == SD_OK) // the FTS index must agree with its content table too
        r = sd_store_exec(s, "INSERT INTO spans_fts(spans_fts, rank) VALUES ('integrity-check', 1)", err);
    return r;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

enum sd_status sd_store_doc_state(struct sd_store *s, const char *path, struct sd_doc_state *ds, struct sd_err *err)
{
    memset(ds, 0, sizeof *ds);
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(
        s, "SELECT id, size, mtime_ns, sha256, ocr_pages IS NOT NULL AND ocr_pages <> '' FROM documents WHERE path = ?",
        &st, err);
    if (r)
        return r;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        ds->found = 1;
        ds->id = sqlite3_column_int64(st, 0);
        ds->size = sqlite3_column_int64(st, 1);
        ds->mtime_ns = sqlite3_column_int64(st, 2);
        snprintf(ds->sha256, sizeof ds->sha256, "%s", col_text(st, 3) ? col_text(st, 3) : "");
        ds->needs_ocr = sqlite3_column_int(st, 4);
    } else if (rc != SQLITE_DONE)
        r = db_err(s, err, "read document state");
    sqlite3_finalize(st);
    return r;
}

static enum sd_status run_simple(struct sd_store *s, sqlite3_stmt *st, struct sd_err *err, const char *what)
{
    int rc = sqlite3_step(st);
    enum sd_status r = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? SD_OK : db_err(s, err, what);
    sqlite3_finalize(st);
    return r;
}

enum sd_status sd_store_doc_touch(struct sd_store *s, int64_t id, int64_t mtime_ns, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s, "UPDATE documents SET mtime_ns = ? WHERE id = ?", &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, mtime_ns);
    sqlite3_bind_int64(st, 2, id);
    return run_simple(s, st, err, "update document");
}

enum sd_status sd_store_doc_replace(struct sd_store *s, const struct sd_doc_new *d, int64_t *id, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s, "DELETE FROM documents WHERE path = ?", &st, err);
    if (r)
        return r;
    sqlite3_bind_text(st, 1, d->path, -1, SQLITE_STATIC);
    if ((r = run_simple(s, st, err, "replace document")))
        return r;
    if ((r = prepare(s,
                     "INSERT INTO documents (path, root, kind, lang, title, author, size, mtime_ns, sha256, "
                     "n_pages, n_lines, ocr_pages, failed_pages, ingested_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     &st, err)))
        return r;
    sqlite3_bind_text(st, 1, d->path, -1, SQLITE_STATIC);
    bind_text_or_null(st, 2, d->root);
    bind_text_or_null(st, 3, d->kind ? d->kind : "text");
    bind_text_or_null(st, 4, d->lang);
    bind_text_or_null(st, 5, d->title);
    bind_text_or_null(st, 6, d->author);
    sqlite3_bind_int64(st, 7, d->size);
    sqlite3_bind_int64(st, 8, d->mtime_ns);
    bind_text_or_null(st, 9, d->sha256 ? d->sha256 : "");
    sqlite3_bind_int64(st, 10, d->n_pages);
    sqlite3_bind_int64(st, 11, d->n_lines);
    bind_text_or_null(st, 12, d->ocr_pages && *d->ocr_pages ? d->ocr_pages : NULL);
    bind_text_or_null(st, 13, d->failed_pages && *d->failed_pages ? d->failed_pages : NULL);
    sqlite3_bind_int64(st, 14, (int64_t)time(NULL));
    if ((r = run_simple(s, st, err, "insert document")))
        return r;
    *id = sqlite3_last_insert_rowid(s->db);
    return SD_OK;
}

enum sd_status sd_store_doc_totals(struct sd_store *s, int64_t id, int64_t n_spans, int64_t n_chars,
                                   int64_t n_tokens, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r =
        prepare(s, "UPDATE documents SET n_spans = ?, n_chars = ?, n_tokens = ? WHERE id = ?", &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, n_spans);
    sqlite3_bind_int64(st, 2, n_chars);
    sqlite3_bind_int64(st, 3, n_tokens);
    sqlite3_bind_int64(st, 4, id);
    return run_simple(s, st, err, "update document totals");
}

static enum sd_status step_reset(struct sd_store *s, sqlite3_stmt *st, struct sd_err *err, const char *what)
{
    int rc = sqlite3_step(st);
    enum sd_status r = rc == SQLITE_DONE ? SD_OK : db_err(s, err, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

enum sd_status sd_store_page_add(struct sd_store *s, int64_t doc_id, int page_no, const char *label,
                                 const char *state, int64_t n_chars, struct sd_err *err)
{
    sqlite3_stmt *st = s->st_page_add;
    sqlite3_bind_int64(st, 1, doc_id);
    sqlite3_bind_int(st, 2, page_no);
    bind_text_or_null(st, 3, label);
    bind_text_or_null(st, 4, state ? state : "ok");
    sqlite3_bind_int64(st, 5, n_chars);
    return step_reset(s, st, err, "insert page");
}

enum sd_status sd_store_page_words_set(struct sd_store *s, int64_t doc_id, int page_no, const void *blob, size_t len,
                                       struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r =
        prepare(s, "INSERT OR REPLACE INTO page_words(doc_id, page_no, words) VALUES (?, ?, ?)", &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, doc_id);
    sqlite3_bind_int(st, 2, page_no);
    sqlite3_bind_blob64(st, 3, blob ? blob : "", (sqlite3_uint64)len, SQLITE_STATIC);
    return run_simple(s, st, err, "insert page words");
}

enum sd_status sd_store_page_words_get(struct sd_store *s, int64_t doc_id, int page_no, void **blob, size_t *len,
                                       struct sd_err *err)
{
    *blob = NULL;
    *len = 0;
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s, "SELECT words FROM page_words WHERE doc_id = ? AND page_no = ?", &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, doc_id);
    sqlite3_bind_int(st, 2, page_no);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const void *b = sqlite3_column_blob(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        if (n) {
            *blob = malloc(n);
            if (!*blob)
                r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            else {
                memcpy(*blob, b, n);
                *len = n;
            }
        }
    } else if (rc != SQLITE_DONE)
        r = db_err(s, err, "read page words");
    sqlite3_finalize(st);
    return r;
}

enum sd_status sd_store_section_add(struct sd_store *s, int64_t doc_id, int ord, int level, int page_no,
                                    const char *title, struct sd_err *err)
{
    sqlite3_stmt *st = s->st_section_add;
    sqlite3_bind_int64(st, 1, doc_id);
    sqlite3_bind_int(st, 2, ord);
    sqlite3_bind_int(st, 3, level);
    sqlite3_bind_int(st, 4, page_no);
    bind_text_or_null(st, 5, title ? title : "");
    return step_reset(s, st, err, "insert section");
}

enum sd_status sd_store_span_add(struct sd_store *s, int64_t doc_id, const struct sd_span *sp, struct sd_err *err)
{
    sqlite3_stmt *st = s->st_span_add;
    sqlite3_bind_int64(st, 1, doc_id);
    sqlite3_bind_int(st, 2, sp->ord);
    sqlite3_bind_int(st, 3, sp->page_no);
    bind_text_or_null(st, 4, sp->page_label);
    sqlite3_bind_int(st, 5, sp->line_start);
    sqlite3_bind_int(st, 6, sp->line_end);
    bind_text_or_null(st, 7, sp->section);
    sqlite3_bind_int64(st, 8, sp->n_tokens);
    sqlite3_bind_text(st, 9, sp->text, (int)sp->len, SQLITE_STATIC);
    return step_reset(s, st, err, "insert span");
}

enum sd_status sd_store_doc_remove(struct sd_store *s, int64_t id, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s, "DELETE FROM documents WHERE id = ?", &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, id);
    if ((r = run_simple(s, st, err, "remove document")))
        return r;
    if (sqlite3_changes(s->db) == 0)
        return sd_err_set(err, SD_ERR_MISSING, "no document with id %lld (see 'sparsedoc docs list')",
                          (long long)id);
    return SD_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

enum sd_status sd_store_remove_missing(struct sd_store *s, const char *root, char *const *keep, size_t n_keep,
                                       char *const *skip_prefixes, size_t n_skip, size_t *n_removed,
                                       struct sd_err *err)
{
    *n_removed = 0;
    size_t rl = strlen(root);
    char *lo = malloc(rl + 2), *hi = malloc(rl + 2);
    int64_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    sqlite3_stmt *st = NULL;
    enum sd_status r = SD_OK;
    if (!lo || !hi) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    // Paths under root are exactly those in [root + "/", root + "0") ('0' follows '/').
    memcpy(lo, root, rl);
    memcpy(hi, root, rl);
    lo[rl] = '/';
    hi[rl] = '0';
    lo[rl + 1] = hi[rl + 1] = 0;
    if ((r = prepare(s, "SELECT id, path FROM documents WHERE path >= ? AND path < ?", &st, err)))
        goto out;
    sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *p = col_text(st, 1);
        const char *key = p;
        if (bsearch(&key, keep, n_keep, sizeof *keep, cmp_str))
            continue;
        int skip = 0;
        for (size_t i = 0; i < n_skip && !skip; i++) {
            size_t l = strlen(skip_prefixes[i]);
            skip = !strncmp(p, skip_prefixes[i], l) && (p[l] == '/' || p[l] == 0);
        }
        if (skip)
            continue;
        if (n_ids == cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *n = realloc(ids, cap * sizeof *ids);
            if (!n) {
                r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                goto out;
            }
            ids = n;
        }
        ids[n_ids++] = sqlite3_column_int64(st, 0);
    }
    if (rc != SQLITE_DONE) {
        r = db_err(s, err, "list documents");
        goto out;
    }
    for (size_t i = 0; i < n_ids; i++) {
        r = sd_store_doc_remove(s, ids[i], err);
        if (r == SD_ERR_MISSING) // removed meanwhile by another process
            r = SD_OK;
        else if (r)
            goto out;
        else
            (*n_removed)++;
    }
out:
    sqlite3_finalize(st);
    free(ids);
    free(lo);
    free(hi);
    return r;
}

#define DOC_COLS                                                                                                       \
    "id, path, kind, lang, title, author, sha256, ocr_pages, failed_pages, size, mtime_ns, n_pages, n_lines, "         \
    "n_spans, n_chars, n_tokens, ingested_at, root, "                                                                  \
    "(SELECT count(*) FROM pages WHERE pages.doc_id = documents.id AND pages.state = 'ocr')"

static void read_doc(sqlite3_stmt *st, struct sd_doc *d)
{
    d->id = sqlite3_column_int64(st, 0);
    d->path = col_text(st, 1);
    d->kind = col_text(st, 2);
    d->lang = col_text(st, 3);
    d->title = col_text(st, 4);
    d->author = col_text(st, 5);
    d->sha256 = col_text(st, 6);
    d->ocr_pages = col_text(st, 7);
    d->failed_pages = col_text(st, 8);
    d->size = sqlite3_column_int64(st, 9);
    d->mtime_ns = sqlite3_column_int64(st, 10);
    d->n_pages = sqlite3_column_int64(st, 11);
    d->n_lines = sqlite3_column_int64(st, 12);
    d->n_spans = sqlite3_column_int64(st, 13);
    d->n_chars = sqlite3_column_int64(st, 14);
    d->n_tokens = sqlite3_column_int64(st, 15);
    d->ingested_at = sqlite3_column_int64(st, 16);
    d->root = col_text(st, 17);
    d->n_ocr_read = sqlite3_column_int64(st, 18);
}

enum sd_status sd_store_docs_foreach(struct sd_store *s, sd_doc_fn fn, void *user, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s, "SELECT " DOC_COLS " FROM documents ORDER BY path", &st, err);
    if (r)
        return r;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct sd_doc d;
        read_doc(st, &d);
        if (fn(user, &d))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        r = db_err(s, err, "list documents");
    sqlite3_finalize(st);
    return r;
}

enum sd_status sd_store_doc_get(struct sd_store *s, int64_t id, sd_doc_fn fn, void *user, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s, "SELECT " DOC_COLS " FROM documents WHERE id = ?", &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        struct sd_doc d;
        read_doc(st, &d);
        fn(user, &d);
    } else if (rc == SQLITE_DONE)
        r = sd_err_set(err, SD_ERR_MISSING, "no document with id %lld (see 'sparsedoc docs list')", (long long)id);
    else
        r = db_err(s, err, "read document");
    sqlite3_finalize(st);
    return r;
}

enum sd_status sd_store_sections_foreach(struct sd_store *s, int64_t doc_id, sd_section_fn fn, void *user,
                                         struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r =
        prepare(s, "SELECT level, page_no, title FROM sections WHERE doc_id = ? ORDER BY ord", &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, doc_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct sd_section_row row = {sqlite3_column_int(st, 0), sqlite3_column_int(st, 1), col_text(st, 2)};
        if (fn(user, &row))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        r = db_err(s, err, "list sections");
    sqlite3_finalize(st);
    return r;
}

enum sd_status sd_store_spans_foreach(struct sd_store *s, int64_t doc_id, sd_span_fn fn, void *user,
                                      struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r = prepare(s,
                               "SELECT s.id, s.doc_id, s.ord, s.page_no, s.line_start, s.line_end, s.page_label, "
                               "s.section, s.text, d.path FROM spans s JOIN documents d ON d.id = s.doc_id "
                               "WHERE s.doc_id = ? ORDER BY s.ord",
                               &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, doc_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct sd_span_row row = {
            .id = sqlite3_column_int64(st, 0),
            .doc_id = sqlite3_column_int64(st, 1),
            .ord = sqlite3_column_int(st, 2),
            .page_no = sqlite3_column_int(st, 3),
            .line_start = sqlite3_column_int(st, 4),
            .line_end = sqlite3_column_int(st, 5),
            .page_label = col_text(st, 6),
            .section = col_text(st, 7),
            .text = col_text(st, 8),
            .path = col_text(st, 9),
        };
        row.len = (size_t)sqlite3_column_bytes(st, 8);
        if (!row.text)
            row.text = "";
        if (fn(user, &row))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        r = db_err(s, err, "read spans");
    sqlite3_finalize(st);
    return r;
}

// Turn plain words into an FTS5 query: each word quoted (so no FTS syntax leaks through), joined by
// joiner (" " = all words, " OR " = any). Returns NULL when there is no word.
static char *fts_query(const char *q, const char *joiner)
{
    size_t n = strlen(q), cap = n * 3 + strlen(joiner) * (n + 1) + 8;
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    int words = 0;
    const unsigned char *p = (const unsigned char *)q;
    while (*p) {
        while (*p && *p < 0x80 && !((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                                    *p == '_'))
            p++;
        if (!*p)
            break;
        if (words++)
            o += sprintf(o, "%s", joiner);
        *o++ = '"';
        while (*p && (*p >= 0x80 || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                      (*p >= 'A' && *p <= 'Z') || *p == '_'))
            *o++ = (char)*p++;
        *o++ = '"';
    }
    *o = 0;
    if (!words) {
        free(out);
        return NULL;
    }
    return out;
}

static enum sd_status search_run(struct sd_store *s, const char *match, int prefix_like, const char *raw, int limit,
                                 sd_hit_fn fn, void *user, size_t *n_hits, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    enum sd_status r;
    if (!prefix_like)
        r = prepare(s,
                    "SELECT s.doc_id, s.id, d.path, d.title, d.kind, s.page_label, s.section, "
                    "snippet(spans_fts, 0, '[', ']', '...', 16), s.page_no, s.line_start, s.line_end, "
                    "bm25(spans_fts) AS rk FROM spans_fts JOIN spans s ON s.id = spans_fts.rowid "
                    "JOIN documents d ON d.id = s.doc_id WHERE spans_fts MATCH ? ORDER BY rk LIMIT ?",
                    &st, err);
    else // substring fallback for scripts without spaces between words (CJK)
        r = prepare(s,
                    "SELECT s.doc_id, s.id, d.path, d.title, d.kind, s.page_label, s.section, "
                    "substr(s.text, max(1, instr(s.text, ?1) - 40), 120), s.page_no, s.line_start, s.line_end, "
                    "0.0 FROM spans s JOIN documents d ON d.id = s.doc_id WHERE instr(s.text, ?1) > 0 "
                    "ORDER BY d.path, s.ord LIMIT ?2",
                    &st, err);
    if (r)
        return r;
    sqlite3_bind_text(st, 1, prefix_like ? raw : match, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct sd_search_hit h = {
            .doc_id = sqlite3_column_int64(st, 0),
            .span_id = sqlite3_column_int64(st, 1),
            .path = col_text(st, 2),
            .title = col_text(st, 3),
            .kind = col_text(st, 4),
            .page_label = col_text(st, 5),
            .section = col_text(st, 6),
            .snippet = col_text(st, 7),
            .page_no = sqlite3_column_int(st, 8),
            .line_start = sqlite3_column_int(st, 9),
            .line_end = sqlite3_column_int(st, 10),
            .rank = sqlite3_column_double(st, 11),
        };
        (*n_hits)++;
        if (fn(user, &h))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        r = db_err(s, err, "search");
    sqlite3_finalize(st);
    return r;
}

enum sd_status sd_store_search(struct sd_store *s, const char *query, int limit, sd_hit_fn fn, void *user,
                               size_t *n_hits, struct sd_err *err)
{
    *n_hits = 0;
    if (limit <= 0)
        limit = 10;
    char *all = fts_query(query, " "), *any = fts_query(query, " OR ");
    enum sd_status r = SD_OK;
    if (!all || !any) {
        r = sd_err_set(err, SD_ERR_ARG, "search query '%s' has no words to look for", query);
        goto out;
    }
    if ((r = search_run(s, all, 0, NULL, limit, fn, user, n_hits, err)) || *n_hits)
        goto out;
    if ((r = search_run(s, any, 0, NULL, limit, fn, user, n_hits, err)) || *n_hits)
        goto out;
    int non_ascii = 0;
    for (const unsigned char *p = (const unsigned char *)query; *p; p++)
        non_ascii |= *p >= 0x80;
    if (non_ascii)
        r = search_run(s, NULL, 1, query, limit, fn, user, n_hits, err);
out:
    free(all);
    free(any);
    return r;
}

enum sd_status sd_store_run_begin(struct sd_store *s, const char *paths, int64_t *run_id, int64_t *resumed_from,
                                  struct sd_err *err)
{
    *resumed_from = 0;
    sqlite3_stmt *st = NULL;
    enum sd_status r =
        prepare(s, "SELECT id FROM ingest_runs WHERE paths = ? AND finished_at IS NULL ORDER BY id DESC LIMIT 1",
                &st, err);
    if (r)
        return r;
    sqlite3_bind_text(st, 1, paths, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        *resumed_from = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if ((r = prepare(s, "INSERT INTO ingest_runs (paths, started_at) VALUES (?, ?)", &st, err)))
        return r;
    sqlite3_bind_text(st, 1, paths, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
    if ((r = run_simple(s, st, err, "record ingest run")))
        return r;
    *run_id = sqlite3_last_insert_rowid(s->db);
    return SD_OK;
}

enum sd_status sd_store_run_finish(struct sd_store *s, int64_t run_id, const char *summary, struct sd_err *err)
{
    sqlite3_stmt *st = NULL;
    // Finishing a run also closes the interrupted runs over the same paths it resumed.
    enum sd_status r = prepare(s,
                               "UPDATE ingest_runs SET finished_at = ?1, summary = coalesce(summary, ?2) WHERE "
                               "finished_at IS NULL AND paths = (SELECT paths FROM ingest_runs WHERE id = ?3) "
                               "AND id <= ?3",
                               &st, err);
    if (r)
        return r;
    sqlite3_bind_int64(st, 1, (int64_t)time(NULL));
    bind_text_or_null(st, 2, summary);
    sqlite3_bind_int64(st, 3, run_id);
    return run_simple(s, st, err, "finish ingest run");
}
