/*
 * sandbox_exec.c: processes run inside a sandbox (notes §2, "Recommended exec method").
 *
 * Each exec is a foreground `runsc --log=<f> exec -internal-pid-file <p> <id> argv...` with pipes on 0/1/2,
 * driven by the poll loop of sandbox_util.c, so output reaches the callback as it is produced and two execs
 * never share an output file. Nothing else is sound with this runsc: `exec -detach` mangles argv, and a
 * SIGTERM to the host `runsc exec` is not forwarded (the process keeps running, orphaned).
 *
 * Killing (timeout, or the callback asking to stop) goes through the in-sandbox pid that runsc wrote to
 * the pid file: `runsc kill -pid <pid> <id> KILL`. If the pid file is not there yet the host runsc is
 * killed, and once it is gone the pid file is checked again, since the process may have started meanwhile.
 *
 * runsc reports its own failures with exit code 128 on the same stderr as the process's, which is
 * ambiguous with a process that exits 128. --log gives runsc's own messages a file of their own: an exit of
 * 128 is runsc's failure when the process never started (no pid file) or when runsc logged an error.
 *
 * The live-exec registry is a counter under sb->mu: checkpoint refuses while it is non-zero (a checkpoint
 * during an exec gives an image that cannot be restored, notes §7), and terminate waits for it to drain.
 */
#include "sandbox_int.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SBX_KILL_GRACE_NS (5000ull * 1000000ull)

/* The in-sandbox pid from the pid file, 0 when not written (yet). */
static long read_pid_file(const char *path)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (cairn_file_read_all(path, 64, &data, &len) != CAIRN_OK) {
        cairn_err_clear();
        return 0;
    }
    char buf[65];
    memcpy(buf, data, len);
    buf[len] = '\0';
    cairn_free(data);
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 ? pid : 0;
}

static void kill_in_sandbox(struct cairn_sandbox *sb, long pid)
{
    struct sbx_argv a;
    sbx_argv_init(&a);
    sbx_argv_runsc(&a, sb->rt, false);
    sbx_argv_add(&a, "kill");
    sbx_argv_add(&a, "-pid");
    sbx_argv_add(&a, "%ld", pid);
    sbx_argv_add(&a, "%s", sb->id);
    sbx_argv_add(&a, "KILL");
    int code = -1;
    if (sbx_argv_ok(&a) == CAIRN_OK)
        sbx_run(a.v, 10000, NULL, NULL, &code);
    if (code != 0)
        cairn_debug("sandbox %s: runsc kill -pid %ld exited %d", sb->id, pid, code);
    sbx_argv_release(&a);
}

/* The message of the last line runsc logged ("" when none): its JSON "msg", else the raw line. */
static void runsc_log_msg(const char *path, char *out, size_t cap)
{
    char line[1024];
    sbx_file_tail(path, 1, line, sizeof(line));
    const char *v;
    size_t vn;
    if (line[0] && sbx_json_field(line, strlen(line), "msg", &v, &vn) && sbx_json_str(v, vn, out, cap))
        return;
    size_t n = strlen(line);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, line, n);
    out[n] = '\0';
}

struct exec_files {
    char *pid, *log;
};

static int validate(const struct cairn_exec_opts *o)
{
    if (!o || !o->argv || !o->argv[0] || !o->argv[0][0])
        return cairn_err_set(CAIRN_EINVAL, "exec needs a non-empty argv");
    for (size_t i = 0; o->env && o->env[i]; i++)
        if (!strchr(o->env[i], '=') || o->env[i][0] == '=')
            return cairn_err_set(CAIRN_EINVAL, "exec env entry %zu is not K=V", i);
    if (o->stdin_from_fd && o->stdin_fd < 0)
        return cairn_err_set(CAIRN_EINVAL, "exec stdin_fd %d is not an fd", o->stdin_fd);
    return CAIRN_OK;
}

