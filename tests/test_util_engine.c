// test_util_engine.c: engine helpers shared by the C tests (see test_util_engine.h).
#include "test_util_engine.h"

#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"
#include "tokenizer.h"

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

int32_t *sd_test_text_ids(const char *dir, const char *text_path, size_t max_bytes, int *n)
{
    size_t len = 0, n_ids = 0;
    char *text = sd_test_read_file(text_path, &len);
    struct sd_tokenizer *tok = NULL;
    struct sd_err err = {0};
    int32_t *ids = NULL;
    *n = 0;
    if (text && len > max_bytes) { // whole lines (and whole UTF-8 sequences)
        len = max_bytes;
        while (len > 0 && text[len - 1] != '\n')
            len--;
    }
    char tj[1200];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    if (!text || sd_tokenizer_load(tj, &tok, &err) != SD_OK ||
        sd_tokenizer_encode(tok, text, len, 1, &ids, &n_ids, &err) != SD_OK) {
        fprintf(stderr, "%s: %s\n", text ? tj : text_path, text ? err.msg : "unreadable");
        ids = NULL;
    }
    free(text);
    sd_tokenizer_free(tok);
    *n = ids ? (int)n_ids : 0;
    return ids;
}

struct sd_model *sd_test_model_text(const char *dir, const char *text_path, size_t max_bytes, int32_t **ids, int *n)
{
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    *ids = sd_test_text_ids(dir, text_path, max_bytes, n);
    if (*ids && sd_model_load(dir, &m, &err) != SD_OK) {
        fprintf(stderr, "%s: %s\n", dir, err.msg);
        m = NULL;
    }
    if (!m) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return m;
}
