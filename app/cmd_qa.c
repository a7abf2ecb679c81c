// cmd_qa.c: the question-answering commands of the sparsedoc CLI, thin front ends over app/qa.h:
// `ask` (one question: streamed answer, citations, strategy, a one-line cache summary, or --json) and
// `chat` (a REPL over one scope whose turns are saved as a conversation; --resume, --list).
// Documents are named by id or path (paths not yet in the store are ingested first) or by --repo DIR.
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli_args.h"
#include "commands.h"
#include "hub.h"
#include "qa.h"
#include "sd_clock.h"
#include "settings.h"

struct qa_cli {
    struct sd_qa_opts qo;
    struct sd_qa_ask_opts ao;
    const char **docs;
    int n_docs;
    const char *repo, *model_arg;
    char *model_buf;
    char *ocr_lang; // [ingest] ocr_languages of the settings (paths given with --doc/--repo are ingested)
    int json, list, verbose;
    int gpu_weights; // --gpu-weights given
    int64_t resume;
    char **words;
    int n_words;
};

static volatile sig_atomic_t g_cancel;
// First Ctrl-C: stop the answer (or skip the cache write) and finish cleanly; the handler then falls
// back to the default, so a second Ctrl-C quits at once, even in the middle of a cache write (which
// is crash-safe: blobs are written then renamed, rows committed last, leftovers removed by GC).
static void on_sigint(int sig)
{
    g_cancel = 1;
    signal(sig, SIG_DFL);
}

static int usage_err(const char *cmd, const char *msg)
{
    fprintf(stderr, "sparsedoc %s: %s (see 'sparsedoc %s --help')\n", cmd, msg, cmd);
    return SD_EXIT_USAGE;
}

static const char ask_help[] =
    "usage: sparsedoc ask [options] \"question\"\n"
    "Answer a question from documents in the store (all of them unless --doc/--repo narrow it).\n\n"
    "  --doc ID|PATH      a document by id or path (repeatable); paths not in the store are ingested\n"
    "  --repo DIR         ingest a code tree (respecting .gitignore) and ask about it\n"
    "  --model M          model directory or installed model name (default: $SPARSEDOC_MODEL, the\n"
    "                     configured model, else the shipped sparsedoc-mini)\n"
    "  --json             print one JSON object: answer, citations, strategy, timings, token counts\n"
    "  --max-tokens N     answer length limit (default 256)\n"
    "  --ctx N            tokens of one prompt (default: what the model supports, at most 64K)\n"
    "  --threads N        CPU threads (default: all cores)\n"
    "  --backend NAME     cpu (default) or cuda (fp32 forward pass on the GPU, builds with nvcc)\n"
    "  --gpu-weights T    cuda only: f32 (default), bf16, fp8 (FP8-released matrices kept FP8, the rest bf16)\n"
    "                     or fp8-f32\n"
    "  --strategy S       auto (default), select (FTS5 picks a context) or map-reduce\n"
    "  --attention MODE   sparse (default, DSA) or dense\n"
    "  --indexer-fp8      DeepSeek's FP8 indexer numerics instead of fp32 (DSA models; on --backend cuda with\n"
    "                     --gpu-weights bf16 or fp8 the indexer then runs on tensor cores at V3.2's shapes)\n"
    "  --fp8-act          DeepSeek's FP8 GEMMs: inputs of FP8-released matrices quantized in 1x128 blocks (on\n"
    "                     --backend cuda with --gpu-weights fp8: FP8 tensor-core GEMMs for prefill)\n"
    "  --kv-fp8           keep the MLA latent cache in FP8 (DeepSeek's 656-byte rows, 3.5x smaller than f32;\n"
    "                     models with MLA only)\n"
    "  --no-cache         neither read nor write the KV prefix cache\n"
    "  --db PATH          document store (default $SPARSEDOC_DB, else the XDG data dir)\n"
    "  --cache-dir DIR    KV prefix cache directory (default $SPARSEDOC_CACHE_DIR, else the XDG cache dir)\n"
    "SPARSEDOC_DEBUG_PROMPT=1 prints each prompt, as the model sees it, on stderr.\n";

