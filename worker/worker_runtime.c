/*
 * worker_runtime.c: capacity, sandbox count and runtime fingerprint (see worker_runtime.h).
 *
 * `runsc --version` runs once at startup through posix_spawnp with its output on a pipe (no shell);
 * a runsc that hangs is killed after 5 s and counts as absent. Only [A-Za-z0-9.~_+-] of the version is
 * kept, so the fingerprint stays one printable token.
 */
#include "worker_runtime.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct cairn_wk_runtime {
    uint64_t capacity;
    atomic_uint_fast64_t sandboxes;
    char fingerprint[CAIRN_WK_FINGERPRINT_MAX + 1];
};

static bool version_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '~' ||
           c == '_' || c == '+' || c == '-';
}

void cairn_wk_fingerprint(char *out, const char *runsc_version, const char *cpu_flags_line)
{
    char ver[64] = "none";
    if (runsc_version && *runsc_version) {
        size_t n = 0;
        for (const char *p = runsc_version; *p && n < sizeof(ver) - 1; p++)
            if (version_char(*p))
                ver[n++] = *p;
        ver[n] = '\0';
        if (n == 0)
            snprintf(ver, sizeof(ver), "none");
    }
    char cpu[24] = "unknown";
    if (cpu_flags_line && *cpu_flags_line) {
        uint8_t h[CAIRN_CHECKSUM_BYTES];
        char hex[2 * CAIRN_CHECKSUM_BYTES + 1];
        cairn_checksum((const uint8_t *)cpu_flags_line, strlen(cpu_flags_line), h);
        cairn_hex_encode(hex, h, sizeof(h));
        snprintf(cpu, sizeof(cpu), "%.16s", hex);
    }
    snprintf(out, CAIRN_WK_FINGERPRINT_MAX + 1, "runsc-%s/cpu-%s", ver, cpu);
}

/* First "flags" or "Features" line of /proc/cpuinfo, without the newline; "" when none. */
static void cpu_flags_line(char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/cpuinfo", "re");
    if (!f)
        return;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, f)) > 0) {
        if (!strncmp(line, "flags", 5) || !strncmp(line, "Features", 8)) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
            snprintf(out, cap, "%s", line);
            break;
        }
    }
    free(line); /* allocated by getline */
    fclose(f);
}

/* Third word of the first line of `runsc --version`, or "" when runsc is missing or fails. */
static void runsc_version(char *out, size_t cap)
{
    out[0] = '\0';
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    char *argv[] = {"runsc", "--version", NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "runsc", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return;
    }
    char buf[512];
    size_t len = 0;
    uint64_t deadline = cairn_now_mono_ns() + 5000000000ull;
    bool killed = false;
    for (;;) {
        uint64_t now = cairn_now_mono_ns();
        if (now >= deadline) {
            kill(pid, SIGKILL);
            killed = true;
            break;
        }
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        ssize_t r = read(fds[0], buf + len, sizeof(buf) - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof(buf) - 1)
            break;
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (killed || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return;
    buf[len] = '\0';
    char *nl = strchr(buf, '\n');
    if (nl)
        *nl = '\0';
    /* "runsc version <version>" */
    char w1[32], w2[32], w3[64];
    if (sscanf(buf, "%31s %31s %63s", w1, w2, w3) == 3 && !strcmp(w1, "runsc") && !strcmp(w2, "version"))
        snprintf(out, cap, "%s", w3);
}

int cairn_wk_runtime_new(struct cairn_wk_runtime **out, uint64_t capacity)
{
    *out = NULL;
    struct cairn_wk_runtime *rt = cairn_calloc(1, sizeof(*rt));
    if (!rt)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the runtime");
    rt->capacity = capacity;
    atomic_init(&rt->sandboxes, 0);
    char ver[128], flags[8192];
    runsc_version(ver, sizeof(ver));
    cpu_flags_line(flags, sizeof(flags));
    cairn_wk_fingerprint(rt->fingerprint, ver, flags);
    *out = rt;
    return CAIRN_OK;
}

void cairn_wk_runtime_destroy(struct cairn_wk_runtime **rt)
{
    if (!rt || !*rt)
        return;
    cairn_free(*rt);
    *rt = NULL;
}

const char *cairn_wk_runtime_fingerprint(const struct cairn_wk_runtime *rt) { return rt->fingerprint; }
uint64_t cairn_wk_runtime_capacity(const struct cairn_wk_runtime *rt) { return rt->capacity; }
uint64_t cairn_wk_runtime_sandboxes(const struct cairn_wk_runtime *rt) { return atomic_load(&rt->sandboxes); }
