// test_ui.c: sparsedoc-gtk end to end under Xvfb (re-executes itself through xvfb-run when there is no
// display; exit 77 when none can be made). Temp XDG dirs, the shipped test model (sparsedoc-mini) and the
// sample PDF (data/samples/harbor-notes.pdf): add it through the path drag and drop uses, ask a question,
// check the answer streamed in, click its citation and check the PDF viewer shows the cited page with the
// passage highlighted; ask again and check the cache indicator shows reuse; stop an answer mid-way; add
// a broken and an encrypted PDF (error rows, password); a missing model (the window says so and keeps
// working). Screenshots of each step go to $SD_BUILD/ui-screenshots/ (look at them). Strict: any GLib or GTK
// warning is fatal (G_DEBUG=fatal-warnings), settings live in memory (GSETTINGS_BACKEND=memory), and every
// window closed and the application must be finalized (g_assert_finalize_object), so a leaked reference
// fails the test.
#include <adwaita.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sd-application.h"
#include "sd-prefs.h"

#include "ocr.h"
#include "test_scan.h"

static char *shots_dir;
static int n_checks;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        n_checks++;                                                                                                    \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                            \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static gboolean wake(gpointer d)
{
    (void)d;
    return G_SOURCE_CONTINUE;
}

// Run the main loop until cond holds. The deadline only turns a hang into a clear failure.
static void pump_until(gboolean (*cond)(gpointer), gpointer u, const char *what)
{
    gint64 deadline = g_get_monotonic_time() + 480 * G_USEC_PER_SEC;
    guint tick = g_timeout_add(20, wake, NULL);
    while (!cond(u)) {
        g_main_context_iteration(NULL, TRUE);
        if (g_get_monotonic_time() > deadline) {
            fprintf(stderr, "FAIL: still waiting for %s after 480 s\n", what);
            exit(1);
        }
    }
    g_source_remove(tick);
}

static gboolean no_pending(gpointer u)
{
    (void)u;
    return !g_main_context_pending(NULL);
}

static void settle(void)
{
    for (int i = 0; i < 20; i++) {
        pump_until(no_pending, NULL, "idle");
        g_usleep(10000);
    }
}

// Render the window's content (what gtk_widget_snapshot draws: header bar and panes, without the
// transient toasts and the window frame) through the window's renderer and save it as a PNG.
static void screenshot(GtkWidget *window, const char *name)
{
    settle();
    GtkWidget *w = ADW_IS_APPLICATION_WINDOW(window)
                       ? adw_toast_overlay_get_child(
                             ADW_TOAST_OVERLAY(adw_application_window_get_content(ADW_APPLICATION_WINDOW(window))))
                       : window;
    int width = gtk_widget_get_width(w), height = gtk_widget_get_height(w);
    CHECK(width > 0 && height > 0, "window has no size");
    GdkPaintable *p = gtk_widget_paintable_new(w);
    GtkSnapshot *s = gtk_snapshot_new();
    // The window, not its content, paints the background: Adwaita's window_bg_color for the style.
    GdkRGBA bg;
    gdk_rgba_parse(&bg, adw_style_manager_get_dark(adw_style_manager_get_default()) ? "#242424" : "#fafafa");
    gtk_snapshot_append_color(s, &bg, &GRAPHENE_RECT_INIT(0, 0, width, height));
    gdk_paintable_snapshot(p, s, width, height);
    GskRenderNode *node = gtk_snapshot_free_to_node(s);
    CHECK(node != NULL, "nothing rendered for %s", name);
    GskRenderer *r = gtk_native_get_renderer(GTK_NATIVE(window));
    GdkTexture *t = gsk_renderer_render_texture(r, node, &GRAPHENE_RECT_INIT(0, 0, width, height));
    char *path = g_build_filename(shots_dir, name, NULL);
    CHECK(gdk_texture_save_to_png(t, path), "cannot save %s", path);
    printf("screenshot %s (%dx%d)\n", path, width, height);
    g_free(path);
    g_object_unref(t);
    gsk_render_node_unref(node);
    g_object_unref(p);
}

static SdWindow *win;

static gboolean only_our_ref(gpointer o)
{
    return G_OBJECT(o)->ref_count == 1;
}

// Destroy a window and check that it is finalized once the jobs that still hold it have let go.
static void destroy_and_finalize(GtkWindow *w, const char *what)
{
    g_object_ref(w);
    gtk_window_destroy(w);
    pump_until(only_our_ref, w, what);
    g_assert_finalize_object(w);
}

static GtkWindow *find_toplevel(GType type)
{
    GtkWindow *found = NULL;
    GListModel *tops = gtk_window_get_toplevels();
    for (guint i = 0; i < g_list_model_get_n_items(tops) && !found; i++) {
        GObject *o = g_list_model_get_item(tops, i);
        if (G_TYPE_CHECK_INSTANCE_TYPE(o, type))
            found = GTK_WINDOW(o);
        g_object_unref(o);
    }
    return found;
}

static gboolean library_idle(gpointer u)
{
    (void)u;
    return sd_window_get_n_jobs(win) == 0 && !sd_window_is_refreshing(win) && sd_window_get_docs(win);
}

static gboolean answer_done(gpointer u)
{
    guint *max_pieces_running = u;
    SdChatView *chat = sd_window_get_chat(win);
    if (sd_chat_view_is_running(chat)) {
        guint n = sd_chat_view_last_n_pieces(chat);
        if (n > *max_pieces_running)
            *max_pieces_running = n;
        return FALSE;
    }
    return TRUE;
}

static void ask(const char *q, guint *max_pieces_running)
{
    SdChatView *chat = sd_window_get_chat(win);
    sd_chat_view_ask(chat, q);
    CHECK(sd_chat_view_is_running(chat), "ask did not start");
    *max_pieces_running = 0;
    pump_until(answer_done, max_pieces_running, "the answer");
}

