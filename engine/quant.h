// quant.h: ggml block-quantized tensor types as stored in GGUF files (F32, F16, BF16, Q8_0, Q4_0,
// Q4_K, Q5_K, Q6_K): block geometry, dequantization (scalar reference; AVX2, bit-identical), activation
// quantization to 8-bit blocks, and dot products / matmul against quantized weight rows (AVX2 behind a
// runtime CPU check, scalar otherwise). Pure C, no file-format dependencies.
#ifndef SD_QUANT_H
#define SD_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

// ggml_type ids (the values stored in GGUF tensor infos).
enum sd_qtype {
    SD_Q_F32 = 0,
    SD_Q_F16 = 1,
    SD_Q_Q4_0 = 2,
    SD_Q_Q4_1 = 3,
    SD_Q_Q5_0 = 6,
    SD_Q_Q5_1 = 7,
    SD_Q_Q8_0 = 8,
    SD_Q_Q8_1 = 9,
    SD_Q_Q2_K = 10,
    SD_Q_Q3_K = 11,
    SD_Q_Q4_K = 12,
    SD_Q_Q5_K = 13,
    SD_Q_Q6_K = 14,
    SD_Q_Q8_K = 15,
    SD_Q_I8 = 24,
    SD_Q_I16 = 25,
    SD_Q_I32 = 26,
    SD_Q_I64 = 27,
    SD_Q_F64 = 28,
    SD_Q_BF16 = 30,
    SD_Q_TYPE_LIMIT = 64
};

#define SD_QK 32    // elements per Q8_0 / Q4_0 block
#define SD_QK_K 256 // elements per K-quant super-block

// Geometry of a type: elements per block and bytes per block; 0/0 for an unknown id.
// Known covers more types than are supported (so a file can be checked and described).
int sd_qtype_block(enum sd_qtype t);
size_t sd_qtype_block_bytes(enum sd_qtype t);
const char *sd_qtype_name(enum sd_qtype t); // "Q4_K", ... or "unknown"
// 1 for the types this engine dequantizes and multiplies (F32 F16 BF16 Q8_0 Q4_0 Q4_K Q5_K Q6_K).
int sd_qtype_supported(enum sd_qtype t);
// Bytes of n elements (n a multiple of the block), 0 if not a multiple or unknown.
size_t sd_qtype_row_bytes(enum sd_qtype t, int64_t n);

// Dequantization of n elements (n a multiple of the block size). src may be unaligned. AVX2 where the
// CPU has it, bit for bit the scalar reference, which sd_quant_force_scalar(1) selects.
enum sd_status sd_dequantize(enum sd_qtype t, const void *src, float *dst, int64_t n);

// Activations quantized to 8 bits per block, the form the integer dot products consume:
// Q8_0/Q4_0 weights pair with blocks of 32 (one scale each), K-quants with blocks of 256
// (one scale + sums of each 16 quants).
struct sd_q8_block {
    float d;
    int8_t qs[SD_QK];
};
struct sd_q8k_block {
    float d;
    int8_t qs[SD_QK_K];
    int16_t bsums[SD_QK_K / 16];
};

// Bytes needed to hold a quantized activation row of n elements for weight type t (0 if t takes f32).
size_t sd_quant_act_bytes(enum sd_qtype t, int64_t n);
// Quantize one activation row x[n] into buf (sd_quant_act_bytes(t, n) bytes) for weight type t.
void sd_quant_act(enum sd_qtype t, const float *x, int64_t n, void *buf);

// Dot product of one weight row (type t, n elements) with an activation row: xq from sd_quant_act for
// the quantized types, x (f32) for F32/F16/BF16. Returns the sum as float.
float sd_quant_dot(enum sd_qtype t, const void *w_row, const void *xq, const float *x, int64_t n);

// out[j] = sd_quant_dot(t, w_row, xq_j, x_j, n_cols) for n activation rows (xq_j = xq + j *
// sd_quant_act_bytes(t, n_cols), x_j = x + j * n_cols), bit for bit; the AVX2 path decodes each weight
// block once for up to 4 rows (prefill).
void sd_quant_dot_n(enum sd_qtype t, const void *w_row, const void *xq, const float *x, int64_t n_cols, int n,
                    float *out);

// y[t][r] = sum_k W[r][k] x[t][k] for W of `rows` rows of `cols` elements of type t (row-major, as in
// a GGUF tensor with ne = [cols, rows]); x is [n_tok][cols] f32, y is [n_tok][rows]. Allocates the
// quantized activations internally (returns SD_ERR_NOMEM on failure). OpenMP over rows when built with it.
enum sd_status sd_quant_matmul(enum sd_qtype t, const void *w, int64_t rows, int64_t cols, const float *x,
                               int64_t n_tok, float *y, struct sd_err *err);

// Which implementation sd_quant_dot uses on this CPU ("avx2" or "scalar"). sd_quant_force_scalar(1)
// switches to the scalar path (tests compare the two).
const char *sd_quant_impl(void);
void sd_quant_force_scalar(int on);

#endif
