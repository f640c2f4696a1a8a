/*
 * test_worker_images.c: the worker side of images, sandboxes and filesystem snapshots
 * (docs/internals/sandboxes.md) with real runsc sandboxes, real RocksDB stores and real CURVE sockets,
 * against a scripted coordinator played by the test (as in test_worker_cluster.c), which also serves
 * upload.read from memory and records job.output.
 *
 * Workers: w1 and w2 run in threads of this process; w3 is the real cairn-worker binary (a child process:
 * it is a child subreaper with a reaper thread, and it can be stopped and restarted). Pinned down:
 * - image-import of a busybox tarball made here: upload.read in pieces (the coordinator answers short
 *   pieces, so the reader's re-requests run too), the layer reference equals a local import of the same
 *   tarball, every chunk on its R = 2 workers; a damaged upload is ECORRUPT, a missing one the
 *   coordinator's ENOTFOUND;
 * - sandbox-create on w3, which joined after the import and holds none of the chunks: everything is
 *   fetched from the peers, once (two concurrent creates from the same image: one build);
 * - sandbox-exec: hostname/env/stdin, job.output in order with at most 8 unacknowledged, frames growing
 *   while the window is full, output streamed while produced, stderr, exit codes, timeout = exit 137,
 *   unknown runtime ids ENOTFOUND;
 * - snapshot-fs capturing adds, modifications, deletions (whiteouts), renames, chmod, symlinks, hardlinks,
 *   empty dirs and an opaque dir; a sandbox on another worker from [snapshot, base] sees exactly the same
 *   filesystem (a full listing with modes, owners, sizes, link counts, targets and checksums); flatten
 *   gives a single layer with the same view; a full worker refuses with EBUSY;
 * - a restarted w3 re-adopts its live sandboxes and reports them at registration; its terminate leaves no
 *   zombie behind;
 * - terminate leaves nothing: no mounts under the runtime's state root, no runsc state, no sandbox dirs,
 *   no cgroups (nor the runtimes' parent cgroups); heartbeats report 0 sandboxes.
 * Needs root, runsc and /bin/busybox (busybox-static); otherwise every test is skipped with a loud line.
 */
#include "test_worker_fixture.h"

#include "cairn/alloc.h"
#include "cairn/archive.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/proto.h"
#include "cairn/store.h"
#include "cairn/transport.h"
#include "cairn/tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PIECE_CAP 300000 /* the scripted coordinator answers upload.read with at most this much */

#define IMG_BASE "im-00000000000000b1"
#define IMG_SNAP "im-00000000000000b2"
#define IMG_FLAT "im-00000000000000b3"
#define RID1 "11111111111111111111111111111111"
#define RID2 "22222222222222222222222222222222"
#define RID3 "33333333333333333333333333333333"
#define RID4 "44444444444444444444444444444444"
#define RID5 "55555555555555555555555555555555"
#define RID6 "66666666666666666666666666666666"
#define RID_NONE "99999999999999999999999999999999"

static const char *const ALL_RIDS[] = {RID1, RID2, RID3, RID4, RID5, RID6};

/* what the tests hand on to each other */
static struct {
    struct cairn_msg *snap_res, *flat_res;
    char listing[1 << 16];
} g;

static struct cairn_msg *g_import_res;

static void create(const char *worker, const char *job, const char *rid, const char *hostname, const char *top,
                   struct cairn_msg *top_res)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-create", &p);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "hostname", hostname);
    struct cairn_mval *env = cairn_mval_put_map(m, p, "env");
    cairn_mval_put_str(m, env, "FOO", "bar");
    cairn_mval_put_bool(m, p, "enable_snapshot", false);
    struct cairn_mval *layers = cairn_mval_put_array(m, p, "layers");
    if (top)
        push_layer(m, layers, top, top_res);
    if (!top || strcmp(top, IMG_FLAT) != 0)
        push_layer(m, layers, IMG_BASE, g_import_res);
    dispatch(worker, m);
}

static int g_job_seq;

/* sh -c script in a sandbox through a sandbox-exec job; returns the exit code, output in the job's out. */
static int sh_job(const char *worker, const char *rid, const char *script, struct out **o)
{
    char job[32];
    snprintf(job, sizeof(job), "jb-sh-%d", ++g_job_seq);
    return sh_job_as(worker, job, rid, script, o);
}

