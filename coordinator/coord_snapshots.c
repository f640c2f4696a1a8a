/*
 * coord_snapshots.c: memory snapshots and clone fan-out (docs/internals/snapshots.md, issue 6): the
 * x/<sn id> records and their codec, sandbox.snapshot and what the end of its sandbox-snapshot job does,
 * sandbox.restore (a coordinator-held group job of kind `restore` plus one sandbox-restore job per clone),
 * snapshot.ls/show/rm, and the retention hooks that coord_retention.c calls.
 *
 * Snapshot state machine (x/<id>.state; the function that performs each step)
 *
 *   sandbox.snapshot ──> PENDING ──job succeeded──> READY ──expires_at passed (sweep) / snapshot.rm──> EXPIRED
 *                           └──────job failed─────> FAILED
 *   EXPIRED and FAILED are collectable (coord_snapshots_collectable) until coord_snapshots_collected marks
 *   them collected; the record stays as a tombstone so that uses say "expired".
 *
 *   coord_sandbox_on_snapshot      (none) -> PENDING, with its job, one batch
 *   snap_job_prepare               PENDING -> READY (trees from the job's result; its sandbox -> TERMINATED,
 *                                  the worker terminated it) | FAILED, in the batch of the job's end
 *   coord_snapshots_sweep          READY -> EXPIRED when expires_at <= now
 *   coord_snapshot_on_rm           READY -> EXPIRED (removed), collectable at once
 *   coord_snapshots_reconcile      PENDING without its job -> FAILED
 *
 * Restore group (sandbox.restore)
 *   One job of kind `restore` that no worker runs (coord_job_spec.held: RUNNING at once, no worker, never
 *   dispatched; clients long-poll on it like on any job), created first, listing in its params the ids
 *   of its clones and their jobs; then N sandbox-restore jobs, each with its new sandbox record (CREATING,
 *   restored_from, expires_hint = the snapshot's expires_at), pinned to workers chosen here: live, with the
 *   snapshot's fingerprint, least loaded first (slots used + clones assigned so far; workers with room
 *   first; ties to the worker with fewer clones of this group, then worker-id order), so clones spread. A clone's end is a sandbox-create's end (coord_sandboxes.c);
 *   after it, restore_eval looks at every clone of its group: while one is CREATING nothing happens; when
 *   none is, all running -> the group succeeds with {"ids", "workers"}; else the running clones get
 *   terminate jobs and the group fails with the error of the clone that failed first (its record's
 *   updated_at). The group's state is derived from the clones' records only, so a restart re-evaluates it
 *   from what is stored (coord_snapshots_reconcile).
 *
 * Invariants
 *   X1. Every x/ record is in c->snapshots and c->snapshot_ids. PENDING and FAILED snapshots are invisible:
 *       show/restore/rm answer ENOTFOUND "not found" exactly as for unknown ids or ids of another app;
 *       EXPIRED ones (or READY past expires_at) answer ENOTFOUND "... expired on <UTC>" (or "was removed").
 *   X2. expires_at = created_at + 7 days, or, for a snapshot of a restored sandbox, the expiry of the
 *       snapshot it was restored from (s/<id>.expires_hint), so a chain never outlives its first snapshot.
 *   X3. A snapshot with a running restore group (restoring > 0) is not collectable, and its root image is
 *       in use (coord_snapshots_use_image), so chunks are never collected under a restore.
 *   X4. Refusals of sandbox.snapshot (GPU, no enable_snapshot, an exec queued or running, a CSEK mount, a
 *       memory snapshot already being taken) happen before any job or record exists.
 *
 * Departures (reported to the lead)
 *   - sandbox.restore accepts count <= 256 per request (the model says so): the job result's `ids` array
 *     travels in a MAP field whose containers hold at most 256 entries. More clones: more requests.
 *   - State `failed` for a snapshot whose job failed (the agreement lists pending | ready | expired): it must
 *     stay invisible (not "expired") yet collectable.
 *   - A sandbox-snapshot that fails with anything but a refusal (EBUSY, EUNSUPPORTED, EINVAL, EAGAIN, EPERM,
 *     ENOTFOUND, EUNAVAILABLE) gets a terminate job: after a checkpoint the worker has terminated it, and
 *     the coordinator cannot tell how far the job got; the terminate job settles the record either way.
 */
#include "coord.h"

#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/mp.h"

#include <inttypes.h>
#include <stdio.h>

#define NS_PER_S 1000000000ll
#define SNAP_TTL_NS (7ll * 24 * 3600 * NS_PER_S)
#define RESTORE_MAX 256 /* the model's limit on sandbox.restore count (see "Departures") */
#define FINGERPRINT_MAX 256
#define TREES_MAX_MOUNTS 64

static int64_t now_ns(struct coord *c) { return cairn_clock_now_ns(&c->clock); }

static const char *const snap_states[] = {"pending", "ready", "expired", "failed", NULL};

const char *coord_snap_state_name(enum coord_snap_state s)
{
    return (unsigned)s < 4 ? snap_states[s] : "unknown";
}

struct coord_snapshot *coord_snapshot_get(struct coord *c, const char *id)
{
    return coord_map_sget(&c->snapshots, id);
}

static void snap_free(struct coord_snapshot *s)
{
    if (!s)
        return;
    cairn_free(s->trees);
    cairn_free(s);
}

static int snap_add(struct coord *c, struct coord_snapshot *s)
{
    CAIRN_FORWARD_IF_ERROR(coord_map_sput(&c->snapshots, s->id, s));
    int rc = coord_vec_insert(&c->snapshot_ids, s->id, s);
    if (rc != CAIRN_OK)
        coord_map_sdel(&c->snapshots, s->id);
    return rc;
}

static void snap_drop(struct coord *c, struct coord_snapshot *s)
{
    coord_vec_remove(&c->snapshot_ids, s->id);
    coord_map_sdel(&c->snapshots, s->id);
    snap_free(s);
}

/* A deep copy (restoring is memory state and stays with the original). */
static struct coord_snapshot *snap_copy(const struct coord_snapshot *s)
{
    struct coord_snapshot *n = cairn_malloc(sizeof(*n));
    if (!n)
        return NULL;
    *n = *s;
    n->trees = NULL;
    if (s->trees && s->trees_len && !(n->trees = cairn_memdup(s->trees, s->trees_len))) {
        cairn_free(n);
        return NULL;
    }
    return n;
}

static void new_snap_id(struct coord *c, char out[COORD_OBJ_ID_LEN + 1])
{
    for (int tries = 0; tries < 8; tries++) {
        uint8_t rnd[8];
        cairn_random_bytes(rnd, sizeof(rnd));
        memcpy(out, "sn-", 3);
        cairn_hex_encode(out + 3, rnd, sizeof(rnd));
        if (!coord_snapshot_get(c, out))
            return;
    }
}

static bool snap_expired(struct coord *c, const struct coord_snapshot *s)
{
    return s->state == COORD_SNAP_EXPIRED || (s->state == COORD_SNAP_READY && now_ns(c) >= s->expires_ns);
}

/* X1: the snapshot id of app that clients may see; ENOTFOUND (message set) otherwise. */
static int snap_visible(struct coord *c, const char *app, const char *id, struct coord_snapshot **out)
{
    *out = NULL;
    struct coord_snapshot *s = id ? coord_snapshot_get(c, id) : NULL;
    if (!s || !app || strcmp(s->app, app) != 0 || s->state == COORD_SNAP_PENDING || s->state == COORD_SNAP_FAILED)
        return cairn_err_set(CAIRN_ENOTFOUND, "snapshot '%s' not found", id ? id : "");
    if (snap_expired(c, s)) {
        char when[32];
        coord_format_utc(s->expires_ns, when);
        if (s->removed)
            return cairn_err_set(CAIRN_ENOTFOUND, "snapshot %s was removed on %s", s->id, when);
        return cairn_err_set(CAIRN_ENOTFOUND, "snapshot %s expired on %s", s->id, when);
    }
    *out = s;
    return CAIRN_OK;
}

