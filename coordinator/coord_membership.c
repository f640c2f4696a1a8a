/*
 * coord_membership.c: the workers of the cluster, as the coordinator sees them.
 *
 * Worker state machine (per worker id; w/<id> holds the persisted half)
 *
 *     (unknown) --register--> ALIVE --no heartbeat for heartbeat_timeout--> DEAD
 *                               ^  \--register (same key)--> ALIVE            |
 *                               +------------------- register (same key) -----+
 *
 *   coord_worker_on_register  (unknown|ALIVE|DEAD) -> ALIVE: binds id to the
 *                             CURVE key on the first registration (a later
 *                             registration with another key is EAUTH), bumps
 *                             the epoch, persists, replies, broadcasts.
 *   coord_worker_on_heartbeat ALIVE -> ALIVE (last_seen); a DEAD worker is not
 *                             revived by a heartbeat: the reply's epoch is newer
 *                             than the one it knows, which tells it to register
 *                             again; an unknown id gets ENOTFOUND (same effect).
 *   coord_workers_tick        ALIVE -> DEAD: persists, fails its running jobs
 *                             and its running sandboxes (EUNAVAILABLE "worker
 *                             'w1' died (no heartbeat for 5.0 s)"), bumps the
 *                             epoch, broadcasts.
 *   Registration also reconciles the worker's sandboxes with the `sandboxes`
 *   list it sends (coord_sandboxes_worker_registered).
 *
 * Invariants
 *   I1. Every worker record in RocksDB is in c->workers and c->wlist (sorted by
 *       id, which gives deterministic membership lists and placement ties).
 *   I2. A worker's id is bound to one public key forever (w/<id>.public_key);
 *       every message that names the worker is checked against it.
 *   I3. The epoch (m/epoch) only grows: on every registration and every death,
 *       and once at start-up, so that every worker re-registers with a
 *       restarted coordinator (its heartbeat reply shows a new epoch).
 *   I4. routable implies a route learnt from that worker's own connection; a
 *       worker restored alive from disk at start-up is not routable (nothing is
 *       dispatched to it) until it speaks, and its heartbeat deadline counts
 *       from the restart.
 */
#include "coord.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <inttypes.h>
#include <stdio.h>

#define MEMBERS_MAX 4096

static uint64_t mono_now(void) { return cairn_now_mono_ns(); }

static bool worker_id_valid(const char *s, size_t len)
{
    if (len < 1 || len > COORD_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-' || ch == ':'))
            return false;
    }
    return true;
}

struct coord_worker *coord_worker_find(struct coord *c, const char *id)
{
    return coord_map_sget(&c->workers, id);
}

bool coord_worker_key_ok(const struct coord_worker *w, const struct cairn_msg *m)
{
    const char *pk = cairn_msg_peer_key(m);
    return pk && *pk && !strcmp(pk, w->rec.public_key);
}

static void worker_free(struct coord_worker *w)
{
    if (!w)
        return;
    coord_worker_rec_release(&w->rec);
    cairn_free(w);
}

/* Insert into the map and the sorted list (I1). */
static int worker_add(struct coord *c, struct coord_worker *w)
{
    CAIRN_FORWARD_IF_ERROR(cairn_array_grow((void **)&c->wlist, &c->wcap, c->nworkers + 1, sizeof(*c->wlist)));
    CAIRN_FORWARD_IF_ERROR(coord_map_sput(&c->workers, w->rec.id, w));
    size_t i = c->nworkers;
    while (i > 0 && strcmp(c->wlist[i - 1]->rec.id, w->rec.id) > 0) {
        c->wlist[i] = c->wlist[i - 1];
        i--;
    }
    c->wlist[i] = w;
    c->nworkers++;
    return CAIRN_OK;
}

int coord_epoch_bump(struct coord *c)
{
    c->epoch++;
    int rc = coord_meta_put_u64(c->kv, COORD_KEY_EPOCH, c->epoch);
    if (rc != CAIRN_OK)
        cairn_error("persist membership epoch %" PRIu64 ": %s", c->epoch, cairn_err_msg());
    return rc;
}

static int load_worker(struct coord *c, const char *key, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                       void *now)
{
    struct coord_worker *w = cairn_calloc(1, sizeof(*w));
    if (!w)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory loading workers");
    int rc = coord_worker_decode(v, vl, key, &w->rec);
    if (rc == CAIRN_OK)
        rc = coord_load_key_check(key, k, kl, "id", w->rec.id);
    if (rc == CAIRN_OK && coord_worker_find(c, w->rec.id))
        rc = cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' is a duplicate", key);
    if (rc == CAIRN_OK) {
        w->last_seen_mono = *(const uint64_t *)now; /* I4: deadline from the restart */
        rc = worker_add(c, w);                      /* fails with ENOMEM only: the load stops */
    }
    if (rc != CAIRN_OK)
        worker_free(w);
    return rc;
}