static const char chat_help[] =
    "usage: sparsedoc chat [options]\n"
    "Ask follow-up questions about the same documents; each line you type is a question (Ctrl-D or /quit\n"
    "ends). The conversation is saved in the store; the KV state stays live between questions.\n\n"
    "  --doc ID|PATH      a document by id or path (repeatable); paths not in the store are ingested\n"
    "  --repo DIR         ingest a code tree and chat about it\n"
    "  --resume ID        continue a saved conversation (its documents and earlier turns)\n"
    "  --list             list saved conversations\n"
    "  --model M, --max-tokens N, --ctx N, --threads N, --backend NAME, --gpu-weights T, --indexer-fp8, --fp8-act,\n"
    "  --kv-fp8, --no-cache,\n"
    "  --db PATH, --cache-dir DIR, --json\n"
    "                     as for 'sparsedoc ask' (--json prints one object per answer)\n";

// Returns -1 after --help, SD_EXIT_USAGE on errors, 0 otherwise.
static int parse(int argc, char **argv, struct qa_cli *c, const char *help)
{
    memset(c, 0, sizeof *c);
    c->docs = calloc((size_t)argc + 1, sizeof *c->docs);
    c->words = calloc((size_t)argc + 1, sizeof *c->words);
    if (!c->docs || !c->words)
        return SD_EXIT_FAIL;
    const char *cmd = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
#define VALUE                                                                                                          \
    do {                                                                                                               \
        if (!v) {                                                                                                      \
            fprintf(stderr, "sparsedoc %s: %s needs a value\n", cmd, a);                                               \
            return SD_EXIT_USAGE;                                                                                      \
        }                                                                                                              \
        i++;                                                                                                           \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("%s", help);
            return -1;
        } else if (!strcmp(a, "--json"))
            c->json = 1;
        else if (!strcmp(a, "--no-cache"))
            c->qo.no_cache = 1;
        else if (!strcmp(a, "--list"))
            c->list = 1;
        else if (!strcmp(a, "--doc")) {
            VALUE;
            c->docs[c->n_docs++] = v;
        } else if (!strcmp(a, "--repo")) {
            VALUE;
            if (c->repo)
                return usage_err(cmd, "--repo may be given once");
            c->repo = v;
        } else if (!strcmp(a, "--model")) {
            VALUE;
            c->model_arg = v;
        } else if (!strcmp(a, "--backend")) {
            VALUE;
            if (strcmp(v, "cpu") && strcmp(v, "cuda"))
                return usage_err(cmd, "--backend must be cpu or cuda");
            c->qo.backend = v;
        } else if (!strcmp(a, "--gpu-weights")) {
            VALUE;
            if (sd_cli_gpu_weights(cmd, v, &c->qo.gpu_weights_bf16, &c->qo.gpu_weights_fp8))
                return SD_EXIT_USAGE;
            c->gpu_weights = 1;
        } else if (!strcmp(a, "--db")) {
            VALUE;
            c->qo.db_path = v;
        } else if (!strcmp(a, "--cache-dir")) {
            VALUE;
            c->qo.cache_dir = v;
        } else if (!strcmp(a, "--max-tokens")) {
            VALUE;
            if (sd_cli_long(cmd, a, v, 1, 65536, &x))
                return SD_EXIT_USAGE;
            c->ao.max_new_tokens = (int)x;
        } else if (!strcmp(a, "--ctx")) {
            VALUE;
            if (sd_cli_long(cmd, a, v, 1, 1 << 20, &x))
                return SD_EXIT_USAGE;
            c->qo.n_ctx = (int)x;
        } else if (!strcmp(a, "--threads")) {
            VALUE;
            if (sd_cli_long(cmd, a, v, 1, 1024, &x))
                return SD_EXIT_USAGE;
            c->qo.n_threads = (int)x;
        } else if (!strcmp(a, "--resume")) {
            VALUE;
            if (sd_cli_long(cmd, a, v, 1, LONG_MAX, &x))
                return SD_EXIT_USAGE;
            c->resume = x;
        } else if (!strcmp(a, "--strategy")) {
            VALUE;
            if (!strcmp(v, "auto"))
                c->ao.strategy = SD_QA_AUTO;
            else if (!strcmp(v, "select"))
                c->ao.strategy = SD_QA_SELECT;
            else if (!strcmp(v, "map-reduce") || !strcmp(v, "mapreduce"))
                c->ao.strategy = SD_QA_MAPREDUCE;
            else
                return usage_err(cmd, "--strategy must be auto, select or map-reduce");
        } else if (!strcmp(a, "--indexer-fp8")) {
            c->qo.indexer_fp8 = 1;
        } else if (!strcmp(a, "--fp8-act")) {
            c->qo.fp8_act = 1;
        } else if (!strcmp(a, "--kv-fp8")) {
            c->qo.kv_fp8 = 1;
        } else if (!strcmp(a, "--attention")) {
            VALUE;
            if (!strcmp(v, "sparse"))
                c->qo.dsa_mode = SD_DSA_SPARSE;
            else if (!strcmp(v, "dense"))
                c->qo.dsa_mode = SD_DSA_DENSE;
            else
                return usage_err(cmd, "--attention must be sparse or dense");
        } else if (!strcmp(a, "--")) {
            for (i++; i < argc; i++)
                c->words[c->n_words++] = argv[i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sparsedoc %s: unknown option '%s' (see 'sparsedoc %s --help')\n", cmd, a, cmd);
            return SD_EXIT_USAGE;
        } else
            c->words[c->n_words++] = argv[i];
#undef VALUE
    }
    if (c->gpu_weights && (!c->qo.backend || strcmp(c->qo.backend, "cuda")))
        return usage_err(cmd, "--gpu-weights applies to --backend cuda only (the CPU backend keeps f32 weights)");
    // --model NAME: an installed model (XDG data dir) when NAME is not a directory.
    if (c->model_arg) {
        struct stat st;
        char *root = NULL;
        if (!strchr(c->model_arg, '/') && stat(c->model_arg, &st) != 0 &&
            sd_hub_models_dir(NULL, &root, NULL) == SD_OK) {
            int bad = asprintf(&c->model_buf, "%s/%s", root, c->model_arg) < 0;
            free(root);
            if (bad)
                return SD_EXIT_FAIL;
            c->qo.model_dir = c->model_buf;
        } else
            c->qo.model_dir = c->model_arg;
    }
    // OCR of scanned pages in documents ingested on the way: as the settings say (the desktop app's too).
    struct sd_settings set;
    if (sd_settings_load(NULL, &set, NULL) == SD_OK) { // a broken file is reported where the model is resolved
        c->qo.no_ocr = set.no_ocr;
        c->qo.indexer_fp8 |= set.indexer_fp8; // the flags turn them on; the settings may already have
        c->qo.fp8_act |= set.fp8_act;
        c->qo.kv_fp8 |= set.kv_fp8;
        c->ocr_lang = set.ocr_lang;
        c->qo.ocr_lang = c->ocr_lang;
        set.ocr_lang = NULL;
    }
    sd_settings_clear(&set);
    return 0;
}

