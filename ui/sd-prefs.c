// sd-prefs.c: the preferences window on AdwPreferencesWindow (see sd-prefs.h).
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-prefs.h"

#include <stdlib.h>
#include <string.h>

#include "sd_build_config.h"

typedef struct {
    struct sd_settings s;
    SdPrefsChangedFn changed;
    gpointer user;
    GtkWidget *model_row;
} Prefs;

static void prefs_free(gpointer p)
{
    Prefs *pr = p;
    sd_settings_clear(&pr->s);
    g_free(pr);
}

static void emit(Prefs *pr)
{
    pr->changed(pr->user, &pr->s);
}

static void show_model(Prefs *pr)
{
    adw_action_row_set_subtitle(ADW_ACTION_ROW(pr->model_row),
                                pr->s.model_dir && *pr->s.model_dir
                                    ? pr->s.model_dir
                                    : "Default: $SPARSEDOC_MODEL, else the bundled sparsedoc-mini");
}

static void model_chosen(GtkNativeDialog *d, int response, gpointer data)
{
    Prefs *pr = data;
    if (response == GTK_RESPONSE_ACCEPT) {
        g_autoptr(GFile) f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(d));
        g_autofree char *p = f ? g_file_get_path(f) : NULL;
        if (p) {
            free(pr->s.model_dir);
            pr->s.model_dir = strdup(p);
            show_model(pr);
            emit(pr);
        }
    }
    g_object_unref(d);
}

