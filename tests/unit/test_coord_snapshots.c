/*
 * test_coord_snapshots.c: the coordinator's side of memory snapshots and clone fan-out
 * (docs/internals/snapshots.md, issue 6), in-process (struct coord, real RocksDB, real CURVE sockets on
 * 127.0.0.1) with the test playing the client and scripted fake workers.
 *
 * - sandbox.snapshot: every refusal with its message (GPU, no --enable-snapshot, an exec queued or running,
 *   a CSEK mount, a snapshot already being taken; create --enable-snapshot --gpu), each before any job and
 *   with the sandbox untouched; the sandbox-snapshot job's params; the pending snapshot is invisible; the
 *   record after the worker's result (trees, fingerprint, 7-day expiry), the sandbox terminated; idempotency;
 *   a failed job leaves no visible snapshot, and a failure that is not a refusal terminates the sandbox.
 * - sandbox.restore: placement on fingerprint-matching workers only (two fingerprints), count N round-robin,
 *   the clones' params and records (restored_from, expires_hint), the group job (running with no worker,
 *   then ids/workers), all or nothing (a failed clone: terminate jobs for the others, group failed with
 *   its error), a dead worker is skipped, a clone's worker dying fails the group, EUNAVAILABLE without a
 *   matching worker, the pin.
 * - Expiry: 7 days, inheritance through restore and re-snapshot, expired -> ENOTFOUND "expired on", the
 *   sweep and the retention hooks (collectable, collected, use_image).
 * - snapshot.ls (paging) / show / rm; the record codec; restart keeps records and a running restore group.
 * - With coord_retention.c: job.refs of a sandbox-snapshot job are filed under the snapshot; snapshot.rm
 *   makes the collection delete the chunks only it had, then marks it collected.
 */
#include "test_coord_fixture.h"

#include "coord_value.h"

#define DAY_S (24ull * 3600)

static int setup(void **state)
{
    cairn_log_set_level(CAIRN_LOG_WARN);
    struct fx *f = calloc(1, sizeof(*f));
    fx_files(f, "coord_snap", 3);
    fx_set(f, "test_clock", "true");
    fx_coord_start(f);
    fx_create_app(f, "app1", f->app_token, &f->app_token_len);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    fx_teardown(f); /* drops the stashed dispatches too */
    free(f);
    return 0;
}

static void wk_register(struct fx *f, int i, uint64_t capacity, const char *fingerprint)
{
    if (!f->w[i].s)
        fx_worker_connect(f, i);
    struct cairn_msg *m = fx_register_msg(f, i, f->w[i].id, f->w[i].keys.public_z85);
    cairn_msg_set_u64(m, "capacity", capacity);
    cairn_msg_set_str(m, "fingerprint", fingerprint);
    struct cairn_msg *r = fx_wk_call(f, i, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    f->w[i].epoch = fx_u64(r, "epoch");
    cairn_msg_destroy(&r);
}

/* A heartbeat of worker i (makes it routable again after a coordinator restart). */
static void wk_beat(struct fx *f, int i)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_WORKER_HEARTBEAT);
    cairn_msg_set_str(m, "id", f->w[i].id);
    cairn_msg_set_u64(m, "chunks", 0);
    cairn_msg_set_u64(m, "bytes", 0);
    cairn_msg_set_u64(m, "sandboxes", 0);
    cairn_msg_set_array(m, "jobs");
    struct cairn_msg *r = fx_wk_call(f, i, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    cairn_msg_destroy(&r);
}

static int wk_send_result(struct fx *f, int i, struct cairn_msg **m)
{
    struct cairn_msg *r = fx_wk_call(f, i, m);
    int rc = cairn_msg_code(r);
    cairn_msg_destroy(&r);
    return rc;
}

static int wk_result_ok(struct fx *f, int i, const char *job)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "err_code", 0);
    struct cairn_mval *res = cairn_msg_set_map(m, "result");
    cairn_mval_put_u64(m, res, "ms", 42);
    return wk_send_result(f, i, &m);
}

static int wk_result_err(struct fx *f, int i, const char *job, uint32_t code, const char *msg)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "err_code", code);
    cairn_msg_set_str(m, "err_msg", msg);
    return wk_send_result(f, i, &m);
}

static void put_ref(struct cairn_msg *m, struct cairn_mval *l, const char *name, uint64_t mlen, size_t nchunks)
{
    uint8_t man[3 * 36];
    memset(man, (int)nchunks, sizeof(man));
    cairn_mval_put_str(m, l, "image", name);
    cairn_mval_put_u64(m, l, "manifest_len", mlen);
    cairn_mval_put_bin(m, l, "manifest", man, nchunks * 36);
}

/* A sandbox-snapshot result: root, ckpt, one mount at /data (when mount), sizes, fingerprint. */
static int wk_snap_result(struct fx *f, int i, const char *job, const char *sn, const char *fp, bool mount)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "err_code", 0);
    struct cairn_mval *res = cairn_msg_set_map(m, "result");
    char name[64];
    snprintf(name, sizeof(name), "%s-root", sn);
    put_ref(m, cairn_mval_put_map(m, res, "root"), name, 100, 1);
    snprintf(name, sizeof(name), "%s-ckpt", sn);
    put_ref(m, cairn_mval_put_map(m, res, "ckpt"), name, 200, 2);
    struct cairn_mval *mounts = cairn_mval_put_array(m, res, "mounts");
    if (mount) {
        struct cairn_mval *mt = cairn_mval_push_map(m, mounts);
        cairn_mval_put_str(m, mt, "path", "/data");
        snprintf(name, sizeof(name), "%s-m0", sn);
        put_ref(m, cairn_mval_put_map(m, mt, "tree"), name, 50, 3);
    }
    cairn_mval_put_u64(m, res, "size", 1000);
    cairn_mval_put_u64(m, res, "stored", 500);
    cairn_mval_put_u64(m, res, "checkpoint_ms", 12);
    if (fp)
        cairn_mval_put_str(m, res, "fingerprint", fp);
    return wk_send_result(f, i, &m);
}

/* ---- client helpers ------------------------------------------------------------------------------ */

/* An image ready in app1 (imported through worker wi). Caller frees. */
static char *import_image(struct fx *f, const char *upload, int wi)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_IMAGE_IMPORT);
    cairn_msg_set_str(m, "upload", upload);
    cairn_msg_set_u64(m, "offset", 0);
    cairn_msg_set_bool(m, "last", true);
    cairn_msg_set_str(m, "name", "default");
    cairn_msg_add_frame(m, "tar", 3);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "image-import");
    char *image = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    m = fx_worker_req(f, wi, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "err_code", 0);
    struct cairn_mval *res = cairn_msg_set_map(m, "result");
    put_ref(m, res, image, 4000, 2);
    cairn_mval_put_str(m, res, "image", image);
    assert_int_equal(wk_send_result(f, wi, &m), CAIRN_OK);
    free(job);
    return image;
}