static void commit_or_log(struct coord *c, const char *what)
{
    if (cairn_kv_batch_count(c->batch) == 0)
        return;
    if (cairn_kv_batch_commit(c->kv, c->batch) != CAIRN_OK) {
        cairn_error("persist %s: %s", what, cairn_err_msg());
        coord_batch_reset(c);
    }
}

/* ---- the x/ record ------------------------------------------------------------------------------------ */

static size_t key_snapshot(char *out, const char *id)
{
    int n = snprintf(out, COORD_KEY_MAX, "x/%s", id);
    return n < 0 || n >= COORD_KEY_MAX ? 0 : (size_t)n;
}

static void w_str(struct cairn_mp_writer *w, const char *k, const char *v)
{
    cairn_mp_write_str(w, k, strlen(k));
    cairn_mp_write_str(w, v, strlen(v));
}

static void w_i64(struct cairn_mp_writer *w, const char *k, int64_t v)
{
    cairn_mp_write_str(w, k, strlen(k));
    cairn_mp_write_int(w, v);
}

static void w_u64(struct cairn_mp_writer *w, const char *k, uint64_t v)
{
    cairn_mp_write_str(w, k, strlen(k));
    cairn_mp_write_uint(w, v);
}

static void w_bool(struct cairn_mp_writer *w, const char *k, bool v)
{
    cairn_mp_write_str(w, k, strlen(k));
    cairn_mp_write_bool(w, v);
}

/*
 * The trees are stored as top-level fields root, ckpt, mounts (not one nested map): a stored record is
 * read back through the wire model's MAP check, whose nesting limit (4) a mount's manifest would pass
 * one level too deep inside a "trees" map.
 */
int coord_snapshot_encode(const struct coord_snapshot *s, struct cairn_buf *out)
{
    static const char *const tree_keys[] = {"root", "ckpt", "mounts"};
    struct cairn_msg *th = NULL;
    const struct cairn_mval *t = NULL, *tv[3] = {NULL, NULL, NULL};
    uint32_t ntrees = 0;
    if (s->trees && s->trees_len) {
        CAIRN_FORWARD_IF_ERROR(coord_value_unpack(s->trees, s->trees_len, "snapshot trees", &th, &t));
        for (int i = 0; i < 3; i++)
            ntrees += (tv[i] = cairn_mval_get(t, tree_keys[i])) != NULL;
    }
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, out);
    cairn_mp_write_map(&w, 15 + ntrees);
    w_u64(&w, "v", 1);
    w_str(&w, "id", s->id);
    w_str(&w, "app", s->app);
    w_str(&w, "sandbox", s->sandbox);
    w_str(&w, "image", s->image);
    w_str(&w, "parent", s->parent);
    w_str(&w, "job", s->job);
    w_str(&w, "fingerprint", s->fingerprint);
    w_str(&w, "state", coord_snap_state_name(s->state));
    w_i64(&w, "created", s->created_ns);
    w_i64(&w, "expires", s->expires_ns);
    w_bool(&w, "removed", s->removed);
    w_bool(&w, "collected", s->collected);
    w_u64(&w, "size", s->size);
    w_u64(&w, "stored", s->stored);
    for (int i = 0; i < 3; i++) {
        if (!tv[i])
            continue;
        cairn_mp_write_str(&w, tree_keys[i], strlen(tree_keys[i]));
        if (!w.err && coord_value_pack(tv[i], out) != CAIRN_OK)
            w.err = cairn_err_code();
    }
    cairn_msg_destroy(&th);
    if (w.err)
        return cairn_err_set(w.err, "encode snapshot record '%s': %s", s->id, cairn_strerror(w.err));
    return CAIRN_OK;
}

/* A layer ref map: manifest (bin, n x 36 bytes, n >= 1), manifest_len (> 0). */
static bool layer_ref_ok(const struct cairn_mval *v)
{
    const uint8_t *man = NULL;
    size_t ml = 0;
    uint64_t len = 0;
    return v && cairn_mval_kind(v) == CAIRN_MV_MAP &&
           cairn_mval_bin(cairn_mval_get(v, "manifest"), &man, &ml) == CAIRN_OK && ml > 0 && ml % 36 == 0 &&
           cairn_mval_u64(cairn_mval_get(v, "manifest_len"), &len) == CAIRN_OK && len > 0;
}

/* The trees of a ready snapshot: {root: layer ref, ckpt: layer ref, mounts?: [{path, tree: layer ref}]}. */
static bool trees_ok(const struct cairn_mval *t)
{
    if (!t || cairn_mval_kind(t) != CAIRN_MV_MAP || !layer_ref_ok(cairn_mval_get(t, "root")) ||
        !layer_ref_ok(cairn_mval_get(t, "ckpt")))
        return false;
    const struct cairn_mval *mounts = cairn_mval_get(t, "mounts");
    if (!mounts)
        return true;
    if (cairn_mval_kind(mounts) != CAIRN_MV_ARRAY || cairn_mval_len(mounts) > TREES_MAX_MOUNTS)
        return false;
    for (size_t i = 0; i < cairn_mval_len(mounts); i++) {
        const struct cairn_mval *m = cairn_mval_at(mounts, i);
        const char *path = NULL;
        size_t pl = 0;
        if (!m || cairn_mval_kind(m) != CAIRN_MV_MAP ||
            cairn_mval_str(cairn_mval_get(m, "path"), &path, &pl) != CAIRN_OK || pl < 2 || path[0] != '/' ||
            !layer_ref_ok(cairn_mval_get(m, "tree")))
            return false;
    }
    return true;
}

/* The trees of a map (a sandbox-snapshot result, a record), packed: {root, ckpt, mounts?}. */
static int pack_trees(const struct cairn_mval *res, uint8_t **out, size_t *len)
{
    struct cairn_msg *h = cairn_msg_new(CAIRN_MSG_JOB_RESULT);
    struct cairn_buf b;
    cairn_buf_init(&b, COORD_RECORD_MAX);
    int rc = h ? CAIRN_OK : cairn_err_set(CAIRN_ENOMEM, "out of memory");
    if (rc == CAIRN_OK) {
        struct cairn_mval *t = cairn_msg_set_map(h, "result");
        cairn_mval_put_value(h, t, "root", cairn_mval_get(res, "root"));
        cairn_mval_put_value(h, t, "ckpt", cairn_mval_get(res, "ckpt"));
        const struct cairn_mval *mounts = cairn_mval_get(res, "mounts");
        if (mounts && cairn_mval_len(mounts) > 0)
            cairn_mval_put_value(h, t, "mounts", mounts);
        rc = cairn_msg_build_error(h);
    }
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(h, "result"), &b);
    if (rc == CAIRN_OK && !(*out = cairn_buf_detach(&b, len)))
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
    cairn_buf_release(&b);
    cairn_msg_destroy(&h);
    return rc;
}

