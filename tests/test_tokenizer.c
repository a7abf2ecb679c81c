// test_tokenizer.c: tokenizer.json BPE against hand-worked ids on a tiny byte-level fixture
// (tests/fixtures/tokenizer/), then against the real DeepSeek-V3 / Llama-3 / Qwen3 vocabularies with
// the expected ids in the shared corpus (vocab/expected, vocab/llama.cpp). Every case must match
// exactly and decode(encode(x)) must give x back. The corpus part skips (77) when it is absent.
#include <json.h>
#include <stdint.h>
#include <string.h>

#include "test_util.h"
#include "tokenizer.h"

static const char SEP[] = "\n__ggml_vocab_test__\n";

static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s (%zu):", what, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

// Encode text, compare with want; also checks the round trip. Returns 1 when all is well.
static int normalizes; // set while testing a tokenizer with a normalizer that may change text

static int check_case(const struct sd_tokenizer *tok, const char *label, const char *text, size_t len, int add_special,
                      const int32_t *want, size_t n_want)
{
    struct sd_err err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    enum sd_status s = sd_tokenizer_encode(tok, text, len, add_special, &ids, &n, &err);
    CHECK_MSG(s == SD_OK, "%s: encode failed: %s", label, err.msg);
    if (s != SD_OK)
        return 0;
    int ok = 1;
    if (!ids_equal(ids, n, want, n_want)) {
        fprintf(stderr, "FAIL %s: text '%.*s'\n", label, (int)(len > 200 ? 200 : len), text);
        print_ids("expected", want, n_want);
        print_ids("got     ", ids, n);
        sd_test_failures++;
        ok = 0;
    }
    char *back = NULL;
    s = sd_tokenizer_decode(tok, ids, n, add_special, &back, &err);
    CHECK_MSG(s == SD_OK, "%s: decode failed: %s", label, err.msg);
    if (s == SD_OK && (strlen(back) != len || memcmp(back, text, len) != 0) && normalizes) {
        // a normalizing tokenizer (NFC) may change the text; then the decoded text must encode
        // to the same ids (the normal form is a fixed point)
        int32_t *ids2 = NULL;
        size_t n2 = 0;
        if (sd_tokenizer_encode(tok, back, strlen(back), 0, &ids2, &n2, &err) == SD_OK && ids_equal(ids, n, ids2, n2)) {
            printf("note %s: text changed by normalization, re-encodes identically\n", label);
            free(ids2);
            free(back);
            free(ids);
            return ok;
        }
        free(ids2);
    }
    if (s == SD_OK && (strlen(back) != len || memcmp(back, text, len) != 0)) {
        fprintf(stderr, "FAIL %s: round trip differs:\n    in : '%.*s'\n    out: '%s'\n", label, (int)len, text, back);
        sd_test_failures++;
        ok = 0;
    }
    free(back);
    free(ids);
    return ok;
}

static struct sd_tokenizer *load(const char *path)
{
    struct sd_tokenizer *tok = NULL;
    struct sd_err err = {0};
    enum sd_status s = sd_tokenizer_load(path, &tok, &err);
    CHECK_MSG(s == SD_OK, "load %s: %s", path, err.msg);
    return tok;
}

// decode(encode(x)) == x on random mixes of ASCII, whitespace runs, digits, multi-byte UTF-8 and
// (when given) added-token strings.
static void random_roundtrip(const struct sd_tokenizer *tok, const char *label, const char *const *extra,
                             size_t n_extra)
{
    static const char *const parts[] = {"a",
                                        "b",
                                        "Zq",
                                        " ",
                                        "  ",
                                        "\n",
                                        "\r\n",
                                        "\t",
                                        "12",
                                        "345678",
                                        "'s",
                                        "'LL",
                                        "!?",
                                        "...",
                                        "\xc3\xa9",
                                        "e\xcc\x81",
                                        "\xe4\xbd\xa0\xe5\xa5\xbd",
                                        "\xf0\x9f\x99\x82",
                                        "\xc2\xbd",
                                        "\xe2\x80\x8b",
                                        "<",
                                        "|>",
                                        "\xe3\x81\x8b"};
    const size_t np = sizeof parts / sizeof parts[0];
    uint64_t st = 0x1234567ull;
    char buf[1024];
    for (int iter = 0; iter < 300; iter++) {
        size_t len = 0;
        int n = 1 + iter % 40;
        for (int k = 0; k < n; k++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            size_t r = (size_t)(st >> 33) % (np + n_extra);
            const char *p = r < np ? parts[r] : extra[r - np];
            size_t l = strlen(p);
            if (len + l >= sizeof buf)
                break;
            memcpy(buf + len, p, l);
            len += l;
        }
        int32_t *ids = NULL;
        size_t ni = 0;
        struct sd_err err = {0};
        char *back = NULL;
        if (sd_tokenizer_encode(tok, buf, len, 0, &ids, &ni, &err) != SD_OK ||
            sd_tokenizer_decode(tok, ids, ni, 0, &back, &err) != SD_OK) {
            CHECK_MSG(0, "%s random %d: %s", label, iter, err.msg);
        } else if (strlen(back) != len || memcmp(back, buf, len) != 0) {
            // an NFC tokenizer may rewrite "e" + U+0301; then the result must be a fixed point
            int32_t *ids2 = NULL;
            size_t n2 = 0;
            int fixed = normalizes && sd_tokenizer_encode(tok, back, strlen(back), 0, &ids2, &n2, &err) == SD_OK &&
                        ids_equal(ids, ni, ids2, n2);
            free(ids2);
            CHECK_MSG(fixed, "%s random %d: round trip '%.*s' -> '%s'", label, iter, (int)len, buf, back);
        }
        free(back);
        free(ids);
    }
}

