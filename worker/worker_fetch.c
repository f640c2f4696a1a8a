/*
 * worker_fetch.c: the fetch client (see worker_fetch.h).
 *
 * Data structures
 * - A want is one chunk to fetch: `next` is the rank of the candidate asked now. The candidate list is
 *   not stored (it would cost 64 pointers per chunk): it is the placement ranking of all live members
 *   without this worker, recomputed when a chunk moves on (a few hashes).
 * - A peer has a DEALER (lazily connected, replaced when the member's endpoint or key changed), a queue
 *   of wants waiting to be asked, and WINDOW batch slots; a free slot is a credit. Request ids are never
 *   reused, so a late reply to a batch written off (timeout) or of an earlier run is recognised and
 *   ignored.
 */
#include "worker_fetch.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/codec.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <stdio.h>
#include <time.h>

#define BATCH_MAX 64u
#define WINDOW 8u
#define CAND_MAX 64u
#define POLL_MAX 64u
#define DEFAULT_TIMEOUT_MS 30000u

struct want {
    uint8_t next; /* rank of the candidate asked now */
    bool done;
};

struct fbatch {
    uint64_t rid; /* 0: free slot */
    uint64_t sent_ns;
    size_t n;
    size_t idx[BATCH_MAX];
};

struct fpeer {
    char id[CAIRN_WK_ID_MAX + 1];
    char endpoint[CAIRN_WK_ENDPOINT_MAX + 1];
    char key[41];
    struct cairn_sock *sock;
    size_t *q; /* wants waiting: q[qhead..qlen) */
    size_t qhead, qlen, qcap;
    struct fbatch slots[WINDOW];
    unsigned inflight;
    uint64_t blocked_ns; /* first refused send since the last accepted one (0: none) */
};

struct cairn_wk_fetch {
    struct cairn_net *net;
    const struct cairn_curve_keys *keys;
    struct fpeer **peers;
    size_t npeers, peers_cap;
    uint64_t rid;
};

/* What one run works on. */
struct run {
    struct cairn_wk_fetch *f;
    const struct cairn_wk_fetch_req *rq;
    const uint8_t *dom;
    uint64_t timeout_ns;
    struct want *w;
    size_t remaining;
    uint64_t chunks, bytes;
    uint8_t *plain; /* scratch for verification */
    int err;        /* first fatal error */
    char msg[1024]; /* its message */
};

int cairn_wk_fetch_new(struct cairn_wk_fetch **out, struct cairn_net *net, const struct cairn_curve_keys *keys)
{
    *out = NULL;
    struct cairn_wk_fetch *f = cairn_calloc(1, sizeof(*f));
    if (!f)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the fetch client");
    f->net = net;
    f->keys = keys;
    *out = f;
    return CAIRN_OK;
}

void cairn_wk_fetch_destroy(struct cairn_wk_fetch **fp)
{
    if (!fp || !*fp)
        return;
    struct cairn_wk_fetch *f = *fp;
    for (size_t i = 0; i < f->npeers; i++) {
        cairn_sock_destroy(&f->peers[i]->sock);
        cairn_free(f->peers[i]->q);
        cairn_free(f->peers[i]);
    }
    cairn_free(f->peers);
    cairn_free(f);
    *fp = NULL;
}

/* ---- candidates ---- */

/* The candidate of rank k for chunk i (placement order over the live members, this worker left out). */
static const struct cairn_wk_member *cand_at(const struct run *r, size_t i, unsigned k)
{
    const struct cairn_wk_member *all[CAND_MAX];
    size_t n = cairn_wk_members_place(r->rq->ms, CAND_MAX, r->dom, r->rq->ids[i], all);
    unsigned seen = 0;
    for (size_t j = 0; j < n; j++) {
        if (!strcmp(all[j]->id, r->rq->self_id))
            continue;
        if (seen++ == k)
            return all[j];
    }
    return NULL;
}

/* ---- peers ---- */

