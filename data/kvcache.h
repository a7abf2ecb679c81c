// kvcache.h: the persistent KV prefix cache. A directory holds blobs/xx/<chain hash>.kv files (one
// engine KV blob per 64-token block, SD_KV_BLOCK) and index.db, an SQLite index (WAL, busy timeout,
// foreign keys, user_version migrations) with one row per block: chain hash, parent hash, the block's
// token ids, file size, hit count and last use. The key of block i is the SHA-256 chain
// h_i = SHA-256(h_{i-1} || ids of block i as little-endian int32), h_{-1} = the model fingerprint.
// Files are named by their key, so a file's content is always the state of that exact prefix.
// Several processes may share one directory; every call is made from one thread per struct sd_kvcache.
#ifndef SD_DATA_KVCACHE_H
#define SD_DATA_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

struct sd_session;
struct sd_kvcache; // opaque

#define SD_KVCACHE_SCHEMA_VERSION 1
#define SD_KVCACHE_HASH_BYTES 32
#define SD_KVCACHE_FP_BYTES 32 // == SD_FINGERPRINT_BYTES (engine/fingerprint.h)

struct sd_kvcache_opts {
    // Byte budget for blob files. 0: $SPARSEDOC_CACHE_BUDGET (bytes) if set, else 10% of the free space
    // of the cache filesystem at open, capped at 20 GiB (and at least 64 MiB).
    uint64_t budget_bytes;
    int no_gc;    // 1: skip the GC pass at open (read-only uses such as `cache stats`)
    int gc_age_s; // temp and orphan files younger than this are left alone at open; 0: 3600
};

// Resolve the cache directory: explicit_dir, else $SPARSEDOC_CACHE_DIR, else $XDG_CACHE_HOME/sparsedoc/kv,
// else ~/.cache/sparsedoc/kv. *out is malloc'd (caller frees). Does not create it.
enum sd_status sd_kvcache_dir(const char *explicit_dir, char **out, struct sd_err *err);

// Open (creating the directory and index if needed) the cache at dir (NULL: sd_kvcache_dir(NULL)),
// apply migrations, and unless opts->no_gc run sd_kvcache_gc with opts->gc_age_s. opts may be NULL.
enum sd_status sd_kvcache_open(const char *dir, const struct sd_kvcache_opts *opts, struct sd_kvcache **out,
                               struct sd_err *err);
void sd_kvcache_close(struct sd_kvcache *c);
const char *sd_kvcache_path(const struct sd_kvcache *c); // borrowed: the directory
uint64_t sd_kvcache_budget(const struct sd_kvcache *c);

// Chain hashes of the first n_blocks complete blocks of ids (hashes: n_blocks * 32 bytes).
void sd_kvcache_chain(const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids, int n_blocks, uint8_t *hashes);
// Path of the blob file of a chain hash (malloc'd; caller frees). For tests and tools.
char *sd_kvcache_blob_path(const struct sd_kvcache *c, const uint8_t hash[SD_KVCACHE_HASH_BYTES]);

// Longest cached prefix of ids, in whole blocks, according to the index (rows present and their stored
// token ids equal to ids; a mismatch is a miss). Reads no blob file; does not update use statistics.
enum sd_status sd_kvcache_lookup(struct sd_kvcache *c, const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids,
                                 int n_ids, int *n_blocks_hit, struct sd_err *err);

struct sd_kvcache_restore_info {
    int blocks_found;    // blocks the index offered (lookup result, capped as below)
    int blocks_restored; // blocks imported into the session
    int tokens_restored; // session tokens that came from the cache == blocks_restored * SD_KV_BLOCK
    int blocks_dropped;  // blobs found corrupt/truncated/missing and deleted with their rows (0 or 1;
                         // their descendants go too). The caller recomputes them by prefilling.
};

