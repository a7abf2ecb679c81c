// sd_cuda_common.cuh: shared by kernels/*.cu: the SD_CHECK_CUDA macro (captures expression, file and
// line into the library's last-error message and returns SD_ERR_BACKEND), the post-launch check,
// device properties cached once, and small device helpers (f32 <-> e4m3 conversion, warp reductions).
#ifndef SD_CUDA_COMMON_CUH
#define SD_CUDA_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "sd_cuda.h"

extern "C" void sd_cuda_set_error(const char *expr, const char *file, int line, const char *what);

#define SD_CHECK_CUDA(expr)                                                                                            \
    do {                                                                                                               \
        cudaError_t sd_e_ = (expr);                                                                                    \
        if (sd_e_ != cudaSuccess) {                                                                                    \
            sd_cuda_set_error(#expr, __FILE__, __LINE__, cudaGetErrorString(sd_e_));                                   \
            return SD_ERR_BACKEND;                                                                                     \
        }                                                                                                              \
    } while (0)

// After every launch: configuration errors show up here (execution errors at the next sync).
#define SD_CHECK_LAUNCH() SD_CHECK_CUDA(cudaGetLastError())

#define SD_CHECK_ARG(cond)                                                                                             \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            sd_cuda_set_error(#cond, __FILE__, __LINE__, "invalid argument");                                          \
            return SD_ERR_ARG;                                                                                         \
        }                                                                                                              \
    } while (0)

#define SD_CHECK_SUPPORTED(cond)                                                                                       \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            sd_cuda_set_error(#cond, __FILE__, __LINE__, "unsupported shape for this kernel");                         \
            return SD_ERR_UNSUPPORTED;                                                                                 \
        }                                                                                                              \
    } while (0)

// Multiprocessor count of the current device (read once).
int sd_cuda_num_sms(void);

static __device__ __forceinline__ float sd_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float sd_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// m >> shift rounded to nearest, ties to even (as engine/dtype.c).
static __device__ __forceinline__ uint32_t sd_shift_rne_d(uint32_t m, int shift)
{
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1u)));
}

// f32 -> e4m3, round to nearest even, saturating to +-448: the same function as engine/dtype.c sd_f32_to_e4m3.
static __device__ __forceinline__ uint8_t sd_f32_to_e4m3_d(float f)
{
    uint32_t u = __float_as_uint(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint8_t)(sign | 0x7Fu);
    if (a >= 0x43E00000u)
        return (uint8_t)(sign | 0x7Eu);
    int e = (int)(a >> 23);
    if (e >= 121)
        return (uint8_t)(sign | (((uint32_t)(e - 120) << 3) + sd_shift_rne_d(a & 0x7FFFFFu, 20)));
    int shift = 141 - e;
    if (e == 0 || shift > 25)
        return sign;
    return (uint8_t)(sign | sd_shift_rne_d((a & 0x7FFFFFu) | 0x800000u, shift));
}

// f32 -> bf16 bits, round to nearest even (NaN kept quiet): engine/dtype.c sd_f32_to_bf16, from the bits.
static __device__ __forceinline__ uint16_t sd_f32_to_bf16_d(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// 2^ceil(log2(r)) for a normal float r > 0 (from its bits): engine/dtype.c sd_pow2_ceil.
static __device__ __forceinline__ float sd_pow2_ceil_d(float r)
{
    uint32_t rb = __float_as_uint(r);
    return (rb & 0x7FFFFFu) ? __uint_as_float((rb & 0x7F800000u) + 0x00800000u) : r;
}

// Two e4m3 values (low byte first) -> f16x2 bits. Exact: every e4m3 value is an f16 value.
static __device__ __forceinline__ uint32_t sd_e4m3x2_to_h2(uint16_t v)
{
    __half2_raw r = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)v, __NV_E4M3);
    return (uint32_t)r.x | ((uint32_t)r.y << 16);
}

static __device__ __forceinline__ float2 sd_e4m3x2_to_f2(uint16_t v)
{
    __half2_raw r = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)v, __NV_E4M3);
    __half2 h = *reinterpret_cast<__half2 *>(&r);
    return __half22float2(h);
}

