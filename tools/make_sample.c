// make_sample.c: writes data/samples/harbor-notes.pdf, the small sample document `sparsedoc ask` is
// demonstrated and tested on (README, tests/test_qa.sh). Four short pages of prose (printed page numbers
// 112-115 as PDF page labels; each page under 9 sentences, like the training passages) with facts written in the
// templates sparsedoc-mini was trained on (tools/train/docgen.py): a vault access code (page 2, printed
// 113: the one the tests ask about), a project code name, a chief role and a meeting room. The PDF is
// generated once and committed; rerun after changing the text:
//   build/tools/make_sample data/samples/harbor-notes.pdf
#include <cairo-pdf.h>
#include <cairo.h>
#include <stdio.h>
#include <string.h>

#ifndef FIRST_LABEL
#define FIRST_LABEL 112
#endif

static const char *const pages[] = {
    // page 1 (label 112)
    "Harbor Station Operations Notes\n"
    "These notes describe how the harbor station is run from one season to the next. They are written for "
    "new staff who join the night shift. The station sits on the north side of the bay, between the old ferry "
    "pier and the grain silos. Every shift starts with a walk along the pier to check the mooring lines and "
    "the lights. The code name of project Tembrolin is Saffron. The project replaces the wooden fenders along "
    "the east wall with rubber ones.\n",
    // page 2 (label 113)
    "Storage and Security\n"
    "Spare parts, rope and safety gear are kept in three locked rooms under the main office. Anything taken "
    "out of storage is written on the sheet by the door. The radio spares and the backup batteries are kept "
    "in the vault at the end of the lower corridor. The access code for the Brenlow vault is KX-4821. The "
    "code is changed at the start of every season. If the vault alarm goes off, call the harbor master "
    "first.\n",
    // page 3 (label 114)
    "Repairs\n"
    "The cranes and the fuel pumps are serviced by an outside company. The chief engineer of Dravik Works is "
    "Mara Lindqvist. Her team visits the station every second week. Damage to a crane is reported to the "
    "harbor master the same night. A broken pump is marked with a red tag until it is fixed.\n",
    // page 4 (label 115)
    "People and Meetings\n"
    "The night shift has four people and the day shift has two. New staff spend their first week with an "
    "experienced colleague. The meeting about the budget in March takes place in room C-214. All shift leads "
    "bring the fuel and repair numbers for the last three months. Questions about these notes can be left at "
    "the front desk.\n",
};

// Draw text from (x, y) wrapped to width; a line ending in '\n' ends a paragraph. Returns the next y.
static double draw_wrapped(cairo_t *cr, const char *text, double x, double y, double width, double lh)
{
    char line[768] = "";
    const char *p = text;
    while (*p) {
        const char *e = p;
        while (*e && *e != ' ' && *e != '\n')
            e++;
        char word[256];
        size_t n = (size_t)(e - p) < sizeof word - 1 ? (size_t)(e - p) : sizeof word - 1;
        memcpy(word, p, n);
        word[n] = 0;
        char trial[1100];
        snprintf(trial, sizeof trial, "%s%s%s", line, *line ? " " : "", word);
        cairo_text_extents_t ex;
        cairo_text_extents(cr, trial, &ex);
        if (ex.x_advance > width && *line) {
            cairo_move_to(cr, x, y);
            cairo_show_text(cr, line);
            y += lh;
            snprintf(line, sizeof line, "%s", word);
        } else
            snprintf(line, sizeof line, "%.700s", trial);
        if (*e == '\n' || !*e) {
            cairo_move_to(cr, x, y);
            cairo_show_text(cr, line);
            y += lh * 1.6;
            line[0] = 0;
        }
        p = *e ? e + 1 : e;
    }
    return y;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_sample OUT.pdf\n");
        return 2;
    }
    const double w = 595, h = 842; // A4 in points
    cairo_surface_t *s = cairo_pdf_surface_create(argv[1], w, h);
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_TITLE, "Harbor Station Operations Notes");
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_AUTHOR, "sparsedoc sample");
    cairo_t *cr = cairo_create(s);
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        const char *nl = strchr(pages[i], '\n');
        char head[128];
        snprintf(head, sizeof head, "%.*s", (int)(nl - pages[i]), pages[i]);
        // The notes are an excerpt: printed page numbers (PDF page labels) start at FIRST_LABEL.
        char label[16];
        snprintf(label, sizeof label, "%zu", FIRST_LABEL + i);
        cairo_pdf_surface_set_page_label(s, label);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_select_font_face(cr, "serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
        cairo_set_font_size(cr, 16);
        cairo_move_to(cr, 72, 90);
        cairo_show_text(cr, head);
        cairo_select_font_face(cr, "serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
        cairo_set_font_size(cr, 11);
        draw_wrapped(cr, nl + 1, 72, 125, w - 144, 15);
        cairo_show_page(cr);
    }
    cairo_destroy(cr);
    cairo_surface_finish(s);
    int bad = cairo_surface_status(s) != CAIRO_STATUS_SUCCESS;
    if (bad)
        fprintf(stderr, "make_sample: %s: %s\n", argv[1], cairo_status_to_string(cairo_surface_status(s)));
    cairo_surface_destroy(s);
    return bad;
}
