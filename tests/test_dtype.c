// test_dtype.c: exhaustive checks of engine/dtype.c. Every e4m3, bf16 and f16 code is decoded
// independently here (bit formula in double) and compared; narrowing f32 -> code is checked at
// every halfway point between neighbouring codes (ties to even), just off them, past the largest
// finite value (inf for bf16/f16, saturation for e4m3), on NaNs, and on random floats against a
// nearest-code search over the independently decoded table.
#include "dtype.h"
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct fmt {
    const char *name;
    int exp_bits, man_bits, bias;
    int ieee;             // 1: all-ones exponent is inf/NaN; 0: e4m3fn (only S.1111.111 is NaN, no inf)
    uint32_t max_finite;  // positive code of the largest finite value
    float (*decode)(uint32_t);
    uint32_t (*encode)(float);
};

static float dec_bf16(uint32_t c) { return sd_bf16_to_f32((uint16_t)c); }
static uint32_t enc_bf16(float f) { return sd_f32_to_bf16(f); }
static float dec_f16(uint32_t c) { return sd_f16_to_f32((uint16_t)c); }
static uint32_t enc_f16(float f) { return sd_f32_to_f16(f); }
static float dec_e4m3(uint32_t c) { return sd_e4m3_to_f32((uint8_t)c); }
static uint32_t enc_e4m3(float f) { return sd_f32_to_e4m3(f); }

static const struct fmt fmts[3] = {
    {"bf16", 8, 7, 127, 1, 0x7F7F, dec_bf16, enc_bf16},
    {"f16", 5, 10, 15, 1, 0x7BFF, dec_f16, enc_f16},
    {"e4m3", 4, 3, 7, 0, 0x7E, dec_e4m3, enc_e4m3},
};

static uint32_t sign_bit(const struct fmt *f)
{
    return 1u << (f->exp_bits + f->man_bits);
}

// Independent decode: value of code c by the textbook formula, in double.
static double ref_decode(const struct fmt *f, uint32_t c)
{
    uint32_t man_mask = (1u << f->man_bits) - 1, exp_max = (1u << f->exp_bits) - 1;
    int s = (c & sign_bit(f)) != 0;
    uint32_t e = (c >> f->man_bits) & exp_max, m = c & man_mask;
    double mag;
    if (f->ieee && e == exp_max)
        mag = m ? NAN : INFINITY;
    else if (!f->ieee && e == exp_max && m == man_mask)
        mag = NAN;
    else if (e == 0)
        mag = ldexp((double)m, 1 - f->bias - f->man_bits);
    else
        mag = ldexp((double)(m | (1u << f->man_bits)), (int)e - f->bias - f->man_bits);
    return s ? -mag : mag;
}

