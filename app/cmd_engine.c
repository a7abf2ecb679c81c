// cmd_engine.c: the engine-level CLI commands: `logits` (float32 logits of every position of a token
// id file: the stable interface reference tests and tools use) and `generate` (streamed text).
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "commands.h"
#include "model.h"
#include "sampler.h"
#include "session.h"
#include "sd_clock.h"
#include "tokenizer.h"
#ifdef SD_CUDA_BACKEND
#include "sd_cuda.h"
#endif

// Parse an integer option strictly; returns 0 on success.
static int parse_int(const char *s, const char *what, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "sparsedoc: %s must be an integer in [%ld, %ld], got '%s'\n", what, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *s, const char *what, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "sparsedoc: %s must be a number in [%g, %g], got '%s'\n", what, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

// --backend NAME: 0 and *be set (NULL for cpu), or SD_EXIT_USAGE for an unknown name, or SD_EXIT_FAIL when
// the backend exists in this build but cannot run here (no CUDA device or driver).
static int parse_backend(const char *s, const struct sd_backend **be)
{
    *be = NULL;
    if (!strcmp(s, "cpu"))
        return 0;
#ifdef SD_CUDA_BACKEND
    if (!strcmp(s, "cuda")) {
        if (sd_cuda_device_count() <= 0) {
            fprintf(stderr, "sparsedoc: --backend cuda: no CUDA device or driver found on this machine; use --backend "
                            "cpu\n");
            return SD_EXIT_FAIL;
        }
        *be = sd_cuda_backend();
        return 0;
    }
    fprintf(stderr, "sparsedoc: unknown backend '%s' (available: cpu, cuda)\n", s);
#else
    fprintf(stderr,
            "sparsedoc: backend '%s' is not available in this build (available: cpu; cuda needs a build with "
            "nvcc)\n",
            s);
#endif
    return SD_EXIT_USAGE;
}

// --gpu-weights only means something for a GPU backend: 0 when fine, else a message and -1.
static int check_gpu_weights(int given, const struct sd_session_params *sp)
{
    if (given && !sp->backend) {
        fprintf(stderr, "sparsedoc: --gpu-weights applies to --backend cuda only (the CPU backend keeps f32 "
                        "weights)\n");
        return -1;
    }
    return 0;
}

static int parse_dsa(const char *s, enum sd_dsa_mode *m)
{
    if (!strcmp(s, "sparse"))
        *m = SD_DSA_SPARSE;
    else if (!strcmp(s, "dense"))
        *m = SD_DSA_DENSE;
    else {
        fprintf(stderr, "sparsedoc: --attention must be 'sparse' or 'dense', got '%s'\n", s);
        return -1;
    }
    return 0;
}

static void logits_usage(FILE *f)
{
    fprintf(f, "usage: sparsedoc logits --model DIR --ids FILE --out FILE [options]\n"
               "Writes float32 little-endian logits for every position, row-major [n_ids x vocab].\n\n"
               "  --model PATH       HF model directory (config.json + safetensors) or a .gguf file\n"
               "  --ids FILE         whitespace-separated token ids\n"
               "  --out FILE         output file\n"
               "  --threads N        CPU threads (default: all cores)\n"
               "  --backend NAME     compute backend: cpu (default) or cuda (fp32 forward pass on the GPU)\n"
               "  --attention MODE   sparse (default, the model's DSA) or dense (same weights, full attention)\n"
               "  --index-topk K     override the model's index_topk\n"
               "  --indexer-fp8      DeepSeek's FP8 indexer numerics instead of fp32\n"
               "  --fp8-act          DeepSeek's FP8 GEMMs: inputs of FP8-released matrices quantized in 1x128 blocks\n"
               "                     (with --gpu-weights fp8 on cuda: FP8 tensor-core GEMMs for prefill)\n"
               "  --kv-fp8           keep the MLA latent cache in FP8 (DeepSeek's 656-byte rows, 3.5x smaller than f32;\n"
               "                     models with MLA only)\n"
               "  --gpu-weights T    cuda only: f32 (default); bf16 (large matrices in bf16, fp32 accumulation; at\n"
               "                     DeepSeek-V3.2's shapes the FP8 indexer and prefill attention on tensor cores);\n"
               "                     fp8 (matrices released as FP8 kept FP8 with their block scales, the rest as\n"
               "                     bf16); fp8-f32 (FP8 as fp8, the rest f32)\n"
               "  --batch N          prefill chunk size (default 256); 1 = token-by-token decode\n");
}

static int read_ids(const char *path, int32_t **ids, int *n)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "sparsedoc: cannot open ids file %s: %s\n", path, strerror(errno));
        return -1;
    }
    int cap = 1024, len = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    long x;
    int rc = 0;
    while (v && (rc = fscanf(f, "%ld", &x)) == 1) {
        if (x < 0 || x > 0x7fffffff) {
            fprintf(stderr, "sparsedoc: %s: token id %ld out of range\n", path, x);
            rc = -2;
            break;
        }
        if (len == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                free(v);
                v = NULL;
                break;
            }
            v = nv;
        }
        v[len++] = (int32_t)x;
    }
    int bad = !v || rc == -2 || (rc != EOF && rc != 1) || ferror(f);
    if (!bad && rc == 0)
        bad = 1;
    fclose(f);
    if (bad || len == 0) {
        if (v && rc != -2)
            fprintf(stderr, "sparsedoc: %s: expected whitespace-separated non-negative integers%s\n", path,
                    len == 0 ? " (file has none)" : "");
        free(v);
        return -1;
    }
    *ids = v;
    *n = len;
    return 0;
}

