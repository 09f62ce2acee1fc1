/*
 * cli: the `slidepipe` command. Each subcommand lives in its own file
 * (cli/cmd_<name>.c) and is listed once in the table in cli/main.c.
 * Only this layer prints: results to stdout, one line per error to stderr.
 */
#ifndef SP_CLI_H
#define SP_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

/* Exit codes (documented in README.md). */
enum {
    SP_EXIT_OK = 0,
    SP_EXIT_INPUT = 1,    /* one or more inputs could not be opened or read */
    SP_EXIT_USAGE = 2,    /* bad command line */
    SP_EXIT_OUTPUT = 3,   /* an output could not be written */
    SP_EXIT_INTERNAL = 4, /* out of memory or an internal error */
    SP_EXIT_INTERRUPTED = 130
};

typedef struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
    bool parallel; /* long OpenMP work: its idle threads sleep (util.h) */
} sp_command;

int sp_cmd_info(int argc, char **argv);
int sp_cmd_tile(int argc, char **argv);
int sp_cmd_analyze(int argc, char **argv);
int sp_cmd_run(int argc, char **argv);
int sp_cmd_query(int argc, char **argv);
int sp_cmd_index(int argc, char **argv);
int sp_cmd_serve(int argc, char **argv);
int sp_cmd_batch(int argc, char **argv);
/* `slidepipe batch` as one process of a batch over several (rank 0
 * coordinates, the others work): slidepipe-mpi's main calls it. */
struct sp_batch_transport;
int sp_cmd_batch_over(int argc, char **argv, struct sp_batch_transport *t);

/* Print "slidepipe: <msg>" on one line to stderr. */
void sp_cli_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Report an sp_error on one line and return the matching exit code. */
int sp_cli_report(const char *cmd, const sp_error *err);
/* Exit code for an error category. */
int sp_cli_exit_code(sp_errcode code);
/* SIGINT and SIGTERM call `handler` (without SA_RESTART, so that a poll or
 * a read wakes) until sp_cli_signals_restore puts back what was there. */
typedef struct {
    struct sigaction old_int, old_term;
} sp_cli_signals;
void sp_cli_signals_catch(sp_cli_signals *s, void (*handler)(int));
void sp_cli_signals_restore(const sp_cli_signals *s);
/* Parse a positive integer option; prints a usage error and returns false
 * on failure. */
bool sp_cli_parse_int(const char *cmd, const char *opt, const char *arg,
                      int64_t min, int64_t max, int64_t *out);
bool sp_cli_parse_double(const char *cmd, const char *opt, const char *arg,
                         double min, double max, double *out);

/* ---- progress on a terminal ------------------------------------------- */
/* A one-line progress display on stderr: "label  done/total  rate/s  ETA".
 * Draws only when enabled (stderr is a TTY and not --quiet); at most ~10
 * redraws per second. Call from one thread. */
typedef struct sp_progress sp_progress;
sp_progress *sp_progress_new(const char *label, const char *unit, int64_t total,
                             bool enabled);
void sp_progress_update(sp_progress *p, int64_t done);
/* Finish the line (newline) and free. Accepts NULL. */
void sp_progress_done(sp_progress *p);
/* True when progress should be drawn by default (stderr is a terminal). */
bool sp_progress_default(void);

#endif
