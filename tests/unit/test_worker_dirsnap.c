/*
 * test_worker_dirsnap.c: the worker side of directory snapshots and CSEK (docs/internals/snapshots.md:
 * sandbox-mount, sandbox-unmount, snapshot-dir, delete-chunks, job.refs, the DEK in job.dispatch) with
 * real runsc sandboxes, real RocksDB stores and real CURVE sockets, against a scripted coordinator played
 * by the test: the fixture of test_worker_fixture.h (workers in threads of this process, the coordinator
 * answering register/heartbeat/upload.read/job.output), with job.refs recorded per job.
 *
 * Pinned down:
 * - image-import and snapshot-dir send job.refs (seq 0, 1, ...; the job's domain) covering exactly the
 *   tree's chunks (manifest + data); an error reply to job.refs fails the job;
 * - mount of an empty dir, writes, snapshot-dir of it (a mount below it left out); a path that is not a
 *   mount is refused (EINVAL); a second mount at the same path is EEXIST;
 * - mount of an image shows its files, writable; its snapshot-dir mounted into a sandbox on another worker
 *   shows the changes; unmount reveals what was below (and a resent unmount succeeds);
 * - CSEK: snapshot-dir with a DEK in the dispatch stores in the CSEK domain (refs say so; a re-snapshot
 *   with the same DEK dedups, one without a DEK is managed); mounting it
 *   needs that DEK (none: EKEY; managed domain: fails; another DEK: EKEY "data key does not match domain");
 *   its layer lives under DATA_DIR/private/<runtime id>, removed at unmount and terminate, and at worker
 *   start for sandboxes that are not re-adopted (kept for those that are); afterwards no file under any
 *   worker's data dir holds the DEK (raw, lower or upper hex);
 * - delete-chunks removes exactly the given ids (missing ones are fine) and reports how many it held.
 * Needs root, runsc and /bin/busybox (busybox-static); otherwise every test is skipped with a loud line.
 */
#include "test_worker_fixture.h"

#include "cairn/alloc.h"
#include "cairn/archive.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/proto.h"
#include "cairn/store.h"
#include "cairn/transport.h"
#include "cairn/tree.h"

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMG_BASE "im-00000000000000c1"
#define IMG_D1 "im-00000000000000d1"
#define IMG_D2 "im-00000000000000d2"
#define IMG_C1 "im-00000000000000e1"
#define RID1 "aaaa1111111111111111111111111111"
#define RID2 "aaaa2222222222222222222222222222"
#define RID_FAKE "aaaaffffffffffffffffffffffffffff"

/* what the tests hand on to each other */
static struct {
    uint8_t dek[CAIRN_KEY_BYTES], dek2[CAIRN_KEY_BYTES];
    uint8_t csek_dom[CAIRN_DOMAIN_ID_BYTES];
    struct cairn_msg *import_res, *d1_res, *d2_res, *c1_res;
    int log_fd;
} g;

static int g_job_seq;

static const char *next_job(const char *tag)
{
    static char buf[8][48];
    char *b = buf[g_job_seq % 8];
    snprintf(b, sizeof(buf[0]), "jb-%s-%d", tag, ++g_job_seq);
    return b;
}

static void create(const char *worker, const char *rid)
{
    const char *job = next_job("create");
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-create", &p);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "runtime_id", rid);
    struct cairn_mval *layers = cairn_mval_put_array(m, p, "layers");
    push_layer(m, layers, IMG_BASE, g.import_res);
    dispatch(worker, m);
    expect_ok(job, 60000);
}

static void terminate(const char *worker, const char *rid)
{
    const char *job = next_job("term");
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-terminate", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    dispatch(worker, m);
    expect_ok(job, 60000);
}

/* The dispatch of a sandbox-mount; layer image/res NULL: an empty mount. dek: CSEK (with g.csek_dom). */
static struct cairn_msg *mount_msg(const char *job, const char *rid, const char *path, const char *image,
                                   struct cairn_msg *from, bool csek, const uint8_t *dek)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-mount", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "path", path);
    cairn_mval_put_bool(m, p, "csek", csek);
    if (image) {
        struct cairn_mval *layers = cairn_mval_put_array(m, p, "layers");
        push_layer(m, layers, image, from);
    }
    if (dek) {
        cairn_msg_set_bin(m, "domain", g.csek_dom, CAIRN_DOMAIN_ID_BYTES);
        cairn_msg_set_bin(m, "dek", dek, CAIRN_KEY_BYTES);
    }
    return m;
}

