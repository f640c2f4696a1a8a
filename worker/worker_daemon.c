/*
 * worker_daemon.c: the cairn-worker process (docs/internals/cluster.md "Worker").
 *
 * Thread model
 * - Main thread: the only user of three sockets, polled in one loop with timers:
 *     coord  DEALER to the coordinator's worker endpoint (CURVE client; routing id = worker id)
 *     peer   ROUTER for the other workers (CURVE server, ZAP domain "peers")
 *     pipe   inproc ROUTER on which the job threads hand over job.progress and job.result
 *   It registers, heartbeats, applies memberships (view + allow-list), accepts job.dispatch (hands the
 *   message to the job pool), forwards progress, sends results and resends them until acknowledged,
 *   and serves chunk.has/get/put from the store (worker_peer.c).
 * - Job threads (worker_jobs.c, job_threads of them): run the jobs. Each owns its sockets: a DEALER to
 *   `pipe` and one DEALER per peer for replication. They never touch the main thread's sockets.
 * - ZeroMQ's I/O thread and the ZAP handler thread belong to struct cairn_net.
 * - The reaper thread (opts.subreaper, the real daemon only): this process is a child subreaper
 *   (PR_SET_CHILD_SUBREAPER), so the processes runsc leaves behind (runsc-sandbox, runsc-gofer: their
 *   parent `runsc run -detach` exits) become its children instead of init's, and the reaper reaps them
 *   as soon as they exit. A runsc that waits for its sandbox to disappear (delete, kill) then returns at
 *   once instead of waiting for a slow init (terminate took 1.8 s because of that). Only zombies among
 *   the children of the main thread are reaped: orphans are re-parented to the thread group leader, and
 *   that thread spawns nothing once started (everything else is spawned, and waited for by pid, on job
 *   threads), so no one else's exit status is ever taken. A process that embeds the daemon on another
 *   thread (tests) gets no reaper.
 * Shared state and its guard: the store (RocksDB, thread-safe), the counters (atomics), the
 * membership view (mutex in worker_members.c), the job queue and domain cache (mutexes in
 * worker_jobs.c), the sandbox runtime and the layer cache (thread-safe, sandbox.h, worker_layers.h),
 * the abandon flag (atomic). No lock is held while another is taken.
 *
 * Sandboxes: one runtime (sandbox.h) with its state under DATA_DIR/runtime, reconciled at startup before
 * anything else (live sandboxes re-adopted, orphans removed, both logged); the ids it runs are reported at
 * each registration (`sandboxes`, runtime ids), their count in heartbeats. The layer cache is
 * DATA_DIR/layers (worker_layers.h). Private CSEK layer dirs (DATA_DIR/private/<runtime id>) of sandboxes
 * that were not re-adopted are removed right after the reconcile.
 *
 * Coordinator session (state: unregistered -> registered -> unregistered ...)
 * - unregistered: worker.register is sent at once and again every REGISTER_RESEND until a reply to one
 *   of this round's request ids arrives. An error reply (e.g. the id is bound to another key) is logged
 *   and retried after REGISTER_BACKOFF.
 * - registered: a heartbeat every heartbeat_ms (from the reply). A heartbeat reply with ENOTFOUND, or
 *   with an epoch other than the last one seen (register reply or membership), sends it back to
 *   unregistered: the coordinator restarted or declared this worker dead.
 * - job.result messages are kept until acknowledged, sent when handed over and again every
 *   RESULT_RESEND while registered (the coordinator treats duplicates as no-ops). The last DONE_KEEP
 *   acknowledged ones are kept too: a job.dispatch resent for a job already done is answered with its
 *   result again instead of running the job twice.
 * - The peer allow-list is rebuilt on every membership and when the peers_allow file changes.
 *
 * Shutdown (stop flag, from SIGTERM/SIGINT in main): job.dispatch is refused (EUNAVAILABLE), running
 * jobs are abandoned at their next check (they send no result: the coordinator fails them when the
 * heartbeats stop), the loop keeps serving until the job threads are idle (at most STOP_GRACE), waits
 * up to RESULT_FLUSH for results of jobs that finished meanwhile to be acknowledged, then the threads
 * are joined, the sockets closed and the store closed.
 */
#include "worker_daemon.h"

#include "worker_jobs.h"
#include "worker_jobs_int.h"
#include "worker_members.h"
#include "worker_layers.h"
#include "worker_peer.h"
#include "sandbox.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/store.h"
#include "cairn/transport.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000ull
#define TICK_MS 100
#define REGISTER_RESEND (1000 * MS)
#define REGISTER_BACKOFF (5000 * MS)
#define RESULT_RESEND (2000 * MS)
#define STOP_GRACE (10000 * MS)
#define RESULT_FLUSH (1000 * MS)
#define DEFAULT_HEARTBEAT (1000 * MS)
#define ALLOW_CHECK (1000 * MS)
#define DONE_KEEP 64 /* acknowledged results kept for a dispatch that is resent anyway */
#define REAP_NS 20000000L

struct result {
    char job[CAIRN_WK_ID_MAX + 1];
    struct cairn_msg *msg; /* job.result, owned */
    uint64_t rid;
    uint64_t sent_ns;      /* 0: never sent */
};

