// test_util.h: tiny assertion helpers shared by the C tests (fail with file:line and values;
// skip with exit code 77, which meson reports as SKIP), corpus/fixture path helpers and a seeded
// random generator.
#ifndef SD_TEST_UTIL_H
#define SD_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern int sd_test_failures;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                                   \
            sd_test_failures++;                                                                                        \
        }                                                                                                              \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                                           \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                                   \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
            sd_test_failures++;                                                                                        \
        }                                                                                                              \
    } while (0)

// Returns the corpus root (SD_CORPUS) if it exists, else NULL.
const char *sd_test_corpus(void);
// Exit 77 (skip) with a message if the corpus is absent; returns its path otherwise.
const char *sd_test_require_corpus(const char *why);
// Fixture dir (SD_FIXTURES, default tests/fixtures relative to cwd).
const char *sd_test_fixtures(void);
// Read a whole file (malloc'd, NUL-terminated); NULL on failure. *len may be NULL.
char *sd_test_read_file(const char *path, size_t *len);
// Token ids of a fixture: whitespace-separated integers in DIR/ids.txt (malloc'd, caller frees; *n
// their count). NULL when the file is missing or unreadable.
int32_t *sd_test_load_ids(const char *dir, int *n);
// Relative L2 error |a - ref| / |ref| in double precision (|ref| = 0 counts as 1).
double sd_test_rel_l2(const float *a, const float *ref, size_t n);
// Index of the largest of v[0..n) (the first on ties).
int sd_test_argmax(const float *v, int n);
// Fresh random inputs: sd_test_seed() seeds the tests' generator from the clock (or SD_TEST_SEED) and
// prints the seed so that a failing run can be repeated; then xorshift64 uniforms in [0, 1) and
// Box-Muller normals.
uint64_t sd_test_seed(void);
double sd_test_urand(void);
float sd_test_nrand(void);
// Return 0 if no failures, 1 otherwise, printing a summary line.
int sd_test_finish(const char *name);

#endif
