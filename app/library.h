// library.h: the document library as the GTK app shows it, on top of data/: documents and code folders
// with their ingestion state (ok, warnings, changed on disk, missing), removal of a document or of a
// whole folder, ingestion without a model (tokens not counted), the text of a cited page or line range,
// and the KV cache's statistics and clearing. One struct sd_library per thread (it holds its own store
// connection; WAL lets it read while another thread or process writes).
#ifndef SD_APP_LIBRARY_H
#define SD_APP_LIBRARY_H

#include <stddef.h>
#include <stdint.h>

#include "ingest.h"
#include "kvcache.h"
#include "sd_status.h"

struct sd_library; // opaque

// Open the store at db_path (NULL: sd_paths_db default). *out is freed with sd_library_close().
enum sd_status sd_library_open(const char *db_path, struct sd_library **out, struct sd_err *err);
void sd_library_close(struct sd_library *lib);
struct sd_store *sd_library_store(struct sd_library *lib); // borrowed

enum sd_library_state {
    SD_LIBRARY_OK = 0,
    SD_LIBRARY_WARNING, // ingested with problems (pages needing OCR, failed pages): state_msg says which
    SD_LIBRARY_CHANGED, // the file changed on disk since it was ingested: re-scan it
    SD_LIBRARY_MISSING, // the file is gone
};
const char *sd_library_state_str(enum sd_library_state s);

// One document as listed (strings borrowed for the duration of the callback; may be NULL except path, kind).
struct sd_library_doc {
    int64_t id;
    const char *path, *root, *kind, *title;
    int64_t size, n_pages, n_lines, n_chars, ingested_at;
    int64_t n_tokens; // <= 0 with n_chars > 0: not counted (ingested without a model)
    enum sd_library_state state;
    const char *state_msg;
};
typedef int (*sd_library_doc_fn)(void *user, const struct sd_library_doc *d);
// Every document, ordered by root (NULL first: files added on their own) then path. Stats each file.
enum sd_status sd_library_docs(struct sd_library *lib, sd_library_doc_fn fn, void *user, struct sd_err *err);

// Remove one document; SD_ERR_MISSING if absent.
enum sd_status sd_library_remove(struct sd_library *lib, int64_t doc_id, struct sd_err *err);
// Remove every document ingested from the folder root; *n_removed may be NULL.
enum sd_status sd_library_remove_root(struct sd_library *lib, const char *root, size_t *n_removed, struct sd_err *err);

// OCR of scanned PDF pages for later sd_library_ingest calls (default: on, English): no_ocr 1 only flags
// them; lang: Tesseract languages ("eng+fra"), copied; NULL: eng. SD_ERR_NOMEM or SD_OK.
enum sd_status sd_library_set_ocr(struct sd_library *lib, int no_ocr, const char *lang, struct sd_err *err);

// Ingest paths into the library. count_tokens (may be NULL: tokens stay unknown until a model counts
// them) is called with tok_user; cancel (may be NULL) set non-zero stops after the current file.
// Same events as sd_ingest.
enum sd_status sd_library_ingest(struct sd_library *lib, char *const *paths, size_t n_paths, const char *password,
                                 sd_count_tokens_fn count_tokens, void *tok_user, sd_ingest_event_fn on_event,
                                 void *user, volatile int *cancel, struct sd_ingest_stats *stats, struct sd_err *err);

// Where text stands on a page read by OCR (scans have no text layer for the viewer to search): for each line
// of text, the longest run of the page's OCR words equal to consecutive words of the line (case and
// punctuation ignored; a run of one word only when the line has one). *rects: 4 doubles per word of the runs
// (x0, y0, x1, y1 in PDF points from the page's top left), malloc'd, caller frees; NULL and 0 when the page
// has no OCR words or nothing matches.
enum sd_status sd_library_ocr_boxes(struct sd_library *lib, int64_t doc_id, int page_no, const char *text,
                                    double **rects, size_t *n_rects, struct sd_err *err);
// The matching itself, on a words blob of sd_store_page_words_set's format. Returns the number of boxes
// (-1: out of memory).
long sd_library_match_words(const void *blob, size_t len, const char *text, double **rects);

// Text of the spans of doc on page_no (PDFs) or overlapping lines [line_start, line_end] (text/code),
// joined by newlines. *text is malloc'd (caller frees); "" when nothing matches.
enum sd_status sd_library_source_text(struct sd_library *lib, int64_t doc_id, int page_no, int line_start, int line_end,
                                      char **text, struct sd_err *err);

// KV prefix cache at dir (NULL: sd_kvcache_dir default): statistics (no GC pass) and clearing.
enum sd_status sd_library_cache_stats(const char *dir, uint64_t budget, struct sd_kvcache_stats *st, char **path,
                                      struct sd_err *err);
enum sd_status sd_library_cache_clear(const char *dir, int *n_removed, struct sd_err *err);

#endif
