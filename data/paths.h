// paths.h: default locations (XDG base directories) for the store, with the overrides every
// front end honours: an explicit path (a --db flag) first, then $SPARSEDOC_DB, then
// $XDG_DATA_HOME/sparsedoc/sparsedoc.db (default ~/.local/share/sparsedoc/sparsedoc.db).
#ifndef SD_DATA_PATHS_H
#define SD_DATA_PATHS_H

#include "sd_status.h"

// Resolve the database path; *out is malloc'd (caller frees). Creates the parent directory of the
// default location when needed.
enum sd_status sd_paths_db(const char *explicit_path, char **out, struct sd_err *err);

#endif
