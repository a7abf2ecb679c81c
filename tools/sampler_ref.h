// sampler_ref.h: a plain next-token sampler, the textbook form of engine/sampler.c's distribution and draw order, for
// the equality test (tests/test_sampler.c) and as the baseline of tools/bench_sampler.c: greedy argmax (lowest id on
// ties), or the scaled logits, every candidate sorted by (logit desc, id asc) when top-k or top-p cuts (id order
// otherwise), top-k as a prefix, probabilities against the best, top-p as the shortest sorted prefix reaching the
// mass, the uniform u walked in that order. No repetition penalty.
#ifndef SD_SAMPLER_REF_H
#define SD_SAMPLER_REF_H

#include <stdint.h>

#include "sampler.h"

struct sd_sampler_ref_cand {
    float l;
    int32_t id;
};

// c: scratch of n entries.
int32_t sd_sampler_ref(const float *logits, int n, const struct sd_sampler_params *p, double u,
                       struct sd_sampler_ref_cand *c);

#endif