static void cli_free(struct qa_cli *c)
{
    free(c->docs);
    free(c->words);
    free(c->model_buf);
    free(c->ocr_lang);
}

// ---- progress (stderr, TTY only) ----

struct ui {
    int tty, json, bar;
    double t_last;
    char stage[16]; // the stage the bar shows, and since when: its rate and time left
    double t_stage;
    int64_t done0;
};

static void bar_clear(struct ui *u)
{
    if (u->bar) {
        fprintf(stderr, "\r\033[K");
        u->bar = 0;
    }
}

static void on_progress(void *user, const char *stage, int64_t done, int64_t total)
{
    struct ui *u = user;
    if (!u->tty || !strcmp(stage, "generate"))
        return;
    double t = sd_now_s();
    if (done < total && t - u->t_last < 0.1)
        return;
    u->t_last = t;
    if (strncmp(u->stage, stage, sizeof u->stage - 1)) {
        snprintf(u->stage, sizeof u->stage, "%s", stage);
        u->t_stage = t;
        u->done0 = done;
    }
    int w = 30, f = total > 0 ? (int)(w * done / total) : 0;
    fprintf(stderr, "\r\033[K%-9s [", stage);
    for (int i = 0; i < w; i++)
        fputc(i < f ? '#' : '.', stderr);
    fprintf(stderr, "] %lld/%lld", (long long)done, (long long)total);
    // After a second of a stage: its rate and, at that rate, the time left (long prefills take minutes).
    double dt = t - u->t_stage;
    if (dt >= 1.0 && done > u->done0 && done < total) {
        double rate = (double)(done - u->done0) / dt;
        fprintf(stderr, " · %.0f/s · ~%.0f s left", rate, (double)(total - done) / rate);
    }
    u->bar = 1;
    if (done >= total)
        bar_clear(u);
}

