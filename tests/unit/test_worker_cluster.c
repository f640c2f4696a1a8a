/*
 * test_worker_cluster.c: three real workers (the daemon, each in a thread of this process with its own
 * ZeroMQ context, RocksDB store and CURVE keys) against a scripted coordinator played by the test on a
 * real CURVE ROUTER. The real coordinator's end-to-end tests live elsewhere; this pins the worker's
 * side of docs/internals/cluster.md:
 *
 * - registration (fingerprint, capacity, advertised peer endpoint), heartbeats with chunk counters and
 *   running job ids, membership acks;
 * - noop, unknown kinds (EUNSUPPORTED "unknown job kind 'x'"), job.result resent until acknowledged;
 * - ingest: every chunk ends up exactly on its R = 2 placement workers (checked with chunk-has jobs
 *   against cairn_placement_pick), the source's copies outside its set deleted; the domain is the
 *   app's managed domain;
 * - ingest fails with EUNAVAILABLE when too few workers are alive, with ETIMEDOUT when a peer of the
 *   placement does not answer;
 * - EBUSY when the job thread and the queue are full;
 * - re-registration after a heartbeat reply with ENOTFOUND or an unexpected epoch;
 * - stop while a job runs: the worker exits promptly and sends no result for it.
 */
#define WF_NODE_ONLY /* the workers in threads; the coordinator here is a different one */
#include "test_worker_fixture.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/placement.h"
#include "cairn/proto.h"
#include "cairn/transport.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define NW 3
#define HB_MS 200

/* ---- the scripted coordinator ---- */

struct fw {
    char id[65];
    struct cairn_route route;
    char peer[257];
    char key[41];
    char fingerprint[257];
    uint64_t capacity;
    bool alive;
    bool registered;
    int registrations;
    int heartbeats;
    uint64_t chunks;
    char last_jobs[8][65];
    size_t nlast_jobs;
    bool notfound_next; /* answer the next heartbeat with ENOTFOUND */
};

struct ack {
    uint64_t rid;
    int code;
    char text[256];
};

struct res {
    char job[65];
    struct cairn_msg *m;
    int seen;
};

struct fc {
    struct cairn_net *net;
    struct cairn_curve_keys keys;
    struct cairn_sock *s;
    uint64_t epoch;
    uint64_t rid;
    struct fw w[NW];
    size_t nw;
    struct ack acks[256];
    size_t nacks;
    struct res res[256];
    size_t nres;
    bool ack_results;
    char bogus_peer[64]; /* when set, membership gives w3 this endpoint */
    bool dead[NW];       /* members announced as dead */
};

struct world {
    char *dir;
    struct fc fc;
    struct node nodes[NW];
    uint8_t master[CAIRN_KEY_BYTES];
};

static struct world *W;

static struct fw *fw_find(struct fc *fc, const char *id)
{
    for (size_t i = 0; i < fc->nw; i++)
        if (!strcmp(fc->w[i].id, id))
            return &fc->w[i];
    return NULL;
}

static void fc_send(struct fc *fc, struct cairn_msg *m, const struct cairn_route *to)
{
    if (to) /* else: a reply, routed like its request */
        cairn_msg_set_route(m, to);
    int rc = cairn_sock_send(fc->s, m);
    if (rc == CAIRN_ENOTFOUND) /* that worker has gone (stopped by the test) */
        return;
    if (rc != CAIRN_OK)
        fail_msg("coordinator send %s: %s", cairn_msg_type_name(cairn_msg_type(m)), cairn_err_msg());
}

static void fc_membership(struct fc *fc)
{
    for (size_t t = 0; t < fc->nw; t++) {
        if (!fc->w[t].registered)
            continue;
        struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_MEMBERSHIP);
        cairn_msg_set_rid(m, ++fc->rid);
        cairn_msg_set_u64(m, "epoch", fc->epoch);
        cairn_msg_set_u64(m, "replicas", 2);
        struct cairn_mval *arr = cairn_msg_set_array(m, "workers");
        for (size_t i = 0; i < fc->nw; i++) {
            struct fw *w = &fc->w[i];
            if (!w->registered)
                continue;
            struct cairn_mval *rec = cairn_mval_push_map(m, arr);
            cairn_mval_put_str(m, rec, "id", w->id);
            cairn_mval_put_str(m, rec, "endpoint", fc->bogus_peer[0] && i == 2 ? fc->bogus_peer : w->peer);
            cairn_mval_put_str(m, rec, "public_key", w->key);
            cairn_mval_put_bool(m, rec, "alive", !fc->dead[i]);
        }
        fc_send(fc, m, &fc->w[t].route);
        cairn_msg_destroy(&m);
    }
}

