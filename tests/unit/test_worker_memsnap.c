/*
 * test_worker_memsnap.c: the worker side of memory snapshots (docs/internals/snapshots.md, issue 6):
 * the jobs sandbox-snapshot and sandbox-restore with real runsc sandboxes, real RocksDB stores and real
 * CURVE sockets, against a scripted coordinator played by the test (as in test_worker_images.c), which
 * also acknowledges and records job.refs.
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
#include "testutil.h"

#include "worker_config.h"
#include "worker_daemon.h"

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
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NW 3
#define HB_MS 200
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

static double now_s(void) { return (double)cairn_now_mono_ns() / 1e9; }

/* ---- workers ---- */

struct node {
    char id[16];
    char dir[PATH_MAX];
    struct cairn_wk_config cfg;
    struct cairn_curve_keys keys;
    atomic_int stop;
    pthread_t th;
    bool running;
    int rc;
};

static void *node_main(void *arg)
{
    struct node *n = arg;
    struct cairn_wk_daemon_opts o = {.stop = &n->stop};
    n->rc = cairn_wk_daemon_run(&n->cfg, &o);
    if (n->rc != CAIRN_OK)
        fprintf(stderr, "worker %s: %s: %s\n", n->id, cairn_err_name(n->rc), cairn_err_msg());
    return NULL;
}

/* ---- the scripted coordinator ---- */

struct fw {
    char id[65];
    struct cairn_route route;
    char peer[257];
    char key[41];
    bool registered;
    int registrations, heartbeats;
    uint64_t sandboxes;
    char reg_sandboxes[8][65];
    size_t n_reg_sandboxes;
};

struct res {
    char job[65];
    struct cairn_msg *m;
    double at;
};

struct out {
    char job[65];
    struct cairn_buf data[2];
};

struct upload {
    char job[65];
    const uint8_t *data;
    size_t len;
};

/* job.refs received for one job */
struct refs {
    char job[65];
    uint64_t batches;   /* received (resends included) */
    uint64_t next_seq;  /* seq 0, 1, ... in order */
    bool bad_seq;
    uint8_t dom[16];
    uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n;
};

struct fc {
    struct cairn_net *net;
    struct cairn_curve_keys keys;
    struct cairn_sock *s;
    uint64_t epoch, rid;
    struct fw w[NW];
    char dead[16]; /* reported dead in memberships */
    struct res res[160];
    size_t nres;
    struct out outs[64];
    size_t nouts;
    struct upload ups[4];
    size_t nups;
    struct refs refs[8];
    size_t nrefs;
    uint64_t acks[256];
    int ack_codes[256];
    size_t nacks;
};

static struct {
    bool skip;
    char reason[256];
    char *dir;
    struct fc fc;
    struct node nodes[NW];
    uint8_t master[CAIRN_KEY_BYTES];
    uint8_t *tar;
    size_t tar_len;
    uint8_t (*base_ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n_base_ids;
    struct cairn_msg *import_res, *sn1_res, *sn2_res;
    char md5[40];       /* of the 200 MB */
    uint64_t count_sn1; /* the counter just before snapshot 1 */
    uint64_t count_sn2;
} g;

static struct fw *fw_find(const char *id)
{
    for (size_t i = 0; i < NW; i++)
        if (!strcmp(g.fc.w[i].id, id))
            return &g.fc.w[i];
    return NULL;
}

static void fc_send(struct cairn_msg *m, const struct cairn_route *to)
{
    if (to)
        cairn_msg_set_route(m, to);
    int rc = cairn_sock_send(g.fc.s, m);
    if (rc != CAIRN_OK && rc != CAIRN_ENOTFOUND)
        fail_msg("coordinator send %s: %s", cairn_msg_type_name(cairn_msg_type(m)), cairn_err_msg());
}

static void fc_membership(void)
{
    for (size_t t = 0; t < NW; t++) {
        if (!g.fc.w[t].registered)
            continue;
        struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_MEMBERSHIP);
        cairn_msg_set_rid(m, ++g.fc.rid);
        cairn_msg_set_u64(m, "epoch", g.fc.epoch);
        cairn_msg_set_u64(m, "replicas", 2);
        struct cairn_mval *arr = cairn_msg_set_array(m, "workers");
        for (size_t i = 0; i < NW; i++) {
            struct fw *w = &g.fc.w[i];
            if (!w->registered)
                continue;
            struct cairn_mval *rec = cairn_mval_push_map(m, arr);
            cairn_mval_put_str(m, rec, "id", w->id);
            cairn_mval_put_str(m, rec, "endpoint", w->peer);
            cairn_mval_put_str(m, rec, "public_key", w->key);
            cairn_mval_put_bool(m, rec, "alive", strcmp(w->id, g.fc.dead) != 0);
        }
        fc_send(m, &g.fc.w[t].route);
        cairn_msg_destroy(&m);
    }
}

