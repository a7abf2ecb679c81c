// sd-window.c: the main window (see sd-window.h). Its fixed widgets are the composite template
// sd-window.ui; the rows of the library, jobs, failed files and conversations are built here. The window
// actions (win.add-files, win.add-folder, win.search, win.ask, win.refresh, win.close-viewer,
// win.clear-cache) are installed on the class, with their key bindings.
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-window.h"

#include <string.h>

struct _SdWindow {
    AdwApplicationWindow parent_instance;
    SdService *service;
    AdwWindowTitle *title;
    GtkWidget *toasts, *search_bar, *search_entry, *library, *jobs, *jobs_label, *errors, *errors_label, *convs,
        *convs_label, *chat, *viewer, *viewer_title, *viewer_stack, *pdf, *source, *banner, *banner_label, *cache_label,
        *empty_library;
    AdwToast *toast; // the one shown (owned by the overlay)
    char *last_toast;
    GPtrArray *docs; // SdDocInfo (owned)
    GPtrArray *error_rows;
    GHashTable *conv_titles; // id -> title
    guint n_jobs, viewer_serial;
    gboolean refreshing, refresh_again, selecting;
    char *viewer_mode;
    char *banner_text;
};

G_DEFINE_FINAL_TYPE(SdWindow, sd_window, ADW_TYPE_APPLICATION_WINDOW)

static void toast_gone(AdwToast *t, gpointer data)
{
    SdWindow *self = data;
    if (self->toast == t)
        self->toast = NULL;
}

// A new message while one is still shown replaces its text rather than queueing behind it.
// (Dismissing a toast during its reveal animation crashes libadwaita 1.2, so none is dismissed.)
void sd_window_show_toast(SdWindow *self, const char *text)
{
    g_free(self->last_toast);
    self->last_toast = g_strdup(text);
    if (self->toast) {
        adw_toast_set_title(self->toast, text);
        return;
    }
    AdwToast *t = adw_toast_new(text);
    adw_toast_set_timeout(t, 4);
    g_signal_connect_object(t, "dismissed", G_CALLBACK(toast_gone), self, 0);
    self->toast = t;
    adw_toast_overlay_add_toast(ADW_TOAST_OVERLAY(self->toasts), t);
}

// Disposed (closed) while an async job was in flight: its widgets are gone.
static gboolean window_gone(SdWindow *self)
{
    return self->service == NULL;
}

static char *human_count(gint64 n)
{
    if (n < 0)
        return g_strdup("? tokens");
    if (n >= 1000000)
        return g_strdup_printf("%.1fM tokens", n / 1e6);
    if (n >= 10000)
        return g_strdup_printf("%.0fK tokens", n / 1e3);
    if (n >= 1000)
        return g_strdup_printf("%.1fK tokens", n / 1e3);
    return g_strdup_printf("%" G_GINT64_FORMAT " tokens", n);
}

// ---- banner (the model cannot be used) ----

static void set_banner(SdWindow *self, const char *text)
{
    g_free(self->banner_text);
    self->banner_text = g_strdup(text);
    if (text) {
        g_autofree char *clean = sd_ui_message(NULL, text);
        g_autofree char *m = g_strdup_printf("The model cannot be loaded: %s. Choose one in Preferences.", clean);
        gtk_label_set_text(GTK_LABEL(self->banner_label), m);
    }
    gtk_widget_set_visible(self->banner, text != NULL);
}

const char *sd_window_get_banner(SdWindow *self)
{
    return self->banner_text;
}
const char *sd_window_get_last_message(SdWindow *self)
{
    return self->last_toast;
}

// ---- library ----

static void refresh_conversations(SdWindow *self);

static const char *kind_icon(const char *kind, gboolean folder)
{
    if (folder)
        return "folder-symbolic";
    if (!g_strcmp0(kind, "pdf"))
        return "x-office-document-symbolic";
    if (!g_strcmp0(kind, "code"))
        return "text-x-generic-symbolic";
    return "text-x-generic-symbolic";
}

static void on_remove_clicked(GtkButton *b, gpointer data);
static void on_rescan_clicked(GtkButton *b, gpointer data);

static GtkWidget *row_button(const char *icon, const char *tip, GCallback cb, gpointer data)
{
    GtkWidget *b = gtk_button_new_from_icon_name(icon);
    gtk_widget_set_valign(b, GTK_ALIGN_CENTER);
    gtk_widget_add_css_class(b, "flat");
    gtk_widget_set_tooltip_text(b, tip);
    gtk_accessible_update_property(GTK_ACCESSIBLE(b), GTK_ACCESSIBLE_PROPERTY_LABEL, tip, -1);
    g_signal_connect(b, "clicked", cb, data);
    return b;
}

// A library row: one document, or one folder (root) with its documents.
static GtkWidget *library_row(SdWindow *self, const char *root, GPtrArray *members)
{
    SdDocInfo *d0 = g_ptr_array_index(members, 0);
    GtkWidget *row = adw_action_row_new();
    gboolean folder = root != NULL;
    g_autofree char *base = g_path_get_basename(folder ? root : d0->path);
    const char *title = folder ? base : (d0->title && *d0->title ? d0->title : base);
    adw_preferences_row_set_title(ADW_PREFERENCES_ROW(row), title);
    adw_preferences_row_set_use_markup(ADW_PREFERENCES_ROW(row), FALSE);
    gint64 tokens = 0, pages = 0, lines = 0;
    gboolean unknown = FALSE;
    enum sd_library_state worst = SD_LIBRARY_OK;
    const char *worst_msg = NULL;
    for (guint i = 0; i < members->len; i++) {
        SdDocInfo *d = g_ptr_array_index(members, i);
        if (d->n_tokens <= 0 && d->n_chars > 0) // ingested without a model: not counted yet
            unknown = TRUE;
        else
            tokens += d->n_tokens;
        pages += d->n_pages;
        lines += d->n_lines;
        if (d->state > worst) {
            worst = d->state;
            worst_msg = d->state_msg;
        }
    }
    g_autofree char *tok = unknown && tokens == 0 ? g_strdup("tokens not counted") : human_count(tokens);
    g_autofree char *sub = folder      ? g_strdup_printf("%u files · %s", members->len, tok)
                           : pages > 0 ? g_strdup_printf("%" G_GINT64_FORMAT " pages · %s", pages, tok)
                                       : g_strdup_printf("%" G_GINT64_FORMAT " lines · %s", lines, tok);
    if (worst != SD_LIBRARY_OK) {
        char *s = g_strdup_printf("%s · %s", sub, sd_library_state_str(worst));
        g_free(sub);
        sub = s;
    }
    adw_action_row_set_subtitle(ADW_ACTION_ROW(row), sub);
    adw_action_row_set_subtitle_lines(ADW_ACTION_ROW(row), 2);
    gtk_widget_set_tooltip_text(row, worst_msg ? worst_msg : (folder ? root : d0->path));
    GtkWidget *icon =
        gtk_image_new_from_icon_name(worst == SD_LIBRARY_OK ? kind_icon(d0->kind, folder) : "dialog-warning-symbolic");
    if (worst != SD_LIBRARY_OK)
        gtk_widget_add_css_class(icon, "warning");
    adw_action_row_add_prefix(ADW_ACTION_ROW(row), icon);
    GtkWidget *rescan = row_button("view-refresh-symbolic", "Re-scan", G_CALLBACK(on_rescan_clicked), self);
    GtkWidget *remove = row_button("user-trash-symbolic", "Remove from library", G_CALLBACK(on_remove_clicked), self);
    g_object_set_data_full(G_OBJECT(rescan), "sd-path", g_strdup(folder ? root : d0->path), g_free);
    g_object_set_data(G_OBJECT(remove), "sd-doc", GINT_TO_POINTER(folder ? 0 : 1));
    g_object_set_data_full(G_OBJECT(remove), "sd-id", g_memdup2(&d0->id, sizeof d0->id), g_free);
    g_object_set_data_full(G_OBJECT(remove), "sd-root", g_strdup(root), g_free);
    adw_action_row_add_suffix(ADW_ACTION_ROW(row), rescan);
    adw_action_row_add_suffix(ADW_ACTION_ROW(row), remove);
    // The documents this row stands for (the chat scope when it is selected).
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    for (guint i = 0; i < members->len; i++)
        g_array_append_val(ids, ((SdDocInfo *)g_ptr_array_index(members, i))->id);
    g_object_set_data_full(G_OBJECT(row), "sd-ids", ids, (GDestroyNotify)g_array_unref);
    g_object_set_data_full(G_OBJECT(row), "sd-label", g_strdup(title), g_free);
    g_object_set_data_full(G_OBJECT(row), "sd-search", g_strdup_printf("%s %s", title, folder ? root : d0->path),
                           g_free);
    return row;
}

