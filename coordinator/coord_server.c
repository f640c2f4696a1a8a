/*
 * coord_server.c: the coordinator object: opening its secrets, store and
 * sockets, loading every record into the in-memory indexes, the poll loop
 * and the 100 ms tick, and an orderly close.
 *
 * Start-up order matters: secrets and keys first (a misconfigured node fails
 * before it touches its store), then the store (apps, workers, images and
 * uploads, sandboxes (attached to their workers), then the unfinished jobs,
 * which attach to their workers and whose end may change images and
 * sandboxes; then the objects whose job is gone), the epoch bump that makes
 * every worker re-register (membership.c I3), and only then the sockets, so
 * no message is handled against a half-loaded state.
 *
 * The loop: wait on both ROUTERs up to the next tick; drain them alternately
 * in batches of COORD_DRAIN_BATCH (clients cannot starve workers or the other
 * way round); run the dispatcher when a message freed capacity; run the tick
 * (deaths, long-poll deadlines, queue timeouts, dispatch retries) every
 * COORD_TICK_MS. Signals only set flags (coord_main.c) that coord_run reads
 * between turns.
 */
#include "coord.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#define SOCK_HWM 10000
#define DRAIN_MAX 4096 /* messages per turn before the tick gets a look */

/* A secret file must exist and be private (no group/other bits). */
static int check_private(const char *path, const char *what, const char *hint)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        if (e == ENOENT)
            return cairn_err_set(CAIRN_ENOTFOUND, "%s '%s' not found (%s)", what, path, hint);
        return cairn_err_set_errno(cairn_err_from_errno(e), e, "%s '%s'", what, path);
    }
    if (!S_ISREG(st.st_mode))
        return cairn_err_set(CAIRN_EINVAL, "%s '%s' is not a regular file", what, path);
    if (st.st_mode & 077)
        return cairn_err_set(CAIRN_EPERM, "%s '%s' must not be accessible by group or others (chmod 600)", what,
                             path);
    return CAIRN_OK;
}

static int load_master_key(struct coord *c)
{
    const char *path = c->cfg->master_key;
    CAIRN_FORWARD_IF_ERROR(check_private(path, "master key", "create it with --init-master-key FILE"));
    int rc = cairn_secret_read_file(&c->master, path, CAIRN_KEY_BYTES, CAIRN_KEY_BYTES);
    if (rc == CAIRN_EKEY)
        return cairn_err_set(CAIRN_EKEY, "master key '%s' must be exactly %d bytes", path, CAIRN_KEY_BYTES);
    return rc;
}

static int load_admin_token(struct coord *c)
{
    const char *path = c->cfg->admin_token_file;
    struct cairn_secret *file = NULL, *raw = NULL;
    CAIRN_FORWARD_IF_ERROR(check_private(path, "admin token file", "create it with --init-admin-token FILE"));
    int rc = cairn_secret_read_file(&file, path, 64, 128);
    if (rc == CAIRN_EKEY)
        rc = cairn_err_set(CAIRN_EKEY, "admin token file '%s' must hold 64 hex characters", path);
    if (rc != CAIRN_OK)
        goto out;
    size_t n = file->len;
    while (n > 0 && isspace(file->bytes[n - 1]))
        n--;
    rc = n == 64 ? cairn_secret_new(&raw, 32 + 65) : cairn_err_set(CAIRN_EKEY,
                                                                     "admin token file '%s' must hold 64 hex characters",
                                                                     path);
    if (rc != CAIRN_OK)
        goto out;
    /* raw: 32 decoded bytes, then the NUL-terminated hex text the decoder wants */
    char *hex = (char *)raw->bytes + 32;
    memcpy(hex, file->bytes, 64);
    hex[64] = '\0';
    if (cairn_hex_decode(raw->bytes, 32, hex) != CAIRN_OK) {
        rc = cairn_err_set(CAIRN_EKEY, "admin token file '%s' must hold 64 hex characters", path);
        goto out;
    }
    cairn_token_hash(raw->bytes, 32, c->admin_hash);
out:
    cairn_secret_destroy(&raw);
    cairn_secret_destroy(&file);
    return rc;
}

