// bench_cuda_forward.c: prefill and decode tokens/s of the CPU and CUDA backends on one model (default
// data/models/sparsedoc-mini) at several context depths, with CUDA/CPU ratios, in one run. Deep
// positions are reached with sd_session_debug_fill (pseudo-random cache rows, never used for answers),
// then a 256-token chunk is prefilled and 32 tokens decoded there; the CUDA backend also runs a real
// prefill from position 0 of the whole context, and a dense-attention decode (DSA vs dense).
// Usage: bench_cuda_forward [MODEL_DIR] [CTX ...]   (default contexts 4096 16384 65536)
//        bench_cuda_forward --layer [--bf16] [CTX ...]   one DeepSeek-V3.2 layer at real width (synthetic
//        random weights written to $TMPDIR), CUDA decode and 16-token prefill (--bf16: bf16 weights, FP8 indexer,
//        256-token prefill: DSA's tensor-core kernels), DSA vs dense attention, default contexts 8192 32768 65536
//        131072.
//        bench_cuda_forward --v32 [CTX ...]          a reduced-depth DeepSeek-V3.2 at real width (4 layers with
//        the dense 18432 MLP of V3.2's first layers; weights random, generated in memory and block-quantized to
//        FP8 as released (128x128 scales; the f32 view is their dequantized values), CUDA only: a
//        256-token prefill chunk and 16 decode steps at depth CTX - 273, DSA with the FP8 indexer, DSA with the
//        fp32 indexer and dense attention, plus the KV + indexer cache bytes per token. Default 32768 131072.
//        bench_cuda_forward --v32 --bf16 [CTX ...]   the same model, DSA with the FP8 indexer only, the device
//        weight modes side by side (f32, bf16, fp8 = FP8 matrices + bf16 rest, fp8-f32; session params
//        gpu_weights_bf16 / gpu_weights_fp8): prefill/decode tok/s and device weight bytes.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "model.h"
#include "sampler.h"
#include "sd_cuda.h"
#include "session.h"
#include "synth_model.h"
#include "sd_clock.h"

static void rand_ids(int32_t *ids, int n, int vocab, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((seed >> 33) % (uint64_t)(vocab - 3)) + 3;
    }
}

struct res {
    double prefill_tps, decode_tps;
};

#define PREFILL 256
#define DECODE 32

// Prefill PREFILL tokens and decode DECODE tokens at depth ctx - PREFILL - DECODE - 1.
// no_graph: CUDA decode steps launched kernel by kernel instead of as a CUDA graph (session param gpu_no_graph).
static int at_depth(const struct sd_model *m, int ctx, const struct sd_backend *be, enum sd_dsa_mode mode, int no_graph,
                    struct res *r)
{
    struct sd_session_params sp = {
        .n_ctx = ctx, .max_batch = PREFILL, .dsa_mode = mode, .backend = be, .gpu_no_graph = no_graph};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    int V = m->cfg.vocab_size, depth = ctx - PREFILL - DECODE - 1;
    int32_t ids[PREFILL];
    float *lg = malloc(sizeof(float) * (size_t)V);
    rand_ids(ids, PREFILL, V, 42);
    // warm-up: the timed chunk's shapes once (cuBLAS kernel choice, lazy module loading), then forget it
    int ok = lg && sd_session_new(m, &sp, &s, &err) == SD_OK && sd_session_debug_fill(s, depth, 7, &err) == SD_OK &&
             sd_session_eval(s, ids, PREFILL, lg, 0, &err) == SD_OK &&
             sd_session_eval(s, ids, 1, lg, 0, &err) == SD_OK && sd_session_truncate(s, depth, &err) == SD_OK;
    double t0 = sd_now_s();
    ok = ok && sd_session_eval(s, ids, PREFILL, lg, 0, &err) == SD_OK;
    double t1 = sd_now_s();
    ok = ok && sd_session_eval(s, &ids[DECODE], 1, lg, 0, &err) == SD_OK; // untimed: a graph's instantiation
    double t1d = sd_now_s();
    for (int i = 0; ok && i < DECODE; i++) {
        int32_t next = ids[i];
        ok = sd_session_eval(s, &next, 1, lg, 0, &err) == SD_OK;
    }
    double t2 = sd_now_s();
    if (!ok)
        fprintf(stderr, "bench (%s, ctx %d): %s\n", be ? "cuda" : "cpu", ctx, err.msg);
    r->prefill_tps = PREFILL / (t1 - t0);
    r->decode_tps = DECODE / (t2 - t1d);
    sd_session_free(s);
    free(lg);
    return ok ? 0 : -1;
}

// Real prefill of ctx tokens from position 0 (chunks of 256); tokens/s.
static double full_prefill(const struct sd_model *m, int ctx, const struct sd_backend *be)
{
    struct sd_session_params sp = {.n_ctx = ctx, .max_batch = PREFILL, .backend = be};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)ctx);
    float *lg = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    rand_ids(ids, ctx, m->cfg.vocab_size, 1234);
    double t0 = 0, t1 = 0;
    int ok = ids && lg && sd_session_new(m, &sp, &s, &err) == SD_OK &&
             sd_session_eval(s, ids, 1, lg, 0, &err) == SD_OK && sd_session_truncate(s, 0, &err) == SD_OK;
    t0 = sd_now_s();
    ok = ok && sd_session_eval(s, ids, ctx, lg, 0, &err) == SD_OK;
    t1 = sd_now_s();
    if (!ok)
        fprintf(stderr, "full prefill (%s, %d): %s\n", be ? "cuda" : "cpu", ctx, err.msg);
    sd_session_free(s);
    free(ids);
    free(lg);
    return ok ? ctx / (t1 - t0) : 0.0;
}

