// dtype.c: element type names/sizes and exact scalar conversions between f32 and the narrow float
// formats of model files and caches: bf16, IEEE f16 and OCP FP8 E4M3FN (bias 7, no infinities,
// S.1111.111 is NaN, max 448). Narrowing rounds to nearest even; e4m3 saturates to +-448.
// Loads go through byte assembly (little-endian file order), so unaligned mmap'd data is fine.
#include "dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[SD_DTYPE_COUNT] = {
    [SD_DTYPE_F32] = {"F32", 4},     [SD_DTYPE_F16] = {"F16", 2}, [SD_DTYPE_BF16] = {"BF16", 2},
    [SD_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [SD_DTYPE_I32] = {"I32", 4}, [SD_DTYPE_I64] = {"I64", 8},
    [SD_DTYPE_U8] = {"U8", 1},       [SD_DTYPE_F64] = {"F64", 8},
};

const char *sd_dtype_name(enum sd_dtype t)
{
    if ((unsigned)t >= SD_DTYPE_COUNT)
        return "unknown";
    return dtype_table[t].name;
}

size_t sd_dtype_size(enum sd_dtype t)
{
    if ((unsigned)t >= SD_DTYPE_COUNT)
        return 0;
    return dtype_table[t].size;
}

enum sd_status sd_dtype_from_name(const char *name, enum sd_dtype *out)
{
    if (!name)
        return SD_ERR_ARG;
    for (int i = 0; i < SD_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            if (out)
                *out = (enum sd_dtype)i;
            return SD_OK;
        }
    }
    return SD_ERR_UNSUPPORTED;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// m >> shift rounded to nearest, ties to even (1 <= shift <= 31).
static uint32_t shift_rne(uint32_t m, int shift)
{
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return q;
}

float sd_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t sd_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) // NaN: keep sign and top payload, force quiet so it stays NaN
        return (uint16_t)((u >> 16) | 0x0040u);
    // Adding 0x7FFF plus the kept LSB rounds ties to even; overflow carries into inf as it should.
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float sd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;
    if (e == 0x1F) // inf or NaN, payload kept
        return bits_f32(sign | 0x7F800000u | (m << 13));
    if (e == 0) {
        if (m == 0)
            return bits_f32(sign);
        // subnormal: normalize into an f32 normal (f16 subnormals are all f32 normals)
        int shift = 0;
        while (!(m & 0x400u)) {
            m <<= 1;
            shift++;
        }
        m &= 0x3FFu;
        return bits_f32(sign | ((uint32_t)(127 - 15 + 1 - shift) << 23) | (m << 13));
    }
    return bits_f32(sign | ((e + 127 - 15) << 23) | (m << 13));
}

uint16_t sd_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) // NaN: quiet, keep top payload bits
        return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a == 0x7F800000u)
        return (uint16_t)(sign | 0x7C00u);
    int e = (int)(a >> 23);
    uint32_t m = (a & 0x7FFFFFu) | (e ? 0x800000u : 0);
    if (e >= 113) {
        // normal range (or overflow): rebias, round the 13 dropped bits; a carry may reach inf (0x7C00)
        uint32_t r = ((uint32_t)(e - 112) << 10) + shift_rne(a & 0x7FFFFFu, 13);
        if (r >= 0x7C00u)
            r = 0x7C00u;
        return (uint16_t)(sign | r);
    }
    // subnormal result: value * 2^24 = m * 2^(e - 126), rounded
    int shift = 126 - e;
    if (e == 0 || shift > 25)
        return sign;
    return (uint16_t)(sign | shift_rne(m, shift));
}

float sd_e4m3_to_f32(uint8_t v)
{
    uint32_t sign = (uint32_t)(v & 0x80u) << 24;
    uint32_t e = (v >> 3) & 0xFu;
    uint32_t m = v & 0x7u;
    if ((v & 0x7Fu) == 0x7Fu)
        return bits_f32(sign | 0x7FC00000u);
    if (e == 0) {
        if (m == 0)
            return bits_f32(sign);
        int shift = 0;
        while (!(m & 0x8u)) {
            m <<= 1;
            shift++;
        }
        m &= 0x7u;
        return bits_f32(sign | ((uint32_t)(127 - 7 + 1 - shift) << 23) | (m << 20));
    }
    return bits_f32(sign | ((e + 127 - 7) << 23) | (m << 20));
}

