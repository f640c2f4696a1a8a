/*
 * coord_mounts.c: sandbox.mount, sandbox.unmount and sandbox.snapshot-dir (docs/internals/snapshots.md),
 * the customer-supplied keys (CSEK) they carry, and what the end of their jobs does: the sandbox record's
 * `mounts` list, the new directory image.
 *
 * Validation happens entirely before any job exists, in the agreement's order: the request's req_id (a
 * seen one answers with its job), the sandbox (usable: running), the path, the key's size
 * (cairn_csek_validate's message, EINVAL), the image (not found / expired), then the key against the image
 * (missing: EKEY; given for a managed image: EINVAL; wrong: EKEY, found by unwrapping the image's DEK).
 *
 * Keys and DEKs: the key arrives in the request's SECRET field (wiped with the message) and is used here
 * only to unwrap or wrap a DEK; the DEK (guarded memory) is handed to the job (coord_job_spec.dek), which
 * sends it in job.dispatch and destroys it when it ends. Neither is in any record, param, result, message
 * or log line; params carry `csek: true` so that a job found after a restart (no DEK any more) fails with
 * EKEY instead of running without it (coord_jobs.c).
 *
 * Directory snapshots: kind dir, depth 1, parent "" (a whole tree), origin = the mounted image ("" for an
 * empty mount). With a key: CSEK; when the mounted image is CSEK and the key unwraps its DEK, that DEK is
 * reused (so unchanged chunks dedup), else a new one; wrapped for the new image id. Without a key: the
 * app's managed domain. Retention: ttl:<s> (fixed) with ttl_s, else sliding:<dir_retention s>.
 *
 * Mount records: the sandbox's `mounts` change only when a mount/unmount job succeeded (in the job's own
 * batch); an unmount removes the mount at the path and any below it.
 */
#include "coord.h"

#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <inttypes.h>
#include <stdio.h>

#define PATH_MAX_LEN 4096

static int64_t now_ns(struct coord *c) { return cairn_clock_now_ns(&c->clock); }

/* ---- checks ---------------------------------------------------------------------------------------------- */

/* An absolute path other than /, without . .. or empty parts, not under /proc /dev /sys. */
static int path_check(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || p[0] != '/')
        return cairn_err_set(CAIRN_EINVAL, "mount path '%s' is not absolute", p);
    if (n == 1)
        return cairn_err_set(CAIRN_EINVAL, "mount path '/' is the sandbox's root: mount at a path below it");
    if (n > PATH_MAX_LEN)
        return cairn_err_set(CAIRN_EINVAL, "mount path is longer than %d bytes", PATH_MAX_LEN);
    for (const char *s = p + 1;;) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0)
            return cairn_err_set(CAIRN_EINVAL, "mount path '%s' has an empty part ('//' or a trailing '/')", p);
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
            return cairn_err_set(CAIRN_EINVAL, "mount path '%s' has a '.' or '..' part", p);
        if (!e)
            break;
        s = e + 1;
    }
    static const char *const banned[] = {"/proc", "/dev", "/sys"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(banned); i++) {
        size_t bl = strlen(banned[i]);
        if (!strncmp(p, banned[i], bl) && (p[bl] == '\0' || p[bl] == '/'))
            return cairn_err_set(CAIRN_EINVAL, "mount path '%s' is under %s, which the runtime owns", p, banned[i]);
    }
    return CAIRN_OK;
}

static int mount_find(const struct coord_sandbox_rec *r, const char *path)
{
    for (size_t i = 0; i < r->nmounts; i++)
        if (!strcmp(r->mounts[i].path, path))
            return (int)i;
    return -1;
}

/* The request's key (SECRET field): *has = present; EINVAL with cairn_csek_validate's message when bad. */
static int key_get(const struct cairn_msg *m, const uint8_t **key, size_t *len, bool *has)
{
    *key = NULL;
    *len = 0;
    *has = cairn_msg_get(m, "key") != NULL && cairn_msg_get_bin(m, "key", key, len) == CAIRN_OK;
    if (!*has)
        return CAIRN_OK;
    if (cairn_csek_validate(*key, *len) != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "%s", cairn_err_msg());
    return CAIRN_OK;
}