// One layer at DeepSeek-V3.2 width: decode ms/token and a prefill chunk's ms at depth ctx, CUDA, DSA vs dense.
// fp32 mode: 16-token chunks, fp32 weights and indexer; bf16 mode (--layer --bf16): 256-token chunks, bf16 weights
// and the FP8 indexer, so DSA's indexer and prefill attention run on tensor cores.
#define LAYER_CHUNK 16
#define LAYER_CHUNK_BF16 256
#define LAYER_DECODE 8
static int layer_at(const struct sd_model *m, int ctx, enum sd_dsa_mode mode, int bf16, double *decode_ms,
                    double *prefill_ms)
{
    int chunk = bf16 ? LAYER_CHUNK_BF16 : LAYER_CHUNK;
    struct sd_session_params sp = {.n_ctx = ctx,
                                   .max_batch = chunk,
                                   .dsa_mode = mode,
                                   .backend = sd_cuda_backend(),
                                   .indexer_fp8 = bf16,
                                   .gpu_weights_bf16 = bf16};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    int32_t ids[LAYER_CHUNK_BF16];
    float *lg = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    rand_ids(ids, chunk, m->cfg.vocab_size, 5);
    int depth = ctx - chunk - LAYER_DECODE - 2;
    int ok = lg && sd_session_new(m, &sp, &s, &err) == SD_OK && sd_session_debug_fill(s, depth, 3, &err) == SD_OK &&
             sd_session_eval(s, ids, chunk, lg, 0, &err) == SD_OK && sd_session_truncate(s, depth, &err) == SD_OK;
    double t0 = sd_now_s();
    ok = ok && sd_session_eval(s, ids, chunk, lg, 0, &err) == SD_OK;
    double t1 = sd_now_s();
    ok = ok && sd_session_eval(s, &ids[LAYER_DECODE], 1, lg, 0, &err) == SD_OK; // untimed: the graph's capture
    double t1d = sd_now_s();
    for (int i = 0; ok && i < LAYER_DECODE; i++)
        ok = sd_session_eval(s, &ids[i], 1, lg, 0, &err) == SD_OK;
    double t2 = sd_now_s();
    if (!ok)
        fprintf(stderr, "layer bench (ctx %d): %s\n", ctx, err.msg);
    *prefill_ms = (t1 - t0) * 1e3;
    *decode_ms = (t2 - t1d) * 1e3 / LAYER_DECODE;
    sd_session_free(s);
    free(lg);
    return ok ? 0 : -1;
}

static int layer_bench(int argc, char **argv)
{
    int ctxs[8] = {8192, 32768, 65536, 131072}, n_ctx = 4, bf16 = argc > 2 && !strcmp(argv[2], "--bf16");
    if (argc > 2 + bf16) {
        n_ctx = 0;
        for (int i = 2 + bf16; i < argc && n_ctx < 8; i++)
            ctxs[n_ctx++] = atoi(argv[i]);
    }
    const char *tmp = getenv("TMPDIR");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sd_v32_layer", tmp ? tmp : "/tmp");
    // DeepSeek-V3.2 attention + indexer widths; a dense SwiGLU MLP of 2048 (the same in both modes).
    struct sd_synth_shape sh = {.vocab = 1024,
                                .hidden = 7168,
                                .layers = 1,
                                .first_dense = 1,
                                .heads = 128,
                                .q_lora = 1536,
                                .kv_lora = 512,
                                .nope = 128,
                                .rope = 64,
                                .v = 128,
                                .experts = 0,
                                .experts_per_tok = 0,
                                .n_group = 1,
                                .topk_group = 1,
                                .moe_inter = 0,
                                .shared = 0,
                                .inter = 2048,
                                .index_heads = 64,
                                .index_dim = 128,
                                .index_topk = 2048,
                                .max_pos = 163840};
    double t0 = sd_now_s();
    if (sd_synth_write_deepseek(dir, &sh, 99))
        return 1;
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (sd_model_load(dir, &m, &err) != SD_OK) {
        fprintf(stderr, "bench_cuda_forward: %s\n", err.msg);
        return 1;
    }
    printf("one DeepSeek-V3.2 layer (hidden 7168, 128 heads, MLA 512+64, indexer 64x128, top-k 2048, MLP 2048), "
           "synthetic weights (written+loaded in %.1f s), CUDA %s; decode: mean of %d steps after one untimed step\n",
           sd_now_s() - t0,
           bf16 ? "bf16 weights, FP8 indexer, DSA's indexer and prefill attention on tensor cores (dense: the fp32 "
                  "attention kernel over all keys)"
                : "fp32",
           LAYER_DECODE);
    printf(
        "| ctx | DSA decode ms/token | dense decode ms/token | dense/DSA | DSA prefill %d tok ms | dense prefill ms | "
        "dense/DSA |\n|---|---|---|---|---|---|---|\n",
        bf16 ? LAYER_CHUNK_BF16 : LAYER_CHUNK);
    for (int i = 0; i < n_ctx; i++) {
        double sd = 0, sp = 0, dd = 0, dp = 0;
        int rc = layer_at(m, ctxs[i], SD_DSA_SPARSE, bf16, &sd, &sp);
        rc |= layer_at(m, ctxs[i], SD_DSA_DENSE, bf16, &dd, &dp);
        printf("| %6d | %8.3f | %8.3f | %5.1fx | %8.2f | %8.2f | %5.1fx |%s\n", ctxs[i], sd, dd, dd / sd, sp, dp,
               dp / sp, rc ? " ERROR" : "");
        fflush(stdout);
    }
    sd_model_free(m);
    return 0;
}

