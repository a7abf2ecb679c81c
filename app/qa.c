// qa.c: the question-answering service (see qa.h): owns the model, tokenizer, chat template, store,
// KV prefix cache and one live engine session. An ask builds (and memoizes) the scope's contexts,
// picks the context(s) to use (FTS5 or map-reduce), assembles the prompt as token sequences (chat
// template around prefix | context | question), restores the longest cached prefix or keeps the live
// session's common prefix, prefills the rest, streams the answer, stores the new prefix blocks, and
// maps citation markers back to pages and lines. Model resolution: model_resolve.c; prompt layouts:
// chat_template.c; citations: citations.c.
#include "qa.h"

#ifdef SD_CUDA_BACKEND
#include "sd_cuda.h"
#endif

#include <ctype.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_template.h"
#include "citations.h"
#include "contexts.h"
#include "contexts_store.h"
#include "conversations.h"
#include "dsa.h"
#include "fingerprint.h"
#include "kvcache.h"
#include "markers.h"
#include "model.h"
#include "paths.h"
#include "sd_clock.h"
#include "tokenizer.h"

#define QA_DEFAULT_CTX 65536
#define QA_RESERVE SD_QA_RESERVE // tokens kept free in every context for the question, history and answer
#define QA_PREFILL_CHUNK 256
#define QA_DEFAULT_NEW 256

struct sd_qa {
    char *model_dir, *model_name, *tok_path;
    struct sd_model *model;
    struct sd_tokenizer *tok;
    struct sd_chat_template tpl;
    struct sd_store *store;
    struct sd_kvcache *cache; // NULL with no_cache
    uint8_t fp[SD_FINGERPRINT_BYTES];
    struct sd_session_params sp;
    int n_ctx;
    struct sd_session *sess; // the live session (created on first use)
    struct sd_tokens live;   // the tokens it holds
    float *logits, *logits2;
    size_t prefix_len; // template prefix tokens (before the context)
    // memoized contexts of the last scope
    char *ctx_key;
    struct sd_contexts *ctxs;
    char tok_key[SD_CONTEXTS_TOKENIZER_KEY_MAX]; // identity of tokenizer.json for stored contexts ("" until used)
    int no_ocr;                                  // ingestion (sd_qa_ingest): sd_qa_opts.no_ocr
    char *ocr_lang;                              // and .ocr_lang (owned copy; NULL: eng)
};

// ---------------------------------------------------------------------------------------------------------
// open / close

enum sd_status sd_qa_open(const struct sd_qa_opts *opts, struct sd_qa **out, struct sd_err *err)
{
    struct sd_qa_opts o0 = {0};
    const struct sd_qa_opts *o = opts ? opts : &o0;
    *out = NULL;
    const struct sd_backend *backend = NULL; // NULL: the CPU forward pass
    if (o->backend && strcmp(o->backend, "cpu")) {
#ifdef SD_CUDA_BACKEND
        if (strcmp(o->backend, "cuda"))
            return sd_err_set(err, SD_ERR_ARG, "unknown backend '%s' (available: cpu, cuda)", o->backend);
        if (sd_cuda_device_count() <= 0)
            return sd_err_set(err, SD_ERR_BACKEND,
                              "backend cuda: no CUDA device or driver found on this machine; "
                              "use the cpu backend");
        backend = sd_cuda_backend();
#else
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "backend '%s' is not available in this build (available: cpu; cuda needs a build with nvcc)",
                          o->backend);
#endif
    }
    struct sd_qa *qa = calloc(1, sizeof *qa);
    if (!qa)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    qa->no_ocr = o->no_ocr;
    qa->ocr_lang = o->ocr_lang ? strdup(o->ocr_lang) : NULL;
    enum sd_status r = sd_qa_resolve_model(o->model_dir, &qa->model_dir, err);
    if (r)
        goto fail;
    const char *base = strrchr(qa->model_dir, '/');
    qa->model_name = strdup(base ? base + 1 : qa->model_dir);
    if (asprintf(&qa->tok_path, "%s/tokenizer.json", qa->model_dir) < 0) {
        qa->tok_path = NULL;
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    struct sd_config cfg;
    char cfg_path[4200];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", qa->model_dir);
    if ((r = sd_config_load(cfg_path, &cfg, err)))
        goto fail;
    if ((r = sd_tokenizer_load(qa->tok_path, &qa->tok, err))) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        r = sd_err_set(err, r, "model %s: %s (question answering needs the model's tokenizer.json)", qa->model_dir,
                       msg);
        goto fail;
    }
    sd_chat_template_detect(qa->tok, cfg.eos_token_id, &qa->tpl);
    // Prompt size: --ctx, else min(model max, what the model was trained for, 64K).
    int64_t max_pos = cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings : QA_DEFAULT_CTX;
    if (o->n_ctx > 0) {
        if (o->n_ctx > max_pos) {
            r = sd_err_set(err, SD_ERR_RANGE,
                           "a context of %d tokens is longer than model %s supports (%lld tokens); use --ctx %lld or "
                           "less",
                           o->n_ctx, qa->model_name, (long long)max_pos, (long long)max_pos);
            goto fail;
        }
        if (o->n_ctx < 256 + QA_RESERVE) {
            r = sd_err_set(err, SD_ERR_RANGE, "--ctx %d is too small: use at least %d tokens", o->n_ctx,
                           256 + QA_RESERVE);
            goto fail;
        }
        qa->n_ctx = o->n_ctx;
    } else {
        int64_t n = max_pos < QA_DEFAULT_CTX ? max_pos : QA_DEFAULT_CTX;
        if (qa->tpl.trained_ctx > 0 && n > qa->tpl.trained_ctx)
            n = qa->tpl.trained_ctx;
        qa->n_ctx = (int)n;
    }
    if (qa->n_ctx > SD_CONTEXT_MAX_TOKENS + QA_RESERVE)
        qa->n_ctx = SD_CONTEXT_MAX_TOKENS + QA_RESERVE;
    // Memory: weights as loaded + a KV estimate (MLA latent + indexer keys, or GQA K/V, f32; the latent rows in
    // sd_mla_kv_fp8_row_bytes with kv_fp8).
    uint64_t lat_tok = o->kv_fp8 ? (uint64_t)sd_mla_kv_fp8_row_bytes(cfg.kv_lora_rank, cfg.qk_rope_head_dim)
                                 : (uint64_t)4 * (cfg.kv_lora_rank + cfg.qk_rope_head_dim);
    uint64_t kv_tok = sd_config_is_deepseek(&cfg)
                          ? (uint64_t)cfg.n_layers * (lat_tok + (uint64_t)4 * cfg.index_head_dim)
                          : (uint64_t)cfg.n_layers * 4 * 2 * cfg.n_heads_kv * cfg.head_dim;
    if ((r = sd_qa_check_memory(qa->model_dir, kv_tok * (uint64_t)qa->n_ctx, NULL, err)))
        goto fail;
    if ((r = sd_model_load(qa->model_dir, &qa->model, err)))
        goto fail;
    qa->sp = (struct sd_session_params){.n_ctx = qa->n_ctx,
                                        .n_threads = o->n_threads,
                                        .backend = backend,
                                        .max_batch = QA_PREFILL_CHUNK,
                                        .dsa_mode = o->dsa_mode,
                                        .index_topk = o->index_topk,
                                        .gpu_weights_bf16 = o->gpu_weights_bf16,
                                        .gpu_weights_fp8 = o->gpu_weights_fp8,
                                        .indexer_fp8 = o->indexer_fp8,
                                        .fp8_act = o->fp8_act,
                                        .kv_fp8 = o->kv_fp8};
    qa->logits = malloc(sizeof(float) * (size_t)qa->model->cfg.vocab_size);
    qa->logits2 = malloc(sizeof(float) * (size_t)qa->model->cfg.vocab_size);
    if (!qa->logits || !qa->logits2) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    char *db = NULL;
    if ((r = sd_paths_db(o->db_path, &db, err)))
        goto fail;
    r = sd_store_open(db, &qa->store, err);
    free(db);
    if (r)
        goto fail;
    if (!o->no_cache) {
        if ((r = sd_model_fingerprint(qa->model, qa->tok_path, &qa->sp, qa->tpl.name, qa->fp, err)))
            goto fail;
        struct sd_kvcache_opts co = {.budget_bytes = o->cache_budget};
        if ((r = sd_kvcache_open(o->cache_dir, &co, &qa->cache, err)))
            goto fail;
    }
    struct sd_tokens pre = {0};
    if ((r = sd_chat_append_prefix(&qa->tpl, qa->tok, &pre, err)))
        goto fail;
    qa->prefix_len = pre.n;
    free(pre.ids);
    *out = qa;
    return SD_OK;
