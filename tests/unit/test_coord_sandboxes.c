/*
 * test_coord_sandboxes.c: the coordinator's side of images, sandboxes and
 * filesystem snapshots (docs/internals/sandboxes.md), in-process (struct
 * coord, real RocksDB, real CURVE sockets on 127.0.0.1) with the test playing
 * the client and scripted fake workers.
 *
 * - image.import: pieces, the offset rule, retries, the announced size; the
 *   pending image is invisible; the import job's dispatch; upload.read only
 *   for the worker running the job; success makes the image ready (and the
 *   name index), failure or an unusable result deletes it; the upload file is
 *   removed either way. image.ls paging and kind filter, show, rm (EBUSY while
 *   used or a parent), other-app isolation.
 * - sandbox.create: default image by name, ENOTFOUND for other apps and
 *   pending images, GPU refusals, pinning, capacity-aware least-loaded
 *   placement (a create waiting for a slot does not hold up other jobs), the
 *   layer chain, the typed reply with wait_ms; sandbox.ls paging and `all`;
 *   terminate frees the slot.
 * - sandbox.exec: output collected per stream, cut at 4 MiB with `truncated`,
 *   resends ignored, job failures as error replies. sandbox.exec.stream:
 *   replies in order, the last with done and exit_code; flow control (a
 *   client that does not read stalls the worker's acknowledgements, which
 *   resume when it reads); a client that went away ends the job.
 * - sandbox.snapshot-fs: pending image, flatten at depth 15, ttl -> expires_at
 *   and retention, expiry, idempotency, failure.
 * - Worker death fails its sandboxes (EUNAVAILABLE naming the worker);
 *   registration with a `sandboxes` list fails the missing ones and revives
 *   listed ones; restart keeps images, sandboxes, uploads and the name index.
 */
#include "test_coord_fixture.h"

#include <fcntl.h>

static int setup(void **state)
{
    cairn_log_set_level(CAIRN_LOG_WARN);
    struct fx *f = calloc(1, sizeof(*f));
    fx_files(f, "coord_sbx", 3);
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

/* Register worker i with a capacity and (when listed != NULL) the sandboxes it runs. */
static void wk_register(struct fx *f, int i, uint64_t capacity, const char *const *listed)
{
    if (!f->w[i].s)
        fx_worker_connect(f, i);
    struct cairn_msg *m = fx_register_msg(f, i, f->w[i].id, f->w[i].keys.public_z85);
    cairn_msg_set_u64(m, "capacity", capacity);
    if (listed) {
        struct cairn_mval *a = cairn_msg_set_array(m, "sandboxes");
        for (size_t k = 0; listed[k]; k++)
            cairn_mval_push_str(m, a, listed[k]);
    }
    struct cairn_msg *r = fx_wk_call(f, i, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    f->w[i].epoch = fx_u64(r, "epoch");
    cairn_msg_destroy(&r);
}

/* ---- worker results ---------------------------------------------------------------------------- */

enum res_kind { RES_IMPORT, RES_CREATE, RES_SNAPSHOT, RES_EXEC, RES_EMPTY };

/* A successful job.result of the given shape; returns the ack code. */
static int wk_result_ok(struct fx *f, int i, const char *job, enum res_kind k, const char *image, int64_t exit_code)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "err_code", 0);
    struct cairn_mval *res = cairn_msg_set_map(m, "result");
    uint8_t man[72];
    memset(man, 0xab, sizeof(man));
    switch (k) {
    case RES_IMPORT:
    case RES_SNAPSHOT:
        cairn_mval_put_str(m, res, "image", image);
        cairn_mval_put_u64(m, res, "manifest_len", 4000);
        cairn_mval_put_bin(m, res, "manifest", man, k == RES_IMPORT ? 72 : 36);
        cairn_mval_put_u64(m, res, "files", 11);
        cairn_mval_put_u64(m, res, "size", 12345);
        cairn_mval_put_u64(m, res, "stored", 678);
        if (k == RES_SNAPSHOT)
            cairn_mval_put_u64(m, res, "pause_ms", 7);
        break;
    case RES_CREATE:
        cairn_mval_put_u64(m, res, "create_ms", 42);
        cairn_mval_put_u64(m, res, "fetched_chunks", 3);
        cairn_mval_put_u64(m, res, "fetched_bytes", 3000);
        break;
    case RES_EXEC:
        cairn_mval_put_i64(m, res, "exit_code", exit_code);
        cairn_mval_put_u64(m, res, "ms", 5);
        break;
    case RES_EMPTY: break;
    }
    struct cairn_msg *r = fx_wk_call(f, i, &m);
    int rc = cairn_msg_code(r);
    cairn_msg_destroy(&r);
    return rc;
}

static int wk_result_err(struct fx *f, int i, const char *job, uint32_t code, const char *msg)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "err_code", code);
    cairn_msg_set_str(m, "err_msg", msg);
    struct cairn_msg *r = fx_wk_call(f, i, &m);
    int rc = cairn_msg_code(r);
    cairn_msg_destroy(&r);
    return rc;
}

/* job.output from worker i; returns the reply (the acknowledgement). */
static struct cairn_msg *wk_output(struct fx *f, int i, const char *job, uint64_t seq, uint64_t stream,
                                   const void *data, size_t len)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_OUTPUT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "seq", seq);
    cairn_msg_set_u64(m, "stream", stream);
    cairn_msg_add_frame(m, data, len);
    return fx_wk_call(f, i, &m);
}

/* ---- client calls ------------------------------------------------------------------------------ */

static struct cairn_msg *import_piece(struct fx *f, const char *upload, uint64_t offset, const void *data,
                                      size_t len, bool last, int64_t size, const char *name)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_IMAGE_IMPORT);
    cairn_msg_set_str(m, "upload", upload);
    cairn_msg_set_u64(m, "offset", offset);
    cairn_msg_set_bool(m, "last", last);
    if (size >= 0)
        cairn_msg_set_u64(m, "size", (uint64_t)size);
    if (name)
        cairn_msg_set_str(m, "name", name);
    cairn_msg_add_frame(m, data, len);
    return fx_call(f, &m);
}

/* Upload and import a small image (some worker handles the job); returns its id (caller frees). */
static char *import_image(struct fx *f, const char *upload, const char *name)
{
    static const char tar[] = "pretend this is a tarball";
    struct cairn_msg *r = import_piece(f, upload, 0, tar, sizeof(tar), true, sizeof(tar), name);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    int wi = -1;
    struct cairn_msg *d = fx_wk_dispatch_any(f, &wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "image-import");
    assert_string_equal(fx_str(d, "job"), job);
    char *image = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, wi, job, RES_IMPORT, image, 0), CAIRN_OK);
    free(job);
    return image;
}

static struct cairn_msg *create_req(struct fx *f, const char *req_id, const char *image, const char *pin)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_CREATE);
    cairn_msg_set_str(m, "req_id", req_id);
    if (image)
        cairn_msg_set_str(m, "image", image);
    if (pin)
        cairn_msg_set_str(m, "worker", pin);
    return m;
}

