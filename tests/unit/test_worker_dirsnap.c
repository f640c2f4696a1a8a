/*
 * test_worker_dirsnap.c: the worker side of directory snapshots and CSEK (docs/internals/snapshots.md:
 * sandbox-mount, sandbox-unmount, snapshot-dir, delete-chunks, job.refs, the DEK in job.dispatch) with
 * real runsc sandboxes, real RocksDB stores and real CURVE sockets, against a scripted coordinator played
 * by the test. The fixture is a trimmed copy of test_worker_images.c's (workers in threads of this process,
 * the coordinator answering register/heartbeat/upload.read/job.output, plus job.refs recorded per job);
 * copied rather than shared because that file is not a library and its helpers are static.
 *
 * Pinned down:
 * - image-import and snapshot-dir send job.refs (seq 0, 1, ...; the job's domain) covering exactly the
 *   tree's chunks (manifest + data); an error reply to job.refs fails the job;
 * - mount of an empty dir, writes, snapshot-dir of it (a mount below it left out); a path that is not a
 *   mount is refused (EINVAL); a second mount at the same path is EEXIST;
 * - mount of an image shows its files, writable; its snapshot-dir mounted into a sandbox on another worker
 *   shows the changes; unmount reveals what was below (and a resent unmount succeeds);
 * - CSEK: snapshot-dir with a DEK in the dispatch stores in the CSEK domain (refs say so; a re-snapshot
 *   with the same DEK dedups, one without a DEK is managed); mounting it
 *   needs that DEK (none: EKEY; managed domain: fails; another DEK: EKEY "data key does not match domain");
 *   its layer lives under DATA_DIR/private/<runtime id>, removed at unmount and terminate, and at worker
 *   start for sandboxes that are not re-adopted (kept for those that are); afterwards no file under any
 *   worker's data dir holds the DEK (raw, lower or upper hex);
 * - delete-chunks removes exactly the given ids (missing ones are fine) and reports how many it held.
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
#include <ftw.h>
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

#define IMG_BASE "im-00000000000000c1"
#define IMG_D1 "im-00000000000000d1"
#define IMG_D2 "im-00000000000000d2"
#define IMG_C1 "im-00000000000000e1"
#define RID1 "aaaa1111111111111111111111111111"
#define RID2 "aaaa2222222222222222222222222222"
#define RID_FAKE "aaaaffffffffffffffffffffffffffff"

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
};

struct res {
    char job[65];
    struct cairn_msg *m;
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

/* job.refs of one job */
struct refs {
    char job[65];
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES];
    bool dom_mixed, bad_seq;
    uint64_t batches;
    uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n;
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
    struct upload ups[4];
    size_t nups;
    struct refs refs[32];
    size_t nrefs;
    char refuse_refs[65];
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
    uint8_t dek[CAIRN_KEY_BYTES], dek2[CAIRN_KEY_BYTES];
    uint8_t csek_dom[CAIRN_DOMAIN_ID_BYTES];
    uint8_t *tar;
    size_t tar_len;
    struct cairn_tree_ref base;
    uint8_t (*base_ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n_base_ids;
    struct cairn_msg *import_res, *d1_res, *d2_res, *c1_res;
    int log_fd;
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

static void fc_refs(struct cairn_msg *m)
{
    const char *job = NULL;
    uint64_t seq = 0;
    const uint8_t *dom = NULL;
    size_t dl = 0, n = 0;
    const struct cairn_mval *ids = NULL;
    assert_int_equal(cairn_msg_get_str(m, "job", &job, NULL), CAIRN_OK);
    assert_int_equal(cairn_msg_get_u64(m, "seq", &seq), CAIRN_OK);
    assert_int_equal(cairn_msg_get_bin(m, "domain", &dom, &dl), CAIRN_OK);
    assert_int_equal(dl, CAIRN_DOMAIN_ID_BYTES);
    assert_int_equal(cairn_msg_get_array(m, "ids", &ids, &n), CAIRN_OK);
    assert_true(n >= 1 && n <= 4096);
    struct cairn_msg *r;
    if (!strcmp(job, g.fc.refuse_refs)) {
        r = cairn_msg_reply(m, CAIRN_ENOTFOUND, "no such job (refused by the test)");
        fc_send(r, NULL);
        cairn_msg_destroy(&r);
        return;
    }
    struct refs *x = refs_of(job, true);
    if (seq < x->batches) { /* a resend: already counted */
        r = cairn_msg_reply(m, CAIRN_OK, NULL);
        fc_send(r, NULL);
        cairn_msg_destroy(&r);
        return;
    }
    if (seq != x->batches)
        x->bad_seq = true;
    if (x->batches == 0)
        memcpy(x->dom, dom, CAIRN_DOMAIN_ID_BYTES);
    else if (memcmp(x->dom, dom, CAIRN_DOMAIN_ID_BYTES) != 0)
        x->dom_mixed = true;
    x->batches++;
    x->ids = realloc(x->ids, (x->n + n) * sizeof(*x->ids));
    assert_non_null(x->ids);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *id = NULL;
        size_t il = 0;
        assert_int_equal(cairn_mval_bin(cairn_mval_at(ids, i), &id, &il), CAIRN_OK);
        assert_int_equal(il, CAIRN_CHUNK_ID_BYTES);
        memcpy(x->ids[x->n++], id, CAIRN_CHUNK_ID_BYTES);
    }
    r = cairn_msg_reply(m, CAIRN_OK, NULL);
    fc_send(r, NULL);
    cairn_msg_destroy(&r);
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
            size_t start = off < u->len ? (size_t)off : u->len;
            size_t n = CAIRN_MIN((size_t)len, u->len - start);
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
    if (t == CAIRN_MSG_JOB_REFS) {
        fc_refs(m);
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

static void expect_err(const char *job, int ms, int code, const char *needle)
{
    struct cairn_msg *r = result_of(job, ms);
    if ((int)err_code(r) != code || (needle && !strstr(err_msg(r), needle)))
        fail_msg("job %s: expected %s '%s', got %s: %s", job, cairn_err_name(code), needle ? needle : "",
                 cairn_err_name((int)err_code(r)), err_msg(r));
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

/* A layer reference {image, manifest_len, manifest} from a job result into arr. */
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

static int g_job_seq;

static const char *next_job(const char *tag)
{
    static char buf[8][48];
    char *b = buf[g_job_seq % 8];
    snprintf(b, sizeof(buf[0]), "jb-%s-%d", tag, ++g_job_seq);
    return b;
}

static void create(const char *worker, const char *rid)
{
    const char *job = next_job("create");
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-create", &p);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "runtime_id", rid);
    struct cairn_mval *layers = cairn_mval_put_array(m, p, "layers");
    push_layer(m, layers, IMG_BASE, g.import_res);
    dispatch(worker, m);
    expect_ok(job, 60000);
}

static void terminate(const char *worker, const char *rid)
{
    const char *job = next_job("term");
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-terminate", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    dispatch(worker, m);
    expect_ok(job, 60000);
}

/* The dispatch of a sandbox-mount; layer image/res NULL: an empty mount. dek: CSEK (with g.csek_dom). */
static struct cairn_msg *mount_msg(const char *job, const char *rid, const char *path, const char *image,
                                   struct cairn_msg *from, bool csek, const uint8_t *dek)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-mount", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "path", path);
    cairn_mval_put_bool(m, p, "csek", csek);
    if (image) {
        struct cairn_mval *layers = cairn_mval_put_array(m, p, "layers");
        push_layer(m, layers, image, from);
    }
    if (dek) {
        cairn_msg_set_bin(m, "domain", g.csek_dom, CAIRN_DOMAIN_ID_BYTES);
        cairn_msg_set_bin(m, "dek", dek, CAIRN_KEY_BYTES);
    }
    return m;
}

static void mount_ok(const char *worker, const char *rid, const char *path, const char *image,
                     struct cairn_msg *from, const uint8_t *dek)
{
    const char *job = next_job("mount");
    dispatch(worker, mount_msg(job, rid, path, image, from, dek != NULL, dek));
    struct cairn_msg *r = expect_ok(job, 60000);
    (void)result_u64(r, "mount_ms");
    (void)result_u64(r, "fetched_chunks");
    (void)result_u64(r, "fetched_bytes");
}

static void unmount_ok(const char *worker, const char *rid, const char *path)
{
    const char *job = next_job("unmount");
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-unmount", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "path", path);
    dispatch(worker, m);
    expect_ok(job, 30000);
}

static struct cairn_msg *snapshot_dir_msg(const char *job, const char *rid, const char *path, const char *image,
                                          const uint8_t *dek)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "snapshot-dir", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "path", path);
    cairn_mval_put_str(m, p, "image", image);
    if (dek) {
        cairn_msg_set_bin(m, "domain", g.csek_dom, CAIRN_DOMAIN_ID_BYTES);
        cairn_msg_set_bin(m, "dek", dek, CAIRN_KEY_BYTES);
    }
    return m;
}

