// test_recall.c: the engine's indexer-recall statistics (sd_session_recall_*) on the tiny DSA fixture
// model (tests/fixtures/dsv32, 3 layers, index_topk 16) with fresh random token ids (seed printed):
// (a) top-k >= sequence length: every measured row is a full row (recall 1), none is computed;
// (b) every computed row's recall (and oracle recall: mass of the k most probable keys) equals a
//     float64 recomputation of the dense causal softmax over the row's keys from the absorbed queries
//     and latent cache handed to the observer, the per-layer counters equal the sums of those rows,
//     recall <= oracle, and the selection is k distinct causal tokens;
// (c) top-k 4 on 64 tokens: recall in (0, 1], below 1 in some layer, and far below what top-k 63 gives;
// plus: from_pos limits the rows, chunked prefill and decode count each row once with the same selections
// as one prefill (up to rare FP8 score ties, see there), and
// measuring does not change the logits.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "session.h"
#include "test_util.h"

#define MAX_L 8
#define MAX_ROWS 4096

struct observed {
    int n;
    int layer[MAX_ROWS], pos[MAX_ROWS];
    double recall[MAX_ROWS], ref[MAX_ROWS], best[MAX_ROWS], ref_best[MAX_ROWS];
    uint64_t sel[MAX_ROWS][2]; // the selected tokens as a bit set (positions < 128)
    int bad_sel;
};

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

// Float64 recall of one row from the observer's data: dense softmax per head over keys 0..pos; *best:
// the mass of each head's n_sel most probable keys (sorted), mean over heads.
static double ref_recall(const struct sd_recall_row *r, int *bad_sel, double *best)
{
    int n = r->pos + 1;
    double *p = malloc(sizeof(double) * (size_t)n);
    char *chosen = calloc((size_t)n, 1);
    int n_chosen = 0;
    for (int i = 0; i < r->n_sel; i++) {
        int u = r->sel[i];
        if (u < 0 || u >= n || chosen[u])
            (*bad_sel)++;
        else {
            chosen[u] = 1;
            n_chosen++;
        }
    }
    if (n_chosen != r->n_sel || r->n_sel >= n)
        (*bad_sel)++;
    double total = 0;
    *best = 0;
    for (int h = 0; h < r->n_heads; h++) {
        const float *ql = r->q_lat + (size_t)h * r->d_lat, *qp = r->q_pe + (size_t)h * r->q_pe_stride;
        double mx = -INFINITY;
        for (int u = 0; u < n; u++) {
            const float *row = r->latent + (size_t)u * r->ld_latent;
            double s = 0;
            for (int d = 0; d < r->d_lat; d++)
                s += (double)ql[d] * row[d];
            for (int d = 0; d < r->d_rope; d++)
                s += (double)qp[d] * row[r->d_lat + d];
            p[u] = s * r->scale;
            if (p[u] > mx)
                mx = p[u];
        }
        double sum = 0, on = 0;
        for (int u = 0; u < n; u++) {
            p[u] = exp(p[u] - mx);
            sum += p[u];
            if (chosen[u])
                on += p[u];
        }
        total += on / sum;
        qsort(p, (size_t)n, sizeof *p, cmp_desc);
        double top = 0;
        for (int i = 0; i < r->n_sel && i < n; i++)
            top += p[i];
        *best += top / sum;
    }
    *best /= r->n_heads;
    free(p);
    free(chosen);
    return total / r->n_heads;
}

static void observe(const struct sd_recall_row *r, void *user)
{
    struct observed *o = user;
    if (o->n >= MAX_ROWS)
        return;
    o->layer[o->n] = r->layer;
    o->pos[o->n] = r->pos;
    o->recall[o->n] = r->recall;
    o->best[o->n] = r->best;
    o->sel[o->n][0] = o->sel[o->n][1] = 0;
    for (int i = 0; i < r->n_sel; i++)
        if (r->sel[i] >= 0 && r->sel[i] < 128)
            o->sel[o->n][r->sel[i] / 64] |= 1ull << (r->sel[i] % 64);
    o->ref[o->n] = ref_recall(r, &o->bad_sel, &o->ref_best[o->n]);
    o->n++;
}

struct run {
    int ok, n_layers;
    struct sd_recall_stat st[MAX_L];
    float *logits; // [n][vocab]
};

