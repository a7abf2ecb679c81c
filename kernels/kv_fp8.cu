// kv_fp8.cu: DeepSeek's FP8 MLA latent cache rows on the device (kv_fp8; the layout and the numbers are the CPU's,
// engine/dsa.h sd_mla_kv_fp8_*): quantizing a chunk's rows into the cache, bit for bit as sd_mla_kv_fp8_quant, and
// expanding cached rows to bf16 for the tensor-core attention (exact: every dequantized value is a bf16 value).
// The fp32 attention (mla_attn.cu) dequantizes rows as it loads them (sd_kv8_load4, sd_cuda_common.cuh).
#include "sd_cuda_common.cuh"

#define KV8_TILE 128 // SD_KV_FP8_TILE
#define KV8_NT 128   // threads per row

// The row size of engine/dsa.h sd_mla_kv_fp8_row_bytes, on both sides.
static __host__ __device__ __forceinline__ size_t kv8_row_bytes(int d_lat, int d_rope)
{
    return (size_t)d_lat + 4 * (size_t)((d_lat + KV8_TILE - 1) / KV8_TILE) + 2 * (size_t)d_rope;
}

// One block per row t: cache row (*dpos + t) from src row t (d_lat + d_rope floats, ld floats apart). Warp w
// quantizes tiles w, w + 4, ...: amax over the tile, s = 2^ceil(log2(max(amax / 448, 1e-4))) (IEEE division and
// comparison, then the exponent bits: the CPU's sd_mla_kv_fp8_scale), codes e4m3(x * (1 / s)) (1 / s exact).
__global__ void __launch_bounds__(KV8_NT)
    k_kv8_store(uint8_t *cache, const float *src, size_t ld, int d_lat, int d_rope, const int *dpos)
{
    const int t = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const size_t rb = kv8_row_bytes(d_lat, d_rope);
    uint8_t *row = cache + ((size_t)*dpos + t) * rb;
    const float *x = src + (size_t)t * ld;
    const int n_tiles = (d_lat + KV8_TILE - 1) / KV8_TILE;
    for (int b = warp; b < n_tiles; b += KV8_NT / 32) {
        const int b0 = b * KV8_TILE, len = min(KV8_TILE, d_lat - b0);
        float amax = 0.0f;
        for (int i = lane; i < len; i += 32)
            amax = fmaxf(amax, fabsf(x[b0 + i]));
        amax = sd_warp_max(amax);
        const float r = __fdiv_rn(amax, 448.0f), s = sd_pow2_ceil_d(r < 1e-4f ? 1e-4f : r), inv = __frcp_rn(s);
        for (int i = lane; i < len; i += 32)
            row[b0 + i] = sd_f32_to_e4m3_d(__fmul_rn(x[b0 + i], inv));
        if (lane == 0) {
            const uint32_t u = __float_as_uint(s);
            uint8_t *sc = row + d_lat + 4 * b;
            sc[0] = (uint8_t)u, sc[1] = (uint8_t)(u >> 8), sc[2] = (uint8_t)(u >> 16), sc[3] = (uint8_t)(u >> 24);
        }
    }
    uint8_t *pe = row + d_lat + 4 * n_tiles;
    for (int i = tid; i < d_rope; i += KV8_NT) {
        const uint16_t h = sd_f32_to_bf16_d(x[d_lat + i]);
        pe[2 * i] = (uint8_t)h, pe[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

// Rows [0, n) of the cache as bf16 rows of d_lat + d_rope (grid-stride over groups of 4 values).
__global__ void k_kv8_to_bf16(uint16_t *dst, const uint8_t *cache, size_t n, int d_lat, int d_rope)
{
    const int D4 = (d_lat + d_rope) / 4;
    const size_t rb = kv8_row_bytes(d_lat, d_rope);
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n * D4; e += (size_t)gridDim.x * blockDim.x) {
        const size_t u = e / D4;
        const int c = (int)(e - u * D4);
        float w[4];
        sd_kv8_load4(cache + u * rb, c, d_lat, w);
        uint2 o; // exact: every value is a bf16 value
        o.x = (uint32_t)sd_f32_to_bf16_d(w[0]) | (uint32_t)sd_f32_to_bf16_d(w[1]) << 16;
        o.y = (uint32_t)sd_f32_to_bf16_d(w[2]) | (uint32_t)sd_f32_to_bf16_d(w[3]) << 16;
        *(uint2 *)(dst + u * (size_t)(d_lat + d_rope) + 4 * c) = o;
    }
}

extern "C" size_t sd_cuda_kv_fp8_row_bytes(int d_lat, int d_rope)
{
    return kv8_row_bytes(d_lat, d_rope);
}

extern "C" enum sd_status sd_cuda_kv_fp8_store(uint8_t *cache, const float *src, size_t ld, int n_rows, int d_lat,
                                               int d_rope, const int *d_pos, void *stream)
{
    SD_CHECK_ARG(cache && src && d_pos && n_rows >= 0 && d_lat > 0 && d_rope >= 0 && ld >= (size_t)(d_lat + d_rope));
    SD_CHECK_SUPPORTED(d_lat % 4 == 0 && d_rope % 4 == 0);
    if (n_rows == 0)
        return SD_OK;
    k_kv8_store<<<n_rows, KV8_NT, 0, (cudaStream_t)stream>>>(cache, src, ld, d_lat, d_rope, d_pos);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_kv_fp8_to_bf16(uint16_t *dst, const uint8_t *cache, size_t n_rows, int d_lat,
                                                 int d_rope, void *stream)
{
    SD_CHECK_ARG(dst && cache && d_lat > 0 && d_rope >= 0);
    SD_CHECK_SUPPORTED(d_lat % 4 == 0 && d_rope % 4 == 0);
    if (n_rows == 0)
        return SD_OK;
    size_t groups = n_rows * (size_t)((d_lat + d_rope) / 4);
    unsigned grid = (unsigned)((groups + 255) / 256 < 65536 ? (groups + 255) / 256 : 65536);
    k_kv8_to_bf16<<<grid, 256, 0, (cudaStream_t)stream>>>(dst, cache, n_rows, d_lat, d_rope);
    SD_CHECK_LAUNCH();
    return SD_OK;
}