/* sh -c script in a sandbox through a sandbox-exec job; returns the exit code; *o: its output. */
static int sh_job(const char *worker, const char *rid, const char *script, struct out **o)
{
    const char *job = next_job("sh");
    char jb[48];
    snprintf(jb, sizeof(jb), "%s", job);
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(jb, "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    struct cairn_mval *argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "sh");
    cairn_mval_push_str(m, argv, "-c");
    cairn_mval_push_str(m, argv, script);
    cairn_mval_put_u64(m, p, "timeout_ms", 30000);
    dispatch(worker, m);
    struct cairn_msg *r = expect_ok(jb, 40000);
    int64_t code = -1;
    assert_int_equal(cairn_mval_i64(result_field(r, "exit_code"), &code), CAIRN_OK);
    *o = out_of(jb, true);
    assert_int_equal(cairn_buf_append(&(*o)->data[0], "", 1), CAIRN_OK); /* NUL-terminate */
    (*o)->data[0].len--;
    assert_int_equal(cairn_buf_append(&(*o)->data[1], "", 1), CAIRN_OK);
    (*o)->data[1].len--;
    return (int)code;
}

static const char *out_str(struct out *o, int s) { return o->data[s].data ? (const char *)o->data[s].data : ""; }

/* Run script; it must exit 0 and print exactly `want` (NULL: anything). */
static void sh_expect(const char *worker, const char *rid, const char *script, const char *want)
{
    struct out *o = NULL;
    int code = sh_job(worker, rid, script, &o);
    if (code != 0)
        fail_msg("'%s' in %s exited %d: %s", script, rid, code, out_str(o, 1));
    if (want && strcmp(out_str(o, 0), want) != 0)
        fail_msg("'%s' in %s printed '%s', expected '%s'", script, rid, out_str(o, 0), want);
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

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---- the set of ids a tree should have in refs ---- */

static bool ids_have(const uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES], size_t n, const uint8_t *id)
{
    for (size_t i = 0; i < n; i++)
        if (!memcmp(ids[i], id, CAIRN_CHUNK_ID_BYTES))
            return true;
    return false;
}

/* refs of job: one domain, seq in order, no duplicate id. */
static struct refs *refs_check(const char *job, const uint8_t *dom)
{
    struct refs *x = refs_of(job, false);
    if (!x)
        fail_msg("no job.refs from %s", job);
    assert_false(x->bad_seq);
    assert_false(x->dom_mixed);
    assert_memory_equal(x->dom, dom, CAIRN_DOMAIN_ID_BYTES);
    for (size_t i = 0; i < x->n; i++)
        assert_false(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, i, x->ids[i]));
    return x;
}

