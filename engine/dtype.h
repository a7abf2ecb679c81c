// dtype.h: element types of model files and caches, and scalar conversions between them
// (bf16, f16, f8 e4m3 <-> f32). Pure C, no dependencies; shared by the loader, DSA and kernels tests.
#ifndef SD_DTYPE_H
#define SD_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

enum sd_dtype {
    SD_DTYPE_F32 = 0,
    SD_DTYPE_F16,
    SD_DTYPE_BF16,
    SD_DTYPE_F8_E4M3,
    SD_DTYPE_I32,
    SD_DTYPE_I64,
    SD_DTYPE_U8,
    SD_DTYPE_F64,
    SD_DTYPE_COUNT
};

const char *sd_dtype_name(enum sd_dtype t);
size_t sd_dtype_size(enum sd_dtype t);
// Look up a dtype by its safetensors name ("F32", "BF16", "F8_E4M3", ...): SD_OK and *out set,
// or SD_ERR_UNSUPPORTED for an unknown name (out untouched).
enum sd_status sd_dtype_from_name(const char *name, enum sd_dtype *out);

float sd_bf16_to_f32(uint16_t h);
uint16_t sd_f32_to_bf16(float f); // round to nearest even
float sd_f16_to_f32(uint16_t h);
uint16_t sd_f32_to_f16(float f);
float sd_e4m3_to_f32(uint8_t v);
uint8_t sd_f32_to_e4m3(float f); // round to nearest even, saturating to +-448
// max |x[i]| over n values (0 for n <= 0; NaN values are skipped).
float sd_absmax(const float *x, int n);
// 2^ceil(log2(r)) for a finite r > 0, exact (from the binary exponent).
float sd_pow2_ceil(float r);
// DeepSeek's power-of-two FP8 scale of n values: sd_pow2_ceil(max(amax, 1e-4) / 448), amax = max |x[i]|. The FP8
// indexer (engine/dsa.c) and the FP8 activations below share it.
float sd_fp8_pow2_scale(const float *x, int n);

// DeepSeek's FP8 activation quantization (act_quant with power-of-two "ue8m0" scales): n values in blocks of
// SD_FP8_ACT_BLOCK (the last one may be shorter), each block b with the scale
// s[b] = sd_pow2_ceil(max(amax_b, 1e-4) / 448) and the values q[i] = e4m3(x[i] / s[b]) (exact division: s is a
// power of two). q: n bytes, scales: ceil(n / SD_FP8_ACT_BLOCK) floats.
#define SD_FP8_ACT_BLOCK 128
void sd_fp8_act_quant(const float *x, int n, uint8_t *q, float *scales);
// out[i] = e4m3_to_f32(q[i]) * s[b]: the values an FP8 GEMM multiplies, as f32 (exact). out may equal x.
void sd_fp8_act_roundtrip(const float *x, float *out, int n);

// Convert n elements of a tensor's data (any float dtype) to f32.
// src may be unaligned and is read in little-endian order. F32/F16/BF16/F8_E4M3/F64 are
// supported; integer dtypes return SD_ERR_UNSUPPORTED.
enum sd_status sd_convert_to_f32(enum sd_dtype t, const void *src, float *dst, size_t n);

#endif
