// test_data_text.c: text clean-up (NFKC, whitespace, hyphenation, running headers, page quality) and
// .gitignore pattern matching: unit tests without files.
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "text_clean.h"
#include "tree_walk.h"

static char *norm(const char *s)
{
    size_t n;
    return sd_text_normalize_page(s, strlen(s), &n);
}

int main(void)
{
    char *t = norm("\xEF\xAC\x81nd the e\xEF\xAC\x83" "cient  way\t\ttoday \r\n\n\n\nnext");
    CHECK_MSG(t && !strcmp(t, "find the efficient way today\n\nnext"), "got '%s'", t);
    free(t);
    t = norm("a long exam-\nple of hyphen-\nation, and Data-\nBase stays, and a -\nb");
    CHECK_MSG(t && !strcmp(t, "a long example of hyphenation, and Data-\nBase stays, and a -\nb"), "got '%s'", t);
    free(t);
    t = norm("\xE4\xB8\xAD\xE6\x96\x87\xE6\xB5\x8B\xE8\xAF\x95 \xEF\xBC\xA1\xEF\xBC\xA2"); // CJK kept, full-width folded
    CHECK_MSG(t && !strcmp(t, "\xE4\xB8\xAD\xE6\x96\x87\xE6\xB5\x8B\xE8\xAF\x95 AB"), "got '%s'", t);
    free(t);
    t = norm("bad \xFF\xFE bytes\x01 soft\xC2\xADhyphen");
    CHECK_MSG(t && !strcmp(t, "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes softhyphen"), "got '%s'", t);
    free(t);

    CHECK(sd_text_page_quality("", 0) == SD_PAGE_EMPTY);
    CHECK(sd_text_page_quality("  \n 3 \n", 7) == SD_PAGE_EMPTY);
    const char *ok = "The quick brown fox jumps over the lazy dog and keeps running through the field.";
    CHECK(sd_text_page_quality(ok, strlen(ok)) == SD_PAGE_OK);
    const char *soup = "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEE\x80\x80\xEE\x80\x81\xEE\x80\x82\xEE\x80\x83"
                       "\xEE\x80\x84\xEE\x80\x85\xEE\x80\x86\xEE\x80\x87\xEE\x80\x88\xEE\x80\x89\xEE\x80\x8A\xEE\x80\x8B"
                       " ab cd ef";
    CHECK(sd_text_page_quality(soup, strlen(soup)) == SD_PAGE_GARBLED);
    const char *letters = "xkcd bcdf ghjk lmnp qrst vwxz bcdf ghjk lmnp qrst vwxz bcdf ghjk lmnp qrst vwxz bcdf ghjk "
                          "lmnp qrst vwxz bcdf ghjk lmnp qrst";
    CHECK(sd_text_page_quality(letters, strlen(letters)) == SD_PAGE_GARBLED);
    const char *toc = "Contents\n1 Intro . . . . . . . . . . . . . . . . . . . . . . . . 1\n2 More . . . . . . . . . 5";
    CHECK(sd_text_page_quality(toc, strlen(toc)) == SD_PAGE_OK);

    // Running headers/footers: "Journal of Things" + page numbers on every page are dropped.
    struct sd_hf *hf = sd_hf_new();
    char pages[6][200];
    for (int i = 0; i < 6; i++) {
        snprintf(pages[i], sizeof pages[i], "Journal of Things, Vol. 3\nBody text number %c here.\nMore body %c.\n%d",
                 'A' + i, 'k' + i, i + 10);
        sd_hf_add_page(hf, pages[i], strlen(pages[i]));
    }
    sd_hf_finish(hf);
    CHECK(sd_hf_count(hf) >= 2);
    size_t n = sd_hf_strip(hf, pages[2], strlen(pages[2]));
    CHECK_MSG(!strcmp(pages[2], "Body text number C here.\nMore body m."), "got '%s' (%zu)", pages[2], n);
    sd_hf_free(hf);

    // gitignore patterns
    CHECK(sd_gitignore_match("*.o", "src/a.o"));
    CHECK(!sd_gitignore_match("*.o", "src/a.c"));
    CHECK(sd_gitignore_match("/build", "build"));
    CHECK(!sd_gitignore_match("/build", "src/build"));
    CHECK(sd_gitignore_match("build", "src/build"));
    CHECK(sd_gitignore_match("doc/*.txt", "doc/a.txt"));
    CHECK(!sd_gitignore_match("doc/*.txt", "doc/x/a.txt"));
    CHECK(sd_gitignore_match("**/tmp", "a/b/tmp"));
    CHECK(sd_gitignore_match("a/**/z", "a/z"));
    CHECK(sd_gitignore_match("a/**/z", "a/b/c/z"));
    CHECK(sd_gitignore_match("logs/**", "logs/x/y.log"));
    CHECK(sd_gitignore_match("file[0-9].txt", "file7.txt"));
    CHECK(!sd_gitignore_match("file[!0-9].txt", "file7.txt"));
    CHECK(sd_gitignore_match("\\#lit", "#lit"));
    CHECK(sd_gitignore_match("?.c", "x.c"));
    return sd_test_finish("data_text");
}
