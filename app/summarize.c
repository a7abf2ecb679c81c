// summarize.c: summaries of single documents (see summarize.h). Two parts, top to bottom:
//   1. generation over a prompt with the KV prefix cache, on the public engine/data APIs (model,
//      session, sampler, kvcache) and the service's chat template, so prompts are framed exactly like
//      `ask` frames them;
//   2. one document: its contexts -> part summaries with page/line ranges -> hierarchical reduction.
// Batches (manifest, Markdown, index.md) are in summarize_batch.c.
#include "summarize.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_template.h"
#include "contexts.h"
#include "fingerprint.h"
#include "kvcache.h"
#include "model.h"
#include "sampler.h"
#include "sd_clock.h"
#include "session.h"
#include "tokenizer.h"

#define PREFILL_CHUNK 256
#define MAX_DEPTH 32
#define SUMM_QA_RESERVE SD_QA_RESERVE // context packing must match `ask` for cache reuse
#define SUMM_QUESTION_TOKENS 96 // room for the context end, the instruction and the answer opener

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

const char *sd_summ_style_name(enum sd_summ_style s)
{
    switch (s) {
    case SD_SUMM_BRIEF:
        return "brief";
    case SD_SUMM_DETAILED:
        return "detailed";
    case SD_SUMM_BULLETS:
        return "bullets";
    }
    return "brief";
}

int sd_summ_style_parse(const char *name, enum sd_summ_style *out)
{
    static const enum sd_summ_style all[] = {SD_SUMM_BRIEF, SD_SUMM_DETAILED, SD_SUMM_BULLETS};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, sd_summ_style_name(all[i]))) {
            *out = all[i];
            return 0;
        }
    return -1;
}

int sd_summ_opts_words(const struct sd_summ_opts *o)
{
    if (o->max_words > 0)
        return o->max_words;
    return o->style == SD_SUMM_DETAILED ? 400 : o->style == SD_SUMM_BULLETS ? 200 : 120;
}

// ===== 1. Generation over a prompt, with the KV prefix cache =====
// A lower-level hook than sd_qa_ask: "generate with this instruction over this context". Built here on
// the public engine/data APIs (qa.h keeps its model private), with the same prompt framing, context
// packing and fingerprint inputs as the service, so cache entries are shared with `ask`.

struct call_stats {
    int64_t prompt, reused, prefilled, generated;
    int stored, dropped;
    double restore_s, prefill_s, generate_s;
};

struct gen {
    const struct sd_model *model; // borrowed from the service
    const struct sd_tokenizer *tok; // borrowed from the service
    struct sd_session *sess;
    struct sd_sampler *smp;
    struct sd_kvcache *cache; // NULL: --no-cache
    uint8_t fp[SD_FINGERPRINT_BYTES];
    char fp_hex[2 * SD_FINGERPRINT_BYTES + 1];
    int n_ctx;
    int32_t n_vocab;
    int32_t *held; // the tokens the session holds (prompt + generated), for in-memory prefix reuse
    size_t n_held, cap_held;
    struct sd_chat_template tmpl; // the service's prompt layout for this model (chat_template.h)
};

static void gen_free(struct gen *g)
{
    if (!g)
        return;
    if (g->cache) {
        sd_kvcache_unpin(g->cache);
        sd_kvcache_close(g->cache);
    }
    sd_sampler_free(g->smp);
    sd_session_free(g->sess);
    free(g->held);
    free(g);
}

