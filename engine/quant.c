// quant.c: ggml block formats (see quant.h). Owns the block geometry table, the dequantizers (scalar
// reference, and AVX2 ones equal to it bit for bit), activation quantization (8-bit blocks of 32, or of 256 with 16-element sums for the
// K-quants), and the dot products: scalar integer versions (the reference) and AVX2 versions chosen at
// run time with __builtin_cpu_supports. Block layouts follow ggml's k-quants description (PR #1684) and
// docs/gguf.md; every layout is exercised against tools/st2gguf.py's independent Python quantizers.
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_QUANT_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const struct {
    const char *name;
    int block;
    size_t bytes;
    int supported;
} qtab[SD_Q_TYPE_LIMIT] = {
    [SD_Q_F32] = {"F32", 1, 4, 1},       [SD_Q_F16] = {"F16", 1, 2, 1},       [SD_Q_Q4_0] = {"Q4_0", 32, 18, 1},
    [SD_Q_Q4_1] = {"Q4_1", 32, 20, 0},   [SD_Q_Q5_0] = {"Q5_0", 32, 22, 0},   [SD_Q_Q5_1] = {"Q5_1", 32, 24, 0},
    [SD_Q_Q8_0] = {"Q8_0", 32, 34, 1},   [SD_Q_Q8_1] = {"Q8_1", 32, 36, 0},   [SD_Q_Q2_K] = {"Q2_K", 256, 84, 0},
    [SD_Q_Q3_K] = {"Q3_K", 256, 110, 0}, [SD_Q_Q4_K] = {"Q4_K", 256, 144, 1}, [SD_Q_Q5_K] = {"Q5_K", 256, 176, 1},
    [SD_Q_Q6_K] = {"Q6_K", 256, 210, 1}, [SD_Q_Q8_K] = {"Q8_K", 256, 292, 0}, [SD_Q_I8] = {"I8", 1, 1, 0},
    [SD_Q_I16] = {"I16", 1, 2, 0},       [SD_Q_I32] = {"I32", 1, 4, 0},       [SD_Q_I64] = {"I64", 1, 8, 0},
    [SD_Q_F64] = {"F64", 1, 8, 0},       [SD_Q_BF16] = {"BF16", 1, 2, 1},
};

int sd_qtype_block(enum sd_qtype t)
{
    return (unsigned)t < SD_Q_TYPE_LIMIT ? qtab[t].block : 0;
}

size_t sd_qtype_block_bytes(enum sd_qtype t)
{
    return (unsigned)t < SD_Q_TYPE_LIMIT ? qtab[t].bytes : 0;
}

const char *sd_qtype_name(enum sd_qtype t)
{
    return (unsigned)t < SD_Q_TYPE_LIMIT && qtab[t].name ? qtab[t].name : "unknown";
}

int sd_qtype_supported(enum sd_qtype t)
{
    return (unsigned)t < SD_Q_TYPE_LIMIT && qtab[t].supported;
}

size_t sd_qtype_row_bytes(enum sd_qtype t, int64_t n)
{
    int b = sd_qtype_block(t);
    if (b <= 0 || n < 0 || n % b)
        return 0;
    return (size_t)(n / b) * qtab[t].bytes;
}

