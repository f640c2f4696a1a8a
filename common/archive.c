/*
 * archive.c: cairn_archive_import and cairn_tree_import_auto (archive.h), a
 * tarball to chunks and a manifest without extracting it.
 *
 * Why a second front end to the capture pipeline: an image arrives as a
 * directory or as a tarball (an OCI / docker layer, a rootfs export), and
 * unpacking a hostile tarball to disk first would cost a copy of the image, root
 * privileges for devices and owners, and the path-safety problems of tar
 * extraction. libarchive reads the stream (format and compression detected from
 * the bytes); this file turns each header into a manifest entry and each file's
 * data blocks into chunks.
 *
 * Pipeline (the same as tree_capture.c: the chunk feed of tree_feed.c)
 * - The calling thread reads headers and data blocks. A file's blocks are
 *   appended to a 1 MiB staging window; whenever the window holds at least
 *   CAIRN_CHUNK_MAX bytes a chunk is cut with cairn_chunker_cut (final=false),
 *   and at the end of a data region (a hole in the sparse map, or the end of the
 *   file) the rest is cut with final=true. Cut points depend only on the bytes
 *   since the previous cut, so a file gets exactly the chunks capture gives it
 *   (capture cuts each SEEK_DATA region the same way): a directory and its
 *   tarball dedup.
 * - Each chunk is copied into a task buffer and handed to the pool; a worker
 *   (own codec) hashes, dedups, compresses, encrypts, stores, and writes the id
 *   into the chunk's piece slot. Buffers are recycled through a free list
 *   (at most queued + threads + 1 exist; the reader blocks for one), so memory
 *   does not depend on file or archive size.
 * - Piece slots live in an arena of fixed blocks that never move while tasks
 *   are in flight; a file entry records where its pieces start in the arena.
 *   After cairn_pool_wait they are copied into the entries.
 *
 * Entries and the path index
 * - Entries are appended in archive order; struct imeta (parallel array) holds
 *   each one's path hash, arena start, hardlink group and a dead flag. A
 *   hash table (SipHash with a random key: names are attacker-chosen) maps a
 *   path to the slot of its latest entry; a replaced entry is marked dead and
 *   dropped when the manifest is compacted at the end.
 * - Replacement (tar semantics, later wins): a directory over a directory
 *   updates the metadata in place (children and the opaque flag stay); anything
 *   else kills the old entry and appends the new one. A directory that already
 *   has children cannot be replaced by a non-directory (tar itself cannot
 *   extract that; ECORRUPT): so no subtree ever needs to be found and dropped.
 * - Parents: an entry's parent must be a live directory; missing ones are
 *   created (0755, root, mtime 0), shallowest first, without recursion.
 * - Hardlinks: the target (normalised like any path) must be a live FILE, or a
 *   HARDLINK whose group is used; the group is keyed by the index of the FILE
 *   entry (which may die later, replaced by another file of that name: the old
 *   data then belongs to the links). At the end the live member that sorts
 *   first becomes the FILE (the entry structs are swapped, paths kept) and the
 *   others link to it, so every target is an earlier FILE as the manifest
 *   requires.
 *
 * Whiteouts: see archive.h. Hostile input: every path and hardlink target is
 * normalised and checked (no absolute path, no "..", components and length as
 * cairn_path_validate allows), names in messages are escaped, libarchive's
 * errors become ECORRUPT with its message and the entry, and nothing is stored
 * as a tree unless the whole archive was read.
 */
#include "cairn/archive.h"

#include "cairn/alloc.h"
#include "cairn/chunker.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/pool.h"
#include "tree_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define STAGE_BYTES (1u << 20)
#define FILE_SIZE_MAX (1ull << 46) /* 64 TiB */
#define READ_BLOCK (1u << 20)
#define PROGRESS_NS 100000000ull
#define SYMLINK_MAX 4096u
#define ESC_MAX 200
#define NO_LINK SIZE_MAX
#define OVL_PREFIX "trusted.overlay."
#define WH_PREFIX ".wh."
#define WH_META ".wh..wh."
#define WH_OPAQUE ".wh..wh..opq"

struct imeta {
    uint64_t hash;        /* of the path */
    uint64_t piece_start; /* files: first arena slot */
    size_t link_to;       /* hardlinks: index of the group's FILE entry */
    bool dead;            /* replaced by a later entry */
    bool has_children;    /* directories */
};

/* A staging window over one file's data. */
struct feed {
    size_t ws, we;  /* unconsumed bytes stage[ws..we) */
    uint64_t pos;   /* file offset just after the last byte fed */
    uint32_t np;    /* pieces so far */
};

struct imp {
    struct cairn_store *s;
    const struct cairn_domain *d;
    const struct cairn_tree_opts *opts;
    unsigned flags;
    int level;
    const char *src; /* for messages */
    struct archive *a;

    struct cairn_manifest m;
    struct imeta *meta;
    size_t meta_cap;
    size_t *slots; /* entry index + 1; 0 = empty */
    size_t slots_cap, slots_used;
    uint8_t hkey[crypto_shorthash_KEYBYTES];

    struct cairn__feed feed; /* pool, task buffers, piece arena */
    uint8_t *stage;

    char *path; /* the current entry's normalised path */
    size_t path_cap, plen;
    char *tgt; /* normalised hardlink target */
    size_t tgt_cap;
    char ename[ESC_MAX + 8]; /* the current entry's name as in the archive, escaped */
    struct cairn__excl excl;

    struct cairn_tree_stats st;
    uint64_t t0, last_progress;
    bool warned_acl;
};

/* ---- messages ---- */