int coord_workers_load(struct coord *c)
{
    uint64_t now = mono_now();
    return coord_load_records(c, "w/", "skipping worker record", load_worker, &now);
}

void coord_workers_free(struct coord *c)
{
    for (size_t i = 0; i < c->nworkers; i++)
        worker_free(c->wlist[i]);
    CAIRN_FREE(c->wlist);
    c->nworkers = c->wcap = 0;
    coord_map_release(&c->workers);
}

/* ---- membership -------------------------------------------------------------------------------- */

static bool member_ok(const struct coord_worker *w)
{
    size_t pl = w->rec.peer ? strlen(w->rec.peer) : 0;
    return pl >= 1 && pl <= 256 && cairn_curve_key_valid(w->rec.public_key);
}

void coord_membership_broadcast(struct coord *c)
{
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_MEMBERSHIP);
    if (!m) {
        cairn_error("membership broadcast: %s", cairn_err_msg());
        return;
    }
    cairn_msg_set_u64(m, "epoch", c->epoch);
    cairn_msg_set_u64(m, "replicas", c->cfg->replicas);
    struct cairn_mval *arr = cairn_msg_set_array(m, "workers");
    size_t n = 0;
    for (size_t i = 0; i < c->nworkers && n < MEMBERS_MAX; i++) {
        const struct coord_worker *w = c->wlist[i];
        if (!member_ok(w))
            continue;
        struct cairn_mval *e = cairn_mval_push_map(m, arr);
        cairn_mval_put_str(m, e, "id", w->rec.id);
        cairn_mval_put_str(m, e, "endpoint", w->rec.peer);
        cairn_mval_put_str(m, e, "public_key", w->rec.public_key);
        cairn_mval_put_bool(m, e, "alive", w->rec.alive);
        size_t fl = w->rec.fingerprint ? strlen(w->rec.fingerprint) : 0;
        if (fl >= 1 && fl <= 256)
            cairn_mval_put_str(m, e, "fingerprint", w->rec.fingerprint);
        n++;
    }
    for (size_t i = 0; i < c->nworkers; i++) {
        struct coord_worker *w = c->wlist[i];
        if (!w->rec.alive || !w->routable)
            continue;
        cairn_msg_set_rid(m, ++c->next_rid);
        cairn_msg_set_route(m, &w->route);
        int rc = cairn_sock_send(c->wsock, m);
        if (rc != CAIRN_OK)
            cairn_debug("send membership to worker '%s': %s", w->rec.id, cairn_err_msg());
    }
    cairn_msg_destroy(&m);
}

void coord_status_fill(struct coord *c, struct cairn_msg *r)
{
    struct cairn_mval *arr = cairn_msg_set_array(r, "workers");
    for (size_t i = 0; i < c->nworkers && i < MEMBERS_MAX; i++) {
        const struct coord_worker *w = c->wlist[i];
        struct cairn_mval *e = cairn_mval_push_map(r, arr);
        size_t pl = w->rec.peer ? strlen(w->rec.peer) : 0;
        cairn_mval_put_str(r, e, "id", w->rec.id);
        cairn_mval_put_str(r, e, "addr", pl >= 1 && pl <= 256 ? w->rec.peer : "unknown");
        cairn_mval_put_bool(r, e, "alive", w->rec.alive);
        cairn_mval_put_u64(r, e, "chunks", w->rec.chunks);
        cairn_mval_put_u64(r, e, "bytes", w->rec.bytes);
        cairn_mval_put_u64(r, e, "sandboxes", w->rec.sandboxes);
        cairn_mval_put_u64(r, e, "last_seen", w->rec.last_seen_ns > 0 ? (uint64_t)w->rec.last_seen_ns : 0);
        size_t fl = w->rec.fingerprint ? strlen(w->rec.fingerprint) : 0;
        if (fl >= 1 && fl <= 256)
            cairn_mval_put_str(r, e, "fingerprint", w->rec.fingerprint);
        cairn_mval_put_u64(r, e, "capacity", w->rec.capacity);
    }
    cairn_msg_set_u64(r, "epoch", c->epoch);
    cairn_msg_set_u64(r, "replicas", c->cfg->replicas);
    int64_t now = cairn_clock_now_ns(&c->clock);
    cairn_msg_set_u64(r, "now", now > 0 ? (uint64_t)now : 0);
}

