/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *tu_tempdir(const char *tag)
{
    const char *root = getenv("CAIRN_TEST_TMP");
    if (!root || !*root)
        root = "/tmp";
    mkdir(root, 0755);
    char *p = malloc(4096);
    assert_non_null(p);
    snprintf(p, 4096, "%s/%s.XXXXXX", root, tag);
    if (!mkdtemp(p))
        fail_msg("mkdtemp %s: %s", p, strerror(errno));
    return p;
}

void tu_rmrf(const char *path)
{
    if (!path || !*path)
        return;
    /* make everything writable/searchable first (tests create 0000 dirs and immutable files);
       rm -rf copes with trees deeper than PATH_MAX, which nftw does not */
    tu_sh("chmod -R u+rwx '%s' 2>/dev/null; chattr -R -i '%s' 2>/dev/null; rm -rf --one-file-system '%s'", path, path, path);
}

uint64_t tu_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void tu_fill_random(uint64_t *state, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n >= 8) {
        uint64_t v = tu_rand(state);
        memcpy(p, &v, 8);
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = tu_rand(state);
        memcpy(p, &v, n);
    }
}

void tu_write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        fail_msg("create %s: %s", path, strerror(errno));
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, (const uint8_t *)data + off, n - off);
        if (w <= 0)
            fail_msg("write %s: %s", path, strerror(errno));
        off += (size_t)w;
    }
    close(fd);
}

uint8_t *tu_read_file(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    fstat(fd, &st);
    uint8_t *b = malloc((size_t)st.st_size + 1);
    size_t off = 0;
    for (;;) {
        ssize_t r = read(fd, b + off, (size_t)st.st_size - off);
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    close(fd);
    *n = off;
    return b;
}

const char *tu_path(const char *fmt, ...)
{
    static char bufs[8][8192];
    static int slot;
    char *b = bufs[slot++ & 7];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof(bufs[0]), fmt, ap);
    va_end(ap);
    return b;
}

int tu_sh(const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st == -1)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
