// sd-chat-view.c: the chat pane (see sd-chat-view.h). Its fixed widgets are the composite template
// sd-chat-view.ui; a page per scope is built here, holding one SdChatTurn (sd-chat-turn.c) per question.
// Ask and Stop are the class actions chat.ask and chat.stop (Escape stops a running answer).
#define G_LOG_DOMAIN "sparsedoc-gtk"

#include "sd-chat-view.h"

#include <adwaita.h>
#include <string.h>

#include "sd-chat-turn.h"

// One scope's conversation.
typedef struct {
    GtkWidget *scroller, *list, *empty;
    GArray *doc_ids; // gint64
    gint64 conv_id;
    char *label;
    SdChatTurn *last;
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
    gtk_widget_action_set_enabled(GTK_WIDGET(self), "chat.ask", !running && !self->no_docs && q && *q);
    // Disabled when idle, so that Escape goes on to whatever else wants it.
    gtk_widget_action_set_enabled(GTK_WIDGET(self), "chat.stop", running);
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

static void on_citation_clicked(SdChatTurn *t, guint i, SdChatView *self);

static SdChatTurn *turn_add(SdChatView *self, Page *pg, const char *question)
{
    gtk_widget_set_visible(pg->empty, FALSE);
    SdChatTurn *t = SD_CHAT_TURN(sd_chat_turn_new(question));
    g_signal_connect_object(t, "citation-clicked", G_CALLBACK(on_citation_clicked), self, 0);
    gtk_box_append(GTK_BOX(pg->list), GTK_WIDGET(t));
    pg->last = t;
    g_idle_add(scroll_idle, g_object_ref(pg->scroller));
    return t;
}

// ---- streaming (main thread, from the service) ----

static void on_text(GObject *target, const char *text)
{
    SdChatView *self = SD_CHAT_VIEW(target);
    Page *pg = self->running;
    if (!pg || !pg->last)
        return;
    gboolean at_end = FALSE;
    GtkAdjustment *a = gtk_scrolled_window_get_vadjustment(GTK_SCROLLED_WINDOW(pg->scroller));
    at_end = gtk_adjustment_get_value(a) + gtk_adjustment_get_page_size(a) >= gtk_adjustment_get_upper(a) - 40;
    sd_chat_turn_append(pg->last, text);
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
    sd_chat_turn_set_progress(pg->last, s);
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

static void on_citation_clicked(SdChatTurn *t, guint i, SdChatView *self)
{
    const struct sd_qa_result *r = sd_chat_turn_get_result(t);
    if (!r || i >= r->n_cites || !self->on_cite)
        return;
    const struct sd_qa_citation *c = &r->cites[i];
    g_autofree char *q = quote_for(r->answer, c->marker);
    self->on_cite(self->cite_user, c, q);
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
    SdChatTurn *t = pg ? pg->last : NULL;
    gboolean ok = r != NULL;
    if (t) {
        sd_chat_turn_set_progress(t, NULL);
        if (r) {
            if (r->conversation_id)
                pg->conv_id = r->conversation_id;
            g_autofree char *line = cache_line(r);
            sd_chat_turn_set_status(t, r->tokens_reused > 0 ? "dim-label sd-cache-hit" : "dim-label sd-cache-miss",
                                    line);
            sd_chat_turn_set_result(t, r); // takes r
            r = NULL;
        } else if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
            if (partial && partial->conversation_id)
                pg->conv_id = partial->conversation_id;
            guint n = sd_chat_turn_get_n_pieces(t);
            g_autofree char *m =
                n ? g_strdup_printf("Stopped after %u piece%s of text; the text so far is kept.", n, n == 1 ? "" : "s")
                  : g_strdup("Stopped before the answer began.");
            sd_chat_turn_set_status(t, "warning", m);
        } else {
            g_autofree char *clean = sd_ui_message(NULL, error->message);
            g_autofree char *m = g_strdup_printf("Could not answer: %s", clean);
            sd_chat_turn_set_status(t, "error", m);
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
    turn_add(self, pg, question);
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
        sd_chat_turn_set_progress(self->running->last, "Stopping…");
}

void sd_chat_view_show_conversation(SdChatView *self, SdConversation *conv, const char *label)
{
    g_autofree char *key = g_strdup_printf("conv:%" G_GINT64_FORMAT, conv->id);
    Page *pg = g_hash_table_lookup(self->pages, key);
    if (!pg) {
        pg = page_get(self, key, (const gint64 *)(void *)conv->doc_ids->data, conv->doc_ids->len, label);
        pg->conv_id = conv->id;
        for (guint i = 0; i + 1 < conv->turns->len; i += 2) {
            SdChatTurn *t = turn_add(self, pg, g_ptr_array_index(conv->turns, i));
            sd_chat_turn_set_progress(t, NULL);
            sd_chat_turn_set_answer(t, g_ptr_array_index(conv->turns, i + 1));
            sd_chat_turn_set_status(t, "dim-label", "Saved answer");
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

static SdChatTurn *last_turn(SdChatView *self)
{
    return self->page ? self->page->last : NULL;
}

const char *sd_chat_view_last_answer(SdChatView *self)
{
    SdChatTurn *t = last_turn(self);
    return t ? sd_chat_turn_get_answer(t) : NULL;
}

guint sd_chat_view_last_n_pieces(SdChatView *self)
{
    SdChatTurn *t = last_turn(self);
    return t ? sd_chat_turn_get_n_pieces(t) : 0;
}

const char *sd_chat_view_last_status(SdChatView *self)
{
    SdChatTurn *t = last_turn(self);
    return t ? sd_chat_turn_get_status(t) : NULL;
}

guint sd_chat_view_last_n_citations(SdChatView *self)
{
    SdChatTurn *t = last_turn(self);
    return t ? sd_chat_turn_get_n_citations(t) : 0;
}

GtkWidget *sd_chat_view_last_citation_button(SdChatView *self, guint i)
{
    SdChatTurn *t = last_turn(self);
    return t ? sd_chat_turn_get_citation_button(t, i) : NULL;
}

const struct sd_qa_citation *sd_chat_view_last_citation(SdChatView *self, guint i)
{
    SdChatTurn *t = last_turn(self);
    const struct sd_qa_result *r = t ? sd_chat_turn_get_result(t) : NULL;
    return r && i < r->n_cites ? &r->cites[i] : NULL;
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

static void act_ask(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    on_activate(SD_CHAT_VIEW(w));
}

static void act_stop(GtkWidget *w, const char *name, GVariant *p)
{
    (void)name;
    (void)p;
    sd_chat_view_stop(SD_CHAT_VIEW(w));
}

static void sd_chat_view_dispose(GObject *obj)
{
    SdChatView *self = SD_CHAT_VIEW(obj);
    if (self->cancel)
        g_cancellable_cancel(self->cancel);
    g_clear_object(&self->cancel);
    self->running = NULL; // streamed pieces still queued find nothing to update
    self->page = NULL;
    g_clear_pointer(&self->pages, g_hash_table_unref);
    g_clear_pointer(&self->stage_raw, g_free);
    g_clear_object(&self->service);
    gtk_widget_dispose_template(GTK_WIDGET(self), SD_TYPE_CHAT_VIEW);
    G_OBJECT_CLASS(sd_chat_view_parent_class)->dispose(obj);
}

static void sd_chat_view_class_init(SdChatViewClass *klass)
{
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    G_OBJECT_CLASS(klass)->dispose = sd_chat_view_dispose;
    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_template_from_resource(wc, "/io/github/sparsedoc/Sparsedoc/sd-chat-view.ui");
    gtk_widget_class_bind_template_child(wc, SdChatView, box);
    gtk_widget_class_bind_template_child(wc, SdChatView, stack);
    gtk_widget_class_bind_template_child(wc, SdChatView, stage);
    gtk_widget_class_bind_template_child(wc, SdChatView, entry);
    gtk_widget_class_bind_template_child(wc, SdChatView, buttons);
    gtk_widget_class_bind_template_child(wc, SdChatView, send);
    gtk_widget_class_bind_template_child(wc, SdChatView, stop);
    gtk_widget_class_bind_template_callback(wc, on_activate);
    gtk_widget_class_bind_template_callback(wc, update_buttons);
    gtk_widget_class_install_action(wc, "chat.ask", NULL, act_ask);
    gtk_widget_class_install_action(wc, "chat.stop", NULL, act_stop);
    gtk_widget_class_add_binding_action(wc, GDK_KEY_Escape, 0, "chat.stop", NULL);
}

static void sd_chat_view_init(SdChatView *self)
{
    self->max_new_tokens = 256;
    self->pages = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    gtk_widget_init_template(GTK_WIDGET(self));
    sd_chat_view_set_scope(self, NULL, 0, "all documents");
    update_buttons(self);
}

void sd_chat_view_set_service(SdChatView *self, SdService *service)
{
    g_set_object(&self->service, service);
}

GtkWidget *sd_chat_view_new(SdService *service)
{
    SdChatView *self = g_object_new(SD_TYPE_CHAT_VIEW, NULL);
    sd_chat_view_set_service(self, service);
    return GTK_WIDGET(self);
}
