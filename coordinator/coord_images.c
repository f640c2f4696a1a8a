/*
 * coord_images.c: images (docs/internals/sandboxes.md "Records"), the name
 * index, image.import uploads and upload.read, image.ls/show/rm, and what the
 * end of an image-import or snapshot-fs job does to the image it makes.
 *
 * Image state machine (i/<id>.state; the function that performs each step)
 *
 *   image.import last piece ──┐
 *   sandbox.snapshot-fs ──────┤
 *   sandbox.snapshot-dir ─────┴─> PENDING ──job succeeded──> READY ──image.rm / expiry──> EXPIRED
 *                                    └────job failed─────> (deleted, or EXPIRED    (tombstone) ──GC──> collected
 *                                                          when it reported refs)
 *
 *   coord_image_on_import          (none) -> PENDING (with the import job, one batch)
 *   coord_sandbox_on_snapshot_fs   (none) -> PENDING (with the snapshot-fs job, one batch)
 *   coord_image_finish_prepare     PENDING -> READY (layer from the job's result) | deleted,
 *                                  in the batch that records the job's end
 *   coord_image_on_rm              READY -> EXPIRED (expires_at = now); refused (EBUSY) while a
 *                                  creating or running sandbox uses it or a live image has it as parent
 *   coord_retention_sweep          READY -> EXPIRED once expires_at passed; EXPIRED -> collected
 *                                  (coord_retention.c); a dropped pending image's tombstone is deleted
 *
 * Invariants
 *   M1. Every i/ record is in c->images and in its app's sorted list.
 *   M2. Pending images are invisible: image.ls/show/rm and sandbox.create
 *       answer ENOTFOUND for them exactly as for unknown ids or ids of another
 *       app. Images past their expires_at, or EXPIRED, are ENOTFOUND
 *       "image im-x expired on <UTC>" (coord_image_check_expiry); image.ls hides
 *       them. A dropped pending image (EXPIRED, expires_at 0) stays "not found".
 *   M3. n/<app>/<name> names the newest (created_at, then id) ready image with
 *       that name; it is rewritten in the batch of the change that moves it.
 *       In memory the same answer is a->names (rebuilt from the records at
 *       start-up, so the two can never disagree after a restart).
 *   M4. An upload: u/<app>/<upload> exists from the first piece to the last;
 *       DATA_DIR/uploads/<job id>.tar holds exactly the bytes acknowledged
 *       (received = its size; a piece is accepted only at offset = received,
 *       a piece wholly below it is a retry and is acknowledged). The last piece
 *       creates the image and the job (req_id = the upload id) and deletes u/
 *       in one batch; the file then belongs to the job and is deleted when the
 *       job ends. Uploads idle for COORD_UPLOAD_IDLE_S are dropped; files with
 *       no upload and no unfinished job are deleted at start-up.
 *   M5. upload.read serves an upload only to the worker that runs its import
 *       job, while it runs: an unknown or ended job is ENOTFOUND, a job of
 *       another worker EPERM.
 */
#include "coord.h"

#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define UPLOAD_SWEEP_MS 60000

static int64_t now_ns(struct coord *c) { return cairn_clock_now_ns(&c->clock); }

struct coord_app *coord_app_find(struct coord *c, const char *app)
{
    return app ? coord_map_sget(&c->apps, app) : NULL;
}

int coord_app_domain(struct coord *c, struct coord_app *a, const uint8_t **out)
{
    if (!a->has_domain) {
        struct cairn_domain *d = NULL;
        CAIRN_FORWARD_IF_ERROR(cairn_domain_new_managed(&d, c->master->bytes, a->rec.name));
        memcpy(a->domain, cairn_domain_id(d), sizeof(a->domain));
        cairn_domain_destroy(&d);
        a->has_domain = true;
    }
    *out = a->domain;
    return CAIRN_OK;
}

void coord_obj_new_id(struct coord *c, const char *prefix, char out[COORD_OBJ_ID_LEN + 1])
{
    for (int tries = 0; tries < 8; tries++) {
        uint8_t rnd[8];
        cairn_random_bytes(rnd, sizeof(rnd));
        memcpy(out, prefix, 3);
        cairn_hex_encode(out + 3, rnd, sizeof(rnd));
        if (!coord_map_sget(&c->images, out) && !coord_map_sget(&c->sandboxes, out))
            return;
    }
}

struct coord_image *coord_image_get(struct coord *c, const char *id)
{
    return coord_map_sget(&c->images, id);
}

int coord_image_chain(struct coord *c, struct coord_image *img, struct coord_image **chain, size_t *n)
{
    *n = 0;
    for (struct coord_image *cur = img;;) {
        if (*n == COORD_CHAIN_MAX)
            return cairn_err_set(CAIRN_ECORRUPT, "image '%s' has more than %d layers", img->rec.id, COORD_CHAIN_MAX);
        chain[(*n)++] = cur;
        if (!cur->rec.parent[0])
            return CAIRN_OK;
        struct coord_image *parent = coord_image_get(c, cur->rec.parent);
        if (!parent || parent->rec.state == COORD_IMAGE_PENDING || parent->rec.collected ||
            strcmp(parent->rec.app, cur->rec.app) != 0)
            return cairn_err_set(CAIRN_ECORRUPT, "image '%s' is layered on image '%s', which is gone", cur->rec.id,
                                 cur->rec.parent);
        cur = parent;
    }
}

static bool image_expired(struct coord *c, const struct coord_image *img)
{
    return img->rec.state == COORD_IMAGE_EXPIRED || (img->rec.expires_ns > 0 && now_ns(c) >= img->rec.expires_ns);
}