static struct out *out_of(const char *job, bool create)
{
    for (size_t i = 0; i < g.fc.nouts; i++)
        if (!strcmp(g.fc.outs[i].job, job))
            return &g.fc.outs[i];
    if (!create)
        return NULL;
    assert_true(g.fc.nouts < CAIRN_ARRAY_LEN(g.fc.outs));
    struct out *o = &g.fc.outs[g.fc.nouts++];
    memset(o, 0, sizeof(*o));
    snprintf(o->job, sizeof(o->job), "%s", job);
    cairn_buf_init(&o->data[0], 16u << 20);
    cairn_buf_init(&o->data[1], 16u << 20);
    return o;
}

static struct refs *refs_of(const char *job, bool create)
{
    for (size_t i = 0; i < g.fc.nrefs; i++)
        if (!strcmp(g.fc.refs[i].job, job))
            return &g.fc.refs[i];
    if (!create)
        return NULL;
    assert_true(g.fc.nrefs < CAIRN_ARRAY_LEN(g.fc.refs));
    struct refs *r = &g.fc.refs[g.fc.nrefs++];
    memset(r, 0, sizeof(*r));
    snprintf(r->job, sizeof(r->job), "%s", job);
    return r;
}

static void handle_refs(struct cairn_msg *m)
{
    const char *job = NULL;
    uint64_t seq = 0;
    const uint8_t *dom = NULL;
    size_t dl = 0, n = 0;
    const struct cairn_mval *ids = NULL;
    assert_int_equal(cairn_msg_get_str(m, "job", &job, NULL), CAIRN_OK);
    assert_int_equal(cairn_msg_get_u64(m, "seq", &seq), CAIRN_OK);
    assert_int_equal(cairn_msg_get_bin(m, "domain", &dom, &dl), CAIRN_OK);
    assert_int_equal(dl, 16);
    assert_int_equal(cairn_msg_get_array(m, "ids", &ids, &n), CAIRN_OK);
    struct refs *r = refs_of(job, true);
    r->batches++;
    if (seq + 1 == r->next_seq) { /* a resend of the last batch: acknowledged again, not counted */
    } else if (seq != r->next_seq) {
        r->bad_seq = true;
    } else {
        r->next_seq++;
        memcpy(r->dom, dom, 16);
        r->ids = realloc(r->ids, (r->n + n) * sizeof(*r->ids));
        for (size_t i = 0; i < n; i++) {
            const uint8_t *id = NULL;
            size_t il = 0;
            assert_int_equal(cairn_mval_bin(cairn_mval_at(ids, i), &id, &il), CAIRN_OK);
            assert_int_equal(il, CAIRN_CHUNK_ID_BYTES);
            memcpy(r->ids[r->n++], id, CAIRN_CHUNK_ID_BYTES);
        }
    }
    struct cairn_msg *rep = cairn_msg_reply(m, CAIRN_OK, NULL);
    fc_send(rep, NULL);
    cairn_msg_destroy(&rep);
}

