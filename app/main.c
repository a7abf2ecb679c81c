// main.c: sparsedoc CLI entry point: global flags (--version, --help) and subcommand dispatch.
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "sd_build_config.h"

static const struct sd_command commands[] = {
    {"generate", "generate text from a prompt with a local model", sd_cmd_generate},
    {"logits", "write float32 logits for every position of a token id file", sd_cmd_logits},
#ifdef SD_HAVE_DATA
    {"ingest", "add PDFs, text files and code trees to the document store", sd_cmd_ingest},
    {"docs", "list, show or remove ingested documents", sd_cmd_docs},
    {"search", "full-text search with page or line references", sd_cmd_search},
    {"contexts", "pack documents into contexts of at most N tokens", sd_cmd_contexts},
    {"ask", "answer a question about documents or a code tree, with citations", sd_cmd_ask},
    {"chat", "interactive questions on the same documents (conversations are saved)", sd_cmd_chat},
    {"cache", "KV prefix cache: stats, gc, clear", sd_cmd_cache},
    {"models", "download models from the Hugging Face hub; list, info, rm, use", sd_cmd_models},
    {"summarize", "summarize documents into Markdown files (or JSON Lines) per document", sd_cmd_summarize},
#endif
};

static void usage(FILE *f)
{
    fprintf(f, "usage: sparsedoc [--version] [--help] COMMAND [ARGS]\n\n"
               "sparsedoc answers questions about long documents with a local LLM engine\n"
               "implementing DeepSeek Sparse Attention.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'sparsedoc COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return SD_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("sparsedoc %s\n", SD_VERSION);
        return SD_EXIT_OK;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return SD_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "sparsedoc: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return SD_EXIT_USAGE;
}