/* Printable form of an attacker-chosen name: \xNN for control and non-ASCII bytes, cut with "...". */
static void escape(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (; *p && o + 8 <= cap; p++) {
        if (*p == '\\' || *p == '\'') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p < 0x20 || *p >= 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    if (*p) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static int ent_fail(struct imp *im, int code, const char *fmt, ...) CAIRN_PRINTF(3, 4);
static int ent_fail(struct imp *im, int code, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return cairn_err_set(code, "archive '%s': entry '%s': %s", im->src, im->ename, what);
}

/* libarchive said no: its message; corruption unless it was the OS or memory. */
static int arc_code(struct archive *a)
{
    int e = archive_errno(a);
    if (e == ENOMEM)
        return CAIRN_ENOMEM;
    if (e == EIO || e == EBADF || e == EISDIR)
        return CAIRN_EIO;
    return CAIRN_ECORRUPT;
}

static const char *arc_msg(struct archive *a)
{
    const char *m = archive_error_string(a);
    return m ? m : "damaged or truncated archive (libarchive gave no detail)";
}

/* ---- reader side: progress, arena, chunks ---- */

static void progress(struct imp *im, bool force)
{
    if (!im->opts || !im->opts->progress)
        return;
    uint64_t now = cairn_now_mono_ns();
    if (!force && now - im->last_progress < PROGRESS_NS)
        return;
    im->last_progress = now;
    struct cairn_tree_stats s = im->st;
    if (!force) {
        s.entries = im->m.n;
        s.chunks_new += atomic_load_explicit(&im->feed.chunks_new, memory_order_relaxed);
        s.stored_bytes += atomic_load_explicit(&im->feed.stored_bytes, memory_order_relaxed);
    }
    s.elapsed_ns = now - im->t0;
    im->opts->progress(im->opts->progress_arg, &s);
}

static void imp_tick(void *ctx)
{
    progress(ctx, false);
}

static int imp_feed_fail(void *ctx, int code, enum cairn__feed_fail why)
{
    struct imp *im = ctx;
    switch (why) {
    case CAIRN__FEED_TOO_MANY_PIECES:
        return ent_fail(im, code, "too many pieces");
    case CAIRN__FEED_NOMEM_PIECES:
        return ent_fail(im, code, "out of memory for its pieces");
    default:
        return cairn_err_set(code, "archive '%s': out of memory for a chunk buffer", im->src);
    }
}

/* Cut chunks while the window holds a whole max chunk; with final, cut everything (a region ends). */
static int feed_cut(struct imp *im, struct feed *f, bool final)
{
    while (f->we - f->ws >= CAIRN_CHUNK_MAX || (final && f->we > f->ws)) {
        size_t avail = f->we - f->ws;
        size_t c;
        CAIRN_FORWARD_IF_ERROR(cairn__feed_cut(&im->feed, im->stage + f->ws, avail, final, &f->np, &c));
        f->ws += c;
    }
    if (f->ws == f->we)
        f->ws = f->we = 0;
    return CAIRN_OK;
}

static int feed_data(struct imp *im, struct feed *f, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (f->we == STAGE_BYTES) { /* less than a max chunk is left after a cut: move it down */
            memmove(im->stage, im->stage + f->ws, f->we - f->ws);
            f->we -= f->ws;
            f->ws = 0;
        }
        size_t n = CAIRN_MIN(len, (size_t)STAGE_BYTES - f->we);
        memcpy(im->stage + f->we, p, n);
        f->we += n;
        f->pos += n;
        p += n;
        len -= n;
        CAIRN_FORWARD_IF_ERROR(feed_cut(im, f, false));
    }
    return CAIRN_OK;
}

/* Stream the current entry's data into entry idx (size: from the header when set). */
static int read_data(struct imp *im, size_t idx, bool size_set, uint64_t size)
{
    struct feed f = {0};
    uint64_t start = im->feed.n_arena;
    for (;;) {
        const void *buf;
        size_t len;
        la_int64_t off;
        int r = archive_read_data_block(im->a, &buf, &len, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) /* RETRY, FAILED, FATAL */
            return ent_fail(im, arc_code(im->a), "reading its data: %s", arc_msg(im->a));
        if (r == ARCHIVE_WARN)
            cairn_debug("archive '%s': entry '%s': %s", im->src, im->ename, arc_msg(im->a));
        if (off < 0 || (uint64_t)off < f.pos)
            return ent_fail(im, CAIRN_ECORRUPT, "data block at offset %lld overlaps the previous one (ends at %llu)",
                            (long long)off, (unsigned long long)f.pos);
        if ((uint64_t)len > FILE_SIZE_MAX || (uint64_t)off > FILE_SIZE_MAX - len)
            return ent_fail(im, CAIRN_ETOOBIG, "data past %llu bytes (at most %llu)",
                            (unsigned long long)((uint64_t)off + len), (unsigned long long)FILE_SIZE_MAX);
        if (size_set && (uint64_t)off + len > size)
            return ent_fail(im, CAIRN_ECORRUPT, "data up to offset %llu, past its size of %llu bytes",
                            (unsigned long long)((uint64_t)off + len), (unsigned long long)size);
        if ((uint64_t)off > f.pos) { /* a hole: the data region before it ends */
            CAIRN_FORWARD_IF_ERROR(feed_cut(im, &f, true));
            CAIRN_FORWARD_IF_ERROR(cairn__feed_hole(&im->feed, (uint64_t)off - f.pos, &f.np));
            f.pos = (uint64_t)off;
        }
        CAIRN_FORWARD_IF_ERROR(feed_data(im, &f, buf, len));
    }
    CAIRN_FORWARD_IF_ERROR(feed_cut(im, &f, true));
    uint64_t total = size_set ? size : f.pos;
    if (total > f.pos) /* a sparse file ending in a hole */
        CAIRN_FORWARD_IF_ERROR(cairn__feed_hole(&im->feed, total - f.pos, &f.np));
    struct cairn_entry *e = &im->m.entries[idx];
    e->size = total;
    e->n_pieces = f.np; /* the pieces stay in the arena until the end (see top) */
    im->meta[idx].piece_start = start;
    return CAIRN_OK;
}

/* ---- paths ---- */

/*
 * Normalise an archive path into *buf: drop empty and "." components, refuse
 * absolute paths and "..", "" becomes "." (the root). *len excludes the NUL.
 */
static int normalise(struct imp *im, const char *raw, char **buf, size_t *cap, size_t *len, const char *what)
{
    size_t rl = strlen(raw);
    if (raw[0] == '/')
        return ent_fail(im, CAIRN_ECORRUPT, "%s is absolute", what);
    if (rl > CAIRN_PATH_MAX)
        return ent_fail(im, CAIRN_ECORRUPT, "%s of %zu bytes (at most %u)", what, rl, CAIRN_PATH_MAX);
    void *arr = *buf;
    if (cairn_array_grow(&arr, cap, rl + 2, 1) != CAIRN_OK)
        return ent_fail(im, CAIRN_ENOMEM, "out of memory for its %s", what);
    *buf = arr;
    char *out = *buf;
    size_t o = 0;
    for (size_t i = 0; i < rl;) {
        size_t j = i;
        while (j < rl && raw[j] != '/')
            j++;
        size_t cl = j - i;
        if (cl == 2 && raw[i] == '.' && raw[i + 1] == '.')
            return ent_fail(im, CAIRN_ECORRUPT, "%s has a '..' component", what);
        if (cl > 0 && !(cl == 1 && raw[i] == '.')) {
            if (o)
                out[o++] = '/';
            memcpy(out + o, raw + i, cl);
            o += cl;
        }
        i = j + 1;
    }
    if (o == 0)
        out[o++] = '.';
    out[o] = '\0';
    if (cairn_path_validate(out, o) != CAIRN_OK)
        return ent_fail(im, CAIRN_ECORRUPT, "invalid %s: %s", what, cairn_err_msg());
    *len = o;
    return CAIRN_OK;
}

static bool is_root(const char *p)
{
    return p[0] == '.' && p[1] == '\0';
}

/* ---- the path index ---- */

static uint64_t path_hash(const struct imp *im, const char *p, size_t len)
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)p, len, im->hkey);
    uint64_t v;
    memcpy(&v, h, sizeof(v));
    return v;
}

