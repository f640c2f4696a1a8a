/*
 * sandbox_mount.c: overlay mounts and mounts into running sandboxes (notes §4, §5; DESIGN §6).
 *
 * The rootfs (merged) is made shared before runsc starts, so a mount made later below merged on the host
 * propagates into the gofer's mount namespace, and with --file-access=shared the sandbox sees it at once.
 *
 * merged is the sandbox's own filesystem: the sandbox can put symlinks anywhere in it. A mount point path
 * given by the user is therefore never resolved by the host's path walk: each prefix is opened with
 * openat2(merged, prefix, RESOLVE_IN_ROOT), which resolves symlinks as the sandbox sees them but can never
 * leave merged, missing directories are made with mkdirat in the directory just resolved, and the mount
 * is made on /proc/self/fd/<fd> of the resolved directory. Unmounting goes by the mount id recorded at
 * mount time (statx STATX_MNT_ID): its mountinfo path is opened with RESOLVE_NO_SYMLINKS and detached through
 * the fd, so a rename or symlink swap inside the sandbox cannot make us unmount anything else.
 *
 * Bind mounts are made with open_tree(OPEN_TREE_CLONE) + mount_setattr + move_mount onto the resolved fd.
 *
 * Unmounts are lazy (MNT_DETACH): the gofer holds fds on the mount, so a plain umount is EBUSY (notes §5).
 * Overlay options pin redirect_dir/metacopy/index off so that an upper dir is always a self-contained diff
 * (full copy-ups, whiteouts, opaque dirs) whatever the kernel's defaults.
 */
#include "sandbox_int.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int sys_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
    struct open_how how = {.flags = flags, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

static int fd_mnt_id(int fd, int *id)
{
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) != 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "statx of a mount point");
    if (!(stx.stx_mask & STATX_MNT_ID))
        return cairn_err_set(CAIRN_EUNSUPPORTED, "the kernel does not report mount ids (statx STATX_MNT_ID)");
    *id = (int)stx.stx_mnt_id;
    return CAIRN_OK;
}

int sbx_check_host_path(const char *what, const char *p)
{
    if (!p || p[0] != '/')
        return cairn_err_set(CAIRN_EINVAL, "%s '%s' is not an absolute host path", what, p ? p : "(null)");
    if (strpbrk(p, ":,\\\n"))
        return cairn_err_set(CAIRN_EINVAL, "%s '%s' contains ':', ',', '\\' or a newline (overlay options)", what, p);
    if (strlen(p) >= 1024)
        return cairn_err_set(CAIRN_EINVAL, "%s is longer than 1023 bytes", what);
    return CAIRN_OK;
}

/* "/a//b/" -> "/a/b"; refuses "/", ".", "..", newlines and the sentry's own /proc /dev /sys. */
static int norm_path(const char *in, char **out)
{
    *out = NULL;
    if (!in || in[0] != '/')
        return cairn_err_set(CAIRN_EINVAL, "mount path '%s' is not absolute", in ? in : "(null)");
    size_t n = strlen(in);
    if (n >= 1024 || strchr(in, '\n'))
        return cairn_err_set(CAIRN_EINVAL, "mount path is too long or has a newline");
    char *o = cairn_malloc(n + 1);
    if (!o)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    size_t j = 0;
    const char *p = in;
    bool first = true;
    while (*p) {
        while (*p == '/')
            p++;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t len = (size_t)(p - s);
        if (!len)
            continue;
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) {
            cairn_free(o);
            return cairn_err_set(CAIRN_EINVAL, "mount path '%s' has a '.' or '..' part", in);
        }
        if (first && ((len == 4 && !memcmp(s, "proc", 4)) || (len == 3 && !memcmp(s, "dev", 3)) ||
                      (len == 3 && !memcmp(s, "sys", 3)))) {
            cairn_free(o);
            return cairn_err_set(CAIRN_EINVAL, "mount path '%s' is under /proc, /dev or /sys", in);
        }
        first = false;
        o[j++] = '/';
        memcpy(o + j, s, len);
        j += len;
    }
    o[j] = '\0';
    if (!j) {
        cairn_free(o);
        return cairn_err_set(CAIRN_EINVAL, "cannot mount over the sandbox root '/'");
    }
    *out = o;
    return CAIRN_OK;
}

