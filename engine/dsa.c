// dsa.c: CPU reference of DeepSeek Sparse Attention: Hadamard + FP8 quantization of indexer rows,
// indexer scores (fp32 and FP8 numerics), deterministic per-row top-k, and sparse absorbed MLA
// attention over gathered tokens. Cost of the attention scales with the number of selected tokens.
#include "dsa.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "ops_cpu.h"

void sd_hadamard(float *x, int n)
{
    for (int len = 1; len < n; len <<= 1) {
        for (int i = 0; i < n; i += len << 1) {
            for (int j = i; j < i + len; j++) {
                float a = x[j], b = x[j + len];
                x[j] = a + b;
                x[j + len] = a - b;
            }
        }
    }
    float s = 1.0f / sqrtf((float)n);
    for (int i = 0; i < n; i++)
        x[i] *= s;
}

void sd_dsa_quant_fp8_row(const float *x, int dim, uint8_t *q8, float *scale)
{
    float tmp[SD_DSA_MAX_DIM];
    assert(dim > 0 && dim <= SD_DSA_MAX_DIM && (dim & (dim - 1)) == 0);
    int d = dim <= SD_DSA_MAX_DIM ? dim : SD_DSA_MAX_DIM;
    memcpy(tmp, x, (size_t)d * sizeof(float));
    sd_hadamard(tmp, d);
    float s = sd_fp8_pow2_scale(tmp, d);
    float inv = 1.0f / s; // exact: s is a power of two
    for (int i = 0; i < d; i++)
        q8[i] = sd_f32_to_e4m3(tmp[i] * inv);
    *scale = s;
}

size_t sd_mla_kv_fp8_row_bytes(int d_lat, int d_rope)
{
    size_t tiles = ((size_t)d_lat + SD_KV_FP8_TILE - 1) / SD_KV_FP8_TILE;
    return (size_t)d_lat + 4 * tiles + 2 * (size_t)d_rope;
}

float sd_mla_kv_fp8_scale(const float *x, int n)
{
    float r = sd_absmax(x, n) / 448.0f; // FlashMLA clamps amax / 448, the indexer and activations amax
    return sd_pow2_ceil(r < 1e-4f ? 1e-4f : r);
}

