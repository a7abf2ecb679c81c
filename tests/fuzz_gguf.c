// fuzz_gguf.c: libFuzzer target for the GGUF parser (built only with clang, never run by `meson test`).
// Run: build/tests/fuzz_gguf -max_len=65536 [corpus_dir] (seed it with build/tests/*.gguf).
// Each input is a whole file image; a parse that succeeds must expose only in-bounds, disjoint tensors and
// metadata whose strings and arrays lie inside the input.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sd_gguf *g = NULL;
    struct sd_err err;
    if (sd_gguf_parse(data, size, "fuzz", &g, &err) != SD_OK) {
        if (g != NULL || err.msg[0] == 0)
            abort(); // a failure must clear the output and say why
        return 0;
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < sd_gguf_tensor_count(g); i++) {
        const struct sd_gguf_tensor *t = sd_gguf_tensor_at(g, i);
        const uint8_t *d = t->data;
        if (d < data || d > data + size || t->n_bytes > (size_t)(data + size - d) ||
            t->n_bytes != sd_qtype_row_bytes(t->type, t->n_elems) || sd_gguf_find_tensor(g, t->name) != t)
            abort();
        for (size_t k = 0; k < t->n_bytes; k++) // touch every byte so ASan sees any stray range
            sink ^= d[k];
    }
    for (size_t i = 0; i < sd_gguf_kv_count(g); i++) {
        const struct sd_gguf_kv *kv = sd_gguf_kv_at(g, i);
        if (sd_gguf_find_kv(g, kv->key) != kv)
            abort();
        if (kv->type == SD_GGUF_ARRAY && kv->arr_type == SD_GGUF_STRING)
            for (uint64_t k = 0; k < kv->arr_n; k++) {
                size_t len = 0;
                const char *s = sd_gguf_arr_str(kv, k, &len);
                for (size_t j = 0; j < len; j++)
                    sink ^= (uint8_t)s[j];
            }
        else if (kv->type == SD_GGUF_ARRAY)
            for (uint64_t k = 0; k < kv->arr_n; k++)
                sink ^= (uint8_t)sd_gguf_arr_int(kv, k);
    }
    (void)sink;
    sd_gguf_free(g);
    return 0;
}
