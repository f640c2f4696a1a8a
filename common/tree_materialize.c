/*
 * tree_materialize.c: cairn_tree_materialize (tree.h), a stored tree back to
 * files under dest.
 *
 * Safety (the manifest is hostile input even after cairn_manifest_decode
 * validated it, and dest may already hold anything):
 * - Every directory is reached through a directory chain (tree_internal.h):
 *   each component opened with openat(parent, comp, O_DIRECTORY | O_NOFOLLOW)
 *   from the dest fd; a symlink or non-directory on the way fails with ELOOP or
 *   ENOTDIR and becomes CAIRN_ECORRUPT "path goes through a symlink or
 *   non-directory". No path is ever joined onto dest by hand.
 * - The last component is always created with a call that does not follow it:
 *   mkdirat, openat(O_CREAT | O_EXCL | O_NOFOLLOW), symlinkat, mknodat, linkat
 *   without AT_SYMLINK_FOLLOW. Whatever already exists there (a file, a symlink
 *   to anywhere, a directory) is removed first with *at calls (recursively for a
 *   directory, never following symlinks): it is never written through.
 * - Metadata of entries without a data fd goes through fchownat/fchmodat/
 *   utimensat with AT_SYMLINK_NOFOLLOW and l*xattr on /proc/self/fd/<dir>/<name>.
 * - Hardlink targets must be an earlier FILE entry (checked again here) and are
 *   resolved with a second directory chain from the dest fd.
 *
 * Pipeline: the calling thread walks the sorted entries keeping the chain on
 * the current entry's parent (sorted component-wise, so a directory precedes
 * its contents and the chain moves little), creates every entry, and for each
 * file with data submits tasks of ~8 MiB of pieces to the pool. Workers (own
 * codec and a CAIRN_CODEC_MAX_PLAIN buffer each) fetch and decode the chunks
 * and pwrite them at their offsets; holes are left by ftruncate. The file's fd
 * and metadata belong to a refcounted struct mat_file: the task that drops the
 * last reference applies owner, xattrs, mode (after chown, which clears suid;
 * after xattrs, which need write permission when not root) and mtime (atime =
 * mtime), then closes it. After cairn_pool_wait, directory
 * metadata is applied in reverse order (deepest first), so creating children
 * never changes a finished directory's mtime; "." is dest itself.
 *
 * Modes: plain (default) merges a diff onto a full tree: a whiteout deletes the
 * path, an opaque directory is emptied first. CAIRN_TREE_OVERLAY writes an
 * overlay upper: whiteouts are char 0/0 devices, opaque directories get
 * trusted.overlay.opaque=y, and no other trusted.overlay.* xattr from the
 * manifest is ever set (overlayfs would obey it: redirects, origins...).
 * Existing directories are kept (merged); their xattrs are made exactly the
 * manifest's.
 *
 * Not root: chown failing with EPERM (or EINVAL for an unmapped id) and xattrs
 * the caller may not set are warned about once and skipped.
 */
#include "cairn/tree.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/pool.h"
#include "tree_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define TASK_BYTES (8u * 1024u * 1024u)
#define PROGRESS_NS 100000000ull
#define OVL_OPAQUE "trusted.overlay.opaque"

struct mat;

struct mat_file {
    struct mat *mt;
    const struct cairn_entry *e; /* the manifest does not change during materialize */
    int fd;
    atomic_uint refs;
    atomic_bool failed;
};

struct mat_task {
    struct mat_file *f;
    uint32_t first, count;
    uint64_t offset;
};

struct mat_thread {
    struct cairn_codec *codec;
    uint8_t *buf;
};

struct mat {
    struct cairn_store *s;
    const struct cairn_domain *d;
    const struct cairn_tree_opts *opts;
    unsigned flags;
    int level;
    bool is_root;
    struct cairn_manifest m;
    int rootfd;
    struct cairn__dirchain chain, hlchain;
    bool chain_ok, hlchain_ok;
    struct cairn_pool *pool;
    atomic_bool warned_chown, warned_xattr, warned_ovl;
    struct cairn_tree_stats st;
    uint64_t t0, last_progress;
};

/* ---- helpers ---- */

static void warn_once(atomic_bool *flag, const char *fmt, ...) CAIRN_PRINTF(2, 3);
static void warn_once(atomic_bool *flag, const char *fmt, ...)
{
    if (atomic_exchange(flag, true))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cairn_warn("%s", msg);
}

