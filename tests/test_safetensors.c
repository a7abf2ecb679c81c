// test_safetensors.c: the safetensors reader against files written here by a tiny writer:
// per-dtype round trips, a sharded directory with index.json, FP8 block dequant against a
// double-precision reference, one malformed file per validation rule (status + message naming
// the file/tensor), and a seeded mutation fuzz of sd_safetensors_parse (SD_FUZZ_SEED overrides the time seed).
#include "safetensors.h"
#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];

static uint64_t rng_state;
static uint64_t rng_next(void) // splitmix64
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint32_t rng_below(uint32_t n)
{
    return (uint32_t)(rng_next() % n);
}

// ---- writer ----

struct wt {
    const char *name;
    const char *dtype;
    int n_dims;
    int64_t shape[4];
    const void *data;
    size_t n_bytes;
};

struct buf {
    uint8_t *p;
    size_t len, cap;
};

static void buf_put(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_put(b, tmp, (size_t)n);
}

static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (uint8_t)(v >> (8 * k));
}

// Builds a file image from a raw JSON header (padded with spaces to 8 bytes) and a data section.
static struct buf image_raw(const char *json, const void *data, size_t data_len)
{
    struct buf b = {0};
    size_t jl = strlen(json), pad = (8 - jl % 8) % 8;
    uint8_t len8[8];
    put_u64le(len8, jl + pad);
    buf_put(&b, len8, 8);
    buf_put(&b, json, jl);
    for (size_t i = 0; i < pad; i++)
        buf_put(&b, " ", 1);
    if (data_len)
        buf_put(&b, data, data_len);
    return b;
}

// Builds a well-formed image: tensors laid out back to back in the given order.
static struct buf image_build(const struct wt *t, int n)
{
    struct buf h = {0}, d = {0};
    buf_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        buf_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int k = 0; k < t[i].n_dims; k++)
            buf_printf(&h, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
        buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", d.len, d.len + t[i].n_bytes);
        if (t[i].n_bytes)
            buf_put(&d, t[i].data, t[i].n_bytes);
    }
    buf_put(&h, "}", 2); // with NUL
    struct buf b = image_raw((const char *)h.p, d.p, d.len);
    free(h.p);
    free(d.p);
    return b;
}

