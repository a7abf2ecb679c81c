// hub.c: Hugging Face hub client (see hub.h). Listing: two JSON API calls (revision -> file names and
// commit, tree -> sizes and checksums) with retries. Downloads: one curl multi handle drives up to
// `parallel` transfers; each file streams into <path>.part while being hashed, resumes with a Range
// request, and is renamed into place only after its size and sha256 / git blob sha1 match.
#include "hub.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "hex.h"
#include "sd_build_config.h"
#include "sd_clock.h"

#define API_MAX_BYTES ((size_t)64 << 20)    // largest API answer accepted
#define MANIFEST_MAX_BYTES ((long)16 << 20) // largest manifest read
#define MAX_TREE_PAGES 10000
#define MAX_FILES 100000
#define BACKOFF_CAP_MS 60000
#define MANIFEST_NAME ".sparsedoc-pull.json"

const char *const sd_hub_default_includes[] = {
    "config.json", "tokenizer.json", "tokenizer_config.json", "*.safetensors", "model.safetensors.index.json", NULL};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static int mkdir_p(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return -1;
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
                free(dir);
                return -1;
            }
            *p = '/';
        }
    int rc = mkdir(dir, 0755) != 0 && errno != EEXIST ? -1 : 0;
    free(dir);
    return rc;
}

static void fmt_bytes(double b, char *buf, size_t n)
{
    if (b >= 1e9)
        snprintf(buf, n, "%.1f GB", b / 1e9);
    else if (b >= 1e6)
        snprintf(buf, n, "%.1f MB", b / 1e6);
    else
        snprintf(buf, n, "%.0f kB", b / 1e3);
}

// ---------------------------------------------------------------------------------------------
// Options, names and paths

struct ctx {
    char endpoint[1024];
    char *auth; // "Authorization: Bearer ..." or NULL
    int parallel, max_retries, retry_base_ms, stall_s;
    const struct sd_hub_opts *o;
};

static enum sd_status ctx_init(struct ctx *c, const struct sd_hub_opts *o, struct sd_err *err)
{
    memset(c, 0, sizeof *c);
    c->o = o;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return sd_err_set(err, SD_ERR_IO, "libcurl initialization failed: %s", curl_easy_strerror(curl_init_rc));
    const char *ep = o && o->endpoint ? o->endpoint : getenv("HF_ENDPOINT");
    if (!ep || !*ep)
        ep = "https://huggingface.co";
    if (strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
        return sd_err_set(err, SD_ERR_ARG, "hub endpoint \"%s\" must start with http:// or https:// (HF_ENDPOINT)", ep);
    if (strlen(ep) >= sizeof c->endpoint)
        return sd_err_set(err, SD_ERR_ARG, "hub endpoint URL is too long");
    snprintf(c->endpoint, sizeof c->endpoint, "%s", ep);
    size_t n = strlen(c->endpoint);
    while (n > 0 && c->endpoint[n - 1] == '/')
        c->endpoint[--n] = 0;
    const char *tok = o && o->token ? o->token : getenv("HF_TOKEN");
    if (!(o && o->token) && (!tok || !*tok))
        tok = getenv("HUGGING_FACE_HUB_TOKEN");
    if (tok && *tok) {
        for (const char *p = tok; *p; p++)
            if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
                return sd_err_set(err, SD_ERR_ARG, "HF_TOKEN contains a space or control character; check its value");
        if (!(c->auth = xprintf("Authorization: Bearer %s", tok)))
            return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    }
    c->parallel = o && o->parallel > 0 ? o->parallel : 4;
    if (c->parallel > 64)
        c->parallel = 64;
    c->max_retries = !o || o->max_retries == 0 ? 6 : o->max_retries < 0 ? 0 : o->max_retries;
    c->retry_base_ms = o && o->retry_base_ms > 0 ? o->retry_base_ms : 1000;
    c->stall_s = o && o->stall_timeout_s > 0 ? o->stall_timeout_s : 60;
    return SD_OK;
}

static void ctx_free(struct ctx *c)
{
    free(c->auth);
}

static int name_char_ok(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
           ch == '-';
}

enum sd_status sd_hub_parse_ref(const char *ref, char **repo, char **rev, struct sd_err *err)
{
    *repo = *rev = NULL;
    const char *at = strchr(ref, '@');
    size_t rn = at ? (size_t)(at - ref) : strlen(ref);
    const char *slash = memchr(ref, '/', rn);
    if (rn == 0 || rn > 200 || !slash || slash == ref || (size_t)(slash - ref) + 1 >= rn ||
        memchr(slash + 1, '/', rn - (size_t)(slash - ref) - 1))
        return sd_err_set(err, SD_ERR_ARG, "\"%s\" is not a hub repository: expected OWNER/NAME[@REVISION]", ref);
    for (size_t i = 0; i < rn; i++)
        if (ref[i] != '/' && !name_char_ok(ref[i]))
            return sd_err_set(err, SD_ERR_ARG,
                              "repository name \"%.*s\" has a character other than letters, digits, "
                              "'.', '_', '-'",
                              (int)rn, ref);
    if (strstr(ref, "..") && strstr(ref, "..") < ref + rn)
        return sd_err_set(err, SD_ERR_ARG, "repository name \"%.*s\" must not contain \"..\"", (int)rn, ref);
    const char *r = at ? at + 1 : "main";
    if (!*r || strlen(r) > 200)
        return sd_err_set(err, SD_ERR_ARG, "empty or too long revision after '@' in \"%s\"", ref);
    for (const char *p = r; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == '@' || *p == '\\' || (unsigned char)*p >= 0x7f)
            return sd_err_set(err, SD_ERR_ARG, "revision \"%s\" has a space, '@', '\\' or non-ASCII character", r);
    if (strstr(r, ".."))
        return sd_err_set(err, SD_ERR_ARG, "revision \"%s\" must not contain \"..\"", r);
    *repo = strndup(ref, rn);
    *rev = strdup(r);
    if (!*repo || !*rev) {
        free(*repo), free(*rev);
        *repo = *rev = NULL;
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    }
    return SD_OK;
}

enum sd_status sd_hub_models_dir(const char *explicit_dir, char **out, struct sd_err *err)
{
    *out = NULL;
    const char *p = explicit_dir && *explicit_dir ? explicit_dir : getenv("SPARSEDOC_MODELS_DIR");
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    if (p && *p)
        *out = strdup(p);
    else if (xdg && xdg[0] == '/')
        *out = xprintf("%s/sparsedoc/models", xdg);
    else if (home && *home)
        *out = xprintf("%s/.local/share/sparsedoc/models", home);
    else
        return sd_err_set(err, SD_ERR_MISSING, "neither XDG_DATA_HOME nor HOME is set; pass --models-dir DIR");
    return *out ? SD_OK : sd_err_set(err, SD_ERR_NOMEM, "out of memory");
}

enum sd_status sd_hub_dest_dir(const char *models_dir, const char *repo, const char *rev, char **out,
                               struct sd_err *err)
{
    *out = NULL;
    char *root = NULL;
    enum sd_status st = sd_hub_models_dir(models_dir, &root, err);
    if (st)
        return st;
    char name[512];
    const char *slash = strchr(repo, '/');
    if (!slash)
        snprintf(name, sizeof name, "%s", repo);
    else
        snprintf(name, sizeof name, "%.*s--%s", (int)(slash - repo), repo, slash + 1);
    if (rev && strcmp(rev, "main")) {
        size_t n = strlen(name);
        snprintf(name + n, sizeof name - n, "@%s", rev);
        for (char *p = name + n; *p; p++)
            if (*p == '/')
                *p = '_';
    }
    *out = xprintf("%s/%s", root, name);
    free(root);
    return *out ? SD_OK : sd_err_set(err, SD_ERR_NOMEM, "out of memory");
}

int sd_hub_match(const char *path, const char *const *globs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(globs[i], path, 0) == 0)
            return 1;
    return 0;
}

