// test_dsa.c: DSA primitives against independent float64 references on fresh random inputs (seed
// printed): Hadamard vs the explicit Sylvester matrix, FP8 row quantization (power-of-two scale,
// dequantized error bound), the FP8 MLA latent cache row (layout, scales, codes and bf16 k_pe against their
// definitions in double), fp32 and FP8 indexer scores, top-k (set, ties, -1 padding, causal bound),
// and sparse absorbed MLA attention (and its per-slot probabilities) equal to dense attention
// restricted to the selected set.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsa.h"
#include "dtype.h"
#include "ops_cpu.h"
#include "test_util.h"

static void test_hadamard(void)
{
    int n = 128;
    float x[128];
    double ref[128];
    for (int i = 0; i < n; i++)
        x[i] = sd_test_nrand();
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n; j++)
            s += (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.0 : 1.0) * x[j];
        ref[i] = s / sqrt((double)n);
    }
    sd_hadamard(x, n);
    double err = 0;
    for (int i = 0; i < n; i++)
        err = fmax(err, fabs(x[i] - ref[i]));
    CHECK_MSG(err < 1e-5, "hadamard max err %.3g", err);
}

static void test_quant(void)
{
    for (int trial = 0; trial < 50; trial++) {
        float x[128], h[128];
        double mag = pow(10.0, sd_test_urand() * 8 - 4);
        for (int i = 0; i < 128; i++)
            x[i] = sd_test_nrand() * (float)mag;
        uint8_t q[128];
        float s;
        sd_dsa_quant_fp8_row(x, 128, q, &s);
        memcpy(h, x, sizeof h);
        sd_hadamard(h, 128);
        double amax = 0;
        for (int i = 0; i < 128; i++)
            amax = fmax(amax, fabs(h[i]));
        int e;
        double m = frexp(s, &e);
        CHECK_MSG(m == 0.5, "scale %g is not a power of two", s);
        double want = fmax(amax, 1e-4) / 448.0;
        CHECK_MSG(s >= want && s < 2 * want, "scale %g not the smallest power of two >= %g", s, want);
        for (int i = 0; i < 128; i++) {
            double dq = sd_e4m3_to_f32(q[i]) * s;
            // e4m3 has 3 mantissa bits: relative step 1/16 for normals; absolute floor from subnormals.
            CHECK_MSG(fabs(dq - h[i]) <= fabs(h[i]) / 16 + s * 0x1p-9 * 1.01, "quant %d: %g vs %g", i, dq, h[i]);
        }
    }
}