/* The domain id of a DEK. */
static int dek_domain(const struct cairn_secret *dek, uint8_t out[16])
{
    struct cairn_domain *d = NULL;
    CAIRN_FORWARD_IF_ERROR(cairn_domain_new(&d, dek->bytes));
    memcpy(out, cairn_domain_id(d), 16);
    cairn_domain_destroy(&d);
    return CAIRN_OK;
}

/* params of a job on the sandbox's worker: runtime_id, sandbox, worker, path */
static struct cairn_mval *job_params(struct cairn_msg *pm, const struct coord_sandbox *sb, const char *path)
{
    struct cairn_mval *p = coord_sandbox_job_params(pm, sb); /* running: it has a worker */
    cairn_mval_put_str(pm, p, "path", path);
    return p;
}

/* ---- sandbox.mount ------------------------------------------------------------------------------------- */

void coord_sandbox_on_mount(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *pm = NULL;
    const char *app = cairn_msg_app(m), *id = "", *path = "", *image = NULL, *req_id = NULL;
    uint64_t wait_ms = 0;
    const uint8_t *key = NULL;
    size_t klen = 0;
    bool has_key = false, has_used = false;
    struct cairn_secret *dek = NULL;
    struct coord_image_rec used;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    cairn_msg_get_str(m, "sandbox", &id, NULL);
    cairn_msg_get_str(m, "path", &path, NULL);
    if (cairn_msg_get_str(m, "image", &image, NULL) != CAIRN_OK)
        image = NULL;
    if (cairn_msg_get_str(m, "req_id", &req_id, NULL) != CAIRN_OK)
        req_id = NULL;
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    struct coord_sandbox *sb = coord_sandbox_request(c, mp, id, req_id, NULL, COORD_KIND_SBX_MOUNT_S, wait_ms);
    if (!sb)
        goto out;
    int rc = path_check(path);
    if (rc == CAIRN_OK && mount_find(&sb->rec, path) >= 0)
        rc = cairn_err_set(CAIRN_EEXIST, "%s in %s is already a mount: unmount it first", path, id);
    if (rc == CAIRN_OK && sb->rec.nmounts >= COORD_MOUNTS_MAX)
        rc = cairn_err_set(CAIRN_EINVAL, "%s has %d mounts, the most a sandbox may have", id, COORD_MOUNTS_MAX);
    if (rc == CAIRN_OK)
        rc = key_get(m, &key, &klen, &has_key);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
        goto out;
    }
    struct coord_image *img = NULL, *chain[COORD_CHAIN_MAX];
    size_t nchain = 0;
    uint8_t domain[16];
    if (image) {
        if ((rc = coord_image_resolve(c, app, image, &img)) != CAIRN_OK) {
            coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "%s", cairn_err_msg());
            goto out;
        }
        if (img->rec.csek && !has_key) {
            coord_reply_error(c, c->csock, m, CAIRN_EKEY,
                              "image %s is encrypted with a customer-supplied key: pass the same key (--key-file)",
                              img->rec.id);
            goto out;
        }
        if (!img->rec.csek && has_key) {
            coord_reply_error(c, c->csock, m, CAIRN_EINVAL,
                              "image %s is not encrypted with a customer-supplied key; mount it without a key",
                              img->rec.id);
            goto out;
        }
        if (img->rec.csek) {
            if (cairn_dek_unwrap(key, klen, img->rec.id, img->rec.wrapped_dek, &dek) != CAIRN_OK) {
                coord_reply_error(c, c->csock, m, CAIRN_EKEY, "wrong encryption key for image %s", img->rec.id);
                goto out;
            }
            if ((rc = dek_domain(dek, domain)) != CAIRN_OK || memcmp(domain, img->rec.domain, 16) != 0) {
                coord_reply_error(c, c->csock, m, rc ? rc : CAIRN_ECORRUPT,
                                  "image %s: its data key does not derive its domain", img->rec.id);
                goto out;
            }
            chain[0] = img; /* a CSEK image is a directory snapshot: one whole layer */
            nchain = 1;
        } else if ((rc = coord_image_chain(c, img, chain, &nchain)) != CAIRN_OK) {
            coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
            goto out;
        }
    }
    pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    if (!pm) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    struct cairn_mval *p = job_params(pm, sb, path);
    if (nchain) {
        struct cairn_mval *layers = cairn_mval_put_array(pm, p, "layers");
        for (size_t i = 0; i < nchain; i++) {
            struct cairn_mval *l = cairn_mval_push_map(pm, layers);
            cairn_mval_put_str(pm, l, "image", chain[i]->rec.id);
            cairn_mval_put_u64(pm, l, "manifest_len", chain[i]->rec.manifest_len);
            cairn_mval_put_bin(pm, l, "manifest", chain[i]->rec.manifest, chain[i]->rec.manifest_size);
        }
    }
    cairn_mval_put_bool(pm, p, "csek", dek != NULL);
    rc = cairn_msg_build_error(pm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    /* a use of the image: its sliding expiry moves (issue 5), in the job's batch */
    if (rc == CAIRN_OK && img && (rc = coord_image_rec_copy(&used, &img->rec)) == CAIRN_OK) {
        has_used = true;
        coord_image_touch_rec(&used, now_ns(c));
        rc = coord_meta_batch_image(c->batch, &used);
    }
    char jid[COORD_JOB_ID_LEN + 1];
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_SBX_MOUNT_S, .req_id = req_id,
                                  .params = pb.data, .params_len = pb.len, .pin = sb->rec.worker,
                                  .state = COORD_JOB_QUEUED, .dek = dek ? &dek : NULL,
                                  .dek_domain = dek ? domain : NULL};
    if (rc == CAIRN_OK)
        rc = coord_job_create(c, &spec, jid);
    else
        coord_batch_reset(c);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "mount in sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    if (has_used) {
        img->rec.last_used_ns = used.last_used_ns;
        img->rec.expires_ns = used.expires_ns;
    }
    cairn_info("sandbox '%s' of app '%s': mount job '%s' for %s at %s", id, app, jid,
               img ? img->rec.id : "an empty directory", path);
    coord_job_answer(c, mp, jid, COORD_KIND_SBX_MOUNT_S, wait_ms);
