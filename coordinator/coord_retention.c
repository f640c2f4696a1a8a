/*
 * coord_retention.c: retention and garbage collection (docs/internals/snapshots.md "Retention and garbage
 * collection"): expiry checks and their messages, uses that move a sliding expiry, the sweeper that marks
 * expired images (and, through coord_snapshots_sweep, memory snapshots), the refs workers report with
 * job.refs (c/<owner>/<seq>), and the mark-and-sweep collection that turns the refs of collectable owners
 * into delete-chunks jobs.
 *
 * Design
 * - Refs live only in RocksDB (c/ records), never in memory between collections: a collection scans c/
 *   once, sorts the live refs (48-byte domain || chunk id entries) and looks the candidates up by binary
 *   search. Doomed = candidates - live, grouped by domain, cut into jobs of <= 2048 ids, one job per live
 *   worker per group, pinned to it (app "_admin": it is the cluster's own work).
 * - Grace barrier: a collection starts only when no write job (image-import, snapshot-fs, snapshot-dir,
 *   sandbox-snapshot) is queued or running, and c->gc_deletes > 0 makes coord_jobs_kick skip write jobs,
 *   so a chunk deduplicated into a new owner is never deleted under it (its refs arrive, and so become
 *   live, before the write job ends).
 * - Collectable image: state expired (expired, removed, or a dropped pending image), not collected, and
 *   nothing live depends on it: an image that is not collected and not collectable layered on it, a
 *   creating/running sandbox with it as root or mount, or a live memory snapshot with it as root
 *   (coord_snapshots_use_image). Departure: the agreement names only image and snapshot dependencies; a
 *   running sandbox keeps its images too, since a snapshot-fs of it would layer on them.
 * - When every delete job of a collection ended (succeeded or not: a dead worker keeps its copies, a noted
 *   limitation), the owners are marked collected (a dropped pending image's tombstone is deleted) and their
 *   c/ records deleted. A restart during a collection forgets the owners; their delete jobs still run, and
 *   the next sweep collects them again (deleting twice is harmless).
 * - Times: the sweeper runs every second of the monotonic clock; expiry compares c->clock (injectable).
 */
#include "coord.h"

#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define SWEEP_EVERY_NS 1000000000ull
#define DELETE_BATCH 2048u
#define REF_LEN 48 /* domain id (16) || chunk id (32) */
#define NS_PER_S 1000000000ll

static int64_t now_ns(struct coord *c) { return cairn_clock_now_ns(&c->clock); }

/* ---- times and expiry ---------------------------------------------------------------------------------- */

void coord_format_utc(int64_t ns, char out[32])
{
    int64_t secs = ns / NS_PER_S;
    if (ns < 0 && secs * NS_PER_S != ns)
        secs--;
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    /* civil_from_days (H. Hinnant), proleptic Gregorian */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    snprintf(out, 32, "%04" PRId64 "-%02" PRId64 "-%02" PRId64 "T%02" PRId64 ":%02" PRId64 ":%02" PRId64 "Z", y, m,
             d, rem / 3600, rem / 60 % 60, rem % 60);
}

int coord_image_check_expiry(struct coord *c, const struct coord_image *img)
{
    const struct coord_image_rec *r = &img->rec;
    bool expired = r->state == COORD_IMAGE_EXPIRED || (r->expires_ns > 0 && now_ns(c) >= r->expires_ns);
    if (!expired)
        return CAIRN_OK;
    if (r->expires_ns <= 0) /* a dropped pending image: it never existed for clients */
        return cairn_err_set(CAIRN_ENOTFOUND, "image '%s' not found", r->id);
    char when[32];
    coord_format_utc(r->expires_ns, when);
    return cairn_err_set(CAIRN_ENOTFOUND, "image %s expired on %s", r->id, when);
}

static bool retention_seconds(const char *retention, const char *prefix, int64_t *s)
{
    size_t pl = strlen(prefix);
    if (strncmp(retention, prefix, pl) != 0)
        return false;
    char *end = NULL;
    unsigned long long v = strtoull(retention + pl, &end, 10);
    if (!end || *end || end == retention + pl || v > (unsigned long long)(INT64_MAX / NS_PER_S))
        return false;
    *s = (int64_t)v;
    return true;
}

