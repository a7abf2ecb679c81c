// gguf.c: GGUF reader (see gguf.h). Owns the mmap, the bounds-checked cursor that walks the header,
// the metadata key/values (every type, arrays of scalars and of strings), the tensor infos with their
// byte ranges (inside the data section, aligned, non-overlapping), and name lookup (sorted index).
// Layout, from ggml docs/gguf.md: magic "GGUF", u32 version, u64 tensor count, u64 kv count; kvs as
// (string key, u32 type, value); tensor infos as (string name, u32 n_dims, u64 ne[n_dims], u32 type,
// u64 offset); padding to general.alignment (default 32); tensor data. Strings are u64 length + bytes.
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAX_COUNT ((uint64_t)1 << 24) // tensors or kvs; real models have < 100k
#define GGUF_MAX_NAME 256                  // bytes of a key or tensor name (ggml's limit is 64)
#define GGUF_DEFAULT_ALIGN 32

struct sd_gguf {
    char *path;
    const uint8_t *buf;
    size_t len;
    void *map; // non-NULL when we own an mmap
    size_t map_len;
    uint32_t version, alignment;
    size_t data_off;
    struct sd_gguf_kv *kv;
    size_t n_kv;
    struct sd_gguf_tensor *t;
    size_t n_t;
    size_t *kv_sorted, *t_sorted; // indices sorted by key / name
};

static const char *vtype_names[SD_GGUF_VTYPE_COUNT] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                                       "bool", "string", "array", "u64", "i64", "f64"};
static const size_t vtype_size[SD_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *sd_gguf_vtype_name(enum sd_gguf_vtype t)
{
    return (unsigned)t < SD_GGUF_VTYPE_COUNT ? vtype_names[t] : "unknown";
}

void sd_gguf_free(struct sd_gguf *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str);
    }
    free(g->kv);
    for (size_t i = 0; i < g->n_t; i++)
        free(g->t[i].name);
    free(g->t);
    free(g->kv_sorted);
    free(g->t_sorted);
    if (g->map)
        munmap(g->map, g->map_len);
    free(g->path);
    free(g);
}

// ------------------------------------------------------------------------------------------------ cursor

struct cur {
    const uint8_t *p;
    size_t len, off;
    const char *label;
    struct sd_err *err;
};

static uint64_t rd_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static enum sd_status need(struct cur *c, uint64_t n, const char *what)
{
    if (n > c->len - c->off)
        return sd_err_set(c->err, SD_ERR_FORMAT,
                          "%s: truncated at byte %zu reading %s (%llu bytes needed, %zu left); the file is damaged "
                          "or incomplete, download it again",
                          c->label, c->off, what, (unsigned long long)n, c->len - c->off);
    return SD_OK;
}

static enum sd_status rd_u32(struct cur *c, uint32_t *v, const char *what)
{
    enum sd_status st = need(c, 4, what);
    if (st)
        return st;
    *v = (uint32_t)rd_le(c->p + c->off, 4);
    c->off += 4;
    return SD_OK;
}

static enum sd_status rd_u64(struct cur *c, uint64_t *v, const char *what)
{
    enum sd_status st = need(c, 8, what);
    if (st)
        return st;
    *v = rd_le(c->p + c->off, 8);
    c->off += 8;
    return SD_OK;
}

// A string: u64 length + bytes. *s points into the buffer.
static enum sd_status rd_str(struct cur *c, const char **s, uint64_t *n, const char *what)
{
    enum sd_status st = rd_u64(c, n, what);
    if (st)
        return st;
    if (*n > c->len - c->off)
        return sd_err_set(c->err, SD_ERR_FORMAT, "%s: %s at byte %zu claims %llu bytes, only %zu remain", c->label,
                          what, c->off - 8, (unsigned long long)*n, c->len - c->off);
    *s = (const char *)c->p + c->off;
    c->off += (size_t)*n;
    return SD_OK;
}

// A name (key or tensor name): 1..GGUF_MAX_NAME bytes, no NUL; returned as an owned C string.
static enum sd_status rd_name(struct cur *c, char **out, const char *what)
{
    const char *s = NULL;
    uint64_t n = 0;
    enum sd_status st = rd_str(c, &s, &n, what);
    if (st)
        return st;
    if (n == 0 || n > GGUF_MAX_NAME || memchr(s, 0, (size_t)n))
        return sd_err_set(c->err, SD_ERR_FORMAT,
                          "%s: %s at byte %zu has length %llu or a NUL byte (must be 1..%d "
                          "bytes of text)",
                          c->label, what, c->off - (size_t)n - 8, (unsigned long long)n, GGUF_MAX_NAME);
    char *d = malloc((size_t)n + 1);
    if (!d)
        return sd_err_set(c->err, SD_ERR_NOMEM, "%s: out of memory", c->label);
    memcpy(d, s, (size_t)n);
    d[n] = 0;
    *out = d;
    return SD_OK;
}