// The FP8 latent cache row (sd_mla_kv_fp8_*): V3.2's 512 + 64 (656 bytes), sparsedoc-mini's 64 + 32 and a
// partial last tile (200 + 16), rows of magnitudes 1e-7 .. 1e3 (the clamp and large scales), checked against the
// definition in double: byte layout (codes, then little-endian fp32 scales, then little-endian bf16), each
// scale the smallest power of two >= max(amax / 448, 1e-4), each code the nearest e4m3 of x / s (ties to even;
// checked as: no other finite code is nearer), each k_pe the nearest bf16; the dequantized row is exactly
// code * scale and bf16.
static void test_kv_fp8(void)
{
    CHECK(sd_mla_kv_fp8_row_bytes(512, 64) == 656);
    CHECK(sd_mla_kv_fp8_row_bytes(64, 32) == 132);
    CHECK(sd_mla_kv_fp8_row_bytes(200, 16) == 200 + 8 + 32);
    // anchors: amax 896 -> s = 2, 896 -> 448 (code 0x7e), -1 -> -0.5 (0xb0); a tiny tile -> s = 2^-13 (the clamp)
    float row[2] = {896.0f, -1.0f}, back[2];
    uint8_t b[16];
    sd_mla_kv_fp8_quant(row, 2, 0, b);
    float s0;
    memcpy(&s0, b + 2, 4);
    CHECK_MSG(b[0] == 0x7e && s0 == 2.0f && b[1] == 0xb0, "anchor: code 0x%02x scale %g code 0x%02x", b[0], s0, b[1]);
    row[0] = 1e-6f, row[1] = -3e-6f;
    sd_mla_kv_fp8_quant(row, 2, 0, b);
    memcpy(&s0, b + 2, 4);
    CHECK_MSG(s0 == 0x1p-13f, "clamped scale %g, want 2^-13", s0);
    sd_mla_kv_fp8_dequant(b, 2, 0, back);
    CHECK_MSG(fabsf(back[1] - row[1]) <= 0x1p-23f, "tiny value %g -> %g", row[1], back[1]);

    static const int dims[][2] = {{512, 64}, {64, 32}, {200, 16}};
    double e4[256]; // every code's value, by the textbook formula (bias 7, 3 mantissa bits, 0x7f/0xff NaN)
    for (int c = 0; c < 256; c++) {
        int e = (c >> 3) & 15, m = c & 7;
        double v = e ? ldexp(8 + m, e - 10) : ldexp(m, -9);
        e4[c] = (c & 0x80) ? -v : v;
    }
    for (int trial = 0; trial < 30; trial++) {
        int dl = dims[trial % 3][0], dr = dims[trial % 3][1], D = dl + dr;
        float x[576], y[576];
        uint8_t q[700];
        double mag = pow(10.0, sd_test_urand() * 10 - 7);
        for (int i = 0; i < D; i++)
            x[i] = sd_test_nrand() * (float)(mag * (i % 128 == 5 ? 8 : 1));
        size_t rb = sd_mla_kv_fp8_row_bytes(dl, dr);
        sd_mla_kv_fp8_quant(x, dl, dr, q);
        sd_mla_kv_fp8_dequant(q, dl, dr, y);
        int bad = 0;
        for (int t = 0; t * 128 < dl; t++) {
            int len = dl - t * 128 < 128 ? dl - t * 128 : 128;
            double amax = 0;
            for (int i = 0; i < len; i++)
                amax = fmax(amax, fabs(x[t * 128 + i]));
            const uint8_t *sb = q + dl + 4 * t;
            uint32_t u = (uint32_t)sb[0] | (uint32_t)sb[1] << 8 | (uint32_t)sb[2] << 16 | (uint32_t)sb[3] << 24;
            float sf;
            memcpy(&sf, &u, 4);
            double s = sf, want = fmax(amax / 448.0, 1e-4);
            int ex;
            CHECK_MSG(frexp(s, &ex) == 0.5 && s >= want && s < 2 * want, "tile %d: scale %g for amax %g", t, s, amax);
            for (int i = 0; i < len; i++) {
                int k = t * 128 + i, c = q[k];
                double r = x[k] / s, d = fabs(e4[c] - r);
                for (int c2 = 0; c2 < 256 && (c & 0x7f) != 0x7f; c2++) {
                    if ((c2 & 0x7f) == 0x7f)
                        continue;
                    double d2 = fabs(e4[c2] - r);
                    if (d2 < d || (d2 == d && e4[c2] != e4[c] && (c2 & 1) == 0 && (c & 1)))
                        bad++;
                }
                if ((c & 0x7f) == 0x7f || y[k] != (float)(e4[c] * s))
                    bad++;
            }
        }
        for (int i = 0; i < dr; i++) {
            const uint8_t *pb = q + rb - 2 * (size_t)dr + 2 * i;
            uint32_t bits = ((uint32_t)pb[0] | (uint32_t)pb[1] << 8) << 16;
            float v;
            memcpy(&v, &bits, 4);
            // nearest bf16: |x - v| <= half a bf16 step at v (2^(e-8) for v in [2^e, 2^(e+1)))
            int ev;
            frexp(fabs(v) > 0 ? v : x[dl + i], &ev);
            if (fabs((double)x[dl + i] - v) > ldexp(1.0, ev - 9) * 1.0000001 || y[dl + i] != v)
                bad++;
        }
        CHECK_MSG(bad == 0, "kv_fp8 row %d + %d (magnitude %g): %d values off their definition", dl, dr, mag, bad);
    }
}

