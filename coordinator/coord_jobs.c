/*
 * coord_jobs.c: the job table, its state machine, the dispatcher and the
 * long polls of job.submit / job.get.
 *
 * Job state machine (j/<id>.state; the function that performs each step)
 *
 *   submit ──> QUEUED ──dispatch──> RUNNING ──job.result ok──> SUCCEEDED
 *     │          │  ^                 │  │
 *     │          │  └─refused (EBUSY)─┘  └─job.result err / dispatch refused
 *     │          │    or send failed         / worker died / worker lost it ──> FAILED(code, msg)
 *     │          └─queue_timeout, pinned worker dead or unknown ──────────────> FAILED
 *     └─pinned to an unknown (ENOTFOUND) or dead (EUNAVAILABLE) worker ───────> FAILED
 *
 *   coord_job_on_submit       (none) -> QUEUED | FAILED
 *   job_dispatch              QUEUED -> RUNNING (reverted to QUEUED if the send fails)
 *   coord_job_on_dispatch_reply  RUNNING -> QUEUED (EBUSY, EUNAVAILABLE: back to the tail) | FAILED
 *   coord_job_on_result       RUNNING -> SUCCEEDED | FAILED
 *   coord_jobs_worker_lost    RUNNING -> FAILED(EUNAVAILABLE "worker 'w1' died (...)")
 *   coord_jobs_reconcile      RUNNING -> FAILED(EUNAVAILABLE, the worker no longer lists it)
 *   coord_jobs_tick           QUEUED -> FAILED(EUNAVAILABLE) after queue_timeout
 *   SUCCEEDED and FAILED are final: a later job.result for the job is
 *   acknowledged and ignored (workers resend results until acknowledged).
 *
 * Invariants
 *   J1. Persist before announce: a state is written to RocksDB before any
 *       message that shows it leaves (the submit reply, job.dispatch, a
 *       long-poll answer). Multi-key changes are one atomic batch.
 *   J2. Keys: every job has j/<id> and r/<app>/<req_id> -> id (idempotency:
 *       a submit with a seen req_id returns that job, never a second one).
 *       q/<seq> -> id exists exactly while the job is unfinished (QUEUED or
 *       RUNNING), so a restart finds every unfinished job by scanning q/ in
 *       submission order, without reading finished jobs.
 *   J3. Memory holds only unfinished jobs: c->jobs (by id). A QUEUED job is
 *       linked in the FIFO c->qhead..qtail; a RUNNING job in its worker's list
 *       (w->jobs), and in c->dispatches (by rid) until its job.dispatch is
 *       acknowledged. Finished jobs are read back from RocksDB on job.get.
 *   J4. queued_mono never decreases along the queue (appends and requeues go
 *       to the tail stamped "now"; a failed send leaves a job in place), so the
 *       queue timeout only looks at the head.
 *   J5. Placement: a pinned job (params "worker") runs only there; otherwise
 *       the live, routable, not backing-off worker with the fewest running
 *       jobs, ties by id (c->wlist is sorted). At most COORD_MAX_UNACKED
 *       dispatches are in flight per worker, which keeps the ROUTER's queue to
 *       it under its high-water mark.
 *   J6. A parked request (wait_ms) is in the job's waiter list and in the
 *       deadline heap; it is answered exactly once: when the job finishes, at
 *       its deadline, or at shutdown.
 *   J7. Typed jobs (enum coord_kind: image-import, sandbox-*, snapshot-fs) are
 *       created by their typed messages only (job.submit refuses their kinds),
 *       and their end changes the objects they are about in the same atomic
 *       batch as the job's own end (coord_objs_finish_prepare / _apply).
 *   J8. A sandbox-create job holds one sandbox slot of its worker while it runs
 *       (w->creating); it is placed only on a worker with a free slot
 *       (running sandboxes + creating < capacity), the least loaded by slots,
 *       ties by running jobs then id. A sandbox-create job that finds no slot
 *       does not hold up the jobs behind it. A sandbox-restore job (a clone,
 *       issue 6) holds a slot the same way (coord_kind_holds_slot).
 *   J9. A held job (coord_job_spec.held: the restore group of issue 6) is
 *       RUNNING from its creation with no worker: never queued, dispatched or
 *       reconciled against heartbeats, kept across restarts, ended only by
 *       the coordinator (coord_job_end).
 * Per-job work is O(1) hash lookups plus O(workers) for placement; the only
 * walks over jobs are the dispatcher over the queue (it stops at the first
 * unpinned job no worker can take) and the load at start-up.
 */
#include "coord.h"

#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <inttypes.h>
#include <stdio.h>

enum { JW_REQ = 1 << 0, JW_QPUT = 1 << 1, JW_QDEL = 1 << 2 };

static uint64_t mono_now(void) { return cairn_now_mono_ns(); }

enum coord_kind coord_kind_of(const char *kind)
{
    static const struct {
        const char *name;
        enum coord_kind k;
    } kinds[] = {
        {COORD_KIND_IMPORT_S, COORD_KIND_IMPORT},
        {COORD_KIND_SBX_CREATE_S, COORD_KIND_SBX_CREATE},
        {COORD_KIND_SBX_EXEC_S, COORD_KIND_SBX_EXEC},
        {COORD_KIND_SBX_TERMINATE_S, COORD_KIND_SBX_TERMINATE},
        {COORD_KIND_SNAPSHOT_FS_S, COORD_KIND_SNAPSHOT_FS},
        {COORD_KIND_SBX_MOUNT_S, COORD_KIND_SBX_MOUNT},
        {COORD_KIND_SBX_UNMOUNT_S, COORD_KIND_SBX_UNMOUNT},
        {COORD_KIND_SNAPSHOT_DIR_S, COORD_KIND_SNAPSHOT_DIR},
        {COORD_KIND_DELETE_CHUNKS_S, COORD_KIND_DELETE_CHUNKS},
        {COORD_KIND_SBX_SNAPSHOT_S, COORD_KIND_SBX_SNAPSHOT},
        {COORD_KIND_SBX_RESTORE_S, COORD_KIND_SBX_RESTORE},
        {COORD_KIND_RESTORE_S, COORD_KIND_RESTORE},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(kinds); i++)
        if (!strcmp(kind, kinds[i].name))
            return kinds[i].k;
    return COORD_KIND_OTHER;
}

void coord_batch_reset(struct coord *c)
{
    cairn_kv_batch_destroy(&c->batch);
    if (cairn_kv_batch_new(&c->batch) != CAIRN_OK)
        cairn_error("out of memory for a write batch");
}

static void job_free(struct coord_job *j)
{
    if (!j)
        return;
    cairn_secret_destroy(&j->dek); /* issue 5: a CSEK job's DEK lives exactly as long as the job */
    coord_job_rec_release(&j->rec);
    cairn_free(j);
}

