// ops_cpu.c: CPU numeric primitives (see ops_cpu.h). Large GEMMs go to OpenBLAS when available;
// matmuls against GGUF block types run quant.h's dot products over rows for small batches and sgemm on
// dequantized f32 panels of the weights for large ones; element-wise ops are OpenMP loops. Nothing here
// allocates.
#include "ops_cpu.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#include "sd_build_config.h"
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_OPS_X86 1
#endif
#if SD_HAVE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

static int g_threads = 1;

#if SD_HAVE_BLAS
// OpenBLAS always runs on one thread; large products are cut into tiles of fixed shape (256 rows of x by 256
// outputs) that our OpenMP threads share, one single-threaded sgemm each. One thread pool serves the whole
// engine: OpenBLAS's own threads spin-waited after every threaded call and took the cores from the
// OpenMP regions in between (measured: 15-20% of the CPU time of a long sparsedoc-mini prefill on 2 cores
// went to their sched_yield). The tiles do not depend on the thread count, and neither do the results.
#define SD_BLAS_PAR_MIN ((size_t)1 << 22)
enum { SD_TILE_T = 256, SD_TILE_N = 256 };
static void sgemm(CBLAS_TRANSPOSE tb, int T, int N, int K, const float *x, int ldx, const float *w, int ldw, float beta,
                  float *y, int ldy)
{
    if (g_threads <= 1 || (size_t)T * N * K < SD_BLAS_PAR_MIN) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, T, N, K, 1.0f, x, ldx, w, ldw, beta, y, ldy);
        return;
    }
    int nt = (T + SD_TILE_T - 1) / SD_TILE_T, nn = (N + SD_TILE_N - 1) / SD_TILE_N;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(g_threads)
    for (int a = 0; a < nt; a++) {
        for (int b = 0; b < nn; b++) {
            int t0 = a * SD_TILE_T, n0 = b * SD_TILE_N;
            int m = T - t0 < SD_TILE_T ? T - t0 : SD_TILE_T, n = N - n0 < SD_TILE_N ? N - n0 : SD_TILE_N;
            const float *wt = tb == CblasTrans ? w + (size_t)n0 * ldw : w + n0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, m, n, K, 1.0f, x + (size_t)t0 * ldx, ldx, wt, ldw, beta,
                        y + (size_t)t0 * ldy + n0, ldy);
        }
    }
}
#endif

void sd_cpu_set_threads(int n)
{
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#if SD_HAVE_BLAS
    openblas_set_num_threads(1); // see sgemm
#endif
}

int sd_cpu_have_blas(void)
{
    return SD_HAVE_BLAS;
}

int sd_cpu_threads(void)
{
    return g_threads;
}

void sd_matmul_noblas(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K,
                      float beta)
{
#pragma omp parallel for collapse(2) schedule(static) num_threads(g_threads)                                         \
    if ((size_t)T * N * K >= SD_PAR_MIN_WORK)
    for (int t = 0; t < T; t++) {
        for (int n = 0; n < N; n++) {
            const float *a = x + (size_t)t * ldx, *b = w + (size_t)n * ldw;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
            int k = 0;
            for (; k + 8 <= K; k += 8) {
                s0 += a[k] * b[k];
                s1 += a[k + 1] * b[k + 1];
                s2 += a[k + 2] * b[k + 2];
                s3 += a[k + 3] * b[k + 3];
                s4 += a[k + 4] * b[k + 4];
                s5 += a[k + 5] * b[k + 5];
                s6 += a[k + 6] * b[k + 6];
                s7 += a[k + 7] * b[k + 7];
            }
            for (; k < K; k++)
                s0 += a[k] * b[k];
            float s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
            float *o = y + (size_t)t * ldy + n;
            *o = beta != 0.0f ? *o * beta + s : s;
        }
    }
}

void sd_matmul_ld(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K, float beta)
{
    if (T <= 0 || N <= 0)
        return;
#if SD_HAVE_BLAS
    // One row (decode): our loops beat sgemv (tools/bench_engine) and stay serial when small.
    if (T == 1)
        sd_matmul_noblas(y, ldy, x, ldx, w, ldw, T, N, K, beta);
    else
        sgemm(CblasTrans, T, N, K, x, ldx, w, ldw, beta, y, ldy);
#else
    sd_matmul_noblas(y, ldy, x, ldx, w, ldw, T, N, K, beta);
#endif
}

