/*
 * worker_peer.c: the peer service (chunk.has / chunk.get / chunk.put) and the store counters.
 *
 * Design
 * - Served on the daemon's main thread, straight from the RocksDB chunk store: a request is a few
 *   lookups or writes, never a wait on anything else.
 * - chunk.put is durable before it is acknowledged: the values are written (cairn_store_put_raw: the
 *   keyless checksum and the header's domain are verified first, a failure is that chunk's status,
 *   ECORRUPT), then the WAL is synced (cairn_store_sync), then the reply says 0.
 * - Group commit, off the main thread: all the requests already queued on the socket (up to
 *   GROUP_MAX, GROUP_BYTES) are written, then one sync is asked of the service's sync thread and the
 *   put replies of the group wait (`waiting`, FIFO) for it while the main thread goes on writing the
 *   next group. The sync thread coalesces: one fsync covers every group asked for before it started.
 *   Replies leave in cairn_wk_peer_flush once `synced` reaches their sequence number. This overlaps
 *   the fsync (disk) with the next batch's checksums and writes (CPU).
 *     sequence numbers: main thread: `asked` = groups written; sync thread: `synced` <= `asked`
 *     (both under `mu`). A put reply gets seq = `asked` after its group: that covers its own writes
 *     and, for a chunk found already held, the earlier group that may have written it.
 * - A failed sync is sticky (Linux does not promise that data whose fsync failed is still written
 *   later): every put reply from the first failed sync on carries its error code instead of 0.
 * - A chunk already held (cairn_store_has_chunk) is not written again: status 0. One whose copy is
 *   damaged (has answers ECORRUPT) is overwritten by the incoming good copy, which repairs it.
 * - chunk.get returns stored values verbatim; a value that is missing, fails the keyless checksum or
 *   names another domain comes back as an empty frame. Frames stop growing at CAIRN_PROTO_MAX_PAYLOAD
 *   (only possible with 256 chunks near the 1 MiB plaintext limit): the rest are empty frames too and
 *   the caller asks again for those.
 * - chunk.has answers "held" after the checksum (cairn_wk_chunk_held): a corrupt copy is not held.
 * - Replies that cannot be queued (EAGAIN: the peer does not read) are dropped; the peer times out
 *   and retries. Requests are idempotent, so retries are harmless.
 */
#include "worker_peer.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/codec.h"
#include "cairn/err.h"
#include "cairn/kv.h"
#include "cairn/log.h"

#include <inttypes.h>
#include <pthread.h>

/* requests per group: below a sender's window (8), so that its next batches are written while a group's sync runs */
#define GROUP_MAX 3
#define GROUP_BYTES (64u << 20)
#define MAX_IDS 1024

/* A chunk.put being served: written, waiting for the group's sync before its reply is built. */
struct put_state {
    size_t n;
    uint32_t status[256];
    bool wrote[256];
};

/* A chunk.put written and waiting for the sync that makes it durable. */
struct waiting {
    struct waiting *next;
    uint64_t seq;
    struct cairn_msg *req;
    struct put_state ps;
};

struct cairn_wk_peer {
    struct cairn_store *store;    /* borrowed */
    struct cairn_wk_stats *stats; /* borrowed */
    uint64_t requests, chunks_in; /* main thread */
    struct waiting *head, *tail;  /* main thread */
    pthread_t th;
    bool th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t asked;    /* mu: groups written and handed to the sync thread */
    uint64_t synced;   /* mu: groups covered by a finished sync */
    uint64_t fail_seq; /* mu: first group covered by a failed sync (0: none) */
    int fail_rc;       /* mu */
    uint64_t syncs;    /* mu */
    bool stop;         /* mu */
};

/* ---- counters ---- */

int cairn_wk_stats_scan(struct cairn_wk_stats *st, struct cairn_store *store)
{
    atomic_store(&st->chunks, 0);
    atomic_store(&st->bytes, 0);
    struct cairn_kv_iter *it = NULL;
    uint64_t chunks = 0, bytes = 0;
    int rc = cairn_kv_iter_new_unverified(cairn_store_kv(store), "c", 1, &it);
    while (rc == CAIRN_OK) {
        const uint8_t *key, *val;
        size_t klen, vlen;
        bool done = false;
        rc = cairn_kv_iter_next(it, &key, &klen, &val, &vlen, &done);
        if (rc != CAIRN_OK || done)
            break;
        chunks++;
        bytes += vlen;
    }
    cairn_kv_iter_destroy(&it);
    atomic_store(&st->chunks, chunks);
    atomic_store(&st->bytes, bytes);
    return rc;
}