uint8_t sd_f32_to_e4m3(float f)
{
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint8_t)(sign | 0x7Fu);
    if (a >= 0x43E00000u) // >= 448 (inf included): saturate
        return (uint8_t)(sign | 0x7Eu);
    int e = (int)(a >> 23);
    if (e >= 121) // normal: 2^-6 <= |f| < 448, so rounding can reach 448 (0x7E) but never the NaN code
        return (uint8_t)(sign | (((uint32_t)(e - 120) << 3) + shift_rne(a & 0x7FFFFFu, 20)));
    // subnormal result: value * 2^9 = m * 2^(e - 141), rounded
    int shift = 141 - e;
    if (e == 0 || shift > 25)
        return sign;
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    return (uint8_t)(sign | shift_rne(m, shift));
}

float sd_pow2_ceil(float r)
{
    int e;
    float m = frexpf(r, &e); // r = m * 2^e, m in [0.5, 1)
    if (m == 0.5f)
        e -= 1;
    return ldexpf(1.0f, e);
}

float sd_absmax(const float *x, int n)
{
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax)
            amax = a;
    }
    return amax;
}

float sd_fp8_pow2_scale(const float *x, int n)
{
    float amax = sd_absmax(x, n);
    return sd_pow2_ceil((amax < 1e-4f ? 1e-4f : amax) / 448.0f);
}

void sd_fp8_act_quant(const float *x, int n, uint8_t *q, float *scales)
{
    for (int b0 = 0, b = 0; b0 < n; b0 += SD_FP8_ACT_BLOCK, b++) {
        int len = n - b0 < SD_FP8_ACT_BLOCK ? n - b0 : SD_FP8_ACT_BLOCK;
        float s = sd_fp8_pow2_scale(x + b0, len), inv = 1.0f / s;
        for (int i = 0; i < len; i++)
            q[b0 + i] = sd_f32_to_e4m3(x[b0 + i] * inv);
        scales[b] = s;
    }
}

void sd_fp8_act_roundtrip(const float *x, float *out, int n)
{
    for (int b0 = 0; b0 < n; b0 += SD_FP8_ACT_BLOCK) {
        int len = n - b0 < SD_FP8_ACT_BLOCK ? n - b0 : SD_FP8_ACT_BLOCK;
        float s = sd_fp8_pow2_scale(x + b0, len), inv = 1.0f / s;
        for (int i = 0; i < len; i++)
            out[b0 + i] = sd_e4m3_to_f32(sd_f32_to_e4m3(x[b0 + i] * inv)) * s;
    }
}

enum sd_status sd_convert_to_f32(enum sd_dtype t, const void *src, float *dst, size_t n)
{
    const uint8_t *b = src;
    if (n && (!src || !dst))
        return SD_ERR_ARG;
    switch (t) {
    case SD_DTYPE_F32:
        for (size_t i = 0; i < n; i++, b += 4) {
            uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            dst[i] = bits_f32(u);
        }
        return SD_OK;
    case SD_DTYPE_F16:
        for (size_t i = 0; i < n; i++, b += 2)
            dst[i] = sd_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
        return SD_OK;
    case SD_DTYPE_BF16:
        for (size_t i = 0; i < n; i++, b += 2)
            dst[i] = sd_bf16_to_f32((uint16_t)(b[0] | b[1] << 8));
        return SD_OK;
    case SD_DTYPE_F8_E4M3:
        for (size_t i = 0; i < n; i++)
            dst[i] = sd_e4m3_to_f32(b[i]);
        return SD_OK;
    case SD_DTYPE_F64:
        for (size_t i = 0; i < n; i++, b += 8) {
            uint64_t u = 0;
            for (int k = 7; k >= 0; k--)
                u = u << 8 | b[k];
            double d;
            memcpy(&d, &u, sizeof d);
            dst[i] = (float)d;
        }
        return SD_OK;
    case SD_DTYPE_I32:
    case SD_DTYPE_I64:
    case SD_DTYPE_U8:
    case SD_DTYPE_COUNT:
        break;
    }
    return SD_ERR_UNSUPPORTED; // integer tensors are not weights: refuse rather than guess a meaning
}