static GPtrArray *conv_result;
static gboolean conv_loaded_flag;
static void conv_loaded(GObject *src, GAsyncResult *res, gpointer d)
{
    (void)d;
    GError *e = NULL;
    conv_result = sd_service_conversations_finish(SD_SERVICE(src), res, &e);
    if (e) {
        fprintf(stderr, "conversations: %s\n", e->message);
        g_error_free(e);
    }
    conv_loaded_flag = TRUE;
}
static gboolean flag_set(gpointer u)
{
    return *(gboolean *)u;
}

static gboolean reading_or_text(gpointer u)
{
    (void)u;
    SdChatView *chat = sd_window_get_chat(win);
    const char *st = sd_chat_view_get_stage(chat);
    return !sd_chat_view_is_running(chat) || sd_chat_view_last_n_pieces(chat) > 0 ||
           (st && (!strcmp(st, "prefill") || !strcmp(st, "generate")));
}

static gboolean passage_shown(gpointer u)
{
    return sd_pdf_view_get_n_passage_highlights(u) > 0;
}

static gboolean first_text(gpointer u)
{
    (void)u;
    SdChatView *chat = sd_window_get_chat(win);
    return !sd_chat_view_is_running(chat) || sd_chat_view_last_n_pieces(chat) > 0;
}

static SdCacheInfo *cache_info;
static int cleared;
static gboolean removed;
static gboolean ptr_set(gpointer u)
{
    return *(gpointer *)u != NULL;
}
static gboolean int_set(gpointer u)
{
    return *(int *)u != -2;
}
static void cache_stats_done(GObject *src, GAsyncResult *res, gpointer d)
{
    (void)d;
    GError *e = NULL;
    cache_info = sd_service_cache_stats_finish(SD_SERVICE(src), res, &e);
    CHECK(cache_info != NULL, "cache stats: %s", e ? e->message : "?");
}
static void cache_cleared(GObject *src, GAsyncResult *res, gpointer d)
{
    (void)d;
    cleared = sd_service_cache_clear_finish(SD_SERVICE(src), res, NULL);
}
static void remove_done(GObject *src, GAsyncResult *res, gpointer d)
{
    (void)d;
    GError *e = NULL;
    CHECK(sd_service_remove_finish(SD_SERVICE(src), res, &e), "remove: %s", e ? e->message : "?");
    removed = TRUE;
}

static gboolean source_loaded(gpointer u)
{
    return sd_source_view_is_loaded(u);
}

static void set_model_dir(struct sd_settings *s, const char *dir)
{
    free(s->model_dir);
    s->model_dir = dir ? strdup(dir) : NULL;
}

static SdConversation *conv_opened;
static gboolean conv_opened_flag;
static void conv_open_done(GObject *src, GAsyncResult *res, gpointer d)
{
    (void)d;
    conv_opened = sd_service_conversation_load_finish(SD_SERVICE(src), res, NULL);
    conv_opened_flag = TRUE;
}