/* A canonical listing of the sandbox's filesystem (no mtimes, no inode numbers). */
static const char LISTING[] =
    "cd / && find . -xdev \\( -path ./proc -o -path ./dev -o -path ./sys -o -path ./tmp \\) -prune -o -print "
    "| sort | while IFS= read -r f; do "
    "if [ -L \"$f\" ]; then echo \"$f L $(readlink \"$f\")\"; "
    "elif [ -d \"$f\" ]; then echo \"$f D $(stat -c '%a %u %g' \"$f\")\"; "
    "elif [ -f \"$f\" ]; then echo \"$f F $(stat -c '%a %u %g %s %h' \"$f\") $(md5sum < \"$f\" | cut -c1-32)\"; "
    "else echo \"$f O $(stat -c '%a %F' \"$f\")\"; fi; done";

static void listing(const char *worker, const char *rid, char *buf, size_t cap)
{
    struct out *o = NULL;
    int code = sh_job(worker, rid, LISTING, &o);
    if (code != 0)
        fail_msg("listing in %s exited %d: %s", rid, code, out_str(o, 1));
    snprintf(buf, cap, "%s", out_str(o, 0));
}

/* ---- host-side checks ---- */

/* Does any file under dir mention id (runsc's state and lock files are named after the container)? */
static bool runsc_state_has(const char *dir, const char *id)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d)))
        found |= strstr(e->d_name, id) != NULL;
    closedir(d);
    return found;
}

/* Any cgroup dir named id anywhere two levels below /sys/fs/cgroup/<controller>/? */
static bool cgroup_exists(const char *id)
{
    return tu_sh("ls -d /sys/fs/cgroup/*/*/%s /sys/fs/cgroup/*/%s >/dev/null 2>&1", id, id) == 0;
}

/* Zombie children of pid (its threads' children lists). */
static int zombies_of(pid_t pid)
{
    int z = 0;
    DIR *d = opendir(tu_path("/proc/%d/task", (int)pid));
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        FILE *f = fopen(tu_path("/proc/%d/task/%s/children", (int)pid, e->d_name), "re");
        long c;
        while (f && fscanf(f, "%ld", &c) == 1) {
            char stat[512] = "";
            FILE *s = fopen(tu_path("/proc/%ld/stat", c), "re");
            if (s && fgets(stat, sizeof(stat), s)) {
                char *rp = strrchr(stat, ')');
                if (rp && rp[1] == ' ' && rp[2] == 'Z')
                    z++;
            }
            if (s)
                fclose(s);
        }
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return z;
}

/* ---- setup ---- */

static void node_start_binary(struct node *n)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen(tu_path("%s/%s.log", wf.dir, n->id), "a", stderr))
            _exit(127);
        execl(CAIRN_WORKER_BIN, "cairn-worker", "--config", tu_path("%s/%s.conf", wf.dir, n->id), (char *)NULL);
        _exit(127);
    }
    n->pid = pid;
}

static int node_stop_binary(struct node *n)
{
    if (n->pid <= 0)
        return 0;
    kill(n->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 1500; i++) {
        /* keep answering it meanwhile: a worker that stops waits for its results to be acknowledged */
        fc_pump(10);
        if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
            n->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
    }
    kill(n->pid, SIGKILL);
    waitpid(n->pid, &st, 0);
    n->pid = 0;
    fail_msg("cairn-worker %s did not stop within 15 s of SIGTERM", n->id);
    return -1;
}

static void group_setup_nodes(void)
{
    node_start_thread(&wf.nodes[0]);
    node_start_thread(&wf.nodes[1]);
    WAIT_FOR(wf.fc.w[0].heartbeats > 0 && wf.fc.w[1].heartbeats > 0, 15000);
}

