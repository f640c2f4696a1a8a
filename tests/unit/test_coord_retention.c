/*
 * test_coord_retention.c: the coordinator's side of issue 5 (docs/internals/snapshots.md): sandbox.mount,
 * sandbox.unmount, sandbox.snapshot-dir, customer-supplied keys, retention and garbage collection.
 * In-process (struct coord, real RocksDB, real CURVE sockets on 127.0.0.1), the test playing the client and
 * scripted fake workers, like test_coord_sandboxes.c.
 *
 * - Validation: every refusal of the agreement's table with its code and message, and no job made by any.
 * - Mount / unmount / snapshot-dir jobs: their params, the sandbox's `mounts`, the dir image's record
 *   (kind dir, depth 1, parent "", origin, retention, encryption), sandbox.create from a dir image.
 * - CSEK: bad key sizes, missing / wrong / misplaced keys; the DEK only in job.dispatch (with its domain),
 *   reused for the same key, new for another, none without a key; a CSEK root refused; a CSEK job queued
 *   across a restart fails with EKEY; no file under DATA_DIR holds the key or the DEK (raw or hex).
 * - Retention: sliding (a use on day 29 keeps it to day 59), fixed TTL, fs images never; expired images
 *   hidden and "expired on <UTC>"; image rm marks expired.
 * - GC: job.refs stored (unknown job: ENOTFOUND); delete-chunks jobs to every live worker with exactly the
 *   doomed ids (shared chunks of live images kept); write jobs wait while they run; owners collected after.
 */
#include "test_coord_fixture.h"

#include <dirent.h>
#include <fcntl.h>

#define DAY_S 86400ull

static int setup(void **state)
{
    cairn_log_set_level(CAIRN_LOG_WARN);
    struct fx *f = calloc(1, sizeof(*f));
    fx_files(f, "coord_ret", 2);
    fx_set(f, "test_clock", "true");
    fx_set(f, "heartbeat_timeout", "120s"); /* the fake workers do not beat */
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

/* ---- fake workers (the stash-based helpers are in test_coord_fixture.h) ------------------------------ */

static void wk_register(struct fx *f, int i)
{
    if (!f->w[i].s)
        fx_worker_connect(f, i);
    struct cairn_msg *m = fx_register_msg(f, i, f->w[i].id, f->w[i].keys.public_z85);
    cairn_msg_set_u64(m, "capacity", 16);
    struct cairn_msg *r = fx_wk_call(f, i, &m);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    cairn_msg_destroy(&r);
}

enum res_kind { RES_IMPORT, RES_CREATE, RES_LAYER, RES_EMPTY };

static int wk_result_ok(struct fx *f, int i, const char *job, enum res_kind k, const char *image)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "err_code", 0);
    struct cairn_mval *res = cairn_msg_set_map(m, "result");
    uint8_t man[72];
    memset(man, 0xab, sizeof(man));
    switch (k) {
    case RES_IMPORT:
    case RES_LAYER:
        cairn_mval_put_str(m, res, "image", image);
        cairn_mval_put_u64(m, res, "manifest_len", 4000);
        cairn_mval_put_bin(m, res, "manifest", man, 36);
        cairn_mval_put_u64(m, res, "files", 11);
        cairn_mval_put_u64(m, res, "size", 12345);
        cairn_mval_put_u64(m, res, "stored", 678);
        cairn_mval_put_u64(m, res, "capture_ms", 9);
        cairn_mval_put_u64(m, res, "pause_ms", 7);
        break;
    case RES_CREATE: cairn_mval_put_u64(m, res, "create_ms", 42); break;
    case RES_EMPTY: break;
    }
    struct cairn_msg *r = fx_wk_call(f, i, &m);
    int rc = cairn_msg_code(r);
    cairn_msg_destroy(&r);
    return rc;
}

/* job.refs from worker i: n ids (each 32 bytes of one value byte), domain dom; returns the reply code. */
static int wk_refs(struct fx *f, int i, const char *job, uint64_t seq, const uint8_t dom[16], const uint8_t *vals,
                   size_t n)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_REFS);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "seq", seq);
    cairn_msg_set_bin(m, "domain", dom, 16);
    struct cairn_mval *a = cairn_msg_set_array(m, "ids");
    for (size_t k = 0; k < n; k++) {
        uint8_t id[32];
        memset(id, vals[k], sizeof(id));
        cairn_mval_push_bin(m, a, id, sizeof(id));
    }
    struct cairn_msg *r = fx_wk_call(f, i, &m);
    int rc = cairn_msg_code(r);
    cairn_msg_destroy(&r);
    return rc;
}

/* ---- client calls ---------------------------------------------------------------------------------------- */

static char *import_image(struct fx *f, const char *upload, const char *name, int wi)
{
    static const char tar[] = "pretend this is a tarball";
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_IMAGE_IMPORT);
    cairn_msg_set_str(m, "upload", upload);
    cairn_msg_set_u64(m, "offset", 0);
    cairn_msg_set_bool(m, "last", true);
    cairn_msg_set_u64(m, "size", sizeof(tar));
    if (name)
        cairn_msg_set_str(m, "name", name);
    cairn_msg_add_frame(m, tar, sizeof(tar));
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = NULL;
    for (int tries = 0; !d && tries < 100; tries++)
        for (int i = 0; i < FX_MAX_WORKERS && !d; i++)
            if (f->w[i].s && (d = fx_wk_dispatch(f, i, 20)) != NULL)
                wi = i;
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "image-import");
    char *image = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, wi, job, RES_IMPORT, image), CAIRN_OK);
    free(job);
    return image;
}

/* A running sandbox pinned to worker wi. */
static char *make_sandbox(struct fx *f, const char *req_id, const char *image, int wi)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_CREATE);
    cairn_msg_set_str(m, "req_id", req_id);
    if (image)
        cairn_msg_set_str(m, "image", image);
    cairn_msg_set_str(m, "worker", f->w[wi].id);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), "sandbox-create");
    char *sb = strdup(fx_pstr(fx_params(d), "sandbox"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, wi, job, RES_CREATE, NULL), CAIRN_OK);
    free(job);
    return sb;
}

