// model.h: a loaded model: config + weights. Weights are mmap'd safetensors or GGUF; F32 tensors are
// used in place, BF16/F16/FP8-block tensors and GGUF's quantized blocks are converted once to f32 at
// load. Every tensor's presence, dtype and shape is validated against the config before use; errors
// name the file and tensor.
#ifndef SD_MODEL_H
#define SD_MODEL_H

#include <stddef.h>

#include "config.h"
#include "sd_status.h"

struct sd_tensor_set;
struct sd_gguf;

struct sd_layer_weights {
    const float *attn_norm, *ffn_norm;
    // GQA (Llama/Qwen)
    const float *wq, *wk, *wv, *wo; // [n_heads*hd, H], [n_kv*hd, H], [n_kv*hd, H], [H, n_heads*hd]
    const float *bq, *bk, *bv;      // optional biases
    const float *q_norm, *k_norm;   // Qwen3 per-head RMSNorm [hd]
    // MLA (DeepSeek): wo shared with above
    const float *wq_a, *q_a_norm, *wq_b; // q LoRA: [q_lora, H], [q_lora], [n_heads*(dn+dr), q_lora]
    const float *wq_full;                // no q LoRA: [n_heads*(dn+dr), H]
    const float *wkv_a, *kv_a_norm;      // [kv_lora+dr, H], [kv_lora]
    const float *wkv_b;                  // [n_heads*(dn+dv), kv_lora]
    // Lightning indexer (DeepSeek-V3.2)
    const float *idx_wq_b, *idx_wk, *idx_k_norm_w, *idx_k_norm_b, *idx_wproj;
    // Dense SwiGLU MLP
    const float *w_gate, *w_up, *w_down; // [I, H], [I, H], [H, I]
    // MoE
    int is_moe;
    const float *router, *router_bias; // [E, H], [E]
    const float **exp_gate, **exp_up, **exp_down; // per expert [Ie, H], [Ie, H], [H, Ie]
    const float *sh_gate, *sh_up, *sh_down;       // shared experts [Is, H], [Is, H], [H, Is]
};

struct sd_model {
    struct sd_config cfg;
    char *dir;
    struct sd_tensor_set *tensors; // safetensors models (NULL for GGUF)
    struct sd_gguf *gguf;          // GGUF models (NULL for safetensors); dir is then the .gguf path
    const float *embed;  // [vocab, H]
    const float *norm;   // [H]
    const float *lm_head; // [vocab, H] (== embed when tied)
    struct sd_layer_weights *layers;
    size_t weight_bytes_f32; // bytes of converted (owned) f32 weights
    // owned conversion buffers
    void **owned;
    size_t n_owned, cap_owned;
};

// Load config.json + safetensors from dir, or a GGUF model: a .gguf file, or a dir without config.json
// holding exactly one .gguf. Caller frees with sd_model_free.
enum sd_status sd_model_load(const char *dir, struct sd_model **out, struct sd_err *err);
void sd_model_free(struct sd_model *m);

#endif
