// sd-application.c: the application object (see sd-application.h). The keyboard shortcuts window is
// sd-shortcuts.ui in the resource bundle.
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-application.h"

#include <stdlib.h>
#include <string.h>

#include "sd-prefs.h"
#include "sd_build_config.h"

struct _SdApplication {
    AdwApplication parent_instance;
    struct sd_settings settings;
    char *settings_error;
    SdService *service;
    SdWindow *window;
};

G_DEFINE_FINAL_TYPE(SdApplication, sd_application, ADW_TYPE_APPLICATION)

static void apply_scheme(enum sd_color_scheme c)
{
    adw_style_manager_set_color_scheme(adw_style_manager_get_default(), c == SD_COLOR_DARK ? ADW_COLOR_SCHEME_FORCE_DARK
                                                                        : c == SD_COLOR_LIGHT
                                                                            ? ADW_COLOR_SCHEME_FORCE_LIGHT
                                                                            : ADW_COLOR_SCHEME_PREFER_LIGHT);
}

void sd_application_apply_settings(SdApplication *self, const struct sd_settings *s)
{
    if (s != &self->settings) {
        // Copy first: s may borrow strings of self->settings, which the clear frees.
        struct sd_settings copy;
        if (sd_settings_copy(&copy, s) != SD_OK) {
            if (self->window)
                sd_window_show_toast(self->window, "Out of memory: the settings were not changed");
            return;
        }
        sd_settings_clear(&self->settings);
        self->settings = copy;
    }
    apply_scheme(self->settings.color_scheme);
    sd_service_set_settings(self->service, &self->settings);
    struct sd_err err = {0};
    if (sd_settings_save(NULL, &self->settings, &err) && self->window)
        sd_window_show_toast(self->window, err.msg);
}

const struct sd_settings *sd_application_get_settings(SdApplication *self)
{
    return &self->settings;
}
SdService *sd_application_get_service(SdApplication *self)
{
    return self->service;
}
SdWindow *sd_application_get_window(SdApplication *self)
{
    return self->window;
}

static void prefs_changed(gpointer user, const struct sd_settings *s)
{
    sd_application_apply_settings(SD_APPLICATION(user), s);
}

static void act_preferences(GSimpleAction *a, GVariant *p, gpointer data)
{
    (void)a;
    (void)p;
    SdApplication *self = data;
    GtkWidget *w = sd_prefs_window_new(GTK_WINDOW(self->window), &self->settings, prefs_changed, self);
    gtk_window_present(GTK_WINDOW(w));
}

static void act_about(GSimpleAction *a, GVariant *p, gpointer data)
{
    (void)a;
    (void)p;
    SdApplication *self = data;
    const char *devs[] = {"The sparsedoc authors", NULL};
    GtkWidget *w = adw_about_window_new();
    gtk_window_set_transient_for(GTK_WINDOW(w), GTK_WINDOW(self->window));
    adw_about_window_set_application_name(ADW_ABOUT_WINDOW(w), "sparsedoc");
    adw_about_window_set_application_icon(ADW_ABOUT_WINDOW(w), SD_APP_ID);
    adw_about_window_set_version(ADW_ABOUT_WINDOW(w), SD_VERSION);
    adw_about_window_set_comments(ADW_ABOUT_WINDOW(w),
                                  "Ask questions about long documents and code on your own computer, with answers "
                                  "that cite their page or line. Runs a local model with DeepSeek Sparse Attention "
                                  "and reuses what it has already read.");
    adw_about_window_set_developers(ADW_ABOUT_WINDOW(w), devs);
    adw_about_window_set_license_type(ADW_ABOUT_WINDOW(w), GTK_LICENSE_MIT_X11);
    adw_about_window_set_copyright(ADW_ABOUT_WINDOW(w), "© 2026 The sparsedoc authors");
    gtk_window_present(GTK_WINDOW(w));
}

