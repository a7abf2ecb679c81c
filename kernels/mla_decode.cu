// mla_decode.cu: sparse MLA decode in the absorbed (MQA) form over a bf16 cache of 576-wide rows
// [c_kv(512) | k_pe(64)], gathered by absolute token indices (-1 / out of range skipped).
// CUDA cores, fp32 accumulation, online softmax in fp32 (expf). Block = (32 heads, one query of one
// sequence), 256 threads; token tiles of 32 gathered rows converted to fp32 in shared memory.
// QK: thread = (token = lane, 4 heads = warp); softmax per head in the same warp (lane = token);
// PV: thread = 2 latent dims x 32 heads.
#include <math.h>

#include "sd_cuda_common.cuh"

#define MLA_DL 512
#define MLA_DR 64
#define MLA_D (MLA_DL + MLA_DR)
#define MLA_HG 32   // heads per block
#define MLA_TT 32   // tokens per tile
#define MLA_KLD 580 // fp32 row stride of the smem tile (conflict-free float4 reads across rows)

static __device__ __forceinline__ float bf16_lo(uint32_t v)
{
    return __uint_as_float(v << 16);
}
static __device__ __forceinline__ float bf16_hi(uint32_t v)
{
    return __uint_as_float(v & 0xffff0000u);
}

__global__ void __launch_bounds__(256, 1)
    mla_decode_kernel(const float *__restrict__ q, const uint16_t *__restrict__ kv, const int32_t *__restrict__ idx,
                      float *out, float *lse, int s_q, int n_heads, int topk, int n_tokens, float scale)
{
    extern __shared__ __align__(16) float sm[];
    float *qs = sm;                         // [HG][576]
    float *kvs = qs + MLA_HG * MLA_D;       // [TT][KLD]
    float *ps = kvs + MLA_TT * MLA_KLD;     // [TT][HG]
    float *alpha_s = ps + MLA_TT * MLA_HG;  // [HG]
    int *tok_s = (int *)(alpha_s + MLA_HG); // [TT]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int h0 = blockIdx.x * MLA_HG, sq = blockIdx.y, b = blockIdx.z;
    const size_t qrow = (size_t)b * s_q + sq;
    const float *qg = q + (qrow * n_heads + h0) * MLA_D;
    for (int e = tid; e < MLA_HG * MLA_D / 4; e += 256)
        ((float4 *)qs)[e] = ((const float4 *)qg)[e];
    const int32_t *ix = idx + qrow * topk;

    float m_run[4], l_run[4]; // per head of this warp (uniform across lanes)
#pragma unroll
    for (int x = 0; x < 4; x++) {
        m_run[x] = -INFINITY;
        l_run[x] = 0.0f;
    }
    float acc[MLA_HG][2];
#pragma unroll
    for (int h = 0; h < MLA_HG; h++)
        acc[h][0] = acc[h][1] = 0.0f;
    const int d0 = 2 * tid; // PV: this thread's two latent dims

    for (int t0 = 0; t0 < topk; t0 += MLA_TT) {
        __syncthreads(); // previous tile fully consumed
        if (tid < MLA_TT) {
            int tt = t0 + tid;
            int u = tt < topk ? ix[tt] : -1;
            tok_s[tid] = (u >= 0 && u < n_tokens) ? u : -1;
        }
        __syncthreads();
        // Gather: 32 rows x 72 chunks of 8 bf16.
        for (int c = tid; c < MLA_TT * (MLA_D / 8); c += 256) {
            int r = c / (MLA_D / 8), d8 = c % (MLA_D / 8);
            int u = tok_s[r];
            uint4 v = make_uint4(0, 0, 0, 0);
            if (u >= 0)
                v = ((const uint4 *)(kv + (size_t)u * MLA_D))[d8];
            float4 *dst = (float4 *)(kvs + r * MLA_KLD + d8 * 8);
            dst[0] = make_float4(bf16_lo(v.x), bf16_hi(v.x), bf16_lo(v.y), bf16_hi(v.y));
            dst[1] = make_float4(bf16_lo(v.z), bf16_hi(v.z), bf16_lo(v.w), bf16_hi(v.w));
        }
        __syncthreads();
        // QK: token = lane, heads 4*warp .. +3.
        float s[4] = {0.f, 0.f, 0.f, 0.f};
        {
            const float4 *kr = (const float4 *)(kvs + lane * MLA_KLD);
            const float4 *q0 = (const float4 *)(qs + (4 * warp + 0) * MLA_D);
            const float4 *q1 = (const float4 *)(qs + (4 * warp + 1) * MLA_D);
            const float4 *q2 = (const float4 *)(qs + (4 * warp + 2) * MLA_D);
            const float4 *q3 = (const float4 *)(qs + (4 * warp + 3) * MLA_D);
#pragma unroll 4
            for (int c = 0; c < MLA_D / 4; c++) {
                float4 k4 = kr[c];
                float4 a = q0[c], bq = q1[c], cq = q2[c], dq = q3[c];
                s[0] += a.x * k4.x + a.y * k4.y + a.z * k4.z + a.w * k4.w;
                s[1] += bq.x * k4.x + bq.y * k4.y + bq.z * k4.z + bq.w * k4.w;
                s[2] += cq.x * k4.x + cq.y * k4.y + cq.z * k4.z + cq.w * k4.w;
                s[3] += dq.x * k4.x + dq.y * k4.y + dq.z * k4.z + dq.w * k4.w;
            }
        }
        const bool valid = tok_s[lane] >= 0;
        // Online softmax, per head of this warp (lane = token).
#pragma unroll
        for (int x = 0; x < 4; x++) {
            float sc = valid ? s[x] * scale : -INFINITY;
            float mx = sd_warp_max(sc);
            float m_new = fmaxf(m_run[x], mx);
            float p = (sc == -INFINITY) ? 0.0f : expf(sc - m_new);
            float alpha = (m_new == -INFINITY) ? 1.0f : expf(m_run[x] - m_new);
            float sum = sd_warp_sum(p);
            l_run[x] = l_run[x] * alpha + sum;
            m_run[x] = m_new;
            ps[lane * MLA_HG + 4 * warp + x] = p;
            if (lane == 0)
                alpha_s[4 * warp + x] = alpha;
        }
        __syncthreads();
        // PV: acc[h][d0..d0+1] = acc*alpha + sum_t p[t][h] * v[t][d].
#pragma unroll
        for (int h4 = 0; h4 < MLA_HG / 4; h4++) {
            float4 al = ((const float4 *)alpha_s)[h4];
            acc[4 * h4 + 0][0] *= al.x;
            acc[4 * h4 + 0][1] *= al.x;
            acc[4 * h4 + 1][0] *= al.y;
            acc[4 * h4 + 1][1] *= al.y;
            acc[4 * h4 + 2][0] *= al.z;
            acc[4 * h4 + 2][1] *= al.z;
            acc[4 * h4 + 3][0] *= al.w;
            acc[4 * h4 + 3][1] *= al.w;
        }
        for (int t = 0; t < MLA_TT; t++) {
            float2 v = *(const float2 *)(kvs + t * MLA_KLD + d0);
            const float4 *pt = (const float4 *)(ps + t * MLA_HG);
#pragma unroll
            for (int h4 = 0; h4 < MLA_HG / 4; h4++) {
                float4 pp = pt[h4];
                acc[4 * h4 + 0][0] += pp.x * v.x;
                acc[4 * h4 + 0][1] += pp.x * v.y;
                acc[4 * h4 + 1][0] += pp.y * v.x;
                acc[4 * h4 + 1][1] += pp.y * v.y;
                acc[4 * h4 + 2][0] += pp.z * v.x;
                acc[4 * h4 + 2][1] += pp.z * v.y;
                acc[4 * h4 + 3][0] += pp.w * v.x;
                acc[4 * h4 + 3][1] += pp.w * v.y;
            }
        }
    }
    // Final: every warp's lane 0 publishes m and l of its 4 heads.
    __syncthreads();
    float *m_s = ps, *l_s = ps + MLA_HG; // reuse
    if (lane == 0) {
#pragma unroll
        for (int x = 0; x < 4; x++) {
            m_s[4 * warp + x] = m_run[x];
            l_s[4 * warp + x] = l_run[x];
        }
    }
    __syncthreads();
    float *og = out + (qrow * n_heads + h0) * MLA_DL;
#pragma unroll
    for (int h = 0; h < MLA_HG; h++) {
        float l = l_s[h];
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        *(float2 *)(og + (size_t)h * MLA_DL + d0) = make_float2(acc[h][0] * inv, acc[h][1] * inv);
    }
    if (lse && tid < MLA_HG) {
        float l = l_s[tid];
        lse[qrow * n_heads + h0 + tid] = l > 0.0f ? m_s[tid] + logf(l) : -INFINITY;
    }
}