static struct cairn_msg *create_req(struct fx *f, const char *req_id, bool snap, const char *pin)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_CREATE);
    cairn_msg_set_str(m, "req_id", req_id);
    if (snap)
        cairn_msg_set_bool(m, "enable_snapshot", true);
    if (pin)
        cairn_msg_set_str(m, "worker", pin);
    return m;
}

/* A running sandbox on worker wi (pinned). Caller frees. */
static char *make_sandbox(struct fx *f, const char *req_id, bool snap, int wi)
{
    struct cairn_msg *m = create_req(f, req_id, snap, f->w[wi].id);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-create");
    char *sb = strdup(fx_pstr(fx_params(d), "sandbox"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, wi, job), CAIRN_OK);
    free(job);
    return sb;
}

static const char *sandbox_state(struct fx *f, const char *id)
{
    struct coord_sandbox *sb = coord_sandbox_get(f->c, id);
    return sb ? coord_sandbox_state_name(sb->rec.state) : "(none)";
}

static struct cairn_msg *snapshot_req(struct fx *f, const char *sb, const char *req_id)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "req_id", req_id);
    return m;
}

/* sandbox.snapshot refused with code and exactly this message. */
static void expect_snapshot_refused(struct fx *f, const char *sb, const char *req_id, int code, const char *msg)
{
    size_t jobs = coord_map_count(&f->c->jobs), snaps = coord_map_count(&f->c->snapshots);
    struct cairn_msg *m = snapshot_req(f, sb, req_id);
    struct cairn_msg *r = fx_expect(f, &m, code);
    if (strcmp(cairn_msg_text(r), msg) != 0)
        fail_msg("expected message '%s', got '%s'", msg, cairn_msg_text(r));
    cairn_msg_destroy(&r);
    assert_int_equal(coord_map_count(&f->c->jobs), jobs);
    assert_int_equal(coord_map_count(&f->c->snapshots), snaps);
    assert_string_equal(sandbox_state(f, sb), "running");
}

/* A memory snapshot of sb (on worker wi) taken and reported with fingerprint fp; returns its id. */
static char *take_snapshot(struct fx *f, const char *sb, int wi, const char *req_id, const char *fp, bool mount)
{
    struct cairn_msg *m = snapshot_req(f, sb, req_id);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "kind"), "sandbox-snapshot");
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-snapshot");
    assert_string_equal(fx_str(d, "job"), job);
    const struct cairn_mval *p = fx_params(d);
    assert_string_equal(fx_pstr(p, "sandbox"), sb);
    assert_string_equal(fx_pstr(p, "runtime_id"), coord_sandbox_get(f->c, sb)->rec.runtime_id);
    assert_string_equal(fx_pstr(p, "worker"), f->w[wi].id);
    char *sn = strdup(fx_pstr(p, "snapshot"));
    assert_memory_equal(sn, "sn-", 3);
    cairn_msg_destroy(&d);
    assert_int_equal(wk_snap_result(f, wi, job, sn, fp, mount), CAIRN_OK);
    r = fx_job_get(f, job, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    const struct cairn_mval *res = cairn_msg_get(r, "result");
    assert_string_equal(fx_pstr(res, "id"), sn);
    cairn_msg_destroy(&r);
    free(job);
    return sn;
}

static struct cairn_msg *restore_req(struct fx *f, const char *sn, const char *req_id, uint64_t count,
                                     const char *pin)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_RESTORE);
    cairn_msg_set_str(m, "snapshot", sn);
    cairn_msg_set_str(m, "req_id", req_id);
    if (count)
        cairn_msg_set_u64(m, "count", count);
    if (pin)
        cairn_msg_set_str(m, "worker", pin);
    return m;
}

static struct cairn_msg *show_req(struct fx *f, const char *sn)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_SHOW);
    cairn_msg_set_str(m, "snapshot", sn);
    return m;
}

static void advance_days(struct fx *f, uint64_t days)
{
    struct cairn_msg *m = fx_admin_req(f, CAIRN_MSG_ADMIN_CLOCK_ADVANCE);
    cairn_msg_set_u64(m, "seconds", days * DAY_S);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
}

struct clone {
    char job[COORD_JOB_ID_LEN + 1];
    char sb[COORD_OBJ_ID_LEN + 1];
    int wi;
};

/* The next n sandbox-restore dispatches (any worker), checked against sn. */
static void take_clones(struct fx *f, const char *sn, struct clone *cl, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        int wi = -1;
        struct cairn_msg *d = fx_wk_dispatch_any(f, &wi, 3000);
        assert_non_null(d);
        assert_string_equal(fx_str(d, "kind"), "sandbox-restore");
        const struct cairn_mval *p = fx_params(d);
        assert_string_equal(fx_pstr(p, "snapshot"), sn);
        assert_string_equal(fx_pstr(p, "worker"), f->w[wi].id);
        snprintf(cl[k].job, sizeof(cl[k].job), "%s", fx_str(d, "job"));
        snprintf(cl[k].sb, sizeof(cl[k].sb), "%s", fx_pstr(p, "sandbox"));
        cl[k].wi = wi;
        cairn_msg_destroy(&d);
    }
}

/* Declare worker i dead now (its heartbeats stopped long ago); the others were just seen. */
static void kill_worker(struct fx *f, int i)
{
    uint64_t now = cairn_now_mono_ns();
    for (size_t k = 0; k < f->c->nworkers; k++)
        f->c->wlist[k]->last_seen_mono = now;
    coord_worker_find(f->c, f->w[i].id)->last_seen_mono = 0;
    coord_workers_tick(f->c, now);
    assert_false(coord_worker_find(f->c, f->w[i].id)->rec.alive);
    fx_worker_close(f, i);
}

/* ---- tests ------------------------------------------------------------------------------------------ */

