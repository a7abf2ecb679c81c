// sd_cuda.h: the CUDA backend's C interface. Plain C structs `struct sd_cuda_<op>_params` (device
// pointers, sizes, strides, stream) cross the boundary; engine/ and the tests never include CUDA headers.
// Every launcher validates its parameters, launches, checks the launch error, and returns an
// enum sd_status (SD_ERR_UNSUPPORTED for shapes a kernel does not handle, SD_ERR_BACKEND for CUDA
// failures, with the failing expression, file and line in sd_cuda_last_error()).
// DSA ops: lightning indexer FP8 scores over the paged 132 B/token key cache, per-row radix top-k,
// sparse absorbed MLA decode over gathered bf16 cache rows, fp32 absorbed MLA attention for the forward pass, GEMV
// and dequantization of FP8 block-scaled weight matrices. Also
// small device helpers for tests/bench, and the whole forward pass as an engine backend (forward.cu, engine/backend.h).
#ifndef SD_CUDA_H
#define SD_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- the engine backend (forward.cu): pass it as sd_session_params.backend. fp32 weights (bf16 for the
// large matrices with sd_session_params.gpu_weights_bf16) and fp32 caches on device 0; init fails with
// SD_ERR_BACKEND and a message when no device/driver is usable. ----
struct sd_backend;
const struct sd_backend *sd_cuda_backend(void);

// ---- device helpers (thin wrappers; all return SD_OK or SD_ERR_BACKEND) ----
// Number of CUDA devices; 0 when there is no driver or no device (never an error).
int sd_cuda_device_count(void);
// Message of the last failure inside this library ("expr at file:line: cuda error string").
const char *sd_cuda_last_error(void);
// Device name, multiprocessor count and L2 bytes of the current device.
enum sd_status sd_cuda_device_info(char *name, size_t name_len, int *n_sm, size_t *l2_bytes);
// Free and total bytes of the current device's memory (cudaMemGetInfo).
enum sd_status sd_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
enum sd_status sd_cuda_malloc(void **p, size_t bytes);
void sd_cuda_free(void *p);
enum sd_status sd_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes);
enum sd_status sd_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes);
enum sd_status sd_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes, void *stream);
// Fill bytes with one byte value (0xff on floats gives NaN: the poison used by the tests).
enum sd_status sd_cuda_memset(void *p, int value, size_t bytes);
enum sd_status sd_cuda_sync(void);
// Event timer on the default stream: start, then stop returns elapsed milliseconds.
struct sd_cuda_timer;
enum sd_status sd_cuda_timer_new(struct sd_cuda_timer **t);
void sd_cuda_timer_free(struct sd_cuda_timer *t);
enum sd_status sd_cuda_timer_start(struct sd_cuda_timer *t);
enum sd_status sd_cuda_timer_stop(struct sd_cuda_timer *t, float *ms);

// ---- lightning indexer, FP8 (DeepSeek-V3.2 numerics) ----
// Key cache layout (paged, as DeepGEMM/sglang): pages of SD_CUDA_IDX_PAGE tokens; each page holds
// SD_CUDA_IDX_PAGE x 128 e4m3 values, then SD_CUDA_IDX_PAGE fp32 scales (8448 bytes per page).
// Token u lives in page u / 64 at offset u % 64. Allocate whole pages.
#define SD_CUDA_IDX_PAGE 64
#define SD_CUDA_IDX_DIM 128
#define SD_CUDA_IDX_PAGE_BYTES (SD_CUDA_IDX_PAGE * (SD_CUDA_IDX_DIM + 4))

enum sd_cuda_indexer_variant {
    SD_CUDA_INDEXER_AUTO = 0,
    SD_CUDA_INDEXER_SIMPLE = 1, // CUDA cores, exact dots (double), fp32 head sum: bit-identical to the CPU reference
    SD_CUDA_INDEXER_MMA = 2,    // tensor cores: e4m3 -> f16 (exact) mma.sync m16n8k16, fp32 accumulation
};

struct sd_cuda_indexer_params {
    const uint8_t *q8;     // [n_q][n_heads][128] e4m3
    const float *q_scale;  // [n_q][n_heads]
    const float *w;        // [n_q][n_heads] (already times n_heads^-1/2 * 128^-1/2; q scale NOT folded)
    const uint8_t *kcache; // paged key cache, >= ceil(n_k / 64) pages; or, with k_scale, n_k rows of 128 e4m3
    const float *k_scale;  // NULL: scales inside the pages; else the flat layout's scales [n_k] (forward.cu's cache)
    const int *n_valid;    // [n_q] keys u < n_valid[i] are candidates (others get -inf); NULL: all n_k
    float *scores;         // [n_q][ld_scores]; columns [0, n_k) written
    size_t ld_scores;
    int n_q, n_heads, n_k;
    int variant;  // enum sd_cuda_indexer_variant
    void *stream; // cudaStream_t or NULL
};
// scores[i][u] = k_scale[u] * sum_j (w[i][j]*q_scale[i][j]) * relu(dot(q8[i][j], k8[u])).
// n_heads: 1..64 for SIMPLE, 64 for MMA (AUTO picks MMA when it applies).
enum sd_status sd_cuda_indexer_fp8(const struct sd_cuda_indexer_params *p);

