/*
 * worker_dirjobs.c: the directory-snapshot jobs of issue 5 (docs/internals/snapshots.md "Jobs"):
 * sandbox-mount, sandbox-unmount, snapshot-dir, delete-chunks, and the private CSEK layer dirs.
 *
 * sandbox-mount (runtime_id, path, layers top first, csek): each layer is fetched and materialised like
 *   sandbox-create's; managed layers come from the shared layer cache (worker_image.c), CSEK layers (the job
 *   carries a DEK in its dispatch: job.csek) are built outside it, under
 *       DATA_DIR/private/<runtime_id>/<n>/l<i>     (n: one number per mount, i: layer index)
 *       DATA_DIR/private/<runtime_id>/<n>/path     the in-sandbox mount path (to find them at unmount)
 *   (a small departure from the agreement's private/<runtime_id>/<n>: one dir per mount, its layers inside).
 *   They are removed at unmount, at sandbox-terminate and at worker start for runtime ids not re-adopted.
 *   Then cairn_sandbox_mount_into(OVERLAY, lowers); no layers: an empty writable dir.
 * sandbox-unmount (runtime_id, path): cairn_sandbox_unmount, then the private dirs of that path and of the
 *   mounts below it. A path with no mount succeeds (a resent dispatch after a lost result); the coordinator
 *   refuses unknown paths before any job exists.
 * snapshot-dir (runtime_id, path, image): the path must be a mount of ours (EINVAL otherwise). The merged
 *   view at merged/<path> is captured in plain mode without pausing (a file written meanwhile may be caught
 *   mid-write), mount points of our mounts below it left out, in the job's domain (its CSEK domain, else
 *   the app's managed one), its data chunks replicated while the capture runs (a streaming replication run,
 *   cairn_wk__repl_run_*); refs sent (job.refs), the replication finished (manifests, acknowledgements,
 *   then the local copies outside our placement set dropped), then the result. The directory is opened and
 *   its /proc/self/fd path checked to be exactly merged/<path> before the capture reads through that fd, so
 *   a symlink placed by the sandbox can never lead the capture outside its root.
 * delete-chunks (domain bin16, ids bin n*32): delete each id held in the local store; missing ones are
 *   fine; result {deleted: n held and deleted}.
 *
 * Secrets: the DEK lives only in job.csek (guarded memory, worker_jobs.c); nothing here formats it.
 */
#include "worker_jobs_int.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/kv.h"
#include "cairn/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAPSHOT_DIR_STREAM_REPL false /* see the capture in snapshot-dir */

#define LAYERS_MAX 32u
#define DELETE_MAX 4096u
#define PRIVATE_MOUNTS_MAX 100000u

int cairn_wk__data_dir(struct jt *t, char *buf, size_t cap)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    if (!e->rt)
        return cairn_err_set(CAIRN_EUNAVAILABLE, "worker '%s' runs no sandbox runtime", e->worker_id);
    if (!e->data_dir || !*e->data_dir || (size_t)snprintf(buf, cap, "%s", e->data_dir) >= cap)
        return cairn_err_set(CAIRN_EINVAL, "worker '%s': data dir '%.200s' is missing or too long", e->worker_id,
                             e->data_dir ? e->data_dir : "");
    return CAIRN_OK;
}

static bool rid_valid(const char *s)
{
    size_t n = strlen(s);
    if (n != CAIRN_SANDBOX_ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Is `p` equal to `base` or below it (both normalised absolute paths)? */
static bool path_at_or_below(const char *p, const char *base)
{
    if (!strcmp(base, "/"))
        return true;
    size_t n = strlen(base);
    return !strncmp(p, base, n) && (p[n] == '\0' || p[n] == '/');
}

static void rmrf_logged(const char *path)
{
    if (cairn_wk_rmrf(path) != CAIRN_OK)
        cairn_warn("private layer dir '%s' not removed: %s", path, cairn_err_msg());
}

/* Remove the mount dirs under DATA_DIR/private/<rid> whose recorded path is at or below `path` (NULL: all),
   and the rid dir when nothing is left. */
static void private_remove(const char *data_dir, const char *rid, const char *path)
{
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof(dir), "%s/private/%s", data_dir, rid) >= sizeof(dir))
        return;
    if (!path) {
        rmrf_logged(dir);
        return;
    }
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    size_t left = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char sub[PATH_MAX], pf[PATH_MAX], rec[4200] = "";
        if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) >= sizeof(sub) ||
            (size_t)snprintf(pf, sizeof(pf), "%s/path", sub) >= sizeof(pf))
            continue;
        FILE *f = fopen(pf, "re");
        size_t n = f ? fread(rec, 1, sizeof(rec) - 1, f) : 0;
        if (f)
            fclose(f);
        rec[n] = '\0';
        /* no record (a mount job died before writing it) counts as ours to remove too */
        if (n == 0 || path_at_or_below(rec, path))
            rmrf_logged(sub);
        else
            left++;
    }
    closedir(d);
    if (left == 0)
        rmdir(dir);
}

