// tokenizer_gguf.c: tokenizers from GGUF metadata. The tokenizer.ggml.* keys are translated into the
// tokenizer.json description they came from and handed to the shared builder (tokenizer_json.h):
//  - "gpt2": byte-level BPE; tokens are in the GPT-2 byte alphabet, merges are "a b" strings, and
//    tokenizer.ggml.pre names the pre-tokenizer regexes (gpt-2, llama-bpe, qwen2, deepseek-v3 known).
//  - "llama": SentencePiece BPE with byte fallback; merges are implied by the scores (a pair merges
//    when the concatenation is a vocabulary piece; higher score first), as SentencePiece does.
// token_type 3 (control) become special added tokens, 4 (user-defined) non-special added tokens.
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model_gguf.h"
#include "tokenizer.h"
#include "tokenizer_json.h"

#define TT_NORMAL 1
#define TT_UNKNOWN 2
#define TT_CONTROL 3
#define TT_USER 4
#define TT_BYTE 6

static const char LLAMA3_RE[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_RE[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char DSV3_DIGITS_RE[] = "\\p{N}{1,3}";
static const char DSV3_CJK_RE[] = "[\\x{4e00}-\\x{9fa5}\\x{3040}-\\x{309f}\\x{30a0}-\\x{30ff}]+";
static const char DSV3_MAIN_RE[] = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?"
                                   "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static struct json_object *jstrn(const char *s, size_t n)
{
    return json_object_new_string_len(s, (int)n);
}

static struct json_object *split_re(const char *re)
{
    struct json_object *o = json_object_new_object(), *p = json_object_new_object();
    json_object_object_add(p, "Regex", json_object_new_string(re));
    json_object_object_add(o, "type", json_object_new_string("Split"));
    json_object_object_add(o, "pattern", p);
    json_object_object_add(o, "behavior", json_object_new_string("Isolated"));
    json_object_object_add(o, "invert", json_object_new_boolean(0));
    return o;
}

static struct json_object *bytelevel(int use_regex)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string("ByteLevel"));
    json_object_object_add(o, "add_prefix_space", json_object_new_boolean(0));
    json_object_object_add(o, "use_regex", json_object_new_boolean(use_regex));
    return o;
}

// Pre-tokenizer for a gpt2-model GGUF's tokenizer.ggml.pre name; NULL if unknown.
static struct json_object *gpt2_pre(const char *pre, size_t n)
{
#define IS(lit) (n == sizeof lit - 1 && !memcmp(pre, lit, n))
    if (IS("default") || IS("gpt-2") || IS("gpt2"))
        return bytelevel(1);
    const char *res[3] = {0};
    if (IS("llama-bpe") || IS("llama3"))
        res[0] = LLAMA3_RE;
    else if (IS("qwen2"))
        res[0] = QWEN2_RE;
    else if (IS("deepseek-v3"))
        res[0] = DSV3_DIGITS_RE, res[1] = DSV3_CJK_RE, res[2] = DSV3_MAIN_RE;
    else
        return NULL;
#undef IS
    struct json_object *seq = json_object_new_object(), *arr = json_object_new_array();
    json_object_object_add(seq, "type", json_object_new_string("Sequence"));
    for (int i = 0; i < 3 && res[i]; i++)
        json_object_array_add(arr, split_re(res[i]));
    json_object_array_add(arr, bytelevel(0));
    json_object_object_add(seq, "pretokenizers", arr);
    return seq;
}

struct piece {
    int32_t id;
    float score;
};

static int cmp_score_desc(const void *a, const void *b)
{
    const struct piece *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static size_t utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

// SentencePiece merges from scores: for each normal piece, best score first, every split at a character
// boundary into two normal pieces is a merge of that rank.
static enum sd_status spm_merges(const struct sd_gguf_kv *toks, const struct sd_gguf_kv *scores,
                                 const struct sd_gguf_kv *types, struct json_object *vocab, struct json_object *merges,
                                 const char *label, struct sd_err *err)
{
    uint64_t n = toks->arr_n;
    struct piece *p = malloc(sizeof *p * (size_t)(n ? n : 1));
    if (!p)
        return sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", label);
    size_t np = 0;
    for (uint64_t i = 0; i < n; i++)
        if (!types || sd_gguf_arr_int(types, i) == TT_NORMAL)
            p[np++] = (struct piece){(int32_t)i, (float)sd_gguf_arr_f64(scores, i)};
    qsort(p, np, sizeof *p, cmp_score_desc);
    for (size_t k = 0; k < np; k++) {
        size_t len;
        const char *s = sd_gguf_arr_str(toks, (uint64_t)p[k].id, &len);
        if (len == 0) // nothing to split (and s may point at the end of the mapping)
            continue;
        for (size_t cut = utf8_len((unsigned char)s[0]); cut < len; cut += utf8_len((unsigned char)s[cut])) {
            struct json_object *l, *r;
            char *a = strndup(s, cut), *b = strndup(s + cut, len - cut);
            if (!a || !b) {
                free(a);
                free(b);
                free(p);
                return sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", label);
            }
            int ok = json_object_object_get_ex(vocab, a, &l) && json_object_object_get_ex(vocab, b, &r);
            if (ok) {
                int64_t il = json_object_get_int64(l), ir = json_object_get_int64(r);
                ok = (!types || (sd_gguf_arr_int(types, (uint64_t)il) == TT_NORMAL &&
                                 sd_gguf_arr_int(types, (uint64_t)ir) == TT_NORMAL));
            }
            if (ok) {
                struct json_object *m = json_object_new_array();
                json_object_array_add(m, json_object_new_string(a));
                json_object_array_add(m, json_object_new_string(b));
                json_object_array_add(merges, m);
            }
            free(a);
            free(b);
        }
    }
    free(p);
    return SD_OK;
}

static struct json_object *replace_obj(const char *pat, const char *content)
{
    struct json_object *o = json_object_new_object(), *p = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string("Replace"));
    json_object_object_add(p, "String", json_object_new_string(pat));
    json_object_object_add(o, "pattern", p);
    json_object_object_add(o, "content", json_object_new_string(content));
    return o;
}