static bool val_str(const struct cairn_mval *v, const char *key, char *out, size_t min, size_t max)
{
    const char *s = NULL;
    size_t n = 0;
    if (cairn_mval_str(cairn_mval_get(v, key), &s, &n) != CAIRN_OK || n < min || n > max || memchr(s, '\0', n))
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

static bool val_id(const struct cairn_mval *v, const char *key, char *out, const char *prefix, bool allow_empty)
{
    if (!val_str(v, key, out, allow_empty ? 0 : COORD_OBJ_ID_LEN, COORD_OBJ_ID_LEN))
        return false;
    size_t n = strlen(out);
    return (allow_empty && n == 0) || coord_obj_id_valid(out, n, prefix);
}

int coord_snapshot_decode(const uint8_t *p, size_t len, const char *key, struct coord_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *v = NULL;
    const char *bad = NULL;
    char state[16] = "";
    uint64_t ver = 0;
    char what[COORD_KEY_MAX + 40];
    snprintf(what, sizeof(what), "metadata record '%s'", key);
    int rc = coord_value_unpack(p, len, what, &holder, &v);
    if (rc != CAIRN_OK)
        return rc;
    if (cairn_mval_u64(cairn_mval_get(v, "v"), &ver) != CAIRN_OK || ver != 1)
        bad = "v";
    else if (!val_id(v, "id", s->id, "sn-", false))
        bad = "id";
    else if (!val_str(v, "app", s->app, 1, COORD_ID_MAX) || !coord_app_name_valid(s->app, strlen(s->app)))
        bad = "app";
    else if (!val_id(v, "sandbox", s->sandbox, "sb-", false))
        bad = "sandbox";
    else if (!val_id(v, "image", s->image, "im-", false))
        bad = "image";
    else if (!val_id(v, "parent", s->parent, "sn-", true))
        bad = "parent";
    else if (!val_str(v, "job", s->job, 0, COORD_JOB_ID_LEN) ||
             (s->job[0] && !coord_job_id_valid(s->job, strlen(s->job))))
        bad = "job";
    else if (!val_str(v, "fingerprint", s->fingerprint, 0, FINGERPRINT_MAX))
        bad = "fingerprint";
    else if (!val_str(v, "state", state, 1, sizeof(state) - 1))
        bad = "state";
    else if (cairn_mval_i64(cairn_mval_get(v, "created"), &s->created_ns) != CAIRN_OK)
        bad = "created";
    else if (cairn_mval_i64(cairn_mval_get(v, "expires"), &s->expires_ns) != CAIRN_OK)
        bad = "expires";
    else if (cairn_mval_bool(cairn_mval_get(v, "removed"), &s->removed) != CAIRN_OK)
        bad = "removed";
    else if (cairn_mval_bool(cairn_mval_get(v, "collected"), &s->collected) != CAIRN_OK)
        bad = "collected";
    else if (cairn_mval_u64(cairn_mval_get(v, "size"), &s->size) != CAIRN_OK)
        bad = "size";
    else if (cairn_mval_u64(cairn_mval_get(v, "stored"), &s->stored) != CAIRN_OK)
        bad = "stored";
    if (!bad) {
        unsigned i = 0;
        while (snap_states[i] && strcmp(snap_states[i], state) != 0)
            i++;
        if (!snap_states[i])
            bad = "state";
        else
            s->state = (enum coord_snap_state)i;
    }
    bool has_trees = cairn_mval_get(v, "root") != NULL;
    if (!bad && has_trees && !trees_ok(v))
        bad = "root";
    if (!bad && !has_trees && s->state == COORD_SNAP_READY && !s->collected)
        bad = "root";
    if (!bad && has_trees)
        rc = pack_trees(v, &s->trees, &s->trees_len);
    cairn_msg_destroy(&holder);
    if (rc == CAIRN_OK && bad)
        rc = cairn_err_set(CAIRN_ECORRUPT, "%s is corrupt: field '%s' is missing or invalid", what, bad);
    if (rc != CAIRN_OK) {
        CAIRN_FREE(s->trees);
        s->trees_len = 0;
    }
    return rc;
}

static int snap_stage(struct coord *c, const struct coord_snapshot *s)
{
    char key[COORD_KEY_MAX];
    size_t kl = key_snapshot(key, s->id);
    struct cairn_buf b;
    cairn_buf_init(&b, COORD_RECORD_MAX);
    int rc = coord_snapshot_encode(s, &b);
    if (rc == CAIRN_OK)
        cairn_kv_batch_put(c->batch, key, kl, b.data, b.len);
    cairn_buf_release(&b);
    return rc;
}

/* ---- helpers ------------------------------------------------------------------------------------------ */

/* A string param of a job ("" when absent). */
static bool job_param_str(const struct coord_job *j, const char *key, char *out, size_t max)
{
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *p = NULL;
    bool ok = coord_value_unpack(j->rec.params, j->rec.params_len, "params", &holder, &p) == CAIRN_OK &&
              val_str(p, key, out, 1, max);
    cairn_msg_destroy(&holder);
    if (!ok)
        out[0] = '\0';
    return ok;
}

/* An unfinished job of kind k of app about sandbox id (params "sandbox"), or NULL. */
static struct coord_job *job_about(struct coord *c, enum coord_kind k, const char *app, const char *id)
{
    size_t pos = 0;
    const void *key;
    size_t kl;
    void *v;
    while (coord_map_next(&c->jobs, &pos, &key, &kl, &v)) {
        struct coord_job *j = v;
        char sid[COORD_OBJ_ID_LEN + 1];
        if (j->kind_id == k && !strcmp(j->rec.app, app) && job_param_str(j, "sandbox", sid, COORD_OBJ_ID_LEN) &&
            !strcmp(sid, id))
            return j;
    }
    return NULL;
}

/* A terminate job for running sandbox sb (nothing when it is not running or one was asked already). */
static void terminate_sandbox(struct coord *c, struct coord_sandbox *sb, const char *why)
{
    if (sb->rec.state != COORD_SBX_RUNNING || sb->rec.term_job[0] || !sb->rec.worker[0])
        return;
    struct cairn_msg *pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    int rc = pm ? CAIRN_OK : cairn_err_set(CAIRN_ENOMEM, "out of memory");
    if (rc == CAIRN_OK) {
        coord_sandbox_job_params(pm, sb);
        rc = cairn_msg_build_error(pm);
    }
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    char jid[COORD_JOB_ID_LEN + 1], saved[COORD_JOB_ID_LEN + 1];
    memcpy(saved, sb->rec.term_job, sizeof(saved));
    if (rc == CAIRN_OK) {
        /* memory first (the job's end reads the record), and the record in the job's batch */
        coord_job_new_id(c, sb->rec.term_job);
        rc = coord_meta_batch_sandbox(c->batch, &sb->rec);
    }
    struct coord_job_spec spec = {.app = sb->rec.app, .kind = COORD_KIND_SBX_TERMINATE_S, .id = sb->rec.term_job,
                                  .params = pb.data, .params_len = pb.len, .pin = sb->rec.worker,
                                  .state = COORD_JOB_QUEUED};
    if (rc == CAIRN_OK)
        rc = coord_job_create(c, &spec, jid);
    else
        coord_batch_reset(c);
    if (rc == CAIRN_OK) {
        cairn_info("sandbox '%s' of app '%s': terminate job '%s' (%s)", sb->rec.id, sb->rec.app, jid, why);
    } else {
        memcpy(sb->rec.term_job, saved, sizeof(saved));
        cairn_error("terminate sandbox '%s' (%s): %s", sb->rec.id, why, cairn_err_msg());
    }
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

/* ---- sandbox.snapshot --------------------------------------------------------------------------------- */

void coord_sandbox_on_snapshot(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *pm = NULL;
    const char *app = cairn_msg_app(m), *id = "", *req_id = NULL;
    uint64_t wait_ms = 0;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    struct coord_snapshot *s = NULL;
    cairn_msg_get_str(m, "sandbox", &id, NULL);
    cairn_msg_get_str(m, "req_id", &req_id, NULL);
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    struct coord_sandbox *sb =
        coord_sandbox_request(c, mp, id, req_id, "sandbox.snapshot", COORD_KIND_SBX_SNAPSHOT_S, wait_ms);
    if (!sb)
        goto out;
    /* X4; GPU first: a GPU sandbox can never have enable_snapshot, so the other message would hide why */
    if (sb->rec.gpu > 0) {
        coord_reply_error(c, c->csock, m, CAIRN_EUNSUPPORTED, "sandboxes with GPUs cannot be snapshotted");
        goto out;
    }
    if (!sb->rec.enable_snapshot) {
        coord_reply_error(c, c->csock, m, CAIRN_EUNSUPPORTED, "sandbox %s was not created with --enable-snapshot",
                          id);
        goto out;
    }
    struct coord_job *busy = job_about(c, COORD_KIND_SBX_EXEC, app, id);
    if (busy) {
        coord_reply_error(c, c->csock, m, CAIRN_EBUSY, "an exec is still running in %s (job %s): wait for it to end",
                          id, busy->rec.id);
        goto out;
    }
    for (size_t i = 0; i < sb->rec.nmounts; i++) {
        if (sb->rec.mounts[i].csek) {
            coord_reply_error(c, c->csock, m, CAIRN_EUNSUPPORTED,
                              "%s has a CSEK mount at %s: unmount it before a memory snapshot", id,
                              sb->rec.mounts[i].path ? sb->rec.mounts[i].path : "?");
            goto out;
        }
    }
    if ((busy = job_about(c, COORD_KIND_SBX_SNAPSHOT, app, id)) != NULL) {
        coord_reply_error(c, c->csock, m, CAIRN_EBUSY, "a memory snapshot of %s is already being taken (job %s)", id,
                          busy->rec.id);
        goto out;
    }
    s = cairn_calloc(1, sizeof(*s));
    pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    if (!s || !pm) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    new_snap_id(c, s->id);
    memcpy(s->app, app, strlen(app) + 1);
    memcpy(s->sandbox, sb->rec.id, sizeof(s->sandbox));
    memcpy(s->image, sb->rec.image, sizeof(s->image));
    memcpy(s->parent, sb->rec.restored_from, sizeof(s->parent));
    s->state = COORD_SNAP_PENDING;
    s->created_ns = now_ns(c);
    s->expires_ns = sb->rec.expires_hint_ns > 0 ? sb->rec.expires_hint_ns : s->created_ns + SNAP_TTL_NS;
    coord_job_new_id(c, s->job);
    struct cairn_mval *p = coord_sandbox_job_params(pm, sb); /* running: it has a worker */
    cairn_mval_put_str(pm, p, "snapshot", s->id);
    int rc = cairn_msg_build_error(pm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    if (rc == CAIRN_OK)
        rc = snap_stage(c, s);
    if (rc == CAIRN_OK)
        rc = snap_add(c, s);
    if (rc != CAIRN_OK) {
        coord_batch_reset(c);
        coord_reply_error(c, c->csock, m, rc, "snapshot sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    char sid[COORD_OBJ_ID_LEN + 1], jid[COORD_JOB_ID_LEN + 1];
    memcpy(sid, s->id, sizeof(sid));
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_SBX_SNAPSHOT_S, .req_id = req_id, .id = s->job,
                                  .params = pb.data, .params_len = pb.len, .pin = sb->rec.worker,
                                  .state = COORD_JOB_QUEUED};
    s = NULL; /* in the tables; the job's end may change it at once */
    rc = coord_job_create(c, &spec, jid);
    if (rc != CAIRN_OK) {
        struct coord_snapshot *still = coord_snapshot_get(c, sid);
        if (still)
            snap_drop(c, still);
        coord_reply_error(c, c->csock, m, rc, "snapshot sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    cairn_info("sandbox '%s' of app '%s': memory snapshot '%s', job '%s'", id, app, sid, jid);
    coord_job_answer(c, mp, jid, COORD_KIND_SBX_SNAPSHOT_S, wait_ms);
out:
    snap_free(s);
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

/* The pending snapshot a sandbox-snapshot job makes (params "snapshot", its job), or NULL. */
static struct coord_snapshot *job_snapshot(struct coord *c, const struct coord_job *j)
{
    char id[COORD_OBJ_ID_LEN + 1];
    if (!job_param_str(j, "snapshot", id, COORD_OBJ_ID_LEN))
        return NULL;
    struct coord_snapshot *s = coord_snapshot_get(c, id);
    if (!s || strcmp(s->job, j->rec.id) != 0 || strcmp(s->app, j->rec.app) != 0)
        return NULL;
    return s;
}

static bool res_u64(const struct cairn_mval *res, const char *key, uint64_t *v)
{
    return res && cairn_mval_u64(cairn_mval_get(res, key), v) == CAIRN_OK;
}

static int snap_job_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f)
{
    struct coord_snapshot *s = job_snapshot(c, j);
    if (!s || s->state != COORD_SNAP_PENDING) {
        if (!s)
            cairn_warn("job '%s' ended but the snapshot it makes is gone", j->rec.id);
        return CAIRN_OK;
    }
    f->snap = s;
    struct coord_snapshot *n = f->snap_next = snap_copy(s);
    if (!n)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory recording snapshot '%s'", s->id);
    const struct cairn_mval *res = f->result;
    if (f->state == COORD_JOB_SUCCEEDED) {
        const struct cairn_mval *mounts = res ? cairn_mval_get(res, "mounts") : NULL;
        bool ok = res && layer_ref_ok(cairn_mval_get(res, "root")) && layer_ref_ok(cairn_mval_get(res, "ckpt"));
        if (ok && mounts) {
            ok = cairn_mval_kind(mounts) == CAIRN_MV_ARRAY;
            for (size_t i = 0; ok && i < cairn_mval_len(mounts); i++) {
                const struct cairn_mval *mt = cairn_mval_at(mounts, i);
                const char *path = NULL;
                size_t pl = 0;
                ok = mt && cairn_mval_str(cairn_mval_get(mt, "path"), &path, &pl) == CAIRN_OK && pl >= 2 &&
                     path[0] == '/' && layer_ref_ok(cairn_mval_get(mt, "tree"));
            }
        }
        if (!ok) {
            f->state = COORD_JOB_FAILED;
            f->code = CAIRN_EPROTO;
            snprintf(f->msg, sizeof(f->msg), "worker '%s' returned no usable trees for snapshot %s", j->rec.worker,
                     s->id);
            f->has_msg = true;
        }
    }
    if (f->state != COORD_JOB_SUCCEEDED) {
        n->state = COORD_SNAP_FAILED;
        return snap_stage(c, n);
    }
    CAIRN_FORWARD_IF_ERROR(pack_trees(res, &n->trees, &n->trees_len));
    n->state = COORD_SNAP_READY;
    /* X2: the lifetime counts from when it exists; an inherited expiry stays what it was */
    struct coord_sandbox *sb = coord_sandbox_get(c, s->sandbox);
    int64_t hint = sb ? sb->rec.expires_hint_ns : 0;
    n->created_ns = now_ns(c);
    n->expires_ns = hint > 0 ? hint : n->created_ns + SNAP_TTL_NS;
    struct coord_worker *w = coord_worker_find(c, j->rec.worker);
    if (!val_str(res, "fingerprint", n->fingerprint, 1, FINGERPRINT_MAX))
        snprintf(n->fingerprint, sizeof(n->fingerprint), "%s", w && w->rec.fingerprint ? w->rec.fingerprint : "");
    uint64_t v = 0, ckpt_ms = 0;
    if (res_u64(res, "size", &v))
        n->size = v;
    if (res_u64(res, "stored", &v))
        n->stored = v;
    CAIRN_FORWARD_IF_ERROR(snap_stage(c, n));
    /* the worker terminated the sandbox as part of the job */
    if (sb && strcmp(sb->rec.app, j->rec.app) == 0 && sb->rec.state != COORD_SBX_TERMINATED) {
        f->sb = sb;
        CAIRN_FORWARD_IF_ERROR(coord_sandbox_rec_copy(&f->sb_next, &sb->rec));
        f->has_sb_next = true;
        f->sb_next.state = COORD_SBX_TERMINATED;
        f->sb_next.updated_ns = n->created_ns;
        CAIRN_FORWARD_IF_ERROR(coord_meta_batch_sandbox(c->batch, &f->sb_next));
    }
    /* what the client sees */
    f->holder = cairn_msg_new(CAIRN_MSG_JOB_RESULT);
    if (!f->holder)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    struct cairn_mval *r = cairn_msg_set_map(f->holder, "result");
    cairn_mval_put_str(f->holder, r, "id", n->id);
    cairn_mval_put_str(f->holder, r, "snapshot", n->id);
    cairn_mval_put_str(f->holder, r, "sandbox", n->sandbox);
    cairn_mval_put_u64(f->holder, r, "size", n->size);
    cairn_mval_put_u64(f->holder, r, "stored", n->stored);
    cairn_mval_put_u64(f->holder, r, "expires_at", n->expires_ns > 0 ? (uint64_t)n->expires_ns : 0);
    if (n->fingerprint[0])
        cairn_mval_put_str(f->holder, r, "fingerprint", n->fingerprint);
    if (res_u64(res, "checkpoint_ms", &ckpt_ms))
        cairn_mval_put_u64(f->holder, r, "checkpoint_ms", ckpt_ms);
    CAIRN_FORWARD_IF_ERROR(cairn_msg_build_error(f->holder));
    f->result = cairn_msg_get(f->holder, "result");
    return CAIRN_OK;
}

/* Failures after which the sandbox is known untouched (refused before anything was done to it). */
static bool snapshot_refusal(uint32_t code)
{
    return code == CAIRN_EBUSY || code == CAIRN_EUNSUPPORTED || code == CAIRN_EINVAL || code == CAIRN_EAGAIN ||
           code == CAIRN_EPERM || code == CAIRN_ENOTFOUND || code == CAIRN_EUNAVAILABLE;
}

static void snap_job_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply)
{
    struct coord_snapshot *s = f->snap;
    if (!s || !f->snap_next)
        return;
    struct coord_snapshot *n = f->snap_next;
    f->snap_next = NULL;
    if (!apply) {
        snap_free(n);
        return;
    }
    cairn_free(s->trees);
    unsigned restoring = s->restoring;
    *s = *n;
    s->restoring = restoring;
    cairn_free(n);
    if (s->state == COORD_SNAP_READY) {
        cairn_info("snapshot '%s' of sandbox '%s' (app '%s') is ready", s->id, s->sandbox, s->app);
        return;
    }
    cairn_info("snapshot '%s' of sandbox '%s' (app '%s') failed: %s", s->id, s->sandbox, s->app,
               f->has_msg ? f->msg : f->why ? f->why : cairn_strerror((int)f->code));
    struct coord_sandbox *sb = coord_sandbox_get(c, s->sandbox);
    if (sb && !strcmp(sb->rec.app, j->rec.app) && !snapshot_refusal(f->code) && c->snapshots_loaded)
        terminate_sandbox(c, sb, "its memory snapshot failed after it may have begun");
}

/* ---- sandbox.restore ---------------------------------------------------------------------------------- */

/* The layer chain of the snapshot's root image, top first (ready or expired-but-kept images). */
static int root_chain(struct coord *c, const struct coord_snapshot *s, struct coord_image **chain, size_t *n)
{
    *n = 0;
    const char *id = s->image;
    while (id[0]) {
        struct coord_image *img = coord_image_get(c, id);
        if (!img || strcmp(img->rec.app, s->app) != 0 || img->rec.state == COORD_IMAGE_PENDING ||
            img->rec.collected || !img->rec.manifest_size)
            return cairn_err_set(CAIRN_ENOTFOUND, "image '%s' under snapshot %s is gone", id, s->id);
        if (*n == COORD_CHAIN_MAX)
            return cairn_err_set(CAIRN_ECORRUPT, "image '%s' has more than %d layers", s->image, COORD_CHAIN_MAX);
        chain[(*n)++] = img;
        id = img->rec.parent;
    }
    return CAIRN_OK;
}

static bool worker_matches(const struct coord_worker *w, const char *fingerprint)
{
    return w->rec.alive && w->rec.fingerprint && !strcmp(w->rec.fingerprint, fingerprint);
}

/* One clone: its sandbox record (memory + c->batch) and its sandbox-restore job. */
static int create_clone(struct coord *c, const struct coord_snapshot *s, const struct cairn_mval *trees,
                        struct coord_image *const *chain, size_t nchain, const char *group, const char *sid,
                        const char *jid, const char *worker)
{
    struct cairn_msg *pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    struct coord_sandbox *sb = cairn_calloc(1, sizeof(*sb));
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    int rc = pm && sb ? CAIRN_OK : cairn_err_set(CAIRN_ENOMEM, "out of memory");
    if (rc != CAIRN_OK)
        goto out;
    struct coord_sandbox_rec *r = &sb->rec;
    memcpy(r->id, sid, COORD_OBJ_ID_LEN);
    memcpy(r->app, s->app, strlen(s->app) + 1);
    memcpy(r->image, s->image, sizeof(r->image));
    coord_sandbox_new_runtime_id(r->runtime_id);
    r->state = COORD_SBX_CREATING;
    r->created_ns = r->updated_ns = now_ns(c);
    r->enable_snapshot = true;
    memcpy(r->job, jid, COORD_JOB_ID_LEN);
    memcpy(r->restored_from, s->id, sizeof(r->restored_from));
    r->expires_hint_ns = s->expires_ns;
    struct cairn_mval *p = cairn_msg_set_map(pm, "params");
    cairn_mval_put_str(pm, p, "sandbox", r->id);
    cairn_mval_put_str(pm, p, "runtime_id", r->runtime_id);
    cairn_mval_put_str(pm, p, "worker", worker);
    cairn_mval_put_str(pm, p, "snapshot", s->id);
    cairn_mval_put_str(pm, p, "group", group);
    cairn_mval_put_str(pm, p, "hostname", r->id);
    cairn_mval_put_bool(pm, p, "enable_snapshot", true);
    struct cairn_mval *layers = cairn_mval_put_array(pm, p, "layers");
    for (size_t i = 0; i < nchain; i++) {
        struct cairn_mval *l = cairn_mval_push_map(pm, layers);
        cairn_mval_put_str(pm, l, "image", chain[i]->rec.id);
        cairn_mval_put_u64(pm, l, "manifest_len", chain[i]->rec.manifest_len);
        cairn_mval_put_bin(pm, l, "manifest", chain[i]->rec.manifest, chain[i]->rec.manifest_size);
    }
    cairn_mval_put_value(pm, p, "root", cairn_mval_get(trees, "root"));
    cairn_mval_put_value(pm, p, "ckpt", cairn_mval_get(trees, "ckpt"));
    const struct cairn_mval *mounts = cairn_mval_get(trees, "mounts");
    if (mounts)
        cairn_mval_put_value(pm, p, "mounts", mounts);
    else
        cairn_mval_put_array(pm, p, "mounts");
    rc = cairn_msg_build_error(pm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    if (rc == CAIRN_OK)
        rc = coord_meta_batch_sandbox(c->batch, r);
    if (rc == CAIRN_OK)
        rc = coord_sandbox_add(c, sb);
    if (rc != CAIRN_OK) {
        coord_batch_reset(c);
        goto out;
    }
    struct coord_job_spec spec = {.app = s->app, .kind = COORD_KIND_SBX_RESTORE_S, .id = jid, .params = pb.data,
                                  .params_len = pb.len, .pin = worker, .state = COORD_JOB_QUEUED};
    char out_id[COORD_JOB_ID_LEN + 1];
    sb = NULL; /* in the tables */
    rc = coord_job_create(c, &spec, out_id);
    if (rc != CAIRN_OK) {
        struct coord_sandbox *still = coord_sandbox_get(c, sid);
        if (still)
            coord_sandbox_drop(c, still);
    }
out:
    if (sb) {
        coord_sandbox_rec_release(&sb->rec);
        cairn_free(sb);
    }
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
    return rc;
}

static void restore_eval(struct coord *c, struct coord_job *g);

void coord_sandbox_on_restore(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *gm = NULL, *th = NULL;
    const char *app = cairn_msg_app(m), *id = "", *req_id = NULL, *pin = NULL;
    uint64_t wait_ms = 0, count = 1;
    struct cairn_buf gb;
    cairn_buf_init(&gb, COORD_RECORD_MAX);
    char (*sids)[COORD_OBJ_ID_LEN + 1] = NULL, (*jids)[COORD_JOB_ID_LEN + 1] = NULL;
    struct coord_worker **placed = NULL, **cand = NULL;
    size_t *assigned = NULL;
    cairn_msg_get_str(m, "snapshot", &id, NULL);
    cairn_msg_get_str(m, "req_id", &req_id, NULL);
    if (cairn_msg_get_str(m, "worker", &pin, NULL) != CAIRN_OK)
        pin = NULL;
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    cairn_msg_opt_u64(m, "count", 1, &count);
    if (!app || !req_id) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "sandbox.restore needs a req_id");
        goto out;
    }
    if (coord_req_answered(c, mp, app, req_id, COORD_KIND_RESTORE_S, wait_ms))
        goto out;
    struct coord_snapshot *s = NULL;
    int rc = snap_visible(c, app, id, &s);
    if (rc != CAIRN_OK) { /* X1: expiry first */
        coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
        goto out;
    }
    if (count < 1 || count > RESTORE_MAX) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "count must be 1..%d (got %" PRIu64 ")", RESTORE_MAX, count);
        goto out;
    }
    const struct cairn_mval *trees = NULL;
    if (!s->trees || coord_value_unpack(s->trees, s->trees_len, "snapshot trees", &th, &trees) != CAIRN_OK ||
        !trees_ok(trees)) {
        coord_reply_error(c, c->csock, m, CAIRN_ECORRUPT, "the record of snapshot %s has no usable trees", s->id);
        goto out;
    }
    struct coord_image *chain[COORD_CHAIN_MAX];
    size_t nchain = 0;
    if (root_chain(c, s, chain, &nchain) != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "%s", cairn_err_msg());
        goto out;
    }
    /* the workers it may run on: alive, same fingerprint (the pin alone when given) */
    cand = cairn_calloc(c->nworkers + 1, sizeof(*cand));
    assigned = cairn_calloc(c->nworkers + 1, sizeof(*assigned));
    placed = cairn_calloc(count, sizeof(*placed));
    sids = cairn_calloc(count, sizeof(*sids));
    jids = cairn_calloc(count, sizeof(*jids));
    gm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    if (!cand || !assigned || !placed || !sids || !jids || !gm) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory restoring snapshot %s", s->id);
        goto out;
    }
    size_t ncand = 0, nfree = 0;
    if (pin) {
        struct coord_worker *w = coord_worker_find(c, pin);
        if (!w) {
            coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "unknown worker '%s'", pin);
            goto out;
        }
        if (!w->rec.alive) {
            coord_reply_error(c, c->csock, m, CAIRN_EUNAVAILABLE, "worker '%s' is dead", pin);
            goto out;
        }
        if (!worker_matches(w, s->fingerprint)) {
            coord_reply_error(c, c->csock, m, CAIRN_EUNAVAILABLE,
                              "worker '%s' does not match runtime fingerprint '%s' of %s (it has '%s')", pin,
                              s->fingerprint, s->id, w->rec.fingerprint ? w->rec.fingerprint : "");
            goto out;
        }
        cand[ncand++] = w;
    } else {
        for (size_t i = 0; i < c->nworkers; i++)
            if (worker_matches(c->wlist[i], s->fingerprint))
                cand[ncand++] = c->wlist[i];
    }
    for (size_t i = 0; i < ncand; i++)
        nfree += coord_worker_sbx_load(cand[i]) < cand[i]->rec.capacity;
    if (!ncand) {
        coord_reply_error(c, c->csock, m, CAIRN_EUNAVAILABLE, "no live worker matches runtime fingerprint '%s' of %s",
                          s->fingerprint, s->id);
        goto out;
    }
    if (!nfree) {
        coord_reply_error(c, c->csock, m, CAIRN_EUNAVAILABLE,
                          "every live worker matching runtime fingerprint '%s' of %s is full", s->fingerprint,
                          s->id);
        goto out;
    }
    /* Least loaded first, workers with room before full ones (a clone pinned to a full worker waits in the
       queue for a slot); equal loads go to the worker with fewer clones of this group, so clones spread. */
    for (uint64_t k = 0; k < count; k++) {
        size_t best = SIZE_MAX, best_load = SIZE_MAX;
        bool best_room = false;
        for (size_t i = 0; i < ncand; i++) {
            size_t load = coord_worker_sbx_load(cand[i]) + assigned[i];
            bool room = load < cand[i]->rec.capacity;
            if (best == SIZE_MAX || (room && !best_room) ||
                (room == best_room && (load < best_load || (load == best_load && assigned[i] < assigned[best])))) {
                best = i;
                best_load = load;
                best_room = room;
            }
        }
        assigned[best]++;
        placed[k] = cand[best];
    }
    /* the group job first: a crash between the jobs leaves a group whose missing clones count as failed */
    char gid[COORD_JOB_ID_LEN + 1];
    coord_job_new_id(c, gid);
    struct cairn_mval *p = cairn_msg_set_map(gm, "params");
    cairn_mval_put_str(gm, p, "snapshot", s->id);
    cairn_mval_put_u64(gm, p, "count", count);
    struct cairn_mval *as = cairn_mval_put_array(gm, p, "sandboxes");
    struct cairn_mval *aj = cairn_mval_put_array(gm, p, "jobs");
    struct cairn_mval *aw = cairn_mval_put_array(gm, p, "workers");
    for (uint64_t k = 0; k < count; k++) {
        bool dup;
        do { /* ids unique among the sandboxes and within this group */
            dup = false;
            coord_obj_new_id(c, "sb-", sids[k]);
            for (uint64_t q = 0; q < k && !dup; q++)
                dup = !strcmp(sids[q], sids[k]);
        } while (dup);
        do {
            dup = false;
            coord_job_new_id(c, jids[k]);
            dup = !strcmp(jids[k], gid);
            for (uint64_t q = 0; q < k && !dup; q++)
                dup = !strcmp(jids[q], jids[k]);
        } while (dup);
        cairn_mval_push_str(gm, as, sids[k]);
        cairn_mval_push_str(gm, aj, jids[k]);
        cairn_mval_push_str(gm, aw, placed[k]->rec.id);
    }
    rc = cairn_msg_build_error(gm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(gm, "params"), &gb);
    /* a use of the root image (its sliding retention moves), committed with the group */
    struct coord_image *root = coord_image_get(c, s->image);
    if (rc == CAIRN_OK && root && root->rec.state == COORD_IMAGE_READY)
        rc = coord_image_touch(c, root);
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_RESTORE_S, .req_id = req_id, .id = gid,
                                  .params = gb.data, .params_len = gb.len, .state = COORD_JOB_QUEUED, .held = true};
    char out_id[COORD_JOB_ID_LEN + 1];
    if (rc == CAIRN_OK)
        rc = coord_job_create(c, &spec, out_id);
    else
        coord_batch_reset(c);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "restore snapshot %s: %s", s->id, cairn_err_msg());
        goto out;
    }
    s->restoring++; /* X3, until the group ends (coord_snapshots_finish_apply) */
    c->restore_creating = gid;
    size_t made = 0;
    for (uint64_t k = 0; k < count; k++) {
        if (create_clone(c, s, trees, chain, nchain, gid, sids[k], jids[k], placed[k]->rec.id) == CAIRN_OK)
            made++;
        else
            cairn_error("restore group '%s': clone %" PRIu64 " ('%s'): %s", gid, k, sids[k], cairn_err_msg());
    }
    c->restore_creating = NULL;
    cairn_info("snapshot '%s' of app '%s': restore group '%s', %zu of %" PRIu64 " clones on %zu workers", s->id, app,
               gid, made, count, ncand);
    struct coord_job *g = coord_job_find(c, gid);
    if (g)
        restore_eval(c, g);
    coord_job_answer(c, mp, gid, COORD_KIND_RESTORE_S, wait_ms);