static void selection_changed(GtkListBox *box, gpointer data)
{
    SdWindow *self = data;
    if (self->selecting || !self->service) // (re)building the list, or the window is going away
        return;
    GList *sel = gtk_list_box_get_selected_rows(box);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    GString *label = g_string_new(NULL);
    guint n_rows = 0;
    for (GList *l = sel; l; l = l->next) {
        GArray *r = g_object_get_data(l->data, "sd-ids");
        if (!r)
            continue;
        g_array_append_vals(ids, r->data, r->len);
        if (n_rows++ < 2)
            g_string_append_printf(label, "%s%s", label->len ? ", " : "",
                                   (char *)g_object_get_data(l->data, "sd-label"));
    }
    g_list_free(sel);
    if (n_rows > 2)
        g_string_append_printf(label, " and %u more", n_rows - 2);
    const char *lab = ids->len ? label->str : "all documents";
    sd_chat_view_set_scope(SD_CHAT_VIEW(self->chat), (const gint64 *)(void *)ids->data, ids->len, lab);
    adw_window_title_set_subtitle(self->title, lab);
    g_array_unref(ids);
    g_string_free(label, TRUE);
}

void sd_window_select_docs(SdWindow *self, const gint64 *ids, guint n)
{
    self->selecting = TRUE;
    gtk_list_box_unselect_all(GTK_LIST_BOX(self->library));
    for (GtkWidget *c = gtk_widget_get_first_child(self->library); c; c = gtk_widget_get_next_sibling(c)) {
        GArray *r = g_object_get_data(G_OBJECT(c), "sd-ids");
        for (guint i = 0; r && i < r->len; i++) {
            gboolean hit = FALSE;
            for (guint k = 0; k < n && !hit; k++)
                hit = g_array_index(r, gint64, i) == ids[k];
            if (hit) {
                gtk_list_box_select_row(GTK_LIST_BOX(self->library), GTK_LIST_BOX_ROW(c));
                break;
            }
        }
    }
    self->selecting = FALSE;
    selection_changed(GTK_LIST_BOX(self->library), self);
}

static void docs_loaded(GObject *src, GAsyncResult *res, gpointer data)
{
    SdWindow *self = data;
    if (window_gone(self)) { // closed meanwhile: the task frees its result
        g_object_unref(self);
        return;
    }
    GError *error = NULL;
    GPtrArray *docs = sd_service_docs_finish(SD_SERVICE(src), res, &error);
    self->refreshing = FALSE;
    if (!docs) {
        g_autofree char *m = g_strdup_printf("Cannot read the library: %s", error->message);
        sd_window_show_toast(self, m);
        g_error_free(error);
        g_object_unref(self);
        return;
    }
    // Remember the selection by document id.
    GArray *selected = g_array_new(FALSE, FALSE, sizeof(gint64));
    GList *sel = gtk_list_box_get_selected_rows(GTK_LIST_BOX(self->library));
    for (GList *l = sel; l; l = l->next) {
        GArray *r = g_object_get_data(l->data, "sd-ids");
        if (r)
            g_array_append_vals(selected, r->data, r->len);
    }
    g_list_free(sel);
    self->selecting = TRUE;
    GtkWidget *c;
    while ((c = gtk_widget_get_first_child(self->library)))
        gtk_list_box_remove(GTK_LIST_BOX(self->library), c);
    if (self->docs)
        g_ptr_array_unref(self->docs);
    self->docs = docs;
    for (guint i = 0; i < docs->len;) {
        SdDocInfo *d = g_ptr_array_index(docs, i);
        GPtrArray *members = g_ptr_array_new();
        guint k = i;
        do
            g_ptr_array_add(members, g_ptr_array_index(docs, k++));
        while (d->root && k < docs->len && !g_strcmp0(((SdDocInfo *)g_ptr_array_index(docs, k))->root, d->root));
        gtk_list_box_append(GTK_LIST_BOX(self->library), library_row(self, d->root, members));
        g_ptr_array_unref(members);
        i = k;
    }
    gtk_widget_set_visible(self->empty_library, docs->len == 0);
    gtk_widget_set_visible(self->library, docs->len > 0);
    sd_chat_view_set_library_empty(SD_CHAT_VIEW(self->chat), docs->len == 0);
    self->selecting = FALSE;
    sd_window_select_docs(self, (const gint64 *)(void *)selected->data, selected->len);
    g_array_unref(selected);
    if (self->refresh_again) {
        self->refresh_again = FALSE;
        sd_window_refresh(self);
    }
    g_object_unref(self);
}

void sd_window_refresh(SdWindow *self)
{
    if (self->refreshing) {
        self->refresh_again = TRUE;
        return;
    }
    self->refreshing = TRUE;
    sd_service_docs_async(self->service, NULL, docs_loaded, g_object_ref(self));
    refresh_conversations(self);
}

