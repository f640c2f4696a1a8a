/*
 * sandbox.c: the worker's sandbox runtime (contract in sandbox.h): the runtime object and its table of
 * sandboxes, create/restore, terminate, pause/resume, checkpoint and reconcile.
 *
 * Sandbox states and the function making each transition:
 *
 *   STARTING --sbx_start--> RUNNING <--pause/resume--> PAUSED
 *   RUNNING --checkpoint--> CHECKPOINTING --> CHECKPOINTED (or back to RUNNING when runsc refused)
 *   any --terminate--> BROKEN (while tearing down; stays when a step failed) --> TERMINATED
 *   (nothing) --reconcile--> RUNNING | PAUSED (adopted)
 *
 * Create is all-or-nothing: every failure path runs the same teardown as terminate, which tolerates every
 * piece being absent, so a half-made sandbox never survives (its id is never reused either). The sandbox
 * is in the table from its first step so that a concurrent reconcile never mistakes it for an orphan.
 *
 * runsc duplicates to design around (notes §8): ids are fixed-length random hex (prefix matching), a
 * sandbox dir or runsc state for an id refuses the create before runsc sees the id (`run` with an existing
 * id destroys that container's state), the cgroup path is ours (/<parent>/<id>) so leaks can be removed, and
 * `delete -force` noise ("context deadline exceeded") is judged by whether the state is gone afterwards.
 * The pids of runsc-sandbox and runsc-gofer are recorded with their start times, so leftovers are killed
 * by pid and never by name, and a recycled pid is never hit.
 */
#include "sandbox.h"
#include "sandbox_int.h"

#include "cairn/alloc.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SBX_DEFAULT_READY_MS 30000u
#define SBX_RUNSC_SHORT_MS 30000u
#define SBX_RUNSC_DELETE_MS 60000u
#define SBX_CHECKPOINT_MS 600000u

/* Docker's default capability set: what a root user in a container expects (chown, setuid, ...). */
static const char *const SBX_CAPS[] = {
    "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",  "CAP_FOWNER",           "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID",       "CAP_SETUID",  "CAP_SETFCAP",          "CAP_SETPCAP",
    "CAP_KILL",    "CAP_SYS_CHROOT",   "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE",
};
static const char SBX_DEFAULT_PATH[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const char *cairn_sandbox_state_name(enum cairn_sandbox_state st)
{
    switch (st) {
    case CAIRN_SANDBOX_STARTING: return "starting";
    case CAIRN_SANDBOX_RUNNING: return "running";
    case CAIRN_SANDBOX_PAUSED: return "paused";
    case CAIRN_SANDBOX_CHECKPOINTING: return "checkpointing";
    case CAIRN_SANDBOX_CHECKPOINTED: return "checkpointed";
    case CAIRN_SANDBOX_BROKEN: return "broken";
    case CAIRN_SANDBOX_TERMINATED: return "terminated";
    }
    return "unknown";
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    int n = snprintf(buf, sizeof(buf), "%s", path);
    if (n <= 0 || (size_t)n >= sizeof(buf))
        return cairn_err_set(CAIRN_EINVAL, "path '%s' is too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return cairn_err_set_errno(CAIRN_EIO, errno, "make dir '%s'", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return cairn_err_set_errno(CAIRN_EIO, errno, "make dir '%s'", buf);
    return CAIRN_OK;
}

/* ---- runtime ---- */

static char *find_runsc(const char *want)
{
    const char *name = want && *want ? want : "runsc";
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? cairn_strdup(name) : NULL;
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = SBX_DEFAULT_PATH + 5;
    while (*path) {
        const char *e = strchr(path, ':');
        size_t len = e ? (size_t)(e - path) : strlen(path);
        if (len) {
            char cand[PATH_MAX];
            int n = snprintf(cand, sizeof(cand), "%.*s/%s", (int)len, path, name);
            if (n > 0 && (size_t)n < sizeof(cand) && cand[0] == '/' && access(cand, X_OK) == 0)
                return cairn_strdup(cand);
        }
        path += len + (e ? 1 : 0);
    }
    return NULL;
}

static bool version_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '~' ||
           c == '_' || c == '+' || c == '-';
}

/* Third word of the first line of `runsc --version` (keeping [A-Za-z0-9.~_+-]), "" when it fails. */
static void runsc_version(const char *runsc, char *out, size_t cap)
{
    out[0] = '\0';
    char *argv[] = {(char *)runsc, "--version", NULL};
    struct cairn_buf b;
    cairn_buf_init(&b, 4096);
    int code = -1;
    if (sbx_run(argv, 5000, &b, NULL, &code) == CAIRN_OK && code == 0 && b.len) {
        char line[256];
        size_t n = 0;
        while (n < b.len && n < sizeof(line) - 1 && b.data[n] != '\n') {
            line[n] = (char)b.data[n];
            n++;
        }
        line[n] = '\0';
        char w1[32], w2[32], w3[64];
        if (sscanf(line, "%31s %31s %63s", w1, w2, w3) == 3 && !strcmp(w1, "runsc") && !strcmp(w2, "version")) {
            size_t o = 0;
            for (const char *p = w3; *p && o + 1 < cap; p++)
                if (version_char(*p))
                    out[o++] = *p;
            out[o] = '\0';
        }
    }
    cairn_err_clear();
    cairn_buf_release(&b);
}

/* First "flags" (x86) or "Features" (arm) line of /proc/cpuinfo without its newline, "" when none. */
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
    free(line); /* getline's */
    fclose(f);
}

static void make_fingerprint(struct cairn_runtime *rt)
{
    char ver[64] = "";
    if (rt->runsc)
        runsc_version(rt->runsc, ver, sizeof(ver));
    rt->usable = ver[0] != '\0';
    if (!rt->usable) {
        snprintf(rt->fingerprint, sizeof(rt->fingerprint), "runsc-none");
        return;
    }
    char flags[8192], cpu[24] = "unknown";
    cpu_flags_line(flags, sizeof(flags));
    if (flags[0]) {
        uint8_t h[CAIRN_CHECKSUM_BYTES];
        char hex[2 * CAIRN_CHECKSUM_BYTES + 1];
        cairn_checksum((const uint8_t *)flags, strlen(flags), h);
        cairn_hex_encode(hex, h, sizeof(h));
        snprintf(cpu, sizeof(cpu), "%.16s", hex);
    }
    snprintf(rt->fingerprint, sizeof(rt->fingerprint), "runsc-%s/cpu-%s", ver, cpu);
}

int cairn_runtime_new(struct cairn_runtime **out, const struct cairn_runtime_config *cfg)
{
    *out = NULL;
    if (!cfg || !cfg->state_root || cfg->state_root[0] != '/')
        return cairn_err_set(CAIRN_EINVAL, "the runtime needs an absolute state root");
    if (cfg->cgroup_parent && (!*cfg->cgroup_parent || strchr(cfg->cgroup_parent, '/') ||
                               !strcmp(cfg->cgroup_parent, ".") || !strcmp(cfg->cgroup_parent, "..")))
        return cairn_err_set(CAIRN_EINVAL, "cgroup parent '%s' must be one path component", cfg->cgroup_parent);
    CAIRN_FORWARD_IF_ERROR(cairn_crypto_init());
    CAIRN_FORWARD_IF_ERROR(mkdir_p(cfg->state_root, 0711));
    struct cairn_runtime *rt = cairn_calloc(1, sizeof(*rt));
    if (!rt)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the runtime");
    pthread_mutex_init(&rt->mu, NULL);
    int rc = CAIRN_OK;
    char *canon = realpath(cfg->state_root, NULL);
    if (!canon) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "resolve state root '%s'", cfg->state_root);
        goto fail;
    }
    rt->root = cairn_strdup(canon);
    free(canon); /* realpath's */
    if (!rt->root)
        goto oom;
    rc = sbx_check_host_path("state root", rt->root);
    if (rc != CAIRN_OK)
        goto fail;
    rt->runsc_root = sbx_fmt("%s/runsc", rt->root);
    rt->sb_root = sbx_fmt("%s/sandboxes", rt->root);
    rt->platform = cairn_strdup(cfg->platform && *cfg->platform ? cfg->platform : "ptrace");
    if (cfg->cgroup_parent) {
        rt->cg_parent = cairn_strdup(cfg->cgroup_parent);
    } else {
        uint8_t h[CAIRN_CHECKSUM_BYTES];
        char hex[2 * CAIRN_CHECKSUM_BYTES + 1];
        cairn_checksum((const uint8_t *)rt->root, strlen(rt->root), h);
        cairn_hex_encode(hex, h, sizeof(h));
        rt->cg_parent = sbx_fmt("cairn-%.16s", hex);
    }
    if (!rt->runsc_root || !rt->sb_root || !rt->platform || !rt->cg_parent)
        goto oom;
    rc = mkdir_p(rt->runsc_root, 0711);
    if (rc == CAIRN_OK)
        rc = mkdir_p(rt->sb_root, 0711);
    if (rc != CAIRN_OK)
        goto fail;
    rt->ready_timeout_ms = cfg->ready_timeout_ms ? cfg->ready_timeout_ms : SBX_DEFAULT_READY_MS;
    rt->runsc = find_runsc(cfg->runsc);
    make_fingerprint(rt);
    if (!rt->usable)
        cairn_warn("runtime: runsc %s: sandboxes cannot run on this worker",
                   rt->runsc ? "does not answer --version" : "not found");
    *out = rt;
    return CAIRN_OK;
