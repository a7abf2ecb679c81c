// test_data_ocr.c: OCR of PDF pages without a text layer (data/ocr.c through data/pdf_extract.c and
// data/ingest.c), on images and PDFs this test draws with cairo, so the expected text is known:
//   - sd_ocr_gray reads a rendered paragraph (the words, a code, a number) and nothing from a blank image;
//   - an image-only page is read by OCR, a blank page says so (no-text), a page with a text layer is
//     left alone; OCR off leaves both flagged as needing OCR; an OCR that hangs (fault injection) times the
//     page out and the rest still comes; a language without data says which Debian package to install
//     and nothing is lost;
//   - ingest: a document stored without OCR is extracted again once OCR can run (and its text is then
//     searchable), an unchanged document is not read twice, and a run where OCR cannot run keeps the rows.
// The OCR pool: one worker and several give every page the same state and text (the drawn PDF; with the
// corpus also a 6-page scan). With the shared corpus: two real scans with a known text (Huckleberry Finn
// ch. 2; a French pangram).
// Skips (77) when this build or machine has no Tesseract or no English language data.
#include <ctype.h>
#include <math.h>

#include "ocr.h"
#include "pdf_extract.h"
#include "sd_clock.h"
#include "test_data_common.h"
#include "test_scan.h"

static unsigned char *to_gray(cairo_surface_t *s)
{
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    int stride = cairo_image_surface_get_stride(s);
    const unsigned char *d = cairo_image_surface_get_data(s);
    unsigned char *g = malloc((size_t)w * (size_t)h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint32_t v;
            memcpy(&v, d + (size_t)y * (size_t)stride + 4 * (size_t)x, 4);
            g[(size_t)y * (size_t)w + x] = (unsigned char)((((v >> 16) & 255) + ((v >> 8) & 255) + (v & 255)) / 3);
        }
    return g;
}

// Lower-case words of letters/digits (ASCII; accents folded for the French test), at least 3 long.
static int words(const char *s, char out[][32], int max)
{
    int n = 0;
    char cur[32];
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)s;; p++) {
        int c = *p;
        if (c >= 0x80) { // UTF-8 letter: fold the common Latin-1 accents (C3 xx) to their base letter
            static const char *fold = "aaaaaaaceeeeiiiidnooooo/ouuuuyty";
            if (c == 0xC3 && p[1] >= 0xA0 && p[1] <= 0xBF) {
                c = fold[p[1] - 0xA0];
                p++;
            } else {
                while ((p[1] & 0xC0) == 0x80)
                    p++;
                c = '?';
            }
        }
        if (c && (isalnum(c) || c == '-' || c == '?')) {
            if (k < sizeof cur - 1)
                cur[k++] = (char)tolower(c);
        } else {
            if (k >= 3 && n < max) {
                cur[k] = 0;
                snprintf(out[n++], 32, "%s", cur);
            }
            k = 0;
        }
        if (!c)
            break;
    }
    return n;
}

// Share of the words of want found in got.
static double word_recall(const char *want, const char *got)
{
    static char w[512][32], g[4096][32];
    int nw = words(want, w, 512), ng = words(got, g, 4096), hit = 0;
    for (int i = 0; i < nw; i++)
        for (int j = 0; j < ng; j++)
            if (!strcmp(w[i], g[j])) {
                hit++;
                break;
            }
    return nw ? (double)hit / nw : 0;
}

struct pages_seen {
    int started[8], ocr[8];
};
static void on_page(void *user, int page, int n_pages, int ocr)
{
    struct pages_seen *ps = user;
    if (page >= 0 && page < 8 && n_pages == 3) {
        ps->started[page] += !ocr;
        ps->ocr[page] += ocr;
    }
}

