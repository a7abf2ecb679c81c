// test_data_store.c: the SQLite store: schema version, WAL, migrations idempotent across reopen,
// spans + FTS5 search with snippets, document removal cascading to spans and the FTS index, and
// many processes opening one new database at the same moment.
#include <sys/wait.h>

#include "test_data_common.h"

struct hits {
    int n;
    int first_line;
    char snippet[256];
};

static int on_hit(void *user, const struct sd_search_hit *h)
{
    struct hits *c = user;
    if (!c->n++) {
        c->first_line = h->line_start;
        snprintf(c->snippet, sizeof c->snippet, "%s", h->snippet ? h->snippet : "");
    }
    return 0;
}

// Round after round, N_RACERS processes open the same new file at once (released together through a
// pipe); every one must open it (schema, WAL) without an error.
#define N_RACERS 8
static void open_race(int rounds)
{
    int failed = 0;
    for (int r = 0; r < rounds; r++) {
        char path[700];
        snprintf(path, sizeof path, "%s/race%d.db", tmp_dir(), r);
        int go[2];
        CHECK(pipe(go) == 0);
        pid_t pids[N_RACERS];
        fflush(NULL);
        for (int i = 0; i < N_RACERS; i++) {
            pids[i] = fork();
            if (pids[i] == 0) {
                close(go[1]);
                char c;
                if (read(go[0], &c, 1) != 0) // EOF when the parent closes: everyone starts together
                    _exit(5);
                struct sd_store *s = NULL;
                struct sd_err err;
                if (sd_store_open(path, &s, &err)) {
                    fprintf(stderr, "racer %d round %d: %s\n", i, r, err.msg);
                    _exit(2);
                }
                int ok = sd_store_user_version(s) == SD_STORE_SCHEMA_VERSION;
                sd_store_close(s);
                _exit(ok ? 0 : 3);
            }
        }
        close(go[0]);
        close(go[1]);
        for (int i = 0; i < N_RACERS; i++) {
            int st = -1;
            waitpid(pids[i], &st, 0);
            failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
    }
    CHECK_MSG(failed == 0, "%d of %d concurrent opens failed", failed, rounds * N_RACERS);
    printf("concurrent open: %d processes x %d rounds, %d failed\n", N_RACERS, rounds, failed);
}

int main(void)
{
    open_race(25);

    struct sd_store *s = open_db("store.db");
    struct sd_err err;
    CHECK(sd_store_user_version(s) == SD_STORE_SCHEMA_VERSION);
    CHECK(query_int(s, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'") == 1);
    CHECK(query_int(s, "PRAGMA foreign_keys") == 1);
    CHECK(sd_store_begin(s, &err) == SD_OK);
    struct sd_doc_new d = {.path = "/x/readme.md", .kind = "markdown", .sha256 = "00", .size = 10, .mtime_ns = 1};
    int64_t id = 0;
    CHECK(sd_store_doc_replace(s, &d, &id, &err) == SD_OK);
    struct sd_span sp = {.ord = 0, .line_start = 1, .line_end = 3, .text = "alpha beta\ngamma", .n_tokens = -1};
    sp.len = strlen(sp.text);
    CHECK(sd_store_span_add(s, id, &sp, &err) == SD_OK);
    struct sd_span sp2 = {.ord = 1, .line_start = 4, .line_end = 9, .text = "the zebra crossing is here", .n_tokens = -1};
    sp2.len = strlen(sp2.text);
    CHECK(sd_store_span_add(s, id, &sp2, &err) == SD_OK);
    CHECK(sd_store_commit(s, &err) == SD_OK);
    sd_store_close(s);

    s = open_db("store.db"); // reopen: migrations already applied
    CHECK(sd_store_user_version(s) == SD_STORE_SCHEMA_VERSION);
    struct hits h = {0};
    size_t n = 0;
    CHECK(sd_store_search(s, "zebra", 5, on_hit, &h, &n, &err) == SD_OK);
    CHECK(n == 1 && h.first_line == 4);
    CHECK_MSG(strstr(h.snippet, "[zebra]") != NULL, "snippet '%s'", h.snippet);
    memset(&h, 0, sizeof h);
    CHECK(sd_store_search(s, "zebra NOT\"(", 5, on_hit, &h, &n, &err) == SD_OK); // FTS syntax is neutralised
    CHECK(sd_store_search(s, "\"'*", 5, on_hit, &h, &n, &err) == SD_ERR_ARG);
    CHECK(sd_store_integrity_check(s, &err) == SD_OK);
    CHECK(sd_store_begin(s, &err) == SD_OK);
    CHECK(sd_store_doc_remove(s, id, &err) == SD_OK);
    CHECK(sd_store_doc_remove(s, id, &err) == SD_ERR_MISSING);
    CHECK(sd_store_commit(s, &err) == SD_OK);
    CHECK(query_int(s, "SELECT count(*) FROM spans") == 0);
    memset(&h, 0, sizeof h);
    CHECK(sd_store_search(s, "zebra", 5, on_hit, &h, &n, &err) == SD_OK && n == 0);
    CHECK(sd_store_integrity_check(s, &err) == SD_OK);
    sd_store_close(s);

    // A file that is not a database fails with a clear message, not a crash.
    char bad[700];
    snprintf(bad, sizeof bad, "%s/bad.db", tmp_dir());
    write_file(bad, "this is not an SQLite database, just some text that is long enough to have a header....");
    struct sd_store *b = NULL;
    CHECK(sd_store_open(bad, &b, &err) != SD_OK && b == NULL);
    CHECK_MSG(strstr(err.msg, "not a") != NULL || strstr(err.msg, "damaged") != NULL, "msg '%s'", err.msg);
    tmp_cleanup();
    return sd_test_finish("data_store");
}
