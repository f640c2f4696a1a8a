/*
 * test_coord_jobs.c: the coordinator in-process (struct coord, real RocksDB,
 * real CURVE sockets on 127.0.0.1), driven step by step by the test, which
 * plays the client and the workers.
 *
 * - Job state machine: queued -> running -> succeeded / failed; results are
 *   idempotent; a worker's EBUSY requeues; long polls answer on finish or at
 *   their deadline; queue timeout.
 * - Idempotency per app + req_id (also across a restart).
 * - Placement: least loaded with ties by id; pinning, unknown and dead pins.
 * - Membership: registration binds id to key; heartbeats; death after the
 *   timeout fails running jobs naming the worker and broadcasts membership;
 *   a dead worker is told to re-register; lost jobs are reconciled.
 * - Authentication per route (app token, admin token, unknown apps), jobs of
 *   other apps, unsupported and misrouted messages, undecodable frames.
 * - Restart: apps, workers, jobs, idempotency index and clock offset survive
 *   coord_destroy + coord_new on the same data dir.
 */
#include "test_coord_fixture.h"

#include <time.h>

static struct fx *fx_new(const char *tag, int nworkers)
{
    struct fx *f = calloc(1, sizeof(*f));
    fx_files(f, tag, nworkers);
    return f;
}

static int setup(void **state)
{
    cairn_log_set_level(CAIRN_LOG_WARN);
    struct fx *f = fx_new("coord_jobs", 3);
    fx_coord_start(f);
    fx_create_app(f, "app1", f->app_token, &f->app_token_len);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    fx_teardown(f);
    free(f);
    return 0;
}

/* Pump for ms, with worker `keep` (or -1) heartbeating every 100 ms listing `jobs`. */
static void pump_for(struct fx *f, int ms, int keep, const char *const *jobs)
{
    uint64_t end = cairn_now_mono_ns() + (uint64_t)ms * 1000000ull, next_beat = 0;
    while (cairn_now_mono_ns() < end) {
        if (keep >= 0 && cairn_now_mono_ns() >= next_beat) {
            struct cairn_msg *r = fx_heartbeat(f, keep, jobs);
            cairn_msg_destroy(&r);
            next_beat = cairn_now_mono_ns() + 100000000ull;
        }
        fx_pump(f, 10);
    }
}

static char *job_id(const struct cairn_msg *r)
{
    return strdup(fx_str(r, "job"));
}

static void expect_state(struct fx *f, const char *id, const char *state)
{
    struct cairn_msg *r = fx_job_get(f, id, 0);
    if (cairn_msg_code(r) != CAIRN_OK || strcmp(fx_str(r, "state"), state) != 0)
        fail_msg("job %s: expected %s, got %s (%s %s)", id, state, fx_str(r, "state"),
                 cairn_err_name(cairn_msg_code(r)), fx_str(r, "err_msg"));
    cairn_msg_destroy(&r);
}

