/*
 * test_worker_memsnap.c: the worker side of memory snapshots (docs/internals/snapshots.md, issue 6):
 * the jobs sandbox-snapshot and sandbox-restore with real runsc sandboxes, real RocksDB stores and real
 * CURVE sockets, against a scripted coordinator played by the test (test_worker_fixture.h), which
 * here also records job.refs.
 *
 * Three workers run in threads of this process, R = 2; w3 joins only after the first snapshot, so it holds
 * none of its chunks. Pinned down:
 * - refusals, each leaving the sandbox running: no enable_snapshot (EUNSUPPORTED), an exec running (EBUSY);
 *   a step failing after the checkpoint (the replication) fails the job and still terminates the sandbox;
 * - an idle sandbox and one holding a counter, 200 MB of random data in its /tmp (tmpfs: sentry memory),
 *   a root diff (a new file, a deleted one) and an empty mount with a file: the snapshot terminates the
 *   sandbox, removes its tmp dir, reports every tree and its refs (seq 0, 1, ... all acknowledged);
 * - two clones restored at once on w3 from that snapshot: both run, the counter goes on from its snapshot
 *   value (in memory and on the restored process's stdout, which is the clone's O_APPEND runsc.log), the
 *   200 MB checksum is the same, the files and the mount are there and writable; every chunk crossed the
 *   network once (the two clones' fetched_chunks add up to the snapshot's and the image's unique chunks);
 * - a snapshot of a restored sandbox, restored on another worker, goes on counting (and keeps its
 *   parent's root diff and mount contents); a restore on the snapshot's own worker fetches nothing;
 * - a restarted worker re-adopts its restored sandboxes.
 * The printed times compare each snapshot job with its bare `runsc checkpoint` (checkpoint_ms).
 * Needs root, runsc and /bin/busybox (busybox-static); otherwise every test is skipped with a loud line.
 */
#include "test_worker_fixture.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/proto.h"
#include "cairn/transport.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PIECE_CAP 1000000

#define IMG_BASE "im-00000000000000c1"
#define SN1 "sn-00000000000000d1"
#define SN2 "sn-00000000000000d2"
#define SN_IDLE "sn-00000000000000d3"
#define RID_PLAIN "a1000000000000000000000000000001"
#define RID_IDLE "a1000000000000000000000000000002"
#define RID_SRC "a1000000000000000000000000000003"
#define RID_C1 "a1000000000000000000000000000004"
#define RID_C2 "a1000000000000000000000000000005"
#define RID_R2 "a1000000000000000000000000000006"
#define RID_L "a1000000000000000000000000000007"
#define RID_F "a1000000000000000000000000000008"

static const char *const ALL_RIDS[] = {RID_PLAIN, RID_IDLE, RID_SRC, RID_C1, RID_C2, RID_R2, RID_L, RID_F};

/* what the tests hand on to each other */
static struct {
    struct cairn_msg *import_res, *sn1_res, *sn2_res;
    char md5[40];       /* of the 200 MB */
    uint64_t count_sn1; /* the counter just before snapshot 1 */
    uint64_t count_sn2;
} g;

/* Copy a layer reference map (image, manifest_len, manifest) into map dst of m. */
static void copy_ref(struct cairn_msg *m, struct cairn_mval *dst, const struct cairn_mval *src)
{
    const char *img = NULL;
    size_t il = 0;
    const uint8_t *man = NULL;
    size_t ml = 0;
    uint64_t len = 0;
    assert_int_equal(cairn_mval_str(cairn_mval_get(src, "image"), &img, &il), CAIRN_OK);
    assert_int_equal(cairn_mval_u64(cairn_mval_get(src, "manifest_len"), &len), CAIRN_OK);
    assert_int_equal(cairn_mval_bin(cairn_mval_get(src, "manifest"), &man, &ml), CAIRN_OK);
    cairn_mval_put_str(m, dst, "image", img);
    cairn_mval_put_u64(m, dst, "manifest_len", len);
    cairn_mval_put_bin(m, dst, "manifest", man, ml);
}

static void push_base_layer(struct cairn_msg *m, struct cairn_mval *arr)
{
    struct cairn_mval *rec = cairn_mval_push_map(m, arr);
    const struct cairn_mval *map = NULL;
    size_t n = 0;
    assert_int_equal(cairn_msg_get_map(g.import_res, "result", &map, &n), CAIRN_OK);
    copy_ref(m, rec, map);
}

