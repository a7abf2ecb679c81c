// sd-chat-view.c: the chat pane (see sd-chat-view.h).
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-chat-view.h"

#include <adwaita.h>
#include <string.h>

// One question and its answer.
typedef struct {
    GtkWidget *box, *answer, *progress, *cites, *status;
    GString *text;
    guint n_pieces;
    char *status_text;
    struct sd_qa_result *result; // when finished (or stopped)
    GPtrArray *cite_buttons;
} Turn;

// One scope's conversation.
typedef struct {
    GtkWidget *scroller, *list, *empty;
    GArray *doc_ids; // gint64
    gint64 conv_id;
    char *label;
    Turn *last;
} Page;

struct _SdChatView {
    GtkWidget parent_instance;
    SdService *service;
    GtkWidget *box, *stack, *entry, *send, *stop, *buttons, *stage;
    GHashTable *pages; // scope key -> Page (owned by the stack child's data)
    Page *page;        // visible
    Page *running;     // page with the answer in progress
    GCancellable *cancel;
    char *stage_raw;
    gboolean no_docs; // the library is empty: nothing to ask about
    int max_new_tokens;
    SdCitationFn on_cite;
    gpointer cite_user;
    SdAnswerDoneFn on_done;
    gpointer done_user;
};

G_DEFINE_FINAL_TYPE(SdChatView, sd_chat_view, GTK_TYPE_WIDGET)

static void turn_free(gpointer p)
{
    Turn *t = p;
    g_string_free(t->text, TRUE);
    g_free(t->status_text);
    sd_service_result_free(t->result);
    g_ptr_array_unref(t->cite_buttons);
    g_free(t);
}

static void page_free(gpointer p)
{
    Page *pg = p;
    g_array_unref(pg->doc_ids);
    g_free(pg->label);
    g_free(pg);
}

static char *scope_key(const gint64 *ids, gsize n)
{
    if (n == 0)
        return g_strdup("all");
    gint64 *s = g_memdup2(ids, n * sizeof *ids);
    for (gsize i = 1; i < n; i++) // insertion sort: scopes are small
        for (gsize k = i; k > 0 && s[k - 1] > s[k]; k--) {
            gint64 t = s[k];
            s[k] = s[k - 1];
            s[k - 1] = t;
        }
    GString *k = g_string_new("docs");
    for (gsize i = 0; i < n; i++)
        g_string_append_printf(k, ":%" G_GINT64_FORMAT, s[i]);
    g_free(s);
    return g_string_free(k, FALSE);
}

static void update_buttons(SdChatView *self)
{
    gboolean running = self->running != NULL;
    gtk_stack_set_visible_child(GTK_STACK(self->buttons), running ? self->stop : self->send);
    const char *q = gtk_editable_get_text(GTK_EDITABLE(self->entry));
    gtk_widget_set_sensitive(self->send, !running && !self->no_docs && q && *q);
    gtk_widget_set_visible(self->stage, running);
}

