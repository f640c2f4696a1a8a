/*
 * sandbox.h: the sandbox runtime of a worker (DESIGN §6): gVisor `runsc` sandboxes whose root filesystem is
 * a host overlayfs, with exec, pause/resume, mounts into running sandboxes, checkpoint/restore and
 * re-adoption after a worker restart. Private to worker/. Read ../shared/notes/gvisor-runsc.md first: most
 * choices below work around a behaviour measured there.
 *
 * Layout under the state root (e.g. DATA_DIR/runtime, owned by exactly one runtime object at a time):
 *     runsc/                     runsc --root (its state and lock files)
 *     sandboxes/<id>/meta        key=value: flags, sandbox/gofer pid + start time (for re-adoption)
 *     sandboxes/<id>/mounts      one line per mount made with mount_into (re-adoption)
 *     sandboxes/<id>/bundle/     config.json
 *     sandboxes/<id>/upper/      the root overlay's upper dir: the sandbox's filesystem diff
 *     sandboxes/<id>/work/ merged/ lower-empty/ (merged = rootfs, mounted, made shared before start)
 *     sandboxes/<id>/runsc.log   O_APPEND: output of runsc run/restore and of the sandbox's main process
 *     sandboxes/<id>/execs/      per-exec pid file and runsc log, removed when the exec ends
 *     sandboxes/<id>/m/<n>/      upper/work of the overlay mounts made with mount_into
 * cgroups: linux.cgroupsPath = /<cgroup_parent>/<id>, so runsc makes /sys/fs/cgroup/<ctrl>/<parent>/<id>;
 * the parent name is per runtime so that several workers on one host never clean each other's cgroups.
 * The parent dirs are removed whenever the table becomes empty (runsc makes them again for the next one).
 *
 * Ids: exactly 32 lower-case hex characters (CAIRN_SANDBOX_ID_LEN), random, never reused. runsc matches ids
 * by prefix, and with fixed-length ids no id can be a prefix of another. The runsc root must hold only
 * this runtime's sandboxes; reconcile never touches ids of another shape.
 *
 * Every runsc call that starts a sandbox gets --platform=<platform> --network=none --file-access=shared;
 * every child process is started with posix_spawn and an argv (never a shell), reaped, and every fd this
 * module opens is O_CLOEXEC. Errors set cairn_err_set with the sandbox id, the failed step and the last
 * lines of runsc's stderr/log (never secrets; nothing here handles any).
 *
 * Ownership and threads
 * - struct cairn_runtime: one per worker. All functions may be called from any thread. The runtime keeps
 *   a table of the sandboxes it knows; every sandbox handle given out is a counted reference, released
 *   with cairn_sandbox_release. Release every handle before cairn_runtime_destroy.
 * - struct cairn_sandbox: exec may run from several threads at once, concurrently with pause/resume and
 *   mount_into/unmount. Lifecycle calls (pause, resume, mount_into, unmount, checkpoint, terminate) are
 *   serialized per sandbox. A handle stays valid (accessors keep working) after terminate until released.
 */
#ifndef CAIRN_WORKER_SANDBOX_H
#define CAIRN_WORKER_SANDBOX_H

#include "cairn/prelude.h"

#include <stdatomic.h>

#define CAIRN_SANDBOX_ID_LEN 32
#define CAIRN_RUNTIME_FINGERPRINT_MAX 127

struct cairn_runtime;
struct cairn_sandbox;

struct cairn_runtime_config {
    const char *state_root;    /* required; created (0711) if missing; canonicalized */
    const char *runsc;         /* NULL: "runsc" from PATH. Missing runsc is not an error (see usable) */
    const char *platform;      /* NULL: "ptrace" (the only one that works on our VMs, notes §8) */
    const char *cgroup_parent; /* NULL: "cairn-" + 16 hex of BLAKE2b(canonical state root) */
    uint32_t ready_timeout_ms; /* 0: 30000. Bound on run/restore + the first successful exec */
};

/*
 * Make the runtime: resolves runsc, runs `runsc --version` (5 s bound) and computes the fingerprint, creates
 * the state root dirs. Does not look at existing sandboxes: call cairn_runtime_reconcile before any create.
 * CAIRN_EINVAL (no state root), CAIRN_EIO (cannot create dirs), CAIRN_ENOMEM.
 */