static const char COUNTER[] = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; "
                              "echo tick $i; sleep 0.1; done";

static void create(const char *worker, const char *job, const char *rid, bool snapshots, bool counter)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-create", &p);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_bool(m, p, "enable_snapshot", snapshots);
    if (counter) {
        struct cairn_mval *cmd = cairn_mval_put_array(m, p, "cmd");
        cairn_mval_push_str(m, cmd, "sh");
        cairn_mval_push_str(m, cmd, "-c");
        cairn_mval_push_str(m, cmd, COUNTER);
    }
    push_base_layer(m, cairn_mval_put_array(m, p, "layers"));
    dispatch(worker, m);
}

static int g_job_seq;

static void sh_dispatch(const char *worker, const char *rid, const char *script, char job[32])
{
    snprintf(job, 32, "jb-sh-%d", ++g_job_seq);
    sh_dispatch_as(worker, job, rid, script, 60000);
}

/* sh -c script in a sandbox; returns its stdout (static buffer), fails the test on a non-zero exit. */
static const char *sh(const char *worker, const char *rid, const char *script)
{
    char job[32];
    sh_dispatch(worker, rid, script, job);
    struct cairn_msg *r = expect_ok(job, 70000);
    int64_t code = -1;
    assert_int_equal(cairn_mval_i64(result_field(r, "exit_code"), &code), CAIRN_OK);
    struct out *o = out_of(job, true);
    static char buf[4096];
    snprintf(buf, sizeof(buf), "%.*s", (int)CAIRN_MIN(o->data[0].len, sizeof(buf) - 1), (const char *)o->data[0].data);
    if (code != 0)
        fail_msg("'%s' in %s exited %d: %.*s", script, rid, (int)code, (int)o->data[1].len,
                 (const char *)o->data[1].data);
    return buf;
}

static uint64_t counter(const char *worker, const char *rid)
{
    return strtoull(sh(worker, rid, "cat /tmp/count"), NULL, 10);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    static const char *const applets[] = {"sh",  "echo",   "cat", "ls",   "sleep", "true", "rm",  "mkdir", "mv",
                                          "seq", "md5sum", "dd",  "test", "wc",    "grep", "cut", "head",  NULL};
    const struct wf_opts o = {
        .tag = "worker-memsnap",
        .log_level = CAIRN_LOG_WARN,
        .master_seed = 17,
        .applets = applets,
        .srv_old = false,
        .caps = {4, 4, 4},
        .piece_cap = PIECE_CAP,
        .record_refs = true,
        .stop_pump_ms = 500,
        .rids = ALL_RIDS,
        .nrids = CAIRN_ARRAY_LEN(ALL_RIDS),
    };
    if (!wf_setup(&o))
        return 0;
    node_start_thread(&wf.nodes[0]);
    node_start_thread(&wf.nodes[1]);
    WAIT_FOR(wf.fc.w[0].heartbeats > 0 && wf.fc.w[1].heartbeats > 0, 15000);

    /* the image, imported on w1 (replicated to w2) */
    add_upload("jb-imp", wf.tar, wf.tar_len);
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-imp", "image-import", &p);
    cairn_mval_put_str(m, p, "image", IMG_BASE);
    dispatch("w1", m);
    g.import_res = expect_ok("jb-imp", 30000);
    return 0;
}


static void terminate_quiet(const char *worker, const char *rid)
{
    struct fw *w = fw_find(worker);
    if (!w || !w->registered || !node_of(worker)->running)
        return;
    static int seq;
    char job[48];
    snprintf(job, sizeof(job), "jb-term-%d", ++seq);
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-terminate", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_msg_set_rid(m, ++wf.fc.rid);
    fc_send(m, &w->route);
    cairn_msg_destroy(&m);
    uint64_t until = cairn_now_mono_ns() + 20000000000ull;
    while (!res_of(job) && cairn_now_mono_ns() < until)
        fc_pump(10);
}

static int group_teardown(void **state)
{
    (void)state;
    if (!wf.skip) /* every sandbox that may still run, by job (ENOTFOUND for those already gone) */
        for (size_t i = 0; i < CAIRN_ARRAY_LEN(ALL_RIDS); i++)
            for (size_t w = 0; w < WF_NW; w++)
                terminate_quiet(wf.nodes[w].id, ALL_RIDS[i]);
    int ret = wf_stop();
    wf_release();
    return ret;
}


