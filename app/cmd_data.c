// cmd_data.c: the document-store commands of the sparsedoc CLI: ingest, docs (list/show/rm), search
// and contexts. Thin front ends over data/: they parse flags, resolve the database path (--db,
// $SPARSEDOC_DB, XDG), draw progress on a TTY and print text or --json (json-c).
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_args.h"
#include "commands.h"
#include "contexts.h"
#include "ingest.h"
#include "ocr.h"
#include "paths.h"
#include "sd_clock.h"
#include "settings.h"
#include "store.h"
#include "tokenizer.h"

struct opts {
    const char *db, *password, *tokenizer, *ocr_lang;
    int json, limit, no_ocr, ocr_set;
    double page_timeout, file_timeout;
    long long max_file_bytes, max_tokens;
    char **args;
    int n_args;
};

static int usage_err(const char *cmd, const char *msg)
{
    fprintf(stderr, "sparsedoc %s: %s (see 'sparsedoc %s --help')\n", cmd, msg, cmd);
    return SD_EXIT_USAGE;
}

// Parse the shared flags; positional arguments are kept in order. Returns -1 after printing help,
// SD_EXIT_USAGE on a bad flag, 0 otherwise.
static int parse(int argc, char **argv, struct opts *o, const char *help)
{
    memset(o, 0, sizeof *o);
    o->limit = 10;
    o->args = calloc((size_t)argc + 1, sizeof *o->args);
    if (!o->args)
        return SD_EXIT_FAIL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE                                                                                                    \
    do {                                                                                                               \
        if (!v) {                                                                                                      \
            fprintf(stderr, "sparsedoc %s: %s needs a value\n", argv[0], a);                                           \
            return SD_EXIT_USAGE;                                                                                      \
        }                                                                                                              \
        i++;                                                                                                           \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s", help);
            return -1;
        } else if (!strcmp(a, "--json"))
            o->json = 1;
        else if (!strcmp(a, "--db")) {
            NEED_VALUE;
            o->db = v;
        } else if (!strcmp(a, "--password")) {
            NEED_VALUE;
            o->password = v;
        } else if (!strcmp(a, "--tokenizer")) {
            NEED_VALUE;
            o->tokenizer = v;
        } else if (!strcmp(a, "--limit")) {
            NEED_VALUE;
            long x;
            if (sd_cli_long(argv[0], a, v, 1, INT_MAX, &x))
                return SD_EXIT_USAGE;
            o->limit = (int)x;
        } else if (!strcmp(a, "--ocr")) {
            NEED_VALUE;
            if (strcmp(v, "auto") && strcmp(v, "off")) {
                fprintf(stderr, "sparsedoc %s: --ocr takes auto or off, not '%s'\n", argv[0], v);
                return SD_EXIT_USAGE;
            }
            o->no_ocr = !strcmp(v, "off");
            o->ocr_set = 1;
        } else if (!strcmp(a, "--ocr-lang")) {
            NEED_VALUE;
            if (!sd_ocr_lang_ok(v)) {
                fprintf(stderr,
                        "sparsedoc %s: --ocr-lang takes Tesseract language codes such as eng or eng+fra, not '%s'\n",
                        argv[0], v);
                return SD_EXIT_USAGE;
            }
            o->ocr_lang = v;
        } else if (!strcmp(a, "--page-timeout")) {
            NEED_VALUE;
            if (sd_cli_double(argv[0], a, v, 0.001, 86400, &o->page_timeout))
                return SD_EXIT_USAGE;
        } else if (!strcmp(a, "--file-timeout")) {
            NEED_VALUE;
            if (sd_cli_double(argv[0], a, v, 0.001, 86400, &o->file_timeout))
                return SD_EXIT_USAGE;
        } else if (!strcmp(a, "--max-file-size")) {
            NEED_VALUE;
            long x;
            if (sd_cli_long(argv[0], a, v, 1, LONG_MAX, &x))
                return SD_EXIT_USAGE;
            o->max_file_bytes = x;
        } else if (!strcmp(a, "--max-tokens")) {
            NEED_VALUE;
            long x;
            if (sd_cli_long(argv[0], a, v, 64, SD_CONTEXT_MAX_TOKENS, &x))
                return SD_EXIT_USAGE;
            o->max_tokens = x;
        } else if (!strcmp(a, "--")) {
            for (i++; i < argc; i++)
                o->args[o->n_args++] = argv[i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sparsedoc %s: unknown option '%s' (see 'sparsedoc %s --help')\n", argv[0], a, argv[0]);
            return SD_EXIT_USAGE;
        } else
            o->args[o->n_args++] = argv[i];
#undef NEED_VALUE
    }
    if (!o->tokenizer)
        o->tokenizer = getenv("SPARSEDOC_TOKENIZER");
    return 0;
}