oom:
    rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for the runtime");
fail:
    cairn_runtime_destroy(&rt);
    return rc;
}

void cairn_runtime_destroy(struct cairn_runtime **rtp)
{
    if (!rtp || !*rtp)
        return;
    struct cairn_runtime *rt = *rtp;
    pthread_mutex_lock(&rt->mu);
    struct cairn_sandbox **t = rt->table;
    size_t n = rt->n_table;
    rt->table = NULL;
    rt->n_table = rt->cap_table = 0;
    pthread_mutex_unlock(&rt->mu);
    for (size_t i = 0; i < n; i++) {
        if (atomic_load(&t[i]->refs) > 1)
            cairn_warn("runtime: sandbox %s is still referenced at runtime destroy", t[i]->id);
        cairn_sandbox_release(&t[i]);
    }
    cairn_free(t);
    cairn_free(rt->root);
    cairn_free(rt->runsc_root);
    cairn_free(rt->sb_root);
    cairn_free(rt->runsc);
    cairn_free(rt->platform);
    cairn_free(rt->cg_parent);
    pthread_mutex_destroy(&rt->mu);
    cairn_free(rt);
    *rtp = NULL;
}

const char *cairn_runtime_fingerprint(const struct cairn_runtime *rt) { return rt->fingerprint; }
bool cairn_runtime_usable(const struct cairn_runtime *rt) { return rt->usable; }
const char *cairn_runtime_state_root(const struct cairn_runtime *rt) { return rt->root; }

size_t cairn_runtime_count(const struct cairn_runtime *rt)
{
    pthread_mutex_lock((pthread_mutex_t *)&rt->mu);
    size_t n = rt->n_table;
    pthread_mutex_unlock((pthread_mutex_t *)&rt->mu);
    return n;
}

static int id_cmp(const void *a, const void *b) { return strcmp(a, b); }

int cairn_runtime_ids(struct cairn_runtime *rt, char (**ids)[CAIRN_SANDBOX_ID_LEN + 1], size_t *n)
{
    *ids = NULL;
    *n = 0;
    int rc = CAIRN_OK;
    pthread_mutex_lock(&rt->mu);
    if (rt->n_table) {
        *ids = cairn_calloc(rt->n_table, sizeof(**ids));
        if (!*ids)
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory listing %zu sandboxes", rt->n_table);
        for (size_t i = 0; *ids && i < rt->n_table; i++)
            memcpy((*ids)[i], rt->table[i]->id, sizeof((*ids)[i]));
        if (*ids)
            *n = rt->n_table;
    }
    pthread_mutex_unlock(&rt->mu);
    if (*n > 1)
        qsort(*ids, *n, sizeof(**ids), id_cmp);
    return rc;
}

/* ---- sandbox objects and the table ---- */

static void sbx_free(struct cairn_sandbox *sb)
{
    char **paths[] = {&sb->dir, &sb->bundle, &sb->upper, &sb->work, &sb->merged, &sb->lower_empty,
                      &sb->log_path, &sb->exec_dir, &sb->meta_path, &sb->mounts_path};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(paths); i++)
        CAIRN_FREE(*paths[i]);
    for (size_t i = 0; i < sb->n_mounts; i++)
        cairn_free(sb->mounts[i].path);
    cairn_free(sb->mounts);
    pthread_mutex_destroy(&sb->op_mu);
    pthread_mutex_destroy(&sb->mu);
    pthread_cond_destroy(&sb->cv);
    cairn_free(sb);
}

static int sbx_alloc(struct cairn_runtime *rt, const char *id, struct cairn_sandbox **out)
{
    *out = NULL;
    struct cairn_sandbox *sb = cairn_calloc(1, sizeof(*sb));
    if (!sb)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for a sandbox");
    sb->rt = rt;
    atomic_init(&sb->refs, 1);
    snprintf(sb->id, sizeof(sb->id), "%s", id);
    pthread_mutex_init(&sb->op_mu, NULL);
    pthread_mutex_init(&sb->mu, NULL);
    pthread_cond_init(&sb->cv, NULL);
    sb->state = CAIRN_SANDBOX_STARTING;
    sb->dir = sbx_fmt("%s/%s", rt->sb_root, id);
    sb->bundle = sbx_fmt("%s/%s/bundle", rt->sb_root, id);
    sb->upper = sbx_fmt("%s/%s/upper", rt->sb_root, id);
    sb->work = sbx_fmt("%s/%s/work", rt->sb_root, id);
    sb->merged = sbx_fmt("%s/%s/merged", rt->sb_root, id);
    sb->lower_empty = sbx_fmt("%s/%s/lower-empty", rt->sb_root, id);
    sb->log_path = sbx_fmt("%s/%s/runsc.log", rt->sb_root, id);
    sb->exec_dir = sbx_fmt("%s/%s/execs", rt->sb_root, id);
    sb->meta_path = sbx_fmt("%s/%s/meta", rt->sb_root, id);
    sb->mounts_path = sbx_fmt("%s/%s/mounts", rt->sb_root, id);
    if (!sb->dir || !sb->bundle || !sb->upper || !sb->work || !sb->merged || !sb->lower_empty || !sb->log_path ||
        !sb->exec_dir || !sb->meta_path || !sb->mounts_path) {
        sbx_free(sb);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for a sandbox");
    }
    *out = sb;
    return CAIRN_OK;
}

void cairn_sandbox_release(struct cairn_sandbox **sbp)
{
    if (!sbp || !*sbp)
        return;
    if (atomic_fetch_sub(&(*sbp)->refs, 1) == 1)
        sbx_free(*sbp);
    *sbp = NULL;
}

static int table_add(struct cairn_runtime *rt, struct cairn_sandbox *sb)
{
    int rc = CAIRN_OK;
    pthread_mutex_lock(&rt->mu);
    for (size_t i = 0; i < rt->n_table; i++)
        if (!strcmp(rt->table[i]->id, sb->id))
            rc = cairn_err_set(CAIRN_EEXIST, "sandbox %s already exists in this runtime", sb->id);
    if (rc == CAIRN_OK &&
        cairn_array_grow((void **)&rt->table, &rt->cap_table, rt->n_table + 1, sizeof(*rt->table)) != CAIRN_OK)
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for the sandbox table");
    if (rc == CAIRN_OK) {
        atomic_fetch_add(&sb->refs, 1);
        rt->table[rt->n_table++] = sb;
    }
    pthread_mutex_unlock(&rt->mu);
    return rc;
}