struct wk {
    const struct cairn_wk_config *cfg;
    const struct cairn_wk_daemon_opts *o;
    struct cairn_curve_keys keys;
    char coord_key[CAIRN_CURVE_Z85_LEN + 1];
    struct cairn_secret *master;
    struct cairn_store *store;
    struct cairn_wk_stats stats;
    struct cairn_runtime *rt;
    struct cairn_wk_layers *layers;
    char abs_data[PATH_MAX];
    pthread_t reaper;
    bool reaper_started;
    atomic_int reaper_stop;
    struct cairn_wk_view *view;
    struct cairn_net *net;
    struct cairn_sock *coord, *peer, *pipe;
    struct cairn_wk_jobs *jobs;
    struct cairn_wk_peer *peersvc;
    atomic_int abandon;
    char advertise[CAIRN_WK_ENDPOINT_MAX + 1];
    char pipe_ep[96];

    /* coordinator session */
    bool registered;
    uint64_t next_rid;
    uint64_t reg_first_rid, reg_last_rid, reg_next_ns;
    uint64_t epoch;        /* last epoch seen (register reply or membership) */
    uint64_t heartbeat_ns, hb_next_ns;

    /* jobs accepted and not finished, and results not yet acknowledged */
    char (*running)[CAIRN_WK_ID_MAX + 1];
    size_t nrunning, running_cap;
    struct result *results;
    size_t nresults, results_cap;
    struct result done[DONE_KEEP]; /* ring of acknowledged results */
    size_t ndone;
    bool stopping;

    /* the peers_allow file, re-read when it changes (checked every ALLOW_CHECK) */
    uint64_t allow_check_ns;
    struct stat allow_st;
};

/* ---- small helpers ---- */

static uint64_t rid_next(struct wk *w) { return ++w->next_rid; }

static void coord_send(struct wk *w, const struct cairn_msg *m)
{
    if (!w->coord)
        return;
    int rc = cairn_sock_send(w->coord, m);
    if (rc != CAIRN_OK)
        cairn_debug("%s to the coordinator not sent: %s", cairn_msg_type_name(cairn_msg_type(m)), cairn_err_msg());
}

static void reply(struct cairn_sock *s, const struct cairn_msg *req, int code, const char *text)
{
    struct cairn_msg *r = cairn_msg_reply(req, code, text);
    if (!r)
        return;
    if (cairn_sock_send(s, r) != CAIRN_OK)
        cairn_debug("reply to %s not sent: %s", cairn_msg_type_name(cairn_msg_type(req)), cairn_err_msg());
    cairn_msg_destroy(&r);
}

static ssize_t running_find(const struct wk *w, const char *job)
{
    for (size_t i = 0; i < w->nrunning; i++)
        if (!strcmp(w->running[i], job))
            return (ssize_t)i;
    return -1;
}

static void running_remove(struct wk *w, const char *job)
{
    ssize_t i = running_find(w, job);
    if (i < 0)
        return;
    memmove(w->running[i], w->running[i + 1], (w->nrunning - (size_t)i - 1) * sizeof(*w->running));
    w->nrunning--;
}

static ssize_t result_find_job(const struct wk *w, const char *job)
{
    for (size_t i = 0; i < w->nresults; i++)
        if (!strcmp(w->results[i].job, job))
            return (ssize_t)i;
    return -1;
}

static ssize_t done_find_job(const struct wk *w, const char *job)
{
    for (size_t i = 0; i < DONE_KEEP; i++)
        if (w->done[i].msg && !strcmp(w->done[i].job, job))
            return (ssize_t)i;
    return -1;
}

/* An acknowledged result leaves the resend list for the ring of done ones. */
static void result_remove(struct wk *w, size_t i)
{
    struct result *slot = &w->done[w->ndone++ % DONE_KEEP];
    cairn_msg_destroy(&slot->msg);
    *slot = w->results[i];
    memmove(&w->results[i], &w->results[i + 1], (w->nresults - i - 1) * sizeof(*w->results));
    w->nresults--;
}

/* ---- registration and heartbeats ---- */

static void send_register(struct wk *w, uint64_t now)
{
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_WORKER_REGISTER);
    if (!m)
        return;
    uint64_t rid = rid_next(w);
    if (!w->reg_first_rid)
        w->reg_first_rid = rid;
    w->reg_last_rid = rid;
    cairn_msg_set_rid(m, rid);
    cairn_msg_set_str(m, "id", w->cfg->id);
    cairn_msg_set_str(m, "peer", w->advertise);
    cairn_msg_set_str(m, "public_key", w->keys.public_z85);
    cairn_msg_set_u64(m, "capacity", w->cfg->capacity);
    cairn_msg_set_str(m, "fingerprint", cairn_runtime_fingerprint(w->rt));
    cairn_msg_set_str(m, "version", CAIRN_VERSION);
    cairn_msg_set_u64(m, "chunks", atomic_load(&w->stats.chunks));
    cairn_msg_set_u64(m, "bytes", atomic_load(&w->stats.bytes));
    char(*ids)[CAIRN_SANDBOX_ID_LEN + 1] = NULL;
    size_t n = 0;
    if (cairn_runtime_ids(w->rt, &ids, &n) != CAIRN_OK)
        cairn_warn("registration: cannot list the sandboxes: %s", cairn_err_msg());
    struct cairn_mval *arr = cairn_msg_set_array(m, "sandboxes");
    for (size_t i = 0; i < n && i < 4096; i++)
        cairn_mval_push_str(m, arr, ids[i]);
    cairn_free(ids);
    coord_send(w, m);
    cairn_msg_destroy(&m);
    w->reg_next_ns = now + REGISTER_RESEND;
}

