/*
 * worker_jobs_int.h: what the job files share (not for the rest of worker/: use worker_jobs.h).
 *
 *   worker_jobs.c        the job threads, shared helpers, noop / ingest / chunk-has
 *   worker_image.c       image-import, tree replication, layers for sandbox-create (the layer cache's builds)
 *   worker_sbjobs.c      sandbox-create, sandbox-terminate, snapshot-fs
 *   worker_exec.c        sandbox-exec with job.output streaming
 *   worker_dirjobs.c     sandbox-mount, sandbox-unmount, snapshot-dir, delete-chunks (issue 5)
 *
 * A struct jt is one job thread's own state: everything in it is used by that thread only (ZeroMQ sockets
 * are single-thread), created lazily and kept across jobs so connections stay up.
 */
#ifndef CAIRN_WORKER_JOBS_INT_H
#define CAIRN_WORKER_JOBS_INT_H

#include "worker_fetch.h"
#include "worker_jobs.h"
#include "worker_repl.h"

#include "cairn/tree.h"

struct job {
    struct job *next;
    struct cairn_msg *msg; /* the job.dispatch, owned */
    const char *id;
    const char *kind;
    unsigned cls;          /* JOB_CLASS_* */
    uint64_t deadline_ns;  /* 0: none */
    uint64_t deadline_ms;
    struct cairn_domain *csek; /* CSEK domain from dispatch domain/dek (guarded), NULL: none; job-only */
};

/* General jobs share job_threads threads; execs (long, mostly waiting) get threads of their own. */
enum { JOB_CLASS_GENERAL = 0, JOB_CLASS_EXEC = 1, JOB_CLASSES = 2 };

struct jt {
    struct cairn_wk_jobs *j;
    unsigned index;               /* thread number, for the routing id of `coord` */
    struct cairn_codec *codec;
    struct cairn_sock *pipe;      /* DEALER to the main thread (job.progress, job.result) */
    struct cairn_sock *coord;     /* DEALER to the coordinator (upload.read, job.output) */
    uint64_t coord_rid;           /* request ids on coord */
    uint64_t refs_seq;            /* next job.refs seq of the running job (reset per job) */
    struct cairn_wk_repl *repl;   /* chunk.put to peers */
    struct cairn_wk_fetch *fetch; /* chunk.get from peers */
};

/* ---- helpers (worker_jobs.c) ---- */

const struct cairn_wk_jobs_env *cairn_wk__env(const struct jt *t);
/* params[key] of the job, or NULL. */
const struct cairn_mval *cairn_wk__param(const struct job *jb, const char *key);
/* A string param: *out NULL when absent; CAIRN_EINVAL (naming it) when present but not a string. */
int cairn_wk__param_str(const struct job *jb, const char *key, bool required, const char **out);
/* The job's app (dispatch field, else envelope); CAIRN_EINVAL when none. */
int cairn_wk__job_app(const struct job *jb, const char **app);
/* Abandoned (shutdown) or past its deadline: the code to stop with (message set), else CAIRN_OK. */
int cairn_wk__job_check(struct jt *t, const struct job *jb);
void cairn_wk__progress(struct jt *t, const struct job *jb, uint64_t done, uint64_t total, const char *stage);
/* The managed domain of app (cached, shared, read-only). */
int cairn_wk__domain_of(struct cairn_wk_jobs *j, const char *app, const struct cairn_domain **out);
/* The thread's lazily made objects. */
int cairn_wk__codec(struct jt *t);
int cairn_wk__repl(struct jt *t);
int cairn_wk__fetch(struct jt *t);
/* The thread's DEALER to the coordinator: same key pair as the main thread's, a routing id of its own. */
int cairn_wk__coord(struct jt *t);

/* ---- CSEK and refs (issue 5; used by worker_dirjobs.c and worker_memjobs.c) ---- */

/* The job's domain: its CSEK domain (from job.dispatch domain/dek) when given, else the app's managed one.
   *d is borrowed (valid until the job ends). */
int cairn_wk__job_domain(struct jt *t, const struct job *jb, const struct cairn_domain **d);
/*
 * Send job.refs for every chunk (manifest + data) of the stored tree ref in domain d to the coordinator
 * (jt's DEALER), in batches of <= 4096 ids, seq 0,1,2.. continuing across calls of the same job (the seq
 * counter lives in struct jt, reset per job), each acknowledged before the next (resent on timeout; an error
 * reply fails). No coordinator configured: a no-op. Call it BEFORE cairn_wk__replicate_tree: replication
 * deletes the local copies of chunks outside this worker's placement set, and the walk needs the manifest.
 */
int cairn_wk__send_refs(struct jt *t, const struct job *jb, const struct cairn_domain *d,
                        const struct cairn_tree_ref *ref);

/* Strings from params: v is NULL-terminated (NULL when the param is absent); entries point into the job's
   message or into own[]. Release with cairn_wk__strv_release. */
struct wk_strv {
    const char **v;
    char **own;
    size_t n, nown;
};
/* An array of strings (at most 256). */
int cairn_wk__strv_array(const struct job *jb, const char *key, struct wk_strv *s);
/* params.env: an array of "K=V" strings, or a map of K -> V. */
int cairn_wk__strv_env(const struct job *jb, struct wk_strv *s);
void cairn_wk__strv_release(struct wk_strv *s);

/* params.runtime_id and its sandbox (a new reference): ENOTFOUND naming it when it does not run here. */
int cairn_wk__sandbox_of(struct jt *t, const struct job *jb, struct cairn_sandbox **sb, const char **rid);

/* ---- kinds ---- */