void cairn_wk_stats_added(struct cairn_wk_stats *st, uint64_t bytes)
{
    atomic_fetch_add(&st->chunks, 1);
    atomic_fetch_add(&st->bytes, bytes);
}

void cairn_wk_stats_removed(struct cairn_wk_stats *st, uint64_t bytes)
{
    /* never below zero, even if a delete races with the startup scan's view */
    uint_fast64_t c = atomic_load(&st->chunks);
    while (c > 0 && !atomic_compare_exchange_weak(&st->chunks, &c, c - 1))
        ;
    uint_fast64_t b = atomic_load(&st->bytes);
    while (!atomic_compare_exchange_weak(&st->bytes, &b, b >= bytes ? b - bytes : 0))
        ;
}

/* ---- helpers ---- */

/* Keyless check of a stored value: checksum, header, and the header's domain. */
static int value_check(const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES], const uint8_t *val, size_t len)
{
    CAIRN_FORWARD_IF_ERROR(cairn_codec_verify(val, len));
    struct cairn_chunk_header h;
    CAIRN_FORWARD_IF_ERROR(cairn_codec_parse_header(val, len, &h));
    if (memcmp(h.domain_id, domain_id, CAIRN_DOMAIN_ID_BYTES) != 0)
        return cairn_err_set(CAIRN_ECORRUPT, "stored header names another domain");
    return CAIRN_OK;
}

int cairn_wk_chunk_held(struct cairn_store *store, const uint8_t domain_id[CAIRN_DOMAIN_ID_BYTES],
                        const uint8_t id[CAIRN_CHUNK_ID_BYTES], bool *held)
{
    *held = false;
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, domain_id, id);
    uint8_t *val = NULL;
    size_t len = 0;
    int rc = cairn_kv_get(cairn_store_kv(store), key, sizeof(key), &val, &len);
    if (rc == CAIRN_ENOTFOUND || rc == CAIRN_ECORRUPT)
        return CAIRN_OK;
    if (rc != CAIRN_OK)
        return rc;
    *held = value_check(domain_id, val, len) == CAIRN_OK;
    cairn_kv_free(val);
    return CAIRN_OK;
}

static const char *hex_id(char out[2 * CAIRN_CHUNK_ID_BYTES + 1], const uint8_t *id)
{
    cairn_hex_encode(out, id, CAIRN_CHUNK_ID_BYTES);
    return out;
}

/* domain and ids of a chunk.* request (shapes validated by proto). */
static int req_ids(const struct cairn_msg *req, const uint8_t **domain, const struct cairn_mval **ids, size_t *n)
{
    size_t dlen = 0;
    if (cairn_msg_get_bin(req, "domain", domain, &dlen) != CAIRN_OK || dlen != CAIRN_DOMAIN_ID_BYTES ||
        cairn_msg_get_array(req, "ids", ids, n) != CAIRN_OK || *n > MAX_IDS)
        return cairn_err_set(CAIRN_EPROTO, "%s: missing domain or ids", cairn_msg_type_name(cairn_msg_type(req)));
    return CAIRN_OK;
}

static const uint8_t *id_at(const struct cairn_mval *ids, size_t i)
{
    const uint8_t *p = NULL;
    size_t len = 0;
    if (cairn_mval_bin(cairn_mval_at(ids, i), &p, &len) != CAIRN_OK || len != CAIRN_CHUNK_ID_BYTES)
        return NULL;
    return p;
}

/* ---- handlers ---- */