static void fc_handle(struct fc *fc, struct cairn_msg *m)
{
    enum cairn_msg_type t = cairn_msg_type(m);
    if (cairn_msg_is_reply(m)) {
        struct ack *a = &fc->acks[fc->nacks++ % CAIRN_ARRAY_LEN(fc->acks)];
        a->rid = cairn_msg_rid(m);
        a->code = cairn_msg_code(m);
        snprintf(a->text, sizeof(a->text), "%s", cairn_msg_text(m) ? cairn_msg_text(m) : "");
        return;
    }
    const char *id = NULL;
    cairn_msg_get_str(m, "id", &id, NULL);
    struct cairn_msg *r = NULL;
    if (t == CAIRN_MSG_WORKER_REGISTER) {
        struct fw *w = fw_find(fc, id);
        assert_non_null(w);
        const char *s;
        w->route = cairn_msg_route(m);
        assert_int_equal(cairn_msg_get_str(m, "peer", &s, NULL), CAIRN_OK);
        snprintf(w->peer, sizeof(w->peer), "%s", s);
        assert_int_equal(cairn_msg_get_str(m, "public_key", &s, NULL), CAIRN_OK);
        snprintf(w->key, sizeof(w->key), "%s", s);
        assert_string_equal(cairn_msg_peer_key(m), w->key); /* the key it connects with */
        assert_int_equal(cairn_msg_get_str(m, "fingerprint", &s, NULL), CAIRN_OK);
        snprintf(w->fingerprint, sizeof(w->fingerprint), "%s", s);
        assert_int_equal(cairn_msg_get_u64(m, "capacity", &w->capacity), CAIRN_OK);
        w->registered = true;
        w->registrations++;
        fc->epoch++;
        r = cairn_msg_reply(m, CAIRN_OK, NULL);
        cairn_msg_set_u64(r, "epoch", fc->epoch);
        cairn_msg_set_u64(r, "heartbeat_ms", HB_MS);
        cairn_msg_set_u64(r, "replicas", 2);
        fc_send(fc, r, NULL);
        cairn_msg_destroy(&r);
        fc_membership(fc);
        return;
    }
    if (t == CAIRN_MSG_WORKER_HEARTBEAT) {
        struct fw *w = fw_find(fc, id);
        assert_non_null(w);
        w->heartbeats++;
        cairn_msg_get_u64(m, "chunks", &w->chunks);
        const struct cairn_mval *jobs;
        size_t nj = 0;
        assert_int_equal(cairn_msg_get_array(m, "jobs", &jobs, &nj), CAIRN_OK);
        w->nlast_jobs = 0;
        for (size_t i = 0; i < nj && i < 8; i++) {
            const char *j;
            size_t jl;
            cairn_mval_str(cairn_mval_at(jobs, i), &j, &jl);
            snprintf(w->last_jobs[w->nlast_jobs++], 65, "%s", j);
        }
        if (w->notfound_next) {
            w->notfound_next = false;
            w->registered = false;
            r = cairn_msg_reply(m, CAIRN_ENOTFOUND, "unknown worker");
        } else {
            r = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_msg_set_u64(r, "epoch", fc->epoch);
        }
        fc_send(fc, r, NULL);
        cairn_msg_destroy(&r);
        return;
    }
    if (t == CAIRN_MSG_JOB_RESULT) {
        const char *job = NULL;
        assert_int_equal(cairn_msg_get_str(m, "job", &job, NULL), CAIRN_OK);
        struct res *found = NULL;
        for (size_t i = 0; i < fc->nres && !found; i++)
            if (!strcmp(fc->res[i].job, job))
                found = &fc->res[i];
        if (!found) {
            found = &fc->res[fc->nres++];
            snprintf(found->job, sizeof(found->job), "%s", job);
            found->m = NULL;
        }
        found->seen++;
        if (!fc->ack_results)
            return;
        r = cairn_msg_reply(m, CAIRN_OK, NULL);
        fc_send(fc, r, NULL);
        cairn_msg_destroy(&r);
        /* keep the message: the test reads it */
        if (!found->m) {
            found->m = m;
            m = NULL;
        }
        return;
    }
    /* job.progress: nothing to answer */
}

