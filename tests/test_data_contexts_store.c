// test_data_contexts_store.c: persisted contexts (data/contexts_store.c) on a real SQLite store in a temp
// dir, with documents ingested by sd_ingest (Markdown, C, and the sample PDF through Poppler) and the real
// sparsedoc-mini and stories260K tokenizers: build and save, load byte-identical to a fresh build, misses
// on an edited document / another max_tokens / format / tokenizer, rows gone with their document,
// corrupt rows detected, dropped and rebuilt, a document replaced during a build not saved, and
// PRAGMA integrity_check / foreign_key_check clean at the end.
#include "contexts_store.h"
#include "test_data_common.h"
#ifdef SD_HAVE_TOKENIZER
#include "tokenizer.h"
#endif

#ifndef SD_HAVE_TOKENIZER
int main(void)
{
    printf("SKIP: data_contexts_store needs the engine's tokenizer (build with json-c and PCRE2)\n");
    return 77;
}
#else

struct tok_ctx {
    const struct sd_tokenizer *tok;
    int calls;
    void (*hook)(void); // run once, at the next tokenize call (to change the store mid-build)
};

static enum sd_status tok_cb(void *user, const char *text, size_t len, int32_t **ids, size_t *n, struct sd_err *err)
{
    struct tok_ctx *t = user;
    t->calls++;
    if (t->hook) {
        void (*h)(void) = t->hook;
        t->hook = NULL;
        h();
    }
    return sd_tokenizer_encode(t->tok, text, len, 0, ids, n, err);
}

// Identical contexts: every token and every span field.
static int same(const struct sd_contexts *a, const struct sd_contexts *b, const char **why)
{
    *why = "";
    if (!a || !b)
        return *why = "missing", 0;
    if (a->n != b->n || a->total_tokens != b->total_tokens)
        return *why = "count", 0;
    for (size_t i = 0; i < a->n; i++) {
        const struct sd_context *x = &a->items[i], *y = &b->items[i];
        if (x->n_tokens != y->n_tokens || memcmp(x->tokens, y->tokens, x->n_tokens * sizeof *x->tokens))
            return *why = "tokens", 0;
        if (x->n_spans != y->n_spans)
            return *why = "n_spans", 0;
        for (size_t k = 0; k < x->n_spans; k++) {
            const struct sd_ctx_span *p = &x->spans[k], *q = &y->spans[k];
            if (p->span_id != q->span_id || p->doc_id != q->doc_id || p->part != q->part || p->page_no != q->page_no ||
                p->line_start != q->line_start || p->line_end != q->line_end || p->tok_offset != q->tok_offset ||
                p->n_tokens != q->n_tokens)
                return *why = "span", 0;
        }
    }
    return 1;
}

#define CHECK_SAME(a, b)                                                                                               \
    do {                                                                                                               \
        const char *why_;                                                                                              \
        CHECK_MSG(same(a, b, &why_), "contexts differ (%s)", why_);                                                    \
    } while (0)

static struct sd_store *g_store;
static char g_root[600], g_db[700];
static struct tok_ctx g_mini;
static const char *g_key_mini = NULL;

static int64_t doc_id(const char *name)
{
    char sql[900];
    snprintf(sql, sizeof sql, "SELECT id FROM documents WHERE path = '%s/%s'", g_root, name);
    return query_int(g_store, sql);
}

static struct sd_contexts *fresh(const int64_t *ids, size_t n, const struct sd_contexts_opts *o)
{
    struct sd_contexts *c = NULL;
    struct sd_err err;
    if (sd_contexts_build(g_store, ids, n, o, &c, &err))
        fprintf(stderr, "build: %s\n", err.msg);
    return c;
}

// lob: load or build, checking the status; returns the contexts (caller frees) and fills info.
static struct sd_contexts *lob(const int64_t *ids, size_t n, const struct sd_contexts_opts *o, const char *key,
                               struct sd_contexts_load_info *info)
{
    struct sd_contexts *c = NULL;
    struct sd_err err;
    enum sd_status r = sd_contexts_load_or_build(g_store, ids, n, o, key, &c, info, &err);
    CHECK_MSG(r == SD_OK, "load_or_build: %s", err.msg);
    CHECK(r != SD_OK || c != NULL);
    return c;
}

static int64_t sets_with_doc(int64_t id)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM context_set_docs WHERE doc_id = %lld", (long long)id);
    return query_int(g_store, sql);
}