out:
    cairn_msg_destroy(&gm);
    cairn_msg_destroy(&th);
    cairn_buf_release(&gb);
    cairn_free(sids);
    cairn_free(jids);
    cairn_free(placed);
    cairn_free(cand);
    cairn_free(assigned);
}

/*
 * A restore group: when none of its clones is CREATING any more, it ends (all or nothing). A clone whose
 * record is missing (a crash between the group's and the clone's creation) counts as failed.
 */
static void restore_eval(struct coord *c, struct coord_job *g)
{
    if (!c->snapshots_loaded || (c->restore_creating && !strcmp(c->restore_creating, g->rec.id)) ||
        g->rec.state != COORD_JOB_RUNNING)
        return;
    struct cairn_msg *holder = NULL, *rh = NULL;
    const struct cairn_mval *p = NULL, *sids = NULL;
    if (coord_value_unpack(g->rec.params, g->rec.params_len, "params", &holder, &p) != CAIRN_OK ||
        !(sids = cairn_mval_get(p, "sandboxes")) || cairn_mval_kind(sids) != CAIRN_MV_ARRAY) {
        cairn_msg_destroy(&holder);
        coord_job_end(c, g, COORD_JOB_FAILED, CAIRN_ECORRUPT, "the restore group's record is corrupt", NULL);
        return;
    }
    size_t n = cairn_mval_len(sids);
    struct coord_sandbox *first = NULL;
    size_t first_idx = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        const char *sid = NULL;
        size_t sl = 0;
        struct coord_sandbox *sb = NULL;
        if (cairn_mval_str(cairn_mval_at(sids, i), &sid, &sl) == CAIRN_OK && sl == COORD_OBJ_ID_LEN)
            sb = coord_sandbox_get(c, sid);
        if (sb && strcmp(sb->rec.app, g->rec.app) != 0)
            sb = NULL;
        if (sb && sb->rec.state == COORD_SBX_CREATING) {
            cairn_msg_destroy(&holder);
            return; /* not yet */
        }
        /* a clone terminated by its owner since counts as made; one that failed first (err_code) does not */
        if (sb && (sb->rec.state == COORD_SBX_RUNNING || (sb->rec.state == COORD_SBX_TERMINATED && !sb->rec.err_code)))
            continue;
        if (first_idx == SIZE_MAX || (sb && first && sb->rec.updated_ns < first->rec.updated_ns) || (sb && !first)) {
            first = sb;
            first_idx = i;
        }
    }
    if (first_idx == SIZE_MAX) {
        rh = cairn_msg_new(CAIRN_MSG_JOB_RESULT);
        struct cairn_mval *r = rh ? cairn_msg_set_map(rh, "result") : NULL;
        if (r) {
            struct cairn_mval *ids = cairn_mval_put_array(rh, r, "ids");
            struct cairn_mval *ws = cairn_mval_put_array(rh, r, "workers");
            for (size_t i = 0; i < n; i++) {
                const char *sid = NULL;
                size_t sl = 0;
                cairn_mval_str(cairn_mval_at(sids, i), &sid, &sl);
                struct coord_sandbox *sb = coord_sandbox_get(c, sid);
                cairn_mval_push_str(rh, ids, sid);
                cairn_mval_push_str(rh, ws, sb ? sb->rec.worker : "");
            }
        }
        if (!rh || cairn_msg_build_error(rh) != CAIRN_OK) {
            coord_job_end(c, g, COORD_JOB_FAILED, CAIRN_ENOMEM, "out of memory reporting the clones", NULL);
        } else {
            cairn_info("restore group '%s': %zu clones running", g->rec.id, n);
            coord_job_end(c, g, COORD_JOB_SUCCEEDED, 0, NULL, cairn_msg_get(rh, "result"));
        }
        cairn_msg_destroy(&rh);
        cairn_msg_destroy(&holder);
        return;
    }
    /* all or nothing: the clones that run are terminated, the group fails with the first error */
    char why[CAIRN_PROTO_MAX_TEXT + 1];
    uint32_t code = CAIRN_EINTERNAL;
    if (first) {
        code = first->rec.err_code ? first->rec.err_code : CAIRN_EINTERNAL;
        snprintf(why, sizeof(why), "%s", first->rec.err_msg ? first->rec.err_msg : cairn_strerror((int)code));
    } else {
        snprintf(why, sizeof(why), "clone %zu of %zu was never created", first_idx + 1, n);
    }
    char gid[COORD_JOB_ID_LEN + 1];
    memcpy(gid, g->rec.id, sizeof(gid));
    size_t stopped = 0;
    for (size_t i = 0; i < n; i++) {
        const char *sid = NULL;
        size_t sl = 0;
        cairn_mval_str(cairn_mval_at(sids, i), &sid, &sl);
        struct coord_sandbox *sb = sid ? coord_sandbox_get(c, sid) : NULL;
        if (sb && !strcmp(sb->rec.app, g->rec.app) && sb->rec.state == COORD_SBX_RUNNING && !sb->rec.term_job[0]) {
            terminate_sandbox(c, sb, "another clone of its restore failed");
            stopped++;
        }
    }
    cairn_msg_destroy(&holder);
    g = coord_job_find(c, gid); /* the terminate jobs cannot end it, but look again anyway */
    if (!g)
        return;
    cairn_info("restore group '%s' failed (%zu running clones terminated): %s", gid, stopped, why);
    coord_job_end(c, g, COORD_JOB_FAILED, code, why, NULL);
}

