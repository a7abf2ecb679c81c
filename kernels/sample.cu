// sample.cu: next-token sampling on the device (the forward pass's forward_sample), engine/sampler.c's algorithm over
// a device logits row so that the logits never leave the GPU: repetition penalty on the given ids, greedy argmax
// (lowest id on ties; NaN anywhere gives -1), temperature, then the candidates sorted by logit (higher first, lower id
// on ties: one stable radix sort), top-k as the first k, softmax against the best logit, top-p as the shortest prefix
// whose mass reaches top_p, and the host's uniform draw walked in the same order as the CPU (id order when neither
// top-k nor top-p cuts). Sums are in double like the CPU's, by a scan instead of one after another.
#include <cub/cub.cuh>
#include <math.h>

#include "sd_cuda_common.cuh"

#define SM_NT 1024

struct sd_cuda_sampler {
    int n_vocab;
    float *keys, *keys_out; // scaled logits, and sorted
    int32_t *vals, *vals_out;
    double *e, *cum; // probabilities in draw order, their inclusive prefix sums
    int32_t *pen;    // penalized ids (device), n_vocab
    int32_t *h_pen;  // pinned staging for them
    struct sm_state *st;
    int32_t *h_token; // pinned
    void *tmp;
    size_t tmp_bytes;
};

struct sm_state {
    int best, last_finite, m, nan; // argmax (-1: none finite), the highest finite id, finite count, NaN seen
    int keep;                      // candidates the draw walks
    int token;
};

__global__ void k_sm_penalty(float *logits, const int32_t *ids, int n, float pen)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float l = logits[ids[i]];
        logits[ids[i]] = l > 0.0f ? l / pen : l * pen;
    }
}

// One block: the argmax (value, then lower id), NaN, the count and the highest id of the finite (> -inf) logits.
__global__ void __launch_bounds__(SM_NT) k_sm_argmax(const float *logits, int n, struct sm_state *st)
{
    __shared__ float bv[SM_NT / 32];
    __shared__ int bi[SM_NT / 32], bm[SM_NT / 32], bl[SM_NT / 32], bn[SM_NT / 32];
    float v = -INFINITY;
    int idx = -1, m = 0, last = -1, nan = 0;
    for (int i = threadIdx.x; i < n; i += SM_NT) {
        float l = logits[i];
        if (isnan(l)) {
            nan = 1;
            continue;
        }
        if (l > -INFINITY) {
            m++;
            last = i;
            if (idx < 0 || l > v) // ids increase within a thread: the first of equal values stays
                v = l, idx = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
        if (i2 >= 0 && (idx < 0 || v2 > v || (v2 == v && i2 < idx)))
            v = v2, idx = i2;
        m += __shfl_xor_sync(0xffffffffu, m, o);
        last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
        nan |= __shfl_xor_sync(0xffffffffu, nan, o);
    }
    const int w = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0)
        bv[w] = v, bi[w] = idx, bm[w] = m, bl[w] = last, bn[w] = nan;
    __syncthreads();
    if (threadIdx.x == 0) {
        v = bv[0], idx = bi[0], m = bm[0], last = bl[0], nan = bn[0];
        for (int k = 1; k < SM_NT / 32; k++) {
            if (bi[k] >= 0 && (idx < 0 || bv[k] > v || (bv[k] == v && bi[k] < idx)))
                v = bv[k], idx = bi[k];
            m += bm[k], last = max(last, bl[k]), nan |= bn[k];
        }
        st->best = idx, st->m = m, st->last_finite = last, st->nan = nan, st->token = nan ? -1 : idx;
    }
}

// Temperature (in place, as the CPU), then the sort keys: finite scaled logits, -inf for the rest (sorted last).
__global__ void k_sm_scale(float *logits, int n, float inv_t, float *keys, int32_t *vals)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float l = logits[i] * inv_t;
        logits[i] = l;
        keys[i] = l;
        vals[i] = i;
    }
}