static void unregister(struct wk *w, uint64_t now, const char *why)
{
    cairn_info("registering again with the coordinator: %s", why);
    w->registered = false;
    w->reg_first_rid = w->reg_last_rid = 0;
    w->reg_next_ns = now;
}

static uint64_t free_bytes(const char *dir)
{
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0)
        return 0;
    return (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
}

static void send_heartbeat(struct wk *w, uint64_t now)
{
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_WORKER_HEARTBEAT);
    if (!m)
        return;
    cairn_msg_set_rid(m, rid_next(w));
    cairn_msg_set_str(m, "id", w->cfg->id);
    cairn_msg_set_u64(m, "chunks", atomic_load(&w->stats.chunks));
    cairn_msg_set_u64(m, "bytes", atomic_load(&w->stats.bytes));
    cairn_msg_set_u64(m, "sandboxes", cairn_runtime_count(w->rt));
    struct cairn_mval *jobs = cairn_msg_set_array(m, "jobs");
    for (size_t i = 0; i < w->nrunning && i < 4096; i++)
        cairn_mval_push_str(m, jobs, w->running[i]);
    cairn_msg_set_u64(m, "free_bytes", free_bytes(w->cfg->data_dir));
    coord_send(w, m);
    cairn_msg_destroy(&m);
    w->hb_next_ns = now + w->heartbeat_ns;
}

static void send_results(struct wk *w, uint64_t now, bool all)
{
    for (size_t i = 0; i < w->nresults; i++) {
        struct result *r = &w->results[i];
        if (!all && r->sent_ns && now - r->sent_ns < RESULT_RESEND)
            continue;
        r->rid = rid_next(w);
        cairn_msg_set_rid(r->msg, r->rid);
        coord_send(w, r->msg);
        r->sent_ns = now;
    }
}

static void on_register_reply(struct wk *w, const struct cairn_msg *m, uint64_t now)
{
    uint64_t rid = cairn_msg_rid(m);
    if (w->registered || !w->reg_first_rid || rid < w->reg_first_rid || rid > w->reg_last_rid)
        return;
    int code = cairn_msg_code(m);
    if (code != CAIRN_OK) {
        const char *t = cairn_msg_text(m);
        cairn_error("registration as '%s' refused by the coordinator: %s: %s; retrying in %llu s", w->cfg->id,
                    cairn_err_name(code), t ? t : "", (unsigned long long)(REGISTER_BACKOFF / 1000000000ull));
        w->reg_next_ns = now + REGISTER_BACKOFF;
        w->reg_first_rid = w->reg_last_rid = 0;
        return;
    }
    uint64_t epoch = 0, hb = 0, r = 0;
    cairn_msg_get_u64(m, "epoch", &epoch);
    cairn_msg_get_u64(m, "heartbeat_ms", &hb);
    cairn_msg_get_u64(m, "replicas", &r);
    w->registered = true;
    w->epoch = CAIRN_MAX(w->epoch, epoch);
    w->heartbeat_ns = hb ? hb * MS : DEFAULT_HEARTBEAT;
    if (r)
        cairn_wk_view_set_replicas(w->view, (unsigned)r);
    cairn_info("registered with the coordinator as '%s' (epoch %" PRIu64 ", heartbeat %" PRIu64 " ms, %" PRIu64
               " replicas)",
               w->cfg->id, epoch, (uint64_t)(w->heartbeat_ns / MS), r);
    w->hb_next_ns = now + w->heartbeat_ns;
    send_results(w, now, true);
}

static void on_heartbeat_reply(struct wk *w, const struct cairn_msg *m, uint64_t now)
{
    if (!w->registered)
        return;
    int code = cairn_msg_code(m);
    if (code == CAIRN_ENOTFOUND) {
        unregister(w, now, "the coordinator does not know this worker");
        return;
    }
    if (code != CAIRN_OK) {
        const char *t = cairn_msg_text(m);
        cairn_warn("heartbeat refused by the coordinator: %s: %s", cairn_err_name(code), t ? t : "");
        return;
    }
    uint64_t epoch = 0;
    if (cairn_msg_get_u64(m, "epoch", &epoch) != CAIRN_OK)
        return;
    if (epoch != w->epoch) {
        char why[128];
        snprintf(why, sizeof(why), "coordinator epoch %" PRIu64 ", expected %" PRIu64, epoch, w->epoch);
        unregister(w, now, why);
    }
}

/* ---- the peer allow-list ---- */