static gboolean filter_rows(GtkListBoxRow *row, gpointer data)
{
    SdWindow *self = data;
    const char *q = gtk_editable_get_text(GTK_EDITABLE(self->search_entry));
    const char *hay = g_object_get_data(G_OBJECT(row), "sd-search");
    if (!q || !*q || !hay)
        return TRUE;
    g_autofree char *a = g_utf8_casefold(hay, -1), *b = g_utf8_casefold(q, -1);
    return strstr(a, b) != NULL;
}

static void on_removed(GObject *src, GAsyncResult *res, gpointer data)
{
    SdWindow *self = data;
    if (window_gone(self)) { // closed meanwhile: the task frees its result
        g_object_unref(self);
        return;
    }
    GError *error = NULL;
    if (!sd_service_remove_finish(SD_SERVICE(src), res, &error)) {
        g_autofree char *m = g_strdup_printf("Could not remove: %s", error->message);
        sd_window_show_toast(self, m);
        g_error_free(error);
    } else {
        sd_window_show_toast(self, "Removed from the library");
    }
    sd_window_refresh(self);
    g_object_unref(self);
}

static void on_remove_clicked(GtkButton *b, gpointer data)
{
    SdWindow *self = data;
    gint64 *id = g_object_get_data(G_OBJECT(b), "sd-id");
    const char *root = g_object_get_data(G_OBJECT(b), "sd-root");
    gboolean doc = GPOINTER_TO_INT(g_object_get_data(G_OBJECT(b), "sd-doc"));
    sd_service_remove_async(self->service, doc ? *id : 0, doc ? NULL : root, on_removed, g_object_ref(self));
}

static void on_rescan_clicked(GtkButton *b, gpointer data)
{
    SdWindow *self = data;
    const char *path = g_object_get_data(G_OBJECT(b), "sd-path");
    g_autoptr(GFile) f = g_file_new_for_path(path);
    sd_window_add_files(self, &f, 1, NULL);
}

// ---- ingestion ----

static void error_row_add(SdWindow *self, const char *path, const char *msg);

static void job_update(GtkWidget *row, double fraction, const char *subtitle)
{
    GtkProgressBar *bar = g_object_get_data(G_OBJECT(row), "sd-bar");
    if (fraction >= 0)
        gtk_progress_bar_set_fraction(bar, fraction);
    if (subtitle)
        adw_action_row_set_subtitle(ADW_ACTION_ROW(row), subtitle);
}

static void on_ingest_event(GObject *target, const struct sd_ingest_event *ev)
{
    GtkWidget *row = GTK_WIDGET(target);
    SdWindow *self = SD_WINDOW(gtk_widget_get_root(row));
    double frac = ev->total ? (double)ev->index / (double)ev->total : -1;
    g_autofree char *base = ev->path ? g_path_get_basename(ev->path) : NULL;
    g_autofree char *sub = NULL;
    switch (ev->kind) {
    case SD_INGEST_PLANNED:
        sub = g_strdup_printf("%zu file%s to look at", ev->total, ev->total == 1 ? "" : "s");
        frac = 0;
        break;
    case SD_INGEST_ADDED:
        sub = g_strdup_printf("added %s", base);
        break;
    case SD_INGEST_UPDATED:
        sub = g_strdup_printf("updated %s", base);
        break;
    case SD_INGEST_UNCHANGED:
        sub = g_strdup_printf("%s unchanged", base);
        break;
    case SD_INGEST_SKIPPED:
        sub = g_strdup_printf("skipped %s", base);
        break;
    case SD_INGEST_REMOVED:
        sub = g_strdup_printf("removed %s (gone from the folder)", base);
        break;
    case SD_INGEST_WARNING:
        sub = g_strdup_printf("%s: %s", base, ev->msg ? ev->msg : "warning");
        break;
    case SD_INGEST_PAGE:
        sub = g_strdup_printf("%s: page %d of %d%s", base, ev->page + 1, ev->n_pages, ev->ocr ? " (OCR)" : "");
        frac = ev->total
                   ? ((double)(ev->index - 1) + (double)ev->page / (ev->n_pages ? ev->n_pages : 1)) / (double)ev->total
                   : -1;
        break;
    case SD_INGEST_FAILED:
        sub = g_strdup_printf("%s failed", base);
        if (self)
            error_row_add(self, ev->path, ev->msg ? ev->msg : "could not be ingested");
        break;
    }
    if (ev->total > 1) {
        char *s = g_strdup_printf("%zu / %zu · %s", ev->index, ev->total, sub);
        g_free(sub);
        sub = s;
    }
    job_update(row, frac, sub);
}

static gboolean pulse(gpointer data)
{
    GtkWidget *row = data;
    GtkProgressBar *bar = g_object_get_data(G_OBJECT(row), "sd-bar");
    if (gtk_progress_bar_get_fraction(bar) == 0 || g_object_get_data(G_OBJECT(row), "sd-pulsing")) {
        g_object_set_data(G_OBJECT(row), "sd-pulsing", GINT_TO_POINTER(1));
        gtk_progress_bar_pulse(bar);
    }
    return G_SOURCE_CONTINUE;
}

static void update_sections(SdWindow *self)
{
    gtk_widget_set_visible(self->jobs_label, self->n_jobs > 0);
    gtk_widget_set_visible(self->jobs, self->n_jobs > 0);
    gtk_widget_set_visible(self->errors_label, self->error_rows->len > 0);
    gtk_widget_set_visible(self->errors, self->error_rows->len > 0);
}

static void ingest_done(GObject *src, GAsyncResult *res, gpointer data)
{
    GtkWidget *row = data;
    SdWindow *self = g_object_get_data(G_OBJECT(row), "sd-window");
    struct sd_ingest_stats st = {0};
    GError *error = NULL;
    gboolean ok = sd_service_ingest_finish(SD_SERVICE(src), res, &st, &error);
    g_source_remove(GPOINTER_TO_UINT(g_object_get_data(G_OBJECT(row), "sd-pulse")));
    if (window_gone(self)) {
        g_clear_error(&error);
        g_object_unref(row);
        g_object_unref(self);
        return;
    }
    const char *path = g_object_get_data(G_OBJECT(row), "sd-path");
    g_autofree char *base = g_path_get_basename(path);
    if (!ok) {
        error_row_add(self, path, error->message);
        g_error_free(error);
    } else if (st.cancelled) {
        g_autofree char *m =
            g_strdup_printf("Stopped adding %s: %zu files added, the rest left out", base, st.added + st.updated);
        sd_window_show_toast(self, m);
    } else if (st.failed == 0) {
        for (guint i = self->error_rows->len; i-- > 0;) {
            GtkWidget *er = g_ptr_array_index(self->error_rows, i);
            if (!g_strcmp0(g_object_get_data(G_OBJECT(er), "sd-path"), path)) {
                gtk_list_box_remove(GTK_LIST_BOX(self->errors), er);
                g_ptr_array_remove_index(self->error_rows, i);
            }
        }
        g_autofree char *m = NULL;
        if (st.added + st.updated == 0 && st.unchanged)
            m = g_strdup_printf("%s is up to date", base);
        else if (st.pages)
            m = g_strdup_printf("Added %s: %" G_GINT64_FORMAT " pages", base, st.pages);
        else
            m = g_strdup_printf("Added %s: %zu files", base, st.added + st.updated);
        sd_window_show_toast(self, m);
    }
    gtk_list_box_remove(GTK_LIST_BOX(self->jobs), row);
    self->n_jobs--;
    update_sections(self);
    sd_window_refresh(self);
    g_object_unref(row);
    g_object_unref(self);
}

