/*
 * err.c: the error table and the per-thread detail message.
 * Why per thread: the pipeline runs on several threads; each keeps its own last
 * failure, and the pipeline copies the first failure back to the caller.
 */
#include "cairn/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

static _Thread_local char err_msg[1024];
static _Thread_local int err_code;

const char *cairn_err_name(int code)
{
    switch (code) {
#define CAIRN_ERR_NAME_(name, num, desc) case num: return #name;
        CAIRN_ERRORS(CAIRN_ERR_NAME_)
#undef CAIRN_ERR_NAME_
    }
    return "EUNKNOWN";
}

const char *cairn_strerror(int code)
{
    switch (code) {
#define CAIRN_ERR_DESC_(name, num, desc) case num: return desc;
        CAIRN_ERRORS(CAIRN_ERR_DESC_)
#undef CAIRN_ERR_DESC_
    }
    return "unknown error";
}

/* Messages are formatted into a local buffer first: callers may pass cairn_err_msg() itself as an
   argument (to prefix context to the previous message), which must not alias the destination. */
int cairn_err_set(int code, const char *fmt, ...)
{
    char tmp[sizeof(err_msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    memcpy(err_msg, tmp, sizeof(err_msg));
    err_code = code;
    return code;
}

int cairn_err_set_errno(int code, int errnum, const char *fmt, ...)
{
    char head[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    char tmp[sizeof(err_msg)];
    snprintf(tmp, sizeof(tmp), "%s: %s", head, strerror(errnum));
    memcpy(err_msg, tmp, sizeof(err_msg));
    err_code = code;
    return code;
}

const char *cairn_err_msg(void)
{
    return err_msg;
}

int cairn_err_code(void)
{
    return err_code;
}

void cairn_err_clear(void)
{
    err_msg[0] = '\0';
    err_code = CAIRN_OK;
}

int cairn_err_from_errno(int errnum)
{
    switch (errnum) {
    case 0: return CAIRN_OK;
    case ENOENT: return CAIRN_ENOTFOUND;
    case EEXIST: return CAIRN_EEXIST;
    case EACCES:
    case EPERM: return CAIRN_EPERM;
    case ENOMEM: return CAIRN_ENOMEM;
    case EINVAL: return CAIRN_EINVAL;
    case EAGAIN: return CAIRN_EAGAIN;
    case ETIMEDOUT: return CAIRN_ETIMEDOUT;
    case EFBIG:
    case ENAMETOOLONG: return CAIRN_ETOOBIG;
    case EOPNOTSUPP: return CAIRN_EUNSUPPORTED;
    case EBUSY: return CAIRN_EBUSY;
    default: return CAIRN_EIO;
    }
}
