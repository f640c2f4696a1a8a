/*
 * worker_repl.c: the replication client (see worker_repl.h).
 *
 * Data structures
 * - An item is one chunk value being replicated; `pending` counts the peers that still owe an
 *   acknowledgement. Items are on the client's list (so a reset frees each exactly once) and referenced
 *   by queue entries, one per target peer.
 * - A peer has a DEALER (lazily connected; recreated when the membership gives it another endpoint or
 *   key), a deque of entries waiting to be sent (retries go back to the front) and `window` batch slots.
 *   A free slot is a credit. Replies are matched to slots by request id; ids are never reused, so a late
 *   reply to a batch that was already resent is recognised and ignored.
 * - Timeouts: a batch is resent after timeout_ms / attempts without an answer; an entry that reached
 *   `attempts` sends fails the run. The error is sticky: once set, nothing more is sent and every call
 *   returns it until cairn_wk_repl_begin.
 */
#include "worker_repl.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#define BATCH_LIMIT 256u
#define WINDOW_LIMIT 32u
#define BATCH_BYTES (32u << 20)
#define POLL_MAX 64

struct item {
    struct item *prev, *next;
    uint8_t domain[CAIRN_DOMAIN_ID_BYTES];
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    uint8_t *value;
    size_t len;
    void (*free_fn)(void *);
    unsigned pending;
    bool delete_local;
};

struct qent {
    struct item *it;
    unsigned attempts; /* sends so far */
};

struct batch {
    uint64_t rid;     /* 0 = free slot */
    uint64_t sent_ns;
    size_t n;
    struct qent *ents; /* batch_max entries */
};

struct peer {
    char id[CAIRN_WK_ID_MAX + 1];
    char endpoint[CAIRN_WK_ENDPOINT_MAX + 1];
    char key[41];
    struct cairn_sock *sock;
    struct qent *q; /* deque: q[(head + i) % cap], i < len */
    size_t head, len, cap;
    struct batch *slots;
    unsigned inflight;
    uint64_t blocked_ns; /* first send refused since the last one accepted (0: none) */
};

struct cairn_wk_repl {
    struct cairn_net *net;
    const struct cairn_curve_keys *keys;
    struct cairn_wk_repl_opts o;
    uint64_t attempt_ns;
    struct peer **peers;
    size_t npeers, peers_cap;
    struct item *items; /* list of live items */
    size_t nitems;
    uint64_t item_bytes;
    uint64_t next_rid;
    uint64_t acks, ack_bytes;
    cairn_wk_repl_done_fn done;
    void *done_arg;
    int err;
    char errmsg[768];
};

/* ---- items ---- */

static void item_free(struct cairn_wk_repl *r, struct item *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        r->items = it->next;
    if (it->next)
        it->next->prev = it->prev;
    r->nitems--;
    r->item_bytes -= it->len;
    if (it->free_fn)
        it->free_fn(it->value);
    cairn_free(it);
}

/* ---- deque ---- */

static int q_reserve(struct peer *p)
{
    if (p->len < p->cap)
        return CAIRN_OK;
    size_t ncap = p->cap ? 2 * p->cap : 256;
    struct qent *nq = cairn_calloc(ncap, sizeof(*nq));
    if (!nq)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory queueing chunks for worker '%s'", p->id);
    for (size_t i = 0; i < p->len; i++)
        nq[i] = p->q[(p->head + i) % p->cap];
    cairn_free(p->q);
    p->q = nq;
    p->cap = ncap;
    p->head = 0;
    return CAIRN_OK;
}

static int q_push_back(struct peer *p, struct qent e)
{
    CAIRN_FORWARD_IF_ERROR(q_reserve(p));
    p->q[(p->head + p->len) % p->cap] = e;
    p->len++;
    return CAIRN_OK;
}

static int q_push_front(struct peer *p, struct qent e)
{
    CAIRN_FORWARD_IF_ERROR(q_reserve(p));
    p->head = (p->head + p->cap - 1) % p->cap;
    p->q[p->head] = e;
    p->len++;
    return CAIRN_OK;
}

static struct qent *q_front(struct peer *p) { return &p->q[p->head]; }

static void q_pop_front(struct peer *p)
{
    p->head = (p->head + 1) % p->cap;
    p->len--;
}

/* ---- errors ---- */

static void fail(struct cairn_wk_repl *r, int code, const char *fmt, ...) CAIRN_PRINTF(3, 4);
static void fail(struct cairn_wk_repl *r, int code, const char *fmt, ...)
{
    if (r->err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errmsg, sizeof(r->errmsg), fmt, ap);
    va_end(ap);
    r->err = code;
}