void sd_matmul(float *y, const float *x, const float *w, const float *bias, int T, int N, int K)
{
    sd_matmul_ld(y, N, x, K, w, K, T, N, K, 0.0f);
    if (bias) {
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++)
                y[(size_t)t * N + n] += bias[n];
    }
}

void sd_matmul_nn(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int T, int N, int K)
{
    if (T <= 0 || N <= 0)
        return;
#if SD_HAVE_BLAS
    sgemm(CblasNoTrans, T, N, K, x, ldx, w, ldw, 0.0f, y, ldy);
#else
#pragma omp parallel for schedule(static) num_threads(g_threads) if ((size_t)T * N * K >= SD_PAR_MIN_WORK)
    for (int t = 0; t < T; t++) {
        float *o = y + (size_t)t * ldy;
        for (int n = 0; n < N; n++)
            o[n] = 0.0f;
        for (int k = 0; k < K; k++) {
            float a = x[(size_t)t * ldx + k];
            const float *b = w + (size_t)k * ldw;
            for (int n = 0; n < N; n++)
                o[n] += a * b[n];
        }
    }
#endif
}

size_t sd_wmat_row_bytes(const struct sd_wmat *w)
{
    return sd_qtype_row_bytes(w->type, w->cols);
}

void sd_wmat_row(const struct sd_wmat *w, int r, float *out)
{
    size_t rb = sd_wmat_row_bytes(w);
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * rb;
    if (w->type == SD_Q_F32)
        memcpy(out, row, rb);
    else
        sd_dequantize(w->type, row, out, w->cols);
}

// Batches of at least g_panel_min rows (and a BLAS to hand) take the panel path: each thread dequantizes
// panels of W's rows (sd_dequantize, exact) into its own f32 buffer of at most SD_PANEL_BYTES in the
// scratch and multiplies them by cblas_sgemm with OpenBLAS set to one thread: our threads already fill
// the cores (measured: OpenMP dequantizing between OpenBLAS-threaded sgemms ran no faster on 2 threads
// than on 1), and OpenBLAS's small-matrix kernels round differently from its others, so fixed per-panel
// calls keep the outputs independent of the thread count. Fewer rows take the integer dot products.
#define SD_PANEL_BYTES ((size_t)1 << 20)
#define SD_PANEL_ALIGN 16 // panel rows: a multiple of this (sgemm's microkernel widths)

static int g_panel_min = SD_MATMUL_W_PANEL_T;

void sd_matmul_w_set_panel_min(int T)
{
    g_panel_min = T <= 0 ? SD_MATMUL_W_PANEL_T : T < 2 ? 2 : T;
}

int sd_matmul_w_panel_min(void)
{
    return g_panel_min;
}

int sd_matmul_w_panel_rows(int cols)
{
    size_t r = SD_PANEL_BYTES / (sizeof(float) * (size_t)(cols > 0 ? cols : 1)) / SD_PANEL_ALIGN * SD_PANEL_ALIGN;
    return r < SD_PANEL_ALIGN ? SD_PANEL_ALIGN : (int)r;
}

// Scratch bytes of one thread's panel: SD_PANEL_BYTES, or 16 rows where those are more (cols > 16384),
// the same for every cols below that so that a scratch sized for the widest matrix fits as many panels
// of any other.
static size_t panel_stride(int cols)
{
    size_t b = (size_t)sd_matmul_w_panel_rows(cols) * (size_t)cols * sizeof(float);
    return b > SD_PANEL_BYTES ? b : SD_PANEL_BYTES;
}

size_t sd_matmul_w_scratch(enum sd_qtype t, int T, int cols)
{
    size_t a = (size_t)(T > 0 ? T : 0) * sd_quant_act_bytes(t, cols), p = 0;
    if (SD_HAVE_BLAS && t != SD_Q_F32 && T >= 2 && cols > 0)
        p = (size_t)g_threads * panel_stride(cols);
    return a > p ? a : p;
}