static void table_remove(struct cairn_runtime *rt, struct cairn_sandbox *sb)
{
    struct cairn_sandbox *found = NULL;
    pthread_mutex_lock(&rt->mu);
    for (size_t i = 0; i < rt->n_table; i++) {
        if (rt->table[i] == sb) {
            found = sb;
            rt->table[i] = rt->table[--rt->n_table];
            break;
        }
    }
    pthread_mutex_unlock(&rt->mu);
    cairn_sandbox_release(&found);
}

static bool table_has(struct cairn_runtime *rt, const char *id)
{
    bool has = false;
    pthread_mutex_lock(&rt->mu);
    for (size_t i = 0; i < rt->n_table && !has; i++)
        has = !strcmp(rt->table[i]->id, id);
    pthread_mutex_unlock(&rt->mu);
    return has;
}

int cairn_runtime_sandbox_get(struct cairn_runtime *rt, const char *id, struct cairn_sandbox **out)
{
    *out = NULL;
    pthread_mutex_lock(&rt->mu);
    for (size_t i = 0; i < rt->n_table; i++) {
        if (!strcmp(rt->table[i]->id, id)) {
            *out = rt->table[i];
            atomic_fetch_add(&(*out)->refs, 1);
            break;
        }
    }
    pthread_mutex_unlock(&rt->mu);
    if (!*out)
        return cairn_err_set(CAIRN_ENOTFOUND, "no sandbox '%s' on this worker", id ? id : "(null)");
    return CAIRN_OK;
}

const char *cairn_sandbox_id(const struct cairn_sandbox *sb) { return sb->id; }
const char *cairn_sandbox_upper_dir(const struct cairn_sandbox *sb) { return sb->upper; }
const char *cairn_sandbox_merged_dir(const struct cairn_sandbox *sb) { return sb->merged; }
bool cairn_sandbox_snapshot_enabled(const struct cairn_sandbox *sb) { return sb->enable_snapshot; }

void cairn_sandbox_pids(const struct cairn_sandbox *sb, int *sandbox_pid, int *gofer_pid)
{
    if (sandbox_pid)
        *sandbox_pid = (int)sb->sandbox_proc.pid;
    if (gofer_pid)
        *gofer_pid = (int)sb->gofer_proc.pid;
}

enum cairn_sandbox_state cairn_sandbox_state(struct cairn_sandbox *sb)
{
    pthread_mutex_lock(&sb->mu);
    enum cairn_sandbox_state st = sb->state;
    pthread_mutex_unlock(&sb->mu);
    return st;
}

/* ---- on-disk records ---- */

static int meta_write(struct cairn_sandbox *sb)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "cairn-sandbox 1\nenable_snapshot=%d\nnetwork=%d\nsandbox_pid=%d\nsandbox_start=%llu\n"
                     "gofer_pid=%d\ngofer_start=%llu\n",
                     sb->enable_snapshot, sb->network, (int)sb->sandbox_proc.pid,
                     (unsigned long long)sb->sandbox_proc.start, (int)sb->gofer_proc.pid,
                     (unsigned long long)sb->gofer_proc.start);
    int rc = cairn_file_replace_atomic(sb->meta_path, buf, (size_t)n, 0600);
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "sandbox %s: write meta: %s", sb->id, cairn_err_msg());
    return CAIRN_OK;
}

static int meta_read(struct cairn_sandbox *sb)
{
    uint8_t *data = NULL;
    size_t len = 0;
    CAIRN_FORWARD_IF_ERROR(cairn_file_read_all(sb->meta_path, 4096, &data, &len));
    char buf[4097];
    memcpy(buf, data, len);
    buf[len] = '\0';
    cairn_free(data);
    if (strncmp(buf, "cairn-sandbox 1\n", 16) != 0)
        return cairn_err_set(CAIRN_ECORRUPT, "sandbox %s: meta file '%s' has no header", sb->id, sb->meta_path);
    char *save = NULL;
    for (char *line = strtok_r(buf + 16, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        unsigned long long v = strtoull(eq + 1, NULL, 10);
        if (!strcmp(line, "enable_snapshot"))
            sb->enable_snapshot = v != 0;
        else if (!strcmp(line, "network"))
            sb->network = v != 0;
        else if (!strcmp(line, "sandbox_pid"))
            sb->sandbox_proc.pid = (pid_t)v;
        else if (!strcmp(line, "sandbox_start"))
            sb->sandbox_proc.start = v;
        else if (!strcmp(line, "gofer_pid"))
            sb->gofer_proc.pid = (pid_t)v;
        else if (!strcmp(line, "gofer_start"))
            sb->gofer_proc.start = v;
    }
    return CAIRN_OK;
}

/* Does runsc hold state for this id? (files "<id>_sandbox:<id>.state|.lock" in its root) */
static bool runsc_state_exists(const struct cairn_runtime *rt, const char *id)
{
    DIR *d = opendir(rt->runsc_root);
    if (!d)
        return false;
    bool found = false;
    size_t n = strlen(id);
    struct dirent *e;
    while (!found && (e = readdir(d)))
        found = !strncmp(e->d_name, id, n) && e->d_name[n] == '_';
    closedir(d);
    return found;
}

static void runsc_state_remove(const struct cairn_runtime *rt, const char *id)
{
    int dfd = open(rt->runsc_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    size_t n = strlen(id);
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, id, n) && e->d_name[n] == '_')
            unlinkat(dfd, e->d_name, 0);
    closedir(d);
}

/* Sandbox and gofer pids from runsc's state file (best effort: the format is runsc's). A pid is taken only
   when the process running under it now is ours: runsc-sandbox names our id on its command line and
   runsc-gofer our bundle dir (after a reboot or a long time, runsc's pids may belong to anyone). */
static void read_runsc_pids(struct cairn_sandbox *sb)
{
    char *path = sbx_fmt("%s/%s_sandbox:%s.state", sb->rt->runsc_root, sb->id, sb->id);
    uint8_t *data = NULL;
    size_t len = 0;
    if (!path || cairn_file_read_all(path, 4 << 20, &data, &len) != CAIRN_OK) {
        cairn_err_clear();
        cairn_free(path);
        return;
    }
    const char *v, *pv;
    size_t vn, pvn;
    int64_t x;
    if (sbx_json_field((const char *)data, len, "goferPid", &v, &vn) && sbx_json_int(v, vn, &x) && x > 0 &&
        x <= INT_MAX && sbx_proc_cmdline_has((pid_t)x, sb->bundle)) {
        sb->gofer_proc.pid = (pid_t)x;
        sb->gofer_proc.start = sbx_proc_start((pid_t)x);
    }
    if (sbx_json_field((const char *)data, len, "sandbox", &v, &vn) && sbx_json_field(v, vn, "pid", &pv, &pvn) &&
        sbx_json_int(pv, pvn, &x) && x > 0 && x <= INT_MAX && sbx_proc_cmdline_has((pid_t)x, sb->id)) {
        sb->sandbox_proc.pid = (pid_t)x;
        sb->sandbox_proc.start = sbx_proc_start((pid_t)x);
    }
    cairn_free(data);
    cairn_free(path);
}

/* The sandbox process runsc would signal is still ours (by recorded start time, else by command line). */
static bool sandbox_proc_is_ours(struct cairn_sandbox *sb)
{
    if (sb->sandbox_proc.pid > 0 && sb->sandbox_proc.start)
        return sbx_proc_start(sb->sandbox_proc.pid) == sb->sandbox_proc.start;
    return false;
}

/* ---- cgroups ---- */

static int cgroup_roots(char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct sbx_mi *mi = NULL;
    size_t cnt = 0;
    CAIRN_FORWARD_IF_ERROR(sbx_mountinfo_read(&mi, &cnt));
    char **v = cairn_calloc(cnt ? cnt : 1, sizeof(char *));
    int rc = v ? CAIRN_OK : cairn_err_set(CAIRN_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; v && i < cnt; i++) {
        if (strcmp(mi[i].fstype, "cgroup") != 0 && strcmp(mi[i].fstype, "cgroup2") != 0)
            continue;
        v[k++] = mi[i].point;
        mi[i].point = NULL;
    }
    sbx_mountinfo_free(&mi, cnt);
    *out = v;
    *n = k;
    return rc;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cairn_free(v[i]);
    cairn_free(v);
}