static int64_t contexts_of_doc(int64_t id)
{
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM contexts c JOIN context_set_docs d ON d.set_id = c.set_id WHERE d.doc_id = %lld",
             (long long)id);
    return query_int(g_store, sql);
}

static void write_notes(const char *version)
{
    char p[800], text[8192];
    snprintf(p, sizeof p, "%s/notes.md", g_root);
    int o = snprintf(text, sizeof text, "# Harbor log (%s)\n\n", version);
    for (int i = 0; i < 60 && o < (int)sizeof text - 200; i++)
        o += snprintf(text + o, sizeof text - (size_t)o,
                      "Day %d: the ferry left at %d:%02d with %d passengers and a crate of lemons.%s\n", i + 1,
                      6 + i % 12, (i * 7) % 60, 10 + i * 3, i % 10 == 9 ? "\n" : "");
    write_file(p, text);
}

// The hook of the mid-build test: a second connection replaces notes.md with an edited version.
static void edit_notes_via_other_connection(void)
{
    write_notes("edited mid-build");
    struct sd_store *s2 = NULL;
    struct sd_err err;
    CHECK(sd_store_open(g_db, &s2, &err) == SD_OK);
    if (!s2)
        return;
    char p[800];
    snprintf(p, sizeof p, "%s/notes.md", g_root);
    struct sd_ingest_stats st;
    struct sd_ingest_opts o = {0};
    CHECK(ingest1(s2, p, &o, &st) == SD_OK && st.updated == 1);
    sd_store_close(s2);
}

static void corrupt_and_check(const char *what, const char *sql, const int64_t *ids, size_t n,
                              const struct sd_contexts_opts *o, const struct sd_contexts *want)
{
    struct sd_err err;
    CHECK_MSG(sd_store_exec(g_store, sql, &err) == SD_OK, "%s: %s", what, err.msg);
    struct sd_contexts_load_info info;
    struct sd_contexts *c = lob(ids, n, o, g_key_mini, &info);
    CHECK_MSG(!info.hit && info.dropped && info.saved, "%s: hit %d dropped %d saved %d", what, info.hit, info.dropped,
              info.saved);
    printf("corrupt %s: dropped (%s)\n", what, info.dropped_why);
    CHECK_SAME(c, want);
    sd_contexts_free(c);
    c = lob(ids, n, o, g_key_mini, &info); // rebuilt and saved again: now a hit
    CHECK_MSG(info.hit && !info.dropped, "%s: after rebuild hit %d dropped %d", what, info.hit, info.dropped);
    CHECK_SAME(c, want);
    sd_contexts_free(c);
}