static int sticky(const struct cairn_wk_repl *r)
{
    return r->err ? cairn_err_set(r->err, "%s", r->errmsg) : CAIRN_OK;
}

/* ---- lifecycle ---- */

int cairn_wk_repl_new(struct cairn_wk_repl **out, struct cairn_net *net, const struct cairn_curve_keys *keys,
                      const struct cairn_wk_repl_opts *opts)
{
    *out = NULL;
    struct cairn_wk_repl *r = cairn_calloc(1, sizeof(*r));
    if (!r)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the replication client");
    r->net = net;
    r->keys = keys;
    r->o = opts ? *opts : (struct cairn_wk_repl_opts){0};
    if (!r->o.batch_max)
        r->o.batch_max = 64;
    if (!r->o.window)
        r->o.window = CAIRN_PROTO_CHUNK_WINDOW;
    if (!r->o.timeout_ms)
        r->o.timeout_ms = 30000;
    if (!r->o.attempts)
        r->o.attempts = 3;
    r->o.batch_max = CAIRN_MIN(r->o.batch_max, BATCH_LIMIT);
    r->o.window = CAIRN_MIN(r->o.window, WINDOW_LIMIT);
    r->attempt_ns = CAIRN_MAX(r->o.timeout_ms / r->o.attempts, 200u) * 1000000ull;
    *out = r;
    return CAIRN_OK;
}

static void peers_clear(struct cairn_wk_repl *r)
{
    for (size_t i = 0; i < r->npeers; i++) {
        struct peer *p = r->peers[i];
        p->head = p->len = 0;
        for (unsigned s = 0; s < r->o.window; s++)
            p->slots[s].rid = 0;
        p->inflight = 0;
        p->blocked_ns = 0;
    }
    while (r->items)
        item_free(r, r->items);
}

void cairn_wk_repl_destroy(struct cairn_wk_repl **rp)
{
    if (!rp || !*rp)
        return;
    struct cairn_wk_repl *r = *rp;
    peers_clear(r);
    for (size_t i = 0; i < r->npeers; i++) {
        struct peer *p = r->peers[i];
        cairn_sock_destroy(&p->sock);
        for (unsigned s = 0; s < r->o.window; s++)
            cairn_free(p->slots[s].ents);
        cairn_free(p->slots);
        cairn_free(p->q);
        cairn_free(p);
    }
    cairn_free(r->peers);
    cairn_free(r);
    *rp = NULL;
}

void cairn_wk_repl_begin(struct cairn_wk_repl *r, cairn_wk_repl_done_fn done, void *arg)
{
    peers_clear(r);
    r->done = done;
    r->done_arg = arg;
    r->err = 0;
    r->errmsg[0] = '\0';
    r->acks = r->ack_bytes = 0;
}

/* ---- peers ---- */

/* Put every in-flight entry of p back at the front of its queue (no attempt counted). */
static void peer_requeue_inflight(struct cairn_wk_repl *r, struct peer *p)
{
    for (unsigned s = 0; s < r->o.window; s++) {
        struct batch *b = &p->slots[s];
        if (!b->rid)
            continue;
        for (size_t i = b->n; i > 0; i--)
            if (q_push_front(p, b->ents[i - 1]) != CAIRN_OK)
                fail(r, CAIRN_ENOMEM, "out of memory requeueing chunks for worker '%s'", p->id);
        b->rid = 0;
    }
    p->inflight = 0;
}

static struct peer *peer_get(struct cairn_wk_repl *r, const struct cairn_wk_member *m)
{
    struct peer *p = NULL;
    for (size_t i = 0; i < r->npeers && !p; i++)
        if (!strcmp(r->peers[i]->id, m->id))
            p = r->peers[i];
    if (p) {
        if (strcmp(p->endpoint, m->endpoint) || strcmp(p->key, m->public_key)) {
            cairn_info("peer '%s' moved to %s; reconnecting", p->id, m->endpoint);
            cairn_sock_destroy(&p->sock);
            peer_requeue_inflight(r, p);
            snprintf(p->endpoint, sizeof(p->endpoint), "%s", m->endpoint);
            snprintf(p->key, sizeof(p->key), "%s", m->public_key);
        }
        return p;
    }
    if (cairn_array_grow((void **)&r->peers, &r->peers_cap, r->npeers + 1, sizeof(*r->peers)) != CAIRN_OK)
        return NULL;
    p = cairn_calloc(1, sizeof(*p));
    if (!p || !(p->slots = cairn_calloc(r->o.window, sizeof(*p->slots)))) {
        cairn_free(p);
        return NULL;
    }
    for (unsigned s = 0; s < r->o.window; s++) {
        if (!(p->slots[s].ents = cairn_calloc(r->o.batch_max, sizeof(struct qent)))) {
            for (unsigned t = 0; t < s; t++)
                cairn_free(p->slots[t].ents);
            cairn_free(p->slots);
            cairn_free(p);
            return NULL;
        }
    }
    snprintf(p->id, sizeof(p->id), "%s", m->id);
    snprintf(p->endpoint, sizeof(p->endpoint), "%s", m->endpoint);
    snprintf(p->key, sizeof(p->key), "%s", m->public_key);
    r->peers[r->npeers++] = p;
    return p;
}