/* ---- lists ------------------------------------------------------------------------------------- */

static void q_append(struct coord *c, struct coord_job *j, uint64_t now)
{
    j->qprev = c->qtail;
    j->qnext = NULL;
    if (c->qtail)
        c->qtail->qnext = j;
    else
        c->qhead = j;
    c->qtail = j;
    j->queued = true;
    j->queued_mono = now;
    c->qlen++;
}

static void q_unlink(struct coord *c, struct coord_job *j)
{
    if (!j->queued)
        return;
    if (j->qprev)
        j->qprev->qnext = j->qnext;
    else
        c->qhead = j->qnext;
    if (j->qnext)
        j->qnext->qprev = j->qprev;
    else
        c->qtail = j->qprev;
    j->qprev = j->qnext = NULL;
    j->queued = false;
    c->qlen--;
}

static void w_link(struct coord_worker *w, struct coord_job *j)
{
    j->w = w;
    j->wprev = NULL;
    j->wnext = w->jobs;
    if (w->jobs)
        w->jobs->wprev = j;
    w->jobs = j;
    w->running++;
    if (coord_kind_holds_slot(j->kind_id))
        w->creating++;
}

/* Unlink from its worker; drops an unacknowledged dispatch too. */
static void w_unlink(struct coord *c, struct coord_job *j)
{
    struct coord_worker *w = j->w;
    if (!w)
        return;
    if (j->wprev)
        j->wprev->wnext = j->wnext;
    else
        w->jobs = j->wnext;
    if (j->wnext)
        j->wnext->wprev = j->wprev;
    j->wprev = j->wnext = NULL;
    j->w = NULL;
    w->running--;
    if (coord_kind_holds_slot(j->kind_id))
        w->creating--;
    if (j->dispatch_rid) {
        coord_map_del(&c->dispatches, &j->rid_key, sizeof(j->rid_key));
        j->dispatch_rid = 0;
        w->unacked--;
    }
}

/* ---- waiters (J6) ------------------------------------------------------------------------------ */

static void heap_swap(struct coord *c, size_t a, size_t b)
{
    struct coord_waiter *t = c->heap[a];
    c->heap[a] = c->heap[b];
    c->heap[b] = t;
    c->heap[a]->hidx = a;
    c->heap[b]->hidx = b;
}

static void heap_up(struct coord *c, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c->heap[p]->deadline_mono <= c->heap[i]->deadline_mono)
            break;
        heap_swap(c, i, p);
        i = p;
    }
}

static void heap_down(struct coord *c, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->nwaiters && c->heap[l]->deadline_mono < c->heap[m]->deadline_mono)
            m = l;
        if (r < c->nwaiters && c->heap[r]->deadline_mono < c->heap[m]->deadline_mono)
            m = r;
        if (m == i)
            return;
        heap_swap(c, i, m);
        i = m;
    }
}

static void heap_remove(struct coord *c, struct coord_waiter *w)
{
    size_t i = w->hidx, last = --c->nwaiters;
    if (i != last) {
        c->heap[i] = c->heap[last];
        c->heap[i]->hidx = i;
        heap_up(c, i);
        heap_down(c, c->heap[i]->hidx);
    }
    c->heap[last] = NULL;
}

/* ---- replies ----------------------------------------------------------------------------------- */

/* A u64 of a job's stored params (0 when absent). */
static uint64_t params_u64(const struct coord_job_rec *rec, const char *key)
{
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *p = NULL;
    uint64_t v = 0;
    if (rec->params && coord_value_unpack(rec->params, rec->params_len, "params", &holder, &p) == CAIRN_OK)
        cairn_mval_u64(cairn_mval_get(p, key), &v);
    cairn_msg_destroy(&holder);
    return v;
}

/*
 * The job fields of a reply (plus, for image.import, `received`). result: the
 * succeeded job's result as a wire value when the caller has it at hand (else
 * it is unpacked from the record).
 */
static int fill_job(struct cairn_msg *r, const struct coord_job_rec *rec, const struct coord_job *j,
                    const struct cairn_mval *result)
{
    if (cairn_msg_type(r) == CAIRN_MSG_IMAGE_IMPORT) /* the upload is complete once it has a job */
        cairn_msg_set_u64(r, "received", params_u64(rec, "size"));
    cairn_msg_set_str(r, "job", rec->id);
    cairn_msg_set_str(r, "kind", rec->kind);
    cairn_msg_set_str(r, "state", coord_job_state_name(rec->state));
    if (rec->state == COORD_JOB_FAILED) {
        cairn_msg_set_u64(r, "err_code", rec->err_code);
        const char *msg = rec->err_msg ? rec->err_msg : cairn_strerror((int)rec->err_code);
        cairn_msg_set_strn(r, "err_msg", msg, strnlen(msg, CAIRN_PROTO_MAX_TEXT));
    }
    if (rec->worker[0])
        cairn_msg_set_str(r, "worker", rec->worker);
    if (j && j->has_progress) {
        cairn_msg_set_u64(r, "done", j->done);
        if (j->has_total)
            cairn_msg_set_u64(r, "total", j->total);
    }
    if (rec->state == COORD_JOB_SUCCEEDED) {
        if (result) {
            cairn_msg_set_value(r, "result", result);
        } else if (rec->result && rec->result_len) {
            char what[64];
            snprintf(what, sizeof(what), "result of job '%s'", rec->id);
            CAIRN_FORWARD_IF_ERROR(coord_value_set(r, "result", rec->result, rec->result_len, what));
        }
    }
    return cairn_msg_build_error(r);
}

static void reply_job(struct coord *c, const struct cairn_msg *req, const struct coord_job_rec *rec,
                      const struct coord_job *j, const struct cairn_mval *result)
{
    struct cairn_msg *r = cairn_msg_reply(req, CAIRN_OK, NULL);
    if (!r)
        return;
    int rc = fill_job(r, rec, j, result);
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&r);
        coord_reply_error(c, c->csock, req, rc, "%s", cairn_err_msg());
        return;
    }
    coord_send(c, c->csock, &r);
}

static void waiter_answer(struct coord *c, struct coord_waiter *w, const struct cairn_mval *result)
{
    struct coord_job *j = w->job;
    reply_job(c, w->req, &j->rec, j, result);
    heap_remove(c, w);
    if (w->prev)
        w->prev->next = w->next;
    else
        j->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    cairn_msg_destroy(&w->req);
    cairn_free(w);
}