// Probabilities in draw order: sorted (by_sort) for the first m' candidates, or in id order.
__global__ void k_sm_exp(const float *keys_sorted, const float *logits, int n, int by_sort, int top_k,
                         struct sm_state *st, double *e)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    const int b = st->best; // -1 (nothing finite) or NaN present: k_sm_pick ignores all this
    const float mx = b >= 0 ? logits[b] : 0.0f;
    if (by_sort) {
        int m = st->m, keep = top_k > 0 && top_k < m ? top_k : m;
        if (i == 0)
            st->keep = keep;
        e[i] = i < keep ? (double)expf(keys_sorted[i] - mx) : 0.0;
    } else {
        if (i == 0)
            st->keep = n;
        float l = logits[i];
        e[i] = l > -INFINITY ? (double)expf(l - mx) : 0.0;
    }
}

// The draw: top-p cut (sorted order only), then the first candidate whose prefix sum exceeds u * sum.
__global__ void k_sm_pick(const double *cum, const int32_t *ids_sorted, int by_sort, float top_p, double u,
                          struct sm_state *st)
{
    if (threadIdx.x != 0 || st->nan || st->best < 0)
        return;
    int keep = st->keep;
    double sum = cum[keep - 1];
    if (by_sort && top_p < 1.0f) {
        double want = (double)top_p * sum;
        int lo = 0, hi = keep - 1; // first i with cum[i] >= want (exists unless rounding: then all)
        if (cum[hi] < want) {
            lo = keep - 1;
        } else {
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (cum[mid] >= want)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            sum = cum[lo];
        }
        keep = lo + 1;
    }
    double r = u * sum;
    int lo = 0, hi = keep - 1; // first j with r < cum[j]; none: the last
    if (!(r < cum[hi])) {
        lo = hi;
    } else {
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (r < cum[mid])
                hi = mid;
            else
                lo = mid + 1;
        }
    }
    st->token = by_sort ? ids_sorted[lo] : (r < cum[keep - 1] ? lo : st->last_finite);
}

extern "C" enum sd_status sd_cuda_sampler_new(int n_vocab, struct sd_cuda_sampler **out)
{
    SD_CHECK_ARG(out && n_vocab > 0);
    *out = NULL;
    struct sd_cuda_sampler *s = (struct sd_cuda_sampler *)calloc(1, sizeof *s);
    if (!s) {
        sd_cuda_set_error("calloc", __FILE__, __LINE__, "out of memory");
        return SD_ERR_NOMEM;
    }
    s->n_vocab = n_vocab;
    size_t a = 0, b = 0;
    cudaError_t e = cub::DeviceRadixSort::SortPairsDescending(NULL, a, (const float *)NULL, (float *)NULL,
                                                              (const int32_t *)NULL, (int32_t *)NULL, n_vocab);
    if (e == cudaSuccess)
        e = cub::DeviceScan::InclusiveSum(NULL, b, (const double *)NULL, (double *)NULL, n_vocab);
    s->tmp_bytes = a > b ? a : b;
    if (e == cudaSuccess)
        e = cudaMalloc(&s->keys, (size_t)n_vocab * 2 * sizeof(float));
    if (e == cudaSuccess)
        e = cudaMalloc(&s->vals, (size_t)n_vocab * 3 * sizeof(int32_t));
    if (e == cudaSuccess)
        e = cudaMalloc(&s->e, (size_t)n_vocab * 2 * sizeof(double));
    if (e == cudaSuccess)
        e = cudaMalloc(&s->st, sizeof(struct sm_state));
    if (e == cudaSuccess)
        e = cudaMalloc(&s->tmp, s->tmp_bytes ? s->tmp_bytes : 1);
    if (e == cudaSuccess)
        e = cudaMallocHost(&s->h_pen, (size_t)n_vocab * sizeof(int32_t));
    if (e == cudaSuccess)
        e = cudaMallocHost(&s->h_token, sizeof(int32_t));
    if (e != cudaSuccess) {
        sd_cuda_sampler_free(s);
        SD_CHECK_CUDA(e);
    }
    s->keys_out = s->keys + n_vocab;
    s->vals_out = s->vals + n_vocab;
    s->pen = s->vals + 2 * (size_t)n_vocab;
    s->cum = s->e + n_vocab;
    *out = s;
    return SD_OK;
}