int coord_image_resolve(struct coord *c, const char *app, const char *ref, struct coord_image **out)
{
    *out = NULL;
    struct coord_app *a = coord_app_find(c, app);
    struct coord_image *img = NULL;
    bool by_id = strncmp(ref, "im-", 3) == 0;
    if (by_id) {
        img = coord_image_get(c, ref);
        if (!img || !a || strcmp(img->rec.app, app) != 0 || img->rec.state == COORD_IMAGE_PENDING)
            return cairn_err_set(CAIRN_ENOTFOUND, "image '%s' not found", ref);
    } else {
        img = a ? coord_map_sget(&a->names, ref) : NULL;
        if (!img && !strcmp(ref, "default"))
            return cairn_err_set(CAIRN_ENOTFOUND,
                                 "no image named 'default' in app '%s'; import one with: cairn image import "
                                 "--name default PATH",
                                 app);
        if (!img)
            return cairn_err_set(CAIRN_ENOTFOUND, "no image named '%s' in app '%s'", ref, app);
    }
    CAIRN_FORWARD_IF_ERROR(coord_image_check_expiry(c, img));
    *out = img;
    return CAIRN_OK;
}

/* ---- memory (M1, M3) --------------------------------------------------------------------------- */

static void image_free(struct coord_image *img)
{
    if (!img)
        return;
    coord_image_rec_release(&img->rec);
    cairn_free(img);
}

int coord_image_add(struct coord *c, struct coord_image *img)
{
    struct coord_app *a = coord_app_find(c, img->rec.app);
    if (!a)
        return cairn_err_set(CAIRN_ENOTFOUND, "image '%s' belongs to unknown app '%s'", img->rec.id, img->rec.app);
    CAIRN_FORWARD_IF_ERROR(coord_map_sput(&c->images, img->rec.id, img));
    int rc = coord_vec_insert(&a->images, img->rec.id, img);
    if (rc != CAIRN_OK)
        coord_map_sdel(&c->images, img->rec.id);
    return rc;
}

void coord_image_drop(struct coord *c, struct coord_image *img)
{
    if (!img)
        return;
    struct coord_app *a = coord_app_find(c, img->rec.app);
    if (a) {
        coord_vec_remove(&a->images, img->rec.id);
        if (img->rec.name && coord_map_sget(&a->names, img->rec.name) == img)
            coord_map_sdel(&a->names, img->rec.name);
    }
    coord_map_sdel(&c->images, img->rec.id);
    image_free(img);
}

static bool newer(const struct coord_image *a, const struct coord_image *b)
{
    if (a->rec.created_ns != b->rec.created_ns)
        return a->rec.created_ns > b->rec.created_ns;
    return strcmp(a->rec.id, b->rec.id) > 0;
}

/* M3: the newest ready image named `name`, counting `plus` as ready and leaving `minus` out. */
static const struct coord_image *name_winner(struct coord_app *a, const char *name, const struct coord_image *plus,
                                             const struct coord_image *minus)
{
    const struct coord_image *best = NULL;
    for (size_t i = 0; i < a->images.n; i++) {
        const struct coord_image *img = a->images.v[i].val;
        if (img == minus || !img->rec.name || strcmp(img->rec.name, name) != 0)
            continue;
        if (img->rec.state != COORD_IMAGE_READY && img != plus)
            continue;
        if (!best || newer(img, best))
            best = img;
    }
    return best;
}

int coord_image_name_stage(struct coord *c, const char *app, const char *name, const struct coord_image *plus,
                           const struct coord_image *minus, const struct coord_image **winner)
{
    struct coord_app *a = coord_app_find(c, app);
    *winner = a ? name_winner(a, name, plus, minus) : NULL;
    char key[COORD_KEY_MAX];
    size_t kl = coord_key_name(key, app, name);
    if (!kl)
        return cairn_err_set(CAIRN_EINVAL, "image name '%s' is too long", name);
    if (!*winner) {
        cairn_kv_batch_delete(c->batch, key, kl);
        return CAIRN_OK;
    }
    return coord_meta_batch_str(c->batch, key, kl, (*winner)->rec.id);
}

void coord_image_name_apply(struct coord *c, const char *app, const char *name, const struct coord_image *winner)
{
    struct coord_app *a = coord_app_find(c, app);
    if (!a)
        return;
    if (!winner) {
        coord_map_sdel(&a->names, name);
        return;
    }
    /* the key lives in the winner's record */
    if (coord_map_sput(&a->names, winner->rec.name, (void *)winner) != CAIRN_OK)
        cairn_error("out of memory indexing image name '%s'", name);
}

/* ---- records on the wire ----------------------------------------------------------------------- */

static void image_put(struct cairn_msg *r, struct cairn_mval *e, const struct coord_image *img)
{
    const struct coord_image_rec *rec = &img->rec;
    cairn_mval_put_str(r, e, "id", rec->id);
    cairn_mval_put_str(r, e, "kind", rec->kind);
    if (rec->parent[0])
        cairn_mval_put_str(r, e, "parent", rec->parent);
    if (rec->name)
        cairn_mval_put_str(r, e, "name", rec->name);
    cairn_mval_put_str(r, e, "encryption", rec->csek ? "csek" : "managed");
    cairn_mval_put_u64(r, e, "created_at", rec->created_ns > 0 ? (uint64_t)rec->created_ns : 0);
    if (rec->last_used_ns > 0)
        cairn_mval_put_u64(r, e, "last_used_at", (uint64_t)rec->last_used_ns);
    if (rec->expires_ns > 0)
        cairn_mval_put_u64(r, e, "expires_at", (uint64_t)rec->expires_ns);
    cairn_mval_put_str(r, e, "retention", rec->retention[0] ? rec->retention : "never");
    cairn_mval_put_u64(r, e, "size", rec->size);
    cairn_mval_put_u64(r, e, "files", rec->files);
    cairn_mval_put_u64(r, e, "stored", rec->stored);
}