// A file path from the hub becomes a path on disk: refuse anything that could leave the directory.
static int repo_path_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 1024 || p[0] == '/' || p[n - 1] == '/')
        return 0;
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '\\' || *s == 0x7f)
            return 0;
    const char *seg = p;
    for (;;) {
        const char *e = strchr(seg, '/');
        size_t len = e ? (size_t)(e - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
        if (len >= 5 && !strncmp(seg + len - 5, ".part", 5) && !e)
            return 0; // would collide with our own partial files
        if (!e)
            return 1;
        seg = e + 1;
    }
}

// URL-escape every path segment, keeping the '/' between them. malloc'd.
static char *escape_path(CURL *h, const char *p, int keep_slash)
{
    size_t cap = strlen(p) * 3 + 1, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    const char *seg = p;
    for (;;) {
        const char *e = keep_slash ? strchr(seg, '/') : NULL;
        size_t sl = e ? (size_t)(e - seg) : strlen(seg);
        char *esc = curl_easy_escape(h, seg, (int)sl);
        if (!esc) {
            free(out);
            return NULL;
        }
        size_t el = strlen(esc);
        memcpy(out + len, esc, el);
        len += el;
        curl_free(esc);
        if (!e)
            break;
        out[len++] = '/';
        seg = e + 1;
    }
    out[len] = 0;
    return out;
}

// ---------------------------------------------------------------------------------------------
// Response headers shared by API calls and downloads

struct resp_hdr {
    char error_code[64];  // X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo)
    char error_msg[256];  // X-Error-Message
    char link_next[2048]; // Link: <url>; rel="next"
    long retry_after;     // seconds, -1 absent
    int64_t cr_start;     // Content-Range start, -1 absent
};

static void hdr_reset(struct resp_hdr *h)
{
    memset(h, 0, sizeof *h);
    h->retry_after = -1;
    h->cr_start = -1;
}

static void hdr_value(const char *line, size_t n, char *dst, size_t cap)
{
    while (n > 0 && (*line == ' ' || *line == '\t'))
        line++, n--;
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, line, n);
    dst[n] = 0;
}

static size_t on_header(char *buf, size_t sz, size_t nm, void *user)
{
    struct resp_hdr *h = user;
    size_t n = sz * nm;
    char v[2048];
    if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
        hdr_reset(h); // a new response (redirects, 100-continue) starts over
    } else if (n > 13 && !strncasecmp(buf, "x-error-code:", 13)) {
        hdr_value(buf + 13, n - 13, h->error_code, sizeof h->error_code);
    } else if (n > 16 && !strncasecmp(buf, "x-error-message:", 16)) {
        hdr_value(buf + 16, n - 16, h->error_msg, sizeof h->error_msg);
    } else if (n > 12 && !strncasecmp(buf, "retry-after:", 12)) {
        hdr_value(buf + 12, n - 12, v, sizeof v);
        char *end;
        long s = strtol(v, &end, 10);
        if (end != v && !*end && s >= 0)
            h->retry_after = s > 3600 ? 3600 : s;
    } else if (n > 14 && !strncasecmp(buf, "content-range:", 14)) {
        hdr_value(buf + 14, n - 14, v, sizeof v);
        long long a;
        if (sscanf(v, "bytes %lld-", &a) == 1 && a >= 0)
            h->cr_start = a;
    } else if (n > 5 && !strncasecmp(buf, "link:", 5)) {
        hdr_value(buf + 5, n - 5, v, sizeof v);
        // <url>; rel="next"[, <url>; rel="prev"]
        for (char *p = v; (p = strchr(p, '<'));) {
            char *e = strchr(p, '>');
            if (!e)
                break;
            char *nextlt = strchr(e, '<');
            char *rel = strstr(e, "rel=\"next\"");
            if (rel && (!nextlt || rel < nextlt) && (size_t)(e - p - 1) < sizeof h->link_next) {
                memcpy(h->link_next, p + 1, (size_t)(e - p - 1));
                h->link_next[e - p - 1] = 0;
                break;
            }
            p = e;
        }
    }
    return n;
}

static int transient_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP3:
        return 1;
    default:
        return 0;
    }
}

static int transient_http(long code)
{
    return code == 408 || code == 429 || (code >= 500 && code <= 599);
}

