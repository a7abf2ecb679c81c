// sd-pdf-view.c: PDF page rendering with poppler-glib (see sd-pdf-view.h). The widgets are the composite
// template sd-pdf-view.ui; page navigation and zoom are the class actions pdf.previous-page, pdf.next-page,
// pdf.zoom-in, pdf.zoom-out and pdf.zoom-fit.
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-pdf-view.h"

#include <poppler.h>

struct _SdPdfView {
    GtkWidget parent_instance;
    GtkWidget *box, *label, *scroller, *area;
    PopplerDocument *doc;
    PopplerPage *page;
    int page_no;
    double zoom;     // 0: fit width
    GArray *hits;    // PopplerRectangle, page coordinates with y down: the quoted answer text
    GArray *passage; // the same, for the cited passage around it (drawn lighter)
};

G_DEFINE_FINAL_TYPE(SdPdfView, sd_pdf_view, GTK_TYPE_WIDGET)

static double scale_for(SdPdfView *self, double pw)
{
    if (self->zoom > 0)
        return self->zoom;
    int w = gtk_widget_get_width(self->scroller) - 24;
    return w > 50 && pw > 0 ? w / pw : 1.0;
}

static void update_size(SdPdfView *self)
{
    if (!self->page) {
        gtk_drawing_area_set_content_width(GTK_DRAWING_AREA(self->area), 1);
        gtk_drawing_area_set_content_height(GTK_DRAWING_AREA(self->area), 1);
        return;
    }
    double pw, ph;
    poppler_page_get_size(self->page, &pw, &ph);
    double s = scale_for(self, pw);
    gtk_drawing_area_set_content_width(GTK_DRAWING_AREA(self->area), (int)(pw * s) + 16);
    gtk_drawing_area_set_content_height(GTK_DRAWING_AREA(self->area), (int)(ph * s) + 16);
}

static void draw(GtkDrawingArea *area, cairo_t *cr, int width, int height, gpointer data)
{
    (void)area;
    (void)height;
    SdPdfView *self = data;
    if (!self->page)
        return;
    double pw, ph;
    poppler_page_get_size(self->page, &pw, &ph);
    double s = scale_for(self, pw);
    double x0 = MAX(8.0, (width - pw * s) / 2), y0 = 8.0;
    cairo_save(cr);
    cairo_translate(cr, x0, y0);
    cairo_scale(cr, s, s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, 0, 0, pw, ph);
    cairo_fill(cr);
    poppler_page_render(self->page, cr);
    cairo_set_source_rgba(cr, 1.0, 0.85, 0.0, 0.22);
    for (guint i = 0; i < self->passage->len; i++) {
        PopplerRectangle *r = &g_array_index(self->passage, PopplerRectangle, i);
        cairo_rectangle(cr, r->x1 - 1, r->y1 - 1, r->x2 - r->x1 + 2, r->y2 - r->y1 + 2);
    }
    cairo_fill(cr);
    cairo_set_source_rgba(cr, 1.0, 0.6, 0.0, 0.45);
    for (guint i = 0; i < self->hits->len; i++) {
        PopplerRectangle *r = &g_array_index(self->hits, PopplerRectangle, i);
        cairo_rectangle(cr, r->x1 - 1, r->y1 - 1, r->x2 - r->x1 + 2, r->y2 - r->y1 + 2);
    }
    cairo_fill(cr);
    cairo_restore(cr);
    // a thin frame around the page
    cairo_set_source_rgba(cr, 0, 0, 0, 0.25);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, x0 - 0.5, y0 - 0.5, pw * s + 1, ph * s + 1);
    cairo_stroke(cr);
}

static void update_label(SdPdfView *self)
{
    int n = self->doc ? poppler_document_get_n_pages(self->doc) : 0;
    char *t = NULL;
    if (self->page) {
        char *lab = poppler_page_get_label(self->page);
        char num[16];
        g_snprintf(num, sizeof num, "%d", self->page_no);
        t = lab && *lab && g_strcmp0(lab, num) ? g_strdup_printf("Page %d of %d (“%s”)", self->page_no, n, lab)
                                               : g_strdup_printf("Page %d of %d", self->page_no, n);
        g_free(lab);
    }
    gtk_label_set_text(GTK_LABEL(self->label), t ? t : "");
    g_free(t);
    gtk_widget_action_set_enabled(GTK_WIDGET(self), "pdf.previous-page", self->page_no > 1);
    gtk_widget_action_set_enabled(GTK_WIDGET(self), "pdf.next-page", self->page_no < n);
}