/* Every manifest chunk of a result's layer reference is in refs; returns how many distinct ones. */
static size_t refs_cover_manifest(struct refs *x, struct cairn_msg *r)
{
    const uint8_t *man = NULL;
    size_t ml = 0, distinct = 0;
    assert_int_equal(cairn_mval_bin(result_field(r, "manifest"), &man, &ml), CAIRN_OK);
    for (size_t i = 0; i < ml / 36; i++) {
        assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, man + i * 36));
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = !memcmp(man + k * 36, man + i * 36, CAIRN_CHUNK_ID_BYTES);
        distinct += !seen;
    }
    return distinct;
}

/* ---- setup ---- */

static void build_tarball(void)
{
    static const char *applets[] = {"sh", "echo", "cat", "ls", "sleep", "true", "rm", "mkdir", "printf", "test",
                                    "mv", NULL};
    char rootc[PATH_MAX];
    snprintf(rootc, sizeof(rootc), "%s/rootfs", g.dir);
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
    if (ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])g.base_ids, g.n_base_ids, id))
        return CAIRN_OK;
    g.base_ids = realloc(g.base_ids, (g.n_base_ids + 1) * sizeof(*g.base_ids));
    memcpy(g.base_ids[g.n_base_ids++], id, CAIRN_CHUNK_ID_BYTES);
    return CAIRN_OK;
}

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

