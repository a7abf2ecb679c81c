// paths.c: XDG default paths with flag and environment overrides (see paths.h).
#include "paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int mkdir_p(char *dir)
{
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
                *p = '/';
                return -1;
            }
            *p = '/';
        }
    return mkdir(dir, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

enum sd_status sd_paths_db(const char *explicit_path, char **out, struct sd_err *err)
{
    *out = NULL;
    const char *p = explicit_path && *explicit_path ? explicit_path : getenv("SPARSEDOC_DB");
    if (p && *p) {
        if (!(*out = strdup(p)))
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        return SD_OK;
    }
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (xdg && xdg[0] == '/')
        snprintf(dir, sizeof dir, "%s/sparsedoc", xdg);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.local/share/sparsedoc", home);
    else
        return sd_err_set(err, SD_ERR_MISSING, "neither XDG_DATA_HOME nor HOME is set; pass --db FILE");
    if (mkdir_p(dir) != 0)
        return sd_err_set(err, SD_ERR_IO, "cannot create %s: %s (pass --db FILE)", dir, strerror(errno));
    size_t n = strlen(dir) + 16;
    if (!(*out = malloc(n)))
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    snprintf(*out, n, "%s/sparsedoc.db", dir);
    return SD_OK;
}
