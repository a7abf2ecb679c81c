// test_app_library.c: app/library.c and app/settings.c on a real SQLite store and real files in a temp
// dir: listing with folder roots and ingestion states (changed on disk, missing), source text of a line
// range, removal of a document and of a folder, KV cache statistics and clearing; settings round trip,
// deep copy, clamping, keys of other groups kept, and a malformed file neither read nor overwritten; cited text
// matched against a page's OCR word boxes.
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "library.h"
#include "qa.h"
#include "settings.h"

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                            \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

struct listed {
    int n;
    int64_t ids[16];
    char *paths[16], *roots[16];
    enum sd_library_state states[16];
    int64_t n_lines[16], n_tokens[16], n_chars[16];
};

static int collect(void *user, const struct sd_library_doc *d)
{
    struct listed *l = user;
    if (l->n < 16) {
        l->ids[l->n] = d->id;
        l->paths[l->n] = g_strdup(d->path);
        l->roots[l->n] = g_strdup(d->root);
        l->states[l->n] = d->state;
        l->n_lines[l->n] = d->n_lines;
        l->n_tokens[l->n] = d->n_tokens;
        l->n_chars[l->n] = d->n_chars;
    }
    l->n++;
    return 0;
}

static void listed_clear(struct listed *l)
{
    for (int i = 0; i < l->n && i < 16; i++) {
        g_free(l->paths[i]);
        g_free(l->roots[i]);
    }
    memset(l, 0, sizeof *l);
}

static int find(const struct listed *l, const char *path)
{
    for (int i = 0; i < l->n && i < 16; i++)
        if (!strcmp(l->paths[i], path))
            return i;
    return -1;
}