static void node_config(struct node *n, const char *id)
{
    snprintf(n->id, sizeof(n->id), "%s", id);
    snprintf(n->dir, sizeof(n->dir), "%s/%s", g.dir, id);
    assert_int_equal(cairn_curve_keypair(&n->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_keys_write(tu_path("%s/%s.key", g.dir, id), &n->keys), CAIRN_OK);
    assert_int_equal(cairn_wk_config_defaults(&n->cfg), CAIRN_OK);
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
        {"capacity", "4"},
        {"job_threads", "3"},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(kv); i++)
        if (cairn_wk_config_set(&n->cfg, kv[i].k, kv[i].v) != CAIRN_OK)
            fail_msg("config %s: %s", kv[i].k, cairn_err_msg());
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
    /* keep answering meanwhile: a worker that stops waits for its results to be acknowledged */
    for (int i = 0; i < 100; i++)
        fc_pump(10);
    pthread_join(n->th, NULL);
    n->running = false;
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
    const char *rids[] = {RID1, RID2};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(rids); i++)
        tu_sh("for c in /sys/fs/cgroup/*/*/%s; do [ -d \"$c\" ] && rmdir \"$c\"; done 2>/dev/null; true", rids[i]);
}

static int group_setup(void **state)
{
    (void)state;
    const char *lv = getenv("CAIRN_TEST_LOG");
    enum cairn_log_level level = CAIRN_LOG_DEBUG;
    if (lv)
        cairn_log_level_parse(lv, &level);
    cairn_log_set_level(level);
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    g.dir = tu_tempdir("worker-dirsnap");
    if (!lv) { /* every log line at debug level into a file, searched for the DEK at the end */
        g.log_fd = open(tu_path("%s/test.log", g.dir), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        assert_true(g.log_fd >= 0);
        cairn_log_set_fd(g.log_fd);
    }
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
    uint64_t seed = 29;
    tu_fill_random(&seed, g.master, sizeof(g.master));
    tu_write_file(tu_path("%s/master.key", g.dir), g.master, sizeof(g.master));
    chmod(tu_path("%s/master.key", g.dir), 0600);
    local_import();
    /* the DEKs: random (a fixed seed would make them searchable in earlier runs' leftovers) */
    cairn_random_bytes(g.dek, sizeof(g.dek));
    cairn_random_bytes(g.dek2, sizeof(g.dek2));
    struct cairn_domain *cd = NULL;
    assert_int_equal(cairn_domain_new(&cd, g.dek), CAIRN_OK);
    memcpy(g.csek_dom, cairn_domain_id(cd), CAIRN_DOMAIN_ID_BYTES);
    cairn_domain_destroy(&cd);

    struct fc *fc = &g.fc;
    assert_int_equal(cairn_net_new(&fc->net), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&fc->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_public_write(tu_path("%s/coordinator.pub", g.dir), fc->keys.public_z85), CAIRN_OK);
    assert_int_equal(cairn_sock_server(fc->net, "tcp://127.0.0.1:*", &fc->keys, "workers", NULL, &fc->s), CAIRN_OK);
    const char *ids[NW] = {"w1", "w2", "w3"};
    const char *pubs[NW];
    for (size_t i = 0; i < NW; i++) {
        node_config(&g.nodes[i], ids[i]);
        pubs[i] = g.nodes[i].keys.public_z85;
    }
    assert_int_equal(cairn_net_allow_set(fc->net, "workers", pubs, NW), CAIRN_OK);
    for (size_t i = 0; i < NW; i++)
        node_start_thread(&g.nodes[i]);
    WAIT_FOR(g.fc.w[0].heartbeats > 0 && g.fc.w[1].heartbeats > 0 && g.fc.w[2].heartbeats > 0, 15000);
    fc_pump(300); /* the membership with three workers reaches everyone */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int ret = 0;
    if (!g.skip) {
        for (size_t i = 0; i < NW; i++) {
            node_stop_thread(&g.nodes[i]);
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
    cairn_tree_ref_release(&g.base);
    free(g.base_ids);
    free(g.tar);
    if (g.log_fd > 0) {
        cairn_log_set_fd(2);
        if (ret != 0)
            tu_sh("tail -30 '%s/test.log' >&2", g.dir);
        close(g.log_fd);
    }
    memset(g.dek, 0, sizeof(g.dek));
    memset(g.dek2, 0, sizeof(g.dek2));
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

static void managed_dom(uint8_t out[CAIRN_DOMAIN_ID_BYTES])
{
    struct cairn_domain *d = NULL;
    assert_int_equal(cairn_domain_new_managed(&d, g.master, "default"), CAIRN_OK);
    memcpy(out, cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES);
    cairn_domain_destroy(&d);
}

/* The id of a chunk holding exactly data (files under the chunker's minimum are one chunk). */
static void chunk_id_of(const uint8_t *dek, const char *data, uint8_t out[CAIRN_CHUNK_ID_BYTES])
{
    struct cairn_domain *d = NULL;
    if (dek)
        assert_int_equal(cairn_domain_new(&d, dek), CAIRN_OK);
    else
        assert_int_equal(cairn_domain_new_managed(&d, g.master, "default"), CAIRN_OK);
    cairn_chunk_id(d, (const uint8_t *)data, strlen(data), out);
    cairn_domain_destroy(&d);
}

/* How many workers hold id (domain dom), by chunk-has jobs. */
static int holders(const uint8_t *dom, const uint8_t *id)
{
    char dhex[33], hex[65];
    cairn_hex_encode(dhex, dom, CAIRN_DOMAIN_ID_BYTES);
    cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
    int n = 0;
    for (size_t w = 0; w < NW; w++) {
        const char *job = next_job("has");
        char jb[48];
        snprintf(jb, sizeof(jb), "%s", job);
        struct cairn_mval *p;
        struct cairn_msg *m = job_new(jb, "chunk-has", &p);
        cairn_mval_put_str(m, p, "domain", dhex);
        struct cairn_mval *arr = cairn_mval_put_array(m, p, "ids");
        cairn_mval_push_str(m, arr, hex);
        dispatch(g.nodes[w].id, m);
        bool b = false;
        assert_int_equal(cairn_mval_bool(cairn_mval_at(result_field(expect_ok(jb, 5000), "held"), 0), &b), CAIRN_OK);
        n += b;
    }
    return n;
}

/* ---- tests ---- */

static void test_import_refs(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    struct upload *u = &g.fc.ups[g.fc.nups++];
    snprintf(u->job, sizeof(u->job), "jb-import");
    u->data = g.tar;
    u->len = g.tar_len;
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-import", "image-import", &p);
    cairn_mval_put_str(m, p, "image", IMG_BASE);
    dispatch("w1", m);
    g.import_res = expect_ok("jb-import", 30000);
    assert_int_equal(result_u64(g.import_res, "manifest_len"), g.base.manifest_len);
    /* refs: exactly the tree's chunks (manifest + data), in the managed domain */
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES];
    managed_dom(dom);
    struct refs *x = refs_check("jb-import", dom);
    assert_int_equal(x->n, g.n_base_ids);
    for (size_t i = 0; i < g.n_base_ids; i++)
        assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, g.base_ids[i]));
    create("w1", RID1);
}

static void test_mount_empty(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    mount_ok("w1", RID1, "/data", NULL, NULL, NULL);
    mount_ok("w1", RID1, "/data/inner", NULL, NULL, NULL); /* a mount below: left out of the snapshot */
    sh_expect("w1", RID1,
              "mkdir -p /data/sub && printf 'hello-dir' > /data/a && printf 'x-file' > /data/sub/b && "
              "printf 'inner' > /data/inner/z && cat /data/a",
              "hello-dir");
    /* the same path again: EEXIST */
    const char *job = next_job("mount");
    dispatch("w1", mount_msg(job, RID1, "/data", NULL, NULL, false, NULL));
    expect_err(job, 10000, CAIRN_EEXIST, NULL);
    /* a path that was not mounted: refused */
    job = next_job("sd");
    dispatch("w1", snapshot_dir_msg(job, RID1, "/srv", IMG_D2, NULL));
    expect_err(job, 10000, CAIRN_EINVAL, "was not mounted with 'cairn sandbox mount'");

    dispatch("w1", snapshot_dir_msg("jb-sd1", RID1, "/data", IMG_D1, NULL));
    g.d1_res = expect_ok("jb-sd1", 30000);
    assert_int_equal(result_u64(g.d1_res, "files"), 2); /* a, sub/b; not inner/z */
    assert_int_equal(result_u64(g.d1_res, "size"), 9 + 6);
    (void)result_u64(g.d1_res, "capture_ms");
    (void)result_u64(g.d1_res, "stored");
    const char *img = NULL;
    size_t il = 0;
    assert_int_equal(cairn_mval_str(result_field(g.d1_res, "image"), &img, &il), CAIRN_OK);
    assert_string_equal(img, IMG_D1);
    /* refs: the manifest chunks + the two file chunks, nothing else */
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES], ca[CAIRN_CHUNK_ID_BYTES], cb[CAIRN_CHUNK_ID_BYTES], cz[CAIRN_CHUNK_ID_BYTES];
    managed_dom(dom);
    struct refs *x = refs_check("jb-sd1", dom);
    size_t nman = refs_cover_manifest(x, g.d1_res);
    chunk_id_of(NULL, "hello-dir", ca);
    chunk_id_of(NULL, "x-file", cb);
    chunk_id_of(NULL, "inner", cz);
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, ca));
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, cb));
    assert_false(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, cz));
    assert_int_equal(x->n, nman + 2);

    /* an error reply to job.refs fails the job with the coordinator's code */
    snprintf(g.fc.refuse_refs, sizeof(g.fc.refuse_refs), "jb-sd-refused");
    dispatch("w1", snapshot_dir_msg("jb-sd-refused", RID1, "/data", IMG_D2, NULL));
    expect_err("jb-sd-refused", 30000, CAIRN_ENOTFOUND, "refused by the test");
    g.fc.refuse_refs[0] = '\0';
}

