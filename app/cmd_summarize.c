// cmd_summarize.c: `sparsedoc summarize`, the CLI front end of app/summarize: flags, settings, the
// progress bar on a TTY (documents done, tokens/s, ETA), failure reports on stderr, and Markdown paths
// or JSON Lines (--json) on stdout. Ctrl-C stops after the current step; running again resumes.
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "qa.h"
#include "sd_clock.h"
#include "cli_args.h"
#include "settings.h"
#include "summarize.h"

static const char summarize_help[] =
    "usage: sparsedoc summarize PATH... [--out DIR] [--json] [--style brief|detailed|bullets] [--max-words N]\n"
    "                           [--model DIR] [--force] [--db FILE] [--cache-dir DIR] [--no-cache] [--ctx N]\n"
    "                           [--threads N] [--password PW] [--fan-in N] [--backend cpu|cuda] [--gpu-weights T]\n"
    "                           [--indexer-fp8] [--fp8-act] [--kv-fp8]\n\n"
    "Summarize each document (PDF, text file, or every file of a code tree) into DIR: one Markdown file per\n"
    "document and index.md. Paths not yet in the store are ingested first. A document larger than one\n"
    "context is summarized per context (with its page or line range), then the summaries are combined,\n"
    "as many levels as needed. Documents already summarized with the same model, style, word limit and\n"
    "content are skipped, so an interrupted run resumes where it stopped.\n"
    "  --out DIR        output directory (default ./summaries)\n"
    "  --json           one JSON line per document on stdout (document, pages, summary, parts, model,\n"
    "                   style, timings, cache statistics; \"status\": done, skipped or failed)\n"
    "  --style S        brief (default), detailed or bullets\n"
    "  --max-words N    at most N words per summary (default: brief 120, detailed 400, bullets 200)\n"
    "  --model DIR      model directory (default: settings, $SPARSEDOC_MODEL, or the shipped sparsedoc-mini)\n"
    "  --force          summarize again even documents the output directory already has\n"
    "  --db FILE        database (default $SPARSEDOC_DB or $XDG_DATA_HOME/sparsedoc/sparsedoc.db)\n"
    "  --cache-dir DIR  KV prefix cache (default $SPARSEDOC_CACHE_DIR or $XDG_CACHE_HOME/sparsedoc/kv)\n"
    "  --no-cache       neither read nor write the KV prefix cache\n"
    "  --ctx N          tokens of one prompt (default: settings, else the model's, at most 65536); use the\n"
    "                   same value for `ask` to share cached prefills\n"
    "  --threads N      CPU threads (default: all cores)\n"
    "  --backend NAME   cpu (default) or cuda (the forward pass on the GPU, builds with nvcc)\n"
    "  --gpu-weights T  cuda only: f32 (default), bf16, fp8 (FP8-released matrices kept FP8, the rest bf16) or\n"
    "                   fp8-f32\n"
    "  --indexer-fp8    DeepSeek's FP8 indexer numerics instead of fp32 (DSA models; default: settings)\n"
    "  --fp8-act        DeepSeek's FP8 GEMMs: inputs of FP8-released matrices quantized in 1x128 blocks (on\n"
    "                   --backend cuda with --gpu-weights fp8: FP8 tensor-core GEMMs for prefill; default: settings)\n"
    "  --kv-fp8         keep the MLA latent cache in FP8 (DeepSeek's 656-byte rows, 3.5x smaller than f32; models\n"
    "                   with MLA only; default: settings)\n"
    "  --password PW    password for encrypted PDFs\n"
    "  --fan-in N       combine at most N part summaries per step (default: as many as fit one context);\n"
    "                   smaller values make more levels, each over less text\n"
    "Exit status: 0 every document summarized, 1 some failed or the run was interrupted, 2 usage error.\n";

static volatile sig_atomic_t stop_requested;

static void on_sigint(int sig)
{
    stop_requested = 1;
    signal(sig, SIG_DFL); // a second Ctrl-C ends the process at once
}

struct ui {
    int json, tty, color;
    double t0, work_s, doc_t0;
    size_t total, finished, worked; // documents: finished (any outcome), summarized (timed)
    int64_t doc_tokens_total;       // document tokens of the batch, of finished documents, of timed ones
    int64_t doc_tokens_finished, doc_tokens_worked;
    int64_t tokens_done;           // prefill + generated tokens of finished documents
    int64_t cur_tokens, last_done; // of the document in progress
    const char *stage, *cur_path;
    int64_t stage_done, stage_total;
    int bar_shown;
    double last_draw;
};

static void clear_bar(struct ui *u)
{
    if (u->bar_shown) {
        fprintf(stderr, "\r\033[K");
        u->bar_shown = 0;
    }
}

