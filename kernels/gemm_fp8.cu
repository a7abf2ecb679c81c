// gemm_fp8.cu: FP8 x FP8 GEMMs with DeepSeek's block scales, the forward pass's fp8_act path. Owns the activation
// quantization in 1x128 blocks with power-of-two scales (bit-identical to engine/dtype.c sd_fp8_act_quant), its
// f32 round trip for the kernels that take f32 inputs, and the GEMM through cuBLASLt's block-scaled FP8 modes on
// sm_90 (weights BLK128x128_32F as released, activations VEC128_32F; e4m3 products, fp32 accumulation), with the
// algorithm cuBLASLt picks cached per shape.
//
// Operands as cuBLASLt (column-major) sees them: A = W [N][K] row-major = K x N with ld K, transposed; B = the
// quantized input [T][K] = K x T with ld K; C = D = y [T][ldy] = N x T with ld ldy. So D = A^T B is y^T.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_cuda_common.cuh"

#define SD_CHECK_LT(expr)                                                                                              \
    do {                                                                                                               \
        cublasStatus_t sd_l_ = (expr);                                                                                 \
        if (sd_l_ != CUBLAS_STATUS_SUCCESS) {                                                                          \
            sd_cuda_set_error(#expr, __FILE__, __LINE__, cublasLtGetStatusString(sd_l_));                              \
            return SD_ERR_BACKEND;                                                                                     \
        }                                                                                                              \
    } while (0)

#define ACT_BLOCK 128
#define WS_BYTES ((size_t)32 << 20) // cuBLASLt workspace
#define ALGO_CACHE 1024             // shapes remembered (a power of two)
#define OUT_F32 1
#define OUT_BF16 2

namespace
{
struct algo_entry {
    int used, ok; // ok = 0: cuBLASLt had no algorithm for this shape
    int n, k, t, ldy, out, act_layout, w_layout;
    int tp; // the token count cuBLASLt runs (t rounded up where it takes no other)
    cublasLtMatmulAlgo_t algo;
};
} // namespace

struct sd_cuda_gemm_fp8 {
    cublasLtHandle_t lt;
    void *ws;
    uint8_t *xq; // quantized input [T][K]
    float *xs;   // its scales
    float *wsc;  // the weight scales in another order (layouts other than NATIVE)
    void *yb;    // the product before it is added into y (bf16 output, or rows padded for cuBLASLt)
    size_t xq_cap, xs_cap, wsc_cap, yb_cap;
    int out;        // output type cuBLASLt accepted: 0 not known yet, OUT_F32, OUT_BF16
    int act_layout; // this library's scale orders (SD_CUDA_FP8_SCALE_ORDER may override them for a probe)
    int w_layout;
    long calls;
    algo_entry cache[ALGO_CACHE];
};

// ---------------------------------------------------------------- kernels

// One warp per (row, 128-block): 4 values per lane. srows: the row stride of the COLS scale order (>= rows). amax over
// the block, s = 2^ceil(log2(max(amax, 1e-4) / 448)), q = e4m3(x / s) (the division exact: s is a power of two). With
// rt, writes q * s as f32 instead of q and s.
__global__ void k_act_quant(const float *x, int ldx, int rows, int cols, uint8_t *q, float *sc, int layout, float *rt,
                            int ldr, int srows)
{
    const int nb = (cols + ACT_BLOCK - 1) / ACT_BLOCK;
    const long g = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (g >= (long)rows * nb)
        return;
    const int lane = threadIdx.x & 31, r = (int)(g / nb), b = (int)(g % nb), c0 = b * ACT_BLOCK + lane * 4;
    const float *xr = x + (size_t)r * ldx;
    float v[4], amax = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        v[j] = c0 + j < cols ? xr[c0 + j] : 0.0f;
        amax = fmaxf(amax, fabsf(v[j]));
    }
    amax = sd_warp_max(amax);
    if (amax < 1e-4f)
        amax = 1e-4f;
    const float s = sd_pow2_ceil_d(__fdiv_rn(amax, 448.0f)), inv = __fdiv_rn(1.0f, s);
    if (rt) {
        float *o = rt + (size_t)r * ldr;
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (c0 + j < cols) {
                __half_raw h =
                    __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)sd_f32_to_e4m3_d(__fmul_rn(v[j], inv)), __NV_E4M3);
                o[c0 + j] = __fmul_rn(__half2float(*reinterpret_cast<__half *>(&h)), s);
            }
        return;
    }
    uint8_t *o = q + (size_t)r * cols;