void sd_mla_kv_fp8_quant(const float *row, int d_lat, int d_rope, uint8_t *out)
{
    uint8_t *sc = out + d_lat, *pe = sc + 4 * (((size_t)d_lat + SD_KV_FP8_TILE - 1) / SD_KV_FP8_TILE);
    for (int b0 = 0; b0 < d_lat; b0 += SD_KV_FP8_TILE, sc += 4) {
        int len = d_lat - b0 < SD_KV_FP8_TILE ? d_lat - b0 : SD_KV_FP8_TILE;
        float s = sd_mla_kv_fp8_scale(row + b0, len), inv = 1.0f / s; // exact: s is a power of two
        for (int i = 0; i < len; i++)
            out[b0 + i] = sd_f32_to_e4m3(row[b0 + i] * inv);
        uint32_t u;
        memcpy(&u, &s, 4);
        sc[0] = (uint8_t)u, sc[1] = (uint8_t)(u >> 8), sc[2] = (uint8_t)(u >> 16), sc[3] = (uint8_t)(u >> 24);
    }
    for (int i = 0; i < d_rope; i++) {
        uint16_t h = sd_f32_to_bf16(row[d_lat + i]);
        pe[2 * i] = (uint8_t)h, pe[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

// e4m3 code -> f32 times 2^-120, exact, without branches or tables (vectorizes): the code's exponent and mantissa
// bits go into f32's fields (subnormal codes become f32 subnormals). The NaN codes (0x7f, 0xff) are not handled here.
static inline float e4m3_bits_scaled(uint8_t v)
{
    uint32_t b = ((uint32_t)(v & 0x7fu) << 20) | ((uint32_t)(v & 0x80u) << 24);
    float f;
    memcpy(&f, &b, 4);
    return f;
}

void sd_mla_kv_fp8_dequant(const uint8_t *in, int d_lat, int d_rope, float *row)
{
    const uint8_t *sc = in + d_lat, *pe = sc + 4 * (((size_t)d_lat + SD_KV_FP8_TILE - 1) / SD_KV_FP8_TILE);
    for (int b0 = 0; b0 < d_lat; b0 += SD_KV_FP8_TILE, sc += 4) {
        int len = d_lat - b0 < SD_KV_FP8_TILE ? d_lat - b0 : SD_KV_FP8_TILE;
        uint32_t u = (uint32_t)sc[0] | (uint32_t)sc[1] << 8 | (uint32_t)sc[2] << 16 | (uint32_t)sc[3] << 24;
        float s;
        memcpy(&s, &u, 4);
        // e4m3 value * s, rounded once as sd_e4m3_to_f32(q) * s (the 2^120 step is exact)
        for (int i = 0; i < len; i++)
            row[b0 + i] = e4m3_bits_scaled(in[b0 + i]) * 0x1p120f * s;
        int nan = 0;
        for (int i = 0; i < len; i++)
            nan |= (in[b0 + i] & 0x7f) == 0x7f;
        for (int i = 0; nan && i < len; i++) // NaN codes (never written by the quantizer, but a blob may hold them)
            if ((in[b0 + i] & 0x7f) == 0x7f)
                row[b0 + i] = NAN;
    }
    for (int i = 0; i < d_rope; i++) {
        uint32_t b = ((uint32_t)pe[2 * i] | (uint32_t)pe[2 * i + 1] << 8) << 16;
        memcpy(row + d_lat + i, &b, 4);
    }
}

static inline __attribute__((always_inline)) float dot_f32(const float *a, const float *b, int n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
        s4 += a[i + 4] * b[i + 4];
        s5 += a[i + 5] * b[i + 5];
        s6 += a[i + 6] * b[i + 6];
        s7 += a[i + 7] * b[i + 7];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_DSA_X86 1
#include <immintrin.h>
#define AVX2_FMA __attribute__((target("avx2,fma")))

// Scores of one query against n (a multiple of 8) keys stored transposed, kt[d * ldk + u]: eight keys
// per vector, four heads at a time. Every key's score is the same chain of fused multiply-adds,
// over d and then over heads in order, wherever the key sits in the block: results do not depend on
// blocking or thread count.
AVX2_FMA static void scores_avx2(const float *q, const float *w, int n_heads, int dim, const float *kt, int ldk, int n,
                                 float *out)
{
    const __m256 zero = _mm256_setzero_ps();
    int g = 0;
    // Sixteen keys (two vectors) x four heads per step: eight accumulators keep the FMA units busier than
    // the loads of the broadcast query values.
    for (; g + 16 <= n; g += 16) {
        __m256 s = zero, t = zero;
        int j = 0;
        for (; j + 4 <= n_heads; j += 4) {
            const float *q0 = q + (size_t)j * dim, *q1 = q0 + dim, *q2 = q1 + dim, *q3 = q2 + dim;
            __m256 a0 = zero, a1 = zero, a2 = zero, a3 = zero, b0 = zero, b1 = zero, b2 = zero, b3 = zero;
            for (int d = 0; d < dim; d++) {
                __m256 kv = _mm256_loadu_ps(kt + (size_t)d * ldk + g),
                       kw = _mm256_loadu_ps(kt + (size_t)d * ldk + g + 8);
                __m256 x0 = _mm256_broadcast_ss(q0 + d), x1 = _mm256_broadcast_ss(q1 + d);
                a0 = _mm256_fmadd_ps(x0, kv, a0);
                b0 = _mm256_fmadd_ps(x0, kw, b0);
                a1 = _mm256_fmadd_ps(x1, kv, a1);
                b1 = _mm256_fmadd_ps(x1, kw, b1);
                __m256 x2 = _mm256_broadcast_ss(q2 + d), x3 = _mm256_broadcast_ss(q3 + d);
                a2 = _mm256_fmadd_ps(x2, kv, a2);
                b2 = _mm256_fmadd_ps(x2, kw, b2);
                a3 = _mm256_fmadd_ps(x3, kv, a3);
                b3 = _mm256_fmadd_ps(x3, kw, b3);
            }
            __m256 w0 = _mm256_set1_ps(w[j]), w1 = _mm256_set1_ps(w[j + 1]);
            __m256 w2 = _mm256_set1_ps(w[j + 2]), w3 = _mm256_set1_ps(w[j + 3]);
            s = _mm256_fmadd_ps(w0, _mm256_max_ps(a0, zero), s);
            s = _mm256_fmadd_ps(w1, _mm256_max_ps(a1, zero), s);
            s = _mm256_fmadd_ps(w2, _mm256_max_ps(a2, zero), s);
            s = _mm256_fmadd_ps(w3, _mm256_max_ps(a3, zero), s);
            t = _mm256_fmadd_ps(w0, _mm256_max_ps(b0, zero), t);
            t = _mm256_fmadd_ps(w1, _mm256_max_ps(b1, zero), t);
            t = _mm256_fmadd_ps(w2, _mm256_max_ps(b2, zero), t);
            t = _mm256_fmadd_ps(w3, _mm256_max_ps(b3, zero), t);
        }
        for (; j < n_heads; j++) {
            const float *q0 = q + (size_t)j * dim;
            __m256 a0 = zero, b0 = zero;
            for (int d = 0; d < dim; d++) {
                __m256 x0 = _mm256_broadcast_ss(q0 + d);
                a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(kt + (size_t)d * ldk + g), a0);
                b0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(kt + (size_t)d * ldk + g + 8), b0);
            }
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_max_ps(a0, zero), s);
            t = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_max_ps(b0, zero), t);
        }
        _mm256_storeu_ps(out + g, s);
        _mm256_storeu_ps(out + g + 8, t);
    }
    for (; g < n; g += 8) {
        __m256 s = zero;
        int j = 0;
        for (; j + 4 <= n_heads; j += 4) {
            const float *q0 = q + (size_t)j * dim, *q1 = q0 + dim, *q2 = q1 + dim, *q3 = q2 + dim;
            __m256 a0 = zero, a1 = zero, a2 = zero, a3 = zero;
            for (int d = 0; d < dim; d++) {
                __m256 kv = _mm256_loadu_ps(kt + (size_t)d * ldk + g);
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(q0 + d), kv, a0);
                a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(q1 + d), kv, a1);
                a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(q2 + d), kv, a2);
                a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(q3 + d), kv, a3);
            }
            // relu as max(a, 0): a NaN dot gives 0, as the scalar path's (d > 0) test skips it
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_max_ps(a0, zero), s);
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j + 1]), _mm256_max_ps(a1, zero), s);
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j + 2]), _mm256_max_ps(a2, zero), s);
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j + 3]), _mm256_max_ps(a3, zero), s);
        }
        for (; j < n_heads; j++) {
            const float *q0 = q + (size_t)j * dim;
            __m256 a0 = zero;
            for (int d = 0; d < dim; d++)
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(q0 + d), _mm256_loadu_ps(kt + (size_t)d * ldk + g), a0);
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_max_ps(a0, zero), s);
        }
        _mm256_storeu_ps(out + g, s);
    }
}

#define AVX512 __attribute__((target("avx512f,avx2,fma")))