static struct cairn_msg *mount_req(struct fx *f, const char *sb, const char *path, const char *image,
                                   const uint8_t *key, size_t klen, bool with_key)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_MOUNT);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", path);
    if (image)
        cairn_msg_set_str(m, "image", image);
    if (with_key)
        cairn_msg_set_bin(m, "key", key ? key : (const uint8_t *)"", klen);
    return m;
}

static struct cairn_msg *snapdir_req(struct fx *f, const char *sb, const char *path, const char *req_id,
                                     const uint8_t *key, size_t klen, uint64_t ttl_s)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT_DIR);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", path);
    cairn_msg_set_str(m, "req_id", req_id);
    if (key)
        cairn_msg_set_bin(m, "key", key, klen);
    if (ttl_s)
        cairn_msg_set_u64(m, "ttl_s", ttl_s);
    return m;
}

/* Expect code and exact text. */
static void expect_text(struct fx *f, struct cairn_msg **m, int code, const char *text)
{
    struct cairn_msg *r = fx_expect(f, m, code);
    if (text && strcmp(cairn_msg_text(r) ? cairn_msg_text(r) : "", text) != 0)
        fail_msg("expected '%s', got '%s'", text, cairn_msg_text(r) ? cairn_msg_text(r) : "");
    cairn_msg_destroy(&r);
}

static void expect_prefix(struct fx *f, struct cairn_msg **m, int code, const char *prefix)
{
    struct cairn_msg *r = fx_expect(f, m, code);
    const char *t = cairn_msg_text(r) ? cairn_msg_text(r) : "";
    if (strncmp(t, prefix, strlen(prefix)) != 0)
        fail_msg("expected '%s...', got '%s'", prefix, t);
    cairn_msg_destroy(&r);
}

/* A dispatch of a mount/unmount/snapshot-dir job reaching worker wi and succeeding; returns its dispatch. */
static struct cairn_msg *run_job(struct fx *f, struct cairn_msg **m, int wi, const char *kind)
{
    struct cairn_msg *r = fx_expect(f, m, CAIRN_OK);
    assert_string_equal(fx_str(r, "kind"), kind);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, wi, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "kind"), kind);
    assert_string_equal(fx_str(d, "job"), job);
    const char *img = fx_pstr(fx_params(d), "image");
    assert_int_equal(wk_result_ok(f, wi, job, strncmp(kind, "snapshot-", 9) ? RES_EMPTY : RES_LAYER, img),
                     CAIRN_OK);
    r = fx_job_get(f, job, 0);
    if (strcmp(fx_str(r, "state"), "succeeded") != 0)
        fail_msg("job %s: %s: %s", job, fx_str(r, "state"), fx_str(r, "err_msg"));
    cairn_msg_destroy(&r);
    free(job);
    return d;
}

static void do_mount(struct fx *f, const char *sb, const char *path, const char *image, const uint8_t *key,
                     size_t klen, int wi)
{
    struct cairn_msg *m = mount_req(f, sb, path, image, key, klen, key != NULL);
    struct cairn_msg *d = run_job(f, &m, wi, "sandbox-mount");
    cairn_msg_destroy(&d);
}

/* snapshot-dir that succeeds; returns the new image id; *dek_out (32 bytes) gets the dispatched DEK if any. */
static char *do_snapdir(struct fx *f, const char *sb, const char *path, const char *req_id, const uint8_t *key,
                        size_t klen, uint64_t ttl_s, int wi, uint8_t *dek_out, bool *has_dek)
{
    struct cairn_msg *m = snapdir_req(f, sb, path, req_id, key, klen, ttl_s);
    struct cairn_msg *d = run_job(f, &m, wi, "snapshot-dir");
    char *image = strdup(fx_pstr(fx_params(d), "image"));
    const uint8_t *dek = NULL;
    size_t dl = 0;
    *has_dek = cairn_msg_get_bin(d, "dek", &dek, &dl) == CAIRN_OK;
    if (*has_dek) {
        assert_int_equal(dl, 32);
        memcpy(dek_out, dek, 32);
    }
    cairn_msg_destroy(&d);
    return image;
}

static void advance(struct fx *f, uint64_t seconds)
{
    struct cairn_msg *m = fx_admin_req(f, CAIRN_MSG_ADMIN_CLOCK_ADVANCE);
    cairn_msg_set_u64(m, "seconds", seconds);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
}

static struct cairn_msg *show(struct fx *f, const char *image, int code)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_IMAGE_SHOW);
    cairn_msg_set_str(m, "image", image);
    return fx_expect(f, &m, code);
}

static size_t nmounts(struct fx *f, const char *sb) { return coord_sandbox_get(f->c, sb)->rec.nmounts; }

/* ---- tests ------------------------------------------------------------------------------------------------ */

