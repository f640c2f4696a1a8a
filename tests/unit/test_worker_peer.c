/*
 * test_worker_peer.c: the worker's peer service, for real: the daemon runs in a thread of this process
 * (no coordinator), with its RocksDB chunk store in a temp dir and its CURVE peer ROUTER on a kernel-
 * chosen loopback port; the test talks to it with a DEALER from cairn/transport.h whose key is in the
 * worker's peers_allow file. One test runs the real cairn-worker binary as a child process.
 *
 * - chunk.put then chunk.get returns the stored bytes; chunk.has sets exactly the held bits.
 * - A corrupt value (bit flip) or one whose header names another domain is refused with ECORRUPT in
 *   its status slot; the other chunks of the batch are stored.
 * - Missing chunks come back as empty frames; an unknown message type gets EUNSUPPORTED.
 * - A client whose key is not allowed gets no answer at all, until its key is added to the
 *   peers_allow file (re-read without a restart).
 * - Placement: cairn_wk_members_place picks exactly what cairn_placement_pick picks over the live ids.
 * - The binary: --print-example-config matches deploy/worker.conf.example; a chunk put into a child
 *   worker survives SIGTERM (exit status 0) and a restart.
 */
#include "testutil.h"

#include "worker_config.h"
#include "worker_daemon.h"
#include "worker_jobs.h"
#include "worker_members.h"
#include "worker_repl.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/codec.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/placement.h"
#include "cairn/proto.h"
#include "cairn/transport.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- a worker in a thread ---- */

struct node {
    char *dir;
    struct cairn_wk_config cfg;
    struct cairn_curve_keys keys;
    atomic_int stop;
    pthread_t th;
    int rc;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready, done;
    char endpoint[CAIRN_WK_ENDPOINT_MAX + 1];
};

static void node_ready(void *arg, const char *ep)
{
    struct node *n = arg;
    pthread_mutex_lock(&n->mu);
    snprintf(n->endpoint, sizeof(n->endpoint), "%s", ep ? ep : "");
    n->ready = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

static void *node_main(void *arg)
{
    struct node *n = arg;
    struct cairn_wk_daemon_opts o = {.no_coordinator = true, .stop = &n->stop, .on_ready = node_ready, .arg = n};
    n->rc = cairn_wk_daemon_run(&n->cfg, &o);
    if (n->rc != CAIRN_OK)
        fprintf(stderr, "worker: %s: %s\n", cairn_err_name(n->rc), cairn_err_msg());
    pthread_mutex_lock(&n->mu);
    n->done = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

static void set(struct cairn_wk_config *c, const char *k, const char *v)
{
    if (cairn_wk_config_set(c, k, v) != CAIRN_OK)
        fail_msg("config %s: %s", k, cairn_err_msg());
}

/* Start a peer-only worker whose peers_allow file lists `allowed`. */
static struct node *node_start(const char *allowed_pub)
{
    struct node *n = calloc(1, sizeof(*n));
    n->dir = tu_tempdir("worker-peer");
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    assert_int_equal(cairn_curve_keypair(&n->keys), CAIRN_OK);
    assert_int_equal(cairn_curve_keys_write(tu_path("%s/worker.key", n->dir), &n->keys), CAIRN_OK);
    char allow[128];
    int al = snprintf(allow, sizeof(allow), "# test client\n%s test\n", allowed_pub);
    tu_write_file(tu_path("%s/peers.allow", n->dir), allow, (size_t)al);
    assert_int_equal(cairn_wk_config_defaults(&n->cfg), CAIRN_OK);
    set(&n->cfg, "id", "w1");
    set(&n->cfg, "data_dir", tu_path("%s/data", n->dir));
    set(&n->cfg, "keys", tu_path("%s/worker.key", n->dir));
    set(&n->cfg, "peers_allow", tu_path("%s/peers.allow", n->dir));
    set(&n->cfg, "peer_endpoint", "tcp://127.0.0.1:*");
    assert_int_equal(pthread_create(&n->th, NULL, node_main, n), 0);
    pthread_mutex_lock(&n->mu);
    while (!n->ready && !n->done)
        pthread_cond_wait(&n->cv, &n->mu);
    pthread_mutex_unlock(&n->mu);
    assert_true(n->ready);
    return n;
}

static void node_stop(struct node *n)
{
    atomic_store(&n->stop, 1);
    pthread_join(n->th, NULL);
    assert_int_equal(n->rc, CAIRN_OK);
    cairn_wk_config_release(&n->cfg);
    cairn_curve_keys_clear(&n->keys);
    tu_rmrf(n->dir);
    free(n->dir);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
}

/* ---- chunks ---- */

struct chunks {
    struct cairn_domain *d;
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES];
    size_t n;
    uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES];
    uint8_t **vals;
    size_t *lens;
};

