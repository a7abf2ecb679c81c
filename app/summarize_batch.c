// summarize_batch.c: a batch of summaries (see summarize.h, sd_summarize_batch): ingest the paths
// through the service, list their documents, skip those the output directory's manifest already has
// with the same content hash, model fingerprint and settings, summarize the rest one by one, and write
// each Markdown file, the manifest and index.md atomically (temp file, fsync, rename, fsync directory).
#include "summarize.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sd_clock.h"

static const char *rel_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static int cancelled(const struct sd_summ_events *ev)
{
    return ev && ev->should_cancel && ev->should_cancel(ev->user);
}

static void progress(const struct sd_summ_events *ev, const char *stage, int64_t done, int64_t total)
{
    if (ev && ev->on_progress)
        ev->on_progress(ev->user, stage, done, total);
}

// Write data to dir/name atomically: unique temp file, fsync, rename, fsync the directory.
static enum sd_status write_atomic(const char *dir, const char *name, const char *data, size_t len, struct sd_err *err)
{
    char tmp[PATH_MAX + 300], dst[PATH_MAX + 300];
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%ld.XXXXXX", dir, name, (long)getpid());
    int fd = mkstemp(tmp);
    if (fd < 0)
        return sd_err_set(err, SD_ERR_IO, "cannot create a file in %s: %s", dir, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return sd_err_set(err, SD_ERR_IO, "cannot write %s: %s", dst, strerror(e));
        }
        off += (size_t)w;
    }
    if (fchmod(fd, 0644) || fsync(fd)) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return sd_err_set(err, SD_ERR_IO, "cannot write %s: %s", dst, strerror(e));
    }
    close(fd);
    if (rename(tmp, dst)) {
        int e = errno;
        unlink(tmp);
        return sd_err_set(err, SD_ERR_IO, "cannot replace %s: %s", dst, strerror(e));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return SD_OK;
}

static enum sd_status mkdir_p(const char *path, struct sd_err *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return sd_err_set(err, SD_ERR_ARG, "output path too long");
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) && errno != EEXIST)
                return sd_err_set(err, SD_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return sd_err_set(err, SD_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) || !S_ISDIR(st.st_mode))
        return sd_err_set(err, SD_ERR_IO, "%s is not a directory", buf);
    return SD_OK;
}

