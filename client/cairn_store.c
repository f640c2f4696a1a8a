/*
 * cairn-store: the single-node command over the storage core.
 *
 * Why: it is the smallest real user of common/ (the demo and the benchmark drive
 * it), and what an operator reaches for to inspect or scrub a store by hand.
 *
 *   cairn-store init STORE                      new store: STORE/db (RocksDB) + STORE/master.key (0600)
 *   cairn-store capture STORE SRC [opts]        prints the new snapshot id on stdout
 *   cairn-store restore STORE ID DEST [opts]    DEST is created; must be empty if it exists
 *   cairn-store ls STORE                        one line per snapshot
 *   cairn-store verify STORE                    keyless scrub of every chunk + every snapshot's manifest
 *                                               and chunk references
 *   cairn-store chunks DIR                      one line "<domain hex> <chunk id hex>" per stored chunk,
 *                                               sorted; DIR is a worker's data dir (its DIR/chunks), a
 *                                               cairn-store STORE (STORE/db) or a RocksDB dir. Opens it
 *                                               read-only (no lock, no key needed), so it works while the
 *                                               worker runs: what tests use to see which chunks a worker
 *                                               holds (docs/internals/snapshots.md).
 * Options: --app A (managed domain, default "default"), --threads N, --level L (zstd),
 *          --overlay (treat SRC/DEST as an overlayfs upper dir), --json, --quiet.
 *
 * A snapshot record lives in the store's kv under 's' || id, msgpack:
 *   { "v": 1, "id": str, "app": str, "src": str, "created_ns": int, "manifest_len": uint,
 *     "chunks": [[id bin32, len uint]...], "files": uint, "bytes": uint, "stored": uint }
 * The record holds no secret: chunk ids are keyed hashes.
 *
 * Exit status: 0 on success, otherwise the stable cairn error number (cairn/err.h), e.g.
 * 1 invalid usage, 4 corrupt data, 5 not found. Errors print "cairn-store: <NAME>: <message>"
 * on stderr (or {"error": {...}} on stdout with --json).
 */
#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/mp.h"
#include "cairn/pool.h"
#include "cairn/store.h"
#include "cairn/tree.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAP_PREFIX 's'
#define SNAP_ID_LEN 19 /* "tr-" + 16 hex */
#define RECORD_MAX (64u << 20)

struct opts {
    const char *app;
    unsigned threads;
    int level;
    bool overlay;
    bool json;
    bool quiet;
};

struct snap_record {
    char id[SNAP_ID_LEN + 1];
    char *app;
    char *src;
    int64_t created_ns;
    struct cairn_tree_ref ref;
    uint64_t files, bytes, stored;
};

static void snap_record_release(struct snap_record *r)
{
    CAIRN_FREE(r->app);
    CAIRN_FREE(r->src);
    cairn_tree_ref_release(&r->ref);
}