static char *tmp_path(const char *name)
{
    static char p[8][512];
    static int k;
    char *s = p[k++ % 8];
    snprintf(s, 512, "%s/%s", tmpdir, name);
    return s;
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void write_text(const char *path, const char *s)
{
    write_file(path, s, strlen(s));
}

// ---- round trip ----

static void test_roundtrip(void)
{
    enum { N = 37 };
    uint8_t u8[N + 0], e4[N];
    uint16_t bf[N], hf[N];
    float f32[N];
    double f64[N];
    int32_t i32[N];
    int64_t i64[N];
    uint8_t raw_bf[2 * N], raw_hf[2 * N], raw_f32[4 * N], raw_f64[8 * N], raw_i32[4 * N], raw_i64[8 * N];
    for (int i = 0; i < N; i++) {
        u8[i] = (uint8_t)rng_below(256);
        e4[i] = (uint8_t)rng_below(256);
        bf[i] = (uint16_t)rng_below(65536);
        hf[i] = (uint16_t)rng_below(65536);
        uint32_t fb = (uint32_t)rng_next();
        memcpy(&f32[i], &fb, 4);
        f64[i] = ((double)rng_next() / 18446744073709551616.0 - 0.5) * 1e6;
        i32[i] = (int32_t)rng_next();
        i64[i] = (int64_t)rng_next();
        for (int k = 0; k < 2; k++) {
            raw_bf[2 * i + k] = (uint8_t)(bf[i] >> (8 * k));
            raw_hf[2 * i + k] = (uint8_t)(hf[i] >> (8 * k));
        }
        uint64_t d64;
        memcpy(&d64, &f64[i], 8);
        for (int k = 0; k < 4; k++) {
            raw_f32[4 * i + k] = (uint8_t)(fb >> (8 * k));
            raw_i32[4 * i + k] = (uint8_t)((uint32_t)i32[i] >> (8 * k));
        }
        for (int k = 0; k < 8; k++) {
            raw_f64[8 * i + k] = (uint8_t)(d64 >> (8 * k));
            raw_i64[8 * i + k] = (uint8_t)((uint64_t)i64[i] >> (8 * k));
        }
    }
    // u8 first with an odd size, so every later tensor sits at an unaligned address
    struct wt t[] = {
        {"u8", "U8", 1, {N}, u8, N},
        {"e4m3", "F8_E4M3", 1, {N}, e4, N},
        {"bf16", "BF16", 1, {N}, raw_bf, 2 * N},
        {"f16", "F16", 1, {N}, raw_hf, 2 * N},
        {"f32", "F32", 1, {N}, raw_f32, 4 * N},
        {"f64", "F64", 1, {N}, raw_f64, 8 * N},
        {"i32", "I32", 1, {N}, raw_i32, 4 * N},
        {"i64", "I64", 1, {N}, raw_i64, 8 * N},
        {"scalar", "F32", 0, {0}, raw_f32, 4},
        {"empty", "F32", 2, {0, 5}, NULL, 0},
        {"model.layers.0.f4d", "BF16", 4, {1, 37, 1, 1}, raw_bf, 2 * N},
    };
    int nt = (int)(sizeof t / sizeof t[0]);
    struct buf img = image_build(t, nt);
    const char *path = tmp_path("roundtrip.safetensors");
    write_file(path, img.p, img.len);
    free(img.p);

    struct sd_err err;
    struct sd_tensor_set *set = NULL;
    enum sd_status st = sd_tensor_set_open_file(path, &set, &err);
    CHECK_MSG(st == SD_OK, "open: %s", err.msg);
    if (st != SD_OK)
        return;
    CHECK(sd_tensor_set_count(set) == (size_t)nt);
    float out[N];
    for (int i = 0; i < nt; i++) {
        const struct sd_tensor_info *ti = sd_tensor_set_find(set, t[i].name);
        CHECK_MSG(ti != NULL, "tensor %s not found", t[i].name);
        if (!ti)
            continue;
        CHECK(strcmp(ti->name, t[i].name) == 0);
        CHECK(strcmp(ti->file, path) == 0);
        CHECK(strcmp(sd_dtype_name(ti->dtype), t[i].dtype) == 0);
        CHECK(ti->n_dims == t[i].n_dims);
        int64_t ne = 1;
        for (int k = 0; k < t[i].n_dims; k++) {
            CHECK(ti->shape[k] == t[i].shape[k]);
            ne *= t[i].shape[k];
        }
        CHECK(ti->n_elems == ne);
        CHECK(ti->n_bytes == t[i].n_bytes);
        if (t[i].n_bytes)
            CHECK_MSG(memcmp(ti->data, t[i].data, t[i].n_bytes) == 0, "bytes of %s differ", t[i].name);
    }
    CHECK(sd_tensor_set_find(set, "nope") == NULL);
    for (size_t i = 1; i < sd_tensor_set_count(set); i++)
        CHECK(strcmp(sd_tensor_set_at(set, i - 1)->name, sd_tensor_set_at(set, i)->name) < 0);
    CHECK(sd_tensor_set_at(set, (size_t)nt) == NULL);

    // values through sd_convert_to_f32 equal the written ones (bitwise, NaNs compared as NaN)
#define SAME(a, b) ((isnan(a) && isnan(b)) || (memcmp(&(a), &(b), sizeof(float)) == 0))
    const struct sd_tensor_info *ti;
    ti = sd_tensor_set_find(set, "e4m3");
    CHECK(sd_convert_to_f32(ti->dtype, ti->data, out, N) == SD_OK);
    for (int i = 0; i < N; i++) {
        float want = sd_e4m3_to_f32(e4[i]);
        CHECK_MSG(SAME(out[i], want), "e4m3[%d]", i);
    }
    ti = sd_tensor_set_find(set, "bf16");
    CHECK(sd_convert_to_f32(ti->dtype, ti->data, out, N) == SD_OK);
    for (int i = 0; i < N; i++) {
        float want = sd_bf16_to_f32(bf[i]);
        CHECK_MSG(SAME(out[i], want), "bf16[%d]", i);
    }
    ti = sd_tensor_set_find(set, "f16");
    CHECK(sd_convert_to_f32(ti->dtype, ti->data, out, N) == SD_OK);
    for (int i = 0; i < N; i++) {
        float want = sd_f16_to_f32(hf[i]);
        CHECK_MSG(SAME(out[i], want), "f16[%d]", i);
    }
    ti = sd_tensor_set_find(set, "f32");
    CHECK(sd_convert_to_f32(ti->dtype, ti->data, out, N) == SD_OK);
    for (int i = 0; i < N; i++)
        CHECK_MSG(memcmp(&out[i], &f32[i], 4) == 0, "f32[%d]", i);
    ti = sd_tensor_set_find(set, "f64");
    CHECK(sd_convert_to_f32(ti->dtype, ti->data, out, N) == SD_OK);
    for (int i = 0; i < N; i++)
        CHECK_MSG(out[i] == (float)f64[i], "f64[%d]", i);
    ti = sd_tensor_set_find(set, "i32");
    CHECK(sd_convert_to_f32(ti->dtype, ti->data, out, N) == SD_ERR_UNSUPPORTED);
    ti = sd_tensor_set_find(set, "scalar");
    CHECK(ti->n_elems == 1 && ti->n_bytes == 4);
#undef SAME
    sd_tensor_set_free(set);
}

// ---- sharded directory ----

static void test_sharded(void)
{
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1, -2, -3}, c[2] = {7, 8};
    struct wt s1[] = {{"model.a", "F32", 2, {2, 3}, a, sizeof a}, {"model.b", "F32", 1, {3}, b, sizeof b}};
    struct wt s2[] = {{"model.c", "F32", 1, {2}, c, sizeof c}, {"extra.not_in_map", "F32", 1, {3}, b, sizeof b}};
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    mkdir(dir, 0700);
    struct buf i1 = image_build(s1, 2), i2 = image_build(s2, 2);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_file(p, i1.p, i1.len);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_file(p, i2.p, i2.len);
    free(i1.p);
    free(i2.p);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"metadata\":{\"total_size\":44},\"weight_map\":{"
                  "\"model.a\":\"model-00001-of-00002.safetensors\","
                  "\"model.c\":\"model-00002-of-00002.safetensors\","
                  "\"model.b\":\"model-00001-of-00002.safetensors\"}}");
    struct sd_err err;
    struct sd_tensor_set *set = NULL;
    enum sd_status st = sd_tensor_set_open_dir(dir, &set, &err);
    CHECK_MSG(st == SD_OK, "open_dir: %s", err.msg);
    if (st != SD_OK)
        return;
    CHECK(sd_tensor_set_count(set) == 4);
    const struct sd_tensor_info *ta = sd_tensor_set_find(set, "model.a");
    const struct sd_tensor_info *tc = sd_tensor_set_find(set, "model.c");
    CHECK(ta && strstr(ta->file, "model-00001-of-00002.safetensors"));
    CHECK(tc && strstr(tc->file, "model-00002-of-00002.safetensors"));
    float out[6];
    if (ta && sd_convert_to_f32(ta->dtype, ta->data, out, 6) == SD_OK)
        CHECK(memcmp(out, a, sizeof a) == 0);
    if (tc && sd_convert_to_f32(tc->dtype, tc->data, out, 2) == SD_OK)
        CHECK(memcmp(out, c, sizeof c) == 0);
    sd_tensor_set_free(set);

    // a directory with model.safetensors takes the single-file path
    char d2[512];
    snprintf(d2, sizeof d2, "%s/single", tmpdir);
    mkdir(d2, 0700);
    struct buf i3 = image_build(s1, 2);
    snprintf(p, sizeof p, "%s/model.safetensors", d2);
    write_file(p, i3.p, i3.len);
    free(i3.p);
    st = sd_tensor_set_open_dir(d2, &set, &err);
    CHECK_MSG(st == SD_OK, "open_dir single: %s", err.msg);
    if (st == SD_OK) {
        CHECK(sd_tensor_set_count(set) == 2);
        sd_tensor_set_free(set);
    }
}

