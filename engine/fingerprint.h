// fingerprint.h: a model's identity for the persistent KV prefix cache: 32 bytes that change whenever
// cached KV state could differ (weights, config, tokenizer, chat template, KV layout, DSA settings,
// blob format) and stay the same when a model directory is merely copied or touched.
// Pure C + xxhash (header-only); data/kvcache seeds its SHA-256 block chain with it.
#ifndef SD_FINGERPRINT_H
#define SD_FINGERPRINT_H

#include <stdint.h>

#include "model.h"
#include "sd_status.h"
#include "session.h"

#define SD_FINGERPRINT_BYTES 32
// Bump when what goes into the fingerprint changes (old cache entries then never match).
#define SD_FINGERPRINT_VERSION 1

// Weight identity per safetensors file: its base name, size, full header (8-byte length + JSON) and
// a sampled digest of SD_FP_WINDOWS evenly spaced SD_FP_WINDOW-byte windows of the data section (the
// whole data section when it is smaller than that). Not mtime and not the directory, so a copied
// model keeps its fingerprint. The sampled digest is memoized per (path, device, inode, size, mtime)
// in process memory, so a second fingerprint of the same files reads nothing but their headers.
#define SD_FP_WINDOWS 64
#define SD_FP_WINDOW 4096

// Compute the fingerprint of model m run with session parameters p (NULL: defaults).
// tokenizer_json_path: NULL looks for <model dir>/tokenizer.json ("no tokenizer" when absent).
// chat_template: NULL and "" both mean none. out receives SD_FINGERPRINT_BYTES bytes
// (XXH3-128 with two seeds over one canonical stream). Thread-safe.
enum sd_status sd_model_fingerprint(const struct sd_model *m, const char *tokenizer_json_path,
                                    const struct sd_session_params *p, const char *chat_template,
                                    uint8_t out[SD_FINGERPRINT_BYTES], struct sd_err *err);

// Lowercase hex of a fingerprint (65 bytes with the NUL).
void sd_fingerprint_hex(const uint8_t fp[SD_FINGERPRINT_BYTES], char hex[2 * SD_FINGERPRINT_BYTES + 1]);

#endif
