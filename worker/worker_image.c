/*
 * worker_image.c: image-import, the replication of a stored tree, and the builds of the layer cache
 * (docs/internals/sandboxes.md "Jobs", "Layer cache").
 *
 * image-import (params: image, app)
 *   A reader thread asks the coordinator for the upload with upload.read (pieces of PIECE bytes, up to
 *   READS_IN_FLIGHT outstanding, each resent after READ_TIMEOUT and given up after READ_ATTEMPTS) over the
 *   job thread's own DEALER, and writes the pieces in order into a pipe; the job thread meanwhile runs
 *   cairn_archive_import_fd on the pipe's read end in the app's managed domain. The socket belongs to the
 *   reader thread from its start to its join. If the import stops early (a damaged archive), closing the
 *   read end makes the reader's next write fail (EPIPE) and it stops; if the reader fails (the coordinator
 *   refuses, times out), closing the write end ends the import and the reader's error is the job's. Then
 *   the tree's refs are sent (job.refs, cairn_wk__send_refs; before the replication, which may drop local
 *   copies), every chunk of it is replicated (cairn_wk__replicate_tree) and the result is the layer
 *   reference plus files, size (logical bytes) and stored (bytes written for new chunks, manifest included).
 *
 * Replication runs (cairn_wk__repl_run_*, shared by every job that stores trees; see "replication runs"
 *   below): the union of the chunk ids of one or more trees (manifest and data chunks) is pushed to their
 *   placement sets exactly as ingest pushes its chunks (worker_jobs.c), R and the membership being those
 *   current when the run starts, optionally streaming the data chunks while the capture runs
 *   (snapshot-dir, sandbox-snapshot). A peer that already holds a chunk answers at the cost of a lookup.
 *   image-import and snapshot-fs replicate after the capture (cairn_wk__replicate_tree): the archive
 *   import does not report stored chunks, and snapshot-fs captures with the sandbox paused.
 *
 * Layer builds (the layer cache's build function): the manifest chunks this worker lacks are fetched
 *   first (the manifest lists the data chunks), then the data chunks it lacks, then the tree is
 *   materialised in overlay mode into the build dir. Another job may delete a local chunk between the
 *   fetch and its use (a chunk that a replication found outside this worker's placement set): the build
 *   then starts again, up to BUILD_ATTEMPTS times.
 */
#include "worker_jobs_int.h"

#include "cairn/alloc.h"
#include "cairn/archive.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/kv.h"
#include "cairn/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define PIECE (4u << 20)
#define READS_IN_FLIGHT 4u
#define READ_TIMEOUT_NS (20000ull * 1000000ull)
#define READ_ATTEMPTS 3u
#define PENDING_BYTES (96ull << 20)
#define PROGRESS_NS 500000000ull
#define MEMBERS_CHECK_NS 250000000ull
#define BUILD_ATTEMPTS 3
#define REF_BYTES (CAIRN_CHUNK_ID_BYTES + 4u)
#define REF_MAX_CHUNKS (65536u / REF_BYTES)

/* ---- layer references ---- */

int cairn_wk__layer_ref_parse(const struct cairn_mval *v, const char *what, struct wk_layer_ref *out)
{
    memset(out, 0, sizeof(*out));
    const struct cairn_mval *iv = v ? cairn_mval_get(v, "image") : NULL;
    const struct cairn_mval *lv = v ? cairn_mval_get(v, "manifest_len") : NULL;
    const struct cairn_mval *mv = v ? cairn_mval_get(v, "manifest") : NULL;
    const char *image = NULL;
    const uint8_t *man = NULL;
    size_t ilen = 0, mlen = 0;
    uint64_t total = 0;
    if (!v || cairn_mval_kind(v) != CAIRN_MV_MAP)
        return cairn_err_set(CAIRN_EINVAL, "%s is not a layer reference (a map)", what);
    if (!iv || cairn_mval_str(iv, &image, &ilen) != CAIRN_OK || !cairn_wk_layer_id_valid(image))
        return cairn_err_set(CAIRN_EINVAL, "%s.image is missing or not an image id", what);
    if (!lv || cairn_mval_u64(lv, &total) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "%s.manifest_len is missing", what);
    if (!mv || cairn_mval_bin(mv, &man, &mlen) != CAIRN_OK || mlen == 0 || mlen % REF_BYTES != 0)
        return cairn_err_set(CAIRN_EINVAL, "%s.manifest must be %u bytes per manifest chunk", what, REF_BYTES);
    size_t n = mlen / REF_BYTES;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = cairn_load_le32(man + i * REF_BYTES + CAIRN_CHUNK_ID_BYTES);
        if (len == 0 || len > CAIRN_CODEC_MAX_PLAIN)
            return cairn_err_set(CAIRN_EINVAL, "%s.manifest: chunk %zu has length %u", what, i, len);
        sum += len;
    }
    if (sum != total)
        return cairn_err_set(CAIRN_EINVAL, "%s: manifest_len %llu, but its chunks add up to %llu", what,
                             (unsigned long long)total, (unsigned long long)sum);
    out->ref.chunks = cairn_calloc(n, sizeof(*out->ref.chunks));
    if (!out->ref.chunks)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for %s", what);
    for (size_t i = 0; i < n; i++) {
        memcpy(out->ref.chunks[i].id, man + i * REF_BYTES, CAIRN_CHUNK_ID_BYTES);
        out->ref.chunks[i].len = cairn_load_le32(man + i * REF_BYTES + CAIRN_CHUNK_ID_BYTES);
    }
    out->ref.n_chunks = (uint32_t)n;
    out->ref.manifest_len = total;
    snprintf(out->image, sizeof(out->image), "%s", image);
    return CAIRN_OK;
}