static void test_validation_and_jobs(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0);
    char *base = import_image(f, "base", "default", 0);
    char *sb = make_sandbox(f, "s1", NULL, 0);
    size_t jobs_before = coord_map_count(&f->c->jobs);

    static const struct {
        const char *path, *prefix;
    } bad[] = {
        {"rel/x", "mount path 'rel/x' is not absolute"},
        {"/a/../b", "mount path '/a/../b' has a '.' or '..' part"},
        {"/a/./b", "mount path '/a/./b' has a '.' or '..' part"},
        {"/a//b", "mount path '/a//b' has an empty part"},
        {"/a/", "mount path '/a/' has an empty part"},
        {"/proc/x", "mount path '/proc/x' is under /proc"},
        {"/dev", "mount path '/dev' is under /dev"},
        {"/sys/fs", "mount path '/sys/fs' is under /sys"},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(bad); i++) {
        struct cairn_msg *m = mount_req(f, sb, bad[i].path, NULL, NULL, 0, false);
        expect_prefix(f, &m, CAIRN_EINVAL, bad[i].prefix);
    }
    /* /processes is not /proc */
    struct cairn_msg *m = mount_req(f, "sb-0000000000000000", "/data", NULL, NULL, 0, false);
    expect_text(f, &m, CAIRN_ENOTFOUND, "sandbox 'sb-0000000000000000' not found");
    m = mount_req(f, sb, "/data", "im-0000000000000000", NULL, 0, false);
    expect_text(f, &m, CAIRN_ENOTFOUND, "image 'im-0000000000000000' not found");
    uint8_t key[600];
    cairn_random_bytes(key, sizeof(key));
    char msg[256];
    snprintf(msg, sizeof(msg), "image %s is not encrypted with a customer-supplied key; mount it without a key", base);
    m = mount_req(f, sb, "/data", base, key, 32, true);
    expect_text(f, &m, CAIRN_EINVAL, msg);
    m = mount_req(f, sb, "/data", base, key, 0, true);
    expect_text(f, &m, CAIRN_EINVAL, "encryption key is empty");
    m = mount_req(f, sb, "/data", base, key, 15, true);
    expect_text(f, &m, CAIRN_EINVAL, "encryption key is too short: 15 bytes (at least 16)");
    m = mount_req(f, sb, "/data", base, key, 513, true);
    expect_text(f, &m, CAIRN_EINVAL, "encryption key is too long: 513 bytes (at most 512)");
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_UNMOUNT);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", "/data");
    snprintf(msg, sizeof(msg), "no mount at /data in %s", sb);
    expect_text(f, &m, CAIRN_ENOTFOUND, msg);
    m = snapdir_req(f, sb, "/data", "d0", NULL, 0, 0);
    snprintf(msg, sizeof(msg),
             "/data in %s was not mounted with 'cairn sandbox mount': only mounted directories can be snapshotted", sb);
    expect_text(f, &m, CAIRN_EINVAL, msg);
    /* none of these made a job */
    assert_int_equal(coord_map_count(&f->c->jobs), jobs_before);
    assert_null(fx_wk_dispatch(f, 0, 100));

    /* an empty mount: no layers, no key; the record gets it */
    m = mount_req(f, sb, "/data", NULL, NULL, 0, false);
    cairn_msg_set_str(m, "req_id", "mnt1");
    struct cairn_msg *d = run_job(f, &m, 0, "sandbox-mount");
    const struct cairn_mval *p = fx_params(d);
    assert_string_equal(fx_pstr(p, "path"), "/data");
    assert_string_equal(fx_pstr(p, "sandbox"), sb);
    assert_string_equal(fx_pstr(p, "worker"), "w1");
    assert_string_equal(fx_pstr(p, "runtime_id"), coord_sandbox_get(f->c, sb)->rec.runtime_id);
    assert_null(cairn_mval_get(p, "layers"));
    assert_false(fx_pbool(p, "csek"));
    assert_null(cairn_msg_get(d, "dek"));
    assert_null(cairn_msg_get(d, "domain"));
    cairn_msg_destroy(&d);
    assert_int_equal(nmounts(f, sb), 1);
    assert_string_equal(coord_sandbox_get(f->c, sb)->rec.mounts[0].path, "/data");
    assert_string_equal(coord_sandbox_get(f->c, sb)->rec.mounts[0].image, "");
    /* the same req_id: the same job, no second mount */
    m = mount_req(f, sb, "/data", NULL, NULL, 0, false);
    cairn_msg_set_str(m, "req_id", "mnt1");
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    m = mount_req(f, sb, "/data", NULL, NULL, 0, false);
    snprintf(msg, sizeof(msg), "/data in %s is already a mount: unmount it first", sb);
    expect_text(f, &m, CAIRN_EEXIST, msg);

    /* an image mount: its layers; a nested empty mount */
    m = mount_req(f, sb, "/opt/base", base, NULL, 0, false);
    d = run_job(f, &m, 0, "sandbox-mount");
    const struct cairn_mval *layers = cairn_mval_get(fx_params(d), "layers");
    assert_non_null(layers);
    assert_int_equal(cairn_mval_len(layers), 1);
    assert_string_equal(fx_pstr(cairn_mval_at(layers, 0), "image"), base);
    cairn_msg_destroy(&d);
    do_mount(f, sb, "/data/sub", NULL, NULL, 0, 0);
    assert_int_equal(nmounts(f, sb), 3);
    /* sandbox.ls shows them */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_LS);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *arr;
    size_t n;
    assert_int_equal(cairn_msg_get_array(r, "sandboxes", &arr, &n), CAIRN_OK);
    const struct cairn_mval *mts = cairn_mval_get(cairn_mval_at(arr, 0), "mounts");
    assert_int_equal(cairn_mval_len(mts), 3);
    assert_string_equal(fx_pstr(cairn_mval_at(mts, 1), "image"), base);
    cairn_msg_destroy(&r);

    /* snapshot-dir (managed): a dir image, depth 1, no parent, origin "", sliding 30 d */
    bool has_dek = true;
    uint8_t dek[32];
    char *dir = do_snapdir(f, sb, "/data", "d1", NULL, 0, 0, 0, dek, &has_dek);
    assert_false(has_dek);
    struct coord_image *ci = coord_image_get(f->c, dir);
    assert_int_equal(ci->rec.state, COORD_IMAGE_READY);
    assert_string_equal(ci->rec.kind, "dir");
    assert_int_equal(ci->rec.depth, 1);
    assert_string_equal(ci->rec.parent, "");
    assert_string_equal(ci->rec.origin, "");
    assert_false(ci->rec.csek);
    assert_string_equal(ci->rec.retention, "sliding:2592000");
    assert_int_equal(ci->rec.expires_ns - ci->rec.last_used_ns, 30ll * 86400 * 1000000000ll);
    r = show(f, dir, CAIRN_OK);
    const struct cairn_mval *img = cairn_msg_get(r, "image");
    assert_string_equal(fx_pstr(img, "kind"), "dir");
    assert_string_equal(fx_pstr(img, "encryption"), "managed");
    assert_string_equal(fx_pstr(img, "retention"), "sliding:2592000");
    cairn_msg_destroy(&r);
    /* of an image mount: origin is that image */
    char *dir2 = do_snapdir(f, sb, "/opt/base", "d2", NULL, 0, 0, 0, dek, &has_dek);
    assert_string_equal(coord_image_get(f->c, dir2)->rec.origin, base);
    assert_string_equal(coord_image_get(f->c, dir2)->rec.parent, "");

    /* unmount /data takes /data/sub with it */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_UNMOUNT);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", "/data");
    d = run_job(f, &m, 0, "sandbox-unmount");
    assert_string_equal(fx_pstr(fx_params(d), "path"), "/data");
    cairn_msg_destroy(&d);
    assert_int_equal(nmounts(f, sb), 1);
    assert_string_equal(coord_sandbox_get(f->c, sb)->rec.mounts[0].path, "/opt/base");

    /* a dir image mounts elsewhere and is a root image */
    char *sb2 = make_sandbox(f, "s2", dir, 0);
    assert_string_equal(coord_sandbox_get(f->c, sb2)->rec.image, dir);
    do_mount(f, sb2, "/restored", dir, NULL, 0, 0);

    /* a restart keeps the mounts */
    fx_coord_stop(f);
    fx_coord_start(f);
    assert_int_equal(nmounts(f, sb), 1);
    assert_string_equal(coord_sandbox_get(f->c, sb)->rec.mounts[0].image, base);
    assert_int_equal(nmounts(f, sb2), 1);
    assert_string_equal(coord_image_get(f->c, dir)->rec.retention, "sliding:2592000");
    free(sb2);
    free(dir2);
    free(dir);
    free(sb);
    free(base);
}

