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
 *   coord_images.c      images, the name index, image.import uploads, upload.read (issue 4)
 *   coord_sandboxes.c   sandboxes, the typed sandbox jobs and what their ends do (issue 4)
 *   coord_exec.c        sandbox.exec / sandbox.exec.stream and job.output (issue 4)
 *   coord_mounts.c      sandbox.mount / unmount / snapshot-dir, CSEK keys and DEKs (issue 5)
 *   coord_retention.c   expiry, the sweeper, job.refs, garbage collection (issue 5)
 *   coord_snapshots.c   memory snapshots, restore groups, snapshot.ls/show/rm (issue 6)
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
#define COORD_EXEC_MAX_STREAM (4u << 20) /* sandbox.exec keeps this much of each stream */
#define COORD_EXEC_MAX_PENDING 64  /* job.output forwards held per stream while the client's queue is full */
#define COORD_FLATTEN_DEPTH 15     /* snapshot-fs of a sandbox whose image is this deep flattens */
#define COORD_UPLOAD_IDLE_S 3600   /* an upload without a piece for this long is dropped */
#define COORD_STDIN_MAX 65536      /* sandbox.exec stdin travels in the job's params (bin <= 64 KiB) */
#define COORD_CHAIN_MAX 64         /* layers of an image chain (coord_image_chain) */

/* Job kinds with coordinator-side behaviour (sandboxes.md "Jobs"); the rest are opaque (job.submit). */
enum coord_kind {
    COORD_KIND_OTHER = 0,
    COORD_KIND_IMPORT,        /* image-import */
    COORD_KIND_SBX_CREATE,    /* sandbox-create */
    COORD_KIND_SBX_EXEC,      /* sandbox-exec */
    COORD_KIND_SBX_TERMINATE, /* sandbox-terminate */
    COORD_KIND_SNAPSHOT_FS,   /* snapshot-fs */
    /* issue 5 (coordinator-5): mounts, directory snapshots, garbage collection */
    COORD_KIND_SBX_MOUNT,     /* sandbox-mount */
    COORD_KIND_SBX_UNMOUNT,   /* sandbox-unmount */
    COORD_KIND_SNAPSHOT_DIR,  /* snapshot-dir */
    COORD_KIND_DELETE_CHUNKS, /* delete-chunks */
    /* issue 6 (coordinator-6): memory snapshots and restores (coord_snapshots.c) */
    COORD_KIND_SBX_SNAPSHOT,  /* sandbox-snapshot */
    COORD_KIND_SBX_RESTORE,   /* sandbox-restore: one clone */
    COORD_KIND_RESTORE,       /* restore: the group job of a sandbox.restore, run by the coordinator itself */
};
#define COORD_KIND_IMPORT_S "image-import"
#define COORD_KIND_SBX_CREATE_S "sandbox-create"
#define COORD_KIND_SBX_EXEC_S "sandbox-exec"
#define COORD_KIND_SBX_TERMINATE_S "sandbox-terminate"
#define COORD_KIND_SNAPSHOT_FS_S "snapshot-fs"
#define COORD_KIND_SBX_MOUNT_S "sandbox-mount"
#define COORD_KIND_SBX_UNMOUNT_S "sandbox-unmount"
#define COORD_KIND_SNAPSHOT_DIR_S "snapshot-dir"
#define COORD_KIND_DELETE_CHUNKS_S "delete-chunks"
#define COORD_KIND_SBX_SNAPSHOT_S "sandbox-snapshot"
#define COORD_KIND_SBX_RESTORE_S "sandbox-restore"
#define COORD_KIND_RESTORE_S "restore"
enum coord_kind coord_kind_of(const char *kind);
/* Kinds whose job holds a sandbox slot of its worker while it runs (J8): sandbox-create, sandbox-restore. */
static inline bool coord_kind_holds_slot(enum coord_kind k)
{
    return k == COORD_KIND_SBX_CREATE || k == COORD_KIND_SBX_RESTORE;
}

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
    uint64_t dir_retention;      /* ms: sliding lifetime of directory snapshots (issue 5) */
    int client_hwm;              /* not an option: tests lower the client socket's high-water mark (0 = default) */
};