static int group_setup(void **state)
{
    (void)state;
    static const char *const applets[] = {"sh",   "echo",     "cat", "ls",   "sleep",  "true", "rm",   "mkdir", "mv",
                                          "chmod", "ln",      "seq", "md5sum", "find", "sort", "stat", "readlink",
                                          "cut",  "hostname", "dd",  "test", "printf", "wc",   "grep", "ps",    NULL};
    const struct wf_opts o = {
        .tag = "worker-images",
        .log_level = CAIRN_LOG_WARN,
        .master_seed = 11,
        .applets = applets,
        .srv_old = true,
        .caps = {4, 1, 4},
        .piece_cap = PIECE_CAP,
        .record_refs = false, /* job.refs only acknowledged */
        .stop_pump_ms = 0,
        .rids = ALL_RIDS,
        .nrids = CAIRN_ARRAY_LEN(ALL_RIDS),
    };
    if (wf_setup(&o))
        group_setup_nodes();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int ret = 0;
    if (!wf.skip) {
        int st = node_stop_binary(&wf.nodes[2]);
        if (st != 0) { /* e.g. a sanitizer report */
            print_error("cairn-worker w3 exited %d; the end of its log:\n", st);
            tu_sh("tail -40 '%s/w3.log' >&2", wf.dir);
            ret = -1;
        }
    }
    if (wf_stop() != 0)
        ret = -1;
    wf_release();
    return ret;
}

/* ---- tests ---- */


static void test_import(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    add_upload("jb-imp1", wf.tar, wf.tar_len);
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-imp1", "image-import", &p);
    cairn_mval_put_str(m, p, "image", IMG_BASE);
    dispatch("w1", m);
    struct cairn_msg *r = expect_ok("jb-imp1", 30000);
    g_import_res = r;
    /* pieces of at most PIECE_CAP: the reader asked again from where each short answer stopped */
    assert_true(wf.fc.ups[0].reads >= wf.tar_len / PIECE_CAP);
    /* the same layer reference as a local import of the same tarball */
    assert_int_equal(result_u64(r, "manifest_len"), wf.base.manifest_len);
    const uint8_t *man = NULL;
    size_t ml = 0;
    assert_int_equal(cairn_mval_bin(result_field(r, "manifest"), &man, &ml), CAIRN_OK);
    assert_int_equal(ml, (size_t)wf.base.n_chunks * 36);
    for (uint32_t i = 0; i < wf.base.n_chunks; i++) {
        assert_memory_equal(man + i * 36, wf.base.chunks[i].id, CAIRN_CHUNK_ID_BYTES);
        assert_int_equal(cairn_load_le32(man + i * 36 + 32), wf.base.chunks[i].len);
    }
    assert_int_equal(result_u64(r, "files"), 4); /* busybox, passwd, motd, srv/old/file */
    assert_true(result_u64(r, "size") > 1000000);
    assert_true(result_u64(r, "stored") > 0);
    const char *img = NULL;
    size_t il = 0;
    assert_int_equal(cairn_mval_str(result_field(r, "image"), &img, &il), CAIRN_OK);
    assert_string_equal(img, IMG_BASE);

    /* R = 2 with two live workers: both hold every chunk */
    struct cairn_domain *d = NULL;
    assert_int_equal(cairn_domain_new_managed(&d, wf.master, "default"), CAIRN_OK);
    char dom[33];
    cairn_hex_encode(dom, cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES);
    cairn_domain_destroy(&d);
    assert_true(wf.n_base_ids > 10 && wf.n_base_ids <= 256);
    for (int w = 0; w < 2; w++) {
        char job[32];
        snprintf(job, sizeof(job), "jb-has-%d", w);
        m = job_new(job, "chunk-has", &p);
        cairn_mval_put_str(m, p, "domain", dom);
        struct cairn_mval *arr = cairn_mval_put_array(m, p, "ids");
        for (size_t i = 0; i < wf.n_base_ids; i++) {
            char hex[65];
            cairn_hex_encode(hex, wf.base_ids[i], CAIRN_CHUNK_ID_BYTES);
            cairn_mval_push_str(m, arr, hex);
        }
        dispatch(w == 0 ? "w1" : "w2", m);
        struct cairn_msg *hr = expect_ok(job, 5000);
        const struct cairn_mval *held = result_field(hr, "held");
        for (size_t i = 0; i < wf.n_base_ids; i++) {
            bool b = false;
            assert_int_equal(cairn_mval_bool(cairn_mval_at(held, i), &b), CAIRN_OK);
            assert_true(b);
        }
    }

    /* a damaged upload: ECORRUPT; none at all: the coordinator's ENOTFOUND */
    static uint8_t junk[100000];
    uint64_t seed = 3;
    tu_fill_random(&seed, junk, sizeof(junk));
    add_upload("jb-imp-bad", junk, sizeof(junk));
    m = job_new("jb-imp-bad", "image-import", &p);
    cairn_mval_put_str(m, p, "image", "im-00000000000000e1");
    dispatch("w2", m);
    r = result_of("jb-imp-bad", 10000);
    assert_int_equal(err_code(r), CAIRN_ECORRUPT);
    m = job_new("jb-imp-none", "image-import", &p);
    cairn_mval_put_str(m, p, "image", "im-00000000000000e2");
    dispatch("w2", m);
    r = result_of("jb-imp-none", 10000);
    assert_int_equal(err_code(r), CAIRN_ENOTFOUND);
    assert_non_null(strstr(err_msg(r), "no upload for that job"));
}