/* A running sandbox (some worker, or pin); *wi gets its worker. Caller frees the id. */
static char *make_sandbox(struct fx *f, const char *req_id, const char *image, const char *pin, int *wi)
{
    struct cairn_msg *m = create_req(f, req_id, image, pin);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch_any(f, wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-create");
    char *sb = strdup(fx_pstr(fx_params(d), "sandbox"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, *wi, job, RES_CREATE, NULL, 0), CAIRN_OK);
    free(job);
    return sb;
}

static const char *sandbox_state(struct fx *f, const char *id)
{
    struct coord_sandbox *sb = coord_sandbox_get(f->c, id);
    return sb ? coord_sandbox_state_name(sb->rec.state) : "(none)";
}

static size_t image_count(struct fx *f, const char *kind)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_IMAGE_LS);
    if (kind)
        cairn_msg_set_str(m, "kind", kind);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *arr;
    size_t n = 0;
    assert_int_equal(cairn_msg_get_array(r, "images", &arr, &n), CAIRN_OK);
    cairn_msg_destroy(&r);
    return n;
}

static bool upload_file_exists(struct fx *f, const char *job)
{
    return access(tu_path("%s/data/uploads/%s.tar", f->dir, job), F_OK) == 0;
}

/* ---- tests ------------------------------------------------------------------------------------- */

static void test_import(void **state)
{
    struct fx *f = *state;
    uint8_t data[4000]; /* 3000 announced, the rest for a piece that goes too far */
    uint64_t seed = 7;
    tu_fill_random(&seed, data, sizeof(data));

    /* first piece: announces size and name */
    struct cairn_msg *r = import_piece(f, "up1", 0, data, 1000, false, 3000, "default");
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_int_equal(fx_u64(r, "received"), 1000);
    assert_null(cairn_msg_get(r, "job"));
    cairn_msg_destroy(&r);
    /* a repeated piece is acknowledged (retries are safe); a gap is refused */
    r = import_piece(f, "up1", 0, data, 1000, false, -1, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_int_equal(fx_u64(r, "received"), 1000);
    cairn_msg_destroy(&r);
    r = import_piece(f, "up1", 2000, data + 2000, 1000, true, -1, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_msg_text(r), "offset 2000 but 1000 bytes received"));
    cairn_msg_destroy(&r);
    /* a retry overlapping the end contributes its tail */
    r = import_piece(f, "up1", 500, data + 500, 1000, false, -1, NULL);
    assert_int_equal(fx_u64(r, "received"), 1500);
    cairn_msg_destroy(&r);
    /* unknown upload not at 0 */
    r = import_piece(f, "nope", 10, data, 10, false, -1, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    /* beyond the announced size */
    r = import_piece(f, "up1", 1500, data + 1500, 2000, false, -1, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    /* the last piece makes the pending image and its job (no worker yet: queued) */
    r = import_piece(f, "up1", 1500, data + 1500, 1500, true, -1, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_int_equal(fx_u64(r, "received"), 3000);
    assert_string_equal(fx_str(r, "kind"), "image-import");
    assert_string_equal(fx_str(r, "state"), "queued");
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    assert_true(upload_file_exists(f, job));
    /* a retry of the last piece answers with the same job */
    r = import_piece(f, "up1", 1500, data + 1500, 1500, true, -1, NULL);
    assert_string_equal(fx_str(r, "job"), job);
    assert_int_equal(fx_u64(r, "received"), 3000);
    cairn_msg_destroy(&r);

    /* pending: invisible */
    assert_int_equal(image_count(f, NULL), 0);
    struct cairn_msg *m = create_req(f, "c0", NULL, NULL);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    assert_string_equal(cairn_msg_text(r), "no image named 'default' in app 'app1'; import one with: cairn image "
                                           "import --name default PATH");
    cairn_msg_destroy(&r);

    /* the job goes to the first worker; the upload is readable only by it, only while it runs */
    wk_register(f, 0, 4, NULL);
    wk_register(f, 1, 4, NULL);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "image-import");
    const struct cairn_mval *p = fx_params(d);
    char *image = strdup(fx_pstr(p, "image"));
    assert_memory_equal(image, "im-", 3);
    assert_string_equal(fx_pstr(p, "app"), "app1");
    assert_int_equal(fx_pu64(p, "size"), 3000);
    cairn_msg_destroy(&d);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_SHOW);
    cairn_msg_set_str(m, "image", image);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);

    m = fx_worker_req(f, 0, CAIRN_MSG_UPLOAD_READ);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "offset", 100);
    cairn_msg_set_u64(m, "len", 1 << 20);
    r = fx_wk_call(f, 0, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_int_equal(fx_u64(r, "size"), 3000);
    const uint8_t *got;
    size_t glen;
    assert_int_equal(cairn_msg_frame_count(r), 1);
    assert_int_equal(cairn_msg_frame(r, 0, &got, &glen), CAIRN_OK);
    assert_int_equal(glen, 2900);
    assert_memory_equal(got, data + 100, 2900);
    cairn_msg_destroy(&r);
    m = fx_worker_req(f, 0, CAIRN_MSG_UPLOAD_READ); /* past the end: empty */
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "offset", 5000);
    cairn_msg_set_u64(m, "len", 10);
    r = fx_wk_call(f, 0, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_int_equal(cairn_msg_frame(r, 0, &got, &glen), CAIRN_OK);
    assert_int_equal(glen, 0);
    cairn_msg_destroy(&r);
    m = fx_worker_req(f, 1, CAIRN_MSG_UPLOAD_READ); /* another worker */
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "offset", 0);
    cairn_msg_set_u64(m, "len", 10);
    r = fx_wk_call(f, 1, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_EPERM);
    cairn_msg_destroy(&r);
    m = fx_worker_req(f, 0, CAIRN_MSG_UPLOAD_READ); /* unknown job */
    cairn_msg_set_str(m, "job", "jb-0123456789abcdef");
    cairn_msg_set_u64(m, "offset", 0);
    cairn_msg_set_u64(m, "len", 10);
    r = fx_wk_call(f, 0, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);

    /* success: ready, named, listed; the upload file is gone and so is read access */
    assert_int_equal(wk_result_ok(f, 0, job, RES_IMPORT, image, 0), CAIRN_OK);
    assert_false(upload_file_exists(f, job));
    r = fx_job_get(f, job, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    const struct cairn_mval *res;
    size_t nres;
    assert_int_equal(cairn_msg_get_map(r, "result", &res, &nres), CAIRN_OK);
    assert_string_equal(fx_pstr(res, "id"), image);
    assert_string_equal(fx_pstr(res, "image"), image);
    assert_null(cairn_mval_get(res, "manifest"));
    cairn_msg_destroy(&r);
    m = fx_worker_req(f, 0, CAIRN_MSG_UPLOAD_READ);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "offset", 0);
    cairn_msg_set_u64(m, "len", 10);
    r = fx_wk_call(f, 0, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);

    m = fx_app_req(f, CAIRN_MSG_IMAGE_SHOW);
    cairn_msg_set_str(m, "image", image);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *img = cairn_msg_get(r, "image");
    assert_string_equal(fx_pstr(img, "id"), image);
    assert_string_equal(fx_pstr(img, "kind"), "base");
    assert_string_equal(fx_pstr(img, "name"), "default");
    assert_string_equal(fx_pstr(img, "encryption"), "managed");
    assert_string_equal(fx_pstr(img, "retention"), "never");
    assert_int_equal(fx_pu64(img, "size"), 12345);
    assert_int_equal(fx_pu64(img, "files"), 11);
    assert_null(cairn_mval_get(img, "parent"));
    assert_null(cairn_mval_get(img, "expires_at"));
    cairn_msg_destroy(&r);
    struct coord_image *ci = coord_image_get(f->c, image);
    assert_non_null(ci);
    assert_int_equal(ci->rec.depth, 1);
    assert_int_equal(ci->rec.manifest_size, 72);
    assert_int_equal(ci->rec.manifest_len, 4000);

    /* another app sees nothing of it */
    uint8_t tok2[64];
    size_t tok2len = 0;
    fx_create_app(f, "app2", tok2, &tok2len);
    m = fx_req(f, CAIRN_MSG_IMAGE_SHOW, "app2", tok2, tok2len);
    cairn_msg_set_str(m, "image", image);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_IMAGE_RM, "app2", tok2, tok2len);
    cairn_msg_set_str(m, "image", image);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_IMAGE_LS, "app2", tok2, tok2len);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *arr;
    size_t n;
    assert_int_equal(cairn_msg_get_array(r, "images", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 0);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_SANDBOX_CREATE, "app2", tok2, tok2len);
    cairn_msg_set_str(m, "req_id", "x1");
    cairn_msg_set_str(m, "image", image);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_msg_text(r), image));
    cairn_msg_destroy(&r);
    /* the same upload id in app2 is another upload */
    m = fx_req(f, CAIRN_MSG_IMAGE_IMPORT, "app2", tok2, tok2len);
    cairn_msg_set_str(m, "upload", "up1");
    cairn_msg_set_u64(m, "offset", 0);
    cairn_msg_set_bool(m, "last", false);
    cairn_msg_add_frame(m, data, 10);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_int_equal(fx_u64(r, "received"), 10);
    cairn_msg_destroy(&r);

    /* a newer image with the same name takes the name; removing it gives it back */
    char *newer = import_image(f, "up2", "default");
    struct coord_app *a = coord_app_find(f->c, "app1");
    assert_string_equal(((struct coord_image *)coord_map_sget(&a->names, "default"))->rec.id, newer);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", newer);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    assert_string_equal(((struct coord_image *)coord_map_sget(&a->names, "default"))->rec.id, image);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", newer);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    /* job.submit cannot start the typed kinds */
    m = fx_app_req(f, CAIRN_MSG_JOB_SUBMIT);
    cairn_msg_set_str(m, "kind", "image-import");
    cairn_msg_set_str(m, "req_id", "sneaky");
    cairn_msg_set_map(m, "params");
    r = fx_expect(f, &m, CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    free(newer);
    free(image);
    free(job);
}

