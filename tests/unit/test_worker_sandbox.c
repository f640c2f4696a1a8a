/*
 * test_worker_sandbox.c: the sandbox runtime (worker/sandbox.h) against real runsc sandboxes.
 *
 * The image is a busybox rootfs built here from /bin/busybox (package busybox-static). One shared sandbox
 * serves the exec/filesystem/mount tests; lifecycle tests (terminate, failed create, reconcile,
 * checkpoint/restore) make their own. Every test that makes sandboxes registers them for its teardown, and
 * the group teardown detaches whatever is still mounted under the temp dir and removes our cgroups, so a
 * failing test leaves nothing behind. Needs root (mounts) and runsc: without them every test is skipped
 * with a loud "SKIPPED: runsc not usable: ..." line.
 */
#include "sandbox.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static struct {
    bool skip;
    char reason[512];
    char *tmp;       /* everything of this test lives below */
    char rootfs[512];
    char state[512];
    char cg_parent[64];
    char cg_parent2[64]; /* the reconcile test's runtime: a worker of its own */
    struct cairn_runtime *rt;
    struct cairn_sandbox *sb; /* the shared sandbox */
    struct cairn_sandbox *own[8];
    size_t n_own;
    struct cairn_runtime *own_rt[2];
} g;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- exec helper ---- */

struct capture {
    char out[1 << 16], err[1 << 16];
    size_t out_len, err_len;
    uint64_t out_total, err_total;
    int stop_after; /* >0: return ECANCELED after that many callbacks */
    int calls;
};

static int capture_fn(int stream, const uint8_t *data, size_t len, void *arg)
{
    struct capture *c = arg;
    char *buf = stream == 1 ? c->out : c->err;
    size_t *l = stream == 1 ? &c->out_len : &c->err_len;
    if (stream == 1)
        c->out_total += len;
    else
        c->err_total += len;
    size_t room = sizeof(c->out) - 1 - *l;
    size_t n = len < room ? len : room;
    memcpy(buf + *l, data, n);
    *l += n;
    buf[*l] = '\0';
    c->calls++;
    if (c->stop_after && c->calls >= c->stop_after)
        return CAIRN_ECANCELED;
    return CAIRN_OK;
}

static int run(struct cairn_sandbox *sb, struct capture *c, int *code, uint32_t timeout_ms, const char *const *argv)
{
    memset(c, 0, sizeof(*c));
    struct cairn_exec_opts o = {.argv = argv, .timeout_ms = timeout_ms, .on_output = capture_fn, .arg = c};
    return cairn_sandbox_exec(sb, &o, code);
}

/* sh -c script in the sandbox; asserts it ran and returns its exit code, output in c */
static int sh(struct cairn_sandbox *sb, struct capture *c, const char *script)
{
    const char *argv[] = {"sh", "-c", script, NULL};
    int code = -1;
    int rc = run(sb, c, &code, 20000, argv);
    if (rc != CAIRN_OK)
        fail_msg("exec '%s': %s: %s", script, cairn_err_name(rc), cairn_err_msg());
    return code;
}

/* ---- host-side checks ---- */

static bool mounted_below(const char *dir)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    assert_non_null(f);
    char line[4096];
    bool found = false;
    size_t n = strlen(dir);
    while (fgets(line, sizeof(line), f)) {
        char point[4096];
        if (sscanf(line, "%*d %*d %*s %*s %4095s", point) == 1 && !strncmp(point, dir, n) &&
            (point[n] == '\0' || point[n] == '/'))
            found = true;
    }
    fclose(f);
    return found;
}

static bool proc_alive(int pid)
{
    if (pid <= 0)
        return false;
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool alive = false;
    if (fgets(buf, sizeof(buf), f)) {
        char *p = strrchr(buf, ')');
        alive = p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
    }
    fclose(f);
    return alive;
}

static bool cgroup_exists(const char *parent, const char *id)
{
    DIR *d = opendir("/sys/fs/cgroup");
    if (!d)
        return false;
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        struct stat st;
        if (stat(tu_path("/sys/fs/cgroup/%s/%s/%s", e->d_name, parent, id), &st) == 0)
            found = true;
    }
    closedir(d);
    return found;
}

static bool runsc_state_exists(const char *state_root, const char *id)
{
    DIR *d = opendir(tu_path("%s/runsc", state_root));
    if (!d)
        return false;
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, id, strlen(id)))
            found = true;
    closedir(d);
    return found;
}

/* Nothing of sandbox id is left: mounts, runsc state, cgroups, dirs, processes (checked by pid). */
static void assert_gone(const char *state_root, const char *cg_parent, const char *id, int spid, int gpid)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/sandboxes/%s", state_root, id);
    assert_false(mounted_below(dir));
    assert_false(runsc_state_exists(state_root, id));
    assert_false(cgroup_exists(cg_parent, id));
    struct stat st;
    assert_int_not_equal(lstat(dir, &st), 0);
    for (int i = 0; i < 100 && (proc_alive(spid) || proc_alive(gpid)); i++)
        usleep(20000);
    assert_false(proc_alive(spid));
    assert_false(proc_alive(gpid));
}

/* ---- fixtures ---- */

static void build_rootfs(const char *dir)
{
    static const char *applets[] = {"sh", "echo", "cat", "sleep", "true", "false", "ls", "seq", "head", "md5sum",
                                    "dd", "rm", "mkdir", "touch", "wc", "ps", "kill", "stat", "mv", "ln", "grep",
                                    "hostname", "pwd", "yes", "test", "printf", "id", "env", NULL};
    assert_int_equal(tu_sh("mkdir -p '%s/bin' '%s/tmp' '%s/etc' '%s/srv/old' '%s/data' && cp /bin/busybox '%s/bin/'",
                           dir, dir, dir, dir, dir, dir),
                     0);
    for (int i = 0; applets[i]; i++)
        assert_int_equal(symlink("busybox", tu_path("%s/bin/%s", dir, applets[i])), 0);
    tu_write_file(tu_path("%s/etc/keep", dir), "keep\n", 5);
    tu_write_file(tu_path("%s/srv/old/file", dir), "old\n", 4);
}

