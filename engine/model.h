// model.h: a loaded model: config + weights. Weights are mmap'd safetensors or GGUF. Safetensors: F32
// tensors are used in place, BF16/F16/FP8-block tensors are converted once to f32 at load. GGUF: the
// weight matrices (struct sd_wmat) stay in their stored ggml type in the mapping and the CPU forward
// multiplies them as stored; vectors and the few matrices used otherwise become f32. Every tensor's
// presence, dtype and shape is validated against the config before use; errors name the file and tensor.
#ifndef SD_MODEL_H
#define SD_MODEL_H

#include <stddef.h>

#include "config.h"
#include "ops_cpu.h"
#include "sd_status.h"

struct sd_tensor_set;
struct sd_gguf;

// Matrices multiplied as y = x W^T are struct sd_wmat views (F32 for safetensors models, the stored
// ggml type for GGUF ones); everything else is f32.
struct sd_layer_weights {
    const float *attn_norm, *ffn_norm;
    // GQA (Llama/Qwen)
    struct sd_wmat wq, wk, wv, wo; // [n_heads*hd, H], [n_kv*hd, H], [n_kv*hd, H], [H, n_heads*hd]
    const float *bq, *bk, *bv;     // optional biases
    const float *q_norm, *k_norm;  // Qwen3 per-head RMSNorm [hd]
    // MLA (DeepSeek): wo shared with above
    struct sd_wmat wq_a, wq_b; // q LoRA: [q_lora, H], [n_heads*(dn+dr), q_lora]
    const float *q_a_norm;     // [q_lora]
    struct sd_wmat wq_full;    // no q LoRA: [n_heads*(dn+dr), H]
    struct sd_wmat wkv_a;      // [kv_lora+dr, H]
    const float *kv_a_norm;    // [kv_lora]
    const float *wkv_b;        // [n_heads*(dn+dv), kv_lora], f32: also used transposed (absorbed MLA)
    // Lightning indexer (DeepSeek-V3.2)
    struct sd_wmat idx_wq_b, idx_wk, idx_wproj;
    const float *idx_k_norm_w, *idx_k_norm_b;
    // Dense SwiGLU MLP
    struct sd_wmat w_gate, w_up, w_down; // [I, H], [I, H], [H, I]
    // MoE
    int is_moe;
    struct sd_wmat router;                        // [E, H], always F32 (routing decisions)
    const float *router_bias;                     // [E]
    struct sd_wmat *exp_gate, *exp_up, *exp_down; // per expert [Ie, H], [Ie, H], [H, Ie]
    struct sd_wmat sh_gate, sh_up, sh_down;       // shared experts [Is, H], [Is, H], [H, Is]
};

struct sd_model {
    struct sd_config cfg;
    char *dir;
    struct sd_tensor_set *tensors; // safetensors models (NULL for GGUF)
    struct sd_gguf *gguf;          // GGUF models (NULL for safetensors); dir is then the .gguf path
    struct sd_wmat embed;          // [vocab, H]: rows gathered with sd_wmat_row
    const float *norm;             // [H]
    struct sd_wmat lm_head;        // [vocab, H] (same data as embed when tied)
    struct sd_layer_weights *layers;
    size_t weight_bytes_f32;    // bytes of converted (owned) f32 weights
    size_t weight_bytes_owned;  // all weight bytes the model allocated (f32 conversions, permuted GGUF rows)
    size_t weight_bytes_mapped; // weight bytes used in place from the file mapping (read on demand)
    int n_quant_mats;           // weight matrices kept in their GGUF type (not F32)
    int gguf_dequant;           // GGUF loaded with sd_model_load_params.gguf_dequant
    // owned conversion buffers
    void **owned;
    size_t n_owned, cap_owned;
};

// Load config.json + safetensors from dir, or a GGUF model: a .gguf file, or a dir without config.json
// holding exactly one .gguf. Caller frees with sd_model_free.
enum sd_status sd_model_load(const char *dir, struct sd_model **out, struct sd_err *err);

struct sd_model_load_params {
    // GGUF: dequantize every tensor to f32 at load (the behaviour before quantized matmuls: more memory,
    // no activation quantization). For comparisons and benchmarks; 0 keeps matrices as stored.
    int gguf_dequant;
};
// sd_model_load with parameters (p may be NULL: defaults).
enum sd_status sd_model_load_ex(const char *dir, const struct sd_model_load_params *p, struct sd_model **out,
                                struct sd_err *err);
// Bytes of scratch sd_matmul_w needs for T rows against any matrix of m (at the current thread count).
size_t sd_model_act_scratch_bytes(const struct sd_model *m, int T);
void sd_model_free(struct sd_model *m);

#endif