static void mount_ok(const char *worker, const char *rid, const char *path, const char *image,
                     struct cairn_msg *from, const uint8_t *dek)
{
    const char *job = next_job("mount");
    dispatch(worker, mount_msg(job, rid, path, image, from, dek != NULL, dek));
    struct cairn_msg *r = expect_ok(job, 60000);
    (void)result_u64(r, "mount_ms");
    (void)result_u64(r, "fetched_chunks");
    (void)result_u64(r, "fetched_bytes");
}

static void unmount_ok(const char *worker, const char *rid, const char *path)
{
    const char *job = next_job("unmount");
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "sandbox-unmount", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "path", path);
    dispatch(worker, m);
    expect_ok(job, 30000);
}

static struct cairn_msg *snapshot_dir_msg(const char *job, const char *rid, const char *path, const char *image,
                                          const uint8_t *dek)
{
    struct cairn_mval *p;
    struct cairn_msg *m = job_new(job, "snapshot-dir", &p);
    cairn_mval_put_str(m, p, "runtime_id", rid);
    cairn_mval_put_str(m, p, "sandbox", "sb-test");
    cairn_mval_put_str(m, p, "path", path);
    cairn_mval_put_str(m, p, "image", image);
    if (dek) {
        cairn_msg_set_bin(m, "domain", g.csek_dom, CAIRN_DOMAIN_ID_BYTES);
        cairn_msg_set_bin(m, "dek", dek, CAIRN_KEY_BYTES);
    }
    return m;
}

/* sh -c script in a sandbox through a sandbox-exec job; returns the exit code; *o: its output. */
static int sh_job(const char *worker, const char *rid, const char *script, struct out **o)
{
    const char *job = next_job("sh");
    char jb[48];
    snprintf(jb, sizeof(jb), "%s", job);
    return sh_job_as(worker, jb, rid, script, o);
}

/* Run script; it must exit 0 and print exactly `want` (NULL: anything). */
static void sh_expect(const char *worker, const char *rid, const char *script, const char *want)
{
    struct out *o = NULL;
    int code = sh_job(worker, rid, script, &o);
    if (code != 0)
        fail_msg("'%s' in %s exited %d: %s", script, rid, code, out_str(o, 1));
    if (want && strcmp(out_str(o, 0), want) != 0)
        fail_msg("'%s' in %s printed '%s', expected '%s'", script, rid, out_str(o, 0), want);
}

/* ---- the set of ids a tree should have in refs ---- */

static bool ids_have(const uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES], size_t n, const uint8_t *id)
{
    for (size_t i = 0; i < n; i++)
        if (!memcmp(ids[i], id, CAIRN_CHUNK_ID_BYTES))
            return true;
    return false;
}

/* refs of job: one domain, seq in order, no duplicate id. */
static struct refs *refs_check(const char *job, const uint8_t *dom)
{
    struct refs *x = refs_of(job, false);
    if (!x)
        fail_msg("no job.refs from %s", job);
    assert_false(x->bad_seq);
    assert_false(x->dom_mixed);
    assert_memory_equal(x->dom, dom, CAIRN_DOMAIN_ID_BYTES);
    for (size_t i = 0; i < x->n; i++)
        assert_false(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, i, x->ids[i]));
    return x;
}

/* Every manifest chunk of a result's layer reference is in refs; returns how many distinct ones. */
static size_t refs_cover_manifest(struct refs *x, struct cairn_msg *r)
{
    const uint8_t *man = NULL;
    size_t ml = 0, distinct = 0;
    assert_int_equal(cairn_mval_bin(result_field(r, "manifest"), &man, &ml), CAIRN_OK);
    for (size_t i = 0; i < ml / 36; i++) {
        assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, man + i * 36));
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = !memcmp(man + k * 36, man + i * 36, CAIRN_CHUNK_ID_BYTES);
        distinct += !seen;
    }
    return distinct;
}

/* ---- setup ---- */