/*
 * The slot holding path p (its entry may be dead) or the empty slot where it
 * would go. Returns the entry index or SIZE_MAX when there is none.
 */
static size_t map_find(const struct imp *im, const char *p, size_t len, uint64_t h, size_t *slot)
{
    size_t mask = im->slots_cap - 1;
    for (size_t j = (size_t)h & mask;; j = (j + 1) & mask) {
        size_t v = im->slots[j];
        if (!v) {
            *slot = j;
            return SIZE_MAX;
        }
        const char *ep = im->m.entries[v - 1].path;
        if (im->meta[v - 1].hash == h && strncmp(ep, p, len) == 0 && ep[len] == '\0') {
            *slot = j;
            return v - 1;
        }
    }
}

/* Room for one more path in the index (load at most 1/2). */
static int map_reserve(struct imp *im)
{
    if ((im->slots_used + 1) * 2 <= im->slots_cap)
        return CAIRN_OK;
    size_t ncap = im->slots_cap ? im->slots_cap * 2 : 1024;
    size_t *n = cairn_calloc(ncap, sizeof(*n));
    if (!n)
        return ent_fail(im, CAIRN_ENOMEM, "out of memory for the path index");
    for (size_t i = 0; i < im->slots_cap; i++) {
        size_t v = im->slots[i];
        if (!v)
            continue;
        size_t j = (size_t)im->meta[v - 1].hash & (ncap - 1);
        while (n[j])
            j = (j + 1) & (ncap - 1);
        n[j] = v;
    }
    cairn_free(im->slots);
    im->slots = n;
    im->slots_cap = ncap;
    return CAIRN_OK;
}

/* Index of the live entry at p, or SIZE_MAX. */
static size_t lookup(const struct imp *im, const char *p, size_t len)
{
    if (im->slots_cap == 0)
        return SIZE_MAX;
    size_t slot, i = map_find(im, p, len, path_hash(im, p, len), &slot);
    return i != SIZE_MAX && !im->meta[i].dead ? i : SIZE_MAX;
}

/*
 * Append an entry for p[0..len) (no live entry may have that path) below the
 * directory entry parent (SIZE_MAX: none in the manifest). *idx is its index.
 */
static int add_entry(struct imp *im, const char *p, size_t len, uint8_t type, size_t parent, size_t *idx)
{
    CAIRN_FORWARD_IF_ERROR(map_reserve(im));
    void *arr = im->meta;
    if (cairn_array_grow(&arr, &im->meta_cap, im->m.n + 1, sizeof(*im->meta)) != CAIRN_OK)
        return ent_fail(im, CAIRN_ENOMEM, "out of memory for entries");
    im->meta = arr;
    uint64_t h = path_hash(im, p, len);
    size_t slot, old = map_find(im, p, len, h, &slot);
    if (old != SIZE_MAX && !im->meta[old].dead)
        return ent_fail(im, CAIRN_EINTERNAL, "path added twice");
    struct cairn_entry *e = cairn_manifest_add(&im->m);
    if (!e)
        return ent_fail(im, CAIRN_ENOMEM, "out of memory for entries");
    e->path = cairn_strndup(p, len);
    if (!e->path) {
        im->m.n--;
        return ent_fail(im, CAIRN_ENOMEM, "out of memory for entries");
    }
    e->type = type;
    size_t i = im->m.n - 1;
    im->meta[i] = (struct imeta){.hash = h, .link_to = NO_LINK};
    if (old == SIZE_MAX)
        im->slots_used++;
    im->slots[slot] = i + 1;
    if (parent != SIZE_MAX)
        im->meta[parent].has_children = true;
    *idx = i;
    return CAIRN_OK;
}

static const char *type_name(uint8_t t)
{
    static const char *names[] = {"?", "file", "directory", "symlink", "hardlink", "char device",
                                  "block device", "fifo", "whiteout"};
    return t < CAIRN_ARRAY_LEN(names) ? names[t] : "?";
}

/* An implicit directory (the archive left it out). */
static int add_implicit_dir(struct imp *im, const char *p, size_t len, size_t parent, size_t *idx)
{
    CAIRN_FORWARD_IF_ERROR(add_entry(im, p, len, CAIRN_ET_DIR, parent, idx));
    struct cairn_entry *e = &im->m.entries[*idx];
    e->mode = 0755;
    return CAIRN_OK;
}

/*
 * The directory entry that is p[0..len)'s parent, creating missing ones
 * (shallowest first). *parent is SIZE_MAX for a top-level path (the root
 * entry "." is optional). A parent that is not a directory is corruption.
 */