// scores_avx2 with 16 keys per vector (32 per step). Each key's lane does the same chain of fused
// multiply-adds as in scores_avx2 (over d, then over heads in order; max(a, 0) with the same NaN rule),
// so the scores are the same bits; only more keys run side by side. The last 8 keys, if any, go to
// scores_avx2.
AVX512 static void scores_avx512(const float *q, const float *w, int n_heads, int dim, const float *kt, int ldk, int n,
                                 float *out)
{
    const __m512 zero = _mm512_setzero_ps();
    int g = 0;
    for (; g + 32 <= n; g += 32) {
        __m512 s = zero, t = zero;
        int j = 0;
        for (; j + 4 <= n_heads; j += 4) {
            const float *q0 = q + (size_t)j * dim, *q1 = q0 + dim, *q2 = q1 + dim, *q3 = q2 + dim;
            __m512 a0 = zero, a1 = zero, a2 = zero, a3 = zero, b0 = zero, b1 = zero, b2 = zero, b3 = zero;
            for (int d = 0; d < dim; d++) {
                __m512 kv = _mm512_loadu_ps(kt + (size_t)d * ldk + g),
                       kw = _mm512_loadu_ps(kt + (size_t)d * ldk + g + 16);
                __m512 x0 = _mm512_set1_ps(q0[d]), x1 = _mm512_set1_ps(q1[d]);
                a0 = _mm512_fmadd_ps(x0, kv, a0);
                b0 = _mm512_fmadd_ps(x0, kw, b0);
                a1 = _mm512_fmadd_ps(x1, kv, a1);
                b1 = _mm512_fmadd_ps(x1, kw, b1);
                __m512 x2 = _mm512_set1_ps(q2[d]), x3 = _mm512_set1_ps(q3[d]);
                a2 = _mm512_fmadd_ps(x2, kv, a2);
                b2 = _mm512_fmadd_ps(x2, kw, b2);
                a3 = _mm512_fmadd_ps(x3, kv, a3);
                b3 = _mm512_fmadd_ps(x3, kw, b3);
            }
            __m512 w0 = _mm512_set1_ps(w[j]), w1 = _mm512_set1_ps(w[j + 1]);
            __m512 w2 = _mm512_set1_ps(w[j + 2]), w3 = _mm512_set1_ps(w[j + 3]);
            s = _mm512_fmadd_ps(w0, _mm512_max_ps(a0, zero), s);
            s = _mm512_fmadd_ps(w1, _mm512_max_ps(a1, zero), s);
            s = _mm512_fmadd_ps(w2, _mm512_max_ps(a2, zero), s);
            s = _mm512_fmadd_ps(w3, _mm512_max_ps(a3, zero), s);
            t = _mm512_fmadd_ps(w0, _mm512_max_ps(b0, zero), t);
            t = _mm512_fmadd_ps(w1, _mm512_max_ps(b1, zero), t);
            t = _mm512_fmadd_ps(w2, _mm512_max_ps(b2, zero), t);
            t = _mm512_fmadd_ps(w3, _mm512_max_ps(b3, zero), t);
        }
        for (; j < n_heads; j++) {
            const float *q0 = q + (size_t)j * dim;
            __m512 a0 = zero, b0 = zero;
            for (int d = 0; d < dim; d++) {
                __m512 x0 = _mm512_set1_ps(q0[d]);
                a0 = _mm512_fmadd_ps(x0, _mm512_loadu_ps(kt + (size_t)d * ldk + g), a0);
                b0 = _mm512_fmadd_ps(x0, _mm512_loadu_ps(kt + (size_t)d * ldk + g + 16), b0);
            }
            s = _mm512_fmadd_ps(_mm512_set1_ps(w[j]), _mm512_max_ps(a0, zero), s);
            t = _mm512_fmadd_ps(_mm512_set1_ps(w[j]), _mm512_max_ps(b0, zero), t);
        }
        _mm512_storeu_ps(out + g, s);
        _mm512_storeu_ps(out + g + 16, t);
    }
    if (g < n)
        scores_avx2(q, w, n_heads, dim, kt + g, ldk, n - g, out + g);
}

static int no_avx512; // sd_dsa_force_avx2

// AVX-512F usable on this CPU and OS (and not switched off for a test).
static int use_avx512(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f");
    }
    return cached && !no_avx512 && sd_cpu_has_avx2_fma();
}

// The same scores as scores_avx2, for n keys u0.. of the row-major cache k, without a transposed block:
// the eight keys of a lane group are gathered per dimension (decode: one query cannot pay for a
// transposition). Same fused multiply-adds in the same order, so the same bits. Keys at or past n_k are
// read from key n_k - 1 and their results dropped by the caller.
AVX2_FMA static void scores_avx2_gather(const float *q, const float *w, int n_heads, int dim, const float *k, int u0,
                                        int n, int n_k, float *out)
{
    const __m256 zero = _mm256_setzero_ps();
    for (int g = 0; g < n; g += 8) {
        int off[8];
        for (int l = 0; l < 8; l++) {
            int u = u0 + g + l < n_k ? u0 + g + l : n_k - 1;
            off[l] = (u - u0 - g) * dim;
        }
        const __m256i vo = _mm256_loadu_si256((const __m256i *)(const void *)off);
        const float *kb = k + (size_t)(u0 + g) * dim;
        __m256 s = zero;
        int j = 0;
        for (; j + 4 <= n_heads; j += 4) {
            const float *q0 = q + (size_t)j * dim, *q1 = q0 + dim, *q2 = q1 + dim, *q3 = q2 + dim;
            __m256 a0 = zero, a1 = zero, a2 = zero, a3 = zero;
            for (int d = 0; d < dim; d++) {
                __m256 kv = _mm256_i32gather_ps(kb + d, vo, 4);
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(q0 + d), kv, a0);
                a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(q1 + d), kv, a1);
                a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(q2 + d), kv, a2);
                a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(q3 + d), kv, a3);
            }
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_max_ps(a0, zero), s);
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j + 1]), _mm256_max_ps(a1, zero), s);
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j + 2]), _mm256_max_ps(a2, zero), s);
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j + 3]), _mm256_max_ps(a3, zero), s);
        }
        for (; j < n_heads; j++) {
            const float *q0 = q + (size_t)j * dim;
            __m256 a0 = zero;
            for (int d = 0; d < dim; d++)
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(q0 + d), _mm256_i32gather_ps(kb + d, vo, 4), a0);
            s = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_max_ps(a0, zero), s);
        }
        _mm256_storeu_ps(out + g, s);
    }
}

#endif

void sd_dsa_force_scalar(int on)
{
    sd_cpu_force_baseline(on);
}

void sd_dsa_force_avx2(int on)
{
#ifdef SD_DSA_X86
    no_avx512 = on;
#else
    (void)on;
#endif
}

const char *sd_dsa_scores_impl(void)
{
#ifdef SD_DSA_X86
    return use_avx512() ? "avx512" : sd_cpu_has_avx2_fma() ? "avx2" : "scalar";
#else
    return "scalar";
#endif
}

// Queries x keys per task: a transposed key block serves IDX_QG queries; a group of fewer than
// IDX_GATHER_MAX queries gathers its keys instead (the same arithmetic).
enum { IDX_QG = 32, IDX_KB = 256, IDX_GATHER_MAX = 4 };

