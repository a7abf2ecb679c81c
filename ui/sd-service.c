// sd-service.c: the worker thread that owns the sd_qa, and thread-pool jobs for quick reads (see sd-service.h).
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-service.h"

#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK(sd - ui - error - quark, sd_ui_error)

struct _SdService {
    GObject parent_instance;
    GThreadPool *worker; // max 1 thread: jobs that use the sd_qa run in order
    GThread *worker_thread;
    GMutex lock; // guards settings, settings_serial, model_error
    struct sd_settings settings;
    guint settings_serial;
    char *model_error;
    // Worker-thread state (touched only by the worker, or in finalize after it stopped):
    struct sd_qa *qa;
    guint qa_serial;
    struct sd_library *lib;
};

G_DEFINE_FINAL_TYPE(SdService, sd_service, G_TYPE_OBJECT)

// Out of memory: the copy holds no strings (the defaults: shipped model, cpu, English OCR).
static void settings_copy(struct sd_settings *dst, const struct sd_settings *src)
{
    if (sd_settings_copy(dst, src) != SD_OK)
        g_warning("out of memory copying the settings");
}

static GError *error_from(const struct sd_err *e)
{
    return g_error_new_literal(SD_UI_ERROR, (int)e->status, e->msg[0] ? e->msg : sd_status_str(e->status));
}

// Messages from the service are written for the CLI too: drop the path the row already names and the
// command-line hints (the window offers its own way: a password button, the preferences).
char *sd_ui_message(const char *path, const char *msg)
{
    if (!msg)
        return g_strdup("");
    if (path && g_str_has_prefix(msg, path) && !strncmp(msg + strlen(path), ": ", 2))
        msg += strlen(path) + 2;
    char *m = g_strdup(msg);
    static const char *const hints[] = {"; supply the password with --password", "; pass --", "; ingest some with",
                                        " (pass --", ", or run 'sparsedoc"};
    for (size_t i = 0; i < G_N_ELEMENTS(hints); i++) {
        char *h = strstr(m, hints[i]);
        if (h)
            *h = 0;
    }
    char *flag = strstr(m, " (--model)");
    if (flag)
        memmove(flag, flag + 10, strlen(flag + 10) + 1);
    return m;
}

// ---- jobs ----

typedef void (*JobFn)(GTask *task, SdService *self, gpointer job);

typedef struct {
    JobFn run;                // on the worker thread, or
    GTaskThreadFunc pool_run; // on GLib's thread pool
    GObject *target;
    GMainContext *ctx;
    // ingest
    char **paths;
    char *password;
    SdIngestEventFn on_event;
    volatile int cancel_flag;
    struct sd_ingest_stats stats;
    // ask
    gint64 *doc_ids;
    gsize n_docs;
    char *question;
    gint64 conv_id;
    int max_new_tokens;
    SdTextFn on_text;
    SdProgressFn on_progress;
    int piece_delay_ms; // test hook, see sd_service_ask_async
    char *last_stage;
    gint64 last_done;
    struct sd_qa_result *partial;
    // remove / source text
    gint64 doc_id;
    char *root;
    int page_no, line_start, line_end;
} Job;

static void job_free(gpointer p)
{
    Job *j = p;
    g_clear_object(&j->target);
    if (j->ctx)
        g_main_context_unref(j->ctx);
    g_strfreev(j->paths);
    g_free(j->password);
    g_free(j->doc_ids);
    g_free(j->question);
    g_free(j->last_stage);
    g_free(j->root);
    sd_service_result_free(j->partial);
    g_free(j);
}

static Job *job_new(JobFn run, GObject *target)
{
    Job *j = g_new0(Job, 1);
    j->run = run;
    j->target = target ? g_object_ref(target) : NULL;
    j->ctx = g_main_context_ref_thread_default();
    return j;
}

static void worker_func(gpointer data, gpointer user_data)
{
    GTask *task = data;
    Job *j = g_task_get_task_data(task);
    ((SdService *)user_data)->worker_thread = g_thread_self();
    j->run(task, user_data, j);
    g_object_unref(task);
}