out:
    if (has_used)
        coord_image_rec_release(&used);
    cairn_secret_destroy(&dek);
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

/* ---- sandbox.unmount ----------------------------------------------------------------------------------- */

void coord_sandbox_on_unmount(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *pm = NULL;
    const char *app = cairn_msg_app(m), *id = "", *path = "", *req_id = NULL;
    uint64_t wait_ms = 0;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    cairn_msg_get_str(m, "sandbox", &id, NULL);
    cairn_msg_get_str(m, "path", &path, NULL);
    if (cairn_msg_get_str(m, "req_id", &req_id, NULL) != CAIRN_OK)
        req_id = NULL;
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    struct coord_sandbox *sb = coord_sandbox_request(c, mp, id, req_id, NULL, COORD_KIND_SBX_UNMOUNT_S, wait_ms);
    if (!sb)
        goto out;
    if (mount_find(&sb->rec, path) < 0) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "no mount at %s in %s", path, id);
        goto out;
    }
    pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    if (!pm) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    job_params(pm, sb, path);
    int rc = cairn_msg_build_error(pm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    char jid[COORD_JOB_ID_LEN + 1];
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_SBX_UNMOUNT_S, .req_id = req_id,
                                  .params = pb.data, .params_len = pb.len, .pin = sb->rec.worker,
                                  .state = COORD_JOB_QUEUED};
    if (rc == CAIRN_OK)
        rc = coord_job_create(c, &spec, jid);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "unmount in sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    cairn_info("sandbox '%s' of app '%s': unmount job '%s' for %s", id, app, jid, path);
    coord_job_answer(c, mp, jid, COORD_KIND_SBX_UNMOUNT_S, wait_ms);