static void test_mount_image(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    mount_ok("w1", RID1, "/img", IMG_BASE, g.import_res, NULL);
    sh_expect("w1", RID1, "cat /img/etc/motd /img/srv/old/file", "hello\nold\n");
    sh_expect("w1", RID1, "printf 'new' > /img/new && rm /img/srv/old/file && printf 'more' >> /img/etc/motd", NULL);
    dispatch("w1", snapshot_dir_msg("jb-sd2", RID1, "/img", IMG_D2, NULL));
    g.d2_res = expect_ok("jb-sd2", 30000);

    /* into a sandbox on another worker */
    create("w3", RID2);
    mount_ok("w3", RID2, "/m2", IMG_D2, g.d2_res, NULL);
    sh_expect("w3", RID2, "cat /m2/etc/motd /m2/new; test ! -e /m2/srv/old/file && test -x /m2/bin/busybox && echo ok",
              "hello\nmorenewok\n");
    sh_expect("w3", RID2, "printf w > /m2/w && cat /m2/w", "w"); /* writable */
    mount_ok("w3", RID2, "/deep/m1", IMG_D1, g.d1_res, NULL);   /* missing dirs are made */
    sh_expect("w3", RID2, "cat /deep/m1/a /deep/m1/sub/b; test -e /deep/m1/inner/z || echo ' no-z'",
              "hello-dirx-file no-z\n");
}