int sbx_exec(struct cairn_sandbox *sb, const struct cairn_exec_opts *o, int *exit_code, bool probe)
{
    *exit_code = -1;
    CAIRN_FORWARD_IF_ERROR(validate(o));
    int rc = CAIRN_OK;
    unsigned seq;
    pthread_mutex_lock(&sb->mu);
    if (!probe) {
        if (sb->state == CAIRN_SANDBOX_PAUSED || sb->state == CAIRN_SANDBOX_CHECKPOINTING)
            rc = cairn_err_set(CAIRN_EAGAIN, "sandbox %s is %s: exec refused for now", sb->id,
                               cairn_sandbox_state_name(sb->state));
        else if (sb->state != CAIRN_SANDBOX_RUNNING)
            rc = cairn_err_set(CAIRN_EUNAVAILABLE, "sandbox %s is %s: cannot exec", sb->id,
                               cairn_sandbox_state_name(sb->state));
        else
            sb->live_execs++;
    }
    seq = ++sb->exec_seq;
    pthread_mutex_unlock(&sb->mu);
    if (rc != CAIRN_OK)
        return rc;

    struct sbx_argv a;
    sbx_argv_init(&a);
    struct exec_files f = {sbx_fmt("%s/%u.pid", sb->exec_dir, seq), sbx_fmt("%s/%u.log", sb->exec_dir, seq)};
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    struct sbx_io io;
    bool spawned = false, timed_out = false;
    int stop_rc = CAIRN_OK;
    if (!f.pid || !f.log) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    sbx_argv_runsc(&a, sb->rt, false);
    sbx_argv_add(&a, "--log=%s", f.log);
    sbx_argv_add(&a, "exec");
    sbx_argv_add(&a, "-internal-pid-file");
    sbx_argv_add(&a, "%s", f.pid);
    if (o->cwd)
        sbx_argv_add(&a, "-cwd=%s", o->cwd);
    if (o->user)
        sbx_argv_add(&a, "-user=%s", o->user);
    for (size_t i = 0; o->env && o->env[i]; i++)
        sbx_argv_add(&a, "-env=%s", o->env[i]);
    /* flag parsing stops at the id: every argv word after it reaches the process untouched */
    sbx_argv_add(&a, "%s", sb->id);
    for (size_t i = 0; o->argv[i]; i++)
        sbx_argv_add(&a, "%s", o->argv[i]);
    rc = sbx_argv_ok(&a);
    if (rc != CAIRN_OK)
        goto out;
    if (pipe2(pout, O_CLOEXEC) != 0 || pipe2(perr, O_CLOEXEC) != 0 ||
        (!o->stdin_from_fd && o->stdin_len && pipe2(pin, O_CLOEXEC) != 0)) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "sandbox %s: exec pipes", sb->id);
        goto out;
    }
    int child_in = o->stdin_from_fd ? o->stdin_fd : pin[0];
    pid_t pid = -1;
    uint64_t started = cairn_now_mono_ns();
    rc = sbx_spawn(a.v, child_in, pout[1], perr[1], &pid);
    close(pout[1]);
    close(perr[1]);
    pout[1] = perr[1] = -1;
    if (pin[0] >= 0) {
        close(pin[0]);
        pin[0] = -1;
    }
    if (rc != CAIRN_OK) {
        rc = cairn_err_set(rc, "sandbox %s: exec: %s", sb->id, cairn_err_msg());
        goto out;
    }
    spawned = true;
    sbx_io_init(&io, pid);
    io.out_fd = pout[0];
    io.err_fd = perr[0];
    io.in_fd = pin[1];
    pout[0] = perr[0] = pin[1] = -1;
    fcntl(io.out_fd, F_SETFL, O_NONBLOCK);
    fcntl(io.err_fd, F_SETFL, O_NONBLOCK);
    if (io.in_fd >= 0)
        fcntl(io.in_fd, F_SETFL, O_NONBLOCK);
    io.in_data = o->stdin_data;
    io.in_len = o->stdin_from_fd ? 0 : o->stdin_len;
    io.sink = probe ? NULL : o->on_output;
    io.sink_arg = o->arg;
    io.cancel = probe ? NULL : o->cancel;

    uint64_t deadline = o->timeout_ms ? started + (uint64_t)o->timeout_ms * 1000000u : 0;
    int lrc = sbx_io_loop(&io, deadline);
    if (lrc != CAIRN_OK) {
        /* timeout, or the callback said stop: kill the process in the sandbox, then let runsc exit */
        timed_out = lrc == CAIRN_ETIMEDOUT;
        stop_rc = lrc;
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        io.sink = NULL; /* the caller asked for no more */
        io.cancel = NULL;
        long ipid = read_pid_file(f.pid);
        if (ipid)
            kill_in_sandbox(sb, ipid);
        else
            kill(pid, SIGKILL);
        if (sbx_io_loop(&io, cairn_now_mono_ns() + SBX_KILL_GRACE_NS) == CAIRN_ETIMEDOUT) {
            kill(pid, SIGKILL);
            sbx_io_loop(&io, 0);
        }
        if (!ipid) {
            ipid = read_pid_file(f.pid);
            if (ipid)
                kill_in_sandbox(sb, ipid);
        }
        if (!timed_out)
            cairn_err_set(stop_rc, "%s", msg);
    }
    sbx_io_finish(&io);
    int code = sbx_status_code(io.status);
    if (timed_out) {
        *exit_code = 137;
        rc = cairn_err_set(CAIRN_ETIMEDOUT, "sandbox %s: exec '%s' timed out after %u ms (killed)", sb->id,
                           o->argv[0], o->timeout_ms);
    } else if (stop_rc != CAIRN_OK) {
        *exit_code = code;
        rc = stop_rc;
    } else {
        char msg[512];
        runsc_log_msg(f.log, msg, sizeof(msg));
        bool started_proc = read_pid_file(f.pid) != 0;
        if (code == 128 && (!started_proc || msg[0])) {
            if (!started_proc && strstr(msg, "failed to load") && strstr(msg, "no such file"))
                rc = cairn_err_set(CAIRN_ENOTFOUND, "sandbox %s: exec '%s': no such executable: %s", sb->id,
                                   o->argv[0], msg);
            else if (started_proc)
                rc = cairn_err_set(CAIRN_EUNAVAILABLE, "sandbox %s: exec '%s' ended abnormally (sandbox gone?): %s",
                                   sb->id, o->argv[0], msg);
            else
                rc = cairn_err_set(CAIRN_EIO, "sandbox %s: runsc exec '%s' failed: %s", sb->id, o->argv[0],
                                   msg[0] ? msg : "exit 128 without a message");
        } else {
            *exit_code = code;
        }
    }
out:
    for (int i = 0; i < 2; i++) {
        if (pin[i] >= 0)
            close(pin[i]);
        if (pout[i] >= 0)
            close(pout[i]);
        if (perr[i] >= 0)
            close(perr[i]);
    }
    CAIRN_UNUSED(spawned);
    if (f.pid)
        unlink(f.pid);
    if (f.log)
        unlink(f.log);
    cairn_free(f.pid);
    cairn_free(f.log);
    sbx_argv_release(&a);
    if (!probe) {
        pthread_mutex_lock(&sb->mu);
        sb->live_execs--;
        pthread_cond_broadcast(&sb->cv);
        pthread_mutex_unlock(&sb->mu);
    }
    return rc;
}

int cairn_sandbox_exec(struct cairn_sandbox *sb, const struct cairn_exec_opts *opts, int *exit_code)
{
    return sbx_exec(sb, opts, exit_code, false);
}

unsigned cairn_sandbox_live_execs(struct cairn_sandbox *sb)
{
    pthread_mutex_lock(&sb->mu);
    unsigned n = sb->live_execs;
    pthread_mutex_unlock(&sb->mu);
    return n;
}