static void scores_scalar(const float *q, const float *w, int n_heads, int dim, const float *k, int u0, int u1,
                          float *row)
{
    for (int u = u0; u < u1; u++) {
        const float *ku = k + (size_t)u * dim;
        float s = 0.0f;
        for (int j = 0; j < n_heads; j++) {
            float d = dot_f32(q + (size_t)j * dim, ku, dim);
            if (d > 0.0f)
                s += w[j] * d;
        }
        row[u] = s;
    }
}

void sd_dsa_index_scores_f32(const float *q, const float *w, int n_q, int n_heads, int dim, const float *k, int n_k,
                             const int *n_valid, float *scores, size_t ld_scores, int n_threads)
{
#ifdef SD_DSA_X86
    const int avx512 = use_avx512();
#endif
    int n_qg = (n_q + IDX_QG - 1) / IDX_QG, n_kb = (n_k + IDX_KB - 1) / IDX_KB;
    int nt = n_threads > 0 ? n_threads : 1;
    (void)nt; // unused without OpenMP
#pragma omp parallel num_threads(nt) if ((size_t)n_q * n_k * n_heads * dim >= SD_PAR_MIN_WORK)
    {
        float *kt = NULL, *buf = NULL; // this thread's transposed key block and one row of its scores
#ifdef SD_DSA_X86
        if (sd_cpu_has_avx2_fma()) {
            kt = malloc((size_t)dim * IDX_KB * sizeof(float));
            buf = malloc(IDX_KB * sizeof(float));
            if (!kt || !buf) { // out of memory: the scalar path needs nothing
                free(kt);
                free(buf);
                kt = buf = NULL;
            }
        }
#endif
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int qg = 0; qg < n_qg; qg++) {
            for (int b = 0; b < n_kb; b++) {
                int i0 = qg * IDX_QG, i1 = i0 + IDX_QG < n_q ? i0 + IDX_QG : n_q;
                int u0 = b * IDX_KB, u1 = u0 + IDX_KB < n_k ? u0 + IDX_KB : n_k;
                int nv_max = 0; // keys of this block that any query of the group sees
                for (int i = i0; i < i1; i++) {
                    int nv = n_valid ? n_valid[i] : n_k;
                    nv_max = nv > nv_max ? nv : nv_max;
                }
                int ue = nv_max < u1 ? nv_max : u1, n_pad = ue > u0 ? (ue - u0 + 7) & ~7 : 0;
                int gather = i1 - i0 < IDX_GATHER_MAX; // too few queries to pay for the transposition
                if (kt && n_pad && !gather) {
                    for (int d = 0; d < dim; d++) {
                        float *dst = kt + (size_t)d * IDX_KB;
                        for (int u = u0; u < ue; u++)
                            dst[u - u0] = k[(size_t)u * dim + d];
                        for (int u = ue - u0; u < n_pad; u++)
                            dst[u] = 0.0f;
                    }
                }
                for (int i = i0; i < i1; i++) {
                    int nv = n_valid ? n_valid[i] : n_k;
                    if (nv > n_k)
                        nv = n_k;
                    float *row = scores + (size_t)i * ld_scores;
                    int uv = nv < u1 ? (nv > u0 ? nv : u0) : u1; // [u0, uv) valid
                    if (uv > u0) {
                        const float *qi = q + (size_t)i * n_heads * dim, *wi = w + (size_t)i * n_heads;
#ifdef SD_DSA_X86
                        if (kt && gather) {
                            scores_avx2_gather(qi, wi, n_heads, dim, k, u0, (uv - u0 + 7) & ~7, uv, buf);
                            memcpy(row + u0, buf, (size_t)(uv - u0) * sizeof(float));
                        } else if (kt) {
                            if (avx512)
                                scores_avx512(qi, wi, n_heads, dim, kt, IDX_KB, (uv - u0 + 7) & ~7, buf);
                            else
                                scores_avx2(qi, wi, n_heads, dim, kt, IDX_KB, (uv - u0 + 7) & ~7, buf);
                            memcpy(row + u0, buf, (size_t)(uv - u0) * sizeof(float));
                        } else
#endif
                            scores_scalar(qi, wi, n_heads, dim, k, u0, uv, row);
                    }
                    for (int u = uv; u < u1; u++)
                        row[u] = -INFINITY;
                }
            }
        }
        free(kt);
        free(buf);
    }
}

// Exact dot product of decoded e4m3 values. Every e4m3 value is an integer multiple of 2^-9 below 2^9, so
// each product is a multiple of 2^-18 below 2^18 and any partial sum of at most SD_DSA_MAX_DIM of them is a
// multiple of 2^-18 below 2^27: 45 significant bits, held exactly by a double. The sum is therefore the
// same in every order (the CUDA kernels rely on this to match bit for bit) and is rounded once to float.
static inline float dot_e4m3(const double *qd, const uint8_t *k8, const double *lut, int n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += qd[i] * lut[k8[i]];
        s1 += qd[i + 1] * lut[k8[i + 1]];
        s2 += qd[i + 2] * lut[k8[i + 2]];
        s3 += qd[i + 3] * lut[k8[i + 3]];
    }
    for (; i < n; i++)
        s0 += qd[i] * lut[k8[i]];
    return (float)((s0 + s1) + (s2 + s3));
}