static bool image_listed(struct coord *c, const struct coord_image *img, const char *kind)
{
    return img->rec.state == COORD_IMAGE_READY && !image_expired(c, img) && (!kind || !strcmp(img->rec.kind, kind));
}

void coord_image_on_ls(struct coord *c, const struct cairn_msg *m)
{
    const char *kind = NULL;
    if (cairn_msg_get_str(m, "kind", &kind, NULL) != CAIRN_OK)
        kind = NULL;
    struct coord_app *a = coord_app_find(c, cairn_msg_app(m));
    struct coord_page pg;
    if (!coord_page_start(c, m, "images", a != NULL, &pg))
        return;
    for (size_t i = coord_vec_after(&a->images, pg.after); i < a->images.n; i++) {
        const struct coord_image *img = a->images.v[i].val;
        if (!image_listed(c, img, kind))
            continue;
        struct cairn_mval *e = coord_page_add(&pg, img->rec.id);
        if (!e)
            break;
        image_put(pg.r, e, img);
    }
    coord_page_send(c, m, &pg);
}

void coord_image_on_show(struct coord *c, const struct cairn_msg *m)
{
    const char *id = "";
    cairn_msg_get_str(m, "image", &id, NULL);
    struct coord_image *img = NULL;
    if (coord_image_resolve(c, cairn_msg_app(m), id, &img) != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "%s", cairn_err_msg());
        return;
    }
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r)
        image_put(r, cairn_msg_set_map(r, "image"), img);
    coord_send(c, c->csock, &r);
}

void coord_image_on_rm(struct coord *c, const struct cairn_msg *m)
{
    const char *app = cairn_msg_app(m), *id = "";
    cairn_msg_get_str(m, "image", &id, NULL);
    struct coord_app *a = coord_app_find(c, app);
    struct coord_image *img = coord_image_get(c, id);
    if (!a || !img || strcmp(img->rec.app, app) != 0 || img->rec.state != COORD_IMAGE_READY) {
        if (a && img && !strcmp(img->rec.app, app) && coord_image_check_expiry(c, img) != CAIRN_OK)
            coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "%s", cairn_err_msg());
        else
            coord_reply_error(c, c->csock, m, CAIRN_ENOTFOUND, "image '%s' not found", id);
        return;
    }
    for (size_t i = 0; i < a->sandboxes.n; i++) {
        const struct coord_sandbox *sb = a->sandboxes.v[i].val;
        if ((sb->rec.state == COORD_SBX_RUNNING || sb->rec.state == COORD_SBX_CREATING) &&
            !strcmp(sb->rec.image, id)) {
            coord_reply_error(c, c->csock, m, CAIRN_EBUSY,
                              "image '%s' is in use by sandbox '%s' (%s); terminate it first", id, sb->rec.id,
                              coord_sandbox_state_name(sb->rec.state));
            return;
        }
    }
    for (size_t i = 0; i < a->images.n; i++) {
        const struct coord_image *child = a->images.v[i].val;
        if (!strcmp(child->rec.parent, id) && child->rec.state != COORD_IMAGE_EXPIRED) {
            coord_reply_error(c, c->csock, m, CAIRN_EBUSY,
                              "image '%s' is the parent of image '%s'%s; remove that one first", id, child->rec.id,
                              child->rec.state == COORD_IMAGE_PENDING ? " (being created)" : "");
            return;
        }
    }
    /* issue 5: removed = expired now (a tombstone the collector frees) */
    struct coord_image_rec next;
    int rc = coord_image_rec_copy(&next, &img->rec);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "remove image '%s': %s", id, cairn_err_msg());
        return;
    }
    int64_t now = now_ns(c);
    next.state = COORD_IMAGE_EXPIRED;
    if (next.expires_ns <= 0 || next.expires_ns > now)
        next.expires_ns = now;
    rc = coord_meta_batch_image(c->batch, &next);
    const struct coord_image *winner = NULL;
    if (rc == CAIRN_OK && img->rec.name)
        rc = coord_image_name_stage(c, app, img->rec.name, NULL, img, &winner);
    if (rc == CAIRN_OK)
        rc = cairn_kv_batch_commit(c->kv, c->batch);
    else
        coord_batch_reset(c);
    if (rc != CAIRN_OK) {
        coord_image_rec_release(&next);
        coord_reply_error(c, c->csock, m, rc, "remove image '%s': %s", id, cairn_err_msg());
        return;
    }
    img->rec.state = next.state;
    img->rec.expires_ns = next.expires_ns;
    coord_image_rec_release(&next);
    if (img->rec.name)
        coord_image_name_apply(c, app, img->rec.name, winner);
    cairn_info("image '%s' of app '%s' removed (expired now; its chunks are collected)", id, app);
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    coord_send(c, c->csock, &r);
}

/* ---- uploads (M4) ------------------------------------------------------------------------------ */

static void upload_path(struct coord *c, const char *job, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.tar", c->uploads_dir, job);
}

static void upload_free(struct coord_upload *u)
{
    if (!u)
        return;
    coord_upload_rec_release(&u->rec);
    cairn_free(u);
}