static void usage(FILE *f)
{
    fputs("usage: cairn-store init STORE\n"
          "       cairn-store capture STORE SRC [--app A] [--threads N] [--level L] [--overlay]\n"
          "       cairn-store restore STORE ID DEST [--app A] [--threads N] [--overlay]\n"
          "       cairn-store ls STORE\n"
          "       cairn-store verify STORE\n"
          "       cairn-store chunks DIR       (a worker's data dir, a STORE or a RocksDB dir; read-only)\n"
          "common options: --json (one JSON object on stdout), --quiet (no summary on stderr)\n",
          f);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static int fail(const struct opts *o, int rc)
{
    const char *msg = cairn_err_msg();
    if (!*msg)
        msg = cairn_strerror(rc);
    if (o->json) {
        printf("{\"error\": {\"code\": %d, \"name\": \"%s\", \"message\": ", rc, cairn_err_name(rc));
        json_str(stdout, msg);
        printf("}}\n");
    }
    fprintf(stderr, "cairn-store: %s: %s\n", cairn_err_name(rc), msg);
    return rc;
}

/* ---- store directory layout ---- */

static int store_paths(const char *store, char *db, size_t dbn, char *key, size_t keyn)
{
    if ((size_t)snprintf(db, dbn, "%s/db", store) >= dbn || (size_t)snprintf(key, keyn, "%s/master.key", store) >= keyn)
        return cairn_err_set(CAIRN_ETOOBIG, "store path too long: '%s'", store);
    return CAIRN_OK;
}

struct session {
    struct cairn_store *store;
    struct cairn_domain *domain;
};

static void session_close(struct session *s)
{
    cairn_domain_destroy(&s->domain);
    cairn_store_close(&s->store);
}

/* The managed domain of app, from the store's master key (read into guarded memory and wiped). */
static int load_domain(const char *dir, const char *app, struct cairn_domain **out)
{
    char db[4096], keyp[4096];
    struct cairn_secret *master = NULL;
    CAIRN_FORWARD_IF_ERROR(store_paths(dir, db, sizeof(db), keyp, sizeof(keyp)));
    struct stat st;
    if (stat(keyp, &st) != 0)
        return cairn_err_set(CAIRN_ENOTFOUND, "'%s' is not a cairn store (no master.key; run 'cairn-store init %s')",
                             dir, dir);
    if ((st.st_mode & 077) != 0)
        cairn_warn("master key '%s' is readable by group or others (mode %03o); it should be 0600", keyp,
                   (unsigned)(st.st_mode & 0777));
    int rc = cairn_secret_read_file(&master, keyp, CAIRN_KEY_BYTES, CAIRN_KEY_BYTES);
    if (rc == CAIRN_OK)
        rc = cairn_domain_new_managed(out, master->bytes, app);
    cairn_secret_destroy(&master);
    return rc;
}

static int session_open(struct session *s, const char *dir, const char *app)
{
    char db[4096], keyp[4096];
    memset(s, 0, sizeof(*s));
    CAIRN_FORWARD_IF_ERROR(store_paths(dir, db, sizeof(db), keyp, sizeof(keyp)));
    int rc = load_domain(dir, app, &s->domain);
    if (rc == CAIRN_OK)
        rc = cairn_store_open(&s->store, db, false);
    if (rc != CAIRN_OK)
        session_close(s);
    return rc;
}

/* ---- snapshot records ---- */

static int record_put(struct cairn_store *st, const struct snap_record *r)
{
    struct cairn_buf b;
    struct cairn_mp_writer w;
    cairn_buf_init(&b, RECORD_MAX);
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_map(&w, 10);
    cairn_mp_write_str(&w, "v", 1);
    cairn_mp_write_uint(&w, 1);
    cairn_mp_write_str(&w, "id", 2);
    cairn_mp_write_str(&w, r->id, strlen(r->id));
    cairn_mp_write_str(&w, "app", 3);
    cairn_mp_write_str(&w, r->app, strlen(r->app));
    cairn_mp_write_str(&w, "src", 3);
    cairn_mp_write_str(&w, r->src, strlen(r->src));
    cairn_mp_write_str(&w, "created_ns", 10);
    cairn_mp_write_int(&w, r->created_ns);
    cairn_mp_write_str(&w, "manifest_len", 12);
    cairn_mp_write_uint(&w, r->ref.manifest_len);
    cairn_mp_write_str(&w, "chunks", 6);
    cairn_mp_write_array(&w, r->ref.n_chunks);
    for (uint32_t i = 0; i < r->ref.n_chunks; i++) {
        cairn_mp_write_array(&w, 2);
        cairn_mp_write_bin(&w, r->ref.chunks[i].id, CAIRN_CHUNK_ID_BYTES);
        cairn_mp_write_uint(&w, r->ref.chunks[i].len);
    }
    cairn_mp_write_str(&w, "files", 5);
    cairn_mp_write_uint(&w, r->files);
    cairn_mp_write_str(&w, "bytes", 5);
    cairn_mp_write_uint(&w, r->bytes);
    cairn_mp_write_str(&w, "stored", 6);
    cairn_mp_write_uint(&w, r->stored);
    int rc = w.err;
    if (rc == CAIRN_OK) {
        uint8_t key[1 + SNAP_ID_LEN];
        key[0] = SNAP_PREFIX;
        memcpy(key + 1, r->id, SNAP_ID_LEN);
        rc = cairn_kv_put(cairn_store_kv(st), key, sizeof(key), b.data, b.len);
    }
    cairn_buf_release(&b);
    return rc;
}

static bool key_is(const uint8_t *k, uint32_t kl, const char *name)
{
    return kl == strlen(name) && memcmp(k, name, kl) == 0;
}

/* Decode a record (hostile input: it comes from disk). */
static int record_decode(const uint8_t *data, size_t len, struct snap_record *r)
{
    struct cairn_mp_reader rd;
    uint32_t n;
    memset(r, 0, sizeof(*r));
    cairn_mp_reader_init(&rd, data, len);
    if (cairn_mp_read_map(&rd, &n, 64) != CAIRN_OK)
        goto bad;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k, *p;
        uint32_t kl, pl;
        uint64_t u;
        if (cairn_mp_read_str(&rd, &k, &kl, 64) != CAIRN_OK)
            goto bad;
        if (key_is(k, kl, "v")) {
            if (cairn_mp_read_uint(&rd, &u) != CAIRN_OK)
                goto bad;
            if (u != 1)
                return cairn_err_set(CAIRN_EVERSION, "snapshot record version %" PRIu64 " is not supported", u);
        } else if (key_is(k, kl, "id")) {
            if (cairn_mp_read_str(&rd, &p, &pl, SNAP_ID_LEN) != CAIRN_OK || pl != SNAP_ID_LEN)
                goto bad;
            memcpy(r->id, p, pl);
            r->id[pl] = '\0';
        } else if (key_is(k, kl, "app") || key_is(k, kl, "src")) {
            if (cairn_mp_read_str(&rd, &p, &pl, 65536) != CAIRN_OK)
                goto bad;
            char **dst = key_is(k, kl, "app") ? &r->app : &r->src;
            cairn_free(*dst);
            *dst = cairn_strndup((const char *)p, pl);
            if (!*dst)
                goto nomem;
        } else if (key_is(k, kl, "created_ns")) {
            if (cairn_mp_read_int(&rd, &r->created_ns) != CAIRN_OK)
                goto bad;
        } else if (key_is(k, kl, "manifest_len")) {
            if (cairn_mp_read_uint(&rd, &r->ref.manifest_len) != CAIRN_OK)
                goto bad;
        } else if (key_is(k, kl, "chunks")) {
            uint32_t m;
            if (cairn_mp_read_array(&rd, &m, 1u << 24) != CAIRN_OK || r->ref.chunks)
                goto bad;
            r->ref.chunks = cairn_calloc(m, sizeof(*r->ref.chunks));
            if (!r->ref.chunks)
                goto nomem;
            r->ref.n_chunks = m;
            for (uint32_t j = 0; j < m; j++) {
                uint32_t two;
                if (cairn_mp_read_array(&rd, &two, 2) != CAIRN_OK || two != 2 ||
                    cairn_mp_read_bin(&rd, &p, &pl, CAIRN_CHUNK_ID_BYTES) != CAIRN_OK ||
                    pl != CAIRN_CHUNK_ID_BYTES || cairn_mp_read_uint(&rd, &u) != CAIRN_OK ||
                    u == 0 || u > CAIRN_CODEC_MAX_PLAIN)
                    goto bad;
                memcpy(r->ref.chunks[j].id, p, pl);
                r->ref.chunks[j].len = (uint32_t)u;
            }
        } else if (key_is(k, kl, "files")) {
            if (cairn_mp_read_uint(&rd, &r->files) != CAIRN_OK)
                goto bad;
        } else if (key_is(k, kl, "bytes")) {
            if (cairn_mp_read_uint(&rd, &r->bytes) != CAIRN_OK)
                goto bad;
        } else if (key_is(k, kl, "stored")) {
            if (cairn_mp_read_uint(&rd, &r->stored) != CAIRN_OK)
                goto bad;
        } else if (cairn_mp_skip(&rd) != CAIRN_OK) {
            goto bad;
        }
    }
    if (!r->id[0] || !r->app || !r->src)
        goto bad;
    return CAIRN_OK;
nomem:
    snap_record_release(r);
    return cairn_err_set(CAIRN_ENOMEM, "out of memory decoding a snapshot record");
bad:
    snap_record_release(r);
    return cairn_err_set(CAIRN_ECORRUPT, "snapshot record is malformed");
}