/* Serve for up to ms. */
static void fc_pump(struct fc *fc, int ms)
{
    uint64_t until = cairn_now_mono_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        uint64_t now = cairn_now_mono_ns();
        if (now >= until)
            return;
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(fc->s, (int)((until - now) / 1000000u) + 1, &m);
        if (rc == CAIRN_OK) {
            struct cairn_msg *keep = m;
            fc_handle(fc, m);
            /* fc_handle may have kept a job.result */
            bool kept = false;
            for (size_t i = 0; i < fc->nres; i++)
                kept |= fc->res[i].m == keep;
            if (!kept)
                cairn_msg_destroy(&m);
        } else {
            cairn_msg_destroy(&m);
        }
    }
}

#define WAIT_FOR(cond, ms)                                                      \
    do {                                                                        \
        uint64_t wf_until_ = cairn_now_mono_ns() + (uint64_t)(ms) * 1000000u;  \
        while (!(cond) && cairn_now_mono_ns() < wf_until_)                      \
            fc_pump(&W->fc, 20);                                                \
        if (!(cond))                                                            \
            fail_msg("timed out waiting for %s", #cond);                        \
    } while (0)

static const struct ack *ack_of(uint64_t rid)
{
    for (size_t i = 0; i < W->fc.nacks && i < CAIRN_ARRAY_LEN(W->fc.acks); i++)
        if (W->fc.acks[i].rid == rid)
            return &W->fc.acks[i];
    return NULL;
}

static struct res *res_of(const char *job)
{
    for (size_t i = 0; i < W->fc.nres; i++)
        if (!strcmp(W->fc.res[i].job, job))
            return &W->fc.res[i];
    return NULL;
}

/* Dispatch a job (from job_new()); returns the ack code. */
static int dispatch(const char *worker, struct cairn_msg *m, char *text, size_t cap)
{
    uint64_t rid = ++W->fc.rid;
    cairn_msg_set_rid(m, rid);
    fc_send(&W->fc, m, &fw_find(&W->fc, worker)->route);
    cairn_msg_destroy(&m);
    WAIT_FOR(ack_of(rid) != NULL, 5000);
    if (text)
        snprintf(text, cap, "%s", ack_of(rid)->text);
    return ack_of(rid)->code;
}

/* The job's result message once it arrived (waits up to ms). */
static struct cairn_msg *result_of(const char *job, int ms)
{
    WAIT_FOR(res_of(job) && res_of(job)->m, ms);
    return res_of(job)->m;
}

static const char *err_msg(struct cairn_msg *r)
{
    const char *s = "";
    cairn_msg_get_str(r, "err_msg", &s, NULL);
    return s;
}

static bool all_registered(void)
{
    for (size_t i = 0; i < NW; i++)
        if (!W->fc.w[i].registered || W->fc.w[i].heartbeats == 0)
            return false;
    return true;
}

/* ---- setup ---- */

static void node_init(struct node *n, const char *dir, const char *id, const char *coord_ep, unsigned threads,
                      unsigned queue, const char *repl_timeout)
{
    snprintf(n->id, sizeof(n->id), "%s", id);
    assert_int_equal(cairn_curve_keypair(&n->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_keys_write(tu_path("%s/%s.key", dir, id), &n->keys), CAIRN_OK);
    assert_int_equal(cairn_wk_config_defaults(&n->cfg), CAIRN_OK);
    char num[16];
    struct {
        const char *k, *v;
    } kv[] = {
        {"id", id},
        {"data_dir", tu_path("%s/%s", dir, id)},
        {"keys", tu_path("%s/%s.key", dir, id)},
        {"coordinator", coord_ep},
        {"coordinator_key", tu_path("%s/coordinator.pub", dir)},
        {"master_key", tu_path("%s/master.key", dir)},
        {"peer_endpoint", "tcp://127.0.0.1:*"},
        {"replication_timeout", repl_timeout},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(kv); i++)
        if (cairn_wk_config_set(&n->cfg, kv[i].k, kv[i].v) != CAIRN_OK)
            fail_msg("config %s: %s", kv[i].k, cairn_err_msg());
    snprintf(num, sizeof(num), "%u", threads);
    assert_int_equal(cairn_wk_config_set(&n->cfg, "job_threads", num), CAIRN_OK);
    snprintf(num, sizeof(num), "%u", queue);
    assert_int_equal(cairn_wk_config_set(&n->cfg, "job_queue", num), CAIRN_OK);
}

static void node_stop(struct node *n)
{
    if (!n->running)
        return;
    node_join(n);
    assert_int_equal(n->rc, CAIRN_OK);
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
    W = calloc(1, sizeof(*W));
    W->dir = tu_tempdir("worker-cluster");
    struct fc *fc = &W->fc;
    fc->ack_results = true;
    assert_int_equal(cairn_net_new(&fc->net), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&fc->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_public_write(tu_path("%s/coordinator.pub", W->dir), fc->keys.public_z85), CAIRN_OK);
    uint64_t seed = 5;
    tu_fill_random(&seed, W->master, sizeof(W->master));
    tu_write_file(tu_path("%s/master.key", W->dir), W->master, sizeof(W->master));
    chmod(tu_path("%s/master.key", W->dir), 0600);
    assert_int_equal(cairn_sock_server(fc->net, "tcp://127.0.0.1:*", &fc->keys, "workers", NULL, &fc->s), CAIRN_OK);
    const char *ids[NW] = {"w1", "w2", "w3"};
    const char *pubs[NW];
    for (size_t i = 0; i < NW; i++) {
        /* w3 runs one job at a time with a queue of one (EBUSY test); w1 gives up replication fast */
        node_init(&W->nodes[i], W->dir, ids[i], cairn_sock_endpoint(fc->s), i == 2 ? 1 : 2, i == 2 ? 1 : 8,
                  i == 0 ? "1500ms" : "30s");
        pubs[i] = W->nodes[i].keys.public_z85;
        snprintf(fc->w[i].id, sizeof(fc->w[i].id), "%s", ids[i]);
    }
    fc->nw = NW;
    assert_int_equal(cairn_net_allow_set(fc->net, "workers", pubs, NW), CAIRN_OK);
    for (size_t i = 0; i < NW; i++)
        node_start_thread(&W->nodes[i]);
    WAIT_FOR(all_registered(), 10000);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < NW; i++) {
        node_stop(&W->nodes[i]);
        cairn_wk_config_release(&W->nodes[i].cfg);
        cairn_curve_keys_clear(&W->nodes[i].keys);
    }
    for (size_t i = 0; i < W->fc.nres; i++)
        cairn_msg_destroy(&W->fc.res[i].m);
    cairn_sock_destroy(&W->fc.s);
    cairn_net_destroy(&W->fc.net);
    tu_rmrf(W->dir);
    free(W->dir);
    free(W);
    return 0;
}

/* ---- tests ---- */

static void test_registration(void **state)
{
    (void)state;
    for (size_t i = 0; i < NW; i++) {
        struct fw *w = &W->fc.w[i];
        assert_int_equal(strncmp(w->fingerprint, "runsc-", 6), 0);
        assert_non_null(strstr(w->fingerprint, "/cpu-"));
        assert_int_equal(w->capacity, 8);
        assert_non_null(strstr(w->peer, "tcp://127.0.0.1:"));
        assert_string_equal(w->key, W->nodes[i].keys.public_z85);
    }
    /* heartbeats keep coming, every HB_MS */
    int before = W->fc.w[0].heartbeats;
    fc_pump(&W->fc, 5 * HB_MS);
    assert_true(W->fc.w[0].heartbeats >= before + 3);
}

static void test_noop_unknown_and_resend(void **state)
{
    (void)state;
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-noop1", "noop", &p);
    assert_int_equal(dispatch("w1", m, NULL, 0), CAIRN_OK);
    struct cairn_msg *r = result_of("jb-noop1", 5000);
    assert_int_equal(err_code(r), CAIRN_OK);
    const struct cairn_mval *res, *wv;
    size_t n;
    assert_int_equal(cairn_msg_get_map(r, "result", &res, &n), CAIRN_OK);
    assert_non_null(wv = cairn_mval_get(res, "worker"));
    const char *s;
    size_t sl;
    assert_int_equal(cairn_mval_str(wv, &s, &sl), CAIRN_OK);
    assert_string_equal(s, "w1");

    m = job_new("jb-what", "frobnicate", &p);
    assert_int_equal(dispatch("w2", m, NULL, 0), CAIRN_OK);
    r = result_of("jb-what", 5000);
    assert_int_equal(err_code(r), CAIRN_EUNSUPPORTED);
    assert_string_equal(err_msg(r), "unknown job kind 'frobnicate'");

    /* a result is resent until acknowledged */
    W->fc.ack_results = false;
    m = job_new("jb-noop2", "noop", &p);
    cairn_mval_put_u64(m, p, "sleep_ms", 10);
    assert_int_equal(dispatch("w2", m, NULL, 0), CAIRN_OK);
    WAIT_FOR(res_of("jb-noop2") && res_of("jb-noop2")->seen >= 2, 8000);
    W->fc.ack_results = true;
    r = result_of("jb-noop2", 8000);
    assert_int_equal(err_code(r), CAIRN_OK);
    int seen = res_of("jb-noop2")->seen;
    fc_pump(&W->fc, 2500);
    assert_int_equal(res_of("jb-noop2")->seen, seen); /* acknowledged: no more resends */

    /* a resent dispatch of a job already done is acknowledged and answered with the same result */
    m = job_new("jb-noop2", "noop", &p);
    assert_int_equal(dispatch("w2", m, NULL, 0), CAIRN_OK);
    WAIT_FOR(res_of("jb-noop2")->seen > seen, 3000);
}

/* Which workers hold `ids` (hex) of domain `dom` (hex): chunk-has on each worker. */
static void held_by(const char *dom, char ids[][65], size_t n, bool held[NW][64], const char *tag)
{
    for (size_t w = 0; w < NW; w++) {
        char job[64];
        snprintf(job, sizeof(job), "jb-has-%s-%zu", tag, w);
        struct cairn_mval *p;
        struct cairn_msg *m = job_new(job, "chunk-has", &p);
        cairn_mval_put_str(m, p, "domain", dom);
        struct cairn_mval *arr = cairn_mval_put_array(m, p, "ids");
        for (size_t i = 0; i < n; i++)
            cairn_mval_push_str(m, arr, ids[i]);
        assert_int_equal(dispatch(W->fc.w[w].id, m, NULL, 0), CAIRN_OK);
        struct cairn_msg *r = result_of(job, 5000);
        assert_int_equal(err_code(r), CAIRN_OK);
        const struct cairn_mval *res, *hv;
        size_t rn;
        assert_int_equal(cairn_msg_get_map(r, "result", &res, &rn), CAIRN_OK);
        assert_non_null(hv = cairn_mval_get(res, "held"));
        assert_int_equal(cairn_mval_len(hv), n);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(cairn_mval_bool(cairn_mval_at(hv, i), &held[w][i]), CAIRN_OK);
    }
}

static void test_ingest_places_replicas(void **state)
{
    (void)state;
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-ingest1", "ingest", &p);
    cairn_mval_put_u64(m, p, "bytes", 6u << 20);
    cairn_mval_put_u64(m, p, "seed", 42);
    assert_int_equal(dispatch("w1", m, NULL, 0), CAIRN_OK);
    struct cairn_msg *r = result_of("jb-ingest1", 30000);
    if (err_code(r) != CAIRN_OK)
        fail_msg("ingest failed: %s", err_msg(r));
    const struct cairn_mval *res;
    size_t rn;
    assert_int_equal(cairn_msg_get_map(r, "result", &res, &rn), CAIRN_OK);
    uint64_t chunks = 0, bytes = 0;
    assert_int_equal(cairn_mval_u64(cairn_mval_get(res, "chunks"), &chunks), CAIRN_OK);
    assert_int_equal(cairn_mval_u64(cairn_mval_get(res, "bytes"), &bytes), CAIRN_OK);
    assert_int_equal(bytes, 6u << 20);
    assert_true(chunks >= (6u << 20) / (256u << 10) && chunks <= (6u << 20) / (16u << 10) + 1);
    const char *dom;
    size_t dl;
    assert_int_equal(cairn_mval_str(cairn_mval_get(res, "domain"), &dom, &dl), CAIRN_OK);
    /* the app's managed domain */
    struct cairn_domain *d = NULL;
    assert_int_equal(cairn_domain_new_managed(&d, W->master, "default"), CAIRN_OK);
    char want[33];
    cairn_hex_encode(want, cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES);
    assert_string_equal(dom, want);
    const struct cairn_mval *iv = cairn_mval_get(res, "ids");
    size_t n = cairn_mval_len(iv);
    assert_int_equal(n, CAIRN_MIN(chunks, 64u));
    char ids[64][65];
    for (size_t i = 0; i < n; i++) {
        const char *h;
        size_t hl;
        assert_int_equal(cairn_mval_str(cairn_mval_at(iv, i), &h, &hl), CAIRN_OK);
        assert_int_equal(hl, 64);
        memcpy(ids[i], h, 65);
    }
    bool held[NW][64];
    held_by(dom, ids, n, held, "a");
    const char *names[NW] = {"w1", "w2", "w3"};
    size_t on_w1 = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t id[CAIRN_CHUNK_ID_BYTES];
        assert_int_equal(cairn_hex_decode(id, sizeof(id), ids[i]), CAIRN_OK);
        size_t pick[2];
        assert_int_equal(cairn_placement_pick(names, NW, 2, cairn_domain_id(d), id, pick), 2);
        for (size_t w = 0; w < NW; w++) {
            bool want_held = pick[0] == w || pick[1] == w;
            if (held[w][i] != want_held)
                fail_msg("chunk %s: held by %s = %d, placement says %d", ids[i], names[w], held[w][i], want_held);
        }
        on_w1 += held[0][i];
    }
    assert_true(on_w1 < n); /* some were placed elsewhere and deleted from the source */
    cairn_domain_destroy(&d);
    /* the counters reach the coordinator: everyone holds some chunks */
    WAIT_FOR(W->fc.w[0].chunks > 0 && W->fc.w[1].chunks > 0 && W->fc.w[2].chunks > 0, 3000);

    /* the same ingest again: deduplicated, same ids, same placement */
    m = job_new("jb-ingest2", "ingest", &p);
    cairn_mval_put_u64(m, p, "bytes", 1u << 20);
    cairn_mval_put_u64(m, p, "seed", 42);
    assert_int_equal(dispatch("w2", m, NULL, 0), CAIRN_OK);
    r = result_of("jb-ingest2", 30000);
    assert_int_equal(err_code(r), CAIRN_OK);

    /* bad params */
    m = job_new("jb-ingest-big", "ingest", &p);
    cairn_mval_put_u64(m, p, "bytes", (1ull << 30) + 1);
    assert_int_equal(dispatch("w1", m, NULL, 0), CAIRN_OK);
    r = result_of("jb-ingest-big", 5000);
    assert_int_equal(err_code(r), CAIRN_ETOOBIG);
    m = job_new("jb-ingest-nobytes", "ingest", &p);
    assert_int_equal(dispatch("w1", m, NULL, 0), CAIRN_OK);
    r = result_of("jb-ingest-nobytes", 5000);
    assert_int_equal(err_code(r), CAIRN_EINVAL);
}