/* Forget an upload: record (when persist), file, memory. */
static void upload_drop(struct coord *c, struct coord_upload *u, bool persist, bool unlink_file)
{
    char key[COORD_KEY_MAX], path[4200];
    if (persist) {
        size_t kl = coord_key_upload(key, u->rec.app, u->rec.upload);
        if (kl && cairn_kv_delete(c->kv, key, kl) != CAIRN_OK)
            cairn_warn("delete upload record '%s': %s", key, cairn_err_msg());
    }
    if (unlink_file) {
        upload_path(c, u->rec.job, path, sizeof(path));
        if (unlink(path) != 0 && errno != ENOENT)
            cairn_warn("delete upload file '%s': %s", path, strerror(errno));
    }
    coord_map_sdel(&c->uploads, u->key);
    upload_free(u);
}

/* Append bytes at the end of the upload's file; on failure it is cut back to what it held. */
static int upload_append(struct coord *c, struct coord_upload *u, const uint8_t *p, size_t n)
{
    char path[4200];
    upload_path(c, u->rec.job, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "open upload file '%s'", path);
    int rc = CAIRN_OK;
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(fd, p + off, n - off, (off_t)(u->received + off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            rc = cairn_err_set_errno(cairn_err_from_errno(e), e, "write upload file '%s'", path);
            break;
        }
        off += (size_t)w;
    }
    if (rc != CAIRN_OK && ftruncate(fd, (off_t)u->received) != 0)
        cairn_warn("cut upload file '%s' back: %s", path, strerror(errno));
    close(fd);
    return rc;
}

static int upload_sync(struct coord *c, struct coord_upload *u)
{
    char path[4200];
    upload_path(c, u->rec.job, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "open upload file '%s'", path);
    int rc = fdatasync(fd) == 0 ? CAIRN_OK : cairn_err_set_errno(CAIRN_EIO, errno, "sync upload file '%s'", path);
    close(fd);
    return rc;
}

static void reply_received(struct coord *c, const struct cairn_msg *m, uint64_t received)
{
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r)
        cairn_msg_set_u64(r, "received", received);
    coord_send(c, c->csock, &r);
}

/* The first piece: a new upload (record persisted, empty file). */
static int upload_start(struct coord *c, const struct cairn_msg *m, const char *app, const char *upload,
                        const char *key, struct coord_upload **out)
{
    const char *name = NULL, *format = NULL;
    size_t name_len = 0, format_len = 0;
    uint64_t size = 0;
    if (cairn_msg_get_str(m, "name", &name, &name_len) != CAIRN_OK || name_len == 0)
        name = NULL;
    if (cairn_msg_get_str(m, "format", &format, &format_len) != CAIRN_OK)
        format = NULL;
    struct coord_upload *u = cairn_calloc(1, sizeof(*u));
    if (!u)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory starting upload '%s'", upload);
    memcpy(u->rec.app, app, strlen(app) + 1);
    memcpy(u->rec.upload, upload, strlen(upload) + 1);
    memcpy(u->key, key, strlen(key) + 1);
    coord_job_new_id(c, u->rec.job);
    coord_obj_new_id(c, "im-", u->rec.image);
    if (name && !(u->rec.name = cairn_strdup(name))) {
        upload_free(u);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory starting upload '%s'", upload);
    }
    if (format)
        memcpy(u->rec.format, format, CAIRN_MIN(format_len, sizeof(u->rec.format) - 1));
    if (cairn_msg_get_u64(m, "size", &size) == CAIRN_OK) {
        u->rec.has_size = true;
        u->rec.size = size;
    }
    u->rec.created_ns = u->rec.updated_ns = now_ns(c);

    char path[4200];
    upload_path(c, u->rec.job, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = cairn_err_set_errno(cairn_err_from_errno(errno), errno, "create upload file '%s'", path);
        upload_free(u);
        return rc;
    }
    close(fd);
    int rc = coord_meta_batch_upload(c->batch, &u->rec);
    if (rc == CAIRN_OK)
        rc = cairn_kv_batch_commit(c->kv, c->batch);
    else
        coord_batch_reset(c);
    if (rc == CAIRN_OK)
        rc = coord_map_sput(&c->uploads, u->key, u);
    if (rc != CAIRN_OK) {
        unlink(path);
        upload_free(u);
        return rc;
    }
    cairn_debug("upload '%s' of app '%s' started (job '%s')", upload, app, u->rec.job);
    *out = u;
    return CAIRN_OK;
}

