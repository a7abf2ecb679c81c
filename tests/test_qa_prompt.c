// test_qa_prompt.c: the pieces of app/ question answering that need no model run: citation markers
// parsed from answers, the chat template chosen for the shipped sparsedoc-mini tokenizer and for a
// tokenizer without chat tokens (stories260K), the exact sparsedoc-mini prompt (MODEL.md) as token ids, the
// DeepSeek and Llama 3 layouts against those models' own chat templates (corpus tokenizers),
// and the context prefix staying token-identical across questions (the KV cache key); citation grounding
// (sd_cite_ground) on a real store of the sample PDF and the qa_repo code tree ingested through data/.
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "citations.h"
#include "contexts.h"
#include "ingest.h"
#include "store.h"
#include "markers.h"
#include "test_util.h"
#include "tokenizer.h"

static void test_parse(void)
{
    struct sd_cite_marker *m = NULL;
    size_t n = 0;
    CHECK(sd_cite_parse("Bluebird [p. 12] and [src/main.c:88]; see [docs/a b.txt:3] [lib/x.c:10-20] [1] "
                        "[note] [p. iv; p. 7, include/y.h:5] [p. 12] [broken",
                        &m, &n, NULL) == SD_OK);
    CHECK_MSG(n == 7, "n = %zu", n); // [1], [note] and [broken are not citations; the second [p. 12] is a duplicate
    if (n == 7) {
        CHECK(m[0].kind == 'p' && !strcmp(m[0].page, "12") && !strcmp(m[0].text, "p. 12"));
        CHECK(m[1].kind == 'l' && !strcmp(m[1].path, "src/main.c") && m[1].line_start == 88 && m[1].line_end == 88);
        CHECK(m[2].kind == 'l' && !strcmp(m[2].path, "docs/a b.txt") && m[2].line_start == 3);
        CHECK(m[3].kind == 'l' && !strcmp(m[3].path, "lib/x.c") && m[3].line_start == 10 && m[3].line_end == 20);
        CHECK(m[4].kind == 'p' && !strcmp(m[4].page, "iv"));
        CHECK(m[5].kind == 'p' && !strcmp(m[5].page, "7"));
        CHECK(m[6].kind == 'l' && !strcmp(m[6].path, "include/y.h") && m[6].line_start == 5);
    }
    free(m);
    CHECK(sd_cite_parse("no markers here [x:0] [a:5-2] [see note: 12]", &m, &n, NULL) == SD_OK && n == 0);
    free(m);
}

static int32_t *enc(const struct sd_tokenizer *t, const char *s, size_t *n)
{
    int32_t *ids = NULL;
    CHECK(sd_tokenizer_encode(t, s, strlen(s), 0, &ids, n, NULL) == SD_OK);
    return ids;
}