// ------------------------------------------------------------------------------------------------ parse

static enum sd_status parse_kv(struct cur *c, struct sd_gguf_kv *kv)
{
    enum sd_status st;
    uint32_t ty;
    if ((st = rd_u32(c, &ty, "a value type")))
        return st;
    if (ty >= SD_GGUF_VTYPE_COUNT)
        return sd_err_set(c->err, SD_ERR_FORMAT, "%s: key \"%s\" has unknown value type %u", c->label, kv->key, ty);
    kv->type = (enum sd_gguf_vtype)ty;
    kv->data = c->p + c->off;
    if (ty == SD_GGUF_STRING) {
        const char *s;
        uint64_t n;
        return rd_str(c, &s, &n, "a string value");
    }
    if (ty != SD_GGUF_ARRAY) {
        if ((st = need(c, vtype_size[ty], "a scalar value")))
            return st;
        if (ty == SD_GGUF_BOOL && c->p[c->off] > 1)
            return sd_err_set(c->err, SD_ERR_FORMAT, "%s: key \"%s\" is a bool with value %u", c->label, kv->key,
                              c->p[c->off]);
        c->off += vtype_size[ty];
        return SD_OK;
    }
    uint32_t at;
    uint64_t n;
    if ((st = rd_u32(c, &at, "an array type")) || (st = rd_u64(c, &n, "an array length")))
        return st;
    if (at >= SD_GGUF_VTYPE_COUNT)
        return sd_err_set(c->err, SD_ERR_FORMAT, "%s: array \"%s\" has unknown element type %u", c->label, kv->key, at);
    if (at == SD_GGUF_ARRAY)
        return sd_err_set(c->err, SD_ERR_UNSUPPORTED,
                          "%s: array \"%s\" holds arrays; nested arrays are not "
                          "supported",
                          c->label, kv->key);
    kv->arr_type = (enum sd_gguf_vtype)at;
    kv->arr_n = n;
    kv->data = c->p + c->off;
    if (at != SD_GGUF_STRING) {
        if (n > (c->len - c->off) / vtype_size[at])
            return sd_err_set(c->err, SD_ERR_FORMAT,
                              "%s: array \"%s\" claims %llu elements of %s, more than the "
                              "%zu bytes left",
                              c->label, kv->key, (unsigned long long)n, vtype_names[at], c->len - c->off);
        if (at == SD_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->p[c->off + i] > 1)
                    return sd_err_set(c->err, SD_ERR_FORMAT, "%s: bool array \"%s\" element %llu is %u", c->label,
                                      kv->key, (unsigned long long)i, c->p[c->off + i]);
        c->off += (size_t)n * vtype_size[at];
        return SD_OK;
    }
    if (n > (c->len - c->off) / 8) // each string takes at least its 8-byte length
        return sd_err_set(c->err, SD_ERR_FORMAT,
                          "%s: string array \"%s\" claims %llu elements, more than fit in "
                          "the %zu bytes left",
                          c->label, kv->key, (unsigned long long)n, c->len - c->off);
    kv->str = malloc(sizeof *kv->str * (size_t)(n ? n : 1));
    if (!kv->str)
        return sd_err_set(c->err, SD_ERR_NOMEM, "%s: out of memory for array \"%s\"", c->label, kv->key);
    for (uint64_t i = 0; i < n; i++) {
        kv->str[i] = c->p + c->off;
        const char *s;
        uint64_t l;
        if ((st = rd_str(c, &s, &l, "a string array element")))
            return st;
    }
    return SD_OK;
}

static int cmp_kv_idx(const void *a, const void *b, void *ctx)
{
    const struct sd_gguf *g = ctx;
    return strcmp(g->kv[*(const size_t *)a].key, g->kv[*(const size_t *)b].key);
}

static int cmp_t_idx(const void *a, const void *b, void *ctx)
{
    const struct sd_gguf *g = ctx;
    return strcmp(g->t[*(const size_t *)a].name, g->t[*(const size_t *)b].name);
}

