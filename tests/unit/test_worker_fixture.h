/*
 * test_worker_fixture.h: what the worker tests with real sandboxes share (header-only, one copy per test
 * executable: test_worker_images.c, test_worker_dirsnap.c, test_worker_memsnap.c).
 *
 * WF_NW workers, each the real daemon in a thread of this process (a test may run one as the cairn-worker
 * binary instead), against a scripted coordinator played by the test on a real CURVE ROUTER. It answers
 * worker.register (recording the sandboxes a worker re-adopted) and worker.heartbeat, sends memberships
 * (fc.dead: one worker announced dead), keeps every job.result (one per job: resends dropped), serves
 * upload.read from memory (in pieces of at most opts.piece_cap), records job.output per job (fc.hold_outputs:
 * acknowledgements held back; fc.refuse_outputs: one job's output refused) and job.refs per job
 * (opts.record_refs; else only acknowledged; fc.refuse_refs: one job's refs refused). Plus the dispatch
 * helpers, host-side checks and the setup/teardown of the temp dir, the busybox image tarball and its
 * import into a store of the test's own.
 *
 * Everything lives in the one global `wf`; wf_setup() fills it from a struct wf_opts, wf_stop() and
 * wf_release() take it down. With WF_NODE_ONLY defined before the include, only the first part is there:
 * a worker in a thread and the job.dispatch message (test_worker_cluster.c has a coordinator of its own).
 */
#ifndef CAIRN_TEST_WORKER_FIXTURE_H
#define CAIRN_TEST_WORKER_FIXTURE_H

#include "testutil.h"

#include "worker_config.h"
#include "worker_daemon.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/proto.h"
#include "cairn/transport.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

/* ---- a worker in a thread ---- */

struct node {
    char id[16];
    char dir[PATH_MAX];
    struct cairn_wk_config cfg;
    struct cairn_curve_keys keys;
    atomic_int stop;
    pthread_t th;
    bool running;
    int rc;
    pid_t pid; /* when it runs as the binary instead */
};

static inline void *node_main(void *arg)
{
    struct node *n = arg;
    struct cairn_wk_daemon_opts o = {.stop = &n->stop};
    n->rc = cairn_wk_daemon_run(&n->cfg, &o);
    if (n->rc != CAIRN_OK)
        fprintf(stderr, "worker %s: %s: %s\n", n->id, cairn_err_name(n->rc), cairn_err_msg());
    return NULL;
}

static inline void node_start_thread(struct node *n)
{
    atomic_store(&n->stop, 0);
    assert_int_equal(pthread_create(&n->th, NULL, node_main, n), 0);
    n->running = true;
}

/* Tell the thread to stop and wait for it (the caller serves the coordinator meanwhile, if it must). */
static inline void node_join(struct node *n)
{
    atomic_store(&n->stop, 1);
    pthread_join(n->th, NULL);
    n->running = false;
}

/* A job.dispatch without rid; params built by the caller into *params (a map of the message). */
static inline struct cairn_msg *job_new(const char *job, const char *kind, struct cairn_mval **params)
{
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_DISPATCH);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_str(m, "kind", kind);
    cairn_msg_set_str(m, "app", "default");
    *params = cairn_msg_set_map(m, "params");
    return m;
}

static inline uint64_t err_code(struct cairn_msg *r)
{
    uint64_t c = 999;
    assert_int_equal(cairn_msg_get_u64(r, "err_code", &c), CAIRN_OK);
    return c;
}

#ifndef WF_NODE_ONLY

#include "cairn/archive.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/log.h"
#include "cairn/store.h"
#include "cairn/tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define WF_NW 3
#define WF_HB_MS 200

static inline double now_s(void) { return (double)cairn_now_mono_ns() / 1e9; }

/* ---- the scripted coordinator ---- */

struct fw {
    char id[65];
    struct cairn_route route;
    char peer[257];
    char key[41];
    bool registered;
    int registrations, heartbeats;
    uint64_t sandboxes;        /* from the last heartbeat */
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

/* job.refs of one job (opts.record_refs) */
struct refs {
    char job[65];
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES]; /* of the first batch */
    bool dom_mixed, bad_seq;
    uint64_t batches; /* counted: seq 0, 1, ... (a resend of the last one is acknowledged, not counted) */
    uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n;
};