#ifdef SD_DSA_X86
// FP8 scores of one query (decoded heads qd, folded weights wf) against n (a multiple of 8) keys whose
// decoded values are stored transposed, ktd[d * ldk + u]. The dots are exact in double whatever the
// order (see dot_e4m3), and the float steps after them are the scalar path's, in its order: the same bits.
AVX2_FMA static void scores_fp8_avx2(const double *qd, const float *wf, int n_heads, int dim, const double *ktd,
                                     int ldk, int n, const float *ks, float *out)
{
    const __m256d zd = _mm256_setzero_pd();
    const __m128 zf = _mm_setzero_ps();
    for (int g = 0; g < n; g += 8) {
        __m128 s = zf, t = zf; // keys g..g+3 and g+4..g+7
        int j = 0;
        for (; j + 2 <= n_heads; j += 2) {
            const double *q0 = qd + (size_t)j * dim, *q1 = q0 + dim;
            __m256d a0 = zd, a1 = zd, b0 = zd, b1 = zd;
            for (int d = 0; d < dim; d++) {
                __m256d kv = _mm256_loadu_pd(ktd + (size_t)d * ldk + g),
                        kw = _mm256_loadu_pd(ktd + (size_t)d * ldk + g + 4);
                __m256d x0 = _mm256_broadcast_sd(q0 + d), x1 = _mm256_broadcast_sd(q1 + d);
                a0 = _mm256_fmadd_pd(x0, kv, a0);
                b0 = _mm256_fmadd_pd(x0, kw, b0);
                a1 = _mm256_fmadd_pd(x1, kv, a1);
                b1 = _mm256_fmadd_pd(x1, kw, b1);
            }
            __m128 w0 = _mm_set1_ps(wf[j]), w1 = _mm_set1_ps(wf[j + 1]);
            s = _mm_add_ps(s, _mm_mul_ps(w0, _mm_max_ps(_mm256_cvtpd_ps(a0), zf)));
            t = _mm_add_ps(t, _mm_mul_ps(w0, _mm_max_ps(_mm256_cvtpd_ps(b0), zf)));
            s = _mm_add_ps(s, _mm_mul_ps(w1, _mm_max_ps(_mm256_cvtpd_ps(a1), zf)));
            t = _mm_add_ps(t, _mm_mul_ps(w1, _mm_max_ps(_mm256_cvtpd_ps(b1), zf)));
        }
        for (; j < n_heads; j++) {
            const double *q0 = qd + (size_t)j * dim;
            __m256d a0 = zd, b0 = zd;
            for (int d = 0; d < dim; d++) {
                __m256d x0 = _mm256_broadcast_sd(q0 + d);
                a0 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(ktd + (size_t)d * ldk + g), a0);
                b0 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(ktd + (size_t)d * ldk + g + 4), b0);
            }
            __m128 w0 = _mm_set1_ps(wf[j]);
            s = _mm_add_ps(s, _mm_mul_ps(w0, _mm_max_ps(_mm256_cvtpd_ps(a0), zf)));
            t = _mm_add_ps(t, _mm_mul_ps(w0, _mm_max_ps(_mm256_cvtpd_ps(b0), zf)));
        }
        _mm_storeu_ps(out + g, _mm_mul_ps(s, _mm_loadu_ps(ks + g)));
        _mm_storeu_ps(out + g + 4, _mm_mul_ps(t, _mm_loadu_ps(ks + g + 4)));
    }
}

enum { IDX8_KB = 128 };

// sd_dsa_index_scores_fp8 with scores_fp8_avx2: tasks of IDX_QG queries x IDX8_KB keys, each decoding its
// key block once. Returns -1 when a thread's buffers cannot be allocated.
static int index_scores_fp8_avx2(const uint8_t *q8, const float *q_scale, const float *w, int n_q, int n_heads, int dim,
                                 const uint8_t *k8, const float *k_scale, int n_k, const int *n_valid, float *scores,
                                 size_t ld_scores, int nt, const double *lut)
{
    int n_qg = (n_q + IDX_QG - 1) / IDX_QG, n_kb = (n_k + IDX8_KB - 1) / IDX8_KB, failed = 0;
    (void)nt; // unused without OpenMP
#pragma omp parallel num_threads(nt) reduction(| : failed) if ((size_t)n_q * n_k * n_heads * dim >= SD_PAR_MIN_WORK)
    {
        double *ktd = malloc((size_t)dim * IDX8_KB * sizeof(double)),
               *qd = malloc((size_t)n_heads * dim * sizeof(double));
        float *wf = malloc((size_t)n_heads * sizeof(float)), *buf = malloc(IDX8_KB * sizeof(float));
        float *ks = malloc(IDX8_KB * sizeof(float));
        int have = ktd && qd && wf && buf && ks;
        failed |= !have;
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int qg = 0; qg < n_qg; qg++) {
            for (int b = 0; b < n_kb; b++) {
                if (!have)
                    continue;
                int i0 = qg * IDX_QG, i1 = i0 + IDX_QG < n_q ? i0 + IDX_QG : n_q;
                int u0 = b * IDX8_KB, u1 = u0 + IDX8_KB < n_k ? u0 + IDX8_KB : n_k;
                int nv_max = 0;
                for (int i = i0; i < i1; i++) {
                    int nv = n_valid ? n_valid[i] : n_k;
                    nv_max = nv > nv_max ? nv : nv_max;
                }
                int ue = nv_max < u1 ? nv_max : u1, n_pad = ue > u0 ? (ue - u0 + 7) & ~7 : 0;
                for (int u = u0; u < u0 + n_pad; u++) {
                    double *dst = ktd + (u - u0);
                    if (u < ue) {
                        const uint8_t *src = k8 + (size_t)u * dim;
                        for (int d = 0; d < dim; d++)
                            dst[(size_t)d * IDX8_KB] = lut[src[d]];
                    } else {
                        for (int d = 0; d < dim; d++)
                            dst[(size_t)d * IDX8_KB] = 0.0;
                    }
                    ks[u - u0] = u < ue ? k_scale[u] : 0.0f;
                }
                for (int i = i0; i < i1; i++) {
                    int nv = n_valid ? n_valid[i] : n_k;
                    if (nv > n_k)
                        nv = n_k;
                    float *row = scores + (size_t)i * ld_scores;
                    int uv = nv < u1 ? (nv > u0 ? nv : u0) : u1;
                    if (uv > u0) {
                        for (int j = 0; j < n_heads; j++) {
                            const uint8_t *src = q8 + ((size_t)i * n_heads + j) * dim;
                            for (int d = 0; d < dim; d++)
                                qd[(size_t)j * dim + d] = lut[src[d]];
                            wf[j] = w[(size_t)i * n_heads + j] * q_scale[(size_t)i * n_heads + j];
                        }
                        scores_fp8_avx2(qd, wf, n_heads, dim, ktd, IDX8_KB, (uv - u0 + 7) & ~7, ks, buf);
                        memcpy(row + u0, buf, (size_t)(uv - u0) * sizeof(float));
                    }
                    for (int u = uv; u < u1; u++)
                        row[u] = -INFINITY;
                }
            }
        }
        free(ktd);
        free(qd);
        free(wf);
        free(buf);
        free(ks);
    }
    return failed ? -1 : 0;
}
#endif

