// tokenizer.c: HF tokenizer.json BPE tokenizers (see tokenizer.h). Owns loading (json-c), the
// normalizer / pre-tokenizer / post-processor / decoder pipeline, added-token matching, and the
// rank-ordered BPE merge (heap over a linked list of symbols, per-call piece cache).
// Byte-level vocabularies are converted to raw bytes at load time, so encoding never builds the
// GPT-2 unicode alphabet strings; SentencePiece-style vocabularies keep their "▁" pieces.
#include "tokenizer.h"
#include "tokenizer_json.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <json.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef SD_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

#define SD_TOK_MAX_JSON_BYTES (512u << 20) // refuse absurd tokenizer files
#define SD_TOK_MAX_TEXT_BYTES ((size_t)1 << 31)
#define SD_TOK_CACHE_MAX_PIECE 128
#define SD_TOK_CACHE_MAX_ENTRIES (1u << 17)

// ---------------------------------------------------------------------------------------------
// Small containers
// ---------------------------------------------------------------------------------------------

struct buf {
    char *p;
    size_t n, cap;
};

static bool buf_reserve(struct buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static bool buf_add(struct buf *b, const void *s, size_t n)
{
    if (!buf_reserve(b, n))
        return false;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

static uint32_t hash_bytes(const void *s, size_t n)
{
    const unsigned char *p = s;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return (uint32_t)h;
}

// String -> int32 map; keys are copied into the map's own pool.
struct smap_ent {
    uint32_t hash, off, len;
    int32_t val; // -1 = empty slot
};

struct smap {
    struct smap_ent *e;
    uint32_t cap, n;
    struct buf pool;
};

static void smap_free(struct smap *m)
{
    free(m->e);
    free(m->pool.p);
    memset(m, 0, sizeof *m);
}

static bool smap_init(struct smap *m, uint32_t expect)
{
    uint32_t cap = 16;
    while (cap < expect * 2)
        cap *= 2;
    m->e = malloc(sizeof *m->e * cap);
    if (!m->e)
        return false;
    for (uint32_t i = 0; i < cap; i++)
        m->e[i].val = -1;
    m->cap = cap;
    m->n = 0;
    return true;
}

static int32_t smap_get(const struct smap *m, const char *s, size_t n)
{
    if (!m->cap)
        return -1;
    uint32_t h = hash_bytes(s, n), mask = m->cap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        const struct smap_ent *e = &m->e[i];
        if (e->val < 0)
            return -1;
        if (e->hash == h && e->len == n && memcmp(m->pool.p + e->off, s, n) == 0)
            return e->val;
    }
}

static bool smap_grow(struct smap *m)
{
    struct smap_ent *old = m->e;
    uint32_t oldcap = m->cap, cap = oldcap * 2;
    struct smap_ent *e = malloc(sizeof *e * cap);
    if (!e)
        return false;
    for (uint32_t i = 0; i < cap; i++)
        e[i].val = -1;
    for (uint32_t i = 0; i < oldcap; i++) {
        if (old[i].val < 0)
            continue;
        uint32_t j = old[i].hash & (cap - 1);
        while (e[j].val >= 0)
            j = (j + 1) & (cap - 1);
        e[j] = old[i];
    }
    free(old);
    m->e = e;
    m->cap = cap;
    return true;
}

// Insert or overwrite.
static bool smap_put(struct smap *m, const char *s, size_t n, int32_t val)
{
    if ((m->n + 1) * 2 > m->cap && !smap_grow(m))
        return false;
    uint32_t h = hash_bytes(s, n), mask = m->cap - 1;
    uint32_t i = h & mask;
    for (;; i = (i + 1) & mask) {
        struct smap_ent *e = &m->e[i];
        if (e->val < 0)
            break;
        if (e->hash == h && e->len == n && memcmp(m->pool.p + e->off, s, n) == 0) {
            e->val = val;
            return true;
        }
    }
    size_t off = m->pool.n;
    if (!buf_add(&m->pool, s, n))
        return false;
    m->e[i] = (struct smap_ent){h, (uint32_t)off, (uint32_t)n, val};
    m->n++;
    return true;
}

// (left id, right id) -> (rank, merged id).
struct merge_ent {
    uint64_t key; // UINT64_MAX = empty
    int32_t rank, out;
};

static inline uint64_t merge_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static inline uint32_t merge_hash(uint64_t k)
{
    k *= 0x9e3779b97f4a7c15ull;
    return (uint32_t)(k >> 32);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer object
// ---------------------------------------------------------------------------------------------

enum norm_kind { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_PREPEND, NORM_REPLACE, NORM_LOWERCASE_ASCII };

struct norm_op {
    enum norm_kind kind;
    char *a; // Prepend: string; Replace: literal pattern (NULL when re is set)
    size_t a_len;
    char *b; // Replace: content
    size_t b_len;
    pcre2_code *re; // Replace with Regex
};

enum split_behavior { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };

enum pre_kind { PRE_SPLIT, PRE_BYTELEVEL_PREFIX, PRE_DIGITS, PRE_METASPACE };

struct pre_op {
    enum pre_kind kind;
    pcre2_code *re; // Split (Regex); ByteLevel use_regex uses the GPT-2 pattern
    char *lit;      // Split (String)
    size_t lit_len;
    enum split_behavior behavior;
    bool invert;
    bool individual_digits;
    char *repl; // Metaspace replacement
    size_t repl_len;
    int prepend; // Metaspace: 0 never, 1 always, 2 first
    bool ms_split;
    bool add_prefix_space; // ByteLevel
};

struct added_tok {
    char *s;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word;
};

struct sd_tokenizer {
    int32_t n_vocab;
    // per id: bytes this token decodes to (raw), and flags
    uint32_t *dec_off, *dec_len;
    struct buf dec_pool;
    uint8_t *flags; // 1 = present, 2 = special, 4 = added
    // model
    bool byte_level; // vocab keys are raw bytes (decoded from the GPT-2 alphabet)
    bool byte_fallback;
    bool ignore_merges;
    bool fuse_unk;
    int32_t unk_id;
    int32_t byte_id[256]; // byte-level: id of each single byte; byte_fallback: id of <0xNN>
    struct smap vocab;    // model-level string -> id
    struct merge_ent *merges;
    uint32_t merges_cap;
    // pipeline
    struct norm_op *norms;
    size_t n_norms;
    struct pre_op *pres;
    size_t n_pres;
    struct added_tok *added;
    size_t n_added;
    int32_t *added_by_byte[256]; // indices into added, sorted by length desc, -1 terminated
    struct smap added_map;
    // post-processor
    int32_t *prefix_ids, *suffix_ids;
    size_t n_prefix, n_suffix;
    int32_t bos, eos;
    // decoder
    size_t dec_strip_start; // leading spaces removed from the decoded text
};

// GPT-2 byte <-> unicode alphabet.
static void byte_unicode_table(uint32_t cp_of_byte[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        cp_of_byte[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

// Decode one UTF-8 char at s (n bytes available); returns its length or 0 if invalid.
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if ((c & 0xe0) == 0xc0) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

// Length of the valid UTF-8 prefix of s.
static size_t utf8_valid_prefix(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t l = utf8_decode(p + i, n - i, &cp);
        if (!l)
            return i;
        i += l;
    }
    return n;
}

// Byte-level alphabet string -> raw bytes. Returns false if a char is outside the alphabet.
static bool bytelevel_to_raw(const int16_t *byte_of_cp, const char *s, size_t n, struct buf *out)
{
    out->n = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_decode(p + i, n - i, &cp);
        if (!l || cp >= 512 || byte_of_cp[cp] < 0)
            return false;
        char c = (char)byte_of_cp[cp];
        if (!buf_add(out, &c, 1))
            return false;
        i += l;
    }
    return true;
}

static bool merge_put(struct sd_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t out)
{
    uint64_t k = merge_key(a, b);
    uint32_t mask = t->merges_cap - 1;
    for (uint32_t i = merge_hash(k) & mask;; i = (i + 1) & mask) {
        if (t->merges[i].key == UINT64_MAX) {
            t->merges[i] = (struct merge_ent){k, rank, out};
            return true;
        }
        if (t->merges[i].key == k)
            return true; // first (lowest rank) wins, as in HF
    }
}

static inline const struct merge_ent *merge_get(const struct sd_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t k = merge_key(a, b);
    uint32_t mask = t->merges_cap - 1;
    for (uint32_t i = merge_hash(k) & mask;; i = (i + 1) & mask) {
        const struct merge_ent *e = &t->merges[i];
        if (e->key == k)
            return e;
        if (e->key == UINT64_MAX)
            return NULL;
    }
}

void sd_tokenizer_free(struct sd_tokenizer *t)
{
    if (!t)
        return;
    free(t->dec_off);
    free(t->dec_len);
    free(t->dec_pool.p);
    free(t->flags);
    smap_free(&t->vocab);
    free(t->merges);
    for (size_t i = 0; i < t->n_norms; i++) {
        free(t->norms[i].a);
        free(t->norms[i].b);
        if (t->norms[i].re)
            pcre2_code_free(t->norms[i].re);
    }
    free(t->norms);
    for (size_t i = 0; i < t->n_pres; i++) {
        if (t->pres[i].re)
            pcre2_code_free(t->pres[i].re);
        free(t->pres[i].lit);
        free(t->pres[i].repl);
    }
    free(t->pres);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].s);
    free(t->added);
    for (int b = 0; b < 256; b++)
        free(t->added_by_byte[b]);
    smap_free(&t->added_map);
    free(t->prefix_ids);
    free(t->suffix_ids);
    free(t);
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

static const char *jstr(struct json_object *o, const char *key, size_t *len)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    if (len)
        *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

static struct json_object *jget(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

static bool jbool(struct json_object *o, const char *key, bool def)
{
    struct json_object *v = jget(o, key);
    return v ? json_object_get_boolean(v) : def;
}

static char *dupmem(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static enum sd_status compile_regex(const char *pat, size_t len, pcre2_code **out, const char *path, struct sd_err *err)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: regex '%.80s' does not compile with PCRE2 at offset %zu: %s",
                          path, pat, (size_t)eo, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // optional speed-up; interpreter used if JIT unavailable
    *out = re;
    return SD_OK;
}

static enum sd_status load_normalizer(struct sd_tokenizer *t, struct json_object *n, const char *path,
                                      struct sd_err *err)
{
    if (!n)
        return SD_OK;
    const char *type = jstr(n, "type", NULL);
    if (!type)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: normalizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        struct json_object *arr = jget(n, "normalizers");
        size_t cnt = arr ? json_object_array_length(arr) : 0;
        for (size_t i = 0; i < cnt; i++) {
            enum sd_status s = load_normalizer(t, json_object_array_get_idx(arr, i), path, err);
            if (s)
                return s;
        }
        return SD_OK;
    }
    struct norm_op op = {0};
    if (!strcmp(type, "NFC") || !strcmp(type, "NFD") || !strcmp(type, "NFKC") || !strcmp(type, "NFKD")) {
#ifndef SD_HAVE_UTF8PROC
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "%s: normalizer %s needs utf8proc; rebuild with libutf8proc (SD_HAVE_UTF8PROC)", path, type);
#endif
        op.kind = !strcmp(type, "NFC")    ? NORM_NFC
                  : !strcmp(type, "NFD")  ? NORM_NFD
                  : !strcmp(type, "NFKC") ? NORM_NFKC
                                          : NORM_NFKD;
    } else if (!strcmp(type, "Prepend")) {
        size_t l;
        const char *s = jstr(n, "prepend", &l);
        if (!s)
            return sd_err_set(err, SD_ERR_FORMAT, "%s: Prepend normalizer without 'prepend'", path);
        op.kind = NORM_PREPEND;
        op.a = dupmem(s, l);
        op.a_len = l;
        if (!op.a)
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
    } else if (!strcmp(type, "Replace")) {
        struct json_object *pat = jget(n, "pattern");
        size_t pl, cl;
        const char *c = jstr(n, "content", &cl);
        const char *ps = jstr(pat, "String", &pl);
        const char *pr = jstr(pat, "Regex", &pl);
        if (!c || (!ps && !pr))
            return sd_err_set(err, SD_ERR_FORMAT, "%s: Replace normalizer needs pattern.String/Regex and content",
                              path);
        op.kind = NORM_REPLACE;
        op.b = dupmem(c, cl);
        op.b_len = cl;
        if (ps) {
            op.a = dupmem(ps, pl);
            op.a_len = pl;
            if (pl == 0)
                return sd_err_set(err, SD_ERR_FORMAT, "%s: Replace normalizer with an empty pattern", path);
        } else {
            enum sd_status s = compile_regex(pr, pl, &op.re, path, err);
            if (s) {
                free(op.b);
                return s;
            }
        }
        if (!op.b || (ps && !op.a)) {
            free(op.a);
            free(op.b);
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
        }
    } else if (!strcmp(type, "Lowercase")) {
        op.kind = NORM_LOWERCASE_ASCII;
    } else {
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported", path, type);
    }
    struct norm_op *p = realloc(t->norms, sizeof *p * (t->n_norms + 1));
    if (!p) {
        free(op.a);
        free(op.b);
        if (op.re)
            pcre2_code_free(op.re);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
    }
    t->norms = p;
    t->norms[t->n_norms++] = op;
    return SD_OK;
}

static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static enum sd_status push_pre(struct sd_tokenizer *t, struct pre_op *op, const char *path, struct sd_err *err)
{
    struct pre_op *p = realloc(t->pres, sizeof *p * (t->n_pres + 1));
    if (!p) {
        if (op->re)
            pcre2_code_free(op->re);
        free(op->lit);
        free(op->repl);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
    }
    t->pres = p;
    t->pres[t->n_pres++] = *op;
    return SD_OK;
}

static enum sd_status load_pretokenizer(struct sd_tokenizer *t, struct json_object *n, const char *path,
                                        struct sd_err *err)
{
    if (!n)
        return SD_OK;
    const char *type = jstr(n, "type", NULL);
    if (!type)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: pre_tokenizer without a type", path);
    enum sd_status s;
    struct pre_op op = {0};
    if (!strcmp(type, "Sequence")) {
        struct json_object *arr = jget(n, "pretokenizers");
        size_t cnt = arr ? json_object_array_length(arr) : 0;
        for (size_t i = 0; i < cnt; i++)
            if ((s = load_pretokenizer(t, json_object_array_get_idx(arr, i), path, err)))
                return s;
        return SD_OK;
    }
    if (!strcmp(type, "Split")) {
        struct json_object *pat = jget(n, "pattern");
        size_t pl;
        const char *ps = jstr(pat, "String", &pl);
        const char *pr = jstr(pat, "Regex", &pl);
        const char *beh = jstr(n, "behavior", NULL);
        if ((!ps && !pr) || !beh)
            return sd_err_set(err, SD_ERR_FORMAT, "%s: Split pre-tokenizer needs pattern and behavior", path);
        op.kind = PRE_SPLIT;
        op.invert = jbool(n, "invert", false);
        if (!strcmp(beh, "Removed"))
            op.behavior = SPLIT_REMOVED;
        else if (!strcmp(beh, "Isolated"))
            op.behavior = SPLIT_ISOLATED;
        else if (!strcmp(beh, "MergedWithPrevious"))
            op.behavior = SPLIT_MERGED_PREV;
        else if (!strcmp(beh, "MergedWithNext"))
            op.behavior = SPLIT_MERGED_NEXT;
        else if (!strcmp(beh, "Contiguous"))
            op.behavior = SPLIT_CONTIGUOUS;
        else
            return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: Split behavior '%s' is not supported", path, beh);
        if (ps) {
            if (pl == 0)
                return sd_err_set(err, SD_ERR_FORMAT, "%s: Split with an empty string pattern", path);
            op.lit = dupmem(ps, pl);
            op.lit_len = pl;
            if (!op.lit)
                return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
        } else if ((s = compile_regex(pr, pl, &op.re, path, err))) {
            return s;
        }
        return push_pre(t, &op, path, err);
    }
    if (!strcmp(type, "ByteLevel")) {
        t->byte_level = true;
        bool use_regex = jbool(n, "use_regex", true);
        if (jbool(n, "add_prefix_space", false)) {
            struct pre_op pp = {.kind = PRE_BYTELEVEL_PREFIX, .add_prefix_space = true};
            if ((s = push_pre(t, &pp, path, err)))
                return s;
        }
        if (use_regex) {
            op.kind = PRE_SPLIT;
            op.behavior = SPLIT_ISOLATED;
            if ((s = compile_regex(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, &op.re, path, err)))
                return s;
            return push_pre(t, &op, path, err);
        }
        return SD_OK;
    }
    if (!strcmp(type, "Digits")) {
        op.kind = PRE_DIGITS;
        op.individual_digits = jbool(n, "individual_digits", false);
        op.behavior = SPLIT_ISOLATED; // the match finder groups runs itself when !individual_digits
        return push_pre(t, &op, path, err);
    }
    if (!strcmp(type, "Metaspace")) {
        size_t rl = 0;
        const char *r = jstr(n, "replacement", &rl);
        if (!r) {
            r = "\xe2\x96\x81";
            rl = 3;
        }
        op.kind = PRE_METASPACE;
        op.repl = dupmem(r, rl);
        op.repl_len = rl;
        if (!op.repl || !rl) {
            free(op.repl);
            return sd_err_set(err, SD_ERR_FORMAT, "%s: Metaspace with an empty replacement", path);
        }
        const char *scheme = jstr(n, "prepend_scheme", NULL);
        if (scheme)
            op.prepend = !strcmp(scheme, "always") ? 1 : !strcmp(scheme, "first") ? 2 : 0;
        else
            op.prepend = jbool(n, "add_prefix_space", true) ? 1 : 0;
        op.ms_split = jbool(n, "split", true);
        return push_pre(t, &op, path, err);
    }
    return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", path, type);
}

static enum sd_status load_decoder(struct sd_tokenizer *t, struct json_object *d, const char *path, bool *replace_meta,
                                   bool *bytefallback, struct sd_err *err)
{
    if (!d)
        return SD_OK;
    const char *type = jstr(d, "type", NULL);
    if (!type)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: decoder without a type", path);
    if (!strcmp(type, "Sequence")) {
        struct json_object *arr = jget(d, "decoders");
        size_t cnt = arr ? json_object_array_length(arr) : 0;
        for (size_t i = 0; i < cnt; i++) {
            enum sd_status s =
                load_decoder(t, json_object_array_get_idx(arr, i), path, replace_meta, bytefallback, err);
            if (s)
                return s;
        }
        return SD_OK;
    }
    if (!strcmp(type, "ByteLevel") || !strcmp(type, "Fuse"))
        return SD_OK;
    if (!strcmp(type, "ByteFallback")) {
        *bytefallback = true;
        return SD_OK;
    }
    if (!strcmp(type, "Replace")) {
        size_t pl, cl;
        const char *p = jstr(jget(d, "pattern"), "String", &pl);
        const char *c = jstr(d, "content", &cl);
        if (p && c && !strcmp(p, "\xe2\x96\x81") && !strcmp(c, " ")) {
            *replace_meta = true;
            return SD_OK;
        }
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: only the Replace decoder '▁' -> ' ' is supported", path);
    }
    if (!strcmp(type, "Strip")) {
        size_t cl;
        const char *c = jstr(d, "content", &cl);
        struct json_object *st = jget(d, "start"), *sp = jget(d, "stop");
        if (!c || strcmp(c, " ") || (sp && json_object_get_int(sp) != 0))
            return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: only Strip decoders of leading spaces are supported", path);
        t->dec_strip_start += st ? (size_t)json_object_get_int(st) : 0;
        return SD_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        *replace_meta = true;
        const char *scheme = jstr(d, "prepend_scheme", NULL);
        bool prefix = scheme ? strcmp(scheme, "never") != 0 : jbool(d, "add_prefix_space", true);
        if (prefix)
            t->dec_strip_start += 1;
        return SD_OK;
    }
    return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: decoder type '%s' is not supported", path, type);
}

static enum sd_status load_ids_list(struct sd_tokenizer *t, struct json_object *specials, const char *name,
                                    int32_t **ids, size_t *n, const char *path, struct sd_err *err)
{
    struct json_object *sp = jget(specials, name);
    struct json_object *arr = jget(sp, "ids");
    if (!arr) {
        int32_t id = sd_tokenizer_token_id(t, name);
        if (id < 0)
            return sd_err_set(err, SD_ERR_FORMAT, "%s: post_processor special token '%s' is unknown", path, name);
        arr = NULL;
        int32_t *p = realloc(*ids, sizeof *p * (*n + 1));
        if (!p)
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
        *ids = p;
        p[(*n)++] = id;
        return SD_OK;
    }
    size_t cnt = json_object_array_length(arr);
    int32_t *p = realloc(*ids, sizeof *p * (*n + cnt + 1));
    if (!p)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
    *ids = p;
    for (size_t i = 0; i < cnt; i++)
        p[(*n)++] = json_object_get_int(json_object_array_get_idx(arr, i));
    return SD_OK;
}

static enum sd_status load_post(struct sd_tokenizer *t, struct json_object *pp, const char *path, bool *template_seen,
                                struct sd_err *err)
{
    if (!pp)
        return SD_OK;
    const char *type = jstr(pp, "type", NULL);
    if (!type)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: post_processor without a type", path);
    if (!strcmp(type, "Sequence")) {
        struct json_object *arr = jget(pp, "processors");
        size_t cnt = arr ? json_object_array_length(arr) : 0;
        for (size_t i = 0; i < cnt; i++) {
            enum sd_status s = load_post(t, json_object_array_get_idx(arr, i), path, template_seen, err);
            if (s)
                return s;
        }
        return SD_OK;
    }
    if (!strcmp(type, "ByteLevel"))
        return SD_OK;
    if (!strcmp(type, "TemplateProcessing")) {
        *template_seen = true;
        struct json_object *single = jget(pp, "single"), *specials = jget(pp, "special_tokens");
        size_t cnt = single ? json_object_array_length(single) : 0;
        bool after = false;
        for (size_t i = 0; i < cnt; i++) {
            struct json_object *it = json_object_array_get_idx(single, i);
            struct json_object *st = jget(it, "SpecialToken");
            if (jget(it, "Sequence")) {
                after = true;
                continue;
            }
            const char *name = jstr(st, "id", NULL);
            if (!name)
                return sd_err_set(err, SD_ERR_FORMAT, "%s: TemplateProcessing item %zu not understood", path, i);
            enum sd_status s = after ? load_ids_list(t, specials, name, &t->suffix_ids, &t->n_suffix, path, err)
                                     : load_ids_list(t, specials, name, &t->prefix_ids, &t->n_prefix, path, err);
            if (s)
                return s;
        }
        return SD_OK;
    }
    return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: post_processor type '%s' is not supported", path, type);
}

static int cmp_added_len_desc(const void *a, const void *b, void *ctx)
{
    const struct added_tok *ad = ctx;
    size_t la = ad[*(const int32_t *)a].len, lb = ad[*(const int32_t *)b].len;
    return la < lb ? 1 : la > lb ? -1 : 0;
}

// Token name from tokenizer_config.json: a string or an AddedToken object.
static const char *config_token(struct json_object *cfg, const char *key)
{
    struct json_object *v = jget(cfg, key);
    if (!v)
        return NULL;
    if (json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return jstr(v, "content", NULL);
}

static enum sd_status tokenizer_build(struct json_object *root, struct json_object *cfg, const char *path,
                                      struct sd_tokenizer **out, struct sd_err *err);

enum sd_status sd_tokenizer_load(const char *path, struct sd_tokenizer **out, struct sd_err *err)
{
    struct json_object *root = NULL, *cfg = NULL;
    if (!path || !out)
        return sd_err_set(err, SD_ERR_ARG, "sd_tokenizer_load: path and out are required");
    *out = NULL;

    FILE *f = fopen(path, "rb");
    if (!f)
        return sd_err_set(err, SD_ERR_IO, "cannot open tokenizer '%s'; check the model directory", path);
    fseek(f, 0, SEEK_END);
    long fl = ftell(f);
    fclose(f);
    if (fl <= 0 || (unsigned long)fl > SD_TOK_MAX_JSON_BYTES)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: size %ld is not a plausible tokenizer.json", path, fl);
    root = json_object_from_file(path);
    if (!root) { // json-c's message ends in a newline and may be NULL
        const char *je = json_util_get_last_err();
        size_t jn = je ? strcspn(je, "\n") : 0;
        return sd_err_set(err, SD_ERR_FORMAT, "%s: not valid JSON (%.*s)", path, (int)jn, je ? je : "");
    }

    // tokenizer_config.json beside it
    {
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path + 1) : 0;
        char *cp = malloc(dl + 32);
        if (cp) {
            memcpy(cp, path, dl);
            strcpy(cp + dl, "tokenizer_config.json");
            FILE *cf = fopen(cp, "rb");
            if (cf) {
                fclose(cf);
                cfg = json_object_from_file(cp);
            }
            free(cp);
        }
    }
    enum sd_status st = tokenizer_build(root, cfg, path, out, err);
    json_object_put(root);
    if (cfg)
        json_object_put(cfg);
    return st;
}

enum sd_status sd_tokenizer_from_json(struct json_object *root, struct json_object *cfg, const char *label,
                                      struct sd_tokenizer **out, struct sd_err *err)
{
    if (!root || !label || !out)
        return sd_err_set(err, SD_ERR_ARG, "sd_tokenizer_from_json: root, label and out are required");
    *out = NULL;
    return tokenizer_build(root, cfg, label, out, err);
}

// Build from a parsed tokenizer.json (root) and optional tokenizer_config.json (cfg); borrows both.
static enum sd_status tokenizer_build(struct json_object *root, struct json_object *cfg, const char *path,
                                      struct sd_tokenizer **out, struct sd_err *err)
{
    enum sd_status st = SD_OK;
    struct sd_tokenizer *t = NULL;
    struct buf tmp = {0};
    t = calloc(1, sizeof *t);
    if (!t) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
        goto out;
    }
    t->unk_id = -1;
    t->bos = t->eos = -1;
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;

    struct json_object *model = jget(root, "model");
    const char *mtype = jstr(model, "type", NULL);
    struct json_object *vocab = jget(model, "vocab"), *merges = jget(model, "merges");
    if (!model || !vocab || !json_object_is_type(vocab, json_type_object)) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: model.vocab missing", path);
        goto out;
    }
    if (mtype && strcmp(mtype, "BPE")) {
        st = sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)", path, mtype);
        goto out;
    }
    {
        size_t l1 = 0, l2 = 0;
        const char *p1 = jstr(model, "continuing_subword_prefix", &l1), *p2 = jstr(model, "end_of_word_suffix", &l2);
        if ((p1 && l1) || (p2 && l2)) {
            st = sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: BPE subword prefix/suffix is not supported", path);
            goto out;
        }
    }
    t->byte_fallback = jbool(model, "byte_fallback", false);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    t->fuse_unk = jbool(model, "fuse_unk", false);

    // Pipeline first: ByteLevel decides how vocab keys are stored.
    if ((st = load_normalizer(t, jget(root, "normalizer"), path, err)))
        goto out;
    if ((st = load_pretokenizer(t, jget(root, "pre_tokenizer"), path, err)))
        goto out;

    // n_vocab
    int32_t max_id = -1;
    size_t nv = 0;
    {
        json_object_object_foreach(vocab, k, v)
        {
            (void)k;
            int32_t id = json_object_get_int(v);
            if (id < 0 || id > (1 << 26)) {
                st = sd_err_set(err, SD_ERR_FORMAT, "%s: vocab id %d out of range", path, id);
                goto out;
            }
            if (id > max_id)
                max_id = id;
            nv++;
        }
    }
    struct json_object *added = jget(root, "added_tokens");
    size_t n_added = added ? json_object_array_length(added) : 0;
    for (size_t i = 0; i < n_added; i++) {
        int32_t id = json_object_get_int(jget(json_object_array_get_idx(added, i), "id"));
        if (id < 0 || id > (1 << 26)) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: added token id %d out of range", path, id);
            goto out;
        }
        if (id > max_id)
            max_id = id;
    }
    t->n_vocab = max_id + 1;
    t->dec_off = calloc((size_t)t->n_vocab, sizeof *t->dec_off);
    t->dec_len = calloc((size_t)t->n_vocab, sizeof *t->dec_len);
    t->flags = calloc((size_t)t->n_vocab, 1);
    if (!t->dec_off || !t->dec_len || !t->flags || !smap_init(&t->vocab, (uint32_t)nv + 16) ||
        !smap_init(&t->added_map, (uint32_t)n_added + 16)) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
        goto out;
    }

    // decoder (needs to know about ▁ replacement and byte fallback for per-token bytes)
    bool dec_replace_meta = false, dec_bytefallback = false;
    if ((st = load_decoder(t, jget(root, "decoder"), path, &dec_replace_meta, &dec_bytefallback, err)))
        goto out;

    uint32_t cp_of_byte[256];
    int16_t byte_of_cp[512];
    byte_unicode_table(cp_of_byte);
    for (int i = 0; i < 512; i++)
        byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++)
        byte_of_cp[cp_of_byte[b]] = (int16_t)b;

    {
        json_object_object_foreach(vocab, k, v)
        {
            int32_t id = json_object_get_int(v);
            size_t kl = strlen(k);
            const char *key = k;
            size_t keyl = kl;
            if (t->byte_level) {
                // entries outside the byte alphabet (special tokens listed in the vocab too) keep their text
                if (bytelevel_to_raw(byte_of_cp, k, kl, &tmp)) {
                    key = tmp.p ? tmp.p : "";
                    keyl = tmp.n;
                }
            }
            if (!smap_put(&t->vocab, key, keyl, id)) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
                goto out;
            }
            // decoded bytes
            size_t off = t->dec_pool.n;
            bool ok = true;
            unsigned hx;
            if (!t->byte_level && dec_bytefallback && kl == 6 && sscanf(k, "<0x%2X>", &hx) == 1 && k[5] == '>') {
                char c = (char)hx;
                ok = buf_add(&t->dec_pool, &c, 1);
            } else if (!t->byte_level && dec_replace_meta) {
                for (size_t i = 0; ok && i < kl;) {
                    if (i + 3 <= kl && !memcmp(k + i, "\xe2\x96\x81", 3)) {
                        ok = buf_add(&t->dec_pool, " ", 1);
                        i += 3;
                    } else {
                        ok = buf_add(&t->dec_pool, k + i, 1);
                        i++;
                    }
                }
            } else {
                ok = buf_add(&t->dec_pool, key, keyl);
            }
            if (!ok) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
                goto out;
            }
            t->dec_off[id] = (uint32_t)off;
            t->dec_len[id] = (uint32_t)(t->dec_pool.n - off);
            t->flags[id] |= 1;
        }
    }

    // single-byte ids
    for (int b = 0; b < 256; b++) {
        if (t->byte_level) {
            char c = (char)b;
            t->byte_id[b] = smap_get(&t->vocab, &c, 1);
        } else if (t->byte_fallback) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_id[b] = smap_get(&t->vocab, name, 6);
        }
    }
    {
        const char *unk = jstr(model, "unk_token", NULL);
        if (unk)
            t->unk_id = smap_get(&t->vocab, unk, strlen(unk));
    }

    // merges
    size_t nm = merges ? json_object_array_length(merges) : 0;
    t->merges_cap = 16;
    while (t->merges_cap < nm * 2 + 16)
        t->merges_cap *= 2;
    t->merges = malloc(sizeof *t->merges * t->merges_cap);
    if (!t->merges) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
        goto out;
    }
    for (uint32_t i = 0; i < t->merges_cap; i++)
        t->merges[i].key = UINT64_MAX;
    {
        struct buf ka = {0}, kb = {0};
        for (size_t i = 0; i < nm; i++) {
            struct json_object *m = json_object_array_get_idx(merges, i);
            const char *a, *b;
            size_t al, bl;
            if (json_object_is_type(m, json_type_string)) {
                const char *s = json_object_get_string(m);
                const char *sp = strchr(s, ' ');
                if (!sp || strchr(sp + 1, ' ')) {
                    st = sd_err_set(err, SD_ERR_FORMAT, "%s: merge %zu '%s' is not 'a b'", path, i, s);
                    break;
                }
                a = s, al = (size_t)(sp - s), b = sp + 1, bl = strlen(sp + 1);
            } else if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2) {
                struct json_object *ja = json_object_array_get_idx(m, 0), *jb = json_object_array_get_idx(m, 1);
                a = json_object_get_string(ja), al = (size_t)json_object_get_string_len(ja);
                b = json_object_get_string(jb), bl = (size_t)json_object_get_string_len(jb);
            } else {
                st = sd_err_set(err, SD_ERR_FORMAT, "%s: merge %zu is neither 'a b' nor [a, b]", path, i);
                break;
            }
            // model-level keys
            if (t->byte_level) {
                if (!bytelevel_to_raw(byte_of_cp, a, al, &ka) || !bytelevel_to_raw(byte_of_cp, b, bl, &kb)) {
                    st = sd_err_set(err, SD_ERR_FORMAT, "%s: merge %zu has chars outside the byte alphabet", path, i);
                    break;
                }
            } else {
                ka.n = kb.n = 0;
                if (!buf_add(&ka, a, al) || !buf_add(&kb, b, bl)) {
                    st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
                    break;
                }
            }
            int32_t ia = smap_get(&t->vocab, ka.p ? ka.p : "", ka.n), ib = smap_get(&t->vocab, kb.p ? kb.p : "", kb.n);
            tmp.n = 0;
            if (!buf_add(&tmp, ka.p ? ka.p : "", ka.n) || !buf_add(&tmp, kb.p ? kb.p : "", kb.n)) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
                break;
            }
            int32_t io = smap_get(&t->vocab, tmp.p, tmp.n);
            if (ia < 0 || ib < 0 || io < 0) {
                st = sd_err_set(err, SD_ERR_FORMAT,
                                "%s: merge %zu ('%.40s' + '%.40s') refers to tokens not in the vocab", path, i, a, b);
                break;
            }
            merge_put(t, ia, ib, (int32_t)i, io);
        }
        free(ka.p);
        free(kb.p);
        if (st)
            goto out;
    }

    // added tokens
    t->added = calloc(n_added ? n_added : 1, sizeof *t->added);
    if (!t->added) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
        goto out;
    }
    for (size_t i = 0; i < n_added; i++) {
        struct json_object *a = json_object_array_get_idx(added, i);
        size_t cl;
        const char *c = jstr(a, "content", &cl);
        if (!c || !cl) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: added token %zu without content", path, i);
            goto out;
        }
        struct added_tok *at = &t->added[t->n_added];
        at->s = dupmem(c, cl);
        at->len = cl;
        at->id = json_object_get_int(jget(a, "id"));
        at->special = jbool(a, "special", false);
        at->lstrip = jbool(a, "lstrip", false);
        at->rstrip = jbool(a, "rstrip", false);
        at->single_word = jbool(a, "single_word", false);
        if (!at->s || !smap_put(&t->added_map, c, cl, at->id)) {
            free(at->s);
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
            goto out;
        }
        t->n_added++;
        size_t off = t->dec_pool.n;
        if (!buf_add(&t->dec_pool, c, cl)) {
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
            goto out;
        }
        t->dec_off[at->id] = (uint32_t)off;
        t->dec_len[at->id] = (uint32_t)cl;
        t->flags[at->id] |= 1 | 4 | (at->special ? 2 : 0);
    }
    {
        size_t cnt[256] = {0};
        for (size_t i = 0; i < t->n_added; i++)
            cnt[(unsigned char)t->added[i].s[0]]++;
        for (int b = 0; b < 256; b++) {
            if (!cnt[b])
                continue;
            int32_t *l = malloc(sizeof *l * (cnt[b] + 1));
            if (!l) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
                goto out;
            }
            size_t k = 0;
            for (size_t i = 0; i < t->n_added; i++)
                if ((unsigned char)t->added[i].s[0] == b)
                    l[k++] = (int32_t)i;
            qsort_r(l, k, sizeof *l, cmp_added_len_desc, t->added);
            l[k] = -1;
            t->added_by_byte[b] = l;
        }
    }

    // bos / eos and post-processing
    {
        const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
        if (bos)
            t->bos = sd_tokenizer_token_id(t, bos);
        if (eos)
            t->eos = sd_tokenizer_token_id(t, eos);
        bool template_seen = false;
        if ((st = load_post(t, jget(root, "post_processor"), path, &template_seen, err)))
            goto out;
        if (template_seen) {
            if (t->bos < 0 && t->n_prefix > 0)
                t->bos = t->prefix_ids[0];
        } else {
            // No template: tokenizer_config decides (LlamaTokenizerFast add_bos_token); a named BOS without
            // an explicit setting is added (Llama-3 ships its BOS template only in the original repo).
            bool add_bos = t->bos >= 0 && (cfg ? jbool(cfg, "add_bos_token", true) : true);
            bool add_eos = t->eos >= 0 && cfg && jbool(cfg, "add_eos_token", false);
            if (add_bos) {
                t->prefix_ids = malloc(sizeof(int32_t));
                if (!t->prefix_ids) {
                    st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
                    goto out;
                }
                t->prefix_ids[0] = t->bos;
                t->n_prefix = 1;
            }
            if (add_eos) {
                t->suffix_ids = malloc(sizeof(int32_t));
                if (!t->suffix_ids) {
                    st = sd_err_set(err, SD_ERR_NOMEM, "out of memory loading %s", path);
                    goto out;
                }
                t->suffix_ids[0] = t->eos;
                t->n_suffix = 1;
            }
        }
    }

