// citations.c: parse citation markers, map them to pages / path:line, and ground them in the span text
// of the contexts used, also while an answer streams (see citations.h).
#include "citations.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

// One item inside brackets -> marker; 0 when it is not a citation.
static int parse_item(const char *s, size_t n, struct sd_cite_marker *m)
{
    trim(&s, &n);
    if (!n || n >= sizeof m->text)
        return 0;
    memset(m, 0, sizeof *m);
    memcpy(m->text, s, n);
    size_t skip = 0;
    if (n > 5 && !strncasecmp(s, "page ", 5))
        skip = 5;
    else if (n > 3 && !strncmp(s, "pp.", 3))
        skip = 3;
    else if (n > 2 && !strncmp(s, "p.", 2))
        skip = 2;
    else if (n > 2 && s[0] == 'p' && s[1] == ' ')
        skip = 2;
    if (skip) {
        const char *p = s + skip;
        size_t pn = n - skip;
        trim(&p, &pn);
        size_t k = 0; // the label up to a range dash
        while (k < pn && p[k] != '-' && !isspace((unsigned char)p[k]))
            k++;
        if (!k || k >= sizeof m->page)
            return 0;
        m->kind = 'p';
        memcpy(m->page, p, k);
        return 1;
    }
    // path:L or path:L-M (the last ':' followed by digits)
    const char *colon = NULL;
    for (size_t i = n; i-- > 0;)
        if (s[i] == ':') {
            colon = s + i;
            break;
        }
    if (!colon || colon == s)
        return 0;
    size_t pl = (size_t)(colon - s);
    if (pl >= sizeof m->path)
        return 0;
    const char *q = colon + 1, *e = s + n;
    if (q >= e || !isdigit((unsigned char)*q))
        return 0;
    long a = 0, b = 0;
    while (q < e && isdigit((unsigned char)*q) && a < 100000000)
        a = a * 10 + (*q++ - '0');
    b = a;
    if (q < e && *q == '-') {
        q++;
        if (q >= e || !isdigit((unsigned char)*q))
            return 0;
        b = 0;
        while (q < e && isdigit((unsigned char)*q) && b < 100000000)
            b = b * 10 + (*q++ - '0');
    }
    if (q != e || a <= 0 || b < a)
        return 0;
    int spaces = 0, filelike = 0; // "see note: 12" is prose; "docs/a b.txt:3" is a path with a space
    for (size_t i = 0; i < pl; i++) {
        spaces |= isspace((unsigned char)s[i]) != 0;
        filelike |= s[i] == '/' || s[i] == '.';
    }
    if (spaces && !filelike)
        return 0;
    m->kind = 'l';
    memcpy(m->path, s, pl);
    m->line_start = (int)a;
    m->line_end = (int)b;
    return 1;
}

// One citation item found in an answer: the bracket it sits in ([bo, bc] point at '[' and ']') and the
// item's text without surrounding whitespace ([is, ie)).
struct cite_item {
    const char *bo, *bc, *is, *ie;
    struct sd_cite_marker m;
};
typedef int (*cite_item_fn)(void *user, const struct cite_item *it); // non-zero: stop

// Walk the bracketed citation items of answer in order (duplicates included); returns fn's stop value.
static int scan_items(const char *answer, cite_item_fn fn, void *user)
{
    for (const char *p = answer; (p = strchr(p, '['));) {
        const char *e = p + 1;
        while (*e && *e != ']' && *e != '[' && *e != '\n' && e - p < 1100)
            e++;
        if (*e != ']') {
            p++;
            continue;
        }
        const char *it = p + 1;
        while (it < e) {
            const char *ie = it;
            while (ie < e && *ie != ';' && !(*ie == ',' && ie + 1 < e && ie[1] == ' '))
                ie++;
            struct cite_item ci = {.bo = p, .bc = e, .is = it};
            size_t n = (size_t)(ie - it);
            trim(&ci.is, &n);
            ci.ie = ci.is + n;
            if (parse_item(ci.is, n, &ci.m)) {
                int stop = fn(user, &ci);
                if (stop)
                    return stop;
            }
            it = ie < e ? ie + 1 : e;
        }
        p = e + 1;
    }
    return 0;
}