static void test_create_fetches(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    /* w3 joins now: it holds none of the image's chunks */
    node_start_binary(&wf.nodes[2]);
    WAIT_FOR(wf.fc.w[2].heartbeats > 0, 15000);
    assert_int_equal(wf.fc.w[2].n_reg_sandboxes, 0);
    fc_pump(300); /* the membership with three workers reaches everyone */
    create("w3", "jb-c1", RID1, "box1", NULL, NULL);
    create("w3", "jb-c2", RID2, "box2", NULL, NULL); /* concurrently: one layer build */
    struct cairn_msg *r1 = expect_ok("jb-c1", 60000), *r2 = expect_ok("jb-c2", 60000);
    uint64_t f1 = result_u64(r1, "fetched_chunks"), f2 = result_u64(r2, "fetched_chunks");
    print_message("create: %llu + %llu chunks fetched (%zu in the image), %llu / %llu ms\n",
                  (unsigned long long)f1, (unsigned long long)f2, wf.n_base_ids,
                  (unsigned long long)result_u64(r1, "create_ms"), (unsigned long long)result_u64(r2, "create_ms"));
    assert_int_equal(f1 + f2, wf.n_base_ids);
    assert_true(f1 == 0 || f2 == 0);
    assert_true(result_u64(r1, "fetched_bytes") + result_u64(r2, "fetched_bytes") > 500000);
    /* a resent dispatch for a sandbox that runs already: no second sandbox */
    create("w3", "jb-c1-again", RID1, "box1", NULL, NULL);
    assert_int_equal(result_u64(expect_ok("jb-c1-again", 10000), "create_ms"), 0);
    WAIT_FOR(wf.fc.w[2].sandboxes == 2, 3000);
}