// fp32 scores of both kernels (AVX2 when the CPU has it, scalar) against float64, on shapes that leave
// partial query groups, partial key blocks and heads beyond a multiple of four; the same scores on 1
// and 3 threads.
// n floats of sd_test_nrand() (malloc'd; caller frees). Exits the test on out of memory.
static float *nrand_array(size_t n)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    if (!x) {
        fprintf(stderr, "test_dsa: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        x[i] = sd_test_nrand();
    return x;
}

static double scores_case(int nq, int nh, int d, int nk, int ld)
{
    float *q = nrand_array((size_t)nq * nh * d), *k = nrand_array((size_t)nk * d), *w = nrand_array((size_t)nq * nh);
    float *sc = malloc(sizeof(float) * nq * ld), *sc1 = malloc(sizeof(float) * nq * ld);
    int *valid = malloc(sizeof(int) * nq);
    for (int i = 0; i < nq; i++)
        valid[i] = i == 0 ? 1 : i == 1 ? nk : 1 + (int)(sd_test_urand() * nk);
    sd_dsa_index_scores_f32(q, w, nq, nh, d, k, nk, valid, sc, (size_t)ld, 3);
    sd_dsa_index_scores_f32(q, w, nq, nh, d, k, nk, valid, sc1, (size_t)ld, 1);
    double maxe = 0;
    int same = 1;
    for (int i = 0; i < nq; i++)
        for (int u = 0; u < nk; u++) {
            float got = sc[(size_t)i * ld + u];
            same &= memcmp(&got, &sc1[(size_t)i * ld + u], sizeof got) == 0;
            if (u >= valid[i]) {
                CHECK_MSG(isinf(got) && got < 0, "score [%d][%d] beyond n_valid %d is %g", i, u, valid[i], got);
                continue;
            }
            double s = 0, mag = 0;
            for (int j = 0; j < nh; j++) {
                double dd = 0;
                for (int x = 0; x < d; x++)
                    dd += (double)q[((size_t)i * nh + j) * d + x] * k[(size_t)u * d + x];
                if (dd > 0) {
                    s += w[i * nh + j] * dd;
                    mag += fabs(w[i * nh + j] * dd);
                }
            }
            maxe = fmax(maxe, fabs(s - got) / (mag + 1));
        }
    CHECK_MSG(same, "%s fp32 scores differ between 3 threads and 1 (nq %d nh %d d %d nk %d)", sd_dsa_scores_impl(), nq,
              nh, d, nk);
    // A query scored alone (decode: keys gathered, not transposed) gets the bits it got in the batch.
    for (int i = 0; i < nq && i < 3; i++) {
        sd_dsa_index_scores_f32(q + (size_t)i * nh * d, w + (size_t)i * nh, 1, nh, d, k, nk, valid + i, sc1, (size_t)ld,
                                2);
        CHECK_MSG(memcmp(sc1, sc + (size_t)i * ld, sizeof(float) * (size_t)valid[i]) == 0,
                  "%s fp32 scores of query %d alone differ from the batch (nq %d nh %d d %d nk %d)",
                  sd_dsa_scores_impl(), i, nq, nh, d, nk);
    }
    // Worst-case float32 summation bound, relative to the sum of |terms|: (d + nh) units of roundoff.
    double tol = (d + nh) * 0x1p-23;
    CHECK_MSG(maxe < tol, "%s fp32 index scores err %.3g > %.3g (nq %d nh %d d %d nk %d)", sd_dsa_scores_impl(), maxe,
              tol, nq, nh, d, nk);
    free(q);
    free(k);
    free(w);
    free(sc);
    free(sc1);
    free(valid);
    return maxe;
}

// The FP8 scores of the AVX2 kernel and of the scalar one are the same bits (their dots are exact),
// on shapes with odd heads, partial key groups, mixed n_valid and more queries than one task holds.
static void fp8_kernels_agree(int nq, int nh, int d, int nk)
{
    uint8_t *q8 = malloc((size_t)nq * nh * d), *k8 = malloc((size_t)nk * d);
    float *qs = malloc(sizeof(float) * nq * nh), *ks = malloc(sizeof(float) * nk), *w = malloc(sizeof(float) * nq * nh);
    float *a = malloc(sizeof(float) * nq * nk), *b = malloc(sizeof(float) * nq * nk), *x = malloc(sizeof(float) * d);
    int *valid = malloc(sizeof(int) * nq);
    for (int i = 0; i < nq * nh; i++) {
        for (int j = 0; j < d; j++)
            x[j] = sd_test_nrand();
        sd_dsa_quant_fp8_row(x, d, q8 + (size_t)i * d, &qs[i]);
        w[i] = sd_test_nrand();
    }
    for (int u = 0; u < nk; u++) {
        for (int j = 0; j < d; j++)
            x[j] = sd_test_nrand() * 2;
        sd_dsa_quant_fp8_row(x, d, k8 + (size_t)u * d, &ks[u]);
    }
    for (int i = 0; i < nq; i++)
        valid[i] = i == 0 ? 1 : i == 1 ? nk : 1 + (int)(sd_test_urand() * nk);
    CHECK(sd_dsa_index_scores_fp8(q8, qs, w, nq, nh, d, k8, ks, nk, valid, a, (size_t)nk, 2) == 0);
    sd_dsa_force_scalar(1);
    CHECK(sd_dsa_index_scores_fp8(q8, qs, w, nq, nh, d, k8, ks, nk, valid, b, (size_t)nk, 2) == 0);
    sd_dsa_force_scalar(0);
    CHECK_MSG(memcmp(a, b, sizeof(float) * nq * nk) == 0,
              "fp8 scores: %s and scalar kernels differ (nq %d nh %d d %d nk %d)", sd_dsa_scores_impl(), nq, nh, d, nk);
    free(q8);
    free(k8);
    free(qs);
    free(ks);
    free(w);
    free(a);
    free(b);
    free(x);
    free(valid);
}

static void test_scores(void)
{
    int shapes[][5] = {{5, 4, 64, 77, 80},       {19, 6, 32, 700, 703}, {9, 1, 128, 257, 257},
                       {1, 64, 128, 1000, 1000}, {2, 6, 32, 700, 701},  {40, 4, 64, 3000, 3001}};
    for (int pass = 0; pass < 2; pass++) {
        sd_dsa_force_scalar(pass);
        double e = 0;
        for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++)
            e = fmax(e, scores_case(shapes[c][0], shapes[c][1], shapes[c][2], shapes[c][3], shapes[c][4]));
        printf("index scores fp32 (%s): max error %.2g vs float64\n", sd_dsa_scores_impl(), e);
    }
    sd_dsa_force_scalar(0);
    // AVX-512 (16 keys per vector) and AVX2 run the same fused multiply-adds per key: the same bits.
    if (!strcmp(sd_dsa_scores_impl(), "avx512")) {
        for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
            int nq = shapes[c][0], nh = shapes[c][1], d = shapes[c][2], nk = shapes[c][3], ld = shapes[c][4];
            float *q = nrand_array((size_t)nq * nh * d), *k = nrand_array((size_t)nk * d);
            float *w = nrand_array((size_t)nq * nh), *a = malloc(sizeof(float) * nq * ld),
                  *b = malloc(sizeof(float) * nq * ld);
            sd_dsa_index_scores_f32(q, w, nq, nh, d, k, nk, NULL, a, (size_t)ld, 2);
            sd_dsa_force_avx2(1);
            sd_dsa_index_scores_f32(q, w, nq, nh, d, k, nk, NULL, b, (size_t)ld, 2);
            sd_dsa_force_avx2(0);
            int same = 1;
            for (int i = 0; i < nq; i++)
                same &= !memcmp(a + (size_t)i * ld, b + (size_t)i * ld, sizeof(float) * nk);
            CHECK_MSG(same, "fp32 scores: avx512 and avx2 kernels differ (nq %d nh %d d %d nk %d)", nq, nh, d, nk);
            free(q), free(k), free(w), free(a), free(b);
        }
        printf("index scores fp32: avx512 kernel = avx2 kernel, bit for bit\n");
    }
    fp8_kernels_agree(3, 5, 64, 333);
    fp8_kernels_agree(37, 4, 128, 1000);
    fp8_kernels_agree(1, 64, 128, 517);
    printf("index scores fp8: %s kernel = scalar kernel, bit for bit\n", sd_cpu_has_avx2_fma() ? "avx2" : "scalar");
    int nq = 5, nh = 4, nk = 77;
    float w[5 * 4];
    for (int i = 0; i < nq * nh; i++)
        w[i] = sd_test_nrand();
    int valid[5] = {1, 10, 64, 77, 76};
    float sc[5 * 80];
    double maxe;

    // FP8 path vs float64 on the quantized values.
    int D = 128;
    float *q2 = malloc(sizeof(float) * nq * nh * D), *k2 = malloc(sizeof(float) * nk * D);
    for (int i = 0; i < nq * nh * D; i++)
        q2[i] = sd_test_nrand();
    for (int i = 0; i < nk * D; i++)
        k2[i] = sd_test_nrand() * 3;
    uint8_t *q8 = malloc((size_t)nq * nh * D), *k8 = malloc((size_t)nk * D);
    float qs[5 * 4], *ks = malloc(sizeof(float) * nk);
    for (int i = 0; i < nq * nh; i++)
        sd_dsa_quant_fp8_row(q2 + i * D, D, q8 + i * D, &qs[i]);
    for (int u = 0; u < nk; u++)
        sd_dsa_quant_fp8_row(k2 + u * D, D, k8 + u * D, &ks[u]);
    sd_dsa_index_scores_fp8(q8, qs, w, nq, nh, D, k8, ks, nk, valid, sc, 80, 2);
    maxe = 0;
    double err2 = 0, ref2 = 0;
    for (int i = 0; i < nq; i++)
        for (int u = 0; u < valid[i]; u++) {
            double s = 0, st = 0;
            for (int j = 0; j < nh; j++) {
                double dd = 0, dt = 0;
                for (int x = 0; x < D; x++) {
                    dd += (double)sd_e4m3_to_f32(q8[(i * nh + j) * D + x]) * sd_e4m3_to_f32(k8[u * D + x]);
                    dt += (double)q2[(i * nh + j) * D + x] * k2[u * D + x];
                }
                if (dd > 0)
                    s += w[i * nh + j] * qs[i * nh + j] * dd;
                if (dt > 0)
                    st += w[i * nh + j] * dt;
            }
            s *= ks[u];
            maxe = fmax(maxe, fabs(s - sc[i * 80 + u]) / (fabs(s) + 1));
            err2 += (st - sc[i * 80 + u]) * (st - sc[i * 80 + u]);
            ref2 += st * st;
        }
    CHECK_MSG(maxe < 1e-5, "fp8 index scores vs exact-on-quantized err %.3g", maxe);
    double rel = sqrt(err2 / ref2);
    CHECK_MSG(rel < 0.1, "fp8 index scores far from unquantized ones: relative L2 %.3g", rel);
    printf("index scores fp8: relative L2 %.3g vs unquantized\n", rel);
    free(q2);
    free(k2);
    free(q8);
    free(k8);
    free(ks);
}