static void on_text(void *user, const char *text, size_t len)
{
    struct ui *u = user;
    if (u->json)
        return;
    bar_clear(u);
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void on_ingest(void *user, const struct sd_ingest_event *ev)
{
    struct ui *u = user;
    if (ev->kind == SD_INGEST_FAILED || ev->kind == SD_INGEST_WARNING || ev->kind == SD_INGEST_SKIPPED) {
        bar_clear(u);
        // The message usually names the file already: print the path only when it does not.
        const char *path = ev->path ? ev->path : "", *msg = ev->msg ? ev->msg : "";
        int named = *path && strstr(msg, path);
        fprintf(stderr, "sparsedoc: %s: %s%s%s\n", ev->kind == SD_INGEST_FAILED ? "failed" : "note", named ? "" : path,
                named || !*msg ? "" : ": ", msg);
    } else if (ev->kind == SD_INGEST_ADDED || ev->kind == SD_INGEST_UPDATED) {
        if (!u->json && !u->tty)
            fprintf(stderr, "sparsedoc: ingested %s\n", ev->path);
    }
}

static int should_cancel(void *user)
{
    (void)user;
    return g_cancel;
}

// ---- scope ----

struct prefix_acc {
    const char *prefix;
    size_t plen;
    int64_t *ids;
    size_t n, cap;
};

static int under_prefix(void *user, const struct sd_doc *d)
{
    struct prefix_acc *a = user;
    if (strncmp(d->path, a->prefix, a->plen) || d->path[a->plen] != '/')
        return 0;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        int64_t *nv = realloc(a->ids, a->cap * sizeof *nv);
        if (!nv)
            return 1;
        a->ids = nv;
    }
    a->ids[a->n++] = d->id;
    return 0;
}

static int exists_cb(void *user, const struct sd_doc *d)
{
    (void)d;
    *(int *)user = 1;
    return 0;
}

