/*
 * worker_jobs.c: job threads, the helpers the job kinds share, and the kinds noop, ingest and chunk-has
 * (see worker_jobs.h; the sandbox and image kinds are in the files listed in worker_jobs_int.h).
 *
 * Threads
 * - Two classes of jobs, each with its FIFO (mutex `mu`, one condition per class):
 *     general  job_threads threads, started at once; `queue` more jobs may wait, then EBUSY.
 *     exec     sandbox-exec jobs: they last as long as their command and mostly wait, so they never
 *              occupy the general threads. Exec threads are started on demand, up to EXEC_THREADS, and
 *              kept; EBUSY when that many execs run.
 *   Not cairn/pool.h: its first failure cancels the queued tasks, and jobs are independent.
 * - Each job thread owns, created lazily and kept across jobs: a codec, a DEALER to the main thread's
 *   inproc pipe (job.progress, job.result), a DEALER to the coordinator (upload.read, job.output; same key
 *   pair as the main thread's socket, a routing id of its own), a replication client and a fetch client
 *   with one DEALER per peer each. No ZeroMQ socket is shared between threads.
 * - Shared with the main thread: the store (thread-safe), the counters (atomic), the membership view
 *   (mutex inside), the runtime and the layer cache (thread-safe), the domain cache (`dom_mu`), the
 *   abandon flag (atomic).
 *
 * ingest (params: bytes <= 1 GiB, seed)
 *   generate the bytes (cairn_wk_gen) -> FastCDC cuts -> cairn_store_put_chunk in the app's managed
 *   domain -> placement over the live members of the membership current when the job starts (R from
 *   the coordinator; fewer live workers than R fails it at once with EUNAVAILABLE) -> the stored value
 *   is read back and pushed to every other worker of the chunk's set -> when they all acknowledged
 *   and this worker is not in the set, its local copy is deleted. The job succeeds once every chunk is
 *   acknowledged (and the local store synced); a target declared dead meanwhile fails it
 *   (EUNAVAILABLE), one that does not answer within replication_timeout too (ETIMEDOUT). Values
 *   waiting for acknowledgements are bounded (PENDING_BYTES): chunking waits for the network beyond.
 * A chunk that was already in the store (dedup) is replicated too: an earlier ingest may have failed
 * before its replicas were made, and a peer that holds it answers at the cost of one lookup.
 *
 * CSEK (docs/internals/snapshots.md): a job.dispatch may carry `domain` (16) and `dek` (32, SECRET). Before
 * the kind runs, the DEK becomes a struct cairn_domain (guarded memory) in job.csek, checked against
 * `domain` (EKEY otherwise); it is destroyed with the job, and so is the dispatch message (proto wipes its
 * SECRET fields). Nothing here formats the DEK anywhere.
 *
 * job.refs (cairn_wk__send_refs): the unique chunk ids of a stored tree, sent to the coordinator in
 * batches of REFS_BATCH with seq counting on across calls of one job, one batch in flight, each resent
 * after REFS_TIMEOUT_NS up to REFS_ATTEMPTS times; an error reply fails the job.
 */
#include "worker_jobs.h"
#include "worker_jobs_int.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/chunker.h"
#include "cairn/codec.h"
#include "cairn/err.h"
#include "cairn/kv.h"
#include "cairn/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define GEN_BUF (4u << 20)
#define PENDING_BYTES (96ull << 20)
#define PROGRESS_NS 500000000ull
#define MEMBERS_CHECK_NS 250000000ull
#define RESULT_IDS 64
#define HELD_MAX 256
#define SLEEP_MAX_MS 86400000ull
#define EXEC_THREADS 64u
#define REFS_BATCH 4096u
#define REFS_TIMEOUT_NS (10000ull * 1000000ull)
#define REFS_ATTEMPTS 6u

struct dom_entry {
    char *app;
    struct cairn_domain *d;
};

struct thr {
    struct cairn_wk_jobs *j;
    unsigned cls, index;
};

struct cairn_wk_jobs {
    struct cairn_wk_jobs_env env;
    pthread_t *threads;      /* general threads first, then exec threads as they start */
    struct thr *thr;
    unsigned nthreads;       /* general threads */
    unsigned started;        /* mu: threads started (both classes) */
    unsigned exec_threads;   /* mu: exec threads started */
    unsigned queue_max;
    pthread_mutex_t mu;
    pthread_cond_t cv[JOB_CLASSES];
    struct job *head[JOB_CLASSES], *tail[JOB_CLASSES]; /* mu */
    unsigned queued[JOB_CLASSES], running[JOB_CLASSES]; /* mu */
    bool stop;                                          /* mu */
    pthread_mutex_t dom_mu;
    struct dom_entry *doms; /* guarded by dom_mu */
    size_t ndoms, doms_cap;
};

/* ---- the data generator ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void cairn_wk_gen_init(struct cairn_wk_gen *g, uint64_t seed)
{
    memset(g, 0, sizeof(*g));
    g->state = seed;
}

void cairn_wk_gen_fill(struct cairn_wk_gen *g, uint8_t *out, size_t n)
{
    while (n > 0 && g->ncarry > 0) {
        *out++ = g->carry[8 - g->ncarry];
        g->ncarry--;
        n--;
    }
    while (n >= 8) {
        cairn_store_le64(out, splitmix64(&g->state));
        out += 8;
        n -= 8;
    }
    if (n > 0) {
        cairn_store_le64(g->carry, splitmix64(&g->state));
        memcpy(out, g->carry, n);
        g->ncarry = (unsigned)(8 - n);
    }
}

/* ---- helpers shared by the kinds ---- */

