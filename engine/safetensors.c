// safetensors.c: HF safetensors reader. Owns the header parser (every size and offset from the
// file is checked before a tensor is exposed), mmap of single files and of shards listed by
// model.safetensors.index.json, the merged name-sorted tensor set (bsearch lookup), and FP8
// 128x128 block dequantization. Errors name the file and the tensor.
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) // bytes of JSON header we accept
#define ST_MAX_INDEX ((off_t)100 * 1000 * 1000)     // bytes of index.json we accept
#define ST_JSON_DEPTH 16                            // the header is 3 levels deep; refuse deep garbage

struct st_map {
    void *addr;
    size_t len;
};

struct sd_tensor_set {
    struct sd_tensor_info *t; // sorted by name once the set is complete
    size_t n, cap;
    char **files; // owned paths/labels, referenced by sd_tensor_info.file
    size_t n_files;
    struct st_map *maps;
    size_t n_maps;
};

void sd_tensor_set_free(struct sd_tensor_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        free(set->t[i].name);
    free(set->t);
    for (size_t i = 0; i < set->n_files; i++)
        free(set->files[i]);
    free(set->files);
    for (size_t i = 0; i < set->n_maps; i++)
        munmap(set->maps[i].addr, set->maps[i].len);
    free(set->maps);
    free(set);
}

size_t sd_tensor_set_count(const struct sd_tensor_set *set)
{
    return set ? set->n : 0;
}

const struct sd_tensor_info *sd_tensor_set_at(const struct sd_tensor_set *set, size_t i)
{
    if (!set || i >= set->n)
        return NULL;
    return &set->t[i];
}

static int cmp_info_name(const void *a, const void *b)
{
    const struct sd_tensor_info *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static int cmp_key_info(const void *key, const void *b)
{
    const struct sd_tensor_info *y = b;
    return strcmp(key, y->name);
}

const struct sd_tensor_info *sd_tensor_set_find(const struct sd_tensor_set *set, const char *name)
{
    if (!set || !name || set->n == 0)
        return NULL;
    return bsearch(name, set->t, set->n, sizeof set->t[0], cmp_key_info);
}

// Adds a copy of path to the set's file list; returns the owned copy or NULL on OOM.
static const char *set_add_file(struct sd_tensor_set *set, const char *path)
{
    char **f = realloc(set->files, (set->n_files + 1) * sizeof *f);
    if (!f)
        return NULL;
    set->files = f;
    char *s = strdup(path);
    if (!s)
        return NULL;
    set->files[set->n_files++] = s;
    return s;
}

static enum sd_status set_push(struct sd_tensor_set *set, const struct sd_tensor_info *ti, struct sd_err *err)
{
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        struct sd_tensor_info *t = realloc(set->t, cap * sizeof *t);
        if (!t)
            return sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory adding tensor '%s'", ti->file, ti->name);
        set->t = t;
        set->cap = cap;
    }
    set->t[set->n] = *ti;
    set->t[set->n].name = strdup(ti->name);
    if (!set->t[set->n].name)
        return sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory adding tensor '%s'", ti->file, ti->name);
    set->n++;
    return SD_OK;
}

struct st_range {
    uint64_t begin, end;
    size_t idx;
};