// Resolve --doc and --repo to document ids, ingesting paths first. *ids malloc'd.
static int resolve_scope(struct sd_qa *qa, const struct qa_cli *c, struct ui *u, const char *cmd, int64_t **ids,
                         size_t *n_ids)
{
    struct sd_err err = {0};
    size_t cap = (size_t)c->n_docs + 1;
    *ids = NULL;
    *n_ids = 0;
    char **paths = calloc((size_t)c->n_docs + 2, sizeof *paths);
    int64_t *out = calloc(cap, sizeof *out);
    int rc = SD_EXIT_FAIL;
    size_t n_paths = 0;
    if (!paths || !out)
        goto done;
    struct sd_store *s = sd_qa_store(qa);
    for (int i = 0; i < c->n_docs; i++) { // ids first, paths to ingest
        const char *d = c->docs[i];
        char *end;
        long long id = strtoll(d, &end, 10);
        struct stat st;
        if (*d && !*end && stat(d, &st) != 0) {
            int found = 0;
            sd_store_doc_get(s, id, exists_cb, &found, &err);
            if (!found) {
                fprintf(stderr, "sparsedoc %s: no document with id %lld (see 'sparsedoc docs')\n", cmd, id);
                goto done;
            }
            out[(*n_ids)++] = id;
            continue;
        }
        if (stat(d, &st) != 0) {
            fprintf(stderr, "sparsedoc %s: %s: %s\n", cmd, d, strerror(errno));
            goto done;
        }
        paths[n_paths++] = (char *)d;
    }
    if (c->repo) {
        struct stat st;
        if (stat(c->repo, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "sparsedoc %s: --repo %s: not a directory\n", cmd, c->repo);
            goto done;
        }
        paths[n_paths++] = (char *)c->repo;
    }
    if (n_paths) {
        struct sd_qa_events ev = {.user = u, .on_progress = on_progress, .on_ingest = on_ingest};
        struct sd_ingest_stats st = {0};
        if (sd_qa_ingest(qa, paths, n_paths, NULL, &ev, &st, &err)) {
            bar_clear(u);
            fprintf(stderr, "sparsedoc %s: %s\n", cmd, err.msg);
            goto done;
        }
        bar_clear(u);
    }
    for (size_t i = 0; i < n_paths; i++) {
        char *abs = realpath(paths[i], NULL);
        if (!abs) {
            fprintf(stderr, "sparsedoc %s: %s: %s\n", cmd, paths[i], strerror(errno));
            goto done;
        }
        struct stat st;
        if (stat(abs, &st) == 0 && S_ISDIR(st.st_mode)) {
            struct prefix_acc a = {abs, strlen(abs), NULL, 0, 0};
            sd_store_docs_foreach(s, under_prefix, &a, &err);
            if (!a.n) {
                fprintf(stderr, "sparsedoc %s: %s: no documents ingested from this directory\n", cmd, paths[i]);
                free(abs);
                free(a.ids);
                goto done;
            }
            int64_t *nv = realloc(out, (*n_ids + a.n + cap) * sizeof *nv);
            if (!nv) {
                free(abs);
                free(a.ids);
                goto done;
            }
            out = nv;
            memcpy(out + *n_ids, a.ids, a.n * sizeof *a.ids);
            *n_ids += a.n;
            free(a.ids);
        } else {
            struct sd_doc_state ds = {0};
            if (sd_store_doc_state(s, abs, &ds, &err) || !ds.found) {
                fprintf(stderr, "sparsedoc %s: %s could not be ingested (see the messages above)\n", cmd, paths[i]);
                free(abs);
                goto done;
            }
            out[(*n_ids)++] = ds.id;
        }
        free(abs);
    }
    *ids = out;
    out = NULL;
    rc = 0;
done:
    free(out);
    free(paths);
    return rc;
}

// ---- output ----

static void fmt_int(char *buf, size_t cap, int64_t v) // 126912 -> "126,912"
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)(v < 0 ? -v : v));
    size_t o = 0;
    if (v < 0 && o + 1 < cap)
        buf[o++] = '-';
    for (int i = 0; i < n && o + 2 < cap; i++) {
        buf[o++] = tmp[i];
        if ((n - i - 1) % 3 == 0 && i < n - 1)
            buf[o++] = ',';
    }
    buf[o] = 0;
}

static void print_human(const struct sd_qa_result *r, int no_cache)
{
    printf("\n");
    // The answer streamed above is already grounded (qa.c grounds each marker as it streams); the citation
    // list below says which markers were moved and what the model wrote.
    if (r->n_cites) {
        printf("\ncitations:\n");
        for (size_t i = 0; i < r->n_cites; i++) {
            const struct sd_qa_citation *c = &r->cites[i];
            if (!c->valid) {
                printf("  [%s]  not found in the documents used\n", c->marker);
                continue;
            }
            const char *base = c->path ? strrchr(c->path, '/') : NULL;
            base = base ? base + 1 : c->path;
            char hint[400] = ""; // grounding: the marker was moved to where the claim is, or the claim is not there
            if (c->corrected_from)
                snprintf(hint, sizeof hint, "  (model wrote %.300s)", c->corrected_from);
            else if (c->grounded == 0)
                snprintf(hint, sizeof hint, "  (not found in the cited passage)");
            if (c->page_no > 0) {
                if (c->page_label && strcmp(c->page_label, "") && atoi(c->page_label) != c->page_no)
                    printf("  [%s]  %s, page %d (printed %s)  %s%s\n", c->marker, base, c->page_no, c->page_label,
                           c->path, hint);
                else
                    printf("  [%s]  %s, page %d  %s%s\n", c->marker, base, c->page_no, c->path, hint);
            } else if (c->line_end > c->line_start)
                printf("  [%s]  %s:%d-%d%s\n", c->marker, c->path, c->line_start, c->line_end, hint);
            else
                printf("  [%s]  %s:%d%s\n", c->marker, c->path, c->line_start, hint);
        }
    }
    printf("strategy: %s\n", r->strategy ? r->strategy : "?");
    char a[32], b[32], p[32];
    fmt_int(a, sizeof a, r->tokens_reused);
    fmt_int(b, sizeof b, r->tokens_prompt);
    fmt_int(p, sizeof p, r->tokens_prefilled);
    if (no_cache)
        printf("cache: off; prefilled %s tokens in %.2f s, first token after %.2f s\n", p, r->prefill_s, r->ttft_s);
    else {
        printf("cache: reused %s of %s tokens", a, b);
        if (r->tokens_restored)
            printf(", restored in %.2f s", r->restore_s);
        if (r->tokens_reused > r->tokens_restored) {
            char l[32];
            fmt_int(l, sizeof l, r->tokens_reused - r->tokens_restored);
            printf(" (%s kept live)", l);
        }
        printf("; prefilled %s in %.2f s; first token after %.2f s", p, r->prefill_s, r->ttft_s);
        if (r->blocks_dropped)
            printf("; %d corrupt block%s dropped and recomputed", r->blocks_dropped, r->blocks_dropped > 1 ? "s" : "");
        if (r->blocks_stored)
            printf("; stored %d block%s", r->blocks_stored, r->blocks_stored > 1 ? "s" : "");
        printf("\n");
    }
    fflush(stdout);
    if (r->cache_write_error[0])
        fprintf(stderr, "sparsedoc: warning: new KV cache blocks were not stored: %s\n", r->cache_write_error);
}