static uint32_t fbits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bitsf(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static void test_decode_exhaustive(const struct fmt *f)
{
    uint32_t n = 2u * sign_bit(f);
    int bad = 0;
    for (uint32_t c = 0; c < n; c++) {
        double r = ref_decode(f, c);
        float got = f->decode(c);
        int ok;
        if (isnan(r))
            ok = isnan(got) && (signbit(got) != 0) == ((c & sign_bit(f)) != 0);
        else
            ok = fbits(got) == fbits((float)r); // exact, and the sign of zero matches
        if (!ok && bad++ < 5)
            CHECK_MSG(0, "%s decode 0x%x: got %a want %a", f->name, c, got, r);
    }
    CHECK_MSG(bad == 0, "%s: %d decode mismatches", f->name, bad);
    // bf16 NaNs keep their payload (the decode is a pure widening)
    if (f == &fmts[0])
        for (uint32_t c = 0x7F81; c < 0x8000; c += 7)
            CHECK(fbits(sd_bf16_to_f32((uint16_t)c)) == c << 16);
}

static void test_roundtrip_codes(const struct fmt *f)
{
    uint32_t n = 2u * sign_bit(f);
    int bad = 0;
    for (uint32_t c = 0; c < n; c++) {
        float v = f->decode(c);
        uint32_t back = f->encode(v);
        int ok = isnan(v) ? isnan(f->decode(back)) : back == c;
        if (!ok && bad++ < 5)
            CHECK_MSG(0, "%s: code 0x%x -> %a -> 0x%x", f->name, c, v, back);
    }
    CHECK_MSG(bad == 0, "%s: %d round-trip mismatches", f->name, bad);
}

// Expected code for x (finite or inf) by searching the independently decoded magnitude table.
static uint32_t ref_encode(const struct fmt *f, const double *tab, double x)
{
    uint32_t s = signbit(x) ? sign_bit(f) : 0;
    double a = fabs(x);
    uint32_t maxc = f->max_finite;
    if (a >= tab[maxc]) {
        if (!f->ieee)
            return s | maxc; // saturate
        double half_ulp = (tab[maxc] - tab[maxc - 1]) / 2;
        return a >= tab[maxc] + half_ulp ? s | (maxc + 1) : s | maxc; // ties go to inf (max has odd mantissa)
    }
    uint32_t lo = 0, hi = maxc; // tab[lo] <= a < tab[hi]
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (tab[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    double dl = a - tab[lo], dh = tab[hi] - a;
    if (dl < dh)
        return s | lo;
    if (dh < dl)
        return s | hi;
    return s | ((lo & 1) ? hi : lo);
}

static void test_rounding(const struct fmt *f)
{
    double tab[0x8000];
    for (uint32_t c = 0; c <= f->max_finite; c++)
        tab[c] = ref_decode(f, c);
    int bad = 0;
#define EXPECT(x, want)                                                                                               \
    do {                                                                                                               \
        uint32_t got_ = f->encode(x);                                                                                  \
        if (got_ != (want) && bad++ < 8)                                                                               \
            CHECK_MSG(0, "%s encode %a: got 0x%x want 0x%x", f->name, (double)(x), got_, (unsigned)(want));           \
    } while (0)
    for (uint32_t c = 0; c < f->max_finite; c++) {
        double mid = (tab[c] + tab[c + 1]) / 2; // exactly representable in f32 for all three formats
        float m = (float)mid;
        CHECK(m == mid);
        uint32_t even = (c & 1) ? c + 1 : c;
        for (int s = 0; s < 2; s++) {
            float sg = s ? -1.0f : 1.0f;
            uint32_t sb = s ? sign_bit(f) : 0;
            EXPECT(sg * m, sb | even);
            EXPECT(sg * nextafterf(m, 0.0f), sb | c);
            EXPECT(sg * nextafterf(m, INFINITY), sb | (c + 1));
            EXPECT(sg * (float)tab[c + 1], sb | (c + 1));
        }
    }
    // beyond the largest finite value
    float maxv = (float)tab[f->max_finite];
    float big_mid = (float)(tab[f->max_finite] + (tab[f->max_finite] - tab[f->max_finite - 1]) / 2);
    uint32_t over = f->ieee ? f->max_finite + 1 : f->max_finite; // inf code or saturation
    EXPECT(maxv, f->max_finite);
    EXPECT(nextafterf(big_mid, 0.0f), f->max_finite);
    EXPECT(big_mid, over);
    EXPECT(-big_mid, sign_bit(f) | over);
    EXPECT(FLT_MAX, over);
    EXPECT(INFINITY, over);
    EXPECT(-INFINITY, sign_bit(f) | over);
    EXPECT(0.0f, 0u);
    EXPECT(-0.0f, sign_bit(f));
    EXPECT(1e-45f, 0u); // the smallest f32 denormal is far below every format's smallest subnormal
    // NaNs stay NaN, including signalling ones that a plain truncation would turn into inf
    const uint32_t nans[] = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FBFFFFFu, 0x7F802000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint32_t c = f->encode(bitsf(nans[i]));
        CHECK_MSG(isnan(f->decode(c)), "%s: NaN 0x%08x -> 0x%x is not NaN", f->name, nans[i], c);
        int code_neg = (c & sign_bit(f)) != 0, in_neg = (int)(nans[i] >> 31);
        CHECK_MSG(code_neg == in_neg, "%s: NaN 0x%08x -> 0x%x: sign %d, want %d", f->name, nans[i], c, code_neg, in_neg);
    }
    // random floats (all exponents) against the table search
    uint64_t st = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 2000000; i++) {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        uint32_t u = (uint32_t)st;
        if (i & 1) { // half of them near the format's range: from below the smallest subnormal upwards
            int e0 = 127 + 1 - f->bias - f->man_bits - 2;
            int e = (e0 < 1 ? 1 : e0) + (int)((st >> 40) % 40);
            u = (u & 0x807FFFFFu) | ((uint32_t)e << 23);
        }
        float x = bitsf(u);
        if (isnan(x))
            continue;
        EXPECT(x, ref_encode(f, tab, x));
    }
#undef EXPECT
    CHECK_MSG(bad == 0, "%s: %d rounding mismatches", f->name, bad);
}

static void test_misc(void)
{
    static const char *names[SD_DTYPE_COUNT] = {"F32", "F16", "BF16", "F8_E4M3", "I32", "I64", "U8", "F64"};
    static const size_t sizes[SD_DTYPE_COUNT] = {4, 2, 2, 1, 4, 8, 1, 8};
    for (int t = 0; t < SD_DTYPE_COUNT; t++) {
        CHECK(strcmp(sd_dtype_name((enum sd_dtype)t), names[t]) == 0);
        CHECK(sd_dtype_size((enum sd_dtype)t) == sizes[t]);
        enum sd_dtype back = SD_DTYPE_COUNT;
        CHECK(sd_dtype_from_name(names[t], &back) == SD_OK && back == (enum sd_dtype)t);
    }
    CHECK(sd_dtype_size(SD_DTYPE_COUNT) == 0);
    CHECK(strcmp(sd_dtype_name(SD_DTYPE_COUNT), "unknown") == 0);
    CHECK(sd_dtype_from_name("F8_E5M2", NULL) == SD_ERR_UNSUPPORTED);
    CHECK(sd_dtype_from_name("f32", NULL) == SD_ERR_UNSUPPORTED);

    // e4m3 anchors from the OCP spec
    CHECK(sd_e4m3_to_f32(0x7E) == 448.0f && sd_e4m3_to_f32(0xFE) == -448.0f);
    CHECK(sd_e4m3_to_f32(0x01) == 0x1p-9f && sd_e4m3_to_f32(0x08) == 0x1p-6f && sd_e4m3_to_f32(0x38) == 1.0f);
    CHECK(isnan(sd_e4m3_to_f32(0x7F)) && isnan(sd_e4m3_to_f32(0xFF)));
    CHECK(sd_f32_to_e4m3(0x1p-10f) == 0x00);                   // half the smallest subnormal: tie to even (0)
    CHECK(sd_f32_to_e4m3(nextafterf(0x1p-10f, 1.0f)) == 0x01); // just above
    CHECK(sd_f32_to_e4m3(3 * 0x1p-10f) == 0x02);               // 1.5 ulp: tie to even (2)
    CHECK(sd_f32_to_e4m3(464.0f) == 0x7E && sd_f32_to_e4m3(1e30f) == 0x7E && sd_f32_to_e4m3(-500.0f) == 0xFE);
    CHECK(sd_f32_to_bf16(1.0f + 0x1p-8f) == 0x3F80);           // tie: even (down)
    CHECK(sd_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3F82);       // tie: even (up)
    CHECK(sd_f32_to_f16(65520.0f) == 0x7C00 && sd_f32_to_f16(65519.0f) == 0x7BFF);
    CHECK(sd_f32_to_f16(0x1p-25f) == 0x0000 && sd_f32_to_f16(nextafterf(0x1p-25f, 1.0f)) == 0x0001);

    // sd_convert_to_f32 from unaligned little-endian bytes
    uint8_t raw[1 + 8 * 3];
    const uint16_t hv[3] = {0x3C00, 0xC000, 0x0001};
    for (int i = 0; i < 3; i++) {
        raw[1 + 2 * i] = (uint8_t)hv[i];
        raw[2 + 2 * i] = (uint8_t)(hv[i] >> 8);
    }
    float out[3];
    CHECK(sd_convert_to_f32(SD_DTYPE_F16, raw + 1, out, 3) == SD_OK);
    CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f);
    const uint8_t bfr[5] = {0, 0x80, 0x3F, 0x40, 0xC0};
    CHECK(sd_convert_to_f32(SD_DTYPE_BF16, bfr + 1, out, 2) == SD_OK);
    CHECK(out[0] == 1.0f && out[1] == -3.0f);
    const uint8_t f32r[5] = {0, 0x00, 0x00, 0x80, 0x3F};
    CHECK(sd_convert_to_f32(SD_DTYPE_F32, f32r + 1, out, 1) == SD_OK && out[0] == 1.0f);
    const uint8_t f64r[9] = {0, 0, 0, 0, 0, 0, 0, 0xF0, 0xBF};
    CHECK(sd_convert_to_f32(SD_DTYPE_F64, f64r + 1, out, 1) == SD_OK && out[0] == -1.0f);
    const uint8_t e4r[3] = {0x38, 0xB8, 0x7F};
    CHECK(sd_convert_to_f32(SD_DTYPE_F8_E4M3, e4r, out, 3) == SD_OK);
    CHECK(out[0] == 1.0f && out[1] == -1.0f && isnan(out[2]));
    CHECK(sd_convert_to_f32(SD_DTYPE_I32, raw, out, 1) == SD_ERR_UNSUPPORTED);
    CHECK(sd_convert_to_f32(SD_DTYPE_U8, raw, out, 1) == SD_ERR_UNSUPPORTED);
    CHECK(sd_convert_to_f32(SD_DTYPE_F32, NULL, out, 1) == SD_ERR_ARG);
    CHECK(sd_convert_to_f32(SD_DTYPE_F32, NULL, NULL, 0) == SD_OK);
}

