// topk.cu: per-row top-k by radix select (one block of 1024 threads per row). Scores map to
// order-preserving 32-bit keys (NaN ranks as -inf); three histogram passes over 11/11/10-bit digits
// find the k-th largest key T and how many of the keys equal to T are needed; a last pass in index
// order writes the chosen indices ascending (keys > T, plus the first `need` keys == T by index),
// which is exactly the set of sd_dsa_topk, ties included. Slots past min(k, n_valid) get -1.
// A few long rows (decode: one per layer) can instead run each pass over slices in parallel blocks (split path).
#include <math.h>

#include "sd_cuda_common.cuh"

#define TOPK_THREADS 1024
#define TOPK_ITEMS 8 // consecutive elements per thread in the final pass (chunk 8192 < 2^16)

static __device__ __forceinline__ uint32_t order_key(float f)
{
    if (f != f)
        f = -INFINITY;
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Block-wide exclusive sum over TOPK_THREADS threads; *total gets the sum. Uses 33 ints of scratch.
static __device__ __forceinline__ uint32_t block_excl_scan(uint32_t v, uint32_t *scratch, uint32_t *total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint32_t x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o)
            x += y;
    }
    if (lane == 31)
        scratch[warp] = x;
    __syncthreads();
    if (warp == 0) {
        uint32_t s = scratch[lane];
        uint32_t z = s;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            uint32_t y = __shfl_up_sync(0xffffffffu, z, o);
            if (lane >= o)
                z += y;
        }
        scratch[lane] = z - s; // exclusive prefix of warp totals
        if (lane == 31)
            scratch[32] = z;
    }
    __syncthreads();
    uint32_t r = scratch[warp] + x - v;
    *total = scratch[32];
    __syncthreads(); // scratch reusable on return
    return r;
}

// Candidates of row r: columns [0, n_valid[r]) clamped to n_cols (all n_cols without n_valid).
static __device__ __forceinline__ int row_n(const int *n_valid, int r, int n_cols)
{
    int n = n_valid ? n_valid[r] : n_cols;
    return max(0, min(n, n_cols));
}

// A row with n <= k candidates: all of them, then -1 (every thread of the block calls it).
static __device__ __forceinline__ void write_all(int32_t *out, int n, int k)
{
    for (int x = threadIdx.x; x < k; x += TOPK_THREADS)
        out[x] = x < n ? x : -1;
}

// One radix pass's choice (all TOPK_THREADS threads call it): over the nbins counts of hist (shared or global),
// the digit whose bin holds the k_rem-th largest key, and how many keys lie in the bins above it, into the shared
// *sel_digit / *sel_above (visible to the block on return).
static __device__ __forceinline__ void pick_digit(const uint32_t *hist, uint32_t nbins, uint32_t k_rem,
                                                  uint32_t *scan_tmp, uint32_t *sel_digit, uint32_t *sel_above)
{
    // Counts from the top: thread t holds bins (descending) [per*t, per*t + per).
    const uint32_t per = nbins / TOPK_THREADS;             // 2 or 1
    const uint32_t hi_bin = nbins - 1 - per * threadIdx.x; // highest bin of this thread's chunk
    uint32_t c = 0;
    for (uint32_t x = 0; x < per; x++)
        c += hist[hi_bin - x];
    uint32_t total;
    uint32_t above = block_excl_scan(c, scan_tmp, &total);
    if (above < k_rem && k_rem <= above + c) {
        uint32_t a = above;
        for (uint32_t x = 0; x < per; x++) {
            uint32_t h = hist[hi_bin - x];
            if (k_rem <= a + h) {
                *sel_digit = hi_bin - x;
                *sel_above = a;
                break;
            }
            a += h;
        }
    }
    __syncthreads();
}