/* Does any file under dir hold needle (len bytes)? */
static bool tree_contains(const char *dir, const uint8_t *needle, size_t len)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            found = tree_contains(path, needle, len);
            continue;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        size_t n = 0;
        uint8_t *buf = tu_read_file(path, &n);
        for (size_t i = 0; buf && n >= len && i <= n - len && !found; i++)
            found = buf[i] == needle[0] && !memcmp(buf + i, needle, len);
        free(buf);
    }
    closedir(d);
    return found;
}

static bool data_dir_contains(struct fx *f, const uint8_t *secret, size_t len)
{
    char hex[2 * 64 + 1];
    size_t hl = len > 64 ? 64 : len;
    cairn_hex_encode(hex, secret, hl);
    return tree_contains(tu_path("%s/data", f->dir), secret, len) ||
           tree_contains(tu_path("%s/data", f->dir), (const uint8_t *)hex, 2 * hl);
}

static void test_csek(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0);
    char *base = import_image(f, "base", "default", 0);
    char *sb = make_sandbox(f, "s1", NULL, 0);
    uint8_t k1[48], k2[200], dek1[32], dek[32];
    cairn_random_bytes(k1, sizeof(k1));
    cairn_random_bytes(k2, sizeof(k2));
    bool has_dek = false;
    do_mount(f, sb, "/secret", NULL, NULL, 0, 0);

    /* bad keys for snapshot-dir: refused before any job */
    size_t jobs_before = coord_map_count(&f->c->jobs);
    struct cairn_msg *m = snapdir_req(f, sb, "/secret", "bad1", k1, 0, 0);
    cairn_msg_set_bin(m, "key", k1, 0);
    expect_text(f, &m, CAIRN_EINVAL, "encryption key is empty");
    m = snapdir_req(f, sb, "/secret", "bad2", k2, 15, 0);
    expect_text(f, &m, CAIRN_EINVAL, "encryption key is too short: 15 bytes (at least 16)");
    uint8_t big[513];
    cairn_random_bytes(big, sizeof(big));
    m = snapdir_req(f, sb, "/secret", "bad3", big, 513, 0);
    expect_text(f, &m, CAIRN_EINVAL, "encryption key is too long: 513 bytes (at most 512)");
    assert_int_equal(coord_map_count(&f->c->jobs), jobs_before);

    /* CSEK snapshot: the DEK and its domain only in the dispatch */
    struct cairn_msg *r;
    m = snapdir_req(f, sb, "/secret", "c1", k1, sizeof(k1), 0);
    r = fx_expect(f, &m, CAIRN_OK);
    char *job1 = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    char *c1 = strdup(fx_pstr(fx_params(d), "image"));
    assert_true(fx_pbool(fx_params(d), "csek"));
    const uint8_t *b = NULL, *dom = NULL;
    size_t bl = 0, doml = 0;
    assert_int_equal(cairn_msg_get_bin(d, "dek", &b, &bl), CAIRN_OK);
    assert_int_equal(bl, 32);
    memcpy(dek1, b, 32);
    assert_int_equal(cairn_msg_get_bin(d, "domain", &dom, &doml), CAIRN_OK);
    assert_int_equal(doml, 16);
    struct cairn_domain *cd = NULL;
    assert_int_equal(cairn_domain_new(&cd, dek1), CAIRN_OK);
    assert_memory_equal(cairn_domain_id(cd), dom, 16);
    struct coord_image *ci = coord_image_get(f->c, c1);
    assert_true(ci->rec.csek);
    assert_memory_equal(ci->rec.domain, cairn_domain_id(cd), 16);
    cairn_domain_destroy(&cd);
    cairn_msg_destroy(&d);
    /* the stored job record has neither key nor DEK */
    struct coord_job_rec jr;
    assert_int_equal(coord_meta_get_job(f->c->kv, job1, &jr), CAIRN_OK);
    for (size_t i = 0; i + 16 <= jr.params_len; i++) {
        assert_false(!memcmp(jr.params + i, dek1, 16));
        assert_false(!memcmp(jr.params + i, k1, 16));
    }
    coord_job_rec_release(&jr);
    assert_int_equal(wk_result_ok(f, 0, job1, RES_LAYER, c1), CAIRN_OK);
    free(job1);
    r = show(f, c1, CAIRN_OK);
    assert_string_equal(fx_pstr(cairn_msg_get(r, "image"), "encryption"), "csek");
    cairn_msg_destroy(&r);

    /* a CSEK image as a root: refused */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_CREATE);
    cairn_msg_set_str(m, "req_id", "root");
    cairn_msg_set_str(m, "image", c1);
    char msg[300];
    snprintf(msg, sizeof(msg),
             "image %s is encrypted with a customer-supplied key: mount it into a running sandbox with its key (cairn "
             "sandbox mount)",
             c1);
    expect_text(f, &m, CAIRN_EUNSUPPORTED, msg);
    /* enable_snapshot with a GPU */
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_CREATE);
    cairn_msg_set_str(m, "req_id", "gpu");
    cairn_msg_set_u64(m, "gpu", 1);
    cairn_msg_set_bool(m, "enable_snapshot", true);
    expect_text(f, &m, CAIRN_EINVAL, "sandboxes with snapshots enabled cannot have GPUs");

    /* mount it: missing key, wrong key, then the right one (the same DEK travels) */
    jobs_before = coord_map_count(&f->c->jobs);
    m = mount_req(f, sb, "/m", c1, NULL, 0, false);
    snprintf(msg, sizeof(msg), "image %s is encrypted with a customer-supplied key: pass the same key (--key-file)",
             c1);
    expect_text(f, &m, CAIRN_EKEY, msg);
    m = mount_req(f, sb, "/m", c1, k2, sizeof(k2), true);
    snprintf(msg, sizeof(msg), "wrong encryption key for image %s", c1);
    expect_text(f, &m, CAIRN_EKEY, msg);
    m = mount_req(f, sb, "/m", c1, k2, 15, true);
    expect_text(f, &m, CAIRN_EINVAL, "encryption key is too short: 15 bytes (at least 16)");
    assert_int_equal(coord_map_count(&f->c->jobs), jobs_before);
    assert_int_equal(nmounts(f, sb), 1);
    m = mount_req(f, sb, "/m", c1, k1, sizeof(k1), true);
    d = run_job(f, &m, 0, "sandbox-mount");
    assert_true(fx_pbool(fx_params(d), "csek"));
    assert_int_equal(cairn_msg_get_bin(d, "dek", &b, &bl), CAIRN_OK);
    assert_memory_equal(b, dek1, 32);
    assert_int_equal(cairn_mval_len(cairn_mval_get(fx_params(d), "layers")), 1);
    cairn_msg_destroy(&d);
    assert_int_equal(nmounts(f, sb), 2);
    assert_true(coord_sandbox_get(f->c, sb)->rec.mounts[1].csek);
    assert_string_equal(coord_sandbox_get(f->c, sb)->rec.mounts[1].image, c1);

    /* re-snapshot: same key reuses the DEK, another key a new one, no key managed */
    char *c2 = do_snapdir(f, sb, "/m", "c2", k1, sizeof(k1), 0, 0, dek, &has_dek);
    assert_true(has_dek);
    assert_memory_equal(dek, dek1, 32);
    assert_memory_equal(coord_image_get(f->c, c2)->rec.domain, coord_image_get(f->c, c1)->rec.domain, 16);
    assert_memory_not_equal(coord_image_get(f->c, c2)->rec.wrapped_dek, coord_image_get(f->c, c1)->rec.wrapped_dek,
                            COORD_WRAPPED_DEK_LEN);
    assert_string_equal(coord_image_get(f->c, c2)->rec.origin, c1);
    char *c3 = do_snapdir(f, sb, "/m", "c3", k2, sizeof(k2), 0, 0, dek, &has_dek);
    assert_true(has_dek);
    assert_memory_not_equal(dek, dek1, 32);
    assert_true(coord_image_get(f->c, c3)->rec.csek);
    char *c4 = do_snapdir(f, sb, "/m", "c4", NULL, 0, 0, 0, dek, &has_dek);
    assert_false(has_dek);
    assert_false(coord_image_get(f->c, c4)->rec.csek);
    const uint8_t *appdom = NULL;
    assert_int_equal(coord_app_domain(f->c, coord_app_find(f->c, "app1"), &appdom), CAIRN_OK);
    assert_memory_equal(coord_image_get(f->c, c4)->rec.domain, appdom, 16);
    /* c3 mounts with k2 only */
    m = mount_req(f, sb, "/m3", c3, k1, sizeof(k1), true);
    snprintf(msg, sizeof(msg), "wrong encryption key for image %s", c3);
    expect_text(f, &m, CAIRN_EKEY, msg);
    do_mount(f, sb, "/m3", c3, k2, sizeof(k2), 0);

    /* a CSEK job queued across a restart fails with EKEY */
    m = snapdir_req(f, sb, "/m", "c5", k1, sizeof(k1), 0);
    r = fx_expect(f, &m, CAIRN_OK);
    char *job5 = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch_ack(f, 0, 3000, CAIRN_EBUSY);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), job5);
    cairn_msg_destroy(&d);
    for (int i = 0; i < 200 && coord_job_find(f->c, job5)->rec.state != COORD_JOB_QUEUED; i++)
        fx_pump(f, 1);
    assert_int_equal(coord_job_find(f->c, job5)->rec.state, COORD_JOB_QUEUED);
    uint8_t wrapped[COORD_WRAPPED_DEK_LEN];
    memcpy(wrapped, coord_image_get(f->c, c1)->rec.wrapped_dek, sizeof(wrapped));
    fx_coord_stop(f);
    fx_coord_start(f);
    assert_true(coord_image_get(f->c, c1)->rec.csek);
    assert_memory_equal(coord_image_get(f->c, c1)->rec.wrapped_dek, wrapped, sizeof(wrapped));
    assert_false(coord_image_get(f->c, c4)->rec.csek);
    assert_true(coord_sandbox_get(f->c, sb)->rec.mounts[1].csek);
    wk_register(f, 0);
    for (int i = 0; i < 100 && coord_job_find(f->c, job5); i++)
        fx_pump(f, 10);
    r = fx_job_get(f, job5, 0);
    assert_string_equal(fx_str(r, "state"), "failed");
    assert_int_equal(fx_u64(r, "err_code"), CAIRN_EKEY);
    assert_string_equal(fx_str(r, "err_msg"),
                        "the coordinator restarted before this job ran; the key is not kept anywhere: retry with the key");
    cairn_msg_destroy(&r);
    assert_null(fx_wk_dispatch(f, 0, 100));
    free(job5);

    /* nothing under DATA_DIR holds a key or a DEK */
    fx_coord_stop(f);
    assert_false(data_dir_contains(f, k1, sizeof(k1)));
    assert_false(data_dir_contains(f, k2, sizeof(k2)));
    assert_false(data_dir_contains(f, dek1, sizeof(dek1)));
    assert_false(data_dir_contains(f, dek, sizeof(dek)));
    fx_coord_start(f);
    free(c1);
    free(c2);
    free(c3);
    free(c4);
    free(sb);
    free(base);
}