// The test proper, run from the application's "activate" (inside g_application_run()); it iterates the
// main context itself while it waits. It ends by closing the window, which lets g_application_run() return.
static void drive(SdApplication *app, const char *source, const char *corpus)
{
    g_autofree char *sample = g_build_filename(source, "data", "samples", "harbor-notes.pdf", NULL);
    gboolean have_sample = g_file_test(sample, G_FILE_TEST_EXISTS);
    g_autofree char *corpus_pdf = corpus ? g_build_filename(corpus, "pdf", "DeepSeek_V3_2.pdf", NULL) : NULL;
    const char *pdf = have_sample ? sample : corpus_pdf;
    win = sd_application_get_window(app);
    CHECK(win != NULL, "no window after activate");
    gtk_window_set_default_size(GTK_WINDOW(win), 1400, 860);
    pump_until(library_idle, NULL, "the first library load");
    CHECK(sd_window_get_docs(win)->len == 0, "the temp store is not empty: %u docs", sd_window_get_docs(win)->len);
    screenshot(GTK_WIDGET(win), "01-empty.png");

    // 1. Add the PDF through the drop path; a job row appears at once, the main loop keeps running.
    g_autoptr(GFile) f = g_file_new_for_path(pdf);
    sd_window_add_files(win, &f, 1, NULL);
    CHECK(sd_window_get_n_jobs(win) == 1, "no ingest job row");
    pump_until(library_idle, NULL, "ingestion of the sample PDF");
    GPtrArray *docs = sd_window_get_docs(win);
    CHECK(docs->len == 1, "library has %u documents after adding one (error row: %s; message: %s)", docs->len,
          sd_window_get_n_errors(win) ? sd_window_get_error(win, 0) : "none", sd_window_get_last_message(win));
    SdDocInfo *d = g_ptr_array_index(docs, 0);
    CHECK(!strcmp(d->kind, "pdf") && d->n_pages >= 1, "kind %s pages %" G_GINT64_FORMAT, d->kind, d->n_pages);
    CHECK(d->n_tokens > 0, "tokens not counted with the model: %" G_GINT64_FORMAT, d->n_tokens);
    CHECK(sd_window_get_n_errors(win) == 0, "error row after a good PDF: %s", sd_window_get_error(win, 0));
    printf("ingested %s: %" G_GINT64_FORMAT " pages, %" G_GINT64_FORMAT " tokens\n", d->path, d->n_pages, d->n_tokens);
    gint64 doc_id = d->id;
    sd_window_select_docs(win, &doc_id, 1);
    screenshot(GTK_WIDGET(win), "02-library.png");

    // 2. Ask; the answer streams in while the job runs.
    SdChatView *chat = sd_window_get_chat(win);
    const char *question =
        have_sample ? "What is the access code for the Brenlow vault?" : "What does DeepSeek Sparse Attention select?";
    guint streamed = 0;
    ask(question, &streamed);
    const char *answer = sd_chat_view_last_answer(chat);
    const char *status = sd_chat_view_last_status(chat);
    printf("answer: %s\nstatus: %s\npieces seen while running: %u of %u\n", answer, status, streamed,
           sd_chat_view_last_n_pieces(chat));
    CHECK(status && g_str_has_prefix(status, "Cache:"), "answer failed: %s", status ? status : "(none)");
    CHECK(answer && *answer, "empty answer");
    CHECK(streamed >= 1 && sd_chat_view_last_n_pieces(chat) >= 2,
          "answer did not stream: %u pieces while running, %u in all", streamed, sd_chat_view_last_n_pieces(chat));
    if (have_sample)
        CHECK(strstr(answer, "KX-4821") != NULL, "the planted fact is not in the answer: %s", answer);
    screenshot(GTK_WIDGET(win), "03-answer.png");

    // 3. Click the citation: the viewer shows the cited page with the passage highlighted.
    if (have_sample) {
        CHECK(sd_chat_view_last_n_citations(chat) >= 1, "no citation button in: %s", answer);
        const struct sd_qa_citation *c = sd_chat_view_last_citation(chat, 0);
        CHECK(c->valid && c->page_no == 2, "citation %s -> valid %d page %d (want page 2, label 113)", c->marker,
              c->valid, c->page_no);
        g_signal_emit_by_name(sd_chat_view_last_citation_button(chat, 0), "clicked");
        settle();
        CHECK(!g_strcmp0(sd_window_get_viewer_mode(win), "pdf"), "viewer mode %s", sd_window_get_viewer_mode(win));
        SdPdfView *pv = sd_window_get_pdf_view(win);
        CHECK(sd_pdf_view_get_page(pv) == 2, "viewer at page %d", sd_pdf_view_get_page(pv));
        CHECK(sd_pdf_view_get_n_highlights(pv) >= 1, "the quoted value is not highlighted");
        pump_until(passage_shown, pv, "the cited passage highlight");
        printf("viewer: page %d of %d, %u quote and %u passage highlight(s)\n", sd_pdf_view_get_page(pv),
               sd_pdf_view_get_n_pages(pv), sd_pdf_view_get_n_highlights(pv), sd_pdf_view_get_n_passage_highlights(pv));
        screenshot(GTK_WIDGET(win), "04-citation.png");
        // The viewer's page actions (its toolbar buttons): next page drops the highlights, back returns.
        CHECK(gtk_widget_activate_action(GTK_WIDGET(pv), "pdf.next-page", NULL), "no pdf.next-page action");
        CHECK(sd_pdf_view_get_page(pv) == 3 && sd_pdf_view_get_n_highlights(pv) == 0,
              "next page: page %d, %u highlights", sd_pdf_view_get_page(pv), sd_pdf_view_get_n_highlights(pv));
        gtk_widget_activate_action(GTK_WIDGET(pv), "pdf.previous-page", NULL);
        CHECK(sd_pdf_view_get_page(pv) == 2, "previous page: page %d", sd_pdf_view_get_page(pv));
        // Clicking the citation again brings the highlights back.
        g_signal_emit_by_name(sd_chat_view_last_citation_button(chat, 0), "clicked");
        CHECK(sd_pdf_view_get_n_highlights(pv) >= 1, "the quoted value is not highlighted the second time");
        pump_until(passage_shown, pv, "the cited passage highlight, again");
    } else {
        printf("note: no sample PDF, citation click not checked (the test model only answers planted facts)\n");
    }

    // 4. The same question again: the document prefix comes from the cache.
    ask(question, &streamed);
    status = sd_chat_view_last_status(chat);
    printf("second answer status: %s\n", status);
    CHECK(status && g_str_has_prefix(status, "Cache: ") && !g_str_has_prefix(status, "Cache: nothing reused"),
          "no reuse shown on the second answer: %s", status ? status : "(none)");

    // 5. Conversations persist: the turns are in the store.
    conv_loaded_flag = FALSE;
    sd_service_conversations_async(sd_application_get_service(app), NULL, conv_loaded, NULL);
    pump_until(flag_set, &conv_loaded_flag, "the conversation list");
    CHECK(conv_result && conv_result->len >= 1, "no saved conversation");
    SdConversationInfo *ci = g_ptr_array_index(conv_result, 0);
    CHECK(ci->n_turns >= 2, "conversation has %d turns, want 2", ci->n_turns);
    sd_service_conversation_load_async(sd_application_get_service(app), ci->id, NULL, conv_open_done, NULL);
    pump_until(flag_set, &conv_opened_flag, "the conversation");
    CHECK(conv_opened && conv_opened->turns->len >= 4 && !strcmp(g_ptr_array_index(conv_opened->turns, 0), question),
          "conversation does not reopen with its turns");
    sd_chat_view_show_conversation(chat, conv_opened, ci->title);
    CHECK(sd_chat_view_last_answer(chat) && *sd_chat_view_last_answer(chat), "reopened conversation shows no answer");
    sd_conversation_free(conv_opened);
    g_ptr_array_unref(conv_result);
    sd_window_select_docs(win, &doc_id, 1);

    // 6. Stop mid-answer (new scope with a second, larger document so that prefill takes a while).
    if (corpus_pdf && g_file_test(corpus_pdf, G_FILE_TEST_EXISTS) && have_sample) {
        g_autoptr(GFile) f2 = g_file_new_for_path(corpus_pdf);
        sd_window_add_files(win, &f2, 1, NULL);
        pump_until(library_idle, NULL, "ingestion of the corpus PDF");
        CHECK(sd_window_get_docs(win)->len == 2, "second PDF not added");
        sd_window_select_docs(win, NULL, 0); // all documents
        sd_chat_view_set_max_tokens(chat, 2000);
        sd_chat_view_ask(chat, "Summarize every section of both documents in detail.");
        CHECK(sd_chat_view_is_running(chat), "ask did not start");
        GtkWidget *stop = sd_chat_view_get_stop_button(chat);
        CHECK(gtk_widget_get_visible(stop) && gtk_widget_get_sensitive(stop), "no Stop button while answering");
        // Press Stop once the worker reports reading the documents (or the first text arrives).
        pump_until(reading_or_text, NULL, "the answer to start");
        CHECK(sd_chat_view_is_running(chat), "the answer finished before Stop could be pressed");
        printf("stopping at stage %s after %u pieces\n", sd_chat_view_get_stage(chat),
               sd_chat_view_last_n_pieces(chat));
        g_signal_emit_by_name(stop, "clicked");
        pump_until(answer_done, &streamed, "the stopped answer");
        status = sd_chat_view_last_status(chat);
        printf("stopped answer status: %s\n", status);
        CHECK(status && g_str_has_prefix(status, "Stopped"), "Stop did not stop the answer: %s",
              status ? status : "(none)");
        // Again, stopping once the answer text has started to stream in. The worker waits 400 ms after
        // each piece (a test hook of sd-service.c): the model may end its answer at any token, and Stop
        // must not race it.
        g_setenv("SPARSEDOC_TEST_PIECE_DELAY_MS", "400", TRUE);
        sd_chat_view_ask(chat, "Summarize every section of both documents in detail.");
        g_unsetenv("SPARSEDOC_TEST_PIECE_DELAY_MS");
        pump_until(first_text, NULL, "the first piece of the answer");
        CHECK(sd_chat_view_is_running(chat), "the answer finished before Stop could be pressed (%u pieces)",
              sd_chat_view_last_n_pieces(chat));
        g_signal_emit_by_name(stop, "clicked");
        pump_until(answer_done, &streamed, "the stopped answer");
        status = sd_chat_view_last_status(chat);
        const char *partial = sd_chat_view_last_answer(chat);
        printf("stopped while streaming: %s (text so far: %s)\n", status, partial);
        CHECK(status && g_str_has_prefix(status, "Stopped after"), "Stop did not stop the streaming answer: %s",
              status ? status : "(none)");
        CHECK(partial && *partial, "the text generated before Stop is lost");
        screenshot(GTK_WIDGET(win), "05-stopped.png");
        sd_chat_view_set_max_tokens(chat, 0);
        // The window still answers afterwards.
        sd_window_select_docs(win, &doc_id, 1);
        ask(question, &streamed);
        CHECK(g_str_has_prefix(sd_chat_view_last_status(chat), "Cache:"), "no answer after a stop: %s",
              sd_chat_view_last_status(chat));
    } else {
        printf("note: corpus absent, stop mid-answer not checked\n");
    }

    // 7. A broken PDF and an encrypted one: error rows that say what happened; the password path.
    g_autofree char *tmp = g_strdup(g_getenv("XDG_DATA_HOME"));
    g_autofree char *broken = g_build_filename(tmp, "broken.pdf", NULL);
    CHECK(g_file_set_contents(broken, "%PDF-1.4\nthis is not really a PDF\n", -1, NULL), "write broken.pdf");
    g_autoptr(GFile) fb = g_file_new_for_path(broken);
    guint n_docs = sd_window_get_docs(win)->len;
    sd_window_add_files(win, &fb, 1, NULL);
    pump_until(library_idle, NULL, "ingestion of the broken PDF");
    CHECK(sd_window_get_n_errors(win) == 1, "%u error rows for a broken PDF", sd_window_get_n_errors(win));
    printf("broken PDF: %s\n", sd_window_get_error(win, 0));
    CHECK(sd_window_get_docs(win)->len == n_docs, "a broken PDF changed the library");
    g_autofree char *enc =
        corpus ? g_build_filename(corpus, "pdf", "encrypted", "qpdf-enc-R2V1-rc4-40-user_view.pdf", NULL) : NULL;
    if (enc && g_file_test(enc, G_FILE_TEST_EXISTS)) {
        g_autoptr(GFile) fe = g_file_new_for_path(enc);
        sd_window_add_files(win, &fe, 1, NULL);
        pump_until(library_idle, NULL, "ingestion of the encrypted PDF");
        CHECK(sd_window_get_n_errors(win) == 2, "%u error rows", sd_window_get_n_errors(win));
        printf("encrypted PDF: %s\n", sd_window_get_error(win, 1));
        CHECK(sd_window_get_error_password_button(win, 1) != NULL, "no password button for an encrypted PDF: %s",
              sd_window_get_error(win, 1));
        screenshot(GTK_WIDGET(win), "06-errors.png");
        // The key button asks for the password; Unlock adds the file with it.
        g_signal_emit_by_name(sd_window_get_error_password_button(win, 1), "clicked");
        settle();
        AdwMessageDialog *dlg = NULL;
        GListModel *tops = gtk_window_get_toplevels();
        for (guint i = 0; i < g_list_model_get_n_items(tops) && !dlg; i++) {
            GObject *o = g_list_model_get_item(tops, i);
            if (ADW_IS_MESSAGE_DIALOG(o))
                dlg = ADW_MESSAGE_DIALOG(o);
            g_object_unref(o);
        }
        CHECK(dlg != NULL, "no password dialog");
        GtkWidget *pw = adw_message_dialog_get_extra_child(dlg);
        CHECK(GTK_IS_ENTRY(pw) && !gtk_entry_get_visibility(GTK_ENTRY(pw)),
              "the password dialog has no password entry");
        gtk_editable_set_text(GTK_EDITABLE(pw), "view");
        adw_message_dialog_response(dlg, "unlock");
        pump_until(library_idle, NULL, "ingestion with the password");
        CHECK(sd_window_get_docs(win)->len == n_docs + 1, "the encrypted PDF was not added with its password");
        CHECK(sd_window_get_n_errors(win) == 1, "the encrypted PDF's error row stays after it was added");
    } else {
        screenshot(GTK_WIDGET(win), "06-errors.png");
        printf("note: corpus absent, encrypted PDF not checked\n");
    }

    // 7b. A code folder: one library row for the folder; a code citation opens the file at the line.
    g_autofree char *proj = g_build_filename(tmp, "quorvin", NULL), *src = g_build_filename(proj, "src", NULL);
    g_mkdir_with_parents(src, 0700);
    g_autofree char *cfile = g_build_filename(src, "server.c", NULL),
                    *readme = g_build_filename(proj, "README.md", NULL);
    static const char code[] = "// server.c: the Quorvin request server.\n"
                               "#include <stdio.h>\n"
                               "\n"
                               "struct server {\n"
                               "    int port;\n"
                               "};\n"
                               "\n"
                               "// The default port for the Quorvin service is 8431.\n"
                               "int server_port(const struct server *s) { return s->port ? s->port : 8431; }\n";
    CHECK(g_file_set_contents(cfile, code, -1, NULL), "write %s", cfile);
    CHECK(g_file_set_contents(readme, "# Quorvin\n\nA small request server.\n", -1, NULL), "write README");
    g_autoptr(GFile) fp = g_file_new_for_path(proj);
    guint before = sd_window_get_docs(win)->len;
    sd_window_add_files(win, &fp, 1, NULL);
    pump_until(library_idle, NULL, "ingestion of the code folder");
    docs = sd_window_get_docs(win);
    CHECK(docs->len == before + 2, "folder gave %u documents, want 2", docs->len - before);
    GArray *folder_ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    for (guint i = 0; i < docs->len; i++) {
        SdDocInfo *di = g_ptr_array_index(docs, i);
        if (di->root && !strcmp(di->root, proj))
            g_array_append_val(folder_ids, di->id);
    }
    CHECK(folder_ids->len == 2, "%u documents carry the folder as their root", folder_ids->len);
    sd_window_select_docs(win, (const gint64 *)(void *)folder_ids->data, folder_ids->len);
    ask("What is the default port for the Quorvin service?", &streamed);
    answer = sd_chat_view_last_answer(chat);
    printf("code answer: %s\nstatus: %s\n", answer, sd_chat_view_last_status(chat));
    CHECK(strstr(answer, "8431") != NULL, "the planted fact is not in the code answer: %s", answer);
    CHECK(sd_chat_view_last_n_citations(chat) >= 1, "no citation in the code answer");
    const struct sd_qa_citation *cc = sd_chat_view_last_citation(chat, 0);
    // Lines 8 (the comment) and 9 (the code) both state the port: either is a correct citation.
    int cited = cc->line_start;
    CHECK(cc->valid && cc->page_no == 0 && (cited == 8 || cited == 9),
          "code citation %s -> valid %d line %d (want 8 or 9)", cc->marker, cc->valid, cited);
    g_signal_emit_by_name(sd_chat_view_last_citation_button(chat, 0), "clicked");
    CHECK(!g_strcmp0(sd_window_get_viewer_mode(win), "source"), "viewer mode %s", sd_window_get_viewer_mode(win));
    pump_until(source_loaded, sd_window_get_source_view(win), "the source file");
    g_autofree char *line = sd_source_view_get_line_text(sd_window_get_source_view(win), cited);
    CHECK(sd_source_view_get_line(sd_window_get_source_view(win)) == cited && line && strstr(line, "8431"),
          "source viewer at line %d: %s", sd_source_view_get_line(sd_window_get_source_view(win)), line);
    screenshot(GTK_WIDGET(win), "07-code.png");
    g_array_unref(folder_ids);

    // 7b'. Adding a large folder can be stopped: the job ends early and says so.
    g_autofree char *many = g_build_filename(tmp, "many", NULL);
    g_mkdir_with_parents(many, 0700);
    for (int i = 0; i < 300; i++) {
        g_autofree char *fn = g_strdup_printf("%s/note%03d.txt", many, i);
        g_autofree char *body = g_strdup_printf("Note %d.\nNothing to see here.\n", i);
        CHECK(g_file_set_contents(fn, body, -1, NULL), "write %s", fn);
    }
    g_autoptr(GFile) fm = g_file_new_for_path(many);
    guint n_before_many = sd_window_get_docs(win)->len;
    sd_window_add_files(win, &fm, 1, NULL);
    GtkWidget *stop_ingest = sd_window_get_job_stop_button(win, 0);
    CHECK(stop_ingest != NULL, "no Stop button on the ingest job row");
    g_signal_emit_by_name(stop_ingest, "clicked");
    pump_until(library_idle, NULL, "the stopped ingestion");
    printf("stopped ingestion: %s; %u documents added\n", sd_window_get_last_message(win),
           sd_window_get_docs(win)->len - n_before_many);
    CHECK(g_str_has_prefix(sd_window_get_last_message(win), "Stopped adding"), "ingestion not stopped: %s",
          sd_window_get_last_message(win));
    CHECK(sd_window_get_docs(win)->len - n_before_many < 300, "all 300 files were added despite Stop");
    if (sd_window_get_docs(win)->len > n_before_many) {
        removed = FALSE;
        sd_service_remove_async(sd_application_get_service(app), 0, many, remove_done, NULL);
        pump_until(flag_set, &removed, "removal of the stopped folder");
    }

    // 7c. Cache panel data: blocks were stored by the answers; clearing empties the cache.
    cache_info = NULL;
    sd_service_cache_stats_async(sd_application_get_service(app), cache_stats_done, NULL);
    pump_until(ptr_set, &cache_info, "cache statistics");
    printf("cache: %" G_GINT64_FORMAT " blocks, %" G_GUINT64_FORMAT " bytes of %" G_GUINT64_FORMAT ", hit rate %.2f\n",
           cache_info->st.entries, cache_info->st.bytes, cache_info->st.budget, cache_info->st.hit_rate);
    CHECK(cache_info->st.entries > 0 && cache_info->st.bytes > 0, "the answers stored nothing in the KV cache");
    sd_cache_info_free(cache_info);
    cleared = -2;
    sd_service_cache_clear_async(sd_application_get_service(app), cache_cleared, NULL);
    pump_until(int_set, &cleared, "cache clear");
    CHECK(cleared > 0, "cache clear removed %d blocks", cleared);
    cache_info = NULL;
    sd_service_cache_stats_async(sd_application_get_service(app), cache_stats_done, NULL);
    pump_until(ptr_set, &cache_info, "cache statistics");
    CHECK(cache_info->st.entries == 0 && cache_info->st.bytes == 0, "cache not empty after clear");
    sd_cache_info_free(cache_info);

    // 7d. Remove the code folder from the library.
    removed = FALSE;
    sd_service_remove_async(sd_application_get_service(app), 0, proj, remove_done, NULL);
    pump_until(flag_set, &removed, "removal");
    sd_window_refresh(win);
    pump_until(library_idle, NULL, "the library after removal");
    CHECK(sd_window_get_docs(win)->len == before, "%u documents after removing the folder, want %u",
          sd_window_get_docs(win)->len, before);

    // 7b. A scanned PDF (drawn by test_scan.h): its image-only page is read by OCR at ingestion, and a
    // citation of it highlights the quote and its sentence from the OCR word boxes (no text layer to search).
    struct sd_ocr *eng = NULL;
    if (sd_ocr_built() && sd_ocr_new(NULL, &eng, NULL) == SD_OK) {
        sd_ocr_free(eng);
        g_autofree char *scan = g_build_filename(tmp, "scan.pdf", NULL);
        CHECK(make_pdf(scan) == 0, "cannot draw %s", scan);
        g_autoptr(GFile) fsc = g_file_new_for_path(scan);
        sd_window_add_files(win, &fsc, 1, NULL);
        pump_until(library_idle, NULL, "ingestion (with OCR) of the scanned PDF");
        gint64 scan_id = 0;
        for (guint i = 0; i < sd_window_get_docs(win)->len; i++) {
            SdDocInfo *di = g_ptr_array_index(sd_window_get_docs(win), i);
            if (!strcmp(di->path, scan))
                scan_id = di->id;
        }
        CHECK(scan_id > 0, "the scanned PDF is not in the library");
        struct sd_qa_citation sc = {.marker = "p. 1", .valid = 1, .doc_id = scan_id, .path = scan, .page_no = 1};
        sd_window_open_citation(win, &sc, "The Brenlow vault opens with code KX-4821");
        SdPdfView *spv = sd_window_get_pdf_view(win);
        pump_until(passage_shown, spv, "the passage highlight on the scanned page");
        printf("scanned page: %u quote and %u passage box(es) from OCR\n", sd_pdf_view_get_n_highlights(spv),
               sd_pdf_view_get_n_passage_highlights(spv));
        CHECK(sd_pdf_view_get_n_highlights(spv) >= 6, "the quote is not highlighted on the scanned page");
        screenshot(GTK_WIDGET(win), "06b-scan-citation.png");
    } else {
        printf("note: OCR cannot run here (no Tesseract or English data): the scanned-page citation is not checked\n");
    }

    // 8. No model: the answer fails with a message, the banner says why, the window keeps working.
    // s owns its strings (a shallow copy would borrow the app's, which the first apply frees).
    struct sd_settings s;
    CHECK(sd_settings_copy(&s, sd_application_get_settings(app)) == SD_OK, "settings copy");
    g_autofree char *nomodel = g_build_filename(tmp, "no-such-model", NULL);
    set_model_dir(&s, nomodel);
    sd_application_apply_settings(app, &s);
    g_autofree char *ini = g_build_filename(g_getenv("XDG_CONFIG_HOME"), "sparsedoc", "config.ini", NULL);
    struct sd_settings back;
    CHECK(sd_settings_load(ini, &back, NULL) == SD_OK && back.model_dir && !strcmp(back.model_dir, nomodel),
          "settings not persisted in %s", ini);
    sd_settings_clear(&back);
    ask(question, &streamed);
    status = sd_chat_view_last_status(chat);
    printf("without a model: %s\nbanner: %s\n", status, sd_window_get_banner(win));
    CHECK(status && g_str_has_prefix(status, "Could not answer"), "no error shown without a model: %s", status);
    CHECK(sd_window_get_banner(win) != NULL, "no banner without a model");
    sd_window_refresh(win);
    pump_until(library_idle, NULL, "a library reload without a model");
    screenshot(GTK_WIDGET(win), "08-no-model.png");

    // The model is back: the banner goes, the same question is answered again (in dark style).
    set_model_dir(&s, NULL);
    s.color_scheme = SD_COLOR_DARK;
    sd_application_apply_settings(app, &s);
    CHECK(adw_style_manager_get_dark(adw_style_manager_get_default()), "dark style not applied");
    sd_window_select_docs(win, &doc_id, 1);
    ask(question, &streamed);
    status = sd_chat_view_last_status(chat);
    CHECK(status && g_str_has_prefix(status, "Cache:"), "no answer once the model is back: %s", status);
    CHECK(sd_window_get_banner(win) == NULL, "the banner stays after the model works again");
    if (have_sample && sd_chat_view_last_n_citations(chat) >= 1) {
        g_signal_emit_by_name(sd_chat_view_last_citation_button(chat, 0), "clicked");
        pump_until(passage_shown, sd_window_get_pdf_view(win), "the cited passage highlight");
    }
    screenshot(GTK_WIDGET(win), "09-dark.png");

    // Preferences and About open as their own windows.
    g_action_group_activate_action(G_ACTION_GROUP(app), "preferences", NULL);
    settle();
    GtkWindow *prefs = find_toplevel(ADW_TYPE_PREFERENCES_WINDOW);
    CHECK(prefs != NULL, "no preferences window");
    screenshot(GTK_WIDGET(prefs), "10-preferences.png");
    destroy_and_finalize(prefs, "the preferences window to be released");
    // An edit in the preferences window is applied and saved: "use the default model" clears a chosen one.
    set_model_dir(&s, nomodel);
    sd_application_apply_settings(app, &s);
    sd_settings_clear(&s);
    g_action_group_activate_action(G_ACTION_GROUP(app), "preferences", NULL);
    settle();
    prefs = find_toplevel(ADW_TYPE_PREFERENCES_WINDOW);
    CHECK(prefs != NULL, "no preferences window the second time");
    CHECK(gtk_widget_activate_action(GTK_WIDGET(prefs), "prefs.reset-model", NULL), "no prefs.reset-model action");
    CHECK(sd_application_get_settings(app)->model_dir == NULL, "the model folder was not reset: %s",
          sd_application_get_settings(app)->model_dir);
    CHECK(sd_settings_load(ini, &back, NULL) == SD_OK && back.model_dir == NULL, "the reset was not saved in %s", ini);
    sd_settings_clear(&back);
    // OCR: languages applied from the entry row (a malformed list is marked and not saved), the switch saved.
    GtkWidget *lang_row = sd_prefs_window_get_ocr_lang_row(SD_PREFS_WINDOW(prefs));
    GtkWidget *ocr_sw = sd_prefs_window_get_ocr_switch(SD_PREFS_WINDOW(prefs));
    CHECK(!strcmp(gtk_editable_get_text(GTK_EDITABLE(lang_row)), "eng") && gtk_switch_get_active(GTK_SWITCH(ocr_sw)),
          "OCR rows do not show the defaults (eng, on)");
    gtk_editable_set_text(GTK_EDITABLE(lang_row), "eng+fra");
    g_signal_emit_by_name(lang_row, "apply");
    gtk_editable_set_text(GTK_EDITABLE(lang_row), "eng;rm -rf");
    g_signal_emit_by_name(lang_row, "apply");
    CHECK(gtk_widget_has_css_class(lang_row, "error"), "a malformed OCR language list is not marked");
    gtk_switch_set_active(GTK_SWITCH(ocr_sw), FALSE);
    CHECK(sd_settings_load(ini, &back, NULL) == SD_OK && back.ocr_lang && !strcmp(back.ocr_lang, "eng+fra") &&
              back.no_ocr == 1,
          "OCR settings not saved: %s, off %d", back.ocr_lang ? back.ocr_lang : "(none)", back.no_ocr);
    sd_settings_clear(&back);
    gtk_switch_set_active(GTK_SWITCH(ocr_sw), TRUE);
    // FP8 numerics: off by default, each switch saved to [engine] and applied to the app's settings.
    GtkWidget *ix_sw = sd_prefs_window_get_fp8_switch(SD_PREFS_WINDOW(prefs), 0);
    GtkWidget *act_sw = sd_prefs_window_get_fp8_switch(SD_PREFS_WINDOW(prefs), 1);
    GtkWidget *kv_sw = sd_prefs_window_get_fp8_switch(SD_PREFS_WINDOW(prefs), 2);
    CHECK(kv_sw != act_sw && kv_sw != ix_sw, "no FP8 KV cache switch of its own");
    CHECK(!gtk_switch_get_active(GTK_SWITCH(ix_sw)) && !gtk_switch_get_active(GTK_SWITCH(act_sw)) &&
              !gtk_switch_get_active(GTK_SWITCH(kv_sw)),
          "the FP8 switches are not off by default");
    gtk_switch_set_active(GTK_SWITCH(act_sw), TRUE);
    CHECK(sd_settings_load(ini, &back, NULL) == SD_OK && back.fp8_act == 1 && back.indexer_fp8 == 0 && back.kv_fp8 == 0,
          "FP8 activations not saved: %d %d %d", back.fp8_act, back.indexer_fp8, back.kv_fp8);
    sd_settings_clear(&back);
    CHECK(sd_application_get_settings(app)->fp8_act == 1, "FP8 activations not applied to the app's settings");
    gtk_switch_set_active(GTK_SWITCH(act_sw), FALSE);
    gtk_switch_set_active(GTK_SWITCH(ix_sw), TRUE);
    CHECK(sd_settings_load(ini, &back, NULL) == SD_OK && back.fp8_act == 0 && back.indexer_fp8 == 1 && back.kv_fp8 == 0,
          "FP8 indexer not saved: %d %d %d", back.fp8_act, back.indexer_fp8, back.kv_fp8);
    sd_settings_clear(&back);
    gtk_switch_set_active(GTK_SWITCH(ix_sw), FALSE);
    gtk_switch_set_active(GTK_SWITCH(kv_sw), TRUE);
    CHECK(sd_settings_load(ini, &back, NULL) == SD_OK && back.kv_fp8 == 1 && back.fp8_act == 0 && back.indexer_fp8 == 0,
          "FP8 KV cache not saved: %d %d %d", back.kv_fp8, back.fp8_act, back.indexer_fp8);
    sd_settings_clear(&back);
    CHECK(sd_application_get_settings(app)->kv_fp8 == 1, "FP8 KV cache not applied to the app's settings");
    gtk_switch_set_active(GTK_SWITCH(kv_sw), FALSE);
    CHECK(sd_application_get_settings(app)->kv_fp8 == 0, "FP8 KV cache switched off not applied");
    destroy_and_finalize(prefs, "the preferences window to be released");
    g_action_group_activate_action(G_ACTION_GROUP(app), "about", NULL);
    settle();
    GtkWindow *about = find_toplevel(ADW_TYPE_ABOUT_WINDOW);
    CHECK(about != NULL, "no about window");
    destroy_and_finalize(about, "the about window to be released");
    g_action_group_activate_action(G_ACTION_GROUP(app), "shortcuts", NULL);
    settle();
    GtkWindow *keys = find_toplevel(GTK_TYPE_SHORTCUTS_WINDOW);
    CHECK(keys != NULL, "no keyboard shortcuts window");
    destroy_and_finalize(keys, "the shortcuts window to be released");

    // Closing the window while an answer streams and a folder is being added: the jobs finish on the
    // worker and their results find no widgets to update (no crash, no warning).
    sd_chat_view_ask(chat, question);
    g_autoptr(GFile) fp2 = g_file_new_for_path(proj);
    sd_window_add_files(win, &fp2, 1, NULL);
    // The jobs hold the window until their results have been delivered; then it must be finalized.
    destroy_and_finalize(GTK_WINDOW(win), "the closed window to be released");
    for (int i = 0; i < 30; i++) { // let the worker finish and its queued callbacks run
        settle();
        g_usleep(50000);
    }
}