static void chunks_make(struct chunks *c, size_t n, size_t plain_len, uint64_t seed)
{
    uint8_t key[CAIRN_KEY_BYTES];
    tu_fill_random(&seed, key, sizeof(key));
    assert_int_equal(cairn_domain_new(&c->d, key), CAIRN_OK);
    memcpy(c->dom, cairn_domain_id(c->d), sizeof(c->dom));
    struct cairn_codec *codec = NULL;
    assert_int_equal(cairn_codec_new(&codec, 1), CAIRN_OK);
    c->n = n;
    c->ids = calloc(n, sizeof(*c->ids));
    c->vals = calloc(n, sizeof(*c->vals));
    c->lens = calloc(n, sizeof(*c->lens));
    uint8_t *plain = malloc(plain_len);
    for (size_t i = 0; i < n; i++) {
        tu_fill_random(&seed, plain, plain_len);
        cairn_chunk_id(c->d, plain, plain_len, c->ids[i]);
        c->vals[i] = malloc(cairn_codec_bound(plain_len));
        assert_int_equal(cairn_codec_encode(codec, c->d, c->ids[i], plain, plain_len, c->vals[i],
                                            cairn_codec_bound(plain_len), &c->lens[i]),
                         CAIRN_OK);
    }
    free(plain);
    cairn_codec_destroy(&codec);
}

static void chunks_free(struct chunks *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->vals[i]);
    free(c->vals);
    free(c->ids);
    free(c->lens);
    cairn_domain_destroy(&c->d);
}

/* ---- a client ---- */

struct client {
    struct cairn_net *net;
    struct cairn_curve_keys keys;
    struct cairn_sock *s;
    uint64_t rid;
};

static void client_open(struct client *cl, const struct cairn_curve_keys *keys, struct node *n)
{
    memset(cl, 0, sizeof(*cl));
    assert_int_equal(cairn_net_new(&cl->net), CAIRN_OK);
    cl->keys = *keys;
    assert_int_equal(cairn_sock_client(cl->net, n->endpoint, &cl->keys, n->keys.public_z85, NULL, &cl->s), CAIRN_OK);
}

static void client_close(struct client *cl)
{
    cairn_sock_destroy(&cl->s);
    cairn_net_destroy(&cl->net);
    cairn_curve_keys_clear(&cl->keys);
}

/* Send m (destroyed) and wait for its reply; NULL after timeout_ms. */
static struct cairn_msg *call(struct client *cl, struct cairn_msg *m, int timeout_ms)
{
    uint64_t rid = ++cl->rid;
    cairn_msg_set_rid(m, rid);
    int rc = cairn_sock_send(cl->s, m);
    cairn_msg_destroy(&m);
    if (rc == CAIRN_EAGAIN) /* a client refused by the server has no pipe to queue on */
        return NULL;
    if (rc != CAIRN_OK)
        fail_msg("send: %s", cairn_err_msg());
    for (;;) {
        struct cairn_msg *r = NULL;
        rc = cairn_sock_recv(cl->s, timeout_ms, &r);
        if (rc == CAIRN_ETIMEDOUT)
            return NULL;
        if (rc != CAIRN_OK)
            fail_msg("recv: %s", cairn_err_msg());
        if (cairn_msg_rid(r) == rid)
            return r;
        cairn_msg_destroy(&r);
    }
}

