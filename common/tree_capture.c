/*
 * tree_capture.c: cairn_tree_capture (tree.h), a directory tree to chunks and a
 * manifest.
 *
 * Pipeline
 * - The calling thread walks the tree with a directory chain (tree_internal.h:
 *   openat relative to directory fds, O_NOFOLLOW, any depth, bounded fds),
 *   lstat-ing every entry and recording its metadata in walk order.
 * - It reads each regular file itself, data regions only (SEEK_DATA/SEEK_HOLE
 *   when st_blocks says the file is sparse; holes become hole pieces), into a
 *   4 MiB staging buffer and cuts chunks with cairn_chunker_cut. This is the
 *   streaming chunker's algorithm (cut points depend only on the bytes since
 *   the previous cut, so boundaries are the same as cairn_chunker's) without a
 *   4 MiB allocation per file or region. The window always holds at least
 *   CAIRN_CHUNK_MAX bytes unless the region ends, so no byte is scanned twice.
 * - Each chunk is copied into a task buffer (CAIRN_CHUNK_MAX bytes) and handed
 *   to the pool; a worker (own struct cairn_codec) hashes, dedups, compresses,
 *   encrypts and stores it, writes the id into the chunk's piece slot and puts
 *   the buffer back on the free list. That machinery (buffers, pool, piece
 *   arena) is the chunk feed of tree_feed.c, shared with archive.c. When the
 *   caller set opts->chunk_stored, the worker then hands it the chunk's id
 *   (so a caller can replicate chunks while the capture goes on).
 * - Memory bound: at most 4 * threads tasks queued, threads running, and
 *   buffers are recycled (at most queued + threads + 1 ever allocated; the
 *   walker blocks for a free one). A file of any size streams through.
 *
 * Piece slots (the realloc race): pieces are not written into the entries
 * while tasks are in flight. The walker appends every piece (data and hole) of
 * every file, in walk order, to a piece arena made of fixed blocks of
 * CAIRN__PIECE_BLOCK slots (tree_feed.c) that are never moved or freed until
 * the end; a task holds a pointer to its slot. Only the walker appends (it may grow the array of
 * block pointers, never the blocks). After cairn_pool_wait (which orders the
 * workers' writes before the walker's reads) the arena is copied into each
 * file entry's own pieces array, again in walk order, before sorting.
 *
 * Hardlinks: regular files with st_nlink > 1 go into a (dev, ino) map; the
 * first one walked is read as a FILE, later ones become HARDLINK entries whose
 * target is (for now) the first one's path. After sorting, the member of each
 * group that sorts first becomes the FILE (its struct is swapped with the
 * walked-first one, paths kept) and every other member's target is set to it.
 *
 * Overlay mode: char 0/0 devices are whiteouts; trusted.overlay.opaque=y on a
 * dir is the opaque flag; every trusted.overlay.* xattr is dropped. Sockets and
 * entries that vanish during the walk are skipped with a warning.
 */
#include "cairn/tree.h"

#include "cairn/alloc.h"
#include "cairn/chunker.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/pool.h"
#include "tree_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define STAGE_BYTES (4u * 1024u * 1024u)
#define PROGRESS_NS 100000000ull
#define OVL_PREFIX "trusted.overlay."

struct hl_slot {
    dev_t dev;
    ino_t ino;
    size_t idx1; /* entry index + 1; 0 = empty */
};

struct walk_level {
    struct cairn__names names;
    size_t next;
};

struct cap {
    struct cairn_store *s;
    const struct cairn_domain *d;
    const struct cairn_tree_opts *opts;
    unsigned flags;
    int level;
    struct cairn_manifest m;
    struct cairn__feed feed; /* pool, task buffers, piece arena */

    uint8_t *stage;
    struct hl_slot *hl;
    size_t hl_cap, hl_n;
    struct cairn__excl excl;

    struct cairn__dirchain chain;
    bool chain_ok;
    struct walk_level *wl;
    size_t wl_cap;

    char *path; /* current entry's path */
    size_t path_cap;
    char *xnames;
    size_t xnames_cap;
    uint8_t *xval;
    size_t xval_cap;

    struct cairn_tree_stats st;
    uint64_t t0, last_progress;
};

/* ---- walker side ---- */

