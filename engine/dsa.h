// dsa.h: DeepSeek Sparse Attention on the CPU: the lightning indexer (fp32 path matching HF, and
// DeepSeek's FP8 path: Hadamard rotation + 1x128 e4m3 quantization with power-of-two scales),
// per-row top-k with -1 padding, and sparse MLA attention in the absorbed (MQA, 576/512) form over
// gathered tokens. These are the reference implementations the CUDA kernels are tested against.
#ifndef SD_DSA_H
#define SD_DSA_H

#include <stddef.h>
#include <stdint.h>

#define SD_DSA_MAX_DIM 512 // largest indexer head dim the FP8 path takes (config.c enforces it)

// In-place orthonormal Sylvester-Hadamard transform of x[n] (n a power of two): x <- H x / sqrt(n).
void sd_hadamard(float *x, int n);

// Quantize one row of `dim` values (a power of two, at most SD_DSA_MAX_DIM; 128 in DeepSeek-V3.2) after Hadamard
// rotation: e4m3 values to q8[dim], the power-of-two fp32 scale to *scale: s = 2^ceil(log2(max(amax,1e-4)/448)). x is
// not modified.
void sd_dsa_quant_fp8_row(const float *x, int dim, uint8_t *q8, float *scale);

// DeepSeek's FP8 MLA latent cache row (FlashMLA's "V32_FP8Sparse" layout; 656 bytes for V3.2's 512 + 64):
// the d_lat c_kv values as e4m3 bytes, in tiles of SD_KV_FP8_TILE values (the last may be shorter), then one
// little-endian fp32 scale per tile, then the d_rope k_pe values as little-endian bf16 (round to nearest even).
// A tile's scale is FlashMLA's s = 2^ceil(log2(max(amax / 448, 1e-4))) (the clamp on amax / 448, not on amax as
// the indexer's), its values e4m3(x / s). Dequantized values (e4m3 * s, bf16) are exact in f32 and in bf16.
#define SD_KV_FP8_TILE 128
size_t sd_mla_kv_fp8_row_bytes(int d_lat, int d_rope);
// The power-of-two scale of one tile of n values.
float sd_mla_kv_fp8_scale(const float *x, int n);
// row: d_lat + d_rope floats [c_kv | k_pe]; out: sd_mla_kv_fp8_row_bytes bytes.
void sd_mla_kv_fp8_quant(const float *row, int d_lat, int d_rope, uint8_t *out);
// The inverse: d_lat + d_rope floats.
void sd_mla_kv_fp8_dequant(const uint8_t *in, int d_lat, int d_rope, float *row);

// fp32 indexer scores. q: [n_q][n_heads][dim], k: [n_k][dim], w: [n_q][n_heads] per-head weights
// already multiplied by n_heads^-1/2 * dim^-1/2. scores[i][u] = sum_j w[i][j] * relu(q[i][j].k[u])
// for u < n_valid[i] (n_valid may be NULL: all n_k valid); others set to -INFINITY.
// ld_scores is the row stride of scores.
void sd_dsa_index_scores_f32(const float *q, const float *w, int n_q, int n_heads, int dim, const float *k, int n_k,
                             const int *n_valid, float *scores, size_t ld_scores, int n_threads);

// Which fp32 score kernel runs on this CPU: "avx512" (AVX-512F, 16 keys per vector), "avx2" (AVX2 + FMA;
// both chosen at run time) or "scalar". avx512 and avx2 give the same bits (the same fused multiply-adds
// per key); scalar rounds differently (summation order). Each gives the same scores whatever the thread
// count. sd_dsa_force_scalar(1) selects the scalar one, sd_dsa_force_avx2(1) avx2 over avx512 (for tests).
const char *sd_dsa_scores_impl(void);
void sd_dsa_force_scalar(int on);
void sd_dsa_force_avx2(int on);