static void on_job_stop(GtkButton *b, gpointer data)
{
    gtk_widget_set_sensitive(GTK_WIDGET(b), FALSE);
    g_cancellable_cancel(G_CANCELLABLE(data));
}

void sd_window_add_files(SdWindow *self, GFile *const *files, guint n, const char *password)
{
    for (guint i = 0; i < n; i++) {
        g_autofree char *path = g_file_get_path(files[i]);
        if (!path) {
            g_autofree char *uri = g_file_get_uri(files[i]);
            error_row_add(self, uri, "not a local file: copy it to a folder on this computer first");
            continue;
        }
        g_autofree char *base = g_path_get_basename(path);
        GtkWidget *row = adw_action_row_new();
        adw_preferences_row_set_title(ADW_PREFERENCES_ROW(row), base);
        adw_preferences_row_set_use_markup(ADW_PREFERENCES_ROW(row), FALSE);
        adw_action_row_set_subtitle(ADW_ACTION_ROW(row), "waiting…");
        gtk_list_box_row_set_activatable(GTK_LIST_BOX_ROW(row), FALSE);
        GtkWidget *bar = gtk_progress_bar_new();
        gtk_widget_set_valign(bar, GTK_ALIGN_CENTER);
        gtk_widget_set_size_request(bar, 60, -1);
        gtk_accessible_update_property(GTK_ACCESSIBLE(bar), GTK_ACCESSIBLE_PROPERTY_LABEL, "Ingestion progress", -1);
        adw_action_row_add_suffix(ADW_ACTION_ROW(row), bar);
        g_object_set_data(G_OBJECT(row), "sd-bar", bar);
        GCancellable *cancel = g_cancellable_new();
        g_object_set_data_full(G_OBJECT(row), "sd-cancel", cancel, g_object_unref);
        GtkWidget *stop = row_button("process-stop-symbolic", "Stop adding", G_CALLBACK(on_job_stop), cancel);
        adw_action_row_add_suffix(ADW_ACTION_ROW(row), stop);
        g_object_set_data(G_OBJECT(row), "sd-stop", stop);
        g_object_set_data(G_OBJECT(row), "sd-window", self);
        g_object_set_data_full(G_OBJECT(row), "sd-path", g_strdup(path), g_free);
        guint src = g_timeout_add(150, pulse, row);
        g_object_set_data(G_OBJECT(row), "sd-pulse", GUINT_TO_POINTER(src));
        gtk_list_box_append(GTK_LIST_BOX(self->jobs), row);
        self->n_jobs++;
        const char *paths[] = {path, NULL};
        g_object_ref(self);
        sd_service_ingest_async(self->service, paths, password, G_OBJECT(row), on_ingest_event, cancel, ingest_done,
                                g_object_ref(row)); // released in ingest_done
    }
    update_sections(self);
}

static void on_dismiss(GtkButton *b, gpointer data)
{
    SdWindow *self = data;
    GtkWidget *row = g_object_get_data(G_OBJECT(b), "sd-row");
    g_ptr_array_remove(self->error_rows, row);
    gtk_list_box_remove(GTK_LIST_BOX(self->errors), row);
    update_sections(self);
}

static void password_response(AdwMessageDialog *d, const char *response, gpointer data)
{
    SdWindow *self = data;
    if (!g_strcmp0(response, "unlock")) {
        GtkWidget *entry = g_object_get_data(G_OBJECT(d), "sd-entry");
        const char *path = g_object_get_data(G_OBJECT(d), "sd-path");
        g_autoptr(GFile) f = g_file_new_for_path(path);
        sd_window_add_files(self, &f, 1, gtk_editable_get_text(GTK_EDITABLE(entry)));
        GtkWidget *row = g_object_get_data(G_OBJECT(d), "sd-row");
        if (g_ptr_array_remove(self->error_rows, row))
            gtk_list_box_remove(GTK_LIST_BOX(self->errors), row);
        update_sections(self);
    }
    g_object_unref(self);
}

static void on_password(GtkButton *b, gpointer data)
{
    SdWindow *self = data;
    GtkWidget *row = g_object_get_data(G_OBJECT(b), "sd-row");
    const char *path = g_object_get_data(G_OBJECT(row), "sd-path");
    g_autofree char *base = g_path_get_basename(path);
    GtkWidget *d = adw_message_dialog_new(GTK_WINDOW(self), "Password Required", NULL);
    adw_message_dialog_format_body(ADW_MESSAGE_DIALOG(d), "“%s” is encrypted. Enter its password to add it.", base);
    // A plain GtkEntry in password mode: with GTK 4.8, a GtkPasswordEntry here gave an "invalid
    // unclassed pointer in cast to GtkPasswordEntry" warning after the dialog closed (seen under Xvfb).
    GtkWidget *entry = gtk_entry_new();
    gtk_entry_set_visibility(GTK_ENTRY(entry), FALSE);
    gtk_entry_set_input_purpose(GTK_ENTRY(entry), GTK_INPUT_PURPOSE_PASSWORD);
    gtk_entry_set_activates_default(GTK_ENTRY(entry), TRUE);
    gtk_accessible_update_property(GTK_ACCESSIBLE(entry), GTK_ACCESSIBLE_PROPERTY_LABEL, "Password", -1);
    adw_message_dialog_set_extra_child(ADW_MESSAGE_DIALOG(d), entry);
    adw_message_dialog_add_responses(ADW_MESSAGE_DIALOG(d), "cancel", "_Cancel", "unlock", "_Unlock", NULL);
    adw_message_dialog_set_response_appearance(ADW_MESSAGE_DIALOG(d), "unlock", ADW_RESPONSE_SUGGESTED);
    adw_message_dialog_set_default_response(ADW_MESSAGE_DIALOG(d), "unlock");
    g_object_set_data(G_OBJECT(d), "sd-entry", entry);
    g_object_set_data(G_OBJECT(d), "sd-row", row);
    g_object_set_data_full(G_OBJECT(d), "sd-path", g_strdup(path), g_free);
    g_signal_connect(d, "response", G_CALLBACK(password_response), g_object_ref(self));
    gtk_window_present(GTK_WINDOW(d));
}

