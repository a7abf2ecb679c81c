// sd-chat-turn.c: one question and its answer (see sd-chat-turn.h). The widgets are the composite template
// sd-chat-turn.ui; the citation buttons activate the class action turn.open-citation with their index.
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-chat-turn.h"

#include <adwaita.h>

struct _SdChatTurn {
    GtkWidget parent_instance;
    GtkWidget *box, *question, *progress, *answer, *cites, *status;
    GString *text;
    guint n_pieces;
    char *status_text;
    struct sd_qa_result *result; // when finished (or stopped)
    GPtrArray *cite_buttons;     // borrowed: children of cites
};

G_DEFINE_FINAL_TYPE(SdChatTurn, sd_chat_turn, GTK_TYPE_WIDGET)

enum { SIG_CITATION_CLICKED, N_SIGNALS };
static guint signals[N_SIGNALS];

void sd_chat_turn_append(SdChatTurn *self, const char *piece)
{
    g_string_append(self->text, piece);
    self->n_pieces++;
    gtk_label_set_text(GTK_LABEL(self->answer), self->text->str);
    gtk_widget_set_visible(self->answer, TRUE);
    gtk_label_set_text(GTK_LABEL(self->progress), "Answering…");
}

void sd_chat_turn_set_answer(SdChatTurn *self, const char *text)
{
    g_string_assign(self->text, text);
    gtk_label_set_text(GTK_LABEL(self->answer), text);
    gtk_widget_set_visible(self->answer, TRUE);
}

void sd_chat_turn_set_progress(SdChatTurn *self, const char *text)
{
    if (text)
        gtk_label_set_text(GTK_LABEL(self->progress), text);
    gtk_widget_set_visible(self->progress, text != NULL);
}

void sd_chat_turn_set_status(SdChatTurn *self, const char *css, const char *text)
{
    g_free(self->status_text);
    self->status_text = g_strdup(text);
    gtk_label_set_text(GTK_LABEL(self->status), text);
    static const char *const classes[] = {"caption", NULL};
    gtk_widget_set_css_classes(self->status, (const char **)classes);
    g_auto(GStrv) add = g_strsplit(css ? css : "", " ", -1);
    for (char **c = add; *c; c++)
        if (**c)
            gtk_widget_add_css_class(self->status, *c);
    gtk_widget_set_visible(self->status, TRUE);
}

static void add_citation_buttons(SdChatTurn *self)
{
    for (size_t i = 0; i < self->result->n_cites; i++) {
        const struct sd_qa_citation *c = &self->result->cites[i];
        g_autofree char *name =
            c->title && *c->title ? g_strdup(c->title) : g_path_get_basename(c->path ? c->path : "?");
        g_autofree char *label = NULL;
        if (!c->valid)
            label = g_strdup_printf("%s (not in the documents)", c->marker);
        else if (c->page_no > 0 && c->page_label && *c->page_label)
            label = g_strdup_printf("%s · p. %s", name, c->page_label);
        else if (c->page_no > 0)
            label = g_strdup_printf("%s · page %d", name, c->page_no);
        else
            label = g_strdup_printf("%s:%d", name, c->line_start);
        GtkWidget *b = gtk_button_new();
        GtkWidget *content = adw_button_content_new();
        adw_button_content_set_icon_name(ADW_BUTTON_CONTENT(content),
                                         c->page_no > 0 ? "x-office-document-symbolic" : "text-x-generic-symbolic");
        adw_button_content_set_label(ADW_BUTTON_CONTENT(content), label);
        gtk_button_set_child(GTK_BUTTON(b), content);
        gtk_widget_add_css_class(b, "pill");
        gtk_widget_add_css_class(b, "sd-cite");
        g_autofree char *hint = c->corrected_from ? g_strdup_printf(" (the model wrote %s)", c->corrected_from)
                                : g_strdup(c->valid && c->grounded == 0 ? " (not found in the cited passage)" : "");
        g_autofree char *tip =
            g_strdup_printf("Open %s at %s%s", c->path ? c->path : "the source", c->marker, hint);
        gtk_widget_set_tooltip_text(b, tip);
        gtk_accessible_update_property(GTK_ACCESSIBLE(b), GTK_ACCESSIBLE_PROPERTY_LABEL, tip, -1);
        if (c->valid) {
            gtk_actionable_set_action_name(GTK_ACTIONABLE(b), "turn.open-citation");
            gtk_actionable_set_action_target(GTK_ACTIONABLE(b), "u", (guint32)i);
        } else { // nothing to open
            gtk_widget_set_sensitive(b, FALSE);
        }
        gtk_flow_box_append(GTK_FLOW_BOX(self->cites), b);
        g_ptr_array_add(self->cite_buttons, b);
    }
    gtk_widget_set_visible(self->cites, self->result->n_cites > 0);
}

