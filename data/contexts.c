// contexts.c: span packing into token-bounded contexts (see contexts.h).
#include "contexts.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct builder {
    const struct sd_contexts_opts *o;
    size_t n_max;
    struct sd_contexts *out;
    struct sd_context *cur; // NULL when no context is open
    size_t cap_tokens, cap_spans, cap_items;
    int32_t *sep;           // tokens of the "\n\n" that ends each span
    size_t n_sep;
    struct sd_err *err;
};

static enum sd_status ctx_open(struct builder *b)
{
    if (b->out->n == b->cap_items) {
        size_t cap = b->cap_items ? b->cap_items * 2 : 8;
        void *n = realloc(b->out->items, cap * sizeof *b->out->items);
        if (!n)
            return sd_err_set(b->err, SD_ERR_NOMEM, "out of memory building contexts");
        b->out->items = n;
        b->cap_items = cap;
    }
    b->cur = &b->out->items[b->out->n++];
    memset(b->cur, 0, sizeof *b->cur);
    b->cap_tokens = b->cap_spans = 0;
    return SD_OK;
}

static enum sd_status ctx_push_tokens(struct builder *b, const int32_t *t, size_t n)
{
    struct sd_context *c = b->cur;
    if (c->n_tokens + n > b->cap_tokens) {
        size_t cap = b->cap_tokens ? b->cap_tokens : 4096;
        while (cap < c->n_tokens + n)
            cap *= 2;
        void *nt = realloc(c->tokens, cap * sizeof *c->tokens);
        if (!nt)
            return sd_err_set(b->err, SD_ERR_NOMEM, "out of memory building contexts");
        c->tokens = nt;
        b->cap_tokens = cap;
    }
    memcpy(c->tokens + c->n_tokens, t, n * sizeof *t);
    c->n_tokens += n;
    b->out->total_tokens += n;
    return SD_OK;
}

static enum sd_status ctx_begin_span(struct builder *b, const struct sd_ctx_span *proto, int part)
{
    struct sd_context *c = b->cur;
    if (c->n_spans == b->cap_spans) {
        size_t cap = b->cap_spans ? b->cap_spans * 2 : 64;
        void *n = realloc(c->spans, cap * sizeof *c->spans);
        if (!n)
            return sd_err_set(b->err, SD_ERR_NOMEM, "out of memory building contexts");
        c->spans = n;
        b->cap_spans = cap;
    }
    struct sd_ctx_span *e = &c->spans[c->n_spans++];
    *e = *proto;
    e->part = part;
    e->tok_offset = (uint32_t)c->n_tokens;
    e->n_tokens = 0;
    return SD_OK;
}

static void ctx_end_span(struct builder *b)
{
    struct sd_context *c = b->cur;
    struct sd_ctx_span *e = &c->spans[c->n_spans - 1];
    e->n_tokens = (uint32_t)(c->n_tokens - e->tok_offset);
}

// A span's tokens as a list of pieces (each fits in N together with the header).
struct piece {
    int32_t *t;
    size_t n;
};
struct pieces {
    struct piece *p;
    size_t n, cap, total;
};

static enum sd_status pieces_add(struct pieces *ps, int32_t *t, size_t n, struct sd_err *err)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        void *nn = realloc(ps->p, cap * sizeof *ps->p);
        if (!nn) {
            free(t);
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory building contexts");
        }
        ps->p = nn;
        ps->cap = cap;
    }
    ps->p[ps->n++] = (struct piece){t, n};
    ps->total += n;
    return SD_OK;
}

