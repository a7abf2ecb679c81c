// settings.c: load and save struct sd_settings as a GKeyFile (see settings.h).
#include "settings.h"

#include "ocr.h"
#include "session.h"

#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "qa.h"

enum sd_status sd_settings_path(char **out, struct sd_err *err)
{
    *out = NULL;
    // Read the environment at each call (like data/paths.c), not GLib's cached g_get_user_config_dir().
    const char *env = getenv("SPARSEDOC_CONFIG"), *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    char *p;
    if (env && *env)
        p = g_strdup(env);
    else if (xdg && xdg[0] == '/')
        p = g_build_filename(xdg, "sparsedoc", "config.ini", NULL);
    else if (home && *home)
        p = g_build_filename(home, ".config", "sparsedoc", "config.ini", NULL);
    else
        return sd_err_set(err, SD_ERR_MISSING, "neither XDG_CONFIG_HOME nor HOME is set; set SPARSEDOC_CONFIG");
    *out = strdup(p);
    g_free(p);
    if (!*out)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

static void defaults(struct sd_settings *s)
{
    memset(s, 0, sizeof *s);
    s->backend = strdup("cpu");
}

void sd_settings_clear(struct sd_settings *s)
{
    free(s->model_dir);
    free(s->backend);
    free(s->ocr_lang);
    memset(s, 0, sizeof *s);
}

enum sd_status sd_settings_copy(struct sd_settings *dst, const struct sd_settings *src)
{
    *dst = *src;
    dst->model_dir = src->model_dir ? strdup(src->model_dir) : NULL;
    dst->backend = src->backend ? strdup(src->backend) : NULL;
    dst->ocr_lang = src->ocr_lang ? strdup(src->ocr_lang) : NULL;
    if ((src->model_dir && !dst->model_dir) || (src->backend && !dst->backend) || (src->ocr_lang && !dst->ocr_lang)) {
        sd_settings_clear(dst);
        return SD_ERR_NOMEM;
    }
    return SD_OK;
}

static int get_int(GKeyFile *kf, const char *group, const char *key, int lo, int hi, int def)
{
    GError *e = NULL;
    gint64 v = g_key_file_get_int64(kf, group, key, &e);
    if (e) {
        g_error_free(e);
        return def;
    }
    return v < lo ? lo : v > hi ? hi : (int)v;
}

static int get_bool(GKeyFile *kf, const char *group, const char *key)
{
    GError *e = NULL;
    gboolean v = g_key_file_get_boolean(kf, group, key, &e);
    if (e) { // missing or not a boolean: off
        g_error_free(e);
        return 0;
    }
    return v != FALSE;
}

static char *get_str(GKeyFile *kf, const char *group, const char *key)
{
    char *v = g_key_file_get_string(kf, group, key, NULL);
    if (!v)
        return NULL;
    char *r = *v ? strdup(v) : NULL;
    g_free(v);
    return r;
}

enum sd_status sd_settings_load(const char *path, struct sd_settings *s, struct sd_err *err)
{
    enum sd_status st = SD_OK;
    char *own = NULL;
    GKeyFile *kf = g_key_file_new();
    GError *e = NULL;
    defaults(s);
    if (!path) {
        if ((st = sd_settings_path(&own, err)))
            goto out;
        path = own;
    }
    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_KEEP_COMMENTS, &e)) {
        if (!g_error_matches(e, G_FILE_ERROR, G_FILE_ERROR_NOENT))
            st = sd_err_set(err, SD_ERR_FORMAT, "cannot read settings %s: %s (fix or delete the file)", path,
                            e->message);
        goto out;
    }
    s->model_dir = get_str(kf, "model", "dir");
    char *b = get_str(kf, "model", "backend");
    if (b && (!strcmp(b, "cpu") || !strcmp(b, "cuda"))) {
        free(s->backend);
        s->backend = b;
    } else {
        free(b);
    }
    char *gw = get_str(kf, "model", "gpu_weights"); // an unknown name keeps f32
    sd_gpu_weights_parse(gw, &s->gpu_weights_bf16, &s->gpu_weights_fp8);
    free(gw);
    s->indexer_fp8 = get_bool(kf, "engine", "indexer_fp8");
    s->fp8_act = get_bool(kf, "engine", "fp8_act");
    s->kv_fp8 = get_bool(kf, "engine", "kv_fp8");
    s->n_ctx = get_int(kf, "engine", "context", 0, 131072, 0);
    if (s->n_ctx && s->n_ctx < 65536)
        s->n_ctx = 65536;
    s->top_k = get_int(kf, "engine", "top_k", 0, 1 << 20, 0);
    s->n_threads = get_int(kf, "engine", "threads", 0, 1024, 0);
    s->cache_budget = (uint64_t)get_int(kf, "cache", "budget_mib", 0, 1 << 24, 0) << 20;
    char *ocr = get_str(kf, "ingest", "ocr");
    s->no_ocr = ocr && !strcmp(ocr, "off");
    free(ocr);
    s->ocr_lang = get_str(kf, "ingest", "ocr_languages");
    if (s->ocr_lang && !sd_ocr_lang_ok(s->ocr_lang)) { // not a Tesseract language list: the default
        free(s->ocr_lang);
        s->ocr_lang = NULL;
    }
    char *cs = get_str(kf, "ui", "color_scheme");
    s->color_scheme = !cs                    ? SD_COLOR_SYSTEM
                      : !strcmp(cs, "dark")  ? SD_COLOR_DARK
                      : !strcmp(cs, "light") ? SD_COLOR_LIGHT
                                             : SD_COLOR_SYSTEM;
    free(cs);
