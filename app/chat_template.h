// chat_template.h: the prompt layouts of the models sparsedoc runs, as token sequences.
// A prompt is  prefix | context tokens | context end | turn 1 question | answer 1 end | ... | question.
// The prefix and the context are encoded on their own (the context comes ready-tokenized from data/contexts),
// so the prefix + context tokens are identical for every question on the same scope: that is the KV cache key.
// Each question and answer is encoded in one piece with its label and end tokens, so its ids are those of the
// model's own chat template encoded at once (tests/test_qa_prompt.c checks DeepSeek and Llama 3 against theirs);
// sparsedoc-mini's pieces are encoded apart, as it was trained.
// The template is chosen from the tokenizer's special tokens: sparsedoc-mini (<|document|>, <|question|>,
// <|answer|>), DeepSeek-V3.2 (<｜User｜>/<｜Assistant｜>, non-thinking), Llama 3 (<|start_header_id|>),
// Qwen ChatML (<|im_start|>), else a plain "Document: ... Question: ... Answer:" layout.
#ifndef SD_APP_CHAT_TEMPLATE_H
#define SD_APP_CHAT_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "contexts.h"
#include "sd_status.h"
#include "tokenizer.h"

enum sd_chat_kind {
    SD_CHAT_MINI = 0, // sparsedoc-mini (data/models/sparsedoc-mini/MODEL.md), exact
    SD_CHAT_DEEPSEEK, // DeepSeek-V3.2 chat (non-thinking: "<｜Assistant｜></think>")
    SD_CHAT_LLAMA3,   // Llama 3 / 3.1 instruct
    SD_CHAT_CHATML,   // Qwen2 / Qwen3 ChatML (Qwen3: empty think block, non-thinking)
    SD_CHAT_PLAIN,    // base models without chat tokens
};

#define SD_CHAT_MAX_STOP 4

struct sd_chat_template {
    enum sd_chat_kind kind;
    const char *name;               // e.g. "sparsedoc-mini/1" (goes into the model fingerprint)
    enum sd_ctx_format ctx_format;  // how data/contexts writes passages for this model
    int trained_ctx;                // tokens the model is known to work up to (0: its max_position_embeddings)
    int32_t stop[SD_CHAT_MAX_STOP]; // tokens that end an answer
    int n_stop;
    int32_t bos;           // prepended to the prefix (-1: none)
    int qwen_think;        // ChatML with <think> tokens: an empty think block opens the answer
    int constrain_markers; // 1: a "[...]" in the answer may only spell a marker present in the context
};

// Choose the template for a tokenizer (and the config's eos id, -1 if none).
void sd_chat_template_detect(const struct sd_tokenizer *tok, int32_t config_eos, struct sd_chat_template *out);

// Is id one of the template's stop tokens?
int sd_chat_is_stop(const struct sd_chat_template *t, int32_t id);

// A growable token list (ids malloc'd; free with free(ids)).
struct sd_tokens {
    int32_t *ids;
    size_t n, cap;
};
enum sd_status sd_tokens_push(struct sd_tokens *v, const int32_t *ids, size_t n, struct sd_err *err);

// Append the parts of a prompt. User text (questions, earlier answers) has special-token spellings
// broken up ("<|" -> "< |") so it can never inject control tokens.
enum sd_status sd_chat_append_prefix(const struct sd_chat_template *t, const struct sd_tokenizer *tok,
                                     struct sd_tokens *out, struct sd_err *err);
enum sd_status sd_chat_append_context_end(const struct sd_chat_template *t, const struct sd_tokenizer *tok,
                                          struct sd_tokens *out, struct sd_err *err);
// first: the first question after the context (some templates continue the user turn that holds it).
enum sd_status sd_chat_append_question(const struct sd_chat_template *t, const struct sd_tokenizer *tok,
                                       const char *question, int first, struct sd_tokens *out, struct sd_err *err);
// An earlier answer as it stands in the history, with the end-of-turn tokens.
enum sd_status sd_chat_append_answer(const struct sd_chat_template *t, const struct sd_tokenizer *tok,
                                     const char *answer, struct sd_tokens *out, struct sd_err *err);

#endif