/* The last piece: the pending image and its import job, one batch; the upload record goes. */
static int upload_finish(struct coord *c, struct coord_upload *u, char job_out[COORD_JOB_ID_LEN + 1])
{
    if (u->rec.has_size && u->received != u->rec.size)
        return cairn_err_set(CAIRN_EINVAL, "upload '%s': %" PRIu64 " bytes received, %" PRIu64 " announced",
                             u->rec.upload, u->received, u->rec.size);
    if (u->received == 0)
        return cairn_err_set(CAIRN_EINVAL, "upload '%s' is empty: nothing to import", u->rec.upload);
    CAIRN_FORWARD_IF_ERROR(upload_sync(c, u));
    struct coord_app *a = coord_app_find(c, u->rec.app);
    const uint8_t *dom = NULL;
    if (!a)
        return cairn_err_set(CAIRN_ENOTFOUND, "app '%s' not found", u->rec.app);
    CAIRN_FORWARD_IF_ERROR(coord_app_domain(c, a, &dom));

    struct coord_image *img = cairn_calloc(1, sizeof(*img));
    struct cairn_msg *pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    int rc = img && pm ? CAIRN_OK : cairn_err_set(CAIRN_ENOMEM, "out of memory finishing upload");
    if (rc == CAIRN_OK) {
        struct coord_image_rec *r = &img->rec;
        memcpy(r->id, u->rec.image, sizeof(r->id));
        memcpy(r->app, u->rec.app, sizeof(r->app));
        memcpy(r->kind, "base", 5);
        if (u->rec.name && !(r->name = cairn_strdup(u->rec.name)))
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory finishing upload");
        r->depth = 1;
        memcpy(r->domain, dom, sizeof(r->domain));
        r->state = COORD_IMAGE_PENDING;
        r->created_ns = now_ns(c);
        memcpy(r->retention, "never", 6);
        memcpy(r->job, u->rec.job, sizeof(r->job));
        r->size = u->received;
    }
    if (rc == CAIRN_OK) {
        struct cairn_mval *p = cairn_msg_set_map(pm, "params");
        cairn_mval_put_str(pm, p, "image", u->rec.image);
        cairn_mval_put_str(pm, p, "app", u->rec.app);
        cairn_mval_put_u64(pm, p, "size", u->received);
        if (u->rec.name)
            cairn_mval_put_str(pm, p, "name", u->rec.name);
        if (u->rec.format[0])
            cairn_mval_put_str(pm, p, "format", u->rec.format);
        rc = cairn_msg_build_error(pm);
        if (rc == CAIRN_OK)
            rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    }
    char key[COORD_KEY_MAX];
    size_t kl = coord_key_upload(key, u->rec.app, u->rec.upload);
    if (rc == CAIRN_OK)
        rc = coord_meta_batch_image(c->batch, &img->rec);
    if (rc == CAIRN_OK) {
        cairn_kv_batch_delete(c->batch, key, kl);
        rc = coord_image_add(c, img);
    }
    if (rc != CAIRN_OK) {
        coord_batch_reset(c);
        image_free(img);
        goto out;
    }
    struct coord_job_spec spec = {.app = u->rec.app, .kind = COORD_KIND_IMPORT_S, .req_id = u->rec.upload,
                                  .id = u->rec.job, .params = pb.data, .params_len = pb.len,
                                  .state = COORD_JOB_QUEUED};
    memcpy(job_out, u->rec.job, COORD_JOB_ID_LEN + 1);
    cairn_info("upload '%s' of app '%s' complete (%" PRIu64 " bytes): import job '%s' for image '%s'",
               u->rec.upload, u->rec.app, u->received, u->rec.job, u->rec.image);
    /* the job may end at once (dispatcher): the image must be in memory for its end */
    char image_id[COORD_OBJ_ID_LEN + 1];
    memcpy(image_id, img->rec.id, sizeof(image_id));
    rc = coord_job_create(c, &spec, job_out);
    if (rc != CAIRN_OK) {
        struct coord_image *still = coord_image_get(c, image_id);
        coord_image_drop(c, still);
        goto out;
    }
out:
    cairn_buf_release(&pb);
    cairn_msg_destroy(&pm);
    return rc;
}

void coord_image_on_import(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp;
    const char *app = cairn_msg_app(m), *upload = NULL;
    size_t upload_len = 0;
    uint64_t offset = 0, wait_ms = 0;
    bool last = false;
    cairn_msg_get_str(m, "upload", &upload, &upload_len);
    cairn_msg_get_u64(m, "offset", &offset);
    cairn_msg_get_bool(m, "last", &last);
    cairn_msg_opt_u64(m, "wait_ms", 0, &wait_ms);
    const uint8_t *data = (const uint8_t *)"";
    size_t dlen = 0;
    if (cairn_msg_frame_count(m) > 0 && cairn_msg_frame(m, 0, &data, &dlen) != CAIRN_OK) {
        data = (const uint8_t *)"";
        dlen = 0;
    }
    if (!app || !upload || upload_len < 1 || upload_len > COORD_ID_MAX) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "image.import needs an upload id of 1..64 bytes");
        return;
    }

    /* the upload is complete: its job answers (retries of the last piece are safe) */
    if (coord_req_answered(c, mp, app, upload, COORD_KIND_IMPORT_S, wait_ms))
        return;
    int rc;
    char jid[COORD_JOB_ID_LEN + 1];
    char key[2 * COORD_ID_MAX + 2];
    snprintf(key, sizeof(key), "%s/%s", app, upload);
    struct coord_upload *u = coord_map_sget(&c->uploads, key);
    if (!u) {
        if (offset != 0) {
            coord_reply_error(c, c->csock, m, CAIRN_EINVAL,
                              "upload '%s' is unknown (never started, or dropped after %d s without a piece): "
                              "start again at offset 0",
                              upload, COORD_UPLOAD_IDLE_S);
            return;
        }
        if ((rc = upload_start(c, m, app, upload, key, &u)) != CAIRN_OK) {
            coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
            return;
        }
    }
    if (offset > u->received) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL,
                          "upload '%s': piece at offset %" PRIu64 " but %" PRIu64 " bytes received so far", upload,
                          offset, u->received);
        return;
    }
    if (dlen > UINT64_MAX - offset || (u->rec.has_size && offset + dlen > u->rec.size)) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL,
                          "upload '%s': piece ends after the announced size of %" PRIu64 " bytes", upload,
                          u->rec.size);
        return;
    }
    uint64_t end = offset + dlen;
    if (end > u->received) {
        /* a retry that overlaps what we hold contributes only its new tail */
        size_t skip = (size_t)(u->received - offset);
        rc = upload_append(c, u, data + skip, dlen - skip);
        if (rc != CAIRN_OK) {
            coord_reply_error(c, c->csock, m, rc, "upload '%s': %s", upload, cairn_err_msg());
            return;
        }
        u->received = end;
    }
    u->rec.updated_ns = now_ns(c);
    if (!last) {
        reply_received(c, m, u->received);
        return;
    }
    rc = upload_finish(c, u, jid);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
        return;
    }
    upload_drop(c, u, false, false); /* record deleted by the batch; the file is the job's now */
    coord_job_answer(c, mp, jid, COORD_KIND_IMPORT_S, wait_ms);
}