// The ordered write of columns [i0, i0 + ITEMS) of this thread (a block covers TOPK_THREADS * ITEMS consecutive
// columns from its first thread's i0): keys > T go to their rank among the > T keys plus the == T keys taken
// before them, keys == T only while fewer than need_eq came before. run_gt / run_eq: the > T and == T keys of the
// columns before the block's; *total gets the block's counts (gt | eq << 16).
template <int ITEMS>
static __device__ __forceinline__ void write_chunk(const float *row, int i0, int n, uint32_t T, uint32_t need_eq,
                                                   uint32_t run_gt, uint32_t run_eq, int32_t *out, uint32_t *scan_tmp,
                                                   uint32_t *total)
{
    uint32_t keys[ITEMS];
    uint32_t packed = 0; // gt count | eq count << 16
#pragma unroll
    for (int x = 0; x < ITEMS; x++) {
        keys[x] = i0 + x < n ? order_key(row[i0 + x]) : 0u;
        if (i0 + x < n)
            packed += keys[x] > T ? 1u : (keys[x] == T ? 0x10000u : 0u);
    }
    uint32_t excl = block_excl_scan(packed, scan_tmp, total);
    uint32_t gt_before = run_gt + (excl & 0xffffu), eq_before = run_eq + (excl >> 16);
#pragma unroll
    for (int x = 0; x < ITEMS; x++) {
        if (i0 + x >= n)
            break;
        if (keys[x] > T) {
            out[gt_before + min(eq_before, need_eq)] = i0 + x;
            gt_before++;
        } else if (keys[x] == T) {
            if (eq_before < need_eq)
                out[gt_before + eq_before] = i0 + x;
            eq_before++;
        }
    }
}

__global__ void __launch_bounds__(TOPK_THREADS)
    topk_radix_kernel(const float *__restrict__ scores, size_t ld, const int *__restrict__ n_valid, int n_cols, int k,
                      int32_t *idx, size_t ld_idx)
{
    __shared__ uint32_t hist[2048];
    __shared__ uint32_t scan_tmp[33];
    __shared__ uint32_t sel_digit, sel_above;
    const int r = blockIdx.x, tid = threadIdx.x;
    const float *row = scores + (size_t)r * ld;
    int32_t *out = idx + (size_t)r * ld_idx;
    const int n = row_n(n_valid, r, n_cols);
    if (n <= k) {
        write_all(out, n, k);
        return;
    }
    uint32_t prefix = 0, mask = 0;
    uint32_t k_rem = (uint32_t)k;
    const int shifts[3] = {21, 10, 0};
    const int nbits[3] = {11, 11, 10};
    for (int pass = 0; pass < 3; pass++) {
        const int shift = shifts[pass];
        const uint32_t nbins = 1u << nbits[pass];
        for (uint32_t b = tid; b < nbins; b += TOPK_THREADS)
            hist[b] = 0;
        __syncthreads();
        for (int x = tid; x < n; x += TOPK_THREADS) {
            uint32_t key = order_key(row[x]);
            if ((key & mask) == prefix)
                atomicAdd(&hist[(key >> shift) & (nbins - 1)], 1u);
        }
        __syncthreads();
        pick_digit(hist, nbins, k_rem, scan_tmp, &sel_digit, &sel_above);
        prefix |= sel_digit << shift;
        mask |= (nbins - 1) << shift;
        k_rem -= sel_above;
        __syncthreads();
    }
    // prefix == T (the k-th largest key); take every key > T and the first k_rem keys == T.
    const uint32_t T = prefix, need_eq = k_rem;
    uint32_t run_gt = 0, run_eq = 0;
    for (int base = 0; base < n; base += TOPK_THREADS * TOPK_ITEMS) {
        uint32_t total;
        write_chunk<TOPK_ITEMS>(row, base + tid * TOPK_ITEMS, n, T, need_eq, run_gt, run_eq, out, scan_tmp, &total);
        run_gt += total & 0xffffu;
        run_eq += total >> 16;
    }
}

// ---- split path: a few long rows, each over S slices of SD_CUDA_TOPK_SLICE columns in parallel blocks.
// Per row, scratch words: hist[2048] | state: prefix, mask, k_rem, unused | count[S][2] (keys > T, keys == T).
// Pass p: topk_split_hist (grid S x rows) adds each slice's digit histogram into hist; topk_split_select (one
// block per row) picks the digit as the one-block kernel does, updates the state and clears hist. Then
// topk_split_count counts each slice's keys > T and == T, and topk_split_write writes each slice's chosen
// indices at its offset (the counts of the slices before it): the one-block kernel's output exactly.
#define SPLIT_HIST_THREADS 256
#define SPLIT_ITEMS (SD_CUDA_TOPK_SLICE / TOPK_THREADS) // 4 consecutive elements per thread in the write