/* Returns true when m was kept. */
static bool fc_handle(struct cairn_msg *m)
{
    enum cairn_msg_type t = cairn_msg_type(m);
    if (cairn_msg_is_reply(m)) {
        size_t k = g.fc.nacks++ % CAIRN_ARRAY_LEN(g.fc.acks);
        g.fc.acks[k] = cairn_msg_rid(m);
        g.fc.ack_codes[k] = cairn_msg_code(m);
        return false;
    }
    const char *id = NULL;
    cairn_msg_get_str(m, "id", &id, NULL);
    struct cairn_msg *r = NULL;
    if (t == CAIRN_MSG_WORKER_REGISTER) {
        struct fw *w = fw_find(id);
        assert_non_null(w);
        const char *s;
        w->route = cairn_msg_route(m);
        assert_int_equal(cairn_msg_get_str(m, "peer", &s, NULL), CAIRN_OK);
        snprintf(w->peer, sizeof(w->peer), "%s", s);
        assert_int_equal(cairn_msg_get_str(m, "public_key", &s, NULL), CAIRN_OK);
        snprintf(w->key, sizeof(w->key), "%s", s);
        const struct cairn_mval *sb = NULL;
        size_t nsb = 0;
        w->n_reg_sandboxes = 0;
        if (cairn_msg_get_array(m, "sandboxes", &sb, &nsb) == CAIRN_OK)
            for (size_t i = 0; i < nsb && i < 8; i++) {
                const char *x;
                size_t xl;
                assert_int_equal(cairn_mval_str(cairn_mval_at(sb, i), &x, &xl), CAIRN_OK);
                snprintf(w->reg_sandboxes[w->n_reg_sandboxes++], 65, "%s", x);
            }
        w->registered = true;
        w->registrations++;
        g.fc.epoch++;
        r = cairn_msg_reply(m, CAIRN_OK, NULL);
        cairn_msg_set_u64(r, "epoch", g.fc.epoch);
        cairn_msg_set_u64(r, "heartbeat_ms", HB_MS);
        cairn_msg_set_u64(r, "replicas", 2);
        fc_send(r, NULL);
        cairn_msg_destroy(&r);
        fc_membership();
        return false;
    }
    if (t == CAIRN_MSG_WORKER_HEARTBEAT) {
        struct fw *w = fw_find(id);
        assert_non_null(w);
        w->heartbeats++;
        cairn_msg_get_u64(m, "sandboxes", &w->sandboxes);
        r = cairn_msg_reply(m, CAIRN_OK, NULL);
        cairn_msg_set_u64(r, "epoch", g.fc.epoch);
        fc_send(r, NULL);
        cairn_msg_destroy(&r);
        return false;
    }
    if (t == CAIRN_MSG_JOB_RESULT) {
        const char *job = NULL;
        assert_int_equal(cairn_msg_get_str(m, "job", &job, NULL), CAIRN_OK);
        r = cairn_msg_reply(m, CAIRN_OK, NULL);
        fc_send(r, NULL);
        cairn_msg_destroy(&r);
        for (size_t i = 0; i < g.fc.nres; i++)
            if (!strcmp(g.fc.res[i].job, job))
                return false; /* a resend */
        assert_true(g.fc.nres < CAIRN_ARRAY_LEN(g.fc.res));
        struct res *x = &g.fc.res[g.fc.nres++];
        snprintf(x->job, sizeof(x->job), "%s", job);
        x->m = m;
        x->at = now_s();
        return true;
    }
    if (t == CAIRN_MSG_JOB_REFS) {
        handle_refs(m);
        return false;
    }
    if (t == CAIRN_MSG_UPLOAD_READ) {
        const char *job = NULL;
        uint64_t off = 0, len = 0;
        cairn_msg_get_str(m, "job", &job, NULL);
        cairn_msg_get_u64(m, "offset", &off);
        cairn_msg_get_u64(m, "len", &len);
        struct upload *u = NULL;
        for (size_t i = 0; i < g.fc.nups && !u; i++)
            if (!strcmp(g.fc.ups[i].job, job))
                u = &g.fc.ups[i];
        if (!u) {
            r = cairn_msg_reply(m, CAIRN_ENOTFOUND, "no upload for that job");
        } else {
            size_t start = off < u->len ? (size_t)off : u->len;
            size_t n = CAIRN_MIN(CAIRN_MIN((size_t)len, (size_t)PIECE_CAP), u->len - start);
            r = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_msg_set_u64(r, "size", u->len);
            cairn_msg_add_frame(r, u->data + start, n);
        }
        fc_send(r, NULL);
        cairn_msg_destroy(&r);
        return false;
    }
    if (t == CAIRN_MSG_JOB_OUTPUT) {
        const char *job = NULL;
        uint64_t stream = 0;
        const uint8_t *p = NULL;
        size_t len = 0;
        assert_int_equal(cairn_msg_get_str(m, "job", &job, NULL), CAIRN_OK);
        assert_int_equal(cairn_msg_get_u64(m, "stream", &stream), CAIRN_OK);
        assert_int_equal(cairn_msg_frame(m, 0, &p, &len), CAIRN_OK);
        struct out *o = out_of(job, true);
        assert_int_equal(cairn_buf_append(&o->data[stream == 2 ? 1 : 0], p, len), CAIRN_OK);
        r = cairn_msg_reply(m, CAIRN_OK, NULL);
        fc_send(r, NULL);
        cairn_msg_destroy(&r);
        return false;
    }
    return false; /* job.progress */
}

