// ops_cpu.c: CPU numeric primitives (see ops_cpu.h). Large GEMMs go to OpenBLAS when available;
// element-wise ops are OpenMP loops. Nothing here allocates.
#include "ops_cpu.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#include "sd_build_config.h"
#if SD_HAVE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

static int g_threads = 1;

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
    openblas_set_num_threads(n);
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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, x, ldx, w, ldw, beta, y, ldy);
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, N, K, 1.0f, x, ldx, w, ldw, 0.0f, y, ldy);
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