static uint64_t now_ns(void) { return cairn_now_mono_ns(); }

const struct cairn_wk_jobs_env *cairn_wk__env(const struct jt *t) { return &t->j->env; }

const struct cairn_mval *cairn_wk__param(const struct job *jb, const char *key)
{
    const struct cairn_mval *map = NULL;
    size_t n = 0;
    if (cairn_msg_get_map(jb->msg, "params", &map, &n) != CAIRN_OK)
        return NULL;
    return cairn_mval_get(map, key);
}

int cairn_wk__param_str(const struct job *jb, const char *key, bool required, const char **out)
{
    *out = NULL;
    const struct cairn_mval *v = cairn_wk__param(jb, key);
    size_t len = 0;
    if (!v && !required)
        return CAIRN_OK;
    if (!v || cairn_mval_str(v, out, &len) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "%s: params.%s must be a string", jb->kind, key);
    return CAIRN_OK;
}

int cairn_wk__job_app(const struct job *jb, const char **app)
{
    *app = NULL; /* the dispatch's "app" field, else the envelope's */
    if (cairn_msg_get_str(jb->msg, "app", app, NULL) != CAIRN_OK)
        *app = cairn_msg_app(jb->msg);
    if (!*app || !**app)
        return cairn_err_set(CAIRN_EINVAL, "%s: job '%s' names no app", jb->kind, jb->id);
    return CAIRN_OK;
}

int cairn_wk__job_check(struct jt *t, const struct job *jb)
{
    if (atomic_load(t->j->env.abandon))
        return cairn_err_set(CAIRN_ECANCELED, "job '%s' abandoned: worker '%s' is shutting down", jb->id,
                             t->j->env.worker_id);
    if (jb->deadline_ns && now_ns() >= jb->deadline_ns)
        return cairn_err_set(CAIRN_ETIMEDOUT, "job '%s' passed its deadline of %llu ms", jb->id,
                             (unsigned long long)jb->deadline_ms);
    return CAIRN_OK;
}

static int pipe_open(struct jt *t)
{
    if (t->pipe)
        return CAIRN_OK;
    const struct cairn_wk_jobs_env *e = &t->j->env;
    return cairn_sock_client(e->net, e->pipe_endpoint, e->keys, e->keys->public_z85, NULL, &t->pipe);
}

/* Send m to the main thread; waits while the pipe is full (the main thread always drains it). */
static void pipe_send(struct jt *t, const struct cairn_msg *m)
{
    if (pipe_open(t) != CAIRN_OK) {
        cairn_error("job thread: cannot open the pipe to the main thread: %s", cairn_err_msg());
        return;
    }
    for (;;) {
        int rc = cairn_sock_send(t->pipe, m);
        if (rc == CAIRN_OK)
            return;
        if (rc != CAIRN_EAGAIN || atomic_load(t->j->env.abandon)) {
            cairn_error("job thread: %s not passed to the main thread: %s",
                        cairn_msg_type_name(cairn_msg_type(m)), cairn_err_msg());
            return;
        }
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

void cairn_wk__progress(struct jt *t, const struct job *jb, uint64_t done, uint64_t total, const char *stage)
{
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_PROGRESS);
    if (!m)
        return;
    cairn_msg_set_str(m, "job", jb->id);
    cairn_msg_set_u64(m, "done", done);
    cairn_msg_set_u64(m, "total", total);
    cairn_msg_set_str(m, "stage", stage);
    pipe_send(t, m);
    cairn_msg_destroy(&m);
}

int cairn_wk__domain_of(struct cairn_wk_jobs *j, const char *app, const struct cairn_domain **out)
{
    *out = NULL;
    if (!j->env.master)
        return cairn_err_set(CAIRN_EKEY, "worker '%s' has no master_key: managed domains need one",
                             j->env.worker_id);
    int rc = CAIRN_OK;
    pthread_mutex_lock(&j->dom_mu);
    for (size_t i = 0; i < j->ndoms && !*out; i++)
        if (!strcmp(j->doms[i].app, app))
            *out = j->doms[i].d;
    if (!*out) {
        struct dom_entry e = {0};
        rc = cairn_array_grow((void **)&j->doms, &j->doms_cap, j->ndoms + 1, sizeof(*j->doms));
        if (rc == CAIRN_OK && !(e.app = cairn_strdup(app)))
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for the domain of app '%s'", app);
        if (rc == CAIRN_OK)
            rc = cairn_domain_new_managed(&e.d, j->env.master->bytes, app);
        if (rc == CAIRN_OK) {
            j->doms[j->ndoms++] = e;
            *out = e.d;
        } else {
            cairn_free(e.app);
        }
    }
    pthread_mutex_unlock(&j->dom_mu);
    return rc;
}

int cairn_wk__codec(struct jt *t)
{
    return t->codec ? CAIRN_OK : cairn_codec_new(&t->codec, CAIRN_CODEC_DEFAULT_LEVEL);
}

int cairn_wk__repl(struct jt *t)
{
    if (t->repl)
        return CAIRN_OK;
    struct cairn_wk_repl_opts o = {.timeout_ms = t->j->env.replication_timeout_ms};
    return cairn_wk_repl_new(&t->repl, t->j->env.net, t->j->env.keys, &o);
}

int cairn_wk__fetch(struct jt *t)
{
    return t->fetch ? CAIRN_OK : cairn_wk_fetch_new(&t->fetch, t->j->env.net, t->j->env.keys);
}

int cairn_wk__coord(struct jt *t)
{
    if (t->coord)
        return CAIRN_OK;
    const struct cairn_wk_jobs_env *e = &t->j->env;
    if (!e->coordinator || !e->coordinator_key)
        return cairn_err_set(CAIRN_EUNAVAILABLE, "worker '%s' has no coordinator to talk to", e->worker_id);
    /* a routing id of its own: the main thread's socket is "<id>"; a restarted worker's sockets differ too */
    uint8_t rnd[4];
    char hex[9], rid[CAIRN_WK_ID_MAX + 32];
    cairn_random_bytes(rnd, sizeof(rnd));
    cairn_hex_encode(hex, rnd, sizeof(rnd));
    snprintf(rid, sizeof(rid), "%s/j%u/%s", e->worker_id, t->index, hex);
    struct cairn_sock_opts so = {.routing_id = rid};
    int rc = cairn_sock_client(e->net, e->coordinator, e->keys, e->coordinator_key, &so, &t->coord);
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "job thread: connect to the coordinator at %s: %s", e->coordinator, cairn_err_msg());
    return CAIRN_OK;
}