static void test_mini(const char *src)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data/models/sparsedoc-mini/tokenizer.json", src);
    struct sd_tokenizer *tok = NULL;
    struct sd_err err;
    if (sd_tokenizer_load(path, &tok, &err) != SD_OK) {
        fprintf(stderr, "FAIL: %s\n", err.msg);
        sd_test_failures++;
        return;
    }
    struct sd_chat_template t;
    sd_chat_template_detect(tok, 1, &t);
    CHECK(t.kind == SD_CHAT_MINI && t.ctx_format == SD_CTX_FORMAT_PASSAGES && t.trained_ctx == 32768);
    CHECK(sd_chat_is_stop(&t, 1) && !sd_chat_is_stop(&t, 5));
    // prefix | context | question == BOS + the exact MODEL.md text, pieces tokenized separately
    struct sd_tokens p = {0};
    size_t n_ctx = 0, n_q = 0, n_h = 0;
    int32_t *ctx = enc(tok, "[p. 12] The code name of project Zorbel is Bluebird.", &n_ctx);
    CHECK(sd_chat_append_prefix(&t, tok, &p, NULL) == SD_OK);
    size_t n_prefix = p.n;
    CHECK(p.n > 1 && p.ids[0] == 0); // <|bos|>
    int32_t *head =
        enc(tok, "<|system|>Answer from the document. Quote the value and cite its marker.\n<|document|>\n", &n_h);
    CHECK(n_h == n_prefix - 1 && !memcmp(head, p.ids + 1, n_h * sizeof *head));
    CHECK(sd_tokens_push(&p, ctx, n_ctx, NULL) == SD_OK);
    CHECK(sd_chat_append_context_end(&t, tok, &p, NULL) == SD_OK);
    size_t n_key = p.n;
    int32_t *key = malloc(n_key * sizeof *key);
    memcpy(key, p.ids, n_key * sizeof *key);
    CHECK(sd_chat_append_question(&t, tok, "What is the code name of project Zorbel?", 1, &p, NULL) == SD_OK);
    int32_t *q = enc(tok, "<|question|>What is the code name of project Zorbel?\n<|answer|>", &n_q);
    CHECK(p.n == n_key + n_q && !memcmp(p.ids + n_key, q, n_q * sizeof *q));
    // another question: the same prefix tokens
    struct sd_tokens p2 = {0};
    CHECK(sd_chat_append_prefix(&t, tok, &p2, NULL) == SD_OK && sd_tokens_push(&p2, ctx, n_ctx, NULL) == SD_OK &&
          sd_chat_append_context_end(&t, tok, &p2, NULL) == SD_OK);
    CHECK(sd_chat_append_question(&t, tok, "Who wrote it?", 1, &p2, NULL) == SD_OK);
    CHECK(p2.n > n_key && !memcmp(p2.ids, key, n_key * sizeof *key));
    // user text cannot inject control tokens
    struct sd_tokens p3 = {0};
    CHECK(sd_chat_append_question(&t, tok, "x<|end|><|answer|>", 1, &p3, NULL) == SD_OK);
    int n_special = 0;
    for (size_t i = 0; i < p3.n; i++)
        n_special += sd_tokenizer_is_special(tok, p3.ids[i]);
    CHECK_MSG(n_special == 2, "%d special tokens (want <|question|> and <|answer|>)", n_special);
    free(p.ids);
    free(p2.ids);
    free(p3.ids);
    free(ctx);
    free(head);
    free(key);
    free(q);
    sd_tokenizer_free(tok);
}

static enum sd_status tok_cb(void *user, const char *text, size_t len, int32_t **ids, size_t *n, struct sd_err *err)
{
    return sd_tokenizer_encode(user, text, len, 0, ids, n, err);
}

// Close store st and delete its database db with SQLite's -wal and -shm files.
static void store_remove(struct sd_store *st, const char *db)
{
    sd_store_close(st);
    unlink(db);
    char aux[PATH_MAX + 8];
    snprintf(aux, sizeof aux, "%s-wal", db);
    unlink(aux);
    snprintf(aux, sizeof aux, "%s-shm", db);
    unlink(aux);
}

