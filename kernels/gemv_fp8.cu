// gemv_fp8.cu: FP8 block-scaled weight matrices on the GPU (sd_cuda.h, struct sd_cuda_fp8_mat): the GEMV of
// up to SD_CUDA_GEMV_FP8_T tokens that the forward pass runs for decode with gpu_weights_fp8, and the
// dequantization to f32 or bf16 that its longer chunks run before a cuBLAS GEMM. Both dequantize each weight
// exactly as sd_dequant_fp8_block does (sd_dequant16_e4m3 in sd_cuda_common.cuh).
#include <cuda_bf16.h>

#include "sd_cuda_common.cuh"

// acc[t] += (16 dequantized weights of raw, scale sv) . x[t][16 c .. 16 c + 16) for t < T.
static __device__ __forceinline__ void gv_fma16(float *acc, uint4 raw, float sv, const float *x, int ldx, int c, int T)
{
    float w[16];
    sd_dequant16_e4m3(raw, sv, w);
#pragma unroll
    for (int t = 0; t < SD_CUDA_GEMV_FP8_T; t++) {
        if (t >= T)
            break;
        const float4 *xp = (const float4 *)(x + (size_t)t * ldx) + c * 4;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            float4 xv = __ldg(xp + q);
            acc[t] += w[4 * q] * xv.x + w[4 * q + 1] * xv.y + w[4 * q + 2] * xv.z + w[4 * q + 3] * xv.w;
        }
    }
}

// variant 1: acc[t] += (sum over the 16 raw e4m3 values of raw * 2^-120 * x) * 2^120 * sv. Each byte is put in
// the top of a word, shifted right by 4 with sign extension and masked (0x87f00000): sign, exponent and mantissa
// land in the f32 fields (2^-120 times the e4m3 value, as in sd_dequant16_e4m3); NaN codes give NaN.
static __device__ __forceinline__ void gv_fma16_v1(float *acc, uint4 raw, float sv, const float *x, int ldx, int c,
                                                   int T)
{
    const uint32_t wd[4] = {raw.x, raw.y, raw.z, raw.w};
    float r[16];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint32_t v = wd[j];
        r[4 * j] = __int_as_float(((int)(v << 24) >> 4) & (int)0x87f00000u);
        r[4 * j + 1] = __int_as_float(((int)(v << 16) >> 4) & (int)0x87f00000u);
        r[4 * j + 2] = __int_as_float(((int)(v << 8) >> 4) & (int)0x87f00000u);
        r[4 * j + 3] = __int_as_float(((int)v >> 4) & (int)0x87f00000u);
        sd_e4m3x4_nan(v, r + 4 * j);
    }
#pragma unroll
    for (int t = 0; t < SD_CUDA_GEMV_FP8_T; t++) {
        if (t >= T)
            break;
        const float4 *xp = (const float4 *)(x + (size_t)t * ldx) + c * 4;
        float s = 0.0f;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            float4 xv = __ldg(xp + q);
            s += r[4 * q] * xv.x + r[4 * q + 1] * xv.y + r[4 * q + 2] * xv.z + r[4 * q + 3] * xv.w;
        }
        acc[t] += __fmul_rn(s, 0x1p120f) * sv;
    }
}

// One weight (any alignment): the same value as sd_dequant16_e4m3 gives it.
static __device__ __forceinline__ float gv_dequant1(uint8_t b, float sv)
{
    float w[16];
    sd_dequant16_e4m3(make_uint4(b, 0, 0, 0), sv, w);
    return w[0];
}

