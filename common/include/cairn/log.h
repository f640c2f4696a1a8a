/*
 * log.h: levelled log lines on stderr (or a file), one line per call.
 *
 * Line format: "2026-11-26T10:00:00.123Z prog[pid] level: message"
 * Message style: lower case, the failed operation, the subject in quotes, no full stop.
 * Never log key material, tokens or plaintext.
 * Thread-safe: each line is written with one write(2).
 */
#ifndef CAIRN_LOG_H
#define CAIRN_LOG_H

#include "cairn/prelude.h"

enum cairn_log_level {
    CAIRN_LOG_DEBUG = 0,
    CAIRN_LOG_INFO = 1,
    CAIRN_LOG_WARN = 2,
    CAIRN_LOG_ERROR = 3,
    CAIRN_LOG_OFF = 4,
};

/* Program name shown in lines (borrowed pointer, must outlive logging). Default "cairn". */
void cairn_log_set_prog(const char *prog);
void cairn_log_set_level(enum cairn_log_level level);
enum cairn_log_level cairn_log_get_level(void);
/* Parse "debug"|"info"|"warn"|"error"|"off"; CAIRN_EINVAL on anything else. */
int cairn_log_level_parse(const char *s, enum cairn_log_level *out);
/* Log to fd instead of stderr (2). The fd stays owned by the caller. */
void cairn_log_set_fd(int fd);

void cairn_log(enum cairn_log_level level, const char *fmt, ...) CAIRN_PRINTF(2, 3);

#define cairn_debug(...) cairn_log(CAIRN_LOG_DEBUG, __VA_ARGS__)
#define cairn_info(...) cairn_log(CAIRN_LOG_INFO, __VA_ARGS__)
#define cairn_warn(...) cairn_log(CAIRN_LOG_WARN, __VA_ARGS__)
#define cairn_error(...) cairn_log(CAIRN_LOG_ERROR, __VA_ARGS__)

#endif