static void test_exec(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    struct out *o = NULL;
    assert_int_equal(sh_job("w3", RID1, "hostname; echo $FOO; pwd", &o), 0);
    assert_string_equal(out_str(o, 0), "box1\nbar\n/\n");

    /* stdin */
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-stdin", "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", RID2);
    struct cairn_mval *argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "cat");
    cairn_mval_put_bin(m, p, "stdin", "hello stdin", 11);
    struct cairn_mval *env = cairn_mval_put_array(m, p, "env");
    cairn_mval_push_str(m, env, "X=1");
    dispatch("w3", m);
    expect_ok("jb-stdin", 20000);
    o = out_of("jb-stdin", false);
    assert_non_null(o);
    assert_int_equal(o->data[0].len, 11);
    assert_memory_equal(o->data[0].data, "hello stdin", 11);

    /* the window: the coordinator holds its acknowledgements; the worker stops at 8 */
    wf.fc.hold_outputs = true;
    m = job_new("jb-seq", "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", RID1);
    argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "seq");
    cairn_mval_push_str(m, argv, "1");
    cairn_mval_push_str(m, argv, "200000");
    dispatch("w3", m);
    WAIT_FOR(held_for("jb-seq") >= 8, 15000);
    fc_pump(700);
    assert_int_equal(held_for("jb-seq"), 8);
    assert_null(res_of("jb-seq"));
    wf.fc.hold_outputs = false;
    release_outputs();
    struct cairn_msg *r = expect_ok("jb-seq", 30000);
    int64_t code = -1;
    assert_int_equal(cairn_mval_i64(result_field(r, "exit_code"), &code), CAIRN_OK);
    assert_int_equal(code, 0);
    o = out_of("jb-seq", false);
    assert_false(o->bad_order);
    assert_int_equal(o->unacked_max, 8);
    assert_true(o->frame_max > (64u << 10)); /* grew while the window was full */
    assert_true(o->frame_max <= (1u << 20));
    struct cairn_buf want;
    cairn_buf_init(&want, 4u << 20);
    for (int i = 1; i <= 200000; i++) {
        char line[16];
        int n = snprintf(line, sizeof(line), "%d\n", i);
        assert_int_equal(cairn_buf_append(&want, line, (size_t)n), CAIRN_OK);
    }
    assert_int_equal(o->data[0].len, want.len);
    assert_memory_equal(o->data[0].data, want.data, want.len);
    cairn_buf_release(&want);
    print_message("exec: 1.3 MB of seq output in %llu frames\n", (unsigned long long)o->frames);

    /* streamed while produced; stderr; the exit code */
    m = job_new("jb-slow", "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", RID1);
    argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "sh");
    cairn_mval_push_str(m, argv, "-c");
    cairn_mval_push_str(m, argv, "echo first; sleep 1; echo second >&2; exit 3");
    dispatch("w3", m);
    r = expect_ok("jb-slow", 20000);
    assert_int_equal(cairn_mval_i64(result_field(r, "exit_code"), &code), CAIRN_OK);
    assert_int_equal(code, 3);
    o = out_of("jb-slow", false);
    assert_int_equal(o->data[0].len, 6);
    assert_memory_equal(o->data[0].data, "first\n", 6);
    assert_int_equal(o->data[1].len, 7);
    assert_memory_equal(o->data[1].data, "second\n", 7);
    assert_true(res_of("jb-slow")->at - o->first_at[0] > 0.7);
    assert_true(o->first_at[1] - o->first_at[0] > 0.7);

    /* a timeout kills the command: exit code 137, and the job succeeds */
    double t0 = now_s();
    m = job_new("jb-timeout", "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", RID2);
    argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "sleep");
    cairn_mval_push_str(m, argv, "30");
    cairn_mval_put_u64(m, p, "timeout_ms", 300);
    dispatch("w3", m);
    r = expect_ok("jb-timeout", 20000);
    assert_int_equal(cairn_mval_i64(result_field(r, "exit_code"), &code), CAIRN_OK);
    assert_int_equal(code, 137);
    assert_true(now_s() - t0 < 10);

    /* the coordinator refuses the output (its client went away): the command is killed, the job fails */
    snprintf(wf.fc.refuse_outputs, sizeof(wf.fc.refuse_outputs), "jb-gone");
    t0 = now_s();
    m = job_new("jb-gone", "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", RID2);
    argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "sh");
    cairn_mval_push_str(m, argv, "-c");
    cairn_mval_push_str(m, argv, "echo start; exec sleep 41");
    dispatch("w3", m);
    r = result_of("jb-gone", 20000);
    assert_int_equal(err_code(r), CAIRN_ENOTFOUND);
    assert_non_null(strstr(err_msg(r), "went away"));
    assert_true(now_s() - t0 < 10);
    assert_int_equal(sh_job("w3", RID2, "ps | grep -c 'sleep 4[1]' || true", &o), 0);
    assert_string_equal(out_str(o, 0), "0\n");

    /* unknown runtime ids: ENOTFOUND naming the sandbox */
    const char *kinds[] = {"sandbox-exec", "snapshot-fs", "sandbox-terminate"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(kinds); i++) {
        char job[32];
        snprintf(job, sizeof(job), "jb-nf-%zu", i);
        m = job_new(job, kinds[i], &p);
        cairn_mval_put_str(m, p, "runtime_id", RID_NONE);
        cairn_mval_put_str(m, p, "image", "im-00000000000000e3");
        argv = cairn_mval_put_array(m, p, "argv");
        cairn_mval_push_str(m, argv, "true");
        dispatch("w3", m);
        r = result_of(job, 10000);
        assert_int_equal(err_code(r), CAIRN_ENOTFOUND);
        assert_non_null(strstr(err_msg(r), RID_NONE));
    }
}

static const char CHANGES[] =
    "set -e; echo new > /etc/newfile; echo changed >> /etc/passwd; rm /bin/ls; mv /bin/cat /bin/cat2; "
    "mv /etc/motd /etc/motd2; chmod 751 /bin/busybox; chmod 640 /etc/newfile; ln -s /etc/newfile /etc/link; "
    "ln /etc/newfile /etc/hard; mkdir -p /data/empty; rm -rf /srv/old; mkdir /srv/old; echo fresh > /srv/old/new; "
    "mkdir /data/full; dd if=/dev/urandom of=/data/full/blob bs=1024 count=700 2>/dev/null";