static void test_refusals(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    char *image = import_image(f, "base", 0);
    char msg[256];

    /* create --enable-snapshot --gpu */
    struct cairn_msg *m = create_req(f, "gpu-snap", true, NULL);
    cairn_msg_set_u64(m, "gpu", 1);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_EINVAL);
    assert_string_equal(cairn_msg_text(r), "sandboxes with snapshots enabled cannot have GPUs");
    cairn_msg_destroy(&r);

    /* no --enable-snapshot */
    char *plain = make_sandbox(f, "plain", false, 0);
    snprintf(msg, sizeof(msg), "sandbox %s was not created with --enable-snapshot", plain);
    expect_snapshot_refused(f, plain, "s-plain", CAIRN_EUNSUPPORTED, msg);

    /* a GPU (only a record can have one: the API refuses GPUs today) */
    char *sb = make_sandbox(f, "snap", true, 0);
    coord_sandbox_get(f->c, sb)->rec.gpu = 1;
    expect_snapshot_refused(f, sb, "s-gpu", CAIRN_EUNSUPPORTED, "sandboxes with GPUs cannot be snapshotted");
    coord_sandbox_get(f->c, sb)->rec.gpu = 0;

    /* an exec running in it */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_EXEC);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_mval_push_str(m, cairn_msg_set_array(m, "argv"), "sleep");
    uint64_t xrid = cairn_msg_rid(m);
    assert_int_equal(cairn_sock_send(f->client, m), CAIRN_OK);
    cairn_msg_destroy(&m);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-exec");
    char *xjob = strdup(fx_str(d, "job"));
    cairn_msg_destroy(&d);
    snprintf(msg, sizeof(msg), "an exec is still running in %s (job %s): wait for it to end", sb, xjob);
    expect_snapshot_refused(f, sb, "s-exec", CAIRN_EBUSY, msg);
    m = fx_worker_req(f, 0, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", xjob);
    cairn_msg_set_u64(m, "err_code", 0);
    cairn_mval_put_i64(m, cairn_msg_set_map(m, "result"), "exit_code", 0);
    assert_int_equal(wk_send_result(f, 0, &m), CAIRN_OK);
    r = fx_recv(f, f->client, 3000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_rid(r), xrid);
    cairn_msg_destroy(&r);
    free(xjob);

    /* an exec queued (its worker is full of dispatches: back off) counts too */
    coord_worker_find(f->c, "w1")->busy_until_mono = cairn_now_mono_ns() + 60000000000ull;
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_EXEC);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_mval_push_str(m, cairn_msg_set_array(m, "argv"), "true");
    assert_int_equal(cairn_sock_send(f->client, m), CAIRN_OK);
    cairn_msg_destroy(&m);
    struct coord_job *queued = NULL;
    for (int tries = 0; tries < 200 && !queued; tries++) {
        fx_pump(f, 5);
        size_t pos = 0;
        const void *k;
        size_t kl;
        void *v;
        while (coord_map_next(&f->c->jobs, &pos, &k, &kl, &v))
            if (((struct coord_job *)v)->kind_id == COORD_KIND_SBX_EXEC)
                queued = v;
    }
    assert_non_null(queued);
    assert_int_equal(queued->rec.state, COORD_JOB_QUEUED);
    snprintf(msg, sizeof(msg), "an exec is still running in %s (job %s): wait for it to end", sb, queued->rec.id);
    expect_snapshot_refused(f, sb, "s-exec2", CAIRN_EBUSY, msg);
    coord_job_fail(f->c, queued, CAIRN_ECANCELED, "test");
    r = fx_recv(f, f->client, 3000);
    assert_non_null(r);
    cairn_msg_destroy(&r);
    coord_worker_find(f->c, "w1")->busy_until_mono = 0;

    /* a CSEK mount */
    struct coord_sandbox_rec *rec = &coord_sandbox_get(f->c, sb)->rec;
    rec->mounts = cairn_calloc(2, sizeof(*rec->mounts));
    rec->nmounts = 2;
    rec->mounts[0].path = cairn_strdup("/plain");
    rec->mounts[1].path = cairn_strdup("/secret");
    rec->mounts[1].csek = true;
    snprintf(msg, sizeof(msg), "%s has a CSEK mount at /secret: unmount it before a memory snapshot", sb);
    expect_snapshot_refused(f, sb, "s-csek", CAIRN_EUNSUPPORTED, msg);
    rec->mounts[1].csek = false; /* a managed mount is fine */

    /* one snapshot at a time */
    m = snapshot_req(f, sb, "s-first");
    r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    snprintf(msg, sizeof(msg), "a memory snapshot of %s is already being taken (job %s)", sb, job);
    expect_snapshot_refused(f, sb, "s-second", CAIRN_EBUSY, msg);
    /* the same req_id answers with the same job */
    m = snapshot_req(f, sb, "s-first");
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "job"), job);
    cairn_msg_destroy(&r);
    /* the worker refuses (an exec it knows of): nothing visible, the sandbox still runs */
    d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    char *sn = strdup(fx_pstr(fx_params(d), "snapshot"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_err(f, 0, job, CAIRN_EBUSY, "an exec is still running"), CAIRN_OK);
    assert_string_equal(sandbox_state(f, sb), "running");
    assert_int_equal(coord_snapshot_get(f->c, sn)->state, COORD_SNAP_FAILED);
    m = show_req(f, sn);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    snprintf(msg, sizeof(msg), "snapshot '%s' not found", sn);
    assert_string_equal(cairn_msg_text(r), msg);
    cairn_msg_destroy(&r);
    /* a failed snapshot is collectable (the worker may have stored chunks); a refusal sent no terminate */
    char(*ids)[COORD_OBJ_ID_LEN + 1] = NULL;
    size_t n = coord_snapshots_collectable(f->c, &ids);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found = found || !strcmp(ids[i], sn);
    assert_true(found || coord_snapshot_get(f->c, sn)->collected);
    cairn_free(ids);
    assert_null(fx_wk_dispatch(f, 0, 100));
    free(sn);
    free(job);

    /* a failure after the checkpoint may have begun: the sandbox is terminated */
    m = snapshot_req(f, sb, "s-io");
    r = fx_expect(f, &m, CAIRN_OK);
    job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 0, 3000);
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_err(f, 0, job, CAIRN_EIO, "store the checkpoint: disk full"), CAIRN_OK);
    r = fx_job_get(f, job, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_string_equal(fx_str(r, "err_msg"), "store the checkpoint: disk full");
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-terminate");
    assert_string_equal(fx_pstr(fx_params(d), "sandbox"), sb);
    assert_int_equal(wk_result_err(f, 0, fx_str(d, "job"), CAIRN_ENOTFOUND, "no such sandbox"), CAIRN_OK);
    cairn_msg_destroy(&d);
    assert_string_equal(sandbox_state(f, sb), "terminated");
    free(job);

    /* an unknown / terminated sandbox */
    m = snapshot_req(f, "sb-0123456789abcdef", "s-unknown");
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    m = snapshot_req(f, sb, "s-term");
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    free(sb);
    free(plain);
    free(image);
}