static json_object *result_json(struct sd_qa *qa, const struct sd_qa_result *r, const char *question)
{
    json_object *j = json_object_new_object();
    json_object_object_add(j, "question", json_object_new_string(question));
    json_object_object_add(j, "answer", json_object_new_string(r->answer ? r->answer : ""));
    json_object *cs = json_object_new_array();
    for (size_t i = 0; i < r->n_cites; i++) {
        const struct sd_qa_citation *c = &r->cites[i];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "marker", json_object_new_string(c->marker));
        json_object_object_add(o, "valid", json_object_new_boolean(c->valid));
        // grounded: the claim before the marker is in the cited place (null: no claim to check);
        // corrected_from: the marker the model wrote, when the citation was moved to where the claim is.
        json_object_object_add(o, "grounded", c->grounded < 0 ? NULL : json_object_new_boolean(c->grounded));
        json_object_object_add(o, "corrected_from",
                               c->corrected_from ? json_object_new_string(c->corrected_from) : NULL);
        if (c->valid) {
            json_object_object_add(o, "doc_id", json_object_new_int64(c->doc_id));
            json_object_object_add(o, "path", json_object_new_string(c->path ? c->path : ""));
            if (c->title)
                json_object_object_add(o, "title", json_object_new_string(c->title));
            if (c->page_no > 0) {
                json_object_object_add(o, "page", json_object_new_int(c->page_no));
                if (c->page_label)
                    json_object_object_add(o, "page_label", json_object_new_string(c->page_label));
            } else {
                json_object_object_add(o, "line_start", json_object_new_int(c->line_start));
                json_object_object_add(o, "line_end", json_object_new_int(c->line_end));
            }
        }
        json_object_array_add(cs, o);
    }
    json_object_object_add(j, "citations", cs);
    json_object_object_add(j, "strategy", json_object_new_string(r->strategy ? r->strategy : ""));
    json_object_object_add(j, "n_contexts", json_object_new_int(r->n_contexts));
    json_object_object_add(j, "n_contexts_used", json_object_new_int(r->n_contexts_used));
    json_object_object_add(j, "model", json_object_new_string(sd_qa_model_name(qa)));
    json_object_object_add(j, "template", json_object_new_string(sd_qa_template_name(qa)));
    json_object *t = json_object_new_object();
    json_object_object_add(t, "prompt", json_object_new_int64(r->tokens_prompt));
    json_object_object_add(t, "context", json_object_new_int64(r->tokens_context));
    json_object_object_add(t, "reused", json_object_new_int64(r->tokens_reused));
    json_object_object_add(t, "restored", json_object_new_int64(r->tokens_restored));
    json_object_object_add(t, "prefilled", json_object_new_int64(r->tokens_prefilled));
    json_object_object_add(t, "generated", json_object_new_int64(r->tokens_generated));
    json_object_object_add(j, "tokens", t);
    json_object *ca = json_object_new_object();
    json_object_object_add(ca, "blocks_dropped", json_object_new_int(r->blocks_dropped));
    json_object_object_add(ca, "blocks_stored", json_object_new_int(r->blocks_stored));
    json_object_object_add(ca, "write_error",
                           r->cache_write_error[0] ? json_object_new_string(r->cache_write_error) : NULL);
    json_object_object_add(j, "cache", ca);
    json_object *tm = json_object_new_object();
    json_object_object_add(tm, "restore_s", json_object_new_double(r->restore_s));
    json_object_object_add(tm, "prefill_s", json_object_new_double(r->prefill_s));
    json_object_object_add(tm, "ttft_s", json_object_new_double(r->ttft_s));
    json_object_object_add(tm, "generate_s", json_object_new_double(r->generate_s));
    json_object_object_add(tm, "total_s", json_object_new_double(r->total_s));
    json_object_object_add(j, "timings", tm);
    if (r->conversation_id)
        json_object_object_add(j, "conversation_id", json_object_new_int64(r->conversation_id));
    return j;
}

