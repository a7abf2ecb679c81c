// test_util_engine.c: engine helpers shared by the C tests (see test_util_engine.h).
#include "test_util_engine.h"

#include <stdio.h>
#include <stdlib.h>

float *sd_test_logits(const struct sd_model *m, const int32_t *ids, int n, const struct sd_session_params *p)
{
    struct sd_session_params sp = *p;
    if (sp.n_ctx == 0)
        sp.n_ctx = n;
    if (sp.max_batch == 0)
        sp.max_batch = 256;
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    if (sd_session_new(m, &sp, &s, &err) != SD_OK) {
        fprintf(stderr, "session: %s\n", err.msg);
        return NULL;
    }
    size_t V = (size_t)m->cfg.vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    for (int done = 0; lg && done < n;) {
        int step = n - done < sp.max_batch ? n - done : sp.max_batch;
        if (sd_session_eval(s, ids + done, step, lg + (size_t)done * V, 1, &err) != SD_OK) {
            fprintf(stderr, "eval: %s\n", err.msg);
            free(lg);
            lg = NULL;
        }
        done += step;
    }
    sd_session_free(s);
    return lg;
}