out:
    free(tmp.p);
    if (st) {
        sd_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SD_OK;
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

struct span {
    size_t off, len;
};

struct sym {
    int32_t id, prev, next;
};

struct heap_ent {
    int32_t rank, pos, left, right;
};

struct cache_val {
    uint32_t off, n;
};

struct enc {
    const struct sd_tokenizer *t;
    struct buf norm, a, b;
    struct span *sp, *sp2;
    size_t n_sp, cap_sp, n_sp2, cap_sp2;
    struct sym *syms;
    size_t cap_syms;
    struct heap_ent *heap;
    size_t n_heap, cap_heap;
    int32_t *out;
    size_t n_out, cap_out;
    struct smap cache;
    struct cache_val *cvals;
    size_t n_cvals, cap_cvals;
    int32_t *cids;
    size_t n_cids, cap_cids;
    pcre2_match_data *md;
    bool first_segment;
};

#define GROW(ptr, cap, need) (((need) <= (cap)) ? true : grow_array((void **)&(ptr), &(cap), (need), sizeof *(ptr)))

static bool grow_array(void **p, size_t *cap, size_t need, size_t elt)
{
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *np = realloc(*p, c * elt);
    if (!np)
        return false;
    *p = np;
    *cap = c;
    return true;
}

static bool emit(struct enc *e, int32_t id)
{
    if (!GROW(e->out, e->cap_out, e->n_out + 1))
        return false;
    e->out[e->n_out++] = id;
    return true;
}

static bool heap_push(struct enc *e, struct heap_ent h)
{
    if (!GROW(e->heap, e->cap_heap, e->n_heap + 1))
        return false;
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        struct heap_ent *q = &e->heap[p];
        if (q->rank < h.rank || (q->rank == h.rank && q->pos < h.pos))
            break;
        e->heap[i] = *q;
        i = p;
    }
    e->heap[i] = h;
    return true;
}

