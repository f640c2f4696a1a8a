/*
 * coord_sandboxes.c: sandboxes (docs/internals/sandboxes.md), the typed
 * messages that start sandbox jobs (sandbox.create, sandbox.terminate,
 * sandbox.snapshot-fs), sandbox.ls, and what the end of a sandbox-create or
 * sandbox-terminate job, a worker's death and a worker's registration do to
 * the sandbox records. Also the one place that routes a job's end to the
 * module of its kind (coord_objs_finish_prepare / _apply).
 *
 * Sandbox state machine (s/<id>.state; the function that performs each step)
 *
 *   sandbox.create ──> CREATING ──create job succeeded──> RUNNING ──terminate job ok──> TERMINATED
 *                         │                                │  ^
 *                         └──create job failed──> FAILED <─┘  └── worker registers listing it
 *                                                   │   (worker died / restarted without it)
 *                                                   └──sandbox.terminate──> TERMINATED
 *
 *   coord_sandbox_on_create            (none) -> CREATING, with its job, one batch
 *   sbx_finish_prepare (create)        CREATING -> RUNNING (on the job's worker) | FAILED(code, msg)
 *   sbx_finish_prepare (terminate)     RUNNING -> TERMINATED (also when the worker no longer has
 *                                      it: ENOTFOUND); other failures leave it RUNNING
 *   coord_sandbox_on_terminate         FAILED -> TERMINATED at once (a job that ends at once)
 *   coord_sandboxes_worker_lost        RUNNING -> FAILED(EUNAVAILABLE, "worker 'w1' died (...)")
 *   coord_sandboxes_worker_registered  RUNNING -> FAILED when its worker registers without it;
 *                                      FAILED(EUNAVAILABLE) -> RUNNING when it lists it again;
 *                                      a TERMINATED one it lists gets a terminate job there
 *
 * Invariants
 *   S1. Every s/ record is in c->sandboxes and its app's sorted list; records
 *       are never deleted (terminated ones are hidden from sandbox.ls unless
 *       `all`; their retention is issue 5).
 *   S2. A RUNNING sandbox is linked in its worker's list (w->sbx, w->nsbx),
 *       and its worker is alive: a death fails it in the same tick.
 *   S3. Slots (J8 in coord_jobs.c): w->nsbx + w->creating <= capacity is what
 *       placement keeps; a pinned create on a full worker is refused (EBUSY).
 *   S4. The runtime id (32 hex) is random and new for every sandbox: runsc
 *       matches container ids by prefix, so ids are never reused.
 *   S5. A sandbox's end-of-job change is written in the job's own batch.
 */
#include "coord.h"

#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <inttypes.h>
#include <stdio.h>

#define LAST_USED_GRAIN_NS (60ll * 1000000000ll)

static int64_t now_ns(struct coord *c) { return cairn_clock_now_ns(&c->clock); }

struct coord_sandbox *coord_sandbox_get(struct coord *c, const char *id)
{
    return coord_map_sget(&c->sandboxes, id);
}

static void sandbox_free(struct coord_sandbox *sb)
{
    if (!sb)
        return;
    coord_sandbox_rec_release(&sb->rec);
    cairn_free(sb);
}

int coord_sandbox_add(struct coord *c, struct coord_sandbox *sb)
{
    struct coord_app *a = coord_app_find(c, sb->rec.app);
    if (!a)
        return cairn_err_set(CAIRN_ENOTFOUND, "sandbox '%s' belongs to unknown app '%s'", sb->rec.id, sb->rec.app);
    CAIRN_FORWARD_IF_ERROR(coord_map_sput(&c->sandboxes, sb->rec.id, sb));
    int rc = coord_vec_insert(&a->sandboxes, sb->rec.id, sb);
    if (rc != CAIRN_OK)
        coord_map_sdel(&c->sandboxes, sb->rec.id);
    return rc;
}

void coord_sandbox_new_runtime_id(char out[COORD_RUNTIME_ID_LEN + 1])
{
    uint8_t rnd[COORD_RUNTIME_ID_LEN / 2];
    cairn_random_bytes(rnd, sizeof(rnd));
    cairn_hex_encode(out, rnd, sizeof(rnd));
}

void coord_sandbox_drop(struct coord *c, struct coord_sandbox *sb)
{
    struct coord_app *a = coord_app_find(c, sb->rec.app);
    if (a)
        coord_vec_remove(&a->sandboxes, sb->rec.id);
    coord_map_sdel(&c->sandboxes, sb->rec.id);
    sandbox_free(sb);
}

/* S2 */
static void sbx_link(struct coord_sandbox *sb, struct coord_worker *w)
{
    sb->w = w;
    sb->wprev = NULL;
    sb->wnext = w->sbx;
    if (w->sbx)
        w->sbx->wprev = sb;
    w->sbx = sb;
    w->nsbx++;
}

static void sbx_unlink(struct coord_sandbox *sb)
{
    struct coord_worker *w = sb->w;
    if (!w)
        return;
    if (sb->wprev)
        sb->wprev->wnext = sb->wnext;
    else
        w->sbx = sb->wnext;
    if (sb->wnext)
        sb->wnext->wprev = sb->wprev;
    sb->wprev = sb->wnext = NULL;
    sb->w = NULL;
    w->nsbx--;
}