static void test_retention(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0);
    char *base = import_image(f, "base", "default", 0);
    char *sb = make_sandbox(f, "s1", NULL, 0);
    do_mount(f, sb, "/d", NULL, NULL, 0, 0);
    bool has_dek;
    uint8_t dek[32];
    char *sliding = do_snapdir(f, sb, "/d", "r1", NULL, 0, 0, 0, dek, &has_dek);
    char *ttl = do_snapdir(f, sb, "/d", "r2", NULL, 0, 10 * DAY_S, 0, dek, &has_dek);
    assert_string_equal(coord_image_get(f->c, ttl)->rec.retention, "ttl:864000");
    /* an fs snapshot: never */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT_FS);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "req_id", "fs1");
    struct cairn_msg *d = run_job(f, &m, 0, "snapshot-fs");
    char *fs = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    int64_t ttl_exp = coord_image_get(f->c, ttl)->rec.expires_ns;

    /* day 9: a use of each moves the sliding one only */
    advance(f, 9 * DAY_S);
    do_mount(f, sb, "/u1", ttl, NULL, 0, 0);
    assert_int_equal(coord_image_get(f->c, ttl)->rec.expires_ns, ttl_exp);
    /* day 11: the TTL one expired */
    advance(f, 2 * DAY_S);
    assert_int_equal(coord_image_get(f->c, ttl)->rec.state, COORD_IMAGE_EXPIRED);
    struct cairn_msg *r = show(f, ttl, CAIRN_ENOTFOUND);
    char want[128], when[32];
    coord_format_utc(ttl_exp, when);
    snprintf(want, sizeof(want), "image %s expired on %s", ttl, when);
    assert_string_equal(cairn_msg_text(r), want);
    assert_int_equal(strlen(when), 20);
    assert_int_equal(when[10], 'T');
    cairn_msg_destroy(&r);
    m = mount_req(f, sb, "/u2", ttl, NULL, 0, false);
    expect_text(f, &m, CAIRN_ENOTFOUND, want);

    /* day 29: mounting the sliding one keeps it to day 59 */
    advance(f, 18 * DAY_S);
    do_mount(f, sb, "/u3", sliding, NULL, 0, 0);
    advance(f, 29 * DAY_S); /* day 58 */
    r = show(f, sliding, CAIRN_OK);
    cairn_msg_destroy(&r);
    /* a sandbox created from it on day 58 is a use too: to day 88 */
    char *sb2 = make_sandbox(f, "s2", sliding, 0);
    advance(f, 29 * DAY_S); /* day 87 */
    r = show(f, sliding, CAIRN_OK);
    cairn_msg_destroy(&r);
    advance(f, 2 * DAY_S); /* day 89 */
    r = show(f, sliding, CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_msg_text(r), "expired on"));
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_LS);
    cairn_msg_set_str(m, "kind", "dir");
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *arr;
    size_t n;
    assert_int_equal(cairn_msg_get_array(r, "images", &arr, &n), CAIRN_OK);
    assert_int_equal(n, 0);
    cairn_msg_destroy(&r);
    /* fs and base: never */
    advance(f, 400 * DAY_S);
    r = show(f, fs, CAIRN_OK);
    cairn_msg_destroy(&r);
    r = show(f, base, CAIRN_OK);
    cairn_msg_destroy(&r);
    /* image rm: expired (a tombstone), say so */
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", fs);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    assert_int_equal(coord_image_get(f->c, fs)->rec.state, COORD_IMAGE_EXPIRED);
    r = show(f, fs, CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_msg_text(r), "expired on"));
    cairn_msg_destroy(&r);
    /* the state survives a restart */
    fx_coord_stop(f);
    fx_coord_start(f);
    assert_int_equal(coord_image_get(f->c, sliding)->rec.state, COORD_IMAGE_EXPIRED);
    assert_int_equal(coord_image_get(f->c, fs)->rec.state, COORD_IMAGE_EXPIRED);
    free(sb2);
    free(fs);
    free(ttl);
    free(sliding);
    free(sb);
    free(base);
}