// ---------------------------------------------------------------- --v32

#define V32_LAYERS 4
#define V32_CHUNK 256
#define V32_DECODE 16

// DeepSeek-V3.2's config.json (attention, indexer, RoPE/YaRN, vocab) with V32_LAYERS dense-MLP layers.
static const char v32_json[] =
    "{\"architectures\": [\"DeepseekV32ForCausalLM\"], \"model_type\": \"deepseek_v32\", \"vocab_size\": 129280, "
    "\"hidden_size\": 7168, \"intermediate_size\": 18432, \"num_hidden_layers\": 4, \"num_attention_heads\": 128, "
    "\"num_key_value_heads\": 128, \"q_lora_rank\": 1536, \"kv_lora_rank\": 512, \"qk_nope_head_dim\": 128, "
    "\"qk_rope_head_dim\": 64, \"v_head_dim\": 128, \"n_routed_experts\": 0, \"first_k_dense_replace\": 4, "
    "\"index_n_heads\": 64, \"index_head_dim\": 128, \"index_topk\": 2048, \"rms_norm_eps\": 1e-06, "
    "\"max_position_embeddings\": 163840, \"rope_theta\": 10000, \"rope_scaling\": {\"type\": \"yarn\", "
    "\"factor\": 40, \"original_max_position_embeddings\": 4096, \"beta_fast\": 32, \"beta_slow\": 1, "
    "\"mscale\": 1.0, \"mscale_all_dim\": 1.0}, \"tie_word_embeddings\": false, \"bos_token_id\": 0, "
    "\"eos_token_id\": 1, \"hidden_act\": \"silu\"}";

struct v32_model {
    struct sd_model m;
    void *bufs[48];
    int n_bufs;
};

// n floats uniform in (-a, a), a = sqrt(3 / fan_in): unit-variance outputs for unit-variance inputs.
// fan_in 0: all ones (norm weights); -1: all zeros (biases).
static float *v32_buf(struct v32_model *v, size_t n, int fan_in, uint64_t seed)
{
    float *p = malloc(n * sizeof *p);
    if (!p || v->n_bufs == (int)(sizeof v->bufs / sizeof v->bufs[0])) {
        free(p);
        return NULL;
    }
    v->bufs[v->n_bufs++] = p;
    if (fan_in <= 0) {
        for (size_t i = 0; i < n; i++)
            p[i] = fan_in == 0 ? 1.0f : 0.0f;
        return p;
    }
    float a = sqrtf(3.0f / (float)fan_in) * 2.0f / 16777216.0f, b = sqrtf(3.0f / (float)fan_in);
    // counter-based (splitmix64 of seed and index): parallel, and the same values for any thread count
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (seed << 40) + i + 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        p[i] = (float)(z >> 40) * a - b;
    }
    return p;
}

static struct sd_wmat v32_mat(struct v32_model *v, int rows, int cols, uint64_t seed, int *fail)
{
    const float *p = v32_buf(v, (size_t)rows * cols, cols, seed);
    *fail |= p == NULL;
    return (struct sd_wmat){.data = p, .type = SD_Q_F32, .rows = rows, .cols = cols};
}

#define V32_BLOCK 128

// A random matrix block-quantized as DeepSeek releases its weights: per 128x128 block scale = amax / 448,
// e4m3 of x / scale; the F32 view holds the dequantized values e4m3 * scale (what the model loader makes of
// an FP8 tensor), with the e4m3 values and scales as its FP8 source (sd_wmat.fp8).
static struct sd_wmat v32_fp8_mat(struct v32_model *v, int rows, int cols, uint64_t seed, int *fail)
{
    struct sd_wmat w = v32_mat(v, rows, cols, seed, fail);
    const int sr = (rows + V32_BLOCK - 1) / V32_BLOCK, sc = (cols + V32_BLOCK - 1) / V32_BLOCK;
    uint8_t *q = malloc((size_t)rows * cols);
    float *scale = malloc((size_t)sr * sc * sizeof *scale);
    if (!w.data || !q || !scale || v->n_bufs + 2 > (int)(sizeof v->bufs / sizeof v->bufs[0])) {
        free(q);
        free(scale);
        *fail = 1;
        return w;
    }
    v->bufs[v->n_bufs++] = q;
    v->bufs[v->n_bufs++] = scale;
    float *x = (float *)w.data;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic)
#endif
    for (int b = 0; b < sr * sc; b++) {
        const int r0 = b / sc * V32_BLOCK, c0 = b % sc * V32_BLOCK;
        const int r1 = r0 + V32_BLOCK < rows ? r0 + V32_BLOCK : rows,
                  c1 = c0 + V32_BLOCK < cols ? c0 + V32_BLOCK : cols;
        float amax = 0.0f;
        for (int r = r0; r < r1; r++)
            for (int c = c0; c < c1; c++)
                amax = fmaxf(amax, fabsf(x[(size_t)r * cols + c]));
        const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
        scale[b] = s;
        for (int r = r0; r < r1; r++)
            for (int c = c0; c < c1; c++) {
                size_t o = (size_t)r * cols + c;
                q[o] = sd_f32_to_e4m3(x[o] / s);
                x[o] = sd_e4m3_to_f32(q[o]) * s;
            }
    }
    w.fp8 = q;
    w.fp8_scale = scale;
    w.fp8_block = V32_BLOCK;
    return w;
}

