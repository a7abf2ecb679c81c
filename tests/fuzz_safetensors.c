// fuzz_safetensors.c: libFuzzer target for the safetensors header parser (built only with clang,
// never run by `meson test`). Run: build/tests/fuzz_safetensors -max_len=4096 [corpus_dir]
// Each input is a whole file image; a parse that succeeds must expose only tensors inside it.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sd_tensor_set *set = NULL;
    struct sd_err err;
    if (sd_safetensors_parse(data, size, "fuzz", &set, &err) != SD_OK) {
        if (set != NULL || err.msg[0] == 0)
            abort(); // a failure must clear the output and say why
        return 0;
    }
    for (size_t i = 0; i < sd_tensor_set_count(set); i++) {
        const struct sd_tensor_info *t = sd_tensor_set_at(set, i);
        const uint8_t *d = t->data;
        if (d < data || d > data + size || t->n_bytes > (size_t)(data + size - d) ||
            t->n_bytes != (size_t)t->n_elems * sd_dtype_size(t->dtype) || sd_tensor_set_find(set, t->name) != t)
            abort();
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < t->n_bytes; k++) // touch every byte so ASan sees any stray range
            sink ^= d[k];
        (void)sink;
    }
    sd_tensor_set_free(set);
    return 0;
}