/* Reply now, or park the request until the job finishes or wait_ms passes. */
static void answer_or_park(struct coord *c, struct cairn_msg **mp, struct coord_job *j, uint64_t wait_ms)
{
    if (!wait_ms || coord_job_state_final(j->rec.state) || c->nwaiters >= COORD_MAX_WAITERS) {
        reply_job(c, *mp, &j->rec, j, NULL);
        return;
    }
    struct coord_waiter *w = cairn_calloc(1, sizeof(*w));
    if (!w || cairn_array_grow((void **)&c->heap, &c->heapcap, c->nwaiters + 1, sizeof(*c->heap)) != CAIRN_OK) {
        cairn_free(w);
        reply_job(c, *mp, &j->rec, j, NULL);
        return;
    }
    w->req = *mp;
    *mp = NULL;
    w->job = j;
    w->deadline_mono = mono_now() + wait_ms * 1000000ull;
    w->next = j->waiters;
    if (j->waiters)
        j->waiters->prev = w;
    j->waiters = w;
    w->hidx = c->nwaiters;
    c->heap[c->nwaiters++] = w;
    heap_up(c, w->hidx);
}

/* A job that is not in memory (finished): read it back. */
static void answer_stored(struct coord *c, const struct cairn_msg *req, const char *id, const char *app,
                          const char *kind)
{
    struct coord_job_rec rec;
    int rc = coord_meta_get_job(c->kv, id, &rec);
    if (rc == CAIRN_OK && strcmp(rec.app, app) != 0)
        rc = cairn_err_set(CAIRN_ENOTFOUND, "job '%s' not found", id);
    if (rc == CAIRN_OK && kind && strcmp(rec.kind, kind) != 0)
        rc = cairn_err_set(CAIRN_EEXIST, "req_id '%s' was already used for a job of kind '%s'", rec.req_id,
                           rec.kind);
    if (rc != CAIRN_OK)
        coord_reply_error(c, c->csock, req, rc, "%s", cairn_err_msg());
    else
        reply_job(c, req, &rec, NULL, NULL);
    coord_job_rec_release(&rec);
}

/* ---- persistence (J1, J2) ---------------------------------------------------------------------- */

static int job_write(struct coord *c, const struct coord_job_rec *rec, unsigned flags, uint64_t old_seq)
{
    char key[COORD_KEY_MAX];
    struct cairn_buf idv;
    cairn_buf_init(&idv, 64);
    int rc = coord_meta_batch_job(c->batch, rec);
    if (rc == CAIRN_OK && (flags & (JW_REQ | JW_QPUT)))
        rc = coord_str_encode(rec->id, &idv);
    if (rc == CAIRN_OK && (flags & JW_REQ)) {
        size_t kl = coord_key_req(key, rec->app, rec->req_id);
        cairn_kv_batch_put(c->batch, key, kl, idv.data, idv.len);
    }
    if (rc == CAIRN_OK && (flags & JW_QDEL)) {
        size_t kl = coord_key_queue(key, old_seq);
        cairn_kv_batch_delete(c->batch, key, kl);
    }
    if (rc == CAIRN_OK && (flags & JW_QPUT)) {
        size_t kl = coord_key_queue(key, rec->seq);
        cairn_kv_batch_put(c->batch, key, kl, idv.data, idv.len);
    }
    cairn_buf_release(&idv);
    if (rc == CAIRN_OK)
        return cairn_kv_batch_commit(c->kv, c->batch);
    /* half-built batch: start a fresh one */
    cairn_kv_batch_destroy(&c->batch);
    if (cairn_kv_batch_new(&c->batch) != CAIRN_OK)
        cairn_error("out of memory for a write batch");
    return rc;
}

/*
 * RUNNING/QUEUED -> SUCCEEDED/FAILED: persist (dropping q/), detach, answer the
 * waiters, forget. With force, a failed write still finishes the job in memory
 * (used where there is nobody to retry: deaths, timeouts).
 */
static int job_finish(struct coord *c, struct coord_job *j, enum coord_job_state state, uint32_t code,
                      const char *msg, const struct cairn_mval *result, bool force)
{
    /* J7: what the end does to its objects, staged in c->batch for the write below */
    struct coord_finish f;
    memset(&f, 0, sizeof(f));
    f.state = state;
    f.code = code;
    f.why = msg;
    f.result = result;
    if (coord_objs_finish_prepare(c, j, &f) != CAIRN_OK) {
        int prc = cairn_err_code();
        cairn_error("job '%s': %s", j->rec.id, cairn_err_msg());
        coord_batch_reset(c);
        coord_objs_finish_apply(c, j, &f, false);
        cairn_msg_destroy(&f.holder);
        if (!force)
            return prc ? prc : CAIRN_EINTERNAL;
        memset(&f, 0, sizeof(f));
        f.state = state;
        f.code = code;
        f.result = result;
    }
    state = f.state;
    code = f.code;
    if (f.has_msg)
        msg = f.msg;
    result = f.result;

    struct coord_job_rec next = j->rec;
    next.params = next.result = NULL;
    next.err_msg = NULL;
    next.params_len = next.result_len = 0;
    next.state = state;
    next.updated_ns = cairn_clock_now_ns(&c->clock);
    next.err_code = state == COORD_JOB_FAILED ? code : 0;
    int rc = CAIRN_OK;
    if (state == COORD_JOB_FAILED && msg) {
        next.err_msg = cairn_strndup(msg, strnlen(msg, CAIRN_PROTO_MAX_TEXT));
        if (!next.err_msg)
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory finishing job '%s'", j->rec.id);
    }
    if (rc == CAIRN_OK && state == COORD_JOB_SUCCEEDED && result && cairn_mval_len(result) > 0) {
        struct cairn_buf b;
        cairn_buf_init(&b, COORD_RECORD_MAX);
        rc = coord_value_pack(result, &b);
        if (rc == CAIRN_OK)
            next.result = cairn_buf_detach(&b, &next.result_len);
        cairn_buf_release(&b);
    }
    /* the stored record keeps its params */
    next.params = j->rec.params;
    next.params_len = j->rec.params_len;
    if (rc == CAIRN_OK)
        rc = job_write(c, &next, JW_QDEL, j->rec.seq);
    else
        coord_batch_reset(c);
    next.params = NULL;
    next.params_len = 0;
    if (rc != CAIRN_OK) {
        cairn_error("persist the end of job '%s': %s", j->rec.id, cairn_err_msg());
        if (!force) {
            coord_job_rec_release(&next);
            coord_objs_finish_apply(c, j, &f, false);
            cairn_msg_destroy(&f.holder);
            return rc;
        }
    }
    next.params = j->rec.params;
    next.params_len = j->rec.params_len;
    j->rec.params = NULL;
    coord_job_rec_release(&j->rec);
    j->rec = next;

    q_unlink(c, j);
    w_unlink(c, j);
    coord_objs_finish_apply(c, j, &f, true);
    if (state == COORD_JOB_SUCCEEDED)
        c->stats.jobs_succeeded++;
    else
        c->stats.jobs_failed++;
    cairn_debug("job '%s' %s%s%s", j->rec.id, coord_job_state_name(state), msg ? ": " : "", msg ? msg : "");
    while (j->waiters)
        waiter_answer(c, j->waiters, result);
    coord_map_sdel(&c->jobs, j->rec.id);
    job_free(j);
    cairn_msg_destroy(&f.holder);
    return rc;
}