static struct heap_ent heap_pop(struct enc *e)
{
    struct heap_ent top = e->heap[0], last = e->heap[--e->n_heap];
    size_t n = e->n_heap, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && (e->heap[c + 1].rank < e->heap[c].rank ||
                          (e->heap[c + 1].rank == e->heap[c].rank && e->heap[c + 1].pos < e->heap[c].pos)))
            c++;
        if (last.rank < e->heap[c].rank || (last.rank == e->heap[c].rank && last.pos < e->heap[c].pos))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = last;
    return top;
}

static bool push_pair(struct enc *e, int32_t left)
{
    struct sym *s = e->syms;
    int32_t right = s[left].next;
    if (right < 0)
        return true;
    const struct merge_ent *m = merge_get(e->t, s[left].id, s[right].id);
    if (!m)
        return true;
    return heap_push(e, (struct heap_ent){m->rank, left, s[left].id, s[right].id});
}

// BPE on one pre-tokenized piece (model-level string); appends ids to e->out.
static enum sd_status bpe_piece(struct enc *e, const char *p, size_t n, struct sd_err *err)
{
    const struct sd_tokenizer *t = e->t;
    if (n == 0)
        return SD_OK;
    if (t->ignore_merges) {
        int32_t id = smap_get(&t->vocab, p, n);
        if (id >= 0)
            return emit(e, id) ? SD_OK : sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
    }
    bool cacheable = n <= SD_TOK_CACHE_MAX_PIECE;
    if (cacheable) {
        int32_t ci = smap_get(&e->cache, p, n);
        if (ci >= 0) {
            struct cache_val cv = e->cvals[ci];
            if (!GROW(e->out, e->cap_out, e->n_out + cv.n))
                return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
            memcpy(e->out + e->n_out, e->cids + cv.off, cv.n * sizeof(int32_t));
            e->n_out += cv.n;
            return SD_OK;
        }
    }
    size_t out0 = e->n_out;
    // initial symbols
    if (!GROW(e->syms, e->cap_syms, n))
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
    struct sym *s = e->syms;
    int32_t ns = 0;
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        if (t->byte_level) {
            int32_t id = t->byte_id[u[i]];
            if (id < 0)
                return sd_err_set(err, SD_ERR_FORMAT, "tokenizer has no token for byte 0x%02x", u[i]);
            s[ns++] = (struct sym){id, 0, 0};
            i++;
            continue;
        }
        uint32_t cp;
        size_t l = utf8_decode(u + i, n - i, &cp);
        if (!l)
            l = 1;
        int32_t id = smap_get(&t->vocab, p + i, l);
        if (id >= 0) {
            s[ns++] = (struct sym){id, 0, 0};
        } else {
            bool done = false;
            if (t->byte_fallback) {
                done = true;
                for (size_t k = 0; k < l; k++)
                    if (t->byte_id[u[i + k]] < 0)
                        done = false;
                if (done)
                    for (size_t k = 0; k < l; k++)
                        s[ns++] = (struct sym){t->byte_id[u[i + k]], 0, 0};
            }
            if (!done) {
                if (t->unk_id < 0)
                    return sd_err_set(err, SD_ERR_FORMAT, "text has a character the vocab lacks and no unk token");
                if (!(t->fuse_unk && ns > 0 && s[ns - 1].id == t->unk_id))
                    s[ns++] = (struct sym){t->unk_id, 0, 0};
            }
        }
        i += l;
    }
    for (int32_t i = 0; i < ns; i++) {
        s[i].prev = i - 1;
        s[i].next = i + 1 < ns ? i + 1 : -1;
    }
    e->n_heap = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (!push_pair(e, i))
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
    while (e->n_heap) {
        struct heap_ent h = heap_pop(e);
        struct sym *L = &s[h.pos];
        if (L->id != h.left || L->next < 0 || s[L->next].id != h.right)
            continue; // stale
        const struct merge_ent *m = merge_get(t, h.left, h.right);
        int32_t r = L->next;
        L->id = m->out;
        L->next = s[r].next;
        if (L->next >= 0)
            s[L->next].prev = h.pos;
        s[r].id = -1;
        if ((L->prev >= 0 && !push_pair(e, L->prev)) || !push_pair(e, h.pos))
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
    }
    for (int32_t i = 0; i >= 0 && ns > 0; i = s[i].next)
        if (!emit(e, s[i].id))
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
    if (cacheable && e->cache.n < SD_TOK_CACHE_MAX_ENTRIES) {
        size_t k = e->n_out - out0;
        if (GROW(e->cids, e->cap_cids, e->n_cids + k) && GROW(e->cvals, e->cap_cvals, e->n_cvals + 1)) {
            memcpy(e->cids + e->n_cids, e->out + out0, k * sizeof(int32_t));
            e->cvals[e->n_cvals] = (struct cache_val){(uint32_t)e->n_cids, (uint32_t)k};
            if (smap_put(&e->cache, p, n, (int32_t)e->n_cvals)) {
                e->n_cvals++;
                e->n_cids += k;
            }
        }
    }
    return SD_OK;
}

