// sd-prefs.c: the preferences window on AdwPreferencesWindow (see sd-prefs.h). The rows are the
// composite template sd-prefs.ui; choosing and resetting the model folder are the class actions
// prefs.choose-model and prefs.reset-model.
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-prefs.h"

#include <stdlib.h>
#include <string.h>

#include "sd_build_config.h"

struct _SdPrefsWindow {
    AdwPreferencesWindow parent_instance;
    struct sd_settings s;
    SdPrefsChangedFn changed;
    gpointer user;
    gboolean ready; // the rows show s: edits from now on are the user's
    AdwActionRow *model_row;
    AdwComboRow *backend_row, *context_row, *scheme_row;
    GtkStringList *backends;
    GtkSpinButton *topk_spin, *threads_spin, *budget_spin;
    GtkSwitch *ocr_switch, *ix_fp8_switch, *act_fp8_switch, *kv_fp8_switch;
    AdwEntryRow *ocr_lang_row;
};

G_DEFINE_FINAL_TYPE(SdPrefsWindow, sd_prefs_window, ADW_TYPE_PREFERENCES_WINDOW)

static const int ctx_values[] = {0, 65536, 98304, 131072};

static void emit(SdPrefsWindow *self)
{
    if (self->ready && self->changed)
        self->changed(self->user, &self->s);
}

static void show_model(SdPrefsWindow *self)
{
    adw_action_row_set_subtitle(self->model_row, self->s.model_dir && *self->s.model_dir
                                                     ? self->s.model_dir
                                                     : "Default: $SPARSEDOC_MODEL, else the bundled sparsedoc-mini");
}

static void model_chosen(GtkNativeDialog *d, int response, gpointer data)
{
    SdPrefsWindow *self = data;
    if (response == GTK_RESPONSE_ACCEPT) {
        g_autoptr(GFile) f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(d));
        g_autofree char *p = f ? g_file_get_path(f) : NULL;
        if (p) {
            free(self->s.model_dir);
            self->s.model_dir = strdup(p);
            show_model(self);
            emit(self);
        }
    }
    g_object_unref(d);
    g_object_unref(self);
}

// GtkFileDialog needs GTK 4.10; Debian 12 has 4.8, so this uses GtkFileChooserNative (portal-aware).
static void act_choose_model(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    GtkFileChooserNative *d = gtk_file_chooser_native_new("Choose a Model Folder", GTK_WINDOW(w),
                                                          GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Select", "_Cancel");
    g_signal_connect(d, "response", G_CALLBACK(model_chosen), g_object_ref(w));
    gtk_native_dialog_show(GTK_NATIVE_DIALOG(d));
}

static void act_reset_model(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    SdPrefsWindow *self = SD_PREFS_WINDOW(w);
    g_clear_pointer(&self->s.model_dir, free);
    show_model(self);
    emit(self);
}

static void on_backend(SdPrefsWindow *self)
{
    free(self->s.backend);
    self->s.backend = strdup(adw_combo_row_get_selected(self->backend_row) == 1 ? "cuda" : "cpu");
    emit(self);
}

static void on_context(SdPrefsWindow *self)
{
    guint i = adw_combo_row_get_selected(self->context_row);
    self->s.n_ctx = ctx_values[MIN(i, G_N_ELEMENTS(ctx_values) - 1)];
    emit(self);
}

static void on_scheme(SdPrefsWindow *self)
{
    self->s.color_scheme = (enum sd_color_scheme)adw_combo_row_get_selected(self->scheme_row);
    emit(self);
}

static void on_spin(SdPrefsWindow *self, GtkSpinButton *spin)
{
    int v = gtk_spin_button_get_value_as_int(spin);
    if (spin == self->topk_spin)
        self->s.top_k = v;
    else if (spin == self->threads_spin)
        self->s.n_threads = v;
    else if (spin == self->budget_spin)
        self->s.cache_budget = (uint64_t)v << 20;
    emit(self);
}

static void on_fp8(SdPrefsWindow *self)
{
    self->s.indexer_fp8 = gtk_switch_get_active(self->ix_fp8_switch);
    self->s.fp8_act = gtk_switch_get_active(self->act_fp8_switch);
    self->s.kv_fp8 = gtk_switch_get_active(self->kv_fp8_switch);
    emit(self);
}

static void on_ocr(SdPrefsWindow *self)
{
    self->s.no_ocr = !gtk_switch_get_active(self->ocr_switch);
    emit(self);
}

// Applied with the row's apply button or Enter; a malformed list is marked and not saved.
static void on_ocr_lang(SdPrefsWindow *self)
{
    const char *v = gtk_editable_get_text(GTK_EDITABLE(self->ocr_lang_row));
    if (*v && !sd_settings_ocr_lang_ok(v)) {
        gtk_widget_add_css_class(GTK_WIDGET(self->ocr_lang_row), "error");
        return;
    }
    gtk_widget_remove_css_class(GTK_WIDGET(self->ocr_lang_row), "error");
    free(self->s.ocr_lang);
    self->s.ocr_lang = *v ? strdup(v) : NULL;
    emit(self);
}

static void sd_prefs_window_finalize(GObject *obj)
{
    sd_settings_clear(&SD_PREFS_WINDOW(obj)->s);
    G_OBJECT_CLASS(sd_prefs_window_parent_class)->finalize(obj);
}

static void sd_prefs_window_class_init(SdPrefsWindowClass *klass)
{
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    G_OBJECT_CLASS(klass)->finalize = sd_prefs_window_finalize;
    gtk_widget_class_set_template_from_resource(wc, "/io/github/sparsedoc/Sparsedoc/sd-prefs.ui");
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, model_row);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, backend_row);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, backends);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, context_row);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, scheme_row);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, topk_spin);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, threads_spin);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, budget_spin);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, ocr_switch);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, ix_fp8_switch);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, act_fp8_switch);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, kv_fp8_switch);
    gtk_widget_class_bind_template_callback(wc, on_fp8);
    gtk_widget_class_bind_template_child(wc, SdPrefsWindow, ocr_lang_row);
    gtk_widget_class_bind_template_callback(wc, on_backend);
    gtk_widget_class_bind_template_callback(wc, on_context);
    gtk_widget_class_bind_template_callback(wc, on_scheme);
    gtk_widget_class_bind_template_callback(wc, on_spin);
    gtk_widget_class_bind_template_callback(wc, on_ocr);
    gtk_widget_class_bind_template_callback(wc, on_ocr_lang);
    gtk_widget_class_install_action(wc, "prefs.choose-model", NULL, act_choose_model);
    gtk_widget_class_install_action(wc, "prefs.reset-model", NULL, act_reset_model);
}

