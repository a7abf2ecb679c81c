// sampler.c: next-token sampling (see sampler.h). Penalty -> temperature -> top-k (partial
// selection) -> softmax -> top-p over the sorted candidates -> draw with xoshiro256** seeded by
// splitmix64. Candidate and stamp arrays are sized to the vocabulary once, in sd_sampler_new().
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

struct cand {
    float logit;
    int32_t id;
};

struct sd_sampler {
    struct sd_sampler_params p;
    int32_t n_vocab;
    struct cand *cand; // n_vocab
    uint32_t *stamp;   // n_vocab, for de-duplicating history in the penalty
    int32_t *stamp_ids; // n_vocab: the penalized ids of one call
    uint32_t gen;
    uint64_t rng[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

// Uniform double in [0, 1).
static double uniform01(uint64_t s[4])
{
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

struct sd_sampler_params sd_sampler_params_default(void)
{
    return (struct sd_sampler_params){
        .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .repetition_penalty = 1.0f, .repeat_last_n = 64, .seed = 42};
}

void sd_sampler_reseed(struct sd_sampler *s, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

enum sd_status sd_sampler_new(const struct sd_sampler_params *params, int32_t n_vocab, struct sd_sampler **out,
                              struct sd_err *err)
{
    if (!params || !out)
        return sd_err_set(err, SD_ERR_ARG, "sd_sampler_new: params and out are required");
    *out = NULL;
    if (n_vocab <= 0)
        return sd_err_set(err, SD_ERR_ARG, "sampler: n_vocab must be positive (got %d)", n_vocab);
    if (isnan(params->temperature))
        return sd_err_set(err, SD_ERR_ARG, "sampler: temperature is NaN");
    if (!(params->top_p > 0.0f && params->top_p <= 1.0f))
        return sd_err_set(err, SD_ERR_ARG, "sampler: top_p must be in (0, 1] (got %g)", (double)params->top_p);
    if (!(params->repetition_penalty > 0.0f) || isinf(params->repetition_penalty))
        return sd_err_set(err, SD_ERR_ARG,
                          "sampler: repetition_penalty must be a positive number (got %g); use 1 for none",
                          (double)params->repetition_penalty);
    struct sd_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return sd_err_set(err, SD_ERR_NOMEM, "sampler: out of memory");
    s->p = *params;
    s->n_vocab = n_vocab;
    s->cand = malloc(sizeof *s->cand * (size_t)n_vocab);
    s->stamp = calloc((size_t)n_vocab, sizeof *s->stamp);
    s->stamp_ids = malloc(sizeof *s->stamp_ids * (size_t)n_vocab);
    if (!s->cand || !s->stamp || !s->stamp_ids) {
        sd_sampler_free(s);
        return sd_err_set(err, SD_ERR_NOMEM, "sampler: out of memory for %d candidates", n_vocab);
    }
    sd_sampler_reseed(s, params->seed);
    *out = s;
    return SD_OK;
}

void sd_sampler_free(struct sd_sampler *s)
{
    if (!s)
        return;
    free(s->cand);
    free(s->stamp);
    free(s->stamp_ids);
    free(s);
}

// Candidate order: higher logit first, lower id on ties.
static inline int before(const struct cand *a, const struct cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void swap(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

// Partition so that c[0..k) are the k best (unordered); quickselect with median-of-three.
static void select_top(struct cand *c, size_t n, size_t k)
{
    size_t lo = 0, hi = n; // work on [lo, hi)
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (before(&c[hi - 1], &c[lo]))
            swap(&c[hi - 1], &c[lo]);
        if (before(&c[mid], &c[lo]))
            swap(&c[mid], &c[lo]);
        if (before(&c[hi - 1], &c[mid]))
            swap(&c[hi - 1], &c[mid]);
        struct cand pivot = c[mid];
        swap(&c[mid], &c[hi - 1]);
        size_t store = lo;
        for (size_t i = lo; i + 1 < hi; i++)
            if (before(&c[i], &pivot))
                swap(&c[i], &c[store++]);
        swap(&c[store], &c[hi - 1]);
        if (store == k || store + 1 == k)
            return;
        if (store > k)
            hi = store;
        else
            lo = store + 1;
    }
}

// Restore the heap below slot i of h[0..n): every parent weaker than (or as weak as) its children, the root the
// weakest of all (the order of before()).
static void sift_weakest(struct cand *h, size_t n, size_t i)
{
    for (;;) {
        size_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && before(&h[w], &h[l]))
            w = l;
        if (r < n && before(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        swap(&h[i], &h[w]);
        i = w;
    }
}

static int cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return before(x, y) ? -1 : before(y, x) ? 1 : 0;
}

const struct sd_sampler_params *sd_sampler_get_params(const struct sd_sampler *s)
{
    return &s->p;
}

int32_t sd_sampler_n_vocab(const struct sd_sampler *s)
{
    return s->n_vocab;
}

double sd_sampler_draw(struct sd_sampler *s)
{
    return uniform01(s->rng);
}

size_t sd_sampler_penalty_ids(struct sd_sampler *s, const int32_t *history, size_t n_history, int32_t *out)
{
    const int32_t n = s->n_vocab;
    size_t k = 0;
    if (s->p.repetition_penalty == 1.0f || s->p.repeat_last_n == 0 || !history)
        return 0;
    size_t from = 0;
    if (s->p.repeat_last_n > 0 && n_history > (size_t)s->p.repeat_last_n)
        from = n_history - (size_t)s->p.repeat_last_n;
    if (++s->gen == 0) { // wrapped: clear stamps
        for (int32_t i = 0; i < n; i++)
            s->stamp[i] = 0;
        s->gen = 1;
    }
    for (size_t i = from; i < n_history; i++) {
        int32_t t = history[i];
        if (t < 0 || t >= n || s->stamp[t] == s->gen)
            continue;
        s->stamp[t] = s->gen;
        out[k++] = t;
    }
    return k;
}

int32_t sd_sampler_sample(struct sd_sampler *s, float *logits, const int32_t *history, size_t n_history)
{
    if (!s || !logits)
        return -1;
    const int32_t n = s->n_vocab;

    // repetition penalty, once per distinct token (as HF's gather/scatter does)
    int32_t *pen = s->stamp_ids;
    size_t np = sd_sampler_penalty_ids(s, history, n_history, pen);
    for (size_t i = 0; i < np; i++) {
        float l = logits[pen[i]];
        logits[pen[i]] = l > 0.0f ? l / s->p.repetition_penalty : l * s->p.repetition_penalty;
    }

    // greedy
    int32_t best = -1;
    for (int32_t i = 0; i < n; i++) {
        if (isnan(logits[i]))
            return -1;
        if (best < 0 ? logits[i] > -INFINITY : logits[i] > logits[best])
            best = i;
    }
    if (best < 0 || !(s->p.temperature > 0.0f))
        return best;

    // temperature
    const float inv_t = 1.0f / s->p.temperature;
    size_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        logits[i] *= inv_t;
        if (logits[i] > -INFINITY)
            s->cand[m++] = (struct cand){logits[i], i};
    }

    // top-k, the kept ones in logit order (the draw's order without top-p: see sampler.h). One pass with a heap of
    // the k best (its root the weakest): most candidates are rejected by one comparison with the root.
    if (s->p.top_k > 0 && (size_t)s->p.top_k < m) {
        size_t k = (size_t)s->p.top_k;
        for (size_t i = k / 2; i-- > 0;)
            sift_weakest(s->cand, k, i);
        for (size_t i = k; i < m; i++)
            if (before(&s->cand[i], &s->cand[0])) {
                s->cand[0] = s->cand[i];
                sift_weakest(s->cand, k, 0);
            }
        m = k;
        qsort(s->cand, m, sizeof *s->cand, cmp_cand);
    }

    // softmax over the kept candidates (probabilities kept in .logit from here on)
    const float mx = logits[best] > -INFINITY ? logits[best] : 0.0f;
    double sum = 0.0;
    for (size_t i = 0; i < m; i++) {
        float e = expf(s->cand[i].logit - mx);
        s->cand[i].logit = e;
        sum += e;
    }

    // top-p: smallest prefix of the sorted candidates whose mass reaches top_p
    if (s->p.top_p < 1.0f) {
        // Tokens below (1 - top_p) / (m - 1) of the mass are never needed as long as the most likely token
        // is kept: at most m - 1 of them hold less than 1 - top_p together, so the nucleus lies among the
        // others. Dropping them first keeps the sort short.
        if (m > 1) {
            const double cut = (1.0 - (double)s->p.top_p) / (double)(m - 1) * sum;
            size_t w = 0;
            for (size_t i = 0; i < m; i++)
                if (s->cand[i].logit >= cut || s->cand[i].id == best)
                    s->cand[w++] = s->cand[i];
            m = w;
        }
        // The nucleus is a prefix of the candidates sorted by probability: sort growing prefixes (the k most
        // probable ones selected first, then sorted) until one holds the mass. Walking a sorted prefix is walking
        // the whole sorted list, so the result is the same as one full sort's, which a flat distribution over a
        // large vocabulary would pay for every token (5.6 ms for 129K logits before).
        double cum = 0.0, want = (double)s->p.top_p * sum;
        size_t keep = m, done = 0, k = m < 256 ? m : 256;
        for (;;) {
            if (k < m)
                select_top(s->cand + done, m - done, k - done);
            qsort(s->cand + done, k - done, sizeof *s->cand, cmp_cand);
            size_t i = done;
            for (; i < k; i++) {
                cum += s->cand[i].logit;
                if (cum >= want) {
                    keep = i + 1;
                    break;
                }
            }
            if (i < k || k == m)
                break;
            done = k;
            k = k < m / 4 ? 4 * k : m;
        }
        m = keep;
        sum = cum < want ? sum : cum;
    }

    double r = uniform01(s->rng) * sum, acc = 0.0;
    for (size_t i = 0; i < m; i++) {
        acc += s->cand[i].logit;
        if (r < acc)
            return s->cand[i].id;
    }
    return s->cand[m - 1].id; // rounding: r landed at the very end
}
