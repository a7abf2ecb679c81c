// ingest.c: the ingestion driver (see ingest.h): plan, then per file check, extract and commit.
// Extraction happens outside any transaction; the write transaction re-checks the document's state
// so two processes ingesting the same files at once neither fail nor duplicate work twice.
#include "ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hex.h"
#include "ocr.h"
#include "pdf_extract.h"
#include "text_clean.h"
#include "tree_walk.h"

#define CODE_SPAN_LINES 60
#define CODE_SPAN_MAX_LINES 120
#define TEXT_SPAN_LINES 40
#define TEXT_SPAN_MAX_LINES 100
#define SPAN_MAX_BYTES 16384

enum sd_status sd_file_sha256(const char *path, char out[65], struct sd_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sd_err_set(err, SD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    enum sd_status r = SD_OK;
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        r = sd_err_set(err, SD_ERR_NOMEM, "cannot set up SHA-256");
        goto out;
    }
    static __thread unsigned char buf[1 << 16];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = sd_err_set(err, SD_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    }
    unsigned char md[32];
    unsigned int mdn = 0;
    EVP_DigestFinal_ex(ctx, md, &mdn);
    sd_hex_encode(md, sizeof md, out);
out:
    EVP_MD_CTX_free(ctx);
    close(fd);
    return r;
}

// ---- splitting text into line spans ----

static int heading_line(const char *l, size_t n)
{
    size_t i = 0;
    while (i < n && i < 6 && l[i] == '#')
        i++;
    return i > 0 && i < n && l[i] == ' ';
}

static int blank_line(const char *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (l[i] != ' ' && l[i] != '\t' && l[i] != '\r')
            return 0;
    return 1;
}

enum sd_status sd_split_lines(const char *text, size_t len, int kind, sd_span_out_fn fn, void *user,
                              struct sd_err *err)
{
    int soft = kind == SD_FILE_CODE ? CODE_SPAN_LINES : TEXT_SPAN_LINES;
    int hard = kind == SD_FILE_CODE ? CODE_SPAN_MAX_LINES : TEXT_SPAN_MAX_LINES;
    char section[256] = "";
    size_t span_start = 0;
    int line = 1, span_line = 1, ord = 0;
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        size_t next = e < len ? e + 1 : e;
        int lines_in_span = line - span_line + 1;
        int is_heading = kind == SD_FILE_MARKDOWN && heading_line(text + i, e - i);
        // Close the span before this line if: a markdown heading starts, or it is full.
        if (i > span_start && (is_heading || lines_in_span > hard || i - span_start > SPAN_MAX_BYTES)) {
            struct sd_span sp = {.ord = ord++, .line_start = span_line, .line_end = line - 1,
                                 .section = section[0] ? section : NULL, .text = text + span_start,
                                 .len = i - span_start, .n_tokens = -1};
            enum sd_status r = fn(user, &sp, err);
            if (r)
                return r;
            span_start = i;
            span_line = line;
        }
        if (is_heading) {
            const char *h = text + i;
            size_t hn = e - i;
            while (hn && *h == '#')
                h++, hn--;
            while (hn && *h == ' ')
                h++, hn--;
            if (hn >= sizeof section)
                hn = sizeof section - 1;
            memcpy(section, h, hn);
            section[hn] = 0;
        }
        // A blank line after the soft limit ends the span at this line.
        if (blank_line(text + i, e - i) && line - span_line + 1 >= soft) {
            struct sd_span sp = {.ord = ord++, .line_start = span_line, .line_end = line,
                                 .section = section[0] ? section : NULL, .text = text + span_start,
                                 .len = next - span_start, .n_tokens = -1};
            enum sd_status r = fn(user, &sp, err);
            if (r)
                return r;
            span_start = next;
            span_line = line + 1;
        }
        i = next;
        line++;
    }
    if (span_start < len) {
        struct sd_span sp = {.ord = ord++, .line_start = span_line, .line_end = line - 1,
                             .section = section[0] ? section : NULL, .text = text + span_start,
                             .len = len - span_start, .n_tokens = -1};
        if (len > 0 && text[len - 1] != '\n')
            sp.line_end = line - 1;
        return fn(user, &sp, err);
    }
    return SD_OK;
}