/* ---- CSEK domain of a job, job.refs ---- */

/* dispatch domain/dek -> jb->csek. Both or neither. */
static int job_csek(struct job *jb)
{
    const uint8_t *dom = NULL, *dek = NULL;
    size_t dl = 0, kl = 0;
    bool has_dom = cairn_msg_get_bin(jb->msg, "domain", &dom, &dl) == CAIRN_OK;
    bool has_dek = cairn_msg_get_bin(jb->msg, "dek", &dek, &kl) == CAIRN_OK;
    if (!has_dom && !has_dek)
        return CAIRN_OK;
    if (!has_dom || dl != CAIRN_DOMAIN_ID_BYTES)
        return cairn_err_set(CAIRN_EKEY, "%s: job '%s' carries a data key without its %d-byte domain id", jb->kind,
                             jb->id, CAIRN_DOMAIN_ID_BYTES);
    if (!has_dek || kl != CAIRN_KEY_BYTES)
        return cairn_err_set(CAIRN_EKEY, "%s: job '%s' names a customer-key domain but carries no %d-byte data key",
                             jb->kind, jb->id, CAIRN_KEY_BYTES);
    CAIRN_FORWARD_IF_ERROR(cairn_domain_new(&jb->csek, dek));
    if (memcmp(cairn_domain_id(jb->csek), dom, CAIRN_DOMAIN_ID_BYTES) != 0) {
        cairn_domain_destroy(&jb->csek);
        return cairn_err_set(CAIRN_EKEY, "%s: data key does not match domain", jb->kind);
    }
    return CAIRN_OK;
}

int cairn_wk__job_domain(struct jt *t, const struct job *jb, const struct cairn_domain **d)
{
    *d = NULL;
    if (jb->csek) {
        *d = jb->csek;
        return CAIRN_OK;
    }
    const char *app = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_app(jb, &app));
    return cairn_wk__domain_of(t->j, app, d);
}

struct refs_ids {
    uint8_t (*v)[CAIRN_CHUNK_ID_BYTES];
    size_t n, cap;
};

static int refs_add(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    struct refs_ids *s = arg;
    CAIRN_FORWARD_IF_ERROR(cairn_array_grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v)));
    memcpy(s->v[s->n++], id, CAIRN_CHUNK_ID_BYTES);
    return CAIRN_OK;
}

static int refs_cmp(const void *a, const void *b) { return memcmp(a, b, CAIRN_CHUNK_ID_BYTES); }