static void test_image(struct sd_ocr *eng)
{
    const double dpi = 300;
    cairo_surface_t *s = text_image(2550, 1000, dpi, 0);
    unsigned char *g = to_gray(s);
    char *text = NULL;
    size_t len = 0;
    int conf = 0;
    struct sd_err err = {0};
    struct sd_ocr_word *wv = NULL;
    size_t nw = 0;
    CHECK(sd_ocr_gray(eng, g, 2550, 1000, 2550, (int)dpi, &text, &len, &conf, &wv, &nw, &err) == SD_OK);
    char want[512] = "";
    for (int i = 0; i < N_LINES; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s\n", LINES[i]);
    double rec = text ? word_recall(want, text) : 0;
    printf("image: confidence %d, word recall %.2f, text: %s", conf, rec, text ? text : "(none)\n");
    CHECK_MSG(text && strstr(text, "Brenlow") && strstr(text, "KX-4821") && strstr(text, "1998"),
              "OCR text lacks Brenlow / KX-4821 / 1998: %s", text ? text : "(none)");
    CHECK_MSG(rec >= 0.9 && conf >= 80, "word recall %.2f, confidence %d", rec, conf);
    CHECK_MSG(text && len == strlen(text) && text[len - 1] == '\n' && strchr(text, '\n') < text + len - 1,
              "OCR text is not one line per text line");
    // Word boxes: "Brenlow" where cairo drew its ink (its extents after "The ", on the first baseline).
    cairo_t *cr = cairo_create(s);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 14 * dpi / 72);
    cairo_text_extents_t pre, word;
    cairo_text_extents(cr, "The ", &pre);
    cairo_text_extents(cr, "Brenlow", &word);
    cairo_destroy(cr);
    double ex0 = 72 * dpi / 72 + pre.x_advance + word.x_bearing, ey0 = 100 * dpi / 72 + word.y_bearing;
    double ex1 = ex0 + word.width, ey1 = ey0 + word.height;
    int found = 0;
    for (size_t i = 0; text && i < nw; i++)
        if (wv[i].off + wv[i].len <= len && wv[i].len == 7 && !memcmp(text + wv[i].off, "Brenlow", 7)) {
            found = 1;
            printf("box of Brenlow: %d,%d-%d,%d px; drawn %.0f,%.0f-%.0f,%.0f\n", wv[i].x0, wv[i].y0, wv[i].x1,
                   wv[i].y1, ex0, ey0, ex1, ey1);
            CHECK_MSG(fabs(wv[i].x0 - ex0) <= 5 && fabs(wv[i].y0 - ey0) <= 5 && fabs(wv[i].x1 - ex1) <= 5 &&
                          fabs(wv[i].y1 - ey1) <= 5,
                      "the box of Brenlow is off");
        }
    CHECK_MSG(found && nw >= 15, "%zu word boxes, Brenlow %s", nw, found ? "found" : "missing");
    free(wv);
    free(text);
    cairo_surface_destroy(s);
    // A blank image: no words, no error.
    memset(g, 255, 2550 * 1000);
    CHECK(sd_ocr_gray(eng, g, 2550, 1000, 2550, (int)dpi, &text, &len, NULL, NULL, NULL, &err) == SD_OK && text &&
          len == 0);
    free(text);
    CHECK(sd_ocr_gray(eng, g, 0, 1000, 2550, (int)dpi, &text, &len, NULL, NULL, NULL, &err) == SD_ERR_ARG && !text);
    free(g);
}

// The pool deals pages round-robin: 1 worker and w workers must give every page the same state and text.
static void compare_pools(const char *pdf, int w)
{
    struct sd_pdf_doc *a = NULL, *b = NULL;
    struct sd_err err = {0};
    struct sd_pdf_opts o1 = {.ocr = 1, .ocr_workers = 1}, ow = {.ocr = 1, .ocr_workers = w};
    double t0 = sd_now_s();
    CHECK(sd_pdf_extract(pdf, &o1, &a, &err) == SD_OK);
    double t1 = sd_now_s();
    CHECK(sd_pdf_extract(pdf, &ow, &b, &err) == SD_OK);
    double t2 = sd_now_s();
    if (!a || !b) {
        sd_pdf_doc_free(a);
        sd_pdf_doc_free(b);
        return;
    }
    int same = a->n_pages == b->n_pages, n_ocr = 0;
    for (int i = 0; same && i < a->n_pages; i++) {
        char *ta = NULL, *tb = NULL;
        size_t na = 0, nb = 0;
        same = a->pages[i].state == b->pages[i].state && sd_pdf_page_text(a, i, &ta, &na, &err) == SD_OK &&
               sd_pdf_page_text(b, i, &tb, &nb, &err) == SD_OK && na == nb && !memcmp(ta, tb, na);
        n_ocr += a->pages[i].state == SD_PDF_PAGE_OCR;
        free(ta);
        free(tb);
    }
    printf("%s: %d pages, %d read by OCR; 1 worker %.2f s, %d workers %.2f s\n", pdf, a->n_pages, n_ocr, t1 - t0, w,
           t2 - t1);
    CHECK_MSG(same && n_ocr >= 1, "%s: 1 and %d OCR workers disagree", pdf, w);
    sd_pdf_doc_free(a);
    sd_pdf_doc_free(b);
}

