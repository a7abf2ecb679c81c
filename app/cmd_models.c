// cmd_models.c: `sparsedoc models pull|list|info|rm|use`: model management over data/hub.h (downloads
// from the Hugging Face hub) and engine/config.h + safetensors.h (architecture, parameters, dtypes,
// memory estimates). The default model is [model] dir in $XDG_CONFIG_HOME/sparsedoc/config.ini, the key
// the QA service reads (model_resolve.c); `use` rewrites that file atomically, keeping its other keys.
// Pulled models live in $SPARSEDOC_MODELS_DIR or $XDG_DATA_HOME/sparsedoc/models.
// Exit codes: 0 ok, 1 the work failed (message on stderr), 2 usage.
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
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
#include "config.h"
#include "gguf.h"
#include "hub.h"
#include "model_gguf.h"
#include "quant.h"
#include "safetensors.h"
#include "sd_clock.h"
#include "settings.h"

static const char *models_help =
    "usage: sparsedoc models pull OWNER/NAME[@REV] [--include GLOB]... [--dir DIR] [--parallel N] [--retries N]\n"
    "       sparsedoc models list\n"
    "       sparsedoc models info PATH|NAME\n"
    "       sparsedoc models rm NAME\n"
    "       sparsedoc models use NAME|PATH\n\n"
    "Download models from the Hugging Face hub and choose the default model.\n\n"
    "  pull   fetch a repository's model files (default: config.json, tokenizer.json, tokenizer_config.json,\n"
    "         *.safetensors, model.safetensors.index.json; --include replaces that set, e.g. '*.gguf')\n"
    "         into <models dir>/<owner>--<name>[@rev]. Parallel transfers, resume of partial files,\n"
    "         retries with backoff, sha256 verification; a file that fails verification is deleted.\n"
    "  list   pulled models (size, architecture) and the configured default (marked *)\n"
    "  info   architecture, parameters, dtypes, max context, DSA settings and the memory needed for\n"
    "         weights and KV + indexer cache at 64K and 128K tokens on the CPU and a GPU\n"
    "  rm     delete a pulled model (only inside the models dir)\n"
    "  use    make a model the default ([model] dir in $XDG_CONFIG_HOME/sparsedoc/config.ini)\n\n"
    "  --dir DIR          pull: the destination directory itself\n"
    "  --models-dir DIR   where pulled models live (default $SPARSEDOC_MODELS_DIR, else\n"
    "                     $XDG_DATA_HOME/sparsedoc/models)\n"
    "  --endpoint URL     hub URL (default $HF_ENDPOINT, else https://huggingface.co)\n"
    "  --parallel N       concurrent file transfers (default 4)\n"
    "  --retries N        retries per file after a transient error (default 6; 0: none)\n"
    "  --json             machine-readable output on stdout\n\n"
    "Environment: HF_TOKEN (Bearer token for private and gated repositories), HF_ENDPOINT (a mirror),\n"
    "http_proxy / https_proxy / no_proxy (as libcurl reads them).\n";

struct mopts {
    const char *dir, *models_dir, *endpoint;
    const char **includes;
    size_t n_includes;
    int json, parallel, retries;
    char **args;
    int n_args;
};

static int usage_err(const char *msg, const char *arg)
{
    fprintf(stderr, "sparsedoc models: %s%s%s (see 'sparsedoc models --help')\n", msg, arg ? " " : "", arg ? arg : "");
    return SD_EXIT_USAGE;
}

static void fmt_bytes(double b, char *buf, size_t n)
{
    if (b >= 1e12)
        snprintf(buf, n, "%.2f TB", b / 1e12);
    else if (b >= 1e9)
        snprintf(buf, n, "%.2f GB", b / 1e9);
    else if (b >= 1e6)
        snprintf(buf, n, "%.1f MB", b / 1e6);
    else if (b >= 1e3)
        snprintf(buf, n, "%.1f kB", b / 1e3);
    else
        snprintf(buf, n, "%.0f B", b);
}

static void fmt_count(double v, char *buf, size_t n)
{
    if (v >= 1e9)
        snprintf(buf, n, "%.2fB", v / 1e9);
    else if (v >= 1e6)
        snprintf(buf, n, "%.2fM", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, n, "%.1fK", v / 1e3);
    else
        snprintf(buf, n, "%.0f", v);
}

// ---------------------------------------------------------------------------------------------
// pull

static volatile int pull_cancel;
static void on_sigint(int sig)
{
    (void)sig;
    pull_cancel = 1;
}

struct bar {
    int tty;
    double t0;
    int drawn;
};

static void on_progress(void *user, const struct sd_hub_progress *p)
{
    struct bar *b = user;
    if (!b->tty)
        return;
    double el = sd_now_s() - b->t0, rate = el > 0.05 ? (double)p->bytes_net / el : 0;
    double frac = p->bytes_total > 0 ? (double)p->bytes_done / (double)p->bytes_total : 0;
    if (frac > 1)
        frac = 1;
    char bar[31], done[32], total[32], rs[32], eta[32] = "--:--";
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fmt_bytes((double)p->bytes_done, done, sizeof done);
    fmt_bytes((double)p->bytes_total, total, sizeof total);
    fmt_bytes(rate, rs, sizeof rs);
    if (rate > 0 && p->bytes_total > p->bytes_done) {
        long s = (long)((double)(p->bytes_total - p->bytes_done) / rate);
        if (s >= 3600)
            snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
        else
            snprintf(eta, sizeof eta, "%ld:%02ld", s / 60, s % 60);
    }
    fprintf(stderr, "\r[%s] %3.0f%% %s / %s  %s/s  ETA %s  %d/%d files%s\033[K", bar, 100 * frac, done, total, rs, eta,
            p->files_done, p->files_total, p->retrying ? "  (retrying)" : "");
    fflush(stderr);
    b->drawn = 1;
}