// Apply the normalizers to text into e->norm.
static enum sd_status normalize(struct enc *e, const char *text, size_t len, struct sd_err *err)
{
    const struct sd_tokenizer *t = e->t;
    e->norm.n = 0;
    if (!buf_add(&e->norm, text, len))
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
    for (size_t k = 0; k < t->n_norms; k++) {
        const struct norm_op *op = &t->norms[k];
        struct buf *o = &e->a;
        o->n = 0;
        bool ok = true;
        switch (op->kind) {
        case NORM_NFC:
        case NORM_NFD:
        case NORM_NFKC:
        case NORM_NFKD: {
            bool ascii = true;
            for (size_t i = 0; i < e->norm.n && ascii; i++)
                ascii = !((unsigned char)e->norm.p[i] & 0x80);
            if (ascii)
                continue;
#ifdef SD_HAVE_UTF8PROC
            // Only runs containing non-ASCII text are normalized: an ASCII char never composes with what
            // precedes it, so a run starts at the ASCII char before the first non-ASCII byte (it may be a
            // base for combining marks) and ends before the next ASCII char.
            utf8proc_option_t opt = UTF8PROC_STABLE;
            opt |= (op->kind == NORM_NFC || op->kind == NORM_NFKC) ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
            if (op->kind == NORM_NFKC || op->kind == NORM_NFKD)
                opt |= UTF8PROC_COMPAT;
            const char *src = e->norm.p;
            size_t n = e->norm.n, i = 0;
            while (ok && i < n) {
                size_t k = i;
                while (k < n && !((unsigned char)src[k] & 0x80))
                    k++;
                if (k == n) {
                    ok = buf_add(o, src + i, n - i);
                    break;
                }
                size_t start = k > i ? k - 1 : k, end = k;
                while (end < n && ((unsigned char)src[end] & 0x80))
                    end++;
                ok = buf_add(o, src + i, start - i);
                utf8proc_uint8_t *res = NULL;
                utf8proc_ssize_t rl =
                    utf8proc_map((const utf8proc_uint8_t *)src + start, (utf8proc_ssize_t)(end - start), &res, opt);
                if (rl < 0)
                    return sd_err_set(err, SD_ERR_ARG, "unicode normalization failed: %s", utf8proc_errmsg(rl));
                ok = ok && buf_add(o, res, (size_t)rl);
                free(res);
                i = end;
            }
            break;
#else
            return sd_err_set(err, SD_ERR_UNSUPPORTED, "unicode normalization needs utf8proc");
#endif
        }
        case NORM_PREPEND:
            if (e->norm.n == 0)
                continue;
            ok = buf_add(o, op->a, op->a_len) && buf_add(o, e->norm.p, e->norm.n);
            break;
        case NORM_LOWERCASE_ASCII:
            ok = buf_add(o, e->norm.p, e->norm.n);
            for (size_t i = 0; ok && i < o->n; i++)
                if (o->p[i] >= 'A' && o->p[i] <= 'Z')
                    o->p[i] = (char)(o->p[i] - 'A' + 'a');
            break;
        case NORM_REPLACE:
            if (op->re) {
                size_t pos = 0;
                while (ok && pos <= e->norm.n) {
                    int rc =
                        pcre2_match(op->re, (PCRE2_SPTR)e->norm.p, e->norm.n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
                    if (rc < 0)
                        break;
                    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
                    ok = buf_add(o, e->norm.p + pos, ov[0] - pos) && buf_add(o, op->b, op->b_len);
                    if (ov[1] == ov[0]) { // empty match: copy one char and move on
                        if (ov[1] >= e->norm.n) {
                            pos = e->norm.n + 1;
                            break;
                        }
                        uint32_t cp;
                        size_t l = utf8_decode((const unsigned char *)e->norm.p + ov[1], e->norm.n - ov[1], &cp);
                        ok = ok && buf_add(o, e->norm.p + ov[1], l ? l : 1);
                        pos = ov[1] + (l ? l : 1);
                    } else {
                        pos = ov[1];
                    }
                }
                if (pos < e->norm.n)
                    ok = ok && buf_add(o, e->norm.p + pos, e->norm.n - pos);
            } else {
                const char *s = e->norm.p, *end = s + e->norm.n;
                while (ok && s < end) {
                    const char *h = memmem(s, (size_t)(end - s), op->a, op->a_len);
                    if (!h) {
                        ok = buf_add(o, s, (size_t)(end - s));
                        break;
                    }
                    ok = buf_add(o, s, (size_t)(h - s)) && buf_add(o, op->b, op->b_len);
                    s = h + op->a_len;
                }
            }
            break;
        }
        if (!ok)
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
        struct buf tmp = e->norm;
        e->norm = e->a;
        e->a = tmp;
    }
    return SD_OK;
}

static bool push_span(struct enc *e, size_t off, size_t len)
{
    if (!GROW(e->sp2, e->cap_sp2, e->n_sp2 + 1))
        return false;
    e->sp2[e->n_sp2++] = (struct span){off, len};
    return true;
}

// Split one span by matches (regex or literal or digits) according to behavior; pushes into sp2.
static bool split_span(struct enc *e, const struct pre_op *op, const char *base, struct span s)
{
    const char *p = base + s.off;
    size_t n = s.len, pos = 0;
    bool prev_match = false;
    size_t pushed = 0;
    while (pos <= n) {
        size_t ms, me;
        bool found = false;
        if (op->kind == PRE_DIGITS) {
            size_t i = pos;
            while (i < n && !(p[i] >= '0' && p[i] <= '9'))
                i++;
            if (i < n) {
                ms = i;
                me = i + 1;
                if (!op->individual_digits)
                    while (me < n && p[me] >= '0' && p[me] <= '9')
                        me++;
                found = true;
            }
        } else if (op->re) {
            // Empty matches would only make empty pieces, which are dropped anyway: ask for non-empty ones.
            if (pos < n &&
                pcre2_match(op->re, (PCRE2_SPTR)p, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY, e->md, NULL) >= 0) {
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
                ms = ov[0];
                me = ov[1];
                found = me > ms;
            }
        } else if (op->lit) {
            if (pos < n) {
                const char *h = memmem(p + pos, n - pos, op->lit, op->lit_len);
                if (h) {
                    ms = (size_t)(h - p);
                    me = ms + op->lit_len;
                    found = true;
                }
            }
        }
        if (!found) {
            ms = me = n;
        }
        // segments: [pos, ms) non-match, [ms, me) match
        for (int part = 0; part < 2; part++) {
            size_t a = part == 0 ? pos : ms, b = part == 0 ? ms : me;
            if (b <= a)
                continue;
            bool is_match = (part == 1) != op->invert;
            switch (op->behavior) {
            case SPLIT_REMOVED:
                if (!is_match && !push_span(e, s.off + a, b - a))
                    return false;
                break;
            case SPLIT_ISOLATED:
                if (!push_span(e, s.off + a, b - a))
                    return false;
                break;
            case SPLIT_MERGED_PREV: // a match joins the piece before it unless that one is a match too
                if (is_match && !prev_match && pushed > 0) {
                    e->sp2[e->n_sp2 - 1].len = s.off + b - e->sp2[e->n_sp2 - 1].off;
                } else {
                    if (!push_span(e, s.off + a, b - a))
                        return false;
                    pushed++;
                }
                break;
            case SPLIT_MERGED_NEXT: // a match joins the piece after it unless that one is a match too
                if (!is_match && prev_match && pushed > 0) {
                    e->sp2[e->n_sp2 - 1].len = s.off + b - e->sp2[e->n_sp2 - 1].off;
                } else {
                    if (!push_span(e, s.off + a, b - a))
                        return false;
                    pushed++;
                }
                break;
            case SPLIT_CONTIGUOUS:
                if (is_match && prev_match && pushed > 0) {
                    e->sp2[e->n_sp2 - 1].len = s.off + b - e->sp2[e->n_sp2 - 1].off;
                } else {
                    if (!push_span(e, s.off + a, b - a))
                        return false;
                    pushed++;
                }
                break;
            }
            prev_match = is_match;
        }
        if (!found)
            break;
        pos = me;
    }
    return true;
}

// Pre-tokenize e->norm into pieces, then BPE each.
static enum sd_status pretokenize_and_bpe(struct enc *e, struct sd_err *err)
{
    const struct sd_tokenizer *t = e->t;
    if (e->norm.n == 0)
        return SD_OK;
    struct buf *cur = &e->norm, *other = &e->b;
    e->n_sp = 0;
    if (!GROW(e->sp, e->cap_sp, 1))
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
    e->sp[e->n_sp++] = (struct span){0, e->norm.n};
    for (size_t k = 0; k < t->n_pres; k++) {
        const struct pre_op *op = &t->pres[k];
        e->n_sp2 = 0;
        if (op->kind == PRE_BYTELEVEL_PREFIX || op->kind == PRE_METASPACE) {
            // text-rewriting step: build the new text in `other`
            other->n = 0;
            for (size_t i = 0; i < e->n_sp; i++) {
                const char *p = cur->p + e->sp[i].off;
                size_t n = e->sp[i].len, start = other->n;
                bool ok = true;
                if (op->kind == PRE_BYTELEVEL_PREFIX) {
                    if (n > 0 && p[0] != ' ')
                        ok = buf_add(other, " ", 1);
                    ok = ok && buf_add(other, p, n);
                    if (!ok || !push_span(e, start, other->n - start))
                        return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
                    continue;
                }
                bool starts =
                    n >= op->repl_len ? !memcmp(p, op->repl, op->repl_len) || p[0] == ' ' : n > 0 && p[0] == ' ';
                if (n > 0 && !starts && (op->prepend == 1 || (op->prepend == 2 && i == 0 && e->first_segment)))
                    ok = buf_add(other, op->repl, op->repl_len);
                for (size_t j = 0; ok && j < n; j++)
                    ok = p[j] == ' ' ? buf_add(other, op->repl, op->repl_len) : buf_add(other, p + j, 1);
                if (!ok)
                    return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
                if (!op->ms_split) {
                    if (!push_span(e, start, other->n - start))
                        return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
                    continue;
                }
                // split before each replacement char (MergedWithNext)
                size_t seg = start;
                for (size_t j = start; j < other->n;) {
                    if (j > seg && j + op->repl_len <= other->n && !memcmp(other->p + j, op->repl, op->repl_len)) {
                        if (!push_span(e, seg, j - seg))
                            return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
                        seg = j;
                    }
                    j += (j + op->repl_len <= other->n && !memcmp(other->p + j, op->repl, op->repl_len)) ? op->repl_len
                                                                                                         : 1;
                }
                if (other->n > seg && !push_span(e, seg, other->n - seg))
                    return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
            }
            struct buf *tmp = cur;
            cur = other;
            other = tmp;
        } else {
            for (size_t i = 0; i < e->n_sp; i++)
                if (!split_span(e, op, cur->p, e->sp[i]))
                    return sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
        }
        struct span *ts = e->sp;
        size_t tc = e->cap_sp;
        e->sp = e->sp2;
        e->cap_sp = e->cap_sp2;
        e->n_sp = e->n_sp2;
        e->sp2 = ts;
        e->cap_sp2 = tc;
    }
    for (size_t i = 0; i < e->n_sp; i++) {
        enum sd_status s = bpe_piece(e, cur->p + e->sp[i].off, e->sp[i].len, err);
        if (s)
            return s;
    }
    return SD_OK;
}

static enum sd_status encode_text(struct enc *e, const char *text, size_t len, struct sd_err *err)
{
    if (len == 0) {
        e->first_segment = false; // Metaspace "first": only text at offset 0 gets the prefix
        return SD_OK;
    }
    enum sd_status s = normalize(e, text, len, err);
    if (!s)
        s = pretokenize_and_bpe(e, err);
    e->first_segment = false;
    return s;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           ((unsigned char)c & 0x80);
}

enum sd_status sd_tokenizer_encode(const struct sd_tokenizer *t, const char *text, size_t len, int add_special,
                                   int32_t **ids, size_t *n_ids, struct sd_err *err)
{
    if (!t || (!text && len) || !ids || !n_ids)
        return sd_err_set(err, SD_ERR_ARG, "sd_tokenizer_encode: tokenizer, ids and n_ids are required");
    *ids = NULL;
    *n_ids = 0;
    if (len > SD_TOK_MAX_TEXT_BYTES)
        return sd_err_set(err, SD_ERR_RANGE, "text of %zu bytes is too long to encode at once; split it", len);
    size_t valid = utf8_valid_prefix(text, len);
    if (valid != len)
        return sd_err_set(err, SD_ERR_ARG, "text is not valid UTF-8 at byte %zu; clean it before encoding", valid);

    enum sd_status st = SD_OK;
    struct enc e = {.t = t, .first_segment = true};
    e.md = pcre2_match_data_create(8, NULL);
    if (!e.md || !smap_init(&e.cache, 1024)) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
        goto out;
    }
    if (add_special)
        for (size_t i = 0; i < t->n_prefix; i++)
            if (!emit(&e, t->prefix_ids[i])) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
                goto out;
            }

    size_t seg = 0, i = 0;
    while (i < len) {
        const int32_t *cand = t->added_by_byte[(unsigned char)text[i]];
        const struct added_tok *hit = NULL;
        for (; cand && *cand >= 0; cand++) {
            const struct added_tok *a = &t->added[*cand];
            if (a->len <= len - i && !memcmp(text + i, a->s, a->len)) {
                if (a->single_word &&
                    ((i > 0 && is_word(text[i - 1])) || (i + a->len < len && is_word(text[i + a->len]))))
                    continue;
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t seg_end = i, next = i + hit->len;
        if (hit->lstrip)
            while (seg_end > seg && is_space(text[seg_end - 1]))
                seg_end--;
        if (hit->rstrip)
            while (next < len && is_space(text[next]))
                next++;
        if ((st = encode_text(&e, text + seg, seg_end - seg, err)))
            goto out;
        if (!emit(&e, hit->id)) {
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
            goto out;
        }
        seg = i = next;
    }
    if ((st = encode_text(&e, text + seg, len - seg, err)))
        goto out;
    if (add_special)
        for (size_t k = 0; k < t->n_suffix; k++)
            if (!emit(&e, t->suffix_ids[k])) {
                st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
                goto out;
            }
    if (!e.out && !(e.out = malloc(sizeof(int32_t)))) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while encoding");
        goto out;
    }
    *ids = e.out;
    *n_ids = e.n_out;
    e.out = NULL;
out:
    free(e.out);
    free(e.norm.p);
    free(e.a.p);
    free(e.b.p);
    free(e.sp);
    free(e.sp2);
    free(e.syms);
    free(e.heap);
    free(e.cvals);
    free(e.cids);
    smap_free(&e.cache);
    if (e.md)
        pcre2_match_data_free(e.md);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Decoding and queries
// ---------------------------------------------------------------------------------------------

const char *sd_tokenizer_token_bytes(const struct sd_tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || id >= t->n_vocab || !(t->flags[id] & 1))
        return NULL;
    if (len)
        *len = t->dec_len[id];
    return t->dec_pool.p + t->dec_off[id];
}