// KS warps per output row (8 / KS rows per 256-thread block): enough warps stream the weights of few-row
// matrices. Lanes take 16 weights per 16-byte load, up to four loads in flight; partial sums meet in shared
// memory in K-slice order.
template <int KS, int V>
__global__ void __launch_bounds__(256) k_gemv_fp8(float *y, int ldy, const float *x, int ldx, const uint8_t *w,
                                                  const float *sc, int B, int T, int N, int K, float beta)
{
    __shared__ float part[8][SD_CUDA_GEMV_FP8_T];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ks = warp % KS;
    const int n = blockIdx.x * (8 / KS) + warp / KS;
    float acc[SD_CUDA_GEMV_FP8_T];
#pragma unroll
    for (int t = 0; t < SD_CUDA_GEMV_FP8_T; t++)
        acc[t] = 0.0f;
    if (n < N) {
        const uint8_t *row = w + (size_t)n * K;
        const float *srow = sc + (size_t)(n / B) * ((K + B - 1) / B);
        int k0 = 0;
        if (K % 16 == 0 && B % 16 == 0 && ldx % 4 == 0 && ((uintptr_t)row & 15) == 0 && ((uintptr_t)x & 15) == 0) {
            // Two chunks per step, the next step's two loaded before this step's are used: up to four
            // 16-byte loads in flight per lane (the loop is otherwise bound by DRAM latency).
            const int nc = K / 16, step = 32 * KS;
            const uint4 *rw = (const uint4 *)row, zero = make_uint4(0, 0, 0, 0);
            int c = ks * 32 + lane;
            uint4 r0 = c < nc ? __ldg(rw + c) : zero, r1 = c + step < nc ? __ldg(rw + c + step) : zero;
            while (c < nc) {
                const int cn = c + 2 * step;
                const uint4 n0 = cn < nc ? __ldg(rw + cn) : zero, n1 = cn + step < nc ? __ldg(rw + cn + step) : zero;
                if (V == 1) {
                    gv_fma16_v1(acc, r0, srow[c * 16 / B], x, ldx, c, T);
                    if (c + step < nc)
                        gv_fma16_v1(acc, r1, srow[(c + step) * 16 / B], x, ldx, c + step, T);
                } else {
                    gv_fma16(acc, r0, srow[c * 16 / B], x, ldx, c, T);
                    if (c + step < nc)
                        gv_fma16(acc, r1, srow[(c + step) * 16 / B], x, ldx, c + step, T);
                }
                r0 = n0, r1 = n1, c = cn;
            }
            k0 = K;
        }
        for (int k = k0 + ks * 32 + lane; k < K; k += 32 * KS) {
            const float wk = gv_dequant1(row[k], srow[k / B]);
#pragma unroll
            for (int t = 0; t < SD_CUDA_GEMV_FP8_T; t++)
                if (t < T)
                    acc[t] += wk * x[(size_t)t * ldx + k];
        }
    }
#pragma unroll
    for (int t = 0; t < SD_CUDA_GEMV_FP8_T; t++) {
        float v = sd_warp_sum(acc[t]);
        if (lane == 0)
            part[warp][t] = v;
    }
    if (KS > 1)
        __syncthreads();
    if (ks != 0 || lane != 0 || n >= N)
        return;
    for (int t = 0; t < T; t++) {
        float v = part[warp][t];
        for (int j = 1; j < KS; j++)
            v += part[warp + j][t];
        float *yo = y + (size_t)t * ldy + n;
        *yo = beta == 0.0f ? v : v + beta * *yo;
    }
}

// out = dequantized W: one thread per 16 elements (one 16-byte load) where K and B allow (vec), else per element.
template <typename O> static __device__ __forceinline__ O to_out(float v);
template <> __device__ __forceinline__ float to_out<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ __nv_bfloat16 to_out<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

template <typename O>
__global__ void k_dequant_fp8(O *out, const uint8_t *w, const float *sc, int B, int N, int K, int vec)
{
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, sc_cols = (size_t)((K + B - 1) / B);
    if (!vec) {
        if (i < (size_t)N * K)
            out[i] = to_out<O>(gv_dequant1(w[i], sc[(i / K / B) * sc_cols + i % K / B]));
        return;
    }
    if (i >= (size_t)N * K / 16)
        return;
    const size_t e0 = i * 16, n = e0 / (size_t)K, k = e0 % (size_t)K;
    float v[16];
    sd_dequant16_e4m3(__ldg((const uint4 *)w + i), sc[(n / B) * sc_cols + k / B], v);
    if constexpr (sizeof(O) == 2) {
        uint4 o[2];
        __nv_bfloat162 *h = (__nv_bfloat162 *)o;
#pragma unroll
        for (int j = 0; j < 8; j++)
            h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
        ((uint4 *)out)[2 * i] = o[0];
        ((uint4 *)out)[2 * i + 1] = o[1];
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++)
            ((float4 *)out)[4 * i + j] = make_float4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
    }
}