/* Send one batch and wait for its acknowledgement (resending on timeout). */
static int refs_batch(struct jt *t, const struct job *jb, const uint8_t *dom, const uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES],
                      size_t n, uint64_t seq)
{
    for (unsigned attempt = 1;; attempt++) {
        CAIRN_FORWARD_IF_ERROR(cairn_wk__job_check(t, jb));
        struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_REFS);
        if (!m)
            return cairn_err_set(CAIRN_ENOMEM, "out of memory for a job.refs");
        uint64_t rid = ++t->coord_rid;
        cairn_msg_set_rid(m, rid);
        cairn_msg_set_str(m, "job", jb->id);
        cairn_msg_set_u64(m, "seq", seq);
        cairn_msg_set_bin(m, "domain", dom, CAIRN_DOMAIN_ID_BYTES);
        struct cairn_mval *arr = cairn_msg_set_array(m, "ids");
        for (size_t i = 0; i < n; i++)
            cairn_mval_push_bin(m, arr, ids[i], CAIRN_CHUNK_ID_BYTES);
        int rc = cairn_msg_build_error(m);
        if (rc == CAIRN_OK)
            rc = cairn_sock_send(t->coord, m);
        cairn_msg_destroy(&m);
        if (rc != CAIRN_OK && rc != CAIRN_EAGAIN)
            return cairn_err_set(rc, "%s: job.refs %llu of job '%s' not sent: %s", jb->kind, (unsigned long long)seq,
                                 jb->id, cairn_err_msg());
        uint64_t until = now_ns() + REFS_TIMEOUT_NS;
        while (now_ns() < until) {
            CAIRN_FORWARD_IF_ERROR(cairn_wk__job_check(t, jb));
            struct cairn_msg *r = NULL;
            rc = cairn_sock_recv(t->coord, 100, &r);
            if (rc != CAIRN_OK) {
                cairn_msg_destroy(&r);
                continue;
            }
            if (!cairn_msg_is_reply(r) || cairn_msg_rid(r) != rid) {
                cairn_msg_destroy(&r); /* a late reply to an earlier attempt */
                continue;
            }
            int code = cairn_msg_code(r);
            if (code != CAIRN_OK) {
                rc = cairn_err_set(code, "%s: job.refs %llu of job '%s' refused by the coordinator: %s", jb->kind,
                                   (unsigned long long)seq, jb->id,
                                   cairn_msg_text(r) ? cairn_msg_text(r) : cairn_err_name(code));
                cairn_msg_destroy(&r);
                return rc;
            }
            cairn_msg_destroy(&r);
            return CAIRN_OK;
        }
        if (attempt >= REFS_ATTEMPTS)
            return cairn_err_set(CAIRN_ETIMEDOUT, "%s: job.refs %llu of job '%s' unanswered after %u attempts", jb->kind,
                                 (unsigned long long)seq, jb->id, attempt);
    }
}

int cairn_wk__send_refs(struct jt *t, const struct job *jb, const struct cairn_domain *d,
                        const struct cairn_tree_ref *ref)
{
    const struct cairn_wk_jobs_env *e = &t->j->env;
    if (!e->coordinator || !e->coordinator_key)
        return CAIRN_OK; /* no coordinator (a bare worker, tools): nobody keeps refs */
    CAIRN_FORWARD_IF_ERROR(cairn_wk__coord(t));
    struct refs_ids ids = {0};
    int rc = cairn_tree_chunks(e->store, d, ref, refs_add, &ids);
    if (rc != CAIRN_OK)
        goto out;
    if (ids.n > 1) {
        qsort(ids.v, ids.n, sizeof(*ids.v), refs_cmp);
        size_t k = 1;
        for (size_t i = 1; i < ids.n; i++)
            if (memcmp(ids.v[i], ids.v[k - 1], CAIRN_CHUNK_ID_BYTES) != 0)
                memmove(ids.v[k++], ids.v[i], CAIRN_CHUNK_ID_BYTES);
        ids.n = k;
    }
    for (size_t off = 0; off < ids.n && rc == CAIRN_OK; off += REFS_BATCH)
        rc = refs_batch(t, jb, cairn_domain_id(d), (const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])ids.v + off,
                        CAIRN_MIN((size_t)REFS_BATCH, ids.n - off), t->refs_seq++);
out:
    cairn_free(ids.v);
    return rc;
}

/* ---- noop ---- */

static int run_noop(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    uint64_t ms = 0;
    const struct cairn_mval *v = cairn_wk__param(jb, "sleep_ms");
    if (v && (cairn_mval_u64(v, &ms) != CAIRN_OK || ms > SLEEP_MAX_MS))
        return cairn_err_set(CAIRN_EINVAL, "noop: params.sleep_ms must be a whole number of ms up to %llu",
                             (unsigned long long)SLEEP_MAX_MS);
    uint64_t until = now_ns() + ms * 1000000ull;
    for (;;) {
        CAIRN_FORWARD_IF_ERROR(cairn_wk__job_check(t, jb));
        uint64_t now = now_ns();
        if (now >= until)
            break;
        uint64_t left = CAIRN_MIN(until - now, 20000000ull);
        nanosleep(&(struct timespec){0, (long)left}, NULL);
    }
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_str(res, r, "worker", t->j->env.worker_id);
    return CAIRN_OK;
}

/* ---- chunk-has ---- */

static int run_chunk_has(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const struct cairn_mval *dv = cairn_wk__param(jb, "domain"), *iv = cairn_wk__param(jb, "ids");
    const char *dhex = NULL;
    size_t dlen = 0;
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES];
    if (!dv || cairn_mval_str(dv, &dhex, &dlen) != CAIRN_OK || dlen != 2 * sizeof(dom) ||
        cairn_hex_decode(dom, sizeof(dom), dhex) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "chunk-has: params.domain must be %zu hex digits", 2 * sizeof(dom));
    size_t n = iv ? cairn_mval_len(iv) : 0;
    if (!iv || cairn_mval_kind(iv) != CAIRN_MV_ARRAY || n > HELD_MAX)
        return cairn_err_set(CAIRN_EINVAL, "chunk-has: params.ids must be an array of at most %d hex chunk ids",
                             HELD_MAX);
    bool held[HELD_MAX];
    for (size_t i = 0; i < n; i++) {
        const char *h = NULL;
        size_t hl = 0;
        uint8_t id[CAIRN_CHUNK_ID_BYTES];
        if (cairn_mval_str(cairn_mval_at(iv, i), &h, &hl) != CAIRN_OK || hl != 2 * sizeof(id) ||
            cairn_hex_decode(id, sizeof(id), h) != CAIRN_OK)
            return cairn_err_set(CAIRN_EINVAL, "chunk-has: params.ids[%zu] is not %zu hex digits", i, 2 * sizeof(id));
        CAIRN_FORWARD_IF_ERROR(cairn_wk_chunk_held(t->j->env.store, dom, id, &held[i]));
    }
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    struct cairn_mval *arr = cairn_mval_put_array(res, r, "held");
    for (size_t i = 0; i < n; i++)
        cairn_mval_push_bool(res, arr, held[i]);
    return CAIRN_OK;
}

