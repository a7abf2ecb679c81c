// test_scan.h: scans drawn with cairo for the OCR tests (test_data_ocr.c, test_ui.c): a paragraph of known
// text as an image, and a PDF of an image-only page, a blank image page and a page with a text layer.
// Header-only (static functions).
#ifndef SD_TEST_SCAN_H
#define SD_TEST_SCAN_H

#include <cairo-pdf.h>
#include <cairo.h>

static const char *LINES[] = {"The Brenlow vault opens with code KX-4821.", "Harbor fees rose in 1998 by",
                              "twelve percent after the storm."};
#define N_LINES 3

// Draw LINES in black on white into an RGB24 image of w x h at dpi.
static __attribute__((unused)) cairo_surface_t *text_image(int w, int h, double dpi, int blank)
{
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    if (!blank) {
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
        cairo_set_font_size(cr, 14 * dpi / 72); // 14 pt
        for (int i = 0; i < N_LINES; i++) {
            cairo_move_to(cr, 72 * dpi / 72, (100 + 24 * i) * dpi / 72);
            cairo_show_text(cr, LINES[i]);
        }
    }
    cairo_destroy(cr);
    cairo_surface_flush(s);
    return s;
}

// An image-only page of LINES, a blank image page, then a page with a real text layer.
// Returns 0 on success.
static __attribute__((unused)) int make_pdf(const char *path)
{
    const double dpi = 200;
    cairo_surface_t *pdf = cairo_pdf_surface_create(path, 612, 792);
    cairo_t *cr = cairo_create(pdf);
    for (int page = 0; page < 2; page++) {
        cairo_surface_t *img = text_image((int)(612 * dpi / 72), (int)(792 * dpi / 72), dpi, page == 1);
        cairo_save(cr);
        cairo_scale(cr, 72 / dpi, 72 / dpi);
        cairo_set_source_surface(cr, img, 0, 0);
        cairo_paint(cr);
        cairo_restore(cr);
        cairo_surface_destroy(img);
        cairo_show_page(cr);
    }
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 12);
    for (int i = 0; i < 6; i++) {
        cairo_move_to(cr, 72, 100 + 20 * i);
        cairo_show_text(cr, "This third page has an ordinary text layer about the harbor master's office hours.");
    }
    cairo_show_page(cr);
    cairo_destroy(cr);
    cairo_surface_finish(pdf);
    int bad = cairo_surface_status(pdf) != CAIRO_STATUS_SUCCESS;
    cairo_surface_destroy(pdf);
    return bad;
}

#endif
