// chat_template.c: prompt layouts as token sequences (see chat_template.h).
#include "chat_template.h"

#include <stdlib.h>
#include <string.h>

// DeepSeek's special tokens use U+FF5C (fullwidth vertical line) and U+2581 (lower one eighth block).
#define DS_BAR "\xef\xbd\x9c"
#define DS_SP "\xe2\x96\x81"
#define DS_USER "<" DS_BAR "User" DS_BAR ">"
#define DS_ASSISTANT "<" DS_BAR "Assistant" DS_BAR ">"
#define DS_EOS "<" DS_BAR "end" DS_SP "of" DS_SP "sentence" DS_BAR ">"

// sparsedoc-mini's system line, exactly as trained (tools/train/docgen.py HEAD).
#define MINI_HEAD "<|system|>Answer from the document. Quote the value and cite its marker.\n<|document|>\n"

#define SYSTEM_PROMPT                                                                                                  \
    "Answer the question from the documents below. Cite the source of every fact with its marker exactly as it "       \
    "appears in the documents, for example [p. 12] or [src/main.c:88]. If the documents do not contain the "           \
    "answer, say so."

static void add_stop(struct sd_chat_template *t, int32_t id)
{
    if (id < 0 || t->n_stop >= SD_CHAT_MAX_STOP)
        return;
    for (int i = 0; i < t->n_stop; i++)
        if (t->stop[i] == id)
            return;
    t->stop[t->n_stop++] = id;
}

void sd_chat_template_detect(const struct sd_tokenizer *tok, int32_t config_eos, struct sd_chat_template *out)
{
    memset(out, 0, sizeof *out);
    out->bos = sd_tokenizer_bos(tok);
    if (sd_tokenizer_token_id(tok, "<|document|>") >= 0 && sd_tokenizer_token_id(tok, "<|question|>") >= 0 &&
        sd_tokenizer_token_id(tok, "<|answer|>") >= 0) {
        out->kind = SD_CHAT_MINI;
        out->name = "sparsedoc-mini/1";
        out->ctx_format = SD_CTX_FORMAT_PASSAGES;
        // MODEL.md (v6): 90% of held-out answers right at 16K-64K, but 76% on a larger 64K sample; contexts stay
        // at 32K and longer scopes go through FTS5 selection or map-reduce.
        out->trained_ctx = 32768;
        // It answers "VALUE [MARKER]" but copies markers poorly (MODEL.md: wrong digits, paths from its
        // training set); decoding is constrained so a marker it writes exists in the context.
        out->constrain_markers = 1;
        add_stop(out, sd_tokenizer_token_id(tok, "<|end|>"));
    } else if (sd_tokenizer_token_id(tok, DS_USER) >= 0 && sd_tokenizer_token_id(tok, DS_ASSISTANT) >= 0) {
        out->kind = SD_CHAT_DEEPSEEK;
        out->name = "deepseek-v3.2/2";
        add_stop(out, sd_tokenizer_token_id(tok, DS_EOS));
    } else if (sd_tokenizer_token_id(tok, "<|start_header_id|>") >= 0) {
        out->kind = SD_CHAT_LLAMA3;
        out->name = "llama-3/2";
        add_stop(out, sd_tokenizer_token_id(tok, "<|eot_id|>"));
        add_stop(out, sd_tokenizer_token_id(tok, "<|end_of_text|>"));
        add_stop(out, sd_tokenizer_token_id(tok, "<|eom_id|>"));
    } else if (sd_tokenizer_token_id(tok, "<|im_start|>") >= 0) {
        out->kind = SD_CHAT_CHATML;
        out->qwen_think = sd_tokenizer_token_id(tok, "<think>") >= 0;
        out->name = out->qwen_think ? "chatml-nothink/2" : "chatml/2";
        add_stop(out, sd_tokenizer_token_id(tok, "<|im_end|>"));
        add_stop(out, sd_tokenizer_token_id(tok, "<|endoftext|>"));
    } else {
        out->kind = SD_CHAT_PLAIN;
        out->name = "plain/2";
    }
    add_stop(out, sd_tokenizer_eos(tok));
    add_stop(out, config_eos);
}

int sd_chat_is_stop(const struct sd_chat_template *t, int32_t id)
{
    for (int i = 0; i < t->n_stop; i++)
        if (t->stop[i] == id)
            return 1;
    return 0;
}

enum sd_status sd_tokens_push(struct sd_tokens *v, const int32_t *ids, size_t n, struct sd_err *err)
{
    if (v->n + n > v->cap) {
        size_t cap = v->cap ? v->cap : 256;
        while (cap < v->n + n)
            cap *= 2;
        int32_t *nv = realloc(v->ids, cap * sizeof *nv);
        if (!nv)
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory building a prompt");
        v->ids = nv;
        v->cap = cap;
    }
    if (n)
        memcpy(v->ids + v->n, ids, n * sizeof *ids);
    v->n += n;
    return SD_OK;
}

// Encode literal template text (special tokens in it are matched) and append it.
static enum sd_status push_text(const struct sd_tokenizer *tok, const char *text, struct sd_tokens *out,
                                struct sd_err *err)
{
    int32_t *ids = NULL;
    size_t n = 0;
    enum sd_status r = sd_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, err);
    if (!r)
        r = sd_tokens_push(out, ids, n, err);
    free(ids);
    return r;
}

