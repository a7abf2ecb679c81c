// sd-source-view.h: a read-only source file viewer (GtkSourceView 5): syntax highlighting guessed from
// the file name, line numbers, the cited line range highlighted and scrolled into view. Files load
// asynchronously (GtkSourceFileLoader).
#pragma once

#include <gtk/gtk.h>

G_BEGIN_DECLS

#define SD_TYPE_SOURCE_VIEW (sd_source_view_get_type())
G_DECLARE_FINAL_TYPE(SdSourceView, sd_source_view, SD, SOURCE_VIEW, GtkWidget)

GtkWidget *sd_source_view_new(void);
// Load path and highlight lines [line_start, line_end] (1-based; line_end 0: line_start). Emits
// "loaded" (with a GError or NULL) when done.
void sd_source_view_open(SdSourceView *self, const char *path, int line_start, int line_end);
const char *sd_source_view_get_path(SdSourceView *self);
int sd_source_view_get_line(SdSourceView *self);                  // line_start of the last open; 0 if none
gboolean sd_source_view_is_loaded(SdSourceView *self);            // the last open finished successfully
char *sd_source_view_get_line_text(SdSourceView *self, int line); // a line of the buffer (g_free)

G_END_DECLS