static void test_snapshot_record(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    char *image = import_image(f, "base", 0);
    char *sb = make_sandbox(f, "snap", true, 0);
    struct cairn_msg *m = snapshot_req(f, sb, "snap1");
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    char *sn = strdup(fx_pstr(fx_params(d), "snapshot"));
    cairn_msg_destroy(&d);
    /* pending: invisible */
    m = show_req(f, sn);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_LS);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *arr = NULL;
    size_t n = 0;
    assert_int_equal(cairn_msg_get_array(r, "snapshots", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 0);
    cairn_msg_destroy(&r);
    m = restore_req(f, sn, "early", 1, NULL);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);

    int64_t before = cairn_clock_now_ns(&f->c->clock);
    assert_int_equal(wk_snap_result(f, 0, job, sn, "fp-a", true), CAIRN_OK);
    int64_t after = cairn_clock_now_ns(&f->c->clock);
    r = fx_job_get(f, job, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    const struct cairn_mval *res = cairn_msg_get(r, "result");
    assert_string_equal(fx_pstr(res, "id"), sn);
    assert_string_equal(fx_pstr(res, "snapshot"), sn);
    assert_int_equal(fx_pu64(res, "checkpoint_ms"), 12);
    assert_null(cairn_mval_get(res, "root")); /* the trees stay in the coordinator */
    cairn_msg_destroy(&r);
    assert_string_equal(sandbox_state(f, sb), "terminated");
    assert_int_equal(f->c->wlist[0]->nsbx, 0);

    m = show_req(f, sn);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *s = cairn_msg_get(r, "snapshot");
    assert_string_equal(fx_pstr(s, "id"), sn);
    assert_string_equal(fx_pstr(s, "sandbox"), sb);
    assert_string_equal(fx_pstr(s, "image"), image);
    assert_string_equal(fx_pstr(s, "fingerprint"), "fp-a");
    assert_null(cairn_mval_get(s, "parent"));
    assert_int_equal(fx_pu64(s, "size"), 1000);
    assert_int_equal(fx_pu64(s, "stored"), 500);
    uint64_t created = fx_pu64(s, "created_at");
    assert_true(created >= (uint64_t)before && created <= (uint64_t)after);
    assert_int_equal(fx_pu64(s, "expires_at"), created + 7 * DAY_S * 1000000000ull);
    const struct cairn_mval *mounts = cairn_mval_get(s, "mounts");
    assert_int_equal(cairn_mval_len(mounts), 1);
    const char *path = NULL;
    size_t pl = 0;
    assert_int_equal(cairn_mval_str(cairn_mval_at(mounts, 0), &path, &pl), CAIRN_OK);
    assert_int_equal(pl, 5);
    assert_memory_equal(path, "/data", 5);
    cairn_msg_destroy(&r);
    /* a live snapshot keeps its root image */
    assert_true(coord_snapshots_use_image(f->c, image));

    /* a result without usable trees fails the job: invisible */
    char *sb2 = make_sandbox(f, "snap2", true, 0);
    m = snapshot_req(f, sb2, "s-snap2");
    r = fx_expect(f, &m, CAIRN_OK);
    char *job2 = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 0, 3000);
    char *sn2 = strdup(fx_pstr(fx_params(d), "snapshot"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, 0, job2), CAIRN_OK);
    r = fx_job_get(f, job2, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EPROTO);
    cairn_msg_destroy(&r);
    assert_int_equal(coord_snapshot_get(f->c, sn2)->state, COORD_SNAP_FAILED);
    /* EPROTO is no refusal: the worker may have terminated it, a terminate job settles it */
    d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-terminate");
    cairn_msg_destroy(&d);
    free(sn2);
    free(job2);
    free(sb2);

    /* the record codec: a round trip, and a damaged record is refused naming the field */
    struct coord_snapshot *cs = coord_snapshot_get(f->c, sn);
    struct cairn_buf b;
    cairn_buf_init(&b, 1 << 20);
    assert_int_equal(coord_snapshot_encode(cs, &b), CAIRN_OK);
    struct coord_snapshot back;
    assert_int_equal(coord_snapshot_decode(b.data, b.len, "x/test", &back), CAIRN_OK);
    assert_string_equal(back.id, cs->id);
    assert_string_equal(back.fingerprint, "fp-a");
    assert_int_equal(back.expires_ns, cs->expires_ns);
    assert_int_equal(back.state, COORD_SNAP_READY);
    assert_int_equal(back.trees_len, cs->trees_len);
    assert_memory_equal(back.trees, cs->trees, cs->trees_len);
    cairn_free(back.trees);
    for (size_t cut = 1; cut < b.len; cut += 7) {
        int rc = coord_snapshot_decode(b.data, cut, "x/test", &back);
        assert_int_not_equal(rc, CAIRN_OK);
        assert_null(back.trees);
    }
    cairn_buf_release(&b);
    struct coord_snapshot bad = *cs;
    bad.trees = NULL; /* a ready snapshot without trees */
    cairn_buf_init(&b, 1 << 20);
    assert_int_equal(coord_snapshot_encode(&bad, &b), CAIRN_OK);
    assert_int_equal(coord_snapshot_decode(b.data, b.len, "x/test", &back), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "x/test"));
    cairn_buf_release(&b);
    free(sn);
    free(job);
    free(sb);
    free(image);
}