static int ensure_parent(struct imp *im, const char *p, size_t len, size_t *parent)
{
    *parent = SIZE_MAX;
    size_t k = len;
    while (k > 0 && p[k - 1] != '/')
        k--;
    if (k == 0)
        return CAIRN_OK; /* top level */
    k--;                 /* p[0..k) is the parent */
    /* walk up to the deepest ancestor that exists */
    size_t first_missing = k + 1, have = SIZE_MAX; /* k + 1: nothing missing */
    for (size_t q = k;;) {
        size_t i = lookup(im, p, q);
        if (i != SIZE_MAX) {
            if (im->m.entries[i].type != CAIRN_ET_DIR) {
                char esc[ESC_MAX + 8];
                char *dup = cairn_strndup(p, q);
                escape(esc, sizeof(esc), dup ? dup : "?");
                cairn_free(dup);
                return ent_fail(im, CAIRN_ECORRUPT, "it is below '%s', which is a %s in the archive, not a directory",
                                esc, type_name(im->m.entries[i].type));
            }
            have = i;
            break;
        }
        first_missing = q;
        while (q > 0 && p[q - 1] != '/')
            q--;
        if (q == 0)
            break;
        q--;
    }
    if (first_missing == k + 1) {
        *parent = have;
        return CAIRN_OK;
    }
    /* create p[0..first_missing), then every deeper prefix up to p[0..k) */
    for (size_t q = first_missing; q <= k; q++) {
        if (q != k && p[q] != '/')
            continue;
        size_t idx;
        CAIRN_FORWARD_IF_ERROR(add_implicit_dir(im, p, q, have, &idx));
        have = idx;
    }
    *parent = have;
    return CAIRN_OK;
}

/* ---- entries ---- */

static int xattr_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cairn_xattr *)a)->name, ((const struct cairn_xattr *)b)->name);
}

static void xattrs_clear(struct cairn_entry *e)
{
    for (uint32_t i = 0; i < e->n_xattrs; i++) {
        cairn_free(e->xattrs[i].name);
        cairn_free(e->xattrs[i].value);
    }
    CAIRN_FREE(e->xattrs);
    e->n_xattrs = 0;
}

/* The header's xattrs into entry idx (overlay mode: trusted.overlay.* handled as capture does). */
static int read_xattrs(struct imp *im, struct archive_entry *ae, size_t idx)
{
    struct cairn_entry *e = &im->m.entries[idx];
    size_t cap = 0;
    const char *name;
    const void *value;
    size_t size;
    archive_entry_xattr_reset(ae);
    while (archive_entry_xattr_next(ae, &name, &value, &size) == ARCHIVE_OK) {
        size_t nl = name ? strlen(name) : 0;
        if (nl == 0)
            return ent_fail(im, CAIRN_ECORRUPT, "an xattr without a name");
        if (nl > CAIRN_XATTR_NAME_MAX)
            return ent_fail(im, CAIRN_ECORRUPT, "xattr name of %zu bytes (at most %u)", nl, CAIRN_XATTR_NAME_MAX);
        if (size > CAIRN_XATTR_VALUE_MAX || (size > 0 && !value))
            return ent_fail(im, CAIRN_ECORRUPT, "xattr value of %zu bytes (at most %u)", size, CAIRN_XATTR_VALUE_MAX);
        if ((im->flags & CAIRN_TREE_OVERLAY) && strncmp(name, OVL_PREFIX, strlen(OVL_PREFIX)) == 0) {
            if (e->type == CAIRN_ET_DIR && strcmp(name, OVL_PREFIX "opaque") == 0 && size == 1 &&
                ((const char *)value)[0] == 'y')
                e->flags |= CAIRN_EF_OPAQUE;
            continue;
        }
        struct cairn_xattr *x = NULL;
        for (uint32_t i = 0; i < e->n_xattrs && !x; i++)
            if (strcmp(e->xattrs[i].name, name) == 0)
                x = &e->xattrs[i]; /* a repeated name: the last value wins */
        uint8_t *v = cairn_memdup(size ? value : "", size ? size : 1);
        if (!v)
            return ent_fail(im, CAIRN_ENOMEM, "out of memory for its xattrs");
        if (x) {
            cairn_free(x->value);
            x->value = v;
            x->len = (uint32_t)size;
            continue;
        }
        if (e->n_xattrs >= CAIRN_XATTRS_MAX) {
            cairn_free(v);
            return ent_fail(im, CAIRN_ECORRUPT, "more than %u xattrs", CAIRN_XATTRS_MAX);
        }
        void *arr = e->xattrs;
        if (cairn_array_grow(&arr, &cap, (size_t)e->n_xattrs + 1, sizeof(*e->xattrs)) != CAIRN_OK) {
            cairn_free(v);
            return ent_fail(im, CAIRN_ENOMEM, "out of memory for its xattrs");
        }
        e->xattrs = arr;
        x = &e->xattrs[e->n_xattrs];
        x->name = cairn_strndup(name, nl);
        x->value = v;
        x->len = (uint32_t)size;
        if (!x->name) {
            cairn_free(v);
            return ent_fail(im, CAIRN_ENOMEM, "out of memory for its xattrs");
        }
        e->n_xattrs++;
    }
    if (e->n_xattrs > 1)
        qsort(e->xattrs, e->n_xattrs, sizeof(*e->xattrs), xattr_cmp); /* deterministic manifests dedup */
    if (archive_entry_acl_types(ae) != 0 && !im->warned_acl) {
        im->warned_acl = true;
        cairn_warn("archive '%s': ACLs (first on '%s') are not imported", im->src, im->ename);
    }
    return CAIRN_OK;
}