// Evaluate ids in steps of `batch` with recall measured from from_pos (from_pos < 0: not measured).
static struct run run_ids(const struct sd_model *m, const int32_t *ids, int n, int batch, int topk, int from_pos,
                          struct observed *obs)
{
    struct run r = {0};
    struct sd_session_params sp = {.n_ctx = n, .n_threads = 2, .max_batch = batch, .index_topk = topk};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    if (sd_session_new(m, &sp, &s, &err) != SD_OK) {
        CHECK_MSG(0, "session: %s", err.msg);
        return r;
    }
    if (from_pos >= 0 && sd_session_recall_start(s, from_pos, obs ? observe : NULL, obs, &err) != SD_OK) {
        CHECK_MSG(0, "recall_start: %s", err.msg);
        sd_session_free(s);
        return r;
    }
    int V = m->cfg.vocab_size;
    r.logits = malloc(sizeof(float) * (size_t)n * V);
    for (int done = 0; done < n;) {
        int step = n - done < batch ? n - done : batch;
        if (sd_session_eval(s, ids + done, step, r.logits + (size_t)done * V, 1, &err) != SD_OK) {
            CHECK_MSG(0, "eval: %s", err.msg);
            sd_session_free(s);
            return r;
        }
        done += step;
    }
    r.n_layers = sd_session_recall_get(s, r.st, MAX_L);
    r.ok = 1;
    sd_session_free(s);
    return r;
}

static double layer_mean(const struct sd_recall_stat *st)
{
    return st->rows ? st->sum / st->rows : 1.0;
}