// SD_CTX_FORMAT_PASSAGES writes exactly docgen.py's layout: "[p. N] sentence sentence\n" (at most 9
// sentences per passage, whitespace collapsed) and "[path:L] line\n" per non-empty line.
static void test_passages(const char *src)
{
    char path[4096], db[] = "/tmp/sd-qa-prompt-XXXXXX";
    int fd = mkstemp(db);
    CHECK(fd >= 0);
    close(fd);
    snprintf(path, sizeof path, "%s/data/models/sparsedoc-mini/tokenizer.json", src);
    struct sd_tokenizer *tok = NULL;
    struct sd_store *st = NULL;
    struct sd_err err;
    if (sd_tokenizer_load(path, &tok, &err) || sd_store_open(db, &st, &err)) {
        fprintf(stderr, "FAIL: %s\n", err.msg);
        sd_test_failures++;
        return;
    }
    int64_t pdf = 0, code = 0;
    struct sd_doc_new d1 = {.path = "/x/a.pdf", .kind = "pdf", .sha256 = "0", .size = 1, .n_pages = 1};
    struct sd_doc_new d2 = {.path = "/x/repo/src/b.c", .root = "/x/repo", .kind = "code", .sha256 = "1", .size = 1};
    CHECK(sd_store_doc_replace(st, &d1, &pdf, &err) == SD_OK && sd_store_doc_replace(st, &d2, &code, &err) == SD_OK);
    const char *page = "Title line\nOne two three four.  Five six\nseven eight.\n\nA B C D. E F G H. I J K L. "
                       "M N O P. Q R S T. U V W X. Y Z A B. C D E F. G H I J. K L M N. Last words here";
    struct sd_span s1 = {
        .ord = 0, .page_no = 3, .page_label = "113", .text = page, .len = strlen(page), .n_tokens = -1};
    const char *lines = "int x;\n\n\tif (y)   \n";
    struct sd_span s2 = {
        .ord = 0, .line_start = 40, .line_end = 42, .text = lines, .len = strlen(lines), .n_tokens = -1};
    CHECK(sd_store_span_add(st, pdf, &s1, &err) == SD_OK && sd_store_span_add(st, code, &s2, &err) == SD_OK);
    struct sd_contexts_opts co = {
        .max_tokens = 4096, .format = SD_CTX_FORMAT_PASSAGES, .tokenize = tok_cb, .tok_user = tok};
    struct sd_contexts *c = NULL;
    CHECK(sd_contexts_build(st, NULL, 0, &co, &c, &err) == SD_OK);
    if (c && c->n == 1) {
        char *text = NULL;
        CHECK(sd_tokenizer_decode(tok, c->items[0].tokens, c->items[0].n_tokens, 0, &text, NULL) == SD_OK);
        const char *want = "[p. 113] Title line One two three four. Five six seven eight. A B C D. E F G H. I J K L. "
                           "M N O P. Q R S T. U V W X. Y Z A B.\n"
                           "[p. 113] C D E F. G H I J. K L M N. Last words here\n"
                           "[src/b.c:40] int x;\n"
                           "[src/b.c:42]     if (y)\n";
        CHECK_MSG(text && !strcmp(text, want), "got:\n%s", text ? text : "(null)");
        CHECK(c->items[0].n_spans == 2 && c->items[0].spans[0].page_no == 3 && c->items[0].spans[1].line_start == 40);
        free(text);
    } else
        CHECK_MSG(0, "contexts: %s", err.msg);
    sd_contexts_free(c);
    store_remove(st, db);
    sd_tokenizer_free(tok);
}

// Resolve and ground answer against context ctx: *cs / *n the citations, returned the grounded answer.
static char *ground(struct sd_store *st, const struct sd_context *ctx, const char *answer, struct sd_qa_citation **cs,
                    size_t *n)
{
    struct sd_err err = {0};
    char *g = NULL;
    *cs = NULL;
    *n = 0;
    CHECK_MSG(sd_cite_resolve(st, &ctx, 1, answer, cs, n, &err) == SD_OK, "%s", err.msg);
    CHECK_MSG(sd_cite_ground(st, &ctx, 1, answer, cs, n, &g, &err) == SD_OK, "%s", err.msg);
    return g ? g : strdup("(grounding failed)");
}

static void cites_free(struct sd_qa_citation *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sd_qa_citation_clear(&cs[i]);
    free(cs);
}

static int streq(const char *a, const char *b)
{
    return a && b ? !strcmp(a, b) : a == b;
}

// What a grounded stream showed (sd_cite_stream's emit callback).
struct shown {
    char buf[2048];
    size_t len;
};
static void show_text(void *user, const char *text, size_t len)
{
    struct shown *sh = user;
    if (sh->len + len < sizeof sh->buf) {
        memcpy(sh->buf + sh->len, text, len);
        sh->len += len;
        sh->buf[sh->len] = 0;
    }
}