static void test_library(const char *tmp)
{
    struct sd_err err = {0};
    g_autofree char *db = g_build_filename(tmp, "store.db", NULL);
    g_autofree char *single = g_build_filename(tmp, "notes.txt", NULL);
    g_autofree char *proj = g_build_filename(tmp, "proj", NULL);
    g_autofree char *a = g_build_filename(proj, "a.c", NULL), *b = g_build_filename(proj, "b.c", NULL);
    g_mkdir_with_parents(proj, 0700);
    CHECK(g_file_set_contents(single, "first line\nsecond line\nthird line\n", -1, NULL), "write");
    CHECK(g_file_set_contents(a, "int a(void)\n{\n    return 1;\n}\n", -1, NULL), "write");
    CHECK(g_file_set_contents(b, "int b(void) { return 2; }\n", -1, NULL), "write");

    struct sd_library *lib = NULL;
    CHECK(sd_library_open(db, &lib, &err) == SD_OK, "open: %s", err.msg);
    char *paths[] = {single, proj};
    struct sd_ingest_stats st;
    CHECK(sd_library_ingest(lib, paths, 2, NULL, NULL, NULL, NULL, NULL, NULL, &st, &err) == SD_OK, "ingest: %s",
          err.msg);
    CHECK(st.added == 3 && st.failed == 0, "added %zu failed %zu", st.added, st.failed);

    struct listed l = {0};
    CHECK(sd_library_docs(lib, collect, &l, &err) == SD_OK, "docs: %s", err.msg);
    CHECK(l.n == 3, "%d documents listed", l.n);
    // Files added on their own come first (no root), then folders by root, then path.
    CHECK(!strcmp(l.paths[0], single) && l.roots[0] == NULL, "first is %s (root %s)", l.paths[0], l.roots[0]);
    CHECK(!strcmp(l.paths[1], a) && !strcmp(l.paths[2], b), "order: %s, %s", l.paths[1], l.paths[2]);
    CHECK(l.roots[1] && !strcmp(l.roots[1], proj) && l.roots[2] && !strcmp(l.roots[2], proj), "roots %s %s", l.roots[1],
          l.roots[2]);
    for (int i = 0; i < 3; i++)
        CHECK(l.states[i] == SD_LIBRARY_OK && l.n_tokens[i] <= 0 && l.n_chars[i] > 0, "doc %d: state %d tokens %lld", i,
              l.states[i], (long long)l.n_tokens[i]);
    CHECK(l.n_lines[0] == 3, "notes.txt has %lld lines", (long long)l.n_lines[0]);
    int64_t single_id = l.ids[0];
    listed_clear(&l);

    // Source text of a line range.
    char *text = NULL;
    CHECK(sd_library_source_text(lib, single_id, 0, 2, 2, &text, &err) == SD_OK, "source text: %s", err.msg);
    CHECK(strstr(text, "second line") != NULL, "line 2 text: %s", text);
    free(text);

    // Changed on disk, then missing.
    CHECK(g_file_set_contents(single, "first line\nsecond line changed\nthird line\nfourth\n", -1, NULL), "write");
    g_unlink(b);
    CHECK(sd_library_docs(lib, collect, &l, &err) == SD_OK, "docs: %s", err.msg);
    CHECK(l.states[find(&l, single)] == SD_LIBRARY_CHANGED, "state after edit %d", l.states[find(&l, single)]);
    CHECK(l.states[find(&l, b)] == SD_LIBRARY_MISSING, "state after delete %d", l.states[find(&l, b)]);
    CHECK(l.states[find(&l, a)] == SD_LIBRARY_OK, "untouched file state %d", l.states[find(&l, a)]);
    listed_clear(&l);

    // Re-scan (ingest again): the changed file is updated, the deleted one removed from its folder.
    CHECK(sd_library_ingest(lib, paths, 2, NULL, NULL, NULL, NULL, NULL, NULL, &st, &err) == SD_OK, "rescan: %s",
          err.msg);
    CHECK(st.updated == 1 && st.removed == 1, "rescan: updated %zu removed %zu", st.updated, st.removed);
    CHECK(sd_library_docs(lib, collect, &l, &err) == SD_OK, "docs: %s", err.msg);
    CHECK(l.n == 2 && l.states[find(&l, single)] == SD_LIBRARY_OK && l.n_lines[find(&l, single)] == 4,
          "after rescan: %d docs", l.n);
    single_id = l.ids[find(&l, single)]; // a changed file is replaced: new id
    listed_clear(&l);

    // A cancelled ingest stops after the current file.
    volatile int cancel = 1;
    g_autofree char *c = g_build_filename(proj, "c.c", NULL), *d = g_build_filename(proj, "d.c", NULL);
    CHECK(g_file_set_contents(c, "int c;\n", -1, NULL) && g_file_set_contents(d, "int d;\n", -1, NULL), "write");
    char *proj_only[] = {proj};
    CHECK(sd_library_ingest(lib, proj_only, 1, NULL, NULL, NULL, NULL, NULL, &cancel, &st, &err) == SD_OK,
          "cancelled ingest: %s", err.msg);
    CHECK(st.cancelled && st.added < 2, "cancel ignored: cancelled %d added %zu", st.cancelled, st.added);

    // Removal: one document, then the folder; a folder with nothing in it is an error.
    CHECK(sd_library_remove(lib, single_id, &err) == SD_OK, "remove: %s", err.msg);
    CHECK(sd_library_remove(lib, single_id, &err) == SD_ERR_MISSING, "second remove gave %d", err.status);
    size_t n_removed = 0;
    CHECK(sd_library_remove_root(lib, proj, &n_removed, &err) == SD_OK && n_removed >= 1, "remove root: %s", err.msg);
    CHECK(sd_library_remove_root(lib, proj, &n_removed, &err) == SD_ERR_MISSING, "empty root removal: %d", err.status);
    CHECK(sd_library_docs(lib, collect, &l, &err) == SD_OK && l.n == 0, "%d documents left", l.n);
    listed_clear(&l);
    sd_library_close(lib);

    // KV cache statistics and clearing on an empty cache directory.
    g_autofree char *kv = g_build_filename(tmp, "kv", NULL);
    struct sd_kvcache_stats cs;
    char *where = NULL;
    CHECK(sd_library_cache_stats(kv, 64u << 20, &cs, &where, &err) == SD_OK, "cache stats: %s", err.msg);
    CHECK(cs.entries == 0 && cs.bytes == 0 && cs.budget == 64u << 20 && where && !strcmp(where, kv),
          "empty cache: %lld entries, budget %llu, at %s", (long long)cs.entries, (unsigned long long)cs.budget, where);
    free(where);
    int n = -1;
    CHECK(sd_library_cache_clear(kv, &n, &err) == SD_OK && n == 0, "clear: %s (%d)", err.msg, n);
    printf("library: ok\n");
}