struct fc {
    struct cairn_net *net;
    struct cairn_curve_keys keys;
    struct cairn_sock *s;
    uint64_t epoch, rid;
    struct fw w[WF_NW];
    char dead[16]; /* reported dead in memberships */
    struct res res[160];
    size_t nres;
    struct out outs[64];
    size_t nouts;
    struct cairn_msg *held[64]; /* job.output requests not acknowledged yet */
    size_t nheld;
    bool hold_outputs;
    char refuse_outputs[65]; /* job.output of this job is answered with ENOTFOUND (the client went away) */
    struct upload ups[8];
    size_t nups;
    struct refs refs[32];
    size_t nrefs;
    char refuse_refs[65]; /* job.refs of this job is answered with ENOTFOUND */
    uint64_t acks[512];
    int ack_codes[512];
    size_t nacks;
};

struct wf_opts {
    const char *tag;                /* of the temp dir */
    enum cairn_log_level log_level; /* unless CAIRN_TEST_LOG says otherwise */
    void (*on_dir)(void);           /* called once wf.dir exists, before the checks that may skip */
    uint64_t master_seed;
    const char *const *applets; /* busybox applets of the image tarball, NULL-terminated */
    bool srv_old;               /* the image has /srv/old/file */
    unsigned caps[WF_NW];       /* each worker's capacity */
    size_t piece_cap;           /* upload.read is answered with at most this much; 0: what was asked */
    bool record_refs;           /* job.refs recorded per job, else only acknowledged */
    int stop_pump_ms;           /* the coordinator serves this long after telling a worker thread to stop */
    const char *const *rids;    /* runtime ids whose cgroups wf_stop() removes if left */
    size_t nrids;
};

static struct {
    struct wf_opts o;
    bool skip;
    char reason[256];
    char *dir;
    struct fc fc;
    struct node nodes[WF_NW];
    uint8_t master[CAIRN_KEY_BYTES];
    uint8_t *tar; /* the image tarball */
    size_t tar_len;
    /* the image's reference and unique chunk ids, from a local import of the same tarball */
    struct cairn_tree_ref base;
    uint8_t (*base_ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n_base_ids;
} wf;

static inline struct fw *fw_find(const char *id)
{
    for (size_t i = 0; i < WF_NW; i++)
        if (!strcmp(wf.fc.w[i].id, id))
            return &wf.fc.w[i];
    return NULL;
}

static inline struct node *node_of(const char *id)
{
    for (size_t i = 0; i < WF_NW; i++)
        if (!strcmp(wf.nodes[i].id, id))
            return &wf.nodes[i];
    return NULL;
}

static inline void fc_send(struct cairn_msg *m, const struct cairn_route *to)
{
    if (to)
        cairn_msg_set_route(m, to);
    int rc = cairn_sock_send(wf.fc.s, m);
    if (rc != CAIRN_OK && rc != CAIRN_ENOTFOUND)
        fail_msg("coordinator send %s: %s", cairn_msg_type_name(cairn_msg_type(m)), cairn_err_msg());
}

static inline void fc_reply(struct cairn_msg *m, int code, const char *text)
{
    struct cairn_msg *r = cairn_msg_reply(m, code, text);
    fc_send(r, NULL);
    cairn_msg_destroy(&r);
}

static inline void fc_membership(void)
{
    for (size_t t = 0; t < WF_NW; t++) {
        if (!wf.fc.w[t].registered)
            continue;
        struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_MEMBERSHIP);
        cairn_msg_set_rid(m, ++wf.fc.rid);
        cairn_msg_set_u64(m, "epoch", wf.fc.epoch);
        cairn_msg_set_u64(m, "replicas", 2);
        struct cairn_mval *arr = cairn_msg_set_array(m, "workers");
        for (size_t i = 0; i < WF_NW; i++) {
            struct fw *w = &wf.fc.w[i];
            if (!w->registered)
                continue;
            struct cairn_mval *rec = cairn_mval_push_map(m, arr);
            cairn_mval_put_str(m, rec, "id", w->id);
            cairn_mval_put_str(m, rec, "endpoint", w->peer);
            cairn_mval_put_str(m, rec, "public_key", w->key);
            cairn_mval_put_bool(m, rec, "alive", strcmp(w->id, wf.fc.dead) != 0);
        }
        fc_send(m, &wf.fc.w[t].route);
        cairn_msg_destroy(&m);
    }
}