// Reference order, written independently of the engine's: score descending with NaN as -inf (-0 and
// +0 compare equal as numbers), then index ascending.
static int cmp_desc_idx(const void *a, const void *b, void *ctx)
{
    const float *s = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    double u = isnan(s[x]) ? -INFINITY : s[x], v = isnan(s[y]) ? -INFINITY : s[y];
    if (u != v)
        return u > v ? -1 : 1;
    return x - y;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

// kind 0: normal scores; 1: heavy ties (10 values); 2: NaN, +-0, +-inf, subnormals, +-1 and normals
// mixed; 3: all equal (every selection decided by index).
static float topk_value(int kind, int i)
{
    static const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 1e-40f, -1e-40f, 3.5f};
    switch (kind) {
    case 1:
        return (float)(int)(sd_test_urand() * 10);
    case 2: {
        double r = sd_test_urand();
        if (r < 0.1)
            return NAN;
        if (r < 0.15)
            return -INFINITY;
        if (r < 0.17)
            return INFINITY;
        if (r < 0.6)
            return special[(int)(sd_test_urand() * 7) % 7];
        return sd_test_nrand();
    }
    case 3:
        return 0.25f;
    default:
        (void)i;
        return sd_test_nrand();
    }
}

static void test_topk(void)
{
    int sizes[] = {1, 7, 63, 65, 300, 2047, 2049, 5000, 40000};
    int n_cases = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        int ks[] = {1, 16, 64, 512, 2048};
        for (int ki = 0; ki < 5; ki++) {
            for (int kind = 0; kind < 4; kind++) {
                int k = ks[ki];
                float *s = malloc(sizeof(float) * n);
                for (int i = 0; i < n; i++)
                    s[i] = topk_value(kind, i);
                int32_t *idx = malloc(sizeof(int32_t) * (k > n ? k : n)), *scr = malloc(sizeof(int32_t) * n);
                int *ord = malloc(sizeof(int) * n);
                int got = sd_dsa_topk(s, n, k, idx, scr);
                int want = k < n ? k : n;
                CHECK_MSG(got == want, "topk n=%d k=%d returned %d", n, k, got);
                for (int i = 0; i < n; i++)
                    ord[i] = i;
                qsort_r(ord, (size_t)n, sizeof(int), cmp_desc_idx, s);
                qsort(ord, (size_t)want, sizeof(int), cmp_int); // the first `want`, ascending by index
                int same = 1;
                for (int i = 0; i < want; i++)
                    same &= idx[i] == ord[i];
                CHECK_MSG(same, "topk n=%d k=%d kind=%d: selection differs from the sorted reference", n, k, kind);
                for (int i = want; i < k; i++)
                    CHECK_MSG(idx[i] == -1, "topk n=%d k=%d: slot %d not padded with -1", n, k, i);
                n_cases++;
                free(s);
                free(idx);
                free(scr);
                free(ord);
            }
        }
    }
    printf("topk: %d cases against a full sort\n", n_cases);

    // Hinted selection over runs of similar rows (each the one before plus noise), with now and then an
    // unrelated row, a shorter row or a shifted one: every row equals the full sort, and most rows
    // must come from the hint's candidates (else the fast path went untested).
    unsigned rows = 0, hits = 0;
    int lens[] = {3000, 20000, 65536};
    for (size_t li = 0; li < 3; li++) {
        for (int kind = 0; kind < 3; kind++) {
            int n = lens[li], k = li == 0 ? 64 : 512;
            float *s = malloc(sizeof(float) * n);
            int32_t *idx = malloc(sizeof(int32_t) * k), *scr = malloc(sizeof(int32_t) * n);
            int *ord = malloc(sizeof(int) * n);
            for (int i = 0; i < n; i++)
                s[i] = topk_value(kind, i);
            struct sd_dsa_topk_hint hint = {0};
            for (int r = 0; r < 24; r++) {
                int nv = n - (r % 5 == 4 ? n / 3 : 0);
                if (r % 11 == 10)
                    for (int i = 0; i < n; i++) // unrelated row
                        s[i] = topk_value(kind, i);
                else if (r % 7 == 6)
                    for (int i = 0; i < n; i++) // every score shifted down: the hint keeps too few
                        s[i] = s[i] - 2.0f;
                else
                    for (int i = 0; i < n; i++)
                        if (!isnan(s[i]) && !isinf(s[i]))
                            s[i] += 0.01f * sd_test_nrand();
                sd_dsa_topk_hinted(s, nv, k, idx, scr, &hint);
                for (int i = 0; i < nv; i++)
                    ord[i] = i;
                qsort_r(ord, (size_t)nv, sizeof(int), cmp_desc_idx, s);
                qsort(ord, (size_t)k, sizeof(int), cmp_int);
                int same = 1;
                for (int i = 0; i < k; i++)
                    same &= idx[i] == ord[i];
                CHECK_MSG(same, "hinted topk n=%d k=%d kind=%d row %d: selection differs from the sorted reference", nv,
                          k, kind, r);
            }
            rows += hint.rows;
            hits += hint.hits;
            free(s);
            free(idx);
            free(scr);
            free(ord);
        }
    }
    CHECK_MSG(hits * 2 > rows, "hinted topk: only %u of %u rows used the hint", hits, rows);
    printf("topk hinted: %u rows equal to the full sort, %u selected from the hint's candidates\n", rows, hits);
}