static void test_settings(const char *tmp)
{
    struct sd_err err = {0};
    g_autofree char *ini = g_build_filename(tmp, "cfg", "sparsedoc", "config.ini", NULL);
    struct sd_settings s;
    CHECK(sd_settings_load(ini, &s, &err) == SD_OK, "missing file: %s", err.msg);
    CHECK(!s.model_dir && !strcmp(s.backend, "cpu") && s.n_ctx == 0 && s.cache_budget == 0, "defaults");
    free(s.model_dir);
    s.model_dir = strdup("/models/x");
    free(s.backend);
    s.backend = strdup("cuda");
    s.gpu_weights_bf16 = s.gpu_weights_fp8 = 1;
    s.n_ctx = 131072;
    s.top_k = 512;
    s.n_threads = 3;
    s.cache_budget = 256ull << 20;
    s.color_scheme = SD_COLOR_DARK;
    CHECK(s.no_ocr == 0 && !s.ocr_lang && !strcmp(sd_settings_ocr_lang(&s), "eng"), "OCR defaults");
    s.no_ocr = 1;
    s.ocr_lang = strdup("eng+fra");
    CHECK(!s.indexer_fp8 && !s.fp8_act && !s.kv_fp8, "FP8 numerics default off");
    s.fp8_act = 1;
    s.kv_fp8 = 1;
    CHECK(sd_settings_save(ini, &s, &err) == SD_OK, "save: %s", err.msg);
    sd_settings_clear(&s);
    // Another group written by someone else survives a save.
    g_autofree char *body = NULL;
    CHECK(g_file_get_contents(ini, &body, NULL, NULL), "read back");
    g_autofree char *more = g_strconcat(body, "\n[other]\nkey=kept\n", NULL);
    CHECK(g_file_set_contents(ini, more, -1, NULL), "append");
    CHECK(sd_settings_load(ini, &s, &err) == SD_OK, "load: %s", err.msg);
    CHECK(!strcmp(s.model_dir, "/models/x") && !strcmp(s.backend, "cuda") && s.n_ctx == 131072 && s.top_k == 512 &&
              s.n_threads == 3 && s.cache_budget == 256ull << 20 && s.color_scheme == SD_COLOR_DARK,
          "round trip: %s %s %d %d %d %llu %d", s.model_dir, s.backend, s.n_ctx, s.top_k, s.n_threads,
          (unsigned long long)s.cache_budget, s.color_scheme);
    CHECK(s.gpu_weights_bf16 == 1 && s.gpu_weights_fp8 == 1, "gpu_weights round trip: %d %d", s.gpu_weights_bf16,
          s.gpu_weights_fp8);
    CHECK(s.no_ocr == 1 && s.ocr_lang && !strcmp(s.ocr_lang, "eng+fra"), "OCR round trip: %d %s", s.no_ocr,
          s.ocr_lang ? s.ocr_lang : "(none)");
    CHECK(s.fp8_act == 1 && s.indexer_fp8 == 0 && s.kv_fp8 == 1, "FP8 round trip: %d %d %d", s.fp8_act, s.indexer_fp8,
          s.kv_fp8);
    // A copy owns its strings: it outlives the original, with every value equal.
    struct sd_settings cp;
    CHECK(sd_settings_copy(&cp, &s) == SD_OK && cp.model_dir != s.model_dir && cp.backend != s.backend,
          "copy shares strings");
    struct sd_settings orig = s;
    sd_settings_clear(&s);
    CHECK(cp.ocr_lang && !strcmp(cp.ocr_lang, "eng+fra") && cp.no_ocr == 1, "copy: OCR");
    CHECK(cp.fp8_act == 1 && cp.kv_fp8 == 1 && cp.indexer_fp8 == 0, "copy: FP8 numerics");
    CHECK(!strcmp(cp.model_dir, "/models/x") && !strcmp(cp.backend, "cuda") && cp.n_ctx == orig.n_ctx &&
              cp.top_k == orig.top_k && cp.cache_budget == orig.cache_budget && cp.gpu_weights_fp8 == 1 &&
              cp.color_scheme == SD_COLOR_DARK,
          "copy: %s %s %d", cp.model_dir, cp.backend, cp.n_ctx);
    s = cp;
    struct sd_qa_opts qo = {0};
    sd_settings_to_qa_opts(&s, &qo);
    CHECK(qo.gpu_weights_bf16 == 1 && qo.gpu_weights_fp8 == 1, "cuda settings: qa gpu weights %d %d",
          qo.gpu_weights_bf16, qo.gpu_weights_fp8);
    CHECK(qo.no_ocr == 1 && qo.ocr_lang == s.ocr_lang, "qa opts: OCR");
    CHECK(qo.fp8_act == 1 && qo.indexer_fp8 == 0 && qo.kv_fp8 == 1, "qa opts: FP8 numerics %d %d %d", qo.fp8_act,
          qo.indexer_fp8, qo.kv_fp8);
    free(s.backend);
    s.backend = strdup("cpu"); // the CPU refuses GPU weight modes: they are not passed on
    sd_settings_to_qa_opts(&s, &qo);
    CHECK(qo.gpu_weights_bf16 == 0 && qo.gpu_weights_fp8 == 0, "cpu settings: qa gpu weights %d %d",
          qo.gpu_weights_bf16, qo.gpu_weights_fp8);
    free(s.backend);
    s.backend = strdup("cuda");
    s.top_k = 64;
    CHECK(sd_settings_save(ini, &s, &err) == SD_OK, "save: %s", err.msg);
    sd_settings_clear(&s);
    g_autofree char *after = NULL;
    CHECK(g_file_get_contents(ini, &after, NULL, NULL) && strstr(after, "key=kept") && strstr(after, "top_k=64"),
          "other group lost or value not saved:\n%s", after);
    // Out of range values are clamped; a small context goes up to the 64K minimum.
    CHECK(g_file_set_contents(
              ini,
              "[engine]\ncontext=1000\nthreads=-5\nfp8_act=maybe\nkv_fp8=maybe\nindexer_fp8=1\n[model]\nbackend=tpu\n"
              "gpu_weights=fp4\n"
              "[ingest]\nocr=maybe\nocr_languages=eng;rm\n",
              -1, NULL),
          "write");
    CHECK(sd_settings_load(ini, &s, &err) == SD_OK, "load: %s", err.msg);
    CHECK(s.n_ctx == 65536 && s.n_threads == 0 && !strcmp(s.backend, "cpu") && !s.gpu_weights_bf16 &&
              !s.gpu_weights_fp8 && !s.no_ocr && !s.ocr_lang && !s.fp8_act && !s.kv_fp8 && s.indexer_fp8 == 1,
          "clamped: %d %d %s %d %d %d %s", s.n_ctx, s.n_threads, s.backend, s.gpu_weights_bf16, s.gpu_weights_fp8,
          s.no_ocr, s.ocr_lang ? s.ocr_lang : "(none)");
    sd_settings_clear(&s);
    // A malformed file is reported, and a save does not overwrite it.
    static const char bad[] = "[model\ndir=/x\n";
    CHECK(g_file_set_contents(ini, bad, -1, NULL), "write");
    CHECK(sd_settings_load(ini, &s, &err) == SD_ERR_FORMAT && strstr(err.msg, ini), "malformed: %d %s", err.status,
          err.msg);
    CHECK(sd_settings_save(ini, &s, &err) == SD_ERR_FORMAT, "save over a malformed file: %d", err.status);
    sd_settings_clear(&s);
    g_autofree char *still = NULL;
    CHECK(g_file_get_contents(ini, &still, NULL, NULL) && !strcmp(still, bad), "malformed file was changed");
    // The default path follows XDG_CONFIG_HOME at each call.
    g_setenv("XDG_CONFIG_HOME", tmp, TRUE);
    g_unsetenv("SPARSEDOC_CONFIG");
    char *p = NULL;
    CHECK(sd_settings_path(&p, &err) == SD_OK, "path: %s", err.msg);
    g_autofree char *want = g_build_filename(tmp, "sparsedoc", "config.ini", NULL);
    CHECK(!strcmp(p, want), "path %s, want %s", p, want);
    free(p);
    printf("settings: ok\n");
}