// The e4m3 NaN codes (0x7f, 0xff) among the 4 bytes of v (low byte first) set w[0..4) to NaN: a byte whose low
// 7 bits are all ones carries into its bit 7 below.
static __device__ __forceinline__ void sd_e4m3x4_nan(uint32_t v, float *w)
{
    const uint32_t nan = ((v & 0x7f7f7f7fu) + 0x01010101u) & 0x80808080u;
    if (nan)
#pragma unroll
        for (int b = 0; b < 4; b++)
            if (nan & (0x80u << (8 * b)))
                w[b] = __int_as_float(0x7fffffff);
}

// 16 e4m3 weights (raw, low byte first) times their block scale sv, each rounded once: sd_dequant_fp8_block's
// values (the CPU's f32 weights) bit for bit. Each byte's exponent and mantissa bits go straight into f32's
// exponent and mantissa fields, which gives 2^-120 times the e4m3 value exactly for every finite code
// (subnormals become f32 subnormals; no flush to zero in this build), then * 2^120 (exact) and * sv: integer
// and fp32 instructions only, no conversion instructions (a quarter of the fp32 rate on sm_90). The NaN
// codes (0x7f, 0xff) give NaN, as on the CPU.
static __device__ __forceinline__ void sd_dequant16_e4m3(uint4 raw, float sv, float *w)
{
    const uint32_t wd[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint32_t v = wd[j];
        w[4 * j] = __uint_as_float(((v & 0x7fu) << 20) | ((v & 0x80u) << 24));
        w[4 * j + 1] = __uint_as_float(((v & 0x7f00u) << 12) | ((v & 0x8000u) << 16));
        w[4 * j + 2] = __uint_as_float(((v & 0x7f0000u) << 4) | ((v & 0x800000u) << 8));
        w[4 * j + 3] = __uint_as_float(((v >> 4) & 0x07f00000u) | (v & 0x80000000u));
    }
#pragma unroll
    for (int i = 0; i < 16; i++)
        w[i] = __fmul_rn(__fmul_rn(w[i], 0x1p120f), sv);
#pragma unroll
    for (int j = 0; j < 4; j++)
        sd_e4m3x4_nan(wd[j], w + 4 * j);
}

// kv_fp8 latent rows (engine/dsa.h sd_mla_kv_fp8_*): 4 values of group c (values 4c .. 4c + 3) of a row with d_lat
// e4m3 codes, ceil(d_lat / 128) fp32 scales and d_rope bf16 values, d_lat and d_rope multiples of 4 (so every 4-byte
// load is aligned when the row size is). Exactly the CPU's sd_mla_kv_fp8_dequant: e4m3 value (exact, from its bits
// as in sd_dequant16_e4m3) times the tile scale, or the bf16 value.
static __device__ __forceinline__ void sd_kv8_load4(const uint8_t *row, int c, int d_lat, float *w)
{
    const int d = 4 * c;
    if (d < d_lat) {
        const uint32_t v = *(const uint32_t *)(row + d);
        const float s = *(const float *)(row + d_lat + 4 * (d >> 7));
        w[0] = __uint_as_float(((v & 0x7fu) << 20) | ((v & 0x80u) << 24));
        w[1] = __uint_as_float(((v & 0x7f00u) << 12) | ((v & 0x8000u) << 16));
        w[2] = __uint_as_float(((v & 0x7f0000u) << 4) | ((v & 0x800000u) << 8));
        w[3] = __uint_as_float(((v >> 4) & 0x07f00000u) | (v & 0x80000000u));
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] = __fmul_rn(__fmul_rn(w[i], 0x1p120f), s);
        sd_e4m3x4_nan(v, w);
    } else {
        const uint16_t *pe = (const uint16_t *)(row + d_lat + 4 * ((d_lat + 127) >> 7)) + (d - d_lat);
        const uint32_t lo = *(const uint32_t *)pe, hi = *(const uint32_t *)(pe + 2);
        w[0] = __uint_as_float(lo << 16), w[1] = __uint_as_float(lo & 0xffff0000u);
        w[2] = __uint_as_float(hi << 16), w[3] = __uint_as_float(hi & 0xffff0000u);
    }
}

#endif
