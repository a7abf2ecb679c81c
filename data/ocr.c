// ocr.c: Tesseract OCR of page images (see ocr.h).
#include "ocr.h"

#include <stdlib.h>
#include <string.h>

#ifdef SD_HAVE_TESSERACT
#include <tesseract/capi.h>

// Tesseract's LSTM runs OpenMP loops with a fixed thread count (a num_threads clause); on a machine with
// few cores those threads spin against each other: one page took 10.6 s instead of 1.3 s on 2 vCPUs, and
// over 30 s (the page budget) while other OCR workers ran beside it. Pages are read in parallel by a pool
// of worker processes (one per core), so each worker's regions run on one thread: max-active-levels 0
// makes every parallel region inactive, whatever its num_threads clause asks. Weak: the symbol is there
// exactly when an OpenMP runtime (libgomp, loaded with libtesseract) is.
extern void omp_set_max_active_levels(int levels) __attribute__((weak));
#endif

struct sd_ocr {
#ifdef SD_HAVE_TESSERACT
    TessBaseAPI *api;
#else
    int unused;
#endif
};

int sd_ocr_built(void)
{
#ifdef SD_HAVE_TESSERACT
    return 1;
#else
    return 0;
#endif
}

// Tesseract language codes: letters, digits and '_', joined by '+'.
int sd_ocr_lang_ok(const char *lang)
{
    size_t n = strlen(lang);
    if (!n || n > 64 || lang[0] == '+' || lang[n - 1] == '+')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = lang[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                 (c == '+' && lang[i + 1] != '+');
        if (!ok)
            return 0;
    }
    return 1;
}

#ifdef SD_HAVE_TESSERACT
struct buf {
    char *p;
    size_t n, cap;
    int oom;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
#endif

enum sd_status sd_ocr_new(const char *lang, struct sd_ocr **out, struct sd_err *err)
{
    *out = NULL;
    if (!lang || !*lang)
        lang = SD_OCR_DEFAULT_LANG;
    if (!sd_ocr_lang_ok(lang))
        return sd_err_set(err, SD_ERR_ARG,
                          "OCR language '%s' is not a Tesseract language list (for example eng or eng+fra)", lang);
#ifndef SD_HAVE_TESSERACT
    return sd_err_set(err, SD_ERR_UNSUPPORTED,
                      "this sparsedoc was built without Tesseract, so pages without a text layer cannot be read by "
                      "OCR (install libtesseract-dev and tesseract-ocr-%s, then rebuild)",
                      lang);
#else
    if (omp_set_max_active_levels) // for the calling process: a PDF worker, which only runs OCR
        omp_set_max_active_levels(0);
    struct sd_ocr *o = calloc(1, sizeof *o);
    if (!o || !(o->api = TessBaseAPICreate())) {
        free(o);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory starting Tesseract");
    }
    if (TessBaseAPIInit3(o->api, NULL, lang) != 0) {
        TessBaseAPIDelete(o->api);
        free(o);
        char pkgs[400] = "";
        size_t m = 0;
        for (const char *p = lang; *p && m < sizeof pkgs - 80;) {
            size_t k = strcspn(p, "+");
            m += (size_t)snprintf(pkgs + m, sizeof pkgs - m, "%stesseract-ocr-%.*s", m ? ", " : "", (int)k, p);
            p += k + (p[k] == '+');
        }
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "Tesseract has no language data for '%s' (install %s, or set TESSDATA_PREFIX to the "
                          "folder holding the .traineddata files)",
                          lang, pkgs);
    }
    TessBaseAPISetVariable(o->api, "debug_file", "/dev/null"); // warnings ("Estimating resolution ...")
    *out = o;
    return SD_OK;
#endif
}

void sd_ocr_free(struct sd_ocr *o)
{
    if (!o)
        return;
#ifdef SD_HAVE_TESSERACT
    TessBaseAPIEnd(o->api);
    TessBaseAPIDelete(o->api);
#endif
    free(o);
}

enum sd_status sd_ocr_gray(struct sd_ocr *o, const unsigned char *gray, int w, int h, int stride, int dpi, char **text,
                           size_t *len, int *mean_conf, struct sd_ocr_word **words, size_t *n_words, struct sd_err *err)
{
    *text = NULL;
    *len = 0;
    if (words) {
        *words = NULL;
        *n_words = 0;
    }
    if (mean_conf)
        *mean_conf = 0;
    if (!o || !gray || w <= 0 || h <= 0 || stride < w)
        return sd_err_set(err, SD_ERR_ARG, "OCR: bad image (%d x %d, stride %d)", w, h, stride);
#ifndef SD_HAVE_TESSERACT
    (void)dpi;
    return sd_err_set(err, SD_ERR_UNSUPPORTED, "this sparsedoc was built without Tesseract");
#else
    TessBaseAPISetImage(o->api, gray, w, h, 1, stride);
    TessBaseAPISetSourceResolution(o->api, dpi > 0 ? dpi : SD_OCR_DPI);
    if (TessBaseAPIRecognize(o->api, NULL) != 0) {
        TessBaseAPIClear(o->api);
        return sd_err_set(err, SD_ERR_FORMAT, "OCR: Tesseract could not recognize the page image");
    }
    if (mean_conf)
        *mean_conf = TessBaseAPIMeanTextConf(o->api);
    struct buf b = {0};
    put(&b, "", 0);
    struct sd_ocr_word *wv = NULL;
    size_t nw = 0, wcap = 0;
    int woom = 0;
    TessResultIterator *it = TessBaseAPIGetIterator(o->api);
    if (it) {
        const TessPageIterator *pit = TessResultIteratorGetPageIterator(it);
        int line_has_words = 0, started = 0;
        do {
            if (TessPageIteratorIsAtBeginningOf(pit, RIL_TEXTLINE) && line_has_words) {
                int para = TessPageIteratorIsAtBeginningOf(pit, RIL_PARA);
                put(&b, para ? "\n\n" : "\n", para ? 2 : 1);
                line_has_words = 0;
            }
            char *word = TessResultIteratorGetUTF8Text(it, RIL_WORD);
            float conf = TessResultIteratorConfidence(it, RIL_WORD);
            if (word && *word && conf >= SD_OCR_MIN_WORD_CONF) {
                if (line_has_words)
                    put(&b, " ", 1);
                size_t off = b.n;
                put(&b, word, strlen(word));
                line_has_words = started = 1;
                int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
                if (words && !woom && TessPageIteratorBoundingBox(pit, RIL_WORD, &x0, &y0, &x1, &y1)) {
                    if (nw == wcap) {
                        wcap = wcap ? 2 * wcap : 256;
                        struct sd_ocr_word *q = realloc(wv, wcap * sizeof *wv);
                        if (!q)
                            woom = 1;
                        else
                            wv = q;
                    }
                    if (!woom)
                        wv[nw++] = (struct sd_ocr_word){off, strlen(word), x0, y0, x1, y1};
                }
            }
            TessDeleteText(word);
        } while (TessResultIteratorNext(it, RIL_WORD));
        if (started)
            put(&b, "\n", 1);
        TessResultIteratorDelete(it);
    }
    TessBaseAPIClear(o->api);
    if (b.oom || woom) {
        free(b.p);
        free(wv);
        return sd_err_set(err, SD_ERR_NOMEM, "OCR: out of memory");
    }
    *text = b.p;
    *len = b.n;
    if (words) {
        *words = wv;
        *n_words = nw;
    } else
        free(wv);
    return SD_OK;
#endif
}