static Page *page_get(SdChatView *self, const char *key, const gint64 *ids, gsize n, const char *label)
{
    Page *pg = g_hash_table_lookup(self->pages, key);
    if (pg) {
        g_free(pg->label);
        pg->label = g_strdup(label);
        return pg;
    }
    pg = g_new0(Page, 1);
    pg->doc_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    if (n)
        g_array_append_vals(pg->doc_ids, ids, (guint)n);
    pg->label = g_strdup(label);
    pg->list = gtk_box_new(GTK_ORIENTATION_VERTICAL, 18);
    gtk_widget_set_margin_top(pg->list, 18);
    gtk_widget_set_margin_bottom(pg->list, 18);
    gtk_widget_set_margin_start(pg->list, 18);
    gtk_widget_set_margin_end(pg->list, 18);
    pg->empty = adw_status_page_new();
    adw_status_page_set_icon_name(ADW_STATUS_PAGE(pg->empty), "io.github.sparsedoc.Sparsedoc-symbolic");
    adw_status_page_set_title(ADW_STATUS_PAGE(pg->empty), "Ask your documents");
    adw_status_page_set_description(ADW_STATUS_PAGE(pg->empty),
                                    "Answers cite the page or line they come from. Click a citation to see it.");
    gtk_widget_add_css_class(pg->empty, "compact");
    gtk_box_append(GTK_BOX(pg->list), pg->empty);
    GtkWidget *clamp = adw_clamp_new();
    adw_clamp_set_maximum_size(ADW_CLAMP(clamp), 820);
    adw_clamp_set_child(ADW_CLAMP(clamp), pg->list);
    pg->scroller = gtk_scrolled_window_new();
    gtk_scrolled_window_set_policy(GTK_SCROLLED_WINDOW(pg->scroller), GTK_POLICY_NEVER, GTK_POLICY_AUTOMATIC);
    gtk_scrolled_window_set_child(GTK_SCROLLED_WINDOW(pg->scroller), clamp);
    g_object_set_data_full(G_OBJECT(pg->scroller), "sd-page", pg, page_free);
    gtk_stack_add_named(GTK_STACK(self->stack), pg->scroller, key);
    g_hash_table_insert(self->pages, g_strdup(key), pg);
    return pg;
}

static void show_page(SdChatView *self, Page *pg)
{
    self->page = pg;
    gtk_stack_set_visible_child(GTK_STACK(self->stack), pg->scroller);
    char *ph = self->no_docs ? g_strdup("Add documents first: drop files on the window or press Ctrl+O")
                             : g_strdup_printf("Ask about %s", pg->label ? pg->label : "all documents");
    gtk_entry_set_placeholder_text(GTK_ENTRY(self->entry), ph);
    g_free(ph);
}

void sd_chat_view_set_scope(SdChatView *self, const gint64 *doc_ids, gsize n, const char *label)
{
    g_autofree char *key = scope_key(doc_ids, n);
    show_page(self, page_get(self, key, doc_ids, n, label));
}

static void scroll_to_end(Page *pg)
{
    GtkAdjustment *a = gtk_scrolled_window_get_vadjustment(GTK_SCROLLED_WINDOW(pg->scroller));
    gtk_adjustment_set_value(a, gtk_adjustment_get_upper(a));
}

static gboolean scroll_idle(gpointer data)
{
    GtkWidget *scroller = data;
    Page *pg = g_object_get_data(G_OBJECT(scroller), "sd-page");
    if (pg)
        scroll_to_end(pg);
    g_object_unref(scroller);
    return G_SOURCE_REMOVE;
}

