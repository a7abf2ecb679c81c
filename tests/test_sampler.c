// test_sampler.c: sampler correctness: greedy ties, repetition penalty arithmetic, seeded
// determinism, sampling frequencies vs softmax probabilities (temperature 1 and 0.5), and that
// top-k / top-p never draw what they exclude while keeping the renormalized proportions; and, draw by draw, the same
// tokens as the plain reference of tools/sampler_ref.c (every candidate sorted, then the walk) with the same uniform
// draws, on vocabularies where the sampler sorts only growing prefixes of the nucleus.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "tools/sampler_ref.h"
#include "test_util.h"

static struct sd_sampler *mk(float temp, int top_k, float top_p, float pen, int last_n, uint64_t seed, int32_t n)
{
    struct sd_sampler_params p = {temp, top_k, top_p, pen, last_n, seed};
    struct sd_sampler *s = NULL;
    struct sd_err err = {0};
    CHECK_MSG(sd_sampler_new(&p, n, &s, &err) == SD_OK, "%s", err.msg);
    return s;
}

static void test_greedy(void)
{
    struct sd_sampler *s = mk(0.0f, 0, 1.0f, 1.0f, 0, 1, 6);
    float l1[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, -INFINITY};
    CHECK(sd_sampler_sample(s, l1, NULL, 0) == 1); // tie 1 vs 3: lowest index
    float l2[6] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -7.0f};
    CHECK(sd_sampler_sample(s, l2, NULL, 0) == 5);
    float l3[6] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    CHECK(sd_sampler_sample(s, l3, NULL, 0) == -1);
    float l4[6] = {0, 1, NAN, 0, 0, 0};
    CHECK(sd_sampler_sample(s, l4, NULL, 0) == -1);
    sd_sampler_free(s);
}

static void test_penalty(void)
{
    struct sd_sampler *s = mk(0.0f, 0, 1.0f, 2.0f, 3, 1, 5);
    float l[5] = {4.0f, 3.0f, -1.0f, 1.0f, 0.5f};
    // last 3 of history: {2, 0, 2}; token 3 is older than the window. Each token penalized once.
    const int32_t hist[] = {3, 2, 0, 2};
    int32_t t = sd_sampler_sample(s, l, hist, 4);
    CHECK(l[0] == 2.0f && l[1] == 3.0f && l[2] == -2.0f && l[3] == 1.0f && l[4] == 0.5f);
    CHECK(t == 1);
    sd_sampler_free(s);
    // whole history with repeat_last_n < 0
    s = mk(0.0f, 0, 1.0f, 2.0f, -1, 1, 5);
    float l2[5] = {4.0f, 3.0f, -1.0f, 1.0f, 0.5f};
    sd_sampler_sample(s, l2, hist, 4);
    CHECK(l2[3] == 0.5f && l2[0] == 2.0f);
    sd_sampler_free(s);
    // bad params are refused
    struct sd_sampler_params bad = {1.0f, 0, 0.0f, 1.0f, 0, 0};
    struct sd_sampler *none = NULL;
    struct sd_err err = {0};
    CHECK(sd_sampler_new(&bad, 5, &none, &err) == SD_ERR_ARG && none == NULL);
    bad.top_p = 1.0f;
    bad.repetition_penalty = 0.0f;
    CHECK(sd_sampler_new(&bad, 5, &none, &err) == SD_ERR_ARG);
}

#define NV 6
static const float BASE[NV] = {1.0f, 0.5f, 2.0f, -1.0f, 0.0f, 1.5f};

// Draw n times; counts per token.
static void draw(struct sd_sampler *s, int n, int counts[NV])
{
    memset(counts, 0, sizeof(int) * NV);
    for (int i = 0; i < n; i++) {
        float l[NV];
        memcpy(l, BASE, sizeof l);
        int32_t t = sd_sampler_sample(s, l, NULL, 0);
        CHECK(t >= 0 && t < NV);
        if (t >= 0 && t < NV)
            counts[t]++;
    }
}

// Expected probabilities at temperature T over the allowed set (mask).
static void probs(float temp, const int *allowed, double p[NV])
{
    double sum = 0;
    for (int i = 0; i < NV; i++) {
        p[i] = allowed[i] ? exp((double)BASE[i] / temp) : 0.0;
        sum += p[i];
    }
    for (int i = 0; i < NV; i++)
        p[i] /= sum;
}

// Frequencies within 5 standard errors (plus a hair) of p; zero-probability tokens never drawn.
static void check_freq(const char *what, const int counts[NV], int n, const double p[NV])
{
    for (int i = 0; i < NV; i++) {
        double f = (double)counts[i] / n, se = sqrt(p[i] * (1 - p[i]) / n);
        if (p[i] == 0.0)
            CHECK_MSG(counts[i] == 0, "%s: token %d excluded but drawn %d times", what, i, counts[i]);
        else
            CHECK_MSG(fabs(f - p[i]) <= 5 * se + 1e-4, "%s: token %d freq %.4f vs p %.4f", what, i, f, p[i]);
    }
}

