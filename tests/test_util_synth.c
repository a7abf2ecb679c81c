// test_util_synth.c: synthetic DeepSeek-V3.2 models converted to GGUF for the tests (see test_util_synth.h).
#include "test_util_synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

void sd_test_synth_gguf(const char *python, const struct sd_synth_shape *sh, uint64_t seed, const char *const *types,
                        int n_types, void (*check)(const char *model_dir, const char *gguf, int i, void *ctx),
                        void *ctx)
{
    const char *src = getenv("SD_SOURCE");
    char tmpl[] = "/tmp/sd_synth_gguf_XXXXXX", dir[256], out[512], cmd[4096];
    if (!python || !src || !mkdtemp(tmpl)) {
        CHECK_MSG(0, "synthetic model: need python3 (argv[2]) and SD_SOURCE");
        return;
    }
    snprintf(dir, sizeof dir, "%s/model", tmpl);
    CHECK(sd_synth_write_deepseek(dir, sh, seed) == 0);
    for (int i = 0; i < n_types; i++) {
        snprintf(out, sizeof out, "%s/synth-%s.gguf", tmpl, types[i]);
        snprintf(cmd, sizeof cmd, "'%s' '%s/tools/st2gguf.py' '%s' '%s' --type %s", python, src, dir, out, types[i]);
        int rc = system(cmd);
        CHECK_MSG(rc == 0, "%s failed (%d)", cmd, rc);
        if (rc == 0)
            check(dir, out, i, ctx);
        unlink(out);
    }
    snprintf(out, sizeof out, "%s/config.json", dir);
    unlink(out);
    snprintf(out, sizeof out, "%s/model.safetensors", dir);
    unlink(out);
    rmdir(dir);
    rmdir(tmpl);
}