static inline float ld_f16(const uint8_t *p)
{
    return sd_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

static inline float ld_bf16(const uint8_t *p)
{
    return sd_bf16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

// ------------------------------------------------------------------------------------------------
// Block layouts, unpacked. A K-quant super-block of 256 becomes 256 unsigned quants u, and per group
// of 16 an integer scale and min: x = d * sc[g] * u - dmin * mn[g] (Q6_K: u = q + 32, mn = 32 * sc, dmin = d).
// ------------------------------------------------------------------------------------------------

// Q4_K/Q5_K: 8 sub-blocks of 32 share 12 bytes of 6-bit scales and mins. Sub-blocks 0-3 keep their
// scale and min in the low 6 bits of bytes j and j+4; sub-blocks 4-7 take 4 low bits from byte j+4
// (scale: low nibble, min: high nibble) and 2 high bits from the top bits of bytes j-4 / j.
static void kq_scale_min(const uint8_t *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

struct kq_unpacked {
    float d, dmin;
    uint8_t u[SD_QK_K];
    int sc[16], mn[16];
};

// Q4_K block (144 bytes): f16 d, f16 dmin, scales[12], qs[128]. Each 64-element chunk c uses 32 bytes
// of qs: low nibbles are sub-block 2c, high nibbles sub-block 2c+1.
static void unpack_q4k(const uint8_t *b, struct kq_unpacked *k)
{
    k->d = ld_f16(b);
    k->dmin = ld_f16(b + 2);
    const uint8_t *sc = b + 4, *qs = b + 16;
    for (int j = 0; j < 8; j++) {
        int s, m;
        kq_scale_min(sc, j, &s, &m);
        k->sc[2 * j] = k->sc[2 * j + 1] = s;
        k->mn[2 * j] = k->mn[2 * j + 1] = m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            k->u[64 * c + l] = qs[32 * c + l] & 15;
            k->u[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
}

// Q5_K block (176 bytes): f16 d, f16 dmin, scales[12], qh[32], qs[128]; as Q4_K plus a fifth bit:
// element l of sub-block s takes bit s of qh[l].
static void unpack_q5k(const uint8_t *b, struct kq_unpacked *k)
{
    k->d = ld_f16(b);
    k->dmin = ld_f16(b + 2);
    const uint8_t *sc = b + 4, *qh = b + 16, *qs = b + 48;
    for (int j = 0; j < 8; j++) {
        int s, m;
        kq_scale_min(sc, j, &s, &m);
        k->sc[2 * j] = k->sc[2 * j + 1] = s;
        k->mn[2 * j] = k->mn[2 * j + 1] = m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            k->u[64 * c + l] = (uint8_t)((qs[32 * c + l] & 15) | (((qh[l] >> (2 * c)) & 1) << 4));
            k->u[64 * c + 32 + l] = (uint8_t)((qs[32 * c + l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4));
        }
}

// Q6_K block (210 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d.
// Each half h of 128 elements uses ql[64h..], qh[32h..]: element 32k + l (k = 0..3, l = 0..31) takes
// the low/high nibble of ql[l + 32 (k & 1)] (high for k >= 2) and bits 2k..2k+1 of qh[l]; q = v - 32,
// and element e has scale scales[e / 16].
static void unpack_q6k(const uint8_t *b, struct kq_unpacked *k)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    k->d = ld_f16(b + 208);
    k->dmin = k->d;
    for (int g = 0; g < 16; g++) {
        k->sc[g] = sc[g];
        k->mn[g] = 32 * sc[g];
    }
    for (int h = 0; h < 2; h++) {
        const uint8_t *L = ql + 64 * h, *Hh = qh + 32 * h;
        uint8_t *u = k->u + 128 * h;
        for (int l = 0; l < 32; l++) {
            u[l] = (uint8_t)((L[l] & 15) | (((Hh[l] >> 0) & 3) << 4));
            u[l + 32] = (uint8_t)((L[l + 32] & 15) | (((Hh[l] >> 2) & 3) << 4));
            u[l + 64] = (uint8_t)((L[l] >> 4) | (((Hh[l] >> 4) & 3) << 4));
            u[l + 96] = (uint8_t)((L[l + 32] >> 4) | (((Hh[l] >> 6) & 3) << 4));
        }
    }
}

static void unpack_k(enum sd_qtype t, const uint8_t *b, struct kq_unpacked *k)
{
    if (t == SD_Q_Q4_K)
        unpack_q4k(b, k);
    else if (t == SD_Q_Q5_K)
        unpack_q5k(b, k);
    else
        unpack_q6k(b, k);
}

// The reference dequantizer (n checked by sd_dequantize).
static enum sd_status dequant_scalar(enum sd_qtype t, const uint8_t *p, float *dst, int64_t n)
{
    int64_t nb = n / sd_qtype_block(t);
    switch (t) {
    case SD_Q_F32:
        memcpy(dst, p, (size_t)n * sizeof(float));
        return SD_OK;
    case SD_Q_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = ld_f16(p + 2 * i);
        return SD_OK;
    case SD_Q_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = ld_bf16(p + 2 * i);
        return SD_OK;
    case SD_Q_Q8_0: // f16 d, int8 qs[32]: x = d * q
        for (int64_t b = 0; b < nb; b++, p += 34) {
            float d = ld_f16(p);
            for (int i = 0; i < 32; i++)
                dst[32 * b + i] = d * (float)(int8_t)p[2 + i];
        }
        return SD_OK;
    case SD_Q_Q4_0: // f16 d, qs[16]: element i (< 16) is the low nibble of qs[i], element i+16 the high; x = d (v - 8)
        for (int64_t b = 0; b < nb; b++, p += 18) {
            float d = ld_f16(p);
            for (int i = 0; i < 16; i++) {
                dst[32 * b + i] = d * (float)((p[2 + i] & 15) - 8);
                dst[32 * b + 16 + i] = d * (float)((p[2 + i] >> 4) - 8);
            }
        }
        return SD_OK;
    case SD_Q_Q4_K:
    case SD_Q_Q5_K:
    case SD_Q_Q6_K: {
        struct kq_unpacked k;
        size_t bb = sd_qtype_block_bytes(t);
        for (int64_t b = 0; b < nb; b++, p += bb) {
            unpack_k(t, p, &k);
            for (int i = 0; i < SD_QK_K; i++)
                dst[SD_QK_K * b + i] = k.d * (float)k.sc[i / 16] * (float)k.u[i] - k.dmin * (float)k.mn[i / 16];
        }
        return SD_OK;
    }
    default:
        return SD_ERR_UNSUPPORTED;
    }
}

// ------------------------------------------------------------------------------------------------
// Activation quantization
// ------------------------------------------------------------------------------------------------

static int uses_q8k(enum sd_qtype t)
{
    return t == SD_Q_Q4_K || t == SD_Q_Q5_K || t == SD_Q_Q6_K;
}

size_t sd_quant_act_bytes(enum sd_qtype t, int64_t n)
{
    if (t == SD_Q_Q8_0 || t == SD_Q_Q4_0)
        return (size_t)(n / SD_QK) * sizeof(struct sd_q8_block);
    if (uses_q8k(t))
        return (size_t)(n / SD_QK_K) * sizeof(struct sd_q8k_block);
    return 0;
}

// Symmetric 8-bit: d = max|x| / 127, q = round(x / d).
static float quant_i8(const float *x, int n, int8_t *q)
{
    float amax = 0;
    for (int i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) {
        long v = lrintf(x[i] * id);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return d;
}

void sd_quant_act(enum sd_qtype t, const float *x, int64_t n, void *buf)
{
    if (t == SD_Q_Q8_0 || t == SD_Q_Q4_0) {
        struct sd_q8_block *b = buf;
        for (int64_t i = 0; i < n / SD_QK; i++)
            b[i].d = quant_i8(x + SD_QK * i, SD_QK, b[i].qs);
    } else if (uses_q8k(t)) {
        struct sd_q8k_block *b = buf;
        for (int64_t i = 0; i < n / SD_QK_K; i++) {
            b[i].d = quant_i8(x + SD_QK_K * i, SD_QK_K, b[i].qs);
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++)
                    s += b[i].qs[16 * g + j];
                b[i].bsums[g] = (int16_t)s;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Scalar dot products (reference)
// ------------------------------------------------------------------------------------------------

static float dot_q8_0_scalar(const uint8_t *w, const struct sd_q8_block *x, int64_t nb)
{
    float s = 0;
    for (int64_t b = 0; b < nb; b++, w += 34) {
        int acc = 0;
        for (int i = 0; i < 32; i++)
            acc += (int8_t)w[2 + i] * x[b].qs[i];
        s += ld_f16(w) * x[b].d * (float)acc;
    }
    return s;
}

static float dot_q4_0_scalar(const uint8_t *w, const struct sd_q8_block *x, int64_t nb)
{
    float s = 0;
    for (int64_t b = 0; b < nb; b++, w += 18) {
        int acc = 0;
        for (int i = 0; i < 16; i++)
            acc += ((w[2 + i] & 15) - 8) * x[b].qs[i] + ((w[2 + i] >> 4) - 8) * x[b].qs[16 + i];
        s += ld_f16(w) * x[b].d * (float)acc;
    }
    return s;
}

static float dot_k_scalar(enum sd_qtype t, const uint8_t *w, const struct sd_q8k_block *x, int64_t nb)
{
    size_t bb = sd_qtype_block_bytes(t);
    float s = 0;
    struct kq_unpacked k;
    for (int64_t b = 0; b < nb; b++, w += bb) {
        unpack_k(t, w, &k);
        int sum_q = 0, sum_m = 0;
        for (int g = 0; g < 16; g++) {
            int acc = 0;
            for (int i = 0; i < 16; i++)
                acc += k.u[16 * g + i] * x[b].qs[16 * g + i];
            sum_q += k.sc[g] * acc;
            sum_m += k.mn[g] * x[b].bsums[g];
        }
        s += x[b].d * (k.d * (float)sum_q - k.dmin * (float)sum_m);
    }
    return s;
}

static float dot_float_scalar(enum sd_qtype t, const uint8_t *w, const float *x, int64_t n)
{
    double s = 0; // the reference accumulates in double
    for (int64_t i = 0; i < n; i++) {
        float v;
        if (t == SD_Q_F32)
            memcpy(&v, w + 4 * i, 4);
        else if (t == SD_Q_F16)
            v = ld_f16(w + 2 * i);
        else
            v = ld_bf16(w + 2 * i);
        s += (double)v * x[i];
    }
    return (float)s;
}

// ------------------------------------------------------------------------------------------------
// AVX2 dot products
// ------------------------------------------------------------------------------------------------

#ifdef SD_QUANT_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// f16 scale through F16C (the same value as the software conversion, subnormals included).
AVX2 static inline float ld_f16_hw(const uint8_t *p)
{
    return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
}

// 8 int32 partial sums of w[i] * x[i] over 32 signed bytes (|w| <= 128, |x| <= 127: no overflow).
AVX2 static inline __m256i dot32_signed(__m256i w, __m256i x)
{
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

AVX2 static float dot_q8_0_avx2(const uint8_t *w, const struct sd_q8_block *x, int64_t nb)
{
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w += 34) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(w + 2));
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256 s = _mm256_cvtepi32_ps(dot32_signed(q, a));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ld_f16_hw(w) * x[b].d), s, acc);
    }
    return hsum8(acc);
}

AVX2 static float dot_q4_0_avx2(const uint8_t *w, const struct sd_q8_block *x, int64_t nb)
{
    __m256 acc = _mm256_setzero_ps();
    const __m128i lo = _mm_set1_epi8(15);
    for (int64_t b = 0; b < nb; b++, w += 18) {
        __m128i raw = _mm_loadu_si128((const __m128i *)(w + 2));
        __m128i l = _mm_and_si128(raw, lo), h = _mm_and_si128(_mm_srli_epi16(raw, 4), lo);
        __m256i q = _mm256_sub_epi8(_mm256_set_m128i(h, l), _mm256_set1_epi8(8));
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256 s = _mm256_cvtepi32_ps(dot32_signed(q, a));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ld_f16_hw(w) * x[b].d), s, acc);
    }
    return hsum8(acc);
}

// Shift every byte of v right by n (< 8) and keep its low `mask` bits (16-bit shifts; the bits that cross
// from the high byte are masked away).
AVX2 static inline __m256i bytes_srl(__m256i v, int n, int mask)
{
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(n)), _mm256_set1_epi8((char)mask));
}