static const char *state_str(enum sd_hub_file_state s)
{
    switch (s) {
    case SD_HUB_CACHED:
        return "cached";
    case SD_HUB_DOWNLOADED:
        return "downloaded";
    case SD_HUB_FAILED:
        return "failed";
    default:
        return "pending";
    }
}

static int cmd_pull(const struct mopts *o)
{
    if (o->n_args != 1)
        return usage_err(o->n_args ? "pull takes one repository, got more:" : "pull needs OWNER/NAME[@REV]",
                         o->n_args > 1 ? o->args[1] : NULL);
    struct sd_err err = {0};
    char *repo = NULL, *rev = NULL, *dest = NULL;
    struct sd_hub_listing *l = NULL;
    size_t *sel = NULL;
    struct sd_hub_result *res = NULL;
    int rc = SD_EXIT_FAIL;
    if (sd_hub_parse_ref(o->args[0], &repo, &rev, &err)) {
        fprintf(stderr, "sparsedoc models pull: %s\n", err.msg);
        return SD_EXIT_USAGE;
    }
    if (o->dir) {
        dest = strdup(o->dir);
    } else if (sd_hub_dest_dir(o->models_dir, repo, rev, &dest, &err)) {
        fprintf(stderr, "sparsedoc models pull: %s\n", err.msg);
        goto out;
    }
    struct bar b = {.tty = isatty(2), .t0 = sd_now_s()};
    struct sd_hub_opts ho = {.endpoint = o->endpoint,
                             .parallel = o->parallel,
                             .max_retries = o->retries,
                             .on_progress = on_progress,
                             .user = &b,
                             .cancel = &pull_cancel};
    if (b.tty)
        fprintf(stderr, "resolving %s@%s ...\n", repo, rev);
    if (sd_hub_list(&ho, repo, rev, &l, &err)) {
        fprintf(stderr, "sparsedoc models pull: %s\n", err.msg);
        goto out;
    }
    const char *const *globs = o->n_includes ? o->includes : sd_hub_default_includes;
    size_t n_globs = o->n_includes;
    if (!n_globs)
        while (sd_hub_default_includes[n_globs])
            n_globs++;
    sel = calloc(l->n_files ? l->n_files : 1, sizeof *sel);
    size_t n_sel = 0;
    for (size_t i = 0; sel && i < l->n_files; i++)
        if (sd_hub_match(l->files[i].path, globs, n_globs))
            sel[n_sel++] = i;
    if (!sel || !(res = calloc(n_sel ? n_sel : 1, sizeof *res))) {
        fprintf(stderr, "sparsedoc models pull: out of memory\n");
        goto out;
    }
    if (n_sel == 0) {
        fprintf(stderr, "sparsedoc models pull: no file of %s@%s matches the include patterns (", repo, rev);
        for (size_t i = 0; i < n_globs; i++)
            fprintf(stderr, "%s%s", i ? ", " : "", globs[i]);
        fprintf(stderr, "); the repository has:");
        for (size_t i = 0; i < l->n_files && i < 30; i++)
            fprintf(stderr, " %s", l->files[i].path);
        fprintf(stderr, "%s\n", l->n_files > 30 ? " ..." : l->n_files ? "" : " no files");
        goto out;
    }
    double t0 = sd_now_s();
    // Ctrl-C / SIGTERM stop the transfers cleanly: the .part files stay for a later resume.
    struct sigaction sa = {.sa_handler = on_sigint}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    enum sd_status st = sd_hub_download(&ho, l, sel, n_sel, dest, res, &err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    double secs = sd_now_s() - t0;
    if (b.drawn)
        fprintf(stderr, "\n");
    int64_t net = 0, bytes = 0;
    int n_dl = 0, n_cached = 0, n_unverified = 0;
    for (size_t i = 0; i < n_sel; i++) {
        net += res[i].bytes_net;
        bytes += l->files[sel[i]].size > 0 ? l->files[sel[i]].size : 0;
        n_dl += res[i].state == SD_HUB_DOWNLOADED;
        n_cached += res[i].state == SD_HUB_CACHED;
        n_unverified += res[i].state != SD_HUB_FAILED && !res[i].verified;
    }
    if (o->json) {
        json_object *j = json_object_new_object(), *files = json_object_new_array();
        json_object_object_add(j, "ok", json_object_new_boolean(st == SD_OK));
        json_object_object_add(j, "repo", json_object_new_string(repo));
        json_object_object_add(j, "revision", json_object_new_string(rev));
        json_object_object_add(j, "commit", json_object_new_string(l->commit));
        json_object_object_add(j, "dir", json_object_new_string(dest));
        for (size_t i = 0; i < n_sel; i++) {
            const struct sd_hub_file *f = &l->files[sel[i]];
            json_object *e = json_object_new_object();
            json_object_object_add(e, "path", json_object_new_string(f->path));
            json_object_object_add(e, "size", json_object_new_int64(f->size));
            if (f->sha256[0])
                json_object_object_add(e, "sha256", json_object_new_string(f->sha256));
            json_object_object_add(e, "state", json_object_new_string(state_str(res[i].state)));
            json_object_object_add(e, "verified", json_object_new_boolean(res[i].verified));
            json_object_object_add(e, "resumed_from", json_object_new_int64(res[i].resumed_from));
            json_object_object_add(e, "bytes_downloaded", json_object_new_int64(res[i].bytes_net));
            json_object_object_add(e, "retries", json_object_new_int(res[i].retries));
            if (res[i].state == SD_HUB_FAILED)
                json_object_object_add(e, "error", json_object_new_string(res[i].msg));
            json_object_array_add(files, e);
        }
        json_object_object_add(j, "files", files);
        json_object_object_add(j, "bytes_total", json_object_new_int64(bytes));
        json_object_object_add(j, "bytes_downloaded", json_object_new_int64(net));
        json_object_object_add(j, "seconds", json_object_new_double(secs));
        if (st)
            json_object_object_add(j, "error", json_object_new_string(err.msg));
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
        json_object_put(j);
    } else if (st == SD_OK) {
        char a[32], c[32];
        fmt_bytes((double)bytes, a, sizeof a);
        fmt_bytes((double)net, c, sizeof c);
        printf("pulled %s@%s%s%.12s into %s: %zu files, %s (%d downloaded, %d already present; %s received in "
               "%.1f s)\n",
               repo, rev, l->commit[0] ? " commit " : "", l->commit, dest, n_sel, a, n_dl, n_cached, c, secs);
        if (n_unverified)
            printf("note: %d files had no checksum from the hub and were not verified\n", n_unverified);
    }
    if (st) {
        fprintf(stderr, "sparsedoc models pull: %s\n", err.msg);
        for (size_t i = 0; i < n_sel; i++)
            if (res[i].state == SD_HUB_FAILED && strcmp(res[i].msg, err.msg) && !strstr(err.msg, res[i].msg))
                fprintf(stderr, "  %s: %s\n", l->files[sel[i]].path, res[i].msg);
        goto out;
    }
    rc = SD_EXIT_OK;
out:
    free(repo);
    free(rev);
    free(dest);
    free(sel);
    free(res);
    sd_hub_listing_free(l);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Model directories: resolution, size, the default

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int has_file(const char *dir, const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int has_gguf(const char *dir)
{
    DIR *d = opendir(dir);
    int found = 0;
    struct dirent *e;
    while (d && !found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        found = n > 5 && !strcmp(e->d_name + n - 5, ".gguf");
    }
    if (d)
        closedir(d);
    return found;
}

static int is_model_dir(const char *dir)
{
    return is_dir(dir) && (has_file(dir, "config.json") || has_gguf(dir));
}

// NAME (a directory under the models dir, or OWNER/NAME as pulled) or PATH -> malloc'd real path.
static char *resolve_model(const char *models_dir, const char *arg, int allow_path, struct sd_err *err)
{
    char *root = NULL;
    if (sd_hub_models_dir(models_dir, &root, err))
        return NULL;
    char cand[PATH_MAX] = "";
    int ok = 0;
    if (allow_path && strchr(arg, '/') && is_dir(arg)) {
        snprintf(cand, sizeof cand, "%s", arg);
        ok = 1;
    }
    if (!ok && !strstr(arg, "..") && arg[0] != '/' && arg[0] != '.') {
        const char *slash = strchr(arg, '/');
        if (!slash)
            snprintf(cand, sizeof cand, "%s/%s", root, arg);
        else if (!strchr(slash + 1, '/'))
            snprintf(cand, sizeof cand, "%s/%.*s--%s", root, (int)(slash - arg), arg, slash + 1);
        ok = cand[0] && is_dir(cand);
    }
    if (!ok) {
        sd_err_set(err, SD_ERR_MISSING, "no model \"%s\"%s (see 'sparsedoc models list', models dir %s)", arg,
                   allow_path ? ": not a directory and not a model name" : "", root);
        free(root);
        return NULL;
    }
    free(root);
    char *real = realpath(cand, NULL);
    if (!real)
        sd_err_set(err, SD_ERR_IO, "%s: %s", cand, strerror(errno));
    return real;
}

static int64_t tree_bytes;
static int tree_parts;
static int tree_add(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag == FTW_F && S_ISREG(st->st_mode)) {
        tree_bytes += (int64_t)st->st_size;
        size_t n = strlen(path);
        tree_parts += n > 5 && !strcmp(path + n - 5, ".part");
    }
    return 0;
}

static int64_t dir_bytes(const char *dir, int *n_parts)
{
    tree_bytes = 0;
    tree_parts = 0;
    nftw(dir, tree_add, 16, FTW_PHYS);
    if (n_parts)
        *n_parts = tree_parts;
    return tree_bytes;
}

// The architecture named in dir/config.json (architectures[0], else model_type), or "gguf" / "?".
static void model_arch(const char *dir, char *out, size_t n)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_object *j = sd_hub_read_json(p, 1 << 20), *v;
    snprintf(out, n, "%s", has_gguf(dir) && !j ? "gguf" : "?");
    if (j && json_object_object_get_ex(j, "architectures", &v) && json_object_is_type(v, json_type_array) &&
        json_object_array_length(v) > 0)
        snprintf(out, n, "%s", json_object_get_string(json_object_array_get_idx(v, 0)));
    else if (j && json_object_object_get_ex(j, "model_type", &v))
        snprintf(out, n, "%s", json_object_get_string(v));
    json_object_put(j);
}

// The configured default model ([model] dir in the settings file, app/settings.h): raw value in raw
// (or ""), return its malloc'd real path (NULL when unset or missing). A name without '/' is a
// directory of the models dir, as the QA service reads it.
static char *default_model(const char *models_dir, char *raw, size_t raw_n)
{
    raw[0] = 0;
    struct sd_settings st = {0};
    struct sd_err err = {0};
    if (sd_settings_load(NULL, &st, &err) == SD_OK && st.model_dir)
        snprintf(raw, raw_n, "%s", st.model_dir);
    sd_settings_clear(&st);
    if (!raw[0])
        return NULL;
    if (strchr(raw, '/'))
        return realpath(raw, NULL);
    char *root = NULL, *r = NULL;
    if (sd_hub_models_dir(models_dir, &root, &err) == SD_OK) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", root, raw);
        r = realpath(p, NULL);
    }
    free(root);
    return r;
}

