// forward.cu: the CUDA forward pass behind engine/backend.h (sd_cuda_backend()). fp32 throughout:
// weights uploaded once as f32 (a GGUF model's quantized matrices dequantized on the host as they are
// uploaded), KV/indexer caches and activations allocated once in device memory,
// GEMMs through cuBLAS sgemm (fp32 accumulation, no TF32). Opt-in BF16 weights (session param
// gpu_weights_bf16): the large matrices (attention, indexer and MLP/expert projections, embeddings/LM head)
// are rounded to bf16 once at upload and kept only in bf16; their GEMMs (mm()) round the activations to bf16
// into one scratch buffer and run cublasGemmEx bf16 x bf16 -> fp32 with fp32 accumulation. Norms, biases,
// the router, W_UK/W_UV (wkv_b) and everything outside the GEMMs stay fp32. Opt-in FP8 weights (session param
// gpu_weights_fp8): matrices released as FP8 with block scales (sd_wmat.fp8) stay e4m3 + f32 scales on the
// device; GEMMs of up to FP8_GEMV_T tokens run as GEMVs that dequantize in registers (fp32, the CPU's f32
// weights exactly), longer ones dequantize the matrix into a scratch buffer (f32, or bf16 with
// gpu_weights_bf16) and run the F32/BF16 GEMM on it. Our kernels for embeddings, RMSNorm,
// LayerNorm, RoPE (both pairings, the config's llama3/YaRN tables), SwiGLU, dense causal GQA attention,
// absorbed MLA attention over all or the indexer's top-k tokens (mla_attn.cu: all heads of a query share each
// gathered latent row; split over blocks for decode), the lightning indexer in fp32 or with
// DeepSeek's FP8 numerics (session param indexer_fp8: Hadamard + e4m3 rows with power-of-two scales, keys
// cached as e4m3 + one fp32 scale per token; scores bit-identical to engine/dsa.c given the same inputs),
// top-k (topk.cu) and MoE routing. Expert execution: for up to MOE_DEV_T tokens (decode) GEMV kernels read each
// slot's expert from the device's routing result (no host round trip, no sync); longer chunks run each selected
// expert's rows through cuBLAS after the (small) routing result is read back to the host. The step mirrors
// engine/session.c op for op. Every kernel reads the position from device memory (f->dpos, copied with the token
// ids), so one-token decode steps launch the same kernels with the same arguments for 2048 positions in a row
// (key_bound) and run as a replayed CUDA graph (step_graph; session param gpu_no_graph launches them one by one).
// In bf16 mode at DeepSeek-V3.2's shapes DSA's two heavy kernels run on tensor cores (session param gpu_attn_exact
// keeps the exact ones): the FP8 indexer's scores (indexer.cu MMA over this cache's flat layout) and the MLA
// attention of prefill chunks (mla_decode_mma.cu over a bf16 copy of the layer's latent rows).
// Session param fp8_act (DeepSeek's W8A8 numerics): every input of a matrix with an FP8 source (views keep its
// fp8_block) is quantized in 1x128 blocks as the CPU does; FP8 matrices of prefill chunks then run FP8 x FP8 GEMMs
// through cuBLASLt's block-scaled modes (gemm_fp8.cu), every other product (decode GEMVs, the MoE device path, f32 /
// bf16 weights) runs its usual kernel on the round-tripped f32 input.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" { // engine headers are C; sd_status.h must get C linkage before sd_cuda.h includes it
#include "backend.h"
#include "dsa.h"
#include "dtype.h"
#include "model.h"
#include "sd_status.h"
#include "session.h"
}

#include "sd_cuda_common.cuh"

#define SD_CHECK_CUBLAS(expr)                                                                                          \
    do {                                                                                                               \
        cublasStatus_t sd_b_ = (expr);                                                                                 \
        if (sd_b_ != CUBLAS_STATUS_SUCCESS) {                                                                          \
            sd_cuda_set_error(#expr, __FILE__, __LINE__, cublasGetStatusString(sd_b_));                                \
            return SD_ERR_BACKEND;                                                                                     \
        }                                                                                                              \
    } while (0)

// Propagate a status from a helper.
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        enum sd_status sd_s_ = (expr);                                                                                 \
        if (sd_s_ != SD_OK)                                                                                            \
            return sd_s_;                                                                                              \
    } while (0)

#define NT 128    // threads of the row kernels and the attention kernel
#define ATT_ACC 4 // output dims per attention thread: d_v <= NT * ATT_ACC
#define MAX_EXPERTS 1024
#define STAGE_N ((size_t)16 << 20)    // floats of the staging buffer that bf16 weight uploads go through
#define FP8_GEMV_T SD_CUDA_GEMV_FP8_T // FP8 weights: GEMMs of up to this many tokens run as GEMVs (gemv_fp8.cu)
// Device-only weight type of mm(): e4m3 values [rows][cols] in data, f32 block scales in fp8_scale (a device
// pointer), block fp8_block. Not a GGUF type: the value is past every type quant.h names.
#define WT_FP8 ((enum sd_qtype)(SD_Q_TYPE_LIMIT - 1))

struct fwd {
    const struct sd_model *m;
    struct sd_session_params p;
    int topk, deepseek, use_indexer, score_rows;
    int fp8;             // FP8 indexer: caches ik8/iks instead of ikc
    int bf16;            // gpu_weights_bf16: the matrices of mm() are SD_Q_BF16 views of device memory
    int fp8w;            // gpu_weights_fp8: matrices with an FP8 source are WT_FP8 views (e4m3 + scales)
    size_t fp8_max;      // the most elements of one WT_FP8 matrix (sizes wdq)
    void *wdq;           // FP8 weights: one matrix dequantized for a long chunk's GEMM (f32, or bf16 in bf16 mode)
    size_t weight_bytes; // device bytes of the uploaded weights (f32, bf16, e4m3 + scales)
    float *stage;        // setup only: f32 staging for the bf16 conversion (STAGE_N floats), freed after it
    __nv_bfloat16 *xb;   // bf16 mode: GEMM input rounded to bf16, xb_n elements (the largest T x K)
    size_t xb_n;
    int fp8act; // fp8_act: inputs of matrices with an FP8 source quantized (marked fp8_block > 0)
    float *xrt; // fp8_act: a GEMM input after the FP8 round trip, xrt_n floats (the largest T x K)
    size_t xrt_n;
    struct sd_cuda_gemm_fp8 *g8; // fp8_act with gpu_weights_fp8: FP8 x FP8 GEMMs (gemm_fp8.cu) for prefill chunks
    long fp8_gemm_calls;
    cublasHandle_t cb;
    cudaStream_t st;
    void **allocs;
    size_t n_allocs, cap_allocs;
    // weights (device)
    struct sd_wmat embed, lm_head; // F32, or BF16 in bf16 mode
    const float *norm;
    struct sd_layer_weights *L; // host array of structs holding device pointers
    // caches [L][N][row]
    float *kc, *vc, *lat, *ikc;
    uint8_t *lat8;               // kv_fp8: the MLA latent cache in its FP8 rows [L][N][lat8_row] (kv_fp8.cu), lat NULL
    struct sd_cuda_sampler *smp; // device sampling (sample.cu), made at the first forward_sample
    long samples;                // tokens sampled on the device
    size_t lat8_row;
    // a forward call's input, copied in one piece from h_io (pinned): [0] the position of its first token, then its
    // token ids; dpos and ids point into it
    int32_t *dio, *h_io, *ids;
    const int *dpos;
    long g_key; // the graph's launch shape: key_bound's key count, selection live or not
    float *h, *x, *y, *q, *k, *v, *att, *cq, *kva, *qfull, *olat, *o;
    float *mla_part; // split-K partials of sd_cuda_mla_attn (mla_part_n floats)
    uint16_t *latb;  // tensor-core MLA (bf16 mode): one layer's latent rows [0, pos0 + T) rounded to bf16 [N][dl]
    // CUDA graph of a decode step (unless gpu_no_graph): captured for one launch shape (g_key) and replayed until the
    // shape changes; graph_off after a capture failed (steps then launch kernel by kernel).
    cudaGraphExec_t gexec;
    int graph_off;
    long graph_steps, graph_inst; // steps replayed from a graph, instantiations
    long tc_calls;                // tensor-core MLA attention and indexer calls
    int ix_tc;                    // bf16 mode: FP8 indexer scores on tensor cores (sd_cuda_indexer_fp8, MMA)
    void *cublas_ws;              // cuBLAS workspace set explicitly (no allocation inside a capture)
    // MoE device path (T <= MOE_DEV_T): [L][3][E] expert matrix pointers (gate, up, down; NULL for dense
    // layers), all of one type (exp_bf16); activations [MOE_DEV_T * K][Ie] and per-slot outputs [.. * K][H]
    const void **exp_tab;
    const float **exp_stab; // their block scales where the experts are WT_FP8 ([L][3][E], else NULL)
    int exp_bf16, exp_fp8, exp_block;
    int exp_aq; // fp8_act and the experts have an FP8 source: their GEMV inputs are round-tripped
    float *moe_act, *moe_yk;
    size_t mla_part_n;
    float *iq, *ik, *iw, *scores;
    uint8_t *ik8, *iq8; // FP8 indexer: key cache [L][N][di] e4m3, this chunk's queries [T][ni][di]
    float *iks, *iqs;   // their scales: [L][N], [T][ni]
    int32_t *idx;
    int *n_valid;
    void *topk_scr; // sd_cuda_topk's split path (decode: one long row per layer over parallel blocks)
    size_t topk_scr_bytes;
    float *g, *u, *router, *rw, *ex, *ey, *ew;
    int32_t *rsel, *erows;
    float *logits;
    // host staging for MoE dispatch
    int32_t *h_rsel, *h_rows, *h_off;
    float *h_rw, *h_w;
};

// ---------------------------------------------------------------- device memory

static enum sd_status dalloc(struct fwd *f, void **p, size_t bytes)
{
    *p = NULL;
    if (f->n_allocs == f->cap_allocs) {
        size_t cap = f->cap_allocs ? 2 * f->cap_allocs : 256;
        void **na = (void **)realloc(f->allocs, cap * sizeof *na);
        if (!na)
            return SD_ERR_NOMEM;
        f->allocs = na;
        f->cap_allocs = cap;
    }
    SD_CHECK_CUDA(cudaMalloc(p, bytes ? bytes : 4));
    f->allocs[f->n_allocs++] = *p;
    return SD_OK;
}

#define DALLOC(f, ptr, n, type) TRY(dalloc((f), (void **)&(ptr), (size_t)(n) * sizeof(type)))

// Upload n floats (NULL stays NULL).
static enum sd_status upload(struct fwd *f, const float *host, size_t n, const float **dev)
{
    *dev = NULL;
    if (!host)
        return SD_OK;
    float *d;
    DALLOC(f, d, n, float);
    SD_CHECK_CUDA(cudaMemcpy(d, host, n * sizeof(float), cudaMemcpyHostToDevice));
    f->weight_bytes += n * sizeof(float);
    *dev = d;
    return SD_OK;
}

// y[r][c] = bf16(x[r * ldx + c]), round to nearest even; y packed (rows x cols).
__global__ void k_to_bf16(__nv_bfloat16 *y, const float *x, size_t rows, size_t cols, size_t ldx)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows * cols)
        y[i] = __float2bfloat16_rn(x[(i / cols) * ldx + i % cols]);
}

static unsigned blocks(size_t n)
{
    return (unsigned)((n + 255) / 256);
}

// n host floats -> bf16 device memory, converted on the device chunk by chunk through f->stage.
static enum sd_status upload_bf16(struct fwd *f, const float *host, size_t n, const __nv_bfloat16 **dev)
{
    __nv_bfloat16 *d;
    DALLOC(f, d, n, __nv_bfloat16);
    if (!f->stage)
        SD_CHECK_CUDA(cudaMalloc((void **)&f->stage, STAGE_N * sizeof(float)));
    for (size_t o = 0; o < n; o += STAGE_N) {
        size_t c = n - o < STAGE_N ? n - o : STAGE_N; // the stream orders each copy after the previous conversion
        SD_CHECK_CUDA(cudaMemcpyAsync(f->stage, host + o, c * sizeof(float), cudaMemcpyHostToDevice, f->st));
        k_to_bf16<<<blocks(c), 256, 0, f->st>>>(d + o, f->stage, 1, c, c);
        SD_CHECK_LAUNCH();
    }
    SD_CHECK_CUDA(cudaStreamSynchronize(f->st)); // host may be a temporary the caller frees next
    f->weight_bytes += n * sizeof(__nv_bfloat16);
    *dev = d;
    return SD_OK;
}

// A weight matrix view (engine/ops_cpu.h) as f32 on the device: F32 as is, other (GGUF) types
// dequantized on the host first. n: the elements the caller expects (rows x cols of the view).
static enum sd_status upload(struct fwd *f, const struct sd_wmat &host, size_t n, const float **dev)
{
    *dev = NULL;
    if (!host.data)
        return SD_OK;
    if ((size_t)host.rows * (size_t)host.cols != n) {
        sd_cuda_set_error("weight upload", __FILE__, __LINE__, "weight matrix shape differs from the config");
        return SD_ERR_FORMAT;
    }
    if (host.type == SD_Q_F32)
        return upload(f, (const float *)host.data, n, dev);
    float *tmp = (float *)malloc(n * sizeof(float));
    if (!tmp)
        return SD_ERR_NOMEM;
    enum sd_status st = sd_dequantize(host.type, host.data, tmp, (int64_t)n);
    if (st == SD_OK)
        st = upload(f, tmp, n, dev);
    else
        sd_cuda_set_error("weight upload", __FILE__, __LINE__, "cannot dequantize a GGUF weight matrix");
    free(tmp);
    return st;
}

