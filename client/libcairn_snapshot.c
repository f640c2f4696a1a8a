/*
 * libcairn_snapshot.c: the calls of issues 5 and 6 (cairn/cairn.h "directory
 * mounts and snapshots" and "memory snapshots"): sandbox mount / unmount /
 * snapshot-dir / snapshot / restore, and snapshot ls / show / rm.
 * docs/internals/snapshots.md is the agreement behind them.
 *
 * - Every sandbox call here starts a job and waits for it like snapshot-fs
 *   (cairn__run_job: wait_ms on the request, then job.get long polls, or
 *   1 s polls feeding the client's progress callback); a job that failed is
 *   the call's error with the job's code and message. A req_id is always
 *   sent (a fresh one when the caller gives none) so that a retry with the
 *   caller's id never creates a second object.
 * - Keys (CSEK): checked with cairn_csek_validate before anything is sent, so
 *   a bad size never costs a round trip and the caller gets that function's
 *   exact message; its CAIRN_EKEY becomes CAIRN_EINVAL, the code the
 *   coordinator gives for the same refusal (snapshots.md). The key is copied
 *   only into the request's `key` field, a SECRET field: cairn_msg_destroy
 *   wipes it, and the transport wipes the encoded envelope after sending.
 *   No message formatted here ever includes key bytes or the key length
 *   beyond what cairn_csek_validate says.
 * - Results: snapshot-dir's image id is `id` (PROTOCOL.md §5; `image` is
 *   taken too), snapshot's `id` (or `snapshot`), restore's `ids` (or a single
 *   `id`) and, when the coordinator sends it, `workers`.
 * - Snapshot records carry `mounts` (an array of paths): the one record of
 *   the client API that owns heap strings, hence cairn_snapshot_info_free.
 */
#include "cairn/cairn.h"

#include "cairn/alloc.h"
#include "cairn/crypto.h"
#include "client_int.h"

#include <stdio.h>

#define PATH_MAX_BYTES 4096
#define RESTORE_MAX 256u /* the wire model's limit per request */
#define TTL_MAX_S 3153600000ull

/* ---- argument checks ------------------------------------------------------------------------- */

/* A mount path: absolute, not "/" (the coordinator checks the rest and names what is wrong). */
static int check_path(const char *what, const char *path)
{
    if (!path || !*path)
        return cairn_err_set(CAIRN_EINVAL, "%s: no path given", what);
    size_t n = strlen(path);
    if (n > PATH_MAX_BYTES)
        return cairn_err_set(CAIRN_EINVAL, "%s: the path is %zu bytes long (at most %d)", what, n, PATH_MAX_BYTES);
    if (path[0] != '/')
        return cairn_err_set(CAIRN_EINVAL, "%s: the path '%.200s' is not absolute", what, path);
    if (n == 1)
        return cairn_err_set(CAIRN_EINVAL, "%s: the path cannot be '/': give an absolute path other than /", what);
    return CAIRN_OK;
}

/* No key (NULL, length 0), or a key cairn_csek_validate accepts; its message, as EINVAL. */
static int check_key(const char *what, const uint8_t *key, size_t key_len)
{
    if (!key) {
        if (key_len)
            return cairn_err_set(CAIRN_EINVAL, "%s: a key length without a key", what);
        return CAIRN_OK;
    }
    if (cairn_csek_validate(key, key_len) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "%s", cairn_err_msg());
    return CAIRN_OK;
}

/* ---- mount, unmount -------------------------------------------------------------------------- */

static int sandbox_mount(struct cairn_client *c, const char *sb, const char *path, const char *image,
                         const uint8_t *key, size_t key_len, const char *req_id)
{
    char im[CAIRN_ID_MAX + 1] = "";
    CAIRN_FORWARD_IF_ERROR(cairn__check_id("sandbox mount", sb));
    CAIRN_FORWARD_IF_ERROR(check_path("sandbox mount", path));
    CAIRN_FORWARD_IF_ERROR(check_key("sandbox mount", key, key_len));
    CAIRN_FORWARD_IF_ERROR(cairn__check_req_id(req_id));
    if (image)
        CAIRN_FORWARD_IF_ERROR(cairn_image_resolve(c, image, im));
    int rc = CAIRN_OK;
    struct cairn_msg *m = cairn__app_req(c, CAIRN_MSG_SANDBOX_MOUNT, "sandbox mount", &rc);
    if (!m)
        return rc;
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", path);
    if (im[0])
        cairn_msg_set_str(m, "image", im);
    if (key)
        cairn_msg_set_bin(m, "key", key, key_len);
    cairn__set_req_id(m, req_id);
    struct cairn_job *j = NULL;
    rc = cairn__run_job(c, &m, "sandbox mount", &j, NULL);
    cairn_job_free(&j);
    return rc;
}