static int cmp_range(const void *a, const void *b)
{
    const struct st_range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

// Reads a non-negative JSON integer (no floats, strings or booleans). Returns 0 on success.
static int json_get_u64(struct json_object *o, uint64_t *out)
{
    if (!o || !json_object_is_type(o, json_type_int))
        return -1;
    int64_t v = json_object_get_int64(o);
    if (v < 0)
        return -1;
    if (v == INT64_MAX) { // json-c clamps big values: read them as unsigned to see if they fit
        uint64_t u = json_object_get_uint64(o);
        *out = u;
        return 0;
    }
    *out = (uint64_t)v;
    return 0;
}

// Parses one tensor entry into *ti (name/file are borrowed). data_len: size of the data section.
static enum sd_status parse_entry(const char *label, const char *name, struct json_object *val, const uint8_t *data,
                                  uint64_t data_len, struct sd_tensor_info *ti, uint64_t *begin_out,
                                  struct sd_err *err)
{
    struct json_object *jd, *js, *jo;
    memset(ti, 0, sizeof *ti);
    if (!json_object_is_type(val, json_type_object))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': header entry is not a JSON object", label, name);
    if (!json_object_object_get_ex(val, "dtype", &jd) || !json_object_is_type(jd, json_type_string))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", label, name);
    const char *dname = json_object_get_string(jd);
    if (sd_dtype_from_name(dname, &ti->dtype) != SD_OK)
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "%s: tensor '%s': unknown dtype \"%.40s\" (supported: F32 F16 BF16 F8_E4M3 I32 I64 U8 F64); "
                          "convert the checkpoint to a supported dtype",
                          label, name, dname);
    if (!json_object_object_get_ex(val, "shape", &js) || !json_object_is_type(js, json_type_array))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", label, name);
    size_t nd = json_object_array_length(js);
    if (nd > SD_MAX_DIMS)
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dimensions, at most %d supported", label,
                          name, nd, SD_MAX_DIMS);
    ti->n_dims = (int)nd;
    uint64_t n_elems = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (json_get_u64(json_object_array_get_idx(js, i), &d) != 0 || d > (uint64_t)INT64_MAX)
            return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", label,
                              name, i);
        ti->shape[i] = (int64_t)d;
        if (d != 0 && n_elems > (uint64_t)INT64_MAX / d)
            return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': element count overflows", label, name);
        n_elems *= d;
    }
    uint64_t esz = sd_dtype_size(ti->dtype);
    if (n_elems > UINT64_MAX / esz)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': byte size overflows", label, name);
    if (!json_object_object_get_ex(val, "data_offsets", &jo) || !json_object_is_type(jo, json_type_array) ||
        json_object_array_length(jo) != 2)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be an array [begin, end]",
                          label, name);
    uint64_t begin, end;
    if (json_get_u64(json_object_array_get_idx(jo, 0), &begin) != 0 ||
        json_get_u64(json_object_array_get_idx(jo, 1), &end) != 0)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': data_offsets must be non-negative integers", label,
                          name);
    if (begin > end)
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] has begin > end", label,
                          name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return sd_err_set(err, SD_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets end %llu is past the data section (%llu bytes); the file is "
                          "truncated or the header is wrong",
                          label, name, (unsigned long long)end, (unsigned long long)data_len);
    if (end - begin != n_elems * esz)
        return sd_err_set(err, SD_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets span %llu bytes but %s shape holds %llu elements (%llu bytes)",
                          label, name, (unsigned long long)(end - begin), sd_dtype_name(ti->dtype),
                          (unsigned long long)n_elems, (unsigned long long)(n_elems * esz));
    ti->n_elems = (int64_t)n_elems;
    ti->n_bytes = (size_t)(end - begin);
    ti->data = data + begin;
    *begin_out = begin;
    return SD_OK;
}

// Parses the file image buf[0..len) and appends its tensors to set. file: owned label stored
// in each tensor. Does not sort the set.
static enum sd_status parse_into(struct sd_tensor_set *set, const uint8_t *buf, size_t len, const char *file,
                                 struct sd_err *err)
{
    enum sd_status st = SD_OK;
    char *hdr = NULL;
    struct json_tokener *tok = NULL;
    struct json_object *root = NULL;
    struct st_range *ranges = NULL;
    size_t first = set->n;