static void check_snapshot_view(const char *worker, const char *rid)
{
    char *l = malloc(sizeof(g.listing));
    listing(worker, rid, l, sizeof(g.listing));
    if (strcmp(l, g.listing) != 0) {
        print_error("--- source\n%s--- %s\n%s", g.listing, rid, l);
        fail_msg("the filesystem of %s differs from the snapshotted one", rid);
    }
    free(l);
    struct out *o = NULL;
    assert_int_equal(sh_job(worker, rid,
                            "test ! -e /bin/ls && test ! -e /bin/cat && test ! -e /etc/motd && busybox cat /etc/motd2 && "
                            "echo $(cd /srv/old && echo *) && "
                            "[ $(stat -c %i /etc/newfile) = $(stat -c %i /etc/hard) ] && echo hardlinked",
                            &o),
                     0);
    assert_string_equal(out_str(o, 0), "hello\nnew\nhardlinked\n");
}

static void test_snapshot_fs(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    struct out *o = NULL;
    int code = sh_job("w3", RID1, CHANGES, &o);
    if (code != 0)
        fail_msg("changes exited %d: %s", code, out_str(o, 1));
    listing("w3", RID1, g.listing, sizeof(g.listing));
    if (getenv("CAIRN_TEST_LISTING"))
        print_message("%s", g.listing);
    assert_non_null(strstr(g.listing, "./etc/hard F 640 0 0 4 2 "));
    assert_non_null(strstr(g.listing, "./etc/link L /etc/newfile\n"));
    assert_non_null(strstr(g.listing, "./bin/busybox F 751 "));
    assert_non_null(strstr(g.listing, "./data/empty D 755 0 0\n"));
    assert_null(strstr(g.listing, "./bin/ls "));

    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-snap", "snapshot-fs", &p);
    cairn_mval_put_str(m, p, "runtime_id", RID1);
    cairn_mval_put_str(m, p, "image", IMG_SNAP);
    cairn_mval_put_bool(m, p, "flatten", false);
    dispatch("w3", m);
    g.snap_res = expect_ok("jb-snap", 60000);
    uint64_t pause_ms = result_u64(g.snap_res, "pause_ms");
    print_message("snapshot-fs: paused %llu ms, %llu files, %llu bytes, %llu stored\n", (unsigned long long)pause_ms,
                  (unsigned long long)result_u64(g.snap_res, "files"), (unsigned long long)result_u64(g.snap_res, "size"),
                  (unsigned long long)result_u64(g.snap_res, "stored"));
    assert_true(pause_ms < 10000);
    assert_true(result_u64(g.snap_res, "size") > 700 * 1024);
    /* the sandbox runs on */
    assert_int_equal(sh_job("w3", RID1, "echo alive", &o), 0);
    assert_string_equal(out_str(o, 0), "alive\n");

    /* a sandbox on another worker from [snapshot, base] sees exactly that filesystem */
    create("w1", "jb-c3", RID3, "box3", IMG_SNAP, g.snap_res);
    struct cairn_msg *r = expect_ok("jb-c3", 60000);
    print_message("create from the snapshot on w1: %llu chunks fetched\n",
                  (unsigned long long)result_u64(r, "fetched_chunks"));
    check_snapshot_view("w1", RID3);
}

static void test_flatten(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-flat", "snapshot-fs", &p);
    cairn_mval_put_str(m, p, "runtime_id", RID1);
    cairn_mval_put_str(m, p, "image", IMG_FLAT);
    cairn_mval_put_bool(m, p, "flatten", true);
    dispatch("w3", m);
    g.flat_res = expect_ok("jb-flat", 60000);
    assert_true(result_u64(g.flat_res, "size") >= result_u64(g.snap_res, "size"));
    assert_true(result_u64(g.flat_res, "manifest_len") > result_u64(g.snap_res, "manifest_len")); /* every entry */
    /* a single layer gives the same view */
    create("w2", "jb-c4", RID4, "box4", IMG_FLAT, g.flat_res);
    expect_ok("jb-c4", 60000);
    check_snapshot_view("w2", RID4);
    /* w2 has capacity 1: full */
    create("w2", "jb-c6", RID6, "box6", NULL, NULL);
    struct cairn_msg *r = result_of("jb-c6", 10000);
    assert_int_equal(err_code(r), CAIRN_EBUSY);
    assert_non_null(strstr(err_msg(r), "full"));
}