// ---- planning ----

struct plan_file {
    char *path;
    char *root; // directory ingested, NULL for a file named directly
    int64_t size, mtime_ns;
    int kind;
    const char *lang;
};

struct plan {
    struct plan_file *f;
    size_t n, cap;
    char **skip_prefixes; // unreadable directories
    size_t n_skip, cap_skip;
    const char *root;
    const struct sd_ingest_opts *o;
    struct sd_ingest_stats *st;
    int oom;
};

static void emit(const struct sd_ingest_opts *o, enum sd_ingest_event_kind k, const char *path, const char *msg,
                 size_t index, size_t total, int64_t bd, int64_t bt)
{
    if (o->on_event) {
        struct sd_ingest_event ev = {k, path, msg, index, total, bd, bt, 0, 0, 0};
        o->on_event(o->user, &ev);
    }
}

static int plan_add(struct plan *p, const char *path, const struct stat *st, int kind, const char *lang)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        void *n = realloc(p->f, cap * sizeof *p->f);
        if (!n) {
            p->oom = 1;
            return 1;
        }
        p->f = n;
        p->cap = cap;
    }
    struct plan_file *f = &p->f[p->n];
    f->path = strdup(path);
    f->root = p->root ? strdup(p->root) : NULL;
    if (!f->path || (p->root && !f->root)) {
        free(f->path);
        free(f->root);
        p->oom = 1;
        return 1;
    }
    f->size = st->st_size;
    f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    f->kind = kind;
    f->lang = lang;
    p->n++;
    return 0;
}

static int on_walk_file(void *user, const char *path, const struct stat *st, enum sd_file_kind kind, const char *lang)
{
    return plan_add(user, path, st, kind, lang);
}

static void on_walk_skip(void *user, const char *path, const char *reason, int is_error)
{
    struct plan *p = user;
    if (is_error) {
        if (p->n_skip == p->cap_skip) {
            size_t cap = p->cap_skip ? p->cap_skip * 2 : 16;
            void *n = realloc(p->skip_prefixes, cap * sizeof *p->skip_prefixes);
            if (!n) {
                p->oom = 1;
                return;
            }
            p->skip_prefixes = n;
            p->cap_skip = cap;
        }
        char *d = strdup(path);
        if (d)
            p->skip_prefixes[p->n_skip++] = d;
        p->st->failed++;
        emit(p->o, SD_INGEST_FAILED, path, reason, 0, 0, 0, 0);
    } else {
        p->st->skipped++;
        emit(p->o, SD_INGEST_SKIPPED, path, reason, 0, 0, 0, 0);
    }
}

// ---- extraction into the store ----

struct span_ctx {
    struct sd_store *s;
    int64_t doc_id;
    const struct sd_ingest_opts *o;
    int64_t n_spans, n_chars, n_tokens;
    int tokens_known;
};

static enum sd_status add_span(void *user, const struct sd_span *sp0, struct sd_err *err)
{
    struct span_ctx *c = user;
    struct sd_span sp = *sp0;
    if (sp.len == 0)
        return SD_OK;
    if (c->o->count_tokens) {
        sp.n_tokens = c->o->count_tokens(c->o->tok_user, sp.text, sp.len);
        if (sp.n_tokens < 0)
            c->tokens_known = 0;
        else
            c->n_tokens += sp.n_tokens;
    }
    c->n_spans++;
    c->n_chars += (int64_t)sp.len;
    return sd_store_span_add(c->s, c->doc_id, &sp, err);
}

// Append page number p (1-based) to a compact range list "1-3,7".
static void range_add(char *buf, size_t cap, int *last, int *run_start, int p)
{
    if (*last == p - 1 && *last > 0) {
        *last = p;
        return;
    }
    size_t l = strlen(buf);
    if (*last > 0) {
        if (*run_start != *last)
            snprintf(buf + l, cap - l, "%s%d-%d", l ? "," : "", *run_start, *last);
        else
            snprintf(buf + l, cap - l, "%s%d", l ? "," : "", *last);
    }
    *run_start = *last = p;
}

static void range_end(char *buf, size_t cap, int *last, int *run_start)
{
    range_add(buf, cap, last, run_start, -10);
}