extern const struct cairn_opt coord_options[];
extern const size_t coord_noptions;
/* Cross-field checks (required paths, timeout > interval). CAIRN_EINVAL naming the setting. */
int coord_config_check(const struct coord_config *cfg);

/* ---- in-memory state --------------------------------------------------------------------------- */

struct coord_app {
    struct coord_app_rec rec;
    struct coord_vec images;      /* every image of the app (pending too), by id */
    struct coord_vec sandboxes;   /* every sandbox of the app, by id */
    struct coord_map names;       /* name -> the newest ready struct coord_image with that name */
    uint8_t domain[16];           /* its managed domain id (computed on first use) */
    bool has_domain;
};

struct coord_job;
struct coord_exec;
struct coord_sandbox;

struct coord_image {
    struct coord_image_rec rec;
};

struct coord_sandbox {
    struct coord_sandbox_rec rec;
    struct coord_worker *w;       /* while RUNNING: its worker (linked in w->sbx) */
    struct coord_sandbox *wprev, *wnext;
};

struct coord_upload {
    struct coord_upload_rec rec;
    char key[2 * COORD_ID_MAX + 2]; /* "<app>/<upload>" (c->uploads) */
    uint64_t received;              /* bytes in its file */
};

struct coord_worker {
    struct coord_worker_rec rec;
    struct cairn_route route;   /* ROUTER id of its current connection */
    bool routable;              /* route is known (set by register/heartbeat) */
    uint64_t last_seen_mono;    /* deadline base for death detection */
    uint64_t busy_until_mono;   /* no dispatch before (EBUSY, full queue) */
    size_t running;             /* jobs in the list below */
    size_t unacked;             /* of those, dispatches not acknowledged yet */
    struct coord_job *jobs;     /* running jobs (intrusive list through wprev/wnext) */
    size_t creating;            /* of those, sandbox-create jobs (each holds a sandbox slot) */
    size_t nsbx;                /* RUNNING sandboxes on it (list below) */
    struct coord_sandbox *sbx;
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
    enum coord_kind kind_id;
    struct coord_exec *exec;    /* sandbox-exec: the client waiting for its output, or NULL */
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
    /* issue 5: the DEK of a CSEK job, in guarded memory, never persisted; sent in job.dispatch only */
    struct cairn_secret *dek;
    uint8_t dek_domain[16];
    bool has_dek;
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
    struct coord_map images;        /* id -> struct coord_image (every app) */
    struct coord_map sandboxes;     /* id -> struct coord_sandbox (every app) */
    struct coord_map uploads;       /* "<app>/<upload>" -> struct coord_upload */
    struct coord_exec *execs;       /* exec clients (list; coord_exec.c) */
    size_t nstalled;                /* streams with forwards held back (client queue full) */
    char *uploads_dir;              /* DATA_DIR/uploads */
    uint64_t next_upload_sweep_mono;
    struct coord_job *qhead, *qtail;
    size_t qlen;
    uint64_t next_seq, next_rid;
    struct coord_waiter **heap;     /* min-heap of parked long polls by deadline */
    size_t nwaiters, heapcap;
    uint64_t next_tick_mono;
    bool kick_pending;              /* run the dispatcher at the end of this step */
    struct coord_stats stats;
    /* issue 5: retention and garbage collection (coord_retention.c) */
    uint64_t next_sweep_mono;
    size_t gc_deletes;              /* delete-chunks jobs unfinished: write jobs wait while > 0 */
    char (*gc_owners)[COORD_OBJ_ID_LEN + 1]; /* owners of the collection in progress */
    size_t gc_nowners;
    bool gc_active;                 /* a collection's delete jobs were created and have not all ended */
    /* issue 6: memory snapshots (coord_snapshots.c) */
    struct coord_map snapshots;     /* id -> struct coord_snapshot (every app) */
    struct coord_vec snapshot_ids;  /* every snapshot, sorted by id (snapshot.ls pages) */
    bool snapshots_loaded;          /* start-up is over: restore groups are evaluated as children end */
    const char *restore_creating;   /* the restore group whose clones are being created (not evaluated yet) */
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
/*
 * Start-up: each record under prefix (2 bytes: "i/") goes to load (key: the printable key, for messages).
 * CAIRN_OK: next record; CAIRN_ENOMEM stops the load and is returned, as are iteration errors; any other
 * error skips the record, logged "<skip>: <message>".
 */
typedef int (*coord_load_fn)(struct coord *c, const char *key, const uint8_t *k, size_t kl, const uint8_t *v,
                             size_t vl, void *arg);
int coord_load_records(struct coord *c, const char *prefix, const char *skip, coord_load_fn load, void *arg);
/* ECORRUPT "metadata record '<key>' is corrupt: its <field> is '<id>'" unless key k is the prefix + id. */
int coord_load_key_check(const char *key, const uint8_t *k, size_t kl, const char *field, const char *id);

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
/*
 * One page of a paged list (image.ls, sandbox.ls, snapshot.ls): the request's "limit" (1..COORD_LIST_MAX,
 * else COORD_LIST_DEFAULT) entries after its "after" cursor, in the reply's array named `field`; "next" names
 * the last entry of a page when more follow. Errors name the field: "out of memory listing <field>".
 *   struct coord_page pg;
 *   if (!coord_page_start(c, m, "images", a != NULL, &pg)) return;
 *   for (i = coord_vec_after(v, pg.after); i < v->n; i++)
 *       if (wanted(v->v[i])) { e = coord_page_add(&pg, v->v[i].id); if (!e) break; put(pg.r, e, v->v[i].val); }
 *   coord_page_send(c, m, &pg);
 */
#define COORD_LIST_DEFAULT 100
#define COORD_LIST_MAX 1000
struct coord_page {
    struct cairn_msg *r;      /* the reply being built */
    struct cairn_mval *arr;
    const char *field, *after, *last; /* last: id of the last entry added (borrowed) */
    uint64_t limit, n;
};
/* false (answered ENOMEM) when the reply cannot be made or !ok (the app is gone). */
bool coord_page_start(struct coord *c, const struct cairn_msg *m, const char *field, bool ok, struct coord_page *pg);
/* The map of the next entry (id), or NULL when the page is full (it then ends with "next"). */
struct cairn_mval *coord_page_add(struct coord_page *pg, const char *id);
/* Send the page (or ENOMEM when building it failed). */
void coord_page_send(struct coord *c, const struct cairn_msg *m, struct coord_page *pg);
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

/*
 * A new job, persisted atomically with whatever the caller staged in c->batch
 * (its records), then queued (and perhaps dispatched or even failed at once by
 * the dispatcher: look it up again by id). With state SUCCEEDED or FAILED the
 * job is recorded as ended at once and never queued. On error the staged
 * entries are dropped and nothing is in memory.
 */
struct coord_job_spec {
    const char *app, *kind;
    const char *req_id;               /* NULL: no idempotency entry (the job id stands in) */
    const char *id;                   /* a reserved id (uploads), or NULL for a new one */
    const uint8_t *params;            /* packed msgpack map (coord_value_pack) */
    size_t params_len;
    const char *pin;                  /* worker id, or NULL; params must carry it as "worker" too (a restart reads it there) */
    enum coord_job_state state;       /* QUEUED, or a final state */
    uint32_t err_code;                /* FAILED */
    const char *err_msg;
    struct coord_exec *exec;          /* sandbox-exec: its client, attached before the job can end */
    struct cairn_secret **dek;        /* issue 5: a CSEK job's DEK, taken by the job (*dek = NULL) when queued */
    const uint8_t *dek_domain;        /* its domain id (16 bytes), with dek */
    bool held;                        /* issue 6: run by the coordinator itself (restore group): RUNNING at once
                                         with no worker, never dispatched, ended by coord_job_end */
};
int coord_job_create(struct coord *c, const struct coord_job_spec *s, char id_out[COORD_JOB_ID_LEN + 1]);
/* A fresh job id (not used in memory or in the store). */
void coord_job_new_id(struct coord *c, char out[COORD_JOB_ID_LEN + 1]);
struct coord_job *coord_job_find(struct coord *c, const char *id);
/*
 * Reply to *mp with job id's status (its fields per the request's type), at
 * once or parked until it ends or wait_ms passes (*mp taken, set NULL). A job
 * of another app is ENOTFOUND; of another kind (when kind != NULL) EEXIST
 * "req_id 'x' was already used ...".
 */
void coord_job_answer(struct coord *c, struct cairn_msg **mp, const char *id, const char *kind, uint64_t wait_ms);
/*
 * J2: a req_id of app seen before answers *mp with its job (coord_job_answer with kind), a failed
 * look-up with its error; true when *mp was answered. false (nothing sent) for a new req_id, or when
 * app or req_id is NULL (the caller checks whether it needs one).
 */
bool coord_req_answered(struct coord *c, struct cairn_msg **mp, const char *app, const char *req_id, const char *kind,
                        uint64_t wait_ms);
/* End a job now (FAILED with code and why), e.g. when its stream's client went away. */
void coord_job_fail(struct coord *c, struct coord_job *j, uint32_t code, const char *why);
/* issue 6: end a held job (coord_job_spec.held) now: SUCCEEDED with result, or FAILED(code, why). */
void coord_job_end(struct coord *c, struct coord_job *j, enum coord_job_state state, uint32_t code, const char *why,
                   const struct cairn_mval *result);
/* The reset of c->batch after a failed stage (staged entries dropped). */
void coord_batch_reset(struct coord *c);

/*
 * What the end of a job does to the objects it is about (images, sandboxes,
 * exec clients): coord_objs_finish_prepare runs first and may turn a success
 * into a failure (a result the coordinator cannot use) or rewrite the result
 * the client sees; it stages the object records into c->batch, which the job's
 * own end commits atomically. coord_objs_finish_apply then updates memory
 * (apply = true) or drops what was prepared (the write failed and the worker
 * will send its result again).
 */
struct coord_finish {
    enum coord_job_state state;       /* in/out */
    uint32_t code;                    /* in/out, when FAILED */
    const char *why;                  /* in: the failure message (may be NULL) */
    char msg[CAIRN_PROTO_MAX_TEXT + 1];
    bool has_msg;                     /* msg replaces the caller's message */
    const struct cairn_mval *result;  /* in/out: the result stored and shown */
    struct cairn_msg *holder;         /* owns a rewritten result */
    struct coord_image *img;          /* image the job makes */
    struct coord_image_rec img_next;  /* its next record when has_img_next */
    bool has_img_next, img_delete;
    const struct coord_image *name_winner; /* the name index's next answer when name_change */
    bool name_change;
    struct coord_sandbox *sb;         /* sandbox the job is about */
    struct coord_sandbox_rec sb_next; /* its next record when has_sb_next */
    bool has_sb_next;
    struct coord_snapshot *snap;      /* issue 6: memory snapshot the job makes */
    struct coord_snapshot *snap_next; /* owned: its next state (coord_snapshots.c) */
};
int coord_objs_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f);
void coord_objs_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply);