static void test_extract(const char *pdf)
{
    struct sd_err err = {0};
    struct sd_pdf_doc *d = NULL;
    struct pages_seen ps = {0};
    struct sd_pdf_opts o = {.ocr = 1, .on_page = on_page, .page_user = &ps};
    CHECK_MSG(sd_pdf_extract(pdf, &o, &d, &err) == SD_OK, "extract: %s", err.msg);
    if (d) {
        CHECK_MSG(d->n_pages == 3 && d->pages[0].state == SD_PDF_PAGE_OCR && d->pages[1].state == SD_PDF_PAGE_NO_TEXT &&
                      d->pages[2].state == SD_PDF_PAGE_OK && !d->ocr_error,
                  "OCR on: states %s %s %s (%s)", sd_pdf_page_state_str(d->pages[0].state),
                  sd_pdf_page_state_str(d->pages[1].state), sd_pdf_page_state_str(d->pages[2].state),
                  d->ocr_error ? d->ocr_error : "");
        char *t = NULL;
        size_t n = 0;
        CHECK(sd_pdf_page_text(d, 0, &t, &n, &err) == SD_OK);
        CHECK_MSG(t && strstr(t, "Brenlow") && strstr(t, "KX-4821"), "page 1 by OCR: %s", t ? t : "");
        free(t);
        CHECK_MSG(ps.started[0] == 1 && ps.started[1] == 1 && ps.started[2] == 1 && ps.ocr[0] == 1 && ps.ocr[1] == 1 &&
                      ps.ocr[2] == 0,
                  "progress: started %d %d %d, OCR %d %d %d", ps.started[0], ps.started[1], ps.started[2], ps.ocr[0],
                  ps.ocr[1], ps.ocr[2]);
        sd_pdf_doc_free(d);
    }
    o = (struct sd_pdf_opts){.ocr = 0};
    CHECK(sd_pdf_extract(pdf, &o, &d, &err) == SD_OK);
    if (d) {
        CHECK_MSG(d->pages[0].state == SD_PDF_PAGE_EMPTY && d->pages[1].state == SD_PDF_PAGE_EMPTY &&
                      d->pages[2].state == SD_PDF_PAGE_OK && !d->ocr_error,
                  "OCR off: states %s %s", sd_pdf_page_state_str(d->pages[0].state),
                  sd_pdf_page_state_str(d->pages[1].state));
        sd_pdf_doc_free(d);
    }
    // OCR runs under the page budget: a page whose OCR never ends (fault injection) times out, its worker
    // is killed, and the other pages are still read: by the pool's other worker, or (one worker) by a new one.
    setenv("SD_PDF_TEST_HANG_OCR", "1", 1);
    for (int workers = 0; workers <= 1; workers++) {
        o = (struct sd_pdf_opts){.ocr = 1, .page_timeout_s = 3, .ocr_workers = workers};
        CHECK(sd_pdf_extract(pdf, &o, &d, &err) == SD_OK);
        if (d) {
            CHECK_MSG(d->pages[0].state == SD_PDF_PAGE_TIMEOUT && d->pages[1].state == SD_PDF_PAGE_NO_TEXT &&
                          d->pages[2].state == SD_PDF_PAGE_OK && (workers != 1 || d->n_restarts == 1),
                      "hung OCR, %d worker(s): states %s %s %s, %d restarts", workers,
                      sd_pdf_page_state_str(d->pages[0].state), sd_pdf_page_state_str(d->pages[1].state),
                      sd_pdf_page_state_str(d->pages[2].state), d->n_restarts);
            sd_pdf_doc_free(d);
        }
    }
    unsetenv("SD_PDF_TEST_HANG_OCR");
    o = (struct sd_pdf_opts){.ocr = 1, .ocr_lang = "zzz"};
    CHECK(sd_pdf_extract(pdf, &o, &d, &err) == SD_OK);
    if (d) {
        printf("missing language: %s\n", d->ocr_error ? d->ocr_error : "(no message)");
        CHECK_MSG(d->pages[0].state == SD_PDF_PAGE_EMPTY && d->pages[2].state == SD_PDF_PAGE_OK && d->ocr_error &&
                      strstr(d->ocr_error, "tesseract-ocr-zzz"),
                  "missing language data: %s", d->ocr_error ? d->ocr_error : "(no message)");
        sd_pdf_doc_free(d);
    }
}