/* The safety net after a failed test: SIGKILL the processes whose command line names our temp dir (runsc's
   sandbox and gofer carry --root=<it>: found by pid, never by name), detach whatever is still mounted below
   it (deepest first) and remove our cgroups. */
static void force_cleanup(const char *dir)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int pid = (int)strtol(e->d_name, NULL, 10);
        if (pid <= 1 || pid == (int)getpid())
            continue;
        char buf[8192];
        int fd = open(tu_path("/proc/%d/cmdline", pid), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        for (ssize_t i = 0; i < n; i++)
            if (!buf[i])
                buf[i] = ' ';
        if (n > 0 && (buf[n] = '\0', strstr(buf, dir))) {
            print_error("cleanup: killing leftover pid %d: %.200s\n", pid, buf);
            kill(pid, SIGKILL);
        }
    }
    if (d)
        closedir(d);
    for (int round = 0; round < 8 && mounted_below(dir); round++) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096], pts[64][1024];
        int n = 0;
        while (f && fgets(line, sizeof(line), f) && n < 64) {
            char point[1024];
            if (sscanf(line, "%*d %*d %*s %*s %1023s", point) == 1 && !strncmp(point, dir, strlen(dir)))
                snprintf(pts[n++], sizeof(pts[0]), "%s", point);
        }
        if (f)
            fclose(f);
        for (int i = n; i-- > 0;)
            umount2(pts[i], MNT_DETACH);
    }
    for (int i = 0; i < 50; i++) {
        int left = tu_sh("for p in '%s' '%s'; do for d in /sys/fs/cgroup/*/$p; do [ -d \"$d\" ] || continue; "
                         "rmdir \"$d\"/* 2>/dev/null; rmdir \"$d\" || exit 1; done; done; exit 0",
                         g.cg_parent, g.cg_parent2);
        if (!left)
            break;
        usleep(100000); /* killed sandboxes leave their cgroups once they are reaped */
    }
}

static void track(struct cairn_sandbox *sb)
{
    assert_true(g.n_own < 8);
    g.own[g.n_own++] = sb;
}

static int teardown_own(void **state)
{
    (void)state;
    for (size_t i = 0; i < g.n_own; i++) {
        if (g.own[i] && cairn_sandbox_terminate(g.own[i]) != CAIRN_OK)
            print_error("teardown: terminate %s: %s\n", cairn_sandbox_id(g.own[i]), cairn_err_msg());
        cairn_sandbox_release(&g.own[i]);
    }
    g.n_own = 0;
    for (int i = 0; i < 2; i++)
        cairn_runtime_destroy(&g.own_rt[i]);
    return 0;
}

static int new_runtime(const char *state, const char *cg_parent, struct cairn_runtime **rt)
{
    struct cairn_runtime_config cfg = {.state_root = state, .cgroup_parent = cg_parent};
    return cairn_runtime_new(rt, &cfg);
}

static int group_setup(void **state)
{
    (void)state;
    cairn_log_set_level(CAIRN_LOG_WARN);
    g.tmp = tu_tempdir("sandbox");
    snprintf(g.rootfs, sizeof(g.rootfs), "%s/rootfs", g.tmp);
    snprintf(g.state, sizeof(g.state), "%s/state", g.tmp);
    snprintf(g.cg_parent, sizeof(g.cg_parent), "cairn-test-%d", (int)getpid());
    snprintf(g.cg_parent2, sizeof(g.cg_parent2), "cairn-test-%d-r", (int)getpid());
    if (geteuid() != 0) {
        g.skip = true;
        snprintf(g.reason, sizeof(g.reason), "needs root (overlay mounts, cgroups)");
    } else if (access("/bin/busybox", X_OK) != 0) {
        g.skip = true;
        snprintf(g.reason, sizeof(g.reason), "/bin/busybox missing (package busybox-static)");
    }
    if (!g.skip) {
        build_rootfs(g.rootfs);
        int rc = new_runtime(g.state, g.cg_parent, &g.rt);
        if (rc != CAIRN_OK)
            fail_msg("runtime: %s", cairn_err_msg());
        if (!cairn_runtime_usable(g.rt)) {
            g.skip = true;
            snprintf(g.reason, sizeof(g.reason), "runsc missing or not answering (%s)",
                     cairn_runtime_fingerprint(g.rt));
        }
    }
    if (!g.skip) {
        const char *lowers[] = {g.rootfs};
        struct cairn_sandbox_spec spec = {.lowers = lowers, .n_lowers = 1, .hostname = "sbx-test"};
        double t0 = now_s();
        int rc = cairn_sandbox_create(g.rt, &spec, &g.sb);
        if (rc != CAIRN_OK)
            fail_msg("create the shared sandbox: %s: %s", cairn_err_name(rc), cairn_err_msg());
        print_message("shared sandbox %s ready in %.3f s\n", cairn_sandbox_id(g.sb), now_s() - t0);
    }
    if (g.skip)
        print_message("SKIPPED: runsc not usable: %s\n", g.reason);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g.sb) {
        if (cairn_sandbox_terminate(g.sb) != CAIRN_OK)
            print_error("terminate shared sandbox: %s\n", cairn_err_msg());
        cairn_sandbox_release(&g.sb);
    }
    cairn_runtime_destroy(&g.rt);
    if (g.tmp) {
        force_cleanup(g.tmp);
        tu_rmrf(g.tmp);
        free(g.tmp);
    }
    return 0;
}

