// synth_model.h: writes a randomly initialised model (config.json + F32 model.safetensors) of a given
// DeepSeek-V3.2 shape to a directory, for benchmarks that need realistic widths without a download.
#ifndef SD_SYNTH_MODEL_H
#define SD_SYNTH_MODEL_H

#include <stdint.h>

struct sd_synth_shape {
    int vocab, hidden, layers, first_dense, heads;
    int q_lora, kv_lora, nope, rope, v;
    int experts, experts_per_tok, n_group, topk_group, moe_inter, shared, inter;
    int index_heads, index_dim, index_topk;
    int max_pos;
};

// Returns 0 on success, -1 with a message on stderr.
int sd_synth_write_deepseek(const char *dir, const struct sd_synth_shape *sh, uint64_t seed);

#endif
