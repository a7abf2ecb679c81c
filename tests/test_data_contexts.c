// test_data_contexts.c: packing spans into contexts: every context within N tokens, breaks at span
// boundaries, oversized spans split, offsets mapping positions back to pages/lines, and determinism.
// Uses a byte-level stand-in tokenizer always, and the real Qwen3 tokenizer when built with the engine
// and the corpus is present.
#include "contexts.h"
#include "test_data_common.h"
#ifdef SD_HAVE_TOKENIZER
#include "tokenizer.h"
#endif

static enum sd_status byte_tok(void *user, const char *text, size_t len, int32_t **ids, size_t *n, struct sd_err *err)
{
    (void)user;
    *ids = malloc((len ? len : 1) * sizeof **ids);
    if (!*ids)
        return sd_err_set(err, SD_ERR_NOMEM, "oom");
    for (size_t i = 0; i < len; i++)
        (*ids)[i] = (unsigned char)text[i];
    *n = len;
    return SD_OK;
}

static void check_contexts(const struct sd_contexts *c, size_t max)
{
    for (size_t i = 0; i < c->n; i++) {
        const struct sd_context *x = &c->items[i];
        CHECK_MSG(x->n_tokens <= max, "context %zu has %zu tokens > %zu", i, x->n_tokens, max);
        CHECK(x->n_spans > 0 && x->spans[0].tok_offset == 0);
        for (size_t k = 0; k + 1 < x->n_spans; k++)
            CHECK(x->spans[k].tok_offset + x->spans[k].n_tokens == x->spans[k + 1].tok_offset);
        const struct sd_ctx_span *last = &x->spans[x->n_spans - 1];
        CHECK(last->tok_offset + last->n_tokens == x->n_tokens);
        if (x->n_tokens)
            CHECK(sd_context_locate(x, x->n_tokens - 1) == last);
        CHECK(sd_context_locate(x, x->n_tokens) == NULL);
    }
}

static int same(const struct sd_contexts *a, const struct sd_contexts *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->items[i].n_tokens != b->items[i].n_tokens ||
            memcmp(a->items[i].tokens, b->items[i].tokens, a->items[i].n_tokens * sizeof(int32_t)))
            return 0;
    return 1;
}

int main(void)
{
    char root[600], p[800];
    snprintf(root, sizeof root, "%s/ctx", tmp_dir());
    mkdir(root, 0755);
    snprintf(p, sizeof p, "%s/a.c", root);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 400; i++)
        fprintf(f, "int function_%d(void) { return %d; }\n%s", i, i, i % 7 == 6 ? "\n" : "");
    fclose(f);
    snprintf(p, sizeof p, "%s/long_line.txt", root);
    f = fopen(p, "w");
    for (int i = 0; i < 3000; i++)
        fputs("word ", f); // one 15000-byte line: larger than N alone
    fputs("\n", f);
    fclose(f);
    struct sd_store *s = open_db("ctx.db");
    struct sd_ingest_stats st;
    struct sd_ingest_opts o = {0};
    CHECK(ingest1(s, root, &o, &st) == SD_OK && st.added == 2);

    struct sd_contexts_opts co = {.max_tokens = 2048, .tokenize = byte_tok};
    struct sd_contexts *c1 = NULL, *c2 = NULL;
    struct sd_err err;
    CHECK(sd_contexts_build(s, NULL, 0, &co, &c1, &err) == SD_OK);
    CHECK(sd_contexts_build(s, NULL, 0, &co, &c2, &err) == SD_OK);
    if (c1 && c2) {
        CHECK(c1->n >= 8);
        check_contexts(c1, 2048);
        CHECK(same(c1, c2));
        // the long line is split into parts 0, 1, ... across contexts
        int max_part = 0;
        for (size_t i = 0; i < c1->n; i++)
            for (size_t k = 0; k < c1->items[i].n_spans; k++)
                if (c1->items[i].spans[k].part > max_part)
                    max_part = c1->items[i].spans[k].part;
        CHECK(max_part >= 6);
        // a token position maps back to its line range: find "function_123"
        int found = 0;
        for (size_t i = 0; i < c1->n && !found; i++) {
            const struct sd_context *x = &c1->items[i];
            for (size_t t = 0; t + 12 < x->n_tokens && !found; t++) {
                char buf[13];
                for (int k = 0; k < 12; k++)
                    buf[k] = (char)x->tokens[t + k];
                buf[12] = 0;
                if (!strcmp(buf, "function_123")) {
                    const struct sd_ctx_span *sp = sd_context_locate(x, t);
                    found = 1;
                    // function_k is on line k + k/7 + 1 (a blank line after every 7th)
                    int line = 123 + 123 / 7 + 1;
                    CHECK_MSG(sp && sp->line_start <= line && sp->line_end >= line, "line %d not in %d-%d", line,
                              sp ? sp->line_start : -1, sp ? sp->line_end : -1);
                }
            }
        }
        CHECK(found);
    }
    sd_contexts_free(c1);
    sd_contexts_free(c2);
    co.max_tokens = 32;
    CHECK(sd_contexts_build(s, NULL, 0, &co, &c1, &err) == SD_ERR_RANGE);

#ifdef SD_HAVE_TOKENIZER
    const char *corpus = sd_test_corpus();
    if (corpus) {
        char tj[700], pdf[700];
        snprintf(tj, sizeof tj, "%s/vocab/hf/qwen3/tokenizer.json", corpus);
        snprintf(pdf, sizeof pdf, "%s/pdf/deepseek-v3-tech-report.pdf", corpus);
        struct sd_tokenizer *tok = NULL;
        if (sd_tokenizer_load(tj, &tok, &err) == SD_OK) {
            CHECK(ingest1(s, pdf, &o, &st) == SD_OK);
            int64_t id = query_int(s, "SELECT id FROM documents WHERE kind = 'pdf'");
            struct sd_contexts_opts ro = {.max_tokens = 16384, .tokenize = (sd_tokenize_fn)0, .tok_user = tok};
            extern enum sd_status sd_test_qwen_tok(void *, const char *, size_t, int32_t **, size_t *, struct sd_err *);
            ro.tokenize = sd_test_qwen_tok;
            CHECK(sd_contexts_build(s, &id, 1, &ro, &c1, &err) == SD_OK);
            CHECK(sd_contexts_build(s, &id, 1, &ro, &c2, &err) == SD_OK);
            if (c1 && c2) {
                printf("qwen3: %zu contexts, %zu tokens for the DeepSeek-V3 report\n", c1->n, c1->total_tokens);
                CHECK(c1->n >= 2 && c1->total_tokens > 30000);
                check_contexts(c1, 16384);
                CHECK(same(c1, c2));
            }
            sd_contexts_free(c1);
            sd_contexts_free(c2);
            sd_tokenizer_free(tok);
        } else
            printf("tokenizer not usable (%s): real-tokenizer part skipped\n", err.msg);
    }
#endif
    sd_store_close(s);
    tmp_cleanup();
    return sd_test_finish("data_contexts");
}

#ifdef SD_HAVE_TOKENIZER
enum sd_status sd_test_qwen_tok(void *user, const char *text, size_t len, int32_t **ids, size_t *n, struct sd_err *err)
{
    return sd_tokenizer_encode(user, text, len, 0, ids, n, err);
}
#endif