int sd_cmd_logits(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ids", required_argument, 0, 'i'},
        {"out", required_argument, 0, 'o'},   {"threads", required_argument, 0, 't'},
        {"backend", required_argument, 0, 'b'}, {"attention", required_argument, 0, 'a'},
        {"index-topk", required_argument, 0, 'k'}, {"indexer-fp8", no_argument, 0, 'f'},
        {"batch", required_argument, 0, 'B'}, {"gpu-weights", required_argument, 0, 'W'},
        {"fp8-act", no_argument, 0, 'A'},       {"kv-fp8", no_argument, 0, 'F'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *model_dir = NULL, *ids_path = NULL, *out_path = NULL;
    struct sd_session_params sp = {0};
    long v;
    int c, gw = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'i': ids_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 't':
            if (parse_int(optarg, "--threads", 0, 4096, &v))
                return SD_EXIT_USAGE;
            sp.n_threads = (int)v;
            break;
        case 'b': {
            int brc = parse_backend(optarg, &sp.backend);
            if (brc)
                return brc;
            break;
        }
        case 'a':
            if (parse_dsa(optarg, &sp.dsa_mode))
                return SD_EXIT_USAGE;
            break;
        case 'k':
            if (parse_int(optarg, "--index-topk", 1, 1 << 24, &v))
                return SD_EXIT_USAGE;
            sp.index_topk = (int)v;
            break;
        case 'f': sp.indexer_fp8 = 1; break;
        case 'A': sp.fp8_act = 1; break;
        case 'F': sp.kv_fp8 = 1; break;
        case 'B':
            if (parse_int(optarg, "--batch", 1, 1 << 20, &v))
                return SD_EXIT_USAGE;
            sp.max_batch = (int)v;
            break;
        case 'W':
            if (sd_cli_gpu_weights(argv[0], optarg, &sp.gpu_weights_bf16, &sp.gpu_weights_fp8))
                return SD_EXIT_USAGE;
            gw = 1;
            break;
        case 'h': logits_usage(stdout); return SD_EXIT_OK;
        default: logits_usage(stderr); return SD_EXIT_USAGE;
        }
    }
    if (!model_dir || !ids_path || !out_path || optind < argc) {
        logits_usage(stderr);
        return SD_EXIT_USAGE;
    }
    if (check_gpu_weights(gw, &sp))
        return SD_EXIT_USAGE;
    int32_t *ids = NULL;
    int n = 0;
    if (read_ids(ids_path, &ids, &n))
        return SD_EXIT_FAIL;
    struct sd_err err = {0};
    struct sd_model *m = NULL;
    struct sd_session *s = NULL;
    float *logits = NULL;
    FILE *f = NULL;
    int rc = SD_EXIT_FAIL;
    if (sd_model_load(model_dir, &m, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc: %s\n", err.msg);
        goto out;
    }
    sp.n_ctx = n;
    if (sd_session_new(m, &sp, &s, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc: %s\n", err.msg);
        goto out;
    }
    logits = malloc((size_t)n * m->cfg.vocab_size * sizeof(float));
    if (!logits) {
        fprintf(stderr, "sparsedoc: out of memory for %d x %d logits\n", n, m->cfg.vocab_size);
        goto out;
    }
    if (sd_session_eval(s, ids, n, logits, 1, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc: %s\n", err.msg);
        goto out;
    }
    f = fopen(out_path, "wb");
    if (!f || fwrite(logits, sizeof(float), (size_t)n * m->cfg.vocab_size, f) != (size_t)n * m->cfg.vocab_size ||
        fflush(f) != 0) {
        fprintf(stderr, "sparsedoc: cannot write %s: %s\n", out_path, strerror(errno));
        goto out;
    }
    rc = SD_EXIT_OK;
out:
    if (f && fclose(f) != 0 && rc == SD_EXIT_OK) {
        fprintf(stderr, "sparsedoc: cannot write %s: %s\n", out_path, strerror(errno));
        rc = SD_EXIT_FAIL;
    }
    free(logits);
    free(ids);
    sd_session_free(s);
    sd_model_free(m);
    return rc;
}

static void generate_usage(FILE *f)
{
    fprintf(f, "usage: sparsedoc generate --model DIR --prompt TEXT [options]\n"
               "Streams the model's continuation of TEXT to standard output.\n\n"
               "  --model PATH       HF model directory (config.json, safetensors, tokenizer.json) or a .gguf file\n"
               "  --prompt TEXT      prompt text (may be empty)\n"
               "  -n N               tokens to generate (default 128)\n"
               "  --temp T           temperature (default 0.8; 0 = greedy)\n"
               "  --top-k K          keep the K most likely tokens (default 0 = off)\n"
               "  --top-p P          nucleus sampling (default 0.95)\n"
               "  --repeat-penalty R repetition penalty (default 1.0 = off)\n"
               "  --seed S           random seed (default: time)\n"
               "  --ctx N            context size (default: min(model max, 8192))\n"
               "  --threads N        CPU threads (default: all cores)\n"
               "  --backend NAME     compute backend: cpu (default) or cuda (fp32 forward pass on the GPU)\n"
               "  --attention MODE   sparse (default) or dense\n"
               "  --gpu-weights T    cuda only: f32 (default); bf16 (large matrices in bf16, fp32 accumulation; at\n"
               "                     DeepSeek-V3.2's shapes the FP8 indexer and prefill attention on tensor cores);\n"
               "                     fp8 (matrices released as FP8 kept FP8 with their block scales, the rest as\n"
               "                     bf16); fp8-f32 (FP8 as fp8, the rest f32)\n"
               "  --indexer-fp8      DeepSeek's FP8 indexer numerics instead of fp32 (DSA models)\n"
               "  --fp8-act          DeepSeek's FP8 GEMMs: inputs of FP8-released matrices quantized in 1x128 blocks\n"
               "                     (with --gpu-weights fp8 on cuda: FP8 tensor-core GEMMs for prefill)\n"
               "  --kv-fp8           keep the MLA latent cache in FP8 (DeepSeek's 656-byte rows, 3.5x smaller than f32;\n"
               "                     models with MLA only)\n"
               "  --stats            print timing to stderr\n");
}

int sd_cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"prompt", required_argument, 0, 'p'},
        {"temp", required_argument, 0, 'T'},    {"top-k", required_argument, 0, 'K'},
        {"top-p", required_argument, 0, 'P'},   {"repeat-penalty", required_argument, 0, 'R'},
        {"seed", required_argument, 0, 's'},    {"ctx", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'}, {"backend", required_argument, 0, 'b'},
        {"attention", required_argument, 0, 'a'}, {"stats", no_argument, 0, 'S'},
        {"gpu-weights", required_argument, 0, 'W'}, {"indexer-fp8", no_argument, 0, 'f'},
        {"fp8-act", no_argument, 0, 'A'},       {"kv-fp8", no_argument, 0, 'F'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    const char *model_dir = NULL, *prompt = NULL;
    long n_gen = 128, v;
    double d;
    struct sd_sampler_params smp = {.temperature = 0.8f, .top_k = 0, .top_p = 0.95f, .repetition_penalty = 1.0f,
                                    .repeat_last_n = 64, .seed = (uint64_t)time(NULL)};
    struct sd_session_params sp = {0};
    int stats = 0, c, gw = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n':
            if (parse_int(optarg, "-n", 0, 1 << 24, &n_gen))
                return SD_EXIT_USAGE;
            break;
        case 'T':
            if (parse_float(optarg, "--temp", 0, 100, &d))
                return SD_EXIT_USAGE;
            smp.temperature = (float)d;
            break;
        case 'K':
            if (parse_int(optarg, "--top-k", 0, 1 << 24, &v))
                return SD_EXIT_USAGE;
            smp.top_k = (int)v;
            break;
        case 'P':
            if (parse_float(optarg, "--top-p", 0, 1, &d))
                return SD_EXIT_USAGE;
            smp.top_p = (float)d;
            break;
        case 'R':
            if (parse_float(optarg, "--repeat-penalty", 0.01, 100, &d))
                return SD_EXIT_USAGE;
            smp.repetition_penalty = (float)d;
            break;
        case 's':
            if (parse_int(optarg, "--seed", 0, 0x7fffffffL, &v))
                return SD_EXIT_USAGE;
            smp.seed = (uint64_t)v;
            break;
        case 'c':
            if (parse_int(optarg, "--ctx", 1, 1 << 24, &v))
                return SD_EXIT_USAGE;
            sp.n_ctx = (int)v;
            break;
        case 't':
            if (parse_int(optarg, "--threads", 0, 4096, &v))
                return SD_EXIT_USAGE;
            sp.n_threads = (int)v;
            break;
        case 'b': {
            int brc = parse_backend(optarg, &sp.backend);
            if (brc)
                return brc;
            break;
        }
        case 'a':
            if (parse_dsa(optarg, &sp.dsa_mode))
                return SD_EXIT_USAGE;
            break;
        case 'S': stats = 1; break;
        case 'W':
            if (sd_cli_gpu_weights(argv[0], optarg, &sp.gpu_weights_bf16, &sp.gpu_weights_fp8))
                return SD_EXIT_USAGE;
            gw = 1;
            break;
        case 'f': sp.indexer_fp8 = 1; break;
        case 'A': sp.fp8_act = 1; break;
        case 'F': sp.kv_fp8 = 1; break;
        case 'h': generate_usage(stdout); return SD_EXIT_OK;
        default: generate_usage(stderr); return SD_EXIT_USAGE;
        }
    }
    if (!model_dir || !prompt || optind < argc) {
        generate_usage(stderr);
        return SD_EXIT_USAGE;
    }
    if (check_gpu_weights(gw, &sp))
        return SD_EXIT_USAGE;
    struct sd_err err = {0};
    struct sd_model *m = NULL;
    struct sd_tokenizer *tok = NULL;
    struct sd_session *s = NULL;
    struct sd_sampler *smpl = NULL;
    int32_t *ids = NULL, *hist = NULL;
    size_t n_ids = 0;
    int rc = SD_EXIT_FAIL;
    if (sd_model_load(model_dir, &m, &err) != SD_OK || sd_tokenizer_load_model(model_dir, &tok, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc: %s\n", err.msg);
        goto out;
    }
    if (sd_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n_ids, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc: %s\n", err.msg);
        goto out;
    }
    if (n_ids == 0) {
        fprintf(stderr, "sparsedoc: the prompt encodes to no tokens and the tokenizer adds no BOS; give a prompt\n");
        goto out;
    }
    if (sp.n_ctx <= 0) {
        long want = (long)n_ids + n_gen;
        long cap = m->cfg.max_position_embeddings < 8192 ? (long)m->cfg.max_position_embeddings : 8192;
        sp.n_ctx = (int)(want < cap ? want : cap);
    }
    if ((long)n_ids >= sp.n_ctx) {
        fprintf(stderr, "sparsedoc: prompt of %zu tokens does not fit a context of %d tokens\n", n_ids, sp.n_ctx);
        goto out;
    }
    if (sd_session_new(m, &sp, &s, &err) != SD_OK || sd_sampler_new(&smp, m->cfg.vocab_size, &smpl, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc: %s\n", err.msg);
        goto out;
    }
    hist = malloc(((size_t)n_ids + (size_t)n_gen + 1) * sizeof(int32_t));
    if (!hist) {
        fprintf(stderr, "sparsedoc: out of memory\n");
        goto out;
    }
    memcpy(hist, ids, n_ids * sizeof(int32_t));
    size_t n_hist = n_ids;
    double t0 = sd_now_s();
    int32_t next = -1; // sampled where the logits are (on the GPU with --backend cuda)
    if (sd_session_eval_sample(s, ids, (int)n_ids, smpl, hist, n_hist, &next, &err) != SD_OK) {
        fprintf(stderr, "sparsedoc: %s\n", err.msg);
        goto out;
    }
    double t1 = sd_now_s();
    int eos = sd_tokenizer_eos(tok), bos = sd_tokenizer_bos(tok);
    long produced = 0;
    int prev = hist[n_hist - 1];
    for (long i = 0; i < n_gen; i++) {
        if (next < 0) {
            fprintf(stderr, "\nsparsedoc: the model produced no finite logits (NaN) at position %d\n", sd_session_pos(s));
            rc = SD_EXIT_FAIL;
            goto out;
        }
        if (next == eos || (next == bos && bos >= 0))
            break;
        hist[n_hist++] = next;
        produced++;
        size_t len = 0;
        const char *piece = sd_tokenizer_token_bytes(tok, next, &len);
        if (piece && !sd_tokenizer_is_special(tok, next)) {
            // SentencePiece-style: the first word after BOS loses its leading space (decoder Strip).
            if (prev == bos && len > 0 && piece[0] == ' ') {
                piece++;
                len--;
            }
            fwrite(piece, 1, len, stdout);
            fflush(stdout);
        }
        prev = next;
        if (i + 1 == n_gen || sd_session_pos(s) >= sp.n_ctx)
            break;
        if (sd_session_eval_sample(s, &hist[n_hist - 1], 1, smpl, hist, n_hist, &next, &err) != SD_OK) {
            fprintf(stderr, "\nsparsedoc: %s\n", err.msg);
            goto out;
        }
    }
    fputc('\n', stdout);
    double t2 = sd_now_s();
    if (stats) {
        fprintf(stderr, "prompt: %zu tokens in %.3f s (%.1f tok/s); generated %ld tokens in %.3f s (%.1f tok/s)\n",
                n_ids, t1 - t0, n_ids / (t1 - t0 > 0 ? t1 - t0 : 1e-9), produced, t2 - t1,
                produced / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
        if (sp.backend)
            fprintf(stderr, "device weights: %.1f MiB (%s)\n", (double)sd_session_backend_weight_bytes(s) / (1 << 20),
                    sd_gpu_weights_name(sp.gpu_weights_bf16, sp.gpu_weights_fp8));
    }
    rc = SD_EXIT_OK;
out:
    free(hist);
    free(ids);
    sd_sampler_free(smpl);
    sd_session_free(s);
    sd_tokenizer_free(tok);
    sd_model_free(m);
    return rc;
}
