/*
 * worker_memjobs.c: memory snapshots, the jobs sandbox-snapshot and sandbox-restore
 * (docs/internals/snapshots.md "Jobs"; notes gvisor-runsc.md §6-§7).
 *
 * sandbox-snapshot {runtime_id, sandbox, worker, snapshot}
 *   Refused with the sandbox untouched while an exec is live (EBUSY) or when the sandbox was created
 *   without enable_snapshot (EUNSUPPORTED); cairn_sandbox_checkpoint re-checks both under the sandbox's
 *   lock, so an exec that starts between our check and the checkpoint is still refused there.
 *   Then, in the app's managed domain:
 *     1. `runsc checkpoint` into DATA_DIR/tmp/<job id>/ckpt (one compressed checkpoint.img);
 *     2. capture the root upper (overlay mode; the mount points of our mounts left out), each mount's
 *        merged tree (plain mode, mounts below it left out) and the checkpoint dir (plain mode). Capture
 *        chunks, hashes, compresses, encrypts and stores with its thread pool straight from the file runsc
 *        wrote: the image is never copied;
 *     3. terminate the sandbox (its processes are gone since the checkpoint), in a thread of its own that
 *        overlaps step 4;
 *     4. send job.refs for every tree (owner = params.snapshot), then replicate the union of their chunks
 *        to the placement sets (one run, the shared cairn_wk__repl_run_* of worker_image.c). The replication
 *        starts with step 2: a thread pushes each data chunk to its peers as soon as the capture reports
 *        it stored (cairn_tree_opts.chunk_stored), and the final pass after the refs only adds what is
 *        left (the manifests) and waits for the acknowledgements. Local copies outside this worker's
 *        placement set are deleted at the very end, once everything was acknowledged.
 *   After a successful checkpoint the sandbox is terminated whatever happens next (the job then fails with
 *   the failed step's error). On success the checkpoint dir becomes the layer `<sn>-ckpt` of this worker's
 *   layer cache (a rename, when DATA_DIR/tmp and the cache share a filesystem): a restore here then needs
 *   no rebuild of the biggest tree. The tmp dir is removed on every path.
 *   Result: root, ckpt (layer references; "image" = the layer-cache name `<sn>-root` / `<sn>-ckpt`),
 *   mounts [{path, tree}] (tree "image" = `<sn>-m<i>`), size (logical bytes of all trees), stored (bytes
 *   written for new chunks), checkpoint_ms (runsc checkpoint alone), fingerprint (the runtime's).
 *
 * sandbox-restore {sandbox, runtime_id, worker, snapshot, layers, root, ckpt, mounts}
 *   Every tree goes through the layer cache under its agreed name (`<sn>-root`, `<sn>-m<i>`, `<sn>-ckpt`;
 *   image layers by image id), built once per worker however many clones restore concurrently (the
 *   cache's single builder), chunks fetched from peers as needed. The names come from params.snapshot,
 *   never from the references' "image" fields. Then cairn_sandbox_restore with the new runtime id, root
 *   lowers = the image layers, and each mount at its path as an overlay whose only lower is its tree (a
 *   fresh upper per clone). The restored sandbox has snapshots enabled.
 *   Departure from the agreement (which stacks the root diff as the top lower): the root diff is built
 *   once in the cache (`<sn>-root`: one fetch per worker), then materialised again from the now local
 *   chunks into DATA_DIR/tmp/<job>/upper and moved into place as the clone's own upper dir
 *   (cairn_sandbox_spec.upper_from). With the diff as a read-only lower, the clone's upper would hold only
 *   what changed since the restore, and a snapshot of the clone (whose restore gets the image's layers
 *   only) would lose its parent's diff. The cost is one local materialisation of the root diff per clone.
 *   A dispatch for a runtime id that already runs here succeeds at once (a resend). Result: restore_ms (the
 *   whole job on this worker), fetched_chunks, fetched_bytes, worker.
 *
 * Stdio of the restored main process (notes §6): runsc run and runsc restore both get the sandbox's
 * runsc.log opened O_APPEND as stdout/stderr (sandbox.c start_and_wait), the one combination under which a
 * restored process keeps writing its output correctly.
 *
 * DATA_DIR comes from the job env (cairn_wk__data_dir). A tmp dir left by a worker
 * that died mid-job is not removed by anyone yet (noted limitation).
 */