static void progress(struct cap *cp, bool force)
{
    if (!cp->opts || !cp->opts->progress)
        return;
    uint64_t now = cairn_now_mono_ns();
    if (!force && now - cp->last_progress < PROGRESS_NS)
        return;
    cp->last_progress = now;
    struct cairn_tree_stats s = cp->st;
    s.entries = cp->m.n;
    s.chunks_new += atomic_load_explicit(&cp->feed.chunks_new, memory_order_relaxed);
    s.stored_bytes += atomic_load_explicit(&cp->feed.stored_bytes, memory_order_relaxed);
    s.elapsed_ns = now - cp->t0;
    cp->opts->progress(cp->opts->progress_arg, &s);
}

static void cap_tick(void *ctx)
{
    progress(ctx, false);
}

static int cap_feed_fail(void *ctx, int code, enum cairn__feed_fail why)
{
    struct cap *cp = ctx;
    switch (why) {
    case CAIRN__FEED_TOO_MANY_PIECES:
        return cairn_err_set(code, "capture: file '%s' has too many pieces", cp->path);
    case CAIRN__FEED_NOMEM_PIECES:
        return cairn_err_set(code, "capture: out of memory for pieces of '%s'", cp->path);
    default:
        return cairn_err_set(code, "capture: out of memory for a chunk buffer");
    }
}

/* Chunk len bytes of fd from off. *got < len when the file shrank under us. */
static int chunk_region(struct cap *cp, int fd, uint64_t off, uint64_t len, uint32_t *npieces, uint64_t *got)
{
    uint8_t *stage = cp->stage;
    uint64_t pos = off, left = len;
    size_t ws = 0, we = 0;
    for (;;) {
        if (we - ws < CAIRN_CHUNK_MAX && left > 0) {
            if (ws > 0) {
                memmove(stage, stage + ws, we - ws);
                we -= ws;
                ws = 0;
            }
            size_t want = (size_t)CAIRN_MIN(left, (uint64_t)(STAGE_BYTES - we));
            ssize_t r = pread(fd, stage + we, want, (off_t)pos);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return cairn_err_set_errno(CAIRN_EIO, errno, "capture: reading '%s'", cp->path);
            }
            if (r == 0)
                left = 0; /* shrank: store what was there */
            we += (size_t)r;
            pos += (uint64_t)r;
            left -= CAIRN_MIN(left, (uint64_t)r);
            continue;
        }
        size_t avail = we - ws;
        if (avail == 0)
            break;
        bool final = left == 0;
        size_t c;
        CAIRN_FORWARD_IF_ERROR(cairn__feed_cut(&cp->feed, stage + ws, avail, final, npieces, &c));
        ws += c;
    }
    *got = pos - off;
    return CAIRN_OK;
}

/* Read a regular file's data into pieces; *size is reduced when it shrank. */
static int capture_data(struct cap *cp, int fd, const struct stat *st, uint64_t *size, uint32_t *npieces)
{
    uint64_t total = *size, off = 0;
    bool sparse = (uint64_t)st->st_blocks * 512u < total;
    if (total > (1u << 20))
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    while (off < total) {
        uint64_t dend = total;
        if (sparse) {
            off_t r = lseek(fd, (off_t)off, SEEK_DATA);
            uint64_t dstart;
            if (r < 0 && errno == ENXIO) {
                dstart = total;
            } else if (r < 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
                sparse = false; /* no hole support here: read everything */
                dstart = off;
            } else if (r < 0) {
                return cairn_err_set_errno(CAIRN_EIO, errno, "capture: seeking data in '%s'", cp->path);
            } else {
                dstart = CAIRN_MIN((uint64_t)r, total);
                if (dstart < off)
                    dstart = off;
            }
            if (dstart > off) {
                CAIRN_FORWARD_IF_ERROR(cairn__feed_hole(&cp->feed, dstart - off, npieces));
                off = dstart;
                if (off >= total)
                    break;
            }
            if (sparse) {
                off_t h = lseek(fd, (off_t)off, SEEK_HOLE);
                dend = h < 0 || (uint64_t)h > total || (uint64_t)h <= off ? total : (uint64_t)h;
            }
        }
        uint64_t got = 0, want = dend - off;
        CAIRN_FORWARD_IF_ERROR(chunk_region(cp, fd, off, want, npieces, &got));
        off += got;
        if (got < want) {
            cairn_warn("capture: '%s' shrank while being read; stored %llu of %llu bytes", cp->path,
                       (unsigned long long)off, (unsigned long long)total);
            *size = off;
            return CAIRN_OK;
        }
    }
    return CAIRN_OK;
}

static int xattr_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cairn_xattr *)a)->name, ((const struct cairn_xattr *)b)->name);
}

