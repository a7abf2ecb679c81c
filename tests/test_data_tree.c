// test_data_tree.c: code-tree ingestion: .gitignore and .git/info/exclude honoured, .git, binaries and
// oversized files skipped, symlink loops survived, path:line references, incremental re-ingest
// (unchanged, changed, deleted files), and the project's own source tree as a fixture.
#include <fcntl.h>
#include <sys/stat.h>

#include "test_data_common.h"

struct first_hit {
    int n, line;
    char path[512];
};

static int on_hit(void *user, const struct sd_search_hit *h)
{
    struct first_hit *c = user;
    if (!c->n++) {
        c->line = h->line_start;
        snprintf(c->path, sizeof c->path, "%s", h->path);
    }
    return 0;
}

static int64_t count_doc(struct sd_store *s, const char *suffix)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM documents WHERE path LIKE '%%%s'", suffix);
    return query_int(s, sql);
}

int main(void)
{
    char root[600], p[800];
    snprintf(root, sizeof root, "%s/tree", tmp_dir());
    mkdir(root, 0755);
#define F(rel, text)                                                                                                   \
    do {                                                                                                               \
        snprintf(p, sizeof p, "%s/%s", root, rel);                                                                     \
        write_file(p, text);                                                                                           \
    } while (0)
#define D(rel)                                                                                                         \
    do {                                                                                                               \
        snprintf(p, sizeof p, "%s/%s", root, rel);                                                                     \
        mkdir(p, 0755);                                                                                                \
    } while (0)
    D(".git");
    D(".git/info");
    F(".git/info/exclude", "secret.txt\n");
    F(".git/HEAD", "ref: refs/heads/main\n");
    F(".gitignore", "*.log\nbuild/\n/only_root.c\n!keep.log\n");
    D("src");
    D("build");
    D("src/sub");
    F("src/main.c", "#include <stdio.h>\n\nint main(void)\n{\n    puts(\"hello\");\n    return unique_marker_42();\n}\n");
    F("src/sub/.gitignore", "generated_*.c\n");
    F("src/sub/generated_x.c", "int generated;\n");
    F("src/sub/util.py", "def helper():\n    return 'zanzibar'\n");
    F("src/only_root.c", "int not_ignored_here_quokka;\n");
    F("only_root.c", "int ignored;\n");
    F("debug.log", "ignored log\n");
    F("keep.log", "kept log wombat\n");
    F("secret.txt", "excluded by info/exclude\n");
    F("build/out.c", "int in_build;\n");
    F("README.md", "# Title\n\nIntro text.\n\n## Usage\n\nRun the platypus command.\n");
    snprintf(p, sizeof p, "%s/blob.dat", root);
    FILE *f = fopen(p, "wb");
    fwrite("abc\0def", 1, 7, f);
    fclose(f);
    snprintf(p, sizeof p, "%s/big.txt", root);
    f = fopen(p, "wb");
    for (int i = 0; i < 5000; i++)
        fputs("a big file line that is long enough to exceed a small cap\n", f);
    fclose(f);
    char link[800];
    snprintf(link, sizeof link, "%s/src/loop", root);
    CHECK(symlink("..", link) == 0); // symlink loop
    snprintf(link, sizeof link, "%s/dangling", root);
    CHECK(symlink("/nonexistent/target", link) == 0);

    struct sd_store *s = open_db("tree.db");
    struct sd_ingest_opts o = {.max_file_bytes = 100000};
    struct sd_ingest_stats st;
    CHECK(ingest1(s, root, &o, &st) == SD_OK);
    CHECK(count_doc(s, "/src/main.c") == 1);
    CHECK(count_doc(s, "/src/sub/util.py") == 1);
    CHECK(count_doc(s, "/src/only_root.c") == 1);
    CHECK(count_doc(s, "/tree/only_root.c") == 0);
    CHECK(count_doc(s, "/src/sub/generated_x.c") == 0);
    CHECK(count_doc(s, "debug.log") == 0);
    CHECK(count_doc(s, "keep.log") == 1);
    CHECK(count_doc(s, "secret.txt") == 0);
    CHECK(count_doc(s, "/build/out.c") == 0);
    CHECK(count_doc(s, "/.git/HEAD") == 0);
    CHECK(count_doc(s, "blob.dat") == 0);
    CHECK(count_doc(s, "big.txt") == 0);
    CHECK(count_doc(s, "README.md") == 1);
    CHECK(query_int(s, "SELECT count(*) FROM documents WHERE path LIKE '%/loop/%'") == 0);
    CHECK(query_int(s, "SELECT count(*) FROM documents WHERE kind = 'code' AND lang = 'c'") == 2);
    CHECK(st.failed == 0 && st.skipped >= 4);
    struct first_hit h = {0};
    size_t n = 0;
    struct sd_err err;
    CHECK(sd_store_search(s, "unique_marker_42", 5, on_hit, &h, &n, &err) == SD_OK && n == 1);
    CHECK(h.line == 1 && strstr(h.path, "src/main.c"));
    memset(&h, 0, sizeof h);
    CHECK(sd_store_search(s, "platypus", 5, on_hit, &h, &n, &err) == SD_OK && n == 1);
    CHECK(query_int(s, "SELECT count(*) FROM spans WHERE section = 'Usage'") == 1);

    // unchanged
    CHECK(ingest1(s, root, &o, &st) == SD_OK);
    CHECK(st.added == 0 && st.updated == 0 && st.unchanged == st.files && st.removed == 0);
    // changed, deleted, touched-but-same
    F("src/sub/util.py", "def helper():\n    return 'madagascar'\n");
    snprintf(p, sizeof p, "%s/keep.log", root);
    CHECK(unlink(p) == 0);
    snprintf(p, sizeof p, "%s/README.md", root);
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    utimensat(AT_FDCWD, p, ts, 0);
    CHECK(ingest1(s, root, &o, &st) == SD_OK);
    CHECK_MSG(st.updated == 1 && st.removed == 1, "updated %zu removed %zu", st.updated, st.removed);
    CHECK(count_doc(s, "keep.log") == 0);
    memset(&h, 0, sizeof h);
    CHECK(sd_store_search(s, "zanzibar", 5, on_hit, &h, &n, &err) == SD_OK && n == 0);
    CHECK(sd_store_search(s, "madagascar", 5, on_hit, &h, &n, &err) == SD_OK && n == 1);
    // an unreadable directory is reported, and its documents are not treated as deleted
    if (geteuid() != 0) {
        snprintf(p, sizeof p, "%s/src/sub", root);
        chmod(p, 0);
        CHECK(ingest1(s, root, &o, &st) == SD_OK);
        CHECK(st.failed == 1 && st.removed == 0);
        CHECK(count_doc(s, "/src/sub/util.py") == 1);
        chmod(p, 0755);
    }
    CHECK(sd_store_integrity_check(s, &err) == SD_OK);

    // the project's own data/ sources as a real tree
    const char *src = getenv("SD_SOURCE");
    if (src) {
        snprintf(p, sizeof p, "%s/data", src);
        CHECK(ingest1(s, p, &o, &st) == SD_OK);
        CHECK(st.added >= 10 && st.failed == 0);
        memset(&h, 0, sizeof h);
        CHECK(sd_store_search(s, "sd_store_open", 3, on_hit, &h, &n, &err) == SD_OK && n > 0 && h.line > 0);
    }
    sd_store_close(s);
    tmp_cleanup();
    return sd_test_finish("data_tree");
}