static int open_store(const struct opts *o, const char *cmd, struct sd_store **s)
{
    char *path = NULL;
    struct sd_err err;
    if (sd_paths_db(o->db, &path, &err) || sd_store_open(path, s, &err)) {
        fprintf(stderr, "sparsedoc %s: %s\n", cmd, err.msg);
        free(path);
        return SD_EXIT_FAIL;
    }
    free(path);
    return 0;
}

static int use_color(void)
{
    const char *nc = getenv("NO_COLOR");
    return isatty(2) && !(nc && *nc);
}

// ---- tokenizer adapter ----

static int load_tokenizer(const struct opts *o, const char *cmd, struct sd_tokenizer **tok)
{
    *tok = NULL;
    if (!o->tokenizer)
        return 0;
    struct sd_err err;
    if (sd_tokenizer_load(o->tokenizer, tok, &err)) {
        fprintf(stderr, "sparsedoc %s: %s\n", cmd, err.msg);
        return SD_EXIT_FAIL;
    }
    return 0;
}

// ---- ingest ----

static volatile int ingest_cancel;

static void on_sigint(int sig)
{
    (void)sig;
    ingest_cancel = 1;
}

struct ingest_ui {
    int json, tty, color;
    json_object *failed, *skipped, *warnings, *removed;
    double t0, last_page_draw;
    int bar_shown;
};

static void clear_bar(struct ingest_ui *u)
{
    if (u->bar_shown) {
        fprintf(stderr, "\r\033[K");
        u->bar_shown = 0;
    }
}

static void add_item(json_object *arr, const char *path, const char *msg)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "path", json_object_new_string(path ? path : ""));
    json_object_object_add(o, "reason", json_object_new_string(msg ? msg : ""));
    json_object_array_add(arr, o);
}

static void on_event(void *user, const struct sd_ingest_event *ev)
{
    struct ingest_ui *u = user;
    const char *red = u->color ? "\033[31m" : "", *yel = u->color ? "\033[33m" : "", *off = u->color ? "\033[0m" : "";
    switch (ev->kind) {
    case SD_INGEST_PLANNED:
        if (ev->msg && !u->json)
            fprintf(stderr, "sparsedoc ingest: %s\n", ev->msg);
        break;
    case SD_INGEST_FAILED:
        add_item(u->failed, ev->path, ev->msg);
        if (!u->json) {
            clear_bar(u);
            fprintf(stderr, "%sfailed%s: %s\n", red, off, ev->msg && strstr(ev->msg, ev->path ? ev->path : "\1")
                                                              ? ev->msg
                                                              : ev->path);
            if (ev->msg && !strstr(ev->msg, ev->path ? ev->path : "\1"))
                fprintf(stderr, "  %s\n", ev->msg);
        }
        break;
    case SD_INGEST_SKIPPED: add_item(u->skipped, ev->path, ev->msg); break;
    case SD_INGEST_WARNING:
        add_item(u->warnings, ev->path, ev->msg);
        if (!u->json) {
            clear_bar(u);
            fprintf(stderr, "%swarning%s: %s: %s\n", yel, off, ev->path, ev->msg);
        }
        break;
    case SD_INGEST_REMOVED: add_item(u->removed, ev->path, ev->msg); break;
    case SD_INGEST_PAGE:
        if (u->tty && !u->json && (ev->ocr || sd_now_s() - u->last_page_draw > 0.1)) {
            const char *base = ev->path ? strrchr(ev->path, '/') : NULL;
            base = base ? base + 1 : ev->path ? ev->path : "";
            fprintf(stderr, "\r\033[Kfile %zu of %zu: %s, page %d of %d%s", ev->index, ev->total, base, ev->page + 1,
                    ev->n_pages, ev->ocr ? " (OCR)" : "");
            u->bar_shown = 1;
            u->last_page_draw = sd_now_s();
        }
        return;
    default: break;
    }
    if (u->tty && !u->json && ev->total && ev->index) {
        double el = sd_now_s() - u->t0;
        char eta[64] = "";
        if (ev->bytes_done > 0 && el > 2 && ev->bytes_total > ev->bytes_done) {
            double left = el * (double)(ev->bytes_total - ev->bytes_done) / (double)ev->bytes_done;
            if (left < 90)
                snprintf(eta, sizeof eta, ", about %.0f seconds left", left);
            else
                snprintf(eta, sizeof eta, ", about %.0f minutes left", left / 60);
        }
        fprintf(stderr, "\r\033[K%zu of %zu files%s", ev->index, ev->total, eta);
        u->bar_shown = 1;
    }
}