static void test_tiny_bytelevel(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/tiny_bytelevel.json", sd_test_fixtures());
    struct sd_tokenizer *tok = load(path);
    if (!tok)
        return;
    // Vocab: id b = byte b (GPT-2 alphabet), then merges in rank order:
    // 256 he, 257 ll, 258 hell, 259 hello, 260 Ġw, 261 or, 262 Ġwor; added 263 <s>, 264 <|end|>, 265 <tool>.
    CHECK(sd_tokenizer_n_vocab(tok) == 266);
    CHECK(sd_tokenizer_bos(tok) == 263);
    CHECK(sd_tokenizer_is_special(tok, 264));
    CHECK(!sd_tokenizer_is_special(tok, 265));
    CHECK(sd_tokenizer_token_id(tok, "hello") == 259);
    CHECK(sd_tokenizer_token_id(tok, "\xc4\xa0w") == 260); // "Ġw" as written in the file
    CHECK(sd_tokenizer_token_id(tok, " w") == 260);        // and as raw text

    // "hello": he(0), ll(1) -> hell(2) -> hello(3). " world": Ġw(4), or(5), Ġwor(6), then l, d stay bytes.
    const int32_t w1[] = {259, 262, 'l', 'd'};
    check_case(tok, "tiny hello world", "hello world", 11, 0, w1, 4);
    // rank order beats position: "hel" -> he + l, never h + el
    const int32_t w2[] = {256, 'l'};
    check_case(tok, "tiny hel", "hel", 3, 0, w2, 2);
    // equal ranks: leftmost first, "lll" -> ll + l
    const int32_t w3[] = {257, 'l'};
    check_case(tok, "tiny lll", "lll", 3, 0, w3, 2);
    // pre-tokenizer (GPT-2 regex) keeps "hello" and "hello" apart across a space; digits, punctuation
    // ("\s+(?!\S)" leaves the last space to join the next word: "hello", " ", " hello", "12", "!")
    const int32_t w4[] = {259, ' ', ' ', 259, '1', '2', '!'};
    check_case(tok, "tiny pieces", "hello  hello12!", 15, 0, w4, 7);
    // multi-byte UTF-8 becomes one token per byte
    const int32_t w5[] = {0xc3, 0xa9, ' ', 0xe2, 0x82, 0xac};
    check_case(tok, "tiny utf8", "\xc3\xa9 \xe2\x82\xac", 6, 0, w5, 6);
    // added tokens are matched literally, special or not; the BPE does not merge across them
    const int32_t w6[] = {'h', 'i', 264, 259, 265, 256};
    check_case(tok, "tiny added", "hi<|end|>hello<tool>he", 22, 0, w6, 6);
    // add_special prepends <s> from the TemplateProcessing post-processor
    const int32_t w7[] = {263, 259};
    check_case(tok, "tiny bos", "hello", 5, 1, w7, 2);
    // empty text
    check_case(tok, "tiny empty", "", 0, 0, NULL, 0);
    static const char *const tiny_added[] = {"<|end|>", "<tool>", "<s>"};
    random_roundtrip(tok, "tiny", tiny_added, 3);

    // decode: skip_special drops <|end|> but keeps the non-special <tool>
    const int32_t d1[] = {263, 259, 264, 265, 262};
    char *txt = NULL;
    struct sd_err err = {0};
    CHECK(sd_tokenizer_decode(tok, d1, 5, 1, &txt, &err) == SD_OK);
    CHECK_MSG(txt && !strcmp(txt, "hello<tool> wor"), "got '%s'", txt ? txt : "(null)");
    free(txt);
    // a lone continuation byte decodes to U+FFFD; token_bytes gives the raw byte
    const int32_t d2[] = {0xa9};
    CHECK(sd_tokenizer_decode(tok, d2, 1, 0, &txt, &err) == SD_OK);
    CHECK(txt && !strcmp(txt, "\xef\xbf\xbd"));
    free(txt);
    size_t bl = 0;
    const char *b = sd_tokenizer_token_bytes(tok, 0xa9, &bl);
    CHECK(b && bl == 1 && (unsigned char)b[0] == 0xa9);
    CHECK(sd_tokenizer_token_bytes(tok, 9999, &bl) == NULL);
    const int32_t bad[] = {9999};
    CHECK(sd_tokenizer_decode(tok, bad, 1, 0, &txt, &err) == SD_ERR_RANGE);
    // invalid UTF-8 input is refused with a message
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(sd_tokenizer_encode(tok, "a\xff", 2, 0, &ids, &n, &err) == SD_ERR_ARG);
    free(ids);
    sd_tokenizer_free(tok);

    // loading errors are reported, not fatal
    struct sd_tokenizer *none = NULL;
    CHECK(sd_tokenizer_load("/nonexistent/tokenizer.json", &none, &err) == SD_ERR_IO && none == NULL);
}