void sd_pdf_view_set_page(SdPdfView *self, int page_no)
{
    if (!self->doc)
        return;
    int n = poppler_document_get_n_pages(self->doc);
    page_no = CLAMP(page_no, 1, MAX(n, 1));
    g_clear_object(&self->page);
    self->page = poppler_document_get_page(self->doc, page_no - 1);
    self->page_no = self->page ? page_no : 0;
    g_array_set_size(self->hits, 0);
    g_array_set_size(self->passage, 0);
    update_size(self);
    update_label(self);
    gtk_adjustment_set_value(gtk_scrolled_window_get_vadjustment(GTK_SCROLLED_WINDOW(self->scroller)), 0);
    gtk_widget_queue_draw(self->area);
}

gboolean sd_pdf_view_open(SdPdfView *self, const char *path, const char *password, int page_no, GError **error)
{
    g_autoptr(GFile) f = g_file_new_for_path(path);
    g_autofree char *uri = g_file_get_uri(f);
    PopplerDocument *doc = poppler_document_new_from_file(uri, password, error);
    if (!doc)
        return FALSE;
    g_clear_object(&self->page);
    g_clear_object(&self->doc);
    self->doc = doc;
    sd_pdf_view_set_page(self, page_no);
    return TRUE;
}

int sd_pdf_view_get_page(SdPdfView *self)
{
    return self->page_no;
}
int sd_pdf_view_get_n_pages(SdPdfView *self)
{
    return self->doc ? poppler_document_get_n_pages(self->doc) : 0;
}
guint sd_pdf_view_get_n_highlights(SdPdfView *self)
{
    return self->hits->len;
}

static guint find_add(SdPdfView *self, GArray *into, const char *needle)
{
    double pw, ph;
    poppler_page_get_size(self->page, &pw, &ph);
    // MULTILINE: the passage may wrap across lines of the page.
    GList *found = poppler_page_find_text_with_options(self->page, needle, POPPLER_FIND_MULTILINE);
    guint n = 0;
    for (GList *l = found; l; l = l->next) {
        PopplerRectangle *r = l->data;
        // find_text gives PDF coordinates (origin bottom left); the renderer draws with y down.
        PopplerRectangle d = {r->x1, ph - r->y2, r->x2, ph - r->y1};
        g_array_append_val(into, d);
        n++;
        poppler_rectangle_free(r);
    }
    g_list_free(found);
    return n;
}

static guint highlight_into(SdPdfView *self, GArray *into, const char *text)
{
    g_array_set_size(into, 0);
    if (!self->page || !text)
        return 0;
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        g_strstrip(*l);
        if (g_utf8_strlen(*l, -1) < 3)
            continue;
        if (find_add(self, into, *l))
            continue;
        // The extracted text may differ from the page's (ligatures, hyphenation, header removal):
        // fall back to runs of up to six words.
        g_auto(GStrv) words = g_strsplit_set(*l, " \t", -1);
        guint nw = g_strv_length(words);
        for (guint i = 0; i < nw; i += 6) {
            GString *run = g_string_new(NULL);
            for (guint k = i; k < MIN(nw, i + 6); k++)
                if (*words[k])
                    g_string_append_printf(run, run->len ? " %s" : "%s", words[k]);
            if (g_utf8_strlen(run->str, -1) >= 8)
                find_add(self, into, run->str);
            g_string_free(run, TRUE);
        }
    }
    gtk_widget_queue_draw(self->area);
    return into->len;
}

guint sd_pdf_view_highlight(SdPdfView *self, const char *text)
{
    return highlight_into(self, self->hits, text);
}

guint sd_pdf_view_highlight_passage(SdPdfView *self, const char *text)
{
    return highlight_into(self, self->passage, text);
}

guint sd_pdf_view_get_n_passage_highlights(SdPdfView *self)
{
    return self->passage->len;
}