static struct fpeer *peer_get(struct cairn_wk_fetch *f, const struct cairn_wk_member *m)
{
    for (size_t i = 0; i < f->npeers; i++) {
        struct fpeer *p = f->peers[i];
        if (strcmp(p->id, m->id) != 0)
            continue;
        if (strcmp(p->endpoint, m->endpoint) || strcmp(p->key, m->public_key)) {
            cairn_sock_destroy(&p->sock); /* moved: what was in flight there is written off by its rid */
            for (unsigned s = 0; s < WINDOW; s++)
                p->slots[s].rid = 0;
            p->inflight = 0;
            snprintf(p->endpoint, sizeof(p->endpoint), "%s", m->endpoint);
            snprintf(p->key, sizeof(p->key), "%s", m->public_key);
        }
        return p;
    }
    if (cairn_array_grow((void **)&f->peers, &f->peers_cap, f->npeers + 1, sizeof(*f->peers)) != CAIRN_OK)
        return NULL;
    struct fpeer *p = cairn_calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snprintf(p->id, sizeof(p->id), "%s", m->id);
    snprintf(p->endpoint, sizeof(p->endpoint), "%s", m->endpoint);
    snprintf(p->key, sizeof(p->key), "%s", m->public_key);
    f->peers[f->npeers++] = p;
    return p;
}

static int q_push(struct fpeer *p, size_t idx)
{
    if (p->qhead > 0 && p->qhead == p->qlen)
        p->qhead = p->qlen = 0;
    if (p->qlen == p->qcap && p->qhead > 0) {
        memmove(p->q, p->q + p->qhead, (p->qlen - p->qhead) * sizeof(*p->q));
        p->qlen -= p->qhead;
        p->qhead = 0;
    }
    if (cairn_array_grow((void **)&p->q, &p->qcap, p->qlen + 1, sizeof(*p->q)) != CAIRN_OK)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory queueing chunks for worker '%s'", p->id);
    p->q[p->qlen++] = idx;
    return CAIRN_OK;
}

/* ---- wants ---- */

/* Record the run's first fatal error with this thread's current message. */
static void fail(struct run *r, int rc)
{
    if (r->err)
        return;
    r->err = rc;
    snprintf(r->msg, sizeof(r->msg), "%s", cairn_err_msg());
}

/* Ask chunk i of its current candidate; none left: the run fails. */
static void assign(struct run *r, size_t i)
{
    const struct cairn_wk_member *m = cand_at(r, i, r->w[i].next);
    if (!m) {
        char hex[2 * CAIRN_CHUNK_ID_BYTES + 1], asked[512] = "";
        cairn_hex_encode(hex, r->rq->ids[i], CAIRN_CHUNK_ID_BYTES);
        size_t off = 0;
        for (unsigned k = 0; k < r->w[i].next && off < sizeof(asked) - 1; k++) {
            const struct cairn_wk_member *a = cand_at(r, i, k);
            if (a)
                off += (size_t)snprintf(asked + off, sizeof(asked) - off, "%s'%s'", k ? ", " : "", a->id);
        }
        fail(r, cairn_err_set(CAIRN_ENOTFOUND, "chunk %s of %s is on no live worker (asked: %s)", hex,
                              r->rq->what ? r->rq->what : "a tree", off ? asked : "no other live worker"));
        return;
    }
    struct fpeer *p = peer_get(r->f, m);
    if (!p) {
        fail(r, cairn_err_set(CAIRN_ENOMEM, "out of memory for peer '%s'", m->id));
        return;
    }
    if (q_push(p, i) != CAIRN_OK)
        fail(r, CAIRN_ENOMEM);
}

static void move_on(struct run *r, size_t i)
{
    if (r->w[i].done)
        return;
    r->w[i].next++;
    assign(r, i);
}

/* A value for chunk i from peer p: verify, store, count. */
static void got_value(struct run *r, struct fpeer *p, size_t i, const uint8_t *val, size_t len)
{
    const struct cairn_wk_fetch_req *rq = r->rq;
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    int rc = cairn_codec_verify(val, len);
    if (rc == CAIRN_OK && rq->domain && rq->codec) {
        size_t plen = 0;
        rc = cairn_codec_decode(rq->codec, rq->domain, rq->ids[i], val, len, r->plain, CAIRN_CODEC_MAX_PLAIN, &plen);
    }
    if (rc != CAIRN_OK) {
        cairn_hex_encode(hex, rq->ids[i], CAIRN_CHUNK_ID_BYTES);
        cairn_warn("fetch: chunk %s from worker '%s' fails verification (%s); asking another worker", hex, p->id,
                   cairn_err_msg());
        move_on(r, i);
        return;
    }
    bool held = false;
    rc = cairn_store_has_chunk(rq->store, r->dom, rq->ids[i], &held);
    if (rc != CAIRN_OK || !held) {
        rc = cairn_store_put_raw(rq->store, r->dom, rq->ids[i], val, len);
        if (rc != CAIRN_OK) {
            fail(r, rc);
            return;
        }
        if (rq->stats)
            cairn_wk_stats_added(rq->stats, len);
    }
    r->w[i].done = true;
    r->remaining--;
    r->chunks++;
    r->bytes += len;
}

