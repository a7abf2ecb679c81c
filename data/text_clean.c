// text_clean.c: page and text clean-up (see text_clean.h). UTF-8 is decoded with utf8proc; the
// header/footer table is a GLib hash of line shapes (digits folded to '#') counted per page.
#include "text_clean.h"

#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define HF_LINES 2        // lines looked at from the top and from the bottom of a page
#define HF_KEY_MAX 160    // longer lines are never running headers
#define HF_MIN_PAGES 4    // documents shorter than this keep everything
#define HF_MIN_SHARE 0.4  // a line shape on at least this share of the text pages is a header/footer

char *sd_text_valid_utf8(const char *s, size_t n, size_t *out_len)
{
    // Worst case every byte becomes U+FFFD (3 bytes).
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            if (c)
                out[o++] = (char)c;
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        }
    }
    out[o] = 0;
    if (out_len)
        *out_len = o;
    return out;
}

static int is_odd_space(utf8proc_int32_t cp)
{
    return cp == '\t' || cp == '\r' || cp == '\v' || cp == '\f' || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x85;
}

char *sd_text_normalize_page(const char *s, size_t n, size_t *out_len)
{
    size_t vn = 0;
    char *v = sd_text_valid_utf8(s, n, &vn);
    if (!v)
        return NULL;
    utf8proc_uint8_t *nf = NULL;
    utf8proc_ssize_t nl =
        utf8proc_map((const utf8proc_uint8_t *)v, (utf8proc_ssize_t)vn, &nf,
                     (utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
    const char *src = v;
    size_t sn = vn;
    if (nl >= 0) {
        src = (const char *)nf;
        sn = (size_t)nl;
    } // on a utf8proc error keep the un-normalized (but valid) text
    char *out = malloc(sn + 1);
    if (!out) {
        free(v);
        free(nf);
        return NULL;
    }
    size_t o = 0, i = 0;
    int pending_space = 0, newlines = 0;
    size_t line_start = 0;
    while (i < sn) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)src + i, (utf8proc_ssize_t)(sn - i), &cp);
        if (k <= 0) { // cannot happen on validated text; be safe
            i++;
            continue;
        }
        if (cp == '\n' || cp == 0x2028 || cp == 0x2029 || cp == 0x0C) {
            // a form feed (page break) or line/paragraph separator ends the line
            pending_space = 0;
            if (newlines < 2 && o > 0)
                out[o++] = '\n';
            newlines++;
            line_start = o;
            i += (size_t)k;
            continue;
        }
        if (cp == ' ' || is_odd_space(cp)) {
            pending_space = o > line_start;
            i += (size_t)k;
            continue;
        }
        utf8proc_category_t cat = utf8proc_category(cp);
        if (cp == 0xAD || cat == UTF8PROC_CATEGORY_CC || cp == 0xFEFF) { // soft hyphen, controls, BOM
            i += (size_t)k;
            continue;
        }
        if (pending_space)
            out[o++] = ' ';
        pending_space = 0;
        newlines = 0;
        memcpy(out + o, src + i, (size_t)k);
        o += (size_t)k;
        i += (size_t)k;
    }
    while (o > 0 && out[o - 1] == '\n')
        o--;
    out[o] = 0;
    free(v);
    free(nf);
    o = sd_text_dehyphenate(out, o);
    if (out_len)
        *out_len = o;
    return out;
}

static int is_ascii_lower(char c)
{
    return c >= 'a' && c <= 'z';
}

// Is the byte before position i (exclusive) the end of a letter? ASCII letters, or any multi-byte char
// whose category is a letter.
static int letter_before(const char *s, size_t i)
{
    if (i == 0)
        return 0;
    unsigned char c = (unsigned char)s[i - 1];
    if (c < 0x80)
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    size_t j = i - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80)
        j--;
    utf8proc_int32_t cp;
    if (utf8proc_iterate((const utf8proc_uint8_t *)s + j, (utf8proc_ssize_t)(i - j), &cp) <= 0)
        return 0;
    utf8proc_category_t cat = utf8proc_category(cp);
    return cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LU;
}

size_t sd_text_dehyphenate(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        // "letter -\n lowercase": drop the hyphen and the line break (the word continues).
        if (s[i] == '-' && i + 2 < n && s[i + 1] == '\n' && is_ascii_lower(s[i + 2]) && letter_before(s, i) &&
            i >= 2 && s[i - 2] != '-' && s[i - 2] != ' ' && s[i - 2] != '\n') {
            i++; // skip '-' and '\n'
            continue;
        }
        s[o++] = s[i];
    }
    s[o] = 0;
    return o;
}

const char *sd_page_quality_str(enum sd_page_quality q)
{
    switch (q) {
    case SD_PAGE_OK: return "ok";
    case SD_PAGE_EMPTY: return "empty";
    case SD_PAGE_GARBLED: return "garbled";
    }
    return "?";
}

static int is_vowel(char c)
{
    c = (char)(c | 0x20);
    return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' || c == 'y';
}