struct parse_acc {
    struct sd_cite_marker *v;
    size_t n, cap;
};

static int parse_add(void *user, const struct cite_item *it)
{
    struct parse_acc *a = user;
    for (size_t k = 0; k < a->n; k++)
        if (!strcmp(a->v[k].text, it->m.text))
            return 0;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        void *nv = realloc(a->v, cap * sizeof *a->v);
        if (!nv)
            return 1;
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = it->m;
    return 0;
}

enum sd_status sd_cite_parse(const char *answer, struct sd_cite_marker **out, size_t *n, struct sd_err *err)
{
    struct parse_acc a = {0};
    *out = NULL;
    *n = 0;
    if (scan_items(answer, parse_add, &a)) {
        free(a.v);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory parsing citations");
    }
    *out = a.v;
    *n = a.n;
    return SD_OK;
}

void sd_qa_citation_clear(struct sd_qa_citation *c)
{
    if (!c)
        return;
    free(c->marker);
    free(c->path);
    free(c->title);
    free(c->page_label);
    free(c->corrected_from);
    memset(c, 0, sizeof *c);
}

// Per-document facts needed for matching: path, title, and the page label of each span.
struct span_label {
    int64_t span_id;
    char *label;
};
struct doc_info {
    int64_t id;
    char *path, *title;
    struct span_label *labels;
    size_t n_labels, cap_labels;
};

static int doc_cb(void *user, const struct sd_doc *d)
{
    struct doc_info *di = user;
    di->path = strdup(d->path ? d->path : "");
    di->title = d->title ? strdup(d->title) : NULL;
    return 1;
}

static int span_cb(void *user, const struct sd_span_row *r)
{
    struct doc_info *di = user;
    if (r->page_no <= 0 || !r->page_label || !*r->page_label)
        return 0;
    if (di->n_labels == di->cap_labels) {
        size_t cap = di->cap_labels ? di->cap_labels * 2 : 16;
        void *nv = realloc(di->labels, cap * sizeof *di->labels);
        if (!nv)
            return 1;
        di->labels = nv;
        di->cap_labels = cap;
    }
    di->labels[di->n_labels++] = (struct span_label){r->id, strdup(r->page_label)};
    return 0;
}

static const char *label_of(const struct doc_info *di, int64_t span_id)
{
    for (size_t i = 0; i < di->n_labels; i++)
        if (di->labels[i].span_id == span_id)
            return di->labels[i].label;
    return NULL;
}

static int path_matches(const char *doc_path, const char *marker_path)
{
    if (!strcmp(doc_path, marker_path))
        return 1;
    size_t dl = strlen(doc_path), ml = strlen(marker_path);
    return ml < dl && doc_path[dl - ml - 1] == '/' && !strcmp(doc_path + dl - ml, marker_path);
}