static ssize_t x_list(int fd, const char *ppath, char *buf, size_t n)
{
    return fd >= 0 ? flistxattr(fd, buf, n) : llistxattr(ppath, buf, n);
}

static ssize_t x_get(int fd, const char *ppath, const char *name, void *buf, size_t n)
{
    return fd >= 0 ? fgetxattr(fd, name, buf, n) : lgetxattr(ppath, name, buf, n);
}

static bool xattr_unsupported(int e)
{
    return e == ENOTSUP || e == EOPNOTSUPP || e == ENOSYS;
}

/* Value of one xattr into cp->xval; *len = (size_t)-1 when it vanished. */
static int read_xattr_value(struct cap *cp, int fd, const char *ppath, const char *name, size_t *len)
{
    for (;;) {
        ssize_t n = x_get(fd, ppath, name, NULL, 0);
        if (n < 0) {
            if (errno == ENODATA || xattr_unsupported(errno)) {
                *len = (size_t)-1;
                return CAIRN_OK;
            }
            return cairn_err_set_errno(CAIRN_EIO, errno, "capture: reading xattr '%s' of '%s'", name, cp->path);
        }
        if ((size_t)n > CAIRN_XATTR_VALUE_MAX)
            return cairn_err_set(CAIRN_ETOOBIG, "capture: xattr '%s' of '%s' has %zd bytes (at most %u)", name,
                                 cp->path, n, CAIRN_XATTR_VALUE_MAX);
        void *arr = cp->xval;
        if (cairn_array_grow(&arr, &cp->xval_cap, (size_t)n + 1, 1) != CAIRN_OK)
            return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for xattrs of '%s'", cp->path);
        cp->xval = arr;
        ssize_t m = x_get(fd, ppath, name, cp->xval, cp->xval_cap);
        if (m < 0 && errno == ERANGE)
            continue; /* grew in between */
        if (m < 0) {
            if (errno == ENODATA) {
                *len = (size_t)-1;
                return CAIRN_OK;
            }
            return cairn_err_set_errno(CAIRN_EIO, errno, "capture: reading xattr '%s' of '%s'", name, cp->path);
        }
        if ((size_t)m > CAIRN_XATTR_VALUE_MAX)
            continue;
        *len = (size_t)m;
        return CAIRN_OK;
    }
}

/*
 * Record the xattrs of cp->path (through fd, or the l* calls on ppath) into entry
 * idx. Overlay mode: trusted.overlay.* are dropped, opaque=y sets *opaque.
 */
static int read_xattrs(struct cap *cp, size_t idx, int fd, const char *ppath, bool *opaque)
{
    ssize_t n;
    for (;;) {
        n = x_list(fd, ppath, NULL, 0);
        if (n < 0) {
            if (xattr_unsupported(errno))
                return CAIRN_OK;
            return cairn_err_set_errno(CAIRN_EIO, errno, "capture: listing xattrs of '%s'", cp->path);
        }
        if (n == 0)
            return CAIRN_OK;
        void *arr = cp->xnames;
        if (cairn_array_grow(&arr, &cp->xnames_cap, (size_t)n + 1, 1) != CAIRN_OK)
            return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for xattrs of '%s'", cp->path);
        cp->xnames = arr;
        n = x_list(fd, ppath, cp->xnames, cp->xnames_cap);
        if (n < 0 && errno == ERANGE)
            continue;
        if (n < 0)
            return cairn_err_set_errno(CAIRN_EIO, errno, "capture: listing xattrs of '%s'", cp->path);
        break;
    }
    struct cairn_entry *e = &cp->m.entries[idx];
    size_t cap = 0;
    for (size_t i = 0; i < (size_t)n;) {
        const char *name = cp->xnames + i;
        size_t nlen = strnlen(name, (size_t)n - i);
        i += nlen + 1;
        if (nlen == 0)
            continue;
        if (nlen > CAIRN_XATTR_NAME_MAX)
            return cairn_err_set(CAIRN_ETOOBIG, "capture: xattr name of %zu bytes on '%s'", nlen, cp->path);
        size_t vlen = 0;
        bool ovl = (cp->flags & CAIRN_TREE_OVERLAY) && strncmp(name, OVL_PREFIX, strlen(OVL_PREFIX)) == 0;
        if (ovl && strcmp(name, OVL_PREFIX "opaque") != 0)
            continue;
        CAIRN_FORWARD_IF_ERROR(read_xattr_value(cp, fd, ppath, name, &vlen));
        if (vlen == (size_t)-1)
            continue;
        if (ovl) {
            if (opaque && vlen == 1 && cp->xval[0] == 'y')
                *opaque = true;
            continue;
        }
        if (e->n_xattrs >= CAIRN_XATTRS_MAX)
            return cairn_err_set(CAIRN_ETOOBIG, "capture: '%s' has more than %u xattrs", cp->path, CAIRN_XATTRS_MAX);
        void *arr = e->xattrs;
        if (cairn_array_grow(&arr, &cap, (size_t)e->n_xattrs + 1, sizeof(*e->xattrs)) != CAIRN_OK)
            return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for xattrs of '%s'", cp->path);
        e->xattrs = arr;
        struct cairn_xattr *x = &e->xattrs[e->n_xattrs];
        x->name = cairn_strndup(name, nlen);
        x->value = cairn_memdup(cp->xval, vlen);
        x->len = (uint32_t)vlen;
        if (!x->name || !x->value) {
            cairn_free(x->name);
            cairn_free(x->value);
            return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for xattrs of '%s'", cp->path);
        }
        e->n_xattrs++;
    }
    if (e->n_xattrs > 1)
        qsort(e->xattrs, e->n_xattrs, sizeof(*e->xattrs), xattr_cmp); /* deterministic manifests dedup */
    return CAIRN_OK;
}