/* ---- dispatch (J5) ----------------------------------------------------------------------------- */

static bool worker_available(const struct coord_worker *w, uint64_t now)
{
    return w->rec.alive && w->routable && w->busy_until_mono <= now && w->unacked < COORD_MAX_UNACKED;
}

static bool worker_has_slot(const struct coord_worker *w)
{
    return coord_worker_sbx_load(w) < w->rec.capacity;
}

/* J5, J8: the least loaded available worker; for a sandbox, by slots among those with one free. */
static struct coord_worker *pick_worker(struct coord *c, uint64_t now, bool sandbox)
{
    struct coord_worker *best = NULL;
    for (size_t i = 0; i < c->nworkers; i++) {
        struct coord_worker *w = c->wlist[i];
        if (!worker_available(w, now))
            continue;
        if (!sandbox) {
            if (!best || w->running < best->running)
                best = w;
            continue;
        }
        if (!worker_has_slot(w))
            continue;
        size_t load = coord_worker_sbx_load(w);
        if (!best || load < coord_worker_sbx_load(best) ||
            (load == coord_worker_sbx_load(best) && w->running < best->running))
            best = w;
    }
    return best;
}

/* QUEUED -> RUNNING on w; on a failed send back to QUEUED in place, w backs off. */
static int job_dispatch(struct coord *c, struct coord_job *j, struct coord_worker *w, uint64_t now)
{
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_DISPATCH);
    if (!m)
        return CAIRN_ENOMEM;
    char what[64];
    snprintf(what, sizeof(what), "params of job '%s'", j->rec.id);
    cairn_msg_set_str(m, "job", j->rec.id);
    cairn_msg_set_str(m, "kind", j->rec.kind);
    cairn_msg_set_str(m, "app", j->rec.app);
    cairn_msg_set_app(m, j->rec.app); /* also in the envelope: the worker reads it there */
    int rc = coord_value_set(m, "params", j->rec.params, j->rec.params_len, what);
    /* issue 5: a CSEK job carries its DEK in memory only; without it (a restart) it cannot run */
    bool csek = false;
    if (rc == CAIRN_OK)
        cairn_mval_bool(cairn_mval_get(cairn_msg_get(m, "params"), "csek"), &csek);
    if (rc == CAIRN_OK && csek && !(j->has_dek && j->dek)) {
        cairn_msg_destroy(&m);
        job_finish(c, j, COORD_JOB_FAILED, CAIRN_EKEY,
                   "the coordinator restarted before this job ran; the key is not kept anywhere: retry with the key",
                   NULL, true);
        return CAIRN_EKEY;
    }
    if (rc == CAIRN_OK && j->has_dek && j->dek) {
        cairn_msg_set_bin(m, "domain", j->dek_domain, sizeof(j->dek_domain));
        cairn_msg_set_bin(m, "dek", j->dek->bytes, j->dek->len);
    }
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&m);
        if (rc == CAIRN_ECORRUPT) {
            char why[CAIRN_PROTO_MAX_TEXT + 1];
            snprintf(why, sizeof(why), "%s", cairn_err_msg());
            job_finish(c, j, COORD_JOB_FAILED, CAIRN_ECORRUPT, why, NULL, true);
        }
        return rc;
    }
    char old_worker[sizeof(j->rec.worker)];
    memcpy(old_worker, j->rec.worker, sizeof(old_worker));
    int64_t old_updated = j->rec.updated_ns;
    j->rec.state = COORD_JOB_RUNNING;
    memcpy(j->rec.worker, w->rec.id, sizeof(j->rec.worker));
    j->rec.updated_ns = cairn_clock_now_ns(&c->clock);
    rc = job_write(c, &j->rec, 0, 0);
    if (rc == CAIRN_OK) {
        uint64_t rid = ++c->next_rid;
        cairn_msg_set_rid(m, rid);
        cairn_msg_set_route(m, &w->route);
        rc = cairn_sock_send(c->wsock, m);
        if (rc == CAIRN_OK) {
            q_unlink(c, j);
            w_link(w, j);
            j->rid_key = rid;
            if (coord_map_put(&c->dispatches, &j->rid_key, sizeof(j->rid_key), j) == CAIRN_OK) {
                j->dispatch_rid = rid;
                w->unacked++;
            }
            j->dispatched_mono = now;
            j->missing = 0;
            c->stats.dispatches++;
            cairn_msg_destroy(&m);
            cairn_debug("job '%s' dispatched to worker '%s'", j->rec.id, w->rec.id);
            return CAIRN_OK;
        }
        cairn_debug("dispatch job '%s' to worker '%s': %s", j->rec.id, w->rec.id, cairn_err_msg());
        if (rc == CAIRN_ENOTFOUND)
            w->routable = false; /* its connection is gone; its next heartbeat brings the new route */
        w->busy_until_mono = now + COORD_BUSY_BACKOFF_MS * 1000000ull;
    }
    /* back to QUEUED, in place (J4) */
    j->rec.state = COORD_JOB_QUEUED;
    memcpy(j->rec.worker, old_worker, sizeof(old_worker));
    j->rec.updated_ns = old_updated;
    int wrc = job_write(c, &j->rec, 0, 0);
    if (wrc != CAIRN_OK)
        cairn_error("persist job '%s' back to queued: %s", j->rec.id, cairn_err_msg());
    cairn_msg_destroy(&m);
    return rc;
}