// Set (value != NULL) or remove the default model in the settings file, keeping every other key
// (sd_settings_save writes a temp file and renames it). *path_out: the file (malloc'd).
static int set_default_model(const char *value, char **path_out, struct sd_err *err)
{
    *path_out = NULL;
    if (sd_settings_path(path_out, err))
        return 1;
    struct sd_settings st = {0};
    if (sd_settings_load(*path_out, &st, err)) {
        sd_settings_clear(&st); // the defaults it set (strings) are ours to free
        return 1;
    }
    free(st.model_dir);
    st.model_dir = value ? strdup(value) : NULL;
    int r = sd_settings_save(*path_out, &st, err) != SD_OK;
    sd_settings_clear(&st);
    return r;
}

// ---------------------------------------------------------------------------------------------
// list

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_row(json_object *arr, const char *name, const char *path, int is_default)
{
    char arch[128], sz[32];
    int parts = 0;
    int64_t bytes = dir_bytes(path, &parts);
    model_arch(path, arch, sizeof arch);
    char mp[PATH_MAX];
    snprintf(mp, sizeof mp, "%s/.sparsedoc-pull.json", path);
    json_object *man = sd_hub_read_json(mp, 16 << 20), *v;
    const char *repo = man && json_object_object_get_ex(man, "repo", &v) ? json_object_get_string(v) : NULL;
    const char *commit = man && json_object_object_get_ex(man, "commit", &v) ? json_object_get_string(v) : NULL;
    if (arr) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "name", json_object_new_string(name));
        json_object_object_add(e, "path", json_object_new_string(path));
        json_object_object_add(e, "bytes", json_object_new_int64(bytes));
        json_object_object_add(e, "architecture", json_object_new_string(arch));
        json_object_object_add(e, "repo", repo ? json_object_new_string(repo) : NULL);
        json_object_object_add(e, "commit", commit ? json_object_new_string(commit) : NULL);
        json_object_object_add(e, "partial_files", json_object_new_int(parts));
        json_object_object_add(e, "default", json_object_new_boolean(is_default));
        json_object_array_add(arr, e);
    } else {
        fmt_bytes((double)bytes, sz, sizeof sz);
        printf("%c %-40s %10s  %-26s%s\n", is_default ? '*' : ' ', name, sz, arch,
               parts ? "  (incomplete: run pull again)" : "");
    }
    json_object_put(man);
}

