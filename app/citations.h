// citations.h: citation markers in an answer ("[p. 12]", "[p. iv]", "[src/main.c:88]", "[path:10-20]",
// several in one bracket separated by ';' or ','), and their mapping back to the span table of the
// contexts the answer was generated from. A marker that names nothing in those contexts is kept with
// valid = 0, so a front end can show the model cited something that is not there. Grounding checks that
// the claim before each marker is in the cited place and re-anchors it to where it is (sd_cite_ground).
#ifndef SD_APP_CITATIONS_H
#define SD_APP_CITATIONS_H

#include <stddef.h>

#include "contexts.h"
#include "qa.h"
#include "store.h"

// One parsed marker (no store access): kind 'p' page (page = the label text after "p."/"page"),
// 'l' line (path, line_start..line_end).
struct sd_cite_marker {
    char kind;
    char text[256]; // the marker as written, without brackets
    char page[64];
    char path[1024];
    int line_start, line_end;
};

// Parse the markers of answer into *out (malloc'd, caller frees; NULL when none), *n their number.
// Brackets that are not citations (e.g. "[1]", "[note]") are ignored. Duplicates are kept once.
enum sd_status sd_cite_parse(const char *answer, struct sd_cite_marker **out, size_t *n, struct sd_err *err);

// Parse and resolve against the spans of contexts ctx[0..n_ctx): *out malloc'd array of *n citations
// (free each with sd_qa_citation_clear, then the array).
enum sd_status sd_cite_resolve(struct sd_store *s, const struct sd_context *const *ctx, size_t n_ctx,
                               const char *answer, struct sd_qa_citation **out, size_t *n, struct sd_err *err);
void sd_qa_citation_clear(struct sd_qa_citation *c);

// Ground the citations of answer (as resolved by sd_cite_resolve into *cites / *n_cites) in the text of
// the spans of ctx[0..n_ctx) (read from store s). For each marker in order, its claim is the answer text
// between the previous citation bracket (or the start) and its own bracket, trimmed of whitespace and
// of ",;:." at its ends, and of that its last sentence (after the last ". ", "! ", "? " or newline); claims of
// 2..200 bytes are checked (case-insensitive, whitespace runs as one space):
//   - in the cited place (the cited page of the document, or the cited lines): grounded = 1;
//   - else found in any span of the contexts: re-anchored to the match closest to the cited place (same
//     document first, then page / line distance, then context order): a page ("p. LABEL", the physical
//     number without a label) or the line(s) holding it ("PATH:L" with PATH as the contexts show it,
//     relative to the document's root); corrected_from = the marker as written, marker = the new one,
//     grounded = 1, and the marker is rewritten in the answer;
//   - else grounded = 0, unchanged. Unchecked claims get grounded = -1.
// *cites is replaced by one entry per distinct marker of the rewritten answer in order of appearance
// (the same as before when nothing was corrected). *grounded_answer: malloc'd (caller frees), answer
// with the corrected markers rewritten and every other byte unchanged.
enum sd_status sd_cite_ground(struct sd_store *s, const struct sd_context *const *ctx, size_t n_ctx, const char *answer,
                              struct sd_qa_citation **cites, size_t *n_cites, char **grounded_answer,
                              struct sd_err *err);

// Grounded streaming: an answer passed on as it is generated, with each citation marker grounded
// (sd_cite_resolve + sd_cite_ground against ctx) before it is shown, so a front end shows the answer that
// sd_cite_ground gives for the whole text. Text after an unclosed '[' is held until its ']' (at most
// SD_CITE_STREAM_HOLD bytes: a longer bracket is not a marker and passes on as written, and so does the rest
// of that answer). Grounding a marker depends only on the text before it, so what was passed on stays a
// prefix of every later grounded text. No ctx (NULL): the text passes on as written. A grounding failure
// (store error, out of memory) also passes the text on as written from there on.
#define SD_CITE_STREAM_HOLD 300
struct sd_cite_stream {
    struct sd_store *store;
    const struct sd_context *const *ctx;
    size_t n_ctx;
    void (*emit)(void *user, const char *text, size_t len); // may be NULL: nothing shown, nothing grounded
    void *user;
    size_t raw_done; // bytes of the raw answer passed on
    size_t g_done;   // bytes of the grounded answer passed on
    int raw_only;
};
void sd_cite_stream_init(struct sd_cite_stream *cs, struct sd_store *s, const struct sd_context *const *ctx,
                         size_t n_ctx, void (*emit)(void *user, const char *text, size_t len), void *user);
// raw[0..len) is the whole answer so far (it only grows); final: nothing more will come, pass on everything.
void sd_cite_stream_feed(struct sd_cite_stream *cs, const char *raw, size_t len, int final);

#endif