// A released FP8 matrix kept as FP8 (gpu_weights_fp8): e4m3 values and f32 block scales, a WT_FP8 view.
static enum sd_status upload_fp8(struct fwd *f, const struct sd_wmat &host, size_t n, struct sd_wmat *dev)
{
    const int B = host.fp8_block;
    const size_t ns = (size_t)((host.rows + B - 1) / B) * (size_t)((host.cols + B - 1) / B);
    uint8_t *q;
    float *sc;
    DALLOC(f, q, n, uint8_t);
    DALLOC(f, sc, ns, float);
    SD_CHECK_CUDA(cudaMemcpy(q, host.fp8, n, cudaMemcpyHostToDevice));
    SD_CHECK_CUDA(cudaMemcpy(sc, host.fp8_scale, ns * sizeof(float), cudaMemcpyHostToDevice));
    f->weight_bytes += n + ns * sizeof(float);
    if (n > f->fp8_max)
        f->fp8_max = n;
    *dev = sd_wmat{};
    dev->data = q, dev->type = WT_FP8, dev->rows = host.rows, dev->cols = host.cols;
    dev->fp8_scale = sc, dev->fp8_block = B;
    return SD_OK;
}

// A matrix multiplied by mm(): F32 on the device, BF16 in bf16 mode, or WT_FP8 in fp8 mode where the model
// keeps its FP8 source; f32_only (the router, the embedding table that k_embed reads): F32 or BF16 only, and
// F32 only for the router (no bf16: routing decisions).
static enum sd_status upload(struct fwd *f, const struct sd_wmat &host, size_t n, struct sd_wmat *dev,
                             bool f32_only = false, bool no_fp8 = false)
{
    *dev = sd_wmat{};
    dev->type = SD_Q_F32, dev->rows = host.rows, dev->cols = host.cols;
    // Every view of a matrix with an FP8 source keeps its block size: fp8_act quantizes those inputs (mm()).
    dev->fp8_block = host.fp8 && host.fp8_scale ? host.fp8_block : 0;
    if (f->fp8w && !f32_only && !no_fp8 && host.data && host.fp8 && host.fp8_scale && host.fp8_block > 0 &&
        (size_t)host.rows * (size_t)host.cols == n)
        return upload_fp8(f, host, n, dev);
    if (!f->bf16 || f32_only || !host.data) {
        const float *d;
        TRY(upload(f, host, n, &d));
        dev->data = d; // an f32-only matrix (the router) keeps its marker too: the CPU quantizes its input alike
        return SD_OK;
    }
    if ((size_t)host.rows * (size_t)host.cols != n) {
        sd_cuda_set_error("weight upload", __FILE__, __LINE__, "weight matrix shape differs from the config");
        return SD_ERR_FORMAT;
    }
    const __nv_bfloat16 *d = NULL;
    enum sd_status st;
    if (host.type == SD_Q_F32) {
        st = upload_bf16(f, (const float *)host.data, n, &d);
    } else {
        float *tmp = (float *)malloc(n * sizeof(float));
        if (!tmp)
            return SD_ERR_NOMEM;
        st = sd_dequantize(host.type, host.data, tmp, (int64_t)n);
        if (st == SD_OK)
            st = upload_bf16(f, tmp, n, &d);
        else
            sd_cuda_set_error("weight upload", __FILE__, __LINE__, "cannot dequantize a GGUF weight matrix");
        free(tmp);
    }
    if (st == SD_OK)
        dev->data = d, dev->type = SD_Q_BF16;
    return st;
}

// ---------------------------------------------------------------- kernels

static __device__ __forceinline__ double block_sum_d(double v, double *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = 0.0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++)
        s += sh[i];
    return s;
}

static __device__ __forceinline__ float block_sum_f(float v, float *sh)
{
    v = sd_warp_sum(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++)
        s += sh[i];
    return s;
}

static __device__ __forceinline__ float block_max_f(float v, float *sh)
{
    v = sd_warp_max(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = -INFINITY;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++)
        s = fmaxf(s, sh[i]);
    return s;
}

// Rows of an F32 or (bf16 != 0) BF16 table.
__global__ void k_embed(float *h, const void *emb, int bf16, const int32_t *ids, int H)
{
    size_t src = (size_t)ids[blockIdx.x] * H;
    float *dst = h + (size_t)blockIdx.x * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        dst[i] = bf16 ? __bfloat162float(((const __nv_bfloat16 *)emb)[src + i]) : ((const float *)emb)[src + i];
}

// One row per block (y may alias x). Sum of squares in double as the CPU does.
__global__ void k_rmsnorm(float *y, const float *x, const float *w, int D, size_t ld, float eps)
{
    __shared__ double sh[32];
    const float *a = x + (size_t)blockIdx.x * ld;
    float *o = y + (size_t)blockIdx.x * ld;
    double ss = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        ss += (double)a[i] * a[i];
    ss = block_sum_d(ss, sh);
    float r = 1.0f / sqrtf((float)(ss / D) + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        o[i] = a[i] * r * w[i];
}

__global__ void k_layernorm(float *y, const float *x, const float *w, const float *b, int D, size_t ld, float eps)
{
    __shared__ double sh[32];
    const float *a = x + (size_t)blockIdx.x * ld;
    float *o = y + (size_t)blockIdx.x * ld;
    double mean = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        mean += a[i];
    mean = block_sum_d(mean, sh) / D;
    double var = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        var += ((double)a[i] - mean) * ((double)a[i] - mean);
    var = block_sum_d(var, sh) / D;
    float r = 1.0f / sqrtf((float)var + eps), mf = (float)mean;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        o[i] = (a[i] - mf) * r * w[i] + (b ? b[i] : 0.0f);
}

// RoPE on x[t][h] = x + t*ld_t + h*ld_h at position *dpos + t. Grid (T, n_heads), threads >= dim/2.
// Positions are read from device memory (f->dpos) in every kernel of a step, so that a decode step's launches
// do not change with the position and its CUDA graph can be replayed as is.
__global__ void k_rope(float *x, size_t ld_t, size_t ld_h, const int *dpos, struct sd_rope r, int interleaved)
{
    const int pos0 = *dpos;
    int half = r.dim / 2, i = threadIdx.x;
    if (i >= half)
        return;
    float *v = x + (size_t)blockIdx.x * ld_t + (size_t)blockIdx.y * ld_h;
    float ang = (float)(int64_t)(pos0 + (int)blockIdx.x) * r.inv_freq[i];
    float c = cosf(ang) * r.attn_factor, s = sinf(ang) * r.attn_factor;
    int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x1 * c + x0 * s;
}

// x[i] *= a, rounded as one fp32 product (the CPU's w * wscale).
__global__ void k_scale(float *x, float a, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = __fmul_rn(x[i], a);
}

__global__ void k_add(float *h, const float *y, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        h[i] += y[i];
}

__global__ void k_bias(float *y, const float *b, int N, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] += b[i % N];
}

__global__ void k_silu_mul(float *g, const float *u, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

__global__ void k_fill_nvalid(int *nv, int n, const int *dpos)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        nv[i] = *dpos + i + 1;
}

// Cache rows: dst[(*dpos + t) * row + j] = src[t * row + j] for t < T (row floats each).
__global__ void k_store_rows(float *dst, const float *src, int T, size_t row, const int *dpos)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)T * row)
        dst[(size_t)*dpos * row + i] = src[i];
}

// Attention of query (t, h) over keys u (all u <= *dpos + t, or the idx list), online softmax in fp32.
struct attn_args {
    const float *q;
    size_t q_t, q_h;
    const float *k;
    size_t k_u, k_h;
    const float *v;
    size_t v_u, v_h;
    float *o;
    size_t o_t, o_h;
    int dk, dv, group;
    const int *dpos;    // position of query 0 (device)
    const int32_t *idx; // [T][n_idx] or NULL (dense causal)
    int n_idx;
    float scale;
};

__global__ void __launch_bounds__(NT) k_attn(struct attn_args a)
{
    extern __shared__ float sm[];
    float *qs = sm, *ps = sm + a.dk;
    int *us = (int *)(ps + NT);
    __shared__ float red[32];
    const int t = blockIdx.x, h = blockIdx.y, kvh = h / a.group, tid = threadIdx.x;
    const float *qv = a.q + (size_t)t * a.q_t + (size_t)h * a.q_h;
    for (int d = tid; d < a.dk; d += NT)
        qs[d] = qv[d];
    __syncthreads();
    const int n = a.idx ? a.n_idx : *a.dpos + t + 1;
    const float *kb = a.k + (size_t)kvh * a.k_h, *vb = a.v + (size_t)kvh * a.v_h;
    float acc[ATT_ACC];
#pragma unroll
    for (int j = 0; j < ATT_ACC; j++)
        acc[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int base = 0; base < n; base += NT) {
        int j = base + tid, u = -1;
        float sc = -INFINITY;
        if (j < n) {
            u = a.idx ? a.idx[(size_t)t * a.n_idx + j] : j;
            if (u >= 0) {
                const float *kr = kb + (size_t)u * a.k_u;
                float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
                int d = 0;
                for (; d + 4 <= a.dk; d += 4) {
                    s0 += qs[d] * kr[d];
                    s1 += qs[d + 1] * kr[d + 1];
                    s2 += qs[d + 2] * kr[d + 2];
                    s3 += qs[d + 3] * kr[d + 3];
                }
                for (; d < a.dk; d++)
                    s0 += qs[d] * kr[d];
                sc = ((s0 + s1) + (s2 + s3)) * a.scale;
            }
        }
        float mt = block_max_f(sc, red);
        float mn = fmaxf(m, mt);
        if (mn == -INFINITY)
            continue;              // no valid key yet (uniform across the block)
        float corr = expf(m - mn); // m = -inf -> 0
        float p = sc == -INFINITY ? 0.0f : expf(sc - mn);
        __syncthreads();
        ps[tid] = p;
        us[tid] = u;
        l = l * corr + block_sum_f(p, red); // block_sum_f syncs: ps/us visible after it
        int cnt = min(NT, n - base);
#pragma unroll
        for (int jj = 0; jj < ATT_ACC; jj++) {
            int d = tid + jj * NT;
            if (d < a.dv) {
                float s = acc[jj] * corr;
                for (int e = 0; e < cnt; e++) {
                    float pe = ps[e];
                    if (pe != 0.0f)
                        s += pe * vb[(size_t)us[e] * a.v_u + d];
                }
                acc[jj] = s;
            }
        }
        m = mn;
        __syncthreads();
    }
    float *ov = a.o + (size_t)t * a.o_t + (size_t)h * a.o_h;
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int jj = 0; jj < ATT_ACC; jj++) {
        int d = tid + jj * NT;
        if (d < a.dv)
            ov[d] = acc[jj] * inv;
    }
}

// fp32 indexer scores for query rows [t0, t0 + nq): scores[r][u] = sum_j (w[j] * wscale) * relu(q_j . k_u)
// for u < *dpos + t + 1, -inf for other u < n_k. Grid (nq, ceil(n_k / NT)); q of one row in shared memory.
__global__ void __launch_bounds__(NT)
    k_index_scores(const float *q, const float *w, int ni, int di, float wscale, const float *k, int n_k,
                   const int *dpos, int t0, float *scores, size_t ld)
{
    const int pos0 = *dpos;
    extern __shared__ float qs[];
    __shared__ float ws[256];
    const int r = blockIdx.x, t = t0 + r;
    const float *qr = q + (size_t)t * ni * di;
    for (int i = threadIdx.x; i < ni * di; i += NT)
        qs[i] = qr[i];
    for (int j = threadIdx.x; j < ni; j += NT)
        ws[j] = w[(size_t)t * ni + j] * wscale;
    __syncthreads();
    int u = blockIdx.y * NT + threadIdx.x;
    if (u >= n_k)
        return;
    float *row = scores + (size_t)r * ld;
    if (u >= pos0 + t + 1) {
        row[u] = -INFINITY;
        return;
    }
    const float *ku = k + (size_t)u * di;
    float s = 0.0f;
    for (int j = 0; j < ni; j++) {
        const float *qh = qs + (size_t)j * di;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        int d = 0;
        for (; d + 8 <= di; d += 8) {
            s0 += qh[d] * ku[d];
            s1 += qh[d + 1] * ku[d + 1];
            s2 += qh[d + 2] * ku[d + 2];
            s3 += qh[d + 3] * ku[d + 3];
            s4 += qh[d + 4] * ku[d + 4];
            s5 += qh[d + 5] * ku[d + 5];
            s6 += qh[d + 6] * ku[d + 6];
            s7 += qh[d + 7] * ku[d + 7];
        }
        for (; d < di; d++)
            s0 += qh[d] * ku[d];
        float dd = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
        if (dd > 0.0f)
            s += ws[j] * dd;
    }
    row[u] = s;
}

// ---- FP8 indexer (DeepSeek numerics; engine/dsa.c is the reference, matched bit for bit)

