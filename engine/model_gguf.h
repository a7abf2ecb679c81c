// model_gguf.h: the GGUF branch of the model loader (engine-internal; model.c calls it). Maps llama.cpp's
// GGUF metadata (llama.*, qwen2.*, qwen3.*, deepseek2.* incl. the DSA indexer keys) to struct sd_config
// and its tensor names (token_embd, blk.N.attn_q, ...) to the engine's f32 weights.
#ifndef SD_MODEL_GGUF_H
#define SD_MODEL_GGUF_H

#include <stddef.h>

#include "model.h"

// Decide whether path names a GGUF model: a file (GGUF magic), or a directory without config.json that
// holds exactly one *.gguf file. Returns 1 and writes the file path to out, 0 if not GGUF, or -1 with
// err set (several .gguf files, path unreadable).
int sd_model_gguf_resolve(const char *path, char *out, size_t out_len, struct sd_err *err);

// Load a GGUF model file. Quantized weights are dequantized to f32 once at load (the forward pass
// consumes f32); aligned F32 tensors are used in place from the mapping.
enum sd_status sd_model_load_gguf(const char *file, struct sd_model **out, struct sd_err *err);
// The model configuration a GGUF file describes (the same mapping sd_model_load_gguf uses), without
// loading weights; for `models info`.
enum sd_status sd_model_gguf_config(const char *file, struct sd_config *cfg, struct sd_err *err);

#endif