int cairn_sandbox_mount(struct cairn_client *c, const char *sb, const char *path, const char *image,
                        const uint8_t *key, size_t key_len, const char *req_id)
{
    return cairn__keep_err(c, sandbox_mount(c, sb, path, image, key, key_len, req_id));
}

static int sandbox_unmount(struct cairn_client *c, const char *sb, const char *path, const char *req_id)
{
    CAIRN_FORWARD_IF_ERROR(cairn__check_id("sandbox unmount", sb));
    CAIRN_FORWARD_IF_ERROR(check_path("sandbox unmount", path));
    CAIRN_FORWARD_IF_ERROR(cairn__check_req_id(req_id));
    int rc = CAIRN_OK;
    struct cairn_msg *m = cairn__app_req(c, CAIRN_MSG_SANDBOX_UNMOUNT, "sandbox unmount", &rc);
    if (!m)
        return rc;
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", path);
    cairn__set_req_id(m, req_id);
    struct cairn_job *j = NULL;
    rc = cairn__run_job(c, &m, "sandbox unmount", &j, NULL);
    cairn_job_free(&j);
    return rc;
}

int cairn_sandbox_unmount(struct cairn_client *c, const char *sb, const char *path, const char *req_id)
{
    return cairn__keep_err(c, sandbox_unmount(c, sb, path, req_id));
}

/* ---- snapshot-dir, snapshot ------------------------------------------------------------------ */

/* The new object's id of a finished job (k1, else k2), or EPROTO naming the job. */
static int result_id(const struct cairn_msg *rep, const struct cairn_job *j, const char *what, const char *k1,
                     const char *k2, const char *kind, char id_out[CAIRN_ID_MAX + 1])
{
    cairn__result_str(rep, k1, k2, id_out, CAIRN_ID_MAX + 1);
    if (!id_out[0])
        return cairn_err_set(CAIRN_EPROTO, "%s: job %s succeeded without %s id in its result", what, j->id, kind);
    return CAIRN_OK;
}

static int snapshot_dir(struct cairn_client *c, const char *sb, const char *path, const uint8_t *key, size_t key_len,
                        uint64_t ttl_s, const char *req_id, char id_out[CAIRN_ID_MAX + 1])
{
    CAIRN_FORWARD_IF_ERROR(cairn__check_id("sandbox snapshot-dir", sb));
    CAIRN_FORWARD_IF_ERROR(check_path("sandbox snapshot-dir", path));
    CAIRN_FORWARD_IF_ERROR(check_key("sandbox snapshot-dir", key, key_len));
    CAIRN_FORWARD_IF_ERROR(cairn__check_req_id(req_id));
    if (ttl_s > TTL_MAX_S)
        return cairn_err_set(CAIRN_EINVAL, "sandbox snapshot-dir: a TTL is at most 100 years");
    int rc = CAIRN_OK;
    struct cairn_msg *m = cairn__app_req(c, CAIRN_MSG_SANDBOX_SNAPSHOT_DIR, "sandbox snapshot-dir", &rc), *rep = NULL;
    if (!m)
        return rc;
    cairn_msg_set_str(m, "sandbox", sb);
    cairn_msg_set_str(m, "path", path);
    if (key)
        cairn_msg_set_bin(m, "key", key, key_len);
    if (ttl_s)
        cairn_msg_set_u64(m, "ttl_s", ttl_s);
    cairn__set_req_id(m, req_id);
    struct cairn_job *j = NULL;
    rc = cairn__run_job(c, &m, "sandbox snapshot-dir", &j, &rep);
    if (rc == CAIRN_OK)
        rc = result_id(rep, j, "sandbox snapshot-dir", "id", "image", "an image", id_out);
    cairn_job_free(&j);
    cairn_msg_destroy(&rep);
    return rc;
}

int cairn_sandbox_snapshot_dir(struct cairn_client *c, const char *sb, const char *path, const uint8_t *key,
                               size_t key_len, uint64_t ttl_s, const char *req_id, char id_out[CAIRN_ID_MAX + 1])
{
    id_out[0] = '\0';
    int rc = snapshot_dir(c, sb, path, key, key_len, ttl_s, req_id, id_out);
    if (rc != CAIRN_OK)
        id_out[0] = '\0';
    return cairn__keep_err(c, rc);
}

