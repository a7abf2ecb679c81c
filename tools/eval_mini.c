// eval_mini.c: held-out retrieval quality of sparsedoc-mini in our engine (a program, not a test).
// Reads the JSONL made by tools/train/make_eval.py (one document prefix + several questions per
// line). For each document and each attention mode (DSA sparse, dense on the same weights) it
// prefills the document once, then for each question appends the question, decodes greedily until
// <|end|> or --gen tokens, scores it, and truncates the session back to the document end.
// Scoring: value exact match (text before the last " [", trimmed) and marker exact match (text
// inside the last [...]), against the planted value and marker.
//   eval_mini --model DIR --eval FILE [--modes sparse,dense] [--buckets 4096,16384] [--docs N]
//             [--questions N] [--threads N] [--gen N] [--out results.jsonl] [--dry]
//             [--recall] [--recall-from question|all] [--kv-fp8]
// --recall (sparse mode, CPU): per layer and bucket, the indexer recall of the measured rows (share of
// the dense causal attention mass on the selected top-k, mean over heads; sd_session_recall_*), mean
// and min over rows, and the oracle's mean (mass of the top-k most probable keys: the best any k-set
// could do). --recall-from question (default): the question and answer rows after the
// document; all: every row, the document prefill included. Rows with causal length <= top-k (recall 1)
// are counted apart ("rows <= top-k") and left out of mean and min.
// --constrain-markers: decode as `sparsedoc ask` does with this model (app/markers.c): inside "[...", only tokens
// that keep the text a prefix of a marker the document offers. Without it, the raw greedy answer.
// --kv-fp8: the sessions keep the MLA latent cache in FP8 (sd_session_params.kv_fp8, DeepSeek's 656-byte rows);
// each JSONL record then says "kv_fp8": true.
//   eval_mini --model DIR --check-prompt TEXT_FILE --check-ids IDS_FILE   (tokenizer agreement)
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "markers.h"
#include "model.h"
#include "sampler.h"
#include "sd_clock.h"
#include "session.h"
#include "tokenizer.h"
#ifdef SD_CUDA_BACKEND
#include "sd_cuda.h"
#endif

#define MAX_BUCKETS 8
#define MAX_LAYERS 64

struct cell {
    int bucket;
    int n, value_ok, marker_ok, both_ok, docs;
    int n_early, value_early; // questions whose fact lies in the first half of the document (depth < 0.5)
    double prefill_s;
    long prefill_tokens;
    int rec_layers; // recall statistics (--recall), summed over documents
    struct sd_recall_stat rec[MAX_LAYERS];
};

static struct cell *cell_for(struct cell *cells, int *n_cells, int bucket)
{
    for (int i = 0; i < *n_cells; i++)
        if (cells[i].bucket == bucket)
            return &cells[i];
    if (*n_cells >= MAX_BUCKETS)
        return NULL;
    struct cell *c = &cells[(*n_cells)++];
    memset(c, 0, sizeof *c);
    c->bucket = bucket;
    return c;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\n' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t'))
        s[--n] = 0;
    return s;
}

// Split "VALUE [MARKER]" at the last " [" / "[" ... "]".
static void split_answer(const char *ans, char *val, size_t vcap, char *mk, size_t mcap)
{
    const char *lb = strrchr(ans, '[');
    const char *rb = lb ? strchr(lb, ']') : NULL;
    size_t vn = lb ? (size_t)(lb - ans) : strlen(ans);
    if (vn >= vcap)
        vn = vcap - 1;
    memcpy(val, ans, vn);
    val[vn] = 0;
    mk[0] = 0;
    if (lb) {
        size_t mn = rb ? (size_t)(rb - lb - 1) : strlen(lb + 1);
        if (mn >= mcap)
            mn = mcap - 1;
        memcpy(mk, lb + 1, mn);
        mk[mn] = 0;
    }
}