static void v32_free(struct v32_model *v)
{
    for (int i = 0; i < v->n_bufs; i++)
        free(v->bufs[i]);
    free(v->m.layers);
    free(v);
}

// The model, its layers sharing one host copy of the weights (each is uploaded to its own device copy, so
// the GPU work and memory are those of V32_LAYERS distinct layers); embeddings tied to the LM head.
static struct v32_model *v32_new(void)
{
    struct v32_model *v = calloc(1, sizeof *v);
    struct sd_err err = {0};
    if (!v || sd_config_parse(v32_json, "v32 bench config", &v->m.cfg, &err) != SD_OK) {
        fprintf(stderr, "bench_cuda_forward --v32: %s\n", v ? err.msg : "out of memory");
        free(v);
        return NULL;
    }
    const struct sd_config *c = &v->m.cfg;
    int H = c->hidden_size, nh = c->n_heads, ql = c->q_lora_rank, kvr = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    int dq = c->qk_nope_head_dim + dr, dv = c->v_head_dim, ni = c->index_n_heads, di = c->index_head_dim;
    int I = c->intermediate_size, fail = 0;
    struct sd_layer_weights w = {0};
    w.attn_norm = v32_buf(v, (size_t)H, 0, 0);
    w.ffn_norm = v32_buf(v, (size_t)H, 0, 0);
    w.wq_a = v32_fp8_mat(v, ql, H, 1, &fail);
    w.q_a_norm = v32_buf(v, (size_t)ql, 0, 0);
    w.wq_b = v32_fp8_mat(v, nh * dq, ql, 2, &fail);
    w.wkv_a = v32_fp8_mat(v, kvr + dr, H, 3, &fail);
    w.kv_a_norm = v32_buf(v, (size_t)kvr, 0, 0);
    w.wkv_b = v32_buf(v, (size_t)nh * (c->qk_nope_head_dim + dv) * kvr, kvr, 4);
    w.wo = v32_fp8_mat(v, H, nh * dv, 5, &fail);
    w.idx_wq_b = v32_fp8_mat(v, ni * di, ql, 6, &fail);
    w.idx_wk = v32_fp8_mat(v, di, H, 7, &fail);
    w.idx_wproj = v32_mat(v, ni, H, 8, &fail);
    w.idx_k_norm_w = v32_buf(v, (size_t)di, 0, 0);
    w.idx_k_norm_b = v32_buf(v, (size_t)di, -1, 0);
    w.w_gate = v32_fp8_mat(v, I, H, 9, &fail);
    w.w_up = v32_fp8_mat(v, I, H, 10, &fail);
    w.w_down = v32_fp8_mat(v, H, I, 11, &fail);
    v->m.embed = v32_mat(v, c->vocab_size, H, 12, &fail);
    v->m.lm_head = v->m.embed;
    v->m.norm = v32_buf(v, (size_t)H, 0, 0);
    v->m.layers = calloc((size_t)c->n_layers, sizeof *v->m.layers);
    fail |= !w.attn_norm || !w.ffn_norm || !w.q_a_norm || !w.kv_a_norm || !w.wkv_b || !w.idx_k_norm_w ||
            !w.idx_k_norm_b || !v->m.norm || !v->m.layers;
    if (fail) {
        fprintf(stderr, "bench_cuda_forward --v32: out of host memory for the weights\n");
        v32_free(v);
        return NULL;
    }
    for (int il = 0; il < c->n_layers; il++)
        v->m.layers[il] = w;
    return v;
}

struct v32_res {
    double prefill_tps, decode_ms;
    double dev_bytes;    // device memory the session took (weights, caches, scratch), from cudaMemGetInfo
    double weight_bytes; // the backend's weight copy (sd_session_backend_weight_bytes)
    long tc_calls;       // tensor-core attention calls up to the end of the timed prefill chunk
    long graph_steps;    // decode steps replayed from a CUDA graph
    long fp8_gemms;      // FP8 x FP8 GEMMs (fp8_act) up to the end of the timed prefill chunk
    double kv_bytes;     // KV + indexer cache bytes per token (all layers)
};

