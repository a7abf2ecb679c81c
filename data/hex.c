// hex.c: lowercase hexadecimal encoding and decoding of byte strings (see hex.h).
#include "hex.h"

void sd_hex_encode(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = 0;
}

int sd_hex_decode(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < 2 * n; i++) {
        int c = s[i], v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            return -1;
        if (i & 1)
            out[i / 2] |= (uint8_t)v;
        else
            out[i / 2] = (uint8_t)(v << 4);
    }
    return 0;
}