static void fc_pump(int ms)
{
    uint64_t until = cairn_now_mono_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        uint64_t now = cairn_now_mono_ns();
        if (now >= until)
            return;
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(g.fc.s, (int)((until - now) / 1000000u) + 1, &m);
        if (rc == CAIRN_OK && fc_handle(m))
            continue;
        cairn_msg_destroy(&m);
    }
}

#define WAIT_FOR(cond, ms)                                                     \
    do {                                                                       \
        uint64_t wf_until_ = cairn_now_mono_ns() + (uint64_t)(ms) * 1000000u; \
        while (!(cond) && cairn_now_mono_ns() < wf_until_)                     \
            fc_pump(10);                                                       \
        if (!(cond))                                                           \
            fail_msg("timed out waiting for %s", #cond);                       \
    } while (0)

static struct res *res_of(const char *job)
{
    for (size_t i = 0; i < g.fc.nres; i++)
        if (!strcmp(g.fc.res[i].job, job))
            return &g.fc.res[i];
    return NULL;
}

static bool acked(uint64_t rid, int *code)
{
    for (size_t i = 0; i < g.fc.nacks && i < CAIRN_ARRAY_LEN(g.fc.acks); i++)
        if (g.fc.acks[i] == rid) {
            *code = g.fc.ack_codes[i];
            return true;
        }
    return false;
}

static struct cairn_msg *job_new(const char *job, const char *kind, struct cairn_mval **params)
{
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_DISPATCH);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_str(m, "kind", kind);
    cairn_msg_set_str(m, "app", "default");
    *params = cairn_msg_set_map(m, "params");
    return m;
}

/* Send the dispatch (returns the time it was sent); asserts it is accepted. */
static double dispatch(const char *worker, struct cairn_msg *m)
{
    uint64_t rid = ++g.fc.rid;
    cairn_msg_set_rid(m, rid);
    struct fw *w = fw_find(worker);
    double at = now_s();
    fc_send(m, &w->route);
    cairn_msg_destroy(&m);
    int code = -1;
    WAIT_FOR(acked(rid, &code), 5000);
    assert_int_equal(code, CAIRN_OK);
    return at;
}

static struct cairn_msg *result_of(const char *job, int ms)
{
    WAIT_FOR(res_of(job) != NULL, ms);
    return res_of(job)->m;
}

static uint64_t err_code(struct cairn_msg *r)
{
    uint64_t c = 999;
    assert_int_equal(cairn_msg_get_u64(r, "err_code", &c), CAIRN_OK);
    return c;
}

static const char *err_msg(struct cairn_msg *r)
{
    static char buf[1100];
    const char *s = NULL;
    snprintf(buf, sizeof(buf), "%s", cairn_msg_get_str(r, "err_msg", &s, NULL) == CAIRN_OK && s ? s : "");
    return buf;
}

static struct cairn_msg *expect_ok(const char *job, int ms)
{
    struct cairn_msg *r = result_of(job, ms);
    if (err_code(r) != CAIRN_OK)
        fail_msg("job %s failed: %s: %s", job, cairn_err_name((int)err_code(r)), err_msg(r));
    return r;
}