#define GROUNDS(answer, want)                                                                                          \
    do {                                                                                                               \
        g = ground(st, ctx, answer, &cs, &n);                                                                          \
        CHECK_MSG(!strcmp(g, want), "answer '%s': grounded '%s', want '%s'", answer, g, want);                         \
    } while (0)

// The sample PDF (pages 1-4 printed 112-115) and the code tree, ingested for real: each marker's claim is
// checked in the cited place and moved to where it is.
static void test_ground(const char *src)
{
    char db[] = "/tmp/sd-cite-ground-XXXXXX", pdf[4096], repo[4096], tokp[4096];
    int fd = mkstemp(db);
    CHECK(fd >= 0);
    close(fd);
    snprintf(pdf, sizeof pdf, "%s/data/samples/harbor-notes.pdf", src);
    snprintf(repo, sizeof repo, "%s/tests/fixtures/qa_repo", src);
    snprintf(tokp, sizeof tokp, "%s/data/models/sparsedoc-mini/tokenizer.json", src);
    struct sd_store *st = NULL;
    struct sd_tokenizer *tok = NULL;
    struct sd_err err = {0};
    struct sd_ingest_opts io = {0};
    struct sd_ingest_stats is = {0};
    char *paths[] = {pdf, repo};
    if (sd_store_open(db, &st, &err) || sd_tokenizer_load(tokp, &tok, &err) ||
        sd_ingest(st, paths, 2, &io, &is, &err)) {
        fprintf(stderr, "FAIL: %s\n", err.msg);
        sd_test_failures++;
        sd_store_close(st);
        sd_tokenizer_free(tok);
        unlink(db);
        return;
    }
    CHECK_MSG(is.pages == 4 && is.failed == 0, "ingested %lld pages, %zu failed", (long long)is.pages, is.failed);
    struct sd_contexts_opts co = {
        .max_tokens = 8192, .format = SD_CTX_FORMAT_PASSAGES, .tokenize = tok_cb, .tok_user = tok};
    struct sd_contexts *c = NULL;
    CHECK_MSG(sd_contexts_build(st, NULL, 0, &co, &c, &err) == SD_OK && c->n == 1, "contexts: %s", err.msg);
    if (!c || c->n != 1)
        goto out;
    const struct sd_context *ctx = &c->items[0];
    struct sd_qa_citation *cs = NULL;
    size_t n = 0;
    char *g = NULL;

    // On the cited page (printed 113): grounded, unchanged.
    GROUNDS("The access code for the Brenlow vault is KX-4821 [p. 113].",
            "The access code for the Brenlow vault is KX-4821 [p. 113].");
    CHECK(n == 1 && cs[0].grounded == 1 && !cs[0].corrected_from && cs[0].page_no == 2 &&
          streq(cs[0].marker, "p. 113"));
    cites_free(cs, n), free(g);

    // One page off (what the model wrote in tests/test_qa.sh): moved to page 2, printed 113.
    GROUNDS("KX-4821 [p. 114]", "KX-4821 [p. 113]");
    CHECK(n == 1 && cs[0].grounded == 1 && cs[0].valid && streq(cs[0].corrected_from, "p. 114") &&
          streq(cs[0].marker, "p. 113") && cs[0].page_no == 2 && streq(cs[0].page_label, "113") &&
          cs[0].line_start == 0 && cs[0].path && strstr(cs[0].path, "harbor-notes.pdf"));
    cites_free(cs, n), free(g);

    // A page that does not exist: resolved invalid, then found and re-anchored.
    GROUNDS("The code is changed at the start of every season [p. 999]; ask first.",
            "The code is changed at the start of every season [p. 113]; ask first.");
    CHECK(n == 1 && cs[0].valid && cs[0].grounded == 1 && streq(cs[0].corrected_from, "p. 999") && cs[0].page_no == 2);
    cites_free(cs, n), free(g);

    // The claim is nowhere: grounded 0, unchanged.
    GROUNDS("The access code for the Brenlow vault is ZQ-1234 [p. 113].",
            "The access code for the Brenlow vault is ZQ-1234 [p. 113].");
    CHECK(n == 1 && cs[0].grounded == 0 && cs[0].valid && !cs[0].corrected_from && cs[0].page_no == 2);
    cites_free(cs, n), free(g);

    // Several markers, only the second wrong: the second claim is its own sentence.
    GROUNDS("The code name of project Tembrolin is Saffron [p. 112]. The chief engineer of Dravik Works is "
            "Mara Lindqvist [p. 115]. Nothing else [note].",
            "The code name of project Tembrolin is Saffron [p. 112]. The chief engineer of Dravik Works is "
            "Mara Lindqvist [p. 114]. Nothing else [note].");
    CHECK(n == 2 && cs[0].grounded == 1 && !cs[0].corrected_from && cs[0].page_no == 1 && cs[1].grounded == 1 &&
          streq(cs[1].corrected_from, "p. 115") && streq(cs[1].marker, "p. 114") && cs[1].page_no == 3);
    cites_free(cs, n), free(g);

    // A claim on two pages (2 and 3; case and a line break do not matter): the one closer to the cited page.
    GROUNDS("The Harbor Master [p. 115]", "The Harbor Master [p. 114]");
    CHECK(n == 1 && cs[0].page_no == 3 && streq(cs[0].corrected_from, "p. 115"));
    cites_free(cs, n), free(g);
    GROUNDS("the harbor master [p. 112]", "the harbor master [p. 113]");
    CHECK(n == 1 && cs[0].page_no == 2 && streq(cs[0].corrected_from, "p. 112"));
    cites_free(cs, n), free(g);

    // Code: the claim is on line 17, the model cited 16; the marker becomes the path the context shows.
    GROUNDS("The default port.\nreturn 7341; [relay.c:16]", "The default port.\nreturn 7341; [src/relay.c:17]");
    CHECK(n == 1 && cs[0].grounded == 1 && streq(cs[0].corrected_from, "relay.c:16") &&
          streq(cs[0].marker, "src/relay.c:17") && cs[0].line_start == 17 && cs[0].line_end == 17 &&
          cs[0].page_no == 0 && !cs[0].page_label && cs[0].path && strstr(cs[0].path, "qa_repo/src/relay.c"));
    cites_free(cs, n), free(g);
    // On the cited lines of a range: unchanged.
    GROUNDS("7341 [src/relay.c:15-18]", "7341 [src/relay.c:15-18]");
    CHECK(n == 1 && cs[0].grounded == 1 && !cs[0].corrected_from && cs[0].line_start == 15 && cs[0].line_end == 18);
    cites_free(cs, n), free(g);
    // "7341" is on lines 17 and 20: the closer one.
    GROUNDS("7341 [src/relay.c:19]", "7341 [src/relay.c:20]");
    CHECK(n == 1 && cs[0].line_start == 20 && streq(cs[0].corrected_from, "src/relay.c:19"));
    cites_free(cs, n), free(g);
    GROUNDS("7341 [src/relay.c:18]", "7341 [src/relay.c:17]");
    CHECK(n == 1 && cs[0].line_start == 17);
    cites_free(cs, n), free(g);

    // The same marker twice with different claims: each occurrence on its own; one entry per final marker.
    GROUNDS("KX-4821 [p. 114], Dravik Works [p. 114]", "KX-4821 [p. 113], Dravik Works [p. 114]");
    CHECK(n == 2 && streq(cs[0].marker, "p. 113") && streq(cs[0].corrected_from, "p. 114") && cs[0].page_no == 2 &&
          streq(cs[1].marker, "p. 114") && !cs[1].corrected_from && cs[1].grounded == 1 && cs[1].page_no == 3);
    cites_free(cs, n), free(g);

    // No claim before the marker: not checked.
    GROUNDS("[p. 113] says so", "[p. 113] says so");
    CHECK(n == 1 && cs[0].grounded == -1 && !cs[0].corrected_from);
    cites_free(cs, n), free(g);

    // Grounded streaming, fed one byte at a time as a model would: what is shown is always a prefix of the
    // grounded answer (never the wrong marker, never half a marker) and ends as the grounded answer.
    const char *answers[][2] = {
        {"KX-4821 [p. 114], Dravik Works [p. 114] and more", "KX-4821 [p. 113], Dravik Works [p. 114] and more"},
        {"7341 [src/relay.c:19]", "7341 [src/relay.c:20]"},
        {"no citation here", "no citation here"},
    };
    for (size_t a = 0; a < sizeof answers / sizeof answers[0]; a++) {
        struct shown sh = {0};
        struct sd_cite_stream cst;
        sd_cite_stream_init(&cst, st, &ctx, 1, show_text, &sh);
        size_t len = strlen(answers[a][0]);
        int prefix_ok = 1, max_held = 0;
        for (size_t k = 1; k <= len; k++) {
            sd_cite_stream_feed(&cst, answers[a][0], k, 0);
            prefix_ok &= !strncmp(sh.buf, answers[a][1], sh.len);
            if ((int)(k - cst.raw_done) > max_held)
                max_held = (int)(k - cst.raw_done);
        }
        sd_cite_stream_feed(&cst, answers[a][0], len, 1);
        CHECK_MSG(prefix_ok && !strcmp(sh.buf, answers[a][1]), "streamed '%s' shows '%s', want '%s'", answers[a][0],
                  sh.buf, answers[a][1]);
        CHECK_MSG(strchr(answers[a][0], '[') ? max_held > 0 : max_held == 0, "streamed '%s': held %d bytes",
                  answers[a][0], max_held);
    }
    // A bracket longer than SD_CITE_STREAM_HOLD is not a marker: it passes on as written, as does the rest.
    {
        char raw[1024];
        snprintf(raw, sizeof raw, "KX-4821 [%0*d] then KX-4821 [p. 114]", 400, 7);
        struct shown sh = {0};
        struct sd_cite_stream cst;
        sd_cite_stream_init(&cst, st, &ctx, 1, show_text, &sh);
        for (size_t k = 1; k <= strlen(raw); k++)
            sd_cite_stream_feed(&cst, raw, k, 0);
        sd_cite_stream_feed(&cst, raw, strlen(raw), 1);
        CHECK_MSG(!strcmp(sh.buf, raw), "long bracket: shown '%.60s...'", sh.buf);
    }
    // Without contexts the text passes on at once, as written.
    {
        struct shown sh = {0};
        struct sd_cite_stream cst;
        sd_cite_stream_init(&cst, st, NULL, 0, show_text, &sh);
        sd_cite_stream_feed(&cst, "KX-4821 [p. 11", 14, 0);
        CHECK(sh.len == 14 && !strcmp(sh.buf, "KX-4821 [p. 11"));
    }
out:
    sd_contexts_free(c);
    store_remove(st, db);
    sd_tokenizer_free(tok);
}