static GTask *push(SdService *self, Job *j, GCancellable *c, GAsyncReadyCallback cb, gpointer user_data, gpointer tag)
{
    GTask *task = g_task_new(self, c, cb, user_data);
    g_task_set_source_tag(task, tag);
    g_task_set_task_data(task, j, job_free);
    g_task_set_check_cancellable(task, FALSE);
    if (j->pool_run)
        g_task_run_in_thread(task, j->pool_run);
    else
        g_thread_pool_push(self->worker, g_object_ref(task), NULL);
    return task;
}

// Thread-pool jobs get (task, source, task_data, cancellable); adapt to JobFn.
#define POOL_JOB(name)                                                                                                 \
    static void name##_body(GTask *task, SdService *self, Job *j);                                                     \
    static void name(GTask *task, gpointer source, gpointer data, GCancellable *c)                                     \
    {                                                                                                                  \
        (void)c;                                                                                                       \
        name##_body(task, source, data);                                                                               \
    }                                                                                                                  \
    static void name##_body(GTask *task, SdService *self, Job *j)

// ---- marshalling to the main loop ----

enum { CALL_TEXT, CALL_PROGRESS, CALL_INGEST };

typedef struct {
    int kind;
    Job *job; // borrowed: the task holds the job until it returns, and returns after these calls are queued
    GObject *target;
    char *text;
    gint64 done, total;
    struct sd_ingest_event ev;
    char *path, *msg;
} Call;

static gboolean call_run(gpointer p)
{
    Call *c = p;
    switch (c->kind) {
    case CALL_TEXT:
        c->job->on_text(c->target, c->text);
        break;
    case CALL_PROGRESS:
        c->job->on_progress(c->target, c->text, c->done, c->total);
        break;
    case CALL_INGEST:
        c->ev.path = c->path;
        c->ev.msg = c->msg;
        c->job->on_event(c->target, &c->ev);
        break;
    }
    return G_SOURCE_REMOVE;
}

// A queued call holds a reference on its task, so the job it points to outlives it.
typedef struct {
    Call call;
    GTask *task;
} TaskCall;

static void task_call_free(gpointer p)
{
    TaskCall *tc = p;
    g_clear_object(&tc->task);
    g_clear_object(&tc->call.target);
    g_free(tc->call.text);
    g_free(tc->call.path);
    g_free(tc->call.msg);
    g_free(tc);
}

static gboolean task_call_run(gpointer p)
{
    return call_run(&((TaskCall *)p)->call);
}

static void invoke(GTask *task, Call c)
{
    Job *j = g_task_get_task_data(task);
    TaskCall *tc = g_new0(TaskCall, 1);
    tc->call = c;
    tc->call.job = j;
    tc->call.target = j->target ? g_object_ref(j->target) : NULL;
    tc->task = g_object_ref(task);
    g_main_context_invoke_full(j->ctx, G_PRIORITY_DEFAULT, task_call_run, tc, task_call_free);
}

// ---- worker: the sd_qa ----

static struct sd_qa *ensure_qa(SdService *self, GError **error)
{
    g_mutex_lock(&self->lock);
    guint serial = self->settings_serial;
    struct sd_settings s;
    settings_copy(&s, &self->settings);
    g_mutex_unlock(&self->lock);
    if (self->qa && self->qa_serial == serial) {
        sd_settings_clear(&s);
        return self->qa;
    }
    if (self->qa) {
        sd_qa_close(self->qa);
        self->qa = NULL;
    }
    struct sd_qa_opts o = {0};
    sd_settings_to_qa_opts(&s, &o);
    struct sd_err err = {0};
    enum sd_status st = sd_qa_open(&o, &self->qa, &err);
    g_mutex_lock(&self->lock);
    g_clear_pointer(&self->model_error, g_free);
    if (st)
        self->model_error = g_strdup(err.msg[0] ? err.msg : sd_status_str(st));
    g_mutex_unlock(&self->lock);
    sd_settings_clear(&s);
    if (st) {
        self->qa = NULL;
        if (error)
            *error = error_from(&err);
        return NULL;
    }
    self->qa_serial = serial;
    return self->qa;
}

static struct sd_library *ensure_lib(SdService *self, GError **error)
{
    if (self->lib)
        return self->lib;
    struct sd_err err = {0};
    if (sd_library_open(NULL, &self->lib, &err)) {
        *error = error_from(&err);
        return NULL;
    }
    return self->lib;
}

// ---- ingest ----

