// test_util_engine.h: helpers for the C tests that link the full engine (engine_dep): logits of a token
// sequence through a fresh session. Generic assertion helpers stay in test_util.h.
#ifndef SD_TEST_UTIL_ENGINE_H
#define SD_TEST_UTIL_ENGINE_H

#include <stdint.h>

#include "model.h"
#include "session.h"

// Logits [n x vocab] of ids[0..n) through a new session of model m with parameters p (n_ctx 0 here
// means n; max_batch 0 means 256), fed max_batch tokens per sd_session_eval call (max_batch 1: token by
// token). malloc'd, caller frees; NULL (message on stderr) when the session or an eval fails.
float *sd_test_logits(const struct sd_model *m, const int32_t *ids, int n, const struct sd_session_params *p);

// The token ids of the first max_bytes of a text file (cut at a line end), encoded with the tokenizer.json of
// model directory dir (BOS first). malloc'd, caller frees; NULL (message on stderr) when a file is unreadable.
int32_t *sd_test_text_ids(const char *dir, const char *text_path, size_t max_bytes, int *n);
// The model of dir and the ids of its text as sd_test_text_ids gives them: the model (caller frees it with
// sd_model_free, and *ids with free), or NULL (message on stderr, *ids NULL) when either cannot be read.
struct sd_model *sd_test_model_text(const char *dir, const char *text_path, size_t max_bytes, int32_t **ids, int *n);

#endif