    if (len < 8) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: truncated: %zu bytes, less than the 8-byte header length", file,
                        len);
        goto out;
    }
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--)
        hlen = hlen << 8 | buf[k];
    if (hlen > ST_MAX_HEADER) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit; not a safetensors "
                        "file or corrupt", file, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
        goto out;
    }
    if (hlen > len - 8) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: header length %llu is larger than the file (%zu bytes); the file is "
                        "truncated", file, (unsigned long long)hlen, len);
        goto out;
    }
    if (hlen < 2) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: header length %llu is too small for a JSON object", file,
                        (unsigned long long)hlen);
        goto out;
    }
    if (memchr(buf + 8, 0, (size_t)hlen)) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: JSON header contains a NUL byte", file);
        goto out;
    }
    hdr = malloc((size_t)hlen + 1);
    tok = json_tokener_new_ex(ST_JSON_DEPTH);
    if (!hdr || !tok) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory reading a %llu-byte header", file,
                        (unsigned long long)hlen);
        goto out;
    }
    memcpy(hdr, buf + 8, (size_t)hlen);
    hdr[hlen] = 0;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    root = json_tokener_parse_ex(tok, hdr, (int)hlen);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (!root || jerr != json_tokener_success) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: invalid JSON header at byte %zu: %s", file,
                        json_tokener_get_parse_end(tok),
                        jerr == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(jerr));
        goto out;
    }
    for (size_t p = json_tokener_get_parse_end(tok); p < hlen; p++) {
        if (hdr[p] != ' ' && hdr[p] != '\t' && hdr[p] != '\n' && hdr[p] != '\r') {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: trailing garbage after the JSON header at byte %zu", file, p);
            goto out;
        }
    }
    if (!json_object_is_type(root, json_type_object)) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: JSON header is not an object", file);
        goto out;
    }

    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = (uint64_t)len - 8 - hlen;
    size_t n_entries = (size_t)json_object_object_length(root);
    ranges = malloc((n_entries ? n_entries : 1) * sizeof *ranges);
    if (!ranges) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory (%zu header entries)", file, n_entries);
        goto out;
    }
    size_t n_ranges = 0;
    json_object_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        struct sd_tensor_info ti;
        uint64_t begin = 0;
        if ((st = parse_entry(file, key, val, data, data_len, &ti, &begin, err)) != SD_OK)
            goto out;
        ti.name = key;
        ti.file = file;
        if (ti.n_bytes) {
            ranges[n_ranges].begin = begin;
            ranges[n_ranges].end = begin + ti.n_bytes;
            ranges[n_ranges].idx = set->n;
            n_ranges++;
        }
        if ((st = set_push(set, &ti, err)) != SD_OK)
            goto out;
    }
    // No two non-empty tensors may share a byte.
    qsort(ranges, n_ranges, sizeof *ranges, cmp_range);
    for (size_t i = 1; i < n_ranges; i++) {
        if (ranges[i].begin < ranges[i - 1].end) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap (bytes [%llu, %llu) and [%llu, %llu))",
                            file, set->t[ranges[i - 1].idx].name, set->t[ranges[i].idx].name,
                            (unsigned long long)ranges[i - 1].begin, (unsigned long long)ranges[i - 1].end,
                            (unsigned long long)ranges[i].begin, (unsigned long long)ranges[i].end);
            goto out;
        }
    }
out:
    if (st != SD_OK) { // drop what this file added
        for (size_t i = first; i < set->n; i++)
            free(set->t[i].name);
        set->n = first;
    }
    free(ranges);
    if (root)
        json_object_put(root);
    if (tok)
        json_tokener_free(tok);
    free(hdr);
    return st;
}

// Sorts the set by name and rejects duplicate names (possible across shards, or via "\u0000" in keys).
static enum sd_status set_finish(struct sd_tensor_set *set, struct sd_err *err)
{
    if (set->n > 1)
        qsort(set->t, set->n, sizeof set->t[0], cmp_info_name);
    for (size_t i = 1; i < set->n; i++) {
        if (strcmp(set->t[i - 1].name, set->t[i].name) == 0)
            return sd_err_set(err, SD_ERR_FORMAT, "tensor '%s' appears twice (in %s and %s)", set->t[i].name,
                              set->t[i - 1].file, set->t[i].file);
    }
    return SD_OK;
}

static struct sd_tensor_set *set_new(void)
{
    return calloc(1, sizeof(struct sd_tensor_set));
}

enum sd_status sd_safetensors_parse(const uint8_t *buf, size_t len, const char *label, struct sd_tensor_set **out,
                                    struct sd_err *err)
{
    enum sd_status st;
    if (!out || (!buf && len))
        return sd_err_set(err, SD_ERR_ARG, "sd_safetensors_parse: NULL buffer or output");
    *out = NULL;
    struct sd_tensor_set *set = set_new();
    const char *file = set ? set_add_file(set, label ? label : "<memory>") : NULL;
    if (!file) {
        sd_tensor_set_free(set);
        return sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", label ? label : "<memory>");
    }
    if ((st = parse_into(set, buf ? buf : (const uint8_t *)"", len, file, err)) != SD_OK ||
        (st = set_finish(set, err)) != SD_OK) {
        sd_tensor_set_free(set);
        return st;
    }
    *out = set;
    return SD_OK;
}