/* ---- register / heartbeat ---------------------------------------------------------------------- */

static int set_str(char **dst, const char *s)
{
    char *d = s ? cairn_strdup(s) : NULL;
    if (s && !d)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    cairn_free(*dst);
    *dst = d;
    return CAIRN_OK;
}

void coord_worker_on_register(struct coord *c, struct cairn_msg *m)
{
    const char *id = NULL, *peer = NULL, *pubkey = NULL, *fp = NULL, *version = NULL;
    size_t idlen = 0;
    uint64_t capacity = 0, chunks = 0, bytes = 0;
    const struct cairn_mval *sbx = NULL;
    size_t nsbx = 0;
    struct coord_worker *fresh = NULL;
    cairn_msg_get_str(m, "id", &id, &idlen);
    cairn_msg_get_str(m, "peer", &peer, NULL);
    cairn_msg_get_str(m, "public_key", &pubkey, NULL);
    cairn_msg_get_str(m, "fingerprint", &fp, NULL);
    cairn_msg_get_u64(m, "capacity", &capacity);
    if (cairn_msg_get_str(m, "version", &version, NULL) != CAIRN_OK)
        version = NULL;
    cairn_msg_opt_u64(m, "chunks", 0, &chunks);
    cairn_msg_opt_u64(m, "bytes", 0, &bytes);
    if (cairn_msg_get_array(m, "sandboxes", &sbx, &nsbx) != CAIRN_OK)
        nsbx = 0;
    const char *pk = cairn_msg_peer_key(m);

    if (!id || !worker_id_valid(id, idlen)) {
        coord_reply_error(c, c->wsock, m, CAIRN_EINVAL, "invalid worker id: 1..64 of A-Z a-z 0-9 . _ - :");
        return;
    }
    if (!pk || !*pk || !pubkey || strcmp(pk, pubkey) != 0) {
        cairn_warn("refused registration of worker '%s': its public_key is not the key it connected with", id);
        coord_reply_error(c, c->wsock, m, CAIRN_EAUTH,
                          "worker '%s': public_key is not the CURVE key this connection authenticated with", id);
        return;
    }
    struct coord_worker *w = coord_worker_find(c, id);
    if (w && strcmp(w->rec.public_key, pk) != 0) {
        cairn_warn("refused registration of worker '%s': the id is bound to another key", id);
        coord_reply_error(c, c->wsock, m, CAIRN_EAUTH, "worker '%s' is registered with a different key", id);
        return;
    }
    bool is_new = !w, was_alive = w && w->rec.alive, was_routable = w && w->routable;
    if (!w) {
        w = fresh = cairn_calloc(1, sizeof(*w));
        if (!w) {
            coord_reply_error(c, c->wsock, m, CAIRN_ENOMEM, "out of memory registering worker '%s'", id);
            return;
        }
        memcpy(w->rec.id, id, idlen);
        w->rec.id[idlen] = '\0';
        memcpy(w->rec.public_key, pk, 40);
        w->rec.public_key[40] = '\0';
        w->rec.registered_ns = cairn_clock_now_ns(&c->clock);
    }
    /* the persisted record is built on a copy so that a failed write changes nothing */
    struct coord_worker_rec next = w->rec;
    next.peer = next.fingerprint = next.version = NULL;
    int rc = set_str(&next.peer, peer);
    if (rc == CAIRN_OK)
        rc = set_str(&next.fingerprint, fp);
    if (rc == CAIRN_OK)
        rc = set_str(&next.version, version);
    next.capacity = capacity;
    next.chunks = chunks;
    next.bytes = bytes;
    next.sandboxes = nsbx;
    next.alive = true;
    next.last_seen_ns = cairn_clock_now_ns(&c->clock);
    if (rc == CAIRN_OK)
        rc = coord_meta_put_worker(c->kv, &next);
    if (rc == CAIRN_OK && fresh)
        rc = worker_add(c, fresh);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->wsock, m, rc, "register worker '%s': %s", id, cairn_err_msg());
        coord_worker_rec_release(&next);
        if (fresh)
            worker_free(fresh);
        return;
    }
    coord_worker_rec_release(&w->rec);
    w->rec = next;
    w->route = cairn_msg_route(m);
    w->routable = true;
    w->last_seen_mono = mono_now();
    w->busy_until_mono = 0;
    coord_epoch_bump(c);

    if (is_new)
        cairn_info("worker '%s' joined (peer %s, fingerprint %s)", id, w->rec.peer, w->rec.fingerprint);
    else if (!was_alive)
        cairn_info("worker '%s' is back (peer %s)", id, w->rec.peer);
    else if (!was_routable)
        cairn_info("worker '%s' reconnected (peer %s)", id, w->rec.peer);
    else
        cairn_debug("worker '%s' registered again", id);

    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r) {
        cairn_msg_set_u64(r, "epoch", c->epoch);
        cairn_msg_set_u64(r, "heartbeat_ms", c->cfg->heartbeat_interval);
        cairn_msg_set_u64(r, "dead_after_ms", c->cfg->heartbeat_timeout);
        cairn_msg_set_u64(r, "replicas", c->cfg->replicas);
    }
    coord_send(c, c->wsock, &r);
    /* the sandboxes it still runs (a missing list is an empty one: a worker always sends what it runs) */
    coord_sandboxes_worker_registered(c, w, sbx, nsbx);
    coord_membership_broadcast(c);
    c->kick_pending = true;
}

