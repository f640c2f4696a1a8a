/*
 * sandbox_int.h: what the sandbox_*.c files share (not for the rest of worker/: use sandbox.h).
 *
 *   sandbox.c        runtime, create/restore, terminate, pause/resume, checkpoint, reconcile
 *   sandbox_exec.c   exec (and the readiness probe)
 *   sandbox_mount.c  overlay mounts, mount_into/unmount, detaching everything under merged
 *   sandbox_util.c   argv vectors, posix_spawn + the poll loop, process identity, a small JSON reader and
 *                    writer, /proc/self/mountinfo, rm -rf
 *
 * Locks: rt->mu guards the runtime table; sb->op_mu serializes lifecycle operations of one sandbox (it is
 * held while runsc runs); sb->mu guards sb->state, the exec counters and the mount records, and is only
 * held for short sections, never while a child process runs. Order: op_mu, then rt->mu, then mu.
 */
#ifndef CAIRN_WORKER_SANDBOX_INT_H
#define CAIRN_WORKER_SANDBOX_INT_H

#include "sandbox.h"

#include "cairn/bytes.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

struct cairn_runtime {
    char *root;       /* canonical state root */
    char *runsc_root; /* root/runsc */
    char *sb_root;    /* root/sandboxes */
    char *runsc;      /* absolute path of runsc, NULL when missing */
    char *platform;
    char *cg_parent;
    uint32_t ready_timeout_ms;
    bool usable;
    char fingerprint[CAIRN_RUNTIME_FINGERPRINT_MAX + 1];
    pthread_mutex_t mu;
    struct cairn_sandbox **table; /* one reference each */
    size_t n_table, cap_table;
};

struct sbx_mount {
    char *path; /* normalized in-sandbox path */
    int mnt_id; /* host mount id (statx STATX_MNT_ID / mountinfo field 1) */
    unsigned idx;
    enum cairn_mount_kind kind;
};

struct sbx_proc {
    pid_t pid;
    uint64_t start; /* /proc/<pid>/stat field 22: tells a recycled pid apart */
};

struct cairn_sandbox {
    struct cairn_runtime *rt;
    atomic_int refs;
    char id[CAIRN_SANDBOX_ID_LEN + 1];
    char *dir, *bundle, *upper, *work, *merged, *lower_empty, *log_path, *exec_dir, *meta_path, *mounts_path;
    bool enable_snapshot;
    bool network;
    pthread_mutex_t op_mu;
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* signalled when live_execs drops */
    enum cairn_sandbox_state state;
    unsigned live_execs;
    unsigned exec_seq;
    unsigned mount_seq;
    struct sbx_mount *mounts;
    size_t n_mounts, cap_mounts;
    struct sbx_proc sandbox_proc, gofer_proc;
};

/* ---- sandbox_util.c ---- */

/* malloc'd printf (cairn_free); NULL on ENOMEM. */
char *sbx_fmt(const char *fmt, ...) CAIRN_PRINTF(1, 2);
bool sbx_valid_id(const char *id);

/* A NULL-terminated argv of owned strings. Allocation failures are sticky: check sbx_argv_ok at the end. */
struct sbx_argv {
    char **v;
    size_t n, cap;
    bool oom;
};
void sbx_argv_init(struct sbx_argv *a);
void sbx_argv_add(struct sbx_argv *a, const char *fmt, ...) CAIRN_PRINTF(2, 3);
int sbx_argv_ok(const struct sbx_argv *a); /* CAIRN_OK or CAIRN_ENOMEM (message set) */
void sbx_argv_release(struct sbx_argv *a);
/* runsc --root=<runsc_root> (the prefix of every runsc call), plus the start flags when starting. */
void sbx_argv_runsc(struct sbx_argv *a, const struct cairn_runtime *rt, bool starts_sandbox);

/* posix_spawn argv[0] (absolute) with the given fds on 0/1/2 (-1: /dev/null), own session, default
   signal dispositions, empty mask. */
int sbx_spawn(char *const *argv, int in_fd, int out_fd, int err_fd, pid_t *pid);
/* Exit code of a wait status: the code, or 128+signal. */
int sbx_status_code(int status);