/* Append an entry for cp->path with st's metadata; *idx is its index. */
static int add_entry(struct cap *cp, uint8_t type, const struct stat *st, size_t *idx)
{
    struct cairn_entry *e = cairn_manifest_add(&cp->m);
    if (!e)
        return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for entry '%s'", cp->path);
    e->path = cairn_strdup(cp->path);
    if (!e->path) {
        cp->m.n--;
        return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for entry '%s'", cp->path);
    }
    e->type = type;
    e->mode = (uint32_t)(st->st_mode & 07777);
    e->uid = (uint32_t)st->st_uid;
    e->gid = (uint32_t)st->st_gid;
    e->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    *idx = cp->m.n - 1;
    return CAIRN_OK;
}

/* ---- hardlink map ---- */

static size_t hl_hash(dev_t dev, ino_t ino, size_t cap)
{
    uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 29;
    return (size_t)(h & (cap - 1));
}

/* Finds (dev, ino); when absent, inserts it with idx and returns SIZE_MAX. */
static int hl_lookup_insert(struct cap *cp, dev_t dev, ino_t ino, size_t idx, size_t *found)
{
    if ((cp->hl_n + 1) * 2 > cp->hl_cap) {
        size_t ncap = cp->hl_cap ? cp->hl_cap * 2 : 256;
        struct hl_slot *n = cairn_calloc(ncap, sizeof(*n));
        if (!n)
            return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for the hardlink map");
        for (size_t i = 0; i < cp->hl_cap; i++) {
            if (!cp->hl[i].idx1)
                continue;
            size_t j = hl_hash(cp->hl[i].dev, cp->hl[i].ino, ncap);
            while (n[j].idx1)
                j = (j + 1) & (ncap - 1);
            n[j] = cp->hl[i];
        }
        cairn_free(cp->hl);
        cp->hl = n;
        cp->hl_cap = ncap;
    }
    size_t j = hl_hash(dev, ino, cp->hl_cap);
    while (cp->hl[j].idx1) {
        if (cp->hl[j].dev == dev && cp->hl[j].ino == ino) {
            *found = cp->hl[j].idx1 - 1;
            return CAIRN_OK;
        }
        j = (j + 1) & (cp->hl_cap - 1);
    }
    cp->hl[j] = (struct hl_slot){.dev = dev, .ino = ino, .idx1 = idx + 1};
    cp->hl_n++;
    *found = SIZE_MAX;
    return CAIRN_OK;
}

/* ---- entries ---- */

static int vanished(struct cap *cp, const char *why)
{
    cairn_warn("capture: skipping '%s': %s (changed during capture)", cp->path, why);
    cp->st.skipped++;
    return CAIRN_OK;
}

