// sd-service.h: the GTK app's bridge to the app/ service layer. One worker thread owns the sd_qa
// (model, store, KV cache) and runs ingest, ask and conversation jobs in order; results come back as
// GAsyncResults on the main context and streamed pieces (answer text, progress, ingest events) are
// marshalled to the main loop with g_main_context_invoke. Quick reads of the library and the cache run
// on GLib's thread pool with their own store connections, so they never wait behind a long answer.
#pragma once

#include <gio/gio.h>

#include "library.h"
#include "qa.h"
#include "settings.h"

G_BEGIN_DECLS

#define SD_UI_ERROR (sd_ui_error_quark())
GQuark sd_ui_error_quark(void); // codes are enum sd_status values

// A service message for the window (g_free): without a leading "path: " (the row names the file)
// and without the command-line hints (--password, --model ...) written for the CLI.
char *sd_ui_message(const char *path, const char *msg);

#define SD_TYPE_SERVICE (sd_service_get_type())
G_DECLARE_FINAL_TYPE(SdService, sd_service, SD, SERVICE, GObject)

SdService *sd_service_new(const struct sd_settings *settings);
// New settings: the worker reopens the model before its next job.
void sd_service_set_settings(SdService *self, const struct sd_settings *settings);
// Whether the last attempt to open the model failed, and why (NULL: fine or not tried yet). Main thread.
const char *sd_service_get_model_error(SdService *self);

// Callbacks on the main thread while a job runs. user is the job's `target` object.
typedef void (*SdIngestEventFn)(GObject *target, const struct sd_ingest_event *ev);
typedef void (*SdTextFn)(GObject *target, const char *text);
typedef void (*SdProgressFn)(GObject *target, const char *stage, gint64 done, gint64 total);

// Ingest paths (files or folders). Without a usable model the files are still ingested (tokens uncounted).
void sd_service_ingest_async(SdService *self, const char *const *paths, const char *password, GObject *target,
                             SdIngestEventFn on_event, GCancellable *cancellable, GAsyncReadyCallback cb,
                             gpointer user_data);
gboolean sd_service_ingest_finish(SdService *self, GAsyncResult *res, struct sd_ingest_stats *stats, GError **error);

// Ask a question over doc_ids (n 0: all documents) in conversation conv_id (0: start a new one).
void sd_service_ask_async(SdService *self, const gint64 *doc_ids, gsize n, const char *question, gint64 conv_id,
                          int max_new_tokens, GObject *target, SdTextFn on_text, SdProgressFn on_progress,
                          GCancellable *cancellable, GAsyncReadyCallback cb, gpointer user_data);
// The result (free with sd_service_result_free) or NULL with error. A cancelled answer is returned as
// an error G_IO_ERROR_CANCELLED, and *partial (may be NULL) receives the result so far (free it).
struct sd_qa_result *sd_service_ask_finish(SdService *self, GAsyncResult *res, struct sd_qa_result **partial,
                                           GError **error);
void sd_service_result_free(struct sd_qa_result *r);

// A conversation as listed / loaded.
typedef struct {
    gint64 id;
    char *title;
    gint64 updated_ms;
    int n_turns;
} SdConversationInfo;
void sd_service_conversations_async(SdService *self, GCancellable *c, GAsyncReadyCallback cb, gpointer user_data);
GPtrArray *sd_service_conversations_finish(SdService *self, GAsyncResult *res, GError **error); // of SdConversationInfo

typedef struct {
    gint64 id;
    GArray *doc_ids;  // gint64
    GPtrArray *turns; // char* pairs: question, answer, question, answer...
} SdConversation;
void sd_service_conversation_load_async(SdService *self, gint64 id, GCancellable *c, GAsyncReadyCallback cb,
                                        gpointer user_data);
SdConversation *sd_service_conversation_load_finish(SdService *self, GAsyncResult *res, GError **error);
void sd_conversation_free(SdConversation *c);

// Library documents (copies of struct sd_library_doc).
typedef struct {
    gint64 id;
    char *path, *root, *kind, *title, *state_msg;
    gint64 size, n_pages, n_lines, n_chars, n_tokens;
    enum sd_library_state state;
} SdDocInfo;
void sd_service_docs_async(SdService *self, GCancellable *c, GAsyncReadyCallback cb, gpointer user_data);
GPtrArray *sd_service_docs_finish(SdService *self, GAsyncResult *res, GError **error); // of SdDocInfo

// Remove a document (doc_id > 0) or every document of a folder (root).
void sd_service_remove_async(SdService *self, gint64 doc_id, const char *root, GAsyncReadyCallback cb,
                             gpointer user_data);
gboolean sd_service_remove_finish(SdService *self, GAsyncResult *res, GError **error);

// Text of a cited page / line range (for highlighting).
void sd_service_source_text_async(SdService *self, gint64 doc_id, int page_no, int line_start, int line_end,
                                  GCancellable *c, GAsyncReadyCallback cb, gpointer user_data);
char *sd_service_source_text_finish(SdService *self, GAsyncResult *res, GError **error);
// Where text stands on page page_no of a document read by OCR (sd_library_ocr_boxes): a GArray of doubles,
// 4 per word box (x0, y0, x1, y1 in PDF points from the top left); empty when nothing matches.
void sd_service_ocr_boxes_async(SdService *self, gint64 doc_id, int page_no, const char *text, GCancellable *c,
                                GAsyncReadyCallback cb, gpointer user_data);
GArray *sd_service_ocr_boxes_finish(SdService *self, GAsyncResult *res, GError **error);

// KV cache statistics and clearing.
typedef struct {
    struct sd_kvcache_stats st;
    char *path;
} SdCacheInfo;
void sd_service_cache_stats_async(SdService *self, GAsyncReadyCallback cb, gpointer user_data);
SdCacheInfo *sd_service_cache_stats_finish(SdService *self, GAsyncResult *res, GError **error);
void sd_cache_info_free(SdCacheInfo *c);
void sd_service_cache_clear_async(SdService *self, GAsyncReadyCallback cb, gpointer user_data);
int sd_service_cache_clear_finish(SdService *self, GAsyncResult *res, GError **error); // -1 on error

G_END_DECLS