/* ---- coord_images.c ---------------------------------------------------------------------------- */

int coord_images_load(struct coord *c);
/* After the jobs are loaded: pending images and uploads without their job are dropped. */
void coord_images_reconcile(struct coord *c);
void coord_images_free(struct coord *c);
void coord_image_on_import(struct coord *c, struct cairn_msg **m);
void coord_image_on_ls(struct coord *c, const struct cairn_msg *m);
void coord_image_on_show(struct coord *c, const struct cairn_msg *m);
void coord_image_on_rm(struct coord *c, const struct cairn_msg *m);
void coord_upload_on_read(struct coord *c, const struct cairn_msg *m);
/* Idle uploads (COORD_UPLOAD_IDLE_S) are dropped. */
void coord_images_tick(struct coord *c, uint64_t now_mono);
struct coord_app *coord_app_find(struct coord *c, const char *app);
/* The app's managed domain id (16 bytes). */
int coord_app_domain(struct coord *c, struct coord_app *a, const uint8_t **out);
/* An image of app that sandboxes may use (ready, not expired), by id or by name. ENOTFOUND naming it. */
int coord_image_resolve(struct coord *c, const char *app, const char *ref, struct coord_image **out);
struct coord_image *coord_image_get(struct coord *c, const char *id);
/*
 * The layer chain of img, top first, at most COORD_CHAIN_MAX: every ancestor present (not pending, not
 * collected; an expired parent stays usable under a live child until collected) and of img's app. ECORRUPT.
 */