static int set_err(struct coord_sandbox_rec *r, uint32_t code, const char *msg)
{
    char *m = cairn_strndup(msg ? msg : cairn_strerror((int)code), CAIRN_PROTO_MAX_TEXT);
    if (!m)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    cairn_free(r->err_msg);
    r->err_msg = m;
    r->err_code = code;
    return CAIRN_OK;
}

/* In memory now, staged for the next commit: RUNNING/any -> FAILED (memory moves on even if the write fails). */
static void fail_now(struct coord *c, struct coord_sandbox *sb, uint32_t code, const char *why)
{
    sbx_unlink(sb);
    sb->rec.state = COORD_SBX_FAILED;
    sb->rec.updated_ns = now_ns(c);
    if (set_err(&sb->rec, code, why) != CAIRN_OK)
        sb->rec.err_code = code;
    if (coord_meta_batch_sandbox(c->batch, &sb->rec) != CAIRN_OK)
        cairn_error("record sandbox '%s' failed: %s", sb->rec.id, cairn_err_msg());
    cairn_info("sandbox '%s' of app '%s' failed: %s", sb->rec.id, sb->rec.app, why);
}

static void commit_or_log(struct coord *c, const char *what)
{
    if (cairn_kv_batch_count(c->batch) == 0)
        return;
    if (cairn_kv_batch_commit(c->kv, c->batch) != CAIRN_OK)
        cairn_error("persist %s: %s", what, cairn_err_msg());
}

int coord_sandbox_usable(struct coord *c, const char *app, const char *id, struct coord_sandbox **out)
{
    *out = NULL;
    struct coord_sandbox *sb = coord_sandbox_get(c, id);
    if (!sb || !app || strcmp(sb->rec.app, app) != 0)
        return cairn_err_set(CAIRN_ENOTFOUND, "sandbox '%s' not found", id);
    switch (sb->rec.state) {
    case COORD_SBX_RUNNING: *out = sb; return CAIRN_OK;
    case COORD_SBX_CREATING:
        return cairn_err_set(CAIRN_EAGAIN, "sandbox '%s' is still being created (job '%s'); wait for that job", id,
                             sb->rec.job);
    case COORD_SBX_TERMINATED: return cairn_err_set(CAIRN_ENOTFOUND, "sandbox '%s' was terminated", id);
    case COORD_SBX_FAILED: break;
    }
    return cairn_err_set(CAIRN_EUNAVAILABLE, "sandbox '%s' failed: %s", id,
                         sb->rec.err_msg ? sb->rec.err_msg : cairn_strerror((int)sb->rec.err_code));
}

struct coord_sandbox *coord_sandbox_request(struct coord *c, struct cairn_msg **mp, const char *id, const char *req_id,
                                            const char *need, const char *kind, uint64_t wait_ms)
{
    const char *app = cairn_msg_app(*mp);
    struct coord_sandbox *sb = NULL;
    if (need && (!app || !req_id)) {
        coord_reply_error(c, c->csock, *mp, CAIRN_EINVAL, "%s needs a req_id", need);
        return NULL;
    }
    if (coord_req_answered(c, mp, app, req_id, kind, wait_ms))
        return NULL;
    int rc = coord_sandbox_usable(c, app, id, &sb);
    if (rc != CAIRN_OK)
        coord_reply_error(c, c->csock, *mp, rc, "%s", cairn_err_msg());
    return sb;
}

/* ---- sandbox.create ---------------------------------------------------------------------------- */