static int peer_connect(struct cairn_wk_repl *r, struct peer *p)
{
    if (p->sock)
        return CAIRN_OK;
    int rc = cairn_sock_client(r->net, p->endpoint, r->keys, p->key, NULL, &p->sock);
    if (rc != CAIRN_OK)
        fail(r, rc, "cannot connect to worker '%s' at %s: %s", p->id, p->endpoint, cairn_err_msg());
    return rc;
}

/* ---- push ---- */

int cairn_wk_repl_push(struct cairn_wk_repl *r, const struct cairn_wk_member *const *targets, size_t n,
                       const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES], const uint8_t id[CAIRN_CHUNK_ID_BYTES],
                       uint8_t *value, size_t len, void (*free_fn)(void *), bool delete_local)
{
    if (r->err || n == 0) {
        if (free_fn)
            free_fn(value);
        return r->err ? sticky(r) : cairn_err_set(CAIRN_EINVAL, "replication of a chunk to no peer");
    }
    struct item *it = cairn_calloc(1, sizeof(*it));
    if (!it) {
        if (free_fn)
            free_fn(value);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory queueing a chunk for replication");
    }
    memcpy(it->domain, domain_id, sizeof(it->domain));
    memcpy(it->id, id, sizeof(it->id));
    it->value = value;
    it->len = len;
    it->free_fn = free_fn;
    it->delete_local = delete_local;
    it->next = r->items;
    if (r->items)
        r->items->prev = it;
    r->items = it;
    r->nitems++;
    r->item_bytes += len;
    for (size_t i = 0; i < n; i++) {
        struct peer *p = peer_get(r, targets[i]);
        if (!p || q_push_back(p, (struct qent){.it = it}) != CAIRN_OK) {
            fail(r, CAIRN_ENOMEM, "out of memory queueing chunks for worker '%s'", targets[i]->id);
            break;
        }
        it->pending++;
    }
    if (it->pending == 0)
        item_free(r, it);
    return sticky(r);
}

/* ---- sending ---- */

static void entry_retry(struct cairn_wk_repl *r, struct peer *p, struct qent e, int code, const char *why);

static void send_batches(struct cairn_wk_repl *r, struct peer *p)
{
    while (!r->err && p->len > 0 && p->inflight < r->o.window) {
        if (peer_connect(r, p) != CAIRN_OK)
            return;
        struct batch *b = NULL;
        for (unsigned s = 0; s < r->o.window && !b; s++)
            if (!p->slots[s].rid)
                b = &p->slots[s];
        const uint8_t *dom = q_front(p)->it->domain;
        struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_CHUNK_PUT);
        if (!m) {
            fail(r, CAIRN_ENOMEM, "out of memory building a chunk.put for worker '%s'", p->id);
            return;
        }
        uint64_t rid = ++r->next_rid;
        cairn_msg_set_rid(m, rid);
        cairn_msg_set_bin(m, "domain", dom, CAIRN_DOMAIN_ID_BYTES);
        struct cairn_mval *ids = cairn_msg_set_array(m, "ids");
        size_t bytes = 0;
        b->n = 0;
        while (p->len > 0 && b->n < r->o.batch_max) {
            struct qent *e = q_front(p);
            if (memcmp(e->it->domain, dom, CAIRN_DOMAIN_ID_BYTES) != 0 ||
                (b->n > 0 && bytes + e->it->len > BATCH_BYTES))
                break;
            cairn_mval_push_bin(m, ids, e->it->id, CAIRN_CHUNK_ID_BYTES);
            cairn_msg_add_frame(m, e->it->value, e->it->len);
            bytes += e->it->len;
            b->ents[b->n++] = *e;
            q_pop_front(p);
        }
        int rc = cairn_sock_send(p->sock, m);
        cairn_msg_destroy(&m);
        uint64_t now = cairn_now_mono_ns();
        if (rc == CAIRN_EAGAIN) {
            /* the pipe is full, or gone (e.g. the peer refused our key): wait, up to the timeout */
            for (size_t i = b->n; i > 0; i--)
                q_push_front(p, b->ents[i - 1]);
            if (!p->blocked_ns)
                p->blocked_ns = now;
            else if (now - p->blocked_ns >= r->o.timeout_ms * 1000000ull)
                fail(r, CAIRN_ETIMEDOUT, "replication to worker '%s' at %s timed out: no connection for %.1f s "
                     "(is this worker on its allow-list?)", p->id, p->endpoint, (double)r->o.timeout_ms / 1000.0);
            return;
        }
        if (rc != CAIRN_OK) {
            /* counted as a failed attempt of every chunk of the batch */
            char why[256];
            snprintf(why, sizeof(why), "not sent: %s", cairn_err_msg());
            for (size_t i = b->n; i > 0; i--) {
                b->ents[i - 1].attempts++;
                entry_retry(r, p, b->ents[i - 1], rc, why);
            }
            return;
        }
        p->blocked_ns = 0;
        for (size_t i = 0; i < b->n; i++)
            b->ents[i].attempts++;
        b->rid = rid;
        b->sent_ns = now;
        p->inflight++;
    }
}