static void sd_prefs_window_init(SdPrefsWindow *self)
{
    gtk_widget_init_template(GTK_WIDGET(self));
    if (!SD_HAVE_CUDA)
        gtk_string_list_remove(self->backends, 1);
    adw_action_row_set_subtitle(ADW_ACTION_ROW(self->backend_row),
                                SD_HAVE_CUDA ? "CUDA runs on an NVIDIA GPU when one is present"
                                             : "This build has no CUDA backend");
}

GtkWidget *sd_prefs_window_new(GtkWindow *parent, const struct sd_settings *s, SdPrefsChangedFn changed, gpointer user)
{
    SdPrefsWindow *self = g_object_new(SD_TYPE_PREFS_WINDOW, "transient-for", parent, NULL);
    if (sd_settings_copy(&self->s, s) != SD_OK) // out of memory: the defaults are shown
        g_warning("preferences: out of memory copying the settings");
    if (!self->s.backend)
        self->s.backend = strdup("cpu");
    self->changed = changed;
    self->user = user;
    show_model(self);
    adw_combo_row_set_selected(self->backend_row, SD_HAVE_CUDA && !g_strcmp0(self->s.backend, "cuda") ? 1 : 0);
    guint ci = 0;
    for (guint i = 0; i < G_N_ELEMENTS(ctx_values); i++)
        if (ctx_values[i] == self->s.n_ctx)
            ci = i;
    adw_combo_row_set_selected(self->context_row, ci);
    adw_combo_row_set_selected(self->scheme_row, (guint)self->s.color_scheme);
    gtk_spin_button_set_value(self->topk_spin, self->s.top_k);
    gtk_spin_button_set_value(self->threads_spin, self->s.n_threads);
    gtk_spin_button_set_value(self->budget_spin, (double)(self->s.cache_budget >> 20));
    gtk_switch_set_active(self->ocr_switch, !self->s.no_ocr);
    gtk_switch_set_active(self->ix_fp8_switch, self->s.indexer_fp8 != 0);
    gtk_switch_set_active(self->act_fp8_switch, self->s.fp8_act != 0);
    gtk_switch_set_active(self->kv_fp8_switch, self->s.kv_fp8 != 0);
    gtk_editable_set_text(GTK_EDITABLE(self->ocr_lang_row), sd_settings_ocr_lang(&self->s));
    self->ready = TRUE;
    return GTK_WIDGET(self);
}

GtkWidget *sd_prefs_window_get_ocr_switch(SdPrefsWindow *self)
{
    return GTK_WIDGET(self->ocr_switch);
}

GtkWidget *sd_prefs_window_get_ocr_lang_row(SdPrefsWindow *self)
{
    return GTK_WIDGET(self->ocr_lang_row);
}

GtkWidget *sd_prefs_window_get_fp8_switch(SdPrefsWindow *self, int act)
{
    return GTK_WIDGET(act == 2 ? self->kv_fp8_switch : act ? self->act_fp8_switch : self->ix_fp8_switch);
}