void coord_image_touch_rec(struct coord_image_rec *r, int64_t now)
{
    r->last_used_ns = now;
    int64_t s = 0;
    if (retention_seconds(r->retention, "sliding:", &s))
        r->expires_ns = now + s * NS_PER_S;
}

int coord_image_touch(struct coord *c, struct coord_image *img)
{
    coord_image_touch_rec(&img->rec, now_ns(c));
    return coord_meta_batch_image(c->batch, &img->rec);
}

/* ---- refs (job.refs, c/ records) -------------------------------------------------------------------- */

static size_t refs_prefix(char *out, const char *owner)
{
    int n = snprintf(out, COORD_KEY_MAX, "c/%s/", owner);
    return n < 0 || n >= COORD_KEY_MAX ? 0 : (size_t)n;
}

bool coord_refs_exist(struct coord *c, const char *owner)
{
    char pre[COORD_KEY_MAX];
    size_t pl = refs_prefix(pre, owner);
    struct cairn_kv_iter *it = NULL;
    bool found = false;
    if (pl && cairn_kv_iter_new(c->kv, pre, pl, &it) == CAIRN_OK) {
        const uint8_t *k, *v;
        size_t kl, vl;
        bool done = true;
        found = cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done) == CAIRN_OK && !done;
    }
    cairn_kv_iter_destroy(&it);
    return found;
}

int coord_refs_drop_stage(struct coord *c, const char *owner)
{
    char pre[COORD_KEY_MAX];
    size_t pl = refs_prefix(pre, owner);
    if (!pl)
        return cairn_err_set(CAIRN_EINVAL, "owner id '%s' is too long", owner);
    struct cairn_kv_iter *it = NULL;
    int rc = cairn_kv_iter_new(c->kv, pre, pl, &it);
    while (rc == CAIRN_OK) {
        const uint8_t *k, *v;
        size_t kl, vl;
        bool done = false;
        rc = cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done);
        if (rc != CAIRN_OK || done)
            break;
        cairn_kv_batch_delete(c->batch, k, kl);
    }
    cairn_kv_iter_destroy(&it);
    return rc;
}

/* The owner a write job names: params "image" or "snapshot". */
static bool job_owner(const struct coord_job *j, char out[COORD_OBJ_ID_LEN + 1])
{
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *p = NULL;
    const char *id = NULL;
    size_t len = 0;
    bool ok = false;
    if (coord_value_unpack(j->rec.params, j->rec.params_len, "params", &holder, &p) == CAIRN_OK) {
        if ((cairn_mval_str(cairn_mval_get(p, "image"), &id, &len) == CAIRN_OK &&
             coord_obj_id_valid(id, len, "im-")) ||
            (cairn_mval_str(cairn_mval_get(p, "snapshot"), &id, &len) == CAIRN_OK &&
             coord_obj_id_valid(id, len, "sn-"))) {
            memcpy(out, id, len);
            out[len] = '\0';
            ok = true;
        }
    }
    cairn_msg_destroy(&holder);
    return ok;
}