static void on_ingest_event(void *user, const struct sd_ingest_event *ev)
{
    GTask *task = user;
    Job *j = g_task_get_task_data(task);
    if (!j->on_event)
        return;
    if (ev->kind == SD_INGEST_PAGE && !ev->ocr && ev->page % 10 && ev->page + 1 < ev->n_pages)
        return; // text pages go by fast: every tenth is passed on
    Call c = {.kind = CALL_INGEST, .ev = *ev, .path = g_strdup(ev->path), .msg = g_strdup(ev->msg)};
    invoke(task, c);
}

static int should_cancel(void *user)
{
    GTask *task = user;
    GCancellable *c = g_task_get_cancellable(task);
    return c && g_cancellable_is_cancelled(c);
}

static void on_ingest_cancelled(GCancellable *c, gpointer data)
{
    (void)c;
    ((Job *)data)->cancel_flag = 1; // read by sd_ingest between files
}

// Ingestion goes through the library (data/ingest.h) rather than sd_qa_ingest so that it can be
// cancelled; tokens are counted with the model's tokenizer when a model is loaded.
static void ingest_run(GTask *task, SdService *self, gpointer data)
{
    Job *j = data;
    GError *error = NULL;
    struct sd_err err = {0};
    struct sd_qa *qa = ensure_qa(self, NULL);
    struct sd_library *lib = ensure_lib(self, &error);
    if (!lib) {
        g_task_return_error(task, error);
        return;
    }
    g_mutex_lock(&self->lock);
    int no_ocr = self->settings.no_ocr;
    char *ocr_lang = g_strdup(self->settings.ocr_lang);
    g_mutex_unlock(&self->lock);
    enum sd_status ost = sd_library_set_ocr(lib, no_ocr, ocr_lang, &err);
    g_free(ocr_lang);
    if (ost) {
        g_task_return_error(task, error_from(&err));
        return;
    }
    GCancellable *c = g_task_get_cancellable(task);
    gulong id = c ? g_cancellable_connect(c, G_CALLBACK(on_ingest_cancelled), j, NULL) : 0;
    const struct sd_tokenizer *tok = qa ? sd_qa_tokenizer(qa) : NULL;
    enum sd_status st =
        sd_library_ingest(lib, j->paths, g_strv_length(j->paths), j->password, tok ? sd_tokenizer_count_cb : NULL,
                          (void *)tok, on_ingest_event, task, &j->cancel_flag, &j->stats, &err);
    if (c)
        g_cancellable_disconnect(c, id);
    if (st)
        g_task_return_error(task, error_from(&err));
    else
        g_task_return_boolean(task, TRUE);
}

void sd_service_ingest_async(SdService *self, const char *const *paths, const char *password, GObject *target,
                             SdIngestEventFn on_event, GCancellable *cancellable, GAsyncReadyCallback cb,
                             gpointer user_data)
{
    Job *j = job_new(ingest_run, target);
    j->paths = g_strdupv((char **)paths);
    j->password = g_strdup(password);
    j->on_event = on_event;
    g_object_unref(push(self, j, cancellable, cb, user_data, sd_service_ingest_async));
}

gboolean sd_service_ingest_finish(SdService *self, GAsyncResult *res, struct sd_ingest_stats *stats, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), FALSE);
    Job *j = g_task_get_task_data(G_TASK(res));
    if (stats)
        *stats = j->stats;
    return g_task_propagate_boolean(G_TASK(res), error);
}

// ---- ask ----

static void on_text(void *user, const char *text, size_t len)
{
    GTask *task = user;
    Job *j = g_task_get_task_data(task);
    if (j->on_text && len)
        invoke(task, (Call){.kind = CALL_TEXT, .text = g_strndup(text, len)});
    if (j->piece_delay_ms > 0)
        g_usleep((gulong)j->piece_delay_ms * 1000);
}

static void on_progress(void *user, const char *stage, int64_t done, int64_t total)
{
    GTask *task = user;
    Job *j = g_task_get_task_data(task);
    if (!j->on_progress)
        return;
    // Forward a stage change, its end, and about 100 steps in between.
    gboolean changed = !j->last_stage || strcmp(j->last_stage, stage);
    gint64 step = total > 100 ? total / 100 : 1;
    if (!changed && done != total && done - j->last_done < step)
        return;
    if (changed) {
        g_free(j->last_stage);
        j->last_stage = g_strdup(stage);
    }
    j->last_done = done;
    invoke(task, (Call){.kind = CALL_PROGRESS, .text = g_strdup(stage), .done = done, .total = total});
}