int cairn_wk__layer_ref_put(struct cairn_msg *res, struct cairn_mval *r, const struct cairn_tree_ref *ref)
{
    if (ref->n_chunks > REF_MAX_CHUNKS)
        return cairn_err_set(CAIRN_ETOOBIG, "the tree's manifest has %u chunks; a layer reference holds at most %u",
                             ref->n_chunks, REF_MAX_CHUNKS);
    uint8_t *man = cairn_malloc((size_t)ref->n_chunks * REF_BYTES);
    if (!man)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for a layer reference");
    for (uint32_t i = 0; i < ref->n_chunks; i++) {
        memcpy(man + (size_t)i * REF_BYTES, ref->chunks[i].id, CAIRN_CHUNK_ID_BYTES);
        cairn_store_le32(man + (size_t)i * REF_BYTES + CAIRN_CHUNK_ID_BYTES, ref->chunks[i].len);
    }
    cairn_mval_put_u64(res, r, "manifest_len", ref->manifest_len);
    cairn_mval_put_bin(res, r, "manifest", man, (size_t)ref->n_chunks * REF_BYTES);
    cairn_free(man);
    return CAIRN_OK;
}

/* ---- chunk id sets ---- */

struct idset {
    uint8_t (*v)[CAIRN_CHUNK_ID_BYTES];
    size_t n, cap;
};

static int idset_add(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    struct idset *s = arg;
    CAIRN_FORWARD_IF_ERROR(cairn_array_grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v)));
    memcpy(s->v[s->n++], id, CAIRN_CHUNK_ID_BYTES);
    return CAIRN_OK;
}

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, CAIRN_CHUNK_ID_BYTES); }

static void idset_unique(struct idset *s)
{
    if (s->n < 2)
        return;
    qsort(s->v, s->n, sizeof(*s->v), id_cmp);
    size_t k = 1;
    for (size_t i = 1; i < s->n; i++)
        if (memcmp(s->v[i], s->v[k - 1], CAIRN_CHUNK_ID_BYTES) != 0)
            memcpy(s->v[k++], s->v[i], CAIRN_CHUNK_ID_BYTES);
    s->n = k;
}

/* Keep only the ids the local store lacks. */
static int idset_missing(struct idset *s, struct cairn_store *store, const uint8_t *dom)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        bool found = false;
        int rc = cairn_store_has_chunk(store, dom, s->v[i], &found);
        if (rc != CAIRN_OK && rc != CAIRN_ECORRUPT)
            return rc;
        if (!found) /* ECORRUPT: a damaged copy, replaced by the fetched one */
            memmove(s->v[k++], s->v[i], CAIRN_CHUNK_ID_BYTES);
    }
    s->n = k;
    cairn_err_clear();
    return CAIRN_OK;
}

static void idset_release(struct idset *s)
{
    CAIRN_FREE(s->v);
    s->n = s->cap = 0;
}

/* ---- replication runs (snapshot-dir, snapshot-fs, image-import, sandbox-snapshot) ---- */

/*
 * One replication run over the union of the chunk ids of one or more trees, in two phases that share one
 * cairn_wk_repl run, one membership (the one current when the run starts) and one set of ids already
 * pushed:
 *  - streaming, during the captures (optional): a thread of its own (stream_main) owns t->repl and pushes
 *    each data chunk as soon as the capture reports it stored (cairn_tree_opts.chunk_stored), so the
 *    network and the peers work while the capture goes on. It never calls anything that uses the job
 *    thread's other sockets (no progress messages); the repl's sockets pass to it and back with
 *    pthread_create/join.
 *  - the final pass, on the job thread after the refs were sent: the union of every tree's chunks
 *    (manifest chunks included) minus what was pushed already, then every acknowledgement is awaited.
 * Streaming is only a head start: anything it missed (it failed to queue an id, stopped part-way, or did
 * not run at all) is pushed by the final pass, which then starts a fresh run with the membership of now;
 * the job succeeds only when every chunk was acknowledged by its peers. Local copies outside this worker's
 * placement set are deleted only at the very end, once every push of the run was acknowledged and the
 * store synced: deleting earlier would let a later tree's capture find a shared chunk gone (and store it
 * again), and the refs (sent between the phases) read the manifests from the local store. Tree by tree
 * replication would fail on a chunk two trees share for the same reason, hence the union.
 */
#define REP_WAIT_MS 10

/* A set of chunk ids (open addressing; ids are keyed hashes, so their first bytes are a fine hash). */
struct idhash {
    uint8_t (*v)[CAIRN_CHUNK_ID_BYTES];
    uint8_t *used;
    size_t n, cap; /* cap: 0 or a power of two */
};

static size_t idhash_slot(const struct idhash *s, const uint8_t *id)
{
    uint64_t h;
    memcpy(&h, id, sizeof(h));
    size_t i = (size_t)h & (s->cap - 1);
    while (s->used[i] && memcmp(s->v[i], id, CAIRN_CHUNK_ID_BYTES) != 0)
        i = (i + 1) & (s->cap - 1);
    return i;
}

static bool idhash_has(const struct idhash *s, const uint8_t *id)
{
    return s->cap && s->used[idhash_slot(s, id)];
}