// ---- FP8 block dequant ----

static double e4m3_ref(uint8_t v) // direct bit formula, independent of dtype.c
{
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    if (e == 15 && m == 7)
        return NAN;
    double mag = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -mag : mag;
}

static void test_dequant(void)
{
    enum { R = 300, C = 200, B = 128, SR = 3, SC = 2 };
    uint8_t *w8 = malloc(R * C);
    float sc[SR * SC], scb[SR * SC];
    uint16_t scale_bf[SR * SC];
    for (int i = 0; i < R * C; i++)
        w8[i] = (uint8_t)rng_below(256);
    for (int i = 0; i < SR * SC; i++) {
        sc[i] = (float)exp(((double)rng_below(1u << 20) / (1u << 20) - 0.5) * 20.0);
        scale_bf[i] = sd_f32_to_bf16(sc[i]);
        scb[i] = sd_bf16_to_f32(scale_bf[i]);
    }
    float bad[2 * 2] = {1, 1, 1, 1};
    struct wt t[] = {
        {"layer.w", "F8_E4M3", 2, {R, C}, w8, R * C},
        {"layer.w_scale_inv", "F32", 2, {SR, SC}, sc, sizeof sc},
        {"layer.w_scale_bf16", "BF16", 2, {SR, SC}, scale_bf, sizeof scale_bf},
        {"layer.bad_scale", "F32", 2, {2, 2}, bad, sizeof bad},
    };
    struct buf img = image_build(t, 4);
    const char *path = tmp_path("fp8.safetensors");
    write_file(path, img.p, img.len);
    free(img.p);
    struct sd_err err;
    struct sd_tensor_set *set = NULL;
    enum sd_status st = sd_tensor_set_open_file(path, &set, &err);
    CHECK_MSG(st == SD_OK, "open: %s", err.msg);
    if (st != SD_OK) {
        free(w8);
        return;
    }
    const struct sd_tensor_info *w = sd_tensor_set_find(set, "layer.w");
    float *dst = malloc(sizeof(float) * R * C);
    for (int pass = 0; pass < 2; pass++) {
        const struct sd_tensor_info *s = sd_tensor_set_find(set, pass ? "layer.w_scale_bf16" : "layer.w_scale_inv");
        const float *sv = pass ? scb : sc;
        st = sd_dequant_fp8_block(w, s, B, dst, &err);
        CHECK_MSG(st == SD_OK, "dequant: %s", err.msg);
        int bad_n = 0;
        for (int i = 0; i < R && st == SD_OK; i++) {
            for (int j = 0; j < C; j++) {
                double ref = e4m3_ref(w8[i * C + j]) * (double)sv[(i / B) * SC + j / B];
                float got = dst[i * C + j];
                int ok = isnan(ref) ? isnan(got) : (got == (float)ref); // product is exact in double
                if (!ok && bad_n++ < 5)
                    CHECK_MSG(0, "dequant pass %d [%d,%d]: got %g want %g", pass, i, j, got, ref);
            }
        }
        CHECK(bad_n == 0);
    }
    st = sd_dequant_fp8_block(w, sd_tensor_set_find(set, "layer.bad_scale"), B, dst, &err);
    CHECK(st == SD_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "layer.bad_scale") && strstr(err.msg, "layer.w"), "msg: %s", err.msg);
    st = sd_dequant_fp8_block(sd_tensor_set_find(set, "layer.w_scale_inv"), sd_tensor_set_find(set, "layer.w_scale_inv"),
                              B, dst, &err);
    CHECK(st == SD_ERR_UNSUPPORTED);
    CHECK(sd_dequant_fp8_block(w, sd_tensor_set_find(set, "layer.w_scale_inv"), 0, dst, &err) == SD_ERR_ARG);
    free(dst);
    free(w8);
    sd_tensor_set_free(set);
}