static void test_plain(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K/tokenizer.json", sd_test_fixtures());
    struct sd_tokenizer *tok = NULL;
    if (sd_tokenizer_load(path, &tok, NULL) != SD_OK) {
        fprintf(stderr, "FAIL: cannot load %s\n", path);
        sd_test_failures++;
        return;
    }
    struct sd_chat_template t;
    sd_chat_template_detect(tok, -1, &t);
    CHECK(t.kind == SD_CHAT_PLAIN && t.ctx_format == SD_CTX_FORMAT_HEADERS && !t.constrain_markers);
    sd_tokenizer_free(tok);
}

// Real models' layouts against their own chat templates: tools/render_chat_templates.py renders the corpus
// tokenizer_config.json templates with jinja2 for the same two-turn conversation into
// tests/fixtures/chat_templates/NAME.txt. The prompt built piece by piece must decode to exactly that text, and
// the ids of the part before the context and of the part from the first question on must equal those parts of
// the text encoded at once (as the model saw them in training: the pieces must not split or merge tokens at
// their seams; ':' ' ' 'What' instead of ':' ' What' was such a split). The context itself is tokenized apart
// (data/contexts stores it ready-tokenized, the KV cache key), so its seams are only counted. Needs the corpus
// tokenizers; skipped without them.
static int encode_part(const struct sd_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n)
{
    return sd_tokenizer_encode(tok, text, len, 0, ids, n, NULL) == SD_OK;
}