static const struct cairn_mval *result_field(struct cairn_msg *r, const char *key)
{
    const struct cairn_mval *map = NULL;
    size_t n = 0;
    assert_int_equal(cairn_msg_get_map(r, "result", &map, &n), CAIRN_OK);
    const struct cairn_mval *v = cairn_mval_get(map, key);
    if (!v)
        fail_msg("result has no '%s'", key);
    return v;
}

static uint64_t result_u64(struct cairn_msg *r, const char *key)
{
    uint64_t v = 0;
    assert_int_equal(cairn_mval_u64(result_field(r, key), &v), CAIRN_OK);
    return v;
}

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
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    struct cairn_mval *argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "sh");
    cairn_mval_push_str(m, argv, "-c");
    cairn_mval_push_str(m, argv, script);
    cairn_mval_put_u64(m, p, "timeout_ms", 60000);
    dispatch(worker, m);
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

static size_t dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static bool path_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

static struct node *node_of(const char *id)
{
    for (size_t i = 0; i < NW; i++)
        if (!strcmp(g.nodes[i].id, id))
            return &g.nodes[i];
    return NULL;
}

/* The cgroup parent of a worker's runtime: "cairn-" + 16 hex of BLAKE2b-128(its canonical state root). */
static void cg_parent_of(const struct node *n, char out[32])
{
    char *root = realpath(tu_path("%s/runtime", n->dir), NULL);
    if (!root) {
        out[0] = '\0';
        return;
    }
    uint8_t h[CAIRN_CHECKSUM_BYTES];
    char hex[2 * CAIRN_CHECKSUM_BYTES + 1];
    cairn_checksum((const uint8_t *)root, strlen(root), h);
    cairn_hex_encode(hex, h, sizeof(h));
    snprintf(out, 32, "cairn-%.16s", hex);
    free(root);
}

/* ---- setup ---- */

