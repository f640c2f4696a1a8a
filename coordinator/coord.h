/*
 * coord.h: the coordinator's internal API, shared by its modules and its unit
 * tests (tests/unit/test_coord_*.c link cairn_coordinator_core). Not a public
 * header: nothing outside coordinator/ and those tests includes it.
 *
 * Modules
 *   coord_config.c      the option table and its checks
 *   coord_meta.c        record codecs and keys (coord_meta.h)
 *   coord_value.c       params/result maps <-> stored bytes (coord_value.h)
 *   coord_map.c         hash-map indexes (coord_map.h)
 *   coord_server.c      struct coord: open, load, poll loop, tick, shutdown
 *   coord_api.c         message routing, authentication, client handlers
 *   coord_membership.c  workers: register, heartbeat, death, membership
 *   coord_jobs.c        job table, state machine, dispatcher, long polls
 *   coord_main.c        the cairn-coordinator executable
 *
 * Threads: one. Everything here runs on the poll loop's thread; no locks.
 * Time: deadlines (heartbeats, long polls, queue timeouts) use the monotonic
 * clock (cairn_now_mono_ns); record timestamps use the injectable clock
 * (c->clock), which admin.clock.advance moves in tests.
 */
#ifndef CAIRN_COORD_H
#define CAIRN_COORD_H

#include "coord_map.h"
#include "coord_meta.h"

#include "cairn/clock.h"
#include "cairn/config.h"
#include "cairn/crypto.h"
#include "cairn/kv.h"
#include "cairn/transport.h"

#include <signal.h>

#define COORD_TICK_MS 100
#define COORD_ADMIN_APP "_admin"
#define COORD_MAX_UNACKED 256      /* dispatches in flight per worker (kept well under the socket HWM) */
#define COORD_MAX_WAITERS 65536    /* parked long polls; beyond, requests are answered at once */
#define COORD_BUSY_BACKOFF_MS 100  /* a worker that refused (EBUSY) or whose queue is full gets no job this long */
#define COORD_MISSING_BEATS 3      /* heartbeats without a running job before it is declared lost */
#define COORD_DRAIN_BATCH 64       /* messages taken from one socket before looking at the other */

/* ---- configuration (coord_config.c) ------------------------------------------------------------ */

struct coord_config {
    char *data_dir;
    char *client_endpoint;
    char *worker_endpoint;
    char *keys;
    char *clients_allow;
    char *workers_allow;
    char *admin_token_file;
    char *master_key;
    uint64_t heartbeat_interval; /* ms */
    uint64_t heartbeat_timeout;  /* ms */
    uint64_t replicas;
    uint64_t queue_timeout;      /* ms */
    char *log_level;
    bool test_clock;
};

extern const struct cairn_opt coord_options[];
extern const size_t coord_noptions;
/* Cross-field checks (required paths, timeout > interval). CAIRN_EINVAL naming the setting. */
int coord_config_check(const struct coord_config *cfg);

/* ---- in-memory state --------------------------------------------------------------------------- */

struct coord_app {
    struct coord_app_rec rec;
};

struct coord_job;

struct coord_worker {
    struct coord_worker_rec rec;
    struct cairn_route route;   /* ROUTER id of its current connection */
    bool routable;              /* route is known (set by register/heartbeat) */
    uint64_t last_seen_mono;    /* deadline base for death detection */
    uint64_t busy_until_mono;   /* no dispatch before (EBUSY, full queue) */
    size_t running;             /* jobs in the list below */
    size_t unacked;             /* of those, dispatches not acknowledged yet */
    struct coord_job *jobs;     /* running jobs (intrusive list through wprev/wnext) */
};

struct coord_waiter {
    struct cairn_msg *req;      /* owned: the parked job.submit / job.get request */
    struct coord_job *job;
    struct coord_waiter *prev, *next; /* in job->waiters */
    uint64_t deadline_mono;
    size_t hidx;                /* position in c->heap */
};

struct coord_job {
    struct coord_job_rec rec;
    char pin[COORD_ID_MAX + 1]; /* params "worker", or "" */
    bool queued;                /* linked in c->qhead..qtail */
    struct coord_job *qprev, *qnext;
    struct coord_worker *w;     /* running on (linked in w->jobs) */
    struct coord_job *wprev, *wnext;
    uint64_t dispatch_rid;      /* job.dispatch in flight (key of c->dispatches), 0 once acknowledged */
    uint64_t rid_key;           /* storage for that key */
    uint64_t queued_mono, dispatched_mono;
    unsigned missing;           /* consecutive heartbeats of w that did not list it */
    bool has_progress, has_total;
    uint64_t done, total;       /* progress (memory only) */
    struct coord_waiter *waiters;
};

struct coord_stats {
    uint64_t jobs_submitted, jobs_succeeded, jobs_failed, dispatches, bad_messages;
};