static void ask_run(GTask *task, SdService *self, gpointer data)
{
    Job *j = data;
    GError *error = NULL;
    struct sd_err err = {0};
    struct sd_qa *qa = ensure_qa(self, &error);
    if (!qa) {
        g_task_return_error(task, error);
        return;
    }
    struct sd_qa_scope scope = {.doc_ids = (const int64_t *)j->doc_ids, .n_docs = j->n_docs};
    if (j->conv_id == 0) {
        char *title = g_utf8_substring(j->question, 0, MIN(g_utf8_strlen(j->question, -1), 60));
        int64_t id = 0;
        enum sd_status st = sd_qa_conversation_new(qa, &scope, title, &id, &err);
        g_free(title);
        if (st) {
            g_task_return_error(task, error_from(&err));
            return;
        }
        j->conv_id = id;
    }
    struct sd_qa_ask_opts ao = {.max_new_tokens = j->max_new_tokens, .conversation_id = j->conv_id};
    struct sd_qa_events ev = {
        .user = task, .on_text = on_text, .on_progress = on_progress, .should_cancel = should_cancel};
    struct sd_qa_result *r = g_new0(struct sd_qa_result, 1);
    enum sd_status st = sd_qa_ask(qa, &scope, j->question, &ao, &ev, r, &err);
    if (!r->conversation_id)
        r->conversation_id = j->conv_id;
    if (st && should_cancel(task)) {
        j->partial = r;
        g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "stopped");
    } else if (st) {
        sd_service_result_free(r);
        g_task_return_error(task, error_from(&err));
    } else {
        g_task_return_pointer(task, r, (GDestroyNotify)sd_service_result_free);
    }
}

void sd_service_ask_async(SdService *self, const gint64 *doc_ids, gsize n, const char *question, gint64 conv_id,
                          int max_new_tokens, GObject *target, SdTextFn on_text_fn, SdProgressFn on_progress_fn,
                          GCancellable *cancellable, GAsyncReadyCallback cb, gpointer user_data)
{
    Job *j = job_new(ask_run, target);
    j->doc_ids = n ? g_memdup2(doc_ids, n * sizeof *doc_ids) : NULL;
    j->n_docs = n;
    j->question = g_strdup(question);
    j->conv_id = conv_id;
    j->max_new_tokens = max_new_tokens;
    j->on_text = on_text_fn;
    j->on_progress = on_progress_fn;
    // Test hook: SPARSEDOC_TEST_PIECE_DELAY_MS holds the worker that long after each streamed piece, so
    // that a test can press Stop while an answer streams however soon the model would end it. Read here,
    // on the calling thread, never on the worker.
    const char *delay = g_getenv("SPARSEDOC_TEST_PIECE_DELAY_MS");
    j->piece_delay_ms = delay ? CLAMP(atoi(delay), 0, 10000) : 0;
    g_object_unref(push(self, j, cancellable, cb, user_data, sd_service_ask_async));
}

struct sd_qa_result *sd_service_ask_finish(SdService *self, GAsyncResult *res, struct sd_qa_result **partial,
                                           GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), NULL);
    Job *j = g_task_get_task_data(G_TASK(res));
    if (partial) {
        *partial = j->partial;
        j->partial = NULL;
    }
    return g_task_propagate_pointer(G_TASK(res), error);
}

void sd_service_result_free(struct sd_qa_result *r)
{
    if (!r)
        return;
    sd_qa_result_free(r);
    g_free(r);
}

// ---- conversations ----

static int conv_add(void *user, const struct sd_qa_conversation *c)
{
    SdConversationInfo *ci = g_new0(SdConversationInfo, 1);
    ci->id = c->id;
    ci->title = g_strdup(c->title ? c->title : "");
    ci->updated_ms = c->updated_ms;
    ci->n_turns = c->n_turns;
    g_ptr_array_add(user, ci);
    return 0;
}

static void conv_info_free(gpointer p)
{
    SdConversationInfo *ci = p;
    g_free(ci->title);
    g_free(ci);
}

