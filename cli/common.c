/* Error reporting and option parsing shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void sp_cli_signals_catch(sp_cli_signals *s, void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &s->old_int);
    sigaction(SIGTERM, &sa, &s->old_term);
}

void sp_cli_signals_restore(const sp_cli_signals *s) {
    sigaction(SIGINT, &s->old_int, NULL);
    sigaction(SIGTERM, &s->old_term, NULL);
}

void sp_cli_error(const char *cmd, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (cmd)
        fprintf(stderr, "slidepipe %s: %s\n", cmd, msg);
    else
        fprintf(stderr, "slidepipe: %s\n", msg);
}

int sp_cli_exit_code(sp_errcode code) {
    switch (code) {
    case SP_OK: return SP_EXIT_OK;
    case SP_ERR_INPUT:
    case SP_ERR_NOT_SLIDE: return SP_EXIT_INPUT;
    case SP_ERR_OUTPUT: return SP_EXIT_OUTPUT;
    case SP_ERR_USAGE: return SP_EXIT_USAGE;
    case SP_ERR_NOMEM:
    case SP_ERR_INTERNAL: return SP_EXIT_INTERNAL;
    case SP_ERR_CANCELLED: return SP_EXIT_INTERRUPTED;
    }
    return SP_EXIT_INTERNAL;
}

int sp_cli_report(const char *cmd, const sp_error *err) {
    sp_cli_error(cmd, "%s", err->msg[0] ? err->msg : "unknown error");
    return sp_cli_exit_code(err->code);
}

bool sp_cli_parse_int(const char *cmd, const char *opt, const char *arg,
                      int64_t min, int64_t max, int64_t *out) {
    int64_t v;
    if (!sp_parse_int64(arg, &v) || v < min || v > max) {
        sp_cli_error(cmd,
                     "%s: expected a whole number from %lld to %lld, got '%s'",
                     opt, (long long)min, (long long)max, arg);
        return false;
    }
    *out = v;
    return true;
}

bool sp_cli_parse_double(const char *cmd, const char *opt, const char *arg,
                         double min, double max, double *out) {
    double v;
    if (!sp_parse_double(arg, &v) || v < min || v > max) {
        sp_cli_error(cmd, "%s: expected a number from %g to %g, got '%s'", opt,
                     min, max, arg);
        return false;
    }
    *out = v;
    return true;
}
