// sd_status.c: status names and error message formatting for engine/.
#include "sd_status.h"

#include <stdarg.h>
#include <stdio.h>

const char *sd_status_str(enum sd_status s)
{
    switch (s) {
    case SD_OK: return "ok";
    case SD_ERR_ARG: return "invalid argument";
    case SD_ERR_IO: return "I/O error";
    case SD_ERR_FORMAT: return "malformed file";
    case SD_ERR_UNSUPPORTED: return "unsupported";
    case SD_ERR_NOMEM: return "out of memory";
    case SD_ERR_RANGE: return "out of range";
    case SD_ERR_MISSING: return "missing";
    case SD_ERR_CHECKSUM: return "checksum mismatch";
    case SD_ERR_BACKEND: return "backend failure";
    }
    return "unknown status";
}

enum sd_status sd_err_set(struct sd_err *e, enum sd_status s, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->status = s;
    }
    return s;
}

void sd_err_clear(struct sd_err *e)
{
    if (e) {
        e->status = SD_OK;
        e->msg[0] = 0;
    }
}
