/*
 * err.h: the one error enum of cairn, with stable numbers, and the per-thread
 * error detail message.
 *
 * Contract
 * - Every fallible function returns int: CAIRN_OK (0) or one of the codes below.
 * - Codes cross the wire and appear in CLI exit statuses and JSON: numbers are
 *   stable and append-only. Never renumber, never reuse. Codes below
 *   CAIRN_ERR__STABLE_LIMIT are stable.
 * - Corruption of bytes from disk or network is CAIRN_ECORRUPT; the OS failing is
 *   CAIRN_EIO. Callers react differently (re-fetch from a replica vs retry).
 * - A function that fails should also set the detail message with
 *   cairn_err_set(), naming what was wrong (the file, the chunk id, the field).
 *   The message is per thread and stays until the next cairn_err_set/clear.
 *   Secrets (keys, tokens) must never be formatted into a message.
 */
#ifndef CAIRN_ERR_H
#define CAIRN_ERR_H

#include "cairn/prelude.h"

/* X(name, number, description) */
#define CAIRN_ERRORS(X)                                                   \
    X(OK, 0, "success")                                                   \
    X(EINVAL, 1, "invalid argument")                                      \
    X(ENOMEM, 2, "out of memory")                                         \
    X(EIO, 3, "input/output error")                                       \
    X(ECORRUPT, 4, "data is corrupt")                                     \
    X(ENOTFOUND, 5, "not found")                                          \
    X(EEXIST, 6, "already exists")                                        \
    X(EAUTH, 7, "authentication failed")                                  \
    X(EKEY, 8, "invalid or wrong key")                                    \
    X(ECOMPRESS, 9, "compression failed")                                 \
    X(ETOOBIG, 10, "too large")                                           \
    X(EUNSUPPORTED, 11, "not supported")                                  \
    X(EPERM, 12, "permission denied")                                     \
    X(EAGAIN, 13, "temporarily unavailable")                              \
    X(ETIMEDOUT, 14, "timed out")                                         \
    X(EPROTO, 15, "protocol error")                                       \
    X(EVERSION, 16, "unsupported format version")                         \
    X(EEXPIRED, 17, "expired")                                            \
    X(ECANCELED, 18, "canceled")                                          \
    X(EBUSY, 19, "busy")                                                  \
    X(EINTERNAL, 20, "internal error")                                    \
    X(EUNAVAILABLE, 21, "unavailable")

enum cairn_err {
#define CAIRN_ERR_ENUM_(name, num, desc) CAIRN_##name = num,
    CAIRN_ERRORS(CAIRN_ERR_ENUM_)
#undef CAIRN_ERR_ENUM_
    CAIRN_ERR__STABLE_LIMIT = 22 /* never use as a code */
};

/* Symbolic name, e.g. "ECORRUPT"; "EUNKNOWN" for numbers not in the table. Static string. */
const char *cairn_err_name(int code);
/* Human description of a code. Static string. */
const char *cairn_strerror(int code);

/*
 * Set this thread's detail message and return code (so `return cairn_err_set(...)` works).
 * The message is truncated at 1024 bytes. cairn_err_msg() may be an argument (to add context to
 * the previous message).
 */
int cairn_err_set(int code, const char *fmt, ...) CAIRN_PRINTF(2, 3);
/* Same, appending ": <strerror(errnum)>" of an OS errno. */
int cairn_err_set_errno(int code, int errnum, const char *fmt, ...) CAIRN_PRINTF(3, 4);
/* This thread's last message, or "" when none. Valid until the next set/clear on this thread. */
const char *cairn_err_msg(void);
/* This thread's last code set with cairn_err_set (CAIRN_OK when cleared). */
int cairn_err_code(void);
void cairn_err_clear(void);
/* Map an errno value to a cairn code (ENOENT -> ENOTFOUND, EACCES/EPERM -> EPERM, ENOMEM, ... else EIO). */
int cairn_err_from_errno(int errnum);

/* Return err (with a message) when cond holds. */
#define CAIRN_RETURN_ERROR_IF(cond, err, ...)        \
    do {                                             \
        if (cond)                                    \
            return cairn_err_set((err), __VA_ARGS__);\
    } while (0)

/* Evaluate expr; return its code when not CAIRN_OK. */
#define CAIRN_FORWARD_IF_ERROR(expr)                 \
    do {                                             \
        int cairn_rc_ = (expr);                      \
        if (cairn_rc_ != CAIRN_OK)                   \
            return cairn_rc_;                        \
    } while (0)

#endif
