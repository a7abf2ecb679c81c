// pdf_extract.c: PDF extraction in a forked poppler worker with per-page and per-file time budgets
// (see pdf_extract.h). Wire format on the pipe: 1 type byte, a uint32 payload length, the payload.
//   'M' int32 n_pages, title NUL, author NUL      'O' int32 level, int32 page, title
//   'B' int32 page (started)                      'T' int32 page, label NUL, text
//   'E' int32 kind, message                       'D' done
//   'P' int32 page (OCR started)                  'R' int32 page, label NUL, text read by OCR
//   'W' message: OCR cannot run (sent once by a worker)
//   'F' int32 page: poppler could not load the page (a damaged page tree): it is marked failed
//   'X' int32 page, word boxes (sd_store_page_words_set's format): sent before that page's 'R'
// Test hooks (fault injection, honoured only by the worker): SD_PDF_TEST_CRASH_PAGE=N and
// SD_PDF_TEST_HANG_PAGE=N make page N (1-based) crash or hang; SD_PDF_TEST_HANG_OCR=N hangs in its OCR.
#include "pdf_extract.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <poll.h>
#include <poppler.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocr.h"
#include "sd_clock.h"
#include "text_clean.h"

#if defined(__SANITIZE_ADDRESS__)
#define SD_ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SD_ASAN_BUILD 1
#endif
#endif
#ifndef SD_ASAN_BUILD
#define SD_ASAN_BUILD 0
#endif

#define MAX_PAGES 1000000
#define MAX_OUTLINE 20000
#define MAX_OUTLINE_DEPTH 32
#define MAX_TITLE 1024
#define MAX_RESTARTS 32
#define SD_PDF_MAX_OCR_WORKERS 8

enum { ERR_KIND_ENCRYPTED = 1, ERR_KIND_DAMAGED = 2, ERR_KIND_OTHER = 3 };

const char *sd_pdf_page_state_str(enum sd_pdf_page_state s)
{
    switch (s) {
    case SD_PDF_PAGE_OK: return "ok";
    case SD_PDF_PAGE_EMPTY: return "empty";
    case SD_PDF_PAGE_GARBLED: return "garbled";
    case SD_PDF_PAGE_FAILED: return "failed";
    case SD_PDF_PAGE_TIMEOUT: return "timeout";
    case SD_PDF_PAGE_OCR:
        return "ocr";
    case SD_PDF_PAGE_NO_TEXT:
        return "no-text";
    }
    return "?";
}

// ---- worker side ----

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int send_rec(int fd, char type, const void *a, size_t na, const void *b, size_t nb, const void *c, size_t nc)
{
    uint32_t len = (uint32_t)(na + nb + nc);
    char hdr[5];
    hdr[0] = type;
    memcpy(hdr + 1, &len, 4);
    if (write_all(fd, hdr, 5) || (na && write_all(fd, a, na)) || (nb && write_all(fd, b, nb)) ||
        (nc && write_all(fd, c, nc)))
        return -1;
    return 0;
}

static size_t bounded_len(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n > max) { // cut at a UTF-8 boundary
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    return n;
}

static void send_str0(int fd, char type, int32_t a, const char *s)
{
    size_t n = bounded_len(s, MAX_TITLE);
    char *buf = malloc(n + 1);
    if (!buf)
        return;
    memcpy(buf, s ? s : "", n);
    buf[n] = 0;
    send_rec(fd, type, &a, 4, buf, n + 1, NULL, 0);
    free(buf);
}

static int dest_page(PopplerDocument *doc, PopplerDest *d)
{
    if (!d)
        return 0;
    if (d->type == POPPLER_DEST_NAMED && d->named_dest) {
        PopplerDest *nd = poppler_document_find_dest(doc, d->named_dest);
        int p = nd ? nd->page_num : 0;
        if (nd)
            poppler_dest_free(nd);
        return p;
    }
    return d->page_num;
}

static void send_outline(int fd, PopplerDocument *doc, PopplerIndexIter *it, int level, int *count)
{
    if (!it || level >= MAX_OUTLINE_DEPTH)
        return;
    do {
        if (*count >= MAX_OUTLINE)
            return;
        PopplerAction *a = poppler_index_iter_get_action(it);
        if (a) {
            int page = 0;
            if (a->type == POPPLER_ACTION_GOTO_DEST)
                page = dest_page(doc, a->goto_dest.dest);
            int32_t rec[2] = {level, page};
            const char *t = a->any.title ? a->any.title : "";
            size_t n = bounded_len(t, MAX_TITLE);
            if (n) {
                char z = 0;
                send_rec(fd, 'O', rec, 8, t, n, &z, 1);
                (*count)++;
            }
            poppler_action_free(a);
        }
        PopplerIndexIter *child = poppler_index_iter_get_child(it);
        if (child) {
            send_outline(fd, doc, child, level + 1, count);
            poppler_index_iter_free(child);
        }
    } while (poppler_index_iter_next(it));
}