void coord_sandbox_on_create(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *pm = NULL;
    const char *app = cairn_msg_app(m), *req_id = NULL, *image = NULL, *workdir = NULL, *pin = NULL;
    uint64_t gpu = 0, wait_ms = 0;
    bool snap = false, network = false;
    const struct cairn_mval *cmd = NULL, *env = NULL;
    size_t ncmd = 0, nenv = 0;
    struct coord_sandbox *sb = NULL;
    struct cairn_buf pb, cb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    cairn_buf_init(&cb, COORD_RECORD_MAX);
    cairn_msg_get_str(m, "req_id", &req_id, NULL);
    if (cairn_msg_get_str(m, "image", &image, NULL) != CAIRN_OK)
        image = NULL;
    if (cairn_msg_get_str(m, "workdir", &workdir, NULL) != CAIRN_OK)
        workdir = NULL;
    if (cairn_msg_get_str(m, "worker", &pin, NULL) != CAIRN_OK)
        pin = NULL;
    if (cairn_msg_get_array(m, "cmd", &cmd, &ncmd) != CAIRN_OK)
        cmd = NULL;
    if (cairn_msg_get_array(m, "env", &env, &nenv) != CAIRN_OK)
        env = NULL;
    cairn_msg_opt_u64(m, "gpu", 0, &gpu);
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    cairn_msg_opt_bool(m, "enable_snapshot", false, &snap);
    cairn_msg_opt_bool(m, "network", false, &network);
    if (!app || !req_id) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "sandbox.create needs a req_id");
        goto out;
    }
    if (coord_req_answered(c, mp, app, req_id, COORD_KIND_SBX_CREATE_S, wait_ms))
        goto out;
    if (gpu > 0 && snap) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "sandboxes with snapshots enabled cannot have GPUs");
        goto out;
    }
    if (gpu > 0) {
        coord_reply_error(c, c->csock, m, CAIRN_EUNSUPPORTED, "no worker in this cluster has GPUs");
        goto out;
    }
    struct coord_image *img = NULL;
    if (coord_image_resolve(c, app, image ? image : "default", &img) != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "%s", cairn_err_msg());
        goto out;
    }
    if (img->rec.csek) { /* issue 5 (snapshots.md): a CSEK root would need its key on every worker that runs it */
        coord_reply_error(c, c->csock, m, CAIRN_EUNSUPPORTED,
                          "image %s is encrypted with a customer-supplied key: mount it into a running sandbox with "
                          "its key (cairn sandbox mount)",
                          img->rec.id);
        goto out;
    }
    struct coord_image *chain[COORD_CHAIN_MAX];
    size_t nchain = 0;
    if (coord_image_chain(c, img, chain, &nchain) != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, CAIRN_ECORRUPT, "%s", cairn_err_msg());
        goto out;
    }
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
        if (coord_worker_sbx_load(w) >= w->rec.capacity) {
            coord_reply_error(c, c->csock, m, CAIRN_EBUSY, "worker '%s' is full (%zu of %" PRIu64 " sandboxes)",
                              pin, coord_worker_sbx_load(w), w->rec.capacity);
            goto out;
        }
    }

    sb = cairn_calloc(1, sizeof(*sb));
    pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    if (!sb || !pm) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory creating a sandbox");
        goto out;
    }
    struct coord_sandbox_rec *r = &sb->rec;
    coord_obj_new_id(c, "sb-", r->id);
    memcpy(r->app, app, strlen(app) + 1);
    memcpy(r->image, img->rec.id, sizeof(r->image));
    coord_sandbox_new_runtime_id(r->runtime_id);
    r->state = COORD_SBX_CREATING;
    r->created_ns = r->updated_ns = now_ns(c);
    r->enable_snapshot = snap;
    r->network = network;
    coord_job_new_id(c, r->job);

    struct cairn_mval *p = cairn_msg_set_map(pm, "params");
    cairn_mval_put_str(pm, p, "sandbox", r->id);
    cairn_mval_put_str(pm, p, "runtime_id", r->runtime_id);
    struct cairn_mval *layers = cairn_mval_put_array(pm, p, "layers");
    for (size_t i = 0; i < nchain; i++) {
        struct cairn_mval *l = cairn_mval_push_map(pm, layers);
        cairn_mval_put_str(pm, l, "image", chain[i]->rec.id);
        cairn_mval_put_u64(pm, l, "manifest_len", chain[i]->rec.manifest_len);
        cairn_mval_put_bin(pm, l, "manifest", chain[i]->rec.manifest, chain[i]->rec.manifest_size);
    }
    if (cmd)
        cairn_mval_put_value(pm, p, "cmd", cmd);
    if (env)
        cairn_mval_put_value(pm, p, "env", env);
    if (workdir)
        cairn_mval_put_str(pm, p, "workdir", workdir);
    cairn_mval_put_bool(pm, p, "enable_snapshot", snap);
    cairn_mval_put_str(pm, p, "hostname", r->id);
    if (network)
        cairn_mval_put_bool(pm, p, "network", true);
    if (pin)
        cairn_mval_put_str(pm, p, "worker", pin);
    int rc = cairn_msg_build_error(pm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    if (rc == CAIRN_OK && cmd && (rc = coord_value_pack(cmd, &cb)) == CAIRN_OK) {
        r->cmd = cairn_buf_detach(&cb, &r->cmd_len);
        if (!r->cmd)
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
    }
    if (rc == CAIRN_OK)
        rc = coord_meta_batch_sandbox(c->batch, r);
    /*
     * The image was used now (last_used_at, for the sliding retention of issue 5). A minute's precision is
     * plenty for a retention counted in days, and spares a rewrite of the image record per create.
     */
    struct coord_image_rec used;
    bool has_used = false;
    bool sliding = !strncmp(img->rec.retention, "sliding:", 8); /* issue 5: every use of a dir image counts */
    if (rc == CAIRN_OK && (sliding || r->created_ns - img->rec.last_used_ns >= LAST_USED_GRAIN_NS) &&
        (rc = coord_image_rec_copy(&used, &img->rec)) == CAIRN_OK) {
        has_used = true;
        coord_image_touch_rec(&used, r->created_ns);
        rc = coord_meta_batch_image(c->batch, &used);
    }
    int64_t used_expires = has_used ? used.expires_ns : img->rec.expires_ns;
    if (rc == CAIRN_OK)
        rc = coord_sandbox_add(c, sb);
    if (rc != CAIRN_OK) {
        coord_batch_reset(c);
        if (has_used)
            coord_image_rec_release(&used);
        coord_reply_error(c, c->csock, m, rc, "create sandbox: %s", cairn_err_msg());
        goto out;
    }
    char sid[COORD_OBJ_ID_LEN + 1], jid[COORD_JOB_ID_LEN + 1];
    memcpy(sid, r->id, sizeof(sid));
    int64_t used_ns = r->created_ns;
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_SBX_CREATE_S, .req_id = req_id, .id = r->job,
                                  .params = pb.data, .params_len = pb.len, .pin = pin,
                                  .state = COORD_JOB_QUEUED};
    sb = NULL; /* in the tables now; the job's end may change it at once */
    rc = coord_job_create(c, &spec, jid);
    if (has_used)
        coord_image_rec_release(&used);
    if (rc != CAIRN_OK) {
        struct coord_sandbox *still = coord_sandbox_get(c, sid);
        if (still)
            coord_sandbox_drop(c, still);
        coord_reply_error(c, c->csock, m, rc, "create sandbox: %s", cairn_err_msg());
        goto out;
    }
    if (has_used) {
        img->rec.last_used_ns = used_ns;
        img->rec.expires_ns = used_expires;
    }
    cairn_info("sandbox '%s' of app '%s' on image '%s': job '%s'", sid, app, img->rec.id, jid);
    coord_job_answer(c, mp, jid, COORD_KIND_SBX_CREATE_S, wait_ms);