static struct cairn_msg *serve_has(struct cairn_wk_peer *p, const struct cairn_msg *req)
{
    const uint8_t *dom;
    const struct cairn_mval *ids;
    size_t n;
    if (req_ids(req, &dom, &ids, &n) != CAIRN_OK)
        return cairn_msg_reply(req, CAIRN_EPROTO, cairn_err_msg());
    uint8_t bitmap[MAX_IDS / 8] = {0};
    for (size_t i = 0; i < n; i++) {
        const uint8_t *id = id_at(ids, i);
        bool held = false;
        if (!id)
            return cairn_msg_reply(req, CAIRN_EPROTO, "chunk.has: ids must be 32-byte ids");
        int rc = cairn_wk_chunk_held(p->store, dom, id, &held);
        if (rc != CAIRN_OK)
            return cairn_msg_reply(req, rc, cairn_err_msg());
        if (held)
            bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
    }
    struct cairn_msg *r = cairn_msg_reply(req, CAIRN_OK, NULL);
    if (r)
        cairn_msg_set_bin(r, "bitmap", bitmap, (n + 7) / 8);
    return r;
}

static struct cairn_msg *serve_get(struct cairn_wk_peer *p, const struct cairn_msg *req)
{
    const uint8_t *dom;
    const struct cairn_mval *ids;
    size_t n;
    if (req_ids(req, &dom, &ids, &n) != CAIRN_OK)
        return cairn_msg_reply(req, CAIRN_EPROTO, cairn_err_msg());
    struct cairn_msg *r = cairn_msg_reply(req, CAIRN_OK, NULL);
    if (!r)
        return NULL;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *id = id_at(ids, i);
        uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
        uint8_t *val = NULL;
        size_t len = 0;
        char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
        if (!id) {
            cairn_msg_add_frame(r, "", 0);
            continue;
        }
        cairn_store_chunk_key(key, dom, id);
        int rc = cairn_kv_get(cairn_store_kv(p->store), key, sizeof(key), &val, &len);
        if (rc == CAIRN_OK && value_check(dom, val, len) != CAIRN_OK) {
            cairn_warn("chunk.get: chunk %s is corrupt, answered as missing: %s", hex_id(hex, id), cairn_err_msg());
            rc = CAIRN_ECORRUPT;
        } else if (rc != CAIRN_OK && rc != CAIRN_ENOTFOUND) {
            cairn_warn("chunk.get: chunk %s cannot be read: %s", hex_id(hex, id), cairn_err_msg());
        }
        if (rc == CAIRN_OK && total + len > CAIRN_PROTO_MAX_PAYLOAD)
            rc = CAIRN_ETOOBIG;
        if (rc == CAIRN_OK) {
            cairn_msg_add_frame(r, val, len);
            total += len;
        } else {
            cairn_msg_add_frame(r, "", 0);
        }
        cairn_kv_free(val);
    }
    cairn_msg_set_u64(r, "count", n);
    return r;
}

static int put_apply(struct cairn_wk_peer *p, const struct cairn_msg *req, struct put_state *ps, bool *wrote_any)
{
    const uint8_t *dom;
    const struct cairn_mval *ids;
    size_t n;
    if (req_ids(req, &dom, &ids, &n) != CAIRN_OK)
        return CAIRN_EPROTO;
    if (n > CAIRN_ARRAY_LEN(ps->status) || cairn_msg_frame_count(req) != n)
        return cairn_err_set(CAIRN_EPROTO, "chunk.put: %zu ids and %zu frames", n, cairn_msg_frame_count(req));
    ps->n = n;
    const char *from = cairn_msg_peer_key(req);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *id = id_at(ids, i), *val = NULL;
        size_t len = 0;
        char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
        ps->wrote[i] = false;
        if (!id || cairn_msg_frame(req, i, &val, &len) != CAIRN_OK) {
            ps->status[i] = CAIRN_EPROTO;
            continue;
        }
        bool found = false;
        int rc = cairn_store_has_chunk(p->store, dom, id, &found);
        if (rc == CAIRN_OK && found) {
            ps->status[i] = CAIRN_OK;
            continue;
        }
        if (rc != CAIRN_OK && rc != CAIRN_ECORRUPT) {
            cairn_warn("chunk.put: cannot look up chunk %s: %s", hex_id(hex, id), cairn_err_msg());
            ps->status[i] = (uint32_t)rc;
            continue;
        }
        bool repair = rc == CAIRN_ECORRUPT;
        rc = cairn_store_put_raw(p->store, dom, id, val, len);
        if (rc != CAIRN_OK) {
            cairn_warn("chunk.put from peer '%s': %s", from, cairn_err_msg());
            ps->status[i] = (uint32_t)rc;
            continue;
        }
        ps->status[i] = CAIRN_OK;
        ps->wrote[i] = true;
        *wrote_any = true;
        p->chunks_in++;
        if (!repair)
            cairn_wk_stats_added(p->stats, len);
    }
    return CAIRN_OK;
}