fail:
    sd_qa_close(qa);
    return r;
}

void sd_qa_close(struct sd_qa *qa)
{
    if (!qa)
        return;
    sd_session_free(qa->sess);
    free(qa->ocr_lang);
    free(qa->live.ids);
    sd_contexts_free(qa->ctxs);
    free(qa->ctx_key);
    if (qa->cache)
        sd_kvcache_close(qa->cache);
    if (qa->store)
        sd_store_close(qa->store);
    free(qa->logits);
    free(qa->logits2);
    if (qa->model)
        sd_model_free(qa->model);
    if (qa->tok)
        sd_tokenizer_free(qa->tok);
    free(qa->model_dir);
    free(qa->model_name);
    free(qa->tok_path);
    free(qa);
}

struct sd_store *sd_qa_store(struct sd_qa *qa)
{
    return qa->store;
}
const char *sd_qa_model_dir(const struct sd_qa *qa)
{
    return qa->model_dir;
}
const char *sd_qa_model_name(const struct sd_qa *qa)
{
    return qa->model_name;
}
const char *sd_qa_template_name(const struct sd_qa *qa)
{
    return qa->tpl.name;
}
int sd_qa_n_ctx(const struct sd_qa *qa)
{
    return qa->n_ctx;
}

const struct sd_session_params *sd_qa_session_params(const struct sd_qa *qa)
{
    return &qa->sp;
}
const struct sd_model *sd_qa_model(const struct sd_qa *qa)
{
    return qa->model;
}
const struct sd_tokenizer *sd_qa_tokenizer(const struct sd_qa *qa)
{
    return qa->tok;
}

// ---------------------------------------------------------------------------------------------------------
// ingest

struct ingest_fwd {
    const struct sd_qa_events *ev;
};

static void ingest_event(void *user, const struct sd_ingest_event *e)
{
    const struct sd_qa_events *ev = ((struct ingest_fwd *)user)->ev;
    if (ev && ev->on_ingest)
        ev->on_ingest(ev->user, e);
    if (ev && ev->on_progress && e->kind != SD_INGEST_PLANNED && e->kind != SD_INGEST_PAGE) // files, not pages
        ev->on_progress(ev->user, "ingest", (int64_t)e->index, (int64_t)e->total);
}

enum sd_status sd_qa_ingest(struct sd_qa *qa, char *const *paths, size_t n_paths, const char *password,
                            const struct sd_qa_events *ev, struct sd_ingest_stats *stats, struct sd_err *err)
{
    struct ingest_fwd f = {ev};
    struct sd_ingest_opts io = {.password = password,
                                .count_tokens = sd_tokenizer_count_cb,
                                .tok_user = qa->tok,
                                .on_event = ingest_event,
                                .user = &f,
                                .no_ocr = qa->no_ocr,
                                .ocr_lang = qa->ocr_lang};
    struct sd_ingest_stats st0;
    return sd_ingest(qa->store, paths, n_paths, &io, stats ? stats : &st0, err);
}