static int sandbox_snapshot(struct cairn_client *c, const char *sb, const char *req_id, char id_out[CAIRN_ID_MAX + 1])
{
    CAIRN_FORWARD_IF_ERROR(cairn__check_id("sandbox snapshot", sb));
    CAIRN_FORWARD_IF_ERROR(cairn__check_req_id(req_id));
    int rc = CAIRN_OK;
    struct cairn_msg *m = cairn__app_req(c, CAIRN_MSG_SANDBOX_SNAPSHOT, "sandbox snapshot", &rc), *rep = NULL;
    if (!m)
        return rc;
    cairn_msg_set_str(m, "sandbox", sb);
    cairn__set_req_id(m, req_id);
    struct cairn_job *j = NULL;
    rc = cairn__run_job(c, &m, "sandbox snapshot", &j, &rep);
    if (rc == CAIRN_OK)
        rc = result_id(rep, j, "sandbox snapshot", "id", "snapshot", "a snapshot", id_out);
    cairn_job_free(&j);
    cairn_msg_destroy(&rep);
    return rc;
}

int cairn_sandbox_snapshot(struct cairn_client *c, const char *sb, const char *req_id, char id_out[CAIRN_ID_MAX + 1])
{
    id_out[0] = '\0';
    int rc = sandbox_snapshot(c, sb, req_id, id_out);
    if (rc != CAIRN_OK)
        id_out[0] = '\0';
    return cairn__keep_err(c, rc);
}

/* ---- restore --------------------------------------------------------------------------------- */

void cairn_restore_result_free(struct cairn_restore_result **r)
{
    if (!r || !*r)
        return;
    cairn_free((*r)->ids);
    cairn_free((*r)->workers);
    cairn_free(*r);
    *r = NULL;
}

/* The clones of a finished restore job: result `ids` (+ `workers`), or a single `id`. */
static int restore_ids(const struct cairn_msg *rep, const struct cairn_job *j, struct cairn_restore_result *r)
{
    const struct cairn_mval *res = cairn_msg_get(rep, "result");
    const struct cairn_mval *ids = res ? cairn_mval_get(res, "ids") : NULL;
    const struct cairn_mval *workers = res ? cairn_mval_get(res, "workers") : NULL;
    size_t n = ids && cairn_mval_kind(ids) == CAIRN_MV_ARRAY ? cairn_mval_len(ids) : 0;
    bool single = false;
    if (n == 0 && res && cairn_mval_get(res, "id")) {
        n = 1;
        single = true;
    }
    if (n == 0)
        return cairn_err_set(CAIRN_EPROTO, "sandbox restore: job %s succeeded without sandbox ids in its result", j->id);
    r->ids = cairn_calloc(n, sizeof(*r->ids));
    r->workers = cairn_calloc(n, sizeof(*r->workers));
    if (!r->ids || !r->workers)
        return cairn_err_set(CAIRN_ENOMEM, "sandbox restore: out of memory for %zu ids", n);
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        cairn__copy_str(single ? cairn_mval_get(res, "id") : cairn_mval_at(ids, i), r->ids[i], sizeof(r->ids[i]));
        if (!r->ids[i][0])
            return cairn_err_set(CAIRN_EPROTO, "sandbox restore: job %s: entry %zu of its ids is not an id", j->id, i);
        if (workers && cairn_mval_kind(workers) == CAIRN_MV_ARRAY && i < cairn_mval_len(workers))
            cairn__copy_str(cairn_mval_at(workers, i), r->workers[i], sizeof(r->workers[i]));
        else if (single || n == 1)
            cairn__copy_str(cairn_mval_get(res, "worker"), r->workers[i], sizeof(r->workers[i]));
    }
    return CAIRN_OK;
}