static inline struct out *out_of(const char *job, bool create)
{
    for (size_t i = 0; i < wf.fc.nouts; i++)
        if (!strcmp(wf.fc.outs[i].job, job))
            return &wf.fc.outs[i];
    if (!create)
        return NULL;
    assert_true(wf.fc.nouts < CAIRN_ARRAY_LEN(wf.fc.outs));
    struct out *o = &wf.fc.outs[wf.fc.nouts++];
    memset(o, 0, sizeof(*o));
    snprintf(o->job, sizeof(o->job), "%s", job);
    cairn_buf_init(&o->data[0], 64u << 20);
    cairn_buf_init(&o->data[1], 64u << 20);
    return o;
}

static inline const char *out_str(struct out *o, int s)
{
    return o->data[s].data ? (const char *)o->data[s].data : "";
}

static inline size_t held_for(const char *job)
{
    size_t n = 0;
    for (size_t i = 0; i < wf.fc.nheld; i++) {
        const char *j = NULL;
        cairn_msg_get_str(wf.fc.held[i], "job", &j, NULL);
        n += j && !strcmp(j, job);
    }
    return n;
}

static inline void release_outputs(void)
{
    for (size_t i = 0; i < wf.fc.nheld; i++) {
        fc_reply(wf.fc.held[i], CAIRN_OK, NULL);
        cairn_msg_destroy(&wf.fc.held[i]);
    }
    wf.fc.nheld = 0;
}

static inline struct refs *refs_of(const char *job, bool create)
{
    for (size_t i = 0; i < wf.fc.nrefs; i++)
        if (!strcmp(wf.fc.refs[i].job, job))
            return &wf.fc.refs[i];
    if (!create)
        return NULL;
    assert_true(wf.fc.nrefs < CAIRN_ARRAY_LEN(wf.fc.refs));
    struct refs *r = &wf.fc.refs[wf.fc.nrefs++];
    memset(r, 0, sizeof(*r));
    snprintf(r->job, sizeof(r->job), "%s", job);
    return r;
}