void sd_chat_turn_set_result(SdChatTurn *self, struct sd_qa_result *r)
{
    sd_service_result_free(self->result);
    self->result = r;
    sd_chat_turn_set_answer(self, r->answer && *r->answer ? r->answer : "(empty answer)");
    add_citation_buttons(self);
}

const char *sd_chat_turn_get_answer(SdChatTurn *self)
{
    return self->result && self->result->answer ? self->result->answer : self->text->str;
}
guint sd_chat_turn_get_n_pieces(SdChatTurn *self)
{
    return self->n_pieces;
}
const char *sd_chat_turn_get_status(SdChatTurn *self)
{
    return self->status_text;
}
const struct sd_qa_result *sd_chat_turn_get_result(SdChatTurn *self)
{
    return self->result;
}
guint sd_chat_turn_get_n_citations(SdChatTurn *self)
{
    return self->cite_buttons->len;
}
GtkWidget *sd_chat_turn_get_citation_button(SdChatTurn *self, guint i)
{
    return i < self->cite_buttons->len ? g_ptr_array_index(self->cite_buttons, i) : NULL;
}

static void act_open_citation(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    SdChatTurn *self = SD_CHAT_TURN(w);
    guint i = g_variant_get_uint32(p);
    if (self->result && i < self->result->n_cites)
        g_signal_emit(self, signals[SIG_CITATION_CLICKED], 0, i);
}

static void sd_chat_turn_dispose(GObject *obj)
{
    SdChatTurn *self = SD_CHAT_TURN(obj);
    g_clear_pointer(&self->cite_buttons, g_ptr_array_unref);
    gtk_widget_dispose_template(GTK_WIDGET(self), SD_TYPE_CHAT_TURN);
    G_OBJECT_CLASS(sd_chat_turn_parent_class)->dispose(obj);
}

static void sd_chat_turn_finalize(GObject *obj)
{
    SdChatTurn *self = SD_CHAT_TURN(obj);
    g_string_free(self->text, TRUE);
    g_free(self->status_text);
    sd_service_result_free(self->result);
    G_OBJECT_CLASS(sd_chat_turn_parent_class)->finalize(obj);
}

static void sd_chat_turn_class_init(SdChatTurnClass *klass)
{
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    G_OBJECT_CLASS(klass)->dispose = sd_chat_turn_dispose;
    G_OBJECT_CLASS(klass)->finalize = sd_chat_turn_finalize;
    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_template_from_resource(wc, "/io/github/sparsedoc/Sparsedoc/sd-chat-turn.ui");
    gtk_widget_class_bind_template_child(wc, SdChatTurn, box);
    gtk_widget_class_bind_template_child(wc, SdChatTurn, question);
    gtk_widget_class_bind_template_child(wc, SdChatTurn, progress);
    gtk_widget_class_bind_template_child(wc, SdChatTurn, answer);
    gtk_widget_class_bind_template_child(wc, SdChatTurn, cites);
    gtk_widget_class_bind_template_child(wc, SdChatTurn, status);
    gtk_widget_class_install_action(wc, "turn.open-citation", "u", act_open_citation);
    signals[SIG_CITATION_CLICKED] = g_signal_new("citation-clicked", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0,
                                                 NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_UINT);
}

static void sd_chat_turn_init(SdChatTurn *self)
{
    self->text = g_string_new(NULL);
    self->cite_buttons = g_ptr_array_new();
    gtk_widget_init_template(GTK_WIDGET(self));
}

GtkWidget *sd_chat_turn_new(const char *question)
{
    SdChatTurn *self = g_object_new(SD_TYPE_CHAT_TURN, NULL);
    gtk_label_set_text(GTK_LABEL(self->question), question);
    return GTK_WIDGET(self);
}