static gboolean is_encrypted_error(const char *path, const char *msg)
{
    if (!msg || !g_str_has_suffix(path ? path : "", ".pdf"))
        return FALSE;
    g_autofree char *m = g_ascii_strdown(msg, -1);
    return strstr(m, "password") || strstr(m, "encrypted");
}

static void error_row_add(SdWindow *self, const char *path, const char *raw)
{
    g_autofree char *base = g_path_get_basename(path ? path : "?");
    g_autofree char *msg =
        is_encrypted_error(path, raw) ? g_strdup("Encrypted: enter its password to add it") : sd_ui_message(path, raw);
    GtkWidget *row = adw_action_row_new();
    adw_preferences_row_set_title(ADW_PREFERENCES_ROW(row), base);
    adw_preferences_row_set_use_markup(ADW_PREFERENCES_ROW(row), FALSE);
    adw_action_row_set_subtitle(ADW_ACTION_ROW(row), msg);
    adw_action_row_set_subtitle_lines(ADW_ACTION_ROW(row), 4);
    gtk_widget_set_tooltip_text(row, raw);
    gtk_list_box_row_set_activatable(GTK_LIST_BOX_ROW(row), FALSE);
    gtk_widget_add_css_class(row, "sd-error-row");
    GtkWidget *icon = gtk_image_new_from_icon_name("dialog-error-symbolic");
    gtk_widget_add_css_class(icon, "error");
    adw_action_row_add_prefix(ADW_ACTION_ROW(row), icon);
    g_object_set_data_full(G_OBJECT(row), "sd-path", g_strdup(path), g_free);
    g_object_set_data_full(G_OBJECT(row), "sd-msg", g_strdup(msg), g_free);
    if (is_encrypted_error(path, raw)) {
        GtkWidget *pw = row_button("dialog-password-symbolic", "Enter password", G_CALLBACK(on_password), self);
        g_object_set_data(G_OBJECT(pw), "sd-row", row);
        g_object_set_data(G_OBJECT(row), "sd-password-button", pw);
        adw_action_row_add_suffix(ADW_ACTION_ROW(row), pw);
    }
    GtkWidget *x = row_button("window-close-symbolic", "Dismiss", G_CALLBACK(on_dismiss), self);
    g_object_set_data(G_OBJECT(x), "sd-row", row);
    adw_action_row_add_suffix(ADW_ACTION_ROW(row), x);
    gtk_list_box_append(GTK_LIST_BOX(self->errors), row);
    g_ptr_array_add(self->error_rows, row);
    update_sections(self);
}

// ---- drag and drop, file chooser ----

static gboolean on_drop(GtkDropTarget *t, const GValue *value, double x, double y, gpointer data)
{
    (void)t;
    (void)x;
    (void)y;
    SdWindow *self = data;
    if (!G_VALUE_HOLDS(value, GDK_TYPE_FILE_LIST))
        return FALSE;
    GSList *list = gdk_file_list_get_files(g_value_get_boxed(value));
    GPtrArray *files = g_ptr_array_new();
    for (GSList *l = list; l; l = l->next)
        g_ptr_array_add(files, l->data);
    sd_window_add_files(self, (GFile *const *)files->pdata, files->len, NULL);
    g_ptr_array_unref(files);
    g_slist_free(list);
    return TRUE;
}

static void chooser_response(GtkNativeDialog *d, int response, gpointer data)
{
    SdWindow *self = data;
    if (response == GTK_RESPONSE_ACCEPT) {
        GListModel *files = gtk_file_chooser_get_files(GTK_FILE_CHOOSER(d));
        guint n = g_list_model_get_n_items(files);
        GPtrArray *a = g_ptr_array_new_with_free_func(g_object_unref);
        for (guint i = 0; i < n; i++)
            g_ptr_array_add(a, g_list_model_get_item(files, i));
        sd_window_add_files(self, (GFile *const *)a->pdata, a->len, NULL);
        g_ptr_array_unref(a);
        g_object_unref(files);
    }
    g_object_unref(d);
    g_object_unref(self);
}

// GtkFileDialog needs GTK 4.10; Debian 12 has 4.8, so this uses GtkFileChooserNative (portal-aware).
static void choose(SdWindow *self, gboolean folder)
{
    GtkFileChooserNative *d = gtk_file_chooser_native_new(
        folder ? "Add Folder" : "Add Documents", GTK_WINDOW(self),
        folder ? GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER : GTK_FILE_CHOOSER_ACTION_OPEN, "_Add", "_Cancel");
    gtk_file_chooser_set_select_multiple(GTK_FILE_CHOOSER(d), TRUE);
    if (!folder) {
        GtkFileFilter *f = gtk_file_filter_new();
        gtk_file_filter_set_name(f, "Documents and source files");
        gtk_file_filter_add_mime_type(f, "application/pdf");
        gtk_file_filter_add_mime_type(f, "text/*");
        gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(d), f);
        g_object_unref(f);
        GtkFileFilter *all = gtk_file_filter_new();
        gtk_file_filter_set_name(all, "All files");
        gtk_file_filter_add_pattern(all, "*");
        gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(d), all);
        g_object_unref(all);
    }
    g_signal_connect(d, "response", G_CALLBACK(chooser_response), g_object_ref(self));
    gtk_native_dialog_show(GTK_NATIVE_DIALOG(d));
}

static void act_add_files(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    choose(SD_WINDOW(w), FALSE);
}

static void act_add_folder(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    choose(SD_WINDOW(w), TRUE);
}

static void act_search(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    SdWindow *self = SD_WINDOW(w);
    gboolean on = !gtk_search_bar_get_search_mode(GTK_SEARCH_BAR(self->search_bar));
    gtk_search_bar_set_search_mode(GTK_SEARCH_BAR(self->search_bar), on);
    if (on)
        gtk_widget_grab_focus(self->search_entry);
}

static void act_ask(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    sd_chat_view_focus_entry(SD_CHAT_VIEW(SD_WINDOW(w)->chat));
}

static void act_refresh(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    sd_window_refresh(SD_WINDOW(w));
}

// ---- viewer ----

static void close_viewer(SdWindow *self)
{
    gtk_widget_set_visible(self->viewer, FALSE);
    g_clear_pointer(&self->viewer_mode, g_free);
}

static void act_close_viewer(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    close_viewer(SD_WINDOW(w));
}

