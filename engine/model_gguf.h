// model_gguf.h: the GGUF branch of the model loader (engine-internal; model.c calls it). Maps llama.cpp's
// GGUF metadata (llama.*, qwen2.*, qwen3.*, deepseek2.* incl. the DSA indexer keys) to struct sd_config
// and its tensor names (token_embd, blk.N.attn_q, ...) to the engine's weights.
#ifndef SD_MODEL_GGUF_H
#define SD_MODEL_GGUF_H

#include <stddef.h>

#include "model.h"

// Decide whether path names a GGUF model: a file (GGUF magic), or a directory without config.json that
// holds exactly one *.gguf file. Returns 1 and writes the file path to out, 0 if not GGUF, or -1 with
// err set (several .gguf files, path unreadable).
int sd_model_gguf_resolve(const char *path, char *out, size_t out_len, struct sd_err *err);

// Load a GGUF model file. The weight matrices stay in their stored type, in place in the mapping (llama
// q/k: a row-permuted copy, still in the stored type); vectors, MLA's kv_b and the MoE router become f32.
// dequant != 0: every tensor is dequantized to f32 at load instead (aligned F32 still used in place).
enum sd_status sd_model_load_gguf(const char *file, int dequant, struct sd_model **out, struct sd_err *err);
// The model configuration a GGUF file describes (the same mapping sd_model_load_gguf uses), without
// loading weights; for `models info`.
enum sd_status sd_model_gguf_config(const char *file, struct sd_config *cfg, struct sd_err *err);

#endif