static void test_unmount_reveals(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    mount_ok("w1", RID1, "/srv/old", NULL, NULL, NULL);
    sh_expect("w1", RID1, "test ! -e /srv/old/file && echo hidden", "hidden\n");
    unmount_ok("w1", RID1, "/srv/old");
    sh_expect("w1", RID1, "cat /srv/old/file", "old\n");
    unmount_ok("w1", RID1, "/srv/old"); /* a resent unmount: fine */
    /* the snapshot of a path that is no longer mounted: refused */
    const char *job = next_job("sd");
    dispatch("w1", snapshot_dir_msg(job, RID1, "/srv/old", IMG_D2, NULL));
    expect_err(job, 10000, CAIRN_EINVAL, "was not mounted");
}

static void test_csek(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    const char *secret = "csek-protected-content";
    mount_ok("w1", RID1, "/sec", NULL, NULL, NULL);
    sh_expect("w1", RID1, "printf 'csek-protected-content' > /sec/s && mkdir /sec/d && printf 'x-file' > /sec/d/b",
              NULL);
    dispatch("w1", snapshot_dir_msg("jb-sdc", RID1, "/sec", IMG_C1, g.dek));
    g.c1_res = expect_ok("jb-sdc", 30000);
    /* refs in the CSEK domain; the chunk ids are the CSEK domain's */
    struct refs *x = refs_check("jb-sdc", g.csek_dom);
    uint8_t cs[CAIRN_CHUNK_ID_BYTES], cm[CAIRN_CHUNK_ID_BYTES];
    chunk_id_of(g.dek, secret, cs);
    chunk_id_of(NULL, secret, cm);
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, cs));
    assert_false(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, cm));
    size_t nman = refs_cover_manifest(x, g.c1_res);
    assert_int_equal(x->n, nman + 2);
    assert_true(holders(g.csek_dom, cs) >= 1);
    uint8_t mdom[CAIRN_DOMAIN_ID_BYTES];
    managed_dom(mdom);
    assert_int_equal(holders(mdom, cm), 0);

    /* mount it on another worker with the DEK: readable; its layer is private */
    mount_ok("w3", RID2, "/s2", IMG_C1, g.c1_res, g.dek);
    sh_expect("w3", RID2, "cat /s2/s /s2/d/b", "csek-protected-contentx-file");
    const char *priv = tu_path("%s/private/%s", g.nodes[2].dir, RID2);
    char privc[PATH_MAX];
    snprintf(privc, sizeof(privc), "%s", priv);
    assert_int_equal(dir_entries(privc), 1);
    assert_true(exists(tu_path("%s/0/path", privc)));
    assert_true(exists(tu_path("%s/0/l0/s", privc)));
    /* not in the shared layer cache */
    assert_false(exists(tu_path("%s/layers/%s", g.nodes[2].dir, IMG_C1)));

    /* without the DEK: the managed domain has no such chunks; csek without a key: EKEY; another DEK: EKEY */
    const char *job = next_job("mount");
    dispatch("w3", mount_msg(job, RID2, "/s3", IMG_C1, g.c1_res, false, NULL));
    struct cairn_msg *r = result_of(job, 60000);
    assert_int_not_equal(err_code(r), CAIRN_OK);
    job = next_job("mount");
    dispatch("w3", mount_msg(job, RID2, "/s3", IMG_C1, g.c1_res, true, NULL));
    expect_err(job, 10000, CAIRN_EKEY, "carries no data key");
    job = next_job("mount");
    dispatch("w3", mount_msg(job, RID2, "/s3", IMG_C1, g.c1_res, true, g.dek2));
    expect_err(job, 10000, CAIRN_EKEY, "data key does not match domain");
    sh_expect("w3", RID2, "test ! -e /s3/s && echo none", "none\n");
    assert_int_equal(dir_entries(privc), 1); /* the failed mounts left no private dir */

    /* re-snapshot of the mounted CSEK dir with the same DEK: unchanged chunks dedup (same ids) */
    sh_expect("w3", RID2, "printf 'more' > /s2/m", NULL);
    dispatch("w3", snapshot_dir_msg("jb-sdc2", RID2, "/s2", "im-00000000000000e2", g.dek));
    expect_ok("jb-sdc2", 30000);
    struct refs *x2 = refs_check("jb-sdc2", g.csek_dom);
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x2->ids, x2->n, cs));
    /* ... and without a key: a managed image of the same files */
    dispatch("w3", snapshot_dir_msg("jb-sdc3", RID2, "/s2", "im-00000000000000e3", NULL));
    expect_ok("jb-sdc3", 30000);
    struct refs *x3 = refs_check("jb-sdc3", mdom);
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x3->ids, x3->n, cm));
    assert_false(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x3->ids, x3->n, cs));

    /* unmount removes the private dir */
    unmount_ok("w3", RID2, "/s2");
    assert_false(exists(privc));
    sh_expect("w3", RID2, "test ! -e /s2/s && echo gone", "gone\n");
    /* mounted again, then the sandbox terminated: removed too */
    mount_ok("w3", RID2, "/s2", IMG_C1, g.c1_res, g.dek);
    assert_true(exists(tu_path("%s/0/l0/s", privc)));
    terminate("w3", RID2);
    assert_false(exists(privc));
}