int cairn_runtime_new(struct cairn_runtime **out, const struct cairn_runtime_config *cfg);
/* Forget the runtime; never stops sandboxes (a restarted worker re-adopts them). NULL-safe, nulls *rt. */
void cairn_runtime_destroy(struct cairn_runtime **rt);
/*
 * "runsc-<version>/cpu-<first 16 hex of BLAKE2b-128(cpu flags line)>" (docs/internals/cluster.md), or
 * "runsc-none" when runsc is missing or does not answer --version. Valid for the runtime's lifetime.
 */
const char *cairn_runtime_fingerprint(const struct cairn_runtime *rt);
/* runsc was found and answered --version. */
bool cairn_runtime_usable(const struct cairn_runtime *rt);
/* The canonical state root (valid for the runtime's lifetime). */
const char *cairn_runtime_state_root(const struct cairn_runtime *rt);
/* Sandboxes in the table (starting, running, paused, checkpointed). */
size_t cairn_runtime_count(const struct cairn_runtime *rt);
/* Ids of the sandboxes in the table, sorted. *ids is the caller's (cairn_free; NULL when *n == 0). CAIRN_ENOMEM. */
int cairn_runtime_ids(struct cairn_runtime *rt, char (**ids)[CAIRN_SANDBOX_ID_LEN + 1], size_t *n);

/* A mount made into the sandbox (at create/restore time, or later with cairn_sandbox_mount_into). */
enum cairn_mount_kind {
    CAIRN_MOUNT_BIND = 0,    /* bind a host directory (source) */
    CAIRN_MOUNT_OVERLAY = 1, /* overlay: lowers (top first; none = an empty dir) + a runtime-made upper */
};
struct cairn_mount_spec {
    const char *path; /* absolute path inside the sandbox, not "/", no "."/".." parts, not under /proc /dev /sys */
    enum cairn_mount_kind kind;
    const char *source;              /* BIND: absolute host dir */
    bool readonly;                   /* BIND only */
    const char *const *lowers;       /* OVERLAY: absolute host dirs, top first */
    size_t n_lowers;
};

struct cairn_sandbox_spec {
    /* "" (all zero): a fresh random id. Else exactly 32 lower-case hex, never used before (CAIRN_EEXIST when
       its dir or runsc state exists). */
    char id[CAIRN_SANDBOX_ID_LEN + 1];
    const char *const *lowers;  /* the image's layers, absolute host dirs, top first; none: an empty root */
    size_t n_lowers;
    const char *const *argv;    /* main process, NULL-terminated; NULL: {"sleep", "2147483647"} */
    const char *const *env;     /* "K=V", NULL-terminated; PATH is added when missing. Ignored by restore */
    const char *hostname;       /* NULL: "sandbox". Ignored by restore (the image keeps its own) */
    const char *cwd;            /* NULL: "/" */
    bool enable_snapshot;       /* stored; checkpoint refuses sandboxes without it */
    bool network;               /* true: CAIRN_EUNSUPPORTED for now (--network=none only) */
    const struct cairn_mount_spec *mounts; /* made under merged before runsc starts (restore needs them) */
    size_t n_mounts;
    /* NULL: the root overlay starts with an empty upper dir. Else an absolute host dir on the state root's
       filesystem holding an overlay upper (whiteouts, opaque dirs), moved into place as the sandbox's upper
       (removed with the sandbox; after a failure the caller removes it if still there): a restored clone's
       diff then includes its snapshot's, so a snapshot of the clone is a whole diff against the image. */
    const char *upper_from;
};

/*
 * Create and start a sandbox; returns once `runsc exec <id> true` answers (bounded by ready_timeout_ms).
 * Steps: dirs, overlay at merged (made shared), spec mounts, config.json, `runsc run -detach`, readiness.
 * On any failure everything made so far is removed (as terminate does) and the error names the id and the
 * step, with the tail of runsc's output. *out is a new reference (release it).
 * CAIRN_EINVAL (bad spec), CAIRN_EEXIST (id in use), CAIRN_EUNAVAILABLE (runsc missing),
 * CAIRN_EUNSUPPORTED (network), CAIRN_ETIMEDOUT (not ready in time), CAIRN_EIO.
 */