void coord_upload_on_read(struct coord *c, const struct cairn_msg *m)
{
    const char *id = "";
    uint64_t offset = 0, len = 0;
    cairn_msg_get_str(m, "job", &id, NULL);
    cairn_msg_get_u64(m, "offset", &offset);
    cairn_msg_get_u64(m, "len", &len);
    struct coord_job *j = coord_job_find(c, id);
    if (!j || j->kind_id != COORD_KIND_IMPORT) {
        coord_reply_error(c, c->wsock, m, CAIRN_ENOTFOUND, "job '%s' is not a running image import", id);
        return;
    }
    if (j->rec.state != COORD_JOB_RUNNING || !j->w || !coord_worker_key_ok(j->w, m)) {
        coord_reply_error(c, c->wsock, m, CAIRN_EPERM, "job '%s' does not run on this worker", id);
        return;
    }
    if (len > CAIRN_PROTO_MAX_FRAME)
        len = CAIRN_PROTO_MAX_FRAME;
    char path[4200];
    upload_path(c, j->rec.id, path, sizeof(path));
    uint8_t *buf = NULL;
    struct cairn_msg *r = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    int rc = CAIRN_OK;
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "upload of job '%s' unreadable", id);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size, n = offset < size ? CAIRN_MIN(len, size - offset) : 0;
    buf = cairn_malloc(n ? (size_t)n : 1);
    if (!buf) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory reading the upload of job '%s'", id);
        goto out;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + got, (size_t)n - got, (off_t)(offset + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = cairn_err_set_errno(CAIRN_EIO, k < 0 ? errno : EIO, "read the upload of job '%s'", id);
            goto out;
        }
        got += (size_t)k;
    }
    r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r) {
        cairn_msg_set_u64(r, "size", size);
        cairn_msg_add_frame(r, buf, got);
    }
    coord_send(c, c->wsock, &r);
out:
    if (rc != CAIRN_OK)
        coord_reply_error(c, c->wsock, m, rc, "%s", cairn_err_msg());
    if (fd >= 0)
        close(fd);
    cairn_free(buf);
}

void coord_images_tick(struct coord *c, uint64_t now_mono)
{
    if (now_mono < c->next_upload_sweep_mono)
        return;
    c->next_upload_sweep_mono = now_mono + UPLOAD_SWEEP_MS * 1000000ull;
    int64_t limit = now_ns(c) - (int64_t)COORD_UPLOAD_IDLE_S * 1000000000ll;
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->uploads, &pos, &k, &kl, &v)) {
        struct coord_upload *u = v;
        if (u->rec.updated_ns < limit) {
            cairn_info("dropping upload '%s' of app '%s': no piece for %d s", u->rec.upload, u->rec.app,
                       COORD_UPLOAD_IDLE_S);
            upload_drop(c, u, true, true);
        }
    }
}

/* ---- the end of import and snapshot-fs jobs ---------------------------------------------------- */

/* The image a job makes: params "image". */
static struct coord_image *job_image(struct coord *c, const struct coord_job *j)
{
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *p = NULL;
    const char *id = NULL;
    size_t len = 0;
    struct coord_image *img = NULL;
    if (coord_value_unpack(j->rec.params, j->rec.params_len, "params", &holder, &p) == CAIRN_OK &&
        cairn_mval_str(cairn_mval_get(p, "image"), &id, &len) == CAIRN_OK && len == COORD_OBJ_ID_LEN)
        img = coord_image_get(c, id);
    cairn_msg_destroy(&holder);
    if (img && strcmp(img->rec.job, j->rec.id) != 0)
        img = NULL;
    return img;
}

static bool res_u64(const struct cairn_mval *res, const char *key, uint64_t *v)
{
    return res && cairn_mval_u64(cairn_mval_get(res, key), v) == CAIRN_OK;
}

