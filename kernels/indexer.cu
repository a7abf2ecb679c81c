// indexer.cu: lightning indexer FP8 scores (DeepSeek-V3.2 numerics) over the paged key cache.
// Two variants: SIMPLE (CUDA cores; one thread per key, exact dots in double and the CPU reference's
// fp32 head-sum order (engine/dsa.c), so results agree bit for bit) and MMA (tensor cores: e4m3 -> f16 is
// exact, mma.sync m16n8k16 with fp32 accumulation; rows = 64 heads of a query, columns = keys, then
// relu, per-head weights and the head sum in registers and warp shuffles).
// Also the chunked indexer + top-k driver used by prefill, which never materialises [n_q][n_k].
#include <math.h>

#include "sd_cuda_common.cuh"

#define IDX_DIM SD_CUDA_IDX_DIM
#define IDX_PAGE SD_CUDA_IDX_PAGE

// Key u of the cache: paged (kscale NULL: pages of IDX_PAGE rows, then their scales) or flat (rows of IDX_DIM
// bytes back to back, scales in kscale[u]: the forward pass's cache).
static __device__ __forceinline__ const uint8_t *key_ptr(const uint8_t *cache, const float *kscale, int u)
{
    if (kscale)
        return cache + (size_t)u * IDX_DIM;
    return cache + (size_t)(u / IDX_PAGE) * SD_CUDA_IDX_PAGE_BYTES + (size_t)(u % IDX_PAGE) * IDX_DIM;
}

static __device__ __forceinline__ float key_scale(const uint8_t *cache, const float *kscale, int u)
{
    if (kscale)
        return kscale[u];
    const float *s = (const float *)(cache + (size_t)(u / IDX_PAGE) * SD_CUDA_IDX_PAGE_BYTES + IDX_PAGE * IDX_DIM);
    return s[u % IDX_PAGE];
}

// ---------------------------------------------------------------- SIMPLE
// f32 -> f64 that the compiler may not hoist out of a loop (volatile asm).
static __device__ __forceinline__ double f64_in_loop(float x)
{
    double d;
    asm volatile("cvt.f64.f32 %0, %1;" : "=d"(d) : "f"(x));
    return d;
}

// grid (ceil(n_k/128), n_q), 128 threads; thread = key. smem: decoded query heads and folded weights.
__global__ void __launch_bounds__(128)
    indexer_simple_kernel(const uint8_t *__restrict__ q8, const float *__restrict__ q_scale,
                          const float *__restrict__ w, const uint8_t *__restrict__ kcache,
                          const float *__restrict__ kscale, const int *__restrict__ n_valid, float *scores, size_t ld,
                          int n_heads, int n_k)
{
    __shared__ __align__(16) float qf[64 * IDX_DIM];
    __shared__ float wf[64];
    const int i = blockIdx.y;
    const int u = blockIdx.x * blockDim.x + threadIdx.x;
    int nv = n_valid ? n_valid[i] : n_k;
    nv = min(nv, n_k);
    float *row = scores + (size_t)i * ld;
    if ((int)(blockIdx.x * blockDim.x) >= nv) { // whole block masked
        if (u < n_k)
            row[u] = -INFINITY;
        return;
    }
    const uint8_t *qi = q8 + (size_t)i * n_heads * IDX_DIM;
    for (int e = threadIdx.x; e < n_heads * IDX_DIM / 2; e += blockDim.x) {
        float2 f = sd_e4m3x2_to_f2(*(const uint16_t *)(qi + 2 * e));
        qf[2 * e] = f.x;
        qf[2 * e + 1] = f.y;
    }
    for (int j = threadIdx.x; j < n_heads; j += blockDim.x)
        wf[j] = __fmul_rn(w[(size_t)i * n_heads + j], q_scale[(size_t)i * n_heads + j]);
    __syncthreads();
    if (u >= n_k)
        return;
    if (u >= nv) {
        row[u] = -INFINITY;
        return;
    }
    float kf[IDX_DIM];
    const uint4 *kp = (const uint4 *)key_ptr(kcache, kscale, u);
#pragma unroll
    for (int c = 0; c < IDX_DIM / 16; c++) {
        uint4 v = kp[c];
        uint32_t wd[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int x = 0; x < 4; x++) {
            float2 lo = sd_e4m3x2_to_f2((uint16_t)(wd[x] & 0xffff));
            float2 hi = sd_e4m3x2_to_f2((uint16_t)(wd[x] >> 16));
            kf[c * 16 + x * 4 + 0] = lo.x;
            kf[c * 16 + x * 4 + 1] = lo.y;
            kf[c * 16 + x * 4 + 2] = hi.x;
            kf[c * 16 + x * 4 + 3] = hi.y;
        }
    }
    float s = 0.0f;
    for (int j = 0; j < n_heads; j++) {
        const float4 *qj = (const float4 *)(qf + j * IDX_DIM);
        // The dot is exact in double (engine/dsa.c dot_e4m3: every partial sum of e4m3 products is
        // representable), so its value does not depend on the order; rounded once to float like the CPU.
        // (The key's f32 -> f64 conversions stay inside the head loop: hoisted, 128 doubles would spill.)
        double s0 = 0.0, s1 = 0.0;
#pragma unroll
        for (int c = 0; c < IDX_DIM / 4; c++) {
            float4 q = qj[c];
            s0 = fma((double)q.x, f64_in_loop(kf[4 * c + 0]), s0);
            s1 = fma((double)q.y, f64_in_loop(kf[4 * c + 1]), s1);
            s0 = fma((double)q.z, f64_in_loop(kf[4 * c + 2]), s0);
            s1 = fma((double)q.w, f64_in_loop(kf[4 * c + 3]), s1);
        }
        float d = __double2float_rn(s0 + s1);
        if (d > 0.0f)
            s = __fadd_rn(s, __fmul_rn(wf[j], d));
    }
    row[u] = __fmul_rn(s, key_scale(kcache, kscale, u));
}