void cairn_wk__private_cleanup(const char *data_dir, const char *rid, const char *const *keep, size_t nkeep)
{
    if (rid) {
        if (rid_valid(rid))
            private_remove(data_dir, rid, NULL);
        return;
    }
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof(dir), "%s/private", data_dir) >= sizeof(dir))
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        bool kept = false;
        for (size_t i = 0; i < nkeep && !kept; i++)
            kept = !strcmp(keep[i], e->d_name);
        if (kept)
            continue;
        char sub[PATH_MAX];
        if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) >= sizeof(sub))
            continue;
        cairn_info("removing private layer dirs of sandbox %.64s (not running here)", e->d_name);
        rmrf_logged(sub);
    }
    closedir(d);
}

/* Make DATA_DIR/private/<rid>/<n> (a fresh n) and record path in it. */
static int private_mount_dir(const char *data_dir, const char *rid, const char *path, char *out, size_t cap)
{
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof(dir), "%s/private", data_dir) >= sizeof(dir))
        return cairn_err_set(CAIRN_EINVAL, "data dir '%s' is too long", data_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cairn_err_set_errno(CAIRN_EIO, errno, "mkdir '%s'", dir);
    size_t l = strlen(dir);
    snprintf(dir + l, sizeof(dir) - l, "/%s", rid);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cairn_err_set_errno(CAIRN_EIO, errno, "mkdir '%s'", dir);
    for (unsigned n = 0; n < PRIVATE_MOUNTS_MAX; n++) {
        if ((size_t)snprintf(out, cap, "%s/%u", dir, n) >= cap)
            return cairn_err_set(CAIRN_EINVAL, "private dir path too long under '%s'", dir);
        if (mkdir(out, 0700) == 0) {
            char pf[PATH_MAX];
            snprintf(pf, sizeof(pf), "%s/path", out);
            int fd = open(pf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            size_t pl = strlen(path);
            bool ok = fd >= 0 && write(fd, path, pl) == (ssize_t)pl;
            int err = errno;
            if (fd >= 0)
                close(fd);
            if (!ok) {
                cairn_wk_rmrf(out);
                return cairn_err_set_errno(CAIRN_EIO, err, "write '%s'", pf);
            }
            return CAIRN_OK;
        }
        if (errno != EEXIST)
            return cairn_err_set_errno(CAIRN_EIO, errno, "mkdir '%s'", out);
    }
    return cairn_err_set(CAIRN_EIO, "too many private mount dirs under '%s'", dir);
}

/* params.path: an absolute path other than "/" (the runtime checks the rest and names what is wrong). */
static int param_path(const struct job *jb, const char **path)
{
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "path", true, path));
    if ((*path)[0] != '/' || !strcmp(*path, "/"))
        return cairn_err_set(CAIRN_EINVAL, "%s: params.path '%.200s' must be an absolute path other than /", jb->kind,
                             *path);
    return CAIRN_OK;
}

/* ---- sandbox-mount ---- */

