// text_clean.h: text clean-up for extracted pages and text files: UTF-8 repair, NFKC (utf8proc),
// whitespace and control characters, hyphenated words rejoined across line ends, running
// headers/footers found across a document's pages and dropped, and a page quality verdict
// (empty / garbled glyph soup) that marks pages as needing OCR.
#ifndef SD_DATA_TEXT_CLEAN_H
#define SD_DATA_TEXT_CLEAN_H

#include <stddef.h>

// Copy of s[0..n) with invalid UTF-8 replaced by U+FFFD and NUL bytes dropped. malloc'd, NUL-terminated;
// NULL only when out of memory.
char *sd_text_valid_utf8(const char *s, size_t n, size_t *out_len);

// Normalize one page of extracted text: valid UTF-8, NFKC (ligatures, full-width forms), soft hyphens
// dropped, odd spaces and tabs to ' ', control characters dropped, runs of spaces collapsed, line ends
// trimmed, more than one blank line collapsed, hyphenated line-end words rejoined. CJK is kept as is.
// malloc'd, NUL-terminated; NULL only when out of memory.
char *sd_text_normalize_page(const char *s, size_t n, size_t *out_len);

// Rejoin words hyphenated across a line end ("exam-\nple" -> "example"), in place. Returns the new length.
size_t sd_text_dehyphenate(char *s, size_t n);

enum sd_page_quality {
    SD_PAGE_OK = 0,
    SD_PAGE_EMPTY,   // no or almost no text: likely an image-only (scanned) page
    SD_PAGE_GARBLED, // mostly replacement/private-use glyphs or letter soup: fonts without a Unicode map
};
enum sd_page_quality sd_text_page_quality(const char *s, size_t n);
const char *sd_page_quality_str(enum sd_page_quality q);

// Running header/footer detection over a whole document, with bounded memory (a few short lines per page).
struct sd_hf; // opaque
struct sd_hf *sd_hf_new(void);
void sd_hf_free(struct sd_hf *hf);
// Feed each normalized page once, in any order.
void sd_hf_add_page(struct sd_hf *hf, const char *text, size_t n);
// Decide which lines repeat on most pages. Call once after the last sd_hf_add_page().
void sd_hf_finish(struct sd_hf *hf);
// Number of distinct header/footer lines found.
size_t sd_hf_count(const struct sd_hf *hf);
// Drop header/footer lines at the top and bottom of one page, in place. Returns the new length.
size_t sd_hf_strip(const struct sd_hf *hf, char *text, size_t n);

#endif