static size_t mla_smem_bytes(void)
{
    return (size_t)(MLA_HG * MLA_D + MLA_TT * MLA_KLD + MLA_TT * MLA_HG + MLA_HG) * sizeof(float) +
           MLA_TT * sizeof(int);
}

extern "C" enum sd_status sd_cuda_mla_decode_mma_launch(const struct sd_cuda_mla_decode_params *p);

extern "C" enum sd_status sd_cuda_mla_decode(const struct sd_cuda_mla_decode_params *p)
{
    SD_CHECK_ARG(p && p->q && p->kv && p->idx && p->out);
    SD_CHECK_ARG(p->batch >= 0 && p->s_q >= 0 && p->topk >= 0 && p->n_tokens >= 0);
    SD_CHECK_SUPPORTED(p->n_heads > 0 && p->n_heads % MLA_HG == 0);
    SD_CHECK_SUPPORTED(p->s_q <= 65535 && p->batch <= 65535);
    if (p->batch == 0 || p->s_q == 0)
        return SD_OK;
    if (p->variant == SD_CUDA_MLA_AUTO || p->variant == SD_CUDA_MLA_MMA)
        return sd_cuda_mla_decode_mma_launch(p);
    SD_CHECK_SUPPORTED(p->variant == SD_CUDA_MLA_SIMPLE);
    static int attr_set = 0;
    size_t smem = mla_smem_bytes();
    if (!attr_set) {
        SD_CHECK_CUDA(cudaFuncSetAttribute(mla_decode_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = 1;
    }
    dim3 grid(p->n_heads / MLA_HG, p->s_q, p->batch);
    mla_decode_kernel<<<grid, 256, smem, (cudaStream_t)p->stream>>>(p->q, p->kv, p->idx, p->out, p->lse, p->s_q,
                                                                    p->n_heads, p->topk, p->n_tokens, p->scale);
    SD_CHECK_LAUNCH();
    return SD_OK;
}