void coord_refs_on_job_refs(struct coord *c, struct cairn_msg *m)
{
    const char *id = "";
    uint64_t seq = 0;
    const uint8_t *dom = NULL;
    size_t dl = 0, n = 0;
    const struct cairn_mval *ids = NULL;
    uint8_t *val = NULL;
    cairn_msg_get_str(m, "job", &id, NULL);
    cairn_msg_get_u64(m, "seq", &seq);
    struct coord_job *j = coord_job_find(c, id);
    if (!j) {
        coord_reply_error(c, c->wsock, m, CAIRN_ENOTFOUND, "job '%s' not found (unknown, or already ended)", id);
        return;
    }
    if (j->rec.state != COORD_JOB_RUNNING || !j->w || !coord_worker_key_ok(j->w, m)) {
        coord_reply_error(c, c->wsock, m, CAIRN_EPERM, "job '%s' does not run on this worker", id);
        return;
    }
    char owner[COORD_OBJ_ID_LEN + 1];
    if (!job_owner(j, owner)) {
        coord_reply_error(c, c->wsock, m, CAIRN_EINVAL, "job '%s' (%s) writes no image or snapshot", id, j->rec.kind);
        return;
    }
    if (cairn_msg_get_bin(m, "domain", &dom, &dl) != CAIRN_OK || dl != 16 ||
        cairn_msg_get_array(m, "ids", &ids, &n) != CAIRN_OK || n == 0 || n > 4096 || seq > UINT32_MAX) {
        coord_reply_error(c, c->wsock, m, CAIRN_EINVAL, "job.refs of job '%s': domain, ids or seq out of range", id);
        return;
    }
    val = cairn_malloc(16 + n * 32);
    if (!val) {
        coord_reply_error(c, c->wsock, m, CAIRN_ENOMEM, "out of memory storing the refs of job '%s'", id);
        goto out;
    }
    memcpy(val, dom, 16);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = NULL;
        size_t bl = 0;
        if (cairn_mval_bin(cairn_mval_at(ids, i), &b, &bl) != CAIRN_OK || bl != 32) {
            coord_reply_error(c, c->wsock, m, CAIRN_EINVAL, "job.refs of job '%s': id %zu is not 32 bytes", id, i);
            goto out;
        }
        memcpy(val + 16 + i * 32, b, 32);
    }
    char key[COORD_KEY_MAX];
    size_t kl = coord_key_refs(key, owner, (uint32_t)seq);
    int rc = cairn_kv_put(c->kv, key, kl, val, 16 + n * 32); /* a resend (same seq) overwrites */
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->wsock, m, rc, "store the refs of job '%s': %s", id, cairn_err_msg());
        goto out;
    }
    cairn_debug("job '%s': %zu refs of '%s' (batch %" PRIu64 ")", id, n, owner, seq);
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    coord_send(c, c->wsock, &r);
out:
    cairn_free(val);
}

/* ---- the sweeper: expiry ------------------------------------------------------------------------------ */

bool coord_job_is_write(const struct coord_job *j)
{
    switch (j->kind_id) {
    case COORD_KIND_IMPORT:
    case COORD_KIND_SNAPSHOT_FS:
    case COORD_KIND_SNAPSHOT_DIR: return true;
    default: break;
    }
    return !strcmp(j->rec.kind, "sandbox-snapshot");
}

/* Ready images whose expires_at passed: EXPIRED, records rewritten, the name index moved. */
static void expire_images(struct coord *c, int64_t now)
{
    struct coord_image **moved = NULL;
    size_t nmoved = 0, cap = 0;
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->images, &pos, &k, &kl, &v)) {
        struct coord_image *img = v;
        if (img->rec.state != COORD_IMAGE_READY || img->rec.expires_ns <= 0 || img->rec.expires_ns > now)
            continue;
        if (cairn_array_grow((void **)&moved, &cap, nmoved + 1, sizeof(*moved)) != CAIRN_OK)
            break;
        moved[nmoved++] = img;
    }
    for (size_t i = 0; i < nmoved; i++) {
        struct coord_image *img = moved[i];
        img->rec.state = COORD_IMAGE_EXPIRED;
        if (coord_meta_batch_image(c->batch, &img->rec) != CAIRN_OK)
            cairn_error("record expired image '%s': %s", img->rec.id, cairn_err_msg());
        const struct coord_image *winner = NULL;
        if (img->rec.name && coord_image_name_stage(c, img->rec.app, img->rec.name, NULL, img, &winner) == CAIRN_OK)
            coord_image_name_apply(c, img->rec.app, img->rec.name, winner);
        char when[32];
        coord_format_utc(img->rec.expires_ns, when);
        cairn_info("image '%s' of app '%s' expired on %s (%s)", img->rec.id, img->rec.app, when, img->rec.retention);
    }
    if (cairn_kv_batch_count(c->batch) > 0 && cairn_kv_batch_commit(c->kv, c->batch) != CAIRN_OK) {
        cairn_error("persist expired images: %s", cairn_err_msg());
        coord_batch_reset(c);
    }
    cairn_free(moved);
}

/* ---- the collection ------------------------------------------------------------------------------------ */

struct owner_set {
    char (*ids)[COORD_OBJ_ID_LEN + 1];
    size_t n, cap;
};