/* Owner, mode and mtime from the header. */
static int read_meta(struct imp *im, struct archive_entry *ae, uint32_t *mode, uint32_t *uid, uint32_t *gid,
                     int64_t *mtime_ns)
{
    la_int64_t u = archive_entry_uid(ae), g = archive_entry_gid(ae);
    if (u < 0 || u > (la_int64_t)UINT32_MAX || g < 0 || g > (la_int64_t)UINT32_MAX)
        return ent_fail(im, CAIRN_ECORRUPT, "owner %lld:%lld out of range", (long long)u, (long long)g);
    *uid = (uint32_t)u;
    *gid = (uint32_t)g;
    *mode = (uint32_t)(archive_entry_perm(ae) & 07777);
    *mtime_ns = 0;
    if (archive_entry_mtime_is_set(ae)) {
        int64_t sec = (int64_t)archive_entry_mtime(ae);
        long ns = archive_entry_mtime_nsec(ae);
        if (ns < 0 || ns > 999999999)
            ns = 0;
        if (sec > INT64_MAX / 1000000000 - 1 || sec < INT64_MIN / 1000000000 + 1)
            return ent_fail(im, CAIRN_ECORRUPT, "mtime %lld out of range", (long long)sec);
        *mtime_ns = sec * 1000000000 + ns;
    }
    return CAIRN_OK;
}

static void set_meta(struct cairn_entry *e, uint32_t mode, uint32_t uid, uint32_t gid, int64_t mtime_ns)
{
    e->mode = mode;
    e->uid = uid;
    e->gid = gid;
    e->mtime_ns = mtime_ns;
}

/*
 * Make room for a new entry of type at im->path: a live one there is replaced
 * (killed), or for a directory over a directory *inplace is set to its index.
 */
static int make_room(struct imp *im, uint8_t type, size_t *inplace)
{
    *inplace = SIZE_MAX;
    size_t old = lookup(im, im->path, im->plen);
    if (old == SIZE_MAX)
        return CAIRN_OK;
    uint8_t ot = im->m.entries[old].type;
    if (ot == CAIRN_ET_DIR && type == CAIRN_ET_DIR) {
        *inplace = old;
        return CAIRN_OK;
    }
    if (ot == CAIRN_ET_DIR && im->meta[old].has_children)
        return ent_fail(im, CAIRN_ECORRUPT, "a %s replaces a directory that has entries below it", type_name(type));
    im->meta[old].dead = true;
    return CAIRN_OK;
}

/* ".wh.<name>" and ".wh..wh..opq" (im->path ends with base). */
static int import_whiteout(struct imp *im, struct archive_entry *ae, const char *base)
{
    size_t dlen = (size_t)(base - im->path); /* the directory part, with its '/' */
    if (strncmp(base, WH_META, strlen(WH_META)) == 0) {
        if (strcmp(base, WH_OPAQUE) != 0) {
            cairn_warn("archive '%s': skipping '%s' (aufs metadata)", im->src, im->ename);
            im->st.skipped++;
            return CAIRN_OK;
        }
        size_t dir;
        if (dlen == 0) { /* the root is opaque */
            dir = lookup(im, ".", 1);
            if (dir == SIZE_MAX)
                CAIRN_FORWARD_IF_ERROR(add_implicit_dir(im, ".", 1, SIZE_MAX, &dir));
        } else {
            CAIRN_FORWARD_IF_ERROR(ensure_parent(im, im->path, im->plen, &dir));
        }
        im->m.entries[dir].flags |= CAIRN_EF_OPAQUE;
        return CAIRN_OK;
    }
    const char *name = base + strlen(WH_PREFIX);
    if (!name[0] || (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]))))
        return ent_fail(im, CAIRN_ECORRUPT, "a whiteout of '%s' names no entry", name);
    uint32_t mode, uid, gid;
    int64_t mtime;
    CAIRN_FORWARD_IF_ERROR(read_meta(im, ae, &mode, &uid, &gid, &mtime));
    /* the path of the entry it hides: drop ".wh." from the last component */
    memmove(im->path + dlen, name, strlen(name) + 1);
    im->plen -= strlen(WH_PREFIX);
    size_t old = lookup(im, im->path, im->plen);
    if (old != SIZE_MAX && im->m.entries[old].type != CAIRN_ET_WHITEOUT) {
        /* OCI: a whiteout only hides lower layers, never an entry of its own layer */
        cairn_debug("archive '%s': whiteout '%s' ignored: the archive has that entry", im->src, im->ename);
        return CAIRN_OK;
    }
    if (old != SIZE_MAX)
        im->meta[old].dead = true;
    size_t parent, idx;
    CAIRN_FORWARD_IF_ERROR(ensure_parent(im, im->path, im->plen, &parent));
    CAIRN_FORWARD_IF_ERROR(add_entry(im, im->path, im->plen, CAIRN_ET_WHITEOUT, parent, &idx));
    set_meta(&im->m.entries[idx], 0, uid, gid, mtime);
    return CAIRN_OK;
}

/* The FILE entry a hardlink's target names (following an earlier hardlink to its group). */
static int link_target(struct imp *im, const char *raw, size_t *file)
{
    size_t tl;
    CAIRN_FORWARD_IF_ERROR(normalise(im, raw, &im->tgt, &im->tgt_cap, &tl, "hardlink target"));
    size_t i = lookup(im, im->tgt, tl);
    char esc[ESC_MAX + 8];
    escape(esc, sizeof(esc), im->tgt);
    if (i == SIZE_MAX && cairn__excl_match(&im->excl, im->tgt, tl)) {
        cairn_warn("archive '%s': skipping hardlink '%s': its target '%s' is excluded", im->src, im->ename, esc);
        im->st.skipped++;
        *file = NO_LINK;
        return CAIRN_OK;
    }
    if (i == SIZE_MAX)
        return ent_fail(im, CAIRN_ECORRUPT, "hardlink to '%s', which is not an earlier entry of the archive", esc);
    const struct cairn_entry *t = &im->m.entries[i];
    if (t->type == CAIRN_ET_HARDLINK) {
        *file = im->meta[i].link_to;
        return CAIRN_OK;
    }
    if (t->type != CAIRN_ET_FILE)
        return ent_fail(im, CAIRN_ECORRUPT, "hardlink to '%s', which is a %s, not a file", esc, type_name(t->type));
    *file = i;
    return CAIRN_OK;
}

