/*
 * bytes.c: buffers, hex, clocks and atomic file replacement (see bytes.h).
 */
#include "cairn/bytes.h"
#include "cairn/alloc.h"
#include "cairn/err.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void cairn_buf_init(struct cairn_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max ? max : SIZE_MAX;
}

void cairn_buf_release(struct cairn_buf *b)
{
    CAIRN_FREE(b->data);
    b->len = b->cap = 0;
}

int cairn_buf_reserve(struct cairn_buf *b, size_t extra)
{
    if (extra > b->max - b->len)
        return cairn_err_set(CAIRN_ETOOBIG, "buffer would exceed its limit of %zu bytes", b->max);
    size_t need = b->len + extra;
    if (need <= b->cap)
        return CAIRN_OK;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    if (ncap > b->max)
        ncap = b->max;
    uint8_t *n = cairn_realloc(b->data, ncap);
    if (!n)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory growing a buffer to %zu bytes", ncap);
    b->data = n;
    b->cap = ncap;
    return CAIRN_OK;
}

int cairn_buf_append(struct cairn_buf *b, const void *p, size_t n)
{
    CAIRN_FORWARD_IF_ERROR(cairn_buf_reserve(b, n));
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return CAIRN_OK;
}

int cairn_buf_append_byte(struct cairn_buf *b, uint8_t v) { return cairn_buf_append(b, &v, 1); }

uint8_t *cairn_buf_detach(struct cairn_buf *b, size_t *len)
{
    uint8_t *d = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void cairn_hex_encode(char *out, const uint8_t *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int cairn_hex_decode(uint8_t *out, size_t n, const char *hex)
{
    if (!hex || strlen(hex) != 2 * n)
        return cairn_err_set(CAIRN_EINVAL, "expected %zu hex digits", 2 * n);
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return cairn_err_set(CAIRN_EINVAL, "invalid hex digit at position %zu", 2 * i);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return CAIRN_OK;
}

uint64_t cairn_now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t cairn_now_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int cairn_file_replace_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
    char tmp[4096], dirbuf[4096];
    int rc = CAIRN_OK, fd = -1, dfd = -1;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return cairn_err_set(CAIRN_ETOOBIG, "path too long: '%s'", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "create '%s'", tmp);
    if (fchmod(fd, mode) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "chmod '%s'", tmp);
        goto out;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, (const uint8_t *)data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "write '%s'", tmp);
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "fsync '%s'", tmp);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "close '%s'", tmp);
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = cairn_err_set_errno(cairn_err_from_errno(errno), errno, "rename to '%s'", path);
        goto out;
    }
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return CAIRN_OK;
out:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

int cairn_file_read_all(const char *path, size_t max, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "open '%s'", path);
    struct stat st;
    int rc = CAIRN_OK;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = cairn_err_set(CAIRN_EINVAL, "'%s' is not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        rc = cairn_err_set(CAIRN_ETOOBIG, "'%s' is larger than %zu bytes", path, max);
        goto out;
    }
    buf = cairn_malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory reading '%s'", path);
        goto out;
    }
    size_t off = 0;
    for (;;) {
        if (off > max) {
            rc = cairn_err_set(CAIRN_ETOOBIG, "'%s' is larger than %zu bytes", path, max);
            goto out;
        }
        ssize_t r = read(fd, buf + off, (size_t)st.st_size + 1 - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "read '%s'", path);
            goto out;
        }
        if (r == 0)
            break;
        off += (size_t)r;
        if (off == (size_t)st.st_size + 1) {
            rc = cairn_err_set(CAIRN_EIO, "'%s' grew while being read", path);
            goto out;
        }
    }
    *out = buf;
    *len = off;
    buf = NULL;
out:
    cairn_free(buf);
    close(fd);
    return rc;
}