static struct cairn_msg *ids_msg(enum cairn_msg_type t, const uint8_t *dom, uint8_t (*ids)[32], size_t n)
{
    struct cairn_msg *m = cairn_msg_new(t);
    cairn_msg_set_bin(m, "domain", dom, CAIRN_DOMAIN_ID_BYTES);
    struct cairn_mval *a = cairn_msg_set_array(m, "ids");
    for (size_t i = 0; i < n; i++)
        cairn_mval_push_bin(m, a, ids[i], CAIRN_CHUNK_ID_BYTES);
    return m;
}

static struct cairn_msg *put_msg(const struct chunks *c, size_t from, size_t n)
{
    struct cairn_msg *m = ids_msg(CAIRN_MSG_CHUNK_PUT, c->dom, c->ids + from, n);
    for (size_t i = from; i < from + n; i++)
        cairn_msg_add_frame(m, c->vals[i], c->lens[i]);
    return m;
}

static void expect_statuses(struct cairn_msg *r, const uint64_t *want, size_t n)
{
    assert_non_null(r);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    const struct cairn_mval *st;
    size_t got = 0;
    assert_int_equal(cairn_msg_get_array(r, "status", &st, &got), CAIRN_OK);
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 99;
        assert_int_equal(cairn_mval_u64(cairn_mval_at(st, i), &v), CAIRN_OK);
        if (v != want[i])
            fail_msg("status[%zu] = %llu, want %llu", i, (unsigned long long)v, (unsigned long long)want[i]);
    }
}

static uint8_t bitmap_byte(struct cairn_msg *r, size_t i)
{
    const uint8_t *b;
    size_t len;
    assert_int_equal(cairn_msg_get_bin(r, "bitmap", &b, &len), CAIRN_OK);
    assert_true(i < len);
    return b[i];
}

/* ---- tests ---- */

struct fx {
    struct node *n;
    struct client cl;
};

static int setup(void **state)
{
    const char *lv = getenv("CAIRN_TEST_LOG");
    enum cairn_log_level level = CAIRN_LOG_WARN;
    if (lv)
        cairn_log_level_parse(lv, &level);
    cairn_log_set_level(level);
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    struct fx *f = calloc(1, sizeof(*f));
    struct cairn_curve_keys ck;
    assert_int_equal(cairn_curve_keypair(&ck), CAIRN_OK);
    f->n = node_start(ck.public_z85);
    client_open(&f->cl, &ck, f->n);
    cairn_curve_keys_clear(&ck);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    client_close(&f->cl);
    node_stop(f->n);
    free(f);
    return 0;
}