/* every log line at debug level into a file, searched for the DEK at the end */
static void open_log(void)
{
    if (getenv("CAIRN_TEST_LOG"))
        return;
    g.log_fd = open(tu_path("%s/test.log", wf.dir), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    assert_true(g.log_fd >= 0);
    cairn_log_set_fd(g.log_fd);
}

static int group_setup(void **state)
{
    (void)state;
    static const char *const applets[] = {"sh", "echo", "cat", "ls", "sleep", "true", "rm", "mkdir", "printf", "test",
                                          "mv", NULL};
    static const char *const rids[] = {RID1, RID2};
    const struct wf_opts o = {
        .tag = "worker-dirsnap",
        .log_level = CAIRN_LOG_DEBUG,
        .on_dir = open_log,
        .master_seed = 29,
        .applets = applets,
        .srv_old = true,
        .caps = {4, 4, 4},
        .piece_cap = 0,
        .record_refs = true,
        .stop_pump_ms = 1000,
        .rids = rids,
        .nrids = CAIRN_ARRAY_LEN(rids),
    };
    if (!wf_setup(&o))
        return 0;
    /* the DEKs: random (a fixed seed would make them searchable in earlier runs' leftovers) */
    cairn_random_bytes(g.dek, sizeof(g.dek));
    cairn_random_bytes(g.dek2, sizeof(g.dek2));
    struct cairn_domain *cd = NULL;
    assert_int_equal(cairn_domain_new(&cd, g.dek), CAIRN_OK);
    memcpy(g.csek_dom, cairn_domain_id(cd), CAIRN_DOMAIN_ID_BYTES);
    cairn_domain_destroy(&cd);
    for (size_t i = 0; i < WF_NW; i++)
        node_start_thread(&wf.nodes[i]);
    WAIT_FOR(wf.fc.w[0].heartbeats > 0 && wf.fc.w[1].heartbeats > 0 && wf.fc.w[2].heartbeats > 0, 15000);
    fc_pump(300); /* the membership with three workers reaches everyone */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int ret = wf_stop();
    if (g.log_fd > 0) {
        cairn_log_set_fd(2);
        if (ret != 0)
            tu_sh("tail -30 '%s/test.log' >&2", wf.dir);
        close(g.log_fd);
    }
    memset(g.dek, 0, sizeof(g.dek));
    memset(g.dek2, 0, sizeof(g.dek2));
    wf_release();
    return ret;
}

static void managed_dom(uint8_t out[CAIRN_DOMAIN_ID_BYTES])
{
    struct cairn_domain *d = NULL;
    assert_int_equal(cairn_domain_new_managed(&d, wf.master, "default"), CAIRN_OK);
    memcpy(out, cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES);
    cairn_domain_destroy(&d);
}

/* The id of a chunk holding exactly data (files under the chunker's minimum are one chunk). */
static void chunk_id_of(const uint8_t *dek, const char *data, uint8_t out[CAIRN_CHUNK_ID_BYTES])
{
    struct cairn_domain *d = NULL;
    if (dek)
        assert_int_equal(cairn_domain_new(&d, dek), CAIRN_OK);
    else
        assert_int_equal(cairn_domain_new_managed(&d, wf.master, "default"), CAIRN_OK);
    cairn_chunk_id(d, (const uint8_t *)data, strlen(data), out);
    cairn_domain_destroy(&d);
}

/* How many workers hold id (domain dom), by chunk-has jobs. */
static int holders(const uint8_t *dom, const uint8_t *id)
{
    char dhex[33], hex[65];
    cairn_hex_encode(dhex, dom, CAIRN_DOMAIN_ID_BYTES);
    cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
    int n = 0;
    for (size_t w = 0; w < WF_NW; w++) {
        const char *job = next_job("has");
        char jb[48];
        snprintf(jb, sizeof(jb), "%s", job);
        struct cairn_mval *p;
        struct cairn_msg *m = job_new(jb, "chunk-has", &p);
        cairn_mval_put_str(m, p, "domain", dhex);
        struct cairn_mval *arr = cairn_mval_put_array(m, p, "ids");
        cairn_mval_push_str(m, arr, hex);
        dispatch(wf.nodes[w].id, m);
        bool b = false;
        assert_int_equal(cairn_mval_bool(cairn_mval_at(result_field(expect_ok(jb, 5000), "held"), 0), &b), CAIRN_OK);
        n += b;
    }
    return n;
}

/* ---- tests ---- */

static void test_import_refs(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    add_upload("jb-import", wf.tar, wf.tar_len);
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-import", "image-import", &p);
    cairn_mval_put_str(m, p, "image", IMG_BASE);
    dispatch("w1", m);
    g.import_res = expect_ok("jb-import", 30000);
    assert_int_equal(result_u64(g.import_res, "manifest_len"), wf.base.manifest_len);
    /* refs: exactly the tree's chunks (manifest + data), in the managed domain */
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES];
    managed_dom(dom);
    struct refs *x = refs_check("jb-import", dom);
    assert_int_equal(x->n, wf.n_base_ids);
    for (size_t i = 0; i < wf.n_base_ids; i++)
        assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, wf.base_ids[i]));
    create("w1", RID1);
}

