// mla_decode_mma.cu: sparse MLA decode, absorbed form, on tensor cores (mma.sync m16n8k16 bf16 ->
// fp32). Block = 32 heads of one query, 8 warps; gathered cache rows arrive by cp.async into a
// double-buffered 64-token tile (the next tile's gather overlaps this tile's math).
// QK: S[32 heads][64 tokens] = Q(bf16) K^T, warp = (m16 head tile, 16 tokens). Online softmax in fp32
// (warp = 4 heads, lane = 2 tokens), P rounded to bf16 as FlashMLA does. PV: O[32][512] += P V,
// warp = 64 latent dims x 32 heads, accumulators in registers. q is rounded to bf16 on load.
#include <cuda_bf16.h>
#include <math.h>

#include "sd_cuda_common.cuh"

#define MM_DL 512
#define MM_D 576
#define MM_HG 32
#define MM_TT 64
#define MM_LD 584 // bf16 row stride of Q and KV tiles (292 words = 4 mod 32: conflict-free fragments)
#define MM_SLD 68 // fp32 row stride of S
#define MM_PLD 72 // bf16 row stride of P

static __device__ __forceinline__ void mma_bf16_16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                      uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes)
{
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
static __device__ __forceinline__ void cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> static __device__ __forceinline__ void cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Thread tid gathers row r = tid / 4 of a tile: 16-byte chunks (tid & 3) + 4j, j < 18 (coalesced
// 64 bytes per row and instruction). Its slot index u was loaded one tile ahead (software pipelined).
static __device__ __forceinline__ int load_slot(const int32_t *__restrict__ ix, int t0, int topk, int n_tokens, int tid)
{
    int tt = t0 + (tid >> 2);
    int u = tt < topk ? __ldg(ix + tt) : -1;
    return (u >= 0 && u < n_tokens) ? u : -1;
}

static __device__ __forceinline__ void issue_tile(const uint16_t *__restrict__ kv, int u, uint16_t *kvb, int *tok,
                                                  int tid)
{
    const int r = tid >> 2, c0 = tid & 3;
    const bool ok = u >= 0;
    const uint16_t *src = kv + (ok ? (size_t)u * MM_D : 0);
    uint16_t *dst = kvb + r * MM_LD;
#pragma unroll
    for (int j = 0; j < MM_D / 8 / 4; j++) {
        int d8 = c0 + 4 * j;
        cp_async16(dst + d8 * 8, src + d8 * 8, ok ? 16 : 0); // 0 bytes read: zero fill
    }
    if (c0 == 0)
        tok[r] = u;
    cp_async_commit();
}

__global__ void __launch_bounds__(256, 1)
    mla_decode_mma_kernel(const float *__restrict__ q, const uint16_t *__restrict__ kv, const int32_t *__restrict__ idx,
                          float *out, float *lse, int s_q, int n_heads, int topk, int n_tokens, float scale)
{
    extern __shared__ __align__(16) unsigned char smem[];
    uint16_t *qs = (uint16_t *)smem;                  // [HG][LD] bf16
    uint16_t *kvs = qs + MM_HG * MM_LD;               // [2][TT][LD] bf16
    float *S = (float *)(kvs + 2 * MM_TT * MM_LD);    // [HG][SLD]
    uint16_t *P = (uint16_t *)(S + MM_HG * MM_SLD);   // [HG][PLD] bf16
    float *alpha_s = (float *)(P + MM_HG * MM_PLD);   // [HG]
    float *m_s = alpha_s + MM_HG, *l_s = m_s + MM_HG; // [HG] each
    int *tok_s = (int *)(l_s + MM_HG);                // [2][TT]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int h0 = blockIdx.x * MM_HG, sq = blockIdx.y, b = blockIdx.z;
    const size_t qrow = (size_t)b * s_q + sq;
    const int32_t *ix = idx + qrow * topk;
    const int n_tiles = (topk + MM_TT - 1) / MM_TT;

    if (n_tiles > 0)
        issue_tile(kv, load_slot(ix, 0, topk, n_tokens, tid), kvs, tok_s, tid);
    int u_next = load_slot(ix, MM_TT, topk, n_tokens, tid); // slot of tile 1, in flight during tile 0
    const float *qg = q + (qrow * n_heads + h0) * MM_D;
    for (int e = tid; e < MM_HG * MM_D / 2; e += 256) {
        int h = e / (MM_D / 2), d2 = e % (MM_D / 2);
        float2 v = ((const float2 *)(qg + (size_t)h * MM_D))[d2];
        __nv_bfloat162 bv = __floats2bfloat162_rn(v.x, v.y);
        *(__nv_bfloat162 *)(qs + h * MM_LD + 2 * d2) = bv;
    }
    float m_run[4], l_run[4]; // softmax state of heads 4*warp + x (uniform across lanes)
#pragma unroll
    for (int x = 0; x < 4; x++) {
        m_run[x] = -INFINITY;
        l_run[x] = 0.0f;
    }
    float acc[2][8][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int x = 0; x < 4; x++)
                acc[mt][nt][x] = 0.0f;

    for (int it = 0; it < n_tiles; it++) {
        const int buf = it & 1;
        if (it + 1 < n_tiles) {
            issue_tile(kv, u_next, kvs + (buf ^ 1) * MM_TT * MM_LD, tok_s + (buf ^ 1) * MM_TT, tid);
            u_next = load_slot(ix, (it + 2) * MM_TT, topk, n_tokens, tid);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const uint16_t *kb = kvs + buf * MM_TT * MM_LD;
        const int *tk = tok_s + buf * MM_TT;
        // ---- QK: warp (mw = warp & 1: heads 16*mw..; tokens 16*(warp>>1) .. +16)
        {
            const int mw = warp & 1, n0 = 16 * (warp >> 1);
            float c[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
            float e[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}}; // second chain: odd k steps
            const uint16_t *qa = qs + (mw * 16 + g) * MM_LD + 2 * t;
            const uint16_t *kb0 = kb + (n0 + g) * MM_LD + 2 * t;
            const uint16_t *kb1 = kb0 + 8 * MM_LD;
#pragma unroll 3
            for (int k0 = 0; k0 < MM_D; k0 += 32) {
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int k = k0 + 16 * h;
                    float(*acc2)[4] = h ? e : c;
                    uint32_t a0 = *(const uint32_t *)(qa + k);
                    uint32_t a1 = *(const uint32_t *)(qa + 8 * MM_LD + k);
                    uint32_t a2 = *(const uint32_t *)(qa + k + 8);
                    uint32_t a3 = *(const uint32_t *)(qa + 8 * MM_LD + k + 8);
                    mma_bf16_16816(acc2[0], a0, a1, a2, a3, *(const uint32_t *)(kb0 + k),
                                   *(const uint32_t *)(kb0 + k + 8));
                    mma_bf16_16816(acc2[1], a0, a1, a2, a3, *(const uint32_t *)(kb1 + k),
                                   *(const uint32_t *)(kb1 + k + 8));
                }
            }
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int x = 0; x < 4; x++)
                    c[nt][x] += e[nt][x];
#pragma unroll
            for (int nt = 0; nt < 2; nt++) {
                int col = n0 + nt * 8 + 2 * t;
                *(float2 *)(S + (mw * 16 + g) * MM_SLD + col) = make_float2(c[nt][0], c[nt][1]);
                *(float2 *)(S + (mw * 16 + g + 8) * MM_SLD + col) = make_float2(c[nt][2], c[nt][3]);
            }
        }
        __syncthreads();
        // ---- online softmax: warp = heads 4*warp..+3, lane = tokens lane, lane + 32
        {
            const bool v0 = tk[lane] >= 0, v1 = tk[lane + 32] >= 0;
#pragma unroll
            for (int x = 0; x < 4; x++) {
                const int h = 4 * warp + x;
                float s0 = v0 ? S[h * MM_SLD + lane] * scale : -INFINITY;
                float s1 = v1 ? S[h * MM_SLD + lane + 32] * scale : -INFINITY;
                float mx = sd_warp_max(fmaxf(s0, s1));
                float m_new = fmaxf(m_run[x], mx);
                float p0 = s0 == -INFINITY ? 0.0f : expf(s0 - m_new);
                float p1 = s1 == -INFINITY ? 0.0f : expf(s1 - m_new);
                float al = m_new == -INFINITY ? 1.0f : expf(m_run[x] - m_new);
                float sum = sd_warp_sum(p0 + p1);
                l_run[x] = l_run[x] * al + sum;
                m_run[x] = m_new;
                __nv_bfloat16 b0 = __float2bfloat16_rn(p0), b1 = __float2bfloat16_rn(p1);
                P[h * MM_PLD + lane] = *(uint16_t *)&b0;
                P[h * MM_PLD + lane + 32] = *(uint16_t *)&b1;
                if (lane == 0)
                    alpha_s[h] = al;
            }
        }
        __syncthreads();
        // ---- PV: warp = dims 64*warp .. +64 (8 n8 tiles), both m16 head tiles
        {
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                float alo = alpha_s[mt * 16 + g], ahi = alpha_s[mt * 16 + g + 8];
#pragma unroll
                for (int nt = 0; nt < 8; nt++) {
                    acc[mt][nt][0] *= alo;
                    acc[mt][nt][1] *= alo;
                    acc[mt][nt][2] *= ahi;
                    acc[mt][nt][3] *= ahi;
                }
            }
            const int d0 = 64 * warp + g;
#pragma unroll
            for (int ks = 0; ks < MM_TT / 16; ks++) {
                uint32_t a[2][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    const uint16_t *pa = P + (mt * 16 + g) * MM_PLD + ks * 16 + 2 * t;
                    a[mt][0] = *(const uint32_t *)pa;
                    a[mt][1] = *(const uint32_t *)(pa + 8 * MM_PLD);
                    a[mt][2] = *(const uint32_t *)(pa + 8);
                    a[mt][3] = *(const uint32_t *)(pa + 8 * MM_PLD + 8);
                }
                const uint16_t *v0 = kb + (ks * 16 + 2 * t) * MM_LD + d0;
#pragma unroll
                for (int nt = 0; nt < 8; nt++) {
                    const uint16_t *vp = v0 + nt * 8;
                    uint32_t b0 = (uint32_t)vp[0] | ((uint32_t)vp[MM_LD] << 16);
                    uint32_t b1 = (uint32_t)vp[8 * MM_LD] | ((uint32_t)vp[9 * MM_LD] << 16);
                    mma_bf16_16816(acc[0][nt], a[0][0], a[0][1], a[0][2], a[0][3], b0, b1);
                    mma_bf16_16816(acc[1][nt], a[1][0], a[1][1], a[1][2], a[1][3], b0, b1);
                }
            }
        }
        __syncthreads(); // this buffer and P are free for the next iteration's gather/softmax
    }
    if (lane == 0) {
#pragma unroll
        for (int x = 0; x < 4; x++) {
            m_s[4 * warp + x] = m_run[x];
            l_s[4 * warp + x] = l_run[x];
        }
    }
    __syncthreads();
    float *og = out + (qrow * n_heads + h0) * MM_DL;
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
        int hlo = mt * 16 + g, hhi = hlo + 8;
        float ilo = l_s[hlo] > 0.0f ? 1.0f / l_s[hlo] : 0.0f;
        float ihi = l_s[hhi] > 0.0f ? 1.0f / l_s[hhi] : 0.0f;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            int col = 64 * warp + nt * 8 + 2 * t;
            *(float2 *)(og + (size_t)hlo * MM_DL + col) = make_float2(acc[mt][nt][0] * ilo, acc[mt][nt][1] * ilo);
            *(float2 *)(og + (size_t)hhi * MM_DL + col) = make_float2(acc[mt][nt][2] * ihi, acc[mt][nt][3] * ihi);
        }
    }
    if (lse && tid < MM_HG) {
        float l = l_s[tid];
        lse[qrow * n_heads + h0 + tid] = l > 0.0f ? m_s[tid] + logf(l) : -INFINITY;
    }
}

static size_t mma_smem_bytes(void)
{
    return (size_t)MM_HG * MM_LD * 2 + 2 * MM_TT * MM_LD * 2 + MM_HG * MM_SLD * 4 + MM_HG * MM_PLD * 2 + 3 * MM_HG * 4 +
           2 * MM_TT * 4;
}

extern "C" enum sd_status sd_cuda_mla_decode_mma_launch(const struct sd_cuda_mla_decode_params *p)
{
    static int attr_set = 0;
    size_t smem = mma_smem_bytes();
    if (!attr_set) {
        SD_CHECK_CUDA(
            cudaFuncSetAttribute(mla_decode_mma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = 1;
    }
    dim3 grid(p->n_heads / MM_HG, p->s_q, p->batch);
    mla_decode_mma_kernel<<<grid, 256, smem, (cudaStream_t)p->stream>>>(p->q, p->kv, p->idx, p->out, p->lse, p->s_q,
                                                                        p->n_heads, p->topk, p->n_tokens, p->scale);
    SD_CHECK_LAUNCH();
    return SD_OK;
}