// The quants of a K block unpacked 32 bytes at a time (scales and mins as in the scalar unpack).
AVX2 static void unpack_k_avx2(enum sd_qtype t, const uint8_t *b, struct kq_unpacked *k)
{
    if (t == SD_Q_Q6_K) {
        k->d = k->dmin = ld_f16_hw(b + 208);
        for (int g = 0; g < 16; g++) {
            k->sc[g] = ((const int8_t *)(b + 192))[g];
            k->mn[g] = 32 * k->sc[g];
        }
        for (int h = 0; h < 2; h++) {
            __m256i L0 = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
            __m256i L1 = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
            __m256i H = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            uint8_t *u = k->u + 128 * h;
            for (int j = 0; j < 4; j++) {
                __m256i lo = bytes_srl(j & 1 ? L1 : L0, j < 2 ? 0 : 4, 15);
                __m256i hi = _mm256_slli_epi16(bytes_srl(H, 2 * j, 3), 4);
                _mm256_storeu_si256((__m256i *)(u + 32 * j), _mm256_or_si256(lo, hi));
            }
        }
        return;
    }
    int q5 = t == SD_Q_Q5_K;
    k->d = ld_f16_hw(b);
    k->dmin = ld_f16_hw(b + 2);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        kq_scale_min(b + 4, j, &sc, &mn);
        k->sc[2 * j] = k->sc[2 * j + 1] = sc;
        k->mn[2 * j] = k->mn[2 * j + 1] = mn;
    }
    const uint8_t *qs = b + (q5 ? 48 : 16);
    __m256i qh = q5 ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i lo = bytes_srl(q, 0, 15), hi = bytes_srl(q, 4, 15);
        if (q5) {
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(bytes_srl(qh, 2 * c, 1), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(bytes_srl(qh, 2 * c + 1, 1), 4));
        }
        _mm256_storeu_si256((__m256i *)(k->u + 64 * c), lo);
        _mm256_storeu_si256((__m256i *)(k->u + 64 * c + 32), hi);
    }
}