static void act_shortcuts(GSimpleAction *a, GVariant *p, gpointer data)
{
    (void)a;
    (void)p;
    SdApplication *self = data;
    g_autoptr(GtkBuilder) b = gtk_builder_new_from_resource("/io/github/sparsedoc/Sparsedoc/sd-shortcuts.ui");
    GtkWindow *w = GTK_WINDOW(gtk_builder_get_object(b, "shortcuts"));
    gtk_window_set_transient_for(w, GTK_WINDOW(self->window));
    gtk_window_present(w);
}

static void act_quit(GSimpleAction *a, GVariant *p, gpointer data)
{
    (void)a;
    (void)p;
    SdApplication *self = data;
    if (self->window)
        gtk_window_destroy(GTK_WINDOW(self->window));
    g_application_quit(G_APPLICATION(self));
}

static void sd_application_startup(GApplication *app)
{
    SdApplication *self = SD_APPLICATION(app);
    G_APPLICATION_CLASS(sd_application_parent_class)->startup(app);
    struct sd_err err = {0};
    if (sd_settings_load(NULL, &self->settings, &err))
        self->settings_error = g_strdup(err.msg);
    self->service = sd_service_new(&self->settings);
    apply_scheme(self->settings.color_scheme);

    // style.css and icons/ under the resource base path are loaded by AdwApplication / GtkApplication.

    static const GActionEntry entries[] = {
        {.name = "preferences", .activate = act_preferences},
        {.name = "about", .activate = act_about},
        {.name = "shortcuts", .activate = act_shortcuts},
        {.name = "quit", .activate = act_quit},
    };
    g_action_map_add_action_entries(G_ACTION_MAP(app), entries, G_N_ELEMENTS(entries), app);
    struct {
        const char *action, *accels[3];
    } accels[] = {
        {"app.quit", {"<Ctrl>q", NULL}},
        {"app.preferences", {"<Ctrl>comma", NULL}},
        {"app.shortcuts", {"<Ctrl>question", NULL}},
        {"win.add-files", {"<Ctrl>o", NULL}},
        {"win.add-folder", {"<Ctrl><Shift>o", NULL}},
        {"win.search", {"<Ctrl>f", NULL}},
        {"win.refresh", {"F5", NULL}},
        {"win.close-viewer", {"<Ctrl>w", NULL}},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(accels); i++)
        gtk_application_set_accels_for_action(GTK_APPLICATION(app), accels[i].action, accels[i].accels);
}

static void sd_application_activate(GApplication *app)
{
    SdApplication *self = SD_APPLICATION(app);
    if (!self->window) {
        self->window = sd_window_new(GTK_APPLICATION(app), self->service);
        g_object_add_weak_pointer(G_OBJECT(self->window), (gpointer *)&self->window);
        if (self->settings_error)
            sd_window_show_toast(self->window, self->settings_error);
    }
    gtk_window_present(GTK_WINDOW(self->window));
}

static void sd_application_dispose(GObject *obj)
{
    SdApplication *self = SD_APPLICATION(obj);
    g_clear_object(&self->service);
    G_OBJECT_CLASS(sd_application_parent_class)->dispose(obj);
}

static void sd_application_finalize(GObject *obj)
{
    SdApplication *self = SD_APPLICATION(obj);
    sd_settings_clear(&self->settings);
    g_free(self->settings_error);
    G_OBJECT_CLASS(sd_application_parent_class)->finalize(obj);
}

static void sd_application_class_init(SdApplicationClass *klass)
{
    G_OBJECT_CLASS(klass)->dispose = sd_application_dispose;
    G_OBJECT_CLASS(klass)->finalize = sd_application_finalize;
    G_APPLICATION_CLASS(klass)->startup = sd_application_startup;
    G_APPLICATION_CLASS(klass)->activate = sd_application_activate;
}

static void sd_application_init(SdApplication *self)
{
    (void)self;
}

SdApplication *sd_application_new(void)
{
    return g_object_new(SD_TYPE_APPLICATION, "application-id", SD_APP_ID, "flags", G_APPLICATION_HANDLES_OPEN,
                        "resource-base-path", "/io/github/sparsedoc/Sparsedoc", NULL);
}
