// test_util_synth.h: a synthetic DeepSeek-V3.2 model (tools/synth_model.h) written to a temporary directory
// and converted to GGUF by tools/st2gguf.py, one type at a time, for the GGUF tests (links synth_dep).
#ifndef SD_TEST_UTIL_SYNTH_H
#define SD_TEST_UTIL_SYNTH_H

#include <stdint.h>

#include "synth_model.h"

// Writes a model of shape sh (random weights from seed) under a new directory in /tmp, converts it with
// `python tools/st2gguf.py` (the source tree from SD_SOURCE) to each of types[0..n_types), calls
// check(model_dir, gguf, i, ctx) for each file that converted (the safetensors model and the GGUF of
// types[i], deleted after the call), and removes everything. A missing python or SD_SOURCE, a failed
// write and a failed conversion are counted as check failures (test_util.h).
void sd_test_synth_gguf(const char *python, const struct sd_synth_shape *sh, uint64_t seed, const char *const *types,
                        int n_types, void (*check)(const char *model_dir, const char *gguf, int i, void *ctx),
                        void *ctx);

#endif