// Matching cited text against a page's OCR words (sd_library_match_words): longest runs per line, case and
// punctuation ignored, each matched word's own box.
static void test_ocr_match(void)
{
    static const char *w[] = {"Harbor", "Station",  "The", "Brenlow", "vault", "opens", "with",
                              "code",   "KX-4821.", "The", "vault",   "is",    "old."};
    unsigned char blob[1024];
    size_t len = 0;
    for (int i = 0; i < 13; i++) {
        float box[4] = {10.0f * i, 2.0f * i, 10.0f * i + 8, 2.0f * i + 1};
        uint16_t wl = (uint16_t)strlen(w[i]);
        memcpy(blob + len, box, 16);
        memcpy(blob + len + 16, &wl, 2);
        memcpy(blob + len + 18, w[i], wl);
        len += 18 + wl;
    }
    double *r = NULL;
    long n = sd_library_match_words(blob, len, "the BRENLOW vault, opens!", &r);
    CHECK(n == 4 && r && r[0] == 20 && r[1] == 4 && r[2] == 28 && r[3] == 5 && r[4 * 3] == 50, "run: %ld boxes", n);
    free(r);
    n = sd_library_match_words(blob, len, "KX-4821", &r); // one word, punctuation ignored
    CHECK(n == 1 && r && r[0] == 80, "single word: %ld", n);
    free(r);
    n = sd_library_match_words(blob, len, "harbor station\nthe vault is old", &r); // two lines, two runs
    CHECK(n == 6 && r && r[0] == 0 && r[4 * 2] == 90, "two lines: %ld", n);
    free(r);
    n = sd_library_match_words(blob, len, "nothing of this vault", &r); // one common word is no match
    CHECK(n == 0 && !r, "no match: %ld", n);
    n = sd_library_match_words(blob, len - 5, "The Brenlow", &r); // a truncated blob is read up to its last record
    CHECK(n == 2, "truncated blob: %ld", n);
    free(r);
    printf("ocr match: ok\n");
}

int main(void)
{
    g_autofree char *tmp = g_dir_make_tmp("sd-applib-XXXXXX", NULL);
    CHECK(tmp != NULL, "no temp dir");
    test_library(tmp);
    test_settings(tmp);
    test_ocr_match();
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return 0;
}