// The message for an HTTP failure status. what: "repository X revision Y", "file F", ...
static enum sd_status http_error(const struct ctx *c, long code, const struct resp_hdr *h, const char *what,
                                 const char *url, struct sd_err *err)
{
    const char *ec = h ? h->error_code : "";
    const char *em = h && h->error_msg[0] ? h->error_msg : NULL;
    if (code == 404 || !strcmp(ec, "RepoNotFound") || !strcmp(ec, "RevisionNotFound") || !strcmp(ec, "EntryNotFound")) {
        if (code == 401 && !c->auth)
            return sd_err_set(err, SD_ERR_MISSING,
                              "%s not found (HTTP 401: it does not exist, or it is private: "
                              "set HF_TOKEN to a token that can read it)",
                              what);
        return sd_err_set(err, SD_ERR_MISSING,
                          "%s not found (HTTP %ld%s%s%s): check the repository name, revision "
                          "and file name (%s)",
                          what, code, em ? ": " : "", em ? em : "", "", url);
    }
    if (code == 401)
        return sd_err_set(err, SD_ERR_ARG,
                          c->auth ? "%s: HTTP 401, the hub rejected HF_TOKEN%s%s; check the token "
                                    "(https://huggingface.co/settings/tokens)"
                                  : "%s: HTTP 401, authentication required%s%s: set HF_TOKEN to a "
                                    "hub access token (https://huggingface.co/settings/tokens)",
                          what, em ? ": " : "", em ? em : "");
    if (code == 403 || !strcmp(ec, "GatedRepo"))
        return sd_err_set(err, SD_ERR_ARG,
                          "%s: HTTP %ld, access denied%s%s (a gated model: accept its license on "
                          "the model's hub page, then set HF_TOKEN to a token of that account)",
                          what, code, em ? ": " : "", em ? em : "");
    return sd_err_set(err, SD_ERR_IO, "%s: HTTP %ld%s%s (%s)", what, code, em ? ": " : "", em ? em : "", url);
}

static void common_opts(const struct ctx *c, CURL *h, struct curl_slist *hdrs, struct resp_hdr *rh)
{
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sparsedoc/" SD_VERSION);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L); // a stall counts as a timeout (transient)
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)c->stall_s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, rh);
    // libcurl sends custom headers such as Authorization only to the original host on redirects
    // (CURLOPT_UNRESTRICTED_AUTH stays off), so the token never reaches a CDN. Proxies come from
    // http_proxy / https_proxy / no_proxy as libcurl reads them.
    if (hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
}

static long backoff_ms(const struct ctx *c, int attempt, long retry_after_s)
{
    double ms = c->retry_base_ms;
    for (int i = 0; i < attempt && ms < BACKOFF_CAP_MS; i++)
        ms *= 2;
    if (ms > BACKOFF_CAP_MS)
        ms = BACKOFF_CAP_MS;
    ms *= 0.75 + 0.5 * ((double)rand() / RAND_MAX);
    if (retry_after_s >= 0 && retry_after_s * 1000.0 > ms)
        ms = (double)retry_after_s * 1000.0;
    return (long)ms;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

// ---------------------------------------------------------------------------------------------
// API calls (JSON)

struct membuf {
    char *p;
    size_t n, cap;
    int too_big;
};

static size_t on_mem(char *buf, size_t sz, size_t nm, void *user)
{
    struct membuf *m = user;
    size_t n = sz * nm;
    if (m->n + n + 1 > API_MAX_BYTES) {
        m->too_big = 1;
        return 0;
    }
    if (m->n + n + 1 > m->cap) {
        size_t cap = m->cap ? m->cap : 65536;
        while (cap < m->n + n + 1)
            cap *= 2;
        char *p = realloc(m->p, cap);
        if (!p)
            return 0;
        m->p = p, m->cap = cap;
    }
    memcpy(m->p + m->n, buf, n);
    m->n += n;
    m->p[m->n] = 0;
    return n;
}

// GET url with retries; on success *out is the parsed JSON (caller puts) and *next the Link rel=next
// URL or "" (next may be NULL).
static enum sd_status api_get(const struct ctx *c, const char *url, const char *what, json_object **out, char *next,
                              size_t next_cap, struct sd_err *err)
{
    *out = NULL;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
    if (c->auth)
        hdrs = curl_slist_append(hdrs, c->auth);
    CURL *h = curl_easy_init();
    enum sd_status st = SD_OK;
    if (!h || !hdrs) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    struct resp_hdr rh;
    struct membuf m = {0};
    for (int attempt = 0;; attempt++) {
        hdr_reset(&rh);
        m.n = 0;
        m.too_big = 0;
        curl_easy_reset(h);
        common_opts(c, h, hdrs, &rh);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 300L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_mem);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &m);
        CURLcode rc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        if (m.too_big) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: the hub's answer is larger than %zu MiB (%s)", what,
                            API_MAX_BYTES >> 20, url);
            break;
        }
        int transient = rc != CURLE_OK ? transient_curl(rc) : transient_http(code);
        if (transient && attempt < c->max_retries) {
            sleep_ms(backoff_ms(c, attempt, rh.retry_after));
            continue;
        }
        if (rc != CURLE_OK) {
            st = sd_err_set(err, SD_ERR_IO, "%s: %s (%s)%s", what, curl_easy_strerror(rc), url,
                            transient ? "; gave up after retries, check the network or HF_ENDPOINT" : "");
            break;
        }
        if (code != 200) {
            st = http_error(c, code, &rh, what, url, err);
            break;
        }
        enum json_tokener_error je;
        *out = json_tokener_parse_verbose(m.p ? m.p : "", &je);
        if (!*out)
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: the hub's answer is not JSON (%s) (%s)", what,
                            json_tokener_error_desc(je), url);
        else if (next)
            snprintf(next, next_cap, "%s", rh.link_next);
        break;
    }
    free(m.p);
out:
    if (h)
        curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    return st;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct sd_hub_file *)a)->path, ((const struct sd_hub_file *)b)->path);
}

void sd_hub_listing_free(struct sd_hub_listing *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_files; i++)
        free(l->files[i].path);
    free(l->files);
    free(l->repo);
    free(l->revision);
    free(l->commit);
    free(l);
}

static int is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
            return 0;
    return 1;
}

static void lower_hex(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'F')
            *s = (char)(*s - 'A' + 'a');
}