static void fmt_eta(double s, char *buf, size_t cap)
{
    if (s < 0)
        snprintf(buf, cap, "--");
    else if (s < 90)
        snprintf(buf, cap, "%.0fs", s);
    else if (s < 5400)
        snprintf(buf, cap, "%.0fm", s / 60);
    else
        snprintf(buf, cap, "%.1fh", s / 3600);
}

static void draw(struct ui *u, int force)
{
    if (!u->tty || u->json)
        return;
    double t = sd_now_s();
    if (!force && t - u->last_draw < 0.2)
        return;
    u->last_draw = t;
    const int width = 24;
    int fill = u->total ? (int)(width * u->finished / u->total) : 0;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    double busy = u->work_s + (u->cur_path ? t - u->doc_t0 : 0);
    int64_t toks = u->tokens_done + u->cur_tokens;
    double rate = busy > 0.5 ? (double)toks / busy : 0;
    // ETA from document tokens left and document tokens per second so far (the current document's
    // processed tokens stand in until one document is done).
    double eta = -1, cur_el = u->cur_path ? t - u->doc_t0 : 0;
    double doc_rate = u->work_s > 0 && u->doc_tokens_worked > 0 ? (double)u->doc_tokens_worked / u->work_s
                      : cur_el > 1 && u->cur_tokens > 0         ? (double)u->cur_tokens / cur_el
                                                                : 0;
    int64_t left = u->doc_tokens_total - u->doc_tokens_finished;
    if (doc_rate > 0 && left >= 0) {
        eta = (double)left / doc_rate - cur_el;
        if (eta < 0)
            eta = 0;
    } else if (u->finished == u->total)
        eta = 0;
    char es[32];
    fmt_eta(eta, es, sizeof es);
    char cur[96] = "";
    if (u->cur_path) {
        const char *b = strrchr(u->cur_path, '/');
        b = b ? b + 1 : u->cur_path;
        if (u->stage && u->stage_total > 0)
            snprintf(cur, sizeof cur, "  %.40s: %s %lld%%", b, u->stage,
                     (long long)(100 * u->stage_done / u->stage_total));
        else
            snprintf(cur, sizeof cur, "  %.40s%s%s", b, u->stage ? ": " : "", u->stage ? u->stage : "");
    }
    fprintf(stderr, "\r\033[K[%s] %zu/%zu documents  %.0f tok/s  ETA %s%s", bar, u->finished, u->total, rate, es, cur);
    u->bar_shown = 1;
}

static void on_progress(void *user, const char *stage, int64_t done, int64_t total)
{
    struct ui *u = user;
    if (!strcmp(stage, "prefill") || !strcmp(stage, "generate")) {
        if (done < u->last_done || stage != u->stage)
            u->last_done = 0;
        u->cur_tokens += done - u->last_done;
        u->last_done = done;
    }
    u->stage = stage;
    u->stage_done = done;
    u->stage_total = total;
    draw(u, 0);
}

static void print_json_line(const char *json, const char *status, const char *path, const char *msg)
{
    json_object *j = json ? json_tokener_parse(json) : json_object_new_object();
    if (!j)
        return;
    if (!json) {
        json_object_object_add(j, "document", json_object_new_string(path ? path : ""));
        json_object_object_add(j, "error", json_object_new_string(msg ? msg : ""));
    }
    json_object_object_add(j, "status", json_object_new_string(status));
    printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    fflush(stdout);
    json_object_put(j);
}

static void on_doc(void *user, const struct sd_summ_doc_event *e)
{
    struct ui *u = user;
    const char *red = u->color ? "\033[31m" : "", *off = u->color ? "\033[0m" : "";
    u->total = e->total;
    u->doc_tokens_total = e->tokens_total;
    switch (e->kind) {
    case SD_SUMM_DOC_START:
        u->cur_path = e->path;
        u->doc_t0 = sd_now_s();
        u->cur_tokens = u->last_done = 0;
        u->stage = NULL;
        break;
    case SD_SUMM_DOC_DONE:
    case SD_SUMM_DOC_FAILED:
        if (u->cur_path) {
            u->work_s += sd_now_s() - u->doc_t0;
            u->worked++;
            u->tokens_done += u->cur_tokens;
            u->doc_tokens_worked += e->tokens;
        }
        u->doc_tokens_finished += e->tokens;
        u->cur_path = NULL;
        u->cur_tokens = 0;
        u->finished++;
        clear_bar(u);
        if (e->kind == SD_SUMM_DOC_FAILED) {
            if (u->json)
                print_json_line(NULL, "failed", e->path, e->msg);
            else
                fprintf(stderr, "%sfailed%s: %s: %s\n", red, off, e->path, e->msg ? e->msg : "");
        } else if (u->json)
            print_json_line(e->json, "done", e->path, NULL);
        else
            printf("%s\n", e->file);
        break;
    case SD_SUMM_DOC_SKIPPED:
        u->finished++;
        u->doc_tokens_finished += e->tokens;
        clear_bar(u);
        if (u->json)
            print_json_line(e->json, "skipped", e->path, NULL);
        else
            printf("%s (already summarized)\n", e->file);
        break;
    }
    fflush(stdout);
    draw(u, 1);
}