// K-quants: quants unpacked with AVX2, the 256 u * q products (u <= 63 unsigned, so maddubs cannot
// saturate) and the per-16 scale weighting run in AVX2. One unpacked block against one activation block.
AVX2 static inline float dot_k_block_avx2(const struct kq_unpacked *k, const struct sd_q8k_block *x)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i accq = _mm256_setzero_si256();
    for (int c = 0; c < 8; c++) { // 32 elements = groups 2c (low lane) and 2c+1 (high lane)
        __m256i u = _mm256_loadu_si256((const __m256i *)(k->u + 32 * c));
        __m256i q = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), ones);
        __m256i sc = _mm256_set_m128i(_mm_set1_epi32(k->sc[2 * c + 1]), _mm_set1_epi32(k->sc[2 * c]));
        accq = _mm256_add_epi32(accq, _mm256_mullo_epi32(p, sc));
    }
    __m128i a4 = _mm_add_epi32(_mm256_castsi256_si128(accq), _mm256_extracti128_si256(accq, 1));
    a4 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 0x4e));
    a4 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 0xb1));
    int sum_q = _mm_cvtsi128_si32(a4);
    __m256i m0 = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)x->bsums));
    __m256i m1 = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(x->bsums + 8)));
    __m256i mm = _mm256_add_epi32(_mm256_mullo_epi32(m0, _mm256_loadu_si256((const __m256i *)k->mn)),
                                  _mm256_mullo_epi32(m1, _mm256_loadu_si256((const __m256i *)(k->mn + 8))));
    __m128i m4 = _mm_add_epi32(_mm256_castsi256_si128(mm), _mm256_extracti128_si256(mm, 1));
    m4 = _mm_add_epi32(m4, _mm_shuffle_epi32(m4, 0x4e));
    m4 = _mm_add_epi32(m4, _mm_shuffle_epi32(m4, 0xb1));
    int sum_m = _mm_cvtsi128_si32(m4);
    return x->d * (k->d * (float)sum_q - k->dmin * (float)sum_m);
}