// sd_dsa_quant_fp8_row on rows of n floats (n a power of two <= 512): orthonormal Hadamard (same
// butterflies, then times hs = 1/sqrt(n)), amax, scale 2^ceil(log2(max(amax, 1e-4) / 448)), e4m3 of x / scale.
// One block per row; q8 rows of n bytes, one scale per row, from row *dpos on (dpos NULL: from row 0).
__global__ void __launch_bounds__(NT)
    k_quant_fp8(const float *x, int n, float hs, uint8_t *q8, float *scale, const int *dpos)
{
    if (dpos) {
        q8 += (size_t)*dpos * n;
        scale += *dpos;
    }
    __shared__ float v[SD_DSA_MAX_DIM];
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += NT)
        v[i] = xr[i];
    __syncthreads();
    for (int len = 1; len < n; len <<= 1) {
        for (int p = threadIdx.x; p < n / 2; p += NT) {
            int j = (p / len) * 2 * len + p % len;
            float a = v[j], b = v[j + len];
            v[j] = __fadd_rn(a, b);
            v[j + len] = __fsub_rn(a, b);
        }
        __syncthreads();
    }
    float amax = 0.0f;
    for (int i = threadIdx.x; i < n; i += NT) {
        float t = __fmul_rn(v[i], hs);
        v[i] = t;
        amax = fmaxf(amax, fabsf(t));
    }
    amax = block_max_f(amax, red);
    if (amax < 1e-4f)
        amax = 1e-4f;
    float s = sd_pow2_ceil_d(__fdiv_rn(amax, 448.0f));
    float inv = __fdiv_rn(1.0f, s); // exact: s is a power of two
    uint8_t *o = q8 + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += NT)
        o[i] = sd_f32_to_e4m3_d(__fmul_rn(v[i], inv));
    if (threadIdx.x == 0)
        scale[blockIdx.x] = s;
}

#define FP8_LDQ(dpt) ((dpt) + 2) // doubles per query-head segment in smem (16-byte aligned, no bank conflicts)

// FP8 indexer scores for query rows [t0, t0 + nq) against keys [0, n_k): scores[r][u] = ks[u] *
// sum_j (w[j] wscale qs[j]) relu(dot(q8[j], k8[u])) for u <= *dpos + t, -inf for later u. Each dot is exact
// (double: see engine/dsa.c dot_e4m3), so any split of it gives the CPU's value; the head sum is fp32 in head
// order without fused multiply-add, as the CPU. TPK threads per key, DPT dims each (index dim = TPK * DPT).
// Grid (nq, ceil(n_k / (NT / TPK))); smem: decoded queries as doubles, then the folded weights.
template <int DPT, int TPK>
__global__ void __launch_bounds__(NT)
    k_index_scores_fp8(const uint8_t *q8, const float *qs, const float *w, int ni, float wscale, const uint8_t *k8,
                       const float *ks, int n_k, const int *dpos, int t0, float *scores, size_t ld)
{
    const int pos0 = *dpos;
    constexpr int DI = DPT * TPK, KPB = NT / TPK, LDQ = FP8_LDQ(DPT);
    extern __shared__ __align__(16) unsigned char fp8_smem[];
    double *qd = (double *)fp8_smem;                    // [ni][TPK][LDQ]
    float *wf = (float *)(qd + (size_t)ni * TPK * LDQ); // [ni]
    const int r = blockIdx.x, t = t0 + r, nv = pos0 + t + 1;
    float *row = scores + (size_t)r * ld;
    const int u0 = blockIdx.y * KPB;
    if (u0 >= nv) { // the whole block is past this query (uniform exit)
        for (int u = u0 + (int)threadIdx.x; u < min(u0 + KPB, n_k); u += NT)
            row[u] = -INFINITY;
        return;
    }
    const uint8_t *qr = q8 + (size_t)t * ni * DI;
    for (int e = threadIdx.x; e < ni * DI / 2; e += NT) {
        float2 f2 = sd_e4m3x2_to_f2(*(const uint16_t *)(qr + 2 * e));
        int j = (2 * e) / DI, d = (2 * e) % DI;
        double *dst = qd + (j * TPK + d / DPT) * LDQ + d % DPT;
        dst[0] = (double)f2.x;
        dst[1] = (double)f2.y;
    }
    for (int j = threadIdx.x; j < ni; j += NT)
        wf[j] = __fmul_rn(__fmul_rn(w[(size_t)t * ni + j], wscale), qs[(size_t)t * ni + j]);
    __syncthreads();
    const int part = (int)threadIdx.x % TPK, u = u0 + (int)threadIdx.x / TPK;
    const bool live = u < nv && u < n_k;
    double kd[DPT];
    const uint2 *kp = (const uint2 *)(k8 + (size_t)(live ? u : 0) * DI + part * DPT);
#pragma unroll
    for (int c = 0; c < DPT / 8; c++) {
        uint2 v = live ? kp[c] : make_uint2(0, 0);
        uint32_t wd[2] = {v.x, v.y};
#pragma unroll
        for (int x = 0; x < 2; x++) {
            float2 lo = sd_e4m3x2_to_f2((uint16_t)(wd[x] & 0xffffu)), hi = sd_e4m3x2_to_f2((uint16_t)(wd[x] >> 16));
            kd[c * 8 + x * 4 + 0] = lo.x;
            kd[c * 8 + x * 4 + 1] = lo.y;
            kd[c * 8 + x * 4 + 2] = hi.x;
            kd[c * 8 + x * 4 + 3] = hi.y;
        }
    }
    float s = 0.0f;
    for (int j = 0; j < ni; j++) {
        const double2 *qj = (const double2 *)(qd + (j * TPK + part) * LDQ);
        double a0 = 0.0, a1 = 0.0;
#pragma unroll
        for (int c = 0; c < DPT / 2; c++) {
            double2 q = qj[c];
            a0 = fma(q.x, kd[2 * c], a0);
            a1 = fma(q.y, kd[2 * c + 1], a1);
        }
        double dd = a0 + a1;
        if (TPK == 2)
            dd += __shfl_xor_sync(0xffffffffu, dd, 1);
        float d = __double2float_rn(dd);
        if (d > 0.0f)
            s = __fadd_rn(s, __fmul_rn(wf[j], d));
    }
    if (part == 0 && u < n_k)
        row[u] = live ? __fmul_rn(s, ks[u]) : -INFINITY;
}

static __device__ int argbest_d(const float *v, int n, const unsigned char *taken)
{
    int b = -1;
    for (int i = 0; i < n; i++) {
        if (taken && taken[i])
            continue;
        if (b < 0 || v[i] > v[b])
            b = i;
    }
    return b;
}

struct route_args {
    const float *router, *bias;
    int E, K, G, topk_group, sigmoid, norm_topk;
    float scaling;
    int32_t *rsel;
    float *rw;
};

// MoE routing, one thread per token, exactly the CPU's selection rule (engine/session.c moe()).
__global__ void k_route(struct route_args a, int T)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T)
        return;
    float sc[MAX_EXPERTS], choice[MAX_EXPERTS];
    unsigned char taken[MAX_EXPERTS];
    const int E = a.E, K = a.K, G = a.G, per = E / G;
    const float *r = a.router + (size_t)t * E;
    if (a.sigmoid) {
        for (int e = 0; e < E; e++)
            sc[e] = 1.0f / (1.0f + expf(-r[e]));
    } else {
        float mx = -INFINITY;
        for (int e = 0; e < E; e++)
            mx = fmaxf(mx, r[e]);
        float sum = 0.0f;
        for (int e = 0; e < E; e++) {
            sc[e] = expf(r[e] - mx);
            sum += sc[e];
        }
        float inv = 1.0f / sum;
        for (int e = 0; e < E; e++)
            sc[e] *= inv;
    }
    for (int e = 0; e < E; e++)
        choice[e] = sc[e] + (a.bias ? a.bias[e] : 0.0f);
    if (G > 1) {
        float gs[MAX_EXPERTS];
        unsigned char keep[MAX_EXPERTS];
        for (int g = 0; g < G; g++) {
            for (int i = 0; i < per; i++)
                taken[i] = 0;
            int b = argbest_d(choice + g * per, per, taken);
            float v = choice[g * per + b];
            if (per > 1) {
                taken[b] = 1;
                v += choice[g * per + argbest_d(choice + g * per, per, taken)];
            }
            gs[g] = v;
        }
        for (int g = 0; g < G; g++)
            taken[g] = keep[g] = 0;
        for (int i = 0; i < a.topk_group; i++) {
            int g = argbest_d(gs, G, taken);
            taken[g] = 1;
            keep[g] = 1;
        }
        for (int e = 0; e < E; e++)
            if (!keep[e / per])
                choice[e] = 0.0f;
    }
    for (int e = 0; e < E; e++)
        taken[e] = 0;
    float sum = 0.0f;
    for (int i = 0; i < K; i++) {
        int e = argbest_d(choice, E, taken);
        taken[e] = 1;
        a.rsel[(size_t)t * K + i] = e;
        a.rw[(size_t)t * K + i] = sc[e];
        sum += sc[e];
    }
    for (int i = 0; i < K; i++) {
        float w = a.rw[(size_t)t * K + i];
        if (a.norm_topk && K > 1)
            w /= (sum + 1e-20f);
        a.rw[(size_t)t * K + i] = w * a.scaling;
    }
}

// ex[j] = x[rows[j]] (grid n, rows of H)
__global__ void k_gather(float *ex, const float *x, const int32_t *rows, int H)
{
    const float *src = x + (size_t)rows[blockIdx.x] * H;
    float *dst = ex + (size_t)blockIdx.x * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        dst[i] = src[i];
}

// y[rows[j]] += w[j] * ey[j] (rounded as the CPU: product, then sum)
__global__ void k_scatter_add(float *y, const float *ey, const int32_t *rows, const float *w, int H)
{
    float *dst = y + (size_t)rows[blockIdx.x] * H;
    const float *src = ey + (size_t)blockIdx.x * H;
    float wj = w[blockIdx.x];
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        dst[i] = __fadd_rn(dst[i], __fmul_rn(wj, src[i]));
}

// ---- MoE of a few tokens without the host (decode): the routed experts run as GEMVs that read their expert
// from the device's routing result, so there is no copy of the routing to the host and no stream sync.
#define CUBLAS_WS_BYTES ((size_t)32 << 20)
#define STEP_KEYS 2048  // decode steps launch their key-wide kernels for a multiple of this many keys (key_bound)
#define MLA_TC_MIN_T 16 // bf16 mode: chunks of at least this many queries run MLA attention on tensor cores
#define MOE_DEV_T 4     // tokens per forward up to which the device path runs (more: grouped cuBLAS GEMMs)

template <typename W> static __device__ __forceinline__ float w_at(const W *w, size_t i);
template <> __device__ __forceinline__ float w_at<float>(const float *w, size_t i)
{
    return w[i];
}
template <> __device__ __forceinline__ float w_at<__nv_bfloat16>(const __nv_bfloat16 *w, size_t i)
{
    return __bfloat162float(w[i]);
}
// The GEMM path's input rounding: none for f32 weights, bf16 for bf16 weights (mm() rounds x into f->xb).
template <typename W> static __device__ __forceinline__ float x_round(float v)
{
    return sizeof(W) == 2 ? __bfloat162float(__float2bfloat16(v)) : v;
}

// One warp: dot over k of (e4m3(row[k]) * srow[k / B]) * xs[k], each weight dequantized as
// sd_dequant_fp8_block does (sd_dequant16_e4m3), 16 weights per lane and step where the row allows.
static __device__ __forceinline__ float warp_dot_row_fp8(const uint8_t *row, const float *srow, int B, const float *xs,
                                                         int K)
{
    const int lane = threadIdx.x & 31;
    float s = 0.0f, w[16];
    int k0 = 0;
    if (K % 16 == 0 && B % 16 == 0 && ((uintptr_t)row & 15) == 0) {
        for (int c = lane; c < K / 16; c += 32) {
            sd_dequant16_e4m3(__ldg((const uint4 *)row + c), srow[c * 16 / B], w);
#pragma unroll
            for (int j = 0; j < 16; j++)
                s += w[j] * xs[c * 16 + j];
        }
        k0 = K;
    }
    for (int k = k0 + lane; k < K; k += 32) {
        sd_dequant16_e4m3(make_uint4(row[k], 0, 0, 0), srow[k / B], w);
        s += w[0] * xs[k];
    }
    return sd_warp_sum(s);
}

// One warp: dot(row[0..K), xs[0..K)) with the row read in 16-byte pieces where it is aligned.
template <typename W> static __device__ __forceinline__ float warp_dot_row(const W *row, const float *xs, int K)
{
    const int lane = threadIdx.x & 31;
    constexpr int V = 16 / sizeof(W); // elements per 16 bytes
    float s = 0.0f;
    int k0 = 0;
    if (K % V == 0 && ((uintptr_t)row & 15) == 0) {
        for (int c = lane; c < K / V; c += 32) {
            uint4 raw = ((const uint4 *)row)[c];
            const W *v = (const W *)&raw;
#pragma unroll
            for (int j = 0; j < V; j++)
                s += w_at(v, j) * xs[c * V + j];
        }
        k0 = K;
    }
    for (int k = k0 + lane; k < K; k += 32)
        s += w_at(row, k) * xs[k];
    return sd_warp_sum(s);
}

// One warp: row r of expert matrix m (W, or e4m3 with block scales ms / B where W is uint8_t) dot xs.
template <typename W>
static __device__ __forceinline__ float expert_dot(const void *m, const float *ms, int B, int r, const float *xs, int K)
{
    if constexpr (sizeof(W) == 1)
        return warp_dot_row_fp8((const uint8_t *)m + (size_t)r * K, ms + (size_t)(r / B) * ((K + B - 1) / B), B, xs, K);
    else
        return warp_dot_row((const W *)m + (size_t)r * K, xs, K);
}