static void test_put_get_has_roundtrip(void **state)
{
    struct fx *f = *state;
    struct chunks c = {0};
    chunks_make(&c, 10, 20000, 1);
    /* 8 stored, the last 2 never */
    uint64_t zeros[8] = {0};
    struct cairn_msg *r = call(&f->cl, put_msg(&c, 0, 8), 5000);
    expect_statuses(r, zeros, 8);
    cairn_msg_destroy(&r);
    r = call(&f->cl, put_msg(&c, 0, 8), 5000); /* again: already held, still 0 */
    expect_statuses(r, zeros, 8);
    cairn_msg_destroy(&r);

    r = call(&f->cl, ids_msg(CAIRN_MSG_CHUNK_GET, c.dom, c.ids, 10), 5000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    uint64_t count = 0;
    assert_int_equal(cairn_msg_get_u64(r, "count", &count), CAIRN_OK);
    assert_int_equal(count, 10);
    assert_int_equal(cairn_msg_frame_count(r), 10);
    for (size_t i = 0; i < 10; i++) {
        const uint8_t *p;
        size_t len;
        assert_int_equal(cairn_msg_frame(r, i, &p, &len), CAIRN_OK);
        if (i < 8) {
            assert_int_equal(len, c.lens[i]);
            assert_memory_equal(p, c.vals[i], len);
        } else {
            assert_int_equal(len, 0); /* missing: empty frame */
        }
    }
    cairn_msg_destroy(&r);

    r = call(&f->cl, ids_msg(CAIRN_MSG_CHUNK_HAS, c.dom, c.ids, 10), 5000);
    assert_non_null(r);
    assert_int_equal(bitmap_byte(r, 0), 0xff);
    assert_int_equal(bitmap_byte(r, 1), 0x00);
    cairn_msg_destroy(&r);

    /* the same ids in another domain are not held */
    uint8_t other[CAIRN_DOMAIN_ID_BYTES];
    memset(other, 0xab, sizeof(other));
    r = call(&f->cl, ids_msg(CAIRN_MSG_CHUNK_HAS, other, c.ids, 3), 5000);
    assert_int_equal(bitmap_byte(r, 0), 0x00);
    cairn_msg_destroy(&r);
    chunks_free(&c);
}

static void test_corrupt_refused(void **state)
{
    struct fx *f = *state;
    struct chunks c = {0}, d = {0};
    chunks_make(&c, 4, 30000, 2);
    chunks_make(&d, 1, 30000, 3);
    c.vals[1][c.lens[1] / 2] ^= 0x01;                 /* bit flip in the body */
    memcpy(c.vals[2], d.vals[0], CAIRN_MIN(c.lens[2], d.lens[0])); /* a value of another domain */
    c.lens[2] = d.lens[0];
    c.vals[3][c.lens[3] - 1] ^= 0x80;                 /* bit flip in the checksum */
    uint64_t want[4] = {0, CAIRN_ECORRUPT, CAIRN_ECORRUPT, CAIRN_ECORRUPT};
    struct cairn_msg *r = call(&f->cl, put_msg(&c, 0, 4), 5000);
    expect_statuses(r, want, 4);
    cairn_msg_destroy(&r);
    r = call(&f->cl, ids_msg(CAIRN_MSG_CHUNK_HAS, c.dom, c.ids, 4), 5000);
    assert_int_equal(bitmap_byte(r, 0), 0x01);
    cairn_msg_destroy(&r);
    chunks_free(&c);
    chunks_free(&d);
}

static void test_unsupported_and_unknown_key(void **state)
{
    struct fx *f = *state;
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_PING);
    struct cairn_msg *r = call(&f->cl, m, 5000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_code(r), CAIRN_EUNSUPPORTED);
    cairn_msg_destroy(&r);

    struct cairn_curve_keys stranger;
    assert_int_equal(cairn_curve_keypair(&stranger), CAIRN_OK);
    struct client sc;
    client_open(&sc, &stranger, f->n);
    struct chunks c = {0};
    chunks_make(&c, 1, 1000, 4);
    r = call(&sc, ids_msg(CAIRN_MSG_CHUNK_HAS, c.dom, c.ids, 1), 1000);
    assert_null(r); /* no answer at all */
    r = call(&sc, put_msg(&c, 0, 1), 500);
    assert_null(r);
    client_close(&sc);
    /* and nothing was stored */
    r = call(&f->cl, ids_msg(CAIRN_MSG_CHUNK_HAS, c.dom, c.ids, 1), 5000);
    assert_int_equal(bitmap_byte(r, 0), 0x00);
    cairn_msg_destroy(&r);

    /* its key added to the peers_allow file: answered, without a restart */
    char line[64];
    int ll = snprintf(line, sizeof(line), "%s added\n", stranger.public_z85);
    FILE *af = fopen(tu_path("%s/peers.allow", f->n->dir), "a");
    assert_non_null(af);
    assert_int_equal(fwrite(line, 1, (size_t)ll, af), (size_t)ll);
    fclose(af);
    nanosleep(&(struct timespec){1, 300000000}, NULL);
    client_open(&sc, &stranger, f->n);
    r = call(&sc, ids_msg(CAIRN_MSG_CHUNK_HAS, c.dom, c.ids, 1), 5000);
    assert_non_null(r);
    assert_int_equal(bitmap_byte(r, 0), 0x00);
    cairn_msg_destroy(&r);
    client_close(&sc);
    cairn_curve_keys_clear(&stranger);
    chunks_free(&c);
}