static int sandbox_restore(struct cairn_client *c, const char *sn, unsigned count, const char *worker,
                           const char *req_id, struct cairn_restore_result **out)
{
    CAIRN_FORWARD_IF_ERROR(cairn__check_id("sandbox restore", sn));
    CAIRN_FORWARD_IF_ERROR(cairn__check_req_id(req_id));
    if (worker)
        CAIRN_FORWARD_IF_ERROR(cairn__check_id("sandbox restore: worker", worker));
    if (count == 0)
        count = 1;
    if (count > RESTORE_MAX)
        return cairn_err_set(CAIRN_EINVAL, "sandbox restore: at most %u clones at once (asked %u)", RESTORE_MAX,
                             count);
    struct cairn_restore_result *r = cairn_calloc(1, sizeof(*r));
    if (!r)
        return cairn_err_set(CAIRN_ENOMEM, "sandbox restore: out of memory");
    int rc = CAIRN_OK;
    struct cairn_msg *m = cairn__app_req(c, CAIRN_MSG_SANDBOX_RESTORE, "sandbox restore", &rc), *rep = NULL;
    struct cairn_job *j = NULL;
    if (!m)
        goto out;
    cairn_msg_set_str(m, "snapshot", sn);
    if (count > 1)
        cairn_msg_set_u64(m, "count", count);
    if (worker)
        cairn_msg_set_str(m, "worker", worker);
    cairn__set_req_id(m, req_id);
    rc = cairn__run_job(c, &m, "sandbox restore", &j, &rep);
    if (rc != CAIRN_OK)
        goto out;
    snprintf(r->job, sizeof(r->job), "%s", j->id);
    rc = restore_ids(rep, j, r);
    if (rc == CAIRN_OK && r->n != count)
        rc = cairn_err_set(CAIRN_EPROTO, "sandbox restore: job %s made %zu clones, %u were asked for", j->id, r->n,
                           count);
out:
    cairn_job_free(&j);
    cairn_msg_destroy(&rep);
    if (rc == CAIRN_OK)
        *out = r;
    else
        cairn_restore_result_free(&r);
    return rc;
}

int cairn_sandbox_restore(struct cairn_client *c, const char *sn, unsigned count, const char *worker,
                          const char *req_id, struct cairn_restore_result **out)
{
    *out = NULL;
    return cairn__keep_err(c, sandbox_restore(c, sn, count, worker, req_id, out));
}

/* ---- snapshot ls, show, rm ------------------------------------------------------------------- */

static void snapshot_info_clear(struct cairn_snapshot_info *s)
{
    for (size_t i = 0; i < s->nmounts; i++)
        cairn_free(s->mounts[i]);
    cairn_free(s->mounts);
    s->mounts = NULL;
    s->nmounts = 0;
}

void cairn_snapshot_info_free(struct cairn_snapshot_info **s)
{
    if (!s || !*s)
        return;
    snapshot_info_clear(*s);
    cairn_free(*s);
    *s = NULL;
}

void cairn_snapshot_list_free(struct cairn_snapshot_list **l)
{
    if (!l || !*l)
        return;
    for (size_t i = 0; i < (*l)->n; i++)
        snapshot_info_clear(&(*l)->snapshots[i]);
    cairn_free((*l)->snapshots);
    cairn_free(*l);
    *l = NULL;
}

/* A SNAPSHOT record into s (zeroed first); on error s holds nothing to free. */
static int snapshot_from_rec(const struct cairn_mval *r, struct cairn_snapshot_info *s)
{
    memset(s, 0, sizeof(*s));
    cairn__copy_str(cairn_mval_get(r, "id"), s->id, sizeof(s->id));
    cairn__copy_str(cairn_mval_get(r, "sandbox"), s->sandbox, sizeof(s->sandbox));
    cairn__copy_str(cairn_mval_get(r, "image"), s->image, sizeof(s->image));
    cairn__copy_str(cairn_mval_get(r, "parent"), s->parent, sizeof(s->parent));
    cairn__copy_str(cairn_mval_get(r, "fingerprint"), s->fingerprint, sizeof(s->fingerprint));
    s->created_at_ns = (int64_t)cairn__get_u64(cairn_mval_get(r, "created_at"));
    s->expires_at_ns = (int64_t)cairn__get_u64(cairn_mval_get(r, "expires_at"));
    s->size = cairn__get_u64(cairn_mval_get(r, "size"));
    s->stored = cairn__get_u64(cairn_mval_get(r, "stored"));
    const struct cairn_mval *mounts = cairn_mval_get(r, "mounts");
    size_t n = mounts && cairn_mval_kind(mounts) == CAIRN_MV_ARRAY ? cairn_mval_len(mounts) : 0;
    if (n == 0)
        return CAIRN_OK;
    s->mounts = cairn_calloc(n, sizeof(*s->mounts));
    if (!s->mounts)
        return cairn_err_set(CAIRN_ENOMEM, "snapshot %s: out of memory for %zu mounts", s->id, n);
    for (size_t i = 0; i < n; i++) {
        const char *p = NULL;
        size_t len = 0;
        if (cairn_mval_str(cairn_mval_at(mounts, i), &p, &len) != CAIRN_OK) {
            p = "";
            len = 0;
        }
        s->mounts[i] = cairn_strndup(p, len);
        if (!s->mounts[i]) {
            snapshot_info_clear(s);
            return cairn_err_set(CAIRN_ENOMEM, "snapshot %s: out of memory for its mounts", s->id);
        }
        s->nmounts = i + 1;
    }
    return CAIRN_OK;
}