static int cmp_t_off(const void *a, const void *b, void *ctx)
{
    const struct sd_gguf *g = ctx;
    uint64_t x = g->t[*(const size_t *)a].offset, y = g->t[*(const size_t *)b].offset;
    return x < y ? -1 : x > y;
}

static enum sd_status parse_tensor(struct cur *c, struct sd_gguf *g, struct sd_gguf_tensor *t)
{
    enum sd_status st;
    uint32_t nd, ty;
    if ((st = rd_u32(c, &nd, "a tensor's dimension count")))
        return st;
    if (nd < 1 || nd > SD_GGUF_MAX_DIMS)
        return sd_err_set(c->err, SD_ERR_FORMAT, "%s: tensor \"%s\" has %u dimensions (1..%d allowed)", c->label,
                          t->name, nd, SD_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    int64_t ne = 1;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t d;
        if ((st = rd_u64(c, &d, "a tensor dimension")))
            return st;
        if (d == 0 || d > ((uint64_t)1 << 40) || (uint64_t)ne > ((uint64_t)1 << 50) / d)
            return sd_err_set(c->err, SD_ERR_FORMAT,
                              "%s: tensor \"%s\" dimension %u is %llu (must be 1..2^40, and "
                              "at most 2^50 elements in all)",
                              c->label, t->name, i, (unsigned long long)d);
        t->ne[i] = (int64_t)d;
        ne *= (int64_t)d;
    }
    for (int i = (int)nd; i < SD_GGUF_MAX_DIMS; i++)
        t->ne[i] = 1;
    t->n_elems = ne;
    if ((st = rd_u32(c, &ty, "a tensor type")) || (st = rd_u64(c, &t->offset, "a tensor offset")))
        return st;
    if (ty >= SD_Q_TYPE_LIMIT || sd_qtype_block((enum sd_qtype)ty) == 0)
        return sd_err_set(c->err, SD_ERR_FORMAT, "%s: tensor \"%s\" has unknown ggml type %u", c->label, t->name, ty);
    t->type = (enum sd_qtype)ty;
    int B = sd_qtype_block(t->type);
    if (t->ne[0] % B)
        return sd_err_set(c->err, SD_ERR_FORMAT,
                          "%s: tensor \"%s\" of type %s has a first dimension of %lld, not a "
                          "multiple of its block size %d",
                          c->label, t->name, sd_qtype_name(t->type), (long long)t->ne[0], B);
    t->n_bytes = (size_t)(ne / B) * sd_qtype_block_bytes(t->type);
    if (t->offset % g->alignment)
        return sd_err_set(c->err, SD_ERR_FORMAT, "%s: tensor \"%s\" offset %llu is not a multiple of the alignment %u",
                          c->label, t->name, (unsigned long long)t->offset, g->alignment);
    return SD_OK;
}

