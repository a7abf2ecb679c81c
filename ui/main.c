// main.c: sparsedoc-gtk's entry point: run the application (files given on the command line are added
// to the library, like a drop on the window).
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-application.h"

static void on_open(GApplication *app, GFile **files, int n, const char *hint, gpointer data)
{
    (void)hint;
    (void)data;
    g_application_activate(app);
    SdWindow *w = sd_application_get_window(SD_APPLICATION(app));
    if (w)
        sd_window_add_files(w, files, (guint)n, NULL);
}

int main(int argc, char **argv)
{
    SdApplication *app = sd_application_new();
    g_signal_connect(app, "open", G_CALLBACK(on_open), NULL);
    int rc = g_application_run(G_APPLICATION(app), argc, argv);
    g_object_unref(app);
    return rc;
}
