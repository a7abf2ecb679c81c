// tokenizer_json.h: engine-internal entry to the tokenizer builder for a tokenizer.json document that is
// already parsed (json-c), so other front ends (the GGUF vocabulary in tokenizer_gguf.c) can describe a
// tokenizer in tokenizer.json terms and share one pipeline implementation.
#ifndef SD_TOKENIZER_JSON_H
#define SD_TOKENIZER_JSON_H

#include "tokenizer.h"

struct json_object;

// Build a tokenizer from root (a tokenizer.json object) and cfg (a tokenizer_config.json object or NULL:
// bos_token, eos_token, add_bos_token, add_eos_token). Borrows both; label names the source in messages.
enum sd_status sd_tokenizer_from_json(struct json_object *root, struct json_object *cfg, const char *label,
                                      struct sd_tokenizer **out, struct sd_err *err);

#endif