// act[slot][r] = silu(gate_e[r] . x_t) * (up_e[r] . x_t), e = rsel[slot], t = slot / K; 8 rows per block.
// W: the experts' type (float, bf16, or uint8_t for e4m3 with the scale tables gs / us, block B).
template <typename W>
__global__ void __launch_bounds__(256)
    k_moe_gateup(const float *x, int H, const int32_t *rsel, int K, int E, const void *const *gate,
                 const void *const *up, int Ie, float *act, const float *const *gs, const float *const *us, int B)
{
    extern __shared__ float xs[];
    const int slot = blockIdx.y, t = slot / K, e = rsel[slot];
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        xs[i] = x_round<W>(x[(size_t)t * H + i]);
    __syncthreads();
    const int r = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (r >= Ie)
        return;
    float out = 0.0f; // an invalid expert index (routing never makes one) contributes nothing
    if (e >= 0 && e < E) {
        float g = expert_dot<W>(gate[e], gs ? gs[e] : NULL, B, r, xs, H);
        float u = expert_dot<W>(up[e], us ? us[e] : NULL, B, r, xs, H);
        out = g / (1.0f + expf(-g)) * u;
    }
    if ((threadIdx.x & 31) == 0)
        act[(size_t)slot * Ie + r] = out;
}

// yk[slot][r] = down_e[r] . act[slot]; 8 rows per block.
template <typename W>
__global__ void __launch_bounds__(256)
    k_moe_down(const float *act, int Ie, const int32_t *rsel, int E, const void *const *down, int H, float *yk,
               const float *const *ds, int B)
{
    extern __shared__ float as[];
    const int slot = blockIdx.y, e = rsel[slot];
    for (int i = threadIdx.x; i < Ie; i += blockDim.x)
        as[i] = x_round<W>(act[(size_t)slot * Ie + i]);
    __syncthreads();
    const int r = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (r >= H)
        return;
    float out = e >= 0 && e < E ? expert_dot<W>(down[e], ds ? ds[e] : NULL, B, r, as, Ie) : 0.0f;
    if ((threadIdx.x & 31) == 0)
        yk[(size_t)slot * H + r] = out;
}

// y[t] += sum over the token's K slots in ascending expert order (the grouped path's order) of w * yk,
// each product and sum rounded on its own as the CPU does.
__global__ void k_moe_combine(float *y, const float *yk, const int32_t *rsel, const float *rw, int K, int H, int T)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * H)
        return;
    const int t = (int)(i / H), r = (int)(i % H);
    float acc = y[i];
    int last = -1;
    for (int n = 0; n < K; n++) { // K is small: pick the next larger expert index each round
        int best = -1;
        for (int k = 0; k < K; k++) {
            int e = rsel[t * K + k];
            if (e > last && (best < 0 || e < rsel[t * K + best]))
                best = k;
        }
        if (best < 0)
            break;
        last = rsel[t * K + best];
        acc = __fadd_rn(acc, __fmul_rn(rw[t * K + best], yk[(size_t)(t * K + best) * H + r]));
    }
    y[i] = acc;
}

// ---------------------------------------------------------------- launch helpers