// ---------------------------------------------------------------- MMA
// Block: 4 warps, QPB queries, key tiles of KT = (4/QPB)*32 keys, TPB tiles per block.
// Warp w: query w % QPB, keys [(w / QPB) * 32, +32) of the tile. Per warp and tile: M = 64 heads
// (4 m16 tiles), N = 32 keys (4 n8 tiles), K = 128 (8 k16 steps).
#define MMA_LD 136 // f16 row stride in smem (272 B): fragment loads hit 32 distinct banks

static __device__ __forceinline__ void mma_f16_16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                     uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const void *smem_row)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}

// 16 e4m3 bytes -> 16 f16 written as two 16-byte stores.
static __device__ __forceinline__ void store_e4m3x16_as_f16(__half *dst, uint4 v)
{
    uint32_t wd[4] = {v.x, v.y, v.z, v.w};
    uint32_t h[8];
#pragma unroll
    for (int x = 0; x < 4; x++) {
        h[2 * x] = sd_e4m3x2_to_h2((uint16_t)(wd[x] & 0xffff));
        h[2 * x + 1] = sd_e4m3x2_to_h2((uint16_t)(wd[x] >> 16));
    }
    uint4 *d = (uint4 *)dst;
    d[0] = make_uint4(h[0], h[1], h[2], h[3]);
    d[1] = make_uint4(h[4], h[5], h[6], h[7]);
}

