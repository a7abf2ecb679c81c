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
    // 1: a GPU backend keeps the large weight matrices (attention, indexer, MLP/expert projections, embeddings,
    // LM head) in bf16, rounded once at upload, and runs their GEMMs bf16 x bf16 with fp32 accumulation
    // (kernels/forward.cu; norms, router, W_UK/W_UV, attention and caches stay fp32). Backend only: a CPU
    // session refuses it (SD_ERR_ARG), since its forward pass has no bf16 weights.
    int gpu_weights_bf16;
    // 1: a GPU backend keeps the matrices released as FP8 with 128x128 block scales (struct sd_wmat.fp8) in
    // FP8 on the device (1 byte per weight + the scales). GEMMs of up to a few tokens (decode) dequantize
    // in-register with fp32 arithmetic (the CPU's f32 weights exactly); longer chunks dequantize each matrix
    // into a scratch buffer first, f32 (sgemm) or, with gpu_weights_bf16, bf16 (its GEMM). Other matrices
    // follow gpu_weights_bf16. Backend only, refused by a CPU session like gpu_weights_bf16.
    int gpu_weights_fp8;
    // With gpu_weights_bf16, a GPU backend runs DSA's two attention kernels on tensor cores: the FP8 indexer's
    // scores (indexer_fp8, 64 heads x 128: e4m3 -> f16 products, fp32 sums, within ~3e-7 of the score magnitude
    // where the exact kernel matches the CPU bit for bit, so near-ties may select another token) and the MLA
    // attention of prefill chunks of >= 16 queries with selection live (q, the gathered latent rows and the
    // probabilities rounded to bf16, fp32 accumulation; DeepSeek's 512 + 64 latent, heads a multiple of 32).
    // 1 keeps the exact kernels. Ignored without gpu_weights_bf16 and by the CPU.
    int gpu_attn_exact;
    // 1: a GPU backend launches every kernel of a decode step one by one. 0 (default): one-token steps that return
    // logits run as a CUDA graph, captured once per launch shape (the kernels read the position from device
    // memory; the shape changes every 2048 positions and when DSA selection starts) and replayed as one launch:
    // the same kernels, bit-identical results. Ignored by the CPU.
    int gpu_no_graph;
    // 1: DeepSeek's FP8 GEMM numerics for the matrices released as FP8 (struct sd_wmat.fp8): each product's input
    // rows are quantized in blocks of 128 values to e4m3 with a power-of-two scale (sd_fp8_act_quant, DeepSeek's
    // act_quant with ue8m0 scales) and multiplied by the FP8 weights, as DeepSeek-V3.2's reference inference does.
    // The CPU multiplies the round-tripped f32 values; a GPU backend runs FP8 x FP8 tensor-core GEMMs for prefill
    // chunks (kernels/gemm_fp8.cu) and its f32 kernels on the round-tripped values elsewhere. Other matrices
    // (bf16/f32 in the file, GGUF types) are unaffected; so is a model without FP8 matrices.
    int fp8_act;
    // 1: DeepSeek's FP8 MLA latent cache (engine/dsa.h sd_mla_kv_fp8_quant, FlashMLA's 656-byte row for V3.2's
    // 512 + 64): each token's c_kv is kept as e4m3 in tiles of 128 with power-of-two scales and its k_pe as bf16,
    // 3.5x less than the f32 rows, in memory, on the device and in exported KV blobs; attention reads the
    // dequantized values, the current chunk's rows included (DeepSeek-V3.2's reference rounds c_kv the same way
    // before caching). Ignored by models without MLA (Llama/Qwen GQA caches stay f32).
    int kv_fp8;
    const struct sd_backend *backend; // NULL: the CPU forward pass (borrowed; must outlive the session)
};

// The device weight modes by name, as the CLI's --gpu-weights and the settings' gpu_weights spell them: "f32"
// (neither flag), "bf16" (gpu_weights_bf16), "fp8" (both), "fp8-f32" (gpu_weights_fp8). Returns 0, or -1 for
// another name (NULL included), leaving *bf16 and *fp8 as they were.
int sd_gpu_weights_parse(const char *name, int *bf16, int *fp8);
// The name of a pair of flags (a static string).
const char *sd_gpu_weights_name(int bf16, int fp8);

struct sd_session;

enum sd_status sd_session_new(const struct sd_model *m, const struct sd_session_params *p, struct sd_session **out,
                              struct sd_err *err);
