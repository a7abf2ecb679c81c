// cli_args.c: strict numeric option values for the CLI (see cli_args.h).
#include "cli_args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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