enum sd_status sd_gguf_parse(const uint8_t *buf, size_t len, const char *label, struct sd_gguf **out,
                             struct sd_err *err)
{
    *out = NULL;
    if (!label)
        label = "gguf";
    struct sd_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(label))) {
        free(g);
        return sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", label);
    }
    g->buf = buf;
    g->len = len;
    g->alignment = GGUF_DEFAULT_ALIGN;
    struct cur c = {buf, len, 0, g->path, err};
    enum sd_status st;
    uint32_t magic;
    uint64_t n_t, n_kv;
    if (len < 4 || memcmp(buf, "GGUF", 4) != 0) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: not a GGUF file (no \"GGUF\" magic at the start)", label);
        goto fail;
    }
    if ((st = rd_u32(&c, &magic, "the magic")) || (st = rd_u32(&c, &g->version, "the version")))
        goto fail;
    if (g->version != 2 && g->version != 3) {
        st = sd_err_set(err, SD_ERR_UNSUPPORTED,
                        "%s: GGUF version %u is not supported (2 and 3 are); convert the "
                        "model with a current llama.cpp",
                        label, g->version);
        goto fail;
    }
    if ((st = rd_u64(&c, &n_t, "the tensor count")) || (st = rd_u64(&c, &n_kv, "the metadata count")))
        goto fail;
    // Every kv takes >= 13 bytes (key length, key byte, type, 1-byte value) and every tensor info >= 33.
    if (n_kv > GGUF_MAX_COUNT || n_kv > (len - c.off) / 13 || n_t > GGUF_MAX_COUNT || n_t > (len - c.off) / 33) {
        st = sd_err_set(err, SD_ERR_FORMAT,
                        "%s: header claims %llu metadata entries and %llu tensors, more than a "
                        "%zu-byte file can hold",
                        label, (unsigned long long)n_kv, (unsigned long long)n_t, len);
        goto fail;
    }
    g->kv = calloc((size_t)n_kv + 1, sizeof *g->kv);
    g->t = calloc((size_t)n_t + 1, sizeof *g->t);
    g->kv_sorted = malloc(sizeof(size_t) * ((size_t)n_kv + 1));
    g->t_sorted = malloc(sizeof(size_t) * ((size_t)n_t + 1));
    if (!g->kv || !g->t || !g->kv_sorted || !g->t_sorted) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory for %llu tensor infos", label, (unsigned long long)n_t);
        goto fail;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        struct sd_gguf_kv *kv = &g->kv[g->n_kv];
        if ((st = rd_name(&c, &kv->key, "a metadata key")))
            goto fail;
        g->n_kv++;
        if ((st = parse_kv(&c, kv)))
            goto fail;
    }
    for (size_t i = 0; i < g->n_kv; i++)
        g->kv_sorted[i] = i;
    qsort_r(g->kv_sorted, g->n_kv, sizeof(size_t), cmp_kv_idx, g);
    for (size_t i = 1; i < g->n_kv; i++)
        if (!strcmp(g->kv[g->kv_sorted[i]].key, g->kv[g->kv_sorted[i - 1]].key)) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: metadata key \"%s\" appears twice", label,
                            g->kv[g->kv_sorted[i]].key);
            goto fail;
        }
    const struct sd_gguf_kv *al = sd_gguf_find_kv(g, "general.alignment");
    if (al) {
        uint64_t a = al->type == SD_GGUF_U32 ? rd_le(al->data, 4) : 0;
        if (al->type != SD_GGUF_U32 || a == 0 || (a & (a - 1)) || a > 65536) {
            st = sd_err_set(err, SD_ERR_FORMAT,
                            "%s: general.alignment must be a u32 power of two <= 65536 (got "
                            "type %s, value %llu)",
                            label, sd_gguf_vtype_name(al->type), (unsigned long long)a);
            goto fail;
        }
        g->alignment = (uint32_t)a;
    }
    for (uint64_t i = 0; i < n_t; i++) {
        struct sd_gguf_tensor *t = &g->t[g->n_t];
        if ((st = rd_name(&c, &t->name, "a tensor name")))
            goto fail;
        g->n_t++;
        if ((st = parse_tensor(&c, g, t)))
            goto fail;
    }
    {
        size_t a = g->alignment;
        size_t end = c.off;
        g->data_off = end + (a - end % a) % a;
        if (g->n_t > 0 && g->data_off > len) {
            st = sd_err_set(err, SD_ERR_FORMAT,
                            "%s: the tensor data section would start at byte %zu, past the end "
                            "of the %zu-byte file; the file is truncated",
                            label, g->data_off, len);
            goto fail;
        }
        if (g->data_off > len)
            g->data_off = len;
    }
    size_t data_len = len - g->data_off;
    for (size_t i = 0; i < g->n_t; i++) {
        struct sd_gguf_tensor *t = &g->t[i];
        if (t->offset > data_len || t->n_bytes > data_len - t->offset) {
            st =
                sd_err_set(err, SD_ERR_FORMAT,
                           "%s: tensor \"%s\" (%s, %zu bytes at data offset %llu) extends past "
                           "the end of the file (data section is %zu bytes); the file is truncated",
                           label, t->name, sd_qtype_name(t->type), t->n_bytes, (unsigned long long)t->offset, data_len);
            goto fail;
        }
        t->data = buf + g->data_off + t->offset;
        g->t_sorted[i] = i;
    }
    // Overlaps: sort by offset, each tensor must end before the next begins.
    qsort_r(g->t_sorted, g->n_t, sizeof(size_t), cmp_t_off, g);
    for (size_t i = 1; i < g->n_t; i++) {
        const struct sd_gguf_tensor *a = &g->t[g->t_sorted[i - 1]], *b = &g->t[g->t_sorted[i]];
        if (a->offset + a->n_bytes > b->offset) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: tensors \"%s\" and \"%s\" overlap (bytes %llu..%llu and %llu..)",
                            label, a->name, b->name, (unsigned long long)a->offset,
                            (unsigned long long)(a->offset + a->n_bytes), (unsigned long long)b->offset);
            goto fail;
        }
    }
    qsort_r(g->t_sorted, g->n_t, sizeof(size_t), cmp_t_idx, g);
    for (size_t i = 1; i < g->n_t; i++)
        if (!strcmp(g->t[g->t_sorted[i]].name, g->t[g->t_sorted[i - 1]].name)) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: tensor \"%s\" appears twice", label, g->t[g->t_sorted[i]].name);
            goto fail;
        }
    *out = g;
    return SD_OK;