extern "C" void sd_cuda_sampler_free(struct sd_cuda_sampler *s)
{
    if (!s)
        return;
    cudaFree(s->keys);
    cudaFree(s->vals);
    cudaFree(s->e);
    cudaFree(s->st);
    cudaFree(s->tmp);
    cudaFreeHost(s->h_pen);
    cudaFreeHost(s->h_token);
    free(s);
}

extern "C" enum sd_status sd_cuda_sample(struct sd_cuda_sampler *s, const struct sd_cuda_sample_params *p,
                                         int32_t *token)
{
    SD_CHECK_ARG(s && p && p->logits && token && p->n_vocab == s->n_vocab);
    SD_CHECK_ARG(p->n_penalty >= 0 && p->n_penalty <= s->n_vocab && (p->n_penalty == 0 || p->penalty_ids));
    const int n = s->n_vocab;
    cudaStream_t st = (cudaStream_t)p->stream;
    if (p->n_penalty > 0 && p->repetition_penalty != 1.0f) {
        memcpy(s->h_pen, p->penalty_ids, (size_t)p->n_penalty * sizeof(int32_t));
        SD_CHECK_CUDA(
            cudaMemcpyAsync(s->pen, s->h_pen, (size_t)p->n_penalty * sizeof(int32_t), cudaMemcpyHostToDevice, st));
        k_sm_penalty<<<(p->n_penalty + 255) / 256, 256, 0, st>>>(p->logits, s->pen, p->n_penalty,
                                                                 p->repetition_penalty);
        SD_CHECK_LAUNCH();
    }
    k_sm_argmax<<<1, SM_NT, 0, st>>>(p->logits, n, s->st);
    SD_CHECK_LAUNCH();
    if (p->temperature > 0.0f) {
        // The host reads best / nan only at the end; every later kernel returns early on them (k_sm_pick) or works
        // on values the draw then ignores.
        const int by_sort = (p->top_k > 0 && p->top_k < n) || p->top_p < 1.0f;
        const unsigned g = (unsigned)((n + 255) / 256);
        k_sm_scale<<<g, 256, 0, st>>>(p->logits, n, 1.0f / p->temperature, s->keys, s->vals);
        SD_CHECK_LAUNCH();
        if (by_sort) {
            size_t tb = s->tmp_bytes;
            SD_CHECK_CUDA(cub::DeviceRadixSort::SortPairsDescending(s->tmp, tb, s->keys, s->keys_out, s->vals,
                                                                    s->vals_out, n, 0, 32, st));
        }
        k_sm_exp<<<g, 256, 0, st>>>(s->keys_out, p->logits, n, by_sort, p->top_k, s->st, s->e);
        SD_CHECK_LAUNCH();
        size_t tb = s->tmp_bytes;
        SD_CHECK_CUDA(cub::DeviceScan::InclusiveSum(s->tmp, tb, s->e, s->cum, n, st));
        k_sm_pick<<<1, 32, 0, st>>>(s->cum, s->vals_out, by_sort, p->top_p, p->u, s->st);
        SD_CHECK_LAUNCH();
    }
    SD_CHECK_CUDA(cudaMemcpyAsync(s->h_token, &s->st->token, sizeof(int32_t), cudaMemcpyDeviceToHost, st));
    SD_CHECK_CUDA(cudaStreamSynchronize(st));
    *token = *s->h_token;
    return SD_OK;
}
