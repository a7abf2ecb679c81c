// sd_cuda_common.cuh: shared by kernels/*.cu: the SD_CHECK_CUDA macro (captures expression, file and
// line into the library's last-error message and returns SD_ERR_BACKEND), the post-launch check,
// device properties cached once, and small device helpers (e4m3 -> f16/f32 conversion, warp reductions).
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

#endif
