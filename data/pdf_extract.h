// pdf_extract.h: PDF text extraction through poppler-glib in a worker process. The worker (forked per
// file) sends metadata, the outline and each page's text over a pipe; the parent enforces a time budget
// per page and per file and kills the worker when one runs out. A page that crashes or hangs poppler is
// marked failed and a new worker resumes at the next page, so one bad page never drops the rest.
// Page text is normalized (text_clean.h) and spooled to an unnamed temporary file, so memory stays
// bounded for documents of thousands of pages. With opts.ocr, the pages without a usable text layer are
// then rendered (SD_OCR_DPI) and read by Tesseract (ocr.h) in a pool of such workers (one per core), each
// page under the same page budget.
#ifndef SD_DATA_PDF_EXTRACT_H
#define SD_DATA_PDF_EXTRACT_H

#include <stddef.h>
#include <stdio.h>

#include "sd_status.h"

struct sd_pdf_opts {
    const char *password;   // user or owner password (UTF-8); NULL for none
    double page_timeout_s;  // per page; <= 0: 30 s
    double file_timeout_s;  // whole file; <= 0: 600 s
    size_t mem_limit_mb;    // worker address-space limit; 0: 4096 MiB (not applied under ASan)
    size_t max_page_bytes;  // text kept per page; 0: 4 MiB
    int ocr;                // 1: pages without a usable text layer are read by OCR (when Tesseract can run)
    const char *ocr_lang;   // Tesseract languages ("eng+fra"); NULL: SD_OCR_DEFAULT_LANG
    int ocr_workers;        // OCR processes at once; 0: one per CPU core, at most 8
    // Optional progress: a page (0-based) of n_pages started; ocr = 1 when its OCR starts. Called in the
    // calling thread.
    void (*on_page)(void *user, int page, int n_pages, int ocr);
    void *page_user;
};

enum sd_pdf_page_state {
    SD_PDF_PAGE_OK = 0,
    SD_PDF_PAGE_EMPTY,   // no text layer (scanned image): needs OCR
    SD_PDF_PAGE_GARBLED, // text layer is glyph soup: needs OCR
    SD_PDF_PAGE_FAILED,  // poppler crashed or failed on this page
    SD_PDF_PAGE_TIMEOUT, // the page ran past its time budget
    SD_PDF_PAGE_OCR,     // no usable text layer; its text was read by OCR
    SD_PDF_PAGE_NO_TEXT, // no usable text layer, and OCR found no usable text either (blank page, picture)
};
const char *sd_pdf_page_state_str(enum sd_pdf_page_state s);

struct sd_pdf_page {
    char *label; // page label from the PDF (e.g. "xii"), NULL if none
    enum sd_pdf_page_state state;
    long off;    // spool offset of the normalized text
    size_t len;  // its length in bytes
    unsigned char *words; // SD_PDF_PAGE_OCR: its words with boxes (format: sd_store_page_words_set), else NULL
    size_t words_len;
};

struct sd_pdf_outline {
    int level;   // 0 = top level
    int page_no; // 1-based; 0 when the destination is unknown
    char *title;
};

struct sd_pdf_doc {
    char *title, *author; // NULL if absent
    int n_pages;
    struct sd_pdf_page *pages; // n_pages entries
    struct sd_pdf_outline *outline;
    size_t n_outline;
    size_t n_header_lines; // distinct running header/footer lines removed
    int n_restarts;        // workers restarted after a bad page
    char *ocr_error;       // why OCR could not run (not built, no language data); NULL if it ran or was off
    FILE *spool;
    struct sd_hf *hf;
};

// Extract path. On success *out is a new document (free with sd_pdf_doc_free); pages that failed are
// marked, not fatal. Errors: SD_ERR_IO (cannot read), SD_ERR_FORMAT (not a PDF, damaged), SD_ERR_UNSUPPORTED
// (encrypted without/with wrong password), SD_ERR_RANGE (file time budget exceeded). err says what to do.
enum sd_status sd_pdf_extract(const char *path, const struct sd_pdf_opts *opts, struct sd_pdf_doc **out,
                              struct sd_err *err);

// Cleaned text of page i (0-based): normalized, running headers/footers removed. *text is malloc'd,
// NUL-terminated (caller frees).
enum sd_status sd_pdf_page_text(const struct sd_pdf_doc *d, int i, char **text, size_t *len, struct sd_err *err);

void sd_pdf_doc_free(struct sd_pdf_doc *d);

#endif
