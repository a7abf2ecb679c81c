// qa.h: the question-answering service shared by the CLI (ask, chat, summarize) and the GTK UI.
// It owns one loaded model (weights, tokenizer, chat template), the document store, and the
// persistent KV prefix cache, and turns (scope, question) into a streamed, cited answer:
//   contexts of the scope (data/contexts, counted in the model's tokens) -> choose the relevant ones
//   (FTS5) or map-reduce over all -> chat-template prompt (context first, question last) ->
//   restore the longest cached prefix, prefill the rest, store new blocks -> stream the answer ->
//   map citation markers back to pages / path:line through the context's span table.
// Threading: an sd_qa is used by one thread at a time (the UI runs calls on a worker thread; events
// arrive on that thread). Every call returns a status and fills struct sd_err; nothing exits.
#ifndef SD_APP_QA_H
#define SD_APP_QA_H

#include <stddef.h>
#include <stdint.h>

#include "ingest.h"
#include "sampler.h"
#include "sd_status.h"
#include "session.h"
#include "store.h"

struct sd_qa; // opaque

struct sd_qa_opts {
    const char *model_dir;  // NULL: $SPARSEDOC_MODEL, else "model" in $XDG_CONFIG_HOME/sparsedoc/config.json,
                            // else the shipped data/models/sparsedoc-mini (sd_qa_resolve_model)
    const char *db_path;    // NULL: sd_paths_db default (XDG data dir)
    const char *cache_dir;  // NULL: sd_kvcache_dir default (XDG cache dir)
    int no_cache;           // 1: never read or write the KV prefix cache
    uint64_t cache_budget;  // 0: the cache's default
    int n_ctx;              // max tokens of one prompt (context + question + answer); 0: min(model max, 65536)
    int n_threads;          // 0: all cores
    int index_topk;         // 0: the model's
    enum sd_dsa_mode dsa_mode;
    const char *backend;    // NULL or "cpu"
    int gpu_weights_bf16;   // with a GPU backend: sd_session_params.gpu_weights_bf16 / gpu_weights_fp8
    int gpu_weights_fp8;
    int indexer_fp8;      // sd_session_params.indexer_fp8: DeepSeek's FP8 indexer numerics (DSA models)
    int fp8_act;          // sd_session_params.fp8_act: DeepSeek's FP8 GEMM numerics (models with FP8 matrices)
    int kv_fp8;           // sd_session_params.kv_fp8: DeepSeek's FP8 MLA latent cache (MLA models)
    int no_ocr;           // ingestion: never OCR pages without a text layer (data/ingest.h)
    const char *ocr_lang; // ingestion: Tesseract languages; NULL: eng
};

// Open the service: load the model and tokenizer, open the store and the cache. Errors name what is
// missing ("no model configured: ...", "model needs N GiB, this machine has M", ...).
enum sd_status sd_qa_open(const struct sd_qa_opts *opts, struct sd_qa **out, struct sd_err *err);
void sd_qa_close(struct sd_qa *qa);
struct sd_store *sd_qa_store(struct sd_qa *qa);  // borrowed
const char *sd_qa_model_dir(const struct sd_qa *qa); // borrowed
const char *sd_qa_model_name(const struct sd_qa *qa); // borrowed: the model directory's base name

// Progress and streaming callbacks (all optional). They run on the calling thread.
struct sd_qa_events {
    void *user;
    // stage: "ingest", "tokenize", "restore", "prefill", "generate", "reduce"; done/total in its units.
    void (*on_progress)(void *user, const char *stage, int64_t done, int64_t total);
    // Each piece of answer text as it is generated (valid UTF-8; pieces concatenate to the answer).
    void (*on_text)(void *user, const char *text, size_t len);
    // Ingest events (sd_qa_ingest).
    void (*on_ingest)(void *user, const struct sd_ingest_event *ev);
    // Polled between prefill chunks and generated tokens: non-zero stops the call (SD_ERR_ARG
    // "cancelled"); what was generated so far stays in the result.
    int (*should_cancel)(void *user);
};

// Ingest files or trees into the store (tokens counted with the model's tokenizer).
enum sd_status sd_qa_ingest(struct sd_qa *qa, char *const *paths, size_t n_paths, const char *password,
                            const struct sd_qa_events *ev, struct sd_ingest_stats *stats, struct sd_err *err);

// A scope: documents by id (n_docs 0: every document in the store).
struct sd_qa_scope {
    const int64_t *doc_ids;
    size_t n_docs;
};

enum sd_qa_strategy {
    SD_QA_AUTO = 0,   // one context: use it; more: choose by FTS5 (map-reduce when nothing matches)
    SD_QA_SELECT,     // choose the best-matching context(s) by FTS5 scores
    SD_QA_MAPREDUCE,  // answer over every context, then combine
};

struct sd_qa_ask_opts {
    int max_new_tokens;                 // 0: 256
    struct sd_sampler_params sampling;  // zeroed: greedy
    enum sd_qa_strategy strategy;
    int64_t conversation_id;            // 0: none; else earlier turns are part of the prompt and the
                                        // turn is appended to that conversation
};