int sbx_check_mount_spec(const struct cairn_mount_spec *m)
{
    char *p = NULL;
    CAIRN_FORWARD_IF_ERROR(norm_path(m->path, &p));
    cairn_free(p);
    if (m->kind == CAIRN_MOUNT_BIND) {
        if (!m->source || m->source[0] != '/' || strchr(m->source, '\n'))
            return cairn_err_set(CAIRN_EINVAL, "bind source '%s' is not an absolute host path",
                                 m->source ? m->source : "(null)");
        return CAIRN_OK;
    }
    if (m->kind != CAIRN_MOUNT_OVERLAY)
        return cairn_err_set(CAIRN_EINVAL, "unknown mount kind %d", (int)m->kind);
    for (size_t i = 0; i < m->n_lowers; i++)
        CAIRN_FORWARD_IF_ERROR(sbx_check_host_path("overlay lower", m->lowers[i]));
    return CAIRN_OK;
}

int sbx_overlay_mount(const char *const *lowers, size_t n, const char *upper, const char *work, const char *target)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 4095); /* mount(2) data is one page */
    int rc = cairn_buf_append(&b, "lowerdir=", 9);
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
        if (i)
            rc = cairn_buf_append_byte(&b, ':');
        if (rc == CAIRN_OK)
            rc = cairn_buf_append(&b, lowers[i], strlen(lowers[i]));
    }
    const char *parts[] = {",upperdir=", upper, ",workdir=", work, ",redirect_dir=off,index=off,metacopy=off"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(parts) && rc == CAIRN_OK; i++)
        rc = cairn_buf_append(&b, parts[i], strlen(parts[i]));
    if (rc == CAIRN_OK)
        rc = cairn_buf_append_byte(&b, '\0');
    if (rc == CAIRN_ETOOBIG)
        rc = cairn_err_set(CAIRN_ETOOBIG, "overlay options for %zu layers exceed one page", n);
    if (rc == CAIRN_OK && mount("overlay", target, "overlay", 0, b.data) != 0)
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "mount overlay (%zu layers, upper '%s')", n, upper);
    cairn_buf_release(&b);
    return rc;
}

/* Open (O_PATH) the directory at rel below root, resolving as the sandbox would; create=make missing dirs. */
static int open_in_root(const char *root, const char *path, bool create, int *out)
{
    *out = -1;
    int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (rootfd < 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "open rootfs '%s'", root);
    int cur = -1, rc = CAIRN_OK;
    size_t n = strlen(path);
    char *prefix = cairn_malloc(n + 1);
    if (!prefix) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
    if (cur < 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "dup");
        goto out;
    }
    size_t i = 0;
    while (i < n) {
        while (i < n && path[i] == '/')
            i++;
        size_t s = i;
        while (i < n && path[i] != '/')
            i++;
        if (i == s)
            break;
        memcpy(prefix, path + 1, i - 1);
        prefix[i - 1] = '\0';
        const uint64_t res = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        int fd = sys_openat2(rootfd, prefix, O_PATH | O_DIRECTORY | O_CLOEXEC, res);
        if (fd < 0 && errno == ENOENT && create) {
            char comp[256];
            if (i - s >= sizeof(comp)) {
                rc = cairn_err_set(CAIRN_EINVAL, "mount path part of '%s' is too long", path);
                goto out;
            }
            memcpy(comp, path + s, i - s);
            comp[i - s] = '\0';
            if (mkdirat(cur, comp, 0755) != 0 && errno != EEXIST) {
                rc = cairn_err_set_errno(CAIRN_EIO, errno, "make mount point dir '/%s' in the sandbox", prefix);
                goto out;
            }
            fd = sys_openat2(rootfd, prefix, O_PATH | O_DIRECTORY | O_CLOEXEC, res);
        }
        if (fd < 0) {
            rc = cairn_err_set_errno(errno == ENOENT ? CAIRN_ENOTFOUND : errno == ENOTDIR ? CAIRN_EINVAL : CAIRN_EIO,
                                     errno, "resolve '/%s' in the sandbox", prefix);
            goto out;
        }
        close(cur);
        cur = fd;
    }
    *out = cur;
    cur = -1;
out:
    if (cur >= 0)
        close(cur);
    close(rootfd);
    cairn_free(prefix);
    return rc;
}

