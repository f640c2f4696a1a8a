/*
 * log.c: see log.h. Level and destination are process-wide atomics so that
 * pipeline threads can log without locks; each line is one write(2).
 */
#include "cairn/log.h"
#include "cairn/err.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "cairn";
static _Atomic int log_level = CAIRN_LOG_INFO;
static _Atomic int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void cairn_log_set_prog(const char *prog) { log_prog = prog ? prog : "cairn"; }
void cairn_log_set_level(enum cairn_log_level level) { log_level = level; }
enum cairn_log_level cairn_log_get_level(void) { return (enum cairn_log_level)log_level; }
void cairn_log_set_fd(int fd) { log_fd = fd; }

int cairn_log_level_parse(const char *s, enum cairn_log_level *out)
{
    for (size_t i = 0; s && i < CAIRN_ARRAY_LEN(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum cairn_log_level)i;
            return CAIRN_OK;
        }
    }
    return cairn_err_set(CAIRN_EINVAL, "unknown log level '%s' (debug, info, warn, error, off)",
                         s ? s : "");
}

void cairn_log(enum cairn_log_level level, const char *fmt, ...)
{
    if ((int)level < log_level || level >= CAIRN_LOG_OFF)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log_prog, (int)getpid(),
                     level_names[level]);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    CAIRN_UNUSED(w);
}