// ---- per-row top-k (radix select) ----
struct sd_cuda_topk_params {
    const float *scores; // [n_rows][ld_scores]
    size_t ld_scores;
    const int *n_valid; // [n_rows] candidates are columns [0, n_valid[r]) (clamped to n_cols); NULL: n_cols
    int n_rows, n_cols, k;
    int32_t *idx; // [n_rows][ld_idx]: k indices in ascending order, -1 padding past min(k, n_valid)
    size_t ld_idx;
    void *stream;
    // Device scratch for the split path (may be NULL: one block per row). With a few rows (<= SD_CUDA_TOPK_SPLIT_ROWS)
    // of at least SD_CUDA_TOPK_SPLIT_COLS columns, each row's histogram passes and ordered write run over slices of
    // SD_CUDA_TOPK_SLICE columns in parallel blocks (decode steps: one row per layer), when scratch_bytes >=
    // sd_cuda_topk_scratch_bytes(n_rows, n_cols). The same set and order either way. (H200, one row: 88.5 -> 39.5 us
    // at 128K columns, but 28.2 -> 38.6 us at 32K: the split's nine launches cost more than they save there.)
    void *scratch;
    size_t scratch_bytes;
};
// Same set as sd_dsa_topk: larger score first, ties broken by the lower index, NaN ranks as -inf.
enum sd_status sd_cuda_topk(const struct sd_cuda_topk_params *p);
#define SD_CUDA_TOPK_SPLIT_ROWS 8
#define SD_CUDA_TOPK_SLICE 4096
#define SD_CUDA_TOPK_SPLIT_COLS 65536
size_t sd_cuda_topk_scratch_bytes(int n_rows, int n_cols);

// ---- indexer + top-k over query chunks (prefill): the [n_q][n_k] score matrix is never materialised ----
struct sd_cuda_indexer_topk_params {
    struct sd_cuda_indexer_params ix; // scores/ld_scores ignored
    float *scratch;                   // [chunk][n_k] floats of device memory
    int chunk;                        // queries per chunk (>= 1)
    int k;
    int32_t *idx; // [n_q][k]
};
enum sd_status sd_cuda_indexer_topk(const struct sd_cuda_indexer_topk_params *p);

// ---- sparse MLA decode, absorbed (MQA 576/512) form, bf16 cache ----
enum sd_cuda_mla_variant {
    SD_CUDA_MLA_AUTO = 0,   // MMA
    SD_CUDA_MLA_SIMPLE = 1, // CUDA cores, all fp32 (q fp32, P fp32): matches the fp32 reference to ~1e-6
    SD_CUDA_MLA_MMA = 2,    // tensor cores: q and P rounded to bf16 (FlashMLA numerics), fp32 accumulation
};
struct sd_cuda_mla_decode_params {
    const float *q;     // [batch][s_q][n_heads][d_lat + d_rope] fp32 ([q_lat | q_pe])
    const uint16_t *kv; // [n_tokens][576] bf16 rows [c_kv(512) | k_pe(64)] (pages of 64 rows, absolute slots)
    const int32_t *idx; // [batch][s_q][topk] absolute token slots; -1 or >= n_tokens: skipped
    float *out;         // [batch][s_q][n_heads][512]
    float *lse;         // [batch][s_q][n_heads] natural-log sum exp of the scaled scores (-inf if none), may be NULL
    int batch, s_q, n_heads, topk, n_tokens;
    float scale; // softmax scale tau
    void *stream;
    int variant; // enum sd_cuda_mla_variant
};
// n_heads must be a multiple of 32; d_lat 512, d_rope 64 (fixed). Rows with no valid index get out = 0.
enum sd_status sd_cuda_mla_decode(const struct sd_cuda_mla_decode_params *p);