/* ---- ingest ---- */

struct ingest {
    struct jt *t;
    const struct job *jb;
    const struct cairn_domain *d;
    const uint8_t *dom;
    struct cairn_wk_members *ms;
    unsigned r;
    uint64_t total, done_bytes, chunks;
    char ids[RESULT_IDS][2 * CAIRN_CHUNK_ID_BYTES + 1];
    size_t nids;
    uint64_t last_progress, last_members;
    int delete_rc;
};

/* Replication callback: every peer acknowledged; drop the local copy when it is not ours to keep. */
static void ingest_replicated(void *arg, const uint8_t *domain_id, const uint8_t *id, size_t len, bool delete_local)
{
    struct ingest *in = arg;
    if (!delete_local)
        return;
    int rc = cairn_store_delete_chunk(in->t->j->env.store, domain_id, id);
    if (rc == CAIRN_OK)
        cairn_wk_stats_removed(in->t->j->env.stats, len);
    else
        cairn_warn("ingest: local copy of a replicated chunk not deleted: %s", cairn_err_msg());
}

/* Progress, abandon/deadline, and a peer dying: checked between chunks and while waiting. */
static int ingest_tick(struct ingest *in, const char *stage)
{
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_check(in->t, in->jb));
    uint64_t now = now_ns();
    if (now - in->last_members >= MEMBERS_CHECK_NS) {
        in->last_members = now;
        struct cairn_wk_members *latest = cairn_wk_view_get(in->t->j->env.view);
        int rc = latest ? cairn_wk_repl_check_members(in->t->repl, latest) : CAIRN_OK;
        cairn_wk_members_unref(&latest);
        CAIRN_FORWARD_IF_ERROR(rc);
    }
    if (now - in->last_progress >= PROGRESS_NS) {
        in->last_progress = now;
        cairn_wk__progress(in->t, in->jb, in->done_bytes, in->total, stage);
    }
    return CAIRN_OK;
}

/* Store one chunk locally: its id, and whether it was new (counted). */
static int ingest_put(struct ingest *in, const uint8_t *p, size_t len, uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    const struct cairn_wk_jobs_env *e = &in->t->j->env;
    struct cairn_put_result pr;
    CAIRN_FORWARD_IF_ERROR(cairn_store_put_chunk(e->store, in->t->codec, in->d, p, len, id, &pr));
    if (pr.was_new)
        cairn_wk_stats_added(e->stats, pr.stored_len);
    return CAIRN_OK;
}

/*
 * The stored value of a chunk just put, for its peers. Another job of this worker may have deleted it
 * in between (same data, replicated, not ours to keep): then it is put again.
 */
static int ingest_value(struct ingest *in, const uint8_t *p, size_t len, const uint8_t id[CAIRN_CHUNK_ID_BYTES],
                        uint8_t **val, size_t *vlen)
{
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES], again[CAIRN_CHUNK_ID_BYTES];
    cairn_store_chunk_key(key, in->dom, id);
    struct cairn_kv *kv = cairn_store_kv(in->t->j->env.store);
    int rc = cairn_kv_get(kv, key, sizeof(key), val, vlen);
    if (rc == CAIRN_ENOTFOUND) {
        CAIRN_FORWARD_IF_ERROR(ingest_put(in, p, len, again));
        rc = cairn_kv_get(kv, key, sizeof(key), val, vlen);
    }
    return rc;
}

static int ingest_chunk(struct ingest *in, const uint8_t *p, size_t len)
{
    struct jt *t = in->t;
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    const struct cairn_wk_member *set[64], *peers[64];
    uint8_t *val = NULL;
    size_t vlen = 0;
    CAIRN_FORWARD_IF_ERROR(ingest_put(in, p, len, id));
    if (in->nids < RESULT_IDS)
        cairn_hex_encode(in->ids[in->nids++], id, CAIRN_CHUNK_ID_BYTES);
    in->chunks++;
    in->done_bytes += len;
    size_t k = cairn_wk_members_place(in->ms, in->r, in->dom, id, set);
    if (k < in->r)
        return cairn_err_set(CAIRN_EUNAVAILABLE,
                             "ingest needs %u live workers for %u replicas; membership epoch %llu has %zu", in->r,
                             in->r, (unsigned long long)in->ms->epoch, in->ms->nlive);
    size_t np = 0;
    bool mine = false;
    for (size_t i = 0; i < k; i++) {
        if (!strcmp(set[i]->id, t->j->env.worker_id))
            mine = true;
        else
            peers[np++] = set[i];
    }
    if (np > 0) {
        CAIRN_FORWARD_IF_ERROR(ingest_value(in, p, len, id, &val, &vlen));
        CAIRN_FORWARD_IF_ERROR(cairn_wk_repl_push(t->repl, peers, np, in->dom, id, val, vlen, cairn_kv_free, !mine));
        CAIRN_FORWARD_IF_ERROR(cairn_wk_repl_pump(t->repl, 0));
        while (cairn_wk_repl_pending_bytes(t->repl) > PENDING_BYTES) {
            CAIRN_FORWARD_IF_ERROR(ingest_tick(in, "ingest"));
            CAIRN_FORWARD_IF_ERROR(cairn_wk_repl_pump(t->repl, 100));
        }
    }
    return ingest_tick(in, "ingest");
}