int cairn_sandbox_create(struct cairn_runtime *rt, const struct cairn_sandbox_spec *spec,
                         struct cairn_sandbox **out);
/* A new reference to a sandbox of the table by id; CAIRN_ENOTFOUND. */
int cairn_runtime_sandbox_get(struct cairn_runtime *rt, const char *id, struct cairn_sandbox **out);
/* Drop a reference (the last one frees the handle; never stops the sandbox). NULL-safe, nulls *sb. */
void cairn_sandbox_release(struct cairn_sandbox **sb);

/* Accessors: strings valid while the handle is held. */
const char *cairn_sandbox_id(const struct cairn_sandbox *sb);
const char *cairn_sandbox_upper_dir(const struct cairn_sandbox *sb);  /* host path of the rootfs diff */
const char *cairn_sandbox_merged_dir(const struct cairn_sandbox *sb); /* host path of the rootfs */
bool cairn_sandbox_snapshot_enabled(const struct cairn_sandbox *sb);
/* Host pids of runsc-sandbox and runsc-gofer as recorded at start (0 when unknown). */
void cairn_sandbox_pids(const struct cairn_sandbox *sb, int *sandbox_pid, int *gofer_pid);

enum cairn_sandbox_state {
    CAIRN_SANDBOX_STARTING = 0,
    CAIRN_SANDBOX_RUNNING,
    CAIRN_SANDBOX_PAUSED,
    CAIRN_SANDBOX_CHECKPOINTING,
    CAIRN_SANDBOX_CHECKPOINTED, /* stopped by a checkpoint: only terminate is left */
    CAIRN_SANDBOX_BROKEN,       /* a terminate failed half-way: terminate again (or reconcile) */
    CAIRN_SANDBOX_TERMINATED,
};
enum cairn_sandbox_state cairn_sandbox_state(struct cairn_sandbox *sb);
const char *cairn_sandbox_state_name(enum cairn_sandbox_state st);

/* Output of an exec as it is produced: stream 1 (stdout) or 2 (stderr). Non-zero stops the exec: the
   process is killed and that code is returned by cairn_sandbox_exec. */
typedef int (*cairn_exec_output_fn)(int stream, const uint8_t *data, size_t len, void *arg);

struct cairn_exec_opts {
    const char *const *argv;    /* required, NULL-terminated, argv[0] looked up in the sandbox's PATH */
    const char *const *env;     /* extra "K=V" (added to the sandbox's env), NULL-terminated; may be NULL */
    const char *cwd;            /* NULL: the sandbox's cwd */
    const char *user;           /* NULL: root; else "uid[:gid]" */
    const uint8_t *stdin_data;  /* fed to stdin then closed (when !stdin_from_fd); NULL/0: empty stdin */
    size_t stdin_len;
    bool stdin_from_fd;         /* true: stdin_fd (borrowed, stays open) is the process's stdin */
    int stdin_fd;
    uint32_t timeout_ms;        /* 0: none */
    cairn_exec_output_fn on_output; /* NULL: output discarded */
    void *arg;
    const atomic_int *cancel;   /* NULL, or: once it reads non-zero (checked at least every 50 ms) the process is
                                   killed and exec returns CAIRN_ECANCELED. For callers whose stop comes from
                                   elsewhere than the output (a client gone, a shutdown) */
};

/*
 * Run a process in the sandbox in the foreground (`runsc exec -internal-pid-file`), streaming its output to
 * on_output from this thread. *exit_code: the process's exit status (128+n when killed by signal n).
 * Timeout: the process is killed (`runsc kill -pid`), *exit_code = 137, CAIRN_ETIMEDOUT.
 * The exec counts as live (cairn_sandbox_live_execs) until this returns.
 * CAIRN_EAGAIN (sandbox paused or checkpointing), CAIRN_EUNAVAILABLE (sandbox not running, or died during
 * the exec), CAIRN_ENOTFOUND (no such executable), CAIRN_EINVAL, CAIRN_EIO; or the callback's code.
 */
int cairn_sandbox_exec(struct cairn_sandbox *sb, const struct cairn_exec_opts *opts, int *exit_code);
/* Execs in flight right now. */
unsigned cairn_sandbox_live_execs(struct cairn_sandbox *sb);