static int env_int(const char *name)
{
    const char *v = getenv(name);
    return v ? atoi(v) : 0;
}

// Append the words' boxes (pixels at dpi -> PDF points) to *blob (sd_store_page_words_set's format), at
// most cap bytes in all.
static void words_blob(const char *text, const struct sd_ocr_word *w, size_t n, double dpi, size_t cap,
                       unsigned char **blob, size_t *len)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += 18 + (w[i].len > 65535 ? 65535 : w[i].len);
    if (need > cap)
        need = cap;
    unsigned char *b = malloc(need ? need : 1), *p = b;
    if (!b)
        return;
    for (size_t i = 0; i < n; i++) {
        uint16_t wl = (uint16_t)(w[i].len > 65535 ? 65535 : w[i].len);
        if ((size_t)(p - b) + 18 + wl > need)
            break;
        float box[4] = {(float)(w[i].x0 * 72 / dpi), (float)(w[i].y0 * 72 / dpi), (float)(w[i].x1 * 72 / dpi),
                        (float)(w[i].y1 * 72 / dpi)};
        memcpy(p, box, 16);
        memcpy(p + 16, &wl, 2);
        memcpy(p + 18, text + w[i].off, wl);
        p += 18 + wl;
    }
    *blob = b;
    *len = (size_t)(p - b);
}