// File name of a document's summary: its base name (safe characters) and a hash of the full path.
static void summary_file_name(const char *path, char *buf, size_t cap)
{
    uint64_t h = 1469598103934665603ull; // FNV-1a 64
    for (const char *p = path; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    const char *base = rel_name(path);
    char safe[80];
    size_t n = 0;
    for (const char *p = base; *p && n < sizeof safe - 1; p++)
        safe[n++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
                            *p == '-' || *p == '_'
                        ? *p
                        : '_';
    safe[n] = 0;
    snprintf(buf, cap, "%s-%08x.md", n ? safe : "document", (unsigned)(h ^ (h >> 32)));
}

struct batch {
    struct sd_summarizer *s;
    const struct sd_summ_batch_opts *o;
    const struct sd_summ_events *ev;
    char out_dir[PATH_MAX];
    json_object *manifest; // {"version", "documents": {path: record}}
    json_object *docs;     // borrowed from manifest
    json_object *failed;   // [{document, error}] of this run
    int64_t tokens_total;  // of the batch's documents
};

static json_object *jstr(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

static json_object *record_json(struct batch *b, const struct sd_summary *r, const char *file, int words)
{
    struct sd_summarizer *s = b->s;
    json_object *j = json_object_new_object();
    json_object_object_add(j, "document", jstr(r->path));
    json_object_object_add(j, "title", jstr(r->title));
    json_object_object_add(j, "kind", jstr(r->kind));
    json_object_object_add(j, "sha256", jstr(r->sha256));
    json_object_object_add(j, "pages", json_object_new_int64(r->n_pages));
    json_object_object_add(j, "lines", json_object_new_int64(r->n_lines));
    json_object_object_add(j, "summary", jstr(r->text));
    json_object *parts = json_object_new_array();
    for (size_t i = 0; i < r->n_parts; i++) {
        const struct sd_summary_part *p = &r->parts[i];
        json_object *pj = json_object_new_object();
        json_object_object_add(pj, "level", json_object_new_int(p->level));
        json_object_object_add(pj, "range", jstr(p->range));
        if (p->page_first > 0) {
            json_object *a = json_object_new_array();
            json_object_array_add(a, json_object_new_int(p->page_first));
            json_object_array_add(a, json_object_new_int(p->page_last));
            json_object_object_add(pj, "pages", a);
        }
        if (p->line_first > 0) {
            json_object *a = json_object_new_array();
            json_object_array_add(a, json_object_new_int(p->line_first));
            json_object_array_add(a, json_object_new_int(p->line_last));
            json_object_object_add(pj, "lines", a);
        }
        json_object_object_add(pj, "summary", jstr(p->text ? p->text : ""));
        json_object_array_add(parts, pj);
    }
    json_object_object_add(j, "parts", parts);
    json_object_object_add(j, "contexts", json_object_new_int(r->n_contexts));
    json_object_object_add(j, "depth", json_object_new_int(r->depth));
    json_object_object_add(j, "model", jstr(sd_qa_model_name(sd_summarizer_qa(s))));
    json_object_object_add(j, "model_dir", jstr(sd_qa_model_dir(sd_summarizer_qa(s))));
    json_object_object_add(j, "model_fingerprint", jstr(sd_summarizer_fingerprint(s)));
    json_object_object_add(j, "style", jstr(sd_summ_style_name(b->o->summ.style)));
    json_object_object_add(j, "max_words", json_object_new_int(words));
    json_object_object_add(j, "fan_in", json_object_new_int(b->o->summ.fan_in));
    json_object_object_add(j, "ctx", json_object_new_int(sd_summarizer_n_ctx(s)));
    json_object_object_add(j, "prompt_version", json_object_new_int(SD_SUMM_PROMPT_VERSION));
    json_object_object_add(j, "file", jstr(file));
    json_object *t = json_object_new_object();
    json_object_object_add(t, "total_s", json_object_new_double(r->total_s));
    json_object_object_add(t, "restore_s", json_object_new_double(r->restore_s));
    json_object_object_add(t, "prefill_s", json_object_new_double(r->prefill_s));
    json_object_object_add(t, "generate_s", json_object_new_double(r->generate_s));
    json_object_object_add(j, "timings", t);
    json_object *c = json_object_new_object();
    json_object_object_add(c, "model_calls", json_object_new_int(r->n_calls));
    json_object_object_add(c, "tokens_prompt", json_object_new_int64(r->tokens_prompt));
    json_object_object_add(c, "tokens_reused", json_object_new_int64(r->tokens_reused));
    json_object_object_add(c, "tokens_prefilled", json_object_new_int64(r->tokens_prefilled));
    json_object_object_add(c, "tokens_generated", json_object_new_int64(r->tokens_generated));
    json_object_object_add(
        c, "reuse_rate",
        json_object_new_double(r->tokens_prompt ? (double)r->tokens_reused / (double)r->tokens_prompt : 0));
    json_object_object_add(c, "blocks_stored", json_object_new_int(r->blocks_stored));
    json_object_object_add(c, "contexts_as_ask", json_object_new_boolean(r->ask_packing));
    json_object_object_add(c, "blocks_dropped", json_object_new_int(r->blocks_dropped));
    json_object_object_add(j, "cache", c);
    json_object_object_add(j, "created_at", json_object_new_int64((int64_t)time(NULL)));
    return j;
}

// A growable string for Markdown.
struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + (size_t)k + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static const char *jget_str(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                             : NULL;
}

static int64_t jget_int(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

// Text as a Markdown paragraph: empty output is said so.
static void md_text(struct sbuf *b, const char *t)
{
    if (!t || !*t)
        sb_printf(b, "_(the model produced no text for this part)_\n");
    else
        sb_printf(b, "%s\n", t);
}

static char *markdown_doc(struct batch *b, json_object *rec)
{
    struct sbuf sb = {0};
    const char *path = jget_str(rec, "document"), *title = jget_str(rec, "title");
    sb_printf(&sb, "# %s\n\n", title ? title : rel_name(path ? path : "?"));
    sb_printf(&sb, "- Document: `%s`\n", path ? path : "");
    if (jget_int(rec, "pages") > 0)
        sb_printf(&sb, "- Pages: %lld\n", (long long)jget_int(rec, "pages"));
    else
        sb_printf(&sb, "- Lines: %lld\n", (long long)jget_int(rec, "lines"));
    const char *fp = jget_str(rec, "model_fingerprint");
    sb_printf(&sb, "- Model: %s (fingerprint %.12s), style %s, at most %lld words per summary\n",
              jget_str(rec, "model"), fp ? fp : "", jget_str(rec, "style"), (long long)jget_int(rec, "max_words"));
    sb_printf(&sb, "- Contexts: %lld; summary levels above them: %lld\n", (long long)jget_int(rec, "contexts"),
              (long long)jget_int(rec, "depth"));
    if (sd_summarizer_model_note(b->s))
        sb_printf(&sb, "\n> Note: %s\n", sd_summarizer_model_note(b->s));
    sb_printf(&sb, "\n## Summary\n\n");
    md_text(&sb, jget_str(rec, "summary"));
    json_object *parts;
    if (json_object_object_get_ex(rec, "parts", &parts) && json_object_array_length(parts) > 1) {
        sb_printf(&sb, "\n## Parts\n\nEach part says which pages or lines it summarizes; level 0 parts summarize "
                       "the document text, higher levels combine the parts below them.\n");
        for (size_t i = 0; i < json_object_array_length(parts); i++) {
            json_object *p = json_object_array_get_idx(parts, i);
            sb_printf(&sb, "\n### Level %lld: %s\n\n", (long long)jget_int(p, "level"), jget_str(p, "range"));
            md_text(&sb, jget_str(p, "summary"));
        }
    }
    if (sb.oom) {
        free(sb.p);
        return NULL;
    }
    return sb.p;
}

struct idx_row {
    const char *path;
    json_object *rec;
};

static int idx_cmp(const void *a, const void *b)
{
    return strcmp(((const struct idx_row *)a)->path, ((const struct idx_row *)b)->path);
}

// index.md: every document summarized in this directory, then the failures of the last run.
static enum sd_status write_index(struct batch *b, struct sd_err *err)
{
    size_t n = 0, cap = 16;
    struct idx_row *rows = malloc(cap * sizeof *rows);
    if (!rows)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    json_object_object_foreach(b->docs, key, val)
    {
        if (n == cap) {
            cap *= 2;
            struct idx_row *nr = realloc(rows, cap * sizeof *rows);
            if (!nr) {
                free(rows);
                return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            }
            rows = nr;
        }
        rows[n++] = (struct idx_row){key, val};
    }
    qsort(rows, n, sizeof *rows, idx_cmp);
    struct sbuf sb = {0};
    sb_printf(&sb,
              "# Summaries\n\n%zu document(s). Written by `sparsedoc summarize`; each file names the pages or "
              "lines every part comes from.\n",
              n);
    if (sd_summarizer_model_note(b->s))
        sb_printf(&sb, "\n> Note: %s\n", sd_summarizer_model_note(b->s));
    sb_printf(&sb, "\n| Document | Extent | Model | Style | Summary |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        json_object *r = rows[i].rec;
        const char *file = jget_str(r, "file"), *summ = jget_str(r, "summary");
        char extent[48];
        if (jget_int(r, "pages") > 0)
            snprintf(extent, sizeof extent, "%lld pages", (long long)jget_int(r, "pages"));
        else
            snprintf(extent, sizeof extent, "%lld lines", (long long)jget_int(r, "lines"));
        char first[160];
        size_t k = 0;
        for (const char *p = summ ? summ : ""; *p && k < sizeof first - 4; p++)
            first[k++] = *p == '\n' || *p == '|' ? ' ' : *p;
        if (summ && strlen(summ) > k)
            memcpy(first + k, "...", 3), k += 3;
        first[k] = 0;
        sb_printf(&sb, "| [%s](%s) | %s | %s | %s | %s |\n", rel_name(rows[i].path), file ? rel_name(file) : "", extent,
                  jget_str(r, "model"), jget_str(r, "style"), k ? first : "(no text)");
    }
    if (json_object_array_length(b->failed)) {
        sb_printf(&sb, "\n## Not summarized in the last run\n\n");
        for (size_t i = 0; i < json_object_array_length(b->failed); i++) {
            json_object *f = json_object_array_get_idx(b->failed, i);
            sb_printf(&sb, "- `%s`: %s\n", jget_str(f, "document"), jget_str(f, "error"));
        }
    }
    free(rows);
    if (sb.oom) {
        free(sb.p);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    }
    enum sd_status r = write_atomic(b->out_dir, SD_SUMM_INDEX, sb.p, sb.n, err);
    free(sb.p);
    return r;
}

static enum sd_status write_manifest(struct batch *b, struct sd_err *err)
{
    const char *s =
        json_object_to_json_string_ext(b->manifest, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    return write_atomic(b->out_dir, SD_SUMM_MANIFEST, s, strlen(s), err);
}

static enum sd_status load_manifest(struct batch *b, struct sd_err *err)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", b->out_dir, SD_SUMM_MANIFEST);
    if (access(path, F_OK) == 0) {
        json_object *m = json_object_from_file(path);
        json_object *docs;
        if (!m || !json_object_object_get_ex(m, "documents", &docs) || !json_object_is_type(docs, json_type_object)) {
            json_object_put(m);
            return sd_err_set(err, SD_ERR_FORMAT,
                              "%s is not a summary manifest; move it away or choose another --out directory", path);
        }
        b->manifest = m;
        b->docs = docs;
        return SD_OK;
    }
    b->manifest = json_object_new_object();
    b->docs = json_object_new_object();
    json_object_object_add(b->manifest, "version", json_object_new_int(1));
    json_object_object_add(b->manifest, "documents", b->docs);
    return SD_OK;
}

// ---- collecting the batch's documents ----

struct doc_ref {
    int64_t id;
    char *path;
    int64_t tokens;
    char sha256[65];
};

struct doc_list {
    struct doc_ref *d;
    size_t n, cap;
    const char *prefix; // for directory scans: "dir/"
    size_t prefix_len;
    int oom;
};

static void list_add(struct doc_list *l, int64_t id, const char *path)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->d[i].id == id)
            return;
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 16;
        void *n = realloc(l->d, c * sizeof *l->d);
        if (!n) {
            l->oom = 1;
            return;
        }
        l->d = n;
        l->cap = c;
    }
    memset(&l->d[l->n], 0, sizeof l->d[l->n]);
    l->d[l->n].id = id;
    if (!(l->d[l->n].path = strdup(path))) {
        l->oom = 1;
        return;
    }
    l->n++;
}

static int list_dir_doc(void *user, const struct sd_doc *d)
{
    struct doc_list *l = user;
    if (!strncmp(d->path, l->prefix, l->prefix_len))
        list_add(l, d->id, d->path);
    return l->oom;
}

static int ref_cmp(const void *a, const void *b)
{
    return strcmp(((const struct doc_ref *)a)->path, ((const struct doc_ref *)b)->path);
}

// Ingest events: forwarded, and failed/skipped files remembered (they are failures of the batch).
struct ingest_watch {
    const struct sd_summ_events *ev;
    json_object *failed;  // path -> reason: files that could not be ingested
    json_object *skipped; // path -> reason: files not ingested on purpose (binary, too large)
};

static void on_ingest_ev(void *user, const struct sd_ingest_event *e)
{
    struct ingest_watch *w = user;
    if ((e->kind == SD_INGEST_FAILED || e->kind == SD_INGEST_SKIPPED) && e->path)
        json_object_object_add(e->kind == SD_INGEST_FAILED ? w->failed : w->skipped, e->path,
                               json_object_new_string(e->msg ? e->msg : "could not be ingested"));
    if (w->ev && w->ev->on_ingest)
        w->ev->on_ingest(w->ev->user, e);
}

static void on_ingest_progress(void *user, const char *stage, int64_t done, int64_t total)
{
    struct ingest_watch *w = user;
    progress(w->ev, stage, done, total);
}

static int ingest_cancel(void *user)
{
    struct ingest_watch *w = user;
    return cancelled(w->ev);
}

static void emit(struct batch *b, enum sd_summ_doc_kind kind, const char *path, size_t index, size_t total,
                 int64_t tokens, const struct sd_summary *sum, const char *file, const char *json, const char *msg)
{
    if (!b->ev || !b->ev->on_doc)
        return;
    struct sd_summ_doc_event e = {.kind = kind,
                                  .path = path,
                                  .index = index,
                                  .total = total,
                                  .tokens = tokens,
                                  .tokens_total = b->tokens_total,
                                  .summary = sum,
                                  .file = file,
                                  .json = json,
                                  .msg = msg};
    b->ev->on_doc(b->ev->user, &e);
}

static void fail_doc(struct batch *b, const char *path, size_t index, size_t total, int64_t tokens, const char *msg,
                     struct sd_summ_batch_stats *st)
{
    size_t pl = strlen(path);
    if (!strncmp(msg, path, pl) && msg[pl] == ':' && msg[pl + 1] == ' ') // ingest messages lead with the path
        msg += pl + 2;
    json_object *f = json_object_new_object();
    json_object_object_add(f, "document", json_object_new_string(path));
    json_object_object_add(f, "error", json_object_new_string(msg));
    json_object_array_add(b->failed, f);
    st->failed++;
    emit(b, SD_SUMM_DOC_FAILED, path, index, total, tokens, NULL, NULL, NULL, msg);
}

// Is rec a finished summary of this content with these settings, whose file still exists?
static int record_current(struct batch *b, json_object *rec, const char *sha, int words)
{
    const char *file = jget_str(rec, "file"), *rsha = jget_str(rec, "sha256"), *fp = jget_str(rec, "model_fingerprint"),
               *style = jget_str(rec, "style");
    return file && rsha && fp && style && !strcmp(rsha, sha) && !strcmp(fp, sd_summarizer_fingerprint(b->s)) &&
           !strcmp(style, sd_summ_style_name(b->o->summ.style)) && jget_int(rec, "max_words") == words &&
           jget_int(rec, "prompt_version") == SD_SUMM_PROMPT_VERSION &&
           jget_int(rec, "ctx") == sd_summarizer_n_ctx(b->s) && jget_int(rec, "fan_in") == b->o->summ.fan_in &&
           access(file, R_OK) == 0;
}

static int ref_info(void *user, const struct sd_doc *d)
{
    struct doc_ref *r = user;
    snprintf(r->sha256, sizeof r->sha256, "%s", d->sha256 ? d->sha256 : "");
    r->tokens = d->n_tokens > 0 ? d->n_tokens : 0;
    return 0;
}

enum sd_status sd_summarize_batch(struct sd_summarizer *s, char *const *paths, size_t n_paths,
                                  const struct sd_summ_batch_opts *opts, const struct sd_summ_events *ev,
                                  struct sd_summ_batch_stats *st, struct sd_err *err)
{
    struct batch b = {.s = s, .o = opts, .ev = ev};
    struct doc_list l = {0};
    struct ingest_watch w = {.ev = ev, .failed = json_object_new_object(), .skipped = json_object_new_object()};
    b.failed = json_object_new_array();
    memset(st, 0, sizeof *st);
    double t0 = sd_now_s();
    int words = sd_summ_opts_words(&opts->summ);
    const char *dir = opts->out_dir ? opts->out_dir : "summaries";
    enum sd_status r = mkdir_p(dir, err);
    if (r)
        goto out;
    if (!realpath(dir, b.out_dir)) {
        r = sd_err_set(err, SD_ERR_IO, "cannot resolve %s: %s", dir, strerror(errno));
        goto out;
    }
    if ((r = load_manifest(&b, err)))
        goto out;
    // Ingest (unchanged files are skipped quickly by size and mtime).
    struct sd_qa_events qev = {
        .user = &w, .on_progress = on_ingest_progress, .on_ingest = on_ingest_ev, .should_cancel = ingest_cancel};
    struct sd_ingest_stats ist;
    if ((r = sd_qa_ingest(sd_summarizer_qa(s), paths, n_paths, opts->password, &qev, &ist, err)))
        goto out;
    if (ist.cancelled || cancelled(ev)) {
        st->cancelled = 1;
        r = sd_err_set(err, SD_ERR_ARG, "cancelled");
        goto out;
    }
    // The documents of each path, in path order; unusable paths are failures of the batch.
    struct {
        char *path, *msg;
    } *bad = NULL;
    size_t n_bad = 0;
    for (size_t i = 0; i < n_paths; i++) {
        char *abs = realpath(paths[i], NULL);
        struct stat sb;
        const char *why = NULL;
        char msgbuf[768];
        if (!abs || stat(abs, &sb)) {
            snprintf(msgbuf, sizeof msgbuf, "%s: %s", paths[i], strerror(errno));
            why = msgbuf;
        } else if (S_ISDIR(sb.st_mode)) {
            char prefix[PATH_MAX + 1];
            snprintf(prefix, sizeof prefix, "%s/", abs);
            l.prefix = prefix;
            l.prefix_len = strlen(prefix);
            if ((r = sd_store_docs_foreach(sd_qa_store(sd_summarizer_qa(s)), list_dir_doc, &l, err))) {
                free(abs);
                free(bad);
                goto out;
            }
        } else {
            const char *reason = jget_str(w.failed, abs);
            if (!reason)
                reason = jget_str(w.skipped, abs);
            struct sd_doc_state ds;
            if (reason) {
                snprintf(msgbuf, sizeof msgbuf, "%s", reason);
                why = msgbuf;
            } else if ((r = sd_store_doc_state(sd_qa_store(sd_summarizer_qa(s)), abs, &ds, err))) {
                free(abs);
                free(bad);
                goto out;
            } else if (!ds.found) {
                snprintf(msgbuf, sizeof msgbuf, "%s was not ingested", abs);
                why = msgbuf;
            } else
                list_add(&l, ds.id, abs);
        }
        if (why) {
            void *nb = realloc(bad, (n_bad + 1) * sizeof *bad);
            if (nb) {
                bad = nb;
                bad[n_bad].path = strdup(abs ? abs : paths[i]);
                bad[n_bad].msg = strdup(why);
                n_bad++;
            }
        }
        free(abs);
    }
    // Files inside directories that failed to ingest are failures too (files skipped on purpose are not).
    json_object_object_foreach(w.failed, bpath, bmsg)
    {
        int listed = 0;
        for (size_t k = 0; k < n_bad; k++)
            listed |= bad[k].path && !strcmp(bad[k].path, bpath);
        const char *m = json_object_get_string(bmsg);
        if (!listed) {
            void *nb = realloc(bad, (n_bad + 1) * sizeof *bad);
            if (nb) {
                bad = nb;
                bad[n_bad].path = strdup(bpath);
                bad[n_bad].msg = strdup(m ? m : "could not be ingested");
                n_bad++;
            }
        }
    }
    if (l.oom) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        for (size_t k = 0; k < n_bad; k++)
            free(bad[k].path), free(bad[k].msg);
        free(bad);
        goto out;
    }
    // A file whose new version failed to ingest is reported above; the store holds an older version.
    size_t kept = 0;
    for (size_t i = 0; i < l.n; i++)
        if (jget_str(w.failed, l.d[i].path))
            free(l.d[i].path);
        else
            l.d[kept++] = l.d[i];
    l.n = kept;
    qsort(l.d, l.n, sizeof *l.d, ref_cmp);
    size_t total = l.n + n_bad;
    st->documents = total;
    for (size_t i = 0; i < l.n; i++) {
        if ((r = sd_store_doc_get(sd_qa_store(sd_summarizer_qa(s)), l.d[i].id, ref_info, &l.d[i], err))) {
            for (size_t k = 0; k < n_bad; k++)
                free(bad[k].path), free(bad[k].msg);
            free(bad);
            goto out;
        }
        b.tokens_total += l.d[i].tokens;
    }
    for (size_t k = 0; k < n_bad; k++) {
        fail_doc(&b, bad[k].path ? bad[k].path : "?", k, total, 0, bad[k].msg ? bad[k].msg : "failed", st);
        free(bad[k].path);
        free(bad[k].msg);
    }
    free(bad);
    for (size_t i = 0; i < l.n; i++) {
        size_t index = n_bad + i;
        if (cancelled(ev)) {
            st->cancelled = 1;
            break;
        }
        const char *path = l.d[i].path;
        int64_t toks = l.d[i].tokens;
        struct sd_err e2;
        json_object *rec;
        if (!opts->force && json_object_object_get_ex(b.docs, path, &rec) &&
            record_current(&b, rec, l.d[i].sha256, words)) {
            st->skipped++;
            emit(&b, SD_SUMM_DOC_SKIPPED, path, index, total, toks, NULL, jget_str(rec, "file"),
                 json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), NULL);
            continue;
        }
        emit(&b, SD_SUMM_DOC_START, path, index, total, toks, NULL, NULL, NULL, NULL);
        struct sd_summary sum;
        enum sd_status dr = sd_summarize_doc(s, l.d[i].id, &opts->summ, ev, &sum, &e2);
        if (dr) {
            if (cancelled(ev)) {
                st->cancelled = 1;
                break;
            }
            fail_doc(&b, path, index, total, toks, e2.msg, st);
            continue;
        }
        char name[128], file[PATH_MAX + 160];
        summary_file_name(path, name, sizeof name);
        snprintf(file, sizeof file, "%s/%s", b.out_dir, name);
        json_object *nrec = record_json(&b, &sum, file, words);
        char *md = markdown_doc(&b, nrec);
        // Markdown first, then the manifest: a crash in between only redoes this document.
        if (!md)
            dr = sd_err_set(&e2, SD_ERR_NOMEM, "out of memory");
        else if (!(dr = write_atomic(b.out_dir, name, md, strlen(md), &e2))) {
            json_object_object_add(b.docs, path, json_object_get(nrec));
            dr = write_manifest(&b, &e2);
        }
        free(md);
        if (dr) { // the output directory fails: every later document would too
            json_object_put(nrec);
            sd_summary_free(&sum);
            r = sd_err_set(err, dr, "%s", e2.msg);
            goto out;
        }
        st->done++;
        st->tokens_prompt += sum.tokens_prompt;
        st->tokens_reused += sum.tokens_reused;
        st->tokens_prefilled += sum.tokens_prefilled;
        st->tokens_generated += sum.tokens_generated;
        emit(&b, SD_SUMM_DOC_DONE, path, index, total, toks, &sum, file,
             json_object_to_json_string_ext(nrec, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), NULL);
        json_object_put(nrec);
        sd_summary_free(&sum);
    }
    if ((r = write_index(&b, err)))
        goto out;
    if (st->cancelled)
        r = sd_err_set(err, SD_ERR_ARG, "cancelled");
out:
    st->seconds = sd_now_s() - t0;
    for (size_t i = 0; i < l.n; i++)
        free(l.d[i].path);
    free(l.d);
    json_object_put(w.failed);
    json_object_put(w.skipped);
    json_object_put(b.failed);
    json_object_put(b.manifest);
    return r;
}
