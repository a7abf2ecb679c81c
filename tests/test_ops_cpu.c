// test_ops_cpu.c: CPU primitives of ops_cpu against independent float64 references on fresh random
// inputs (seed printed): the GQA attention row (sd_attn_row) on awkward lengths and head sizes, with a
// strided cache as the session keeps it, the same bits on every call.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops_cpu.h"
#include "test_util.h"

// One query over n rows of a cache with row stride ld (the K/V of one KV head at offset off).
static double attn_case(int n, int hd, int ld, int off)
{
    float *k = malloc(sizeof(float) * (size_t)n * ld), *v = malloc(sizeof(float) * (size_t)n * ld);
    float *q = malloc(sizeof(float) * hd), *o = malloc(sizeof(float) * hd), *o2 = malloc(sizeof(float) * hd);
    float *sc = malloc(sizeof(float) * n);
    double *p = malloc(sizeof(double) * n);
    for (int i = 0; i < n * ld; i++) {
        k[i] = sd_test_nrand();
        v[i] = sd_test_nrand();
    }
    for (int d = 0; d < hd; d++)
        q[d] = sd_test_nrand() * 0.7f;
    float scale = 1.0f / sqrtf((float)hd);
    sd_attn_row(q, k + off, v + off, (size_t)ld, n, hd, scale, o, sc);
    sd_attn_row(q, k + off, v + off, (size_t)ld, n, hd, scale, o2, sc);
    CHECK_MSG(memcmp(o, o2, sizeof(float) * hd) == 0, "attention row n %d hd %d: two calls differ", n, hd);
    double mx = -INFINITY, sum = 0, err = 0;
    for (int u = 0; u < n; u++) {
        double s = 0;
        for (int d = 0; d < hd; d++)
            s += (double)q[d] * k[(size_t)u * ld + off + d];
        p[u] = s * scale;
        mx = fmax(mx, p[u]);
    }
    for (int u = 0; u < n; u++) {
        p[u] = exp(p[u] - mx);
        sum += p[u];
    }
    for (int d = 0; d < hd; d++) {
        double want = 0;
        for (int u = 0; u < n; u++)
            want += p[u] / sum * v[(size_t)u * ld + off + d];
        err = fmax(err, fabs(want - o[d]));
    }
    CHECK_MSG(err < 2e-5, "attention row n %d hd %d: max error %.3g vs float64", n, hd, err);
    free(k);
    free(v);
    free(q);
    free(o);
    free(o2);
    free(sc);
    free(p);
    return err;
}

int main(void)
{
    sd_test_seed();
    int cases[][4] = {{1, 64, 64, 0},     {3, 7, 21, 14},        {4, 128, 256, 128}, {5, 32, 64, 32},
                      {130, 64, 128, 64}, {2049, 128, 512, 384}, {777, 80, 160, 0}};
    double e = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        e = fmax(e, attn_case(cases[i][0], cases[i][1], cases[i][2], cases[i][3]));
    printf("attention row: max error %.2g vs float64\n", e);
    return sd_test_finish("test_ops_cpu");
}
