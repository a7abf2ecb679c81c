// store.h: the SQLite document store: schema and migrations (PRAGMA user_version), WAL, foreign keys,
// busy timeout; documents, pages, outline sections, spans (text + source reference) with an FTS5 index,
// persisted contexts (rows in contexts_store.c), and conversations (rows in conversations.c). Every
// SQLite error is translated to an enum sd_status with a message here.
// One struct sd_store per thread; several processes may share one database file.
#ifndef SD_DATA_STORE_H
#define SD_DATA_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

struct sd_store; // opaque
struct sqlite3;

#define SD_STORE_SCHEMA_VERSION 5

// Open (creating if needed) the store at path, applying migrations. *out is freed with sd_store_close().
enum sd_status sd_store_open(const char *path, struct sd_store **out, struct sd_err *err);
void sd_store_close(struct sd_store *s);
struct sqlite3 *sd_store_db(struct sd_store *s); // borrowed
int sd_store_user_version(struct sd_store *s);

// Run PRAGMA integrity_check; SD_OK when the result is "ok", SD_ERR_FORMAT with the first problem otherwise.
enum sd_status sd_store_integrity_check(struct sd_store *s, struct sd_err *err);

// Write transactions: BEGIN IMMEDIATE (waits on other writers up to the busy timeout), COMMIT, ROLLBACK.
enum sd_status sd_store_begin(struct sd_store *s, struct sd_err *err);
enum sd_status sd_store_commit(struct sd_store *s, struct sd_err *err);
void sd_store_rollback(struct sd_store *s);

// Run one or more SQL statements without results.
enum sd_status sd_store_exec(struct sd_store *s, const char *sql, struct sd_err *err);

// A document row as read back (strings borrowed for the duration of the callback; may be NULL).
struct sd_doc {
    int64_t id;
    const char *path, *kind, *lang, *title, *author, *sha256, *ocr_pages, *failed_pages;
    int64_t size, mtime_ns, n_pages, n_lines, n_spans, n_chars, n_tokens, ingested_at;
    const char *root; // the folder it was ingested from (NULL for a file named on its own)
    int64_t n_ocr_read; // pages whose text was read by OCR (pages.state 'ocr')
};

// Known state of a path, for incremental re-ingest. found = 0 when the path has no document.
struct sd_doc_state {
    int found;
    int64_t id, size, mtime_ns;
    char sha256[65];
    int needs_ocr; // some pages have no usable text layer and were not read by OCR (documents.ocr_pages)
};
enum sd_status sd_store_doc_state(struct sd_store *s, const char *path, struct sd_doc_state *st, struct sd_err *err);
// Record a new mtime for an unchanged (same hash) document.
enum sd_status sd_store_doc_touch(struct sd_store *s, int64_t id, int64_t mtime_ns, struct sd_err *err);

// New document values. Inserting replaces any document with the same path (its spans go with it).
struct sd_doc_new {
    const char *path, *root, *kind, *lang, *title, *author, *sha256, *ocr_pages, *failed_pages;
    int64_t size, mtime_ns, n_pages, n_lines;
};
enum sd_status sd_store_doc_replace(struct sd_store *s, const struct sd_doc_new *d, int64_t *id,
                                    struct sd_err *err);
// Set the span/char/token totals of a document after its spans were added.
enum sd_status sd_store_doc_totals(struct sd_store *s, int64_t id, int64_t n_spans, int64_t n_chars,
                                   int64_t n_tokens, struct sd_err *err);

// One page of a PDF: label (may be NULL), state "ok", "empty", "garbled", "failed", "timeout".
enum sd_status sd_store_page_add(struct sd_store *s, int64_t doc_id, int page_no, const char *label,
                                 const char *state, int64_t n_chars, struct sd_err *err);
// One outline entry: level (0 = top), page (1-based, 0 unknown), title.
// Word boxes of a page read by OCR, replacing the page's earlier ones. blob: records of 4 float32 x0, y0,
// x1, y1 (PDF points from the page's top left, y down), a uint16 byte count and that many UTF-8 bytes of
// the word; little-endian (sd_pdf_page.words).
enum sd_status sd_store_page_words_set(struct sd_store *s, int64_t doc_id, int page_no, const void *blob, size_t len,
                                       struct sd_err *err);