static void conversations_run(GTask *task, SdService *self, gpointer data)
{
    (void)data;
    GError *error = NULL;
    struct sd_err err = {0};
    struct sd_qa *qa = ensure_qa(self, &error);
    if (!qa) {
        g_task_return_error(task, error);
        return;
    }
    GPtrArray *a = g_ptr_array_new_with_free_func(conv_info_free);
    if (sd_qa_conversations_foreach(qa, conv_add, a, &err)) {
        g_ptr_array_unref(a);
        g_task_return_error(task, error_from(&err));
        return;
    }
    g_task_return_pointer(task, a, (GDestroyNotify)g_ptr_array_unref);
}

void sd_service_conversations_async(SdService *self, GCancellable *c, GAsyncReadyCallback cb, gpointer user_data)
{
    g_object_unref(push(self, job_new(conversations_run, NULL), c, cb, user_data, sd_service_conversations_async));
}

GPtrArray *sd_service_conversations_finish(SdService *self, GAsyncResult *res, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), NULL);
    return g_task_propagate_pointer(G_TASK(res), error);
}

static int turn_add(void *user, const struct sd_qa_turn *t)
{
    SdConversation *c = user;
    g_ptr_array_add(c->turns, g_strdup(t->question ? t->question : ""));
    g_ptr_array_add(c->turns, g_strdup(t->answer ? t->answer : ""));
    return 0;
}

void sd_conversation_free(SdConversation *c)
{
    if (!c)
        return;
    g_array_unref(c->doc_ids);
    g_ptr_array_unref(c->turns);
    g_free(c);
}

static void conversation_load_run(GTask *task, SdService *self, gpointer data)
{
    Job *j = data;
    GError *error = NULL;
    struct sd_err err = {0};
    struct sd_qa *qa = ensure_qa(self, &error);
    if (!qa) {
        g_task_return_error(task, error);
        return;
    }
    SdConversation *c = g_new0(SdConversation, 1);
    c->id = j->conv_id;
    c->doc_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    c->turns = g_ptr_array_new_with_free_func(g_free);
    int64_t *ids = NULL;
    size_t n = 0;
    if (sd_qa_conversation_load(qa, j->conv_id, &ids, &n, turn_add, c, &err)) {
        sd_conversation_free(c);
        g_task_return_error(task, error_from(&err));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        gint64 v = ids[i];
        g_array_append_val(c->doc_ids, v);
    }
    free(ids);
    g_task_return_pointer(task, c, (GDestroyNotify)sd_conversation_free);
}

void sd_service_conversation_load_async(SdService *self, gint64 id, GCancellable *c, GAsyncReadyCallback cb,
                                        gpointer user_data)
{
    Job *j = job_new(conversation_load_run, NULL);
    j->conv_id = id;
    g_object_unref(push(self, j, c, cb, user_data, sd_service_conversation_load_async));
}

SdConversation *sd_service_conversation_load_finish(SdService *self, GAsyncResult *res, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), NULL);
    return g_task_propagate_pointer(G_TASK(res), error);
}

// ---- library (thread pool, own connections) ----

static void doc_info_free(gpointer p)
{
    SdDocInfo *d = p;
    g_free(d->path);
    g_free(d->root);
    g_free(d->kind);
    g_free(d->title);
    g_free(d->state_msg);
    g_free(d);
}

static int doc_add(void *user, const struct sd_library_doc *d)
{
    SdDocInfo *i = g_new0(SdDocInfo, 1);
    i->id = d->id;
    i->path = g_strdup(d->path);
    i->root = g_strdup(d->root);
    i->kind = g_strdup(d->kind);
    i->title = g_strdup(d->title);
    i->state_msg = g_strdup(d->state_msg);
    i->size = d->size;
    i->n_pages = d->n_pages;
    i->n_lines = d->n_lines;
    i->n_chars = d->n_chars;
    i->n_tokens = d->n_tokens;
    i->state = d->state;
    g_ptr_array_add(user, i);
    return 0;
}

POOL_JOB(docs_run)
{
    (void)self;
    (void)j;
    struct sd_err err = {0};
    struct sd_library *lib = NULL;
    GPtrArray *a = g_ptr_array_new_with_free_func(doc_info_free);
    if (sd_library_open(NULL, &lib, &err) || sd_library_docs(lib, doc_add, a, &err)) {
        g_ptr_array_unref(a);
        g_task_return_error(task, error_from(&err));
    } else {
        g_task_return_pointer(task, a, (GDestroyNotify)g_ptr_array_unref);
    }
    sd_library_close(lib);
}