// ---- absorbed MLA attention in fp32 over an fp32 latent cache (mla_attn.cu; the forward pass's MLA) ----
struct sd_cuda_mla_attn_params {
    const float *q;     // [n_q][n_heads][d_lat + d_rope] ([q_lat | q_pe], q_lat = W_UK^T q_nope)
    const float *kv;    // [n_tokens][d_lat + d_rope] latent rows [c_kv | k_pe]; values are the first d_lat (or kv8)
    const int32_t *idx; // [n_q][n_idx] token slots (-1 or >= n_tokens skipped), or NULL: dense causal,
                        // query i attends over tokens 0 .. pos0 + i
    float *out;         // [n_q][n_heads][d_lat]; rows with no valid key get 0
    float *scratch;     // split-K partials (device), or NULL: never split
    size_t scratch_floats;
    int n_q, n_heads, d_lat, d_rope, n_idx, n_tokens, pos0;
    const int *d_pos0; // NULL, or the position of query 0 in device memory: dense causal masks use *d_pos0 (<= pos0,
                       // which then only bounds the keys for planning the split)
    float scale;       // softmax scale
    int n_split; // 0: automatic (split the keys over blocks when there are fewer blocks than SMs)
    void *stream;
    const uint8_t *kv8; // NULL, or (kv NULL) the rows in the kv_fp8 layout (engine/dsa.h sd_mla_kv_fp8_*, rows of
                        // sd_cuda_kv_fp8_row_bytes), dequantized as they load: the result equals kv's over the
                        // dequantized rows bit for bit; d_lat and d_rope multiples of 4
};
// Any n_heads; d_lat <= 512; (d_lat + d_rope) rows must fit shared memory (576 does). fp32 throughout:
// the same result as sd_mla_sparse_attn_absorbed up to summation order.
enum sd_status sd_cuda_mla_attn(const struct sd_cuda_mla_attn_params *p);
// Scratch floats that let the automatic split reach its full width for this head count and d_lat.
size_t sd_cuda_mla_attn_scratch_floats(int n_heads, int d_lat);

// ---- next-token sampling on the device (sample.cu; engine/sampler.c's algorithm, see there) ----
struct sd_cuda_sampler; // scratch for one vocabulary size
enum sd_status sd_cuda_sampler_new(int n_vocab, struct sd_cuda_sampler **out);
void sd_cuda_sampler_free(struct sd_cuda_sampler *s);
struct sd_cuda_sample_params {
    float *logits; // device [n_vocab]; modified in place (penalty, temperature) as the CPU sampler modifies its own
    int n_vocab;
    float temperature; // <= 0: greedy
    int top_k;         // <= 0: none
    float top_p;       // 1: none
    float repetition_penalty;
    const int32_t *penalty_ids; // host: the distinct ids to penalize (sd_sampler_penalty_ids)
    int n_penalty;
    double u; // uniform draw in [0, 1) (sd_sampler_draw), sampled tokens only
    void *stream;
};
// *token: the sampled id, or -1 when a logit is NaN or none is finite. Synchronizes the stream.
enum sd_status sd_cuda_sample(struct sd_cuda_sampler *s, const struct sd_cuda_sample_params *p, int32_t *token);

// ---- FP8 MLA latent cache rows (kv_fp8.cu; the layout of engine/dsa.h sd_mla_kv_fp8_*) ----
size_t sd_cuda_kv_fp8_row_bytes(int d_lat, int d_rope);
// Cache rows [*d_pos, *d_pos + n_rows) (d_pos: device memory) from src rows of d_lat + d_rope floats, ld floats
// apart: bit for bit sd_mla_kv_fp8_quant. d_lat and d_rope multiples of 4.
enum sd_status sd_cuda_kv_fp8_store(uint8_t *cache, const float *src, size_t ld, int n_rows, int d_lat, int d_rope,
                                    const int *d_pos, void *stream);
// Cache rows [0, n_rows) as bf16 rows of d_lat + d_rope (dst), exact.
enum sd_status sd_cuda_kv_fp8_to_bf16(uint16_t *dst, const uint8_t *cache, size_t n_rows, int d_lat, int d_rope,
                                      void *stream);

// ---- FP8 block-scaled weight matrices (gemv_fp8.cu; the forward pass's gpu_weights_fp8) ----
// W [rows][cols] e4m3 (row-major, packed), its f32 block scales [ceil(rows / block)][ceil(cols / block)]
// (DeepSeek's scale_inv); the dequantized weight is e4m3(W[n][k]) * scale[n / block][k / block], one f32
// product, as sd_dequant_fp8_block computes it. Device pointers.
struct sd_cuda_fp8_mat {
    const uint8_t *q;
    const float *scale;
    int rows, cols, block;
};
#define SD_CUDA_GEMV_FP8_T 4 // most tokens per sd_cuda_gemv_fp8 call
struct sd_cuda_gemv_fp8_params {
    struct sd_cuda_fp8_mat w;
    const float *x; // [n_tok][ldx], the first cols used
    int ldx;
    float *y; // [n_tok][ldy]: y[t][n] = sum_k W[n][k] x[t][k] + beta * y[t][n] (y not read when beta == 0)
    int ldy;
    int n_tok; // 1 .. SD_CUDA_GEMV_FP8_T
    float beta;
    // 0 (the forward pass's): every weight dequantized exactly as the CPU's (two f32 products), then
    // multiplied. 1 (experimental, for bench_dsa_cuda/test_cuda_ops): 16 raw weights times x summed first and
    // the block scale applied once per 16, with 3 integer operations per weight: the same sum up to fp32
    // rounding, fewer instructions per byte.
    int variant;
    void *stream;
};
// Every weight read once for all tokens and dequantized in registers; fp32 products and sums (one fixed
// order: the same result every run).
enum sd_status sd_cuda_gemv_fp8(const struct sd_cuda_gemv_fp8_params *p);
// out [rows][cols] = the dequantized matrix, f32 (bf16 = 0) or rounded to bf16 (bf16 = 1, nearest even).
enum sd_status sd_cuda_dequant_fp8(const struct sd_cuda_fp8_mat *w, void *out, int bf16, void *stream);