static inline void fc_refs(struct cairn_msg *m)
{
    if (!wf.o.record_refs) { /* refs of written trees (retention's GC): acknowledged, not checked */
        fc_reply(m, CAIRN_OK, NULL);
        return;
    }
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
    if (!strcmp(job, wf.fc.refuse_refs)) {
        fc_reply(m, CAIRN_ENOTFOUND, "no such job (refused by the test)");
        return;
    }
    struct refs *x = refs_of(job, true);
    if (seq + 1 == x->batches) { /* a resend of the last batch: acknowledged again, not counted */
        fc_reply(m, CAIRN_OK, NULL);
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
    fc_reply(m, CAIRN_OK, NULL);
}

static inline void fc_register(struct cairn_msg *m, const char *id)
{
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
    wf.fc.epoch++;
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    cairn_msg_set_u64(r, "epoch", wf.fc.epoch);
    cairn_msg_set_u64(r, "heartbeat_ms", WF_HB_MS);
    cairn_msg_set_u64(r, "replicas", 2);
    fc_send(r, NULL);
    cairn_msg_destroy(&r);
    fc_membership();
}

static inline void fc_upload_read(struct cairn_msg *m)
{
    const char *job = NULL;
    uint64_t off = 0, len = 0;
    cairn_msg_get_str(m, "job", &job, NULL);
    cairn_msg_get_u64(m, "offset", &off);
    cairn_msg_get_u64(m, "len", &len);
    struct upload *u = NULL;
    for (size_t i = 0; i < wf.fc.nups && !u; i++)
        if (!strcmp(wf.fc.ups[i].job, job))
            u = &wf.fc.ups[i];
    if (!u) {
        fc_reply(m, CAIRN_ENOTFOUND, "no upload for that job");
        return;
    }
    u->reads++;
    size_t start = off < u->len ? (size_t)off : u->len;
    size_t n = CAIRN_MIN((size_t)len, u->len - start);
    if (wf.o.piece_cap)
        n = CAIRN_MIN(n, wf.o.piece_cap);
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    cairn_msg_set_u64(r, "size", u->len);
    cairn_msg_add_frame(r, u->data + start, n);
    fc_send(r, NULL);
    cairn_msg_destroy(&r);
}

/* Returns true when m was kept. */
static inline bool fc_output(struct cairn_msg *m)
{
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
    if (!strcmp(job, wf.fc.refuse_outputs)) {
        fc_reply(m, CAIRN_ENOTFOUND, "the client of the stream went away");
        return false;
    }
    if (wf.fc.hold_outputs) {
        assert_true(wf.fc.nheld < CAIRN_ARRAY_LEN(wf.fc.held));
        wf.fc.held[wf.fc.nheld++] = m;
        o->unacked_max = CAIRN_MAX(o->unacked_max, held_for(job));
        return true;
    }
    fc_reply(m, CAIRN_OK, NULL);
    return false;
}

/* Returns true when m was kept. */
static inline bool fc_handle(struct cairn_msg *m)
{
    enum cairn_msg_type t = cairn_msg_type(m);
    if (cairn_msg_is_reply(m)) {
        size_t k = wf.fc.nacks++ % CAIRN_ARRAY_LEN(wf.fc.acks);
        wf.fc.acks[k] = cairn_msg_rid(m);
        wf.fc.ack_codes[k] = cairn_msg_code(m);
        return false;
    }
    const char *id = NULL;
    cairn_msg_get_str(m, "id", &id, NULL);
    if (t == CAIRN_MSG_WORKER_REGISTER) {
        fc_register(m, id);
        return false;
    }
    if (t == CAIRN_MSG_WORKER_HEARTBEAT) {
        struct fw *w = fw_find(id);
        assert_non_null(w);
        w->heartbeats++;
        cairn_msg_get_u64(m, "sandboxes", &w->sandboxes);
        struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
        cairn_msg_set_u64(r, "epoch", wf.fc.epoch);
        fc_send(r, NULL);
        cairn_msg_destroy(&r);
        return false;
    }
    if (t == CAIRN_MSG_JOB_REFS) {
        fc_refs(m);
        return false;
    }
    if (t == CAIRN_MSG_JOB_RESULT) {
        const char *job = NULL;
        assert_int_equal(cairn_msg_get_str(m, "job", &job, NULL), CAIRN_OK);
        fc_reply(m, CAIRN_OK, NULL);
        for (size_t i = 0; i < wf.fc.nres; i++)
            if (!strcmp(wf.fc.res[i].job, job))
                return false; /* a resend */
        assert_true(wf.fc.nres < CAIRN_ARRAY_LEN(wf.fc.res));
        struct res *x = &wf.fc.res[wf.fc.nres++];
        snprintf(x->job, sizeof(x->job), "%s", job);
        x->m = m;
        x->at = now_s();
        return true;
    }
    if (t == CAIRN_MSG_UPLOAD_READ) {
        fc_upload_read(m);
        return false;
    }
    if (t == CAIRN_MSG_JOB_OUTPUT)
        return fc_output(m);
    return false; /* job.progress */
}

/* Serve for ms. */
static inline void fc_pump(int ms)
{
    uint64_t until = cairn_now_mono_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        uint64_t now = cairn_now_mono_ns();
        if (now >= until)
            return;
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(wf.fc.s, (int)((until - now) / 1000000u) + 1, &m);
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

#define SKIP_IF_NEEDED()      \
    do {                      \
        if (wf.skip) {        \
            skip();           \
            return;           \
        }                     \
    } while (0)

/* ---- jobs ---- */

static inline struct res *res_of(const char *job)
{
    for (size_t i = 0; i < wf.fc.nres; i++)
        if (!strcmp(wf.fc.res[i].job, job))
            return &wf.fc.res[i];
    return NULL;
}

static inline bool acked(uint64_t rid, int *code)
{
    for (size_t i = 0; i < wf.fc.nacks && i < CAIRN_ARRAY_LEN(wf.fc.acks); i++)
        if (wf.fc.acks[i] == rid) {
            *code = wf.fc.ack_codes[i];
            return true;
        }
    return false;
}

/* Send the dispatch (returns the time it was sent); asserts it is accepted. */
static inline double dispatch(const char *worker, struct cairn_msg *m)
{
    uint64_t rid = ++wf.fc.rid;
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

static inline void add_upload(const char *job, const uint8_t *data, size_t len)
{
    assert_true(wf.fc.nups < CAIRN_ARRAY_LEN(wf.fc.ups));
    struct upload *u = &wf.fc.ups[wf.fc.nups++];
    snprintf(u->job, sizeof(u->job), "%s", job);
    u->data = data;
    u->len = len;
}

static inline struct cairn_msg *result_of(const char *job, int ms)
{
    WAIT_FOR(res_of(job) != NULL, ms);
    return res_of(job)->m;
}

static inline const char *err_msg(struct cairn_msg *r)
{
    static char buf[1100];
    const char *s = NULL;
    snprintf(buf, sizeof(buf), "%s", cairn_msg_get_str(r, "err_msg", &s, NULL) == CAIRN_OK && s ? s : "");
    return buf;
}

static inline struct cairn_msg *expect_ok(const char *job, int ms)
{
    struct cairn_msg *r = result_of(job, ms);
    if (err_code(r) != CAIRN_OK)
        fail_msg("job %s failed: %s: %s", job, cairn_err_name((int)err_code(r)), err_msg(r));
    return r;
}

/* The job fails with code, its message containing needle (NULL: any). */
static inline void expect_err(const char *job, int ms, int code, const char *needle)
{
    struct cairn_msg *r = result_of(job, ms);
    if ((int)err_code(r) != code || (needle && !strstr(err_msg(r), needle)))
        fail_msg("job %s: expected %s '%s', got %s: %s", job, cairn_err_name(code), needle ? needle : "",
                 cairn_err_name((int)err_code(r)), err_msg(r));
}

static inline const struct cairn_mval *result_field(struct cairn_msg *r, const char *key)
{
    const struct cairn_mval *map = NULL;
    size_t n = 0;
    assert_int_equal(cairn_msg_get_map(r, "result", &map, &n), CAIRN_OK);
    const struct cairn_mval *v = cairn_mval_get(map, key);
    if (!v)
        fail_msg("result has no '%s'", key);
    return v;
}

static inline uint64_t result_u64(struct cairn_msg *r, const char *key)
{
    uint64_t v = 0;
    assert_int_equal(cairn_mval_u64(result_field(r, key), &v), CAIRN_OK);
    return v;
}

/* Put a layer reference {image, manifest_len, manifest} built from a job result into arr. */
static inline void push_layer(struct cairn_msg *m, struct cairn_mval *arr, const char *image, struct cairn_msg *from)
{
    struct cairn_mval *rec = cairn_mval_push_map(m, arr);
    cairn_mval_put_str(m, rec, "image", image);
    const uint8_t *man = NULL;
    size_t ml = 0;
    assert_int_equal(cairn_mval_bin(result_field(from, "manifest"), &man, &ml), CAIRN_OK);
    cairn_mval_put_u64(m, rec, "manifest_len", result_u64(from, "manifest_len"));
    cairn_mval_put_bin(m, rec, "manifest", man, ml);
}

/* Dispatch sh -c script in a sandbox as the sandbox-exec job `job`. */
static inline void sh_dispatch_as(const char *worker, const char *job, const char *rid, const char *script,
                                  uint64_t timeout_ms)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-exec", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    struct cairn_mval *argv = cairn_mval_put_array(m, p, "argv");
    cairn_mval_push_str(m, argv, "sh");
    cairn_mval_push_str(m, argv, "-c");
    cairn_mval_push_str(m, argv, script);
    cairn_mval_put_u64(m, p, "timeout_ms", timeout_ms);
    dispatch(worker, m);
}

/* sh -c script in a sandbox through the sandbox-exec job `job` (timeout 30 s); returns the exit code, *o: the
   job's output, in order, both streams NUL-terminated. */
static inline int sh_job_as(const char *worker, const char *job, const char *rid, const char *script,
                            struct out **o)
{
    sh_dispatch_as(worker, job, rid, script, 30000);
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

/* ---- host-side checks ---- */

static inline bool mounted_below(const char *dir)
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

static inline size_t dir_entries(const char *dir)
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

static inline bool path_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* Nothing is mounted below a worker's runtime state root (copied into rootc) and no sandbox dir is left. */
static inline void runtime_left_clean(const struct node *n, char rootc[PATH_MAX])
{
    snprintf(rootc, PATH_MAX, "%s/runtime", n->dir);
    assert_false(mounted_below(rootc));
    assert_int_equal(dir_entries(tu_path("%s/sandboxes", rootc)), 0);
}

/* The cgroup parent of a worker's runtime: "cairn-" + 16 hex of BLAKE2b-128(its canonical state root);
   "" while that root does not exist. */
static inline void cg_parent_of(const struct node *n, char out[32])
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

/* ---- setup and teardown ---- */

/* A worker's settings (capacity from the options), in its cfg and as a file <dir>/<id>.conf for the binary. */
static inline void node_config(struct node *n, const char *id, unsigned capacity)
{
    snprintf(n->id, sizeof(n->id), "%s", id);
    snprintf(n->dir, sizeof(n->dir), "%s/%s", wf.dir, id);
    assert_int_equal(cairn_curve_keypair(&n->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_keys_write(tu_path("%s/%s.key", wf.dir, id), &n->keys), CAIRN_OK);
    assert_int_equal(cairn_wk_config_defaults(&n->cfg), CAIRN_OK);
    char cap[16];
    snprintf(cap, sizeof(cap), "%u", capacity);
    struct {
        const char *k, *v;
    } kv[] = {
        {"id", id},
        {"data_dir", n->dir},
        {"keys", tu_path("%s/%s.key", wf.dir, id)},
        {"coordinator", cairn_sock_endpoint(wf.fc.s)},
        {"coordinator_key", tu_path("%s/coordinator.pub", wf.dir)},
        {"master_key", tu_path("%s/master.key", wf.dir)},
        {"peer_endpoint", "tcp://127.0.0.1:*"},
        {"capacity", cap},
        {"job_threads", "3"},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(kv); i++)
        if (cairn_wk_config_set(&n->cfg, kv[i].k, kv[i].v) != CAIRN_OK)
            fail_msg("config %s: %s", kv[i].k, cairn_err_msg());
    char text[4096];
    const char *lv = getenv("CAIRN_TEST_LOG");
    int len = snprintf(text, sizeof(text),
                       "id = %s\ndata_dir = %s\nkeys = %s/%s.key\ncoordinator = %s\ncoordinator_key = %s/coordinator.pub\n"
                       "master_key = %s/master.key\npeer_endpoint = tcp://127.0.0.1:*\ncapacity = %u\njob_threads = 3\n"
                       "log_level = %s\n",
                       id, n->dir, wf.dir, id, cairn_sock_endpoint(wf.fc.s), wf.dir, wf.dir, capacity,
                       lv && !strcmp(lv, "debug") ? "debug" : "info"); /* info: its log is read by tests */
    tu_write_file(tu_path("%s/%s.conf", wf.dir, id), text, (size_t)len);
    snprintf(wf.fc.w[n - wf.nodes].id, sizeof(wf.fc.w[0].id), "%s", id);
}

/* Told to stop, the coordinator served for opts.stop_pump_ms (a worker that stops waits for its results to
   be acknowledged), joined. */
static inline void node_stop_thread(struct node *n)
{
    if (!n->running)
        return;
    atomic_store(&n->stop, 1);
    for (int i = 0; i < wf.o.stop_pump_ms / 10; i++)
        fc_pump(10);
    node_join(n);
}

/* A tarball of a busybox root (the applets as symlinks, /etc/passwd, /etc/motd "hello", /tmp; with
   opts.srv_old /srv/old/file "old") in wf.tar. */
static inline void wf_build_tarball(void)
{
    char rootc[PATH_MAX];
    snprintf(rootc, sizeof(rootc), "%s/rootfs", wf.dir);
    assert_int_equal(tu_sh("mkdir -p '%s/bin' '%s/etc' '%s/tmp' && cp /bin/busybox '%s/bin/'", rootc, rootc, rootc,
                           rootc),
                     0);
    for (int i = 0; wf.o.applets[i]; i++)
        assert_int_equal(symlink("busybox", tu_path("%s/bin/%s", rootc, wf.o.applets[i])), 0);
    const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n";
    tu_write_file(tu_path("%s/etc/passwd", rootc), passwd, strlen(passwd));
    tu_write_file(tu_path("%s/etc/motd", rootc), "hello\n", 6);
    if (wf.o.srv_old) {
        assert_int_equal(tu_sh("mkdir -p '%s/srv/old'", rootc), 0);
        tu_write_file(tu_path("%s/srv/old/file", rootc), "old\n", 4);
    }
    assert_int_equal(tu_sh("tar -C '%s' --numeric-owner --owner=0 --group=0 -cf '%s/image.tar' .", rootc, wf.dir), 0);
    wf.tar = tu_read_file(tu_path("%s/image.tar", wf.dir), &wf.tar_len);
    assert_non_null(wf.tar);
}

static inline int wf_collect_id(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    (void)arg;
    for (size_t i = 0; i < wf.n_base_ids; i++)
        if (!memcmp(wf.base_ids[i], id, CAIRN_CHUNK_ID_BYTES))
            return CAIRN_OK;
    wf.base_ids = realloc(wf.base_ids, (wf.n_base_ids + 1) * sizeof(*wf.base_ids));
    assert_non_null(wf.base_ids);
    memcpy(wf.base_ids[wf.n_base_ids++], id, CAIRN_CHUNK_ID_BYTES);
    return CAIRN_OK;
}

/* The reference of the tarball imported into a store of the test's own, and its unique chunk ids. */
static inline void wf_local_import(void)
{
    struct cairn_store *s = NULL;
    struct cairn_domain *d = NULL;
    assert_int_equal(cairn_store_open(&s, tu_path("%s/local-store", wf.dir), true), CAIRN_OK);
    assert_int_equal(cairn_domain_new_managed(&d, wf.master, "default"), CAIRN_OK);
    assert_int_equal(cairn_archive_import(s, d, tu_path("%s/image.tar", wf.dir), NULL, &wf.base, NULL), CAIRN_OK);
    assert_int_equal(cairn_tree_chunks(s, d, &wf.base, wf_collect_id, NULL), CAIRN_OK);
    cairn_domain_destroy(&d);
    cairn_store_close(&s);
}

/*
 * The temp dir, the log level, the image tarball and its local import, the master key, the coordinator's
 * socket and the workers' settings (none started). Returns false when the tests are to be skipped (no
 * root, runsc or /bin/busybox: said on stderr).
 */
static inline bool wf_setup(const struct wf_opts *o)
{
    wf.o = *o;
    const char *lv = getenv("CAIRN_TEST_LOG");
    enum cairn_log_level level = o->log_level;
    if (lv)
        cairn_log_level_parse(lv, &level);
    cairn_log_set_level(level);
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    wf.dir = tu_tempdir(o->tag);
    if (o->on_dir)
        o->on_dir();
    if (geteuid() != 0)
        snprintf(wf.reason, sizeof(wf.reason), "needs root (overlay mounts, cgroups)");
    else if (access("/bin/busybox", X_OK) != 0)
        snprintf(wf.reason, sizeof(wf.reason), "/bin/busybox missing (package busybox-static)");
    else if (tu_sh("runsc --version >/dev/null 2>&1") != 0)
        snprintf(wf.reason, sizeof(wf.reason), "runsc not installed");
    if (wf.reason[0]) {
        wf.skip = true;
        print_error("SKIPPED: %s\n", wf.reason);
        return false;
    }
    wf_build_tarball();
    uint64_t seed = o->master_seed;
    tu_fill_random(&seed, wf.master, sizeof(wf.master));
    tu_write_file(tu_path("%s/master.key", wf.dir), wf.master, sizeof(wf.master));
    chmod(tu_path("%s/master.key", wf.dir), 0600);
    wf_local_import();

    struct fc *fc = &wf.fc;
    assert_int_equal(cairn_net_new(&fc->net), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&fc->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_public_write(tu_path("%s/coordinator.pub", wf.dir), fc->keys.public_z85), CAIRN_OK);
    assert_int_equal(cairn_sock_server(fc->net, "tcp://127.0.0.1:*", &fc->keys, "workers", NULL, &fc->s), CAIRN_OK);
    const char *ids[WF_NW] = {"w1", "w2", "w3"};
    const char *pubs[WF_NW];
    for (size_t i = 0; i < WF_NW; i++) {
        node_config(&wf.nodes[i], ids[i], o->caps[i]);
        pubs[i] = wf.nodes[i].keys.public_z85;
    }
    assert_int_equal(cairn_net_allow_set(fc->net, "workers", pubs, WF_NW), CAIRN_OK);
    return true;
}

/* Kill what runs from the temp dir (runsc processes carry --root=<it>), detach mounts, remove cgroups. */
static inline void wf_force_cleanup(void)
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
        if (n > 0 && (buf[n] = '\0', strstr(buf, wf.dir))) {
            print_error("cleanup: killing leftover pid %d: %.200s\n", pid, buf);
            kill(pid, SIGKILL);
        }
    }
    if (d)
        closedir(d);
    for (int round = 0; round < 8 && mounted_below(wf.dir); round++) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096], pts[64][1024];
        int n = 0;
        while (f && fgets(line, sizeof(line), f) && n < 64) {
            char point[1024];
            if (sscanf(line, "%*d %*d %*s %*s %1023s", point) == 1 && !strncmp(point, wf.dir, strlen(wf.dir)))
                snprintf(pts[n++], sizeof(pts[0]), "%s", point);
        }
        if (f)
            fclose(f);
        for (int i = n; i-- > 0;)
            umount2(pts[i], MNT_DETACH);
    }
    for (size_t i = 0; i < wf.o.nrids; i++)
        tu_sh("for c in /sys/fs/cgroup/*/*/%s; do [ -d \"$c\" ] && rmdir \"$c\"; done 2>/dev/null; true", wf.o.rids[i]);
    for (size_t i = 0; i < WF_NW; i++) {
        char parent[32];
        cg_parent_of(&wf.nodes[i], parent);
        if (parent[0])
            tu_sh("rmdir /sys/fs/cgroup/*/%s 2>/dev/null; true", parent);
    }
}