static int capture_file(struct cap *cp, int dirfd, const char *name)
{
    int rc = CAIRN_OK;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ELOOP)
            return vanished(cp, strerror(errno));
        return cairn_err_set_errno(cairn_err_from_errno(errno) == CAIRN_EPERM ? CAIRN_EPERM : CAIRN_EIO, errno,
                                   "capture: opening '%s'", cp->path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "capture: stat of '%s'", cp->path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = vanished(cp, "no longer a regular file");
        goto out;
    }
    size_t idx = cp->m.n, first = SIZE_MAX;
    if (st.st_nlink > 1) {
        rc = hl_lookup_insert(cp, st.st_dev, st.st_ino, idx, &first);
        if (rc != CAIRN_OK)
            goto out;
    }
    if (first != SIZE_MAX) {
        rc = add_entry(cp, CAIRN_ET_HARDLINK, &st, &idx);
        if (rc != CAIRN_OK)
            goto out;
        struct cairn_entry *e = &cp->m.entries[idx];
        e->target = cairn_strdup(cp->m.entries[first].path);
        if (!e->target)
            rc = cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for '%s'", cp->path);
        cp->st.hardlinks++;
        goto out;
    }
    rc = add_entry(cp, CAIRN_ET_FILE, &st, &idx);
    if (rc != CAIRN_OK)
        goto out;
    rc = read_xattrs(cp, idx, fd, NULL, NULL);
    if (rc != CAIRN_OK)
        goto out;
    uint64_t size = (uint64_t)st.st_size;
    uint32_t np = 0;
    rc = capture_data(cp, fd, &st, &size, &np);
    /* the entry pointer is stable here: nothing was appended to the manifest meanwhile */
    cp->m.entries[idx].size = size;
    cp->m.entries[idx].n_pieces = np; /* pieces stay in the arena until the end (see top) */
    cp->st.files++;
out:
    close(fd);
    return rc;
}

/* Read a symlink's target into a new string (*out NULL when it vanished: skipped). */
static int read_link(struct cap *cp, int dirfd, const char *name, char **out)
{
    *out = NULL;
    for (size_t cap = 256; cap <= 65536; cap *= 4) {
        char *target = cairn_malloc(cap);
        if (!target)
            return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for link '%s'", cp->path);
        ssize_t n = readlinkat(dirfd, name, target, cap);
        if (n >= 0 && (size_t)n < cap) {
            target[n] = '\0';
            *out = target;
            return CAIRN_OK;
        }
        int e = errno;
        cairn_free(target);
        if (n < 0 && (e == ENOENT || e == EINVAL))
            return vanished(cp, strerror(e));
        if (n < 0)
            return cairn_err_set_errno(CAIRN_EIO, e, "capture: reading link '%s'", cp->path);
    }
    return cairn_err_set(CAIRN_ETOOBIG, "capture: link '%s' has a target too long", cp->path);
}

static int capture_special(struct cap *cp, int dirfd, const char *name, const struct stat *st)
{
    uint8_t type;
    if (S_ISLNK(st->st_mode)) {
        type = CAIRN_ET_SYMLINK;
    } else if (S_ISCHR(st->st_mode)) {
        type = (cp->flags & CAIRN_TREE_OVERLAY) && st->st_rdev == makedev(0, 0) ? CAIRN_ET_WHITEOUT : CAIRN_ET_CHR;
    } else if (S_ISBLK(st->st_mode)) {
        type = CAIRN_ET_BLK;
    } else if (S_ISFIFO(st->st_mode)) {
        type = CAIRN_ET_FIFO;
    } else if (S_ISSOCK(st->st_mode)) {
        cairn_warn("capture: skipping socket '%s'", cp->path);
        cp->st.skipped++;
        return CAIRN_OK;
    } else {
        cairn_warn("capture: skipping '%s' of unknown type 0%o", cp->path, (unsigned)(st->st_mode & S_IFMT));
        cp->st.skipped++;
        return CAIRN_OK;
    }

    char *target = NULL;
    if (type == CAIRN_ET_SYMLINK) {
        CAIRN_FORWARD_IF_ERROR(read_link(cp, dirfd, name, &target));
        if (!target)
            return CAIRN_OK; /* vanished */
    }
    size_t idx;
    int rc = add_entry(cp, type, st, &idx);
    if (rc != CAIRN_OK) {
        cairn_free(target);
        return rc;
    }
    struct cairn_entry *e = &cp->m.entries[idx];
    e->target = target; /* owned by the entry from here on */
    if (type == CAIRN_ET_CHR || type == CAIRN_ET_BLK)
        e->rdev = (uint64_t)st->st_rdev;
    if (type == CAIRN_ET_WHITEOUT) {
        cp->st.whiteouts++;
        return CAIRN_OK; /* a deletion marker: no xattrs */
    }
    if (type == CAIRN_ET_SYMLINK)
        cp->st.symlinks++;
    else
        cp->st.specials++;
    char ppath[320];
    if (cairn__proc_path(ppath, sizeof(ppath), dirfd, name) != 0)
        return cairn_err_set(CAIRN_EINTERNAL, "capture: proc path of '%s'", cp->path);
    return read_xattrs(cp, idx, -1, ppath, NULL);
}