static int open_qa(struct qa_cli *c, const char *cmd, struct sd_qa **qa)
{
    struct sd_err err = {0};
    if (sd_qa_open(&c->qo, qa, &err)) {
        fprintf(stderr, "sparsedoc %s: %s\n", cmd, err.msg);
        return SD_EXIT_FAIL;
    }
    return 0;
}

// One question; prints the answer. Returns the exit code.
static int ask_one(struct sd_qa *qa, struct qa_cli *c, struct ui *u, const struct sd_qa_scope *scope,
                   const char *question, const char *cmd)
{
    struct sd_qa_events ev = {
        .user = u, .on_progress = on_progress, .on_text = on_text, .should_cancel = should_cancel};
    struct sd_qa_result res;
    struct sd_err err = {0};
    g_cancel = 0;
    enum sd_status st = sd_qa_ask(qa, scope, question, &c->ao, &ev, &res, &err);
    bar_clear(u);
    if (st) {
        if (!c->json && res.answer && *res.answer)
            printf("\n");
        fprintf(stderr, "sparsedoc %s: %s\n", cmd, err.msg);
        sd_qa_result_free(&res);
        return SD_EXIT_FAIL;
    }
    if (c->json) {
        json_object *j = result_json(qa, &res, question);
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
        json_object_put(j);
    } else
        print_human(&res, c->qo.no_cache);
    sd_qa_result_free(&res);
    return SD_EXIT_OK;
}

int sd_cmd_ask(int argc, char **argv)
{
    struct qa_cli c;
    int rc = parse(argc, argv, &c, ask_help);
    if (rc) {
        cli_free(&c);
        return rc < 0 ? SD_EXIT_OK : rc;
    }
    if (c.list || c.resume) {
        cli_free(&c);
        return usage_err(argv[0], "--list and --resume belong to 'sparsedoc chat'");
    }
    // The question: the positional words joined with spaces.
    size_t ql = 1;
    for (int i = 0; i < c.n_words; i++)
        ql += strlen(c.words[i]) + 1;
    char *question = calloc(ql, 1);
    for (int i = 0; question && i < c.n_words; i++) {
        if (i)
            strcat(question, " ");
        strcat(question, c.words[i]);
    }
    if (!question || !*question) {
        free(question);
        cli_free(&c);
        return usage_err(argv[0], "give a question");
    }
    struct ui u = {.tty = isatty(2), .json = c.json};
    struct sd_qa *qa = NULL;
    int64_t *ids = NULL;
    size_t n_ids = 0;
    signal(SIGINT, on_sigint);
    if ((rc = open_qa(&c, argv[0], &qa)) || (rc = resolve_scope(qa, &c, &u, argv[0], &ids, &n_ids)))
        goto out;
    struct sd_qa_scope scope = {ids, n_ids};
    rc = ask_one(qa, &c, &u, &scope, question, argv[0]);
out:
    signal(SIGINT, SIG_DFL);
    sd_qa_close(qa);
    free(ids);
    free(question);
    cli_free(&c);
    return rc;
}

// ---- chat ----