int coord_image_chain(struct coord *c, struct coord_image *img, struct coord_image **chain, size_t *n);
/* Put a (new) image in memory (c->images, its app's list; the name index when ready). */
int coord_image_add(struct coord *c, struct coord_image *img);
/* Take an image out of memory and free it. */
void coord_image_drop(struct coord *c, struct coord_image *img);
/* Make the newest ready image of (app, name) the one the name index names, staging n/ in c->batch. */
int coord_image_name_stage(struct coord *c, const char *app, const char *name, const struct coord_image *plus,
                           const struct coord_image *minus, const struct coord_image **winner);
void coord_image_name_apply(struct coord *c, const char *app, const char *name, const struct coord_image *winner);
/* A fresh image id / random object id with prefix ("im-", "sb-"). */
void coord_obj_new_id(struct coord *c, const char *prefix, char out[COORD_OBJ_ID_LEN + 1]);
/* Parts of coord_objs_finish_* for the image side of import and snapshot-fs jobs. */
int coord_image_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f);
void coord_image_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply);

/* ---- coord_sandboxes.c ------------------------------------------------------------------------- */

int coord_sandboxes_load(struct coord *c);
/* After the jobs are loaded: creating sandboxes without their job are failed. */
void coord_sandboxes_reconcile(struct coord *c);
void coord_sandboxes_free(struct coord *c);
void coord_sandbox_on_create(struct coord *c, struct cairn_msg **m);
void coord_sandbox_on_ls(struct coord *c, const struct cairn_msg *m);
void coord_sandbox_on_terminate(struct coord *c, struct cairn_msg **m);
void coord_sandbox_on_snapshot_fs(struct coord *c, struct cairn_msg **m);
struct coord_sandbox *coord_sandbox_get(struct coord *c, const char *id);
/* Put a (new) sandbox in memory (c->sandboxes, its app's list): ENOTFOUND (unknown app) or ENOMEM, unchanged. */
int coord_sandbox_add(struct coord *c, struct coord_sandbox *sb);
/* Take a sandbox out of memory and free it. */
void coord_sandbox_drop(struct coord *c, struct coord_sandbox *sb);
/* A fresh random runtime id (COORD_RUNTIME_ID_LEN hex characters). */
void coord_sandbox_new_runtime_id(char out[COORD_RUNTIME_ID_LEN + 1]);
/*
 * The sandbox id of app that an exec / snapshot may act on: RUNNING. ENOTFOUND
 * (unknown, other app, terminated), EUNAVAILABLE (failed: its worker died),
 * EAGAIN (still being created); message set.
 */