struct drive_args {
    const char *source, *corpus;
    gboolean done;
};

static void on_activate(GApplication *app, gpointer data)
{
    struct drive_args *a = data;
    if (a->done) // activated again (a second instance): nothing more to test
        return;
    a->done = TRUE;
    drive(SD_APPLICATION(app), a->source, a->corpus);
}

static int run(const char *source, const char *corpus)
{
    g_autofree char *sample = g_build_filename(source, "data", "samples", "harbor-notes.pdf", NULL);
    g_autofree char *corpus_pdf = corpus ? g_build_filename(corpus, "pdf", "DeepSeek_V3_2.pdf", NULL) : NULL;
    if (!g_file_test(sample, G_FILE_TEST_EXISTS) && !(corpus_pdf && g_file_test(corpus_pdf, G_FILE_TEST_EXISTS))) {
        printf("SKIP: neither data/samples/harbor-notes.pdf nor the corpus PDF is present\n");
        return 77;
    }
    SdApplication *app = sd_application_new();
    g_application_set_flags(G_APPLICATION(app), G_APPLICATION_NON_UNIQUE | G_APPLICATION_HANDLES_OPEN);
    struct drive_args a = {source, corpus, FALSE};
    // After the application's own activate, which opens the window.
    g_signal_connect_after(app, "activate", G_CALLBACK(on_activate), &a);
    // g_application_run() registers, starts up, activates, and on the way out shuts down (GtkApplication
    // then drops the references its action muxer holds) and unregisters: the application can be finalized.
    int status = g_application_run(G_APPLICATION(app), 0, NULL);
    CHECK(a.done && status == 0, "the application did not run the test (exit status %d)", status);
    g_assert_finalize_object(app);
    printf("ok: %d checks\n", n_checks);
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *source = g_getenv("SD_SOURCE"), *build = g_getenv("SD_BUILD"), *corpus = g_getenv("SD_CORPUS");
    if (!source || !build) {
        fprintf(stderr, "test_ui: run through meson test (SD_SOURCE and SD_BUILD unset)\n");
        return 1;
    }
    // No display: run again under xvfb-run (once).
    if (!g_getenv("DISPLAY") && !g_getenv("WAYLAND_DISPLAY")) {
        if (g_getenv("SD_UI_XVFB")) {
            printf("SKIP: xvfb-run started but gave no display\n");
            return 77;
        }
        g_autofree char *xvfb = g_find_program_in_path("xvfb-run");
        if (!xvfb) {
            printf("SKIP: no display and no xvfb-run (apt install xvfb xauth)\n");
            return 77;
        }
        g_setenv("SD_UI_XVFB", "1", TRUE);
        // Fatal warnings from GLib's start in the child (g_log_set_always_fatal below covers this process).
        const char *dbg = g_getenv("G_DEBUG");
        g_autofree char *fatal = dbg && *dbg ? g_strconcat(dbg, ",fatal-warnings", NULL) : g_strdup("fatal-warnings");
        g_setenv("G_DEBUG", fatal, TRUE);
        char *args[] = {xvfb, "-a", "-s", "-screen 0 1600x1000x24", argv[0], NULL};
        execv(xvfb, args);
        printf("SKIP: cannot run xvfb-run\n");
        return 77;
    }
    g_setenv("GDK_BACKEND", g_getenv("WAYLAND_DISPLAY") && !g_getenv("DISPLAY") ? "wayland" : "x11", TRUE);
    g_setenv("GSK_RENDERER", "cairo", TRUE); // Xvfb has no GL
    g_setenv("GSETTINGS_BACKEND", "memory", TRUE);
    g_setenv("GTK_A11Y", "none", TRUE);
    g_setenv("NO_AT_BRIDGE", "1", TRUE);
    // Temp store, cache and config; the shipped test model.
    g_autofree char *tmp = g_dir_make_tmp("sd-ui-XXXXXX", NULL);
    g_autofree char *data = g_build_filename(tmp, "data", NULL), *cache = g_build_filename(tmp, "cache", NULL),
                    *config = g_build_filename(tmp, "config", NULL);
    g_mkdir_with_parents(data, 0700);
    g_mkdir_with_parents(cache, 0700);
    g_mkdir_with_parents(config, 0700);
    g_setenv("XDG_DATA_HOME", data, TRUE);
    g_setenv("XDG_CACHE_HOME", cache, TRUE);
    g_setenv("XDG_CONFIG_HOME", config, TRUE);
    g_unsetenv("SPARSEDOC_DB");
    g_unsetenv("SPARSEDOC_CACHE_DIR");
    g_unsetenv("SPARSEDOC_CONFIG");
    g_autofree char *model = g_build_filename(source, "data", "models", "sparsedoc-mini", NULL);
    g_setenv("SPARSEDOC_MODEL", model, TRUE);
    // GTK is started only now: GLib caches the XDG directories on first use.
    // Strict: any GLib/GTK warning or critical fails the test (G_DEBUG=fatal-warnings).
    g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING | G_LOG_FATAL_MASK);
    if (!gtk_init_check()) {
        printf("SKIP: cannot open the display\n");
        return 77;
    }
    // No animations: screenshots show settled states (a style switch is otherwise a cross-fade).
    g_object_set(gtk_settings_get_default(), "gtk-enable-animations", FALSE, NULL);
    shots_dir = g_build_filename(build, "ui-screenshots", NULL);
    g_mkdir_with_parents(shots_dir, 0755);
    int rc = run(source, corpus && g_file_test(corpus, G_FILE_TEST_IS_DIR) ? corpus : NULL);
    if (rc == 0) {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmp);
    }
    return rc;
}