static bool xattr_unsupported(int e)
{
    return e == ENOTSUP || e == EOPNOTSUPP || e == ENOSYS;
}

static int chown_failed(struct mat *mt, int err, const char *path)
{
    if ((err == EPERM && !mt->is_root) || err == EINVAL) {
        warn_once(&mt->warned_chown, "materialize: cannot set owners (%s on '%s'); entries keep the caller's owner",
                  strerror(err), path);
        return CAIRN_OK;
    }
    return cairn_err_set_errno(CAIRN_EIO, err, "materialize: setting the owner of '%s'", path);
}

static int xattr_failed(struct mat *mt, int err, const char *name, const char *path)
{
    if (xattr_unsupported(err) || ((err == EPERM || err == EACCES) && !mt->is_root)) {
        warn_once(&mt->warned_xattr, "materialize: cannot set xattr '%s' on '%s' (%s); skipping such xattrs", name,
                  path, strerror(err));
        return CAIRN_OK;
    }
    return cairn_err_set_errno(CAIRN_EIO, err, "materialize: setting xattr '%s' on '%s'", name, path);
}

static void mtime_ts(const struct cairn_entry *e, struct timespec ts[2])
{
    int64_t sec = e->mtime_ns / 1000000000, nsec = e->mtime_ns % 1000000000;
    if (nsec < 0) {
        nsec += 1000000000;
        sec--;
    }
    ts[0].tv_sec = (time_t)sec;
    ts[0].tv_nsec = (long)nsec;
    ts[1] = ts[0];
}

/*
 * In overlay mode the trusted.overlay.* namespace is overlayfs's own (opaque,
 * redirect, origin, metacopy...): only the opaque flag may put anything there.
 * Capture never records these xattrs in overlay mode, so a manifest that has
 * them is forged or came from a plain capture; they are skipped with a warning.
 */
static bool skip_xattr(struct mat *mt, const struct cairn_entry *e, const char *name)
{
    if (!(mt->flags & CAIRN_TREE_OVERLAY) || strncmp(name, "trusted.overlay.", 16) != 0)
        return false;
    warn_once(&mt->warned_ovl, "materialize: skipping xattr '%s' of '%s': overlay mode reserves trusted.overlay.*",
              name, e->path);
    return true;
}

static bool wants_opaque_xattr(const struct mat *mt, const struct cairn_entry *e)
{
    return (mt->flags & CAIRN_TREE_OVERLAY) && e->type == CAIRN_ET_DIR && (e->flags & CAIRN_EF_OPAQUE);
}

/* Directories merged into an existing dest: drop xattrs the manifest does not have (but security.*). */
static int remove_extra_xattrs(struct mat *mt, int fd, const struct cairn_entry *e)
{
    char stackbuf[4096];
    ssize_t n = flistxattr(fd, stackbuf, sizeof(stackbuf));
    if (n < 0 && errno == ERANGE)
        return CAIRN_OK; /* a directory with that many xattrs is left as is */
    if (n <= 0)
        return CAIRN_OK;
    for (size_t i = 0; i < (size_t)n;) {
        const char *name = stackbuf + i;
        i += strnlen(name, (size_t)n - i) + 1;
        /* security.* belongs to the host's LSM (e.g. selinux labels), not to the tree */
        bool keep = strncmp(name, "security.", 9) == 0 || (wants_opaque_xattr(mt, e) && strcmp(name, OVL_OPAQUE) == 0);
        for (uint32_t j = 0; !keep && j < e->n_xattrs; j++)
            keep = strcmp(e->xattrs[j].name, name) == 0;
        if (!keep && fremovexattr(fd, name) != 0 && errno != ENODATA)
            CAIRN_FORWARD_IF_ERROR(xattr_failed(mt, errno, name, e->path));
    }
    return CAIRN_OK;
}

/*
 * Owner, xattrs, mode, mtime of an entry we hold an fd on (file or directory).
 * Order: chown first (it clears suid/sgid and security.capability), xattrs
 * before the mode (a non-root caller needs write permission to set user.*
 * xattrs, which a final mode such as 0444 would take away), mtime last.
 */