int coord_sandbox_usable(struct coord *c, const char *app, const char *id, struct coord_sandbox **out);
/*
 * The start of a request about sandbox id of the request's app (sandbox.mount, .unmount, .snapshot-fs,
 * .snapshot-dir, .snapshot): the request named need must carry a req_id (EINVAL "<need> needs a req_id";
 * need NULL: optional); a seen req_id answers with its job (coord_req_answered, kind); then the sandbox
 * must be usable (coord_sandbox_usable's error). NULL when *mp was answered.
 */
struct coord_sandbox *coord_sandbox_request(struct coord *c, struct cairn_msg **mp, const char *id, const char *req_id,
                                            const char *need, const char *kind, uint64_t wait_ms);
/* The params map of a job about sb, set in pm: runtime_id, sandbox, and worker (the pin) when it has one. */
struct cairn_mval *coord_sandbox_job_params(struct cairn_msg *pm, const struct coord_sandbox *sb);
/* Worker w died (why): its RUNNING sandboxes are failed. */
void coord_sandboxes_worker_lost(struct coord *c, struct coord_worker *w, const char *why);
/* Worker w registered listing the sandboxes it still runs (ids or runtime ids; n items of an array). */
void coord_sandboxes_worker_registered(struct coord *c, struct coord_worker *w, const struct cairn_mval *listed,
                                       size_t n);