// k_gemv_fp8<ks, V> (ks: 1, 2, 4 or 8 warps per row).
template <int V>
static void gv_launch(int ks, unsigned grid, cudaStream_t st, float *y, int ldy, const float *x, int ldx,
                      const uint8_t *q, const float *sc, int B, int T, int N, int K, float beta)
{
    switch (ks) {
    case 1:
        k_gemv_fp8<1, V><<<grid, 256, 0, st>>>(y, ldy, x, ldx, q, sc, B, T, N, K, beta);
        break;
    case 2:
        k_gemv_fp8<2, V><<<grid, 256, 0, st>>>(y, ldy, x, ldx, q, sc, B, T, N, K, beta);
        break;
    case 4:
        k_gemv_fp8<4, V><<<grid, 256, 0, st>>>(y, ldy, x, ldx, q, sc, B, T, N, K, beta);
        break;
    default:
        k_gemv_fp8<8, V><<<grid, 256, 0, st>>>(y, ldy, x, ldx, q, sc, B, T, N, K, beta);
    }
}

static bool fp8_mat_ok(const struct sd_cuda_fp8_mat *w)
{
    return w && w->q && w->scale && w->rows >= 0 && w->cols >= 0 && w->block > 0;
}

extern "C" enum sd_status sd_cuda_gemv_fp8(const struct sd_cuda_gemv_fp8_params *p)
{
    SD_CHECK_ARG(p && fp8_mat_ok(&p->w) && p->x && p->y);
    SD_CHECK_ARG(p->n_tok >= 1 && p->n_tok <= SD_CUDA_GEMV_FP8_T && p->ldx >= p->w.cols && p->ldy >= p->w.rows);
    const int N = p->w.rows, K = p->w.cols, B = p->w.block;
    if (N == 0)
        return SD_OK;
    cudaStream_t st = (cudaStream_t)p->stream;
    SD_CHECK_ARG(p->variant == 0 || p->variant == 1);
    // warps per row: about 32 warps per SM of the H200's 132 for matrices of few rows
    const int ks = N >= 4096 ? 1 : N >= 2048 ? 2 : N >= 1024 ? 4 : 8;
    const unsigned grid = (unsigned)((N + 8 / ks - 1) / (8 / ks));
    const float *x = p->x, *sc = p->w.scale;
    const uint8_t *q = p->w.q;
    if (p->variant == 0)
        gv_launch<0>(ks, grid, st, p->y, p->ldy, x, p->ldx, q, sc, B, p->n_tok, N, K, p->beta);
    else
        gv_launch<1>(ks, grid, st, p->y, p->ldy, x, p->ldx, q, sc, B, p->n_tok, N, K, p->beta);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_dequant_fp8(const struct sd_cuda_fp8_mat *w, void *out, int bf16, void *stream)
{
    SD_CHECK_ARG(fp8_mat_ok(w) && out);
    const int N = w->rows, K = w->cols, B = w->block;
    const int vec = K % 16 == 0 && B % 16 == 0 && ((uintptr_t)w->q & 15) == 0 && ((uintptr_t)out & 15) == 0;
    const size_t n = (size_t)N * (size_t)K / (vec ? 16 : 1);
    if (n == 0)
        return SD_OK;
    SD_CHECK_SUPPORTED((n + 255) / 256 <= 0x7fffffffu);
    const unsigned nb = (unsigned)((n + 255) / 256);
    cudaStream_t st = (cudaStream_t)stream;
    if (bf16)
        k_dequant_fp8<__nv_bfloat16><<<nb, 256, 0, st>>>((__nv_bfloat16 *)out, w->q, w->scale, B, N, K, vec);
    else
        k_dequant_fp8<float><<<nb, 256, 0, st>>>((float *)out, w->q, w->scale, B, N, K, vec);
    SD_CHECK_LAUNCH();
    return SD_OK;
}
