// test_data_crash.c: crash safety and concurrency of the store: an ingest killed with SIGKILL midway
// leaves a database that passes PRAGMA integrity_check and the next ingest completes; two processes
// ingesting into one store at once both succeed.
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "test_data_common.h"

static char db_path[700];

static int child_ingest(char *const *paths, size_t n)
{
    struct sd_store *s = NULL;
    struct sd_err err;
    if (sd_store_open(db_path, &s, &err)) {
        fprintf(stderr, "child open: %s\n", err.msg);
        return 2;
    }
    struct sd_ingest_stats st;
    struct sd_ingest_opts o = {.page_timeout_s = 30, .file_timeout_s = 300};
    enum sd_status r = sd_ingest(s, paths, n, &o, &st, &err);
    if (r)
        fprintf(stderr, "child ingest: %s\n", err.msg);
    sd_store_close(s);
    return r ? 3 : (st.failed ? 4 : 0);
}

static pid_t spawn(char *const *paths, size_t n)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_ingest(paths, n));
    return pid;
}

int main(void)
{
    const char *corpus = sd_test_require_corpus("crash and concurrency tests (large PDFs)");
    char big[600], book[600], multi[600], tree[600];
    snprintf(big, sizeof big, "%s/pdf/large/source2e.pdf", corpus);
    snprintf(book, sizeof book, "%s/pdf/freeculture.pdf", corpus);
    snprintf(multi, sizeof multi, "%s/pdf/multilingual", corpus);
    const char *src = getenv("SD_SOURCE");
    snprintf(tree, sizeof tree, "%s", src ? src : ".");
    char *paths[] = {book, multi, big, tree};
    size_t np = 4;
    snprintf(db_path, sizeof db_path, "%s/crash.db", tmp_dir());

    // 1. kill -9 in the middle of an ingest, several times at different moments
    for (int round = 0; round < 3; round++) {
        pid_t pid = spawn(paths, np);
        struct timespec ts = {0, 300000000L + round * 400000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) || WIFEXITED(status));
        struct sd_store *s = NULL;
        struct sd_err err;
        CHECK(sd_store_open(db_path, &s, &err) == SD_OK);
        if (s) {
            CHECK_MSG(sd_store_integrity_check(s, &err) == SD_OK, "after kill %d: %s", round, err.msg);
            printf("after kill %d: %lld documents committed\n", round,
                   (long long)query_int(s, "SELECT count(*) FROM documents"));
            sd_store_close(s);
        }
    }
    // the next ingest completes (and resumes: committed files are unchanged)
    {
        struct sd_store *s = open_db("crash.db");
        struct sd_ingest_stats st;
        struct sd_ingest_opts o = {0};
        struct sd_err err;
        CHECK(sd_ingest(s, paths, np, &o, &st, &err) == SD_OK);
        CHECK_MSG(st.failed == 0, "failed %zu", st.failed);
        CHECK(st.resumed == 1);
        printf("resume: %zu files, %zu unchanged, %zu added\n", st.files, st.unchanged, st.added);
        CHECK(sd_store_integrity_check(s, &err) == SD_OK);
        CHECK(query_int(s, "SELECT count(*) FROM documents WHERE path LIKE '%source2e.pdf' AND n_pages = 1221") == 1);
        sd_store_close(s);
    }

    // 2. two processes ingesting into one new store at once
    snprintf(db_path, sizeof db_path, "%s/concurrent.db", tmp_dir());
    char *pa[] = {book, tree}, *pb[] = {multi, tree};
    pid_t a = spawn(pa, 2), b = spawn(pb, 2);
    int sa = -1, sb = -1;
    waitpid(a, &sa, 0);
    waitpid(b, &sb, 0);
    CHECK_MSG(WIFEXITED(sa) && WEXITSTATUS(sa) == 0, "first ingester status %d", sa);
    CHECK_MSG(WIFEXITED(sb) && WEXITSTATUS(sb) == 0, "second ingester status %d", sb);
    {
        struct sd_store *s = open_db("concurrent.db");
        struct sd_err err;
        CHECK(sd_store_integrity_check(s, &err) == SD_OK);
        CHECK(query_int(s, "SELECT count(*) FROM documents WHERE path LIKE '%freeculture.pdf'") == 1);
        CHECK(query_int(s, "SELECT count(*) FROM documents WHERE path LIKE '%/multilingual/%'") >= 10);
        CHECK(query_int(s, "SELECT count(*) FROM (SELECT path FROM documents GROUP BY path HAVING count(*) > 1)") == 0);
        sd_store_close(s);
    }
    tmp_cleanup();
    return sd_test_finish("data_crash");
}