out:
    if (e)
        g_error_free(e);
    g_key_file_free(kf);
    free(own);
    return st;
}

enum sd_status sd_settings_save(const char *path, const struct sd_settings *s, struct sd_err *err)
{
    enum sd_status st = SD_OK;
    char *own = NULL, *dir = NULL;
    GKeyFile *kf = g_key_file_new();
    GError *e = NULL;
    if (!path) {
        if ((st = sd_settings_path(&own, err)))
            goto out;
        path = own;
    }
    // Keep what else is in the file (other groups, comments); a malformed file is not overwritten.
    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_KEEP_COMMENTS, &e)) {
        if (!g_error_matches(e, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
            st = sd_err_set(err, SD_ERR_FORMAT, "not overwriting settings %s: %s (fix or delete it)", path, e->message);
            goto out;
        }
        g_clear_error(&e);
    }
    g_key_file_set_string(kf, "model", "dir", s->model_dir ? s->model_dir : "");
    g_key_file_set_string(kf, "model", "backend", s->backend ? s->backend : "cpu");
    g_key_file_set_string(kf, "model", "gpu_weights", sd_gpu_weights_name(s->gpu_weights_bf16, s->gpu_weights_fp8));
    g_key_file_set_int64(kf, "engine", "context", s->n_ctx);
    g_key_file_set_boolean(kf, "engine", "indexer_fp8", s->indexer_fp8 != 0);
    g_key_file_set_boolean(kf, "engine", "fp8_act", s->fp8_act != 0);
    g_key_file_set_boolean(kf, "engine", "kv_fp8", s->kv_fp8 != 0);
    g_key_file_set_int64(kf, "engine", "top_k", s->top_k);
    g_key_file_set_int64(kf, "engine", "threads", s->n_threads);
    g_key_file_set_int64(kf, "cache", "budget_mib", (gint64)(s->cache_budget >> 20));
    g_key_file_set_string(kf, "ingest", "ocr", s->no_ocr ? "off" : "auto");
    g_key_file_set_string(kf, "ingest", "ocr_languages", s->ocr_lang ? s->ocr_lang : SD_OCR_DEFAULT_LANG);
    g_key_file_set_string(kf, "ui", "color_scheme",
                          s->color_scheme == SD_COLOR_DARK    ? "dark"
                          : s->color_scheme == SD_COLOR_LIGHT ? "light"
                                                              : "system");
    dir = g_path_get_dirname(path);
    if (g_mkdir_with_parents(dir, 0700) != 0) {
        st = sd_err_set(err, SD_ERR_IO, "cannot create %s (check its permissions)", dir);
        goto out;
    }
    if (!g_key_file_save_to_file(kf, path, &e)) // g_file_set_contents: temp file + rename
        st = sd_err_set(err, SD_ERR_IO, "cannot write settings %s: %s", path, e->message);
out:
    if (e)
        g_error_free(e);
    g_key_file_free(kf);
    g_free(dir);
    free(own);
    return st;
}

int sd_settings_ocr_lang_ok(const char *v)
{
    return v && sd_ocr_lang_ok(v);
}

const char *sd_settings_ocr_lang(const struct sd_settings *s)
{
    return s->ocr_lang && *s->ocr_lang ? s->ocr_lang : SD_OCR_DEFAULT_LANG;
}

void sd_settings_to_qa_opts(const struct sd_settings *s, struct sd_qa_opts *o)
{
    o->model_dir = s->model_dir && *s->model_dir ? s->model_dir : NULL;
    o->backend = s->backend;
    int cuda = s->backend && !strcmp(s->backend, "cuda"); // a CPU session refuses GPU weight modes
    o->gpu_weights_bf16 = cuda && s->gpu_weights_bf16;
    o->gpu_weights_fp8 = cuda && s->gpu_weights_fp8;
    o->indexer_fp8 = s->indexer_fp8;
    o->fp8_act = s->fp8_act;
    o->kv_fp8 = s->kv_fp8;
    o->n_ctx = s->n_ctx;
    o->index_topk = s->top_k;
    o->n_threads = s->n_threads;
    o->cache_budget = s->cache_budget;
    o->no_ocr = s->no_ocr;
    o->ocr_lang = s->ocr_lang;
}