__global__ void __launch_bounds__(SPLIT_HIST_THREADS)
    topk_split_hist(const float *__restrict__ scores, size_t ld, const int *__restrict__ n_valid, int n_cols, int k,
                    uint32_t *scr, size_t row_words, int pass)
{
    __shared__ uint32_t sh[2048];
    const int r = blockIdx.y, s = blockIdx.x, tid = threadIdx.x;
    const int n = row_n(n_valid, r, n_cols);
    if (n <= k)
        return;
    uint32_t *hist = scr + (size_t)r * row_words;
    const uint32_t *st = hist + 2048;
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
    const uint32_t nbins = pass == 2 ? 1024u : 2048u;
    const uint32_t prefix = pass ? st[0] : 0u, mask = pass ? st[1] : 0u;
    for (uint32_t b = tid; b < nbins; b += SPLIT_HIST_THREADS)
        sh[b] = 0;
    __syncthreads();
    const float *row = scores + (size_t)r * ld;
    const int x1 = min(n, (s + 1) * SD_CUDA_TOPK_SLICE);
    for (int x = s * SD_CUDA_TOPK_SLICE + tid; x < x1; x += SPLIT_HIST_THREADS) {
        uint32_t key = order_key(row[x]);
        if ((key & mask) == prefix)
            atomicAdd(&sh[(key >> shift) & (nbins - 1)], 1u);
    }
    __syncthreads();
    for (uint32_t b = tid; b < nbins; b += SPLIT_HIST_THREADS)
        if (sh[b])
            atomicAdd(&hist[b], sh[b]);
}

__global__ void __launch_bounds__(TOPK_THREADS)
    topk_split_select(const int *__restrict__ n_valid, int n_cols, int k, uint32_t *scr, size_t row_words, int pass)
{
    __shared__ uint32_t scan_tmp[33];
    __shared__ uint32_t sel_digit, sel_above;
    const int r = blockIdx.x, tid = threadIdx.x;
    const int n = row_n(n_valid, r, n_cols);
    if (n <= k)
        return;
    uint32_t *hist = scr + (size_t)r * row_words, *st = hist + 2048;
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
    const uint32_t nbins = pass == 2 ? 1024u : 2048u;
    const uint32_t prefix = pass ? st[0] : 0u, mask = pass ? st[1] : 0u, k_rem = pass ? st[2] : (uint32_t)k;
    pick_digit(hist, nbins, k_rem, scan_tmp, &sel_digit, &sel_above);
    for (uint32_t b = tid; b < 2048; b += TOPK_THREADS) // cleared for the next pass (and the next call)
        hist[b] = 0;
    if (tid == 0) {
        st[0] = prefix | (sel_digit << shift);
        st[1] = mask | ((nbins - 1) << shift);
        st[2] = k_rem - sel_above;
    }
}

__global__ void __launch_bounds__(SPLIT_HIST_THREADS)
    topk_split_count(const float *__restrict__ scores, size_t ld, const int *__restrict__ n_valid, int n_cols, int k,
                     uint32_t *scr, size_t row_words)
{
    __shared__ uint32_t red[2][SPLIT_HIST_THREADS / 32];
    const int r = blockIdx.y, s = blockIdx.x, tid = threadIdx.x;
    const int n = row_n(n_valid, r, n_cols);
    if (n <= k)
        return;
    uint32_t *st = scr + (size_t)r * row_words + 2048;
    const uint32_t T = st[0];
    const float *row = scores + (size_t)r * ld;
    uint32_t gt = 0, eq = 0;
    const int x1 = min(n, (s + 1) * SD_CUDA_TOPK_SLICE);
    for (int x = s * SD_CUDA_TOPK_SLICE + tid; x < x1; x += SPLIT_HIST_THREADS) {
        uint32_t key = order_key(row[x]);
        gt += key > T;
        eq += key == T;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        gt += __shfl_xor_sync(0xffffffffu, gt, o);
        eq += __shfl_xor_sync(0xffffffffu, eq, o);
    }
    if ((tid & 31) == 0) {
        red[0][tid >> 5] = gt;
        red[1][tid >> 5] = eq;
    }
    __syncthreads();
    if (tid == 0) {
        uint32_t g = 0, e = 0;
        for (int w = 0; w < SPLIT_HIST_THREADS / 32; w++)
            g += red[0][w], e += red[1][w];
        st[4 + 2 * s] = g;
        st[4 + 2 * s + 1] = e;
    }
}