/* Sandbox slots of w in use: running sandboxes + sandbox-create jobs on it. */
static inline size_t coord_worker_sbx_load(const struct coord_worker *w) { return w->nsbx + w->creating; }

/* ---- coord_exec.c ------------------------------------------------------------------------------ */

void coord_exec_on_request(struct coord *c, struct cairn_msg **m);
/* The exec job j now carries client x (coord_job_create). */
void coord_exec_attach(struct coord_exec *x, struct coord_job *j);
void coord_exec_on_output(struct coord *c, struct cairn_msg *m);
/* Retry held-back stream forwards (the client's queue had no room). */
void coord_exec_flush(struct coord *c);
/* Prepare/apply of a sandbox-exec job's end: the answer to its client. */
int coord_exec_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f);
void coord_exec_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply);
void coord_exec_free_all(struct coord *c);
/* Shutdown: every exec client gets EUNAVAILABLE now. */
void coord_exec_release_all(struct coord *c);

/* ---- coord_mounts.c (issue 5, coordinator-5) ----------------------------------------------------- */

void coord_sandbox_on_mount(struct coord *c, struct cairn_msg **m);
void coord_sandbox_on_unmount(struct coord *c, struct cairn_msg **m);
void coord_sandbox_on_snapshot_dir(struct coord *c, struct cairn_msg **m);
/* The end of sandbox-mount / sandbox-unmount / snapshot-dir jobs (coord_objs_finish_*). */
int coord_mounts_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f);
void coord_mounts_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply);

/* ---- coord_retention.c (issue 5, coordinator-5) -------------------------------------------------- */

/* job.refs from a worker: c/<owner>/<seq> (owner = the job's params "image" or "snapshot"). */
void coord_refs_on_job_refs(struct coord *c, struct cairn_msg *m);
/* Stage the deletion of every c/<owner>/ record into c->batch. */
int coord_refs_drop_stage(struct coord *c, const char *owner);
/* Whether owner has any c/ record. */
bool coord_refs_exist(struct coord *c, const char *owner);
/* A use of img now: last_used, and for sliding retention expires_at moves; stages i/ into c->batch. */
int coord_image_touch(struct coord *c, struct coord_image *img);
/* The same on a record copy (no staging): last_used_ns = now, sliding expires_at = now + its seconds. */
void coord_image_touch_rec(struct coord_image_rec *r, int64_t now_ns);
/* ENOTFOUND "image im-x expired on <UTC>" when img is expired (now or by state), else CAIRN_OK. */
int coord_image_check_expiry(struct coord *c, const struct coord_image *img);
/* "2026-01-02T03:04:05Z" for ns since the Unix epoch (UTC, no libc time functions). */
void coord_format_utc(int64_t ns, char out[32]);
/* Sweeper (every second from coord_tick, and after admin.clock.advance): expire, then collect. */
void coord_retention_sweep(struct coord *c);
void coord_retention_tick(struct coord *c, uint64_t now_mono);
/* After the jobs are loaded: count unfinished delete-chunks jobs (the write barrier). */
void coord_retention_load(struct coord *c);
void coord_retention_free(struct coord *c);
/* A write job (image-import, snapshot-fs, snapshot-dir, sandbox-snapshot): held back while a collection runs. */
bool coord_job_is_write(const struct coord_job *j);
/* The end of a delete-chunks job. */
void coord_retention_delete_ended(struct coord *c, struct coord_job *j);