static void node_config(struct node *n, const char *id, unsigned capacity)
{
    snprintf(n->id, sizeof(n->id), "%s", id);
    snprintf(n->dir, sizeof(n->dir), "%s/%s", g.dir, id);
    assert_int_equal(cairn_curve_keypair(&n->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_keys_write(tu_path("%s/%s.key", g.dir, id), &n->keys), CAIRN_OK);
    assert_int_equal(cairn_wk_config_defaults(&n->cfg), CAIRN_OK);
    char cap[16];
    snprintf(cap, sizeof(cap), "%u", capacity);
    struct {
        const char *k, *v;
    } kv[] = {
        {"id", id},
        {"data_dir", n->dir},
        {"keys", tu_path("%s/%s.key", g.dir, id)},
        {"coordinator", cairn_sock_endpoint(g.fc.s)},
        {"coordinator_key", tu_path("%s/coordinator.pub", g.dir)},
        {"master_key", tu_path("%s/master.key", g.dir)},
        {"peer_endpoint", "tcp://127.0.0.1:*"},
        {"capacity", cap},
        {"job_threads", "3"},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(kv); i++)
        if (cairn_wk_config_set(&n->cfg, kv[i].k, kv[i].v) != CAIRN_OK)
            fail_msg("config %s: %s", kv[i].k, cairn_err_msg());
    snprintf(g.fc.w[n - g.nodes].id, sizeof(g.fc.w[0].id), "%s", id);
}

static void node_start(struct node *n)
{
    atomic_store(&n->stop, 0);
    assert_int_equal(pthread_create(&n->th, NULL, node_main, n), 0);
    n->running = true;
}

static void node_stop(struct node *n)
{
    if (!n->running)
        return;
    atomic_store(&n->stop, 1);
    /* keep answering meanwhile: a worker that stops waits for its results to be acknowledged */
    for (int i = 0; i < 50; i++)
        fc_pump(10);
    pthread_join(n->th, NULL);
    n->running = false;
}

static void build_tarball(void)
{
    static const char *applets[] = {"sh",  "echo", "cat",  "ls",   "sleep", "true", "rm",     "mkdir", "mv",
                                    "seq", "md5sum", "dd", "test", "wc",    "grep", "cut",    "head",  NULL};
    const char *root = tu_path("%s/rootfs", g.dir);
    char rootc[PATH_MAX];
    snprintf(rootc, sizeof(rootc), "%s", root);
    assert_int_equal(tu_sh("mkdir -p '%s/bin' '%s/etc' '%s/tmp' && cp /bin/busybox '%s/bin/'", rootc, rootc, rootc,
                           rootc),
                     0);
    for (int i = 0; applets[i]; i++)
        assert_int_equal(symlink("busybox", tu_path("%s/bin/%s", rootc, applets[i])), 0);
    const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n";
    tu_write_file(tu_path("%s/etc/passwd", rootc), passwd, strlen(passwd));
    tu_write_file(tu_path("%s/etc/motd", rootc), "hello\n", 6);
    assert_int_equal(tu_sh("tar -C '%s' --numeric-owner --owner=0 --group=0 -cf '%s/image.tar' .", rootc, g.dir), 0);
    g.tar = tu_read_file(tu_path("%s/image.tar", g.dir), &g.tar_len);
    assert_non_null(g.tar);
}

static int collect_id(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    (void)arg;
    for (size_t i = 0; i < g.n_base_ids; i++)
        if (!memcmp(g.base_ids[i], id, CAIRN_CHUNK_ID_BYTES))
            return CAIRN_OK;
    g.base_ids = realloc(g.base_ids, (g.n_base_ids + 1) * sizeof(*g.base_ids));
    memcpy(g.base_ids[g.n_base_ids++], id, CAIRN_CHUNK_ID_BYTES);
    return CAIRN_OK;
}

/* The chunk ids of the image (a local import of the same tarball into a store of the test's own). */
static void local_import(void)
{
    struct cairn_store *s = NULL;
    struct cairn_domain *d = NULL;
    struct cairn_tree_ref ref = {0};
    assert_int_equal(cairn_store_open(&s, tu_path("%s/local-store", g.dir), true), CAIRN_OK);
    assert_int_equal(cairn_domain_new_managed(&d, g.master, "default"), CAIRN_OK);
    assert_int_equal(cairn_archive_import(s, d, tu_path("%s/image.tar", g.dir), NULL, &ref, NULL), CAIRN_OK);
    assert_int_equal(cairn_tree_chunks(s, d, &ref, collect_id, NULL), CAIRN_OK);
    cairn_tree_ref_release(&ref);
    cairn_domain_destroy(&d);
    cairn_store_close(&s);
}

/* Kill what runs from our temp dir (runsc processes carry --root=<it>), detach mounts, remove cgroups. */
static void force_cleanup(void)
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
        if (n > 0 && (buf[n] = '\0', strstr(buf, g.dir))) {
            print_error("cleanup: killing leftover pid %d: %.200s\n", pid, buf);
            kill(pid, SIGKILL);
        }
    }
    if (d)
        closedir(d);
    for (int round = 0; round < 8 && mounted_below(g.dir); round++) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096], pts[64][1024];
        int n = 0;
        while (f && fgets(line, sizeof(line), f) && n < 64) {
            char point[1024];
            if (sscanf(line, "%*d %*d %*s %*s %1023s", point) == 1 && !strncmp(point, g.dir, strlen(g.dir)))
                snprintf(pts[n++], sizeof(pts[0]), "%s", point);
        }
        if (f)
            fclose(f);
        for (int i = n; i-- > 0;)
            umount2(pts[i], MNT_DETACH);
    }
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(ALL_RIDS); i++)
        tu_sh("for c in /sys/fs/cgroup/*/*/%s; do [ -d \"$c\" ] && rmdir \"$c\"; done 2>/dev/null; true", ALL_RIDS[i]);
    for (size_t i = 0; i < NW; i++) {
        char parent[32];
        cg_parent_of(&g.nodes[i], parent);
        if (parent[0])
            tu_sh("rmdir /sys/fs/cgroup/*/%s 2>/dev/null; true", parent);
    }
}