static void test_restore_placement(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    wk_register(f, 1, 8, "fp-a");
    wk_register(f, 2, 8, "fp-b");
    char *image = import_image(f, "base", 0);
    char *sb = make_sandbox(f, "src", true, 0);
    char *sn = take_snapshot(f, sb, 0, "snap", "fp-a", true);
    int64_t expires = coord_snapshot_get(f->c, sn)->expires_ns;

    /* 4 clones: only w1 and w2 match, equal loads take turns */
    struct cairn_msg *m = restore_req(f, sn, "r4", 4, NULL);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "kind"), "restore");
    assert_string_equal(fx_str(r, "state"), "running");
    assert_null(cairn_msg_get(r, "worker"));
    char *group = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct clone cl[4];
    take_clones(f, sn, cl, 4);
    size_t per[3] = {0, 0, 0};
    for (int k = 0; k < 4; k++)
        per[cl[k].wi]++;
    assert_int_equal(per[0], 2);
    assert_int_equal(per[1], 2);
    assert_int_equal(per[2], 0);
    assert_null(fx_wk_dispatch(f, 2, 100));
    /* the clones: params and records */
    struct coord_job *cj = coord_job_find(f->c, cl[0].job);
    assert_non_null(cj);
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *p = NULL;
    assert_int_equal(coord_value_unpack(cj->rec.params, cj->rec.params_len, "params", &holder, &p), CAIRN_OK);
    assert_string_equal(fx_pstr(p, "group"), group);
    assert_int_equal(cairn_mval_len(cairn_mval_get(p, "layers")), 1);
    assert_string_equal(fx_pstr(cairn_mval_at(cairn_mval_get(p, "layers"), 0), "image"), image);
    char name[64];
    snprintf(name, sizeof(name), "%s-root", sn);
    assert_string_equal(fx_pstr(cairn_mval_get(p, "root"), "image"), name);
    snprintf(name, sizeof(name), "%s-ckpt", sn);
    assert_string_equal(fx_pstr(cairn_mval_get(p, "ckpt"), "image"), name);
    assert_int_equal(fx_pu64(cairn_mval_get(p, "ckpt"), "manifest_len"), 200);
    assert_int_equal(cairn_mval_len(cairn_mval_get(p, "mounts")), 1);
    assert_string_equal(fx_pstr(cairn_mval_at(cairn_mval_get(p, "mounts"), 0), "path"), "/data");
    assert_int_equal(strlen(fx_pstr(p, "runtime_id")), 32);
    cairn_msg_destroy(&holder);
    for (int k = 0; k < 4; k++) {
        struct coord_sandbox *c1 = coord_sandbox_get(f->c, cl[k].sb);
        assert_non_null(c1);
        assert_int_equal(c1->rec.state, COORD_SBX_CREATING);
        assert_string_equal(c1->rec.restored_from, sn);
        assert_int_equal(c1->rec.expires_hint_ns, expires);
        assert_string_equal(c1->rec.image, image);
        assert_true(c1->rec.enable_snapshot);
    }
    /* slots are held while restoring */
    assert_int_equal(coord_worker_sbx_load(f->c->wlist[0]), 2);
    /* the group waits for every clone */
    for (int k = 0; k < 3; k++)
        assert_int_equal(wk_result_ok(f, cl[k].wi, cl[k].job), CAIRN_OK);
    r = fx_job_get(f, group, 0);
    assert_string_equal(fx_str(r, "state"), "running");
    cairn_msg_destroy(&r);
    /* a long poll on the group ends with it */
    m = fx_app_req(f, CAIRN_MSG_JOB_GET);
    cairn_msg_set_str(m, "job", group);
    cairn_msg_set_u64(m, "wait_ms", 5000);
    uint64_t rid = cairn_msg_rid(m);
    assert_int_equal(cairn_sock_send(f->client, m), CAIRN_OK);
    cairn_msg_destroy(&m);
    fx_pump(f, 20);
    assert_int_equal(wk_result_ok(f, cl[3].wi, cl[3].job), CAIRN_OK);
    r = fx_recv(f, f->client, 3000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_rid(r), rid);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    const struct cairn_mval *res = cairn_msg_get(r, "result");
    const struct cairn_mval *ids = cairn_mval_get(res, "ids"), *ws = cairn_mval_get(res, "workers");
    assert_int_equal(cairn_mval_len(ids), 4);
    assert_int_equal(cairn_mval_len(ws), 4);
    for (size_t k = 0; k < 4; k++) {
        const char *sid = NULL, *w = NULL;
        size_t l1 = 0, l2 = 0;
        cairn_mval_str(cairn_mval_at(ids, k), &sid, &l1);
        cairn_mval_str(cairn_mval_at(ws, k), &w, &l2);
        struct coord_sandbox *c1 = coord_sandbox_get(f->c, sid);
        assert_non_null(c1);
        assert_int_equal(c1->rec.state, COORD_SBX_RUNNING);
        assert_int_equal(l2, strlen(c1->rec.worker));
        assert_memory_equal(w, c1->rec.worker, l2);
    }
    cairn_msg_destroy(&r);
    assert_int_equal(f->c->wlist[0]->nsbx, 2);
    assert_int_equal(f->c->wlist[1]->nsbx, 2);
    assert_int_equal(coord_snapshot_get(f->c, sn)->restoring, 0);
    /* sandbox.ls shows where a clone comes from */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_LS);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *sbs = NULL;
    size_t nsbs = 0, nclones = 0;
    assert_int_equal(cairn_msg_get_array(r, "sandboxes", &sbs, &nsbs), CAIRN_OK);
    for (size_t k = 0; k < nsbs; k++)
        nclones += !strcmp(fx_pstr(cairn_mval_at(sbs, k), "restored_from"), sn);
    assert_int_equal(nclones, 4);
    cairn_msg_destroy(&r);
    /* the same req_id: the same group */
    m = restore_req(f, sn, "r4", 4, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "job"), group);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);

    /* the pin: a matching worker takes all; a worker of another fingerprint is refused */
    m = restore_req(f, sn, "pin-b", 1, "w3");
    r = fx_expect(f, &m, CAIRN_EUNAVAILABLE);
    char msg[256];
    snprintf(msg, sizeof(msg), "worker 'w3' does not match runtime fingerprint 'fp-a' of %s (it has 'fp-b')", sn);
    assert_string_equal(cairn_msg_text(r), msg);
    cairn_msg_destroy(&r);
    m = restore_req(f, sn, "pin-a", 2, "w2");
    r = fx_expect(f, &m, CAIRN_OK);
    char *g2 = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    take_clones(f, sn, cl, 2);
    assert_int_equal(cl[0].wi, 1);
    assert_int_equal(cl[1].wi, 1);
    for (int k = 0; k < 2; k++)
        assert_int_equal(wk_result_ok(f, 1, cl[k].job), CAIRN_OK);
    r = fx_job_get(f, g2, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    /* now w1 runs 2, w2 4: of four clones the less loaded w1 takes two, then they take turns */
    m = restore_req(f, sn, "r3", 4, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    char *g3 = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    take_clones(f, sn, cl, 4);
    per[0] = per[1] = per[2] = 0;
    for (int k = 0; k < 4; k++)
        per[cl[k].wi]++;
    assert_int_equal(per[0], 3);
    assert_int_equal(per[1], 1);
    for (int k = 0; k < 4; k++)
        assert_int_equal(wk_result_ok(f, cl[k].wi, cl[k].job), CAIRN_OK);
    free(g3);
    free(g2);

    /* a snapshot no live worker can run */
    char *sb2 = make_sandbox(f, "src2", true, 2);
    char *sn2 = take_snapshot(f, sb2, 2, "snap2", "fp-c", false);
    m = restore_req(f, sn2, "nomatch", 1, NULL);
    r = fx_expect(f, &m, CAIRN_EUNAVAILABLE);
    snprintf(msg, sizeof(msg), "no live worker matches runtime fingerprint 'fp-c' of %s", sn2);
    assert_string_equal(cairn_msg_text(r), msg);
    cairn_msg_destroy(&r);
    /* count out of range (1..256) is refused by the wire model itself (unit.proto covers its bounds) */
    free(sn2);
    free(sb2);
    free(group);
    free(sn);
    free(sb);
    free(image);
}

static void test_restore_all_or_nothing(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    wk_register(f, 1, 8, "fp-a");
    char *image = import_image(f, "base", 0);
    char *sb = make_sandbox(f, "src", true, 0);
    char *sn = take_snapshot(f, sb, 0, "snap", "fp-a", false);

    struct cairn_msg *m = restore_req(f, sn, "r3", 3, NULL);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *group = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    assert_int_equal(coord_snapshot_get(f->c, sn)->restoring, 1);
    struct clone cl[3];
    take_clones(f, sn, cl, 3);
    assert_int_equal(wk_result_ok(f, cl[0].wi, cl[0].job), CAIRN_OK);
    assert_int_equal(wk_result_err(f, cl[1].wi, cl[1].job, CAIRN_EIO, "runsc restore: checkpoint image corrupt"),
                     CAIRN_OK);
    r = fx_job_get(f, group, 0);
    assert_string_equal(fx_str(r, "state"), "running"); /* clone 3 still restoring */
    cairn_msg_destroy(&r);
    assert_int_equal(wk_result_ok(f, cl[2].wi, cl[2].job), CAIRN_OK);
    r = fx_job_get(f, group, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EIO);
    assert_string_equal(fx_str(r, "err_msg"), "runsc restore: checkpoint image corrupt");
    cairn_msg_destroy(&r);
    assert_string_equal(sandbox_state(f, cl[1].sb), "failed");
    /* the clones that ran are terminated */
    for (int k = 0; k < 3; k += 2) {
        struct cairn_msg *d = fx_wk_dispatch(f, cl[k].wi, 3000);
        assert_non_null(d);
        assert_string_equal(fx_str(d, "kind"), "sandbox-terminate");
        assert_string_equal(fx_pstr(fx_params(d), "sandbox"), cl[k].sb);
        assert_int_equal(wk_result_ok(f, cl[k].wi, fx_str(d, "job")), CAIRN_OK);
        cairn_msg_destroy(&d);
        assert_string_equal(sandbox_state(f, cl[k].sb), "terminated");
    }
    assert_int_equal(coord_snapshot_get(f->c, sn)->restoring, 0);
    free(group);
    free(sn);
    free(sb);
    free(image);
}

static void test_restore_dead_worker(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    wk_register(f, 1, 8, "fp-a");
    wk_register(f, 2, 8, "fp-a");
    char *image = import_image(f, "base", 0);
    char *sb = make_sandbox(f, "src", true, 0);
    char *sn = take_snapshot(f, sb, 0, "snap", "fp-a", false);

    /* w3 is down: two clones go to w1 and w2 */
    kill_worker(f, 2);
    struct cairn_msg *m = restore_req(f, sn, "r2", 2, NULL);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *group = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct clone cl[2];
    take_clones(f, sn, cl, 2);
    assert_int_not_equal(cl[0].wi, cl[1].wi);
    assert_true(cl[0].wi != 2 && cl[1].wi != 2);
    for (int k = 0; k < 2; k++)
        assert_int_equal(wk_result_ok(f, cl[k].wi, cl[k].job), CAIRN_OK);
    r = fx_job_get(f, group, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    free(group);

    /* a clone's worker dies while it restores: the group fails, the other clone is terminated */
    m = restore_req(f, sn, "r2b", 2, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    group = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    take_clones(f, sn, cl, 2);
    int survivor = cl[0].wi == 0 ? 0 : 1; /* the clone on w1 (worker index 0) */
    int victim = 1 - survivor;
    assert_int_equal(cl[victim].wi, 1);
    assert_int_equal(wk_result_ok(f, cl[survivor].wi, cl[survivor].job), CAIRN_OK);
    kill_worker(f, 1);
    r = fx_job_get(f, group, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EUNAVAILABLE);
    assert_non_null(strstr(fx_str(r, "err_msg"), "w2"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-terminate");
    assert_string_equal(fx_pstr(fx_params(d), "sandbox"), cl[survivor].sb);
    cairn_msg_destroy(&d);

    /* only w1 is left: a pinned restore on dead w2 is refused */
    m = restore_req(f, sn, "dead-pin", 1, "w2");
    r = fx_expect(f, &m, CAIRN_EUNAVAILABLE);
    assert_string_equal(cairn_msg_text(r), "worker 'w2' is dead");
    cairn_msg_destroy(&r);
    free(group);
    free(sn);
    free(sb);
    free(image);
}

static void test_expiry_and_inheritance(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    char *image = import_image(f, "base", 0);
    char *sb = make_sandbox(f, "src", true, 0);
    char *sn1 = take_snapshot(f, sb, 0, "snap1", "fp-a", false);
    int64_t exp1 = coord_snapshot_get(f->c, sn1)->expires_ns;
    assert_int_equal(exp1, coord_snapshot_get(f->c, sn1)->created_ns + 7 * (int64_t)DAY_S * 1000000000ll);

    /* day 2: restore, then snapshot the clone: it inherits sn1's expiry */
    advance_days(f, 2);
    struct cairn_msg *m = restore_req(f, sn1, "r1", 0, NULL); /* count defaults to 1 */
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *group = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct clone cl[1];
    take_clones(f, sn1, cl, 1);
    assert_int_equal(wk_result_ok(f, 0, cl[0].job), CAIRN_OK);
    r = fx_job_get(f, group, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    advance_days(f, 1);
    char *sn2 = take_snapshot(f, cl[0].sb, 0, "snap2", "fp-a", false);
    struct coord_snapshot *s2 = coord_snapshot_get(f->c, sn2);
    assert_int_equal(s2->expires_ns, exp1);
    assert_string_equal(s2->parent, sn1);
    m = show_req(f, sn2);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_pstr(cairn_msg_get(r, "snapshot"), "parent"), sn1);
    assert_int_equal(fx_pu64(cairn_msg_get(r, "snapshot"), "expires_at"), (uint64_t)exp1);
    cairn_msg_destroy(&r);
    /* and through a chain: a clone of sn2, snapshotted again */
    m = restore_req(f, sn2, "r2", 1, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    take_clones(f, sn2, cl, 1);
    assert_int_equal(coord_sandbox_get(f->c, cl[0].sb)->rec.expires_hint_ns, exp1);
    assert_int_equal(wk_result_ok(f, 0, cl[0].job), CAIRN_OK);
    char *sn3 = take_snapshot(f, cl[0].sb, 0, "snap3", "fp-a", false);
    assert_int_equal(coord_snapshot_get(f->c, sn3)->expires_ns, exp1);
    /* an independent snapshot taken now lives 7 days from now */
    char *sb4 = make_sandbox(f, "src4", true, 0);
    char *sn4 = take_snapshot(f, sb4, 0, "snap4", "fp-a", false);
    int64_t exp4 = coord_snapshot_get(f->c, sn4)->expires_ns;
    assert_true(exp4 > exp1);

    /* day 7: sn1..sn3 expired (at once, whatever the sweeper did), sn4 not */
    advance_days(f, 4);
    char msg[256], when[32];
    coord_format_utc(exp1, when);
    m = show_req(f, sn1);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    snprintf(msg, sizeof(msg), "snapshot %s expired on %s", sn1, when);
    assert_string_equal(cairn_msg_text(r), msg);
    cairn_msg_destroy(&r);
    m = restore_req(f, sn3, "late", 1, NULL);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    snprintf(msg, sizeof(msg), "snapshot %s expired on %s", sn3, when);
    assert_string_equal(cairn_msg_text(r), msg);
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_LS);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *arr = NULL;
    size_t n = 0;
    assert_int_equal(cairn_msg_get_array(r, "snapshots", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 1);
    assert_string_equal(fx_pstr(cairn_mval_at(arr, 0), "id"), sn4);
    cairn_msg_destroy(&r);
    /* the sweep marks them; they become collectable, and collected ones stay tombstones */
    coord_snapshots_sweep(f->c, cairn_clock_now_ns(&f->c->clock));
    assert_int_equal(coord_snapshot_get(f->c, sn1)->state, COORD_SNAP_EXPIRED);
    assert_int_equal(coord_snapshot_get(f->c, sn4)->state, COORD_SNAP_READY);
    char(*ids)[COORD_OBJ_ID_LEN + 1] = NULL;
    size_t nc = coord_snapshots_collectable(f->c, &ids);
    size_t seen = 0;
    for (size_t i = 0; i < nc; i++)
        seen += !strcmp(ids[i], sn1) + !strcmp(ids[i], sn2) + !strcmp(ids[i], sn3) + !strcmp(ids[i], sn4) * 100;
    cairn_free(ids);
    /* (the coordinator's own sweeper may have collected some already: no refs, nothing to delete) */
    size_t collected = coord_snapshot_get(f->c, sn1)->collected + coord_snapshot_get(f->c, sn2)->collected +
                       coord_snapshot_get(f->c, sn3)->collected;
    assert_int_equal(seen + collected, 3);
    coord_snapshots_collected(f->c, sn1);
    assert_true(coord_snapshot_get(f->c, sn1)->collected);
    assert_null(coord_snapshot_get(f->c, sn1)->trees);
    m = show_req(f, sn1);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_msg_text(r), "expired on"));
    cairn_msg_destroy(&r);
    /* day 14: sn4 too */
    advance_days(f, 7);
    m = show_req(f, sn4);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_msg_text(r), "expired on"));
    cairn_msg_destroy(&r);
    free(sn4);
    free(sb4);
    free(sn3);
    free(sn2);
    free(group);
    free(sn1);
    free(sb);
    free(image);
}

static void test_ls_show_rm(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    char *image = import_image(f, "base", 0);
    char *sbs[3], *sns[3];
    for (int i = 0; i < 3; i++) {
        char req[16];
        snprintf(req, sizeof(req), "sb%d", i);
        sbs[i] = make_sandbox(f, req, true, 0);
        snprintf(req, sizeof(req), "sn%d", i);
        sns[i] = take_snapshot(f, sbs[i], 0, req, "fp-a", false);
    }
    /* pages of 2, in id order */
    char *sorted[3] = {sns[0], sns[1], sns[2]};
    for (int i = 0; i < 3; i++)
        for (int k = i + 1; k < 3; k++)
            if (strcmp(sorted[k], sorted[i]) < 0) {
                char *t = sorted[i];
                sorted[i] = sorted[k];
                sorted[k] = t;
            }
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_LS);
    cairn_msg_set_u64(m, "limit", 2);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *arr = NULL;
    size_t n = 0;
    assert_int_equal(cairn_msg_get_array(r, "snapshots", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 2);
    assert_string_equal(fx_pstr(cairn_mval_at(arr, 0), "id"), sorted[0]);
    assert_string_equal(fx_pstr(cairn_mval_at(arr, 1), "id"), sorted[1]);
    assert_string_equal(fx_str(r, "next"), sorted[1]);
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_LS);
    cairn_msg_set_u64(m, "limit", 2);
    cairn_msg_set_str(m, "after", sorted[1]);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_int_equal(cairn_msg_get_array(r, "snapshots", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 1);
    assert_string_equal(fx_pstr(cairn_mval_at(arr, 0), "id"), sorted[2]);
    assert_null(cairn_msg_get(r, "next"));
    cairn_msg_destroy(&r);

    /* another app sees none of them */
    uint8_t tok2[64];
    size_t tok2len = 0;
    fx_create_app(f, "app2", tok2, &tok2len);
    m = fx_req(f, CAIRN_MSG_SNAPSHOT_LS, "app2", tok2, tok2len);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_int_equal(cairn_msg_get_array(r, "snapshots", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 0);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_SNAPSHOT_SHOW, "app2", tok2, tok2len);
    cairn_msg_set_str(m, "snapshot", sns[0]);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_SNAPSHOT_RM, "app2", tok2, tok2len);
    cairn_msg_set_str(m, "snapshot", sns[0]);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_SANDBOX_RESTORE, "app2", tok2, tok2len);
    cairn_msg_set_str(m, "snapshot", sns[0]);
    cairn_msg_set_str(m, "req_id", "steal");
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);

    /* rm: collectable at once, hidden, "removed" */
    int64_t before = cairn_clock_now_ns(&f->c->clock);
    m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_RM);
    cairn_msg_set_str(m, "snapshot", sns[1]);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    struct coord_snapshot *s = coord_snapshot_get(f->c, sns[1]);
    assert_int_equal(s->state, COORD_SNAP_EXPIRED);
    assert_true(s->removed);
    assert_true(s->expires_ns >= before);
    char(*ids)[COORD_OBJ_ID_LEN + 1] = NULL;
    size_t nc = coord_snapshots_collectable(f->c, &ids);
    assert_true((nc == 1 && !strcmp(ids[0], sns[1])) || (nc == 0 && s->collected));
    cairn_free(ids);
    m = show_req(f, sns[1]);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    char msg[256], when[32];
    coord_format_utc(s->expires_ns, when);
    snprintf(msg, sizeof(msg), "snapshot %s was removed on %s", sns[1], when);
    assert_string_equal(cairn_msg_text(r), msg);
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_RM);
    cairn_msg_set_str(m, "snapshot", sns[1]);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_LS);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_int_equal(cairn_msg_get_array(r, "snapshots", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 2);
    cairn_msg_destroy(&r);
    /* while a restore of it runs, a removed snapshot is not collectable (its chunks are being fetched) */
    m = restore_req(f, sns[2], "r", 1, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    struct clone cl[1];
    take_clones(f, sns[2], cl, 1);
    m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_RM);
    cairn_msg_set_str(m, "snapshot", sns[2]);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    for (int i = 0; i < 15; i++) /* past a sweep of the coordinator's own */
        fx_pump(f, 100);
    nc = coord_snapshots_collectable(f->c, &ids);
    for (size_t i = 0; i < nc; i++)
        assert_string_not_equal(ids[i], sns[2]);
    cairn_free(ids);
    assert_false(coord_snapshot_get(f->c, sns[2])->collected);
    assert_true(coord_snapshots_use_image(f->c, image));
    assert_int_equal(wk_result_ok(f, 0, cl[0].job), CAIRN_OK);
    nc = coord_snapshots_collectable(f->c, &ids);
    bool listed = false;
    for (size_t i = 0; i < nc; i++)
        listed = listed || !strcmp(ids[i], sns[2]);
    assert_true(listed || coord_snapshot_get(f->c, sns[2])->collected);
    cairn_free(ids);
    for (int i = 0; i < 3; i++) {
        free(sns[i]);
        free(sbs[i]);
    }
    free(image);
}