/* ---- requests ---- */

static void batch_move_on(struct run *r, struct fpeer *p, struct fbatch *b)
{
    b->rid = 0;
    p->inflight--;
    for (size_t k = 0; k < b->n; k++)
        move_on(r, b->idx[k]);
}

static void send_batches(struct run *r, struct fpeer *p, uint64_t now)
{
    struct cairn_wk_fetch *f = r->f;
    while (!r->err && p->qhead < p->qlen && p->inflight < WINDOW) {
        if (!p->sock) {
            int rc = cairn_sock_client(f->net, p->endpoint, f->keys, p->key, NULL, &p->sock);
            if (rc != CAIRN_OK) {
                cairn_warn("fetch: cannot connect to worker '%s' at %s: %s", p->id, p->endpoint, cairn_err_msg());
                while (p->qhead < p->qlen)
                    move_on(r, p->q[p->qhead++]);
                return;
            }
        }
        struct fbatch *b = NULL;
        for (unsigned s = 0; s < WINDOW && !b; s++)
            if (!p->slots[s].rid)
                b = &p->slots[s];
        struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_CHUNK_GET);
        if (!m) {
            fail(r, cairn_err_set(CAIRN_ENOMEM, "out of memory building a chunk.get"));
            return;
        }
        uint64_t rid = ++f->rid;
        cairn_msg_set_rid(m, rid);
        cairn_msg_set_bin(m, "domain", r->dom, CAIRN_DOMAIN_ID_BYTES);
        struct cairn_mval *ids = cairn_msg_set_array(m, "ids");
        b->n = 0;
        for (size_t k = p->qhead; k < p->qlen && b->n < BATCH_MAX; k++) {
            b->idx[b->n++] = p->q[k];
            cairn_mval_push_bin(m, ids, r->rq->ids[p->q[k]], CAIRN_CHUNK_ID_BYTES);
        }
        int rc = cairn_sock_send(p->sock, m);
        cairn_msg_destroy(&m);
        if (rc == CAIRN_EAGAIN) {
            if (!p->blocked_ns) {
                p->blocked_ns = now;
            } else if (now - p->blocked_ns >= r->timeout_ns) {
                cairn_warn("fetch: worker '%s' at %s takes no requests; asking others", p->id, p->endpoint);
                p->blocked_ns = 0;
                while (p->qhead < p->qlen)
                    move_on(r, p->q[p->qhead++]);
            }
            return;
        }
        p->qhead += b->n;
        p->blocked_ns = 0;
        if (rc != CAIRN_OK) {
            cairn_warn("fetch: chunk.get to worker '%s' not sent: %s", p->id, cairn_err_msg());
            for (size_t k = 0; k < b->n; k++)
                move_on(r, b->idx[k]);
            continue;
        }
        b->rid = rid;
        b->sent_ns = now;
        p->inflight++;
    }
}

static void handle_reply(struct run *r, struct fpeer *p, const struct cairn_msg *m)
{
    if (!cairn_msg_is_reply(m) || cairn_msg_type(m) != CAIRN_MSG_CHUNK_GET)
        return;
    struct fbatch *b = NULL;
    for (unsigned s = 0; s < WINDOW && !b; s++)
        if (p->slots[s].rid && p->slots[s].rid == cairn_msg_rid(m))
            b = &p->slots[s];
    if (!b)
        return; /* written off already */
    if (cairn_msg_code(m) != CAIRN_OK || cairn_msg_frame_count(m) != b->n) {
        cairn_warn("fetch: worker '%s' answered chunk.get with %s: %s", p->id, cairn_err_name(cairn_msg_code(m)),
                   cairn_msg_text(m) ? cairn_msg_text(m) : "wrong frame count");
        batch_move_on(r, p, b);
        return;
    }
    for (size_t k = 0; k < b->n && !r->err; k++) {
        const uint8_t *val = NULL;
        size_t len = 0;
        size_t i = b->idx[k];
        if (r->w[i].done)
            continue;
        if (cairn_msg_frame(m, k, &val, &len) != CAIRN_OK || len == 0)
            move_on(r, i);
        else
            got_value(r, p, i, val, len);
    }
    b->rid = 0;
    p->inflight--;
}