static int owners_add(struct owner_set *s, const char *id)
{
    CAIRN_FORWARD_IF_ERROR(cairn_array_grow((void **)&s->ids, &s->cap, s->n + 1, sizeof(*s->ids)));
    memcpy(s->ids[s->n++], id, COORD_OBJ_ID_LEN + 1);
    return CAIRN_OK;
}

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }
static int cmp_ref(const void *a, const void *b) { return memcmp(a, b, REF_LEN); }

static bool owners_has(const struct owner_set *s, const char *id)
{
    return s->n && bsearch(id, s->ids, s->n, sizeof(*s->ids), cmp_id) != NULL;
}

static bool sandbox_uses(const struct coord_sandbox *sb, const char *id)
{
    if (sb->rec.state != COORD_SBX_RUNNING && sb->rec.state != COORD_SBX_CREATING)
        return false;
    if (!strcmp(sb->rec.image, id))
        return true;
    for (size_t i = 0; i < sb->rec.nmounts; i++)
        if (!strcmp(sb->rec.mounts[i].image, id))
            return true;
    return false;
}

/* Images to collect now (sorted ids): expired, not collected, nothing live depends on them. */
static int collectable_images(struct coord *c, struct owner_set *out)
{
    struct coord_image **cand = NULL;
    size_t n = 0, cap = 0;
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    int rc = CAIRN_OK;
    while (coord_map_next(&c->images, &pos, &k, &kl, &v)) {
        struct coord_image *img = v;
        if (img->rec.state != COORD_IMAGE_EXPIRED || img->rec.collected)
            continue;
        if (coord_snapshots_use_image(c, img->rec.id))
            continue;
        bool used = false;
        size_t spos = 0;
        while (!used && coord_map_next(&c->sandboxes, &spos, &k, &kl, &v))
            used = sandbox_uses(v, img->rec.id);
        if (used)
            continue;
        if ((rc = cairn_array_grow((void **)&cand, &cap, n + 1, sizeof(*cand))) != CAIRN_OK)
            goto out;
        cand[n++] = img;
    }
    /* fixpoint: drop a candidate while an image that stays (not collected, not a candidate) sits on it */
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < n; i++) {
            pos = 0;
            while (coord_map_next(&c->images, &pos, &k, &kl, &v)) {
                const struct coord_image *child = v;
                if (strcmp(child->rec.parent, cand[i]->rec.id) != 0 || child->rec.collected)
                    continue;
                bool child_goes = false;
                for (size_t x = 0; x < n && !child_goes; x++)
                    child_goes = cand[x] == child;
                if (child_goes)
                    continue;
                cand[i] = cand[--n];
                changed = true;
                i--;
                break;
            }
        }
    }
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++)
        rc = owners_add(out, cand[i]->rec.id);
out:
    cairn_free(cand);
    return rc;
}

static bool write_jobs_active(struct coord *c)
{
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->jobs, &pos, &k, &kl, &v))
        if (coord_job_is_write(v))
            return true;
    return false;
}

struct refs_vec {
    uint8_t *p;
    size_t n, cap; /* in refs */
};

static int refs_push(struct refs_vec *r, const uint8_t *dom, const uint8_t *ids, size_t n)
{
    CAIRN_FORWARD_IF_ERROR(cairn_array_grow((void **)&r->p, &r->cap, r->n + n, REF_LEN));
    for (size_t i = 0; i < n; i++) {
        memcpy(r->p + (r->n + i) * REF_LEN, dom, 16);
        memcpy(r->p + (r->n + i) * REF_LEN + 16, ids + i * 32, 32);
    }
    r->n += n;
    return CAIRN_OK;
}

/* Scan c/: refs of owners in `doomed_owners` are candidates, all others live. */
static int scan_refs(struct coord *c, const struct owner_set *owners, struct refs_vec *cand, struct refs_vec *live)
{
    struct cairn_kv_iter *it = NULL;
    int rc = cairn_kv_iter_new(c->kv, "c/", 2, &it);
    while (rc == CAIRN_OK) {
        const uint8_t *k, *v;
        size_t kl, vl;
        bool done = false;
        rc = cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done);
        if (rc != CAIRN_OK || done)
            break;
        char owner[COORD_OBJ_ID_LEN + 1] = "";
        if (kl < 2 + COORD_OBJ_ID_LEN + 1 || k[2 + COORD_OBJ_ID_LEN] != '/' || vl < 16 || (vl - 16) % 32 != 0) {
            char key[COORD_KEY_MAX + 16];
            coord_key_printable(key, sizeof(key), k, kl);
            cairn_warn("skipping malformed refs record '%s'", key);
            continue;
        }
        memcpy(owner, k + 2, COORD_OBJ_ID_LEN);
        rc = refs_push(owners_has(owners, owner) ? cand : live, v, v + 16, (vl - 16) / 32);
    }
    cairn_kv_iter_destroy(&it);
    return rc;
}