struct doc_result {
    int64_t pages, ocr_pages, failed_pages, ocr_read, no_text;
    char ocr_list[512], failed_list[512], no_text_list[512];
    char ocr_error[400]; // why OCR could not run, "" if it ran or was off
    int kept;            // re-extracted for OCR that still cannot run: the stored rows were kept as they are
    int ocr_cannot_run;  // OCR could not start (no Tesseract or language data): ocr_error says why
};

// Page progress from the PDF worker, passed on as SD_INGEST_PAGE events.
struct page_progress {
    const struct sd_ingest_opts *o;
    const char *path;
    size_t index, total;
    int64_t bytes_done, bytes_total;
};

static void on_pdf_page(void *user, int page, int n_pages, int ocr)
{
    struct page_progress *pp = user;
    if (pp->o->on_event) {
        struct sd_ingest_event ev = {
            SD_INGEST_PAGE, pp->path, ocr ? "OCR" : NULL, pp->index, pp->total, pp->bytes_done, pp->bytes_total, page,
            n_pages,        ocr};
        pp->o->on_event(pp->o->user, &ev);
    }
}

// reocr: the file is unchanged and extracted again only for OCR; if OCR still cannot run, nothing is
// written (dr->kept).
static enum sd_status ingest_pdf(struct sd_store *s, const struct plan_file *f, const char *sha,
                                 const struct sd_ingest_opts *o, struct span_ctx *sc, struct page_progress *pp,
                                 int reocr, struct doc_result *dr, struct sd_err *err)
{
    struct sd_pdf_opts po = {.password = o->password,
                             .page_timeout_s = o->page_timeout_s,
                             .file_timeout_s = o->file_timeout_s,
                             .ocr = !o->no_ocr,
                             .ocr_lang = o->ocr_lang,
                             .on_page = on_pdf_page,
                             .page_user = pp};
    struct sd_pdf_doc *d = NULL;
    enum sd_status r = sd_pdf_extract(f->path, &po, &d, err);
    if (r)
        return r;
    if (d->ocr_error)
        snprintf(dr->ocr_error, sizeof dr->ocr_error, "%s", d->ocr_error);
    int ocr_ran = 0;
    for (int i = 0; i < d->n_pages; i++)
        ocr_ran |= d->pages[i].state == SD_PDF_PAGE_OCR || d->pages[i].state == SD_PDF_PAGE_NO_TEXT;
    dr->ocr_cannot_run = d->ocr_error && !ocr_ran;
    if (reocr && dr->ocr_cannot_run) { // nothing new to store
        dr->kept = 1;
        sd_pdf_doc_free(d);
        return SD_OK;
    }
    int ocr_last = 0, ocr_run = 0, fail_last = 0, fail_run = 0, nt_last = 0, nt_run = 0;
    for (int i = 0; i < d->n_pages; i++) {
        enum sd_pdf_page_state ps = d->pages[i].state;
        if (ps == SD_PDF_PAGE_EMPTY || ps == SD_PDF_PAGE_GARBLED) {
            dr->ocr_pages++;
            range_add(dr->ocr_list, sizeof dr->ocr_list - 8, &ocr_last, &ocr_run, i + 1);
        } else if (ps == SD_PDF_PAGE_FAILED || ps == SD_PDF_PAGE_TIMEOUT) {
            dr->failed_pages++;
            range_add(dr->failed_list, sizeof dr->failed_list - 8, &fail_last, &fail_run, i + 1);
        } else if (ps == SD_PDF_PAGE_OCR) {
            dr->ocr_read++;
        } else if (ps == SD_PDF_PAGE_NO_TEXT) {
            dr->no_text++;
            range_add(dr->no_text_list, sizeof dr->no_text_list - 8, &nt_last, &nt_run, i + 1);
        }
    }
    range_end(dr->ocr_list, sizeof dr->ocr_list - 8, &ocr_last, &ocr_run);
    range_end(dr->failed_list, sizeof dr->failed_list - 8, &fail_last, &fail_run);
    range_end(dr->no_text_list, sizeof dr->no_text_list - 8, &nt_last, &nt_run);
    dr->pages = d->n_pages;

    if ((r = sd_store_begin(s, err)))
        goto out;
    struct sd_doc_new dn = {.path = f->path, .root = f->root, .kind = "pdf", .title = d->title, .author = d->author,
                            .sha256 = sha, .ocr_pages = dr->ocr_list, .failed_pages = dr->failed_list,
                            .size = f->size, .mtime_ns = f->mtime_ns, .n_pages = d->n_pages};
    if ((r = sd_store_doc_replace(s, &dn, &sc->doc_id, err)))
        goto fail;
    for (size_t k = 0; k < d->n_outline; k++)
        if ((r = sd_store_section_add(s, sc->doc_id, (int)k, d->outline[k].level, d->outline[k].page_no,
                                      d->outline[k].title, err)))
            goto fail;
    for (int i = 0; i < d->n_pages; i++) {
        const struct sd_pdf_page *pg = &d->pages[i];
        char *text = NULL;
        size_t len = 0;
        if ((r = sd_pdf_page_text(d, i, &text, &len, err)))
            goto fail;
        if ((r = sd_store_page_add(s, sc->doc_id, i + 1, pg->label, sd_pdf_page_state_str(pg->state),
                                   (int64_t)len, err))) {
            free(text);
            goto fail;
        }
        if (pg->state == SD_PDF_PAGE_OCR && pg->words_len &&
            (r = sd_store_page_words_set(s, sc->doc_id, i + 1, pg->words, pg->words_len, err))) {
            free(text);
            goto fail;
        }
        if ((pg->state == SD_PDF_PAGE_OK || pg->state == SD_PDF_PAGE_OCR) && len) {
            // section: the outline entry with the greatest page <= this page (last one in order)
            const char *section = NULL;
            int best = 0;
            for (size_t k = 0; k < d->n_outline; k++)
                if (d->outline[k].page_no > 0 && d->outline[k].page_no <= i + 1 && d->outline[k].page_no >= best) {
                    best = d->outline[k].page_no;
                    section = d->outline[k].title;
                }
            struct sd_span sp = {.ord = i, .page_no = i + 1, .page_label = pg->label, .section = section,
                                 .text = text, .len = len, .n_tokens = -1};
            r = add_span(sc, &sp, err);
        }
        free(text);
        if (r)
            goto fail;
    }
    if ((r = sd_store_doc_totals(s, sc->doc_id, sc->n_spans, sc->n_chars, sc->tokens_known ? sc->n_tokens : -1,
                                 err)) ||
        (r = sd_store_commit(s, err)))
        goto fail;
    goto out;
fail:
    sd_store_rollback(s);
out:
    sd_pdf_doc_free(d);
    return r;
}