static int run_ingest(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    struct cairn_wk_jobs *j = t->j;
    uint64_t bytes = 0, seed = 0;
    const struct cairn_mval *bv = cairn_wk__param(jb, "bytes"), *sv = cairn_wk__param(jb, "seed");
    if (!bv || cairn_mval_u64(bv, &bytes) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "ingest: params.bytes must be a whole number of bytes");
    if (bytes > CAIRN_WK_INGEST_MAX)
        return cairn_err_set(CAIRN_ETOOBIG, "ingest: params.bytes is %llu, at most %llu",
                             (unsigned long long)bytes, (unsigned long long)CAIRN_WK_INGEST_MAX);
    if (sv && cairn_mval_u64(sv, &seed) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "ingest: params.seed must be a whole number");
    const char *app = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_app(jb, &app));

    struct ingest *in = cairn_calloc(1, sizeof(*in));
    uint8_t *buf = cairn_malloc(GEN_BUF + CAIRN_CHUNK_MAX);
    int rc = in && buf ? CAIRN_OK : cairn_err_set(CAIRN_ENOMEM, "out of memory for ingest");
    if (rc != CAIRN_OK)
        goto out;
    in->t = t;
    in->jb = jb;
    in->total = bytes;
    in->last_progress = in->last_members = now_ns();
    rc = cairn_wk__domain_of(j, app, &in->d);
    if (rc != CAIRN_OK)
        goto out;
    in->dom = cairn_domain_id(in->d);
    in->r = cairn_wk_view_replicas(j->env.view);
    in->ms = cairn_wk_view_get(j->env.view);
    if (!in->ms || in->ms->nlive < in->r) {
        rc = cairn_err_set(CAIRN_EUNAVAILABLE,
                           "ingest needs %u live workers for %u replicas; %s has %zu", in->r, in->r,
                           in->ms ? "the membership" : "no membership received yet:", in->ms ? in->ms->nlive : 0);
        goto out;
    }
    if ((rc = cairn_wk__codec(t)) != CAIRN_OK || (rc = cairn_wk__repl(t)) != CAIRN_OK)
        goto out;
    cairn_wk_repl_begin(t->repl, ingest_replicated, in);
    cairn_wk_repl_check_members(t->repl, in->ms); /* nothing pending yet: only drops stale connections */

    struct cairn_wk_gen g;
    cairn_wk_gen_init(&g, seed);
    uint64_t left = bytes;
    size_t have = 0;
    while (rc == CAIRN_OK && (left > 0 || have > 0)) {
        size_t want = (size_t)CAIRN_MIN((uint64_t)(GEN_BUF + CAIRN_CHUNK_MAX - have), left);
        cairn_wk_gen_fill(&g, buf + have, want);
        have += want;
        left -= want;
        size_t off = 0;
        while (rc == CAIRN_OK) {
            size_t cut = cairn_chunker_cut(buf + off, have - off, left == 0);
            if (cut == 0)
                break;
            rc = ingest_chunk(in, buf + off, cut);
            off += cut;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
        if (left == 0 && have > 0 && rc == CAIRN_OK)
            rc = cairn_err_set(CAIRN_EINTERNAL, "ingest: %zu bytes left unchunked", have);
    }
    while (rc == CAIRN_OK && cairn_wk_repl_pending(t->repl) > 0) {
        rc = ingest_tick(in, "replicate");
        if (rc == CAIRN_OK)
            rc = cairn_wk_repl_pump(t->repl, 100);
    }
    if (rc == CAIRN_OK)
        rc = cairn_store_sync(j->env.store);
    if (rc != CAIRN_OK)
        goto out;

    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_u64(res, r, "chunks", in->chunks);
    cairn_mval_put_u64(res, r, "bytes", bytes);
    struct cairn_mval *ids = cairn_mval_put_array(res, r, "ids");
    for (size_t i = 0; i < in->nids; i++)
        cairn_mval_push_str(res, ids, in->ids[i]);
    char dhex[2 * CAIRN_DOMAIN_ID_BYTES + 1];
    cairn_hex_encode(dhex, in->dom, CAIRN_DOMAIN_ID_BYTES);
    cairn_mval_put_str(res, r, "domain", dhex);
out:
    if (t->repl)
        cairn_wk_repl_begin(t->repl, NULL, NULL); /* drop what is still pending (after a failure) */
    if (in)
        cairn_wk_members_unref(&in->ms);
    cairn_free(in);
    cairn_free(buf);
    return rc;
}

/* ---- the job threads ---- */

static void job_free(struct job **jbp)
{
    if (!jbp || !*jbp)
        return;
    cairn_domain_destroy(&(*jbp)->csek);
    cairn_msg_destroy(&(*jbp)->msg); /* wipes the SECRET dek */
    cairn_free(*jbp);
    *jbp = NULL;
}