/* The child's pipes and exit, driven by one poll loop (pidfd when the kernel has it). */
typedef int (*sbx_sink_fn)(int stream, const uint8_t *data, size_t len, void *arg);
struct sbx_io {
    pid_t pid;
    int pidfd;                 /* -1: none (set by sbx_io_init) */
    int out_fd, err_fd;        /* read ends (non-blocking), -1 when closed */
    int in_fd;                 /* write end (non-blocking), -1 when done */
    const uint8_t *in_data;
    size_t in_len, in_off;
    sbx_sink_fn sink;
    void *sink_arg;
    const atomic_int *cancel; /* NULL, or stop (CAIRN_ECANCELED) once non-zero; polled every 50 ms at most */
    bool exited;
    int status; /* wait status, valid when exited */
};
void sbx_io_init(struct sbx_io *io, pid_t pid);
/* Run until the child exited and its pipes are drained (EOF, or 200 ms after the exit: a process left
   behind may hold them), or until deadline_ns (CAIRN_ETIMEDOUT, child still running; 0 = none), or until
   the sink returns non-zero (that code), or until *cancel is set (CAIRN_ECANCELED). Closes the pipes it finished with. */
int sbx_io_loop(struct sbx_io *io, uint64_t deadline_ns);
/* Close every fd of io (pidfd, pipes) and reap the child if it has not been (blocking). */
void sbx_io_finish(struct sbx_io *io);

/* Run to completion, stdout/stderr captured into out/err (NULL: discarded; bounded by their max).
   *code = exit code, or -1 when killed at the timeout. CAIRN_OK when it ran, whatever its exit code. */
int sbx_run(char *const *argv, uint32_t timeout_ms, struct cairn_buf *out, struct cairn_buf *err, int *code);
/* Last `lines` non-empty lines of text, control characters replaced, joined by " | ". */
void sbx_tail(const uint8_t *data, size_t len, unsigned lines, char *out, size_t cap);
void sbx_file_tail(const char *path, unsigned lines, char *out, size_t cap);

/* Process identity by pid + start time: 0 when gone (or a zombie). */
uint64_t sbx_proc_start(pid_t pid);
/* /proc/<pid>/cmdline (NULs as spaces) contains needle. */
bool sbx_proc_cmdline_has(pid_t pid, const char *needle);
/* SIGKILL the process if it is still the one recorded, and wait (up to timeout) until it is gone. */
bool sbx_proc_kill(const struct sbx_proc *p, uint32_t timeout_ms);

/* A tiny JSON reader for runsc's outputs (never for untrusted network input). Spans point into s. */
bool sbx_json_field(const char *s, size_t n, const char *key, const char **v, size_t *vn);
bool sbx_json_str(const char *v, size_t vn, char *out, size_t cap);
bool sbx_json_int(const char *v, size_t vn, int64_t *out);
/* Items of an array: *cur starts at NULL; returns false after the last one (or on malformed input). */
bool sbx_json_array_next(const char *s, size_t n, const char **cur, const char **item, size_t *in);
int sbx_json_put_str(struct cairn_buf *b, const char *str);

struct sbx_mi {
    int id;
    char *point;  /* unescaped */
    char *fstype;
};
int sbx_mountinfo_read(struct sbx_mi **out, size_t *n);
void sbx_mountinfo_free(struct sbx_mi **mi, size_t n);
/* path is the same as or below dir */
bool sbx_path_under(const char *path, const char *dir);

/* rm -rf --one-file-system path (no-op when missing). */
int sbx_rmrf(const char *path);

/* ---- sandbox_mount.c ---- */

/* Mount an overlay: lowers top first (n >= 1), at target (a path, or /proc/self/fd/N). */
int sbx_overlay_mount(const char *const *lowers, size_t n, const char *upper, const char *work, const char *target);
int sbx_check_host_path(const char *what, const char *p);
int sbx_check_mount_spec(const struct cairn_mount_spec *m);
/* mount_into without taking op_mu (create/restore hold it). */
int sbx_mount_into_locked(struct cairn_sandbox *sb, const struct cairn_mount_spec *m);
/* Detach every mount at or below dir (deepest first, lazily), until none is left. */
int sbx_umount_tree(const char *dir);
int sbx_mounts_save(struct cairn_sandbox *sb);
/* Read the mounts file back, keeping the records whose mount still exists below merged. */
int sbx_mounts_load(struct cairn_sandbox *sb);

/* ---- sandbox_exec.c ---- */

/* Exec; probe: no registry and no state check (readiness), output discarded. */
int sbx_exec(struct cairn_sandbox *sb, const struct cairn_exec_opts *o, int *exit_code, bool probe);

#endif