static int record_get(struct cairn_store *st, const char *id, struct snap_record *r)
{
    if (strlen(id) != SNAP_ID_LEN || strncmp(id, "tr-", 3) != 0)
        return cairn_err_set(CAIRN_ENOTFOUND, "snapshot '%s' not found (ids look like tr-0123456789abcdef)", id);
    uint8_t key[1 + SNAP_ID_LEN];
    key[0] = SNAP_PREFIX;
    memcpy(key + 1, id, SNAP_ID_LEN);
    uint8_t *val = NULL;
    size_t vlen = 0;
    int rc = cairn_kv_get(cairn_store_kv(st), key, sizeof(key), &val, &vlen);
    if (rc == CAIRN_ENOTFOUND)
        return cairn_err_set(CAIRN_ENOTFOUND, "snapshot '%s' not found", id);
    if (rc != CAIRN_OK)
        return rc;
    rc = record_decode(val, vlen, r);
    if (rc != CAIRN_OK)
        cairn_err_set(rc, "snapshot '%s': %s", id, cairn_err_msg());
    cairn_kv_free(val);
    return rc;
}

/* ---- progress ---- */

struct progress {
    const char *verb;
    bool tty;
};

static void human(char *out, size_t n, double v)
{
    const char *u[] = {"B", "kB", "MB", "GB", "TB"};
    int i = 0;
    while (v >= 1000 && i < 4) {
        v /= 1000;
        i++;
    }
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void on_progress(void *arg, const struct cairn_tree_stats *st)
{
    struct progress *p = arg;
    if (!p->tty)
        return;
    char b[32];
    human(b, sizeof(b), (double)st->bytes);
    double secs = (double)st->elapsed_ns / 1e9;
    fprintf(stderr, "\r%s: %" PRIu64 " entries, %s, %.0f MB/s   ", p->verb, st->entries, b,
            secs > 0 ? (double)st->bytes / 1e6 / secs : 0.0);
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void print_summary(const struct opts *o, const char *verb, const struct cairn_tree_stats *st)
{
    if (o->quiet)
        return;
    char b[32], s[32];
    human(b, sizeof(b), (double)st->bytes);
    human(s, sizeof(s), (double)st->stored_bytes);
    double secs = (double)st->elapsed_ns / 1e9;
    if (isatty(2))
        fputc('\n', stderr);
    fprintf(stderr,
            "%s: %" PRIu64 " entries (%" PRIu64 " files, %" PRIu64 " dirs, %" PRIu64 " symlinks, %" PRIu64
            " hardlinks, %" PRIu64 " other, %" PRIu64 " skipped), %s in %.2f s (%.0f MB/s)",
            verb, st->entries, st->files, st->dirs, st->symlinks, st->hardlinks, st->specials + st->whiteouts,
            st->skipped, b, secs, secs > 0 ? (double)st->bytes / 1e6 / secs : 0.0);
    if (st->chunks)
        fprintf(stderr, "; %" PRIu64 " chunks, %" PRIu64 " new, %s stored", st->chunks, st->chunks_new, s);
    fprintf(stderr, "; peak RSS %ld MiB\n", peak_rss_kb() / 1024);
}

/* ---- commands ---- */

static int cmd_init(const struct opts *o, const char *dir)
{
    char db[4096], keyp[4096];
    struct cairn_secret *master = NULL;
    struct cairn_store *st = NULL;
    int rc;
    CAIRN_FORWARD_IF_ERROR(store_paths(dir, db, sizeof(db), keyp, sizeof(keyp)));
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "create store directory '%s'", dir);
    if (access(keyp, F_OK) == 0)
        return cairn_err_set(CAIRN_EEXIST, "'%s' is already a cairn store", dir);
    rc = cairn_secret_random(&master, CAIRN_KEY_BYTES);
    if (rc == CAIRN_OK)
        rc = cairn_store_open(&st, db, true);
    if (rc == CAIRN_OK)
        rc = cairn_store_sync(st);
    if (rc == CAIRN_OK)
        rc = cairn_file_replace_atomic(keyp, master->bytes, master->len, 0600);
    cairn_store_close(&st);
    cairn_secret_destroy(&master);
    if (rc != CAIRN_OK)
        return rc;
    if (o->json) {
        printf("{\"store\": ");
        json_str(stdout, dir);
        printf("}\n");
    } else if (!o->quiet) {
        fprintf(stderr, "initialised store '%s' (keep %s safe: without it nothing can be restored)\n", dir, keyp);
    }
    return CAIRN_OK;
}

static void tree_opts(const struct opts *o, struct cairn_tree_opts *t, struct progress *p, const char *verb)
{
    memset(t, 0, sizeof(*t));
    p->verb = verb;
    p->tty = !o->quiet && !o->json && isatty(2);
    t->flags = o->overlay ? CAIRN_TREE_OVERLAY : 0;
    t->threads = o->threads;
    t->level = o->level;
    t->progress = on_progress;
    t->progress_arg = p;
}

static int cmd_capture(const struct opts *o, const char *dir, const char *src)
{
    struct session s;
    struct snap_record r;
    struct cairn_tree_stats st;
    struct cairn_tree_opts t;
    struct progress p;
    char abs[4096];
    memset(&r, 0, sizeof(r));
    memset(&st, 0, sizeof(st));
    struct stat sst;
    if (stat(src, &sst) != 0)
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "source '%s'", src);
    if (!S_ISDIR(sst.st_mode))
        return cairn_err_set(CAIRN_EINVAL, "source '%s' is not a directory", src);
    CAIRN_FORWARD_IF_ERROR(session_open(&s, dir, o->app));
    tree_opts(o, &t, &p, "capture");
    int rc = cairn_tree_capture(s.store, s.domain, src, &t, &r.ref, &st);
    if (rc != CAIRN_OK)
        goto out;
    uint8_t rnd[8];
    cairn_random_bytes(rnd, sizeof(rnd));
    memcpy(r.id, "tr-", 3);
    cairn_hex_encode(r.id + 3, rnd, sizeof(rnd));
    r.app = cairn_strdup(o->app);
    r.src = cairn_strdup(realpath(src, abs) ? abs : src);
    if (!r.app || !r.src) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    r.created_ns = cairn_now_real_ns();
    r.files = st.files;
    r.bytes = st.bytes;
    r.stored = st.stored_bytes;
    rc = record_put(s.store, &r);
    if (rc == CAIRN_OK)
        rc = cairn_store_sync(s.store); /* durable before we print the id */
    if (rc != CAIRN_OK)
        goto out;
    print_summary(o, "captured", &st);
    if (o->json)
        printf("{\"id\": \"%s\", \"entries\": %" PRIu64 ", \"files\": %" PRIu64 ", \"bytes\": %" PRIu64
               ", \"chunks\": %" PRIu64 ", \"chunks_new\": %" PRIu64 ", \"stored_bytes\": %" PRIu64
               ", \"seconds\": %.3f, \"peak_rss_kb\": %ld}\n",
               r.id, st.entries, st.files, st.bytes, st.chunks, st.chunks_new, st.stored_bytes,
               (double)st.elapsed_ns / 1e9, peak_rss_kb());
    else
        printf("%s\n", r.id);
out:
    snap_record_release(&r);
    session_close(&s);
    return rc;
}