static void test_mount_empty(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    mount_ok("w1", RID1, "/data", NULL, NULL, NULL);
    mount_ok("w1", RID1, "/data/inner", NULL, NULL, NULL); /* a mount below: left out of the snapshot */
    sh_expect("w1", RID1,
              "mkdir -p /data/sub && printf 'hello-dir' > /data/a && printf 'x-file' > /data/sub/b && "
              "printf 'inner' > /data/inner/z && cat /data/a",
              "hello-dir");
    /* the same path again: EEXIST */
    const char *job = next_job("mount");
    dispatch("w1", mount_msg(job, RID1, "/data", NULL, NULL, false, NULL));
    expect_err(job, 10000, CAIRN_EEXIST, NULL);
    /* a path that was not mounted: refused */
    job = next_job("sd");
    dispatch("w1", snapshot_dir_msg(job, RID1, "/srv", IMG_D2, NULL));
    expect_err(job, 10000, CAIRN_EINVAL, "was not mounted with 'cairn sandbox mount'");

    dispatch("w1", snapshot_dir_msg("jb-sd1", RID1, "/data", IMG_D1, NULL));
    g.d1_res = expect_ok("jb-sd1", 30000);
    assert_int_equal(result_u64(g.d1_res, "files"), 2); /* a, sub/b; not inner/z */
    assert_int_equal(result_u64(g.d1_res, "size"), 9 + 6);
    (void)result_u64(g.d1_res, "capture_ms");
    (void)result_u64(g.d1_res, "stored");
    const char *img = NULL;
    size_t il = 0;
    assert_int_equal(cairn_mval_str(result_field(g.d1_res, "image"), &img, &il), CAIRN_OK);
    assert_string_equal(img, IMG_D1);
    /* refs: the manifest chunks + the two file chunks, nothing else */
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES], ca[CAIRN_CHUNK_ID_BYTES], cb[CAIRN_CHUNK_ID_BYTES], cz[CAIRN_CHUNK_ID_BYTES];
    managed_dom(dom);
    struct refs *x = refs_check("jb-sd1", dom);
    size_t nman = refs_cover_manifest(x, g.d1_res);
    chunk_id_of(NULL, "hello-dir", ca);
    chunk_id_of(NULL, "x-file", cb);
    chunk_id_of(NULL, "inner", cz);
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, ca));
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, cb));
    assert_false(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, cz));
    assert_int_equal(x->n, nman + 2);

    /* an error reply to job.refs fails the job with the coordinator's code */
    snprintf(wf.fc.refuse_refs, sizeof(wf.fc.refuse_refs), "jb-sd-refused");
    dispatch("w1", snapshot_dir_msg("jb-sd-refused", RID1, "/data", IMG_D2, NULL));
    expect_err("jb-sd-refused", 30000, CAIRN_ENOTFOUND, "refused by the test");
    wf.fc.refuse_refs[0] = '\0';
}