static Turn *turn_add(Page *pg, const char *question)
{
    gtk_widget_set_visible(pg->empty, FALSE);
    Turn *t = g_new0(Turn, 1);
    t->text = g_string_new(NULL);
    t->cite_buttons = g_ptr_array_new();
    t->box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 6);
    GtkWidget *q = gtk_label_new(question);
    gtk_label_set_wrap(GTK_LABEL(q), TRUE);
    gtk_label_set_wrap_mode(GTK_LABEL(q), PANGO_WRAP_WORD_CHAR);
    gtk_label_set_xalign(GTK_LABEL(q), 0);
    gtk_label_set_selectable(GTK_LABEL(q), TRUE);
    gtk_widget_set_halign(q, GTK_ALIGN_END);
    gtk_widget_add_css_class(q, "sd-question");
    gtk_box_append(GTK_BOX(t->box), q);
    GtkWidget *card = gtk_box_new(GTK_ORIENTATION_VERTICAL, 8);
    gtk_widget_add_css_class(card, "card");
    gtk_widget_add_css_class(card, "sd-answer");
    gtk_widget_set_halign(card, GTK_ALIGN_FILL);
    t->progress = gtk_label_new("Waiting for the model…");
    gtk_label_set_xalign(GTK_LABEL(t->progress), 0);
    gtk_widget_add_css_class(t->progress, "dim-label");
    gtk_box_append(GTK_BOX(card), t->progress);
    t->answer = gtk_label_new("");
    gtk_label_set_wrap(GTK_LABEL(t->answer), TRUE);
    gtk_label_set_wrap_mode(GTK_LABEL(t->answer), PANGO_WRAP_WORD_CHAR);
    gtk_label_set_xalign(GTK_LABEL(t->answer), 0);
    gtk_label_set_selectable(GTK_LABEL(t->answer), TRUE);
    gtk_widget_set_visible(t->answer, FALSE);
    gtk_accessible_update_property(GTK_ACCESSIBLE(t->answer), GTK_ACCESSIBLE_PROPERTY_LABEL, "Answer", -1);
    gtk_box_append(GTK_BOX(card), t->answer);
    t->cites = gtk_flow_box_new();
    gtk_flow_box_set_selection_mode(GTK_FLOW_BOX(t->cites), GTK_SELECTION_NONE);
    gtk_flow_box_set_max_children_per_line(GTK_FLOW_BOX(t->cites), 8);
    gtk_widget_set_visible(t->cites, FALSE);
    gtk_box_append(GTK_BOX(card), t->cites);
    t->status = gtk_label_new("");
    gtk_label_set_wrap(GTK_LABEL(t->status), TRUE);
    gtk_label_set_xalign(GTK_LABEL(t->status), 0);
    gtk_widget_add_css_class(t->status, "caption");
    gtk_widget_set_visible(t->status, FALSE);
    gtk_box_append(GTK_BOX(card), t->status);
    gtk_box_append(GTK_BOX(t->box), card);
    g_object_set_data_full(G_OBJECT(t->box), "sd-turn", t, turn_free);
    gtk_box_append(GTK_BOX(pg->list), t->box);
    pg->last = t;
    g_idle_add(scroll_idle, g_object_ref(pg->scroller));
    return t;
}

static void turn_set_text(Turn *t, const char *text)
{
    gtk_widget_set_visible(t->answer, TRUE);
    gtk_label_set_text(GTK_LABEL(t->answer), text);
}

static void turn_set_status(Turn *t, const char *css, const char *text)
{
    g_free(t->status_text);
    t->status_text = g_strdup(text);
    gtk_label_set_text(GTK_LABEL(t->status), text);
    gtk_widget_remove_css_class(t->status, "error");
    gtk_widget_remove_css_class(t->status, "warning");
    gtk_widget_remove_css_class(t->status, "dim-label");
    gtk_widget_add_css_class(t->status, css);
    gtk_widget_set_visible(t->status, TRUE);
}

// ---- streaming (main thread, from the service) ----

static void on_text(GObject *target, const char *text)
{
    SdChatView *self = SD_CHAT_VIEW(target);
    Page *pg = self->running;
    if (!pg || !pg->last)
        return;
    Turn *t = pg->last;
    gboolean at_end = FALSE;
    GtkAdjustment *a = gtk_scrolled_window_get_vadjustment(GTK_SCROLLED_WINDOW(pg->scroller));
    at_end = gtk_adjustment_get_value(a) + gtk_adjustment_get_page_size(a) >= gtk_adjustment_get_upper(a) - 40;
    g_string_append(t->text, text);
    t->n_pieces++;
    turn_set_text(t, t->text->str);
    gtk_label_set_text(GTK_LABEL(t->progress), "Answering…");
    if (at_end)
        g_idle_add(scroll_idle, g_object_ref(pg->scroller));
}

static const char *stage_name(const char *stage)
{
    if (!strcmp(stage, "tokenize"))
        return "Preparing the documents";
    if (!strcmp(stage, "restore"))
        return "Restoring cached context";
    if (!strcmp(stage, "prefill"))
        return "Reading the documents";
    if (!strcmp(stage, "generate"))
        return "Answering";
    if (!strcmp(stage, "reduce"))
        return "Combining partial answers";
    if (!strcmp(stage, "ingest"))
        return "Ingesting";
    return stage;
}