/* Members of ms (NULL: of the current view) plus the peers_allow file. */
static void allow_apply(struct wk *w, const struct cairn_wk_members *ms)
{
    struct cairn_wk_members *own = ms ? NULL : cairn_wk_view_get(w->view);
    if (cairn_wk_allow_update(w->net, ms ? ms : own, w->cfg->peers_allow) != CAIRN_OK) {
        /* the file is what failed: the members' keys alone */
        cairn_warn("peer allow-list: %s; using the members' keys only", cairn_err_msg());
        cairn_wk_allow_update(w->net, ms ? ms : own, NULL);
    }
    cairn_wk_members_unref(&own);
}

/* Re-apply the allow-list when the peers_allow file changed (an operator added a tool's key). */
static void allow_check(struct wk *w, uint64_t now)
{
    if (!w->cfg->peers_allow || now < w->allow_check_ns)
        return;
    w->allow_check_ns = now + ALLOW_CHECK;
    struct stat st;
    if (stat(w->cfg->peers_allow, &st) != 0)
        memset(&st, 0, sizeof(st));
    if (st.st_ino == w->allow_st.st_ino && st.st_size == w->allow_st.st_size &&
        st.st_mtim.tv_sec == w->allow_st.st_mtim.tv_sec && st.st_mtim.tv_nsec == w->allow_st.st_mtim.tv_nsec)
        return;
    w->allow_st = st;
    cairn_info("peers_allow file '%s' changed: reloading the peer allow-list", w->cfg->peers_allow);
    allow_apply(w, NULL);
}

/* ---- coordinator requests ---- */

static void on_membership(struct wk *w, const struct cairn_msg *m)
{
    struct cairn_wk_members *ms = NULL;
    int rc = cairn_wk_members_from_msg(m, &ms);
    if (rc != CAIRN_OK) {
        cairn_warn("membership refused: %s", cairn_err_msg());
        reply(w->coord, m, rc, cairn_err_msg());
        return;
    }
    uint64_t r = 0, epoch = ms->epoch;
    size_t n = ms->n, live = ms->nlive;
    if (cairn_msg_get_u64(m, "replicas", &r) == CAIRN_OK && r)
        cairn_wk_view_set_replicas(w->view, (unsigned)r);
    const struct cairn_wk_members *cur = ms; /* the view's from here on, replaced only by this thread */
    if (!cairn_wk_view_update(w->view, ms)) {
        cairn_debug("membership epoch %" PRIu64 " is older than the current one; ignored", epoch);
    } else {
        w->epoch = CAIRN_MAX(w->epoch, epoch);
        cairn_info("membership epoch %" PRIu64 ": %zu workers, %zu alive", epoch, n, live);
        allow_apply(w, cur);
    }
    reply(w->coord, m, CAIRN_OK, NULL);
}

static void on_dispatch(struct wk *w, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp;
    const char *job = NULL, *kind = NULL;
    if (cairn_msg_get_str(m, "job", &job, NULL) != CAIRN_OK || cairn_msg_get_str(m, "kind", &kind, NULL) != CAIRN_OK) {
        reply(w->coord, m, CAIRN_EPROTO, "job.dispatch without job or kind");
        return;
    }
    if (w->stopping) {
        char t[160];
        snprintf(t, sizeof(t), "worker '%s' is shutting down", w->cfg->id);
        reply(w->coord, m, CAIRN_EUNAVAILABLE, t);
        return;
    }
    if (running_find(w, job) >= 0 || result_find_job(w, job) >= 0) {
        reply(w->coord, m, CAIRN_OK, NULL); /* a resent dispatch: already ours */
        return;
    }
    ssize_t d = done_find_job(w, job);
    if (d >= 0 && cairn_array_grow((void **)&w->results, &w->results_cap, w->nresults + 1, sizeof(*w->results)) ==
                      CAIRN_OK) {
        /* finished and acknowledged already: answer with the same result again rather than run it twice */
        reply(w->coord, m, CAIRN_OK, NULL);
        w->results[w->nresults] = w->done[d];
        w->results[w->nresults++].sent_ns = 0;
        memset(&w->done[d], 0, sizeof(w->done[d]));
        return;
    }
    if (cairn_array_grow((void **)&w->running, &w->running_cap, w->nrunning + 1, sizeof(*w->running)) != CAIRN_OK) {
        reply(w->coord, m, CAIRN_ENOMEM, "out of memory accepting a job");
        return;
    }
    char id[CAIRN_WK_ID_MAX + 1], k[40];
    snprintf(id, sizeof(id), "%s", job);
    snprintf(k, sizeof(k), "%s", kind);
    struct cairn_msg *ack = cairn_msg_reply(m, CAIRN_OK, NULL);
    int rc = cairn_wk_jobs_submit(w->jobs, mp);
    if (rc != CAIRN_OK) {
        cairn_info("job '%s' (%s) refused: %s", id, k, cairn_err_msg());
        reply(w->coord, m, rc, cairn_err_msg());
        cairn_msg_destroy(&ack);
        return;
    }
    /* *mp now belongs to the pool: only the ack (built before) is used from here */
    memcpy(w->running[w->nrunning++], id, sizeof(id));
    cairn_debug("job '%s' (%s) accepted", id, k);
    if (ack)
        coord_send(w, ack);
    cairn_msg_destroy(&ack);
}