/* ---- tests ---- */

static double snapshot(const char *worker, const char *job, const char *rid, const char *sn)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-snapshot", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "worker", worker);
    cairn_mval_put_str(m, p, "snapshot", sn);
    return dispatch(worker, m);
}

/* A successful snapshot's result checked; prints its time next to the bare checkpoint. */
static struct cairn_msg *snapshot_ok(const char *worker, const char *job, const char *rid, const char *sn,
                                     const char *label)
{
    double t0 = snapshot(worker, job, rid, sn);
    struct cairn_msg *r = expect_ok(job, 90000);
    double took = res_of(job)->at - t0;
    uint64_t ck = result_u64(r, "checkpoint_ms");
    print_message("snapshot %s: job %.0f ms, runsc checkpoint %llu ms (%.2fx), %llu bytes, %llu stored\n", label,
                  took * 1000, (unsigned long long)ck, ck ? took * 1000 / (double)ck : 0.0,
                  (unsigned long long)result_u64(r, "size"), (unsigned long long)result_u64(r, "stored"));
    const char *fp = NULL;
    size_t fl = 0;
    assert_int_equal(cairn_mval_str(result_field(r, "fingerprint"), &fp, &fl), CAIRN_OK);
    assert_int_equal(strncmp(fp, "runsc-0", 7), 0);
    char name[80];
    const char *img = NULL;
    size_t il = 0;
    snprintf(name, sizeof(name), "%s-root", sn);
    assert_int_equal(cairn_mval_str(cairn_mval_get(result_field(r, "root"), "image"), &img, &il), CAIRN_OK);
    assert_string_equal(img, name);
    snprintf(name, sizeof(name), "%s-ckpt", sn);
    assert_int_equal(cairn_mval_str(cairn_mval_get(result_field(r, "ckpt"), "image"), &img, &il), CAIRN_OK);
    assert_string_equal(img, name);
    /* refs: in order, every one acknowledged before the result */
    struct refs *rf = refs_of(job, false);
    assert_non_null(rf);
    assert_false(rf->bad_seq);
    assert_true(rf->n > 3);
    /* the sandbox is gone, and so is the job's tmp dir */
    struct node *n = node_of(worker);
    assert_false(path_exists(tu_path("%s/runtime/sandboxes/%s", n->dir, rid)));
    assert_false(path_exists(tu_path("%s/tmp/%s", n->dir, job)));
    /* the checkpoint stays as the worker's cached <sn>-ckpt layer */
    assert_true(path_exists(tu_path("%s/layers/%s-ckpt/checkpoint.img", n->dir, sn)));
    return r;
}

static void test_refusals_and_idle(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    create("w2", "jb-c-plain", RID_PLAIN, false, false);
    create("w2", "jb-c-idle", RID_IDLE, true, false);
    expect_ok("jb-c-plain", 60000);
    expect_ok("jb-c-idle", 60000);

    /* not created with enable_snapshot: refused, the sandbox runs on */
    snapshot("w2", "jb-s-plain", RID_PLAIN, "sn-00000000000000e1");
    struct cairn_msg *r = result_of("jb-s-plain", 10000);
    assert_int_equal(err_code(r), CAIRN_EUNSUPPORTED);
    assert_non_null(strstr(err_msg(r), "--enable-snapshot"));
    assert_string_equal(sh("w2", RID_PLAIN, "echo alive"), "alive\n");
    assert_null(refs_of("jb-s-plain", false));

    /* an exec running: refused, the sandbox and the exec run on */
    char job[32];
    sh_dispatch("w2", RID_IDLE, "sleep 2; echo done", job);
    fc_pump(800);
    snapshot("w2", "jb-s-busy", RID_IDLE, "sn-00000000000000e2");
    r = result_of("jb-s-busy", 10000);
    assert_int_equal(err_code(r), CAIRN_EBUSY);
    assert_non_null(strstr(err_msg(r), "exec"));
    assert_null(res_of(job));
    expect_ok(job, 10000);
    assert_int_equal(out_of(job, true)->data[0].len, 5);
    assert_string_equal(sh("w2", RID_IDLE, "echo alive"), "alive\n");

    /* an idle sandbox */
    snapshot_ok("w2", "jb-s-idle", RID_IDLE, SN_IDLE, "idle");
    WAIT_FOR(wf.fc.w[1].sandboxes == 1, 3000); /* RID_PLAIN left */
    /* a sandbox that is not here */
    snapshot("w2", "jb-s-gone", RID_IDLE, "sn-00000000000000e3");
    r = result_of("jb-s-gone", 10000);
    assert_int_equal(err_code(r), CAIRN_ENOTFOUND);
    assert_non_null(strstr(err_msg(r), RID_IDLE));
}