static void test_import_failures_and_listing(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 4, NULL);
    /* a failing import job: the pending image and the upload go */
    struct cairn_msg *r = import_piece(f, "bad1", 0, "xyz", 3, true, 3, "broken");
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    char *image = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    assert_non_null(coord_image_get(f->c, image));
    assert_int_equal(wk_result_err(f, 0, job, CAIRN_ECORRUPT, "not a tar archive"), CAIRN_OK);
    assert_null(coord_image_get(f->c, image));
    assert_false(upload_file_exists(f, job));
    r = fx_job_get(f, job, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_string_equal(fx_str(r, "err_msg"), "not a tar archive");
    cairn_msg_destroy(&r);
    free(job);
    free(image);
    /* a "success" without a layer is a failure */
    r = import_piece(f, "bad2", 0, "xyz", 3, true, -1, NULL);
    job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 0, 3000);
    image = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, 0, job, RES_EMPTY, NULL, 0), CAIRN_OK);
    assert_null(coord_image_get(f->c, image));
    r = fx_job_get(f, job, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EPROTO);
    cairn_msg_destroy(&r);
    free(job);
    free(image);
    /* an empty upload, and a size that does not match */
    r = import_piece(f, "empty", 0, "", 0, true, -1, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    r = import_piece(f, "short", 0, "ab", 2, true, 5, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    /* an upload idle for an hour is dropped with its file */
    r = import_piece(f, "idle", 0, "abc", 3, false, -1, NULL);
    cairn_msg_destroy(&r);
    struct coord_upload *u = coord_map_sget(&f->c->uploads, "app1/idle");
    assert_non_null(u);
    char ujob[COORD_JOB_ID_LEN + 1];
    memcpy(ujob, u->rec.job, sizeof(ujob));
    assert_true(upload_file_exists(f, ujob));
    struct cairn_msg *m = fx_admin_req(f, CAIRN_MSG_ADMIN_CLOCK_ADVANCE);
    cairn_msg_set_u64(m, "seconds", COORD_UPLOAD_IDLE_S + 1);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    f->c->next_upload_sweep_mono = 0;
    f->c->next_tick_mono = 0;
    fx_pump(f, 10);
    assert_null(coord_map_sget(&f->c->uploads, "app1/idle"));
    assert_false(upload_file_exists(f, ujob));
    r = import_piece(f, "idle", 3, "def", 3, true, -1, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_msg_text(r), "unknown"));
    cairn_msg_destroy(&r);

    /* paging: 5 images, 2 per page, in id order */
    char *ids[5];
    for (int i = 0; i < 5; i++) {
        char up[16];
        snprintf(up, sizeof(up), "page%d", i);
        ids[i] = import_image(f, up, NULL);
    }
    char *sorted[5];
    memcpy(sorted, ids, sizeof(ids));
    for (int i = 0; i < 5; i++)
        for (int k = i + 1; k < 5; k++)
            if (strcmp(sorted[k], sorted[i]) < 0) {
                char *t = sorted[i];
                sorted[i] = sorted[k];
                sorted[k] = t;
            }
    char after[32] = "";
    int seen = 0;
    for (int page = 0; page < 3; page++) {
        m = fx_app_req(f, CAIRN_MSG_IMAGE_LS);
        cairn_msg_set_u64(m, "limit", 2);
        if (after[0])
            cairn_msg_set_str(m, "after", after);
        r = fx_expect(f, &m, CAIRN_OK);
        const struct cairn_mval *arr;
        size_t n;
        assert_int_equal(cairn_msg_get_array(r, "images", &arr, &n), CAIRN_OK);
        for (size_t i = 0; i < n; i++)
            assert_string_equal(fx_pstr(cairn_mval_at(arr, i), "id"), sorted[seen++]);
        if (page < 2) {
            assert_int_equal(n, 2);
            snprintf(after, sizeof(after), "%s", fx_str(r, "next"));
            assert_string_equal(after, sorted[seen - 1]);
        } else {
            assert_int_equal(n, 1);
            assert_null(cairn_msg_get(r, "next"));
        }
        cairn_msg_destroy(&r);
    }
    assert_int_equal(seen, 5);
    assert_int_equal(image_count(f, "base"), 5);
    assert_int_equal(image_count(f, "fs"), 0);
    for (int i = 0; i < 5; i++)
        free(ids[i]);
}