void coord_jobs_kick(struct coord *c)
{
    c->kick_pending = false;
    uint64_t now = mono_now();
    struct coord_job *j = c->qhead;
    bool no_slot = false; /* J8: no worker has a free sandbox slot right now */
    while (j) {
        struct coord_job *next = j->qnext;
        bool sandbox = coord_kind_holds_slot(j->kind_id);
        if (c->gc_deletes > 0 && coord_job_is_write(j)) { /* issue 5: the GC's grace barrier */
            j = next;
            continue;
        }
        if (j->pin[0]) {
            struct coord_worker *w = coord_worker_find(c, j->pin);
            char why[160];
            if (!w) {
                snprintf(why, sizeof(why), "unknown worker '%s'", j->pin);
                job_finish(c, j, COORD_JOB_FAILED, CAIRN_ENOTFOUND, why, NULL, true);
            } else if (!w->rec.alive) {
                snprintf(why, sizeof(why), "worker '%s' is dead", j->pin);
                job_finish(c, j, COORD_JOB_FAILED, CAIRN_EUNAVAILABLE, why, NULL, true);
            } else if (worker_available(w, now) && (!sandbox || worker_has_slot(w))) {
                if (job_dispatch(c, j, w, now) == CAIRN_EIO)
                    return; /* the store is failing: stop here, the tick retries */
            }
        } else if (sandbox) {
            struct coord_worker *w = no_slot ? NULL : pick_worker(c, now, true);
            if (!w)
                no_slot = true; /* it waits for a slot; the jobs behind it may go */
            else if (job_dispatch(c, j, w, now) == CAIRN_EIO)
                return;
        } else {
            struct coord_worker *w = pick_worker(c, now, false);
            if (!w)
                return; /* FIFO: nothing behind this job can go either, pinned ones wait their turn */
            if (job_dispatch(c, j, w, now) == CAIRN_EIO)
                return;
        }
        j = next;
    }
}

/* ---- client requests --------------------------------------------------------------------------- */

static bool kind_valid(const char *s, size_t len)
{
    if (len < 1 || len > 32)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

void coord_job_new_id(struct coord *c, char out[COORD_JOB_ID_LEN + 1])
{
    for (int tries = 0; tries < 8; tries++) {
        uint8_t rnd[8];
        cairn_random_bytes(rnd, sizeof(rnd));
        memcpy(out, "jb-", 3);
        cairn_hex_encode(out + 3, rnd, sizeof(rnd));
        char key[COORD_KEY_MAX];
        bool found = false;
        size_t kl = coord_key_job(key, out);
        if (coord_map_sget(&c->jobs, out))
            continue;
        if (cairn_kv_has(c->kv, key, kl, &found) == CAIRN_OK && !found)
            return;
    }
    /* 8 collisions of 64 random bits: the last id is as good as any, the batch write would replace nothing live */
}

struct coord_job *coord_job_find(struct coord *c, const char *id)
{
    return coord_map_sget(&c->jobs, id);
}

void coord_job_answer(struct coord *c, struct cairn_msg **mp, const char *id, const char *kind, uint64_t wait_ms)
{
    struct cairn_msg *m = *mp;
    const char *app = cairn_msg_app(m);
    struct coord_job *j = coord_map_sget(&c->jobs, id);
    if (!j) {
        answer_stored(c, m, id, app ? app : "", kind);
    } else if (!app || strcmp(j->rec.app, app) != 0) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "job '%s' not found", id);
    } else if (kind && strcmp(j->rec.kind, kind) != 0) {
        coord_reply_error(c, c->csock, m, CAIRN_EEXIST, "req_id '%s' was already used for a job of kind '%s'",
                          j->rec.req_id, j->rec.kind);
    } else {
        answer_or_park(c, mp, j, wait_ms);
    }
}

bool coord_req_answered(struct coord *c, struct cairn_msg **mp, const char *app, const char *req_id, const char *kind,
                        uint64_t wait_ms)
{
    if (!app || !req_id)
        return false;
    char jid[COORD_JOB_ID_LEN + 1];
    int rc = coord_meta_get_req(c->kv, app, req_id, jid);
    if (rc == CAIRN_OK)
        coord_job_answer(c, mp, jid, kind, wait_ms);
    else if (rc != CAIRN_ENOTFOUND)
        coord_reply_error(c, c->csock, *mp, rc, "%s", cairn_err_msg());
    return rc != CAIRN_ENOTFOUND;
}

void coord_job_fail(struct coord *c, struct coord_job *j, uint32_t code, const char *why)
{
    job_finish(c, j, COORD_JOB_FAILED, code, why, NULL, true);
    c->kick_pending = c->kick_pending || c->qlen > 0;
}

void coord_job_end(struct coord *c, struct coord_job *j, enum coord_job_state state, uint32_t code, const char *why,
                   const struct cairn_mval *result)
{
    job_finish(c, j, state, code, why, result, true);
    c->kick_pending = c->kick_pending || c->qlen > 0;
}

int coord_job_create(struct coord *c, const struct coord_job_spec *s, char id_out[COORD_JOB_ID_LEN + 1])
{
    bool final = coord_job_state_final(s->state);
    size_t kind_len = strlen(s->kind), app_len = strlen(s->app);
    size_t req_len = s->req_id ? strlen(s->req_id) : 0, pin_len = s->pin ? strlen(s->pin) : 0;
    struct coord_job *j = NULL;
    int rc = CAIRN_OK;
    if (kind_len < 1 || kind_len > 32 || app_len < 1 || app_len > COORD_ID_MAX || req_len > COORD_ID_MAX ||
        (s->req_id && !req_len) || pin_len > COORD_ID_MAX) {
        rc = cairn_err_set(CAIRN_EINVAL, "job of kind '%s': app, kind, req_id or worker out of range", s->kind);
        goto fail;
    }
    j = cairn_calloc(1, sizeof(*j));
    if (!j) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory creating a job");
        goto fail;
    }
    if (s->id)
        memcpy(j->rec.id, s->id, COORD_JOB_ID_LEN);
    else
        coord_job_new_id(c, j->rec.id);
    memcpy(j->rec.app, s->app, app_len);
    memcpy(j->rec.kind, s->kind, kind_len);
    if (s->req_id)
        memcpy(j->rec.req_id, s->req_id, req_len);
    else
        memcpy(j->rec.req_id, j->rec.id, COORD_JOB_ID_LEN);
    if (s->pin)
        memcpy(j->pin, s->pin, pin_len);
    j->kind_id = coord_kind_of(j->rec.kind);
    if (s->exec && !final) {
        j->exec = s->exec;
        coord_exec_attach(s->exec, j);
    }
    if (s->dek && *s->dek && s->dek_domain && !final) { /* issue 5: taken now, memory only */
        j->dek = *s->dek;
        *s->dek = NULL;
        memcpy(j->dek_domain, s->dek_domain, sizeof(j->dek_domain));
        j->has_dek = true;
    }
    j->rec.state = final ? s->state : s->held ? COORD_JOB_RUNNING : COORD_JOB_QUEUED;
    j->rec.seq = c->next_seq++;
    j->rec.created_ns = j->rec.updated_ns = cairn_clock_now_ns(&c->clock);
    j->rec.params = cairn_memdup(s->params ? s->params : (const uint8_t *)"\x80", s->params ? s->params_len : 1);
    j->rec.params_len = s->params ? s->params_len : 1;
    if (s->state == COORD_JOB_FAILED) {
        j->rec.err_code = s->err_code;
        j->rec.err_msg = cairn_strdup(s->err_msg ? s->err_msg : cairn_strerror((int)s->err_code));
    }
    if (!j->rec.params || (s->state == COORD_JOB_FAILED && !j->rec.err_msg)) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory creating a job");
        goto fail;
    }
    unsigned flags = (s->req_id ? JW_REQ : 0) | (final ? 0 : JW_QPUT);
    if (!final && (rc = coord_map_sput(&c->jobs, j->rec.id, j)) != CAIRN_OK)
        goto fail;
    rc = job_write(c, &j->rec, flags, 0);
    if (rc != CAIRN_OK) {
        if (!final)
            coord_map_sdel(&c->jobs, j->rec.id);
        job_free(j);
        return rc; /* job_write left the batch empty */
    }
    memcpy(id_out, j->rec.id, COORD_JOB_ID_LEN + 1);
    c->stats.jobs_submitted++;
    cairn_debug("job '%s' (%s) created for app '%s'", j->rec.id, j->rec.kind, j->rec.app);
    if (final) {
        if (s->state == COORD_JOB_SUCCEEDED)
            c->stats.jobs_succeeded++;
        else
            c->stats.jobs_failed++;
        job_free(j);
        return CAIRN_OK;
    }
    if (s->held) /* issue 6: the coordinator runs it (coord_job_end); never queued or dispatched */
        return CAIRN_OK;
    bool first = c->qhead == NULL;
    q_append(c, j, mono_now());
    /* alone in the queue: dispatch now (the reply then says running); behind others: once per drained batch */
    if (first)
        coord_jobs_kick(c);
    else
        c->kick_pending = true;
    return CAIRN_OK;