static int apply_fd_meta(struct mat *mt, int fd, const struct cairn_entry *e)
{
    if (fchown(fd, e->uid, e->gid) != 0)
        CAIRN_FORWARD_IF_ERROR(chown_failed(mt, errno, e->path));
    if (e->type == CAIRN_ET_DIR)
        CAIRN_FORWARD_IF_ERROR(remove_extra_xattrs(mt, fd, e));
    for (uint32_t i = 0; i < e->n_xattrs; i++) {
        const struct cairn_xattr *x = &e->xattrs[i];
        if (skip_xattr(mt, e, x->name))
            continue;
        if (fsetxattr(fd, x->name, x->value, x->len, 0) != 0)
            CAIRN_FORWARD_IF_ERROR(xattr_failed(mt, errno, x->name, e->path));
    }
    if (wants_opaque_xattr(mt, e) && fsetxattr(fd, OVL_OPAQUE, "y", 1, 0) != 0)
        CAIRN_FORWARD_IF_ERROR(xattr_failed(mt, errno, OVL_OPAQUE, e->path));
    if (fchmod(fd, e->mode & 07777) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: setting the mode of '%s'", e->path);
    struct timespec ts[2];
    mtime_ts(e, ts);
    if (futimens(fd, ts) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: setting the mtime of '%s'", e->path);
    return CAIRN_OK;
}

/* The same for symlinks, devices, fifos and whiteouts: by name, never following it. */
static int apply_at_meta(struct mat *mt, int dirfd, const char *name, const struct cairn_entry *e)
{
    if (fchownat(dirfd, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) != 0)
        CAIRN_FORWARD_IF_ERROR(chown_failed(mt, errno, e->path));
    if (e->n_xattrs) {
        char ppath[320];
        if (cairn__proc_path(ppath, sizeof(ppath), dirfd, name) != 0)
            return cairn_err_set(CAIRN_EINTERNAL, "materialize: proc path of '%s'", e->path);
        for (uint32_t i = 0; i < e->n_xattrs; i++) {
            const struct cairn_xattr *x = &e->xattrs[i];
            if (skip_xattr(mt, e, x->name))
                continue;
            if (lsetxattr(ppath, x->name, x->value, x->len, 0) != 0)
                CAIRN_FORWARD_IF_ERROR(xattr_failed(mt, errno, x->name, e->path));
        }
    }
    if (e->type != CAIRN_ET_SYMLINK && fchmodat(dirfd, name, e->mode & 07777, AT_SYMLINK_NOFOLLOW) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: setting the mode of '%s'", e->path);
    struct timespec ts[2];
    mtime_ts(e, ts);
    if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: setting the mtime of '%s'", e->path);
    return CAIRN_OK;
}

/* ---- file data (workers) ---- */

static void *mat_thread_new(void *arg)
{
    struct mat *mt = arg;
    struct mat_thread *t = cairn_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->buf = cairn_malloc(CAIRN_CODEC_MAX_PLAIN);
    if (!t->buf || cairn_codec_new(&t->codec, mt->level) != CAIRN_OK) {
        cairn_free(t->buf);
        cairn_free(t);
        return NULL;
    }
    return t;
}

static void mat_thread_free(void *p)
{
    struct mat_thread *t = p;
    if (!t)
        return;
    cairn_codec_destroy(&t->codec);
    cairn_free(t->buf);
    cairn_free(t);
}

/* Drop n references; the last one applies the metadata (unless a task failed) and closes. */
static int file_release(struct mat_file *f, unsigned n)
{
    if (atomic_fetch_sub(&f->refs, n) != n)
        return CAIRN_OK;
    int rc = CAIRN_OK;
    bool failed = atomic_load(&f->failed);
    if (!failed)
        rc = apply_fd_meta(f->mt, f->fd, f->e);
    if (close(f->fd) != 0 && rc == CAIRN_OK && !failed)
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "materialize: closing '%s'", f->e->path);
    cairn_free(f);
    return rc;
}

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return EIO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int mat_task(void *thread_ctx, void *arg)
{
    struct mat_thread *t = thread_ctx;
    struct mat_task *task = arg;
    struct mat_file *f = task->f;
    struct mat *mt = f->mt;
    const struct cairn_entry *e = f->e;
    uint64_t off = task->offset;
    int rc = CAIRN_OK;
    for (uint32_t i = task->first; i < task->first + task->count; i++) {
        const struct cairn_piece *p = &e->pieces[i];
        if (p->hole) {
            off += p->len;
            continue;
        }
        size_t got = 0;
        rc = cairn_store_get_chunk(mt->s, t->codec, mt->d, p->id, t->buf, CAIRN_CODEC_MAX_PLAIN, &got);
        if (rc != CAIRN_OK) {
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
            cairn_err_set(rc, "materialize: file '%s': %s", e->path, msg);
            break;
        }
        if (got != p->len) {
            char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
            cairn_hex_encode(hex, p->id, CAIRN_CHUNK_ID_BYTES);
            rc = cairn_err_set(CAIRN_ECORRUPT, "materialize: file '%s': chunk %s has %zu bytes, the manifest says %u",
                               e->path, hex, got, p->len);
            break;
        }
        int err = pwrite_all(f->fd, t->buf, got, off);
        if (err) {
            rc = cairn_err_set_errno(cairn_err_from_errno(err) == CAIRN_ENOMEM ? CAIRN_ENOMEM : CAIRN_EIO, err,
                                     "materialize: writing '%s'", e->path);
            break;
        }
        off += got;
    }
    if (rc != CAIRN_OK)
        atomic_store(&f->failed, true);
    cairn_free(task);
    int rc2 = file_release(f, 1);
    return rc != CAIRN_OK ? rc : rc2;
}

static void mat_drop(void *arg)
{
    struct mat_task *task = arg;
    atomic_store(&task->f->failed, true);
    file_release(task->f, 1);
    cairn_free(task);
}

/* ---- entries (main thread) ---- */

static void progress(struct mat *mt, bool force)
{
    if (!mt->opts || !mt->opts->progress)
        return;
    uint64_t now = cairn_now_mono_ns();
    if (!force && now - mt->last_progress < PROGRESS_NS)
        return;
    mt->last_progress = now;
    struct cairn_tree_stats s = mt->st;
    s.elapsed_ns = now - mt->t0;
    mt->opts->progress(mt->opts->progress_arg, &s);
}

/* Make room for a new entry at dirfd/name: remove whatever is there (never following it). */
static int clear_name(const struct cairn_entry *e, int dirfd, const char *name)
{
    int r = cairn__remove_at(dirfd, name);
    if (r && r != ENOENT)
        return cairn_err_set_errno(CAIRN_EIO, r, "materialize: removing the existing '%s'", e->path);
    return CAIRN_OK;
}

static int chain_failed(const struct cairn_entry *e, const char *what, int err)
{
    if (err == ELOOP || err == ENOTDIR)
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '%s': %spath goes through a symlink or non-directory",
                             e->path, what);
    if (err == ENOENT)
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '%s': %sparent directory is missing", e->path, what);
    if (err == ENAMETOOLONG)
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '%s': %sbad path component", e->path, what);
    return cairn_err_set_errno(CAIRN_EIO, err, "materialize: opening the directories of '%s'", e->path);
}

static int make_dir(struct mat *mt, int pfd, const char *name, const struct cairn_entry *e)
{
    if (mkdirat(pfd, name, 0700) == 0)
        return CAIRN_OK;
    if (errno != EEXIST)
        return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: creating directory '%s'", e->path);
    struct stat st;
    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: stat of '%s'", e->path);
    if (!S_ISDIR(st.st_mode)) {
        CAIRN_FORWARD_IF_ERROR(clear_name(e, pfd, name));
        if (mkdirat(pfd, name, 0700) != 0)
            return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: creating directory '%s'", e->path);
        return CAIRN_OK;
    }
    if (!(mt->flags & CAIRN_TREE_OVERLAY) && (e->flags & CAIRN_EF_OPAQUE)) {
        int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: opening '%s'", e->path);
        int r = cairn__dir_empty(fd);
        close(fd);
        if (r)
            return cairn_err_set_errno(CAIRN_EIO, r, "materialize: emptying opaque directory '%s'", e->path);
    }
    return CAIRN_OK;
}

static int make_file(struct mat *mt, int pfd, const char *name, const struct cairn_entry *e)
{
    int rc = CAIRN_OK;
    struct mat_file *f = NULL;
    unsigned ntasks = 0, k = 0;
    int fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        CAIRN_FORWARD_IF_ERROR(clear_name(e, pfd, name));
        fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    }
    if (fd < 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: creating '%s'", e->path);
    if (e->size > 0 && ftruncate(fd, (off_t)e->size) != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "materialize: sizing '%s' to %llu bytes", e->path,
                                 (unsigned long long)e->size);
        goto out;
    }
    /* tasks of about TASK_BYTES of data each */
    uint64_t acc = 0;
    bool open_task = false;
    for (uint32_t i = 0; i < e->n_pieces; i++) {
        if (e->pieces[i].hole)
            continue;
        if (!open_task) {
            ntasks++;
            open_task = true;
            acc = 0;
        }
        acc += e->pieces[i].len;
        mt->st.chunks++;
        mt->st.bytes += e->pieces[i].len;
        if (acc >= TASK_BYTES)
            open_task = false;
    }
    if (ntasks == 0) { /* empty or only holes: finish it here */
        rc = apply_fd_meta(mt, fd, e);
        goto out;
    }
    f = cairn_calloc(1, sizeof(*f));
    if (!f) {
        rc = cairn_err_set(CAIRN_ENOMEM, "materialize: out of memory for '%s'", e->path);
        goto out;
    }
    f->mt = mt;
    f->e = e;
    f->fd = fd;
    fd = -1; /* owned by f: closed by whoever drops its last reference */
    atomic_init(&f->refs, ntasks);
    atomic_init(&f->failed, false);

    uint32_t i = 0;
    uint64_t off = 0;
    for (; k < ntasks; k++) {
        struct mat_task *t = cairn_malloc(sizeof(*t));
        if (!t) {
            rc = cairn_err_set(CAIRN_ENOMEM, "materialize: out of memory for '%s'", e->path);
            goto out;
        }
        /* leading holes belong to this task; it ends after TASK_BYTES of data, the last one at the end */
        t->f = f;
        t->first = i;
        t->offset = off;
        acc = 0;
        while (i < e->n_pieces && (acc < TASK_BYTES || k == ntasks - 1)) {
            if (!e->pieces[i].hole)
                acc += e->pieces[i].len;
            off += e->pieces[i].len;
            i++;
        }
        t->count = i - t->first;
        rc = cairn_pool_submit(mt->pool, mat_task, mat_drop, t);
        if (rc != CAIRN_OK) {
            cairn_free(t); /* a refused task stays ours */
            goto out;
        }
    }
out:
    if (f && k < ntasks) {
        /* the tasks never submitted will not release their references */
        atomic_store(&f->failed, true);
        file_release(f, ntasks - k);
    }
    if (fd >= 0 && close(fd) != 0 && rc == CAIRN_OK)
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "materialize: closing '%s'", e->path);
    return rc;
}