void coord_worker_on_heartbeat(struct coord *c, struct cairn_msg *m)
{
    const char *id = NULL;
    uint64_t chunks = 0, bytes = 0, sandboxes = 0;
    const struct cairn_mval *jobs = NULL;
    size_t njobs = 0;
    cairn_msg_get_str(m, "id", &id, NULL);
    cairn_msg_get_u64(m, "chunks", &chunks);
    cairn_msg_get_u64(m, "bytes", &bytes);
    cairn_msg_get_u64(m, "sandboxes", &sandboxes);
    if (cairn_msg_get_array(m, "jobs", &jobs, &njobs) != CAIRN_OK)
        njobs = 0;
    struct coord_worker *w = id ? coord_worker_find(c, id) : NULL;
    if (!w) {
        coord_reply_error(c, c->wsock, m, CAIRN_ENOTFOUND, "unknown worker '%s': register first", id ? id : "");
        return;
    }
    if (!coord_worker_key_ok(w, m)) {
        coord_reply_error(c, c->wsock, m, CAIRN_EAUTH, "worker '%s' is registered with a different key", id);
        return;
    }
    w->route = cairn_msg_route(m);
    w->routable = true;
    if (w->rec.alive) {
        bool changed = w->rec.chunks != chunks || w->rec.bytes != bytes || w->rec.sandboxes != sandboxes;
        int64_t now_ns = cairn_clock_now_ns(&c->clock);
        w->last_seen_mono = mono_now();
        w->rec.chunks = chunks;
        w->rec.bytes = bytes;
        w->rec.sandboxes = sandboxes;
        /* last_seen is for cluster.status; the death deadline is in memory, so a write per second is plenty */
        if (changed || now_ns - w->rec.last_seen_ns >= 1000000000ll) {
            w->rec.last_seen_ns = now_ns;
            if (coord_meta_put_worker(c->kv, &w->rec) != CAIRN_OK)
                cairn_warn("persist worker '%s': %s", id, cairn_err_msg());
        }
        if (w->running)
            coord_jobs_reconcile(c, w, jobs, njobs);
        c->kick_pending = c->kick_pending || c->qlen > 0;
    }
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r)
        cairn_msg_set_u64(r, "epoch", c->epoch);
    coord_send(c, c->wsock, &r);
}

void coord_workers_tick(struct coord *c, uint64_t now_mono)
{
    uint64_t limit = c->cfg->heartbeat_timeout * 1000000ull;
    bool changed = false;
    for (size_t i = 0; i < c->nworkers; i++) {
        struct coord_worker *w = c->wlist[i];
        if (!w->rec.alive || now_mono - w->last_seen_mono <= limit)
            continue;
        char why[256];
        snprintf(why, sizeof(why), "worker '%s' died (no heartbeat for %.1f s)", w->rec.id,
                 (double)c->cfg->heartbeat_timeout / 1000.0);
        cairn_info("%s", why);
        w->rec.alive = false;
        w->routable = false;
        if (coord_meta_put_worker(c->kv, &w->rec) != CAIRN_OK)
            cairn_error("persist worker '%s': %s", w->rec.id, cairn_err_msg());
        coord_jobs_worker_lost(c, w, why);
        coord_sandboxes_worker_lost(c, w, why);
        changed = true;
    }
    if (changed) {
        coord_epoch_bump(c);
        coord_membership_broadcast(c);
    }
}