static void test_ingest(const char *pdf)
{
    struct sd_store *s = open_db("ocr.db");
    struct sd_ingest_stats st;
    struct sd_ingest_opts off = {.no_ocr = 1}, on = {0}, zzz = {.ocr_lang = "zzz"};
    CHECK(ingest1(s, pdf, &off, &st) == SD_OK);
    CHECK_MSG(st.added == 1 && st.ocr_pages == 2 && st.ocr_read_pages == 0, "OCR off: added %zu, need OCR %lld",
              st.added, (long long)st.ocr_pages);
    CHECK(query_int(s, "SELECT count(*) FROM spans_fts WHERE spans_fts MATCH 'Brenlow'") == 0);
    // No token counter given: the document's token count is unknown (-1), not 0.
    CHECK(query_int(s, "SELECT n_tokens FROM documents") == -1);
    // OCR cannot run (no data for the language): the unchanged document is kept as it is.
    CHECK(ingest1(s, pdf, &zzz, &st) == SD_OK);
    CHECK_MSG(st.unchanged == 1 && st.updated == 0 && st.warnings == 0, "OCR impossible: unchanged %zu updated %zu",
              st.unchanged, st.updated);
    CHECK(query_int(s, "SELECT count(*) FROM pages WHERE state = 'empty'") == 2);
    // OCR can run now: the unchanged document is read again, page 1 becomes searchable.
    CHECK(ingest1(s, pdf, &on, &st) == SD_OK);
    CHECK_MSG(st.updated == 1 && st.ocr_read_pages == 1 && st.no_text_pages == 1 && st.ocr_pages == 0,
              "OCR on: updated %zu, read %lld, no text %lld, need %lld", st.updated, (long long)st.ocr_read_pages,
              (long long)st.no_text_pages, (long long)st.ocr_pages);
    CHECK(query_int(s, "SELECT count(*) FROM spans s JOIN spans_fts f ON f.rowid = s.id "
                       "WHERE spans_fts MATCH 'Brenlow' AND s.page_no = 1") == 1);
    CHECK(query_int(s, "SELECT count(*) FROM pages WHERE state = 'ocr' AND page_no = 1") == 1);
    // The OCR'd page's word boxes are stored: "Brenlow" about where it was drawn (in points: x 72 + "The ",
    // baseline 100, 14 pt).
    void *blob = NULL;
    size_t blen = 0;
    struct sd_err err = {0};
    int64_t doc_id = query_int(s, "SELECT id FROM documents");
    CHECK(sd_store_page_words_get(s, doc_id, 1, &blob, &blen, &err) == SD_OK && blob && blen > 100);
    int seen = 0;
    for (size_t at = 0; blob && at + 18 <= blen;) {
        float box[4];
        uint16_t wl;
        memcpy(box, (char *)blob + at, 16);
        memcpy(&wl, (char *)blob + at + 16, 2);
        if (at + 18 + wl > blen)
            break;
        if (wl == 7 && !memcmp((char *)blob + at + 18, "Brenlow", 7)) {
            seen = 1;
            printf("stored box of Brenlow: %.1f,%.1f-%.1f,%.1f pt\n", box[0], box[1], box[2], box[3]);
            CHECK(box[0] > 90 && box[0] < 120 && box[1] > 85 && box[1] < 92 && box[2] > box[0] + 40 && box[3] > 99 &&
                  box[3] < 102);
        }
        at += 18 + wl;
    }
    CHECK_MSG(seen, "no stored box for Brenlow (%zu bytes)", blen);
    free(blob);
    CHECK(sd_store_page_words_get(s, doc_id, 3, &blob, &blen, &err) == SD_OK && !blob && blen == 0);
    CHECK(query_int(s, "SELECT count(*) FROM pages WHERE state = 'no-text' AND page_no = 2") == 1);
    CHECK(query_int(s, "SELECT count(*) FROM documents WHERE ocr_pages IS NULL") == 1);
    // Nothing needs OCR any more: the next run does not read the file again.
    CHECK(ingest1(s, pdf, &on, &st) == SD_OK);
    CHECK_MSG(st.unchanged == 1 && st.updated == 0 && st.ocr_read_pages == 0, "third run: unchanged %zu updated %zu",
              st.unchanged, st.updated);
    sd_store_close(s);
}