static int in_list(const char *list, int v)
{
    if (!list)
        return 1;
    const char *p = list;
    while (*p) {
        if (atoi(p) == v)
            return 1;
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    return 0;
}

// Add a session's per-layer recall counters to the bucket's.
static void recall_add(struct cell *c, const struct sd_session *s)
{
    struct sd_recall_stat st[MAX_LAYERS];
    int n = sd_session_recall_get(s, st, MAX_LAYERS);
    for (int il = 0; il < n; il++) {
        struct sd_recall_stat *a = &c->rec[il];
        if (il >= c->rec_layers)
            *a = (struct sd_recall_stat){.min = 1.0};
        a->rows += st[il].rows;
        a->sum += st[il].sum;
        a->best_sum += st[il].best_sum;
        a->rows_full += st[il].rows_full;
        if (st[il].rows && st[il].min < a->min)
            a->min = st[il].min;
    }
    if (n > c->rec_layers)
        c->rec_layers = n;
}

// Per-layer recall table (text) and one JSON line per bucket and layer (--out).
static void recall_report(const struct cell *cells, int n_cells, int topk, int recall_all, FILE *of)
{
    const char *from = recall_all ? "all" : "question";
    printf("\nIndexer recall (sparse, top-%d, rows: %s; mean and min over rows with causal length > top-k;\n"
           "oracle: mass of each head's %d most probable keys)\n"
           "| context | layer | rows | mean | min | oracle mean | rows <= top-k |\n|---|---|---|---|---|---|---|\n",
           topk, recall_all ? "every row" : "question + answer rows", topk);
    for (int i = 0; i < n_cells; i++)
        for (int il = 0; il < cells[i].rec_layers; il++) {
            const struct sd_recall_stat *a = &cells[i].rec[il];
            int kb = cells[i].bucket / 1024;
            if (a->rows)
                printf("| %dK | %d | %ld | %.4f | %.4f | %.4f | %ld |\n", kb, il, a->rows, a->sum / a->rows, a->min,
                       a->best_sum / a->rows, a->rows_full);
            else
                printf("| %dK | %d | 0 | - | - | - | %ld |\n", kb, il, a->rows_full);
            if (of) {
                struct json_object *r = json_object_new_object();
                json_object_object_add(r, "recall_layer", json_object_new_int(il));
                json_object_object_add(r, "bucket", json_object_new_int(cells[i].bucket));
                json_object_object_add(r, "mode", json_object_new_string("sparse"));
                json_object_object_add(r, "recall_from", json_object_new_string(from));
                json_object_object_add(r, "index_topk", json_object_new_int(topk));
                json_object_object_add(r, "rows", json_object_new_int64(a->rows));
                json_object_object_add(r, "rows_full", json_object_new_int64(a->rows_full));
                json_object_object_add(r, "mean", a->rows ? json_object_new_double(a->sum / a->rows) : NULL);
                json_object_object_add(r, "min", a->rows ? json_object_new_double(a->min) : NULL);
                json_object_object_add(r, "oracle_mean",
                                       a->rows ? json_object_new_double(a->best_sum / a->rows) : NULL);
                fprintf(of, "%s\n", json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
                json_object_put(r);
            }
        }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: eval_mini --model DIR --eval FILE [--modes sparse,dense] [--buckets 4096,16384]\n"
               "                 [--docs N] [--questions N] [--threads N] [--gen N] [--out FILE] [--backend cpu|cuda]\n"
               "                 [--recall] [--recall-from question|all] [--constrain-markers] [--kv-fp8] [--dry]\n");
}

int main(int argc, char **argv)
{
    const char *check_prompt = NULL, *check_ids = NULL;
    const char *model_dir = NULL, *eval_path = NULL, *modes = "sparse,dense", *buckets = NULL, *out_path = NULL;
    const char *backend_name = "cpu";
    int max_docs = 1000, max_q = 1000, threads = 0, n_gen = 32, dry = 0, recall = 0, recall_all = 0, constrain = 0,
        kv_fp8 = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--dry")) {
            dry = 1;
            continue;
        }
        if (!strcmp(a, "--recall")) {
            recall = 1;
            continue;
        }
        if (!strcmp(a, "--constrain-markers")) {
            constrain = 1;
            continue;
        }
        if (!strcmp(a, "--kv-fp8")) {
            kv_fp8 = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--eval"))
            eval_path = v;
        else if (!strcmp(a, "--modes"))
            modes = v;
        else if (!strcmp(a, "--buckets"))
            buckets = v;
        else if (!strcmp(a, "--docs"))
            max_docs = atoi(v);
        else if (!strcmp(a, "--questions"))
            max_q = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--gen"))
            n_gen = atoi(v);
        else if (!strcmp(a, "--check-prompt"))
            check_prompt = v;
        else if (!strcmp(a, "--check-ids"))
            check_ids = v;
        else if (!strcmp(a, "--out"))
            out_path = v;
        else if (!strcmp(a, "--recall-from") && (!strcmp(v, "question") || !strcmp(v, "all"))) {
            recall = 1;
            recall_all = !strcmp(v, "all");
        } else if (!strcmp(a, "--backend"))
            backend_name = v;
        else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!model_dir || (!eval_path && !check_prompt)) {
        usage(stderr);
        return 2;
    }
    const struct sd_backend *backend = NULL;
    if (strcmp(backend_name, "cpu")) {
#ifdef SD_CUDA_BACKEND
        if (!strcmp(backend_name, "cuda") && sd_cuda_device_count() > 0)
            backend = sd_cuda_backend();
#endif
        if (!backend) {
            fprintf(stderr, "eval_mini: backend '%s' is not available here (cpu; cuda needs a CUDA build and a GPU)\n",
                    backend_name);
            return 2;
        }
    }
    struct sd_err err = {0};
    struct sd_model *m = NULL;
    struct sd_tokenizer *tok = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    if (check_prompt)
        dry = 1;
    if (sd_tokenizer_load(path, &tok, &err) != SD_OK || (!dry && sd_model_load(model_dir, &m, &err) != SD_OK)) {
        fprintf(stderr, "eval_mini: %s\n", err.msg);
        return 1;
    }
    if (check_prompt) { // tokenizer agreement: encode a text file, compare with whitespace-separated ids
        FILE *pf = fopen(check_prompt, "rb"), *idf = check_ids ? fopen(check_ids, "r") : NULL;
        if (!pf || !idf) {
            fprintf(stderr, "eval_mini: cannot open --check-prompt/--check-ids files\n");
            return 1;
        }
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf - 1, pf);
        buf[n] = 0;
        fclose(pf);
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (sd_tokenizer_encode(tok, buf, n, 0, &ids, &n_ids, &err) != SD_OK) {
            fprintf(stderr, "eval_mini: %s\n", err.msg);
            return 1;
        }
        size_t k = 0, bad = 0;
        long v;
        while (fscanf(idf, "%ld", &v) == 1) {
            if (k >= n_ids || ids[k] != v) {
                if (!bad) {
                    printf("first mismatch at %zu: ours", k);
                    for (size_t j = k >= 6 ? k - 6 : 0; j < k + 4 && j < n_ids; j++) {
                        size_t l = 0;
                        const char *pc = sd_tokenizer_token_bytes(tok, ids[j], &l);
                        printf(" %d'%.*s'", ids[j], (int)l, pc ? pc : "");
                    }
                    printf("; reference id %ld\n", v);
                }
                bad++;
            }
            k++;
        }
        fclose(idf);
        printf("tokenizer check: %zu ids from our tokenizer, %zu reference ids, %zu mismatching positions\n", n_ids, k,
               bad + (n_ids > k ? n_ids - k : 0));
        free(ids);
        sd_tokenizer_free(tok);
        return bad || n_ids != k;
    }
    int32_t end_id = sd_tokenizer_token_id(tok, "<|end|>");
    int32_t eos = sd_tokenizer_eos(tok);
    int n_vocab = m ? m->cfg.vocab_size : sd_tokenizer_n_vocab(tok);
    int max_pos = m ? m->cfg.max_position_embeddings : 65536;
    FILE *ef = fopen(eval_path, "r");
    if (!ef) {
        perror(eval_path);
        return 1;
    }
    FILE *of = out_path ? fopen(out_path, "w") : NULL;
    struct cell cells[2][MAX_BUCKETS];
    int n_cells[2] = {0, 0};
    const char *mode_names[2] = {"sparse", "dense"};
    int use_mode[2] = {strstr(modes, "sparse") != NULL, strstr(modes, "dense") != NULL};
    int docs_per_bucket[64] = {0};
    int bucket_ids[64] = {0}, n_bucket_ids = 0;
    float *logits = malloc(sizeof(float) * (size_t)n_vocab);
    struct sd_sampler_params spp = sd_sampler_params_default();
    struct sd_sampler *smpl = NULL;
    if (sd_sampler_new(&spp, n_vocab, &smpl, &err) != SD_OK) {
        fprintf(stderr, "eval_mini: %s\n", err.msg);
        return 1;
    }
    size_t cap = 1 << 20, len = 0;
    char *line = malloc(cap);
    if (!line) {
        fprintf(stderr, "eval_mini: out of memory\n");
        return 1;
    }
    int ch;
    for (;;) {
        len = 0;
        while ((ch = fgetc(ef)) != EOF && ch != '\n') {
            if (len + 1 >= cap) {
                char *nl = realloc(line, cap * 2);
                if (!nl) {
                    fprintf(stderr, "eval_mini: out of memory reading a %zu-byte line\n", len);
                    free(line);
                    return 1;
                }
                line = nl;
                cap *= 2;
            }
            line[len++] = (char)ch;
        }
        line[len] = 0;
        if (len == 0 && ch == EOF)
            break;
        if (len == 0)
            continue;
        struct json_object *rec = json_tokener_parse(line);
        if (!rec) {
            fprintf(stderr, "eval_mini: bad JSON line\n");
            continue;
        }
        struct json_object *jb, *jdoc, *jqs, *jid;
        json_object_object_get_ex(rec, "bucket", &jb);
        json_object_object_get_ex(rec, "doc", &jdoc);
        json_object_object_get_ex(rec, "questions", &jqs);
        json_object_object_get_ex(rec, "id", &jid);
        int bucket = json_object_get_int(jb);
        if (!in_list(buckets, bucket)) {
            json_object_put(rec);
            continue;
        }
        int bi = -1;
        for (int i = 0; i < n_bucket_ids; i++)
            if (bucket_ids[i] == bucket)
                bi = i;
        if (bi < 0 && n_bucket_ids < 64) {
            bi = n_bucket_ids++;
            bucket_ids[bi] = bucket;
        }
        if (bi < 0 || docs_per_bucket[bi] >= max_docs) {
            json_object_put(rec);
            continue;
        }
        docs_per_bucket[bi]++;
        const char *doc = json_object_get_string(jdoc);
        int32_t *dids = NULL;
        size_t n_dids = 0;
        if (sd_tokenizer_encode(tok, doc, strlen(doc), 1, &dids, &n_dids, &err) != SD_OK) {
            fprintf(stderr, "eval_mini: %s\n", err.msg);
            return 1;
        }
        int nq = (int)json_object_array_length(jqs);
        if (nq > max_q)
            nq = max_q;
        struct sd_markers mks = {0};
        if (constrain && sd_markers_from_text(doc, &mks, &err) != SD_OK) {
            fprintf(stderr, "eval_mini: %s\n", err.msg);
            return 1;
        }
        printf("doc %s: %zu tokens (target %d), %d questions\n", json_object_get_string(jid), n_dids, bucket, nq);
        fflush(stdout);
        if (dry || (long)n_dids + 64 + n_gen > max_pos) {
            if (!dry)
                printf("  skipped: does not fit max_position_embeddings %d\n", max_pos);
            free(dids);
            sd_markers_free(&mks);
            json_object_put(rec);
            continue;
        }
        for (int mi = 0; mi < 2; mi++) {
            if (!use_mode[mi])
                continue;
            struct cell *c = cell_for(cells[mi], &n_cells[mi], bucket);
            struct sd_session_params sp = {.n_ctx = (int)n_dids + 128 + n_gen,
                                           .n_threads = threads,
                                           .max_batch = 256,
                                           .dsa_mode = mi == 0 ? SD_DSA_SPARSE : SD_DSA_DENSE,
                                           .kv_fp8 = kv_fp8,
                                           .backend = backend};
            if (sp.n_ctx > max_pos)
                sp.n_ctx = max_pos;
            struct sd_session *s = NULL;
            if (sd_session_new(m, &sp, &s, &err) != SD_OK) {
                fprintf(stderr, "eval_mini: %s\n", err.msg);
                return 1;
            }
            int measure = recall && mi == 0;
            if (measure && recall_all && sd_session_recall_start(s, 0, NULL, NULL, &err) != SD_OK) {
                fprintf(stderr, "eval_mini: --recall: %s\n", err.msg);
                return 1;
            }
            double t0 = sd_now_s();
            if (sd_session_eval(s, dids, (int)n_dids, NULL, 0, &err) != SD_OK) {
                fprintf(stderr, "eval_mini: %s\n", err.msg);
                return 1;
            }
            double tp = sd_now_s() - t0;
            c->prefill_s += tp;
            c->prefill_tokens += (long)n_dids;
            c->docs++;
            int base = sd_session_pos(s);
            printf("  %s prefill %.1f s (%.0f tok/s)%s\n", mode_names[mi], tp, n_dids / tp,
                   measure && recall_all ? " (recall measured)" : "");
            fflush(stdout);
            if (measure && !recall_all && sd_session_recall_start(s, base, NULL, NULL, &err) != SD_OK) {
                fprintf(stderr, "eval_mini: --recall: %s\n", err.msg);
                return 1;
            }
            for (int qi = 0; qi < nq; qi++) {
                struct json_object *jq = json_object_array_get_idx(jqs, qi), *jt, *jv, *jm, *jd;
                json_object_object_get_ex(jq, "q", &jt);
                json_object_object_get_ex(jq, "value", &jv);
                json_object_object_get_ex(jq, "marker", &jm);
                json_object_object_get_ex(jq, "depth", &jd);
                const char *qt = json_object_get_string(jt);
                int32_t *qids = NULL;
                size_t n_q = 0;
                if (sd_tokenizer_encode(tok, qt, strlen(qt), 0, &qids, &n_q, &err) != SD_OK ||
                    sd_session_eval(s, qids, (int)n_q, logits, 0, &err) != SD_OK) {
                    fprintf(stderr, "eval_mini: %s\n", err.msg);
                    return 1;
                }
                free(qids);
                int32_t gen[128];
                int ng = 0;
                struct sd_marker_state mst = {0};
                for (; ng < n_gen && ng < 128; ng++) {
                    if (mks.n)
                        sd_markers_mask(tok, &mks, &mst, logits, n_vocab);
                    int32_t nx = sd_sampler_sample(smpl, logits, gen, (size_t)ng);
                    if (nx == end_id || nx == eos || nx < 0)
                        break;
                    gen[ng] = nx;
                    size_t bl = 0;
                    const char *bytes = sd_tokenizer_token_bytes(tok, nx, &bl);
                    if (mks.n && bytes && !sd_tokenizer_is_special(tok, nx))
                        sd_markers_feed(&mks, &mst, bytes, bl);
                    if (sd_session_eval(s, &nx, 1, logits, 0, &err) != SD_OK) {
                        fprintf(stderr, "eval_mini: %s\n", err.msg);
                        return 1;
                    }
                }
                char *txt = NULL;
                if (sd_tokenizer_decode(tok, gen, (size_t)ng, 1, &txt, &err) != SD_OK) {
                    fprintf(stderr, "eval_mini: %s\n", err.msg);
                    return 1;
                }
                char val[512], mk[512];
                split_answer(txt, val, sizeof val, mk, sizeof mk);
                const char *want_v = json_object_get_string(jv), *want_m = json_object_get_string(jm);
                int vok = !strcmp(trim(val), want_v), mok = !strcmp(trim(mk), want_m);
                c->n++;
                c->value_ok += vok;
                c->marker_ok += mok;
                c->both_ok += vok && mok;
                if (json_object_get_double(jd) < 0.5) {
                    c->n_early++;
                    c->value_early += vok;
                }
                printf("    [%s] q%d depth %.2f: %-40s want %s [%s] -> %s%s\n", mode_names[mi], qi,
                       json_object_get_double(jd), txt, want_v, want_m, vok ? "V" : "-", mok ? "M" : "-");
                fflush(stdout);
                if (of) {
                    struct json_object *r = json_object_new_object();
                    json_object_object_add(r, "doc", json_object_new_string(json_object_get_string(jid)));
                    json_object_object_add(r, "bucket", json_object_new_int(bucket));
                    json_object_object_add(r, "doc_tokens", json_object_new_int((int)n_dids));
                    json_object_object_add(r, "mode", json_object_new_string(mode_names[mi]));
                    if (kv_fp8)
                        json_object_object_add(r, "kv_fp8", json_object_new_boolean(1));
                    json_object_object_add(r, "q", json_object_new_int(qi));
                    json_object_object_add(r, "depth", json_object_new_double(json_object_get_double(jd)));
                    json_object_object_add(r, "output", json_object_new_string(txt));
                    json_object_object_add(r, "value_ok", json_object_new_boolean(vok));
                    json_object_object_add(r, "marker_ok", json_object_new_boolean(mok));
                    fprintf(of, "%s\n", json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
                    fflush(of);
                    json_object_put(r);
                }
                free(txt);
                if (sd_session_truncate(s, base, &err) != SD_OK) {
                    fprintf(stderr, "eval_mini: %s\n", err.msg);
                    return 1;
                }
            }
            if (measure)
                recall_add(c, s);
            sd_session_free(s);
        }
        free(dids);
        sd_markers_free(&mks);
        json_object_put(rec);
    }
    printf("\n| context | mode | docs | questions | value EM | marker EM | both | prefill tok/s | value, depth < 0.5 "
           "| value, depth >= 0.5 |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (int mi = 0; mi < 2; mi++)
        for (int i = 0; i < n_cells[mi]; i++) {
            struct cell *c = &cells[mi][i];
            double d = c->n ? c->n : 1;
            int n_late = c->n - c->n_early, value_late = c->value_ok - c->value_early;
            printf("| %dK | %s | %d | %d | %.1f%% (%d) | %.1f%% (%d) | %.1f%% (%d) | %.0f | %d/%d | %d/%d |\n",
                   c->bucket / 1024, mode_names[mi], c->docs, c->n, 100.0 * c->value_ok / d, c->value_ok,
                   100.0 * c->marker_ok / d, c->marker_ok, 100.0 * c->both_ok / d, c->both_ok,
                   c->prefill_s > 0 ? c->prefill_tokens / c->prefill_s : 0.0, c->value_early, c->n_early, value_late,
                   n_late);
        }
    if (recall && use_mode[0] && m)
        recall_report(cells[0], n_cells[0], m->cfg.index_topk, recall_all, of);
    if (of)
        fclose(of);
    fclose(ef);
    free(line);
    free(logits);
    sd_sampler_free(smpl);
    sd_tokenizer_free(tok);
    sd_model_free(m);
    return 0;
}