static void test_lifecycle_and_idempotency(void **state)
{
    struct fx *f = *state;
    /* no worker yet: queued */
    struct cairn_msg *r = fx_submit(f, "noop", "r1", NULL, 0);
    assert_string_equal(fx_str(r, "state"), "queued");
    assert_string_equal(fx_str(r, "kind"), "noop");
    char *id = job_id(r);
    assert_int_equal(strlen(id), 19);
    assert_memory_equal(id, "jb-", 3);
    cairn_msg_destroy(&r);

    /* a worker registers: the queued job is dispatched to it, persisted running first */
    fx_worker_register(f, 0);
    struct cairn_msg *d = fx_next_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), id);
    assert_string_equal(fx_str(d, "kind"), "noop");
    assert_string_equal(fx_str(d, "app"), "app1");
    assert_string_equal(cairn_msg_app(d), "app1"); /* the envelope carries it too */
    const struct cairn_mval *p;
    size_t np;
    assert_int_equal(cairn_msg_get_map(d, "params", &p, &np), CAIRN_OK);
    uint64_t n = 0;
    assert_int_equal(cairn_mval_u64(cairn_mval_get(p, "n"), &n), CAIRN_OK);
    assert_int_equal(n, 7);
    struct coord_job_rec rec;
    assert_int_equal(coord_meta_get_job(f->c->kv, id, &rec), CAIRN_OK);
    assert_int_equal(rec.state, COORD_JOB_RUNNING);
    assert_string_equal(rec.worker, "w1");
    coord_job_rec_release(&rec);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);

    r = fx_job_get(f, id, 0);
    assert_string_equal(fx_str(r, "state"), "running");
    assert_string_equal(fx_str(r, "worker"), "w1");
    cairn_msg_destroy(&r);

    /* progress shows in job.get */
    struct cairn_msg *pg = fx_worker_req(f, 0, CAIRN_MSG_JOB_PROGRESS);
    cairn_msg_set_str(pg, "job", id);
    cairn_msg_set_u64(pg, "done", 5);
    cairn_msg_set_u64(pg, "total", 10);
    assert_int_equal(cairn_sock_send(f->w[0].s, pg), CAIRN_OK);
    cairn_msg_destroy(&pg);
    for (int i = 0; i < 50; i++) {
        r = fx_job_get(f, id, 0);
        uint64_t done = fx_u64(r, "done");
        cairn_msg_destroy(&r);
        if (done == 5)
            break;
        assert_true(i < 49);
    }

    assert_int_equal(fx_result(f, 0, id, 0, NULL), CAIRN_OK);
    r = fx_job_get(f, id, 0);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    const struct cairn_mval *res;
    size_t nres;
    assert_int_equal(cairn_msg_get_map(r, "result", &res, &nres), CAIRN_OK);
    const char *wk;
    size_t wkl;
    assert_int_equal(cairn_mval_str(cairn_mval_get(res, "worker"), &wk, &wkl), CAIRN_OK);
    assert_int_equal(wkl, 2);
    cairn_msg_destroy(&r);

    /* a duplicate result is acknowledged and changes nothing, even a failing one */
    assert_int_equal(fx_result(f, 0, id, CAIRN_EIO, "late"), CAIRN_OK);
    expect_state(f, id, "succeeded");

    /* the same req_id returns the same job; another kind is EEXIST */
    r = fx_submit(f, "noop", "r1", NULL, 0);
    assert_string_equal(fx_str(r, "job"), id);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_JOB_SUBMIT);
    cairn_msg_set_str(m, "kind", "ingest");
    cairn_msg_set_str(m, "req_id", "r1");
    cairn_msg_set_map(m, "params");
    r = fx_expect(f, &m, CAIRN_EEXIST);
    cairn_msg_destroy(&r);

    /* a failing job */
    r = fx_submit(f, "noop", "r2", NULL, 0);
    char *id2 = job_id(r);
    cairn_msg_destroy(&r);
    d = fx_next_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), id2);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    assert_int_equal(fx_result(f, 0, id2, CAIRN_EKEY, "wrong encryption key"), CAIRN_OK);
    r = fx_job_get(f, id2, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EKEY);
    assert_string_equal(fx_str(r, "err_msg"), "wrong encryption key");
    assert_null(cairn_msg_get(r, "result"));
    cairn_msg_destroy(&r);

    /* the invalid kinds and ids */
    m = fx_app_req(f, CAIRN_MSG_JOB_SUBMIT);
    cairn_msg_set_str(m, "kind", "No Spaces");
    cairn_msg_set_str(m, "req_id", "r3");
    cairn_msg_set_map(m, "params");
    r = fx_expect(f, &m, CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    r = fx_job_get(f, "jb-0000000000000000", 0);
    assert_int_equal(cairn_msg_code(r), CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    r = fx_job_get(f, "../../etc", 0);
    assert_int_equal(cairn_msg_code(r), CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    assert_int_equal(f->c->stats.jobs_succeeded, 1);
    assert_int_equal(f->c->stats.jobs_failed, 1);
    free(id);
    free(id2);
}

static void test_long_poll(void **state)
{
    struct fx *f = *state;
    fx_worker_register(f, 0);
    /* job.submit with wait_ms is answered when the job finishes */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_JOB_SUBMIT);
    uint64_t rid = cairn_msg_rid(m);
    cairn_msg_set_str(m, "kind", "noop");
    cairn_msg_set_str(m, "req_id", "lp1");
    cairn_msg_set_map(m, "params");
    cairn_msg_set_u64(m, "wait_ms", 5000);
    assert_int_equal(cairn_sock_send(f->client, m), CAIRN_OK);
    cairn_msg_destroy(&m);
    struct cairn_msg *d = fx_next_dispatch(f, 0, 3000);
    assert_non_null(d);
    char *id = strdup(fx_str(d, "job"));
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    struct cairn_msg *early = NULL;
    assert_int_equal(cairn_sock_recv(f->client, 50, &early), CAIRN_ETIMEDOUT); /* parked */
    assert_int_equal(f->c->nwaiters, 1);
    assert_int_equal(fx_result(f, 0, id, 0, NULL), CAIRN_OK);
    struct cairn_msg *r = fx_recv(f, f->client, 3000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_rid(r), rid);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    assert_non_null(cairn_msg_get(r, "result"));
    cairn_msg_destroy(&r);
    assert_int_equal(f->c->nwaiters, 0);

    /* job.get with wait_ms on a running job, answered at the deadline with the current state */
    r = fx_submit(f, "noop", "lp2", NULL, 0);
    char *id2 = job_id(r);
    cairn_msg_destroy(&r);
    d = fx_next_dispatch(f, 0, 3000);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    uint64_t t0 = cairn_now_mono_ns();
    r = fx_job_get(f, id2, 300);
    uint64_t ms = (cairn_now_mono_ns() - t0) / 1000000ull;
    assert_string_equal(fx_str(r, "state"), "running");
    assert_true(ms >= 250);
    cairn_msg_destroy(&r);
    /* two parked requests on one job are both answered by its result */
    for (int k = 0; k < 2; k++) {
        m = fx_app_req(f, CAIRN_MSG_JOB_GET);
        cairn_msg_set_str(m, "job", id2);
        cairn_msg_set_u64(m, "wait_ms", 10000);
        assert_int_equal(cairn_sock_send(f->client, m), CAIRN_OK);
        cairn_msg_destroy(&m);
    }
    pump_for(f, 50, -1, NULL);
    assert_int_equal(f->c->nwaiters, 2);
    assert_int_equal(fx_result(f, 0, id2, CAIRN_EIO, "disk on fire"), CAIRN_OK);
    for (int k = 0; k < 2; k++) {
        r = fx_recv(f, f->client, 3000);
        assert_non_null(r);
        assert_string_equal(fx_str(r, "state"), "failed");
        assert_int_equal(fx_u64(r, "err_code"), CAIRN_EIO);
        cairn_msg_destroy(&r);
    }
    /* a finished job answers at once */
    t0 = cairn_now_mono_ns();
    r = fx_job_get(f, id2, 5000);
    assert_true((cairn_now_mono_ns() - t0) / 1000000ull < 1000);
    assert_string_equal(fx_str(r, "state"), "failed");
    cairn_msg_destroy(&r);
    free(id);
    free(id2);
}

static void test_placement(void **state)
{
    struct fx *f = *state;
    fx_worker_register(f, 1); /* w2 first: ties still go to the lowest id */
    fx_worker_register(f, 0);
    char *ids[4];
    int on[2] = {0, 0};
    for (int k = 0; k < 4; k++) {
        struct cairn_msg *r = fx_submit(f, "noop", tu_path("pl%d", k), NULL, 0);
        ids[k] = job_id(r);
        assert_string_equal(fx_str(r, "state"), "running");
        if (k == 0)
            assert_string_equal(fx_str(r, "worker"), "w1");
        on[strcmp(fx_str(r, "worker"), "w1") == 0 ? 0 : 1]++;
        cairn_msg_destroy(&r);
    }
    assert_int_equal(on[0], 2);
    assert_int_equal(on[1], 2);

    /* pinned to w2 even though w1 has fewer jobs after a finish */
    struct cairn_msg *ds[2];
    for (int k = 0; k < 2; k++) {
        ds[k] = fx_next_dispatch(f, 0, 2000); /* both first: a worker call drops what it does not wait for */
        assert_non_null(ds[k]);
    }
    for (int k = 0; k < 2; k++) {
        fx_ack(f, 0, ds[k], CAIRN_OK);
        assert_int_equal(fx_result(f, 0, fx_str(ds[k], "job"), 0, NULL), CAIRN_OK);
        cairn_msg_destroy(&ds[k]);
    }
    struct cairn_msg *r = fx_submit(f, "noop", "pin1", "w2", 0);
    assert_string_equal(fx_str(r, "state"), "running");
    assert_string_equal(fx_str(r, "worker"), "w2");
    cairn_msg_destroy(&r);
    /* and unpinned now goes to w1 (0 running vs 3) */
    r = fx_submit(f, "noop", "pl-next", NULL, 0);
    assert_string_equal(fx_str(r, "worker"), "w1");
    cairn_msg_destroy(&r);

    /* unknown pin: ENOTFOUND in the job; the req_id is spent */
    r = fx_submit(f, "noop", "pin2", "nope", 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_ENOTFOUND);
    assert_string_equal(fx_str(r, "err_msg"), "unknown worker 'nope'");
    cairn_msg_destroy(&r);
    r = fx_submit(f, "noop", "pin2", "w1", 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    cairn_msg_destroy(&r);

    /* a pin that is not a string */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_JOB_SUBMIT);
    cairn_msg_set_str(m, "kind", "noop");
    cairn_msg_set_str(m, "req_id", "pin3");
    struct cairn_mval *p = cairn_msg_set_map(m, "params");
    cairn_mval_put_u64(m, p, "worker", 3);
    r = fx_expect(f, &m, CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    for (int k = 0; k < 4; k++)
        free(ids[k]);
}

static void test_busy_requeue(void **state)
{
    struct fx *f = *state;
    fx_worker_register(f, 0);
    struct cairn_msg *r = fx_submit(f, "noop", "b1", NULL, 0);
    char *id = job_id(r);
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_next_dispatch(f, 0, 2000);
    assert_non_null(d);
    uint64_t seq0 = ((struct coord_job *)coord_map_sget(&f->c->jobs, id))->rec.seq;
    fx_ack(f, 0, d, CAIRN_EBUSY);
    cairn_msg_destroy(&d);
    /* back to queued at the tail, then dispatched again after the backoff */
    d = fx_next_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), id);
    struct coord_job *j = coord_map_sget(&f->c->jobs, id);
    assert_non_null(j);
    assert_true(j->rec.seq > seq0);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    assert_int_equal(fx_result(f, 0, id, 0, NULL), CAIRN_OK);
    expect_state(f, id, "succeeded");
    /* the old queue entry is gone, and so is the new one */
    struct cairn_kv_iter *it = NULL;
    assert_int_equal(cairn_kv_iter_new(f->c->kv, "q/", 2, &it), CAIRN_OK);
    const uint8_t *k, *v;
    size_t kl, vl;
    bool done = false;
    assert_int_equal(cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done), CAIRN_OK);
    assert_true(done);
    cairn_kv_iter_destroy(&it);

    /* a refusal other than EBUSY fails the job with the worker's reason */
    r = fx_submit(f, "bogus-kind", "b2", NULL, 0);
    char *id2 = job_id(r);
    cairn_msg_destroy(&r);
    d = fx_next_dispatch(f, 0, 2000);
    struct cairn_msg *no = cairn_msg_reply(d, CAIRN_EUNSUPPORTED, "unknown job kind 'bogus-kind'");
    assert_int_equal(cairn_sock_send(f->w[0].s, no), CAIRN_OK);
    cairn_msg_destroy(&no);
    cairn_msg_destroy(&d);
    for (int i = 0;; i++) {
        r = fx_job_get(f, id2, 0);
        bool failed = !strcmp(fx_str(r, "state"), "failed");
        if (failed) {
            assert_int_equal(fx_u64(r, "err_code"), CAIRN_EUNSUPPORTED);
            assert_non_null(strstr(fx_str(r, "err_msg"), "unknown job kind"));
        }
        cairn_msg_destroy(&r);
        if (failed)
            break;
        assert_true(i < 100);
    }
    /* a worker shutting down (EUNAVAILABLE) gets the job back into the queue, and no job for a while */
    r = fx_submit(f, "noop", "b3", NULL, 0);
    char *id3 = job_id(r);
    cairn_msg_destroy(&r);
    d = fx_next_dispatch(f, 0, 2000);
    assert_non_null(d);
    no = cairn_msg_reply(d, CAIRN_EUNAVAILABLE, "worker 'w1' is shutting down");
    assert_int_equal(cairn_sock_send(f->w[0].s, no), CAIRN_OK);
    cairn_msg_destroy(&no);
    cairn_msg_destroy(&d);
    for (int i = 0;; i++) {
        r = fx_job_get(f, id3, 0);
        bool queued = !strcmp(fx_str(r, "state"), "queued");
        cairn_msg_destroy(&r);
        if (queued)
            break;
        assert_true(i < 100);
    }
    pump_for(f, 300, -1, NULL);
    expect_state(f, id3, "queued");
    free(id);
    free(id2);
    free(id3);
}