out:
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

/* ---- sandbox.snapshot-dir ------------------------------------------------------------------------------ */

/* The DEK of a new CSEK image: the mounted CSEK image's when the key unwraps it, else a new one. */
static int snapshot_dek(struct coord *c, const struct coord_mount *mt, const uint8_t *key, size_t klen,
                        struct cairn_secret **dek, bool *reused)
{
    *reused = false;
    struct coord_image *mimg = mt->csek && mt->image[0] ? coord_image_get(c, mt->image) : NULL;
    if (mimg && mimg->rec.csek && !mimg->rec.collected &&
        cairn_dek_unwrap(key, klen, mimg->rec.id, mimg->rec.wrapped_dek, dek) == CAIRN_OK) {
        *reused = true;
        return CAIRN_OK;
    }
    cairn_err_clear();
    return cairn_dek_generate(dek);
}

void coord_sandbox_on_snapshot_dir(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *pm = NULL;
    const char *app = cairn_msg_app(m), *id = "", *path = "", *req_id = NULL;
    uint64_t wait_ms = 0, ttl_s = 0;
    const uint8_t *key = NULL;
    size_t klen = 0;
    bool has_key = false, reused = false;
    struct cairn_secret *dek = NULL;
    struct coord_image *img = NULL;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    cairn_msg_get_str(m, "sandbox", &id, NULL);
    cairn_msg_get_str(m, "path", &path, NULL);
    cairn_msg_get_str(m, "req_id", &req_id, NULL);
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    cairn_msg_opt_u64(m, "ttl_s", 0, &ttl_s);
    struct coord_sandbox *sb =
        coord_sandbox_request(c, mp, id, req_id, "sandbox.snapshot-dir", COORD_KIND_SNAPSHOT_DIR_S, wait_ms);
    if (!sb)
        goto out;
    int rc = CAIRN_OK, mi = mount_find(&sb->rec, path);
    if (mi < 0)
        rc = cairn_err_set(CAIRN_EINVAL,
                           "%s in %s was not mounted with 'cairn sandbox mount': only mounted directories can be "
                           "snapshotted",
                           path, id);
    if (rc == CAIRN_OK)
        rc = key_get(m, &key, &klen, &has_key);
    struct coord_app *a = coord_app_find(c, app);
    const uint8_t *dom = NULL;
    if (rc == CAIRN_OK && !a)
        rc = cairn_err_set(CAIRN_ENOTFOUND, "app '%s' not found", app);
    if (rc == CAIRN_OK)
        rc = coord_app_domain(c, a, &dom);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
        goto out;
    }
    const struct coord_mount *mt = &sb->rec.mounts[mi];
    img = cairn_calloc(1, sizeof(*img));
    pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    if (!img || !pm) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    struct coord_image_rec *r = &img->rec;
    coord_obj_new_id(c, "im-", r->id);
    memcpy(r->app, app, strlen(app) + 1);
    memcpy(r->kind, "dir", 4);
    memcpy(r->origin, mt->image, sizeof(r->origin));
    r->depth = 1;
    r->state = COORD_IMAGE_PENDING;
    r->created_ns = r->last_used_ns = now_ns(c);
    if (ttl_s) {
        r->expires_ns = r->created_ns + (int64_t)ttl_s * 1000000000ll;
        snprintf(r->retention, sizeof(r->retention), "ttl:%" PRIu64, ttl_s);
    } else {
        uint64_t s = c->cfg->dir_retention / 1000;
        if (s == 0)
            s = 1;
        r->expires_ns = r->created_ns + (int64_t)s * 1000000000ll;
        snprintf(r->retention, sizeof(r->retention), "sliding:%" PRIu64, s);
    }
    coord_job_new_id(c, r->job);
    if (has_key) {
        rc = snapshot_dek(c, mt, key, klen, &dek, &reused);
        if (rc == CAIRN_OK)
            rc = cairn_dek_wrap(key, klen, r->id, dek, r->wrapped_dek);
        if (rc == CAIRN_OK)
            rc = dek_domain(dek, r->domain);
        if (rc != CAIRN_OK) {
            coord_reply_error(c, c->csock, m, rc, "snapshot %s in sandbox '%s': %s", path, id, cairn_err_msg());
            goto out;
        }
        r->csek = true;
    } else {
        memcpy(r->domain, dom, sizeof(r->domain));
    }
    struct cairn_mval *p = job_params(pm, sb, path);
    cairn_mval_put_str(pm, p, "image", r->id);
    if (r->csek)
        cairn_mval_put_bool(pm, p, "csek", true);
    rc = cairn_msg_build_error(pm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    if (rc == CAIRN_OK)
        rc = coord_meta_batch_image(c->batch, r);
    if (rc == CAIRN_OK)
        rc = coord_image_add(c, img);
    if (rc != CAIRN_OK) {
        coord_batch_reset(c);
        coord_reply_error(c, c->csock, m, rc, "snapshot %s in sandbox '%s': %s", path, id, cairn_err_msg());
        goto out;
    }
    char iid[COORD_OBJ_ID_LEN + 1], jid[COORD_JOB_ID_LEN + 1];
    memcpy(iid, r->id, sizeof(iid));
    bool csek = r->csek;
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_SNAPSHOT_DIR_S, .req_id = req_id, .id = r->job,
                                  .params = pb.data, .params_len = pb.len, .pin = sb->rec.worker,
                                  .state = COORD_JOB_QUEUED, .dek = dek ? &dek : NULL,
                                  .dek_domain = dek ? r->domain : NULL};
    img = NULL; /* in the tables */
    rc = coord_job_create(c, &spec, jid);
    if (rc != CAIRN_OK) {
        coord_image_drop(c, coord_image_get(c, iid));
        coord_reply_error(c, c->csock, m, rc, "snapshot %s in sandbox '%s': %s", path, id, cairn_err_msg());
        goto out;
    }
    cairn_info("sandbox '%s' of app '%s': snapshot-dir job '%s' of %s for image '%s' (%s%s)", id, app, jid, path, iid,
               csek ? "csek" : "managed", reused ? ", data key of the mounted image" : "");
    coord_job_answer(c, mp, jid, COORD_KIND_SNAPSHOT_DIR_S, wait_ms);