// ---- FP8 x FP8 GEMM with DeepSeek's block scales (gemm_fp8.cu; the forward pass's fp8_act) ----
// Activations quantized as engine/dtype.c sd_fp8_act_quant does (DeepSeek's act_quant with power-of-two scales):
// each row in blocks of 128 values, one f32 scale per block, e4m3 values. The scales' order in memory:
#define SD_CUDA_ACT_SCALE_ROWS 1 // [rows][ceil(cols / 128)]: a row's blocks side by side
#define SD_CUDA_ACT_SCALE_COLS 2 // [ceil(cols / 128)][rows]: one block column's rows side by side
// x [rows][ldx] (first cols) -> q [rows][cols] e4m3 and scales in the order `layout`. Bit-identical to the CPU.
enum sd_status sd_cuda_act_quant_fp8(const float *x, int ldx, int rows, int cols, uint8_t *q, float *scales, int layout,
                                     void *stream);
// out [rows][ldo] = the quantized values times their scales as f32 (sd_fp8_act_roundtrip; out may equal x when
// ldo == ldx): what an FP8 GEMM multiplies, for the kernels that take f32 inputs (the FP8 GEMV, decode's experts).
enum sd_status sd_cuda_act_roundtrip_fp8(const float *x, int ldx, float *out, int ldo, int rows, int cols,
                                         void *stream);

// cuBLASLt handle, workspace, scratch for the quantized input and the scale orders, and the chosen algorithm per
// shape (cached). Scratch grows on first use of a larger shape (cudaMalloc: not inside a CUDA graph capture).
struct sd_cuda_gemm_fp8;
enum sd_status sd_cuda_gemm_fp8_new(struct sd_cuda_gemm_fp8 **out);
void sd_cuda_gemm_fp8_free(struct sd_cuda_gemm_fp8 *g);
// Weight scale orders handed to cuBLASLt (BLK128x128 mode); the matrix's own stays [ceil(rows/128)][ceil(cols/128)].
#define SD_CUDA_W_SCALE_NATIVE 1  // as stored: [row blocks][col blocks]
#define SD_CUDA_W_SCALE_T 2       // [col blocks][row blocks]
#define SD_CUDA_W_SCALE_T4 3      // [col blocks][row blocks rounded up to 4]
#define SD_CUDA_W_SCALE_NATIVE4 4 // [row blocks][col blocks rounded up to 4] (stored order, 16-byte rows)
struct sd_cuda_gemm_fp8_params {
    struct sd_cuda_fp8_mat w; // block 128; cols a multiple of 16
    const float *x;           // [n_tok][ldx], the first w.cols used; quantized inside (1x128 blocks)
    int ldx;
    float *y; // [n_tok][ldy]: y[t][n] = sum_k W[n][k] xq[t][k] + beta * y[t][n]; ldy a multiple of 4
    int ldy;
    int n_tok;
    float beta;
    // Scale orders given to cuBLASLt: 0 = this library's (what cuBLASLt expects; test_cuda_ops checks every
    // order against a reference and that only these match). Otherwise SD_CUDA_ACT_SCALE_* / SD_CUDA_W_SCALE_*.
    int act_layout, w_layout;
    void *stream;
};
// e4m3 x e4m3 products on tensor cores with fp32 accumulation, the block scales applied per 128-wide K step
// (cuBLASLt's VEC128 x BLK128x128 modes, sm_90). SD_ERR_UNSUPPORTED where cuBLASLt offers no algorithm (the
// caller falls back); the library then remembers that for the shape.
enum sd_status sd_cuda_gemm_fp8(struct sd_cuda_gemm_fp8 *g, const struct sd_cuda_gemm_fp8_params *p);
// Calls that ran and the output type cuBLASLt accepted (0 none yet, 1 f32, 2 bf16 through a scratch).
void sd_cuda_gemm_fp8_stats(const struct sd_cuda_gemm_fp8 *g, long *calls, int *out_mode);

#ifdef __cplusplus
}
#endif

#endif