int coord_image_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f)
{
    struct coord_image *img = job_image(c, j);
    if (!img || img->rec.state != COORD_IMAGE_PENDING) {
        if (!img)
            cairn_warn("job '%s' ended but the image it makes is gone", j->rec.id);
        return CAIRN_OK;
    }
    f->img = img;
    char key[COORD_KEY_MAX];
    if (f->state == COORD_JOB_SUCCEEDED) {
        const struct cairn_mval *res = f->result;
        const uint8_t *man = NULL;
        size_t man_len = 0;
        uint64_t mlen = 0, files = 0, size = 0, stored = 0, pause_ms = 0;
        const char *rid = NULL;
        size_t rid_len = 0;
        bool ok = res && cairn_mval_bin(cairn_mval_get(res, "manifest"), &man, &man_len) == CAIRN_OK &&
                  man_len > 0 && man_len % 36 == 0 && res_u64(res, "manifest_len", &mlen) && mlen > 0;
        if (ok && cairn_mval_str(cairn_mval_get(res, "image"), &rid, &rid_len) == CAIRN_OK)
            ok = rid_len == COORD_OBJ_ID_LEN && !memcmp(rid, img->rec.id, COORD_OBJ_ID_LEN);
        if (!ok) {
            f->state = COORD_JOB_FAILED;
            f->code = CAIRN_EPROTO;
            snprintf(f->msg, sizeof(f->msg), "worker '%s' returned no usable layer for image '%s'",
                     j->rec.worker, img->rec.id);
            f->has_msg = true;
        } else {
            CAIRN_FORWARD_IF_ERROR(coord_image_rec_copy(&f->img_next, &img->rec));
            f->has_img_next = true;
            struct coord_image_rec *n = &f->img_next;
            uint8_t *copy = cairn_memdup(man, man_len);
            if (!copy)
                return cairn_err_set(CAIRN_ENOMEM, "out of memory recording image '%s'", img->rec.id);
            cairn_free(n->manifest);
            n->manifest = copy;
            n->manifest_size = man_len;
            n->manifest_len = mlen;
            if (res_u64(res, "files", &files))
                n->files = files;
            if (res_u64(res, "size", &size))
                n->size = size;
            if (res_u64(res, "stored", &stored))
                n->stored = stored;
            n->state = COORD_IMAGE_READY;
            if (j->kind_id == COORD_KIND_SNAPSHOT_DIR) /* issue 5: a sliding expiry counts from now */
                coord_image_touch_rec(n, now_ns(c));
            CAIRN_FORWARD_IF_ERROR(coord_meta_batch_image(c->batch, n));
            if (n->name) {
                const struct coord_image *winner = NULL;
                CAIRN_FORWARD_IF_ERROR(coord_image_name_stage(c, n->app, n->name, img, NULL, &winner));
                f->name_winner = winner;
                f->name_change = true;
            }
            /* what the client sees: the image, not its layer */
            f->holder = cairn_msg_new(CAIRN_MSG_JOB_RESULT);
            if (!f->holder)
                return cairn_err_set(CAIRN_ENOMEM, "out of memory");
            struct cairn_mval *r = cairn_msg_set_map(f->holder, "result");
            cairn_mval_put_str(f->holder, r, "id", n->id);
            cairn_mval_put_str(f->holder, r, "image", n->id);
            if (j->kind_id == COORD_KIND_SNAPSHOT_FS && res_u64(res, "pause_ms", &pause_ms))
                cairn_mval_put_u64(f->holder, r, "pause_ms", pause_ms);
            if (j->kind_id == COORD_KIND_SNAPSHOT_DIR && res_u64(res, "capture_ms", &pause_ms))
                cairn_mval_put_u64(f->holder, r, "capture_ms", pause_ms);
            if (j->kind_id == COORD_KIND_SNAPSHOT_DIR)
                cairn_mval_put_str(f->holder, r, "encryption", n->csek ? "csek" : "managed");
            cairn_mval_put_u64(f->holder, r, "files", n->files);
            cairn_mval_put_u64(f->holder, r, "size", n->size);
            cairn_mval_put_u64(f->holder, r, "stored", n->stored);
            CAIRN_FORWARD_IF_ERROR(cairn_msg_build_error(f->holder));
            f->result = cairn_msg_get(f->holder, "result");
            return CAIRN_OK;
        }
    }
    /* failed: the pending image goes; when its job reported refs, as a tombstone the collector frees (issue 5) */
    if (coord_refs_exist(c, img->rec.id)) {
        CAIRN_FORWARD_IF_ERROR(coord_image_rec_copy(&f->img_next, &img->rec));
        f->has_img_next = true;
        f->img_next.state = COORD_IMAGE_EXPIRED;
        f->img_next.expires_ns = 0; /* "dropped": never visible, stays "not found" */
        return coord_meta_batch_image(c->batch, &f->img_next);
    }
    f->img_delete = true;
    size_t kl = coord_key_image(key, img->rec.id);
    cairn_kv_batch_delete(c->batch, key, kl);
    return CAIRN_OK;
}

void coord_image_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply)
{
    if (apply && j->kind_id == COORD_KIND_IMPORT) {
        char path[4200];
        upload_path(c, j->rec.id, path, sizeof(path));
        if (unlink(path) != 0 && errno != ENOENT)
            cairn_warn("delete upload file '%s': %s", path, strerror(errno));
    }
    struct coord_image *img = f->img;
    if (!img)
        return;
    if (!apply) {
        if (f->has_img_next)
            coord_image_rec_release(&f->img_next);
        return;
    }
    if (f->has_img_next) {
        coord_image_rec_release(&img->rec);
        img->rec = f->img_next;
        memset(&f->img_next, 0, sizeof(f->img_next));
        f->has_img_next = false;
        if (f->name_change)
            coord_image_name_apply(c, img->rec.app, img->rec.name, f->name_winner);
        if (img->rec.state == COORD_IMAGE_EXPIRED)
            cairn_info("image '%s' of app '%s' dropped: its job '%s' failed (its chunks are collected)",
                       img->rec.id, img->rec.app, j->rec.id);
        else
            cairn_info("image '%s' of app '%s' is ready (%s, depth %" PRIu64 ")", img->rec.id, img->rec.app,
                       img->rec.kind, img->rec.depth);
    } else if (f->img_delete) {
        cairn_info("image '%s' of app '%s' dropped: its job '%s' failed", img->rec.id, img->rec.app, j->rec.id);
        coord_image_drop(c, img);
    }
    f->img = NULL;
}

/* ---- start-up and teardown --------------------------------------------------------------------- */