static void pieces_free(struct pieces *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        free(ps->p[i].t);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

// Tokenize text as units split after each occurrence of sep ("\n\n" for paragraphs, "\n" for lines);
// units too large for limit are split further (lines, then fixed token chunks).
static enum sd_status tokenize_units(struct builder *b, const char *text, size_t len, int level, size_t limit,
                                     struct pieces *ps)
{
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        if (level == 0) { // paragraph: up to and including a run of blank lines
            while (e < len && !(text[e] == '\n' && e + 1 < len && text[e + 1] == '\n'))
                e++;
            while (e < len && text[e] == '\n')
                e++;
        } else {
            while (e < len && text[e] != '\n')
                e++;
            if (e < len)
                e++;
        }
        int32_t *t = NULL;
        size_t n = 0;
        enum sd_status r = b->o->tokenize(b->o->tok_user, text + i, e - i, &t, &n, b->err);
        if (r)
            return r;
        if (n <= limit) {
            if ((r = pieces_add(ps, t, n, b->err)))
                return r;
        } else if (level == 0) {
            free(t);
            if ((r = tokenize_units(b, text + i, e - i, 1, limit, ps)))
                return r;
        } else { // one line longer than the limit: cut its tokens
            for (size_t k = 0; k < n; k += limit) {
                size_t m = n - k < limit ? n - k : limit;
                int32_t *c = malloc(m * sizeof *c);
                if (!c) {
                    free(t);
                    return sd_err_set(b->err, SD_ERR_NOMEM, "out of memory building contexts");
                }
                memcpy(c, t + k, m * sizeof *c);
                if ((r = pieces_add(ps, c, m, b->err))) {
                    free(t);
                    return r;
                }
            }
            free(t);
        }
        i = e;
    }
    return SD_OK;
}

static enum sd_status pack_span(struct builder *b, const struct sd_ctx_span *proto, const char *header,
                                const char *text, size_t len)
{
    int32_t *ht = NULL;
    size_t hn = 0;
    struct pieces ps = {0};
    enum sd_status r = b->o->tokenize(b->o->tok_user, header, strlen(header), &ht, &hn, b->err);
    if (r)
        return r;
    if (hn + b->n_sep >= b->n_max / 2) {
        free(ht);
        return sd_err_set(b->err, SD_ERR_RANGE, "context size %zu tokens is too small for span headers; use more",
                          b->n_max);
    }
    size_t limit = b->n_max - hn - b->n_sep;
    if ((r = tokenize_units(b, text, len, 0, limit, &ps)))
        goto out;
    size_t total = hn + ps.total + b->n_sep;
    if (b->cur && b->cur->n_tokens + total > b->n_max)
        b->cur = NULL; // does not fit: the next context starts with this span
    if (!b->cur && (r = ctx_open(b)))
        goto out;
    int part = 0;
    if ((r = ctx_begin_span(b, proto, part)) || (r = ctx_push_tokens(b, ht, hn)))
        goto out;
    for (size_t i = 0; i < ps.n; i++) {
        if (b->cur->n_tokens + ps.p[i].n + b->n_sep > b->n_max) { // only when the span alone exceeds N
            ctx_end_span(b);
            if ((r = ctx_open(b)) || (r = ctx_begin_span(b, proto, ++part)) || (r = ctx_push_tokens(b, ht, hn)))
                goto out;
        }
        if ((r = ctx_push_tokens(b, ps.p[i].t, ps.p[i].n)))
            goto out;
    }
    if ((r = ctx_push_tokens(b, b->sep, b->n_sep)))
        goto out;
    ctx_end_span(b);
out:
    free(ht);
    pieces_free(&ps);
    return r;
}

// ---- SD_CTX_FORMAT_PASSAGES ----

// Append the tokens of text[0..len) to the piece being built (*cur, grown as needed).
static enum sd_status enc_append(struct builder *b, struct piece *cur, size_t *cap, const char *text, size_t len)
{
    int32_t *t = NULL;
    size_t n = 0;
    enum sd_status r = b->o->tokenize(b->o->tok_user, text, len, &t, &n, b->err);
    if (r)
        return r;
    if (cur->n + n > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < cur->n + n)
            c *= 2;
        void *nt = realloc(cur->t, c * sizeof *cur->t);
        if (!nt) {
            free(t);
            return sd_err_set(b->err, SD_ERR_NOMEM, "out of memory building contexts");
        }
        cur->t = nt;
        *cap = c;
    }
    if (n)
        memcpy(cur->t + cur->n, t, n * sizeof *t);
    cur->n += n;
    free(t);
    return SD_OK;
}

// Start a passage line: its marker's tokens.
static enum sd_status passage_begin(struct builder *b, struct piece *cur, size_t *cap, const char *marker)
{
    cur->t = NULL;
    cur->n = 0;
    *cap = 0;
    return enc_append(b, cur, cap, marker, strlen(marker));
}

// Finish a passage line ("\n") and move it into ps.
static enum sd_status passage_end(struct builder *b, struct piece *cur, struct pieces *ps)
{
    size_t cap = cur->n; // enc_append grows from the current length
    enum sd_status r = enc_append(b, cur, &cap, "\n", 1);
    if (r) {
        free(cur->t);
        return r;
    }
    r = pieces_add(ps, cur->t, cur->n, b->err);
    cur->t = NULL;
    return r;
}