/* The replication client against the real service: every chunk acknowledged, done callback per chunk. */
struct done_count {
    size_t n;
    size_t deletes;
};

static void on_done(void *arg, const uint8_t *dom, const uint8_t *id, size_t len, bool del)
{
    (void)dom;
    (void)id;
    (void)len;
    struct done_count *d = arg;
    d->n++;
    d->deletes += del;
}

static void test_repl_client(void **state)
{
    struct fx *f = *state;
    struct chunks c = {0};
    chunks_make(&c, 300, 5000, 5);
    struct cairn_wk_repl *r = NULL;
    struct cairn_wk_repl_opts o = {.batch_max = 64, .window = 8, .timeout_ms = 10000};
    assert_int_equal(cairn_wk_repl_new(&r, f->cl.net, &f->cl.keys, &o), CAIRN_OK);
    struct done_count dc = {0};
    cairn_wk_repl_begin(r, on_done, &dc);
    struct cairn_wk_member m = {.id = "w1", .alive = true};
    snprintf(m.endpoint, sizeof(m.endpoint), "%.256s", f->n->endpoint);
    snprintf(m.public_key, sizeof(m.public_key), "%s", f->n->keys.public_z85);
    const struct cairn_wk_member *targets[] = {&m};
    for (size_t i = 0; i < c.n; i++) {
        uint8_t *copy = cairn_memdup(c.vals[i], c.lens[i]);
        assert_int_equal(cairn_wk_repl_push(r, targets, 1, c.dom, c.ids[i], copy, c.lens[i], cairn_free, i % 2),
                         CAIRN_OK);
    }
    uint64_t deadline = cairn_now_mono_ns() + 20000000000ull;
    while (cairn_wk_repl_pending(r) > 0 && cairn_now_mono_ns() < deadline)
        assert_int_equal(cairn_wk_repl_pump(r, 100), CAIRN_OK);
    assert_int_equal(cairn_wk_repl_pending(r), 0);
    assert_int_equal(dc.n, 300);
    assert_int_equal(dc.deletes, 150);
    uint64_t acks = 0;
    cairn_wk_repl_stats(r, &acks, NULL);
    assert_int_equal(acks, 300);

    /* a dead peer in a newer membership fails the run with EUNAVAILABLE */
    uint8_t *copy = cairn_memdup(c.vals[0], c.lens[0]);
    struct cairn_wk_member ghost = {.id = "w9", .alive = true, .endpoint = "tcp://127.0.0.1:9"};
    snprintf(ghost.public_key, sizeof(ghost.public_key), "%s", f->n->keys.public_z85);
    const struct cairn_wk_member *gt[] = {&ghost};
    assert_int_equal(cairn_wk_repl_push(r, gt, 1, c.dom, c.ids[0], copy, c.lens[0], cairn_free, false), CAIRN_OK);
    ghost.alive = false;
    struct cairn_wk_members *ms = NULL;
    assert_int_equal(cairn_wk_members_new(&ghost, 1, 42, &ms), CAIRN_OK);
    assert_int_equal(cairn_wk_repl_check_members(r, ms), CAIRN_EUNAVAILABLE);
    assert_non_null(strstr(cairn_err_msg(), "worker 'w9' died"));
    assert_int_equal(cairn_wk_repl_pump(r, 0), CAIRN_EUNAVAILABLE); /* sticky */
    cairn_wk_members_unref(&ms);
    cairn_wk_repl_begin(r, NULL, NULL);
    assert_int_equal(cairn_wk_repl_pending(r), 0);
    cairn_wk_repl_destroy(&r);
    assert_null(r);

    /* a client whose key the worker does not allow: ETIMEDOUT after its timeout, naming the peer */
    struct cairn_curve_keys stranger;
    assert_int_equal(cairn_curve_keypair(&stranger), CAIRN_OK);
    struct cairn_wk_repl_opts so = {.timeout_ms = 1200};
    assert_int_equal(cairn_wk_repl_new(&r, f->cl.net, &stranger, &so), CAIRN_OK);
    cairn_wk_repl_begin(r, on_done, &dc);
    copy = cairn_memdup(c.vals[1], c.lens[1]);
    assert_int_equal(cairn_wk_repl_push(r, targets, 1, c.dom, c.ids[1], copy, c.lens[1], cairn_free, false), CAIRN_OK);
    uint64_t t0 = cairn_now_mono_ns();
    int rc = CAIRN_OK;
    while (rc == CAIRN_OK && cairn_now_mono_ns() - t0 < 10000000000ull)
        rc = cairn_wk_repl_pump(r, 100);
    assert_int_equal(rc, CAIRN_ETIMEDOUT);
    assert_non_null(strstr(cairn_err_msg(), "worker 'w1'"));
    assert_true(cairn_now_mono_ns() - t0 >= 1000000000ull);
    cairn_wk_repl_destroy(&r);
    cairn_curve_keys_clear(&stranger);
    chunks_free(&c);
}