static int cgroup_remove(const struct cairn_runtime *rt, const char *id)
{
    char **roots = NULL;
    size_t n = 0;
    CAIRN_FORWARD_IF_ERROR(cgroup_roots(&roots, &n));
    int rc = CAIRN_OK;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s/%s", roots[i], rt->cg_parent, id);
        int tries = 0;
        while (rmdir(path) != 0 && errno != ENOENT) {
            if (errno != EBUSY || ++tries > 100) {
                rc = cairn_err_set_errno(CAIRN_EIO, errno, "remove cgroup '%s'", path);
                break;
            }
            sleep_ms(20);
        }
    }
    free_strv(roots, n);
    return rc;
}

/*
 * With no sandbox left in the table, remove our parent cgroup dirs too (empty then): a runtime leaves no
 * dirs behind on the host (every test makes runtimes with parents of their own). Under rt->mu, because a
 * create enters the table under that lock before its runsc makes the parent again. Errors are ignored:
 * EBUSY/ENOTEMPTY when something still uses it, ENOENT when it is gone already.
 */
static void cgroup_parent_release(struct cairn_runtime *rt)
{
    char **roots = NULL;
    size_t n = 0;
    if (cgroup_roots(&roots, &n) != CAIRN_OK) {
        cairn_err_clear();
        return;
    }
    pthread_mutex_lock(&rt->mu);
    for (size_t i = 0; rt->n_table == 0 && i < n; i++) {
        char dir[PATH_MAX];
        int dn = snprintf(dir, sizeof(dir), "%s/%s", roots[i], rt->cg_parent);
        if (dn > 0 && (size_t)dn < sizeof(dir))
            rmdir(dir);
    }
    pthread_mutex_unlock(&rt->mu);
    free_strv(roots, n);
}

/* Remove the cgroups under our parent that belong to no sandbox of the table. */
static void cgroup_sweep(struct cairn_runtime *rt)
{
    char **roots = NULL;
    size_t n = 0;
    if (cgroup_roots(&roots, &n) != CAIRN_OK) {
        cairn_err_clear();
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/%s", roots[i], rt->cg_parent);
        DIR *d = opendir(dir);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!sbx_valid_id(e->d_name) || table_has(rt, e->d_name))
                continue;
            char path[PATH_MAX];
            int pn = snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            if (pn < 0 || (size_t)pn >= sizeof(path))
                continue;
            if (rmdir(path) == 0)
                cairn_info("runtime: removed orphan cgroup '%s'", path);
            else if (errno == EBUSY) /* has tasks: not an orphan (another runtime sharing our parent?) */
                cairn_debug("runtime: cgroup '%s' is in use: left alone", path);
            else
                cairn_warn("runtime: cannot remove orphan cgroup '%s': %s", path, strerror(errno));
        }
        closedir(d);
    }
    free_strv(roots, n);
}

/* ---- teardown (terminate, failed creates, orphans) ---- */

static int run_runsc(struct cairn_sandbox *sb, const char *const *args, uint32_t timeout_ms, char *tail,
                     size_t tail_cap, int *code)
{
    struct sbx_argv a;
    sbx_argv_init(&a);
    sbx_argv_runsc(&a, sb->rt, false);
    for (size_t i = 0; args[i]; i++)
        sbx_argv_add(&a, "%s", args[i]);
    struct cairn_buf err;
    cairn_buf_init(&err, 64 << 10);
    int rc = sbx_argv_ok(&a);
    if (rc == CAIRN_OK)
        rc = sbx_run(a.v, timeout_ms, NULL, &err, code);
    if (tail)
        sbx_tail(err.data, err.len, 3, tail, tail_cap);
    cairn_buf_release(&err);
    sbx_argv_release(&a);
    return rc;
}

struct first_err {
    int rc;
    char msg[1024];
};

static void note(struct first_err *fe, int rc)
{
    if (rc != CAIRN_OK && fe->rc == CAIRN_OK) {
        fe->rc = rc;
        snprintf(fe->msg, sizeof(fe->msg), "%s", cairn_err_msg());
    }
}

static int sbx_teardown(struct cairn_sandbox *sb)
{
    struct cairn_runtime *rt = sb->rt;
    struct first_err fe = {CAIRN_OK, ""};
    if (!sandbox_proc_is_ours(sb)) {
        sb->sandbox_proc = sb->gofer_proc = (struct sbx_proc){0, 0};
        read_runsc_pids(sb);
    }
    /* runsc delete signals the pid it stored: only let it when that process is still our sandbox.
       Otherwise the sandbox is gone (host reboot, killed) and its state is stale: removed by hand below. */
    if (rt->runsc && runsc_state_exists(rt, sb->id) && sandbox_proc_is_ours(sb)) {
        char tail[512] = "";
        int code = -1;
        const char *const del[] = {"delete", "-force", sb->id, NULL};
        run_runsc(sb, del, SBX_RUNSC_DELETE_MS, tail, sizeof(tail), &code);
        if (runsc_state_exists(rt, sb->id)) {
            const char *const kill_args[] = {"kill", sb->id, "KILL", NULL};
            int kcode = -1;
            run_runsc(sb, kill_args, SBX_RUNSC_SHORT_MS, NULL, 0, &kcode);
            run_runsc(sb, del, SBX_RUNSC_DELETE_MS, tail, sizeof(tail), &code);
        }
        if (runsc_state_exists(rt, sb->id))
            cairn_warn("sandbox %s: runsc delete -force exited %d and left state: %s", sb->id, code, tail);
        else if (code != 0)
            cairn_debug("sandbox %s: runsc delete -force exited %d (state gone): %s", sb->id, code, tail);
    }
    if (!sbx_proc_kill(&sb->sandbox_proc, 5000))
        note(&fe, cairn_err_set(CAIRN_EIO, "sandbox %s: runsc-sandbox pid %d survives SIGKILL", sb->id,
                                (int)sb->sandbox_proc.pid));
    if (!sbx_proc_kill(&sb->gofer_proc, 5000))
        note(&fe, cairn_err_set(CAIRN_EIO, "sandbox %s: runsc-gofer pid %d survives SIGKILL", sb->id,
                                (int)sb->gofer_proc.pid));
    if (fe.rc == CAIRN_OK && runsc_state_exists(rt, sb->id)) {
        /* runsc could not delete it, but its processes are gone: the state is all that is left */
        runsc_state_remove(rt, sb->id);
        if (runsc_state_exists(rt, sb->id))
            note(&fe, cairn_err_set(CAIRN_EIO, "sandbox %s: cannot remove runsc state in '%s'", sb->id,
                                    rt->runsc_root));
    }
    /* execs in flight end with the sandbox: let them finish touching the exec dir */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&sb->mu);
    while (sb->live_execs && pthread_cond_timedwait(&sb->cv, &sb->mu, &until) == 0)
        ;
    pthread_mutex_unlock(&sb->mu);
    int rc = sbx_umount_tree(sb->dir);
    if (rc != CAIRN_OK)
        note(&fe, cairn_err_set(rc, "sandbox %s: unmount: %s", sb->id, cairn_err_msg()));
    rc = cgroup_remove(rt, sb->id);
    if (rc != CAIRN_OK)
        note(&fe, cairn_err_set(rc, "sandbox %s: cgroups: %s", sb->id, cairn_err_msg()));
    rc = sbx_rmrf(sb->dir);
    if (rc != CAIRN_OK)
        note(&fe, cairn_err_set(rc, "sandbox %s: remove dirs: %s", sb->id, cairn_err_msg()));
    if (fe.rc != CAIRN_OK)
        return cairn_err_set(fe.rc, "%s", fe.msg);
    return CAIRN_OK;
}

