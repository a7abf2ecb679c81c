// tree_walk.c: directory walk with .gitignore rules (see tree_walk.h). Ignore files form a stack that
// grows as the walk descends; for each entry every rule from the outermost file to the innermost is
// tried and the last match decides, as git does.
#include "tree_walk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_DEPTH 128
#define MAX_RULES_PER_FILE 10000
#define MAX_IGNORE_FILE_BYTES (1 << 20)

const char *sd_file_kind_str(enum sd_file_kind k)
{
    switch (k) {
    case SD_FILE_TEXT: return "text";
    case SD_FILE_MARKDOWN: return "markdown";
    case SD_FILE_CODE: return "code";
    case SD_FILE_PDF: return "pdf";
    }
    return "?";
}

static const struct {
    const char *ext, *lang;
} code_exts[] = {
    {"c", "c"}, {"h", "c"}, {"cc", "cpp"}, {"cpp", "cpp"}, {"cxx", "cpp"}, {"hpp", "cpp"}, {"hh", "cpp"},
    {"cu", "cuda"}, {"cuh", "cuda"}, {"py", "python"}, {"rs", "rust"}, {"go", "go"}, {"java", "java"},
    {"kt", "kotlin"}, {"js", "javascript"}, {"mjs", "javascript"}, {"ts", "typescript"}, {"tsx", "typescript"},
    {"jsx", "javascript"}, {"rb", "ruby"}, {"php", "php"}, {"cs", "csharp"}, {"swift", "swift"}, {"m", "objc"},
    {"scala", "scala"}, {"lua", "lua"}, {"pl", "perl"}, {"sh", "shell"}, {"bash", "shell"}, {"zsh", "shell"},
    {"sql", "sql"}, {"html", "html"}, {"css", "css"}, {"xml", "xml"}, {"json", "json"}, {"yaml", "yaml"},
    {"yml", "yaml"}, {"toml", "toml"}, {"ini", "ini"}, {"cmake", "cmake"}, {"build", "meson"}, {"mk", "make"},
    {"el", "elisp"}, {"hs", "haskell"}, {"ml", "ocaml"}, {"zig", "zig"}, {"nim", "nim"}, {"r", "r"},
    {"jl", "julia"}, {"dart", "dart"}, {"vue", "vue"}, {"ui", "xml"}, {"glsl", "glsl"}, {"tex", "latex"},
};

static const char *const binary_exts[] = {
    "o", "a", "so", "dylib", "dll", "exe", "bin", "png", "jpg", "jpeg", "gif", "bmp", "ico", "webp", "zip",
    "gz", "xz", "bz2", "zst", "tar", "7z", "rar", "jar", "class", "pyc", "wasm", "woff", "woff2", "ttf", "otf",
    "mp3", "mp4", "mkv", "avi", "mov", "wav", "flac", "ogg", "db", "sqlite", "safetensors", "gguf", "pt", "npy",
};

enum sd_file_kind sd_file_kind_from_path(const char *path, const char **lang)
{
    *lang = NULL;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!strcmp(base, "Makefile") || !strcmp(base, "GNUmakefile")) {
        *lang = "make";
        return SD_FILE_CODE;
    }
    if (!strcmp(base, "Dockerfile")) {
        *lang = "dockerfile";
        return SD_FILE_CODE;
    }
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        return SD_FILE_TEXT;
    const char *ext = dot + 1;
    if (!strcasecmp(ext, "pdf"))
        return SD_FILE_PDF;
    if (!strcasecmp(ext, "md") || !strcasecmp(ext, "markdown") || !strcasecmp(ext, "rst"))
        return SD_FILE_MARKDOWN;
    for (size_t i = 0; i < sizeof code_exts / sizeof code_exts[0]; i++)
        if (!strcasecmp(ext, code_exts[i].ext)) {
            *lang = code_exts[i].lang;
            return SD_FILE_CODE;
        }
    return SD_FILE_TEXT;
}

static int binary_ext(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot)
        return 0;
    for (size_t i = 0; i < sizeof binary_exts / sizeof binary_exts[0]; i++)
        if (!strcasecmp(dot + 1, binary_exts[i]))
            return 1;
    return 0;
}