// Break up special-token spellings in user text ("<|" and "<｜" get a space after '<'); malloc'd.
static char *escape_user(const char *text)
{
    size_t len = strlen(text);
    char *s = malloc(2 * len + 1);
    if (!s)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        s[o++] = text[i];
        if (text[i] == '<' && i + 1 < len && (text[i + 1] == '|' || !strncmp(text + i + 1, DS_BAR, 3)))
            s[o++] = ' ';
    }
    s[o] = 0;
    return s;
}

// Encode label + user text (escaped) + tail in one call and append it. One call, because the tokenizer's
// pre-split and merges must see the seams as the model's own chat template does (the whole conversation
// encoded at once): "Question: " and "What" encoded apart give ':' ' ' 'What' where the model saw ':' ' What'.
// Special tokens in label and tail are matched; the user text's spellings are broken up first.
static enum sd_status push_turn(const struct sd_tokenizer *tok, const char *label, const char *text, const char *tail,
                                struct sd_tokens *out, struct sd_err *err)
{
    char *u = escape_user(text);
    char *s = u ? malloc(strlen(label) + strlen(u) + strlen(tail) + 1) : NULL;
    if (!s) {
        free(u);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory building a prompt");
    }
    strcpy(s, label);
    strcat(s, u);
    strcat(s, tail);
    enum sd_status r = push_text(tok, s, out, err);
    free(s);
    free(u);
    return r;
}

// sparsedoc-mini's pieces are encoded apart: that is how it was trained (tools/train/docgen.py).
static enum sd_status push_user(const struct sd_tokenizer *tok, const char *text, struct sd_tokens *out,
                                struct sd_err *err)
{
    return push_turn(tok, "", text, "", out, err);
}

enum sd_status sd_chat_append_prefix(const struct sd_chat_template *t, const struct sd_tokenizer *tok,
                                     struct sd_tokens *out, struct sd_err *err)
{
    enum sd_status r;
    if (t->bos >= 0 && (r = sd_tokens_push(out, &t->bos, 1, err)))
        return r;
    switch (t->kind) {
    case SD_CHAT_MINI:
        return push_text(tok, MINI_HEAD, out, err);
    case SD_CHAT_DEEPSEEK:
        return push_text(tok, SYSTEM_PROMPT DS_USER "Documents:\n\n", out, err);
    case SD_CHAT_LLAMA3:
        return push_text(tok,
                         "<|start_header_id|>system<|end_header_id|>\n\n" SYSTEM_PROMPT
                         "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nDocuments:\n\n",
                         out, err);
    case SD_CHAT_CHATML:
        return push_text(tok, "<|im_start|>system\n" SYSTEM_PROMPT "<|im_end|>\n<|im_start|>user\nDocuments:\n\n", out,
                         err);
    case SD_CHAT_PLAIN:
        return push_text(tok, "Documents:\n\n", out, err);
    }
    return SD_OK;
}

enum sd_status sd_chat_append_context_end(const struct sd_chat_template *t, const struct sd_tokenizer *tok,
                                          struct sd_tokens *out, struct sd_err *err)
{
    if (t->kind == SD_CHAT_MINI) // passages end with "\n"; the question follows directly
        return SD_OK;
    return push_text(tok, "\n", out, err);
}

enum sd_status sd_chat_append_question(const struct sd_chat_template *t, const struct sd_tokenizer *tok,
                                       const char *question, int first, struct sd_tokens *out, struct sd_err *err)
{
    enum sd_status r = SD_OK;
    switch (t->kind) {
    case SD_CHAT_MINI:
        if ((r = push_text(tok, "<|question|>", out, err)) || (r = push_user(tok, question, out, err)))
            return r;
        return push_text(tok, "\n<|answer|>", out, err);
    case SD_CHAT_DEEPSEEK:
        return push_turn(tok, first ? "Question: " : DS_USER, question, DS_ASSISTANT "</think>", out, err);
    case SD_CHAT_LLAMA3:
        return push_turn(tok, first ? "Question: " : "<|start_header_id|>user<|end_header_id|>\n\n", question,
                         "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", out, err);
    case SD_CHAT_CHATML:
        return push_turn(tok, first ? "Question: " : "<|im_start|>user\n", question,
                         t->qwen_think ? "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
                                       : "<|im_end|>\n<|im_start|>assistant\n",
                         out, err);
    case SD_CHAT_PLAIN:
        return push_turn(tok, "Question: ", question, "\nAnswer:", out, err);
    }
    return r;
}

enum sd_status sd_chat_append_answer(const struct sd_chat_template *t, const struct sd_tokenizer *tok,
                                     const char *answer, struct sd_tokens *out, struct sd_err *err)
{
    switch (t->kind) {
    case SD_CHAT_MINI: {
        enum sd_status r = push_user(tok, answer, out, err);
        return r ? r : push_text(tok, "<|end|>", out, err);
    }
    case SD_CHAT_DEEPSEEK:
        return push_turn(tok, "", answer, DS_EOS, out, err);
    case SD_CHAT_LLAMA3:
        return push_turn(tok, "", answer, "<|eot_id|>", out, err);
    case SD_CHAT_CHATML:
        return push_turn(tok, "", answer, "<|im_end|>\n", out, err);
    case SD_CHAT_PLAIN:
        return push_turn(tok, "", answer, "\n\n", out, err);
    }
    return SD_OK;
}