static int cmd_list(const struct mopts *o)
{
    if (o->n_args)
        return usage_err("list takes no arguments, got", o->args[0]);
    struct sd_err err;
    char *root = NULL, raw[PATH_MAX];
    if (sd_hub_models_dir(o->models_dir, &root, &err)) {
        fprintf(stderr, "sparsedoc models list: %s\n", err.msg);
        return SD_EXIT_FAIL;
    }
    char *def = default_model(o->models_dir, raw, sizeof raw);
    char **names = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", root, e->d_name);
        if (!is_dir(p))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    if (d)
        closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    json_object *j = o->json ? json_object_new_object() : NULL, *arr = o->json ? json_object_new_array() : NULL;
    int def_listed = 0;
    if (!o->json)
        printf("models in %s:\n", root);
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        char *real = realpath(p, NULL);
        int isdef = def && real && !strcmp(def, real);
        def_listed |= isdef;
        list_row(arr, names[i], real ? real : p, isdef);
        free(real);
        free(names[i]);
    }
    free(names);
    if (!o->json && n == 0)
        printf("  (none: 'sparsedoc models pull OWNER/NAME')\n");
    if (def && !def_listed)
        list_row(arr, def, def, 1);
    if (o->json) {
        json_object_object_add(j, "models_dir", json_object_new_string(root));
        json_object_object_add(j, "default", raw[0] ? json_object_new_string(def ? def : raw) : NULL);
        json_object_object_add(j, "models", arr);
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
        json_object_put(j);
    } else if (raw[0] && !def) {
        printf("default: %s (configured, but it does not exist)\n", raw);
    } else if (!raw[0]) {
        printf("default: none configured ('sparsedoc models use NAME'); the built-in model is used\n");
    }
    free(def);
    free(root);
    return SD_EXIT_OK;
}

