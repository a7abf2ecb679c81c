// mla_attn.cu: absorbed MLA attention in fp32 over the fp32 latent cache (or the kv_fp8 one, dequantized as its rows
// load), the forward pass's MLA attention (kernels/forward.cu), sparse over the indexer's top-k or dense causal. In the
// absorbed form every head of a query attends over the same latent rows (MQA), so one block takes one query and a group
// of up to 32 heads, gathers 32 latent rows per tile into shared memory once and uses them for every head of the group
// (the per-head kernel it replaces re-read each row once per head). Rows are copied with cp.async (16-byte, no register
// staging) into two tile buffers, so the next tile loads while this one is used. One thread per output dim (256 threads
// up to d_lat 256, 512 above); in the QK step lane = row and the warps share the group's heads. Online softmax in fp32.
// When a launch has fewer blocks than the device has multiprocessors (decode), the key list is split
// over blocks (split-K); each split writes its normalized output and log-sum-exp, and a second kernel
// merges them. Generic dimensions: d_lat + d_rope any width that fits shared memory, d_lat <= 512.
#include <math.h>

#include "sd_cuda_common.cuh"

#define MA_TT 32             // latent rows per tile (one per lane in the QK step)
#define MA_MAX_SPLIT 32      // at most one warp's worth of splits (the merge reduces them in one warp)
#define MA_MIN_SPLIT_KEYS 64 // a split gets at least this many keys

struct ma_args {
    const float *q;     // [n_q][n_heads][D]
    const float *kv;    // [n_tokens][D]
    const uint8_t *kv8; // or (kv NULL) kv_fp8 rows of rb bytes, dequantized on load
    size_t rb;
    const int32_t *idx; // [n_q][n_idx] or NULL (dense causal)
    float *out;         // [n_q][n_heads][dv]                 (split == 1)
    float *part;        // [n_q][n_heads][split][dv], then [n_q][n_heads][split] lse   (split > 1)
    int n_q, n_heads, D, dv, dlp, n_idx, n_tokens, pos0, split, chunk;
    const int *d_pos0; // device position of query 0 (dense), or NULL: pos0
    int nbuf; // tile buffers: 2 = the next tile's rows load while this one is used
    float scale;
};

// 16-byte global -> shared copy that bypasses the registers (sm_80+); src_bytes 0 writes zeros.
static __device__ __forceinline__ void cp_async16(float *dst, const float *src, int src_bytes)
{
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
}
static __device__ __forceinline__ void cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::);
}
template <int N> static __device__ __forceinline__ void cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Token slot of key j of query i (-1: none).
static __device__ __forceinline__ int ma_token(const struct ma_args &a, int i, int j, int j1)
{
    if (j >= j1)
        return -1;
    int u = a.idx ? a.idx[(size_t)i * a.n_idx + j] : j;
    return (u < 0 || u >= a.n_tokens) ? -1 : u;
}