int cairn_sandbox_terminate(struct cairn_sandbox *sb)
{
    pthread_mutex_lock(&sb->op_mu);
    pthread_mutex_lock(&sb->mu);
    bool done = sb->state == CAIRN_SANDBOX_TERMINATED;
    if (!done)
        sb->state = CAIRN_SANDBOX_BROKEN;
    pthread_mutex_unlock(&sb->mu);
    int rc = CAIRN_OK;
    if (!done) {
        uint64_t t0 = cairn_now_mono_ns();
        rc = sbx_teardown(sb);
        pthread_mutex_lock(&sb->mu);
        sb->state = rc == CAIRN_OK ? CAIRN_SANDBOX_TERMINATED : CAIRN_SANDBOX_BROKEN;
        pthread_mutex_unlock(&sb->mu);
        if (rc == CAIRN_OK) {
            table_remove(sb->rt, sb);
            cgroup_parent_release(sb->rt);
            cairn_info("sandbox %s: terminated in %.2f s", sb->id, (double)(cairn_now_mono_ns() - t0) / 1e9);
        } else {
            cairn_warn("sandbox %s: terminate failed: %s", sb->id, cairn_err_msg());
        }
    }
    pthread_mutex_unlock(&sb->op_mu);
    return rc;
}

/* ---- create / restore ---- */

static int put(struct cairn_buf *b, const char *s) { return cairn_buf_append(b, s, strlen(s)); }

static int put_str_array(struct cairn_buf *b, const char *const *v, size_t n)
{
    int rc = put(b, "[");
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
        if (i)
            rc = put(b, ",");
        if (rc == CAIRN_OK)
            rc = sbx_json_put_str(b, v[i]);
    }
    return rc == CAIRN_OK ? put(b, "]") : rc;
}

static size_t strv_len(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

static int build_config(struct cairn_sandbox *sb, const struct cairn_sandbox_spec *spec, struct cairn_buf *b)
{
    static const char *const def_argv[] = {"sleep", "2147483647", NULL};
    const char *const *argv = spec->argv ? spec->argv : def_argv;
    size_t n_env = strv_len(spec->env);
    bool has_path = false;
    for (size_t i = 0; i < n_env; i++)
        has_path |= !strncmp(spec->env[i], "PATH=", 5);
    int rc = put(b, "{\"ociVersion\":\"1.0.0\",\"process\":{\"terminal\":false,\"user\":{\"uid\":0,\"gid\":0},\"args\":");
    if (rc == CAIRN_OK)
        rc = put_str_array(b, argv, strv_len(argv));
    if (rc == CAIRN_OK)
        rc = put(b, ",\"env\":[");
    if (rc == CAIRN_OK && !has_path)
        rc = sbx_json_put_str(b, SBX_DEFAULT_PATH);
    for (size_t i = 0; i < n_env && rc == CAIRN_OK; i++) {
        if (i || !has_path)
            rc = put(b, ",");
        if (rc == CAIRN_OK)
            rc = sbx_json_put_str(b, spec->env[i]);
    }
    if (rc == CAIRN_OK)
        rc = put(b, "],\"cwd\":");
    if (rc == CAIRN_OK)
        rc = sbx_json_put_str(b, spec->cwd ? spec->cwd : "/");
    if (rc == CAIRN_OK)
        rc = put(b, ",\"capabilities\":{");
    const char *const sets[] = {"bounding", "effective", "permitted"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(sets) && rc == CAIRN_OK; i++) {
        char key[32];
        snprintf(key, sizeof(key), "%s\"%s\":", i ? "," : "", sets[i]);
        rc = put(b, key);
        if (rc == CAIRN_OK)
            rc = put_str_array(b, SBX_CAPS, CAIRN_ARRAY_LEN(SBX_CAPS));
    }
    if (rc == CAIRN_OK)
        rc = put(b, "},\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":65536,\"soft\":65536}]},\"root\":{\"path\":");
    if (rc == CAIRN_OK)
        rc = sbx_json_put_str(b, sb->merged);
    if (rc == CAIRN_OK)
        rc = put(b, ",\"readonly\":false},\"hostname\":");
    if (rc == CAIRN_OK)
        rc = sbx_json_put_str(b, spec->hostname ? spec->hostname : "sandbox");
    if (rc == CAIRN_OK)
        rc = put(b, ",\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
                    "{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\","
                    "\"options\":[\"nosuid\",\"strictatime\",\"mode=755\",\"size=65536k\"]},"
                    "{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\","
                    "\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"ro\"]}],"
                    "\"linux\":{\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"network\"},{\"type\":\"ipc\"},"
                    "{\"type\":\"uts\"},{\"type\":\"mount\"}],\"cgroupsPath\":");
    char cg[128];
    snprintf(cg, sizeof(cg), "/%s/%s", sb->rt->cg_parent, sb->id);
    if (rc == CAIRN_OK)
        rc = sbx_json_put_str(b, cg);
    if (rc == CAIRN_OK)
        rc = put(b, "}}\n");
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "sandbox %s: config.json is too large", sb->id);
    return CAIRN_OK;
}

