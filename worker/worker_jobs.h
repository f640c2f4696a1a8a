/*
 * worker_jobs.h: the job threads of a worker and the job kinds (docs/internals/cluster.md "Worker",
 * docs/internals/sandboxes.md "Jobs"): noop, ingest, chunk-has, image-import, sandbox-create,
 * sandbox-exec, sandbox-terminate, snapshot-fs.
 *
 * The main thread submits each accepted job.dispatch; a job thread runs it and sends its job.progress
 * and job.result messages to the main thread through the inproc pipe (env.pipe_endpoint). The messages a
 * job exchanges with the coordinator while it runs (upload.read, job.output) go over the job thread's own
 * DEALER to the coordinator, never over the main thread's socket. A job abandoned at shutdown (env.abandon
 * set) sends no result; the coordinator fails it when the heartbeats stop.
 */
#ifndef CAIRN_WORKER_JOBS_H
#define CAIRN_WORKER_JOBS_H

#include "sandbox.h"
#include "worker_layers.h"
#include "worker_members.h"
#include "worker_peer.h"

#include "cairn/crypto.h"
#include "cairn/store.h"
#include "cairn/transport.h"

#include <stdatomic.h>

#define CAIRN_WK_INGEST_MAX (1ull << 30)

struct cairn_wk_jobs_env {
    const char *worker_id;
    struct cairn_net *net;                /* thread-safe */
    const struct cairn_curve_keys *keys;  /* this worker's key pair (peer clients, pipe) */
    struct cairn_store *store;            /* thread-safe */
    struct cairn_wk_stats *stats;
    struct cairn_wk_view *view;           /* membership and R */
    const struct cairn_secret *master;    /* cluster master key, or NULL (ingest then fails with EKEY) */
    const char *pipe_endpoint;            /* inproc ROUTER of the main thread */
    uint64_t replication_timeout_ms;
    atomic_int *abandon;                  /* non-zero: running jobs stop at their next check, silently */
    const char *coordinator;              /* the coordinator's worker endpoint, or NULL (no coordinator) */
    const char *coordinator_key;          /* its public key (Z85) */
    struct cairn_runtime *rt;             /* sandboxes (thread-safe); NULL: sandbox jobs fail EUNAVAILABLE */
    struct cairn_wk_layers *layers;       /* the layer cache (thread-safe) */
    const char *data_dir;                 /* DATA_DIR, absolute (tmp/ and private/ of the snapshot jobs) */
    uint64_t capacity;                    /* at most this many sandboxes */
};

struct cairn_wk_jobs;

/* Start `threads` job threads. env and everything it points to must outlive the pool. */
int cairn_wk_jobs_new(struct cairn_wk_jobs **out, const struct cairn_wk_jobs_env *env, unsigned threads,
                      unsigned queue);
/*
 * Hand a job.dispatch to the pool (takes *dispatch and sets it to NULL on success). CAIRN_EBUSY when
 * every thread is busy and `queue` jobs already wait (sandbox-exec: when 64 execs run, each on a thread
 * of its own); the message stays the caller's then.
 */
int cairn_wk_jobs_submit(struct cairn_wk_jobs *j, struct cairn_msg **dispatch);
/* Jobs accepted and not finished (queued + running). */
unsigned cairn_wk_jobs_active(struct cairn_wk_jobs *j);
/* Stop the threads: queued jobs are dropped, running ones finish or see env.abandon. NULL-safe. */
void cairn_wk_jobs_destroy(struct cairn_wk_jobs **j);

/*
 * The deterministic data of an ingest job: the little-endian 64-bit outputs of splitmix64 seeded with
 * `seed`, as one byte stream. Exposed for tests.
 */
struct cairn_wk_gen {
    uint64_t state;
    uint8_t carry[8];
    unsigned ncarry;
};
void cairn_wk_gen_init(struct cairn_wk_gen *g, uint64_t seed);
void cairn_wk_gen_fill(struct cairn_wk_gen *g, uint8_t *out, size_t n);

#endif