#pragma unroll
    for (int j = 0; j < 4; j++)
        if (c0 + j < cols)
            o[c0 + j] = sd_f32_to_e4m3_d(__fmul_rn(v[j], inv));
    if (lane == 0)
        sc[layout == SD_CUDA_ACT_SCALE_ROWS ? (size_t)r * nb + b : (size_t)b * srows + r] = s;
}

// Weight block scales [nbr][nbc] into the order `layout` (T: [nbc][nbr]; T4: [nbc][ld], ld = nbr rounded up to 4;
// NATIVE4: [nbr][ld], ld = nbc rounded up to 4).
__global__ void k_wscale_order(const float *src, int nbr, int nbc, float *dst, int layout)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nbr * nbc)
        return;
    const int r = i / nbc, c = i % nbc;
    if (layout == SD_CUDA_W_SCALE_NATIVE4) {
        dst[(size_t)r * ((nbc + 3) / 4 * 4) + c] = src[i];
        return;
    }
    const int ld = layout == SD_CUDA_W_SCALE_T4 ? (nbr + 3) / 4 * 4 : nbr;
    dst[(size_t)c * ld + r] = src[i];
}

static __device__ __forceinline__ float to_f32(float v)
{
    return v;
}
static __device__ __forceinline__ float to_f32(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

// y[t][n] = yb[t][n] + beta * y[t][n] for the first t rows of yb [..][n] (beta == 0: y not read).
template <typename Y> __global__ void k_add_rows(float *y, int ldy, const Y *yb, int n, int t, float beta)
{
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * t)
        return;
    const size_t r = i / n, c = i % n;
    float v = to_f32(yb[i]);
    y[r * ldy + c] = beta == 0.0f ? v : __fadd_rn(v, __fmul_rn(beta, y[r * ldy + c]));
}

// ---------------------------------------------------------------- launchers