static int validate_spec(const struct cairn_sandbox_spec *spec)
{
    if (!spec)
        return cairn_err_set(CAIRN_EINVAL, "no sandbox spec");
    if (spec->network)
        return cairn_err_set(CAIRN_EUNSUPPORTED, "sandbox networking is not supported yet (--network=none only)");
    if (spec->id[0] && !sbx_valid_id(spec->id))
        return cairn_err_set(CAIRN_EINVAL, "sandbox id '%.40s' is not 32 lower-case hex characters", spec->id);
    for (size_t i = 0; i < spec->n_lowers; i++) {
        CAIRN_FORWARD_IF_ERROR(sbx_check_host_path("image layer", spec->lowers[i]));
        struct stat st;
        if (stat(spec->lowers[i], &st) != 0 || !S_ISDIR(st.st_mode))
            return cairn_err_set(CAIRN_ENOTFOUND, "image layer '%s' is not a directory", spec->lowers[i]);
    }
    if (spec->argv && (!spec->argv[0] || !spec->argv[0][0]))
        return cairn_err_set(CAIRN_EINVAL, "the sandbox's main argv is empty");
    for (size_t i = 0; spec->env && spec->env[i]; i++)
        if (!strchr(spec->env[i], '=') || spec->env[i][0] == '=')
            return cairn_err_set(CAIRN_EINVAL, "sandbox env entry %zu is not K=V", i);
    if (spec->hostname) {
        size_t n = strlen(spec->hostname);
        bool ok = n >= 1 && n <= 63;
        for (size_t i = 0; ok && i < n; i++) {
            char c = spec->hostname[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
        }
        if (!ok)
            return cairn_err_set(CAIRN_EINVAL, "hostname '%.80s' is not 1-63 of [A-Za-z0-9.-]", spec->hostname);
    }
    if (spec->cwd && spec->cwd[0] != '/')
        return cairn_err_set(CAIRN_EINVAL, "cwd '%s' is not absolute", spec->cwd);
    if (spec->upper_from) {
        CAIRN_FORWARD_IF_ERROR(sbx_check_host_path("upper dir", spec->upper_from));
        struct stat st;
        if (lstat(spec->upper_from, &st) != 0 || !S_ISDIR(st.st_mode))
            return cairn_err_set(CAIRN_ENOTFOUND, "upper dir '%s' is not a directory", spec->upper_from);
    }
    for (size_t i = 0; i < spec->n_mounts; i++)
        CAIRN_FORWARD_IF_ERROR(sbx_check_mount_spec(&spec->mounts[i]));
    return CAIRN_OK;
}

/* `runsc state` status ("running", "stopped", ...) into out; "" when runsc does not know the id. */
static void runsc_status(struct cairn_sandbox *sb, char *out, size_t cap)
{
    out[0] = '\0';
    struct sbx_argv a;
    sbx_argv_init(&a);
    sbx_argv_runsc(&a, sb->rt, false);
    sbx_argv_add(&a, "state");
    sbx_argv_add(&a, "%s", sb->id);
    struct cairn_buf o;
    cairn_buf_init(&o, 1 << 20);
    int code = -1;
    const char *v;
    size_t vn;
    if (sbx_argv_ok(&a) == CAIRN_OK && sbx_run(a.v, SBX_RUNSC_SHORT_MS, &o, NULL, &code) == CAIRN_OK && code == 0 &&
        sbx_json_field((const char *)o.data, o.len, "status", &v, &vn))
        sbx_json_str(v, vn, out, cap);
    cairn_err_clear();
    cairn_buf_release(&o);
    sbx_argv_release(&a);
}

/* Start runsc run/restore with its output on the log, then wait until an exec answers. */
static int start_and_wait(struct cairn_sandbox *sb, const char *image_dir)
{
    struct cairn_runtime *rt = sb->rt;
    const char *step = image_dir ? "restore" : "run";
    uint64_t t0 = cairn_now_mono_ns();
    uint64_t deadline = t0 + (uint64_t)rt->ready_timeout_ms * 1000000u;
    int logfd = open(sb->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (logfd < 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "sandbox %s: open log '%s'", sb->id, sb->log_path);
    struct sbx_argv a;
    sbx_argv_init(&a);
    sbx_argv_runsc(&a, rt, true);
    sbx_argv_add(&a, "%s", step);
    sbx_argv_add(&a, "-detach");
    if (image_dir)
        sbx_argv_add(&a, "-image-path=%s", image_dir);
    sbx_argv_add(&a, "-bundle=%s", sb->bundle);
    sbx_argv_add(&a, "%s", sb->id);
    pid_t pid = -1;
    int rc = sbx_argv_ok(&a);
    if (rc == CAIRN_OK)
        rc = sbx_spawn(a.v, -1, logfd, logfd, &pid);
    close(logfd);
    sbx_argv_release(&a);
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "sandbox %s: %s: %s", sb->id, step, cairn_err_msg());
    /* `run -detach` returns once the container started; the sandbox outlives it (reparented to init) */
    struct sbx_io io;
    sbx_io_init(&io, pid);
    if (sbx_io_loop(&io, deadline) == CAIRN_ETIMEDOUT) {
        kill(pid, SIGKILL);
        sbx_io_finish(&io);
        char tail[512];
        sbx_file_tail(sb->log_path, 3, tail, sizeof(tail));
        return cairn_err_set(CAIRN_ETIMEDOUT, "sandbox %s: runsc %s did not return within %u ms: %s", sb->id, step,
                             rt->ready_timeout_ms, tail);
    }
    sbx_io_finish(&io);
    int code = sbx_status_code(io.status);
    if (code != 0) {
        char tail[512];
        sbx_file_tail(sb->log_path, 3, tail, sizeof(tail));
        return cairn_err_set(CAIRN_EIO, "sandbox %s: runsc %s exited %d: %s", sb->id, step, code, tail);
    }
    read_runsc_pids(sb);

    static const char *const probe_argv[] = {"true", NULL};
    struct cairn_exec_opts probe = {.argv = probe_argv, .timeout_ms = 5000};
    unsigned nap = 5;
    for (;;) {
        int ec = -1;
        uint64_t now = cairn_now_mono_ns();
        if (now >= deadline)
            break;
        probe.timeout_ms = (uint32_t)CAIRN_MIN((deadline - now) / 1000000u + 1, 5000u);
        rc = sbx_exec(sb, &probe, &ec, true);
        if (rc == CAIRN_OK || rc == CAIRN_ENOTFOUND) { /* ENOTFOUND: no `true` in the image, but it answered */
            cairn_err_clear();
            cairn_debug("sandbox %s: ready in %.3f s", sb->id, (double)(cairn_now_mono_ns() - t0) / 1e9);
            return CAIRN_OK;
        }
        char status[32];
        runsc_status(sb, status, sizeof(status));
        if (strcmp(status, "running") != 0 && strcmp(status, "created") != 0) {
            char tail[512];
            sbx_file_tail(sb->log_path, 3, tail, sizeof(tail));
            return cairn_err_set(CAIRN_EIO, "sandbox %s: not running after %s (runsc state '%s'): %s", sb->id, step,
                                 status[0] ? status : "unknown", tail);
        }
        sleep_ms(nap);
        nap = CAIRN_MIN(nap * 2, 50u);
    }
    char tail[512];
    sbx_file_tail(sb->log_path, 3, tail, sizeof(tail));
    return cairn_err_set(CAIRN_ETIMEDOUT, "sandbox %s: no exec answered within %u ms of %s: %s", sb->id,
                         rt->ready_timeout_ms, step, tail);
}

static int sbx_start(struct cairn_runtime *rt, const struct cairn_sandbox_spec *spec, const char *image_dir,
                     struct cairn_sandbox **out)
{
    *out = NULL;
    if (!rt->usable)
        return cairn_err_set(CAIRN_EUNAVAILABLE, "runsc is not available on this worker (%s)", rt->fingerprint);
    CAIRN_FORWARD_IF_ERROR(validate_spec(spec));
    if (image_dir) {
        struct stat st;
        if (image_dir[0] != '/' || stat(image_dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return cairn_err_set(CAIRN_ENOTFOUND, "checkpoint image dir '%s' is not a directory", image_dir);
    }
    char id[CAIRN_SANDBOX_ID_LEN + 1];
    if (spec->id[0]) {
        snprintf(id, sizeof(id), "%s", spec->id);
    } else {
        uint8_t raw[CAIRN_SANDBOX_ID_LEN / 2];
        cairn_random_bytes(raw, sizeof(raw));
        cairn_hex_encode(id, raw, sizeof(raw));
    }
    struct cairn_sandbox *sb = NULL;
    CAIRN_FORWARD_IF_ERROR(sbx_alloc(rt, id, &sb));
    sb->enable_snapshot = spec->enable_snapshot;
    sb->network = spec->network;
    bool owned = false, in_table = false;
    struct cairn_buf cfg;
    cairn_buf_init(&cfg, 1 << 20);
    pthread_mutex_lock(&sb->op_mu);
    int rc = table_add(rt, sb);
    if (rc != CAIRN_OK)
        goto fail;
    in_table = true;
    if (runsc_state_exists(rt, id)) {
        rc = cairn_err_set(CAIRN_EEXIST, "sandbox id %s is already known to runsc (ids are never reused)", id);
        goto fail;
    }
    if (mkdir(sb->dir, 0711) != 0) {
        rc = cairn_err_set_errno(errno == EEXIST ? CAIRN_EEXIST : CAIRN_EIO, errno, "sandbox %s: make dir '%s'", id,
                                 sb->dir);
        goto fail;
    }
    owned = true;
    if (mkdir(sb->bundle, 0711) != 0 ||
        (spec->upper_from ? rename(spec->upper_from, sb->upper) : mkdir(sb->upper, 0755)) != 0 ||
        mkdir(sb->work, 0700) != 0 ||
        mkdir(sb->merged, 0755) != 0 || mkdir(sb->exec_dir, 0700) != 0 ||
        (spec->n_lowers == 0 && mkdir(sb->lower_empty, 0755) != 0)) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "sandbox %s: make dirs under '%s'", id, sb->dir);
        goto fail;
    }
    {
        const char *const one[] = {sb->lower_empty};
        rc = spec->n_lowers ? sbx_overlay_mount(spec->lowers, spec->n_lowers, sb->upper, sb->work, sb->merged)
                            : sbx_overlay_mount(one, 1, sb->upper, sb->work, sb->merged);
    }
    if (rc != CAIRN_OK) {
        rc = cairn_err_set(rc, "sandbox %s: root overlay: %s", id, cairn_err_msg());
        goto fail;
    }
    /* before runsc starts: the gofer's copy of the mount is then a slave, and later mounts propagate */
    if (mount(NULL, sb->merged, NULL, MS_SHARED, NULL) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "sandbox %s: make '%s' shared", id, sb->merged);
        goto fail;
    }
    rc = meta_write(sb);
    for (size_t i = 0; i < spec->n_mounts && rc == CAIRN_OK; i++)
        rc = sbx_mount_into_locked(sb, &spec->mounts[i]);
    if (rc == CAIRN_OK)
        rc = build_config(sb, spec, &cfg);
    if (rc == CAIRN_OK) {
        char *path = sbx_fmt("%s/config.json", sb->bundle);
        rc = path ? cairn_file_replace_atomic(path, cfg.data, cfg.len, 0600)
                  : cairn_err_set(CAIRN_ENOMEM, "out of memory");
        if (rc != CAIRN_OK)
            rc = cairn_err_set(rc, "sandbox %s: write config.json: %s", id, cairn_err_msg());
        cairn_free(path);
    }
    if (rc == CAIRN_OK)
        rc = start_and_wait(sb, image_dir);
    if (rc == CAIRN_OK)
        rc = meta_write(sb);
    if (rc != CAIRN_OK)
        goto fail;
    pthread_mutex_lock(&sb->mu);
    sb->state = CAIRN_SANDBOX_RUNNING;
    pthread_mutex_unlock(&sb->mu);
    pthread_mutex_unlock(&sb->op_mu);
    cairn_buf_release(&cfg);
    cairn_info("sandbox %s: %s (%zu layers, snapshots %s)", id, image_dir ? "restored" : "started", spec->n_lowers,
               spec->enable_snapshot ? "on" : "off");
    *out = sb;
    return CAIRN_OK;
fail: {
    struct first_err fe = {rc, ""};
    snprintf(fe.msg, sizeof(fe.msg), "%s", cairn_err_msg());
    if (owned && sbx_teardown(sb) != CAIRN_OK)
        cairn_warn("sandbox %s: cleanup after a failed start: %s", id, cairn_err_msg());
    pthread_mutex_lock(&sb->mu);
    sb->state = CAIRN_SANDBOX_TERMINATED;
    pthread_mutex_unlock(&sb->mu);
    pthread_mutex_unlock(&sb->op_mu);
    if (in_table)
        table_remove(rt, sb);
    cgroup_parent_release(rt);
    cairn_buf_release(&cfg);
    cairn_sandbox_release(&sb);
    return cairn_err_set(fe.rc, "%s", fe.msg);
}
}