struct coord {
    const struct coord_config *cfg; /* borrowed; outlives the coordinator */
    struct cairn_kv *kv;
    struct cairn_kv_batch *batch;   /* reused for every multi-key write */
    struct cairn_net *net;
    struct cairn_sock *csock;       /* client ROUTER */
    struct cairn_sock *wsock;       /* worker ROUTER */
    struct cairn_curve_keys keys;
    struct cairn_secret *master;    /* cluster master key, guarded memory */
    uint8_t admin_hash[CAIRN_TOKEN_HASH_BYTES];
    struct cairn_clock clock;
    uint64_t epoch;
    struct coord_map apps;          /* name -> struct coord_app */
    struct coord_map workers;       /* id -> struct coord_worker */
    struct coord_worker **wlist;    /* every worker, sorted by id */
    size_t nworkers, wcap;
    struct coord_map jobs;          /* id -> unfinished struct coord_job */
    struct coord_map dispatches;    /* rid (8 bytes) -> job with a dispatch in flight */
    struct coord_job *qhead, *qtail;
    size_t qlen;
    uint64_t next_seq, next_rid;
    struct coord_waiter **heap;     /* min-heap of parked long polls by deadline */
    size_t nwaiters, heapcap;
    uint64_t next_tick_mono;
    bool kick_pending;              /* run the dispatcher at the end of this step */
    struct coord_stats stats;
};

/* ---- coord_server.c ---------------------------------------------------------------------------- */

/*
 * Open everything cfg names: secrets, metadata store (loading every record),
 * sockets. On error *out = NULL and the message names what failed.
 */
int coord_new(struct coord **out, const struct coord_config *cfg);
/* Answer parked requests, close sockets, sync and close the store. NULL-safe; sets *c = NULL. */
void coord_destroy(struct coord **c);
/* One loop turn: wait up to max_wait_ms for messages, handle them, run the tick when due. */
int coord_step(struct coord *c, int max_wait_ms);
/* Loop until *stop; *reload (SIGHUP) reloads the allow-lists. */
int coord_run(struct coord *c, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload);
int coord_reload_allow(struct coord *c);
/* The periodic work: deaths, long-poll deadlines, queue timeouts, dispatch retries. */
void coord_tick(struct coord *c);

/* ---- coord_api.c ------------------------------------------------------------------------------- */

/* Handle one message (takes ownership). */
void coord_api_on_client(struct coord *c, struct cairn_msg *m);
void coord_api_on_worker(struct coord *c, struct cairn_msg *m);
/* A message that failed to decode (rc) with its shell (may be NULL; ownership taken). */
void coord_api_on_bad(struct coord *c, struct cairn_sock *s, int rc, struct cairn_msg *shell);
/* Send and destroy *m; failures (peer gone, queue full) are logged at debug and returned. */
int coord_send(struct coord *c, struct cairn_sock *s, struct cairn_msg **m);
/* Reply with an error code and a formatted message. */
void coord_reply_error(struct coord *c, struct cairn_sock *s, const struct cairn_msg *req, int code,
                       const char *fmt, ...) CAIRN_PRINTF(5, 6);
/* Token check: hash of the presented token (raw bytes, or 64 hex characters) against want. */
bool coord_token_ok(const uint8_t *tok, size_t len, const uint8_t want[CAIRN_TOKEN_HASH_BYTES]);

/* ---- coord_membership.c ------------------------------------------------------------------------ */

int coord_workers_load(struct coord *c);
void coord_workers_free(struct coord *c);
struct coord_worker *coord_worker_find(struct coord *c, const char *id);
void coord_worker_on_register(struct coord *c, struct cairn_msg *m);
void coord_worker_on_heartbeat(struct coord *c, struct cairn_msg *m);
/* Declare dead every live worker silent for heartbeat_timeout. */
void coord_workers_tick(struct coord *c, uint64_t now_mono);
/* Send `membership` to every live routable worker. */
void coord_membership_broadcast(struct coord *c);
/* cluster.status reply fields. */
void coord_status_fill(struct coord *c, struct cairn_msg *r);
/* Bump and persist the epoch. */
int coord_epoch_bump(struct coord *c);
/* The worker a message came from, when its key is the key the id is bound to. */
bool coord_worker_key_ok(const struct coord_worker *w, const struct cairn_msg *m);

/* ---- coord_jobs.c ------------------------------------------------------------------------------ */

int coord_jobs_load(struct coord *c);
void coord_jobs_free(struct coord *c);
/* Authenticated client requests; *m is taken (set to NULL) when the request is parked. */
void coord_job_on_submit(struct coord *c, struct cairn_msg **m);
void coord_job_on_get(struct coord *c, struct cairn_msg **m);
void coord_job_on_dispatch_reply(struct coord *c, struct cairn_msg *m);
void coord_job_on_result(struct coord *c, struct cairn_msg *m);
void coord_job_on_progress(struct coord *c, struct cairn_msg *m);
/* Fail every job running on w (EUNAVAILABLE, why). */
void coord_jobs_worker_lost(struct coord *c, struct coord_worker *w, const char *why);
/* Heartbeat job list of w: running jobs it no longer lists are failed after COORD_MISSING_BEATS beats. */
void coord_jobs_reconcile(struct coord *c, struct coord_worker *w, const struct cairn_mval *listed, size_t n);
/* Dispatch queued jobs while workers can take them. */
void coord_jobs_kick(struct coord *c);
void coord_jobs_tick(struct coord *c, uint64_t now_mono);
/* Answer every parked request with the job's current state (shutdown). */
void coord_jobs_release_waiters(struct coord *c);

#endif