static void test_ingest_unavailable_and_timeout(void **state)
{
    (void)state;
    /* w2 and w3 dead: R = 2 cannot be met */
    W->fc.dead[1] = W->fc.dead[2] = true;
    W->fc.epoch++;
    fc_membership(&W->fc);
    fc_pump(&W->fc, 300);
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-ingest-dead", "ingest", &p);
    cairn_mval_put_u64(m, p, "bytes", 1u << 20);
    assert_int_equal(dispatch("w1", m, NULL, 0), CAIRN_OK);
    struct cairn_msg *r = result_of("jb-ingest-dead", 5000);
    assert_int_equal(err_code(r), CAIRN_EUNAVAILABLE);
    assert_non_null(strstr(err_msg(r), "live workers"));

    /* w3 alive but its endpoint answers nothing: w1 (replication_timeout 1.5 s) gives up */
    W->fc.dead[1] = W->fc.dead[2] = false;
    snprintf(W->fc.bogus_peer, sizeof(W->fc.bogus_peer), "tcp://127.0.0.1:9");
    W->fc.epoch++;
    fc_membership(&W->fc);
    fc_pump(&W->fc, 300);
    m = job_new("jb-ingest-timeout", "ingest", &p);
    cairn_mval_put_u64(m, p, "bytes", 2u << 20);
    cairn_mval_put_u64(m, p, "seed", 99);
    assert_int_equal(dispatch("w1", m, NULL, 0), CAIRN_OK);
    r = result_of("jb-ingest-timeout", 15000);
    assert_int_equal(err_code(r), CAIRN_ETIMEDOUT);
    assert_non_null(strstr(err_msg(r), "worker 'w3'"));
    assert_non_null(strstr(err_msg(r), "timed out"));
    W->fc.bogus_peer[0] = '\0';
    W->fc.epoch++;
    fc_membership(&W->fc);
    fc_pump(&W->fc, 300);
}