// Warm-up past the top-k (so the selection kernels are loaded), then fill to the depth, prefill a chunk,
// decode V32_DECODE tokens.
// wmode: bit 0 gpu_weights_bf16, bit 1 gpu_weights_fp8, bit 2 gpu_attn_exact, bit 3 gpu_no_graph, bit 4 fp8_act,
// bit 5 kv_fp8.
static int v32_at(const struct sd_model *m, int ctx, enum sd_dsa_mode mode, int fp8, int wmode, struct v32_res *r)
{
    struct sd_session_params sp = {.n_ctx = ctx,
                                   .max_batch = V32_CHUNK,
                                   .dsa_mode = mode,
                                   .backend = sd_cuda_backend(),
                                   .indexer_fp8 = fp8,
                                   .gpu_weights_bf16 = wmode & 1,
                                   .gpu_weights_fp8 = (wmode & 2) != 0,
                                   .gpu_attn_exact = (wmode & 4) != 0,
                                   .gpu_no_graph = (wmode & 8) != 0,
                                   .fp8_act = (wmode & 16) != 0,
                                   .kv_fp8 = (wmode & 32) != 0};
    struct sd_session *s = NULL;
    struct sd_err err = {0};
    int32_t ids[V32_CHUNK];
    float *lg = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    rand_ids(ids, V32_CHUNK, m->cfg.vocab_size, 77);
    int depth = ctx - V32_CHUNK - V32_DECODE - 1, warm = m->cfg.index_topk + 512;
    size_t free0 = 0, free1 = 0;
    sd_cuda_mem_info(&free0, NULL);
    int ok = lg && sd_session_new(m, &sp, &s, &err) == SD_OK && sd_cuda_mem_info(&free1, NULL) == SD_OK &&
             sd_session_debug_fill(s, warm, 5, &err) == SD_OK &&
             sd_session_eval(s, ids, V32_CHUNK, lg, 0, &err) == SD_OK &&
             sd_session_eval(s, ids, 1, lg, 0, &err) == SD_OK && sd_session_truncate(s, 0, &err) == SD_OK &&
             sd_session_debug_fill(s, depth, 9, &err) == SD_OK;
    double t0 = sd_now_s();
    ok = ok && sd_session_eval(s, ids, V32_CHUNK, lg, 0, &err) == SD_OK;
    double t1 = sd_now_s();
    r->tc_calls = s ? sd_session_backend_counters(s).tc_attn_calls : 0;
    r->fp8_gemms = s ? sd_session_backend_counters(s).fp8_gemm_calls : 0;
    ok = ok && sd_session_eval(s, &ids[V32_DECODE], 1, lg, 0, &err) == SD_OK; // untimed: a graph's instantiation
    double t1d = sd_now_s();
    for (int i = 0; ok && i < V32_DECODE; i++)
        ok = sd_session_eval(s, &ids[i], 1, lg, 0, &err) == SD_OK;
    double t2 = sd_now_s();
    if (s) {
        struct sd_backend_counters bc = sd_session_backend_counters(s);
        r->graph_steps = bc.graph_steps;
    }
    if (ok)
        for (int i = 0; i < m->cfg.vocab_size; i++)
            if (!isfinite(lg[i])) {
                ok = 0;
                snprintf(err.msg, sizeof err.msg, "non-finite logit at %d", i);
                break;
            }
    if (!ok)
        fprintf(stderr, "v32 bench (ctx %d, mode %d, fp8 %d, weights %d): %s\n", ctx, (int)mode, fp8, wmode, err.msg);
    r->weight_bytes = s ? (double)sd_session_backend_weight_bytes(s) : 0.0;
    r->prefill_tps = V32_CHUNK / (t1 - t0);
    r->decode_ms = (t2 - t1d) * 1e3 / V32_DECODE;
    r->dev_bytes = (double)free0 - (double)free1;
    r->kv_bytes = s ? (double)sd_session_kv_bytes_per_token(s) : 0.0;
    sd_session_free(s);
    free(lg);
    return ok ? 0 : -1;
}

// --v32 --bf16: the device weight modes, DSA with the FP8 indexer, at each context, with ratios to f32.
static int v32_bf16(struct v32_model *v, const int *ctxs, int n_ctx)
{
    printf(
        "Device weight modes, DSA with the FP8 indexer, same %d-token chunk and %d decode steps: f32; bf16 "
        "(gpu_weights_bf16: attention, indexer, MLP and LM-head matrices in bf16, GEMMs bf16 x bf16 with fp32 "
        "accumulation); fp8 (gpu_weights_fp8 + bf16: the matrices released as FP8 stay e4m3 + 128x128 scales, "
        "decode GEMVs dequantize in registers, prefill dequantizes to bf16 per GEMM; the rest bf16); fp8-f32 "
        "(FP8 as fp8, the rest and the prefill GEMMs f32). bf16 modes run the FP8 indexer's scores and the prefill "
        "chunk's MLA attention on tensor cores unless marked \"exact DSA\" (gpu_attn_exact: the exact FP8 indexer and "
        "the fp32 attention kernel); decode steps run as CUDA graphs unless marked "
        "\"no graph\" (gpu_no_graph: every kernel launched one by one). Columns tc = tensor-core indexer/attention "
        "calls in the session up to the end of the prefill chunk, graph = "
        "decode steps from a graph. \"fp8 act\" rows: fp8_act (DeepSeek's W8A8: every input of an FP8 matrix "
        "quantized in 1x128 blocks; prefill GEMMs FP8 x FP8 on tensor cores through cuBLASLt, column fp8 gemm = "
        "their count up to the end of the prefill chunk).\n\n",
        V32_CHUNK, V32_DECODE);
    printf("| ctx | weights | device weight GiB | session GiB | prefill tok/s | decode tok/s | decode ms/token | "
           "weights / f32 | prefill / f32 | decode / f32 | tc | graph | fp8 gemm "
           "|\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    static const struct {
        const char *name;
        int wmode;
    } wm[] = {{"f32", 0}, {"f32, no graph", 8},  {"bf16", 1},    {"bf16, exact DSA", 5}, {"bf16, no graph", 9},
              {"fp8", 3}, {"fp8, exact DSA", 7}, {"fp8-f32", 2}, {"fp8 + fp8 act", 19},  {"fp8-f32 + fp8 act", 18}};
    enum { NW = sizeof wm / sizeof wm[0] };
    int bad = 0;
    for (int i = 0; i < n_ctx; i++) {
        struct v32_res r[NW] = {{0}};
        for (int k = 0; k < NW; k++) {
            int rc = v32_at(&v->m, ctxs[i], SD_DSA_SPARSE, 1, wm[k].wmode, &r[k]);
            bad |= rc;
            printf("| %6d | %s | %.2f | %.2f | %8.1f | %7.2f | %8.2f | %.3f | %.2fx | %.2fx | %ld | %ld | %ld |%s\n",
                   ctxs[i], wm[k].name, r[k].weight_bytes / (1 << 30), r[k].dev_bytes / (1 << 30), r[k].prefill_tps,
                   1e3 / r[k].decode_ms, r[k].decode_ms,
                   r[0].weight_bytes > 0 ? r[k].weight_bytes / r[0].weight_bytes : 0.0,
                   r[k].prefill_tps / r[0].prefill_tps, r[0].decode_ms / r[k].decode_ms, r[k].tc_calls,
                   r[k].graph_steps, r[k].fp8_gemms, rc ? " ERROR" : "");
            fflush(stdout);
        }
    }
    return bad ? 1 : 0;
}