__global__ void __launch_bounds__(TOPK_THREADS)
    topk_split_write(const float *__restrict__ scores, size_t ld, const int *__restrict__ n_valid, int n_cols, int k,
                     const uint32_t *scr, size_t row_words, int32_t *idx, size_t ld_idx)
{
    __shared__ uint32_t scan_tmp[33];
    __shared__ uint32_t pre_gt, pre_eq;
    const int r = blockIdx.y, s = blockIdx.x, tid = threadIdx.x;
    const int n = row_n(n_valid, r, n_cols);
    int32_t *out = idx + (size_t)r * ld_idx;
    if (n <= k) {
        if (s == 0)
            write_all(out, n, k);
        return;
    }
    const uint32_t *st = scr + (size_t)r * row_words + 2048;
    const uint32_t T = st[0], need_eq = st[2];
    if (tid == 0) {
        uint32_t g = 0, e = 0;
        for (int j = 0; j < s; j++)
            g += st[4 + 2 * j], e += st[4 + 2 * j + 1];
        pre_gt = g;
        pre_eq = e;
    }
    __syncthreads();
    uint32_t total;
    write_chunk<SPLIT_ITEMS>(scores + (size_t)r * ld, s * SD_CUDA_TOPK_SLICE + tid * SPLIT_ITEMS, n, T, need_eq, pre_gt,
                             pre_eq, out, scan_tmp, &total);
}

static size_t split_row_words(int n_cols)
{
    size_t S = ((size_t)n_cols + SD_CUDA_TOPK_SLICE - 1) / SD_CUDA_TOPK_SLICE;
    return 2048 + 4 + 2 * S;
}

extern "C" size_t sd_cuda_topk_scratch_bytes(int n_rows, int n_cols)
{
    return (size_t)(n_rows > 0 ? n_rows : 0) * split_row_words(n_cols > 0 ? n_cols : 0) * sizeof(uint32_t);
}

extern "C" enum sd_status sd_cuda_topk(const struct sd_cuda_topk_params *p)
{
    SD_CHECK_ARG(p && p->scores && p->idx && p->k >= 1 && p->n_rows >= 0 && p->n_cols >= 0);
    SD_CHECK_ARG(p->ld_scores >= (size_t)p->n_cols && p->ld_idx >= (size_t)p->k);
    if (p->n_rows == 0)
        return SD_OK;
    if (p->scratch && p->n_rows <= SD_CUDA_TOPK_SPLIT_ROWS && p->n_cols >= SD_CUDA_TOPK_SPLIT_COLS &&
        p->scratch_bytes >= sd_cuda_topk_scratch_bytes(p->n_rows, p->n_cols)) {
        cudaStream_t st = (cudaStream_t)p->stream;
        size_t rw = split_row_words(p->n_cols);
        uint32_t *scr = (uint32_t *)p->scratch;
        // hist must start at zero: the select kernels leave it so, but the first use (or one after a failed
        // launch) may find anything there
        SD_CHECK_CUDA(cudaMemsetAsync(scr, 0, sd_cuda_topk_scratch_bytes(p->n_rows, p->n_cols), st));
        dim3 grid((unsigned)((p->n_cols + SD_CUDA_TOPK_SLICE - 1) / SD_CUDA_TOPK_SLICE), (unsigned)p->n_rows);
        for (int pass = 0; pass < 3; pass++) {
            topk_split_hist<<<grid, SPLIT_HIST_THREADS, 0, st>>>(p->scores, p->ld_scores, p->n_valid, p->n_cols, p->k,
                                                                 scr, rw, pass);
            SD_CHECK_LAUNCH();
            topk_split_select<<<p->n_rows, TOPK_THREADS, 0, st>>>(p->n_valid, p->n_cols, p->k, scr, rw, pass);
            SD_CHECK_LAUNCH();
        }
        topk_split_count<<<grid, SPLIT_HIST_THREADS, 0, st>>>(p->scores, p->ld_scores, p->n_valid, p->n_cols, p->k, scr,
                                                              rw);
        SD_CHECK_LAUNCH();
        topk_split_write<<<grid, TOPK_THREADS, 0, st>>>(p->scores, p->ld_scores, p->n_valid, p->n_cols, p->k, scr, rw,
                                                        p->idx, p->ld_idx);
        SD_CHECK_LAUNCH();
        return SD_OK;
    }
    topk_radix_kernel<<<p->n_rows, TOPK_THREADS, 0, (cudaStream_t)p->stream>>>(p->scores, p->ld_scores, p->n_valid,
                                                                               p->n_cols, p->k, p->idx, p->ld_idx);
    SD_CHECK_LAUNCH();
    return SD_OK;
}