static void test_restart(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    wk_register(f, 1, 8, "fp-a");
    char *image = import_image(f, "base", 0);
    char *sb = make_sandbox(f, "src", true, 0);
    char *sn = take_snapshot(f, sb, 0, "snap", "fp-a", true);
    struct coord_snapshot saved = *coord_snapshot_get(f->c, sn);
    uint8_t *trees = malloc(saved.trees_len);
    memcpy(trees, saved.trees, saved.trees_len);
    /* a restore group in flight: one clone done, one running */
    struct cairn_msg *m = restore_req(f, sn, "r2", 2, NULL);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *group = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct clone cl[2];
    take_clones(f, sn, cl, 2);
    assert_int_equal(wk_result_ok(f, cl[0].wi, cl[0].job), CAIRN_OK);
    /* and a pending snapshot whose job is running */
    char *sb2 = make_sandbox(f, "src2", true, 1);
    m = snapshot_req(f, sb2, "pend");
    r = fx_expect(f, &m, CAIRN_OK);
    char *pjob = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, 1, 3000);
    char *psn = strdup(fx_pstr(fx_params(d), "snapshot"));
    cairn_msg_destroy(&d);

    fx_coord_stop(f);
    fx_stash_drop(f);
    fx_coord_start(f);
    struct coord_snapshot *s = coord_snapshot_get(f->c, sn);
    assert_non_null(s);
    assert_int_equal(s->state, COORD_SNAP_READY);
    assert_string_equal(s->fingerprint, "fp-a");
    assert_int_equal(s->expires_ns, saved.expires_ns);
    assert_int_equal(s->created_ns, saved.created_ns);
    assert_int_equal(s->trees_len, saved.trees_len);
    assert_memory_equal(s->trees, trees, saved.trees_len);
    assert_int_equal(s->restoring, 1);
    assert_int_equal(coord_snapshot_get(f->c, psn)->state, COORD_SNAP_PENDING);
    struct coord_sandbox *c0 = coord_sandbox_get(f->c, cl[0].sb);
    assert_string_equal(c0->rec.restored_from, sn);
    assert_int_equal(c0->rec.expires_hint_ns, saved.expires_ns);
    r = fx_job_get(f, group, 0);
    assert_string_equal(fx_str(r, "state"), "running");
    cairn_msg_destroy(&r);
    m = show_req(f, sn);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_int_equal(cairn_mval_len(cairn_mval_get(cairn_msg_get(r, "snapshot"), "mounts")), 1);
    cairn_msg_destroy(&r);

    /* the workers reconnect (no re-registration: that would say which sandboxes survived); the second
     * clone and the snapshot finish */
    fx_worker_connect(f, 0);
    fx_worker_connect(f, 1);
    wk_beat(f, 0);
    wk_beat(f, 1);
    assert_int_equal(wk_result_ok(f, cl[1].wi, cl[1].job), CAIRN_OK);
    r = fx_job_get(f, group, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    assert_int_equal(cairn_mval_len(cairn_mval_get(cairn_msg_get(r, "result"), "ids")), 2);
    cairn_msg_destroy(&r);
    assert_int_equal(coord_snapshot_get(f->c, sn)->restoring, 0);
    assert_int_equal(wk_snap_result(f, 1, pjob, psn, "fp-a", false), CAIRN_OK);
    assert_int_equal(coord_snapshot_get(f->c, psn)->state, COORD_SNAP_READY);

    /* a restart while a pending snapshot's job was lost: failed, collectable */
    char *sb3 = make_sandbox(f, "src3", true, 0);
    m = snapshot_req(f, sb3, "lost");
    r = fx_expect(f, &m, CAIRN_OK);
    char *ljob = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 0, 3000);
    char *lsn = strdup(fx_pstr(fx_params(d), "snapshot"));
    cairn_msg_destroy(&d);
    fx_coord_stop(f);
    fx_stash_drop(f);
    /* its job record says running on w1; w1 is recorded dead at the restart */
    struct cairn_kv *kv = NULL;
    assert_int_equal(coord_meta_open(&kv, tu_path("%s/data", f->dir)), CAIRN_OK);
    char key[COORD_KEY_MAX];
    size_t kl = coord_key_worker(key, "w1");
    uint8_t *val = NULL;
    size_t vl = 0;
    assert_int_equal(cairn_kv_get(kv, key, kl, &val, &vl), CAIRN_OK);
    struct coord_worker_rec wr;
    assert_int_equal(coord_worker_decode(val, vl, key, &wr), CAIRN_OK);
    cairn_free(val);
    wr.alive = false;
    assert_int_equal(coord_meta_put_worker(kv, &wr), CAIRN_OK);
    coord_worker_rec_release(&wr);
    cairn_kv_close(&kv);
    fx_coord_start(f);
    assert_int_equal(coord_snapshot_get(f->c, lsn)->state, COORD_SNAP_FAILED);
    r = fx_job_get(f, ljob, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    cairn_msg_destroy(&r);
    free(lsn);
    free(ljob);
    free(sb3);
    free(psn);
    free(pjob);
    free(sb2);
    free(group);
    free(trees);
    free(sn);
    free(sb);
    free(image);
}