// --v32 --kv: the FP8 latent cache (kv_fp8) against the f32 one, in three weight modes, at each context; the
// session's device memory (weights included) and the cache bytes per token.
static int v32_kv(struct v32_model *v, const int *ctxs, int n_ctx)
{
    printf("The MLA latent cache in fp32 (2,304 B per token and layer) or kv_fp8 (DeepSeek's FP8 rows, 656 B: c_kv "
           "e4m3 in 1x128 tiles with power-of-two scales, k_pe bf16; attention dequantizes rows as it loads them, the "
           "tensor-core prefill attention expands them to bf16), DSA with the FP8 indexer, same %d-token chunk and %d "
           "decode steps. Ratios: the kv_fp8 row against the row above it.\n\n",
           V32_CHUNK, V32_DECODE);
    printf("| ctx | weights | latent cache | KV+indexer B/token | session GiB | prefill tok/s | decode ms/token | prefill "
           "ratio | decode ratio |\n|---|---|---|---|---|---|---|---|---|\n");
    static const struct {
        const char *name;
        int wmode;
    } wm[] = {{"f32", 0}, {"f32", 32}, {"bf16", 1}, {"bf16", 33}, {"fp8 + fp8 act", 19}, {"fp8 + fp8 act", 51}};
    enum { NW = sizeof wm / sizeof wm[0] };
    int bad = 0;
    for (int i = 0; i < n_ctx; i++) {
        struct v32_res r[NW] = {{0}};
        for (int k = 0; k < NW; k++) {
            int rc = v32_at(&v->m, ctxs[i], SD_DSA_SPARSE, 1, wm[k].wmode, &r[k]);
            bad |= rc;
            int kv8 = (wm[k].wmode & 32) != 0;
            printf("| %6d | %s | %s | %.0f | %.2f | %8.1f | %8.2f | %.2fx | %.2fx |%s\n", ctxs[i], wm[k].name,
                   kv8 ? "kv_fp8" : "fp32", r[k].kv_bytes, r[k].dev_bytes / (1 << 30), r[k].prefill_tps, r[k].decode_ms,
                   kv8 ? r[k].prefill_tps / r[k - 1].prefill_tps : 1.0, kv8 ? r[k - 1].decode_ms / r[k].decode_ms : 1.0,
                   rc ? " ERROR" : "");
            fflush(stdout);
        }
    }
    return bad ? 1 : 0;
}

// --v32 --sample: decode steps that pick their token, with the logits copied to the host and sd_sampler_sample
// there, against sd_session_eval_sample (the CUDA backend samples on the device, the logits stay there), greedy and
// with `sparsedoc generate`'s defaults (temperature 0.8, top-p 0.95), fp8 + fp8_act weights, FP8 indexer.
#define V32_SAMPLE_STEPS 32
static int v32_sample(struct v32_model *v, const int *ctxs, int n_ctx)
{
    const struct sd_model *m = &v->m;
    int V = m->cfg.vocab_size, bad = 0;
    printf("Decode with sampling, %d steps after a %d-token chunk at depth (the cache before it pseudo-random rows), "
           "fp8 + fp8 act weights, DSA with the FP8 indexer; vocabulary %d. host: logits copied out, "
           "sd_sampler_sample on the CPU; device: sd_session_eval_sample, sampled on the GPU (kernels/sample.cu).\n\n",
           V32_SAMPLE_STEPS, V32_CHUNK, V);
    printf("| ctx | sampling | host ms/token | device ms/token | host / device |\n|---|---|---|---|---|\n");
    static const struct {
        const char *name;
        struct sd_sampler_params p;
    } cfg[] = {{"greedy", {0.0f, 0, 1.0f, 1.0f, 64, 1}}, {"temperature 0.8, top-p 0.95", {0.8f, 0, 0.95f, 1.0f, 64, 1}}};
    int32_t *ids = malloc(sizeof(int32_t) * (V32_CHUNK + V32_SAMPLE_STEPS + 1));
    int32_t *hist = malloc(sizeof(int32_t) * (V32_CHUNK + V32_SAMPLE_STEPS + 1));
    float *lg = malloc(sizeof(float) * (size_t)V);
    for (int i = 0; i < n_ctx; i++) {
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
            double ms[2] = {0, 0};
            for (int dev = 0; dev < 2; dev++) {
                struct sd_session_params sp = {.n_ctx = ctxs[i],
                                               .max_batch = V32_CHUNK,
                                               .backend = sd_cuda_backend(),
                                               .indexer_fp8 = 1,
                                               .gpu_weights_bf16 = 1,
                                               .gpu_weights_fp8 = 1,
                                               .fp8_act = 1};
                struct sd_session *s = NULL;
                struct sd_sampler *smp = NULL;
                struct sd_err err = {0};
                rand_ids(ids, V32_CHUNK, V, 77);
                memcpy(hist, ids, sizeof(int32_t) * V32_CHUNK);
                size_t nh = V32_CHUNK;
                int depth = ctxs[i] - V32_CHUNK - V32_SAMPLE_STEPS - 2;
                int32_t t = 0;
                int ok = sd_session_new(m, &sp, &s, &err) == SD_OK && sd_sampler_new(&cfg[c].p, V, &smp, &err) == SD_OK &&
                         sd_session_debug_fill(s, depth, 9, &err) == SD_OK &&
                         sd_session_eval_sample(s, ids, V32_CHUNK, smp, hist, nh, &t, &err) == SD_OK && t >= 0;
                hist[nh++] = t;
                // one untimed step (graph instantiation), then the timed ones
                for (int k = 0; ok && k <= V32_SAMPLE_STEPS; k++) {
                    double t0 = sd_now_s();
                    if (dev) {
                        ok = sd_session_eval_sample(s, &hist[nh - 1], 1, smp, hist, nh, &t, &err) == SD_OK;
                    } else {
                        ok = sd_session_eval(s, &hist[nh - 1], 1, lg, 0, &err) == SD_OK;
                        t = ok ? sd_sampler_sample(smp, lg, hist, nh) : -1;
                    }
                    ok = ok && t >= 0;
                    if (k > 0)
                        ms[dev] += (sd_now_s() - t0) * 1e3 / V32_SAMPLE_STEPS;
                    hist[nh++] = t;
                    if (nh > V32_CHUNK + V32_SAMPLE_STEPS)
                        nh = V32_CHUNK + V32_SAMPLE_STEPS; // the history buffer's end (the penalty is off here)
                }
                if (!ok) {
                    fprintf(stderr, "v32 sample (ctx %d, %s, %s): %s\n", ctxs[i], cfg[c].name, dev ? "device" : "host",
                            err.msg);
                    bad = 1;
                }
                sd_sampler_free(smp);
                sd_session_free(s);
            }
            printf("| %6d | %s | %.3f | %.3f | %.2fx |\n", ctxs[i], cfg[c].name, ms[0], ms[1], ms[0] / ms[1]);
            fflush(stdout);
        }
    }
    free(ids), free(hist), free(lg);
    return bad;
}