template <int QPB>
__global__ void __launch_bounds__(128)
    indexer_mma_kernel(const uint8_t *__restrict__ q8, const float *__restrict__ q_scale, const float *__restrict__ w,
                       const uint8_t *__restrict__ kcache, const float *__restrict__ kscale,
                       const int *__restrict__ n_valid, float *scores, size_t ld, int n_q, int n_k, int tiles_per_block)
{
    constexpr int H = 64;
    constexpr int NWK = 4 / QPB; // warps along keys
    constexpr int KT = NWK * 32; // keys per tile
    extern __shared__ __align__(16) unsigned char smem[];
    __half *qs = (__half *)smem;             // [QPB][64][MMA_LD]
    __half *ks = qs + QPB * H * MMA_LD;      // [KT][MMA_LD]
    float *wf = (float *)(ks + KT * MMA_LD); // [QPB][64]
    float *ksc_s = wf + QPB * H;             // [KT]
    __shared__ int nv_s[QPB];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.y * QPB;
    const int key0 = blockIdx.x * tiles_per_block * KT;
    const int key_end = min(n_k, key0 + tiles_per_block * KT);

    if (tid < QPB) {
        int i = q0 + tid;
        int nv = 0;
        if (i < n_q)
            nv = n_valid ? min(n_valid[i], n_k) : n_k;
        nv_s[tid] = max(nv, 0);
    }
    // The next key tile is loaded into registers while this one is computed (software pipelining).
    constexpr int CH = KT * (IDX_DIM / 16) / 128; // 16-byte chunks per thread and tile
    uint4 pre[CH];
    float pre_s = 0.0f;
    auto load_tile = [&](int tile) {
#pragma unroll
        for (int c = 0; c < CH; c++) {
            int e = tid + c * 128;
            int u = tile + e / (IDX_DIM / 16);
            pre[c] = u < n_k ? __ldg((const uint4 *)key_ptr(kcache, kscale, u) + e % (IDX_DIM / 16))
                             : make_uint4(0, 0, 0, 0);
        }
        if (tid < KT)
            pre_s = tile + tid < n_k ? key_scale(kcache, kscale, tile + tid) : 0.0f;
    };
    if (key0 < key_end) // first tile in flight while the queries are converted
        load_tile(key0);
    // Queries -> f16 smem (missing queries: zeros), folded weights.
    for (int c = tid; c < QPB * H * (IDX_DIM / 16); c += 128) {
        int qq = c / (H * (IDX_DIM / 16));
        int r = c % (H * (IDX_DIM / 16));
        int h = r / (IDX_DIM / 16), d16 = r % (IDX_DIM / 16);
        int i = q0 + qq;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (i < n_q)
            v = ((const uint4 *)(q8 + ((size_t)i * H + h) * IDX_DIM))[d16];
        store_e4m3x16_as_f16(qs + (qq * H + h) * MMA_LD + d16 * 16, v);
    }
    for (int c = tid; c < QPB * H; c += 128) {
        int i = q0 + c / H;
        wf[c] = i < n_q ? __fmul_rn(w[(size_t)i * H + c % H], q_scale[(size_t)i * H + c % H]) : 0.0f;
    }
    __syncthreads();
    int nv_max = 0;
#pragma unroll
    for (int x = 0; x < QPB; x++)
        nv_max = max(nv_max, nv_s[x]);

    const int qq = warp % QPB;
    const int i = q0 + qq;
    const int kw = (warp / QPB) * 32; // this warp's keys within the tile
    const __half *qw = qs + qq * H * MMA_LD;
    float wr[4][2]; // weights of the rows this lane holds: heads mt*16+g and +8
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
        wr[mt][0] = wf[qq * H + mt * 16 + g];
        wr[mt][1] = wf[qq * H + mt * 16 + g + 8];
    }
    const int nv = nv_s[qq];
    float *row = scores + (size_t)i * ld;

    for (int tile = key0; tile < key_end; tile += KT) {
        if (tile >= nv_max) { // every query of the block is masked here
            if (i < n_q)
                for (int u = tile + kw + lane; u < min(tile + kw + 32, key_end); u += 32)
                    row[u] = -INFINITY;
            continue;
        }
        __syncthreads(); // previous tile's readers are done with ks
#pragma unroll
        for (int c = 0; c < CH; c++) {
            int e = tid + c * 128;
            store_e4m3x16_as_f16(ks + (e / (IDX_DIM / 16)) * MMA_LD + (e % (IDX_DIM / 16)) * 16, pre[c]);
        }
        if (tid < KT)
            ksc_s[tid] = pre_s;
        __syncthreads();
        if (tile + KT < key_end && tile + KT < nv_max)
            load_tile(tile + KT);
        if (i >= n_q)
            continue;
        float acc[4][4][4];
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int x = 0; x < 4; x++)
                    acc[mt][nt][x] = 0.0f;
        // ldmatrix row addresses: A rows (lane & 15) at column +8*(lane >> 4); B x4 covers two n8 tiles.
        const __half *qa = qw + (lane & 15) * MMA_LD + (lane >> 4) * 8;
        const __half *kb = ks + (kw + (lane & 7) + ((lane >> 4) << 3)) * MMA_LD + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int k0 = 0; k0 < IDX_DIM; k0 += 16) {
            uint32_t b[4][2];
#pragma unroll
            for (int pr = 0; pr < 2; pr++) {
                uint32_t r[4];
                ldmatrix_x4(r, kb + pr * 16 * MMA_LD + k0);
                b[2 * pr][0] = r[0];
                b[2 * pr][1] = r[1];
                b[2 * pr + 1][0] = r[2];
                b[2 * pr + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                uint32_t a[4];
                ldmatrix_x4(a, qa + mt * 16 * MMA_LD + k0);
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    mma_f16_16816(acc[mt][nt], a[0], a[1], a[2], a[3], b[nt][0], b[nt][1]);
            }
        }
        // Epilogue: per key column, sum over the 64 head rows of w * relu(dot).
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            float p0 = 0.0f, p1 = 0.0f;
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                p0 += wr[mt][0] * fmaxf(acc[mt][nt][0], 0.0f) + wr[mt][1] * fmaxf(acc[mt][nt][2], 0.0f);
                p1 += wr[mt][0] * fmaxf(acc[mt][nt][1], 0.0f) + wr[mt][1] * fmaxf(acc[mt][nt][3], 0.0f);
            }
#pragma unroll
            for (int o = 4; o < 32; o <<= 1) {
                p0 += __shfl_xor_sync(0xffffffffu, p0, o);
                p1 += __shfl_xor_sync(0xffffffffu, p1, o);
            }
            if (g == 0) {
                int c = kw + nt * 8 + 2 * t;
                int u = tile + c;
                if (u < key_end)
                    row[u] = u < nv ? p0 * ksc_s[c] : -INFINITY;
                if (u + 1 < key_end)
                    row[u + 1] = u + 1 < nv ? p1 * ksc_s[c + 1] : -INFINITY;
            }
        }
    }
}