/* ---- replies and timeouts ---- */

static void entry_ack(struct cairn_wk_repl *r, struct qent *e)
{
    struct item *it = e->it;
    r->acks++;
    r->ack_bytes += it->len;
    if (--it->pending > 0)
        return;
    if (r->done)
        r->done(r->done_arg, it->domain, it->id, it->len, it->delete_local);
    item_free(r, it);
}

/* An entry was not stored by p (code): send it again, or fail the run after the last attempt. */
static void entry_retry(struct cairn_wk_repl *r, struct peer *p, struct qent e, int code, const char *why)
{
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    if (e.attempts >= r->o.attempts || code == CAIRN_ECORRUPT) {
        cairn_hex_encode(hex, e.it->id, CAIRN_CHUNK_ID_BYTES);
        if (code == CAIRN_ETIMEDOUT)
            fail(r, code,
                 "replication to worker '%s' at %s timed out: chunk %s unacknowledged after %u attempts over %.1f s",
                 p->id, p->endpoint, hex, e.attempts, (double)r->o.timeout_ms / 1000.0);
        else
            fail(r, code, "worker '%s' did not store chunk %s: %s (%s)", p->id, hex, cairn_err_name(code), why);
        return;
    }
    if (q_push_front(p, e) != CAIRN_OK)
        fail(r, CAIRN_ENOMEM, "out of memory requeueing chunks for worker '%s'", p->id);
}

static void batch_retry_all(struct cairn_wk_repl *r, struct peer *p, struct batch *b, int code, const char *why)
{
    for (size_t i = b->n; i > 0; i--)
        entry_retry(r, p, b->ents[i - 1], code, why);
    b->rid = 0;
    p->inflight--;
}

static void handle_reply(struct cairn_wk_repl *r, struct peer *p, const struct cairn_msg *m)
{
    if (!cairn_msg_is_reply(m) || cairn_msg_type(m) != CAIRN_MSG_CHUNK_PUT)
        return;
    struct batch *b = NULL;
    for (unsigned s = 0; s < r->o.window && !b; s++)
        if (p->slots[s].rid && p->slots[s].rid == cairn_msg_rid(m))
            b = &p->slots[s];
    if (!b)
        return; /* a late reply to a batch already resent */
    int code = cairn_msg_code(m);
    if (code != CAIRN_OK) {
        const char *t = cairn_msg_text(m);
        batch_retry_all(r, p, b, code, t ? t : cairn_err_name(code));
        return;
    }
    const struct cairn_mval *st = NULL;
    size_t n = 0;
    if (cairn_msg_get_array(m, "status", &st, &n) != CAIRN_OK || n != b->n) {
        batch_retry_all(r, p, b, CAIRN_EPROTO, "reply with a wrong number of statuses");
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        uint64_t s = 0;
        if (cairn_mval_u64(cairn_mval_at(st, i), &s) != CAIRN_OK)
            s = CAIRN_EPROTO;
        if (s == CAIRN_OK)
            entry_ack(r, &b->ents[i]);
        else
            entry_retry(r, p, b->ents[i], s > INT32_MAX ? CAIRN_EPROTO : (int)s, "refused by the peer");
    }
    b->rid = 0;
    p->inflight--;
}

static void drain_replies(struct cairn_wk_repl *r, struct peer *p)
{
    for (;;) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(p->sock, 0, &m);
        if (rc == CAIRN_OK)
            handle_reply(r, p, m);
        cairn_msg_destroy(&m);
        if (rc == CAIRN_ETIMEDOUT || rc == CAIRN_ECANCELED || rc == CAIRN_EIO || rc == CAIRN_ENOMEM)
            return;
    }
}

