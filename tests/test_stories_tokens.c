// test_stories_tokens.c: our tokenizer on the stories260K tokenizer.json converted from llama2.c's
// tok512.bin (tests/fixtures/stories260K, made by tools/llama2c_to_hf.py). The ids must equal what
// llama2.c's own encoder gives (expected_ids.json, computed by the converter with llama2.c's
// algorithm), and decoding must give the text back, both whole and token by token as llama2.c prints.
#include <json.h>
#include <string.h>

#include "test_util.h"
#include "tokenizer.h"

static void check_text(const struct sd_tokenizer *tok, size_t idx, const char *text, size_t len, const int32_t *want,
                       size_t n_want)
{
    struct sd_err err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_MSG(sd_tokenizer_encode(tok, text, len, 1, &ids, &n, &err) == SD_OK, "case %zu: %s", idx, err.msg);
    int same = n == n_want && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!same) {
        fprintf(stderr, "FAIL case %zu '%.60s':\n  expected:", idx, text);
        for (size_t i = 0; i < n_want; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n  got     :");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fputc('\n', stderr);
        sd_test_failures++;
    }
    // whole decode (skip BOS), as HF does with the Strip decoder
    char *back = NULL;
    CHECK(sd_tokenizer_decode(tok, ids, n, 1, &back, &err) == SD_OK);
    CHECK_MSG(back && strlen(back) == len && memcmp(back, text, len) == 0, "case %zu round trip: '%s'", idx,
              back ? back : "(null)");
    free(back);
    // streaming decode the llama2.c way: piece bytes, dropping the leading space right after BOS
    char *acc = malloc(len + 64 * n + 1);
    size_t al = 0;
    for (size_t i = 0; acc && i < n; i++) {
        if (sd_tokenizer_is_special(tok, ids[i]))
            continue;
        size_t pl = 0;
        const char *p = sd_tokenizer_token_bytes(tok, ids[i], &pl);
        CHECK(p != NULL);
        if (!p)
            break;
        if (i > 0 && ids[i - 1] == sd_tokenizer_bos(tok) && pl > 0 && p[0] == ' ')
            p++, pl--;
        memcpy(acc + al, p, pl);
        al += pl;
    }
    CHECK_MSG(acc && al == len && memcmp(acc, text, len) == 0, "case %zu streaming decode differs", idx);
    free(acc);
    free(ids);
}

// Byte fallback makes every valid UTF-8 text round-trip, leading and repeated spaces included.
static void random_roundtrip(const struct sd_tokenizer *tok)
{
    static const char *const parts[] = {"Once",
                                        " upon",
                                        " ",
                                        "  ",
                                        "\n",
                                        "\t",
                                        "Lily",
                                        "'s",
                                        "!",
                                        "42",
                                        "\xc3\xa9",
                                        "\xe4\xbd\xa0",
                                        "\xf0\x9f\x99\x82",
                                        "<0x41>"};
    // (a literal "▁" is not included: SentencePiece cannot tell it from a space)
    const size_t np = sizeof parts / sizeof parts[0];
    uint64_t st = 99;
    char buf[512];
    for (int iter = 0; iter < 300; iter++) {
        size_t len = 0;
        for (int k = 0; k < 1 + iter % 30; k++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            const char *p = parts[(st >> 33) % np];
            size_t l = strlen(p);
            memcpy(buf + len, p, l);
            len += l;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        char *back = NULL;
        struct sd_err err = {0};
        CHECK(sd_tokenizer_encode(tok, buf, len, 1, &ids, &n, &err) == SD_OK);
        CHECK(sd_tokenizer_decode(tok, ids, n, 1, &back, &err) == SD_OK);
        CHECK_MSG(back && strlen(back) == len && memcmp(back, buf, len) == 0, "'%.*s' -> '%s'", (int)len, buf,
                  back ? back : "(null)");
        free(back);
        free(ids);
    }
}

int main(void)
{
    char path[2048];
    const char *fx = sd_test_fixtures();
    snprintf(path, sizeof path, "%s/stories260K/tokenizer.json", fx);
    struct sd_tokenizer *tok = NULL;
    struct sd_err err = {0};
    if (sd_tokenizer_load(path, &tok, &err) != SD_OK) {
        fprintf(stderr, "load %s: %s\n", path, err.msg);
        return 1;
    }
    CHECK(sd_tokenizer_n_vocab(tok) == 512);
    CHECK(sd_tokenizer_bos(tok) == 1);
    CHECK(sd_tokenizer_eos(tok) == 2);
    CHECK(sd_tokenizer_is_special(tok, 0) && sd_tokenizer_is_special(tok, 1) && sd_tokenizer_is_special(tok, 2));
    CHECK(sd_tokenizer_token_id(tok, "<0x0A>") == 13);

    random_roundtrip(tok);

    // "Once upon a time" as llama2.c encodes it (BOS, then ▁Once ▁upon ▁a ▁time)
    const int32_t once[] = {1, 403, 407, 261, 378};
    check_text(tok, 0, "Once upon a time", 16, once, 5);

    snprintf(path, sizeof path, "%s/stories260K/expected_ids.json", fx);
    struct json_object *root = json_object_from_file(path);
    CHECK_MSG(root != NULL, "cannot read %s", path);
    struct json_object *cases = NULL;
    size_t n_cases = root && json_object_object_get_ex(root, "cases", &cases) ? json_object_array_length(cases) : 0;
    CHECK(n_cases >= 6);
    int saw_greedy = 0;
    for (size_t i = 0; i < n_cases; i++) {
        struct json_object *c = json_object_array_get_idx(cases, i), *jt, *ji;
        if (!json_object_object_get_ex(c, "text", &jt) || !json_object_object_get_ex(c, "ids_with_bos", &ji)) {
            CHECK_MSG(0, "case %zu malformed", i);
            continue;
        }
        size_t nw = json_object_array_length(ji);
        int32_t *want = malloc(sizeof *want * (nw + 1));
        for (size_t k = 0; k < nw; k++)
            want[k] = json_object_get_int(json_object_array_get_idx(ji, k));
        const char *text = json_object_get_string(jt);
        size_t len = (size_t)json_object_get_string_len(jt);
        check_text(tok, i + 1, text, len, want, nw);
        if (len > 400)
            saw_greedy = 1;
        // the corpus copy of the greedy text, when present, must be the one stored here
        const char *corpus = sd_test_corpus();
        if (corpus && len > 400) {
            char p2[2048];
            size_t gl = 0;
            snprintf(p2, sizeof p2, "%s/models/stories260K/expected-greedy-t0.txt", corpus);
            char *g = sd_test_read_file(p2, &gl);
            if (g)
                CHECK_MSG(gl == len && memcmp(g, text, len) == 0, "fixture greedy text differs from %s", p2);
            free(g);
        }
        free(want);
    }
    CHECK_MSG(saw_greedy, "expected_ids.json lacks the greedy output text (rerun tools/llama2c_to_hf.py --text-file)");
    printf("stories260K: %zu llama2.c encodings checked\n", n_cases + 1);
    if (root)
        json_object_put(root);
    sd_tokenizer_free(tok);
    return sd_test_finish("stories_tokenizer");
}