static int load_image(struct coord *c, const char *key, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                      void *arg)
{
    CAIRN_UNUSED(arg);
    struct coord_image *img = cairn_calloc(1, sizeof(*img));
    if (!img)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory loading images");
    int rc = coord_image_decode(v, vl, key, &img->rec);
    if (rc == CAIRN_OK)
        rc = coord_load_key_check(key, k, kl, "id", img->rec.id);
    if (rc == CAIRN_OK)
        rc = coord_image_add(c, img);
    if (rc != CAIRN_OK)
        image_free(img);
    return rc;
}

static int load_images(struct coord *c)
{
    CAIRN_FORWARD_IF_ERROR(coord_load_records(c, "i/", "skipping image record", load_image, NULL));
    /* M3: the name index from the records */
    size_t pos = 0;
    const void *key;
    size_t klen;
    void *val;
    while (coord_map_next(&c->images, &pos, &key, &klen, &val)) {
        struct coord_image *img = val;
        struct coord_app *a = coord_app_find(c, img->rec.app);
        if (!a || !img->rec.name || img->rec.state != COORD_IMAGE_READY)
            continue;
        struct coord_image *cur = coord_map_sget(&a->names, img->rec.name);
        if (!cur || newer(img, cur))
            CAIRN_FORWARD_IF_ERROR(coord_map_sput(&a->names, img->rec.name, img));
    }
    return CAIRN_OK;
}

static int load_upload(struct coord *c, const char *key, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                       void *now)
{
    char want[COORD_KEY_MAX];
    struct coord_upload *u = cairn_calloc(1, sizeof(*u));
    if (!u)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory loading uploads");
    int rc = coord_upload_decode(v, vl, key, &u->rec);
    size_t wl = rc == CAIRN_OK ? coord_key_upload(want, u->rec.app, u->rec.upload) : 0;
    if (rc == CAIRN_OK && (wl != kl || memcmp(want, k, kl) != 0))
        rc = cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' is corrupt: it names upload '%s'", key,
                           u->rec.upload);
    struct stat st;
    char path[4200];
    if (rc == CAIRN_OK) {
        upload_path(c, u->rec.job, path, sizeof(path));
        if (stat(path, &st) != 0)
            rc = cairn_err_set(CAIRN_ENOTFOUND, "upload '%s': file '%s' is gone", key, path);
    }
    if (rc == CAIRN_OK) {
        snprintf(u->key, sizeof(u->key), "%s/%s", u->rec.app, u->rec.upload);
        u->received = (uint64_t)st.st_size;
        u->rec.updated_ns = *(const int64_t *)now; /* idle time counts from the restart */
        rc = coord_map_sput(&c->uploads, u->key, u);
    }
    if (rc != CAIRN_OK && rc != CAIRN_ENOMEM) { /* a bad upload record is deleted, not only skipped */
        cairn_warn("dropping upload record: %s", cairn_err_msg());
        cairn_kv_delete(c->kv, k, kl);
    }
    if (rc != CAIRN_OK)
        upload_free(u);
    return rc == CAIRN_ENOMEM ? rc : CAIRN_OK;
}

int coord_images_load(struct coord *c)
{
    size_t n = strlen(c->cfg->data_dir) + sizeof("/uploads");
    c->uploads_dir = cairn_malloc(n);
    if (!c->uploads_dir)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    snprintf(c->uploads_dir, n, "%s/uploads", c->cfg->data_dir);
    if (mkdir(c->uploads_dir, 0700) != 0 && errno != EEXIST)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "create uploads dir '%s'", c->uploads_dir);
    CAIRN_FORWARD_IF_ERROR(load_images(c));
    int64_t now = now_ns(c);
    return coord_load_records(c, "u/", "dropping upload record", load_upload, &now);
}

void coord_images_reconcile(struct coord *c)
{
    /* pending images whose job is not unfinished (cannot happen with atomic batches; a damaged store) */
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->images, &pos, &k, &kl, &v)) {
        struct coord_image *img = v;
        if (img->rec.state != COORD_IMAGE_PENDING || coord_job_find(c, img->rec.job))
            continue;
        cairn_warn("dropping pending image '%s': its job '%s' is not running", img->rec.id, img->rec.job);
        char key[COORD_KEY_MAX];
        size_t n = coord_key_image(key, img->rec.id);
        if (cairn_kv_delete(c->kv, key, n) != CAIRN_OK)
            cairn_error("delete image record '%s': %s", key, cairn_err_msg());
        coord_image_drop(c, img);
    }
    /* upload files of no upload and no unfinished import job */
    DIR *d = opendir(c->uploads_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".tar") != 0)
            continue;
        char id[COORD_JOB_ID_LEN + 1] = "";
        bool keep = false;
        if (n - 4 == COORD_JOB_ID_LEN) {
            memcpy(id, e->d_name, COORD_JOB_ID_LEN);
            struct coord_job *j = coord_job_find(c, id);
            keep = j && j->kind_id == COORD_KIND_IMPORT;
            size_t upos = 0;
            while (!keep && coord_map_next(&c->uploads, &upos, &k, &kl, &v))
                keep = !strcmp(((struct coord_upload *)v)->rec.job, id);
        }
        if (!keep) {
            char path[4200];
            snprintf(path, sizeof(path), "%s/%s", c->uploads_dir, e->d_name);
            cairn_info("deleting stale upload file '%s'", path);
            unlink(path);
        }
    }
    closedir(d);
}

void coord_images_free(struct coord *c)
{
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->images, &pos, &k, &kl, &v))
        image_free(v);
    coord_map_release(&c->images);
    pos = 0;
    while (coord_map_next(&c->uploads, &pos, &k, &kl, &v))
        upload_free(v);
    coord_map_release(&c->uploads);
    CAIRN_FREE(c->uploads_dir);
}