fail:
    sd_gguf_free(g);
    return st;
}

enum sd_status sd_gguf_open(const char *path, struct sd_gguf **out, struct sd_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sd_err_set(err, errno == ENOENT ? SD_ERR_MISSING : SD_ERR_IO, "cannot open GGUF file %s: %s", path,
                          strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sd_err_set(err, SD_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 24) {
        close(fd);
        return sd_err_set(err, SD_ERR_FORMAT, "%s: %lld bytes is too small for a GGUF file", path,
                          (long long)sb.st_size);
    }
    size_t len = (size_t)sb.st_size;
    void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return sd_err_set(err, SD_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
    struct sd_gguf *g = NULL;
    enum sd_status st = sd_gguf_parse(m, len, path, &g, err);
    if (st) {
        munmap(m, len);
        return st;
    }
    g->map = m;
    g->map_len = len;
    *out = g;
    return SD_OK;
}

// ------------------------------------------------------------------------------------------------ access

const char *sd_gguf_path(const struct sd_gguf *g)
{
    return g->path;
}
uint32_t sd_gguf_version(const struct sd_gguf *g)
{
    return g->version;
}
uint32_t sd_gguf_alignment(const struct sd_gguf *g)
{
    return g->alignment;
}
size_t sd_gguf_data_offset(const struct sd_gguf *g)
{
    return g->data_off;
}
size_t sd_gguf_file_size(const struct sd_gguf *g)
{
    return g->len;
}
size_t sd_gguf_kv_count(const struct sd_gguf *g)
{
    return g->n_kv;
}
size_t sd_gguf_tensor_count(const struct sd_gguf *g)
{
    return g->n_t;
}

const struct sd_gguf_kv *sd_gguf_kv_at(const struct sd_gguf *g, size_t i)
{
    return i < g->n_kv ? &g->kv[i] : NULL;
}

const struct sd_gguf_tensor *sd_gguf_tensor_at(const struct sd_gguf *g, size_t i)
{
    return i < g->n_t ? &g->t[i] : NULL;
}

const struct sd_gguf_kv *sd_gguf_find_kv(const struct sd_gguf *g, const char *key)
{
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(key, g->kv[g->kv_sorted[mid]].key);
        if (c == 0)
            return &g->kv[g->kv_sorted[mid]];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct sd_gguf_tensor *sd_gguf_find_tensor(const struct sd_gguf *g, const char *name)
{
    size_t lo = 0, hi = g->n_t;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, g->t[g->t_sorted[mid]].name);
        if (c == 0)
            return &g->t[g->t_sorted[mid]];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int is_int_type(enum sd_gguf_vtype t)
{
    return t <= SD_GGUF_I32 || t == SD_GGUF_U64 || t == SD_GGUF_I64;
}

// Scalar integer of type t at p. Unsigned 64-bit values above INT64_MAX come back as -1 with *ok = 0.
static int64_t load_int(enum sd_gguf_vtype t, const uint8_t *p, int *ok)
{
    *ok = 1;
    switch (t) {
    case SD_GGUF_U8:
        return p[0];
    case SD_GGUF_I8:
        return (int8_t)p[0];
    case SD_GGUF_U16:
        return (int64_t)rd_le(p, 2);
    case SD_GGUF_I16:
        return (int16_t)rd_le(p, 2);
    case SD_GGUF_U32:
        return (int64_t)rd_le(p, 4);
    case SD_GGUF_I32:
        return (int32_t)rd_le(p, 4);
    case SD_GGUF_I64:
        return (int64_t)rd_le(p, 8);
    case SD_GGUF_U64: {
        uint64_t v = rd_le(p, 8);
        if (v > (uint64_t)INT64_MAX) {
            *ok = 0;
            return -1;
        }
        return (int64_t)v;
    }
    case SD_GGUF_BOOL:
        return p[0];
    default:
        *ok = 0;
        return 0;
    }
}

static double load_f64(enum sd_gguf_vtype t, const uint8_t *p)
{
    if (t == SD_GGUF_F32) {
        uint32_t u = (uint32_t)rd_le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (t == SD_GGUF_F64) {
        uint64_t u = rd_le(p, 8);
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    int ok;
    return (double)load_int(t, p, &ok);
}

enum sd_status sd_gguf_get_int(const struct sd_gguf *g, const char *key, int64_t lo, int64_t hi, int64_t *out,
                               struct sd_err *err)
{
    const struct sd_gguf_kv *kv = sd_gguf_find_kv(g, key);
    if (!kv)
        return sd_err_set(err, SD_ERR_MISSING, "%s: metadata key \"%s\" is missing", g->path, key);
    int ok = 0;
    int64_t v = is_int_type(kv->type) ? load_int(kv->type, kv->data, &ok) : 0;
    if (!ok)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: metadata \"%s\" must be an integer (is %s)", g->path, key,
                          sd_gguf_vtype_name(kv->type));
    if (v < lo || v > hi)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: metadata \"%s\" = %lld is outside [%lld, %lld]", g->path, key,
                          (long long)v, (long long)lo, (long long)hi);
    *out = v;
    return SD_OK;
}

enum sd_status sd_gguf_get_f64(const struct sd_gguf *g, const char *key, double *out, struct sd_err *err)
{
    const struct sd_gguf_kv *kv = sd_gguf_find_kv(g, key);
    if (!kv)
        return sd_err_set(err, SD_ERR_MISSING, "%s: metadata key \"%s\" is missing", g->path, key);
    if (kv->type != SD_GGUF_F32 && kv->type != SD_GGUF_F64 && !is_int_type(kv->type))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: metadata \"%s\" must be a number (is %s)", g->path, key,
                          sd_gguf_vtype_name(kv->type));
    *out = load_f64(kv->type, kv->data);
    return SD_OK;
}

enum sd_status sd_gguf_get_bool(const struct sd_gguf *g, const char *key, int *out, struct sd_err *err)
{
    const struct sd_gguf_kv *kv = sd_gguf_find_kv(g, key);
    if (!kv)
        return sd_err_set(err, SD_ERR_MISSING, "%s: metadata key \"%s\" is missing", g->path, key);
    int ok = 0;
    int64_t v = kv->type == SD_GGUF_BOOL || is_int_type(kv->type) ? load_int(kv->type, kv->data, &ok) : 0;
    if (!ok)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: metadata \"%s\" must be a bool (is %s)", g->path, key,
                          sd_gguf_vtype_name(kv->type));
    *out = v != 0;
    return SD_OK;
}

enum sd_status sd_gguf_get_str(const struct sd_gguf *g, const char *key, const char **s, size_t *len,
                               struct sd_err *err)
{
    const struct sd_gguf_kv *kv = sd_gguf_find_kv(g, key);
    if (!kv)
        return sd_err_set(err, SD_ERR_MISSING, "%s: metadata key \"%s\" is missing", g->path, key);
    if (kv->type != SD_GGUF_STRING)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: metadata \"%s\" must be a string (is %s)", g->path, key,
                          sd_gguf_vtype_name(kv->type));
    *len = (size_t)rd_le(kv->data, 8);
    *s = (const char *)kv->data + 8;
    return SD_OK;
}