int cairn_sandbox_create(struct cairn_runtime *rt, const struct cairn_sandbox_spec *spec, struct cairn_sandbox **out)
{
    return sbx_start(rt, spec, NULL, out);
}

int cairn_sandbox_restore(struct cairn_runtime *rt, const struct cairn_sandbox_spec *spec, const char *image_dir,
                          struct cairn_sandbox **out)
{
    *out = NULL;
    if (!image_dir)
        return cairn_err_set(CAIRN_EINVAL, "restore needs a checkpoint image dir");
    return sbx_start(rt, spec, image_dir, out);
}

/* ---- pause / resume / checkpoint ---- */

static int pause_resume(struct cairn_sandbox *sb, bool pause)
{
    const enum cairn_sandbox_state from = pause ? CAIRN_SANDBOX_RUNNING : CAIRN_SANDBOX_PAUSED;
    const enum cairn_sandbox_state to = pause ? CAIRN_SANDBOX_PAUSED : CAIRN_SANDBOX_RUNNING;
    const char *verb = pause ? "pause" : "resume";
    pthread_mutex_lock(&sb->op_mu);
    pthread_mutex_lock(&sb->mu);
    enum cairn_sandbox_state st = sb->state;
    pthread_mutex_unlock(&sb->mu);
    int rc = CAIRN_OK;
    if (st == to) {
        pthread_mutex_unlock(&sb->op_mu);
        return CAIRN_OK;
    }
    if (st != from) {
        rc = cairn_err_set(CAIRN_EUNAVAILABLE, "sandbox %s is %s: cannot %s", sb->id, cairn_sandbox_state_name(st),
                           verb);
    } else {
        const char *const args[] = {verb, sb->id, NULL};
        char tail[512] = "";
        int code = -1;
        rc = run_runsc(sb, args, SBX_RUNSC_SHORT_MS, tail, sizeof(tail), &code);
        if (rc == CAIRN_OK && code != 0)
            rc = cairn_err_set(CAIRN_EIO, "sandbox %s: runsc %s exited %d: %s", sb->id, verb, code, tail);
        if (rc == CAIRN_OK) {
            pthread_mutex_lock(&sb->mu);
            sb->state = to;
            pthread_mutex_unlock(&sb->mu);
        }
    }
    pthread_mutex_unlock(&sb->op_mu);
    return rc;
}

int cairn_sandbox_pause(struct cairn_sandbox *sb) { return pause_resume(sb, true); }
int cairn_sandbox_resume(struct cairn_sandbox *sb) { return pause_resume(sb, false); }