/* Restart the in-process coordinator with a short heartbeat timeout (the app survives). */
static void short_timeout(struct fx *f)
{
    fx_coord_stop(f);
    fx_set(f, "heartbeat_timeout", "600ms");
    fx_coord_start(f);
}

static void test_worker_death(void **state)
{
    struct fx *f = *state;
    short_timeout(f);
    fx_worker_register(f, 0);
    fx_worker_register(f, 1);
    uint64_t epoch0 = f->c->epoch;
    struct cairn_msg *r = fx_submit(f, "noop", "d1", "w1", 0);
    char *id = job_id(r);
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_next_dispatch(f, 0, 2000);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    /* a long poll parked on the job is answered by the death */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_JOB_GET);
    cairn_msg_set_str(m, "job", id);
    cairn_msg_set_u64(m, "wait_ms", 10000);
    assert_int_equal(cairn_sock_send(f->client, m), CAIRN_OK);
    cairn_msg_destroy(&m);

    /* w1 goes silent; w2 keeps beating */
    pump_for(f, 1000, 1, NULL);
    assert_true(f->c->epoch > epoch0);
    r = fx_recv(f, f->client, 2000);
    assert_non_null(r);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EUNAVAILABLE);
    assert_string_equal(fx_str(r, "err_msg"), "worker 'w1' died (no heartbeat for 0.6 s)");
    cairn_msg_destroy(&r);

    /* w2 got a membership with w1 dead (it was acknowledged while beating); check the status */
    assert_int_equal(f->w[1].epoch, f->c->epoch);
    m = fx_app_req(f, CAIRN_MSG_CLUSTER_STATUS);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *ws;
    size_t nw;
    assert_int_equal(cairn_msg_get_array(r, "workers", &ws, &nw), CAIRN_OK);
    assert_int_equal(nw, 2);
    bool alive = true;
    assert_int_equal(cairn_mval_bool(cairn_mval_get(cairn_mval_at(ws, 0), "alive"), &alive), CAIRN_OK);
    assert_false(alive);
    assert_int_equal(cairn_mval_bool(cairn_mval_get(cairn_mval_at(ws, 1), "alive"), &alive), CAIRN_OK);
    assert_true(alive);
    assert_int_equal(fx_u64(r, "replicas"), 2);
    cairn_msg_destroy(&r);

    /* pinned to the dead worker: EUNAVAILABLE */
    r = fx_submit(f, "noop", "d2", "w1", 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EUNAVAILABLE);
    cairn_msg_destroy(&r);

    /* the dead worker's heartbeat shows a newer epoch: it registers again and is alive */
    uint64_t known = f->w[0].epoch;
    r = fx_heartbeat(f, 0, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_true(fx_u64(r, "epoch") > known);
    cairn_msg_destroy(&r);
    assert_false(coord_worker_find(f->c, "w1")->rec.alive);
    fx_worker_register(f, 0);
    assert_true(coord_worker_find(f->c, "w1")->rec.alive);
    /* a late result for the failed job is acknowledged and ignored */
    assert_int_equal(fx_result(f, 0, id, 0, NULL), CAIRN_OK);
    expect_state(f, id, "failed");
    free(id);
}