#include "worker_jobs_int.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LAYERS_MAX 32u
#define MOUNTS_MAX 64u
#define NAME_MAX_LEN 64u

/* ---- small helpers ---- */

static int runtime_of(struct jt *t, const struct job *jb, struct cairn_runtime **rt)
{
    *rt = cairn_wk__env(t)->rt;
    if (!*rt)
        return cairn_err_set(CAIRN_EUNAVAILABLE, "%s: worker '%s' runs no sandbox runtime", jb->kind,
                             cairn_wk__env(t)->worker_id);
    return CAIRN_OK;
}

/* params.snapshot: an id that leaves room for the "-ckpt" / "-m<i>" suffixes of the layer names. */
static int snapshot_param(const struct job *jb, const char **sn)
{
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "snapshot", true, sn));
    if (!cairn_wk_layer_id_valid(*sn) || strlen(*sn) > NAME_MAX_LEN - 8)
        return cairn_err_set(CAIRN_EINVAL, "%s: params.snapshot '%.80s' is not a snapshot id", jb->kind, *sn);
    return CAIRN_OK;
}

static void layer_name(char out[NAME_MAX_LEN + 1], const char *sn, const char *suffix, long idx)
{
    if (idx >= 0)
        snprintf(out, NAME_MAX_LEN + 1, "%s-%s%ld", sn, suffix, idx);
    else
        snprintf(out, NAME_MAX_LEN + 1, "%s-%s", sn, suffix);
}

/* DATA_DIR/tmp/<job id> (caller frees); DATA_DIR/tmp is made when missing. */
static int job_tmp_dir(struct jt *t, const struct job *jb, char **out)
{
    *out = NULL;
    if (!cairn_wk_layer_id_valid(jb->id))
        return cairn_err_set(CAIRN_EINVAL, "%s: job id '%.80s' cannot name a directory", jb->kind, jb->id);
    char dd[4096];
    CAIRN_FORWARD_IF_ERROR(cairn_wk__data_dir(t, dd, sizeof(dd)));
    size_t cap = strlen(dd) + strlen(jb->id) + 16;
    char *p = cairn_malloc(cap);
    if (!p)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    snprintf(p, cap, "%s/tmp", dd);
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        int rc = cairn_err_set_errno(CAIRN_EIO, errno, "%s: make '%s'", jb->kind, p);
        cairn_free(p);
        return rc;
    }
    snprintf(p, cap, "%s/tmp/%s", dd, jb->id);
    *out = p;
    return CAIRN_OK;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = cairn_malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cairn_free(v[i]);
    cairn_free(v);
}

/* ---- sandbox-snapshot ---- */

struct snap_tree {
    char name[NAME_MAX_LEN + 1];
    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
};

static int capture(struct jt *t, const struct cairn_domain *d, const char *src, unsigned flags,
                   const char *const *exclude, size_t n_exclude, struct snap_tree *out, const char *what,
                   const char *rid, struct wk_repl_run *run)
{
    struct cairn_tree_opts o = {.flags = flags, .exclude = exclude, .n_exclude = n_exclude};
    cairn_wk__repl_run_hook(run, &o);
    int rc = cairn_tree_capture(cairn_wk__env(t)->store, d, src, &o, &out->ref, &out->st);
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "memory snapshot of sandbox %s: capture of %s: %s", rid, what, cairn_err_msg());
    return CAIRN_OK;
}