static enum sd_status read_text_file(const char *path, int64_t cap, char **out, size_t *len, struct sd_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sd_err_set(err, SD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t n = 0, bufcap = 1 << 16;
    char *buf = malloc(bufcap);
    enum sd_status r = SD_OK;
    if (!buf) {
        r = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    for (;;) {
        if (n == bufcap) {
            if ((int64_t)bufcap > cap) {
                r = sd_err_set(err, SD_ERR_RANGE, "%s: grew past the size cap while being read", path);
                goto out;
            }
            char *nb = realloc(buf, bufcap * 2);
            if (!nb) { // an error, not a silently truncated document
                r = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, bufcap * 2);
                goto out;
            }
            buf = nb;
            bufcap *= 2;
        }
        ssize_t k = read(fd, buf + n, bufcap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            r = sd_err_set(err, SD_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            goto out;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    *out = sd_text_valid_utf8(buf, n, len);
    if (!*out)
        r = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", path);
out:
    free(buf);
    close(fd);
    return r;
}

static enum sd_status ingest_text(struct sd_store *s, const struct plan_file *f, const char *sha,
                                  const struct sd_ingest_opts *o, struct span_ctx *sc, struct sd_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int64_t cap = o->max_file_bytes > 0 ? o->max_file_bytes : (4 << 20);
    enum sd_status r = read_text_file(f->path, cap, &text, &len, err);
    if (r)
        return r;
    int64_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    if (len && text[len - 1] != '\n')
        lines++;
    if ((r = sd_store_begin(s, err)))
        goto out;
    const char *base = strrchr(f->path, '/');
    struct sd_doc_new dn = {.path = f->path, .root = f->root, .kind = sd_file_kind_str((enum sd_file_kind)f->kind),
                            .lang = f->lang, .title = base ? base + 1 : f->path, .sha256 = sha, .size = f->size,
                            .mtime_ns = f->mtime_ns, .n_lines = lines};
    if ((r = sd_store_doc_replace(s, &dn, &sc->doc_id, err)) ||
        (r = sd_split_lines(text, len, f->kind, add_span, sc, err)) ||
        (r = sd_store_doc_totals(s, sc->doc_id, sc->n_spans, sc->n_chars, sc->tokens_known ? sc->n_tokens : -1,
                                 err)) ||
        (r = sd_store_commit(s, err)))
        sd_store_rollback(s);
out:
    free(text);
    return r;
}

static int is_store_error(enum sd_status r)
{
    return r == SD_ERR_NOMEM;
}

static int cmp_pstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Remove documents of root that are no longer in the tree.
static enum sd_status prune_root(struct sd_store *s, const char *root, const struct plan *p,
                                 const struct sd_ingest_opts *o, struct sd_ingest_stats *st, struct sd_err *err)
{
    char **keep = malloc((p->n + 1) * sizeof *keep);
    if (!keep)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    size_t nk = 0;
    for (size_t i = 0; i < p->n; i++)
        if (p->f[i].root && !strcmp(p->f[i].root, root))
            keep[nk++] = p->f[i].path;
    qsort(keep, nk, sizeof *keep, cmp_pstr);
    size_t removed = 0;
    enum sd_status r = sd_store_begin(s, err);
    if (!r) {
        r = sd_store_remove_missing(s, root, keep, nk, p->skip_prefixes, p->n_skip, &removed, err);
        if (!r)
            r = sd_store_commit(s, err);
        if (r)
            sd_store_rollback(s);
    }
    free(keep);
    if (!r && removed) {
        st->removed += removed;
        char msg[96];
        snprintf(msg, sizeof msg, "%zu document(s) whose files are gone", removed);
        emit(o, SD_INGEST_REMOVED, root, msg, 0, 0, 0, 0);
    }
    return r;
}

enum sd_status sd_ingest(struct sd_store *s, char *const *paths, size_t n_paths, const struct sd_ingest_opts *opts,
                         struct sd_ingest_stats *stats, struct sd_err *err)
{
    struct sd_ingest_opts o = opts ? *opts : (struct sd_ingest_opts){0};
    memset(stats, 0, sizeof *stats);
    struct plan p = {.o = &o, .st = stats};
    char **roots = calloc(n_paths + 1, sizeof *roots);
    size_t n_roots = 0;
    enum sd_status r = SD_OK;
    char *joined = NULL;
    if (!roots) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    // Plan.
    size_t jl = 1;
    for (size_t i = 0; i < n_paths; i++)
        jl += strlen(paths[i]) + 1;
    if (!(joined = malloc(jl + PATH_MAX * n_paths))) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    joined[0] = 0;
    for (size_t i = 0; i < n_paths; i++) {
        char *abs = realpath(paths[i], NULL);
        struct stat st;
        if (!abs || stat(abs, &st) != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s (check the path)", strerror(errno));
            stats->failed++;
            emit(&o, SD_INGEST_FAILED, paths[i], msg, 0, 0, 0, 0);
            free(abs);
            continue;
        }
        strcat(joined, abs);
        strcat(joined, "\n");
        if (S_ISDIR(st.st_mode)) {
            p.root = abs;
            struct sd_walk_opts wo = {.max_file_bytes = o.max_file_bytes};
            struct sd_err werr;
            size_t before_fail = stats->failed;
            if (sd_walk(abs, &wo, on_walk_file, on_walk_skip, &p, &werr)) {
                stats->failed++;
                emit(&o, SD_INGEST_FAILED, paths[i], werr.msg, 0, 0, 0, 0);
                free(abs);
                continue;
            }
            (void)before_fail;
            roots[n_roots++] = abs;
            p.root = NULL;
        } else if (S_ISREG(st.st_mode)) {
            const char *lang;
            enum sd_file_kind kind = sd_file_kind_from_path(abs, &lang);
            int64_t cap = o.max_file_bytes > 0 ? o.max_file_bytes : (4 << 20);
            int bin = kind == SD_FILE_PDF ? 0 : sd_file_is_binary(abs);
            if (kind != SD_FILE_PDF && bin == 1) {
                // a file named on the command line that starts like a PDF is one, whatever its name
                char head[8] = {0};
                FILE *fp = fopen(abs, "rb");
                if (fp) {
                    size_t got = fread(head, 1, 5, fp);
                    (void)got;
                    fclose(fp);
                }
                if (!memcmp(head, "%PDF-", 5))
                    kind = SD_FILE_PDF, bin = 0;
            }
            // A file named on its own was asked for: not ingesting it is a failure (inside a tree, a skip).
            if (bin == 1) {
                stats->failed++;
                emit(&o, SD_INGEST_FAILED, abs, "binary file (contains NUL bytes): not a PDF or a text file", 0, 0,
                     0, 0);
            } else if (kind != SD_FILE_PDF && st.st_size > cap) {
                char msg[160];
                snprintf(msg, sizeof msg, "%lld bytes, larger than the %lld-byte cap (raise it with --max-file-size)",
                         (long long)st.st_size, (long long)cap);
                stats->failed++;
                emit(&o, SD_INGEST_FAILED, abs, msg, 0, 0, 0, 0);
            } else
                plan_add(&p, abs, &st, kind, lang);
            free(abs);
        } else {
            stats->failed++;
            emit(&o, SD_INGEST_FAILED, abs, "not a regular file or directory", 0, 0, 0, 0);
            free(abs);
        }
        if (p.oom) {
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory while planning");
            goto out;
        }
    }
    int64_t bytes_total = 0, bytes_done = 0;
    for (size_t i = 0; i < p.n; i++)
        bytes_total += p.f[i].size;
    int64_t run_id = 0, resumed_from = 0;
    if ((r = sd_store_run_begin(s, joined, &run_id, &resumed_from, err)))
        goto out;
    stats->resumed = resumed_from != 0;
    emit(&o, SD_INGEST_PLANNED, NULL, stats->resumed ? "resuming an interrupted ingest" : NULL, 0, p.n, 0,
         bytes_total);

    // Ingest.
    int ocr_cannot_run = 0;
    for (size_t i = 0; i < p.n; i++) {
        if (o.cancel && *o.cancel) {
            stats->cancelled = 1;
            break;
        }
        const struct plan_file *f = &p.f[i];
        stats->files++;
        bytes_done += f->size;
        struct sd_doc_state ds;
        struct sd_err ferr;
        sd_err_clear(&ferr);
        if ((r = sd_store_doc_state(s, f->path, &ds, err)))
            goto out;
        // An unchanged PDF with pages that still need OCR is read again while OCR may run.
        int reocr_ok = ds.needs_ocr && f->kind == SD_FILE_PDF && !o.no_ocr && sd_ocr_built() && !ocr_cannot_run;
        int reocr = 0;
        if (ds.found && ds.size == f->size && ds.mtime_ns == f->mtime_ns) {
            if (!reocr_ok) {
                stats->unchanged++;
                emit(&o, SD_INGEST_UNCHANGED, f->path, NULL, i + 1, p.n, bytes_done, bytes_total);
                continue;
            }
            reocr = 1;
        }
        char sha[65];
        if (sd_file_sha256(f->path, sha, &ferr)) {
            stats->failed++;
            emit(&o, SD_INGEST_FAILED, f->path, ferr.msg, i + 1, p.n, bytes_done, bytes_total);
            continue;
        }
        if (ds.found && strcmp(ds.sha256, sha))
            reocr = 0; // same size and time but other content: a real update
        if (ds.found && !strcmp(ds.sha256, sha)) {
            if ((r = sd_store_doc_touch(s, ds.id, f->mtime_ns, err)))
                goto out;
            if (!reocr_ok) {
                stats->unchanged++;
                emit(&o, SD_INGEST_UNCHANGED, f->path, NULL, i + 1, p.n, bytes_done, bytes_total);
                continue;
            }
            reocr = 1;
        }
        struct span_ctx sc = {.s = s, .o = &o, .tokens_known = o.count_tokens != NULL}; // no counter: unknown, not 0
        struct doc_result dr = {0};
        struct page_progress pp = {&o, f->path, i + 1, p.n, bytes_done, bytes_total};
        enum sd_status fr = f->kind == SD_FILE_PDF ? ingest_pdf(s, f, sha, &o, &sc, &pp, reocr, &dr, &ferr)
                                                   : ingest_text(s, f, sha, &o, &sc, &ferr);
        if (!fr && dr.ocr_cannot_run)
            ocr_cannot_run = 1; // learnt once per run: the language data is missing or the build lacks Tesseract
        if (!fr && dr.kept) {
            stats->unchanged++;
            emit(&o, SD_INGEST_UNCHANGED, f->path, NULL, i + 1, p.n, bytes_done, bytes_total);
            continue;
        }
        if (fr) {
            if (is_store_error(fr)) {
                r = sd_err_set(err, fr, "%s", ferr.msg);
                goto out;
            }
            stats->failed++;
            emit(&o, SD_INGEST_FAILED, f->path, ferr.msg, i + 1, p.n, bytes_done, bytes_total);
            continue;
        }
        stats->pages += dr.pages;
        stats->ocr_pages += dr.ocr_pages;
        stats->ocr_read_pages += dr.ocr_read;
        stats->no_text_pages += dr.no_text;
        stats->failed_pages += dr.failed_pages;
        stats->spans += sc.n_spans;
        stats->chars += sc.n_chars;
        stats->tokens += sc.tokens_known ? sc.n_tokens : 0;
        stats->bytes += f->size;
        if (ds.found)
            stats->updated++;
        else
            stats->added++;
        emit(&o, ds.found ? SD_INGEST_UPDATED : SD_INGEST_ADDED, f->path, NULL, i + 1, p.n, bytes_done,
             bytes_total);
        if (dr.ocr_pages || dr.failed_pages || dr.no_text) {
            char msg[2400];
            int m = 0;
            if (dr.ocr_pages)
                m += snprintf(msg + m, sizeof msg - (size_t)m,
                              "%lld of %lld page(s) have no usable text layer and need OCR: %s (%s)",
                              (long long)dr.ocr_pages, (long long)dr.pages, dr.ocr_list,
                              o.no_ocr          ? "OCR is off"
                              : dr.ocr_error[0] ? dr.ocr_error
                                                : "OCR did not run");
            if (dr.no_text)
                m += snprintf(msg + m, sizeof msg - (size_t)m, "%s%lld page(s) have no text, not even by OCR: %s",
                              m ? "; " : "", (long long)dr.no_text, dr.no_text_list);
            if (dr.failed_pages)
                snprintf(msg + m, sizeof msg - (size_t)m, "%s%lld page(s) failed to extract: %s", m ? "; " : "",
                         (long long)dr.failed_pages, dr.failed_list);
            stats->warnings++;
            emit(&o, SD_INGEST_WARNING, f->path, msg, i + 1, p.n, bytes_done, bytes_total);
        }
    }
    // Prune deleted files (only for trees walked completely).
    if (!stats->cancelled)
        for (size_t k = 0; k < n_roots; k++)
            if ((r = prune_root(s, roots[k], &p, &o, stats, err)))
                goto out;
    if (!stats->cancelled) {
        char summary[256];
        snprintf(summary, sizeof summary, "files=%zu added=%zu updated=%zu unchanged=%zu failed=%zu removed=%zu",
                 stats->files, stats->added, stats->updated, stats->unchanged, stats->failed, stats->removed);
        r = sd_store_run_finish(s, run_id, summary, err);
    }
out:
    for (size_t i = 0; i < p.n; i++) {
        free(p.f[i].path);
        free(p.f[i].root);
    }
    free(p.f);
    for (size_t i = 0; i < p.n_skip; i++)
        free(p.skip_prefixes[i]);
    free(p.skip_prefixes);
    for (size_t i = 0; i < n_roots; i++)
        free(roots[i]);
    free(roots);
    free(joined);
    return r;
}
