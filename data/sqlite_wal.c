// sqlite_wal.c: the WAL switch with its retry (see sqlite_wal.h).
#include "sqlite_wal.h"

#include <time.h>

int sd_sqlite_set_wal(sqlite3 *db, int timeout_ms, int *is_wal)
{
    *is_wal = 0;
    for (int waited = 0;; waited += 5) {
        sqlite3_stmt *q = NULL;
        int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &q, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            *is_wal = !sqlite3_stricmp((const char *)sqlite3_column_text(q, 0), "wal");
            sqlite3_finalize(q);
            return SQLITE_OK;
        }
        sqlite3_finalize(q);
        if (((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) || waited >= timeout_ms)
            return rc;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}