static void on_result_reply(struct wk *w, const struct cairn_msg *m)
{
    for (size_t i = 0; i < w->nresults; i++) {
        if (w->results[i].rid != cairn_msg_rid(m))
            continue;
        int code = cairn_msg_code(m);
        if (code != CAIRN_OK)
            cairn_warn("result of job '%s' refused by the coordinator: %s: %s", w->results[i].job,
                       cairn_err_name(code), cairn_msg_text(m) ? cairn_msg_text(m) : "");
        result_remove(w, i);
        return;
    }
}

static void coord_handle(struct wk *w, struct cairn_msg **mp, uint64_t now)
{
    struct cairn_msg *m = *mp;
    enum cairn_msg_type t = cairn_msg_type(m);
    if (cairn_msg_is_reply(m)) {
        if (t == CAIRN_MSG_WORKER_REGISTER)
            on_register_reply(w, m, now);
        else if (t == CAIRN_MSG_WORKER_HEARTBEAT)
            on_heartbeat_reply(w, m, now);
        else if (t == CAIRN_MSG_JOB_RESULT)
            on_result_reply(w, m);
        return;
    }
    switch (t) {
    case CAIRN_MSG_MEMBERSHIP:
        on_membership(w, m);
        break;
    case CAIRN_MSG_JOB_DISPATCH:
        on_dispatch(w, mp);
        break;
    default:
        reply(w->coord, m, CAIRN_EUNSUPPORTED, "a worker does not serve this message");
        break;
    }
}

static void coord_drain(struct wk *w, uint64_t now)
{
    for (;;) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(w->coord, 0, &m);
        if (rc == CAIRN_OK) {
            coord_handle(w, &m, now);
        } else if (m) {
            cairn_warn("malformed message from the coordinator: %s", cairn_err_msg());
            if (!cairn_msg_is_reply(m))
                reply(w->coord, m, rc, cairn_err_msg());
        } else if (rc != CAIRN_EPROTO && rc != CAIRN_ETOOBIG && rc != CAIRN_EVERSION) {
            return;
        }
        cairn_msg_destroy(&m);
    }
}

/* ---- the pipe from the job threads ---- */

static void pipe_drain(struct wk *w, uint64_t now)
{
    for (;;) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(w->pipe, 0, &m);
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&m);
            if (rc == CAIRN_ETIMEDOUT || rc == CAIRN_ECANCELED || rc == CAIRN_EIO || rc == CAIRN_ENOMEM)
                return;
            continue;
        }
        const char *job = NULL;
        cairn_msg_get_str(m, "job", &job, NULL);
        if (cairn_msg_type(m) == CAIRN_MSG_JOB_PROGRESS) {
            if (w->registered)
                coord_send(w, m);
        } else if (cairn_msg_type(m) == CAIRN_MSG_JOB_RESULT && job) {
            running_remove(w, job);
            if (!w->coord) {
                cairn_msg_destroy(&m);
                continue;
            }
            if (cairn_array_grow((void **)&w->results, &w->results_cap, w->nresults + 1, sizeof(*w->results)) !=
                CAIRN_OK) {
                cairn_error("out of memory keeping the result of job '%s'; it is lost", job);
                cairn_msg_destroy(&m);
                continue;
            }
            struct result *r = &w->results[w->nresults++];
            memset(r, 0, sizeof(*r));
            snprintf(r->job, sizeof(r->job), "%s", job);
            r->msg = m;
            m = NULL;
            if (w->registered) {
                r->rid = rid_next(w);
                cairn_msg_set_rid(r->msg, r->rid);
                coord_send(w, r->msg);
                r->sent_ns = now;
            }
        }
        cairn_msg_destroy(&m);
    }
}

/* ---- startup ---- */

/* Prefix this thread's error message with what failed (copied first: the message is the output). */
static int wrap(int rc, const char *what)
{
    char inner[1024];
    snprintf(inner, sizeof(inner), "%s", cairn_err_msg());
    return cairn_err_set(rc, "%s: %s", what, inner);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    int n = snprintf(buf, sizeof(buf), "%s", path);
    if (n <= 0 || (size_t)n >= sizeof(buf))
        return cairn_err_set(CAIRN_EINVAL, "data_dir '%.200s' is too long", path);
    for (char *p = buf + 1;; p++) {
        bool end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "create directory '%s'", buf);
            if (end)
                break;
            *p = '/';
        }
    }
    return CAIRN_OK;
}

static int read_master(struct wk *w)
{
    const char *path = w->cfg->master_key;
    if (!path)
        return CAIRN_OK;
    struct stat st;
    if (stat(path, &st) != 0)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "master_key '%s'", path);
    if (st.st_mode & 077)
        return cairn_err_set(CAIRN_EPERM,
                             "master_key '%s' is readable or writable by group or others (mode %04o): chmod 600 it",
                             path, (unsigned)(st.st_mode & 07777));
    return cairn_secret_read_file(&w->master, path, CAIRN_KEY_BYTES, CAIRN_KEY_BYTES);
}