static const char ingest_help[] =
    "usage: sparsedoc ingest PATH... [--db FILE] [--json] [--password PW] [--tokenizer tokenizer.json]\n"
    "                        [--page-timeout S] [--file-timeout S] [--max-file-size BYTES]\n"
    "                        [--ocr auto|off] [--ocr-lang LANGS]\n\n"
    "Add PDFs, text files and directory trees (honouring .gitignore) to the document store.\n"
    "Unchanged files are skipped; changed files are replaced; files deleted from a tree are removed.\n"
    "An interrupted ingest resumes where it stopped when run again.\n"
    "  --db FILE        database (default $SPARSEDOC_DB or $XDG_DATA_HOME/sparsedoc/sparsedoc.db)\n"
    "  --password PW    password for encrypted PDFs\n"
    "  --tokenizer F    count tokens with this tokenizer.json (or $SPARSEDOC_TOKENIZER)\n"
    "  --ocr auto|off   read PDF pages without a text layer (scans) by OCR with Tesseract when it and its\n"
    "                   language data are installed (auto, the default), or only flag them (off)\n"
    "  --ocr-lang L     Tesseract languages, e.g. eng (default) or eng+fra (package tesseract-ocr-fra)\n"
    "                   (defaults of both: [ingest] ocr and ocr_languages in the config.ini of the settings)\n"
    "  --json           machine-readable summary on stdout\n"
    "Exit status: 0 all ingested, 1 something failed, 2 usage error.\n";

