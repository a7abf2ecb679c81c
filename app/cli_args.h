// cli_args.h: strict parsing of the CLI's numeric option values, shared by the cmd_*.c files: the
// whole value must be a number in range ("10x", "", "1e99" are refused, never read as 10, 0 or a
// clamped value), with one message format for every command.
#ifndef SD_APP_CLI_ARGS_H
#define SD_APP_CLI_ARGS_H

// Parses v as a base-10 integer in [lo, hi] into *out. On failure prints
// "sparsedoc CMD: FLAG must be an integer in [LO, HI], got 'V'" on stderr and returns -1; else 0.
int sd_cli_long(const char *cmd, const char *flag, const char *v, long lo, long hi, long *out);

// Parses v as a finite decimal number in [lo, hi] into *out; same reporting as sd_cli_long.
int sd_cli_double(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out);

// --gpu-weights f32|bf16|fp8|fp8-f32 into the session parameters gpu_weights_bf16 / gpu_weights_fp8
// (sd_gpu_weights_parse: fp8 keeps the matrices released as FP8 in FP8, the rest bf16; fp8-f32 the rest f32).
// -1 with "sparsedoc CMD: --gpu-weights must be f32, bf16, fp8 or fp8-f32, got 'V'" on stderr for another value.
int sd_cli_gpu_weights(const char *cmd, const char *v, int *bf16, int *fp8);

#endif