static int dir_is_empty_or_missing(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT)
            return CAIRN_OK;
        return cairn_err_set_errno(cairn_err_from_errno(errno), errno, "destination '%s'", path);
    }
    struct dirent *e;
    int rc = CAIRN_OK;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            rc = cairn_err_set(CAIRN_EEXIST, "destination '%s' is not empty", path);
            break;
        }
    }
    closedir(d);
    return rc;
}

static int cmd_restore(const struct opts *o, const char *dir, const char *id, const char *dest)
{
    struct session s;
    struct snap_record r;
    struct cairn_tree_stats st;
    struct cairn_tree_opts t;
    struct progress p;
    memset(&st, 0, sizeof(st));
    memset(&r, 0, sizeof(r));
    CAIRN_FORWARD_IF_ERROR(dir_is_empty_or_missing(dest));
    CAIRN_FORWARD_IF_ERROR(session_open(&s, dir, o->app));
    int rc = record_get(s.store, id, &r);
    if (rc != CAIRN_OK)
        goto out;
    if (strcmp(r.app, o->app) != 0) {
        rc = cairn_err_set(CAIRN_ENOTFOUND, "snapshot '%s' not found in app '%s'", id, o->app);
        goto out;
    }
    tree_opts(o, &t, &p, "restore");
    rc = cairn_tree_materialize(s.store, s.domain, &r.ref, dest, &t, &st);
    if (rc != CAIRN_OK)
        goto out;
    print_summary(o, "restored", &st);
    if (o->json)
        printf("{\"id\": \"%s\", \"entries\": %" PRIu64 ", \"files\": %" PRIu64 ", \"bytes\": %" PRIu64
               ", \"seconds\": %.3f, \"peak_rss_kb\": %ld}\n",
               r.id, st.entries, st.files, st.bytes, (double)st.elapsed_ns / 1e9, peak_rss_kb());
out:
    snap_record_release(&r);
    session_close(&s);
    return rc;
}