static void test_busy(void **state)
{
    (void)state;
    /* w3: one job thread, a queue of one */
    const char *jobs[3] = {"jb-slow1", "jb-slow2", "jb-slow3"};
    int codes[3];
    char text[256] = "";
    for (int i = 0; i < 3; i++) {
        struct cairn_mval *p;
        struct cairn_msg *m = job_new(jobs[i], "noop", &p);
        cairn_mval_put_u64(m, p, "sleep_ms", 600);
        codes[i] = dispatch("w3", m, text, sizeof(text));
    }
    assert_int_equal(codes[0], CAIRN_OK);
    assert_int_equal(codes[1], CAIRN_OK);
    assert_int_equal(codes[2], CAIRN_EBUSY);
    /* the heartbeat lists the accepted jobs */
    struct fw *w3 = &W->fc.w[2];
    int hb = w3->heartbeats;
    WAIT_FOR(w3->heartbeats > hb, 2000);
    assert_true(w3->nlast_jobs >= 1);
    assert_int_equal(err_code(result_of("jb-slow1", 5000)), CAIRN_OK);
    assert_int_equal(err_code(result_of("jb-slow2", 5000)), CAIRN_OK);
    hb = w3->heartbeats;
    WAIT_FOR(w3->heartbeats > hb + 1, 2000);
    assert_int_equal(w3->nlast_jobs, 0);
}