// Load the tile of keys t0 .. t0 + TT - 1 into kvs (rows of dlp floats, zero past D and for skipped slots)
// and their slots into tok. D % 4 == 0: asynchronous 16-byte copies (complete after cp_async_wait);
// otherwise plain loads.
template <bool KV8>
static __device__ __forceinline__ void ma_load_tile(const struct ma_args &a, int i, int t0, int j1, float *kvs,
                                                    int *tok)
{
    const int tid = threadIdx.x, nthr = blockDim.x, D = a.D, dlp = a.dlp;
    if (tid < MA_TT)
        tok[tid] = ma_token(a, i, t0 + tid, j1);
    if (KV8) { // kv_fp8 rows (D % 4 == 0): 4 values per thread and step, dequantized into the tile
        const int D4 = D >> 2;
        for (int e = tid; e < MA_TT * D4; e += nthr) {
            const int r = e / D4, c = e - r * D4, u = ma_token(a, i, t0 + r, j1);
            float w[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (u >= 0)
                sd_kv8_load4(a.kv8 + (size_t)u * a.rb, c, a.dv, w);
            *(float4 *)(kvs + r * dlp + 4 * c) = make_float4(w[0], w[1], w[2], w[3]);
        }
    } else if ((D & 3) == 0) {
        const int D4 = D >> 2;
        int r = tid / D4, c = tid - r * D4, u = ma_token(a, i, t0 + r, j1);
        for (int e = tid; e < MA_TT * D4; e += nthr) {
            cp_async16(kvs + r * dlp + 4 * c, a.kv + (u >= 0 ? (size_t)u * D + 4 * c : 0), u >= 0 ? 16 : 0);
            c += nthr;
            if (c >= D4) {
                while (c >= D4) {
                    c -= D4;
                    r++;
                }
                u = r < MA_TT ? ma_token(a, i, t0 + r, j1) : -1;
            }
        }
        cp_async_commit();
    } else {
        const int W = ((D + 3) >> 2) * 4;
        int r = tid / W, d = tid - r * W, u = ma_token(a, i, t0 + r, j1);
        for (int e = tid; e < MA_TT * W; e += nthr) {
            kvs[r * dlp + d] = (u >= 0 && d < D) ? a.kv[(size_t)u * D + d] : 0.0f;
            d += nthr;
            if (d >= W) {
                while (d >= W) {
                    d -= W;
                    r++;
                }
                u = r < MA_TT ? ma_token(a, i, t0 + r, j1) : -1;
            }
        }
    }
}

// KV8: the rows are kv_fp8 rows (a separate instantiation, so the f32 one keeps its registers).
template <int HG, int NT, bool KV8> __global__ void __launch_bounds__(NT) k_mla_attn(struct ma_args a)
{
    constexpr int NW = NT / 32, HPW = (HG + NW - 1) / NW; // warps; heads per warp in the QK step
    extern __shared__ __align__(16) float sm[];
    const int dlp = a.dlp;
    float *qs = sm;                         // [HG][dlp]
    float *kvb = qs + HG * dlp;             // [nbuf][TT][dlp]
    float *ps = kvb + a.nbuf * MA_TT * dlp; // [TT][HG]
    float *alpha_s = ps + MA_TT * HG;       // [HG]
    int *tokb = (int *)(alpha_s + HG);      // [nbuf][TT]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int i = blockIdx.x, h0 = blockIdx.y * HG, s = blockIdx.z;
    const int nhg = min(HG, a.n_heads - h0);
    const int D = a.D, D4 = (D + 3) >> 2, W = D4 * 4;

    const float *qg = a.q + ((size_t)i * a.n_heads + h0) * D;
    for (int e = tid; e < HG * W; e += NT) {
        int h = e / W, d = e - h * W;
        qs[h * dlp + d] = (h < nhg && d < D) ? qg[(size_t)h * D + d] : 0.0f;
    }
    const int n = a.idx ? a.n_idx : min((a.d_pos0 ? *a.d_pos0 : a.pos0) + i + 1, a.n_tokens);
    const int j0 = s * a.chunk, j1 = min(n, j0 + a.chunk);

    float m_run[HPW], l_run[HPW];
#pragma unroll
    for (int k = 0; k < HPW; k++) {
        m_run[k] = -INFINITY;
        l_run[k] = 0.0f;
    }
    float acc[HG]; // output dim d = tid of every head of the group
#pragma unroll
    for (int h = 0; h < HG; h++)
        acc[h] = 0.0f;

    const int nt = j1 > j0 ? (j1 - j0 + MA_TT - 1) / MA_TT : 0;
    if (nt > 0)
        ma_load_tile<KV8>(a, i, j0, j1, kvb, tokb);
    for (int kt = 0; kt < nt; kt++) {
        const int t0 = j0 + kt * MA_TT, b = a.nbuf == 2 ? (kt & 1) : 0;
        if (a.nbuf == 2 && kt + 1 < nt) {
            ma_load_tile<KV8>(a, i, t0 + MA_TT, j1, kvb + (b ^ 1) * MA_TT * dlp, tokb + (b ^ 1) * MA_TT);
            cp_async_wait<1>(); // this tile's copies are done, the next tile's may still run
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); // tile kt (and qs, on the first pass) visible to every thread
        const float *kvs = kvb + b * MA_TT * dlp;
        const int *tok_s = tokb + b * MA_TT;
        // QK: lane = row of the tile, warp w takes heads w, w + 8, ...
        const bool valid = tok_s[lane] >= 0;
        const float4 *kr = (const float4 *)(kvs + lane * dlp);
#pragma unroll
        for (int k = 0; k < HPW; k++) {
            const int h = warp + NW * k;
            if (h >= HG) // warp-uniform
                continue;
            const float4 *qh = (const float4 *)(qs + h * dlp);
            float s0 = 0.0f, s1 = 0.0f;
            int c = 0;
            for (; c + 2 <= D4; c += 2) {
                float4 k4 = kr[c], q4 = qh[c], k5 = kr[c + 1], q5 = qh[c + 1];
                s0 += q4.x * k4.x + q4.y * k4.y + q4.z * k4.z + q4.w * k4.w;
                s1 += q5.x * k5.x + q5.y * k5.y + q5.z * k5.z + q5.w * k5.w;
            }
            if (c < D4) {
                float4 k4 = kr[c], q4 = qh[c];
                s0 += q4.x * k4.x + q4.y * k4.y + q4.z * k4.z + q4.w * k4.w;
            }
            float x = valid ? (s0 + s1) * a.scale : -INFINITY;
            float mx = sd_warp_max(x);
            float mn = fmaxf(m_run[k], mx);
            float p = x == -INFINITY ? 0.0f : expf(x - mn);
            float al = mn == -INFINITY ? 1.0f : expf(m_run[k] - mn);
            l_run[k] = l_run[k] * al + sd_warp_sum(p);
            m_run[k] = mn;
            ps[lane * HG + h] = p;
            if (lane == 0)
                alpha_s[h] = al;
        }
        __syncthreads();
        // PV: this thread's dim d = tid, all heads of the group.
        if (tid < a.dv) {
#pragma unroll
            for (int h = 0; h < HG; h++)
                acc[h] *= alpha_s[h];
            const int cnt = min(MA_TT, j1 - t0);
            for (int t = 0; t < cnt; t++) {
                const float v = kvs[t * dlp + tid];
                const float4 *pt = (const float4 *)(ps + t * HG);
#pragma unroll
                for (int h4 = 0; h4 < HG / 4; h4++) {
                    float4 pp = pt[h4];
                    acc[4 * h4 + 0] += pp.x * v;
                    acc[4 * h4 + 1] += pp.y * v;
                    acc[4 * h4 + 2] += pp.z * v;
                    acc[4 * h4 + 3] += pp.w * v;
                }
            }
        }
        __syncthreads(); // kvs, tok_s and ps of this tile are consumed
        if (a.nbuf == 1 && kt + 1 < nt)
            ma_load_tile<KV8>(a, i, t0 + MA_TT, j1, kvb, tokb);
    }
    float *m_s = ps, *l_s = ps + HG; // ps holds TT * HG >= 2 * HG floats
    if (lane == 0) {
#pragma unroll
        for (int k = 0; k < HPW; k++) {
            const int h = warp + NW * k;
            if (h < HG) {
                m_s[h] = m_run[k];
                l_s[h] = l_run[k];
            }
        }
    }
    __syncthreads();
    const size_t row0 = (size_t)i * a.n_heads + h0; // (query, first head of the group)
    if (tid < a.dv) {
#pragma unroll
        for (int h = 0; h < HG; h++) {
            if (h >= nhg)
                break;
            float l = l_s[h], inv = l > 0.0f ? 1.0f / l : 0.0f;
            float *o = a.split == 1 ? a.out + (row0 + h) * a.dv : a.part + ((row0 + h) * a.split + s) * a.dv;
            o[tid] = acc[h] * inv;
        }
    }
    if (a.split > 1 && tid < nhg) {
        float l = l_s[tid];
        float *lse = a.part + (size_t)a.n_q * a.n_heads * a.split * a.dv;
        lse[(row0 + tid) * a.split + s] = l > 0.0f ? m_s[tid] + logf(l) : -INFINITY;
    }
}

// Merge the splits of each (query, head) row: out = sum_s w_s o_s / sum_s w_s, w_s = exp(lse_s - max).
__global__ void __launch_bounds__(128) k_mla_merge(const float *part, int rows, int split, int dv, float *out)
{
    __shared__ float w_s[MA_MAX_SPLIT];
    __shared__ float inv_s;
    const int r = blockIdx.x;
    if (threadIdx.x < 32) {
        const float *lse = part + (size_t)rows * split * dv + (size_t)r * split;
        float x = (int)threadIdx.x < split ? lse[threadIdx.x] : -INFINITY;
        float m = sd_warp_max(x);
        float w = x == -INFINITY ? 0.0f : expf(x - m);
        float sum = sd_warp_sum(w);
        w_s[threadIdx.x] = w;
        if (threadIdx.x == 0)
            inv_s = sum > 0.0f ? 1.0f / sum : 0.0f;
    }
    __syncthreads();
    const float *po = part + (size_t)r * split * dv;
    for (int d = threadIdx.x; d < dv; d += blockDim.x) {
        float o = 0.0f;
        for (int x = 0; x < split; x++)
            if (w_s[x] != 0.0f)
                o += w_s[x] * po[(size_t)x * dv + d];
        out[(size_t)r * dv + d] = o * inv_s;
    }
}

// Largest dynamic shared memory a block may opt in to on the current device (read once; 0 if unknown).
static int ma_smem_optin(void)
{
    static int optin = -1;
    if (optin < 0) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
            v = 0;
        optin = v;
    }
    return optin;
}