static void terminate(const char *worker, const char *job, const char *rid)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-terminate", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    dispatch(worker, m);
    expect_ok(job, 60000);
}

static void test_restart_adopts(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    struct node *w3 = &wf.nodes[2];
    int regs = wf.fc.w[2].registrations;
    assert_int_equal(node_stop_binary(w3), 0);
    node_start_binary(w3);
    WAIT_FOR(wf.fc.w[2].registrations > regs, 15000);
    assert_int_equal(wf.fc.w[2].n_reg_sandboxes, 2);
    assert_string_equal(wf.fc.w[2].reg_sandboxes[0], RID1);
    assert_string_equal(wf.fc.w[2].reg_sandboxes[1], RID2);
    WAIT_FOR(wf.fc.w[2].heartbeats > 0 && wf.fc.w[2].sandboxes == 2, 5000);
    size_t loglen = 0;
    char *log = (char *)tu_read_file(tu_path("%s/w3.log", wf.dir), &loglen);
    assert_non_null(log);
    log = realloc(log, loglen + 1);
    log[loglen] = '\0';
    if (!strstr(log, "runtime: 2 sandboxes adopted: " RID1 ", " RID2))
        fail_msg("w3's log does not say that it adopted its sandboxes");
    free(log);
    struct out *o = NULL;
    assert_int_equal(sh_job("w3", RID1, "busybox cat /etc/newfile", &o), 0);
    assert_string_equal(out_str(o, 0), "new\n");

    /* a sandbox of this process: its runsc processes are this worker's children, reaped at once */
    create("w3", "jb-c5", RID5, "box5", NULL, NULL);
    expect_ok("jb-c5", 60000);
    double t0 = now_s();
    terminate("w3", "jb-t5", RID5);
    double took = now_s() - t0;
    fc_pump(200);
    print_message("terminate on the subreaper worker: %.2f s, %d zombies\n", took, zombies_of(w3->pid));
    assert_int_equal(zombies_of(w3->pid), 0);
}

static void test_terminate_leaves_nothing(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    terminate("w3", "jb-t1", RID1);
    terminate("w3", "jb-t2", RID2);
    terminate("w1", "jb-t3", RID3);
    terminate("w2", "jb-t4", RID4);
    const char *rids[] = {RID1, RID2, RID3, RID4, RID5};
    for (size_t i = 0; i < WF_NW; i++) {
        char rootc[PATH_MAX];
        runtime_left_clean(&wf.nodes[i], rootc);
        for (size_t k = 0; k < CAIRN_ARRAY_LEN(rids); k++)
            assert_false(runsc_state_has(tu_path("%s/runsc", rootc), rids[k]));
    }
    for (size_t k = 0; k < CAIRN_ARRAY_LEN(rids); k++)
        assert_false(cgroup_exists(rids[k]));
    for (size_t i = 0; i < WF_NW; i++) { /* nor the runtimes' parent cgroups, once they have no sandbox */
        char parent[32];
        cg_parent_of(&wf.nodes[i], parent);
        assert_true(parent[0]); /* its runtime's state root exists */
        assert_int_not_equal(tu_sh("ls -d /sys/fs/cgroup/*/%s >/dev/null 2>&1", parent), 0);
    }
    for (size_t i = 0; i < WF_NW; i++) {
        int hb = wf.fc.w[i].heartbeats;
        WAIT_FOR(wf.fc.w[i].heartbeats > hb, 3000);
        assert_int_equal(wf.fc.w[i].sandboxes, 0);
    }
    /* the layers stay cached */
    assert_true(dir_entries(tu_path("%s/layers", wf.nodes[2].dir)) >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import),
        cmocka_unit_test(test_create_fetches),
        cmocka_unit_test(test_exec),
        cmocka_unit_test(test_snapshot_fs),
        cmocka_unit_test(test_flatten),
        cmocka_unit_test(test_restart_adopts),
        cmocka_unit_test(test_terminate_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