#define SKIP_IF_UNUSABLE()  \
    do {                    \
        if (g.skip)         \
            skip();         \
    } while (0)

/* ---- tests ---- */

static void test_fingerprint(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    const char *fp = cairn_runtime_fingerprint(g.rt);
    assert_true(!strncmp(fp, "runsc-", 6));
    const char *cpu = strstr(fp, "/cpu-");
    assert_non_null(cpu);
    assert_true(cpu - fp > 6);
    assert_int_equal(strlen(cpu + 5), 16);
    for (const char *p = cpu + 5; *p; p++)
        assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
    print_message("fingerprint %s\n", fp);
}

static void test_runsc_missing(void **state)
{
    (void)state;
    struct cairn_runtime *rt = NULL;
    struct cairn_runtime_config cfg = {.state_root = tu_path("%s/state-none", g.tmp), .runsc = "/no/such/runsc",
                                       .cgroup_parent = g.cg_parent};
    assert_int_equal(cairn_runtime_new(&rt, &cfg), CAIRN_OK);
    assert_string_equal(cairn_runtime_fingerprint(rt), "runsc-none");
    assert_false(cairn_runtime_usable(rt));
    struct cairn_sandbox_spec spec = {0};
    struct cairn_sandbox *sb = NULL;
    assert_int_equal(cairn_sandbox_create(rt, &spec, &sb), CAIRN_EUNAVAILABLE);
    struct cairn_reconcile_report rep;
    assert_int_equal(cairn_runtime_reconcile(rt, &rep), CAIRN_OK);
    assert_int_equal(rep.n_adopted + rep.n_cleaned, 0);
    cairn_reconcile_report_release(&rep);
    cairn_runtime_destroy(&rt);
    assert_null(rt);
    cairn_runtime_destroy(&rt);
}

static void test_exec_basic(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    struct capture c;
    assert_int_equal(sh(g.sb, &c, "echo out; echo err >&2; exit 7"), 7);
    assert_string_equal(c.out, "out\n");
    assert_string_equal(c.err, "err\n");
    assert_int_equal(sh(g.sb, &c, "true"), 0);
    assert_int_equal(sh(g.sb, &c, "kill -9 $$"), 137);
    assert_int_equal(sh(g.sb, &c, "hostname"), 0);
    assert_string_equal(c.out, "sbx-test\n");

    const char *env[] = {"FOO=bar baz", NULL};
    const char *argv[] = {"sh", "-c", "echo \"$FOO\"; pwd", NULL};
    struct cairn_exec_opts o = {.argv = argv, .env = env, .cwd = "/etc", .on_output = capture_fn, .arg = &c};
    memset(&c, 0, sizeof(c));
    int code = -1;
    assert_int_equal(cairn_sandbox_exec(g.sb, &o, &code), CAIRN_OK);
    assert_int_equal(code, 0);
    assert_string_equal(c.out, "bar baz\n/etc\n");

    /* words that runsc's own flag parser would like (notes §2): they reach the process untouched */
    const char *odd[] = {"echo", "-detach", "--pid-file=x", "-env", NULL};
    assert_int_equal(run(g.sb, &c, &code, 10000, odd), CAIRN_OK);
    assert_string_equal(c.out, "-detach --pid-file=x -env\n");

    /* a background process keeps the output pipes open after the exec'd shell exits: no hang */
    double t0 = now_s();
    assert_int_equal(sh(g.sb, &c, "sleep 3 & echo bg"), 0);
    assert_string_equal(c.out, "bg\n");
    assert_true(now_s() - t0 < 2.0);

    const char *missing[] = {"/no/such/binary", NULL};
    assert_int_equal(run(g.sb, &c, &code, 10000, missing), CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_err_msg(), cairn_sandbox_id(g.sb)));
    assert_int_equal(cairn_sandbox_live_execs(g.sb), 0);
}

static void test_exec_big_output(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    struct capture *c = malloc(sizeof(*c));
    assert_non_null(c);
    const char *argv[] = {"dd", "if=/dev/zero", "bs=1048576", "count=100", NULL};
    int code = -1;
    double t0 = now_s();
    assert_int_equal(run(g.sb, c, &code, 60000, argv), CAIRN_OK);
    double dt = now_s() - t0;
    assert_int_equal(code, 0);
    assert_int_equal(c->out_total, 100ull << 20);
    assert_non_null(strstr(c->err, "100+0 records out"));
    print_message("100 MiB through exec in %.2f s (%.0f MB/s)\n", dt, 100.0 / dt);
    free(c);
}

