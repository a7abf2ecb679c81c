// markers.c: constrained citation markers (sd_markers, markers.h). Depends on the engine's tokenizer only.
#include "markers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void sd_markers_free(struct sd_markers *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->s[i]);
    free(m->s);
    memset(m, 0, sizeof *m);
}

enum sd_status sd_markers_from_text(const char *text, struct sd_markers *m, struct sd_err *err)
{
    memset(m, 0, sizeof *m);
    size_t cap = 0;
    for (const char *p = text; *p; p++) {
        if (*p != '[' || (p > text && p[-1] != '\n'))
            continue;
        const char *e = p + 1;
        while (*e && *e != ']' && *e != '\n' && *e != '[' && e - p < 600)
            e++;
        if (*e != ']')
            continue;
        if (m->n == cap) {
            cap = cap ? cap * 2 : 256;
            char **ns = realloc(m->s, cap * sizeof *ns);
            if (!ns)
                goto oom;
            m->s = ns;
        }
        if (!(m->s[m->n] = strndup(p + 1, (size_t)(e - p))))
            goto oom;
        m->n++;
    }
    if (m->n)
        qsort(m->s, m->n, sizeof *m->s, cmp_str);
    size_t k = 0; // unique
    for (size_t i = 0; i < m->n; i++) {
        if (k && !strcmp(m->s[k - 1], m->s[i])) {
            free(m->s[i]);
            continue;
        }
        m->s[k++] = m->s[i];
    }
    m->n = k;
    return SD_OK;
oom:
    sd_markers_free(m);
    return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
}

enum sd_status sd_markers_from_ids(const struct sd_tokenizer *tok, const int32_t *ids, size_t n, struct sd_markers *m,
                                   struct sd_err *err)
{
    char *text = NULL;
    memset(m, 0, sizeof *m);
    enum sd_status r = sd_tokenizer_decode(tok, ids, n, 1, &text, err);
    if (r)
        return r;
    r = sd_markers_from_text(text, m, err);
    free(text);
    return r;
}

// Is p[0..n) a prefix of some marker?
static int markers_prefix(const struct sd_markers *m, const char *p, size_t n)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strncmp(m->s[mid], p, n) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->n && !strncmp(m->s[lo], p, n);
}

int sd_markers_feed(const struct sd_markers *m, struct sd_marker_state *st, const char *b, size_t bl)
{
    for (size_t i = 0; i < bl; i++) {
        char c = b[i];
        if (!st->in) {
            if (c == '[') {
                st->in = 1;
                st->len = 0;
            }
            continue;
        }
        if (st->len + 1 >= SD_MARKER_CAP)
            return 0;
        st->buf[st->len++] = c;
        if (!markers_prefix(m, st->buf, st->len))
            return 0;
        if (c == ']')
            st->in = 0;
    }
    return 1;
}

void sd_markers_mask(const struct sd_tokenizer *tok, const struct sd_markers *m, const struct sd_marker_state *st,
                     float *logits, int vocab)
{
    int any = 0;
    for (int v = 0; v < vocab && !any; v++) {
        size_t bl = 0;
        const char *b = sd_tokenizer_token_bytes(tok, v, &bl);
        int special = !b || sd_tokenizer_is_special(tok, v);
        if (special ? !st->in : (!st->in && !memchr(b, '[', bl)))
            any = logits[v] > -INFINITY;
        else if (!special) {
            struct sd_marker_state t = *st;
            any = sd_markers_feed(m, &t, b, bl) && logits[v] > -INFINITY;
        }
    }
    if (!any)
        return;
    for (int v = 0; v < vocab; v++) {
        size_t bl = 0;
        const char *b = sd_tokenizer_token_bytes(tok, v, &bl);
        int special = !b || sd_tokenizer_is_special(tok, v);
        if (special) {
            if (st->in)
                logits[v] = -INFINITY; // close the marker before ending
            continue;
        }
        if (!st->in && !memchr(b, '[', bl))
            continue;
        struct sd_marker_state t = *st;
        if (!sd_markers_feed(m, &t, b, bl))
            logits[v] = -INFINITY;
    }
}