typedef int (*record_fn)(void *arg, struct snap_record *r);

static int for_each_record(struct cairn_store *st, record_fn fn, void *arg)
{
    struct cairn_kv_iter *it = NULL;
    uint8_t prefix = SNAP_PREFIX;
    CAIRN_FORWARD_IF_ERROR(cairn_kv_iter_new(cairn_store_kv(st), &prefix, 1, &it));
    int rc;
    for (;;) {
        const uint8_t *k, *v;
        size_t kl, vl;
        bool done;
        rc = cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done);
        if (rc != CAIRN_OK || done)
            break;
        struct snap_record r;
        rc = record_decode(v, vl, &r);
        if (rc != CAIRN_OK) {
            char idbuf[64];
            snprintf(idbuf, sizeof(idbuf), "%.*s", (int)CAIRN_MIN(kl - 1, 40), (const char *)k + 1);
            cairn_err_set(rc, "snapshot record '%s': %s", idbuf, cairn_err_msg());
            break;
        }
        rc = fn(arg, &r);
        snap_record_release(&r);
        if (rc != CAIRN_OK)
            break;
    }
    cairn_kv_iter_destroy(&it);
    return rc;
}

struct ls_ctx {
    const struct opts *o;
    int n;
};

static int ls_one(void *arg, struct snap_record *r)
{
    struct ls_ctx *c = arg;
    time_t t = (time_t)(r->created_ns / 1000000000);
    struct tm tm;
    char when[32];
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (c->o->json) {
        printf("%s{\"id\": \"%s\", \"app\": ", c->n ? ", " : "", r->id);
        json_str(stdout, r->app);
        printf(", \"created\": \"%s\", \"src\": ", when);
        json_str(stdout, r->src);
        printf(", \"files\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"stored_new\": %" PRIu64 "}", r->files, r->bytes,
               r->stored);
    } else {
        char b[32], s[32];
        human(b, sizeof(b), (double)r->bytes);
        human(s, sizeof(s), (double)r->stored);
        printf("%s  %s  %-10s %8" PRIu64 " files %10s  (+%s stored)  %s\n", r->id, when, r->app, r->files, b, s,
               r->src);
    }
    c->n++;
    return CAIRN_OK;
}

