// sd-prefs.h: the preferences window (model, backend, context size, top-k, threads, FP8 numerics, OCR of scanned
// pages, cache budget, appearance). Every change is applied at once through the callback, which saves and re-applies
// it.
#pragma once

#include <adwaita.h>

#include "settings.h"

G_BEGIN_DECLS

#define SD_TYPE_PREFS_WINDOW (sd_prefs_window_get_type())
G_DECLARE_FINAL_TYPE(SdPrefsWindow, sd_prefs_window, SD, PREFS_WINDOW, AdwPreferencesWindow)

typedef void (*SdPrefsChangedFn)(gpointer user, const struct sd_settings *s);
// A new SdPrefsWindow, transient for parent. s is copied; the window calls changed(user, new settings)
// after each edit.
GtkWidget *sd_prefs_window_new(GtkWindow *parent, const struct sd_settings *s, SdPrefsChangedFn changed, gpointer user);
// The OCR rows (borrowed; for tests): the on/off GtkSwitch and the languages AdwEntryRow.
GtkWidget *sd_prefs_window_get_ocr_switch(SdPrefsWindow *self);
GtkWidget *sd_prefs_window_get_ocr_lang_row(SdPrefsWindow *self);
// The FP8 switches (borrowed; for tests): act 0 the FP8 indexer, 1 FP8 activations, 2 the FP8 KV cache.
GtkWidget *sd_prefs_window_get_fp8_switch(SdPrefsWindow *self, int act);

G_END_DECLS