static void test_exec_stdin(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    size_t n = 1 << 20;
    uint8_t *data = malloc(n);
    assert_non_null(data);
    uint64_t seed = 42;
    tu_fill_random(&seed, data, n);
    /* md5 of what came back through cat, compared with md5sum inside the sandbox of the same input */
    struct capture *c = malloc(sizeof(*c));
    assert_non_null(c);
    const char *argv[] = {"md5sum", NULL};
    struct cairn_exec_opts o = {.argv = argv, .stdin_data = data, .stdin_len = n, .on_output = capture_fn, .arg = c};
    memset(c, 0, sizeof(*c));
    int code = -1;
    assert_int_equal(cairn_sandbox_exec(g.sb, &o, &code), CAIRN_OK);
    assert_int_equal(code, 0);
    char sum_in[64];
    snprintf(sum_in, sizeof(sum_in), "%.32s", c->out);
    char *host_file = strdup(tu_path("%s/stdin.bin", g.tmp));
    tu_write_file(host_file, data, n);
    assert_int_equal(tu_sh("md5sum '%s' | cut -c1-32 > '%s.sum'", host_file, host_file), 0);
    size_t sl = 0;
    char *host_sum = (char *)tu_read_file(tu_path("%s.sum", host_file), &sl);
    assert_non_null(host_sum);
    assert_memory_equal(host_sum, sum_in, 32);
    free(host_sum);

    /* cat echoes small input verbatim */
    const char *cat[] = {"cat", NULL};
    o.argv = cat;
    o.stdin_data = (const uint8_t *)"round trip\n";
    o.stdin_len = 11;
    memset(c, 0, sizeof(*c));
    assert_int_equal(cairn_sandbox_exec(g.sb, &o, &code), CAIRN_OK);
    assert_string_equal(c->out, "round trip\n");

    /* a process that never reads a large stdin: the writer must not die of SIGPIPE */
    const char *t[] = {"true", NULL};
    o.argv = t;
    o.stdin_data = data;
    o.stdin_len = n;
    assert_int_equal(cairn_sandbox_exec(g.sb, &o, &code), CAIRN_OK);
    assert_int_equal(code, 0);
    o.argv = cat;

    /* stdin from an fd */
    tu_write_file(host_file, "from an fd\n", 11);
    int fd = open(host_file, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    o.stdin_data = NULL;
    o.stdin_len = 0;
    o.stdin_from_fd = true;
    o.stdin_fd = fd;
    memset(c, 0, sizeof(*c));
    assert_int_equal(cairn_sandbox_exec(g.sb, &o, &code), CAIRN_OK);
    assert_string_equal(c->out, "from an fd\n");
    close(fd);
    free(host_file);
    free(data);
    free(c);
}

struct conc {
    int idx;
    int rc, code;
    struct capture c;
};

static void *conc_thread(void *arg)
{
    struct conc *t = arg;
    char script[64];
    snprintf(script, sizeof(script), "sleep 1; echo t%d", t->idx);
    const char *argv[] = {"sh", "-c", script, NULL};
    t->rc = run(g.sb, &t->c, &t->code, 20000, argv);
    return NULL;
}

static void test_exec_concurrent(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    struct conc *t = calloc(4, sizeof(*t));
    assert_non_null(t);
    pthread_t th[4];
    double t0 = now_s();
    for (int i = 0; i < 4; i++) {
        t[i].idx = i;
        assert_int_equal(pthread_create(&th[i], NULL, conc_thread, &t[i]), 0);
    }
    unsigned max_live = 0;
    for (int i = 0; i < 400; i++) {
        unsigned l = cairn_sandbox_live_execs(g.sb);
        if (l > max_live)
            max_live = l;
        if (max_live == 4)
            break;
        usleep(5000);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(t[i].rc, CAIRN_OK);
        assert_int_equal(t[i].code, 0);
        char want[16];
        snprintf(want, sizeof(want), "t%d\n", i);
        assert_string_equal(t[i].c.out, want);
    }
    print_message("4 concurrent 1 s execs in %.2f s, max live %u\n", dt, max_live);
    assert_int_equal(max_live, 4);
    assert_true(dt < 3.5);
    assert_int_equal(cairn_sandbox_live_execs(g.sb), 0);
    free(t);
}

static void test_exec_timeout(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    struct capture c;
    const char *argv[] = {"sleep", "30", NULL};
    int code = -1;
    double t0 = now_s();
    assert_int_equal(run(g.sb, &c, &code, 300, argv), CAIRN_ETIMEDOUT);
    double dt = now_s() - t0;
    assert_int_equal(code, 137);
    assert_non_null(strstr(cairn_err_msg(), "timed out"));
    assert_true(dt < 5.0);
    assert_int_equal(cairn_sandbox_live_execs(g.sb), 0);
    /* the process really is gone inside the sandbox */
    assert_int_equal(sh(g.sb, &c, "ps | grep -c '[s]leep 30'"), 1);
    assert_string_equal(c.out, "0\n");

    /* the callback asks to stop: the producer is killed and its code returned */
    const char *yes[] = {"yes", NULL};
    memset(&c, 0, sizeof(c));
    c.stop_after = 3;
    struct cairn_exec_opts o = {.argv = yes, .timeout_ms = 20000, .on_output = capture_fn, .arg = &c};
    t0 = now_s();
    assert_int_equal(cairn_sandbox_exec(g.sb, &o, &code), CAIRN_ECANCELED);
    assert_true(now_s() - t0 < 5.0);
    assert_int_equal(sh(g.sb, &c, "ps | grep -c '[y]es'"), 1);
    assert_string_equal(c.out, "0\n");
}

static void test_upper_diff(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    struct capture c;
    assert_int_equal(sh(g.sb, &c, "echo new > /newfile && rm /etc/keep && rm -rf /srv && mkdir /srv && "
                                  "echo y > /srv/y"),
                     0);
    const char *up = cairn_sandbox_upper_dir(g.sb);
    size_t n = 0;
    char *data = (char *)tu_read_file(tu_path("%s/newfile", up), &n);
    assert_non_null(data);
    assert_int_equal(n, 4);
    assert_memory_equal(data, "new\n", 4);
    free(data);
    struct stat st;
    assert_int_equal(lstat(tu_path("%s/etc/keep", up), &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    assert_int_equal(major(st.st_rdev), 0);
    assert_int_equal(minor(st.st_rdev), 0);
    char v[8] = {0};
    ssize_t xl = getxattr(tu_path("%s/srv", up), "trusted.overlay.opaque", v, sizeof(v) - 1);
    assert_int_equal(xl, 1);
    assert_int_equal(v[0], 'y');
    /* the image layer is untouched */
    assert_int_equal(lstat(tu_path("%s/etc/keep", g.rootfs), &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_string_equal(cairn_sandbox_merged_dir(g.sb), tu_path("%s/sandboxes/%s/merged",
                                                                cairn_runtime_state_root(g.rt), cairn_sandbox_id(g.sb)));
}

static off_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? st.st_size : -1;
}

static void test_pause_resume(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    struct capture c;
    assert_int_equal(sh(g.sb, &c, "while :; do echo x >> /counter; sleep 0.02; done </dev/null >/dev/null 2>&1 & "
                                  "echo $! > /bgpid"),
                     0);
    const char *counter = tu_path("%s/counter", cairn_sandbox_upper_dir(g.sb));
    char path[1024];
    snprintf(path, sizeof(path), "%s", counter);
    usleep(200000);
    assert_true(file_size(path) > 0);
    double t0 = now_s();
    assert_int_equal(cairn_sandbox_pause(g.sb), CAIRN_OK);
    double dt = now_s() - t0;
    assert_int_equal(cairn_sandbox_state(g.sb), CAIRN_SANDBOX_PAUSED);
    assert_int_equal(cairn_sandbox_pause(g.sb), CAIRN_OK); /* idempotent */
    off_t s1 = file_size(path);
    usleep(300000);
    assert_int_equal(file_size(path), s1);
    const char *t[] = {"true", NULL};
    int code;
    assert_int_equal(run(g.sb, &c, &code, 5000, t), CAIRN_EAGAIN);
    t0 = now_s();
    assert_int_equal(cairn_sandbox_resume(g.sb), CAIRN_OK);
    print_message("pause %.3f s, resume %.3f s\n", dt, now_s() - t0);
    assert_int_equal(cairn_sandbox_state(g.sb), CAIRN_SANDBOX_RUNNING);
    usleep(300000);
    assert_true(file_size(path) > s1);
    assert_int_equal(sh(g.sb, &c, "kill $(cat /bgpid)"), 0);
}

static void test_bind_mount(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    struct capture c;
    char *host = strdup(tu_path("%s/hostdir", g.tmp));
    assert_int_equal(mkdir(host, 0755), 0);
    tu_write_file(tu_path("%s/hello", host), "hello\n", 6);
    assert_int_equal(sh(g.sb, &c, "mkdir -p /mnt/data && echo under > /mnt/data/below && ls /mnt/data"), 0);

    struct cairn_mount_spec m = {.path = "/mnt/data", .kind = CAIRN_MOUNT_BIND, .source = host};
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &m), CAIRN_OK);
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &m), CAIRN_EEXIST);
    assert_int_equal(sh(g.sb, &c, "cat /mnt/data/hello && ls /mnt/data"), 0);
    assert_string_equal(c.out, "hello\nhello\n");
    assert_int_equal(sh(g.sb, &c, "echo from-sandbox > /mnt/data/written"), 0);
    size_t n = 0;
    char *w = (char *)tu_read_file(tu_path("%s/written", host), &n);
    assert_non_null(w);
    assert_memory_equal(w, "from-sandbox\n", 13);
    free(w);
    char **paths = NULL;
    size_t np = 0;
    assert_int_equal(cairn_sandbox_mounts(g.sb, &paths, &np), CAIRN_OK);
    assert_int_equal(np, 1);
    assert_string_equal(paths[0], "/mnt/data");
    cairn_free(paths[0]);
    cairn_free(paths);
    char *up = NULL;
    assert_int_equal(cairn_sandbox_mount_upper(g.sb, "/mnt/data", &up), CAIRN_EINVAL);

    assert_int_equal(cairn_sandbox_unmount(g.sb, "/mnt/data/"), CAIRN_OK);
    assert_int_equal(sh(g.sb, &c, "cat /mnt/data/below; ls /mnt/data"), 0);
    assert_string_equal(c.out, "under\nbelow\n");
    assert_int_equal(cairn_sandbox_unmount(g.sb, "/mnt/data"), CAIRN_ENOTFOUND);

    /* read-only bind into a directory that does not exist yet */
    struct cairn_mount_spec ro = {.path = "/ro/deep", .kind = CAIRN_MOUNT_BIND, .source = host, .readonly = true};
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &ro), CAIRN_OK);
    assert_int_equal(sh(g.sb, &c, "cat /ro/deep/hello"), 0);
    assert_int_not_equal(sh(g.sb, &c, "echo no > /ro/deep/nope"), 0);
    assert_int_equal(cairn_sandbox_unmount(g.sb, "/ro/deep"), CAIRN_OK);

    /* bad paths */
    struct cairn_mount_spec bad = {.path = "/", .kind = CAIRN_MOUNT_BIND, .source = host};
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &bad), CAIRN_EINVAL);
    bad.path = "/a/../etc";
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &bad), CAIRN_EINVAL);
    bad.path = "/proc/x";
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &bad), CAIRN_EINVAL);

    /* a symlink planted by the sandbox never leads the host out of the rootfs */
    assert_int_equal(sh(g.sb, &c, "ln -s /../../../../.. /evil"), 0);
    struct cairn_mount_spec ev = {.path = "/evil/cairn-escape-check", .kind = CAIRN_MOUNT_BIND, .source = host};
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &ev), CAIRN_OK);
    struct stat st;
    assert_int_not_equal(lstat("/cairn-escape-check", &st), 0);
    assert_int_equal(lstat(tu_path("%s/cairn-escape-check/hello", cairn_sandbox_merged_dir(g.sb)), &st), 0);
    assert_int_equal(sh(g.sb, &c, "cat /cairn-escape-check/hello"), 0);
    assert_int_equal(cairn_sandbox_unmount(g.sb, "/evil/cairn-escape-check"), CAIRN_OK);
    free(host);
}