/* A directory: record it, read its names and make it the chain's top. */
static int capture_dir(struct cap *cp, int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)
            return vanished(cp, strerror(errno));
        return cairn_err_set_errno(cairn_err_from_errno(errno) == CAIRN_EPERM ? CAIRN_EPERM : CAIRN_EIO, errno,
                                   "capture: opening directory '%s'", cp->path);
    }
    int rc = CAIRN_OK, e;
    struct stat st;
    size_t idx;
    bool opaque = false;
    if (fstat(fd, &st) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "capture: stat of '%s'", cp->path);
        goto out;
    }
    rc = add_entry(cp, CAIRN_ET_DIR, &st, &idx);
    if (rc == CAIRN_OK)
        rc = read_xattrs(cp, idx, fd, NULL, &opaque);
    if (rc != CAIRN_OK)
        goto out;
    if (opaque)
        cp->m.entries[idx].flags |= CAIRN_EF_OPAQUE;
    cp->st.dirs++;

    size_t depth = cp->chain.depth + 1;
    void *arr = cp->wl;
    size_t wcap = cp->wl_cap;
    if (cairn_array_grow(&arr, &wcap, depth + 1, sizeof(*cp->wl)) != CAIRN_OK) {
        rc = cairn_err_set(CAIRN_ENOMEM, "capture: out of memory walking '%s'", cp->path);
        goto out;
    }
    cp->wl = arr;
    for (size_t i = cp->wl_cap; i < wcap; i++)
        memset(&cp->wl[i], 0, sizeof(cp->wl[i]));
    cp->wl_cap = wcap;
    e = cairn__names_read(fd, &cp->wl[depth].names);
    if (e) {
        rc = cairn_err_set_errno(CAIRN_EIO, e, "capture: reading directory '%s'", cp->path);
        goto out;
    }
    cp->wl[depth].next = 0;
    e = cairn__dirchain_push_fd(&cp->chain, name, strlen(name), fd, &st);
    fd = -1; /* taken by the chain, even on failure */
    if (e)
        rc = cairn_err_set_errno(CAIRN_EIO, e, "capture: entering '%s'", cp->path);
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

static int set_path(struct cap *cp, const char *name)
{
    size_t dl = cp->chain.path_len, nl = strlen(name);
    size_t need = dl + (dl ? 1 : 0) + nl;
    if (need > CAIRN_PATH_MAX)
        return cairn_err_set(CAIRN_ETOOBIG, "capture: path of %zu bytes under '%.200s' (at most %u)", need,
                             cp->chain.path, CAIRN_PATH_MAX);
    void *arr = cp->path;
    if (cairn_array_grow(&arr, &cp->path_cap, need + 1, 1) != CAIRN_OK)
        return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for a path");
    cp->path = arr;
    memcpy(cp->path, cp->chain.path, dl);
    size_t o = dl;
    if (dl)
        cp->path[o++] = '/';
    memcpy(cp->path + o, name, nl + 1);
    return CAIRN_OK;
}

static int walk(struct cap *cp)
{
    for (;;) {
        size_t depth = cp->chain.depth;
        struct walk_level *L = &cp->wl[depth];
        if (L->next >= L->names.n) {
            cairn__names_release(&L->names);
            if (depth == 0)
                return CAIRN_OK;
            int e = cairn__dirchain_pop(&cp->chain);
            if (e)
                return cairn_err_set_errno(CAIRN_EIO, e, "capture: going back up to '%s'", cp->chain.path);
            continue;
        }
        const char *name = cairn__names_at(&L->names, L->next++);
        CAIRN_FORWARD_IF_ERROR(set_path(cp, name));
        if (cairn__excl_match(&cp->excl, cp->path, strlen(cp->path)))
            continue;
        int dirfd = cairn__dirchain_fd(&cp->chain);
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                CAIRN_FORWARD_IF_ERROR(vanished(cp, strerror(errno)));
            else
                return cairn_err_set_errno(CAIRN_EIO, errno, "capture: stat of '%s'", cp->path);
            continue;
        }
        if (S_ISDIR(st.st_mode))
            CAIRN_FORWARD_IF_ERROR(capture_dir(cp, dirfd, name));
        else if (S_ISREG(st.st_mode))
            CAIRN_FORWARD_IF_ERROR(capture_file(cp, dirfd, name));
        else
            CAIRN_FORWARD_IF_ERROR(capture_special(cp, dirfd, name, &st));
        progress(cp, false);
    }
}

