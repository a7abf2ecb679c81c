// sd-chat-turn.h: one question and its answer in the chat pane: the question, the answer as it streams
// in, the progress line while it runs, the citation buttons and the cache / error / stop line once it is
// done. Clicking a citation emits "citation-clicked" (its index in the result's citations).
#pragma once

#include <gtk/gtk.h>

#include "sd-service.h"

G_BEGIN_DECLS

#define SD_TYPE_CHAT_TURN (sd_chat_turn_get_type())
G_DECLARE_FINAL_TYPE(SdChatTurn, sd_chat_turn, SD, CHAT_TURN, GtkWidget)

GtkWidget *sd_chat_turn_new(const char *question);
void sd_chat_turn_append(SdChatTurn *self, const char *piece);      // a streamed piece of the answer
void sd_chat_turn_set_answer(SdChatTurn *self, const char *text);   // replaces the text (a saved answer)
void sd_chat_turn_set_progress(SdChatTurn *self, const char *text); // NULL hides the progress line
// The status line; css: space-separated style classes ("dim-label", "warning", "error", ...).
void sd_chat_turn_set_status(SdChatTurn *self, const char *css, const char *text);
// The finished answer (the turn takes r): its text and one button per citation.
void sd_chat_turn_set_result(SdChatTurn *self, struct sd_qa_result *r);

const char *sd_chat_turn_get_answer(SdChatTurn *self);                // the result's answer, else the text so far
guint sd_chat_turn_get_n_pieces(SdChatTurn *self);                    // streamed pieces received
const char *sd_chat_turn_get_status(SdChatTurn *self);                // NULL before a status is set
const struct sd_qa_result *sd_chat_turn_get_result(SdChatTurn *self); // NULL until finished (borrowed)
guint sd_chat_turn_get_n_citations(SdChatTurn *self);
GtkWidget *sd_chat_turn_get_citation_button(SdChatTurn *self, guint i);

G_END_DECLS