/* The ids (first byte of each) of a delete-chunks dispatch, sorted. */
static size_t delete_ids(const struct cairn_msg *d, uint8_t *out, uint8_t dom[16])
{
    const struct cairn_mval *p = fx_params(d);
    const uint8_t *b = NULL, *db = NULL;
    size_t bl = 0, dl = 0;
    assert_int_equal(cairn_mval_bin(cairn_mval_get(p, "ids"), &b, &bl), CAIRN_OK);
    assert_int_equal(cairn_mval_bin(cairn_mval_get(p, "domain"), &db, &dl), CAIRN_OK);
    assert_int_equal(dl, 16);
    memcpy(dom, db, 16);
    assert_int_equal(bl % 32, 0);
    for (size_t i = 0; i < bl / 32; i++)
        out[i] = b[i * 32];
    return bl / 32;
}

static void test_gc(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0);
    wk_register(f, 1);
    char *base = import_image(f, "base", "default", 0);
    char *sb = make_sandbox(f, "s1", NULL, 0);
    do_mount(f, sb, "/d", NULL, NULL, 0, 0);
    const uint8_t *dom = NULL;
    assert_int_equal(coord_app_domain(f->c, coord_app_find(f->c, "app1"), &dom), CAIRN_OK);

    /* job.refs of an unknown job */
    static const uint8_t v1[] = {1};
    assert_int_equal(wk_refs(f, 0, "jb-0000000000000000", 0, dom, v1, 1), CAIRN_ENOTFOUND);

    /* A (ttl 1 d): 0x10 0x11 0x20 (0x20 shared); B (sliding): 0x20 0x30; refs in two batches, one resent */
    static const uint8_t a0[] = {0x10, 0x20}, a1[] = {0x11}, b0[] = {0x20, 0x30};
    char *imgs[2];
    for (int k = 0; k < 2; k++) {
        struct cairn_msg *m = snapdir_req(f, sb, "/d", k ? "gb" : "ga", NULL, 0, k ? 0 : DAY_S);
        struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
        char *job = strdup(fx_str(r, "job"));
        cairn_msg_destroy(&r);
        struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
        assert_non_null(d);
        imgs[k] = strdup(fx_pstr(fx_params(d), "image"));
        cairn_msg_destroy(&d);
        /* from another worker: refused */
        assert_int_equal(wk_refs(f, 1, job, 0, dom, a0, 2), CAIRN_EPERM);
        if (!k) {
            assert_int_equal(wk_refs(f, 0, job, 0, dom, a0, 2), CAIRN_OK);
            assert_int_equal(wk_refs(f, 0, job, 1, dom, a1, 1), CAIRN_OK);
            assert_int_equal(wk_refs(f, 0, job, 1, dom, a1, 1), CAIRN_OK); /* a resend replaces */
        } else {
            assert_int_equal(wk_refs(f, 0, job, 0, dom, b0, 2), CAIRN_OK);
        }
        assert_int_equal(wk_result_ok(f, 0, job, RES_LAYER, imgs[k]), CAIRN_OK);
        /* after its end: ENOTFOUND */
        assert_int_equal(wk_refs(f, 0, job, 2, dom, a1, 1), CAIRN_ENOTFOUND);
        free(job);
    }
    assert_true(coord_refs_exist(f->c, imgs[0]));
    assert_true(coord_refs_exist(f->c, imgs[1]));

    /* A expires: a collection; delete-chunks on both workers with exactly 0x10 0x11 */
    advance(f, 2 * DAY_S);
    assert_int_equal(coord_image_get(f->c, imgs[0])->rec.state, COORD_IMAGE_EXPIRED);
    assert_true(f->c->gc_active);
    struct cairn_msg *dels[2];
    char *djobs[2];
    for (int i = 0; i < 2; i++) {
        dels[i] = fx_wk_dispatch(f, i, 3000);
        assert_non_null(dels[i]);
        assert_string_equal(fx_str(dels[i], "kind"), "delete-chunks");
        assert_string_equal(fx_pstr(fx_params(dels[i]), "worker"), f->w[i].id);
        uint8_t ids[8], dd[16];
        assert_int_equal(delete_ids(dels[i], ids, dd), 2);
        assert_int_equal(ids[0], 0x10);
        assert_int_equal(ids[1], 0x11);
        assert_memory_equal(dd, dom, 16);
        djobs[i] = strdup(fx_str(dels[i], "job"));
    }
    /* the barrier: a write job waits while the deletes run; other jobs go */
    struct cairn_msg *m = snapdir_req(f, sb, "/d", "gc", NULL, 0, 0);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *wjob = strdup(fx_str(r, "job"));
    assert_string_equal(fx_str(r, "state"), "queued");
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_UNMOUNT);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", "/nothing");
    expect_text(f, &m, CAIRN_ENOTFOUND, NULL);
    do_mount(f, sb, "/e", NULL, NULL, 0, 0); /* not a write job: dispatched */
    assert_null(fx_wk_dispatch(f, 0, 200));
    assert_int_equal(wk_result_ok(f, 0, djobs[0], RES_EMPTY, NULL), CAIRN_OK);
    assert_null(fx_wk_dispatch(f, 0, 200));
    assert_false(coord_image_get(f->c, imgs[0])->rec.collected);
    assert_int_equal(wk_result_ok(f, 1, djobs[1], RES_EMPTY, NULL), CAIRN_OK);
    /* collected: A's refs gone, B's kept; the write job goes */
    assert_false(f->c->gc_active);
    assert_true(coord_image_get(f->c, imgs[0])->rec.collected);
    assert_false(coord_refs_exist(f->c, imgs[0]));
    assert_true(coord_refs_exist(f->c, imgs[1]));
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    assert_string_equal(fx_str(d, "job"), wjob);
    char *wimg = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    assert_int_equal(wk_result_ok(f, 0, wjob, RES_LAYER, wimg), CAIRN_OK);
    /* a collected image stays "expired" */
    r = show(f, imgs[0], CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_msg_text(r), "expired on"));
    cairn_msg_destroy(&r);
    /* nothing more to collect */
    coord_retention_sweep(f->c);
    assert_false(f->c->gc_active);
    assert_null(fx_wk_dispatch(f, 1, 200));

    /* B removed while mounted: kept until unmounted; a failed write job's refs are collected too */
    do_mount(f, sb, "/b", imgs[1], NULL, 0, 0);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", imgs[1]);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    coord_retention_sweep(f->c);
    assert_false(f->c->gc_active);
    m = snapdir_req(f, sb, "/d", "gfail", NULL, 0, 0);
    r = fx_expect(f, &m, CAIRN_OK);
    char *fjob = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    char *fimg = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    static const uint8_t f0[] = {0x40, 0x30};
    assert_int_equal(wk_refs(f, 0, fjob, 0, dom, f0, 2), CAIRN_OK);
    m = fx_worker_req(f, 0, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", fjob);
    cairn_msg_set_u64(m, "err_code", CAIRN_EIO);
    cairn_msg_set_str(m, "err_msg", "disk full");
    r = fx_wk_call(f, 0, &m);
    cairn_msg_destroy(&r);
    assert_int_equal(coord_image_get(f->c, fimg)->rec.state, COORD_IMAGE_EXPIRED);
    r = show(f, fimg, CAIRN_ENOTFOUND);
    assert_string_equal(cairn_msg_text(r), tu_path("image '%s' not found", fimg));
    cairn_msg_destroy(&r);
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_UNMOUNT);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", "/b");
    d = run_job(f, &m, 0, "sandbox-unmount");
    cairn_msg_destroy(&d);
    coord_retention_sweep(f->c);
    assert_true(f->c->gc_active);
    /* doomed: 0x20 (B; A's is gone) 0x30 0x40; the new image wimg has no refs reported */
    for (int i = 0; i < 2; i++) {
        d = fx_wk_dispatch(f, i, 3000);
        assert_non_null(d);
        uint8_t ids[8], dd[16];
        assert_int_equal(delete_ids(d, ids, dd), 3);
        assert_int_equal(ids[0], 0x20);
        assert_int_equal(ids[1], 0x30);
        assert_int_equal(ids[2], 0x40);
        assert_int_equal(wk_result_ok(f, i, fx_str(d, "job"), RES_EMPTY, NULL), CAIRN_OK);
        cairn_msg_destroy(&d);
    }
    assert_false(f->c->gc_active);
    assert_true(coord_image_get(f->c, imgs[1])->rec.collected);
    assert_null(coord_image_get(f->c, fimg)); /* a dropped pending image's tombstone goes */
    free(fimg);
    free(fjob);
    free(wimg);
    free(wjob);
    for (int i = 0; i < 2; i++) {
        cairn_msg_destroy(&dels[i]);
        free(djobs[i]);
        free(imgs[i]);
    }
    free(sb);
    free(base);
}