static struct cairn_msg *put_reply(const struct cairn_msg *req, const struct put_state *ps, int sync_rc)
{
    struct cairn_msg *r = cairn_msg_reply(req, CAIRN_OK, NULL);
    struct cairn_mval *arr = r ? cairn_msg_set_array(r, "status") : NULL;
    for (size_t i = 0; arr && i < ps->n; i++)
        cairn_mval_push_u64(r, arr, ps->wrote[i] && sync_rc != CAIRN_OK ? (uint64_t)sync_rc : ps->status[i]);
    return r;
}

/* ---- the service and its sync thread ---- */

static void *sync_thread(void *arg)
{
    struct cairn_wk_peer *p = arg;
    pthread_setname_np(pthread_self(), "cairn-sync");
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->asked == p->synced)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->asked == p->synced)
            break; /* stopping, and nothing left to sync */
        uint64_t target = p->asked;
        int sticky = p->fail_rc;
        pthread_mutex_unlock(&p->mu);
        int rc = sticky ? sticky : cairn_store_sync(p->store);
        if (rc != CAIRN_OK && !sticky)
            cairn_error("chunk.put: sync of the chunk store failed; refusing every chunk.put from now on: %s",
                        cairn_err_msg());
        pthread_mutex_lock(&p->mu);
        if (rc != CAIRN_OK && !p->fail_seq) {
            p->fail_seq = p->synced + 1;
            p->fail_rc = rc;
        }
        p->synced = target;
        p->syncs++;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int cairn_wk_peer_new(struct cairn_wk_peer **out, struct cairn_store *store, struct cairn_wk_stats *stats)
{
    *out = NULL;
    struct cairn_wk_peer *p = cairn_calloc(1, sizeof(*p));
    if (!p)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the peer service");
    p->store = store;
    p->stats = stats;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int e = pthread_create(&p->th, NULL, sync_thread, p);
    if (e != 0) {
        cairn_wk_peer_destroy(&p);
        return cairn_err_set_errno(CAIRN_EIO, e, "start the sync thread of the peer service");
    }
    p->th_started = true;
    *out = p;
    return CAIRN_OK;
}

void cairn_wk_peer_destroy(struct cairn_wk_peer **pp)
{
    if (!pp || !*pp)
        return;
    struct cairn_wk_peer *p = *pp;
    if (p->th_started) {
        pthread_mutex_lock(&p->mu);
        p->stop = true;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->th, NULL);
    }
    while (p->head) {
        struct waiting *w = p->head;
        p->head = w->next;
        cairn_msg_destroy(&w->req);
        cairn_free(w);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    cairn_free(p);
    *pp = NULL;
}

void cairn_wk_peer_counts(struct cairn_wk_peer *p, uint64_t *requests, uint64_t *chunks_in, uint64_t *syncs)
{
    if (requests)
        *requests = p->requests;
    if (chunks_in)
        *chunks_in = p->chunks_in;
    pthread_mutex_lock(&p->mu);
    if (syncs)
        *syncs = p->syncs;
    pthread_mutex_unlock(&p->mu);
}

bool cairn_wk_peer_waiting(const struct cairn_wk_peer *p) { return p->head != NULL; }

/* ---- the serve loop ---- */

static void send_reply(struct cairn_wk_peer *p, struct cairn_sock *sock, struct cairn_msg **reply)
{
    if (!*reply)
        return;
    p->requests++;
    int rc = cairn_sock_send(sock, *reply);
    if (rc != CAIRN_OK)
        cairn_debug("peer reply (%s) not sent: %s", cairn_msg_type_name(cairn_msg_type(*reply)), cairn_err_msg());
    cairn_msg_destroy(reply);
}