static void test_mount_image(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    mount_ok("w1", RID1, "/img", IMG_BASE, g.import_res, NULL);
    sh_expect("w1", RID1, "cat /img/etc/motd /img/srv/old/file", "hello\nold\n");
    sh_expect("w1", RID1, "printf 'new' > /img/new && rm /img/srv/old/file && printf 'more' >> /img/etc/motd", NULL);
    dispatch("w1", snapshot_dir_msg("jb-sd2", RID1, "/img", IMG_D2, NULL));
    g.d2_res = expect_ok("jb-sd2", 30000);

    /* into a sandbox on another worker */
    create("w3", RID2);
    mount_ok("w3", RID2, "/m2", IMG_D2, g.d2_res, NULL);
    sh_expect("w3", RID2, "cat /m2/etc/motd /m2/new; test ! -e /m2/srv/old/file && test -x /m2/bin/busybox && echo ok",
              "hello\nmorenewok\n");
    sh_expect("w3", RID2, "printf w > /m2/w && cat /m2/w", "w"); /* writable */
    mount_ok("w3", RID2, "/deep/m1", IMG_D1, g.d1_res, NULL);   /* missing dirs are made */
    sh_expect("w3", RID2, "cat /deep/m1/a /deep/m1/sub/b; test -e /deep/m1/inner/z || echo ' no-z'",
              "hello-dirx-file no-z\n");
}

static void test_unmount_reveals(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    mount_ok("w1", RID1, "/srv/old", NULL, NULL, NULL);
    sh_expect("w1", RID1, "test ! -e /srv/old/file && echo hidden", "hidden\n");
    unmount_ok("w1", RID1, "/srv/old");
    sh_expect("w1", RID1, "cat /srv/old/file", "old\n");
    unmount_ok("w1", RID1, "/srv/old"); /* a resent unmount: fine */
    /* the snapshot of a path that is no longer mounted: refused */
    const char *job = next_job("sd");
    dispatch("w1", snapshot_dir_msg(job, RID1, "/srv/old", IMG_D2, NULL));
    expect_err(job, 10000, CAIRN_EINVAL, "was not mounted");
}

static void test_csek(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    const char *secret = "csek-protected-content";
    mount_ok("w1", RID1, "/sec", NULL, NULL, NULL);
    sh_expect("w1", RID1, "printf 'csek-protected-content' > /sec/s && mkdir /sec/d && printf 'x-file' > /sec/d/b",
              NULL);
    dispatch("w1", snapshot_dir_msg("jb-sdc", RID1, "/sec", IMG_C1, g.dek));
    g.c1_res = expect_ok("jb-sdc", 30000);
    /* refs in the CSEK domain; the chunk ids are the CSEK domain's */
    struct refs *x = refs_check("jb-sdc", g.csek_dom);
    uint8_t cs[CAIRN_CHUNK_ID_BYTES], cm[CAIRN_CHUNK_ID_BYTES];
    chunk_id_of(g.dek, secret, cs);
    chunk_id_of(NULL, secret, cm);
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, cs));
    assert_false(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x->ids, x->n, cm));
    size_t nman = refs_cover_manifest(x, g.c1_res);
    assert_int_equal(x->n, nman + 2);
    assert_true(holders(g.csek_dom, cs) >= 1);
    uint8_t mdom[CAIRN_DOMAIN_ID_BYTES];
    managed_dom(mdom);
    assert_int_equal(holders(mdom, cm), 0);

    /* mount it on another worker with the DEK: readable; its layer is private */
    mount_ok("w3", RID2, "/s2", IMG_C1, g.c1_res, g.dek);
    sh_expect("w3", RID2, "cat /s2/s /s2/d/b", "csek-protected-contentx-file");
    const char *priv = tu_path("%s/private/%s", wf.nodes[2].dir, RID2);
    char privc[PATH_MAX];
    snprintf(privc, sizeof(privc), "%s", priv);
    assert_int_equal(dir_entries(privc), 1);
    assert_true(path_exists(tu_path("%s/0/path", privc)));
    assert_true(path_exists(tu_path("%s/0/l0/s", privc)));
    /* not in the shared layer cache */
    assert_false(path_exists(tu_path("%s/layers/%s", wf.nodes[2].dir, IMG_C1)));

    /* without the DEK: the managed domain has no such chunks; csek without a key: EKEY; another DEK: EKEY */
    const char *job = next_job("mount");
    dispatch("w3", mount_msg(job, RID2, "/s3", IMG_C1, g.c1_res, false, NULL));
    struct cairn_msg *r = result_of(job, 60000);
    assert_int_not_equal(err_code(r), CAIRN_OK);
    job = next_job("mount");
    dispatch("w3", mount_msg(job, RID2, "/s3", IMG_C1, g.c1_res, true, NULL));
    expect_err(job, 10000, CAIRN_EKEY, "carries no data key");
    job = next_job("mount");
    dispatch("w3", mount_msg(job, RID2, "/s3", IMG_C1, g.c1_res, true, g.dek2));
    expect_err(job, 10000, CAIRN_EKEY, "data key does not match domain");
    sh_expect("w3", RID2, "test ! -e /s3/s && echo none", "none\n");
    assert_int_equal(dir_entries(privc), 1); /* the failed mounts left no private dir */

    /* re-snapshot of the mounted CSEK dir with the same DEK: unchanged chunks dedup (same ids) */
    sh_expect("w3", RID2, "printf 'more' > /s2/m", NULL);
    dispatch("w3", snapshot_dir_msg("jb-sdc2", RID2, "/s2", "im-00000000000000e2", g.dek));
    expect_ok("jb-sdc2", 30000);
    struct refs *x2 = refs_check("jb-sdc2", g.csek_dom);
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x2->ids, x2->n, cs));
    /* ... and without a key: a managed image of the same files */
    dispatch("w3", snapshot_dir_msg("jb-sdc3", RID2, "/s2", "im-00000000000000e3", NULL));
    expect_ok("jb-sdc3", 30000);
    struct refs *x3 = refs_check("jb-sdc3", mdom);
    assert_true(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x3->ids, x3->n, cm));
    assert_false(ids_have((const uint8_t(*)[CAIRN_CHUNK_ID_BYTES])x3->ids, x3->n, cs));

    /* unmount removes the private dir */
    unmount_ok("w3", RID2, "/s2");
    assert_false(path_exists(privc));
    sh_expect("w3", RID2, "test ! -e /s2/s && echo gone", "gone\n");
    /* mounted again, then the sandbox terminated: removed too */
    mount_ok("w3", RID2, "/s2", IMG_C1, g.c1_res, g.dek);
    assert_true(path_exists(tu_path("%s/0/l0/s", privc)));
    terminate("w3", RID2);
    assert_false(path_exists(privc));
}