/* ---- the end of jobs ---------------------------------------------------------------------------------- */

int coord_snapshots_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f)
{
    if (j->kind_id == COORD_KIND_SBX_SNAPSHOT)
        return snap_job_prepare(c, j, f);
    return CAIRN_OK;
}

void coord_snapshots_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply)
{
    switch (j->kind_id) {
    case COORD_KIND_SBX_SNAPSHOT: snap_job_apply(c, j, f, apply); break;
    case COORD_KIND_SBX_RESTORE: {
        char gid[COORD_JOB_ID_LEN + 1];
        struct coord_job *g = NULL;
        if (apply && job_param_str(j, "group", gid, COORD_JOB_ID_LEN) && (g = coord_job_find(c, gid)) != NULL &&
            g->kind_id == COORD_KIND_RESTORE)
            restore_eval(c, g);
        break;
    }
    case COORD_KIND_RESTORE: {
        char sid[COORD_OBJ_ID_LEN + 1];
        struct coord_snapshot *s = NULL;
        if (apply && job_param_str(j, "snapshot", sid, COORD_OBJ_ID_LEN) && (s = coord_snapshot_get(c, sid)) &&
            s->restoring > 0)
            s->restoring--;
        break;
    }
    default: break;
    }
}

/* ---- snapshot.ls / show / rm -------------------------------------------------------------------------- */