/* Adds id; *added false when it was there already. */
static int idhash_add(struct idhash *s, const uint8_t *id, bool *added)
{
    *added = false;
    if ((s->n + 1) * 2 > s->cap) {
        struct idhash g = {.cap = s->cap ? 2 * s->cap : 1024};
        g.v = cairn_malloc(g.cap * sizeof(*g.v));
        g.used = cairn_calloc(g.cap, 1);
        if (!g.v || !g.used) {
            cairn_free(g.v);
            cairn_free(g.used);
            return cairn_err_set(CAIRN_ENOMEM, "out of memory for the set of replicated chunks");
        }
        for (size_t i = 0; i < s->cap; i++)
            if (s->used[i]) {
                size_t j = idhash_slot(&g, s->v[i]);
                memcpy(g.v[j], s->v[i], CAIRN_CHUNK_ID_BYTES);
                g.used[j] = 1;
            }
        g.n = s->n;
        cairn_free(s->v);
        cairn_free(s->used);
        *s = g;
    }
    size_t i = idhash_slot(s, id);
    if (s->used[i])
        return CAIRN_OK;
    memcpy(s->v[i], id, CAIRN_CHUNK_ID_BYTES);
    s->used[i] = 1;
    s->n++;
    *added = true;
    return CAIRN_OK;
}

static void idhash_release(struct idhash *s)
{
    cairn_free(s->v);
    cairn_free(s->used);
    memset(s, 0, sizeof(*s));
}

struct del {
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    size_t len;
};

struct rrun {
    struct jt *t;
    const struct job *jb;
    const char *stage;           /* of the progress messages */
    const uint8_t *dom;
    struct cairn_wk_members *ms; /* the membership of the whole run */
    unsigned r;
    bool started;                /* cairn_wk_repl_begin was called */
    struct idhash pushed;        /* ids handled (pushed, or placed on this worker only) */
    struct del *dels;            /* acknowledged chunks whose local copy goes at the end */
    size_t ndels, dels_cap;
    int del_rc;                  /* ENOMEM recording one: the copies stay (the job still succeeds) */
    uint64_t done, total, last_progress, last_members;
    bool job_thread;             /* progress messages allowed (the job thread's own socket) */
    atomic_bool *stop;           /* set: give up (ECANCELED) at the next tick; may be NULL */
};

static void rrun_done(void *arg, const uint8_t *domain_id, const uint8_t *id, size_t len, bool delete_local)
{
    struct rrun *rr = arg;
    (void)domain_id;
    if (!delete_local)
        return;
    if (cairn_array_grow((void **)&rr->dels, &rr->dels_cap, rr->ndels + 1, sizeof(*rr->dels)) != CAIRN_OK) {
        rr->del_rc = CAIRN_ENOMEM;
        return;
    }
    memcpy(rr->dels[rr->ndels].id, id, CAIRN_CHUNK_ID_BYTES);
    rr->dels[rr->ndels++].len = len;
}

/* Start the run: membership, R, the repl client. Fails (EUNAVAILABLE) with fewer live workers than R. */
static int rrun_start(struct rrun *rr, struct jt *t, const struct job *jb, const struct cairn_domain *d,
                      const char *stage)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    memset(rr, 0, sizeof(*rr));
    rr->t = t;
    rr->jb = jb;
    rr->stage = stage;
    rr->dom = cairn_domain_id(d);
    rr->last_progress = rr->last_members = cairn_now_mono_ns();
    rr->r = cairn_wk_view_replicas(e->view);
    rr->ms = cairn_wk_view_get(e->view);
    if (!rr->ms || rr->ms->nlive < rr->r)
        return cairn_err_set(CAIRN_EUNAVAILABLE, "%s needs %u live workers for %u replicas; %s has %zu", jb->kind,
                             rr->r, rr->r, rr->ms ? "the membership" : "no membership received yet:",
                             rr->ms ? rr->ms->nlive : 0);
    CAIRN_FORWARD_IF_ERROR(cairn_wk__repl(t));
    cairn_wk_repl_begin(t->repl, rrun_done, rr);
    rr->started = true;
    return cairn_wk_repl_check_members(t->repl, rr->ms);
}

static int rrun_tick(struct rrun *rr)
{
    if (rr->stop && atomic_load(rr->stop))
        return cairn_err_set(CAIRN_ECANCELED, "%s: replication stopped", rr->jb->kind);
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_check(rr->t, rr->jb));
    uint64_t now = cairn_now_mono_ns();
    if (now - rr->last_members >= MEMBERS_CHECK_NS) {
        rr->last_members = now;
        struct cairn_wk_members *latest = cairn_wk_view_get(cairn_wk__env(rr->t)->view);
        int rc = latest ? cairn_wk_repl_check_members(rr->t->repl, latest) : CAIRN_OK;
        cairn_wk_members_unref(&latest);
        CAIRN_FORWARD_IF_ERROR(rc);
    }
    if (rr->job_thread && now - rr->last_progress >= PROGRESS_NS) {
        rr->last_progress = now;
        cairn_wk__progress(rr->t, rr->jb, rr->done, rr->total, rr->stage);
    }
    return CAIRN_OK;
}