// mmaps path (read-only, private) into the set and parses it. missing_status: status for ENOENT.
static enum sd_status map_and_parse(struct sd_tensor_set *set, const char *path, enum sd_status missing_status,
                                    struct sd_err *err)
{
    enum sd_status st = SD_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sd_err_set(err, errno == ENOENT ? missing_status : SD_ERR_IO, "%s: cannot open: %s", path,
                          strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = sd_err_set(err, SD_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = sd_err_set(err, SD_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    if (sb.st_size < 8) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: truncated: %lld bytes, less than the 8-byte header length", path,
                        (long long)sb.st_size);
        goto out;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = sd_err_set(err, SD_ERR_RANGE, "%s: too large to map on this system", path);
        goto out;
    }
    struct st_map *maps = realloc(set->maps, (set->n_maps + 1) * sizeof *maps);
    const char *file = maps ? (set->maps = maps, set_add_file(set, path)) : NULL;
    if (!file) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    size_t len = (size_t)sb.st_size;
    void *addr = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
        st = sd_err_set(err, SD_ERR_IO, "%s: mmap of %zu bytes failed: %s", path, len, strerror(errno));
        goto out;
    }
    set->maps[set->n_maps].addr = addr;
    set->maps[set->n_maps].len = len;
    set->n_maps++;
    st = parse_into(set, addr, len, file, err);
out:
    close(fd);
    return st;
}

enum sd_status sd_tensor_set_open_file(const char *path, struct sd_tensor_set **out, struct sd_err *err)
{
    enum sd_status st;
    if (!path || !out)
        return sd_err_set(err, SD_ERR_ARG, "sd_tensor_set_open_file: NULL path or output");
    *out = NULL;
    struct sd_tensor_set *set = set_new();
    if (!set)
        return sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", path);
    if ((st = map_and_parse(set, path, SD_ERR_MISSING, err)) != SD_OK || (st = set_finish(set, err)) != SD_OK) {
        sd_tensor_set_free(set);
        return st;
    }
    *out = set;
    return SD_OK;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static enum sd_status open_index(const char *dir, const char *index_path, struct sd_tensor_set *set,
                                 struct sd_err *err)
{
    enum sd_status st = SD_OK;
    struct json_object *root = NULL, *wm;
    const char **shards = NULL;
    char *text = NULL, *path = NULL;
    FILE *f = fopen(index_path, "rb");
    if (!f)
        return sd_err_set(err, SD_ERR_IO, "%s: cannot open: %s", index_path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > ST_MAX_INDEX) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: not a regular file under %lld bytes", index_path,
                        (long long)ST_MAX_INDEX);
        goto out;
    }
    text = malloc((size_t)sb.st_size + 1);
    if (!text) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", index_path);
        goto out;
    }
    size_t got = fread(text, 1, (size_t)sb.st_size, f);
    text[got] = 0;
    if (got != (size_t)sb.st_size || strlen(text) != got) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: short read or NUL byte in the index", index_path);
        goto out;
    }
    root = json_tokener_parse(text);
    if (!root || !json_object_is_type(root, json_type_object)) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: not a valid JSON object", index_path);
        goto out;
    }
    if (!json_object_object_get_ex(root, "weight_map", &wm) || !json_object_is_type(wm, json_type_object)) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto out;
    }
    size_t n = (size_t)json_object_object_length(wm), n_shards = 0;
    shards = malloc((n ? n : 1) * sizeof *shards);
    if (!shards) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", index_path);
        goto out;
    }
    json_object_object_foreach(wm, name, shard)
    {
        const char *s = json_object_is_type(shard, json_type_string) ? json_object_get_string(shard) : NULL;
        if (!s || !*s || strchr(s, '/') || s[0] == '.') {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: weight_map entry for tensor '%s' is not a plain shard file name",
                            index_path, name);
            goto out;
        }
        shards[n_shards++] = s;
    }
    qsort(shards, n_shards, sizeof *shards, cmp_str);
    for (size_t i = 0; i < n_shards; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0)
            continue;
        free(path);
        if (!(path = path_join(dir, shards[i]))) {
            st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", index_path);
            goto out;
        }
        if ((st = map_and_parse(set, path, SD_ERR_MISSING, err)) != SD_OK) {
            if (st == SD_ERR_MISSING) // say where the reference came from
                sd_err_set(err, st, "%s: shard '%s' listed in %s is missing; re-download the checkpoint", path,
                           shards[i], index_path);
            goto out;
        }
    }
    if ((st = set_finish(set, err)) != SD_OK)
        goto out;
    json_object_object_foreach(wm, name2, shard2)
    {
        const char *s = json_object_get_string(shard2);
        const struct sd_tensor_info *t = sd_tensor_set_find(set, name2);
        if (!t) {
            st = sd_err_set(err, SD_ERR_MISSING, "%s: tensor '%s' is listed for shard '%s' but that shard lacks it",
                            index_path, name2, s);
            goto out;
        }
        const char *base = strrchr(t->file, '/');
        base = base ? base + 1 : t->file;
        if (strcmp(base, s) != 0) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: tensor '%s' is listed for shard '%s' but found in %s",
                            index_path, name2, s, t->file);
            goto out;
        }
    }