// ---- malformed files ----

static void expect_file(const char *label, const struct buf *img, enum sd_status want, const char *must1,
                        const char *must2)
{
    char name[128];
    snprintf(name, sizeof name, "bad_%s.safetensors", label);
    const char *path = tmp_path(name);
    write_file(path, img->p, img->len);
    struct sd_err err = {0};
    struct sd_tensor_set *set = (struct sd_tensor_set *)1;
    enum sd_status st = sd_tensor_set_open_file(path, &set, &err);
    CHECK_MSG(st == want, "%s: status %s, want %s (%s)", label, sd_status_str(st), sd_status_str(want), err.msg);
    CHECK_MSG(set == NULL, "%s: out not cleared", label);
    if (st == SD_OK)
        sd_tensor_set_free(set);
    CHECK_MSG(strstr(err.msg, path), "%s: message lacks the file name: %s", label, err.msg);
    if (must1)
        CHECK_MSG(strstr(err.msg, must1), "%s: message lacks '%s': %s", label, must1, err.msg);
    if (must2)
        CHECK_MSG(strstr(err.msg, must2), "%s: message lacks '%s': %s", label, must2, err.msg);
    printf("  %-14s -> %s: %s\n", label, sd_status_str(st), err.msg);
}

static void expect_raw(const char *label, const char *json, size_t data_len, enum sd_status want, const char *m1,
                       const char *m2)
{
    uint8_t *d = calloc(1, data_len + 1);
    struct buf img = image_raw(json, d, data_len);
    expect_file(label, &img, want, m1, m2);
    free(img.p);
    free(d);
}