static int cmd_ls(const struct opts *o, const char *dir)
{
    struct session s;
    CAIRN_FORWARD_IF_ERROR(session_open(&s, dir, o->app));
    struct ls_ctx c = {o, 0};
    if (o->json)
        printf("{\"snapshots\": [");
    int rc = for_each_record(s.store, ls_one, &c);
    if (o->json)
        printf("]}\n");
    session_close(&s);
    return rc;
}

struct verify_ctx {
    struct cairn_store *store;
    const char *store_dir;
    uint64_t snapshots, refs, missing, bad_snapshots;
};

static void on_corrupt(void *arg, const uint8_t *domain_id, const uint8_t *id)
{
    char h[2 * CAIRN_CHUNK_ID_BYTES + 1];
    cairn_hex_encode(h, id, CAIRN_CHUNK_ID_BYTES);
    fprintf(stderr, "corrupt chunk %s\n", h);
    CAIRN_UNUSED(arg);
    CAIRN_UNUSED(domain_id);
}

struct ref_ctx {
    struct verify_ctx *v;
    const uint8_t *domain_id;
    const char *snap;
};

static int check_ref(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    struct ref_ctx *c = arg;
    bool found = false;
    CAIRN_FORWARD_IF_ERROR(cairn_store_has_chunk(c->v->store, c->domain_id, id, &found));
    c->v->refs++;
    if (!found) {
        char h[2 * CAIRN_CHUNK_ID_BYTES + 1];
        cairn_hex_encode(h, id, CAIRN_CHUNK_ID_BYTES);
        fprintf(stderr, "snapshot %s: missing chunk %s\n", c->snap, h);
        c->v->missing++;
    }
    return CAIRN_OK;
}

static int verify_one(void *arg, struct snap_record *r)
{
    struct verify_ctx *v = arg;
    struct cairn_domain *d = NULL;
    v->snapshots++;
    /* each snapshot is checked in its own app's domain: the manifest must decrypt and decode */
    int rc = load_domain(v->store_dir, r->app, &d);
    if (rc != CAIRN_OK)
        return rc;
    struct ref_ctx c = {v, cairn_domain_id(d), r->id};
    rc = cairn_tree_chunks(v->store, d, &r->ref, check_ref, &c);
    if (rc != CAIRN_OK) {
        fprintf(stderr, "snapshot %s: %s: %s\n", r->id, cairn_err_name(rc), cairn_err_msg());
        v->bad_snapshots++;
        rc = CAIRN_OK;
    }
    cairn_domain_destroy(&d);
    return rc;
}

static int cmd_verify(const struct opts *o, const char *dir)
{
    struct session s;
    CAIRN_FORWARD_IF_ERROR(session_open(&s, dir, o->app));
    struct cairn_store_scan scan;
    memset(&scan, 0, sizeof(scan));
    uint64_t t0 = cairn_now_mono_ns();
    int rc = cairn_store_scrub(s.store, &scan, on_corrupt, NULL);
    struct verify_ctx v = {s.store, dir, 0, 0, 0, 0};
    if (rc == CAIRN_OK)
        rc = for_each_record(s.store, verify_one, &v);
    double secs = (double)(cairn_now_mono_ns() - t0) / 1e9;
    session_close(&s);
    if (rc != CAIRN_OK)
        return rc;
    if (o->json)
        printf("{\"chunks\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"corrupt\": %" PRIu64 ", \"snapshots\": %" PRIu64
               ", \"references\": %" PRIu64 ", \"missing\": %" PRIu64 ", \"bad_snapshots\": %" PRIu64 "}\n",
               scan.chunks, scan.bytes, scan.corrupt, v.snapshots, v.refs, v.missing, v.bad_snapshots);
    else if (!o->quiet)
        fprintf(stderr,
                "verify: %" PRIu64 " chunks (%" PRIu64 " bytes), %" PRIu64 " corrupt; %" PRIu64 " snapshots, %" PRIu64
                " chunk references, %" PRIu64 " missing, %" PRIu64 " unreadable; %.2f s\n",
                scan.chunks, scan.bytes, scan.corrupt, v.snapshots, v.refs, v.missing, v.bad_snapshots, secs);
    if (scan.corrupt || v.missing || v.bad_snapshots)
        return cairn_err_set(CAIRN_ECORRUPT, "store '%s' failed verification: %" PRIu64 " corrupt chunks, %" PRIu64
                             " missing chunks, %" PRIu64 " unreadable snapshots", dir, scan.corrupt, v.missing,
                             v.bad_snapshots);
    return CAIRN_OK;
}