out:
    if (img) {
        coord_image_rec_release(&img->rec);
        cairn_free(img);
    }
    cairn_secret_destroy(&dek);
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

/* ---- the end of mount / unmount / snapshot-dir jobs ---------------------------------------------------- */

/* The sandbox (params "sandbox", same app), path, first layer's image and csek of a job. */
static struct coord_sandbox *job_mount(struct coord *c, const struct coord_job *j, char *path, size_t cap,
                                       char image[COORD_OBJ_ID_LEN + 1], bool *csek)
{
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *p = NULL, *layers = NULL;
    const char *s = NULL;
    size_t len = 0;
    struct coord_sandbox *sb = NULL;
    image[0] = '\0';
    path[0] = '\0';
    *csek = false;
    if (coord_value_unpack(j->rec.params, j->rec.params_len, "params", &holder, &p) == CAIRN_OK) {
        if (cairn_mval_str(cairn_mval_get(p, "sandbox"), &s, &len) == CAIRN_OK && len == COORD_OBJ_ID_LEN)
            sb = coord_sandbox_get(c, s);
        if (cairn_mval_str(cairn_mval_get(p, "path"), &s, &len) == CAIRN_OK && len < cap) {
            memcpy(path, s, len);
            path[len] = '\0';
        }
        cairn_mval_bool(cairn_mval_get(p, "csek"), csek);
        layers = cairn_mval_get(p, "layers");
        if (layers && cairn_mval_len(layers) > 0 &&
            cairn_mval_str(cairn_mval_get(cairn_mval_at(layers, 0), "image"), &s, &len) == CAIRN_OK &&
            len == COORD_OBJ_ID_LEN) {
            memcpy(image, s, len);
            image[len] = '\0';
        }
    }
    cairn_msg_destroy(&holder);
    if (sb && strcmp(sb->rec.app, j->rec.app) != 0)
        sb = NULL;
    if (!path[0])
        sb = NULL;
    return sb;
}