static void test_bad_files(void)
{
    float v[8] = {0};
    struct wt t[] = {{"first.w", "F32", 1, {4}, v, 16}, {"last.w", "F32", 1, {4}, v + 4, 16}};
    struct buf good = image_build(t, 2), img;

    img = good;
    img.len = 5;
    expect_file("truncated8", &img, SD_ERR_FORMAT, "8-byte", NULL);
    img.len = good.len - 3;
    expect_file("truncdata", &img, SD_ERR_FORMAT, "last.w", NULL);
    img.len = 8 + 10;
    expect_file("trunchdr", &img, SD_ERR_FORMAT, "header length", NULL);
    img = (struct buf){0};
    buf_put(&img, good.p, good.len);
    put_u64le(img.p, good.len);
    expect_file("hlen_big", &img, SD_ERR_FORMAT, "larger than the file", NULL);
    put_u64le(img.p, (uint64_t)1 << 40);
    expect_file("hlen_huge", &img, SD_ERR_FORMAT, "header length", NULL);
    free(img.p);
    free(good.p);

    expect_raw("past_end", "{\"w.past\":{\"dtype\":\"F32\",\"shape\":[250],\"data_offsets\":[0,1000]}}", 16,
               SD_ERR_FORMAT, "w.past", "past the data");
    expect_raw("overlap",
               "{\"ov.a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"ov.b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
               24, SD_ERR_FORMAT, "ov.a", "ov.b");
    expect_raw("mismatch", "{\"w.mis\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16,
               SD_ERR_FORMAT, "w.mis", NULL);
    expect_raw("unk_dtype", "{\"w.unk\":{\"dtype\":\"F8_E5M3X\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
               SD_ERR_UNSUPPORTED, "w.unk", "F8_E5M3X");
    expect_raw("bad_json", "{\"w.j\":{\"dtype\":\"F32\",", 4, SD_ERR_FORMAT, "JSON", NULL);
    expect_raw("not_object", "[1,2,3]", 0, SD_ERR_FORMAT, "not an object", NULL);
    expect_raw("trailing", "{} xyz", 0, SD_ERR_FORMAT, "JSON", NULL);
    expect_raw("five_dims", "{\"w.5d\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
               SD_ERR_UNSUPPORTED, "w.5d", NULL);
    expect_raw("neg_shape", "{\"w.neg\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1, SD_ERR_FORMAT,
               "w.neg", NULL);
    expect_raw("float_off", "{\"w.fl\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}", 1, SD_ERR_FORMAT,
               "w.fl", NULL);
    expect_raw("begin_gt_end", "{\"w.be\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,1]}}", 2,
               SD_ERR_FORMAT, "w.be", NULL);
    expect_raw("overflow",
               "{\"w.ovf\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 1,
               SD_ERR_FORMAT, "w.ovf", NULL);
    expect_raw("huge_off", "{\"w.hug\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551615,0]}}",
               1, SD_ERR_FORMAT, "w.hug", NULL);
    expect_raw("no_offsets", "{\"w.no\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, SD_ERR_FORMAT, "w.no", NULL);
    expect_raw("entry_str", "{\"w.str\":\"hello\"}", 0, SD_ERR_FORMAT, "w.str", NULL);

    struct sd_err err;
    struct sd_tensor_set *set = NULL;
    CHECK(sd_tensor_set_open_file(tmp_path("does_not_exist.safetensors"), &set, &err) == SD_ERR_MISSING);
    CHECK(strstr(err.msg, "does_not_exist.safetensors") != NULL);

    // index.json problems
    float a[2] = {1, 2};
    struct wt s1[] = {{"idx.a", "F32", 1, {2}, a, sizeof a}};
    struct buf i1 = image_build(s1, 1);
    char dir[512], p[600];
    const char *cases[][3] = {
        {"idx_noshard", "{\"weight_map\":{\"idx.a\":\"shard1.safetensors\",\"idx.b\":\"shard_gone.safetensors\"}}",
         "shard_gone.safetensors"},
        {"idx_notens", "{\"weight_map\":{\"idx.a\":\"shard1.safetensors\",\"idx.absent\":\"shard1.safetensors\"}}",
         "idx.absent"},
        {"idx_badjson", "{\"weight_map\":{", "index.json"},
        {"idx_traverse", "{\"weight_map\":{\"idx.a\":\"../shard1.safetensors\"}}", "idx.a"},
    };
    enum sd_status want[] = {SD_ERR_MISSING, SD_ERR_MISSING, SD_ERR_FORMAT, SD_ERR_FORMAT};
    for (int c = 0; c < 4; c++) {
        snprintf(dir, sizeof dir, "%s/%s", tmpdir, cases[c][0]);
        mkdir(dir, 0700);
        snprintf(p, sizeof p, "%s/shard1.safetensors", dir);
        write_file(p, i1.p, i1.len);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
        write_text(p, cases[c][1]);
        set = (struct sd_tensor_set *)1;
        enum sd_status st = sd_tensor_set_open_dir(dir, &set, &err);
        CHECK_MSG(st == want[c], "%s: status %s (%s)", cases[c][0], sd_status_str(st), err.msg);
        CHECK(set == NULL);
        CHECK_MSG(strstr(err.msg, cases[c][2]), "%s: message lacks '%s': %s", cases[c][0], cases[c][2], err.msg);
        printf("  %-14s -> %s: %s\n", cases[c][0], sd_status_str(st), err.msg);
    }
    // the same tensor in two shards
    snprintf(dir, sizeof dir, "%s/idx_dup", tmpdir);
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/s1.safetensors", dir);
    write_file(p, i1.p, i1.len);
    snprintf(p, sizeof p, "%s/s2.safetensors", dir);
    write_file(p, i1.p, i1.len);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"weight_map\":{\"idx.a\":\"s1.safetensors\",\"x\":\"s2.safetensors\"}}");
    CHECK(sd_tensor_set_open_dir(dir, &set, &err) == SD_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "idx.a"), "dup: %s", err.msg);
    // no model files at all
    CHECK(sd_tensor_set_open_dir(tmpdir, &set, &err) == SD_ERR_MISSING);
    free(i1.p);
}