/* ---- chunks: list a chunk store read-only ---- */

struct chunk_list {
    uint8_t (*keys)[CAIRN_STORE_CHUNK_KEY_BYTES];
    size_t n, cap;
    uint64_t other_keys; /* 'c' keys of another length (none expected) */
};

static bool is_kv_dir(const char *dir)
{
    char p[4096];
    struct stat st;
    return (size_t)snprintf(p, sizeof(p), "%s/CURRENT", dir) < sizeof(p) && stat(p, &st) == 0;
}

/* The RocksDB dir behind DIR: DIR/chunks (a worker's data dir), DIR/db (a cairn-store store), or DIR itself. */
static int chunks_db_path(const char *dir, char *out, size_t n)
{
    static const char *const subs[] = {"chunks", "db"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(subs); i++) {
        if ((size_t)snprintf(out, n, "%s/%s", dir, subs[i]) >= n)
            return cairn_err_set(CAIRN_ETOOBIG, "path too long: '%s'", dir);
        if (is_kv_dir(out))
            return CAIRN_OK;
    }
    if (is_kv_dir(dir)) {
        if ((size_t)snprintf(out, n, "%s", dir) >= n)
            return cairn_err_set(CAIRN_ETOOBIG, "path too long: '%s'", dir);
        return CAIRN_OK;
    }
    return cairn_err_set(CAIRN_ENOTFOUND,
                         "'%s' holds no chunk store (looked for %s/chunks, %s/db and a RocksDB dir at %s)", dir, dir,
                         dir, dir);
}

static int chunks_read(const char *db, struct chunk_list *l)
{
    struct cairn_kv *kv = NULL;
    struct cairn_kv_iter *it = NULL;
    uint8_t prefix = 'c';
    l->n = 0;
    l->other_keys = 0;
    int rc = cairn_kv_open_readonly(&kv, db);
    if (rc == CAIRN_OK)
        rc = cairn_kv_iter_new_unverified(kv, &prefix, 1, &it); /* keys only: values are not judged here */
    while (rc == CAIRN_OK) {
        const uint8_t *k, *v;
        size_t kl, vl;
        bool done;
        rc = cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done);
        if (rc != CAIRN_OK || done)
            break;
        if (kl != CAIRN_STORE_CHUNK_KEY_BYTES) {
            l->other_keys++;
            continue;
        }
        rc = cairn_array_grow((void **)&l->keys, &l->cap, l->n + 1, sizeof(*l->keys));
        if (rc == CAIRN_OK)
            memcpy(l->keys[l->n++], k, CAIRN_STORE_CHUNK_KEY_BYTES);
    }
    cairn_kv_iter_destroy(&it);
    cairn_kv_close(&kv);
    return rc;
}

static int cmd_chunks(const struct opts *o, const char *dir)
{
    char db[4096];
    struct chunk_list l = {0};
    CAIRN_FORWARD_IF_ERROR(chunks_db_path(dir, db, sizeof(db)));
    /*
     * The owner of the store may compact or collect blob files between our open and our reads: such a
     * read fails with an IO error naming a file that is gone. A fresh open sees the new file set, so retry.
     */
    int rc = CAIRN_OK;
    for (int attempt = 0; attempt < 5; attempt++) {
        rc = chunks_read(db, &l);
        if (rc != CAIRN_EIO)
            break;
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc == CAIRN_OK) {
        /* RocksDB's order is bytewise, so the lines come out sorted by domain, then chunk id */
        char dh[2 * CAIRN_DOMAIN_ID_BYTES + 1], ch[2 * CAIRN_CHUNK_ID_BYTES + 1];
        size_t domains = 0;
        if (o->json)
            printf("{\"chunks\": [");
        for (size_t i = 0; i < l.n; i++) {
            const uint8_t *k = l.keys[i];
            if (i == 0 || memcmp(k + 1, l.keys[i - 1] + 1, CAIRN_DOMAIN_ID_BYTES) != 0)
                domains++;
            cairn_hex_encode(dh, k + 1, CAIRN_DOMAIN_ID_BYTES);
            cairn_hex_encode(ch, k + 1 + CAIRN_DOMAIN_ID_BYTES, CAIRN_CHUNK_ID_BYTES);
            if (o->json)
                printf("%s{\"domain\": \"%s\", \"id\": \"%s\"}", i ? ", " : "", dh, ch);
            else
                printf("%s %s\n", dh, ch);
        }
        if (o->json)
            printf("], \"count\": %zu, \"domains\": %zu}\n", l.n, domains);
        else if (!o->quiet)
            fprintf(stderr, "chunks: %zu chunks in %zu domains in %s\n", l.n, domains, db);
        if (l.other_keys)
            cairn_warn("%s: %" PRIu64 " chunk keys of an unexpected length were left out", db, l.other_keys);
    }
    cairn_free(l.keys);
    return rc;
}