/* The collection is over: owners collected, their c/ records gone. */
static void collection_done(struct coord *c)
{
    size_t nimg = 0, nsn = 0;
    for (size_t i = 0; i < c->gc_nowners; i++) {
        const char *id = c->gc_owners[i];
        if (coord_refs_drop_stage(c, id) != CAIRN_OK)
            cairn_error("drop the refs of '%s': %s", id, cairn_err_msg());
        if (!strncmp(id, "sn-", 3)) {
            coord_snapshots_collected(c, id);
            nsn++;
            continue;
        }
        struct coord_image *img = coord_image_get(c, id);
        if (!img)
            continue;
        nimg++;
        if (img->rec.expires_ns <= 0) { /* a dropped pending image: its tombstone goes too */
            char key[COORD_KEY_MAX];
            cairn_kv_batch_delete(c->batch, key, coord_key_image(key, id));
            coord_image_drop(c, img);
            continue;
        }
        img->rec.collected = true;
        CAIRN_FREE(img->rec.manifest); /* the tree is gone: its layer ref with it */
        img->rec.manifest_size = 0;
        if (coord_meta_batch_image(c->batch, &img->rec) != CAIRN_OK)
            cairn_error("record collected image '%s': %s", id, cairn_err_msg());
    }
    if (cairn_kv_batch_count(c->batch) > 0 && cairn_kv_batch_commit(c->kv, c->batch) != CAIRN_OK) {
        cairn_error("persist the end of a collection: %s", cairn_err_msg());
        coord_batch_reset(c);
    }
    cairn_info("collection done: %zu images and %zu snapshots collected", nimg, nsn);
    CAIRN_FREE(c->gc_owners);
    c->gc_nowners = 0;
    c->gc_active = false;
    c->kick_pending = true; /* write jobs held back by the barrier may go */
}

static int make_delete_jobs(struct coord *c, const uint8_t *refs, size_t n, size_t *njobs)
{
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    int rc = CAIRN_OK;
    for (size_t wi = 0; wi < c->nworkers && rc == CAIRN_OK; wi++) {
        struct coord_worker *w = c->wlist[wi];
        if (!w->rec.alive)
            continue;
        for (size_t i = 0; i < n && rc == CAIRN_OK;) {
            /* one domain, up to DELETE_BATCH ids */
            size_t e = i + 1;
            while (e < n && e - i < DELETE_BATCH && !memcmp(refs + e * REF_LEN, refs + i * REF_LEN, 16))
                e++;
            uint8_t *ids = cairn_malloc((e - i) * 32);
            struct cairn_msg *pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
            if (!ids || !pm) {
                rc = cairn_err_set(CAIRN_ENOMEM, "out of memory building delete-chunks jobs");
            } else {
                for (size_t x = i; x < e; x++)
                    memcpy(ids + (x - i) * 32, refs + x * REF_LEN + 16, 32);
                struct cairn_mval *p = cairn_msg_set_map(pm, "params");
                cairn_mval_put_str(pm, p, "worker", w->rec.id);
                cairn_mval_put_bin(pm, p, "domain", refs + i * REF_LEN, 16);
                cairn_mval_put_bin(pm, p, "ids", ids, (e - i) * 32);
                rc = cairn_msg_build_error(pm);
                pb.len = 0;
                if (rc == CAIRN_OK)
                    rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
                char jid[COORD_JOB_ID_LEN + 1];
                struct coord_job_spec spec = {.app = COORD_ADMIN_APP, .kind = COORD_KIND_DELETE_CHUNKS_S,
                                              .params = pb.data, .params_len = pb.len, .pin = w->rec.id,
                                              .state = COORD_JOB_QUEUED};
                if (rc == CAIRN_OK) {
                    c->gc_deletes++; /* before: the job may end at once */
                    rc = coord_job_create(c, &spec, jid);
                    if (rc != CAIRN_OK)
                        c->gc_deletes--;
                    else
                        (*njobs)++;
                }
            }
            cairn_free(ids);
            cairn_msg_destroy(&pm);
            i = e;
        }
    }
    cairn_buf_release(&pb);
    return rc;
}