static void test_sparse_attn(void)
{
    int nh = 3, dl = 32, dr = 8, n = 200, k = 50;
    size_t ld = (size_t)dl + dr;
    float *kv = malloc(sizeof(float) * n * ld), ql[3 * 32], qp[3 * 8], out[3 * 32], scratch[128];
    for (size_t i = 0; i < n * ld; i++)
        kv[i] = sd_test_nrand();
    for (int i = 0; i < nh * dl; i++)
        ql[i] = sd_test_nrand() * 0.5f;
    for (int i = 0; i < nh * dr; i++)
        qp[i] = sd_test_nrand() * 0.5f;
    int32_t idx[64];
    for (int i = 0; i < k; i++)
        idx[i] = (int32_t)(sd_test_urand() * n);
    idx[3] = -1;
    idx[17] = -1;
    float tau = 0.3f;
    sd_mla_sparse_attn_absorbed(ql, qp, nh, dl, dr, kv, ld, idx, k, tau, out, scratch);
    double maxe = 0;
    for (int h = 0; h < nh; h++) {
        // float64 dense attention over all n tokens with a mask that keeps only the selected ones
        double *p = calloc((size_t)n, sizeof(double)), mx = -INFINITY, sum = 0;
        int *mult = calloc((size_t)n, sizeof(int));
        for (int i = 0; i < k; i++)
            if (idx[i] >= 0)
                mult[idx[i]]++;
        for (int u = 0; u < n; u++) {
            if (!mult[u])
                continue;
            double s = 0;
            for (int d = 0; d < dl; d++)
                s += (double)ql[h * dl + d] * kv[u * ld + d];
            for (int d = 0; d < dr; d++)
                s += (double)qp[h * dr + d] * kv[u * ld + dl + d];
            p[u] = s * tau;
            mx = fmax(mx, p[u]);
        }
        for (int u = 0; u < n; u++)
            if (mult[u]) {
                p[u] = mult[u] * exp(p[u] - mx); // a token listed twice counts twice, as in a gather
                sum += p[u];
            }
        for (int d = 0; d < dl; d++) {
            double o = 0;
            for (int u = 0; u < n; u++)
                if (mult[u])
                    o += p[u] / sum * kv[u * ld + d];
            maxe = fmax(maxe, fabs(o - out[h * dl + d]));
        }
        // The probabilities the attention applies, per slot (-1 slots 0).
        float probs[64];
        sd_mla_attn_probs_absorbed(ql + h * dl, qp + h * dr, dl, dr, kv, ld, idx, k, tau, probs);
        double perr = 0, psum = 0;
        for (int i = 0; i < k; i++) {
            double want = idx[i] < 0 ? 0.0 : p[idx[i]] / mult[idx[i]] / sum;
            perr = fmax(perr, fabs(probs[i] - want));
            psum += probs[i];
        }
        CHECK_MSG(perr < 1e-6 && fabs(psum - 1.0) < 1e-5, "attention probabilities err %.3g, sum %.9f", perr, psum);
        free(p);
        free(mult);
    }
    CHECK_MSG(maxe < 1e-5, "sparse attention err %.3g", maxe);
    // The AVX2 build of the attention and the baseline one give the same bits (no contraction).
    float out2[3 * 32];
    sd_dsa_force_scalar(1);
    sd_mla_sparse_attn_absorbed(ql, qp, nh, dl, dr, kv, ld, idx, k, tau, out2, scratch);
    sd_dsa_force_scalar(0);
    CHECK_MSG(memcmp(out, out2, sizeof out) == 0, "sparse attention: %s and scalar builds differ",
              sd_dsa_scores_impl());
    free(kv);
}