static int parse_uint(const char *flag, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s ? s : "", &end, 10);
    if (!s || !*s || *end || errno || v < min || v > max)
        return cairn_err_set(CAIRN_EINVAL, "%s takes a number from %ld to %ld, not '%s'", flag, min, max, s ? s : "");
    *out = v;
    return CAIRN_OK;
}

int main(int argc, char **argv)
{
    struct opts o = {.app = "default", .threads = 0, .level = 0};
    const char *pos[4];
    int npos = 0, rc;
    const char *lvl = getenv("CAIRN_LOG_LEVEL");
    enum cairn_log_level ll;
    cairn_log_set_prog("cairn-store");
    if (lvl && cairn_log_level_parse(lvl, &ll) == CAIRN_OK)
        cairn_log_set_level(ll);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v;
        if (!strcmp(a, "--json")) {
            o.json = true;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            o.quiet = true;
        } else if (!strcmp(a, "--overlay")) {
            o.overlay = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--app")) {
            if (i + 1 >= argc || !argv[i + 1][0] || strlen(argv[i + 1]) > 255)
                return fail(&o, cairn_err_set(CAIRN_EINVAL, "--app takes a name of 1 to 255 bytes"));
            o.app = argv[++i];
        } else if (!strcmp(a, "--threads")) {
            if ((rc = parse_uint("--threads", i + 1 < argc ? argv[++i] : NULL, 1, 256, &v)) != CAIRN_OK)
                return fail(&o, rc);
            o.threads = (unsigned)v;
        } else if (!strcmp(a, "--level")) {
            if ((rc = parse_uint("--level", i + 1 < argc ? argv[++i] : NULL, -7, 19, &v)) != CAIRN_OK)
                return fail(&o, rc);
            o.level = (int)v;
        } else if (a[0] == '-' && a[1]) {
            usage(stderr);
            return fail(&o, cairn_err_set(CAIRN_EINVAL, "unknown option '%s'", a));
        } else if (npos < 4) {
            pos[npos++] = a;
        } else {
            usage(stderr);
            return fail(&o, cairn_err_set(CAIRN_EINVAL, "too many arguments"));
        }
    }
    if (npos == 0) {
        usage(stderr);
        return fail(&o, cairn_err_set(CAIRN_EINVAL, "no command given"));
    }
    if (cairn_crypto_init() != CAIRN_OK)
        return fail(&o, CAIRN_EINTERNAL);

    const char *cmd = pos[0];
    int want = !strcmp(cmd, "init") || !strcmp(cmd, "ls") || !strcmp(cmd, "verify") || !strcmp(cmd, "chunks") ? 2
               : !strcmp(cmd, "capture")                                          ? 3
               : !strcmp(cmd, "restore")                                          ? 4
                                                                                  : -1;
    if (want < 0) {
        usage(stderr);
        return fail(&o, cairn_err_set(CAIRN_EINVAL, "unknown command '%s'", cmd));
    }
    if (npos != want) {
        usage(stderr);
        return fail(&o, cairn_err_set(CAIRN_EINVAL, "'%s' takes %d argument%s", cmd, want - 1, want == 2 ? "" : "s"));
    }
    if (!strcmp(cmd, "init"))
        rc = cmd_init(&o, pos[1]);
    else if (!strcmp(cmd, "capture"))
        rc = cmd_capture(&o, pos[1], pos[2]);
    else if (!strcmp(cmd, "restore"))
        rc = cmd_restore(&o, pos[1], pos[2], pos[3]);
    else if (!strcmp(cmd, "ls"))
        rc = cmd_ls(&o, pos[1]);
    else if (!strcmp(cmd, "chunks"))
        rc = cmd_chunks(&o, pos[1]);
    else
        rc = cmd_verify(&o, pos[1]);
    return rc == CAIRN_OK ? 0 : fail(&o, rc);
}
