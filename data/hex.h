// hex.h: lowercase hexadecimal encoding of digests and hashes (content sha256 of documents, the
// hub's checksums, KV cache blob names). One implementation for data/ instead of one per file.
#ifndef SD_DATA_HEX_H
#define SD_DATA_HEX_H

#include <stddef.h>
#include <stdint.h>

// Writes the 2*n lowercase hex digits of b[0..n) and a terminating NUL to out (2*n + 1 bytes).
void sd_hex_encode(const uint8_t *b, size_t n, char *out);

// Reads exactly 2*n lowercase hex digits from s into out[0..n). Returns 0, or -1 on any other
// character (out is then partly written).
int sd_hex_decode(const char *s, uint8_t *out, size_t n);

#endif