int sd_dsa_index_scores_fp8(const uint8_t *q8, const float *q_scale, const float *w, int n_q, int n_heads, int dim,
                            const uint8_t *k8, const float *k_scale, int n_k, const int *n_valid, float *scores,
                            size_t ld_scores, int n_threads)
{
    double lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = sd_e4m3_to_f32((uint8_t)v);
    int nt = n_threads > 0 ? n_threads : 1;
#ifdef SD_DSA_X86
    if (sd_cpu_has_avx2_fma())
        return index_scores_fp8_avx2(q8, q_scale, w, n_q, n_heads, dim, k8, k_scale, n_k, n_valid, scores, ld_scores,
                                     nt, lut);
#endif
    const int kb = 256;
    int n_kb = (n_k + kb - 1) / kb;
    int failed = 0;
    (void)nt; // unused without OpenMP
#pragma omp parallel num_threads(nt) reduction(| : failed) if ((size_t)n_q * n_k * n_heads * dim >= SD_PAR_MIN_WORK)
    {
        // Decoded query heads (e4m3 values are exact in f32) and folded weights of one query.
        double *qf = malloc((size_t)n_heads * dim * sizeof(double));
        float *wf = malloc((size_t)n_heads * sizeof(float));
        int have = qf && wf;
        failed |= !have;
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n_q; i++) {
            if (!have)
                continue;
            for (int j = 0; j < n_heads; j++) {
                const uint8_t *src = q8 + ((size_t)i * n_heads + j) * dim;
                for (int d = 0; d < dim; d++)
                    qf[(size_t)j * dim + d] = lut[src[d]];
                wf[j] = w[(size_t)i * n_heads + j] * q_scale[(size_t)i * n_heads + j];
            }
            int nv = n_valid ? n_valid[i] : n_k;
            if (nv > n_k)
                nv = n_k;
            float *row = scores + (size_t)i * ld_scores;
            for (int b = 0; b < n_kb; b++) {
                int u0 = b * kb, u1 = u0 + kb < n_k ? u0 + kb : n_k;
                for (int u = u0; u < u1; u++) {
                    if (u >= nv) {
                        row[u] = -INFINITY;
                        continue;
                    }
                    const uint8_t *ku = k8 + (size_t)u * dim;
                    float s = 0.0f;
                    for (int j = 0; j < n_heads; j++) {
                        float d = dot_e4m3(qf + (size_t)j * dim, ku, lut, dim);
                        if (d > 0.0f)
                            s += wf[j] * d;
                    }
                    row[u] = s * k_scale[u];
                }
            }
        }
        free(qf);
        free(wf);
    }
    return failed ? -1 : 0;
}

// Selection order: larger score first, then lower index; NaN ranks as -inf and -0 equals +0. The
// score is mapped to an unsigned key that is larger exactly when the score is (in that order), so the
// k-th key can be found by a radix select: three histogram passes over 11, 11 and 10 bits.
static inline uint32_t score_key(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    b = x == 0.0f ? 0u : b;       // -0 -> +0 (ReLU makes exact zeros common: no branches here)
    b = x != x ? 0xff800000u : b; // NaN -> -inf
    return b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u); // negative: all bits flipped; else the sign bit
}

// In a histogram of nb bins, walk down from the top until `k` items are covered: returns the bin that
// holds the k-th and sets *above to the count in the bins above it.
static int hist_find(const uint32_t *h, int nb, uint32_t k, uint32_t *above)
{
    uint32_t acc = 0;
    for (int b = nb - 1; b > 0; b--) {
        if (acc + h[b] >= k) {
            *above = acc;
            return b;
        }
        acc += h[b];
    }
    *above = acc;
    return 0;
}

// Radix select over the m candidates cand[] (indices into scores; NULL: 0..m-1), k <= m: the threshold
// key T with count(key > T) < k <= count(key >= T), and in *need how many keys equal to T are taken.
// keys: m words apart from cand.
static uint32_t select_threshold(const float *scores, const int32_t *cand, int m, int k, uint32_t *keys,
                                 uint32_t *need_out)
{
    uint32_t h[2048], need = (uint32_t)k, above;
    memset(h, 0, sizeof h);
    for (int i = 0; i < m; i++) {
        keys[i] = score_key(scores[cand ? cand[i] : i]);
        h[keys[i] >> 21]++;
    }
    uint32_t b1 = (uint32_t)hist_find(h, 2048, need, &above);
    need -= above;
    memset(h, 0, sizeof h);
    int mm = 0; // keys of bin b1, compacted to the front (mm <= i: nothing unread is overwritten)
    for (int i = 0; i < m; i++) {
        uint32_t key = keys[i];
        if (key >> 21 == b1) {
            keys[mm++] = key;
            h[(key >> 10) & 0x7ffu]++;
        }
    }
    uint32_t b2 = (uint32_t)hist_find(h, 2048, need, &above);
    need -= above;
    memset(h, 0, 1024 * sizeof h[0]);
    uint32_t hi = b1 << 11 | b2;
    for (int i = 0; i < mm; i++)
        if (keys[i] >> 10 == hi)
            h[keys[i] & 0x3ffu]++;
    uint32_t b3 = (uint32_t)hist_find(h, 1024, need, &above);
    *need_out = need - above;
    return hi << 10 | b3;
}