// ---- mutation fuzz ----

static void fuzz_one(const uint8_t *base, size_t base_len, size_t hdr_end, uint8_t *work, size_t *len_out)
{
    size_t len = base_len;
    memcpy(work, base, base_len);
    static const char *garbage[] = {"{", "}", "[", "]", ",", ":", "\"", "\\u0000", "-1", "1e999", "18446744073709551616",
                                    "null", "\"dtype\"", "\"shape\":[1,2,3,4,5]", "\"data_offsets\":[0,0]", "{}{}",
                                    "\"__metadata__\"", "99999999999", "\xff\xfe", "0"};
    int n_mut = 1 + (int)rng_below(3);
    for (int m = 0; m < n_mut; m++) {
        size_t hend = hdr_end < len ? hdr_end : len;
        switch (rng_below(7)) {
        case 0: // bit flip anywhere (header length field included)
            if (len)
                work[rng_below((uint32_t)len)] ^= (uint8_t)(1u << rng_below(8));
            break;
        case 1: // random byte in the header
            if (hend > 8)
                work[8 + rng_below((uint32_t)(hend - 8))] = (uint8_t)rng_below(256);
            break;
        case 2: // digit changes in the header (targets shapes and offsets)
            for (int k = 0; k < 4 && hend > 8; k++) {
                size_t p = 8 + rng_below((uint32_t)(hend - 8));
                if (work[p] >= '0' && work[p] <= '9')
                    work[p] = (uint8_t)('0' + rng_below(10));
            }
            break;
        case 3: // truncation
            len = rng_below((uint32_t)len + 1);
            break;
        case 4: { // header length field change
            uint64_t h = 0;
            for (int k = 7; k >= 0 && len >= 8; k--)
                h = h << 8 | work[k];
            int64_t delta = (int64_t)rng_below(64) - 32;
            uint64_t nh = rng_below(4) == 0 ? rng_next() >> rng_below(64) : h + (uint64_t)delta;
            if (len >= 8)
                put_u64le(work, nh);
            break;
        }
        case 5: { // insert JSON garbage into the header (length field unchanged, or fixed up)
            const char *g = garbage[rng_below(sizeof garbage / sizeof garbage[0])];
            size_t gl = strlen(g);
            if (hend <= 8)
                break;
            size_t p = 8 + rng_below((uint32_t)(hend - 8));
            memmove(work + p + gl, work + p, len - p);
            memcpy(work + p, g, gl);
            len += gl;
            if (rng_below(2)) {
                uint64_t h = 0;
                for (int k = 7; k >= 0; k--)
                    h = h << 8 | work[k];
                put_u64le(work, h + gl);
            }
            break;
        }
        case 6: // overwrite a header span with a copy of another header span
            if (hend > 16) {
                size_t a = 8 + rng_below((uint32_t)(hend - 8)), b = 8 + rng_below((uint32_t)(hend - 8));
                size_t n = 1 + rng_below(16);
                if (a + n <= hend && b + n <= hend)
                    memmove(work + a, work + b, n);
            }
            break;
        }
    }
    *len_out = len;
}