int main(void)
{
    const char *src = getenv("SD_SOURCE");
    char tj_mini[700], tj_stories[700], pdf_src[700], p[800];
    snprintf(tj_mini, sizeof tj_mini, "%s/data/models/sparsedoc-mini/tokenizer.json", src ? src : ".");
    snprintf(tj_stories, sizeof tj_stories, "%s/stories260K/tokenizer.json", sd_test_fixtures());
    snprintf(pdf_src, sizeof pdf_src, "%s/data/samples/harbor-notes.pdf", src ? src : ".");
    struct sd_err err;
    struct sd_tokenizer *mini = NULL, *stories = NULL;
    if (sd_tokenizer_load(tj_mini, &mini, &err) || sd_tokenizer_load(tj_stories, &stories, &err)) {
        fprintf(stderr, "cannot load the test tokenizers: %s\n", err.msg);
        return 1;
    }
    char key_mini[SD_CONTEXTS_TOKENIZER_KEY_MAX], key_stories[SD_CONTEXTS_TOKENIZER_KEY_MAX];
    CHECK(sd_contexts_tokenizer_key(tj_mini, key_mini, &err) == SD_OK);
    CHECK(sd_contexts_tokenizer_key(tj_stories, key_stories, &err) == SD_OK);
    CHECK(!strncmp(key_mini, "sha256:", 7) && strlen(key_mini) == 7 + 64 && strcmp(key_mini, key_stories));
    g_key_mini = key_mini;

    // Documents: a Markdown file, a C file, and the sample PDF (copied into the temp dir).
    snprintf(g_root, sizeof g_root, "%s/docs", tmp_dir());
    mkdir(g_root, 0755);
    write_notes("first");
    snprintf(p, sizeof p, "%s/tide.c", g_root);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 150; i++)
        fprintf(f, "int tide_height_%d(int hour) { return (hour * %d) %% 24; }\n%s", i, i + 3, i % 9 == 8 ? "\n" : "");
    fclose(f);
    size_t pdf_len = 0;
    char *pdf = sd_test_read_file(pdf_src, &pdf_len);
    if (!pdf) {
        fprintf(stderr, "missing %s\n", pdf_src);
        return 1;
    }
    snprintf(p, sizeof p, "%s/harbor-notes.pdf", g_root);
    f = fopen(p, "wb");
    CHECK(f && fwrite(pdf, 1, pdf_len, f) == pdf_len);
    fclose(f);
    free(pdf);
    snprintf(g_db, sizeof g_db, "%s/ctx.db", tmp_dir());
    g_store = open_db("ctx.db");
    CHECK(sd_store_user_version(g_store) == SD_STORE_SCHEMA_VERSION && SD_STORE_SCHEMA_VERSION >= 4);
    // migration 4 replaced the never-written tables of migration 2
    CHECK(query_int(g_store, "SELECT count(*) FROM sqlite_master WHERE name IN ('context_spans', 'documents_ad')") ==
          0);
    CHECK(query_int(g_store, "SELECT count(*) FROM pragma_table_info('contexts') WHERE name = 'checksum'") == 1);
    // upgrade from schema 3: a store put back to the tables of migrations 2-3 migrates to the current one
    struct sd_store *old = open_db("old.db");
    CHECK(sd_store_exec(old,
                        "DROP TABLE page_words;" // migration 5 (OCR word boxes) came after version 3
                        "DROP TABLE contexts; DROP TABLE context_set_docs; DROP TABLE context_sets;"
                        "CREATE TABLE contexts (id INTEGER PRIMARY KEY, scope_key TEXT NOT NULL, ord INTEGER NOT NULL,"
                        " tokenizer TEXT NOT NULL, max_tokens INTEGER NOT NULL, n_tokens INTEGER NOT NULL,"
                        " tokens BLOB NOT NULL, created_at INTEGER NOT NULL, UNIQUE (scope_key, ord));"
                        "CREATE TABLE context_spans (context_id INTEGER NOT NULL REFERENCES contexts(id) ON DELETE "
                        "CASCADE, idx INTEGER NOT NULL, span_id INTEGER NOT NULL, doc_id INTEGER NOT NULL,"
                        " part INTEGER NOT NULL, tok_offset INTEGER NOT NULL, n_tokens INTEGER NOT NULL,"
                        " PRIMARY KEY (context_id, idx)) WITHOUT ROWID;"
                        "CREATE TRIGGER documents_ad AFTER DELETE ON documents BEGIN DELETE FROM contexts WHERE id IN"
                        " (SELECT context_id FROM context_spans WHERE doc_id = old.id); END;"
                        "PRAGMA user_version = 3;",
                        &err) == SD_OK);
    sd_store_close(old);
    old = open_db("old.db");
    CHECK(sd_store_user_version(old) == SD_STORE_SCHEMA_VERSION);
    CHECK(query_int(old, "SELECT count(*) FROM sqlite_master WHERE name IN ('context_spans', 'documents_ad')") == 0);
    CHECK(query_int(old, "SELECT count(*) FROM sqlite_master WHERE name IN ('context_sets', 'context_set_docs', "
                         "'context_set_docs_ad', 'contexts')") == 4);
    CHECK(sd_store_integrity_check(old, &err) == SD_OK);
    sd_store_close(old);

    struct sd_ingest_stats st;
    struct sd_ingest_opts io = {0};
    CHECK(ingest1(g_store, g_root, &io, &st) == SD_OK && st.added == 3);
    int64_t id_notes = doc_id("notes.md"), id_tide = doc_id("tide.c"), id_pdf = doc_id("harbor-notes.pdf");
    CHECK(id_notes > 0 && id_tide > 0 && id_pdf > 0);

    g_mini = (struct tok_ctx){.tok = mini};
    struct tok_ctx tc_stories = {.tok = stories};
    struct sd_contexts_opts om = {
        .max_tokens = 512, .format = SD_CTX_FORMAT_PASSAGES, .tokenize = tok_cb, .tok_user = &g_mini};
    struct sd_contexts_load_info info;
    int64_t all3[3] = {id_pdf, id_notes, id_tide};

    // 1. first call builds and saves; the second loads; both equal a fresh build exactly.
    struct sd_contexts *want = fresh(all3, 3, &om);
    CHECK(want && want->n >= 3);
    struct sd_contexts *c1 = lob(all3, 3, &om, key_mini, &info);
    CHECK(!info.hit && info.saved && !info.dropped);
    CHECK_SAME(c1, want);
    int calls_before = g_mini.calls;
    struct sd_contexts *c2 = lob(all3, 3, &om, key_mini, &info);
    CHECK(info.hit && !info.saved && !info.dropped);
    CHECK(g_mini.calls == calls_before); // a hit tokenizes nothing
    CHECK_SAME(c2, want);
    CHECK_SAME(c2, c1);
    printf("scope of 3 documents: %zu contexts, %zu tokens; stored and loaded identically\n", want ? want->n : 0,
           want ? want->total_tokens : 0);
    struct sd_contexts_store_stats ss;
    CHECK(sd_contexts_store_stats(g_store, &ss, &err) == SD_OK);
    CHECK(ss.n_sets == 1 && ss.n_contexts == (int64_t)want->n && ss.n_tokens == (int64_t)want->total_tokens);
    CHECK(ss.n_bytes >= ss.n_tokens * 4);
    sd_contexts_free(c1);
    sd_contexts_free(c2);
    // the same scope given in another order, with a duplicate, and as "every document" (n = 0): hits
    int64_t shuffled[4] = {id_tide, id_pdf, id_notes, id_tide};
    c1 = lob(shuffled, 4, &om, key_mini, &info);
    CHECK(info.hit);
    CHECK_SAME(c1, want);
    sd_contexts_free(c1);
    c1 = lob(NULL, 0, &om, key_mini, &info);
    CHECK(info.hit);
    CHECK_SAME(c1, want);
    sd_contexts_free(c1);
    // a document id that is not in the store
    int64_t bogus[2] = {id_tide, 999999};
    c1 = NULL;
    CHECK(sd_contexts_load_or_build(g_store, bogus, 2, &om, key_mini, &c1, &info, &err) == SD_ERR_MISSING && !c1);
    CHECK(sd_contexts_load_or_build(g_store, all3, 3, &om, "", &c1, &info, &err) == SD_ERR_ARG && !c1);

    // 2. other max_tokens, format or tokenizer: misses (then hits of their own), different contents.
    struct sd_contexts_opts o_big = om;
    o_big.max_tokens = 2048;
    struct sd_contexts *w_big = fresh(all3, 3, &o_big);
    c1 = lob(all3, 3, &o_big, key_mini, &info);
    CHECK(!info.hit && info.saved);
    CHECK_SAME(c1, w_big);
    CHECK(w_big && w_big->n < want->n);
    sd_contexts_free(c1);
    c1 = lob(all3, 3, &o_big, key_mini, &info);
    CHECK(info.hit);
    CHECK_SAME(c1, w_big);
    sd_contexts_free(c1);
    struct sd_contexts_opts o_hdr = om;
    o_hdr.format = SD_CTX_FORMAT_HEADERS;
    struct sd_contexts *w_hdr = fresh(all3, 3, &o_hdr);
    c1 = lob(all3, 3, &o_hdr, key_mini, &info);
    CHECK(!info.hit && info.saved);
    CHECK_SAME(c1, w_hdr);
    sd_contexts_free(c1);
    struct sd_contexts_opts o_st = om;
    o_st.tok_user = &tc_stories;
    struct sd_contexts *w_st = fresh(all3, 3, &o_st);
    c1 = lob(all3, 3, &o_st, key_stories, &info);
    CHECK(!info.hit && info.saved);
    CHECK_SAME(c1, w_st);
    const char *why;
    CHECK(!same(w_st, want, &why)); // a different tokenizer really gives other tokens
    sd_contexts_free(c1);
    c1 = lob(all3, 3, &o_st, key_stories, &info);
    CHECK(info.hit);
    CHECK_SAME(c1, w_st);
    sd_contexts_free(c1);
    sd_contexts_free(w_big);
    sd_contexts_free(w_hdr);
    sd_contexts_free(w_st);
    // a scope without notes.md, to see that it survives notes.md's edit and removal
    int64_t pdf_tide[2] = {id_pdf, id_tide};
    struct sd_contexts *w_pt = fresh(pdf_tide, 2, &om);
    c1 = lob(pdf_tide, 2, &om, key_mini, &info);
    CHECK(!info.hit && info.saved);
    sd_contexts_free(c1);
    CHECK(sd_contexts_store_stats(g_store, &ss, &err) == SD_OK && ss.n_sets == 5);

    // 3. editing a document's file and re-ingesting: its sets are gone, the scope misses.
    CHECK(sets_with_doc(id_notes) == 4);
    write_notes("second");
    CHECK(ingest1(g_store, g_root, &io, &st) == SD_OK && st.updated == 1);
    CHECK(sets_with_doc(id_notes) == 0 && contexts_of_doc(id_notes) == 0);
    CHECK(query_int(g_store, "SELECT count(*) FROM context_sets") == 1); // pdf + tide
    c1 = lob(pdf_tide, 2, &om, key_mini, &info);
    CHECK(info.hit);
    CHECK_SAME(c1, w_pt);
    sd_contexts_free(c1);
    id_notes = doc_id("notes.md");
    int64_t all3b[3] = {id_pdf, id_notes, id_tide};
    struct sd_contexts *want2 = fresh(all3b, 3, &om);
    CHECK(!same(want2, want, &why));
    c1 = lob(all3b, 3, &om, key_mini, &info);
    CHECK(!info.hit && info.saved);
    CHECK_SAME(c1, want2);
    sd_contexts_free(c1);
    c1 = lob(all3b, 3, &om, key_mini, &info);
    CHECK(info.hit);
    CHECK_SAME(c1, want2);
    sd_contexts_free(c1);

    // 4. corrupt rows: a flipped byte in the tokens or spans BLOB, a wrong checksum, a wrong n_tokens,
    // a missing row, a row moved to another set: each is detected, dropped, rebuilt identically.
    corrupt_and_check("tokens byte",
                      "UPDATE contexts SET tokens = substr(tokens, 1, 40) || CASE WHEN substr(tokens, 41, 1) = x'00' "
                      "THEN x'01' ELSE x'00' END || substr(tokens, 42) WHERE ord = 1 AND set_id = (SELECT max(id) "
                      "FROM context_sets)",
                      all3b, 3, &om, want2);
    corrupt_and_check("spans byte",
                      "UPDATE contexts SET spans = substr(spans, 1, 16) || CASE WHEN substr(spans, 17, 1) = x'07' "
                      "THEN x'08' ELSE x'07' END || substr(spans, 18) WHERE ord = 0 AND set_id = (SELECT max(id) "
                      "FROM context_sets)",
                      all3b, 3, &om, want2);
    corrupt_and_check("checksum",
                      "UPDATE contexts SET checksum = checksum + 1 WHERE ord = 2 AND set_id = (SELECT max(id) FROM "
                      "context_sets)",
                      all3b, 3, &om, want2);
    corrupt_and_check("n_tokens",
                      "UPDATE contexts SET n_tokens = n_tokens - 1 WHERE ord = 0 AND set_id = (SELECT max(id) FROM "
                      "context_sets)",
                      all3b, 3, &om, want2);
    corrupt_and_check("missing row",
                      "DELETE FROM contexts WHERE ord = 1 AND set_id = (SELECT max(id) FROM context_sets)", all3b, 3,
                      &om, want2);
    corrupt_and_check("truncated tokens",
                      "UPDATE contexts SET tokens = substr(tokens, 1, length(tokens) - 4) WHERE ord = 0 AND set_id = "
                      "(SELECT max(id) FROM context_sets)",
                      all3b, 3, &om, want2);
    // the pdf+tide set's first row copied over ours (valid for its own set, not for this one)
    corrupt_and_check("row from another set",
                      "UPDATE contexts SET (n_tokens, n_spans, tokens, spans, checksum) = (SELECT n_tokens, n_spans, "
                      "tokens, spans, checksum FROM contexts WHERE ord = 0 AND set_id = (SELECT min(id) FROM "
                      "context_sets)) WHERE ord = 0 AND set_id = (SELECT max(id) FROM context_sets)",
                      all3b, 3, &om, want2);

    // 5. a document replaced while its contexts are built: the result is the old snapshot, not saved.
    struct sd_contexts *snap_want = fresh(all3b, 3, &o_big);
    g_mini.hook = edit_notes_via_other_connection;
    c1 = lob(all3b, 3, &o_big, key_mini, &info);
    CHECK_MSG(!info.hit && !info.saved && !g_mini.hook, "hit %d saved %d hook %d", info.hit, info.saved,
              g_mini.hook != NULL);
    CHECK_SAME(c1, snap_want);
    sd_contexts_free(c1);
    sd_contexts_free(snap_want);
    c1 = NULL; // the old id of notes.md may be gone (or reused for the new content): a miss either way
    enum sd_status r5 = sd_contexts_load_or_build(g_store, all3b, 3, &o_big, key_mini, &c1, &info, &err);
    CHECK(r5 == SD_ERR_MISSING || (r5 == SD_OK && !info.hit));
    printf("document replaced mid-build: not saved; its old id then %s\n", r5 ? "is missing" : "was reused");
    sd_contexts_free(c1);
    int64_t id_notes3 = doc_id("notes.md");
    int64_t all3c[3] = {id_pdf, id_notes3, id_tide};
    struct sd_contexts *want3 = fresh(all3c, 3, &o_big);
    c1 = lob(all3c, 3, &o_big, key_mini, &info);
    CHECK(info.hit == (r5 == SD_OK)); // saved by the call above when the id was reused
    CHECK_SAME(c1, want3);
    sd_contexts_free(c1);
    sd_contexts_free(want3);

    // 6. removing a document drops its rows; sets without it stay.
    int64_t n_sets = query_int(g_store, "SELECT count(*) FROM context_sets");
    CHECK(sets_with_doc(id_tide) >= 2 && contexts_of_doc(id_tide) > 0);
    int64_t sets_tide = sets_with_doc(id_tide);
    CHECK(sd_store_doc_remove(g_store, id_tide, &err) == SD_OK);
    CHECK(sets_with_doc(id_tide) == 0 && contexts_of_doc(id_tide) == 0);
    CHECK(query_int(g_store, "SELECT count(*) FROM context_sets") == n_sets - sets_tide);
    CHECK(query_int(g_store, "SELECT count(*) FROM contexts WHERE set_id NOT IN (SELECT id FROM context_sets)") == 0);
    int64_t pdf_notes[2] = {id_pdf, id_notes3};
    struct sd_contexts *w_pn = fresh(pdf_notes, 2, &om);
    c1 = lob(pdf_notes, 2, &om, key_mini, &info);
    CHECK(!info.hit && info.saved);
    CHECK_SAME(c1, w_pn);
    sd_contexts_free(c1);
    sd_contexts_free(w_pn);
    // eviction: at most SD_CONTEXTS_KEEP_SETS sets are kept, the oldest go first
    int64_t only_notes[1] = {id_notes3};
    struct sd_contexts_opts o_small = om;
    for (int i = 0; i < SD_CONTEXTS_KEEP_SETS + 2; i++) {
        o_small.max_tokens = 100 + (size_t)i;
        c1 = lob(only_notes, 1, &o_small, key_mini, &info);
        CHECK(!info.hit && info.saved);
        sd_contexts_free(c1);
    }
    CHECK(query_int(g_store, "SELECT count(*) FROM context_sets") == SD_CONTEXTS_KEEP_SETS);
    CHECK(query_int(g_store, "SELECT min(max_tokens) FROM context_sets") == 102);
    o_small.max_tokens = 100 + SD_CONTEXTS_KEEP_SETS + 1; // the newest
    c1 = lob(only_notes, 1, &o_small, key_mini, &info);
    CHECK(info.hit);
    sd_contexts_free(c1);
    o_small.max_tokens = 100; // evicted
    c1 = lob(only_notes, 1, &o_small, key_mini, &info);
    CHECK(!info.hit && info.saved);
    sd_contexts_free(c1);
    // and clearing everything
    CHECK(sd_contexts_store_clear(g_store, &err) == SD_OK);
    CHECK(sd_contexts_store_stats(g_store, &ss, &err) == SD_OK && ss.n_sets == 0 && ss.n_contexts == 0);
    CHECK(query_int(g_store, "SELECT count(*) FROM context_set_docs") == 0);

    // 7. the database is sound.
    CHECK_MSG(sd_store_integrity_check(g_store, &err) == SD_OK, "%s", err.msg);
    CHECK(query_int(g_store, "SELECT count(*) FROM pragma_foreign_key_check") == 0);

    sd_contexts_free(want);
    sd_contexts_free(want2);
    sd_contexts_free(w_pt);
    sd_store_close(g_store);
    sd_tokenizer_free(mini);
    sd_tokenizer_free(stories);
    tmp_cleanup();
    return sd_test_finish("data_contexts_store");
}
#endif