int sd_dsa_topk_hinted(const float *scores, int n_valid, int k, int32_t *idx, int32_t *scratch,
                       struct sd_dsa_topk_hint *hint)
{
    if (n_valid < 0)
        n_valid = 0;
    if (k <= 0)
        return 0;
    if (n_valid <= k) {
        for (int i = 0; i < n_valid; i++)
            idx[i] = i;
        for (int i = n_valid; i < k; i++)
            idx[i] = -1;
        return n_valid;
    }
    uint32_t need, thr;
    int n = 0;
    // With a hint (the threshold of a similar row, lowered by a margin): one pass keeps the indices whose
    // key reaches it. When at least k do, the top-k is among them (the k-th key is >= the hint), and the
    // select runs over those candidates only; otherwise, or when the hint kept too many, the full select.
    int m = -1;
    if (hint && hint->valid) {
        uint32_t lo = hint->key;
        m = 0;
        for (int i = 0; i < n_valid; i++) {
            scratch[m] = i;
            m += score_key(scores[i]) >= lo;
        }
        if (m < k) {
            hint->margin = hint->margin < (1u << 28) ? hint->margin * 2 : hint->margin;
            m = -1;
        } else if (m > 4 * k && hint->margin > 1)
            hint->margin /= 2;
        if (m > n_valid / 2) // the candidates' keys go after them in scratch (n_valid words in all)
            m = -1;
    }
    if (hint) {
        hint->rows++;
        hint->hits += m >= k;
    }
    if (m >= k) {
        thr = select_threshold(scores, scratch, m, k, (uint32_t *)scratch + m, &need);
        for (int c = 0; c < m && n < k; c++) {
            int i = scratch[c];
            uint32_t key = score_key(scores[i]);
            if (key > thr || (key == thr && need && need--))
                idx[n++] = i;
        }
    } else {
        thr = select_threshold(scores, NULL, n_valid, k, (uint32_t *)scratch, &need);
        for (int i = 0; i < n_valid && n < k; i++) {
            uint32_t key = score_key(scores[i]);
            if (key > thr || (key == thr && need && need--))
                idx[n++] = i;
        }
    }
    if (hint) {
        if (!hint->valid)
            hint->margin = 1u << 16;
        hint->key = thr > hint->margin ? thr - hint->margin : 0;
        hint->valid = 1;
    }
    return k;
}

int sd_dsa_topk(const float *scores, int n_valid, int k, int32_t *idx, int32_t *scratch)
{
    return sd_dsa_topk_hinted(scores, n_valid, k, idx, scratch, NULL);
}

// Softmax logits of one head over idx (scratch[t]; -inf for -1 slots); returns their maximum.
static inline __attribute__((always_inline)) float mla_logits(const float *ql, const float *qp, int d_lat, int d_rope,
                                                              const float *kv, size_t ld_kv, const int32_t *idx,
                                                              int n_idx, float scale, float *scratch)
{
    float mx = -INFINITY;
    for (int t = 0; t < n_idx; t++) {
        int32_t u = idx[t];
        if (u < 0) {
            scratch[t] = -INFINITY;
            continue;
        }
        const float *row = kv + (size_t)u * ld_kv;
        float s = (dot_f32(ql, row, d_lat) + dot_f32(qp, row + d_lat, d_rope)) * scale;
        scratch[t] = s;
        if (s > mx)
            mx = s;
    }
    return mx;
}

static inline __attribute__((always_inline)) void mla_attn_body(const float *q_lat, const float *q_pe, int n_heads,
                                                                int d_lat, int d_rope, const float *kv, size_t ld_kv,
                                                                const int32_t *idx, int n_idx, float scale, float *out,
                                                                float *scratch)
{
    for (int h = 0; h < n_heads; h++) {
        const float *ql = q_lat + (size_t)h * d_lat;
        const float *qp = q_pe + (size_t)h * d_rope;
        float *o = out + (size_t)h * d_lat;
        float mx = mla_logits(ql, qp, d_lat, d_rope, kv, ld_kv, idx, n_idx, scale, scratch);
        memset(o, 0, (size_t)d_lat * sizeof(float));
        if (mx == -INFINITY)
            continue; // no valid token: output stays zero
        float sum = 0.0f;
        int n_live = 0; // valid slots, compacted: probability to scratch[i], slot to live[i]
        int32_t *live = (int32_t *)(void *)(scratch + n_idx);
        for (int t = 0; t < n_idx; t++) {
            if (idx[t] < 0)
                continue;
            float p = expf(scratch[t] - mx);
            sum += p;
            scratch[n_live] = p;
            live[n_live++] = idx[t];
        }
        // o += p * row, four rows per pass over o: the same additions in the same order as one row at a
        // time, with o read and written a quarter as often.
        int t = 0;
        for (; t + 4 <= n_live; t += 4) {
            const float *r0 = kv + (size_t)live[t] * ld_kv, *r1 = kv + (size_t)live[t + 1] * ld_kv;
            const float *r2 = kv + (size_t)live[t + 2] * ld_kv, *r3 = kv + (size_t)live[t + 3] * ld_kv;
            float p0 = scratch[t], p1 = scratch[t + 1], p2 = scratch[t + 2], p3 = scratch[t + 3];
            for (int d = 0; d < d_lat; d++)
                o[d] = (((o[d] + p0 * r0[d]) + p1 * r1[d]) + p2 * r2[d]) + p3 * r3[d];
        }
        for (; t < n_live; t++) {
            const float *row = kv + (size_t)live[t] * ld_kv;
            float p = scratch[t];
            for (int d = 0; d < d_lat; d++)
                o[d] += p * row[d];
        }
        float inv = 1.0f / sum;
        for (int d = 0; d < d_lat; d++)
            o[d] *= inv;
    }
}