static void test_distribution(void)
{
    const int N = 200000;
    int counts[NV];
    double p[NV];
    const int all[NV] = {1, 1, 1, 1, 1, 1};

    struct sd_sampler *s = mk(1.0f, 0, 1.0f, 1.0f, 0, 12345, NV);
    draw(s, N, counts);
    probs(1.0f, all, p);
    check_freq("T=1", counts, N, p);
    sd_sampler_free(s);

    s = mk(0.5f, 0, 1.0f, 1.0f, 0, 777, NV);
    draw(s, N, counts);
    probs(0.5f, all, p);
    check_freq("T=0.5", counts, N, p);
    sd_sampler_free(s);

    // top-k 2: only tokens 2 (2.0) and 5 (1.5)
    s = mk(1.0f, 2, 1.0f, 1.0f, 0, 99, NV);
    draw(s, N, counts);
    const int k2[NV] = {0, 0, 1, 0, 0, 1};
    probs(1.0f, k2, p);
    check_freq("top_k=2", counts, N, p);
    sd_sampler_free(s);

    // top-p: softmax at T=1 is about {.154,.094,.420,.021,.057,.255} (by id). Sorted: 2 (.420), 5 (.255),
    // 0 (.154), ... top_p 0.7 keeps 2, 5, 0 (0.675 < 0.7 <= 0.829).
    s = mk(1.0f, 0, 0.7f, 1.0f, 0, 5, NV);
    draw(s, N, counts);
    const int p3[NV] = {1, 0, 1, 0, 0, 1};
    probs(1.0f, p3, p);
    check_freq("top_p=0.7", counts, N, p);
    sd_sampler_free(s);

    // top-k 4 then top-p 0.5: top-4 = {2,5,0,1}; renormalized {.455,.276,.167,.102}; 0.5 keeps 2, 5
    s = mk(1.0f, 4, 0.5f, 1.0f, 0, 5, NV);
    draw(s, N, counts);
    const int p4[NV] = {0, 0, 1, 0, 0, 1};
    probs(1.0f, p4, p);
    check_freq("top_k=4,top_p=0.5", counts, N, p);
    sd_sampler_free(s);

    // near-uniform logits with a tiny top_p: only the best token survives (the pre-sort cut must keep it)
    {
        enum { U = 100 };
        float l[U];
        struct sd_sampler *u = mk(1.0f, 0, 0.001f, 1.0f, 0, 3, U);
        for (int r = 0; r < 50; r++) {
            for (int i = 0; i < U; i++)
                l[i] = 1.0f;
            l[37] = 1.001f;
            CHECK(sd_sampler_sample(u, l, NULL, 0) == 37);
        }
        sd_sampler_free(u);
    }

    // tiny top_p keeps only the best token
    s = mk(1.0f, 0, 0.01f, 1.0f, 0, 5, NV);
    draw(s, 1000, counts);
    CHECK(counts[2] == 1000);
    sd_sampler_free(s);
}

static void test_determinism(void)
{
    enum { V = 1000, DRAWS = 500 };
    static float base[V], l[V];
    for (int i = 0; i < V; i++)
        base[i] = (float)sin(i * 0.37) * 3.0f;
    int32_t a[DRAWS], b[DRAWS], c[DRAWS];
    int32_t *outs[3] = {a, b, c};
    uint64_t seeds[3] = {2024, 2024, 2025};
    for (int r = 0; r < 3; r++) {
        struct sd_sampler *s = mk(0.8f, 50, 0.9f, 1.3f, 16, seeds[r], V);
        for (int i = 0; i < DRAWS; i++) {
            memcpy(l, base, sizeof l);
            outs[r][i] = sd_sampler_sample(s, l, outs[r], (size_t)i);
        }
        sd_sampler_free(s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    // reseed restarts the stream
    struct sd_sampler *s = mk(1.0f, 0, 1.0f, 1.0f, 0, 7, V);
    int32_t x[20], y[20];
    for (int i = 0; i < 20; i++) {
        memcpy(l, base, sizeof l);
        x[i] = sd_sampler_sample(s, l, NULL, 0);
    }
    sd_sampler_reseed(s, 7);
    for (int i = 0; i < 20; i++) {
        memcpy(l, base, sizeof l);
        y[i] = sd_sampler_sample(s, l, NULL, 0);
    }
    CHECK(memcmp(x, y, sizeof x) == 0);
    sd_sampler_free(s);
}

static void test_reference(void)
{
    enum { N = 20000 };
    static float l[N], lc[N];
    static struct sd_sampler_ref_cand c[N];
    static const struct {
        float t;
        int k;
        float p;
    } cfg[] = {{0.8f, 0, 0.95f}, {1.0f, 0, 0.5f},  {1.5f, 0, 0.99f},
               {0.7f, 50, 0.9f}, {1.0f, 40, 1.0f}, {1.0f, 0, 1.0f}};
    int diff = 0, draws = 0;
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        struct sd_sampler *s = mk(cfg[k].t, cfg[k].k, cfg[k].p, 1.0f, 0, 99 + k, N),
                          *twin = mk(cfg[k].t, cfg[k].k, cfg[k].p, 1.0f, 0, 99 + k, N);
        for (int d = 0; d < 60; d++) {
            float spread = 0.5f + (float)(d % 6); // flat (large nuclei) to peaked
            for (int i = 0; i < N; i++)
                l[i] = sd_test_nrand() * spread;
            l[(d * 7919) % N] = l[(d * 104729) % N]; // an exact tie
            memcpy(lc, l, sizeof l);
            int32_t got = sd_sampler_sample(s, lc, NULL, 0);
            struct sd_sampler_params rp = {cfg[k].t, cfg[k].k, cfg[k].p, 1.0f, 0, 0};
            int32_t want = sd_sampler_ref(l, N, &rp, sd_sampler_draw(twin), c);
            diff += got != want;
            draws++;
        }
        sd_sampler_free(s);
        sd_sampler_free(twin);
    }
    printf("reference: %d of %d draws equal\n", draws - diff, draws);
    CHECK_MSG(diff == 0, "sampler differs from the reference in %d of %d draws", diff, draws);
}

int main(void)
{
    test_greedy();
    test_penalty();
    test_distribution();
    test_determinism();
    test_reference();
    return sd_test_finish("sampler");
}