/* Push one chunk to the peers of its placement set (once per run), then keep the pending bytes bounded. */
static int rrun_push(struct rrun *rr, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(rr->t);
    bool added = false;
    CAIRN_FORWARD_IF_ERROR(idhash_add(&rr->pushed, id, &added));
    if (!added)
        return CAIRN_OK;
    const struct cairn_wk_member *set[64], *peers[64];
    size_t k = cairn_wk_members_place(rr->ms, rr->r, rr->dom, id, set), np = 0;
    bool mine = false;
    for (size_t s = 0; s < k; s++) {
        if (!strcmp(set[s]->id, e->worker_id))
            mine = true;
        else
            peers[np++] = set[s];
    }
    if (np == 0)
        return CAIRN_OK;
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES], *val = NULL;
    size_t vlen = 0;
    cairn_store_chunk_key(key, rr->dom, id);
    int rc = cairn_kv_get(cairn_store_kv(e->store), key, sizeof(key), &val, &vlen);
    if (rc == CAIRN_ENOTFOUND) {
        char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
        cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
        return cairn_err_set(CAIRN_ENOTFOUND, "%s: chunk %s left the local store before it was replicated "
                             "(another job moved it to its placement set); retry", rr->jb->kind, hex);
    }
    CAIRN_FORWARD_IF_ERROR(rc);
    CAIRN_FORWARD_IF_ERROR(cairn_wk_repl_push(rr->t->repl, peers, np, rr->dom, id, val, vlen, cairn_kv_free, !mine));
    rc = cairn_wk_repl_pump(rr->t->repl, 0);
    while (rc == CAIRN_OK && cairn_wk_repl_pending_bytes(rr->t->repl) > PENDING_BYTES) {
        rc = rrun_tick(rr);
        if (rc == CAIRN_OK)
            rc = cairn_wk_repl_pump(rr->t->repl, 100);
    }
    return rc;
}

/* End of the run (job thread): the union of the trees' chunks not pushed yet, every ack, sync, deletes. */
static int rrun_finish(struct rrun *rr, const struct cairn_domain *d, const struct cairn_tree_ref *const *refs,
                       size_t nrefs)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(rr->t);
    struct idset ids = {0};
    int rc = CAIRN_OK;
    rr->job_thread = true;
    for (size_t i = 0; i < nrefs && rc == CAIRN_OK; i++)
        rc = cairn_tree_chunks(e->store, d, refs[i], idset_add, &ids);
    rr->total = ids.n; /* with repeats: progress only */
    for (size_t i = 0; i < ids.n && rc == CAIRN_OK; i++, rr->done++) {
        if (idhash_has(&rr->pushed, ids.v[i]))
            continue;
        rc = rrun_push(rr, ids.v[i]);
        if (rc == CAIRN_OK)
            rc = rrun_tick(rr);
    }
    while (rc == CAIRN_OK && cairn_wk_repl_pending(rr->t->repl) > 0) {
        rc = rrun_tick(rr);
        if (rc == CAIRN_OK)
            rc = cairn_wk_repl_pump(rr->t->repl, 100);
    }
    if (rc == CAIRN_OK)
        rc = cairn_store_sync(e->store);
    /* every chunk now has its R durable replicas: the copies outside our placement set can go */
    for (size_t i = 0; i < rr->ndels && rc == CAIRN_OK; i++) {
        if (cairn_store_delete_chunk(e->store, rr->dom, rr->dels[i].id) == CAIRN_OK)
            cairn_wk_stats_removed(e->stats, rr->dels[i].len);
        else
            cairn_warn("%s: local copy of a replicated chunk not deleted: %s", rr->jb->kind, cairn_err_msg());
    }
    if (rc == CAIRN_OK && rr->del_rc != CAIRN_OK)
        cairn_warn("%s: out of memory listing local copies to delete: some stay", rr->jb->kind);
    if (rc == CAIRN_OK)
        cairn_err_clear(); /* a failed delete's message is not the job's */
    idset_release(&ids);
    return rc;
}

static void rrun_release(struct rrun *rr)
{
    if (rr->started && rr->t->repl)
        cairn_wk_repl_begin(rr->t->repl, NULL, NULL); /* drop what is still pending (after a failure) */
    rr->started = false;
    cairn_wk_members_unref(&rr->ms);
    idhash_release(&rr->pushed);
    cairn_free(rr->dels);
    rr->dels = NULL;
    rr->ndels = rr->dels_cap = 0;
}

/* The streaming phase: ids come from the capture's worker threads (stream_stored), a thread pushes them. */
struct stream {
    struct rrun *rr;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct idset q;      /* mu: reported, not yet taken */
    bool closing;        /* mu: the captures are over */
    atomic_bool abandon; /* the job failed: stop at once (rr->stop points here while the thread runs) */
    int rc;              /* the thread's outcome (read after the join) */
    char msg[768];
};