int sd_cmd_ingest(int argc, char **argv)
{
    struct opts o;
    int rc = parse(argc, argv, &o, ingest_help);
    if (rc)
        goto out_args;
    if (!o.n_args) {
        rc = usage_err("ingest", "no PATH given");
        goto out_args;
    }
    struct sd_store *s = NULL;
    struct sd_tokenizer *tok = NULL;
    if ((rc = open_store(&o, "ingest", &s)) || (rc = load_tokenizer(&o, "ingest", &tok)))
        goto out;
    struct ingest_ui u = {.json = o.json, .tty = isatty(2), .color = use_color(), .t0 = sd_now_s()};
    u.failed = json_object_new_array();
    u.skipped = json_object_new_array();
    u.warnings = json_object_new_array();
    u.removed = json_object_new_array();
    // OCR: the settings ([ingest] ocr, ocr_languages; shared with the desktop app), then the flags.
    struct sd_settings set;
    struct sd_err serr = {0};
    if (sd_settings_load(NULL, &set, &serr) != SD_OK) {
        fprintf(stderr, "sparsedoc ingest: warning: %s; OCR uses its defaults\n", serr.msg);
        sd_settings_clear(&set); // load filled in the defaults before it failed
    }
    if (!o.ocr_set)
        o.no_ocr = set.no_ocr;
    if (!o.ocr_lang)
        o.ocr_lang = set.ocr_lang;
    struct sd_ingest_opts io = {.password = o.password,
                                .page_timeout_s = o.page_timeout,
                                .file_timeout_s = o.file_timeout,
                                .max_file_bytes = o.max_file_bytes,
                                .count_tokens = tok ? sd_tokenizer_count_cb : NULL,
                                .tok_user = tok,
                                .on_event = on_event,
                                .user = &u,
                                .cancel = &ingest_cancel,
                                .no_ocr = o.no_ocr,
                                .ocr_lang = o.ocr_lang};
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    struct sd_ingest_stats st;
    struct sd_err err;
    enum sd_status r = sd_ingest(s, o.args, (size_t)o.n_args, &io, &st, &err);
    if (o.ocr_lang == set.ocr_lang)
        o.ocr_lang = NULL;
    sd_settings_clear(&set);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    clear_bar(&u);
    double el = sd_now_s() - u.t0;
    if (o.json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "ok", json_object_new_boolean(!r && !st.failed && !st.cancelled));
        if (r)
            json_object_object_add(j, "error", json_object_new_string(err.msg));
        json_object_object_add(j, "files", json_object_new_int64((int64_t)st.files));
        json_object_object_add(j, "added", json_object_new_int64((int64_t)st.added));
        json_object_object_add(j, "updated", json_object_new_int64((int64_t)st.updated));
        json_object_object_add(j, "unchanged", json_object_new_int64((int64_t)st.unchanged));
        json_object_object_add(j, "removed_documents", json_object_new_int64((int64_t)st.removed));
        json_object_object_add(j, "pages", json_object_new_int64(st.pages));
        json_object_object_add(j, "ocr_pages", json_object_new_int64(st.ocr_pages));
        json_object_object_add(j, "ocr_read_pages", json_object_new_int64(st.ocr_read_pages));
        json_object_object_add(j, "no_text_pages", json_object_new_int64(st.no_text_pages));
        json_object_object_add(j, "failed_pages", json_object_new_int64(st.failed_pages));
        json_object_object_add(j, "spans", json_object_new_int64(st.spans));
        json_object_object_add(j, "tokens", tok ? json_object_new_int64(st.tokens) : NULL);
        json_object_object_add(j, "bytes", json_object_new_int64(st.bytes));
        json_object_object_add(j, "seconds", json_object_new_double(el));
        json_object_object_add(j, "resumed", json_object_new_boolean(st.resumed));
        json_object_object_add(j, "interrupted", json_object_new_boolean(st.cancelled));
        json_object_object_add(j, "failed", json_object_get(u.failed));
        json_object_object_add(j, "skipped", json_object_get(u.skipped));
        json_object_object_add(j, "warnings", json_object_get(u.warnings));
        json_object_object_add(j, "removed", json_object_get(u.removed));
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(j);
    } else {
        if (r)
            fprintf(stderr, "sparsedoc ingest: %s\n", err.msg);
        printf("%zu document%s added, %zu updated, %zu unchanged, %zu removed; %lld pages, %lld spans", st.added,
               st.added == 1 ? "" : "s", st.updated, st.unchanged, st.removed, (long long)st.pages,
               (long long)st.spans);
        if (tok)
            printf(", %lld tokens", (long long)st.tokens);
        printf("; %zu skipped, %zu failed (%.1f s)\n", st.skipped, st.failed, el);
        if (st.ocr_read_pages)
            printf("%lld page(s) without a text layer were read by OCR\n", (long long)st.ocr_read_pages);
        if (st.ocr_pages)
            printf("%lld page(s) have no usable text and need OCR (see 'sparsedoc docs show ID')\n",
                   (long long)st.ocr_pages);
        if (st.cancelled)
            printf("interrupted: run the same command again to resume\n");
    }
    rc = (r || st.failed || st.cancelled) ? SD_EXIT_FAIL : SD_EXIT_OK;
    json_object_put(u.failed);
    json_object_put(u.skipped);
    json_object_put(u.warnings);
    json_object_put(u.removed);
out:
    sd_tokenizer_free(tok);
    sd_store_close(s);
out_args:
    free(o.args);
    return rc < 0 ? SD_EXIT_OK : rc;
}

// ---- docs ----

static json_object *doc_json(const struct sd_doc *d)
{
    json_object *j = json_object_new_object();
    json_object_object_add(j, "id", json_object_new_int64(d->id));
    json_object_object_add(j, "path", json_object_new_string(d->path));
    json_object_object_add(j, "kind", json_object_new_string(d->kind));
    json_object_object_add(j, "lang", d->lang ? json_object_new_string(d->lang) : NULL);
    json_object_object_add(j, "title", d->title ? json_object_new_string(d->title) : NULL);
    json_object_object_add(j, "author", d->author ? json_object_new_string(d->author) : NULL);
    json_object_object_add(j, "size", json_object_new_int64(d->size));
    json_object_object_add(j, "sha256", json_object_new_string(d->sha256 ? d->sha256 : ""));
    json_object_object_add(j, "pages", json_object_new_int64(d->n_pages));
    json_object_object_add(j, "lines", json_object_new_int64(d->n_lines));
    json_object_object_add(j, "spans", json_object_new_int64(d->n_spans));
    json_object_object_add(j, "chars", json_object_new_int64(d->n_chars));
    json_object_object_add(j, "tokens", d->n_tokens >= 0 ? json_object_new_int64(d->n_tokens) : NULL);
    json_object_object_add(j, "needs_ocr_pages", d->ocr_pages ? json_object_new_string(d->ocr_pages) : NULL);
    json_object_object_add(j, "ocr_read_pages", json_object_new_int64(d->n_ocr_read));
    json_object_object_add(j, "failed_pages", d->failed_pages ? json_object_new_string(d->failed_pages) : NULL);
    json_object_object_add(j, "ingested_at", json_object_new_int64(d->ingested_at));
    return j;
}