// Real scans from the corpus, each against a text known independently of any OCR.
static void test_corpus(const char *corpus)
{
    static const struct {
        const char *file, *want;
        double min_recall;
    } scans[] = {
        // Mark Twain, Adventures of Huckleberry Finn, chapter 2 (public domain): words of the page's text.
        {"ocrmypdf-c02-22.pdf",
         "We went tip-toeing along a path amongst the trees back towards the end of the widow's garden, stooping "
         "down so as the branches wouldn't scrape our heads. When we was passing by the kitchen I fell over a root "
         "and made a noise. We scrouched down and laid still. Miss Watson's big nigger, named Jim, was setting in the "
         "kitchen door; we could see him pretty clear, because there was a light behind him.",
         0.85},
        // The classic French pangram; read with English data only, so the accented words may be lost.
        {"ocrmypdf-francais.pdf",
         "Portez ce vieux whisky au juge blond qui fume sur son île intérieure, à côté de l'alcôve ovoïde, où les "
         "bûches se consument dans l'âtre, ce qui lui permet de penser à la cænogénèse de l'être dont il est question "
         "dans la cause ambiguë entendue à Moÿ, dans un capharnaüm qui, pense-t-il, diminue çà et là la qualité de "
         "son œuvre.",
         0.6},
    };
    for (size_t i = 0; i < sizeof scans / sizeof scans[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/pdf/scanned/%s", corpus, scans[i].file);
        struct sd_pdf_opts o = {.ocr = 1};
        struct sd_pdf_doc *d = NULL;
        struct sd_err err = {0};
        if (sd_pdf_extract(path, &o, &d, &err) != SD_OK) {
            CHECK_MSG(0, "%s: %s", path, err.msg);
            continue;
        }
        char *t = NULL;
        size_t n = 0;
        CHECK(sd_pdf_page_text(d, 0, &t, &n, &err) == SD_OK);
        double rec = t ? word_recall(scans[i].want, t) : 0;
        printf("%s: page 1 %s, %zu bytes, word recall %.2f\n", scans[i].file, sd_pdf_page_state_str(d->pages[0].state),
               n, rec);
        CHECK_MSG(d->pages[0].state == SD_PDF_PAGE_OCR && rec >= scans[i].min_recall,
                  "%s: state %s, word recall %.2f < %.2f", scans[i].file, sd_pdf_page_state_str(d->pages[0].state), rec,
                  scans[i].min_recall);
        free(t);
        sd_pdf_doc_free(d);
    }
}

static void skip(const char *why)
{
    printf("SKIP: OCR cannot run here: %s\n", why);
    exit(77);
}

int main(void)
{
    struct sd_ocr *eng = NULL;
    struct sd_err err = {0};
    if (!sd_ocr_built())
        skip("this build has no Tesseract (libtesseract-dev was not found at configure time)");
    if (sd_ocr_new(NULL, &eng, &err) != SD_OK)
        skip(err.msg);
    // Malformed language lists are refused before Tesseract sees them.
    struct sd_ocr *bad = NULL;
    CHECK(sd_ocr_new("eng;rm", &bad, &err) == SD_ERR_ARG && !bad && !sd_ocr_lang_ok("eng++fra") &&
          sd_ocr_lang_ok("eng+fra") && !sd_ocr_lang_ok("../x"));
    test_image(eng);
    sd_ocr_free(eng);
    char pdf[700];
    snprintf(pdf, sizeof pdf, "%s/scan.pdf", tmp_dir());
    CHECK_MSG(make_pdf(pdf) == 0, "cairo could not write %s", pdf);
    test_extract(pdf);
    compare_pools(pdf, 2);
    test_ingest(pdf);
    const char *corpus = sd_test_corpus();
    if (corpus) {
        test_corpus(corpus);
        char multi[1024];
        snprintf(multi, sizeof multi, "%s/pdf/scanned/ocrmypdf-multipage.pdf", corpus);
        compare_pools(multi, 3);
    } else
        printf("skip: real scans (shared corpus not found)\n");
    tmp_cleanup();
    return sd_test_finish("data_ocr");
}