static void test_private_cleanup_at_start(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    /* RID1 (w1) gets a CSEK mount; a leftover private dir of a sandbox that no longer exists is planted */
    mount_ok("w1", RID1, "/s9", IMG_C1, g.c1_res, g.dek);
    struct node *w1 = &wf.nodes[0];
    char live[PATH_MAX + 64], fake[PATH_MAX + 64];
    snprintf(live, sizeof(live), "%s/private/%s", w1->dir, RID1);
    snprintf(fake, sizeof(fake), "%s/private/%s", w1->dir, RID_FAKE);
    assert_true(path_exists(live));
    assert_int_equal(tu_sh("mkdir -p '%s/0/l0' && echo x > '%s/0/l0/f'", fake, fake), 0);
    int regs = wf.fc.w[0].registrations;
    node_stop_thread(w1);
    node_start_thread(w1);
    WAIT_FOR(wf.fc.w[0].registrations > regs && wf.fc.w[0].heartbeats > 0, 20000);
    fc_pump(300);
    assert_false(path_exists(fake));
    assert_true(path_exists(live)); /* re-adopted: kept */
    sh_expect("w1", RID1, "cat /s9/s", "csek-protected-content");
}

static void test_delete_chunks(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    uint8_t dom[CAIRN_DOMAIN_ID_BYTES], ca[CAIRN_CHUNK_ID_BYTES], cb[CAIRN_CHUNK_ID_BYTES];
    uint8_t none[CAIRN_CHUNK_ID_BYTES];
    managed_dom(dom);
    chunk_id_of(NULL, "hello-dir", ca);
    chunk_id_of(NULL, "x-file", cb);
    cairn_random_bytes(none, sizeof(none));
    int ha = holders(dom, ca), hb = holders(dom, cb);
    assert_true(ha >= 1 && hb >= 1);
    uint64_t deleted = 0;
    for (size_t w = 0; w < WF_NW; w++) {
        char job[48];
        snprintf(job, sizeof(job), "jb-del-%zu", w);
        struct cairn_mval *p;
        struct cairn_msg *m = job_new(job, "delete-chunks", &p);
        cairn_mval_put_str(m, p, "worker", wf.nodes[w].id);
        cairn_mval_put_bin(m, p, "domain", dom, sizeof(dom));
        uint8_t ids[2 * CAIRN_CHUNK_ID_BYTES];
        memcpy(ids, ca, CAIRN_CHUNK_ID_BYTES);
        memcpy(ids + CAIRN_CHUNK_ID_BYTES, none, CAIRN_CHUNK_ID_BYTES);
        cairn_mval_put_bin(m, p, "ids", ids, sizeof(ids));
        dispatch(wf.nodes[w].id, m);
        deleted += result_u64(expect_ok(job, 10000), "deleted");
    }
    assert_int_equal(deleted, (uint64_t)ha);
    assert_int_equal(holders(dom, ca), 0);
    assert_int_equal(holders(dom, cb), hb); /* only the given ids */
    /* bad params */
    struct cairn_mval *p;
    struct cairn_msg *m = job_new("jb-del-bad", "delete-chunks", &p);
    cairn_mval_put_bin(m, p, "domain", dom, sizeof(dom));
    cairn_mval_put_bin(m, p, "ids", ca, 31);
    dispatch("w2", m);
    expect_err("jb-del-bad", 10000, CAIRN_EINVAL, "params.ids");
}

