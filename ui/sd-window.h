// sd-window.h: the main window: header bar, the library sidebar (documents, code folders, ingestion in
// progress and failed files, conversations), the chat pane, and the viewer (PDF page or source file)
// that citations open. Files come in through one path: the file chooser, drag and drop and the tests
// all call sd_window_add_files().
#pragma once

#include <adwaita.h>

#include "sd-chat-view.h"
#include "sd-pdf-view.h"
#include "sd-service.h"
#include "sd-source-view.h"

G_BEGIN_DECLS

#define SD_TYPE_WINDOW (sd_window_get_type())
G_DECLARE_FINAL_TYPE(SdWindow, sd_window, SD, WINDOW, AdwApplicationWindow)

SdWindow *sd_window_new(GtkApplication *app, SdService *service);

// Ingest files and folders (one job per item, each with its progress row). password may be NULL.
void sd_window_add_files(SdWindow *self, GFile *const *files, guint n, const char *password);
void sd_window_refresh(SdWindow *self); // reload the library and conversations
void sd_window_show_toast(SdWindow *self, const char *text);

// Open a citation in the viewer (what clicking one does).
void sd_window_open_citation(SdWindow *self, const struct sd_qa_citation *c, const char *quote);

// For tests (and the window's own bookkeeping).
SdChatView *sd_window_get_chat(SdWindow *self);
SdPdfView *sd_window_get_pdf_view(SdWindow *self);
SdSourceView *sd_window_get_source_view(SdWindow *self);
const char *sd_window_get_viewer_mode(SdWindow *self); // NULL (hidden), "pdf" or "source"
guint sd_window_get_n_jobs(SdWindow *self);            // ingest jobs running
gboolean sd_window_is_refreshing(SdWindow *self);      // a library reload is in flight
GPtrArray *sd_window_get_docs(SdWindow *self);         // SdDocInfo of the last reload (borrowed)
guint sd_window_get_n_conversations(SdWindow *self);
guint sd_window_get_n_errors(SdWindow *self);                      // failed-file rows shown
GtkWidget *sd_window_get_job_stop_button(SdWindow *self, guint i); // Stop of the i-th running ingest job
const char *sd_window_get_error(SdWindow *self, guint i);
GtkWidget *sd_window_get_error_password_button(SdWindow *self, guint i); // NULL unless encrypted
void sd_window_select_docs(SdWindow *self, const gint64 *ids, guint n);  // scope; n 0: all documents
const char *sd_window_get_banner(SdWindow *self);                        // the model problem shown, NULL if none
const char *sd_window_get_last_message(SdWindow *self);                  // the last toast's text, NULL if none

G_END_DECLS