static void stream_stored(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    struct stream *s = arg;
    pthread_mutex_lock(&s->mu);
    /* out of memory: dropped here, the final pass pushes it */
    if (!s->closing && cairn_array_grow((void **)&s->q.v, &s->q.cap, s->q.n + 1, sizeof(*s->q.v)) == CAIRN_OK) {
        memcpy(s->q.v[s->q.n++], id, CAIRN_CHUNK_ID_BYTES);
        if (s->q.n == 1)
            pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

static void *stream_main(void *arg)
{
    struct stream *s = arg;
    struct idset batch = {0};
    int rc = CAIRN_OK;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (s->q.n == 0 && !s->closing && cairn_wk_repl_pending(s->rr->t->repl) == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        struct idset tmp = s->q;
        s->q = batch; /* swap: the producers append to our emptied array */
        s->q.n = 0;
        batch = tmp;
        bool closing = s->closing;
        pthread_mutex_unlock(&s->mu);
        for (size_t i = 0; i < batch.n && rc == CAIRN_OK; i++)
            rc = atomic_load(&s->abandon) ? rrun_tick(s->rr) : rrun_push(s->rr, batch.v[i]);
        if (rc == CAIRN_OK)
            rc = rrun_tick(s->rr);
        if (rc != CAIRN_OK || (closing && batch.n == 0))
            break;
        if (batch.n == 0) /* nothing new: serve the acknowledgements and credits */
            rc = cairn_wk_repl_pump(s->rr->t->repl, REP_WAIT_MS);
        batch.n = 0;
        if (rc != CAIRN_OK)
            break;
    }
    s->rc = rc;
    if (rc != CAIRN_OK)
        snprintf(s->msg, sizeof(s->msg), "%s", cairn_err_msg());
    pthread_mutex_lock(&s->mu);
    s->closing = true; /* reports from here on are dropped: the final pass has them */
    pthread_mutex_unlock(&s->mu);
    cairn_free(batch.v);
    return NULL;
}

/* Start streaming (false: it could not start; the final pass then does all the work). */
static bool stream_start(struct stream *s, struct rrun *rr)
{
    memset(s, 0, sizeof(*s));
    s->rr = rr;
    atomic_init(&s->abandon, false);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    rr->stop = &s->abandon;
    if (pthread_create(&s->th, NULL, stream_main, s) != 0) {
        rr->stop = NULL;
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        return false;
    }
    return true;
}

/*
 * Tell the thread the captures are over (abandon: the job failed, push nothing more), wait for it; its error
 * (with its message) or CAIRN_OK.
 */
static int stream_stop(struct stream *s, bool abandon)
{
    if (abandon)
        atomic_store(&s->abandon, true);
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    s->rr->stop = NULL;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    cairn_free(s->q.v);
    s->q.v = NULL;
    return s->rc == CAIRN_OK ? CAIRN_OK : cairn_err_set(s->rc, "%s", s->msg);
}

struct wk_repl_run {
    struct jt *t;
    const struct job *jb;
    const struct cairn_domain *d;
    const char *stage;
    struct rrun rr;
    int start_rc;   /* not CAIRN_OK: rr is unusable (it did not start, or streaming stopped part-way) */
    bool streaming; /* st's thread runs */
    struct stream st;
};

int cairn_wk__repl_run_begin(struct jt *t, const struct job *jb, const struct cairn_domain *d, bool stream,
                             const char *stage, struct wk_repl_run **out)
{
    *out = NULL;
    struct wk_repl_run *run = cairn_calloc(1, sizeof(*run));
    if (!run)
        return cairn_err_set(CAIRN_ENOMEM, "%s: out of memory for a replication run", jb->kind);
    run->t = t;
    run->jb = jb;
    run->d = d;
    run->stage = stage;
    /* a run that cannot start (e.g. too few live workers) is started again by the finish, which then fails
       there, after the refs, as a capture-first job does */
    run->start_rc = rrun_start(&run->rr, t, jb, d, stage);
    if (run->start_rc == CAIRN_OK && stream)
        run->streaming = stream_start(&run->st, &run->rr);
    cairn_err_clear();
    *out = run;
    return CAIRN_OK;
}

void cairn_wk__repl_run_hook(struct wk_repl_run *run, struct cairn_tree_opts *o)
{
    if (!run || !run->streaming)
        return;
    o->chunk_stored = stream_stored;
    o->chunk_stored_arg = &run->st;
}

void cairn_wk__repl_run_stop(struct wk_repl_run *run, int job_rc)
{
    if (!run || !run->streaming)
        return;
    char keep[1024]; /* the job's error, kept across the join */
    int keep_code = cairn_err_code();
    snprintf(keep, sizeof(keep), "%s", cairn_err_msg());
    int src = stream_stop(&run->st, job_rc != CAIRN_OK);
    run->streaming = false;
    if (src != CAIRN_OK && job_rc == CAIRN_OK) {
        /* e.g. a peer died during the capture: every chunk is still local (no copy is deleted before the
           end), so the finish starts a fresh run with the membership of now */
        cairn_info("%s: replication during the capture stopped (%s); starting it over", run->jb->kind,
                   cairn_err_msg());
        run->start_rc = src;
    }
    if (keep_code != CAIRN_OK)
        cairn_err_set(keep_code, "%s", keep);
    else
        cairn_err_clear();
}

int cairn_wk__repl_run_finish(struct wk_repl_run *run, const struct cairn_tree_ref *const *refs, size_t nrefs)
{
    cairn_wk__repl_run_stop(run, CAIRN_OK);
    if (run->start_rc != CAIRN_OK) {
        rrun_release(&run->rr);
        run->start_rc = rrun_start(&run->rr, run->t, run->jb, run->d, run->stage);
        CAIRN_FORWARD_IF_ERROR(run->start_rc);
    }
    return rrun_finish(&run->rr, run->d, refs, nrefs);
}

void cairn_wk__repl_run_destroy(struct wk_repl_run **runp)
{
    struct wk_repl_run *run = *runp;
    if (!run)
        return;
    if (run->streaming) { /* a failed job: stop at once */
        char keep[1024];
        int keep_code = cairn_err_code();
        snprintf(keep, sizeof(keep), "%s", cairn_err_msg());
        stream_stop(&run->st, true);
        run->streaming = false;
        if (keep_code != CAIRN_OK)
            cairn_err_set(keep_code, "%s", keep);
        else
            cairn_err_clear();
    }
    rrun_release(&run->rr);
    cairn_free(run);
    *runp = NULL;
}

int cairn_wk__replicate_tree(struct jt *t, const struct job *jb, const struct cairn_domain *d,
                             const struct cairn_tree_ref *ref, const char *stage)
{
    struct wk_repl_run *run = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__repl_run_begin(t, jb, d, false, stage, &run));
    const struct cairn_tree_ref *refs[1] = {ref};
    int rc = cairn_wk__repl_run_finish(run, refs, 1);
    cairn_wk__repl_run_destroy(&run);
    return rc;
}

/* ---- layer builds ---- */

struct lbuild {
    struct jt *t;
    const struct job *jb;
    const struct cairn_domain *d;
    const struct wk_layer_ref *lr;
    uint64_t chunks, bytes;
};

static int check_job(void *arg)
{
    struct lbuild *b = arg;
    return cairn_wk__job_check(b->t, b->jb);
}

static int fetch_missing(struct lbuild *b, struct idset *ids)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(b->t);
    const uint8_t *dom = cairn_domain_id(b->d);
    idset_unique(ids);
    CAIRN_FORWARD_IF_ERROR(idset_missing(ids, e->store, dom));
    if (ids->n == 0)
        return CAIRN_OK;
    struct cairn_wk_members *ms = cairn_wk_view_get(e->view);
    if (!ms)
        return cairn_err_set(CAIRN_EUNAVAILABLE, "image '%s': %zu chunks are missing and no membership was received "
                             "yet to fetch them", b->lr->image, ids->n);
    char what[96];
    snprintf(what, sizeof(what), "image '%s'", b->lr->image);
    struct cairn_wk_fetch_req rq = {
        .store = e->store,
        .stats = e->stats,
        .ms = ms,
        .replicas = cairn_wk_view_replicas(e->view),
        .self_id = e->worker_id,
        .domain = b->d,
        .codec = b->t->codec,
        .ids = (const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])ids->v,
        .n = ids->n,
        .what = what,
        .check = check_job,
        .check_arg = b,
        .timeout_ms = e->replication_timeout_ms,
    };
    uint64_t c = 0, by = 0;
    cairn_wk__progress(b->t, b->jb, 0, ids->n, "fetch");
    int rc = cairn_wk_fetch_run(b->t->fetch, &rq, &c, &by);
    b->chunks += c;
    b->bytes += by;
    cairn_wk_members_unref(&ms);
    return rc;
}