/* A step after the checkpoint fails (here the replication: one live worker for R = 2): the job fails with
   that step's error, and the sandbox is gone all the same, with the job's tmp dir. */
static void test_failure_after_checkpoint(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    create("w1", "jb-c-f", RID_F, true, false);
    expect_ok("jb-c-f", 60000);
    snprintf(wf.fc.dead, sizeof(wf.fc.dead), "w2"); /* w2 is dead for a moment */
    wf.fc.epoch++;
    fc_membership();
    fc_pump(300);
    snapshot("w1", "jb-s-f", RID_F, "sn-00000000000000e5");
    struct cairn_msg *r = result_of("jb-s-f", 30000);
    assert_int_equal(err_code(r), CAIRN_EUNAVAILABLE);
    assert_non_null(strstr(err_msg(r), "replicas"));
    assert_false(path_exists(tu_path("%s/runtime/sandboxes/%s", wf.nodes[0].dir, RID_F)));
    assert_false(path_exists(tu_path("%s/tmp/jb-s-f", wf.nodes[0].dir)));
    wf.fc.dead[0] = '\0';
    wf.fc.epoch++;
    fc_membership();
    fc_pump(300);
    WAIT_FOR(wf.fc.w[0].sandboxes == 0, 3000);
}

static void test_snapshot(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    create("w1", "jb-c-src", RID_SRC, true, true);
    expect_ok("jb-c-src", 60000);
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-mount", "sandbox-mount", &p);
    cairn_mval_put_str(m, p, "runtime_id", RID_SRC);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "path", "/data");
    dispatch("w1", m);
    expect_ok("jb-mount", 30000);
    double t0 = now_s();
    const char *md5 = sh("w1", RID_SRC,
                         "set -e; echo rootfile > /etc/rootfile; rm /etc/motd; mkdir -p /data/sub; "
                         "echo mounted > /data/sub/f; head -c 209715200 /dev/urandom > /tmp/big; "
                         "test $(wc -c < /tmp/big) = 209715200; md5sum /tmp/big | cut -c1-32");
    print_message("200 MB written in the sandbox in %.1f s\n", now_s() - t0);
    assert_int_equal(strlen(md5), 33);
    snprintf(g.md5, sizeof(g.md5), "%.32s", md5);
    g.count_sn1 = counter("w1", RID_SRC);
    assert_true(g.count_sn1 > 0);
    g.sn1_res = snapshot_ok("w1", "jb-s1", RID_SRC, SN1, "200 MB");
    assert_true(result_u64(g.sn1_res, "size") > 200u << 20);
    const struct cairn_mval *mounts = result_field(g.sn1_res, "mounts");
    assert_int_equal(cairn_mval_len(mounts), 1);
    const char *path = NULL;
    size_t pl = 0;
    assert_int_equal(cairn_mval_str(cairn_mval_get(cairn_mval_at(mounts, 0), "path"), &path, &pl), CAIRN_OK);
    assert_string_equal(path, "/data");
    WAIT_FOR(wf.fc.w[0].sandboxes == 0, 3000);
}

static void restore(const char *worker, const char *job, const char *rid, const char *sn, struct cairn_msg *snres)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-restore", &p);
    cairn_mval_put_str(m, p, "sandbox", "sb-clone");
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "worker", worker);
    cairn_mval_put_str(m, p, "snapshot", sn);
    push_base_layer(m, cairn_mval_put_array(m, p, "layers"));
    copy_ref(m, cairn_mval_put_map(m, p, "root"), result_field(snres, "root"));
    copy_ref(m, cairn_mval_put_map(m, p, "ckpt"), result_field(snres, "ckpt"));
    struct cairn_mval *arr = cairn_mval_put_array(m, p, "mounts");
    const struct cairn_mval *mounts = result_field(snres, "mounts");
    for (size_t i = 0; i < cairn_mval_len(mounts); i++) {
        const struct cairn_mval *mi = cairn_mval_at(mounts, i);
        const char *path = NULL;
        size_t pl = 0;
        assert_int_equal(cairn_mval_str(cairn_mval_get(mi, "path"), &path, &pl), CAIRN_OK);
        struct cairn_mval *rec = cairn_mval_push_map(m, arr);
        cairn_mval_put_str(m, rec, "path", path);
        copy_ref(m, cairn_mval_put_map(m, rec, "tree"), cairn_mval_get(mi, "tree"));
    }
    dispatch(worker, m);
}

