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
#include "testutil.h"

#include "worker_config.h"
#include "worker_daemon.h"

#include "cairn/alloc.h"
#include "cairn/archive.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/placement.h"
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NW 3
#define HB_MS 200
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
    pid_t pid; /* w3: the binary */
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
    uint64_t sandboxes; /* from the last heartbeat */
    char reg_sandboxes[8][65]; /* from the last registration */
    size_t n_reg_sandboxes;
};

struct res {
    char job[65];
    struct cairn_msg *m;
    double at;
};

struct out {
    char job[65];
    uint64_t frames, unacked_max;
    struct cairn_buf data[2]; /* stdout, stderr */
    size_t frame_max;
    double first_at[2];
    bool bad_order;
};

struct upload {
    char job[65];
    const uint8_t *data;
    size_t len;
    uint64_t reads;
};

struct fc {
    struct cairn_net *net;
    struct cairn_curve_keys keys;
    struct cairn_sock *s;
    uint64_t epoch, rid;
    struct fw w[NW];
    struct res res[128];
    size_t nres;
    struct out outs[64];
    size_t nouts;
    struct cairn_msg *held[64]; /* job.output requests not acknowledged yet */
    size_t nheld;
    bool hold_outputs;
    char refuse_outputs[65]; /* job.output of this job is answered with ENOTFOUND (the client went away) */
    struct upload ups[8];
    size_t nups;
    uint64_t acks[512];
    int ack_codes[512];
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
    /* the base image's reference and chunk ids (from a local import of the same tarball) */
    struct cairn_tree_ref base;
    uint8_t (*base_ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n_base_ids;
    struct cairn_msg *snap_res, *flat_res;
    char listing[1 << 16];
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
            cairn_mval_put_bool(m, rec, "alive", true);
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
    cairn_buf_init(&o->data[0], 64u << 20);
    cairn_buf_init(&o->data[1], 64u << 20);
    return o;
}

static size_t held_for(const char *job)
{
    size_t n = 0;
    for (size_t i = 0; i < g.fc.nheld; i++) {
        const char *j = NULL;
        cairn_msg_get_str(g.fc.held[i], "job", &j, NULL);
        n += j && !strcmp(j, job);
    }
    return n;
}

static void ack_output(struct cairn_msg *m)
{
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    fc_send(r, NULL);
    cairn_msg_destroy(&r);
}

static void release_outputs(void)
{
    for (size_t i = 0; i < g.fc.nheld; i++) {
        ack_output(g.fc.held[i]);
        cairn_msg_destroy(&g.fc.held[i]);
    }
    g.fc.nheld = 0;
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
        assert_int_equal(cairn_msg_get_str(m, "fingerprint", &s, NULL), CAIRN_OK);
        assert_int_equal(strncmp(s, "runsc-0", 7), 0);
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
    if (t == CAIRN_MSG_JOB_REFS) { /* refs of written trees (retention's GC): acknowledged, not checked here */
        r = cairn_msg_reply(m, CAIRN_OK, NULL);
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
            u->reads++;
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
        uint64_t seq = 0, stream = 0;
        const uint8_t *p = NULL;
        size_t len = 0;
        assert_int_equal(cairn_msg_get_str(m, "job", &job, NULL), CAIRN_OK);
        assert_int_equal(cairn_msg_get_u64(m, "seq", &seq), CAIRN_OK);
        assert_int_equal(cairn_msg_get_u64(m, "stream", &stream), CAIRN_OK);
        assert_int_equal(cairn_msg_frame(m, 0, &p, &len), CAIRN_OK);
        struct out *o = out_of(job, true);
        if (seq != o->frames)
            o->bad_order = true;
        o->frames++;
        o->frame_max = CAIRN_MAX(o->frame_max, len);
        int s = stream == 2 ? 1 : 0;
        if (o->data[s].len == 0 && len)
            o->first_at[s] = now_s();
        assert_int_equal(cairn_buf_append(&o->data[s], p, len), CAIRN_OK);
        if (!strcmp(job, g.fc.refuse_outputs)) {
            struct cairn_msg *er = cairn_msg_reply(m, CAIRN_ENOTFOUND, "the client of the stream went away");
            fc_send(er, NULL);
            cairn_msg_destroy(&er);
            return false;
        }
        if (g.fc.hold_outputs) {
            assert_true(g.fc.nheld < CAIRN_ARRAY_LEN(g.fc.held));
            g.fc.held[g.fc.nheld++] = m;
            o->unacked_max = CAIRN_MAX(o->unacked_max, held_for(job));
            return true;
        }
        ack_output(m);
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

/* Send the dispatch; asserts it is accepted. */
static void dispatch(const char *worker, struct cairn_msg *m)
{
    uint64_t rid = ++g.fc.rid;
    cairn_msg_set_rid(m, rid);
    struct fw *w = fw_find(worker);
    fc_send(m, &w->route);
    cairn_msg_destroy(&m);
    int code = -1;
    WAIT_FOR(acked(rid, &code), 5000);
    assert_int_equal(code, CAIRN_OK);
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

/* Put a layer reference {image, manifest_len, manifest} built from a job result (or the base) into arr. */
static void push_layer(struct cairn_msg *m, struct cairn_mval *arr, const char *image, struct cairn_msg *from)
{
    struct cairn_mval *rec = cairn_mval_push_map(m, arr);
    cairn_mval_put_str(m, rec, "image", image);
    const uint8_t *man = NULL;
    size_t ml = 0;
    assert_int_equal(cairn_mval_bin(result_field(from, "manifest"), &man, &ml), CAIRN_OK);
    cairn_mval_put_u64(m, rec, "manifest_len", result_u64(from, "manifest_len"));
    cairn_mval_put_bin(m, rec, "manifest", man, ml);
}

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
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    struct cairn_mval *argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "sh");
    cairn_mval_push_str(m, argv, "-c");
    cairn_mval_push_str(m, argv, script);
    cairn_mval_put_u64(m, p, "timeout_ms", 30000);
    dispatch(worker, m);
    struct cairn_msg *r = expect_ok(job, 40000);
    int64_t code = -1;
    assert_int_equal(cairn_mval_i64(result_field(r, "exit_code"), &code), CAIRN_OK);
    *o = out_of(job, true);
    assert_false((*o)->bad_order);
    assert_int_equal(cairn_buf_append(&(*o)->data[0], "", 1), CAIRN_OK); /* NUL-terminate */
    (*o)->data[0].len--;
    assert_int_equal(cairn_buf_append(&(*o)->data[1], "", 1), CAIRN_OK);
    (*o)->data[1].len--;
    return (int)code;
}

static const char *out_str(struct out *o, int s) { return o->data[s].data ? (const char *)o->data[s].data : ""; }

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

/* The cgroup parent of a worker's runtime: "cairn-" + 16 hex of BLAKE2b-128(its canonical state root). */
static void cg_parent_of(const struct node *n, char out[32])
{
    char *root = realpath(tu_path("%s/runtime", n->dir), NULL);
    assert_non_null(root);
    uint8_t h[CAIRN_CHECKSUM_BYTES];
    char hex[2 * CAIRN_CHECKSUM_BYTES + 1];
    cairn_checksum((const uint8_t *)root, strlen(root), h);
    cairn_hex_encode(hex, h, sizeof(h));
    snprintf(out, 32, "cairn-%.16s", hex);
    free(root);
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
    /* the same settings as a file, for the binary */
    char text[4096];
    int len = snprintf(text, sizeof(text),
                       "id = %s\ndata_dir = %s\nkeys = %s/%s.key\ncoordinator = %s\ncoordinator_key = %s/coordinator.pub\n"
                       "master_key = %s/master.key\npeer_endpoint = tcp://127.0.0.1:*\ncapacity = %u\njob_threads = 3\n"
                       "log_level = %s\n",
                       id, n->dir, g.dir, id, cairn_sock_endpoint(g.fc.s), g.dir, g.dir, capacity,
                       getenv("CAIRN_TEST_LOG") && !strcmp(getenv("CAIRN_TEST_LOG"), "debug") ? "debug" : "info"); /* read by the test */
    tu_write_file(tu_path("%s/%s.conf", g.dir, id), text, (size_t)len);
    snprintf(g.fc.w[n - g.nodes].id, sizeof(g.fc.w[0].id), "%s", id);
}

static void node_start_thread(struct node *n)
{
    atomic_store(&n->stop, 0);
    assert_int_equal(pthread_create(&n->th, NULL, node_main, n), 0);
    n->running = true;
}

static void node_stop_thread(struct node *n)
{
    if (!n->running)
        return;
    atomic_store(&n->stop, 1);
    pthread_join(n->th, NULL);
    n->running = false;
}

static void node_start_binary(struct node *n)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen(tu_path("%s/%s.log", g.dir, n->id), "a", stderr))
            _exit(127);
        execl(CAIRN_WORKER_BIN, "cairn-worker", "--config", tu_path("%s/%s.conf", g.dir, n->id), (char *)NULL);
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

static void build_tarball(void)
{
    static const char *applets[] = {"sh",    "echo", "cat",  "ls",   "sleep",    "true",     "rm",  "mkdir",
                                    "mv",    "chmod", "ln",  "seq",  "md5sum",   "find",     "sort", "stat",
                                    "readlink", "cut", "hostname", "dd", "test", "printf", "wc", "grep", "ps", NULL};
    const char *root = tu_path("%s/rootfs", g.dir);
    char rootc[PATH_MAX];
    snprintf(rootc, sizeof(rootc), "%s", root);
    assert_int_equal(tu_sh("mkdir -p '%s/bin' '%s/etc' '%s/tmp' '%s/srv/old' && cp /bin/busybox '%s/bin/'", rootc,
                           rootc, rootc, rootc, rootc),
                     0);
    for (int i = 0; applets[i]; i++)
        assert_int_equal(symlink("busybox", tu_path("%s/bin/%s", rootc, applets[i])), 0);
    const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n";
    tu_write_file(tu_path("%s/etc/passwd", rootc), passwd, strlen(passwd));
    tu_write_file(tu_path("%s/etc/motd", rootc), "hello\n", 6);
    tu_write_file(tu_path("%s/srv/old/file", rootc), "old\n", 4);
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

/* The reference of the same tarball imported into a store of the test's own, and its unique chunk ids. */
static void local_import(void)
{
    struct cairn_store *s = NULL;
    struct cairn_domain *d = NULL;
    assert_int_equal(cairn_store_open(&s, tu_path("%s/local-store", g.dir), true), CAIRN_OK);
    assert_int_equal(cairn_domain_new_managed(&d, g.master, "default"), CAIRN_OK);
    assert_int_equal(cairn_archive_import(s, d, tu_path("%s/image.tar", g.dir), NULL, &g.base, NULL), CAIRN_OK);
    assert_int_equal(cairn_tree_chunks(s, d, &g.base, collect_id, NULL), CAIRN_OK);
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
    const char *rids[] = {RID1, RID2, RID3, RID4, RID5, RID6};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(rids); i++)
        tu_sh("for c in /sys/fs/cgroup/*/*/%s; do [ -d \"$c\" ] && rmdir \"$c\"; done 2>/dev/null; true", rids[i]);
    for (size_t i = 0; i < NW; i++) {
        struct stat st;
        if (stat(tu_path("%s/runtime", g.nodes[i].dir), &st) != 0)
            continue;
        char parent[32];
        cg_parent_of(&g.nodes[i], parent);
        tu_sh("rmdir /sys/fs/cgroup/*/%s 2>/dev/null; true", parent);
    }
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
    g.dir = tu_tempdir("worker-images");
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
    uint64_t seed = 11;
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
    const unsigned caps[NW] = {4, 1, 4};
    const char *pubs[NW];
    for (size_t i = 0; i < NW; i++) {
        node_config(&g.nodes[i], ids[i], caps[i]);
        pubs[i] = g.nodes[i].keys.public_z85;
    }
    assert_int_equal(cairn_net_allow_set(fc->net, "workers", pubs, NW), CAIRN_OK);
    node_start_thread(&g.nodes[0]);
    node_start_thread(&g.nodes[1]);
    WAIT_FOR(g.fc.w[0].heartbeats > 0 && g.fc.w[1].heartbeats > 0, 15000);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int ret = 0;
    if (!g.skip) {
        int st = node_stop_binary(&g.nodes[2]);
        if (st != 0) { /* e.g. a sanitizer report */
            print_error("cairn-worker w3 exited %d; the end of its log:\n", st);
            tu_sh("tail -40 '%s/w3.log' >&2", g.dir);
            ret = -1;
        }
        node_stop_thread(&g.nodes[0]);
        node_stop_thread(&g.nodes[1]);
        ret = g.nodes[0].rc == CAIRN_OK && g.nodes[1].rc == CAIRN_OK ? ret : -1;
        force_cleanup();
    }
    for (size_t i = 0; i < NW; i++) {
        cairn_wk_config_release(&g.nodes[i].cfg);
        cairn_curve_keys_clear(&g.nodes[i].keys);
    }
    for (size_t i = 0; i < g.fc.nres; i++)
        cairn_msg_destroy(&g.fc.res[i].m);
    for (size_t i = 0; i < g.fc.nheld; i++)
        cairn_msg_destroy(&g.fc.held[i]);
    for (size_t i = 0; i < g.fc.nouts; i++) {
        cairn_buf_release(&g.fc.outs[i].data[0]);
        cairn_buf_release(&g.fc.outs[i].data[1]);
    }
    cairn_sock_destroy(&g.fc.s);
    cairn_net_destroy(&g.fc.net);
    cairn_tree_ref_release(&g.base);
    free(g.base_ids);
    free(g.tar);
    if (!mounted_below(g.dir))
        tu_rmrf(g.dir);
    else
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

static void add_upload(const char *job, const uint8_t *data, size_t len)
{
    struct upload *u = &g.fc.ups[g.fc.nups++];
    snprintf(u->job, sizeof(u->job), "%s", job);
    u->data = data;
    u->len = len;
}

static void test_import(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    add_upload("jb-imp1", g.tar, g.tar_len);
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-imp1", "image-import", &p);
    cairn_mval_put_str(m, p, "image", IMG_BASE);
    dispatch("w1", m);
    struct cairn_msg *r = expect_ok("jb-imp1", 30000);
    g_import_res = r;
    /* pieces of at most PIECE_CAP: the reader asked again from where each short answer stopped */
    assert_true(g.fc.ups[0].reads >= g.tar_len / PIECE_CAP);
    /* the same layer reference as a local import of the same tarball */
    assert_int_equal(result_u64(r, "manifest_len"), g.base.manifest_len);
    const uint8_t *man = NULL;
    size_t ml = 0;
    assert_int_equal(cairn_mval_bin(result_field(r, "manifest"), &man, &ml), CAIRN_OK);
    assert_int_equal(ml, (size_t)g.base.n_chunks * 36);
    for (uint32_t i = 0; i < g.base.n_chunks; i++) {
        assert_memory_equal(man + i * 36, g.base.chunks[i].id, CAIRN_CHUNK_ID_BYTES);
        assert_int_equal(cairn_load_le32(man + i * 36 + 32), g.base.chunks[i].len);
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
    assert_int_equal(cairn_domain_new_managed(&d, g.master, "default"), CAIRN_OK);
    char dom[33];
    cairn_hex_encode(dom, cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES);
    cairn_domain_destroy(&d);
    assert_true(g.n_base_ids > 10 && g.n_base_ids <= 256);
    for (int w = 0; w < 2; w++) {
        char job[32];
        snprintf(job, sizeof(job), "jb-has-%d", w);
        m = job_new(job, "chunk-has", &p);
        cairn_mval_put_str(m, p, "domain", dom);
        struct cairn_mval *arr = cairn_mval_put_array(m, p, "ids");
        for (size_t i = 0; i < g.n_base_ids; i++) {
            char hex[65];
            cairn_hex_encode(hex, g.base_ids[i], CAIRN_CHUNK_ID_BYTES);
            cairn_mval_push_str(m, arr, hex);
        }
        dispatch(w == 0 ? "w1" : "w2", m);
        struct cairn_msg *hr = expect_ok(job, 5000);
        const struct cairn_mval *held = result_field(hr, "held");
        for (size_t i = 0; i < g.n_base_ids; i++) {
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
    node_start_binary(&g.nodes[2]);
    WAIT_FOR(g.fc.w[2].heartbeats > 0, 15000);
    assert_int_equal(g.fc.w[2].n_reg_sandboxes, 0);
    fc_pump(300); /* the membership with three workers reaches everyone */
    create("w3", "jb-c1", RID1, "box1", NULL, NULL);
    create("w3", "jb-c2", RID2, "box2", NULL, NULL); /* concurrently: one layer build */
    struct cairn_msg *r1 = expect_ok("jb-c1", 60000), *r2 = expect_ok("jb-c2", 60000);
    uint64_t f1 = result_u64(r1, "fetched_chunks"), f2 = result_u64(r2, "fetched_chunks");
    print_message("create: %llu + %llu chunks fetched (%zu in the image), %llu / %llu ms\n",
                  (unsigned long long)f1, (unsigned long long)f2, g.n_base_ids,
                  (unsigned long long)result_u64(r1, "create_ms"), (unsigned long long)result_u64(r2, "create_ms"));
    assert_int_equal(f1 + f2, g.n_base_ids);
    assert_true(f1 == 0 || f2 == 0);
    assert_true(result_u64(r1, "fetched_bytes") + result_u64(r2, "fetched_bytes") > 500000);
    /* a resent dispatch for a sandbox that runs already: no second sandbox */
    create("w3", "jb-c1-again", RID1, "box1", NULL, NULL);
    assert_int_equal(result_u64(expect_ok("jb-c1-again", 10000), "create_ms"), 0);
    WAIT_FOR(g.fc.w[2].sandboxes == 2, 3000);
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
    g.fc.hold_outputs = true;
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
    g.fc.hold_outputs = false;
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
    snprintf(g.fc.refuse_outputs, sizeof(g.fc.refuse_outputs), "jb-gone");
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
    struct node *w3 = &g.nodes[2];
    int regs = g.fc.w[2].registrations;
    assert_int_equal(node_stop_binary(w3), 0);
    node_start_binary(w3);
    WAIT_FOR(g.fc.w[2].registrations > regs, 15000);
    assert_int_equal(g.fc.w[2].n_reg_sandboxes, 2);
    assert_string_equal(g.fc.w[2].reg_sandboxes[0], RID1);
    assert_string_equal(g.fc.w[2].reg_sandboxes[1], RID2);
    WAIT_FOR(g.fc.w[2].heartbeats > 0 && g.fc.w[2].sandboxes == 2, 5000);
    size_t loglen = 0;
    char *log = (char *)tu_read_file(tu_path("%s/w3.log", g.dir), &loglen);
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
    for (size_t i = 0; i < NW; i++) {
        const char *root = tu_path("%s/runtime", g.nodes[i].dir);
        char rootc[PATH_MAX];
        snprintf(rootc, sizeof(rootc), "%s", root);
        assert_false(mounted_below(rootc));
        assert_int_equal(dir_entries(tu_path("%s/sandboxes", rootc)), 0);
        for (size_t k = 0; k < CAIRN_ARRAY_LEN(rids); k++)
            assert_false(runsc_state_has(tu_path("%s/runsc", rootc), rids[k]));
    }
    for (size_t k = 0; k < CAIRN_ARRAY_LEN(rids); k++)
        assert_false(cgroup_exists(rids[k]));
    for (size_t i = 0; i < NW; i++) { /* nor the runtimes' parent cgroups, once they have no sandbox */
        char parent[32];
        cg_parent_of(&g.nodes[i], parent);
        assert_int_not_equal(tu_sh("ls -d /sys/fs/cgroup/*/%s >/dev/null 2>&1", parent), 0);
    }
    for (size_t i = 0; i < NW; i++) {
        int hb = g.fc.w[i].heartbeats;
        WAIT_FOR(g.fc.w[i].heartbeats > hb, 3000);
        assert_int_equal(g.fc.w[i].sandboxes, 0);
    }
    /* the layers stay cached */
    assert_true(dir_entries(tu_path("%s/layers", g.nodes[2].dir)) >= 1);
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