const char *sd_gguf_arr_str(const struct sd_gguf_kv *kv, uint64_t i, size_t *len)
{
    if (kv->type != SD_GGUF_ARRAY || kv->arr_type != SD_GGUF_STRING || i >= kv->arr_n)
        return NULL;
    *len = (size_t)rd_le(kv->str[i], 8);
    return (const char *)kv->str[i] + 8;
}

double sd_gguf_arr_f64(const struct sd_gguf_kv *kv, uint64_t i)
{
    if (kv->type != SD_GGUF_ARRAY || i >= kv->arr_n || kv->arr_type == SD_GGUF_STRING)
        return 0;
    return load_f64(kv->arr_type, kv->data + i * vtype_size[kv->arr_type]);
}

int64_t sd_gguf_arr_int(const struct sd_gguf_kv *kv, uint64_t i)
{
    if (kv->type != SD_GGUF_ARRAY || i >= kv->arr_n || kv->arr_type == SD_GGUF_STRING)
        return 0;
    if (kv->arr_type == SD_GGUF_F32 || kv->arr_type == SD_GGUF_F64)
        return (int64_t)load_f64(kv->arr_type, kv->data + i * vtype_size[kv->arr_type]);
    int ok;
    return load_int(kv->arr_type, kv->data + i * vtype_size[kv->arr_type], &ok);
}