// Open a generator beside the service: the same model directory, tokenizer (borrowed), prompt window,
// chat template and session settings, so fingerprints and prompts equal the service's.
static enum sd_status gen_open(struct sd_qa *qa, const struct sd_qa_opts *qo, struct gen **out, struct sd_err *err)
{
    struct gen *g = calloc(1, sizeof *g);
    char path[PATH_MAX];
    enum sd_status r;
    *out = NULL;
    if (!g)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    g->tok = sd_qa_tokenizer(qa);
    g->n_ctx = sd_qa_n_ctx(qa);
    g->model = sd_qa_model(qa); // borrowed: one copy of the weights per process
    snprintf(path, sizeof path, "%s/tokenizer.json", sd_qa_model_dir(qa));
    // The service's parameters (backend, DSA and weight settings, threads), with this generator's chunk.
    struct sd_session_params sp = *sd_qa_session_params(qa);
    sp.n_ctx = g->n_ctx;
    sp.max_batch = PREFILL_CHUNK;
    if ((r = sd_session_new(g->model, &sp, &g->sess, err)))
        goto fail;
    if ((r = sd_model_fingerprint(g->model, path, &sp, sd_qa_template_name(qa), g->fp, err)))
        goto fail;
    sd_fingerprint_hex(g->fp, g->fp_hex);
    g->n_vocab = sd_tokenizer_n_vocab(g->tok);
    if (g->model->cfg.vocab_size > g->n_vocab)
        g->n_vocab = (int32_t)g->model->cfg.vocab_size;
    sd_chat_template_detect(g->tok, g->model->cfg.eos_token_id, &g->tmpl);
    // Greedy with a mild repetition penalty: small models loop otherwise. Reproducible.
    struct sd_sampler_params smp = sd_sampler_params_default();
    smp.repetition_penalty = 1.1f;
    smp.repeat_last_n = 64;
    if ((r = sd_sampler_new(&smp, g->n_vocab, &g->smp, err)))
        goto fail;
    if (!qo || !qo->no_cache) {
        struct sd_kvcache_opts co = {.budget_bytes = qo ? qo->cache_budget : 0};
        if ((r = sd_kvcache_open(qo ? qo->cache_dir : NULL, &co, &g->cache, err)))
            goto fail;
    }
    *out = g;
    return SD_OK;
fail:
    gen_free(g);
    return r;
}

static enum sd_status held_reserve(struct gen *g, size_t n, struct sd_err *err)
{
    if (n <= g->cap_held)
        return SD_OK;
    size_t cap = g->cap_held ? g->cap_held : 4096;
    while (cap < n)
        cap *= 2;
    void *p = realloc(g->held, cap * sizeof *g->held);
    if (!p)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    g->held = p;
    g->cap_held = cap;
    return SD_OK;
}

// The session holds ids[0..n) (ids is never g->held).
static enum sd_status held_set(struct gen *g, const int32_t *ids, size_t n, struct sd_err *err)
{
    enum sd_status r = held_reserve(g, n, err);
    if (r)
        return r;
    memcpy(g->held, ids, n * sizeof *ids);
    g->n_held = n;
    return SD_OK;
}

static int cancelled(const struct sd_summ_events *ev)
{
    return ev && ev->should_cancel && ev->should_cancel(ev->user);
}

static void progress(const struct sd_summ_events *ev, const char *stage, int64_t done, int64_t total)
{
    if (ev && ev->on_progress)
        ev->on_progress(ev->user, stage, done, total);
}