/* A clone: the counter goes on from at least from, the memory, the files and the mount are there. */
static void check_clone(const char *worker, const char *rid, uint64_t from)
{
    uint64_t c1 = counter(worker, rid);
    if (c1 < from || c1 > from + 400)
        fail_msg("clone %s counts %llu; its snapshot was taken at %llu or a little later", rid,
                 (unsigned long long)c1, (unsigned long long)from);
    char want[128];
    snprintf(want, sizeof(want), "%s\nrootfile\nno motd\nmounted\nnew\n", g.md5);
    assert_string_equal(sh(worker, rid,
                           "md5sum /tmp/big | cut -c1-32; cat /etc/rootfile; test -e /etc/motd || echo no motd; "
                           "cat /data/sub/f; echo new > /data/new; cat /data/new"),
                        want);
    fc_pump(400);
    uint64_t c2 = counter(worker, rid);
    if (c2 <= c1)
        fail_msg("clone %s stopped counting at %llu", rid, (unsigned long long)c1);
    /* the restored main process goes on writing its stdout: the clone's runsc.log (O_APPEND) */
    struct node *n = node_of(worker);
    size_t len = 0;
    char *log = (char *)tu_read_file(tu_path("%s/runtime/sandboxes/%s/runsc.log", n->dir, rid), &len);
    assert_non_null(log);
    log = realloc(log, len + 1);
    log[len] = '\0';
    assert_null(strstr(log, "tick 1\n")); /* never started over */
    char tick[48];
    snprintf(tick, sizeof(tick), "tick %llu\n", (unsigned long long)c2);
    if (!strstr(log, tick))
        fail_msg("the log of clone %s lacks '%s': %.300s", rid, "tick", log);
    assert_int_equal(memchr(log, '\0', len) == NULL, 1); /* no hole of NULs from a lost offset */
    free(log);
}

static bool id_in(uint8_t (*v)[CAIRN_CHUNK_ID_BYTES], size_t n, const uint8_t *id)
{
    for (size_t i = 0; i < n; i++)
        if (!memcmp(v[i], id, CAIRN_CHUNK_ID_BYTES))
            return true;
    return false;
}

static void test_two_clones(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    /* w3 joins now: it holds none of the snapshot's chunks nor the image's */
    node_start_thread(&wf.nodes[2]);
    WAIT_FOR(wf.fc.w[2].heartbeats > 0, 15000);
    fc_pump(300);
    double t0 = now_s();
    restore("w3", "jb-r1", RID_C1, SN1, g.sn1_res);
    restore("w3", "jb-r2", RID_C2, SN1, g.sn1_res);
    struct cairn_msg *r1 = expect_ok("jb-r1", 90000), *r2 = expect_ok("jb-r2", 90000);
    double took = CAIRN_MAX(res_of("jb-r1")->at, res_of("jb-r2")->at) - t0;
    uint64_t f1 = result_u64(r1, "fetched_chunks"), f2 = result_u64(r2, "fetched_chunks");
    /* every unique chunk of the snapshot and the image crossed the network once */
    struct refs *rf = refs_of("jb-s1", false);
    size_t unique = wf.n_base_ids;
    for (size_t i = 0; i < rf->n; i++)
        if (!id_in(wf.base_ids, wf.n_base_ids, rf->ids[i]) && !id_in(rf->ids, i, rf->ids[i]))
            unique++;
    print_message("two clones on a worker without chunks: %.0f ms (restore_ms %llu / %llu), fetched %llu + %llu "
                  "chunks (%llu + %llu bytes) of %zu\n",
                  took * 1000, (unsigned long long)result_u64(r1, "restore_ms"),
                  (unsigned long long)result_u64(r2, "restore_ms"), (unsigned long long)f1, (unsigned long long)f2,
                  (unsigned long long)result_u64(r1, "fetched_bytes"),
                  (unsigned long long)result_u64(r2, "fetched_bytes"), unique);
    assert_int_equal(f1 + f2, unique);
    assert_true(result_u64(r1, "fetched_bytes") + result_u64(r2, "fetched_bytes") > 200u << 20);
    check_clone("w3", RID_C1, g.count_sn1);
    check_clone("w3", RID_C2, g.count_sn1);
    /* the clones are independent */
    sh("w3", RID_C1, "echo one > /data/only1");
    assert_string_equal(sh("w3", RID_C2, "test -e /data/only1 || echo absent"), "absent\n");
    /* a resent dispatch for a clone that runs already: no second sandbox */
    restore("w3", "jb-r1-again", RID_C1, SN1, g.sn1_res);
    assert_int_equal(result_u64(expect_ok("jb-r1-again", 10000), "restore_ms"), 0);
    WAIT_FOR(wf.fc.w[2].sandboxes == 2, 3000);
}