guint sd_pdf_view_highlight_boxes(SdPdfView *self, gboolean passage, const double *rects, guint n)
{
    GArray *into = passage ? self->passage : self->hits;
    g_array_set_size(into, 0);
    for (guint i = 0; self->page && i < n; i++) {
        PopplerRectangle r = {rects[4 * i], rects[4 * i + 1], rects[4 * i + 2], rects[4 * i + 3]};
        g_array_append_val(into, r);
    }
    gtk_widget_queue_draw(self->area);
    return into->len;
}

static void act_prev(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    SdPdfView *self = SD_PDF_VIEW(w);
    sd_pdf_view_set_page(self, self->page_no - 1);
}

static void act_next(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    SdPdfView *self = SD_PDF_VIEW(w);
    sd_pdf_view_set_page(self, self->page_no + 1);
}

static void set_zoom(SdPdfView *self, double z)
{
    self->zoom = z;
    update_size(self);
    gtk_widget_queue_draw(self->area);
}

static void act_zoom_in(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    SdPdfView *self = SD_PDF_VIEW(w);
    double pw = 600, ph;
    if (self->page)
        poppler_page_get_size(self->page, &pw, &ph);
    set_zoom(self, MIN(4.0, scale_for(self, pw) * 1.25));
}

static void act_zoom_out(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    SdPdfView *self = SD_PDF_VIEW(w);
    double pw = 600, ph;
    if (self->page)
        poppler_page_get_size(self->page, &pw, &ph);
    set_zoom(self, MAX(0.25, scale_for(self, pw) / 1.25));
}

static void act_zoom_fit(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    set_zoom(SD_PDF_VIEW(w), 0);
}

static void on_resize(GtkDrawingArea *a, int w, int h, SdPdfView *self)
{
    (void)a;
    (void)w;
    (void)h;
    if (self->zoom == 0)
        update_size(self);
}

static void sd_pdf_view_dispose(GObject *obj)
{
    SdPdfView *self = SD_PDF_VIEW(obj);
    g_clear_object(&self->page);
    g_clear_object(&self->doc);
    gtk_widget_dispose_template(GTK_WIDGET(self), SD_TYPE_PDF_VIEW);
    G_OBJECT_CLASS(sd_pdf_view_parent_class)->dispose(obj);
}

static void sd_pdf_view_finalize(GObject *obj)
{
    g_array_unref(SD_PDF_VIEW(obj)->hits);
    g_array_unref(SD_PDF_VIEW(obj)->passage);
    G_OBJECT_CLASS(sd_pdf_view_parent_class)->finalize(obj);
}

static void sd_pdf_view_class_init(SdPdfViewClass *klass)
{
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    G_OBJECT_CLASS(klass)->dispose = sd_pdf_view_dispose;
    G_OBJECT_CLASS(klass)->finalize = sd_pdf_view_finalize;
    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_accessible_role(wc, GTK_ACCESSIBLE_ROLE_GROUP);
    gtk_widget_class_set_template_from_resource(wc, "/io/github/sparsedoc/Sparsedoc/sd-pdf-view.ui");
    gtk_widget_class_bind_template_child(wc, SdPdfView, box);
    gtk_widget_class_bind_template_child(wc, SdPdfView, label);
    gtk_widget_class_bind_template_child(wc, SdPdfView, scroller);
    gtk_widget_class_bind_template_child(wc, SdPdfView, area);
    gtk_widget_class_bind_template_callback(wc, on_resize);
    gtk_widget_class_install_action(wc, "pdf.previous-page", NULL, act_prev);
    gtk_widget_class_install_action(wc, "pdf.next-page", NULL, act_next);
    gtk_widget_class_install_action(wc, "pdf.zoom-in", NULL, act_zoom_in);
    gtk_widget_class_install_action(wc, "pdf.zoom-out", NULL, act_zoom_out);
    gtk_widget_class_install_action(wc, "pdf.zoom-fit", NULL, act_zoom_fit);
}

static void sd_pdf_view_init(SdPdfView *self)
{
    self->hits = g_array_new(FALSE, FALSE, sizeof(PopplerRectangle));
    self->passage = g_array_new(FALSE, FALSE, sizeof(PopplerRectangle));
    gtk_widget_init_template(GTK_WIDGET(self));
    gtk_drawing_area_set_draw_func(GTK_DRAWING_AREA(self->area), draw, self, NULL);
    update_label(self);
}

GtkWidget *sd_pdf_view_new(void)
{
    return g_object_new(SD_TYPE_PDF_VIEW, NULL);
}
