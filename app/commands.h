// commands.h: the sparsedoc CLI's subcommands. Each returns the process exit code
// (0 ok, 1 failure of the work, 2 usage error). main.c dispatches on argv[1].
#ifndef SD_APP_COMMANDS_H
#define SD_APP_COMMANDS_H

struct sd_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); // argv[0] is the command name
};

// engine commands (cmd_engine.c)
int sd_cmd_logits(int argc, char **argv);
int sd_cmd_generate(int argc, char **argv);

// document-store commands (cmd_data.c; built when -Ddata=true, which defines SD_HAVE_DATA)
int sd_cmd_ingest(int argc, char **argv);
int sd_cmd_docs(int argc, char **argv);
int sd_cmd_search(int argc, char **argv);
int sd_cmd_contexts(int argc, char **argv);

// KV prefix cache command (cmd_cache.c; -Ddata=true)
int sd_cmd_cache(int argc, char **argv);

// question answering (cmd_qa.c; -Ddata=true)
int sd_cmd_ask(int argc, char **argv);
int sd_cmd_chat(int argc, char **argv);

// batch summarization (cmd_summarize.c; -Ddata=true)
int sd_cmd_summarize(int argc, char **argv);

// model management: pull from the Hugging Face hub, list, info, rm, use (cmd_models.c; -Ddata=true)
int sd_cmd_models(int argc, char **argv);

// Exit codes
#define SD_EXIT_OK 0
#define SD_EXIT_FAIL 1
#define SD_EXIT_USAGE 2

#endif