static int write_endpoint_file(struct wk *w)
{
    char path[4096], text[CAIRN_WK_ENDPOINT_MAX + 2];
    int n = snprintf(path, sizeof(path), "%s/peer.endpoint", w->cfg->data_dir);
    if (n <= 0 || (size_t)n >= sizeof(path))
        return cairn_err_set(CAIRN_EINVAL, "data_dir is too long");
    int len = snprintf(text, sizeof(text), "%s\n", w->advertise);
    return cairn_file_replace_atomic(path, text, (size_t)len, 0644);
}

/* Log a reconcile list: "3 sandboxes adopted: a, b, c". */
static void log_ids(const char *what, char (*ids)[CAIRN_SANDBOX_ID_LEN + 1], size_t n)
{
    if (n == 0)
        return;
    char buf[1024];
    size_t off = 0;
    for (size_t i = 0; i < n && off < sizeof(buf) - 40; i++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s", i ? ", " : "", ids[i]);
    cairn_info("runtime: %zu sandbox%s %s: %s%s", n, n == 1 ? "" : "es", what, buf, off >= sizeof(buf) - 40 ? ", ..." : "");
}

/* The sandbox runtime under DATA_DIR/runtime, reconciled before anything else runs. */
static int runtime_start(struct wk *w)
{
    char root[PATH_MAX + 16];
    snprintf(root, sizeof(root), "%s/runtime", w->abs_data);
    struct cairn_runtime_config rc_cfg = {.state_root = root};
    int rc = cairn_runtime_new(&w->rt, &rc_cfg);
    if (rc != CAIRN_OK)
        return wrap(rc, "sandbox runtime");
    struct cairn_reconcile_report rep;
    rc = cairn_runtime_reconcile(w->rt, &rep);
    if (rc != CAIRN_OK) {
        cairn_error("runtime: reconcile failed; sandboxes left as they are: %s", cairn_err_msg());
        return CAIRN_OK; /* nothing was changed; new sandboxes still work */
    }
    log_ids("adopted", rep.adopted, rep.n_adopted);
    log_ids("left by an earlier run removed", rep.cleaned, rep.n_cleaned);
    if (rep.n_failed)
        cairn_warn("runtime: %zu orphan sandboxes could not be removed (retried at the next start)", rep.n_failed);
    cairn_reconcile_report_release(&rep);
    char(*ids)[CAIRN_SANDBOX_ID_LEN + 1] = NULL;
    size_t nids = 0;
    const char **keep = NULL;
    if (cairn_runtime_ids(w->rt, &ids, &nids) != CAIRN_OK) {
        cairn_warn("runtime: private layer dirs left as they are: %s", cairn_err_msg());
        return CAIRN_OK;
    }
    if (nids == 0 || (keep = cairn_calloc(nids, sizeof(*keep)))) {
        for (size_t i = 0; i < nids; i++)
            keep[i] = ids[i];
        cairn_wk__private_cleanup(w->abs_data, NULL, keep, nids);
    }
    cairn_free(keep);
    cairn_free(ids);
    return CAIRN_OK;
}

/* Reap the zombies among the main thread's children: the orphans re-parented to this subreaper. */
static void *reaper_main(void *arg)
{
    struct wk *w = arg;
    pthread_setname_np(pthread_self(), "cairn-reaper");
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
    while (!atomic_load(&w->reaper_stop)) {
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        /* anything to reap at all? (cheap; WNOWAIT takes nothing) */
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0) {
            FILE *f = fopen(path, "re");
            long pid;
            while (f && fscanf(f, "%ld", &pid) == 1) {
                siginfo_t s2;
                memset(&s2, 0, sizeof(s2));
                if (waitid(P_PID, (id_t)pid, &s2, WEXITED | WNOHANG) == 0 && s2.si_pid == (pid_t)pid)
                    cairn_debug("reaped orphan pid %ld (status %d)", pid, s2.si_status);
            }
            if (f)
                fclose(f);
        }
        nanosleep(&(struct timespec){0, REAP_NS}, NULL);
    }
    return NULL;
}