// The stories260K vocabulary with the newer Metaspace pre-tokenizer (prepend_scheme "first") instead of
// the Prepend/Replace normalizers must give llama2.c's ids too (no piece has an inner "▁").
static void test_metaspace(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/stories_metaspace.json", sd_test_fixtures());
    struct sd_tokenizer *tok = load(path);
    if (!tok)
        return;
    snprintf(path, sizeof path, "%s/stories260K/expected_ids.json", sd_test_fixtures());
    struct json_object *root = json_object_from_file(path), *cases = NULL;
    CHECK_MSG(root && json_object_object_get_ex(root, "cases", &cases), "cannot read %s", path);
    size_t n = cases ? json_object_array_length(cases) : 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *c = json_object_array_get_idx(cases, i), *jt = NULL, *ji = NULL;
        json_object_object_get_ex(c, "text", &jt);
        json_object_object_get_ex(c, "ids_with_bos", &ji);
        size_t nw = ji ? json_object_array_length(ji) : 0;
        int32_t *want = malloc(sizeof *want * (nw + 1));
        for (size_t k = 0; k < nw; k++)
            want[k] = json_object_get_int(json_object_array_get_idx(ji, k));
        // HF's Metaspace does not prepend "▁" to text that already starts with a space (llama2.c does)
        if (json_object_get_string(jt)[0] == ' ') {
            free(want);
            continue;
        }
        char label[64];
        snprintf(label, sizeof label, "metaspace case %zu", i);
        check_case(tok, label, json_object_get_string(jt), (size_t)json_object_get_string_len(jt), 1, want, nw);
        free(want);
    }
    // "first": text after a special token at offset 0 gets no "▁" prefix (▁ + "Once" would be 403)
    int32_t *ids = NULL;
    size_t ni = 0;
    struct sd_err err = {0};
    CHECK(sd_tokenizer_encode(tok, "<s>Once", 7, 0, &ids, &ni, &err) == SD_OK);
    CHECK_MSG(ni >= 2 && ids[0] == 1 && ids[1] != 403, "got %zu ids, second %d", ni, ni > 1 ? ids[1] : -1);
    free(ids);
    if (root)
        json_object_put(root);
    sd_tokenizer_free(tok);
}

// Parse "ids per line" .out file and ".inp" cases; run them all against tok.
static void run_corpus_file(const struct sd_tokenizer *tok, const char *name, const char *inp_path,
                            const char *out_path)
{
    size_t inp_len = 0, out_len = 0;
    char *inp = sd_test_read_file(inp_path, &inp_len);
    char *out = sd_test_read_file(out_path, &out_len);
    CHECK_MSG(inp && out, "cannot read %s / %s", inp_path, out_path);
    if (!inp || !out) {
        free(inp);
        free(out);
        return;
    }
    size_t n_cases = 0, n_pass = 0;
    char *ip = inp, *iend = inp + inp_len;
    char *op = out, *oend = out + out_len;
    int32_t *want = malloc(sizeof *want * (out_len + 1));
    while (ip < iend) {
        char *sep = memmem(ip, (size_t)(iend - ip), SEP, sizeof SEP - 1);
        if (!sep)
            break;
        size_t len = (size_t)(sep - ip);
        // expected line
        char *eol = memchr(op, '\n', (size_t)(oend - op));
        if (!eol)
            eol = oend;
        size_t nw = 0;
        for (char *q = op; q < eol;) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q) {
                q++;
                continue;
            }
            want[nw++] = (int32_t)v;
            q = end;
        }
        char label[256];
        snprintf(label, sizeof label, "%s case %zu", name, n_cases);
        n_pass += (size_t)check_case(tok, label, ip, len, 0, want, nw);
        n_cases++;
        ip = sep + sizeof SEP - 1;
        op = eol < oend ? eol + 1 : oend;
    }
    printf("%-40s %zu/%zu cases pass\n", name, n_pass, n_cases);
    CHECK_MSG(n_cases > 0, "%s: no cases parsed", name);
    free(want);
    free(inp);
    free(out);
}