static int import_entry(struct imp *im, struct archive_entry *ae)
{
    const char *raw = archive_entry_pathname(ae);
    if (!raw)
        raw = archive_entry_pathname_utf8(ae);
    if (!raw) {
        escape(im->ename, sizeof(im->ename), "(no name)");
        return ent_fail(im, CAIRN_ECORRUPT, "an entry without a name");
    }
    escape(im->ename, sizeof(im->ename), raw);
    CAIRN_FORWARD_IF_ERROR(normalise(im, raw, &im->path, &im->path_cap, &im->plen, "path"));
    if (cairn__excl_match(&im->excl, im->path, im->plen))
        return CAIRN_OK;

    const char *hl = archive_entry_hardlink(ae);
    if (!hl)
        hl = archive_entry_hardlink_utf8(ae);
    const char *slash = strrchr(im->path, '/');
    const char *base = slash ? slash + 1 : im->path;
    for (const char *c = im->path; c < base; c = strchr(c, '/') + 1) {
        if (strncmp(c, WH_PREFIX, strlen(WH_PREFIX)) == 0) { /* below a marker: aufs's .wh..wh.plnk/ and the like */
            cairn_warn("archive '%s': skipping '%s' (below a whiteout marker)", im->src, im->ename);
            im->st.skipped++;
            return CAIRN_OK;
        }
    }
    if (strncmp(base, WH_PREFIX, strlen(WH_PREFIX)) == 0)
        return import_whiteout(im, ae, base);

    uint8_t type;
    uint64_t rdev = 0;
    if (hl) {
        type = CAIRN_ET_HARDLINK;
    } else {
        switch (archive_entry_filetype(ae)) {
        case AE_IFREG:
            type = CAIRN_ET_FILE;
            break;
        case AE_IFDIR:
            type = CAIRN_ET_DIR;
            break;
        case AE_IFLNK:
            type = CAIRN_ET_SYMLINK;
            break;
        case AE_IFCHR:
        case AE_IFBLK: {
            unsigned long ma = (unsigned long)archive_entry_rdevmajor(ae), mi = (unsigned long)archive_entry_rdevminor(ae);
            if (ma > 0xfff || mi > 0xfffff) /* the kernel's dev_t: 12-bit major, 20-bit minor */
                return ent_fail(im, CAIRN_ECORRUPT, "device %lu:%lu out of range", ma, mi);
            rdev = (uint64_t)makedev((unsigned)ma, (unsigned)mi);
            type = archive_entry_filetype(ae) == AE_IFBLK ? CAIRN_ET_BLK
                   : (im->flags & CAIRN_TREE_OVERLAY) && rdev == 0 ? CAIRN_ET_WHITEOUT
                                                                   : CAIRN_ET_CHR;
            break;
        }
        case AE_IFIFO:
            type = CAIRN_ET_FIFO;
            break;
        case AE_IFSOCK:
            cairn_warn("archive '%s': skipping socket '%s'", im->src, im->ename);
            im->st.skipped++;
            return CAIRN_OK;
        default:
            cairn_warn("archive '%s': skipping '%s' of unknown type 0%o", im->src, im->ename,
                       (unsigned)archive_entry_filetype(ae));
            im->st.skipped++;
            return CAIRN_OK;
        }
    }
    if (is_root(im->path) && type != CAIRN_ET_DIR)
        return ent_fail(im, CAIRN_ECORRUPT, "the root is a %s, not a directory", type_name(type));

    uint32_t mode, uid, gid;
    int64_t mtime;
    CAIRN_FORWARD_IF_ERROR(read_meta(im, ae, &mode, &uid, &gid, &mtime));
    const char *target = NULL;
    size_t tlen = 0, file = NO_LINK;
    if (type == CAIRN_ET_SYMLINK) {
        target = archive_entry_symlink(ae);
        if (!target)
            target = archive_entry_symlink_utf8(ae);
        tlen = target ? strlen(target) : 0;
        if (tlen == 0 || tlen > SYMLINK_MAX)
            return ent_fail(im, CAIRN_ECORRUPT, "symlink target of %zu bytes (1..%u allowed)", tlen, SYMLINK_MAX);
    } else if (type == CAIRN_ET_HARDLINK) {
        CAIRN_FORWARD_IF_ERROR(link_target(im, hl, &file)); /* before make_room: "a" may link to an older "a" */
        if (file == NO_LINK)
            return CAIRN_OK; /* its target was excluded */
    }
    bool size_set = archive_entry_size_is_set(ae) != 0;
    la_int64_t hsize = size_set ? archive_entry_size(ae) : 0;
    if (type == CAIRN_ET_FILE) {
        if (hsize < 0)
            return ent_fail(im, CAIRN_ECORRUPT, "negative size %lld", (long long)hsize);
        if ((uint64_t)hsize > FILE_SIZE_MAX)
            return ent_fail(im, CAIRN_ETOOBIG, "size of %lld bytes (at most %llu)", (long long)hsize,
                            (unsigned long long)FILE_SIZE_MAX);
    }

    size_t idx;
    CAIRN_FORWARD_IF_ERROR(make_room(im, type, &idx));
    if (idx != SIZE_MAX) { /* a directory again: new metadata, same children */
        struct cairn_entry *e = &im->m.entries[idx];
        set_meta(e, mode, uid, gid, mtime);
        xattrs_clear(e);
        return read_xattrs(im, ae, idx);
    }
    size_t parent = SIZE_MAX;
    if (!is_root(im->path))
        CAIRN_FORWARD_IF_ERROR(ensure_parent(im, im->path, im->plen, &parent));
    CAIRN_FORWARD_IF_ERROR(add_entry(im, im->path, im->plen, type, parent, &idx));
    struct cairn_entry *e = &im->m.entries[idx];
    set_meta(e, mode, uid, gid, mtime);
    switch (type) {
    case CAIRN_ET_HARDLINK:
        im->meta[idx].link_to = file; /* the target path is set when the groups are resolved */
        return CAIRN_OK;              /* the inode's xattrs are on the file */
    case CAIRN_ET_WHITEOUT:
        return CAIRN_OK;
    case CAIRN_ET_SYMLINK:
        e->target = cairn_strndup(target, tlen);
        if (!e->target)
            return ent_fail(im, CAIRN_ENOMEM, "out of memory for its target");
        break;
    case CAIRN_ET_CHR:
    case CAIRN_ET_BLK:
        e->rdev = rdev;
        break;
    default:
        break;
    }
    CAIRN_FORWARD_IF_ERROR(read_xattrs(im, ae, idx));
    if (type == CAIRN_ET_FILE)
        return read_data(im, idx, size_set, (uint64_t)hsize);
    return CAIRN_OK;
}