// Merge one page of tree entries into the (sorted) listing.
static enum sd_status merge_tree(struct sd_hub_listing *l, json_object *arr, const char *what, struct sd_err *err)
{
    if (!json_object_is_type(arr, json_type_array))
        return sd_err_set(err, SD_ERR_FORMAT, "%s: the tree API answer is not a JSON array", what);
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(arr, i), *v;
        if (!json_object_is_type(e, json_type_object))
            continue;
        if (json_object_object_get_ex(e, "type", &v) && strcmp(json_object_get_string(v), "file"))
            continue;
        if (!json_object_object_get_ex(e, "path", &v) || !json_object_is_type(v, json_type_string))
            continue;
        struct sd_hub_file key = {.path = (char *)json_object_get_string(v)};
        struct sd_hub_file *f = bsearch(&key, l->files, l->n_files, sizeof *f, cmp_file);
        if (!f)
            continue; // not among the revision's siblings
        if (json_object_object_get_ex(e, "size", &v) && json_object_is_type(v, json_type_int))
            f->size = json_object_get_int64(v);
        json_object *lfs;
        if (json_object_object_get_ex(e, "lfs", &lfs) && json_object_is_type(lfs, json_type_object)) {
            if (json_object_object_get_ex(lfs, "oid", &v) && is_hex(json_object_get_string(v), 64)) {
                snprintf(f->sha256, sizeof f->sha256, "%s", json_object_get_string(v));
                lower_hex(f->sha256);
            }
            if (json_object_object_get_ex(lfs, "size", &v) && json_object_is_type(v, json_type_int))
                f->size = json_object_get_int64(v);
        } else if (json_object_object_get_ex(e, "oid", &v) && is_hex(json_object_get_string(v), 40)) {
            snprintf(f->git_oid, sizeof f->git_oid, "%s", json_object_get_string(v));
            lower_hex(f->git_oid);
        }
        if (f->size < -1 || f->size > ((int64_t)1 << 50))
            return sd_err_set(err, SD_ERR_FORMAT, "%s: implausible size %lld for %s", what, (long long)f->size,
                              f->path);
    }
    return SD_OK;
}

enum sd_status sd_hub_list(const struct sd_hub_opts *opts, const char *repo, const char *rev,
                           struct sd_hub_listing **out, struct sd_err *err)
{
    *out = NULL;
    struct ctx c;
    enum sd_status st = ctx_init(&c, opts, err);
    json_object *j = NULL;
    struct sd_hub_listing *l = NULL;
    char *url = NULL, *rev_esc = NULL, *what = NULL, *next = NULL;
    CURL *h = NULL;
    if (st)
        goto out;
    if (!(l = calloc(1, sizeof *l)) || !(l->repo = strdup(repo)) || !(l->revision = strdup(rev)) ||
        !(h = curl_easy_init()) || !(rev_esc = escape_path(h, rev, 0)) ||
        !(what = xprintf("repository %s at revision %s", repo, rev)) ||
        !(url = xprintf("%s/api/models/%s/revision/%s", c.endpoint, repo, rev_esc)) || !(next = malloc(2048))) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((st = api_get(&c, url, what, &j, NULL, 0, err)))
        goto out;
    json_object *v, *sib;
    if (!json_object_is_type(j, json_type_object) || !json_object_object_get_ex(j, "siblings", &sib) ||
        !json_object_is_type(sib, json_type_array)) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s: the revision API answer has no \"siblings\" list (%s)", what, url);
        goto out;
    }
    const char *sha = json_object_object_get_ex(j, "sha", &v) ? json_object_get_string(v) : "";
    if (!(l->commit = strdup(sha && is_hex(sha, 40) ? sha : ""))) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t n = json_object_array_length(sib);
    if (n > MAX_FILES) {
        st = sd_err_set(err, SD_ERR_FORMAT, "%s lists %zu files, more than %d", what, n, MAX_FILES);
        goto out;
    }
    if (!(l->files = calloc(n ? n : 1, sizeof *l->files))) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(sib, i);
        const char *p = json_object_object_get_ex(e, "rfilename", &v) ? json_object_get_string(v) : NULL;
        if (!p || !json_object_is_type(v, json_type_string)) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: sibling %zu has no \"rfilename\"", what, i);
            goto out;
        }
        if (!repo_path_ok(p)) {
            st = sd_err_set(err, SD_ERR_FORMAT,
                            "%s: refusing file name \"%s\" (absolute, \"..\", control "
                            "characters or a .part name)",
                            what, p);
            goto out;
        }
        struct sd_hub_file *f = &l->files[l->n_files++];
        f->size = -1;
        if (!(f->path = strdup(p))) {
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    qsort(l->files, l->n_files, sizeof *l->files, cmp_file);
    for (size_t i = 1; i < l->n_files; i++)
        if (!strcmp(l->files[i].path, l->files[i - 1].path)) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s lists \"%s\" twice", what, l->files[i].path);
            goto out;
        }
    json_object_put(j);
    j = NULL;

    // Sizes and checksums: the tree of the resolved commit (so they match the files we fetch).
    free(url);
    char *tree_rev = l->commit[0] ? escape_path(h, l->commit, 0) : strdup(rev_esc);
    url = tree_rev ? xprintf("%s/api/models/%s/tree/%s?recursive=true", c.endpoint, repo, tree_rev) : NULL;
    free(tree_rev);
    if (!url) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int page = 0; page < MAX_TREE_PAGES; page++) {
        struct sd_err e2 = {0};
        st = api_get(&c, url, what, &j, next, 2048, &e2);
        if (st == SD_ERR_MISSING && page == 0) {
            st = SD_OK; // a mirror without the tree API: files are fetched unverified (results say so)
            break;
        }
        if (st) {
            *err = e2;
            goto out;
        }
        if ((st = merge_tree(l, j, what, err)))
            goto out;
        json_object_put(j);
        j = NULL;
        if (!next[0])
            break;
        if (strncmp(next, "http://", 7) && strncmp(next, "https://", 8)) {
            st = sd_err_set(err, SD_ERR_FORMAT, "%s: unexpected tree page link \"%s\"", what, next);
            goto out;
        }
        free(url);
        if (!(url = strdup(next))) {
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    *out = l;
    l = NULL;
out:
    json_object_put(j);
    sd_hub_listing_free(l);
    if (h)
        curl_easy_cleanup(h);
    free(url);
    free(rev_esc);
    free(what);
    free(next);
    ctx_free(&c);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Checksums and the manifest of verified files

// Start a digest for f: sha256 of the content for LFS files, else git's blob sha1 ("blob <size>\0" first).
static EVP_MD_CTX *md_start(const struct sd_hub_file *f)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        return NULL;
    if (f->sha256[0]) {
        if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1)
            return md;
    } else if (f->git_oid[0] && f->size >= 0) {
        char head[64];
        int n = snprintf(head, sizeof head, "blob %lld", (long long)f->size);
        if (EVP_DigestInit_ex(md, EVP_sha1(), NULL) == 1 && EVP_DigestUpdate(md, head, (size_t)n + 1) == 1)
            return md;
    } else {
        return md; // nothing to verify against; the context stays unused
    }
    EVP_MD_CTX_free(md);
    return NULL;
}