out:
    sandbox_free(sb);
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
    cairn_buf_release(&cb);
}

/* ---- sandbox.ls -------------------------------------------------------------------------------- */

static void sandbox_put(struct coord *c, struct cairn_msg *r, struct cairn_mval *e, const struct coord_sandbox *sb)
{
    const struct coord_sandbox_rec *rec = &sb->rec;
    cairn_mval_put_str(r, e, "id", rec->id);
    cairn_mval_put_str(r, e, "state", coord_sandbox_state_name(rec->state));
    const char *worker = rec->worker;
    if (!worker[0] && rec->state == COORD_SBX_CREATING) {
        const struct coord_job *j = coord_job_find(c, rec->job);
        if (j)
            worker = j->rec.worker;
    }
    if (worker[0])
        cairn_mval_put_str(r, e, "worker", worker);
    cairn_mval_put_str(r, e, "image", rec->image);
    cairn_mval_put_u64(r, e, "created_at", rec->created_ns > 0 ? (uint64_t)rec->created_ns : 0);
    cairn_mval_put_bool(r, e, "enable_snapshot", rec->enable_snapshot);
    if (rec->gpu)
        cairn_mval_put_u64(r, e, "gpu", rec->gpu);
    if (rec->restored_from[0]) /* issue 6 */
        cairn_mval_put_str(r, e, "restored_from", rec->restored_from);
    if (rec->nmounts) { /* issue 5 */
        struct cairn_mval *arr = cairn_mval_put_array(r, e, "mounts");
        for (size_t i = 0; i < rec->nmounts; i++) {
            struct cairn_mval *mt = cairn_mval_push_map(r, arr);
            cairn_mval_put_str(r, mt, "path", rec->mounts[i].path);
            if (rec->mounts[i].image[0])
                cairn_mval_put_str(r, mt, "image", rec->mounts[i].image);
            cairn_mval_put_bool(r, mt, "csek", rec->mounts[i].csek);
        }
    }
}

void coord_sandbox_on_ls(struct coord *c, const struct cairn_msg *m)
{
    bool all = false;
    cairn_msg_opt_bool(m, "all", false, &all);
    struct coord_app *a = coord_app_find(c, cairn_msg_app(m));
    struct coord_page pg;
    if (!coord_page_start(c, m, "sandboxes", a != NULL, &pg))
        return;
    for (size_t i = coord_vec_after(&a->sandboxes, pg.after); i < a->sandboxes.n; i++) {
        const struct coord_sandbox *sb = a->sandboxes.v[i].val;
        if (!all && sb->rec.state == COORD_SBX_TERMINATED)
            continue;
        struct cairn_mval *e = coord_page_add(&pg, sb->rec.id);
        if (!e)
            break;
        sandbox_put(c, pg.r, e, sb);
    }
    coord_page_send(c, m, &pg);
}

/* ---- sandbox.terminate ------------------------------------------------------------------------- */

/* params for a job on the sandbox's worker: runtime_id, sandbox, worker (the pin) + extra */
struct cairn_mval *coord_sandbox_job_params(struct cairn_msg *pm, const struct coord_sandbox *sb)
{
    struct cairn_mval *p = cairn_msg_set_map(pm, "params");
    cairn_mval_put_str(pm, p, "runtime_id", sb->rec.runtime_id);
    cairn_mval_put_str(pm, p, "sandbox", sb->rec.id);
    if (sb->rec.worker[0])
        cairn_mval_put_str(pm, p, "worker", sb->rec.worker);
    return p;
}

static int sandbox_params(const struct coord_sandbox *sb, struct cairn_msg *pm, struct cairn_mval **p)
{
    *p = coord_sandbox_job_params(pm, sb);
    return cairn_msg_build_error(pm);
}

