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
// The draw walks the candidates in a fixed order, so that a device can reproduce it: by logit (higher first, lower
// id on ties) after top-k or for top-p (top-p by probability, which only differs where two logits give the same
// probability), in id order when neither cuts.
int32_t sd_sampler_sample(struct sd_sampler *s, float *logits, const int32_t *history, size_t n_history);

// For a backend that samples on its device (sd_session_eval_sample): the parameters; the distinct token ids the
// repetition penalty applies to for this history (at most n_vocab; out has room for n_vocab), as
// sd_sampler_sample applies it; and the uniform draw in [0, 1) of one sampled (not greedy) token, the one
// sd_sampler_sample would make, so both keep the same random stream.
const struct sd_sampler_params *sd_sampler_get_params(const struct sd_sampler *s);
int32_t sd_sampler_n_vocab(const struct sd_sampler *s);
size_t sd_sampler_penalty_ids(struct sd_sampler *s, const int32_t *history, size_t n_history, int32_t *out);
double sd_sampler_draw(struct sd_sampler *s);

// Restart the PRNG stream from seed.
void sd_sampler_reseed(struct sd_sampler *s, uint64_t seed);

#endif
