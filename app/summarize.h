// summarize.h: batch summarization, the service behind `sparsedoc summarize` (and the UI later).
// One summary per document: the document's contexts (packed exactly as `ask` packs them, so the KV
// prefix cache serves both) are summarized one by one with their page or line range, then the part
// summaries are summarized again, hierarchically, until one remains. A batch writes one Markdown file
// per document, an index.md and a manifest (all atomically: temp file, fsync, rename) into an output
// directory; documents whose (content hash, model fingerprint, style, max words) are in the manifest
// are skipped, so an interrupted batch resumes. Progress through callbacks; nothing is printed here.
#ifndef SD_APP_SUMMARIZE_H
#define SD_APP_SUMMARIZE_H

#include <stddef.h>
#include <stdint.h>

#include "qa.h"
#include "sd_status.h"

enum sd_summ_style {
    SD_SUMM_BRIEF = 0, // a short paragraph
    SD_SUMM_DETAILED,  // a longer summary
    SD_SUMM_BULLETS,   // bullet points
};
const char *sd_summ_style_name(enum sd_summ_style s);
// Parse "brief", "detailed" or "bullets"; -1 when unknown.
int sd_summ_style_parse(const char *name, enum sd_summ_style *out);

#define SD_SUMM_MAX_WORDS_LIMIT 4000
// Bump when prompts or the reduction change: summaries made with another version are redone.
#define SD_SUMM_PROMPT_VERSION 1

struct sd_summ_opts {
    enum sd_summ_style style;
    int max_words; // per summary (final and every part); 0: brief 120, detailed 400, bullets 200
    int fan_in;    // at most this many parts per combining call; 0: as many as fit one context (min 2)
};

// The word limit in effect (max_words, or the style's default).
int sd_summ_opts_words(const struct sd_summ_opts *o);

struct sd_summarizer; // opaque: a loaded model + session + KV cache for summaries

// Open a summarizer over the service's store and model. qopts are the options qa was opened with
// (model, cache, n_ctx, threads, DSA settings), so contexts, prompts and cache keys match `ask`.
// qa is borrowed and must outlive the summarizer.
enum sd_status sd_summarizer_open(struct sd_qa *qa, const struct sd_qa_opts *qopts, struct sd_summarizer **out,
                                  struct sd_err *err);
void sd_summarizer_close(struct sd_summarizer *s);
const char *sd_summarizer_fingerprint(const struct sd_summarizer *s); // borrowed: 64 hex digits
// A caveat about the model's ability to summarize (from what its model card says), or NULL. Borrowed.
const char *sd_summarizer_model_note(const struct sd_summarizer *s);
struct sd_qa *sd_summarizer_qa(struct sd_summarizer *s); // borrowed: the service it was opened on
int sd_summarizer_n_ctx(const struct sd_summarizer *s);  // tokens of one prompt (as `ask` uses)

// One part of a summary: a context (level 0) or a combination of parts (level >= 1).
struct sd_summary_part {
    int level;
    int page_first, page_last; // 1-based physical pages; 0 for text/code
    int line_first, line_last; // 1-based lines; 0 for PDFs
    char *range;               // "pages 3-7", "lines 1-120" (as shown to the model and in the output)
    char *text;
};

struct sd_summary {
    int64_t doc_id;
    char *path, *title, *kind; // title may be NULL
    char sha256[65];
    int64_t n_pages, n_lines;
    char *text;                    // the final summary
    struct sd_summary_part *parts; // every part, level 0 first, in document order within a level
    size_t n_parts;
    int n_contexts, depth; // depth 0: the document fit in one context
    int ask_packing;       // 1: contexts packed as `ask` packs them (it reuses their cached prefill); 0: smaller,
                           // to leave room for a long summary (--max-words)
    int n_calls;           // model calls
    int64_t tokens_prompt, tokens_reused, tokens_prefilled, tokens_generated;
    int blocks_stored, blocks_dropped;
    double restore_s, prefill_s, generate_s, total_s;
};
void sd_summary_free(struct sd_summary *r); // frees the members, not r

// Events (all optional), on the calling thread.
enum sd_summ_doc_kind {
    SD_SUMM_DOC_START,   // about to summarize (summary NULL)
    SD_SUMM_DOC_DONE,    // summarized and written (summary, file, json set)
    SD_SUMM_DOC_SKIPPED, // already summarized with the same settings (file, json set; summary NULL)
    SD_SUMM_DOC_FAILED,  // msg says why (ingest or summarization error); the batch goes on
};
struct sd_summ_doc_event {
    enum sd_summ_doc_kind kind;
    const char *path;
    size_t index, total;  // 0-based index of this document in the batch / documents in it
    int64_t tokens;       // the document's tokens (0 when unknown), for ETAs
    int64_t tokens_total; // tokens of every document of the batch
    const struct sd_summary *summary;
    const char *file; // the Markdown file written (absolute path)
    const char *json; // the document's record as one line of JSON
    const char *msg;
};
struct sd_summ_events {
    void *user;
    // stage: "ingest", "contexts", "restore", "prefill", "generate", "reduce"; done/total in its units
    // (tokens for prefill and generate).
    void (*on_progress)(void *user, const char *stage, int64_t done, int64_t total);
    void (*on_doc)(void *user, const struct sd_summ_doc_event *ev);
    void (*on_ingest)(void *user, const struct sd_ingest_event *ev);
    void (*on_text)(void *user, const char *text, size_t len); // generated text as it comes
    int (*should_cancel)(void *user);                          // polled between prefill chunks and tokens
};

// Summarize one document of the store. On error *out holds nothing to free.
enum sd_status sd_summarize_doc(struct sd_summarizer *s, int64_t doc_id, const struct sd_summ_opts *opts,
                                const struct sd_summ_events *ev, struct sd_summary *out, struct sd_err *err);

struct sd_summ_batch_opts {
    const char *out_dir; // NULL: "summaries" in the current directory; created if needed
    struct sd_summ_opts summ;
    const char *password; // for encrypted PDFs
    int force;            // 1: summarize again even when the manifest says done
};
struct sd_summ_batch_stats {
    size_t documents, done, skipped, failed;
    int cancelled;
    int64_t tokens_prompt, tokens_reused, tokens_prefilled, tokens_generated;
    double seconds;
};

// Ingest paths (files and trees, through sd_qa_ingest), then summarize each of their documents in
// path order into opts->out_dir. A failing document is reported (SD_SUMM_DOC_FAILED) and counted and
// the batch goes on; SD_OK then still. Errors: the output directory or the manifest cannot be used,
// the store fails, or cancellation (SD_ERR_ARG "cancelled"; what was finished is kept).
enum sd_status sd_summarize_batch(struct sd_summarizer *s, char *const *paths, size_t n_paths,
                                  const struct sd_summ_batch_opts *opts, const struct sd_summ_events *ev,
                                  struct sd_summ_batch_stats *stats, struct sd_err *err);

// Names inside the output directory.
#define SD_SUMM_MANIFEST ".sparsedoc-summaries.json"
#define SD_SUMM_INDEX "index.md"

#endif