// sd_mla_attn_heads (all heads of a query over each gathered row once) against sd_mla_sparse_attn_absorbed
// head by head: the same bits, AVX2 and baseline builds, q_pe rows at a stride, -1 slots, duplicate slots,
// a row of slots that are all -1, and a tail of fewer than 4 valid slots.
static void test_attn_heads(void)
{
    const int cases[][4] = {{4, 64, 32, 512}, {7, 33, 6, 61}, {16, 128, 64, 300}, {3, 8, 8, 5}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int nh = cases[c][0], dl = cases[c][1], dr = cases[c][2], k = cases[c][3], n = 700;
        size_t ld = (size_t)dl + dr, ldq = (size_t)dr + 5; // q_pe rows padded: a stride that is not d_rope
        float *kv = malloc(sizeof(float) * n * ld), *ql = malloc(sizeof(float) * nh * dl);
        float *qp = malloc(sizeof(float) * nh * ldq), *qp1 = malloc(sizeof(float) * nh * dr);
        float *want = malloc(sizeof(float) * nh * dl), *got = malloc(sizeof(float) * nh * dl);
        float *scr = malloc(sizeof(float) * sd_mla_attn_heads_scratch(nh, k)), *scr1 = malloc(sizeof(float) * 2 * k);
        int32_t *idx = calloc((size_t)k, sizeof(int32_t));
        for (size_t i = 0; i < n * ld; i++)
            kv[i] = sd_test_nrand();
        for (int i = 0; i < nh * dl; i++)
            ql[i] = sd_test_nrand() * 0.5f;
        for (int h = 0; h < nh; h++)
            for (int d = 0; d < (int)ldq; d++)
                qp[h * ldq + d] = d < dr ? (qp1[h * dr + d] = sd_test_nrand() * 0.5f) : NAN; // padding never read
        for (int rep = 0; rep < 2; rep++) {
            for (int i = 0; i < k; i++) {
                double z = sd_test_urand();
                idx[i] = rep == 1 && c == 3 ? -1
                         : z < 0.1          ? -1
                         : z < 0.15         ? idx[i > 0 ? i - 1 : 0]
                                            : (int32_t)(sd_test_urand() * n);
            }
            for (int scalar = 0; scalar < 2; scalar++) {
                sd_dsa_force_scalar(scalar);
                for (int h = 0; h < nh; h++)
                    sd_mla_sparse_attn_absorbed(ql + (size_t)h * dl, qp1 + (size_t)h * dr, 1, dl, dr, kv, ld, idx, k,
                                                0.2f, want + (size_t)h * dl, scr1);
                memset(got, 0xff, sizeof(float) * nh * dl);
                sd_mla_attn_heads(ql, qp, ldq, nh, dl, dr, kv, ld, idx, k, 0.2f, got, scr);
                sd_dsa_force_scalar(0);
                CHECK_MSG(memcmp(want, got, sizeof(float) * nh * dl) == 0,
                          "attn heads case %zu rep %d (%s) differs from the per-head attention", c, rep,
                          scalar ? "baseline" : sd_dsa_scores_impl());
            }
        }
        double mag = 0;
        for (int i = 0; i < nh * dl; i++)
            mag += fabs(got[i]);
        CHECK_MSG(c == 3 || mag > 0, "attn heads case %zu: all-zero output", c);
        free(kv), free(ql), free(qp), free(qp1), free(want), free(got), free(scr), free(scr1), free(idx);
    }
}

int main(void)
{
    sd_test_seed();
    test_hadamard();
    test_quant();
    test_kv_fp8();
    test_scores();
    test_topk();
    test_sparse_attn();
    test_attn_heads();
    return sd_test_finish("test_dsa");
}