int coord_load_records(struct coord *c, const char *prefix, const char *skip, coord_load_fn load, void *arg)
{
    struct cairn_kv_iter *it = NULL;
    int rc = cairn_kv_iter_new(c->kv, prefix, 2, &it);
    while (rc == CAIRN_OK) {
        const uint8_t *k, *v;
        size_t kl, vl;
        bool done = false;
        rc = cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done);
        if (rc != CAIRN_OK || done)
            break;
        char key[COORD_KEY_MAX + 16];
        coord_key_printable(key, sizeof(key), k, kl);
        int lrc = load(c, key, k, kl, v, vl, arg);
        if (lrc == CAIRN_ENOMEM)
            rc = lrc;
        else if (lrc != CAIRN_OK)
            cairn_error("%s: %s", skip, cairn_err_msg());
    }
    cairn_kv_iter_destroy(&it);
    return rc;
}

int coord_load_key_check(const char *key, const uint8_t *k, size_t kl, const char *field, const char *id)
{
    if (kl != 2 + strlen(id) || memcmp(k + 2, id, kl - 2) != 0)
        return cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' is corrupt: its %s is '%s'", key, field, id);
    return CAIRN_OK;
}

static int load_app(struct coord *c, const char *key, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                    void *arg)
{
    CAIRN_UNUSED(arg);
    struct coord_app *a = cairn_calloc(1, sizeof(*a));
    if (!a)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory loading apps");
    coord_map_init(&a->names);
    int rc = coord_app_decode(v, vl, key, &a->rec);
    if (rc == CAIRN_OK)
        rc = coord_load_key_check(key, k, kl, "name", a->rec.name);
    if (rc == CAIRN_OK)
        rc = coord_map_sput(&c->apps, a->rec.name, a);
    if (rc != CAIRN_OK)
        cairn_free(a);
    return rc;
}

static void free_apps(struct coord *c)
{
    size_t pos = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&c->apps, &pos, &k, &kl, &v)) {
        struct coord_app *a = v;
        coord_vec_release(&a->images);
        coord_vec_release(&a->sandboxes);
        coord_map_release(&a->names);
        cairn_free(a);
    }
    coord_map_release(&c->apps);
}

static int open_store(struct coord *c)
{
    CAIRN_FORWARD_IF_ERROR(coord_meta_open(&c->kv, c->cfg->data_dir));
    CAIRN_FORWARD_IF_ERROR(cairn_kv_batch_new(&c->batch));
    int64_t offset = 0;
    int rc = coord_meta_get_i64(c->kv, COORD_KEY_CLOCK, &offset);
    if (rc != CAIRN_OK && rc != CAIRN_ENOTFOUND)
        return rc;
    if (rc == CAIRN_OK && (offset < 0 || offset > (INT64_C(1) << 62)))
        return cairn_err_set(CAIRN_ECORRUPT, "metadata record '%s' is corrupt: clock offset out of range",
                             COORD_KEY_CLOCK);
    cairn_clock_init(&c->clock, c->cfg->test_clock, rc == CAIRN_OK ? offset : 0);
    rc = coord_meta_get_u64(c->kv, COORD_KEY_EPOCH, &c->epoch);
    if (rc == CAIRN_ENOTFOUND)
        c->epoch = 0;
    else if (rc != CAIRN_OK)
        return rc;
    CAIRN_FORWARD_IF_ERROR(coord_load_records(c, "a/", "skipping app record", load_app, NULL));
    CAIRN_FORWARD_IF_ERROR(coord_workers_load(c));
    CAIRN_FORWARD_IF_ERROR(coord_images_load(c));
    CAIRN_FORWARD_IF_ERROR(coord_sandboxes_load(c));
    CAIRN_FORWARD_IF_ERROR(coord_snapshots_load(c)); /* issue 6: before the jobs, whose end may change them */
    CAIRN_FORWARD_IF_ERROR(coord_jobs_load(c));
    coord_images_reconcile(c);
    coord_sandboxes_reconcile(c);
    coord_retention_load(c); /* issue 5 */
    coord_snapshots_reconcile(c); /* issue 6: after the sandboxes (restore groups read their clones) */
    return coord_epoch_bump(c);
}