static void on_progress(GObject *target, const char *stage, gint64 done, gint64 total)
{
    SdChatView *self = SD_CHAT_VIEW(target);
    Page *pg = self->running;
    if (!pg || !pg->last)
        return;
    g_free(self->stage_raw);
    self->stage_raw = g_strdup(stage);
    char *s = total > 0
                  ? g_strdup_printf("%s… %" G_GINT64_FORMAT " / %" G_GINT64_FORMAT, stage_name(stage), done, total)
                  : g_strdup_printf("%s…", stage_name(stage));
    gtk_label_set_text(GTK_LABEL(pg->last->progress), s);
    gtk_label_set_text(GTK_LABEL(self->stage), s);
    g_free(s);
}

// ---- citations ----

// The answer text a citation backs: the text before its marker, back to the previous ']' or line start.
static char *quote_for(const char *answer, const char *marker)
{
    if (!answer || !marker)
        return g_strdup("");
    const char *m = strstr(answer, marker);
    if (!m)
        return g_strdup("");
    const char *end = m;
    if (end > answer && end[-1] == '[')
        end--;
    const char *start = end;
    while (start > answer && start[-1] != ']' && start[-1] != '\n')
        start--;
    char *q = g_strndup(start, (gsize)(end - start));
    return g_strstrip(q);
}

static void on_cite_clicked(GtkButton *b, gpointer data)
{
    SdChatView *self = data;
    Turn *t = g_object_get_data(G_OBJECT(b), "sd-turn");
    guint i = GPOINTER_TO_UINT(g_object_get_data(G_OBJECT(b), "sd-cite"));
    if (!t || !t->result || i >= t->result->n_cites || !self->on_cite)
        return;
    const struct sd_qa_citation *c = &t->result->cites[i];
    g_autofree char *q = quote_for(t->result->answer, c->marker);
    self->on_cite(self->cite_user, c, q);
}

static void show_citations(SdChatView *self, Turn *t)
{
    for (size_t i = 0; i < t->result->n_cites; i++) {
        const struct sd_qa_citation *c = &t->result->cites[i];
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
        gtk_widget_set_sensitive(b, c->valid);
        g_autofree char *tip = g_strdup_printf("Open %s at %s", c->path ? c->path : "the source", c->marker);
        gtk_widget_set_tooltip_text(b, tip);
        gtk_accessible_update_property(GTK_ACCESSIBLE(b), GTK_ACCESSIBLE_PROPERTY_LABEL, tip, -1);
        g_object_set_data(G_OBJECT(b), "sd-turn", t);
        g_object_set_data(G_OBJECT(b), "sd-cite", GUINT_TO_POINTER((guint)i));
        g_signal_connect(b, "clicked", G_CALLBACK(on_cite_clicked), self);
        gtk_flow_box_append(GTK_FLOW_BOX(t->cites), b);
        g_ptr_array_add(t->cite_buttons, b);
    }
    gtk_widget_set_visible(t->cites, t->result->n_cites > 0);
}

static char *cache_line(const struct sd_qa_result *r)
{
    GString *s = g_string_new(NULL);
    if (r->tokens_reused > 0)
        g_string_append_printf(s, "Cache: %" G_GINT64_FORMAT " tokens reused, %" G_GINT64_FORMAT " prefilled",
                               r->tokens_reused, r->tokens_prefilled);
    else
        g_string_append_printf(s, "Cache: nothing reused, %" G_GINT64_FORMAT " tokens prefilled", r->tokens_prefilled);
    g_string_append_printf(s, " · first token after %.2f s · %" G_GINT64_FORMAT " tokens in %.2f s", r->ttft_s,
                           r->tokens_generated, r->total_s);
    if (r->strategy && *r->strategy)
        g_string_append_printf(s, " · %s", r->strategy);
    if (r->blocks_dropped)
        g_string_append_printf(s, " · %d corrupt cache blocks recomputed", r->blocks_dropped);
    return g_string_free(s, FALSE);
}