static void test_reregister(void **state)
{
    (void)state;
    struct fw *w2 = &W->fc.w[1];
    int regs = w2->registrations;
    w2->notfound_next = true;
    WAIT_FOR(w2->registrations > regs && w2->registered, 5000);
    /*
     * An epoch the workers did not see announced: the first to heartbeat registers again; that
     * registration's membership brings the others to the new epoch (or they register too).
     */
    int total = 0;
    for (size_t i = 0; i < NW; i++)
        total += W->fc.w[i].registrations;
    W->fc.epoch += 10;
    WAIT_FOR(W->fc.w[0].registrations + W->fc.w[1].registrations + W->fc.w[2].registrations > total, 5000);
    /* and they settle: no registration storm */
    fc_pump(&W->fc, 1000);
    total = W->fc.w[0].registrations + W->fc.w[1].registrations + W->fc.w[2].registrations;
    fc_pump(&W->fc, 1000);
    assert_int_equal(W->fc.w[0].registrations + W->fc.w[1].registrations + W->fc.w[2].registrations, total);
}

static void test_stop_abandons(void **state)
{
    (void)state;
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-long", "noop", &p);
    cairn_mval_put_u64(m, p, "sleep_ms", 20000);
    assert_int_equal(dispatch("w2", m, NULL, 0), CAIRN_OK);
    fc_pump(&W->fc, 200);
    uint64_t t0 = cairn_now_mono_ns();
    node_stop(&W->nodes[1]);
    assert_true(cairn_now_mono_ns() - t0 < 3000000000ull);
    fc_pump(&W->fc, 500);
    assert_null(res_of("jb-long")); /* abandoned: no result */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registration),
        cmocka_unit_test(test_noop_unknown_and_resend),
        cmocka_unit_test(test_ingest_places_replicas),
        cmocka_unit_test(test_ingest_unavailable_and_timeout),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_reregister),
        cmocka_unit_test(test_stop_abandons),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
