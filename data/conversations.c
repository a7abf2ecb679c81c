// conversations.c: conversation rows in the store (see conversations.h).
#include "conversations.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum sd_status fail(sqlite3 *db, sqlite3_stmt *st, struct sd_err *err, const char *what)
{
    enum sd_status r = sd_err_set(err, SD_ERR_IO, "conversations: %s: %s", what, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return r;
}

enum sd_status sd_store_conversation_new(struct sd_store *s, const char *title, const char *scope_json,
                                         const char *model, int64_t *id, struct sd_err *err)
{
    sqlite3 *db = sd_store_db(s);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO conversations(title, scope, model, created_ms, updated_ms) "
                           "VALUES (?1, ?2, ?3, ?4, ?4)",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(db, st, err, "new");
    sqlite3_bind_text(st, 1, title ? title : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, scope_json ? scope_json : "[]", -1, SQLITE_TRANSIENT);
    if (model)
        sqlite3_bind_text(st, 3, model, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, now_ms());
    if (sqlite3_step(st) != SQLITE_DONE)
        return fail(db, st, err, "new");
    *id = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(st);
    return SD_OK;
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

enum sd_status sd_store_conversation_get(struct sd_store *s, int64_t id, char **scope_json, char **title,
                                         struct sd_err *err)
{
    sqlite3 *db = sd_store_db(s);
    sqlite3_stmt *st = NULL;
    *scope_json = NULL;
    if (title)
        *title = NULL;
    if (sqlite3_prepare_v2(db, "SELECT scope, title FROM conversations WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
        return fail(db, st, err, "get");
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        return sd_err_set(err, SD_ERR_MISSING, "no conversation %lld (see 'sparsedoc chat --list')", (long long)id);
    }
    if (rc != SQLITE_ROW)
        return fail(db, st, err, "get");
    *scope_json = dup_col(st, 0);
    if (title)
        *title = dup_col(st, 1);
    sqlite3_finalize(st);
    if (!*scope_json)
        return sd_err_set(err, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

enum sd_status sd_store_conversation_add_turn(struct sd_store *s, int64_t id, const char *question, const char *answer,
                                              struct sd_err *err)
{
    enum sd_status r = sd_store_begin(s, err);
    if (r)
        return r;
    sqlite3 *db = sd_store_db(s);
    sqlite3_stmt *st = NULL;
    int64_t t = now_ms();
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO conversation_turns(conversation_id, ord, question, answer, created_ms) "
                           "VALUES (?1, (SELECT COALESCE(MAX(ord), 0) + 1 FROM conversation_turns "
                           "WHERE conversation_id = ?1), ?2, ?3, ?4)",
                           -1, &st, NULL) != SQLITE_OK)
        goto bad;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, question, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, answer ? answer : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, t);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto bad;
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(db, "UPDATE conversations SET updated_ms = ?2 WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
        goto bad;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, t);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto bad;
    sqlite3_finalize(st);
    return sd_store_commit(s, err);
bad:
    r = fail(db, st, err, "add turn");
    sd_store_rollback(s);
    return r;
}

enum sd_status sd_store_conversation_turns(struct sd_store *s, int64_t id, sd_conv_turn_fn fn, void *user,
                                           struct sd_err *err)
{
    sqlite3 *db = sd_store_db(s);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT question, answer, created_ms FROM conversation_turns WHERE conversation_id = ?1 "
                           "ORDER BY ord",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(db, st, err, "turns");
    sqlite3_bind_int64(st, 1, id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (fn(user, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
               sqlite3_column_int64(st, 2)))
            break;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fail(db, st, err, "turns");
    sqlite3_finalize(st);
    return SD_OK;
}

enum sd_status sd_store_conversations_foreach(struct sd_store *s, sd_conv_fn fn, void *user, struct sd_err *err)
{
    sqlite3 *db = sd_store_db(s);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(
            db,
            "SELECT c.id, c.title, c.created_ms, c.updated_ms, (SELECT COUNT(*) FROM conversation_turns "
            "t WHERE t.conversation_id = c.id) FROM conversations c ORDER BY c.updated_ms DESC, c.id DESC",
            -1, &st, NULL) != SQLITE_OK)
        return fail(db, st, err, "list");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (fn(user, sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2),
               sqlite3_column_int64(st, 3), sqlite3_column_int(st, 4)))
            break;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fail(db, st, err, "list");
    sqlite3_finalize(st);
    return SD_OK;
}