/* ---- placement, generator, config: no daemon needed ---- */

static void test_placement_matches(void **state)
{
    (void)state;
    struct cairn_wk_member v[6];
    memset(v, 0, sizeof(v));
    const char *ids[6] = {"w1", "w2", "w3", "w4", "w5", "w6"};
    for (size_t i = 0; i < 6; i++) {
        snprintf(v[i].id, sizeof(v[i].id), "%s", ids[i]);
        v[i].alive = i != 2 && i != 4; /* w3 and w5 are dead */
    }
    const char *live[] = {"w1", "w2", "w4", "w6"};
    struct cairn_wk_members *ms = NULL;
    assert_int_equal(cairn_wk_members_new(v, 6, 3, &ms), CAIRN_OK);
    assert_int_equal(ms->nlive, 4);
    uint64_t seed = 11;
    for (int round = 0; round < 200; round++) {
        uint8_t dom[CAIRN_DOMAIN_ID_BYTES], id[CAIRN_CHUNK_ID_BYTES];
        tu_fill_random(&seed, dom, sizeof(dom));
        tu_fill_random(&seed, id, sizeof(id));
        for (unsigned r = 1; r <= 5; r++) {
            size_t want[8];
            const struct cairn_wk_member *got[8];
            size_t kw = cairn_placement_pick(live, 4, r, dom, id, want);
            size_t kg = cairn_wk_members_place(ms, r, dom, id, got);
            assert_int_equal(kg, kw);
            assert_int_equal(kg, CAIRN_MIN(r, 4u));
            for (size_t i = 0; i < kg; i++) {
                assert_string_equal(got[i]->id, live[want[i]]);
                assert_true(got[i]->alive);
            }
        }
    }
    assert_non_null(cairn_wk_members_find(ms, "w5"));
    assert_null(cairn_wk_members_find(ms, "w7"));
    cairn_wk_members_unref(&ms);
    assert_null(ms);
}

static void test_generator(void **state)
{
    (void)state;
    /* the generator is one byte stream however it is read */
    uint8_t a[1000], b[1000];
    struct cairn_wk_gen g;
    cairn_wk_gen_init(&g, 77);
    cairn_wk_gen_fill(&g, a, sizeof(a));
    cairn_wk_gen_init(&g, 77);
    size_t off = 0, step = 1;
    while (off < sizeof(b)) {
        size_t n = CAIRN_MIN(step, sizeof(b) - off);
        cairn_wk_gen_fill(&g, b + off, n);
        off += n;
        step = step * 3 % 17 + 1;
    }
    assert_memory_equal(a, b, sizeof(a));
    cairn_wk_gen_init(&g, 78);
    cairn_wk_gen_fill(&g, b, sizeof(b));
    assert_memory_not_equal(a, b, sizeof(a));
}