static void test_lost_job_reconciled(void **state)
{
    struct fx *f = *state;
    fx_worker_register(f, 0);
    struct cairn_msg *r = fx_submit(f, "noop", "lost1", NULL, 0);
    char *id = job_id(r);
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_next_dispatch(f, 0, 2000);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    /* listed in heartbeats: stays running */
    const char *listed[] = {id, NULL};
    pump_for(f, 500, 0, listed);
    expect_state(f, id, "running");
    /* not listed any more (the worker restarted): failed after a few beats */
    pump_for(f, 600, 0, NULL);
    r = fx_job_get(f, id, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EUNAVAILABLE);
    assert_non_null(strstr(fx_str(r, "err_msg"), "no longer runs the job"));
    cairn_msg_destroy(&r);
    free(id);
}

static void test_queue_timeout(void **state)
{
    struct fx *f = *state;
    fx_coord_stop(f);
    fx_set(f, "queue_timeout", "300ms");
    fx_coord_start(f);
    struct cairn_msg *r = fx_submit(f, "noop", "qt1", NULL, 0);
    char *id = job_id(r);
    cairn_msg_destroy(&r);
    pump_for(f, 500, -1, NULL);
    r = fx_job_get(f, id, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EUNAVAILABLE);
    assert_string_equal(fx_str(r, "err_msg"), "no live worker took the job within 0.3 s");
    cairn_msg_destroy(&r);
    free(id);
}