int sd_file_is_binary(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 && errno == ELOOP)
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) < 0 && errno == EINTR)
        ;
    close(fd);
    if (n < 0)
        return -1;
    return memchr(buf, 0, (size_t)n) != NULL;
}

// ---- gitignore patterns ----

static int class_match(const char **pp, char c)
{
    const char *p = *pp + 1; // after '['
    int neg = 0, ok = 0;
    if (*p == '!' || *p == '^') {
        neg = 1;
        p++;
    }
    int first = 1;
    while (*p && (*p != ']' || first)) {
        first = 0;
        char lo = *p;
        if (lo == '\\' && p[1])
            lo = *++p;
        char hi = lo;
        if (p[1] == '-' && p[2] && p[2] != ']') {
            hi = p[2];
            if (hi == '\\' && p[3])
                hi = p[3], p++;
            p += 2;
        }
        if (c >= lo && c <= hi)
            ok = 1;
        p++;
    }
    if (*p != ']')
        return -1; // unterminated: treat '[' literally
    *pp = p + 1;
    return ok != neg;
}

static int glob(const char *p, const char *s)
{
    while (*p) {
        if (p[0] == '*' && p[1] == '*' && (p[2] == '/' || p[2] == 0)) {
            if (p[2] == 0)
                return 1; // trailing "**": everything inside
            // "**/": zero or more directories
            if (glob(p + 3, s))
                return 1;
            for (const char *q = s; *q; q++)
                if (*q == '/' && glob(p + 3, q + 1))
                    return 1;
            return 0;
        }
        if (*p == '*') {
            while (*p == '*')
                p++;
            for (const char *q = s;; q++) {
                if (glob(p, q))
                    return 1;
                if (!*q || *q == '/')
                    return 0;
            }
        }
        if (!*s)
            return 0;
        if (*p == '?') {
            if (*s == '/')
                return 0;
            p++, s++;
            continue;
        }
        if (*p == '[') {
            const char *q = p;
            int r = class_match(&q, *s);
            if (r >= 0) {
                if (!r || *s == '/')
                    return 0;
                p = q, s++;
                continue;
            }
        }
        if (*p == '\\' && p[1])
            p++;
        if (*p != *s)
            return 0;
        p++, s++;
    }
    return *s == 0;
}

int sd_gitignore_match(const char *pattern, const char *path)
{
    // A pattern with a slash (other than trailing, already removed) is anchored to the .gitignore's
    // directory; otherwise it matches the name at any depth.
    if (pattern[0] == '/')
        return glob(pattern + 1, path);
    if (strchr(pattern, '/'))
        return glob(pattern, path);
    const char *base = strrchr(path, '/');
    return glob(pattern, base ? base + 1 : path);
}

struct rule {
    char *pat;
    int neg, dir_only;
};

struct ignore_file {
    char *base; // directory of the .gitignore, absolute, no trailing slash
    struct rule *rules;
    size_t n;
};

struct walker {
    const struct sd_walk_opts *o;
    sd_walk_file_fn on_file;
    sd_walk_skip_fn on_skip;
    void *user;
    struct ignore_file *ig;
    size_t n_ig, cap_ig;
    struct {
        dev_t dev;
        ino_t ino;
    } *seen;
    size_t n_seen, cap_seen;
    int stop;
};

static void ignore_free(struct ignore_file *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->rules[i].pat);
    free(f->rules);
    free(f->base);
}