void sd_session_free(struct sd_session *s);

// Append n tokens at the current position and run the forward pass. logits (may be NULL) receives
// [n x vocab] f32 when all_logits, else [vocab] for the last token only.
enum sd_status sd_session_eval(struct sd_session *s, const int32_t *ids, int n, float *logits, int all_logits,
                               struct sd_err *err);

// sd_session_eval, then the next token: sd_sampler_sample on the last token's logits with this history (as there;
// *token -1 when no logit is a number). A backend that samples on its device (CUDA) does it there without copying the
// logits out; otherwise they go through a session buffer. Either way the sampler's random stream advances alike.
struct sd_sampler;
enum sd_status sd_session_eval_sample(struct sd_session *s, const int32_t *ids, int n, struct sd_sampler *smp,
                                      const int32_t *history, size_t n_history, int32_t *token, struct sd_err *err);

int sd_session_pos(const struct sd_session *s);  // tokens in the cache
int sd_session_n_ctx(const struct sd_session *s);
// Forget tokens from position pos on (pos <= current position).
enum sd_status sd_session_truncate(struct sd_session *s, int pos, struct sd_err *err);
const struct sd_model *sd_session_model(const struct sd_session *s);

// Bytes of KV state per token (main cache + indexer cache, all layers).
size_t sd_session_kv_bytes_per_token(const struct sd_session *s);
// Device bytes of the backend's weight copy (0 for the CPU forward pass or a backend that does not say).
size_t sd_session_backend_weight_bytes(const struct sd_session *s);
// The backend's counters (all zero on the CPU or where the backend keeps none).
struct sd_backend_counters sd_session_backend_counters(const struct sd_session *s);

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

// ---- Indexer recall statistics (diagnostics; CPU forward pass, DSA sparse mode) ----
// Recall of one query row in one layer: the share of the dense causal attention mass (the softmax
// the dense path computes over keys 0..pos, absorbed MLA, per head) that falls on the indexer's
// selected top-k set, averaged over the heads. Off by default; while off the forward pass does no
// extra work. While on, each measured row costs one dense attention-probability pass per head.
// Rows at positions >= from_pos are measured. A row whose causal length pos+1 <= top-k selects every
// key (recall 1 by definition): it is counted in rows_full only, never in rows/sum/min.
struct sd_recall_stat {
    long rows;      // measured rows with causal length > top-k
    double sum;     // sum of their recalls
    double min;     // the smallest of them (1.0 while rows == 0)
    double best_sum; // sum of their best possible recall: the mass of the k most probable keys (oracle top-k)
    long rows_full; // measured rows with causal length <= top-k (recall 1, excluded above)
};

// One measured row (rows_full rows excluded), for an optional observer. Called from the thread that
// runs sd_session_eval, once per (layer, row) after that layer's attention; pointers are valid only
// during the call.
struct sd_recall_row {
    int layer, pos;     // layer index; absolute position of the query row (its keys are 0..pos)
    double recall;      // this row's recall (mean over heads)
    double best;        // the oracle's: mass of each head's k most probable keys, mean over heads
    int n_heads, d_lat, d_rope;
    const float *q_lat; // [n_heads][d_lat]: W_UK-absorbed queries
    const float *q_pe;  // head h: q_pe + h * q_pe_stride, d_rope floats (RoPE applied)
    int q_pe_stride;
    const float *latent; // the layer's cache: token u = [c_kv (d_lat) | k_pe (d_rope)] at latent + u * ld_latent
    size_t ld_latent;
    float scale;         // softmax scale
    const int32_t *sel;  // the selected token indices (n_sel entries; -1: empty slot)
    int n_sel;
};
typedef void (*sd_recall_row_fn)(const struct sd_recall_row *row, void *user);

// Start (or restart with zeroed counters) measuring rows at positions >= from_pos; fn may be NULL.
// Errors: the model has no DSA indexer, the session runs dense attention, or a backend runs it.
enum sd_status sd_session_recall_start(struct sd_session *s, int from_pos, sd_recall_row_fn fn, void *user,
                                       struct sd_err *err);
// Stop measuring and drop the counters.
void sd_session_recall_stop(struct sd_session *s);
// Copy the counters of layers [0, n) (n is clamped to the layer count); returns how many were copied
// (0 while not measuring).
int sd_session_recall_get(const struct sd_session *s, struct sd_recall_stat *out, int n);

#endif