static enum sd_status act_launch(const float *x, int ldx, int rows, int cols, uint8_t *q, float *sc, int layout,
                                 float *rt, int ldr, cudaStream_t st, int srows = 0)
{
    const long warps = (long)rows * ((cols + ACT_BLOCK - 1) / ACT_BLOCK);
    if (warps <= 0)
        return SD_OK;
    k_act_quant<<<(unsigned)((warps + 7) / 8), 256, 0, st>>>(x, ldx, rows, cols, q, sc, layout, rt, ldr,
                                                             srows > rows ? srows : rows);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

__global__ void k_fill(float *p, size_t n, float v)
{
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        p[i] = v;
}

// Quantize rows [0, T) for a GEMM over tp >= T tokens: the scales of rows [T, tp) are 1 (their values are zeros).
static enum sd_status act_launch_padded(const float *x, int ldx, int T, int tp, int K, uint8_t *q, float *sc,
                                        int layout, cudaStream_t st)
{
    const int nb = (K + ACT_BLOCK - 1) / ACT_BLOCK;
    if (tp > T) {
        const size_t n = (size_t)tp * nb;
        k_fill<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(sc, n, 1.0f);
        SD_CHECK_LAUNCH();
    }
    return act_launch(x, ldx, T, K, q, sc, layout, NULL, 0, st, tp);
}

extern "C" enum sd_status sd_cuda_act_quant_fp8(const float *x, int ldx, int rows, int cols, uint8_t *q, float *scales,
                                                int layout, void *stream)
{
    SD_CHECK_ARG(x && q && scales && rows >= 0 && cols > 0 && ldx >= cols);
    SD_CHECK_ARG(layout == SD_CUDA_ACT_SCALE_ROWS || layout == SD_CUDA_ACT_SCALE_COLS);
    return act_launch(x, ldx, rows, cols, q, scales, layout, NULL, 0, (cudaStream_t)stream);
}

extern "C" enum sd_status sd_cuda_act_roundtrip_fp8(const float *x, int ldx, float *out, int ldo, int rows, int cols,
                                                    void *stream)
{
    SD_CHECK_ARG(x && out && rows >= 0 && cols > 0 && ldx >= cols && ldo >= cols);
    SD_CHECK_ARG(out != x || ldo == ldx);
    return act_launch(x, ldx, rows, cols, NULL, NULL, 0, out, ldo, (cudaStream_t)stream);
}

// Device scratch of at least `need` bytes (grown, never shrunk; cudaFree synchronizes the device first).
static enum sd_status grow(void **p, size_t *cap, size_t need)
{
    if (*cap >= need)
        return SD_OK;
    if (*p)
        SD_CHECK_CUDA(cudaFree(*p));
    *p = NULL, *cap = 0;
    SD_CHECK_CUDA(cudaMalloc(p, need));
    *cap = need;
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_gemm_fp8_new(struct sd_cuda_gemm_fp8 **out)
{
    SD_CHECK_ARG(out);
    *out = NULL;
    struct sd_cuda_gemm_fp8 *g = (struct sd_cuda_gemm_fp8 *)calloc(1, sizeof *g);
    if (!g)
        return SD_ERR_NOMEM;
    // Measured on the H200 (CUDA 13, test_cuda_ops's probe): activation scales [K blocks][tokens], weight scales in
    // their stored order with rows padded to a multiple of 4 (16 bytes).
    g->act_layout = SD_CUDA_ACT_SCALE_COLS, g->w_layout = SD_CUDA_W_SCALE_NATIVE4;
    // Debugging knob for a device whose cuBLASLt wants other orders than these: "ACT,W" (the numbers above).
    const char *o = getenv("SD_CUDA_FP8_SCALE_ORDER");
    int a = 0, w = 0;
    if (o && sscanf(o, "%d,%d", &a, &w) == 2 && a >= 1 && a <= 2 && w >= 1 && w <= 4)
        g->act_layout = a, g->w_layout = w;
    cublasStatus_t ls = cublasLtCreate(&g->lt);
    if (ls != CUBLAS_STATUS_SUCCESS) {
        sd_cuda_set_error("cublasLtCreate", __FILE__, __LINE__, cublasLtGetStatusString(ls));
        free(g);
        return SD_ERR_BACKEND;
    }
    if (cudaMalloc(&g->ws, WS_BYTES) != cudaSuccess) {
        sd_cuda_set_error("cudaMalloc(workspace)", __FILE__, __LINE__, "out of device memory");
        cublasLtDestroy(g->lt);
        free(g);
        return SD_ERR_NOMEM;
    }
    *out = g;
    return SD_OK;
}

extern "C" void sd_cuda_gemm_fp8_free(struct sd_cuda_gemm_fp8 *g)
{
    if (!g)
        return;
    cudaFree(g->ws);
    cudaFree(g->xq);
    cudaFree(g->xs);
    cudaFree(g->wsc);
    cudaFree(g->yb);
    cublasLtDestroy(g->lt);
    free(g);
}

extern "C" void sd_cuda_gemm_fp8_stats(const struct sd_cuda_gemm_fp8 *g, long *calls, int *out_mode)
{
    if (calls)
        *calls = g ? g->calls : 0;
    if (out_mode)
        *out_mode = g ? g->out : 0;
}

namespace
{
// The descriptor objects of one call, destroyed on every path.
struct lt_call {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t a = NULL, b = NULL, c = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    ~lt_call()
    {
        if (pref)
            cublasLtMatmulPreferenceDestroy(pref);
        if (c)
            cublasLtMatrixLayoutDestroy(c);
        if (b)
            cublasLtMatrixLayoutDestroy(b);
        if (a)
            cublasLtMatrixLayoutDestroy(a);
        if (op)
            cublasLtMatmulDescDestroy(op);
    }
};
} // namespace

// Descriptors for tp tokens with output type `out`; direct: C = D = y (ld ldy), else the scratch [tp][N].
static enum sd_status describe(lt_call &lc, const struct sd_cuda_gemm_fp8_params *p, int tp, int out, int direct,
                               const void *ascale, const void *bscale)
{
    const int N = p->w.rows, K = p->w.cols;
    SD_CHECK_LT(cublasLtMatmulDescCreate(&lc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const int32_t amode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, bmode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    SD_CHECK_LT(cublasLtMatmulDescSetAttribute(lc.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    SD_CHECK_LT(cublasLtMatmulDescSetAttribute(lc.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    SD_CHECK_LT(cublasLtMatmulDescSetAttribute(lc.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &amode, sizeof amode));
    SD_CHECK_LT(cublasLtMatmulDescSetAttribute(lc.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bmode, sizeof bmode));
    SD_CHECK_LT(cublasLtMatmulDescSetAttribute(lc.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ascale, sizeof ascale));
    SD_CHECK_LT(cublasLtMatmulDescSetAttribute(lc.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &bscale, sizeof bscale));
    SD_CHECK_LT(cublasLtMatrixLayoutCreate(&lc.a, CUDA_R_8F_E4M3, K, N, K));
    SD_CHECK_LT(cublasLtMatrixLayoutCreate(&lc.b, CUDA_R_8F_E4M3, K, tp, K));
    SD_CHECK_LT(
        cublasLtMatrixLayoutCreate(&lc.c, out == OUT_F32 ? CUDA_R_32F : CUDA_R_16BF, N, tp, direct ? p->ldy : N));
    SD_CHECK_LT(cublasLtMatmulPreferenceCreate(&lc.pref));
    const size_t wsb = WS_BYTES;
    SD_CHECK_LT(
        cublasLtMatmulPreferenceSetAttribute(lc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    return SD_OK;
}

// The cached entry for this shape (found, or a fresh slot: used == 0).
static algo_entry *lookup(struct sd_cuda_gemm_fp8 *g, int n, int k, int t, int ldy, int al, int wl)
{
    unsigned h = (unsigned)n * 2654435761u ^ (unsigned)k * 40503u ^ (unsigned)t * 97u ^ (unsigned)ldy * 13u ^
                 (unsigned)(al * 3 + wl);
    for (int i = 0; i < ALGO_CACHE; i++) {
        algo_entry *e = &g->cache[(h + i) & (ALGO_CACHE - 1)];
        if (!e->used ||
            (e->n == n && e->k == k && e->t == t && e->ldy == ldy && e->act_layout == al && e->w_layout == wl))
            return e;
    }
    algo_entry *e = &g->cache[h & (ALGO_CACHE - 1)]; // full: reuse the home slot
    e->used = 0;
    return e;
}

// Token counts cuBLASLt's block-scaled kernels are asked for, in order: T itself, then T rounded up to 16, 32, 128
// (on the H200 with CUDA 13 they offered no algorithm for token counts that are not a multiple of some such step:
// 5, 17, 33, 70 and 130 had none, 96 and 256 had one). The padded rows are zeros.
static int pad_candidates(int T, int *c)
{
    int n = 0;
    const int steps[4] = {1, 16, 32, 128};
    for (int i = 0; i < 4; i++) {
        int tp = (T + steps[i] - 1) / steps[i] * steps[i];
        if (n == 0 || c[n - 1] != tp)
            c[n++] = tp;
    }
    return n;
}

// Find (and cache) an algorithm for this shape: the token count, the output type.
static enum sd_status choose(struct sd_cuda_gemm_fp8 *g, const struct sd_cuda_gemm_fp8_params *p, int al, int wl,
                             const void *wscale, algo_entry **out_e)
{
    const int N = p->w.rows, K = p->w.cols, T = p->n_tok;
    algo_entry *e = lookup(g, N, K, T, p->ldy, al, wl);
    *out_e = e;
    if (e->used)
        return e->ok ? SD_OK : SD_ERR_UNSUPPORTED;
    int cand[4], nc = pad_candidates(T, cand);
    const int outs[2] = {g->out ? g->out : OUT_F32, OUT_BF16};
    for (int oi = 0; oi < (g->out ? 1 : 2); oi++) {
        for (int ci = 0; ci < nc; ci++) {
            lt_call lc;
            const int tp = cand[ci], direct = outs[oi] == OUT_F32 && tp == T;
            enum sd_status s = describe(lc, p, tp, outs[oi], direct, wscale, g->xs);
            if (s != SD_OK)
                return s;
            cublasLtMatmulHeuristicResult_t hr;
            int found = 0;
            memset(&hr, 0, sizeof hr);
            if (cublasLtMatmulAlgoGetHeuristic(g->lt, lc.op, lc.a, lc.b, lc.c, lc.c, lc.pref, 1, &hr, &found) ==
                    CUBLAS_STATUS_SUCCESS &&
                found > 0) {
                e->used = 1, e->ok = 1, e->n = N, e->k = K, e->t = T, e->ldy = p->ldy, e->act_layout = al;
                e->w_layout = wl, e->tp = tp, e->out = outs[oi], e->algo = hr.algo;
                if (!g->out)
                    g->out = outs[oi];
                return SD_OK;
            }
        }
    }
    e->used = 1, e->ok = 0, e->n = N, e->k = K, e->t = T, e->ldy = p->ldy, e->act_layout = al, e->w_layout = wl;
    sd_cuda_set_error("cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__,
                      "no FP8 block-scaled algorithm for this shape");
    return SD_ERR_UNSUPPORTED;
}

extern "C" enum sd_status sd_cuda_gemm_fp8(struct sd_cuda_gemm_fp8 *g, const struct sd_cuda_gemm_fp8_params *p)
{
    SD_CHECK_ARG(g && p && p->w.q && p->w.scale && p->x && p->y && p->n_tok >= 0);
    const int N = p->w.rows, K = p->w.cols, T = p->n_tok;
    SD_CHECK_ARG(N > 0 && K > 0 && p->ldx >= K && p->ldy >= N);
    SD_CHECK_SUPPORTED(p->w.block == ACT_BLOCK && K % 16 == 0 && p->ldy % 4 == 0);
    if (T == 0)
        return SD_OK;
    const int al = p->act_layout ? p->act_layout : g->act_layout, wl = p->w_layout ? p->w_layout : g->w_layout;
    SD_CHECK_ARG(al >= 1 && al <= 2 && wl >= 1 && wl <= 4);
    cudaStream_t st = (cudaStream_t)p->stream;
    const int nbk = (K + ACT_BLOCK - 1) / ACT_BLOCK, nbn = (N + ACT_BLOCK - 1) / ACT_BLOCK;

    // The weight scales in the order handed to cuBLASLt (the pointer is part of the descriptor the heuristic sees).
    const float *wscale = p->w.scale;
    if (wl != SD_CUDA_W_SCALE_NATIVE && !(wl == SD_CUDA_W_SCALE_NATIVE4 && nbk % 4 == 0)) {
        const size_t need = (size_t)((nbk + 3) / 4 * 4) * ((nbn + 3) / 4 * 4) * sizeof(float);
        if (grow((void **)&g->wsc, &g->wsc_cap, need) != SD_OK)
            return SD_ERR_BACKEND;
        SD_CHECK_CUDA(cudaMemsetAsync(g->wsc, 0, need, st));
        k_wscale_order<<<(nbn * nbk + 255) / 256, 256, 0, st>>>(p->w.scale, nbn, nbk, g->wsc, wl);
        SD_CHECK_LAUNCH();
        wscale = g->wsc;
    }
    const int tmax = (T + 127) / 128 * 128; // the largest padded count a shape may use
    if (grow((void **)&g->xq, &g->xq_cap, (size_t)tmax * K) != SD_OK ||
        grow((void **)&g->xs, &g->xs_cap, (size_t)tmax * nbk * sizeof(float)) != SD_OK)
        return SD_ERR_BACKEND;
    algo_entry *e = NULL;
    enum sd_status s = choose(g, p, al, wl, wscale, &e);
    if (s != SD_OK)
        return s;
    const int tp = e->tp, out = e->out, direct = out == OUT_F32 && tp == T;
    if (tp > T) { // zero rows after the input's, scale 1 (their products are zeros, never read)
        SD_CHECK_CUDA(cudaMemsetAsync(g->xq + (size_t)T * K, 0, (size_t)(tp - T) * K, st));
    }
    // The scales of a padded count: [nbk][tp] (COLS) or [tp][nbk] (ROWS); the quantization writes rows [0, T)
    // with the row count tp so the COLS layout's stride is tp.
    s = act_launch_padded(p->x, p->ldx, T, tp, K, g->xq, g->xs, al, st);
    if (s != SD_OK)
        return s;
    lt_call lc;
    s = describe(lc, p, tp, out, direct, wscale, g->xs);
    if (s != SD_OK)
        return s;
    const float one = 1.0f, zero = 0.0f;
    if (direct) {
        SD_CHECK_LT(cublasLtMatmul(g->lt, lc.op, &one, p->w.q, lc.a, g->xq, lc.b, &p->beta, p->y, lc.c, p->y, lc.c,
                                   &e->algo, g->ws, WS_BYTES, st));
    } else {
        const size_t n = (size_t)N * tp, esz = out == OUT_F32 ? sizeof(float) : sizeof(__nv_bfloat16);
        if (grow(&g->yb, &g->yb_cap, n * esz) != SD_OK)
            return SD_ERR_BACKEND;
        SD_CHECK_LT(cublasLtMatmul(g->lt, lc.op, &one, p->w.q, lc.a, g->xq, lc.b, &zero, g->yb, lc.c, g->yb, lc.c,
                                   &e->algo, g->ws, WS_BYTES, st));
        const size_t m = (size_t)N * T;
        if (out == OUT_F32)
            k_add_rows<<<(unsigned)((m + 255) / 256), 256, 0, st>>>(p->y, p->ldy, (const float *)g->yb, N, T, p->beta);
        else
            k_add_rows<<<(unsigned)((m + 255) / 256), 256, 0, st>>>(p->y, p->ldy, (const __nv_bfloat16 *)g->yb, N, T,
                                                                    p->beta);
        SD_CHECK_LAUNCH();
    }
    g->calls++;
    return SD_OK;
}