// ---------------------------------------------------------------------------------------------
// info: parameters, dtypes and memory estimates

struct mem_est {
    int64_t params, params_used; // all tensors but FP8 scales; those the engine loads (layers < n_layers)
    int64_t stored_bytes;        // bytes of the tensors the engine loads, as stored
    int64_t cpu_bytes;           // GGUF: what the CPU engine holds (mapped matrices + f32 copies)
    int64_t dtype_tensors[SD_DTYPE_COUNT], dtype_bytes[SD_DTYPE_COUNT];
    int64_t qtype_tensors[SD_Q_TYPE_LIMIT], qtype_bytes[SD_Q_TYPE_LIMIT]; // GGUF models: per ggml type
    int have_weights, gguf;
};

static int is_scale(const char *name)
{
    size_t n = strlen(name);
    return n > 10 && !strcmp(name + n - 10, "_scale_inv");
}

// -1 when the name has no "layers.N." part.
static int layer_of(const char *name)
{
    const char *p = strstr(name, "layers.");
    return p ? atoi(p + 7) : -1;
}

// KV + indexer bytes per token, all layers. gpu: bf16 latent / K,V and fp8 indexer keys with an f32
// scale per key; else the CPU backend's f32 caches (engine/session.c).
// KV (+ DSA indexer key) cache bytes per token as both backends hold it today: f32 (the MLA latent and
// rope key, or K and V; indexer keys f32).
static double kv_per_token(const struct sd_config *c)
{
    double L = c->n_layers;
    if (sd_config_is_deepseek(c)) {
        double per = (double)(c->kv_lora_rank + c->qk_rope_head_dim) * 4;
        if (c->arch == SD_ARCH_DEEPSEEK_V32)
            per += (double)c->index_head_dim * 4;
        return per * L;
    }
    return 2.0 * c->n_heads_kv * c->head_dim * 4 * L;
}