// mla_attn_body for a group of heads that share the cache rows: keys outer, heads inner, so each gathered row
// is read once for all heads of the group. Every head's operations (dots, maximum, exp and sum over the
// valid slots in slot order, four rows per pass over o, the final scale) are mla_attn_body's in the same
// order, so the bits are the same. Layout of scratch: logits/probabilities [n_heads][n_idx], the valid slots
// [n_idx] (int32), maxima and sums [n_heads] each.
static inline __attribute__((always_inline)) void mla_heads_body(const float *q_lat, const float *q_pe, size_t ld_qpe,
                                                                 int n_heads, int d_lat, int d_rope, const float *kv,
                                                                 size_t ld_kv, const int32_t *idx, int n_idx,
                                                                 float scale, float *out, float *scratch)
{
    float *lg = scratch;
    int32_t *live = (int32_t *)(void *)(scratch + (size_t)n_heads * n_idx);
    float *mx = scratch + (size_t)(n_heads + 1) * n_idx, *sum = mx + n_heads;
    for (int h = 0; h < n_heads; h++)
        mx[h] = -INFINITY;
    int n_live = 0;
    for (int t = 0; t < n_idx; t++) {
        int32_t u = idx[t];
        if (u < 0) {
            for (int h = 0; h < n_heads; h++)
                lg[(size_t)h * n_idx + t] = -INFINITY;
            continue;
        }
        live[n_live++] = u;
        const float *row = kv + (size_t)u * ld_kv;
        for (int h = 0; h < n_heads; h++) {
            float v = (dot_f32(q_lat + (size_t)h * d_lat, row, d_lat) +
                       dot_f32(q_pe + (size_t)h * ld_qpe, row + d_lat, d_rope)) *
                      scale;
            lg[(size_t)h * n_idx + t] = v;
            if (v > mx[h])
                mx[h] = v;
        }
    }
    for (int h = 0; h < n_heads; h++) { // probabilities of the valid slots, compacted to lg[h][0 .. n_live)
        float *l = lg + (size_t)h * n_idx, m = mx[h], su = 0.0f;
        memset(out + (size_t)h * d_lat, 0, (size_t)d_lat * sizeof(float));
        if (m == -INFINITY)
            continue;
        for (int t = 0, j = 0; t < n_idx; t++) {
            if (idx[t] < 0)
                continue;
            float p = expf(l[t] - m);
            su += p;
            l[j++] = p;
        }
        sum[h] = su;
    }
    int t = 0;
    for (; t + 4 <= n_live; t += 4) {
        const float *r0 = kv + (size_t)live[t] * ld_kv, *r1 = kv + (size_t)live[t + 1] * ld_kv;
        const float *r2 = kv + (size_t)live[t + 2] * ld_kv, *r3 = kv + (size_t)live[t + 3] * ld_kv;
        for (int h = 0; h < n_heads; h++) {
            if (mx[h] == -INFINITY)
                continue;
            const float *l = lg + (size_t)h * n_idx;
            float p0 = l[t], p1 = l[t + 1], p2 = l[t + 2], p3 = l[t + 3], *o = out + (size_t)h * d_lat;
            for (int d = 0; d < d_lat; d++)
                o[d] = (((o[d] + p0 * r0[d]) + p1 * r1[d]) + p2 * r2[d]) + p3 * r3[d];
        }
    }
    for (; t < n_live; t++) {
        const float *row = kv + (size_t)live[t] * ld_kv;
        for (int h = 0; h < n_heads; h++) {
            if (mx[h] == -INFINITY)
                continue;
            float p = lg[(size_t)h * n_idx + t], *o = out + (size_t)h * d_lat;
            for (int d = 0; d < d_lat; d++)
                o[d] += p * row[d];
        }
    }
    for (int h = 0; h < n_heads; h++) {
        if (mx[h] == -INFINITY)
            continue;
        float inv = 1.0f / sum[h], *o = out + (size_t)h * d_lat;
        for (int d = 0; d < d_lat; d++)
            o[d] *= inv;
    }
}

// The same code compiled twice: for AVX2 (8-wide; chosen at run time) and for the baseline. Without
// floating-point contraction (C11 mode) vectorizing does not change any rounding: both give the same bits.
#ifdef SD_DSA_X86
AVX2_FMA static void mla_attn_avx2(const float *q_lat, const float *q_pe, int n_heads, int d_lat, int d_rope,
                                   const float *kv, size_t ld_kv, const int32_t *idx, int n_idx, float scale,
                                   float *out, float *scratch)
{
    mla_attn_body(q_lat, q_pe, n_heads, d_lat, d_rope, kv, ld_kv, idx, n_idx, scale, out, scratch);
}

AVX2_FMA static void mla_heads_avx2(const float *q_lat, const float *q_pe, size_t ld_qpe, int n_heads, int d_lat,
                                    int d_rope, const float *kv, size_t ld_kv, const int32_t *idx, int n_idx,
                                    float scale, float *out, float *scratch)
{
    mla_heads_body(q_lat, q_pe, ld_qpe, n_heads, d_lat, d_rope, kv, ld_kv, idx, n_idx, scale, out, scratch);
}
#endif

size_t sd_mla_attn_heads_scratch(int n_heads, int n_idx)
{
    return (size_t)(n_heads + 1) * (size_t)n_idx + 2 * (size_t)n_heads;
}

void sd_mla_attn_heads(const float *q_lat, const float *q_pe, size_t ld_qpe, int n_heads, int d_lat, int d_rope,
                       const float *kv, size_t ld_kv, const int32_t *idx, int n_idx, float scale, float *out,
                       float *scratch)
{
#ifdef SD_DSA_X86
    if (sd_cpu_has_avx2_fma()) {
        mla_heads_avx2(q_lat, q_pe, ld_qpe, n_heads, d_lat, d_rope, kv, ld_kv, idx, n_idx, scale, out, scratch);
        return;
    }
#endif
    mla_heads_body(q_lat, q_pe, ld_qpe, n_heads, d_lat, d_rope, kv, ld_kv, idx, n_idx, scale, out, scratch);
}

void sd_mla_sparse_attn_absorbed(const float *q_lat, const float *q_pe, int n_heads, int d_lat, int d_rope,
                                 const float *kv, size_t ld_kv, const int32_t *idx, int n_idx, float scale, float *out,
                                 float *scratch)
{
#ifdef SD_DSA_X86
    if (sd_cpu_has_avx2_fma()) {
        mla_attn_avx2(q_lat, q_pe, n_heads, d_lat, d_rope, kv, ld_kv, idx, n_idx, scale, out, scratch);
        return;
    }
#endif
    mla_attn_body(q_lat, q_pe, n_heads, d_lat, d_rope, kv, ld_kv, idx, n_idx, scale, out, scratch);
}

void sd_mla_attn_probs_absorbed(const float *q_lat, const float *q_pe, int d_lat, int d_rope, const float *kv,
                                size_t ld_kv, const int32_t *idx, int n_idx, float scale, float *probs)
{
    float mx = mla_logits(q_lat, q_pe, d_lat, d_rope, kv, ld_kv, idx, n_idx, scale, probs);
    if (mx == -INFINITY) {
        memset(probs, 0, (size_t)n_idx * sizeof(float));
        return;
    }
    float sum = 0.0f; // same order and precision as the attention above
    for (int t = 0; t < n_idx; t++) {
        if (idx[t] < 0) {
            probs[t] = 0.0f;
            continue;
        }
        probs[t] = expf(probs[t] - mx);
        sum += probs[t];
    }
    float inv = 1.0f / sum;
    for (int t = 0; t < n_idx; t++)
        probs[t] *= inv;
}
