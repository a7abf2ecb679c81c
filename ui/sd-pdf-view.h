// sd-pdf-view.h: a PDF page viewer on poppler-glib + cairo: one page at a time, fit to width or zoomed,
// with page navigation and the cited passage highlighted (poppler_page_find_text).
#pragma once

#include <gtk/gtk.h>

G_BEGIN_DECLS

#define SD_TYPE_PDF_VIEW (sd_pdf_view_get_type())
G_DECLARE_FINAL_TYPE(SdPdfView, sd_pdf_view, SD, PDF_VIEW, GtkWidget)

GtkWidget *sd_pdf_view_new(void);
// Open path (password may be NULL) at page_no (1-based). Returns FALSE with error when it cannot be opened.
gboolean sd_pdf_view_open(SdPdfView *self, const char *path, const char *password, int page_no, GError **error);
void sd_pdf_view_set_page(SdPdfView *self, int page_no);
int sd_pdf_view_get_page(SdPdfView *self); // 1-based; 0 when nothing is open
int sd_pdf_view_get_n_pages(SdPdfView *self);
// Highlight the occurrences of each non-empty line of text on the current page (and of its longest
// phrases when a whole line is not found). Returns the number of rectangles highlighted.
guint sd_pdf_view_highlight(SdPdfView *self, const char *text);
guint sd_pdf_view_get_n_highlights(SdPdfView *self);
// The same for the cited passage around the quote, drawn lighter.
guint sd_pdf_view_highlight_passage(SdPdfView *self, const char *text);
guint sd_pdf_view_get_n_passage_highlights(SdPdfView *self);
// Highlight given boxes instead (4 doubles each: x0, y0, x1, y1 in PDF points from the page's top left) as
// the quote's (passage FALSE) or the passage's highlights: on scanned pages, where OCR found the words.
guint sd_pdf_view_highlight_boxes(SdPdfView *self, gboolean passage, const double *rects, guint n);

G_END_DECLS