/*
 * Capture mount i's merged tree: its mount point is resolved inside the sandbox's root as the sandbox
 * sees it (openat2 RESOLVE_IN_ROOT: symlinks planted in the sandbox cannot lead the capture out of it);
 * mounts below it are left out (they are trees of their own).
 */
static int capture_mount(struct jt *t, const struct cairn_domain *d, struct cairn_sandbox *sb, char **mounts,
                         size_t nmounts, size_t i, struct snap_tree *out, const char *rid,
                         struct wk_repl_run *run)
{
    const char *mp = mounts[i];
    size_t ml = strlen(mp);
    const char **excl = cairn_calloc(nmounts ? nmounts : 1, sizeof(*excl));
    if (!excl)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    size_t nx = 0;
    for (size_t j = 0; j < nmounts; j++)
        if (j != i && !strncmp(mounts[j], mp, ml) && mounts[j][ml] == '/')
            excl[nx++] = mounts[j] + ml + 1;
    int rootfd = open(cairn_sandbox_merged_dir(sb), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fd = -1, rc = CAIRN_OK;
    if (rootfd < 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "memory snapshot of sandbox %s: open its root", rid);
        goto out;
    }
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT};
    fd = (int)syscall(SYS_openat2, rootfd, mp[0] == '/' ? mp + 1 : mp, &how, sizeof(how));
    if (fd < 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "memory snapshot of sandbox %s: open its mount at %s", rid, mp);
        goto out;
    }
    char src[64], what[1100];
    snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
    snprintf(what, sizeof(what), "the mount at %s", mp);
    rc = capture(t, d, src, 0, excl, nx, out, what, rid, run);
out:
    if (fd >= 0)
        close(fd);
    if (rootfd >= 0)
        close(rootfd);
    cairn_free(excl);
    return rc;
}

static int put_tree(struct cairn_msg *res, struct cairn_mval *map, const struct snap_tree *tr)
{
    cairn_mval_put_str(res, map, "image", tr->name);
    return cairn_wk__layer_ref_put(res, map, &tr->ref);
}

/* Make the checkpoint dir the layer <sn>-ckpt of the cache (its build is a rename). */
struct seed {
    const char *from;
};

static int seed_build(void *arg, const char *tmp)
{
    struct seed *s = arg;
    if (rename(s->from, tmp) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "move the checkpoint '%s' into the layer cache", s->from);
    return CAIRN_OK;
}

/* Terminate (retried once: it redoes every step) from a thread of its own; the outcome in rc / msg. */
struct term {
    struct cairn_sandbox *sb;
    pthread_t th;
    int rc;
    char msg[512];
};

static void *term_main(void *arg)
{
    struct term *tm = arg;
    tm->rc = cairn_sandbox_terminate(tm->sb);
    if (tm->rc != CAIRN_OK)
        tm->rc = cairn_sandbox_terminate(tm->sb);
    if (tm->rc != CAIRN_OK)
        snprintf(tm->msg, sizeof(tm->msg), "%s", cairn_err_msg());
    return NULL;
}

