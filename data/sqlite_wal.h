// sqlite_wal.h: switching an SQLite connection to WAL mode while other processes may be opening the
// same new file (the document store and the KV cache index both need it).
#ifndef SD_SQLITE_WAL_H
#define SD_SQLITE_WAL_H

#include <sqlite3.h>

// PRAGMA journal_mode=WAL. On a new (rollback-journal) file the switch needs an exclusive lock, and when
// another process holds a lock SQLite answers SQLITE_BUSY at once, without the busy handler (waiting
// could deadlock); that answer is retried every 5 ms for up to timeout_ms. Returns SQLITE_OK with
// *is_wal set (0: SQLite kept another mode, e.g. on a network filesystem) or the last error code
// (sqlite3_errmsg(db) describes it).
int sd_sqlite_set_wal(sqlite3 *db, int timeout_ms, int *is_wal);

#endif