void sd_service_docs_async(SdService *self, GCancellable *c, GAsyncReadyCallback cb, gpointer user_data)
{
    Job *j = job_new(NULL, NULL);
    j->pool_run = docs_run;
    g_object_unref(push(self, j, c, cb, user_data, sd_service_docs_async));
}

GPtrArray *sd_service_docs_finish(SdService *self, GAsyncResult *res, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), NULL);
    return g_task_propagate_pointer(G_TASK(res), error);
}

POOL_JOB(remove_run)
{
    (void)self;
    struct sd_err err = {0};
    struct sd_library *lib = NULL;
    enum sd_status st = sd_library_open(NULL, &lib, &err);
    if (!st)
        st = j->doc_id > 0 ? sd_library_remove(lib, j->doc_id, &err) : sd_library_remove_root(lib, j->root, NULL, &err);
    sd_library_close(lib);
    if (st)
        g_task_return_error(task, error_from(&err));
    else
        g_task_return_boolean(task, TRUE);
}

void sd_service_remove_async(SdService *self, gint64 doc_id, const char *root, GAsyncReadyCallback cb,
                             gpointer user_data)
{
    Job *j = job_new(NULL, NULL);
    j->pool_run = remove_run;
    j->doc_id = doc_id;
    j->root = g_strdup(root);
    g_object_unref(push(self, j, NULL, cb, user_data, sd_service_remove_async));
}

gboolean sd_service_remove_finish(SdService *self, GAsyncResult *res, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), FALSE);
    return g_task_propagate_boolean(G_TASK(res), error);
}

POOL_JOB(source_text_run)
{
    (void)self;
    struct sd_err err = {0};
    struct sd_library *lib = NULL;
    char *text = NULL;
    enum sd_status st = sd_library_open(NULL, &lib, &err);
    if (!st)
        st = sd_library_source_text(lib, j->doc_id, j->page_no, j->line_start, j->line_end, &text, &err);
    sd_library_close(lib);
    if (st) {
        g_task_return_error(task, error_from(&err));
        return;
    }
    char *g = g_strdup(text);
    free(text);
    g_task_return_pointer(task, g, g_free);
}

void sd_service_source_text_async(SdService *self, gint64 doc_id, int page_no, int line_start, int line_end,
                                  GCancellable *c, GAsyncReadyCallback cb, gpointer user_data)
{
    Job *j = job_new(NULL, NULL);
    j->pool_run = source_text_run;
    j->doc_id = doc_id;
    j->page_no = page_no;
    j->line_start = line_start;
    j->line_end = line_end;
    g_object_unref(push(self, j, c, cb, user_data, sd_service_source_text_async));
}

char *sd_service_source_text_finish(SdService *self, GAsyncResult *res, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), NULL);
    return g_task_propagate_pointer(G_TASK(res), error);
}

POOL_JOB(ocr_boxes_run)
{
    (void)self;
    struct sd_err err = {0};
    struct sd_library *lib = NULL;
    double *rects = NULL;
    size_t n = 0;
    enum sd_status st = sd_library_open(NULL, &lib, &err);
    if (!st)
        st = sd_library_ocr_boxes(lib, j->doc_id, j->page_no, j->question, &rects, &n, &err);
    sd_library_close(lib);
    if (st) {
        g_task_return_error(task, error_from(&err));
        return;
    }
    GArray *a = g_array_sized_new(FALSE, FALSE, sizeof(double), (guint)(4 * n));
    if (n)
        g_array_append_vals(a, rects, (guint)(4 * n));
    free(rects);
    g_task_return_pointer(task, a, (GDestroyNotify)g_array_unref);
}

void sd_service_ocr_boxes_async(SdService *self, gint64 doc_id, int page_no, const char *text, GCancellable *c,
                                GAsyncReadyCallback cb, gpointer user_data)
{
    Job *j = job_new(NULL, NULL);
    j->pool_run = ocr_boxes_run;
    j->doc_id = doc_id;
    j->page_no = page_no;
    j->question = g_strdup(text);
    g_object_unref(push(self, j, c, cb, user_data, sd_service_ocr_boxes_async));
}