static int make_hardlink(struct mat *mt, size_t idx, int pfd, const char *name)
{
    const struct cairn_entry *e = &mt->m.entries[idx];
    /* the decoder checked this already; materialize does not rely on it */
    size_t lo = 0, hi = idx;
    bool ok = false;
    while (lo < hi && e->target) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cairn_path_cmp(mt->m.entries[mid].path, e->target);
        if (c == 0) {
            ok = mt->m.entries[mid].type == CAIRN_ET_FILE;
            break;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!ok)
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '%s': hardlink target is not an earlier file entry",
                             e->path);
    const char *t = e->target, *slash = strrchr(t, '/');
    size_t plen = slash ? (size_t)(slash - t) : 0;
    const char *tname = slash ? slash + 1 : t;
    int err = cairn__dirchain_goto(&mt->hlchain, t, plen);
    if (err)
        return chain_failed(e, "hardlink target ", err);
    int tfd = cairn__dirchain_fd(&mt->hlchain);
    int r = linkat(tfd, tname, pfd, name, 0);
    if (r != 0 && errno == EEXIST) {
        CAIRN_FORWARD_IF_ERROR(clear_name(e, pfd, name));
        r = linkat(tfd, tname, pfd, name, 0);
    }
    if (r == 0)
        return CAIRN_OK;
    if (errno == ENOENT)
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '%s': hardlink target '%s' does not exist", e->path, t);
    return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: linking '%s' to '%s'", e->path, t);
}