static struct json_object *typed(const char *type)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string(type));
    return o;
}

enum sd_status sd_tokenizer_from_gguf(const struct sd_gguf *g, struct sd_tokenizer **out, struct sd_err *err)
{
    *out = NULL;
    const char *label = sd_gguf_path(g);
    const char *model, *pre = "default";
    size_t ml, pl = 7;
    enum sd_status st = sd_gguf_get_str(g, "tokenizer.ggml.model", &model, &ml, err);
    if (st)
        return st;
    int spm = ml == 5 && !memcmp(model, "llama", 5);
    if (!spm && !(ml == 4 && !memcmp(model, "gpt2", 4)))
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "%s: tokenizer model \"%.*s\" is not supported (gpt2, llama)", label,
                          (int)(ml < 64 ? ml : 64), model);
    const struct sd_gguf_kv *toks = sd_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const struct sd_gguf_kv *types = sd_gguf_find_kv(g, "tokenizer.ggml.token_type");
    const struct sd_gguf_kv *scores = sd_gguf_find_kv(g, "tokenizer.ggml.scores");
    const struct sd_gguf_kv *mg = sd_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (!toks || toks->type != SD_GGUF_ARRAY || toks->arr_type != SD_GGUF_STRING || toks->arr_n == 0 ||
        toks->arr_n > (1u << 24))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tokenizer.ggml.tokens must be a non-empty array of strings", label);
    uint64_t n = toks->arr_n;
    if (types && (types->type != SD_GGUF_ARRAY || types->arr_type == SD_GGUF_STRING || types->arr_n != n))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: tokenizer.ggml.token_type must be %llu integers", label,
                          (unsigned long long)n);
    if (spm && (!scores || scores->type != SD_GGUF_ARRAY || scores->arr_type == SD_GGUF_STRING || scores->arr_n != n))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: a llama tokenizer needs tokenizer.ggml.scores (%llu numbers)", label,
                          (unsigned long long)n);
    if (!spm && (!mg || mg->type != SD_GGUF_ARRAY || mg->arr_type != SD_GGUF_STRING))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: a gpt2 tokenizer needs tokenizer.ggml.merges (strings)", label);
    if (!spm && sd_gguf_find_kv(g, "tokenizer.ggml.pre") &&
        (st = sd_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pl, err)))
        return st;

    struct json_object *root = json_object_new_object(), *cfg = json_object_new_object();
    struct json_object *mod = json_object_new_object(), *vocab = json_object_new_object();
    struct json_object *merges = json_object_new_array(), *added = json_object_new_array();
    json_object_object_add(root, "model", mod);
    json_object_object_add(mod, "type", json_object_new_string("BPE"));
    json_object_object_add(mod, "vocab", vocab);
    json_object_object_add(mod, "merges", merges);
    json_object_object_add(root, "added_tokens", added);
    for (uint64_t i = 0; i < n; i++) {
        size_t len;
        const char *s = sd_gguf_arr_str(toks, i, &len);
        if (len == 0 || memchr(s, 0, len)) // json-c keys are C strings; an empty piece can never match
            continue;
        char *k = strndup(s, len);
        if (!k) {
            st = sd_err_set(err, SD_ERR_NOMEM, "%s: out of memory", label);
            goto out;
        }
        json_object_object_add(vocab, k, json_object_new_int64((int64_t)i));
        free(k);
        int64_t ty = types ? sd_gguf_arr_int(types, i) : TT_NORMAL;
        if (ty == TT_CONTROL || ty == TT_USER || (spm && ty == TT_UNKNOWN)) {
            struct json_object *a = json_object_new_object();
            json_object_object_add(a, "id", json_object_new_int64((int64_t)i));
            json_object_object_add(a, "content", jstrn(s, len));
            json_object_object_add(a, "special", json_object_new_boolean(ty != TT_USER));
            json_object_array_add(added, a);
        }
    }
    int add_bos = spm, add_eos = 0, add_prefix = 1;
    sd_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, NULL);
    sd_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos, NULL);
    sd_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &add_prefix, NULL);
    {
        static const char *const ids[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                          "tokenizer.ggml.unknown_token_id"};
        static const char *const names[] = {"bos_token", "eos_token", "unk_token"};
        for (int k = 0; k < 3; k++) {
            int64_t id;
            size_t len;
            if (sd_gguf_get_int(g, ids[k], 0, (int64_t)n - 1, &id, NULL) != SD_OK)
                continue;
            const char *s = sd_gguf_arr_str(toks, (uint64_t)id, &len);
            if (k < 2)
                json_object_object_add(cfg, names[k], jstrn(s, len));
            else if (spm)
                json_object_object_add(mod, names[k], jstrn(s, len));
        }
    }
    json_object_object_add(cfg, "add_bos_token", json_object_new_boolean(add_bos));
    json_object_object_add(cfg, "add_eos_token", json_object_new_boolean(add_eos));
    if (spm) {
        json_object_object_add(mod, "byte_fallback", json_object_new_boolean(1));
        json_object_object_add(mod, "fuse_unk", json_object_new_boolean(1));
        if ((st = spm_merges(toks, scores, types, vocab, merges, label, err)))
            goto out;
        struct json_object *norm = json_object_new_object(), *nl = json_object_new_array();
        json_object_object_add(norm, "type", json_object_new_string("Sequence"));
        if (add_prefix) {
            struct json_object *p = typed("Prepend");
            json_object_object_add(p, "prepend", json_object_new_string("\xe2\x96\x81"));
            json_object_array_add(nl, p);
        }
        json_object_array_add(nl, replace_obj(" ", "\xe2\x96\x81"));
        json_object_object_add(norm, "normalizers", nl);
        json_object_object_add(root, "normalizer", norm);
        struct json_object *dec = typed("Sequence"), *dl = json_object_new_array();
        json_object_array_add(dl, replace_obj("\xe2\x96\x81", " "));
        json_object_array_add(dl, typed("ByteFallback"));
        json_object_array_add(dl, typed("Fuse"));
        if (add_prefix) {
            struct json_object *s = typed("Strip");
            json_object_object_add(s, "content", json_object_new_string(" "));
            json_object_object_add(s, "start", json_object_new_int(1));
            json_object_object_add(s, "stop", json_object_new_int(0));
            json_object_array_add(dl, s);
        }
        json_object_object_add(dec, "decoders", dl);
        json_object_object_add(root, "decoder", dec);
    } else {
        struct json_object *pt = gpt2_pre(pre, pl);
        if (!pt) {
            st = sd_err_set(err, SD_ERR_UNSUPPORTED,
                            "%s: pre-tokenizer \"%.*s\" is not supported (default, gpt-2, "
                            "llama-bpe, qwen2, deepseek-v3)",
                            label, (int)(pl < 64 ? pl : 64), pre);
            goto out;
        }
        json_object_object_add(root, "pre_tokenizer", pt);
        if (pl == 5 && !memcmp(pre, "qwen2", 5)) // Qwen's tokenizer.json normalizes to NFC first
            json_object_object_add(root, "normalizer", typed("NFC"));
        if ((pl == 9 && !memcmp(pre, "llama-bpe", 9)) || (pl == 6 && !memcmp(pre, "llama3", 6)))
            json_object_object_add(mod, "ignore_merges", json_object_new_boolean(1)); // whole-word vocab hits win
        json_object_object_add(root, "decoder", typed("ByteLevel"));
        for (uint64_t i = 0; i < mg->arr_n; i++) {
            size_t len;
            const char *s = sd_gguf_arr_str(mg, i, &len);
            json_object_array_add(merges, jstrn(s, len));
        }
    }
    st = sd_tokenizer_from_json(root, cfg, label, out, err);
out:
    json_object_put(root);
    json_object_put(cfg);
    return st;
}

enum sd_status sd_tokenizer_load_model(const char *model_path, struct sd_tokenizer **out, struct sd_err *err)
{
    char gpath[4096];
    *out = NULL;
    int is_gguf = sd_model_gguf_resolve(model_path, gpath, sizeof gpath, err);
    if (is_gguf < 0)
        return err ? err->status : SD_ERR_ARG;
    if (!is_gguf) {
        char p[4096];
        if ((size_t)snprintf(p, sizeof p, "%s/tokenizer.json", model_path) >= sizeof p)
            return sd_err_set(err, SD_ERR_ARG, "model path too long: %s", model_path);
        return sd_tokenizer_load(p, out, err);
    }
    struct sd_gguf *g = NULL;
    enum sd_status st = sd_gguf_open(gpath, &g, err);
    if (st == SD_OK)
        st = sd_tokenizer_from_gguf(g, out, err);
    sd_gguf_free(g);
    return st;
}