// FP8 indexer scores (DeepSeek numerics). q8: [n_q][n_heads][dim] e4m3, q_scale: [n_q][n_heads],
// k8: [n_k][dim] e4m3, k_scale: [n_k]. w as above (without the q scale: it is folded inside).
// scores[i][u] = k_scale[u] * sum_j (w[i][j]*q_scale[i][j]) * relu(dot(q8[i][j], k8[u])): each dot is exact
// (accumulated in double, where every partial sum of e4m3 products is representable) and rounded once to
// float; the head sum runs in fp32 in head order j = 0, 1, ... (no fused multiply-add), as the CUDA kernels do.
// Returns 0, or -1 when a per-thread scratch allocation failed (scores are then undefined).
int sd_dsa_index_scores_fp8(const uint8_t *q8, const float *q_scale, const float *w, int n_q, int n_heads, int dim,
                            const uint8_t *k8, const float *k_scale, int n_k, const int *n_valid, float *scores,
                            size_t ld_scores, int n_threads);

// Top-k of scores[0..n_valid) (ties broken by the lower index; NaN ranks lowest). Writes the k chosen
// indices to idx in ascending index order; slots past min(k, n_valid) are -1. Returns the number of valid indices.
// scratch: n_valid ints.
int sd_dsa_topk(const float *scores, int n_valid, int k, int32_t *idx, int32_t *scratch);

// The same selection, faster over a run of similar rows (the queries of one prefill chunk): the hint
// carries a lowered threshold from the row before, and rows whose top-k lies above it are selected
// from one pass's candidates. Start each run with a zeroed hint; the result never depends on it.
struct sd_dsa_topk_hint {
    uint32_t key, margin;
    int valid;
    unsigned rows, hits; // rows selected with this hint, and of them from the candidates alone
};
int sd_dsa_topk_hinted(const float *scores, int n_valid, int k, int32_t *idx, int32_t *scratch,
                       struct sd_dsa_topk_hint *hint);

// Sparse MLA attention, absorbed form, for one query token.
// q_lat: [n_heads][d_lat] (W_UK-absorbed nope query), q_pe: [n_heads][d_rope],
// kv: cache rows of d_lat + d_rope floats ([c_kv | k_pe]) with row stride ld_kv,
// idx: n_idx token indices into kv (-1 entries skipped; every other entry must be a row the caller
// owns: the top-k of sd_dsa_topk over n_valid rows satisfies this). out: [n_heads][d_lat] = softmax-weighted c_kv.
// scale: softmax scale tau. scratch: 2 * n_idx floats.
void sd_mla_sparse_attn_absorbed(const float *q_lat, const float *q_pe, int n_heads, int d_lat, int d_rope,
                                 const float *kv, size_t ld_kv, const int32_t *idx, int n_idx, float scale, float *out,
                                 float *scratch);

// sd_mla_sparse_attn_absorbed for n_heads heads of one query that share the cache rows: each gathered row is
// read once for all of them (the prefill path). Bit-identical to sd_mla_sparse_attn_absorbed per head.
// q_pe rows at stride ld_qpe floats (q_lat contiguous [n_heads][d_lat], out [n_heads][d_lat]).
// scratch: sd_mla_attn_heads_scratch(n_heads, n_idx) floats.
void sd_mla_attn_heads(const float *q_lat, const float *q_pe, size_t ld_qpe, int n_heads, int d_lat, int d_rope,
                       const float *kv, size_t ld_kv, const int32_t *idx, int n_idx, float scale, float *out,
                       float *scratch);
size_t sd_mla_attn_heads_scratch(int n_heads, int n_idx);

// The attention probabilities of one head that sd_mla_sparse_attn_absorbed applies over idx (same
// logits, same softmax in fp32): probs[t] for idx[t] (0 for -1 slots; all 0 when no slot is valid).
// With idx = 0..n-1 these are the dense causal attention probabilities of a query at position n-1.
void sd_mla_attn_probs_absorbed(const float *q_lat, const float *q_pe, int d_lat, int d_rope, const float *kv,
                                size_t ld_kv, const int32_t *idx, int n_idx, float scale, float *probs);

#endif