enum sd_status sd_cite_resolve(struct sd_store *s, const struct sd_context *const *ctx, size_t n_ctx,
                               const char *answer, struct sd_qa_citation **out, size_t *n, struct sd_err *err)
{
    *out = NULL;
    *n = 0;
    struct sd_cite_marker *mk = NULL;
    size_t n_mk = 0;
    enum sd_status r = sd_cite_parse(answer, &mk, &n_mk, err);
    if (r || !n_mk)
        return r;
    struct doc_info *docs = NULL;
    size_t n_docs = 0;
    struct sd_qa_citation *cs = calloc(n_mk, sizeof *cs);
    if (!cs) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory resolving citations");
        goto out;
    }
    // The documents of the contexts used.
    for (size_t c = 0; c < n_ctx; c++)
        for (size_t i = 0; i < ctx[c]->n_spans; i++) {
            int64_t id = ctx[c]->spans[i].doc_id;
            int seen = 0;
            for (size_t k = 0; k < n_docs && !seen; k++)
                seen = docs[k].id == id;
            if (seen)
                continue;
            void *nv = realloc(docs, (n_docs + 1) * sizeof *docs);
            if (!nv) {
                r = sd_err_set(err, SD_ERR_NOMEM, "out of memory resolving citations");
                goto out;
            }
            docs = nv;
            struct doc_info *di = &docs[n_docs++];
            memset(di, 0, sizeof *di);
            di->id = id;
            if ((r = sd_store_doc_get(s, id, doc_cb, di, err)) || (r = sd_store_spans_foreach(s, id, span_cb, di, err)))
                goto out;
        }
    for (size_t m = 0; m < n_mk; m++) {
        struct sd_qa_citation *q = &cs[m];
        q->marker = strdup(mk[m].text);
        q->grounded = -1;
        if (!q->marker) {
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory resolving citations");
            goto out;
        }
        char *endp;
        long pnum = strtol(mk[m].page, &endp, 10);
        int numeric = mk[m].kind == 'p' && *endp == 0 && pnum > 0;
        // Label match first (a printed "iv" or "12"), then the physical page number for spans without a label.
        for (int pass = 0; pass < 2 && !q->valid; pass++)
            for (size_t c = 0; c < n_ctx && !q->valid; c++)
                for (size_t i = 0; i < ctx[c]->n_spans && !q->valid; i++) {
                    const struct sd_ctx_span *sp = &ctx[c]->spans[i];
                    struct doc_info *di = NULL;
                    for (size_t k = 0; k < n_docs; k++)
                        if (docs[k].id == sp->doc_id)
                            di = &docs[k];
                    if (!di || !di->path)
                        continue;
                    const char *label = label_of(di, sp->span_id);
                    int hit = 0;
                    if (mk[m].kind == 'p' && sp->page_no > 0) {
                        if (pass == 0)
                            hit = label && !strcmp(label, mk[m].page);
                        else
                            hit = !label && numeric && pnum == sp->page_no;
                    } else if (mk[m].kind == 'l' && sp->line_start > 0 && pass == 0) {
                        hit = path_matches(di->path, mk[m].path) && mk[m].line_start <= sp->line_end &&
                              mk[m].line_end >= sp->line_start;
                    }
                    if (!hit)
                        continue;
                    q->valid = 1;
                    q->doc_id = sp->doc_id;
                    q->path = strdup(di->path);
                    q->title = di->title ? strdup(di->title) : NULL;
                    q->page_no = sp->page_no;
                    q->page_label = label ? strdup(label) : NULL;
                    if (mk[m].kind == 'l') {
                        q->line_start = mk[m].line_start;
                        q->line_end = mk[m].line_end;
                    }
                }
    }
    *out = cs;
    *n = n_mk;
    cs = NULL;
out:
    if (cs) {
        for (size_t m = 0; m < n_mk; m++)
            sd_qa_citation_clear(&cs[m]);
        free(cs);
    }
    for (size_t k = 0; k < n_docs; k++) {
        free(docs[k].path);
        free(docs[k].title);
        for (size_t i = 0; i < docs[k].n_labels; i++)
            free(docs[k].labels[i].label);
        free(docs[k].labels);
    }
    free(docs);
    free(mk);
    return r;
}

// ---------------------------------------------------------------------------------------------------------
// grounding

// A span of the contexts used, its text normalized for matching: ASCII lower case, whitespace runs as one
// space; map[i] is the byte of text that norm[i] came from.
struct gspan {
    int64_t span_id, doc_id;
    int page_no, line_start, line_end;
    int dup;     // a later part of a span split across contexts: searched once, as its first entry
    char *label; // NULL: none
    char *text;
    char *norm;
    size_t *map;
    size_t n_norm;
};

struct gdoc {
    int64_t id;
    char *path, *rel, *title; // rel: the path as the contexts show it (relative to the document's root)
    int oom;
};

struct gid {
    int64_t span_id;
    size_t idx;
};

