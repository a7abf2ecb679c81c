// gguf.h: reads GGUF v2/v3 model files (ggml's single-file format: header, typed metadata key/values,
// tensor infos, aligned tensor data) by mmap. The parser checks every count, length, type, dimension,
// offset and byte range against the file before anything is exposed; errors name the file, key and
// tensor. Format: ggml docs/gguf.md (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
#ifndef SD_GGUF_H
#define SD_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"
#include "sd_status.h"

// Metadata value types (gguf_type in the spec).
enum sd_gguf_vtype {
    SD_GGUF_U8 = 0,
    SD_GGUF_I8 = 1,
    SD_GGUF_U16 = 2,
    SD_GGUF_I16 = 3,
    SD_GGUF_U32 = 4,
    SD_GGUF_I32 = 5,
    SD_GGUF_F32 = 6,
    SD_GGUF_BOOL = 7,
    SD_GGUF_STRING = 8,
    SD_GGUF_ARRAY = 9,
    SD_GGUF_U64 = 10,
    SD_GGUF_I64 = 11,
    SD_GGUF_F64 = 12,
    SD_GGUF_VTYPE_COUNT
};

#define SD_GGUF_MAX_DIMS 4

struct sd_gguf_kv {
    char *key;                   // owned by the file object
    enum sd_gguf_vtype type;     // value type (SD_GGUF_ARRAY for arrays)
    enum sd_gguf_vtype arr_type; // element type of an array
    uint64_t arr_n;              // number of elements of an array
    const uint8_t *data;         // scalar value / first array element / string length prefix, in the mapping
    const uint8_t **str;         // string arrays: element i's 8-byte length prefix (owned by the file object)
};

struct sd_gguf_tensor {
    char *name;         // owned by the file object
    enum sd_qtype type; // ggml tensor type
    int n_dims;
    int64_t ne[SD_GGUF_MAX_DIMS]; // ne[0] is the contiguous (innermost) dimension
    int64_t n_elems;
    uint64_t offset;  // relative to the data section
    const void *data; // in the mapping, valid while the file object lives
    size_t n_bytes;
};

struct sd_gguf; // opaque

// mmap and parse path. Caller frees with sd_gguf_free().
enum sd_status sd_gguf_open(const char *path, struct sd_gguf **out, struct sd_err *err);
// Parse a whole file image held in memory (borrowed: buf must outlive the object). label names it in
// messages. Exposed for the fuzz and mutation tests: any malformed input gives an error, never a crash.
enum sd_status sd_gguf_parse(const uint8_t *buf, size_t len, const char *label, struct sd_gguf **out,
                             struct sd_err *err);
void sd_gguf_free(struct sd_gguf *g);

const char *sd_gguf_path(const struct sd_gguf *g);
uint32_t sd_gguf_version(const struct sd_gguf *g);
uint32_t sd_gguf_alignment(const struct sd_gguf *g);
size_t sd_gguf_data_offset(const struct sd_gguf *g);
size_t sd_gguf_file_size(const struct sd_gguf *g);

size_t sd_gguf_kv_count(const struct sd_gguf *g);
const struct sd_gguf_kv *sd_gguf_kv_at(const struct sd_gguf *g, size_t i);
const struct sd_gguf_kv *sd_gguf_find_kv(const struct sd_gguf *g, const char *key); // NULL if absent

size_t sd_gguf_tensor_count(const struct sd_gguf *g);
const struct sd_gguf_tensor *sd_gguf_tensor_at(const struct sd_gguf *g, size_t i); // file order
const struct sd_gguf_tensor *sd_gguf_find_tensor(const struct sd_gguf *g, const char *name);

// Typed getters. All return SD_ERR_MISSING if the key is absent and SD_ERR_FORMAT (with a message naming
// the key) if its type does not fit: integers accept any integer type whose value is in [lo, hi];
// floats accept F32/F64 and integers; bools accept BOOL and integers.
enum sd_status sd_gguf_get_int(const struct sd_gguf *g, const char *key, int64_t lo, int64_t hi, int64_t *out,
                               struct sd_err *err);
enum sd_status sd_gguf_get_f64(const struct sd_gguf *g, const char *key, double *out, struct sd_err *err);
enum sd_status sd_gguf_get_bool(const struct sd_gguf *g, const char *key, int *out, struct sd_err *err);
// Borrowed, not NUL-terminated: *len bytes at the returned pointer.
enum sd_status sd_gguf_get_str(const struct sd_gguf *g, const char *key, const char **s, size_t *len,
                               struct sd_err *err);
// Array element access (no checks beyond i < arr_n and the element type; the parser validated the bytes).
const char *sd_gguf_arr_str(const struct sd_gguf_kv *kv, uint64_t i, size_t *len);
double sd_gguf_arr_f64(const struct sd_gguf_kv *kv, uint64_t i); // numeric arrays, any numeric type
int64_t sd_gguf_arr_int(const struct sd_gguf_kv *kv, uint64_t i);

const char *sd_gguf_vtype_name(enum sd_gguf_vtype t);

#endif
