// session.h: one sequence's inference state over a loaded model: KV cache (GQA K/V, or the MLA
// latent [c_kv | k_pe] per token plus the DSA indexer key cache), scratch buffers allocated once,
// and the forward pass (chunked prefill and decode share one path). CPU backend by default; a backend
// given in the params (engine/backend.h, e.g. CUDA from kernels/) runs the forward pass instead.
#ifndef SD_SESSION_H
#define SD_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "model.h"
#include "sd_status.h"

enum sd_dsa_mode {
    SD_DSA_SPARSE = 0, // DeepSeek-V3.2: attention over the indexer's top-k (the model's behaviour)
    SD_DSA_DENSE,      // force dense attention on the same weights (tests, benchmarks, quality baseline)
};

struct sd_session_params {
    int n_ctx;          // maximum tokens in the sequence (KV cache size); 0: min(model max, 8192)
    int n_threads;      // 0: all cores
    int max_batch;      // prefill chunk (tokens per forward); 0: 256
    enum sd_dsa_mode dsa_mode;
    int index_topk;     // 0: the model's index_topk
    int indexer_fp8;    // 1: DeepSeek's FP8 indexer numerics (Hadamard + e4m3 keys/queries)
    const struct sd_backend *backend; // NULL: the CPU forward pass (borrowed; must outlive the session)
};

struct sd_session;

enum sd_status sd_session_new(const struct sd_model *m, const struct sd_session_params *p, struct sd_session **out,
                              struct sd_err *err);
void sd_session_free(struct sd_session *s);

// Append n tokens at the current position and run the forward pass. logits (may be NULL) receives
// [n x vocab] f32 when all_logits, else [vocab] for the last token only.
enum sd_status sd_session_eval(struct sd_session *s, const int32_t *ids, int n, float *logits, int all_logits,
                               struct sd_err *err);

int sd_session_pos(const struct sd_session *s);  // tokens in the cache
int sd_session_n_ctx(const struct sd_session *s);
// Forget tokens from position pos on (pos <= current position).
enum sd_status sd_session_truncate(struct sd_session *s, int pos, struct sd_err *err);
const struct sd_model *sd_session_model(const struct sd_session *s);

// Bytes of KV state per token (main cache + indexer cache, all layers).
size_t sd_session_kv_bytes_per_token(const struct sd_session *s);

// ---- KV state export/import (persistent prefix cache) ----
// Blocks are SD_KV_BLOCK tokens. A blob holds every layer's main cache rows (MLA latent [c_kv|k_pe]
// or GQA K/V) and indexer keys for blocks [first_block, first_block + n_blocks), behind a versioned
// header with an XXH3-64 checksum of the payload.
#define SD_KV_BLOCK 64
#define SD_KV_BLOB_VERSION 1

// Export: the blocks must be complete in the session (end <= position). *blob is malloc'd (caller frees).
enum sd_status sd_session_export(const struct sd_session *s, int first_block, int n_blocks, void **blob, size_t *len,
                                 struct sd_err *err);
// Import a blob whose first block starts exactly at the session's current position (a prefix is
// rebuilt block by block). Verifies magic, version, model shape, KV layout and checksum before copying
// anything: on any error the session is unchanged. On success the position advances by its tokens.
enum sd_status sd_session_import(struct sd_session *s, const void *blob, size_t len, struct sd_err *err);
// Describe a blob's header without importing it (-1 fields when invalid).
enum sd_status sd_kv_blob_info(const void *blob, size_t len, int *first_block, int *n_blocks, struct sd_err *err);

// Benchmark support: append n positions of pseudo-random cache content (as if n tokens had been
// prefilled) without running the model, so per-token cost at a deep context can be timed without
// the hours a full CPU prefill would take. Never used for answers.
enum sd_status sd_session_debug_fill(struct sd_session *s, int n, uint64_t seed, struct sd_err *err);

#endif
