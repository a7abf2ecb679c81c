// cli_args.c: strict numeric option values and the --gpu-weights names for the CLI (see cli_args.h).
#include "cli_args.h"

#include "session.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sd_cli_long(const char *cmd, const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "sparsedoc %s: %s must be an integer in [%ld, %ld], got '%s'\n", cmd, flag, lo, hi,
                v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

int sd_cli_double(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "sparsedoc %s: %s must be a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

int sd_cli_gpu_weights(const char *cmd, const char *v, int *bf16, int *fp8)
{
    if (sd_gpu_weights_parse(v, bf16, fp8) == 0)
        return 0;
    fprintf(stderr, "sparsedoc %s: --gpu-weights must be f32, bf16, fp8 or fp8-f32, got '%s'\n", cmd, v ? v : "");
    return -1;
}