// ---------------------------------------------------------------------------------------------------------
// contexts of a scope (memoized by documents + their content hashes)

struct key_acc {
    char *buf;
    size_t len, cap;
    int64_t n_docs, n_tokens;
    int oom;
};

static void key_add(struct key_acc *k, const char *s)
{
    size_t n = strlen(s);
    if (k->len + n + 1 > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 256;
        while (cap < k->len + n + 1)
            cap *= 2;
        char *nb = realloc(k->buf, cap);
        if (!nb) {
            k->oom = 1;
            return;
        }
        k->buf = nb;
        k->cap = cap;
    }
    memcpy(k->buf + k->len, s, n + 1);
    k->len += n;
}

static int key_doc(void *user, const struct sd_doc *d)
{
    struct key_acc *k = user;
    char item[128];
    snprintf(item, sizeof item, "%lld:%.16s:%lld;", (long long)d->id, d->sha256 ? d->sha256 : "",
             (long long)d->ingested_at);
    key_add(k, item);
    k->n_docs++;
    k->n_tokens += d->n_spans;
    return 0;
}

// The contexts of scope (memoized in qa). Errors: a document id that does not exist, an empty scope.
static enum sd_status scope_contexts(struct sd_qa *qa, const struct sd_qa_scope *scope, const struct sd_qa_events *ev,
                                     struct sd_contexts **out, struct sd_err *err)
{
    struct key_acc k = {0};
    enum sd_status r = SD_OK;
    char head[96];
    snprintf(head, sizeof head, "%d:%d|", (int)qa->tpl.ctx_format, qa->n_ctx);
    key_add(&k, head);
    if (!scope || !scope->n_docs) {
        r = sd_store_docs_foreach(qa->store, key_doc, &k, err);
    } else {
        for (size_t i = 0; i < scope->n_docs && !r; i++) {
            r = sd_store_doc_get(qa->store, scope->doc_ids[i], key_doc, &k, err);
            if (r == SD_ERR_MISSING)
                r = sd_err_set(err, SD_ERR_MISSING, "no document with id %lld in the store (see 'sparsedoc docs')",
                               (long long)scope->doc_ids[i]);
        }
    }
    if (!r && k.oom)
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    if (!r && (k.n_docs == 0 || k.n_tokens == 0))
        r = sd_err_set(err, SD_ERR_MISSING,
                       k.n_docs == 0 ? "empty scope: no documents to answer from; ingest some with 'sparsedoc ingest "
                                       "PATH' or pass --doc PATH"
                                     : "empty scope: the selected documents have no text (scanned PDFs need OCR)");
    if (r) {
        free(k.buf);
        return r;
    }
    if (qa->ctx_key && !strcmp(qa->ctx_key, k.buf)) {
        free(k.buf);
        *out = qa->ctxs;
        return SD_OK;
    }
    if (ev && ev->on_progress)
        ev->on_progress(ev->user, "tokenize", 0, k.n_docs);
    struct sd_contexts_opts co = {.max_tokens = (size_t)(qa->n_ctx - QA_RESERVE) - qa->prefix_len,
                                  .format = qa->tpl.ctx_format,
                                  .tokenize = sd_tokenizer_encode_cb,
                                  .tok_user = qa->tok};
    struct sd_contexts *c = NULL;
    // Loaded from the store when this scope was packed before with this tokenizer, else built and saved.
    const int64_t *sids = scope ? scope->doc_ids : NULL;
    size_t sn = scope ? scope->n_docs : 0;
    if ((!qa->tok_key[0] && (r = sd_contexts_tokenizer_key(qa->tok_path, qa->tok_key, err))) ||
        (r = sd_contexts_load_or_build(qa->store, sids, sn, &co, qa->tok_key, &c, NULL, err))) {
        // Persisting the packed contexts is an optimisation: when the store cannot be written (disk
        // full, locked), pack them in memory and answer anyway.
        if (r == SD_ERR_MISSING || r == SD_ERR_ARG || r == SD_ERR_NOMEM ||
            sd_contexts_build(qa->store, sids, sn, &co, &c, err) != SD_OK) {
            free(k.buf);
            return r;
        }
        r = SD_OK;
    }
    if (ev && ev->on_progress)
        ev->on_progress(ev->user, "tokenize", k.n_docs, k.n_docs);
    if (!c->n || !c->total_tokens) {
        sd_contexts_free(c);
        free(k.buf);
        return sd_err_set(err, SD_ERR_MISSING, "empty scope: the selected documents have no text");
    }
    sd_contexts_free(qa->ctxs);
    free(qa->ctx_key);
    qa->ctxs = c;
    qa->ctx_key = k.buf;
    *out = c;
    return SD_OK;
}

// ---------------------------------------------------------------------------------------------------------
// choosing contexts by FTS5

static const char *const stop_words[] = {
    "a",    "an",   "and",  "are",  "as",    "at",    "be",    "by",    "can",  "did",   "do",    "does", "for",
    "from", "has",  "have", "how",  "i",     "in",    "is",    "it",    "its",  "me",    "of",    "on",   "or",
    "take", "that", "the",  "this", "to",    "was",   "were",  "what",  "when", "where", "which", "who",  "whom",
    "why",  "will", "with", "you",  "place", "there", "their", "about", "tell", "find",  "show",  "does", "into",
};