enum sd_status sd_tokenizer_decode(const struct sd_tokenizer *t, const int32_t *ids, size_t n_ids, int skip_special,
                                   char **text, struct sd_err *err)
{
    if (!t || (!ids && n_ids) || !text)
        return sd_err_set(err, SD_ERR_ARG, "sd_tokenizer_decode: tokenizer and text are required");
    *text = NULL;
    struct buf raw = {0}, o = {0};
    enum sd_status st = SD_OK;
    if (!buf_reserve(&raw, 16)) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while decoding");
        goto out;
    }
    for (size_t i = 0; i < n_ids; i++) {
        size_t l;
        const char *p = sd_tokenizer_token_bytes(t, ids[i], &l);
        if (!p) {
            st = sd_err_set(err, SD_ERR_RANGE, "token id %d at position %zu is not in the vocabulary (n_vocab %d)",
                            ids[i], i, t->n_vocab);
            goto out;
        }
        if (skip_special && (t->flags[ids[i]] & 2))
            continue;
        if (!buf_add(&raw, p, l)) {
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while decoding");
            goto out;
        }
    }
    size_t start = 0;
    for (size_t k = 0; k < t->dec_strip_start && start < raw.n && raw.p[start] == ' '; k++)
        start++;
    // invalid UTF-8 (partial byte tokens) becomes U+FFFD, as HF's lossy decoding does
    if (!buf_reserve(&o, raw.n - start + 16)) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while decoding");
        goto out;
    }
    o.p[0] = '\0';
    for (size_t i = start; i < raw.n;) {
        size_t v = utf8_valid_prefix(raw.p + i, raw.n - i);
        bool ok = buf_add(&o, raw.p + i, v);
        i += v;
        if (i < raw.n) {
            ok = ok && buf_add(&o, "\xef\xbf\xbd", 3);
            i++;
            while (i < raw.n && ((unsigned char)raw.p[i] & 0xc0) == 0x80)
                i++;
        }
        if (!ok) {
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory while decoding");
            goto out;
        }
    }
    *text = o.p;
    o.p = NULL;