/* Move each file's pieces from the arena into its entry (walk order = arena order). */
static int assemble_pieces(struct cap *cp)
{
    uint64_t cur = 0;
    for (size_t i = 0; i < cp->m.n; i++) {
        struct cairn_entry *e = &cp->m.entries[i];
        if (e->type != CAIRN_ET_FILE || e->n_pieces == 0)
            continue;
        uint32_t n = e->n_pieces;
        e->n_pieces = 0;
        e->pieces = cairn_calloc(n, sizeof(*e->pieces));
        if (!e->pieces)
            return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory for the pieces of '%s'", e->path);
        e->cap_pieces = n;
        cairn__feed_pieces(&cp->feed, cur, n, e->pieces);
        cur += n;
        e->n_pieces = n;
    }
    if (cur != cp->feed.n_arena)
        return cairn_err_set(CAIRN_EINTERNAL, "capture: %llu pieces in the arena, %llu assigned",
                             (unsigned long long)cp->feed.n_arena, (unsigned long long)cur);
    return CAIRN_OK;
}

static size_t find_entry(const struct cairn_manifest *m, const char *path)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cairn_path_cmp(m->entries[mid].path, path);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

/* After sorting: the group member that sorts first is the FILE, the others link to it. */
static int resolve_hardlinks(struct cap *cp)
{
    if (cp->st.hardlinks == 0)
        return CAIRN_OK;
    struct cairn_manifest *m = &cp->m;
    size_t *canon = cairn_calloc(m->n, sizeof(size_t)); /* leader index -> canonical index + 1 */
    if (!canon)
        return cairn_err_set(CAIRN_ENOMEM, "capture: out of memory resolving hardlinks");
    int rc = CAIRN_OK;
    for (size_t i = 0; i < m->n; i++) {
        if (m->entries[i].type != CAIRN_ET_HARDLINK)
            continue;
        size_t f = find_entry(m, m->entries[i].target);
        if (f == SIZE_MAX) {
            rc = cairn_err_set(CAIRN_EINTERNAL, "capture: hardlink '%s' lost its file", m->entries[i].path);
            goto out;
        }
        if (canon[f])
            continue;
        if (i < f) {
            struct cairn_entry tmp = m->entries[i];
            m->entries[i] = m->entries[f];
            m->entries[f] = tmp;
            char *p = m->entries[i].path;
            m->entries[i].path = m->entries[f].path;
            m->entries[f].path = p;
            canon[f] = i + 1;
        } else {
            canon[f] = f + 1;
        }
    }
    for (size_t i = 0; i < m->n; i++) {
        struct cairn_entry *e = &m->entries[i];
        if (e->type != CAIRN_ET_HARDLINK)
            continue;
        size_t f = find_entry(m, e->target);
        if (f == SIZE_MAX || !canon[f]) {
            rc = cairn_err_set(CAIRN_EINTERNAL, "capture: hardlink '%s' lost its file", e->path);
            goto out;
        }
        const char *cpath = m->entries[canon[f] - 1].path;
        if (strcmp(cpath, e->target) != 0) {
            char *t = cairn_strdup(cpath);
            if (!t) {
                rc = cairn_err_set(CAIRN_ENOMEM, "capture: out of memory resolving hardlinks");
                goto out;
            }
            cairn_free(e->target);
            e->target = t;
        }
    }
out:
    cairn_free(canon);
    return rc;
}

static void cap_release(struct cap *cp)
{
    cairn__feed_release(&cp->feed);
    for (size_t i = 0; i < cp->wl_cap; i++)
        cairn__names_release(&cp->wl[i].names);
    cairn_free(cp->wl);
    if (cp->chain_ok)
        cairn__dirchain_release(&cp->chain);
    cairn__excl_release(&cp->excl);
    cairn_free(cp->hl);
    cairn_free(cp->stage);
    cairn_free(cp->path);
    cairn_free(cp->xnames);
    cairn_free(cp->xval);
    cairn_manifest_release(&cp->m);
}