// Question -> plain search words without stop words ("" when nothing is left).
static void search_words(const char *q, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    for (const char *p = q; *p;) {
        while (*p && !(isalnum((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80))
            p++;
        const char *s = p;
        while (*p && (isalnum((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80))
            p++;
        size_t n = (size_t)(p - s);
        if (!n || n > 64)
            continue;
        int stop = 0;
        for (size_t i = 0; i < sizeof stop_words / sizeof *stop_words && !stop; i++)
            stop = strlen(stop_words[i]) == n && !strncasecmp(stop_words[i], s, n);
        if (stop || o + n + 2 > cap)
            continue;
        if (o)
            out[o++] = ' ';
        memcpy(out + o, s, n);
        o += n;
        out[o] = 0;
    }
}

struct fts_acc {
    const struct sd_contexts *c;
    double *score;
    int n_hits;
};

static int fts_hit(void *user, const struct sd_search_hit *h)
{
    struct fts_acc *a = user;
    double w = 1.0 / (1.0 + a->n_hits++); // best hits weigh most
    for (size_t i = 0; i < a->c->n; i++)
        for (size_t j = 0; j < a->c->items[i].n_spans; j++)
            if (a->c->items[i].spans[j].span_id == h->span_id) {
                a->score[i] += w;
                return 0; // a span in several contexts (split) counts for its first
            }
    return 0;
}

// Rank contexts by FTS5 hits of the question: *best gets the best context index, -1 when nothing matched.
static enum sd_status fts_choose(struct sd_qa *qa, const struct sd_contexts *c, const char *question, int *best,
                                 struct sd_err *err)
{
    char words[1024];
    *best = -1;
    search_words(question, words, sizeof words);
    if (!*words)
        return SD_OK;
    struct fts_acc a = {c, calloc(c->n, sizeof(double)), 0};
    if (!a.score)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    size_t n_hits = 0;
    enum sd_status r = sd_store_search(qa->store, words, 200, fts_hit, &a, &n_hits, err);
    if (!r) {
        double bs = 0;
        for (size_t i = 0; i < c->n; i++)
            if (a.score[i] > bs) {
                bs = a.score[i];
                *best = (int)i;
            }
    }
    free(a.score);
    return r;
}

// ---------------------------------------------------------------------------------------------------------
// one model call: prompt -> answer

struct turn {
    char *q, *a;
};

struct run_out {
    char *text;
    size_t len, cap;
    double logprob_sum;
    int64_t n_gen, reused, restored, prefilled, prompt, context;
    int dropped, stored;
    double restore_s, prefill_s, ttft_s, gen_s;
    char store_error[sizeof((struct sd_err *)0)->msg]; // why the cache write failed ("" when it did not)
};

static enum sd_status text_add(struct run_out *o, const char *s, size_t n, struct sd_err *err)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *nt = realloc(o->text, cap);
        if (!nt)
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        o->text = nt;
        o->cap = cap;
    }
    memcpy(o->text + o->len, s, n);
    o->len += n;
    o->text[o->len] = 0;
    return SD_OK;
}

// Length of the longest prefix of b[0..n) made of complete UTF-8 sequences.
static size_t utf8_complete(const unsigned char *b, size_t n)
{
    size_t i = n;
    size_t back = 0;
    while (i > 0 && back < 4 && (b[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0)
        return back ? 0 : n;
    unsigned char lead = b[i - 1];
    size_t need = lead < 0x80             ? 1
                  : (lead & 0xE0) == 0xC0 ? 2
                  : (lead & 0xF0) == 0xE0 ? 3
                  : (lead & 0xF8) == 0xF0 ? 4
                                          : 1;
    return back + 1 >= need ? n : i - 1;
}

static int cancelled(const struct sd_qa_events *ev)
{
    return ev && ev->should_cancel && ev->should_cancel(ev->user);
}

static void progress(const struct sd_qa_events *ev, const char *stage, int64_t done, int64_t total)
{
    if (ev && ev->on_progress)
        ev->on_progress(ev->user, stage, done, total);
}

// Build the prompt for ctx (NULL ctx_tokens: none) + history + question and generate.
// stream: pass the answer to ev->on_text as it is generated, grounded against gctx[0..n_gctx) (NULL: as written).
static enum sd_status run_one(struct sd_qa *qa, const int32_t *ctx_tokens, size_t n_ctx_tokens, const struct turn *hist,
                              size_t n_hist, const char *question, const struct sd_qa_ask_opts *ao,
                              const struct sd_qa_events *ev, int stream, const struct sd_context *const *gctx,
                              size_t n_gctx, int use_cache, struct run_out *o, struct sd_err *err)
{
    // The answer passes to ev->on_text grounded as it streams (citations.c), as the final answer will be.
    struct sd_cite_stream sg;
    int show = stream && ev && ev->on_text;
    sd_cite_stream_init(&sg, qa->store, gctx, n_gctx, show ? ev->on_text : NULL, show ? ev->user : NULL);
    sg.raw_done = o->len;
    struct sd_tokens p = {0};
    struct sd_sampler *smp = NULL;
    struct sd_markers mk = {0};
    struct sd_marker_state mks = {0};
    enum sd_status r;
    int max_new = ao && ao->max_new_tokens > 0 ? ao->max_new_tokens : QA_DEFAULT_NEW;
    if ((r = sd_chat_append_prefix(&qa->tpl, qa->tok, &p, err)) ||
        (r = sd_tokens_push(&p, ctx_tokens, n_ctx_tokens, err)) ||
        (r = sd_chat_append_context_end(&qa->tpl, qa->tok, &p, err)))
        goto out;
    size_t prefix_n = p.n; // the cacheable part: template prefix + context
    // History: drop the oldest turns when they do not fit.
    size_t first_turn = 0;
    for (;;) {
        p.n = prefix_n;
        for (size_t i = first_turn; i < n_hist && !r; i++)
            if (!(r = sd_chat_append_question(&qa->tpl, qa->tok, hist[i].q, i == first_turn, &p, err)))
                r = sd_chat_append_answer(&qa->tpl, qa->tok, hist[i].a, &p, err);
        if (!r)
            r = sd_chat_append_question(&qa->tpl, qa->tok, question, first_turn == n_hist, &p, err);
        if (r)
            goto out;
        if (p.n + 16 <= (size_t)qa->n_ctx || first_turn == n_hist)
            break;
        first_turn++;
    }
    if (p.n + 1 > (size_t)qa->n_ctx) {
        r = sd_err_set(err, SD_ERR_RANGE,
                       "the prompt (%zu tokens) is longer than the context this model runs with (%d tokens); ask a "
                       "shorter question or use a larger --ctx",
                       p.n, qa->n_ctx);
        goto out;
    }
    if ((size_t)max_new > (size_t)qa->n_ctx - p.n)
        max_new = (int)((size_t)qa->n_ctx - p.n);
    if (getenv("SPARSEDOC_DEBUG_PROMPT") && *getenv("SPARSEDOC_DEBUG_PROMPT")) { // the prompt as the model sees it
        char *txt = NULL;
        sd_tokenizer_decode(qa->tok, p.ids, p.n, 0, &txt, NULL);
        fprintf(stderr, "---prompt---\n%s\n---end---\n", txt);
        free(txt);
    }
    o->prompt += (int64_t)p.n;
    o->context += (int64_t)prefix_n;
    if (!qa->sess && (r = sd_session_new(qa->model, &qa->sp, &qa->sess, err)))
        goto out;
    // Reuse: the live session's common prefix, or the persistent cache when it offers more.
    size_t common = 0;
    while (common < qa->live.n && common < p.n && qa->live.ids[common] == p.ids[common])
        common++;
    if (common > (size_t)sd_session_pos(qa->sess))
        common = (size_t)sd_session_pos(qa->sess);
    if (common >= p.n)
        common = p.n - 1; // the last prompt token is run again for its logits
    int hit_blocks = 0;
    if (qa->cache && use_cache && (r = sd_kvcache_lookup(qa->cache, qa->fp, p.ids, (int)p.n, &hit_blocks, err)))
        goto out;
    size_t reused;
    double t0 = sd_now_s();
    if ((size_t)hit_blocks * SD_KV_BLOCK > common) {
        if ((r = sd_session_truncate(qa->sess, 0, err)))
            goto out;
        qa->live.n = 0;
        progress(ev, "restore", 0, hit_blocks);
        struct sd_kvcache_restore_info info = {0};
        r = sd_kvcache_restore(qa->cache, qa->fp, p.ids, (int)p.n, qa->sess, &info, err);
        int pos = sd_session_pos(qa->sess);
        if (pos != info.tokens_restored) { // a restore that silently re-prefills (or over-reports) is a bug
            r = sd_err_set(err, SD_ERR_CHECKSUM,
                           "KV cache restore reported %d tokens but the session holds %d; the cache is inconsistent "
                           "(run 'sparsedoc cache clear')",
                           info.tokens_restored, pos);
            goto out;
        }
        if (r)
            goto out;
        reused = (size_t)info.tokens_restored;
        o->restored += info.tokens_restored;
        o->dropped += info.blocks_dropped;
        progress(ev, "restore", info.blocks_restored, hit_blocks);
        if (sd_tokens_push(&qa->live, p.ids, reused, err)) {
            r = SD_ERR_NOMEM;
            goto out;
        }
    } else {
        if ((r = sd_session_truncate(qa->sess, (int)common, err)))
            goto out;
        qa->live.n = common;
        reused = common;
    }
    o->restore_s += sd_now_s() - t0;
    o->reused += (int64_t)reused;
    // Prefill the rest.
    t0 = sd_now_s();
    size_t done = reused;
    progress(ev, "prefill", 0, (int64_t)(p.n - reused));
    while (done < p.n) {
        if (cancelled(ev)) {
            r = sd_err_set(err, SD_ERR_ARG, "cancelled");
            goto out;
        }
        size_t n = p.n - done < QA_PREFILL_CHUNK ? p.n - done : QA_PREFILL_CHUNK;
        if ((r = sd_session_eval(qa->sess, p.ids + done, (int)n, done + n == p.n ? qa->logits : NULL, 0, err)))
            goto out;
        if ((r = sd_tokens_push(&qa->live, p.ids + done, n, err)))
            goto out;
        done += n;
        progress(ev, "prefill", (int64_t)(done - reused), (int64_t)(p.n - reused));
    }
    o->prefilled += (int64_t)(p.n - reused);
    o->prefill_s += sd_now_s() - t0;
    // Generate.
    struct sd_sampler_params spp = ao ? ao->sampling : sd_sampler_params_default();
    if (spp.top_p <= 0) // zeroed params mean greedy without penalties (qa.h)
        spp.top_p = 1;
    if (spp.repetition_penalty <= 0)
        spp.repetition_penalty = 1;
    if ((r = sd_sampler_new(&spp, qa->model->cfg.vocab_size, &smp, err)))
        goto out;
    if (qa->tpl.constrain_markers && ctx_tokens &&
        (r = sd_markers_from_ids(qa->tok, ctx_tokens, n_ctx_tokens, &mk, err)))
        goto out;
    t0 = sd_now_s();
    double t_first = 0;
    char pend[64];
    size_t n_pend = 0;
    int vocab = qa->model->cfg.vocab_size;
    for (int g = 0; g < max_new; g++) {
        if (cancelled(ev)) {
            r = sd_err_set(err, SD_ERR_ARG, "cancelled");
            goto out;
        }
        if (mk.n)
            sd_markers_mask(qa->tok, &mk, &mks, qa->logits, vocab);
        float mx = -INFINITY;
        for (int v = 0; v < vocab; v++)
            if (qa->logits[v] > mx)
                mx = qa->logits[v];
        double se = 0;
        for (int v = 0; v < vocab; v++)
            se += exp((double)qa->logits[v] - mx);
        memcpy(qa->logits2, qa->logits, sizeof(float) * (size_t)vocab); // sampling modifies its input
        int32_t id = sd_sampler_sample(smp, qa->logits2, qa->live.ids, qa->live.n);
        if (id < 0) {
            r = sd_err_set(err, SD_ERR_BACKEND, "the model produced invalid logits (NaN)");
            goto out;
        }
        o->logprob_sum += (double)qa->logits[id] - mx - log(se);
        if (sd_chat_is_stop(&qa->tpl, id))
            break;
        o->n_gen++;
        size_t bl = 0;
        const char *bytes = sd_tokenizer_token_bytes(qa->tok, id, &bl);
        if (bytes && !sd_tokenizer_is_special(qa->tok, id)) {
            if (mk.n)
                sd_markers_feed(&mk, &mks, bytes, bl);
            if (n_pend + bl > sizeof pend) { // not UTF-8 after all: flush as is
                if ((r = text_add(o, pend, n_pend, err)))
                    goto out;
                sd_cite_stream_feed(&sg, o->text, o->len, 0);
                n_pend = 0;
            }
            size_t take = bl < sizeof pend - n_pend ? bl : sizeof pend - n_pend;
            memcpy(pend + n_pend, bytes, take);
            n_pend += take;
            size_t ok = utf8_complete((const unsigned char *)pend, n_pend);
            if (ok) {
                if (!t_first)
                    t_first = sd_now_s();
                if ((r = text_add(o, pend, ok, err)))
                    goto out;
                sd_cite_stream_feed(&sg, o->text, o->len, 0);
                memmove(pend, pend + ok, n_pend - ok);
                n_pend -= ok;
            }
        }
        progress(ev, "generate", g + 1, max_new);
        if (sd_session_pos(qa->sess) >= qa->n_ctx)
            break;
        if ((r = sd_session_eval(qa->sess, &id, 1, qa->logits, 0, err)) || (r = sd_tokens_push(&qa->live, &id, 1, err)))
            goto out;
    }
    if (n_pend)
        r = text_add(o, pend, n_pend, err);
    if (r)
        goto out;
    sd_cite_stream_feed(&sg, o->text, o->len, 1);
    o->gen_s += sd_now_s() - t0;
    if (t_first)
        o->ttft_s = t_first; // absolute; the caller converts
    // Store the context prefix's new blocks (the session still holds them at positions < prefix_n).
    // Skipped when the caller is cancelling: a cache write never delays quitting.
    int quitting = ev && ev->should_cancel && ev->should_cancel(ev->user);
    if (qa->cache && use_cache && !quitting && reused < prefix_n / SD_KV_BLOCK * SD_KV_BLOCK) {
        int n_stored = 0;
        struct sd_err e2;
        if (sd_kvcache_store(qa->cache, qa->fp, p.ids, (int)prefix_n, qa->sess, &n_stored, &e2) == SD_OK)
            o->stored += n_stored;
        else // loses nothing but time next run: the answer stands, but the caller is told
            snprintf(o->store_error, sizeof o->store_error, "%s", e2.msg);
    }
out:
    sd_markers_free(&mk);
    sd_sampler_free(smp);
    free(p.ids);
    return r;
}

// ---------------------------------------------------------------------------------------------------------
// ask

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

struct hist_acc {
    struct turn *t;
    size_t n, cap;
    int oom;
};

static int hist_add(void *user, const char *q, const char *a, int64_t created_ms)
{
    (void)created_ms;
    struct hist_acc *h = user;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        void *nv = realloc(h->t, cap * sizeof *h->t);
        if (!nv) {
            h->oom = 1;
            return 1;
        }
        h->t = nv;
        h->cap = cap;
    }
    h->t[h->n].q = xstrdup(q ? q : "");
    h->t[h->n].a = xstrdup(a ? a : "");
    h->n++;
    return 0;
}

static void hist_free(struct hist_acc *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->t[i].q);
        free(h->t[i].a);
    }
    free(h->t);
}

static void add_run(struct sd_qa_result *res, const struct run_out *o)
{
    res->tokens_prompt += o->prompt;
    res->tokens_reused += o->reused;
    res->tokens_restored += o->restored;
    res->tokens_prefilled += o->prefilled;
    res->tokens_generated += o->n_gen;
    res->tokens_context += o->context;
    res->blocks_dropped += o->dropped;
    res->blocks_stored += o->stored;
    if (o->store_error[0] && !res->cache_write_error[0])
        snprintf(res->cache_write_error, sizeof res->cache_write_error, "%s", o->store_error);
    res->restore_s += o->restore_s;
    res->prefill_s += o->prefill_s;
    res->generate_s += o->gen_s;
}

// sparsedoc-mini's reduce step: the partial answer the model was most sure of (mean log-prob per token),
// preferring answers whose citation names a span of their own context.
static int pick_partial(struct sd_qa *qa, struct sd_contexts *c, struct run_out *parts, size_t n)
{
    int best = -1;
    double best_score = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!parts[i].text || !parts[i].len || !parts[i].n_gen)
            continue;
        const struct sd_context *one = &c->items[i];
        struct sd_qa_citation *cs = NULL;
        size_t nc = 0;
        int valid = 0;
        struct sd_err e2;
        if (sd_cite_resolve(qa->store, &one, 1, parts[i].text, &cs, &nc, &e2) == SD_OK) {
            for (size_t k = 0; k < nc; k++) {
                valid |= cs[k].valid;
                sd_qa_citation_clear(&cs[k]);
            }
            free(cs);
        }
        double score = parts[i].logprob_sum / (double)parts[i].n_gen + (valid ? 0 : -1000);
        if (score > best_score) {
            best_score = score;
            best = (int)i;
        }
    }
    return best;
}