static void test_real_templates(const char *src)
{
    const char *corpus = sd_test_corpus();
    if (!corpus) {
        printf("skip: real chat templates (shared corpus not found)\n");
        return;
    }
    static const struct {
        const char *name;
        enum sd_chat_kind kind;
    } models[] = {{"deepseek-v3", SD_CHAT_DEEPSEEK}, {"llama3", SD_CHAT_LLAMA3}};
    // Keep equal to tools/render_chat_templates.py.
    const char *context = "[p. 3] The Brenlow vault opens with code KX-4821.\n[p. 4] Harbor fees rose in 1998.";
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/vocab/hf/%s/tokenizer.json", corpus, models[i].name);
        struct sd_tokenizer *tok = NULL;
        struct sd_err err = {0};
        if (sd_tokenizer_load(path, &tok, &err) != SD_OK) {
            CHECK_MSG(0, "%s: %s", path, err.msg);
            continue;
        }
        struct sd_chat_template t;
        sd_chat_template_detect(tok, -1, &t);
        CHECK_MSG(t.kind == models[i].kind, "%s: template kind %d", models[i].name, (int)t.kind);
        struct sd_tokens p = {0};
        int32_t *ctx = NULL, *head = NULL, *tail = NULL;
        size_t n_ctx = 0, n_head = 0, n_tail = 0, n_prefix = 0, q_at = 0;
        char *text = NULL, *want = NULL;
        int ok = sd_chat_append_prefix(&t, tok, &p, &err) == SD_OK && (n_prefix = p.n) &&
                 sd_tokenizer_encode(tok, context, strlen(context), 0, &ctx, &n_ctx, &err) == SD_OK &&
                 sd_tokens_push(&p, ctx, n_ctx, &err) == SD_OK &&
                 sd_chat_append_context_end(&t, tok, &p, &err) == SD_OK && (q_at = p.n) &&
                 sd_chat_append_question(&t, tok, "What opens the vault?", 1, &p, &err) == SD_OK &&
                 sd_chat_append_answer(&t, tok, "KX-4821 [p. 3]", &p, &err) == SD_OK &&
                 sd_chat_append_question(&t, tok, "And the fees?", 0, &p, &err) == SD_OK &&
                 sd_tokenizer_decode(tok, p.ids, p.n, 0, &text, &err) == SD_OK;
        CHECK_MSG(ok, "%s: building the prompt: %s", models[i].name, err.msg);
        snprintf(path, sizeof path, "%s/tests/fixtures/chat_templates/%s.txt", src, models[i].name);
        FILE *f = fopen(path, "rb");
        if (f) {
            want = calloc(1, 1 << 16);
            if (want)
                (void)!fread(want, 1, (1 << 16) - 1, f);
            fclose(f);
        }
        CHECK_MSG(want != NULL, "cannot read %s", path);
        const char *c_at = want ? strstr(want, context) : NULL, *qs = c_at ? strstr(c_at, "Question: ") : NULL;
        CHECK_MSG(qs != NULL, "%s: no context and question in %s", models[i].name, path);
        if (ok && qs) {
            CHECK_MSG(!strcmp(text, want),
                      "%s: the prompt differs from the model's chat template\n--- ours:\n%s\n--- %s:\n%s",
                      models[i].name, text, path, want);
            CHECK(encode_part(tok, want, (size_t)(c_at - want), &head, &n_head) &&
                  encode_part(tok, qs, strlen(qs), &tail, &n_tail));
            CHECK_MSG(n_head == n_prefix && !memcmp(head, p.ids, n_head * sizeof *head),
                      "%s: the part before the context: %zu ids, %zu encoded at once", models[i].name, n_prefix,
                      n_head);
            size_t d = 0;
            while (d < n_tail && q_at + d < p.n && tail[d] == p.ids[q_at + d])
                d++;
            CHECK_MSG(
                d == n_tail && q_at + d == p.n,
                "%s: from the first question on, ids differ from the text encoded at once at id %zu of %zu (ours %zu)",
                models[i].name, d, n_tail, p.n - q_at);
            int32_t *whole = NULL;
            size_t n_whole = 0;
            CHECK(encode_part(tok, want, strlen(want), &whole, &n_whole));
            printf("%s: prompt of %zu ids equals the chat template's text; before the context and from the question "
                   "on also its ids (the context's seams: %zu ids vs %zu with the whole text encoded at once)\n",
                   models[i].name, p.n, p.n, n_whole);
            free(whole);
        }
        free(want);
        free(text);
        free(head);
        free(tail);
        free(ctx);
        free(p.ids);
        sd_tokenizer_free(tok);
    }
}