static void fuzz_run(uint64_t seed, int n_iter, const struct buf *base, size_t hdr_end)
{
    rng_state = seed;
    size_t max_len = base->len + 4 * 64;
    uint8_t *work = malloc(max_len);
    int n_ok = 0, n_err = 0;
    for (int it = 0; it < n_iter; it++) {
        size_t len;
        fuzz_one(base->p, base->len, hdr_end, work, &len);
        // exact-size copy so an out-of-bounds read is caught by ASan/valgrind
        uint8_t *img = malloc(len ? len : 1);
        memcpy(img, work, len);
        struct sd_err err;
        struct sd_tensor_set *set = NULL;
        enum sd_status st = sd_safetensors_parse(img, len, "fuzz", &set, &err);
        if (st == SD_OK) {
            n_ok++;
            CHECK(set != NULL);
            for (size_t i = 0; set && i < sd_tensor_set_count(set); i++) {
                const struct sd_tensor_info *t = sd_tensor_set_at(set, i);
                const uint8_t *d = t->data;
                int inside = d >= img && d <= img + len && t->n_bytes <= (size_t)(img + len - d);
                CHECK_MSG(inside, "iteration %d: tensor '%s' outside the buffer", it, t->name);
                CHECK(t->n_bytes == (size_t)t->n_elems * sd_dtype_size(t->dtype));
                unsigned sum = 0;
                for (size_t k = 0; inside && k < t->n_bytes; k++)
                    sum += d[k];
                (void)sum;
            }
            sd_tensor_set_free(set);
        } else {
            n_err++;
            CHECK(set == NULL);
            CHECK_MSG(err.msg[0] != 0, "iteration %d: %s without a message", it, sd_status_str(st));
        }
        free(img);
    }
    printf("fuzz seed 0x%016llx: %d mutations, %d parsed OK, %d rejected\n", (unsigned long long)seed, n_iter, n_ok,
           n_err);
    free(work);
}