static void ask_done(GObject *src, GAsyncResult *res, gpointer data)
{
    SdChatView *self = data;
    GError *error = NULL;
    struct sd_qa_result *partial = NULL;
    struct sd_qa_result *r = sd_service_ask_finish(SD_SERVICE(src), res, &partial, &error);
    if (!self->pages) { // disposed meanwhile
        sd_service_result_free(r);
        sd_service_result_free(partial);
        g_clear_error(&error);
        g_object_unref(self);
        return;
    }
    Page *pg = self->running;
    self->running = NULL;
    g_clear_object(&self->cancel);
    Turn *t = pg ? pg->last : NULL;
    gboolean ok = r != NULL;
    if (t) {
        gtk_widget_set_visible(t->progress, FALSE);
        if (r) {
            if (r->conversation_id)
                pg->conv_id = r->conversation_id;
            t->result = r;
            turn_set_text(t, r->answer && *r->answer ? r->answer : "(empty answer)");
            show_citations(self, t);
            g_autofree char *line = cache_line(r);
            turn_set_status(t, "dim-label", line);
            gtk_widget_add_css_class(t->status, r->tokens_reused > 0 ? "sd-cache-hit" : "sd-cache-miss");
            r = NULL;
        } else if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
            if (partial && partial->conversation_id)
                pg->conv_id = partial->conversation_id;
            if (!t->text->len)
                gtk_widget_set_visible(t->answer, FALSE);
            g_autofree char *m = t->n_pieces
                                     ? g_strdup_printf("Stopped after %u piece%s of text; the text so far is kept.",
                                                       t->n_pieces, t->n_pieces == 1 ? "" : "s")
                                     : g_strdup("Stopped before the answer began.");
            turn_set_status(t, "warning", m);
        } else {
            g_autofree char *clean = sd_ui_message(NULL, error->message);
            g_autofree char *m = g_strdup_printf("Could not answer: %s", clean);
            turn_set_status(t, "error", m);
        }
    }
    sd_service_result_free(r);
    sd_service_result_free(partial);
    g_clear_error(&error);
    update_buttons(self);
    if (self->on_done)
        self->on_done(self->done_user, ok);
    g_object_unref(self);
}

void sd_chat_view_ask(SdChatView *self, const char *question)
{
    if (self->running || !self->page || !question || !*question)
        return;
    Page *pg = self->page;
    turn_add(pg, question);
    self->running = pg;
    g_clear_pointer(&self->stage_raw, g_free);
    self->cancel = g_cancellable_new();
    sd_service_ask_async(self->service, (const gint64 *)(void *)pg->doc_ids->data, pg->doc_ids->len, question,
                         pg->conv_id, self->max_new_tokens, G_OBJECT(self), on_text, on_progress, self->cancel,
                         ask_done, g_object_ref(self));
    gtk_label_set_text(GTK_LABEL(self->stage), "Waiting for the model…");
    update_buttons(self);
}

void sd_chat_view_stop(SdChatView *self)
{
    if (self->cancel)
        g_cancellable_cancel(self->cancel);
    if (self->running && self->running->last)
        gtk_label_set_text(GTK_LABEL(self->running->last->progress), "Stopping…");
}

void sd_chat_view_show_conversation(SdChatView *self, SdConversation *conv, const char *label)
{
    g_autofree char *key = g_strdup_printf("conv:%" G_GINT64_FORMAT, conv->id);
    Page *pg = g_hash_table_lookup(self->pages, key);
    if (!pg) {
        pg = page_get(self, key, (const gint64 *)(void *)conv->doc_ids->data, conv->doc_ids->len, label);
        pg->conv_id = conv->id;
        for (guint i = 0; i + 1 < conv->turns->len; i += 2) {
            Turn *t = turn_add(pg, g_ptr_array_index(conv->turns, i));
            gtk_widget_set_visible(t->progress, FALSE);
            g_string_assign(t->text, g_ptr_array_index(conv->turns, i + 1));
            turn_set_text(t, t->text->str);
            turn_set_status(t, "dim-label", "Saved answer");
        }
    }
    show_page(self, pg);
}