/* ---- coord_snapshots.c (coordinator-6) ----------------------------------------------------------- */

/* Whether a live memory snapshot has image_id as its root image (it must not be collected). */
bool coord_snapshots_use_image(struct coord *c, const char *image_id);
/* Ids of the collectable snapshots (expired/removed/dropped, not collected); *ids freed with cairn_free. */
size_t coord_snapshots_collectable(struct coord *c, char (**ids)[COORD_OBJ_ID_LEN + 1]);
/* Snapshot id was collected (its refs are deleted by the caller). */
void coord_snapshots_collected(struct coord *c, const char *id);
/* Mark the snapshots expired at now_ns. */
void coord_snapshots_sweep(struct coord *c, int64_t now_ns);

enum coord_snap_state {
    COORD_SNAP_PENDING = 0, /* its sandbox-snapshot job has not succeeded yet: invisible */
    COORD_SNAP_READY = 1,
    COORD_SNAP_EXPIRED = 2, /* expired or removed: a tombstone (uses say so); collectable */
    COORD_SNAP_FAILED = 3,  /* its job failed: invisible; collectable (the worker may have written chunks) */
};
/* A memory snapshot x/<id> (snapshots.md "Records"). */
struct coord_snapshot {
    char id[COORD_OBJ_ID_LEN + 1];
    char app[COORD_ID_MAX + 1];
    char sandbox[COORD_OBJ_ID_LEN + 1];  /* taken from */
    char image[COORD_OBJ_ID_LEN + 1];    /* root image of that sandbox */
    char parent[COORD_OBJ_ID_LEN + 1];   /* sn the sandbox was restored from, or "" */
    char job[COORD_JOB_ID_LEN + 1];      /* its sandbox-snapshot job */
    char fingerprint[257];               /* runtime fingerprint ("" while pending) */
    enum coord_snap_state state;
    int64_t created_ns, expires_ns;      /* expires_ns: when it expires, or when it was removed */
    bool removed, collected;
    uint64_t size, stored;
    uint8_t *trees;                      /* owned msgpack map {root, ckpt, mounts} (ready, not collected) */
    size_t trees_len;
    unsigned restoring;                  /* memory only: restore groups of it still running */
};
int coord_snapshot_encode(const struct coord_snapshot *s, struct cairn_buf *out);
int coord_snapshot_decode(const uint8_t *p, size_t len, const char *key, struct coord_snapshot *s);
const char *coord_snap_state_name(enum coord_snap_state s);
struct coord_snapshot *coord_snapshot_get(struct coord *c, const char *id);
int coord_snapshots_load(struct coord *c);
/* After the jobs are loaded: pending snapshots without their job fail; restore groups are evaluated. */
void coord_snapshots_reconcile(struct coord *c);
void coord_snapshots_free(struct coord *c);
void coord_sandbox_on_snapshot(struct coord *c, struct cairn_msg **m);
void coord_sandbox_on_restore(struct coord *c, struct cairn_msg **m);
void coord_snapshot_on_ls(struct coord *c, const struct cairn_msg *m);
void coord_snapshot_on_show(struct coord *c, const struct cairn_msg *m);
void coord_snapshot_on_rm(struct coord *c, const struct cairn_msg *m);
/* The end of sandbox-snapshot, sandbox-restore (after the sandbox side) and restore jobs. */
int coord_snapshots_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f);
void coord_snapshots_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply);

#endif