/* The worker threads stopped, then whatever is left forced away; -1 when a worker failed. */
static inline int wf_stop(void)
{
    if (wf.skip)
        return 0;
    int ret = 0;
    for (size_t i = 0; i < WF_NW; i++) {
        node_stop_thread(&wf.nodes[i]);
        if (wf.nodes[i].rc != CAIRN_OK)
            ret = -1;
    }
    wf_force_cleanup();
    return ret;
}

/* Everything freed, the temp dir removed (unless something is still mounted below it). */
static inline void wf_release(void)
{
    for (size_t i = 0; i < WF_NW; i++) {
        cairn_wk_config_release(&wf.nodes[i].cfg);
        cairn_curve_keys_clear(&wf.nodes[i].keys);
    }
    for (size_t i = 0; i < wf.fc.nres; i++)
        cairn_msg_destroy(&wf.fc.res[i].m);
    for (size_t i = 0; i < wf.fc.nheld; i++)
        cairn_msg_destroy(&wf.fc.held[i]);
    for (size_t i = 0; i < wf.fc.nouts; i++) {
        cairn_buf_release(&wf.fc.outs[i].data[0]);
        cairn_buf_release(&wf.fc.outs[i].data[1]);
    }
    for (size_t i = 0; i < wf.fc.nrefs; i++)
        free(wf.fc.refs[i].ids);
    cairn_sock_destroy(&wf.fc.s);
    cairn_net_destroy(&wf.fc.net);
    cairn_tree_ref_release(&wf.base);
    free(wf.base_ids);
    free(wf.tar);
    if (wf.dir && !mounted_below(wf.dir))
        tu_rmrf(wf.dir);
    else if (wf.dir)
        print_error("leaving %s: something is still mounted below it\n", wf.dir);
    free(wf.dir);
    wf.dir = NULL;
}

#endif /* WF_NODE_ONLY */

#endif