template <int QPB> static size_t mma_smem_bytes(void)
{
    constexpr int KT = (4 / QPB) * 32;
    return (size_t)(QPB * 64 * MMA_LD + KT * MMA_LD) * sizeof(__half) + (QPB * 64 + KT) * sizeof(float);
}

template <int QPB> static enum sd_status launch_mma(const struct sd_cuda_indexer_params *p)
{
    constexpr int KT = (4 / QPB) * 32;
    static int attr_set = 0;
    size_t smem = mma_smem_bytes<QPB>();
    if (!attr_set) {
        SD_CHECK_CUDA(
            cudaFuncSetAttribute(indexer_mma_kernel<QPB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = 1;
    }
    int n_tiles = (p->n_k + KT - 1) / KT;
    int n_qb = (p->n_q + QPB - 1) / QPB;
    // About one wave of blocks (4 per SM); more tiles per block amortise the query load and let the
    // register prefetch of the next key tile overlap the math.
    long want = 4L * sd_cuda_num_sms();
    long tpb = ((long)n_tiles * n_qb + want - 1) / want;
    if (tpb < 1)
        tpb = 1;
    if (tpb > 32)
        tpb = 32;
    int gx = (int)((n_tiles + tpb - 1) / tpb);
    SD_CHECK_ARG(n_qb <= 65535);
    dim3 grid(gx, n_qb);
    indexer_mma_kernel<QPB><<<grid, 128, smem, (cudaStream_t)p->stream>>>(
        p->q8, p->q_scale, p->w, p->kcache, p->k_scale, p->n_valid, p->scores, p->ld_scores, p->n_q, p->n_k, (int)tpb);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_indexer_fp8(const struct sd_cuda_indexer_params *p)
{
    SD_CHECK_ARG(p && p->q8 && p->q_scale && p->w && p->kcache && p->scores);
    SD_CHECK_ARG(p->n_q >= 0 && p->n_k >= 0 && p->ld_scores >= (size_t)p->n_k);
    SD_CHECK_SUPPORTED(p->n_heads >= 1 && p->n_heads <= 64);
    if (p->n_q == 0 || p->n_k == 0)
        return SD_OK;
    int variant = p->variant;
    if (variant == SD_CUDA_INDEXER_AUTO)
        variant = p->n_heads == 64 ? SD_CUDA_INDEXER_MMA : SD_CUDA_INDEXER_SIMPLE;
    if (variant == SD_CUDA_INDEXER_MMA) {
        SD_CHECK_SUPPORTED(p->n_heads == 64);
        return p->n_q >= 4 ? launch_mma<4>(p) : launch_mma<1>(p);
    }
    SD_CHECK_SUPPORTED(variant == SD_CUDA_INDEXER_SIMPLE);
    SD_CHECK_ARG(p->n_q <= 65535);
    dim3 grid((p->n_k + 127) / 128, p->n_q);
    indexer_simple_kernel<<<grid, 128, 0, (cudaStream_t)p->stream>>>(
        p->q8, p->q_scale, p->w, p->kcache, p->k_scale, p->n_valid, p->scores, p->ld_scores, p->n_heads, p->n_k);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_indexer_topk(const struct sd_cuda_indexer_topk_params *p)
{
    SD_CHECK_ARG(p && p->scratch && p->idx && p->chunk >= 1 && p->k >= 1);
    const struct sd_cuda_indexer_params *ix = &p->ix;
    for (int c0 = 0; c0 < ix->n_q; c0 += p->chunk) {
        int nq = ix->n_q - c0 < p->chunk ? ix->n_q - c0 : p->chunk;
        struct sd_cuda_indexer_params q = *ix;
        q.q8 = ix->q8 + (size_t)c0 * ix->n_heads * SD_CUDA_IDX_DIM;
        q.q_scale = ix->q_scale + (size_t)c0 * ix->n_heads;
        q.w = ix->w + (size_t)c0 * ix->n_heads;
        q.n_valid = ix->n_valid ? ix->n_valid + c0 : NULL;
        q.scores = p->scratch;
        q.ld_scores = (size_t)ix->n_k;
        q.n_q = nq;
        enum sd_status st = sd_cuda_indexer_fp8(&q);
        if (st != SD_OK)
            return st;
        struct sd_cuda_topk_params t = {};
        t.scores = p->scratch;
        t.ld_scores = (size_t)ix->n_k;
        t.n_valid = q.n_valid;
        t.n_rows = nq;
        t.n_cols = ix->n_k;
        t.k = p->k;
        t.idx = p->idx + (size_t)c0 * p->k;
        t.ld_idx = (size_t)p->k;
        t.stream = ix->stream;
        st = sd_cuda_topk(&t);
        if (st != SD_OK)
            return st;
    }
    return SD_OK;
}