static void test_create_and_placement(void **state)
{
    struct fx *f = *state;
    /* w1: 1 slot, w2: 2 slots, w3: none */
    wk_register(f, 0, 1, NULL);
    wk_register(f, 1, 2, NULL);
    wk_register(f, 2, 0, NULL);
    char *image = import_image(f, "base", "default");

    struct cairn_msg *m = create_req(f, "g1", NULL, NULL);
    cairn_msg_set_u64(m, "gpu", 1);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_EUNSUPPORTED);
    assert_string_equal(cairn_msg_text(r), "no worker in this cluster has GPUs");
    cairn_msg_destroy(&r);
    m = create_req(f, "g2", NULL, NULL);
    cairn_msg_set_u64(m, "gpu", 1);
    cairn_msg_set_bool(m, "enable_snapshot", true);
    r = fx_expect(f, &m, CAIRN_EINVAL);
    cairn_msg_destroy(&r);
    m = create_req(f, "p1", NULL, "w9");
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    assert_string_equal(cairn_msg_text(r), "unknown worker 'w9'");
    cairn_msg_destroy(&r);
    m = create_req(f, "p2", "im-0000000000000000", NULL);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    assert_string_equal(cairn_msg_text(r), "image 'im-0000000000000000' not found");
    cairn_msg_destroy(&r);
    m = create_req(f, "p3", NULL, "w3");
    r = fx_expect(f, &m, CAIRN_EBUSY);
    cairn_msg_destroy(&r);

    /* s1 with wait_ms: the reply comes once the worker is done, with sandbox and worker */
    m = create_req(f, "s1", NULL, NULL);
    struct cairn_mval *cmd = cairn_msg_set_array(m, "cmd");
    cairn_mval_push_str(m, cmd, "/bin/sh");
    cairn_mval_push_str(m, cmd, "-c");
    cairn_mval_push_str(m, cmd, "sleep 1000");
    cairn_msg_set_u64(m, "wait_ms", 5000);
    uint64_t rid = cairn_msg_rid(m);
    assert_int_equal(cairn_sock_send(f->client, m), CAIRN_OK);
    cairn_msg_destroy(&m);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000); /* tie on slots (0 and 0): w1 by id */
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-create");
    const struct cairn_mval *p = fx_params(d);
    char *s1 = strdup(fx_pstr(p, "sandbox"));
    char *s1job = strdup(fx_str(d, "job"));
    assert_memory_equal(s1, "sb-", 3);
    const char *rt = fx_pstr(p, "runtime_id");
    assert_int_equal(strlen(rt), 32);
    assert_true(coord_hex_valid(rt, 32));
    assert_string_equal(fx_pstr(p, "hostname"), s1);
    assert_false(fx_pbool(p, "enable_snapshot"));
    const struct cairn_mval *layers = cairn_mval_get(p, "layers");
    assert_int_equal(cairn_mval_len(layers), 1);
    assert_string_equal(fx_pstr(cairn_mval_at(layers, 0), "image"), image);
    assert_int_equal(fx_pu64(cairn_mval_at(layers, 0), "manifest_len"), 4000);
    assert_int_equal(cairn_mval_len(cairn_mval_get(p, "cmd")), 3);
    assert_int_equal(cairn_mval_len(cairn_mval_at(cairn_mval_get(p, "cmd"), 0)), 7);
    cairn_msg_destroy(&d);
    assert_string_equal(sandbox_state(f, s1), "creating");
    assert_int_equal(wk_result_ok(f, 0, s1job, RES_CREATE, NULL, 0), CAIRN_OK);
    r = fx_recv(f, f->client, 3000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_rid(r), rid);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    const struct cairn_mval *res;
    size_t nres;
    assert_int_equal(cairn_msg_get_map(r, "result", &res, &nres), CAIRN_OK);
    assert_string_equal(fx_pstr(res, "sandbox"), s1);
    assert_string_equal(fx_pstr(res, "id"), s1);
    assert_string_equal(fx_pstr(res, "worker"), "w1");
    assert_int_equal(fx_pu64(res, "create_ms"), 42);
    cairn_msg_destroy(&r);
    assert_string_equal(sandbox_state(f, s1), "running");
    /* idempotent */
    m = create_req(f, "s1", NULL, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "job"), s1job);
    cairn_msg_destroy(&r);

    /* w1 is full: s2 and s3 go to w2; s4 finds no slot and waits, pinned to w1 is EBUSY */
    int wi = -1;
    char *s2 = make_sandbox(f, "s2", image, NULL, &wi);
    assert_int_equal(wi, 1);
    char *s3 = make_sandbox(f, "s3", NULL, NULL, &wi);
    assert_int_equal(wi, 1);
    m = create_req(f, "s4", NULL, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "state"), "queued");
    char *s4job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    m = create_req(f, "s5", NULL, "w1");
    r = fx_expect(f, &m, CAIRN_EBUSY);
    assert_non_null(strstr(cairn_msg_text(r), "worker 'w1' is full (1 of 1"));
    cairn_msg_destroy(&r);
    /* the waiting create does not hold up other jobs */
    r = fx_submit(f, "noop", "n1", NULL, 0);
    char *n1 = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch_any(f, &wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), n1);
    cairn_msg_destroy(&d);
    assert_int_equal(fx_result(f, wi, n1, 0, NULL), CAIRN_OK);

    /* terminate s1: a job on w1; once it is done the slot goes to s4 */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_TERMINATE);
    cairn_msg_set_str(m, "sandbox", s1);
    r = fx_expect(f, &m, CAIRN_OK);
    char *tjob = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-terminate");
    assert_string_equal(fx_pstr(fx_params(d), "runtime_id"), coord_sandbox_get(f->c, s1)->rec.runtime_id);
    cairn_msg_destroy(&d);
    /* asking again answers with the same job */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_TERMINATE);
    cairn_msg_set_str(m, "sandbox", s1);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "job"), tjob);
    cairn_msg_destroy(&r);
    assert_int_equal(wk_result_ok(f, 0, tjob, RES_EMPTY, NULL, 0), CAIRN_OK);
    assert_string_equal(sandbox_state(f, s1), "terminated");
    d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), s4job);
    char *s4 = strdup(fx_pstr(fx_params(d), "sandbox"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, 0, s4job, RES_CREATE, NULL, 0), CAIRN_OK);
    /* a create that fails leaves a failed sandbox */
    m = create_req(f, "s6", NULL, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    char *s6job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    /* a terminate of a sandbox the worker no longer has still terminates it */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_TERMINATE);
    cairn_msg_set_str(m, "sandbox", s2);
    cairn_msg_set_str(m, "req_id", "t2");
    r = fx_expect(f, &m, CAIRN_OK);
    char *t2job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 1, 3000);
    assert_string_equal(fx_str(d, "job"), t2job);
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_err(f, 1, t2job, CAIRN_ENOTFOUND, "no such sandbox"), CAIRN_OK);
    assert_string_equal(sandbox_state(f, s2), "terminated");
    r = fx_job_get(f, t2job, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    /* the slot freed on w2 takes s6, which fails there */
    d = fx_wk_dispatch(f, 1, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), s6job);
    char *s6 = strdup(fx_pstr(fx_params(d), "sandbox"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_err(f, 1, s6job, CAIRN_EIO, "layer fetch failed"), CAIRN_OK);
    assert_string_equal(sandbox_state(f, s6), "failed");
    assert_int_equal(f->c->wlist[1]->nsbx + f->c->wlist[1]->creating, 1);

    /* sandbox.ls: terminated ones only with all; paging */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_LS);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *arr;
    size_t n;
    assert_int_equal(cairn_msg_get_array(r, "sandboxes", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 3); /* s3, s4 running, s6 failed */
    for (size_t i = 0; i < n; i++) {
        const char *st = fx_pstr(cairn_mval_at(arr, i), "state");
        assert_true(!strcmp(st, "running") || !strcmp(st, "failed"));
        assert_string_equal(fx_pstr(cairn_mval_at(arr, i), "image"), image);
    }
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_LS);
    cairn_msg_set_bool(m, "all", true);
    cairn_msg_set_u64(m, "limit", 4);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_int_equal(cairn_msg_get_array(r, "sandboxes", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 4);
    char next[32];
    snprintf(next, sizeof(next), "%s", fx_str(r, "next"));
    assert_string_equal(next, fx_pstr(cairn_mval_at(arr, 3), "id"));
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_LS);
    cairn_msg_set_bool(m, "all", true);
    cairn_msg_set_str(m, "after", next);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_int_equal(cairn_msg_get_array(r, "sandboxes", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 1);
    assert_true(strcmp(fx_pstr(cairn_mval_at(arr, 0), "id"), next) > 0);
    assert_null(cairn_msg_get(r, "next"));
    cairn_msg_destroy(&r);

    /* the image is in use: rm is EBUSY naming a sandbox */
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", image);
    r = fx_expect(f, &m, CAIRN_EBUSY);
    assert_non_null(strstr(cairn_msg_text(r), "in use by sandbox 'sb-"));
    cairn_msg_destroy(&r);
    free(image);
    free(s1);
    free(s1job);
    free(s2);
    free(s3);
    free(s4);
    free(s4job);
    free(s6);
    free(s6job);
    free(n1);
    free(tjob);
    free(t2job);
}