typedef struct {
    SdWindow *self;
    guint serial;
    char *quote;
    gint64 doc_id;
    int page_no;
    gboolean passage; // for ocr_boxes_loaded: the boxes are the passage's (else the quote's)
} PassageReq;

static void ocr_boxes_loaded(GObject *src, GAsyncResult *res, gpointer data)
{
    PassageReq *req = data;
    GArray *a = sd_service_ocr_boxes_finish(SD_SERVICE(src), res, NULL);
    if (a && a->len && !window_gone(req->self) && req->serial == req->self->viewer_serial)
        sd_pdf_view_highlight_boxes(SD_PDF_VIEW(req->self->pdf), req->passage, (const double *)(void *)a->data,
                                    a->len / 4);
    if (a)
        g_array_unref(a);
    g_object_unref(req->self);
    g_free(req->quote);
    g_free(req);
}

// A scanned page has no text layer to search: ask for the boxes OCR found for text.
static void request_ocr_boxes(SdWindow *self, gint64 doc_id, int page_no, const char *text, gboolean passage)
{
    PassageReq *req = g_new0(PassageReq, 1);
    req->self = g_object_ref(self);
    req->serial = self->viewer_serial;
    req->passage = passage;
    sd_service_ocr_boxes_async(self->service, doc_id, page_no, text, NULL, ocr_boxes_loaded, req);
}

// The sentence of text that contains quote ("" when quote is not in it).
static char *sentence_around(const char *text, const char *quote)
{
    const char *q = strstr(text, quote);
    if (!q)
        return g_strdup("");
    const char *a = q, *z = q + strlen(quote);
    while (a > text && a[-1] != '\n' && !(a[-1] == ' ' && a - 1 > text && strchr(".!?", a[-2])))
        a--;
    while (*z && *z != '\n') {
        if ((*z == '.' || *z == '!' || *z == '?') && (z[1] == ' ' || z[1] == '\n' || z[1] == 0)) {
            z++;
            break;
        }
        z++;
    }
    char *s = g_strndup(a, (gsize)(z - a));
    g_strdelimit(s, "\n", ' ');
    return g_strstrip(s);
}

static void passage_loaded(GObject *src, GAsyncResult *res, gpointer data)
{
    PassageReq *req = data;
    g_autofree char *text = sd_service_source_text_finish(SD_SERVICE(src), res, NULL);
    if (text && !window_gone(req->self) && req->serial == req->self->viewer_serial) {
        g_autofree char *sentence = sentence_around(text, req->quote);
        if (*sentence && !sd_pdf_view_highlight_passage(SD_PDF_VIEW(req->self->pdf), sentence))
            request_ocr_boxes(req->self, req->doc_id, req->page_no, sentence, TRUE);
    }
    g_object_unref(req->self);
    g_free(req->quote);
    g_free(req);
}

void sd_window_open_citation(SdWindow *self, const struct sd_qa_citation *c, const char *quote)
{
    if (!c || !c->valid || !c->path) {
        sd_window_show_toast(self, "This citation does not point into the documents of the question");
        return;
    }
    g_autofree char *base = g_path_get_basename(c->path);
    g_autofree char *title = NULL;
    g_free(self->viewer_mode);
    if (c->page_no > 0) {
        GError *error = NULL;
        if (!sd_pdf_view_open(SD_PDF_VIEW(self->pdf), c->path, NULL, c->page_no, &error)) {
            g_autofree char *m = g_strdup_printf("Cannot open %s: %s", base, error->message);
            sd_window_show_toast(self, m);
            g_error_free(error);
            self->viewer_mode = NULL;
            return;
        }
        guint found = sd_pdf_view_highlight(SD_PDF_VIEW(self->pdf), quote);
        if (quote && *quote) {
            PassageReq *req = g_new0(PassageReq, 1);
            req->self = g_object_ref(self);
            req->serial = ++self->viewer_serial;
            req->quote = g_strdup(quote);
            req->doc_id = c->doc_id;
            req->page_no = c->page_no;
            if (!found)
                request_ocr_boxes(self, c->doc_id, c->page_no, quote, FALSE);
            sd_service_source_text_async(self->service, c->doc_id, c->page_no, 0, 0, NULL, passage_loaded, req);
        }
        gtk_stack_set_visible_child(GTK_STACK(self->viewer_stack), self->pdf);
        const char *name = c->title && *c->title ? c->title : base;
        title = c->page_label && *c->page_label ? g_strdup_printf("%s — p. %s", name, c->page_label)
                                                : g_strdup_printf("%s — page %d", name, c->page_no);
        self->viewer_mode = g_strdup("pdf");
    } else {
        self->viewer_serial++;
        sd_source_view_open(SD_SOURCE_VIEW(self->source), c->path, c->line_start, c->line_end);
        gtk_stack_set_visible_child(GTK_STACK(self->viewer_stack), self->source);
        title = c->line_end > c->line_start ? g_strdup_printf("%s:%d–%d", base, c->line_start, c->line_end)
                                            : g_strdup_printf("%s:%d", base, c->line_start);
        self->viewer_mode = g_strdup("source");
    }
    gtk_label_set_text(GTK_LABEL(self->viewer_title), title);
    gtk_widget_set_tooltip_text(self->viewer_title, c->path);
    gtk_widget_set_visible(self->viewer, TRUE);
}

static void on_citation(gpointer user, const struct sd_qa_citation *c, const char *quote)
{
    sd_window_open_citation(SD_WINDOW(user), c, quote);
}

// ---- conversations ----

static void convs_loaded(GObject *src, GAsyncResult *res, gpointer data)
{
    SdWindow *self = data;
    if (window_gone(self)) { // closed meanwhile: the task frees its result
        g_object_unref(self);
        return;
    }
    GError *error = NULL;
    GPtrArray *a = sd_service_conversations_finish(SD_SERVICE(src), res, &error);
    if (!a) {
        // Without a model there is no service to list them; the banner says why.
        g_error_free(error);
        g_object_unref(self);
        return;
    }
    GtkWidget *c;
    while ((c = gtk_widget_get_first_child(self->convs)))
        gtk_list_box_remove(GTK_LIST_BOX(self->convs), c);
    g_hash_table_remove_all(self->conv_titles);
    for (guint i = 0; i < a->len; i++) {
        SdConversationInfo *ci = g_ptr_array_index(a, i);
        if (ci->n_turns == 0) // started, but its first answer was stopped or failed
            continue;
        GtkWidget *row = adw_action_row_new();
        adw_preferences_row_set_title(ADW_PREFERENCES_ROW(row), ci->title && *ci->title ? ci->title : "Untitled");
        adw_preferences_row_set_use_markup(ADW_PREFERENCES_ROW(row), FALSE);
        g_autoptr(GDateTime) t = g_date_time_new_from_unix_local(ci->updated_ms / 1000);
        g_autofree char *when = t ? g_date_time_format(t, "%e %b %H:%M") : g_strdup("");
        g_autofree char *sub = g_strdup_printf("%d question%s · %s", ci->n_turns, ci->n_turns == 1 ? "" : "s", when);
        adw_action_row_set_subtitle(ADW_ACTION_ROW(row), sub);
        adw_action_row_add_prefix(ADW_ACTION_ROW(row), gtk_image_new_from_icon_name("chat-message-new-symbolic"));
        gtk_list_box_row_set_activatable(GTK_LIST_BOX_ROW(row), TRUE);
        g_object_set_data_full(G_OBJECT(row), "sd-conv", g_memdup2(&ci->id, sizeof ci->id), g_free);
        g_hash_table_insert(self->conv_titles, g_memdup2(&ci->id, sizeof ci->id), g_strdup(ci->title));
        gtk_list_box_append(GTK_LIST_BOX(self->convs), row);
    }
    guint shown = g_hash_table_size(self->conv_titles);
    gtk_widget_set_visible(self->convs_label, shown > 0);
    gtk_widget_set_visible(self->convs, shown > 0);
    g_ptr_array_unref(a);
    g_object_unref(self);
}