int cairn_wk__run_sandbox_mount(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    uint64_t t0 = cairn_now_mono_ns();
    const char *rid = NULL, *path = NULL;
    bool csek = false;
    CAIRN_FORWARD_IF_ERROR(param_path(jb, &path));
    const struct cairn_mval *cv = cairn_wk__param(jb, "csek");
    if (cv && cairn_mval_bool(cv, &csek) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "sandbox-mount: params.csek must be a bool");
    if (csek && !jb->csek)
        return cairn_err_set(CAIRN_EKEY, "sandbox-mount: the image is encrypted with a customer-supplied key, but the "
                             "job carries no data key");
    const struct cairn_mval *lv = cairn_wk__param(jb, "layers");
    size_t nl = lv && cairn_mval_kind(lv) != CAIRN_MV_NIL ? cairn_mval_len(lv) : 0;
    if (lv && cairn_mval_kind(lv) != CAIRN_MV_NIL && (cairn_mval_kind(lv) != CAIRN_MV_ARRAY || nl > LAYERS_MAX))
        return cairn_err_set(CAIRN_EINVAL, "sandbox-mount: params.layers must be an array of at most %u layer "
                             "references", LAYERS_MAX);
    const struct cairn_domain *d = NULL;
    if (nl > 0)
        CAIRN_FORWARD_IF_ERROR(cairn_wk__job_domain(t, jb, &d));
    struct cairn_sandbox *sb = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__sandbox_of(t, jb, &sb, &rid));

    char *paths[LAYERS_MAX] = {0};
    char priv[PATH_MAX] = "", dd[PATH_MAX];
    uint64_t fchunks = 0, fbytes = 0;
    int rc = CAIRN_OK;
    if (nl > 0 && jb->csek) {
        rc = cairn_wk__data_dir(t, dd, sizeof(dd));
        if (rc == CAIRN_OK)
            rc = private_mount_dir(dd, rid, path, priv, sizeof(priv));
    }
    for (size_t i = 0; i < nl && rc == CAIRN_OK; i++) {
        char what[48];
        snprintf(what, sizeof(what), "params.layers[%zu]", i);
        struct wk_layer_ref lr;
        rc = cairn_wk__layer_ref_parse(cairn_mval_at(lv, i), what, &lr);
        if (rc != CAIRN_OK)
            break;
        if (jb->csek) {
            char dir[PATH_MAX];
            snprintf(dir, sizeof(dir), "%s/l%zu", priv, i);
            rc = cairn_wk__layer_build(t, jb, d, &lr, dir, &fchunks, &fbytes);
            if (rc == CAIRN_OK && !(paths[i] = cairn_strdup(dir)))
                rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
        } else {
            rc = cairn_wk__layer_get(t, jb, d, &lr, &paths[i], &fchunks, &fbytes);
        }
        cairn_tree_ref_release(&lr.ref);
    }
    if (rc == CAIRN_OK)
        rc = cairn_wk__job_check(t, jb);
    if (rc == CAIRN_OK) {
        struct cairn_mount_spec m = {
            .path = path,
            .kind = CAIRN_MOUNT_OVERLAY,
            .lowers = (const char *const *)paths,
            .n_lowers = nl,
        };
        rc = cairn_sandbox_mount_into(sb, &m);
    }
    if (rc != CAIRN_OK)
        goto out;
    uint64_t ms = (cairn_now_mono_ns() - t0) / 1000000u;
    cairn_info("sandbox %s: mounted %s at '%s' in %llu ms (%zu layers, %llu chunks fetched)", rid,
               nl == 0 ? "an empty dir" : jb->csek ? "a CSEK image" : "an image", path, (unsigned long long)ms, nl,
               (unsigned long long)fchunks);
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_u64(res, r, "mount_ms", ms);
    cairn_mval_put_u64(res, r, "fetched_chunks", fchunks);
    cairn_mval_put_u64(res, r, "fetched_bytes", fbytes);
out:
    if (rc != CAIRN_OK && priv[0]) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        rmrf_logged(priv);
        cairn_err_set(rc, "%s", msg);
    }
    for (size_t i = 0; i < nl && i < LAYERS_MAX; i++)
        cairn_free(paths[i]);
    cairn_sandbox_release(&sb);
    return rc;
}

/* ---- sandbox-unmount ---- */