static int build_once(struct lbuild *b, const char *tmp)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(b->t);
    struct idset ids = {0};
    int rc = CAIRN_OK;
    for (uint32_t i = 0; i < b->lr->ref.n_chunks && rc == CAIRN_OK; i++)
        rc = idset_add(&ids, b->lr->ref.chunks[i].id);
    if (rc == CAIRN_OK)
        rc = fetch_missing(b, &ids);
    ids.n = 0;
    if (rc == CAIRN_OK)
        rc = cairn_tree_chunks(e->store, b->d, &b->lr->ref, idset_add, &ids);
    if (rc == CAIRN_OK)
        rc = fetch_missing(b, &ids);
    idset_release(&ids);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_tree_opts o = {.flags = CAIRN_TREE_OVERLAY};
    struct cairn_tree_stats st;
    return cairn_tree_materialize(e->store, b->d, &b->lr->ref, tmp, &o, &st);
}

static int build_layer(void *arg, const char *tmp)
{
    struct lbuild *b = arg;
    int rc = CAIRN_OK;
    for (int attempt = 1; attempt <= BUILD_ATTEMPTS; attempt++) {
        rc = build_once(b, tmp);
        if (rc != CAIRN_ENOTFOUND || attempt == BUILD_ATTEMPTS || cairn_wk__job_check(b->t, b->jb) != CAIRN_OK)
            break;
        /* a chunk left the store between fetch and use: fetch again */
        cairn_info("layer '%s': %s; building again", b->lr->image, cairn_err_msg());
        if ((rc = cairn_wk_rmrf(tmp)) != CAIRN_OK)
            break;
    }
    return rc;
}

int cairn_wk__layer_get(struct jt *t, const struct job *jb, const struct cairn_domain *d,
                        const struct wk_layer_ref *lr, char **path, uint64_t *fetched_chunks,
                        uint64_t *fetched_bytes)
{
    CAIRN_FORWARD_IF_ERROR(cairn_wk__codec(t));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__fetch(t));
    struct lbuild b = {.t = t, .jb = jb, .d = d, .lr = lr};
    bool built = false;
    uint64_t t0 = cairn_now_mono_ns();
    int rc = cairn_wk_layers_get(cairn_wk__env(t)->layers, lr->image, build_layer, &b, path, &built);
    *fetched_chunks += b.chunks;
    *fetched_bytes += b.bytes;
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "layer of image '%s': %s", lr->image, cairn_err_msg());
    if (built)
        cairn_info("layer '%s' built in %.3f s (%llu chunks, %llu bytes fetched)", lr->image,
                   (double)(cairn_now_mono_ns() - t0) / 1e9, (unsigned long long)b.chunks,
                   (unsigned long long)b.bytes);
    return CAIRN_OK;
}

int cairn_wk__layer_build(struct jt *t, const struct job *jb, const struct cairn_domain *d,
                          const struct wk_layer_ref *lr, const char *dir, uint64_t *fetched_chunks,
                          uint64_t *fetched_bytes)
{
    CAIRN_FORWARD_IF_ERROR(cairn_wk__codec(t));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__fetch(t));
    struct lbuild b = {.t = t, .jb = jb, .d = d, .lr = lr};
    int rc = build_layer(&b, dir);
    *fetched_chunks += b.chunks;
    *fetched_bytes += b.bytes;
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "layer of image '%s': %s", lr->image, cairn_err_msg());
    return CAIRN_OK;
}

/* ---- image-import ---- */

struct rd {
    uint64_t rid, off, len, sent_ns;
    unsigned attempts;
    struct cairn_msg *reply;
};

struct upload {
    struct jt *t;
    const struct job *jb;
    int wfd;
    atomic_int stop;      /* the job thread is done with the pipe */
    atomic_uint_fast64_t size, written;
    bool size_known;
    bool epipe;           /* the import stopped reading */
    int rc;               /* the reader's outcome */
    char msg[1024];
    struct rd inflight[READS_IN_FLIGHT]; /* in offset order */
    unsigned n;
    uint64_t next_off;
};