/* exec in sb (on worker wi): returns the dispatched job id; the request is sent, not answered. */
static char *start_exec(struct fx *f, struct cairn_sock *client, const char *sb, int wi, bool stream, uint64_t *rid)
{
    struct cairn_msg *m = fx_app_req(f, stream ? CAIRN_MSG_SANDBOX_EXEC_STREAM : CAIRN_MSG_SANDBOX_EXEC);
    cairn_msg_set_str(m, "sandbox", sb);
    struct cairn_mval *argv = cairn_msg_set_array(m, "argv");
    cairn_mval_push_str(m, argv, "cat");
    cairn_msg_set_bin(m, "stdin", "in", 2);
    cairn_msg_set_u64(m, "timeout_ms", 1000);
    *rid = cairn_msg_rid(m);
    assert_int_equal(cairn_sock_send(client, m), CAIRN_OK);
    cairn_msg_destroy(&m);
    struct cairn_msg *d = fx_wk_dispatch(f, wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-exec");
    const struct cairn_mval *p = fx_params(d);
    assert_string_equal(fx_pstr(p, "runtime_id"), coord_sandbox_get(f->c, sb)->rec.runtime_id);
    assert_string_equal(fx_pstr(p, "sandbox"), sb);
    assert_int_equal(cairn_mval_len(cairn_mval_get(p, "argv")), 1);
    assert_int_equal(fx_pu64(p, "timeout_ms"), 1000);
    char *job = strdup(fx_str(d, "job"));
    cairn_msg_destroy(&d);
    return job;
}

static void test_exec_collect(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 4, NULL);
    char *image = import_image(f, "base", "default");
    int wi = -1;
    char *sb = make_sandbox(f, "e1", NULL, NULL, &wi);
    uint64_t rid;
    char *job = start_exec(f, f->client, sb, wi, false, &rid);
    struct cairn_msg *a = wk_output(f, wi, job, 0, 1, "hello ", 6);
    assert_int_equal(cairn_msg_code(a), CAIRN_OK);
    cairn_msg_destroy(&a);
    a = wk_output(f, wi, job, 1, 2, "oops", 4);
    cairn_msg_destroy(&a);
    a = wk_output(f, wi, job, 1, 2, "oops", 4); /* resent: acknowledged, kept once */
    assert_int_equal(cairn_msg_code(a), CAIRN_OK);
    cairn_msg_destroy(&a);
    a = wk_output(f, wi, job, 2, 1, "world", 5);
    cairn_msg_destroy(&a);
    /* another worker cannot feed it */
    wk_register(f, 1, 4, NULL);
    a = wk_output(f, 1, job, 3, 1, "evil", 4);
    assert_int_equal(cairn_msg_code(a), CAIRN_EPERM);
    cairn_msg_destroy(&a);
    assert_int_equal(wk_result_ok(f, wi, job, RES_EXEC, NULL, 3), CAIRN_OK);
    struct cairn_msg *r = fx_recv(f, f->client, 3000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_rid(r), rid);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    int64_t code = 0;
    assert_int_equal(cairn_msg_get_i64(r, "exit_code", &code), CAIRN_OK);
    assert_int_equal(code, 3);
    const uint8_t *p;
    size_t n;
    assert_int_equal(cairn_msg_get_bin(r, "stdout", &p, &n), CAIRN_OK);
    assert_int_equal(n, 11);
    assert_memory_equal(p, "hello world", 11);
    assert_int_equal(cairn_msg_get_bin(r, "stderr", &p, &n), CAIRN_OK);
    assert_int_equal(n, 4);
    assert_null(cairn_msg_get(r, "truncated"));
    cairn_msg_destroy(&r);
    /* output for an ended job: ENOTFOUND (the worker stops) */
    a = wk_output(f, wi, job, 4, 1, "late", 4);
    assert_int_equal(cairn_msg_code(a), CAIRN_ENOTFOUND);
    cairn_msg_destroy(&a);
    free(job);

    /* each stream is cut at 4 MiB */
    job = start_exec(f, f->client, sb, wi, false, &rid);
    uint8_t *big = malloc(1 << 20);
    memset(big, 'x', 1 << 20);
    for (uint64_t s = 0; s < 5; s++) {
        a = wk_output(f, wi, job, s, 1, big, 1 << 20);
        assert_int_equal(cairn_msg_code(a), CAIRN_OK);
        cairn_msg_destroy(&a);
    }
    a = wk_output(f, wi, job, 5, 2, "e", 1);
    cairn_msg_destroy(&a);
    assert_int_equal(wk_result_ok(f, wi, job, RES_EXEC, NULL, 0), CAIRN_OK);
    r = fx_recv(f, f->client, 3000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_get_bin(r, "stdout", &p, &n), CAIRN_OK);
    assert_int_equal(n, 4u << 20);
    assert_int_equal(cairn_msg_get_bin(r, "stderr", &p, &n), CAIRN_OK);
    assert_int_equal(n, 1);
    bool trunc = false;
    assert_int_equal(cairn_msg_get_bool(r, "truncated", &trunc), CAIRN_OK);
    assert_true(trunc);
    cairn_msg_destroy(&r);
    free(big);
    free(job);

    /* a failing exec job is the error reply; a result without exit code too */
    job = start_exec(f, f->client, sb, wi, false, &rid);
    assert_int_equal(wk_result_err(f, wi, job, CAIRN_ENOTFOUND, "sandbox vanished"), CAIRN_OK);
    r = fx_recv(f, f->client, 3000);
    assert_int_equal(cairn_msg_code(r), CAIRN_ENOTFOUND);
    assert_string_equal(cairn_msg_text(r), "sandbox vanished");
    cairn_msg_destroy(&r);
    free(job);
    job = start_exec(f, f->client, sb, wi, false, &rid);
    assert_int_equal(wk_result_ok(f, wi, job, RES_EMPTY, NULL, 0), CAIRN_OK);
    r = fx_recv(f, f->client, 3000);
    assert_int_equal(cairn_msg_code(r), CAIRN_EPROTO);
    cairn_msg_destroy(&r);
    free(job);

    /* refusals: unknown sandbox, too much stdin, no argv */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_EXEC);
    cairn_msg_set_str(m, "sandbox", "sb-0000000000000000");
    cairn_mval_push_str(m, cairn_msg_set_array(m, "argv"), "true");
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_EXEC);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_mval_push_str(m, cairn_msg_set_array(m, "argv"), "true");
    uint8_t *in = calloc(1, 70000);
    cairn_msg_set_bin(m, "stdin", in, 70000);
    free(in);
    r = fx_expect(f, &m, CAIRN_ETOOBIG);
    cairn_msg_destroy(&r);
    free(sb);
    free(image);
}