struct list_ctx {
    int json;
    json_object *arr;
    size_t n;
};

static int list_one(void *user, const struct sd_doc *d)
{
    struct list_ctx *c = user;
    c->n++;
    if (c->json)
        json_object_array_add(c->arr, doc_json(d));
    else {
        char extent[32];
        if (!strcmp(d->kind, "pdf"))
            snprintf(extent, sizeof extent, "%lld p", (long long)d->n_pages);
        else
            snprintf(extent, sizeof extent, "%lld lines", (long long)d->n_lines);
        printf("%6lld  %-8s %12s  %s%s\n", (long long)d->id, d->kind, extent, d->path,
               d->ocr_pages ? "  [needs OCR on some pages]" : "");
    }
    return 0;
}

static int show_one(void *user, const struct sd_doc *d)
{
    struct list_ctx *c = user;
    c->n++;
    if (c->json) {
        c->arr = doc_json(d);
        return 0;
    }
    printf("id:       %lld\npath:     %s\nkind:     %s%s%s\n", (long long)d->id, d->path, d->kind,
           d->lang ? " / " : "", d->lang ? d->lang : "");
    if (d->title)
        printf("title:    %s\n", d->title);
    if (d->author)
        printf("author:   %s\n", d->author);
    if (!strcmp(d->kind, "pdf"))
        printf("pages:    %lld\n", (long long)d->n_pages);
    else
        printf("lines:    %lld\n", (long long)d->n_lines);
    printf("spans:    %lld\nchars:    %lld\n", (long long)d->n_spans, (long long)d->n_chars);
    if (d->n_tokens >= 0)
        printf("tokens:   %lld\n", (long long)d->n_tokens);
    printf("size:     %lld bytes\nsha256:   %s\n", (long long)d->size, d->sha256);
    if (d->n_ocr_read)
        printf("read by OCR: %lld page(s) without a text layer\n", (long long)d->n_ocr_read);
    if (d->ocr_pages)
        printf("needs OCR (no usable text layer) on pages: %s\n", d->ocr_pages);
    if (d->failed_pages)
        printf("failed to extract pages: %s\n", d->failed_pages);
    return 0;
}

static int section_one(void *user, const struct sd_section_row *r)
{
    struct list_ctx *c = user;
    if (c->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "level", json_object_new_int(r->level));
        json_object_object_add(j, "page", json_object_new_int(r->page_no));
        json_object_object_add(j, "title", json_object_new_string(r->title));
        json_object_array_add(c->arr, j);
    } else {
        if (!c->n++)
            printf("outline:\n");
        printf("  %*s%s%s", r->level * 2, "", r->title, r->page_no ? "" : "\n");
        if (r->page_no)
            printf("  (p. %d)\n", r->page_no);
    }
    return 0;
}

static const char docs_help[] = "usage: sparsedoc docs [list] [--json] [--db FILE]\n"
                                "       sparsedoc docs show ID [--json] [--db FILE]\n"
                                "       sparsedoc docs rm ID [--db FILE]\n\n"
                                "List (the default), inspect or remove ingested documents.\n";