/* Detach the mount with this id if it is still mounted below `under`. CAIRN_OK when it is gone. */
static int detach_mount_id(int mnt_id, const char *under)
{
    struct sbx_mi *mi = NULL;
    size_t n = 0;
    CAIRN_FORWARD_IF_ERROR(sbx_mountinfo_read(&mi, &n));
    int rc = CAIRN_OK;
    for (size_t i = 0; i < n; i++) {
        if (mi[i].id != mnt_id)
            continue;
        if (!sbx_path_under(mi[i].point, under) || !strcmp(mi[i].point, under)) {
            rc = cairn_err_set(CAIRN_EINVAL, "mount %d at '%s' is not below '%s'", mnt_id, mi[i].point, under);
            break;
        }
        int fd = sys_openat2(AT_FDCWD, mi[i].point, O_PATH | O_CLOEXEC | O_NOFOLLOW, RESOLVE_NO_SYMLINKS);
        if (fd < 0) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "open mount point '%s'", mi[i].point);
            break;
        }
        int got = -1;
        rc = fd_mnt_id(fd, &got);
        if (rc == CAIRN_OK && got != mnt_id)
            rc = cairn_err_set(CAIRN_EIO, "mount point '%s' is mount %d, expected %d", mi[i].point, got, mnt_id);
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if (rc == CAIRN_OK && umount2(proc, MNT_DETACH) != 0)
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "umount -l '%s'", mi[i].point);
        close(fd);
        break;
    }
    sbx_mountinfo_free(&mi, n);
    return rc;
}

static int cmp_len_desc(const void *a, const void *b)
{
    size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

int sbx_umount_tree(const char *dir)
{
    int rc = CAIRN_OK;
    for (int round = 0; round < 16; round++) {
        struct sbx_mi *mi = NULL;
        size_t n = 0;
        CAIRN_FORWARD_IF_ERROR(sbx_mountinfo_read(&mi, &n));
        char **pts = cairn_calloc(n ? n : 1, sizeof(char *));
        if (!pts) {
            sbx_mountinfo_free(&mi, n);
            return cairn_err_set(CAIRN_ENOMEM, "out of memory");
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (sbx_path_under(mi[i].point, dir))
                pts[k++] = mi[i].point;
        if (!k) {
            cairn_free(pts);
            sbx_mountinfo_free(&mi, n);
            return CAIRN_OK;
        }
        qsort(pts, k, sizeof(char *), cmp_len_desc);
        rc = CAIRN_OK;
        for (size_t i = 0; i < k; i++) {
            int fd = sys_openat2(AT_FDCWD, pts[i], O_PATH | O_CLOEXEC | O_NOFOLLOW, RESOLVE_NO_SYMLINKS);
            int r;
            if (fd >= 0) {
                char proc[64];
                snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
                r = umount2(proc, MNT_DETACH);
                close(fd);
            } else {
                r = umount2(pts[i], MNT_DETACH | UMOUNT_NOFOLLOW);
            }
            if (r != 0 && errno != EINVAL && errno != ENOENT)
                rc = cairn_err_set_errno(CAIRN_EIO, errno, "umount -l '%s'", pts[i]);
        }
        cairn_free(pts);
        sbx_mountinfo_free(&mi, n);
    }
    return rc != CAIRN_OK ? rc : cairn_err_set(CAIRN_EIO, "mounts below '%s' keep coming back", dir);
}

int sbx_mounts_save(struct cairn_sandbox *sb)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 1 << 20);
    int rc = CAIRN_OK;
    pthread_mutex_lock(&sb->mu);
    for (size_t i = 0; i < sb->n_mounts && rc == CAIRN_OK; i++) {
        char head[64];
        int hn = snprintf(head, sizeof(head), "%u %d %d ", sb->mounts[i].idx, sb->mounts[i].mnt_id,
                          (int)sb->mounts[i].kind);
        rc = cairn_buf_append(&b, head, (size_t)hn);
        if (rc == CAIRN_OK)
            rc = cairn_buf_append(&b, sb->mounts[i].path, strlen(sb->mounts[i].path));
        if (rc == CAIRN_OK)
            rc = cairn_buf_append_byte(&b, '\n');
    }
    pthread_mutex_unlock(&sb->mu);
    if (rc == CAIRN_OK)
        rc = cairn_file_replace_atomic(sb->mounts_path, b.data ? (const void *)b.data : "", b.len, 0600);
    if (rc != CAIRN_OK)
        rc = cairn_err_set(rc, "sandbox %s: save mount records: %s", sb->id, cairn_err_msg());
    cairn_buf_release(&b);
    return rc;
}

