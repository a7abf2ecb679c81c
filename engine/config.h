// config.h: a model's architecture as read from HF config.json (both the released DeepSeek
// `rope_scaling` spelling and transformers 5 `rope_parameters`), validated, with derived values
// (RoPE frequency tables, softmax scale). Supported: DeepseekV32/V3 (MLA+DSA+MoE), Llama, Qwen2, Qwen3.
#ifndef SD_CONFIG_H
#define SD_CONFIG_H

#include <stdint.h>

#include "ops_cpu.h"
#include "sd_status.h"

enum sd_arch {
    SD_ARCH_LLAMA = 0,
    SD_ARCH_QWEN2,
    SD_ARCH_QWEN3,
    SD_ARCH_DEEPSEEK_V3,  // MLA + MoE, no indexer
    SD_ARCH_DEEPSEEK_V32, // MLA + DSA + MoE
};

enum sd_rope_type { SD_ROPE_DEFAULT = 0, SD_ROPE_LLAMA3, SD_ROPE_YARN, SD_ROPE_LINEAR };

struct sd_rope_cfg {
    enum sd_rope_type type;
    double theta;
    double factor;
    int64_t original_max_pos;
    double low_freq_factor, high_freq_factor; // llama3
    double beta_fast, beta_slow, mscale, mscale_all_dim, attention_factor; // yarn (attention_factor < 0: derive)
};

struct sd_config {
    enum sd_arch arch;
    char arch_name[64];
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int n_layers;
    int n_heads;
    int n_heads_kv;
    int head_dim;
    float rms_norm_eps;
    int64_t max_position_embeddings;
    int tie_word_embeddings;
    int attention_bias; // q/k/v biases (Qwen2 always)
    int bos_token_id, eos_token_id;
    struct sd_rope_cfg rope;

    // DeepSeek MLA / MoE / DSA
    int q_lora_rank; // 0: no q LoRA (q_proj directly)
    int kv_lora_rank;
    int qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int n_routed_experts, n_shared_experts, n_experts_per_tok;
    int n_group, topk_group;
    int moe_intermediate_size;
    int first_k_dense_replace, moe_layer_freq;
    float routed_scaling_factor;
    int norm_topk_prob;
    int scoring_sigmoid; // 1 sigmoid, 0 softmax
    int index_n_heads, index_head_dim, index_topk;

    // Weight quantization (fp8 block)
    int fp8_block; // 0: none; else block size (128)

    // Derived
    struct sd_rope rope_main;    // MLA rope dims / Llama head dim
    struct sd_rope rope_indexer; // DeepSeek indexer (same freqs, no magnitude factor)
    float attn_scale;            // softmax scale including YaRN mscale^2 for MLA
};

// Parse config.json at path into *cfg. Errors name the file and field.
enum sd_status sd_config_load(const char *path, struct sd_config *cfg, struct sd_err *err);
// Parse from a JSON string (label used in messages).
enum sd_status sd_config_parse(const char *json, const char *label, struct sd_config *cfg, struct sd_err *err);

int sd_config_is_deepseek(const struct sd_config *cfg);
// 1 if layer il uses MoE (DeepSeek), 0 for a dense MLP.
int sd_config_layer_is_moe(const struct sd_config *cfg, int il);

#endif