// Load an ignore file (absent is fine). Pushes an entry (possibly with no rules) onto the stack.
static int ignore_push(struct walker *w, const char *file, const char *base)
{
    if (w->n_ig == w->cap_ig) {
        size_t cap = w->cap_ig ? w->cap_ig * 2 : 16;
        void *n = realloc(w->ig, cap * sizeof *w->ig);
        if (!n)
            return -1;
        w->ig = n;
        w->cap_ig = cap;
    }
    struct ignore_file *f = &w->ig[w->n_ig];
    memset(f, 0, sizeof *f);
    if (!(f->base = strdup(base)))
        return -1;
    w->n_ig++;
    FILE *fp = fopen(file, "r");
    if (!fp)
        return 0;
    char line[4096];
    size_t total = 0, cap = 0;
    while (fgets(line, sizeof line, fp) && f->n < MAX_RULES_PER_FILE && total < MAX_IGNORE_FILE_BYTES) {
        size_t n = strlen(line);
        total += n;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        // trailing spaces are ignored unless escaped
        while (n && line[n - 1] == ' ' && !(n >= 2 && line[n - 2] == '\\'))
            line[--n] = 0;
        if (!n || line[0] == '#')
            continue;
        struct rule r = {0};
        char *p = line;
        if (*p == '!') {
            r.neg = 1;
            p++;
        } else if (*p == '\\' && (p[1] == '#' || p[1] == '!'))
            p++;
        n = strlen(p);
        if (n && p[n - 1] == '/') {
            r.dir_only = 1;
            p[--n] = 0;
        }
        if (!n)
            continue;
        if (f->n == cap) {
            cap = cap ? cap * 2 : 16;
            void *nr = realloc(f->rules, cap * sizeof *f->rules);
            if (!nr) {
                fclose(fp);
                return -1;
            }
            f->rules = nr;
        }
        if (!(r.pat = strdup(p))) {
            fclose(fp);
            return -1;
        }
        f->rules[f->n++] = r;
    }
    fclose(fp);
    return 0;
}

static void ignore_pop(struct walker *w)
{
    if (w->n_ig)
        ignore_free(&w->ig[--w->n_ig]);
}

static int ignored(const struct walker *w, const char *abs, int is_dir)
{
    int result = 0;
    for (size_t i = 0; i < w->n_ig; i++) {
        const struct ignore_file *f = &w->ig[i];
        size_t bl = strlen(f->base);
        if (strncmp(abs, f->base, bl) || abs[bl] != '/')
            continue;
        const char *rel = abs + bl + 1;
        for (size_t k = 0; k < f->n; k++) {
            const struct rule *r = &f->rules[k];
            if (r->dir_only && !is_dir)
                continue;
            if (sd_gitignore_match(r->pat, rel))
                result = !r->neg;
        }
    }
    return result;
}

static int cmp_names(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int seen_dir(struct walker *w, const struct stat *st)
{
    for (size_t i = 0; i < w->n_seen; i++)
        if (w->seen[i].dev == st->st_dev && w->seen[i].ino == st->st_ino)
            return 1;
    if (w->n_seen == w->cap_seen) {
        size_t cap = w->cap_seen ? w->cap_seen * 2 : 64;
        void *n = realloc(w->seen, cap * sizeof *w->seen);
        if (!n)
            return 0;
        w->seen = n;
        w->cap_seen = cap;
    }
    w->seen[w->n_seen].dev = st->st_dev;
    w->seen[w->n_seen].ino = st->st_ino;
    w->n_seen++;
    return 0;
}

static void walk_dir(struct walker *w, const char *dir, int depth)
{
    if (depth > MAX_DEPTH) {
        w->on_skip(w->user, dir, "directory nesting too deep", 1);
        return;
    }
    char *gi = malloc(strlen(dir) + 16);
    if (!gi) {
        w->on_skip(w->user, dir, "out of memory", 1);
        return;
    }
    sprintf(gi, "%s/.gitignore", dir);
    int pushed = ignore_push(w, gi, dir) == 0;
    free(gi);
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, cmp_names);
    if (n < 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot read directory: %s", strerror(errno));
        w->on_skip(w->user, dir, why, 1);
        if (pushed)
            ignore_pop(w);
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        if (w->stop || !strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, ".git") || !strcmp(name, ".hg") ||
            !strcmp(name, ".svn")) {
            free(ents[i]);
            continue;
        }
        size_t pl = strlen(dir) + strlen(name) + 2;
        char *path = malloc(pl);
        if (!path) {
            free(ents[i]);
            continue;
        }
        snprintf(path, pl, "%s/%s", dir, name);
        free(ents[i]);
        struct stat lst, st;
        if (lstat(path, &lst) != 0) {
            w->on_skip(w->user, path, strerror(errno), 1);
            free(path);
            continue;
        }
        st = lst;
        int is_link = S_ISLNK(lst.st_mode);
        if (is_link && stat(path, &st) != 0) {
            w->on_skip(w->user, path, "broken symbolic link", 0);
            free(path);
            continue;
        }
        int is_dir = S_ISDIR(st.st_mode);
        if (ignored(w, path, is_dir)) {
            free(path);
            continue; // ignored entries are not reported: that is what the user asked for
        }
        if (is_dir) {
            if (is_link)
                w->on_skip(w->user, path, "symbolic link to a directory (not followed)", 0);
            else if (seen_dir(w, &st))
                w->on_skip(w->user, path, "directory already visited (loop)", 0);
            else
                walk_dir(w, path, depth + 1);
        } else if (!S_ISREG(st.st_mode)) {
            w->on_skip(w->user, path, "not a regular file", 0);
        } else {
            const char *lang;
            enum sd_file_kind kind = sd_file_kind_from_path(path, &lang);
            int64_t cap = w->o && w->o->max_file_bytes > 0 ? w->o->max_file_bytes : (4 << 20);
            int bin;
            if (kind != SD_FILE_PDF && binary_ext(path))
                w->on_skip(w->user, path, "binary file", 0);
            else if (kind != SD_FILE_PDF && st.st_size > cap) {
                char why[96];
                snprintf(why, sizeof why, "larger than the %lld-byte cap", (long long)cap);
                w->on_skip(w->user, path, why, 0);
            } else if (kind != SD_FILE_PDF && (bin = sd_file_is_binary(path)) != 0) {
                if (bin < 0) {
                    char why[160];
                    snprintf(why, sizeof why, "cannot read: %s", strerror(errno));
                    w->on_skip(w->user, path, why, 1);
                } else
                    w->on_skip(w->user, path, "binary file (contains NUL bytes)", 0);
            } else if (w->on_file(w->user, path, &st, kind, lang))
                w->stop = 1;
        }
        free(path);
    }
    free(ents);
    if (pushed)
        ignore_pop(w);
}