static void snapshot_put(struct cairn_msg *r, struct cairn_mval *e, const struct coord_snapshot *s)
{
    cairn_mval_put_str(r, e, "id", s->id);
    cairn_mval_put_str(r, e, "sandbox", s->sandbox);
    cairn_mval_put_u64(r, e, "created_at", s->created_ns > 0 ? (uint64_t)s->created_ns : 0);
    cairn_mval_put_u64(r, e, "expires_at", s->expires_ns > 0 ? (uint64_t)s->expires_ns : 0);
    cairn_mval_put_str(r, e, "fingerprint", s->fingerprint[0] ? s->fingerprint : "unknown");
    cairn_mval_put_str(r, e, "image", s->image);
    if (s->parent[0])
        cairn_mval_put_str(r, e, "parent", s->parent);
    cairn_mval_put_u64(r, e, "size", s->size);
    cairn_mval_put_u64(r, e, "stored", s->stored);
    struct cairn_msg *th = NULL;
    const struct cairn_mval *t = NULL, *mounts = NULL;
    struct cairn_mval *paths = cairn_mval_put_array(r, e, "mounts");
    if (s->trees && coord_value_unpack(s->trees, s->trees_len, "snapshot trees", &th, &t) == CAIRN_OK &&
        (mounts = cairn_mval_get(t, "mounts")) != NULL) {
        for (size_t i = 0; i < cairn_mval_len(mounts); i++) {
            const char *path = NULL;
            size_t pl = 0;
            if (cairn_mval_str(cairn_mval_get(cairn_mval_at(mounts, i), "path"), &path, &pl) == CAIRN_OK)
                cairn_mval_push_strn(r, paths, path, pl);
        }
    }
    cairn_msg_destroy(&th);
}