// Page text -> passages of at most SD_CTX_PASSAGE_SENTENCES sentences. Sentences as docgen.split_sentences:
// paragraphs at blank lines, whitespace collapsed, a sentence ends at a word ending in . ? ! or : once it
// has 4 words, or at 60 words.
static enum sd_status passages_of_page(struct builder *b, const char *marker, const char *text, size_t len,
                                       struct pieces *ps)
{
    char *sent = malloc(len + 2);
    if (!sent)
        return sd_err_set(b->err, SD_ERR_NOMEM, "out of memory building contexts");
    struct piece cur = {0};
    size_t cap = 0;
    int in_passage = 0, n_sent = 0;
    enum sd_status r = SD_OK;
    size_t i = 0;
    while (i < len && !r) {
        size_t pe = i; // paragraph end: a blank line (only whitespace between two newlines)
        for (;;) {
            while (pe < len && text[pe] != '\n')
                pe++;
            if (pe >= len)
                break;
            size_t q = pe + 1;
            while (q < len && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r'))
                q++;
            if (q >= len || text[q] == '\n')
                break;
            pe = q;
        }
        size_t k = i;
        size_t sl = 0;
        int words = 0;
        while (k < pe && !r) {
            while (k < pe && (text[k] == ' ' || text[k] == '\t' || text[k] == '\n' || text[k] == '\r' ||
                              text[k] == '\f' || text[k] == '\v'))
                k++;
            if (k >= pe)
                break;
            size_t ws = k;
            while (k < pe && !(text[k] == ' ' || text[k] == '\t' || text[k] == '\n' || text[k] == '\r' ||
                               text[k] == '\f' || text[k] == '\v'))
                k++;
            sent[sl++] = ' ';
            memcpy(sent + sl, text + ws, k - ws);
            sl += k - ws;
            words++;
            char last = text[k - 1];
            int end = ((last == '.' || last == '?' || last == '!' || last == ':') && words >= 4) || words >= 60;
            size_t rest = k; // the paragraph's last word also ends the sentence
            while (rest < pe && (text[rest] == ' ' || text[rest] == '\t' || text[rest] == '\n' ||
                                 text[rest] == '\r' || text[rest] == '\f' || text[rest] == '\v'))
                rest++;
            if (end || rest >= pe) {
                if (!in_passage && (r = passage_begin(b, &cur, &cap, marker)))
                    break;
                in_passage = 1;
                if ((r = enc_append(b, &cur, &cap, sent, sl)))
                    break;
                sl = 0;
                words = 0;
                if (++n_sent == SD_CTX_PASSAGE_SENTENCES) {
                    if ((r = passage_end(b, &cur, ps)))
                        break;
                    in_passage = 0;
                    n_sent = 0;
                }
            }
        }
        i = pe < len ? pe + 1 : len;
    }
    if (!r && in_passage)
        r = passage_end(b, &cur, ps);
    else if (r)
        free(cur.t);
    free(sent);
    return r;
}

// Text/code span -> one passage per non-empty line: "[rel:L]", " line", "\n".
static enum sd_status passages_of_lines(struct builder *b, const char *rel, int line_start, const char *text,
                                        size_t len, struct pieces *ps)
{
    char line[4 * 200 + 2], marker[512];
    size_t i = 0;
    int ln = line_start > 0 ? line_start : 1;
    enum sd_status r = SD_OK;
    while (i < len && !r) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        size_t o = 0;
        line[o++] = ' ';
        for (size_t k = i; k < e && o < 1 + 200; k++) { // tabs as 4 spaces, at most 200 bytes
            if (text[k] == '\t') {
                for (int t = 0; t < 4 && o < 1 + 200; t++)
                    line[o++] = ' ';
            } else if (text[k] != '\r')
                line[o++] = text[k];
        }
        while (o > 1 && (unsigned char)line[o - 1] >= 0x80 && (unsigned char)line[o - 1] < 0xC0 && e - i > o)
            o--; // cut inside a UTF-8 sequence: drop its continuation bytes ...
        if (o > 1 && (unsigned char)line[o - 1] >= 0xC0 && e - i > o)
            o--; // ... and its lead byte
        while (o > 1 && (line[o - 1] == ' ' || line[o - 1] == '\r'))
            o--;
        if (o > 1) {
            snprintf(marker, sizeof marker, "[%.480s:%d]", rel, ln);
            struct piece cur = {0};
            size_t cap = 0;
            if (!(r = passage_begin(b, &cur, &cap, marker))) {
                if ((r = enc_append(b, &cur, &cap, line, o)))
                    free(cur.t);
                else
                    r = passage_end(b, &cur, ps);
            } else
                free(cur.t);
        }
        ln++;
        i = e < len ? e + 1 : len;
    }
    return r;
}