/* job.refs of a sandbox-snapshot job: c/<sn>/...; snapshot.rm -> the collection deletes what only it had */
static int wk_refs(struct fx *f, int i, const char *job, uint64_t seq, const uint8_t dom[16], const uint8_t *ids,
                   size_t n)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_REFS);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "seq", seq);
    cairn_msg_set_bin(m, "domain", dom, 16);
    struct cairn_mval *a = cairn_msg_set_array(m, "ids");
    for (size_t k = 0; k < n; k++)
        cairn_mval_push_bin(m, a, ids + 32 * k, 32);
    return wk_send_result(f, i, &m);
}

static char *snapshot_with_refs(struct fx *f, const char *sb, const char *req_id, const uint8_t dom[16],
                                const uint8_t *ids, size_t n)
{
    struct cairn_msg *m = snapshot_req(f, sb, req_id);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    char *sn = strdup(fx_pstr(fx_params(d), "snapshot"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_refs(f, 0, job, 0, dom, ids, n), CAIRN_OK);
    assert_int_equal(wk_snap_result(f, 0, job, sn, "fp-a", false), CAIRN_OK);
    free(job);
    return sn;
}

static void test_refs_and_collection(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 8, "fp-a");
    wk_register(f, 1, 8, "fp-a");
    char *image = import_image(f, "base", 0);
    uint8_t dom[16], ids[3 * 32];
    memset(dom, 0x11, sizeof(dom));
    for (int k = 0; k < 3; k++)
        memset(ids + 32 * k, 0xa0 + k, 32);
    char *sb1 = make_sandbox(f, "sb1", true, 0);
    char *sn1 = snapshot_with_refs(f, sb1, "s1", dom, ids, 2);          /* chunks 0, 1 */
    char *sb2 = make_sandbox(f, "sb2", true, 0);
    char *sn2 = snapshot_with_refs(f, sb2, "s2", dom, ids + 32, 2);     /* chunks 1, 2 */
    assert_true(coord_refs_exist(f->c, sn1));
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_RM);
    cairn_msg_set_str(m, "snapshot", sn1);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    coord_retention_sweep(f->c);
    /* one delete-chunks job per live worker, with chunk 0 only (chunk 1 is sn2's too) */
    for (int i = 0; i < 2; i++) {
        struct cairn_msg *d = fx_wk_dispatch(f, i, 3000);
        assert_non_null(d);
        assert_string_equal(fx_str(d, "kind"), "delete-chunks");
        const uint8_t *b = NULL;
        size_t bl = 0;
        assert_int_equal(cairn_mval_bin(cairn_mval_get(fx_params(d), "ids"), &b, &bl), CAIRN_OK);
        assert_int_equal(bl, 32);
        assert_memory_equal(b, ids, 32);
        assert_false(coord_snapshot_get(f->c, sn1)->collected);
        assert_int_equal(wk_result_ok(f, i, fx_str(d, "job")), CAIRN_OK);
        cairn_msg_destroy(&d);
    }
    assert_true(coord_snapshot_get(f->c, sn1)->collected);
    assert_false(coord_refs_exist(f->c, sn1));
    assert_true(coord_refs_exist(f->c, sn2));
    assert_false(coord_snapshot_get(f->c, sn2)->collected);
    free(sn2);
    free(sb2);
    free(sn1);
    free(sb1);
    free(image);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_placement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_dead_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_and_inheritance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ls_show_rm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refs_and_collection, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