static int ma_heads_per_block(int n_heads)
{
    return n_heads >= 32 ? 32 : n_heads > 8 ? 16 : n_heads > 4 ? 8 : 4;
}

template <int HG, int NT, bool KV8>
static enum sd_status ma_launch(const struct ma_args *a, dim3 grid, size_t smem, void *st)
{
    static size_t attr_bytes = 0; // per instantiation: raised once to the largest size launched
    if (smem > 48 * 1024 && smem > attr_bytes) {
        SD_CHECK_CUDA(
            cudaFuncSetAttribute(k_mla_attn<HG, NT, KV8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_bytes = smem;
    }
    k_mla_attn<HG, NT, KV8><<<grid, NT, smem, (cudaStream_t)st>>>(*a);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

template <int NT, bool KV8>
static enum sd_status ma_dispatch(int hg, const struct ma_args *a, dim3 grid, size_t smem, void *st)
{
    switch (hg) {
    case 4:
        return ma_launch<4, NT, KV8>(a, grid, smem, st);
    case 8:
        return ma_launch<8, NT, KV8>(a, grid, smem, st);
    case 16:
        return ma_launch<16, NT, KV8>(a, grid, smem, st);
    default:
        return ma_launch<32, NT, KV8>(a, grid, smem, st);
    }
}

extern "C" size_t sd_cuda_mla_attn_scratch_floats(int n_heads, int d_lat)
{
    // Splits are used only while n_q * groups < n_SM, and then n_q * groups * split < 3 n_SM blocks.
    int hg = ma_heads_per_block(n_heads > 0 ? n_heads : 1);
    return (size_t)3 * sd_cuda_num_sms() * hg * ((size_t)(d_lat > 0 ? d_lat : 1) + 1);
}

extern "C" enum sd_status sd_cuda_mla_attn(const struct sd_cuda_mla_attn_params *p)
{
    SD_CHECK_ARG(p && p->q && (p->kv != NULL) != (p->kv8 != NULL) && p->out);
    SD_CHECK_ARG(p->n_q >= 0 && p->n_heads > 0 && p->d_lat > 0 && p->d_rope >= 0 && p->n_tokens >= 0);
    SD_CHECK_ARG(p->idx == NULL || p->n_idx >= 0);
    SD_CHECK_ARG(p->pos0 >= 0 && p->n_split >= 0);
    SD_CHECK_SUPPORTED(p->d_lat <= 512);
    SD_CHECK_SUPPORTED(!p->kv8 || (p->d_lat % 4 == 0 && p->d_rope % 4 == 0));
    if (p->n_q == 0)
        return SD_OK;
    const int hg = ma_heads_per_block(p->n_heads), groups = (p->n_heads + hg - 1) / hg;
    const int D = p->d_lat + p->d_rope, dlp = ((D + 31) / 32) * 32 + 4; // row stride = 4 mod 32 banks
    // Two tile buffers when the rows load asynchronously (D % 4 == 0) and they fit, else one.
    int nbuf = D % 4 == 0 ? 2 : 1;
    size_t smem = 0;
    for (;; nbuf--) {
        smem = ((size_t)(hg + nbuf * MA_TT) * dlp + (size_t)MA_TT * hg + hg) * sizeof(float) +
               (size_t)nbuf * MA_TT * sizeof(int);
        if (nbuf == 1 || smem <= (size_t)ma_smem_optin())
            break;
    }
    SD_CHECK_SUPPORTED(smem <= (size_t)ma_smem_optin());
    SD_CHECK_SUPPORTED(groups <= 65535 && p->n_q <= 0x7fffffff);

    struct ma_args a = {};
    a.q = p->q, a.kv = p->kv, a.idx = p->idx, a.out = p->out, a.part = p->scratch;
    a.kv8 = p->kv8, a.rb = p->kv8 ? sd_cuda_kv_fp8_row_bytes(p->d_lat, p->d_rope) : 0;
    a.n_q = p->n_q, a.n_heads = p->n_heads, a.D = D, a.dv = p->d_lat, a.dlp = dlp;
    a.n_idx = p->idx ? p->n_idx : 0, a.n_tokens = p->n_tokens, a.pos0 = p->pos0, a.scale = p->scale;
    a.d_pos0 = p->idx ? NULL : p->d_pos0;
    a.nbuf = nbuf;
    // Longest key list of the launch.
    long long n_max = p->idx ? p->n_idx : (long long)p->pos0 + p->n_q;
    if (!p->idx && n_max > p->n_tokens)
        n_max = p->n_tokens;
    long long base = (long long)p->n_q * groups;
    int split = 1;
    if (p->n_split > 0) {
        split = p->n_split;
    } else if (base < sd_cuda_num_sms()) {
        long long want = (2LL * sd_cuda_num_sms() + base - 1) / base, by_keys = n_max / MA_MIN_SPLIT_KEYS;
        split = (int)(want < by_keys ? want : by_keys);
    }
    if (split > MA_MAX_SPLIT)
        split = MA_MAX_SPLIT;
    size_t per_split = (size_t)p->n_q * p->n_heads * ((size_t)p->d_lat + 1);
    if (split > 1 && (size_t)split * per_split > p->scratch_floats)
        split = p->scratch ? (int)(p->scratch_floats / per_split) : 1;
    if (split < 1 || n_max <= 0)
        split = 1;
    long long chunk = n_max > 0 ? (n_max + split - 1) / split : 1;
    chunk = (chunk + MA_TT - 1) / MA_TT * MA_TT;
    if (n_max > 0)
        split = (int)((n_max + chunk - 1) / chunk);
    a.split = split, a.chunk = (int)chunk;
    dim3 grid((unsigned)p->n_q, (unsigned)groups, (unsigned)split);
    // One thread per output dim: 256 threads up to d_lat 256, 512 above (16 warps share the QK heads).
    enum sd_status st;
    if (p->kv8)
        st = p->d_lat <= 256 ? ma_dispatch<256, true>(hg, &a, grid, smem, p->stream)
                             : ma_dispatch<512, true>(hg, &a, grid, smem, p->stream);
    else
        st = p->d_lat <= 256 ? ma_dispatch<256, false>(hg, &a, grid, smem, p->stream)
                             : ma_dispatch<512, false>(hg, &a, grid, smem, p->stream);
    if (st != SD_OK || split == 1)
        return st;
    int rows = p->n_q * p->n_heads;
    k_mla_merge<<<rows, 128, 0, (cudaStream_t)p->stream>>>(p->scratch, rows, split, p->d_lat, p->out);
    SD_CHECK_LAUNCH();
    return SD_OK;
}