void sd_chat_view_set_library_empty(SdChatView *self, gboolean empty)
{
    self->no_docs = empty;
    if (self->page)
        show_page(self, self->page);
    update_buttons(self);
}

gboolean sd_chat_view_is_running(SdChatView *self)
{
    return self->running != NULL;
}
void sd_chat_view_set_max_tokens(SdChatView *self, int n)
{
    self->max_new_tokens = n;
}
void sd_chat_view_focus_entry(SdChatView *self)
{
    gtk_widget_grab_focus(self->entry);
}

void sd_chat_view_set_citation_handler(SdChatView *self, SdCitationFn fn, gpointer user)
{
    self->on_cite = fn;
    self->cite_user = user;
}

void sd_chat_view_set_done_handler(SdChatView *self, SdAnswerDoneFn fn, gpointer user)
{
    self->on_done = fn;
    self->done_user = user;
}

static Turn *last_turn(SdChatView *self)
{
    return self->page ? self->page->last : NULL;
}

const char *sd_chat_view_last_answer(SdChatView *self)
{
    Turn *t = last_turn(self);
    return t ? (t->result && t->result->answer ? t->result->answer : t->text->str) : NULL;
}

guint sd_chat_view_last_n_pieces(SdChatView *self)
{
    Turn *t = last_turn(self);
    return t ? t->n_pieces : 0;
}

const char *sd_chat_view_last_status(SdChatView *self)
{
    Turn *t = last_turn(self);
    return t ? t->status_text : NULL;
}

guint sd_chat_view_last_n_citations(SdChatView *self)
{
    Turn *t = last_turn(self);
    return t ? t->cite_buttons->len : 0;
}

GtkWidget *sd_chat_view_last_citation_button(SdChatView *self, guint i)
{
    Turn *t = last_turn(self);
    return t && i < t->cite_buttons->len ? g_ptr_array_index(t->cite_buttons, i) : NULL;
}

const struct sd_qa_citation *sd_chat_view_last_citation(SdChatView *self, guint i)
{
    Turn *t = last_turn(self);
    return t && t->result && i < t->result->n_cites ? &t->result->cites[i] : NULL;
}

GtkWidget *sd_chat_view_get_stop_button(SdChatView *self)
{
    return self->stop;
}
const char *sd_chat_view_get_stage(SdChatView *self)
{
    return self->running ? self->stage_raw : NULL;
}

// ---- widget ----

static void on_activate(SdChatView *self)
{
    const char *q = gtk_editable_get_text(GTK_EDITABLE(self->entry));
    if (self->running || !q || !*q)
        return;
    g_autofree char *question = g_strdup(q);
    gtk_editable_set_text(GTK_EDITABLE(self->entry), "");
    sd_chat_view_ask(self, question);
}

static gboolean on_escape(GtkWidget *w, GVariant *args, gpointer data)
{
    (void)args;
    (void)data;
    SdChatView *self = SD_CHAT_VIEW(w);
    if (!self->running)
        return FALSE;
    sd_chat_view_stop(self);
    return TRUE;
}

static void sd_chat_view_dispose(GObject *obj)
{
    SdChatView *self = SD_CHAT_VIEW(obj);
    if (self->cancel)
        g_cancellable_cancel(self->cancel);
    g_clear_object(&self->cancel);
    self->running = NULL; // streamed pieces still queued find nothing to update
    self->page = NULL;
    g_clear_pointer(&self->box, gtk_widget_unparent);
    g_clear_pointer(&self->pages, g_hash_table_unref);
    g_clear_pointer(&self->stage_raw, g_free);
    g_clear_object(&self->service);
    G_OBJECT_CLASS(sd_chat_view_parent_class)->dispose(obj);
}