static int make_node(struct mat *mt, int pfd, const char *name, const struct cairn_entry *e)
{
    mode_t type;
    dev_t rdev = 0;
    switch (e->type) {
    case CAIRN_ET_CHR: type = S_IFCHR; rdev = (dev_t)e->rdev; break;
    case CAIRN_ET_BLK: type = S_IFBLK; rdev = (dev_t)e->rdev; break;
    case CAIRN_ET_FIFO: type = S_IFIFO; break;
    default: type = S_IFCHR; rdev = makedev(0, 0); break; /* overlay whiteout */
    }
    int r = mknodat(pfd, name, type | 0600, rdev);
    if (r != 0 && errno == EEXIST) {
        CAIRN_FORWARD_IF_ERROR(clear_name(e, pfd, name));
        r = mknodat(pfd, name, type | 0600, rdev);
    }
    if (r != 0)
        return cairn_err_set_errno(errno == EPERM ? CAIRN_EPERM : CAIRN_EIO, errno,
                                   "materialize: creating the %s '%s'",
                                   e->type == CAIRN_ET_FIFO ? "fifo" : "device node", e->path);
    return apply_at_meta(mt, pfd, name, e);
}

static int make_symlink(struct mat *mt, int pfd, const char *name, const struct cairn_entry *e)
{
    if (!e->target || !e->target[0])
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '%s': symlink without a target", e->path);
    int r = symlinkat(e->target, pfd, name);
    if (r != 0 && errno == EEXIST) {
        CAIRN_FORWARD_IF_ERROR(clear_name(e, pfd, name));
        r = symlinkat(e->target, pfd, name);
    }
    if (r != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "materialize: creating symlink '%s'", e->path);
    return apply_at_meta(mt, pfd, name, e);
}

