/*
 * worker_layers.c: the layer cache (see worker_layers.h).
 *
 * State: the directory is the truth (a layer exists when DIR/<id> is a directory); in memory there is only
 * the list of builds in progress, under `mu`, with `cv` broadcast whenever one ends. A builder holds no lock
 * while it builds. The removal of trees is fd-based (openat/unlinkat with O_NOFOLLOW, one dirfd per level),
 * so it has no path length limit, never follows a symlink and stays on the tree's filesystem.
 */
#include "worker_layers.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_SUFFIX ".tmp"

struct building {
    struct building *next;
    char id[65];
};

struct cairn_wk_layers {
    char *dir;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct building *building; /* mu */
};

/* ---- removal ---- */

/* Remove the contents of the directory open as dfd (closed here), staying on device dev. */
static int rm_contents(int dfd, dev_t dev, const char *where)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = errno;
        close(dfd);
        return cairn_err_set_errno(CAIRN_EIO, e, "remove '%s': open dir", where);
    }
    int rc = CAIRN_OK;
    struct dirent *e;
    for (;;) {
        errno = 0;
        e = readdir(d);
        if (!e)
            break;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                continue;
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s/%s': stat", where, e->d_name);
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != dev) {
                rc = cairn_err_set(CAIRN_EIO, "remove '%s': '%s' is a mount point", where, e->d_name);
                break;
            }
            int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s/%s': open", where, e->d_name);
                break;
            }
            rc = rm_contents(sub, dev, where);
            if (rc == CAIRN_OK && unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) != 0 && errno != ENOENT)
                rc = cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s/%s'", where, e->d_name);
        } else if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT) {
            rc = cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s/%s'", where, e->d_name);
        }
        if (rc != CAIRN_OK)
            break;
    }
    if (rc == CAIRN_OK && errno != 0)
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s': read dir", where);
    closedir(d);
    return rc;
}

int cairn_wk_rmrf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? CAIRN_OK : cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s': stat", path);
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0 && errno != ENOENT)
            return cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s'", path);
        return CAIRN_OK;
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s': open", path);
    CAIRN_FORWARD_IF_ERROR(rm_contents(fd, st.st_dev, path));
    if (rmdir(path) != 0 && errno != ENOENT)
        return cairn_err_set_errno(CAIRN_EIO, errno, "remove '%s'", path);
    return CAIRN_OK;
}

/* ---- the cache ---- */

bool cairn_wk_layer_id_valid(const char *image)
{
    size_t n = image ? strlen(image) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = image[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '-' && c != '_')))
            return false;
    }
    return true;
}

int cairn_wk_layers_new(struct cairn_wk_layers **out, const char *dir)
{
    *out = NULL;
    if (!dir || dir[0] != '/')
        return cairn_err_set(CAIRN_EINVAL, "layer cache dir '%s' is not absolute", dir ? dir : "(null)");
    if (mkdir(dir, 0711) != 0 && errno != EEXIST)
        return cairn_err_set_errno(CAIRN_EIO, errno, "make layer cache dir '%s'", dir);
    struct cairn_wk_layers *l = cairn_calloc(1, sizeof(*l));
    if (!l || !(l->dir = cairn_strdup(dir))) {
        cairn_free(l);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for the layer cache");
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n <= strlen(TMP_SUFFIX) || strcmp(e->d_name + n - strlen(TMP_SUFFIX), TMP_SUFFIX) != 0)
            continue;
        char path[4096];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
            continue;
        if (cairn_wk_rmrf(path) == CAIRN_OK)
            cairn_info("layer cache: removed the unfinished build '%s'", path);
        else
            cairn_warn("layer cache: %s", cairn_err_msg());
    }
    if (d)
        closedir(d);
    *out = l;
    return CAIRN_OK;
}

void cairn_wk_layers_destroy(struct cairn_wk_layers **lp)
{
    if (!lp || !*lp)
        return;
    struct cairn_wk_layers *l = *lp;
    while (l->building) { /* none when every job thread has stopped */
        struct building *b = l->building;
        l->building = b->next;
        cairn_free(b);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    cairn_free(l->dir);
    cairn_free(l);
    *lp = NULL;
}

size_t cairn_wk_layers_count(struct cairn_wk_layers *l)
{
    size_t n = 0;
    DIR *d = opendir(l->dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += cairn_wk_layer_id_valid(e->d_name);
    if (d)
        closedir(d);
    return n;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Make the finished build durable, then give it its final name. */
static int publish(const char *tmp, const char *final, const char *dir)
{
    int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_set_errno(CAIRN_EIO, errno, "layer '%s': open the build", tmp);
    int rc = syncfs(fd) == 0 ? CAIRN_OK : cairn_err_set_errno(CAIRN_EIO, errno, "layer '%s': syncfs", tmp);
    close(fd);
    if (rc == CAIRN_OK && rename(tmp, final) != 0)
        rc = cairn_err_set_errno(CAIRN_EIO, errno, "layer '%s': rename to '%s'", tmp, final);
    if (rc == CAIRN_OK && (fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        fsync(fd);
        close(fd);
    }
    return rc;
}

int cairn_wk_layers_get(struct cairn_wk_layers *l, const char *image, cairn_wk_layer_build_fn build, void *arg,
                        char **path, bool *built)
{
    *path = NULL;
    *built = false;
    if (!cairn_wk_layer_id_valid(image))
        return cairn_err_set(CAIRN_EINVAL, "image id '%.80s' cannot name a layer", image ? image : "(null)");
    char final[4096], tmp[4096];
    if ((size_t)snprintf(final, sizeof(final), "%s/%s", l->dir, image) >= sizeof(final) ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s/%s" TMP_SUFFIX, l->dir, image) >= sizeof(tmp))
        return cairn_err_set(CAIRN_EINVAL, "layer cache path of '%s' is too long", image);
    struct building *mine = NULL;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (is_dir(final))
            break;
        bool busy = false;
        for (struct building *b = l->building; b && !busy; b = b->next)
            busy = !strcmp(b->id, image);
        if (!busy) {
            mine = cairn_calloc(1, sizeof(*mine));
            if (mine) {
                snprintf(mine->id, sizeof(mine->id), "%s", image);
                mine->next = l->building;
                l->building = mine;
            }
            break;
        }
        pthread_cond_wait(&l->cv, &l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    int rc = CAIRN_OK;
    if (!mine && !is_dir(final))
        return cairn_err_set(CAIRN_ENOMEM, "out of memory building layer '%s'", image);
    if (mine) {
        rc = cairn_wk_rmrf(tmp);
        if (rc == CAIRN_OK)
            rc = build(arg, tmp);
        if (rc == CAIRN_OK)
            rc = publish(tmp, final, l->dir);
        if (rc != CAIRN_OK) {
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s", cairn_err_msg());
            if (cairn_wk_rmrf(tmp) != CAIRN_OK)
                cairn_warn("layer cache: %s", cairn_err_msg());
            cairn_err_set(rc, "%s", msg);
        }
        pthread_mutex_lock(&l->mu);
        for (struct building **pp = &l->building; *pp; pp = &(*pp)->next) {
            if (*pp == mine) {
                *pp = mine->next;
                break;
            }
        }
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        cairn_free(mine);
        if (rc != CAIRN_OK)
            return rc;
        *built = true;
    }
    if (!(*path = cairn_strdup(final)))
        return cairn_err_set(CAIRN_ENOMEM, "out of memory");
    return CAIRN_OK;
}