int cairn_wk__run_sandbox_snapshot(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    uint64_t t0 = cairn_now_mono_ns();
    struct cairn_runtime *rt;
    const char *rid = NULL, *sn = NULL, *app = NULL;
    const struct cairn_domain *d = NULL;
    CAIRN_FORWARD_IF_ERROR(runtime_of(t, jb, &rt));
    CAIRN_FORWARD_IF_ERROR(snapshot_param(jb, &sn));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_app(jb, &app));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__domain_of(t->j, app, &d));
    struct cairn_sandbox *sb = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__sandbox_of(t, jb, &sb, &rid));

    char **mounts = NULL, *tmp = NULL, *ckpt = NULL;
    size_t nmounts = 0, ntrees = 0;
    struct snap_tree *trees = NULL; /* [0] root, [1] ckpt, [2 + i] mount i */
    bool checkpointed = false, terminated = false;
    uint64_t checkpoint_ms = 0;
    struct wk_repl_run *run = NULL;
    int rc = CAIRN_OK;
    if (!cairn_sandbox_snapshot_enabled(sb)) {
        rc = cairn_err_set(CAIRN_EUNSUPPORTED, "sandbox %s was not created with --enable-snapshot", rid);
        goto out;
    }
    unsigned execs = cairn_sandbox_live_execs(sb);
    if (execs) {
        rc = cairn_err_set(CAIRN_EBUSY, "an exec is still running in sandbox %s (%u live): wait for it to end", rid,
                           execs);
        goto out;
    }
    if ((rc = cairn_sandbox_mounts(sb, &mounts, &nmounts)) != CAIRN_OK)
        goto out;
    if (nmounts > MOUNTS_MAX) {
        rc = cairn_err_set(CAIRN_EUNSUPPORTED, "sandbox %s has %zu mounts; a memory snapshot holds at most %u", rid,
                           nmounts, MOUNTS_MAX);
        goto out;
    }
    ntrees = 2 + nmounts;
    if (!(trees = cairn_calloc(ntrees, sizeof(*trees)))) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    layer_name(trees[0].name, sn, "root", -1);
    layer_name(trees[1].name, sn, "ckpt", -1);
    for (size_t i = 0; i < nmounts; i++)
        layer_name(trees[2 + i].name, sn, "m", (long)i);
    if ((rc = job_tmp_dir(t, jb, &tmp)) != CAIRN_OK)
        goto out;
    if ((rc = cairn_wk_rmrf(tmp)) != CAIRN_OK) /* a resent dispatch of this job */
        goto out;
    if (!(ckpt = path_join(tmp, "ckpt"))) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    if (mkdir(tmp, 0700) != 0 || mkdir(ckpt, 0700) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "memory snapshot of sandbox %s: make '%s'", rid, ckpt);
        goto out;
    }
    if ((rc = cairn_wk__job_check(t, jb)) != CAIRN_OK)
        goto out;

    cairn_wk__progress(t, jb, 0, ntrees, "checkpoint");
    uint64_t tc = cairn_now_mono_ns();
    rc = cairn_sandbox_checkpoint(sb, ckpt);
    checkpoint_ms = (cairn_now_mono_ns() - tc) / 1000000u;
    if (rc != CAIRN_OK) {
        if (rc == CAIRN_EBUSY) /* an exec started after our check */
            rc = cairn_err_set(CAIRN_EBUSY, "an exec is still running in sandbox %s: wait for it to end", rid);
        goto out;
    }
    checkpointed = true;

    /* the replication starts with the captures: each data chunk streams to its peers once stored (when
       the run cannot start, e.g. too few live workers, its finish below starts it again and fails there,
       after the refs, as it always did) */
    if ((rc = cairn_wk__repl_run_begin(t, jb, d, true, "replicate", &run)) != CAIRN_OK)
        goto out;

    /* the captures: the sandbox's processes are gone, nothing changes the trees any more */
    cairn_wk__progress(t, jb, 0, ntrees, "capture");
    rc = capture(t, d, ckpt, 0, NULL, 0, &trees[1], "the checkpoint image", rid, run);
    if (rc == CAIRN_OK)
        rc = capture(t, d, cairn_sandbox_upper_dir(sb), CAIRN_TREE_OVERLAY, (const char *const *)mounts, nmounts,
                     &trees[0], "the root filesystem", rid, run);
    for (size_t i = 0; i < nmounts && rc == CAIRN_OK; i++)
        rc = capture_mount(t, d, sb, mounts, nmounts, i, &trees[2 + i], rid, run);
    uint64_t capture_ms = (cairn_now_mono_ns() - tc) / 1000000u - checkpoint_ms;
    if (rc != CAIRN_OK) /* a failed capture stops the streaming at once (before the terminate below) */
        cairn_wk__repl_run_stop(run, rc);
    /* the sandbox goes (its processes went with the checkpoint): in a thread of its own when the captures
       succeeded, so that it overlaps the refs and the replication; else right here */
    struct term tm = {.sb = sb};
    bool term_thread = false;
    if (rc == CAIRN_OK)
        term_thread = pthread_create(&tm.th, NULL, term_main, &tm) == 0;
    if (!term_thread) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        term_main(&tm);
        if (rc != CAIRN_OK)
            cairn_err_set(rc, "%s", msg);
    }
    uint64_t tr0 = cairn_now_mono_ns();
    /* refs first: the replication may drop local copies, manifest chunks included */
    if (rc == CAIRN_OK)
        rc = cairn_wk__job_check(t, jb);
    for (size_t i = 0; i < ntrees && rc == CAIRN_OK; i++)
        rc = cairn_wk__send_refs(t, jb, d, &trees[i].ref);
    /* the streaming pushed the chunks reported so far meanwhile; a failed job stops it at once */
    cairn_wk__repl_run_stop(run, rc);
    if (rc == CAIRN_OK) {
        const struct cairn_tree_ref *refs[2 + MOUNTS_MAX];
        for (size_t i = 0; i < ntrees; i++)
            refs[i] = &trees[i].ref;
        rc = cairn_wk__repl_run_finish(run, refs, ntrees);
    }
    uint64_t repl_ms = (cairn_now_mono_ns() - tr0) / 1000000u;
    if (term_thread)
        pthread_join(tm.th, NULL);
    uint64_t term_wait_ms = (cairn_now_mono_ns() - tr0) / 1000000u - repl_ms;
    char failed[1024]; /* the job's error so far, kept across the cleanup below */
    snprintf(failed, sizeof(failed), "%s", cairn_err_msg());
    if (tm.rc == CAIRN_OK) {
        terminated = true;
        char dd[4096]; /* as sandbox-terminate does (a CSEK mount never gets this far: refused upstream) */
        if (cairn_wk__data_dir(t, dd, sizeof(dd)) == CAIRN_OK)
            cairn_wk__private_cleanup(dd, rid, NULL, 0);
        else
            cairn_err_clear();
    } else if (rc == CAIRN_OK) { /* the snapshot is good; the leftovers are removed by the next reconcile */
        cairn_error("memory snapshot %s: terminating sandbox %s after its checkpoint failed: %s", sn, rid, tm.msg);
        terminated = true; /* tried twice already */
    }
    if (rc != CAIRN_OK) {
        cairn_err_set(rc, "%s", failed);
        goto out;
    }

    uint64_t size = 0, stored = 0;
    for (size_t i = 0; i < ntrees; i++) {
        size += trees[i].st.bytes;
        stored += trees[i].st.stored_bytes;
    }
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    rc = put_tree(res, cairn_mval_put_map(res, r, "root"), &trees[0]);
    if (rc == CAIRN_OK)
        rc = put_tree(res, cairn_mval_put_map(res, r, "ckpt"), &trees[1]);
    struct cairn_mval *ma = cairn_mval_put_array(res, r, "mounts");
    for (size_t i = 0; i < nmounts && rc == CAIRN_OK; i++) {
        struct cairn_mval *m = cairn_mval_push_map(res, ma);
        cairn_mval_put_str(res, m, "path", mounts[i]);
        rc = put_tree(res, cairn_mval_put_map(res, m, "tree"), &trees[2 + i]);
    }
    if (rc != CAIRN_OK)
        goto out;
    cairn_mval_put_u64(res, r, "size", size);
    cairn_mval_put_u64(res, r, "stored", stored);
    cairn_mval_put_u64(res, r, "checkpoint_ms", checkpoint_ms);
    cairn_mval_put_str(res, r, "fingerprint", cairn_runtime_fingerprint(rt));
    cairn_mval_put_str(res, r, "worker", e->worker_id);

    /* keep the checkpoint as this worker's <sn>-ckpt layer: a restore here starts without a rebuild */
    uint64_t ts = cairn_now_mono_ns();
    {
        struct seed s = {.from = ckpt};
        char *lp = NULL;
        bool built = false;
        if (cairn_wk_layers_get(e->layers, trees[1].name, seed_build, &s, &lp, &built) != CAIRN_OK)
            cairn_info("memory snapshot %s: checkpoint not kept as a cached layer: %s", sn, cairn_err_msg());
        cairn_free(lp);
        cairn_err_clear();
    }
    uint64_t seed_ms = (cairn_now_mono_ns() - ts) / 1000000u;
    cairn_info("memory snapshot %s of sandbox %s: checkpoint %llu ms, capture %llu ms, refs + replication %llu ms, "
               "then waited %llu ms for the terminate, kept as a layer %llu ms, total %llu ms; %llu bytes in %zu trees, "
               "%llu stored",
               sn, rid, (unsigned long long)checkpoint_ms, (unsigned long long)capture_ms,
               (unsigned long long)repl_ms, (unsigned long long)term_wait_ms, (unsigned long long)seed_ms,
               (unsigned long long)((cairn_now_mono_ns() - t0) / 1000000u),
               (unsigned long long)size, ntrees, (unsigned long long)stored);
