// sd-source-view.c: source viewer on GtkSourceView 5 (see sd-source-view.h); its widgets are the
// composite template sd-source-view.ui.
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-source-view.h"

#include <adwaita.h>
#include <gtksourceview/gtksource.h>

struct _SdSourceView {
    GtkWidget parent_instance;
    GtkWidget *scroller, *view;
    GtkSourceBuffer *buffer;
    GtkTextTag *cited;
    GCancellable *loading;
    char *path;
    int line_start, line_end;
    gboolean loaded;
};

G_DEFINE_FINAL_TYPE(SdSourceView, sd_source_view, GTK_TYPE_WIDGET)

enum { SIG_LOADED, N_SIGNALS };
static guint signals[N_SIGNALS];

static void update_scheme(SdSourceView *self)
{
    GtkSourceStyleSchemeManager *m = gtk_source_style_scheme_manager_get_default();
    gboolean dark = adw_style_manager_get_dark(adw_style_manager_get_default());
    GtkSourceStyleScheme *s = gtk_source_style_scheme_manager_get_scheme(m, dark ? "Adwaita-dark" : "Adwaita");
    if (s)
        gtk_source_buffer_set_style_scheme(self->buffer, s);
}

static gboolean scroll_to_line(gpointer data)
{
    SdSourceView *self = data;
    if (!self->buffer) { // disposed meanwhile
        g_object_unref(self);
        return G_SOURCE_REMOVE;
    }
    GtkTextIter it;
    gtk_text_buffer_get_iter_at_line(GTK_TEXT_BUFFER(self->buffer), &it, MAX(0, self->line_start - 1));
    gtk_text_view_scroll_to_iter(GTK_TEXT_VIEW(self->view), &it, 0.0, TRUE, 0.0, 0.3);
    g_object_unref(self);
    return G_SOURCE_REMOVE;
}

static void loaded(GObject *src, GAsyncResult *res, gpointer data)
{
    SdSourceView *self = data;
    GError *error = NULL;
    gboolean ok = gtk_source_file_loader_load_finish(GTK_SOURCE_FILE_LOADER(src), res, &error);
    if (!self->buffer) { // disposed meanwhile
        g_clear_error(&error);
        g_object_unref(self);
        return;
    }
    if (!ok) {
        if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
            gtk_text_buffer_set_text(GTK_TEXT_BUFFER(self->buffer), error->message, -1);
            g_signal_emit(self, signals[SIG_LOADED], 0, error);
        }
        g_error_free(error);
        g_object_unref(self);
        return;
    }
    g_clear_object(&self->loading);
    self->loaded = TRUE;
    GtkSourceLanguageManager *lm = gtk_source_language_manager_get_default();
    GtkSourceLanguage *lang = gtk_source_language_manager_guess_language(lm, self->path, NULL);
    gtk_source_buffer_set_language(self->buffer, lang);
    GtkTextBuffer *b = GTK_TEXT_BUFFER(self->buffer);
    GtkTextIter a, z;
    gtk_text_buffer_get_bounds(b, &a, &z);
    gtk_text_buffer_remove_tag(b, self->cited, &a, &z);
    if (self->line_start > 0) {
        gtk_text_buffer_get_iter_at_line(b, &a, self->line_start - 1);
        gtk_text_buffer_get_iter_at_line(b, &z, MAX(self->line_end, self->line_start));
        if (gtk_text_iter_get_line(&z) < MAX(self->line_end, self->line_start))
            gtk_text_buffer_get_end_iter(b, &z);
        gtk_text_buffer_apply_tag(b, self->cited, &a, &z);
        gtk_text_buffer_get_iter_at_line(b, &a, self->line_start - 1);
        gtk_text_buffer_place_cursor(b, &a);
        // Scroll once the new text has been laid out.
        g_idle_add_full(G_PRIORITY_LOW, scroll_to_line, g_object_ref(self), NULL);
    }
    g_signal_emit(self, signals[SIG_LOADED], 0, NULL);
    g_object_unref(self);
}

void sd_source_view_open(SdSourceView *self, const char *path, int line_start, int line_end)
{
    if (self->loading)
        g_cancellable_cancel(self->loading);
    g_clear_object(&self->loading);
    self->loading = g_cancellable_new();
    g_free(self->path);
    self->path = g_strdup(path);
    self->line_start = line_start;
    self->line_end = line_end > 0 ? line_end : line_start;
    self->loaded = FALSE;
    g_autoptr(GFile) f = g_file_new_for_path(path);
    g_autoptr(GtkSourceFile) sf = gtk_source_file_new();
    gtk_source_file_set_location(sf, f);
    g_autoptr(GtkSourceFileLoader) loader = gtk_source_file_loader_new(self->buffer, sf);
    gtk_source_file_loader_load_async(loader, G_PRIORITY_DEFAULT, self->loading, NULL, NULL, NULL, loaded,
                                      g_object_ref(self));
}

const char *sd_source_view_get_path(SdSourceView *self)
{
    return self->path;
}
int sd_source_view_get_line(SdSourceView *self)
{
    return self->line_start;
}
gboolean sd_source_view_is_loaded(SdSourceView *self)
{
    return self->loaded;
}

char *sd_source_view_get_line_text(SdSourceView *self, int line)
{
    GtkTextBuffer *b = GTK_TEXT_BUFFER(self->buffer);
    GtkTextIter a, z;
    if (line < 1 || line > gtk_text_buffer_get_line_count(b))
        return NULL;
    gtk_text_buffer_get_iter_at_line(b, &a, line - 1);
    z = a;
    gtk_text_iter_forward_to_line_end(&z);
    return gtk_text_buffer_get_text(b, &a, &z, FALSE);
}

static void sd_source_view_dispose(GObject *obj)
{
    SdSourceView *self = SD_SOURCE_VIEW(obj);
    if (self->loading)
        g_cancellable_cancel(self->loading);
    g_clear_object(&self->loading);
    g_clear_pointer(&self->path, g_free);
    gtk_widget_dispose_template(GTK_WIDGET(self), SD_TYPE_SOURCE_VIEW); // clears scroller, view, buffer
    G_OBJECT_CLASS(sd_source_view_parent_class)->dispose(obj);
}

static void sd_source_view_class_init(SdSourceViewClass *klass)
{
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    G_OBJECT_CLASS(klass)->dispose = sd_source_view_dispose;
    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    g_type_ensure(GTK_SOURCE_TYPE_VIEW);
    gtk_widget_class_set_template_from_resource(wc, "/io/github/sparsedoc/Sparsedoc/sd-source-view.ui");
    gtk_widget_class_bind_template_child(wc, SdSourceView, scroller);
    gtk_widget_class_bind_template_child(wc, SdSourceView, view);
    gtk_widget_class_bind_template_child(wc, SdSourceView, buffer);
    signals[SIG_LOADED] = g_signal_new("loaded", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                       G_TYPE_NONE, 1, G_TYPE_ERROR);
}

static void sd_source_view_init(SdSourceView *self)
{
    gtk_widget_init_template(GTK_WIDGET(self));
    self->cited = gtk_text_buffer_create_tag(GTK_TEXT_BUFFER(self->buffer), "cited", "paragraph-background",
                                             "rgba(246,211,45,0.35)", NULL);
    update_scheme(self);
    g_signal_connect_object(adw_style_manager_get_default(), "notify::dark", G_CALLBACK(update_scheme), self,
                            G_CONNECT_SWAPPED);
}

GtkWidget *sd_source_view_new(void)
{
    return g_object_new(SD_TYPE_SOURCE_VIEW, NULL);
}