fail:
    coord_batch_reset(c);
    job_free(j);
    return rc;
}

/* The typed message that starts a job of a kind job.submit may not start. */
static const char *reserved_kind_msg(enum coord_kind k)
{
    switch (k) {
    case COORD_KIND_IMPORT: return "image.import";
    case COORD_KIND_SBX_CREATE: return "sandbox.create";
    case COORD_KIND_SBX_EXEC: return "sandbox.exec";
    case COORD_KIND_SBX_TERMINATE: return "sandbox.terminate";
    case COORD_KIND_SNAPSHOT_FS: return "sandbox.snapshot-fs";
    case COORD_KIND_SBX_MOUNT: return "sandbox.mount";
    case COORD_KIND_SBX_UNMOUNT: return "sandbox.unmount";
    case COORD_KIND_SNAPSHOT_DIR: return "sandbox.snapshot-dir";
    case COORD_KIND_DELETE_CHUNKS: return "the coordinator's garbage collection";
    case COORD_KIND_SBX_SNAPSHOT: return "sandbox.snapshot";
    case COORD_KIND_SBX_RESTORE:
    case COORD_KIND_RESTORE: return "sandbox.restore";
    case COORD_KIND_OTHER: break;
    }
    return NULL;
}

void coord_job_on_submit(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp;
    const char *app = cairn_msg_app(m), *kind = NULL, *req_id = NULL;
    size_t kind_len = 0, req_len = 0, nparams = 0;
    const struct cairn_mval *params = NULL;
    uint64_t wait_ms = 0;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    cairn_msg_get_str(m, "kind", &kind, &kind_len);
    cairn_msg_get_str(m, "req_id", &req_id, &req_len);
    cairn_msg_get_map(m, "params", &params, &nparams);
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    if (!kind || !kind_valid(kind, kind_len)) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "invalid job kind: 1..32 of a-z 0-9 . _ -");
        goto out;
    }
    if (!req_id || !params || req_len > COORD_ID_MAX || !app || strlen(app) > COORD_ID_MAX) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "job.submit needs req_id (1..64 bytes) and params");
        goto out;
    }

    if (coord_req_answered(c, mp, app, req_id, kind, wait_ms)) /* J2 */
        goto out;
    /* J7 */
    const char *typed = reserved_kind_msg(coord_kind_of(kind));
    if (typed) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "jobs of kind '%s' are started with %s, not job.submit",
                          kind, typed);
        goto out;
    }

    const struct cairn_mval *pin = cairn_mval_get(params, "worker");
    const char *pin_s = NULL;
    size_t pin_len = 0;
    char pin_buf[COORD_ID_MAX + 1] = "";
    if (pin && (cairn_mval_str(pin, &pin_s, &pin_len) != CAIRN_OK || pin_len < 1 || pin_len > COORD_ID_MAX ||
                memchr(pin_s, '\0', pin_len))) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "params.worker must be a worker id (1..64 bytes)");
        goto out;
    }
    if (pin_s)
        memcpy(pin_buf, pin_s, pin_len);
    int rc = coord_value_pack(params, &pb);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "submit job: %s", cairn_err_msg());
        goto out;
    }
    struct coord_job_spec spec = {.app = app, .kind = kind, .req_id = req_id, .params = pb.data,
                                  .params_len = pb.len, .pin = pin_s ? pin_buf : NULL,
                                  .state = COORD_JOB_QUEUED};
    /* a pin that cannot be honoured fails the job at once (it is still recorded: the req_id is spent) */
    struct coord_worker *pw = pin_s ? coord_worker_find(c, pin_buf) : NULL;
    char why[160], id[COORD_JOB_ID_LEN + 1];
    if (pin_s && (!pw || !pw->rec.alive)) {
        snprintf(why, sizeof(why), pw ? "worker '%s' is dead" : "unknown worker '%s'", pin_buf);
        spec.state = COORD_JOB_FAILED;
        spec.err_code = pw ? CAIRN_EUNAVAILABLE : CAIRN_ENOTFOUND;
        spec.err_msg = why;
    }
    rc = coord_job_create(c, &spec, id);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "submit job: %s", cairn_err_msg());
        goto out;
    }
    coord_job_answer(c, mp, id, NULL, wait_ms);
out:
    cairn_buf_release(&pb);
}

void coord_job_on_get(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp;
    const char *app = cairn_msg_app(m), *id = NULL;
    size_t len = 0;
    uint64_t wait_ms = 0;
    cairn_msg_get_str(m, "job", &id, &len);
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    if (!id || !coord_job_id_valid(id, len)) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "job '%s' not found", id ? id : "");
        return;
    }
    struct coord_job *j = coord_map_sget(&c->jobs, id);
    if (j && strcmp(j->rec.app, app) != 0) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "job '%s' not found", id);
        return;
    }
    if (j)
        answer_or_park(c, mp, j, wait_ms);
    else
        answer_stored(c, m, id, app, NULL);
}

/* ---- worker messages --------------------------------------------------------------------------- */