int cairn_wk__run_sandbox_unmount(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const char *rid = NULL, *path = NULL;
    CAIRN_FORWARD_IF_ERROR(param_path(jb, &path));
    struct cairn_sandbox *sb = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__sandbox_of(t, jb, &sb, &rid));
    int rc = cairn_sandbox_unmount(sb, path);
    cairn_sandbox_release(&sb);
    if (rc == CAIRN_ENOTFOUND) {
        cairn_info("sandbox %s: no mount at '%.200s' (unmounted before)", rid, path);
        cairn_err_clear();
        rc = CAIRN_OK;
    }
    if (rc != CAIRN_OK)
        return rc;
    char dd[PATH_MAX];
    if (cairn_wk__data_dir(t, dd, sizeof(dd)) == CAIRN_OK)
        private_remove(dd, rid, path);
    cairn_msg_set_map(res, "result");
    return CAIRN_OK;
}

/* ---- snapshot-dir ---- */

int cairn_wk__run_snapshot_dir(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    const char *rid = NULL, *image = NULL, *path = NULL;
    const struct cairn_domain *d = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "image", true, &image));
    if (!cairn_wk_layer_id_valid(image))
        return cairn_err_set(CAIRN_EINVAL, "snapshot-dir: params.image '%.80s' is not an image id", image);
    CAIRN_FORWARD_IF_ERROR(param_path(jb, &path));
    CAIRN_FORWARD_IF_ERROR(cairn_wk__job_domain(t, jb, &d));
    struct cairn_sandbox *sb = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_wk__sandbox_of(t, jb, &sb, &rid));

    char **mounts = NULL;
    size_t nmounts = 0, nex = 0;
    const char **ex = NULL;
    int fd = -1;
    struct cairn_tree_ref ref = {0};
    struct cairn_tree_stats st = {0};
    struct wk_repl_run *run = NULL;
    int rc = cairn_sandbox_mounts(sb, &mounts, &nmounts);
    if (rc != CAIRN_OK)
        goto out;
    bool found = false;
    size_t plen = strlen(path);
    while (plen > 1 && path[plen - 1] == '/')
        plen--;
    if (nmounts > 0 && !(ex = cairn_calloc(nmounts, sizeof(*ex)))) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nmounts; i++) {
        if (strlen(mounts[i]) == plen && !strncmp(mounts[i], path, plen))
            found = true;
        else if (!strncmp(mounts[i], path, plen) && mounts[i][plen] == '/')
            ex[nex++] = mounts[i] + plen + 1; /* relative to the captured dir */
    }
    if (!found) {
        rc = cairn_err_set(CAIRN_EINVAL, "%.200s in %s was not mounted with 'cairn sandbox mount': only mounted "
                           "directories can be snapshotted", path, rid);
        goto out;
    }
    /* open the mount and make sure it is exactly merged/<path> (no symlink on the way) */
    char want[PATH_MAX], proc[64], got[PATH_MAX];
    if ((size_t)snprintf(want, sizeof(want), "%s%.*s", cairn_sandbox_merged_dir(sb), (int)plen, path) >= sizeof(want)) {
        rc = cairn_err_set(CAIRN_EINVAL, "snapshot-dir: path '%.200s' is too long", path);
        goto out;
    }
    fd = open(want, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "snapshot-dir of %s: open the mount at '%.200s'", rid, path);
        goto out;
    }
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    ssize_t gl = readlink(proc, got, sizeof(got) - 1);
    if (gl < 0 || (got[gl] = '\0', strcmp(got, want) != 0)) {
        rc = cairn_err_set(CAIRN_EINVAL, "snapshot-dir of %s: '%.200s' no longer leads to its mount (a symlink on "
                           "the way?)", rid, path);
        goto out;
    }
    struct cairn_tree_opts o = {.flags = 0, .exclude = ex, .n_exclude = nex};
    /*
     * Streaming replication during the capture (as memory snapshots do) is built but OFF here: measured on a
     * 2-core machine running all three workers it made snapshot-dir 8-10 % slower at 100 MB and neutral at
     * 1 GB (the capture slows by what the overlap saves). Pass true once peers are other machines and a
     * benchmark there shows the gain (docs/BENCHMARKS.md, "Directory snapshots").
     */
    if ((rc = cairn_wk__repl_run_begin(t, jb, d, SNAPSHOT_DIR_STREAM_REPL, "replicate", &run)) != CAIRN_OK)
        goto out;
    cairn_wk__repl_run_hook(run, &o);
    uint64_t t0 = cairn_now_mono_ns();
    rc = cairn_tree_capture(e->store, d, proc, &o, &ref, &st);
    uint64_t capture_ms = (cairn_now_mono_ns() - t0) / 1000000u;
    if (rc != CAIRN_OK) {
        rc = cairn_err_set(rc, "snapshot-dir of %s at '%.200s': %s", rid, path, cairn_err_msg());
        goto out;
    }
    cairn_info("sandbox %s: directory snapshot '%s' of '%.200s' (%s) in %llu ms: %llu entries, %llu bytes, %llu new "
               "chunks", rid, image, path, jb->csek ? "CSEK" : "managed", (unsigned long long)capture_ms,
               (unsigned long long)st.entries, (unsigned long long)st.bytes, (unsigned long long)st.chunks_new);
    /* refs first: the finish drops local copies outside our placement set (the streaming never does) */
    rc = cairn_wk__send_refs(t, jb, d, &ref);
    if (rc == CAIRN_OK) {
        const struct cairn_tree_ref *refs[1] = {&ref};
        rc = cairn_wk__repl_run_finish(run, refs, 1);
    }
    if (rc != CAIRN_OK)
        goto out;
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_str(res, r, "image", image);
    rc = cairn_wk__layer_ref_put(res, r, &ref);
    cairn_mval_put_u64(res, r, "files", st.files);
    cairn_mval_put_u64(res, r, "size", st.bytes);
    cairn_mval_put_u64(res, r, "stored", st.stored_bytes);
    cairn_mval_put_u64(res, r, "capture_ms", capture_ms);