static void test_fuzz(void)
{
    uint8_t u8[5] = {1, 2, 3, 4, 5};
    float f[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[4] = {0x3F80, 0x4000, 0xC000, 0x7FC0};
    int64_t i64[2] = {-1, 1};
    struct wt t[] = {
        {"a.u8", "U8", 1, {5}, u8, 5},         {"b.f32", "F32", 2, {2, 3}, f, 24},
        {"c.bf16", "BF16", 2, {2, 2}, h, 8},   {"d.e4m3", "F8_E4M3", 3, {1, 1, 5}, u8, 5},
        {"e.i64", "I64", 1, {2}, i64, 16},     {"f.f16", "F16", 4, {1, 2, 1, 2}, h, 8},
        {"g.empty", "F32", 1, {0}, NULL, 0},
    };
    struct buf base = image_build(t, 7);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--)
        hlen = hlen << 8 | base.p[k];
    struct sd_tensor_set *set = NULL;
    struct sd_err err;
    CHECK_MSG(sd_safetensors_parse(base.p, base.len, "base", &set, &err) == SD_OK, "base: %s", err.msg);
    sd_tensor_set_free(set);

    const int n = 20000;
    fuzz_run(0x5D5AFE7E45ull, n, &base, 8 + (size_t)hlen);
    const char *env = getenv("SD_FUZZ_SEED");
    uint64_t tseed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    printf("time-based fuzz run (reproduce with SD_FUZZ_SEED=0x%llx):\n", (unsigned long long)tseed);
    fuzz_run(tseed, n, &base, 8 + (size_t)hlen);
    free(base.p);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/sd_st_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    rng_state = 12345;
    test_roundtrip();
    test_sharded();
    test_dequant();
    test_bad_files();
    test_fuzz();
    if (!getenv("SD_KEEP_TMP")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: could not remove %s\n", tmpdir);
    } else {
        printf("kept %s\n", tmpdir);
    }
    return sd_test_finish("safetensors");
}