// Pack a span's passage lines: the whole span goes into the current context when it fits, else into a
// new one; a span larger than a context is split between lines (a line longer than N is cut).
static enum sd_status pack_passages(struct builder *b, const struct sd_ctx_span *proto, const char *rel,
                                    const char *label, const char *text, size_t len)
{
    struct pieces ps = {0};
    enum sd_status r;
    if (proto->page_no > 0) {
        char marker[96];
        if (label && *label)
            snprintf(marker, sizeof marker, "[p. %.40s]", label);
        else
            snprintf(marker, sizeof marker, "[p. %d]", proto->page_no);
        r = passages_of_page(b, marker, text, len, &ps);
    } else
        r = passages_of_lines(b, rel, proto->line_start, text, len, &ps);
    if (r || !ps.n)
        goto out;
    if (b->cur && b->cur->n_tokens + ps.total > b->n_max)
        b->cur = NULL;
    if (!b->cur && (r = ctx_open(b)))
        goto out;
    int part = 0;
    if ((r = ctx_begin_span(b, proto, part)))
        goto out;
    for (size_t i = 0; i < ps.n; i++) {
        const int32_t *t = ps.p[i].t;
        size_t n = ps.p[i].n;
        while (n) {
            if (b->cur->n_tokens + n > b->n_max && (b->cur->n_tokens > 0 || n > b->n_max) &&
                b->cur->n_tokens == b->n_max) { // full: continue the span in a new context
                ctx_end_span(b);
                if ((r = ctx_open(b)) || (r = ctx_begin_span(b, proto, ++part)))
                    goto out;
            } else if (b->cur->n_tokens + n > b->n_max && n <= b->n_max) { // the line fits an empty context
                ctx_end_span(b);
                if ((r = ctx_open(b)) || (r = ctx_begin_span(b, proto, ++part)))
                    goto out;
            }
            size_t m = b->n_max - b->cur->n_tokens < n ? b->n_max - b->cur->n_tokens : n; // cut only lines > N
            if ((r = ctx_push_tokens(b, t, m)))
                goto out;
            t += m;
            n -= m;
        }
    }
    ctx_end_span(b);
out:
    pieces_free(&ps);
    return r;
}