// *blob malloc'd (caller frees); NULL and *len 0 when the page has none.
enum sd_status sd_store_page_words_get(struct sd_store *s, int64_t doc_id, int page_no, void **blob, size_t *len,
                                       struct sd_err *err);
enum sd_status sd_store_section_add(struct sd_store *s, int64_t doc_id, int ord, int level, int page_no,
                                    const char *title, struct sd_err *err);

// A span of text with its source reference: page_no (1-based, 0 if not a page) + page_label, or a
// line range (1-based, inclusive; 0 if not lines). section: the enclosing outline/heading title.
struct sd_span {
    int ord;
    int page_no;
    const char *page_label;
    int line_start, line_end;
    const char *section;
    const char *text;
    size_t len;
    int64_t n_tokens; // -1 unknown
};
enum sd_status sd_store_span_add(struct sd_store *s, int64_t doc_id, const struct sd_span *sp, struct sd_err *err);

// Remove one document (its pages, sections, spans, FTS rows and contexts go with it). SD_ERR_MISSING if absent.
enum sd_status sd_store_doc_remove(struct sd_store *s, int64_t id, struct sd_err *err);
// Remove documents under root (a directory path without trailing '/') whose path is not in keep
// (sorted array of n_keep strings, compared with strcmp) and not under any of the skip prefixes.
enum sd_status sd_store_remove_missing(struct sd_store *s, const char *root, char *const *keep, size_t n_keep,
                                       char *const *skip_prefixes, size_t n_skip, size_t *n_removed,
                                       struct sd_err *err);

// Callbacks return 0 to continue, non-zero to stop.
typedef int (*sd_doc_fn)(void *user, const struct sd_doc *d);
enum sd_status sd_store_docs_foreach(struct sd_store *s, sd_doc_fn fn, void *user, struct sd_err *err);
// SD_ERR_MISSING if no document has this id.
enum sd_status sd_store_doc_get(struct sd_store *s, int64_t id, sd_doc_fn fn, void *user, struct sd_err *err);

struct sd_section_row {
    int level, page_no;
    const char *title;
};
typedef int (*sd_section_fn)(void *user, const struct sd_section_row *r);
enum sd_status sd_store_sections_foreach(struct sd_store *s, int64_t doc_id, sd_section_fn fn, void *user,
                                         struct sd_err *err);

// A span as read back (strings borrowed for the callback).
struct sd_span_row {
    int64_t id, doc_id;
    int ord, page_no, line_start, line_end;
    const char *page_label, *section, *text, *path;
    size_t len;
};
typedef int (*sd_span_fn)(void *user, const struct sd_span_row *r);
// Spans of one document in order.
enum sd_status sd_store_spans_foreach(struct sd_store *s, int64_t doc_id, sd_span_fn fn, void *user,
                                      struct sd_err *err);

// Full-text search. query is plain words (not FTS syntax): all words must match; if nothing does, any
// word may. Hits come best first with a snippet ([...] marks the matches).
struct sd_search_hit {
    int64_t doc_id, span_id;
    const char *path, *title, *kind, *page_label, *section, *snippet;
    int page_no, line_start, line_end;
    double rank;
};
typedef int (*sd_hit_fn)(void *user, const struct sd_search_hit *h);
enum sd_status sd_store_search(struct sd_store *s, const char *query, int limit, sd_hit_fn fn, void *user,
                               size_t *n_hits, struct sd_err *err);

// Ingest runs (persisted progress). begin returns a run id; finish marks it complete.
enum sd_status sd_store_run_begin(struct sd_store *s, const char *paths, int64_t *run_id, int64_t *resumed_from,
                                  struct sd_err *err);
enum sd_status sd_store_run_finish(struct sd_store *s, int64_t run_id, const char *summary, struct sd_err *err);

#endif
