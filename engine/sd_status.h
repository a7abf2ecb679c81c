// sd_status.h: the engine's status codes and the error value every fallible call fills.
// Library code never exits: it returns an enum sd_status and, where given a struct sd_err,
// a message that names the file/tensor/field involved and says what to do next.
#ifndef SD_STATUS_H
#define SD_STATUS_H

#include <stddef.h>

enum sd_status {
    SD_OK = 0,
    SD_ERR_ARG,         // caller passed something invalid
    SD_ERR_IO,          // open/read/mmap/write failed
    SD_ERR_FORMAT,      // file content malformed (header lies, bad JSON, truncated)
    SD_ERR_UNSUPPORTED, // valid but not supported (architecture, dtype, op)
    SD_ERR_NOMEM,       // allocation failed
    SD_ERR_RANGE,       // value outside what the model/session supports (context too long)
    SD_ERR_MISSING,     // required item absent (tensor, file, config field)
    SD_ERR_CHECKSUM,    // checksum or fingerprint mismatch
    SD_ERR_BACKEND,     // accelerator failure
};

struct sd_err {
    enum sd_status status;
    char msg[768];
};

const char *sd_status_str(enum sd_status s);

// Fill e (may be NULL) with status s and a printf-style message; returns s.
enum sd_status sd_err_set(struct sd_err *e, enum sd_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Clear e to SD_OK with an empty message.
void sd_err_clear(struct sd_err *e);

#endif