#if SD_HAVE_BLAS
// The work is cut into about SD_PANEL_TASKS tasks (so that up to that many threads share it), each a
// panel of W's rows against a chunk of x's rows. Panels: about N / SD_PANEL_TASKS rows, at least
// SD_PANEL_MIN_ROWS, at most sd_matmul_w_panel_rows(K); when that leaves fewer panels than tasks, x's rows
// are cut too, in chunks of at least SD_PANEL_MIN_ROWS. Both are functions of T, N and K only: every
// task is the same sgemm call whatever the thread count, so the outputs do not depend on it.
#define SD_PANEL_TASKS 16
#define SD_PANEL_MIN_ROWS 128
static int round_up(int v, int m)
{
    return (v + m - 1) / m * m;
}

// y[T][N] = x W^T through f32 panels of W (see above) with nt threads, each owning panel_stride(K) bytes
// of scratch.
static void matmul_w_panels(float *y, const float *x, const struct sd_wmat *w, int T, float *scratch, int nt)
{
    int N = w->rows, K = w->cols, P = sd_matmul_w_panel_rows(K);
    int want = round_up((N + SD_PANEL_TASKS - 1) / SD_PANEL_TASKS, SD_PANEL_ALIGN);
    P = want < SD_PANEL_MIN_ROWS ? SD_PANEL_MIN_ROWS : want < P ? want : P;
    int np = (N + P - 1) / P, nm = (SD_PANEL_TASKS + np - 1) / np, mmax = T / SD_PANEL_MIN_ROWS;
    nm = nm > mmax ? mmax : nm;
    nm = nm < 1 ? 1 : nm;
    int M = round_up((T + nm - 1) / nm, SD_PANEL_ALIGN);
    nm = (T + M - 1) / M;
    int ntask = np * nm;
    size_t rb = sd_wmat_row_bytes(w), pstride = panel_stride(K) / sizeof(float);
    const uint8_t *W = w->data;
    enum sd_qtype ty = w->type;
    nt = ntask < nt ? ntask : nt;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        float *pan = scratch + (size_t)omp_get_thread_num() * pstride;
#else
        float *pan = scratch;
        (void)pstride;
#endif
        int have = -1; // the panel this thread's buffer holds
#pragma omp for schedule(static)
        for (int task = 0; task < ntask; task++) {
            int ip = task / nm, t0 = task % nm * M, n0 = ip * P, p = N - n0 < P ? N - n0 : P;
            int m = T - t0 < M ? T - t0 : M;
            if (have != ip)
                for (int r = 0; r < p; r++)
                    sd_dequantize(ty, W + (size_t)(n0 + r) * rb, pan + (size_t)r * K, K);
            have = ip;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, p, K, 1.0f, x + (size_t)t0 * K, K, pan, K, 0.0f,
                        y + (size_t)t0 * N + n0, N);
        }
    }
}
#endif

void sd_matmul_w(float *y, const float *x, const struct sd_wmat *w, const float *bias, int T, void *scratch,
                 size_t scratch_bytes)
{
    int N = w->rows, K = w->cols;
    if (w->type == SD_Q_F32) {
        sd_matmul(y, x, (const float *)w->data, bias, T, N, K);
        return;
    }
    if (T <= 0 || N <= 0)
        return;
    (void)scratch_bytes; // no BLAS: the integer path only
#if SD_HAVE_BLAS
    size_t fit = T >= g_panel_min && scratch ? scratch_bytes / panel_stride(K) : 0;
    if (fit > 0) {
        matmul_w_panels(y, x, w, T, scratch, fit < (size_t)g_threads ? (int)fit : g_threads);
        if (bias)
            for (int t = 0; t < T; t++)
                for (int n = 0; n < N; n++)
                    y[(size_t)t * N + n] += bias[n];
        return;
    }
#endif
    size_t ab = sd_quant_act_bytes(w->type, K), rb = sd_wmat_row_bytes(w);
    uint8_t *xq = scratch;
    if (ab) {
#pragma omp parallel for schedule(static) num_threads(g_threads) if ((size_t)T * K >= SD_PAR_MIN_WORK)
        for (int t = 0; t < T; t++)
            sd_quant_act(w->type, x + (size_t)t * K, K, xq + (size_t)t * ab);
    }
    const uint8_t *W = w->data;
    enum sd_qtype ty = w->type;
    // Each weight row is read once and stays in L1 while it meets every activation row, 4 at a time
    // (its blocks decoded once per 4: sd_quant_dot_n, the same values as one at a time).
#pragma omp parallel for schedule(static) num_threads(g_threads) if ((size_t)T * N * K >= SD_PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const uint8_t *wr = W + (size_t)n * rb;
        float b = bias ? bias[n] : 0.0f, out[4];
        for (int t = 0; t < T; t += 4) {
            int m = T - t < 4 ? T - t : 4;
            sd_quant_dot_n(ty, wr, ab ? xq + (size_t)t * ab : NULL, x + (size_t)t * K, K, m, out);
            for (int j = 0; j < m; j++)
                y[(size_t)(t + j) * N + n] = out[j] + b;
        }
    }
}