static void terminate(struct fx *f, const char *sb, int wi)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_TERMINATE);
    cairn_msg_set_str(m, "sandbox", sb);
    struct cairn_msg *d = run_job(f, &m, wi, "sandbox-terminate");
    cairn_msg_destroy(&d);
    assert_int_equal(coord_sandbox_get(f->c, sb)->rec.state, COORD_SBX_TERMINATED);
}

/* An expired fs image stays while a live image is layered on it, and while a sandbox runs on it. */
static void test_gc_dependencies(void **state)
{
    struct fx *f = *state;
    wk_register(f, 0);
    char *base = import_image(f, "base", "default", 0);
    const uint8_t *dom = NULL;
    assert_int_equal(coord_app_domain(f->c, coord_app_find(f->c, "app1"), &dom), CAIRN_OK);
    char *sb = make_sandbox(f, "s1", NULL, 0);
    /* P: fs on base, ttl 1 d, refs 0x50 0x51 */
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT_FS);
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "req_id", "p");
    cairn_msg_set_u64(m, "ttl_s", DAY_S);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    char *job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *d = fx_wk_dispatch(f, 0, 3000);
    char *p = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    static const uint8_t pr[] = {0x50, 0x51};
    assert_int_equal(wk_refs(f, 0, job, 0, dom, pr, 2), CAIRN_OK);
    assert_int_equal(wk_result_ok(f, 0, job, RES_LAYER, p), CAIRN_OK);
    free(job);
    /* C: fs on P (no ttl), refs 0x51 0x52 */
    char *sbp = make_sandbox(f, "s2", p, 0);
    m = fx_app_req(f, CAIRN_MSG_SANDBOX_SNAPSHOT_FS);
    cairn_msg_set_str(m, "sandbox", sbp);
    cairn_msg_set_str(m, "req_id", "c");
    r = fx_expect(f, &m, CAIRN_OK);
    job = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    d = fx_wk_dispatch(f, 0, 3000);
    char *ch = strdup(fx_pstr(fx_params(d), "image"));
    cairn_msg_destroy(&d);
    static const uint8_t cr[] = {0x51, 0x52};
    assert_int_equal(wk_refs(f, 0, job, 0, dom, cr, 2), CAIRN_OK);
    assert_int_equal(wk_result_ok(f, 0, job, RES_LAYER, ch), CAIRN_OK);
    free(job);
    assert_string_equal(coord_image_get(f->c, ch)->rec.parent, p);
    terminate(f, sbp, 0);

    /* P expires: kept (C sits on it); C still makes sandboxes (its chain holds the expired P) */
    advance(f, 2 * DAY_S);
    assert_int_equal(coord_image_get(f->c, p)->rec.state, COORD_IMAGE_EXPIRED);
    assert_false(f->c->gc_active);
    char *sbc = make_sandbox(f, "s3", ch, 0);
    /* C removed while a sandbox runs on it: both kept */
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", ch);
    expect_text(f, &m, CAIRN_EBUSY, NULL);
    terminate(f, sbc, 0);
    m = fx_app_req(f, CAIRN_MSG_IMAGE_RM);
    cairn_msg_set_str(m, "image", ch);
    r = fx_expect(f, &m, CAIRN_OK);
    cairn_msg_destroy(&r);
    /* now both go, in one collection: 0x50 0x51 0x52 */
    coord_retention_sweep(f->c);
    assert_true(f->c->gc_active);
    d = fx_wk_dispatch(f, 0, 3000);
    assert_non_null(d);
    uint8_t ids[8], dd[16];
    assert_int_equal(delete_ids(d, ids, dd), 3);
    assert_int_equal(ids[0], 0x50);
    assert_int_equal(ids[1], 0x51);
    assert_int_equal(ids[2], 0x52);
    assert_int_equal(wk_result_ok(f, 0, fx_str(d, "job"), RES_EMPTY, NULL), CAIRN_OK);
    cairn_msg_destroy(&d);
    assert_true(coord_image_get(f->c, p)->rec.collected);
    assert_true(coord_image_get(f->c, ch)->rec.collected);
    free(sbc);
    free(ch);
    free(sbp);
    free(p);
    free(sb);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_validation_and_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_csek, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_dependencies, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