void coord_job_on_dispatch_reply(struct coord *c, struct cairn_msg *m)
{
    uint64_t rid = cairn_msg_rid(m);
    struct coord_job *j = coord_map_get(&c->dispatches, &rid, sizeof(rid));
    if (!j || !j->w || !coord_worker_key_ok(j->w, m)) {
        cairn_debug("ignored a job.dispatch reply for no dispatch in flight (rid %" PRIu64 ")", rid);
        return;
    }
    struct coord_worker *w = j->w;
    coord_map_del(&c->dispatches, &j->rid_key, sizeof(j->rid_key));
    j->dispatch_rid = 0;
    w->unacked--;
    int code = cairn_msg_code(m);
    c->kick_pending = c->kick_pending || c->qlen > 0;
    if (code == CAIRN_OK)
        return;
    uint64_t now = mono_now();
    if (code == CAIRN_EBUSY || code == CAIRN_EUNAVAILABLE) {
        /*
         * The job never started: RUNNING -> QUEUED at the tail, and the worker gets nothing for a while
         * (full: a moment; shutting down: until its heartbeats have had time to stop).
         */
        uint64_t backoff = code == CAIRN_EBUSY ? COORD_BUSY_BACKOFF_MS : c->cfg->heartbeat_timeout;
        w->busy_until_mono = now + backoff * 1000000ull;
        uint64_t old_seq = j->rec.seq;
        struct coord_job_rec saved = j->rec;
        j->rec.state = COORD_JOB_QUEUED;
        j->rec.worker[0] = '\0';
        j->rec.seq = c->next_seq++;
        j->rec.updated_ns = cairn_clock_now_ns(&c->clock);
        if (job_write(c, &j->rec, JW_QPUT | JW_QDEL, old_seq) != CAIRN_OK) {
            cairn_error("requeue job '%s': %s", j->rec.id, cairn_err_msg());
            memcpy(j->rec.worker, saved.worker, sizeof(j->rec.worker));
            j->rec.state = saved.state;
            j->rec.seq = saved.seq;
            j->rec.updated_ns = saved.updated_ns;
            return;
        }
        w_unlink(c, j);
        q_append(c, j, now);
        cairn_debug("worker '%s' is busy: job '%s' queued again", w->rec.id, j->rec.id);
        c->kick_pending = true;
        return;
    }
    char why[CAIRN_PROTO_MAX_TEXT + 1];
    snprintf(why, sizeof(why), "worker '%s' refused the job: %s", w->rec.id,
             cairn_msg_text(m) ? cairn_msg_text(m) : cairn_strerror(code));
    job_finish(c, j, COORD_JOB_FAILED, (uint32_t)code, why, NULL, true);
    c->kick_pending = true;
}

void coord_job_on_result(struct coord *c, struct cairn_msg *m)
{
    const char *id = NULL, *text = NULL;
    uint64_t code = 0;
    const struct cairn_mval *result = NULL;
    size_t nres = 0;
    cairn_msg_get_str(m, "job", &id, NULL);
    cairn_msg_get_u64(m, "err_code", &code);
    if (cairn_msg_get_str(m, "err_msg", &text, NULL) != CAIRN_OK)
        text = NULL;
    if (cairn_msg_get_map(m, "result", &result, &nres) != CAIRN_OK)
        result = NULL;
    struct coord_job *j = id ? coord_map_sget(&c->jobs, id) : NULL;
    if (!j) {
        cairn_debug("result of job '%s' again (already final, or unknown): acknowledged", id ? id : "");
    } else if (j->rec.state != COORD_JOB_RUNNING || !j->w || !coord_worker_key_ok(j->w, m)) {
        cairn_debug("ignored a result of job '%s' from a worker it does not run on", id);
    } else {
        int rc;
        /* a job ending frees a slot on its worker: an EBUSY back-off of that worker is over */
        j->w->busy_until_mono = 0;
        if (code == 0) {
            rc = job_finish(c, j, COORD_JOB_SUCCEEDED, 0, NULL, result, false);
        } else {
            char why[CAIRN_PROTO_MAX_TEXT + 1];
            snprintf(why, sizeof(why), "%s", text && *text ? text : cairn_strerror((int)code));
            rc = job_finish(c, j, COORD_JOB_FAILED, (uint32_t)code, why, NULL, false);
        }
        if (rc != CAIRN_OK) {
            /* not acknowledged: the worker sends it again */
            coord_reply_error(c, c->wsock, m, rc, "record the result of job '%s': %s", id, cairn_err_msg());
            return;
        }
        c->kick_pending = c->kick_pending || c->qlen > 0;
    }
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    coord_send(c, c->wsock, &r);
}

void coord_job_on_progress(struct coord *c, struct cairn_msg *m)
{
    const char *id = NULL;
    uint64_t done = 0, total = 0;
    cairn_msg_get_str(m, "job", &id, NULL);
    cairn_msg_get_u64(m, "done", &done);
    struct coord_job *j = id ? coord_map_sget(&c->jobs, id) : NULL;
    if (!j || j->rec.state != COORD_JOB_RUNNING || !j->w || !coord_worker_key_ok(j->w, m))
        return;
    j->has_progress = true;
    j->done = done;
    if (cairn_msg_get_u64(m, "total", &total) == CAIRN_OK) {
        j->has_total = true;
        j->total = total;
    }
}

void coord_jobs_worker_lost(struct coord *c, struct coord_worker *w, const char *why)
{
    while (w->jobs)
        job_finish(c, w->jobs, COORD_JOB_FAILED, CAIRN_EUNAVAILABLE, why, NULL, true);
}

void coord_jobs_reconcile(struct coord *c, struct coord_worker *w, const struct cairn_mval *listed, size_t n)
{
    if (n >= 4096) /* the list may have been cut at the model's limit: no conclusions */
        return;
    struct coord_map seen;
    coord_map_init(&seen);
    for (size_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (cairn_mval_str(cairn_mval_at(listed, i), &s, &len) == CAIRN_OK &&
            coord_map_put(&seen, s, len, (void *)s) != CAIRN_OK) {
            coord_map_release(&seen);
            return;
        }
    }
    uint64_t now = mono_now(), grace = 2 * c->cfg->heartbeat_interval * 1000000ull;
    size_t lost = 0;
    for (struct coord_job *j = w->jobs, *next; j; j = next) {
        next = j->wnext;
        if (coord_map_sget(&seen, j->rec.id)) {
            j->missing = 0;
            continue;
        }
        if (now - j->dispatched_mono <= grace)
            continue;
        if (++j->missing >= COORD_MISSING_BEATS) {
            char why[200];
            snprintf(why, sizeof(why), "worker '%s' no longer runs the job (it restarted or lost it)", w->rec.id);
            job_finish(c, j, COORD_JOB_FAILED, CAIRN_EUNAVAILABLE, why, NULL, true);
            lost++;
        }
    }
    if (lost)
        cairn_info("worker '%s' no longer runs %zu of its jobs (it restarted or lost them): failed them", w->rec.id,
                   lost);
    coord_map_release(&seen);
}

