// bench_sampler.c: next-token sampling on the CPU (engine/sampler.c) per configuration, on a vocabulary of
// DeepSeek-V3's size, against a plain baseline in the same process (tools/sampler_ref.c: every candidate sorted by
// logit, then top-k, softmax, top-p and the draw walked in that order, the textbook version of the same distribution).
// Logits: normal with a standard deviation of 2 (flat: large top-p nuclei, the sampler's worst case) plus two peaks;
// every call gets a fresh copy, since sampling modifies them. Tokens of both are checked equal on the same draws.
//   bench_sampler [--vocab 129280] [--iters 200]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "sampler_ref.h"
#include "sd_clock.h"

int main(int argc, char **argv)
{
    int n = 129280, iters = 200;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_sampler [--vocab N] [--iters N]\n");
            return 2;
        }
    }
    if (n < 16 || iters < 1) {
        fprintf(stderr, "bench_sampler: --vocab >= 16, --iters >= 1\n");
        return 2;
    }
    float *base = malloc(sizeof(float) * (size_t)n), *l = malloc(sizeof(float) * (size_t)n);
    struct sd_sampler_ref_cand *c = malloc(sizeof *c * (size_t)n);
    if (!base || !l || !c)
        return 1;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < n; i++) { // Box-Muller on xorshift uniforms
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double u1 = ((double)(x >> 11) + 1.0) * 0x1.0p-53;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double u2 = (double)(x >> 11) * 0x1.0p-53;
        base[i] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2) * 2.0);
    }
    base[n / 7] = 12.0f, base[n / 3] = 11.5f;
    static const struct {
        const char *name;
        struct sd_sampler_params p;
    } cfg[] = {{"greedy", {0.0f, 0, 1.0f, 1.0f, 64, 42}},
               {"temperature 0.8, top-p 0.95", {0.8f, 0, 0.95f, 1.0f, 64, 42}},
               {"temperature 0.8, top-k 40", {0.8f, 40, 1.0f, 1.0f, 64, 42}},
               {"temperature 0.7, top-k 50, top-p 0.9", {0.7f, 50, 0.9f, 1.0f, 64, 42}}};
    printf("sd_sampler_sample vs a full-sort baseline, vocabulary %d, %d calls each (ms per token)\n\n", n, iters);
    printf("| sampling | sd_sampler_sample | full sort | full sort / sampler | same tokens |\n|---|---|---|---|---|\n");
    int bad = 0;
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        struct sd_sampler *s = NULL, *twin = NULL;
        struct sd_err err = {0};
        if (sd_sampler_new(&cfg[k].p, n, &s, &err) != SD_OK || sd_sampler_new(&cfg[k].p, n, &twin, &err) != SD_OK) {
            fprintf(stderr, "bench_sampler: %s\n", err.msg);
            return 1;
        }
        double t_s = 0, t_b = 0;
        int same = 0;
        for (int it = 0; it < iters; it++) {
            memcpy(l, base, sizeof(float) * (size_t)n);
            double t0 = sd_now_s();
            int32_t a = sd_sampler_sample(s, l, NULL, 0);
            t_s += sd_now_s() - t0;
            double u = cfg[k].p.temperature > 0.0f ? sd_sampler_draw(twin) : 0.0;
            t0 = sd_now_s();
            int32_t b = sd_sampler_ref(base, n, &cfg[k].p, u, c);
            t_b += sd_now_s() - t0;
            same += a == b;
        }
        printf("| %s | %.3f | %.3f | %.2fx | %d/%d |\n", cfg[k].name, t_s * 1e3 / iters, t_b * 1e3 / iters, t_b / t_s,
               same, iters);
        bad |= same != iters;
        sd_sampler_free(s);
        sd_sampler_free(twin);
    }
    free(base), free(l), free(c);
    return bad;
}