out:
    free(path);
    free(shards);
    if (root)
        json_object_put(root);
    free(text);
    fclose(f);
    return st;
}

enum sd_status sd_tensor_set_open_dir(const char *dir, struct sd_tensor_set **out, struct sd_err *err)
{
    enum sd_status st;
    if (!dir || !out)
        return sd_err_set(err, SD_ERR_ARG, "sd_tensor_set_open_dir: NULL dir or output");
    *out = NULL;
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    struct sd_tensor_set *set = set_new();
    if (!single || !index || !set) {
        st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", dir);
        goto out;
    }
    struct stat sb;
    if (stat(single, &sb) == 0) {
        if ((st = map_and_parse(set, single, SD_ERR_MISSING, err)) == SD_OK)
            st = set_finish(set, err);
    } else if (stat(index, &sb) == 0) {
        st = open_index(dir, index, set, err);
    } else {
        st = sd_err_set(err, SD_ERR_MISSING,
                        "%s: neither model.safetensors nor model.safetensors.index.json found; is this a model "
                        "directory?",
                        dir);
    }
out:
    if (st == SD_OK)
        *out = set;
    else
        sd_tensor_set_free(set);
    free(single);
    free(index);
    return st;
}

enum sd_status sd_dequant_fp8_block(const struct sd_tensor_info *w, const struct sd_tensor_info *scale, int block,
                                    float *dst, struct sd_err *err)
{
    if (!w || !scale || !dst || block <= 0)
        return sd_err_set(err, SD_ERR_ARG, "sd_dequant_fp8_block: NULL tensor/output or block %d <= 0", block);
    if (w->dtype != SD_DTYPE_F8_E4M3 || w->n_dims != 2)
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: tensor '%s' is %s with %d dims; FP8 dequant needs 2-D F8_E4M3",
                          w->file ? w->file : "?", w->name, sd_dtype_name(w->dtype), w->n_dims);
    if (scale->dtype != SD_DTYPE_F32 && scale->dtype != SD_DTYPE_BF16 && scale->dtype != SD_DTYPE_F16)
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: scale tensor '%s' for '%s' is %s; expected F32, BF16 or F16",
                          scale->file ? scale->file : "?", scale->name, w->name, sd_dtype_name(scale->dtype));
    int64_t rows = w->shape[0], cols = w->shape[1];
    int64_t sr = (rows + block - 1) / block, sc = (cols + block - 1) / block;
    if (rows < 0 || cols < 0 || w->n_elems != rows * cols || w->n_bytes != (size_t)w->n_elems)
        return sd_err_set(err, SD_ERR_ARG, "tensor '%s': inconsistent shape/size", w->name);
    if (scale->n_dims != 2 || scale->shape[0] != sr || scale->shape[1] != sc ||
        scale->n_bytes != (size_t)(sr * sc) * sd_dtype_size(scale->dtype))
        return sd_err_set(err, SD_ERR_FORMAT,
                          "%s: scale tensor '%s' has shape [%lld, %lld] (%d dims) but weight '%s' [%lld, %lld] with "
                          "block %d needs [%lld, %lld]",
                          scale->file ? scale->file : "?", scale->name,
                          (long long)(scale->n_dims > 0 ? scale->shape[0] : 0),
                          (long long)(scale->n_dims > 1 ? scale->shape[1] : 0), scale->n_dims, w->name,
                          (long long)rows, (long long)cols, block, (long long)sr, (long long)sc);
    if (rows == 0 || cols == 0)
        return SD_OK;
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = sd_e4m3_to_f32((uint8_t)v);
    float *srow = malloc((size_t)sc * sizeof *srow);
    if (!srow)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory dequantizing '%s'", w->name);
    const uint8_t *q = w->data;
    const uint8_t *sdata = scale->data;
    size_t ssz = sd_dtype_size(scale->dtype);
    for (int64_t bi = 0; bi < sr; bi++) {
        sd_convert_to_f32(scale->dtype, sdata + (size_t)(bi * sc) * ssz, srow, (size_t)sc);
        int64_t r1 = (bi + 1) * block < rows ? (bi + 1) * block : rows;
        for (int64_t i = bi * block; i < r1; i++) {
            const uint8_t *qr = q + (size_t)(i * cols);
            float *dr = dst + (size_t)(i * cols);
            for (int64_t j = 0; j < cols; j++)
                dr[j] = lut[qr[j]] * srow[j / block];
        }
    }
    free(srow);
    return SD_OK;
}