static void test_overlay_mount(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    struct capture c;
    char *lower = strdup(tu_path("%s/imglayer", g.tmp));
    assert_int_equal(mkdir(lower, 0755), 0);
    tu_write_file(tu_path("%s/a", lower), "A\n", 2);
    tu_write_file(tu_path("%s/b", lower), "B\n", 2);
    const char *lowers[] = {lower};
    struct cairn_mount_spec m = {.path = "/opt/img", .kind = CAIRN_MOUNT_OVERLAY, .lowers = lowers, .n_lowers = 1};
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &m), CAIRN_OK);
    assert_int_equal(sh(g.sb, &c, "cat /opt/img/a && rm /opt/img/b && echo C > /opt/img/c && ls /opt/img"), 0);
    assert_string_equal(c.out, "A\na\nc\n");
    char *up = NULL;
    assert_int_equal(cairn_sandbox_mount_upper(g.sb, "/opt/img", &up), CAIRN_OK);
    struct stat st;
    assert_int_equal(lstat(tu_path("%s/c", up), &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(lstat(tu_path("%s/b", up), &st), 0);
    assert_true(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
    assert_int_equal(lstat(tu_path("%s/b", lower), &st), 0); /* the layer is untouched */

    /* no image: an empty writable dir */
    struct cairn_mount_spec e = {.path = "/scratch", .kind = CAIRN_MOUNT_OVERLAY};
    assert_int_equal(cairn_sandbox_mount_into(g.sb, &e), CAIRN_OK);
    assert_int_equal(sh(g.sb, &c, "ls -A /scratch | wc -l && echo s > /scratch/s"), 0);
    assert_string_equal(c.out, "0\n");
    char *up2 = NULL;
    assert_int_equal(cairn_sandbox_mount_upper(g.sb, "/scratch", &up2), CAIRN_OK);
    assert_int_equal(lstat(tu_path("%s/s", up2), &st), 0);

    assert_int_equal(cairn_sandbox_unmount(g.sb, "/opt/img"), CAIRN_OK);
    assert_int_equal(cairn_sandbox_unmount(g.sb, "/scratch"), CAIRN_OK);
    assert_int_equal(sh(g.sb, &c, "ls -A /opt/img /scratch | wc -l"), 0);
    assert_string_equal(c.out, "3\n"); /* the two headers and the blank line between them: both empty */
    cairn_free(up);
    cairn_free(up2);
    free(lower);
}

static void test_create_errors(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    const char *lowers[] = {g.rootfs};
    struct cairn_sandbox *sb = NULL;
    struct cairn_sandbox_spec spec = {.lowers = lowers, .n_lowers = 1};

    /* the id of a running sandbox: refused before runsc sees it (run would destroy that state) */
    snprintf(spec.id, sizeof(spec.id), "%s", cairn_sandbox_id(g.sb));
    assert_int_equal(cairn_sandbox_create(g.rt, &spec, &sb), CAIRN_EEXIST);
    struct capture c;
    assert_int_equal(sh(g.sb, &c, "echo still"), 0);

    snprintf(spec.id, sizeof(spec.id), "%s", "abc");
    assert_int_equal(cairn_sandbox_create(g.rt, &spec, &sb), CAIRN_EINVAL);
    spec.id[0] = '\0';
    spec.network = true;
    assert_int_equal(cairn_sandbox_create(g.rt, &spec, &sb), CAIRN_EUNSUPPORTED);
    spec.network = false;
    const char *bad_layer[] = {"/no/such/layer"};
    spec.lowers = bad_layer;
    assert_int_equal(cairn_sandbox_create(g.rt, &spec, &sb), CAIRN_ENOTFOUND);
    spec.lowers = lowers;

    /* runsc fails to start the main process: a clear error, and nothing left behind */
    const char *argv[] = {"/no/such/init", NULL};
    spec.argv = argv;
    snprintf(spec.id, sizeof(spec.id), "%s", "0123456789abcdef0123456789abcdef");
    double t0 = now_s();
    int rc = cairn_sandbox_create(g.rt, &spec, &sb);
    print_message("failed create: %s (%.2f s): %s\n", cairn_err_name(rc), now_s() - t0, cairn_err_msg());
    assert_int_not_equal(rc, CAIRN_OK);
    assert_null(sb);
    assert_non_null(strstr(cairn_err_msg(), spec.id));
    assert_non_null(strstr(cairn_err_msg(), "run"));
    assert_gone(cairn_runtime_state_root(g.rt), g.cg_parent, spec.id, 0, 0);
    assert_int_equal(cairn_runtime_count(g.rt), 1);
}

static void test_terminate_leaves_nothing(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    const char *lowers[] = {g.rootfs};
    char *host = strdup(tu_path("%s/termdir", g.tmp));
    assert_int_equal(mkdir(host, 0755), 0);
    struct cairn_mount_spec mounts[] = {
        {.path = "/mnt/bind", .kind = CAIRN_MOUNT_BIND, .source = host},
        {.path = "/mnt/ovl", .kind = CAIRN_MOUNT_OVERLAY},
    };
    struct cairn_sandbox_spec spec = {.lowers = lowers, .n_lowers = 1, .mounts = mounts, .n_mounts = 2};
    struct cairn_sandbox *sb = NULL;
    double t0 = now_s();
    assert_int_equal(cairn_sandbox_create(g.rt, &spec, &sb), CAIRN_OK);
    double t_create = now_s() - t0;
    track(sb);
    struct capture c;
    assert_int_equal(sh(sb, &c, "echo in > /mnt/bind/f && echo o > /mnt/ovl/f && "
                                "sleep 1000 </dev/null >/dev/null 2>&1 &"),
                     0);
    int spid = 0, gpid = 0;
    cairn_sandbox_pids(sb, &spid, &gpid);
    assert_true(spid > 0 && gpid > 0);
    assert_true(proc_alive(spid) && proc_alive(gpid));
    char id[CAIRN_SANDBOX_ID_LEN + 1];
    snprintf(id, sizeof(id), "%s", cairn_sandbox_id(sb));
    assert_true(cgroup_exists(g.cg_parent, id));
    assert_true(runsc_state_exists(cairn_runtime_state_root(g.rt), id));
    assert_int_equal(cairn_sandbox_pause(sb), CAIRN_OK); /* terminate works from any state */
    t0 = now_s();
    assert_int_equal(cairn_sandbox_terminate(sb), CAIRN_OK);
    print_message("create %.2f s, terminate %.2f s\n", t_create, now_s() - t0);
    assert_int_equal(cairn_sandbox_state(sb), CAIRN_SANDBOX_TERMINATED);
    assert_gone(cairn_runtime_state_root(g.rt), g.cg_parent, id, spid, gpid);
    assert_int_equal(cairn_sandbox_terminate(sb), CAIRN_OK); /* idempotent */
    const char *t[] = {"true", NULL};
    int code;
    assert_int_equal(run(sb, &c, &code, 5000, t), CAIRN_EUNAVAILABLE);
    struct cairn_sandbox *again = NULL;
    assert_int_equal(cairn_runtime_sandbox_get(g.rt, id, &again), CAIRN_ENOTFOUND);
    /* the bind source on the host keeps what the sandbox wrote */
    struct stat st;
    assert_int_equal(stat(tu_path("%s/f", host), &st), 0);
    free(host);
}

static void test_reconcile(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    char *root = strdup(tu_path("%s/state-reconcile", g.tmp));
    const char *lowers[] = {g.rootfs};
    assert_int_equal(new_runtime(root, g.cg_parent2, &g.own_rt[0]), CAIRN_OK);
    struct cairn_sandbox_spec spec = {.lowers = lowers, .n_lowers = 1, .enable_snapshot = true};
    struct cairn_sandbox *x = NULL, *y = NULL;
    assert_int_equal(cairn_sandbox_create(g.own_rt[0], &spec, &x), CAIRN_OK);
    track(x);
    assert_int_equal(cairn_sandbox_create(g.own_rt[0], &spec, &y), CAIRN_OK);
    track(y);
    char *host = strdup(tu_path("%s/recdir", g.tmp));
    assert_int_equal(mkdir(host, 0755), 0);
    tu_write_file(tu_path("%s/r", host), "r\n", 2);
    struct cairn_mount_spec m = {.path = "/mnt/r", .kind = CAIRN_MOUNT_BIND, .source = host};
    assert_int_equal(cairn_sandbox_mount_into(x, &m), CAIRN_OK);
    char xid[CAIRN_SANDBOX_ID_LEN + 1], yid[CAIRN_SANDBOX_ID_LEN + 1];
    snprintf(xid, sizeof(xid), "%s", cairn_sandbox_id(x));
    snprintf(yid, sizeof(yid), "%s", cairn_sandbox_id(y));
    int yspid, ygpid;
    cairn_sandbox_pids(y, &yspid, &ygpid);

    /* y loses its runsc state behind our back (dirs and mounts stay: an orphan) */
    assert_int_equal(tu_sh("runsc --root='%s/runsc' delete -force %s >/dev/null 2>&1; true", root, yid), 0);
    /* a stray cgroup of ours and a dir that is not a sandbox */
    char stray_cg[256];
    snprintf(stray_cg, sizeof(stray_cg), "/sys/fs/cgroup/pids/%s/ffffffffffffffffffffffffffffffff", g.cg_parent2);
    assert_int_equal(mkdir(stray_cg, 0755), 0);
    assert_int_equal(mkdir(tu_path("%s/sandboxes/not-a-sandbox", root), 0755), 0);

    /* the worker "restarts": forget everything, then a new runtime on the same root */
    for (size_t i = 0; i < g.n_own; i++)
        cairn_sandbox_release(&g.own[i]);
    g.n_own = 0;
    cairn_runtime_destroy(&g.own_rt[0]);
    assert_int_equal(new_runtime(root, g.cg_parent2, &g.own_rt[1]), CAIRN_OK);
    struct cairn_reconcile_report rep;
    double t0 = now_s();
    assert_int_equal(cairn_runtime_reconcile(g.own_rt[1], &rep), CAIRN_OK);
    print_message("reconcile %.2f s: %zu adopted, %zu cleaned, %zu failed\n", now_s() - t0, rep.n_adopted,
                  rep.n_cleaned, rep.n_failed);
    assert_int_equal(rep.n_adopted, 1);
    assert_string_equal(rep.adopted[0], xid);
    assert_int_equal(rep.n_cleaned, 1);
    assert_string_equal(rep.cleaned[0], yid);
    assert_int_equal(rep.n_failed, 0);
    cairn_reconcile_report_release(&rep);
    assert_gone(root, g.cg_parent2, yid, yspid, ygpid);
    struct stat st;
    assert_int_not_equal(stat(stray_cg, &st), 0);
    assert_int_equal(stat(tu_path("%s/sandboxes/not-a-sandbox", root), &st), 0);

    struct cairn_sandbox *ax = NULL;
    assert_int_equal(cairn_runtime_sandbox_get(g.own_rt[1], xid, &ax), CAIRN_OK);
    track(ax);
    assert_true(cairn_sandbox_snapshot_enabled(ax));
    struct capture c;
    assert_int_equal(sh(ax, &c, "cat /mnt/r/r"), 0);
    assert_string_equal(c.out, "r\n");
    char **paths = NULL;
    size_t np = 0;
    assert_int_equal(cairn_sandbox_mounts(ax, &paths, &np), CAIRN_OK);
    assert_int_equal(np, 1);
    cairn_free(paths[0]);
    cairn_free(paths);
    assert_int_equal(cairn_sandbox_unmount(ax, "/mnt/r"), CAIRN_OK);

    /* a second reconcile changes nothing */
    assert_int_equal(cairn_runtime_reconcile(g.own_rt[1], &rep), CAIRN_OK);
    assert_int_equal(rep.n_adopted + rep.n_cleaned + rep.n_failed, 0);
    cairn_reconcile_report_release(&rep);
    int xspid, xgpid;
    cairn_sandbox_pids(ax, &xspid, &xgpid);
    assert_int_equal(cairn_sandbox_terminate(ax), CAIRN_OK);
    assert_gone(root, g.cg_parent2, xid, xspid, xgpid);
    free(host);
    free(root);
}

struct slow_exec {
    int rc, code;
    struct capture c;
};

static void *slow_exec_thread(void *arg)
{
    struct slow_exec *s = arg;
    const char *argv[] = {"sleep", "1", NULL};
    struct cairn_sandbox *sb = g.own[0];
    s->rc = run(sb, &s->c, &s->code, 20000, argv);
    return NULL;
}

static long read_counter(struct cairn_sandbox *sb)
{
    struct capture c;
    assert_int_equal(sh(sb, &c, "cat /cnt"), 0);
    return strtol(c.out, NULL, 10);
}

static void test_checkpoint_restore(void **state)
{
    (void)state;
    SKIP_IF_UNUSABLE();
    const char *lowers[] = {g.rootfs};
    struct cairn_sandbox_spec spec = {.lowers = lowers, .n_lowers = 1, .enable_snapshot = true};
    struct cairn_sandbox *sb = NULL;
    assert_int_equal(cairn_sandbox_create(g.rt, &spec, &sb), CAIRN_OK);
    track(sb);
    char *img = strdup(tu_path("%s/ckpt", g.tmp));
    assert_int_equal(mkdir(img, 0700), 0);

    /* not allowed: no snapshots enabled; an exec still running */
    assert_int_equal(cairn_sandbox_checkpoint(g.sb, img), CAIRN_EUNSUPPORTED);
    struct capture c;
    assert_int_equal(sh(sb, &c, "i=0; while :; do i=$((i+1)); echo $i > /cnt; sleep 0.05; done "
                                "</dev/null >/dev/null 2>&1 &"),
                     0);
    usleep(200000);
    struct slow_exec s;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_exec_thread, &s), 0);
    while (cairn_sandbox_live_execs(sb) == 0)
        usleep(1000);
    assert_int_equal(cairn_sandbox_checkpoint(sb, img), CAIRN_EBUSY);
    assert_int_equal(cairn_sandbox_state(sb), CAIRN_SANDBOX_RUNNING);
    pthread_join(th, NULL);
    assert_int_equal(s.rc, CAIRN_OK);
    assert_int_equal(s.code, 0);

    double t0 = now_s();
    assert_int_equal(cairn_sandbox_checkpoint(sb, img), CAIRN_OK);
    double t_ckpt = now_s() - t0;
    assert_int_equal(cairn_sandbox_state(sb), CAIRN_SANDBOX_CHECKPOINTED);
    struct stat st;
    assert_int_equal(stat(tu_path("%s/checkpoint.img", img), &st), 0);
    const char *t[] = {"true", NULL};
    int code;
    assert_int_equal(run(sb, &c, &code, 5000, t), CAIRN_EUNAVAILABLE);
    char *snap = strdup(tu_path("%s/snap-upper", g.tmp));
    assert_int_equal(tu_sh("cp -a '%s' '%s'", cairn_sandbox_upper_dir(sb), snap), 0);
    size_t n = 0;
    char *cnt = (char *)tu_read_file(tu_path("%s/cnt", snap), &n);
    assert_non_null(cnt);
    long before = strtol(cnt, NULL, 10);
    free(cnt);
    assert_int_equal(cairn_sandbox_terminate(sb), CAIRN_OK);

    /* restore into a new sandbox: the saved diff as the top layer over the image */
    const char *rlowers[] = {snap, g.rootfs};
    struct cairn_sandbox_spec rspec = {.lowers = rlowers, .n_lowers = 2, .enable_snapshot = true};
    struct cairn_sandbox *r = NULL;
    t0 = now_s();
    int rc = cairn_sandbox_restore(g.rt, &rspec, img, &r);
    if (rc != CAIRN_OK)
        fail_msg("restore: %s", cairn_err_msg());
    double t_restore = now_s() - t0;
    track(r);
    assert_string_not_equal(cairn_sandbox_id(r), cairn_sandbox_id(sb));
    long after = read_counter(r);
    assert_true(after >= before);
    usleep(300000);
    long later = read_counter(r);
    print_message("checkpoint %.2f s, restore %.2f s, counter %ld -> %ld -> %ld\n", t_ckpt, t_restore, before,
                  after, later);
    assert_true(later > after);
    assert_int_equal(cairn_sandbox_terminate(r), CAIRN_OK);
    free(snap);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_runsc_missing),
        cmocka_unit_test(test_exec_basic),
        cmocka_unit_test(test_exec_big_output),
        cmocka_unit_test(test_exec_stdin),
        cmocka_unit_test(test_exec_concurrent),
        cmocka_unit_test(test_exec_timeout),
        cmocka_unit_test(test_upper_diff),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_bind_mount),
        cmocka_unit_test(test_overlay_mount),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test_teardown(test_terminate_leaves_nothing, teardown_own),
        cmocka_unit_test_teardown(test_reconcile, teardown_own),
        cmocka_unit_test_teardown(test_checkpoint_restore, teardown_own),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