int cairn_sandbox_checkpoint(struct cairn_sandbox *sb, const char *image_dir)
{
    struct stat st;
    if (!image_dir || image_dir[0] != '/' || stat(image_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cairn_err_set(CAIRN_EINVAL, "sandbox %s: checkpoint image dir '%s' is not a directory", sb->id,
                             image_dir ? image_dir : "(null)");
    pthread_mutex_lock(&sb->op_mu);
    int rc = CAIRN_OK;
    pthread_mutex_lock(&sb->mu);
    if (!sb->enable_snapshot)
        rc = cairn_err_set(CAIRN_EUNSUPPORTED, "sandbox %s was created without snapshots enabled", sb->id);
    else if (sb->state != CAIRN_SANDBOX_RUNNING)
        rc = cairn_err_set(CAIRN_EUNAVAILABLE, "sandbox %s is %s: cannot checkpoint", sb->id,
                           cairn_sandbox_state_name(sb->state));
    else if (sb->live_execs)
        rc = cairn_err_set(CAIRN_EBUSY, "sandbox %s has %u exec(s) running: memory snapshot refused", sb->id,
                           sb->live_execs);
    else
        sb->state = CAIRN_SANDBOX_CHECKPOINTING;
    pthread_mutex_unlock(&sb->mu);
    if (rc == CAIRN_OK) {
        char *img = sbx_fmt("-image-path=%s", image_dir);
        const char *const args[] = {"checkpoint", img ? img : "", sb->id, NULL};
        char tail[512] = "";
        int code = -1;
        uint64_t t0 = cairn_now_mono_ns();
        rc = img ? run_runsc(sb, args, SBX_CHECKPOINT_MS, tail, sizeof(tail), &code)
                 : cairn_err_set(CAIRN_ENOMEM, "out of memory");
        cairn_free(img);
        if (rc == CAIRN_OK && code != 0)
            rc = cairn_err_set(CAIRN_EIO, "sandbox %s: runsc checkpoint exited %d: %s", sb->id, code, tail);
        enum cairn_sandbox_state next = CAIRN_SANDBOX_CHECKPOINTED;
        if (rc != CAIRN_OK) {
            char status[32];
            struct first_err fe = {rc, ""};
            snprintf(fe.msg, sizeof(fe.msg), "%s", cairn_err_msg());
            runsc_status(sb, status, sizeof(status));
            next = !strcmp(status, "running") ? CAIRN_SANDBOX_RUNNING : CAIRN_SANDBOX_BROKEN;
            rc = cairn_err_set(fe.rc, "%s", fe.msg);
        } else {
            cairn_info("sandbox %s: checkpointed in %.2f s", sb->id, (double)(cairn_now_mono_ns() - t0) / 1e9);
        }
        pthread_mutex_lock(&sb->mu);
        sb->state = next;
        pthread_mutex_unlock(&sb->mu);
    }
    pthread_mutex_unlock(&sb->op_mu);
    return rc;
}

/* ---- reconcile ---- */

struct listed {
    char id[CAIRN_SANDBOX_ID_LEN + 1];
    char status[16];
};

static int report_add(char (**v)[CAIRN_SANDBOX_ID_LEN + 1], size_t *n, const char *id)
{
    char(*nv)[CAIRN_SANDBOX_ID_LEN + 1] = cairn_realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    snprintf(nv[*n], sizeof(nv[*n]), "%s", id);
    *v = nv;
    (*n)++;
    return CAIRN_OK;
}

void cairn_reconcile_report_release(struct cairn_reconcile_report *r)
{
    if (!r)
        return;
    CAIRN_FREE(r->adopted);
    CAIRN_FREE(r->cleaned);
    r->n_adopted = r->n_cleaned = r->n_failed = 0;
}

static int runsc_list(struct cairn_runtime *rt, struct listed **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct sbx_argv a;
    sbx_argv_init(&a);
    sbx_argv_runsc(&a, rt, false);
    sbx_argv_add(&a, "list");
    sbx_argv_add(&a, "-format=json");
    struct cairn_buf o, e;
    cairn_buf_init(&o, 16 << 20);
    cairn_buf_init(&e, 64 << 10);
    int code = -1;
    int rc = sbx_argv_ok(&a);
    if (rc == CAIRN_OK)
        rc = sbx_run(a.v, SBX_RUNSC_SHORT_MS, &o, &e, &code);
    if (rc == CAIRN_OK && code != 0) {
        char tail[512];
        sbx_tail(e.data, e.len, 3, tail, sizeof(tail));
        rc = cairn_err_set(CAIRN_EIO, "runsc list exited %d: %s", code, tail);
    }
    struct listed *v = NULL;
    size_t cnt = 0, cap = 0;
    const char *cur = NULL, *item;
    size_t in;
    const char *doc = o.data ? (const char *)o.data : "";
    while (rc == CAIRN_OK && sbx_json_array_next(doc, o.len, &cur, &item, &in)) {
        const char *sv;
        size_t svn;
        struct listed l = {{0}, {0}};
        if (!sbx_json_field(item, in, "id", &sv, &svn) || !sbx_json_str(sv, svn, l.id, sizeof(l.id)))
            continue; /* not one of ours (too long for our ids) or odd: leave it alone */
        if (sbx_json_field(item, in, "status", &sv, &svn))
            sbx_json_str(sv, svn, l.status, sizeof(l.status));
        if (cairn_array_grow((void **)&v, &cap, cnt + 1, sizeof(*v)) != CAIRN_OK) {
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
            break;
        }
        v[cnt++] = l;
    }
    cairn_buf_release(&o);
    cairn_buf_release(&e);
    sbx_argv_release(&a);
    if (rc != CAIRN_OK) {
        cairn_free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return CAIRN_OK;
}

static bool is_mount_point(const char *path)
{
    struct sbx_mi *mi = NULL;
    size_t n = 0;
    if (sbx_mountinfo_read(&mi, &n) != CAIRN_OK) {
        cairn_err_clear();
        return false;
    }
    bool found = false;
    for (size_t i = 0; i < n && !found; i++)
        found = !strcmp(mi[i].point, path);
    sbx_mountinfo_free(&mi, n);
    return found;
}

static int adopt(struct cairn_runtime *rt, const char *id, bool paused)
{
    struct cairn_sandbox *sb = NULL;
    CAIRN_FORWARD_IF_ERROR(sbx_alloc(rt, id, &sb));
    int rc = meta_read(sb);
    if (rc == CAIRN_OK)
        rc = sbx_mounts_load(sb);
    if (rc == CAIRN_OK) {
        /* the recorded pids are the truth when they still run; runsc's state file otherwise */
        if (!sandbox_proc_is_ours(sb)) {
            sb->sandbox_proc = sb->gofer_proc = (struct sbx_proc){0, 0};
            read_runsc_pids(sb);
        }
        if (!sandbox_proc_is_ours(sb))
            rc = cairn_err_set(CAIRN_ENOTFOUND, "sandbox %s: runsc says it runs, but its process is not ours", id);
    }
    if (rc == CAIRN_OK) {
        sb->state = paused ? CAIRN_SANDBOX_PAUSED : CAIRN_SANDBOX_RUNNING;
        rc = table_add(rt, sb);
    }
    cairn_sandbox_release(&sb);
    return rc;
}

static void cleanup_orphan(struct cairn_runtime *rt, const char *id, struct cairn_reconcile_report *rep,
                           size_t *n_failed)
{
    struct cairn_sandbox *sb = NULL;
    if (sbx_alloc(rt, id, &sb) != CAIRN_OK) {
        (*n_failed)++;
        return;
    }
    if (meta_read(sb) != CAIRN_OK)
        cairn_err_clear(); /* no meta: runsc's state file (if any) gives the pids */
    int rc = sbx_teardown(sb);
    if (rc == CAIRN_OK) {
        cairn_info("runtime: removed orphan sandbox %s", id);
        if (rep)
            report_add(&rep->cleaned, &rep->n_cleaned, id);
    } else {
        cairn_warn("runtime: cannot remove orphan sandbox %s: %s", id, cairn_err_msg());
        (*n_failed)++;
    }
    cairn_sandbox_release(&sb);
}

int cairn_runtime_reconcile(struct cairn_runtime *rt, struct cairn_reconcile_report *rep)
{
    if (rep)
        memset(rep, 0, sizeof(*rep));
    struct listed *listed = NULL;
    size_t n_listed = 0, n_failed = 0;
    int rc = CAIRN_OK;
    if (rt->usable) {
        rc = runsc_list(rt, &listed, &n_listed);
        if (rc != CAIRN_OK)
            return cairn_err_set(rc, "reconcile: %s (nothing was changed)", cairn_err_msg());
    }
    /* runsc's view first */
    for (size_t i = 0; i < n_listed; i++) {
        const char *id = listed[i].id;
        if (!sbx_valid_id(id)) {
            cairn_warn("runtime: runsc root '%s' holds a container '%s' that is not ours: left alone",
                       rt->runsc_root, id);
            continue;
        }
        if (table_has(rt, id))
            continue;
        char *dir = sbx_fmt("%s/%s", rt->sb_root, id);
        char *merged = sbx_fmt("%s/%s/merged", rt->sb_root, id);
        char *meta = sbx_fmt("%s/%s/meta", rt->sb_root, id);
        bool live = !strcmp(listed[i].status, "running") || !strcmp(listed[i].status, "paused");
        struct stat st;
        bool ok = dir && merged && meta && live && stat(dir, &st) == 0 && stat(meta, &st) == 0 &&
                  is_mount_point(merged);
        cairn_free(dir);
        cairn_free(merged);
        cairn_free(meta);
        if (ok && adopt(rt, id, !strcmp(listed[i].status, "paused")) == CAIRN_OK) {
            cairn_info("runtime: adopted sandbox %s (%s)", id, listed[i].status);
            if (rep)
                report_add(&rep->adopted, &rep->n_adopted, id);
            continue;
        }
        if (ok)
            cairn_warn("runtime: cannot adopt sandbox %s: %s: removing it", id, cairn_err_msg());
        cleanup_orphan(rt, id, rep, &n_failed);
    }
    cairn_free(listed);
    /* then the dirs runsc does not know (or whose state was already removed) */
    DIR *d = opendir(rt->sb_root);
    if (d) {
        struct dirent *e;
        char(*ids)[CAIRN_SANDBOX_ID_LEN + 1] = NULL;
        size_t n_ids = 0;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            if (!sbx_valid_id(e->d_name)) {
                cairn_warn("runtime: '%s/%s' is not a sandbox dir: left alone", rt->sb_root, e->d_name);
                continue;
            }
            if (!table_has(rt, e->d_name) && report_add(&ids, &n_ids, e->d_name) != CAIRN_OK)
                break;
        }
        closedir(d);
        for (size_t i = 0; i < n_ids; i++)
            if (!table_has(rt, ids[i]))
                cleanup_orphan(rt, ids[i], rep, &n_failed);
        cairn_free(ids);
    }
    cgroup_sweep(rt);
    cgroup_parent_release(rt);
    if (rep)
        rep->n_failed = n_failed;
    cairn_err_clear();
    return CAIRN_OK;
}