static int up_fail(struct upload *u, int rc)
{
    if (!u->rc) {
        u->rc = rc;
        snprintf(u->msg, sizeof(u->msg), "%s", cairn_err_msg());
    }
    return rc;
}

static int up_send(struct upload *u, struct rd *r)
{
    struct jt *t = u->t;
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_UPLOAD_READ);
    if (!m)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for an upload.read");
    r->rid = ++t->coord_rid;
    cairn_msg_set_rid(m, r->rid);
    cairn_msg_set_str(m, "job", u->jb->id);
    cairn_msg_set_u64(m, "offset", r->off);
    cairn_msg_set_u64(m, "len", r->len);
    int rc = cairn_sock_send(t->coord, m);
    cairn_msg_destroy(&m);
    if (rc != CAIRN_OK && rc != CAIRN_EAGAIN)
        return cairn_err_set(rc, "upload.read for job '%s' not sent: %s", u->jb->id, cairn_err_msg());
    r->sent_ns = cairn_now_mono_ns(); /* EAGAIN (no connection yet): the timeout resends it */
    r->attempts++;
    return CAIRN_OK;
}

static void rd_clear(struct rd *r)
{
    cairn_msg_destroy(&r->reply);
    memset(r, 0, sizeof(*r));
}

static void up_drop_inflight(struct upload *u)
{
    for (unsigned i = 0; i < u->n; i++)
        rd_clear(&u->inflight[i]);
    u->n = 0;
}

static int write_all(struct upload *u, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(u->wfd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EPIPE) {
            u->epipe = true;
            return CAIRN_ECANCELED;
        }
        if (w < 0)
            return cairn_err_set_errno(CAIRN_EIO, errno, "write the upload pipe");
        p += w;
        len -= (size_t)w;
    }
    return CAIRN_OK;
}

/* Write the replies that arrived, in order. CAIRN_ECANCELED: the import stopped reading. */
static int up_flush(struct upload *u)
{
    while (u->n > 0 && u->inflight[0].reply) {
        struct rd *r = &u->inflight[0];
        uint64_t size = 0;
        const uint8_t *data = NULL;
        size_t len = 0;
        if (cairn_msg_get_u64(r->reply, "size", &size) != CAIRN_OK || cairn_msg_frame(r->reply, 0, &data, &len) != CAIRN_OK)
            return cairn_err_set(CAIRN_EPROTO, "upload.read reply for job '%s' without size or data", u->jb->id);
        if (u->size_known && size != atomic_load(&u->size))
            return cairn_err_set(CAIRN_EPROTO, "upload of job '%s' changed size from %llu to %llu bytes while read",
                                 u->jb->id, (unsigned long long)atomic_load(&u->size), (unsigned long long)size);
        atomic_store(&u->size, size);
        u->size_known = true;
        uint64_t at = atomic_load(&u->written);
        if (r->off != at || len > r->len)
            return cairn_err_set(CAIRN_EPROTO, "upload.read reply for job '%s' out of place (offset %llu, expected %llu)",
                                 u->jb->id, (unsigned long long)r->off, (unsigned long long)at);
        if (len == 0 && at < size)
            return cairn_err_set(CAIRN_EPROTO, "upload.read for job '%s' at offset %llu of %llu returned no bytes",
                                 u->jb->id, (unsigned long long)at, (unsigned long long)size);
        int rc = write_all(u, data, len);
        if (rc != CAIRN_OK)
            return rc;
        atomic_store(&u->written, at + len);
        bool short_read = len < r->len && at + len < size;
        rd_clear(r);
        memmove(&u->inflight[0], &u->inflight[1], (u->n - 1) * sizeof(*r));
        u->n--;
        memset(&u->inflight[u->n], 0, sizeof(*r));
        if (short_read) { /* the later reads start at the wrong offset: ask again from here */
            up_drop_inflight(u);
            u->next_off = at + len;
        }
    }
    return CAIRN_OK;
}

static int up_step(struct upload *u)
{
    struct jt *t = u->t;
    /* keep READS_IN_FLIGHT reads outstanding (one until the size is known) */
    unsigned want = u->size_known ? READS_IN_FLIGHT : 1;
    while (u->n < want && (!u->size_known || u->next_off < atomic_load(&u->size))) {
        struct rd *r = &u->inflight[u->n];
        memset(r, 0, sizeof(*r));
        r->off = u->next_off;
        r->len = PIECE;
        CAIRN_FORWARD_IF_ERROR(up_send(u, r));
        u->n++;
        u->next_off += PIECE;
    }
    struct cairn_sock *s = t->coord;
    uint64_t ready = 0;
    cairn_sock_poll(&s, 1, 100, &ready);
    for (;;) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(t->coord, 0, &m);
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&m);
            if (rc == CAIRN_EPROTO || rc == CAIRN_ETOOBIG || rc == CAIRN_EVERSION)
                continue;
            break;
        }
        struct rd *r = NULL;
        for (unsigned i = 0; i < u->n && !r; i++)
            if (cairn_msg_is_reply(m) && cairn_msg_rid(m) == u->inflight[i].rid && !u->inflight[i].reply)
                r = &u->inflight[i];
        if (r && cairn_msg_code(m) != CAIRN_OK) {
            int code = cairn_msg_code(m);
            rc = cairn_err_set(code, "upload.read of job '%s' at offset %llu refused by the coordinator: %s",
                               u->jb->id, (unsigned long long)r->off,
                               cairn_msg_text(m) ? cairn_msg_text(m) : cairn_err_name(code));
            cairn_msg_destroy(&m);
            return rc;
        }
        if (r)
            r->reply = m;
        else
            cairn_msg_destroy(&m); /* a late reply to a read resent or dropped */
    }
    CAIRN_FORWARD_IF_ERROR(up_flush(u));
    uint64_t now = cairn_now_mono_ns();
    for (unsigned i = 0; i < u->n; i++) {
        struct rd *r = &u->inflight[i];
        if (r->reply || now - r->sent_ns < READ_TIMEOUT_NS)
            continue;
        if (r->attempts >= READ_ATTEMPTS)
            return cairn_err_set(CAIRN_ETIMEDOUT, "upload.read of job '%s' at offset %llu unanswered after %u attempts",
                                 u->jb->id, (unsigned long long)r->off, r->attempts);
        CAIRN_FORWARD_IF_ERROR(up_send(u, r));
    }
    return CAIRN_OK;
}

