// citations.c: parse citation markers and map them to pages / path:line (see citations.h).
#include "citations.h"

#include <ctype.h>
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

enum sd_status sd_cite_parse(const char *answer, struct sd_cite_marker **out, size_t *n, struct sd_err *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
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
            struct sd_cite_marker m;
            if (parse_item(it, (size_t)(ie - it), &m)) {
                int dup = 0;
                for (size_t k = 0; k < *n; k++)
                    if (!strcmp((*out)[k].text, m.text))
                        dup = 1;
                if (!dup) {
                    if (*n == cap) {
                        cap = cap ? cap * 2 : 8;
                        void *nv = realloc(*out, cap * sizeof **out);
                        if (!nv) {
                            free(*out);
                            *out = NULL;
                            *n = 0;
                            return sd_err_set(err, SD_ERR_NOMEM, "out of memory parsing citations");
                        }
                        *out = nv;
                    }
                    (*out)[(*n)++] = m;
                }
            }
            it = ie < e ? ie + 1 : e;
        }
        p = e + 1;
    }
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