static void test_private_cleanup_at_start(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    /* RID1 (w1) gets a CSEK mount; a leftover private dir of a sandbox that no longer exists is planted */
    mount_ok("w1", RID1, "/s9", IMG_C1, g.c1_res, g.dek);
    struct node *w1 = &g.nodes[0];
    char live[PATH_MAX + 64], fake[PATH_MAX + 64];
    snprintf(live, sizeof(live), "%s/private/%s", w1->dir, RID1);
    snprintf(fake, sizeof(fake), "%s/private/%s", w1->dir, RID_FAKE);
    assert_true(exists(live));
    assert_int_equal(tu_sh("mkdir -p '%s/0/l0' && echo x > '%s/0/l0/f'", fake, fake), 0);
    int regs = g.fc.w[0].registrations;
    node_stop_thread(w1);
    node_start_thread(w1);
    WAIT_FOR(g.fc.w[0].registrations > regs && g.fc.w[0].heartbeats > 0, 20000);
    fc_pump(300);
    assert_false(exists(fake));
    assert_true(exists(live)); /* re-adopted: kept */
    sh_expect("w1", RID1, "cat /s9/s", "csek-protected-content");
}

static void test_delete_chunks(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES], ca[CAIRN_CHUNK_ID_BYTES], cb[CAIRN_CHUNK_ID_BYTES];
    uint8_t none[CAIRN_CHUNK_ID_BYTES];
    managed_dom(dom);
    chunk_id_of(NULL, "hello-dir", ca);
    chunk_id_of(NULL, "x-file", cb);
    cairn_random_bytes(none, sizeof(none));
    int ha = holders(dom, ca), hb = holders(dom, cb);
    assert_true(ha >= 1 && hb >= 1);
    uint64_t deleted = 0;
    for (size_t w = 0; w < NW; w++) {
        char job[48];
        snprintf(job, sizeof(job), "jb-del-%zu", w);
        struct cairn_mval *p;
        struct cairn_msg *m = job_new(job, "delete-chunks", &p);
        cairn_mval_put_str(m, p, "worker", g.nodes[w].id);
        cairn_mval_put_bin(m, p, "domain", dom, sizeof(dom));
        uint8_t ids[2 * CAIRN_CHUNK_ID_BYTES];
        memcpy(ids, ca, CAIRN_CHUNK_ID_BYTES);
        memcpy(ids + CAIRN_CHUNK_ID_BYTES, none, CAIRN_CHUNK_ID_BYTES);
        cairn_mval_put_bin(m, p, "ids", ids, sizeof(ids));
        dispatch(g.nodes[w].id, m);
        deleted += result_u64(expect_ok(job, 10000), "deleted");
    }
    assert_int_equal(deleted, (uint64_t)ha);
    assert_int_equal(holders(dom, ca), 0);
    assert_int_equal(holders(dom, cb), hb); /* only the given ids */
    /* bad params */
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-del-bad", "delete-chunks", &p);
    cairn_mval_put_bin(m, p, "domain", dom, sizeof(dom));
    cairn_mval_put_bin(m, p, "ids", ca, 31);
    dispatch("w2", m);
    expect_err("jb-del-bad", 10000, CAIRN_EINVAL, "params.ids");
}