static void subreaper_start(struct wk *w)
{
    if ((pid_t)syscall(SYS_gettid) != getpid()) {
        cairn_warn("subreaper: the worker does not run on the main thread; orphaned runsc processes are left "
                   "to init");
        return;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
        cairn_warn("subreaper: prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));
        return;
    }
    atomic_init(&w->reaper_stop, 0);
    int e = pthread_create(&w->reaper, NULL, reaper_main, w);
    if (e != 0) {
        cairn_warn("subreaper: cannot start the reaper thread: %s", strerror(e));
        return;
    }
    w->reaper_started = true;
}

static int start(struct wk *w)
{
    const struct cairn_wk_config *cfg = w->cfg;
    char path[4096];
    CAIRN_FORWARD_IF_ERROR(cairn_crypto_init());
    int rc = cairn_curve_keys_read(cfg->keys, &w->keys);
    if (rc != CAIRN_OK)
        return wrap(rc, "keys");
    if (!w->o->no_coordinator) {
        rc = cairn_curve_public_read(cfg->coordinator_key, w->coord_key);
        if (rc != CAIRN_OK)
            return wrap(rc, "coordinator_key");
    }
    CAIRN_FORWARD_IF_ERROR(read_master(w));
    CAIRN_FORWARD_IF_ERROR(mkdir_p(cfg->data_dir));
    char *abs = realpath(cfg->data_dir, NULL);
    if (!abs)
        return cairn_err_set_errno(CAIRN_EIO, errno, "resolve data_dir '%s'", cfg->data_dir);
    int n = snprintf(w->abs_data, sizeof(w->abs_data), "%s", abs);
    free(abs); /* realpath's */
    if (n <= 0 || (size_t)n + 32 >= sizeof(w->abs_data))
        return cairn_err_set(CAIRN_EINVAL, "data_dir '%s' is too long", cfg->data_dir);
    CAIRN_FORWARD_IF_ERROR(runtime_start(w));
    {
        char layers[PATH_MAX + 16];
        snprintf(layers, sizeof(layers), "%s/layers", w->abs_data);
        CAIRN_FORWARD_IF_ERROR(cairn_wk_layers_new(&w->layers, layers));
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/chunks", cfg->data_dir) >= sizeof(path))
        return cairn_err_set(CAIRN_EINVAL, "data_dir is too long");
    CAIRN_FORWARD_IF_ERROR(cairn_store_open(&w->store, path, true));
    rc = cairn_wk_stats_scan(&w->stats, w->store);
    if (rc != CAIRN_OK)
        cairn_warn("counting the chunks of '%s' stopped early: %s", path, cairn_err_msg());
    CAIRN_FORWARD_IF_ERROR(cairn_wk_view_new(&w->view));
    CAIRN_FORWARD_IF_ERROR(cairn_net_new(&w->net));
    if (cfg->peers_allow && stat(cfg->peers_allow, &w->allow_st) != 0)
        memset(&w->allow_st, 0, sizeof(w->allow_st));
    w->allow_check_ns = cairn_now_mono_ns() + ALLOW_CHECK;
    rc = cairn_wk_allow_update(w->net, NULL, cfg->peers_allow);
    if (rc != CAIRN_OK)
        return rc; /* the message names the peers_allow file */
    rc = cairn_sock_server(w->net, cfg->peer_endpoint, &w->keys, CAIRN_WK_PEERS_DOMAIN, NULL, &w->peer);
    if (rc != CAIRN_OK)
        return wrap(rc, "peer_endpoint");
    snprintf(w->advertise, sizeof(w->advertise), "%s",
             cfg->peer_advertise ? cfg->peer_advertise : cairn_sock_endpoint(w->peer));
    if (!cfg->peer_advertise && strstr(w->advertise, "://0.0.0.0:"))
        cairn_warn("peer endpoint '%s' is a wildcard address: "
                   "set peer_advertise to an address the other workers can reach",
                   w->advertise);
    rc = write_endpoint_file(w);
    if (rc != CAIRN_OK)
        cairn_warn("cannot write the peer endpoint file: %s", cairn_err_msg());
    snprintf(w->pipe_ep, sizeof(w->pipe_ep), "inproc://cairn-worker-pipe-%p", (void *)w);
    CAIRN_FORWARD_IF_ERROR(cairn_sock_server(w->net, w->pipe_ep, &w->keys, "pipe", NULL, &w->pipe));
    CAIRN_FORWARD_IF_ERROR(cairn_wk_peer_new(&w->peersvc, w->store, &w->stats));
    struct cairn_wk_jobs_env env = {
        .worker_id = cfg->id,
        .net = w->net,
        .keys = &w->keys,
        .store = w->store,
        .stats = &w->stats,
        .view = w->view,
        .master = w->master,
        .pipe_endpoint = w->pipe_ep,
        .replication_timeout_ms = cfg->replication_timeout,
        .abandon = &w->abandon,
        .coordinator = w->o->no_coordinator ? NULL : cfg->coordinator,
        .coordinator_key = w->o->no_coordinator ? NULL : w->coord_key,
        .rt = w->rt,
        .layers = w->layers,
        .data_dir = w->abs_data,
        .capacity = cfg->capacity,
    };
    CAIRN_FORWARD_IF_ERROR(cairn_wk_jobs_new(&w->jobs, &env, (unsigned)cfg->job_threads, (unsigned)cfg->job_queue));
    if (!w->o->no_coordinator) {
        struct cairn_sock_opts so = {.routing_id = cfg->id};
        rc = cairn_sock_client(w->net, cfg->coordinator, &w->keys, w->coord_key, &so, &w->coord);
        if (rc != CAIRN_OK)
            return wrap(rc, "coordinator");
    }
    cairn_info("worker '%s' %s: peer endpoint %s, %s%s, %" PRIu64 " chunks (%" PRIu64 " bytes), fingerprint %s, "
               "%zu sandboxes of %" PRIu64 ", %zu layers cached",
               cfg->id, CAIRN_VERSION, w->advertise, w->coord ? "coordinator " : "no coordinator",
               w->coord ? cfg->coordinator : "", (uint64_t)atomic_load(&w->stats.chunks),
               (uint64_t)atomic_load(&w->stats.bytes), cairn_runtime_fingerprint(w->rt), cairn_runtime_count(w->rt),
               cfg->capacity, cairn_wk_layers_count(w->layers));
    return CAIRN_OK;
}

static void teardown(struct wk *w)
{
    atomic_store(&w->abandon, 1);
    cairn_wk_jobs_destroy(&w->jobs); /* joins the job threads: their sockets close first */
    if (w->reaper_started) {
        atomic_store(&w->reaper_stop, 1);
        pthread_join(w->reaper, NULL);
        w->reaper_started = false;
    }
    cairn_wk_peer_destroy(&w->peersvc); /* its last sync finishes first */
    cairn_sock_destroy(&w->coord);
    cairn_sock_destroy(&w->peer);
    cairn_sock_destroy(&w->pipe);
    cairn_net_destroy(&w->net);
    if (w->store) {
        int rc = cairn_store_sync(w->store);
        if (rc != CAIRN_OK)
            cairn_error("final sync of the chunk store failed: %s", cairn_err_msg());
    }
    cairn_store_close(&w->store);
    cairn_wk_view_destroy(&w->view);
    cairn_runtime_destroy(&w->rt); /* sandboxes keep running: the next start adopts them */
    cairn_wk_layers_destroy(&w->layers);
    cairn_secret_destroy(&w->master);
    cairn_curve_keys_clear(&w->keys);
    for (size_t i = 0; i < w->nresults; i++)
        cairn_msg_destroy(&w->results[i].msg);
    for (size_t i = 0; i < DONE_KEEP; i++)
        cairn_msg_destroy(&w->done[i].msg);
    CAIRN_FREE(w->results);
    CAIRN_FREE(w->running);
}

void cairn_wk_tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 16 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

/* ---- the loop ---- */

static uint64_t next_timer(const struct wk *w)
{
    uint64_t t = UINT64_MAX;
    if (!w->coord)
        return t;
    t = w->registered ? w->hb_next_ns : w->reg_next_ns;
    for (size_t i = 0; w->registered && i < w->nresults; i++)
        t = CAIRN_MIN(t, w->results[i].sent_ns + RESULT_RESEND);
    return t;
}

static void timers(struct wk *w, uint64_t now)
{
    allow_check(w, now);
    if (!w->coord)
        return;
    if (!w->registered && now >= w->reg_next_ns)
        send_register(w, now);
    if (w->registered && now >= w->hb_next_ns)
        send_heartbeat(w, now);
    if (w->registered)
        send_results(w, now, false);
}

int cairn_wk_daemon_run(const struct cairn_wk_config *cfg, const struct cairn_wk_daemon_opts *opts)
{
    struct wk *w = cairn_calloc(1, sizeof(*w));
    if (!w)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory starting the worker");
    w->cfg = cfg;
    w->o = opts;
    atomic_init(&w->abandon, 0);
    w->heartbeat_ns = DEFAULT_HEARTBEAT;
    int rc = start(w);
    if (rc != CAIRN_OK)
        goto out;
    if (opts->subreaper)
        subreaper_start(w);
    if (opts->on_ready)
        opts->on_ready(opts->arg, w->advertise);

    uint64_t stop_at = 0;
    for (;;) {
        uint64_t now = cairn_now_mono_ns();
        if (!w->stopping && atomic_load(opts->stop)) {
            w->stopping = true;
            stop_at = now;
            atomic_store(&w->abandon, 1);
            cairn_info("stopping: %u jobs running are abandoned", cairn_wk_jobs_active(w->jobs));
        }
        if (w->stopping) {
            bool idle = cairn_wk_jobs_active(w->jobs) == 0;
            bool flushed = w->nresults == 0 || !w->registered;
            if ((idle && (flushed || now - stop_at >= RESULT_FLUSH)) || now - stop_at >= STOP_GRACE)
                break;
        }
        timers(w, now);
        uint64_t t = next_timer(w);
        int wait = TICK_MS;
        if (t != UINT64_MAX)
            wait = t <= now ? 0 : (int)CAIRN_MIN((t - now) / MS + 1, (uint64_t)TICK_MS);
        if (w->stopping)
            wait = CAIRN_MIN(wait, 10);
        if (cairn_wk_peer_waiting(w->peersvc))
            wait = CAIRN_MIN(wait, 1); /* chunk.put replies wait for the sync thread */
        struct cairn_sock *socks[3] = {w->peer, w->pipe, w->coord};
        size_t ns = w->coord ? 3 : 2;
        uint64_t ready = 0;
        cairn_sock_poll(socks, ns, wait, &ready);
        now = cairn_now_mono_ns();
        if (ready & 2)
            pipe_drain(w, now);
        if (ready & 4)
            coord_drain(w, now);
        if (ready & 1) {
            rc = cairn_wk_peer_serve(w->peersvc, w->peer);
            if (rc == CAIRN_ECANCELED)
                break;
        }
        cairn_wk_peer_flush(w->peersvc, w->peer);
    }
    rc = CAIRN_OK;
    uint64_t nreq = 0, nin = 0, nsync = 0;
    cairn_wk_peer_counts(w->peersvc, &nreq, &nin, &nsync);
    cairn_info("worker '%s' stopped: %" PRIu64 " peer requests served, %" PRIu64 " chunks received, %" PRIu64
               " syncs",
               cfg->id, nreq, nin, nsync);
out:;
    char msg[1100];
    snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
    teardown(w);
    cairn_free(w);
    if (rc != CAIRN_OK)
        cairn_err_set(rc, "%s", msg);
    return rc;
}