out:
    cairn_wk__repl_run_destroy(&run); /* still streaming: the job failed, it stops at once */
    if (fd >= 0)
        close(fd);
    for (size_t i = 0; i < nmounts; i++)
        cairn_free(mounts[i]);
    cairn_free(mounts);
    cairn_free(ex);
    cairn_tree_ref_release(&ref);
    cairn_sandbox_release(&sb);
    return rc;
}

/* ---- delete-chunks ---- */

int cairn_wk__run_delete_chunks(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const struct cairn_wk_jobs_env *e = cairn_wk__env(t);
    const struct cairn_mval *dv = cairn_wk__param(jb, "domain"), *iv = cairn_wk__param(jb, "ids");
    const uint8_t *dom = NULL, *ids = NULL;
    size_t dl = 0, il = 0;
    if (!dv || cairn_mval_bin(dv, &dom, &dl) != CAIRN_OK || dl != CAIRN_DOMAIN_ID_BYTES)
        return cairn_err_set(CAIRN_EINVAL, "delete-chunks: params.domain must be %d bytes", CAIRN_DOMAIN_ID_BYTES);
    if (!iv || cairn_mval_bin(iv, &ids, &il) != CAIRN_OK || il % CAIRN_CHUNK_ID_BYTES != 0 ||
        il / CAIRN_CHUNK_ID_BYTES > DELETE_MAX)
        return cairn_err_set(CAIRN_EINVAL, "delete-chunks: params.ids must be n x %d bytes (n <= %u)",
                             CAIRN_CHUNK_ID_BYTES, DELETE_MAX);
    size_t n = il / CAIRN_CHUNK_ID_BYTES;
    uint64_t deleted = 0;
    int rc = CAIRN_OK;
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
        const uint8_t *id = ids + i * CAIRN_CHUNK_ID_BYTES;
        uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES], *val = NULL;
        size_t vlen = 0;
        cairn_store_chunk_key(key, dom, id);
        rc = cairn_kv_get(cairn_store_kv(e->store), key, sizeof(key), &val, &vlen);
        if (rc == CAIRN_ENOTFOUND) {
            cairn_err_clear();
            rc = CAIRN_OK;
            continue;
        }
        cairn_kv_free(val);
        if (rc == CAIRN_OK)
            rc = cairn_store_delete_chunk(e->store, dom, id);
        if (rc == CAIRN_OK) {
            cairn_wk_stats_removed(e->stats, vlen);
            deleted++;
        }
    }
    if (rc == CAIRN_OK && deleted > 0)
        rc = cairn_store_sync(e->store);
    if (rc != CAIRN_OK)
        return rc;
    cairn_info("delete-chunks: %llu of %zu chunks held here deleted", (unsigned long long)deleted, n);
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_u64(res, r, "deleted", deleted);
    return CAIRN_OK;
}