/* ---- the end: hardlink groups, pieces, compaction ---- */

static int resolve_hardlinks(struct imp *im)
{
    struct cairn_manifest *m = &im->m;
    bool any = false;
    for (size_t i = 0; i < m->n && !any; i++)
        any = !im->meta[i].dead && m->entries[i].type == CAIRN_ET_HARDLINK;
    if (!any)
        return CAIRN_OK;
    size_t *canon = cairn_calloc(m->n, sizeof(size_t)); /* group (FILE index) -> canonical index + 1 */
    if (!canon)
        return cairn_err_set(CAIRN_ENOMEM, "archive '%s': out of memory resolving hardlinks", im->src);
    int rc = CAIRN_OK;
    for (size_t i = 0; i < m->n; i++)
        if (!im->meta[i].dead && m->entries[i].type == CAIRN_ET_FILE)
            canon[i] = i + 1;
    for (size_t i = 0; i < m->n; i++) {
        if (im->meta[i].dead || m->entries[i].type != CAIRN_ET_HARDLINK)
            continue;
        size_t f = im->meta[i].link_to;
        if (f >= m->n) {
            rc = cairn_err_set(CAIRN_EINTERNAL, "archive '%s': hardlink '%s' has no group", im->src, m->entries[i].path);
            goto out;
        }
        if (!canon[f] || cairn_path_cmp(m->entries[i].path, m->entries[canon[f] - 1].path) < 0)
            canon[f] = i + 1;
    }
    for (size_t f = 0; f < m->n; f++) {
        if (!canon[f] || canon[f] - 1 == f)
            continue;
        /* the file's data and metadata move to the canonical name; f keeps its path and becomes a link */
        size_t c = canon[f] - 1;
        struct cairn_entry tmp = m->entries[f];
        m->entries[f] = m->entries[c];
        m->entries[c] = tmp;
        char *p = m->entries[f].path;
        m->entries[f].path = m->entries[c].path;
        m->entries[c].path = p;
        im->meta[c].piece_start = im->meta[f].piece_start;
        im->meta[c].link_to = NO_LINK;
        im->meta[f].link_to = f;
    }
    for (size_t i = 0; i < m->n; i++) {
        struct cairn_entry *e = &m->entries[i];
        if (im->meta[i].dead || e->type != CAIRN_ET_HARDLINK)
            continue;
        size_t c = canon[im->meta[i].link_to] - 1;
        cairn_free(e->target);
        e->target = cairn_strdup(m->entries[c].path);
        if (!e->target) {
            rc = cairn_err_set(CAIRN_ENOMEM, "archive '%s': out of memory resolving hardlinks", im->src);
            goto out;
        }
    }
out:
    cairn_free(canon);
    return rc;
}

/* Pieces from the arena into the live files, then drop dead entries. */
static int assemble(struct imp *im)
{
    struct cairn_manifest *m = &im->m;
    for (size_t i = 0; i < m->n; i++) {
        struct cairn_entry *e = &m->entries[i];
        if (im->meta[i].dead || e->type != CAIRN_ET_FILE || e->n_pieces == 0)
            continue;
        uint32_t n = e->n_pieces;
        e->n_pieces = 0;
        e->pieces = cairn_calloc(n, sizeof(*e->pieces));
        if (!e->pieces)
            return cairn_err_set(CAIRN_ENOMEM, "archive '%s': out of memory for the pieces of '%s'", im->src, e->path);
        e->cap_pieces = n;
        uint64_t cur = im->meta[i].piece_start;
        if (cur + n > im->feed.n_arena)
            return cairn_err_set(CAIRN_EINTERNAL, "archive '%s': pieces of '%s' past the arena", im->src, e->path);
        cairn__feed_pieces(&im->feed, cur, n, e->pieces);
        e->n_pieces = n;
    }
    size_t o = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (im->meta[i].dead) {
            cairn_entry_release(&m->entries[i]);
            continue;
        }
        if (o != i)
            m->entries[o] = m->entries[i];
        o++;
    }
    m->n = o;
    return CAIRN_OK;
}

static void final_stats(struct imp *im)
{
    struct cairn_tree_stats *s = &im->st;
    s->entries = im->m.n;
    s->files = s->dirs = s->symlinks = s->hardlinks = s->specials = s->whiteouts = 0;
    s->bytes = s->chunks = 0;
    for (size_t i = 0; i < im->m.n; i++) {
        const struct cairn_entry *e = &im->m.entries[i];
        switch (e->type) {
        case CAIRN_ET_FILE:
            s->files++;
            for (uint32_t j = 0; j < e->n_pieces; j++) {
                if (e->pieces[j].hole)
                    continue;
                s->chunks++;
                s->bytes += e->pieces[j].len;
            }
            break;
        case CAIRN_ET_DIR:
            s->dirs++;
            break;
        case CAIRN_ET_SYMLINK:
            s->symlinks++;
            break;
        case CAIRN_ET_HARDLINK:
            s->hardlinks++;
            break;
        case CAIRN_ET_WHITEOUT:
            s->whiteouts++;
            break;
        default:
            s->specials++;
            break;
        }
    }
    cairn__feed_take_stats(&im->feed, s);
}

/* ---- driver ---- */