static int cmd_info(const struct mopts *o)
{
    if (o->n_args != 1)
        return usage_err("info needs one PATH or NAME", NULL);
    struct sd_err err = {0};
    const char *arg = o->args[0];
    size_t al = strlen(arg);
    struct stat fst;
    char *dir = al > 5 && !strcmp(arg + al - 5, ".gguf") && stat(arg, &fst) == 0 && S_ISREG(fst.st_mode)
                    ? realpath(arg, NULL) // a GGUF file given directly
                    : resolve_model(o->models_dir, arg, 1, &err);
    if (!dir) {
        if (!err.msg[0])
            sd_err_set(&err, SD_ERR_IO, "%s: %s", arg, strerror(errno));
        fprintf(stderr, "sparsedoc models info: %s\n", err.msg);
        return SD_EXIT_FAIL;
    }
    char cfgp[PATH_MAX], gpath[PATH_MAX];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    struct sd_config c;
    struct mem_est m = {0};
    struct sd_tensor_set *ts = NULL;
    struct sd_err werr = {0};
    int gg = sd_model_gguf_resolve(dir, gpath, sizeof gpath, &err);
    if (gg < 0 || (gg == 1 ? sd_model_gguf_config(gpath, &c, &err) : sd_config_load(cfgp, &c, &err))) {
        fprintf(stderr, "sparsedoc models info: %s\n", err.msg);
        free(dir);
        return SD_EXIT_FAIL;
    }
    if (gg == 1) { // GGUF: matrices used in place (mmap) on the CPU; 1-D tensors, kv_b and the router as f32
        struct sd_gguf *g = NULL;
        if (sd_gguf_open(gpath, &g, &werr) == SD_OK) {
            m.have_weights = m.gguf = 1;
            for (size_t i = 0; i < sd_gguf_tensor_count(g); i++) {
                const struct sd_gguf_tensor *t = sd_gguf_tensor_at(g, i);
                if (strcmp(t->name, "rope_freqs.weight")) { // a RoPE table, not a parameter
                    m.params += t->n_elems;
                    m.params_used += t->n_elems;
                }
                m.stored_bytes += (int64_t)t->n_bytes;
                int f32_copy = t->n_dims < 2 || strstr(t->name, "attn_kv_b") || strstr(t->name, "attn_k_b") ||
                               strstr(t->name, "attn_v_b") || strstr(t->name, "ffn_gate_inp");
                if (strcmp(t->name, "rope_freqs.weight")) // folded into the RoPE table at load
                    m.cpu_bytes += f32_copy ? 4 * (int64_t)t->n_elems : (int64_t)t->n_bytes;
                if ((int)t->type >= 0 && (int)t->type < SD_Q_TYPE_LIMIT) {
                    m.qtype_tensors[t->type]++;
                    m.qtype_bytes[t->type] += (int64_t)t->n_bytes;
                }
            }
            sd_gguf_free(g);
        }
    } else if (sd_tensor_set_open_dir(dir, &ts, &werr) == SD_OK) {
        m.have_weights = 1;
        for (size_t i = 0; i < sd_tensor_set_count(ts); i++) {
            const struct sd_tensor_info *t = sd_tensor_set_at(ts, i);
            int li = layer_of(t->name), used = li < c.n_layers;
            if (!is_scale(t->name)) {
                m.params += t->n_elems;
                if (used)
                    m.params_used += t->n_elems;
            }
            if (used)
                m.stored_bytes += (int64_t)t->n_bytes;
            m.dtype_tensors[t->dtype]++;
            m.dtype_bytes[t->dtype] += (int64_t)t->n_bytes;
        }
        sd_tensor_set_free(ts);
    }
    static const int ctxs[2] = {65536, 131072};
    // What this engine holds: the CPU converts safetensors weights to f32 and uses GGUF matrices as stored;
    // the CUDA backend (kernels/forward.cu) holds every weight and cache in f32.
    double cpu_w = m.gguf ? (double)m.cpu_bytes : 4.0 * (double)m.params_used, gpu_w = 4.0 * (double)m.params_used;
    double kv_cpu = kv_per_token(&c), kv_gpu = kv_cpu;
    int dsa = c.arch == SD_ARCH_DEEPSEEK_V32;
    if (o->json) {
        json_object *j = json_object_new_object(), *v;
        json_object_object_add(j, "path", json_object_new_string(dir));
        json_object_object_add(j, "architecture", json_object_new_string(c.arch_name));
        json_object_object_add(j, "n_layers", json_object_new_int(c.n_layers));
        json_object_object_add(j, "hidden_size", json_object_new_int(c.hidden_size));
        json_object_object_add(j, "vocab_size", json_object_new_int(c.vocab_size));
        json_object_object_add(j, "max_context", json_object_new_int64(c.max_position_embeddings));
        json_object_object_add(j, "parameters", m.have_weights ? json_object_new_int64(m.params) : NULL);
        json_object_object_add(j, "parameters_loaded", m.have_weights ? json_object_new_int64(m.params_used) : NULL);
        if (!m.have_weights)
            json_object_object_add(j, "weights_error", json_object_new_string(werr.msg));
        json_object *dt = json_object_new_object();
        for (int t = 0; t < SD_DTYPE_COUNT; t++)
            if (m.dtype_tensors[t]) {
                json_object *e = json_object_new_object();
                json_object_object_add(e, "tensors", json_object_new_int64(m.dtype_tensors[t]));
                json_object_object_add(e, "bytes", json_object_new_int64(m.dtype_bytes[t]));
                json_object_object_add(dt, sd_dtype_name((enum sd_dtype)t), e);
            }
        for (int t = 0; t < SD_Q_TYPE_LIMIT; t++)
            if (m.qtype_tensors[t]) {
                json_object *e = json_object_new_object();
                json_object_object_add(e, "tensors", json_object_new_int64(m.qtype_tensors[t]));
                json_object_object_add(e, "bytes", json_object_new_int64(m.qtype_bytes[t]));
                json_object_object_add(dt, sd_qtype_name((enum sd_qtype)t), e);
            }
        json_object_object_add(j, "dtypes", dt);
        json_object_object_add(j, "format", json_object_new_string(m.gguf ? "gguf" : "safetensors"));
        json_object *ds = NULL;
        if (dsa) {
            ds = json_object_new_object();
            json_object_object_add(ds, "index_topk", json_object_new_int(c.index_topk));
            json_object_object_add(ds, "index_n_heads", json_object_new_int(c.index_n_heads));
            json_object_object_add(ds, "index_head_dim", json_object_new_int(c.index_head_dim));
        }
        json_object_object_add(j, "dsa", ds);
        json_object *mem = json_object_new_object();
        for (int g = 0; g < 2; g++) {
            json_object *b = json_object_new_object();
            double w = g ? gpu_w : cpu_w, kv = g ? kv_gpu : kv_cpu;
            json_object_object_add(b, "weights_bytes", m.have_weights ? json_object_new_int64((int64_t)w) : NULL);
            json_object_object_add(b, "kv_bytes_per_token", json_object_new_int64((int64_t)kv));
            for (int k = 0; k < 2; k++) {
                char key[32];
                snprintf(key, sizeof key, "kv_bytes_%dk", ctxs[k] / 1024);
                json_object_object_add(b, key, json_object_new_int64((int64_t)(kv * ctxs[k])));
                snprintf(key, sizeof key, "total_bytes_%dk", ctxs[k] / 1024);
                json_object_object_add(b, key,
                                       m.have_weights ? json_object_new_int64((int64_t)(w + kv * ctxs[k])) : NULL);
            }
            json_object_object_add(b, "note",
                                   json_object_new_string(g ? "CUDA backend: f32 weights, f32 KV and indexer keys"
                                                            : m.gguf ? "GGUF matrices as stored (mapped), the rest "
                                                                       "f32; f32 KV and indexer keys"
                                                                     : "weights converted to f32 at load; f32 KV and "
                                                                       "indexer keys"));
            json_object_object_add(mem, g ? "gpu" : "cpu", b);
        }
        json_object_object_add(j, "memory", mem);
        (void)v;
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
        json_object_put(j);
        free(dir);
        return SD_EXIT_OK;
    }
    char a[32], b2[32];
    printf("model:         %s\n", dir);
    if (sd_config_is_deepseek(&c))
        printf("architecture:  %s (MLA: %d heads, kv_lora %d, rope %d; %d layers, hidden %d, %d routed experts "
               "top-%d + %d shared)\n",
               c.arch_name, c.n_heads, c.kv_lora_rank, c.qk_rope_head_dim, c.n_layers, c.hidden_size,
               c.n_routed_experts, c.n_experts_per_tok, c.n_shared_experts);
    else
        printf("architecture:  %s (GQA: %d heads / %d kv, head dim %d; %d layers, hidden %d)\n", c.arch_name, c.n_heads,
               c.n_heads_kv, c.head_dim, c.n_layers, c.hidden_size);
    if (m.have_weights) {
        fmt_count((double)m.params, a, sizeof a);
        printf("parameters:    %s (%lld)", a, (long long)m.params);
        if (m.params_used != m.params) {
            fmt_count((double)m.params_used, b2, sizeof b2);
            printf(", %s loaded (layers past num_hidden_layers, e.g. MTP, are skipped)", b2);
        }
        printf("\ndtypes:       ");
        for (int t = 0; t < SD_DTYPE_COUNT; t++)
            if (m.dtype_tensors[t]) {
                fmt_bytes((double)m.dtype_bytes[t], a, sizeof a);
                printf(" %s (%lld tensors, %s)", sd_dtype_name((enum sd_dtype)t), (long long)m.dtype_tensors[t], a);
            }
        for (int t = 0; t < SD_Q_TYPE_LIMIT; t++)
            if (m.qtype_tensors[t]) {
                fmt_bytes((double)m.qtype_bytes[t], a, sizeof a);
                printf(" %s (%lld tensors, %s)", sd_qtype_name((enum sd_qtype)t), (long long)m.qtype_tensors[t], a);
            }
        printf("%s\n", m.gguf ? "  [GGUF]" : "");
    } else {
        printf("parameters:    unknown (%s)\n", werr.msg);
    }
    printf("vocabulary:    %d tokens\nmax context:   %lld tokens\n", c.vocab_size,
           (long long)c.max_position_embeddings);
    if (dsa)
        printf("DSA:           index_topk %d, indexer %d heads x %d dims (sparse attention beyond %d tokens)\n",
               c.index_topk, c.index_n_heads, c.index_head_dim, c.index_topk);
    else
        printf("DSA:           none (dense attention)\n");
    printf("memory:                      weights   KV+index 64K  KV+index 128K     total 64K    total 128K\n");
    for (int g = 0; g < 2; g++) {
        double w = g ? gpu_w : cpu_w, kv = g ? kv_gpu : kv_cpu;
        char ws[32] = "?", k1[32], k2[32], t1[32] = "?", t2[32] = "?";
        if (m.have_weights) {
            fmt_bytes(w, ws, sizeof ws);
            fmt_bytes(w + kv * ctxs[0], t1, sizeof t1);
            fmt_bytes(w + kv * ctxs[1], t2, sizeof t2);
        }
        fmt_bytes(kv * ctxs[0], k1, sizeof k1);
        fmt_bytes(kv * ctxs[1], k2, sizeof k2);
        printf("  %-22s %12s %14s %14s %13s %13s\n", g ? "GPU (CUDA, f32)" : m.gguf ? "CPU (GGUF as stored)" : "CPU (f32)",
               ws, k1, k2, t1, t2);
    }
    printf("  CPU: %s, f32 KV%s. GPU (--backend cuda): f32 weights, f32 KV%s.\n",
           m.gguf ? "GGUF matrices used as stored (mapped), norms/router/kv_b as f32" : "weights converted to f32 at load",
           dsa ? " and indexer keys" : "", dsa ? " and indexer keys" : "");
    if (c.max_position_embeddings < ctxs[1])
        printf("  note: the model's max context is %lld tokens; longer contexts are not supported by it.\n",
               (long long)c.max_position_embeddings);
    free(dir);
    return SD_EXIT_OK;
}