static void sd_chat_view_class_init(SdChatViewClass *klass)
{
    G_OBJECT_CLASS(klass)->dispose = sd_chat_view_dispose;
    gtk_widget_class_set_layout_manager_type(GTK_WIDGET_CLASS(klass), GTK_TYPE_BIN_LAYOUT);
}

static void sd_chat_view_init(SdChatView *self)
{
    self->max_new_tokens = 256;
    self->pages = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    self->box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 0);
    gtk_widget_set_parent(self->box, GTK_WIDGET(self));
    self->stack = gtk_stack_new();
    gtk_stack_set_transition_type(GTK_STACK(self->stack), GTK_STACK_TRANSITION_TYPE_CROSSFADE);
    gtk_widget_set_vexpand(self->stack, TRUE);
    gtk_box_append(GTK_BOX(self->box), self->stack);

    self->stage = gtk_label_new("");
    gtk_label_set_xalign(GTK_LABEL(self->stage), 0);
    gtk_label_set_ellipsize(GTK_LABEL(self->stage), PANGO_ELLIPSIZE_END);
    gtk_widget_add_css_class(self->stage, "dim-label");
    gtk_widget_add_css_class(self->stage, "caption");
    gtk_widget_set_margin_start(self->stage, 14);
    gtk_widget_set_visible(self->stage, FALSE);
    gtk_box_append(GTK_BOX(self->box), self->stage);

    GtkWidget *bar = gtk_box_new(GTK_ORIENTATION_HORIZONTAL, 6);
    gtk_widget_add_css_class(bar, "toolbar");
    gtk_widget_add_css_class(bar, "sd-ask-bar");
    self->entry = gtk_entry_new();
    gtk_widget_set_hexpand(self->entry, TRUE);
    gtk_accessible_update_property(GTK_ACCESSIBLE(self->entry), GTK_ACCESSIBLE_PROPERTY_LABEL, "Question", -1);
    g_signal_connect_swapped(self->entry, "activate", G_CALLBACK(on_activate), self);
    g_signal_connect_swapped(self->entry, "changed", G_CALLBACK(update_buttons), self);
    gtk_box_append(GTK_BOX(bar), self->entry);
    self->buttons = gtk_stack_new();
    self->send = gtk_button_new_with_mnemonic("_Ask");
    gtk_widget_add_css_class(self->send, "suggested-action");
    gtk_widget_set_tooltip_text(self->send, "Ask the question (Enter)");
    g_signal_connect_swapped(self->send, "clicked", G_CALLBACK(on_activate), self);
    self->stop = gtk_button_new_with_mnemonic("_Stop");
    gtk_widget_add_css_class(self->stop, "destructive-action");
    gtk_widget_set_tooltip_text(self->stop, "Stop generating (Escape)");
    g_signal_connect_swapped(self->stop, "clicked", G_CALLBACK(sd_chat_view_stop), self);
    gtk_stack_add_child(GTK_STACK(self->buttons), self->send);
    gtk_stack_add_child(GTK_STACK(self->buttons), self->stop);
    gtk_box_append(GTK_BOX(bar), self->buttons);
    gtk_box_append(GTK_BOX(self->box), bar);

    GtkEventController *keys = gtk_shortcut_controller_new();
    gtk_shortcut_controller_add_shortcut(
        GTK_SHORTCUT_CONTROLLER(keys),
        gtk_shortcut_new(gtk_keyval_trigger_new(GDK_KEY_Escape, 0), gtk_callback_action_new(on_escape, NULL, NULL)));
    gtk_widget_add_controller(GTK_WIDGET(self), keys);
}

GtkWidget *sd_chat_view_new(SdService *service)
{
    SdChatView *self = g_object_new(SD_TYPE_CHAT_VIEW, NULL);
    self->service = g_object_ref(service);
    sd_chat_view_set_scope(self, NULL, 0, "all documents");
    update_buttons(self);
    return GTK_WIDGET(self);
}