struct gctx {
    struct gspan *sp;
    size_t n_sp;
    struct gid *by_id; // (span_id, index in sp), sorted
    struct gdoc *docs;
    size_t n_docs;
    int oom;
};

// Normalize text[0..len) into *norm (NUL-terminated) and *map; 0 on success.
static int normalize(const char *text, size_t len, char **norm, size_t **map, size_t *n_norm)
{
    *norm = malloc(len + 1);
    *map = malloc((len + 1) * sizeof **map);
    if (!*norm || !*map) {
        free(*norm);
        free(*map);
        *norm = NULL;
        *map = NULL;
        return -1;
    }
    size_t o = 0;
    int space = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (isspace(ch)) {
            if (o && !space) {
                (*map)[o] = i;
                (*norm)[o++] = ' ';
            }
            space = 1;
            continue;
        }
        space = 0;
        (*map)[o] = i;
        (*norm)[o++] = ch < 0x80 ? (char)tolower(ch) : (char)ch;
    }
    if (o && (*norm)[o - 1] == ' ')
        o--;
    (*norm)[o] = 0;
    *n_norm = o;
    return 0;
}

static int gid_cmp(const void *a, const void *b)
{
    const struct gid *x = a, *y = b;
    if (x->span_id != y->span_id)
        return x->span_id < y->span_id ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

// The first (in context order) entry of span id, or NULL.
static struct gspan *gspan_find(struct gctx *g, int64_t id)
{
    size_t lo = 0, hi = g->n_sp;
    while (lo < hi) { // lower bound
        size_t mid = (lo + hi) / 2;
        if (g->by_id[mid].span_id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < g->n_sp && g->by_id[lo].span_id == id ? &g->sp[g->by_id[lo].idx] : NULL;
}

static int gspan_row(void *user, const struct sd_span_row *r)
{
    struct gctx *g = user;
    struct gspan *sp = gspan_find(g, r->id);
    if (!sp || sp->text)
        return 0;
    sp->page_no = r->page_no;
    sp->line_start = r->line_start;
    sp->line_end = r->line_end;
    sp->text = malloc(r->len + 1);
    sp->label = r->page_label && *r->page_label ? strdup(r->page_label) : NULL;
    if (!sp->text || (r->page_label && *r->page_label && !sp->label) ||
        normalize(r->text ? r->text : "", r->text ? r->len : 0, &sp->norm, &sp->map, &sp->n_norm)) {
        g->oom = 1;
        return 1;
    }
    if (r->len)
        memcpy(sp->text, r->text, r->len);
    sp->text[r->len] = 0;
    return 0;
}

static void gctx_free(struct gctx *g)
{
    for (size_t i = 0; i < g->n_sp; i++) {
        free(g->sp[i].label);
        free(g->sp[i].text);
        free(g->sp[i].norm);
        free(g->sp[i].map);
    }
    free(g->sp);
    free(g->by_id);
    for (size_t i = 0; i < g->n_docs; i++) {
        free(g->docs[i].path);
        free(g->docs[i].rel);
        free(g->docs[i].title);
    }
    free(g->docs);
    memset(g, 0, sizeof *g);
}

static const struct gdoc *gdoc_of(const struct gctx *g, int64_t id)
{
    for (size_t k = 0; k < g->n_docs; k++)
        if (g->docs[k].id == id)
            return &g->docs[k];
    return NULL;
}

// A document's path, the path the contexts show for it (sd_ctx_display_path) and its title.
static int gdoc_row(void *user, const struct sd_doc *r)
{
    struct gdoc *d = user;
    const char *path = r->path ? r->path : "";
    d->path = strdup(path);
    d->rel = strdup(sd_ctx_display_path(path, r->root));
    d->title = r->title ? strdup(r->title) : NULL;
    d->oom = !d->path || !d->rel || (r->title && !d->title);
    return 1;
}

// The spans of the contexts (each once, in context order) with their text, and their documents.
static enum sd_status gctx_load(struct sd_store *s, const struct sd_context *const *ctx, size_t n_ctx, struct gctx *g,
                                struct sd_err *err)
{
    memset(g, 0, sizeof *g);
    size_t cap = 0;
    for (size_t c = 0; c < n_ctx; c++)
        cap += ctx[c]->n_spans;
    if (!cap)
        return SD_OK;
    g->sp = calloc(cap, sizeof *g->sp);
    g->by_id = malloc(cap * sizeof *g->by_id);
    if (!g->sp || !g->by_id)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
    for (size_t c = 0; c < n_ctx; c++)
        for (size_t i = 0; i < ctx[c]->n_spans; i++) {
            const struct sd_ctx_span *cs = &ctx[c]->spans[i];
            g->sp[g->n_sp].span_id = cs->span_id;
            g->sp[g->n_sp].doc_id = cs->doc_id;
            g->by_id[g->n_sp] = (struct gid){cs->span_id, g->n_sp};
            g->n_sp++;
        }
    qsort(g->by_id, g->n_sp, sizeof *g->by_id, gid_cmp);
    for (size_t i = 1; i < g->n_sp; i++)
        if (g->by_id[i].span_id == g->by_id[i - 1].span_id)
            g->sp[g->by_id[i].idx].dup = 1;
    enum sd_status r = SD_OK;
    for (size_t i = 0; i < g->n_sp && !r; i++) {
        int64_t id = g->sp[i].doc_id;
        if (gdoc_of(g, id))
            continue;
        void *nv = realloc(g->docs, (g->n_docs + 1) * sizeof *g->docs);
        if (!nv) {
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
            break;
        }
        g->docs = nv;
        struct gdoc *d = &g->docs[g->n_docs++];
        memset(d, 0, sizeof *d);
        d->id = id;
        r = sd_store_doc_get(s, id, gdoc_row, d, err);
        if (r == SD_ERR_MISSING) // removed since the contexts were built: its spans are gone too
            r = SD_OK;
        else if (!r && d->oom)
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
        if (!r && (r = sd_store_spans_foreach(s, id, gspan_row, g, err)) == SD_OK && g->oom)
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
    }
    return r;
}

// The claim of a marker: answer[from, to) trimmed of whitespace and of ",;:." at its ends, then its last
// sentence. *n = 0 when nothing is left.
static const char *claim_of(const char *answer, size_t from, size_t to, size_t *n)
{
    const char *c = answer + from;
    size_t len = to - from;
    for (;;) { // (leading ",;:." too: the text after "[p. 3], and ...")
        trim(&c, &len);
        if (len && strchr(",;:.", c[len - 1]))
            len--;
        else if (len && strchr(",;:.", c[0])) {
            c++;
            len--;
        } else
            break;
    }
    for (size_t i = len; i-- > 0;) {
        int brk = c[i] == '\n' ||
                  ((c[i] == '.' || c[i] == '!' || c[i] == '?') && i + 1 < len && isspace((unsigned char)c[i + 1]));
        if (brk) {
            c += i + 1;
            len -= i + 1;
            trim(&c, &len);
            break;
        }
    }
    *n = len;
    return c;
}

// Line of text holding byte off, for a span whose first line is line_start.
static int line_at(const struct gspan *sp, size_t off)
{
    int ln = sp->line_start;
    for (size_t i = 0; i < off && sp->text[i]; i++)
        ln += sp->text[i] == '\n';
    return ln;
}

struct ghit {
    const struct gspan *sp;
    int l1, l2; // lines of a line span (0 for pages)
};

static char *cite_strdup(const char *s, int *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

// Deep copy of a citation.
static int cite_copy(struct sd_qa_citation *d, const struct sd_qa_citation *s)
{
    int oom = 0;
    *d = *s;
    d->marker = cite_strdup(s->marker, &oom);
    d->path = cite_strdup(s->path, &oom);
    d->title = cite_strdup(s->title, &oom);
    d->page_label = cite_strdup(s->page_label, &oom);
    d->corrected_from = cite_strdup(s->corrected_from, &oom);
    if (oom)
        sd_qa_citation_clear(d);
    return oom ? -1 : 0;
}

struct occ_list {
    struct cite_item *v;
    size_t n, cap;
};

static int occ_add(void *user, const struct cite_item *it)
{
    struct occ_list *l = user;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        void *nv = realloc(l->v, cap * sizeof *l->v);
        if (!nv)
            return 1;
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = *it;
    return 0;
}

// Ground one marker occurrence: *out gets a new citation (deep), *repl the new marker text when it
// changed (static buffer owned by the caller), else "".
static int ground_one(const struct gctx *g, const struct cite_item *it, const struct sd_qa_citation *base,
                      const char *claim, size_t claim_len, struct sd_qa_citation *out, char *repl, size_t repl_cap)
{
    repl[0] = 0;
    struct sd_qa_citation none = {.marker = (char *)it->m.text, .grounded = -1};
    if (cite_copy(out, base ? base : &none))
        return -1;
    if (claim_len < 2 || claim_len > 200) {
        out->grounded = -1;
        return 0;
    }
    char *cn = NULL;
    size_t *cmap = NULL, ncn = 0;
    if (normalize(claim, claim_len, &cn, &cmap, &ncn))
        return -1;
    free(cmap);
    // Where the claim should be, for the distance: the resolved place, or for an unresolved line marker
    // the document its path names.
    int64_t ref_doc = -1;
    int ref_pos = 0;
    if (base && base->valid) {
        ref_doc = base->doc_id;
        ref_pos = base->page_no > 0 ? base->page_no : base->line_start;
    } else if (it->m.kind == 'l')
        for (size_t k = 0; k < g->n_docs && ref_doc < 0; k++)
            if (g->docs[k].path && path_matches(g->docs[k].path, it->m.path)) {
                ref_doc = g->docs[k].id;
                ref_pos = it->m.line_start;
            }
    int in_cited = 0, have = 0;
    struct ghit best = {0};
    long best_other = 0, best_dist = 0;
    for (size_t i = 0; i < g->n_sp && !in_cited; i++) {
        const struct gspan *sp = &g->sp[i];
        if (sp->dup || !sp->norm || !ncn || (sp->page_no <= 0 && sp->line_start <= 0))
            continue;
        for (const char *h = sp->norm; (h = strstr(h, cn)) && !in_cited; h++) {
            size_t at = (size_t)(h - sp->norm);
            struct ghit hit = {.sp = sp};
            if (sp->page_no <= 0) {
                hit.l1 = line_at(sp, sp->map[at]);
                hit.l2 = line_at(sp, sp->map[at + ncn - 1]);
            }
            if (base && base->valid && sp->doc_id == base->doc_id) {
                if (it->m.kind == 'p' && sp->page_no > 0 && sp->page_no == base->page_no)
                    in_cited = 1;
                else if (it->m.kind == 'l' && sp->page_no <= 0 && hit.l1 >= base->line_start &&
                         hit.l2 <= base->line_end)
                    in_cited = 1;
            }
            long other = sp->doc_id == ref_doc ? 0 : 1; // same document first
            long pos = sp->page_no > 0 ? sp->page_no : hit.l1;
            long dist = other ? 0 : labs(pos - (long)ref_pos);
            if (!have || other < best_other || (other == best_other && dist < best_dist)) {
                have = 1;
                best = hit;
                best_other = other;
                best_dist = dist;
            }
            if (sp->page_no > 0) // one hit decides a page
                break;
        }
    }
    free(cn);
    if (in_cited) {
        out->grounded = 1;
        return 0;
    }
    if (!have) {
        out->grounded = 0;
        return 0;
    }
    const struct gspan *sp = best.sp;
    const struct gdoc *d = gdoc_of(g, sp->doc_id);
    char mk[1200];
    if (sp->page_no > 0) {
        if (sp->label)
            snprintf(mk, sizeof mk, "p. %.60s", sp->label);
        else
            snprintf(mk, sizeof mk, "p. %d", sp->page_no);
    } else if (best.l2 > best.l1)
        snprintf(mk, sizeof mk, "%.1000s:%d-%d", d && d->rel ? d->rel : "", best.l1, best.l2);
    else
        snprintf(mk, sizeof mk, "%.1000s:%d", d && d->rel ? d->rel : "", best.l1);
    int oom = 0;
    free(out->path);
    free(out->title);
    free(out->page_label);
    out->path = cite_strdup(d && d->path ? d->path : "", &oom);
    out->title = cite_strdup(d ? d->title : NULL, &oom);
    out->page_label = cite_strdup(sp->page_no > 0 ? sp->label : NULL, &oom);
    out->valid = 1;
    out->grounded = 1;
    out->doc_id = sp->doc_id;
    out->page_no = sp->page_no > 0 ? sp->page_no : 0;
    out->line_start = sp->page_no > 0 ? 0 : best.l1;
    out->line_end = sp->page_no > 0 ? 0 : best.l2;
    if (strcmp(mk, it->m.text)) { // the same text can name another document's page: then nothing to rewrite
        free(out->corrected_from);
        out->corrected_from = out->marker;
        out->marker = cite_strdup(mk, &oom);
        snprintf(repl, repl_cap, "%s", mk);
    }
    return oom ? -1 : 0;
}

enum sd_status sd_cite_ground(struct sd_store *s, const struct sd_context *const *ctx, size_t n_ctx, const char *answer,
                              struct sd_qa_citation **cites, size_t *n_cites, char **grounded_answer,
                              struct sd_err *err)
{
    *grounded_answer = NULL;
    struct occ_list occ = {0};
    struct gctx g = {0};
    struct sd_qa_citation *nc = NULL;
    size_t n_nc = 0;
    char **repl = NULL;
    enum sd_status r = SD_OK;
    if (scan_items(answer, occ_add, &occ)) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
        goto out;
    }
    if (!occ.n) {
        if (!(*grounded_answer = strdup(answer)))
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
        goto out;
    }
    if ((r = gctx_load(s, ctx, n_ctx, &g, err)))
        goto out;
    nc = calloc(occ.n, sizeof *nc);
    repl = calloc(occ.n, sizeof *repl);
    if (!nc || !repl) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
        goto out;
    }
    size_t out_len = strlen(answer);
    const char *prev_end = NULL; // the ']' of the previous citation bracket
    for (size_t i = 0; i < occ.n; i++) {
        const struct cite_item *it = &occ.v[i];
        if (i && occ.v[i - 1].bo != it->bo)
            prev_end = occ.v[i - 1].bc;
        size_t from = prev_end ? (size_t)(prev_end + 1 - answer) : 0, to = (size_t)(it->bo - answer), cl = 0;
        const char *claim = claim_of(answer, from, to, &cl);
        const struct sd_qa_citation *base = NULL;
        for (size_t k = 0; k < *n_cites && !base; k++)
            if ((*cites)[k].marker && !strcmp((*cites)[k].marker, it->m.text))
                base = &(*cites)[k];
        struct sd_qa_citation one;
        char mk[1200];
        if (ground_one(&g, it, base, claim, cl, &one, mk, sizeof mk)) {
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
            goto out;
        }
        if (mk[0]) {
            if (!(repl[i] = strdup(mk))) {
                sd_qa_citation_clear(&one);
                r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
                goto out;
            }
            out_len = out_len - (size_t)(it->ie - it->is) + strlen(mk);
        }
        int dup = 0; // one entry per distinct marker of the rewritten answer, the first occurrence's
        for (size_t k = 0; k < n_nc && !dup; k++)
            dup = !strcmp(nc[k].marker, one.marker);
        if (dup)
            sd_qa_citation_clear(&one);
        else
            nc[n_nc++] = one;
    }
    char *ga = malloc(out_len + 1);
    if (!ga) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory grounding citations");
        goto out;
    }
    size_t o = 0;
    const char *p = answer;
    for (size_t i = 0; i < occ.n; i++) {
        if (!repl[i])
            continue;
        memcpy(ga + o, p, (size_t)(occ.v[i].is - p));
        o += (size_t)(occ.v[i].is - p);
        size_t rl = strlen(repl[i]);
        memcpy(ga + o, repl[i], rl);
        o += rl;
        p = occ.v[i].ie;
    }
    size_t rest = strlen(p);
    memcpy(ga + o, p, rest + 1);
    *grounded_answer = ga;
    for (size_t k = 0; k < *n_cites; k++)
        sd_qa_citation_clear(&(*cites)[k]);
    free(*cites);
    *cites = nc;
    *n_cites = n_nc;
    nc = NULL;
    n_nc = 0;
out:
    for (size_t k = 0; k < n_nc; k++)
        sd_qa_citation_clear(&nc[k]);
    free(nc);
    for (size_t i = 0; repl && i < occ.n; i++)
        free(repl[i]);
    free(repl);
    free(occ.v);
    gctx_free(&g);
    return r;
}

// ---------------------------------------------------------------- grounded streaming

void sd_cite_stream_init(struct sd_cite_stream *cs, struct sd_store *s, const struct sd_context *const *ctx,
                         size_t n_ctx, void (*emit)(void *user, const char *text, size_t len), void *user)
{
    memset(cs, 0, sizeof *cs);
    cs->store = s;
    cs->ctx = emit ? ctx : NULL; // nothing is shown: nothing to ground
    cs->n_ctx = n_ctx;
    cs->emit = emit;
    cs->user = user;
}

static void stream_pass(struct sd_cite_stream *cs, const char *b, size_t n)
{
    if (n && cs->emit)
        cs->emit(cs->user, b, n);
    cs->g_done += n;
}

// Pass raw[raw_done .. end) on, grounded when it closes a marker.
static void stream_emit(struct sd_cite_stream *cs, const char *raw, size_t end)
{
    if (end <= cs->raw_done)
        return;
    const char *seg = raw + cs->raw_done;
    size_t n = end - cs->raw_done;
    cs->raw_done = end;
    if (!cs->ctx || cs->raw_only || !memchr(seg, ']', n)) {
        stream_pass(cs, seg, n);
        return;
    }
    char *prefix = malloc(end + 1), *gt = NULL;
    struct sd_qa_citation *cites = NULL;
    size_t n_cites = 0;
    struct sd_err e;
    int ok = 0;
    if (prefix) {
        memcpy(prefix, raw, end);
        prefix[end] = 0;
        ok = sd_cite_resolve(cs->store, cs->ctx, cs->n_ctx, prefix, &cites, &n_cites, &e) == SD_OK &&
             sd_cite_ground(cs->store, cs->ctx, cs->n_ctx, prefix, &cites, &n_cites, &gt, &e) == SD_OK &&
             strlen(gt) >= cs->g_done;
    }
    if (ok) {
        size_t gl = strlen(gt);
        stream_pass(cs, gt + cs->g_done, gl - cs->g_done);
    } else {
        stream_pass(cs, seg, n);
        cs->raw_only = 1;
    }
    for (size_t i = 0; i < n_cites; i++)
        sd_qa_citation_clear(&cites[i]);
    free(cites);
    free(gt);
    free(prefix);
}

void sd_cite_stream_feed(struct sd_cite_stream *cs, const char *raw, size_t len, int final)
{
    size_t end = len;
    if (!final && cs->ctx && !cs->raw_only) {
        for (size_t i = len; i > cs->raw_done; i--) {
            if (raw[i - 1] == ']')
                break;
            if (raw[i - 1] == '[') {
                if (len - (i - 1) < SD_CITE_STREAM_HOLD)
                    end = i - 1;
                else
                    cs->raw_only = 1;
                break;
            }
        }
    }
    stream_emit(cs, raw, end);
}
