// ops_cpu.h: the CPU backend's numeric primitives (fp32, fp32 accumulation): matmul through
// OpenBLAS sgemm (or our own threaded loops when no BLAS), matmul against a weight matrix kept in a
// GGUF block type (struct sd_wmat: quant.h's dot products, or sgemm on dequantized panels), RMSNorm,
// LayerNorm, RoPE in both pairings with llama3/YaRN frequency tables, SwiGLU, softmax, the GQA attention
// row. Threads are set once with sd_cpu_set_threads.
#ifndef SD_OPS_CPU_H
#define SD_OPS_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

// Loops with fewer multiply-adds than this run on the calling thread: waking an OpenMP team costs
// more than the work, and on a busy machine a team whose threads spin-wait can lose a whole
// scheduler timeslice per parallel region (measured: sparsedoc-mini decode fell from ~1000 to ~30
// tokens/s with 2 threads on a 2-core VM under load).
#define SD_PAR_MIN_WORK ((size_t)1 << 20)

void sd_cpu_set_threads(int n); // n <= 0: all cores
int sd_cpu_threads(void);

// y[T][N] = x[T][K] * w[N][K]^T (+ bias[N] if bias != NULL). Row strides are K (x, w) and N (y).
void sd_matmul(float *y, const float *x, const float *w, const float *bias, int T, int N, int K);
// Same with explicit leading dimensions (elements) for x, w and y; beta 0 overwrites y, 1 accumulates.
// With BLAS, T == 1 runs our loops, and products under 4M multiply-adds one OpenBLAS thread (sd_matmul_nn too).
void sd_matmul_ld(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K, float beta);
// The same computed by our own threaded loops, never BLAS (benchmark baseline and BLAS cross-check).
void sd_matmul_noblas(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K,
                      float beta);
int sd_cpu_have_blas(void);
// y[T][N] = x[T][K] * w[K][N] (w not transposed), leading dims given.
void sd_matmul_nn(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K);

// A weight matrix as the forward pass reads it: `rows` rows of `cols` elements of ggml type `type`,
// row-major, borrowed (from a file mapping or a model-owned buffer). F32: data is a const float *
// (rows of cols floats). Other types: each row is sd_qtype_row_bytes(type, cols) bytes of blocks, so
// cols is a multiple of the type's block. data == NULL: the matrix is absent.
struct sd_wmat {
    const void *data;
    enum sd_qtype type;
    int rows, cols;
    // An F32 view dequantized at load from a released FP8 block-scaled tensor (safetensors) also keeps its
    // source, which a GPU backend may keep as FP8 (kernels/forward.cu): the e4m3 values [rows][cols] (the
    // model's mapping) and f32 block scales [ceil(rows / fp8_block)][ceil(cols / fp8_block)] (the file's
    // scale_inv converted once, owned by the model). NULL / 0 for every other matrix; the CPU ignores them.
    const uint8_t *fp8;
    const float *fp8_scale;
    int fp8_block;
};