static int make_entry(struct mat *mt, size_t idx)
{
    const struct cairn_entry *e = &mt->m.entries[idx];
    const char *path = e->path;
    if (path[0] == '.' && path[1] == '\0') {
        if (e->type != CAIRN_ET_DIR)
            return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '.': the root is not a directory");
        if (!(mt->flags & CAIRN_TREE_OVERLAY) && (e->flags & CAIRN_EF_OPAQUE)) {
            int r = cairn__dir_empty(mt->rootfd);
            if (r)
                return cairn_err_set_errno(CAIRN_EIO, r, "materialize: emptying the opaque root");
        }
        mt->st.dirs++;
        return CAIRN_OK;
    }
    const char *slash = strrchr(path, '/');
    size_t plen = slash ? (size_t)(slash - path) : 0;
    const char *name = slash ? slash + 1 : path;
    if (!name[0] || (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]))) || strlen(name) > CAIRN_NAME_MAX)
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '%s': invalid name", path);
    bool plain = !(mt->flags & CAIRN_TREE_OVERLAY);
    int err = cairn__dirchain_goto(&mt->chain, path, plen);
    if (err == ENOENT && plain && e->type == CAIRN_ET_WHITEOUT)
        return CAIRN_OK; /* nothing there to delete */
    if (err)
        return chain_failed(e, "", err);
    int pfd = cairn__dirchain_fd(&mt->chain);
    switch (e->type) {
    case CAIRN_ET_DIR:
        mt->st.dirs++;
        return make_dir(mt, pfd, name, e);
    case CAIRN_ET_FILE:
        mt->st.files++;
        return make_file(mt, pfd, name, e);
    case CAIRN_ET_SYMLINK:
        mt->st.symlinks++;
        return make_symlink(mt, pfd, name, e);
    case CAIRN_ET_HARDLINK:
        mt->st.hardlinks++;
        return make_hardlink(mt, idx, pfd, name);
    case CAIRN_ET_CHR:
    case CAIRN_ET_BLK:
    case CAIRN_ET_FIFO:
        mt->st.specials++;
        return make_node(mt, pfd, name, e);
    case CAIRN_ET_WHITEOUT:
        mt->st.whiteouts++;
        if (plain)
            return clear_name(e, pfd, name);
        return make_node(mt, pfd, name, e);
    default:
        return cairn_err_set(CAIRN_ECORRUPT, "manifest entry '%s': unknown type %u", path, e->type);
    }
}