// Render the page to 8-bit gray (white background) at SD_OCR_DPI, or lower so that it stays within
// SD_OCR_MAX_PIXELS, and read it with Tesseract. Returns the text (malloc'd) or NULL; *blob/*blob_len:
// its words with boxes, at most blob_cap bytes (malloc'd; NULL when none).
static char *ocr_page(PopplerPage *page, struct sd_ocr *eng, size_t blob_cap, unsigned char **blob, size_t *blob_len)
{
    *blob = NULL;
    *blob_len = 0;
    double pw = 0, ph = 0;
    poppler_page_get_size(page, &pw, &ph);
    if (!(pw > 1 && ph > 1 && pw < 1e5 && ph < 1e5))
        return NULL;
    double dpi = SD_OCR_DPI;
    double px = pw * ph * (dpi / 72) * (dpi / 72);
    if (px > SD_OCR_MAX_PIXELS)
        dpi *= sqrt(SD_OCR_MAX_PIXELS / px);
    int w = (int)(pw * dpi / 72 + 0.5), h = (int)(ph * dpi / 72 + 0.5);
    if (w < 16 || h < 16)
        return NULL;
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    if (cairo_surface_status(surf) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(surf);
        return NULL;
    }
    cairo_t *cr = cairo_create(surf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_scale(cr, dpi / 72, dpi / 72);
    poppler_page_render_for_printing(page, cr);
    cairo_destroy(cr);
    cairo_surface_flush(surf);
    const unsigned char *px32 = cairo_image_surface_get_data(surf);
    int stride = cairo_image_surface_get_stride(surf);
    unsigned char *gray = malloc((size_t)w * (size_t)h);
    char *text = NULL;
    if (gray && px32) {
        for (int y = 0; y < h; y++) {
            const uint32_t *row = (const uint32_t *)(const void *)(px32 + (size_t)y * (size_t)stride);
            unsigned char *g = gray + (size_t)y * (size_t)w;
            for (int x = 0; x < w; x++) {
                uint32_t v = row[x]; // RGB24: 0x00RRGGBB in native order
                g[x] = (unsigned char)((((v >> 16) & 255) * 299 + ((v >> 8) & 255) * 587 + (v & 255) * 114) / 1000);
            }
        }
        size_t len = 0, nw = 0;
        struct sd_ocr_word *wv = NULL;
        if (sd_ocr_gray(eng, gray, w, h, w, (int)(dpi + 0.5), &text, &len, NULL, &wv, &nw, NULL) != SD_OK)
            text = NULL;
        else if (nw)
            words_blob(text, wv, nw, (int)(dpi + 0.5), blob_cap, blob, blob_len);
        free(wv);
    }
    free(gray);
    cairo_surface_destroy(surf);
    return text;
}

// A page record ('T' text layer, 'R' OCR): page number, its label (at most 64 bytes) NUL, the text.
static int send_page(int fd, char type, int32_t pi, PopplerPage *page, const char *text, size_t max_page_bytes)
{
    char *label = page ? poppler_page_get_label(page) : NULL;
    size_t ll = bounded_len(label, 64);
    char lab[66];
    memcpy(lab, label ? label : "", ll);
    lab[ll] = 0;
    g_free(label);
    return send_rec(fd, type, &pi, 4, lab, ll + 1, text ? text : "", bounded_len(text, max_page_bytes));
}

static PopplerDocument *open_doc(int fd, const char *path, const char *password)
{
    GError *gerr = NULL;
    gchar *uri = g_filename_to_uri(path, NULL, &gerr);
    if (!uri) {
        send_str0(fd, 'E', ERR_KIND_OTHER, gerr ? gerr->message : "bad path");
        return NULL;
    }
    PopplerDocument *doc = poppler_document_new_from_file(uri, password, &gerr);
    g_free(uri);
    if (!doc) {
        int kind = ERR_KIND_DAMAGED;
        if (gerr && gerr->domain == POPPLER_ERROR && gerr->code == POPPLER_ERROR_ENCRYPTED)
            kind = ERR_KIND_ENCRYPTED;
        send_str0(fd, 'E', kind, gerr ? gerr->message : "poppler could not open the file");
    }
    return doc;
}

// Text pass: metadata, outline and the text layer of pages start.. in order.
static void worker(int fd, const char *path, const char *password, int start, size_t max_page_bytes)
{
    PopplerDocument *doc = open_doc(fd, path, password);
    if (!doc)
        return;
    int n_pages = poppler_document_get_n_pages(doc);
    gchar *title = poppler_document_get_title(doc), *author = poppler_document_get_author(doc);
    size_t tl = bounded_len(title, MAX_TITLE), al = bounded_len(author, MAX_TITLE);
    char *meta = malloc(tl + al + 2);
    if (meta) {
        memcpy(meta, title ? title : "", tl);
        meta[tl] = 0;
        memcpy(meta + tl + 1, author ? author : "", al);
        meta[tl + 1 + al] = 0;
        int32_t np = n_pages;
        send_rec(fd, 'M', &np, 4, meta, tl + al + 2, NULL, 0);
        free(meta);
    }
    g_free(title);
    g_free(author);
    if (start == 0) {
        PopplerIndexIter *it = poppler_index_iter_new(doc);
        int count = 0;
        if (it) {
            send_outline(fd, doc, it, 0, &count);
            poppler_index_iter_free(it);
        }
    }
    int crash_page = env_int("SD_PDF_TEST_CRASH_PAGE"), hang_page = env_int("SD_PDF_TEST_HANG_PAGE");
    for (int i = start; i < n_pages && i < MAX_PAGES; i++) {
        int32_t pi = i;
        if (send_rec(fd, 'B', &pi, 4, NULL, 0, NULL, 0))
            break;
        if (crash_page == i + 1)
            raise(SIGSEGV);
        if (hang_page == i + 1)
            for (;;)
                pause();
        PopplerPage *page = poppler_document_get_page(doc, i);
        if (!page) { // not loadable (damaged page tree): neither a text layer nor an image to read
            if (send_rec(fd, 'F', &pi, 4, NULL, 0, NULL, 0))
                break;
            continue;
        }
        char *text = poppler_page_get_text(page);
        int rc = send_page(fd, 'T', pi, page, text, max_page_bytes);
        g_free(text);
        g_object_unref(page);
        if (rc)
            break;
    }
    send_rec(fd, 'D', NULL, 0, NULL, 0, NULL, 0);
    g_object_unref(doc);
}

// OCR pass (one of a pool): reads pages[0..n) by OCR, in order: 'P' before each, then 'R' with its text
// (maybe none); 'W' and stop when the engine cannot start; 'D' at the end.
static void ocr_worker(int fd, const char *path, const char *password, const int *pages, int n, size_t max_page_bytes,
                       const char *lang)
{
    PopplerDocument *doc = open_doc(fd, path, password);
    if (!doc)
        return;
    struct sd_ocr *eng = NULL;
    struct sd_err e = {0};
    if (sd_ocr_new(lang, &eng, &e) != SD_OK) {
        send_str0(fd, 'W', 0, e.msg);
        g_object_unref(doc);
        return;
    }
    int hang_ocr = env_int("SD_PDF_TEST_HANG_OCR");
    for (int k = 0; k < n; k++) {
        int32_t pi = pages[k];
        if (send_rec(fd, 'P', &pi, 4, NULL, 0, NULL, 0))
            break;
        if (hang_ocr == pi + 1)
            for (;;)
                pause();
        PopplerPage *page = poppler_document_get_page(doc, pi);
        unsigned char *blob = NULL;
        size_t blob_len = 0;
        char *text = page ? ocr_page(page, eng, max_page_bytes, &blob, &blob_len) : NULL;
        if (blob_len && send_rec(fd, 'X', &pi, 4, blob, blob_len, NULL, 0)) {
            free(blob);
            free(text);
            if (page)
                g_object_unref(page);
            break;
        }
        free(blob);
        int rc = send_page(fd, 'R', pi, page, text, max_page_bytes);
        free(text);
        if (page)
            g_object_unref(page);
        if (rc)
            break;
    }
    send_rec(fd, 'D', NULL, 0, NULL, 0, NULL, 0);
    sd_ocr_free(eng);
    g_object_unref(doc);
}

// ---- parent side ----

struct child {
    pid_t pid;
    int fd;
};

// Fork a worker with the limits every worker runs under: returns 0 in the child (*wfd: its end of the
// pipe), 1 in the parent (c filled in), -1 on failure (err).
static int fork_worker(struct child *c, const char *path, const struct sd_pdf_opts *o, int *wfd, struct sd_err *err)
{
    int p[2];
    if (pipe(p) != 0) {
        sd_err_set(err, SD_ERR_IO, "%s: cannot create a pipe for the PDF worker: %s", path, strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        sd_err_set(err, SD_ERR_IO, "%s: cannot start the PDF worker: %s", path, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGALRM, SIG_DFL);
        if (!getenv("SD_PDF_DEBUG")) { // poppler prints syntax errors on stderr
            int dn = open("/dev/null", O_WRONLY);
            if (dn >= 0) {
                dup2(dn, 2);
                close(dn);
            }
        }
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
#if !SD_ASAN_BUILD // ASan reserves terabytes of shadow address space: any RLIMIT_AS breaks every mmap
        size_t mb = o->mem_limit_mb ? o->mem_limit_mb : 4096;
        rl.rlim_cur = rl.rlim_max = (rlim_t)mb << 20;
        setrlimit(RLIMIT_AS, &rl);
#endif
        // Backstop: the parent kills us first, but never outlive the file budget by much.
        alarm((unsigned)(o->file_timeout_s > 0 ? o->file_timeout_s : 600) + 30);
        *wfd = p[1];
        return 0;
    }
    close(p[1]);
    c->pid = pid;
    c->fd = p[0];
    return 1;
}

static int spawn(struct child *c, const char *path, const struct sd_pdf_opts *o, int start, struct sd_err *err)
{
    int wfd = -1, r = fork_worker(c, path, o, &wfd, err);
    if (r == 0) {
        worker(wfd, path, o->password, start, o->max_page_bytes ? o->max_page_bytes : (4u << 20));
        _exit(0);
    }
    return r < 0 ? -1 : 0;
}

static int spawn_ocr(struct child *c, const char *path, const struct sd_pdf_opts *o, const int *pages, int n,
                     struct sd_err *err)
{
    int wfd = -1, r = fork_worker(c, path, o, &wfd, err);
    if (r == 0) {
        ocr_worker(wfd, path, o->password, pages, n, o->max_page_bytes ? o->max_page_bytes : (4u << 20), o->ocr_lang);
        _exit(0);
    }
    return r < 0 ? -1 : 0;
}

// Returns a description of how the worker ended ("crashed (signal 11)", ...), reaping it.
static void reap(struct child *c, int kill_it, char *how, size_t how_n)
{
    if (c->pid <= 0)
        return;
    if (kill_it)
        kill(c->pid, SIGKILL);
    int status = 0;
    while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (how) {
        if (WIFSIGNALED(status))
            snprintf(how, how_n, "poppler crashed (signal %d, %s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
        else
            snprintf(how, how_n, "worker exited with status %d", WEXITSTATUS(status));
    }
    close(c->fd);
    c->pid = -1;
    c->fd = -1;
}

// Read exactly n bytes before the deadline: 1 ok, 0 EOF, -1 error, -2 timeout.
static int read_full(int fd, void *buf, size_t n, double deadline)
{
    char *p = buf;
    while (n) {
        double left = deadline - sd_now_s();
        if (left <= 0)
            return -2;
        struct pollfd pf = {fd, POLLIN, 0};
        int pr = poll(&pf, 1, (int)(left * 1000) + 1);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (pr == 0)
            continue; // loop re-checks the deadline
        ssize_t k = read(fd, p, n);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        if (k == 0)
            return 0;
        p += k;
        n -= (size_t)k;
    }
    return 1;
}

// A page record's payload after its page number ('T', 'R'): label NUL text. 0 when malformed.
static int split_page_rec(const char *buf, uint32_t len, const char **label, const char **txt, size_t *txt_n)
{
    *label = buf + 4;
    size_t lab_n = strnlen(*label, len - 4);
    if (lab_n >= len - 4)
        return 0;
    *txt = *label + lab_n + 1;
    *txt_n = len - 4 - lab_n - 1;
    return 1;
}

// Store page i's text. ocr: it comes from OCR (state ocr or no-text). ocr_next: OCR will read the page if it
// needs it, so such a page is not fed to the header/footer detection now (each page is fed once).
static enum sd_status store_page(struct sd_pdf_doc *d, int i, const char *label, const char *raw, size_t n, int ocr,
                                 int ocr_next, const char *path, struct sd_err *err)
{
    struct sd_pdf_page *pg = &d->pages[i];
    free(pg->label);
    pg->label = label && *label ? strdup(label) : NULL;
    size_t len = 0;
    char *t = sd_text_normalize_page(raw, n, &len);
    if (!t)
        return sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory on page %d", path, i + 1);
    enum sd_page_quality q = sd_text_page_quality(t, len);
    if (ocr)
        pg->state = q == SD_PAGE_OK ? SD_PDF_PAGE_OCR : SD_PDF_PAGE_NO_TEXT;
    else
        pg->state = q == SD_PAGE_OK ? SD_PDF_PAGE_OK : q == SD_PAGE_EMPTY ? SD_PDF_PAGE_EMPTY : SD_PDF_PAGE_GARBLED;
    if (ocr || !ocr_next || q == SD_PAGE_OK)
        sd_hf_add_page(d->hf, t, len);
    if (fseek(d->spool, 0, SEEK_END) != 0 || (pg->off = ftell(d->spool)) < 0 ||
        (len && fwrite(t, 1, len, d->spool) != len)) {
        free(t);
        return sd_err_set(err, SD_ERR_IO, "%s: cannot write the temporary page spool: %s (is TMPDIR full?)", path,
                          strerror(errno));
    }
    pg->len = len;
    free(t);
    return SD_OK;
}

static int looks_like_pdf(const char *path, struct sd_err *err, enum sd_status *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *st = sd_err_set(err, SD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return 0;
    }
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0) {
        *st = sd_err_set(err, SD_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        return 0;
    }
    if (n == 0) {
        *st = sd_err_set(err, SD_ERR_FORMAT, "%s: empty file, not a PDF", path);
        return 0;
    }
    if (!memmem(buf, (size_t)n, "%PDF-", 5)) {
        *st = sd_err_set(err, SD_ERR_FORMAT, "%s: not a PDF file (no %%PDF- header in its first 1 KiB)", path);
        return 0;
    }
    return 1;
}

// ---- OCR pass: a pool of workers ----

struct ocr_job {
    struct child c;
    int *pages; // the pages this job reads, ascending
    int n, done;
    int current;     // page OCR started ('P') and not finished; -1 none
    double deadline; // for the next record
};

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

// The pages that need OCR after the text pass are read by a pool of workers (pages dealt round-robin),
// each under the page budget: a worker that crashes or overruns is killed, its page marked failed or timed
// out, and a new one goes on with the rest. When the engine cannot start (no Tesseract, no language data)
// the pages keep their "needs OCR" state and d->ocr_error says why. Errors: only spool/memory failures.
static enum sd_status ocr_pass(struct sd_pdf_doc *d, const char *path, const struct sd_pdf_opts *o,
                               double file_deadline, char *buf, size_t buf_cap, struct sd_err *err)
{
    int n_need = 0;
    for (int i = 0; i < d->n_pages; i++)
        n_need += d->pages[i].state == SD_PDF_PAGE_EMPTY || d->pages[i].state == SD_PDF_PAGE_GARBLED;
    if (!n_need)
        return SD_OK;
    int k = o->ocr_workers > 0 ? o->ocr_workers : cpu_count();
    if (k > SD_PDF_MAX_OCR_WORKERS)
        k = SD_PDF_MAX_OCR_WORKERS;
    if (k > n_need)
        k = n_need;
    struct ocr_job *jobs = calloc((size_t)k, sizeof *jobs);
    int *pages = malloc(sizeof(int) * (size_t)n_need);
    struct pollfd *pfd = calloc((size_t)k, sizeof *pfd);
    enum sd_status st = SD_OK;
    if (!jobs || !pages || !pfd) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory for OCR", path);
        goto out;
    }
    // Deal the pages: job j gets the j-th, (j+k)-th, ... page needing OCR, kept contiguous in pages[].
    for (int j = 0, at = 0; j < k; j++) {
        jobs[j].pages = pages + at;
        int m = 0;
        for (int i = 0; i < d->n_pages; i++)
            if (d->pages[i].state == SD_PDF_PAGE_EMPTY || d->pages[i].state == SD_PDF_PAGE_GARBLED)
                if (m++ % k == j)
                    jobs[j].pages[jobs[j].n++] = i;
        at += jobs[j].n;
        jobs[j].c = (struct child){-1, -1};
        jobs[j].current = -1;
    }
    int broken = 0;
    for (int j = 0; j < k; j++) {
        struct sd_err e;
        if (spawn_ocr(&jobs[j].c, path, o, jobs[j].pages, jobs[j].n, &e) == 0)
            jobs[j].deadline = sd_now_s() + o->page_timeout_s;
    }
    for (;;) {
        int alive = 0;
        double wake = file_deadline;
        for (int j = 0; j < k; j++) {
            pfd[j] = (struct pollfd){jobs[j].c.pid > 0 ? jobs[j].c.fd : -1, POLLIN, 0};
            if (jobs[j].c.pid > 0) {
                alive++;
                if (jobs[j].deadline < wake)
                    wake = jobs[j].deadline;
            }
        }
        if (!alive)
            break;
        double now = sd_now_s();
        if (now >= file_deadline) { // stop reading; the rest keeps "needs OCR"
            for (int j = 0; j < k; j++)
                if (jobs[j].c.pid > 0)
                    reap(&jobs[j].c, 1, NULL, 0);
            if (!d->ocr_error &&
                asprintf(&d->ocr_error, "OCR stopped: the file's %.0f s budget ran out (raise --file-timeout)",
                         o->file_timeout_s) < 0)
                d->ocr_error = NULL;
            break;
        }
        int pr = poll(pfd, (nfds_t)k, (int)((wake - now) * 1000) + 1);
        if (pr < 0 && errno != EINTR)
            break;
        now = sd_now_s();
        for (int j = 0; j < k; j++) {
            struct ocr_job *jb = &jobs[j];
            if (jb->c.pid <= 0)
                continue;
            int r = 0; // 1 a record, 0 EOF, -1 error, -2 timeout
            char hdr[5];
            uint32_t len = 0;
            if (pr > 0 && (pfd[j].revents & (POLLIN | POLLHUP | POLLERR))) {
                r = read_full(jb->c.fd, hdr, 5, jb->deadline);
                if (r == 1) {
                    memcpy(&len, hdr + 1, 4);
                    if (len > buf_cap - 1)
                        r = -1;
                    else if (len)
                        r = read_full(jb->c.fd, buf, len, jb->deadline);
                }
            } else if (now >= jb->deadline)
                r = -2;
            else
                continue;
            int32_t pi = -1;
            if (r == 1 && len >= 4)
                memcpy(&pi, buf, 4);
            if (r == 1 && hdr[0] == 'P' && len >= 4 && jb->done < jb->n && pi == jb->pages[jb->done]) {
                jb->current = pi;
                jb->deadline = now + o->page_timeout_s;
                if (o->on_page)
                    o->on_page(o->page_user, pi, d->n_pages, 1);
                continue;
            }
            if (r == 1 && hdr[0] == 'X' && len > 4 && pi == jb->current) {
                free(d->pages[pi].words);
                d->pages[pi].words = malloc(len - 4);
                d->pages[pi].words_len = d->pages[pi].words ? len - 4 : 0;
                if (d->pages[pi].words)
                    memcpy(d->pages[pi].words, buf + 4, len - 4);
                continue;
            }
            if (r == 1 && hdr[0] == 'R' && len >= 5 && pi == jb->current) {
                const char *label, *txt;
                size_t txt_n;
                if (split_page_rec(buf, len, &label, &txt, &txt_n)) {
                    if ((st = store_page(d, pi, label, txt, txt_n, 1, 1, path, err)))
                        goto out;
                    jb->done++;
                    jb->current = -1;
                    jb->deadline = now + o->page_timeout_s;
                    continue;
                }
            }
            if (r == 1 && hdr[0] == 'W') { // the engine cannot start: no worker can read anything
                buf[len] = 0;
                if (!d->ocr_error && len > 4)
                    d->ocr_error = strdup(buf + 4);
                broken = 1;
            }
            // Done ('D'), or broken: EOF, crash, timeout, 'E', a protocol violation.
            int finished = r == 1 && hdr[0] == 'D';
            reap(&jb->c, 1, NULL, 0);
            if (!finished && !broken && jb->done < jb->n) {
                // The page in hand (or, before any 'P', the next one) is the culprit; the rest goes on.
                int bad = jb->current >= 0 ? jb->current : jb->pages[jb->done];
                d->pages[bad].state = r == -2 ? SD_PDF_PAGE_TIMEOUT : SD_PDF_PAGE_FAILED;
                jb->done++;
                jb->current = -1;
                if (jb->done < jb->n && ++d->n_restarts <= MAX_RESTARTS) {
                    struct sd_err e;
                    if (spawn_ocr(&jb->c, path, o, jb->pages + jb->done, jb->n - jb->done, &e) == 0)
                        jb->deadline = now + o->page_timeout_s;
                }
            }
        }
        if (broken)
            for (int j = 0; j < k; j++)
                if (jobs[j].c.pid > 0)
                    reap(&jobs[j].c, 1, NULL, 0);
    }
out:
    for (int j = 0; jobs && j < k; j++)
        if (jobs[j].c.pid > 0)
            reap(&jobs[j].c, 1, NULL, 0);
    free(jobs);
    free(pages);
    free(pfd);
    return st;
}

enum sd_status sd_pdf_extract(const char *path, const struct sd_pdf_opts *opts, struct sd_pdf_doc **out,
                              struct sd_err *err)
{
    *out = NULL;
    struct sd_pdf_opts o = opts ? *opts : (struct sd_pdf_opts){0};
    if (o.page_timeout_s <= 0)
        o.page_timeout_s = 30;
    if (o.file_timeout_s <= 0)
        o.file_timeout_s = 600;
    size_t max_page = o.max_page_bytes ? o.max_page_bytes : (4u << 20);
    enum sd_status st = SD_OK;
    if (!looks_like_pdf(path, err, &st))
        return st;

    struct sd_pdf_doc *d = calloc(1, sizeof *d);
    if (!d)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    d->n_pages = -1;
    d->spool = tmpfile();
    d->hf = sd_hf_new();
    char *buf = malloc(max_page + 64 + MAX_TITLE * 2);
    struct child c = {-1, -1};
    if (!d->spool || !d->hf || !buf) {
        st = sd_err_set(err, d->spool ? SD_ERR_NOMEM : SD_ERR_IO, "%s: cannot set up extraction: %s", path,
                        d->spool ? "out of memory" : strerror(errno));
        goto fail;
    }
    const double file_deadline = sd_now_s() + o.file_timeout_s;
    int next = 0;   // first page the next worker should extract
    int done = 0;
    size_t outline_cap = 0;
    while (!done) {
        if (spawn(&c, path, &o, next, err)) {
            st = err ? err->status : SD_ERR_IO;
            goto fail;
        }
        int current = -1;        // page started ('B') and not finished
        int got_meta = 0;
        for (;;) {
            double page_deadline = sd_now_s() + o.page_timeout_s;
            double deadline = page_deadline < file_deadline ? page_deadline : file_deadline;
            char hdr[5];
            int r = read_full(c.fd, hdr, 5, deadline);
            uint32_t len = 0;
            if (r == 1) {
                memcpy(&len, hdr + 1, 4);
                if (len > max_page + 64 + MAX_TITLE * 2)
                    r = -1; // protocol violation: treat as a crash
                else if (len)
                    r = read_full(c.fd, buf, len, deadline);
            }
            if (r == -2 && sd_now_s() >= file_deadline) {
                reap(&c, 1, NULL, 0);
                st = sd_err_set(err, SD_ERR_RANGE,
                                "%s: extraction took longer than the %.0f s budget for one file (at page %d); "
                                "the file was skipped (raise --file-timeout to try harder)",
                                path, o.file_timeout_s, current + 1);
                goto fail;
            }
            if (r != 1) { // timeout on a page, EOF or error: the worker is done or broken
                char how[160] = "";
                reap(&c, 1, how, sizeof how);
                if (r == -2)
                    snprintf(how, sizeof how, "page took longer than %.0f s", o.page_timeout_s);
                if (!got_meta && d->n_pages < 0) {
                    st = sd_err_set(err, SD_ERR_FORMAT,
                                    "%s: could not open the PDF: %s; the file is probably damaged", path, how);
                    goto fail;
                }
                if (current >= 0 && current < d->n_pages) {
                    d->pages[current].state = r == -2 ? SD_PDF_PAGE_TIMEOUT : SD_PDF_PAGE_FAILED;
                    next = current + 1;
                } else if (!got_meta) {
                    // a restarted worker died before reopening: give up on the rest
                    for (int i = next; i < d->n_pages; i++)
                        d->pages[i].state = SD_PDF_PAGE_FAILED;
                    next = d->n_pages;
                }
                if (next >= d->n_pages) {
                    done = 1;
                } else if (++d->n_restarts > MAX_RESTARTS) {
                    for (int i = next; i < d->n_pages; i++)
                        d->pages[i].state = SD_PDF_PAGE_FAILED;
                    done = 1;
                }
                break;
            }
            char type = hdr[0];
            if (type == 'E') {
                int32_t kind = 0;
                if (len >= 4)
                    memcpy(&kind, buf, 4);
                buf[len] = 0;
                const char *msg = len > 4 ? buf + 4 : "";
                reap(&c, 1, NULL, 0);
                if (kind == ERR_KIND_ENCRYPTED)
                    st = sd_err_set(err, SD_ERR_UNSUPPORTED,
                                    o.password ? "%s: encrypted PDF and the password given does not open it (%s)"
                                               : "%s: encrypted PDF (%s); supply the password with --password",
                                    path, msg);
                else
                    st = sd_err_set(err, SD_ERR_FORMAT, "%s: damaged or unreadable PDF: %s", path,
                                    *msg ? msg : "poppler could not open it");
                goto fail;
            } else if (type == 'M' && len >= 4) {
                int32_t np;
                memcpy(&np, buf, 4);
                got_meta = 1;
                if (d->n_pages < 0) {
                    if (np < 0 || np > MAX_PAGES) {
                        reap(&c, 1, NULL, 0);
                        st = sd_err_set(err, SD_ERR_FORMAT, "%s: implausible page count %d; damaged PDF", path,
                                        (int)np);
                        goto fail;
                    }
                    d->n_pages = np;
                    d->pages = calloc(np ? (size_t)np : 1, sizeof *d->pages);
                    if (!d->pages) {
                        reap(&c, 1, NULL, 0);
                        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory for %d pages", path, (int)np);
                        goto fail;
                    }
                    for (int i = 0; i < np; i++)
                        d->pages[i].state = SD_PDF_PAGE_FAILED; // until its text arrives
                    buf[len] = 0;
                    const char *t = buf + 4;
                    size_t tl = strnlen(t, len - 4);
                    const char *a = tl + 1 < len - 4 ? t + tl + 1 : "";
                    d->title = *t ? strdup(t) : NULL;
                    d->author = *a ? strdup(a) : NULL;
                }
            } else if (type == 'O' && len >= 8) {
                int32_t rec[2];
                memcpy(rec, buf, 8);
                buf[len] = 0;
                if (d->n_outline == outline_cap) {
                    outline_cap = outline_cap ? outline_cap * 2 : 32;
                    void *n = realloc(d->outline, outline_cap * sizeof *d->outline);
                    if (!n) {
                        reap(&c, 1, NULL, 0);
                        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                        goto fail;
                    }
                    d->outline = n;
                }
                size_t tn = 0;
                char *t = sd_text_normalize_page(buf + 8, strnlen(buf + 8, len - 8), &tn);
                if (t) {
                    for (size_t k = 0; k < tn; k++)
                        if (t[k] == '\n')
                            t[k] = ' ';
                    int pg = rec[1];
                    if (pg < 0 || (d->n_pages >= 0 && pg > d->n_pages))
                        pg = 0;
                    d->outline[d->n_outline++] = (struct sd_pdf_outline){rec[0], pg, t};
                }
            } else if (type == 'B' && len >= 4) {
                int32_t pi;
                memcpy(&pi, buf, 4);
                current = pi;
                if (o.on_page && pi >= 0 && pi < d->n_pages)
                    o.on_page(o.page_user, pi, d->n_pages, 0);
            } else if (type == 'F' && len >= 4) {
                int32_t pi;
                memcpy(&pi, buf, 4);
                if (pi >= 0 && pi < d->n_pages) {
                    d->pages[pi].state = SD_PDF_PAGE_FAILED; // its spool slot stays empty (len 0)
                    current = -1;
                    next = pi + 1;
                }
            } else if (type == 'T' && len >= 5) {
                int32_t pi;
                memcpy(&pi, buf, 4);
                if (pi < 0 || pi >= d->n_pages) {
                    reap(&c, 1, NULL, 0);
                    st = sd_err_set(err, SD_ERR_FORMAT, "%s: worker protocol error (page %d)", path, (int)pi);
                    goto fail;
                }
                const char *label, *txt;
                size_t txt_n;
                if (!split_page_rec(buf, len, &label, &txt, &txt_n)) {
                    reap(&c, 1, NULL, 0);
                    st = sd_err_set(err, SD_ERR_FORMAT, "%s: worker protocol error (page %d)", path, (int)pi);
                    goto fail;
                }
                if ((st = store_page(d, pi, label, txt, txt_n, 0, o.ocr, path, err))) {
                    reap(&c, 1, NULL, 0);
                    goto fail;
                }
                current = -1;
                next = pi + 1;
            } else if (type == 'D') {
                reap(&c, 1, NULL, 0); // all sent; no need to wait for poppler's teardown
                done = 1;
                break;
            }
        }
    }
    if (d->n_pages <= 0) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: the PDF has no readable pages (damaged or truncated file?)", path);
        goto fail;
    }
    if (o.ocr && (st = ocr_pass(d, path, &o, file_deadline, buf, max_page + 64 + MAX_TITLE * 2, err)))
        goto fail;
    free(buf);
    buf = NULL;
    sd_hf_finish(d->hf);
    d->n_header_lines = sd_hf_count(d->hf);
    *out = d;
    return SD_OK;
fail:
    if (c.pid > 0)
        reap(&c, 1, NULL, 0);
    free(buf);
    sd_pdf_doc_free(d);
    return st;
}

enum sd_status sd_pdf_page_text(const struct sd_pdf_doc *d, int i, char **text, size_t *len, struct sd_err *err)
{
    *text = NULL;
    *len = 0;
    if (i < 0 || i >= d->n_pages)
        return sd_err_set(err, SD_ERR_ARG, "page %d out of range (document has %d)", i + 1, d->n_pages);
    const struct sd_pdf_page *pg = &d->pages[i];
    char *t = malloc(pg->len + 1);
    if (!t)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory reading page %d", i + 1);
    if (pg->len && (fseek(d->spool, pg->off, SEEK_SET) != 0 || fread(t, 1, pg->len, d->spool) != pg->len)) {
        free(t);
        return sd_err_set(err, SD_ERR_IO, "cannot read page %d back from the spool: %s", i + 1, strerror(errno));
    }
    t[pg->len] = 0;
    *len = sd_hf_strip(d->hf, t, pg->len);
    *text = t;
    return SD_OK;
}

void sd_pdf_doc_free(struct sd_pdf_doc *d)
{
    if (!d)
        return;
    if (d->pages)
        for (int i = 0; i < d->n_pages; i++) {
            free(d->pages[i].label);
            free(d->pages[i].words);
        }
    free(d->pages);
    for (size_t i = 0; i < d->n_outline; i++)
        free(d->outline[i].title);
    free(d->outline);
    free(d->title);
    free(d->author);
    free(d->ocr_error);
    if (d->spool)
        fclose(d->spool);
    sd_hf_free(d->hf);
    free(d);
}