static bool below(const char *p, const char *top)
{
    size_t n = strlen(top);
    return !strncmp(p, top, n) && (p[n] == '\0' || p[n] == '/');
}

int coord_mounts_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f)
{
    if (j->kind_id == COORD_KIND_SNAPSHOT_DIR)
        return coord_image_finish_prepare(c, j, f);
    if (f->state != COORD_JOB_SUCCEEDED)
        return CAIRN_OK; /* a failed mount or unmount changes nothing */
    char path[PATH_MAX_LEN + 1], image[COORD_OBJ_ID_LEN + 1];
    bool csek = false;
    struct coord_sandbox *sb = job_mount(c, j, path, sizeof(path), image, &csek);
    if (!sb)
        return CAIRN_OK;
    bool mount = j->kind_id == COORD_KIND_SBX_MOUNT;
    if (mount && (mount_find(&sb->rec, path) >= 0 || sb->rec.nmounts >= COORD_MOUNTS_MAX))
        return CAIRN_OK;
    CAIRN_FORWARD_IF_ERROR(coord_sandbox_rec_copy(&f->sb_next, &sb->rec));
    f->sb = sb;
    f->has_sb_next = true;
    struct coord_sandbox_rec *n = &f->sb_next;
    n->updated_ns = now_ns(c);
    if (mount) {
        struct coord_mount *mts = cairn_realloc(n->mounts, (n->nmounts + 1) * sizeof(*mts));
        if (!mts)
            return cairn_err_set(CAIRN_ENOMEM, "out of memory recording a mount");
        n->mounts = mts;
        struct coord_mount *mt = &mts[n->nmounts];
        memset(mt, 0, sizeof(*mt));
        mt->path = cairn_strdup(path);
        if (!mt->path)
            return cairn_err_set(CAIRN_ENOMEM, "out of memory recording a mount");
        memcpy(mt->image, image, sizeof(mt->image));
        mt->csek = csek;
        n->nmounts++;
    } else {
        size_t k = 0;
        for (size_t i = 0; i < n->nmounts; i++) {
            if (below(n->mounts[i].path, path)) {
                cairn_free(n->mounts[i].path);
                continue;
            }
            n->mounts[k++] = n->mounts[i];
        }
        n->nmounts = k;
    }
    return coord_meta_batch_sandbox(c->batch, n);
}

void coord_mounts_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply)
{
    if (j->kind_id == COORD_KIND_SNAPSHOT_DIR) {
        coord_image_finish_apply(c, j, f, apply);
        return;
    }
    struct coord_sandbox *sb = f->sb;
    if (!sb || !f->has_sb_next)
        return;
    if (apply) {
        /* only the mounts change: the rest of the record (state, worker links) stays as it is in memory */
        struct coord_mount *old = sb->rec.mounts;
        size_t nold = sb->rec.nmounts;
        sb->rec.mounts = f->sb_next.mounts;
        sb->rec.nmounts = f->sb_next.nmounts;
        sb->rec.updated_ns = f->sb_next.updated_ns;
        f->sb_next.mounts = old;
        f->sb_next.nmounts = nold;
        cairn_info("sandbox '%s' of app '%s': %zu mounts after job '%s' (%s)", sb->rec.id, sb->rec.app,
                   sb->rec.nmounts, j->rec.id, j->rec.kind);
    }
    coord_sandbox_rec_release(&f->sb_next);
    f->has_sb_next = false;
}