struct snapshot_pages {
    struct cairn_snapshot_list *l;
    size_t cap;
};

static int snapshot_page(void *arg, const struct cairn_mval *arr, size_t n)
{
    struct snapshot_pages *p = arg;
    struct cairn_snapshot_list *l = p->l;
    if (n && cairn_array_grow((void **)&l->snapshots, &p->cap, l->n + n, sizeof(*l->snapshots)) != CAIRN_OK)
        return cairn_err_set(CAIRN_ENOMEM, "snapshot ls: out of memory for %zu snapshots", l->n + n);
    for (size_t i = 0; i < n; i++) {
        CAIRN_FORWARD_IF_ERROR(snapshot_from_rec(cairn_mval_at(arr, i), &l->snapshots[l->n]));
        l->n++;
    }
    return CAIRN_OK;
}

static int snapshot_ls(struct cairn_client *c, struct cairn_snapshot_list **out)
{
    struct snapshot_pages p = {.l = cairn_calloc(1, sizeof(*p.l))};
    if (!p.l)
        return cairn_err_set(CAIRN_ENOMEM, "snapshot ls: out of memory");
    int rc = cairn__ls_pages(c, CAIRN_MSG_SNAPSHOT_LS, "snapshot ls", "snapshots", NULL, snapshot_page, &p);
    if (rc != CAIRN_OK) {
        cairn_snapshot_list_free(&p.l);
        return rc;
    }
    *out = p.l;
    return CAIRN_OK;
}

int cairn_snapshot_ls(struct cairn_client *c, struct cairn_snapshot_list **out)
{
    *out = NULL;
    return cairn__keep_err(c, snapshot_ls(c, out));
}

/* A snapshot.show / snapshot.rm round trip. */
static int snapshot_by_id(struct cairn_client *c, enum cairn_msg_type t, const char *what, const char *id,
                          struct cairn_msg **rep)
{
    *rep = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn__check_id(what, id));
    int rc = CAIRN_OK;
    struct cairn_msg *m = cairn__app_req(c, t, what, &rc);
    if (!m)
        return rc;
    cairn_msg_set_str(m, "snapshot", id);
    return cairn__call(c, &m, 0, rep);
}

static int snapshot_show(struct cairn_client *c, const char *id, struct cairn_snapshot_info **out)
{
    struct cairn_msg *rep = NULL;
    struct cairn_snapshot_info *s = NULL;
    int rc = snapshot_by_id(c, CAIRN_MSG_SNAPSHOT_SHOW, "snapshot show", id, &rep);
    if (rc != CAIRN_OK)
        goto out;
    const struct cairn_mval *r = cairn_msg_get(rep, "snapshot");
    if (!r) {
        rc = cairn_err_set(CAIRN_EPROTO, "snapshot.show reply without a snapshot");
        goto out;
    }
    s = cairn_calloc(1, sizeof(*s));
    if (!s) {
        rc = cairn_err_set(CAIRN_ENOMEM, "snapshot show: out of memory");
        goto out;
    }
    rc = snapshot_from_rec(r, s);
    if (rc == CAIRN_OK) {
        *out = s;
        s = NULL;
    }
out:
    cairn_snapshot_info_free(&s);
    cairn_msg_destroy(&rep);
    return rc;
}

int cairn_snapshot_show(struct cairn_client *c, const char *id, struct cairn_snapshot_info **out)
{
    *out = NULL;
    return cairn__keep_err(c, snapshot_show(c, id, out));
}

int cairn_snapshot_rm(struct cairn_client *c, const char *id)
{
    struct cairn_msg *rep = NULL;
    int rc = snapshot_by_id(c, CAIRN_MSG_SNAPSHOT_RM, "snapshot rm", id, &rep);
    cairn_msg_destroy(&rep);
    return cairn__keep_err(c, rc);
}