static int add_record(struct cairn_sandbox *sb, const char *path, int mnt_id, unsigned idx, enum cairn_mount_kind k)
{
    char *p = cairn_strdup(path);
    if (!p)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    pthread_mutex_lock(&sb->mu);
    int rc = cairn_array_grow((void **)&sb->mounts, &sb->cap_mounts, sb->n_mounts + 1, sizeof(*sb->mounts));
    if (rc == CAIRN_OK)
        sb->mounts[sb->n_mounts++] = (struct sbx_mount){.path = p, .mnt_id = mnt_id, .idx = idx, .kind = k};
    if (idx > sb->mount_seq)
        sb->mount_seq = idx;
    pthread_mutex_unlock(&sb->mu);
    if (rc != CAIRN_OK) {
        cairn_free(p);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    }
    return CAIRN_OK;
}

/* Drop the records whose mount is no longer below merged. */
static int prune_records(struct cairn_sandbox *sb)
{
    struct sbx_mi *mi = NULL;
    size_t n = 0;
    CAIRN_FORWARD_IF_ERROR(sbx_mountinfo_read(&mi, &n));
    pthread_mutex_lock(&sb->mu);
    size_t j = 0;
    for (size_t i = 0; i < sb->n_mounts; i++) {
        bool live = false;
        for (size_t k = 0; k < n && !live; k++)
            live = mi[k].id == sb->mounts[i].mnt_id && sbx_path_under(mi[k].point, sb->merged) &&
                   strcmp(mi[k].point, sb->merged) != 0;
        if (live)
            sb->mounts[j++] = sb->mounts[i];
        else
            cairn_free(sb->mounts[i].path);
    }
    sb->n_mounts = j;
    pthread_mutex_unlock(&sb->mu);
    sbx_mountinfo_free(&mi, n);
    return CAIRN_OK;
}

int sbx_mounts_load(struct cairn_sandbox *sb)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = cairn_file_read_all(sb->mounts_path, 1 << 20, &data, &len);
    if (rc == CAIRN_ENOTFOUND) {
        cairn_err_clear();
        return CAIRN_OK;
    }
    if (rc != CAIRN_OK)
        return rc;
    size_t i = 0;
    while (i < len && rc == CAIRN_OK) {
        size_t e = i;
        while (e < len && data[e] != '\n')
            e++;
        char line[1200];
        size_t ll = CAIRN_MIN(e - i, sizeof(line) - 1);
        memcpy(line, data + i, ll);
        line[ll] = '\0';
        i = e + 1;
        unsigned idx;
        int id, kind, off = 0;
        if (sscanf(line, "%u %d %d %n", &idx, &id, &kind, &off) == 3 && off > 0 && line[off] == '/' &&
            (kind == CAIRN_MOUNT_BIND || kind == CAIRN_MOUNT_OVERLAY))
            rc = add_record(sb, line + off, id, idx, (enum cairn_mount_kind)kind);
    }
    cairn_free(data);
    if (rc == CAIRN_OK)
        rc = prune_records(sb);
    return rc;
}

static bool state_allows_mount(enum cairn_sandbox_state st)
{
    return st == CAIRN_SANDBOX_STARTING || st == CAIRN_SANDBOX_RUNNING || st == CAIRN_SANDBOX_PAUSED;
}