enum sd_status sd_walk(const char *root, const struct sd_walk_opts *opts, sd_walk_file_fn on_file,
                       sd_walk_skip_fn on_skip, void *user, struct sd_err *err)
{
    char *abs = realpath(root, NULL);
    if (!abs)
        return sd_err_set(err, SD_ERR_IO, "%s: %s", root, strerror(errno));
    struct stat st;
    if (stat(abs, &st) != 0 || !S_ISDIR(st.st_mode)) {
        free(abs);
        return sd_err_set(err, SD_ERR_ARG, "%s: not a directory", root);
    }
    struct walker w = {.o = opts, .on_file = on_file, .on_skip = on_skip, .user = user};
    enum sd_status r = SD_OK;
    // Find the enclosing repository: its info/exclude and the .gitignore files above root apply too.
    size_t al = strlen(abs);
    char *buf = malloc(al + 32);
    if (!buf) {
        free(abs);
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    }
    size_t repo_len = 0;
    for (size_t l = al;;) {
        memcpy(buf, abs, l);
        strcpy(buf + l, "/.git");
        struct stat gs;
        if (stat(buf, &gs) == 0) {
            repo_len = l ? l : 1;
            break;
        }
        while (l > 0 && abs[l - 1] != '/')
            l--;
        if (l <= 1)
            break;
        l--; // drop the slash
    }
    if (repo_len) {
        memcpy(buf, abs, repo_len);
        buf[repo_len] = 0;
        char *base = strdup(buf);
        strcpy(buf + repo_len, "/.git/info/exclude");
        if (!base || ignore_push(&w, buf, base)) {
            free(base);
            r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        // .gitignore files from the repository root down to root's parent
        for (size_t l = repo_len; l < al;) {
            memcpy(buf, abs, l);
            strcpy(buf + l, "/.gitignore");
            buf[l] = 0;
            char *b = strdup(buf);
            buf[l] = '/';
            if (!b || ignore_push(&w, buf, b)) {
                free(b);
                r = sd_err_set(err, SD_ERR_NOMEM, "out of memory");
                goto out;
            }
            free(b);
            l++;
            while (l < al && abs[l] != '/')
                l++;
        }
        free(base);
    }
    seen_dir(&w, &st);
    walk_dir(&w, abs, 0);
out:
    while (w.n_ig)
        ignore_pop(&w);
    free(w.ig);
    free(w.seen);
    free(buf);
    free(abs);
    return r;
}
