// sampler_ref.c: the plain sampler of sampler_ref.h.
#include "sampler_ref.h"

#include <math.h>
#include <stdlib.h>

static int cand_cmp(const void *a, const void *b)
{
    const struct sd_sampler_ref_cand *x = a, *y = b;
    return x->l > y->l ? -1 : x->l < y->l ? 1 : x->id < y->id ? -1 : x->id > y->id;
}

int32_t sd_sampler_ref(const float *logits, int n, const struct sd_sampler_params *p, double u,
                       struct sd_sampler_ref_cand *c)
{
    if (!(p->temperature > 0.0f)) {
        int best = 0;
        for (int i = 1; i < n; i++)
            if (logits[i] > logits[best])
                best = i;
        return best;
    }
    const float inv_t = 1.0f / p->temperature;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] * inv_t > -INFINITY)
            c[m++] = (struct sd_sampler_ref_cand){logits[i] * inv_t, i};
    if ((p->top_k > 0 && p->top_k < m) || p->top_p < 1.0f)
        qsort(c, (size_t)m, sizeof *c, cand_cmp);
    if (p->top_k > 0 && p->top_k < m)
        m = p->top_k;
    float mx = -INFINITY;
    for (int i = 0; i < m; i++)
        mx = c[i].l > mx ? c[i].l : mx;
    double sum = 0;
    for (int i = 0; i < m; i++) {
        c[i].l = expf(c[i].l - mx);
        sum += c[i].l;
    }
    if (p->top_p < 1.0f) {
        double cum = 0, want = (double)p->top_p * sum;
        int keep = m;
        for (int i = 0; i < m; i++) {
            cum += c[i].l;
            if (cum >= want) {
                keep = i + 1;
                break;
            }
        }
        m = keep;
        sum = cum < want ? sum : cum;
    }
    double r = u * sum, acc = 0;
    for (int i = 0; i < m; i++) {
        acc += c[i].l;
        if (r < acc)
            return c[i].id;
    }
    return c[m - 1].id;
}