// Length of the longest prefix of buf[0..n) that ends on a UTF-8 character boundary.
static size_t utf8_complete(const char *buf, size_t n)
{
    size_t i = n;
    int back = 0;
    while (i > 0 && back < 4 && ((unsigned char)buf[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0)
        return n;
    unsigned char lead = (unsigned char)buf[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return (n - (i - 1)) >= need ? n : i - 1;
}

// Run one prompt: reuse what the session or the cache holds, prefill the rest, store the first
// n_cacheable tokens' complete blocks in the cache, then decode up to max_new tokens greedily.
// *text is malloc'd (caller frees).
static enum sd_status gen_run(struct gen *g, const int32_t *ids, size_t n, size_t n_cacheable, int max_new,
                              const struct sd_summ_events *ev, char **text, struct call_stats *cs, struct sd_err *err)
{
    *text = NULL;
    enum sd_status r;
    if (n == 0 || n + 1 > (size_t)g->n_ctx)
        return sd_err_set(err, SD_ERR_RANGE, "prompt of %zu tokens does not fit the %d-token window", n, g->n_ctx);
    if ((size_t)max_new > (size_t)g->n_ctx - n)
        max_new = (int)((size_t)g->n_ctx - n);
    cs->prompt += (int64_t)n;
    // In-memory reuse: common prefix with what the session holds (at least one token is re-run).
    size_t lcp = 0;
    while (lcp < g->n_held && lcp < n - 1 && g->held[lcp] == ids[lcp])
        lcp++;
    double t0 = sd_now_s();
    int pos = (int)lcp;
    if (g->cache) {
        int hit = 0;
        if ((r = sd_kvcache_lookup(g->cache, g->fp, ids, (int)n, &hit, err)))
            return r;
        size_t cap_blocks = (n - 1) / SD_KV_BLOCK;
        if ((size_t)hit > cap_blocks)
            hit = (int)cap_blocks;
        if ((size_t)hit * SD_KV_BLOCK > lcp) {
            progress(ev, "restore", 0, hit);
            if ((r = sd_session_truncate(g->sess, 0, err)))
                return r;
            struct sd_kvcache_restore_info info = {0};
            r = sd_kvcache_restore(g->cache, g->fp, ids, (int)n, g->sess, &info, err);
            cs->dropped += info.blocks_dropped;
            pos = sd_session_pos(g->sess);
            if (r)
                return r;
            progress(ev, "restore", info.blocks_restored, hit);
        } else if ((r = sd_session_truncate(g->sess, pos, err)))
            return r;
    } else if ((r = sd_session_truncate(g->sess, pos, err)))
        return r;
    cs->restore_s += sd_now_s() - t0;
    cs->reused += pos;
    if ((r = held_reserve(g, n + 1, err)) || (r = held_set(g, ids, n, err)))
        return r;
    if ((size_t)pos >= n && n > 0) { // the last token is fed again below: its logits give the first token
        pos = (int)n - 1;
        if ((r = sd_session_truncate(g->sess, pos, err)))
            return r;
    }
    g->n_held = (size_t)pos;
    // Prefill the rest in chunks, polling for cancellation; the last chunk also samples the first token (on the
    // device where the logits are, with --backend cuda).
    t0 = sd_now_s();
    int32_t t = -1;
    for (size_t i = (size_t)pos; i < n;) {
        if (cancelled(ev))
            return sd_err_set(err, SD_ERR_ARG, "cancelled");
        size_t m = n - i < PREFILL_CHUNK ? n - i : PREFILL_CHUNK;
        if ((r = i + m < n ? sd_session_eval(g->sess, ids + i, (int)m, NULL, 0, err)
                           : sd_session_eval_sample(g->sess, ids + i, (int)m, g->smp, ids, n, &t, err))) {
            int p = sd_session_pos(g->sess);
            g->n_held = p >= 0 && (size_t)p <= n ? (size_t)p : 0;
            return r;
        }
        i += m;
        cs->prefilled += (int64_t)m;
        g->n_held = i;
        progress(ev, "prefill", (int64_t)(i - (size_t)pos), (int64_t)(n - (size_t)pos));
    }
    cs->prefill_s += sd_now_s() - t0;
    if (g->cache && n_cacheable >= SD_KV_BLOCK) {
        int stored = 0;
        struct sd_err serr;
        // A cache that cannot store (disk full) costs speed, not the summary.
        if (!sd_kvcache_store(g->cache, g->fp, ids, (int)(n_cacheable < n ? n_cacheable : n), g->sess, &stored, &serr))
            cs->stored += stored;
    }
    // Decode.
    t0 = sd_now_s();
    size_t cap = 256, len = 0, emitted = 0;
    char *out = malloc(cap);
    if (!out)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    out[0] = 0;
    r = SD_OK;
    for (int k = 0; k < max_new; k++) {
        if (cancelled(ev)) {
            r = sd_err_set(err, SD_ERR_ARG, "cancelled");
            break;
        }
        if (t < 0) {
            r = sd_err_set(err, SD_ERR_FORMAT, "the model produced no finite logits");
            break;
        }
        if (sd_chat_is_stop(&g->tmpl, t))
            break;
        if (!sd_tokenizer_is_special(g->tok, t)) {
            size_t bl = 0;
            const char *b = sd_tokenizer_token_bytes(g->tok, t, &bl);
            if (b && bl) {
                if (len + bl + 1 > cap) {
                    while (len + bl + 1 > cap)
                        cap *= 2;
                    char *p = realloc(out, cap);
                    if (!p) {
                        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                        break;
                    }
                    out = p;
                }
                memcpy(out + len, b, bl);
                len += bl;
                out[len] = 0;
                size_t ok = utf8_complete(out, len);
                if (ok > emitted && ev && ev->on_text)
                    ev->on_text(ev->user, out + emitted, ok - emitted);
                if (ok > emitted)
                    emitted = ok;
            }
        }
        cs->generated++;
        if ((r = held_reserve(g, g->n_held + 1, err)))
            break;
        g->held[g->n_held++] = t;
        if ((size_t)sd_session_pos(g->sess) + 1 > (size_t)g->n_ctx)
            break;
        if ((r = sd_session_eval_sample(g->sess, &g->held[g->n_held - 1], 1, g->smp, g->held, g->n_held, &t, err))) {
            g->n_held--;
            break;
        }
        progress(ev, "generate", k + 1, max_new);
    }
    cs->generate_s += sd_now_s() - t0;
    if (r) {
        free(out);
        return r;
    }
    *text = out;
    return SD_OK;
}

// ===== 2. One document =====

struct sd_summarizer {
    struct sd_qa *qa;
    struct sd_store *store; // borrowed from qa
    struct gen *g;
    char *model_name, *note;
    size_t ctx_tokens;     // context size for packing (same rule as `ask`)
    struct sd_tokens head; // prompt prefix tokens (BOS, system, document opener)
};

enum sd_status sd_summarizer_open(struct sd_qa *qa, const struct sd_qa_opts *qopts, struct sd_summarizer **out,
                                  struct sd_err *err)
{
    *out = NULL;
    struct sd_summarizer *s = calloc(1, sizeof *s);
    if (!s)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    s->qa = qa;
    s->store = sd_qa_store(qa);
    enum sd_status r = gen_open(qa, qopts, &s->g, err);
    if (r)
        goto fail;
    s->model_name = xstrdup(sd_qa_model_name(qa));
    if ((r = sd_chat_append_prefix(&s->g->tmpl, s->g->tok, &s->head, err)))
        goto fail;
    // Contexts are packed exactly as `ask` packs them (qa.c scope_contexts: the window less QA_RESERVE
    // less the template prefix), so a document's contexts, and so its cached prefixes, are the same.
    if (s->g->n_ctx < SUMM_QA_RESERVE + (int)s->head.n + 256) {
        r = sd_err_set(err, SD_ERR_RANGE, "a %d-token window is too small for summaries; use --ctx 2048 or more",
                       s->g->n_ctx);
        goto fail;
    }
    s->ctx_tokens = (size_t)(s->g->n_ctx - SUMM_QA_RESERVE) - s->head.n;
    if (s->ctx_tokens > SD_CONTEXT_MAX_TOKENS)
        s->ctx_tokens = SD_CONTEXT_MAX_TOKENS;
    if (s->model_name && !strcmp(s->model_name, "sparsedoc-mini")) {
        char buf[512];
        snprintf(buf, sizeof buf,
                 "%s is a tiny fact-lookup test model (see %s/MODEL.md): it answers planted-fact questions in "
                 "documents of up to 64K tokens and cannot write real summaries; its output shows that the "
                 "pipeline runs, not what the document says. Use --model DIR with a real model for useful summaries.",
                 s->model_name, sd_qa_model_dir(qa));
        s->note = strdup(buf);
    }
    *out = s;
    return SD_OK;
fail:
    sd_summarizer_close(s);
    return r;
}

void sd_summarizer_close(struct sd_summarizer *s)
{
    if (!s)
        return;
    gen_free(s->g);
    free(s->model_name);
    free(s->note);
    free(s->head.ids);
    free(s);
}

const char *sd_summarizer_fingerprint(const struct sd_summarizer *s)
{
    return s->g->fp_hex;
}

const char *sd_summarizer_model_note(const struct sd_summarizer *s)
{
    return s->note;
}

struct sd_qa *sd_summarizer_qa(struct sd_summarizer *s)
{
    return s->qa;
}

int sd_summarizer_n_ctx(const struct sd_summarizer *s)
{
    return s->g->n_ctx;
}

void sd_summary_free(struct sd_summary *r)
{
    if (!r)
        return;
    free(r->path);
    free(r->title);
    free(r->kind);
    free(r->text);
    for (size_t i = 0; i < r->n_parts; i++) {
        free(r->parts[i].range);
        free(r->parts[i].text);
    }
    free(r->parts);
    memset(r, 0, sizeof *r);
}

static int doc_copy(void *user, const struct sd_doc *d)
{
    struct sd_summary *o = user;
    o->doc_id = d->id;
    o->path = xstrdup(d->path);
    o->title = d->title && *d->title ? xstrdup(d->title) : NULL;
    o->kind = xstrdup(d->kind ? d->kind : "text");
    snprintf(o->sha256, sizeof o->sha256, "%s", d->sha256 ? d->sha256 : "");
    o->n_pages = d->n_pages;
    o->n_lines = d->n_lines;
    return 0;
}

// Range text of a part: "page 3", "pages 3-7", "lines 10-69".
static char *range_text(int pf, int pl, int lf, int ll)
{
    char buf[64];
    if (pf > 0)
        snprintf(buf, sizeof buf, pf == pl ? "page %d" : "pages %d-%d", pf, pl);
    else if (lf > 0)
        snprintf(buf, sizeof buf, "lines %d-%d", lf, ll);
    else
        snprintf(buf, sizeof buf, "the whole document");
    return strdup(buf);
}

// Marker of a part as the model sees markers in documents: "[p. 3-7]", "[path:10-69]".
static void range_marker(const struct sd_summary_part *p, const char *rel, char *buf, size_t cap)
{
    if (p->page_first > 0) {
        if (p->page_first == p->page_last)
            snprintf(buf, cap, "[p. %d]", p->page_first);
        else
            snprintf(buf, cap, "[p. %d-%d]", p->page_first, p->page_last);
    } else if (p->line_first > 0)
        snprintf(buf, cap, "[%s:%d-%d]", rel, p->line_first, p->line_last);
    else
        snprintf(buf, cap, "[%s]", rel);
}

static void question_text(enum sd_summ_style style, int words, const char *what, int combine, char *buf, size_t cap)
{
    const char *lead = combine ? "These are summaries of consecutive parts of one document, each with its "
                                 "marker. Combine them into one "
                               : "";
    switch (style) {
    case SD_SUMM_DETAILED:
        snprintf(buf, cap, "%s%s detailed summary of %s in at most %d words; cite the markers.", lead,
                 combine ? "" : "Write a", what, words);
        break;
    case SD_SUMM_BULLETS:
        snprintf(buf, cap, "%s%s %s as bullet points, at most %d words in all, each ending with its marker.", lead,
                 combine ? "summary of" : "Summarize", what, words);
        break;
    default:
        snprintf(buf, cap, "%s%s %s in at most %d words.", lead, combine ? "summary of" : "Summarize", what, words);
        break;
    }
    if (combine && buf[0]) // "one  detailed" -> keep grammar simple
        for (char *p = strstr(buf, "one  "); p; p = strstr(p, "one  "))
            memmove(p + 4, p + 5, strlen(p + 5) + 1);
}

// Keep at most max_words words; trims surrounding space. Returns 1 when cut.
static int cut_words(char *s, int max_words)
{
    char *p = s;
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    memmove(s, p, strlen(p) + 1);
    int words = 0, in_word = 0, cut = 0;
    for (p = s; *p; p++) {
        int space = *p == ' ' || *p == '\n' || *p == '\t' || *p == '\r';
        if (!space && !in_word && ++words > max_words) {
            *p = 0;
            cut = 1;
            break;
        }
        in_word = !space;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = 0;
    return cut;
}

static enum sd_status parts_add(struct sd_summary *o, size_t *cap, const struct sd_summary_part *p, struct sd_err *err)
{
    if (o->n_parts == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        void *n = realloc(o->parts, c * sizeof *o->parts);
        if (!n)
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        o->parts = n;
        *cap = c;
    }
    o->parts[o->n_parts++] = *p;
    return SD_OK;
}

static void stats_add(struct sd_summary *o, const struct call_stats *cs)
{
    o->n_calls++;
    o->tokens_prompt += cs->prompt;
    o->tokens_reused += cs->reused;
    o->tokens_prefilled += cs->prefilled;
    o->tokens_generated += cs->generated;
    o->blocks_stored += cs->stored;
    o->blocks_dropped += cs->dropped;
    o->restore_s += cs->restore_s;
    o->prefill_s += cs->prefill_s;
    o->generate_s += cs->generate_s;
}

static int max_new_tokens(int words)
{
    return words * 2 + 16; // about 1.3-2 tokens per word for BPE vocabularies, plus markers
}

// Generate over [head][body][tail(question)]; body is cacheable together with the head.
static enum sd_status summarize_prompt(struct sd_summarizer *s, const int32_t *body, size_t n_body,
                                       const char *question, int words, const struct sd_summ_events *ev,
                                       struct sd_summary *o, char **text, struct sd_err *err)
{
    struct sd_tokens p = {0};
    enum sd_status r;
    if ((r = sd_tokens_push(&p, s->head.ids, s->head.n, err)) || (r = sd_tokens_push(&p, body, n_body, err)))
        goto out;
    if ((r = sd_chat_append_context_end(&s->g->tmpl, s->g->tok, &p, err)))
        goto out;
    size_t n_cacheable = p.n; // [prefix][context][context end]: the part `ask` shares (qa.c run_one)
    if ((r = sd_chat_append_question(&s->g->tmpl, s->g->tok, question, 1, &p, err)))
        goto out;
    struct call_stats cs = {0};
    r = gen_run(s->g, p.ids, p.n, n_cacheable, max_new_tokens(words), ev, text, &cs, err);
    stats_add(o, &cs);
out:
    free(p.ids);
    if (!r && cut_words(*text, words)) {
        size_t l = strlen(*text);
        char *p = realloc(*text, l + 5);
        if (p) {
            memcpy(p + l, " ...", 5);
            *text = p;
        }
    }
    return r;
}

static const char *rel_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

// Summarize parts[first..first+n) (of the same level) into one part at level+1.
static enum sd_status combine(struct sd_summarizer *s, struct sd_summary *o, size_t first, size_t n, int level,
                              int words, enum sd_summ_style style, const struct sd_summ_events *ev,
                              struct sd_summary_part *res, struct sd_err *err)
{
    memset(res, 0, sizeof *res);
    res->level = level;
    size_t cap = 1024, len = 0;
    char *doc = malloc(cap);
    if (!doc)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    for (size_t i = first; i < first + n; i++) {
        const struct sd_summary_part *p = &o->parts[i];
        char mk[512];
        range_marker(p, rel_name(o->path), mk, sizeof mk);
        const char *t = p->text && *p->text ? p->text : "(no text)";
        size_t need = strlen(mk) + strlen(t) + 4;
        if (len + need + 1 > cap) {
            while (len + need + 1 > cap)
                cap *= 2;
            char *nd = realloc(doc, cap);
            if (!nd) {
                free(doc);
                return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            }
            doc = nd;
        }
        len += (size_t)sprintf(doc + len, "%s %s\n", mk, t);
        if (p->page_first > 0 && (!res->page_first || p->page_first < res->page_first))
            res->page_first = p->page_first;
        if (p->page_last > res->page_last)
            res->page_last = p->page_last;
        if (p->line_first > 0 && (!res->line_first || p->line_first < res->line_first))
            res->line_first = p->line_first;
        if (p->line_last > res->line_last)
            res->line_last = p->line_last;
    }
    int32_t *body = NULL;
    size_t n_body = 0;
    enum sd_status r = sd_tokenizer_encode(s->g->tok, doc, len, 0, &body, &n_body, err);
    free(doc);
    if (r)
        return r;
    res->range = range_text(res->page_first, res->page_last, res->line_first, res->line_last);
    char what[96], q[512];
    snprintf(what, sizeof what, "%s", res->range ? res->range : "the document");
    question_text(style, words, what, 1, q, sizeof q);
    r = summarize_prompt(s, body, n_body, q, words, ev, o, &res->text, err);
    free(body);
    if (r) {
        free(res->range);
        res->range = NULL;
    }
    return r;
}

// Tokens a part takes in a combining prompt (marker + text), measured.
static size_t part_tokens(struct sd_summarizer *s, const struct sd_summary *o, const struct sd_summary_part *p)
{
    char mk[512];
    range_marker(p, rel_name(o->path), mk, sizeof mk);
    size_t l = strlen(mk) + strlen(p->text ? p->text : "") + 3;
    char *buf = malloc(l);
    if (!buf)
        return (size_t)-1;
    snprintf(buf, l, "%s %s\n", mk, p->text ? p->text : "");
    int32_t *ids = NULL;
    size_t n = 0;
    if (sd_tokenizer_encode(s->g->tok, buf, strlen(buf), 0, &ids, &n, NULL))
        n = (size_t)-1;
    free(ids);
    free(buf);
    return n;
}

enum sd_status sd_summarize_doc(struct sd_summarizer *s, int64_t doc_id, const struct sd_summ_opts *opts,
                                const struct sd_summ_events *ev, struct sd_summary *out, struct sd_err *err)
{
    memset(out, 0, sizeof *out);
    struct sd_summ_opts dflt = {0};
    if (!opts)
        opts = &dflt;
    int words = sd_summ_opts_words(opts);
    if (words > SD_SUMM_MAX_WORDS_LIMIT)
        return sd_err_set(err, SD_ERR_RANGE, "--max-words %d is more than %d", words, SD_SUMM_MAX_WORDS_LIMIT);
    // Contexts as `ask` packs them leave SUMM_QA_RESERVE tokens for the question and the answer; a longer
    // summary needs smaller contexts (then `ask` shares only the template prefix with them).
    size_t budget = s->ctx_tokens, need = (size_t)max_new_tokens(words) + SUMM_QUESTION_TOKENS;
    if (need > SUMM_QA_RESERVE) {
        size_t fixed = need + s->head.n;
        budget = (size_t)s->g->n_ctx > fixed ? (size_t)s->g->n_ctx - fixed : 0;
    }
    if ((size_t)max_new_tokens(words) * 2 + 256 > budget)
        return sd_err_set(err, SD_ERR_RANGE,
                          "--max-words %d does not leave room to combine summaries in a %d-token window; use fewer "
                          "words or a larger --ctx",
                          words, s->g->n_ctx);
    double t0 = sd_now_s();
    struct sd_contexts *cx = NULL;
    size_t cap_parts = 0;
    enum sd_status r = sd_store_doc_get(s->store, doc_id, doc_copy, out, err);
    if (r)
        goto fail;
    progress(ev, "contexts", 0, 1);
    out->ask_packing = budget == s->ctx_tokens;
    struct sd_contexts_opts co = {.max_tokens = budget,
                                  .format = s->g->tmpl.ctx_format,
                                  .tokenize = sd_tokenizer_encode_cb,
                                  .tok_user = (void *)s->g->tok};
    if ((r = sd_contexts_build(s->store, &doc_id, 1, &co, &cx, err)))
        goto fail;
    progress(ev, "contexts", 1, 1);
    if (cx->n == 0) {
        r = sd_err_set(err, SD_ERR_MISSING,
                       "no text to summarize (scanned pages need OCR; see 'sparsedoc docs show %lld')",
                       (long long)doc_id);
        goto fail;
    }
    out->n_contexts = (int)cx->n;
    // Level 0: one part per context, with the pages or lines it covers.
    for (size_t i = 0; i < cx->n; i++) {
        const struct sd_context *c = &cx->items[i];
        struct sd_summary_part p = {.level = 0};
        for (size_t k = 0; k < c->n_spans; k++) {
            const struct sd_ctx_span *sp = &c->spans[k];
            if (sp->page_no > 0) {
                if (!p.page_first || sp->page_no < p.page_first)
                    p.page_first = sp->page_no;
                if (sp->page_no > p.page_last)
                    p.page_last = sp->page_no;
            } else if (sp->line_start > 0) {
                if (!p.line_first || sp->line_start < p.line_first)
                    p.line_first = sp->line_start;
                if (sp->line_end > p.line_last)
                    p.line_last = sp->line_end;
            }
        }
        p.range = range_text(p.page_first, p.page_last, p.line_first, p.line_last);
        char what[128], q[512];
        if (cx->n == 1)
            snprintf(what, sizeof what, "this document");
        else
            snprintf(what, sizeof what, "%s of this document", p.range ? p.range : "this part");
        question_text(opts->style, words, what, 0, q, sizeof q);
        r = summarize_prompt(s, c->tokens, c->n_tokens, q, words, ev, out, &p.text, err);
        if (!r)
            r = parts_add(out, &cap_parts, &p, err);
        if (r) {
            free(p.range);
            free(p.text);
            goto fail;
        }
    }
    sd_contexts_free(cx);
    cx = NULL;
    // Higher levels: group consecutive parts that fit one context and combine them, until one is left.
    size_t lvl_first = 0, lvl_n = out->n_parts;
    int level = 0;
    while (lvl_n > 1) {
        if (++level > MAX_DEPTH) {
            r = sd_err_set(err, SD_ERR_RANGE, "summary reduction did not converge in %d levels", MAX_DEPTH);
            goto fail;
        }
        size_t next_first = out->n_parts, i = lvl_first, end = lvl_first + lvl_n;
        int groups = 0;
        while (i < end) {
            size_t j = i, used = 0;
            while (j < end) {
                size_t t = part_tokens(s, out, &out->parts[j]);
                if (t == (size_t)-1) {
                    r = sd_err_set(err, SD_ERR_NOMEM, "could not tokenize a part summary");
                    goto fail;
                }
                if (j > i && (used + t > budget || (opts->fan_in >= 2 && j - i >= (size_t)opts->fan_in)))
                    break;
                used += t;
                j++;
            }
            struct sd_summary_part p;
            progress(ev, "reduce", level, 0);
            if ((r = combine(s, out, i, j - i, level, words, opts->style, ev, &p, err)))
                goto fail;
            if ((r = parts_add(out, &cap_parts, &p, err))) {
                free(p.range);
                free(p.text);
                goto fail;
            }
            groups++;
            i = j;
        }
        if ((size_t)groups >= lvl_n) {
            r = sd_err_set(err, SD_ERR_RANGE, "part summaries are too long to combine; use a smaller --max-words");
            goto fail;
        }
        lvl_first = next_first;
        lvl_n = (size_t)groups;
    }
    out->depth = level;
    out->text = strdup(out->parts[out->n_parts - 1].text ? out->parts[out->n_parts - 1].text : "");
    if (!out->text) {
        r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    out->total_s = sd_now_s() - t0;
    return SD_OK;
fail:
    sd_contexts_free(cx);
    sd_summary_free(out);
    return r;
}