int sd_cmd_docs(int argc, char **argv)
{
    struct opts o;
    int rc = parse(argc, argv, &o, docs_help);
    if (rc)
        goto out_args;
    const char *sub = o.n_args ? o.args[0] : "list"; // the read-only one
    long long id = 0;
    if (strcmp(sub, "list")) {
        char *end = NULL;
        if (strcmp(sub, "show") && strcmp(sub, "rm")) {
            rc = usage_err("docs", "unknown subcommand (list, show ID, rm ID)");
            goto out_args;
        }
        if (o.n_args < 2 || (id = strtoll(o.args[1], &end, 10)) <= 0 || *end) {
            rc = usage_err("docs", "a document ID (a positive number from 'docs list') is needed");
            goto out_args;
        }
    }
    struct sd_store *s = NULL;
    if ((rc = open_store(&o, "docs", &s)))
        goto out_args;
    struct sd_err err;
    struct list_ctx c = {.json = o.json};
    enum sd_status r = SD_OK;
    if (!strcmp(sub, "list")) {
        c.arr = json_object_new_array();
        r = sd_store_docs_foreach(s, list_one, &c, &err);
        if (!r && o.json)
            printf("%s\n", json_object_to_json_string_ext(c.arr, JSON_C_TO_STRING_PRETTY |
                                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
        else if (!r && !c.n)
            printf("no documents yet: add some with 'sparsedoc ingest PATH'\n");
        json_object_put(c.arr);
    } else if (!strcmp(sub, "show")) {
        r = sd_store_doc_get(s, id, show_one, &c, &err);
        if (!r) {
            struct list_ctx sc = {.json = o.json, .arr = json_object_new_array()};
            r = sd_store_sections_foreach(s, id, section_one, &sc, &err);
            if (o.json) {
                json_object_object_add(c.arr, "outline", sc.arr);
                printf("%s\n", json_object_to_json_string_ext(c.arr, JSON_C_TO_STRING_PRETTY |
                                                                         JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(c.arr);
            } else
                json_object_put(sc.arr);
        }
    } else {
        r = sd_store_begin(s, &err);
        if (!r && !(r = sd_store_doc_remove(s, id, &err)))
            r = sd_store_commit(s, &err);
        if (r)
            sd_store_rollback(s);
        else if (!o.json)
            printf("removed document %lld\n", id);
        else
            printf("{ \"removed\": %lld }\n", id);
    }
    if (r)
        fprintf(stderr, "sparsedoc docs: %s\n", err.msg);
    rc = r ? SD_EXIT_FAIL : SD_EXIT_OK;
    sd_store_close(s);
out_args:
    free(o.args);
    return rc < 0 ? SD_EXIT_OK : rc;
}

// ---- search ----

struct search_ctx {
    int json;
    json_object *arr;
};

static int hit_one(void *user, const struct sd_search_hit *h)
{
    struct search_ctx *c = user;
    char ref[96];
    if (h->page_no > 0)
        snprintf(ref, sizeof ref, "p. %s", h->page_label ? h->page_label : "");
    else
        snprintf(ref, sizeof ref, "lines %d-%d", h->line_start, h->line_end);
    if (h->page_no > 0 && !h->page_label)
        snprintf(ref, sizeof ref, "p. %d", h->page_no);
    if (c->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "doc_id", json_object_new_int64(h->doc_id));
        json_object_object_add(j, "span_id", json_object_new_int64(h->span_id));
        json_object_object_add(j, "path", json_object_new_string(h->path));
        json_object_object_add(j, "title", h->title ? json_object_new_string(h->title) : NULL);
        json_object_object_add(j, "page", h->page_no ? json_object_new_int(h->page_no) : NULL);
        json_object_object_add(j, "page_label", h->page_label ? json_object_new_string(h->page_label) : NULL);
        json_object_object_add(j, "line_start", h->line_start ? json_object_new_int(h->line_start) : NULL);
        json_object_object_add(j, "line_end", h->line_end ? json_object_new_int(h->line_end) : NULL);
        json_object_object_add(j, "section", h->section ? json_object_new_string(h->section) : NULL);
        json_object_object_add(j, "snippet", json_object_new_string(h->snippet ? h->snippet : ""));
        json_object_object_add(j, "rank", json_object_new_double(h->rank));
        json_object_array_add(c->arr, j);
    } else {
        printf("%s (%s)%s%s\n", h->path, ref, h->section ? "  - " : "", h->section ? h->section : "");
        char *snip = strdup(h->snippet ? h->snippet : "");
        if (snip) {
            for (char *p = snip; *p; p++)
                if (*p == '\n')
                    *p = ' ';
            printf("    %s\n", snip);
            free(snip);
        }
    }
    return 0;
}

static const char search_help[] = "usage: sparsedoc search \"QUERY\" [--limit N] [--json] [--db FILE]\n\n"
                                  "Full-text search over ingested documents, with page or line references.\n";

int sd_cmd_search(int argc, char **argv)
{
    struct opts o;
    int rc = parse(argc, argv, &o, search_help);
    if (rc)
        goto out_args;
    if (o.n_args != 1) {
        rc = usage_err("search", "give exactly one QUERY (quote it)");
        goto out_args;
    }
    struct sd_store *s = NULL;
    if ((rc = open_store(&o, "search", &s)))
        goto out_args;
    struct search_ctx c = {.json = o.json, .arr = json_object_new_array()};
    struct sd_err err;
    size_t n = 0;
    enum sd_status r = sd_store_search(s, o.args[0], o.limit, hit_one, &c, &n, &err);
    if (r)
        fprintf(stderr, "sparsedoc search: %s\n", err.msg);
    else if (o.json)
        printf("%s\n", json_object_to_json_string_ext(c.arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    else if (!n)
        printf("no matches\n");
    json_object_put(c.arr);
    rc = r ? (r == SD_ERR_ARG ? SD_EXIT_USAGE : SD_EXIT_FAIL) : SD_EXIT_OK;
    sd_store_close(s);
out_args:
    free(o.args);
    return rc < 0 ? SD_EXIT_OK : rc;
}

// ---- contexts ----

static const char contexts_help[] =
    "usage: sparsedoc contexts [DOC_ID...] --tokenizer tokenizer.json [--max-tokens N] [--json] [--db FILE]\n\n"
    "Pack the spans of the given documents (default: all) into contexts of at most N tokens\n"
    "(default 65536, up to 131072) and print their sizes and span offsets.\n";

int sd_cmd_contexts(int argc, char **argv)
{
    struct opts o;
    int rc = parse(argc, argv, &o, contexts_help);
    if (rc)
        goto out_args;
    if (!o.tokenizer) {
        rc = usage_err("contexts", "--tokenizer tokenizer.json (or $SPARSEDOC_TOKENIZER) is required");
        goto out_args;
    }
    int64_t *ids = calloc((size_t)o.n_args + 1, sizeof *ids);
    for (int i = 0; ids && i < o.n_args; i++) {
        long x;
        if (sd_cli_long("contexts", "a document ID", o.args[i], 1, LONG_MAX, &x)) {
            free(ids);
            rc = SD_EXIT_USAGE;
            goto out_args;
        }
        ids[i] = x;
    }
    struct sd_store *s = NULL;
    struct sd_tokenizer *tok = NULL;
    struct sd_contexts *cx = NULL;
    if ((rc = open_store(&o, "contexts", &s)) || (rc = load_tokenizer(&o, "contexts", &tok)))
        goto out;
    struct sd_contexts_opts co = {
        .max_tokens = (size_t)o.max_tokens, .tokenize = sd_tokenizer_encode_cb, .tok_user = tok};
    struct sd_err err;
    if (sd_contexts_build(s, ids, (size_t)o.n_args, &co, &cx, &err)) {
        fprintf(stderr, "sparsedoc contexts: %s\n", err.msg);
        rc = SD_EXIT_FAIL;
        goto out;
    }
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < cx->n; i++) {
        const struct sd_context *c = &cx->items[i];
        if (o.json) {
            json_object *j = json_object_new_object(), *sp = json_object_new_array();
            json_object_object_add(j, "tokens", json_object_new_int64((int64_t)c->n_tokens));
            for (size_t k = 0; k < c->n_spans; k++) {
                json_object *e = json_object_new_object();
                json_object_object_add(e, "span_id", json_object_new_int64(c->spans[k].span_id));
                json_object_object_add(e, "doc_id", json_object_new_int64(c->spans[k].doc_id));
                json_object_object_add(e, "part", json_object_new_int(c->spans[k].part));
                json_object_object_add(e, "offset", json_object_new_int64(c->spans[k].tok_offset));
                json_object_object_add(e, "n_tokens", json_object_new_int64(c->spans[k].n_tokens));
                json_object_object_add(e, "page", json_object_new_int(c->spans[k].page_no));
                json_object_object_add(e, "line_start", json_object_new_int(c->spans[k].line_start));
                json_object_array_add(sp, e);
            }
            json_object_object_add(j, "spans", sp);
            json_object_array_add(arr, j);
        } else
            printf("context %zu: %zu tokens, %zu spans\n", i + 1, c->n_tokens, c->n_spans);
    }
    if (o.json)
        printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY));
    else
        printf("%zu context(s), %zu tokens in all\n", cx->n, cx->total_tokens);
    json_object_put(arr);
    rc = SD_EXIT_OK;
out:
    free(ids);
    sd_contexts_free(cx);
    sd_tokenizer_free(tok);
    sd_store_close(s);
out_args:
    free(o.args);
    return rc < 0 ? SD_EXIT_OK : rc;
}