// Check each citation's claim against the cited source and re-anchor wrong markers (sd_cite_ground): the
// grounded text replaces o->text, so it becomes the result's answer and the turn saved in a conversation.
// (The streamed pieces already shown were the raw text.)
static enum sd_status ground_answer(struct sd_qa *qa, const struct sd_context *const *ctx, size_t n_ctx,
                                    struct run_out *o, struct sd_qa_result *out, struct sd_err *err)
{
    char *g = NULL;
    enum sd_status r =
        sd_cite_ground(qa->store, ctx, n_ctx, o->text ? o->text : "", &out->cites, &out->n_cites, &g, err);
    if (r)
        return r;
    free(o->text);
    o->text = g;
    o->len = strlen(g);
    o->cap = o->len + 1;
    return SD_OK;
}

enum sd_status sd_qa_ask(struct sd_qa *qa, const struct sd_qa_scope *scope, const char *question,
                         const struct sd_qa_ask_opts *opts, const struct sd_qa_events *ev, struct sd_qa_result *out,
                         struct sd_err *err)
{
    memset(out, 0, sizeof *out);
    double t0 = sd_now_s();
    struct sd_qa_ask_opts ao0 = {0};
    const struct sd_qa_ask_opts *ao = opts ? opts : &ao0;
    struct hist_acc hist = {0};
    struct sd_qa_scope conv_scope = {0};
    int64_t *conv_ids = NULL;
    struct run_out *parts = NULL;
    size_t n_parts = 0;
    struct run_out o = {0};
    enum sd_status r = SD_OK;
    const char *q = question;
    while (q && isspace((unsigned char)*q))
        q++;
    if (!q || !*q)
        return sd_err_set(err, SD_ERR_ARG, "the question is empty");
    if (ao->conversation_id) { // earlier turns; the conversation's own scope when none is given
        size_t nd = 0;
        if ((r = sd_qa_conversation_load(qa, ao->conversation_id, &conv_ids, &nd, NULL, NULL, err)))
            goto out;
        if ((r = sd_store_conversation_turns(qa->store, ao->conversation_id, hist_add, &hist, err)))
            goto out;
        if (hist.oom) {
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        if (!scope || !scope->n_docs) {
            conv_scope.doc_ids = conv_ids;
            conv_scope.n_docs = nd;
            scope = &conv_scope;
        }
    }
    struct sd_contexts *c = NULL;
    if ((r = scope_contexts(qa, scope, ev, &c, err)))
        goto out;
    out->n_contexts = (int)c->n;
    // Which contexts.
    enum sd_qa_strategy strat = ao->strategy;
    int chosen = -1;
    char desc[256];
    if (c->n == 1) {
        chosen = 0;
        snprintf(desc, sizeof desc, "whole scope in one context (%zu tokens)", c->items[0].n_tokens);
    } else if (strat == SD_QA_AUTO || strat == SD_QA_SELECT) {
        if ((r = fts_choose(qa, c, q, &chosen, err)))
            goto out;
        if (chosen >= 0)
            snprintf(desc, sizeof desc, "FTS5 chose context %d of %zu (%zu tokens)", chosen + 1, c->n,
                     c->items[chosen].n_tokens);
        else if (strat == SD_QA_SELECT) {
            chosen = 0;
            snprintf(desc, sizeof desc, "FTS5 matched nothing; context 1 of %zu", c->n);
        }
    }
    if (chosen >= 0) {
        out->n_contexts_used = 1;
        const struct sd_context *one = &c->items[chosen];
        if ((r = run_one(qa, one->tokens, one->n_tokens, hist.t, hist.n, q, ao, ev, 1, &one, 1, 1, &o, err)))
            goto partial;
        add_run(out, &o);
        if ((r = sd_cite_resolve(qa->store, &one, 1, o.text ? o.text : "", &out->cites, &out->n_cites, err)) ||
            (r = ground_answer(qa, &one, 1, &o, out, err)))
            goto out;
    } else { // map-reduce over every context
        if (!(parts = calloc(c->n, sizeof *parts))) {
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        n_parts = c->n;
        for (size_t i = 0; i < c->n; i++) {
            progress(ev, "map", (int64_t)i, (int64_t)c->n);
            if ((r = run_one(qa, c->items[i].tokens, c->items[i].n_tokens, NULL, 0, q, ao, ev, 0, NULL, 0, 1, &parts[i],
                             err)))
                goto out;
            add_run(out, &parts[i]);
        }
        progress(ev, "map", (int64_t)c->n, (int64_t)c->n);
        out->n_contexts_used = (int)c->n;
        const struct sd_context **all = malloc(c->n * sizeof *all);
        if (!all) {
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < c->n; i++)
            all[i] = &c->items[i];
        progress(ev, "reduce", 0, 1);
        if (qa->tpl.kind == SD_CHAT_MINI) {
            // The mini model only retrieves; its reduce step is a choice among the partial answers.
            int best = pick_partial(qa, c, parts, c->n);
            const char *txt = best >= 0 ? parts[best].text : "";
            if ((r = text_add(&o, txt, strlen(txt), err))) {
                free(all);
                goto out;
            }
            struct sd_cite_stream sg; // shown grounded, as the final answer will be
            sd_cite_stream_init(&sg, qa->store, all, c->n, ev ? ev->on_text : NULL, ev ? ev->user : NULL);
            sd_cite_stream_feed(&sg, txt, strlen(txt), 1);
            o.ttft_s = sd_now_s();
            snprintf(desc, sizeof desc, "map-reduce over %zu contexts (answer from context %d, the most confident)",
                     c->n, best + 1);
        } else {
            // A combine prompt: the partial answers as the document, the question again.
            struct run_out red = {0};
            struct run_out acc = {0};
            for (size_t i = 0; i < c->n && !r; i++) {
                char head[64];
                snprintf(head, sizeof head, "Answer from part %zu of %zu:\n", i + 1, c->n);
                if (!(r = text_add(&acc, head, strlen(head), err)))
                    r = text_add(&acc, parts[i].text ? parts[i].text : "(none)", parts[i].text ? parts[i].len : 6, err);
                if (!r)
                    r = text_add(&acc, "\n\n", 2, err);
            }
            int32_t *ids = NULL;
            size_t n_ids = 0;
            if (!r)
                r = sd_tokenizer_encode(qa->tok, acc.text ? acc.text : "", acc.len, 0, &ids, &n_ids, err);
            free(acc.text);
            if (!r) {
                char rq[4096];
                snprintf(rq, sizeof rq,
                         "%s\n(Combine the partial answers above into one answer; keep their citations.)", q);
                r = run_one(qa, ids, n_ids, NULL, 0, rq, ao, ev, 1, all, c->n, 0, &red, err);
            }
            free(ids);
            if (!r) {
                add_run(out, &red);
                r = text_add(&o, red.text ? red.text : "", red.len, err);
                o.ttft_s = red.ttft_s;
            }
            free(red.text);
            if (r) {
                free(all);
                goto out;
            }
            snprintf(desc, sizeof desc, "map-reduce over %zu contexts", c->n);
        }
        progress(ev, "reduce", 1, 1);
        r = sd_cite_resolve(qa->store, all, c->n, o.text ? o.text : "", &out->cites, &out->n_cites, err);
        if (!r)
            r = ground_answer(qa, all, c->n, &o, out, err);
        free(all);
        if (r)
            goto out;
    }
    if (!(out->strategy = strdup(desc))) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (ao->conversation_id) {
        if ((r = sd_store_conversation_add_turn(qa->store, ao->conversation_id, q, o.text ? o.text : "", err)))
            goto out;
        out->conversation_id = ao->conversation_id;
    }
    goto out;
partial: // cancelled or failed mid-generation: keep what was generated
    add_run(out, &o);
out:
    out->answer = o.text ? o.text : strdup("");
    o.text = NULL;
    out->ttft_s = o.ttft_s > 0 ? o.ttft_s - t0 : 0;
    out->total_s = sd_now_s() - t0;
    for (size_t i = 0; parts && i < n_parts; i++) // parts is calloc'd: unused entries are NULL
        free(parts[i].text);
    free(parts);
    free(conv_ids);
    hist_free(&hist);
    return r;
}

void sd_qa_result_free(struct sd_qa_result *r)
{
    if (!r)
        return;
    free(r->answer);
    for (size_t i = 0; i < r->n_cites; i++)
        sd_qa_citation_clear(&r->cites[i]);
    free(r->cites);
    free(r->strategy);
    memset(r, 0, sizeof *r);
}

// ---------------------------------------------------------------------------------------------------------
// conversations

enum sd_status sd_qa_conversation_new(struct sd_qa *qa, const struct sd_qa_scope *scope, const char *title, int64_t *id,
                                      struct sd_err *err)
{
    json_object *arr = json_object_new_array();
    if (!arr)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; scope && i < scope->n_docs; i++)
        json_object_array_add(arr, json_object_new_int64(scope->doc_ids[i]));
    enum sd_status r =
        sd_store_conversation_new(qa->store, title && *title ? title : "conversation",
                                  json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN), qa->model_name, id, err);
    json_object_put(arr);
    return r;
}

