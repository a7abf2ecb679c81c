// backend.h: the engine's compute-backend interface. A session runs its forward pass on the CPU
// (the default and the reference, engine/session.c) or hands each chunk to a backend given in
// sd_session_params.backend (kernels/ provides CUDA: sd_cuda_backend() in kernels/sd_cuda.h).
// A backend owns its copies of the weights and of the KV/indexer caches. The session keeps its host
// caches as the exchange format: kv_download/kv_upload copy token rows between the two for KV export,
// import and debug fill. engine/ never includes CUDA headers; the backend is a table of C functions.
#ifndef SD_BACKEND_H
#define SD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

struct sd_model;
struct sd_session_params;

// The session's host caches (layouts as in session.c: [n_layers][n_ctx][row]); NULL where unused.
struct sd_backend_host_kv {
    float *kc, *vc; // GQA K and V rows of n_heads_kv * head_dim
    float *lat;     // MLA latent rows [c_kv | k_pe] of kv_lora_rank + qk_rope_head_dim (NULL with kv_fp8)
    uint8_t *lat8;  // kv_fp8: the same rows in sd_mla_kv_fp8_row_bytes bytes each (engine/dsa.h)
    float *ikc;     // indexer keys f32, rows of index_head_dim
    uint8_t *ik8;   // indexer keys e4m3, rows of index_head_dim
    float *iks;     // indexer key scales, one per row
    int n_ctx;
};

// What a backend did so far in one session, for tests and benchmarks (zero where a backend does not count).
struct sd_backend_counters {
    long graph_steps;     // forward calls replayed from a captured graph (CUDA: decode steps)
    long graph_instances; // graphs instantiated (again when a step's kernels changed)
    long tc_attn_calls;   // attention calls that ran on tensor cores in reduced precision
    long fp8_gemm_calls;  // FP8 x FP8 GEMMs (fp8_act with FP8 device weights)
    long device_samples;  // tokens sampled on the device (forward_sample)
};

// One token to sample on the device (sd_session_eval_sample; engine/sampler.h for the meaning of each field).
struct sd_backend_sample {
    float temperature;          // <= 0: greedy
    int top_k;                  // <= 0: none
    float top_p;                // 1: none
    float repetition_penalty;   // applied to the penalty_ids
    const int32_t *penalty_ids; // distinct token ids (host)
    int n_penalty;
    double u; // the uniform draw in [0, 1) of a sampled token (unused when greedy)
};

struct sd_backend {
    const char *name;
    // Create the backend state for one session: upload (or share) weights, allocate caches and
    // scratch for p->n_ctx tokens and chunks of p->max_batch. topk is the session's index top-k.
    enum sd_status (*init)(const struct sd_model *m, const struct sd_session_params *p, int topk, void **ctx,
                           struct sd_err *err);
    void (*free)(void *ctx);
    // Forward T tokens at positions [pos0, pos0 + T) (the rows past pos0 in the caches are overwritten).
    // logits (host, may be NULL): [T x vocab] when all_logits, else [vocab] of the last token.
    enum sd_status (*forward)(void *ctx, const int32_t *ids, int T, int pos0, float *logits, int all_logits,
                              struct sd_err *err);
    // Copy cache rows [t0, t0 + n) of every layer from the backend to kv (download) or back (upload).
    enum sd_status (*kv_download)(void *ctx, const struct sd_backend_host_kv *kv, int t0, int n, struct sd_err *err);
    enum sd_status (*kv_upload)(void *ctx, const struct sd_backend_host_kv *kv, int t0, int n, struct sd_err *err);
    // Device bytes of the backend's copy of the weights (may be NULL: not reported).
    size_t (*weight_bytes)(void *ctx);
    // The session's counters (may be NULL: none).
    void (*counters)(void *ctx, struct sd_backend_counters *out);
    // Forward T tokens as forward does, then pick the next token from the last one's logits on the device, which
    // are not copied out (sd_sampler_sample's algorithm): *token, or -1 when no logit is a number. May be NULL (the
    // session then copies the logits and samples on the host).
    enum sd_status (*forward_sample)(void *ctx, const int32_t *ids, int T, int pos0,
                                     const struct sd_backend_sample *req, int32_t *token, struct sd_err *err);
};

#endif