AVX2 static float dot_k_avx2(enum sd_qtype t, const uint8_t *w, const struct sd_q8k_block *x, int64_t nb)
{
    size_t bb = sd_qtype_block_bytes(t);
    float s = 0;
    struct kq_unpacked k;
    for (int64_t b = 0; b < nb; b++, w += bb) {
        unpack_k_avx2(t, w, &k);
        s += dot_k_block_avx2(&k, x + b);
    }
    return s;
}

// The same dot products for n <= 4 activation rows (xq rows ab bytes apart), each weight block decoded
// once: out[j] equals dot_*_avx2 of row j bit for bit (same operations in the same order).
AVX2 static void dot4_avx2(enum sd_qtype t, const uint8_t *w, const uint8_t *xq, size_t ab, int n, int64_t nb,
                           float *out)
{
    if (t == SD_Q_Q8_0 || t == SD_Q_Q4_0) {
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        const __m128i lo = _mm_set1_epi8(15);
        size_t bb = t == SD_Q_Q8_0 ? 34 : 18;
        for (int64_t b = 0; b < nb; b++, w += bb) {
            __m256i q;
            if (t == SD_Q_Q8_0) {
                q = _mm256_loadu_si256((const __m256i *)(w + 2));
            } else {
                __m128i raw = _mm_loadu_si128((const __m128i *)(w + 2));
                __m128i l = _mm_and_si128(raw, lo), h = _mm_and_si128(_mm_srli_epi16(raw, 4), lo);
                q = _mm256_sub_epi8(_mm256_set_m128i(h, l), _mm256_set1_epi8(8));
            }
            float dw = ld_f16_hw(w);
            for (int j = 0; j < n; j++) {
                const struct sd_q8_block *x = (const struct sd_q8_block *)(const void *)(xq + (size_t)j * ab) + b;
                __m256i a = _mm256_loadu_si256((const __m256i *)x->qs);
                __m256 s = _mm256_cvtepi32_ps(dot32_signed(q, a));
                acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x->d), s, acc[j]);
            }
        }
        for (int j = 0; j < n; j++)
            out[j] = hsum8(acc[j]);
        return;
    }
    size_t bb = sd_qtype_block_bytes(t);
    float s[4] = {0, 0, 0, 0};
    struct kq_unpacked k;
    for (int64_t b = 0; b < nb; b++, w += bb) {
        unpack_k_avx2(t, w, &k);
        for (int j = 0; j < n; j++)
            s[j] += dot_k_block_avx2(&k, (const struct sd_q8k_block *)(const void *)(xq + (size_t)j * ab) + b);
    }
    for (int j = 0; j < n; j++)
        out[j] = s[j];
}

