// contexts_store.h: persistence of packed contexts (sd_contexts_build's output) in the store, so a scope
// is tokenized once: tables context_sets (one per scope key, tokenizer, max_tokens, format, version),
// context_set_docs (the documents of a set: deleting or replacing a document drops its sets) and
// contexts (one row per context: little-endian int32 token ids, a span table, an XXH3 checksum).
// A stored set that fails its checks is a miss: it is deleted and rebuilt, never used. Loaded contexts
// are byte-identical to a fresh build (the KV prefix cache depends on it).
#ifndef SD_DATA_CONTEXTS_STORE_H
#define SD_DATA_CONTEXTS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "contexts.h"
#include "sd_status.h"
#include "store.h"

// Part of every set's key: bump whenever sd_contexts_build (data/contexts.c) can give a different
// result for the same spans, tokenizer and options, so sets written by older code are never loaded.
#define SD_CONTEXTS_STORE_VERSION 1
// Bounds on what is kept: after each save the oldest sets beyond these are deleted (the newest set is
// always kept, whatever its size).
#define SD_CONTEXTS_KEEP_SETS 64
#define SD_CONTEXTS_KEEP_TOKENS (16 * 1024 * 1024)
// Longest tokenizer key accepted (with the NUL).
#define SD_CONTEXTS_TOKENIZER_KEY_MAX 128

struct sd_contexts_load_info {
    int hit;     // 1: loaded from the store; 0: built
    int saved;   // 1: built and written (0 on a hit, for an empty scope, or when a document changed meanwhile)
    int dropped; // 1: a stored set for this key failed its checks and was deleted (then rebuilt)
    char dropped_why[256]; // what failed, when dropped
};

// The tokenizer identity for a tokenizer.json file: "sha256:" + the SHA-256 of its bytes (cheap next to
// tokenizing: a few ms). key needs SD_CONTEXTS_TOKENIZER_KEY_MAX bytes.
enum sd_status sd_contexts_tokenizer_key(const char *tokenizer_json_path, char key[SD_CONTEXTS_TOKENIZER_KEY_MAX],
                                         struct sd_err *err);

// The contexts of documents doc_ids[0..n_docs) (n_docs = 0: every document in the store), as
// sd_contexts_build(s, doc_ids, n_docs, opts) gives them: loaded when a valid set is stored under
// (sorted ids with each document's content sha256 and ingest time, tokenizer_key, max_tokens, format,
// SD_CONTEXTS_STORE_VERSION), else built and saved in one transaction. Errors writing the store are
// returned (the built contexts are then freed). tokenizer_key must identify opts->tokenize's tokenizer exactly (e.g.
// sd_contexts_tokenizer_key()); at most SD_CONTEXTS_TOKENIZER_KEY_MAX - 1 bytes. A document id that is
// not in the store is SD_ERR_MISSING. Must not be called inside a transaction on s. *out is freed with
// sd_contexts_free(); info may be NULL.
enum sd_status sd_contexts_load_or_build(struct sd_store *s, const int64_t *doc_ids, size_t n_docs,
                                         const struct sd_contexts_opts *opts, const char *tokenizer_key,
                                         struct sd_contexts **out, struct sd_contexts_load_info *info,
                                         struct sd_err *err);

// Stored sets and their size (for statistics and tests).
struct sd_contexts_store_stats {
    int64_t n_sets, n_contexts, n_tokens, n_bytes;
};
enum sd_status sd_contexts_store_stats(struct sd_store *s, struct sd_contexts_store_stats *st, struct sd_err *err);
// Delete every stored set.
enum sd_status sd_contexts_store_clear(struct sd_store *s, struct sd_err *err);

#endif
