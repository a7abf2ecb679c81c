// test_config.c: config.json parsing: DeepSeek-V3.2's released config (rope_scaling spelling) gives
// the documented derived values (tau = 0.1352338, YaRN ramp 10..23), the transformers-5 spelling
// (rope_parameters) parses the same, llama3 scaling matches a float64 recomputation, and malformed
// or unsupported configs fail with messages naming the field.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "test_util.h"

static const char *V32 =
    "{\"architectures\":[\"DeepseekV32ForCausalLM\"],\"model_type\":\"deepseek_v32\",\"vocab_size\":129280,"
    "\"hidden_size\":7168,\"intermediate_size\":18432,\"moe_intermediate_size\":2048,\"num_hidden_layers\":61,"
    "\"num_attention_heads\":128,\"num_key_value_heads\":128,\"q_lora_rank\":1536,\"kv_lora_rank\":512,"
    "\"qk_nope_head_dim\":128,\"qk_rope_head_dim\":64,\"v_head_dim\":128,\"n_routed_experts\":256,"
    "\"n_shared_experts\":1,\"num_experts_per_tok\":8,\"n_group\":8,\"topk_group\":4,\"first_k_dense_replace\":3,"
    "\"routed_scaling_factor\":2.5,\"norm_topk_prob\":true,\"scoring_func\":\"sigmoid\",\"topk_method\":\"noaux_tc\","
    "\"index_n_heads\":64,\"index_head_dim\":128,\"index_topk\":2048,\"rms_norm_eps\":1e-6,\"rope_theta\":10000,"
    "\"max_position_embeddings\":163840,\"%s\":{\"type\":\"yarn\",\"factor\":40,"
    "\"original_max_position_embeddings\":4096,\"beta_fast\":32,\"beta_slow\":1,\"mscale\":1.0,\"mscale_all_dim\":1.0},"
    "\"quantization_config\":{\"quant_method\":\"fp8\",\"fmt\":\"e4m3\",\"activation_scheme\":\"dynamic\","
    "\"weight_block_size\":[128,128],\"scale_fmt\":\"ue8m0\"},\"bos_token_id\":0,\"eos_token_id\":1,"
    "\"tie_word_embeddings\":false}";

static void test_v32(const char *key)
{
    char buf[4096];
    snprintf(buf, sizeof buf, V32, key);
    struct sd_config c;
    struct sd_err err = {0};
    enum sd_status st = sd_config_parse(buf, "v32", &c, &err);
    CHECK_MSG(st == SD_OK, "%s: %s", key, err.msg);
    if (st != SD_OK)
        return;
    CHECK(c.arch == SD_ARCH_DEEPSEEK_V32);
    CHECK(c.index_topk == 2048 && c.index_n_heads == 64 && c.index_head_dim == 128);
    CHECK(c.fp8_block == 128);
    CHECK(c.rope.type == SD_ROPE_YARN);
    CHECK_MSG(fabs(c.attn_scale - 0.1352338) < 1e-6, "tau %.7f", c.attn_scale);
    CHECK(fabs(c.rope_main.attn_factor - 1.0f) < 1e-7);
    // pairs i <= 10 unchanged, i >= 23 divided by 40 (DSA.md 2.3)
    for (int i = 0; i < 32; i++) {
        double base = 1.0 / pow(10000.0, 2.0 * i / 64.0);
        double want = i <= 10 ? base : i >= 23 ? base / 40 : -1;
        if (want > 0)
            CHECK_MSG(fabs(c.rope_main.inv_freq[i] - want) <= 1e-6 * want, "inv_freq[%d] %g want %g", i,
                      c.rope_main.inv_freq[i], want);
    }
    double gamma = (15.0 - 10.0) / 13.0, b15 = 1.0 / pow(10000.0, 30.0 / 64.0);
    double want15 = b15 / 40 * gamma + b15 * (1 - gamma);
    CHECK_MSG(fabs(c.rope_main.inv_freq[15] - want15) <= 1e-6 * want15, "blended inv_freq[15]");
    CHECK(sd_config_layer_is_moe(&c, 2) == 0 && sd_config_layer_is_moe(&c, 3) == 1);
}

static void test_llama3(void)
{
    const char *j = "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":100,\"hidden_size\":64,"
                    "\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                    "\"num_key_value_heads\":2,\"rope_theta\":500000,\"rope_scaling\":{\"rope_type\":\"llama3\","
                    "\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":64}}";
    struct sd_config c;
    struct sd_err err = {0};
    CHECK_MSG(sd_config_parse(j, "llama3", &c, &err) == SD_OK, "%s", err.msg);
    CHECK(c.head_dim == 16 && c.n_heads_kv == 2);
    for (int i = 0; i < 8; i++) {
        double f = (float)(1.0 / pow(500000.0, (float)(2 * i) / 16.0f));
        double wl = 2 * M_PI / f, v = wl > 64.0 ? f / 8 : f;
        if (!(wl < 16.0) && !(wl > 64.0)) {
            double sm = (64.0 / wl - 1) / 3;
            v = (1 - sm) * v / 8 + sm * v;
        }
        CHECK_MSG(fabs(c.rope_main.inv_freq[i] - v) <= 1e-6 * v, "llama3 inv_freq[%d]", i);
    }
}

static void expect_fail(const char *j, enum sd_status want, const char *needle)
{
    struct sd_config c;
    struct sd_err err = {0};
    enum sd_status st = sd_config_parse(j, "bad.json", &c, &err);
    CHECK_MSG(st == want, "expected status %s, got %s (%s)", sd_status_str(want), sd_status_str(st), err.msg);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

int main(void)
{
    test_v32("rope_scaling");
    test_v32("rope_parameters");
    test_llama3();
    expect_fail("{", SD_ERR_FORMAT, "invalid JSON");
    expect_fail("{\"architectures\": [", SD_ERR_FORMAT, "truncated"); // not json-c's bare "continue"
    expect_fail("{\"a\": 1,,}", SD_ERR_FORMAT, "invalid JSON");
    expect_fail("[1,2]", SD_ERR_FORMAT, "object");
    expect_fail("{\"architectures\":[\"GPT2LMHeadModel\"]}", SD_ERR_UNSUPPORTED, "GPT2LMHeadModel");
    expect_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":10}", SD_ERR_MISSING, "hidden_size");
    expect_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":\"x\"}", SD_ERR_FORMAT, "vocab_size");
    expect_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":10,\"hidden_size\":8,"
                "\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":3,\"num_key_value_heads\":2}",
                SD_ERR_FORMAT, "multiple");
    expect_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":10,\"hidden_size\":8,"
                "\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                "\"rope_scaling\":{\"type\":\"weird\"}}",
                SD_ERR_UNSUPPORTED, "weird");
    return sd_test_finish("test_config");
}