static const char *expected_digest(const struct sd_hub_file *f)
{
    return f->sha256[0] ? f->sha256 : f->git_oid;
}

static void md_finish(EVP_MD_CTX *md, char *out)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_DigestFinal_ex(md, d, &n) != 1)
        n = 0;
    sd_hex_encode(d, n, out);
}

// Feed the first `len` bytes of file `path` into md. Returns 0 or an errno.
static int md_file(EVP_MD_CTX *md, const char *path, int64_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    static __thread unsigned char buf[1 << 20];
    int rc = 0;
    while (len > 0) {
        ssize_t r = read(fd, buf, len < (int64_t)sizeof buf ? (size_t)len : sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? errno : EIO;
            break;
        }
        if (md)
            EVP_DigestUpdate(md, buf, (size_t)r);
        len -= r;
    }
    close(fd);
    return rc;
}

json_object *sd_hub_read_json(const char *path, long max_bytes)
{
    FILE *f = path ? fopen(path, "rb") : NULL;
    json_object *j = NULL;
    if (f && fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        char *buf = n > 0 && n < max_bytes ? malloc((size_t)n + 1) : NULL;
        if (buf && fseek(f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            buf[n] = 0;
            j = json_tokener_parse(buf);
        }
        free(buf);
    }
    if (f)
        fclose(f);
    return j;
}

static json_object *manifest_load(const char *dest)
{
    char *p = xprintf("%s/%s", dest, MANIFEST_NAME);
    json_object *j = sd_hub_read_json(p, MANIFEST_MAX_BYTES);
    free(p);
    json_object *files;
    if (!j || !json_object_is_type(j, json_type_object) || !json_object_object_get_ex(j, "files", &files) ||
        !json_object_is_type(files, json_type_object)) {
        json_object_put(j);
        j = json_object_new_object();
        json_object_object_add(j, "files", json_object_new_object());
    }
    return j;
}

// 1 if the manifest says `path` (now with stat st) was verified against f's checksum.
static int manifest_has(json_object *man, const struct sd_hub_file *f, const struct stat *st)
{
    json_object *files, *e, *v;
    if (!expected_digest(f)[0] || !json_object_object_get_ex(man, "files", &files) ||
        !json_object_object_get_ex(files, f->path, &e))
        return 0;
    if (!json_object_object_get_ex(e, "digest", &v) || strcmp(json_object_get_string(v), expected_digest(f)))
        return 0;
    if (!json_object_object_get_ex(e, "size", &v) || json_object_get_int64(v) != (int64_t)st->st_size)
        return 0;
    int64_t mt = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    return json_object_object_get_ex(e, "mtime_ns", &v) && json_object_get_int64(v) == mt;
}

static void manifest_put(json_object *man, const struct sd_hub_file *f, const char *final_path)
{
    json_object *files;
    struct stat st;
    if (!json_object_object_get_ex(man, "files", &files) || stat(final_path, &st) != 0)
        return;
    json_object *e = json_object_new_object();
    json_object_object_add(e, "size", json_object_new_int64((int64_t)st.st_size));
    json_object_object_add(e, "digest", json_object_new_string(expected_digest(f)));
    json_object_object_add(e, "mtime_ns",
                           json_object_new_int64((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec));
    json_object_object_add(files, f->path, e);
}

static void manifest_save(json_object *man, const struct sd_hub_listing *l, const char *dest)
{
    json_object_object_add(man, "repo", json_object_new_string(l->repo));
    json_object_object_add(man, "revision", json_object_new_string(l->revision));
    json_object_object_add(man, "commit", json_object_new_string(l->commit));
    char *p = xprintf("%s/%s", dest, MANIFEST_NAME), *tmp = xprintf("%s/%s.tmp.%d", dest, MANIFEST_NAME, getpid());
    const char *s = json_object_to_json_string_ext(man, JSON_C_TO_STRING_PRETTY);
    FILE *f = p && tmp ? fopen(tmp, "wb") : NULL;
    if (f) {
        int ok = fputs(s, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
        ok = fclose(f) == 0 && ok;
        if (!ok || rename(tmp, p) != 0)
            unlink(tmp); // the manifest is only an optimization; a later pull rehashes
    }
    free(p);
    free(tmp);
}

// ---------------------------------------------------------------------------------------------
// Downloads

enum xstate { X_PENDING, X_ACTIVE, X_WAITING, X_DONE, X_FAILED };

struct xfer {
    const struct sd_hub_file *f;
    struct sd_hub_result *res;
    char *final_path, *part_path, *url;
    enum xstate state;
    int fd;
    int64_t offset;  // bytes of .part present when this attempt started
    int64_t written; // bytes in .part now
    EVP_MD_CTX *md;
    CURL *h;
    struct resp_hdr rh;
    int body_started, discard, write_errno, range_error, scratch_retry_used;
    char overflow_msg[160];
    double retry_at;
};

struct dl {
    struct ctx c;
    struct xfer *x;
    size_t n;
    CURLM *multi;
    struct curl_slist *hdrs;
    int64_t bytes_net;
    double last_progress;
    struct xfer *fatal; // the transfer that found the disk full: stop everything
};

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t on_body(char *buf, size_t sz, size_t nm, void *user)
{
    struct xfer *x = user;
    size_t n = sz * nm;
    if (!x->body_started) {
        x->body_started = 1;
        long code = 0;
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
        if (code == 206) {
            if (x->rh.cr_start != x->offset) {
                x->range_error = 1; // a range we did not ask for: start this file over
                return 0;
            }
        } else if (code == 200) {
            if (x->offset > 0) { // the server ignored Range: start over from byte 0
                if (ftruncate(x->fd, 0) != 0 || lseek(x->fd, 0, SEEK_SET) != 0) {
                    x->write_errno = errno;
                    return 0;
                }
                EVP_MD_CTX_free(x->md);
                x->md = md_start(x->f);
                x->res->resumed_from = 0;
                x->offset = x->written = 0;
            }
        } else {
            x->discard = 1; // an error page
        }
    }
    if (x->discard)
        return n;
    if (x->f->size >= 0 && x->written + (int64_t)n > x->f->size) {
        snprintf(x->overflow_msg, sizeof x->overflow_msg, "the server sent more than the %lld bytes the hub lists",
                 (long long)x->f->size);
        return 0;
    }
    int e = write_all(x->fd, buf, n);
    if (e) {
        x->write_errno = e;
        return 0;
    }
    if (x->md)
        EVP_DigestUpdate(x->md, buf, n);
    x->written += (int64_t)n;
    x->res->bytes_net += (int64_t)n;
    return n;
}

static void xfer_close(struct xfer *x)
{
    if (x->fd >= 0)
        close(x->fd);
    x->fd = -1;
    EVP_MD_CTX_free(x->md);
    x->md = NULL;
}

static void xfer_fail(struct xfer *x, enum sd_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void xfer_fail(struct xfer *x, enum sd_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->res->msg, sizeof x->res->msg, fmt, ap);
    va_end(ap);
    x->res->status = st;
    x->res->state = SD_HUB_FAILED;
    x->state = X_FAILED;
    xfer_close(x);
}

// Open the .part file, hash what it holds, and add the transfer to the multi handle. Returns 1 when the
// .part file is already complete (no request made; the caller finishes it), else 0.
static int xfer_start(struct dl *d, struct xfer *x)
{
    x->fd = open(x->part_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (x->fd < 0) {
        xfer_fail(x, SD_ERR_IO, "cannot open %s: %s", x->part_path, strerror(errno));
        return 0;
    }
    struct stat st;
    int64_t have = fstat(x->fd, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : 0;
    if (x->f->size >= 0 && have > x->f->size) {
        if (ftruncate(x->fd, 0) != 0) {
            xfer_fail(x, SD_ERR_IO, "cannot truncate %s: %s", x->part_path, strerror(errno));
            return 0;
        }
        have = 0;
    }
    x->md = md_start(x->f);
    if (!x->md) {
        xfer_fail(x, SD_ERR_NOMEM, "cannot start a checksum for %s", x->f->path);
        return 0;
    }
    if (have > 0) {
        int e = md_file(x->md, x->part_path, have);
        if (e) {
            xfer_fail(x, SD_ERR_IO, "cannot read %s: %s", x->part_path, strerror(e));
            return 0;
        }
    }
    if (lseek(x->fd, have, SEEK_SET) != have) {
        xfer_fail(x, SD_ERR_IO, "cannot seek in %s: %s", x->part_path, strerror(errno));
        return 0;
    }
    x->offset = x->written = have;
    if (have > 0 && x->res->resumed_from == 0)
        x->res->resumed_from = have;
    x->body_started = x->discard = x->write_errno = x->range_error = 0;
    x->overflow_msg[0] = 0;
    if (x->f->size >= 0 && have == x->f->size) {
        // already complete: verify without a request (a HEAD-free resume of a finished .part)
        x->state = X_ACTIVE;
        return 1;
    }
    hdr_reset(&x->rh);
    if (!x->h && !(x->h = curl_easy_init())) {
        xfer_fail(x, SD_ERR_NOMEM, "out of memory");
        return 0;
    }
    curl_easy_reset(x->h);
    common_opts(&d->c, x->h, d->hdrs, &x->rh);
    curl_easy_setopt(x->h, CURLOPT_URL, x->url);
    curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->h, CURLOPT_BUFFERSIZE, 256L * 1024);
    char range[64];
    if (have > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)have);
        curl_easy_setopt(x->h, CURLOPT_RANGE, range); // copied by libcurl
    }
    if (curl_multi_add_handle(d->multi, x->h) != CURLM_OK) {
        xfer_fail(x, SD_ERR_IO, "cannot start the transfer of %s", x->f->path);
        return 0;
    }
    x->state = X_ACTIVE;
    return 0;
}

static void xfer_retry(struct dl *d, struct xfer *x, long retry_after, const char *why)
{
    xfer_close(x);
    if (x->res->retries >= d->c.max_retries) {
        xfer_fail(x, SD_ERR_IO,
                  "%s: %s; gave up after %d retries (the %lld bytes received are kept in %s: run the "
                  "pull again to resume)",
                  x->f->path, why, x->res->retries, (long long)x->written, x->part_path);
        return;
    }
    long ms = backoff_ms(&d->c, x->res->retries, retry_after);
    x->res->retries++;
    x->retry_at = sd_now_s() + (double)ms / 1000.0;
    x->state = X_WAITING;
}

// The body is complete: check size and checksum, then fsync and rename into place.
static void xfer_finish(struct dl *d, struct xfer *x)
{
    const char *want = expected_digest(x->f);
    if (x->f->size >= 0 && x->written != x->f->size) {
        xfer_retry(d, x, -1, "the transfer ended early");
        return;
    }
    char got[2 * EVP_MAX_MD_SIZE + 1] = "";
    if (want[0]) {
        md_finish(x->md, got);
        if (strcmp(got, want)) {
            int resumed = x->offset > 0;
            xfer_close(x);
            unlink(x->part_path); // a mismatched file is never used
            if (resumed && !x->scratch_retry_used) {
                // the kept .part may come from another version of the file: one fresh download
                x->scratch_retry_used = 1;
                x->res->resumed_from = 0;
                x->retry_at = sd_now_s();
                x->state = X_WAITING;
                return;
            }
            xfer_fail(x, SD_ERR_CHECKSUM,
                      "%s: checksum mismatch: the hub lists %s %s, the download has %s; the file "
                      "was deleted (a corrupted transfer or mirror: run the pull again)",
                      x->f->path, x->f->sha256[0] ? "sha256" : "git blob sha1", want, got);
            return;
        }
    }
    if (fsync(x->fd) != 0) {
        int e = errno;
        int full = e == ENOSPC || e == EDQUOT;
        xfer_fail(x, SD_ERR_IO, "%s: %s (fsync)%s", x->part_path, full ? "disk full" : strerror(e),
                  full ? ": free some space or pull with --dir on another disk" : "");
        if (full)
            d->fatal = x;
        return;
    }
    xfer_close(x);
    if (rename(x->part_path, x->final_path) != 0) {
        xfer_fail(x, SD_ERR_IO, "cannot rename %s to %s: %s", x->part_path, x->final_path, strerror(errno));
        return;
    }
    x->res->verified = want[0] != 0;
    x->res->state = SD_HUB_DOWNLOADED;
    x->res->status = SD_OK;
    x->state = X_DONE;
}

static void xfer_done(struct dl *d, struct xfer *x, CURLcode rc)
{
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    curl_multi_remove_handle(d->multi, x->h);
    if (x->write_errno) {
        int e = x->write_errno;
        if (e == ENOSPC || e == EDQUOT) {
            d->fatal = x;
            struct statvfs vfs;
            char need[32] = "?", freeb[32] = "?";
            if (x->f->size >= 0)
                fmt_bytes((double)(x->f->size - x->written), need, sizeof need);
            if (statvfs(x->part_path, &vfs) == 0)
                fmt_bytes((double)vfs.f_bavail * (double)vfs.f_frsize, freeb, sizeof freeb);
            xfer_fail(x, SD_ERR_IO,
                      "disk full while writing %s (%s more needed for this file, %s free): free some "
                      "space or pull with --dir on another disk; the partial file is kept for resume",
                      x->part_path, need, freeb);
        } else {
            xfer_fail(x, SD_ERR_IO, "cannot write %s: %s", x->part_path, strerror(e));
        }
        return;
    }
    if (x->range_error) {
        xfer_close(x);
        if (truncate(x->part_path, 0) != 0) {
            xfer_fail(x, SD_ERR_IO, "cannot truncate %s: %s", x->part_path, strerror(errno));
            return;
        }
        xfer_retry(d, x, -1, "the server answered a different byte range than asked");
        return;
    }
    if (x->overflow_msg[0]) {
        xfer_close(x);
        unlink(x->part_path);
        xfer_fail(x, SD_ERR_FORMAT, "%s: %s; the partial file was deleted", x->f->path, x->overflow_msg);
        return;
    }
    if (rc == CURLE_OK && (code == 200 || code == 206)) {
        xfer_finish(d, x);
        return;
    }
    if (rc == CURLE_OK && code == 416) { // our .part is not a prefix the server can continue: start over
        xfer_close(x);
        if (truncate(x->part_path, 0) != 0) {
            xfer_fail(x, SD_ERR_IO, "cannot truncate %s: %s", x->part_path, strerror(errno));
            return;
        }
        xfer_retry(d, x, -1, "HTTP 416 for a resume");
        return;
    }
    char why[256];
    if (rc != CURLE_OK) {
        snprintf(why, sizeof why, "%s", curl_easy_strerror(rc));
        if (transient_curl(rc)) {
            xfer_retry(d, x, -1, why);
            return;
        }
        xfer_fail(x, SD_ERR_IO, "%s: %s (%s)", x->f->path, why, x->url);
        return;
    }
    if (transient_http(code)) {
        snprintf(why, sizeof why, "HTTP %ld", code);
        xfer_retry(d, x, x->rh.retry_after, why);
        return;
    }
    struct sd_err e;
    char what[600];
    snprintf(what, sizeof what, "file %s", x->f->path);
    enum sd_status st = http_error(&d->c, code, &x->rh, what, x->url, &e);
    xfer_fail(x, st, "%s", e.msg);
}

static void report(struct dl *d, int force)
{
    if (!d->c.o || !d->c.o->on_progress)
        return;
    double t = sd_now_s();
    if (!force && t - d->last_progress < 0.1)
        return;
    d->last_progress = t;
    struct sd_hub_progress p = {0};
    for (size_t i = 0; i < d->n; i++) {
        struct xfer *x = &d->x[i];
        int64_t sz = x->f->size >= 0 ? x->f->size : x->written;
        p.bytes_total += sz;
        p.bytes_done += x->state == X_DONE ? sz : x->written;
        p.files_done += x->state == X_DONE;
        p.retrying += x->state == X_WAITING;
        p.bytes_net += x->res->bytes_net;
    }
    p.files_total = (int)d->n;
    d->c.o->on_progress(d->c.o->user, &p);
}

enum sd_status sd_hub_download(const struct sd_hub_opts *opts, const struct sd_hub_listing *l, const size_t *sel,
                               size_t n_sel, const char *dest_dir, struct sd_hub_result *results, struct sd_err *err)
{
    struct dl d;
    memset(&d, 0, sizeof d);
    enum sd_status st = ctx_init(&d.c, opts, err);
    json_object *man = NULL;
    CURL *esc = NULL;
    char *repo_esc = NULL, *rev_esc = NULL;
    if (st)
        goto out;
    memset(results, 0, n_sel * sizeof *results);
    if (mkdir_p(dest_dir) != 0) {
        st = sd_err_set(err, SD_ERR_IO, "cannot create %s: %s", dest_dir, strerror(errno));
        goto out;
    }
    if (!(d.x = calloc(n_sel ? n_sel : 1, sizeof *d.x)) || !(d.multi = curl_multi_init()) ||
        !(esc = curl_easy_init()) || !(rev_esc = escape_path(esc, l->commit[0] ? l->commit : l->revision, 0)) ||
        !(repo_esc = escape_path(esc, l->repo, 1))) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (d.c.auth && !(d.hdrs = curl_slist_append(NULL, d.c.auth))) {
        st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    curl_multi_setopt(d.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)d.c.parallel);
    man = manifest_load(dest_dir);
    d.n = n_sel;
    int64_t need = 0;
    for (size_t i = 0; i < n_sel; i++) {
        struct xfer *x = &d.x[i];
        x->fd = -1;
        x->res = &results[i];
        if (sel[i] >= l->n_files) {
            st = sd_err_set(err, SD_ERR_ARG, "file index %zu out of range", sel[i]);
            goto out;
        }
        x->f = &l->files[sel[i]];
        char *pesc = escape_path(esc, x->f->path, 1);
        x->final_path = xprintf("%s/%s", dest_dir, x->f->path);
        x->part_path = xprintf("%s/%s.part", dest_dir, x->f->path);
        x->url = pesc ? xprintf("%s/%s/resolve/%s/%s", d.c.endpoint, repo_esc, rev_esc, pesc) : NULL;
        free(pesc);
        if (!x->final_path || !x->part_path || !x->url) {
            st = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        char *slash = strrchr(x->final_path, '/');
        *slash = 0;
        int mk = mkdir_p(x->final_path);
        *slash = '/';
        if (mk != 0) {
            st = sd_err_set(err, SD_ERR_IO, "cannot create the folder of %s: %s", x->final_path, strerror(errno));
            goto out;
        }
        // Already in place? Trust the manifest (same size, mtime and checksum) or rehash.
        struct stat fst;
        if (stat(x->final_path, &fst) == 0 && S_ISREG(fst.st_mode) &&
            (x->f->size < 0 || (int64_t)fst.st_size == x->f->size)) {
            const char *want = expected_digest(x->f);
            int ok = !want[0] || manifest_has(man, x->f, &fst);
            if (!ok) {
                EVP_MD_CTX *md = md_start(x->f);
                char got[2 * EVP_MAX_MD_SIZE + 1] = "";
                if (md && md_file(md, x->final_path, (int64_t)fst.st_size) == 0) {
                    md_finish(md, got);
                    ok = !strcmp(got, want);
                }
                EVP_MD_CTX_free(md);
            }
            if (ok) {
                x->state = X_DONE;
                x->res->state = SD_HUB_CACHED;
                x->res->verified = want[0] != 0;
                x->written = (int64_t)fst.st_size;
                continue;
            }
        }
        struct stat pst;
        int64_t part = stat(x->part_path, &pst) == 0 ? (int64_t)pst.st_size : 0;
        if (x->f->size > 0 && part < x->f->size)
            need += x->f->size - part;
        x->state = X_PENDING;
    }
    struct statvfs vfs;
    if (need > 0 && statvfs(dest_dir, &vfs) == 0 && (double)vfs.f_bavail * (double)vfs.f_frsize < (double)need) {
        char a[32], b[32];
        fmt_bytes((double)need, a, sizeof a);
        fmt_bytes((double)vfs.f_bavail * (double)vfs.f_frsize, b, sizeof b);
        st = sd_err_set(err, SD_ERR_IO,
                        "not enough disk space in %s: the download needs %s, %s is free; free some "
                        "space or pull with --dir on another disk",
                        dest_dir, a, b);
        goto out;
    }

    // The transfer loop.
    int cancelled = 0;
    for (;;) {
        double t = sd_now_s();
        int active = 0, waiting = 0;
        double next_retry = 1e30;
        for (size_t i = 0; i < d.n; i++) {
            active += d.x[i].state == X_ACTIVE;
            if (d.x[i].state == X_WAITING) {
                waiting++;
                if (d.x[i].retry_at < next_retry)
                    next_retry = d.x[i].retry_at;
            }
        }
        for (size_t i = 0; i < d.n && active < d.c.parallel && !d.fatal; i++) {
            struct xfer *x = &d.x[i];
            if (x->state == X_PENDING || (x->state == X_WAITING && x->retry_at <= t)) {
                waiting -= x->state == X_WAITING;
                if (xfer_start(&d, x))
                    xfer_finish(&d, x); // the .part was already complete
                else if (x->state == X_ACTIVE)
                    active++;
            }
        }
        if (d.fatal)
            break;
        if (d.c.o && d.c.o->cancel && *d.c.o->cancel) {
            cancelled = 1;
            break;
        }
        int pending = 0;
        for (size_t i = 0; i < d.n; i++)
            pending += d.x[i].state == X_PENDING || d.x[i].state == X_WAITING;
        if (active == 0 && pending == 0)
            break;
        int running = 0;
        curl_multi_perform(d.multi, &running);
        int left;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(d.multi, &left)))
            if (msg->msg == CURLMSG_DONE) {
                struct xfer *x = NULL;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
                if (x)
                    xfer_done(&d, x, msg->data.result);
                if (d.fatal)
                    break;
            }
        if (d.fatal)
            break;
        report(&d, 0);
        long wait_ms = 100;
        if (active == 0 && waiting > 0) {
            double w = (next_retry - sd_now_s()) * 1000.0;
            wait_ms = w < 1 ? 1 : w > 100 ? 100 : (long)w;
        }
        curl_multi_poll(d.multi, NULL, 0, (int)wait_ms, NULL);
    }
    report(&d, 1);

    // Result: the first failure decides the status; disk full stops every other transfer.
    const struct xfer *first = NULL;
    for (size_t i = 0; i < d.n; i++) {
        struct xfer *x = &d.x[i];
        if (cancelled && x->state != X_DONE && x->state != X_FAILED) {
            if (x->h && x->state == X_ACTIVE)
                curl_multi_remove_handle(d.multi, x->h);
            xfer_close(x);
            x->state = X_FAILED;
            x->res->state = SD_HUB_FAILED;
            x->res->status = SD_ERR_IO;
            snprintf(x->res->msg, sizeof x->res->msg, "cancelled (partial file kept for resume)");
            continue;
        }
        if (d.fatal && x->state != X_DONE && x->state != X_FAILED) {
            if (x->h && x->state == X_ACTIVE)
                curl_multi_remove_handle(d.multi, x->h);
            xfer_close(x);
            x->state = X_FAILED;
            x->res->state = SD_HUB_FAILED;
            x->res->status = SD_ERR_IO;
            snprintf(x->res->msg, sizeof x->res->msg, "not finished: the disk is full (partial file kept)");
        }
        if (x->state == X_DONE && x->res->verified)
            manifest_put(man, x->f, x->final_path);
        if (x->state == X_FAILED && !first)
            first = d.fatal ? d.fatal : x;
    }
    manifest_save(man, l, dest_dir);
    int dfd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); // the renames
        close(dfd);
    }
    if (cancelled) {
        st = sd_err_set(err, SD_ERR_IO, "cancelled; the partial files in %s are kept: run the pull again to resume",
                        dest_dir);
    } else if (first) {
        int nf = 0;
        for (size_t i = 0; i < d.n; i++)
            nf += d.x[i].state == X_FAILED;
        st =
            sd_err_set(err, first->res->status, "%s%s", first->res->msg, nf > 1 ? " (and other files failed too)" : "");
    }
out:
    for (size_t i = 0; d.x && i < d.n; i++) {
        struct xfer *x = &d.x[i];
        if (x->h) {
            curl_multi_remove_handle(d.multi, x->h);
            curl_easy_cleanup(x->h);
        }
        xfer_close(x);
        free(x->final_path);
        free(x->part_path);
        free(x->url);
    }
    free(d.x);
    if (d.multi)
        curl_multi_cleanup(d.multi);
    if (esc)
        curl_easy_cleanup(esc);
    curl_slist_free_all(d.hdrs);
    json_object_put(man);
    free(repo_esc);
    free(rev_esc);
    ctx_free(&d.c);
    return st;
}