struct turn_fwd {
    sd_qa_turn_fn fn;
    void *user;
};

static int turn_fwd(void *user, const char *q, const char *a, int64_t created_ms)
{
    struct turn_fwd *f = user;
    struct sd_qa_turn t = {q, a, created_ms};
    return f->fn(f->user, &t);
}

enum sd_status sd_qa_conversation_load(struct sd_qa *qa, int64_t id, int64_t **doc_ids, size_t *n_docs,
                                       sd_qa_turn_fn fn, void *user, struct sd_err *err)
{
    *doc_ids = NULL;
    *n_docs = 0;
    char *scope = NULL;
    enum sd_status r = sd_store_conversation_get(qa->store, id, &scope, NULL, err);
    if (r)
        return r;
    json_object *arr = json_tokener_parse(scope);
    free(scope);
    if (!arr || !json_object_is_type(arr, json_type_array)) {
        json_object_put(arr);
        return sd_err_set(err, SD_ERR_FORMAT, "conversation %lld: its scope is not a JSON array", (long long)id);
    }
    size_t n = json_object_array_length(arr);
    if (n) {
        *doc_ids = malloc(n * sizeof **doc_ids);
        if (!*doc_ids) {
            json_object_put(arr);
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++)
            (*doc_ids)[i] = json_object_get_int64(json_object_array_get_idx(arr, i));
    }
    *n_docs = n;
    json_object_put(arr);
    if (fn) {
        struct turn_fwd f = {fn, user};
        if ((r = sd_store_conversation_turns(qa->store, id, turn_fwd, &f, err))) {
            free(*doc_ids);
            *doc_ids = NULL;
            *n_docs = 0;
        }
    }
    return r;
}

struct conv_fwd {
    sd_qa_conversation_fn fn;
    void *user;
};

static int conv_fwd(void *user, int64_t id, const char *title, int64_t created_ms, int64_t updated_ms, int n_turns)
{
    struct conv_fwd *f = user;
    struct sd_qa_conversation c = {id, title, created_ms, updated_ms, n_turns};
    return f->fn(f->user, &c);
}

enum sd_status sd_qa_conversations_foreach(struct sd_qa *qa, sd_qa_conversation_fn fn, void *user, struct sd_err *err)
{
    struct conv_fwd f = {fn, user};
    return sd_store_conversations_foreach(qa->store, conv_fwd, &f, err);
}