void coord_sandbox_on_terminate(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *pm = NULL;
    const char *app = cairn_msg_app(m), *id = "", *req_id = NULL;
    uint64_t wait_ms = 0;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    struct coord_sandbox_rec next;
    bool has_next = false;
    cairn_msg_get_str(m, "sandbox", &id, NULL);
    if (cairn_msg_get_str(m, "req_id", &req_id, NULL) != CAIRN_OK)
        req_id = NULL;
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    if (coord_req_answered(c, mp, app, req_id, COORD_KIND_SBX_TERMINATE_S, wait_ms))
        goto out;
    char jid[COORD_JOB_ID_LEN + 1];
    int rc;
    struct coord_sandbox *sb = coord_sandbox_get(c, id);
    if (!sb || !app || strcmp(sb->rec.app, app) != 0) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "sandbox '%s' not found", id);
        goto out;
    }
    if (sb->rec.term_job[0]) { /* asked before: that job answers (it may have ended: terminated) */
        memcpy(jid, sb->rec.term_job, sizeof(jid));
        coord_job_answer(c, mp, jid, NULL, wait_ms);
        goto out;
    }
    if (sb->rec.state == COORD_SBX_CREATING) {
        coord_reply_error(c, c->csock, m, CAIRN_EAGAIN,
                          "sandbox '%s' is still being created (job '%s'); terminate it once created", id,
                          sb->rec.job);
        goto out;
    }
    pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    struct cairn_mval *p = NULL;
    rc = pm ? sandbox_params(sb, pm, &p) : cairn_err_set(CAIRN_ENOMEM, "out of memory");
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    if (rc == CAIRN_OK && (rc = coord_sandbox_rec_copy(&next, &sb->rec)) == CAIRN_OK)
        has_next = true;
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "terminate sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    /* running: a job on its worker; failed (worker gone, or never started) or terminated: nothing to stop */
    bool now = sb->rec.state != COORD_SBX_RUNNING;
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_SBX_TERMINATE_S, .req_id = req_id,
                                  .params = pb.data, .params_len = pb.len,
                                  .pin = now ? NULL : sb->rec.worker,
                                  .state = now ? COORD_JOB_SUCCEEDED : COORD_JOB_QUEUED};
    coord_job_new_id(c, next.term_job);
    spec.id = next.term_job;
    if (now) {
        next.state = COORD_SBX_TERMINATED;
        next.updated_ns = now_ns(c);
    }
    rc = coord_meta_batch_sandbox(c->batch, &next);
    if (rc != CAIRN_OK) {
        coord_batch_reset(c);
        coord_reply_error(c, c->csock, m, rc, "terminate sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    /* memory first: the job may end at once and its end reads the record */
    char saved_term[COORD_JOB_ID_LEN + 1];
    enum coord_sandbox_state saved_state = sb->rec.state;
    memcpy(saved_term, sb->rec.term_job, sizeof(saved_term));
    memcpy(sb->rec.term_job, next.term_job, sizeof(saved_term));
    if (now) {
        sbx_unlink(sb);
        sb->rec.state = COORD_SBX_TERMINATED;
        sb->rec.updated_ns = next.updated_ns;
    }
    rc = coord_job_create(c, &spec, jid);
    if (rc != CAIRN_OK) {
        memcpy(sb->rec.term_job, saved_term, sizeof(saved_term));
        sb->rec.state = saved_state;
        coord_reply_error(c, c->csock, m, rc, "terminate sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    cairn_info("sandbox '%s' of app '%s': terminate job '%s'%s", id, app, jid, now ? " (nothing to stop)" : "");
    coord_job_answer(c, mp, jid, NULL, wait_ms);
out:
    if (has_next)
        coord_sandbox_rec_release(&next);
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

/* ---- sandbox.snapshot-fs ----------------------------------------------------------------------- */

void coord_sandbox_on_snapshot_fs(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *pm = NULL;
    const char *app = cairn_msg_app(m), *id = "", *req_id = NULL;
    uint64_t wait_ms = 0, ttl_s = 0;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    struct coord_image *img = NULL;
    cairn_msg_get_str(m, "sandbox", &id, NULL);
    cairn_msg_get_str(m, "req_id", &req_id, NULL);
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    cairn_msg_opt_u64(m, "ttl_s", 0, &ttl_s);
    struct coord_sandbox *sb =
        coord_sandbox_request(c, mp, id, req_id, "sandbox.snapshot-fs", COORD_KIND_SNAPSHOT_FS_S, wait_ms);
    if (!sb)
        goto out;
    struct coord_image *parent = coord_image_get(c, sb->rec.image);
    struct coord_app *a = coord_app_find(c, app);
    const uint8_t *dom = NULL;
    if (!parent || !a) {
        coord_reply_error(c, c->csock, m, CAIRN_ECORRUPT, "the image '%s' of sandbox '%s' is gone", sb->rec.image,
                          id);
        goto out;
    }
    int rc = coord_app_domain(c, a, &dom);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
        goto out;
    }
    bool flatten = parent->rec.depth >= COORD_FLATTEN_DEPTH;
    img = cairn_calloc(1, sizeof(*img));
    pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    if (!img || !pm) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    struct coord_image_rec *r = &img->rec;
    coord_obj_new_id(c, "im-", r->id);
    memcpy(r->app, app, strlen(app) + 1);
    memcpy(r->kind, "fs", 3);
    if (!flatten)
        memcpy(r->parent, parent->rec.id, sizeof(r->parent));
    memcpy(r->origin, parent->rec.id, sizeof(r->origin));
    r->depth = flatten ? 1 : parent->rec.depth + 1;
    memcpy(r->domain, dom, sizeof(r->domain));
    r->state = COORD_IMAGE_PENDING;
    r->created_ns = now_ns(c);
    if (ttl_s) {
        r->expires_ns = r->created_ns + (int64_t)ttl_s * 1000000000ll;
        snprintf(r->retention, sizeof(r->retention), "ttl:%" PRIu64, ttl_s);
    } else {
        memcpy(r->retention, "never", 6);
    }
    coord_job_new_id(c, r->job);
    struct cairn_mval *p = NULL;
    rc = sandbox_params(sb, pm, &p);
    cairn_mval_put_str(pm, p, "image", r->id);
    cairn_mval_put_bool(pm, p, "flatten", flatten);
    if (rc == CAIRN_OK)
        rc = cairn_msg_build_error(pm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    if (rc == CAIRN_OK)
        rc = coord_meta_batch_image(c->batch, r);
    if (rc == CAIRN_OK)
        rc = coord_image_add(c, img);
    if (rc != CAIRN_OK) {
        coord_batch_reset(c);
        coord_reply_error(c, c->csock, m, rc, "snapshot sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    char iid[COORD_OBJ_ID_LEN + 1], jid[COORD_JOB_ID_LEN + 1];
    memcpy(iid, r->id, sizeof(iid));
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_SNAPSHOT_FS_S, .req_id = req_id, .id = r->job,
                                  .params = pb.data, .params_len = pb.len, .pin = sb->rec.worker,
                                  .state = COORD_JOB_QUEUED};
    img = NULL; /* in the tables */
    rc = coord_job_create(c, &spec, jid);
    if (rc != CAIRN_OK) {
        coord_image_drop(c, coord_image_get(c, iid));
        coord_reply_error(c, c->csock, m, rc, "snapshot sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    cairn_info("sandbox '%s' of app '%s': snapshot-fs job '%s' for image '%s'%s", id, app, jid, iid,
               flatten ? " (flattened)" : "");
    coord_job_answer(c, mp, jid, COORD_KIND_SNAPSHOT_FS_S, wait_ms);
out:
    if (img) {
        coord_image_rec_release(&img->rec);
        cairn_free(img);
    }
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

/* ---- the end of sandbox jobs (S5) -------------------------------------------------------------- */

/* The sandbox a job is about: params "sandbox". */
static struct coord_sandbox *job_sandbox(struct coord *c, const struct coord_job *j)
{
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *p = NULL;
    const char *id = NULL;
    size_t len = 0;
    struct coord_sandbox *sb = NULL;
    if (coord_value_unpack(j->rec.params, j->rec.params_len, "params", &holder, &p) == CAIRN_OK &&
        cairn_mval_str(cairn_mval_get(p, "sandbox"), &id, &len) == CAIRN_OK && len == COORD_OBJ_ID_LEN)
        sb = coord_sandbox_get(c, id);
    cairn_msg_destroy(&holder);
    if (sb && strcmp(sb->rec.app, j->rec.app) != 0)
        sb = NULL;
    return sb;
}

/* The create result the client sees: id, sandbox, worker, then what the worker reported. */
static int create_result(struct coord_finish *f, const char *sid, const char *worker)
{
    f->holder = cairn_msg_new(CAIRN_MSG_JOB_RESULT);
    if (!f->holder)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    struct cairn_mval *r = cairn_msg_set_map(f->holder, "result");
    cairn_mval_put_str(f->holder, r, "id", sid);
    cairn_mval_put_str(f->holder, r, "sandbox", sid);
    cairn_mval_put_str(f->holder, r, "worker", worker);
    size_t n = f->result ? cairn_mval_len(f->result) : 0;
    for (size_t i = 0; i < n && i < 200; i++) {
        const char *k;
        const struct cairn_mval *v;
        if (cairn_mval_entry(f->result, i, &k, &v) != CAIRN_OK || !strcmp(k, "id") || !strcmp(k, "sandbox") ||
            !strcmp(k, "worker"))
            continue;
        cairn_mval_put_value(f->holder, r, k, v);
    }
    CAIRN_FORWARD_IF_ERROR(cairn_msg_build_error(f->holder));
    f->result = cairn_msg_get(f->holder, "result");
    return CAIRN_OK;
}

static int sbx_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f)
{
    struct coord_sandbox *sb = job_sandbox(c, j);
    if (!sb)
        return CAIRN_OK;
    bool create = j->kind_id == COORD_KIND_SBX_CREATE || j->kind_id == COORD_KIND_SBX_RESTORE; /* issue 6: a clone */
    if (create && (sb->rec.state != COORD_SBX_CREATING || strcmp(sb->rec.job, j->rec.id) != 0))
        return CAIRN_OK;
    if (!create && strcmp(sb->rec.term_job, j->rec.id) != 0)
        return CAIRN_OK;
    f->sb = sb;
    CAIRN_FORWARD_IF_ERROR(coord_sandbox_rec_copy(&f->sb_next, &sb->rec));
    f->has_sb_next = true;
    struct coord_sandbox_rec *n = &f->sb_next;
    n->updated_ns = now_ns(c);
    if (create && f->state == COORD_JOB_SUCCEEDED) {
        n->state = COORD_SBX_RUNNING;
        memcpy(n->worker, j->rec.worker, sizeof(n->worker));
        if (f->result && cairn_mval_len(f->result) > 0) {
            struct cairn_buf b;
            cairn_buf_init(&b, COORD_RECORD_MAX);
            int rc = coord_value_pack(f->result, &b);
            if (rc == CAIRN_OK) {
                cairn_free(n->report);
                n->report = cairn_buf_detach(&b, &n->report_len);
            }
            cairn_buf_release(&b);
            CAIRN_FORWARD_IF_ERROR(rc);
        }
        CAIRN_FORWARD_IF_ERROR(create_result(f, n->id, n->worker));
    } else if (create) {
        n->state = COORD_SBX_FAILED;
        CAIRN_FORWARD_IF_ERROR(set_err(n, f->code, f->why));
    } else if (f->state == COORD_JOB_SUCCEEDED || f->code == CAIRN_ENOTFOUND) {
        /* the worker stopped it, or does not have it any more: either way it is gone */
        n->state = COORD_SBX_TERMINATED;
        f->state = COORD_JOB_SUCCEEDED;
        f->code = 0;
        f->result = NULL;
    } else {
        n->term_job[0] = '\0'; /* it still runs; a later terminate tries again */
    }
    return coord_meta_batch_sandbox(c->batch, n);
}

static void sbx_finish_apply(struct coord *c, struct coord_finish *f, bool apply)
{
    struct coord_sandbox *sb = f->sb;
    if (!sb || !f->has_sb_next)
        return;
    if (!apply) {
        coord_sandbox_rec_release(&f->sb_next);
        f->has_sb_next = false;
        return;
    }
    enum coord_sandbox_state old = sb->rec.state;
    coord_sandbox_rec_release(&sb->rec);
    sb->rec = f->sb_next;
    memset(&f->sb_next, 0, sizeof(f->sb_next));
    f->has_sb_next = false;
    if (old == COORD_SBX_RUNNING && sb->rec.state != COORD_SBX_RUNNING)
        sbx_unlink(sb);
    if (old != COORD_SBX_RUNNING && sb->rec.state == COORD_SBX_RUNNING) {
        struct coord_worker *w = coord_worker_find(c, sb->rec.worker);
        if (w && w->rec.alive) {
            sbx_link(sb, w);
        } else {
            /* its worker died between the result and now: S2 */
            fail_now(c, sb, CAIRN_EUNAVAILABLE, "its worker is dead");
            commit_or_log(c, "a failed sandbox");
        }
    }
    cairn_info("sandbox '%s' of app '%s' is %s%s%s", sb->rec.id, sb->rec.app, coord_sandbox_state_name(sb->rec.state),
               sb->rec.state == COORD_SBX_FAILED && sb->rec.err_msg ? ": " : "",
               sb->rec.state == COORD_SBX_FAILED && sb->rec.err_msg ? sb->rec.err_msg : "");
}

int coord_objs_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f)
{
    switch (j->kind_id) {
    case COORD_KIND_IMPORT:
    case COORD_KIND_SNAPSHOT_FS: return coord_image_finish_prepare(c, j, f);
    case COORD_KIND_SBX_CREATE:
    case COORD_KIND_SBX_TERMINATE: return sbx_finish_prepare(c, j, f);
    case COORD_KIND_SBX_EXEC: return coord_exec_finish_prepare(c, j, f);
    case COORD_KIND_SBX_MOUNT:
    case COORD_KIND_SBX_UNMOUNT:
    case COORD_KIND_SNAPSHOT_DIR: return coord_mounts_finish_prepare(c, j, f); /* issue 5 */
    case COORD_KIND_DELETE_CHUNKS: break;
    case COORD_KIND_SBX_RESTORE: return sbx_finish_prepare(c, j, f); /* issue 6: the clone, like a create */
    case COORD_KIND_SBX_SNAPSHOT:
    case COORD_KIND_RESTORE: return coord_snapshots_finish_prepare(c, j, f); /* issue 6 */
    case COORD_KIND_OTHER: break;
    }
    return CAIRN_OK;
}

void coord_objs_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply)
{
    switch (j->kind_id) {
    case COORD_KIND_IMPORT:
    case COORD_KIND_SNAPSHOT_FS: coord_image_finish_apply(c, j, f, apply); break;
    case COORD_KIND_SBX_CREATE:
    case COORD_KIND_SBX_TERMINATE: sbx_finish_apply(c, f, apply); break;
    case COORD_KIND_SBX_EXEC: coord_exec_finish_apply(c, j, f, apply); break;
    case COORD_KIND_SBX_MOUNT:
    case COORD_KIND_SBX_UNMOUNT:
    case COORD_KIND_SNAPSHOT_DIR: coord_mounts_finish_apply(c, j, f, apply); break; /* issue 5 */
    case COORD_KIND_DELETE_CHUNKS:
        if (apply)
            coord_retention_delete_ended(c, j);
        break;
    case COORD_KIND_SBX_SNAPSHOT: /* issue 6: its sandbox (f->sb), then the snapshot (coord_snapshots.c) */
    case COORD_KIND_SBX_RESTORE:  /* the clone's sandbox, then its restore group */
        sbx_finish_apply(c, f, apply);
        coord_snapshots_finish_apply(c, j, f, apply);
        break;
    case COORD_KIND_RESTORE: coord_snapshots_finish_apply(c, j, f, apply); break;
    case COORD_KIND_OTHER: break;
    }
}

/* ---- workers ----------------------------------------------------------------------------------- */

void coord_sandboxes_worker_lost(struct coord *c, struct coord_worker *w, const char *why)
{
    if (!w->sbx)
        return;
    size_t n = 0;
    while (w->sbx) {
        fail_now(c, w->sbx, CAIRN_EUNAVAILABLE, why);
        n++;
    }
    commit_or_log(c, "the sandboxes of a dead worker");
    cairn_info("worker '%s': %zu sandboxes failed with it", w->rec.id, n);
}

/*
 * A worker still runs a sandbox whose record says terminated (it was terminated while the worker was
 * out of reach): a terminate job stops it there. The record does not change (its term_job is another).
 */
static void stop_orphan(struct coord *c, struct coord_sandbox *sb, struct coord_worker *w)
{
    struct cairn_msg *pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    struct cairn_mval *p = NULL;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    char jid[COORD_JOB_ID_LEN + 1];
    int rc = pm ? sandbox_params(sb, pm, &p) : cairn_err_set(CAIRN_ENOMEM, "out of memory");
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    struct coord_job_spec spec = {.app = sb->rec.app, .kind = COORD_KIND_SBX_TERMINATE_S, .params = pb.data,
                                  .params_len = pb.len, .pin = w->rec.id, .state = COORD_JOB_QUEUED};
    if (rc == CAIRN_OK)
        rc = coord_job_create(c, &spec, jid);
    if (rc == CAIRN_OK)
        cairn_info("worker '%s' still runs terminated sandbox '%s': job '%s' stops it", w->rec.id, sb->rec.id, jid);
    else
        cairn_error("stop terminated sandbox '%s' on worker '%s': %s", sb->rec.id, w->rec.id, cairn_err_msg());
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

void coord_sandboxes_worker_registered(struct coord *c, struct coord_worker *w, const struct cairn_mval *listed,
                                       size_t n)
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
    char why[256];
    snprintf(why, sizeof(why), "worker '%s' restarted and no longer runs the sandbox", w->rec.id);
    size_t lost = 0, back = 0;
    for (struct coord_sandbox *sb = w->sbx, *next; sb; sb = next) {
        next = sb->wnext;
        if (coord_map_sget(&seen, sb->rec.id) || coord_map_sget(&seen, sb->rec.runtime_id))
            continue;
        fail_now(c, sb, CAIRN_EUNAVAILABLE, why);
        lost++;
    }
    /* sandboxes failed when it was declared dead, which it still runs: running again */
    struct coord_sandbox **orphans = NULL;
    size_t norphans = 0, ocap = 0;
    if (n > 0) {
        size_t pos = 0;
        const void *k;
        size_t kl;
        void *v;
        while (coord_map_next(&c->sandboxes, &pos, &k, &kl, &v)) {
            struct coord_sandbox *sb = v;
            if (strcmp(sb->rec.worker, w->rec.id) != 0 ||
                !(coord_map_sget(&seen, sb->rec.id) || coord_map_sget(&seen, sb->rec.runtime_id)))
                continue;
            if (sb->rec.state == COORD_SBX_TERMINATED &&
                cairn_array_grow((void **)&orphans, &ocap, norphans + 1, sizeof(*orphans)) == CAIRN_OK)
                orphans[norphans++] = sb;
            if (sb->rec.state != COORD_SBX_FAILED || sb->rec.err_code != CAIRN_EUNAVAILABLE)
                continue;
            sb->rec.state = COORD_SBX_RUNNING;
            sb->rec.err_code = 0;
            CAIRN_FREE(sb->rec.err_msg);
            sb->rec.updated_ns = now_ns(c);
            sbx_link(sb, w);
            if (coord_meta_batch_sandbox(c->batch, &sb->rec) != CAIRN_OK)
                cairn_error("record sandbox '%s' running: %s", sb->rec.id, cairn_err_msg());
            cairn_info("sandbox '%s' of app '%s' runs again on worker '%s'", sb->rec.id, sb->rec.app, w->rec.id);
            back++;
        }
    }
    commit_or_log(c, "the sandboxes of a registering worker");
    if (lost || back)
        cairn_info("worker '%s' registered: %zu of its sandboxes failed, %zu running again", w->rec.id, lost, back);
    for (size_t i = 0; i < norphans; i++)
        stop_orphan(c, orphans[i], w);
    cairn_free(orphans);
    coord_map_release(&seen);
}

/* ---- start-up and teardown --------------------------------------------------------------------- */

static int load_sandbox(struct coord *c, const char *key, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                        void *arg)
{
    CAIRN_UNUSED(arg);
    struct coord_sandbox *sb = cairn_calloc(1, sizeof(*sb));
    if (!sb)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory loading sandboxes");
    int rc = coord_sandbox_decode(v, vl, key, &sb->rec);
    if (rc == CAIRN_OK)
        rc = coord_load_key_check(key, k, kl, "id", sb->rec.id);
    if (rc == CAIRN_OK)
        rc = coord_sandbox_add(c, sb);
    if (rc != CAIRN_OK) {
        sandbox_free(sb);
        return rc;
    }
    if (sb->rec.state == COORD_SBX_RUNNING) {
        struct coord_worker *w = coord_worker_find(c, sb->rec.worker);
        if (w && w->rec.alive) {
            sbx_link(sb, w);
        } else {
            char why[200];
            snprintf(why, sizeof(why), w ? "worker '%s' is dead" : "unknown worker '%s'", sb->rec.worker);
            fail_now(c, sb, CAIRN_EUNAVAILABLE, why);
        }
    }
    return CAIRN_OK;
}

int coord_sandboxes_load(struct coord *c)
{
    int rc = coord_load_records(c, "s/", "skipping sandbox record", load_sandbox, NULL);
    commit_or_log(c, "sandboxes of dead workers");
    return rc;
}

void coord_sandboxes_reconcile(struct coord *c)
{
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->sandboxes, &pos, &k, &kl, &v)) {
        struct coord_sandbox *sb = v;
        if (sb->rec.state == COORD_SBX_CREATING && !coord_job_find(c, sb->rec.job)) {
            fail_now(c, sb, CAIRN_EUNAVAILABLE, "its create job ended without recording the sandbox");
        } else if (sb->rec.state == COORD_SBX_RUNNING && sb->rec.term_job[0] && !coord_job_find(c, sb->rec.term_job)) {
            sb->rec.term_job[0] = '\0';
            coord_meta_batch_sandbox(c->batch, &sb->rec);
        }
    }
    commit_or_log(c, "sandboxes without their job");
}

void coord_sandboxes_free(struct coord *c)
{
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->sandboxes, &pos, &k, &kl, &v))
        sandbox_free(v);
    coord_map_release(&c->sandboxes);
    for (size_t i = 0; i < c->nworkers; i++) {
        c->wlist[i]->sbx = NULL;
        c->wlist[i]->nsbx = 0;
    }
}