// ---------------------------------------------------------------------------------------------
// rm, use

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = flag == FTW_DP ? rmdir(path) : unlink(path);
    if (r != 0)
        fprintf(stderr, "sparsedoc models rm: cannot remove %s: %s\n", path, strerror(errno));
    return r != 0;
}

static int cmd_rm(const struct mopts *o)
{
    if (o->n_args != 1)
        return usage_err("rm needs one NAME", NULL);
    struct sd_err err = {0};
    char *dir = resolve_model(o->models_dir, o->args[0], 0, &err), *root = NULL, *rroot = NULL;
    if (!dir) {
        fprintf(stderr, "sparsedoc models rm: %s\n", err.msg);
        return SD_EXIT_FAIL;
    }
    int rc = SD_EXIT_FAIL;
    if (sd_hub_models_dir(o->models_dir, &root, &err) || !(rroot = realpath(root, NULL))) {
        fprintf(stderr, "sparsedoc models rm: cannot resolve the models dir\n");
        goto out;
    }
    size_t rl = strlen(rroot);
    if (strncmp(dir, rroot, rl) || dir[rl] != '/' || strchr(dir + rl + 1, '/')) {
        fprintf(stderr, "sparsedoc models rm: %s is not directly inside the models dir %s; not removing it\n", dir,
                rroot);
        goto out;
    }
    char raw[PATH_MAX];
    char *def = default_model(o->models_dir, raw, sizeof raw);
    int was_default = def && !strcmp(def, dir);
    free(def);
    int64_t bytes = dir_bytes(dir, NULL);
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf(stderr, "sparsedoc models rm: %s was only partly removed\n", dir);
        goto out;
    }
    int cleared = 0;
    if (was_default) {
        char *cfg = NULL;
        cleared = set_default_model(NULL, &cfg, &err) == SD_OK;
        free(cfg);
        if (!cleared)
            fprintf(stderr, "sparsedoc models rm: removed the default model but could not clear the setting: %s\n",
                    err.msg);
    }
    char sz[32];
    fmt_bytes((double)bytes, sz, sizeof sz);
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "removed", json_object_new_string(dir));
        json_object_object_add(j, "bytes", json_object_new_int64(bytes));
        json_object_object_add(j, "default_cleared", json_object_new_boolean(cleared));
        printf("%s\n", json_object_to_json_string(j));
        json_object_put(j);
    } else
        printf("removed %s (%s)%s\n", dir, sz, cleared ? "; it was the default model, now none is configured" : "");
    rc = SD_EXIT_OK;