static void test_exec_refusal_on_clone(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    char job[32];
    sh_dispatch("w3", RID_C2, "sleep 2; echo done", job);
    fc_pump(800);
    snapshot("w3", "jb-s-busy2", RID_C2, "sn-00000000000000e4");
    struct cairn_msg *r = result_of("jb-s-busy2", 10000);
    assert_int_equal(err_code(r), CAIRN_EBUSY);
    expect_ok(job, 10000);
    uint64_t c1 = counter("w3", RID_C2);
    fc_pump(300);
    assert_true(counter("w3", RID_C2) > c1);
}

static void test_resnapshot(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    g.count_sn2 = counter("w3", RID_C1);
    g.sn2_res = snapshot_ok("w3", "jb-s2", RID_C1, SN2, "of a clone");
    double t0 = now_s();
    restore("w1", "jb-r3", RID_R2, SN2, g.sn2_res);
    struct cairn_msg *r = expect_ok("jb-r3", 90000);
    print_message("restore of the re-snapshot on w1: %.0f ms (restore_ms %llu), %llu chunks fetched\n",
                  (now_s() - t0) * 1000, (unsigned long long)result_u64(r, "restore_ms"),
                  (unsigned long long)result_u64(r, "fetched_chunks"));
    check_clone("w1", RID_R2, g.count_sn2);
    assert_string_equal(sh("w1", RID_R2, "cat /data/only1"), "one\n");

    /* on the worker that took snapshot 1: every chunk is local and the checkpoint is a cached layer */
    t0 = now_s();
    restore("w1", "jb-r4", RID_L, SN1, g.sn1_res);
    r = expect_ok("jb-r4", 90000);
    print_message("restore where the snapshot was taken: %.0f ms (restore_ms %llu), %llu chunks fetched\n",
                  (now_s() - t0) * 1000, (unsigned long long)result_u64(r, "restore_ms"),
                  (unsigned long long)result_u64(r, "fetched_chunks"));
    assert_int_equal(result_u64(r, "fetched_chunks"), 0);
    assert_true(counter("w1", RID_L) >= g.count_sn1);
    terminate_quiet("w1", RID_L);
}

static void test_restart_adopts_restored(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    struct node *w3 = &wf.nodes[2];
    int regs = wf.fc.w[2].registrations;
    node_stop_thread(w3);
    assert_int_equal(w3->rc, CAIRN_OK);
    node_start_thread(w3);
    WAIT_FOR(wf.fc.w[2].registrations > regs, 15000);
    assert_int_equal(wf.fc.w[2].n_reg_sandboxes, 1);
    assert_string_equal(wf.fc.w[2].reg_sandboxes[0], RID_C2);
    uint64_t c1 = counter("w3", RID_C2);
    fc_pump(300);
    assert_true(counter("w3", RID_C2) > c1);
    terminate_quiet("w3", RID_C2);
    terminate_quiet("w1", RID_R2);
    terminate_quiet("w2", RID_PLAIN);
    for (size_t i = 0; i < WF_NW; i++) {
        char rootc[PATH_MAX];
        runtime_left_clean(&wf.nodes[i], rootc);
        assert_int_equal(dir_entries(tu_path("%s/tmp", wf.nodes[i].dir)), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals_and_idle),
        cmocka_unit_test(test_failure_after_checkpoint),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_two_clones),
        cmocka_unit_test(test_exec_refusal_on_clone),
        cmocka_unit_test(test_resnapshot),
        cmocka_unit_test(test_restart_adopts_restored),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