/* `runsc pause` / `runsc resume`. Pausing a paused sandbox (or resuming a running one) is CAIRN_OK. */
int cairn_sandbox_pause(struct cairn_sandbox *sb);
int cairn_sandbox_resume(struct cairn_sandbox *sb);

/*
 * Mount into the running sandbox (notes §5): the path is resolved inside merged without ever leaving it
 * (symlinks are resolved as the sandbox would, against its own root), missing dirs are made (they show up
 * in the root diff: cairn_sandbox_mounts lists them to leave out), then a bind or overlay mount is made
 * there; it propagates into the gofer because merged was shared before start. CAIRN_EEXIST when a mount of
 * ours is already at that path. CAIRN_EINVAL, CAIRN_EIO.
 */
int cairn_sandbox_mount_into(struct cairn_sandbox *sb, const struct cairn_mount_spec *m);
/* Detach (umount -l) the mount at path and the mounts below it; the sandbox sees what was below again.
   The runtime-made upper of an overlay mount is kept until terminate. CAIRN_ENOTFOUND when no mount. */
int cairn_sandbox_unmount(struct cairn_sandbox *sb, const char *path);
/* Host path of the upper dir of the overlay mount at path (a directory snapshot reads it). Caller frees
   with cairn_free. CAIRN_ENOTFOUND, CAIRN_EINVAL (a bind mount has no upper). */
int cairn_sandbox_mount_upper(struct cairn_sandbox *sb, const char *path, char **out);
/* In-sandbox paths of the current mounts, in mount order. Caller frees each and the array (cairn_free). */
int cairn_sandbox_mounts(struct cairn_sandbox *sb, char ***paths, size_t *n);

/*
 * Stop and remove everything: runsc kill + delete -force, leftover sandbox/gofer processes (by recorded pid
 * and start time), every mount under merged and merged itself (lazily), the sandbox dir, its cgroup dirs and
 * runsc state; then drops the sandbox from the runtime table. Idempotent: a second call is CAIRN_OK. When a
 * step fails the sandbox is BROKEN and the error names the step; calling terminate again retries all steps.
 */
int cairn_sandbox_terminate(struct cairn_sandbox *sb);

/*
 * Memory checkpoint (notes §6): `runsc checkpoint --image-path image_dir` (image_dir must exist; it gets
 * checkpoint.img). Refused while an exec is live (CAIRN_EBUSY, sandbox untouched) and for sandboxes created
 * without enable_snapshot (CAIRN_EUNSUPPORTED). On success the sandbox is CHECKPOINTED: its processes are
 * gone, upper_dir and the mount uppers stay for the caller to copy, then the caller terminates it.
 */
int cairn_sandbox_checkpoint(struct cairn_sandbox *sb, const char *image_dir);
/*
 * Restore a checkpoint image into a new sandbox (new id, own overlay): spec->lowers must rebuild the root
 * the image expects (typically the saved upper copy as the top layer, then the image's layers; or the
 * image's layers with a copy of the saved upper as spec->upper_from), and
 * spec->mounts every mount that existed at checkpoint time (same paths). argv/env/hostname come from the
 * image. Same errors and cleanup as create.
 */
int cairn_sandbox_restore(struct cairn_runtime *rt, const struct cairn_sandbox_spec *spec, const char *image_dir,
                          struct cairn_sandbox **out);

struct cairn_reconcile_report {
    char (*adopted)[CAIRN_SANDBOX_ID_LEN + 1]; /* running/paused sandboxes now in the table */
    size_t n_adopted;
    char (*cleaned)[CAIRN_SANDBOX_ID_LEN + 1]; /* orphans removed (state without dirs, dirs without sandbox) */
    size_t n_cleaned;
    size_t n_failed; /* orphans whose cleanup failed (logged; retried by the next reconcile) */
};
/*
 * After a worker restart: list runsc state (`runsc list -format=json`) and the sandbox dirs; re-adopt the
 * sandboxes that run and whose dirs and root mount exist; remove every other sandbox of this runtime (runsc
 * state, processes, mounts, dirs, cgroups) and the cgroup dirs under our parent that belong to no adopted
 * sandbox. Ids already in the table are left alone. report may be NULL; else release it.
 */
int cairn_runtime_reconcile(struct cairn_runtime *rt, struct cairn_reconcile_report *report);
void cairn_reconcile_report_release(struct cairn_reconcile_report *report);

#endif