/* Stream replies on cl until `want` data replies arrived (checking order and bytes); returns the count. */
static size_t read_stream(struct fx *f, struct cairn_sock *cl, uint64_t *next_seq, size_t want, int timeout_ms)
{
    size_t got = 0;
    uint64_t end = cairn_now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (got < want && cairn_now_mono_ns() < end) {
        struct cairn_msg *r = fx_recv(f, cl, 20);
        if (!r)
            continue;
        assert_int_equal(cairn_msg_code(r), CAIRN_OK);
        assert_int_equal(fx_u64(r, "seq"), *next_seq);
        const uint8_t *p;
        size_t n;
        assert_int_equal(cairn_msg_get_bin(r, "data", &p, &n), CAIRN_OK);
        assert_int_equal(n, 1 << 20);
        assert_int_equal(p[0], (uint8_t)*next_seq);
        assert_int_equal(p[n - 1], (uint8_t)*next_seq);
        (*next_seq)++;
        got++;
        cairn_msg_destroy(&r);
    }
    return got;
}

static void test_exec_stream(void **state)
{
    struct fx *f = *state;
    /* small queues so that a client that does not read fills its connection soon */
    fx_coord_stop(f);
    f->cfg.client_hwm = 2;
    fx_coord_start(f);
    wk_register(f, 0, 4, NULL);
    char *image = import_image(f, "base", "default");
    int wi = -1;
    char *sb = make_sandbox(f, "st1", NULL, NULL, &wi);
    struct cairn_sock_opts o = {.hwm = 2};
    struct cairn_sock *cl = NULL;
    assert_int_equal(cairn_sock_client(f->net, f->client_ep, &f->client_keys, f->coord_keys.public_z85, &o, &cl),
                     CAIRN_OK);
    uint64_t rid;
    char *job = start_exec(f, cl, sb, wi, true, &rid);

    /* the worker streams 1 MiB outputs, at most 8 unacknowledged; the client does not read yet */
    enum { N = 48, WINDOW = 8 };
    uint8_t *buf = malloc(1 << 20);
    uint64_t sent = 0, acked = 0, next_seq = 0;
    uint64_t rids[N];
    uint64_t last_ack = cairn_now_mono_ns();
    bool stalled = false;
    size_t acked_at_stall = 0;
    bool reading = false;
    while (acked < N) {
        while (sent < N && sent - acked < WINDOW) {
            memset(buf, (int)(uint8_t)sent, 1 << 20);
            struct cairn_msg *m = fx_worker_req(f, wi, CAIRN_MSG_JOB_OUTPUT);
            cairn_msg_set_str(m, "job", job);
            cairn_msg_set_u64(m, "seq", sent);
            cairn_msg_set_u64(m, "stream", 1);
            cairn_msg_add_frame(m, buf, 1 << 20);
            rids[sent] = cairn_msg_rid(m);
            assert_int_equal(cairn_sock_send(f->w[wi].s, m), CAIRN_OK);
            cairn_msg_destroy(&m);
            sent++;
        }
        struct cairn_msg *a = fx_recv(f, f->w[wi].s, 10);
        if (a) {
            assert_true(cairn_msg_is_reply(a));
            assert_int_equal(cairn_msg_code(a), CAIRN_OK);
            assert_int_equal(cairn_msg_rid(a), rids[acked]); /* in order */
            acked++;
            last_ack = cairn_now_mono_ns();
            cairn_msg_destroy(&a);
        }
        if (!reading && cairn_now_mono_ns() - last_ack > 400000000ull) {
            /* nothing acknowledged for 0.4 s with a full window: the coordinator holds the outputs */
            stalled = true;
            acked_at_stall = acked;
            assert_int_equal(sent - acked, WINDOW);
            assert_true(f->c->nstalled > 0);
            reading = true;
        }
        if (reading)
            read_stream(f, cl, &next_seq, 1, 5);
        assert_true(cairn_now_mono_ns() - last_ack < 5000000000ull);
    }
    assert_true(stalled);
    assert_true(acked_at_stall < N);
    read_stream(f, cl, &next_seq, N - next_seq, 5000);
    assert_int_equal(next_seq, N);
    assert_int_equal(wk_result_ok(f, wi, job, RES_EXEC, NULL, 0), CAIRN_OK);
    struct cairn_msg *r = fx_recv(f, cl, 3000);
    assert_non_null(r);
    assert_int_equal(cairn_msg_rid(r), rid);
    assert_int_equal(fx_u64(r, "seq"), N);
    bool done = false;
    assert_int_equal(cairn_msg_get_bool(r, "done", &done), CAIRN_OK);
    assert_true(done);
    int64_t code = -1;
    assert_int_equal(cairn_msg_get_i64(r, "exit_code", &code), CAIRN_OK);
    assert_int_equal(code, 0);
    cairn_msg_destroy(&r);
    free(job);

    /* stderr and stdout interleave in order; the last reply of a failed job is an error */
    job = start_exec(f, cl, sb, wi, true, &rid);
    struct cairn_msg *a = wk_output(f, wi, job, 0, 2, "E", 1);
    cairn_msg_destroy(&a);
    a = wk_output(f, wi, job, 1, 1, "O", 1);
    cairn_msg_destroy(&a);
    assert_int_equal(wk_result_err(f, wi, job, CAIRN_EIO, "runsc exec failed"), CAIRN_OK);
    r = fx_recv(f, cl, 3000);
    assert_int_equal(fx_u64(r, "seq"), 0);
    assert_int_equal(fx_u64(r, "stream"), 2);
    cairn_msg_destroy(&r);
    r = fx_recv(f, cl, 3000);
    assert_int_equal(fx_u64(r, "seq"), 1);
    assert_int_equal(fx_u64(r, "stream"), 1);
    cairn_msg_destroy(&r);
    r = fx_recv(f, cl, 3000);
    assert_int_equal(cairn_msg_code(r), CAIRN_EIO);
    assert_string_equal(cairn_msg_text(r), "runsc exec failed");
    cairn_msg_destroy(&r);
    free(job);

    /* the client goes away: the next output is refused (the worker kills the command), the job fails */
    job = start_exec(f, cl, sb, wi, true, &rid);
    cairn_sock_destroy(&cl);
    uint64_t end = cairn_now_mono_ns() + 3000000000ull;
    int code_seen = CAIRN_OK;
    for (uint64_t s = 0; code_seen == CAIRN_OK && cairn_now_mono_ns() < end; s++) {
        fx_pump(f, 50);
        a = wk_output(f, wi, job, s, 1, "x", 1);
        code_seen = cairn_msg_code(a);
        cairn_msg_destroy(&a);
    }
    assert_int_equal(code_seen, CAIRN_ECANCELED);
    r = fx_job_get(f, job, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_ECANCELED);
    cairn_msg_destroy(&r);
    a = wk_output(f, wi, job, 1000, 1, "x", 1);
    assert_int_equal(cairn_msg_code(a), CAIRN_ENOTFOUND);
    cairn_msg_destroy(&a);
    assert_null(f->c->execs);
    free(job);
    free(buf);
    free(sb);
    free(image);
}