static int run_kind(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    static const struct {
        const char *kind;
        int (*fn)(struct jt *, const struct job *, struct cairn_msg *);
    } kinds[] = {
        {"noop", run_noop},
        {"ingest", run_ingest},
        {"chunk-has", run_chunk_has},
        {"image-import", cairn_wk__run_image_import},
        {"sandbox-create", cairn_wk__run_sandbox_create},
        {"sandbox-exec", cairn_wk__run_sandbox_exec},
        {"sandbox-terminate", cairn_wk__run_sandbox_terminate},
        {"snapshot-fs", cairn_wk__run_snapshot_fs},
        {"sandbox-mount", cairn_wk__run_sandbox_mount},
        {"sandbox-unmount", cairn_wk__run_sandbox_unmount},
        {"snapshot-dir", cairn_wk__run_snapshot_dir},
        {"delete-chunks", cairn_wk__run_delete_chunks},
        {"sandbox-snapshot", cairn_wk__run_sandbox_snapshot},
        {"sandbox-restore", cairn_wk__run_sandbox_restore},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(kinds); i++)
        if (!strcmp(jb->kind, kinds[i].kind))
            return kinds[i].fn(t, jb, res);
    return cairn_err_set(CAIRN_EUNSUPPORTED, "unknown job kind '%.32s'", jb->kind);
}

static void run_job(struct jt *t, struct job *jb)
{
    struct cairn_msg *res = cairn_msg_new(CAIRN_MSG_JOB_RESULT);
    uint64_t t0 = now_ns();
    cairn_err_clear();
    t->refs_seq = 0;
    int rc = res ? job_csek(jb) : cairn_err_set(CAIRN_ENOMEM, "out of memory for the result of job '%s'", jb->id);
    if (rc == CAIRN_OK)
        rc = run_kind(t, jb, res);
    cairn_domain_destroy(&jb->csek); /* the job's key lives no longer than the job */
    if (rc == CAIRN_OK && cairn_msg_build_error(res) != CAIRN_OK)
        rc = cairn_msg_build_error(res);
    if (rc == CAIRN_ECANCELED && atomic_load(t->j->env.abandon)) {
        cairn_info("job '%s' (%s) abandoned at shutdown", jb->id, jb->kind);
        cairn_msg_destroy(&res);
        return;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    if (rc != CAIRN_OK) {
        /* a fresh message: the failed one may hold a partial result or a builder error */
        char msg[CAIRN_PROTO_MAX_TEXT + 1];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        cairn_msg_destroy(&res);
        res = cairn_msg_new(CAIRN_MSG_JOB_RESULT);
        if (!res) {
            cairn_error("job '%s': out of memory for its result", jb->id);
            return;
        }
        cairn_msg_set_str(res, "err_msg", msg);
        cairn_info("job '%s' (%s) failed after %.3f s: %s: %s", jb->id, jb->kind, secs, cairn_err_name(rc), msg);
    } else {
        cairn_info("job '%s' (%s) succeeded in %.3f s", jb->id, jb->kind, secs);
    }
    cairn_msg_set_str(res, "job", jb->id);
    cairn_msg_set_u64(res, "err_code", (uint64_t)rc);
    pipe_send(t, res);
    cairn_msg_destroy(&res);
}

static void *job_thread(void *arg)
{
    const struct thr *th = arg;
    struct jt t = {.j = th->j, .index = th->index};
    struct cairn_wk_jobs *j = t.j;
    unsigned c = th->cls;
    pthread_setname_np(pthread_self(), c == JOB_CLASS_EXEC ? "cairn-exec" : "cairn-job");
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (!j->head[c] && !j->stop)
            pthread_cond_wait(&j->cv[c], &j->mu);
        if (j->stop) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        struct job *jb = j->head[c];
        j->head[c] = jb->next;
        if (!j->head[c])
            j->tail[c] = NULL;
        j->queued[c]--;
        j->running[c]++;
        pthread_mutex_unlock(&j->mu);

        run_job(&t, jb);
        job_free(&jb);

        pthread_mutex_lock(&j->mu);
        j->running[c]--;
        pthread_mutex_unlock(&j->mu);
    }
    cairn_wk_repl_destroy(&t.repl);
    cairn_wk_fetch_destroy(&t.fetch);
    cairn_sock_destroy(&t.coord);
    cairn_sock_destroy(&t.pipe);
    cairn_codec_destroy(&t.codec);
    return NULL;
}

/* Start thread number `started` of class cls (caller holds mu, or is the only user yet). */
static int thread_start(struct cairn_wk_jobs *j, unsigned cls, unsigned index)
{
    struct thr *th = &j->thr[j->started];
    *th = (struct thr){.j = j, .cls = cls, .index = index};
    int e = pthread_create(&j->threads[j->started], NULL, job_thread, th);
    if (e != 0)
        return cairn_err_set_errno(CAIRN_EIO, e, "start %s thread %u", cls == JOB_CLASS_EXEC ? "exec" : "job",
                                   index);
    j->started++;
    return CAIRN_OK;
}