int sbx_mount_into_locked(struct cairn_sandbox *sb, const struct cairn_mount_spec *m)
{
    char *path = NULL, *mdir = NULL, *upper = NULL, *work = NULL, *empty = NULL;
    int fd = -1, nfd = -1;
    bool mounted = false;
    int rc = sbx_check_mount_spec(m);
    if (rc == CAIRN_OK)
        rc = norm_path(m->path, &path);
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "sandbox %s: mount: %s", sb->id, cairn_err_msg());
    pthread_mutex_lock(&sb->mu);
    unsigned idx = 0;
    if (!state_allows_mount(sb->state)) {
        rc = cairn_err_set(CAIRN_EUNAVAILABLE, "sandbox %s is %s: cannot mount '%s'", sb->id,
                           cairn_sandbox_state_name(sb->state), path);
    } else {
        for (size_t i = 0; i < sb->n_mounts; i++)
            if (!strcmp(sb->mounts[i].path, path))
                rc = cairn_err_set(CAIRN_EEXIST, "sandbox %s: '%s' is already a mount", sb->id, path);
        idx = ++sb->mount_seq;
    }
    pthread_mutex_unlock(&sb->mu);
    if (rc != CAIRN_OK)
        goto out;

    if (m->kind == CAIRN_MOUNT_OVERLAY) {
        char *mroot = sbx_fmt("%s/m", sb->dir);
        mdir = sbx_fmt("%s/m/%u", sb->dir, idx);
        upper = sbx_fmt("%s/m/%u/upper", sb->dir, idx);
        work = sbx_fmt("%s/m/%u/work", sb->dir, idx);
        empty = sbx_fmt("%s/m/%u/lower-empty", sb->dir, idx);
        if (!mroot || !mdir || !upper || !work || !empty) {
            cairn_free(mroot);
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
            goto out;
        }
        if ((mkdir(mroot, 0711) != 0 && errno != EEXIST) || mkdir(mdir, 0711) != 0 || mkdir(upper, 0755) != 0 ||
            mkdir(work, 0700) != 0 || (m->n_lowers == 0 && mkdir(empty, 0755) != 0)) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "sandbox %s: make dirs of mount %u under '%s'", sb->id, idx,
                                     mroot);
            cairn_free(mroot);
            goto out;
        }
        cairn_free(mroot);
    }
    rc = open_in_root(sb->merged, path, true, &fd);
    if (rc != CAIRN_OK) {
        rc = cairn_err_set(rc, "sandbox %s: mount point '%s': %s", sb->id, path, cairn_err_msg());
        goto out;
    }
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    if (m->kind == CAIRN_MOUNT_BIND) {
        /* a detached clone gets its flags before it is attached: flags changed later (remount ro) do
           not propagate to the gofer's slave copy, so a read-only bind must be born read-only */
        int tfd = open_tree(AT_FDCWD, m->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tfd < 0) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "sandbox %s: bind source '%s'", sb->id, m->source);
            goto out;
        }
        struct mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                              (m->readonly ? MOUNT_ATTR_RDONLY : 0)};
        if (mount_setattr(tfd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) != 0 ||
            move_mount(tfd, "", fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "sandbox %s: bind '%s' at '%s'", sb->id, m->source, path);
            close(tfd);
            goto out;
        }
        close(tfd);
    } else {
        const char *const one[] = {empty};
        rc = m->n_lowers ? sbx_overlay_mount(m->lowers, m->n_lowers, upper, work, proc)
                         : sbx_overlay_mount(one, 1, upper, work, proc);
        if (rc != CAIRN_OK) {
            rc = cairn_err_set(rc, "sandbox %s: mount at '%s': %s", sb->id, path, cairn_err_msg());
            goto out;
        }
    }
    mounted = true;
    rc = open_in_root(sb->merged, path, false, &nfd);
    int below = -1, id = -1;
    if (rc == CAIRN_OK)
        rc = fd_mnt_id(fd, &below);
    if (rc == CAIRN_OK)
        rc = fd_mnt_id(nfd, &id);
    if (rc == CAIRN_OK && id == below)
        rc = cairn_err_set(CAIRN_EIO, "the new mount is not visible at '%s'", path);
    if (rc == CAIRN_OK)
        rc = add_record(sb, path, id, idx, m->kind);
    if (rc != CAIRN_OK) {
        rc = cairn_err_set(rc, "sandbox %s: mount at '%s': %s", sb->id, path, cairn_err_msg());
        goto out;
    }
    mounted = false; /* recorded: from now on it is unmount's */
    rc = sbx_mounts_save(sb);
