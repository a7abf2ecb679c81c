// tree_walk.h: walking a directory tree for ingestion: .gitignore files (and .git/info/exclude) are
// honoured with git's matching rules (negation, directory-only, anchored patterns, '**'); .git is
// skipped, as are binaries (a NUL byte in the first 8 KiB), files over a size cap, symlinked
// directories (so link loops cannot recurse) and unreadable entries, each reported with a reason.
// Entries are visited in byte order of their names, so a walk is deterministic.
#ifndef SD_DATA_TREE_WALK_H
#define SD_DATA_TREE_WALK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "sd_status.h"

enum sd_file_kind {
    SD_FILE_TEXT = 0,
    SD_FILE_MARKDOWN,
    SD_FILE_CODE,
    SD_FILE_PDF,
};
const char *sd_file_kind_str(enum sd_file_kind k);

// Kind and language (e.g. "c", "python"; NULL for plain text) from a file name.
enum sd_file_kind sd_file_kind_from_path(const char *path, const char **lang);

// 1 if the first bytes of the file at path contain a NUL byte (binary), 0 if not, -1 on read error.
int sd_file_is_binary(const char *path);

struct sd_walk_opts {
    int64_t max_file_bytes; // files larger than this are skipped; <= 0: 4 MiB (PDFs: no cap)
};

// Called for each file to ingest: absolute path, its stat, kind and language. Return non-zero to stop.
typedef int (*sd_walk_file_fn)(void *user, const char *path, const struct stat *st, enum sd_file_kind kind,
                               const char *lang);
// Called for each entry skipped: reason is a short phrase; is_error is 1 when something could not be
// read (a directory left unread means documents under it must not be treated as deleted).
typedef void (*sd_walk_skip_fn)(void *user, const char *path, const char *reason, int is_error);

// Walk the directory root (made absolute). SD_ERR_IO if root itself cannot be read.
enum sd_status sd_walk(const char *root, const struct sd_walk_opts *opts, sd_walk_file_fn on_file,
                       sd_walk_skip_fn on_skip, void *user, struct sd_err *err);

// gitignore matching, exposed for tests: 1 if pattern (one .gitignore line, already stripped of
// '!' and a trailing '/') matches path (relative to the .gitignore's directory).
int sd_gitignore_match(const char *pattern, const char *path);

#endif