void coord_jobs_tick(struct coord *c, uint64_t now)
{
    while (c->nwaiters && c->heap[0]->deadline_mono <= now)
        waiter_answer(c, c->heap[0], NULL);
    uint64_t limit = c->cfg->queue_timeout * 1000000ull;
    while (c->qhead && now - c->qhead->queued_mono > limit) {
        char why[160];
        snprintf(why, sizeof(why),
                 c->qhead->kind_id == COORD_KIND_SBX_CREATE ? "no live worker had a free sandbox slot within %.1f s"
                                                            : "no live worker took the job within %.1f s",
                 (double)c->cfg->queue_timeout / 1000.0);
        job_finish(c, c->qhead, COORD_JOB_FAILED, CAIRN_EUNAVAILABLE, why, NULL, true);
    }
    if (c->qhead)
        coord_jobs_kick(c);
}

void coord_jobs_release_waiters(struct coord *c)
{
    while (c->nwaiters)
        waiter_answer(c, c->heap[0], NULL);
}

/* ---- start-up and teardown --------------------------------------------------------------------- */

/* Pin of a loaded job, from its stored params (validated against the wire model on the way). */
static int load_pin(struct coord_job *j)
{
    char what[64];
    snprintf(what, sizeof(what), "params of job '%s'", j->rec.id);
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *params = NULL;
    CAIRN_FORWARD_IF_ERROR(coord_value_unpack(j->rec.params, j->rec.params_len, what, &holder, &params));
    const struct cairn_mval *pin = cairn_mval_get(params, "worker");
    const char *s;
    size_t len;
    int rc = CAIRN_OK;
    if (pin) {
        if (cairn_mval_str(pin, &s, &len) == CAIRN_OK && len >= 1 && len <= COORD_ID_MAX && !memchr(s, '\0', len))
            memcpy(j->pin, s, len);
        else
            rc = cairn_err_set(CAIRN_ECORRUPT, "%s is corrupt: 'worker' is not a worker id", what);
    }
    cairn_msg_destroy(&holder);
    return rc;
}

struct load_state {
    uint64_t now, max_seq;
};

static int load_one(struct coord *c, const char *key, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                    void *arg)
{
    struct load_state *ls = arg;
    uint64_t now = ls->now, seq = 0;
    char id[COORD_JOB_ID_LEN + 1], hex[17];
    uint8_t raw[8];
    if (kl != 18)
        return cairn_err_set(CAIRN_ECORRUPT, "metadata key '%s' is not q/<16 hex>", key);
    memcpy(hex, k + 2, 16);
    hex[16] = '\0';
    if (cairn_hex_decode(raw, 8, hex) != CAIRN_OK)
        return cairn_err_set(CAIRN_ECORRUPT, "metadata key '%s' is not q/<16 hex>", key);
    for (int i = 0; i < 8; i++)
        seq = seq << 8 | raw[i];
    CAIRN_FORWARD_IF_ERROR(coord_str_decode(v, vl, key, id, COORD_JOB_ID_LEN));
    if (!coord_job_id_valid(id, strlen(id)))
        return cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' is corrupt: not a job id", key);
    if (seq + 1 > ls->max_seq)
        ls->max_seq = seq + 1;
    struct coord_job *j = cairn_calloc(1, sizeof(*j));
    if (!j)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory loading jobs");
    int rc = coord_meta_get_job(c->kv, id, &j->rec);
    if (rc == CAIRN_OK && j->rec.seq != seq)
        rc = cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' names job '%s' whose seq is %" PRIu64, key, id,
                           j->rec.seq);
    if (rc == CAIRN_OK && coord_map_sget(&c->jobs, id))
        rc = cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' names job '%s' twice", key, id);
    if (rc == CAIRN_OK && coord_job_state_final(j->rec.state)) {
        /* a stale entry (J2 says it cannot exist): drop it */
        cairn_warn("dropping queue entry '%s' of finished job '%s'", key, id);
        cairn_kv_delete(c->kv, k, kl);
        job_free(j);
        return CAIRN_OK;
    }
    if (rc != CAIRN_OK) {
        job_free(j);
        return rc;
    }
    j->kind_id = coord_kind_of(j->rec.kind);
    rc = coord_map_sput(&c->jobs, j->rec.id, j);
    if (rc != CAIRN_OK) {
        job_free(j);
        return rc;
    }
    char why[CAIRN_PROTO_MAX_TEXT + 1];
    if (load_pin(j) != CAIRN_OK) {
        snprintf(why, sizeof(why), "%s", cairn_err_msg());
        cairn_error("%s", why);
        return job_finish(c, j, COORD_JOB_FAILED, CAIRN_ECORRUPT, why, NULL, true);
    }
    if (j->rec.state == COORD_JOB_QUEUED) {
        q_append(c, j, now);
        return CAIRN_OK;
    }
    if (j->kind_id == COORD_KIND_RESTORE) /* issue 6: held by the coordinator, no worker (coord_snapshots.c) */
        return CAIRN_OK;
    struct coord_worker *w = coord_worker_find(c, j->rec.worker);
    if (!w || !w->rec.alive) {
        snprintf(why, sizeof(why), w ? "worker '%s' died (it was dead when the coordinator restarted)"
                                     : "unknown worker '%s'", j->rec.worker);
        return job_finish(c, j, COORD_JOB_FAILED, CAIRN_EUNAVAILABLE, why, NULL, true);
    }
    w_link(w, j);
    j->dispatched_mono = now;
    return CAIRN_OK;
}

int coord_jobs_load(struct coord *c)
{
    struct load_state ls = {.now = mono_now()};
    int rc = coord_load_records(c, "q/", "skipping unfinished job", load_one, &ls);
    /* sequence numbers only order q/; starting from the time in microseconds keeps them growing across restarts */
    uint64_t base = (uint64_t)(cairn_now_real_ns() / 1000);
    c->next_seq = ls.max_seq > base ? ls.max_seq : base;
    return rc;
}

void coord_jobs_free(struct coord *c)
{
    while (c->nwaiters) {
        struct coord_waiter *w = c->heap[--c->nwaiters];
        cairn_msg_destroy(&w->req);
        cairn_free(w);
    }
    CAIRN_FREE(c->heap);
    c->heapcap = 0;
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->jobs, &pos, &k, &kl, &v))
        job_free(v);
    coord_map_release(&c->jobs);
    coord_map_release(&c->dispatches);
    c->qhead = c->qtail = NULL;
    c->qlen = 0;
}