static void add_upload(const char *job, const uint8_t *data, size_t len)
{
    struct upload *u = &g.fc.ups[g.fc.nups++];
    snprintf(u->job, sizeof(u->job), "%s", job);
    u->data = data;
    u->len = len;
}

static int group_setup(void **state)
{
    (void)state;
    const char *lv = getenv("CAIRN_TEST_LOG");
    enum cairn_log_level level = CAIRN_LOG_WARN;
    if (lv)
        cairn_log_level_parse(lv, &level);
    cairn_log_set_level(level);
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    g.dir = tu_tempdir("worker-memsnap");
    if (geteuid() != 0)
        snprintf(g.reason, sizeof(g.reason), "needs root (overlay mounts, cgroups)");
    else if (access("/bin/busybox", X_OK) != 0)
        snprintf(g.reason, sizeof(g.reason), "/bin/busybox missing (package busybox-static)");
    else if (tu_sh("runsc --version >/dev/null 2>&1") != 0)
        snprintf(g.reason, sizeof(g.reason), "runsc not installed");
    if (g.reason[0]) {
        g.skip = true;
        print_error("SKIPPED: %s\n", g.reason);
        return 0;
    }
    build_tarball();
    uint64_t seed = 17;
    tu_fill_random(&seed, g.master, sizeof(g.master));
    tu_write_file(tu_path("%s/master.key", g.dir), g.master, sizeof(g.master));
    chmod(tu_path("%s/master.key", g.dir), 0600);
    local_import();

    struct fc *fc = &g.fc;
    assert_int_equal(cairn_net_new(&fc->net), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&fc->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_public_write(tu_path("%s/coordinator.pub", g.dir), fc->keys.public_z85), CAIRN_OK);
    assert_int_equal(cairn_sock_server(fc->net, "tcp://127.0.0.1:*", &fc->keys, "workers", NULL, &fc->s), CAIRN_OK);
    const char *ids[NW] = {"w1", "w2", "w3"};
    const char *pubs[NW];
    for (size_t i = 0; i < NW; i++) {
        node_config(&g.nodes[i], ids[i], 4);
        pubs[i] = g.nodes[i].keys.public_z85;
    }
    assert_int_equal(cairn_net_allow_set(fc->net, "workers", pubs, NW), CAIRN_OK);
    node_start(&g.nodes[0]);
    node_start(&g.nodes[1]);
    WAIT_FOR(g.fc.w[0].heartbeats > 0 && g.fc.w[1].heartbeats > 0, 15000);

    /* the image, imported on w1 (replicated to w2) */
    add_upload("jb-imp", g.tar, g.tar_len);
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
    cairn_msg_set_rid(m, ++g.fc.rid);
    fc_send(m, &w->route);
    cairn_msg_destroy(&m);
    uint64_t until = cairn_now_mono_ns() + 20000000000ull;
    while (!res_of(job) && cairn_now_mono_ns() < until)
        fc_pump(10);
}

static int group_teardown(void **state)
{
    (void)state;
    int ret = 0;
    if (!g.skip) {
        /* every sandbox that may still run, by job (ENOTFOUND for those already gone) */
        for (size_t i = 0; i < CAIRN_ARRAY_LEN(ALL_RIDS); i++)
            for (size_t w = 0; w < NW; w++)
                terminate_quiet(g.nodes[w].id, ALL_RIDS[i]);
        for (size_t i = 0; i < NW; i++) {
            node_stop(&g.nodes[i]);
            if (g.nodes[i].rc != CAIRN_OK)
                ret = -1;
        }
        force_cleanup();
    }
    for (size_t i = 0; i < NW; i++) {
        cairn_wk_config_release(&g.nodes[i].cfg);
        cairn_curve_keys_clear(&g.nodes[i].keys);
    }
    for (size_t i = 0; i < g.fc.nres; i++)
        cairn_msg_destroy(&g.fc.res[i].m);
    for (size_t i = 0; i < g.fc.nouts; i++) {
        cairn_buf_release(&g.fc.outs[i].data[0]);
        cairn_buf_release(&g.fc.outs[i].data[1]);
    }
    for (size_t i = 0; i < g.fc.nrefs; i++)
        free(g.fc.refs[i].ids);
    cairn_sock_destroy(&g.fc.s);
    cairn_net_destroy(&g.fc.net);
    free(g.base_ids);
    free(g.tar);
    if (g.dir && !mounted_below(g.dir))
        tu_rmrf(g.dir);
    else if (g.dir)
        print_error("leaving %s: something is still mounted below it\n", g.dir);
    free(g.dir);
    return ret;
}