// Dequantization with AVX2, bit for bit the scalar reference: every element is the same float
// operations in the same order (d * q; K-quants (d * sc) * u - dmin * mn with the two products formed
// in float first; no fused multiply-add: the build is ISO C, where GCC does not contract).
AVX2 static void dequant_avx2(enum sd_qtype t, const uint8_t *p, float *dst, int64_t n)
{
    int64_t i = 0;
    switch (t) {
    case SD_Q_F16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
        for (; i < n; i++)
            dst[i] = ld_f16(p + 2 * i);
        return;
    case SD_Q_BF16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(
                                          _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * i))), 16)));
        for (; i < n; i++)
            dst[i] = ld_bf16(p + 2 * i);
        return;
    case SD_Q_Q8_0:
        for (; i < n; i += 32, p += 34) {
            __m256 d = _mm256_set1_ps(ld_f16_hw(p));
            for (int j = 0; j < 32; j += 8) {
                __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + j)));
                _mm256_storeu_ps(dst + i + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
            }
        }
        return;
    case SD_Q_Q4_0: {
        const __m128i lo = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
        for (; i < n; i += 32, p += 18) {
            __m256 d = _mm256_set1_ps(ld_f16_hw(p));
            __m128i raw = _mm_loadu_si128((const __m128i *)(p + 2));
            __m128i l = _mm_sub_epi8(_mm_and_si128(raw, lo), eight);
            __m128i h = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), lo), eight);
            __m128i v[4] = {l, _mm_srli_si128(l, 8), h, _mm_srli_si128(h, 8)};
            for (int j = 0; j < 4; j++)
                _mm256_storeu_ps(dst + i + 8 * j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v[j]))));
        }
        return;
    }
    default: { // Q4_K, Q5_K, Q6_K
        size_t bb = sd_qtype_block_bytes(t);
        struct kq_unpacked k;
        for (; i < n; i += SD_QK_K, p += bb) {
            unpack_k_avx2(t, p, &k);
            for (int g = 0; g < 16; g++) {
                __m256 a = _mm256_set1_ps(k.d * (float)k.sc[g]), b = _mm256_set1_ps(k.dmin * (float)k.mn[g]);
                for (int j = 0; j < 16; j += 8) {
                    __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(k.u + 16 * g + j)));
                    _mm256_storeu_ps(dst + i + 16 * g + j, _mm256_sub_ps(_mm256_mul_ps(a, _mm256_cvtepi32_ps(u)), b));
                }
            }
        }
        return;
    }
    }
}

AVX2 static float dot_float_avx2(enum sd_qtype t, const uint8_t *w, const float *x, int64_t n)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v;
        if (t == SD_Q_F32)
            v = _mm256_loadu_ps((const float *)(const void *)(w + 4 * i));
        else if (t == SD_Q_F16)
            v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * i)));
        else
            v = _mm256_castsi256_ps(
                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 2 * i))), 16));
        acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + i), acc);
    }
    float s = hsum8(acc);
    for (; i < n; i++) {
        float v;
        if (t == SD_Q_F32)
            memcpy(&v, w + 4 * i, 4);
        else
            v = t == SD_Q_F16 ? ld_f16(w + 2 * i) : ld_bf16(w + 2 * i);
        s += v * x[i];
    }
    return s;
}
#endif

static int force_scalar;

static int have_avx2(void)
{
#ifdef SD_QUANT_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        unsigned a = 0, b = 0, c = 0, d = 0;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C); // clang's cpu_supports lacks "f16c"
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }
    return cached;