int coord_reload_allow(struct coord *c)
{
    int rc = cairn_net_allow_load(c->net, "clients", c->cfg->clients_allow);
    if (rc == CAIRN_OK)
        rc = cairn_net_allow_load(c->net, "workers", c->cfg->workers_allow);
    if (rc != CAIRN_OK)
        cairn_error("reload allow-lists: %s", cairn_err_msg());
    else
        cairn_info("allow-lists loaded: %zu client keys, %zu worker keys", cairn_net_allow_count(c->net, "clients"),
                   cairn_net_allow_count(c->net, "workers"));
    return rc;
}

static int open_net(struct coord *c)
{
    struct cairn_sock_opts o = {.hwm = SOCK_HWM};
    struct cairn_sock_opts co = {.hwm = c->cfg->client_hwm > 0 ? c->cfg->client_hwm : SOCK_HWM};
    CAIRN_FORWARD_IF_ERROR(cairn_net_new(&c->net));
    CAIRN_FORWARD_IF_ERROR(coord_reload_allow(c));
    CAIRN_FORWARD_IF_ERROR(cairn_sock_server(c->net, c->cfg->client_endpoint, &c->keys, "clients", &co, &c->csock));
    return cairn_sock_server(c->net, c->cfg->worker_endpoint, &c->keys, "workers", &o, &c->wsock);
}

int coord_new(struct coord **out, const struct coord_config *cfg)
{
    *out = NULL;
    CAIRN_FORWARD_IF_ERROR(coord_config_check(cfg));
    CAIRN_FORWARD_IF_ERROR(cairn_crypto_init());
    struct coord *c = cairn_calloc(1, sizeof(*c));
    if (!c)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory starting the coordinator");
    c->cfg = cfg;
    coord_map_init(&c->apps);
    coord_map_init(&c->workers);
    coord_map_init(&c->jobs);
    coord_map_init(&c->dispatches);
    coord_map_init(&c->images);
    coord_map_init(&c->sandboxes);
    coord_map_init(&c->uploads);
    coord_map_init(&c->snapshots); /* issue 6 */
    int rc = load_master_key(c);
    if (rc == CAIRN_OK)
        rc = load_admin_token(c);
    if (rc == CAIRN_OK)
        rc = cairn_curve_keys_read(cfg->keys, &c->keys);
    if (rc == CAIRN_OK)
        rc = open_store(c);
    if (rc == CAIRN_OK)
        rc = open_net(c);
    if (rc != CAIRN_OK) {
        /* keep the message of the failure across the teardown */
        char why[1100];
        snprintf(why, sizeof(why), "%s", cairn_err_msg());
        coord_destroy(&c);
        return cairn_err_set(rc, "%s", why);
    }
    c->next_tick_mono = cairn_now_mono_ns() + COORD_TICK_MS * 1000000ull;
    cairn_info("listening for clients on %s and workers on %s (epoch %" PRIu64 ", %zu apps, %zu workers, %zu unfinished jobs)",
               cairn_sock_endpoint(c->csock), cairn_sock_endpoint(c->wsock), c->epoch, coord_map_count(&c->apps),
               c->nworkers, coord_map_count(&c->jobs));
    *out = c;
    return CAIRN_OK;
}

