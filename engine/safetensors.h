// safetensors.h: reads HF safetensors files (single or sharded with model.safetensors.index.json)
// by mmap. The header parser validates every entry (dtype, shape, byte range inside the data
// section, no overlaps) before any tensor is exposed. Pure C + json-c.
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

#include "dtype.h"

#define SD_MAX_DIMS 4

struct sd_tensor_info {
    char *name;            // owned by the set
    enum sd_dtype dtype;
    int n_dims;
    int64_t shape[SD_MAX_DIMS];
    int64_t n_elems;
    const void *data;      // points into the mmap'd file, valid while the set lives
    size_t n_bytes;
    const char *file;      // path of the file holding it (owned by the set)
};

struct sd_tensor_set; // opaque: all tensors of one model, across shards

// Open a model directory: model.safetensors, or model.safetensors.index.json and its shards.
// Caller frees with sd_tensor_set_free().
enum sd_status sd_tensor_set_open_dir(const char *dir, struct sd_tensor_set **out, struct sd_err *err);
// Open one safetensors file.
enum sd_status sd_tensor_set_open_file(const char *path, struct sd_tensor_set **out, struct sd_err *err);
void sd_tensor_set_free(struct sd_tensor_set *set);

// Borrowed lookup; NULL if absent.
const struct sd_tensor_info *sd_tensor_set_find(const struct sd_tensor_set *set, const char *name);
size_t sd_tensor_set_count(const struct sd_tensor_set *set);
const struct sd_tensor_info *sd_tensor_set_at(const struct sd_tensor_set *set, size_t i);

// Parse a safetensors header held in memory (the whole file image: 8-byte length, JSON, data).
// Exposed for the fuzz/mutation test: must reject any malformed input with an error, never crash.
// On success fills *out (caller frees with sd_tensor_set_free; tensors point into buf).
enum sd_status sd_safetensors_parse(const uint8_t *buf, size_t len, const char *label, struct sd_tensor_set **out,
                                    struct sd_err *err);

// Dequantize a 2-D F8_E4M3 weight [rows, cols] with its 128x128 block scale tensor
// (weight_scale_inv, f32 [ceil(rows/128), ceil(cols/128)], a multiplier) into dst (rows*cols f32).
enum sd_status sd_dequant_fp8_block(const struct sd_tensor_info *w, const struct sd_tensor_info *scale, int block,
                                    float *dst, struct sd_err *err);

#endif