/* snapshot-fs of sb on worker wi: returns the new image (ready). */
static char *snapshot(struct fx *f, const char *sb, int wi, const char *req_id, uint64_t ttl_s, bool expect_flatten)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT_FS);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "req_id", req_id);
    if (ttl_s)
        cairn_msg_set_u64(m, "ttl_s", ttl_s);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    assert_string_equal(fx_str(r, "kind"), "snapshot-fs");
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "snapshot-fs");
    const struct cairn_mval *p = fx_params(d);
    char *image = strdup(fx_pstr(p, "image"));
    assert_int_equal(fx_pbool(p, "flatten"), expect_flatten);
    assert_string_equal(fx_pstr(p, "runtime_id"), coord_sandbox_get(f->c, sb)->rec.runtime_id);
    cairn_msg_destroy(&d);
    /* pending: not shown */
    m = fx_app_req(f, CAIRN_MSG_IMAGE_SHOW);
    cairn_msg_set_str(m, "image", image);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    assert_int_equal(wk_result_ok(f, wi, job, RES_SNAPSHOT, image, 0), CAIRN_OK);
    r = fx_job_get(f, job, 0);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    const struct cairn_mval *res;
    size_t n;
    assert_int_equal(cairn_msg_get_map(r, "result", &res, &n), CAIRN_OK);
    assert_string_equal(fx_pstr(res, "image"), image);
    assert_int_equal(fx_pu64(res, "pause_ms"), 7);
    cairn_msg_destroy(&r);
    free(job);
    return image;
}

static void test_snapshot_fs(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 32, NULL);
    char *base = import_image(f, "base", "default");
    int wi = -1;
    char *sb = make_sandbox(f, "sn0", NULL, NULL, &wi);

    /* a layer on the base, with a TTL */
    char *s1 = snapshot(f, sb, wi, "snap1", 60, false);
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_IMAGE_SHOW);
    cairn_msg_set_str(m, "image", s1);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *img = cairn_msg_get(r, "image");
    assert_string_equal(fx_pstr(img, "kind"), "fs");
    assert_string_equal(fx_pstr(img, "parent"), base);
    assert_string_equal(fx_pstr(img, "retention"), "ttl:60");
    uint64_t created = fx_pu64(img, "created_at"), expires = fx_pu64(img, "expires_at");
    assert_int_equal(expires - created, 60ull * 1000000000ull);
    cairn_msg_destroy(&r);
    struct coord_image *ci = coord_image_get(f->c, s1);
    assert_int_equal(ci->rec.depth, 2);
    assert_string_equal(ci->rec.origin, base);
    assert_int_equal(image_count(f, "fs"), 1);
    /* the same req_id: the same job; another sandbox's req_id in use is EEXIST for another kind */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT_FS);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "req_id", "snap1");
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    m = create_req(f, "snap1", NULL, NULL);
    r = fx_expect(f, &m, CAIRN_EEXIST);
    cairn_msg_destroy(&r);

    /* the base is used by sb: rm refused */
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", base);
    r = fx_expect(f, &m, CAIRN_EBUSY);
    assert_non_null(strstr(cairn_msg_text(r), sb));
    cairn_msg_destroy(&r);

    /* chains: a sandbox on each new layer, until depth 15; the next snapshot is flattened */
    char *top = strdup(s1), *tsb = strdup(sb);
    for (int depth = 2; depth < 15; depth++) {
        char req[32];
        snprintf(req, sizeof(req), "chain%d", depth);
        char *nsb = make_sandbox(f, req, top, NULL, &wi);
        if (depth == 14) {
            /* the create of a depth-14 image carries its 14 layers, top first */
            struct coord_image *t = coord_image_get(f->c, top);
            assert_int_equal(t->rec.depth, 14);
        }
        snprintf(req, sizeof(req), "snapc%d", depth);
        char *next = snapshot(f, nsb, wi, req, 0, false);
        assert_int_equal(coord_image_get(f->c, next)->rec.depth, (uint64_t)depth + 1);
        assert_string_equal(coord_image_get(f->c, next)->rec.parent, top);
        free(top);
        free(tsb);
        top = next;
        tsb = nsb;
    }
    assert_int_equal(coord_image_get(f->c, top)->rec.depth, 15);
    /* a sandbox on the depth-15 image gets 15 layers, top first, ending with the base */
    m = create_req(f, "deep", top, NULL);
    r = fx_expect(f, &m, CAIRN_OK);
    char *deepjob = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, wi, 3000);
    const struct cairn_mval *layers = cairn_mval_get(fx_params(d), "layers");
    assert_int_equal(cairn_mval_len(layers), 15);
    assert_string_equal(fx_pstr(cairn_mval_at(layers, 0), "image"), top);
    assert_string_equal(fx_pstr(cairn_mval_at(layers, 13), "image"), s1);
    assert_string_equal(fx_pstr(cairn_mval_at(layers, 14), "image"), base);
    char *deep = strdup(fx_pstr(fx_params(d), "sandbox"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, wi, deepjob, RES_CREATE, NULL, 0), CAIRN_OK);
    char *flat = snapshot(f, deep, wi, "flat", 0, true);
    ci = coord_image_get(f->c, flat);
    assert_int_equal(ci->rec.depth, 1);
    assert_string_equal(ci->rec.parent, "");
    assert_string_equal(ci->rec.origin, top);
    assert_string_equal(ci->rec.retention, "never");
    assert_int_equal(ci->rec.expires_ns, 0);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_SHOW);
    cairn_msg_set_str(m, "image", flat);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_null(cairn_mval_get(cairn_msg_get(r, "image"), "parent"));
    cairn_msg_destroy(&r);

    /* a failed snapshot leaves no image */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT_FS);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "req_id", "snapfail");
    r = fx_expect(f, &m, CAIRN_OK);
    char *fj = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, wi, 3000);
    char *fimg = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    assert_non_null(coord_image_get(f->c, fimg));
    assert_int_equal(wk_result_err(f, wi, fj, CAIRN_EIO, "capture failed"), CAIRN_OK);
    assert_null(coord_image_get(f->c, fimg));

    /* sb terminated, the base is still the parent of s1: rm refused, naming the child */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_TERMINATE);
    cairn_msg_set_str(m, "sandbox", sb);
    r = fx_expect(f, &m, CAIRN_OK);
    char *tj = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, wi, 3000);
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, wi, tj, RES_EMPTY, NULL, 0), CAIRN_OK);
    free(tj);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", base);
    r = fx_expect(f, &m, CAIRN_EBUSY);
    assert_non_null(strstr(cairn_msg_text(r), "is the parent of image"));
    assert_non_null(strstr(cairn_msg_text(r), s1));
    cairn_msg_destroy(&r);

    /* the TTL runs out: the image is not found, and says it expired */
    m = fx_admin_req(f, CAIRN_MSG_ADMIN_CLOCK_ADVANCE);
    cairn_msg_set_u64(m, "seconds", 61);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_SHOW);
    cairn_msg_set_str(m, "image", s1);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_msg_text(r), "expired"));
    cairn_msg_destroy(&r);
    m = create_req(f, "onexpired", s1, NULL);
    r = fx_expect(f, &m, CAIRN_ENOTFOUND);
    cairn_msg_destroy(&r);
    free(fj);
    free(fimg);
    free(flat);
    free(deep);
    free(deepjob);
    free(top);
    free(tsb);
    free(s1);
    free(sb);
    free(base);
}