out:
    free(dir);
    free(root);
    free(rroot);
    return rc;
}

static int cmd_use(const struct mopts *o)
{
    if (o->n_args != 1)
        return usage_err("use needs one NAME or PATH", NULL);
    struct sd_err err = {0};
    char *dir = resolve_model(o->models_dir, o->args[0], 1, &err);
    if (!dir) {
        fprintf(stderr, "sparsedoc models use: %s\n", err.msg);
        return SD_EXIT_FAIL;
    }
    int rc = SD_EXIT_FAIL;
    if (!is_model_dir(dir)) {
        fprintf(stderr, "sparsedoc models use: %s has no config.json or .gguf file: not a model directory\n", dir);
        goto out;
    }
    char *path = NULL;
    if (set_default_model(dir, &path, &err)) {
        fprintf(stderr, "sparsedoc models use: %s\n", err.msg);
        free(path);
        goto out;
    }
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "model", json_object_new_string(dir));
        json_object_object_add(j, "settings", json_object_new_string(path));
        printf("%s\n", json_object_to_json_string(j));
        json_object_put(j);
    } else
        printf("default model: %s (saved in %s)\n", dir, path);
    free(path);
    rc = SD_EXIT_OK;
out:
    free(dir);
    return rc;
}

// ---------------------------------------------------------------------------------------------

int sd_cmd_models(int argc, char **argv)
{
    struct mopts o = {0};
    const char *sub = NULL;
    o.args = calloc((size_t)argc + 1, sizeof *o.args);
    o.includes = calloc((size_t)argc + 1, sizeof *o.includes);
    if (!o.args || !o.includes) {
        free(o.args);
        free(o.includes);
        fprintf(stderr, "sparsedoc models: out of memory\n");
        return SD_EXIT_FAIL;
    }
    int rc = -1;
    for (int i = 1; i < argc && rc < 0; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s", models_help);
            rc = SD_EXIT_OK;
        } else if (!strcmp(a, "--json")) {
            o.json = 1;
        } else if (!strcmp(a, "--include") || !strcmp(a, "--dir") || !strcmp(a, "--models-dir") ||
                   !strcmp(a, "--endpoint") || !strcmp(a, "--parallel") || !strcmp(a, "--retries")) {
            if (!v) {
                rc = usage_err(a, "needs a value");
                break;
            }
            i++;
            if (!strcmp(a, "--include"))
                o.includes[o.n_includes++] = v;
            else if (!strcmp(a, "--dir"))
                o.dir = v;
            else if (!strcmp(a, "--models-dir"))
                o.models_dir = v;
            else if (!strcmp(a, "--endpoint"))
                o.endpoint = v;
            else {
                long n;
                if (sd_cli_long("models", a, v, 0, 64, &n)) {
                    rc = SD_EXIT_USAGE;
                    break;
                }
                if (!strcmp(a, "--parallel"))
                    o.parallel = n ? (int)n : 1;
                else
                    o.retries = n ? (int)n : -1; // hub opts: <0 none, 0 default
            }
        } else if (a[0] == '-' && a[1]) {
            rc = usage_err("unknown option", a);
        } else if (!sub) {
            sub = a;
        } else {
            o.args[o.n_args++] = argv[i];
        }
    }
    if (rc < 0) {
        if (!sub)
            rc = usage_err("missing subcommand: pull, list, info, rm or use", NULL);
        else if (!strcmp(sub, "pull"))
            rc = cmd_pull(&o);
        else if (!strcmp(sub, "list"))
            rc = cmd_list(&o);
        else if (!strcmp(sub, "info"))
            rc = cmd_info(&o);
        else if (!strcmp(sub, "rm"))
            rc = cmd_rm(&o);
        else if (!strcmp(sub, "use"))
            rc = cmd_use(&o);
        else
            rc = usage_err("unknown subcommand", sub);
    }
    free(o.args);
    free(o.includes);
    return rc;
}