GArray *sd_service_ocr_boxes_finish(SdService *self, GAsyncResult *res, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), NULL);
    return g_task_propagate_pointer(G_TASK(res), error);
}

// ---- cache ----

void sd_cache_info_free(SdCacheInfo *c)
{
    if (!c)
        return;
    free(c->path);
    g_free(c);
}

POOL_JOB(cache_stats_run)
{
    (void)j;
    struct sd_err err = {0};
    g_mutex_lock(&self->lock);
    uint64_t budget = self->settings.cache_budget;
    g_mutex_unlock(&self->lock);
    SdCacheInfo *ci = g_new0(SdCacheInfo, 1);
    if (sd_library_cache_stats(NULL, budget, &ci->st, &ci->path, &err)) {
        sd_cache_info_free(ci);
        g_task_return_error(task, error_from(&err));
    } else {
        g_task_return_pointer(task, ci, (GDestroyNotify)sd_cache_info_free);
    }
}

void sd_service_cache_stats_async(SdService *self, GAsyncReadyCallback cb, gpointer user_data)
{
    Job *j = job_new(NULL, NULL);
    j->pool_run = cache_stats_run;
    g_object_unref(push(self, j, NULL, cb, user_data, sd_service_cache_stats_async));
}

SdCacheInfo *sd_service_cache_stats_finish(SdService *self, GAsyncResult *res, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), NULL);
    return g_task_propagate_pointer(G_TASK(res), error);
}

POOL_JOB(cache_clear_run)
{
    (void)self;
    (void)j;
    struct sd_err err = {0};
    int n = 0;
    if (sd_library_cache_clear(NULL, &n, &err))
        g_task_return_error(task, error_from(&err));
    else
        g_task_return_int(task, n);
}

void sd_service_cache_clear_async(SdService *self, GAsyncReadyCallback cb, gpointer user_data)
{
    Job *j = job_new(NULL, NULL);
    j->pool_run = cache_clear_run;
    g_object_unref(push(self, j, NULL, cb, user_data, sd_service_cache_clear_async));
}

int sd_service_cache_clear_finish(SdService *self, GAsyncResult *res, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(res, self), -1);
    return (int)g_task_propagate_int(G_TASK(res), error);
}

// ---- object ----

void sd_service_set_settings(SdService *self, const struct sd_settings *settings)
{
    g_mutex_lock(&self->lock);
    sd_settings_clear(&self->settings);
    settings_copy(&self->settings, settings);
    self->settings_serial++;
    g_clear_pointer(&self->model_error, g_free);
    g_mutex_unlock(&self->lock);
}

const char *sd_service_get_model_error(SdService *self)
{
    // Only the worker writes it, under the lock; the main thread keeps a copy per read.
    static GPrivate copy = G_PRIVATE_INIT(g_free);
    g_mutex_lock(&self->lock);
    char *c = g_strdup(self->model_error);
    g_mutex_unlock(&self->lock);
    g_private_replace(&copy, c);
    return c;
}

static void sd_service_finalize(GObject *obj)
{
    SdService *self = SD_SERVICE(obj);
    // The last reference may go with a job's task on the worker thread itself: it cannot wait for itself.
    gboolean on_worker = g_thread_self() == self->worker_thread;
    g_thread_pool_free(self->worker, FALSE, !on_worker); // finish queued jobs, then stop
    if (self->qa)
        sd_qa_close(self->qa);
    sd_library_close(self->lib);
    sd_settings_clear(&self->settings);
    g_free(self->model_error);
    g_mutex_clear(&self->lock);
    G_OBJECT_CLASS(sd_service_parent_class)->finalize(obj);
}

static void sd_service_class_init(SdServiceClass *klass)
{
    G_OBJECT_CLASS(klass)->finalize = sd_service_finalize;
}

static void sd_service_init(SdService *self)
{
    g_mutex_init(&self->lock);
    self->worker = g_thread_pool_new(worker_func, self, 1, TRUE, NULL);
}

SdService *sd_service_new(const struct sd_settings *settings)
{
    SdService *self = g_object_new(SD_TYPE_SERVICE, NULL);
    sd_service_set_settings(self, settings);
    return self;
}