out:
    if (mounted && nfd >= 0) {
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", nfd);
        umount2(proc, MNT_DETACH);
    }
    if (fd >= 0)
        close(fd);
    if (nfd >= 0)
        close(nfd);
    if (rc != CAIRN_OK && mdir && !mounted) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
        sbx_rmrf(mdir);
        cairn_err_set(rc, "%s", msg);
    }
    cairn_free(path);
    cairn_free(mdir);
    cairn_free(upper);
    cairn_free(work);
    cairn_free(empty);
    return rc;
}

int cairn_sandbox_mount_into(struct cairn_sandbox *sb, const struct cairn_mount_spec *m)
{
    pthread_mutex_lock(&sb->op_mu);
    int rc = sbx_mount_into_locked(sb, m);
    pthread_mutex_unlock(&sb->op_mu);
    if (rc == CAIRN_OK)
        cairn_debug("sandbox %s: mounted '%s'", sb->id, m->path);
    return rc;
}

int cairn_sandbox_unmount(struct cairn_sandbox *sb, const char *path_in)
{
    char *path = NULL;
    int rc = norm_path(path_in, &path);
    if (rc != CAIRN_OK)
        return cairn_err_set(rc, "sandbox %s: unmount: %s", sb->id, cairn_err_msg());
    pthread_mutex_lock(&sb->op_mu);
    int mnt_id = -1;
    pthread_mutex_lock(&sb->mu);
    for (size_t i = sb->n_mounts; i-- > 0;)
        if (!strcmp(sb->mounts[i].path, path)) {
            mnt_id = sb->mounts[i].mnt_id;
            break;
        }
    pthread_mutex_unlock(&sb->mu);
    if (mnt_id < 0)
        rc = cairn_err_set(CAIRN_ENOTFOUND, "sandbox %s: no mount at '%s'", sb->id, path);
    if (rc == CAIRN_OK) {
        rc = detach_mount_id(mnt_id, sb->merged);
        if (rc != CAIRN_OK)
            rc = cairn_err_set(rc, "sandbox %s: unmount '%s': %s", sb->id, path, cairn_err_msg());
    }
    if (rc == CAIRN_OK)
        rc = prune_records(sb);
    if (rc == CAIRN_OK)
        rc = sbx_mounts_save(sb);
    pthread_mutex_unlock(&sb->op_mu);
    cairn_free(path);
    return rc;
}

int cairn_sandbox_mount_upper(struct cairn_sandbox *sb, const char *path_in, char **out)
{
    *out = NULL;
    char *path = NULL;
    CAIRN_FORWARD_IF_ERROR(norm_path(path_in, &path));
    bool found = false, bind = false;
    pthread_mutex_lock(&sb->mu);
    for (size_t i = sb->n_mounts; i-- > 0 && !found;) {
        if (strcmp(sb->mounts[i].path, path) != 0)
            continue;
        found = true;
        bind = sb->mounts[i].kind != CAIRN_MOUNT_OVERLAY;
        if (!bind)
            *out = sbx_fmt("%s/m/%u/upper", sb->dir, sb->mounts[i].idx);
    }
    pthread_mutex_unlock(&sb->mu);
    int rc = CAIRN_OK;
    if (!found)
        rc = cairn_err_set(CAIRN_ENOTFOUND, "sandbox %s: no mount at '%s'", sb->id, path);
    else if (bind)
        rc = cairn_err_set(CAIRN_EINVAL, "sandbox %s: '%s' is a bind mount (no upper dir)", sb->id, path);
    else if (!*out)
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
    cairn_free(path);
    return rc;
}

int cairn_sandbox_mounts(struct cairn_sandbox *sb, char ***paths, size_t *n)
{
    *paths = NULL;
    *n = 0;
    int rc = CAIRN_OK;
    pthread_mutex_lock(&sb->mu);
    char **v = cairn_calloc(sb->n_mounts ? sb->n_mounts : 1, sizeof(char *));
    if (!v)
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
    for (size_t i = 0; v && i < sb->n_mounts; i++) {
        v[i] = cairn_strdup(sb->mounts[i].path);
        if (!v[i]) {
            for (size_t j = 0; j < i; j++)
                cairn_free(v[j]);
            CAIRN_FREE(v);
            rc = cairn_err_set(CAIRN_ENOMEM, "out of memory");
            break;
        }
    }
    if (v) {
        *paths = v;
        *n = sb->n_mounts;
    }
    pthread_mutex_unlock(&sb->mu);
    return rc;
}
