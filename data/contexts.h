// contexts.h: packing the spans of a scope (a set of documents) into contexts of at most N tokens.
// Documents are taken in path order and spans in document order; each span becomes a citation header
// ("[p. 12]" or "[src/main.c:10-69]") plus its paragraphs, each tokenized separately, so the same
// documents and tokenizer always give the same token sequence (stable KV prefix hashes). Contexts break
// at span boundaries; a span larger than N alone is split at paragraph, then line, then token boundaries.
// Each context records every span's token offset, so a position maps back to a page or a line.
// Contexts are persisted by contexts_store.c: a change to what sd_contexts_build produces for the same
// input must bump SD_CONTEXTS_STORE_VERSION there, or stale stored contexts would be loaded.
#ifndef SD_DATA_CONTEXTS_H
#define SD_DATA_CONTEXTS_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"
#include "store.h"

#define SD_CONTEXT_DEFAULT_TOKENS 65536
#define SD_CONTEXT_MAX_TOKENS 131072

// Tokenize text[0..len) without special tokens: *ids malloc'd (caller frees).
typedef enum sd_status (*sd_tokenize_fn)(void *user, const char *text, size_t len, int32_t **ids, size_t *n_ids,
                                         struct sd_err *err);

struct sd_ctx_span {
    int64_t span_id, doc_id;
    int part;                // 0, or the piece number of a span split across contexts
    int page_no;             // source reference copied from the span
    int line_start, line_end;
    uint32_t tok_offset;     // first token of this span (its header) in the context
    uint32_t n_tokens;
};

struct sd_context {
    int32_t *tokens;
    size_t n_tokens;
    struct sd_ctx_span *spans;
    size_t n_spans;
};

struct sd_contexts {
    struct sd_context *items;
    size_t n;
    size_t total_tokens;
};

// How spans are written into a context.
enum sd_ctx_format {
    // "=== title (path) ===" before each document, then per span a header line ("[p. 12]" or
    // "[src/main.c:10-69]"), its paragraphs, and a blank line.
    SD_CTX_FORMAT_HEADERS = 0,
    // One line per passage, each led by its own marker, no document titles and no blank lines: a page is
    // split into passages of at most SD_CTX_PASSAGE_SENTENCES sentences (whitespace collapsed),
    // "[p. 12] First sentence. Second one.\n"; a text/code span gives one line per non-empty source line,
    // "[src/main.c:88] <the line, tabs as 4 spaces, at most 200 bytes>\n". The marker, each " sentence"
    // (or " line") and the "\n" are tokenized separately. This is the format sparsedoc-mini was trained on
    // (tools/train/docgen.py).
    SD_CTX_FORMAT_PASSAGES,
};
#define SD_CTX_PASSAGE_SENTENCES 9

struct sd_contexts_opts {
    size_t max_tokens; // N: 0 -> SD_CONTEXT_DEFAULT_TOKENS; at most SD_CONTEXT_MAX_TOKENS
    enum sd_ctx_format format; // 0: SD_CTX_FORMAT_HEADERS
    sd_tokenize_fn tokenize;
    void *tok_user;
};

// Build the contexts of the given documents (n_docs = 0: every document in the store).
enum sd_status sd_contexts_build(struct sd_store *s, const int64_t *doc_ids, size_t n_docs,
                                 const struct sd_contexts_opts *opts, struct sd_contexts **out, struct sd_err *err);
void sd_contexts_free(struct sd_contexts *c);

// The path a context shows for a document (and a citation marker names): relative to the folder it was
// ingested from, else as stored. Points into path.
const char *sd_ctx_display_path(const char *path, const char *root);

// The span entry covering token position pos of context c; NULL if pos is out of range.
const struct sd_ctx_span *sd_context_locate(const struct sd_context *c, size_t pos);

#endif