// Restore the longest valid cached prefix of ids into session s, which must be empty (position 0).
// At most (n_ids - 1) / SD_KV_BLOCK blocks are restored, so at least one token of ids is left for the
// caller to prefill (it needs the last token's logits), and never beyond the session's n_ctx.
// Blocks are imported one by one; a blob that fails verification (checksum, size, header) is deleted
// with its row and the restore stops before it: the session then holds exactly tokens_restored tokens.
// Restored blocks get their hit count and last use updated, and the chain is marked in use (see pin).
// Returns an error only for failures of the cache itself (SQLite, out of memory); an SD_ERR_* here
// leaves the session at some block boundary equal to info->tokens_restored.
enum sd_status sd_kvcache_restore(struct sd_kvcache *c, const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids,
                                  int n_ids, struct sd_session *s, struct sd_kvcache_restore_info *info,
                                  struct sd_err *err);

// Store the complete blocks of session s that are not yet cached. ids are the tokens the session holds
// (n_ids >= its position; only min(n_ids, position) / SD_KV_BLOCK blocks are considered). Each missing
// block is exported to a unique temp file, fsync'd, renamed into place; the directories are fsync'd;
// then all rows are inserted in one transaction (INSERT OR IGNORE: another process may have stored
// the same blocks; if another process evicted the parent meanwhile, the store is redone once from the
// shorter cached prefix). Then eviction runs if the cache is over budget. *n_stored (may be NULL) receives
// the number of new blocks. The stored chain is marked in use.
enum sd_status sd_kvcache_store(struct sd_kvcache *c, const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids,
                                int n_ids, const struct sd_session *s, int *n_stored, struct sd_err *err);

// The chain in use by this process: blocks of the last restored/stored chain are never evicted by this
// process. pin replaces it with the first n_ids/64 blocks of ids; unpin clears it.
void sd_kvcache_pin(struct sd_kvcache *c, const uint8_t fp[SD_KVCACHE_FP_BYTES], const int32_t *ids, int n_ids);
void sd_kvcache_unpin(struct sd_kvcache *c);

// Evict least recently used chain tails (leaf blocks), never a pinned block, until the blob bytes are
// at most budget (0: the cache's budget). *n_evicted may be NULL.
enum sd_status sd_kvcache_evict(struct sd_kvcache *c, uint64_t budget, int *n_evicted, struct sd_err *err);

struct sd_kvcache_gc_report {
    int tmp_removed;     // temp files older than max_age_s
    int orphans_removed; // blob files without a row, older than max_age_s
    int rows_removed;    // rows whose file is missing or has the wrong size (with their descendants)
};
// Garbage collection: see sd_kvcache_gc_report. report may be NULL.
enum sd_status sd_kvcache_gc(struct sd_kvcache *c, int max_age_s, struct sd_kvcache_gc_report *report,
                             struct sd_err *err);

// Remove every entry and blob file. *n_removed may be NULL.
enum sd_status sd_kvcache_clear(struct sd_kvcache *c, int *n_removed, struct sd_err *err);

struct sd_kvcache_stats {
    int64_t entries;      // blocks
    int64_t chains;       // distinct fingerprints x first blocks (roots)
    int64_t fingerprints; // distinct model fingerprints
    uint64_t bytes;       // blob bytes (sum of rows)
    uint64_t budget;
    int64_t lookups;        // restore calls
    int64_t blocks_wanted;  // blocks asked for by restores
    int64_t blocks_hit;     // blocks restored
    int64_t blocks_dropped; // corrupt blobs dropped
    double hit_rate;        // blocks_hit / blocks_wanted (0 when none)
    int64_t oldest_ms;      // smallest last-use time (unix ms), 0 when empty
    int64_t newest_ms;
};
enum sd_status sd_kvcache_stats(struct sd_kvcache *c, struct sd_kvcache_stats *st, struct sd_err *err);

// PRAGMA integrity_check of the index: SD_OK when "ok", SD_ERR_FORMAT with the first problem otherwise.
enum sd_status sd_kvcache_integrity_check(struct sd_kvcache *c, struct sd_err *err);

#endif
