// sampler.h: next-token sampling from logits: HF-style repetition penalty, temperature, top-k,
// top-p (nucleus), and a seeded xoshiro256** PRNG so runs are reproducible. All buffers are
// allocated in sd_sampler_new(); sampling allocates nothing.
#ifndef SD_SAMPLER_H
#define SD_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

struct sd_sampler_params {
    float temperature;        // <= 0: greedy argmax (lowest index on ties)
    int top_k;                // <= 0 or >= n_vocab: no top-k
    float top_p;              // in (0, 1]; 1: no nucleus cut
    float repetition_penalty; // 1: none; > 1 discourages tokens seen in the last repeat_last_n history entries
    int repeat_last_n;        // < 0: whole history; 0: penalty off
    uint64_t seed;
};

struct sd_sampler; // opaque

// Sensible defaults: greedy, no penalty.
struct sd_sampler_params sd_sampler_params_default(void);

// New sampler for logits of n_vocab entries; *out freed with sd_sampler_free().
enum sd_status sd_sampler_new(const struct sd_sampler_params *params, int32_t n_vocab, struct sd_sampler **out,
                              struct sd_err *err);
void sd_sampler_free(struct sd_sampler *s);

// Pick the next token. logits (n_vocab floats) are modified in place (penalty, temperature).
// history holds the tokens so far (prompt and generated), oldest first. Returns the token id,
// or -1 when no logit is a finite number or NaN is present.
int32_t sd_sampler_sample(struct sd_sampler *s, float *logits, const int32_t *history, size_t n_history);

// Restart the PRNG stream from seed.
void sd_sampler_reseed(struct sd_sampler *s, uint64_t seed);

#endif