enum sd_status sd_contexts_build(struct sd_store *s, const int64_t *doc_ids, size_t n_docs,
                                 const struct sd_contexts_opts *opts, struct sd_contexts **out, struct sd_err *err)
{
    *out = NULL;
    if (!opts || !opts->tokenize)
        return sd_err_set(err, SD_ERR_ARG, "contexts need a tokenizer");
    size_t n_max = opts->max_tokens ? opts->max_tokens : SD_CONTEXT_DEFAULT_TOKENS;
    if (n_max > SD_CONTEXT_MAX_TOKENS || n_max < 64)
        return sd_err_set(err, SD_ERR_RANGE, "context size %zu tokens is outside 64..%d", n_max,
                          SD_CONTEXT_MAX_TOKENS);
    struct builder b = {.o = opts, .n_max = n_max, .err = err};
    enum sd_status r;
    if (!(b.out = calloc(1, sizeof *b.out)))
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    if ((r = opts->tokenize(opts->tok_user, "\n\n", 2, &b.sep, &b.n_sep, err)))
        goto fail;
    sqlite3 *db = sd_store_db(s);
    sqlite3_stmt *st = NULL;
    // Stable order: documents by path, spans by ord.
    const char *sql =
        "SELECT s.id, s.doc_id, s.page_no, s.page_label, s.line_start, s.line_end, s.text, d.path, d.root, "
        "d.title, d.kind, s.ord FROM spans s JOIN documents d ON d.id = s.doc_id "
        "WHERE (?1 = 0 OR s.doc_id IN (SELECT value FROM json_each(?2))) ORDER BY d.path, s.ord";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        r = sd_err_set(err, SD_ERR_IO, "contexts: %s", sqlite3_errmsg(db));
        goto fail;
    }
    char *ids = NULL;
    if (n_docs) {
        size_t cap = n_docs * 22 + 3; // "," and at most 20 characters of a 64-bit integer each
        ids = malloc(cap);
        if (!ids) {
            sqlite3_finalize(st);
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto fail;
        }
        size_t o = 0;
        ids[o++] = '[';
        for (size_t i = 0; i < n_docs; i++)
            o += (size_t)snprintf(ids + o, cap - o, "%s%lld", i ? "," : "", (long long)doc_ids[i]);
        ids[o++] = ']';
        ids[o] = 0;
    }
    sqlite3_bind_int(st, 1, n_docs ? 1 : 0);
    sqlite3_bind_text(st, 2, ids ? ids : "[]", -1, SQLITE_TRANSIENT);
    free(ids);
    int64_t last_doc = -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct sd_ctx_span proto = {
            .span_id = sqlite3_column_int64(st, 0),
            .doc_id = sqlite3_column_int64(st, 1),
            .page_no = sqlite3_column_int(st, 2),
            .line_start = sqlite3_column_int(st, 4),
            .line_end = sqlite3_column_int(st, 5),
        };
        const char *label = (const char *)sqlite3_column_text(st, 3);
        const char *text = (const char *)sqlite3_column_text(st, 6);
        size_t len = (size_t)sqlite3_column_bytes(st, 6);
        const char *path = (const char *)sqlite3_column_text(st, 7);
        const char *root = (const char *)sqlite3_column_text(st, 8);
        const char *title = (const char *)sqlite3_column_text(st, 9);
        const char *rel = sd_ctx_display_path(path, root);
        if (opts->format == SD_CTX_FORMAT_PASSAGES) {
            last_doc = proto.doc_id;
            (void)title;
            if ((r = pack_passages(&b, &proto, rel, label, text ? text : "", len))) {
                sqlite3_finalize(st);
                goto fail;
            }
            continue;
        }
        char header[1024];
        int h = 0;
        if (proto.doc_id != last_doc) {
            h = snprintf(header, sizeof header, "=== %.300s (%.400s) ===\n", title && *title ? title : rel, rel);
            last_doc = proto.doc_id;
        }
        if (proto.page_no > 0)
            snprintf(header + h, sizeof header - (size_t)h, "[p. %.40s]\n", label && *label ? label : "");
        else
            snprintf(header + h, sizeof header - (size_t)h, "[%.400s:%d-%d]\n", rel, proto.line_start,
                     proto.line_end);
        if (proto.page_no > 0 && !(label && *label)) // no label: use the physical page number
            snprintf(header + h, sizeof header - (size_t)h, "[p. %d]\n", proto.page_no);
        if ((r = pack_span(&b, &proto, header, text ? text : "", len))) {
            sqlite3_finalize(st);
            goto fail;
        }
    }
    if (rc != SQLITE_DONE) {
        r = sd_err_set(err, SD_ERR_IO, "contexts: %s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        goto fail;
    }
    sqlite3_finalize(st);
    free(b.sep);
    *out = b.out;
    return SD_OK;
fail:
    free(b.sep);
    sd_contexts_free(b.out);
    return r;
}

void sd_contexts_free(struct sd_contexts *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->items[i].tokens);
        free(c->items[i].spans);
    }
    free(c->items);
    free(c);
}

const struct sd_ctx_span *sd_context_locate(const struct sd_context *c, size_t pos)
{
    if (!c || pos >= c->n_tokens || !c->n_spans)
        return NULL;
    size_t lo = 0, hi = c->n_spans;
    while (hi - lo > 1) { // last span with tok_offset <= pos
        size_t mid = (lo + hi) / 2;
        if (c->spans[mid].tok_offset <= pos)
            lo = mid;
        else
            hi = mid;
    }
    return &c->spans[lo];
}

const char *sd_ctx_display_path(const char *path, const char *root)
{
    size_t rl = root ? strlen(root) : 0;
    return root && !strncmp(path, root, rl) && path[rl] == '/' ? path + rl + 1 : path;
}