out:
    cairn_wk__repl_run_destroy(&run); /* a streaming one only on an early exit: it stops at once */
    if (checkpointed && !terminated) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        if (cairn_sandbox_terminate(sb) != CAIRN_OK)
            cairn_error("memory snapshot %s: terminate sandbox %s: %s", sn, rid, cairn_err_msg());
        if (rc != CAIRN_OK)
            cairn_err_set(rc, "%s", msg);
    }
    if (tmp) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        if (cairn_wk_rmrf(tmp) != CAIRN_OK)
            cairn_warn("memory snapshot %s: remove '%s': %s", sn, tmp, cairn_err_msg());
        if (rc != CAIRN_OK)
            cairn_err_set(rc, "%s", msg);
    }
    for (size_t i = 0; i < ntrees; i++)
        cairn_tree_ref_release(&trees[i].ref);
    cairn_free(trees);
    free_strs(mounts, nmounts);
    cairn_free(ckpt);
    cairn_free(tmp);
    cairn_sandbox_release(&sb);
    return rc;
}

/* ---- sandbox-restore ---- */

/* A layer reference from v, cached under name (whatever its own "image" field says). */
static int tree_get(struct jt *t, const struct job *jb, const struct cairn_domain *d, const struct cairn_mval *v,
                    const char *what, const char *name, char **path, uint64_t *fc, uint64_t *fb)
{
    struct wk_layer_ref lr;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__layer_ref_parse(v, what, &lr));
    snprintf(lr.image, sizeof(lr.image), "%s", name);
    int rc = cairn_wk__layer_get(t, jb, d, &lr, path, fc, fb);
    cairn_tree_ref_release(&lr.ref);
    return rc;
}