int cairn_tree_capture(struct cairn_store *s, const struct cairn_domain *d, const char *src,
                       const struct cairn_tree_opts *opts, struct cairn_tree_ref *out,
                       struct cairn_tree_stats *st)
{
    int rc;
    struct cap cp;
    struct cairn_codec *codec = NULL;
    memset(&cp, 0, sizeof(cp));
    memset(out, 0, sizeof(*out));
    cairn_manifest_init(&cp.m);
    cp.s = s;
    cp.d = d;
    cp.opts = opts;
    cp.flags = opts ? opts->flags : 0;
    cp.level = opts && opts->level ? opts->level : CAIRN_CODEC_DEFAULT_LEVEL;
    cairn__feed_init(&cp.feed, s, d, cp.level, &cp.st, &cp, cap_feed_fail, cap_tick);
    if (opts && opts->chunk_stored) {
        cp.feed.stored = opts->chunk_stored;
        cp.feed.stored_arg = opts->chunk_stored_arg;
    }
    cp.t0 = cp.last_progress = cairn_now_mono_ns();
    unsigned threads = opts && opts->threads ? opts->threads : cairn_cpu_count();
    size_t queued = 4 * (size_t)threads;

    rc = cairn__excl_init(&cp.excl, opts, "capture");
    if (rc != CAIRN_OK)
        goto out;
    int rootfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        int e = errno;
        rc = cairn_err_set_errno(e == ENOTDIR ? CAIRN_EINVAL : cairn_err_from_errno(e), e,
                                 "capture: opening the source directory '%s'", src);
        goto out;
    }
    int e = cairn__dirchain_init(&cp.chain, rootfd, true);
    if (e) {
        close(rootfd);
        rc = cairn_err_set_errno(CAIRN_EIO, e, "capture: opening '%s'", src);
        goto out;
    }
    cp.chain_ok = true;
    cp.stage = cairn_malloc(STAGE_BYTES);
    cp.path = cairn_strdup(".");
    cp.path_cap = cp.path ? 2 : 0;
    cp.wl = cairn_calloc(16, sizeof(*cp.wl));
    cp.wl_cap = cp.wl ? 16 : 0;
    if (!cp.stage || !cp.path || !cp.wl) {
        rc = cairn_err_set(CAIRN_ENOMEM, "capture: out of memory");
        goto out;
    }
    rc = cairn_codec_new(&codec, cp.level);
    if (rc != CAIRN_OK)
        goto out;
    rc = cairn__feed_pool_new(&cp.feed, threads, queued);
    if (rc != CAIRN_OK)
        goto out;

    /* the root itself is entry "." */
    struct stat rst;
    size_t ridx;
    bool opaque = false;
    if (fstat(rootfd, &rst) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "capture: stat of '%s'", src);
        goto out;
    }
    rc = add_entry(&cp, CAIRN_ET_DIR, &rst, &ridx);
    if (rc == CAIRN_OK)
        rc = read_xattrs(&cp, ridx, rootfd, NULL, &opaque);
    if (rc != CAIRN_OK)
        goto out;
    if (opaque)
        cp.m.entries[ridx].flags |= CAIRN_EF_OPAQUE;
    cp.st.dirs++;
    e = cairn__names_read(rootfd, &cp.wl[0].names);
    if (e) {
        rc = cairn_err_set_errno(CAIRN_EIO, e, "capture: reading directory '%s'", src);
        goto out;
    }

    rc = walk(&cp);
    if (rc != CAIRN_OK)
        goto out;
    rc = cairn_pool_wait(cp.feed.pool); /* orders the workers' slot writes before the reads below */
    if (rc != CAIRN_OK)
        goto out;
    rc = assemble_pieces(&cp);
    if (rc != CAIRN_OK)
        goto out;
    cairn_manifest_sort(&cp.m);
    rc = resolve_hardlinks(&cp);
    if (rc != CAIRN_OK)
        goto out;
    cp.st.entries = cp.m.n;
    cairn__feed_take_stats(&cp.feed, &cp.st);
    rc = cairn_manifest_store(s, codec, d, &cp.m, out, &cp.st);
    if (rc != CAIRN_OK)
        goto out;
    cp.st.elapsed_ns = cairn_now_mono_ns() - cp.t0;
    progress(&cp, true);
    if (st)
        *st = cp.st;
out:
    if (rc != CAIRN_OK && cp.feed.pool) {
        /* keep the first error's message across the drain */
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        cairn_pool_wait(cp.feed.pool);
        cairn_err_set(rc, "%s", msg);
    }
    cairn_codec_destroy(&codec);
    cap_release(&cp);
    return rc;
}
