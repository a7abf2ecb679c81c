// sd-application.h: the AdwApplication: loads the shared settings (config.ini), owns the service,
// opens the main window, and holds the app-wide actions (preferences, shortcuts, about, quit) and
// their accelerators; applies the colour scheme through AdwStyleManager.
#pragma once

#include <adwaita.h>

#include "sd-service.h"
#include "sd-window.h"

G_BEGIN_DECLS

#define SD_APP_ID "io.github.sparsedoc.Sparsedoc"

#define SD_TYPE_APPLICATION (sd_application_get_type())
G_DECLARE_FINAL_TYPE(SdApplication, sd_application, SD, APPLICATION, AdwApplication)

SdApplication *sd_application_new(void);
SdService *sd_application_get_service(SdApplication *self);
SdWindow *sd_application_get_window(SdApplication *self); // NULL before activate
// Apply and save new settings (what the preferences window does).
void sd_application_apply_settings(SdApplication *self, const struct sd_settings *s);
const struct sd_settings *sd_application_get_settings(SdApplication *self);

G_END_DECLS