int cairn_wk__run_image_import(struct jt *t, const struct job *jb, struct cairn_msg *res);
int cairn_wk__run_sandbox_create(struct jt *t, const struct job *jb, struct cairn_msg *res);
int cairn_wk__run_sandbox_terminate(struct jt *t, const struct job *jb, struct cairn_msg *res);
int cairn_wk__run_snapshot_fs(struct jt *t, const struct job *jb, struct cairn_msg *res);
int cairn_wk__run_sandbox_exec(struct jt *t, const struct job *jb, struct cairn_msg *res);
/* worker_dirjobs.c (issue 5) */
int cairn_wk__run_sandbox_mount(struct jt *t, const struct job *jb, struct cairn_msg *res);
int cairn_wk__run_sandbox_unmount(struct jt *t, const struct job *jb, struct cairn_msg *res);
int cairn_wk__run_snapshot_dir(struct jt *t, const struct job *jb, struct cairn_msg *res);
int cairn_wk__run_delete_chunks(struct jt *t, const struct job *jb, struct cairn_msg *res);
/* Remove DATA_DIR/private/<rid> (CSEK layer dirs of a sandbox); rid NULL: every runtime id under private/
   that is not in keep[0..nkeep) (worker start). Failures are logged. */
void cairn_wk__private_cleanup(const char *data_dir, const char *rid, const char *const *keep, size_t nkeep);
/* DATA_DIR (the env's data_dir) into buf; EUNAVAILABLE on a worker without a sandbox runtime. */
int cairn_wk__data_dir(struct jt *t, char *buf, size_t cap);
/* worker_memjobs.c (issue 6) */
int cairn_wk__run_sandbox_snapshot(struct jt *t, const struct job *jb, struct cairn_msg *res);
int cairn_wk__run_sandbox_restore(struct jt *t, const struct job *jb, struct cairn_msg *res);

/* ---- shared by the image kinds (worker_image.c) ---- */

/* A layer reference {"image", "manifest_len", "manifest"} decoded (ref owns its chunks). */
struct wk_layer_ref {
    char image[65];
    struct cairn_tree_ref ref;
};
/* Decode a layer reference map; what names it in messages (e.g. "params.layers[1]"). */
int cairn_wk__layer_ref_parse(const struct cairn_mval *v, const char *what, struct wk_layer_ref *out);
/* Put a tree's manifest into result map r as "manifest_len" + "manifest" (36 bytes per chunk). */
int cairn_wk__layer_ref_put(struct cairn_msg *res, struct cairn_mval *r, const struct cairn_tree_ref *ref);
/*
 * A replication run (one implementation for every job that stores trees): the union of the chunks of one
 * or more stored trees of domain d goes to their placement sets (R and the membership current when the run
 * starts), as ingest does. With streaming, the data chunks go while the capture runs: begin before the
 * capture, put the run's hook into the capture's tree opts, send the refs once captured, then finish; the
 * finish pushes what is left (the manifests, and anything streaming missed: when streaming could not start
 * or stopped part-way, the finish starts a fresh run and pushes everything) and returns once every chunk
 * was acknowledged by its peers and the local store synced. Only then are the local copies of the chunks
 * whose set does not include this worker deleted: the refs may be sent between begin and finish.
 *
 *   begin    never fails but out of memory; a run that cannot start (too few live workers) fails in the
 *            finish instead. stream false: nothing happens before the finish (capture first).
 *   hook     sets o->chunk_stored / chunk_stored_arg when the run streams (else leaves o alone).
 *   stop     ends the streaming (job_rc not CAIRN_OK: the job failed, it stops at once, pushing nothing
 *            more); the error state (code and message) of the caller is kept. NULL-safe; idempotent.
 *   finish   stops the streaming if still running, then the final pass (job thread: progress as `stage`).
 *   destroy  stops the streaming at once if still running (a failed job), drops what is pending, frees.
 *            NULL-safe, nulls *run; keeps the caller's error state.
 * The streaming thread uses only t->repl (never the job thread's other sockets): between begin and
 * stop/finish/destroy the job thread must not use t->repl.
 */
struct wk_repl_run;
int cairn_wk__repl_run_begin(struct jt *t, const struct job *jb, const struct cairn_domain *d, bool stream,
                             const char *stage, struct wk_repl_run **run);
void cairn_wk__repl_run_hook(struct wk_repl_run *run, struct cairn_tree_opts *o);
void cairn_wk__repl_run_stop(struct wk_repl_run *run, int job_rc);
int cairn_wk__repl_run_finish(struct wk_repl_run *run, const struct cairn_tree_ref *const *refs, size_t nrefs);
void cairn_wk__repl_run_destroy(struct wk_repl_run **run);
/* One tree, capture first: begin (no streaming) + finish + destroy. */
int cairn_wk__replicate_tree(struct jt *t, const struct job *jb, const struct cairn_domain *d,
                             const struct cairn_tree_ref *ref, const char *stage);
/*
 * The layer dir of one layer of the app's domain d, from the cache or built now: missing chunks fetched
 * (manifest chunks first, then data chunks), then materialised in overlay mode. *path: caller frees.
 * fetched_chunks / fetched_bytes are added to.
 */
int cairn_wk__layer_get(struct jt *t, const struct job *jb, const struct cairn_domain *d,
                        const struct wk_layer_ref *lr, char **path, uint64_t *fetched_chunks,
                        uint64_t *fetched_bytes);
/* Like cairn_wk__layer_get, but outside the shared cache (CSEK layers): fetch and materialise (overlay
   mode) into dir, which must not exist yet. */
int cairn_wk__layer_build(struct jt *t, const struct job *jb, const struct cairn_domain *d,
                          const struct wk_layer_ref *lr, const char *dir, uint64_t *fetched_chunks,
                          uint64_t *fetched_bytes);

#endif