static void on_choose_model(GtkButton *b, gpointer data)
{
    GtkFileChooserNative *d =
        gtk_file_chooser_native_new("Choose a Model Folder", GTK_WINDOW(gtk_widget_get_root(GTK_WIDGET(b))),
                                    GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Select", "_Cancel");
    g_signal_connect(d, "response", G_CALLBACK(model_chosen), data);
    gtk_native_dialog_show(GTK_NATIVE_DIALOG(d));
}

static void on_reset_model(GtkButton *b, gpointer data)
{
    (void)b;
    Prefs *pr = data;
    free(pr->s.model_dir);
    pr->s.model_dir = NULL;
    show_model(pr);
    emit(pr);
}

static const int ctx_values[] = {0, 65536, 98304, 131072};

static void on_combo(GObject *row, GParamSpec *ps, gpointer data)
{
    (void)ps;
    Prefs *pr = data;
    const char *which = g_object_get_data(row, "sd-key");
    guint i = adw_combo_row_get_selected(ADW_COMBO_ROW(row));
    if (!strcmp(which, "backend")) {
        free(pr->s.backend);
        pr->s.backend = strdup(i == 1 ? "cuda" : "cpu");
    } else if (!strcmp(which, "context")) {
        pr->s.n_ctx = ctx_values[MIN(i, G_N_ELEMENTS(ctx_values) - 1)];
    } else if (!strcmp(which, "scheme")) {
        pr->s.color_scheme = (enum sd_color_scheme)i;
    }
    emit(pr);
}

static void on_spin(GtkSpinButton *spin, gpointer data)
{
    Prefs *pr = data;
    const char *which = g_object_get_data(G_OBJECT(spin), "sd-key");
    int v = gtk_spin_button_get_value_as_int(spin);
    if (!strcmp(which, "topk"))
        pr->s.top_k = v;
    else if (!strcmp(which, "threads"))
        pr->s.n_threads = v;
    else if (!strcmp(which, "budget"))
        pr->s.cache_budget = (uint64_t)v << 20;
    emit(pr);
}

static GtkWidget *combo_row(Prefs *pr, const char *title, const char *subtitle, const char *key,
                            const char *const *items, guint selected)
{
    GtkWidget *row = adw_combo_row_new();
    adw_preferences_row_set_title(ADW_PREFERENCES_ROW(row), title);
    if (subtitle)
        adw_action_row_set_subtitle(ADW_ACTION_ROW(row), subtitle);
    GtkStringList *model = gtk_string_list_new(items);
    adw_combo_row_set_model(ADW_COMBO_ROW(row), G_LIST_MODEL(model));
    g_object_unref(model);
    adw_combo_row_set_selected(ADW_COMBO_ROW(row), selected);
    g_object_set_data(G_OBJECT(row), "sd-key", (gpointer)key);
    g_signal_connect(row, "notify::selected", G_CALLBACK(on_combo), pr);
    return row;
}

static GtkWidget *spin_row(Prefs *pr, const char *title, const char *subtitle, const char *key, double max, double v)
{
    GtkWidget *row = adw_action_row_new();
    adw_preferences_row_set_title(ADW_PREFERENCES_ROW(row), title);
    adw_action_row_set_subtitle(ADW_ACTION_ROW(row), subtitle);
    GtkWidget *spin = gtk_spin_button_new_with_range(0, max, 1);
    gtk_spin_button_set_value(GTK_SPIN_BUTTON(spin), v);
    gtk_widget_set_valign(spin, GTK_ALIGN_CENTER);
    gtk_accessible_update_property(GTK_ACCESSIBLE(spin), GTK_ACCESSIBLE_PROPERTY_LABEL, title, -1);
    g_object_set_data(G_OBJECT(spin), "sd-key", (gpointer)key);
    g_signal_connect(spin, "value-changed", G_CALLBACK(on_spin), pr);
    adw_action_row_add_suffix(ADW_ACTION_ROW(row), spin);
    adw_action_row_set_activatable_widget(ADW_ACTION_ROW(row), spin);
    return row;
}

GtkWidget *sd_prefs_window_new(GtkWindow *parent, const struct sd_settings *s, SdPrefsChangedFn changed, gpointer user)
{
    Prefs *pr = g_new0(Prefs, 1);
    pr->s = *s;
    pr->s.model_dir = s->model_dir ? strdup(s->model_dir) : NULL;
    pr->s.backend = strdup(s->backend ? s->backend : "cpu");
    pr->changed = changed;
    pr->user = user;

    GtkWidget *w = adw_preferences_window_new();
    gtk_window_set_transient_for(GTK_WINDOW(w), parent);
    gtk_window_set_modal(GTK_WINDOW(w), TRUE);
    gtk_window_set_default_size(GTK_WINDOW(w), 640, 720);
    adw_preferences_window_set_search_enabled(ADW_PREFERENCES_WINDOW(w), FALSE);
    g_object_set_data_full(G_OBJECT(w), "sd-prefs", pr, prefs_free);

    GtkWidget *page = adw_preferences_page_new();
    adw_preferences_page_set_title(ADW_PREFERENCES_PAGE(page), "General");
    adw_preferences_page_set_icon_name(ADW_PREFERENCES_PAGE(page), "preferences-system-symbolic");

    GtkWidget *g = adw_preferences_group_new();
    adw_preferences_group_set_title(ADW_PREFERENCES_GROUP(g), "Model");
    pr->model_row = adw_action_row_new();
    adw_preferences_row_set_title(ADW_PREFERENCES_ROW(pr->model_row), "Model folder");
    adw_preferences_row_set_use_markup(ADW_PREFERENCES_ROW(pr->model_row), FALSE);
    GtkWidget *choose = gtk_button_new_with_mnemonic("_Choose…");
    gtk_widget_set_valign(choose, GTK_ALIGN_CENTER);
    g_signal_connect(choose, "clicked", G_CALLBACK(on_choose_model), pr);
    GtkWidget *reset = gtk_button_new_from_icon_name("edit-undo-symbolic");
    gtk_widget_set_valign(reset, GTK_ALIGN_CENTER);
    gtk_widget_add_css_class(reset, "flat");
    gtk_widget_set_tooltip_text(reset, "Use the default model");
    gtk_accessible_update_property(GTK_ACCESSIBLE(reset), GTK_ACCESSIBLE_PROPERTY_LABEL, "Use the default model", -1);
    g_signal_connect(reset, "clicked", G_CALLBACK(on_reset_model), pr);
    adw_action_row_add_suffix(ADW_ACTION_ROW(pr->model_row), choose);
    adw_action_row_add_suffix(ADW_ACTION_ROW(pr->model_row), reset);
    show_model(pr);
    adw_preferences_group_add(ADW_PREFERENCES_GROUP(g), pr->model_row);
    static const char *backends_cuda[] = {"CPU", "CUDA", NULL};
    static const char *backends_cpu[] = {"CPU", NULL};
    GtkWidget *be = combo_row(
        pr, "Backend",
        SD_HAVE_CUDA ? "CUDA runs on an NVIDIA GPU when one is present" : "This build has no CUDA backend", "backend",
        SD_HAVE_CUDA ? backends_cuda : backends_cpu, SD_HAVE_CUDA && !g_strcmp0(pr->s.backend, "cuda") ? 1 : 0);
    adw_preferences_group_add(ADW_PREFERENCES_GROUP(g), be);
    adw_preferences_page_add(ADW_PREFERENCES_PAGE(page), ADW_PREFERENCES_GROUP(g));

    g = adw_preferences_group_new();
    adw_preferences_group_set_title(ADW_PREFERENCES_GROUP(g), "Engine");
    static const char *ctx[] = {"Default", "64K tokens", "96K tokens", "128K tokens", NULL};
    guint ci = 0;
    for (guint i = 0; i < G_N_ELEMENTS(ctx_values); i++)
        if (ctx_values[i] == pr->s.n_ctx)
            ci = i;
    adw_preferences_group_add(
        ADW_PREFERENCES_GROUP(g),
        combo_row(pr, "Context size",
                  "Tokens per prompt (documents, question, answer); default: the model's, at most 64K", "context", ctx,
                  ci));
    adw_preferences_group_add(ADW_PREFERENCES_GROUP(g),
                              spin_row(pr, "Sparse attention top-k", "Tokens each query attends to; 0: the model's",
                                       "topk", 65536, pr->s.top_k));
    adw_preferences_group_add(ADW_PREFERENCES_GROUP(g),
                              spin_row(pr, "Threads", "CPU threads; 0: all cores", "threads", 1024, pr->s.n_threads));
    adw_preferences_page_add(ADW_PREFERENCES_PAGE(page), ADW_PREFERENCES_GROUP(g));

    g = adw_preferences_group_new();
    adw_preferences_group_set_title(ADW_PREFERENCES_GROUP(g), "Cache");
    adw_preferences_group_set_description(ADW_PREFERENCES_GROUP(g),
                                          "Document prefixes already read are kept on disk and reused by later "
                                          "questions. Clear it from the cache button in the header bar.");
    adw_preferences_group_add(ADW_PREFERENCES_GROUP(g),
                              spin_row(pr, "Cache budget (MiB)", "0: 10% of the free disk space, at most 20 GiB",
                                       "budget", 16 << 20, (double)(pr->s.cache_budget >> 20)));
    adw_preferences_page_add(ADW_PREFERENCES_PAGE(page), ADW_PREFERENCES_GROUP(g));

    g = adw_preferences_group_new();
    adw_preferences_group_set_title(ADW_PREFERENCES_GROUP(g), "Appearance");
    static const char *schemes[] = {"Follow system", "Light", "Dark", NULL};
    adw_preferences_group_add(ADW_PREFERENCES_GROUP(g),
                              combo_row(pr, "Style", NULL, "scheme", schemes, (guint)pr->s.color_scheme));
    adw_preferences_page_add(ADW_PREFERENCES_PAGE(page), ADW_PREFERENCES_GROUP(g));

    adw_preferences_window_add(ADW_PREFERENCES_WINDOW(w), ADW_PREFERENCES_PAGE(page));
    return w;
}
