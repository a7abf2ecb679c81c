// conversations.h: persisted question-answering conversations (sparsedoc chat, the UI) in the store:
// a conversation has a title, a scope (JSON array of document ids) and the model that answered; its
// turns (question, answer) are kept in order. Tables: conversations, conversation_turns (store.c
// migration 3). Every SQLite error becomes an enum sd_status with a message here.
#ifndef SD_DATA_CONVERSATIONS_H
#define SD_DATA_CONVERSATIONS_H

#include <stdint.h>

#include "sd_status.h"
#include "store.h"

// New conversation; *id receives its id.
enum sd_status sd_store_conversation_new(struct sd_store *s, const char *title, const char *scope_json,
                                         const char *model, int64_t *id, struct sd_err *err);
// Its scope JSON (malloc'd, caller frees) and title (malloc'd, may be NULL). SD_ERR_MISSING if no such id.
enum sd_status sd_store_conversation_get(struct sd_store *s, int64_t id, char **scope_json, char **title,
                                         struct sd_err *err);
// Append a turn (and bump updated_ms).
enum sd_status sd_store_conversation_add_turn(struct sd_store *s, int64_t id, const char *question, const char *answer,
                                              struct sd_err *err);
// Turns in order (strings borrowed for the callback; return non-zero to stop).
typedef int (*sd_conv_turn_fn)(void *user, const char *question, const char *answer, int64_t created_ms);
enum sd_status sd_store_conversation_turns(struct sd_store *s, int64_t id, sd_conv_turn_fn fn, void *user,
                                           struct sd_err *err);
// Conversations, most recently updated first.
typedef int (*sd_conv_fn)(void *user, int64_t id, const char *title, int64_t created_ms, int64_t updated_ms,
                          int n_turns);
enum sd_status sd_store_conversations_foreach(struct sd_store *s, sd_conv_fn fn, void *user, struct sd_err *err);

#endif
