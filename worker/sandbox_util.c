/*
 * sandbox_util.c: the process and text plumbing of the sandbox runtime (see sandbox_int.h).
 *
 * Children are started with posix_spawn (vfork-like, safe in a threaded daemon) from an argv: no shell ever
 * sees our strings. Every fd we open is O_CLOEXEC, so concurrent spawns from other threads never inherit
 * each other's pipes (an inherited write end would hold back EOF of an exec's output). The child gets its
 * own session (a Ctrl-C on a foreground worker does not reach the sandboxes) and default dispositions for
 * the signals a daemon typically ignores (SIGPIPE), since ignored signals survive exec.
 *
 * One poll loop drives a child: its stdout/stderr pipes, the stdin pipe we feed, and a pidfd for its exit.
 * A process left behind in the sandbox may keep the pipes open after the child exits, so the loop stops
 * 200 ms after the exit instead of waiting for EOF forever. Writing to a stdin whose reader is gone must
 * not kill the worker: SIGPIPE is blocked in the calling thread for the loop and a pending one discarded.
 */
#include "sandbox_int.h"

#include "cairn/alloc.h"
#include "cairn/err.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define SBX_DRAIN_AFTER_EXIT_NS (200ull * 1000000ull)

char *sbx_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = cairn_malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

bool sbx_valid_id(const char *id)
{
    if (!id)
        return false;
    size_t i = 0;
    for (; id[i]; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return i == CAIRN_SANDBOX_ID_LEN;
}

void sbx_argv_init(struct sbx_argv *a) { memset(a, 0, sizeof(*a)); }

void sbx_argv_add(struct sbx_argv *a, const char *fmt, ...)
{
    if (a->oom)
        return;
    if (cairn_array_grow((void **)&a->v, &a->cap, a->n + 2, sizeof(char *)) != CAIRN_OK) {
        a->oom = true;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n < 0 ? NULL : cairn_malloc((size_t)n + 1);
    if (!s) {
        a->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
}

int sbx_argv_ok(const struct sbx_argv *a)
{
    if (a->oom || !a->v)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for a command line");
    return CAIRN_OK;
}

void sbx_argv_release(struct sbx_argv *a)
{
    for (size_t i = 0; i < a->n; i++)
        cairn_free(a->v[i]);
    cairn_free(a->v);
    memset(a, 0, sizeof(*a));
}

void sbx_argv_runsc(struct sbx_argv *a, const struct cairn_runtime *rt, bool starts_sandbox)
{
    sbx_argv_add(a, "%s", rt->runsc);
    sbx_argv_add(a, "--root=%s", rt->runsc_root);
    if (starts_sandbox) {
        /* notes §1: --network=none must be repeated on every command that starts a sandbox */
        sbx_argv_add(a, "--platform=%s", rt->platform);
        sbx_argv_add(a, "--network=none");
        sbx_argv_add(a, "--file-access=shared");
    }
}

int sbx_spawn(char *const *argv, int in_fd, int out_fd, int err_fd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0)
        return cairn_err_set_errno(CAIRN_ENOMEM, rc, "spawn '%s'", argv[0]);
    rc = posix_spawnattr_init(&at);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return cairn_err_set_errno(CAIRN_ENOMEM, rc, "spawn '%s'", argv[0]);
    }
    const int fds[3] = {in_fd, out_fd, err_fd};
    for (int i = 0; i < 3 && rc == 0; i++) {
        if (fds[i] >= 0)
            rc = posix_spawn_file_actions_adddup2(&fa, fds[i], i);
        else
            rc = posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
    }
    sigset_t mask, dfl;
    sigemptyset(&mask);
    sigemptyset(&dfl);
    const int sigs[] = {SIGPIPE, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGCHLD, SIGUSR1, SIGUSR2,
                        SIGALRM, SIGTTIN, SIGTTOU, SIGTSTP, SIGXFSZ, SIGURG};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(sigs); i++)
        sigaddset(&dfl, sigs[i]);
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(&at, &mask);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(&at, &dfl);
    if (rc == 0)
        rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
    if (rc == 0)
        rc = posix_spawn(pid, argv[0], &fa, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return cairn_err_set_errno(rc == ENOENT ? CAIRN_ENOTFOUND : CAIRN_EIO, rc, "spawn '%s'", argv[0]);
    return CAIRN_OK;
}

int sbx_status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

void sbx_io_init(struct sbx_io *io, pid_t pid)
{
    memset(io, 0, sizeof(*io));
    io->pid = pid;
    io->out_fd = io->err_fd = io->in_fd = -1;
    io->pidfd = -1;
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        io->pidfd = (int)fd;
        fcntl(io->pidfd, F_SETFD, FD_CLOEXEC); /* pidfd_open sets it already; be explicit */
    }
#endif
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static bool io_try_reap(struct sbx_io *io)
{
    if (io->exited)
        return true;
    int st;
    pid_t r;
    do
        r = waitpid(io->pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == io->pid) {
        io->exited = true;
        io->status = st;
        close_fd(&io->pidfd);
    } else if (r < 0 && errno == ECHILD) {
        /* reaped elsewhere: should not happen, never hang on it */
        io->exited = true;
        io->status = 255 << 8;
        close_fd(&io->pidfd);
    }
    return io->exited;
}

/* Read what is there on one pipe. Returns the sink's code (CAIRN_OK normally). */
static int io_read(struct sbx_io *io, int *fd, int stream)
{
    uint8_t buf[65536];
    for (;;) {
        ssize_t r = read(*fd, buf, sizeof(buf));
        if (r > 0) {
            if (io->sink) {
                int rc = io->sink(stream, buf, (size_t)r, io->sink_arg);
                if (rc != CAIRN_OK)
                    return rc;
            }
            if ((size_t)r < sizeof(buf))
                return CAIRN_OK;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return CAIRN_OK;
        close_fd(fd); /* EOF or error */
        return CAIRN_OK;
    }
}

static void io_write(struct sbx_io *io)
{
    while (io->in_off < io->in_len) {
        ssize_t w = write(io->in_fd, io->in_data + io->in_off, CAIRN_MIN(io->in_len - io->in_off, (size_t)65536));
        if (w > 0) {
            io->in_off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break; /* EPIPE: the reader is gone */
    }
    close_fd(&io->in_fd);
}

int sbx_io_loop(struct sbx_io *io, uint64_t deadline_ns)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    int rc = CAIRN_OK;
    uint64_t exited_at = 0;
    if (io->in_fd >= 0 && io->in_off >= io->in_len)
        close_fd(&io->in_fd);
    for (;;) {
        if (io->exited && !exited_at)
            exited_at = cairn_now_mono_ns();
        if (io->exited && io->out_fd < 0 && io->err_fd < 0)
            break;
        uint64_t now = cairn_now_mono_ns();
        if (exited_at && now - exited_at >= SBX_DRAIN_AFTER_EXIT_NS)
            break;
        if (deadline_ns && now >= deadline_ns) {
            rc = CAIRN_ETIMEDOUT;
            break;
        }
        if (io->cancel && atomic_load(io->cancel)) {
            rc = cairn_err_set(CAIRN_ECANCELED, "canceled while pid %d runs", (int)io->pid);
            break;
        }
        struct pollfd p[4];
        int np = 0, i_out = -1, i_err = -1, i_in = -1, i_pid = -1;
        if (io->out_fd >= 0) {
            i_out = np;
            p[np++] = (struct pollfd){.fd = io->out_fd, .events = POLLIN};
        }
        if (io->err_fd >= 0) {
            i_err = np;
            p[np++] = (struct pollfd){.fd = io->err_fd, .events = POLLIN};
        }
        if (io->in_fd >= 0) {
            i_in = np;
            p[np++] = (struct pollfd){.fd = io->in_fd, .events = POLLOUT};
        }
        if (!io->exited && io->pidfd >= 0) {
            i_pid = np;
            p[np++] = (struct pollfd){.fd = io->pidfd, .events = POLLIN};
        }
        int64_t wait_ms = -1;
        if (deadline_ns)
            wait_ms = (int64_t)((deadline_ns - now) / 1000000u) + 1;
        if (exited_at) {
            int64_t left = (int64_t)((exited_at + SBX_DRAIN_AFTER_EXIT_NS - now) / 1000000u) + 1;
            wait_ms = wait_ms < 0 ? left : CAIRN_MIN(wait_ms, left);
        }
        if (!io->exited && io->pidfd < 0)
            wait_ms = wait_ms < 0 ? 10 : CAIRN_MIN(wait_ms, 10); /* no pidfd: poll for the exit */
        if (io->cancel)
            wait_ms = wait_ms < 0 ? 50 : CAIRN_MIN(wait_ms, 50);
        int pr = poll(p, (nfds_t)np, (int)CAIRN_MIN(wait_ms, (int64_t)60000));
        if (pr < 0 && errno != EINTR) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "poll on the pipes of pid %d", (int)io->pid);
            break;
        }
        if (pr > 0) {
            if (i_out >= 0 && p[i_out].revents) {
                rc = io_read(io, &io->out_fd, 1);
                if (rc != CAIRN_OK)
                    break;
            }
            if (i_err >= 0 && p[i_err].revents) {
                rc = io_read(io, &io->err_fd, 2);
                if (rc != CAIRN_OK)
                    break;
            }
            if (i_in >= 0 && p[i_in].revents) {
                if (p[i_in].revents & (POLLERR | POLLHUP))
                    close_fd(&io->in_fd);
                else
                    io_write(io);
            }
        }
        if (!io->exited && (io->pidfd < 0 || (i_pid >= 0 && pr > 0 && p[i_pid].revents)))
            io_try_reap(io);
    }
    if (!sigismember(&old, SIGPIPE)) {
        sigset_t pend;
        sigpending(&pend);
        if (sigismember(&pend, SIGPIPE)) {
            struct timespec zero = {0, 0};
            sigtimedwait(&pipe_set, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void sbx_io_finish(struct sbx_io *io)
{
    close_fd(&io->out_fd);
    close_fd(&io->err_fd);
    close_fd(&io->in_fd);
    if (!io->exited) {
        int st = 0;
        pid_t r;
        do
            r = waitpid(io->pid, &st, 0);
        while (r < 0 && errno == EINTR);
        io->exited = true;
        io->status = r == io->pid ? st : 255 << 8;
    }
    close_fd(&io->pidfd);
}

struct run_sink {
    struct cairn_buf *out, *err;
};

static int run_sink_fn(int stream, const uint8_t *data, size_t len, void *arg)
{
    struct run_sink *s = arg;
    struct cairn_buf *b = stream == 1 ? s->out : s->err;
    if (b && b->len < b->max)
        cairn_buf_append(b, data, CAIRN_MIN(len, b->max - b->len));
    return CAIRN_OK;
}

static int pipe_pair(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "pipe");
    return CAIRN_OK;
}

int sbx_run(char *const *argv, uint32_t timeout_ms, struct cairn_buf *out, struct cairn_buf *err, int *code)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    struct sbx_io io;
    bool spawned = false;
    *code = -1;
    int rc = pipe_pair(po);
    if (rc == CAIRN_OK)
        rc = pipe_pair(pe);
    pid_t pid = -1;
    if (rc == CAIRN_OK)
        rc = sbx_spawn(argv, -1, po[1], pe[1], &pid);
    close_fd(&po[1]);
    close_fd(&pe[1]);
    if (rc != CAIRN_OK)
        goto out;
    spawned = true;
    sbx_io_init(&io, pid);
    io.out_fd = po[0];
    io.err_fd = pe[0];
    po[0] = pe[0] = -1;
    fcntl(io.out_fd, F_SETFL, O_NONBLOCK);
    fcntl(io.err_fd, F_SETFL, O_NONBLOCK);
    struct run_sink s = {out, err};
    io.sink = run_sink_fn;
    io.sink_arg = &s;
    uint64_t deadline = timeout_ms ? cairn_now_mono_ns() + (uint64_t)timeout_ms * 1000000u : 0;
    int lrc = sbx_io_loop(&io, deadline);
    bool timed_out = false;
    if (lrc == CAIRN_ETIMEDOUT) {
        timed_out = true;
        kill(pid, SIGKILL);
        sbx_io_loop(&io, 0);
    }
    sbx_io_finish(&io);
    *code = timed_out ? -1 : sbx_status_code(io.status);
out:
    close_fd(&po[0]);
    close_fd(&pe[0]);
    CAIRN_UNUSED(spawned);
    return rc;
}

void sbx_tail(const uint8_t *data, size_t len, unsigned lines, char *out, size_t cap)
{
    if (!cap)
        return;
    out[0] = '\0';
    /* find the start of the last `lines` non-empty lines */
    size_t end = len, start = len;
    unsigned found = 0;
    while (end > 0 && found < lines) {
        while (end > 0 && (data[end - 1] == '\n' || data[end - 1] == '\r'))
            end--;
        if (!end)
            break;
        start = end;
        while (start > 0 && data[start - 1] != '\n')
            start--;
        found++;
        if (found < lines)
            end = start;
    }
    if (!found)
        return;
    size_t o = 0;
    bool nl = false;
    for (size_t i = start; i < len && o + 4 < cap; i++) {
        uint8_t c = data[i];
        if (c == '\n' || c == '\r') {
            nl = true;
            continue;
        }
        if (nl && o) {
            if (o + 4 >= cap)
                break;
            memcpy(out + o, " | ", 3);
            o += 3;
        }
        nl = false;
        out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[o] = '\0';
}

void sbx_file_tail(const char *path, unsigned lines, char *out, size_t cap)
{
    if (cap)
        out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    uint8_t buf[4096];
    struct stat st;
    off_t off = 0;
    if (fstat(fd, &st) == 0 && st.st_size > (off_t)sizeof(buf))
        off = st.st_size - (off_t)sizeof(buf);
    ssize_t r = pread(fd, buf, sizeof(buf), off);
    close(fd);
    if (r > 0)
        sbx_tail(buf, (size_t)r, lines, out, cap);
}

uint64_t sbx_proc_start(pid_t pid)
{
    if (pid <= 0)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t r = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (r <= 0)
        return 0;
    buf[r] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    /* fields after the comm: 3 state, then 4..21, 22 starttime */
    char state = 0;
    int field = 2;
    char *save = NULL;
    uint64_t start = 0;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 3)
            state = tok[0];
        if (field == 22) {
            start = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (state == 'Z' || state == 'X')
        return 0;
    return start;
}

bool sbx_proc_cmdline_has(pid_t pid, const char *needle)
{
    if (pid <= 0 || !needle || !*needle)
        return false;
    char path[64], buf[16384];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    for (ssize_t i = 0; i < n; i++)
        if (!buf[i])
            buf[i] = ' ';
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

bool sbx_proc_kill(const struct sbx_proc *p, uint32_t timeout_ms)
{
    if (p->pid <= 0 || !p->start)
        return true;
    if (sbx_proc_start(p->pid) != p->start)
        return true;
    kill(p->pid, SIGKILL);
    uint64_t deadline = cairn_now_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (sbx_proc_start(p->pid) == p->start) {
        if (cairn_now_mono_ns() >= deadline)
            return false;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

/* ---- JSON reader ---- */

static const char *js_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* p at '"': returns the position after the closing quote, NULL when malformed. */
static const char *js_skip_str(const char *p, const char *e)
{
    if (p >= e || *p != '"')
        return NULL;
    for (p++; p < e; p++) {
        if (*p == '\\') {
            p++;
            continue;
        }
        if (*p == '"')
            return p + 1;
    }
    return NULL;
}

static const char *js_skip(const char *p, const char *e, int depth)
{
    p = js_ws(p, e);
    if (p >= e || depth > 64)
        return NULL;
    if (*p == '"')
        return js_skip_str(p, e);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        bool obj = *p == '{';
        p = js_ws(p + 1, e);
        if (p < e && *p == close)
            return p + 1;
        for (;;) {
            if (obj) {
                p = js_skip_str(js_ws(p, e), e);
                if (!p)
                    return NULL;
                p = js_ws(p, e);
                if (p >= e || *p != ':')
                    return NULL;
                p++;
            }
            p = js_skip(p, e, depth + 1);
            if (!p)
                return NULL;
            p = js_ws(p, e);
            if (p >= e)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p != ',')
                return NULL;
            p++;
        }
    }
    const char *s = p;
    while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    return p > s ? p : NULL;
}

bool sbx_json_field(const char *s, size_t n, const char *key, const char **v, size_t *vn)
{
    const char *e = s + n, *p = js_ws(s, e);
    if (p >= e || *p != '{')
        return false;
    p = js_ws(p + 1, e);
    if (p < e && *p == '}')
        return false;
    size_t klen = strlen(key);
    for (;;) {
        const char *ks = js_ws(p, e);
        const char *ke = js_skip_str(ks, e);
        if (!ke)
            return false;
        p = js_ws(ke, e);
        if (p >= e || *p != ':')
            return false;
        const char *vs = js_ws(p + 1, e);
        const char *ve = js_skip(vs, e, 0);
        if (!ve)
            return false;
        if ((size_t)(ke - ks) == klen + 2 && !memcmp(ks + 1, key, klen)) {
            *v = vs;
            *vn = (size_t)(ve - vs);
            return true;
        }
        p = js_ws(ve, e);
        if (p >= e || *p != ',')
            return false;
        p++;
    }
}

bool sbx_json_str(const char *v, size_t vn, char *out, size_t cap)
{
    if (vn < 2 || v[0] != '"' || v[vn - 1] != '"' || !cap)
        return false;
    size_t o = 0;
    for (size_t i = 1; i + 1 < vn; i++) {
        char c = v[i];
        if (c == '\\' && i + 2 < vn) {
            c = v[++i];
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': c = '?'; i += 4; break; /* not needed for runsc's ids and states */
            default: break;
            }
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

bool sbx_json_int(const char *v, size_t vn, int64_t *out)
{
    char buf[32];
    if (!vn || vn >= sizeof(buf))
        return false;
    memcpy(buf, v, vn);
    buf[vn] = '\0';
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = x;
    return true;
}

bool sbx_json_array_next(const char *s, size_t n, const char **cur, const char **item, size_t *in)
{
    const char *e = s + n, *p;
    if (!*cur) {
        p = js_ws(s, e);
        if (p >= e || *p != '[')
            return false;
        p = js_ws(p + 1, e);
        if (p < e && *p == ']')
            return false;
    } else {
        p = js_ws(*cur, e);
        if (p >= e || *p != ',')
            return false;
        p = js_ws(p + 1, e);
    }
    const char *ie = js_skip(p, e, 0);
    if (!ie)
        return false;
    *item = p;
    *in = (size_t)(ie - p);
    *cur = ie;
    return true;
}

int sbx_json_put_str(struct cairn_buf *b, const char *str)
{
    int rc = cairn_buf_append_byte(b, '"');
    for (const unsigned char *p = (const unsigned char *)str; *p && rc == CAIRN_OK; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            rc = cairn_buf_append(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            rc = cairn_buf_append(b, esc, 6);
        } else {
            rc = cairn_buf_append_byte(b, *p);
        }
    }
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_byte(b, '"');
    return rc;
}

/* ---- mountinfo ---- */

static char *mi_unescape(const char *s)
{
    size_t n = strlen(s);
    char *o = cairn_malloc(n + 1);
    if (!o)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 3 < n && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
            s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
            o[j++] = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = '\0';
    return o;
}

void sbx_mountinfo_free(struct sbx_mi **mi, size_t n)
{
    if (!mi || !*mi)
        return;
    for (size_t i = 0; i < n; i++) {
        cairn_free((*mi)[i].point);
        cairn_free((*mi)[i].fstype);
    }
    cairn_free(*mi);
    *mi = NULL;
}

int sbx_mountinfo_read(struct sbx_mi **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return cairn_err_set_errno(CAIRN_EIO, errno, "open '/proc/self/mountinfo'");
    struct sbx_mi *v = NULL;
    size_t cnt = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    int rc = CAIRN_OK;
    while (getline(&line, &lcap, f) > 0) {
        /* id parent maj:min root point opts [optional...] - fstype source superopts */
        char *save = NULL, *fields[6] = {0};
        int nf = 0;
        char *tok = strtok_r(line, " \n", &save);
        for (; tok && nf < 6; tok = strtok_r(NULL, " \n", &save))
            fields[nf++] = tok;
        char *fstype = NULL;
        for (; tok; tok = strtok_r(NULL, " \n", &save)) {
            if (!strcmp(tok, "-")) {
                fstype = strtok_r(NULL, " \n", &save);
                break;
            }
        }
        if (nf < 6 || !fstype)
            continue;
        if (cairn_array_grow((void **)&v, &cap, cnt + 1, sizeof(*v)) != CAIRN_OK) {
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory reading mountinfo");
            break;
        }
        struct sbx_mi *m = &v[cnt];
        m->id = (int)strtol(fields[0], NULL, 10);
        m->point = mi_unescape(fields[4]);
        m->fstype = cairn_strdup(fstype);
        cnt++;
        if (!m->point || !m->fstype) {
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory reading mountinfo");
            break;
        }
    }
    free(line); /* allocated by getline */
    fclose(f);
    if (rc != CAIRN_OK) {
        sbx_mountinfo_free(&v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return CAIRN_OK;
}

bool sbx_path_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == '\0' || path[n] == '/');
}

int sbx_rmrf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT)
        return CAIRN_OK;
    const char *rm = access("/usr/bin/rm", X_OK) == 0 ? "/usr/bin/rm" : "/bin/rm";
    char *argv[] = {(char *)rm, "-rf", "--one-file-system", "--", (char *)path, NULL};
    struct cairn_buf err;
    cairn_buf_init(&err, 4096);
    int code = -1;
    int rc = sbx_run(argv, 120000, NULL, &err, &code);
    if (rc == CAIRN_OK && (code != 0 || lstat(path, &st) == 0)) {
        char tail[512];
        sbx_tail(err.data, err.len, 2, tail, sizeof(tail));
        rc = cairn_err_set(CAIRN_EIO, "remove '%s': rm exited %d: %s", path, code, tail);
    }
    cairn_buf_release(&err);
    return rc;
}