int main(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/dsv32", sd_test_fixtures());
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (sd_model_load(dir, &m, &err) != SD_OK) {
        CHECK_MSG(0, "fixture dsv32: %s", err.msg);
        return sd_test_finish("test_recall");
    }
    int L = m->cfg.n_layers, V = m->cfg.vocab_size, n = 64;
    CHECK(L <= MAX_L && m->cfg.index_topk == 16);
    uint64_t seed = (uint64_t)time(NULL) * 2654435761u + 12345;
    if (getenv("SD_TEST_SEED"))
        seed = strtoull(getenv("SD_TEST_SEED"), NULL, 10);
    printf("seed %llu (SD_TEST_SEED to repeat)\n", (unsigned long long)seed);
    srand((unsigned)seed);
    int32_t ids[128];
    for (int i = 0; i < 128; i++)
        ids[i] = rand() % V;

    // Errors: a dense session has no selection to measure.
    {
        struct sd_session_params sp = {.n_ctx = 32, .dsa_mode = SD_DSA_DENSE};
        struct sd_session *s = NULL;
        CHECK(sd_session_new(m, &sp, &s, &err) == SD_OK);
        if (s) {
            CHECK(sd_session_recall_start(s, 0, NULL, NULL, &err) == SD_ERR_ARG);
            struct sd_recall_stat st[MAX_L];
            CHECK(sd_session_recall_get(s, st, MAX_L) == 0);
            sd_session_free(s);
        }
    }

    // (a) top-k >= sequence length: all rows full, recall exactly 1, observer never called.
    int batches[2] = {64, 7};
    for (int b = 0; b < 2; b++) {
        struct observed obs = {0};
        struct run r = run_ids(m, ids, n, batches[b], n, 0, &obs);
        CHECK(r.ok && r.n_layers == L);
        for (int il = 0; il < r.n_layers; il++) {
            CHECK_MSG(r.st[il].rows_full == n && r.st[il].rows == 0 && r.st[il].sum == 0.0 && r.st[il].min == 1.0,
                      "(a) layer %d: rows %ld full %ld sum %g min %g", il, r.st[il].rows, r.st[il].rows_full,
                      r.st[il].sum, r.st[il].min);
        }
        CHECK_MSG(obs.n == 0, "(a) observer called for %d rows", obs.n);
        free(r.logits);
    }

    // (b) model's top-k 16 on 96 tokens: each row's recall vs float64; counters vs the rows; 80 rows
    // per layer computed (positions 16..95), 16 full.
    int n_b = 96;
    struct observed *ob = calloc(1, sizeof *ob);
    struct run rb = run_ids(m, ids, n_b, 256, 0, 0, ob);
    CHECK(rb.ok && rb.n_layers == L);
    CHECK_MSG(ob->n == L * (n_b - 16), "(b) observer saw %d rows, want %d", ob->n, L * (n_b - 16));
    CHECK_MSG(ob->bad_sel == 0, "(b) %d selections not k distinct causal tokens", ob->bad_sel);
    double maxe = 0;
    for (int il = 0; il < rb.n_layers; il++) {
        double sum = 0, mn = 1.0, best_sum = 0;
        long rows = 0;
        for (int i = 0; i < ob->n; i++) {
            if (ob->layer[i] != il)
                continue;
            maxe = fmax(maxe, fabs(ob->recall[i] - ob->ref[i]));
            maxe = fmax(maxe, fabs(ob->best[i] - ob->ref_best[i]));
            CHECK_MSG(ob->ref[i] <= ob->ref_best[i] + 1e-12, "(b) recall %.9f above the oracle's %.9f", ob->ref[i],
                      ob->ref_best[i]);
            sum += ob->ref[i];
            best_sum += ob->ref_best[i];
            mn = fmin(mn, ob->ref[i]);
            rows++;
            CHECK(ob->pos[i] >= 16 && ob->pos[i] < n_b);
        }
        printf("(b) layer %d: rows %ld full %ld mean %.6f (f64 %.6f) min %.6f (f64 %.6f) oracle %.6f (f64 %.6f)\n",
               il, rb.st[il].rows, rb.st[il].rows_full, layer_mean(&rb.st[il]), rows ? sum / rows : 1.0,
               rb.st[il].min, mn, rows ? rb.st[il].best_sum / rows : 1.0, rows ? best_sum / rows : 1.0);
        CHECK(rb.st[il].rows == rows && rows == n_b - 16 && rb.st[il].rows_full == 16);
        CHECK_MSG(fabs(rb.st[il].sum - sum) <= 1e-5 * rows && fabs(rb.st[il].min - mn) <= 1e-5 &&
                      fabs(rb.st[il].best_sum - best_sum) <= 1e-5 * rows,
                  "(b) layer %d counters differ from the float64 rows", il);
        CHECK_MSG(rb.st[il].min < 1.0 - 1e-6, "(b) layer %d: top-16 of up to 96 keys keeps all mass (%.9f)", il,
                  rb.st[il].min);
    }
    printf("(b) max |recall - f64| over %d rows: %.3g\n", ob->n, maxe);
    CHECK_MSG(maxe <= 1e-5, "(b) recall differs from float64 by %.3g", maxe);

    // Measuring must not change the forward pass.
    struct run rb_off = run_ids(m, ids, n_b, 256, 0, -1, NULL);
    CHECK(rb_off.ok && rb_off.n_layers == 0);
    if (rb.logits && rb_off.logits)
        CHECK_MSG(memcmp(rb.logits, rb_off.logits, sizeof(float) * (size_t)n_b * V) == 0,
                  "logits change when recall is measured");

    // Chunked prefill (7 a step) and decode (1 a step) from position 40: each position 40..95 measured once
    // per layer, the counters equal the sums of the run's own float64 rows, and the rows equal the one-prefill
    // rows. A batch of 1 or 7 rounds the hidden state differently in the last bits (GEMV vs GEMM), and the
    // indexer's FP8 scores can tie, so a near-tie may select another token (one seed in ~150 did, at layer 1;
    // every later layer then differs). Hence the rows are compared where the selections agree, in layer 0
    // (same inputs), and at least 90% of layer 0's selections must agree.
    int steps[2] = {7, 1};
    for (int i = 0; i < 2; i++) {
        struct observed *oq = calloc(1, sizeof *oq);
        struct run rc = run_ids(m, ids, n_b, steps[i], 0, 40, oq);
        CHECK(rc.ok && rc.n_layers == L);
        CHECK_MSG(oq->bad_sel == 0, "batch %d: %d selections not k distinct causal tokens", steps[i], oq->bad_sel);
        int same0 = 0, rows0 = 0, flips = 0;
        double err0 = 0;
        for (int il = 0; il < rc.n_layers && rb.ok; il++) {
            double own_sum = 0;
            int seen[MAX_ROWS] = {0};
            for (int k = 0; k < oq->n; k++) {
                if (oq->layer[k] != il)
                    continue;
                own_sum += oq->ref[k];
                CHECK_MSG(oq->pos[k] >= 40 && oq->pos[k] < n_b && !seen[oq->pos[k]]++,
                          "batch %d layer %d: position %d measured twice or out of range", steps[i], il, oq->pos[k]);
                err0 = fmax(err0, fabs(oq->recall[k] - oq->ref[k]));
                for (int j = 0; j < ob->n; j++) {
                    if (ob->layer[j] != il || ob->pos[j] != oq->pos[k])
                        continue;
                    int same = ob->sel[j][0] == oq->sel[k][0] && ob->sel[j][1] == oq->sel[k][1];
                    flips += !same;
                    if (il == 0) {
                        rows0++;
                        same0 += same;
                        if (same)
                            CHECK_MSG(fabs(ob->ref[j] - oq->ref[k]) <= 1e-5,
                                      "batch %d layer 0 position %d: recall %.9f vs %.9f with the same selection",
                                      steps[i], oq->pos[k], oq->ref[k], ob->ref[j]);
                    }
                }
            }
            CHECK_MSG(rc.st[il].rows == n_b - 40 && rc.st[il].rows_full == 0,
                      "batch %d from 40, layer %d: rows %ld full %ld", steps[i], il, rc.st[il].rows,
                      rc.st[il].rows_full);
            CHECK_MSG(fabs(rc.st[il].sum - own_sum) <= 1e-5 * (n_b - 40),
                      "batch %d layer %d: counter sum %.9g vs its rows' %.9g", steps[i], il, rc.st[il].sum, own_sum);
        }
        printf("batch %d from 40: %d of %d layer-0 selections as in one prefill, %d rows select otherwise in all\n",
               steps[i], same0, rows0, flips);
        CHECK_MSG(rows0 == n_b - 40 && same0 * 10 >= rows0 * 9, "batch %d: layer 0 selections agree in %d of %d rows",
                  steps[i], same0, rows0);
        CHECK_MSG(err0 <= 1e-5, "batch %d: recall differs from float64 by %.3g", steps[i], err0);
        free(rc.logits);
        free(oq);
    }

    // (c) top-k 4 on 64 tokens: recall in (0, 1], below 1 somewhere, and below top-k 63's.
    struct observed *oc = calloc(1, sizeof *oc);
    struct run r4 = run_ids(m, ids, n, 64, 4, 0, oc);
    struct run r63 = run_ids(m, ids, n, 64, 63, 0, NULL);
    CHECK(r4.ok && r63.ok && r4.n_layers == L && r63.n_layers == L);
    int below = 0;
    for (int il = 0; il < r4.n_layers && r63.ok; il++) {
        double m4 = layer_mean(&r4.st[il]), m63 = layer_mean(&r63.st[il]);
        printf("(c) layer %d: top-4 mean %.4f min %.4f (rows %ld, full %ld); top-63 mean %.4f (rows %ld)\n", il, m4,
               r4.st[il].min, r4.st[il].rows, r4.st[il].rows_full, m63, r63.st[il].rows);
        CHECK(r4.st[il].rows == n - 4 && r4.st[il].rows_full == 4 && r63.st[il].rows == 1);
        CHECK_MSG(r4.st[il].min > 0.0 && m4 <= 1.0 + 1e-6, "(c) layer %d recall outside (0, 1]", il);
        CHECK_MSG(m4 < m63, "(c) layer %d: top-4 recall %.4f not below top-63's %.4f", il, m4, m63);
        below += m4 < 1.0 - 1e-3;
    }
    CHECK_MSG(below > 0, "(c) top-4 recall is 1 in every layer");
    maxe = 0;
    for (int i = 0; i < oc->n; i++)
        maxe = fmax(maxe, fmax(fabs(oc->recall[i] - oc->ref[i]), fabs(oc->best[i] - oc->ref_best[i])));
    CHECK_MSG(oc->n == L * (n - 4) && oc->bad_sel == 0 && maxe <= 1e-5, "(c) rows %d bad selections %d err %.3g",
              oc->n, oc->bad_sel, maxe);

    free(rb.logits);
    free(rb_off.logits);
    free(r4.logits);
    free(r63.logits);
    free(ob);
    free(oc);
    sd_model_free(m);
    return sd_test_finish("test_recall");
}