static int read_archive(struct imp *im, int fd)
{
    struct archive *a = im->a;
    archive_read_support_format_tar(a);
    archive_read_support_format_empty(a);
    /* compression filters by name: filter_all would also run external programs (lrzip, grzip...) */
    (void)archive_read_support_filter_gzip(a);
    (void)archive_read_support_filter_bzip2(a);
    (void)archive_read_support_filter_xz(a);
    (void)archive_read_support_filter_lzma(a);
    (void)archive_read_support_filter_zstd(a);
    (void)archive_read_support_filter_lz4(a);
    if (archive_read_open_fd(a, fd, READ_BLOCK) != ARCHIVE_OK)
        return cairn_err_set(arc_code(a), "archive '%s': %s", im->src, arc_msg(a));
    bool first = true;
    for (;;) {
        struct archive_entry *ae;
        int r = archive_read_next_header(a, &ae);
        if (r == ARCHIVE_EOF)
            return CAIRN_OK;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) { /* RETRY (a damaged header), FAILED, FATAL */
            if (first)
                return cairn_err_set(arc_code(a), "archive '%s': reading the first entry: %s", im->src, arc_msg(a));
            return cairn_err_set(arc_code(a), "archive '%s': reading the entry after '%s': %s", im->src, im->ename,
                                 arc_msg(a));
        }
        first = false;
        CAIRN_FORWARD_IF_ERROR(import_entry(im, ae));
        if (r == ARCHIVE_WARN) /* e.g. a UTF-8 name the locale cannot show: its bytes are kept */
            cairn_debug("archive '%s': entry '%s': %s", im->src, im->ename, arc_msg(a));
        progress(im, false);
    }
}

static void imp_release(struct imp *im)
{
    cairn__feed_release(&im->feed);
    if (im->a)
        archive_read_free(im->a);
    im->a = NULL;
    cairn_manifest_release(&im->m);
    cairn_free(im->meta);
    cairn_free(im->slots);
    cairn__excl_release(&im->excl);
    cairn_free(im->stage);
    cairn_free(im->path);
    cairn_free(im->tgt);
    sodium_memzero(im->hkey, sizeof(im->hkey));
}

int cairn_archive_import_fd(struct cairn_store *s, const struct cairn_domain *d, int fd, const char *name,
                            const struct cairn_tree_opts *opts, struct cairn_tree_ref *out,
                            struct cairn_tree_stats *st)
{
    int rc;
    struct imp im;
    struct cairn_codec *codec = NULL;
    char fdname[32];
    memset(&im, 0, sizeof(im));
    memset(out, 0, sizeof(*out));
    cairn_manifest_init(&im.m);
    if (!name) {
        snprintf(fdname, sizeof(fdname), "fd %d", fd);
        name = fdname;
    }
    im.src = name;
    im.s = s;
    im.d = d;
    im.opts = opts;
    im.flags = opts ? opts->flags : 0;
    im.level = opts && opts->level ? opts->level : CAIRN_CODEC_DEFAULT_LEVEL;
    cairn__feed_init(&im.feed, s, d, im.level, &im.st, &im, imp_feed_fail, imp_tick);
    im.t0 = im.last_progress = cairn_now_mono_ns();
    escape(im.ename, sizeof(im.ename), "(none yet)");
    unsigned threads = opts && opts->threads ? opts->threads : cairn_cpu_count();
    size_t queued = 4 * (size_t)threads;

    rc = cairn_crypto_init();
    if (rc != CAIRN_OK)
        goto out;
    cairn_random_bytes(im.hkey, sizeof(im.hkey));
    rc = cairn__excl_init(&im.excl, opts, "archive");
    if (rc != CAIRN_OK)
        goto out;
    im.stage = cairn_malloc(STAGE_BYTES);
    im.a = archive_read_new();
    if (!im.stage || !im.a) {
        rc = cairn_err_set(CAIRN_ENOMEM, "archive '%s': out of memory", name);
        goto out;
    }
    rc = cairn_codec_new(&codec, im.level);
    if (rc != CAIRN_OK)
        goto out;
    rc = cairn__feed_pool_new(&im.feed, threads, queued);
    if (rc != CAIRN_OK)
        goto out;
    rc = read_archive(&im, fd);
    if (rc != CAIRN_OK)
        goto out;
    rc = cairn_pool_wait(im.feed.pool); /* orders the workers' slot writes before the reads below */
    if (rc != CAIRN_OK)
        goto out;
    rc = resolve_hardlinks(&im);
    if (rc != CAIRN_OK)
        goto out;
    rc = assemble(&im);
    if (rc != CAIRN_OK)
        goto out;
    cairn_manifest_sort(&im.m);
    final_stats(&im);
    rc = cairn_manifest_store(s, codec, d, &im.m, out, &im.st);
    if (rc != CAIRN_OK)
        goto out;
    im.st.elapsed_ns = cairn_now_mono_ns() - im.t0;
    progress(&im, true);
    if (st)
        *st = im.st;
out:
    if (rc != CAIRN_OK && im.feed.pool) {
        /* keep the first error's message across the drain */
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        cairn_pool_wait(im.feed.pool);
        cairn_err_set(rc, "%s", msg);
    }
    cairn_codec_destroy(&codec);
    imp_release(&im);
    return rc;
}

int cairn_archive_import(struct cairn_store *s, const struct cairn_domain *d, const char *path,
                         const struct cairn_tree_opts *opts, struct cairn_tree_ref *out,
                         struct cairn_tree_stats *st)
{
    memset(out, 0, sizeof(*out));
    if (strcmp(path, "-") == 0)
        return cairn_archive_import_fd(s, d, STDIN_FILENO, "(stdin)", opts, out, st);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        return cairn_err_set_errno(cairn_err_from_errno(e), e, "archive: opening '%s'", path);
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return cairn_err_set_errno(CAIRN_EIO, e, "archive: stat of '%s'", path);
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return cairn_err_set(CAIRN_EINVAL, "archive: '%s' is a directory, not a tarball", path);
    }
    if (S_ISREG(sb.st_mode) && sb.st_size > (1 << 20))
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int rc = cairn_archive_import_fd(s, d, fd, path, opts, out, st);
    close(fd);
    return rc;
}

int cairn_tree_import_auto(struct cairn_store *s, const struct cairn_domain *d, const char *path,
                           const struct cairn_tree_opts *opts, struct cairn_tree_ref *out,
                           struct cairn_tree_stats *st)
{
    memset(out, 0, sizeof(*out));
    if (strcmp(path, "-") == 0)
        return cairn_archive_import(s, d, path, opts, out, st);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        return cairn_err_set_errno(cairn_err_from_errno(e), e, "import: '%s'", path);
    }
    if (S_ISDIR(sb.st_mode))
        return cairn_tree_capture(s, d, path, opts, out, st);
    return cairn_archive_import(s, d, path, opts, out, st);
}