static void *upload_reader(void *arg)
{
    struct upload *u = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* a closed pipe is EPIPE here, never a signal */
    pthread_setname_np(pthread_self(), "cairn-upload");
    while (!u->size_known || atomic_load(&u->written) < atomic_load(&u->size)) {
        if (atomic_load(&u->stop))
            break;
        int rc = cairn_wk__job_check(u->t, u->jb);
        if (rc == CAIRN_OK)
            rc = up_step(u);
        if (u->epipe)
            break; /* the import stopped reading: its own outcome tells why */
        if (rc != CAIRN_OK) {
            up_fail(u, rc);
            break;
        }
    }
    up_drop_inflight(u);
    close(u->wfd);
    u->wfd = -1;
    return NULL;
}

struct import_progress {
    struct jt *t;
    const struct job *jb;
    struct upload *u;
    uint64_t last;
};

static void import_progress(void *arg, const struct cairn_tree_stats *st)
{
    CAIRN_UNUSED(st);
    struct import_progress *p = arg;
    uint64_t now = cairn_now_mono_ns();
    if (now - p->last < PROGRESS_NS)
        return;
    p->last = now;
    cairn_wk__progress(p->t, p->jb, atomic_load(&p->u->written), atomic_load(&p->u->size), "import");
}

int cairn_wk__run_image_import(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    const char *image = NULL, *app = NULL;
    const struct cairn_domain *d = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "image", true, &image));
    if (!cairn_wk_layer_id_valid(image))
        return cairn_err_set(CAIRN_EINVAL, "image-import: params.image '%.80s' is not an image id", image);
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_app(jb, &app));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__domain_of(t->j, app, &d));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__coord(t));

    struct upload *u = cairn_calloc(1, sizeof(*u));
    if (!u)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for an import");
    u->t = t;
    u->jb = jb;
    atomic_init(&u->stop, 0);
    atomic_init(&u->size, 0);
    atomic_init(&u->written, 0);
    struct cairn_tree_ref ref = {0};
    struct cairn_tree_stats st = {0};
    int fds[2] = {-1, -1}, rc = CAIRN_OK;
    bool started = false;
    pthread_t th;
    if (pipe2(fds, O_CLOEXEC) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "image-import: pipe");
        goto out;
    }
    fcntl(fds[1], F_SETPIPE_SZ, 1 << 20); /* fewer wake-ups; the default 64 KiB works too */
    u->wfd = fds[1];
    fds[1] = -1; /* the reader's from here on */
    int pe = pthread_create(&th, NULL, upload_reader, u);
    if (pe != 0) {
        close(u->wfd);
        rc = cairn_err_set_errno(CAIRN_EIO, pe, "image-import: start the upload reader");
        goto out;
    }
    started = true;
    char name[128];
    snprintf(name, sizeof(name), "upload of job '%s'", jb->id);
    struct import_progress ip = {.t = t, .jb = jb, .u = u, .last = cairn_now_mono_ns()};
    struct cairn_tree_opts o = {.progress = import_progress, .progress_arg = &ip};
    rc = cairn_archive_import_fd(e->store, d, fds[0], name, &o, &ref, &st);
    close(fds[0]);
    fds[0] = -1;
    atomic_store(&u->stop, 1);
    pthread_join(th, NULL);
    started = false;
    if (u->rc != CAIRN_OK) /* the import's failure (or an early end it took for complete) comes from it */
        rc = cairn_err_set(u->rc, "%s", u->msg);
    if (rc != CAIRN_OK)
        goto out;
    cairn_info("image '%s': imported %llu bytes of upload: %llu entries, %llu files, %llu bytes, %llu new chunks",
               image, (unsigned long long)atomic_load(&u->written), (unsigned long long)st.entries,
               (unsigned long long)st.files, (unsigned long long)st.bytes, (unsigned long long)st.chunks_new);
    rc = cairn_wk__send_refs(t, jb, d, &ref); /* first: replication may drop local copies */
    if (rc == CAIRN_OK)
        rc = cairn_wk__replicate_tree(t, jb, d, &ref, "replicate");
    if (rc != CAIRN_OK)
        goto out;
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_str(res, r, "image", image);
    rc = cairn_wk__layer_ref_put(res, r, &ref);
    cairn_mval_put_u64(res, r, "files", st.files);
    cairn_mval_put_u64(res, r, "size", st.bytes);
    cairn_mval_put_u64(res, r, "stored", st.stored_bytes);
out:
    if (started) {
        atomic_store(&u->stop, 1);
        if (fds[0] >= 0)
            close(fds[0]);
        fds[0] = -1;
        pthread_join(th, NULL);
    }
    if (fds[0] >= 0)
        close(fds[0]);
    cairn_tree_ref_release(&ref);
    cairn_free(u);
    return rc;
}