static int v32_bench(int argc, char **argv)
{
    int kv = argc > 2 && !strcmp(argv[2], "--kv"), smp = argc > 2 && !strcmp(argv[2], "--sample");
    int ctxs[8] = {32768, 131072}, n_ctx = 2, bf16 = argc > 2 && (!strcmp(argv[2], "--bf16") || kv || smp);
    if (argc > 2 + bf16) {
        n_ctx = 0;
        for (int i = 2 + bf16; i < argc && n_ctx < 8; i++)
            ctxs[n_ctx++] = atoi(argv[i]);
    }
    double t0 = sd_now_s();
    struct v32_model *v = v32_new();
    if (!v)
        return 1;
    const struct sd_config *c = &v->m.cfg;
    char name[256] = "";
    int n_sm = 0;
    size_t l2 = 0;
    sd_cuda_device_info(name, sizeof name, &n_sm, &l2);
    size_t lat = ((size_t)c->kv_lora_rank + c->qk_rope_head_dim) * 4, ix32 = (size_t)c->index_head_dim * 4,
           ix8 = (size_t)c->index_head_dim + 4;
    printf("DeepSeek-V3.2 at real width, %d layers (dense MLP %d; V3.2 has 61, MoE from layer 3), vocab %d, hidden %d, "
           "128 heads, MLA %d+%d, indexer %dx%d, top-k %d; random weights generated in memory in %.1f s; GPU %s.\n"
           "The projections are FP8 block-quantized on the host (the F32 view holds their dequantized values); "
           "weights and activations fp32 on the CUDA backend unless the rows say otherwise; the MLA latent cache is "
           "fp32.\n",
           c->n_layers, c->intermediate_size, c->vocab_size, c->hidden_size, c->kv_lora_rank, c->qk_rope_head_dim,
           c->index_n_heads, c->index_head_dim, c->index_topk, sd_now_s() - t0, name);
    printf("Cache bytes per token and layer: MLA latent %zu + indexer keys %zu (FP8: e4m3 + scale) or %zu (fp32); "
           "per token for %d layers: %zu (FP8 indexer) / %zu (fp32 indexer); for V3.2's 61 layers at 128K tokens: "
           "%.1f GiB / %.1f GiB.\n",
           lat, ix8, ix32, c->n_layers, (lat + ix8) * c->n_layers, (lat + ix32) * c->n_layers,
           (double)(lat + ix8) * 61 * 131072 / (1 << 30), (double)(lat + ix32) * 61 * 131072 / (1 << 30));
    printf("Prefill: one %d-token chunk at depth ctx-%d (the cache before it filled with pseudo-random rows); "
           "decode: the next %d tokens.\n\n",
           V32_CHUNK, V32_CHUNK + V32_DECODE + 1, V32_DECODE);
    if (bf16) {
        int rc = smp ? v32_sample(v, ctxs, n_ctx) : kv ? v32_kv(v, ctxs, n_ctx) : v32_bf16(v, ctxs, n_ctx);
        v32_free(v);
        return rc;
    }
    printf("| ctx | attention | cache B/token (%d layers) | prefill tok/s | decode tok/s | decode ms/token |\n"
           "|---|---|---|---|---|---|\n",
           c->n_layers);
    fflush(stdout);
    struct {
        const char *label;
        enum sd_dsa_mode mode;
        int fp8;
    } modes[] = {{"DSA, FP8 indexer", SD_DSA_SPARSE, 1},
                 {"DSA, fp32 indexer", SD_DSA_SPARSE, 0},
                 {"dense (all tokens)", SD_DSA_DENSE, 0}};
    int bad = 0;
    double dev[8][3] = {{0}};
    for (int i = 0; i < n_ctx; i++) {
        for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
            struct v32_res r = {0};
            int rc = v32_at(&v->m, ctxs[i], modes[k].mode, modes[k].fp8, 0, &r);
            dev[i][k] = r.dev_bytes;
            bad |= rc;
            printf("| %6d | %s | %zu | %8.1f | %7.2f | %8.2f |%s\n", ctxs[i], modes[k].label,
                   (lat + (modes[k].fp8 ? ix8 : ix32)) * c->n_layers, r.prefill_tps, 1e3 / r.decode_ms, r.decode_ms,
                   rc ? " ERROR" : "");
            fflush(stdout);
        }
    }
    // Device bytes that grow with the context: the difference between two sessions' allocations over the
    // difference of their n_ctx (weights and fixed scratch cancel), against the layout above.
    if (n_ctx >= 2 && ctxs[n_ctx - 1] != ctxs[0]) {
        printf("\nDevice memory per token of context, measured (cudaMemGetInfo, sessions at %d and %d tokens): ",
               ctxs[0], ctxs[n_ctx - 1]);
        for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++)
            printf("%s%s %.1f B", k ? ", " : "", modes[k].label,
                   (dev[n_ctx - 1][k] - dev[0][k]) / (double)(ctxs[n_ctx - 1] - ctxs[0]));
        printf(" (this includes the indexer score scratch, min(chunk, 64M / n_ctx) x n_ctx floats: %d B per token "
               "at a %d-token chunk; the session with %d tokens took %.2f GiB, the f32 weights included)\n",
               V32_CHUNK * 4, V32_CHUNK, ctxs[n_ctx - 1], dev[n_ctx - 1][0] / (1 << 30));
    }
    v32_free(v);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--v32")) {
        if (sd_cuda_device_count() <= 0) {
            fprintf(stderr, "bench_cuda_forward: no CUDA device\n");
            return 77;
        }
        return v32_bench(argc, argv);
    }
    if (argc > 1 && !strcmp(argv[1], "--layer"))
        return sd_cuda_device_count() > 0 ? layer_bench(argc, argv) : 77;
    const char *dir = argc > 1 ? argv[1] : "data/models/sparsedoc-mini";
    int ctxs[8] = {4096, 16384, 65536}, n_ctx = 3;
    if (argc > 2) {
        n_ctx = 0;
        for (int i = 2; i < argc && n_ctx < 8; i++)
            ctxs[n_ctx++] = atoi(argv[i]);
    }
    if (sd_cuda_device_count() <= 0) {
        fprintf(stderr, "bench_cuda_forward: no CUDA device\n");
        return 77;
    }
    struct sd_model *m = NULL;
    struct sd_err err = {0};
    if (sd_model_load(dir, &m, &err) != SD_OK) {
        fprintf(stderr, "bench_cuda_forward: %s\n", err.msg);
        return 1;
    }
    char name[256] = "";
    int n_sm = 0;
    size_t l2 = 0;
    sd_cuda_device_info(name, sizeof name, &n_sm, &l2);
    const struct sd_backend *cuda = sd_cuda_backend();
    printf("model %s (%s, %d layers, hidden %d), GPU %s, prefill chunk %d, decode %d tokens\n", dir, m->cfg.arch_name,
           m->cfg.n_layers, m->cfg.hidden_size, name, PREFILL, DECODE);
    char lines[16][256];
    int nl = 0;
    for (int i = 0; i < n_ctx; i++) {
        struct res c = {0}, g = {0}, gd = {0}, gn = {0};
        int rc = at_depth(m, ctxs[i], NULL, SD_DSA_SPARSE, 0, &c);
        rc |= at_depth(m, ctxs[i], cuda, SD_DSA_SPARSE, 0, &g);
        rc |= at_depth(m, ctxs[i], cuda, SD_DSA_DENSE, 0, &gd);
        rc |= at_depth(m, ctxs[i], cuda, SD_DSA_SPARSE, 1, &gn); // decode steps launched kernel by kernel
        double fp = full_prefill(m, ctxs[i], cuda);
        double fc = ctxs[i] <= 4096 ? full_prefill(m, ctxs[i], NULL) : 0.0;
        snprintf(lines[nl++], sizeof lines[0],
                 "| %6d | %9.1f | %10.1f | %6.1fx | %8.1f | %9.1f | %6.1fx | %9.1f | %5.2fx | %13.1f | %10.1f | %s |",
                 ctxs[i], c.prefill_tps, g.prefill_tps, g.prefill_tps / c.prefill_tps, c.decode_tps, g.decode_tps,
                 g.decode_tps / c.decode_tps, gn.decode_tps, g.decode_tps / gn.decode_tps, gd.decode_tps, fp,
                 fc > 0 ? "cpu full prefill below" : (rc ? "ERROR" : "ok"));
        if (fc > 0)
            snprintf(lines[nl++], sizeof lines[0],
                     "|        | CPU real prefill of %d tokens from 0: %.1f tok/s (CUDA %.1fx) |", ctxs[i], fc,
                     fp / fc);
        fprintf(stderr, "ctx %d done\n", ctxs[i]);
    }
    printf("| ctx | CPU prefill tok/s | CUDA prefill tok/s | ratio | CPU decode tok/s | CUDA decode tok/s | ratio | "
           "CUDA decode without graphs | graphs / without | CUDA dense-attn decode tok/s | "
           "CUDA real prefill from 0 tok/s | note |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < nl; i++)
        printf("%s\n", lines[i]);
    sd_model_free(m);
    return 0;
}