void coord_destroy(struct coord **cp)
{
    if (!cp || !*cp)
        return;
    struct coord *c = *cp;
    if (c->csock && (c->nwaiters || c->execs)) {
        /* parked clients get the current state instead of a timeout; give the I/O thread a moment to send */
        coord_jobs_release_waiters(c);
        coord_exec_release_all(c);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cairn_sock_destroy(&c->csock);
    cairn_sock_destroy(&c->wsock);
    cairn_net_destroy(&c->net);
    coord_exec_free_all(c);
    coord_retention_free(c); /* issue 5 */
    coord_jobs_free(c);
    coord_sandboxes_free(c);
    coord_snapshots_free(c); /* issue 6 */
    coord_images_free(c);
    coord_workers_free(c);
    free_apps(c);
    if (c->kv && cairn_kv_sync(c->kv) != CAIRN_OK)
        cairn_error("sync the metadata store: %s", cairn_err_msg());
    cairn_kv_batch_destroy(&c->batch);
    cairn_kv_close(&c->kv);
    cairn_secret_destroy(&c->master);
    cairn_curve_keys_clear(&c->keys);
    explicit_bzero(c->admin_hash, sizeof(c->admin_hash));
    cairn_free(c);
    *cp = NULL;
}

void coord_tick(struct coord *c)
{
    uint64_t now = cairn_now_mono_ns();
    coord_workers_tick(c, now);
    coord_jobs_tick(c, now);
    coord_images_tick(c, now);
    coord_retention_tick(c, now); /* issue 5 */
    if (c->nstalled)
        coord_exec_flush(c);
}

/* Up to COORD_DRAIN_BATCH messages of one socket; returns how many were handled, -1 when it cannot be read. */
static int drain(struct coord *c, struct cairn_sock *s)
{
    int n = 0;
    while (n < COORD_DRAIN_BATCH) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(s, 0, &m);
        if (rc == CAIRN_ETIMEDOUT)
            break;
        n++;
        if (rc == CAIRN_OK) {
            if (s == c->csock)
                coord_api_on_client(c, m);
            else
                coord_api_on_worker(c, m);
        } else if (rc == CAIRN_EPROTO || rc == CAIRN_ETOOBIG || rc == CAIRN_EVERSION) {
            coord_api_on_bad(c, s, rc, m);
        } else {
            cairn_msg_destroy(&m);
            if (rc == CAIRN_ECANCELED)
                return -1;
            cairn_warn("receive on the %s endpoint: %s", s == c->csock ? "client" : "worker", cairn_err_msg());
            break;
        }
    }
    return n;
}

int coord_step(struct coord *c, int max_wait_ms)
{
    uint64_t now = cairn_now_mono_ns();
    int wait = max_wait_ms < 0 ? COORD_TICK_MS : max_wait_ms;
    if (c->nstalled && wait > 5)
        wait = 5; /* held-back stream output: retry soon (coord_exec.c) */
    if (now >= c->next_tick_mono)
        wait = 0;
    else if ((c->next_tick_mono - now) / 1000000ull + 1 < (uint64_t)wait)
        wait = (int)((c->next_tick_mono - now) / 1000000ull + 1);
    struct cairn_sock *socks[2] = {c->csock, c->wsock};
    uint64_t ready = 0;
    int rc = cairn_sock_poll(socks, 2, wait, &ready);
    if (rc == CAIRN_ECANCELED)
        return rc;
    if (rc == CAIRN_OK) {
        int total = 0;
        for (;;) {
            int a = drain(c, c->wsock), b = drain(c, c->csock);
            if (a < 0 || b < 0)
                return CAIRN_ECANCELED;
            if (c->kick_pending)
                coord_jobs_kick(c);
            if (c->nstalled)
                coord_exec_flush(c);
            total += a + b;
            if (a + b == 0 || total >= DRAIN_MAX)
                break;
        }
    }
    if (c->kick_pending)
        coord_jobs_kick(c);
    now = cairn_now_mono_ns();
    if (now >= c->next_tick_mono) {
        coord_tick(c);
        c->next_tick_mono = now + COORD_TICK_MS * 1000000ull;
    }
    return CAIRN_OK;
}

int coord_run(struct coord *c, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload)
{
    while (!*stop) {
        if (reload && *reload) {
            *reload = 0;
            coord_reload_allow(c);
        }
        int rc = coord_step(c, COORD_TICK_MS);
        if (rc == CAIRN_ECANCELED)
            return rc;
    }
    return CAIRN_OK;
}
