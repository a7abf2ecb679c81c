// citations.h: citation markers in an answer ("[p. 12]", "[p. iv]", "[src/main.c:88]", "[path:10-20]",
// several in one bracket separated by ';' or ','), and their mapping back to the span table of the
// contexts the answer was generated from. A marker that names nothing in those contexts is kept with
// valid = 0, so a front end can show the model cited something that is not there.
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

#endif