#else
    return 0;
#endif
}

const char *sd_quant_impl(void)
{
    return !force_scalar && have_avx2() ? "avx2" : "scalar";
}

void sd_quant_force_scalar(int on)
{
    force_scalar = on != 0;
}

enum sd_status sd_dequantize(enum sd_qtype t, const void *src, float *dst, int64_t n)
{
    int B = sd_qtype_block(t);
    if (!sd_qtype_supported(t) || n < 0 || n % B)
        return SD_ERR_UNSUPPORTED;
#ifdef SD_QUANT_X86
    if (t != SD_Q_F32 && !force_scalar && have_avx2()) {
        dequant_avx2(t, src, dst, n);
        return SD_OK;
    }
#endif
    return dequant_scalar(t, src, dst, n);
}

float sd_quant_dot(enum sd_qtype t, const void *w_row, const void *xq, const float *x, int64_t n)
{
    const uint8_t *w = w_row;
    int simd = !force_scalar && have_avx2();
    (void)simd;
    switch (t) {
    case SD_Q_F32:
    case SD_Q_F16:
    case SD_Q_BF16:
#ifdef SD_QUANT_X86
        if (simd)
            return dot_float_avx2(t, w, x, n);
#endif
        return dot_float_scalar(t, w, x, n);
    case SD_Q_Q8_0:
#ifdef SD_QUANT_X86
        if (simd)
            return dot_q8_0_avx2(w, xq, n / SD_QK);
#endif
        return dot_q8_0_scalar(w, xq, n / SD_QK);
    case SD_Q_Q4_0:
#ifdef SD_QUANT_X86
        if (simd)
            return dot_q4_0_avx2(w, xq, n / SD_QK);
#endif
        return dot_q4_0_scalar(w, xq, n / SD_QK);
    case SD_Q_Q4_K:
    case SD_Q_Q5_K:
    case SD_Q_Q6_K:
#ifdef SD_QUANT_X86
        if (simd)
            return dot_k_avx2(t, w, xq, n / SD_QK_K);
#endif
        return dot_k_scalar(t, w, xq, n / SD_QK_K);
    default:
        return NAN;
    }
}

void sd_quant_dot_n(enum sd_qtype t, const void *w_row, const void *xq, const float *x, int64_t n_cols, int n,
                    float *out)
{
    size_t ab = sd_quant_act_bytes(t, n_cols);
    const uint8_t *q = xq;
#ifdef SD_QUANT_X86
    if (ab && !force_scalar && have_avx2()) {
        int64_t nb = n_cols / sd_qtype_block(t);
        for (int j = 0; j < n; j += 4)
            dot4_avx2(t, w_row, q + (size_t)j * ab, ab, n - j < 4 ? n - j : 4, nb, out + j);
        return;
    }
#endif
    for (int j = 0; j < n; j++)
        out[j] = sd_quant_dot(t, w_row, ab ? q + (size_t)j * ab : NULL, x + (size_t)j * n_cols, n_cols);
}

enum sd_status sd_quant_matmul(enum sd_qtype t, const void *w, int64_t rows, int64_t cols, const float *x,
                               int64_t n_tok, float *y, struct sd_err *err)
{
    size_t rb = sd_qtype_row_bytes(t, cols);
    if (!sd_qtype_supported(t) || rb == 0 || rows < 0 || n_tok < 0)
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "quantized matmul: type %s with %lld columns is not supported "
                          "(columns must be a multiple of %d)",
                          sd_qtype_name(t), (long long)cols, sd_qtype_block(t));
    size_t ab = sd_quant_act_bytes(t, cols);
    uint8_t *xq = NULL;
    if (ab) {
        xq = malloc(ab * (size_t)(n_tok ? n_tok : 1));
        if (!xq)
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory quantizing %lld activation rows", (long long)n_tok);
        for (int64_t i = 0; i < n_tok; i++)
            sd_quant_act(t, x + (size_t)i * cols, cols, xq + (size_t)i * ab);
    }
    const uint8_t *W = w;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n_tok; i++)
            y[(size_t)i * rows + r] =
                sd_quant_dot(t, W + (size_t)r * rb, xq ? xq + (size_t)i * ab : NULL, x + (size_t)i * cols, cols);
    free(xq);
    return SD_OK;
}