static void refresh_conversations(SdWindow *self)
{
    sd_service_conversations_async(self->service, NULL, convs_loaded, g_object_ref(self));
}

static void conv_opened(GObject *src, GAsyncResult *res, gpointer data)
{
    SdWindow *self = data;
    if (window_gone(self)) { // closed meanwhile: the task frees its result
        g_object_unref(self);
        return;
    }
    GError *error = NULL;
    SdConversation *c = sd_service_conversation_load_finish(SD_SERVICE(src), res, &error);
    if (!c) {
        g_autofree char *m = g_strdup_printf("Cannot open the conversation: %s", error->message);
        sd_window_show_toast(self, m);
        g_error_free(error);
    } else {
        const char *t = g_hash_table_lookup(self->conv_titles, &c->id);
        sd_chat_view_show_conversation(SD_CHAT_VIEW(self->chat), c, t ? t : "a saved conversation");
        adw_window_title_set_subtitle(self->title, t ? t : "");
        sd_conversation_free(c);
    }
    g_object_unref(self);
}

static void on_conv_activated(GtkListBox *box, GtkListBoxRow *row, gpointer data)
{
    (void)box;
    SdWindow *self = data;
    gint64 *id = g_object_get_data(G_OBJECT(row), "sd-conv");
    if (id)
        sd_service_conversation_load_async(self->service, *id, NULL, conv_opened, g_object_ref(self));
}

// ---- cache ----

static void cache_stats_done(GObject *src, GAsyncResult *res, gpointer data)
{
    SdWindow *self = data;
    if (window_gone(self)) { // closed meanwhile: the task frees its result
        g_object_unref(self);
        return;
    }
    GError *error = NULL;
    SdCacheInfo *ci = sd_service_cache_stats_finish(SD_SERVICE(src), res, &error);
    if (!ci) {
        g_autofree char *m = g_strdup_printf("Cache unavailable: %s", error->message);
        gtk_label_set_text(GTK_LABEL(self->cache_label), m);
        g_error_free(error);
    } else {
        g_autofree char *size = g_format_size(ci->st.bytes), *budget = g_format_size(ci->st.budget);
        g_autofree char *m = g_strdup_printf("<b>KV prefix cache</b>\n%s of %s used\n%" G_GINT64_FORMAT
                                             " blocks in %" G_GINT64_FORMAT " chains\nhit rate %.0f%% "
                                             "(%" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " blocks)\n<small>%s</small>",
                                             size, budget, ci->st.entries, ci->st.chains, 100 * ci->st.hit_rate,
                                             ci->st.blocks_hit, ci->st.blocks_wanted, ci->path ? ci->path : "");
        gtk_label_set_markup(GTK_LABEL(self->cache_label), m);
        sd_cache_info_free(ci);
    }
    g_object_unref(self);
}

static void refresh_cache(SdWindow *self)
{
    sd_service_cache_stats_async(self->service, cache_stats_done, g_object_ref(self));
}

static void cache_cleared(GObject *src, GAsyncResult *res, gpointer data)
{
    SdWindow *self = data;
    if (window_gone(self)) { // closed meanwhile: the task frees its result
        g_object_unref(self);
        return;
    }
    GError *error = NULL;
    int n = sd_service_cache_clear_finish(SD_SERVICE(src), res, &error);
    g_autofree char *m = n < 0 ? g_strdup_printf("Could not clear the cache: %s", error->message)
                               : g_strdup_printf("Cache cleared: %d blocks removed", n);
    g_clear_error(&error);
    sd_window_show_toast(self, m);
    refresh_cache(self);
    g_object_unref(self);
}

static void act_clear_cache(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    SdWindow *self = SD_WINDOW(w);
    sd_service_cache_clear_async(self->service, cache_cleared, g_object_ref(self));
}

static void on_answer_done(gpointer user, gboolean ok)
{
    SdWindow *self = user;
    const char *e = sd_service_get_model_error(self->service);
    set_banner(self, ok ? NULL : e);
    refresh_cache(self);
    refresh_conversations(self);
    if (ok)
        sd_window_refresh(self); // token counts may have been filled in
}

// ---- accessors ----

SdChatView *sd_window_get_chat(SdWindow *self)
{
    return SD_CHAT_VIEW(self->chat);
}
SdPdfView *sd_window_get_pdf_view(SdWindow *self)
{
    return SD_PDF_VIEW(self->pdf);
}
SdSourceView *sd_window_get_source_view(SdWindow *self)
{
    return SD_SOURCE_VIEW(self->source);
}
const char *sd_window_get_viewer_mode(SdWindow *self)
{
    return self->viewer_mode;
}
guint sd_window_get_n_jobs(SdWindow *self)
{
    return self->n_jobs;
}
gboolean sd_window_is_refreshing(SdWindow *self)
{
    return self->refreshing || self->refresh_again;
}
GPtrArray *sd_window_get_docs(SdWindow *self)
{
    return self->docs;
}
guint sd_window_get_n_errors(SdWindow *self)
{
    return self->error_rows->len;
}

GtkWidget *sd_window_get_job_stop_button(SdWindow *self, guint i)
{
    GtkWidget *row = gtk_widget_get_first_child(self->jobs);
    for (; row && i > 0; i--)
        row = gtk_widget_get_next_sibling(row);
    return row ? g_object_get_data(G_OBJECT(row), "sd-stop") : NULL;
}

guint sd_window_get_n_conversations(SdWindow *self)
{
    return g_hash_table_size(self->conv_titles);
}