// The f32 pointer of an F32 view (NULL for other types or an absent matrix).
static inline const float *sd_wmat_f32(const struct sd_wmat *w)
{
    return w->type == SD_Q_F32 ? (const float *)w->data : NULL;
}
// Bytes of one row of w, and of the whole matrix.
size_t sd_wmat_row_bytes(const struct sd_wmat *w);
// Row r of w as f32 (dequantized for block types): the embedding gather.
void sd_wmat_row(const struct sd_wmat *w, int r, float *out);
// Which path sd_matmul_w takes (OpenBLAS builds; without BLAS always the integer path):
//  - T < sd_matmul_w_panel_min() (decode, small batches), or a scratch too small for one panel: Q8_0/Q4_0
//    quantize x per row to 8-bit blocks of 32, K-quants to blocks of 256 (quant.h), into scratch; then
//    integer dot products (F16/BF16: converted in each f32 dot product), rows spread over the threads
//    when T * rows * cols >= SD_PAR_MIN_WORK. Each output is sd_quant_dot (+ bias) of its row, whatever
//    T is.
//  - T >= sd_matmul_w_panel_min() (prefill): x is not quantized; the work is split into about 16 tasks
//    of a panel of W's rows (rows / 16, 128 to sd_matmul_w_panel_rows(cols)) against a chunk of x's rows
//    (all of them, or chunks of >= 128 when W has few panels): a function of the shapes only. The tasks
//    are spread over the threads (as many as the scratch holds 1 MiB panels); each thread dequantizes its
//    panel exactly (sd_dequantize) into its own buffer and multiplies it by cblas_sgemm, OpenBLAS set to
//    one thread meanwhile (process-wide: another thread's BLAS call at that moment runs single-threaded
//    too). The exact weights in f32 arithmetic: within f32 rounding of the dequantized f32 load.
// Both are deterministic, and give the same outputs for every thread count. The threshold
// SD_MATMUL_W_PANEL_T is where the panel path overtook the integer one in tools/bench_gguf --sweep
// (sparsedoc-mini, 2-core AVX2 VM): with 1 thread at 8 (Q4_K), 12 (Q4_0), 14 (Q8_0) rows; with 2 at
// about 6 for all three; by 1.3-1.6x at 12 rows on 2 threads, 3% behind for Q8_0 on 1.
#define SD_MATMUL_W_PANEL_T 12
// Move the threshold (T <= 0: back to SD_MATMUL_W_PANEL_T; at least 2) for benchmarks and tests.
// Process-wide; not to be called while another thread multiplies.
void sd_matmul_w_set_panel_min(int T);
int sd_matmul_w_panel_min(void);
// The most weight rows per panel for matrices of cols columns (a multiple of 16; panels are smaller for
// matrices of fewer than 16 of these).
int sd_matmul_w_panel_rows(int cols);
// Scratch bytes sd_matmul_w needs for T activation rows of cols elements against a matrix of type t:
// the quantized activations or, for T >= 2, one panel per thread (sd_cpu_threads() now), whichever is
// larger (0 for F32, and for T == 1 with F16/BF16). Independent of the threshold.
size_t sd_matmul_w_scratch(enum sd_qtype t, int T, int cols);
// y[T][w->rows] = x[T][w->cols] * W^T (+ bias[w->rows] if bias != NULL), by the path above. F32: exactly
// sd_matmul. scratch: scratch_bytes >= the integer path's activation bytes (sd_matmul_w_scratch(w->type,
// T, w->cols) is enough for both paths; fewer panels than threads only costs speed). Allocates nothing.
void sd_matmul_w(float *y, const float *x, const struct sd_wmat *w, const float *bias, int T, void *scratch,
                 size_t scratch_bytes);

// y = x / sqrt(mean(x^2) + eps) * w, per row of D (T rows, row stride ld for x and y). y may alias x.
void sd_rmsnorm(float *y, const float *x, const float *w, int T, int D, size_t ld, float eps);
// LayerNorm with weight and bias (biased variance), per row of D. y may alias x.
void sd_layernorm(float *y, const float *x, const float *w, const float *b, int T, int D, size_t ld, float eps);

// RoPE frequency table for rope_dim dims: inv_freq[rope_dim/2] and attn_factor (cos/sin magnitude).
struct sd_rope {
    int dim;
    float inv_freq[256];
    float attn_factor;
};
// Apply rotation at position pos to x[dim] (one head). interleaved: pairs (2i, 2i+1) (GPT-J / DeepSeek
// MLA); otherwise half-split pairs (i, i+dim/2) (NeoX / Llama / DeepSeek indexer).
void sd_rope_apply(const struct sd_rope *r, float *x, int64_t pos, int interleaved);

// g[i] = silu(g[i]) * u[i]
void sd_silu_mul(float *g, const float *u, size_t n);
// In-place softmax over n values; returns nothing. -INFINITY entries get 0.
void sd_softmax(float *x, int n);

// Whether this CPU runs AVX2 + FMA code (checked once). sd_cpu_force_baseline(1) makes it answer 0, so
// that tests can run the baseline build of every kernel that has both (ops_cpu, dsa).
int sd_cpu_has_avx2_fma(void);
void sd_cpu_force_baseline(int on);

// Causal attention of one query over n cached rows, the GQA path: out[hd] = softmax(scale * q.k_u)
// weighted sum of v_u, k_u = k + u * ld, v_u = v + u * ld. scratch: n floats.
void sd_attn_row(const float *q, const float *k, const float *v, size_t ld, int n, int hd, float scale, float *out,
                 float *scratch);

#endif