static int finish_dirs(struct mat *mt)
{
    for (size_t i = mt->m.n; i-- > 0;) {
        const struct cairn_entry *e = &mt->m.entries[i];
        if (e->type != CAIRN_ET_DIR)
            continue;
        int fd = mt->rootfd;
        if (!(e->path[0] == '.' && e->path[1] == '\0')) {
            int err = cairn__dirchain_goto(&mt->chain, e->path, strlen(e->path));
            if (err)
                return chain_failed(e, "", err);
            fd = cairn__dirchain_fd(&mt->chain);
        }
        CAIRN_FORWARD_IF_ERROR(apply_fd_meta(mt, fd, e));
        progress(mt, false);
    }
    return CAIRN_OK;
}

static int mkdir_p(const char *dest)
{
    char *p = cairn_strdup(dest);
    if (!p)
        return cairn_err_set(CAIRN_ENOMEM, "materialize: out of memory");
    int rc = CAIRN_OK;
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            rc = cairn_err_set_errno(cairn_err_from_errno(errno) == CAIRN_EPERM ? CAIRN_EPERM : CAIRN_EIO, errno,
                                     "materialize: creating '%s'", p);
            break;
        }
        p[i] = c;
    }
    cairn_free(p);
    return rc;
}

int cairn_tree_materialize(struct cairn_store *s, const struct cairn_domain *d,
                           const struct cairn_tree_ref *ref, const char *dest,
                           const struct cairn_tree_opts *opts, struct cairn_tree_stats *st)
{
    int rc;
    struct mat mt;
    struct cairn_codec *codec = NULL;
    memset(&mt, 0, sizeof(mt));
    mt.rootfd = -1;
    mt.s = s;
    mt.d = d;
    mt.opts = opts;
    mt.flags = opts ? opts->flags : 0;
    mt.level = opts && opts->level ? opts->level : CAIRN_CODEC_DEFAULT_LEVEL;
    mt.is_root = geteuid() == 0;
    atomic_init(&mt.warned_chown, false);
    atomic_init(&mt.warned_xattr, false);
    atomic_init(&mt.warned_ovl, false);
    mt.t0 = mt.last_progress = cairn_now_mono_ns();
    cairn_manifest_init(&mt.m);
    unsigned threads = opts && opts->threads ? opts->threads : cairn_cpu_count();

    rc = cairn_codec_new(&codec, mt.level);
    if (rc != CAIRN_OK)
        goto out;
    rc = cairn_manifest_load(s, codec, d, ref, &mt.m);
    if (rc != CAIRN_OK)
        goto out;
    rc = mkdir_p(dest);
    if (rc != CAIRN_OK)
        goto out;
    mt.rootfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mt.rootfd < 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "materialize: opening the destination '%s'", dest);
        goto out;
    }
    int err = cairn__dirchain_init(&mt.chain, mt.rootfd, false);
    if (!err) {
        mt.chain_ok = true;
        err = cairn__dirchain_init(&mt.hlchain, mt.rootfd, false);
        mt.hlchain_ok = err == 0;
    }
    if (err) {
        rc = cairn_err_set_errno(CAIRN_EIO, err, "materialize: opening the destination '%s'", dest);
        goto out;
    }
    rc = cairn_pool_new(&mt.pool, threads, 4 * (size_t)threads, mat_thread_new, mat_thread_free, &mt);
    if (rc != CAIRN_OK)
        goto out;

    mt.st.entries = mt.m.n;
    for (size_t i = 0; i < mt.m.n; i++) {
        rc = make_entry(&mt, i);
        if (rc != CAIRN_OK)
            goto out;
        progress(&mt, false);
    }
    rc = cairn_pool_wait(mt.pool);
    if (rc != CAIRN_OK)
        goto out;
    rc = finish_dirs(&mt);
    if (rc != CAIRN_OK)
        goto out;
    mt.st.elapsed_ns = cairn_now_mono_ns() - mt.t0;
    progress(&mt, true);
    if (st)
        *st = mt.st;
out:
    if (mt.pool) {
        /* every task must be done before the manifest goes away; keep the first error's message */
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        cairn_pool_wait(mt.pool);
        if (rc != CAIRN_OK)
            cairn_err_set(rc, "%s", msg);
        cairn_pool_destroy(&mt.pool);
    }
    if (mt.hlchain_ok)
        cairn__dirchain_release(&mt.hlchain);
    if (mt.chain_ok)
        cairn__dirchain_release(&mt.chain);
    if (mt.rootfd >= 0)
        close(mt.rootfd);
    cairn_manifest_release(&mt.m);
    cairn_codec_destroy(&codec);
    return rc;
}