enum sd_page_quality sd_text_page_quality(const char *s, size_t n)
{
    size_t visible = 0, alnum = 0, bad = 0, words = 0, odd_words = 0, punct = 0;
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            bad++;
            visible++;
            i++;
            continue;
        }
        i += (size_t)k;
        if (cp == ' ' || cp == '\n' || cp == '\t')
            continue;
        visible++;
        utf8proc_category_t cat = utf8proc_category(cp);
        if (cp == 0xFFFD || cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CC)
            bad++;
        else if (cat <= UTF8PROC_CATEGORY_NO && cat >= UTF8PROC_CATEGORY_LU)
            alnum++;
        else if (cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO)
            punct++; // dot leaders, index commas: neutral
    }
    if (visible < 16)
        return SD_PAGE_EMPTY;
    if (bad * 5 > visible || alnum * 5 < (visible - punct) * 2)
        return SD_PAGE_GARBLED;
    // Letter soup: many ASCII "words" of 3+ letters without a vowel (Latin text has few).
    for (i = 0; i < n;) {
        while (i < n && !((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z'))
            i++;
        size_t st = i;
        int vowel = 0;
        while (i < n && (s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z')
            vowel |= is_vowel(s[i++]);
        if (i - st >= 3) {
            words++;
            odd_words += !vowel;
        }
    }
    if (words >= 20 && odd_words * 2 > words)
        return SD_PAGE_GARBLED;
    return SD_PAGE_OK;
}

struct sd_hf {
    GHashTable *counts; // key (line shape) -> page count
    GHashTable *found;  // keys judged header/footer
    size_t n_pages;     // pages with text
};

struct sd_hf *sd_hf_new(void)
{
    struct sd_hf *hf = calloc(1, sizeof *hf);
    if (!hf)
        return NULL;
    hf->counts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    hf->found = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return hf;
}

void sd_hf_free(struct sd_hf *hf)
{
    if (!hf)
        return;
    g_hash_table_destroy(hf->counts);
    g_hash_table_destroy(hf->found);
    free(hf);
}

// Shape of a line: ASCII lower-cased, digit runs folded to '#', spaces dropped. 0 if unusable.
static int line_key(const char *l, size_t n, char *key)
{
    if (n == 0 || n > HF_KEY_MAX)
        return 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = l[i];
        if (c == ' ')
            continue;
        if (c >= '0' && c <= '9') {
            if (o == 0 || key[o - 1] != '#')
                key[o++] = '#';
            continue;
        }
        key[o++] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
    }
    key[o] = 0;
    return o > 0;
}

// Collect up to HF_LINES non-empty lines from the top and from the bottom: offsets and lengths.
static size_t edge_lines(const char *t, size_t n, size_t *off, size_t *len)
{
    size_t cnt = 0;
    size_t i = 0;
    // top
    while (i < n && cnt < HF_LINES) {
        size_t e = i;
        while (e < n && t[e] != '\n')
            e++;
        if (e > i) {
            off[cnt] = i;
            len[cnt] = e - i;
            cnt++;
        }
        i = e + 1;
    }
    size_t top_end = i;
    // bottom, not overlapping the top lines
    size_t b = n, nb = 0;
    while (b > top_end && nb < HF_LINES) {
        size_t e = b;
        size_t st = e;
        while (st > top_end && t[st - 1] != '\n')
            st--;
        if (e > st) {
            off[cnt] = st;
            len[cnt] = e - st;
            cnt++;
            nb++;
        }
        if (st == 0)
            break;
        b = st - 1;
    }
    return cnt;
}

void sd_hf_add_page(struct sd_hf *hf, const char *text, size_t n)
{
    if (!hf || n == 0)
        return;
    size_t off[2 * HF_LINES], len[2 * HF_LINES];
    size_t cnt = edge_lines(text, n, off, len);
    if (!cnt)
        return;
    hf->n_pages++;
    char keys[2 * HF_LINES][HF_KEY_MAX + 1];
    for (size_t i = 0; i < cnt; i++) {
        if (!line_key(text + off[i], len[i], keys[i]))
            continue;
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++)
            dup = !strcmp(keys[i], keys[j]);
        if (dup)
            continue;
        gpointer v = g_hash_table_lookup(hf->counts, keys[i]);
        g_hash_table_replace(hf->counts, g_strdup(keys[i]), GSIZE_TO_POINTER(GPOINTER_TO_SIZE(v) + 1));
    }
}

void sd_hf_finish(struct sd_hf *hf)
{
    if (!hf || hf->n_pages < HF_MIN_PAGES)
        return;
    size_t need = (size_t)(hf->n_pages * HF_MIN_SHARE + 0.999);
    if (need < 3)
        need = 3;
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, hf->counts);
    while (g_hash_table_iter_next(&it, &k, &v))
        if (GPOINTER_TO_SIZE(v) >= need)
            g_hash_table_add(hf->found, g_strdup(k));
    g_hash_table_remove_all(hf->counts);
}

size_t sd_hf_count(const struct sd_hf *hf)
{
    return hf ? g_hash_table_size(hf->found) : 0;
}

size_t sd_hf_strip(const struct sd_hf *hf, char *text, size_t n)
{
    if (!hf || !g_hash_table_size(hf->found) || n == 0)
        return n;
    size_t off[2 * HF_LINES], len[2 * HF_LINES];
    size_t cnt = edge_lines(text, n, off, len);
    char drop[2 * HF_LINES] = {0};
    char key[HF_KEY_MAX + 1];
    for (size_t i = 0; i < cnt; i++)
        drop[i] = line_key(text + off[i], len[i], key) && g_hash_table_contains(hf->found, key);
    // Blank the dropped lines (including their newline), then compact.
    for (size_t i = 0; i < cnt; i++)
        if (drop[i]) {
            size_t e = off[i] + len[i];
            if (e < n && text[e] == '\n')
                e++;
            memset(text + off[i], 0, e - off[i]);
        }
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        if (text[i])
            text[o++] = text[i];
    while (o > 0 && text[o - 1] == '\n')
        o--;
    size_t st = 0;
    while (st < o && text[st] == '\n')
        st++;
    memmove(text, text + st, o - st);
    o -= st;
    text[o] = 0;
    return o;
}