void coord_snapshot_on_ls(struct coord *c, const struct cairn_msg *m)
{
    const char *app = cairn_msg_app(m);
    struct coord_page pg;
    if (!coord_page_start(c, m, "snapshots", app != NULL, &pg))
        return;
    for (size_t i = coord_vec_after(&c->snapshot_ids, pg.after); i < c->snapshot_ids.n; i++) {
        const struct coord_snapshot *s = c->snapshot_ids.v[i].val;
        if (strcmp(s->app, app) != 0 || s->state != COORD_SNAP_READY || snap_expired(c, s))
            continue;
        struct cairn_mval *e = coord_page_add(&pg, s->id);
        if (!e)
            break;
        snapshot_put(pg.r, e, s);
    }
    coord_page_send(c, m, &pg);
}

/* The snapshot a request names ("snapshot"), visible to its app; NULL when answered ENOTFOUND. */
static struct coord_snapshot *snap_requested(struct coord *c, const struct cairn_msg *m)
{
    const char *id = "";
    cairn_msg_get_str(m, "snapshot", &id, NULL);
    struct coord_snapshot *s = NULL;
    if (snap_visible(c, cairn_msg_app(m), id, &s) != CAIRN_OK)
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "%s", cairn_err_msg());
    return s;
}

void coord_snapshot_on_show(struct coord *c, const struct cairn_msg *m)
{
    struct coord_snapshot *s = snap_requested(c, m);
    if (!s)
        return;
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r)
        snapshot_put(r, cairn_msg_set_map(r, "snapshot"), s);
    coord_send(c, c->csock, &r);
}