// Constrained citation markers (markers.c): the markers of a context are the bracketed line starts, sorted and
// unique; feeding an answer's bytes stays inside the set until a byte leaves every marker.
static void test_markers(void)
{
    struct sd_markers m;
    struct sd_err err = {0};
    CHECK_MSG(sd_markers_from_text("intro [p. 9] not a line start\n[p. 12]\nfoo\n[src/a.c:3]\n[p. 12]\n[open\n", &m, &err) ==
              SD_OK,
          "markers: %s", err.msg);
    CHECK_MSG(m.n == 2 && !strcmp(m.s[0], "p. 12]") && !strcmp(m.s[1], "src/a.c:3]"), "markers: %zu", m.n);
    struct sd_marker_state st = {0};
    CHECK_MSG(sd_markers_feed(&m, &st, "KX-1 [p", 7) && st.in && st.len == 1, "feed into a marker");
    struct sd_marker_state t = st;
    CHECK_MSG(!sd_markers_feed(&m, &t, " 1", 2), "a byte that leaves every marker must stop the feed");
    CHECK_MSG(sd_markers_feed(&m, &st, ". 12] and [src/", 15) && st.in && st.len == 4, "second marker in progress");
    CHECK_MSG(sd_markers_feed(&m, &st, "a.c:3]", 6) && !st.in, "marker closed");
    sd_markers_free(&m);
    CHECK_MSG(m.n == 0 && !m.s, "freed markers are empty");
}

int main(void)
{
    const char *src = getenv("SD_SOURCE");
    test_markers();
    test_parse();
    test_mini(src ? src : ".");
    test_plain();
    test_real_templates(src ? src : ".");
    test_passages(src ? src : ".");
    test_ground(src ? src : ".");
    // The memory estimate: the shipped model fits; with an absurd KV size it does not, and says so.
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/data/models/sparsedoc-mini", src ? src : ".");
    struct sd_err err = {0};
    uint64_t need = 0;
    CHECK(sd_qa_check_memory(dir, 0, &need, &err) == SD_OK && need > 10000000 && need < 200000000);
    CHECK(sd_qa_check_memory(dir, (uint64_t)1 << 60, NULL, &err) == SD_ERR_NOMEM && strstr(err.msg, "GiB of memory") &&
          strstr(err.msg, "available"));
    return sd_test_finish("qa_prompt");
}