static void test_config(void **state)
{
    (void)state;
    struct cairn_wk_config cfg;
    struct cairn_wk_flags fl;
    char *argv1[] = {"cairn-worker", "--id", "w7", "--keys", "/k", "--coordinator_key", "/c", "--master_key", "/m",
                     "--job_threads", "3", NULL};
    assert_int_equal(cairn_wk_config_load(&cfg, &fl, 11, argv1), CAIRN_OK);
    assert_string_equal(cfg.id, "w7");
    assert_int_equal(cfg.job_threads, 3);
    assert_int_equal(cfg.capacity, 8);
    assert_int_equal(cfg.job_queue, 8);
    assert_int_equal(cfg.replication_timeout, 30000);
    assert_string_equal(cfg.coordinator, "tcp://127.0.0.1:7301");
    assert_null(cfg.peer_advertise);
    assert_false(fl.no_coordinator);
    cairn_wk_config_release(&cfg);

    char *argv2[] = {"cairn-worker", "--keys", "/k", NULL}; /* coordinator_key missing */
    assert_int_equal(cairn_wk_config_load(&cfg, &fl, 3, argv2), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "coordinator_key"));
    cairn_wk_config_release(&cfg);

    char *argv3[] = {"cairn-worker", "--no-coordinator", "--keys", "/k", NULL}; /* enough without one */
    assert_int_equal(cairn_wk_config_load(&cfg, &fl, 4, argv3), CAIRN_OK);
    assert_true(fl.no_coordinator);
    assert_non_null(cfg.id); /* the hostname */
    cairn_wk_config_release(&cfg);

    char *argv4[] = {"cairn-worker", "--no-coordinator", "--keys", "/k", "--id", "bad id", NULL};
    assert_int_equal(cairn_wk_config_load(&cfg, &fl, 6, argv4), CAIRN_EINVAL);
    cairn_wk_config_release(&cfg);
    char *argv5[] = {"cairn-worker", "--no-coordinator", "--keys", "/k", "--job_threads", "0", NULL};
    assert_int_equal(cairn_wk_config_load(&cfg, &fl, 6, argv5), CAIRN_EINVAL);
    cairn_wk_config_release(&cfg);
}

/* ---- the binary ---- */

static void test_example_config_matches(void **state)
{
    (void)state;
    char *dir = tu_tempdir("worker-example");
    assert_int_equal(tu_sh("'%s' --print-example-config > '%s/ex.conf'", CAIRN_WORKER_BIN, dir), 0);
    size_t n1 = 0, n2 = 0;
    uint8_t *a = tu_read_file(tu_path("%s/ex.conf", dir), &n1);
    uint8_t *b = tu_read_file(CAIRN_WORKER_SRC_DIR "/../deploy/worker.conf.example", &n2);
    assert_non_null(a);
    if (!b)
        fail_msg("deploy/worker.conf.example is missing");
    if (n1 != n2 || memcmp(a, b, n1) != 0)
        fail_msg("deploy/worker.conf.example differs from cairn-worker --print-example-config: regenerate it");
    free(a);
    free(b);
    tu_rmrf(dir);
    free(dir);
}