int cairn_wk__run_sandbox_restore(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    uint64_t t0 = cairn_now_mono_ns();
    struct cairn_runtime *rt;
    const char *rid = NULL, *sn = NULL, *app = NULL, *name = NULL;
    const struct cairn_domain *d = NULL;
    CAIRN_FORWARD_IF_ERROR(runtime_of(t, jb, &rt));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "runtime_id", true, &rid));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "sandbox", false, &name));
    CAIRN_FORWARD_IF_ERROR(snapshot_param(jb, &sn));
    if (strlen(rid) != CAIRN_SANDBOX_ID_LEN)
        return cairn_err_set(CAIRN_EINVAL, "sandbox-restore: params.runtime_id must be %d hex characters",
                             CAIRN_SANDBOX_ID_LEN);
    const struct cairn_mval *lv = cairn_wk__param(jb, "layers");
    size_t nl = lv ? cairn_mval_len(lv) : 0;
    if (lv && (cairn_mval_kind(lv) != CAIRN_MV_ARRAY || nl > LAYERS_MAX))
        return cairn_err_set(CAIRN_EINVAL, "sandbox-restore: params.layers must be an array of at most %u layer "
                             "references", LAYERS_MAX);
    const struct cairn_mval *rootv = cairn_wk__param(jb, "root"), *ckv = cairn_wk__param(jb, "ckpt");
    if (!rootv || !ckv)
        return cairn_err_set(CAIRN_EINVAL, "sandbox-restore: params.root and params.ckpt are required");
    const struct cairn_mval *mv = cairn_wk__param(jb, "mounts");
    size_t nm = mv && cairn_mval_kind(mv) != CAIRN_MV_NIL ? cairn_mval_len(mv) : 0;
    if (mv && cairn_mval_kind(mv) != CAIRN_MV_NIL && (cairn_mval_kind(mv) != CAIRN_MV_ARRAY || nm > MOUNTS_MAX))
        return cairn_err_set(CAIRN_EINVAL, "sandbox-restore: params.mounts must be an array of at most %u mounts",
                             MOUNTS_MAX);
    struct cairn_sandbox *sb = NULL;
    if (cairn_runtime_sandbox_get(rt, rid, &sb) == CAIRN_OK) {
        cairn_info("sandbox %s (%s) already runs here: restored before", rid, name ? name : "?");
        cairn_sandbox_release(&sb);
        struct cairn_mval *r = cairn_msg_set_map(res, "result");
        cairn_mval_put_u64(res, r, "restore_ms", 0);
        cairn_mval_put_u64(res, r, "fetched_chunks", 0);
        cairn_mval_put_u64(res, r, "fetched_bytes", 0);
        cairn_mval_put_str(res, r, "worker", e->worker_id);
        return CAIRN_OK;
    }
    cairn_err_clear();
    size_t count = cairn_runtime_count(rt);
    if (count >= e->capacity)
        return cairn_err_set(CAIRN_EBUSY, "worker '%s' is full: %zu sandboxes, capacity %llu", e->worker_id, count,
                             (unsigned long long)e->capacity);
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_app(jb, &app));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__domain_of(t->j, app, &d));

    char *lowers[LAYERS_MAX] = {0}; /* the image layers */
    char *mpaths[MOUNTS_MAX] = {0}, *ckpt = NULL, *rootl = NULL, *tmp = NULL, *upper = NULL;
    const char *mlow[MOUNTS_MAX] = {0};
    struct cairn_mount_spec ms[MOUNTS_MAX];
    uint64_t fc = 0, fb = 0;
    char lname[NAME_MAX_LEN + 1];
    memset(ms, 0, sizeof(ms));
    /* the root diff: built once per worker in the cache (so its chunks are fetched once), then a private
       copy of it becomes this clone's upper dir */
    struct wk_layer_ref root = {0};
    layer_name(lname, sn, "root", -1);
    int rc = cairn_wk__layer_ref_parse(rootv, "params.root", &root);
    if (rc == CAIRN_OK) {
        snprintf(root.image, sizeof(root.image), "%s", lname);
        rc = cairn_wk__layer_get(t, jb, d, &root, &rootl, &fc, &fb);
    }
    if (rc == CAIRN_OK && (rc = job_tmp_dir(t, jb, &tmp)) == CAIRN_OK && (rc = cairn_wk_rmrf(tmp)) == CAIRN_OK) {
        if (mkdir(tmp, 0700) != 0)
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "sandbox-restore: make '%s'", tmp);
        else if (!(upper = path_join(tmp, "upper")))
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
        else
            rc = cairn_wk__layer_build(t, jb, d, &root, upper, &fc, &fb);
    }
    for (size_t i = 0; i < nl && rc == CAIRN_OK; i++) {
        char what[48];
        snprintf(what, sizeof(what), "params.layers[%zu]", i);
        struct wk_layer_ref lr;
        rc = cairn_wk__layer_ref_parse(cairn_mval_at(lv, i), what, &lr);
        if (rc == CAIRN_OK) {
            rc = cairn_wk__layer_get(t, jb, d, &lr, &lowers[i], &fc, &fb);
            cairn_tree_ref_release(&lr.ref);
        }
    }
    for (size_t i = 0; i < nm && rc == CAIRN_OK; i++) {
        const struct cairn_mval *m = cairn_mval_at(mv, i);
        const struct cairn_mval *pv = m ? cairn_mval_get(m, "path") : NULL;
        const char *p = NULL;
        size_t plen = 0;
        char what[48];
        snprintf(what, sizeof(what), "params.mounts[%zu].tree", i);
        if (!pv || cairn_mval_str(pv, &p, &plen) != CAIRN_OK || plen == 0 || p[0] != '/') {
            rc = cairn_err_set(CAIRN_EINVAL, "sandbox-restore: params.mounts[%zu].path must be an absolute path", i);
            break;
        }
        layer_name(lname, sn, "m", (long)i);
        rc = tree_get(t, jb, d, cairn_mval_get(m, "tree"), what, lname, &mpaths[i], &fc, &fb);
        if (rc == CAIRN_OK) {
            mlow[i] = mpaths[i];
            ms[i] = (struct cairn_mount_spec){
                .path = p, .kind = CAIRN_MOUNT_OVERLAY, .lowers = &mlow[i], .n_lowers = 1};
        }
    }
    if (rc == CAIRN_OK) {
        layer_name(lname, sn, "ckpt", -1);
        rc = tree_get(t, jb, d, ckv, "params.ckpt", lname, &ckpt, &fc, &fb);
    }
    if (rc == CAIRN_OK)
        rc = cairn_wk__job_check(t, jb);
    if (rc != CAIRN_OK)
        goto out;
    uint64_t tr = cairn_now_mono_ns();
    struct cairn_sandbox_spec spec = {
        .lowers = (const char *const *)lowers,
        .n_lowers = nl,
        .enable_snapshot = true,
        .mounts = ms,
        .n_mounts = nm,
        .upper_from = upper,
    };
    snprintf(spec.id, sizeof(spec.id), "%s", rid);
    rc = cairn_sandbox_restore(rt, &spec, ckpt, &sb);
    if (rc != CAIRN_OK) {
        rc = cairn_err_set(rc, "restore of snapshot %s: %s", sn, cairn_err_msg());
        goto out;
    }
    cairn_sandbox_release(&sb);
    uint64_t ms_total = (cairn_now_mono_ns() - t0) / 1000000u;
    cairn_info("sandbox %s (%s) restored from %s in %llu ms (runsc restore %llu ms; %llu chunks, %llu bytes "
               "fetched)", rid, name ? name : "?", sn, (unsigned long long)ms_total,
               (unsigned long long)((cairn_now_mono_ns() - tr) / 1000000u), (unsigned long long)fc,
               (unsigned long long)fb);
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_u64(res, r, "restore_ms", ms_total);
    cairn_mval_put_u64(res, r, "fetched_chunks", fc);
    cairn_mval_put_u64(res, r, "fetched_bytes", fb);
    cairn_mval_put_str(res, r, "worker", e->worker_id);
out:
    if (tmp) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        if (cairn_wk_rmrf(tmp) != CAIRN_OK)
            cairn_warn("sandbox-restore: remove '%s': %s", tmp, cairn_err_msg());
        if (rc != CAIRN_OK)
            cairn_err_set(rc, "%s", msg);
    }
    cairn_tree_ref_release(&root.ref);
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(lowers); i++)
        cairn_free(lowers[i]);
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(mpaths); i++)
        cairn_free(mpaths[i]);
    cairn_free(ckpt);
    cairn_free(rootl);
    cairn_free(upper);
    cairn_free(tmp);
    return rc;
}
