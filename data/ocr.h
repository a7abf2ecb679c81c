// ocr.h: optical character recognition of rendered page images through Tesseract's C API (libtesseract),
// for PDF pages without a usable text layer (pdf_extract.c runs it in its worker process). Built when
// libtesseract is found at configure time (SD_HAVE_TESSERACT); without it sd_ocr_new reports
// SD_ERR_UNSUPPORTED and says how to get it. Language data (tesseract-ocr-eng, -fra, ...) is found where
// Tesseract looks for it ($TESSDATA_PREFIX, else its built-in path).
#ifndef SD_DATA_OCR_H
#define SD_DATA_OCR_H

#include <stddef.h>

#include "sd_status.h"

#define SD_OCR_DEFAULT_LANG "eng"
#define SD_OCR_DPI 300             // render resolution of a page
#define SD_OCR_MAX_PIXELS 40000000 // larger pages are rendered at a lower resolution (bounded memory)
#define SD_OCR_MIN_WORD_CONF 50    // words Tesseract is less sure of (0-100) are dropped: picture noise

struct sd_ocr; // one Tesseract engine; not thread-safe

// A word kept by sd_ocr_gray: its bytes text[off, off + len) of the returned text, and its box in image
// pixels (origin top left, x right, y down).
struct sd_ocr_word {
    size_t off, len;
    int x0, y0, x1, y1;
};

// 1 when this build has Tesseract.
int sd_ocr_built(void);
// 1 when lang is a well-formed Tesseract language list: codes of letters, digits and '_' joined by '+'.
int sd_ocr_lang_ok(const char *lang);

// Start an engine for lang ("eng", "eng+fra": Tesseract's language codes; NULL: SD_OCR_DEFAULT_LANG).
// Errors: SD_ERR_UNSUPPORTED (built without Tesseract, or the language data is not installed: the message
// names the Debian package), SD_ERR_ARG (a malformed language string), SD_ERR_NOMEM.
enum sd_status sd_ocr_new(const char *lang, struct sd_ocr **out, struct sd_err *err);
void sd_ocr_free(struct sd_ocr *o);

// Recognize an 8-bit grayscale image (w x h, rows stride bytes apart, dpi its resolution). *text: the
// words kept (confidence >= SD_OCR_MIN_WORD_CONF), a line per text line and a blank line between
// paragraphs, malloc'd and NUL-terminated (caller frees); *mean_conf: Tesseract's mean word confidence
// (0-100), may be NULL; *words (may be NULL: not wanted): each kept word with its box, malloc'd array of
// *n_words (caller frees).
enum sd_status sd_ocr_gray(struct sd_ocr *o, const unsigned char *gray, int w, int h, int stride, int dpi, char **text,
                           size_t *len, int *mean_conf, struct sd_ocr_word **words, size_t *n_words,
                           struct sd_err *err);

#endif