static void collect(struct coord *c)
{
    struct owner_set owners = {0};
    struct refs_vec cand = {0}, live = {0};
    char(*sn)[COORD_OBJ_ID_LEN + 1] = NULL;
    size_t nsn = coord_snapshots_collectable(c, &sn);
    int rc = collectable_images(c, &owners);
    for (size_t i = 0; i < nsn && rc == CAIRN_OK; i++)
        rc = owners_add(&owners, sn[i]);
    if (rc != CAIRN_OK || owners.n == 0)
        goto out;
    qsort(owners.ids, owners.n, sizeof(*owners.ids), cmp_id);
    if ((rc = scan_refs(c, &owners, &cand, &live)) != CAIRN_OK)
        goto out;
    if (live.n)
        qsort(live.p, live.n, REF_LEN, cmp_ref);
    if (cand.n)
        qsort(cand.p, cand.n, REF_LEN, cmp_ref);
    size_t nd = 0; /* doomed, in place: sorted by domain then id, unique */
    for (size_t i = 0; i < cand.n; i++) {
        const uint8_t *r = cand.p + i * REF_LEN;
        if (nd && !memcmp(cand.p + (nd - 1) * REF_LEN, r, REF_LEN))
            continue;
        if (live.n && bsearch(r, live.p, live.n, REF_LEN, cmp_ref))
            continue;
        memmove(cand.p + nd * REF_LEN, r, REF_LEN);
        nd++;
    }
    c->gc_owners = owners.ids;
    c->gc_nowners = owners.n;
    owners.ids = NULL;
    c->gc_active = true;
    size_t njobs = 0;
    cairn_info("collection: %zu owners, %zu refs, %zu chunks to delete (%zu live refs kept)", c->gc_nowners,
               cand.n, nd, live.n);
    c->gc_deletes++; /* a guard: a job that ends at once must not end the collection while others are made */
    if (nd && (rc = make_delete_jobs(c, cand.p, nd, &njobs)) != CAIRN_OK)
        cairn_error("collection: %s", cairn_err_msg());
    c->gc_deletes--;
    if (c->gc_deletes == 0 && c->gc_active) /* nothing to delete, or every job ended at once */
        collection_done(c);
out:
    if (rc != CAIRN_OK && !c->gc_active)
        cairn_error("collection: %s", cairn_err_msg());
    cairn_free(owners.ids);
    cairn_free(sn);
    cairn_free(cand.p);
    cairn_free(live.p);
}

void coord_retention_delete_ended(struct coord *c, struct coord_job *j)
{
    CAIRN_UNUSED(j);
    if (c->gc_deletes > 0)
        c->gc_deletes--;
    if (c->gc_deletes == 0) {
        if (c->gc_active)
            collection_done(c);
        c->kick_pending = true;
    }
}

void coord_retention_sweep(struct coord *c)
{
    int64_t now = now_ns(c);
    expire_images(c, now);
    coord_snapshots_sweep(c, now);
    if (c->gc_active || c->gc_deletes > 0 || write_jobs_active(c))
        return;
    collect(c);
}

void coord_retention_tick(struct coord *c, uint64_t now_mono)
{
    if (now_mono < c->next_sweep_mono)
        return;
    c->next_sweep_mono = now_mono + SWEEP_EVERY_NS;
    coord_retention_sweep(c);
}

void coord_retention_load(struct coord *c)
{
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    c->gc_deletes = 0;
    while (coord_map_next(&c->jobs, &pos, &k, &kl, &v))
        if (((struct coord_job *)v)->kind_id == COORD_KIND_DELETE_CHUNKS)
            c->gc_deletes++;
}

void coord_retention_free(struct coord *c)
{
    CAIRN_FREE(c->gc_owners);
    c->gc_nowners = 0;
    c->gc_active = false;
}
