// sd-chat-view.h: the chat pane. One page per scope (a set of documents, or all of them), each holding
// its conversation: questions, answers streamed piece by piece from the service's worker thread,
// clickable citations, a per-answer cache line (tokens reused vs prefilled, time to first token), and
// a clear message when an answer fails or is stopped. Send / Stop never block the main loop.
#pragma once

#include <gtk/gtk.h>

#include "sd-service.h"

G_BEGIN_DECLS

#define SD_TYPE_CHAT_VIEW (sd_chat_view_get_type())
G_DECLARE_FINAL_TYPE(SdChatView, sd_chat_view, SD, CHAT_VIEW, GtkWidget)

GtkWidget *sd_chat_view_new(SdService *service);
// The service answers go through (a reference is kept); set once, before the first question (the
// window sets it on the chat view of its template).
void sd_chat_view_set_service(SdChatView *self, SdService *service);
// Show the page of this scope (doc_ids may be NULL with n 0: all documents); label names it.
void sd_chat_view_set_scope(SdChatView *self, const gint64 *doc_ids, gsize n, const char *label);
// Show a saved conversation (its own page); further questions continue it.
void sd_chat_view_show_conversation(SdChatView *self, SdConversation *conv, const char *label);
void sd_chat_view_ask(SdChatView *self, const char *question);
void sd_chat_view_stop(SdChatView *self);
// With an empty library the entry says to add documents and Ask stays insensitive.
void sd_chat_view_set_library_empty(SdChatView *self, gboolean empty);
gboolean sd_chat_view_is_running(SdChatView *self);
void sd_chat_view_set_max_tokens(SdChatView *self, int max_new_tokens);
void sd_chat_view_focus_entry(SdChatView *self);

// Called when a citation is clicked. quote: the answer text the citation backs (may be "").
typedef void (*SdCitationFn)(gpointer user, const struct sd_qa_citation *c, const char *quote);
void sd_chat_view_set_citation_handler(SdChatView *self, SdCitationFn fn, gpointer user);
// Called on the main thread when an answer finished (ok, failed or stopped).
typedef void (*SdAnswerDoneFn)(gpointer user, gboolean ok);
void sd_chat_view_set_done_handler(SdChatView *self, SdAnswerDoneFn fn, gpointer user);

// For tests and the window: the last answer on the visible page.
const char *sd_chat_view_last_answer(SdChatView *self); // text so far
guint sd_chat_view_last_n_pieces(SdChatView *self);     // streamed pieces received
const char *sd_chat_view_last_status(SdChatView *self); // cache line, or the error / stop message
guint sd_chat_view_last_n_citations(SdChatView *self);  // citation buttons
GtkWidget *sd_chat_view_last_citation_button(SdChatView *self, guint i);
const struct sd_qa_citation *sd_chat_view_last_citation(SdChatView *self, guint i);
GtkWidget *sd_chat_view_get_stop_button(SdChatView *self);
const char *sd_chat_view_get_stage(SdChatView *self); // last progress stage of the running answer, or NULL

G_END_DECLS