out:
    free(raw.p);
    free(o.p);
    return st;
}

int32_t sd_tokenizer_n_vocab(const struct sd_tokenizer *t)
{
    return t ? t->n_vocab : 0;
}

int32_t sd_tokenizer_bos(const struct sd_tokenizer *t)
{
    return t ? t->bos : -1;
}

int32_t sd_tokenizer_eos(const struct sd_tokenizer *t)
{
    return t ? t->eos : -1;
}

int32_t sd_tokenizer_token_id(const struct sd_tokenizer *t, const char *piece)
{
    if (!t || !piece)
        return -1;
    size_t n = strlen(piece);
    int32_t id = smap_get(&t->added_map, piece, n);
    if (id >= 0)
        return id;
    if (t->byte_level) {
        // piece as written in tokenizer.json (GPT-2 alphabet), else as raw text
        uint32_t cp_of_byte[256];
        int16_t byte_of_cp[512];
        byte_unicode_table(cp_of_byte);
        for (int i = 0; i < 512; i++)
            byte_of_cp[i] = -1;
        for (int b = 0; b < 256; b++)
            byte_of_cp[cp_of_byte[b]] = (int16_t)b;
        struct buf raw = {0};
        if (bytelevel_to_raw(byte_of_cp, piece, n, &raw))
            id = smap_get(&t->vocab, raw.p ? raw.p : "", raw.n);
        free(raw.p);
        if (id >= 0)
            return id;
    }
    return smap_get(&t->vocab, piece, n);
}

int sd_tokenizer_is_special(const struct sd_tokenizer *t, int32_t id)
{
    return t && id >= 0 && id < t->n_vocab && (t->flags[id] & 2) != 0;
}

enum sd_status sd_tokenizer_encode_cb(void *tok, const char *text, size_t len, int32_t **ids, size_t *n_ids,
                                      struct sd_err *err)
{
    return sd_tokenizer_encode(tok, text, len, 0, ids, n_ids, err);
}

int64_t sd_tokenizer_count_cb(void *tok, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (sd_tokenizer_encode(tok, text, len, 0, &ids, &n, NULL))
        return -1;
    free(ids);
    return (int64_t)n;
}
