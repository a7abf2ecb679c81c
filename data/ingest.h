// ingest.h: ingestion of files and directory trees into the store. Plans the work (walks trees), then
// per file: skip if unchanged (size + mtime, then SHA-256), extract (PDF worker, or text/code split into
// line-numbered spans), and replace the document's rows in one short write transaction. PDF pages without
// a usable text layer are read by OCR when Tesseract can run (ocr.h); an unchanged document that still has
// pages needing OCR is extracted again once OCR can run (Tesseract or its language data installed since). Files deleted
// from an ingested tree are removed. Every file commits on its own, so an interrupted ingest resumes
// where it stopped (committed files are unchanged the next time).
#ifndef SD_DATA_INGEST_H
#define SD_DATA_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"
#include "store.h"

enum sd_ingest_event_kind {
    SD_INGEST_PLANNED,   // planning done: total = files to look at, bytes_total = their size
    SD_INGEST_ADDED,     // a new document
    SD_INGEST_UPDATED,   // a changed document replaced
    SD_INGEST_UNCHANGED, // skipped: same size/mtime or same content
    SD_INGEST_SKIPPED,   // not ingested on purpose (binary, too large, ...): msg says why
    SD_INGEST_FAILED,    // could not be ingested: msg says why and what to do
    SD_INGEST_REMOVED,   // a document whose file is gone from its tree
    SD_INGEST_WARNING,   // ingested with problems (pages needing OCR, failed pages): msg
    SD_INGEST_PAGE,      // progress inside a PDF: page (0-based) of n_pages started; ocr: it is being read by OCR
};

struct sd_ingest_event {
    enum sd_ingest_event_kind kind;
    const char *path;
    const char *msg; // may be NULL
    size_t index, total;           // files done so far (after this one) / files planned
    int64_t bytes_done, bytes_total;
    int page, n_pages, ocr; // SD_INGEST_PAGE only
};
typedef void (*sd_ingest_event_fn)(void *user, const struct sd_ingest_event *ev);

// Count the tokens of text (for the summary and the spans' n_tokens); return -1 on failure.
typedef int64_t (*sd_count_tokens_fn)(void *user, const char *text, size_t len);

struct sd_ingest_opts {
    const char *password;    // for encrypted PDFs
    double page_timeout_s;   // PDF budget per page (0: default 30 s)
    double file_timeout_s;   // PDF budget per file (0: default 600 s)
    int64_t max_file_bytes;  // text/code size cap (0: 4 MiB)
    sd_count_tokens_fn count_tokens; // optional
    void *tok_user;
    sd_ingest_event_fn on_event; // optional
    void *user;
    volatile int *cancel;    // optional: set non-zero (e.g. from a signal handler) to stop after the current file
    int no_ocr;              // 1: pages without a usable text layer are only flagged, never read by OCR
    const char *ocr_lang;    // Tesseract languages for OCR ("eng+fra"); NULL: "eng" (data/ocr.h)
};

struct sd_ingest_stats {
    size_t files, added, updated, unchanged, skipped, failed, removed, warnings;
    int64_t pages, ocr_pages, failed_pages, spans, chars, tokens, bytes;
    int64_t ocr_read_pages; // pages read by OCR (ocr_pages: pages that still need it)
    int64_t no_text_pages;  // pages where OCR found no text either
    int resumed;   // an interrupted ingest of the same paths was found and resumed
    int cancelled;
};

// Ingest paths (files or directories). Returns SD_OK when every path was looked at (failed files are
// counted in stats->failed and reported through on_event), or the store error that stopped it.
enum sd_status sd_ingest(struct sd_store *s, char *const *paths, size_t n_paths, const struct sd_ingest_opts *opts,
                         struct sd_ingest_stats *stats, struct sd_err *err);

// SHA-256 of a file as 64 hex digits (out has room for 65 bytes).
enum sd_status sd_file_sha256(const char *path, char out[65], struct sd_err *err);

// Split text (valid UTF-8) into line-numbered spans: calls fn for each (text pointers into text).
// kind: SD_FILE_CODE / SD_FILE_TEXT / SD_FILE_MARKDOWN (headings start spans and name sections).
typedef enum sd_status (*sd_span_out_fn)(void *user, const struct sd_span *sp, struct sd_err *err);
enum sd_status sd_split_lines(const char *text, size_t len, int kind, sd_span_out_fn fn, void *user,
                              struct sd_err *err);

#endif
