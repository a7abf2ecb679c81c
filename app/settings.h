// settings.h: the user's preferences shared by the CLI and the GTK app, persisted as a GKeyFile in
// $XDG_CONFIG_HOME/sparsedoc/config.ini (~/.config/sparsedoc/config.ini): model directory, backend and its
// device weight mode, context size, DSA top-k, threads, KV cache budget, and the UI's colour scheme. Missing keys keep
// their defaults; a malformed file is reported and left untouched (nothing is lost on save errors).
#ifndef SD_APP_SETTINGS_H
#define SD_APP_SETTINGS_H

#include <stdint.h>

#include "sd_status.h"

struct sd_qa_opts;

enum sd_color_scheme { SD_COLOR_SYSTEM = 0, SD_COLOR_LIGHT, SD_COLOR_DARK };

struct sd_settings {
    char *model_dir;       // NULL or "": the default model (see sd_qa_opts.model_dir)
    char *backend;         // "cpu" or "cuda"
    int gpu_weights_bf16;  // with backend cuda: the device weight mode ([model] gpu_weights = f32, bf16, fp8 or
    int gpu_weights_fp8;   // fp8-f32, sd_gpu_weights_parse); ignored with backend cpu
    int indexer_fp8;       // [engine] indexer_fp8 = true: DeepSeek's FP8 indexer numerics (DSA models)
    int fp8_act;           // [engine] fp8_act = true: DeepSeek's FP8 GEMM numerics (models with FP8 matrices)
    int kv_fp8;            // [engine] kv_fp8 = true: DeepSeek's FP8 MLA latent cache (MLA models)
    int n_ctx;             // 0: default (64K); else 65536..131072
    int top_k;             // 0: the model's
    int n_threads;         // 0: all cores
    uint64_t cache_budget; // bytes; 0: the cache's default
    int no_ocr;            // [ingest] ocr = off: scanned PDF pages are only flagged (default auto: read by OCR)
    char *ocr_lang;        // [ingest] ocr_languages, Tesseract codes ("eng+fra"); NULL: eng
    enum sd_color_scheme color_scheme;
};

// The config file path (malloc'd, caller frees): $SPARSEDOC_CONFIG, else $XDG_CONFIG_HOME/sparsedoc/
// config.ini, else ~/.config/sparsedoc/config.ini. Does not create anything.
enum sd_status sd_settings_path(char **out, struct sd_err *err);

// Fill s with defaults, then with the values in path (NULL: sd_settings_path). A missing file is not
// an error. Free the strings with sd_settings_clear().
enum sd_status sd_settings_load(const char *path, struct sd_settings *s, struct sd_err *err);
// Write s to path (NULL: sd_settings_path), creating the directory; keys of other groups are kept.
// The file is written atomically (temp file + rename).
enum sd_status sd_settings_save(const char *path, const struct sd_settings *s, struct sd_err *err);
void sd_settings_clear(struct sd_settings *s);
// Make dst a copy of src with its own strings (free them with sd_settings_clear); dst is overwritten, not
// cleared first. Returns SD_ERR_NOMEM (dst then holds no strings) or SD_OK.
enum sd_status sd_settings_copy(struct sd_settings *dst, const struct sd_settings *src);
// Is v a valid [ingest] ocr_languages value (Tesseract codes joined by '+', e.g. eng+fra)?
int sd_settings_ocr_lang_ok(const char *v);
// The OCR languages in effect for s ("eng" when unset).
const char *sd_settings_ocr_lang(const struct sd_settings *s);
// Copy the engine-related values into qa opts (pointers borrowed from s).
void sd_settings_to_qa_opts(const struct sd_settings *s, struct sd_qa_opts *o);

#endif
