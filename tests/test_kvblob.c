// test_kvblob.c: KV state export/import for the prefix cache. Logits after importing a prefix equal,
// bit for bit, the logits of a session that prefilled that prefix itself (DSA and GQA fixtures);
// corrupt, truncated and foreign blobs are rejected with the right status and leave the session unchanged.
// The same with the FP8 latent cache (kv_fp8): its blobs carry the 656-style rows (smaller by exactly the row
// size difference), and a blob of one latent layout is refused by a session of the other.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsa.h"
#include "model.h"
#include "session.h"
#include "test_util.h"

static int32_t *ids_of(const char *dir, int *n)
{
    char p[1100];
    snprintf(p, sizeof p, "%s/ids.txt", dir);
    char *txt = sd_test_read_file(p, NULL);
    if (!txt)
        return NULL;
    int32_t *ids = malloc(sizeof(int32_t) * 4096);
    int len = 0;
    char *s = txt, *e;
    for (long v; len < 4096 && (v = strtol(s, &e, 10), e != s); s = e)
        ids[len++] = (int32_t)v;
    free(txt);
    // GQA fixtures hold 48 ids: repeat them so a full block plus a suffix exists (no reference needed:
    // two sessions of ours are compared).
    for (int i = 0; len > 0 && len < 96; i++)
        ids[len++] = ids[i];
    *n = len;
    return ids;
}

static void check(const char *name, int kv_fp8, void **blob_out, size_t *len_out)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", sd_test_fixtures(), name);
    int n = 0;
    int32_t *ids = ids_of(dir, &n);
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    CHECK_MSG(ids && n > SD_KV_BLOCK, "fixture %s missing or too short", name);
    if (!ids || n <= SD_KV_BLOCK || sd_model_load(dir, &m, &err) != SD_OK) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        free(ids);
        return;
    }
    int V = m->cfg.vocab_size, P = SD_KV_BLOCK, S = n - P;
    struct sd_session_params sp = {.n_ctx = n, .max_batch = 16, .kv_fp8 = kv_fp8};
    struct sd_session *a = NULL, *b = NULL;
    CHECK(sd_session_new(m, &sp, &a, &err) == SD_OK);
    CHECK(sd_session_new(m, &sp, &b, &err) == SD_OK);
    float *la = malloc(sizeof(float) * (size_t)S * V), *lb = malloc(sizeof(float) * (size_t)S * V);
    void *blob = NULL;
    size_t len = 0;
    CHECK(sd_session_eval(a, ids, P, NULL, 0, &err) == SD_OK);
    CHECK(sd_session_export(a, 0, 1, &blob, &len, &err) == SD_OK);
    free(blob);
    CHECK(sd_session_export(a, 0, 2, &blob, &len, &err) == SD_ERR_ARG); // block 1 not complete
    CHECK(blob == NULL);
    CHECK(sd_session_export(a, 0, 1, &blob, &len, &err) == SD_OK);
    CHECK(sd_session_eval(a, ids + P, S, la, 1, &err) == SD_OK);

    // corrupt payload byte: checksum error, session untouched
    unsigned char *bad = malloc(len);
    memcpy(bad, blob, len);
    bad[len / 2] ^= 0x40;
    CHECK(sd_session_import(b, bad, len, &err) == SD_ERR_CHECKSUM);
    CHECK(sd_session_pos(b) == 0);
    CHECK(sd_session_import(b, blob, len - 1, &err) == SD_ERR_FORMAT);
    CHECK(sd_session_import(b, blob, 10, &err) == SD_ERR_FORMAT);
    memcpy(bad, blob, len);
    bad[0] = 'X';
    CHECK(sd_session_import(b, bad, len, &err) == SD_ERR_FORMAT);
    CHECK(sd_session_pos(b) == 0);
    free(bad);

    CHECK_MSG(sd_session_import(b, blob, len, &err) == SD_OK, "%s", err.msg);
    CHECK(sd_session_pos(b) == P);
    CHECK(sd_session_import(b, blob, len, &err) == SD_ERR_ARG); // not at the blob's start
    CHECK(sd_session_eval(b, ids + P, S, lb, 1, &err) == SD_OK);
    CHECK_MSG(memcmp(la, lb, sizeof(float) * (size_t)S * V) == 0, "%s: logits after import differ from prefill",
              name);
    printf("%s%s: %zu-byte blob for %d tokens; logits after import bit-identical: %s\n", name, kv_fp8 ? " kv_fp8" : "",
           len, P, memcmp(la, lb, sizeof(float) * (size_t)S * V) == 0 ? "yes" : "NO");
    if (blob_out) {
        *blob_out = blob;
        *len_out = len;
    } else {
        free(blob);
    }
    free(la);
    free(lb);
    free(ids);
    sd_session_free(a);
    sd_session_free(b);
    sd_model_free(m);
}

int main(void)
{
    void *llama_blob = NULL;
    size_t llama_len = 0;
    void *blob32 = NULL, *blob8 = NULL;
    size_t len32 = 0, len8 = 0;
    check("dsv32", 0, &blob32, &len32);
    check("dsv32", 1, &blob8, &len8);
    check("qwen3", 0, NULL, NULL);
    check("llama", 0, &llama_blob, &llama_len);
    // A blob of another model is refused.
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/dsv32", sd_test_fixtures());
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (llama_blob && sd_model_load(dir, &m, &err) == SD_OK) {
        struct sd_session_params sp = {.n_ctx = 96};
        struct sd_session *s = NULL;
        CHECK(sd_session_new(m, &sp, &s, &err) == SD_OK);
        CHECK(sd_session_import(s, llama_blob, llama_len, &err) == SD_ERR_FORMAT);
        CHECK(sd_session_pos(s) == 0);
        sd_session_free(s);
        // FP8 latent rows against f32 ones: sizes differ by the row sizes exactly, and each is refused by a
        // session of the other layout.
        int dl = m->cfg.kv_lora_rank + m->cfg.qk_rope_head_dim;
        size_t diff = (size_t)m->cfg.n_layers * SD_KV_BLOCK *
                      ((size_t)dl * 4 - sd_mla_kv_fp8_row_bytes(m->cfg.kv_lora_rank, m->cfg.qk_rope_head_dim));
        CHECK_MSG(blob32 && blob8 && len32 - len8 == diff, "kv_fp8 blob %zu bytes, f32 %zu, want %zu less", len8, len32,
                  diff);
        for (int k = 0; k < 2 && blob32 && blob8; k++) {
            struct sd_session_params sp8 = {.n_ctx = 96, .kv_fp8 = k};
            CHECK(sd_session_new(m, &sp8, &s, &err) == SD_OK);
            CHECK_MSG(sd_session_import(s, k ? blob32 : blob8, k ? len32 : len8, &err) == SD_ERR_FORMAT,
                      "a %s blob imported into a %s session", k ? "f32" : "kv_fp8", k ? "kv_fp8" : "f32");
            CHECK(sd_session_pos(s) == 0);
            sd_session_free(s);
        }
        sd_model_free(m);
    }
    free(llama_blob);
    free(blob32);
    free(blob8);
    return sd_test_finish("test_kvblob");
}