static pid_t spawn_worker(const char *dir)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char log[4096];
        snprintf(log, sizeof(log), "%s/worker.log", dir);
        if (!freopen(log, "a", stderr))
            _exit(127);
        char cfg[4096];
        snprintf(cfg, sizeof(cfg), "%s/worker.conf", dir);
        execl(CAIRN_WORKER_BIN, "cairn-worker", "--config", cfg, "--no-coordinator", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Wait for DATA_DIR/peer.endpoint (written after the bind) to name an endpoint other than `old`. */
static void wait_endpoint(const char *dir, char *out, size_t cap, pid_t pid)
{
    for (int i = 0; i < 1000; i++) {
        size_t n = 0;
        uint8_t *p = tu_read_file(tu_path("%s/data/peer.endpoint", dir), &n);
        if (p && n > 1 && p[n - 1] == '\n') {
            snprintf(out, cap, "%.*s", (int)(n - 1), (const char *)p);
            free(p);
            return;
        }
        free(p);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            fail_msg("cairn-worker exited early (status %d); see %s/worker.log", st, dir);
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    fail_msg("cairn-worker did not write its peer endpoint");
}

static int stop_child(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fail_msg("cairn-worker did not stop within 10 s of SIGTERM");
    return -1;
}

static void test_binary_sigterm_and_restart(void **state)
{
    (void)state;
    char *dir = tu_tempdir("worker-bin");
    struct cairn_curve_keys wk, ck;
    assert_int_equal(cairn_curve_keypair(&wk), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&ck), CAIRN_OK);
    assert_int_equal(cairn_curve_keys_write(tu_path("%s/worker.key", dir), &wk), CAIRN_OK);
    char text[1024];
    int n = snprintf(text, sizeof(text), "%s client\n", ck.public_z85);
    tu_write_file(tu_path("%s/peers.allow", dir), text, (size_t)n);
    n = snprintf(text, sizeof(text),
                 "# test worker\nid = wbin\ndata_dir = %s/data\nkeys = %s/worker.key\npeers_allow = %s/peers.allow\n"
                 "peer_endpoint = tcp://127.0.0.1:*\nlog_level = info\n",
                 dir, dir, dir);
    tu_write_file(tu_path("%s/worker.conf", dir), text, (size_t)n);

    pid_t pid = spawn_worker(dir);
    char ep[CAIRN_WK_ENDPOINT_MAX + 1];
    wait_endpoint(dir, ep, sizeof(ep), pid);
    struct node fake = {0};
    snprintf(fake.endpoint, sizeof(fake.endpoint), "%s", ep);
    fake.keys = wk;
    struct client cl;
    client_open(&cl, &ck, &fake);
    struct chunks c = {0};
    chunks_make(&c, 3, 70000, 9);
    uint64_t zeros[3] = {0};
    struct cairn_msg *r = call(&cl, put_msg(&c, 0, 3), 10000);
    expect_statuses(r, zeros, 3);
    cairn_msg_destroy(&r);
    client_close(&cl);
    assert_int_equal(stop_child(pid), 0);

    /* restart on the same data: the chunks are there; a key not allowed still gets nothing */
    unlink(tu_path("%s/data/peer.endpoint", dir));
    pid = spawn_worker(dir);
    wait_endpoint(dir, ep, sizeof(ep), pid);
    snprintf(fake.endpoint, sizeof(fake.endpoint), "%s", ep);
    struct cairn_curve_keys stranger;
    assert_int_equal(cairn_curve_keypair(&stranger), CAIRN_OK);
    client_open(&cl, &stranger, &fake);
    r = call(&cl, ids_msg(CAIRN_MSG_CHUNK_HAS, c.dom, c.ids, 3), 1000);
    assert_null(r);
    client_close(&cl);
    client_open(&cl, &ck, &fake);
    r = call(&cl, ids_msg(CAIRN_MSG_CHUNK_GET, c.dom, c.ids, 3), 10000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_frame_count(r), 3);
    for (size_t i = 0; i < 3; i++) {
        const uint8_t *p;
        size_t len;
        assert_int_equal(cairn_msg_frame(r, i, &p, &len), CAIRN_OK);
        assert_int_equal(len, c.lens[i]);
        assert_memory_equal(p, c.vals[i], len);
    }
    cairn_msg_destroy(&r);
    client_close(&cl);
    assert_int_equal(stop_child(pid), 0);
    chunks_free(&c);
    cairn_curve_keys_clear(&wk);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_has_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsupported_and_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repl_client, setup, teardown),
        cmocka_unit_test(test_placement_matches),
        cmocka_unit_test(test_generator),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_example_config_matches),
        cmocka_unit_test(test_binary_sigterm_and_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