static void drain(struct run *r, struct fpeer *p)
{
    for (;;) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(p->sock, 0, &m);
        if (rc == CAIRN_OK)
            handle_reply(r, p, m);
        cairn_msg_destroy(&m);
        if (rc == CAIRN_ETIMEDOUT || rc == CAIRN_ECANCELED || rc == CAIRN_EIO || rc == CAIRN_ENOMEM || r->err)
            return;
    }
}

static void check_timeouts(struct run *r, uint64_t now)
{
    for (size_t i = 0; i < r->f->npeers && !r->err; i++) {
        struct fpeer *p = r->f->peers[i];
        for (unsigned s = 0; s < WINDOW; s++) {
            struct fbatch *b = &p->slots[s];
            if (b->rid && now - b->sent_ns >= r->timeout_ns) {
                cairn_warn("fetch: worker '%s' did not answer a chunk.get within %.1f s; asking others", p->id,
                           (double)r->timeout_ns / 1e9);
                batch_move_on(r, p, b);
            }
        }
    }
}

int cairn_wk_fetch_run(struct cairn_wk_fetch *f, const struct cairn_wk_fetch_req *rq, uint64_t *chunks,
                       uint64_t *bytes)
{
    *chunks = *bytes = 0;
    if (rq->n == 0)
        return CAIRN_OK;
    struct run r = {.f = f, .rq = rq, .dom = cairn_domain_id(rq->domain), .remaining = rq->n};
    r.timeout_ns = (rq->timeout_ms ? rq->timeout_ms : DEFAULT_TIMEOUT_MS) * 1000000ull;
    r.w = cairn_calloc(rq->n, sizeof(*r.w));
    r.plain = cairn_malloc(CAIRN_CODEC_MAX_PLAIN);
    if (!r.w || !r.plain) {
        fail(&r, cairn_err_set(CAIRN_ENOMEM, "out of memory fetching %zu chunks", rq->n));
        goto out;
    }
    for (size_t i = 0; i < f->npeers; i++) { /* nothing of an earlier run is waited for */
        struct fpeer *p = f->peers[i];
        p->qhead = p->qlen = 0;
        for (unsigned s = 0; s < WINDOW; s++)
            p->slots[s].rid = 0;
        p->inflight = 0;
        p->blocked_ns = 0;
    }
    for (size_t i = 0; i < rq->n && !r.err; i++)
        assign(&r, i);
    while (!r.err && r.remaining > 0) {
        if (rq->check) {
            int rc = rq->check(rq->check_arg);
            if (rc != CAIRN_OK) {
                fail(&r, rc);
                break;
            }
        }
        uint64_t now = cairn_now_mono_ns();
        for (size_t i = 0; i < f->npeers && !r.err; i++)
            send_batches(&r, f->peers[i], now);
        if (r.err || r.remaining == 0)
            break;
        struct cairn_sock *socks[POLL_MAX];
        struct fpeer *owners[POLL_MAX];
        size_t k = 0;
        uint64_t next = UINT64_MAX;
        for (size_t i = 0; i < f->npeers && k < POLL_MAX; i++) {
            struct fpeer *p = f->peers[i];
            if (!p->inflight || !p->sock)
                continue;
            for (unsigned s = 0; s < WINDOW; s++)
                if (p->slots[s].rid)
                    next = CAIRN_MIN(next, p->slots[s].sent_ns + r.timeout_ns);
            socks[k] = p->sock;
            owners[k++] = p;
        }
        if (k == 0) { /* every peer with work refuses sends for now */
            nanosleep(&(struct timespec){0, 5000000}, NULL);
            continue;
        }
        int wait = 100;
        if (next != UINT64_MAX)
            wait = next > now ? (int)CAIRN_MIN((next - now) / 1000000u + 1, 100u) : 0;
        uint64_t ready = 0;
        cairn_sock_poll(socks, k, wait, &ready);
        for (size_t j = 0; j < k && !r.err; j++)
            if ((ready >> j) & 1)
                drain(&r, owners[j]);
        check_timeouts(&r, cairn_now_mono_ns());
    }
out:
    if (r.err)
        cairn_err_set(r.err, "%s", r.msg);
    *chunks = r.chunks;
    *bytes = r.bytes;
    cairn_free(r.w);
    cairn_free(r.plain);
    return r.err;
}