/* nftw callback state: does any file hold the DEK (raw, lower hex, upper hex)? */
static const char *g_found;

static int scan_file(const char *path, const struct stat *st, int type, struct FTW *f)
{
    (void)f;
    if (type != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    size_t n = 0;
    uint8_t *data = tu_read_file(path, &n);
    if (!data)
        return 0;
    char lo[65], up[65];
    cairn_hex_encode(lo, g.dek, sizeof(g.dek));
    for (int i = 0; i < 64; i++)
        up[i] = (char)(lo[i] >= 'a' && lo[i] <= 'f' ? lo[i] - 'a' + 'A' : lo[i]);
    up[64] = '\0';
    if (memmem(data, n, g.dek, sizeof(g.dek)) || memmem(data, n, lo, 64) || memmem(data, n, up, 64)) {
        static char where[PATH_MAX];
        snprintf(where, sizeof(where), "%s", path);
        g_found = where;
    }
    free(data);
    return 0;
}

static void test_no_key_on_disk(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    terminate("w1", RID1);
    assert_false(exists(tu_path("%s/private/%s", g.nodes[0].dir, RID1)));
    for (size_t i = 0; i < NW; i++) {
        /* the stores flushed: stop the worker so RocksDB writes everything it holds */
        node_stop_thread(&g.nodes[i]);
        assert_int_equal(g.nodes[i].rc, CAIRN_OK);
        g_found = NULL;
        assert_int_equal(nftw(g.nodes[i].dir, scan_file, 16, FTW_PHYS), 0);
        if (g_found)
            fail_msg("the DEK is in %s", g_found);
        assert_false(mounted_below(g.nodes[i].dir));
        assert_int_equal(dir_entries(tu_path("%s/private", g.nodes[i].dir)), 0);
    }
    /* nor any log line (every worker logged into this process's log, at debug level unless CAIRN_TEST_LOG) */
    if (g.log_fd > 0) {
        struct stat st;
        assert_int_equal(stat(tu_path("%s/test.log", g.dir), &st), 0);
        assert_true(st.st_size > 1000);
        g_found = NULL;
        scan_file(tu_path("%s/test.log", g.dir), &st, FTW_F, NULL);
        if (g_found)
            fail_msg("the DEK is in the log %s", g_found);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_refs),
        cmocka_unit_test(test_mount_empty),
        cmocka_unit_test(test_mount_image),
        cmocka_unit_test(test_unmount_reveals),
        cmocka_unit_test(test_csek),
        cmocka_unit_test(test_private_cleanup_at_start),
        cmocka_unit_test(test_delete_chunks),
        cmocka_unit_test(test_no_key_on_disk),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