static int list_conv(void *user, const struct sd_qa_conversation *cv)
{
    int *n = user;
    char when[32] = "";
    time_t t = (time_t)(cv->updated_ms / 1000);
    struct tm tm;
    if (localtime_r(&t, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
    if (!(*n)++)
        printf("%6s  %5s  %-16s  %s\n", "ID", "TURNS", "UPDATED", "TITLE");
    printf("%6lld  %5d  %-16s  %s\n", (long long)cv->id, cv->n_turns, when, cv->title ? cv->title : "");
    return 0;
}

static int show_turn(void *user, const struct sd_qa_turn *t)
{
    (void)user;
    printf("> %s\n%s\n\n", t->question, t->answer);
    return 0;
}

int sd_cmd_chat(int argc, char **argv)
{
    struct qa_cli c;
    int rc = parse(argc, argv, &c, chat_help);
    if (rc) {
        cli_free(&c);
        return rc < 0 ? SD_EXIT_OK : rc;
    }
    if (c.n_words) {
        cli_free(&c);
        return usage_err(argv[0], "chat reads questions from its input; use 'sparsedoc ask' for one question");
    }
    if (c.resume && (c.n_docs || c.repo)) {
        cli_free(&c);
        return usage_err(argv[0], "--resume uses the conversation's own documents; drop --doc/--repo");
    }
    struct ui u = {.tty = isatty(2), .json = c.json};
    struct sd_qa *qa = NULL;
    int64_t *ids = NULL;
    size_t n_ids = 0;
    char *line = NULL;
    size_t cap = 0;
    struct sd_err err = {0};
    if ((rc = open_qa(&c, argv[0], &qa)))
        goto out;
    if (c.list) {
        int n = 0;
        if (sd_qa_conversations_foreach(qa, list_conv, &n, &err)) {
            fprintf(stderr, "sparsedoc chat: %s\n", err.msg);
            rc = SD_EXIT_FAIL;
        } else if (!n)
            printf("no saved conversations\n");
        goto out;
    }
    int64_t conv = c.resume;
    if (conv) {
        if (sd_qa_conversation_load(qa, conv, &ids, &n_ids, c.json ? NULL : show_turn, NULL, &err)) {
            fprintf(stderr, "sparsedoc chat: %s\n", err.msg);
            rc = SD_EXIT_FAIL;
            goto out;
        }
    } else if ((rc = resolve_scope(qa, &c, &u, argv[0], &ids, &n_ids)))
        goto out;
    struct sd_qa_scope scope = {ids, n_ids};
    int interactive = isatty(0);
    if (interactive && !c.json)
        fprintf(stderr, "sparsedoc chat with %s%s; Ctrl-D or /quit ends\n", sd_qa_model_name(qa),
                conv ? " (resumed)" : "");
    for (;;) {
        if (interactive)
            fprintf(stderr, "> ");
        g_cancel = 0; // Ctrl-C at the prompt quits (turns are already saved); during an answer it stops it
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0)
            break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        char *q = line;
        while (*q == ' ' || *q == '\t')
            q++;
        if (!*q)
            continue;
        if (!strcmp(q, "/quit") || !strcmp(q, "/exit"))
            break;
        if (!conv) {
            char title[72];
            snprintf(title, sizeof title, "%.64s%s", q, strlen(q) > 64 ? "..." : "");
            if (sd_qa_conversation_new(qa, &scope, title, &conv, &err)) {
                fprintf(stderr, "sparsedoc chat: %s\n", err.msg);
                rc = SD_EXIT_FAIL;
                break;
            }
            if (!c.json)
                fprintf(stderr, "(conversation %lld; resume with 'sparsedoc chat --resume %lld')\n", (long long)conv,
                        (long long)conv);
        }
        c.ao.conversation_id = conv;
        signal(SIGINT, on_sigint);
        if (ask_one(qa, &c, &u, &scope, q, argv[0]))
            rc = SD_EXIT_FAIL; // reported; the conversation goes on
        signal(SIGINT, SIG_DFL);
        if (!c.json)
            printf("\n");
    }
    signal(SIGINT, SIG_DFL);
out:
    free(line);
    sd_qa_close(qa);
    free(ids);
    cli_free(&c);
    return rc;
}