// DeepSeek's FP8 activation quantization (sd_fp8_act_quant / sd_fp8_act_roundtrip): anchors by hand, then random
// rows (fresh values, a partial last block) against the definition evaluated independently in double: scale
// 2^ceil(log2(max(amax, 1e-4) / 448)) per 128-value block, values the nearest e4m3 code of x / scale.
static void test_fp8_act(void)
{
    float x[200];
    uint8_t q[200];
    float sc[2], rt[200];
    for (int i = 0; i < 128; i++)
        x[i] = 0.01f * (float)(i - 60); // amax 0.67 at i = 127
    x[5] = -3.0f;                       // amax 3: 3 / 448 = 0.0067 -> scale 2^-7; -3 / 2^-7 = -384 = e4m3 0xFC
    sd_fp8_act_quant(x, 128, q, sc);
    CHECK(sc[0] == 0x1p-7f && q[5] == 0xFC && sd_e4m3_to_f32(q[5]) * sc[0] == -3.0f);
    for (int i = 0; i < 128; i++)
        x[i] = 0x1p-20f * (float)((i % 7) - 3); // amax 3 * 2^-20 < 1e-4: clamped, scale 2^-22
    sd_fp8_act_quant(x, 128, q, sc);
    CHECK(sc[0] == 0x1p-22f);
    for (int i = 0; i < 128; i++)
        x[i] = i == 0 ? 56.0f : 1.0f; // 56 / 448 = 2^-3 exactly: the scale is 2^-3, not 2^-2
    sd_fp8_act_quant(x, 128, q, sc);
    CHECK(sc[0] == 0.125f && q[0] == 0x7E);

    int bad = 0;
    for (int rep = 0; rep < 200; rep++) {
        int n = rep % 2 ? 200 : 128 + rep % 60;
        double mag = pow(10.0, 6.0 * sd_test_urand() - 4.0);
        for (int i = 0; i < n; i++)
            x[i] = (float)((2.0 * sd_test_urand() - 1.0) * mag);
        sd_fp8_act_quant(x, n, q, sc);
        sd_fp8_act_roundtrip(x, rt, n);
        for (int b = 0; b * 128 < n; b++) {
            int len = n - b * 128 < 128 ? n - b * 128 : 128;
            double amax = 0;
            for (int i = 0; i < len; i++)
                amax = fmax(amax, fabs((double)x[b * 128 + i]));
            double want = ldexp(1.0, (int)ceil(log2(fmax(amax, (double)1e-4f) / 448.0)));
            bad += sc[b] != (float)want;
            for (int i = 0; i < len; i++) {
                int j = b * 128 + i;
                double v = (double)x[j] / want, best = INFINITY;
                int code = -1;
                for (int cdx = 0; cdx < 256; cdx++) { // nearest code; ties to the even (last bit 0) code
                    double d = fabs((double)sd_e4m3_to_f32((uint8_t)cdx) - v);
                    if (isnan(d) || ((cdx & 0x7F) == 0 && cdx)) // NaN codes, and -0 (0 is the same value)
                        continue;
                    if (d < best || (d == best && !(cdx & 1)))
                        best = d, code = cdx;
                }
                bad += sd_e4m3_to_f32(q[j]) != sd_e4m3_to_f32((uint8_t)code);
                bad += rt[j] != (float)((double)sd_e4m3_to_f32((uint8_t)code) * want);
            }
        }
    }
    CHECK_MSG(bad == 0, "fp8 act quantization: %d mismatches against the double-precision definition", bad);
    float y[200];
    memcpy(y, x, sizeof y);
    sd_fp8_act_roundtrip(y, y, 200); // in place
    CHECK(memcmp(y, rt, sizeof y) == 0);
    printf("fp8 act quant: anchors and 200 random rows checked\n");
}

int main(void)
{
    for (int i = 0; i < 3; i++) {
        test_decode_exhaustive(&fmts[i]);
        test_roundtrip_codes(&fmts[i]);
        test_rounding(&fmts[i]);
        printf("%s: %u codes decoded, rounding checked\n", fmts[i].name, 2u * sign_bit(&fmts[i]));
    }
    test_misc();
    test_fp8_act();
    return sd_test_finish("dtype");
}
