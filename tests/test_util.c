// test_util.c: shared helpers for the C tests (see test_util.h).
#include "test_util.h"

#include <math.h>

#include <sys/stat.h>
#include <time.h>

int sd_test_failures = 0;

const char *sd_test_corpus(void)
{
    const char *c = getenv("SD_CORPUS");
    struct stat st;
    if (!c || !*c || stat(c, &st) != 0 || !S_ISDIR(st.st_mode))
        return NULL;
    return c;
}

const char *sd_test_require_corpus(const char *why)
{
    const char *c = sd_test_corpus();
    if (!c) {
        printf("SKIP: shared corpus not found (set SD_CORPUS or -Dcorpus=PATH; looked at '%s'); needed for %s\n",
               getenv("SD_CORPUS") ? getenv("SD_CORPUS") : "(unset)", why);
        exit(77);
    }
    return c;
}

const char *sd_test_fixtures(void)
{
    const char *f = getenv("SD_FIXTURES");
    return f && *f ? f : "tests/fixtures";
}

char *sd_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    if (n < 0) {
        fclose(f);
        return NULL;
    }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return NULL;
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (len)
        *len = (size_t)n;
    return buf;
}

int32_t *sd_test_load_ids(const char *dir, int *n)
{
    char p[1100];
    snprintf(p, sizeof p, "%s/ids.txt", dir);
    char *txt = sd_test_read_file(p, NULL);
    if (!txt)
        return NULL;
    int cap = 256, len = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    char *s = txt, *end;
    for (; ids;) {
        long v = strtol(s, &end, 10);
        if (end == s)
            break;
        if (len == cap) {
            int32_t *g = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
            if (!g) {
                free(ids);
                ids = NULL;
                break;
            }
            ids = g;
        }
        ids[len++] = (int32_t)v;
        s = end;
    }
    free(txt);
    *n = ids ? len : 0;
    return ids;
}

double sd_test_rel_l2(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

int sd_test_argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

static uint64_t rng_state = 1;

uint64_t sd_test_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec;
    if (getenv("SD_TEST_SEED"))
        seed = strtoull(getenv("SD_TEST_SEED"), NULL, 10);
    printf("seed %llu (SD_TEST_SEED to repeat)\n", (unsigned long long)seed);
    rng_state = seed | 1;
    return seed;
}

double sd_test_urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

float sd_test_nrand(void)
{
    double u = sd_test_urand() + 1e-12, v = sd_test_urand();
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

int sd_test_finish(const char *name)
{
    if (sd_test_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, sd_test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}
