// test_data_pdf.c: PDF ingestion on the shared corpus: page numbers of known phrases, outline section
// titles, needs-OCR pages, encrypted files with and without --password, a crashing page isolated by
// the worker (fault injection), and every file of pdf/ either ingested or failed with a message (with OCR
// on where this build has Tesseract: rendering hostile pages must not break it either).
#include <dirent.h>

#include "pdf_extract.h"
#include "test_data_common.h"

struct first_hit {
    int n, page;
    char path[512], section[256];
};

static int on_hit(void *user, const struct sd_search_hit *h)
{
    struct first_hit *c = user;
    if (!c->n++) {
        c->page = h->page_no;
        snprintf(c->path, sizeof c->path, "%s", h->path);
        snprintf(c->section, sizeof c->section, "%s", h->section ? h->section : "");
    }
    return 0;
}

static int n_failed_events, n_events;
static void on_event(void *user, const struct sd_ingest_event *ev)
{
    (void)user;
    n_events++;
    if (ev->kind == SD_INGEST_FAILED) {
        n_failed_events++;
        if (!ev->msg || strlen(ev->msg) < 10)
            fprintf(stderr, "failure without a clear message: %s\n", ev->path);
    }
}

int main(void)
{
    const char *corpus = sd_test_require_corpus("PDF ingestion tests");
    char path[1024];
    struct sd_store *s = open_db("pdf.db");
    struct sd_ingest_stats st;
    struct sd_ingest_opts o = {.page_timeout_s = 20, .file_timeout_s = 120};
    struct sd_err err;

    snprintf(path, sizeof path, "%s/pdf/DeepSeek_V3_2.pdf", corpus);
    CHECK(ingest1(s, path, &o, &st) == SD_OK);
    CHECK(st.added == 1 && st.pages == 6 && st.failed == 0);
    struct first_hit h = {0};
    size_t n = 0;
    CHECK(sd_store_search(s, "lightning indexer", 5, on_hit, &h, &n, &err) == SD_OK);
    CHECK_MSG(n > 0 && h.page == 1, "lightning indexer on page %d", h.page);
    CHECK(query_int(s, "SELECT count(*) FROM sections WHERE title LIKE '%Architecture%'") >= 1);
    // re-ingest: unchanged
    CHECK(ingest1(s, path, &o, &st) == SD_OK);
    CHECK(st.unchanged == 1 && st.added == 0);

    // a long book: page labels, outline sections on spans, running headers removed
    snprintf(path, sizeof path, "%s/pdf/freeculture.pdf", corpus);
    CHECK(ingest1(s, path, &o, &st) == SD_OK);
    CHECK(st.pages == 352);
    CHECK(query_int(s, "SELECT count(*) FROM pages p JOIN documents d ON d.id = p.doc_id WHERE d.path LIKE "
                       "'%freeculture.pdf' AND p.label IS NOT NULL") > 300);
    CHECK(query_int(s, "SELECT count(*) FROM spans s JOIN documents d ON d.id = s.doc_id WHERE d.path LIKE "
                       "'%freeculture.pdf' AND s.section IS NOT NULL") > 200);
    memset(&h, 0, sizeof h);
    CHECK(sd_store_search(s, "Walt Disney", 3, on_hit, &h, &n, &err) == SD_OK && n > 0);

    // scanned, OCR off: every page needs OCR, reported, not fed as text (OCR itself: test_data_ocr.c)
    snprintf(path, sizeof path, "%s/pdf/scanned/ocrmypdf-multipage.pdf", corpus);
    struct sd_ingest_opts no_ocr = o;
    no_ocr.no_ocr = 1;
    CHECK(ingest1(s, path, &no_ocr, &st) == SD_OK);
    CHECK(st.ocr_pages >= 5 && st.warnings == 1);
    CHECK(query_int(s, "SELECT count(*) FROM documents WHERE path LIKE '%multipage.pdf' AND ocr_pages IS NOT NULL") ==
          1);

    // encrypted: fails clearly without a password, ingests with it
    snprintf(path, sizeof path, "%s/pdf/encrypted/pdfjs-issue21579.pdf", corpus);
    n_failed_events = 0;
    struct sd_ingest_opts oe = o;
    oe.on_event = on_event;
    CHECK(ingest1(s, path, &oe, &st) == SD_OK && st.failed == 1 && n_failed_events == 1);
    oe.password = "wrong"; // a wrong password fails too
    CHECK(ingest1(s, path, &oe, &st) == SD_OK && st.failed == 1);
    oe.password = "p\xC3\xA4ssw\xC3\xB6rt";
    CHECK(ingest1(s, path, &oe, &st) == SD_OK && st.added == 1 && st.failed == 0);

    // a page that crashes poppler fails alone; the other pages are kept
    snprintf(path, sizeof path, "%s/pdf/tracemonkey.pdf", corpus);
    setenv("SD_PDF_TEST_CRASH_PAGE", "3", 1);
    CHECK(ingest1(s, path, &o, &st) == SD_OK);
    unsetenv("SD_PDF_TEST_CRASH_PAGE");
    CHECK(st.added == 1 && st.failed_pages == 1 && st.pages == 14);
    CHECK(query_int(s, "SELECT count(*) FROM spans s JOIN documents d ON d.id = s.doc_id WHERE d.path LIKE "
                       "'%tracemonkey.pdf'") == 13);
    CHECK(query_int(s, "SELECT count(*) FROM documents WHERE path LIKE '%tracemonkey.pdf' AND failed_pages = '3'") ==
          1);
    // a hanging page is cut off by the page budget
    struct sd_pdf_opts po = {.page_timeout_s = 1, .file_timeout_s = 60};
    struct sd_pdf_doc *pd = NULL;
    setenv("SD_PDF_TEST_HANG_PAGE", "2", 1);
    CHECK(sd_pdf_extract(path, &po, &pd, &err) == SD_OK);
    unsetenv("SD_PDF_TEST_HANG_PAGE");
    CHECK(pd && pd->pages[1].state == SD_PDF_PAGE_TIMEOUT && pd->pages[2].state == SD_PDF_PAGE_OK);
    sd_pdf_doc_free(pd);

    // not a PDF at all
    snprintf(path, sizeof path, "%s/fake.pdf", tmp_dir());
    write_file(path, "hello, I am text\n");
    CHECK(sd_pdf_extract(path, &po, &pd, &err) == SD_ERR_FORMAT && strstr(err.msg, "not a PDF"));

    // every file under pdf/ either ingests or fails with a message; nothing crashes or hangs
    snprintf(path, sizeof path, "%s/pdf", corpus);
    struct sd_store *all = open_db("all.db");
    n_failed_events = n_events = 0;
    CHECK(ingest1(all, path, &oe, &st) == SD_OK);
    printf("pdf/: %zu files, %zu added, %zu failed, %lld pages, %lld read by OCR, %lld need OCR\n", st.files, st.added,
           st.failed, (long long)st.pages, (long long)st.ocr_read_pages, (long long)st.ocr_pages);
    CHECK(st.files >= 100 && st.added + st.failed == st.files);
    CHECK(st.added >= 70);
    CHECK(sd_store_integrity_check(all, &err) == SD_OK);
    sd_store_close(all);
    sd_store_close(s);
    tmp_cleanup();
    return sd_test_finish("data_pdf");
}