static void on_ingest(void *user, const struct sd_ingest_event *e)
{
    struct ui *u = user;
    if (e->kind == SD_INGEST_PLANNED || !e->total)
        return;
    if (e->kind == SD_INGEST_PAGE && !e->ocr)
        return; // text pages go by fast; OCR pages take a second or more each and are shown
    if (u->tty && !u->json) {
        if (e->kind == SD_INGEST_PAGE)
            fprintf(stderr, "\r\033[Kingesting %zu of %zu files: OCR of page %d of %d", e->index, e->total, e->page + 1,
                    e->n_pages);
        else
            fprintf(stderr, "\r\033[Kingesting %zu of %zu files", e->index, e->total);
        u->bar_shown = 1;
    }
}

static int should_cancel(void *user)
{
    (void)user;
    return stop_requested != 0;
}

static int usage_err(const char *msg)
{
    fprintf(stderr, "sparsedoc summarize: %s (see 'sparsedoc summarize --help')\n", msg);
    return SD_EXIT_USAGE;
}

static int parse_int(const char *v, int lo, int hi, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi)
        return -1;
    *out = (int)x;
    return 0;
}

int sd_cmd_summarize(int argc, char **argv)
{
    struct sd_qa_opts qo = {0};
    struct sd_summ_batch_opts bo = {0};
    struct sd_settings set = {0};
    struct sd_err err;
    int json = 0, rc = SD_EXIT_OK;
    char **paths = calloc((size_t)argc + 1, sizeof *paths);
    size_t n_paths = 0;
    const char *model = NULL, *db = NULL, *cache_dir = NULL, *backend = NULL;
    int no_cache = 0, n_ctx = 0, threads = 0, have_threads = 0, gw = 0, gw_bf16 = 0, gw_fp8 = 0, ix_fp8 = 0,
        fp8_act = 0, kv_fp8 = 0;
    if (!paths)
        return SD_EXIT_FAIL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = !strcmp(a, "--out") || !strcmp(a, "--style") || !strcmp(a, "--max-words") ||
                    !strcmp(a, "--model") || !strcmp(a, "--db") || !strcmp(a, "--cache-dir") || !strcmp(a, "--ctx") ||
                    !strcmp(a, "--threads") || !strcmp(a, "--password") || !strcmp(a, "--fan-in") ||
                    !strcmp(a, "--backend") || !strcmp(a, "--gpu-weights");
        if (takes && !v) {
            fprintf(stderr, "sparsedoc summarize: %s needs a value\n", a);
            rc = SD_EXIT_USAGE;
            goto out;
        }
        if (takes)
            i++;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s", summarize_help);
            goto out;
        } else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--force"))
            bo.force = 1;
        else if (!strcmp(a, "--no-cache"))
            no_cache = 1;
        else if (!strcmp(a, "--indexer-fp8"))
            ix_fp8 = 1;
        else if (!strcmp(a, "--fp8-act"))
            fp8_act = 1;
        else if (!strcmp(a, "--kv-fp8"))
            kv_fp8 = 1;
        else if (!strcmp(a, "--out"))
            bo.out_dir = v;
        else if (!strcmp(a, "--style")) {
            if (sd_summ_style_parse(v, &bo.summ.style)) {
                rc = usage_err("--style must be brief, detailed or bullets");
                goto out;
            }
        } else if (!strcmp(a, "--max-words")) {
            if (parse_int(v, 1, SD_SUMM_MAX_WORDS_LIMIT, &bo.summ.max_words)) {
                rc = usage_err("--max-words must be a number from 1 to 4000");
                goto out;
            }
        } else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--db"))
            db = v;
        else if (!strcmp(a, "--cache-dir"))
            cache_dir = v;
        else if (!strcmp(a, "--ctx")) {
            if (parse_int(v, 1024, 1 << 20, &n_ctx)) {
                rc = usage_err("--ctx must be a number of tokens, at least 1024");
                goto out;
            }
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(v, 1, 4096, &threads)) {
                rc = usage_err("--threads must be a positive number");
                goto out;
            }
            have_threads = 1;
        } else if (!strcmp(a, "--fan-in")) {
            if (parse_int(v, 2, 1000, &bo.summ.fan_in)) {
                rc = usage_err("--fan-in must be a number from 2 to 1000");
                goto out;
            }
        } else if (!strcmp(a, "--password"))
            bo.password = v;
        else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                rc = usage_err("--backend must be cpu or cuda");
                goto out;
            }
            backend = v;
        } else if (!strcmp(a, "--gpu-weights")) {
            if (sd_cli_gpu_weights("summarize", v, &gw_bf16, &gw_fp8)) {
                rc = SD_EXIT_USAGE;
                goto out;
            }
            gw = 1;
        } else if (!strcmp(a, "--")) {
            for (i++; i < argc; i++)
                paths[n_paths++] = argv[i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sparsedoc summarize: unknown option '%s' (see 'sparsedoc summarize --help')\n", a);
            rc = SD_EXIT_USAGE;
            goto out;
        } else
            paths[n_paths++] = argv[i];
    }
    if (!n_paths) {
        rc = usage_err("no PATH given");
        goto out;
    }
    // Settings first (shared with `ask` and the UI), flags override them.
    if (sd_settings_load(NULL, &set, &err)) {
        fprintf(stderr, "sparsedoc summarize: %s\n", err.msg);
        rc = SD_EXIT_FAIL;
        goto out;
    }
    sd_settings_to_qa_opts(&set, &qo);
    if (model)
        qo.model_dir = model;
    if (db)
        qo.db_path = db;
    if (cache_dir)
        qo.cache_dir = cache_dir;
    if (no_cache)
        qo.no_cache = 1;
    if (n_ctx)
        qo.n_ctx = n_ctx;
    if (have_threads)
        qo.n_threads = threads;
    if (ix_fp8)
        qo.indexer_fp8 = 1;
    if (fp8_act)
        qo.fp8_act = 1;
    if (kv_fp8)
        qo.kv_fp8 = 1;
    if (backend)
        qo.backend = backend;
    const int cuda = qo.backend && !strcmp(qo.backend, "cuda"); // the backend may come from the settings
    if (gw && !cuda) {
        rc = usage_err("--gpu-weights applies to --backend cuda only (the CPU backend keeps f32 weights)");
        goto out;
    }
    if (cuda) { // --gpu-weights, else the settings' mode (also under --backend cuda)
        qo.gpu_weights_bf16 = gw ? gw_bf16 : set.gpu_weights_bf16;
        qo.gpu_weights_fp8 = gw ? gw_fp8 : set.gpu_weights_fp8;
    }

    struct ui u = {.json = json, .tty = isatty(2), .t0 = sd_now_s()};
    const char *nc = getenv("NO_COLOR");
    u.color = u.tty && !(nc && *nc);
    struct sd_qa *qa = NULL;
    struct sd_summarizer *sm = NULL;
    if (u.tty && !json)
        fprintf(stderr, "loading the model...");
    if (sd_qa_open(&qo, &qa, &err) || sd_summarizer_open(qa, &qo, &sm, &err)) {
        if (u.tty && !json)
            fprintf(stderr, "\r\033[K");
        fprintf(stderr, "sparsedoc summarize: %s\n", err.msg);
        sd_qa_close(qa);
        rc = SD_EXIT_FAIL;
        goto out;
    }
    if (u.tty && !json)
        fprintf(stderr, "\r\033[K");
    if (sd_summarizer_model_note(sm) && !json)
        fprintf(stderr, "note: %s\n", sd_summarizer_model_note(sm));

    struct sd_summ_events ev = {.user = &u,
                                .on_progress = on_progress,
                                .on_doc = on_doc,
                                .on_ingest = on_ingest,
                                .should_cancel = should_cancel};
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    struct sd_summ_batch_stats st;
    enum sd_status r = sd_summarize_batch(sm, paths, n_paths, &bo, &ev, &st, &err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    clear_bar(&u);
    if (st.cancelled)
        fprintf(stderr, "sparsedoc summarize: interrupted; run the same command again to resume\n");
    else if (r)
        fprintf(stderr, "sparsedoc summarize: %s\n", err.msg);
    if (!json) {
        int64_t toks = st.tokens_prefilled + st.tokens_generated;
        fprintf(stderr,
                "%zu summarized, %zu already done, %zu failed of %zu documents in %.1f s; %lld prompt tokens "
                "(%lld reused from the KV cache or the live session), %lld generated, %.0f tok/s\n",
                st.done, st.skipped, st.failed, st.documents, st.seconds, (long long)st.tokens_prompt,
                (long long)st.tokens_reused, (long long)st.tokens_generated,
                u.work_s > 0 ? (double)toks / u.work_s : 0.0);
        if (!r || st.cancelled)
            fprintf(stderr, "index: %s/%s\n", bo.out_dir ? bo.out_dir : "summaries", SD_SUMM_INDEX);
    }
    rc = (r || st.failed || st.cancelled) ? SD_EXIT_FAIL : SD_EXIT_OK;
    sd_summarizer_close(sm);
    sd_qa_close(qa);
out:
    sd_settings_clear(&set);
    free(paths);
    return rc;
}