#define SKIP_IF_NEEDED()      \
    do {                      \
        if (g.skip) {         \
            skip();           \
            return;           \
        }                     \
    } while (0)

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
    WAIT_FOR(g.fc.w[1].sandboxes == 1, 3000); /* RID_PLAIN left */
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
    snprintf(g.fc.dead, sizeof(g.fc.dead), "w2"); /* w2 is dead for a moment */
    g.fc.epoch++;
    fc_membership();
    fc_pump(300);
    snapshot("w1", "jb-s-f", RID_F, "sn-00000000000000e5");
    struct cairn_msg *r = result_of("jb-s-f", 30000);
    assert_int_equal(err_code(r), CAIRN_EUNAVAILABLE);
    assert_non_null(strstr(err_msg(r), "replicas"));
    assert_false(path_exists(tu_path("%s/runtime/sandboxes/%s", g.nodes[0].dir, RID_F)));
    assert_false(path_exists(tu_path("%s/tmp/jb-s-f", g.nodes[0].dir)));
    g.fc.dead[0] = '\0';
    g.fc.epoch++;
    fc_membership();
    fc_pump(300);
    WAIT_FOR(g.fc.w[0].sandboxes == 0, 3000);
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
    WAIT_FOR(g.fc.w[0].sandboxes == 0, 3000);
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
    node_start(&g.nodes[2]);
    WAIT_FOR(g.fc.w[2].heartbeats > 0, 15000);
    fc_pump(300);
    double t0 = now_s();
    restore("w3", "jb-r1", RID_C1, SN1, g.sn1_res);
    restore("w3", "jb-r2", RID_C2, SN1, g.sn1_res);
    struct cairn_msg *r1 = expect_ok("jb-r1", 90000), *r2 = expect_ok("jb-r2", 90000);
    double took = CAIRN_MAX(res_of("jb-r1")->at, res_of("jb-r2")->at) - t0;
    uint64_t f1 = result_u64(r1, "fetched_chunks"), f2 = result_u64(r2, "fetched_chunks");
    /* every unique chunk of the snapshot and the image crossed the network once */
    struct refs *rf = refs_of("jb-s1", false);
    size_t unique = g.n_base_ids;
    for (size_t i = 0; i < rf->n; i++)
        if (!id_in(g.base_ids, g.n_base_ids, rf->ids[i]) && !id_in(rf->ids, i, rf->ids[i]))
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
    WAIT_FOR(g.fc.w[2].sandboxes == 2, 3000);
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
    struct node *w3 = &g.nodes[2];
    int regs = g.fc.w[2].registrations;
    node_stop(w3);
    assert_int_equal(w3->rc, CAIRN_OK);
    node_start(w3);
    WAIT_FOR(g.fc.w[2].registrations > regs, 15000);
    assert_int_equal(g.fc.w[2].n_reg_sandboxes, 1);
    assert_string_equal(g.fc.w[2].reg_sandboxes[0], RID_C2);
    uint64_t c1 = counter("w3", RID_C2);
    fc_pump(300);
    assert_true(counter("w3", RID_C2) > c1);
    terminate_quiet("w3", RID_C2);
    terminate_quiet("w1", RID_R2);
    terminate_quiet("w2", RID_PLAIN);
    for (size_t i = 0; i < NW; i++) {
        const char *root = tu_path("%s/runtime", g.nodes[i].dir);
        char rootc[PATH_MAX];
        snprintf(rootc, sizeof(rootc), "%s", root);
        assert_false(mounted_below(rootc));
        assert_int_equal(dir_entries(tu_path("%s/sandboxes", rootc)), 0);
        assert_int_equal(dir_entries(tu_path("%s/tmp", g.nodes[i].dir)), 0);
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
