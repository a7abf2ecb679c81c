// bench_quant.c: speed of the quantized matmul ops (engine/quant.c) per GGUF weight type, AVX2 vs scalar.
// Each case is first validated (every output row against a float64 dot of the dequantized row with the
// dequantized 8-bit activations), then timed after a warm-up. Prints µs per call, weight GB/s and GFLOP/s.
// Run: build/tools/bench_quant [rows cols tokens reps]   (default 4096 4096 1 20; OMP_NUM_THREADS applies)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "quant.h"

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Random valid weights: random quant bytes, small positive f16 scales (offsets per the block layout).
static void fill(enum sd_qtype t, uint8_t *w, size_t bytes)
{
    size_t bb = sd_qtype_block_bytes(t);
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd();
    int offs[2] = {-1, -1};
    if (t == SD_Q_Q8_0 || t == SD_Q_Q4_0)
        offs[0] = 0;
    else if (t == SD_Q_Q4_K || t == SD_Q_Q5_K)
        offs[0] = 0, offs[1] = 2;
    else if (t == SD_Q_Q6_K)
        offs[0] = 208;
    for (size_t b = 0; b < bytes; b += bb) {
        if (t == SD_Q_F32 || t == SD_Q_F16 || t == SD_Q_BF16) {
            float v = (float)((double)(rnd() % 2001) / 1000.0 - 1.0);
            if (t == SD_Q_F32)
                memcpy(w + b, &v, 4);
            else {
                uint16_t h = t == SD_Q_F16 ? sd_f32_to_f16(v) : sd_f32_to_bf16(v);
                memcpy(w + b, &h, 2);
            }
        }
        for (int k = 0; k < 2; k++)
            if (offs[k] >= 0) {
                uint16_t h = sd_f32_to_f16(0.001f + 0.01f * (float)(rnd() % 1000) / 1000.0f);
                memcpy(w + b + offs[k], &h, 2);
            }
    }
}

int main(int argc, char **argv)
{
    long rows = argc > 1 ? atol(argv[1]) : 4096, cols = argc > 2 ? atol(argv[2]) : 4096;
    long ntok = argc > 3 ? atol(argv[3]) : 1, reps = argc > 4 ? atol(argv[4]) : 20;
    if (rows <= 0 || cols <= 0 || cols % 256 || ntok <= 0 || reps <= 0) {
        fprintf(stderr, "usage: bench_quant [rows cols(multiple of 256) tokens reps]\n");
        return 2;
    }
    const enum sd_qtype types[] = {SD_Q_F32, SD_Q_F16, SD_Q_BF16, SD_Q_Q8_0, SD_Q_Q4_0, SD_Q_Q4_K, SD_Q_Q5_K, SD_Q_Q6_K};
    float *x = malloc(sizeof(float) * (size_t)(cols * ntok)), *y = malloc(sizeof(float) * (size_t)(rows * ntok));
    float *wf = malloc(sizeof(float) * (size_t)cols);
    for (long i = 0; i < cols * ntok; i++)
        x[i] = (float)((double)(rnd() % 2001) / 1000.0 - 1.0);
    printf("matmul %ld x %ld, %ld token(s), %ld reps\n%-6s %-7s %10s %10s %10s  %s\n", rows, cols, ntok, reps, "type",
           "impl", "us/call", "GB/s(w)", "GFLOP/s", "validated");
    int bad = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        enum sd_qtype t = types[ti];
        size_t rb = sd_qtype_row_bytes(t, cols), bytes = rb * (size_t)rows;
        uint8_t *w = malloc(bytes);
        fill(t, w, bytes);
        size_t ab = sd_quant_act_bytes(t, cols);
        void *xq = ab ? malloc(ab) : NULL;
        for (int scalar = 0; scalar < 2; scalar++) {
            sd_quant_force_scalar(scalar);
            struct sd_err err = {0};
            if (sd_quant_matmul(t, w, rows, cols, x, ntok, y, &err) != SD_OK) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            // validate every row of token 0 (dequantized activations as the kernel sees them)
            if (xq)
                sd_quant_act(t, x, cols, xq);
            double worst = 0;
            for (long r = 0; r < rows; r++) {
                sd_dequantize(t, w + (size_t)r * rb, wf, cols);
                double s = 0, mag = 0;
                for (long k = 0; k < cols; k++) {
                    double xk = x[k];
                    if (t == SD_Q_Q8_0 || t == SD_Q_Q4_0)
                        xk = (double)((struct sd_q8_block *)xq)[k / 32].d * ((struct sd_q8_block *)xq)[k / 32].qs[k % 32];
                    else if (xq)
                        xk = (double)((struct sd_q8k_block *)xq)[k / 256].d *
                             ((struct sd_q8k_block *)xq)[k / 256].qs[k % 256];
                    s += (double)wf[k] * xk;
                    mag += fabs((double)wf[k] * xk);
                }
                worst = fmax(worst, fabs(y[r] - s) / (mag + 1e-30));
            }
            int ok = worst <= 2e-6;
            bad += !ok;
            double t0 = now();
            sd_quant_matmul(t, w, rows, cols, x, ntok, y, &err); // warm-up
            t0 = now();
            for (long i = 0; i < reps; i++)
                sd_quant_matmul(t, w, rows, cols, x, ntok, y, &err);
            double us = (now() - t0) / (double)reps * 1e6;
            printf("%-6s %-7s %10.1f %10.2f %10.2f  %s (max rel err %.1e)\n", sd_qtype_name(t),
                   scalar ? "scalar" : sd_quant_impl(), us, (double)bytes / us * 1e-3,
                   2.0 * (double)rows * (double)cols * (double)ntok / us * 1e-3, ok ? "yes" : "NO", worst);
        }
        sd_quant_force_scalar(0);
        free(w);
        free(xq);
    }
    free(x);
    free(y);
    free(wf);
    return bad ? 1 : 0;
}