static void test_worker_death_and_registration(void **state)
{
    struct fx *f = *state;
    fx_coord_stop(f);
    fx_set(f, "heartbeat_timeout", "600ms");
    fx_coord_start(f);
    wk_register(f, 0, 4, NULL);
    wk_register(f, 1, 4, NULL);
    char *image = import_image(f, "base", "default");
    int wi = -1;
    char *a1 = make_sandbox(f, "a1", NULL, "w1", &wi);
    char *a2 = make_sandbox(f, "a2", NULL, "w1", &wi);
    char *b1 = make_sandbox(f, "b1", NULL, "w2", &wi);
    char *b2 = make_sandbox(f, "b2", NULL, "w2", &wi);
    assert_int_equal(f->c->wlist[0]->nsbx, 2);

    /* w1 goes silent, w2 beats */
    uint64_t end = cairn_now_mono_ns() + 1000000000ull;
    while (cairn_now_mono_ns() < end) {
        struct cairn_msg *hb = fx_worker_req(f, 1, CAIRN_MSG_WORKER_HEARTBEAT);
        cairn_msg_set_str(hb, "id", "w2");
        cairn_msg_set_u64(hb, "chunks", 0);
        cairn_msg_set_u64(hb, "bytes", 0);
        cairn_msg_set_u64(hb, "sandboxes", 2);
        cairn_msg_set_array(hb, "jobs");
        struct cairn_msg *r = fx_wk_call(f, 1, &hb);
        cairn_msg_destroy(&r);
        fx_pump(f, 50);
    }
    assert_false(coord_worker_find(f->c, "w1")->rec.alive);
    assert_string_equal(sandbox_state(f, a1), "failed");
    assert_string_equal(sandbox_state(f, a2), "failed");
    assert_string_equal(sandbox_state(f, b1), "running");
    assert_int_equal(f->c->wlist[0]->nsbx, 0);
    /* the heartbeat's count shows in cluster.status */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_CLUSTER_STATUS);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *ws;
    size_t nw;
    assert_int_equal(cairn_msg_get_array(r, "workers", &ws, &nw), CAIRN_OK);
    assert_int_equal(fx_pu64(cairn_mval_at(ws, 1), "sandboxes"), 2);
    cairn_msg_destroy(&r);

    /* calls on its sandboxes: EUNAVAILABLE naming the worker */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_EXEC);
    cairn_msg_set_str(m, "sandbox", a1);
    cairn_mval_push_str(m, cairn_msg_set_array(m, "argv"), "true");
    r = fx_expect(f, &m, CAIRN_EUNAVAILABLE);
    assert_non_null(strstr(cairn_msg_text(r), "worker 'w1' died"));
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT_FS);
    cairn_msg_set_str(m, "sandbox", a1);
    cairn_msg_set_str(m, "req_id", "dead-snap");
    r = fx_expect(f, &m, CAIRN_EUNAVAILABLE);
    assert_non_null(strstr(cairn_msg_text(r), "worker 'w1' died"));
    cairn_msg_destroy(&r);
    /* terminating a failed sandbox needs no worker: done at once */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_TERMINATE);
    cairn_msg_set_str(m, "sandbox", a1);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    assert_string_equal(sandbox_state(f, a1), "terminated");

    /* w1 comes back still running a2 and the terminated a1: a2 runs again, a1 is stopped there */
    const char *w1_runs[] = {a2, coord_sandbox_get(f->c, a1)->rec.runtime_id, NULL};
    wk_register(f, 0, 4, w1_runs);
    assert_string_equal(sandbox_state(f, a2), "running");
    assert_null(coord_sandbox_get(f->c, a2)->rec.err_msg);
    assert_string_equal(sandbox_state(f, a1), "terminated");
    assert_int_equal(f->c->wlist[0]->nsbx, 1);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-terminate");
    assert_string_equal(fx_pstr(fx_params(d), "runtime_id"), coord_sandbox_get(f->c, a1)->rec.runtime_id);
    assert_int_equal(wk_result_ok(f, 0, fx_str(d, "job"), RES_EMPTY, NULL, 0), CAIRN_OK);
    cairn_msg_destroy(&d);
    assert_string_equal(sandbox_state(f, a1), "terminated");
    /* a2 works again: exec goes to w1 */
    uint64_t rid;
    char *xj = start_exec(f, f->client, a2, 0, false, &rid);
    assert_int_equal(wk_result_ok(f, 0, xj, RES_EXEC, NULL, 0), CAIRN_OK);
    r = fx_recv(f, f->client, 3000);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    cairn_msg_destroy(&r);
    free(xj);
    /* w2 restarts and only b2 survived (listed by runtime id) */
    const char *w2_runs[] = {coord_sandbox_get(f->c, b2)->rec.runtime_id, NULL};
    wk_register(f, 1, 4, w2_runs);
    assert_string_equal(sandbox_state(f, b1), "failed");
    assert_string_equal(sandbox_state(f, b2), "running");
    assert_non_null(strstr(coord_sandbox_get(f->c, b1)->rec.err_msg, "restarted"));
    /* a registration without a list: none of its sandboxes survived */
    wk_register(f, 1, 4, NULL);
    assert_string_equal(sandbox_state(f, b2), "failed");
    free(a1);
    free(a2);
    free(b1);
    free(b2);
    free(image);
}

static void test_restart_keeps_records(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0, 4, NULL);
    char *base = import_image(f, "base", "default");
    int wi = -1;
    char *sb = make_sandbox(f, "r1", NULL, NULL, &wi);
    char *snap = snapshot(f, sb, wi, "rsnap", 3600, false);
    /* an upload half done, and an import whose job is still running */
    struct cairn_msg *r = import_piece(f, "half", 0, "abcdef", 6, false, 12, "later");
    assert_int_equal(fx_u64(r, "received"), 6);
    cairn_msg_destroy(&r);
    r = import_piece(f, "inflight", 0, "tar", 3, true, -1, NULL);
    char *ijob = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    char *iimg = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);

    fx_coord_stop(f);
    fx_stash_drop(f);
    /* a stray upload file (of no upload and no running import) is deleted at start-up */
    tu_write_file(tu_path("%s/data/uploads/jb-00000000000000aa.tar", f->dir), "junk", 4);
    fx_coord_start(f);
    assert_false(upload_file_exists(f, "jb-00000000000000aa"));
    assert_int_equal(image_count(f, NULL), 2);
    assert_string_equal(sandbox_state(f, sb), "running");
    assert_int_equal(coord_image_get(f->c, snap)->rec.depth, 2);
    assert_non_null(coord_image_get(f->c, iimg)); /* pending, with its job */
    assert_true(upload_file_exists(f, ijob));
    struct coord_app *a = coord_app_find(f->c, "app1");
    assert_string_equal(((struct coord_image *)coord_map_sget(&a->names, "default"))->rec.id, base);
    /* the upload goes on where it stopped */
    r = import_piece(f, "half", 6, "ghijkl", 6, true, -1, NULL);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_int_equal(fx_u64(r, "received"), 12);
    char *hjob = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    /* w1 comes back running the sandbox; the import finishes, the new one runs */
    fx_worker_connect(f, 0);
    const char *runs[] = {sb, NULL};
    wk_register(f, 0, 4, runs);
    assert_string_equal(sandbox_state(f, sb), "running");
    assert_int_equal(f->c->wlist[0]->nsbx, 1);
    assert_int_equal(wk_result_ok(f, 0, ijob, RES_IMPORT, iimg, 0), CAIRN_OK);
    assert_int_equal(coord_image_get(f->c, iimg)->rec.state, COORD_IMAGE_READY);
    d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), hjob);
    cairn_msg_destroy(&d);
    /* the default name still resolves for a create */
    char *sb2 = make_sandbox(f, "r2", NULL, NULL, &wi);
    assert_string_equal(coord_sandbox_get(f->c, sb2)->rec.image, base);
    free(sb2);
    free(hjob);
    free(ijob);
    free(iimg);
    free(snap);
    free(sb);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_import, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_failures_and_listing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_and_placement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_collect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_fs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_death_and_registration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_records, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
