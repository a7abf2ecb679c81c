// ops_cpu.h: the CPU backend's numeric primitives (fp32, fp32 accumulation): matmul through
// OpenBLAS sgemm (or our own threaded loops when no BLAS), RMSNorm, LayerNorm, RoPE in both pairings
// with llama3/YaRN frequency tables, SwiGLU, softmax. Threads are set once with sd_cpu_set_threads.
#ifndef SD_OPS_CPU_H
#define SD_OPS_CPU_H

#include <stddef.h>
#include <stdint.h>

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
void sd_matmul_ld(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K, float beta);
// The same computed by our own threaded loops, never BLAS (benchmark baseline and BLAS cross-check).
void sd_matmul_noblas(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K,
                      float beta);
int sd_cpu_have_blas(void);
// y[T][N] = x[T][K] * w[K][N] (w not transposed), leading dims given.
void sd_matmul_nn(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K);

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

#endif