static void check_timeouts(struct cairn_wk_repl *r, uint64_t now)
{
    for (size_t i = 0; i < r->npeers; i++) {
        struct peer *p = r->peers[i];
        for (unsigned s = 0; s < r->o.window; s++) {
            struct batch *b = &p->slots[s];
            if (b->rid && now - b->sent_ns >= r->attempt_ns) {
                cairn_debug("chunk.put of %zu chunks to worker '%s' unanswered after %.1f s; resending", b->n,
                            p->id, (double)(now - b->sent_ns) / 1e9);
                batch_retry_all(r, p, b, CAIRN_ETIMEDOUT, "no answer");
            }
        }
    }
}

int cairn_wk_repl_pump(struct cairn_wk_repl *r, int timeout_ms)
{
    if (r->err)
        return sticky(r);
    for (size_t i = 0; i < r->npeers; i++)
        send_batches(r, r->peers[i]);
    struct cairn_sock *socks[POLL_MAX];
    struct peer *owners[POLL_MAX];
    size_t k = 0;
    uint64_t now = cairn_now_mono_ns(), next = UINT64_MAX;
    for (size_t i = 0; i < r->npeers; i++) {
        struct peer *p = r->peers[i];
        if (!p->inflight || !p->sock)
            continue;
        for (unsigned s = 0; s < r->o.window; s++)
            if (p->slots[s].rid)
                next = CAIRN_MIN(next, p->slots[s].sent_ns + r->attempt_ns);
        if (k < POLL_MAX) {
            socks[k] = p->sock;
            owners[k++] = p;
        }
    }
    if (k == 0) {
        /* nothing in flight: either nothing to do, or every peer with work refuses sends (blocked) */
        if (r->nitems > 0 && timeout_ms > 0)
            nanosleep(&(struct timespec){0, (long)CAIRN_MIN(timeout_ms, 20) * 1000000L}, NULL);
        return sticky(r);
    }
    int wait = timeout_ms;
    if (next != UINT64_MAX) {
        uint64_t until = next > now ? (next - now) / 1000000u + 1 : 0;
        if (wait < 0 || (uint64_t)wait > until)
            wait = (int)until;
    }
    uint64_t ready = 0;
    cairn_sock_poll(socks, k, wait, &ready);
    /* peers beyond the poll limit are read without waiting */
    for (size_t i = 0; i < r->npeers; i++) {
        struct peer *p = r->peers[i];
        bool polled = false;
        for (size_t j = 0; j < k && !polled; j++)
            if (owners[j] == p)
                polled = (ready >> j) & 1;
        bool beyond = true;
        for (size_t j = 0; j < k && beyond; j++)
            beyond = owners[j] != p;
        if (p->sock && p->inflight && (polled || beyond))
            drain_replies(r, p);
    }
    check_timeouts(r, cairn_now_mono_ns());
    for (size_t i = 0; i < r->npeers; i++)
        send_batches(r, r->peers[i]);
    return sticky(r);
}

int cairn_wk_repl_check_members(struct cairn_wk_repl *r, const struct cairn_wk_members *ms)
{
    for (size_t i = 0; i < r->npeers && !r->err; i++) {
        struct peer *p = r->peers[i];
        const struct cairn_wk_member *m = cairn_wk_members_find(ms, p->id);
        if (!p->len && !p->inflight) {
            if (!m || !m->alive)
                cairn_sock_destroy(&p->sock); /* idle and gone: stop reconnecting to it */
            continue;
        }
        if (!m || !m->alive)
            fail(r, CAIRN_EUNAVAILABLE, "worker '%s' %s during replication (membership epoch %llu)", p->id,
                 m ? "died" : "left the cluster", (unsigned long long)(ms ? ms->epoch : 0));
        else if (strcmp(m->endpoint, p->endpoint) || strcmp(m->public_key, p->key))
            peer_get(r, m); /* reconnect to its new endpoint */
    }
    return sticky(r);
}

size_t cairn_wk_repl_pending(const struct cairn_wk_repl *r) { return r->nitems; }
uint64_t cairn_wk_repl_pending_bytes(const struct cairn_wk_repl *r) { return r->item_bytes; }

void cairn_wk_repl_stats(const struct cairn_wk_repl *r, uint64_t *acks, uint64_t *ack_bytes)
{
    if (acks)
        *acks = r->acks;
    if (ack_bytes)
        *ack_bytes = r->ack_bytes;
}