static void test_corpus(void)
{
    const char *c = sd_test_require_corpus("tokenizer vocabularies and expected ids");
    static const struct {
        const char *model, *inp, *out;
    } sets[] = {
        {"deepseek-v3", "vocab/expected/deepseek-v3.llamacpp-tests.inp",
         "vocab/expected/deepseek-v3.llamacpp-tests.out"},
        {"deepseek-v3", "vocab/expected/deepseek-v3.extra.inp", "vocab/expected/deepseek-v3.extra.out"},
        {"llama3", "vocab/llama.cpp/ggml-vocab-llama-bpe.gguf.inp", "vocab/llama.cpp/ggml-vocab-llama-bpe.gguf.out"},
        {"llama3", "vocab/expected/llama3.extra.inp", "vocab/expected/llama3.extra.out"},
        {"qwen3", "vocab/llama.cpp/ggml-vocab-qwen2.gguf.inp", "vocab/llama.cpp/ggml-vocab-qwen2.gguf.out"},
        {"qwen3", "vocab/expected/qwen3.extra.inp", "vocab/expected/qwen3.extra.out"},
    };
    char path[2048], p2[2048], p3[2048];
    struct sd_tokenizer *tok = NULL;
    const char *loaded = NULL;
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        if (!loaded || strcmp(loaded, sets[i].model)) {
            sd_tokenizer_free(tok);
            snprintf(path, sizeof path, "%s/vocab/hf/%s/tokenizer.json", c, sets[i].model);
            tok = load(path);
            loaded = sets[i].model;
            if (!tok)
                continue;
        }
        if (!tok)
            continue;
        normalizes = !strcmp(sets[i].model, "qwen3");
        if (i == 0 || strcmp(sets[i - 1].model, sets[i].model)) {
            static const char *const specials[] = {"<|im_start|>", "<|begin_of_text|>",
                                                   "<\xef\xbd\x9cUser\xef\xbd\x9c>"};
            random_roundtrip(tok, sets[i].model, specials, 3);
        }
        snprintf(p2, sizeof p2, "%s/%s", c, sets[i].inp);
        snprintf(p3, sizeof p3, "%s/%s", c, sets[i].out);
        char name[128];
        const char *base = strrchr(sets[i].inp, '/');
        snprintf(name, sizeof name, "%s: %s", sets[i].model, base ? base + 1 : sets[i].inp);
        run_corpus_file(tok, name, p2, p3);
    }
    sd_tokenizer_free(tok);

    // BOS handling per tokenizer_config.json
    static const struct {
        const char *model;
        int32_t bos;
    } bos[] = {{"deepseek-v3", 0}, {"llama3", 128000}, {"qwen3", -1}};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/vocab/hf/%s/tokenizer.json", c, bos[i].model);
        tok = load(path);
        if (!tok)
            continue;
        CHECK_MSG(sd_tokenizer_bos(tok) == bos[i].bos, "%s bos %d", bos[i].model, sd_tokenizer_bos(tok));
        int32_t *ids = NULL;
        size_t n = 0;
        struct sd_err err = {0};
        CHECK(sd_tokenizer_encode(tok, "Hi", 2, 1, &ids, &n, &err) == SD_OK);
        if (bos[i].bos >= 0)
            CHECK_MSG(n == 2 && ids[0] == bos[i].bos, "%s: BOS not prepended", bos[i].model);
        else
            CHECK_MSG(n == 1, "%s: nothing should be prepended", bos[i].model);
        free(ids);
        sd_tokenizer_free(tok);
    }
}

int main(void)
{
    test_tiny_bytelevel();
    test_metaspace();
    if (!sd_test_corpus() && sd_test_failures) // report fixture failures rather than skipping
        return sd_test_finish("tokenizer");
    test_corpus();
    return sd_test_finish("tokenizer");
}