void coord_snapshot_on_rm(struct coord *c, const struct cairn_msg *m)
{
    struct coord_snapshot *s = snap_requested(c, m);
    if (!s)
        return;
    struct coord_snapshot next = *s;
    next.state = COORD_SNAP_EXPIRED;
    next.removed = true;
    next.expires_ns = now_ns(c);
    int rc = snap_stage(c, &next);
    if (rc == CAIRN_OK)
        rc = cairn_kv_batch_commit(c->kv, c->batch);
    else
        coord_batch_reset(c);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "remove snapshot %s: %s", s->id, cairn_err_msg());
        return;
    }
    s->state = COORD_SNAP_EXPIRED;
    s->removed = true;
    s->expires_ns = next.expires_ns;
    cairn_info("snapshot '%s' of app '%s' removed (collectable)", s->id, s->app);
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    coord_send(c, c->csock, &r);
}

/* ---- retention hooks (coord_retention.c) -------------------------------------------------------------- */

void coord_snapshots_sweep(struct coord *c, int64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < c->snapshot_ids.n; i++) {
        struct coord_snapshot *s = c->snapshot_ids.v[i].val;
        if (s->state != COORD_SNAP_READY || now < s->expires_ns)
            continue;
        s->state = COORD_SNAP_EXPIRED;
        if (snap_stage(c, s) != CAIRN_OK)
            cairn_error("record snapshot '%s' expired: %s", s->id, cairn_err_msg());
        n++;
    }
    commit_or_log(c, "expired snapshots");
    if (n)
        cairn_info("%zu memory snapshots expired", n);
}

size_t coord_snapshots_collectable(struct coord *c, char (**ids)[COORD_OBJ_ID_LEN + 1])
{
    *ids = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < c->snapshot_ids.n; i++) {
        const struct coord_snapshot *s = c->snapshot_ids.v[i].val;
        if ((s->state != COORD_SNAP_EXPIRED && s->state != COORD_SNAP_FAILED) || s->collected || s->restoring)
            continue;
        if (cairn_array_grow((void **)ids, &cap, n + 1, sizeof(**ids)) != CAIRN_OK)
            break; /* the rest waits for the next sweep */
        memcpy((*ids)[n++], s->id, COORD_OBJ_ID_LEN + 1);
    }
    return n;
}

void coord_snapshots_collected(struct coord *c, const char *id)
{
    struct coord_snapshot *s = coord_snapshot_get(c, id);
    if (!s || s->collected)
        return;
    s->collected = true;
    CAIRN_FREE(s->trees); /* its chunks are gone: only the tombstone stays */
    s->trees_len = 0;
    if (snap_stage(c, s) != CAIRN_OK)
        cairn_error("record snapshot '%s' collected: %s", id, cairn_err_msg());
    commit_or_log(c, "a collected snapshot");
}

bool coord_snapshots_use_image(struct coord *c, const char *image_id)
{
    for (size_t i = 0; i < c->snapshot_ids.n; i++) {
        const struct coord_snapshot *s = c->snapshot_ids.v[i].val;
        if (!strcmp(s->image, image_id) &&
            (s->state == COORD_SNAP_PENDING || s->state == COORD_SNAP_READY || s->restoring))
            return true;
    }
    return false;
}

/* ---- start-up and teardown ---------------------------------------------------------------------------- */

static int load_snapshot(struct coord *c, const char *key, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                         void *arg)
{
    CAIRN_UNUSED(arg);
    struct coord_snapshot *s = cairn_calloc(1, sizeof(*s));
    if (!s)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory loading snapshots");
    int rc = coord_snapshot_decode(v, vl, key, s);
    if (rc == CAIRN_OK)
        rc = coord_load_key_check(key, k, kl, "id", s->id);
    if (rc == CAIRN_OK)
        rc = snap_add(c, s);
    if (rc != CAIRN_OK)
        snap_free(s);
    return rc;
}

int coord_snapshots_load(struct coord *c)
{
    return coord_load_records(c, "x/", "skipping snapshot record", load_snapshot, NULL);
}

void coord_snapshots_reconcile(struct coord *c)
{
    /* pending snapshots whose job is not unfinished: failed (collectable: the worker may have written chunks) */
    for (size_t i = 0; i < c->snapshot_ids.n; i++) {
        struct coord_snapshot *s = c->snapshot_ids.v[i].val;
        if (s->state != COORD_SNAP_PENDING || coord_job_find(c, s->job))
            continue;
        cairn_warn("snapshot '%s': its job '%s' is not running: failed", s->id, s->job);
        s->state = COORD_SNAP_FAILED;
        if (snap_stage(c, s) != CAIRN_OK)
            cairn_error("record snapshot '%s' failed: %s", s->id, cairn_err_msg());
    }
    commit_or_log(c, "snapshots without their job");
    /* restore groups: count them on their snapshots (X3), then evaluate each (their clones may have ended) */
    struct coord_job **groups = NULL;
    size_t ng = 0, cap = 0, pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->jobs, &pos, &k, &kl, &v)) {
        struct coord_job *j = v;
        if (j->kind_id != COORD_KIND_RESTORE)
            continue;
        char sid[COORD_OBJ_ID_LEN + 1];
        struct coord_snapshot *s = NULL;
        if (job_param_str(j, "snapshot", sid, COORD_OBJ_ID_LEN) && (s = coord_snapshot_get(c, sid)))
            s->restoring++;
        if (cairn_array_grow((void **)&groups, &cap, ng + 1, sizeof(*groups)) == CAIRN_OK)
            groups[ng++] = j;
    }
    c->snapshots_loaded = true;
    for (size_t i = 0; i < ng; i++) {
        char gid[COORD_JOB_ID_LEN + 1];
        memcpy(gid, groups[i]->rec.id, sizeof(gid));
        struct coord_job *g = coord_job_find(c, gid); /* an earlier evaluation cannot end it, but be safe */
        if (g)
            restore_eval(c, g);
    }
    cairn_free(groups);
}

void coord_snapshots_free(struct coord *c)
{
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->snapshots, &pos, &k, &kl, &v))
        snap_free(v);
    coord_map_release(&c->snapshots);
    coord_vec_release(&c->snapshot_ids);
    c->snapshots_loaded = false;
}