/* nftw callback state: does any file hold the DEK (raw, lower hex, upper hex)? */
static const char *g_found;

static int scan_file(const char *path, const struct stat *st, int type, struct FTW *f)
{
    (void)f;
    if (type != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    size_t n = 0;
    uint8_t *data = tu_read_file(path, &n);
    if (!data)
        return 0;
    char lo[65], up[65];
    cairn_hex_encode(lo, g.dek, sizeof(g.dek));
    for (int i = 0; i < 64; i++)
        up[i] = (char)(lo[i] >= 'a' && lo[i] <= 'f' ? lo[i] - 'a' + 'A' : lo[i]);
    up[64] = '\0';
    if (memmem(data, n, g.dek, sizeof(g.dek)) || memmem(data, n, lo, 64) || memmem(data, n, up, 64)) {
        static char where[PATH_MAX];
        snprintf(where, sizeof(where), "%s", path);
        g_found = where;
    }
    free(data);
    return 0;
}

static void test_no_key_on_disk(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    terminate("w1", RID1);
    assert_false(path_exists(tu_path("%s/private/%s", wf.nodes[0].dir, RID1)));
    for (size_t i = 0; i < WF_NW; i++) {
        /* the stores flushed: stop the worker so RocksDB writes everything it holds */
        node_stop_thread(&wf.nodes[i]);
        assert_int_equal(wf.nodes[i].rc, CAIRN_OK);
        g_found = NULL;
        assert_int_equal(nftw(wf.nodes[i].dir, scan_file, 16, FTW_PHYS), 0);
        if (g_found)
            fail_msg("the DEK is in %s", g_found);
        assert_false(mounted_below(wf.nodes[i].dir));
        assert_int_equal(dir_entries(tu_path("%s/private", wf.nodes[i].dir)), 0);
    }
    /* nor any log line (every worker logged into this process's log, at debug level unless CAIRN_TEST_LOG) */
    if (g.log_fd > 0) {
        struct stat st;
        assert_int_equal(stat(tu_path("%s/test.log", wf.dir), &st), 0);
        assert_true(st.st_size > 1000);
        g_found = NULL;
        scan_file(tu_path("%s/test.log", wf.dir), &st, FTW_F, NULL);
        if (g_found)
            fail_msg("the DEK is in the log %s", g_found);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_refs),
        cmocka_unit_test(test_mount_empty),
        cmocka_unit_test(test_mount_image),
        cmocka_unit_test(test_unmount_reveals),
        cmocka_unit_test(test_csek),
        cmocka_unit_test(test_private_cleanup_at_start),
        cmocka_unit_test(test_delete_chunks),
        cmocka_unit_test(test_no_key_on_disk),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