static void test_client_auth(void **state)
{
    struct fx *f = *state;
    /* ping needs nothing */
    struct cairn_msg *m = fx_req(f, CAIRN_MSG_PING, NULL, NULL, 0);
    cairn_msg_set_bin(m, "echo", "abc", 3);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "version"), CAIRN_VERSION);
    assert_int_equal(fx_u64(r, "proto"), CAIRN_PROTO_VERSION);
    cairn_msg_destroy(&r);

    /* wrong token / unknown app: the same EAUTH */
    uint8_t bad[32] = {1};
    m = fx_req(f, CAIRN_MSG_CLUSTER_STATUS, "app1", bad, sizeof(bad));
    r = fx_expect(f, &m, CAIRN_EAUTH);
    assert_string_equal(cairn_msg_text(r), "invalid app token for app 'app1'");
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_CLUSTER_STATUS, "ghost", f->app_token, f->app_token_len);
    r = fx_expect(f, &m, CAIRN_EAUTH);
    assert_string_equal(cairn_msg_text(r), "invalid app token for app 'ghost'");
    cairn_msg_destroy(&r);
    /* the token as hex works too (token files store hex) */
    char hex[129];
    cairn_hex_encode(hex, f->app_token, f->app_token_len);
    m = fx_req(f, CAIRN_MSG_CLUSTER_STATUS, "app1", hex, strlen(hex));
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    /* the admin token is not an app token, and an app token is not the admin token */
    m = fx_req(f, CAIRN_MSG_CLUSTER_STATUS, COORD_ADMIN_APP, f->admin_raw, 32);
    r = fx_expect(f, &m, CAIRN_EAUTH);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_APP_CREATE, "app1", f->app_token, f->app_token_len);
    cairn_msg_set_str(m, "name", "sneaky");
    r = fx_expect(f, &m, CAIRN_EAUTH);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_APP_CREATE, "app1", f->admin_raw, 32); /* right token, wrong app */
    cairn_msg_set_str(m, "name", "sneaky");
    r = fx_expect(f, &m, CAIRN_EAUTH);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_APP_CREATE, COORD_ADMIN_APP, f->admin_hex, 64); /* hex admin token */
    cairn_msg_set_str(m, "name", "app2");
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    assert_null(coord_map_sget(&f->c->apps, "sneaky"));

    /* app names: taken, invalid, reserved */
    const char *names[] = {"app1", "UPPER", "_admin", ".hidden", "a/b", "", NULL};
    int codes[] = {CAIRN_EEXIST, CAIRN_EINVAL, CAIRN_EINVAL, CAIRN_EINVAL, CAIRN_EINVAL, CAIRN_EPROTO};
    for (int i = 0; names[i]; i++) {
        m = fx_admin_req(f, CAIRN_MSG_APP_CREATE);
        cairn_msg_set_str(m, "name", names[i]);
        if (!names[i][0]) {
            /* the model refuses an empty name before it is sent: send it unchecked */
            uint8_t *env;
            size_t len;
            assert_int_equal(cairn__msg_encode_unchecked(m, &env, &len), CAIRN_OK);
            const uint8_t *fr[1] = {env};
            assert_int_equal(cairn_sock_send_raw(f->client, NULL, fr, &len, 1), CAIRN_OK);
            cairn_free(env);
            r = fx_recv(f, f->client, 3000);
            cairn_msg_destroy(&m);
        } else {
            r = fx_call(f, &m);
        }
        assert_non_null(r);
        if (cairn_msg_code(r) != codes[i])
            fail_msg("app name '%s': %s", names[i], cairn_err_name(cairn_msg_code(r)));
        cairn_msg_destroy(&r);
    }

    /* jobs of another app are not found */
    r = fx_submit(f, "noop", "mine", NULL, 0);
    char *id = job_id(r);
    cairn_msg_destroy(&r);
    uint8_t tok2[64];
    size_t tok2len;
    fx_create_app(f, "app3", tok2, &tok2len);
    m = fx_req(f, CAIRN_MSG_JOB_GET, "app3", tok2, tok2len);
    cairn_msg_set_str(m, "job", id);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    /* the same req_id in another app is another job */
    m = fx_req(f, CAIRN_MSG_JOB_SUBMIT, "app3", tok2, tok2len);
    cairn_msg_set_str(m, "kind", "noop");
    cairn_msg_set_str(m, "req_id", "mine");
    cairn_msg_set_map(m, "params");
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_not_equal(fx_str(r, "job"), id);
    cairn_msg_destroy(&r);
    free(id);

    /* app messages answer only after authentication: a good token lists, a bad one is EAUTH */
    m = fx_app_req(f, CAIRN_MSG_SNAPSHOT_LS);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_IMAGE_LS, "app1", bad, sizeof(bad));
    r = fx_expect(f, &m, CAIRN_EAUTH);
    cairn_msg_destroy(&r);
    /* a worker message on the client endpoint */
    m = fx_req(f, CAIRN_MSG_WORKER_HEARTBEAT, NULL, NULL, 0);
    cairn_msg_set_str(m, "id", "w1");
    cairn_msg_set_u64(m, "chunks", 0);
    cairn_msg_set_u64(m, "bytes", 0);
    cairn_msg_set_u64(m, "sandboxes", 0);
    cairn_msg_set_array(m, "jobs");
    r = fx_expect(f, &m, CAIRN_EPROTO);
    cairn_msg_destroy(&r);

    /* the clock cannot be advanced without --test-clock */
    m = fx_admin_req(f, CAIRN_MSG_ADMIN_CLOCK_ADVANCE);
    cairn_msg_set_u64(m, "seconds", 10);
    r = fx_expect(f, &m, CAIRN_EPERM);
    cairn_msg_destroy(&r);

    /* a client whose key is not on the allow-list gets nothing at all */
    struct cairn_sock *s = NULL;
    assert_int_equal(cairn_sock_client(f->net, f->client_ep, &f->stranger_keys, f->coord_keys.public_z85, NULL, &s),
                     CAIRN_OK);
    m = fx_req(f, CAIRN_MSG_PING, NULL, NULL, 0);
    r = fx_call_on(f, s, &m, 700);
    assert_null(r);
    cairn_sock_destroy(&s);
}