// y[T][N] = x[T][K] w[N][K]^T (+ beta y), leading dims in elements (as sd_matmul_ld). w is an F32 or BF16
// view of device memory: F32 runs sgemm; BF16 rounds x to bf16 into f->xb (packed, ld K), then
// bf16 x bf16 -> fp32 through cublasGemmEx with fp32 accumulation (same operands and transposes).
// WT_FP8 (packed, ldw = K): up to FP8_GEMV_T tokens run sd_cuda_gemv_fp8; more dequantize w into f->wdq (f32, or bf16
// in bf16 mode) and continue as an F32 / BF16 matrix.
static enum sd_status mm(struct fwd *f, float *y, int ldy, const float *x, int ldx, const struct sd_wmat &w, int ldw,
                         int T, int N, int K, float beta)
{
    if (T <= 0 || N <= 0)
        return SD_OK;
    const float one = 1.0f;
    if (f->fp8act && w.fp8_block > 0) { // DeepSeek's W8A8: the input quantized in 1x128 blocks
        if (w.type == WT_FP8 && T > FP8_GEMV_T && f->g8 && ldw == K) {
            struct sd_cuda_gemm_fp8_params g = {};
            g.w = {(const uint8_t *)w.data, w.fp8_scale, N, K, w.fp8_block};
            g.x = x, g.ldx = ldx, g.y = y, g.ldy = ldy, g.n_tok = T, g.beta = beta, g.stream = f->st;
            enum sd_status st = sd_cuda_gemm_fp8(f->g8, &g);
            if (st == SD_OK) {
                f->fp8_gemm_calls++;
                return SD_OK;
            }
            if (st != SD_ERR_UNSUPPORTED) // no algorithm for this shape: the f32 round trip below instead
                return st;
        }
        if ((size_t)T * (size_t)K > f->xrt_n) {
            sd_cuda_set_error("mm", __FILE__, __LINE__, "input exceeds the FP8 round-trip scratch");
            return SD_ERR_BACKEND;
        }
        TRY(sd_cuda_act_roundtrip_fp8(x, ldx, f->xrt, K, T, K, f->st));
        f->fp8act = 0; // the same product on the round-tripped input (no second round trip)
        enum sd_status st = mm(f, y, ldy, f->xrt, K, w, ldw, T, N, K, beta);
        f->fp8act = 1;
        return st;
    }
    if (w.type == WT_FP8) {
        if (ldw != K || (size_t)N * (size_t)K > f->fp8_max || !f->wdq) {
            sd_cuda_set_error("mm", __FILE__, __LINE__, "FP8 matrix not packed or larger than the dequant scratch");
            return SD_ERR_BACKEND;
        }
        const struct sd_cuda_fp8_mat m8 = {(const uint8_t *)w.data, w.fp8_scale, N, K, w.fp8_block};
        if (T <= FP8_GEMV_T) {
            struct sd_cuda_gemv_fp8_params g = {};
            g.w = m8, g.x = x, g.ldx = ldx, g.y = y, g.ldy = ldy, g.n_tok = T, g.beta = beta, g.stream = f->st;
            return sd_cuda_gemv_fp8(&g);
        }
        TRY(sd_cuda_dequant_fp8(&m8, f->wdq, f->bf16, f->st));
        struct sd_wmat d = w;
        d.data = f->wdq;
        d.type = f->bf16 ? SD_Q_BF16 : SD_Q_F32;
        return mm(f, y, ldy, x, ldx, d, K, T, N, K, beta);
    }
    if (w.type == SD_Q_F32) {
        SD_CHECK_CUBLAS(cublasSgemm(f->cb, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, (const float *)w.data, ldw, x, ldx,
                                    &beta, y, ldy));
        return SD_OK;
    }
    size_t n = (size_t)T * (size_t)K;
    if (w.type != SD_Q_BF16 || n > f->xb_n) {
        sd_cuda_set_error("mm", __FILE__, __LINE__,
                          w.type != SD_Q_BF16 ? "weight matrix is neither F32 nor BF16" : "input exceeds bf16 scratch");
        return SD_ERR_BACKEND;
    }
    if (n > 0) {
        k_to_bf16<<<blocks(n), 256, 0, f->st>>>(f->xb, x, (size_t)T, (size_t)K, (size_t)ldx);
        SD_CHECK_LAUNCH();
    }
    SD_CHECK_CUBLAS(cublasGemmEx(f->cb, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, w.data, CUDA_R_16BF, ldw, f->xb,
                                 CUDA_R_16BF, K, &beta, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return SD_OK;
}

static enum sd_status matmul(struct fwd *f, float *y, const float *x, const struct sd_wmat &w, const float *bias, int T,
                             int N, int K)
{
    TRY(mm(f, y, N, x, K, w, K, T, N, K, 0.0f));
    if (bias) {
        size_t n = (size_t)T * N;
        k_bias<<<blocks(n), 256, 0, f->st>>>(y, bias, N, n);
        SD_CHECK_LAUNCH();
    }
    return SD_OK;
}

static enum sd_status rmsnorm(struct fwd *f, float *y, const float *x, const float *w, int rows, int D, size_t ld,
                              float eps)
{
    if (rows <= 0)
        return SD_OK;
    k_rmsnorm<<<rows, NT, 0, f->st>>>(y, x, w, D, ld, eps);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

static enum sd_status rope(struct fwd *f, float *x, int T, int n_heads, size_t ld_t, size_t ld_h,
                           const struct sd_rope *r, int interleaved)
{
    if (T <= 0 || n_heads <= 0 || r->dim < 2)
        return SD_OK;
    int thr = ((r->dim / 2 + 31) / 32) * 32;
    k_rope<<<dim3(T, n_heads), thr, 0, f->st>>>(x, ld_t, ld_h, f->dpos, *r, interleaved);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

// Rows [*dpos, *dpos + T) of a cache (row floats each) from src.
static enum sd_status store_rows(struct fwd *f, float *cache, const float *src, int T, size_t row)
{
    size_t n = (size_t)T * row;
    k_store_rows<<<blocks(n), 256, 0, f->st>>>(cache, src, T, row, f->dpos);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

static enum sd_status add(struct fwd *f, float *h, const float *y, size_t n)
{
    k_add<<<blocks(n), 256, 0, f->st>>>(h, y, n);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

static enum sd_status attn(struct fwd *f, const struct attn_args *a, int T, int n_heads)
{
    size_t smem = (size_t)a->dk * sizeof(float) + NT * (sizeof(float) + sizeof(int));
    k_attn<<<dim3(T, n_heads), NT, smem, f->st>>>(*a);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

static enum sd_status mlp(struct fwd *f, const float *x, int T, const struct sd_wmat &wg, const struct sd_wmat &wu,
                          const struct sd_wmat &wd, int I, float *y)
{
    int H = f->m->cfg.hidden_size;
    TRY(matmul(f, f->g, x, wg, NULL, T, I, H));
    TRY(matmul(f, f->u, x, wu, NULL, T, I, H));
    size_t n = (size_t)T * I;
    k_silu_mul<<<blocks(n), 256, 0, f->st>>>(f->g, f->u, n);
    SD_CHECK_LAUNCH();
    return matmul(f, y, f->g, wd, NULL, T, H, I);
}

// FP8 indexer: sd_dsa_quant_fp8_row on `rows` rows of n floats.
// at_pos: the rows go to q8 / scale from row *f->dpos on (the key cache), else from row 0.
static enum sd_status quant_fp8(struct fwd *f, const float *x, int rows, int n, uint8_t *q8, float *scale, int at_pos)
{
    if (rows <= 0)
        return SD_OK;
    k_quant_fp8<<<rows, NT, 0, f->st>>>(x, n, 1.0f / sqrtf((float)n), q8, scale, // hs as engine/dsa.c computes it
                                        at_pos ? f->dpos : NULL);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

static size_t fp8_smem_bytes(int ni, int di)
{
    int tpk = di > 64 ? 2 : 1;
    return (size_t)ni * tpk * FP8_LDQ(di / tpk) * sizeof(double) + (size_t)ni * sizeof(float);
}

// Index dims the FP8 scoring kernel is instantiated for: 8..128, powers of two.
static int fp8_dim_ok(int di)
{
    return di == 8 || di == 16 || di == 32 || di == 64 || di == 128;
}

template <int DPT, int TPK> static enum sd_status fp8_attr(size_t smem)
{
    SD_CHECK_CUDA(
        cudaFuncSetAttribute(k_index_scores_fp8<DPT, TPK>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return SD_OK;
}

template <int DPT, int TPK>
static enum sd_status fp8_launch(struct fwd *f, int ni, float wscale, const uint8_t *k8, const float *ks, int n_k,
                                 int t0, int nq, size_t smem)
{
    constexpr int KPB = NT / TPK;
    k_index_scores_fp8<DPT, TPK><<<dim3(nq, (n_k + KPB - 1) / KPB), NT, smem, f->st>>>(
        f->iq8, f->iqs, f->iw, ni, wscale, k8, ks, n_k, f->dpos, t0, f->scores, (size_t)f->p.n_ctx);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

// Raise the dynamic shared-memory limit of the instance this model uses (once per session).
static enum sd_status fp8_setup(int ni, int di)
{
    size_t smem = fp8_smem_bytes(ni, di);
    switch (di) {
    case 8:
        return fp8_attr<8, 1>(smem);
    case 16:
        return fp8_attr<16, 1>(smem);
    case 32:
        return fp8_attr<32, 1>(smem);
    case 64:
        return fp8_attr<64, 1>(smem);
    default:
        return fp8_attr<64, 2>(smem);
    }
}

static enum sd_status index_scores_fp8(struct fwd *f, int ni, int di, float wscale, const uint8_t *k8, const float *ks,
                                       int n_k, int t0, int nq)
{
    size_t smem = fp8_smem_bytes(ni, di);
    switch (di) {
    case 8:
        return fp8_launch<8, 1>(f, ni, wscale, k8, ks, n_k, t0, nq, smem);
    case 16:
        return fp8_launch<16, 1>(f, ni, wscale, k8, ks, n_k, t0, nq, smem);
    case 32:
        return fp8_launch<32, 1>(f, ni, wscale, k8, ks, n_k, t0, nq, smem);
    case 64:
        return fp8_launch<64, 1>(f, ni, wscale, k8, ks, n_k, t0, nq, smem);
    default:
        return fp8_launch<64, 2>(f, ni, wscale, k8, ks, n_k, t0, nq, smem);
    }
}

// ---------------------------------------------------------------- layers

static enum sd_status attn_gqa(struct fwd *f, int il, int T)
{
    const struct sd_config *c = &f->m->cfg;
    const struct sd_layer_weights *L = &f->L[il];
    int H = c->hidden_size, nh = c->n_heads, nkv = c->n_heads_kv, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd;
    size_t N = (size_t)f->p.n_ctx;
    TRY(matmul(f, f->q, f->x, L->wq, L->bq, T, qd, H));
    TRY(matmul(f, f->k, f->x, L->wk, L->bk, T, kvd, H));
    TRY(matmul(f, f->v, f->x, L->wv, L->bv, T, kvd, H));
    if (L->q_norm) {
        TRY(rmsnorm(f, f->q, f->q, L->q_norm, T * nh, hd, (size_t)hd, c->rms_norm_eps));
        TRY(rmsnorm(f, f->k, f->k, L->k_norm, T * nkv, hd, (size_t)hd, c->rms_norm_eps));
    }
    TRY(rope(f, f->q, T, nh, (size_t)qd, (size_t)hd, &c->rope_main, 0));
    TRY(rope(f, f->k, T, nkv, (size_t)kvd, (size_t)hd, &c->rope_main, 0));
    float *kc = f->kc + (size_t)il * N * kvd, *vc = f->vc + (size_t)il * N * kvd;
    TRY(store_rows(f, kc, f->k, T, (size_t)kvd));
    TRY(store_rows(f, vc, f->v, T, (size_t)kvd));
    struct attn_args a = {};
    a.q = f->q, a.q_t = (size_t)qd, a.q_h = (size_t)hd;
    a.k = kc, a.k_u = (size_t)kvd, a.k_h = (size_t)hd;
    a.v = vc, a.v_u = (size_t)kvd, a.v_h = (size_t)hd;
    a.o = f->att, a.o_t = (size_t)qd, a.o_h = (size_t)hd;
    a.dk = hd, a.dv = hd, a.group = nh / nkv, a.dpos = f->dpos, a.idx = NULL, a.n_idx = 0, a.scale = c->attn_scale;
    TRY(attn(f, &a, T, nh));
    return matmul(f, f->y, f->att, L->wo, NULL, T, H, qd);
}

// Key columns the kernels of a forward call over [pos0, pos0 + T) are launched for: pos0 + T for a chunk; for one
// token, rounded up to a multiple of STEP_KEYS (within the session), so that consecutive decode steps launch the
// same grids (a CUDA graph replays them; the kernels read the position itself from f->dpos and mask the keys
// after it). Direct launches use the same bound, so graph and direct steps compute the same values.
static int key_bound(const struct fwd *f, int T, int pos0)
{
    if (T != 1)
        return pos0 + T;
    long b = ((long)pos0 + 1 + STEP_KEYS - 1) / STEP_KEYS * STEP_KEYS;
    return b < f->p.n_ctx ? (int)b : f->p.n_ctx;
}

// Indexer keys into the cache; when selection applies, f->idx rows get each query's top-k. *sparse = 1 then.
static enum sd_status indexer(struct fwd *f, int il, int T, int pos0, int *sparse)
{
    const struct sd_config *c = &f->m->cfg;
    const struct sd_layer_weights *L = &f->L[il];
    int H = c->hidden_size, ni = c->index_n_heads, di = c->index_head_dim;
    size_t N = (size_t)f->p.n_ctx;
    float *ikc = f->fp8 ? NULL : f->ikc + (size_t)il * N * di;
    uint8_t *ik8 = f->fp8 ? f->ik8 + (size_t)il * N * di : NULL;
    float *iks = f->fp8 ? f->iks + (size_t)il * N : NULL;
    *sparse = 0;
    TRY(matmul(f, f->ik, f->x, L->idx_wk, NULL, T, di, H));
    k_layernorm<<<T, NT, 0, f->st>>>(f->ik, f->ik, L->idx_k_norm_w, L->idx_k_norm_b, di, (size_t)di, 1e-6f);
    SD_CHECK_LAUNCH();
    TRY(rope(f, f->ik, T, 1, (size_t)di, 0, &c->rope_indexer, 0));
    if (f->fp8) // keys are cached only as e4m3 rows + scales (written before scoring: the token is a candidate)
        TRY(quant_fp8(f, f->ik, T, di, ik8, iks, 1));
    else
        TRY(store_rows(f, ikc, f->ik, T, (size_t)di));
    int end = pos0 + T, kend = key_bound(f, T, pos0);
    if (f->p.dsa_mode == SD_DSA_DENSE || end <= f->topk)
        return SD_OK;
    TRY(matmul(f, f->iq, f->cq, L->idx_wq_b, NULL, T, ni * di, c->q_lora_rank));
    TRY(matmul(f, f->iw, f->x, L->idx_wproj, NULL, T, ni, H));
    TRY(rope(f, f->iq, T, ni, (size_t)ni * di, (size_t)di, &c->rope_indexer, 0));
    if (f->fp8)
        TRY(quant_fp8(f, f->iq, T * ni, di, f->iq8, f->iqs, 0));
    float wscale = 1.0f / sqrtf((float)ni) / sqrtf((float)di);
    k_fill_nvalid<<<blocks(T), 256, 0, f->st>>>(f->n_valid, T, f->dpos);
    SD_CHECK_LAUNCH();
    if (f->ix_tc) { // the tensor-core kernel takes the weights with the 1/sqrt(heads * dim) scale folded in
        k_scale<<<blocks((size_t)T * ni), 256, 0, f->st>>>(f->iw, wscale, (size_t)T * ni);
        SD_CHECK_LAUNCH();
    }
    for (int t0 = 0; t0 < T; t0 += f->score_rows) {
        int nq = T - t0 < f->score_rows ? T - t0 : f->score_rows;
        if (f->ix_tc) {
            struct sd_cuda_indexer_params ip = {};
            ip.q8 = f->iq8 + (size_t)t0 * ni * di, ip.q_scale = f->iqs + (size_t)t0 * ni;
            ip.w = f->iw + (size_t)t0 * ni, ip.kcache = ik8, ip.k_scale = iks, ip.n_valid = f->n_valid + t0;
            ip.scores = f->scores, ip.ld_scores = N, ip.n_q = nq, ip.n_heads = ni, ip.n_k = kend;
            ip.variant = SD_CUDA_INDEXER_MMA, ip.stream = f->st;
            TRY(sd_cuda_indexer_fp8(&ip));
            f->tc_calls++;
        } else if (f->fp8) {
            TRY(index_scores_fp8(f, ni, di, wscale, ik8, iks, kend, t0, nq));
        } else {
            size_t smem = (size_t)ni * di * sizeof(float);
            k_index_scores<<<dim3(nq, (kend + NT - 1) / NT), NT, smem, f->st>>>(f->iq, f->iw, ni, di, wscale, ikc, kend,
                                                                                f->dpos, t0, f->scores, N);
            SD_CHECK_LAUNCH();
        }
        struct sd_cuda_topk_params tp = {};
        tp.scores = f->scores;
        tp.ld_scores = N;
        tp.n_valid = f->n_valid + t0;
        tp.n_rows = nq;
        tp.n_cols = kend; // columns past a row's n_valid (the keys after its position) are not read
        tp.k = f->topk;
        tp.idx = f->idx + (size_t)t0 * f->topk;
        tp.ld_idx = (size_t)f->topk;
        tp.stream = f->st;
        tp.scratch = f->topk_scr, tp.scratch_bytes = f->topk_scr_bytes;
        TRY(sd_cuda_topk(&tp));
    }
    *sparse = 1;
    return SD_OK;
}

// MLA attention in fp32 (mla_attn.cu: all heads over the shared latent rows); the per-head kernel where that
// kernel does not fit. Reads f->qfull and the idx rows (sparse), writes f->olat.
static enum sd_status mla_attn_fp32(struct fwd *f, int T, int pos0, const float *lat, const uint8_t *lat8, int sparse)
{
    const struct sd_config *c = &f->m->cfg;
    int nh = c->n_heads, dr = c->qk_rope_head_dim, kvr = c->kv_lora_rank, dl = kvr + dr;
    size_t N = (size_t)f->p.n_ctx;
    struct sd_cuda_mla_attn_params ma = {};
    ma.q = f->qfull, ma.kv = lat, ma.kv8 = lat8, ma.idx = sparse ? f->idx : NULL, ma.out = f->olat;
    ma.scratch = f->mla_part, ma.scratch_floats = f->mla_part_n;
    ma.n_q = T, ma.n_heads = nh, ma.d_lat = kvr, ma.d_rope = dr, ma.n_idx = sparse ? f->topk : 0;
    // dense: the split over blocks is planned for key_bound's keys, the kernel reads the position from f->dpos
    ma.n_tokens = (int)N, ma.pos0 = key_bound(f, T, pos0) - T, ma.d_pos0 = f->dpos;
    ma.scale = c->attn_scale, ma.stream = f->st;
    enum sd_status ms = sd_cuda_mla_attn(&ma);
    if (ms != SD_OK && (ms != SD_ERR_UNSUPPORTED || lat8)) // the per-head kernel reads f32 rows only
        return ms;
    if (ms == SD_ERR_UNSUPPORTED) {
        struct attn_args a = {};
        a.q = f->qfull, a.q_t = (size_t)nh * dl, a.q_h = (size_t)dl;
        a.k = lat, a.k_u = (size_t)dl, a.k_h = 0;
        a.v = lat, a.v_u = (size_t)dl, a.v_h = 0;
        a.o = f->olat, a.o_t = (size_t)nh * kvr, a.o_h = (size_t)kvr;
        a.dk = dl, a.dv = kvr, a.group = nh, a.dpos = f->dpos, a.scale = c->attn_scale;
        a.idx = sparse ? f->idx : NULL;
        a.n_idx = sparse ? f->topk : 0;
        TRY(attn(f, &a, T, nh));
    }
    return SD_OK;
}

static enum sd_status attn_mla(struct fwd *f, int il, int T, int pos0)
{
    const struct sd_config *c = &f->m->cfg;
    const struct sd_layer_weights *L = &f->L[il];
    int H = c->hidden_size, nh = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    int dv = c->v_head_dim, kvr = c->kv_lora_rank, dq = dn + dr, dl = kvr + dr;
    size_t N = (size_t)f->p.n_ctx;
    if (c->q_lora_rank > 0) {
        TRY(matmul(f, f->cq, f->x, L->wq_a, NULL, T, c->q_lora_rank, H));
        TRY(rmsnorm(f, f->cq, f->cq, L->q_a_norm, T, c->q_lora_rank, (size_t)c->q_lora_rank, c->rms_norm_eps));
        TRY(matmul(f, f->q, f->cq, L->wq_b, NULL, T, nh * dq, c->q_lora_rank));
    } else {
        TRY(matmul(f, f->q, f->x, L->wq_full, NULL, T, nh * dq, H));
    }
    TRY(matmul(f, f->kva, f->x, L->wkv_a, NULL, T, dl, H));
    TRY(rmsnorm(f, f->kva, f->kva, L->kv_a_norm, T, kvr, (size_t)dl, c->rms_norm_eps));
    TRY(rope(f, f->kva + kvr, T, 1, (size_t)dl, 0, &c->rope_main, 1));
    float *lat = f->lat8 ? NULL : f->lat + (size_t)il * N * dl;
    uint8_t *lat8 = f->lat8 ? f->lat8 + (size_t)il * N * f->lat8_row : NULL;
    if (lat8)
        TRY(sd_cuda_kv_fp8_store(lat8, f->kva, (size_t)dl, T, kvr, dr, f->dpos, f->st));
    else
        TRY(store_rows(f, lat, f->kva, T, (size_t)dl));
    TRY(rope(f, f->q + dn, T, nh, (size_t)nh * dq, (size_t)dq, &c->rope_main, 1));
    // qfull[t][h] = [W_UK_h^T q_nope[t][h] | q_pe[t][h]]  (one strided-batched GEMM over heads + a 2-D copy)
    const float one = 1.0f, zero = 0.0f;
    SD_CHECK_CUBLAS(cublasSgemmStridedBatched(f->cb, CUBLAS_OP_N, CUBLAS_OP_N, kvr, T, dn, &one, L->wkv_b, kvr,
                                              (long long)(dn + dv) * kvr, f->q, nh * dq, (long long)dq, &zero, f->qfull,
                                              nh * dl, (long long)dl, nh));
    SD_CHECK_CUDA(cudaMemcpy2DAsync(f->qfull + kvr, (size_t)dl * sizeof(float), f->q + dn, (size_t)dq * sizeof(float),
                                    (size_t)dr * sizeof(float), (size_t)T * nh, cudaMemcpyDeviceToDevice, f->st));
    int sparse = 0;
    if (f->use_indexer)
        TRY(indexer(f, il, T, pos0, &sparse));
    if (sparse && f->latb && T >= MLA_TC_MIN_T) { // tensor cores over a bf16 copy of this layer's rows so far
        size_t n = (size_t)(pos0 + T) * dl;
        if (lat8) {
            TRY(sd_cuda_kv_fp8_to_bf16(f->latb, lat8, (size_t)(pos0 + T), kvr, dr, f->st));
        } else {
            k_to_bf16<<<blocks(n), 256, 0, f->st>>>((__nv_bfloat16 *)f->latb, lat, 1, n, n);
            SD_CHECK_LAUNCH();
        }
        struct sd_cuda_mla_decode_params md = {};
        md.q = f->qfull, md.kv = f->latb, md.idx = f->idx, md.out = f->olat, md.lse = NULL;
        md.batch = 1, md.s_q = T, md.n_heads = nh, md.topk = f->topk, md.n_tokens = pos0 + T;
        md.scale = c->attn_scale, md.stream = f->st, md.variant = SD_CUDA_MLA_MMA;
        TRY(sd_cuda_mla_decode(&md));
        f->tc_calls++;
    } else {
        TRY(mla_attn_fp32(f, T, pos0, lat, lat8, sparse));
    }
    // o_h = W_UV_h o_lat_h
    SD_CHECK_CUBLAS(cublasSgemmStridedBatched(f->cb, CUBLAS_OP_T, CUBLAS_OP_N, dv, T, kvr, &one,
                                              L->wkv_b + (size_t)dn * kvr, kvr, (long long)(dn + dv) * kvr, f->olat,
                                              nh * kvr, (long long)kvr, &zero, f->o, nh * dv, (long long)dv, nh));
    return matmul(f, f->y, f->o, L->wo, NULL, T, H, nh * dv);
}

// The routed experts of T <= MOE_DEV_T tokens on the device (k_moe_gateup, k_moe_down, k_moe_combine): the
// routing result stays on the device. W: the experts' weight type.
template <typename W> static enum sd_status moe_dev(struct fwd *f, int il, int T)
{
    const struct sd_config *c = &f->m->cfg;
    int H = c->hidden_size, E = c->n_routed_experts, K = c->n_experts_per_tok, Ie = c->moe_intermediate_size;
    const void *const *tab = f->exp_tab + (size_t)il * 3 * E;
    const float *const *stab = f->exp_stab ? f->exp_stab + (size_t)il * 3 * E : NULL;
    const int B = f->exp_block;
    dim3 g1((Ie + 7) / 8, T * K), g2((H + 7) / 8, T * K);
    const float *xin = f->x;
    if (f->exp_aq) { // fp8_act: the experts' inputs quantized as the CPU does (x once, each slot's activation)
        TRY(sd_cuda_act_roundtrip_fp8(f->x, H, f->xrt, H, T, H, f->st));
        xin = f->xrt;
    }
    k_moe_gateup<W><<<g1, 256, (size_t)H * sizeof(float), f->st>>>(xin, H, f->rsel, K, E, tab, tab + E, Ie, f->moe_act,
                                                                   stab, stab ? stab + E : NULL, B);
    SD_CHECK_LAUNCH();
    if (f->exp_aq)
        TRY(sd_cuda_act_roundtrip_fp8(f->moe_act, Ie, f->moe_act, Ie, T * K, Ie, f->st));
    k_moe_down<W><<<g2, 256, (size_t)Ie * sizeof(float), f->st>>>(f->moe_act, Ie, f->rsel, E, tab + 2 * E, H, f->moe_yk,
                                                                  stab ? stab + 2 * E : NULL, B);
    SD_CHECK_LAUNCH();
    k_moe_combine<<<blocks((size_t)T * H), 256, 0, f->st>>>(f->y, f->moe_yk, f->rsel, f->rw, K, H, T);
    SD_CHECK_LAUNCH();
    return SD_OK;
}

static enum sd_status moe(struct fwd *f, int il, int T)
{
    const struct sd_config *c = &f->m->cfg;
    const struct sd_layer_weights *L = &f->L[il];
    int H = c->hidden_size, E = c->n_routed_experts, K = c->n_experts_per_tok;
    TRY(matmul(f, f->router, f->x, L->router, NULL, T, E, H));
    struct route_args ra = {};
    ra.router = f->router, ra.bias = L->router_bias, ra.E = E, ra.K = K, ra.G = c->n_group > 0 ? c->n_group : 1;
    ra.topk_group = c->topk_group, ra.sigmoid = c->scoring_sigmoid, ra.norm_topk = c->norm_topk_prob;
    ra.scaling = c->routed_scaling_factor, ra.rsel = f->rsel, ra.rw = f->rw;
    k_route<<<(T + 63) / 64, 64, 0, f->st>>>(ra, T);
    SD_CHECK_LAUNCH();
    // Shared experts first (into y), then each routed expert over its rows, in expert order (as the CPU).
    if (L->sh_gate.data)
        TRY(mlp(f, f->x, T, L->sh_gate, L->sh_up, L->sh_down, c->n_shared_experts * c->moe_intermediate_size, f->y));
    else
        SD_CHECK_CUDA(cudaMemsetAsync(f->y, 0, (size_t)T * H * sizeof(float), f->st));
    if (T <= MOE_DEV_T && f->exp_tab)
        return f->exp_fp8    ? moe_dev<uint8_t>(f, il, T)
               : f->exp_bf16 ? moe_dev<__nv_bfloat16>(f, il, T)
                             : moe_dev<float>(f, il, T);
    int Ie = c->moe_intermediate_size;
    SD_CHECK_CUDA(cudaMemcpyAsync(f->h_rsel, f->rsel, (size_t)T * K * sizeof(int32_t), cudaMemcpyDeviceToHost, f->st));
    SD_CHECK_CUDA(cudaMemcpyAsync(f->h_rw, f->rw, (size_t)T * K * sizeof(float), cudaMemcpyDeviceToHost, f->st));
    SD_CHECK_CUDA(cudaStreamSynchronize(f->st));
    // Rows grouped by expert: h_off[e] .. h_off[e + 1] in h_rows / h_w.
    int *cnt = f->h_off;
    memset(cnt, 0, (size_t)(E + 1) * sizeof(int));
    for (int i = 0; i < T * K; i++) {
        int e = f->h_rsel[i];
        if (e < 0 || e >= E) {
            sd_cuda_set_error("expert index", __FILE__, __LINE__, "routing produced an invalid expert");
            return SD_ERR_BACKEND;
        }
        cnt[e + 1]++;
    }
    for (int e = 0; e < E; e++)
        cnt[e + 1] += cnt[e];
    for (int e = 0, n = 0; e < E; e++) {
        for (int t = 0; t < T; t++)
            for (int i = 0; i < K; i++)
                if (f->h_rsel[(size_t)t * K + i] == e) {
                    f->h_rows[n] = t;
                    f->h_w[n] = f->h_rw[(size_t)t * K + i];
                    n++;
                }
    }
    SD_CHECK_CUDA(cudaMemcpyAsync(f->erows, f->h_rows, (size_t)T * K * sizeof(int32_t), cudaMemcpyHostToDevice, f->st));
    SD_CHECK_CUDA(cudaMemcpyAsync(f->ew, f->h_w, (size_t)T * K * sizeof(float), cudaMemcpyHostToDevice, f->st));
    for (int e = 0; e < E; e++) {
        int o0 = cnt[e], n = cnt[e + 1] - cnt[e];
        if (!n)
            continue;
        k_gather<<<n, NT, 0, f->st>>>(f->ex, f->x, f->erows + o0, H);
        SD_CHECK_LAUNCH();
        TRY(mlp(f, f->ex, n, L->exp_gate[e], L->exp_up[e], L->exp_down[e], Ie, f->ey));
        k_scatter_add<<<n, NT, 0, f->st>>>(f->y, f->ey, f->erows + o0, f->ew + o0, H);
        SD_CHECK_LAUNCH();
    }
    // The host staging buffers are reused by the next layer only after this sync point's copies finished:
    // the H2D copies above are ordered before any later kernel, and the next layer syncs before writing them.
    SD_CHECK_CUDA(cudaStreamSynchronize(f->st));
    return SD_OK;
}

// The device work of one forward call on f->ids: embeddings, layers and, with `logits`, the final norm and the
// LM head into f->logits (rows of all T tokens with all_logits, else of the last).
static enum sd_status enqueue(struct fwd *f, int T, int pos0, int logits, int all_logits)
{
    const struct sd_model *m = f->m;
    const struct sd_config *c = &m->cfg;
    int H = c->hidden_size;
    size_t TH = (size_t)T * H;
    k_embed<<<T, NT, 0, f->st>>>(f->h, f->embed.data, f->embed.type == SD_Q_BF16, f->ids, H);
    SD_CHECK_LAUNCH();
    for (int il = 0; il < c->n_layers; il++) {
        const struct sd_layer_weights *L = &f->L[il];
        TRY(rmsnorm(f, f->x, f->h, L->attn_norm, T, H, (size_t)H, c->rms_norm_eps));
        if (f->deepseek)
            TRY(attn_mla(f, il, T, pos0));
        else
            TRY(attn_gqa(f, il, T));
        TRY(add(f, f->h, f->y, TH));
        TRY(rmsnorm(f, f->x, f->h, L->ffn_norm, T, H, (size_t)H, c->rms_norm_eps));
        if (L->is_moe)
            TRY(moe(f, il, T));
        else
            TRY(mlp(f, f->x, T, L->w_gate, L->w_up, L->w_down, c->intermediate_size, f->y));
        TRY(add(f, f->h, f->y, TH));
    }
    if (logits) {
        int first = all_logits ? 0 : T - 1, n = T - first;
        TRY(rmsnorm(f, f->x, f->h + (size_t)first * H, f->norm, n, H, (size_t)H, c->rms_norm_eps));
        TRY(matmul(f, f->logits, f->x, f->lm_head, NULL, n, c->vocab_size, H));
    }
    return SD_OK;
}

// One decode step as a CUDA graph. The step's launches depend on the position only through key_bound and whether
// selection is live (the kernels read the position from f->dpos), so the graph captured for one shape is replayed
// as is until the shape changes, then captured (nothing runs while it is) and instantiated again.
// SD_ERR_UNSUPPORTED: the capture or instantiation failed and nothing ran.
static enum sd_status step_graph(struct fwd *f, int T, int pos0)
{
    int live = f->use_indexer && f->p.dsa_mode != SD_DSA_DENSE && pos0 + T > f->topk;
    long key = 2L * key_bound(f, T, pos0) + live;
    if (!f->gexec || key != f->g_key) {
        if (f->gexec) {
            cudaGraphExecDestroy(f->gexec);
            f->gexec = NULL;
        }
        cudaGraph_t g = NULL;
        SD_CHECK_CUDA(cudaStreamBeginCapture(f->st, cudaStreamCaptureModeRelaxed));
        enum sd_status st = enqueue(f, T, pos0, 1, 0);
        cudaError_t e = cudaStreamEndCapture(f->st, &g);
        if (st != SD_OK || e != cudaSuccess || !g) {
            if (g)
                cudaGraphDestroy(g);
            cudaGetLastError(); // the direct launches that follow report any real fault themselves
            return SD_ERR_UNSUPPORTED;
        }
        cudaError_t ie = cudaGraphInstantiate(&f->gexec, g, 0);
        cudaGraphDestroy(g);
        if (ie != cudaSuccess) {
            cudaGetLastError();
            f->gexec = NULL;
            return SD_ERR_UNSUPPORTED;
        }
        f->g_key = key;
        f->graph_inst++;
    }
    SD_CHECK_CUDA(cudaGraphLaunch(f->gexec, f->st));
    f->graph_steps++;
    return SD_OK;
}

// dev_logits: compute the last token's logits into f->logits even without a host copy (device sampling); the
// stream is then left running (the caller syncs).
static enum sd_status forward(struct fwd *f, const int32_t *ids, int T, int pos0, float *logits, int all_logits,
                              int dev_logits = 0)
{
    const struct sd_config *c = &f->m->cfg;
    f->h_io[0] = pos0;
    memcpy(f->h_io + 1, ids, (size_t)T * sizeof(int32_t));
    SD_CHECK_CUDA(cudaMemcpyAsync(f->dio, f->h_io, (size_t)(T + 1) * sizeof(int32_t), cudaMemcpyHostToDevice, f->st));
    int graphed = 0;
    if (T == 1 && (logits || dev_logits) && !f->p.gpu_no_graph && !f->graph_off) {
        enum sd_status gs = step_graph(f, T, pos0);
        if (gs == SD_ERR_UNSUPPORTED)
            f->graph_off = 1; // launch one by one from now on
        else if (gs != SD_OK)
            return gs;
        graphed = gs == SD_OK;
    }
    if (!graphed)
        TRY(enqueue(f, T, pos0, logits != NULL || dev_logits, all_logits));
    if (logits) {
        int n = all_logits ? T : 1;
        SD_CHECK_CUDA(cudaMemcpyAsync(logits, f->logits, (size_t)n * c->vocab_size * sizeof(float),
                                      cudaMemcpyDeviceToHost, f->st));
    }
    if (!dev_logits)
        SD_CHECK_CUDA(cudaStreamSynchronize(f->st));
    return SD_OK;
}

// ---------------------------------------------------------------- backend table

static void fwd_free(void *ctx)
{
    struct fwd *f = (struct fwd *)ctx;
    if (!f)
        return;
    if (f->st)
        cudaStreamSynchronize(f->st);
    if (f->gexec)
        cudaGraphExecDestroy(f->gexec);
    sd_cuda_sampler_free(f->smp);
    for (size_t i = 0; i < f->n_allocs; i++)
        cudaFree(f->allocs[i]);
    cudaFree(f->stage);
    free(f->allocs);
    if (f->L) {
        for (int il = 0; il < f->m->cfg.n_layers; il++) {
            free((void *)f->L[il].exp_gate);
            free((void *)f->L[il].exp_up);
            free((void *)f->L[il].exp_down);
        }
        free(f->L);
    }
    cudaFreeHost(f->h_io);
    cudaFreeHost(f->h_rsel);
    cudaFreeHost(f->h_rows);
    cudaFreeHost(f->h_rw);
    cudaFreeHost(f->h_w);
    free(f->h_off);
    if (f->cb)
        cublasDestroy(f->cb);
    sd_cuda_gemm_fp8_free(f->g8);
    if (f->st)
        cudaStreamDestroy(f->st);
    free(f);
}

// The device table of expert matrix pointers for the MoE device path (f->exp_tab, and f->exp_stab with their
// block scales for WT_FP8 experts); left NULL (the grouped path runs) if the experts are not all F32, all BF16
// or all WT_FP8 of one block size.
static enum sd_status moe_table(struct fwd *f)
{
    const struct sd_config *c = &f->m->cfg;
    size_t L = (size_t)c->n_layers, E = (size_t)c->n_routed_experts;
    const void **h = (const void **)calloc(L * 3 * E, sizeof *h);
    const float **hs = (const float **)calloc(L * 3 * E, sizeof *hs);
    if (!h || !hs) {
        free(h);
        free(hs);
        return SD_ERR_NOMEM;
    }
    int type = -1, mixed = 0, block = -1;
    for (size_t il = 0; il < L; il++) {
        const struct sd_layer_weights *D = &f->L[il];
        if (!D->is_moe)
            continue;
        for (size_t e = 0; e < E; e++) {
            const struct sd_wmat *w[3] = {&D->exp_gate[e], &D->exp_up[e], &D->exp_down[e]};
            for (int j = 0; j < 3; j++) {
                if (type < 0)
                    type = w[j]->type, block = w[j]->fp8_block;
                mixed |= (int)w[j]->type != type || !w[j]->data || w[j]->fp8_block != block;
                h[(il * 3 + j) * E + e] = w[j]->data;
                hs[(il * 3 + j) * E + e] = w[j]->fp8_scale;
            }
        }
    }
    enum sd_status st = SD_OK;
    const int fp8 = type == (int)WT_FP8;
    if (!mixed && (type == SD_Q_F32 || type == SD_Q_BF16 || (fp8 && block > 0))) {
        void *d = NULL, *ds = NULL;
        st = dalloc(f, &d, L * 3 * E * sizeof *h);
        if (st == SD_OK && fp8)
            st = dalloc(f, &ds, L * 3 * E * sizeof *hs);
        if (st == SD_OK &&
            (cudaMemcpy(d, h, L * 3 * E * sizeof *h, cudaMemcpyHostToDevice) != cudaSuccess ||
             (fp8 && cudaMemcpy(ds, hs, L * 3 * E * sizeof *hs, cudaMemcpyHostToDevice) != cudaSuccess))) {
            sd_cuda_set_error("cudaMemcpy(exp_tab)", __FILE__, __LINE__, "copy failed");
            st = SD_ERR_BACKEND;
        }
        if (st == SD_OK) {
            f->exp_tab = (const void **)d;
            f->exp_stab = (const float **)ds;
            f->exp_bf16 = type == SD_Q_BF16;
            f->exp_fp8 = fp8;
            f->exp_block = fp8 ? block : 0;
            f->exp_aq = f->fp8act && block > 0;
        }
    }
    free(h);
    free(hs);
    return st;
}

static enum sd_status upload_layer(struct fwd *f, int il)
{
    const struct sd_config *c = &f->m->cfg;
    const struct sd_layer_weights *S = &f->m->layers[il];
    struct sd_layer_weights *D = &f->L[il];
    size_t H = (size_t)c->hidden_size, nh = (size_t)c->n_heads;
    D->is_moe = S->is_moe;
    TRY(upload(f, S->attn_norm, H, &D->attn_norm));
    TRY(upload(f, S->ffn_norm, H, &D->ffn_norm));
    if (f->deepseek) {
        size_t dn = (size_t)c->qk_nope_head_dim, dr = (size_t)c->qk_rope_head_dim, dv = (size_t)c->v_head_dim;
        size_t kvr = (size_t)c->kv_lora_rank, ql = (size_t)c->q_lora_rank, dq = dn + dr;
        TRY(upload(f, S->wq_a, ql * H, &D->wq_a));
        TRY(upload(f, S->q_a_norm, ql, &D->q_a_norm));
        TRY(upload(f, S->wq_b, nh * dq * ql, &D->wq_b));
        TRY(upload(f, S->wq_full, nh * dq * H, &D->wq_full));
        TRY(upload(f, S->wkv_a, (kvr + dr) * H, &D->wkv_a));
        TRY(upload(f, S->kv_a_norm, kvr, &D->kv_a_norm));
        TRY(upload(f, S->wkv_b, nh * (dn + dv) * kvr, &D->wkv_b));
        TRY(upload(f, S->wo, H * nh * dv, &D->wo));
        if (f->use_indexer) {
            size_t ni = (size_t)c->index_n_heads, di = (size_t)c->index_head_dim;
            TRY(upload(f, S->idx_wq_b, ni * di * ql, &D->idx_wq_b));
            TRY(upload(f, S->idx_wk, di * H, &D->idx_wk));
            TRY(upload(f, S->idx_k_norm_w, di, &D->idx_k_norm_w));
            TRY(upload(f, S->idx_k_norm_b, di, &D->idx_k_norm_b));
            TRY(upload(f, S->idx_wproj, ni * H, &D->idx_wproj));
        }
    } else {
        size_t hd = (size_t)c->head_dim, qd = nh * hd, kvd = (size_t)c->n_heads_kv * hd;
        TRY(upload(f, S->wq, qd * H, &D->wq));
        TRY(upload(f, S->wk, kvd * H, &D->wk));
        TRY(upload(f, S->wv, kvd * H, &D->wv));
        TRY(upload(f, S->wo, H * qd, &D->wo));
        TRY(upload(f, S->bq, qd, &D->bq));
        TRY(upload(f, S->bk, kvd, &D->bk));
        TRY(upload(f, S->bv, kvd, &D->bv));
        TRY(upload(f, S->q_norm, hd, &D->q_norm));
        TRY(upload(f, S->k_norm, hd, &D->k_norm));
    }
    if (S->is_moe) {
        size_t E = (size_t)c->n_routed_experts, Ie = (size_t)c->moe_intermediate_size;
        size_t Is = (size_t)c->n_shared_experts * Ie;
        TRY(upload(f, S->router, E * H, &D->router, true)); // routing decisions stay fp32
        TRY(upload(f, S->router_bias, E, &D->router_bias));
        D->exp_gate = (struct sd_wmat *)calloc(E, sizeof(struct sd_wmat));
        D->exp_up = (struct sd_wmat *)calloc(E, sizeof(struct sd_wmat));
        D->exp_down = (struct sd_wmat *)calloc(E, sizeof(struct sd_wmat));
        if (!D->exp_gate || !D->exp_up || !D->exp_down)
            return SD_ERR_NOMEM;
        for (size_t e = 0; e < E; e++) {
            TRY(upload(f, S->exp_gate[e], Ie * H, &D->exp_gate[e]));
            TRY(upload(f, S->exp_up[e], Ie * H, &D->exp_up[e]));
            TRY(upload(f, S->exp_down[e], H * Ie, &D->exp_down[e]));
        }
        TRY(upload(f, S->sh_gate, Is * H, &D->sh_gate));
        TRY(upload(f, S->sh_up, Is * H, &D->sh_up));
        TRY(upload(f, S->sh_down, H * Is, &D->sh_down));
    } else {
        size_t I = (size_t)c->intermediate_size;
        TRY(upload(f, S->w_gate, I * H, &D->w_gate));
        TRY(upload(f, S->w_up, I * H, &D->w_up));
        TRY(upload(f, S->w_down, H * I, &D->w_down));
    }
    return SD_OK;
}

static enum sd_status fwd_setup(struct fwd *f)
{
    const struct sd_model *m = f->m;
    const struct sd_config *c = &m->cfg;
    size_t L = (size_t)c->n_layers, N = (size_t)f->p.n_ctx, T = (size_t)f->p.max_batch, H = (size_t)c->hidden_size;
    size_t V = (size_t)c->vocab_size;
    SD_CHECK_CUDA(cudaSetDevice(0));
    SD_CHECK_CUDA(cudaStreamCreateWithFlags(&f->st, cudaStreamNonBlocking));
    SD_CHECK_CUBLAS(cublasCreate(&f->cb));
    SD_CHECK_CUBLAS(cublasSetStream(f->cb, f->st));
    SD_CHECK_CUBLAS(cublasSetMathMode(f->cb, CUBLAS_DEFAULT_MATH)); // fp32: no TF32 down-conversion
    // A workspace of our own, in every mode (the same GEMM algorithms with and without graphs): cuBLAS then
    // allocates nothing while a step is captured.
    TRY(dalloc(f, &f->cublas_ws, CUBLAS_WS_BYTES));
    SD_CHECK_CUBLAS(cublasSetWorkspace(f->cb, f->cublas_ws, CUBLAS_WS_BYTES));
    TRY(upload(f, m->embed, V * H, &f->embed, false, true));        // k_embed reads F32 or BF16 rows
    TRY(upload(f, m->norm, H, &f->norm));
    if (m->lm_head.data == m->embed.data)
        f->lm_head = f->embed;
    else
        TRY(upload(f, m->lm_head, V * H, &f->lm_head));
    f->L = (struct sd_layer_weights *)calloc(L, sizeof *f->L);
    if (!f->L)
        return SD_ERR_NOMEM;
    for (size_t il = 0; il < L; il++)
        TRY(upload_layer(f, (int)il));
    SD_CHECK_CUDA(cudaFree(f->stage));
    f->stage = NULL;
    if (f->fp8_max) // one FP8 matrix at a time, dequantized for a long chunk's GEMM
        TRY(dalloc(f, &f->wdq, f->fp8_max * (f->bf16 ? sizeof(__nv_bfloat16) : sizeof(float))));
    DALLOC(f, f->dio, T + 1, int32_t);
    f->dpos = f->dio;
    f->ids = f->dio + 1;
    SD_CHECK_CUDA(cudaMallocHost((void **)&f->h_io, (T + 1) * sizeof(int32_t)));
    DALLOC(f, f->h, T * H, float);
    DALLOC(f, f->x, T * H, float);
    DALLOC(f, f->y, T * H, float);
    DALLOC(f, f->logits, T * V, float);
    size_t I = (size_t)c->intermediate_size;
    if (f->deepseek) {
        size_t nh = (size_t)c->n_heads, dn = (size_t)c->qk_nope_head_dim, dr = (size_t)c->qk_rope_head_dim;
        size_t dv = (size_t)c->v_head_dim, kvr = (size_t)c->kv_lora_rank, dl = kvr + dr;
        if (f->p.kv_fp8) {
            f->lat8_row = sd_cuda_kv_fp8_row_bytes((int)kvr, (int)dr);
            DALLOC(f, f->lat8, L * N * f->lat8_row, uint8_t);
        } else {
            DALLOC(f, f->lat, L * N * dl, float);
        }
        DALLOC(f, f->cq, T * (size_t)(c->q_lora_rank > 0 ? c->q_lora_rank : 1), float);
        DALLOC(f, f->q, T * nh * (dn + dr), float);
        DALLOC(f, f->kva, T * dl, float);
        DALLOC(f, f->qfull, T * nh * dl, float);
        DALLOC(f, f->olat, T * nh * kvr, float);
        f->mla_part_n = sd_cuda_mla_attn_scratch_floats((int)nh, (int)kvr);
        DALLOC(f, f->mla_part, f->mla_part_n, float);
        if (f->bf16 && !f->p.gpu_attn_exact && f->use_indexer && f->p.dsa_mode != SD_DSA_DENSE && kvr == 512 &&
            dr == 64 && nh % 32 == 0 && T >= MLA_TC_MIN_T)
            DALLOC(f, f->latb, N * dl, uint16_t);
        DALLOC(f, f->o, T * nh * dv, float);
        if (f->use_indexer) {
            size_t ni = (size_t)c->index_n_heads, di = (size_t)c->index_head_dim;
            if (f->fp8) { // 132 bytes per token and layer for di = 128 (no f32 copy of the keys on the device)
                DALLOC(f, f->ik8, L * N * di, uint8_t);
                DALLOC(f, f->iks, L * N, float);
                DALLOC(f, f->iq8, T * ni * di, uint8_t);
                DALLOC(f, f->iqs, T * ni, float);
                TRY(fp8_setup((int)ni, (int)di));
            } else {
                DALLOC(f, f->ikc, L * N * di, float);
            }
            DALLOC(f, f->iq, T * ni * di, float);
            DALLOC(f, f->ik, T * di, float);
            DALLOC(f, f->iw, T * ni, float);
            DALLOC(f, f->idx, T * (size_t)f->topk, int32_t);
            DALLOC(f, f->n_valid, T, int);
            f->topk_scr_bytes = sd_cuda_topk_scratch_bytes(SD_CUDA_TOPK_SPLIT_ROWS, (int)N);
            TRY(dalloc(f, &f->topk_scr, f->topk_scr_bytes));
            size_t rows = ((size_t)64 << 20) / N; // score rows per pass: ~64M floats at most
            if (rows < 1)
                rows = 1;
            if (rows > T)
                rows = T;
            f->score_rows = (int)rows;
            DALLOC(f, f->scores, rows * N, float);
        }
        if (c->n_routed_experts > 0) {
            size_t E = (size_t)c->n_routed_experts, K = (size_t)c->n_experts_per_tok;
            size_t ie = (size_t)c->moe_intermediate_size, is = (size_t)c->n_shared_experts * ie;
            if (ie > I)
                I = ie;
            if (is > I)
                I = is;
            DALLOC(f, f->router, T * E, float);
            DALLOC(f, f->rw, T * K, float);
            DALLOC(f, f->rsel, T * K, int32_t);
            DALLOC(f, f->erows, T * K, int32_t);
            DALLOC(f, f->ew, T * K, float);
            DALLOC(f, f->ex, T * H, float);
            DALLOC(f, f->ey, T * H, float);
            size_t Ie = (size_t)c->moe_intermediate_size;
            DALLOC(f, f->moe_act, (size_t)MOE_DEV_T * K * Ie, float);
            DALLOC(f, f->moe_yk, (size_t)MOE_DEV_T * K * H, float);
            TRY(moe_table(f));
            SD_CHECK_CUDA(cudaMallocHost((void **)&f->h_rsel, T * K * sizeof(int32_t)));
            SD_CHECK_CUDA(cudaMallocHost((void **)&f->h_rows, T * K * sizeof(int32_t)));
            SD_CHECK_CUDA(cudaMallocHost((void **)&f->h_rw, T * K * sizeof(float)));
            SD_CHECK_CUDA(cudaMallocHost((void **)&f->h_w, T * K * sizeof(float)));
            f->h_off = (int32_t *)calloc(E + 1, sizeof(int32_t));
            if (!f->h_off)
                return SD_ERR_NOMEM;
        }
    } else {
        size_t kvd = (size_t)c->n_heads_kv * c->head_dim, qd = (size_t)c->n_heads * c->head_dim;
        DALLOC(f, f->kc, L * N * kvd, float);
        DALLOC(f, f->vc, L * N * kvd, float);
        DALLOC(f, f->q, T * qd, float);
        DALLOC(f, f->k, T * kvd, float);
        DALLOC(f, f->v, T * kvd, float);
        DALLOC(f, f->att, T * qd, float);
    }
    DALLOC(f, f->g, T * I, float);
    DALLOC(f, f->u, T * I, float);
    // the widest GEMM input: x (H), cq (q_lora), g (I, MoE sizes included), att / o (heads x dims)
    size_t kmax = H > I ? H : I, ql = c->q_lora_rank > 0 ? (size_t)c->q_lora_rank : 0;
    size_t heads = f->deepseek ? (size_t)c->n_heads * c->v_head_dim : (size_t)c->n_heads * c->head_dim;
    kmax = kmax > ql ? kmax : ql;
    kmax = kmax > heads ? kmax : heads;
    if (f->bf16) {
        DALLOC(f, f->xb, T * kmax, __nv_bfloat16);
        f->xb_n = T * kmax;
    }
    if (f->fp8act) {
        DALLOC(f, f->xrt, T * kmax, float);
        f->xrt_n = T * kmax;
        if (f->fp8w)
            TRY(sd_cuda_gemm_fp8_new(&f->g8));
    }
    SD_CHECK_CUDA(cudaDeviceSynchronize());
    return SD_OK;
}

static enum sd_status fwd_init(const struct sd_model *m, const struct sd_session_params *p, int topk, void **ctx,
                               struct sd_err *err)
{
    *ctx = NULL;
    const struct sd_config *c = &m->cfg;
    int n_dev = 0;
    cudaError_t de = cudaGetDeviceCount(&n_dev);
    if (de != cudaSuccess || n_dev <= 0) {
        cudaGetLastError(); // "no device" is an answer, not a sticky fault
        return sd_err_set(err, SD_ERR_BACKEND, "CUDA backend: no usable CUDA device (%s); use --backend cpu",
                          de != cudaSuccess ? cudaGetErrorString(de) : "0 devices");
    }
    int deepseek = c->arch == SD_ARCH_DEEPSEEK_V3 || c->arch == SD_ARCH_DEEPSEEK_V32;
    int use_indexer = c->arch == SD_ARCH_DEEPSEEK_V32;
    int fp8 = use_indexer && p->indexer_fp8;
    if (fp8 && (!fp8_dim_ok(c->index_head_dim) || fp8_smem_bytes(c->index_n_heads, c->index_head_dim) > 200 * 1024))
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "CUDA backend: the FP8 indexer kernel takes index_head_dim 8..128 (a power of two) and up to "
                          "~200 KiB of heads x dims; this model has %d heads x %d; use --backend cpu",
                          c->index_n_heads, c->index_head_dim);
    int dk = deepseek ? c->kv_lora_rank + c->qk_rope_head_dim : c->head_dim;
    int dvv = deepseek ? c->kv_lora_rank : c->head_dim;
    if (dvv > NT * ATT_ACC || (size_t)dk * 4 + NT * 8 > 48 * 1024)
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "CUDA backend: attention head sizes %d/%d exceed the kernel's %d",
                          dk, dvv, NT * ATT_ACC);
    if (use_indexer && !fp8 && ((size_t)c->index_n_heads * c->index_head_dim * 4 > 48 * 1024 || c->index_n_heads > 256))
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "CUDA backend: indexer of %d heads x %d exceeds the kernel's limits",
                          c->index_n_heads, c->index_head_dim);
    if (deepseek && p->kv_fp8 && (c->kv_lora_rank % 4 || c->qk_rope_head_dim % 4))
        return sd_err_set(err, SD_ERR_UNSUPPORTED,
                          "CUDA backend: the FP8 latent cache (kv_fp8) takes kv_lora_rank and qk_rope_head_dim "
                          "multiples of 4; this model has %d and %d; use --backend cpu",
                          c->kv_lora_rank, c->qk_rope_head_dim);
    if (deepseek && c->n_routed_experts > MAX_EXPERTS)
        return sd_err_set(err, SD_ERR_UNSUPPORTED, "CUDA backend: %d routed experts exceed the router's %d",
                          c->n_routed_experts, MAX_EXPERTS);
    struct fwd *f = (struct fwd *)calloc(1, sizeof *f);
    if (!f)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    f->m = m;
    f->p = *p;
    f->topk = topk;
    f->deepseek = deepseek;
    f->use_indexer = use_indexer;
    f->fp8 = fp8;
    f->bf16 = p->gpu_weights_bf16 != 0;
    f->fp8w = p->gpu_weights_fp8 != 0;
    f->fp8act = p->fp8_act != 0;
    f->ix_tc = fp8 && f->bf16 && !p->gpu_attn_exact && c->index_n_heads == 64 && c->index_head_dim == 128;
    enum sd_status st = fwd_setup(f);
    if (st != SD_OK) {
        fwd_free(f);
        return sd_err_set(err, st, "CUDA backend: cannot set up a %d-token session: %s", p->n_ctx,
                          st == SD_ERR_NOMEM ? "out of host memory" : sd_cuda_last_error());
    }
    *ctx = f;
    return SD_OK;
}

static enum sd_status fwd_forward(void *ctx, const int32_t *ids, int T, int pos0, float *logits, int all_logits,
                                  struct sd_err *err)
{
    struct fwd *f = (struct fwd *)ctx;
    if (T > f->p.max_batch || pos0 + T > f->p.n_ctx)
        return sd_err_set(err, SD_ERR_ARG, "CUDA backend: chunk of %d tokens at %d exceeds the session (%d / %d)", T,
                          pos0, f->p.max_batch, f->p.n_ctx);
    enum sd_status st = forward(f, ids, T, pos0, logits, all_logits);
    if (st != SD_OK)
        return sd_err_set(err, st, "CUDA backend: forward pass failed at position %d: %s", pos0, sd_cuda_last_error());
    return SD_OK;
}

static enum sd_status kv_copy(struct fwd *f, const struct sd_backend_host_kv *kv, int t0, int n, int up)
{
    const struct sd_config *c = &f->m->cfg;
    size_t N = (size_t)f->p.n_ctx;
    if (n <= 0)
        return SD_OK;
    cudaMemcpyKind kind = up ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    struct cache_ref {
        void *dev, *host;
        size_t row; // bytes per token and layer
    } caches[4];
    int nc = 0;
    size_t di = (size_t)c->index_head_dim;
    if (f->deepseek) {
        if (f->lat8)
            caches[nc++] = {f->lat8, kv->lat8, f->lat8_row};
        else
            caches[nc++] = {f->lat, kv->lat, ((size_t)c->kv_lora_rank + c->qk_rope_head_dim) * 4};
        if (f->use_indexer && f->fp8) {
            caches[nc++] = {f->ik8, kv->ik8, di};
            caches[nc++] = {f->iks, kv->iks, 4};
        } else if (f->use_indexer) {
            caches[nc++] = {f->ikc, kv->ikc, di * 4};
        }
    } else {
        size_t kvd = (size_t)c->n_heads_kv * c->head_dim;
        caches[nc++] = {f->kc, kv->kc, kvd * 4};
        caches[nc++] = {f->vc, kv->vc, kvd * 4};
    }
    for (int i = 0; i < nc; i++) {
        if (!caches[i].host)
            continue;
        for (int il = 0; il < c->n_layers; il++) {
            size_t off = ((size_t)il * N + (size_t)t0) * caches[i].row, bytes = (size_t)n * caches[i].row;
            char *d = (char *)caches[i].dev + off, *h = (char *)caches[i].host + off;
            if (up)
                SD_CHECK_CUDA(cudaMemcpyAsync(d, h, bytes, kind, f->st));
            else
                SD_CHECK_CUDA(cudaMemcpyAsync(h, d, bytes, kind, f->st));
        }
    }
    SD_CHECK_CUDA(cudaStreamSynchronize(f->st));
    // FP8 sessions keep no f32 indexer keys on the device. FP8 sessions never read the host's f32 rows
    // either; they get the dequantized keys (Hadamard is its own inverse), not garbage, for KV export.
    if (!up && f->use_indexer && f->fp8 && kv->ikc && kv->ik8 && kv->iks && di <= SD_DSA_MAX_DIM) {
        float tmp[SD_DSA_MAX_DIM];
        for (int il = 0; il < c->n_layers; il++) {
            for (int t = t0; t < t0 + n; t++) {
                size_t r = (size_t)il * N + (size_t)t;
                for (size_t x = 0; x < di; x++)
                    tmp[x] = sd_e4m3_to_f32(kv->ik8[r * di + x]) * kv->iks[r];
                sd_hadamard(tmp, (int)di);
                memcpy(kv->ikc + r * di, tmp, di * sizeof(float));
            }
        }
    }
    return SD_OK;
}

static enum sd_status fwd_kv_download(void *ctx, const struct sd_backend_host_kv *kv, int t0, int n, struct sd_err *err)
{
    enum sd_status st = kv_copy((struct fwd *)ctx, kv, t0, n, 0);
    if (st != SD_OK)
        return sd_err_set(err, st, "CUDA backend: KV download failed: %s", sd_cuda_last_error());
    return SD_OK;
}

static enum sd_status fwd_kv_upload(void *ctx, const struct sd_backend_host_kv *kv, int t0, int n, struct sd_err *err)
{
    enum sd_status st = kv_copy((struct fwd *)ctx, kv, t0, n, 1);
    if (st != SD_OK)
        return sd_err_set(err, st, "CUDA backend: KV upload failed: %s", sd_cuda_last_error());
    return SD_OK;
}

static size_t fwd_weight_bytes(void *ctx)
{
    return ((struct fwd *)ctx)->weight_bytes;
}

static void fwd_counters(void *ctx, struct sd_backend_counters *out)
{
    const struct fwd *f = (const struct fwd *)ctx;
    out->graph_steps = f->graph_steps;
    out->graph_instances = f->graph_inst;
    out->tc_attn_calls = f->tc_calls;
    out->fp8_gemm_calls = f->fp8_gemm_calls;
    out->device_samples = f->samples;
}

static enum sd_status fwd_forward_sample(void *ctx, const int32_t *ids, int T, int pos0,
                                         const struct sd_backend_sample *req, int32_t *token, struct sd_err *err)
{
    struct fwd *f = (struct fwd *)ctx;
    if (T <= 0 || T > f->p.max_batch || pos0 < 0 || pos0 + T > f->p.n_ctx)
        return sd_err_set(err, SD_ERR_ARG, "CUDA backend: chunk of %d tokens at %d (max %d, n_ctx %d)", T, pos0,
                          f->p.max_batch, f->p.n_ctx);
    enum sd_status st = forward(f, ids, T, pos0, NULL, 0, 1);
    if (st == SD_OK && !f->smp)
        st = sd_cuda_sampler_new(f->m->cfg.vocab_size, &f->smp);
    if (st == SD_OK) {
        struct sd_cuda_sample_params sp = {};
        sp.logits = f->logits, sp.n_vocab = f->m->cfg.vocab_size, sp.temperature = req->temperature;
        sp.top_k = req->top_k, sp.top_p = req->top_p, sp.repetition_penalty = req->repetition_penalty;
        sp.penalty_ids = req->penalty_ids, sp.n_penalty = req->n_penalty, sp.u = req->u, sp.stream = f->st;
        st = sd_cuda_sample(f->smp, &sp, token);
        f->samples++;
    }
    if (st != SD_OK)
        return sd_err_set(err, st, "CUDA backend: forward pass and sampling failed at position %d: %s", pos0,
                          sd_cuda_last_error());
    return SD_OK;
}

static const struct sd_backend cuda_backend = {
    "cuda",        fwd_init,         fwd_free,     fwd_forward,        fwd_kv_download,
    fwd_kv_upload, fwd_weight_bytes, fwd_counters, fwd_forward_sample,
};

extern "C" const struct sd_backend *sd_cuda_backend(void)
{
    return &cuda_backend;
}