const char *sd_window_get_error(SdWindow *self, guint i)
{
    return i < self->error_rows->len ? g_object_get_data(g_ptr_array_index(self->error_rows, i), "sd-msg") : NULL;
}

GtkWidget *sd_window_get_error_password_button(SdWindow *self, guint i)
{
    return i < self->error_rows->len ? g_object_get_data(g_ptr_array_index(self->error_rows, i), "sd-password-button")
                                     : NULL;
}

// ---- construction ----

static void on_search_changed(SdWindow *self)
{
    gtk_list_box_invalidate_filter(GTK_LIST_BOX(self->library));
}

static void on_cache_popover(SdWindow *self)
{
    refresh_cache(self);
}

static void sd_window_dispose(GObject *obj)
{
    SdWindow *self = SD_WINDOW(obj);
    g_clear_pointer(&self->docs, g_ptr_array_unref);
    g_clear_pointer(&self->error_rows, g_ptr_array_unref);
    g_clear_pointer(&self->conv_titles, g_hash_table_unref);
    g_clear_pointer(&self->viewer_mode, g_free);
    g_clear_pointer(&self->banner_text, g_free);
    g_clear_pointer(&self->last_toast, g_free);
    g_clear_object(&self->service);
    gtk_widget_dispose_template(GTK_WIDGET(self), SD_TYPE_WINDOW);
    G_OBJECT_CLASS(sd_window_parent_class)->dispose(obj);
}

static void sd_window_class_init(SdWindowClass *klass)
{
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    G_OBJECT_CLASS(klass)->dispose = sd_window_dispose;
    g_type_ensure(SD_TYPE_CHAT_VIEW);
    g_type_ensure(SD_TYPE_PDF_VIEW);
    g_type_ensure(SD_TYPE_SOURCE_VIEW);
    gtk_widget_class_set_template_from_resource(wc, "/io/github/sparsedoc/Sparsedoc/sd-window.ui");
    gtk_widget_class_bind_template_child(wc, SdWindow, title);
    gtk_widget_class_bind_template_child(wc, SdWindow, toasts);
    gtk_widget_class_bind_template_child(wc, SdWindow, search_bar);
    gtk_widget_class_bind_template_child(wc, SdWindow, search_entry);
    gtk_widget_class_bind_template_child(wc, SdWindow, library);
    gtk_widget_class_bind_template_child(wc, SdWindow, jobs);
    gtk_widget_class_bind_template_child(wc, SdWindow, jobs_label);
    gtk_widget_class_bind_template_child(wc, SdWindow, errors);
    gtk_widget_class_bind_template_child(wc, SdWindow, errors_label);
    gtk_widget_class_bind_template_child(wc, SdWindow, convs);
    gtk_widget_class_bind_template_child(wc, SdWindow, convs_label);
    gtk_widget_class_bind_template_child(wc, SdWindow, chat);
    gtk_widget_class_bind_template_child(wc, SdWindow, viewer);
    gtk_widget_class_bind_template_child(wc, SdWindow, viewer_title);
    gtk_widget_class_bind_template_child(wc, SdWindow, viewer_stack);
    gtk_widget_class_bind_template_child(wc, SdWindow, pdf);
    gtk_widget_class_bind_template_child(wc, SdWindow, source);
    gtk_widget_class_bind_template_child(wc, SdWindow, banner);
    gtk_widget_class_bind_template_child(wc, SdWindow, banner_label);
    gtk_widget_class_bind_template_child(wc, SdWindow, cache_label);
    gtk_widget_class_bind_template_child(wc, SdWindow, empty_library);
    gtk_widget_class_bind_template_callback(wc, selection_changed);
    gtk_widget_class_bind_template_callback(wc, on_conv_activated);
    gtk_widget_class_bind_template_callback(wc, on_search_changed);
    gtk_widget_class_bind_template_callback(wc, on_cache_popover);
    gtk_widget_class_install_action(wc, "win.add-files", NULL, act_add_files);
    gtk_widget_class_install_action(wc, "win.add-folder", NULL, act_add_folder);
    gtk_widget_class_install_action(wc, "win.search", NULL, act_search);
    gtk_widget_class_install_action(wc, "win.ask", NULL, act_ask);
    gtk_widget_class_install_action(wc, "win.refresh", NULL, act_refresh);
    gtk_widget_class_install_action(wc, "win.close-viewer", NULL, act_close_viewer);
    gtk_widget_class_install_action(wc, "win.clear-cache", NULL, act_clear_cache);
    gtk_widget_class_add_binding_action(wc, GDK_KEY_o, GDK_CONTROL_MASK, "win.add-files", NULL);
    gtk_widget_class_add_binding_action(wc, GDK_KEY_o, GDK_CONTROL_MASK | GDK_SHIFT_MASK, "win.add-folder", NULL);
    gtk_widget_class_add_binding_action(wc, GDK_KEY_f, GDK_CONTROL_MASK, "win.search", NULL);
    gtk_widget_class_add_binding_action(wc, GDK_KEY_l, GDK_CONTROL_MASK, "win.ask", NULL);
    gtk_widget_class_add_binding_action(wc, GDK_KEY_F5, 0, "win.refresh", NULL);
    gtk_widget_class_add_binding_action(wc, GDK_KEY_w, GDK_CONTROL_MASK, "win.close-viewer", NULL);
}

static void sd_window_init(SdWindow *self)
{
    self->error_rows = g_ptr_array_new();
    self->conv_titles = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    gtk_widget_init_template(GTK_WIDGET(self));
    gtk_search_bar_connect_entry(GTK_SEARCH_BAR(self->search_bar), GTK_EDITABLE(self->search_entry));
    gtk_list_box_set_filter_func(GTK_LIST_BOX(self->library), filter_rows, self, NULL);
    sd_chat_view_set_citation_handler(SD_CHAT_VIEW(self->chat), on_citation, self);
    sd_chat_view_set_done_handler(SD_CHAT_VIEW(self->chat), on_answer_done, self);
    // Drops go through sd_window_add_files() like the file chooser (GdkContentFormats has no builder syntax).
    GtkDropTarget *drop = gtk_drop_target_new(GDK_TYPE_FILE_LIST, GDK_ACTION_COPY);
    g_signal_connect(drop, "drop", G_CALLBACK(on_drop), self);
    gtk_widget_add_controller(GTK_WIDGET(self), GTK_EVENT_CONTROLLER(drop));
    update_sections(self);
}

SdWindow *sd_window_new(GtkApplication *app, SdService *service)
{
    SdWindow *self = g_object_new(SD_TYPE_WINDOW, "application", app, NULL);
    self->service = g_object_ref(service);
    sd_chat_view_set_service(SD_CHAT_VIEW(self->chat), service);
    sd_window_refresh(self);
    refresh_cache(self);
    return self;
}