static void test_worker_auth(void **state)
{
    struct fx *f = *state;
    fx_worker_connect(f, 0);
    fx_worker_connect(f, 1);
    /* public_key must be the key of the connection */
    struct cairn_msg *m = fx_register_msg(f, 0, "w1", f->w[1].keys.public_z85);
    struct cairn_msg *r = fx_wcall(f, 0, &m, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EAUTH);
    cairn_msg_destroy(&r);
    assert_null(coord_worker_find(f->c, "w1"));
    /* invalid id */
    m = fx_register_msg(f, 0, "bad id", f->w[0].keys.public_z85);
    r = fx_wcall(f, 0, &m, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    fx_worker_register(f, 0);
    /* the id is bound to w1's key: w2's key cannot take it */
    m = fx_register_msg(f, 1, "w1", f->w[1].keys.public_z85);
    r = fx_wcall(f, 1, &m, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EAUTH);
    cairn_msg_destroy(&r);
    /* heartbeats: unknown id, and someone else's id */
    struct cairn_msg *hb = fx_worker_req(f, 1, CAIRN_MSG_WORKER_HEARTBEAT);
    cairn_msg_set_str(hb, "id", "w2");
    cairn_msg_set_u64(hb, "chunks", 0);
    cairn_msg_set_u64(hb, "bytes", 0);
    cairn_msg_set_u64(hb, "sandboxes", 0);
    cairn_msg_set_array(hb, "jobs");
    r = fx_wcall(f, 1, &hb, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    hb = fx_worker_req(f, 1, CAIRN_MSG_WORKER_HEARTBEAT);
    cairn_msg_set_str(hb, "id", "w1");
    cairn_msg_set_u64(hb, "chunks", 0);
    cairn_msg_set_u64(hb, "bytes", 0);
    cairn_msg_set_u64(hb, "sandboxes", 0);
    cairn_msg_set_array(hb, "jobs");
    r = fx_wcall(f, 1, &hb, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EAUTH);
    cairn_msg_destroy(&r);
    /* a result for w1's job sent by w2 is acknowledged but changes nothing */
    fx_worker_register(f, 1);
    r = fx_submit(f, "noop", "wa1", "w1", 0);
    char *id = job_id(r);
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_next_dispatch(f, 0, 2000);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    assert_int_equal(fx_result(f, 1, id, 0, NULL), CAIRN_OK);
    expect_state(f, id, "running");
    assert_int_equal(fx_result(f, 0, id, 0, NULL), CAIRN_OK);
    expect_state(f, id, "succeeded");
    /* a client message on the worker endpoint */
    m = fx_worker_req(f, 0, CAIRN_MSG_PING);
    r = fx_wcall(f, 0, &m, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EPROTO);
    cairn_msg_destroy(&r);
    free(id);
}

static void test_undecodable_frames(void **state)
{
    struct fx *f = *state;
    /* random bytes: dropped */
    uint64_t seed = 99;
    for (int i = 0; i < 50; i++) {
        uint8_t junk[64];
        tu_fill_random(&seed, junk, sizeof(junk));
        const uint8_t *fr[2] = {junk, junk};
        size_t lens[2] = {(size_t)(i % 64) + 1, 3};
        assert_int_equal(cairn_sock_send_raw(f->client, NULL, fr, lens, 1 + (size_t)(i % 2)), CAIRN_OK);
    }
    /* a readable envelope of protocol version 2: answered EVERSION */
    static const uint8_t v2[] = {0x84, 0xa1, 'v', 0x02, 0xa1, 't', 0x01, 0xa3, 'r', 'i', 'd', 0x09, 0xa1, 'f', 0x80};
    const uint8_t *fr[1] = {v2};
    size_t len = sizeof(v2);
    assert_int_equal(cairn_sock_send_raw(f->client, NULL, fr, &len, 1), CAIRN_OK);
    struct cairn_msg *r = NULL;
    for (int i = 0; i < 100 && !r; i++)
        r = fx_recv(f, f->client, 50);
    assert_non_null(r);
    assert_int_equal(cairn_msg_rid(r), 9);
    assert_int_equal(cairn_msg_code(r), CAIRN_EVERSION);
    cairn_msg_destroy(&r);
    /* a job.submit missing its params: answered EPROTO naming the field */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_JOB_SUBMIT);
    cairn_msg_set_str(m, "kind", "noop");
    uint8_t *env;
    assert_int_equal(cairn__msg_encode_unchecked(m, &env, &len), CAIRN_OK);
    uint64_t rid = cairn_msg_rid(m);
    cairn_msg_destroy(&m);
    fr[0] = env;
    assert_int_equal(cairn_sock_send_raw(f->client, NULL, fr, &len, 1), CAIRN_OK);
    cairn_free(env);
    r = fx_recv(f, f->client, 3000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_rid(r), rid);
    assert_int_equal(cairn_msg_code(r), CAIRN_EPROTO);
    cairn_msg_destroy(&r);
    /* the same garbage on the worker endpoint */
    fx_worker_connect(f, 0);
    for (int i = 0; i < 20; i++) {
        uint8_t junk[32];
        tu_fill_random(&seed, junk, sizeof(junk));
        const uint8_t *wf[1] = {junk};
        size_t wl = sizeof(junk);
        assert_int_equal(cairn_sock_send_raw(f->w[0].s, NULL, wf, &wl, 1), CAIRN_OK);
    }
    /* still serving both sides */
    m = fx_req(f, CAIRN_MSG_PING, NULL, NULL, 0);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    fx_worker_register(f, 0);
    assert_true(f->c->stats.bad_messages >= 70);
}

static void test_restart(void **state)
{
    struct fx *f = *state;
    fx_set(f, "test_clock", "true");
    short_timeout(f);
    /* the app made in setup survives the first restart already */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_CLUSTER_STATUS);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    uint64_t epoch1 = fx_u64(r, "epoch");
    cairn_msg_destroy(&r);

    m = fx_admin_req(f, CAIRN_MSG_ADMIN_CLOCK_ADVANCE);
    cairn_msg_set_u64(m, "seconds", 86400 * 3);
    r = fx_expect(f, &m, CAIRN_OK);
    uint64_t advanced = fx_u64(r, "now");
    assert_true(advanced > (uint64_t)cairn_now_real_ns() + 86400ull * 2 * 1000000000ull);
    cairn_msg_destroy(&r);

    /* Q: queued (no workers); F: failed at once */
    r = fx_submit(f, "noop", "rq", NULL, 0);
    char *q = job_id(r);
    cairn_msg_destroy(&r);
    r = fx_submit(f, "noop", "rf", "w9", 0);
    char *fj = job_id(r);
    cairn_msg_destroy(&r);

    fx_coord_stop(f);
    fx_coord_start(f);
    m = fx_app_req(f, CAIRN_MSG_CLUSTER_STATUS);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_true(fx_u64(r, "epoch") > epoch1);
    assert_true(fx_u64(r, "now") >= advanced); /* the clock offset was kept */
    cairn_msg_destroy(&r);
    expect_state(f, q, "queued");
    expect_state(f, fj, "failed");
    r = fx_submit(f, "noop", "rq", NULL, 0); /* idempotency index survived */
    assert_string_equal(fx_str(r, "job"), q);
    cairn_msg_destroy(&r);

    /* w1 registers: Q runs; R runs on w1, S on w2 */
    fx_worker_register(f, 0);
    struct cairn_msg *d = fx_next_dispatch(f, 0, 2000);
    assert_string_equal(fx_str(d, "job"), q);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    assert_int_equal(fx_result(f, 0, q, 0, NULL), CAIRN_OK);
    fx_worker_register(f, 1);
    r = fx_submit(f, "noop", "rr", "w1", 0);
    char *rj = job_id(r);
    cairn_msg_destroy(&r);
    r = fx_submit(f, "noop", "rs", "w2", 0);
    char *sj = job_id(r);
    cairn_msg_destroy(&r);
    d = fx_next_dispatch(f, 0, 2000);
    fx_ack(f, 0, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    d = fx_next_dispatch(f, 1, 2000);
    fx_ack(f, 1, d, CAIRN_OK);
    cairn_msg_destroy(&d);
    pump_for(f, 50, -1, NULL);

    /* restart with both running; the workers' connections see a new coordinator */
    fx_coord_stop(f);
    fx_coord_start(f);
    expect_state(f, q, "succeeded");
    expect_state(f, rj, "running");
    expect_state(f, sj, "running");
    assert_true(coord_worker_find(f->c, "w1")->rec.alive);
    assert_false(coord_worker_find(f->c, "w1")->routable);
    /* w1 comes back: its heartbeat shows a new epoch, it re-registers and reports R */
    fx_worker_connect(f, 0);
    uint64_t known = f->w[0].epoch;
    const char *listed[] = {rj, NULL};
    r = fx_heartbeat(f, 0, listed);
    assert_true(fx_u64(r, "epoch") > known);
    cairn_msg_destroy(&r);
    fx_worker_register(f, 0);
    assert_int_equal(fx_result(f, 0, rj, 0, NULL), CAIRN_OK);
    expect_state(f, rj, "succeeded");
    /* w2 never comes back: S fails at its heartbeat deadline, counted from the restart */
    pump_for(f, 900, 0, NULL);
    r = fx_job_get(f, sj, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_string_equal(fx_str(r, "err_msg"), "worker 'w2' died (no heartbeat for 0.6 s)");
    cairn_msg_destroy(&r);
    free(q);
    free(fj);
    free(rj);
    free(sj);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lifecycle_and_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_poll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_placement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_requeue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_death, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_job_reconciled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