int cairn_wk_jobs_new(struct cairn_wk_jobs **out, const struct cairn_wk_jobs_env *env, unsigned threads,
                      unsigned queue)
{
    *out = NULL;
    unsigned n = threads ? threads : 1;
    struct cairn_wk_jobs *j = cairn_calloc(1, sizeof(*j));
    if (!j || !(j->threads = cairn_calloc(n + EXEC_THREADS, sizeof(*j->threads))) ||
        !(j->thr = cairn_calloc(n + EXEC_THREADS, sizeof(*j->thr)))) {
        if (j)
            cairn_free(j->threads);
        cairn_free(j);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the job threads");
    }
    j->env = *env;
    j->nthreads = n;
    j->queue_max = queue;
    pthread_mutex_init(&j->mu, NULL);
    for (unsigned c = 0; c < JOB_CLASSES; c++)
        pthread_cond_init(&j->cv[c], NULL);
    pthread_mutex_init(&j->dom_mu, NULL);
    int rc = CAIRN_OK;
    for (unsigned i = 0; i < n && rc == CAIRN_OK; i++)
        rc = thread_start(j, JOB_CLASS_GENERAL, i);
    if (rc != CAIRN_OK) {
        cairn_wk_jobs_destroy(&j);
        return rc;
    }
    *out = j;
    return CAIRN_OK;
}

int cairn_wk_jobs_submit(struct cairn_wk_jobs *j, struct cairn_msg **dispatch)
{
    struct job *jb = cairn_calloc(1, sizeof(*jb));
    if (!jb)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory accepting a job");
    struct cairn_msg *m = *dispatch;
    uint64_t dl = 0;
    if (cairn_msg_get_str(m, "job", &jb->id, NULL) != CAIRN_OK ||
        cairn_msg_get_str(m, "kind", &jb->kind, NULL) != CAIRN_OK) {
        cairn_free(jb);
        return cairn_err_set(CAIRN_EPROTO, "job.dispatch without job or kind");
    }
    if (cairn_msg_opt_u64(m, "deadline_ms", 0, &dl) == CAIRN_OK && dl > 0) {
        jb->deadline_ms = dl;
        jb->deadline_ns = now_ns() + CAIRN_MIN(dl, 365ull * 86400000ull) * 1000000ull;
    }
    unsigned c = !strcmp(jb->kind, "sandbox-exec") ? JOB_CLASS_EXEC : JOB_CLASS_GENERAL;
    jb->cls = c;
    int rc = CAIRN_OK;
    pthread_mutex_lock(&j->mu);
    unsigned busy = j->queued[c] + j->running[c];
    if (j->stop)
        rc = cairn_err_set(CAIRN_EUNAVAILABLE, "worker '%s' is shutting down", j->env.worker_id);
    else if (c == JOB_CLASS_GENERAL && busy >= j->nthreads + j->queue_max)
        rc = cairn_err_set(CAIRN_EBUSY, "worker is busy: %u jobs accepted (%u threads, queue of %u)", busy,
                           j->nthreads, j->queue_max);
    else if (c == JOB_CLASS_EXEC && busy >= EXEC_THREADS)
        rc = cairn_err_set(CAIRN_EBUSY, "worker is busy: %u execs running (at most %u)", busy, EXEC_THREADS);
    if (rc == CAIRN_OK && c == JOB_CLASS_EXEC && busy >= j->exec_threads) {
        /* every exec thread has a job: one more */
        rc = thread_start(j, JOB_CLASS_EXEC, 1000 + j->exec_threads);
        if (rc == CAIRN_OK)
            j->exec_threads++;
    }
    if (rc == CAIRN_OK) {
        jb->msg = m;
        *dispatch = NULL;
        if (j->tail[c])
            j->tail[c]->next = jb;
        else
            j->head[c] = jb;
        j->tail[c] = jb;
        j->queued[c]++;
        pthread_cond_signal(&j->cv[c]);
    }
    pthread_mutex_unlock(&j->mu);
    if (rc != CAIRN_OK)
        cairn_free(jb);
    return rc;
}

unsigned cairn_wk_jobs_active(struct cairn_wk_jobs *j)
{
    pthread_mutex_lock(&j->mu);
    unsigned n = 0;
    for (unsigned c = 0; c < JOB_CLASSES; c++)
        n += j->queued[c] + j->running[c];
    pthread_mutex_unlock(&j->mu);
    return n;
}

void cairn_wk_jobs_destroy(struct cairn_wk_jobs **jp)
{
    if (!jp || !*jp)
        return;
    struct cairn_wk_jobs *j = *jp;
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    for (unsigned c = 0; c < JOB_CLASSES; c++)
        pthread_cond_broadcast(&j->cv[c]);
    unsigned started = j->started;
    pthread_mutex_unlock(&j->mu);
    for (unsigned i = 0; i < started; i++)
        pthread_join(j->threads[i], NULL);
    for (unsigned c = 0; c < JOB_CLASSES; c++) {
        while (j->head[c]) {
            struct job *jb = j->head[c];
            j->head[c] = jb->next;
            job_free(&jb);
        }
    }
    for (size_t i = 0; i < j->ndoms; i++) {
        cairn_free(j->doms[i].app);
        cairn_domain_destroy(&j->doms[i].d);
    }
    cairn_free(j->doms);
    pthread_mutex_destroy(&j->mu);
    for (unsigned c = 0; c < JOB_CLASSES; c++)
        pthread_cond_destroy(&j->cv[c]);
    pthread_mutex_destroy(&j->dom_mu);
    cairn_free(j->threads);
    cairn_free(j->thr);
    cairn_free(j);
    *jp = NULL;
}