void sd_rmsnorm(float *y, const float *x, const float *w, int T, int D, size_t ld, float eps)
{
    for (int t = 0; t < T; t++) {
        const float *a = x + (size_t)t * ld;
        float *o = y + (size_t)t * ld;
        double ss = 0.0;
        for (int i = 0; i < D; i++)
            ss += (double)a[i] * a[i];
        float r = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int i = 0; i < D; i++)
            o[i] = a[i] * r * w[i];
    }
}

void sd_layernorm(float *y, const float *x, const float *w, const float *b, int T, int D, size_t ld, float eps)
{
    for (int t = 0; t < T; t++) {
        const float *a = x + (size_t)t * ld;
        float *o = y + (size_t)t * ld;
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < D; i++)
            mean += a[i];
        mean /= D;
        for (int i = 0; i < D; i++)
            var += ((double)a[i] - mean) * ((double)a[i] - mean);
        var /= D;
        float r = 1.0f / sqrtf((float)var + eps);
        float m = (float)mean;
        for (int i = 0; i < D; i++)
            o[i] = (a[i] - m) * r * w[i] + (b ? b[i] : 0.0f);
    }
}

void sd_rope_apply(const struct sd_rope *r, float *x, int64_t pos, int interleaved)
{
    int half = r->dim / 2;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * r->inv_freq[i];
        float c = cosf(ang) * r->attn_factor, s = sinf(ang) * r->attn_factor;
        int a = interleaved ? 2 * i : i;
        int b = interleaved ? 2 * i + 1 : i + half;
        float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x1 * c + x0 * s;
    }
}

void sd_silu_mul(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

void sd_softmax(float *x, int n)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    if (mx == -INFINITY) {
        memset(x, 0, (size_t)n * sizeof(float));
        return;
    }
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

static int force_baseline;

int sd_cpu_has_avx2_fma(void)
{
#ifdef SD_OPS_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return !force_baseline && cached;
#else
    return 0;
#endif
}

void sd_cpu_force_baseline(int on)
{
    force_baseline = on;
}

static inline float dot4(const float *a, const float *b, int n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static inline void attn_row_body(const float *q, const float *k, const float *v, size_t ld, int n, int hd,
                                 float scale, float *out, float *sc)
{
    float mx = -INFINITY;
    for (int u = 0; u < n; u++) {
        float d = dot4(q, k + (size_t)u * ld, hd) * scale;
        sc[u] = d;
        if (d > mx)
            mx = d;
    }
    float sum = 0.0f;
    for (int u = 0; u < n; u++) {
        sc[u] = expf(sc[u] - mx);
        sum += sc[u];
    }
    memset(out, 0, (size_t)hd * sizeof(float));
    // out += p_u v_u, four rows per pass over out: the same additions in the same order as one at a time.
    int u = 0;
    for (; u + 4 <= n; u += 4) {
        const float *v0 = v + (size_t)u * ld, *v1 = v0 + ld, *v2 = v1 + ld, *v3 = v2 + ld;
        float p0 = sc[u] / sum, p1 = sc[u + 1] / sum, p2 = sc[u + 2] / sum, p3 = sc[u + 3] / sum;
        for (int d = 0; d < hd; d++)
            out[d] = (((out[d] + p0 * v0[d]) + p1 * v1[d]) + p2 * v2[d]) + p3 * v3[d];
    }
    for (; u < n; u++) {
        const float *vv = v + (size_t)u * ld;
        float p = sc[u] / sum;
        for (int d = 0; d < hd; d++)
            out[d] += p * vv[d];
    }
}

void sd_attn_row(const float *q, const float *k, const float *v, size_t ld, int n, int hd, float scale, float *out,
                 float *scratch)
{
    // No AVX2 build here (unlike dsa.c's attention): measured no faster than the baseline one.
    attn_row_body(q, k, v, ld, n, hd, scale, out, scratch);
}
