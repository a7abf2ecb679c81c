// markers.h: constrained citation markers. The markers a context offers ("p. 113]", "src/main.c:88]": the text
// after '[' up to and including ']' of every line that starts with '['), sorted and unique, and a logits mask that
// keeps the answer's "[..." a prefix of one of them, so a marker the model writes always names a passage. Used by
// the Q&A service (qa.c, templates with constrain_markers) and tools/eval_mini (--constrain-markers); needs only
// the engine's tokenizer.
#ifndef SD_MARKERS_H
#define SD_MARKERS_H

#include <stddef.h>
#include <stdint.h>

#include "sd_status.h"
#include "tokenizer.h"

struct sd_markers {
    char **s; // owned; free with sd_markers_free
    size_t n;
};

#define SD_MARKER_CAP 640
// Where an answer stands: inside "[..." (in) with the bytes after '[' so far.
struct sd_marker_state {
    int in;
    char buf[SD_MARKER_CAP];
    size_t len;
};

// The markers of text (a context as the model sees it); *m is filled (empty when there are none).
enum sd_status sd_markers_from_text(const char *text, struct sd_markers *m, struct sd_err *err);
// The same for token ids (decoded with special tokens skipped).
enum sd_status sd_markers_from_ids(const struct sd_tokenizer *tok, const int32_t *ids, size_t n, struct sd_markers *m,
                                   struct sd_err *err);
void sd_markers_free(struct sd_markers *m);
// Feed the bytes of a generated token to st; 0 when they leave the marker set (st then holds what was fed).
int sd_markers_feed(const struct sd_markers *m, struct sd_marker_state *st, const char *b, size_t bl);
// Set the logits of tokens that would break the marker in progress to -inf; special tokens too while inside a
// marker (close it before ending). Leaves the logits alone when no allowed token would remain.
void sd_markers_mask(const struct sd_tokenizer *tok, const struct sd_markers *m, const struct sd_marker_state *st,
                     float *logits, int vocab);

#endif