void cairn_wk_peer_flush(struct cairn_wk_peer *p, struct cairn_sock *sock)
{
    if (!p->head)
        return;
    pthread_mutex_lock(&p->mu);
    uint64_t synced = p->synced, fail_seq = p->fail_seq;
    int fail_rc = p->fail_rc;
    pthread_mutex_unlock(&p->mu);
    while (p->head && p->head->seq <= synced) {
        struct waiting *w = p->head;
        p->head = w->next;
        if (!p->head)
            p->tail = NULL;
        int rc = fail_seq && w->seq >= fail_seq ? fail_rc : CAIRN_OK;
        struct cairn_msg *r = put_reply(w->req, &w->ps, rc);
        send_reply(p, sock, &r);
        cairn_msg_destroy(&w->req);
        cairn_free(w);
    }
}

int cairn_wk_peer_serve(struct cairn_wk_peer *p, struct cairn_sock *sock)
{
    struct waiting *group = NULL, *glast = NULL; /* this group's puts, in order */
    size_t nmsg = 0;
    uint64_t bytes = 0;
    bool wrote_any = false;
    int rc = CAIRN_OK;
    while (nmsg < GROUP_MAX && bytes < GROUP_BYTES) {
        struct cairn_msg *m = NULL, *reply = NULL;
        rc = cairn_sock_recv(sock, 0, &m);
        if (rc == CAIRN_ETIMEDOUT) {
            rc = CAIRN_OK;
            break;
        }
        if (rc != CAIRN_OK && !m) {
            if (rc == CAIRN_ECANCELED || rc == CAIRN_EIO || rc == CAIRN_ENOMEM)
                break;
            cairn_debug("peer endpoint: dropped a malformed message: %s", cairn_err_msg());
            rc = CAIRN_OK;
            continue;
        }
        nmsg++;
        if (rc != CAIRN_OK) { /* decode error with a shell to answer */
            if (!cairn_msg_is_reply(m))
                reply = cairn_msg_reply(m, rc, cairn_err_msg());
            rc = CAIRN_OK;
        } else if (cairn_msg_is_reply(m)) {
            /* nobody asked this endpoint anything: dropped */
        } else if (cairn_msg_type(m) == CAIRN_MSG_CHUNK_HAS) {
            reply = serve_has(p, m);
        } else if (cairn_msg_type(m) == CAIRN_MSG_CHUNK_GET) {
            reply = serve_get(p, m);
        } else if (cairn_msg_type(m) == CAIRN_MSG_CHUNK_PUT) {
            for (size_t i = 0; i < cairn_msg_frame_count(m); i++) {
                const uint8_t *fp;
                size_t fl = 0;
                cairn_msg_frame(m, i, &fp, &fl);
                bytes += fl;
            }
            struct waiting *w = cairn_calloc(1, sizeof(*w));
            if (!w)
                reply = cairn_msg_reply(m, CAIRN_ENOMEM, "out of memory serving chunk.put");
            else if (put_apply(p, m, &w->ps, &wrote_any) != CAIRN_OK)
                reply = cairn_msg_reply(m, CAIRN_EPROTO, cairn_err_msg());
            if (w && !reply) {
                w->req = m;
                m = NULL;
                if (glast)
                    glast->next = w;
                else
                    group = w;
                glast = w;
            } else {
                cairn_free(w);
            }
        } else {
            reply = cairn_msg_reply(m, CAIRN_EUNSUPPORTED, "this message is not served on the peer endpoint");
        }
        send_reply(p, sock, &reply);
        cairn_msg_destroy(&m);
    }
    if (group) {
        /* the group's puts wait for a sync that starts after their writes */
        pthread_mutex_lock(&p->mu);
        if (wrote_any) {
            p->asked++;
            pthread_cond_signal(&p->cv);
        }
        uint64_t seq = p->asked;
        pthread_mutex_unlock(&p->mu);
        for (struct waiting *w = group; w; w = w->next)
            w->seq = seq;
        if (p->tail)
            p->tail->next = group;
        else
            p->head = group;
        p->tail = glast;
        cairn_wk_peer_flush(p, sock); /* nothing written: may be flushable at once */
    }
    return rc;
}