// A citation found in the answer, mapped back to its source.
struct sd_qa_citation {
    char *marker;      // as written in the answer, e.g. "p. 12" or "src/main.c:88"
    int valid;         // 1: the marker names a span of the contexts used
    int64_t doc_id;
    char *path;        // document path
    char *title;       // may be NULL
    int page_no;       // 1-based physical page, 0 for text/code
    char *page_label;  // may be NULL
    int line_start, line_end; // 0 for PDFs
    // (added) grounding (sd_cite_ground): 1 the claim before the marker is in the cited place (after any
    // correction), 0 it is nowhere in the contexts used, -1 not checked (no claim of 2..200 bytes).
    int grounded;
    char *corrected_from; // the marker the model wrote when it was re-anchored (marker is the new one); else NULL
};

struct sd_qa_result {
    char *answer;                 // full answer text (without the EOS)
    struct sd_qa_citation *cites; // n_cites entries
    size_t n_cites;
    char *strategy;               // human description: "whole scope in one context", "FTS5 chose context 3 of 7", "map-reduce over 7 contexts"
    int n_contexts, n_contexts_used;
    int64_t tokens_prompt;        // prompt tokens over all model calls
    int64_t tokens_reused;        // restored from the KV cache (or kept in the live session)
    int64_t tokens_prefilled;     // actually run through the model
    int64_t tokens_generated;
    int blocks_dropped;           // corrupt cache blobs dropped and recomputed
    int blocks_stored;            // new cache blocks written
    double restore_s, prefill_s, ttft_s, generate_s, total_s;
    int64_t conversation_id;      // the conversation the turn was saved to (0: none)
    // (added) cache detail: tokens restored from the persistent cache (the rest of tokens_reused was kept
    // in the live session); tokens of the context prefix (system + documents) of the prompt(s).
    int64_t tokens_restored;
    int64_t tokens_context;
    // (added) non-empty when writing new blocks to the KV cache failed (disk full, I/O error): the answer
    // stands, the next run recomputes what was not stored; front ends show it as a warning.
    char cache_write_error[sizeof ((struct sd_err *)0)->msg];
};
void sd_qa_result_free(struct sd_qa_result *r); // frees the members, not r

enum sd_status sd_qa_ask(struct sd_qa *qa, const struct sd_qa_scope *scope, const char *question,
                         const struct sd_qa_ask_opts *opts, const struct sd_qa_events *ev, struct sd_qa_result *out,
                         struct sd_err *err);

// Conversations (persisted in the store; resumable).
enum sd_status sd_qa_conversation_new(struct sd_qa *qa, const struct sd_qa_scope *scope, const char *title,
                                      int64_t *id, struct sd_err *err);
struct sd_qa_turn {
    const char *question, *answer;
    int64_t created_ms;
};
typedef int (*sd_qa_turn_fn)(void *user, const struct sd_qa_turn *t);
// Load a conversation: its scope (*doc_ids malloc'd, caller frees) and turns in order through fn.
enum sd_status sd_qa_conversation_load(struct sd_qa *qa, int64_t id, int64_t **doc_ids, size_t *n_docs,
                                       sd_qa_turn_fn fn, void *user, struct sd_err *err);
struct sd_qa_conversation {
    int64_t id;
    const char *title;
    int64_t created_ms, updated_ms;
    int n_turns;
};
typedef int (*sd_qa_conversation_fn)(void *user, const struct sd_qa_conversation *c);
enum sd_status sd_qa_conversations_foreach(struct sd_qa *qa, sd_qa_conversation_fn fn, void *user,
                                           struct sd_err *err);

// ---- (added) ----
// Resolve the model directory as sd_qa_open does (explicit_dir may be NULL). *out malloc'd (caller frees).
enum sd_status sd_qa_resolve_model(const char *explicit_dir, char **out, struct sd_err *err);
// Estimate the memory a model needs (weights as loaded + kv_bytes) against MemAvailable: SD_ERR_NOMEM
// with "model needs N GiB, this machine has M" when it does not fit. *need (may be NULL) gets the bytes.
enum sd_status sd_qa_check_memory(const char *model_dir, uint64_t kv_bytes, uint64_t *need, struct sd_err *err);
const char *sd_qa_template_name(const struct sd_qa *qa); // borrowed: e.g. "sparsedoc-mini/1"
int sd_qa_n_ctx(const struct sd_qa *qa);                   // tokens of one prompt in use
// The session parameters the service's engine sessions use (backend, DSA and weight settings); borrowed.
const struct sd_session_params *sd_qa_session_params(const struct sd_qa *qa);
// Tokenizer of the loaded model (borrowed), e.g. for counting tokens.
struct sd_tokenizer;
const struct sd_tokenizer *sd_qa_tokenizer(const struct sd_qa *qa);
// The loaded model (borrowed; lives until sd_qa_close), for callers that run their own session on it.
const struct sd_model *sd_qa_model(const struct sd_qa *qa);
// Tokens every context leaves free for the question, history and answer (contexts are packed to
// sd_qa_n_ctx - SD_QA_RESERVE - template overhead).
#define SD_QA_RESERVE 512

#endif
