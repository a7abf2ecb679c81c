// model_resolve.c: which model directory the service loads, and whether it fits in memory.
// Order: an explicit directory, $SPARSEDOC_MODEL, [model] dir in $XDG_CONFIG_HOME/sparsedoc/config.ini
// (a path, or a name under $SPARSEDOC_MODELS_DIR or $XDG_DATA_HOME/sparsedoc/models/), then the shipped sparsedoc-mini
// (source tree, beside the executable in a build tree, or the installed datadir).
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub.h"
#include "qa.h"
#include "safetensors.h"
#include "settings.h"

#ifndef SD_SOURCE_MODELS_DIR
#define SD_SOURCE_MODELS_DIR ""
#endif
#ifndef SD_INSTALLED_MODELS_DIR
#define SD_INSTALLED_MODELS_DIR ""
#endif
#define SD_DEFAULT_MODEL "sparsedoc-mini"

static int is_model_dir(const char *dir)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%.4000s/config.json", dir);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static enum sd_status take(const char *dir, const char *how, char **out, struct sd_err *err)
{
    if (!is_model_dir(dir))
        return sd_err_set(err, SD_ERR_MISSING,
                          "model directory %s (%s) not found or has no config.json; pass --model DIR with a Hugging "
                          "Face model directory, or run 'sparsedoc models list'",
                          dir, how);
    char *r = realpath(dir, NULL);
    *out = r ? r : strdup(dir);
    return *out ? SD_OK : sd_err_set(err, SD_ERR_NOMEM, "out of memory");
}

// [model] dir from the settings file (app/settings.h): *name malloc'd, NULL when absent. A broken
// file is an error.
static enum sd_status config_model(char **name, char *cfg_path, size_t cap, struct sd_err *err)
{
    *name = NULL;
    char *path = NULL;
    enum sd_status r = sd_settings_path(&path, err);
    if (r)
        return r;
    snprintf(cfg_path, cap, "%s", path);
    struct sd_settings st = {0};
    r = sd_settings_load(path, &st, err);
    free(path);
    if (r == SD_OK && st.model_dir && *st.model_dir)
        *name = strdup(st.model_dir);
    sd_settings_clear(&st);
    return r;
}

enum sd_status sd_qa_resolve_model(const char *explicit_dir, char **out, struct sd_err *err)
{
    *out = NULL;
    if (explicit_dir && *explicit_dir)
        return take(explicit_dir, "--model", out, err);
    const char *env = getenv("SPARSEDOC_MODEL");
    if (env && *env)
        return take(env, "$SPARSEDOC_MODEL", out, err);
    char cfg[PATH_MAX], *name = NULL;
    enum sd_status r = config_model(&name, cfg, sizeof cfg, err);
    if (r)
        return r;
    if (name) {
        char dir[PATH_MAX], how[PATH_MAX + 32];
        snprintf(how, sizeof how, "[model] dir in %.4000s", cfg);
        if (strchr(name, '/'))
            snprintf(dir, sizeof dir, "%.4000s", name);
        else { // a name: a directory of the models dir ($SPARSEDOC_MODELS_DIR, else XDG data), as `models` has it
            char *root = NULL;
            if ((r = sd_hub_models_dir(NULL, &root, err))) {
                free(name);
                return r;
            }
            snprintf(dir, sizeof dir, "%.3000s/%.900s", root, name);
            free(root);
        }
        free(name);
        return take(dir, how, out, err);
    }
    // The shipped model: source tree, build tree beside the executable, installed datadir.
    char exe[PATH_MAX], cand[4][PATH_MAX];
    int nc = 0;
    if (*SD_SOURCE_MODELS_DIR)
        snprintf(cand[nc++], PATH_MAX, "%.3900s/%s", SD_SOURCE_MODELS_DIR, SD_DEFAULT_MODEL);
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (el > 0) {
        exe[el] = 0;
        char *sl = strrchr(exe, '/');
        if (sl) {
            *sl = 0; // <prefix>/bin -> <prefix>/share/sparsedoc/models
            snprintf(cand[nc++], PATH_MAX, "%.3900s/../share/sparsedoc/models/%s", exe, SD_DEFAULT_MODEL);
        }
    }
    if (*SD_INSTALLED_MODELS_DIR)
        snprintf(cand[nc++], PATH_MAX, "%.3900s/%s", SD_INSTALLED_MODELS_DIR, SD_DEFAULT_MODEL);
    for (int i = 0; i < nc; i++)
        if (is_model_dir(cand[i]))
            return take(cand[i], "shipped model", out, err);
    return sd_err_set(err, SD_ERR_MISSING,
                      "no model configured: pass --model DIR, set SPARSEDOC_MODEL, or run 'sparsedoc models use "
                      "NAME' (the shipped %s was not found at %s)",
                      SD_DEFAULT_MODEL, nc ? cand[0] : "its install location");
}

// MemAvailable from /proc/meminfo in bytes (0 when unknown).
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

enum sd_status sd_qa_check_memory(const char *model_dir, uint64_t kv_bytes, uint64_t *need_out, struct sd_err *err)
{
    struct sd_tensor_set *ts = NULL;
    enum sd_status r = sd_tensor_set_open_dir(model_dir, &ts, err);
    if (r)
        return r;
    uint64_t need = kv_bytes;
    for (size_t i = 0; i < sd_tensor_set_count(ts); i++) {
        const struct sd_tensor_info *t = sd_tensor_set_at(ts, i);
        // F32 is used in place (mmap'd, still resident); everything else is converted to f32 at load.
        need += t->dtype == SD_DTYPE_F32 ? t->n_bytes : (uint64_t)t->n_elems * 4;
    }
    sd_tensor_set_free(ts);
    if (need_out)
        *need_out = need;
    uint64_t avail = mem_available();
    if (avail && need > avail)
        return sd_err_set(err, SD_ERR_NOMEM,
                          "model %s needs %.1f GiB of memory (f32 weights + KV cache), this machine has %.1f GiB "
                          "available; use a smaller model or a smaller --ctx",
                          model_dir, need / 1073741824.0, avail / 1073741824.0);
    return SD_OK;
}
