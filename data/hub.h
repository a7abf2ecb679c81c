// hub.h: the Hugging Face hub client (libcurl + json-c + libcrypto): resolves a repository's file
// list and per-file checksums through the hub's API, and downloads files in parallel (curl multi)
// into a model directory with HTTP Range resume of `.part` files, retries with exponential backoff on
// transient failures, sha256 (LFS) / git blob sha1 verification before an atomic rename, HF_TOKEN as
// Bearer auth, HF_ENDPOINT for a mirror and libcurl's standard proxy variables. Also owns where pulled
// models live: $SPARSEDOC_MODELS_DIR, else $XDG_DATA_HOME/sparsedoc/models/<owner>--<name>[@rev].
#ifndef SD_DATA_HUB_H
#define SD_DATA_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"

// One file of a repository at a revision.
struct sd_hub_file {
    char *path;       // repo-relative, validated (no "..", no absolute path, no control characters)
    int64_t size;     // bytes; -1 when the hub gave no size
    char sha256[65];  // LFS sha256 (hex) or "" for a plain git file
    char git_oid[41]; // git blob sha1 (hex) of a plain file, or ""
};

struct sd_hub_listing {
    char *repo;     // "owner/name"
    char *revision; // as asked ("main" by default)
    char *commit;   // commit sha the revision resolved to ("" if the hub did not say)
    struct sd_hub_file *files;
    size_t n_files;
};

// Aggregate progress of a download (sd_hub_download calls on_progress at most ~10 times a second and
// once at the end).
struct sd_hub_progress {
    int64_t bytes_done;  // bytes of the selected files present and verified or in .part files
    int64_t bytes_total; // sum of the selected files' sizes (unknown sizes count as their bytes so far)
    int64_t bytes_net;   // bytes received over the network by this call (for a rate)
    int files_done, files_total;
    int retrying; // transfers waiting for a retry right now
};

struct sd_hub_opts {
    const char *endpoint; // NULL: $HF_ENDPOINT, else https://huggingface.co
    const char *token;    // NULL: $HF_TOKEN (then $HUGGING_FACE_HUB_TOKEN); "" for none
    int parallel;         // concurrent file transfers; 0: 4
    int max_retries;      // retries of one file or API call after a transient error; <0: none; 0: 6
    int retry_base_ms;    // first backoff (doubles each retry, capped at 60 s, +-25% jitter); 0: 1000
    int stall_timeout_s;  // abort a transfer receiving nothing for this long (transient); 0: 60
    void (*on_progress)(void *user, const struct sd_hub_progress *p);
    void *user;
    const volatile int *cancel; // optional: when it becomes non-zero, sd_hub_download stops within ~0.1 s,
                                // keeps the .part files and returns SD_ERR_IO "cancelled"
};

// Per-file outcome of a download.
enum sd_hub_file_state {
    SD_HUB_PENDING = 0,
    SD_HUB_CACHED,     // already present and verified, nothing fetched
    SD_HUB_DOWNLOADED, // fetched (resumed_from > 0: continued a .part file) and verified
    SD_HUB_FAILED,     // see msg; no file was put in place
};

struct sd_hub_result {
    enum sd_hub_file_state state;
    int64_t resumed_from; // bytes of the .part file kept from an earlier attempt
    int64_t bytes_net;    // bytes received for this file
    int retries;
    int verified; // 1: checked against the hub's sha256 / git oid; 0: the hub gave none
    enum sd_status status;
    char msg[512];
};

// Split "owner/name[@rev]" into a repo and a revision (default "main"). Both malloc'd (caller frees).
// Rejects empty parts, "..", whitespace and characters outside [A-Za-z0-9._-/] in the repo name.
enum sd_status sd_hub_parse_ref(const char *ref, char **repo, char **rev, struct sd_err *err);

// The directory a pull of repo@rev goes to: <models dir>/<owner>--<name>, with "@<rev>" appended when
// rev is not "main" ('/' in rev becomes '_'). models_dir NULL: sd_hub_models_dir(NULL). malloc'd.
enum sd_status sd_hub_dest_dir(const char *models_dir, const char *repo, const char *rev, char **out,
                               struct sd_err *err);

// Root of pulled models: explicit, else $SPARSEDOC_MODELS_DIR, else $XDG_DATA_HOME/sparsedoc/models
// (default ~/.local/share/sparsedoc/models). malloc'd; the directory is not created.
// Parse a JSON file of at most max_bytes bytes (json-c object, caller puts it; NULL when missing,
// unreadable, too large or not JSON). Used for the pull manifest and for models' config.json.
struct json_object;
struct json_object *sd_hub_read_json(const char *path, long max_bytes);

enum sd_status sd_hub_models_dir(const char *explicit_dir, char **out, struct sd_err *err);

// Resolve repo@rev: GET {endpoint}/api/models/{repo}/revision/{rev} (file names: "siblings"; commit:
// "sha") and {endpoint}/api/models/{repo}/tree/{rev}?recursive=1 (sizes, LFS sha256, git oids;
// follows `Link: rel="next"` pages). Errors: SD_ERR_MISSING for 404, SD_ERR_ARG for 401/403 (the
// message says to set HF_TOKEN), SD_ERR_IO for network failures after retries, SD_ERR_FORMAT for
// unexpected JSON. *out is malloc'd; free with sd_hub_listing_free.
enum sd_status sd_hub_list(const struct sd_hub_opts *opts, const char *repo, const char *rev,
                           struct sd_hub_listing **out, struct sd_err *err);
void sd_hub_listing_free(struct sd_hub_listing *l);

// The include patterns used when none are given (NULL-terminated): config.json, tokenizer.json,
// tokenizer_config.json, *.safetensors, model.safetensors.index.json.
extern const char *const sd_hub_default_includes[];

// 1 if path matches any of the n fnmatch(3) globs ('*' also matches '/', as the hub's own client does).
int sd_hub_match(const char *path, const char *const *globs, size_t n);

// Download the files of l whose index is in sel[0..n_sel) into dest_dir (created as needed, subfolders
// too). Each file is written to <path>.part (continued with a Range request when present), verified
// against its size and sha256 / git oid, fsync'd and renamed into place; a file that fails verification
// is deleted. Files already present with the right size and checksum are kept (a manifest
// `.sparsedoc-pull.json` in dest_dir remembers verified files so a second pull does not rehash them).
// results[n_sel] is filled per selected file. Returns SD_OK when every file is in place; else the
// status of the first failure, with a message (SD_ERR_IO "disk full" aborts every transfer; the .part
// files are kept for a later resume).
enum sd_status sd_hub_download(const struct sd_hub_opts *opts, const struct sd_hub_listing *l, const size_t *sel,
                               size_t n_sel, const char *dest_dir, struct sd_hub_result *results, struct sd_err *err);

#endif
