// tokenizer.h: HF tokenizer.json tokenizers (byte-level BPE as in GPT-2/Llama-3/Qwen/DeepSeek, and
// SentencePiece-style BPE with byte fallback as in Llama-2/Mistral/llama2.c). Encode, decode,
// added/special tokens. Pure C (json-c + PCRE2), no model dependency.
#ifndef SD_TOKENIZER_H
#define SD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

struct sd_tokenizer; // opaque
struct sd_gguf;

// Build from a GGUF file's embedded vocabulary (tokenizer.ggml.*: "gpt2" byte-level BPE with merges and a
// pre-tokenizer name, or "llama" SentencePiece-style with scores and byte fallback). Caller frees.
enum sd_status sd_tokenizer_from_gguf(const struct sd_gguf *g, struct sd_tokenizer **out, struct sd_err *err);
// The tokenizer of a model path as sd_model_load accepts it: the GGUF file's embedded vocabulary, or
// <dir>/tokenizer.json. Caller frees.
enum sd_status sd_tokenizer_load_model(const char *model_path, struct sd_tokenizer **out, struct sd_err *err);

// Load from a tokenizer.json path. On success *out is a new tokenizer the caller frees with
// sd_tokenizer_free(). tokenizer_config.json beside it (if present) supplies bos/eos names.
enum sd_status sd_tokenizer_load(const char *json_path, struct sd_tokenizer **out, struct sd_err *err);
void sd_tokenizer_free(struct sd_tokenizer *tok);

// Encode UTF-8 text of len bytes. Special/added tokens written literally in text are matched
// (as HF does). add_special: prepend BOS when the tokenizer's post-processor/template does.
// *ids is malloc'd (caller frees), *n_ids its length.
enum sd_status sd_tokenizer_encode(const struct sd_tokenizer *tok, const char *text, size_t len, int add_special,
                                   int32_t **ids, size_t *n_ids, struct sd_err *err);

// Callback-shaped forms for code that takes a (function, void *user) pair, such as data/'s context
// packer and ingester: user is a const struct sd_tokenizer *. Encode without special tokens; count
// returns the number of tokens, or -1 on failure.
enum sd_status sd_tokenizer_encode_cb(void *tok, const char *text, size_t len, int32_t **ids, size_t *n_ids,
                                      struct sd_err *err);
int64_t sd_tokenizer_count_cb(void *tok, const char *text, size_t len);
// Decode ids to UTF-8 (malloc'd, NUL-terminated, caller frees). skip_special drops special tokens.
enum sd_status sd_tokenizer_decode(const struct sd_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special,
                                   char **text, struct sd_err *err);

// Streaming decode of one token: the bytes this token adds (may be a partial UTF-8 sequence for
// byte-level/byte-fallback tokens). Returns a borrowed pointer valid until the tokenizer is freed,
// or NULL for an unknown id; *len gets its length.
const char *sd_tokenizer_token_bytes(const struct sd_tokenizer *tok, int32_t id, size_t *len);

int32_t sd_tokenizer_n_vocab(const struct sd_tokenizer *tok); // largest id + 1
int32_t sd_tokenizer_bos(const struct sd_tokenizer *tok);     // -1 if none
int32_t sd_tokenizer_eos(const struct sd_tokenizer *tok);     // -1 if none
int32_t sd_tokenizer_token_id(const struct sd_tokenizer *tok, const char *piece); // -1 if absent
int sd_tokenizer_is_special(const struct sd_tokenizer *tok, int32_t id);

#endif
